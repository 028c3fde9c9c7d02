"""One seeded training loop for every mechnb model.

``train(model, batch_fn, loss_fn, config)`` draws a batch with ``batch_fn(step, generator)``,
computes ``loss_fn(model, batch)`` and steps an optimiser, with a ``tqdm.auto`` progress bar
and a returned loss history. The zoo recipes (:mod:`mechnb.zoo`) and the notebooks' own
small experiments all go through it, so "the same seed gives the same model" holds everywhere.

:class:`OptimConfig` is the one optimiser config (name, learning rate, weight decay, momentum,
betas, gradient clipping): :class:`TrainConfig` embeds it as ``optim``, and so does the
circuit-tuning config :class:`mechnb.circuits.TuneConfig`; :func:`make_optimizer` builds the
optimiser from it. Both configs also accept its fields as flat keywords (``TrainConfig(lr=1e-2)``).
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from mechnb._checks import (
    check_choice, check_materialized, check_positive_float, check_positive_int, check_seed, resolve_device,
)
from mechnb._torch import eval_mode

__all__ = [
    "OptimConfig", "OPTIM_FIELDS", "OptimFields", "accepts_optim_keywords", "TrainConfig", "TrainResult", "train",
    "make_optimizer", "seed_everything", "mse_loss", "cross_entropy_loss",
]


@dataclass(frozen=True)
class OptimConfig:
    """Which optimiser steps the parameters, and how: the one optimiser config of mechnb.

    Embedded as ``optim`` in :class:`TrainConfig` and :class:`mechnb.circuits.TuneConfig`, and read
    by :func:`make_optimizer`. Frozen, so one instance can be shared by many configs; derive a
    variant with ``dataclasses.replace(optim, lr=...)``.

    Attributes:
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"`` (with ``momentum``).
        lr: (peak) learning rate.
        weight_decay: decoupled weight decay (AdamW) or L2 (Adam, SGD).
        momentum: SGD momentum (ignored by Adam/AdamW).
        betas: Adam/AdamW moment decay rates ``(beta1, beta2)`` (ignored by SGD).
        grad_clip: clip the global norm of the trained parameters' gradient to this value
            before each step (``None``: no clipping).
    """

    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, ["adamw", "adam", "sgd"])
        check_positive_float("lr", self.lr)
        check_positive_float("weight_decay", self.weight_decay, allow_zero=True)
        check_positive_float("momentum", self.momentum, allow_zero=True)
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else None
        if betas is None or len(betas) != 2 or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", betas)
        if self.grad_clip is not None:
            check_positive_float("grad_clip", self.grad_clip)


OPTIM_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(OptimConfig))
"""The field names of :class:`OptimConfig` - the flat keywords a config with an ``optim`` accepts."""


class OptimFields:
    """Mixin for a config dataclass with an ``optim: OptimConfig`` field.

    Reads the optimiser settings through to ``optim`` (``cfg.lr`` is ``cfg.optim.lr``) and
    flattens :meth:`to_dict`, so ``type(cfg)(**cfg.to_dict()) == cfg``. Combine with
    :func:`accepts_optim_keywords` so that the flat keywords are accepted on construction too.
    """

    optim: OptimConfig

    @property
    def optimizer(self) -> str:
        return self.optim.optimizer

    @property
    def lr(self) -> float:
        return self.optim.lr

    @property
    def weight_decay(self) -> float:
        return self.optim.weight_decay

    @property
    def momentum(self) -> float:
        return self.optim.momentum

    @property
    def betas(self) -> tuple[float, float]:
        return self.optim.betas

    @property
    def grad_clip(self) -> float | None:
        return self.optim.grad_clip

    def to_dict(self) -> dict[str, Any]:
        """Every setting as one flat dict: the :class:`OptimConfig` fields, then the config's own."""
        own = asdict(self)  # type: ignore[call-overload]
        return {**own.pop("optim"), **own}


_C = TypeVar("_C", bound=type)


def accepts_optim_keywords(cls: _C) -> _C:
    """Class decorator (after ``@dataclass``): ``cls(lr=..., optimizer=..., ...)`` fills ``optim``.

    The flat keywords (:data:`OPTIM_FIELDS`) override the fields of ``optim`` (or of the
    dataclass's default ``optim`` when it is not given), so ``TrainConfig(lr=1e-2)`` and
    ``TrainConfig(optim=OptimConfig(lr=1e-2))`` are the same config.
    """
    init = cls.__init__
    default = next(f.default for f in fields(cls) if f.name == "optim")

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, optim: OptimConfig | None = None, **kwargs: Any) -> None:
        base = default if optim is None else optim
        if not isinstance(base, OptimConfig):
            raise TypeError(f"optim: expected an OptimConfig, got {type(base).__name__}")
        flat = {k: kwargs.pop(k) for k in OPTIM_FIELDS if k in kwargs}
        init(self, *args, optim=replace(base, **flat) if flat else base, **kwargs)

    sig = inspect.signature(init)
    flat_params = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=getattr(default, k))
                   for k in OPTIM_FIELDS]
    new_sig = sig.replace(parameters=[*sig.parameters.values(), *flat_params])
    __init__.__signature__ = new_sig  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]
    return cls


