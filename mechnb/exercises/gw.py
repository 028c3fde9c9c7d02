"""Check functions for notebook 03 (Gromov-Wasserstein sub-networks, arXiv:2410.16484).

Known answers come from closed forms and from mechnb's own implementation (:mod:`mechnb.gw`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mechnb.exercises._core import Case, CheckResult, exercise, run_cases

__all__ = ["check_gw_two_point", "check_linear_cka"]

NOTEBOOK = "03_gromov_wasserstein_subnetworks"


def _two_point(d: float) -> np.ndarray:
    return np.array([[0.0, d], [d, 0.0]])


@exercise("3.1", "GW between two-point spaces", notebook=NOTEBOOK)
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


@exercise("3.2", "linear CKA", notebook=NOTEBOOK)
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
