"""Circuit-tuning (Li, Yuan & Wang 2025, arXiv:2502.06106, Alg. 1) and its baselines.

Circuit-tuning alternates two stages: (1) *circuit discovery* - attribute the task metric to
the edges of the computational graph (EAP / EAP-IG) and keep the top ``n`` edges; (2)
*circuit tuning* - update only the parameters owned by the circuit's nodes. The circuit is
re-discovered every ``discover_every`` steps, so it can move as the model learns.

Parameters outside the current circuit are held **bit-for-bit** fixed at every step whatever
the optimiser: gradients outside are zeroed before the step, the optimiser's step is applied,
then every entry outside the circuit is restored to its pre-step value (momentum and weight
decay would otherwise move zero-gradient parameters), and the optimiser state of those entries
(momentum buffers, Adam moments) is reset to 0 so nothing stale leaks in when they join a
later circuit.

Baselines (:func:`finetune`): full fine-tuning, fine-tuning of every node parameter
(``mode="nodes"``, what circuit-tuning becomes with a circuit of every edge), and LoRA (Hu et al.
2021, arXiv:2106.09685) on every attention and MLP weight matrix.

:func:`node_redundancy` sweeps the circuit size: like the intrinsic dimension of Li et al.
2018, a task needs only a few nodes; past that size the tuned metric saturates (paper Sec. 3).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mechnb._checks import check_choice, check_positive_float, check_positive_int, resolve_device
from mechnb.circuits.attribution import Circuit, EdgeScores, attribute
from mechnb.circuits.graph import Graph
from mechnb.circuits.tasks import TuneTask
from mechnb.models import TinyTransformer
from mechnb.train import make_optimizer

__all__ = [
    "parameter_mask",
    "node_parameter_mask",
    "trainable_fraction",
    "TuneConfig",
    "TuneResult",
    "discover",
    "circuit_tune",
    "finetune",
    "LoRA",
    "NodeRedundancy",
    "node_redundancy",
    "CircuitHistory",
    "circuit_history",
    "comparison_table",
]


# --------------------------------------------------------------------------------------
# Parameter ownership
# --------------------------------------------------------------------------------------
def parameter_mask(model: TinyTransformer, circuit: Circuit) -> dict[str, torch.Tensor]:
    """Which parameter entries the circuit's nodes own: ``{name: bool tensor like the parameter}``.

    A head ``a{l}.h{h}`` owns ``W_Q[h], b_Q[h]`` if its query input has an incoming circuit
    edge (likewise ``K``, ``V``) and ``W_O[h]`` if it has an outgoing circuit edge. An MLP
    ``m{l}`` owns ``ln2``, ``W_in``, ``b_in`` if it has an incoming edge and ``W_out``, ``b_out`` if it
    has an outgoing one. Shared or non-node parameters (embeddings, ``ln1``, ``b_O``,
    ``ln_final``, unembedding) are owned by no node, as in the paper's ``get_relevant_params``.
    Every parameter of ``model`` has an entry (all ``False`` if not owned).
    """
    if not isinstance(circuit, Circuit):
        raise TypeError(f"circuit: expected a Circuit, got {type(circuit).__name__}")
    graph = circuit.graph
    graph.check_model(model)
    params = dict(model.named_parameters())
    masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    mask = circuit.mask
    outgoing = mask.any(1).tolist()
    incoming = mask.any(0).tolist()
    for i, w in enumerate(graph.writers):
        if not outgoing[i] or w == "input":
            continue
        if w.startswith("a"):
            layer, head = (int(x) for x in w[1:].split(".h"))
            masks[f"blocks.{layer}.attn.W_O"][head] = True
        else:
            layer = int(w[1:])
            masks[f"blocks.{layer}.mlp.W_out"][:] = True
            masks[f"blocks.{layer}.mlp.b_out"][:] = True
    for j, (node, letter) in enumerate(graph.readers):
        if not incoming[j] or node == "logits":
            continue
        if node.startswith("a"):
            layer, head = (int(x) for x in node[1:].split(".h"))
            for kind in ("W", "b"):
                masks[f"blocks.{layer}.attn.{kind}_{letter.upper()}"][head] = True
        else:
            layer = int(node[1:])
            for name in ("ln2.w", "ln2.b", "mlp.W_in", "mlp.b_in"):
                masks[f"blocks.{layer}.{name}"][:] = True
    return masks


def node_parameter_mask(model: TinyTransformer) -> dict[str, torch.Tensor]:
    """The parameters owned by *some* node: :func:`parameter_mask` of the full circuit."""
    return parameter_mask(model, Circuit.full(Graph.from_model(model)))


def trainable_fraction(model: nn.Module, masks: dict[str, torch.Tensor]) -> float:
    """Fraction of all of ``model``'s parameter entries that ``masks`` marks trainable."""
    total = sum(p.numel() for p in model.parameters())
    return sum(int(m.sum()) for m in masks.values()) / total