@accepts_optim_keywords
@dataclass
class TrainConfig(OptimFields):
    """Settings of :func:`train`: the optimiser (``optim``), the schedule, the penalty, the seed.

    ``TrainConfig(steps=..., lr=..., optimizer=...)`` - the :class:`OptimConfig` fields are
    accepted as flat keywords and read back as attributes (``cfg.lr``); ``to_dict`` is flat.

    Attributes:
        steps: number of optimiser steps.
        optim: the :class:`OptimConfig` (default AdamW, ``lr=1e-3``, no clipping).
        l1: coefficient of an L1 penalty on every weight matrix (``ndim >= 2``), added to the loss.
        schedule: ``"constant"``, ``"cosine"`` (to 0), ``"linear"`` (to 0), or ``"wsd"``
            (warmup-stable-decay: constant, then linear to 0 over the last ``decay_frac`` of steps),
            after ``warmup_steps``; it scales ``optim.lr`` at every step.
        decay_frac: the fraction of steps that ``"wsd"`` spends decaying.
        seed: seeds the parameter init (if the caller re-inits) and the batch generator.
        log_every: record ``eval_fn`` every this many steps (and at the end).
    """

    steps: int = 1000
    optim: OptimConfig = OptimConfig()
    l1: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_frac: float = 0.2
    seed: int = 0
    log_every: int = 100

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_float("l1", self.l1, allow_zero=True)
        check_choice("schedule", self.schedule, ["constant", "cosine", "linear", "wsd"])
        check_positive_float("decay_frac", self.decay_frac)
        if not 0 < self.decay_frac <= 1:
            raise ValueError(f"decay_frac: expected a fraction in (0, 1], got {self.decay_frac!r}")
        check_positive_int("warmup_steps", self.warmup_steps, minimum=0)
        check_seed("seed", self.seed)
        check_positive_int("log_every", self.log_every)


