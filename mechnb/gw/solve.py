"""The Gromov-Wasserstein discrepancy between two metric-measure spaces, solved by POT and checked.

The GW discrepancy with the square loss (Mémoli 2011, *Gromov-Wasserstein distances and the
metric approach to object matching*; Peyré, Cuturi & Solomon 2016, *Gromov-Wasserstein
averaging of kernel and distance matrices*) between ``(C1, p)`` and ``(C2, q)`` is::

    GW(C1, C2) = min_{T in U(p, q)}  sum_{i,j,k,l} (C1[i,k] - C2[j,l])**2 * T[i,j] * T[k,l]

over couplings ``T >= 0`` with row sums ``p`` and column sums ``q``. Gao, Dhurandhar, Natesan
Ramamurthy & Wei 2024 (https://arxiv.org/abs/2410.16484) use it to compare two layers of a
network through their distance matrices (:mod:`mechnb.gw.distances`).

This module never re-implements a solver. :func:`gw_solve` reads as four named steps:

1. :func:`_validate` - the matrices, weights, settings and the starting couplings
   (:func:`_starts`: the requested start, then - for ``n_init > 1`` - the other named starts
   and seeded random couplings);
2. the POT call, once per start: :func:`_solve_exact` (``ot.gromov.gromov_wasserstein``, conditional gradient
   whose steps are exact OT linear programs) or :func:`_solve_entropic`
   (``ot.gromov.entropic_gromov_wasserstein``, projected gradient with Sinkhorn projections,
   Peyré et al. 2016);
3. :func:`_check_coupling` - a finite coupling that respects the marginals;
4. :func:`_check_convergence` and :func:`_check_value` - the solver converged and the value is a
   discrepancy; any failure raises :class:`GWSolverError` naming the setting to change, so a
   failed solve never returns a silent 0. With several starts the lowest value wins
   (:func:`_best_start`).

**Local optima and what a value certifies.** GW is a non-convex quadratic program; the exact
solver (conditional gradient) stops at a stationary point that depends on its start. Every
coupling's objective is an *upper* bound on GW, so a stuck solve over-estimates it, and
:func:`gw_lower_bound` gives a certified *lower* bound (Mémoli 2011, the "third lower
bound") that is the value of a convex problem. From the product coupling ``p q^T`` the first
linearised step can be an exact tie (e.g. when every point of a space has the same row of
distances, as on a circle): then round-off decides which vertex the linear program returns, and
the local optimum reached differs between BLAS kernels. ``n_init > 1`` adds seeded starts that
are not ties (their results agree across kernels) and keeps the best value.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import ot

from mechnb._checks import check_array, check_choice, check_positive_float, check_positive_int, check_seed
from mechnb.gw.representations import real_array

__all__ = ["SOLVERS", "INITS", "GWSolverError", "GWSolution", "gw_solve", "gw_distance", "gw_lower_bound",
           "random_coupling"]

SOLVERS = ("exact", "entropic")
INITS = ("product", "identity")

#: POT warnings that :func:`gw_solve` turns into checks (the others are passed on to the caller).
_HANDLED_WARNINGS = ("numItermax reached", "Sinkhorn did not converge", "Solver failed to produce",
                     "numerical errors")


class GWSolverError(RuntimeError):
    """A GW solve failed (NaN coupling, violated marginals) or did not converge; the message says what to change."""


@dataclass
class GWSolution:
    """One GW solve: ``value`` (the square-loss discrepancy at ``coupling``), the coupling ``T (n1, n2)``
    and convergence information (``n_iter`` outer iterations, ``marginal_error`` = max |T1 - p|, |T'1 - q|).

    ``init`` names the requested (first) start. With ``n_init > 1`` starts, ``start`` names the one
    whose local optimum is returned (``"product"``, ``"identity"``, ``"custom"`` or ``"random k"``),
    ``start_values`` holds every start's value in the order they were tried, and ``n_iter`` /
    ``marginal_error`` are the winner's; ``seconds`` covers all starts.
    """

    value: float
    coupling: np.ndarray
    n_iter: int
    solver: str
    init: str
    epsilon: float | None
    marginal_error: float
    seconds: float
    start: str = ""
    start_values: tuple[float, ...] = ()
    n_init: int = 1


@dataclass(frozen=True)
class _Problem:
    """The validated inputs of one solve: ``C1 (n1, n1)``, ``C2 (n2, n2)``, ``p (n1,)``, ``q (n2,)``,
    the start ``G0 (n1, n2)`` and the solver settings (defaults filled in)."""

    C1: np.ndarray
    C2: np.ndarray
    p: np.ndarray
    q: np.ndarray
    solver: str
    epsilon: float | None
    G0: np.ndarray
    init: str
    max_iter: int
    tol: float
    dtype: type[np.floating]
    max_iter_lp: int

    @property
    def symmetric(self) -> bool:
        """Both matrices symmetric (POT then uses the cheaper gradient)."""
        return bool(np.allclose(self.C1, self.C1.T, atol=1e-10) and np.allclose(self.C2, self.C2.T, atol=1e-10))

    def describe(self) -> str:
        """``"GW (exact, init='product')"``: how error messages name this solve."""
        eps = f", epsilon={self.epsilon:g})" if self.solver == "entropic" else ")"
        return f"GW ({self.solver}, init={self.init!r}" + eps

    def cast(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``C1, C2, p, q, G0`` in the solver's dtype."""
        return tuple(a.astype(self.dtype) for a in (self.C1, self.C2, self.p, self.q, self.G0))  # type: ignore


@dataclass
class _RawSolve:
    """What POT returned: the coupling (float64), its value, the outer iterations and the
    convergence trace (exact: the loss after every step; entropic: ``||T_t - T_{t-10}||_F``)."""

    coupling: np.ndarray
    value: float
    n_iter: int
    trace: list[float]


# --------------------------------------------------------------------------------------
# Step 1: validation
# --------------------------------------------------------------------------------------
def _check_square(name: str, C: Any) -> np.ndarray:
    arr = check_array(name, real_array(name, C), ndim=2, square=True)
    if arr.shape[0] < 1:
        raise ValueError(f"{name}: expected a non-empty square matrix, got shape {arr.shape}")
    return arr


def _check_weights(name: str, w: Any, n: int) -> np.ndarray:
    if w is None:
        return np.full(n, 1.0 / n)
    arr = check_array(name, real_array(name, w), ndim=1)
    if arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} weights (one per row of the matching C), got {arr.shape[0]}")
    if (arr < 0).any() or abs(arr.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name}: expected non-negative weights summing to 1, got min {arr.min():.3g}, "
                         f"sum {arr.sum():.6g}")
    return arr