# --------------------------------------------------------------------------------------
# Config and result
# --------------------------------------------------------------------------------------
@dataclass
class TuneConfig:
    """Settings shared by :func:`circuit_tune`, :func:`finetune` and :func:`node_redundancy`.

    Attributes:
        steps, lr, batch_size: optimisation length, learning rate, sentences per step.
        optimizer: ``"sgd"`` (with ``momentum``; the paper's choice), ``"adamw"`` or ``"adam"``.
        weight_decay: SGD L2 / AdamW decoupled decay.
        top_n: circuit size for circuit-tuning: edges are added by ``|score|`` until the pruned
            circuit has at least ``top_n`` edges.
        discover_every: re-discover the circuit every this many steps.
        method, ig_steps: edge attribution used for discovery (``"eap"`` or ``"eap-ig"``).
        lora_rank, lora_alpha: LoRA rank and scale (``alpha / rank``) for ``finetune(mode="lora")``.
        lora_lr: learning rate of the LoRA adapters (``None``: ``lr``; LoRA usually wants ~10x more).
        log_every: evaluate the task and held-out losses every this many steps (and at 0 and the end).
        grad_clip: clip the gradient norm of the trainable parameters (``None``: off).
        seed: seeds the training-data stream (and LoRA's init).
    """

    steps: int = 200
    lr: float = 1e-2
    batch_size: int = 32
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    top_n: int = 30
    discover_every: int = 10
    method: str = "eap"
    ig_steps: int = 5
    lora_rank: int = 4
    lora_alpha: float = 8.0
    lora_lr: float | None = None
    log_every: int = 20
    grad_clip: float | None = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_float("lr", self.lr)
        check_positive_int("batch_size", self.batch_size)
        check_choice("optimizer", self.optimizer, ["sgd", "adamw", "adam"])
        check_positive_float("momentum", self.momentum, allow_zero=True)
        check_positive_float("weight_decay", self.weight_decay, allow_zero=True)
        check_positive_int("top_n", self.top_n, minimum=0)
        check_positive_int("discover_every", self.discover_every)
        check_choice("method", self.method, ["eap", "eap-ig"])
        check_positive_int("ig_steps", self.ig_steps)
        check_positive_int("lora_rank", self.lora_rank)
        check_positive_float("lora_alpha", self.lora_alpha)
        if self.lora_lr is not None:
            check_positive_float("lora_lr", self.lora_lr)
        check_positive_int("log_every", self.log_every)
        if self.grad_clip is not None:
            check_positive_float("grad_clip", self.grad_clip)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


# --------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------
def _check_inputs(model: Any, task: Any, config: Any) -> None:
    if not isinstance(model, TinyTransformer):
        raise TypeError(f"model: expected a mechnb.models.TinyTransformer, got {type(model).__name__}")
    if not isinstance(task, TuneTask):
        raise TypeError(f"task: expected a TuneTask (e.g. disagreement_task(lang)), got {type(task).__name__}")
    if not isinstance(config, TuneConfig):
        raise TypeError(f"config: expected a TuneConfig, got {type(config).__name__}")


def discover(model: TinyTransformer, task: TuneTask, top_n: int, method: str = "eap", ig_steps: int = 5,
             graph: Graph | None = None) -> tuple[Circuit, EdgeScores]:
    """Stage 1 of circuit-tuning: the circuit of ``task`` on its discovery prompts, and the scores.

    Edges are taken in order of ``|score|`` until the circuit, with dangling edges pruned, has at
    least ``top_n`` edges (``EdgeScores.top_n(top_n, fill=True)``).
    """
    graph = graph or Graph.from_model(model)
    scores = attribute(model, graph, task.discovery, metric=task.metric, method=method, ig_steps=ig_steps)
    return scores.top_n(top_n, fill=True), scores


