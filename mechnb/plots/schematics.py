"""Schematics: block diagrams of a method's pipeline, drawn with matplotlib (no data in, a ``Figure`` out).

* :func:`spd_pipeline` - one SPD training step (notebook 02; Bushnaq, Braun & Sharkey 2025, method
  section): the target's layer inputs feed the causal-importance functions, whose lower-leaky
  importances build the stochastic masks of the two reconstruction losses and whose upper-leaky ones
  enter importance minimality; faithfulness compares ``U V^T`` with ``W``.
* :func:`edge_patching` - patching one edge ``u -> v`` of the computational graph (notebook 04):
  reader ``v`` receives writer ``u``'s corrupted output while every other edge carries the clean one.
* :func:`interaction_basis` - the Interaction Basis of one layer (notebook 01; Bushnaq et al. 2024,
  arXiv:2405.10927 Sec. 6, as :func:`mechnb.degeneracy.interaction_basis` computes it): the Gram
  matrix of the extended activations and its PCA (null directions dropped), the Jacobian Gram ``M'``
  of the next layer's interaction-basis activations, the whitened ``M = V Λ Vᵀ`` and
  ``C = U D^{-1/2} V Λ^{1/2}`` with ``Cᵀ G C = Λ``; the layers are done from the output backwards.

Every box is a :class:`matplotlib.patches.FancyBboxPatch` whose ``gid`` is its label, so a test (or a
reader) can list what a schematic shows with :func:`box_labels`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

__all__ = ["spd_pipeline", "edge_patching", "interaction_basis", "box_labels"]

_COLORS = {"model": "#dbe9f6", "param": "#fde2c8", "ci": "#e6dcf2", "mask": "#fff3b0", "loss": "#d8f0d2",
           "clean": "#dbe9f6", "corrupted": "#f8d0d0", "node": "#eeeeee", "basis": "#d8f0d2"}


def _box(ax, x: float, y: float, label: str, kind: str, w: float = 1.9, h: float = 0.7) -> tuple[float, float]:
    """A rounded box centred at ``(x, y)`` with ``label`` (its ``gid``); returns the centre."""
    patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc=_COLORS[kind], ec="0.3",
                           lw=1.0, gid=label, zorder=2)
    ax.add_patch(patch)
    ax.text(x, y, label, ha="center", va="center", fontsize=8.5, zorder=3)
    return x, y


def _arrow(ax, a: tuple[float, float], b: tuple[float, float], label: str = "", color: str = "0.35",
           style: str = "-|>", ls: str = "-", rad: float = 0.0) -> None:
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=11, color=color, lw=1.1, ls=ls,
                                 shrinkA=22, shrinkB=22, connectionstyle=f"arc3,rad={rad}", zorder=1))
    if label:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.18, label, ha="center", va="bottom", fontsize=7.5,
                color=color)


def box_labels(fig: Figure) -> list[str]:
    """The labels of a schematic's boxes, in drawing order."""
    return [p.get_gid() for ax in fig.axes for p in ax.patches if isinstance(p, FancyBboxPatch) and p.get_gid()]


