"""The check functions of notebook 04 (mechnb.exercises.circuits).

* every check accepts a correct solution and reports a typical mistake with its input, the expected
  and the returned value;
* the known answers of the faithfulness check (4.3) are right: closed forms of its toy metrics,
  and on tiny-lm the faithfulness recomputed from the case's own metric;
* the known answers of the parameter-mask check (4.4) follow the ownership rules, counted by hand
  for single edges, the empty and the full circuit;
* the exercises of notebook 04 are numbered in the order they appear, and each cell calls the
  check of its own number.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import nbformat
import pytest
import torch

from mechnb import exercises
from mechnb.exercises import circuits as ex_circuits
from mechnb.exercises import registry

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_circuit_tuning.ipynb"


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MECHNB_STRICT_CHECKS", raising=False)


# --------------------------------------------------------------------------------------------
# solutions: a correct one and a typical wrong one per check
# --------------------------------------------------------------------------------------------


def logit_diff_right(logits, answers):
    picked = logits[:, -1].gather(1, answers)
    return (picked[:, 0] - picked[:, 1]).mean()


def logit_diff_first_position(logits, answers):  # reads position 0 instead of the last one
    picked = logits[:, 0].gather(1, answers)
    return (picked[:, 0] - picked[:, 1]).mean()


def eap_right(out_clean, out_corr, grad):
    return ((out_corr - out_clean) * grad).sum()


def eap_batch_mean(out_clean, out_corr, grad):  # divides by the batch a second time
    return ((out_corr - out_clean) * grad).sum() / out_clean.shape[0]


def faithfulness_right(metric_of_alpha, circuit_mask, valid):
    m_full = metric_of_alpha(torch.zeros(valid.shape))
    m_empty = metric_of_alpha(valid.float())
    m_circuit = metric_of_alpha((valid & ~circuit_mask).float())
    return (m_circuit - m_empty) / (m_full - m_empty)


def faithfulness_patches_circuit(metric_of_alpha, circuit_mask, valid):  # patches the circuit, not the rest
    m_full = metric_of_alpha(torch.zeros(valid.shape))
    m_empty = metric_of_alpha(valid.float())
    m_circuit = metric_of_alpha((valid & circuit_mask).float())
    return (m_circuit - m_empty) / (m_full - m_empty)


def parameter_mask_right(graph, circuit_mask, params):
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


def parameter_mask_whole_matrices(graph, circuit_mask, params):  # a head gets all heads' W_Q, not its slice
    masks = parameter_mask_right(graph, circuit_mask, params)
    for name, m in masks.items():
        if re.search(r"attn\.[Wb]_[QKV]$", name) and m.any():
            m[:] = True
    return masks


def ig_right(out_clean, out_corr, grads_at, valid, steps):
    G = sum(grads_at(k / steps) for k in range(1, steps + 1)) / steps
    return torch.einsum("wbpd,rbpd->wr", out_corr - out_clean, G) * valid


def ig_left_sum(out_clean, out_corr, grads_at, valid, steps):  # k = 0..steps-1: the corrupted end, not the clean
    G = sum(grads_at(k / steps) for k in range(steps)) / steps
    return torch.einsum("wbpd,rbpd->wr", out_corr - out_clean, G) * valid


def ig_both_ends(out_clean, out_corr, grads_at, valid, steps):  # k = 0..steps: steps + 1 points
    G = sum(grads_at(k / steps) for k in range(steps + 1)) / (steps + 1)
    return torch.einsum("wbpd,rbpd->wr", out_corr - out_clean, G) * valid


def ig_clean_only(out_clean, out_corr, grads_at, valid, steps):  # = EAP
    return torch.einsum("wbpd,rbpd->wr", out_corr - out_clean, grads_at(1.0)) * valid


def ig_sign_flipped(out_clean, out_corr, grads_at, valid, steps):  # clean - corrupted
    return -ig_right(out_clean, out_corr, grads_at, valid, steps)


def masked_right(named, masks, opt):
    for n, p in named:
        p.grad.mul_(masks[n])
    saved = [p.detach().clone() for _, p in named]
    opt.step()
    with torch.no_grad():
        for (n, p), old in zip(named, saved):
            p.copy_(torch.where(masks[n], p, old))
            for v in opt.state[p].values():
                if torch.is_tensor(v) and v.shape == p.shape:
                    v.masked_fill_(~masks[n], 0)


def masked_gradient_only(named, masks, opt):  # weight decay still moves the frozen entries
    for n, p in named:
        p.grad.mul_(masks[n])
    opt.step()


def masked_no_state_reset(named, masks, opt):  # restored, but an entry joining later has stale moments
    for n, p in named:
        p.grad.mul_(masks[n])
    saved = [p.detach().clone() for _, p in named]
    opt.step()
    with torch.no_grad():
        for (n, p), old in zip(named, saved):
            p.copy_(torch.where(masks[n], p, old))


def masked_recomputed(named, masks, opt):  # "undoes" the decay by division: not bit-exact
    for n, p in named:
        p.grad.mul_(masks[n])
    opt.step()
    with torch.no_grad():
        for n, p in named:
            lr, wd = opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]
            p.copy_(torch.where(masks[n], p, p / (1 - lr * wd)))


SOLUTIONS = {
    "check_logit_diff": (logit_diff_right, logit_diff_first_position),
    "check_eap_edge_score": (eap_right, eap_batch_mean),
    "check_faithfulness": (faithfulness_right, faithfulness_patches_circuit),
    "check_parameter_mask": (parameter_mask_right, parameter_mask_whole_matrices),
    "check_eap_ig_scores": (ig_right, ig_left_sum),
    "check_masked_step": (masked_right, masked_gradient_only),
}

MORE_MISTAKES = {
    "check_eap_ig_scores": [(ig_both_ends, "expected"), (ig_clean_only, "expected"), (ig_sign_flipped, "expected")],
    "check_masked_step": [(masked_no_state_reset, "zero optimiser state"), (masked_recomputed, "bit for bit")],
}


@pytest.mark.parametrize("name", sorted(MORE_MISTAKES))
def test_build_the_method_checks_catch_each_mistake(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    check = getattr(exercises.circuits, name)
    for wrong, says in MORE_MISTAKES[name]:
        bad = check(wrong)
        out = capsys.readouterr().out
        assert not bad.passed, (wrong.__name__, out)
        assert out.startswith("✘ Exercise") and "got" in out and says in out, (wrong.__name__, out)


def test_logit_diff_check_rejects_the_package_function(capsys: pytest.CaptureFixture[str]) -> None:
    from mechnb.circuits import logit_diff
    from mechnb.tasks import PromptPairs

    def via_package(logits, answers):
        return logit_diff(logits, PromptPairs(answers, answers, answers, "x"))

    res = exercises.circuits.check_logit_diff(via_package)
    out = capsys.readouterr().out
    assert not res.passed and "WriteItYourself" in out and "circuits.logit_diff" in out, out


def test_eap_ig_toy_closed_form_and_one_step_is_eap() -> None:
    """The toy's expected value is the right Riemann sum written out; steps = 1 on tiny-lm is EAP."""
    (oc, ocr, grads_at, valid, steps), expected = ex_circuits._toy_ig()
    G = sum(grads_at(k / steps) for k in range(1, steps + 1)) / steps
    assert torch.allclose(expected, torch.einsum("wbpd,rbpd->wr", ocr - oc, G) * valid, atol=1e-6)
    t, s = ex_circuits._ig_setup(), ex_circuits._tiny_lm_setup()
    one = ex_circuits.solution_eap_ig_scores(t["out_clean"], t["out_corr"], t["grads_at"], t["valid"], 1)
    assert torch.allclose(one, s["scores"], atol=1e-5, rtol=1e-4)


