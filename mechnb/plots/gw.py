"""Figures for Gromov-Wasserstein layer comparison (:mod:`mechnb.gw`). Pure: arrays in, ``Figure`` out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy.cluster import hierarchy

from mechnb._checks import check_array
from mechnb.gw import LayerMatrix, layer_linkage

__all__ = ["short_name", "plot_coupling", "plot_gw_schematic", "plot_layer_matrix", "plot_dendrogram", "plot_layer_comparison",
           "plot_matrix_grid", "plot_probe_accuracy"]

_GROUP_COLORS = plt.get_cmap("tab10").colors


def short_name(name: str) -> str:
    """``"blocks.1.hook_resid_mid"`` -> ``"1.resid_mid"``; other names unchanged (for tick labels)."""
    if name.startswith("blocks."):
        parts = name.split(".")
        return parts[1] + "." + ".".join(p.removeprefix("hook_") for p in parts[2:])
    return name


def plot_coupling(X: Any, Y: Any, T: Any, *, names: tuple[str, str] = ("X", "Y"), value: float | None = None,
                  title: str | None = None) -> Figure:
    """Two 2-D point clouds side by side with the GW coupling drawn as lines, and ``T`` as a matrix.

    Args:
        X: ``(n1, 2)`` points; Y: ``(n2, 2)`` points (only the first two coordinates are drawn).
        T: ``(n1, n2)`` coupling; a line joins ``x_i`` and ``y_j`` with opacity ``T_ij / max T``.
        value: the GW value, shown in the title.
    """
    A, B, P = check_array("X", X, ndim=2), check_array("Y", Y, ndim=2), check_array("T", T, ndim=2)
    if P.shape != (A.shape[0], B.shape[0]):
        raise ValueError(f"T: expected shape {(A.shape[0], B.shape[0])} (points of X, points of Y), got {P.shape}")
    A2, B2 = A[:, :2] - A[:, :2].mean(0), B[:, :2] - B[:, :2].mean(0)
    shift = (np.ptp(A2[:, 0]) + np.ptp(B2[:, 0])) / 2 + 1.0
    B2 = B2 + np.array([shift, 0.0])
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1.6, 1]})
    tmax = P.max() if P.max() > 0 else 1.0
    for i, j in zip(*np.nonzero(P > 1e-3 * tmax)):
        ax.plot([A2[i, 0], B2[j, 0]], [A2[i, 1], B2[j, 1]], color="0.3", alpha=float(P[i, j] / tmax), lw=1.2)
    ax.scatter(A2[:, 0], A2[:, 1], c=np.arange(len(A2)), cmap="viridis", s=60, zorder=3, label=names[0],
               edgecolor="k")
    ax.scatter(B2[:, 0], B2[:, 1], c="white", s=60, zorder=3, marker="s", edgecolor="k", label=names[1])
    for i, (x, y) in enumerate(A2):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for j, (x, y) in enumerate(B2):
        ax.annotate(str(j), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_aspect("equal")
    ax.set_xlabel("coordinate 1 (clouds centred, placed side by side)")
    ax.set_ylabel("coordinate 2")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or f"{names[0]} vs {names[1]}" + (f": GW = {value:.3g}" if value is not None else ""))
    im = ax_t.imshow(P, cmap="Greys", aspect="auto")
    ax_t.set_xlabel(f"point j of {names[1]}")
    ax_t.set_ylabel(f"point i of {names[0]}")
    ax_t.set_title("coupling T[i, j]")
    fig.colorbar(im, ax=ax_t, fraction=0.046)
    fig.tight_layout()
    return fig


def _pairwise(P: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``P (n, d)``: ``(n, n)``."""
    return np.sqrt(((P[:, None, :] - P[None, :, :]) ** 2).sum(-1))


