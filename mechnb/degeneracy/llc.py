"""The local learning coefficient (LLC): SGLD estimator and the deep-linear-network closed form.

* :func:`estimate_llc` - the SGLD estimator of Lau et al. 2023 (arXiv 2308.12108, Eq. 9 and
  Sec. 4), with every chain run *together*: the parameters of all chains are stacked into one
  ``(num_chains, n_params)`` tensor and the per-chain losses and gradients come from one
  ``torch.func.vmap`` over ``functional_call``, so ``C`` chains cost one batched forward /
  backward per step instead of ``C`` separate ones.
* :func:`dln_learning_coefficient` - the learning coefficient of a deep linear network with a
  true map of rank ``r`` (Aoyagi 2024, "Consideration on the learning efficiency of
  multiple-layered neural networks with linear units", Theorem 1; quoted in Lau et al. 2023,
  Appendix on DLNs).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mechnb._checks import check_positive_float, check_positive_int, check_tensor, resolve_device

__all__ = ["LLCResult", "estimate_llc", "dln_learning_coefficient", "default_nbeta", "planted_dln", "sse_loss"]

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


def planted_dln(widths: Sequence[int], rank: int | None = None, n_samples: int = 100,
                seed: int = 0):  # -> tuple[MLP, torch.Tensor, torch.Tensor]
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
    from mechnb.models import MLP

    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) < 2:
        raise ValueError(f"widths: expected a sequence of at least two layer widths (input ... output), got {widths!r}")
    H = [check_positive_int(f"widths[{i}]", w) for i, w in enumerate(widths)]
    if rank is not None:
        rank = check_positive_int("rank", rank)
        if rank > min(H):
            raise ValueError(f"rank: expected at most min(widths) = {min(H)}, got {rank}")
    n_samples = check_positive_int("n_samples", n_samples, minimum=2)
    g = torch.Generator().manual_seed(int(seed))
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
# SGLD estimator
# --------------------------------------------------------------------------------------
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
        config: the sampler settings (lr, localization, batch size, ...).
        seconds: wall time of the sampling loop.
    """

    mean: float
    std: float
    llc_per_chain: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    nbeta: float
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def llc_trace(self) -> np.ndarray:
        """``(num_chains, num_draws)`` per-draw ``nβ (L_t - L_n(w*))``: flat after burn-in if SGLD mixes."""
        return self.nbeta * (self.loss_trace - self.init_loss)

    def __repr__(self) -> str:
        return (f"LLCResult(mean={self.mean:.4g}, std={self.std:.3g}, chains={self.loss_trace.shape[0]}, "
                f"draws={self.loss_trace.shape[1]}, nbeta={self.nbeta:.4g}, init_loss={self.init_loss:.4g})")


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


@torch.no_grad()
def _full_loss(loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               chunk: int = 4096) -> float:
    """``L_n(w) = (1/n) Σ_i ℓ_i`` evaluated in chunks (``loss_fn`` must be a mean over samples)."""
    total, n = 0.0, x.shape[0]
    for s in range(0, n, chunk):
        xb, yb = x[s : s + chunk], y[s : s + chunk]
        total += float(loss_of(xb, yb)) * xb.shape[0]
    return total / n


StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _is_plain_mlp(model: nn.Module) -> bool:
    """True for an exact :class:`mechnb.models.MLP` whose parameters all require grad (fast path)."""
    from mechnb.models import MLP

    return type(model) is MLP and all(p.requires_grad for p in model.parameters())


