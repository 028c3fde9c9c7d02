"""Schematics: block diagrams of a method's pipeline, drawn with matplotlib (no data in, a ``Figure`` out).

* :func:`spd_pipeline` - one SPD training step (notebook 02; Bushnaq, Braun & Sharkey 2025, method
  section): the target's layer inputs feed the causal-importance functions, whose lower-leaky
  importances build the stochastic masks of the two reconstruction losses and whose upper-leaky ones
  enter importance minimality; faithfulness compares ``U V^T`` with ``W``.
* :func:`edge_patching` - patching one edge ``u -> v`` of the computational graph (notebook 04):
  reader ``v`` receives writer ``u``'s corrupted output while every other edge carries the clean one.

Every box is a :class:`matplotlib.patches.FancyBboxPatch` whose ``gid`` is its label, so a test (or a
reader) can list what a schematic shows with :func:`box_labels`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

__all__ = ["spd_pipeline", "edge_patching", "box_labels"]

_COLORS = {"model": "#dbe9f6", "param": "#fde2c8", "ci": "#e6dcf2", "mask": "#fff3b0", "loss": "#d8f0d2",
           "clean": "#dbe9f6", "corrupted": "#f8d0d0", "node": "#eeeeee"}


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
