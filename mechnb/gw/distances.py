"""Intra-layer distance matrices: a representation ``X_l (n, d_l)`` as the metric space ``C_l (n, n)``.

Gao, Dhurandhar, Natesan Ramamurthy & Wei 2024 (https://arxiv.org/abs/2410.16484) compare layers
through how each one arranges the inputs relative to each other: layer ``l`` becomes the
metric-measure space ``(C_l, p)`` with ``C_l[i, k] = d(x_i, x_k)`` and uniform weights ``p``
(Mémoli 2011, *Gromov-Wasserstein distances and the metric approach to object matching*).
No shared dimension or alignment of the feature axes is needed; normalising ``C_l`` by its
largest entry (the default) removes a layer's overall scale, so a layer and its rescaled copy
are at GW distance 0.

The distances are computed on ``X`` rescaled by a power of two (exact, see
:func:`~mechnb.gw.representations.power_of_two_scale`), so huge or tiny but finite entries give
the right matrix instead of inf/NaN; with ``normalize=None`` a result that cannot be represented
in float64 raises ``ValueError`` naming ``X``.
"""

from __future__ import annotations

import numpy as np
import torch

from mechnb._checks import check_choice
from mechnb.gw.representations import as_float64, power_of_two_scale

__all__ = ["METRICS", "NORMALIZATIONS", "distance_matrix"]

METRICS = ("euclidean", "sqeuclidean", "cosine")
NORMALIZATIONS = ("max", "mean", None)


def distance_matrix(X: torch.Tensor | np.ndarray, metric: str = "euclidean",
                    normalize: str | None = "max") -> torch.Tensor:
    """The intra-layer distance matrix ``C[i, k] = d(x_i, x_k)`` of a representation ``X (n, d)``.

    Args:
        X: ``(n, d)`` real representation (tensor or array; complex raises ``TypeError``); computed
            in float64 on ``X``'s device, on ``X`` scaled by a power of two (exact) so that huge or tiny
            entries neither overflow nor underflow.
        metric: ``"euclidean"`` (the paper's choice), ``"sqeuclidean"`` or ``"cosine"`` (``1 - cos``).
        normalize: ``"max"`` divides by the largest entry (so ``C`` is in [0, 1] and a layer and
            its rescaled copy become identical), ``"mean"`` by the mean off-diagonal entry,
            ``None`` keeps raw distances.

    Returns:
        ``(n, n)`` float64 tensor: symmetric, zero diagonal, non-negative, finite.

    Raises:
        ValueError: fewer than 2 rows; all rows identical (cannot normalise); an all-zero row with
            ``metric="cosine"``; with ``normalize=None``, raw distances beyond float64's range.
    """
    X = as_float64("X", X)
    check_choice("metric", metric, METRICS)
    check_choice("normalize", normalize, NORMALIZATIONS)
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"X: expected at least 2 rows (samples), got shape {tuple(X.shape)}")
    Xs, e = power_of_two_scale(X)  # X = Xs * 2**e exactly
    if metric == "cosine":  # scale-free
        norms = Xs.norm(dim=1)
        if bool((norms == 0).any()):
            raise ValueError(f"X: {int((norms == 0).sum())} rows are all-zero; cosine distance is undefined there "
                             "(use metric='euclidean')")
        U = Xs / norms[:, None]
        C = (1.0 - U @ U.T).clamp_min(0.0)
    else:  # centring first keeps the matrix-product formula |x|^2 + |y|^2 - 2 x.y accurate in float64
        Xc = Xs - Xs.mean(0, keepdim=True)
        C = torch.cdist(Xc, Xc, compute_mode="use_mm_for_euclid_dist")
        if metric == "sqeuclidean":
            C = C**2
    C = 0.5 * (C + C.T)
    C.fill_diagonal_(0.0)
    if normalize is not None:  # the scale 2**e cancels
        scale = C.max() if normalize == "max" else C.sum() / (n * (n - 1))
        if float(scale) <= 0:
            raise ValueError("X: all rows are identical, so the distance matrix is zero and cannot be normalised")
        return C / scale
    if e == 0 or metric == "cosine":
        return C
    power = 2 * e if metric == "sqeuclidean" else e
    raw = torch.ldexp(C, torch.tensor(power, dtype=torch.int32, device=C.device))
    if not bool(torch.isfinite(raw).all()):
        raise ValueError(f"X: the raw {metric} distances exceed float64's range (largest |X| entry "
                         f"{float(X.abs().max()):.3g}); use normalize='max' or 'mean', or rescale X")
    if bool(((raw == 0) & (C > 0)).any()):
        raise ValueError(f"X: the raw {metric} distances underflow float64 (largest |X| entry "
                         f"{float(X.abs().max()):.3g}); use normalize='max' or 'mean', or rescale X")
    return raw