def _index(name: str, value: Any, n: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int point index, got {type(value).__name__} {value!r}")
    if not 0 <= int(value) < n:
        raise ValueError(f"{name}: expected a point index in [0, {n}), got {value}")
    return int(value)


def plot_gw_schematic(X: Any, Y: Any, T: Any, *, i: int = 0, k: int = 1, C1: Any = None, C2: Any = None,
                      names: tuple[str, str] = ("layer ℓ", "layer m")) -> Figure:
    """One term of the GW objective drawn: ``(C1[i,k] - C2[j,l])**2 * T[i,j] * T[k,l]``.

    Top: the two point clouds (their first two coordinates, side by side - they need not share a
    space or a dimension), the pair ``x_i, x_k`` with its distance ``C1[i, k]``, the points
    ``y_j, y_l`` that receive most of their mass under the coupling (``j = argmax T[i]``,
    ``l = argmax T[k]``) with their distance ``C2[j, l]``, and arrows for the mass ``T[i, j]``,
    ``T[k, l]``. Bottom: the three matrices GW works with, ``C1 (n1, n1)``, ``T (n1, n2)`` and
    ``C2 (n2, n2)``, with the entries of this term framed. GW sums this term over all ``i, k, j, l``
    and minimises over the coupling ``T`` (Mémoli 2011; Peyré, Cuturi & Solomon 2016).

    Args:
        X: ``(n1, d1)`` points; Y: ``(n2, d2)`` points (``d >= 1``; only two coordinates are drawn).
        T: ``(n1, n2)`` non-negative coupling.
        i, k: the pair of points of ``X`` to draw (``i != k``).
        C1, C2: the distance matrices (default: Euclidean distances of ``X`` and ``Y``).
    """
    A, B, P = check_array("X", X, ndim=2), check_array("Y", Y, ndim=2), check_array("T", T, ndim=2)
    n1, n2 = A.shape[0], B.shape[0]
    if P.shape != (n1, n2):
        raise ValueError(f"T: expected shape {(n1, n2)} (points of X, points of Y), got {P.shape}")
    if (P < 0).any():
        raise ValueError(f"T: expected a non-negative coupling, got min {P.min():.3g}")
    i, k = _index("i", i, n1), _index("k", k, n1)
    if i == k:
        raise ValueError(f"k: expected a second point different from i={i}, got k={k}")
    D1 = _pairwise(A) if C1 is None else check_array("C1", C1, ndim=2, square=True)
    D2 = _pairwise(B) if C2 is None else check_array("C2", C2, ndim=2, square=True)
    if D1.shape != (n1, n1) or D2.shape != (n2, n2):
        raise ValueError(f"C1, C2: expected shapes {(n1, n1)} and {(n2, n2)}, got {D1.shape} and {D2.shape}")
    j, l = int(np.argmax(P[i])), int(np.argmax(P[k]))

    def flat2(M: np.ndarray) -> np.ndarray:
        M2 = np.zeros((M.shape[0], 2))
        M2[:, : min(2, M.shape[1])] = M[:, :2]
        return M2 - M2.mean(0)

    A2, B2 = flat2(A), flat2(B)
    span = max(np.ptp(A2[:, 0]), np.ptp(B2[:, 0]), 1e-9)
    B2 = B2 + np.array([np.ptp(A2[:, 0]) / 2 + np.ptp(B2[:, 0]) / 2 + 0.6 * span, 0.0])
    fig = plt.figure(figsize=(11, 7.2))
    grid = fig.add_gridspec(2, 3, height_ratios=[1.25, 1])
    ax = fig.add_subplot(grid[0, :])
    tmax = P.max() if P.max() > 0 else 1.0
    for a_, b_ in zip(*np.nonzero(P > 1e-3 * tmax)):
        ax.plot([A2[a_, 0], B2[b_, 0]], [A2[a_, 1], B2[b_, 1]], color="0.85", lw=0.8, zorder=1)
    ax.scatter(A2[:, 0], A2[:, 1], s=45, color="tab:blue", edgecolor="k", zorder=3, label=f"{names[0]}: points x")
    ax.scatter(B2[:, 0], B2[:, 1], s=45, color="white", marker="s", edgecolor="k", zorder=3,
               label=f"{names[1]}: points y")
    ax.plot(*A2[[i, k]].T, color="tab:blue", lw=2.5, zorder=2)
    ax.plot(*B2[[j, l]].T, color="tab:orange", lw=2.5, zorder=2)
    mid1, mid2 = A2[[i, k]].mean(0), B2[[j, l]].mean(0)
    ax.annotate(f"C1[i,k] = {D1[i, k]:.2f}", mid1, xytext=(0, 10), textcoords="offset points", color="tab:blue",
                ha="center", fontsize=9)
    ax.annotate(f"C2[j,l] = {D2[j, l]:.2f}", mid2, xytext=(0, 10), textcoords="offset points", color="tab:orange",
                ha="center", fontsize=9)
    for src, dst, lab, frac, dy in ((i, j, f"T[i,j] = {P[i, j]:.3f}", 0.3, 8), (k, l, f"T[k,l] = {P[k, l]:.3f}",
                                                                                0.7, -16)):
        ax.annotate("", xy=B2[dst], xytext=A2[src], arrowprops=dict(arrowstyle="->", color="crimson", lw=1.5,
                                                                     connectionstyle="arc3,rad=0.15"), zorder=4)
        ax.annotate(lab, (1 - frac) * A2[src] + frac * B2[dst], xytext=(0, dy), textcoords="offset points",
                    color="crimson", ha="center", fontsize=9)
    for idx, name in ((i, "i"), (k, "k")):
        ax.annotate(name, A2[idx], xytext=(-10, -4), textcoords="offset points", fontsize=11, fontweight="bold")
    for idx, name in ((j, "j"), (l, "l")):
        ax.annotate(name, B2[idx], xytext=(6, -4), textcoords="offset points", fontsize=11, fontweight="bold")
    term = (D1[i, k] - D2[j, l]) ** 2 * P[i, j] * P[k, l]
    ax.set_title(f"one term of GW: (C1[i,k] - C2[j,l])² · T[i,j] · T[k,l] = ({D1[i, k]:.2f} - {D2[j, l]:.2f})² · "
                 f"{P[i, j]:.3f} · {P[k, l]:.3f} = {term:.2e}", fontsize=10)
    ax.set_xlabel("first coordinate of each cloud (centred, placed side by side: no shared axes needed)")
    ax.set_ylabel("second coordinate")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=8)
    panels = ((D1, f"C1: distances in {names[0]}", [(k, i)], "tab:blue", "point k", "point i"),
              (P, "T: the coupling (mass from x to y)", [(j, i), (l, k)], "crimson", f"point of {names[1]}",
               f"point of {names[0]}"),
              (D2, f"C2: distances in {names[1]}", [(l, j)], "tab:orange", "point l", "point j"))
    for col, (M, title, boxes, color, xl, yl) in enumerate(panels):
        axm = fig.add_subplot(grid[1, col])
        im = axm.imshow(M, cmap="Greys" if M is P else "viridis", aspect="auto")
        for cx, cy in boxes:
            axm.add_patch(Rectangle((cx - 0.5, cy - 0.5), 1, 1, fill=False, edgecolor=color, lw=2.2))
        axm.set_title(title, fontsize=9)
        axm.set_xlabel(xl, fontsize=8)
        axm.set_ylabel(yl, fontsize=8)
        fig.colorbar(im, ax=axm, fraction=0.046)
    fig.suptitle("GW compares every pair of points of one space with the pair it is coupled to in the other",
                 fontsize=11)
    fig.tight_layout()
    return fig


