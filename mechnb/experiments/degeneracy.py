"""Experiments of notebook 01: networks with planted degeneracies and a toy loss with a known LLC.

* :func:`planted_mlp` - a one-hidden-layer ReLU MLP with duplicated, dead, unread and synchronised
  neurons planted in it (the three kinds of Bushnaq et al. 2024, arXiv 2405.10927, Sec. 3), and
  data on which they hold: the ground truth for :func:`mechnb.degeneracy.degeneracy_report`.
* :func:`planted_dln` - a deep linear network at a known true parameter, whose learning
  coefficient is :func:`mechnb.degeneracy.dln_learning_coefficient` (Aoyagi 2024): the test bed
  for :func:`mechnb.degeneracy.estimate_llc`.
* :func:`quartic_toy_llc` - SGLD on ``L(w) = w1² + w2⁴`` (exact ``λ = 3/4``), run with the
  learner's step and estimate functions (Exercises 1.3 and 1.4); :func:`quartic_toy_expected`
  is the value the sampler targets at finite localisation.
* :func:`llc_shift` - how far an LLC estimate moved between two budgets, in standard errors: the
  check that exposes a chain stuck on a plateau when the single-run diagnostics see nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import math

import numpy as np
import torch
from scipy import integrate

from mechnb._checks import check_positive_float, check_positive_int, check_seed
from mechnb.degeneracy import LLCResult
from mechnb.models import MLP

__all__ = ["planted_mlp", "planted_dln", "quartic_toy_llc", "quartic_toy_expected", "llc_shift"]

#: how many candidate generic neurons :func:`planted_mlp` draws before it gives up
MAX_NEURON_DRAWS = 10_000


# --------------------------------------------------------------------------------------
# Planted degeneracies (ground truth for tests, notebook and widget)
# --------------------------------------------------------------------------------------
def planted_mlp(d_in: int = 4, d_hidden: int = 6, d_out: int = 3, *, n_samples: int = 256, duplicated: int = 0,
                dead: int = 0, unread: int = 0, synchronised: int = 0, seed: int = 0) -> tuple[MLP, torch.Tensor]:
    """A one-hidden-layer ReLU MLP with planted degeneracies, and data on which they hold.

    Inputs: ``x_0 = ±(1 + U[0, 1])`` (bounded away from 0), the other coordinates ``U[-1, 1]``.
    Hidden neurons, in order:

    * ``d_hidden`` generic neurons: random weights, each hyperplane through a random data point
      (so each neuron is on for part of the data and the firing patterns differ);
    * ``duplicated`` exact copies of generic neuron 0 (same incoming weights and bias; the count
      below needs ``duplicated + 1 <= d_out``, otherwise the copies' outgoing weights are also
      linearly dependent and the kinds overlap);
    * ``dead`` neurons whose bias keeps them off on every input;
    * ``unread`` neurons: generic, but with zero outgoing weights (a pure Jacobian degeneracy);
    * ``synchronised`` neurons ``a_j x_0 + v_j · x_rest`` with ``|v_j|_1 < a_j`` and no bias:
      all on exactly when ``x_0 > 0``, yet linearly independent (needs ``synchronised <= d_in``
      and ``<= d_out``, so that neither their activations nor their Jacobians are degenerate too).

    Generic neurons are redrawn until no two of them (nor the ``x_0 > 0`` split) share or
    complement a firing pattern, so the only degeneracies are the planted ones. ``n_samples``
    inputs have at most ``2**(n_samples-1) - 1`` such patterns (up to complement, less the split):
    asking for more generic neurons (``d_hidden + unread``) raises ``ValueError`` at once, and so
    does not finding them within :data:`MAX_NEURON_DRAWS` draws.

    Expected Gauss-Newton nullity (2405.10927 Sec. 3): ``d_hidden`` rescalings, plus
    ``duplicated · (d_out + 1)``, plus ``dead · (d_in + 1 + d_out)``, plus ``unread · (d_in + 1)``,
    plus ``synchronised²``.

    Returns:
        ``(model, inputs)`` with ``model`` a float32 :class:`mechnb.models.MLP` and ``inputs``
        ``(n_samples, d_in)``.
    """
    d_in = check_positive_int("d_in", d_in, minimum=2)
    d_hidden = check_positive_int("d_hidden", d_hidden, minimum=0)
    d_out = check_positive_int("d_out", d_out)
    n_samples = check_positive_int("n_samples", n_samples, minimum=2)
    duplicated = check_positive_int("duplicated", duplicated, minimum=0)
    dead = check_positive_int("dead", dead, minimum=0)
    unread = check_positive_int("unread", unread, minimum=0)
    synchronised = check_positive_int("synchronised", synchronised, minimum=0)
    if synchronised > min(d_in, d_out):
        raise ValueError(f"synchronised: expected at most min(d_in, d_out)={min(d_in, d_out)} (more would also "
                         f"make their activations or their Jacobians linearly dependent), got {synchronised}")
    if duplicated and d_hidden == 0:
        raise ValueError("duplicated: needs d_hidden >= 1 (copies are made of generic neuron 0)")
    seed = check_seed("seed", seed)
    g = torch.Generator().manual_seed(seed)
    sign = torch.where(torch.rand(n_samples, generator=g) < 0.5, -1.0, 1.0)
    x = torch.empty(n_samples, d_in, dtype=torch.float64)
    x[:, 0] = sign * (1 + torch.rand(n_samples, generator=g, dtype=torch.float64))
    x[:, 1:] = 2 * torch.rand(n_samples, d_in - 1, generator=g, dtype=torch.float64) - 1

    W_rows, b_rows = [], []
    half = x[:, 0] > 0
    taken = [half, ~half]  # firing patterns a generic neuron must neither equal nor complement
    n_generic = d_hidden + unread
    n_points = len(torch.unique(x, dim=0))
    if n_points < 64:
        free = 2 ** (n_points - 1) - 1 - int(bool(half.any() and (~half).any()))
        if n_generic > free:
            raise ValueError(
                f"n_samples: {n_samples} inputs admit at most {free} firing patterns for generic neurons "
                f"(2**(n_samples-1) - 1 up to complement, less the x_0 > 0 split), but d_hidden + unread = "
                f"{n_generic} generic neurons need one each; use more inputs or fewer generic neurons")
    draws = 0
    while len(W_rows) < n_generic:
        if draws == MAX_NEURON_DRAWS:
            raise ValueError(
                f"d_hidden, unread: found only {len(W_rows)} of the {n_generic} generic neurons with distinct "
                f"firing patterns on the n_samples={n_samples} inputs in {MAX_NEURON_DRAWS} draws (seed={seed}); "
                f"use more inputs (n_samples), fewer generic neurons, or a larger d_in")
        draws += 1
        w = torch.randn(d_in, generator=g, dtype=torch.float64)
        w[0] *= 0.25  # keep generic hyperplanes away from the x_0 = 0 split used by the synchronised group
        c = x[int(torch.randint(n_samples, (1,), generator=g))] * 0.8
        b = -(w @ c)
        on = x @ w + b > 0
        if on.all() or (~on).all() or any(bool((on == t).all() or (on != t).all()) for t in taken):
            continue  # always on/off, synchronised with or complementary to another pattern: redraw
        taken.append(on)
        W_rows.append(w)
        b_rows.append(b)
    unread_rows = list(range(d_hidden, d_hidden + unread))  # generic neurons whose outgoing weights are zeroed
    for _ in range(duplicated):
        W_rows.append(W_rows[0].clone())
        b_rows.append(b_rows[0].clone())
    for _ in range(dead):
        w = torch.randn(d_in, generator=g, dtype=torch.float64)
        W_rows.append(w)
        b_rows.append(-(2 * w.abs().sum() + 1))
    for _ in range(synchronised):
        a = 1 + torch.rand((), generator=g, dtype=torch.float64)
        v = torch.randn(d_in - 1, generator=g, dtype=torch.float64)
        v = v / v.abs().sum() * a * 0.9 * torch.rand((), generator=g, dtype=torch.float64).clamp_min(0.2)
        W_rows.append(torch.cat([a.reshape(1), v]))
        b_rows.append(torch.zeros((), dtype=torch.float64))
    h = len(W_rows)
    if h == 0:
        raise ValueError("d_hidden, duplicated, dead, unread, synchronised: expected at least one hidden neuron in total")
    model = MLP([d_in, h, d_out], activation="relu", bias=True)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.stack(W_rows).float())
        model.layers[0].bias.copy_(torch.stack(b_rows).float())
        W_out = torch.randn(d_out, h, generator=g, dtype=torch.float64) / h**0.5
        W_out[:, unread_rows] = 0.0
        model.layers[1].weight.copy_(W_out.float())
        model.layers[1].bias.copy_(torch.randn(d_out, generator=g, dtype=torch.float64).float() * 0.1)
    return model, x.float()


def planted_dln(widths: Sequence[int], rank: int | None = None, n_samples: int = 100,
                seed: int = 0) -> tuple[MLP, torch.Tensor, torch.Tensor]:
    """A deep linear network at a known true parameter ``w*``, with noiseless data ``y = f(x; w*)``.

    Every factor ``W_i`` has random singular vectors and all its non-zero singular values equal
    to 1 — ``min`` of its shape of them, or ``rank`` if given (then the true map has rank
    ``rank`` and ``w*`` is one of the most singular true parameters). Well-conditioned factors
    matter for sampling: a product with a tiny singular value sits next to a more singular point,
    and a finite SGLD budget then sees a smaller λ than the theory at ``w*``.

    Returns:
        ``(model, x, y)``: a bias-free linear :class:`mechnb.models.MLP`, ``x (n_samples,
        widths[0])`` standard normal, ``y = model(x)``. Its learning coefficient is
        :func:`dln_learning_coefficient` ``(widths, rank)``.
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) < 2:
        raise ValueError(f"widths: expected a sequence of at least two layer widths (input ... output), got {widths!r}")
    H = [check_positive_int(f"widths[{i}]", w) for i, w in enumerate(widths)]
    if rank is not None:
        rank = check_positive_int("rank", rank)
        if rank > min(H):
            raise ValueError(f"rank: expected at most min(widths) = {min(H)}, got {rank}")
    n_samples = check_positive_int("n_samples", n_samples, minimum=2)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    model = MLP(H, activation="linear", bias=False)
    with torch.no_grad():
        for layer in model.layers:
            U, S, Vh = torch.linalg.svd(torch.randn(layer.weight.shape, generator=g), full_matrices=False)
            S = torch.ones_like(S) if rank is None else (torch.arange(S.numel()) < rank).to(S.dtype)
            layer.weight.copy_(U @ torch.diag(S) @ Vh)
    x = torch.randn(n_samples, H[0], generator=g)
    with torch.no_grad():
        y = model(x)
    return model, x, y


