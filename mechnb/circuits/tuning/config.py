"""The settings of a tuning run (:class:`TuneConfig`) and what it records (:class:`TuneResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from mechnb._checks import check_choice, check_positive_float, check_positive_int
from mechnb.circuits.tuning_tasks import TuneTask
from mechnb.io import saveable
from mechnb.models import TinyTransformer
from mechnb.train import OptimConfig, OptimFields, accepts_optim_keywords

__all__ = ["TuneConfig", "TuneResult"]


@accepts_optim_keywords
@dataclass
class TuneConfig(OptimFields):
    """Settings shared by :func:`circuit_tune`, :func:`finetune` and :func:`node_redundancy`.

    The optimiser is an :class:`~mechnb.train.OptimConfig` (``optim``), the same one
    :class:`~mechnb.train.TrainConfig` embeds; its fields are also accepted as flat keywords
    (``TuneConfig(lr=0.02, optimizer="adamw")``) and read back as attributes (``cfg.lr``).

    Attributes:
        steps, batch_size: optimisation length, sentences per step.
        optim: optimiser, learning rate, weight decay, momentum/betas and gradient clipping
            (default: SGD with momentum 0.9 - the paper's choice -, ``lr=1e-2``, ``grad_clip=1.0``,
            the clip acting on the gradient norm of the parameters that can move).
        top_n: circuit size for circuit-tuning: edges are added by ``|score|`` until the pruned
            circuit has at least ``top_n`` edges.
        discover_every: re-discover the circuit every this many steps.
        method, ig_steps: edge attribution used for discovery (``"eap"`` or ``"eap-ig"``).
        lora_rank, lora_alpha: LoRA rank and scale (``alpha / rank``) for ``finetune(mode="lora")``.
        lora_lr: learning rate of the LoRA adapters (``None``: ``optim.lr``; LoRA usually wants ~10x more).
        log_every: evaluate the task and held-out losses every this many steps (and at 0 and the end).
        seed: seeds the training-data stream (and LoRA's init).
    """

    steps: int = 200
    optim: OptimConfig = OptimConfig(optimizer="sgd", lr=1e-2, momentum=0.9, grad_clip=1.0)
    batch_size: int = 32
    top_n: int = 30
    discover_every: int = 10
    method: str = "eap"
    ig_steps: int = 5
    lora_rank: int = 4
    lora_alpha: float = 8.0
    lora_lr: float | None = None
    log_every: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("top_n", self.top_n, minimum=0)
        check_positive_int("discover_every", self.discover_every)
        check_choice("method", self.method, ["eap", "eap-ig"])
        check_positive_int("ig_steps", self.ig_steps)
        check_positive_int("lora_rank", self.lora_rank)
        check_positive_float("lora_alpha", self.lora_alpha)
        if self.lora_lr is not None:
            check_positive_float("lora_lr", self.lora_lr)
        check_positive_int("log_every", self.log_every)


@saveable()
@dataclass
class TuneResult:
    """What a tuning run recorded.

    Attributes:
        mode: ``"circuit"``, ``"full"``, ``"nodes"`` or ``"lora"``.
        task: the task's name; ``primary``: its main metric's key.
        losses: training loss per step.
        log: one dict per logged step: ``step``, the task metrics, ``corpus_loss``,
            ``general_loss``, ``trainable_fraction``, and for circuit-tuning ``n_edges``, ``n_nodes``.
        circuits: ``(step, edge names)`` each time the circuit was (re)discovered.
        circuit_scores: the per-edge attribution scores (``graph.edges`` order) behind each of them.
        model: the tuned model (a copy unless ``inplace=True``).
    """

    mode: str
    task: str
    primary: str
    config: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    log: list[dict[str, float]] = field(default_factory=list)
    circuits: list[tuple[int, list[str]]] = field(default_factory=list)
    circuit_scores: list[list[float]] = field(default_factory=list)
    model: nn.Module | None = None

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of a logged quantity."""
        if not self.log or key not in self.log[0]:
            raise KeyError(f"key: {key!r} was not logged; logged keys: {sorted(self.log[0]) if self.log else []}")
        return np.array([r["step"] for r in self.log]), np.array([r[key] for r in self.log], dtype=float)

    @property
    def final(self) -> dict[str, float]:
        return dict(self.log[-1]) if self.log else {}

    @property
    def initial(self) -> dict[str, float]:
        return dict(self.log[0]) if self.log else {}

    def mean_trainable_fraction(self) -> float:
        """Trainable fraction averaged over logged steps after step 0 (the circuit changes)."""
        vals = [r["trainable_fraction"] for r in self.log if r["step"] > 0] or [self.log[0]["trainable_fraction"]]
        return float(np.mean(vals))


def _check_model(model: Any) -> None:
    if not isinstance(model, TinyTransformer):
        raise TypeError(f"model: expected a mechnb.models.TinyTransformer, got {type(model).__name__}")


def _check_task(task: Any) -> None:
    if not isinstance(task, TuneTask):
        raise TypeError(f"task: expected a TuneTask (e.g. disagreement_task(lang)), got {type(task).__name__}")


def _check_config(config: Any) -> None:
    if not isinstance(config, TuneConfig):
        raise TypeError(f"config: expected a TuneConfig, got {type(config).__name__}")


def _check_inputs(model: Any, task: Any, config: Any) -> None:
    """TypeError naming the first of ``model``, ``task``, ``config`` that has the wrong type."""
    _check_model(model)
    _check_task(task)
    _check_config(config)