def _check_epsilon(solver: str, epsilon: float | None) -> float | None:
    if solver == "entropic":
        if epsilon is None:
            raise ValueError("epsilon: solver='entropic' needs a regularisation epsilon > 0 (e.g. 1e-2 for "
                             "max-normalised distances), got None")
        return check_positive_float("epsilon", epsilon)
    if epsilon is not None:
        raise ValueError(f"epsilon: only used by solver='entropic', got epsilon={epsilon!r} with solver='exact'")
    return None


def _aligned(p: np.ndarray, q: np.ndarray) -> bool:
    """Row ``i`` of both spaces can be the same input: equal numbers of points and equal weights."""
    return p.shape == q.shape and bool(np.allclose(p, q, atol=1e-12))


def _initial_coupling(init: str | np.ndarray, p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, str]:
    if isinstance(init, str):
        check_choice("init", init, INITS)
        if init == "product":
            return np.outer(p, q), "product"
        if not _aligned(p, q):
            raise ValueError(f"init: 'identity' needs the same samples on both sides (equal p and q), got "
                             f"{p.shape[0]} and {q.shape[0]} points; use init='product'")
        return np.diag(p), "identity"
    G0 = check_array("init", real_array("init", init), ndim=2)
    if G0.shape != (p.shape[0], q.shape[0]):
        raise ValueError(f"init: expected a coupling of shape {(p.shape[0], q.shape[0])}, got {G0.shape}")
    if (G0 < 0).any() or np.abs(G0.sum(1) - p).max() > 1e-8 or np.abs(G0.sum(0) - q).max() > 1e-8:
        raise ValueError("init: expected a non-negative coupling whose row sums are p and column sums are q")
    return G0, "custom"