# --------------------------------------------------------------------------------------
# A toy loss with a known learning coefficient (Exercises 1.3, 1.4)
# --------------------------------------------------------------------------------------
def quartic_toy_llc(step_fn: Callable[..., torch.Tensor], estimate_fn: Callable[..., float], *, lr: float = 5e-5,
                    nbeta: float = 1000.0, localization: float = 1.0, chains: int = 400, steps: int = 3000,
                    burn_in: int = 1000, seed: int = 0) -> float:
    """Estimate the LLC of ``L(w) = w1² + w2⁴`` on ``R³`` (exact ``λ = 1/2 + 1/4 + 0 = 3/4``) with given pieces.

    Runs ``chains`` SGLD chains from ``w* = 0`` at once, each step
    ``w = step_fn(w, w_star, grad, noise, lr=lr, nbeta=nbeta, localization=localization)`` with
    ``w (chains, 3)``, the exact gradient and standard-normal ``noise`` from a generator seeded
    with ``seed``; keeps ``L(w)`` after ``burn_in`` steps and returns
    ``estimate_fn(losses (chains, steps - burn_in), 0.0, nbeta)``. Notebook 01 runs it with the
    learner's solutions of Exercises 1.3 and 1.4; the reference step
    (``mechnb.exercises.degeneracy.sgld_reference``) and the mean-loss estimate recover 3/4 within 0.03.
    """
    for name, fn in (("step_fn", step_fn), ("estimate_fn", estimate_fn)):
        if not callable(fn):
            raise TypeError(f"{name}: expected a function, got {type(fn).__name__}")
    for name, v in (("lr", lr), ("nbeta", nbeta), ("localization", localization)):
        check_positive_float(name, v, allow_zero=name == "localization")
    chains = check_positive_int("chains", chains)
    burn_in = check_positive_int("burn_in", burn_in, minimum=0)
    steps = check_positive_int("steps", steps)
    if steps <= burn_in:
        raise ValueError(f"steps: expected more than burn_in={burn_in} steps, got {steps}")
    gen = torch.Generator().manual_seed(check_seed("seed", seed))
    w_star = torch.zeros(3, dtype=torch.float64)
    w = w_star.repeat(chains, 1)
    kept = []
    for step in range(steps):
        if step >= burn_in:
            kept.append(w[:, 0] ** 2 + w[:, 1] ** 4)
        grad = torch.stack([2 * w[:, 0], 4 * w[:, 1] ** 3, torch.zeros(chains, dtype=torch.float64)], dim=1)
        noise = torch.randn(chains, 3, generator=gen, dtype=torch.float64)
        w = step_fn(w, w_star, grad, noise, lr=lr, nbeta=nbeta, localization=localization)
    return float(estimate_fn(torch.stack(kept, dim=1), 0.0, nbeta))


