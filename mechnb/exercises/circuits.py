"""Check functions for notebook 04 (circuit discovery and circuit-tuning, arXiv:2502.06106).

Exercises, in notebook order: 4.1 logit difference, 4.2 EAP score of one edge (Syed et al. 2023),
4.3 faithfulness of a circuit, 4.4 the parameters a circuit's nodes own (the update mask of
circuit-tuning), 4.5 EAP-IG scores of every edge (Hanna et al. 2024), 4.6 circuit-tuning's masked
optimiser step (frozen entries bit-exact under weight decay and momentum). Known answers come from closed forms (toy metrics whose dependence on the
patched edges is known) and from mechnb's own implementation (:mod:`mechnb.circuits`) on the zoo
model ``tiny-lm`` and its agreement prompts. While 4.5 and 4.6 run the learner's function, the package
functions they rebuild are off limits (:func:`mechnb.exercises._core._without`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mechnb.exercises._core import Case, CheckResult, _without, compare, exercise, run_cases

__all__ = ["check_logit_diff", "check_eap_edge_score", "check_faithfulness", "check_parameter_mask",
           "check_eap_ig_scores", "check_masked_step"]

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
    eap = attribute(model, graph, pairs, method="eap")
    return {"model": model, "graph": graph, "pairs": pairs, "logits": logits, "out_clean": out_clean.detach(),
            "out_corr": corr.out, "grads": grads.detach(), "scores": eap.scores, "eap": eap}


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
    from mechnb import metrics

    guarded = _without(fn, {"circuits.logit_diff": logit_diff, "metrics.logit_diff": metrics.logit_diff}, "4.1", "gather the two answers' logits at the last position")
    return run_cases(guarded, cases, atol=1e-5, rtol=1e-5)


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


# --------------------------------------------------------------------------------------------
# 4.3 faithfulness of a circuit
# --------------------------------------------------------------------------------------------


def _toy_valid() -> torch.Tensor:
    """A 3-writer, 4-reader edge pattern like a graph's ``valid``: writer i feeds readers j with i < n_up[j]."""
    return torch.arange(3)[:, None] < torch.tensor([1, 2, 3, 3])[None, :]


def _mask(valid: torch.Tensor, entries: list[tuple[int, int]]) -> torch.Tensor:
    m = torch.zeros_like(valid)
    for i, j in entries:
        m[i, j] = True
    return m


