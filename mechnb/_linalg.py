"""Deterministic eigen / SVD bases and rank decisions that report their margin (the ground floor).

Eigenvectors and singular vectors are defined only up to sign (and, for repeated values, up
to a rotation of their eigenspace); which sign comes out of LAPACK depends on the kernel torch
dispatches to (``ATEN_CPU_CAPABILITY=default / avx2 / avx512``), the thread count and the
machine. Everything in :mod:`mechnb` that returns such a basis goes through this module, so
the same input gives the same basis everywhere:

- **order**: eigenvalues and singular values in descending order (:func:`sym_eig`, :func:`svd`);
- **sign**: each basis vector's largest-magnitude entry is positive; entries whose magnitude is
  within ``tie_rtol`` (default ``sqrt(eps)`` of the dtype) of the largest count as tied, and
  the tie goes to the first index (:func:`canonical_signs`). A rotation inside the eigenspace
  of a repeated eigenvalue is *not* fixed (no convention can fix it stably).

Rank and nullity decisions (:func:`rank_decision`) count the values above a threshold and
report how clear the decision was: the **gap**, the ratio between the smallest kept and the
largest dropped value. The default threshold is numpy's ``matrix_rank`` convention,
``max(shape) · eps(dtype) · σ_max`` (Press et al., *Numerical Recipes*, 2nd ed., Sec. 2.6; the
backward error of a stable SVD / symmetric eigensolver is ``O(max(shape) · eps · ‖A‖)``). A
decision whose gap is below ``min_gap`` (default ``1e3``) is *thin*: the count could change
with the kernel, the threads or the machine, and reports print it as ``~N (thin gap ...)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from mechnb._checks import check_array, check_finite, check_positive_float, check_tensor

__all__ = [
    "canonical_signs",
    "sym_eig",
    "svd",
    "RankDecision",
    "rank_decision",
    "default_rtol",
    "DEFAULT_MIN_GAP",
]

DEFAULT_MIN_GAP = 1e3

Arr = TypeVar("Arr", torch.Tensor, np.ndarray)


def _eps(dtype: Any) -> float:
    if isinstance(dtype, torch.dtype):
        return float(torch.finfo(dtype).eps)
    return float(np.finfo(dtype).eps)


def _as_tensor(name: str, x: Any) -> tuple[torch.Tensor, bool]:
    """``(tensor, was_numpy)``; numpy arrays are wrapped (no copy), anything else rejected."""
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating)):
            raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x)), True
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
        return x, False
    raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def _back(x: torch.Tensor, was_numpy: bool) -> Any:
    return x.cpu().numpy() if was_numpy else x


def _sign_of_columns(V: torch.Tensor, tie_rtol: float) -> torch.Tensor:
    """``(k,)`` signs (±1, dtype of ``V``) that make each column's leading entry positive."""
    a = V.abs()
    top = a.max(dim=0).values  # (k,)
    tied = a >= top[None, :] * (1.0 - tie_rtol)  # (d, k); the maximum itself is always tied
    first = tied.to(torch.int8).argmax(dim=0)  # first True per column
    lead = V.gather(0, first[None, :])[0]
    return torch.where(lead < 0, -torch.ones_like(lead), torch.ones_like(lead))


def canonical_signs(vectors: Arr, *, tie_rtol: float | None = None, return_signs: bool = False) -> Any:
    """Flip each column of ``vectors`` so that its largest-magnitude entry is positive.

    Entries whose magnitude is at least ``(1 - tie_rtol)`` times the column's largest count as
    tied, and the first of them (lowest row index) decides, so ``[a, -a]`` becomes ``[a, -a]``
    and ``[-a, a]`` becomes ``[a, -a]`` even when round-off makes the second slightly larger.
    A zero column is left as it is. The result does not depend on the signs the input came with.

    Args:
        vectors: ``(d, k)`` basis vectors as columns (or one ``(d,)`` vector); a tensor or a
            floating-point numpy array.
        tie_rtol: relative tolerance for ties; default ``sqrt(eps)`` of the dtype
            (``1.5e-8`` in float64, ``3.5e-4`` in float32).
        return_signs: also return the ``(k,)`` signs applied (``vectors * signs``).

    Returns:
        The flipped ``(d, k)`` (or ``(d,)``) vectors, same type and dtype as the input; with
        ``return_signs``, ``(flipped, signs)``.
    """
    V, was_np = _as_tensor("vectors", vectors)
    if V.ndim not in (1, 2):
        raise ValueError(f"vectors: expected a (d,) vector or a (d, k) matrix of column vectors, "
                         f"got shape {tuple(V.shape)}")
    check_finite("vectors", V)
    tie = math.sqrt(_eps(V.dtype)) if tie_rtol is None else check_positive_float("tie_rtol", tie_rtol, allow_zero=True)
    if tie >= 1:
        raise ValueError(f"tie_rtol: expected a number in [0, 1), got {tie_rtol!r}")
    one = V.ndim == 1
    M = V[:, None] if one else V
    if M.shape[0] == 0 or M.shape[1] == 0:
        signs = torch.ones(M.shape[1], dtype=M.dtype, device=M.device)
    else:
        signs = _sign_of_columns(M, tie)
    out = M * signs[None, :]
    out = out[:, 0] if one else out
    if return_signs:
        return _back(out, was_np), _back(signs, was_np)
    return _back(out, was_np)


