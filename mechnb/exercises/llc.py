"""Exercises of notebook 06 (the learning coefficient over training): checks and reference solutions.

* 6.1 one SGNHT step (Ding et al. 2014, Algorithm 1; :class:`mechnb.degeneracy.samplers.SGNHTSampler`);
* 6.2 the MALA acceptance of an SGLD proposal (:func:`mechnb.degeneracy.samplers.mala_log_acceptance`);
* 6.3 reading a calibration grid: which setting to trust (:func:`mechnb.degeneracy.calibration.recommend`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from mechnb.exercises._core import Case, CheckResult, exercise, run_cases

__all__ = ["check_sgnht_step", "check_mala_acceptance", "check_calibration_choice"]

NOTEBOOK = "06_learning_coefficient_over_training"


def _rnd(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# 6.1 one SGNHT step
# --------------------------------------------------------------------------------------------
def solution_sgnht_step(w: torch.Tensor, p: torch.Tensor, xi: torch.Tensor, w_star: torch.Tensor, grad: torch.Tensor,
                        noise: torch.Tensor, *, lr: float, nbeta: float, localization: float,
                        diffusion: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference for exercise 6.1: one SGNHT step of ``C`` chains, returning new ``(w, p, xi)``.

    ``w, p, grad, noise`` are ``(C, P)``, ``xi`` is ``(C, 1)``, ``w_star`` is ``(P,)``::

        ∇U = nβ grad + γ (w - w*)
        p' = (1 - ξ) p - h ∇U + sqrt(2 A h) noise
        w' = w + p'
        ξ' = ξ + (|p'|² / P - h)
    """
    drift = nbeta * grad + localization * (w - w_star)
    p_new = (1 - xi) * p - lr * drift + math.sqrt(2 * diffusion * lr) * noise
    w_new = w + p_new
    xi_new = xi + (p_new.pow(2).sum(-1, keepdim=True) / w.shape[-1] - lr)
    return w_new, p_new, xi_new


@exercise("6.1", "one SGNHT step", notebook=NOTEBOOK)
def check_sgnht_step(fn: Callable[..., Any]) -> CheckResult:
    """Check ``fn(w, p, xi, w_star, grad, noise, *, lr, nbeta, localization, diffusion) -> (w, p, xi)``.

    The thermostat step of Ding et al. 2014 (Algorithm 1) that ``estimate_llc(..., sampler="sgnht")``
    runs (:class:`mechnb.degeneracy.samplers.SGNHTSampler`). Cases switch the friction, the force,
    the noise and the thermostat on one at a time, then all at once; the known answers are
    :func:`solution_sgnht_step`, itself checked against the sampler object in the tests.
    """
    g = torch.Generator().manual_seed(0)
    C, P = 3, 5
    w, p, w_star, grad, noise = (_rnd(g, C, P), 0.01 * _rnd(g, C, P), _rnd(g, P), _rnd(g, C, P), _rnd(g, C, P))
    zero = torch.zeros(C, P, dtype=torch.float64)
    xi0, xi = torch.zeros(C, 1, dtype=torch.float64), torch.full((C, 1), 0.1, dtype=torch.float64)
    settings = [
        ((w, p, xi0, w_star, zero, zero), dict(lr=1e-3, nbeta=10.0, localization=0.0, diffusion=0.0),
         "momentum only: xi = 0, no force, no noise", "w moves by the new momentum p' = p: w' = w + p'"),
        ((w, p, xi, w_star, zero, zero), dict(lr=1e-3, nbeta=10.0, localization=0.0, diffusion=0.0),
         "friction: xi = 0.1", "the friction scales the momentum by (1 - xi) before it moves w"),
        ((w, zero, xi0, w_star, grad, zero), dict(lr=1e-3, nbeta=10.0, localization=5.0, diffusion=0.0),
         "force only: p = 0, gamma 5, nbeta 10", "p' = -h (nbeta grad + gamma (w - w_star)); no 1/2 here"),
        ((w, zero, xi0, w_star, zero, noise), dict(lr=1e-3, nbeta=10.0, localization=0.0, diffusion=0.5),
         "noise only: A = 0.5, h = 1e-3", "the noise has standard deviation sqrt(2 A h)"),
        ((w, p, xi, w_star, grad, noise), dict(lr=1e-4, nbeta=500.0, localization=1.0, diffusion=0.01),
         "all terms, 3 chains x 5 parameters",
         "xi' = xi + |p'|^2 / P - h per chain, with the *new* momentum; keep xi of shape (C, 1)"),
    ]
    cases = [Case(args, solution_sgnht_step(*args, **kw), kwargs=kw, label=label, hint=hint)
             for args, kw, label, hint in settings]
    return run_cases(fn, cases, atol=1e-10, rtol=1e-8)