def _as_matrix(m: LayerMatrix | Any, names: Sequence[str] | None) -> tuple[np.ndarray, list[str], str]:
    if isinstance(m, LayerMatrix):
        return m.matrix, list(m.names), m.kind
    M = check_array("matrix", m, ndim=2, square=True)
    return M, list(names) if names is not None else [str(i) for i in range(M.shape[0])], "gw"


def _draw_matrix(ax: plt.Axes, M: np.ndarray, names: list[str], kind: str, labels: Any, title: str,
                 annotate: bool) -> Any:
    cmap = "viridis_r" if kind == "gw" else "viridis"
    im = ax.imshow(M, cmap=cmap, vmin=0, vmax=(M.max() if kind == "gw" else 1.0))
    L = len(names)
    ticks = [short_name(n) for n in names]
    ax.set_xticks(range(L), ticks, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(L), ticks, fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=10)
    if annotate and L <= 12:
        for i in range(L):
            for j in range(L):
                frac = M[i, j] / (M.max() if kind == "gw" and M.max() > 0 else 1.0)
                dark = frac > 0.5 if kind == "gw" else frac < 0.5
                ax.text(j, i, f"{M[i, j]:.2g}" if kind == "gw" else f"{M[i, j]:.2f}", ha="center", va="center",
                        fontsize=6,
                        color="white" if dark else "black")
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (L,):
            raise ValueError(f"labels: expected {L} group labels, got shape {lab.shape}")
        for i, g in enumerate(lab):
            color = _GROUP_COLORS[int(g) % len(_GROUP_COLORS)]
            ax.add_patch(Rectangle((i - 0.5, L - 0.5), 1, 0.6, color=color, clip_on=False))
            ax.add_patch(Rectangle((-1.1, i - 0.5), 0.6, 1, color=color, clip_on=False))
        ax.set_xlim(-1.1, L - 0.5)
        ax.set_ylim(L + 0.1, -0.5)
    return im


