"""Figures for degeneracy, the LLC, Hessian spectra and the Interaction Basis (notebook 01).

Pure functions: arrays (or the small result dataclasses of :mod:`mechnb.degeneracy`) in,
``matplotlib.figure.Figure`` out, with labelled axes and titles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from mechnb._checks import check_array

__all__ = [
    "ablation_curves",
    "degenerate_landscapes",
    "interaction_basis_steps",
    "gram_spectra",
    "nullity_sweep",
    "degeneracy_bars",
    "llc_vs_theory",
    "llc_traces",
    "hessian_histogram",
    "edge_heatmaps",
    "edge_sparsity",
    "module_graph",
]


#: the two losses of :func:`degenerate_landscapes`: name -> (formula, function, Hessian rank at 0, learning coefficient)
LANDSCAPES = {
    "quartic": ("L = w₁² + w₂⁴", lambda a, b: a**2 + b**4, 1, 0.75),
    "cross": ("L = w₁² w₂²", lambda a, b: a**2 * b**2, 0, 0.5),
}


def degenerate_landscapes(extent: float = 1.0, n: int = 201, levels: Sequence[float] = (0.002, 0.01, 0.03, 0.1),
                          title: str = "Two degenerate minima") -> Figure:
    """Contours of ``w₁² + w₂⁴`` and ``w₁² w₂²`` near their minimum at 0, with the low-loss region shaded.

    Both Hessians at 0 are singular (rank 1 and rank 0), so the Gauss-Newton/Hessian rank calls
    them "1 and 0 effective parameters"; the learning coefficient tells them apart by how fast the
    volume of ``{L < ε}`` shrinks: ``λ = 1/2 + 1/4`` for the quartic (a narrowing valley) and
    ``λ = 1/2`` for the cross (two flat valleys crossing) — Lau et al. 2023; 2405.10927 Sec. 2.

    Args:
        extent: the half-width of the square ``[-extent, extent]²`` drawn.
        n: grid points per axis.
        levels: loss contour levels (the lowest is shaded).
    """
    if not (isinstance(extent, (int, float)) and np.isfinite(extent) and extent > 0):
        raise ValueError(f"extent: expected a positive finite number, got {extent!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(f"n: expected an int >= 3, got {n!r}")
    lv = np.asarray(levels, dtype=float)
    if lv.ndim != 1 or lv.size < 1 or not np.all(np.isfinite(lv)) or np.any(lv <= 0) or np.any(np.diff(lv) <= 0):
        raise ValueError(f"levels: expected increasing positive numbers, got {levels!r}")
    w = np.linspace(-extent, extent, n)
    A, B = np.meshgrid(w, w)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), constrained_layout=True)
    for ax, (formula, f, rank, lam) in zip(axes, LANDSCAPES.values()):
        Z = f(A, B)
        ax.contourf(A, B, Z, levels=[0, lv[0]], colors=["#9ecae1"])
        cs = ax.contour(A, B, Z, levels=lv, colors="k", linewidths=0.8)
        ax.clabel(cs, fmt="%g", fontsize=7)
        ax.plot(0, 0, "r*", ms=9)
        ax.set_aspect("equal")
        ax.set_xlabel("w₁")
        ax.set_ylabel("w₂")
        ax.set_title(f"{formula}\nHessian rank at 0: {rank} · learning coefficient λ = {lam:g}", fontsize=10)
    fig.suptitle(f"{title} (shaded: L < {lv[0]:g})")
    return fig


def interaction_basis_steps(title: str = "The Interaction Basis of one layer (2405.10927 Sec. 6)") -> Figure:
    """A schematic of the four steps ``f → Uᵀf → D^{-1/2}Uᵀf → VᵀD^{-1/2}Uᵀf → Λ^{1/2}VᵀD^{-1/2}Uᵀf = Cᵀf``.

    Each panel shows what one step does to a cloud of 2-D activations (a drawing of a small
    example: correlated activations, a Jacobian Gram ``M'`` that favours one direction).
    """
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((300, 2)) @ np.array([[2.0, 0.0], [1.2, 0.5]])
    G = raw.T @ raw / raw.shape[0]
    D, U = np.linalg.eigh(G)
    D, U = D[::-1], U[:, ::-1]
    Mp = np.array([[1.0, 0.6], [0.6, 0.5]])
    Mw = np.sqrt(D)[:, None] * (U.T @ Mp @ U) * np.sqrt(D)[None, :]
    Lam, V = np.linalg.eigh(Mw)
    Lam, V = Lam[::-1], V[:, ::-1]
    z1 = raw @ U
    z2 = z1 / np.sqrt(D)
    z3 = z2 @ V
    stages = [
        ("activations $f$\n(neuron basis)", raw),
        ("1. PCA: $U^\\top f$\n(drop $D \\approx 0$)", z1),
        ("2. whiten: $D^{-1/2}U^\\top f$\n(unit variance)", z2),
        ("3. rotate: $V^\\top D^{-1/2}U^\\top f$\n(eigenvectors of $M$, drop $\\Lambda \\approx 0$)", z3),
        ("4. scale: $\\Lambda^{1/2}V^\\top D^{-1/2}U^\\top f = C^\\top f$\n(by use downstream)", z3 * np.sqrt(Lam)),
    ]
    fig, axes = plt.subplots(1, len(stages), figsize=(14, 3.2), constrained_layout=True)
    lim = max(float(np.abs(z).max()) for _, z in stages)
    for ax, (label, z) in zip(axes, stages):
        ax.scatter(z[:, 0], z[:, 1], s=3, alpha=0.5)
        ax.axhline(0, color="0.8", lw=0.6)
        ax.axvline(0, color="0.8", lw=0.6)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("coordinate 1", fontsize=8)
        ax.set_ylabel("coordinate 2", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for a, b in zip(axes[:-1], axes[1:]):
        fig.add_artist(plt.matplotlib.patches.ConnectionPatch((1.02, 0.5), (-0.02, 0.5), "axes fraction",
                                                              "axes fraction", axesA=a, axesB=b, arrowstyle="->"))
    fig.suptitle(title)
    return fig


def ablation_curves(curves: Sequence[Any], title: str = "Keep the k most important directions") -> Figure:
    """Accuracy vs directions kept, one panel per :class:`mechnb.degeneracy.AblationCurves` (one layer each).

    Each panel has one line per basis (interaction basis, PCA, neurons) on a log x-axis and the
    intact model's accuracy as a dashed line.
    """
    if not curves:
        raise ValueError("curves: expected at least one AblationCurves, got none")
    names = {"ib": "Interaction Basis", "pca": "PCA basis", "neuron": "neuron basis"}
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.4), constrained_layout=True, squeeze=False)
    for ax, c in zip(axes[0], curves):
        for key, ks in c.kept.items():
            ax.plot(ks, c.accuracy[key], "o-", ms=3, label=f"{names.get(key, key)} ({c.n_directions[key]} dirs)")
        ax.axhline(c.full_accuracy, color="0.5", ls="--", lw=0.8, label="intact model")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("directions kept (most important first)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"layer {c.layer}")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def gram_spectra(spectra: Mapping[str, Any], rtol: float = 1e-6, title: str = "Gram matrix spectra") -> Figure:
    """Eigenvalues (log scale, largest first) of several Gram matrices, with the zero threshold.

    Args:
        spectra: ``{label: eigenvalues (d,)}`` (descending, as from ``gram_spectrum``).
        rtol: the singular-value threshold; eigenvalues below ``rtol² · max`` count as zero.
    """
    if not spectra:
        raise ValueError("spectra: expected at least one {label: eigenvalues} entry, got none")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    floor = np.inf
    for i, (label, ev) in enumerate(spectra.items()):
        ev = check_array(f"spectra[{label!r}]", ev, ndim=1)
        top = ev.max() if ev.size else 1.0
        shown = np.maximum(ev, top * 1e-18)
        floor = min(floor, shown.min())
        ax.semilogy(np.arange(1, ev.size + 1), shown, "o-", color=f"C{i}", ms=4, label=label)
        ax.axhline(top * rtol**2, color=f"C{i}", ls=":", lw=1)
    ax.set_xlabel("eigenvalue index (largest first)")
    ax.set_ylabel("eigenvalue of G (log)")
    ax.set_title(title + "  (dotted: zero threshold)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def nullity_sweep(ks: Sequence[int], measured: Sequence[float], predicted: Sequence[float], *, xlabel: str,
                  current: int | None = None, title: str = "Gauss-Newton nullity: measured vs predicted") -> Figure:
    """Measured nullity (markers) against the prediction (line) as a planted degeneracy grows."""
    ks_a = check_array("ks", list(ks), ndim=1)
    m = check_array("measured", list(measured), ndim=1)
    p = check_array("predicted", list(predicted), ndim=1)
    if not (ks_a.size == m.size == p.size):
        raise ValueError(f"ks, measured, predicted: expected equal lengths, got {ks_a.size}, {m.size}, {p.size}")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(ks_a, p, "-", color="C0", lw=2, label="predicted (Sec. 3 of 2405.10927)")
    ax.plot(ks_a, m, "o", color="C3", ms=7, label="measured rank deficit of JᵀJ")
    if current is not None:
        ax.axvline(current, color="grey", ls=":", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("free directions (nullity)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def degeneracy_bars(report: Any, title: str = "Free directions by kind of degeneracy") -> Figure:
    """Stacked bars per layer: free directions predicted by each kind, and the measured total.

    Args:
        report: a :class:`mechnb.degeneracy.DegeneracyReport`.
    """
    rows = report.rows()
    layers = np.array([r["layer"] for r in rows])
    kinds = [("free_act", "activations (Gram nullity)"), ("free_jac", "Jacobians (nullity)"),
             ("free_sync", "synchronised ReLUs"), ("rescalings", "ReLU rescalings")]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bottom = np.zeros(len(rows))
    for i, (key, label) in enumerate(kinds):
        vals = np.array([r[key] for r in rows], dtype=float)
        ax.bar(layers, vals, bottom=bottom, color=f"C{i}", label=label, width=0.6)
        bottom += vals
    ax.set_xticks(layers)
    ax.set_xlabel("layer (0 = input)")
    ax.set_ylabel("predicted free directions")
    ax.set_title(f"{title}\npredicted total {report.predicted_nullity}, measured Gauss-Newton nullity "
                 f"{report.measured_nullity}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def llc_vs_theory(theory: Sequence[float], estimate: Sequence[float], std: Sequence[float], labels: Sequence[str],
                  title: str = "Estimated vs theoretical learning coefficient") -> Figure:
    """Scatter of SGLD estimates (± std across chains) against the theoretical λ, with ``y = x``."""
    t = check_array("theory", list(theory), ndim=1)
    e = check_array("estimate", list(estimate), ndim=1)
    s = check_array("std", list(std), ndim=1)
    if not (t.size == e.size == s.size == len(labels)):
        raise ValueError("theory, estimate, std, labels: expected equal lengths")
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    hi = 1.1 * max(t.max(), (e + s).max())
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="y = x")
    ax.fill_between([0, hi], [0, 0.85 * hi], [0, 1.15 * hi], color="grey", alpha=0.15, label="±15%")
    ax.errorbar(t, e, yerr=s, fmt="o", color="C0", capsize=3, label="SGLD estimate")
    for ti, ei, lab in zip(t, e, labels):
        ax.annotate(lab, (ti, ei), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("theoretical λ (Aoyagi 2024)")
    ax.set_ylabel("estimated λ̂")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def llc_traces(traces: Mapping[str, Any], title: str = "SGLD diagnostics: nβ (L_t − L(w*)) per chain") -> Figure:
    """One panel per setting: every chain's ``nβ (L_t − L_n(w*))`` and their running mean.

    A good step size gives flat, overlapping traces after a short burn-in; too small a step
    never leaves ``w*`` (traces still climbing); too large a step diverges or settles far too high.

    Args:
        traces: ``{label: (num_chains, num_draws) array}`` (``LLCResult.llc_trace``).
    """
    if not traces:
        raise ValueError("traces: expected at least one {label: (chains, draws) array}, got none")
    fig, axes = plt.subplots(1, len(traces), figsize=(4.2 * len(traces), 3.4), squeeze=False)
    for ax, (label, tr) in zip(axes[0], traces.items()):
        tr = check_array(f"traces[{label!r}]", tr, ndim=2, finite=False)
        steps = np.arange(1, tr.shape[1] + 1)
        for c in range(tr.shape[0]):
            ax.plot(steps, tr[c], lw=0.6, alpha=0.6)
        mean = np.nanmean(tr, axis=0)
        ax.plot(steps, np.cumsum(mean) / steps, "k-", lw=2, label="running mean (all chains)")
        ax.set_xlabel("draw")
        ax.set_ylabel("nβ (L_t − L(w*))")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def hessian_histogram(hessian: Any, gauss_newton: Any | None = None, *, bins: int = 60,
                      title: str = "Hessian spectrum: bulk near zero, a few outliers") -> Figure:
    """Histogram of ``|λ|`` on a log axis (positive and negative eigenvalues apart) + the top eigenvalues.

    Args:
        hessian: ``(P,)`` eigenvalues of the loss Hessian.
        gauss_newton: optionally ``(P,)`` eigenvalues of its Gauss-Newton term, overlaid.
    """
    h = check_array("hessian", hessian, ndim=1)
    g = check_array("gauss_newton", gauss_newton, ndim=1) if gauss_newton is not None else None
    top = np.abs(h).max() if h.size else 1.0
    floor = top * 1e-12
    edges = np.logspace(np.log10(floor), np.log10(top * 1.5), bins)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw=dict(width_ratios=[1.6, 1]))
    ax0.hist(np.clip(h[h > 0], floor, None), bins=edges, color="C0", alpha=0.7, label="Hessian, λ > 0")
    ax0.hist(np.clip(-h[h < 0], floor, None), bins=edges, color="C3", alpha=0.6, label="Hessian, |λ| for λ < 0")
    if g is not None:
        ax0.hist(np.clip(g[g > 0], floor, None), bins=edges, histtype="step", color="k", lw=1.5,
                 label="Gauss-Newton term")
    n_zero = int((np.abs(h) <= floor).sum())
    if n_zero:
        ax0.annotate(f"{n_zero} numerically zero\n(|λ| ≤ 1e-12 · max)", (floor, n_zero), textcoords="offset points",
                     xytext=(12, -4), fontsize=8, va="top")
    ax0.set_xscale("log")
    ax0.set_yscale("log")
    ax0.set_xlabel("|eigenvalue| (log)")
    ax0.set_ylabel("count (log)")
    ax0.set_title(title, fontsize=10)
    ax0.legend(fontsize=8)
    k = min(20, h.size)
    ax1.plot(np.arange(1, k + 1), h[:k], "o-", color="C0", label="Hessian")
    if g is not None:
        ax1.plot(np.arange(1, k + 1), g[:k], "x--", color="k", label="Gauss-Newton")
    ax1.set_xlabel("rank")
    ax1.set_ylabel("eigenvalue")
    ax1.set_title(f"top {k} eigenvalues (outliers)", fontsize=10)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return fig


def edge_heatmaps(pca: Any, ib: Any, layer: int, title: str | None = None) -> Figure:
    """Edge strengths between layer ``layer`` and ``layer + 1``: PCA basis vs Interaction Basis (log colour)."""
    P = check_array("pca", pca, ndim=2)
    B = check_array("ib", ib, ndim=2)
    top = max(P.max(), B.max(), 1e-300)
    norm = LogNorm(vmin=top * 1e-8, vmax=top)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    from matplotlib.ticker import MaxNLocator

    for ax, E, name in zip(axes, (P, B), ("PCA basis", "Interaction Basis")):
        im = ax.imshow(np.maximum(E, top * 1e-8), cmap="viridis", norm=norm, aspect="auto", interpolation="nearest")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"direction in layer {layer} (sorted by variance / Λ)")
        ax.set_ylabel(f"direction in layer {layer + 1}")
        ax.set_title(f"{name}: {E.shape[1]} → {E.shape[0]} directions, {E.size} edges", fontsize=10)
    fig.colorbar(im, ax=axes, fraction=0.025, label="edge strength E_ij (log)")
    fig.suptitle(title or f"Edges from layer {layer} to layer {layer + 1}")
    return fig


def edge_sparsity(curves: Mapping[str, tuple[Any, Any]], title: str = "How sparse is the interaction graph?") -> Figure:
    """Fraction of total edge strength captured by the ``k`` strongest edges, one curve per basis.

    The x-axis is the absolute number of edges (log), so bases with different numbers of
    directions are compared on the same footing; the marker shows where 99% is reached.

    Args:
        curves: ``{label: (fraction_of_edges, fraction_of_strength)}`` (``InteractionEdges.sparsity_curve``).
    """
    if not curves:
        raise ValueError("curves: expected at least one {label: (x, y)} entry, got none")
    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    for i, (label, (x, y)) in enumerate(curves.items()):
        x = check_array(f"curves[{label!r}][0]", x, ndim=1)
        y = check_array(f"curves[{label!r}][1]", y, ndim=1)
        k_all = np.arange(1, y.size + 1)
        ax.plot(k_all, y, color=f"C{i}", lw=2, label=f"{label} ({y.size} edges in all)")
        k = min(int(np.searchsorted(y, 0.99 - 1e-12)) + 1, y.size)
        ax.plot(k, y[k - 1], "o", color=f"C{i}")
        ax.annotate(f"99% in {k} edges", (k, y[k - 1]), textcoords="offset points", xytext=(6, -14 - 12 * i),
                    fontsize=8, color=f"C{i}")
    ax.set_xscale("log")
    ax.set_xlabel("number of edges kept (strongest first, log)")
    ax.set_ylabel("fraction of total edge strength")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def module_graph(modules: Any, max_edges: int = 400, title: str | None = None) -> Figure:
    """The layered interaction graph: nodes at ``(layer, index)``, coloured by module, strongest edges drawn.

    Args:
        modules: a :class:`mechnb.degeneracy.Modules` (its ``graph`` and ``communities``).
        max_edges: draw only the strongest edges (line width ∝ sqrt of strength).
    """
    G = modules.graph
    member = modules.membership()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    layers = sorted({l for l, _ in G.nodes})
    sizes = {l: max(i for ll, i in G.nodes if ll == l) + 1 for l in layers}
    pos = {(l, i): (l, 1 - (i + 0.5) / sizes[l]) for l, i in G.nodes}
    edges = sorted(G.edges(data="weight"), key=lambda e: -e[2])[:max_edges]
    wmax = edges[0][2] if edges else 1.0
    for u, v, w in edges:
        same = member.get(u) == member.get(v)
        color = plt.cm.tab20(member[u] % 20) if same else (0.6, 0.6, 0.6, 1.0)
        ax.plot([pos[u][0], pos[v][0]], [pos[u][1], pos[v][1]], color=color, lw=3 * np.sqrt(w / wmax),
                alpha=0.8 if same else 0.4, zorder=1)
    n_big = sum(1 for c in modules.communities if len(c) > 1)
    for node in G.nodes:
        c = member[node]
        ax.scatter(*pos[node], s=14, color=plt.cm.tab20(c % 20) if len(modules.communities[c]) > 1 else "lightgrey",
                   edgecolor="k", linewidth=0.3, zorder=2)
    ax.set_xticks(layers)
    ax.set_xlabel("layer (0 = input)")
    ax.set_ylabel("direction (sorted, top = largest)")
    ax.set_yticks([])
    ax.set_title(title or f"Interaction graph: {n_big} modules (Q = {modules.modularity:.2f}); "
                          f"{len(edges)} strongest edges")
    fig.tight_layout()
    return fig
