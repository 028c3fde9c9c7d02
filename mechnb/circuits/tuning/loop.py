"""The tuning loop every method shares (:func:`run_strategy`), and its two entry points:
:func:`circuit_tune` (Li, Yuan & Wang 2025, Alg. 1) and the baselines :func:`finetune`."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn
from tqdm.auto import tqdm

from mechnb._checks import check_choice, resolve_device
from mechnb._torch import eval_mode
from mechnb.circuits.tuning.config import TuneConfig, TuneResult, _check_inputs, _check_task
from mechnb.circuits.tuning.strategies import (
    CircuitTuning,
    FullTuning,
    LoRATuning,
    NodeTuning,
    RandomSelectionTuning,
    TuningStrategy,
)
from mechnb.circuits.tuning_tasks import TrainBatch, TuneTask
from mechnb.models import TinyTransformer

__all__ = ["run_strategy", "circuit_tune", "finetune"]


def _evaluate(model: nn.Module, task: TuneTask) -> dict[str, float]:
    """The task metrics and the held-out losses of ``model``, in eval mode without gradients."""
    with eval_mode(model), torch.no_grad():
        return {**task.evaluate(model), **task.general(model)}


def _log_record(strategy: TuningStrategy, task: TuneTask, step: int) -> dict[str, float]:
    """One row of :attr:`TuneResult.log`: the step, task metrics, held-out losses, trainable fraction."""
    return {"step": step, **_evaluate(strategy.eval_model(), task), "trainable_fraction": strategy.trainable_fraction(),
            **strategy.log_extra()}


def _frozen_loss(strategy: TuningStrategy, task: TuneTask, batch: TrainBatch) -> float:
    """The loss of a step where nothing can move (an empty circuit): no backward pass."""
    with torch.no_grad():
        return float(task.loss(strategy.forward(batch.tokens[:, :-1]), batch))


def _tuning_step(strategy: TuningStrategy, opt: torch.optim.Optimizer, task: TuneTask, batch: TrainBatch,
                 step: int) -> float:
    """One constrained optimiser step on ``batch``; returns its loss."""
    loss = task.loss(strategy.forward(batch.tokens[:, :-1]), batch)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{strategy.mode}-tune: loss became {float(loss)} at step {step}; lower config.lr")
    opt.zero_grad(set_to_none=False)
    loss.backward()
    strategy.after_backward()
    if strategy.optim.grad_clip is not None:
        clip = strategy.clip_parameters()
        if clip:
            nn.utils.clip_grad_norm_(clip, strategy.optim.grad_clip)
    opt.step()
    strategy.after_step(opt)
    return float(loss.detach())


def run_strategy(
    strategy: TuningStrategy, task: TuneTask, *, progress: bool = True,
    callback: Callable[[int, TinyTransformer, dict[str, torch.Tensor] | None], None] | None = None,
) -> TuneResult:
    """Tune ``strategy.model`` on ``task`` for ``config.steps`` steps (the loop every method shares).

    Each step samples a training batch from the task's seeded stream, hands it to
    ``strategy.before_step`` (circuit-tuning may re-discover its circuit on it), takes one step of
    ``strategy`` (or only evaluates the loss when nothing can move) and, every ``log_every``
    steps and at 0 and the end, logs the task metrics, held-out losses and trainable fraction.
    ``callback(step, model, masks)`` runs after every step. ``result.model`` is left to the caller
    (``strategy.finish()``). This is stage 2 of Li et al. 2025, Alg. 1, for every method alike.
    """
    if not isinstance(strategy, TuningStrategy):
        raise TypeError(f"strategy: expected a TuningStrategy (e.g. CircuitTuning), got {type(strategy).__name__}")
    _check_task(task)
    cfg, model = strategy.config, strategy.model
    result = TuneResult(strategy.mode, task.name, task.primary, {**cfg.to_dict(), **asdict(strategy.optim)})
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = strategy.make_optimizer()
    device = next(model.parameters()).device
    with strategy.running():
        model.train()
        bar = tqdm(range(cfg.steps), desc=f"{strategy.mode}-tune {task.name}", disable=not progress, leave=False)
        for step in bar:
            batch = task.sample(step, gen, cfg.batch_size).to(device)
            strategy.before_step(step, batch)
            if step == 0:
                result.log.append(_log_record(strategy, task, 0))
            if strategy.can_move():
                result.losses.append(_tuning_step(strategy, opt, task, batch, step))
            else:
                result.losses.append(_frozen_loss(strategy, task, batch))
            if callback is not None:
                callback(step, model, strategy.masks)
            if (step + 1) % cfg.log_every == 0 or step == cfg.steps - 1:
                result.log.append(_log_record(strategy, task, step + 1))
                if progress:
                    bar.set_postfix({task.primary: f"{result.log[-1][task.primary]:.3g}"})
        model.eval()
    return result


_BASELINES: dict[str, type[FullTuning] | type[LoRATuning]] = {"full": FullTuning, "nodes": NodeTuning,
                                                               "lora": LoRATuning}


def _prepare(model: TinyTransformer, task: TuneTask, config: TuneConfig | None, inplace: bool,
             device: str | torch.device | None, mode: str | None = None) -> tuple[TinyTransformer, TuneConfig]:
    """Check the inputs (and the baseline ``mode``); the model to tune (a copy unless ``inplace``,
    on ``device``) and the config (default :class:`TuneConfig`)."""
    config = config or TuneConfig()
    _check_inputs(model, task, config)
    if mode is not None:
        check_choice("mode", mode, list(_BASELINES))
    if not inplace:
        model = copy.deepcopy(model)
    if device is not None:
        model.to(resolve_device(device))
    return model, config


def circuit_tune(
    model: TinyTransformer,
    task: TuneTask,
    config: TuneConfig | None = None,
    *,
    inplace: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
    callback: Callable[[int, TinyTransformer, dict[str, torch.Tensor] | None], None] | None = None,
) -> TuneResult:
    """Circuit-tuning (Li et al. 2025, Alg. 1): every ``discover_every`` steps find the top-``top_n``
    circuit of ``task`` and train only the parameters its nodes own (:func:`parameter_mask`).

    ``config`` selects the options of the authors' code (discovery on the training batch, a
    circuit-size schedule, smoothed edge scores; :class:`TuneConfig`) and, with
    ``selection="random"``, the random-parameter baseline (:class:`RandomSelectionTuning`).

    Args:
        model: the model to tune (copied unless ``inplace``).
        task: a :class:`TuneTask` (:func:`~mechnb.circuits.tuning_tasks.disagreement_task`, ...).
        config: a :class:`TuneConfig`.
        callback: ``callback(step, model, masks)`` after every optimiser step (``masks`` is the
            parameter mask used at that step) - e.g. to check that nothing outside moved.

    Returns:
        :class:`TuneResult` with the task metrics, held-out losses, circuit sizes and trainable
        fraction per logged step, and every discovered circuit (see :class:`CircuitTuning`).
    """
    model, config = _prepare(model, task, config, inplace, device)
    strategy = (RandomSelectionTuning if config.selection == "random" else CircuitTuning)(model, task, config)
    res = run_strategy(strategy, task, progress=progress, callback=callback)
    res.circuits, res.circuit_scores, res.model = strategy.circuits, strategy.scores, strategy.finish()
    return res


def finetune(
    model: TinyTransformer,
    task: TuneTask,
    mode: str = "full",
    config: TuneConfig | None = None,
    *,
    inplace: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> TuneResult:
    """Baselines with the same loop and logging as :func:`circuit_tune`.

    ``mode="full"``: every parameter (:class:`FullTuning`); ``"nodes"``: every parameter a node
    owns (:class:`NodeTuning`, :func:`node_parameter_mask` - equal to circuit-tuning with a
    circuit of every edge); ``"lora"``: rank-``config.lora_rank`` adapters on all attention and
    MLP weights (:class:`LoRATuning`; merged into the returned model at the end,
    ``trainable_fraction`` = adapter size / model size).
    """
    model, config = _prepare(model, task, config, inplace, device, mode)
    strategy = _BASELINES[mode](model, config)
    res = run_strategy(strategy, task, progress=progress)
    res.model = strategy.finish()
    return res
