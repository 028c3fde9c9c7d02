"""What one tuning step may change: one strategy object per method.

* :class:`CircuitTuning` - the circuit's node parameters only, the circuit re-discovered every
  ``discover_every`` steps (:func:`discover`; Li, Yuan & Wang 2025, Alg. 1), with the options of
  the authors' code (discovery on the training batch, a circuit-size schedule, smoothed scores);
* :class:`RandomSelectionTuning` - the random-parameter baseline: random node-owned blocks with
  the circuit's trainable count;
* :class:`FullTuning` - every parameter; :class:`NodeTuning` - every parameter some node owns;
* :class:`LoRATuning` - low-rank adapters (Hu et al. 2021) with the base model frozen.

Each is a small class whose hooks the shared loop (:func:`~mechnb.circuits.tuning.run_strategy`)
calls in a fixed order, documented on :class:`TuningStrategy`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from mechnb.circuits.attribution import attribute
from mechnb.circuits.circuit import Circuit, EdgeScores
from mechnb.circuits.graph import Graph
from mechnb.circuits.tuning.config import TuneConfig, _check_config, _check_model, _check_task
from mechnb.circuits.tuning.lora import LoRA
from mechnb.circuits.tuning.masks import (
    node_parameter_mask,
    ownership_blocks,
    parameter_mask,
    random_blocks_mask,
    trainable_fraction,
)
from mechnb.circuits.tuning.optim import entry_adam
from mechnb.circuits.tuning_tasks import TrainBatch, TuneTask
from mechnb.models import TinyTransformer
from mechnb.train import OptimConfig, make_optimizer

__all__ = ["discover", "discover_on_batch", "TuningStrategy", "FullTuning", "NodeTuning", "CircuitTuning",
           "RandomSelectionTuning", "LoRATuning"]


def discover(model: TinyTransformer, task: TuneTask, top_n: int, method: str = "eap", ig_steps: int = 5,
             graph: Graph | None = None, ablation: str = "corrupted") -> tuple[Circuit, EdgeScores]:
    """Stage 1 of circuit-tuning: the circuit of ``task`` on its discovery prompts, and the scores.

    Edges are taken in order of ``|score|`` until the circuit, with dangling edges pruned, has at
    least ``top_n`` edges (``EdgeScores.top_n(top_n, fill=True)``).
    """
    graph = graph or Graph.from_model(model)
    scores = attribute(model, graph, task.discovery, metric=task.metric, method=method, ig_steps=ig_steps,
                       ablation=ablation)
    return scores.top_n(top_n, fill=True), scores


def discover_on_batch(model: TinyTransformer, task: TuneTask, batch: TrainBatch, top_n: int, method: str = "eap",
                      ig_steps: int = 5, graph: Graph | None = None, ablation: str = "mean") -> tuple[Circuit, EdgeScores]:
    """Stage 1 on a training batch (the authors' code): edges scored by their effect on ``-loss`` of the
    batch (``task.loss`` of ``model(batch.tokens[:, :-1])``), patched towards a zero or mean reference
    over the batch (there are no corrupted prompts); then as :func:`discover`."""
    graph = graph or Graph.from_model(model)

    def neg_loss(logits: torch.Tensor, _: object) -> torch.Tensor:
        return -task.loss(logits, batch)

    scores = attribute(model, graph, batch.tokens[:, :-1], metric=neg_loss, method=method, ig_steps=ig_steps,
                       ablation=ablation)
    return scores.top_n(top_n, fill=True), scores


class TuningStrategy:
    """What a tuning run trains and how each step is constrained: one subclass per method.

    The shared loop builds the optimiser with :meth:`make_optimizer`, then calls, at every step:
    :meth:`before_step` with the step's training batch (circuit-tuning re-discovers its circuit
    here), then - if :meth:`can_move` - the forward pass through :meth:`forward`, the
    backward pass, :meth:`after_backward`, gradient clipping over :meth:`clip_parameters`, the
    optimiser step over :meth:`trainable_parameters` and :meth:`after_step`. Logged steps record
    the metrics of :meth:`eval_model`, :meth:`trainable_fraction` and :meth:`log_extra`. The whole
    run happens inside :meth:`running`; :meth:`finish` returns the tuned model.

    Attributes:
        mode: the method's name in :attr:`TuneResult.mode`.
        model: the model being tuned (in place).
        config: the run's :class:`TuneConfig`; ``optim``: the optimiser settings it trains with.
        masks: the parameter masks of the current step (``None``: no masks), passed to callbacks.
    """

    mode = ""

    def __init__(self, model: TinyTransformer, config: TuneConfig) -> None:
        _check_model(model)
        _check_config(config)
        self.model = model
        self.config = config
        self.optim: OptimConfig = config.optim
        self.masks: dict[str, torch.Tensor] | None = None

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser steps."""
        raise NotImplementedError

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser over :meth:`trainable_parameters` (:func:`mechnb.train.make_optimizer` of ``optim``)."""
        return make_optimizer(self.trainable_parameters(), self.optim)

    def trainable_fraction(self) -> float:
        """Fraction of the model's parameter entries this step can change."""
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, pos, d_vocab)`` of the model being trained."""
        return self.model(tokens)

    def eval_model(self) -> nn.Module:
        """The model whose metrics are logged."""
        return self.model

    def log_extra(self) -> dict[str, float]:
        """Method-specific entries of each log record."""
        return {}

    def before_step(self, step: int, batch: TrainBatch) -> None:
        """Called at the start of every step, with the step's training batch."""

    def can_move(self) -> bool:
        """Whether any parameter can change this step (if not, the backward pass is skipped)."""
        return True

    def after_backward(self) -> None:
        """Called between the backward pass and gradient clipping."""

    def clip_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradient norm is clipped to ``optim.grad_clip``."""
        return self.trainable_parameters()

    def after_step(self, opt: torch.optim.Optimizer) -> None:
        """Called after the optimiser step."""

    @contextmanager
    def running(self) -> Iterator[None]:
        """The context of the whole run."""
        yield

    def finish(self) -> TinyTransformer:
        """The tuned model, once the run is over."""
        return self.model


class FullTuning(TuningStrategy):
    """Full fine-tuning: every parameter is trained (``mode="full"``)."""

    mode = "full"

    def __init__(self, model: TinyTransformer, config: TuneConfig) -> None:
        super().__init__(model, config)
        self._params = self._select()
        self._fraction = sum(p.numel() for p in self._params) / sum(p.numel() for p in model.parameters())

    def _select(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self._params

    def trainable_fraction(self) -> float:
        return self._fraction


class NodeTuning(FullTuning):
    """Fine-tuning of every parameter some node owns (``mode="nodes"``, :func:`node_parameter_mask`):
    what circuit-tuning becomes with a circuit of every edge."""

    mode = "nodes"

    def _select(self) -> list[nn.Parameter]:
        owned = node_parameter_mask(self.model)
        return [p for n, p in self.model.named_parameters() if bool(owned[n].all())]


class CircuitTuning(TuningStrategy):
    """Circuit-tuning (Li et al. 2025, Alg. 1): train only what the current circuit's nodes own.

    Every ``discover_every`` steps the circuit is re-discovered - on the task's discovery prompts
    (:func:`discover`) or on the step's training batch (:func:`discover_on_batch`,
    ``config.discover_on="batch"``) -, with the circuit size of ``config.top_n_at(step)`` and, if
    ``config.score_ema > 0``, from the exponentially smoothed scores; its :func:`parameter_mask`
    becomes ``masks``. At each step the gradient outside the mask is zeroed, the gradient norm is
    clipped over the parameters with a trainable entry, and after the optimiser step every entry
    outside the mask is restored bit for bit to its pre-step value and its optimiser state
    (momentum, Adam moments and Adam's per-entry step count) is reset to 0 - momentum and weight
    decay would otherwise move parameters whose gradient is zero, and a stale step count would make
    a joining entry's first Adam step ~3x too large (:class:`~mechnb.circuits.tuning.optim.EntryAdam`).

    Attributes:
        circuit: the current circuit; ``circuits``: ``(step, edge names)`` per discovery;
        ``scores``: the per-edge scores (``graph.edges`` order) the circuits were chosen from
        (smoothed if ``score_ema > 0``); ``raw_scores``: the scores of each discovery before smoothing.
    """

    mode = "circuit"

    def __init__(self, model: TinyTransformer, task: TuneTask, config: TuneConfig) -> None:
        super().__init__(model, config)
        _check_task(task)
        self.task = task
        self.graph = Graph.from_model(model)
        self._named = list(model.named_parameters())
        self.circuit: Circuit | None = None
        self.masks: dict[str, torch.Tensor] = {}
        self.circuits: list[tuple[int, list[str]]] = []
        self.scores: list[list[float]] = []
        self.raw_scores: list[list[float]] = []
        self._smoothed: torch.Tensor | None = None
        self._saved: list[torch.Tensor] = []

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self._named]

    def make_optimizer(self) -> torch.optim.Optimizer:
        """SGD as configured; Adam/AdamW as :class:`EntryAdam` (a step count per entry)."""
        if self.optim.optimizer in ("adam", "adamw"):
            return entry_adam(self.trainable_parameters(), self.optim)
        return super().make_optimizer()

    def trainable_fraction(self) -> float:
        return trainable_fraction(self.model, self.masks)

    def log_extra(self) -> dict[str, float]:
        assert self.circuit is not None
        return {"n_edges": self.circuit.n_edges, "n_nodes": self.circuit.n_nodes}

    def _scores(self, step: int, batch: TrainBatch) -> EdgeScores:
        """This discovery's edge scores, smoothed across discoveries if ``score_ema > 0``."""
        cfg = self.config
        if cfg.discover_on == "batch":
            _, scores = discover_on_batch(self.model, self.task, batch, 0, cfg.method, cfg.ig_steps, self.graph,
                                          cfg.ablation)
        else:
            _, scores = discover(self.model, self.task, 0, cfg.method, cfg.ig_steps, self.graph, cfg.ablation)
        self.raw_scores.append(scores.values.tolist())
        if cfg.score_ema == 0:
            return scores
        s = scores.scores
        self._smoothed = s.clone() if self._smoothed is None else cfg.score_ema * self._smoothed + (1 - cfg.score_ema) * s
        return replace(scores, scores=self._smoothed.clone(), info={**scores.info, "score_ema": cfg.score_ema})

    def _select(self, circuit: Circuit, step: int) -> dict[str, torch.Tensor]:
        """The parameter entries to train for ``circuit``: the ones its nodes own."""
        return parameter_mask(self.model, circuit)

    def before_step(self, step: int, batch: TrainBatch) -> None:
        """Stage 1 every ``discover_every`` steps: re-discover the circuit and its parameter mask."""
        if step % self.config.discover_every:
            return
        scores = self._scores(step, batch)
        circuit = scores.top_n(self.config.top_n_at(step), fill=True)
        self.circuit = circuit
        owned = self._select(circuit, step)
        self.masks = {n: owned[n].to(p.device) for n, p in self._named}
        self.circuits.append((step, [e.name for e in circuit.edges]))
        self.scores.append(scores.values.tolist())

    def can_move(self) -> bool:
        return any(bool(m.any()) for m in self.masks.values())

    def after_backward(self) -> None:
        """Zero the gradient outside the circuit; remember every parameter's pre-step value."""
        for n, p in self._named:
            if p.grad is not None:
                p.grad.mul_(self.masks[n])
        self._saved = [p.detach().clone() for _, p in self._named]

    def clip_parameters(self) -> list[nn.Parameter]:
        """The parameters with a trainable entry (the same set, in the same order, as training only them)."""
        return [p for n, p in self._named if bool(self.masks[n].any())]

    @torch.no_grad()
    def after_step(self, opt: torch.optim.Optimizer) -> None:
        """Restore every entry outside the circuit bit for bit, and zero its optimiser state."""
        for (n, p), old in zip(self._named, self._saved):
            m = self.masks[n]
            p.copy_(torch.where(m, p, old))
            for v in opt.state[p].values():
                if isinstance(v, torch.Tensor) and v.shape == p.shape:
                    v.masked_fill_(~m, 0)


class RandomSelectionTuning(CircuitTuning):
    """The random-parameter baseline of circuit-tuning (``mode="random"``, ``selection="random"``).

    The circuit is discovered exactly as by :class:`CircuitTuning` (its size is logged), but the
    entries trained are random node-owned blocks - a head's query, key, value or output slice, an
    MLP's input side (``ln2``, ``W_in``, ``b_in``) or output side (``W_out``, ``b_out``) - drawn in a
    random order (seeded by ``config.seed`` and the step), each kept if it brings the total closer
    to the circuit's trainable count (:func:`random_blocks_mask`: at most half a block away). Freezing outside the selection is bit-exact, as for circuit-tuning.
    """

    mode = "random"

    def __init__(self, model: TinyTransformer, task: TuneTask, config: TuneConfig) -> None:
        super().__init__(model, task, config)
        self._blocks = ownership_blocks(model)

    def _select(self, circuit: Circuit, step: int) -> dict[str, torch.Tensor]:
        owned = parameter_mask(self.model, circuit)
        target = sum(int(m.sum()) for m in owned.values())
        return random_blocks_mask(self.model, self._blocks, target, seed=self.config.seed * 1_000_003 + step)


class LoRATuning(TuningStrategy):
    """LoRA (Hu et al. 2021): train rank-``lora_rank`` adapters on every attention and MLP weight
    (``mode="lora"``) with the base model frozen, at ``lora_lr`` if set; the adapters are merged
    into the model by :meth:`finish`. ``trainable_fraction`` = adapter size / model size."""

    mode = "lora"

    def __init__(self, model: TinyTransformer, config: TuneConfig) -> None:
        super().__init__(model, config)
        n_model = sum(p.numel() for p in model.parameters())
        self.lora = LoRA(model, config.lora_rank, config.lora_alpha, seed=config.seed)
        self._fraction = self.lora.n_parameters() / n_model
        if config.lora_lr is not None:
            self.optim = replace(config.optim, lr=config.lora_lr)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.lora.parameters())

    def trainable_fraction(self) -> float:
        return self._fraction

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lora(tokens)

    def eval_model(self) -> nn.Module:
        return self.lora.merged()

    @contextmanager
    def running(self) -> Iterator[None]:
        """Freeze the base model for the run (only the adapters are trained), then unfreeze it."""
        flags = [p.requires_grad for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, f in zip(self.model.parameters(), flags):
                p.requires_grad_(f)

    def finish(self) -> TinyTransformer:
        self.lora.merge()
        return self.model
