"""ACDC: automatic circuit discovery by greedy edge pruning (Conmy et al. 2023, arXiv:2304.14997, Alg. 1).

Start from the full graph ``H = G``. Visit the receivers (readers) from ``logits`` backwards in
reverse topological order; for each receiver, try removing (patching towards the ablation's
reference) each incoming edge still in ``H``:

    H_new = H \\ {u -> v};   if  D(H_new) <= threshold:  H = H_new

with ``D(H_new) = |m(H_new) - m(H)|`` (``objective="metric"``, the change of the task metric) or
``D(H_new) = KL(G || H_new) - KL(G || H)`` (``objective="kl"``, the paper's default: the increase of
the KL divergence of the circuit's next-token distribution at the last position from the full
model's, averaged over the prompts). A receiver whose node no longer has any outgoing edge in
``H`` cannot influence the output, so its incoming edges are removed without a forward pass (the
paper's ACDC only visits nodes that still reach the output). We use ``<=``: with threshold 0 an
edge is kept exactly when removing it changes ``D``, and with a huge threshold every edge goes.

Each tried edge costs one patched forward pass (:func:`~mechnb.circuits.graph.patched_forward`);
:attr:`ACDCResult.forward_passes` counts them. The result is a :class:`Circuit` (dangling edges
pruned) and an :class:`EdgeScores` whose score of an edge is the change ``m(H_new) - m(H)`` (or the
KL increase) measured when it was tried (0 for edges removed untried).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mechnb._checks import check_choice
from mechnb._torch import eval_mode
from mechnb.circuits.ablation import check_ablation, needs_corrupted, reference_from_cache
from mechnb.circuits.circuit import Circuit, EdgeScores, prune_dangling
from mechnb.circuits.graph import Graph, cache_writers, patched_forward, patched_logits
from mechnb.circuits.metric import Metric, bind_metric, check_metric, logit_diff, metric_float, resolve_prompts
from mechnb.models import TinyTransformer
from mechnb.tasks import PromptPairs

__all__ = ["ACDCResult", "acdc"]

DEFAULT_RELATIVE_THRESHOLD = 0.01
"""``threshold=None``: this fraction of ``|m(full) - m(empty)|`` (or of ``KL(G || empty)``)."""


@dataclass
class ACDCResult:
    """What :func:`acdc` found.

    Attributes:
        circuit: the circuit ``H`` left at the end (dangling edges pruned).
        scores: per edge, the change measured when it was tried (``EdgeScores(method="acdc")``,
            with ``scores.circuit`` the same circuit).
        threshold, objective, ablation: the settings used (``threshold`` resolved if it was ``None``).
        forward_passes: patched forward passes run (one per edge tried, plus the full and empty runs).
        tried: edge names in the order they were tried; ``removed_untried``: edges removed
            because their receiver no longer reached the output.
        metric_full, metric_empty, metric_circuit: ``m`` of the full graph, of the empty circuit and of
            ``H`` (before pruning).
    """

    circuit: Circuit
    scores: EdgeScores
    threshold: float
    objective: str
    ablation: str
    forward_passes: int
    tried: list[str] = field(default_factory=list)
    removed_untried: list[str] = field(default_factory=list)
    metric_full: float = float("nan")
    metric_empty: float = float("nan")
    metric_circuit: float = float("nan")


def _kl_from_full(logp_full: torch.Tensor, logits: torch.Tensor) -> float:
    """``KL(p_full || p)`` at the last position, averaged over the prompts."""
    logp = F.log_softmax(logits[:, -1].double(), dim=-1)
    return float((logp_full.exp() * (logp_full - logp)).sum(-1).mean())


def _check_threshold(threshold: object) -> float | None:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold == threshold \
            or threshold < 0 or threshold == float("inf"):
        raise ValueError(f"threshold: expected a finite number >= 0 (or None for the default), got {threshold!r}")
    return float(threshold)


@torch.no_grad()
def acdc(
    model: TinyTransformer,
    graph: Graph,
    clean: torch.Tensor | PromptPairs,
    corrupted: torch.Tensor | None = None,
    metric: Metric = logit_diff,
    threshold: float | None = None,
    ablation: str = "corrupted",
    objective: str = "metric",
    progress: bool = False,
) -> ACDCResult:
    """Greedy edge pruning from the logits backwards (Conmy et al. 2023, Alg. 1); see the module docstring.

    Args:
        clean, corrupted, metric, ablation: as for :func:`~mechnb.circuits.attribute`.
        threshold: keep an edge iff removing it changes ``D`` by more than this (``None``:
            ``0.01 * |m(full) - m(empty)|``, or ``0.01 * KL(G || empty)`` for ``"kl"``).
        objective: ``"metric"`` (``|change of m|``) or ``"kl"`` (increase of the KL divergence from
            the full model at the last position).

    Returns:
        :class:`ACDCResult` (its ``circuit``, per-edge ``scores`` and the number of forward passes).
    """
    graph.check_model(model)
    check_metric(metric)
    check_ablation(ablation)
    check_choice("objective", objective, ["metric", "kl"])
    tau = _check_threshold(threshold)
    clean_t, corr_t, batch = resolve_prompts(clean, corrupted, model, need_corrupted=needs_corrupted(ablation))
    m = bind_metric(metric, batch)
    with eval_mode(model):
        clean_cache = cache_writers(model, graph, clean_t)
        corr_cache = cache_writers(model, graph, corr_t) if ablation == "corrupted" and corr_t is not None else None
        ref = reference_from_cache(clean_cache, corr_cache, ablation)
        valid = graph.valid.to(ref)
        logits_full = clean_cache.logits
        logits_empty = patched_forward(model, graph, clean_t, ref, valid)
        m_full = metric_float(m, logits_full, "on the clean prompts")
        m_empty = metric_float(m, logits_empty, f"with every edge {ablation}-ablated")
        logp_full = F.log_softmax(logits_full[:, -1].double(), dim=-1)

        def stat(logits: torch.Tensor, where: str) -> float:
            if objective == "kl":
                return _kl_from_full(logp_full, logits)
            return metric_float(m, logits, where)

        if tau is None:
            span = abs(m_full - m_empty) if objective == "metric" else _kl_from_full(logp_full, logits_empty)
            tau = DEFAULT_RELATIVE_THRESHOLD * span
        alpha = torch.zeros_like(valid)  # 1 = removed from H (patched), 0 = in H
        scores = torch.zeros(graph.n_writers, graph.n_readers)
        current = stat(logits_full, "on the clean prompts")
        passes, tried, untried = 2, [], []
        bar = tqdm(range(graph.n_readers - 1, -1, -1), desc="ACDC", disable=not progress, leave=False)
        for j in bar:
            node, letter = graph.readers[j]
            n_up = int(graph.n_upstream[j])
            if node != "logits":
                w = graph.writer_index[node]
                if not bool(((alpha[w] == 0) & graph.valid[w].to(alpha.device)).any()):
                    alpha[:n_up, j] = 1.0  # the node no longer reaches the output: nothing to try
                    untried += [f"{graph.writers[i]}->{node}" + (f"<{letter}>" if letter else "")
                                for i in range(n_up)]
                    continue
            for i in range(n_up - 1, -1, -1):
                name = f"{graph.writers[i]}->{node}" + (f"<{letter}>" if letter else "")
                alpha[i, j] = 1.0
                new = stat(patched_logits(model, graph, clean_t, ref, alpha), f"with {name} removed by ACDC")
                passes += 1
                tried.append(name)
                change = new - current
                scores[i, j] = change
                if (abs(change) if objective == "metric" else change) <= tau:
                    current = new  # removing the edge changes D by at most the threshold: it goes
                else:
                    alpha[i, j] = 0.0
        kept = (alpha == 0).cpu() & graph.valid
        m_circuit = metric_float(m, patched_logits(model, graph, clean_t, ref, alpha), "on the ACDC circuit")
    circuit = Circuit(graph, prune_dangling(graph, kept))
    edge_scores = EdgeScores(graph, scores, "acdc", m_full, m_empty,
                             {"threshold": tau, "objective": objective, "forward_passes": passes}, ablation, circuit)
    return ACDCResult(circuit, edge_scores, float(tau), objective, ablation, passes, tried, untried, m_full, m_empty,
                      m_circuit)