def sym_eig(M: Arr, *, tie_rtol: float | None = None) -> tuple[Any, Any]:
    """Eigen-decomposition of a symmetric matrix with the conventions of this module.

    ``M`` is symmetrised (``(M + Mᵀ) / 2``) and decomposed in its own dtype; eigenvalues come
    in descending (algebraic) order, each eigenvector's largest-magnitude entry is positive
    (:func:`canonical_signs`). For a repeated eigenvalue the basis of its eigenspace is one
    valid choice, not a unique one.

    Args:
        M: ``(d, d)`` symmetric matrix (tensor or floating-point numpy array).
        tie_rtol: passed to :func:`canonical_signs`.

    Returns:
        ``(eigenvalues (d,), eigenvectors (d, d))`` with ``M ≈ V diag(λ) Vᵀ``; the same type as ``M``.
    """
    A, was_np = _as_tensor("M", M)
    check_tensor("M", A, ndim=2, dims="(d, d)")
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"M: expected a square (d, d) matrix, got shape {tuple(A.shape)}")
    ev, vec = torch.linalg.eigh(0.5 * (A + A.T))
    ev, vec = ev.flip(0), vec.flip(1)
    vec = canonical_signs(vec, tie_rtol=tie_rtol)
    return _back(ev, was_np), _back(vec, was_np)


def svd(A: Arr, *, tie_rtol: float | None = None) -> tuple[Any, Any, Any]:
    """Thin SVD ``A = U diag(S) Vh`` with the conventions of this module.

    Singular values descending; each column of ``U`` has its largest-magnitude entry positive
    (:func:`canonical_signs`) and the matching row of ``Vh`` is flipped with it, so the product
    is unchanged.

    Args:
        A: ``(m, n)`` matrix (tensor or floating-point numpy array).
        tie_rtol: passed to :func:`canonical_signs`.

    Returns:
        ``(U (m, k), S (k,), Vh (k, n))`` with ``k = min(m, n)``; the same type as ``A``.
    """
    X, was_np = _as_tensor("A", A)
    check_tensor("A", X, ndim=2, dims="(m, n)")
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    U, signs = canonical_signs(U, tie_rtol=tie_rtol, return_signs=True)
    Vh = Vh * signs[:, None]
    return _back(U, was_np), _back(S, was_np), _back(Vh, was_np)