@dataclass
class TrainResult:
    """Loss per step, the ``eval_fn`` records ``[{"step": s, **metrics}, ...]`` and wall time."""

    losses: list[float]
    evals: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    """With ``train(..., checkpoint_every=k)``: ``[{"step": s, "state": {name: tensor}}, ...]``, the
    trainable parameters and buffers (detached CPU copies) before training (``s = 0``), after every
    ``k``-th step and after the last one; plain dicts of tensors, so any result that holds them
    is saveable with :func:`mechnb.io.save`."""

    @property
    def final_loss(self) -> float:
        """Mean loss over the last 1% of steps (at least one step) - less noisy than the last."""
        k = max(1, len(self.losses) // 100)
        return float(sum(self.losses[-k:]) / k)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG and return a fresh ``torch.Generator`` seeded with ``seed``."""
    seed = check_seed("seed", seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def mse_loss(pred: torch.Tensor, target: torch.Tensor, importance: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over batch and features, optionally importance-weighted.

    Equals ``((pred - target)**2 * importance).mean()``; ``importance`` broadcasts over the batch.
    """
    err = (pred - target) ** 2
    if importance is not None:
        err = err * importance
    return err.mean()


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy over the last dimension for any leading shape."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                       ignore_index=ignore_index)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * frac))
    if cfg.schedule == "wsd":
        return min(1.0, (1.0 - frac) / cfg.decay_frac)
    return 1.0 - frac


def make_optimizer(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` (``"adamw"``, ``"adam"`` or ``"sgd"``) over ``params``.

    ``cfg`` is an :class:`OptimConfig` (``TrainConfig.optim``, ``TuneConfig.optim``);
    ``cfg.grad_clip`` is applied by the training loop, not by the optimiser.
    """
    if not isinstance(cfg, OptimConfig):
        raise TypeError(f"cfg: expected an OptimConfig (e.g. config.optim), got {type(cfg).__name__}")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _penalised_loss(model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor], batch: Any,
                    l1_params: list[nn.Parameter], l1: float, step: int) -> torch.Tensor:
    """``loss_fn(model, batch) + l1 * sum |W|`` over ``l1_params``.

    ``loss_fn`` must return a scalar tensor that depends on the trained parameters (``TypeError``
    / ``ValueError`` naming ``loss_fn`` otherwise); a non-finite value raises ``FloatingPointError``
    naming ``step`` and, at step 0 (before any update), pointing at the model and the batch
    rather than at the learning rate.
    """
    loss = loss_fn(model, batch)
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn: expected it to return a scalar torch.Tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"loss_fn: expected it to return a scalar tensor (e.g. the .mean() of per-example "
                         f"losses), got shape {tuple(loss.shape)}")
    if loss.is_complex() or not loss.is_floating_point():
        raise TypeError(f"loss_fn: expected a real floating-point loss, got dtype {loss.dtype}")
    if not loss.requires_grad:
        raise ValueError("loss_fn: the returned loss does not depend on the trained parameters (requires_grad is "
                         "False); compute it from model(...) without torch.no_grad() or .detach()")
    loss = loss.reshape(())
    if l1_params:
        loss = loss + l1 * sum(p.abs().sum() for p in l1_params)
    if not torch.isfinite(loss):
        if step == 0:
            raise FloatingPointError(f"train: loss is {loss.item()} at step 0, before any optimiser step: check the "
                                     f"model's parameters and the batch (batch_fn) for NaN, inf or huge values")
        raise FloatingPointError(f"train: loss became {loss.item()} at step {step}; lower config.lr")
    return loss


def _optimiser_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list[nn.Parameter],
                    grad_clip: float | None) -> None:
    """Backpropagate ``loss``, clip the global gradient norm of ``params`` to ``grad_clip``, step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()


def _eval_record(model: nn.Module, eval_fn: Callable[[nn.Module], dict[str, float]], step: int) -> dict[str, float]:
    """``{"step": step, **eval_fn(model)}`` in eval mode without gradients (the caller's mode restored)."""
    with eval_mode(model), torch.no_grad():
        return {"step": step, **{k: float(v) for k, v in eval_fn(model).items()}}


def train(
    model: nn.Module,
    batch_fn: Callable[[int, torch.Generator], Any],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    config: TrainConfig,
    *,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    params: Iterable[nn.Parameter] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "train",
    checkpoint_every: int | None = None,
) -> TrainResult:
    """Train ``model`` in place.

    Args:
        model: the module to train (moved to ``device``).
        batch_fn: ``batch_fn(step, generator) -> batch``; ``generator`` is a CPU
            ``torch.Generator`` seeded with ``config.seed`` (draw random data from it, then
            move to the device) so the data stream is reproducible.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
        config: a :class:`TrainConfig`.
        eval_fn: called under ``torch.no_grad`` every ``config.log_every`` steps and at the end;
            returns a dict of floats stored in ``TrainResult.evals``.
        params: the parameters to optimise (default: all that require grad).
        progress: show a ``tqdm.auto`` progress bar.
        checkpoint_every: keep a copy of the model's ``state_dict`` at step 0, every
            ``checkpoint_every`` steps and at the end, in :attr:`TrainResult.checkpoints` (memory:
            one copy of the parameters per checkpoint); ``None`` keeps none.

    Returns:
        A :class:`TrainResult`. A non-finite loss raises ``FloatingPointError`` naming the step.
        The model is trained in train mode and handed back in the mode the caller gave it
        (also when training raises).
    """
    check_materialized(model, "model")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    model.to(resolve_device(device))
    gen = torch.Generator().manual_seed(config.seed)
    param_list = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not param_list:
        raise ValueError("params: expected at least one parameter that requires grad, got none")
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every: expected None or a positive int, got {checkpoint_every!r}")
    checkpoints: list[dict[str, Any]] = []

    def keep(step: int) -> None:
        checkpoints.append({"step": step, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}})

    opt = make_optimizer(param_list, config.optim)
    l1_params = [p for p in param_list if p.ndim >= 2] if config.l1 > 0 else []
    losses: list[float] = []
    evals: list[dict[str, float]] = []
    t0 = time.perf_counter()
    was_training = model.training
    model.train()
    bar = tqdm(range(config.steps), desc=desc, disable=not progress, leave=False)
    if checkpoint_every is not None:
        keep(0)
    try:
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = config.optim.lr * _lr_factor(step, config)
            loss = _penalised_loss(model, loss_fn, batch_fn(step, gen), l1_params, config.l1, step)
            _optimiser_step(opt, loss, param_list, config.optim.grad_clip)
            losses.append(float(loss.detach()))
            if eval_fn is not None and ((step + 1) % config.log_every == 0 or step == config.steps - 1):
                evals.append(_eval_record(model, eval_fn, step + 1))
                if progress:
                    bar.set_postfix({k: f"{v:.3g}" for k, v in evals[-1].items() if k != "step"})
            elif progress and step % 50 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.3g}")
            if checkpoint_every is not None and ((step + 1) % checkpoint_every == 0 or step == config.steps - 1):
                keep(step + 1)
    finally:
        bar.close()
        model.train(was_training)
    return TrainResult(losses=losses, evals=evals, seconds=time.perf_counter() - t0, checkpoints=checkpoints)
