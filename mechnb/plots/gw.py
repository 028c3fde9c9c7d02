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

__all__ = ["short_name", "plot_coupling", "plot_layer_matrix", "plot_dendrogram", "plot_layer_comparison",
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
