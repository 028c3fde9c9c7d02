"""Ground truth for mechnb._linalg: sign/order conventions and rank decisions with their gap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mechnb._linalg import RankDecision, canonical_signs, default_rtol, rank_decision, svd, sym_eig

torch.set_num_threads(1)

pytestmark = pytest.mark.numerics


def random_orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return Q


def assert_convention(V: torch.Tensor) -> None:
    """Each column's first entry of largest magnitude (within sqrt(eps)) is positive."""
    for j in range(V.shape[1]):
        a = V[:, j].abs()
        first = int(torch.nonzero(a >= a.max() * (1 - 1.5e-8))[0])
        assert V[first, j] > 0, (j, V[:, j])


# --------------------------------------------------------------------------------------
# Signs
# --------------------------------------------------------------------------------------
def test_canonical_signs_make_the_largest_entry_positive_whatever_the_input_signs():
    Q = random_orthogonal(6, 0)
    ref = canonical_signs(Q)
    assert_convention(ref)
    for seed in range(5):
        flips = torch.where(torch.rand(6, generator=torch.Generator().manual_seed(seed)) < 0.5, -1.0, 1.0)
        out, signs = canonical_signs(Q * flips.double(), return_signs=True)
        assert torch.equal(out, ref)  # bit-identical: only signs were changed
        assert torch.equal(Q * flips.double() * signs, ref)
    # one vector, numpy in -> numpy out
    v = np.array([0.1, -0.9, 0.3])
    np.testing.assert_array_equal(canonical_signs(v), [-0.1, 0.9, -0.3])
    np.testing.assert_array_equal(canonical_signs(-v), [-0.1, 0.9, -0.3])


def test_ties_go_to_the_first_index_even_under_round_off():
    a = 2**-0.5
    for col in ([a, -a], [-a, a], [a, -a * (1 + 1e-12)], [-a * (1 + 1e-12), a]):
        out = canonical_signs(torch.tensor(col, dtype=torch.float64))
        assert out[0] > 0 and out[1] < 0, col
    # permuting entries of equal magnitude moves the decision with the first index
    v = torch.tensor([0.5, -0.5, 0.5, -0.5], dtype=torch.float64)
    assert torch.equal(canonical_signs(v), v) and torch.equal(canonical_signs(-v), v)
    w = v[[1, 0, 3, 2]]  # [-0.5, 0.5, -0.5, 0.5]
    assert torch.equal(canonical_signs(w), -w)
    # float32 gets a looser tie tolerance (sqrt(eps) = 3.5e-4)
    f = torch.tensor([-0.6, 0.6 * (1 + 1e-5)], dtype=torch.float32)
    assert canonical_signs(f)[0] > 0
    # a zero column is left alone
    assert torch.equal(canonical_signs(torch.zeros(3, 2)), torch.zeros(3, 2))


def test_sym_eig_is_descending_canonical_and_reconstructs():
    Q = random_orthogonal(7, 1)
    lam = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, -0.25, -2.0], dtype=torch.float64)
    M = Q @ torch.diag(lam) @ Q.T
    ev, V = sym_eig(M)
    torch.testing.assert_close(ev, lam, rtol=0, atol=1e-12)
    torch.testing.assert_close(V @ torch.diag(ev) @ V.T, M, rtol=0, atol=1e-12)
    assert_convention(V)
    # the same eigenvectors as the planted ones after the convention, whatever their signs
    torch.testing.assert_close(V, canonical_signs(Q), rtol=0, atol=1e-10)
    ev2, V2 = sym_eig(M.numpy())
    assert isinstance(V2, np.ndarray)
    np.testing.assert_allclose(V2, V.numpy(), atol=1e-12)


def test_svd_flips_u_and_vh_together():
    g = torch.Generator().manual_seed(2)
    A = torch.randn(9, 4, generator=g, dtype=torch.float64)
    U, S, Vh = svd(A)
    assert U.shape == (9, 4) and S.shape == (4,) and Vh.shape == (4, 4)
    assert bool((S[:-1] >= S[1:]).all())
    torch.testing.assert_close(U * S @ Vh, A, rtol=0, atol=1e-12)
    assert_convention(U)
    U2, _, Vh2 = svd(-A)  # A -> -A flips exactly one factor: the convention moves it onto Vh
    torch.testing.assert_close(U2, U, rtol=0, atol=1e-12)
    torch.testing.assert_close(Vh2, -Vh, rtol=0, atol=1e-12)


def test_bad_inputs_name_the_argument():
    with pytest.raises(TypeError, match="vectors"):
        canonical_signs([1.0, 2.0])
    with pytest.raises(TypeError, match="vectors"):
        canonical_signs(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="vectors"):
        canonical_signs(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="tie_rtol"):
        canonical_signs(torch.ones(2), tie_rtol=1.0)
    with pytest.raises(ValueError, match="M"):
        sym_eig(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="values"):
        rank_decision(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="min_gap"):
        rank_decision([1.0], min_gap=0)
    with pytest.raises(TypeError, match="shape"):
        default_rtol("3x3")


