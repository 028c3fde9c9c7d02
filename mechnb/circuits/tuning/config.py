"""The settings of a tuning run (:class:`TuneConfig`) and what it records (:class:`TuneResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from mechnb._checks import check_choice, check_positive_float, check_positive_int, check_seed
from mechnb.circuits.ablation import check_ablation
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
            the clip acting on the gradient norm of the parameters that can move). Circuit-tuning
            with Adam/AdamW counts Adam's steps per parameter entry
            (:class:`~mechnb.circuits.tuning.optim.EntryAdam`), so an entry that joins a later
            circuit takes a fresh Adam step.
        top_n: circuit size for circuit-tuning: edges are added by ``|score|`` until the pruned
            circuit has at least ``top_n`` edges (with a schedule: the size it ends at).
        top_n_schedule, top_n_start, top_n_warmup: a schedule for the circuit size (the authors'
            ``TopNScheduler``): ``"constant"`` (always ``top_n``), or ``"linear"`` / ``"geometric"``
            from ``top_n_start`` at step 0 to ``top_n`` at step ``top_n_warmup`` (then ``top_n``),
            rounded to an integer.
        discover_every: re-discover the circuit every this many steps (1: every step, as in the
            authors' code).
        discover_on: ``"prompts"`` (the task's clean/corrupted discovery prompts, with the task's
            metric) or ``"batch"`` (the step's training batch, with the metric ``-loss``: what the
            authors' code does at every step). On the batch there are no corrupted prompts, so
            ``ablation`` must be ``"zero"``, ``"mean"`` or ``"mean-positional"``.
        method, ig_steps, ablation: edge attribution used for discovery (``"eap"`` or ``"eap-ig"``;
            the ablation of :mod:`~mechnb.circuits.ablation`).
        score_ema: exponential smoothing of the edge scores across re-discoveries, ``s_bar_t =
            score_ema * s_bar_{t-1} + (1 - score_ema) * s_t`` (``s_bar`` of the first discovery is its
            scores); the circuit is chosen from the smoothed scores. 0 (default): no smoothing.
        selection: ``"circuit"`` (train what the circuit's nodes own) or ``"random"`` - the
            random-parameter baseline: the circuit is discovered as usual, but the trained entries
            are random node-owned blocks (a head's query/key/value/output slice, an MLP's input or
            output side) with the circuit's trainable count (as close as the blocks allow).
        lora_rank, lora_alpha: LoRA rank and scale (``alpha / rank``) for ``finetune(mode="lora")``.
        lora_lr: learning rate of the LoRA adapters (``None``: ``optim.lr``; LoRA usually wants ~10x more).
        log_every: evaluate the task and held-out losses every this many steps (and at 0 and the end).
        seed: seeds the training-data stream (and LoRA's init, and the random selection).
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
    top_n_schedule: str = "constant"
    top_n_start: int | None = None
    top_n_warmup: int = 0
    discover_on: str = "prompts"
    ablation: str = "corrupted"
    score_ema: float = 0.0
    selection: str = "circuit"

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
        check_seed("seed", self.seed)
        check_choice("top_n_schedule", self.top_n_schedule, ["constant", "linear", "geometric"])
        if self.top_n_schedule != "constant":
            if self.top_n_start is None:
                raise ValueError(f"top_n_start: expected the circuit size at step 0 for top_n_schedule="
                                 f"{self.top_n_schedule!r}, got None")
            check_positive_int("top_n_start", self.top_n_start, minimum=1 if self.top_n_schedule == "geometric" else 0)
            check_positive_int("top_n_warmup", self.top_n_warmup)
            if self.top_n_schedule == "geometric" and self.top_n < 1:
                raise ValueError(f"top_n: expected >= 1 for a geometric schedule, got {self.top_n}")
        elif self.top_n_start is not None:
            raise ValueError(f"top_n_start: only used with top_n_schedule='linear' or 'geometric', got "
                             f"{self.top_n_start!r} with 'constant'")
        check_choice("discover_on", self.discover_on, ["prompts", "batch"])
        check_ablation(self.ablation)
        if self.discover_on == "batch" and self.ablation == "corrupted":
            raise ValueError("ablation: discovery on the training batch (discover_on='batch') has no corrupted prompts; "
                             "expected 'zero', 'mean' or 'mean-positional', got 'corrupted'")
        if isinstance(self.score_ema, bool) or not isinstance(self.score_ema, (int, float)) \
                or not 0.0 <= float(self.score_ema) < 1.0:
            raise ValueError(f"score_ema: expected a number in [0, 1), got {self.score_ema!r}")
        check_choice("selection", self.selection, ["circuit", "random"])

    def top_n_at(self, step: int) -> int:
        """The circuit size of a discovery at ``step`` under :attr:`top_n_schedule`."""
        if self.top_n_schedule == "constant" or step >= self.top_n_warmup:
            return self.top_n
        assert self.top_n_start is not None
        frac = step / self.top_n_warmup
        if self.top_n_schedule == "linear":
            return int(round(self.top_n_start + frac * (self.top_n - self.top_n_start)))
        return int(round(self.top_n_start * (self.top_n / self.top_n_start) ** frac))


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
    """TypeError naming the first of ``model``, ``task``, ``config`` that has the wrong type, and
    ValueError naming ``model`` if it cannot read the task's sentences (vocabulary or context too small)."""
    _check_model(model)
    _check_task(task)
    _check_config(config)
    lang = task.lang
    if model.vocab_size < lang.vocab_size or model.n_ctx < lang.n_ctx:
        raise ValueError(f"model: expected a TinyTransformer that reads the language of task {task.name!r} "
                         f"(vocab_size >= {lang.vocab_size}, n_ctx >= {lang.n_ctx}), got vocab_size={model.vocab_size}, "
                         f"n_ctx={model.n_ctx}")