def _faithfulness_cases() -> list[Case]:
    """The cases of :func:`check_faithfulness` (a test checks their known answers independently)."""
    from mechnb.circuits import faithfulness, logit_diff, patched_forward

    valid = _toy_valid()  # 9 edges
    E = torch.tensor([[0.5, 1.0, -0.2, 2.0],
                      [0.0, 0.3, 0.8, 0.4],
                      [0.0, 0.0, 0.6, 1.6]], dtype=torch.float64)  # effect of patching each edge

    def linear_metric(alpha: torch.Tensor) -> float:
        """m = 2 - sum over patched edges of their effect: patching edge e lowers m by E[e]."""
        a = torch.as_tensor(alpha).to(torch.float64)
        return float(2.0 - (a * E * valid).sum())

    def saturating_metric(alpha: torch.Tensor) -> float:
        """m = exp(-sum over patched edges of |E|): the edges interact (not additive)."""
        a = torch.as_tensor(alpha).to(torch.float64)
        return float(torch.exp(-(a * E.abs() * valid).sum()))

    s_all = float((E * valid).sum())
    s_abs = float((E.abs() * valid).sum())
    circ = _mask(valid, [(0, 1), (0, 3), (2, 3)])  # the three big edges
    s_in = float((E * circ).sum())
    s_abs_out = s_abs - float((E.abs() * circ).sum())
    f_sat = (np.exp(-s_abs_out) - np.exp(-s_abs)) / (1.0 - np.exp(-s_abs))
    complement_hint = ("patch every edge OUTSIDE the circuit (alpha = 1 where valid and not in the circuit), "
                       "keep the circuit's edges clean (alpha = 0)")
    norm_hint = ("F = (m(circuit) - m(empty)) / (m(full) - m(empty)): m(full) with alpha = 0, "
                 "m(empty) with every valid edge patched")
    cases = [
        Case((linear_metric, circ, valid), s_in / s_all,
             label="toy linear metric m = 2 - sum(alpha * E), a circuit of 3 of the 9 edges", hint=complement_hint),
        Case((linear_metric, torch.zeros_like(valid), valid), 0.0, label="toy linear metric, empty circuit",
             hint="F(empty) is 0: with no edge in the circuit, every edge is patched"),
        Case((linear_metric, valid.clone(), valid), 1.0, label="toy linear metric, the full graph as circuit",
             hint="F(full graph) is 1: nothing is patched, so m(circuit) = m(full)"),
        Case((saturating_metric, circ, valid), float(f_sat),
             label="toy saturating metric m = exp(-sum(alpha * |E|)), the same circuit", hint=norm_hint),
    ]

    s = _tiny_lm_setup()
    model, graph, pairs, eap = s["model"], s["graph"], s["pairs"], s["eap"]
    ref = s["out_corr"]

    def agreement_metric(alpha: torch.Tensor) -> float:
        """The logit difference of tiny-lm on 8 agreement prompts with edges patched by alpha (1 = corrupted)."""
        a = torch.as_tensor(alpha).to(torch.float32)
        with torch.no_grad():
            return float(logit_diff(patched_forward(model, graph, pairs.clean, ref, a), pairs))

    for circuit in (eap.top_n(20), eap.top_n(10, fill=True)):  # 19 and 11 edges after pruning
        cases.append(Case((agreement_metric, circuit.mask.clone(), graph.valid.clone()),
                          faithfulness(model, circuit, pairs),
                          label=f"tiny-lm agreement circuit of {circuit.n_edges} edges (EAP, pruned)",
                          hint=complement_hint))
    return cases