def _make_step_fn(model: nn.Module, loss_fn: LossFn, loss_single: Callable[..., torch.Tensor], names: list[str],
                  shapes: list[torch.Size], sizes: list[int], frozen: dict[str, torch.Tensor],
                  buffers: dict[str, torch.Tensor], full_batch: bool) -> list[tuple[str, StepFn]]:
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
    in_dims = (0, None, None) if full_batch else (0, 0, 0)
    batched = torch.func.vmap(loss_single, in_dims=in_dims)
    loss_in_dims = (0, None) if full_batch else (0, 0)
    batched_loss = torch.func.vmap(loss_fn, in_dims=loss_in_dims)
    candidates: list[tuple[str, StepFn]] = []

    if _is_plain_mlp(model):
        act = model.act_fn
        has_bias = model.bias
        n_layers = len(model.layers)

        def step_mlp(theta: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            th = theta.detach().requires_grad_(True)
            C = th.shape[0]
            views, off = [], 0
            for shp, sz in zip(shapes, sizes):
                views.append(th[:, off : off + sz].view(C, *shp))
                off += sz
            h = xb
            for i in range(n_layers):
                W = views[i * (2 if has_bias else 1)]
                Wt = W.transpose(1, 2)
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

        candidates.append(("mlp", step_mlp))

    def step_vmap(theta: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        th = theta.detach().requires_grad_(True)
        losses = batched(th, xb, yb)
        (g,) = torch.autograd.grad(losses.sum(), th)
        return g, losses.detach()

    def step_loop(theta: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gs, ls = [], []
        for c in range(theta.shape[0]):
            th = theta[c].detach().requires_grad_(True)
            loss = loss_single(th, xb if full_batch else xb[c], yb if full_batch else yb[c])
            (g,) = torch.autograd.grad(loss, th)
            gs.append(g)
            ls.append(loss.detach())
        return torch.stack(gs), torch.stack(ls)

    candidates += [("vmap", step_vmap), ("loop", step_loop)]
    return candidates


def _pick_working(candidates: list[tuple[str, StepFn]], theta: torch.Tensor, xb: torch.Tensor,
                  yb: torch.Tensor) -> tuple[StepFn, str]:
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
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> LLCResult:
    r"""Estimate the local learning coefficient at the model's current parameters ``w*`` by SGLD.

    The estimator (Lau et al. 2023, Eq. 9) is ``λ̂(w*) = nβ (E_w[L_n(w)] - L_n(w*))`` where the
    expectation is over the localised tempered posterior ``∝ exp(-nβ L_n(w) - γ/2 |w - w*|²)``,
    sampled by SGLD (their Eq. 11, devinterp's update)::

        Δw_t = -(ε/2) (nβ ∇L_m(w_t) + γ (w_t - w*)) + N(0, ε I)

    with ``ε = lr``, ``γ = localization`` and ``L_m`` the mean loss of a minibatch of ``m``
    samples. ``E_w[L_n(w)]`` is estimated by the mean of the minibatch losses along the chains
    (an unbiased estimate of ``L_n(w_t)`` at each draw) and ``L_n(w*)`` exactly on all the data.

    All chains run at once: the parameters are a ``(num_chains, n_params)`` tensor and
    ``torch.func.vmap(grad_and_value(...))`` over ``functional_call`` gives every chain's
    loss and gradient in one batched call; each chain draws its own minibatches. Models whose
    forward cannot be vmapped (data-dependent Python control flow) fall back to a loop over
    chains with the same update and random streams.

    Args:
        model: the network at ``w*`` (left unchanged). Parameters with ``requires_grad=False``
            are held fixed; buffers are used as they are.
        loss_fn: ``loss_fn(model(x_batch), y_batch) -> scalar``, a *mean* over the batch
            (e.g. :func:`mechnb.train.mse_loss`, ``F.cross_entropy``).
        data: ``(inputs, targets)`` with a shared leading dimension ``n``.
        num_chains: number of SGLD chains ``C``.
        num_draws: draws recorded per chain.
        lr: SGLD step size ``ε``.
        localization: ``γ``, the strength of the pull towards ``w*``.
        nbeta: inverse temperature ``nβ``; default ``n / log n`` with ``n`` the number of
            samples (Lau et al.'s ``β* = 1/log n``; devinterp's default uses the batch size).
        batch_size: minibatch size ``m`` (default: all ``n`` samples, i.e. full-batch Langevin).
        num_burnin_steps: steps taken before the first draw (not recorded).
        num_steps_bw_draws: steps between two recorded draws.
        seed: seeds the minibatch order and the Langevin noise.
        device: where to sample (``"cpu"``, ``"cuda"``...).
        progress: show a ``tqdm`` bar.

    Returns:
        An :class:`LLCResult` with the mean, the std across chains and the per-chain loss traces.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable loss_fn(output, target) -> scalar, got {type(loss_fn).__name__}")
    x, y = _check_data(data)
    n = int(x.shape[0])
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
    dev = resolve_device(device)

    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model: expected at least one parameter with requires_grad=True, got none")
    frozen = {k: p.detach().to(dev) for k, p in model.named_parameters() if not p.requires_grad}
    buffers = {k: b.to(dev) for k, b in model.named_buffers()}
    names = [k for k, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    dtype = named[0][1].dtype
    w0 = torch.cat([p.detach().reshape(-1).to(dev, dtype) for _, p in named])  # (P,)
    x, y = x.to(dev), y.to(dev)

    was_training = model.training
    model.eval()
    try:

        def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
            out, off = {}, 0
            for k, shp, sz in zip(names, shapes, sizes):
                out[k] = flat[off : off + sz].view(shp)
                off += sz
            return out

        def loss_single(flat: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            params = {**unflatten(flat), **frozen, **buffers}
            return loss_fn(torch.func.functional_call(model, params, (xb,)), yb)

        init_loss = _full_loss(lambda xb, yb: loss_single(w0, xb, yb), x, y)
        if not math.isfinite(init_loss):
            raise ValueError(f"model: the loss at w* is {init_loss}; expected a finite value")

        full_batch = B == n
        step_fn = _make_step_fn(model, loss_fn, loss_single, names, shapes, sizes, frozen, buffers, full_batch)
        gen_idx = torch.Generator().manual_seed(int(seed))  # minibatch order (CPU, device independent)
        # One noise stream per parameter tensor, keyed by its name: adding, removing or reordering
        # other parameters leaves each parameter's Langevin noise unchanged.
        gen_noise = [torch.Generator(device=dev).manual_seed((int(seed) * 1_000_003 + zlib.crc32(k.encode())) % 2**63)
                     for k in names]

        def noise() -> torch.Tensor:
            parts = [torch.randn(C, sz, generator=g, device=dev, dtype=dtype) for g, sz in zip(gen_noise, sizes)]
            return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

        batches_per_epoch = n // B
        perms: torch.Tensor | None = None

        def get_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal perms
            if full_batch:
                return x, y
            j = step % batches_per_epoch
            if j == 0:
                perms = torch.argsort(torch.rand(C, n, generator=gen_idx), dim=1).to(dev)
            idx = perms[:, j * B : (j + 1) * B]  # (C, B)
            return x[idx], y[idx]

        theta = w0.unsqueeze(0).repeat(C, 1)  # (C, P)
        if full_batch:
            xb0, yb0 = x, y
        else:
            xb0, yb0 = x[:B].unsqueeze(0).expand(C, *x[:B].shape), y[:B].unsqueeze(0).expand(C, *y[:B].shape)
        step_fn, mode = _pick_working(step_fn, theta, xb0, yb0)
        total = burn + D * every
        trace = torch.empty(C, D, dtype=torch.float64, device=dev)
        half_eps, sqrt_eps = 0.5 * eps, math.sqrt(eps)
        t0 = time.perf_counter()
        draw = 0
        for step in tqdm(range(total), desc="SGLD", disable=not progress, leave=False):
            xb, yb = get_batch(step)
            grads, losses = step_fn(theta, xb, yb)
            if step >= burn and (step - burn + 1) % every == 0:
                trace[:, draw] = losses.detach().to(torch.float64)
                draw += 1
            drift = grads.mul_(nb)
            if gamma:
                drift.add_(theta - w0, alpha=gamma)
            theta.add_(drift, alpha=-half_eps)
            theta.add_(noise(), alpha=sqrt_eps)
            if step % 100 == 99 and not bool(torch.isfinite(theta).all()):
                trace[:, draw:] = float("nan")  # diverged: stop early, reported below
                break
        seconds = time.perf_counter() - t0
    finally:
        model.train(was_training)

    trace_np = trace.cpu().numpy()
    if not np.isfinite(trace_np).all():
        bad = int((~np.isfinite(trace_np)).any(axis=1).sum())
        raise FloatingPointError(f"estimate_llc: the loss diverged in {bad} of {C} chains; lower lr "
                                 f"(got {eps:g}) or raise localization (got {gamma:g})")
    per_chain = nb * (trace_np.mean(axis=1) - init_loss)
    return LLCResult(
        mean=float(per_chain.mean()),
        std=float(per_chain.std(ddof=1)) if C > 1 else 0.0,
        llc_per_chain=per_chain,
        loss_trace=trace_np,
        init_loss=float(init_loss),
        nbeta=float(nb),
        config=dict(num_chains=C, num_draws=D, lr=eps, localization=gamma, batch_size=B,
                    num_burnin_steps=burn, num_steps_bw_draws=every, seed=int(seed), n=n,
                    mode=mode),
        seconds=seconds,
    )