def test_build_the_method_checks_reject_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from mechnb.circuits import attribute
    from mechnb.circuits.tuning.strategies import CircuitTuning

    s = ex_circuits._tiny_lm_setup()

    def via_attribute(out_clean, out_corr, grads_at, valid, steps):
        return attribute(s["model"], s["graph"], s["pairs"], method="eap-ig", ig_steps=steps).scores

    def via_tuning(named, masks, opt):
        st = SimpleNamespace(_named=named, masks=masks, _saved=[])
        CircuitTuning.after_backward(st)
        opt.step()
        CircuitTuning.after_step(st, opt)

    for check, fn, name in ((exercises.circuits.check_eap_ig_scores, via_attribute, "circuits.attribute"),
                            (exercises.circuits.check_masked_step, via_tuning, "CircuitTuning.after_backward")):
        res = check(fn)
        out = capsys.readouterr().out
        assert not res.passed and "WriteItYourself" in out and name in out, out


def test_masked_step_frozen_entries_are_bit_exact_in_the_package_trace() -> None:
    """Circuit-tuning's own step keeps every entry outside the circuit bit for bit, and moves the others."""
    trace = ex_circuits._masked_trace(None)
    moved = 0
    for st in trace["steps"]:
        for n, p in st["params"].items():
            m = st["masks"][n]
            assert torch.equal(p[~m], st["before"][n][~m]), n
            moved += int((p[m] != st["before"][n][m]).sum())
    assert moved > 0