@exercise("4.3", "faithfulness of a circuit", notebook=NOTEBOOK)
def check_faithfulness(fn: Callable[[Callable[[torch.Tensor], float], torch.Tensor, torch.Tensor], Any]) -> CheckResult:
    """Check ``fn(metric_of_alpha, circuit_mask, valid) -> float``: the faithfulness of a circuit.

    ``metric_of_alpha(alpha) -> float`` runs the model with edges patched by ``alpha
    [n_writers, n_readers]`` (float; 1 = the reader sees the corrupted value of that edge, 0 =
    the clean one); ``circuit_mask`` and ``valid`` are bool ``[n_writers, n_readers]`` (the
    circuit's edges, and which entries are edges at all). The answer is
    ``(m(circuit) - m(empty)) / (m(full) - m(empty))`` where ``m(circuit)`` patches every valid
    edge *outside* the circuit, ``m(empty)`` patches every valid edge and ``m(full)`` none.
    Known answers: closed forms for toy metrics (linear: the circuit's share of the summed edge
    effects; saturating: exponentials) and :func:`mechnb.circuits.faithfulness` on ``tiny-lm``.
    """
    return run_cases(fn, _faithfulness_cases(), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# 4.4 which parameters a circuit owns (the update mask of circuit-tuning)
# --------------------------------------------------------------------------------------------


def _compare_masks(expected: Any, got: Any) -> str | None:
    """:func:`compare`, with a plainer message when the returned dict misses parameters."""
    if isinstance(got, dict) and set(got) != set(expected):
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        return (f"expected a mask for each of the {len(expected)} parameters, got {len(got)} keys"
                + (f"; missing {missing[:4]}{' ...' if len(missing) > 4 else ''}" if missing else "")
                + (f"; unexpected {extra[:4]}" if extra else ""))
    return compare(expected, got)


def _parameter_mask_cases() -> list[Case]:
    """The cases of :func:`check_parameter_mask` (a test checks their known answers by hand)."""
    from mechnb.circuits import Circuit, parameter_mask

    s = _tiny_lm_setup()
    model, graph, eap = s["model"], s["graph"], s["eap"]
    params = {n: p.detach().clone() for n, p in model.named_parameters()}

    def case(circuit: Circuit, label: str, hint: str | None = None) -> Case:
        return Case((graph, circuit.mask.clone(), params), parameter_mask(model, circuit), label=label, hint=hint,
                    compare=_compare_masks)

    def edges(*names: str) -> Circuit:
        return Circuit.from_edges(graph, list(names), prune=False)

    return [
        case(Circuit.empty(graph), "the empty circuit",
             hint="return a bool mask for every parameter; with no edge nothing is trainable"),
        case(edges("input->a0.h1<q>"), "one edge input -> a0.h1<q>",
             hint="a head read through <q> owns only its own slice W_Q[h], b_Q[h] of its layer (not W_K, W_V, "
                  "not the other heads); `input` owns no parameter"),
        case(edges("a0.h2->a1.h3<v>"), "one edge a0.h2 -> a1.h3<v>",
             hint="a head that writes into the circuit owns its slice W_O[h] (not b_O, which all heads share); "
                  "a head read through <v> owns W_V[h], b_V[h]"),
        case(edges("input->m0"), "one edge input -> m0",
             hint="an MLP that reads from the circuit owns its block's ln2 (w, b), W_in and b_in; "
                  "W_out and b_out only if it also writes into the circuit"),
        case(edges("m1->logits"), "one edge m1 -> logits",
             hint="an MLP that writes into the circuit owns W_out and b_out; `logits` (ln_final, unembed) "
                  "owns no parameter"),
        case(eap.top_n(20), "the tiny-lm agreement circuit (EAP, top 20 edges)"),
        case(Circuit.full(graph), "every edge of the graph",
             hint="even with every edge, the embeddings, ln1, b_O, ln_final and the unembedding belong to no node"),
    ]


@exercise("4.4", "parameters a circuit owns", notebook=NOTEBOOK)
def check_parameter_mask(fn: Callable[[Any, torch.Tensor, dict[str, torch.Tensor]], Any]) -> CheckResult:
    """Check ``fn(graph, circuit_mask, params) -> {name: bool tensor}``: the update mask of circuit-tuning.

    ``graph`` is the :class:`~mechnb.circuits.Graph` of ``tiny-lm`` (``graph.writers``: writer
    names, ``graph.readers``: ``(node, letter)`` pairs); ``circuit_mask`` bool ``[n_writers,
    n_readers]``; ``params`` ``{name: tensor}`` (``dict(model.named_parameters())``). The answer
    has one bool tensor of each parameter's shape: a head ``a{l}.h{h}`` owns ``W_Q[h], b_Q[h]``
    (likewise K, V) of ``blocks.{l}.attn`` if its query (key, value) input has an incoming circuit
    edge and ``W_O[h]`` if it has an outgoing one; an MLP ``m{l}`` owns ``ln2``, ``W_in``,
    ``b_in`` if it has an incoming edge and ``W_out``, ``b_out`` if it has an outgoing one;
    nothing else is owned. Expected values from :func:`mechnb.circuits.parameter_mask`.
    """
    return run_cases(fn, _parameter_mask_cases())


# --------------------------------------------------------------------------------------------
# reference solutions, with the notebook's signatures (learner notebooks fall back to them
# while an exercise is still its stub)
# --------------------------------------------------------------------------------------------


def solution_logit_diff(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """Reference for 4.1: mean over prompts of ``logits[i, -1, answers[i, 0]] - logits[i, -1, answers[i, 1]]``.

    ``logits (batch, pos, d_vocab)``, ``answers (batch, 2)`` int64 (clean, corrupted answer) -> scalar tensor.
    """
    picked = logits[:, -1].gather(1, answers)  # (batch, 2): the two answers' logits at the last position
    return (picked[:, 0] - picked[:, 1]).mean()


def solution_eap_edge_score(out_clean: torch.Tensor, out_corr: torch.Tensor, grad_reader: torch.Tensor) -> torch.Tensor:
    """Reference for 4.2: EAP's first-order score of the edge u -> v (Syed et al. 2023),
    ``sum((out_corr - out_clean) * grad_reader)`` over batch, position and ``d_model``; a scalar tensor."""
    return ((out_corr - out_clean) * grad_reader).sum()


def solution_faithfulness(metric_of_alpha: Callable[[torch.Tensor], float], circuit_mask: torch.Tensor,
                          valid: torch.Tensor) -> Any:
    """Reference for 4.3: ``F(C) = (m(C) - m(empty)) / (m(full) - m(empty))``.

    ``metric_of_alpha(alpha)`` is the metric with the edges patched by ``alpha [n_writers, n_readers]``
    (1 = corrupted); ``m(C)`` patches every valid edge outside ``circuit_mask``, ``m(empty)`` every
    valid edge, ``m(full)`` none.
    """
    m_full = metric_of_alpha(torch.zeros(valid.shape))
    m_empty = metric_of_alpha(valid.float())
    m_circuit = metric_of_alpha((valid & ~circuit_mask).float())
    return (m_circuit - m_empty) / (m_full - m_empty)


def solution_parameter_mask(graph: Any, circuit_mask: torch.Tensor,
                            params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference for 4.4: which entries of ``params`` the circuit's nodes own (circuit-tuning's update mask).

    A writer with an outgoing circuit edge owns its output weights (head ``a{l}.h{h}``: its slice of
    ``W_O``; MLP ``m{l}``: ``W_out``, ``b_out``); a reader with an incoming one its input weights (a
    head read through q/k/v: its slice of ``W_Q/K/V`` and ``b_Q/K/V``; an MLP: ``ln2`` and
    ``W_in``, ``b_in``). Returns ``{name: bool tensor of the parameter's shape}`` for every name.
    """
    masks = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in params.items()}
    for i, writer in enumerate(graph.writers):
        if writer == "input" or not circuit_mask[i].any():
            continue
        if writer.startswith("a"):
            layer, head = map(int, writer[1:].split(".h"))
            masks[f"blocks.{layer}.attn.W_O"][head] = True
        else:
            layer = int(writer[1:])
            masks[f"blocks.{layer}.mlp.W_out"][:] = True
            masks[f"blocks.{layer}.mlp.b_out"][:] = True
    for j, (node, letter) in enumerate(graph.readers):
        if node == "logits" or not circuit_mask[:, j].any():
            continue
        if node.startswith("a"):
            layer, head = map(int, node[1:].split(".h"))
            masks[f"blocks.{layer}.attn.W_{letter.upper()}"][head] = True
            masks[f"blocks.{layer}.attn.b_{letter.upper()}"][head] = True
        else:
            layer = int(node[1:])
            for name in ("ln2.w", "ln2.b", "mlp.W_in", "mlp.b_in"):
                masks[f"blocks.{layer}.{name}"][:] = True
    return masks


# --------------------------------------------------------------------------------------------
# 4.5 build the method: EAP-IG scores of every edge
# --------------------------------------------------------------------------------------------


def solution_eap_ig_scores(out_clean: torch.Tensor, out_corr: torch.Tensor, grads_at: Callable[[float], torch.Tensor],
                           valid: torch.Tensor, steps: int) -> torch.Tensor:
    """Reference for 4.5: EAP-IG (Hanna, Pezzelle & Belinkov 2024, Sec. 3) for every edge ``u -> v``.

    ``score(u -> v) = sum_{b,p,d} (out_corr_u - out_clean_u) * (1/steps) sum_{k=1..steps} G_v(k / steps)``
    with ``G_v(a) = grads_at(a)[v]`` the metric's gradient at reader ``v``'s input when the input
    embedding lies ``a`` of the way from the corrupted (``a = 0``) to the clean (``a = 1``) one: the
    right Riemann sum, so ``steps = 1`` is EAP. ``out_clean``, ``out_corr`` ``[n_writers, b, p, d]``,
    ``grads_at(a)`` ``[n_readers, b, p, d]``, ``valid`` bool ``[n_writers, n_readers]``; returns
    ``[n_writers, n_readers]`` (0 off the graph).
    """
    G = sum(grads_at(k / steps) for k in range(1, steps + 1)) / steps  # k = 1..steps: the clean end, not 0
    scores = torch.einsum("wbpd,rbpd->wr", out_corr - out_clean, G)
    return scores * valid.to(scores)


@functools.lru_cache(maxsize=1)
def _ig_setup() -> dict[str, Any]:
    """tiny-lm's writer outputs on the clean and corrupted prompts, and a memoised ``grads_at(a)``."""
    from mechnb.circuits.graph import cache_writers, reader_gradients
    from mechnb.circuits import logit_diff

    s = _tiny_lm_setup()
    model, graph, pairs = s["model"], s["graph"], s["pairs"]
    clean_cache, corr_cache = cache_writers(model, graph, pairs.clean), cache_writers(model, graph, pairs.corrupted)
    e_clean, base = clean_cache.embed, corr_cache.embed
    memo: dict[float, torch.Tensor] = {}

    def grads_at(a: float) -> torch.Tensor:
        a = float(a)
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"a: expected a point on the line from corrupted (0) to clean (1), got {a}")
        if a not in memo:
            _, G, _ = reader_gradients(model, graph, pairs.clean, lambda lg: logit_diff(lg, pairs),
                                       lambda x: base + a * (e_clean - base))
            memo[a] = G.detach()
        return memo[a].clone()

    return {"out_clean": clean_cache.out.detach(), "out_corr": corr_cache.out.detach(), "grads_at": grads_at,
            "valid": graph.valid.clone()}


def _toy_ig() -> tuple[tuple[Any, ...], torch.Tensor]:
    """A toy with a gradient linear in ``a``: ``G(a) = A + a B``, so the right sum's mean is
    ``A + B (steps + 1) / (2 steps)``; 2 writers, 3 readers, shapes ``(1, 2, 3)``."""
    g = torch.Generator().manual_seed(4)
    out_clean, out_corr = torch.randn(2, 1, 2, 3, generator=g), torch.randn(2, 1, 2, 3, generator=g)
    A, B = torch.randn(3, 1, 2, 3, generator=g), torch.randn(3, 1, 2, 3, generator=g)
    valid = torch.tensor([[True, True, True], [False, True, True]])
    steps = 4
    mean_G = A + B * (steps + 1) / (2 * steps)
    expected = torch.einsum("wbpd,rbpd->wr", out_corr - out_clean, mean_G) * valid
    return (out_clean, out_corr, lambda a: A + a * B, valid, steps), expected


@exercise("4.5", "EAP-IG scores", notebook=NOTEBOOK)
def check_eap_ig_scores(fn: Callable[..., Any]) -> CheckResult:
    """Check ``fn(out_clean, out_corr, grads_at, valid, steps) -> [n_writers, n_readers]``: EAP-IG.

    A toy whose gradient is linear in the interpolation (closed form), then tiny-lm on 8 agreement
    prompts with ``steps`` = 5 and 3 against :func:`mechnb.circuits.attribute` (``method="eap-ig"``,
    ``ig_steps=steps``: the path on the input embedding, points ``k / steps``, ``k = 1..steps``).
    ``attribute`` and its EAP-IG scorer are off limits inside ``fn``.
    """
    from mechnb.circuits import attribute, attribution

    s, t = _tiny_lm_setup(), _ig_setup()
    args, toy_expected = _toy_ig()
    ends = ("the points are a = k / steps for k = 1..steps (the clean end a = 1 included, the corrupted end a = 0 "
            "not): steps = 1 must give EAP")
    cases = [Case(args, toy_expected, label="toy: G(a) = A + a B, 2 writers x 3 readers, steps = 4", hint=ends)]
    for steps in (5, 3):
        ref = attribute(s["model"], s["graph"], s["pairs"], method="eap-ig", ig_steps=steps).scores
        cases.append(Case((t["out_clean"], t["out_corr"], t["grads_at"], t["valid"], steps), ref,
                          label=f"tiny-lm, 8 agreement prompts, steps = {steps}",
                          hint=ends + "; corrupted minus clean, times the averaged gradient"))
    forbidden = {"circuits.attribute": attribute, "attribution._eap_ig_scores": attribution._eap_ig_scores}
    return run_cases(_without(fn, forbidden, "4.5", "average grads_at over the steps, then the EAP formula"), cases,
                     atol=1e-5, rtol=1e-3)


# --------------------------------------------------------------------------------------------
# 4.6 circuit-tuning's masked optimiser step
# --------------------------------------------------------------------------------------------


def solution_masked_step(named_params: list[tuple[str, torch.nn.Parameter]], masks: dict[str, torch.Tensor],
                         optimizer: torch.optim.Optimizer) -> None:
    """Reference for 4.6: one optimiser step that moves only the entries inside the circuit (Li et al. 2025, Alg. 1).

    Called after ``loss.backward()``. ``named_params``: ``[(name, parameter)]``; ``masks``: ``{name:
    bool tensor of the parameter's shape}`` (True = in the circuit); ``optimizer``: AdamW with weight
    decay (:class:`mechnb.circuits.tuning.optim.EntryAdam`: every state tensor has the parameter's
    shape). Zero the gradient outside, step, then restore every outside entry to its pre-step value
    and zero its optimiser state: weight decay and momentum move an entry whose gradient is 0.
    """
    for name, p in named_params:
        if p.grad is not None:
            p.grad.mul_(masks[name])
    saved = [p.detach().clone() for _, p in named_params]
    optimizer.step()
    with torch.no_grad():
        for (name, p), old in zip(named_params, saved):
            m = masks[name]
            p.copy_(torch.where(m, p, old))  # bit-exact: the old value itself, not a recomputation
            for v in optimizer.state[p].values():
                if isinstance(v, torch.Tensor) and v.shape == p.shape:
                    v.masked_fill_(~m, 0)  # momentum, second moment, per-entry step count


class _Toy(torch.nn.Module):
    """A two-layer float64 net ``5 -> 4 -> 2`` for the masked steps."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(8)
        self.l1, self.l2 = torch.nn.Linear(5, 4).double(), torch.nn.Linear(4, 2).double()
        with torch.no_grad():
            for q in self.parameters():
                q.copy_(torch.randn(q.shape, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.tanh(self.l1(x)))


def _masked_schedule(model: torch.nn.Module) -> list[dict[str, torch.Tensor]]:
    """Per step the circuit's masks: steps 1-3 one circuit, steps 4-6 another (entries leave and join)."""
    g = torch.Generator().manual_seed(9)
    a = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()}
    b = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()}
    return [a] * 3 + [b] * 3


