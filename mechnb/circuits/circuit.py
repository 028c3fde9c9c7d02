"""Circuits (sets of edges) and per-edge scores.

A :class:`Circuit` is a set of edges of a :class:`~mechnb.circuits.graph.Graph`; built from
:class:`EdgeScores` it keeps the top edges by ``|score|`` and prunes dangling ones (edges whose
source is unreachable from ``input`` or whose target cannot reach ``logits``). :class:`EdgeScores`
holds one signed score per edge, from an attribution method (:func:`~mechnb.circuits.attribute`),
ACDC (which also selects its own circuit) or a random ranking (:meth:`EdgeScores.random`, the
baseline every ranking must beat).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mechnb._checks import check_choice, check_positive_int, check_seed, check_tensor
from mechnb.circuits.graph import Edge, Graph
from mechnb.io import saveable

__all__ = ["Circuit", "EdgeScores", "prune_dangling", "noise_floored", "NOISE_RTOL"]


NOISE_RTOL = 1e-5
"""Scores whose magnitude is at most this fraction of the largest are float noise (they tie at 0)."""


def noise_floored(values: np.ndarray) -> np.ndarray:
    """``|values|`` with the entries at most ``NOISE_RTOL * max |values|`` set to 0."""
    mag = np.abs(np.asarray(values, dtype=np.float64))
    if mag.size:
        mag[mag <= NOISE_RTOL * mag.max()] = 0.0
    return mag


def prune_dangling(graph: Graph, mask: torch.Tensor) -> torch.Tensor:
    """Drop dangling edges: keep ``u -> v`` iff ``u`` is reachable from ``input`` and ``v`` reaches ``logits``."""
    mask = mask.clone().cpu() & graph.valid
    node_of_reader = [r[0] for r in graph.readers]
    reached = {"input"}
    for j, node in enumerate(node_of_reader):  # readers are in forward order
        srcs = mask[:, j].nonzero().flatten().tolist()
        if any(graph.writers[i] in reached for i in srcs):
            reached.add(node)
    useful = {"logits"}
    for i in range(graph.n_writers - 1, -1, -1):  # writers in reverse forward order
        dsts = mask[i].nonzero().flatten().tolist()
        if any(node_of_reader[j] in useful for j in dsts):
            useful.add(graph.writers[i])
    keep_src = torch.tensor([w in reached for w in graph.writers])
    keep_dst = torch.tensor([n in useful for n in node_of_reader])
    return mask & keep_src[:, None] & keep_dst[None, :]


@saveable()
@dataclass
class Circuit:
    """A set of edges of a :class:`Graph` (``mask [n_writers, n_readers]`` bool, pruned).

    Build with :meth:`EdgeScores.top_n`, :meth:`EdgeScores.threshold`, :meth:`from_edges`,
    :meth:`full` or :meth:`empty`.
    """

    graph: Graph
    mask: torch.Tensor

    def __post_init__(self) -> None:
        check_tensor("mask", self.mask, shape=(self.graph.n_writers, self.graph.n_readers),
                     dims="(n_writers, n_readers)")
        if self.mask.dtype != torch.bool:
            raise TypeError(f"mask: expected a bool tensor, got dtype {self.mask.dtype}")
        self.mask = self.mask.cpu() & self.graph.valid

    @classmethod
    def from_edges(cls, graph: Graph, edges: Sequence[Edge | str], prune: bool = True) -> Circuit:
        """The circuit made of ``edges`` (``Edge`` objects or names like ``"input->a0.h1<v>"``)."""
        mask = torch.zeros(graph.n_writers, graph.n_readers, dtype=torch.bool)
        for e in edges:
            name = e.name if isinstance(e, Edge) else e
            if name not in graph.edge_index:
                raise ValueError(f"edges: {name!r} is not an edge of the graph")
            edge = graph.edges[graph.edge_index[name]]
            mask[graph.writer_index[edge.src], graph.reader_index[(edge.dst, edge.letter)]] = True
        return cls(graph, prune_dangling(graph, mask) if prune else mask)

    # -- sharing as plain JSON -----------------------------------------------------------
    def to_json(self, scores: EdgeScores | None = None, *, indent: int | None = 1) -> str:
        """The circuit as plain JSON, for sharing and for other tools.

        ``{"format": "mechnb.circuit", "version": 1, "graph": {"n_layers", "n_heads", "attn_only"},
        "edges": [edge names, graph order], "nodes": [node names]}``, plus ``"scores": {edge name:
        score}`` for the circuit's edges when ``scores`` (:class:`EdgeScores` of the same graph) is
        given. :meth:`from_json` reads it back; unlike :func:`mechnb.io.save` nothing is checksummed.
        """
        doc: dict[str, Any] = {"format": "mechnb.circuit", "version": 1, "graph": self.graph.config(),
                               "edges": [e.name for e in self.edges], "nodes": self.nodes}
        if scores is not None:
            if not isinstance(scores, EdgeScores):
                raise TypeError(f"scores: expected an EdgeScores, got {type(scores).__name__}")
            if scores.graph.config() != self.graph.config():
                raise ValueError(f"scores: expected scores of the circuit's graph {self.graph.config()}, "
                                 f"got scores of {scores.graph.config()}")
            values = scores.as_dict()
            bad = [e for e in doc["edges"] if not np.isfinite(values[e])]
            if bad:
                raise ValueError(f"scores: expected finite scores, got {values[bad[0]]} for edge {bad[0]!r}")
            doc["scores"] = {e: values[e] for e in doc["edges"]}
        return json.dumps(doc, indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> Circuit:
        """The circuit :meth:`to_json` wrote (the JSON text or its parsed dict), mask exactly as written."""
        if isinstance(text, str):
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"text: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        elif isinstance(text, dict):
            doc = text
        else:
            raise TypeError(f"text: expected a JSON string or a dict, got {type(text).__name__}")
        if not isinstance(doc, dict) or doc.get("format") != "mechnb.circuit":
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(f'text: expected a mechnb circuit ({{"format": "mechnb.circuit"}}), got {got!r}')
        if doc.get("version") != 1:
            raise ValueError(f"text: circuit JSON version {doc.get('version')!r}; this mechnb reads version 1")
        config, edges = doc.get("graph"), doc.get("edges")
        if not isinstance(config, dict) or not isinstance(edges, list) or not all(isinstance(e, str) for e in edges):
            raise ValueError('text: expected "graph" (an object) and "edges" (a list of edge names)')
        try:
            graph = Graph(**config)
        except (TypeError, ValueError) as e:
            raise ValueError(f"text: graph {config} does not describe a Graph ({e})") from None
        return cls.from_edges(graph, edges, prune=False)

    @classmethod
    def full(cls, graph: Graph) -> Circuit:
        return cls(graph, graph.valid.clone())

    @classmethod
    def empty(cls, graph: Graph) -> Circuit:
        return cls(graph, torch.zeros_like(graph.valid))

    @property
    def edges(self) -> list[Edge]:
        """The circuit's edges, in graph order."""
        return [e for e, keep in zip(self.graph.edges, self.graph.edge_vector(self.mask).tolist()) if keep]

    @property
    def n_edges(self) -> int:
        return int(self.mask.sum())

    @property
    def nodes(self) -> list[str]:
        """Nodes touched by an edge of the circuit, in forward order."""
        used = set()
        for e in self.edges:
            used.add(e.src)
            used.add(e.dst)
        return [n for n in self.graph.nodes if n in used]

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    def overlap(self, other: Circuit, level: str = "edges") -> float:
        """Intersection over union of the edge (``level="edges"``) or node sets of two circuits."""
        check_choice("level", level, ["edges", "nodes"])
        if level == "edges":
            a, b = self.mask, other.mask
            union = int((a | b).sum())
            return float((a & b).sum()) / union if union else 1.0
        sa, sb = set(self.nodes), set(other.nodes)
        return len(sa & sb) / len(sa | sb) if sa | sb else 1.0

    def __repr__(self) -> str:
        return f"Circuit({self.n_edges} edges, {self.n_nodes} nodes of {self.graph.n_edges} / {self.graph.n_nodes})"