def _evaluate(model: nn.Module, task: TuneTask) -> dict[str, float]:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = {**task.evaluate(model), **task.general(model)}
    model.train(was)
    return out


def _run(
    model: TinyTransformer, task: TuneTask, cfg: TuneConfig, mode: str, *,
    forward: Callable[[torch.Tensor], torch.Tensor], train_params: list[nn.Parameter],
    eval_model: Callable[[], nn.Module], mask_fn: Callable[[int], dict[str, torch.Tensor] | None] | None,
    fraction: Callable[[], float], extra_log: Callable[[], dict[str, float]], progress: bool,
    callback: Callable[[int, TinyTransformer, dict[str, torch.Tensor] | None], None] | None,
) -> TuneResult:
    """The loop shared by circuit-tuning and the baselines."""
    result = TuneResult(mode, task.name, task.primary, cfg.to_dict())
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(train_params, cfg)
    named = dict(model.named_parameters())
    name_of = {id(p): n for n, p in named.items()}
    device = next(model.parameters()).device
    masks: dict[str, torch.Tensor] | None = None

    def log(step: int) -> None:
        rec = {"step": step, **_evaluate(eval_model(), task), "trainable_fraction": fraction(), **extra_log()}
        result.log.append(rec)

    model.train()
    bar = tqdm(range(cfg.steps), desc=f"{mode}-tune {task.name}", disable=not progress, leave=False)
    for step in bar:
        if mask_fn is not None:
            new = mask_fn(step)
            if new is not None:
                masks = {n: m.to(named[n].device) for n, m in new.items()}
        if step == 0:
            log(0)
        batch = task.sample(step, gen, cfg.batch_size).to(device)
        if masks is not None and not any(bool(m.any()) for m in masks.values()):
            with torch.no_grad():  # empty circuit: nothing can move, so skip the backward pass
                result.losses.append(float(task.loss(forward(batch.tokens[:, :-1]), batch)))
            if callback is not None:
                callback(step, model, masks)
            if (step + 1) % cfg.log_every == 0 or step == cfg.steps - 1:
                log(step + 1)
            continue
        logits = forward(batch.tokens[:, :-1])
        loss = task.loss(logits, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{mode}-tune: loss became {float(loss)} at step {step}; lower config.lr")
        opt.zero_grad(set_to_none=False)
        loss.backward()
        if masks is not None:
            for p in train_params:
                if p.grad is not None:
                    p.grad.mul_(masks[name_of[id(p)]])
        if cfg.grad_clip is not None:
            # the norm over the parameters that can move (same set, same order as training only them)
            clip = train_params if masks is None else [p for p in train_params if bool(masks[name_of[id(p)]].any())]
            if clip:
                nn.utils.clip_grad_norm_(clip, cfg.grad_clip)
        if masks is not None:
            saved = [p.detach().clone() for p in train_params]
        opt.step()
        if masks is not None:
            with torch.no_grad():
                for p, old in zip(train_params, saved):
                    m = masks[name_of[id(p)]]
                    p.copy_(torch.where(m, p, old))  # bit-for-bit restore outside the circuit
                    for v in opt.state[p].values():
                        if isinstance(v, torch.Tensor) and v.shape == p.shape:
                            v.masked_fill_(~m, 0)
        result.losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, model, masks)
        if (step + 1) % cfg.log_every == 0 or step == cfg.steps - 1:
            log(step + 1)
            if progress:
                bar.set_postfix({task.primary: f"{result.log[-1][task.primary]:.3g}"})
    model.eval()
    return result


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

    Args:
        model: the model to tune (copied unless ``inplace``).
        task: a :class:`TuneTask` (:func:`~mechnb.circuits.tasks.disagreement_task`, ...).
        config: a :class:`TuneConfig`.
        callback: ``callback(step, model, masks)`` after every optimiser step (``masks`` is the
            parameter mask used at that step) - e.g. to check that nothing outside moved.

    Returns:
        :class:`TuneResult` with the task metrics, held-out losses, circuit sizes and trainable
        fraction per logged step, and every discovered circuit.
    """
    config = config or TuneConfig()
    _check_inputs(model, task, config)
    if not inplace:
        model = copy.deepcopy(model)
    if device is not None:
        model.to(resolve_device(device))
    graph = Graph.from_model(model)
    state: dict[str, Any] = {}

    def mask_fn(step: int) -> dict[str, torch.Tensor] | None:
        if step % config.discover_every:
            return None
        circuit, scores = discover(model, task, config.top_n, config.method, config.ig_steps, graph)
        state["circuit"] = circuit
        state["masks"] = parameter_mask(model, circuit)
        result_circuits.append((step, [e.name for e in circuit.edges]))
        result_scores.append(scores.values.tolist())
        return state["masks"]

    result_circuits: list[tuple[int, list[str]]] = []
    result_scores: list[list[float]] = []
    res = _run(
        model, task, config, "circuit", forward=model, train_params=list(model.parameters()),
        eval_model=lambda: model, mask_fn=mask_fn, fraction=lambda: trainable_fraction(model, state["masks"]),
        extra_log=lambda: {"n_edges": state["circuit"].n_edges, "n_nodes": state["circuit"].n_nodes},
        progress=progress, callback=callback,
    )
    res.circuits = result_circuits
    res.circuit_scores = result_scores
    res.model = model
    return res


# --------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------
class LoRA(nn.Module):
    """Low-rank adapters ``W + (alpha / r) A B`` on every attention and MLP weight of a TinyTransformer.

    Attention weights are adapted as the whole matrices a dense implementation would hold
    (``W_Q`` as ``[d_model, n_heads * d_head]``, ``W_O`` as ``[n_heads * d_head, d_model]``), MLP
    weights as they are. ``A`` is Kaiming-uniform, ``B`` zero, so training starts at the base model.
    The base model's parameters are not modified until :meth:`merge`.
    """

    TARGETS = ("attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "mlp.W_in", "mlp.W_out")

    def __init__(self, model: TinyTransformer, rank: int = 4, alpha: float = 8.0, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(model, TinyTransformer):
            raise TypeError(f"model: expected a mechnb.models.TinyTransformer, got {type(model).__name__}")
        self.rank = check_positive_int("rank", rank)
        self.scale = check_positive_float("alpha", alpha) / rank
        object.__setattr__(self, "base", model)  # not a submodule: only the adapters are LoRA parameters
        g = torch.Generator().manual_seed(seed)
        self.names: list[str] = []
        self.A = nn.ParameterList()
        self.B = nn.ParameterList()
        for name, p in model.named_parameters():
            if not any(name.endswith(t) for t in self.TARGETS):
                continue
            rows, cols = self._matrix_shape(name, p)
            bound = 1.0 / math.sqrt(rows)
            self.A.append(nn.Parameter((torch.rand(rows, rank, generator=g) * 2 - 1).mul_(bound).to(p.device)))
            self.B.append(nn.Parameter(torch.zeros(rank, cols, device=p.device)))
            self.names.append(name)

    @staticmethod
    def _matrix_shape(name: str, p: torch.Tensor) -> tuple[int, int]:
        if name.endswith("W_O"):
            return p.shape[0] * p.shape[1], p.shape[2]
        if name.split(".")[-1] in ("W_Q", "W_K", "W_V"):
            return p.shape[1], p.shape[0] * p.shape[2]
        return p.shape[0], p.shape[1]

    def delta(self, i: int) -> torch.Tensor:
        """The update of adapted weight ``names[i]`` in the parameter's own shape."""
        p = dict(self.base.named_parameters())[self.names[i]]
        d = (self.A[i] @ self.B[i]) * self.scale
        name = self.names[i]
        if name.endswith("W_O"):
            return d.view(p.shape)
        if name.split(".")[-1] in ("W_Q", "W_K", "W_V"):
            return d.view(p.shape[1], p.shape[0], p.shape[2]).permute(1, 0, 2)
        return d

    def adapted(self) -> dict[str, torch.Tensor]:
        params = dict(self.base.named_parameters())
        return {n: params[n].detach() + self.delta(i) for i, n in enumerate(self.names)}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.base, self.adapted(), (tokens,), strict=False)

    @torch.no_grad()
    def merged(self) -> TinyTransformer:
        """A copy of the base model with the adapters merged into its weights."""
        m = copy.deepcopy(self.base)
        params = dict(m.named_parameters())
        for i, n in enumerate(self.names):
            params[n].add_(self.delta(i))
        return m

    @torch.no_grad()
    def merge(self) -> TinyTransformer:
        """Merge the adapters into the base model in place and return it."""
        params = dict(self.base.named_parameters())
        for i, n in enumerate(self.names):
            params[n].add_(self.delta(i))
            self.B[i].zero_()
        return self.base

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


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
    """Baselines with the same logging as :func:`circuit_tune`.

    ``mode="full"``: every parameter; ``"nodes"``: every parameter a node owns
    (:func:`node_parameter_mask` - equal to circuit-tuning with a circuit of every edge);
    ``"lora"``: rank-``config.lora_rank`` adapters on all attention and MLP weights (merged into
    the returned model at the end; ``trainable_fraction`` = adapter size / model size).
    """
    config = config or TuneConfig()
    _check_inputs(model, task, config)
    check_choice("mode", mode, ["full", "nodes", "lora"])
    if not inplace:
        model = copy.deepcopy(model)
    if device is not None:
        model.to(resolve_device(device))
    n_model = sum(p.numel() for p in model.parameters())
    if mode == "lora":
        lora = LoRA(model, config.lora_rank, config.lora_alpha, seed=config.seed)
        frac = lora.n_parameters() / n_model
        flags = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)  # only the adapters are trained
        try:
            lora_cfg = config if config.lora_lr is None else TuneConfig(**{**config.to_dict(), "lr": config.lora_lr})
            res = _run(model, task, lora_cfg, mode, forward=lora, train_params=list(lora.parameters()),
                       eval_model=lora.merged, mask_fn=None, fraction=lambda: frac, extra_log=dict,
                       progress=progress, callback=None)
        finally:
            for p, f in zip(model.parameters(), flags):
                p.requires_grad_(f)
        lora.merge()
    else:
        if mode == "full":
            params = list(model.parameters())
        else:
            owned = node_parameter_mask(model)
            params = [p for n, p in model.named_parameters() if bool(owned[n].all())]
        frac = sum(p.numel() for p in params) / n_model
        res = _run(model, task, config, mode, forward=model, train_params=params, eval_model=lambda: model,
                   mask_fn=None, fraction=lambda: frac, extra_log=dict, progress=progress, callback=None)
    res.model = model
    return res