def _masked_trace(step_fn: Callable | None) -> dict[str, Any]:
    """Six masked steps of EntryAdam (AdamW, weight decay 0.1) on :class:`_Toy`; ``step_fn`` ``None``: the package's
    step (:meth:`CircuitTuning.after_backward`, ``optimizer.step()``, :meth:`CircuitTuning.after_step`)."""
    from types import SimpleNamespace

    from mechnb.circuits.tuning.optim import EntryAdam
    from mechnb.circuits.tuning.strategies import CircuitTuning

    model = _Toy()
    named = list(model.named_parameters())
    opt = EntryAdam([p for _, p in named], lr=0.05, betas=(0.9, 0.99), weight_decay=0.1, decoupled=True)
    g = torch.Generator().manual_seed(10)
    x, y = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randn(16, 2, generator=g, dtype=torch.float64)
    trace = []
    for masks in _masked_schedule(model):
        before = {n: p.detach().clone() for n, p in named}
        opt.zero_grad(set_to_none=False)
        ((model(x) - y) ** 2).mean().backward()
        if step_fn is None:
            strategy = SimpleNamespace(_named=named, masks=masks, _saved=[])
            CircuitTuning.after_backward(strategy)  # type: ignore[arg-type]
            opt.step()
            CircuitTuning.after_step(strategy, opt)  # type: ignore[arg-type]
        else:
            step_fn(named, {n: m.clone() for n, m in masks.items()}, opt)
        trace.append({"params": {n: p.detach().clone() for n, p in named}, "before": before, "masks": masks})
    return {"steps": trace}