def _lognormal_coupling(p: np.ndarray, q: np.ndarray, rng: np.random.Generator, spread: float) -> np.ndarray:
    """``exp(spread * N(0, 1))`` scaled to row sums ``p`` and column sums ``q`` by Sinkhorn (to 1e-13)."""
    T = np.exp(spread * rng.standard_normal((p.shape[0], q.shape[0])))
    q = q * (p.sum() / q.sum())  # equal masses, so both marginals can hold
    for _ in range(10_000):
        T *= (p / np.maximum(T.sum(1), 1e-300))[:, None]
        T *= (q / np.maximum(T.sum(0), 1e-300))[None, :]
        if np.abs(T.sum(1) - p).max() <= 1e-13:
            break
    return T


def random_coupling(p: Any, q: Any, seed: int = 0, *, spread: float = 2.0) -> np.ndarray:
    """A seeded random coupling ``T (n1, n2)`` with row sums ``p (n1,)`` and column sums ``q (n2,)``.

    A log-normal matrix ``exp(spread * N(0, 1))`` scaled to the marginals by Sinkhorn's
    alternating row/column normalisation (to 1e-13). Unlike the product coupling it is no tie
    for the solver's first linear step, so the local optimum reached from it is the same on
    every machine. :func:`gw_solve` uses such couplings as its random starts (``n_init``).
    """
    p_, q_ = (check_array(name, real_array(name, w), ndim=1) for name, w in (("p", p), ("q", q)))
    p_, q_ = _check_weights("p", p_, p_.shape[0]), _check_weights("q", q_, q_.shape[0])
    seed = check_seed("seed", seed)
    return _lognormal_coupling(p_, q_, np.random.default_rng(seed), check_positive_float("spread", spread))


def _starts(init: str | np.ndarray, p: np.ndarray, q: np.ndarray, n_init: int, seed: int
            ) -> list[tuple[np.ndarray, str]]:
    """The starting couplings of a solve, in the order they are tried.

    First the requested ``init``; then, while fewer than ``n_init``, the named starts it is not
    (``"product"``, and ``"identity"`` when the two spaces have the same points and weights); then
    seeded random couplings ``"random 1"``, ``"random 2"`` ... (as :func:`random_coupling`; start ``k``
    draws from ``numpy.random.default_rng([seed, k])``).
    """
    starts = [_initial_coupling(init, p, q)]
    for name in ("product", "identity"):
        if len(starts) < n_init and name != starts[0][1] and (name == "product" or _aligned(p, q)):
            starts.append(_initial_coupling(name, p, q))
    k = 1
    while len(starts) < n_init:
        starts.append((_lognormal_coupling(p, q, np.random.default_rng([seed, k]), 2.0), f"random {k}"))
        k += 1
    return starts


def _validate(C1: Any, C2: Any, p: Any, q: Any, solver: str, epsilon: float | None, init: str | np.ndarray,
              max_iter: int | None, tol: float | None, dtype: str, max_iter_lp: int, n_init: int = 1,
              seed: int = 0) -> list[_Problem]:
    """Step 1: check every argument of :func:`gw_solve`, fill in the defaults; one problem per start."""
    A, B = _check_square("C1", C1), _check_square("C2", C2)
    p_, q_ = _check_weights("p", p, A.shape[0]), _check_weights("q", q, B.shape[0])
    check_choice("solver", solver, SOLVERS)
    check_choice("dtype", dtype, ["float64", "float32"])
    epsilon = _check_epsilon(solver, epsilon)
    max_iter = check_positive_int("max_iter", max_iter) if max_iter is not None else (
        10000 if solver == "exact" else 1000)
    tol = check_positive_float("tol", tol) if tol is not None else 1e-9
    max_iter_lp = check_positive_int("max_iter_lp", max_iter_lp)
    n_init = check_positive_int("n_init", n_init)
    seed = check_seed("seed", seed)
    return [_Problem(A, B, p_, q_, solver, epsilon, G0, name, max_iter, tol,
                     np.float32 if dtype == "float32" else np.float64, max_iter_lp)
            for G0, name in _starts(init, p_, q_, n_init, seed)]