def plot_layer_matrix(m: LayerMatrix | Any, names: Sequence[str] | None = None, *, labels: Any = None,
                      title: str | None = None, annotate: bool = True) -> Figure:
    """Heatmap of a layer x layer matrix (bright = similar: GW near 0, CKA near 1), groups as coloured strips.

    Args:
        m: a :class:`~mechnb.gw.LayerMatrix` or an ``(L, L)`` array (with ``names``).
        labels: optional ``(L,)`` group labels from :func:`~mechnb.gw.cluster_layers`.
    """
    M, nm, kind = _as_matrix(m, names)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    default = "GW discrepancy between layers" if kind == "gw" else "CKA similarity between layers"
    im = _draw_matrix(ax, M, nm, kind, labels, title or default, annotate)
    fig.colorbar(im, ax=ax, fraction=0.046, label="GW" if kind == "gw" else "CKA")
    fig.tight_layout()
    return fig


def _draw_dendrogram(ax: plt.Axes, m: LayerMatrix | Any, names: list[str], method: str,
                     threshold: float | None, labels: Any = None) -> None:
    D = m.distances() if isinstance(m, LayerMatrix) else m
    Z = layer_linkage(D, method=method)
    dn = hierarchy.dendrogram(Z, labels=[short_name(n) for n in names], ax=ax, leaf_rotation=60,
                              color_threshold=0.0, above_threshold_color="0.35")
    if labels is not None:  # colour each leaf label like its group's strip on the heatmap
        lab = np.asarray(labels)
        for tick, leaf in zip(ax.get_xticklabels(), dn["leaves"]):
            tick.set_color(_GROUP_COLORS[int(lab[leaf]) % len(_GROUP_COLORS)])
            tick.set_fontweight("bold")
    if threshold is not None:
        ax.axhline(threshold, color="crimson", ls="--", lw=1, label=f"cut at {threshold:.3g}")
        ax.legend(fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"merge height ({method} linkage)")
    ax.tick_params(axis="x", labelsize=8)


