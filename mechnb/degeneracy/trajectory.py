"""The LLC over training: one sampler setting at every checkpoint, all checkpoints' chains together.

Developmental interpretability (Hoogland et al. 2024, *The developmental landscape of in-context
learning*, arXiv 2402.02364, Sec. 3; Wang et al. 2024, *Differentiation and specialization of
attention heads via the refined local learning coefficient*, arXiv 2410.02984) reads a training
run through the local learning coefficient ``λ̂(w_t)`` at its checkpoints: plateaus of the loss
whose LLC steps up are developmental stages. :func:`llc_trajectory` estimates it at ``K``
checkpoints with the *same* settings and seed, running the ``K · C`` chains as one batch (each
chain localised at its own checkpoint), so ``K`` estimates cost about one batched run instead of
``K`` separate ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mechnb._torch import eval_mode
from mechnb.degeneracy.llc import (
    _check_data,
    _check_loss_is_mean,
    _check_model,
    _check_settings,
    _describe_restrict,
    _full_loss,
    _llc_per_chain,
    _sample,
)
from mechnb.degeneracy.samplers import FlatParams, restriction_mask
from mechnb.io import saveable
from mechnb._checks import check_positive_int, resolve_device

__all__ = ["LLCTrajectory", "llc_trajectory", "checkpoint_states"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@saveable()
@dataclass
class LLCTrajectory:
    """Output of :func:`llc_trajectory`: the LLC at ``K`` checkpoints with ``C`` chains each.

    Attributes:
        steps: ``(K,)`` training step of each checkpoint (its index when unknown).
        mean, std: ``(K,)`` the estimate and the std over chains at each checkpoint.
        llc_per_chain: ``(K, C)``.
        init_loss: ``(K,)`` ``L_n(w_k)``, the full-data loss at each checkpoint.
        acceptance: ``(K, C)`` SGLD's mean MALA acceptance, or ``None`` (SGNHT).
        loss_trace: ``(K, C, D)`` the minibatch losses of every chain.
        nbeta: the inverse temperature used.
        config: the sampler settings (as :attr:`LLCResult.config`) plus ``batches``, the number of
            batched runs the ``K`` checkpoints took.
        seconds: wall time of the sampling.
    """

    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    llc_per_chain: np.ndarray
    init_loss: np.ndarray
    acceptance: np.ndarray | None
    loss_trace: np.ndarray
    nbeta: float
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __repr__(self) -> str:
        return (f"LLCTrajectory(checkpoints={len(self.steps)}, chains={self.llc_per_chain.shape[1]}, "
                f"mean={np.array2string(self.mean, precision=3, max_line_width=120)})")


def checkpoint_states(checkpoints: Any, model: nn.Module | None) -> tuple[nn.Module, list[dict[str, torch.Tensor]], np.ndarray]:
    """Normalise ``checkpoints`` to ``(template model, [state_dict, ...], steps (K,))``.

    Accepted: a sequence of ``nn.Module`` (same architecture), of ``state_dict``s (then ``model``
    is the architecture), or of :attr:`mechnb.train.TrainResult.checkpoints` records
    ``{"step": s, "state": state_dict}``; or a ``TrainResult`` itself.
    """
    if hasattr(checkpoints, "checkpoints") and not isinstance(checkpoints, (list, tuple)):
        checkpoints = checkpoints.checkpoints
    if isinstance(checkpoints, (str, bytes)) or not isinstance(checkpoints, Sequence) or len(checkpoints) == 0:
        raise ValueError(f"checkpoints: expected a non-empty sequence of models, state dicts or "
                         f"{{'step', 'state'}} records, got {type(checkpoints).__name__}"
                         + (" of length 0" if isinstance(checkpoints, Sequence) else ""))
    states, steps = [], []
    for i, c in enumerate(checkpoints):
        if isinstance(c, nn.Module):
            states.append(dict(c.state_dict()))
            steps.append(i)
            if model is None:
                model = c
        elif isinstance(c, Mapping) and "state" in c and isinstance(c["state"], Mapping):
            states.append(dict(c["state"]))
            steps.append(int(c.get("step", i)))
        elif isinstance(c, Mapping) and all(isinstance(v, torch.Tensor) for v in c.values()):
            states.append(dict(c))
            steps.append(i)
        else:
            raise TypeError(f"checkpoints[{i}]: expected an nn.Module, a state dict or a {{'step', 'state'}} record, "
                            f"got {type(c).__name__}")
    if model is None:
        raise ValueError("model: expected the architecture (an nn.Module) when checkpoints are state dicts, got None")
    return model, states, np.asarray(steps, dtype=np.int64)


def _centre_of(flat: FlatParams, state: Mapping[str, torch.Tensor], i: int) -> torch.Tensor:
    parts = []
    for k, shp in zip(flat.names, flat.shapes):
        if k not in state:
            raise ValueError(f"checkpoints[{i}]: missing parameter {k!r}")
        t = state[k]
        if tuple(t.shape) != tuple(shp):
            raise ValueError(f"checkpoints[{i}]: parameter {k!r} has shape {tuple(t.shape)}, expected {tuple(shp)}")
        parts.append(t.detach().reshape(-1).to(flat.w0.device, flat.w0.dtype))
    return torch.cat(parts)


def llc_trajectory(
    checkpoints: Any,
    loss_fn: LossFn,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    model: nn.Module | None = None,
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
    max_batched_chains: int = 2048,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> LLCTrajectory:
    """The LLC (:func:`~mechnb.degeneracy.estimate_llc`) at every checkpoint with one sampler setting.

    Each checkpoint ``w_k`` is the centre of its own ``num_chains`` chains; the chains of up to
    ``max_batched_chains // num_chains`` checkpoints run as one batch (one batched forward /
    backward per step for all of them). Chain ``c`` of every checkpoint uses the same minibatch
    order and noise stream as ``estimate_llc(..., seed=seed)`` would only when one checkpoint is
    run; with several, the streams are those of a ``K C``-chain run (independent per chain).
    Buffers and frozen parameters come from the template model.

    Args:
        checkpoints: models, state dicts or ``TrainResult.checkpoints`` records (see
            :func:`checkpoint_states`), or a ``TrainResult``.
        loss_fn, data: as in :func:`~mechnb.degeneracy.estimate_llc` (``loss_fn`` a mean).
        model: the architecture when ``checkpoints`` are state dicts (left unchanged).
        num_chains, num_draws, lr, localization, nbeta, batch_size, num_burnin_steps,
            num_steps_bw_draws, seed, sampler, diffusion, restrict, device, progress: as in
            :func:`~mechnb.degeneracy.estimate_llc`.
        max_batched_chains: the most chains run in one batch (memory: about ``3 ×
            max_batched_chains × n_params`` numbers plus the batched activations).

    Returns:
        An :class:`LLCTrajectory`.
    """
    model, states, steps = checkpoint_states(checkpoints, model)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable loss_fn(output, target) -> scalar, got {type(loss_fn).__name__}")
    _check_model(model)
    x, y = _check_data(data)
    s = _check_settings(int(x.shape[0]), num_chains, num_draws, lr, localization, nbeta, batch_size,
                        num_burnin_steps, num_steps_bw_draws, seed, sampler, diffusion)
    cap = check_positive_int("max_batched_chains", max_batched_chains)
    dev = resolve_device(device)
    flat = FlatParams.of(model, dev)
    mask = restriction_mask(flat, restrict)
    x, y = x.to(dev), y.to(dev)
    centres = torch.stack([_centre_of(flat, st, i) for i, st in enumerate(states)])  # (K, P)
    K = centres.shape[0]
    per_batch = max(1, cap // s.num_chains)

    traces, accs, init_losses, modes = [], [], [], set()
    seconds = 0.0
    t_all = time.perf_counter()
    with eval_mode(model):
        _check_loss_is_mean(model, loss_fn, x, y)
        loss_single = flat.loss_of(model, loss_fn)
        for k in range(K):
            L0 = _full_loss(lambda xb, yb: loss_single(centres[k], xb, yb), x, y)
            if not math.isfinite(L0):
                raise ValueError(f"checkpoints[{k}]: the loss at the checkpoint is {L0}; expected a finite value")
            init_losses.append(L0)
        for start in range(0, K, per_batch):
            block = centres[start : start + per_batch]
            trace, _, acc, mode, sec = _sample(model, loss_fn, x, y, flat, block, s, mask, progress)
            traces.append(trace)
            accs.append(acc)
            modes.add(mode)
            seconds += sec
    trace = np.concatenate(traces)  # (K C, D)
    L0 = np.repeat(np.asarray(init_losses), s.num_chains)
    per_chain = _llc_per_chain(trace, L0, s).reshape(K, s.num_chains)
    acc = None if any(a is None for a in accs) else np.concatenate(accs).reshape(K, s.num_chains)
    cfg = s.config("/".join(sorted(modes)))
    cfg.update(batches=len(traces), num_sampled=int(flat.w0.numel() if mask is None else mask.sum()),
               restrict=None if mask is None else _describe_restrict(restrict),
               total_seconds=time.perf_counter() - t_all)
    return LLCTrajectory(
        steps=steps,
        mean=per_chain.mean(1),
        std=per_chain.std(1, ddof=1) if s.num_chains > 1 else np.zeros(K),
        llc_per_chain=per_chain,
        init_loss=np.asarray(init_losses),
        acceptance=acc,
        loss_trace=trace.reshape(K, s.num_chains, -1),
        nbeta=float(s.nbeta),
        config=cfg,
        seconds=seconds,
    )