# --------------------------------------------------------------------------------------
# Step 2: the POT call
# --------------------------------------------------------------------------------------
def _solve_exact(pb: _Problem) -> _RawSolve:
    """Step 2, ``solver="exact"``: POT's conditional gradient (each step an exact OT linear program)."""
    A, B, p, q, G0 = pb.cast()
    T, log = ot.gromov.gromov_wasserstein(
        A, B, p, q, loss_fun="square_loss", symmetric=pb.symmetric, log=True, G0=G0, max_iter=pb.max_iter,
        tol_rel=pb.tol, tol_abs=1e-12, numItermaxEmd=pb.max_iter_lp)
    losses = [float(v) for v in log["loss"]]
    return _RawSolve(np.asarray(T, dtype=np.float64), losses[-1], len(losses) - 1, losses)


def _solve_entropic(pb: _Problem) -> _RawSolve:
    """Step 2, ``solver="entropic"``: POT's projected gradient with Sinkhorn projections at ``epsilon``."""
    A, B, p, q, G0 = pb.cast()
    with np.errstate(all="ignore"):
        T, log = ot.gromov.entropic_gromov_wasserstein(
            A, B, p, q, loss_fun="square_loss", epsilon=pb.epsilon, symmetric=pb.symmetric, G0=G0,
            max_iter=pb.max_iter, tol=pb.tol, log=True,
            stopThr=1e-4 * float(max(pb.p.max(), pb.q.max())))  # Sinkhorn: 10x tighter than _check_coupling
    errs = [float(e) for e in log["err"]]  # ||T_t - T_{t-1}|| every 10th iteration
    # POT stops when the last measured change is <= tol, or else at max_iter
    n_iter = 10 * (len(errs) - 1) + 1 if errs[-1] <= pb.tol else pb.max_iter
    return _RawSolve(np.asarray(T, dtype=np.float64), float(log["gw_dist"]), n_iter, errs)


# --------------------------------------------------------------------------------------
# Steps 3-4: the solution check
# --------------------------------------------------------------------------------------
def _check_coupling(pb: _Problem, raw: _RawSolve) -> float:
    """Step 3: a finite coupling and value, marginals within tolerance; returns the marginal error."""
    T, value = raw.coupling, raw.value
    if not np.isfinite(T).all() or not math.isfinite(value):
        hint = ("increase epsilon (Sinkhorn over/underflowed) or normalise the distance matrices"
                if pb.solver == "entropic" else "check C1 and C2 for huge values; normalise them")
        raise GWSolverError(f"{pb.describe()}: the solver returned a non-finite coupling or value; {hint}")
    marg = float(max(np.abs(T.sum(1) - pb.p).max(), np.abs(T.sum(0) - pb.q).max()))
    marg_tol = 1e-6 if pb.solver == "exact" else 1e-3 * float(max(pb.p.max(), pb.q.max()))
    if marg > marg_tol:
        hint = (f"increase epsilon (got {pb.epsilon:g}) or the Sinkhorn iterations; POT reports a meaningless "
                f"value ({value:.3g}) for such a plan" if pb.solver == "entropic" else "report this as a bug")
        raise GWSolverError(f"{pb.describe()}: the coupling violates the marginals by {marg:.3g} "
                            f"(tolerance {marg_tol:.1g}) - the solve failed; {hint}")
    return marg


def _pass_on_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Re-emit the solver's warnings that the checks do not turn into errors."""
    for w in caught:
        if not any(h in str(w.message) for h in _HANDLED_WARNINGS):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _check_convergence(pb: _Problem, raw: _RawSolve, caught: list[warnings.WarningMessage]) -> None:
    """Step 4: no LP hit its cap (exact) and the outer loop converged within ``max_iter``."""
    what = pb.describe()
    if pb.solver == "entropic":
        if raw.trace[-1] > pb.tol:
            raise GWSolverError(f"{what}: no convergence in max_iter={pb.max_iter} iterations (coupling change "
                                f"{raw.trace[-1]:.2g} > tol={pb.tol:g}); increase max_iter, tol or epsilon")
        return
    if any("numItermax reached" in str(w.message) for w in caught):
        raise GWSolverError(f"{what}: an inner OT linear program hit its iteration cap, so the coupling is not "
                            f"optimal; increase max_iter_lp (got {pb.max_iter_lp}) or use fewer points (n_samples)")
    if raw.n_iter >= pb.max_iter:
        losses = raw.trace
        d = abs(losses[-1] - losses[-2])
        rel = d / max(abs(losses[-1]), 1e-300)
        if d >= 1e-12 and rel >= pb.tol:
            raise GWSolverError(f"{what}: no convergence in max_iter={pb.max_iter} iterations (last relative change "
                                f"{rel:.2g} > tol={pb.tol:g}); increase max_iter or tol")