def test_every_circuits_check_is_covered() -> None:
    mine = {name for name, ex in registry().items() if ex.notebook == "04_circuit_tuning"}
    assert mine == set(SOLUTIONS) == set(ex_circuits.__all__)


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_check_accepts_a_solution_and_catches_a_mistake(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    right, wrong = SOLUTIONS[name]
    check = getattr(exercises.circuits, name)
    ok = check(right)
    out = capsys.readouterr().out
    assert ok.passed, out
    assert out.startswith("✔ Exercise") and "correct on all" in out, out
    bad = check(wrong)
    out = capsys.readouterr().out
    assert not bad.passed and bad.n_failed >= 1, out
    assert out.startswith("✘ Exercise") and "expected" in out and "got" in out, out
    assert "hint:" in out, out


def test_parameter_mask_missing_keys_message(capsys: pytest.CaptureFixture[str]) -> None:
    res = exercises.circuits.check_parameter_mask(lambda graph, mask, params: {})
    out = capsys.readouterr().out
    assert not res.passed and "expected a mask for each of the 38 parameters, got 0 keys" in out, out


# --------------------------------------------------------------------------------------------
# known answers
# --------------------------------------------------------------------------------------------


def test_faithfulness_known_answers() -> None:
    cases = ex_circuits._faithfulness_cases()
    assert len(cases) == 6
    lin, empty, full, sat, *lm = cases
    # toy linear metric: the circuit (edges (0,1), (0,3), (2,3)) holds 1.0 + 2.0 + 1.6 of the total 7.0
    assert lin.expected == pytest.approx(4.6 / 7.0, abs=1e-12)
    assert empty.expected == 0.0 and full.expected == 1.0
    # toy saturating metric: m = exp(-S) with S the summed |E| of the patched edges (total 7.4, circuit 4.6)
    s_all, s_out = 7.4, 7.4 - 4.6
    assert sat.expected == pytest.approx((math.exp(-s_out) - math.exp(-s_all)) / (1 - math.exp(-s_all)), abs=1e-12)
    # every case: the expected value is the formula evaluated with the case's own metric
    for case in cases:
        metric, mask, valid = case.args
        m_full = metric(torch.zeros(valid.shape))
        m_empty = metric(valid.float())
        m_c = metric((valid & ~mask).float())
        assert (m_c - m_empty) / (m_full - m_empty) == pytest.approx(case.expected, abs=1e-5), case.label
    # the patched metric really patches: all edges patched = the corrupted run's metric
    from mechnb.circuits import logit_diff

    s = ex_circuits._tiny_lm_setup()
    metric, _, valid = lm[0].args
    with torch.no_grad():
        m_corr = float(logit_diff(s["model"](s["pairs"].corrupted), s["pairs"]))
    assert metric(valid.float()) == pytest.approx(m_corr, abs=1e-4)
    assert metric(torch.zeros(valid.shape)) == pytest.approx(float(logit_diff(s["logits"], s["pairs"])), abs=1e-5)
    for case in lm:
        assert 0.0 < case.expected < 1.5, case.label  # a real circuit of the agreement task keeps part of it


def _owned(masks: dict[str, torch.Tensor]) -> dict[str, int]:
    return {name: int(m.sum()) for name, m in masks.items() if m.any()}


def test_parameter_mask_known_answers() -> None:
    cases = ex_circuits._parameter_mask_cases()
    assert [c.label for c in cases][:5] == ["the empty circuit", "one edge input -> a0.h1<q>",
                                            "one edge a0.h2 -> a1.h3<v>", "one edge input -> m0",
                                            "one edge m1 -> logits"]
    d_model, d_head, d_mlp = 64, 16, 256
    by_hand = [
        {},
        {"blocks.0.attn.W_Q": d_model * d_head, "blocks.0.attn.b_Q": d_head},
        {"blocks.0.attn.W_O": d_head * d_model, "blocks.1.attn.W_V": d_model * d_head, "blocks.1.attn.b_V": d_head},
        {"blocks.0.ln2.w": d_model, "blocks.0.ln2.b": d_model, "blocks.0.mlp.W_in": d_model * d_mlp,
         "blocks.0.mlp.b_in": d_mlp},
        {"blocks.1.mlp.W_out": d_mlp * d_model, "blocks.1.mlp.b_out": d_model},
    ]
    for case, expected in zip(cases, by_hand):
        assert _owned(case.expected) == expected, case.label
    # the slices are the right heads
    assert cases[1].expected["blocks.0.attn.W_Q"][1].all() and not cases[1].expected["blocks.0.attn.W_Q"][0].any()
    assert cases[2].expected["blocks.0.attn.W_O"][2].all() and cases[2].expected["blocks.1.attn.W_V"][3].all()
    # the full graph: everything but the shared parameters
    full = cases[-1]
    assert full.label == "every edge of the graph"
    shared = re.compile(r"^(embed|pos_embed|ln_final|unembed)\.|\.ln1\.|attn\.b_O$")
    for name, m in full.expected.items():
        assert bool(m.all()) == (not shared.search(name)) and bool(m.any()) == (not shared.search(name)), name
    # the agreement circuit: between the empty and the full case, and a superset of its nodes' slices
    top = cases[5]
    n_top = sum(_owned(top.expected).values())
    assert 0 < n_top < sum(_owned(full.expected).values())


# --------------------------------------------------------------------------------------------
# the notebook: exercises numbered in notebook order
# --------------------------------------------------------------------------------------------


def test_notebook_exercises_in_order() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    checks = registry()
    boxes, solutions, calls = [], [], []
    for c in nb.cells:
        if c.cell_type == "markdown":
            boxes += re.findall(r"^\*\*Exercise (4\.\d+) · [^*]+\*\*<br>$", c.source, re.M)
        elif "# SOLUTION" in c.source:
            assert c.source.startswith("# NBVAL_CHECK_OUTPUT\n")
            solutions += re.findall(r"# SOLUTION (4\.\d+)", c.source)
            called = re.findall(r"^exercises\.circuits\.(check_\w+)\(", c.source, re.M)
            assert len(called) == 1, c.source
            calls.append(checks[called[0]].id)
    expected = [f"4.{i}" for i in range(1, len(boxes) + 1)]
    assert len(boxes) >= 3
    assert boxes == solutions == calls == expected