@saveable()
@dataclass
class EdgeScores:
    """One signed score per edge: ``scores [n_writers, n_readers]`` (0 off the graph).

    ``score(u -> v)`` estimates ``m(edge patched) - m(clean)`` under ``ablation`` (the reference
    the patched edge carries, :mod:`~mechnb.circuits.ablation`); ``metric_clean`` is ``m`` on the
    clean prompts and ``metric_corrupted`` ``m`` with every edge patched (for ``"corrupted"``: on the
    corrupted prompts). ``circuit`` is the circuit a method selected itself (ACDC), else ``None``.
    """

    graph: Graph
    scores: torch.Tensor
    method: str
    metric_clean: float = float("nan")
    metric_corrupted: float = float("nan")
    info: dict[str, Any] = field(default_factory=dict)
    ablation: str = "corrupted"
    circuit: Circuit | None = None

    def __post_init__(self) -> None:
        check_tensor("scores", self.scores, shape=(self.graph.n_writers, self.graph.n_readers),
                     dims="(n_writers, n_readers)", floating=True)

    @classmethod
    def random(cls, graph: Graph, seed: int = 0) -> EdgeScores:
        """A random ranking: i.i.d. standard normal scores from ``seed`` (the baseline of a
        faithfulness curve or an ROC: what any method's ranking must beat)."""
        check_seed("seed", seed)
        vals = torch.randn(graph.n_edges, generator=torch.Generator().manual_seed(seed))
        return cls(graph, graph.edge_matrix(vals), "random", info={"seed": seed})

    @property
    def values(self) -> torch.Tensor:
        """Per-edge scores ``(n_edges,)`` in ``graph.edges`` order."""
        return self.graph.edge_vector(self.scores)

    def as_dict(self) -> dict[str, float]:
        return {e.name: float(v) for e, v in zip(self.graph.edges, self.values.tolist())}

    def magnitudes(self) -> np.ndarray:
        """``|score|`` per edge (``graph.edges`` order) with float noise set to 0: entries at most
        :data:`NOISE_RTOL` times the largest ``|score|`` carry no order (float32 rounding, which
        differs between CPUs, would decide it), so they tie."""
        return noise_floored(self.values.double().numpy())

    def ranking(self) -> list[Edge]:
        """Edges sorted by ``|score|`` (:meth:`magnitudes`), largest first (ties broken by graph order)."""
        order = np.argsort(-self.magnitudes(), kind="stable")
        return [self.graph.edges[i] for i in order]

    def _top_mask(self, k: int) -> torch.Tensor:
        order = np.argsort(-self.magnitudes(), kind="stable")[:k]
        keep = torch.zeros(self.graph.n_edges, dtype=torch.bool)
        keep[torch.as_tensor(order, dtype=torch.long)] = True
        return self.graph.edge_matrix(keep.float()).bool()

    def top_n(self, n: int, prune: bool = True, fill: bool = False) -> Circuit:
        """The ``n`` edges with the largest ``|score|``, then dangling edges pruned (so ``<= n`` edges).

        With ``fill=True`` edges keep being added in score order until the *pruned* circuit has
        at least ``n`` edges (the smallest such prefix; pruned size grows monotonically with the
        prefix), so a circuit of ``n`` edges never collapses to a few or none because its top
        edges were dangling.
        """
        check_positive_int("n", n, minimum=0)
        if not prune:
            return Circuit(self.graph, self._top_mask(n))
        if not fill or n == 0:
            return Circuit(self.graph, prune_dangling(self.graph, self._top_mask(n)))
        n = min(n, self.graph.n_edges)
        lo, hi = n, self.graph.n_edges  # smallest k in [lo, hi] with |prune(top_k)| >= n
        while lo < hi:
            mid = (lo + hi) // 2
            if int(prune_dangling(self.graph, self._top_mask(mid)).sum()) >= n:
                hi = mid
            else:
                lo = mid + 1
        return Circuit(self.graph, prune_dangling(self.graph, self._top_mask(lo)))

    def threshold(self, tau: float, prune: bool = True) -> Circuit:
        """Edges with ``|score| >= tau``, dangling edges pruned."""
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not np.isfinite(tau) or tau < 0:
            raise ValueError(f"tau: expected a finite number >= 0, got {tau!r}")
        mask = (self.scores.abs() >= tau) & self.graph.valid
        return Circuit(self.graph, prune_dangling(self.graph, mask) if prune else mask)
