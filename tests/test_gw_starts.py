"""Several solver starts (``n_init``), seeded random couplings and the certified lower bound of mechnb.gw.

The GW problem is non-convex: the exact solver stops in a local optimum that depends on its start, and
from the product coupling the first step can be a tie that round-off breaks differently on different
CPUs. These tests check properties that hold on every machine: the best of several starts is
the minimum of their values, the seeded starts are deterministic, the lower bound lies below every
solver value and meets closed forms.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechnb import gw
from mechnb.experiments.gw import toy_shapes


def _clouds(seed: int, n1: int = 12, n2: int = 9) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    A = gw.distance_matrix(torch.randn(n1, 3, generator=g, dtype=torch.float64)).numpy()
    B = gw.distance_matrix(torch.randn(n2, 2, generator=g, dtype=torch.float64) ** 3).numpy()
    return A, B


def _toy() -> dict[str, torch.Tensor]:
    return {k: gw.distance_matrix(torch.from_numpy(v), normalize=None) for k, v in toy_shapes().items()}


# --------------------------------------------------------------------------------------
# n_init
# --------------------------------------------------------------------------------------
def test_n_init_one_is_the_single_start() -> None:
    A, B = _clouds(0)
    one = gw.gw_solve(A, B)
    assert one.n_init == 1 and one.start == "product" == one.init and one.start_values == (one.value,)
    again = gw.gw_solve(A, B, n_init=1, seed=123)  # the seed only matters for random starts
    assert again.value == one.value and np.array_equal(again.coupling, one.coupling)


@pytest.mark.numerics
def test_best_of_starts_is_the_minimum_and_deterministic() -> None:
    A, B = _clouds(1)
    sol = gw.gw_solve(A, B, n_init=6, seed=3)
    assert sol.n_init == 6 and len(sol.start_values) == 6
    assert sol.value == min(sol.start_values)
    assert sol.value <= gw.gw_solve(A, B).value  # never worse than the product start alone
    names = [f"random {k}" for k in range(1, 6)]
    assert sol.start in ["product", *names]
    assert sol.init == "product"  # the requested first start
    twin = gw.gw_solve(A, B, n_init=6, seed=3)
    assert twin.start_values == sol.start_values and np.array_equal(twin.coupling, sol.coupling)
    other = gw.gw_solve(A, B, n_init=6, seed=4)
    assert other.start_values[0] == sol.start_values[0]  # the product start does not depend on the seed
    assert other.start_values[1:] != sol.start_values[1:]
    # the winner's coupling is a valid coupling and its objective is the reported value
    assert np.allclose(sol.coupling.sum(1), 1 / 12) and np.allclose(sol.coupling.sum(0), 1 / 9)
    assert gw.gw_distance(A, B, init=sol.coupling) == pytest.approx(sol.value, abs=1e-12)


def test_start_order_named_then_random() -> None:
    C = _toy()
    # same points on both sides: product, identity, then random
    sol = gw.gw_solve(C["circle"], C["circle"], n_init=4)
    assert len(sol.start_values) == 4
    assert sol.start_values[1] == pytest.approx(0.0, abs=1e-12)  # start 2 is the identity: exact
    assert sol.value == pytest.approx(0.0, abs=1e-12)
    assert sol.start in ("product", "identity")  # "product" only where round-off breaks its tie luckily
    # identity requested first: the product coupling comes second
    sol2 = gw.gw_solve(C["circle"], C["circle"], init="identity", n_init=2)
    assert sol2.init == "identity" and sol2.start == "identity" and sol2.start_values[0] == pytest.approx(0.0)
    # different sizes: no identity start, straight to random couplings
    A, B = _clouds(2)
    sol3 = gw.gw_solve(A, B, n_init=3)
    assert sol3.start in ("product", "random 1", "random 2")


@pytest.mark.numerics
def test_seeded_random_starts_fix_the_toy_values() -> None:
    """The values notebook 03 prints: from seeded random starts (no ties), the same on every kernel family."""
    C = _toy()
    best = gw.gw_solve(C["L"], C["circle"], n_init=20)
    # the lowest value over all 5040 permutation couplings of the 7 points (evaluated below) is reached
    p = np.full(7, 1 / 7)
    import itertools

    import ot

    consts = ot.gromov.init_matrix(C["L"].numpy(), C["circle"].numpy(), p, p, "square_loss")
    vertex_best = min(ot.gromov.gwloss(*consts, np.eye(7)[list(perm)] / 7) for perm in itertools.permutations(range(7)))
    assert best.value == pytest.approx(vertex_best, abs=1e-9)
    assert best.start.startswith("random")
    for other in ["L moved", "L mirrored"]:
        assert gw.gw_distance(C["L"], C[other], n_init=20) == pytest.approx(0.0, abs=1e-12)
    circle = gw.gw_solve(C["circle"], C["circle"], n_init=10)
    random_values = circle.start_values[2:]
    assert circle.value == pytest.approx(0.0, abs=1e-12) and circle.start in ("product", "identity")
    assert all(v > 0.1 for v in random_values)  # the circle traps every seeded random start


def test_layer_gw_matrix_n_init_never_higher() -> None:
    g = torch.Generator().manual_seed(5)
    base = torch.randn(25, 3, generator=g, dtype=torch.float64)
    reps = {f"l{k}": torch.cat([base ** (k + 1), torch.randn(25, 2, generator=g, dtype=torch.float64)], 1)
            for k in range(4)}
    one = gw.layer_gw_matrix(reps, progress=False)
    three = gw.layer_gw_matrix(reps, n_init=3, progress=False)
    assert three.settings["n_init"] == 3
    assert np.all(three.matrix <= one.matrix + 1e-12)
    assert np.array_equal(three.matrix, three.matrix.T) and np.all(np.diag(three.matrix) == 0)


def test_n_init_and_seed_validated() -> None:
    A, B = _clouds(3)
    with pytest.raises(ValueError, match="n_init: expected an int >= 1, got 0"):
        gw.gw_solve(A, B, n_init=0)
    with pytest.raises(TypeError, match="n_init"):
        gw.gw_solve(A, B, n_init=2.0)
    with pytest.raises(TypeError, match="seed: expected an int seed"):
        gw.gw_solve(A, B, n_init=2, seed=1.5)
    with pytest.raises(ValueError, match="seed"):
        gw.gw_distance(A, B, seed=-1)


def test_a_failing_start_is_named() -> None:
    A, B = _clouds(4, 30, 30)
    with pytest.raises(gw.GWSolverError, match=r"start 2 of n_init=3 \(identity\)|start 1 of n_init=3 \(product\)"):
        gw.gw_solve(A, B, n_init=3, max_iter=1, tol=1e-14)


# --------------------------------------------------------------------------------------
# random couplings
# --------------------------------------------------------------------------------------
def test_random_coupling_marginals_and_seed() -> None:
    g = torch.Generator().manual_seed(6)
    p = torch.rand(7, generator=g, dtype=torch.float64).numpy() + 0.1
    q = torch.rand(11, generator=g, dtype=torch.float64).numpy() + 0.1
    p, q = p / p.sum(), q / q.sum()
    T = gw.random_coupling(p, q, seed=2)
    assert T.shape == (7, 11) and (T > 0).all()
    assert np.abs(T.sum(1) - p).max() < 1e-12 and np.abs(T.sum(0) - q).max() < 1e-12
    assert np.array_equal(T, gw.random_coupling(p, q, seed=2))
    assert not np.allclose(T, gw.random_coupling(p, q, seed=3))
    assert not np.allclose(T, np.outer(p, q), rtol=0.05)  # far from the product coupling (no tie)
    with pytest.raises(ValueError, match="q: expected non-negative weights summing to 1"):
        gw.random_coupling(p, q * 2)
    with pytest.raises(TypeError, match="seed"):
        gw.random_coupling(p, q, seed="a")


# --------------------------------------------------------------------------------------
# the lower bound (Mémoli 2011, the third lower bound)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b", [(1.0, 0.3), (0.2, 2.5), (1.0, 1.0)])
def test_lower_bound_two_point_closed_form(a: float, b: float) -> None:
    two = lambda d: np.array([[0.0, d], [d, 0.0]])  # noqa: E731
    # each row's distance distribution is {0, d} with weight 1/2 each: W2^2 = (a - b)^2 / 2 = GW
    assert gw.gw_lower_bound(two(a), two(b)) == pytest.approx((a - b) ** 2 / 2, abs=1e-12)


def test_lower_bound_one_point_space_is_exact() -> None:
    g = torch.Generator().manual_seed(7)
    C2 = gw.distance_matrix(torch.randn(10, 3, generator=g)).numpy()
    q = torch.rand(10, generator=g, dtype=torch.float64).numpy()
    q /= q.sum()
    exact = float(q @ C2**2 @ q)  # every (j, l) meets the single point: sum_jl q_j q_l C2[j, l]^2
    assert gw.gw_lower_bound(np.zeros((1, 1)), C2, q=q) == pytest.approx(exact, rel=1e-12)
    assert gw.gw_distance(np.zeros((1, 1)), C2, q=q) == pytest.approx(exact, rel=1e-9)


@pytest.mark.numerics
def test_lower_bound_below_every_solver_value() -> None:
    for seed in range(4):
        A, B = _clouds(10 + seed)
        low = gw.gw_lower_bound(A, B)
        sol = gw.gw_solve(A, B, n_init=5, seed=seed)
        assert 0.0 <= low <= min(sol.start_values) + 1e-12
    C = _toy()
    assert gw.gw_lower_bound(C["L"], C["L moved"]) == pytest.approx(0.0, abs=1e-12)  # isometric: 0
    assert gw.gw_lower_bound(C["L"], C["L stretched"]) > 0.1
    assert gw.gw_lower_bound(C["L"], C["circle"]) < gw.gw_distance(C["L"], C["circle"], n_init=20)


def test_lower_bound_validates() -> None:
    with pytest.raises(ValueError, match="C1: expected a square"):
        gw.gw_lower_bound(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(TypeError, match="C2: expected real values, got complex"):
        gw.gw_lower_bound(np.zeros((2, 2)), np.zeros((2, 2), dtype=complex))
    with pytest.raises(ValueError, match="p: expected 2 weights"):
        gw.gw_lower_bound(np.zeros((2, 2)), np.zeros((2, 2)), p=np.ones(3) / 3)