# --------------------------------------------------------------------------------------
# Node redundancy
# --------------------------------------------------------------------------------------
@dataclass
class NodeRedundancy:
    """Circuit-tuning results across circuit sizes.

    ``sizes``: ``top_n`` per run; ``final_metric``: the task's primary metric after tuning;
    ``n_edges`` / ``n_nodes``: size of the last discovered circuit; ``trainable_fraction``: mean
    fraction of parameters trainable over the run; ``base_metric``: before tuning;
    ``general_loss`` / ``base_general_loss``: held-out general loss after / before tuning.
    """

    sizes: list[int]
    final_metric: list[float]
    n_edges: list[int]
    n_nodes: list[int]
    trainable_fraction: list[float]
    base_metric: float
    primary: str
    higher_is_better: bool
    general_loss: list[float] = field(default_factory=list)
    base_general_loss: float = float("nan")
    results: list[TuneResult] = field(default_factory=list, repr=False)

    def saturation_point(self, tol: float = 0.1) -> int | None:
        """Smallest size reaching ``1 - tol`` of the largest improvement over ``base_metric``."""
        sign = 1.0 if self.higher_is_better else -1.0
        gains = [sign * (m - self.base_metric) for m in self.final_metric]
        best = max(gains)
        if best <= 0:
            return None
        for s, gain in zip(self.sizes, gains):
            if gain >= (1 - tol) * best:
                return s
        return None