# --------------------------------------------------------------------------------------
# Rank decisions
# --------------------------------------------------------------------------------------
def planted_rank(m: int, n: int, r: int, seed: int, small: float = 0.0) -> torch.Tensor:
    """``m x n`` matrix with singular values ``1 .. 0.1`` (``r`` of them), then ``small``."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, min(m, n), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, min(m, n), generator=g, dtype=torch.float64))
    s = torch.full((min(m, n),), small, dtype=torch.float64)
    s[:r] = torch.logspace(0, -1, r, dtype=torch.float64)
    return U * s @ V.T


def test_default_rtol_is_numpys_matrix_rank_convention():
    assert default_rtol((30, 7)) == 30 * np.finfo(np.float64).eps
    assert default_rtol(5, torch.float32) == 5 * np.finfo(np.float32).eps
    for r in (0, 3, 7):
        A = planted_rank(30, 7, r, seed=r)
        d = rank_decision(torch.linalg.svdvals(A).numpy(), shape=A.shape)
        assert d.rank == np.linalg.matrix_rank(A.numpy()) == r


def test_planted_gap_gives_the_right_rank_and_reports_the_gap():
    A = planted_rank(40, 10, 6, seed=3)  # 6 values in [0.1, 1], 4 exact zeros
    sv = torch.linalg.svdvals(A).numpy()
    d = rank_decision(sv, shape=A.shape)
    assert isinstance(d, RankDecision)
    assert (d.rank, d.nullity, d.size) == (6, 4, 10)
    assert d.kept_min == pytest.approx(0.1, rel=1e-10)
    assert d.dropped_max < 1e-14  # round-off of the exact zeros
    assert d.gap == pytest.approx(d.kept_min / d.dropped_max) and d.gap > 1e12
    assert not d.thin and d.log10_gap > 12
    assert d.label() == f"4 (gap {d.gap:.0e})" and d.label("rank") == f"6 (gap {d.gap:.0e})"
    # a planted gap of 1e-8 (well above round-off) is a clear decision at rtol = 1e-4 too
    B = planted_rank(40, 10, 6, seed=3, small=1e-8)
    d2 = rank_decision(torch.linalg.svdvals(B).numpy(), rtol=1e-4)
    assert (d2.rank, d2.nullity) == (6, 4) and d2.gap == pytest.approx(0.1 / 1e-8, rel=1e-6) and not d2.thin


def test_a_thin_gap_is_flagged():
    B = planted_rank(20, 8, 5, seed=4, small=3e-2)  # the "zeros" sit only 3x below the kept 0.1
    d = rank_decision(torch.linalg.svdvals(B).numpy(), rtol=5e-2)
    assert (d.rank, d.nullity) == (5, 3)
    assert d.gap == pytest.approx(0.1 / 3e-2, rel=1e-6) and d.thin
    assert d.label() == "~3 (thin gap 3e+00)"
    # a full-rank matrix whose smallest value sits just above the cut is thin as well
    d = rank_decision([1.0, 0.5, 2e-15], shape=(3, 3))  # cut at 3 * eps = 6.7e-16
    assert d.rank == 3 and d.thin and d.gap == pytest.approx(2e-15 / (3 * np.finfo(float).eps))
    # min_gap sets what counts as thin
    assert not rank_decision([1.0, 1e-20], min_gap=10).thin


def test_edge_cases():
    d = rank_decision([])
    assert (d.rank, d.nullity, d.gap) == (0, 0, math.inf)
    d = rank_decision([0.0, 0.0, 0.0])
    assert (d.rank, d.nullity, d.gap) == (0, 3, math.inf) and not d.thin
    d = rank_decision([2.0, 1.0, 0.0])  # an exact zero: infinitely clear
    assert (d.rank, d.gap, d.label()) == (2, math.inf, "1 (gap inf)")
    d = rank_decision([1e-3, 1e-9], atol=1e-2)  # everything below an absolute cut
    assert d.rank == 0 and d.gap == pytest.approx(1e-2 / 1e-3)
    d = rank_decision(np.array([-3.0, 1.0, 1e-18]))  # eigenvalues: magnitudes count
    assert (d.rank, d.nullity) == (2, 1)


def test_margin_is_the_distance_of_the_nearest_value_to_the_cut():
    d = rank_decision([1.0, 0.5, 2e-3, 5e-5], rtol=1e-3)  # cut at 1e-3: kept 2e-3 (2x), dropped 5e-5 (20x)
    assert d.rank == 3 and d.margin == pytest.approx(2.0) and d.gap == pytest.approx(40.0) and d.thin
    assert rank_decision([1.0, 0.0]).margin == pytest.approx(1 / (2 * np.finfo(float).eps))  # cut 2 eps
    assert rank_decision([0.0, 0.0]).margin == math.inf
