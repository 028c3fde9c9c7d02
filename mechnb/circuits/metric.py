"""The patching metric and the prompts it is measured on, shared by attribution, ACDC and faithfulness.

A :data:`Metric` is ``metric(logits, batch) -> scalar tensor``: a batch mean such as
:func:`logit_diff` (Wang et al. 2023, Sec. 3). Every method binds its ``batch`` once
(:func:`bind_metric`) and checks each value it gets (:func:`~mechnb.circuits.graph.check_metric_value`):
a vector, a non-number or NaN raises an error naming ``metric`` instead of giving NaN scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mechnb import metrics
from mechnb._checks import check_tensor
from mechnb.circuits.graph import check_metric_value
from mechnb.models import TinyTransformer
from mechnb.tasks import PromptPairs

__all__ = ["Metric", "logit_diff", "check_metric", "bind_metric", "resolve_prompts"]

Metric = Callable[[torch.Tensor, Any], torch.Tensor]


def logit_diff(logits: torch.Tensor, batch: PromptPairs) -> torch.Tensor:
    """Mean logit difference ``logits[:, -1, answers[:, 0]] - logits[:, -1, answers[:, 1]]``.

    ``logits (batch, pos, d_vocab)``; ``batch`` a :class:`~mechnb.tasks.PromptPairs`. Positive
    when the clean answer wins (the patching metric of Wang et al. 2023, Sec. 3): the batch mean
    of :func:`mechnb.metrics.logit_diff`, as a :data:`Metric` of prompt pairs.
    """
    check_tensor("logits", logits, ndim=3, dims="(batch, pos, d_vocab)", floating=True, finite=False)
    if not isinstance(batch, PromptPairs):
        raise TypeError(f"batch: expected a PromptPairs, got {type(batch).__name__}")
    if logits.shape[0] != len(batch):
        raise ValueError(f"logits: expected batch size {len(batch)} to match the prompts, got {logits.shape[0]}")
    return metrics.logit_diff(logits, batch.answers).mean()


def check_metric(metric: Any) -> None:
    """``TypeError`` naming ``metric`` unless it is callable."""
    if not callable(metric):
        raise TypeError(
            f"metric: expected a callable metric(logits, batch) -> scalar tensor, got {type(metric).__name__}"
        )


def bind_metric(metric: Metric, batch: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """``m(logits) = metric(logits, batch)``; its callers check each value with
    :func:`~mechnb.circuits.graph.check_metric_value`, saying where it was evaluated."""

    def m(logits: torch.Tensor) -> torch.Tensor:
        return metric(logits, batch)

    return m


def metric_float(m: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, where: str) -> float:
    """``float(m(logits))``, the check's message saying ``where`` it was evaluated."""
    return float(check_metric_value(m(logits), where))


def resolve_prompts(clean: torch.Tensor | PromptPairs, corrupted: torch.Tensor | None, model: TinyTransformer,
                    need_corrupted: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
    """``(clean tokens, corrupted tokens or None, batch)`` on the model's device.

    ``clean`` is a ``(batch, pos)`` token tensor or a :class:`PromptPairs` (then ``corrupted``
    defaults to its corrupted prompts and ``batch``, what the metric receives, is the pairs).
    """
    dev = next(model.parameters()).device
    if isinstance(clean, PromptPairs):
        batch: Any = clean.to(dev)
        clean_t = batch.clean
        corrupted = batch.corrupted if corrupted is None else corrupted
    else:
        check_tensor("clean", clean, ndim=2, dims="(batch, pos)", floating=False)
        clean_t = clean.to(dev)
        batch = clean_t
    if corrupted is None:
        if need_corrupted:
            raise ValueError("corrupted: expected a (batch, pos) token tensor (or pass clean as PromptPairs), got None")
        return clean_t, None, batch
    check_tensor("corrupted", corrupted, ndim=2, dims="(batch, pos)", floating=False)
    if corrupted.shape != clean_t.shape:
        raise ValueError(f"corrupted: expected the clean shape {tuple(clean_t.shape)}, got {tuple(corrupted.shape)}")
    return clean_t, corrupted.to(dev), batch