def default_rtol(shape: Sequence[int] | int, dtype: Any = torch.float64) -> float:
    """numpy's ``matrix_rank`` tolerance ``max(shape) · eps(dtype)`` (relative to the largest value)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        dims = [int(shape)]
    elif isinstance(shape, Sequence) and shape and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                                         for s in shape):
        dims = [int(s) for s in shape]
    else:
        raise TypeError(f"shape: expected an int or a non-empty sequence of ints (the matrix shape), got {shape!r}")
    if min(dims) < 0:
        raise ValueError(f"shape: expected non-negative sizes, got {shape!r}")
    try:
        eps = _eps(dtype)
    except (TypeError, ValueError):
        raise TypeError(f"dtype: expected a floating torch or numpy dtype, got {dtype!r}") from None
    return max(max(dims), 1) * eps


@dataclass(frozen=True)
class RankDecision:
    """A rank / nullity decision and how clear it was.

    Attributes:
        rank: number of values above ``threshold``.
        size: number of values considered (``rank + nullity``).
        threshold: absolute cut: values ``<= threshold`` count as zero.
        kept_min: smallest kept value (``None`` when none is kept).
        dropped_max: largest dropped value (``None`` when none is dropped).
        gap: ``kept_min / dropped_max``; when one side is empty the threshold stands in for it
            (``kept_min / threshold`` for a full rank, ``threshold / dropped_max`` for rank 0);
            ``inf`` when the dropped values are exactly zero (or there are no values).
        min_gap: the gap below which the decision is called thin.
    """

    rank: int
    size: int
    threshold: float
    kept_min: float | None
    dropped_max: float | None
    gap: float
    min_gap: float = DEFAULT_MIN_GAP

    @property
    def nullity(self) -> int:
        """``size - rank``: the number of values counted as zero."""
        return self.size - self.rank

    @property
    def thin(self) -> bool:
        """``gap < min_gap``: the count could flip with round-off (kernel, threads, machine)."""
        return self.gap < self.min_gap

    @property
    def margin(self) -> float:
        """How far the value nearest to the cut is from it, as a ratio ``>= 1``:
        ``min(kept_min / threshold, threshold / dropped_max)`` (``inf`` without such a value).

        A count is reproducible across machines when ``margin - 1`` is well above the values'
        relative round-off, even if the gap is thin (a continuous spectrum cut at a chosen
        ``rtol``: the count is then a property of that ``rtol``, not of the matrix)."""
        ratios = []
        if self.kept_min is not None and self.threshold > 0:
            ratios.append(self.kept_min / self.threshold)
        if self.dropped_max is not None and self.dropped_max > 0:
            ratios.append(self.threshold / self.dropped_max)
        return min(ratios, default=math.inf)

    @property
    def log10_gap(self) -> float:
        """``log10(gap)`` (``inf`` for an infinite gap): decades between kept and dropped values."""
        return math.inf if math.isinf(self.gap) else math.log10(self.gap) if self.gap > 0 else -math.inf

    def label(self, what: str = "nullity") -> str:
        """The count with its margin: ``"125 (gap 1e+09)"``, or ``"~125 (thin gap 3e+01)"``.

        Args:
            what: ``"nullity"`` or ``"rank"``, the count to print.
        """
        if what not in ("nullity", "rank"):
            raise ValueError(f"what: expected 'nullity' or 'rank', got {what!r}")
        n = self.nullity if what == "nullity" else self.rank
        g = "inf" if math.isinf(self.gap) else f"{self.gap:.0e}"
        return f"~{n} (thin gap {g})" if self.thin else f"{n} (gap {g})"

    def __str__(self) -> str:
        return self.label("nullity")


def rank_decision(values: Any, *, rtol: float | None = None, atol: float = 0.0,
                  shape: Sequence[int] | int | None = None, dtype: Any = torch.float64,
                  min_gap: float = DEFAULT_MIN_GAP) -> RankDecision:
    """Count the values above ``max(atol, rtol · max|v|)`` and report the gap around the cut.

    Use it on singular values (or on ``|eigenvalues|`` of a symmetric matrix, as numpy's
    ``matrix_rank(hermitian=True)`` does).

    Args:
        values: ``(k,)`` singular values or eigenvalues (magnitudes are used), any order.
        rtol: relative threshold; default :func:`default_rtol` ``(shape, dtype)``, i.e.
            ``max(shape) · eps(dtype)``.
        atol: absolute threshold (the larger of the two applies).
        shape: shape of the matrix the values came from (for the default ``rtol``; default
            ``(k, k)``).
        dtype: dtype the matrix was decomposed in (for the default ``rtol``).
        min_gap: gaps below this make the decision :attr:`RankDecision.thin`.

    Returns:
        A :class:`RankDecision` (``.rank``, ``.nullity``, ``.gap``, ``.thin``, ``.label()``).
    """
    v = np.abs(check_array("values", values, ndim=1))
    atol = check_positive_float("atol", atol, allow_zero=True)
    min_gap = check_positive_float("min_gap", min_gap)
    if rtol is None:
        rtol = default_rtol(shape if shape is not None else max(v.size, 1), dtype)
    else:
        rtol = check_positive_float("rtol", rtol, allow_zero=True)
    top = float(v.max()) if v.size else 0.0
    thr = max(atol, rtol * top)
    kept, dropped = v[v > thr], v[v <= thr]
    kmin = float(kept.min()) if kept.size else None
    dmax = float(dropped.max()) if dropped.size else None
    if kmin is not None and dmax is not None:
        gap = kmin / dmax if dmax > 0 else math.inf
    elif kmin is not None:  # nothing dropped: how far the smallest kept value sits above the cut
        gap = kmin / thr if thr > 0 else math.inf
    elif dmax is not None and dmax > 0:  # nothing kept
        gap = thr / dmax
    else:
        gap = math.inf
    return RankDecision(rank=int(kept.size), size=int(v.size), threshold=float(thr), kept_min=kmin,
                        dropped_max=dmax, gap=float(gap), min_gap=min_gap)