def _compare_masked(expected: dict[str, Any], got: Any) -> str | None:
    """Frozen entries bit-exact (``torch.equal``) at every step, trained entries as the package's."""
    for k, (exp, g) in enumerate(zip(expected["steps"], got["steps"]), start=1):
        for n, p in g["params"].items():
            m, old = exp["masks"][n], g["before"][n]
            if not torch.equal(p[~m], old[~m]):
                moved = int(((p != old) & ~m).sum())
                return (f"step {k}: {n}: expected the {int((~m).sum())} entries outside the circuit unchanged bit for "
                        f"bit, got {moved} moved (by up to {float((p - old)[~m].abs().max()):.3g}): "
                        "zeroing their gradient is not enough - weight decay and momentum still move them")
            e = exp["params"][n]
            if not torch.allclose(p, e, rtol=1e-10, atol=1e-12):
                return (f"step {k}: {n}: expected circuit-tuning's AdamW update on the circuit's entries, got entries "
                        f"off by up to {float((p - e).abs().max()):.3g} (an entry that joins the circuit starts from "
                        "zero optimiser state: reset momentum, second moment and step count outside the circuit)")
    return None


@exercise("4.6", "circuit-tuning's masked optimiser step", notebook=NOTEBOOK)
def check_masked_step(fn: Callable[..., Any]) -> CheckResult:
    """Check ``fn(named_params, masks, optimizer) -> None``: the masked update of circuit-tuning.

    Six steps of AdamW (``EntryAdam``, weight decay 0.1, betas (0.9, 0.99)) on a small float64 net,
    one circuit for steps 1-3 and another for 4-6: after every step the entries outside the circuit
    must equal their pre-step values (``torch.equal``) and the entries inside must match
    circuit-tuning's own step (:meth:`mechnb.circuits.tuning.strategies.CircuitTuning.after_backward`,
    ``optimizer.step()``, :meth:`~mechnb.circuits.tuning.strategies.CircuitTuning.after_step`), which
    are off limits inside ``fn``.
    """
    from mechnb.circuits.tuning.strategies import CircuitTuning

    forbidden = {"CircuitTuning.after_backward": CircuitTuning.after_backward,
                 "CircuitTuning.after_step": CircuitTuning.after_step}
    guarded = _without(fn, forbidden, "4.6", "mask the gradient, step, then restore and reset outside the circuit")

    def run(_: object) -> dict[str, Any]:
        return _masked_trace(guarded)

    functools.update_wrapper(run, fn)
    return run_cases(run, [Case((None,), _masked_trace(None), label="6 AdamW steps (weight decay 0.1), the circuit "
                                "changes after step 3", compare=_compare_masked,
                                hint="save the parameters before optimizer.step(), put the outside entries back "
                                     "after it, and zero their optimiser state (every state tensor of the "
                                     "parameter's shape)")])