def _check_value(pb: _Problem, value: float) -> float:
    """Step 4: a discrepancy is >= 0 (round-off below 1e-9 is clipped to 0)."""
    if value < 0:
        if value < -1e-9:
            raise GWSolverError(f"{pb.describe()}: negative GW value {value:.3g}; the solve failed")
        return 0.0
    return value


def _solve_one(pb: _Problem) -> GWSolution:
    """Steps 2-4 for one start: the POT call, then the coupling, convergence and value checks."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raw = _solve_exact(pb) if pb.solver == "exact" else _solve_entropic(pb)
    seconds = time.perf_counter() - t0
    marg = _check_coupling(pb, raw)
    _pass_on_warnings(caught)
    _check_convergence(pb, raw, caught)
    value = _check_value(pb, raw.value)
    return GWSolution(value=value, coupling=raw.coupling, n_iter=raw.n_iter, solver=pb.solver, init=pb.init,
                      epsilon=pb.epsilon, marginal_error=marg, seconds=seconds, start=pb.init,
                      start_values=(value,), n_init=1)


def _best_start(sols: list[GWSolution]) -> int:
    """Index of the start with the lowest value; values within round-off (1e-12 + 1e-9 relative) of the
    lowest count as ties, resolved to the earliest start, so the choice does not depend on round-off."""
    values = np.array([s.value for s in sols])
    vmin = float(values.min())
    return int(np.flatnonzero(values <= vmin + 1e-12 + 1e-9 * abs(vmin))[0])


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------
def gw_solve(
    C1: Any,
    C2: Any,
    p: Any = None,
    q: Any = None,
    *,
    solver: str = "exact",
    epsilon: float | None = None,
    init: str | np.ndarray = "product",
    n_init: int = 1,
    seed: int = 0,
    max_iter: int | None = None,
    tol: float | None = None,
    dtype: str = "float64",
    max_iter_lp: int = 100_000,
) -> GWSolution:
    """Solve GW between ``(C1, p)`` and ``(C2, q)`` with POT and check the answer.

    Args:
        C1, C2: ``(n1, n1)`` and ``(n2, n2)`` intra-space distance (or similarity) matrices
            (real; complex input is rejected); ``n1 != n2`` is fine.
        p, q: weights on the points (default uniform).
        solver: ``"exact"`` - ``ot.gromov.gromov_wasserstein`` (conditional gradient, each step an
            exact OT linear program; finds a local optimum of the non-convex problem);
            ``"entropic"`` - ``ot.gromov.entropic_gromov_wasserstein`` (projected gradient with
            Sinkhorn projections at regularisation ``epsilon``, required).
        init: ``"product"`` starts from ``p q^T`` (POT's default); ``"identity"`` from the
            sample-aligned coupling ``diag(p)``, valid when row ``i`` of both spaces is the same
            input (two layers of one network); or an explicit ``(n1, n2)`` coupling.
        n_init: number of starts; the lowest value wins (ties within round-off go to the earliest
            start). Start 1 is ``init``; then the named starts it is not (``"product"``, and
            ``"identity"`` when ``p`` equals ``q``); then seeded random couplings
            (:func:`random_coupling`). Deterministic given ``seed``. Each start is a full solve
            with all the checks below, so the cost grows linearly with ``n_init``.
        seed: seeds the random starts (an int >= 0).
        max_iter: outer iterations (default 10000 exact / 1000 entropic, POT's).
        tol: stopping threshold: relative change of the loss (exact, default 1e-9) or
            ``||T_t - T_{t-10}||_F`` (entropic, default 1e-9).
        dtype: ``"float64"`` or ``"float32"`` for the solver's matrix products (the LP is float64).
        max_iter_lp: iteration cap of each exact OT linear program (POT's ``numItermaxEmd``).

    Returns:
        a :class:`GWSolution` whose ``value`` is POT's square-loss GW (no entropy term) at the best
        start's local optimum: an upper bound on the true GW (:func:`gw_lower_bound` gives a lower one).

    Raises:
        GWSolverError: NaN/inf coupling, marginals violated (e.g. Sinkhorn under/overflow: POT
            then returns 0.0), the LP solver hit its iteration cap, or no convergence within
            ``max_iter`` - for any start (the message names it). The message names the setting to change.
    """
    problems = _validate(C1, C2, p, q, solver, epsilon, init, max_iter, tol, dtype, max_iter_lp, n_init, seed)
    sols = []
    for k, pb in enumerate(problems):
        try:
            sols.append(_solve_one(pb))
        except GWSolverError as e:
            if len(problems) == 1:
                raise
            raise GWSolverError(f"start {k + 1} of n_init={len(problems)} ({pb.init}): {e}") from None
    best = sols[_best_start(sols)]
    if len(sols) == 1:
        return best
    return GWSolution(value=best.value, coupling=best.coupling, n_iter=best.n_iter, solver=best.solver,
                      init=problems[0].init, epsilon=best.epsilon, marginal_error=best.marginal_error,
                      seconds=sum(s.seconds for s in sols), start=best.start,
                      start_values=tuple(s.value for s in sols), n_init=len(sols))


def gw_distance(C1: Any, C2: Any, p: Any = None, q: Any = None, *, solver: str = "exact",
                epsilon: float | None = None, init: str | np.ndarray = "product", n_init: int = 1,
                seed: int = 0, **kwargs: Any) -> float:
    """The GW discrepancy between ``(C1, p)`` and ``(C2, q)`` - POT's square-loss value (see module docstring).

    ``GW = 0`` iff the two metric-measure spaces are isometric (up to the solver finding the
    global optimum); it is symmetric and ignores rotations, translations, reflections and the
    order of the points. Two uniform two-point spaces at distances ``a`` and ``b`` give
    ``(a - b)**2 / 2``. The solver finds a local optimum from its start, so the value is an
    upper bound on GW; ``n_init > 1`` tries several starts and keeps the lowest (see
    :func:`gw_solve`). Keyword arguments are those of :func:`gw_solve` (``max_iter``, ``tol``,
    ``dtype``); failures raise :class:`GWSolverError`, never return a silent 0.
    """
    return gw_solve(C1, C2, p, q, solver=solver, epsilon=epsilon, init=init, n_init=n_init, seed=seed,
                    **kwargs).value


def gw_lower_bound(C1: Any, C2: Any, p: Any = None, q: Any = None) -> float:
    """A certified lower bound on the square-loss GW: Mémoli's "third lower bound" (TLB, Mémoli 2011).

    For any coupling ``T`` of ``p`` and ``q``::

        sum_{i,j,k,l} (C1[i,k] - C2[j,l])**2 T[i,j] T[k,l] = sum_{i,j} T[i,j] sum_{k,l} (C1[i,k] - C2[j,l])**2 T[k,l]
                                                     >= sum_{i,j} T[i,j] Omega[i,j],

    because the inner sum is the cost of one coupling of the 1-D distributions of row ``C1[i, :]``
    (weights ``p``) and row ``C2[j, :]`` (weights ``q``), at least their squared 2-Wasserstein
    distance ``Omega[i, j]`` (closed form by sorting: ``ot.wasserstein_1d``). Minimising over
    ``T`` gives ``GW >= min_T <T, Omega>``, an exact OT linear program (``ot.emd2``): a convex
    problem whose value does not depend on a start. Together with any solve (an upper bound),
    it brackets the true GW; 0 for isometric spaces.

    Args:
        C1: ``(n1, n1)``; C2: ``(n2, n2)`` real matrices; p, q: weights (default uniform).

    Returns:
        a float ``<= GW(C1, C2)`` (``O(n1 n2 (n1 + n2) log)`` time: meant for small spaces).
    """
    A, B = _check_square("C1", C1), _check_square("C2", C2)
    p_, q_ = _check_weights("p", p, A.shape[0]), _check_weights("q", q, B.shape[0])
    n2 = B.shape[0]
    omega = np.empty((A.shape[0], n2))
    v_values, v_weights = B.T, np.repeat(q_[:, None], n2, 1)  # column j: the distribution of row C2[j, :]
    u_weights = np.repeat(p_[:, None], n2, 1)
    for i in range(A.shape[0]):
        omega[i] = ot.wasserstein_1d(np.repeat(A[i][:, None], n2, 1), v_values, u_weights, v_weights, p=2)
    return max(float(ot.emd2(p_, q_ * (p_.sum() / q_.sum()), omega)), 0.0)