def spd_pipeline(title: str = "One SPD training step (Bushnaq, Braun & Sharkey 2025)") -> Figure:
    """The SPD step as a block diagram: inputs, the target, the CI functions, masks and the four losses."""
    fig, ax = plt.subplots(figsize=(11, 4.6))
    x = _box(ax, 0.0, 3.0, "batch x", "model", w=1.3)
    f = _box(ax, 2.3, 3.0, "target f (frozen)\nW_l a_l + b_l", "model", w=2.1, h=0.9)
    uv = _box(ax, 2.3, 0.6, "subcomponents\nU_l, V_l  (W_l ≈ U_l V_lᵀ)", "param", w=2.4, h=0.9)
    ci = _box(ax, 5.0, 3.0, "CI functions Γ_l,c\non V_l,cᵀ a_l", "ci", w=2.1, h=0.9)
    lo = _box(ax, 7.4, 3.7, "lower-leaky g", "ci", w=1.7)
    up = _box(ax, 7.4, 2.3, "upper-leaky g", "ci", w=1.7)
    m = _box(ax, 9.6, 3.7, "masks\nm = g + (1 − g) r", "mask", w=1.9, h=0.8)
    rec = _box(ax, 12.0, 4.2, "stochastic recon\n(all layers masked)", "loss", w=2.2, h=0.8)
    lw = _box(ax, 12.0, 3.1, "layerwise recon\n(one layer at a time)", "loss", w=2.2, h=0.8)
    imp = _box(ax, 9.6, 2.0, "importance minimality\nΣ_l,c g^p", "loss", w=2.2, h=0.8)
    faith = _box(ax, 5.0, 0.6, "faithfulness\n‖W − U Vᵀ‖²", "loss", w=2.0, h=0.8)
    tot = _box(ax, 12.0, 1.2, "weighted total\n→ AdamW step on U, V, Γ", "loss", w=2.4, h=0.8)
    _arrow(ax, x, f)
    _arrow(ax, f, ci, "a_l")
    _arrow(ax, uv, ci, "V_l", rad=-0.2)
    _arrow(ax, ci, lo)
    _arrow(ax, ci, up)
    _arrow(ax, lo, m)
    _arrow(ax, up, imp)
    _arrow(ax, m, rec)
    _arrow(ax, m, lw)
    _arrow(ax, f, rec, "f(x) to match", color="#1f77b4", ls="--", rad=-0.25)
    _arrow(ax, uv, faith)
    for loss in (rec, lw, imp, faith):
        _arrow(ax, loss, tot, color="#2ca02c", rad=0.1)
    ax.set_xlim(-1.0, 13.5)
    ax.set_ylim(-0.2, 4.9)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return fig


