"""Batched SGMCMC chains for the LLC estimator: flat parameters, per-chain gradients, samplers.

Lau et al. 2023, *The Local Learning Coefficient* (arXiv 2308.12108), estimate the LLC from
samples of the localised tempered posterior ``∝ exp(-nβ L_n(w) - γ/2 |w - w*|²)`` drawn by
stochastic-gradient Langevin dynamics (Sec. 4). This module holds the pieces that
:func:`mechnb.degeneracy.estimate_llc` puts together, with all ``C`` chains run *at once*:

* :class:`FlatParams` - the model's trainable parameters as one ``(P,)`` vector ``w*`` and the
  map back to named tensors (frozen parameters and buffers held fixed);
* :func:`batched_grad_fns` / :func:`pick_grad_fn` - ``theta (C, P) -> (grads (C, P), losses
  (C,))`` for every chain in one batched forward/backward (a hand-batched MLP, ``vmap`` over
  ``functional_call``, or a per-chain loop as the reference);
* :class:`ChainMinibatches` - each chain's own minibatch stream;
* :class:`NoiseStreams` - Gaussian noise with one random stream per parameter tensor;
* :class:`SGLDSampler` - the chains' state and the SGLD update; a sampler is anything with a
  ``theta (C, P)`` tensor, a ``name`` and ``step(grads)`` (:class:`ChainSampler`), so another
  SGMCMC sampler sits beside it without changing the sampling loop;
* :class:`SGNHTSampler` - the stochastic-gradient Nosé-Hoover thermostat (Ding et al. 2014);
* :func:`restriction_mask` - the weight-restricted LLC: which coordinates of ``w`` are sampled.

Both samplers take an optional ``mask (P,)`` (1 = sampled, 0 = held at ``w*``): drift, noise
and momentum are multiplied by it, so a restricted chain moves only the selected weights and
its noise on them is exactly that of the unrestricted chain with the same seed.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

__all__ = [
    "FlatParams",
    "GradFn",
    "batched_grad_fns",
    "pick_grad_fn",
    "ChainMinibatches",
    "NoiseStreams",
    "ChainSampler",
    "SGLDSampler",
    "SGNHTSampler",
    "restriction_mask",
    "mala_log_acceptance",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GradFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``(theta (C, P), xb, yb) -> (grads (C, P), losses (C,))``; ``xb`` is ``(B, ...)`` shared by
all chains (full batch) or ``(C, B, ...)`` (one minibatch per chain)."""


