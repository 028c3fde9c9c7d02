"""What one tuning step may change: one strategy object per method.

* :class:`CircuitTuning` - the circuit's node parameters only, the circuit re-discovered every
  ``discover_every`` steps (:func:`discover`; Li, Yuan & Wang 2025, Alg. 1);
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
from mechnb.circuits.tuning.masks import node_parameter_mask, parameter_mask, trainable_fraction
from mechnb.circuits.tuning_tasks import TuneTask
from mechnb.models import TinyTransformer
from mechnb.train import OptimConfig

__all__ = ["discover", "TuningStrategy", "FullTuning", "NodeTuning", "CircuitTuning", "LoRATuning"]


def discover(model: TinyTransformer, task: TuneTask, top_n: int, method: str = "eap", ig_steps: int = 5,
             graph: Graph | None = None) -> tuple[Circuit, EdgeScores]:
    """Stage 1 of circuit-tuning: the circuit of ``task`` on its discovery prompts, and the scores.

    Edges are taken in order of ``|score|`` until the circuit, with dangling edges pruned, has at
    least ``top_n`` edges (``EdgeScores.top_n(top_n, fill=True)``).
    """
    graph = graph or Graph.from_model(model)
    scores = attribute(model, graph, task.discovery, metric=task.metric, method=method, ig_steps=ig_steps)
    return scores.top_n(top_n, fill=True), scores


class TuningStrategy:
    """What a tuning run trains and how each step is constrained: one subclass per method.

    The shared loop calls, at every step: :meth:`before_step` (circuit-tuning re-discovers its
    circuit here), then - if :meth:`can_move` - the forward pass through :meth:`forward`, the
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

    def before_step(self, step: int) -> None:
        """Called at the start of every step."""

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

    Every ``discover_every`` steps the circuit of ``task`` is re-discovered (:func:`discover`) and
    its :func:`parameter_mask` becomes ``masks``. At each step the gradient outside the mask is
    zeroed, the gradient norm is clipped over the parameters with a trainable entry, and after the
    optimiser step every entry outside the mask is restored bit for bit to its pre-step value and
    its optimiser state (momentum, Adam moments) is reset to 0 - momentum and weight decay would
    otherwise move parameters whose gradient is zero.

    Attributes:
        circuit: the current circuit; ``circuits``: ``(step, edge names)`` per discovery;
        ``scores``: the per-edge scores (``graph.edges`` order) behind each of them.
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
        self._saved: list[torch.Tensor] = []

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self._named]

    def trainable_fraction(self) -> float:
        return trainable_fraction(self.model, self.masks)

    def log_extra(self) -> dict[str, float]:
        assert self.circuit is not None
        return {"n_edges": self.circuit.n_edges, "n_nodes": self.circuit.n_nodes}

    def before_step(self, step: int) -> None:
        """Stage 1 every ``discover_every`` steps: re-discover the circuit and its parameter mask."""
        if step % self.config.discover_every:
            return
        cfg = self.config
        circuit, scores = discover(self.model, self.task, cfg.top_n, cfg.method, cfg.ig_steps, self.graph)
        self.circuit = circuit
        owned = parameter_mask(self.model, circuit)
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
