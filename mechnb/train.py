"""One seeded training loop for every mechnb model.

``train(model, batch_fn, loss_fn, config)`` draws a batch with ``batch_fn(step, generator)``,
computes ``loss_fn(model, batch)`` and steps an optimiser, with a ``tqdm.auto`` progress bar
and a returned loss history. The zoo recipes (:mod:`mechnb.zoo`) and the notebooks' own
small experiments all go through it, so "the same seed gives the same model" holds everywhere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from mechnb._checks import check_choice, check_positive_float, check_positive_int, resolve_device

__all__ = ["TrainConfig", "TrainResult", "train", "make_optimizer", "seed_everything", "mse_loss", "cross_entropy_loss"]


@dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes:
        steps: number of optimiser steps.
        lr: peak learning rate.
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"`` (with ``momentum``).
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        l1: coefficient of an L1 penalty on every weight matrix (``ndim >= 2``), added to the loss.
        schedule: ``"constant"``, ``"cosine"`` (to 0), ``"linear"`` (to 0), or ``"wsd"``
            (warmup-stable-decay: constant, then linear to 0 over the last ``decay_frac`` of steps),
            after ``warmup_steps``.
        decay_frac: the fraction of steps that ``"wsd"`` spends decaying.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        seed: seeds the parameter init (if the caller re-inits) and the batch generator.
        log_every: record ``eval_fn`` every this many steps (and at the end).
    """

    steps: int = 1000
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    l1: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_frac: float = 0.2
    grad_clip: float | None = None
    seed: int = 0
    log_every: int = 100

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_float("lr", self.lr)
        check_choice("optimizer", self.optimizer, ["adamw", "adam", "sgd"])
        check_positive_float("weight_decay", self.weight_decay, allow_zero=True)
        check_positive_float("l1", self.l1, allow_zero=True)
        check_choice("schedule", self.schedule, ["constant", "cosine", "linear", "wsd"])
        if not 0 < self.decay_frac <= 1:
            raise ValueError(f"decay_frac: expected a fraction in (0, 1], got {self.decay_frac!r}")
        check_positive_int("warmup_steps", self.warmup_steps, minimum=0)
        check_positive_int("log_every", self.log_every)
        if self.grad_clip is not None:
            check_positive_float("grad_clip", self.grad_clip)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """Loss per step, the ``eval_fn`` records ``[{"step": s, **metrics}, ...]`` and wall time."""

    losses: list[float]
    evals: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final_loss(self) -> float:
        """Mean loss over the last 1% of steps (at least one step) - less noisy than the last."""
        k = max(1, len(self.losses) // 100)
        return float(sum(self.losses[-k:]) / k)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG and return a fresh ``torch.Generator`` seeded with ``seed``."""
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


def make_optimizer(params: list[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` (``"adamw"``, ``"adam"`` or ``"sgd"``) over ``params``.

    ``cfg`` is any config with the fields ``optimizer``, ``lr``, ``weight_decay``, ``betas`` and
    ``momentum`` (:class:`TrainConfig`, :class:`mechnb.circuits.TuneConfig`).
    """
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


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

    Returns:
        A :class:`TrainResult`. A non-finite loss raises ``FloatingPointError`` naming the step.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    dev = resolve_device(device)
    model.to(dev)
    gen = torch.Generator().manual_seed(config.seed)
    param_list = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not param_list:
        raise ValueError("params: expected at least one parameter that requires grad, got none")
    opt = make_optimizer(param_list, config)
    l1_params = [p for p in param_list if p.ndim >= 2] if config.l1 > 0 else []
    losses: list[float] = []
    evals: list[dict[str, float]] = []
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(range(config.steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = config.lr * _lr_factor(step, config)
        batch = batch_fn(step, gen)
        loss = loss_fn(model, batch)
        if l1_params:
            loss = loss + config.l1 * sum(p.abs().sum() for p in l1_params)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train: loss became {loss.item()} at step {step}; lower config.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(param_list, config.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        last = step == config.steps - 1
        if eval_fn is not None and ((step + 1) % config.log_every == 0 or last):
            model.eval()
            with torch.no_grad():
                rec = {"step": step + 1, **{k: float(v) for k, v in eval_fn(model).items()}}
            model.train()
            evals.append(rec)
            if progress:
                bar.set_postfix({k: f"{v:.3g}" for k, v in rec.items() if k != "step"})
        elif progress and step % 50 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3g}")
    model.eval()
    return TrainResult(losses=losses, evals=evals, seconds=time.perf_counter() - t0)