def node_redundancy(
    model: TinyTransformer,
    task: TuneTask,
    sizes: Sequence[int],
    config: TuneConfig | None = None,
    *,
    progress: bool = True,
) -> NodeRedundancy:
    """Circuit-tune a fresh copy of ``model`` for each circuit size in ``sizes`` (paper Sec. 3 / Fig. 3).

    Records the final task metric and the trainable-parameter fraction per size so the point
    where adding nodes stops helping (:meth:`NodeRedundancy.saturation_point`) can be read off.
    """
    config = config or TuneConfig()
    _check_inputs(model, task, config)
    sizes = [check_positive_int(f"sizes[{i}]", s, minimum=0) for i, s in enumerate(sizes)]
    if not sizes:
        raise ValueError("sizes: expected at least one circuit size, got an empty sequence")
    base_eval = _evaluate(model, task)
    base = base_eval[task.primary]
    runs = []
    for s in tqdm(sizes, desc="node redundancy", disable=not progress, leave=False):
        cfg = TuneConfig(**{**config.to_dict(), "top_n": s})
        runs.append(circuit_tune(model, task, cfg, progress=False))
    return NodeRedundancy(
        sizes=list(sizes), final_metric=[r.final[task.primary] for r in runs],
        n_edges=[int(r.final["n_edges"]) for r in runs], n_nodes=[int(r.final["n_nodes"]) for r in runs],
        trainable_fraction=[r.mean_trainable_fraction() for r in runs], base_metric=float(base),
        primary=task.primary, higher_is_better=task.higher_is_better,
        general_loss=[r.final["general_loss"] for r in runs], base_general_loss=float(base_eval["general_loss"]),
        results=runs,
    )


