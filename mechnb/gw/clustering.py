"""Groups of functionally similar layers: hierarchical clustering of a layer x layer distance matrix.

The last step of Gao, Dhurandhar, Natesan Ramamurthy & Wei 2024 (https://arxiv.org/abs/2410.16484):
the ``L x L`` GW matrix (:func:`mechnb.gw.layers.layer_gw_matrix`) is read as distances between
layers, and agglomerative clustering (scipy, average linkage = UPGMA by default) cut at a
height - or into a number of groups - yields the sub-networks. With neither given, the cut is
placed in the middle of the largest gap between consecutive merge heights
(:func:`auto_threshold`). ``contiguous=True`` only merges neighbouring segments of layers.

Pure array code: it accepts an ``(L, L)`` array or any object with a ``distances()`` method
(a :class:`~mechnb.gw.layers.LayerMatrix`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from mechnb._checks import check_array, check_choice, check_positive_float, check_positive_int

__all__ = ["layer_linkage", "cluster_layers", "auto_threshold", "layer_groups"]


@runtime_checkable
class _HasDistances(Protocol):
    """A layer comparison that can give its ``(L, L)`` distances (e.g. :class:`~mechnb.gw.layers.LayerMatrix`)."""

    def distances(self) -> np.ndarray: ...


def _check_distance_matrix(matrix: Any) -> np.ndarray:
    """``matrix`` as a symmetric, non-negative ``(L, L)`` float array with a zero diagonal."""
    if isinstance(matrix, _HasDistances):
        matrix = matrix.distances()
    D = check_array("matrix", matrix, ndim=2, square=True)
    if D.shape[0] < 1:
        raise ValueError("matrix: expected at least one layer, got an empty matrix")
    if (D < -1e-9).any():
        raise ValueError(f"matrix: expected non-negative distances, got min {D.min():.3g} "
                         "(pass LayerMatrix.distances() for a CKA similarity matrix)")
    D = 0.5 * (D + D.T)  # a solver's GW(A, B) and GW(B, A) can differ slightly: use their mean
    np.fill_diagonal(D, 0.0)
    return np.clip(D, 0.0, None)


def layer_linkage(matrix: Any, method: str = "average") -> np.ndarray:
    """scipy's ``(L-1, 4)`` linkage matrix for hierarchical clustering of a layer distance matrix."""
    check_choice("method", method, ["average", "complete", "single", "weighted"])
    D = _check_distance_matrix(matrix)
    if D.shape[0] < 2:
        raise ValueError("matrix: expected at least 2 layers to build a dendrogram, got 1")
    return hierarchy.linkage(squareform(D, checks=False), method=method)


def _largest_gap_cut(heights: np.ndarray) -> float:
    """A threshold in the middle of the largest jump between consecutive merge heights."""
    h = np.concatenate([[0.0], np.sort(heights)])
    k = int(np.argmax(np.diff(h)))
    return float(0.5 * (h[k] + h[k + 1]))


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel 0, 1, 2 ... in order of first appearance (so layer 0 is always in group 0)."""
    out, seen = np.empty(len(labels), dtype=int), {}
    for i, lab in enumerate(labels):
        out[i] = seen.setdefault(int(lab), len(seen))
    return out


def _contiguous_clusters(D: np.ndarray, n_groups: int | None, threshold: float | None) -> np.ndarray:
    """Agglomerative clustering that only merges neighbouring segments (average linkage)."""
    segs = [[i] for i in range(D.shape[0])]
    heights: list[float] = []
    history = [list(map(list, segs))]
    while len(segs) > 1:
        gaps = [D[np.ix_(a, b)].mean() for a, b in zip(segs[:-1], segs[1:])]
        k = int(np.argmin(gaps))
        heights.append(float(gaps[k]))
        segs = segs[:k] + [segs[k] + segs[k + 1]] + segs[k + 2:]
        history.append(list(map(list, segs)))
    if n_groups is not None:
        chosen = history[D.shape[0] - min(n_groups, D.shape[0])]
    else:
        cut = threshold if threshold is not None else _largest_gap_cut(np.array(heights))
        n_merges = sum(1 for h in heights if h <= cut)  # merge heights are usually increasing
        chosen = history[n_merges]
    labels = np.empty(D.shape[0], dtype=int)
    for g, seg in enumerate(chosen):
        labels[seg] = g
    return labels


def cluster_layers(matrix: Any, n_groups: int | None = None, threshold: float | None = None, *,
                   method: str = "average", contiguous: bool = False) -> np.ndarray:
    """Hierarchical clustering of layers from a distance matrix (e.g. GW) into groups.

    Args:
        matrix: ``(L, L)`` non-negative distances (symmetrised by averaging with the transpose)
            or a :class:`~mechnb.gw.layers.LayerMatrix` (its :meth:`~mechnb.gw.layers.LayerMatrix.distances`).
        n_groups: cut the dendrogram into this many groups.
        threshold: or cut it at this merge height (layers closer than it end up together).
            With neither, the cut is placed in the largest gap between merge heights.
        method: scipy linkage (``"average"`` = UPGMA).
        contiguous: only allow groups of consecutive layers (merge neighbouring segments).

    Returns:
        ``(L,)`` int labels, numbered 0, 1, ... in order of first appearance.
    """
    D = _check_distance_matrix(matrix)
    check_choice("method", method, ["average", "complete", "single", "weighted"])
    if n_groups is not None and threshold is not None:
        raise ValueError(f"n_groups, threshold: pass one of them, got n_groups={n_groups} and threshold={threshold}")
    if n_groups is not None:
        n_groups = check_positive_int("n_groups", n_groups)
    if threshold is not None:
        threshold = check_positive_float("threshold", threshold, allow_zero=True)
    L = D.shape[0]
    if L == 1:
        return np.zeros(1, dtype=int)
    if contiguous:
        return _canonical(_contiguous_clusters(D, n_groups, threshold))
    Z = hierarchy.linkage(squareform(D, checks=False), method=method)
    if n_groups is not None:
        labels = hierarchy.fcluster(Z, t=min(n_groups, L), criterion="maxclust")
    else:
        cut = threshold if threshold is not None else _largest_gap_cut(Z[:, 2])
        labels = hierarchy.fcluster(Z, t=cut, criterion="distance")
    return _canonical(labels)


def auto_threshold(matrix: Any, method: str = "average") -> float:
    """The cut height :func:`cluster_layers` uses when given neither ``n_groups`` nor ``threshold``:
    the middle of the largest gap between consecutive merge heights of the dendrogram."""
    return _largest_gap_cut(layer_linkage(matrix, method)[:, 2])


def layer_groups(labels: Any, names: Sequence[str]) -> list[list[str]]:
    """``labels`` from :func:`cluster_layers` as lists of layer names, e.g. ``[["input", "h1"], ["h2", ...]]``."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != len(names):
        raise ValueError(f"labels: expected {len(names)} labels (one per name), got shape {lab.shape}")
    return [[names[i] for i in np.flatnonzero(lab == g)] for g in sorted(set(lab.tolist()), key=lambda g: int(
        np.flatnonzero(lab == g)[0]))]
