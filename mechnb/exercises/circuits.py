"""Check functions for notebook 04 (circuit discovery and circuit-tuning).

Known answers come from mechnb's own implementation (:mod:`mechnb.circuits`) on the zoo model
``tiny-lm`` and its agreement prompts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from mechnb.exercises._core import Case, CheckResult, exercise, run_cases

__all__ = ["check_logit_diff", "check_eap_edge_score"]

NOTEBOOK = "04_circuit_tuning"


@functools.lru_cache(maxsize=1)
def _tiny_lm_setup() -> dict[str, Any]:
    """tiny-lm, its graph, 8 agreement prompt pairs, the writer outputs and reader gradients (EAP's inputs)."""
    from mechnb import zoo
    from mechnb.circuits import Graph, attribute, logit_diff
    from mechnb.circuits.graph import cache_writers, reader_gradients

    model, _ = zoo.load("tiny-lm")
    lang = zoo.task_for("tiny-lm")
    pairs = lang.agreement_prompts(8, seed=3)
    graph = Graph.from_model(model)
    model.eval()
    corr = cache_writers(model, graph, pairs.corrupted)
    out_clean, grads, _ = reader_gradients(model, graph, pairs.clean, lambda lg: logit_diff(lg, pairs))
    with torch.no_grad():
        logits = model(pairs.clean)
    scores = attribute(model, graph, pairs, method="eap").scores
    return {"graph": graph, "pairs": pairs, "logits": logits, "out_clean": out_clean.detach(),
            "out_corr": corr.out, "grads": grads.detach(), "scores": scores}


@exercise("4.1", "logit difference", notebook=NOTEBOOK)
def check_logit_diff(fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> CheckResult:
    """Check ``fn(logits, answers) -> scalar``: the mean over prompts of
    ``logits[i, -1, answers[i, 0]] - logits[i, -1, answers[i, 1]]``.

    ``logits (batch, pos, d_vocab)``, ``answers (batch, 2)``: column 0 the clean answer, column 1
    the corrupted one. Expected values from :func:`mechnb.circuits.logit_diff` on ``tiny-lm``.
    """
    from mechnb.circuits import logit_diff
    from mechnb.tasks import PromptPairs

    s = _tiny_lm_setup()
    pairs, logits = s["pairs"], s["logits"]
    swapped = PromptPairs(pairs.clean, pairs.corrupted, pairs.answers.flip(1), pairs.task)
    toy = torch.zeros(2, 3, 5)
    toy[0, -1, 1], toy[0, -1, 2], toy[1, -1, 4], toy[1, 0, 4] = 3.0, 1.0, -1.0, 9.0
    toy_answers = torch.tensor([[1, 2], [4, 0]])
    hint = "read the logits at the last position only, then average over the prompts"
    cases = [
        Case((toy, toy_answers), 0.5, label="toy logits (2, 3, 5): (3 - 1 + (-1) - 0) / 2", hint=hint),
        Case((logits, pairs.answers), logit_diff(logits, pairs), label="tiny-lm on 8 agreement prompts", hint=hint),
        Case((logits, pairs.answers.flip(1)), logit_diff(logits, swapped), label="the same with the answers swapped"),
    ]
    return run_cases(fn, cases, atol=1e-5, rtol=1e-5)


@exercise("4.2", "EAP score of one edge", notebook=NOTEBOOK)
def check_eap_edge_score(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]) -> CheckResult:
    """Check ``fn(out_clean, out_corr, grad_reader) -> scalar``: the EAP score of edge ``u -> v``.

    ``out_clean``, ``out_corr``: writer ``u``'s output on the clean and on the corrupted prompts,
    ``(batch, pos, d_model)``; ``grad_reader``: the gradient of the metric (a batch mean) with
    respect to reader ``v``'s input on the clean prompts, same shape. The score is
    ``sum over batch, pos, d_model of (out_corr - out_clean) * grad_reader`` (Syed et al. 2023);
    expected values from :func:`mechnb.circuits.attribute` (``method="eap"``) on ``tiny-lm``.
    """
    s = _tiny_lm_setup()
    graph, scores = s["graph"], s["scores"]
    order = scores.abs().flatten().argsort(descending=True)
    picks = [int(order[i]) for i in (0, 2, 5)]  # edges that matter (a tiny score is all round-off)
    cases = [Case((torch.ones(1, 2, 3), torch.zeros(1, 2, 3), torch.full((1, 2, 3), 0.5)), -3.0,
                  label="toy: out_clean = 1, out_corr = 0, gradient 0.5 over 6 entries",
                  hint="corrupted minus clean, times the gradient, summed over every entry")]
    for k in picks:
        w, r = divmod(k, scores.shape[1])
        reader = graph.readers[r]
        name = f"{graph.writers[w]} -> {reader[0]}" + (f"<{reader[1]}>" if reader[1] else "")
        cases.append(Case((s["out_clean"][w], s["out_corr"][w], s["grads"][r]), float(scores[w, r]),
                          label=f"tiny-lm edge {name}", hint="sum over batch, positions and d_model"))
    return run_cases(fn, cases, atol=1e-5, rtol=1e-3)