# --------------------------------------------------------------------------------------
# Circuits over the course of tuning
# --------------------------------------------------------------------------------------
@dataclass
class CircuitHistory:
    """The circuits a circuit-tuning run discovered: per re-discovery step, the circuit, its size
    and its overlap (intersection over union) with the first one."""

    steps: list[int]
    circuits: list[Circuit]
    scores: list[EdgeScores]
    n_edges: list[int]
    n_nodes: list[int]
    edge_overlap: list[float]
    node_overlap: list[float]


def circuit_history(result: TuneResult, graph: Graph) -> CircuitHistory:
    """Rebuild the :class:`Circuit` objects recorded in ``result.circuits`` (circuit-tuning runs only)."""
    if not isinstance(result, TuneResult):
        raise TypeError(f"result: expected a TuneResult, got {type(result).__name__}")
    if not result.circuits:
        raise ValueError(f"result: expected a circuit-tuning run with recorded circuits, got mode {result.mode!r}")
    circuits = [Circuit.from_edges(graph, names, prune=False) for _, names in result.circuits]
    scores = [EdgeScores(graph, graph.edge_matrix(torch.tensor(v)), result.config.get("method", "eap"))
              for v in result.circuit_scores]
    first = circuits[0]
    return CircuitHistory(
        steps=[s for s, _ in result.circuits], circuits=circuits, scores=scores,
        n_edges=[c.n_edges for c in circuits],
        n_nodes=[c.n_nodes for c in circuits], edge_overlap=[c.overlap(first, "edges") for c in circuits],
        node_overlap=[c.overlap(first, "nodes") for c in circuits],
    )


def comparison_table(results: dict[str, dict[str, TuneResult]], digits: int = 3) -> str:
    """A plain-text table of ``results[task][method]``: task metric before -> after, held-out general
    loss before -> after, and the mean fraction of parameters trained."""
    if not results:
        raise ValueError("results: expected {task: {method: TuneResult}}, got nothing")
    rows = [("task", "method", "task metric", "before", "after", "general loss before", "after", "Δ general",
             "params trained")]
    for task, runs in results.items():
        for method, r in runs.items():
            a, b = r.initial, r.final
            rows.append((task, method, r.primary, f"{a[r.primary]:.{digits}f}", f"{b[r.primary]:.{digits}f}",
                         f"{a['general_loss']:.{digits}f}", f"{b['general_loss']:.{digits}f}",
                         f"{b['general_loss'] - a['general_loss']:+.{digits}f}", f"{r.mean_trainable_fraction():.1%}"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
