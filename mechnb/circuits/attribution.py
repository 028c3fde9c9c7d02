"""Edge attribution: EAP, EAP-IG, exact patching and ACDC, under any of the four ablations.

* **EAP** (edge attribution patching, Syed, Rager & Conmy 2023, arXiv:2310.10348): the effect
  on the metric ``m`` of patching edge ``u -> v`` is approximated to first order at the clean
  point,

      score(u -> v) = sum_{pos} (ref_u - out_u(clean)) . d m / d input_v (clean),

  averaged over the batch (``m`` is a batch mean); ``ref_u`` is the ablation's reference
  (:mod:`.ablation`: the corrupted run, zero, or a mean over the clean prompts). One forward pass
  gives the reference, one clean forward + backward every reader's input gradient, so all edges
  cost two forward passes and one backward pass. Equivalently, it is the exact gradient
  ``d m / d alpha_uv`` at ``alpha = 0`` of the per-edge-mask model of :mod:`.graph`.
* **EAP-IG** (Hanna, Pezzelle & Belinkov 2024, arXiv:2403.17806, Sec. 3): replace the clean
  gradient by the average over ``ig_steps`` points on the straight line from the reference to the
  clean ``input`` (integrated gradients, Sundararajan et al. 2017; for ``"corrupted"`` the line
  between the corrupted and clean input embeddings). We use the right Riemann sum
  ``alpha_k = k / ig_steps, k = 1..ig_steps`` so that ``ig_steps=1`` is EAP; the reference code
  uses the left sum ``k = 0..ig_steps-1``.
* **exact**: patch each edge for real and record ``m(patched) - m(clean)``: batched, many edges per
  forward pass (:mod:`.exact`), or one patched forward pass per edge (``batched=False``, the loop
  the batched engine is tested against).
* **ACDC** (Conmy et al. 2023): greedy pruning from the logits backwards (:mod:`.acdc`); its scores
  are the metric changes it measured, and it selects its own :attr:`EdgeScores.circuit`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from mechnb._checks import check_choice, check_positive_int
from mechnb._torch import eval_mode
from mechnb.circuits.ablation import check_ablation, needs_corrupted, reference_from_cache
from mechnb.circuits.circuit import EdgeScores
from mechnb.circuits.exact import DEFAULT_TOKENS_PER_PASS, exact_edge_metrics
from mechnb.circuits.graph import Graph, WriterCache, cache_writers, patched_forward, patched_logits, reader_gradients
from mechnb.circuits.metric import Metric, bind_metric, check_metric, logit_diff, metric_float, resolve_prompts
from mechnb.models import TinyTransformer
from mechnb.tasks import PromptPairs

__all__ = ["Metric", "logit_diff", "attribute", "METHODS"]

METHODS: tuple[str, ...] = ("eap", "eap-ig", "exact", "acdc")
"""The attribution methods of :func:`attribute`."""


@dataclass
class _Run:
    """Everything a scorer needs: the model, the clean prompts and their cache, the ablation's
    reference ``ref [n_writers, b | 1, p | 1, d]`` and the bound metric ``m(logits) -> scalar``."""

    model: TinyTransformer
    graph: Graph
    clean: torch.Tensor
    clean_cache: WriterCache
    corrupted_cache: WriterCache | None
    ref: torch.Tensor
    m: Callable[[torch.Tensor], torch.Tensor]
    ablation: str
    ig_steps: int
    progress: bool
    batched: bool

    @property
    def m_clean(self) -> float:
        return metric_float(self.m, self.clean_cache.logits, "on the clean prompts")


def attribute(
    model: TinyTransformer,
    graph: Graph,
    clean: torch.Tensor | PromptPairs,
    corrupted: torch.Tensor | None = None,
    metric: Metric = logit_diff,
    method: str = "eap",
    ig_steps: int = 5,
    progress: bool = False,
    ablation: str = "corrupted",
    *,
    batched: bool = True,
    threshold: float | None = None,
    objective: str = "metric",
) -> EdgeScores:
    """Score every edge of ``graph`` by its effect on ``metric`` when patched towards the ``ablation``.

    Args:
        model: a :class:`TinyTransformer` (its graph is ``graph``).
        clean: ``(batch, pos)`` tokens, or a :class:`PromptPairs` (then ``corrupted`` defaults to
            its corrupted prompts and ``metric`` receives the pairs as ``batch``).
        corrupted: ``(batch, pos)`` tokens of the same shape (needed for ``ablation="corrupted"``).
        metric: ``metric(logits, batch) -> scalar`` (a batch mean, e.g. :func:`logit_diff`); a
            vector, non-numeric or NaN value raises an error naming ``metric``.
        method: ``"eap"`` (2 forward + 1 backward), ``"eap-ig"`` (2 forward + ``ig_steps``
            forward/backward), ``"exact"`` (every edge patched alone) or ``"acdc"`` (greedy
            pruning, :func:`~mechnb.circuits.acdc.acdc`).
        ig_steps: integration steps for ``"eap-ig"``.
        ablation: ``"corrupted"``, ``"zero"``, ``"mean"`` or ``"mean-positional"``
            (:mod:`~mechnb.circuits.ablation`; the means are over the clean prompts).
        batched: ``"exact"`` only: many edges per forward pass (default) or the per-edge loop.
        threshold, objective: ``"acdc"`` only (see :func:`~mechnb.circuits.acdc.acdc`).

    Returns:
        :class:`EdgeScores`; ``score ~ m(edge patched) - m(clean)`` summed over positions and
        averaged over the batch. ``info["forward_passes"]`` counts the (batched) forward passes of
        ``"exact"`` and ``"acdc"``.
    """
    graph.check_model(model)
    check_metric(metric)
    check_choice("method", method, list(METHODS))
    check_positive_int("ig_steps", ig_steps)
    check_ablation(ablation)
    if method == "acdc":
        from mechnb.circuits.acdc import acdc  # acdc builds on this module's inputs; imported late

        return acdc(model, graph, clean, corrupted, metric, threshold=threshold, ablation=ablation,
                    objective=objective, progress=progress).scores
    clean_t, corr_t, batch = resolve_prompts(clean, corrupted, model, need_corrupted=needs_corrupted(ablation))
    with eval_mode(model):
        clean_cache = cache_writers(model, graph, clean_t)
        corr_cache = cache_writers(model, graph, corr_t) if corr_t is not None and ablation == "corrupted" else None
        run = _Run(model, graph, clean_t, clean_cache, corr_cache, reference_from_cache(clean_cache, corr_cache,
                   ablation), bind_metric(metric, batch), ablation, ig_steps, progress, bool(batched))
        m_clean = run.m_clean
        m_ablated = _metric_all_ablated(run)
        scores, info = _SCORERS[method](run)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"metric: its {method} scores are not finite (the metric's gradient or value overflowed "
                         f"with some edge patched)")
    if method == "eap-ig":
        info["ig_steps"] = ig_steps
    return EdgeScores(graph, scores.detach().float().cpu(), method, m_clean, m_ablated, info, ablation)


def _metric_all_ablated(run: _Run) -> float:
    """``m`` with every edge patched: on the corrupted prompts for ``"corrupted"`` (the same thing,
    without the patching pass), otherwise one patched forward pass."""
    if run.corrupted_cache is not None:
        return metric_float(run.m, run.corrupted_cache.logits, "on the corrupted prompts")
    with torch.no_grad():
        logits = patched_forward(run.model, run.graph, run.clean, run.ref, run.graph.valid.to(run.ref))
    return metric_float(run.m, logits, f"with every edge {run.ablation}-ablated")


def _eap_scores(run: _Run) -> tuple[torch.Tensor, dict[str, Any]]:
    """EAP (Syed et al. 2023): ``(ref_u - out_u) . dm/d input_v`` at the clean point, per edge.

    Returns the scores ``[n_writers, n_readers]`` (0 off the graph) and an empty info dict.
    """
    out, G, _ = reader_gradients(run.model, run.graph, run.clean, run.m)
    scores = torch.einsum("wbpd,rbpd->wr", (run.ref - out).expand_as(out), G)
    return scores * run.graph.valid.to(scores), {}


def _eap_ig_scores(run: _Run) -> tuple[torch.Tensor, dict[str, Any]]:
    """EAP-IG (Hanna et al. 2024, Sec. 3): the clean gradient replaced by its mean along the line from
    the reference ``input`` to the clean one, at ``k / ig_steps``, ``k = 1..ig_steps`` (right Riemann sum).

    The path is laid on the token embedding (``hook_embed``): ``e(a) = base + a (e_clean - base)``
    with ``base`` the corrupted embedding, or ``ref_input - pos_embed`` for the other ablations, so
    that the ``input`` writer (token + position embedding) runs from ``ref_input`` to the clean one.
    """
    e_clean = run.clean_cache.embed
    if run.corrupted_cache is not None:
        base = run.corrupted_cache.embed
    else:
        pos = run.clean_cache.out[0] - e_clean
        base = run.ref[0] - pos
    G_sum = None
    for k in tqdm(range(1, run.ig_steps + 1), desc="EAP-IG", disable=not run.progress, leave=False):
        a = k / run.ig_steps

        def interp(x: torch.Tensor, a: float = a) -> torch.Tensor:
            return base + a * (e_clean - base)

        _, G, _ = reader_gradients(run.model, run.graph, run.clean, run.m, interp)
        G_sum = G if G_sum is None else G_sum + G
    assert G_sum is not None
    diff = (run.ref - run.clean_cache.out).expand_as(run.clean_cache.out)
    scores = torch.einsum("wbpd,rbpd->wr", diff, G_sum / run.ig_steps)
    return scores * run.graph.valid.to(scores), {}


@torch.no_grad()
def _exact_scores(run: _Run) -> tuple[torch.Tensor, dict[str, Any]]:
    """Exact patching: ``m(edge patched) - m(clean)`` for every edge, batched (:mod:`.exact`) or one
    patched forward pass per edge (``run.batched`` false).

    Returns the scores ``[n_writers, n_readers]`` and ``{"forward_passes": n, "batched": bool}``.
    """
    graph, m_clean = run.graph, run.m_clean
    if run.batched:
        vals, passes = exact_edge_metrics(run.model, graph, run.clean, run.clean_cache.out, run.ref, run.m,
                                          DEFAULT_TOKENS_PER_PASS)
        return graph.edge_matrix(vals - m_clean), {"forward_passes": passes, "batched": True}
    vals = torch.zeros(graph.n_edges, device=run.ref.device, dtype=run.ref.dtype)
    alpha = torch.zeros(graph.n_writers, graph.n_readers, device=run.ref.device, dtype=run.ref.dtype)
    it = tqdm(graph.valid.nonzero().tolist(), desc="exact patching", disable=not run.progress, leave=False)
    for k, (i, j) in enumerate(it):
        alpha.zero_()
        alpha[i, j] = 1.0
        logits = patched_logits(run.model, graph, run.clean, run.ref, alpha)
        vals[k] = metric_float(run.m, logits, f"with edge {graph.edges[k].name} patched") - m_clean
    return graph.edge_matrix(vals), {"forward_passes": graph.n_edges + 1, "batched": False}


_SCORERS: dict[str, Callable[[_Run], tuple[torch.Tensor, dict[str, Any]]]] = {
    "eap": _eap_scores, "eap-ig": _eap_ig_scores, "exact": _exact_scores,
}
