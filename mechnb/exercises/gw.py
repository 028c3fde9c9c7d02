"""Check functions for notebook 03 (Gromov-Wasserstein sub-networks, arXiv:2410.16484).

Known answers come from closed forms, from a brute-force quadruple sum, and from mechnb's own
implementation (:mod:`mechnb.gw`). In notebook order:

* 3.1 :func:`check_gw_loss` - the GW objective of a given coupling, in the tensor-product form
  of Peyre, Cuturi & Solomon (2016, Proposition 1);
* 3.2 :func:`check_gw_two_point` - GW between two uniform two-point spaces (closed form);
* 3.3 :func:`check_distance_matrix` - a layer's max-normalised Euclidean distance matrix;
* 3.4 :func:`check_linear_cka` - linear CKA, the baseline.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mechnb.exercises._core import Case, CheckResult, exercise, run_cases

__all__ = ["check_gw_loss", "check_gw_two_point", "check_distance_matrix", "check_linear_cka"]

NOTEBOOK = "03_gromov_wasserstein_subnetworks"


def _two_point(d: float) -> np.ndarray:
    return np.array([[0.0, d], [d, 0.0]])


# --------------------------------------------------------------------------------------------
# 3.1 the GW objective of a given coupling
# --------------------------------------------------------------------------------------------


def gw_loss_bruteforce(C1: torch.Tensor, C2: torch.Tensor, T: torch.Tensor) -> float:
    """``sum_{i,j,k,l} (C1[i,k] - C2[j,l])**2 T[i,j] T[k,l]`` by materialising the ``(n1, n2, n1, n2)`` tensor.

    The definition itself, O(n^4) memory: only for the tiny cases of :func:`check_gw_loss`.
    """
    C1, C2, T = (torch.as_tensor(a, dtype=torch.float64) for a in (C1, C2, T))
    diff2 = (C1[:, None, :, None] - C2[None, :, None, :]) ** 2  # index order (i, j, k, l)
    return float((diff2 * T[:, :, None, None] * T[None, None, :, :]).sum())


def _random_distances(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    return torch.cdist(X, X)


def _gw_loss_cases() -> list[Case]:
    """The cases of :func:`check_gw_loss` (their ``expected`` values are checked against POT in the tests)."""
    g = torch.Generator().manual_seed(3)
    a, b = 1.0, 0.3
    A, B = torch.from_numpy(_two_point(a)), torch.from_numpy(_two_point(b))
    matching = torch.tensor([[0.5, 0.0], [0.0, 0.5]], dtype=torch.float64)
    product = torch.full((2, 2), 0.25, dtype=torch.float64)

    # a cloud and a shuffled copy of it: the coupling that undoes the shuffle preserves every distance
    n = 6
    C = _random_distances(n, 2, g)
    perm = torch.randperm(n, generator=g)
    C_shuffled = C[perm][:, perm]  # point j of the copy is point perm[j] of the cloud
    undo = torch.zeros(n, n, dtype=torch.float64)
    undo[perm, torch.arange(n)] = 1.0 / n

    # different sizes, a coupling with non-uniform marginals that is not a product
    C1, C2 = _random_distances(6, 3, g), _random_distances(4, 5, g)
    T_free = torch.rand(6, 4, generator=g, dtype=torch.float64) ** 2
    T_free /= T_free.sum()

    # the product coupling p q^T of two non-uniform weight vectors
    D1, D2 = _random_distances(5, 2, g), _random_distances(8, 4, g)
    p = torch.rand(5, generator=g, dtype=torch.float64) + 0.2
    q = torch.rand(8, generator=g, dtype=torch.float64) + 0.2
    T_prod = torch.outer(p / p.sum(), q / q.sum())

    marginals = ("take the weights from the coupling itself, p = T.sum(1) and q = T.sum(0); they are not "
                 "uniform here")
    return [
        Case((A, B, matching), (a - b) ** 2 / 2, label="two-point spaces a = 1, b = 0.3, T = [[1/2, 0], [0, 1/2]]",
             hint="only (i, k) = (0, 1), (1, 0) against (j, l) the same pairs survive: 2 terms of (a - b)^2 / 4; "
                  "is the cross term -2 <C1 T C2^T, T> (with the 2)?"),
        Case((A, B, product), (a**2 + b**2 + (a - b) ** 2) / 4,
             label="two-point spaces a = 1, b = 0.3, product coupling T = ones(2, 2) / 4",
             hint="with T = p q^T every (i, k) meets every (j, l): the sum of all 16 (C1_ik - C2_jl)^2, over 16"),
        Case((C, C_shuffled, undo), 0.0, label="a 6-point cloud vs a shuffled copy, T = the permutation / 6 undoing it",
             hint="this coupling maps every pair to a pair at the same distance, so every term is 0; check the "
                  "cross term C1 @ T @ C2.T (not T @ C2 @ C1 or C1 @ T.T ...)"),
        Case((C1, C2, T_free), gw_loss_bruteforce(C1, C2, T_free),
             label="C1 (6, 6), C2 (4, 4), a random T (6, 4) with non-uniform marginals",
             hint=marginals + "; shapes: C1 @ T @ C2.T is (6, 4) like T"),
        Case((D1, D2, T_prod), gw_loss_bruteforce(D1, D2, T_prod),
             label="C1 (5, 5), C2 (8, 8), T = p q^T with non-uniform p, q", hint=marginals),
    ]


@exercise("3.1", "the GW objective of a coupling", notebook=NOTEBOOK)
def check_gw_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float]) -> CheckResult:
    """Check ``fn(C1, C2, T) -> float``: ``L(T) = sum_{i,j,k,l} (C1_ik - C2_jl)^2 T_ij T_kl``.

    ``C1 (n1, n1)`` and ``C2 (n2, n2)`` are symmetric distance matrices, ``T (n1, n2)`` a
    non-negative coupling (float64 tensors). The intended solution is the O(n^3) form of Peyre,
    Cuturi & Solomon (2016, Proposition 1) for the square loss, with ``p = T 1`` and ``q = T^T 1``::

        L(T) = p^T (C1 * C1) p + q^T (C2 * C2) q - 2 <C1 T C2^T, T>

    (POT: ``ot.gromov.gwloss(*ot.gromov.init_matrix(C1, C2, p, q), T)``). Expected values: closed
    forms for two-point spaces (``(a - b)^2 / 2`` at the matching coupling,
    ``(a^2 + b^2 + (a - b)^2) / 4`` at the product coupling), 0 for a shuffled copy with the
    coupling that undoes the shuffle, and the brute-force quadruple sum otherwise.
    """
    return run_cases(fn, _gw_loss_cases(), atol=1e-9, rtol=1e-7)


# --------------------------------------------------------------------------------------------
# 3.2 two-point spaces
# --------------------------------------------------------------------------------------------


@exercise("3.2", "GW between two-point spaces", notebook=NOTEBOOK)
def check_gw_two_point(fn: Callable[[float, float], float]) -> CheckResult:
    """Check ``fn(a, b) -> float``: GW between two uniform two-point spaces at distances ``a`` and ``b``.

    With ``GW = min_T sum (C1_ik - C2_jl)^2 T_ij T_kl`` (POT's convention, the one mechnb uses)
    the answer is ``(a - b)^2 / 2`` for either matching. The expected values are computed by
    :func:`mechnb.gw.gw_distance` on the two distance matrices.
    """
    from mechnb.gw import gw_distance

    pairs = [(1.0, 0.3), (0.3, 1.0), (2.0, 2.0), (0.0, 1.5), (5.0, 1.0)]
    cases = [Case((a, b), gw_distance(_two_point(a), _two_point(b)), label=f"a = {a}, b = {b}",
                  hint="every (i, k) pair meets every (j, l) pair with weight T_ij T_kl = 1/2 * 1/2 or 0; "
                       "count the (C1_ik - C2_jl)^2 terms that survive")
             for a, b in pairs]
    return run_cases(fn, cases, atol=1e-8, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# 3.3 a layer's distance matrix
# --------------------------------------------------------------------------------------------


def _distance_matrix_cases() -> list[Case]:
    """The cases of :func:`check_distance_matrix`."""
    from mechnb.gw import distance_matrix

    g = torch.Generator().manual_seed(4)
    triangle = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    X = torch.randn(12, 5, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    moved = 3.0 * X @ Q + 10.0
    H = torch.relu(torch.randn(30, 64, generator=g, dtype=torch.float64) @ torch.randn(64, 64, generator=g,
                                                                                      dtype=torch.float64))
    expected_X = distance_matrix(X)
    return [
        Case((triangle,), torch.tensor([[0.0, 0.6, 0.8], [0.6, 0.0, 1.0], [0.8, 1.0, 0.0]], dtype=torch.float64),
             label="the 3-4-5 triangle (0, 0), (3, 0), (0, 4)",
             hint="Euclidean distances (3, 4, 5; not their squares 9, 16, 25) divided by the largest one, 5"),
        Case((X,), expected_X, label="X: 12 random points in R^5"),
        Case((moved,), expected_X, label="3 * X @ Q + 10 (X rotated, scaled by 3 and shifted)",
             hint="a rotation and a shift keep every distance; dividing by the largest distance removes the scale"),
        Case((H,), distance_matrix(H), label="H: a ReLU layer, 30 inputs x 64 units",
             hint="one row and one column per input (30 x 30), whatever the number of units"),
    ]


@exercise("3.3", "a layer's distance matrix", notebook=NOTEBOOK)
def check_distance_matrix(fn: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``fn(X) -> Tensor``: ``C[i, k] = ||x_i - x_k|| / max_{i,k} ||x_i - x_k||`` for ``X (n, d)``, ``C (n, n)``.

    What :func:`mechnb.gw.distance_matrix` computes with its defaults (``metric="euclidean"``,
    ``normalize="max"``). Expected values: the 3-4-5 triangle in closed form, mechnb's matrix
    otherwise (and the same matrix for a rotated, rescaled, shifted copy).
    """
    return run_cases(fn, _distance_matrix_cases(), atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# 3.4 linear CKA
# --------------------------------------------------------------------------------------------


@exercise("3.4", "linear CKA", notebook=NOTEBOOK)
def check_linear_cka(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> CheckResult:
    """Check ``fn(X, Y) -> float``: linear CKA of ``X (n, d1)`` and ``Y (n, d2)`` (Kornblith et al. 2019).

    ``CKA = <HKH, HLH> / sqrt(<HKH, HKH> <HLH, HLH>)`` with ``K = X X^T``, ``L = Y Y^T`` and ``H``
    the centring matrix. Expected values from :func:`mechnb.gw.cka` (plus its invariances: a
    rotation and a rescaling of ``X`` give exactly 1).
    """
    from mechnb.gw import cka

    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 6, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    Y = torch.randn(40, 9, generator=g, dtype=torch.float64)
    Z = torch.cat([X[:, :3], torch.randn(40, 2, generator=g, dtype=torch.float64)], dim=1)
    shifted = X + 5.0  # centring removes the offset
    cases = [
        Case((X, X @ Q * 3.0), 1.0, label="X vs X rotated and scaled by 3",
             hint="CKA is invariant to rotations and isotropic scaling; did you centre K and L?"),
        Case((X, Y), cka(X, Y), label="X (40, 6) vs an unrelated Y (40, 9)"),
        Case((X, Z), cka(X, Z), label="X vs [3 of X's columns, 2 new ones]"),
        Case((shifted, Y), cka(shifted, Y), label="X + 5 vs Y",
             hint="centre the Gram matrices (H K H), otherwise a constant offset changes the answer"),
    ]
    return run_cases(fn, cases, atol=1e-6, rtol=1e-5)
