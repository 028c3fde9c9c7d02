"""The local learning coefficient (LLC): SGLD estimator and the deep-linear-network closed form.

* :func:`estimate_llc` - the SGLD estimator of Lau et al. 2023 (arXiv 2308.12108, Eq. 9 and
  Sec. 4), with every chain run *together*: the parameters of all chains are stacked into one
  ``(num_chains, n_params)`` tensor and the per-chain losses and gradients come from one
  batched forward / backward per step instead of ``C`` separate ones. The function reads as
  its named steps: validate (:func:`_check_settings`), flatten the parameters, ``L_n(w*)``
  (:func:`_full_loss`), build the minibatch and noise streams and the sampler, run the chains
  (:func:`_run_chains`, burn-in and thinning by :meth:`_Settings.is_draw`), and
  ``λ̂ = nβ (E[L_n(w)] - L_n(w*))`` (:func:`_llc_per_chain`). The batched chains and the
  sampler objects live in :mod:`mechnb.degeneracy.samplers`.
* :func:`dln_learning_coefficient` - the learning coefficient of a deep linear network with a
  true map of rank ``r`` (Aoyagi 2024, "Consideration on the learning efficiency of
  multiple-layered neural networks with linear units", Theorem 1; quoted in Lau et al. 2023,
  Appendix on DLNs).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mechnb._checks import (
    check_choice,
    check_materialized,
    check_positive_float,
    check_positive_int,
    check_tensor,
    resolve_device,
)
from mechnb._torch import eval_mode
from mechnb.degeneracy.samplers import (
    ChainMinibatches,
    ChainSampler,
    FlatParams,
    GradFn,
    NoiseStreams,
    SGLDSampler,
    SGNHTSampler,
    batched_grad_fns,
    pick_grad_fn,
    restriction_mask,
)
from mechnb.io import saveable

__all__ = ["LLCResult", "estimate_llc", "dln_learning_coefficient", "default_nbeta", "sse_loss", "SAMPLERS"]

SAMPLERS = ("sgld", "sgnht")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------
# Theory: deep linear networks
# --------------------------------------------------------------------------------------
def dln_learning_coefficient(widths: Sequence[int], rank: int | None = None) -> float:
    """Learning coefficient λ of a deep linear network ``x -> W_L ... W_1 x`` (Aoyagi 2024).

    Let ``H_1, ..., H_{L+1}`` be the widths (input first, output last), ``r`` the rank of the
    true product ``W_L ... W_1`` and ``Δ_i = H_i - r``. Theorem 1 of Aoyagi (2024) says there is
    a unique set ``Σ`` of ``ℓ + 1`` layer indices (``1 <= ℓ <= L``) with

    * ``max_{σ∈Σ} Δ_σ < min_{σ∉Σ} Δ_σ``,
    * ``Σ_{σ∈Σ} Δ_σ >= ℓ · max_{σ∈Σ} Δ_σ`` and ``Σ_{σ∈Σ} Δ_σ < ℓ · min_{σ∉Σ} Δ_σ``,

    and then, with ``S = Σ_{σ∈Σ} Δ_σ`` and ``a = S - ℓ ⌊S / ℓ⌋``,

    ``λ = (-r² + r(H_1 + H_{L+1})) / 2 + a(ℓ - a) / (4ℓ) - ℓ(ℓ - 1)/4 · (S/ℓ)²
    + ½ Σ_{σ<σ' ∈ Σ} Δ_σ Δ_σ'``.

    ``Σ`` is always made of the ``ℓ + 1`` smallest ``Δ``; the function scans ``ℓ``. For two
    layers this is the reduced-rank-regression formula of Aoyagi & Watanabe (2005); for one
    layer it is the regular value ``H_1 H_2 / 2``.

    Args:
        widths: ``[H_1, ..., H_{L+1}]``, input and output widths included (at least two).
        rank: rank ``r`` of the true map; ``None`` means the generic rank ``min(widths)``.

    Returns:
        λ as a float (a multiple of 1/8 for two layers; rational in general).
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) < 2:
        raise ValueError(f"widths: expected a sequence of at least two layer widths (input ... output), got {widths!r}")
    H = [check_positive_int(f"widths[{i}]", w) for i, w in enumerate(widths)]
    r = min(H) if rank is None else check_positive_int("rank", rank, minimum=0)
    if r > min(H):
        raise ValueError(f"rank: expected at most min(widths) = {min(H)}, got {r}")
    delta = sorted(h - r for h in H)
    n_layers = len(H) - 1  # L
    for ell in range(1, n_layers + 1):
        sigma, rest = delta[: ell + 1], delta[ell + 1 :]
        s = sum(sigma)
        rest_min = min(rest) if rest else math.inf
        if max(sigma) < rest_min and s >= ell * max(sigma) and s < ell * rest_min:
            a = s - ell * (s // ell)
            pair_sum = sum(sigma[i] * sigma[j] for i in range(len(sigma)) for j in range(i + 1, len(sigma)))
            lam = (
                (-(r**2) + r * (H[0] + H[-1])) / 2
                + a * (ell - a) / (4 * ell)
                - ell * (ell - 1) / 4 * (s / ell) ** 2
                + pair_sum / 2
            )
            return float(lam)
    raise RuntimeError(f"dln_learning_coefficient: no index set Σ satisfies Aoyagi's conditions for {H}, rank {r}")


def sse_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over the output dimension, averaged over samples.

    ``((output - target)**2).sum(-1).mean()``: the Gaussian negative log-likelihood with unit
    variance (up to a constant), the natural ``L_n`` for the LLC of a regression model.
    """
    return ((output - target) ** 2).sum(-1).mean()


def default_nbeta(n: int) -> float:
    """``nβ = n / log n``, the inverse temperature ``β* = 1 / log n`` of Lau et al. 2023 (Sec. 4)."""
    n = check_positive_int("n", n, minimum=2)
    return n / math.log(n)


# --------------------------------------------------------------------------------------
# SGLD / SGNHT estimator
# --------------------------------------------------------------------------------------
ACCEPTANCE_RANGE = (0.8, 0.9995)
"""MALA acceptance outside this range triggers a :meth:`LLCResult.diagnose` warning (too large /
too small a step; Lau et al. and devinterp recommend roughly 0.9-0.95)."""


@saveable()
@dataclass
class LLCResult:
    """Output of :func:`estimate_llc`.

    Attributes:
        mean: the LLC estimate, mean over chains of ``nβ (mean_t L_t - L_n(w*))``.
        std: standard deviation of the per-chain estimates (``ddof=1``; 0 for one chain).
        llc_per_chain: ``(num_chains,)`` per-chain estimates.
        loss_trace: ``(num_chains, num_draws)`` minibatch loss ``L_m(w_t)`` at every draw (the
            loss of the batch used for that step, evaluated before the step, as in devinterp).
        init_loss: ``L_n(w*)``, the full-data loss at the centre of the chains.
        nbeta: the inverse temperature ``nβ`` used.
        config: the sampler settings (lr, localization, batch size, sampler, restriction...).
        seconds: wall time of the sampling loop.
        acceptance: ``(num_chains,)`` mean MALA acceptance probability of the SGLD proposals
            after burn-in (:class:`~mechnb.degeneracy.samplers.SGLDSampler`); ``None`` for SGNHT.
        distance_trace: ``(num_chains, num_draws)`` ``|w_t - w*|`` (sampled coordinates) at every draw.
    """

    mean: float
    std: float
    llc_per_chain: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    nbeta: float
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    acceptance: np.ndarray | None = None
    distance_trace: np.ndarray | None = None

    @property
    def llc_trace(self) -> np.ndarray:
        """``(num_chains, num_draws)`` per-draw ``nβ (L_t - L_n(w*))``: flat after burn-in if SGLD mixes."""
        return self.nbeta * (self.loss_trace - self.init_loss)

    def stationarity(self) -> dict[str, float]:
        """Is the LLC trace flat? Compare the chain-mean trace over the 2nd and 4th quarters of the draws.

        Returns ``{"drift": m4 - m2, "relative_drift": (m4 - m2) / max(|mean|, 1e-12), "z": ...,
        "chains_agreeing": ...}`` where ``m2, m4`` are the means of the chain-averaged
        :attr:`llc_trace` over draws ``[D/4, D/2)`` and ``[3D/4, D)``, ``z`` the drift in units of
        its standard error estimated from the per-chain differences (``inf`` for one chain with a
        drift) and ``chains_agreeing`` the fraction of chains whose own drift has the same sign.
        A trace still climbing (too short a chain, too small a step) has a large positive drift
        in every chain; autocorrelated noise gives drifts of both signs.
        """
        tr = self.llc_trace
        D = tr.shape[1]
        if D < 4:
            return {"drift": 0.0, "relative_drift": 0.0, "z": 0.0, "chains_agreeing": 0.0}
        q = D // 4
        per_chain = tr[:, 3 * q :].mean(1) - tr[:, q : 2 * q].mean(1)
        drift = float(per_chain.mean())
        se = float(per_chain.std(ddof=1) / math.sqrt(len(per_chain))) if len(per_chain) > 1 else 0.0
        z = drift / se if se > 0 else (0.0 if drift == 0 else math.inf)
        agree = float(np.mean(np.sign(per_chain) == np.sign(drift))) if drift else 0.0
        return {"drift": drift, "relative_drift": drift / max(abs(self.mean), 1e-12), "z": float(z),
                "chains_agreeing": agree}

    def diagnose(self, *, max_relative_drift: float = 0.2, acceptance_range: tuple[float, float] = ACCEPTANCE_RANGE,
                 max_chain_spread: float = 0.25) -> list[str]:
        """Plain-language warnings about this estimate (an empty list when nothing looks wrong).

        Checks: a negative estimate (``w*`` is not a local minimum, or too large a step); chains
        that barely moved (``nβ |E L - L(w*)|`` far below 1: the estimate is ~0 whatever the
        model); a trace still drifting (:meth:`stationarity`: relative drift above
        ``max_relative_drift``, more than 3 standard errors, the same sign in at least 90% of the
        chains); MALA acceptance outside
        ``acceptance_range``; chains disagreeing (std over chains above ``max_chain_spread``
        times ``|mean|``).
        """
        out: list[str] = []
        lr = self.config.get("lr")
        if self.mean < 0:
            out.append(f"negative estimate ({self.mean:.3g}): the chains found lower loss than at w*, so w* is not a "
                       f"local minimum (train longer) or the step size lr={lr} is too large")
        if abs(self.mean) < 0.01 and self.distance_trace is not None:
            dist = float(np.mean(self.distance_trace[:, -1])) if self.distance_trace.size else 0.0
            out.append(f"the chains barely moved: the estimate {self.mean:.2g} is far below the ~1/2 per direction "
                       f"an equilibrated chain shows, and the mean distance from w* is {dist:.2g}; raise lr "
                       f"(got {lr}) or the number of steps")
        st = self.stationarity()
        consistent = st["chains_agreeing"] >= 0.9
        if consistent and st["relative_drift"] > max_relative_drift and st["z"] > 3:
            out.append(f"the LLC trace is still rising ({100 * st['relative_drift']:.0f}% between the 2nd and 4th "
                       f"quarter of the draws): burn in longer, draw more, or raise lr (got {lr})")
        elif consistent and st["relative_drift"] < -max_relative_drift and st["z"] < -3:
            out.append(f"the LLC trace is falling ({100 * st['relative_drift']:.0f}% between the 2nd and 4th quarter "
                       f"of the draws): the chains are leaving w*'s basin; raise localization or lower lr")
        if self.acceptance is not None and len(self.acceptance):
            acc = float(np.mean(self.acceptance))
            lo, hi = acceptance_range
            if acc < lo:
                out.append(f"MALA acceptance {acc:.2f} is low (below {lo}): lr={lr} is too large for this nβ, the "
                           f"discretisation biases the estimate; lower lr")
            elif acc > hi:
                out.append(f"MALA acceptance {acc:.3f} is very close to 1 (above {hi}): lr={lr} is probably smaller "
                           f"than needed; the chains mix slowly (check the trace has flattened)")
        if len(self.llc_per_chain) > 1 and self.std > max_chain_spread * max(abs(self.mean), 1e-12) and abs(self.mean) >= 0.01:
            out.append(f"the chains disagree: std over chains {self.std:.3g} is more than {100 * max_chain_spread:.0f}% "
                       f"of the estimate {self.mean:.3g}; run longer chains or more of them")
        return out

    def __repr__(self) -> str:
        return (f"LLCResult(mean={self.mean:.4g}, std={self.std:.3g}, chains={self.loss_trace.shape[0]}, "
                f"draws={self.loss_trace.shape[1]}, nbeta={self.nbeta:.4g}, init_loss={self.init_loss:.4g})")


# --------------------------------------------------------------------------------------
# Named steps of the estimator: validation, draw schedule, full-data loss, the loop, λ̂
# --------------------------------------------------------------------------------------
def _check_data(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"data: expected a tuple (inputs, targets) of tensors, got {type(data).__name__}"
                        + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""))
    x, y = data
    check_tensor("data[0] (inputs)", x, finite=True)
    check_tensor("data[1] (targets)", y, finite=True)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"data: expected inputs and targets with a leading sample dimension, got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"data: inputs and targets must have the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError(f"data: expected at least 2 samples, got {x.shape[0]}")
    return x, y


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_model(model: Any) -> nn.Module:
    """A materialised module whose trainable parameters are float32/float64 (low precision refused)."""
    check_materialized(model, "model")
    for k, p in model.named_parameters():
        if p.requires_grad and p.dtype in _LOW_PRECISION:
            raise TypeError(f"model: parameter {k!r} is {p.dtype}; the LLC sampler needs float32 or float64 "
                            f"(Langevin steps of size sqrt(lr) are below {p.dtype}'s resolution, which biases the "
                            f"estimate); pass model.float() - or a float32 copy - instead")
    return model


@dataclass(frozen=True)
class _Settings:
    """The validated sampler settings of one :func:`estimate_llc` call (``n`` samples)."""

    n: int
    num_chains: int
    num_draws: int
    lr: float
    localization: float
    nbeta: float
    batch_size: int
    num_burnin_steps: int
    num_steps_bw_draws: int
    seed: int
    sampler: str = "sgld"
    diffusion: float = 0.01

    @property
    def total_steps(self) -> int:
        """Burn-in, then ``num_draws`` draws ``num_steps_bw_draws`` steps apart."""
        return self.num_burnin_steps + self.num_draws * self.num_steps_bw_draws

    def is_draw(self, step: int) -> bool:
        """Whether ``step`` (from 0) records a draw: after burn-in, every ``num_steps_bw_draws``-th step."""
        return step >= self.num_burnin_steps and (step - self.num_burnin_steps + 1) % self.num_steps_bw_draws == 0

    def config(self, mode: str) -> dict[str, Any]:
        """The settings as :attr:`LLCResult.config` (``mode``: which batched gradient path ran)."""
        return dict(num_chains=self.num_chains, num_draws=self.num_draws, lr=self.lr, localization=self.localization,
                    batch_size=self.batch_size, num_burnin_steps=self.num_burnin_steps,
                    num_steps_bw_draws=self.num_steps_bw_draws, seed=self.seed, n=self.n, mode=mode,
                    sampler=self.sampler, **({"diffusion": self.diffusion} if self.sampler == "sgnht" else {}))


def _check_settings(n: int, num_chains: Any, num_draws: Any, lr: Any, localization: Any, nbeta: Any,
                    batch_size: Any, num_burnin_steps: Any, num_steps_bw_draws: Any, seed: Any,
                    sampler: Any = "sgld", diffusion: Any = 0.01) -> _Settings:
    """Validate :func:`estimate_llc`'s sampler arguments (ValueError/TypeError naming the argument)."""
    C = check_positive_int("num_chains", num_chains)
    D = check_positive_int("num_draws", num_draws)
    eps = check_positive_float("lr", lr)
    gamma = check_positive_float("localization", localization, allow_zero=True)
    burn = check_positive_int("num_burnin_steps", num_burnin_steps, minimum=0)
    every = check_positive_int("num_steps_bw_draws", num_steps_bw_draws)
    nb = default_nbeta(n) if nbeta is None else check_positive_float("nbeta", nbeta)
    B = n if batch_size is None else check_positive_int("batch_size", batch_size)
    if B > n:
        raise ValueError(f"batch_size: expected at most the number of samples n={n}, got {B}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    if not isinstance(sampler, str):
        raise TypeError(f"sampler: expected one of {list(SAMPLERS)}, got {type(sampler).__name__}")
    smp = check_choice("sampler", sampler.lower(), SAMPLERS)
    A = check_positive_float("diffusion", diffusion)
    return _Settings(n=n, num_chains=C, num_draws=D, lr=eps, localization=gamma, nbeta=nb, batch_size=B,
                     num_burnin_steps=burn, num_steps_bw_draws=every, seed=int(seed), sampler=smp, diffusion=A)


@torch.no_grad()
def _full_loss(loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               chunk: int = 4096) -> float:
    """``L_n(w) = (1/n) Σ_i ℓ_i`` evaluated in chunks (``loss_fn`` must be a mean over samples)."""
    total, n = 0.0, x.shape[0]
    for s in range(0, n, chunk):
        xb, yb = x[s : s + chunk], y[s : s + chunk]
        total += float(loss_of(xb, yb)) * xb.shape[0]
    return total / n


@torch.no_grad()
def _check_loss_is_mean(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> float:
    """Return ``L_n(w*)``; raise naming ``data[0]`` when the model rejects the inputs; warn if ``loss_fn`` sums.

    The mean check is exact, not statistical: ``loss_fn`` on the batch written twice
    (``cat([out, out])``, ``cat([y, y])``) equals ``loss_fn(out, y)`` for a mean over samples and
    twice it for a sum. Outputs are perturbed slightly first so a zero loss at ``w*`` (noiseless
    data) still tells the two apart.
    """
    m = min(int(x.shape[0]), 256)
    try:
        out = model(x[:m])
    except (ValueError, TypeError, RuntimeError, IndexError) as e:
        raise ValueError(f"data[0] (inputs): the model cannot take the inputs of shape {tuple(x.shape)} and dtype "
                         f"{x.dtype}: {e}") from e
    try:
        ref = loss_fn(out, y[:m])
    except (ValueError, TypeError, RuntimeError, IndexError) as e:
        raise ValueError(f"loss_fn / data[1] (targets): loss_fn(model(inputs), targets) failed for targets of shape "
                         f"{tuple(y.shape)}: {e}") from e
    if not isinstance(ref, torch.Tensor) or ref.numel() != 1:
        raise ValueError(f"loss_fn: expected a scalar loss, got {type(ref).__name__}"
                         + (f" of shape {tuple(ref.shape)}" if isinstance(ref, torch.Tensor) else ""))
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        g = torch.Generator(device="cpu").manual_seed(0)
        o = out + 0.1 * torch.randn(out.shape, generator=g, dtype=out.dtype).to(out.device)
        one = float(loss_fn(o, y[:m]))
        two = float(loss_fn(torch.cat([o, o]), torch.cat([y[:m], y[:m]])))
        if abs(one) > 1e-12 and abs(two / one - 1) > 1e-3:
            warnings.warn(f"loss_fn: doubling the batch scales the loss by {two / one:.3g}; the LLC needs loss_fn to "
                          f"be a mean over samples (e.g. reduction='mean'), otherwise the estimate is off by about "
                          f"the batch size", RuntimeWarning, stacklevel=3)
    return float(ref)


def _run_chains(sampler: ChainSampler, grad_fn: GradFn, batches: ChainMinibatches, settings: _Settings,
                progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Run every chain for ``settings.total_steps`` steps; return the ``(C, num_draws)`` loss and distance traces.

    Per step: the chains' minibatches, their losses ``L_m(w_t)`` and gradients (one batched
    call), the loss and ``|w_t - w*|`` recorded if the step is a draw (the loss *before* the
    step, as in devinterp), then ``sampler.step``. A chain that left the finite numbers
    (checked every 100 steps) ends the run with NaN for the remaining draws.
    """
    C = sampler.theta.shape[0]
    trace = torch.empty(C, settings.num_draws, dtype=torch.float64, device=sampler.theta.device)
    dist = torch.empty_like(trace)
    mask = getattr(sampler, "mask", None)
    draw = 0
    for step in tqdm(range(settings.total_steps), desc=sampler.name, disable=not progress, leave=False):
        xb, yb = batches.batch(step)
        grads, losses = grad_fn(sampler.theta, xb, yb)
        if settings.is_draw(step):
            trace[:, draw] = losses.detach().to(torch.float64)
            d = sampler.theta - sampler.w0
            dist[:, draw] = (d if mask is None else d * mask).norm(dim=1).to(torch.float64)
            draw += 1
        if hasattr(sampler, "track_acceptance"):
            sampler.track_acceptance = step >= settings.num_burnin_steps
        sampler.step(grads, losses)
        if step % 100 == 99 and not bool(torch.isfinite(sampler.theta).all()):
            trace[:, draw:] = float("nan")  # diverged: stop early, reported by _llc_per_chain
            dist[:, draw:] = float("nan")
            break
    return trace, dist


def _llc_per_chain(trace: np.ndarray, init_loss: float | np.ndarray, settings: _Settings) -> np.ndarray:
    """``λ̂_c = nβ (mean_t L_m(w_t^c) - L_n(w*))`` per chain (Lau et al. 2023, Eq. 9); ``trace (C, D)``.

    The mean of the minibatch losses along a chain estimates ``E_w[L_n(w)]`` under the
    localised tempered posterior. ``init_loss`` is a float or ``(C,)`` (one centre per chain). A
    non-finite trace (a diverged chain) raises ``FloatingPointError``.
    """
    if not np.isfinite(trace).all():
        bad = int((~np.isfinite(trace)).any(axis=1).sum())
        raise FloatingPointError(f"estimate_llc: the loss diverged in {bad} of {trace.shape[0]} chains; lower lr "
                                 f"(got {settings.lr:g}) or raise localization (got {settings.localization:g})")
    return settings.nbeta * (trace.mean(axis=1) - init_loss)


def _make_sampler(s: _Settings, centres: torch.Tensor, num_chains: int, noise: NoiseStreams,
                  mask: torch.Tensor | None) -> ChainSampler:
    if s.sampler == "sgnht":
        return SGNHTSampler(centres, num_chains, lr=s.lr, localization=s.localization, nbeta=s.nbeta, noise=noise,
                            diffusion=s.diffusion, mask=mask)
    return SGLDSampler(centres, num_chains, lr=s.lr, localization=s.localization, nbeta=s.nbeta, noise=noise,
                       mask=mask, track_acceptance=True)


def _sample(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, flat: FlatParams,
            centres: torch.Tensor, s: _Settings, mask: torch.Tensor | None,
            progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str, float]:
    """Run ``s.num_chains`` chains around each row of ``centres (K, P)``, all ``K C`` chains together.

    Returns the ``(K C, D)`` loss and distance traces (chain ``k C + c`` belongs to centre ``k``),
    the ``(K C,)`` acceptance (SGLD) or ``None``, the gradient path and the seconds spent.
    """
    K, C = centres.shape[0], s.num_chains
    rows = centres.repeat_interleave(C, dim=0)  # (K C, P)
    batches = ChainMinibatches(x, y, K * C, s.batch_size, s.seed)
    noise = NoiseStreams(flat.names, flat.sizes, s.seed, x.device, flat.w0.dtype)
    sampler = _make_sampler(s, rows[0] if K == 1 else rows, K * C, noise, mask)
    grad_fn, mode = pick_grad_fn(batched_grad_fns(model, loss_fn, flat, batches.full_batch), sampler.theta,
                                 *batches.probe())
    t0 = time.perf_counter()
    trace, dist = _run_chains(sampler, grad_fn, batches, s, progress)
    seconds = time.perf_counter() - t0
    acc = None
    if isinstance(sampler, SGLDSampler) and sampler.acceptance_count:
        acc = (sampler.acceptance_sum / sampler.acceptance_count).cpu().numpy()
    return trace.cpu().numpy(), dist.cpu().numpy(), acc, mode, seconds


def estimate_llc(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    num_chains: int = 4,
    num_draws: int = 200,
    lr: float = 1e-4,
    localization: float = 100.0,
    nbeta: float | None = None,
    batch_size: int | None = None,
    num_burnin_steps: int = 0,
    num_steps_bw_draws: int = 1,
    seed: int = 0,
    sampler: str = "sgld",
    diffusion: float = 0.01,
    restrict: Any = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    warn: bool = True,
) -> LLCResult:
    r"""Estimate the local learning coefficient at the model's current parameters ``w*`` by SGLD or SGNHT.

    The estimator (Lau et al. 2023, Eq. 9) is ``λ̂(w*) = nβ (E_w[L_n(w)] - L_n(w*))`` where the
    expectation is over the localised tempered posterior ``∝ exp(-nβ L_n(w) - γ/2 |w - w*|²)``,
    sampled by SGLD (their Eq. 11, devinterp's update; :class:`~mechnb.degeneracy.samplers.SGLDSampler`)::

        Δw_t = -(ε/2) (nβ ∇L_m(w_t) + γ (w_t - w*)) + N(0, ε I)

    or by the Nosé-Hoover thermostat (``sampler="sgnht"``, Ding et al. 2014;
    :class:`~mechnb.degeneracy.samplers.SGNHTSampler`), with ``ε = lr``, ``γ = localization`` and
    ``L_m`` the mean loss of a minibatch of ``m`` samples. ``E_w[L_n(w)]`` is estimated by the
    mean of the minibatch losses along the chains and ``L_n(w*)`` exactly on all the data.

    **Weight-restricted LLC.** With ``restrict`` only the selected weights are sampled, the
    others stay at ``w*`` (:func:`~mechnb.degeneracy.samplers.restriction_mask`: a name, a list
    of names, a predicate on names, or ``{name: index}`` for part of a tensor such as one head's
    rows). E.g. for ``f(x) = W2 W1 x`` restricted to ``W1`` with ``W2`` of rank ``r`` the model is
    regular in ``W1`` modulo ``ker W2``: ``λ = r d_in / 2``.

    All chains run at once: the parameters are a ``(num_chains, n_params)`` tensor and one
    batched call gives every chain's loss and gradient; each chain draws its own minibatches.

    Args:
        model: the network at ``w*`` (left unchanged), float32 or float64 (float16/bfloat16 are
            refused with a ``TypeError``: convert with ``model.float()``). Parameters with
            ``requires_grad=False`` are held fixed; buffers are used as they are.
        loss_fn: ``loss_fn(model(x_batch), y_batch) -> scalar``, a *mean* over the batch
            (e.g. :func:`mechnb.train.mse_loss`, ``F.cross_entropy``); a sum is detected and warned about.
        data: ``(inputs, targets)`` with a shared leading dimension ``n``.
        num_chains: number of chains ``C``.
        num_draws: draws recorded per chain.
        lr: step size ``ε``.
        localization: ``γ``, the strength of the pull towards ``w*``.
        nbeta: inverse temperature ``nβ``; default ``n / log n``.
        batch_size: minibatch size ``m`` (default: all ``n`` samples, i.e. full-batch Langevin).
        num_burnin_steps: steps taken before the first draw (not recorded).
        num_steps_bw_draws: steps between two recorded draws.
        seed: seeds the minibatch order and the noise.
        sampler: ``"sgld"`` or ``"sgnht"``.
        diffusion: SGNHT's diffusion factor ``A`` (ignored by SGLD).
        restrict: which weights to sample (``None``: all trainable parameters).
        device: where to sample.
        progress: show a ``tqdm`` bar.
        warn: emit :meth:`LLCResult.diagnose`'s warning that the chains barely moved as a ``RuntimeWarning``.

    Returns:
        An :class:`LLCResult` with the mean, the std across chains, the per-chain loss and
        distance traces and (SGLD) the MALA acceptance; call ``result.diagnose()`` for warnings.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable loss_fn(output, target) -> scalar, got {type(loss_fn).__name__}")
    _check_model(model)
    x, y = _check_data(data)
    s = _check_settings(int(x.shape[0]), num_chains, num_draws, lr, localization, nbeta, batch_size,
                        num_burnin_steps, num_steps_bw_draws, seed, sampler, diffusion)
    dev = resolve_device(device)
    flat = FlatParams.of(model, dev)
    mask = restriction_mask(flat, restrict)
    x, y = x.to(dev), y.to(dev)

    with eval_mode(model):
        _check_loss_is_mean(model, loss_fn, x, y)
        loss_single = flat.loss_of(model, loss_fn)
        init_loss = _full_loss(lambda xb, yb: loss_single(flat.w0, xb, yb), x, y)  # L_n(w*)
        if not math.isfinite(init_loss):
            raise ValueError(f"model: the loss at w* is {init_loss}; expected a finite value")
        trace, dist, acc, mode, seconds = _sample(model, loss_fn, x, y, flat, flat.w0.unsqueeze(0), s, mask, progress)

    per_chain = _llc_per_chain(trace, init_loss, s)
    cfg = s.config(mode)
    cfg["num_sampled"] = int(flat.w0.numel() if mask is None else mask.sum())
    cfg["restrict"] = None if mask is None else _describe_restrict(restrict)
    res = LLCResult(
        mean=float(per_chain.mean()),
        std=float(per_chain.std(ddof=1)) if s.num_chains > 1 else 0.0,
        llc_per_chain=per_chain,
        loss_trace=trace,
        init_loss=float(init_loss),
        nbeta=float(s.nbeta),
        config=cfg,
        seconds=seconds,
        acceptance=acc,
        distance_trace=dist,
    )
    if warn:
        for msg in res.diagnose():
            if msg.startswith("the chains barely moved"):
                warnings.warn(f"estimate_llc: {msg}", RuntimeWarning, stacklevel=2)
    return res


def _describe_restrict(restrict: Any) -> Any:
    """A saveable description of ``restrict`` for :attr:`LLCResult.config`."""
    if isinstance(restrict, str):
        return [restrict]
    if isinstance(restrict, (list, tuple, set, frozenset)):
        return sorted(str(k) for k in restrict)
    if isinstance(restrict, dict):
        return {str(k): repr(v) for k, v in restrict.items()}
    return getattr(restrict, "__name__", repr(restrict))