def plot_dendrogram(m: LayerMatrix | Any, names: Sequence[str] | None = None, *, method: str = "average",
                    threshold: float | None = None, labels: Any = None, title: str | None = None) -> Figure:
    """Dendrogram of hierarchical clustering of layers (CKA is clustered on ``1 - CKA``).

    ``threshold`` draws the cut; ``labels`` colours each leaf by its group (as on the heatmaps).
    """
    _, nm, kind = _as_matrix(m, names)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    _draw_dendrogram(ax, m, nm, method, threshold, labels)
    ax.set_title(title or f"Layer dendrogram ({'GW' if kind == 'gw' else '1 - CKA'})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_layer_comparison(gw_m: LayerMatrix, cka_m: LayerMatrix | None = None, *, gw_labels: Any = None,
                          cka_labels: Any = None, threshold: float | None = None,
                          title: str | None = None) -> Figure:
    """GW heatmap, GW dendrogram and (optionally) the CKA heatmap side by side."""
    n_panels = 3 if cka_m is not None else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.8))
    im = _draw_matrix(axes[0], gw_m.matrix, list(gw_m.names), "gw", gw_labels, "GW discrepancy", True)
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    _draw_dendrogram(axes[1], gw_m, list(gw_m.names), "average", threshold, gw_labels)
    axes[1].set_title("GW dendrogram", fontsize=10)
    if cka_m is not None:
        im2 = _draw_matrix(axes[2], cka_m.matrix, list(cka_m.names), "cka", cka_labels,
                           f"CKA ({cka_m.settings.get('kernel', 'linear')})", True)
        fig.colorbar(im2, ax=axes[2], fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_matrix_grid(matrices: Mapping[str, LayerMatrix], *, labels: Mapping[str, Any] | None = None,
                     subtitles: Mapping[str, str] | None = None, title: str | None = None,
                     shared_scale: bool = True) -> Figure:
    """One heatmap per entry (e.g. per training strategy), on a shared colour scale by default."""
    if not matrices:
        raise ValueError("matrices: expected at least one LayerMatrix, got none")
    k = len(matrices)
    fig, axes = plt.subplots(1, k, figsize=(4.0 * k + 1.0, 4.4), squeeze=False, layout="constrained")
    vmax = max(float(m.matrix.max()) for m in matrices.values())
    for ax, (name, m) in zip(axes[0], matrices.items()):
        lab = labels.get(name) if labels else None
        sub = f"{name}\n{subtitles[name]}" if subtitles and name in subtitles else name
        im = _draw_matrix(ax, m.matrix, list(m.names), m.kind, lab, sub, False)
        if shared_scale and m.kind == "gw":
            im.set_clim(0, vmax)
        if ax is not axes[0][0]:
            ax.set_yticklabels([])
            ax.set_ylabel("")
    fig.colorbar(im, ax=list(axes[0]), fraction=0.025, label="GW" if m.kind == "gw" else "CKA")
    if title:
        fig.suptitle(title)
    return fig


def plot_probe_accuracy(names: Sequence[str], accuracies: Mapping[str, Sequence[float]], *, labels: Any = None,
                        chance: Mapping[str, float] | None = None, title: str | None = None) -> Figure:
    """Linear-probe accuracy per layer for several targets, with the GW groups as background bands.

    Args:
        names: the ``L`` layer names (x axis).
        accuracies: ``target -> L accuracies`` (e.g. ``{"a": [...], "a + b": [...]}``).
        labels: optional ``(L,)`` group labels; each group gets a shaded band.
        chance: ``target -> chance level``, drawn as dotted lines.
    """
    L = len(names)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (L,):
            raise ValueError(f"labels: expected {L} group labels, got shape {lab.shape}")
        for i, g in enumerate(lab):
            ax.axvspan(i - 0.5, i + 0.5, color=_GROUP_COLORS[int(g) % len(_GROUP_COLORS)], alpha=0.18, lw=0)
    for k, (target, acc) in enumerate(accuracies.items()):
        a = check_array(f"accuracies[{target!r}]", acc, ndim=1)
        if a.shape != (L,):
            raise ValueError(f"accuracies[{target!r}]: expected {L} values (one per layer), got {a.shape[0]}")
        line, = ax.plot(range(L), a, marker="o", label=target)
        if chance and target in chance:
            ax.axhline(chance[target], color=line.get_color(), ls=":", lw=1)
    ax.set_xticks(range(L), [short_name(n) for n in names], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("layer (background: GW group)" if labels is not None else "layer")
    ax.set_ylabel("held-out linear probe accuracy")
    ax.set_title(title or "What each layer makes linearly decodable")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