# --------------------------------------------------------------------------------------
# Parameters as one flat vector
# --------------------------------------------------------------------------------------
@dataclass
class FlatParams:
    """A model's trainable parameters flattened into ``w0 (P,)``, and the way back.

    Attributes:
        names, shapes, sizes: the trainable parameters (``requires_grad=True``) in
            ``named_parameters`` order, their shapes and element counts (``P = sum(sizes)``).
        frozen: the other parameters, detached (held fixed by the sampler).
        buffers: the model's buffers, used as they are.
        w0: ``(P,)`` the concatenated trainable parameters ``w*``, in the first one's dtype.
    """

    names: list[str]
    shapes: list[torch.Size]
    sizes: list[int]
    frozen: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    w0: torch.Tensor

    @classmethod
    def of(cls, model: nn.Module, device: torch.device | str = "cpu") -> FlatParams:
        """Flatten ``model``'s trainable parameters onto ``device`` (ValueError if there are none)."""
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model: expected at least one parameter with requires_grad=True, got none")
        dtype = named[0][1].dtype
        return cls(
            names=[k for k, _ in named],
            shapes=[p.shape for _, p in named],
            sizes=[p.numel() for _, p in named],
            frozen={k: p.detach().to(device) for k, p in model.named_parameters() if not p.requires_grad},
            buffers={k: b.to(device) for k, b in model.named_buffers()},
            w0=torch.cat([p.detach().reshape(-1).to(device, dtype) for _, p in named]),
        )

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(P,)`` -> ``{name: view of flat with the parameter's shape}``."""
        out, off = {}, 0
        for k, shp, sz in zip(self.names, self.shapes, self.sizes):
            out[k] = flat[off : off + sz].view(shp)
            off += sz
        return out

    def loss_of(self, model: nn.Module, loss_fn: LossFn) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(flat (P,), xb, yb) -> loss_fn(model(xb; flat), yb)`` through ``functional_call``."""

        def loss_single(flat: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            params = {**self.unflatten(flat), **self.frozen, **self.buffers}
            return loss_fn(torch.func.functional_call(model, params, (xb,)), yb)

        return loss_single


def restriction_mask(flat: FlatParams, restrict: Any) -> torch.Tensor | None:
    """The ``(P,)`` 0/1 mask of the coordinates a weight-restricted chain samples (``None``: all).

    ``restrict`` is ``None`` (every trainable parameter), a parameter name or a list of names
    (as in ``model.named_parameters()``), a predicate ``name -> bool``, or a mapping
    ``{name: index}`` whose index (a slice, an int, a tuple of them or a boolean tensor of the
    parameter's shape) selects part of that parameter - e.g. ``{"W_Q": (0, slice(None))}`` for
    one attention head's block. The mask is in ``flat.w0``'s dtype; selecting every coordinate
    returns ``None`` (the unrestricted estimator, bit for bit).
    """
    if restrict is None:
        return None
    names = flat.names
    pieces = [torch.zeros(shp, dtype=flat.w0.dtype, device=flat.w0.device) for shp in flat.shapes]
    if isinstance(restrict, str):
        restrict = [restrict]
    if isinstance(restrict, Mapping):
        items = list(restrict.items())
    elif callable(restrict):
        items = []
        for k in names:
            v = restrict(k)
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"restrict: expected a predicate name -> bool, it returned {type(v).__name__} for {k!r}")
            if v:
                items.append((k, slice(None)))
    elif isinstance(restrict, (list, tuple, set, frozenset)):
        items = [(k, slice(None)) for k in restrict]
    else:
        raise TypeError(f"restrict: expected None, a parameter name, a list of names, a predicate on names or a "
                        f"mapping name -> index, got {type(restrict).__name__}")
    for k, idx in items:
        if not isinstance(k, str) or k not in names:
            raise ValueError(f"restrict: {k!r} is not a trainable parameter of the model; expected one of {names}")
        try:
            pieces[names.index(k)][idx] = 1
        except (IndexError, TypeError, RuntimeError) as e:
            raise ValueError(f"restrict: index {idx!r} does not fit parameter {k!r} of shape "
                             f"{tuple(flat.shapes[names.index(k)])}: {e}") from e
    mask = torch.cat([p.reshape(-1) for p in pieces])
    n_on = int(mask.sum())
    if n_on == 0:
        raise ValueError(f"restrict: selects no parameter coordinate (got {restrict!r})")
    return None if n_on == mask.numel() else mask


# --------------------------------------------------------------------------------------
# Every chain's loss and gradient in one call
# --------------------------------------------------------------------------------------
def _is_plain_mlp(model: nn.Module) -> bool:
    """True for an exact :class:`mechnb.models.MLP` whose parameters all require grad (fast path)."""
    from mechnb.models import MLP

    return type(model) is MLP and all(p.requires_grad for p in model.parameters())


def batched_grad_fns(model: nn.Module, loss_fn: LossFn, flat: FlatParams, full_batch: bool) -> list[tuple[str, GradFn]]:
    """Candidate ``(theta (C, P), xb, yb) -> (grads (C, P), losses (C,))`` functions, fastest first.

    * ``"mlp"``: for a :class:`mechnb.models.MLP`, a hand-batched forward (``baddbmm`` with the
      ``(C, out, in)`` weight views of ``theta``), the per-chain losses by ``vmap(loss_fn)`` and
      one ``autograd.grad`` of their sum (chains do not share parameters, so the gradient of the
      sum is every chain's own gradient);
    * ``"vmap"``: any module - the per-chain losses by ``vmap(functional_call)`` over the rows
      of ``theta``, then one ``autograd.grad`` of their sum;
    * ``"loop"``: one chain at a time (forward passes with data-dependent control flow).

    Plain autograd is used for the gradients (``torch.func.grad`` costs seconds on first use).
    """
    loss_single = flat.loss_of(model, loss_fn)
    batched = torch.func.vmap(loss_single, in_dims=(0, None, None) if full_batch else (0, 0, 0))
    batched_loss = torch.func.vmap(loss_fn, in_dims=(0, None) if full_batch else (0, 0))
    candidates: list[tuple[str, GradFn]] = []

    if _is_plain_mlp(model):
        act, has_bias, n_layers = model.act_fn, model.bias, len(model.layers)

        def grad_mlp(theta: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            th = theta.detach().requires_grad_(True)
            C = th.shape[0]
            views, off = [], 0
            for shp, sz in zip(flat.shapes, flat.sizes):
                views.append(th[:, off : off + sz].view(C, *shp))
                off += sz
            h = xb
            for i in range(n_layers):
                Wt = views[i * (2 if has_bias else 1)].transpose(1, 2)
                if has_bias:
                    b = views[2 * i + 1].unsqueeze(1)
                    # (C, B, in) @ (C, in, out) + (C, 1, out); a shared (B, in) input broadcasts
                    h = torch.baddbmm(b, h, Wt) if h.ndim == 3 else torch.matmul(h, Wt) + b
                else:
                    h = torch.matmul(h, Wt)
                if i < n_layers - 1:
                    h = act(h)
            losses = batched_loss(h, yb)
            (g,) = torch.autograd.grad(losses.sum(), th)
            return g, losses.detach()

        candidates.append(("mlp", grad_mlp))

    def grad_vmap(theta: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        th = theta.detach().requires_grad_(True)
        losses = batched(th, xb, yb)
        (g,) = torch.autograd.grad(losses.sum(), th)
        return g, losses.detach()

    def grad_loop(theta: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gs, ls = [], []
        for c in range(theta.shape[0]):
            th = theta[c].detach().requires_grad_(True)
            loss = loss_single(th, xb if full_batch else xb[c], yb if full_batch else yb[c])
            (g,) = torch.autograd.grad(loss, th)
            gs.append(g)
            ls.append(loss.detach())
        return torch.stack(gs), torch.stack(ls)

    return candidates + [("vmap", grad_vmap), ("loop", grad_loop)]


def pick_grad_fn(candidates: list[tuple[str, GradFn]], theta: torch.Tensor, xb: torch.Tensor,
                 yb: torch.Tensor) -> tuple[GradFn, str]:
    """The first candidate that runs and agrees with the reference (the last, per-chain loop)."""
    ref_name, ref_fn = candidates[-1]
    g_ref, l_ref = ref_fn(theta, xb, yb)
    for name, fn in candidates[:-1]:
        try:
            g, l = fn(theta, xb, yb)
        except Exception:  # noqa: BLE001 - e.g. vmap over data-dependent control flow
            continue
        tol = 1e-4 * (1 + float(g_ref.abs().max()))
        if g.shape == g_ref.shape and torch.allclose(g, g_ref, atol=tol, rtol=1e-3) and torch.allclose(
                l, l_ref, atol=1e-5 * (1 + float(l_ref.abs().max())), rtol=1e-4):
            return fn, name
    return ref_fn, ref_name


# --------------------------------------------------------------------------------------
# Randomness: minibatches and Langevin noise
# --------------------------------------------------------------------------------------
class ChainMinibatches:
    """Each chain's minibatches: a fresh random permutation of the ``n`` samples per chain and epoch.

    ``batch(step)`` returns ``(x (C, B, ...), y (C, B, ...))`` - chain ``c`` reads rows
    ``perm_c[j B : (j + 1) B]`` at step ``j`` of an epoch of ``n // B`` steps - or the whole
    ``(x, y)``, shared by every chain, when ``B = n`` (full-batch Langevin). The permutations
    come from a CPU generator seeded with ``seed``, so the order does not depend on the device.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_chains: int, batch_size: int, seed: int) -> None:
        self.x, self.y = x, y
        self.C, self.B, self.n = num_chains, batch_size, int(x.shape[0])
        self.full_batch = batch_size == self.n
        self.batches_per_epoch = self.n // batch_size
        self._gen = torch.Generator().manual_seed(int(seed))
        self._perms: torch.Tensor | None = None

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The minibatches of sampler step ``step`` (``step`` counts from 0, burn-in included)."""
        if self.full_batch:
            return self.x, self.y
        j = step % self.batches_per_epoch
        if j == 0:
            self._perms = torch.argsort(torch.rand(self.C, self.n, generator=self._gen), dim=1).to(self.x.device)
        idx = self._perms[:, j * self.B : (j + 1) * self.B]  # (C, B)
        return self.x[idx], self.y[idx]

    def probe(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of the right shape that draws no randomness (the first ``B`` rows for every chain)."""
        if self.full_batch:
            return self.x, self.y
        xb, yb = self.x[: self.B], self.y[: self.B]
        return xb.unsqueeze(0).expand(self.C, *xb.shape), yb.unsqueeze(0).expand(self.C, *yb.shape)


class NoiseStreams:
    """Standard normal noise ``(C, P)`` with one random stream per parameter tensor, keyed by its name.

    Adding, removing or reordering other parameters leaves each parameter's noise unchanged
    (the stream of ``name`` is seeded by ``seed`` and the CRC-32 of ``name``).
    """

    def __init__(self, names: list[str], sizes: list[int], seed: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.sizes, self.device, self.dtype = sizes, device, dtype
        self._gens = [torch.Generator(device=device).manual_seed((int(seed) * 1_000_003 + zlib.crc32(k.encode())) % 2**63)
                      for k in names]

    def draw(self, num_chains: int) -> torch.Tensor:
        """``(num_chains, P)`` independent ``N(0, 1)`` entries."""
        parts = [torch.randn(num_chains, sz, generator=g, device=self.device, dtype=self.dtype)
                 for g, sz in zip(self._gens, self.sizes)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


# --------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------
class ChainSampler(Protocol):
    """What the sampling loop needs from a sampler: the chains' parameters and one update."""

    name: str
    theta: torch.Tensor  # (C, P), the current parameters of every chain

    def step(self, grads: torch.Tensor) -> None:
        """Advance every chain by one step given ``grads (C, P) = ∇L_m(theta)`` (may be overwritten)."""
        ...


class SGLDSampler:
    r"""``C`` SGLD chains for the localised tempered posterior (Lau et al. 2023, Eq. 11, Sec. 4).

    The chains start at ``w*`` and follow devinterp's update::

        Δw_t = -(ε/2) (nβ ∇L_m(w_t) + γ (w_t - w*)) + N(0, ε I)

    whose stationary law (for small ``ε``) is ``∝ exp(-nβ L_n(w) - γ/2 |w - w*|²)``.

    Args:
        w0: ``(P,)`` the centre ``w*`` (every chain starts there).
        num_chains: ``C``.
        lr: step size ``ε``.
        localization: ``γ`` (0: no pull towards ``w*``).
        nbeta: inverse temperature ``nβ``.
        noise: the Langevin noise streams (``noise.draw(C) -> (C, P)``).
        mask: ``(P,)`` 0/1, the coordinates sampled (:func:`restriction_mask`); ``None``: all.
        track_acceptance: record the MALA acceptance probability of every proposal (below).

    ``w0`` may also be ``(C, P)``: one centre per chain (the chains of several checkpoints run
    together, :func:`mechnb.degeneracy.llc_trajectory`).

    **MALA acceptance.** Each SGLD step is a Metropolis-adjusted Langevin *proposal*
    ``w' ~ N(w - (ε/2)∇U(w), ε I)`` with ``U = nβ L_m + γ/2 |w - w*|²``; its acceptance
    probability ``min(1, exp(U(w) - U(w') + log q(w | w') - log q(w' | w)))`` (never applied,
    only recorded, with the minibatch losses of the two steps as devinterp does) measures how
    well the discretisation follows the continuous dynamics: near 1 the step is (perhaps too)
    small, far below ~0.9 the step size biases the estimate. ``acceptance_sum / acceptance_count``
    is each chain's mean over the steps tracked.
    """

    name = "SGLD"

    def __init__(self, w0: torch.Tensor, num_chains: int, *, lr: float, localization: float, nbeta: float,
                 noise: NoiseStreams, mask: torch.Tensor | None = None, track_acceptance: bool = False) -> None:
        self.w0 = w0
        self.theta = (w0.unsqueeze(0).repeat(num_chains, 1) if w0.ndim == 1 else w0.clone())  # (C, P)
        self.nbeta, self.gamma, self.lr = nbeta, localization, lr
        self.half_eps, self.sqrt_eps = 0.5 * lr, math.sqrt(lr)
        self.noise, self.mask = noise, mask
        self.track_acceptance = track_acceptance
        self.acceptance_sum = torch.zeros(self.theta.shape[0], dtype=torch.float64, device=self.theta.device)
        self.acceptance_count = 0
        self._prev: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (theta, drift, U) before the step

    def potential(self, losses: torch.Tensor) -> torch.Tensor:
        """``U(theta) = nβ L_m + γ/2 |theta - w*|²`` per chain (``(C,)``, float64), restricted coordinates only."""
        d = self.theta - self.w0
        if self.mask is not None:
            d = d * self.mask
        return self.nbeta * losses.to(torch.float64) + 0.5 * self.gamma * d.pow(2).sum(1).to(torch.float64)

    def step(self, grads: torch.Tensor, losses: torch.Tensor | None = None) -> None:
        """One SGLD step of every chain, in place; ``grads (C, P)`` is overwritten with the drift.

        ``losses (C,)`` (the minibatch losses at ``theta``) are needed only to track acceptance.
        """
        drift = grads.mul_(self.nbeta)
        if self.gamma:
            drift.add_(self.theta - self.w0, alpha=self.gamma)
        if self.mask is not None:
            drift.mul_(self.mask)
        if self.track_acceptance and losses is not None:
            U = self.potential(losses)
            if self._prev is not None:
                a = mala_log_acceptance(*self._prev, self.theta, drift, U, self.lr, self.mask)
                self.acceptance_sum += a.clamp(max=0).exp()
                self.acceptance_count += 1
            self._prev = (self.theta.clone(), drift.clone(), U)
        self.theta.add_(drift, alpha=-self.half_eps)
        noise = self.noise.draw(self.theta.shape[0])
        if self.mask is not None:
            noise.mul_(self.mask)
        self.theta.add_(noise, alpha=self.sqrt_eps)


def mala_log_acceptance(theta: torch.Tensor, drift: torch.Tensor, U: torch.Tensor, theta_new: torch.Tensor,
                        drift_new: torch.Tensor, U_new: torch.Tensor, lr: float,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""``log`` of the Metropolis-Hastings ratio of the Langevin proposal ``theta -> theta_new`` per chain.

    With ``q(b | a) = N(b; a - (ε/2) ∇U(a), ε I)`` and ``drift = ∇U``:
    ``log α = U(θ) - U(θ') + log q(θ | θ') - log q(θ' | θ)``, where
    ``log q(b | a) = -|b - a + (ε/2)∇U(a)|² / (2ε)`` (constants cancel). All ``(C, P)`` / ``(C,)``;
    returns ``(C,)`` float64. ``mask`` keeps the sampled coordinates only.
    """
    fwd = theta_new - theta + 0.5 * lr * drift
    bwd = theta - theta_new + 0.5 * lr * drift_new
    if mask is not None:
        fwd, bwd = fwd * mask, bwd * mask
    log_q_fwd = -fwd.pow(2).sum(1).to(torch.float64) / (2 * lr)
    log_q_bwd = -bwd.pow(2).sum(1).to(torch.float64) / (2 * lr)
    return U - U_new + log_q_bwd - log_q_fwd


class SGNHTSampler:
    r"""``C`` stochastic-gradient Nosé-Hoover thermostat chains (Ding et al. 2014, NeurIPS, Algorithm 1).

    SGNHT adds a momentum ``p`` and a scalar thermostat ``ξ`` per chain to Langevin dynamics;
    ``ξ`` adapts the friction so the kinetic energy per coordinate stays at the target
    temperature, absorbing the unknown extra noise of minibatch gradients. With step ``h = lr``,
    diffusion ``A`` and ``∇U = nβ ∇L_m(w) + γ (w - w*)`` (the same potential as SGLD)::

        p ← (1 - ξ) p - h ∇U(w) + sqrt(2 A h) N(0, I)
        w ← w + p
        ξ ← ξ + (|p|² / d - h)

    (``p`` is the momentum times ``h``; ``d`` the number of sampled coordinates). The chains start
    at ``w*`` with ``p ~ N(0, h I)`` and ``ξ = A``; the stationary law of ``w`` is
    ``∝ exp(-U(w))``, the localised tempered posterior of the LLC.

    Args:
        w0: ``(P,)`` or ``(C, P)`` the centre(s) ``w*``.
        num_chains: ``C``.
        lr: step size ``h``.
        localization: ``γ``.
        nbeta: ``nβ``.
        noise: the noise streams (one draw for the initial momentum, one per step).
        diffusion: ``A`` (default 0.01, devinterp's ``diffusion_factor``).
        mask: ``(P,)`` 0/1 sampled coordinates, or ``None``.
    """

    name = "SGNHT"

    def __init__(self, w0: torch.Tensor, num_chains: int, *, lr: float, localization: float, nbeta: float,
                 noise: NoiseStreams, diffusion: float = 0.01, mask: torch.Tensor | None = None) -> None:
        self.w0 = w0
        self.theta = (w0.unsqueeze(0).repeat(num_chains, 1) if w0.ndim == 1 else w0.clone())
        C = self.theta.shape[0]
        self.nbeta, self.gamma, self.h, self.A = nbeta, localization, lr, diffusion
        self.noise, self.mask = noise, mask
        self.d = float(self.theta.shape[1] if mask is None else mask.sum())
        self.p = noise.draw(C).mul_(math.sqrt(lr))
        if mask is not None:
            self.p.mul_(mask)
        self.xi = torch.full((C, 1), float(diffusion), dtype=self.theta.dtype, device=self.theta.device)
        self._noise_scale = math.sqrt(2 * diffusion * lr)

    def step(self, grads: torch.Tensor, losses: torch.Tensor | None = None) -> None:
        """One SGNHT step of every chain, in place (``grads`` overwritten; ``losses`` unused)."""
        drift = grads.mul_(self.nbeta)
        if self.gamma:
            drift.add_(self.theta - self.w0, alpha=self.gamma)
        noise = self.noise.draw(self.theta.shape[0])
        self.p.mul_(1 - self.xi).add_(drift, alpha=-self.h).add_(noise, alpha=self._noise_scale)
        if self.mask is not None:
            self.p.mul_(self.mask)
        self.theta.add_(self.p)
        self.xi.add_(self.p.pow(2).sum(1, keepdim=True) / self.d - self.h)