def quartic_toy_expected(nbeta: float = 1000.0, localization: float = 1.0) -> float:
    """``E[nβ L(w)]`` for ``L = w1² + w2⁴`` under ``exp(-nβ L(w) - γ/2 |w|²)``: what :func:`quartic_toy_llc` estimates.

    The density factorises over the coordinates (``w3`` carries no loss). The quadratic factor is
    Gaussian, ``E[nβ w1²] = nβ / (2 (nβ + γ/2))``; the quartic factor is integrated numerically
    (``scipy.integrate.quad``). At ``γ = 0`` this is ``1/2 + 1/4 = 3/4``, the learning coefficient
    (``E[a w^(2k)] = 1/(2k)`` for a density ``∝ exp(-a w^(2k))``); a localisation ``γ > 0`` pulls
    it below ``3/4``. Returns a float.
    """
    nbeta = check_positive_float("nbeta", nbeta)
    gamma = check_positive_float("localization", localization, allow_zero=True)
    quadratic = nbeta / (2.0 * (nbeta + gamma / 2.0))
    # the quartic coordinate, rescaled by u = nβ^(1/4) w2 so that the integrand is O(1) for any nβ
    c = gamma / (2.0 * math.sqrt(nbeta))

    def density(u: float) -> float:
        return math.exp(-(u**4) - c * u * u)

    mass = integrate.quad(density, 0.0, np.inf)[0]
    moment = integrate.quad(lambda u: u**4 * density(u), 0.0, np.inf)[0]
    return quadratic + moment / mass