# --------------------------------------------------------------------------------------------
# 6.2 MALA acceptance of an SGLD proposal
# --------------------------------------------------------------------------------------------
def solution_mala_acceptance(w: torch.Tensor, drift: torch.Tensor, U: torch.Tensor, w_new: torch.Tensor,
                             drift_new: torch.Tensor, U_new: torch.Tensor, lr: float) -> torch.Tensor:
    """Reference for exercise 6.2: ``min(1, exp(log α))`` per chain, ``(C,)``.

    ``log α = U(w) - U(w') + log q(w | w') - log q(w' | w)`` with
    ``log q(b | a) = -|b - a + (ε/2) ∇U(a)|² / (2ε)``; ``drift = ∇U``.
    """
    fwd = (w_new - w + 0.5 * lr * drift).pow(2).sum(-1)
    bwd = (w - w_new + 0.5 * lr * drift_new).pow(2).sum(-1)
    log_a = U - U_new - bwd / (2 * lr) + fwd / (2 * lr)
    return log_a.clamp(max=0).exp()


@exercise("6.2", "MALA acceptance of an SGLD proposal", notebook=NOTEBOOK)
def check_mala_acceptance(fn: Callable[..., Any]) -> CheckResult:
    """Check ``fn(w, drift, U, w_new, drift_new, U_new, lr) -> Tensor (C,)``: the acceptance probability.

    ``w, drift, w_new, drift_new`` are ``(C, P)`` and ``U, U_new`` ``(C,)``. Known answers: a
    quadratic potential (where an exact Langevin move is accepted with probability near 1 for a
    small step), a proposal that climbs in ``U`` (rejected often), and the identity move (always 1).
    """
    g = torch.Generator().manual_seed(1)
    C, P, lr = 4, 6, 1e-2
    w = _rnd(g, C, P)
    grad_u = w.clone()  # U = |w|^2 / 2
    w_new = w - 0.5 * lr * grad_u + math.sqrt(lr) * _rnd(g, C, P)
    U, U_new = 0.5 * w.pow(2).sum(-1), 0.5 * w_new.pow(2).sum(-1)
    cases = [
        Case((w, grad_u, U, w_new, w_new.clone(), U_new, lr), solution_mala_acceptance(w, grad_u, U, w_new, w_new, U_new, lr),
             label="U = |w|^2/2, a Langevin proposal with lr 1e-2",
             hint="log q(b | a) = -|b - a + (lr/2) grad U(a)|^2 / (2 lr); the reverse move uses the gradient at w'"),
        Case((w, grad_u, U, w_new, w_new.clone(), U_new + 3.0, lr),
             solution_mala_acceptance(w, grad_u, U, w_new, w_new, U_new + 3.0, lr),
             label="the same proposal with U(w') raised by 3", hint="a higher U(w') lowers the acceptance by exp(-3)"),
        Case((w, torch.zeros_like(w), U, w.clone(), torch.zeros_like(w), U.clone(), lr), torch.ones(C, dtype=torch.float64),
             label="no move, no force", hint="the probability is min(1, ratio): never above 1"),
    ]
    return run_cases(fn, cases, atol=1e-9, rtol=1e-7)


# --------------------------------------------------------------------------------------------
# 6.3 reading a calibration grid
# --------------------------------------------------------------------------------------------
def solution_calibration_choice(table: list[dict[str, Any]]) -> int:
    """Reference for exercise 6.3: the index of the row to trust (:func:`mechnb.degeneracy.calibration.recommend`)."""
    from mechnb.degeneracy.calibration import recommend

    return recommend(table)


def _row(lr: float, mean: float, std: float, warnings: int, drift: float = 0.0) -> dict[str, Any]:
    return dict(lr=lr, nbeta=100.0, localization=100.0, mean=mean, std=std, acceptance=math.nan,
                relative_drift=drift, warnings=warnings, ok=warnings == 0)


@exercise("6.3", "reading a calibration grid", notebook=NOTEBOOK)
def check_calibration_choice(fn: Callable[..., Any]) -> CheckResult:
    """Check ``fn(table) -> int``: which row of a calibration table to use.

    Rows are dicts with ``lr, mean, std, warnings, ok, relative_drift`` (as
    :attr:`mechnb.degeneracy.LLCCalibration.table`). The rule: among rows without warnings, the
    largest step size (it mixes fastest), ties by the smallest ``std / |mean|``; if every row
    warns, the fewest warnings, then the flattest trace (smallest ``|relative_drift|``).
    """
    grid = [_row(1e-5, 3.1, 0.4, 1, 0.5), _row(1e-4, 5.8, 0.3, 0), _row(1e-3, 6.0, 0.2, 0), _row(1e-2, -40.0, 30.0, 3)]
    ties = [_row(1e-3, 6.0, 1.2, 0), _row(1e-3, 5.9, 0.3, 0), _row(1e-4, 6.1, 0.1, 0)]
    bad = [_row(1e-5, 2.0, 0.5, 2, 0.6), _row(1e-4, 5.0, 0.5, 1, 0.3), _row(1e-3, 6.0, 0.5, 1, 0.05)]
    cases = [
        Case((grid,), 2, label="clean rows at lr 1e-4 and 1e-3, warnings below and above",
             hint="skip the rows with warnings; of the others take the largest lr"),
        Case((ties,), 1, label="two clean rows share the largest lr", hint="break the tie by std / |mean|"),
        Case((bad,), 2, label="every row warns", hint="fewest warnings first, then the flattest trace"),
    ]
    return run_cases(fn, cases)