def edge_patching(title: str = "Patching one edge u → v") -> Figure:
    """Edge patching as a diagram: a clean and a corrupted run; reader ``v`` gets ``u``'s corrupted output
    on the patched edge, every other edge (and every other reader of ``u``) the clean one."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0), gridspec_kw={"width_ratios": [1, 1.5]})
    left, right = axes
    for ax, run, kind in ((left, "corrupted run", "corrupted"), (right, "clean run, edge u → v patched", "clean")):
        ax.set_axis_off()
        ax.set_xlim(-1.5, 3.5)
        ax.set_ylim(-0.6, 4.4)
        ax.set_title(run, fontsize=9.5)
    u_c = _box(left, 1.0, 1.5, "u (corrupted)", "corrupted", w=1.8)
    _box(left, 1.0, 0.0, "input: corrupted prompt", "corrupted", w=2.6)
    _arrow(left, (1.0, 0.0), u_c)
    inp = _box(right, 1.0, 0.0, "input: clean prompt", "clean", w=2.4)
    u = _box(right, 0.0, 1.5, "writer u", "node", w=1.5)
    w2 = _box(right, 2.2, 1.5, "writer w", "node", w=1.5)
    v = _box(right, 0.0, 3.2, "reader v", "node", w=1.5)
    v2 = _box(right, 2.2, 3.2, "reader v′", "node", w=1.5)
    _arrow(right, inp, u)
    _arrow(right, inp, w2)
    _arrow(right, u, v2, color="0.45")
    _arrow(right, w2, v, color="0.45")
    _arrow(right, w2, v2, color="0.45")
    right.text(1.1, 3.75, "every other edge: clean outputs", ha="center", fontsize=8, color="0.35")
    right.annotate("", xy=(-0.35, 2.85), xytext=(-0.35, 1.85),
                   arrowprops=dict(arrowstyle="-|>", color="#d62728", lw=2.0))
    right.text(-0.55, 2.35, "patched:\ncorrupted out_u", ha="right", va="center", fontsize=8, color="#d62728")
    fig.text(0.38, 0.55, "out_u(corrupted)  →", fontsize=8.5, color="#d62728", ha="center")
    fig.suptitle(title + ": effect = m(patched) − m(clean); EAP: ≈ (out_u^corr − out_u^clean) · ∂m/∂in_v",
                 fontsize=9.5)
    fig.tight_layout()
    return fig


def interaction_basis(title: str = "The Interaction Basis of layer l (Bushnaq et al. 2024, 2405.10927 Sec. 6)") -> Figure:
    """The Interaction Basis of one layer as a block diagram, the steps of :func:`mechnb.degeneracy.interaction_basis`.

    Top row, from the data: the extended activations ``f_l = [f, 1]`` (n samples), their uncentred Gram
    matrix ``G = (1/n) Σ f fᵀ = U D Uᵀ``, PCA with the null directions (``D_i <= rtol · D_max``) dropped,
    whitening ``D^{-1/2} Uᵀ``. Bottom row, from what comes next: the next layer's interaction basis
    ``f̂_{l+1}`` (computed first, the recursion runs from the output backwards), its Jacobian Gram
    ``M' = (1/n) Σ Jᵀ J`` with ``J = ∂f̂_{l+1}/∂f_l``, whitened ``M = D^{1/2} Uᵀ M' U D^{1/2} = V Λ Vᵀ``
    (``Λ ≈ 0`` dropped). Both meet in ``C_l = U D^{-1/2} V Λ^{1/2}`` with ``C_lᵀ G C_l = Λ``, and the
    basis ``f̂_l = C_lᵀ f_l``, which in turn feeds layer ``l - 1``.
    """
    fig, ax = plt.subplots(figsize=(13.5, 4.6))
    box = {}

    def add(key: str, x: float, y: float, label: str, kind: str, w: float) -> None:
        _box(ax, x, y, label, kind, w=w, h=0.9)
        box[key] = ax.patches[-1]

    def link(a: str, b: str | tuple[float, float], label: str = "", color: str = "0.35", ls: str = "-",
             rad: float = 0.0, dy: float = 0.12) -> None:
        pa = box[a]
        pb = box[b] if isinstance(b, str) else None
        xa, ya = pa.get_x() + pa.get_width() / 2, pa.get_y() + pa.get_height() / 2
        xb, yb = (pb.get_x() + pb.get_width() / 2, pb.get_y() + pb.get_height() / 2) if pb is not None else b
        ax.add_patch(FancyArrowPatch((xa, ya), (xb, yb), patchA=pa, patchB=pb, arrowstyle="-|>", mutation_scale=11,
                                     color=color, lw=1.1, ls=ls, shrinkA=3, shrinkB=3,
                                     connectionstyle=f"arc3,rad={rad}", zorder=1))
        if label:
            ax.text((xa + xb) / 2, (ya + yb) / 2 + dy, label, ha="center" if dy else "left", va="bottom", fontsize=7.5,
                    color=color, zorder=3)

    add("f", 0.0, 3.4, "activations f_l = [f, 1]\n(n samples)", "model", 2.3)
    add("g", 3.5, 3.4, "Gram G = (1/n) Σ f fᵀ\n= U D Uᵀ", "param", 2.3)
    add("pca", 7.0, 3.4, "PCA: keep D > rtol·D_max\n(drop null directions)", "param", 2.6)
    add("wh", 10.5, 3.4, "whiten\nz = D^(-1/2) Uᵀ f", "param", 2.1)
    add("next", 0.0, 0.9, "next layer's basis f̂_l+1\n(done first: output → input)", "node", 2.7)
    add("jac", 3.5, 0.9, "Jacobian J = ∂f̂_l+1 / ∂f_l\nM′ = (1/n) Σ Jᵀ J", "ci", 2.5)
    add("m", 7.0, 0.9, "M = D^(1/2) Uᵀ M′ U D^(1/2)\n= V Λ Vᵀ  (drop Λ ≈ 0)", "ci", 2.8)
    add("c", 10.5, 0.9, "C_l = U D^(-1/2) V Λ^(1/2)\nC_lᵀ G C_l = Λ", "mask", 2.6)
    add("ib", 13.6, 2.15, "interaction basis\nf̂_l = C_lᵀ f_l", "basis", 2.0)
    link("f", "g")
    link("g", "pca", "U, D")
    link("pca", "wh")
    link("next", "jac")
    link("f", "jac", "  at the same inputs x", color="#1f77b4", ls="--", dy=0.0)
    link("jac", "m", "M′")
    link("pca", "m", "  U, D", color="0.45", dy=0.0)
    link("m", "c", "V, Λ")
    link("wh", "c", "  U D^(-1/2)", color="0.45", dy=0.0)
    link("c", "ib")
    link("ib", (13.6, 4.5), "  feeds layer l − 1", color="#2ca02c", ls="--", dy=0.0)
    ax.set_xlim(-1.5, 14.8)
    ax.set_ylim(0.2, 4.7)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return fig