def llc_shift(short: LLCResult, longer: LLCResult) -> dict[str, float]:
    """How far an LLC estimate moved from one sampling budget to a larger one.

    ``shift = longer.mean - short.mean`` and ``z = shift / sqrt(se_short² + se_longer²)`` with
    ``se = std / sqrt(num_chains)``, the standard error of a mean over independent chains. A
    converged estimate moves by ``|z| ≲ 2`` when the budget (``lr ×`` steps) grows; a larger
    ``|z|`` means at least the shorter run had not converged, whatever its own
    :meth:`~mechnb.degeneracy.LLCResult.diagnose` said (a slow creep hides inside one run's
    trace). Returns ``{"shift": ..., "z": ...}`` (``z`` is ``inf`` when both spreads are 0 and the
    means differ).
    """
    for name, r in (("short", short), ("longer", longer)):
        if not isinstance(r, LLCResult):
            raise TypeError(f"{name}: expected an LLCResult (from degeneracy.estimate_llc), got {type(r).__name__}")
    se2 = sum(r.std**2 / len(r.llc_per_chain) for r in (short, longer))
    shift = float(longer.mean - short.mean)
    z = shift / math.sqrt(se2) if se2 > 0 else (0.0 if shift == 0 else math.copysign(math.inf, shift))
    return {"shift": shift, "z": float(z)}
