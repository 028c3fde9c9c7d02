"""Edge attribution (EAP, EAP-IG, exact patching), circuits and faithfulness.

* **EAP** (edge attribution patching, Syed, Rager & Conmy 2023, arXiv:2310.10348): the effect
  on the metric ``m`` of patching edge ``u -> v`` is approximated to first order at the clean
  point,

      score(u -> v) = sum_{pos} (out_u(corrupted) - out_u(clean)) . d m / d input_v (clean),

  averaged over the batch (``m`` is a batch mean). One corrupted forward pass caches every
  writer output, one clean forward + backward gives every reader's input gradient, so all
  edges cost two forward passes and one backward pass. Equivalently, it is the exact gradient
  ``d m / d alpha_uv`` at ``alpha = 0`` of the per-edge-mask model of :mod:`.graph`.
* **EAP-IG** (Hanna, Pezzelle & Belinkov 2024, arXiv:2403.17806, Sec. 3): replace the clean
  gradient by the average over ``ig_steps`` points on the straight line between the corrupted
  and clean *input embeddings* (integrated gradients, Sundararajan et al. 2017). We use the
  right Riemann sum ``alpha_k = k / ig_steps, k = 1..ig_steps`` so that ``ig_steps=1`` is EAP;
  the reference code uses the left sum ``k = 0..ig_steps-1``.
* **exact**: patch each edge for real and record ``m(patched) - m(clean)`` (one forward pass
  per edge: the slow oracle).

A :class:`Circuit` keeps the top edges by ``|score|`` and prunes dangling ones (edges whose
source is unreachable from ``input`` or whose target cannot reach ``logits``).
:func:`faithfulness` is ``(m(circuit) - m(empty)) / (m(full) - m(empty))`` with every edge
outside the circuit patched (Wang et al. 2023; Hanna et al. 2024 Sec. 4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mechnb import metrics
from mechnb._checks import check_array, check_choice, check_positive_int, check_tensor
from mechnb._torch import eval_mode
from mechnb.circuits.graph import Edge, Graph, WriterCache, cache_writers, patched_forward, reader_gradients
from mechnb.models import TinyTransformer
from mechnb.tasks import PromptPairs

__all__ = [
    "Metric",
    "logit_diff",
    "EdgeScores",
    "Circuit",
    "attribute",
    "faithfulness",
    "faithfulness_curve",
    "FaithfulnessCurve",
    "rank_agreement",
]

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


# --------------------------------------------------------------------------------------
# Circuits
# --------------------------------------------------------------------------------------
def _prune(graph: Graph, mask: torch.Tensor) -> torch.Tensor:
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
        return cls(graph, _prune(graph, mask) if prune else mask)

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


@dataclass
class EdgeScores:
    """One signed score per edge: ``scores [n_writers, n_readers]`` (0 off the graph).

    ``score(u -> v)`` estimates ``m(edge patched) - m(clean)``; ``metric_clean`` and
    ``metric_corrupted`` are ``m`` on the clean and corrupted prompts.
    """

    graph: Graph
    scores: torch.Tensor
    method: str
    metric_clean: float = float("nan")
    metric_corrupted: float = float("nan")
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def values(self) -> torch.Tensor:
        """Per-edge scores ``(n_edges,)`` in ``graph.edges`` order."""
        return self.graph.edge_vector(self.scores)

    def as_dict(self) -> dict[str, float]:
        return {e.name: float(v) for e, v in zip(self.graph.edges, self.values.tolist())}

    def ranking(self) -> list[Edge]:
        """Edges sorted by ``|score|``, largest first (ties broken by graph order)."""
        order = np.argsort(-np.abs(self.values.double().numpy()), kind="stable")
        return [self.graph.edges[i] for i in order]

    def _top_mask(self, k: int) -> torch.Tensor:
        order = np.argsort(-np.abs(self.values.double().numpy()), kind="stable")[:k]
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
            return Circuit(self.graph, _prune(self.graph, self._top_mask(n)))
        n = min(n, self.graph.n_edges)
        lo, hi = n, self.graph.n_edges  # smallest k in [lo, hi] with |prune(top_k)| >= n
        while lo < hi:
            mid = (lo + hi) // 2
            if int(_prune(self.graph, self._top_mask(mid)).sum()) >= n:
                hi = mid
            else:
                lo = mid + 1
        return Circuit(self.graph, _prune(self.graph, self._top_mask(lo)))

    def threshold(self, tau: float, prune: bool = True) -> Circuit:
        """Edges with ``|score| >= tau``, dangling edges pruned."""
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not np.isfinite(tau) or tau < 0:
            raise ValueError(f"tau: expected a finite number >= 0, got {tau!r}")
        mask = (self.scores.abs() >= tau) & self.graph.valid
        return Circuit(self.graph, _prune(self.graph, mask) if prune else mask)


# --------------------------------------------------------------------------------------
# Attribution
# --------------------------------------------------------------------------------------
def _resolve(clean: torch.Tensor | PromptPairs, corrupted: torch.Tensor | None, model: TinyTransformer,
             need_corrupted: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
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


def _check_metric(metric: Any) -> None:
    if not callable(metric):
        raise TypeError(
            f"metric: expected a callable metric(logits, batch) -> scalar tensor, got {type(metric).__name__}"
        )


def attribute(
    model: TinyTransformer,
    graph: Graph,
    clean: torch.Tensor | PromptPairs,
    corrupted: torch.Tensor | None = None,
    metric: Metric = logit_diff,
    method: str = "eap",
    ig_steps: int = 5,
    progress: bool = False,
) -> EdgeScores:
    """Score every edge of ``graph`` by its effect on ``metric`` when patched clean -> corrupted.

    Args:
        model: a :class:`TinyTransformer` (its graph is ``graph``).
        clean: ``(batch, pos)`` tokens, or a :class:`PromptPairs` (then ``corrupted`` defaults to
            its corrupted prompts and ``metric`` receives the pairs as ``batch``).
        corrupted: ``(batch, pos)`` tokens of the same shape.
        metric: ``metric(logits, batch) -> scalar`` (a batch mean, e.g. :func:`logit_diff`).
        method: ``"eap"`` (2 forward + 1 backward), ``"eap-ig"`` (2 forward + ``ig_steps``
            forward/backward) or ``"exact"`` (one patched forward per edge).
        ig_steps: integration steps for ``"eap-ig"``.

    Returns:
        :class:`EdgeScores`; ``score ~ m(edge patched) - m(clean)`` summed over positions and
        averaged over the batch.
    """
    graph.check_model(model)
    _check_metric(metric)
    check_choice("method", method, ["eap", "eap-ig", "exact"])
    check_positive_int("ig_steps", ig_steps)
    clean_t, corr_t, batch = _resolve(clean, corrupted, model)
    assert corr_t is not None
    with eval_mode(model):
        corr = cache_writers(model, graph, corr_t)
        m_corr = float(metric(corr.logits, batch))
        score = _SCORERS[method]
        scores, m_clean = score(model, graph, clean_t, corr, lambda lg: metric(lg, batch), ig_steps, progress)
    return EdgeScores(graph, scores.detach().float().cpu(), method, m_clean, m_corr,
                      {"ig_steps": ig_steps} if method == "eap-ig" else {})


_LogitsMetric = Callable[[torch.Tensor], torch.Tensor]  # the metric with its batch bound: m(logits) -> scalar
_Scorer = Callable[[TinyTransformer, Graph, torch.Tensor, WriterCache, _LogitsMetric, int, bool],
                   tuple[torch.Tensor, float]]


def _eap_scores(model: TinyTransformer, graph: Graph, clean_t: torch.Tensor, corr: WriterCache,
                m: _LogitsMetric, ig_steps: int, progress: bool) -> tuple[torch.Tensor, float]:
    """EAP (Syed et al. 2023): ``(out_corr - out_clean) . dm/d input`` at the clean point, per edge.

    Returns the scores ``[n_writers, n_readers]`` (0 off the graph) and ``m(clean)``; ``ig_steps``
    and ``progress`` are unused (every scorer takes the same arguments).
    """
    out, G, m_clean = reader_gradients(model, graph, clean_t, m)
    return torch.einsum("wbpd,rbpd->wr", corr.out - out, G) * graph.valid.to(corr.out.device), float(m_clean)


def _eap_ig_scores(model: TinyTransformer, graph: Graph, clean_t: torch.Tensor, corr: WriterCache,
                   m: _LogitsMetric, ig_steps: int, progress: bool) -> tuple[torch.Tensor, float]:
    """EAP-IG (Hanna et al. 2024, Sec. 3): the clean gradient replaced by its mean at the
    embeddings ``e_corr + (k / ig_steps)(e_clean - e_corr)``, ``k = 1..ig_steps`` (right Riemann sum).

    Returns the scores ``[n_writers, n_readers]`` and ``m(clean)``.
    """
    clean_cache = cache_writers(model, graph, clean_t)
    e_clean, e_corr = clean_cache.embed, corr.embed
    G_sum = None
    for k in tqdm(range(1, ig_steps + 1), desc="EAP-IG", disable=not progress, leave=False):
        a = k / ig_steps

        def interp(x: torch.Tensor, a: float = a) -> torch.Tensor:
            return e_corr + a * (e_clean - e_corr)

        _, G, _ = reader_gradients(model, graph, clean_t, m, interp)
        G_sum = G if G_sum is None else G_sum + G
    scores = torch.einsum("wbpd,rbpd->wr", corr.out - clean_cache.out, G_sum / ig_steps)
    return scores * graph.valid.to(corr.out.device), float(m(clean_cache.logits))


@torch.no_grad()
def _exact_scores(model: TinyTransformer, graph: Graph, clean_t: torch.Tensor, corr: WriterCache,
                  m: _LogitsMetric, ig_steps: int, progress: bool) -> tuple[torch.Tensor, float]:
    """Exact patching: ``m(edge patched) - m(clean)`` with one patched forward pass per edge.

    Returns the scores ``[n_writers, n_readers]`` and ``m(clean)``; ``ig_steps`` is unused.
    """
    m_clean = float(m(model(clean_t)))
    vals = torch.zeros(graph.n_edges, device=corr.out.device)
    alpha = torch.zeros(graph.n_writers, graph.n_readers, device=corr.out.device, dtype=corr.out.dtype)
    it = tqdm(graph.valid.nonzero().tolist(), desc="exact patching", disable=not progress, leave=False)
    for k, (i, j) in enumerate(it):
        alpha.zero_()
        alpha[i, j] = 1.0
        vals[k] = m(patched_forward(model, graph, clean_t, corr.out, alpha)) - m_clean
    return graph.edge_matrix(vals), m_clean


_SCORERS: dict[str, _Scorer] = {"eap": _eap_scores, "eap-ig": _eap_ig_scores, "exact": _exact_scores}


# --------------------------------------------------------------------------------------
# Faithfulness
# --------------------------------------------------------------------------------------
def _reference(model: TinyTransformer, graph: Graph, clean_t: torch.Tensor, corr_t: torch.Tensor | None,
               ablation: str) -> torch.Tensor:
    if ablation == "corrupted":
        assert corr_t is not None
        return cache_writers(model, graph, corr_t).out
    return cache_writers(model, graph, clean_t).out.mean(1, keepdim=True)


def faithfulness(
    model: TinyTransformer,
    circuit: Circuit,
    clean: torch.Tensor | PromptPairs,
    corrupted: torch.Tensor | None = None,
    metric: Metric = logit_diff,
    ablation: str = "corrupted",
) -> float:
    """``(m(circuit) - m(empty)) / (m(full) - m(empty))`` with every edge outside ``circuit`` patched.

    ``ablation="corrupted"``: patched edges carry the writer's output on the corrupted prompt;
    ``"mean"``: its mean over the clean batch (per position; ``corrupted`` is not needed).
    ``m(full)`` is the unpatched model, ``m(empty)`` the model with every edge patched. Equals 1
    for the full circuit and 0 for the empty one. Raises ``ValueError`` if ``m(full) == m(empty)``.
    """
    graph = circuit.graph
    graph.check_model(model)
    _check_metric(metric)
    check_choice("ablation", ablation, ["corrupted", "mean"])
    clean_t, corr_t, batch = _resolve(clean, corrupted, model, need_corrupted=ablation == "corrupted")
    curve = _faithfulness_values(model, graph, clean_t, corr_t, batch, metric, ablation, [circuit.mask])
    return curve[0]


def _faithfulness_values(model: TinyTransformer, graph: Graph, clean_t: torch.Tensor, corr_t: torch.Tensor | None,
                         batch: Any, metric: Metric, ablation: str, masks: list[torch.Tensor]) -> list[float]:
    with eval_mode(model), torch.no_grad():
        ref = _reference(model, graph, clean_t, corr_t, ablation)
        valid = graph.valid.to(ref.device, ref.dtype)
        m_full = float(metric(model(clean_t), batch))
        m_empty = float(metric(patched_forward(model, graph, clean_t, ref, valid), batch))
        if m_full == m_empty:
            raise ValueError(f"metric: equal on the full and empty circuits ({m_full}); faithfulness is undefined")
        out = []
        for mask in masks:
            alpha = valid * (~mask.to(ref.device)).to(ref.dtype)
            m = float(metric(patched_forward(model, graph, clean_t, ref, alpha), batch))
            out.append((m - m_empty) / (m_full - m_empty))
    return out


@dataclass
class FaithfulnessCurve:
    """Faithfulness of the top-``n`` circuits: ``sizes`` requested, ``n_edges`` kept after pruning."""

    sizes: list[int]
    n_edges: list[int]
    n_nodes: list[int]
    faithfulness: list[float]
    ablation: str

    def smallest_faithful(self, level: float = 0.9) -> int | None:
        """Smallest requested size whose faithfulness is at least ``level`` (``None`` if none)."""
        for s, f in zip(self.sizes, self.faithfulness):
            if f >= level:
                return s
        return None


def faithfulness_curve(
    model: TinyTransformer,
    scores: EdgeScores,
    clean: torch.Tensor | PromptPairs,
    corrupted: torch.Tensor | None = None,
    metric: Metric = logit_diff,
    sizes: Sequence[int] | None = None,
    ablation: str = "corrupted",
) -> FaithfulnessCurve:
    """Faithfulness of ``scores.top_n(n)`` for each ``n`` in ``sizes`` (default: 0..n_edges, ~25 points).

    The reference activations and ``m(full)``, ``m(empty)`` are computed once; each size costs one
    patched forward pass.
    """
    graph = scores.graph
    graph.check_model(model)
    _check_metric(metric)
    check_choice("ablation", ablation, ["corrupted", "mean"])
    if sizes is None:
        sizes = sorted(set(np.unique(np.geomspace(1, graph.n_edges, 24).round().astype(int)).tolist()) | {0})
    sizes = [check_positive_int(f"sizes[{i}]", s, minimum=0) for i, s in enumerate(sizes)]
    clean_t, corr_t, batch = _resolve(clean, corrupted, model, need_corrupted=ablation == "corrupted")
    circuits = [scores.top_n(s) for s in sizes]
    vals = _faithfulness_values(model, graph, clean_t, corr_t, batch, metric, ablation, [c.mask for c in circuits])
    return FaithfulnessCurve(list(sizes), [c.n_edges for c in circuits], [c.n_nodes for c in circuits], vals, ablation)


# --------------------------------------------------------------------------------------
# Agreement between attribution methods
# --------------------------------------------------------------------------------------
def rank_agreement(scores: EdgeScores | torch.Tensor | np.ndarray, reference: EdgeScores | torch.Tensor | np.ndarray,
                   k: int = 20) -> dict[str, float]:
    """How well ``scores`` reproduce ``reference`` (e.g. EAP vs exact patching), per edge.

    Returns ``spearman`` (rank correlation of the signed scores), ``spearman_abs`` (of ``|score|``,
    what circuit selection uses), ``pearson`` and ``top_k_overlap`` (fraction of the reference's
    top-``k`` edges by ``|score|`` that are also in ``scores``' top ``k``).
    """
    from scipy.stats import pearsonr, spearmanr

    a = check_array("scores", scores.values if isinstance(scores, EdgeScores) else scores, ndim=1)
    b = check_array("reference", reference.values if isinstance(reference, EdgeScores) else reference, ndim=1)
    if a.shape != b.shape:
        raise ValueError(f"scores: expected the reference's shape {b.shape}, got {a.shape}")
    k = min(check_positive_int("k", k), a.size)
    top_a = set(np.argsort(-np.abs(a), kind="stable")[:k].tolist())
    top_b = set(np.argsort(-np.abs(b), kind="stable")[:k].tolist())
    return {
        "spearman": float(spearmanr(a, b)[0]),
        "spearman_abs": float(spearmanr(np.abs(a), np.abs(b))[0]),
        "pearson": float(pearsonr(a, b)[0]),
        "top_k_overlap": len(top_a & top_b) / k,
        "k": float(k),
    }
