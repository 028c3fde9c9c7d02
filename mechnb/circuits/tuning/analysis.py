"""Reading tuning runs: circuit size sweeps (:func:`node_redundancy`, paper Sec. 3), the circuits
of one run over time (:func:`circuit_history`) and a comparison table of methods."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm

from mechnb._checks import check_positive_int
from mechnb.circuits.circuit import Circuit, EdgeScores
from mechnb.circuits.graph import Graph
from mechnb.circuits.tuning.config import TuneConfig, TuneResult, _check_inputs
from mechnb.circuits.tuning.loop import _evaluate, circuit_tune
from mechnb.circuits.tuning_tasks import TuneTask
from mechnb.models import TinyTransformer

__all__ = ["NodeRedundancy", "node_redundancy", "CircuitHistory", "circuit_history", "comparison_table"]


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
        runs.append(circuit_tune(model, task, replace(config, top_n=s), progress=False))
    return NodeRedundancy(
        sizes=list(sizes), final_metric=[r.final[task.primary] for r in runs],
        n_edges=[int(r.final["n_edges"]) for r in runs], n_nodes=[int(r.final["n_nodes"]) for r in runs],
        trainable_fraction=[r.mean_trainable_fraction() for r in runs], base_metric=float(base),
        primary=task.primary, higher_is_better=task.higher_is_better,
        general_loss=[r.final["general_loss"] for r in runs], base_general_loss=float(base_eval["general_loss"]),
        results=runs,
    )


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
