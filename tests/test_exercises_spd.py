"""Check functions of notebook 02 (mechnb.exercises.spd) and the exercises in the notebook.

For every check: a correct solution passes, a typical mistake fails with "expected" and "got";
the known answers of the checks are right (closed forms, mechnb's own implementation); the
notebook holds the exercises in check order with the box, the marked solution and the check call.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import torch

from mechnb import spd
from mechnb.exercises import registry, run_cases
from mechnb.exercises import spd as ex_spd

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02_stochastic_parameter_decomposition.ipynb"


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MECHNB_STRICT_CHECKS", raising=False)


# --------------------------------------------------------------------------------------------
# solutions: a correct one and typical mistakes
# --------------------------------------------------------------------------------------------


def lower(x, alpha=0.01):
    return torch.where(x < 0, alpha * x, x.clamp(max=1.0))


def upper(x, alpha=0.01):
    return torch.where(x > 1, 1 + alpha * (x - 1), x.clamp(min=0.0))


def masks(ci, generator):
    r = torch.rand(ci.shape, generator=generator, dtype=ci.dtype)
    return ci + (1 - ci) * r


def masks_rand_like(ci, generator):  # ignores the generator
    return ci + (1 - ci) * torch.rand_like(ci)


def masks_swapped(ci, generator):  # g and 1 - g swapped: g = 1 is ablated, g = 0 kept
    r = torch.rand(ci.shape, generator=generator, dtype=ci.dtype)
    return (1 - ci) + ci * r


def masks_clamped(ci, generator):  # clamps the lower-leaky importances
    g = ci.clamp(0.0, 1.0)
    return g + (1 - g) * torch.rand(ci.shape, generator=generator, dtype=ci.dtype)


def layer(a, U, V, mask, bias=None):
    out = ((a @ V) * mask) @ U.T
    return out if bias is None else out + bias


def layer_no_bias(a, U, V, mask, bias=None):
    return ((a @ V) * mask) @ U.T


def layer_unmasked(a, U, V, mask, bias=None):
    out = (a @ V) @ U.T
    return out if bias is None else out + bias


def imp_min(ci, p):
    return ci.pow(p).sum(dim=(1, 2)).mean()


def imp_min_mean_all(ci, p):  # divides by L * C too
    return ci.pow(p).mean()


def imp_min_clamped(ci, p):
    return ci.clamp(0, 1).pow(p).sum(dim=(1, 2)).mean()


SPD_CHECKS = {
    "check_lower_leaky_hard_sigmoid": (lower, [spd.upper_leaky_hard_sigmoid, lambda x, alpha=0.01: x.clamp(0, 1)]),
    "check_upper_leaky_hard_sigmoid": (upper, [spd.lower_leaky_hard_sigmoid, lambda x, alpha=0.01: x.clamp(0, 1)]),
    "check_stochastic_masks": (masks, [masks_rand_like, masks_swapped, masks_clamped]),
    "check_masked_layer_forward": (layer, [layer_no_bias, layer_unmasked]),
    "check_importance_minimality": (imp_min, [imp_min_mean_all, imp_min_clamped]),
    "check_spd_train_step": None,  # tested below (its cases are slower)
}


def test_every_spd_check_is_covered_and_numbered_in_order() -> None:
    ours = {name: ex for name, ex in registry().items() if ex.notebook == ex_spd.NOTEBOOK}
    assert set(ours) == set(SPD_CHECKS) == set(ex_spd.__all__)
    assert [ex.id for ex in ours.values()] == [f"2.{i}" for i in range(1, len(ours) + 1)]


@pytest.mark.parametrize("name", [n for n, v in SPD_CHECKS.items() if v is not None])
def test_check_accepts_a_solution_and_catches_mistakes(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    right, wrongs = SPD_CHECKS[name]
    check = registry()[name].check
    ok = check(right)
    out = capsys.readouterr().out
    assert ok.passed, out
    assert out.startswith("✔ Exercise") and "correct on all" in out
    for wrong in wrongs:
        bad = check(wrong)
        out = capsys.readouterr().out
        assert not bad.passed and bad.n_failed >= 1, (wrong.__name__, out)
        assert out.startswith("✘ Exercise") and "expected" in out and "got" in out, out
        assert "hint:" in out, out


def test_mechnb_own_functions_pass_their_checks(capsys: pytest.CaptureFixture[str]) -> None:
    """mechnb's implementations agree with the checks' known answers."""
    assert run_cases(spd.lower_leaky_hard_sigmoid, _hard_sigmoid_cases(spd.lower_leaky_hard_sigmoid), exercise="2.1")
    assert run_cases(spd.upper_leaky_hard_sigmoid, _hard_sigmoid_cases(spd.upper_leaky_hard_sigmoid), exercise="2.2")
    assert run_cases(spd.stochastic_masks, ex_spd._stochastic_mask_cases(), exercise="2.3", atol=1e-6, rtol=1e-5)
    assert ex_spd.check_masked_layer_forward(_component_forward)
    cases = [c for c, _ in ex_spd._importance_minimality_cases()]
    for c, (_, v) in zip(cases, ex_spd._importance_minimality_cases()):
        c.expected = v
    assert run_cases(spd.importance_minimality_loss, cases, exercise="2.5")
    capsys.readouterr()


def _hard_sigmoid_cases(ref):
    """The cases of 2.1 / 2.2 with ``ref``'s values (as the check builds them)."""
    from mechnb.exercises._core import Case

    cases = [Case((x,), ref(x), label=label) for x, label in ex_spd._inputs()]
    x = torch.linspace(-3.0, 3.0, 7)
    return cases + [Case((x,), ref(x, alpha=0.1), kwargs={"alpha": 0.1})]


def test_checks_reject_the_package_function_they_rebuild(capsys: pytest.CaptureFixture[str]) -> None:
    """2.1, 2.2 and 2.5 fail with 'write it yourself' for the package's own function, even through a lambda."""
    for check, fn, name in ((ex_spd.check_lower_leaky_hard_sigmoid, spd.lower_leaky_hard_sigmoid, "2.1"),
                            (ex_spd.check_upper_leaky_hard_sigmoid, lambda x, alpha=0.01: spd.upper_leaky_hard_sigmoid(x, alpha), "2.2"),
                            (ex_spd.check_importance_minimality, lambda ci, p: spd.importance_minimality_loss(ci, p), "2.5")):
        res = check(fn)
        out = capsys.readouterr().out
        assert not res.passed and res.n_failed == res.n_cases, (name, out)
        assert "WriteItYourself" in out and f"Exercise {name}" in out, out


def _component_forward(a, U, V, mask, bias=None):
    """The masked layer through :meth:`mechnb.spd.SPDComponents.component_forward`."""
    comps = spd.SPDComponents({"layer": tuple(U.shape[:1]) + tuple(V.shape[:1])}, C=U.shape[1], ci_hidden=2).double()
    with torch.no_grad():
        comps.U_params["0"].copy_(U)
        comps.V_params["0"].copy_(V)
        return comps.component_forward("layer", a, mask, bias)


# --------------------------------------------------------------------------------------------
# the known answers
# --------------------------------------------------------------------------------------------


def test_hard_sigmoid_closed_forms() -> None:
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5, 3.0])
    assert torch.allclose(spd.lower_leaky_hard_sigmoid(x), torch.tensor([-0.02, -0.005, 0.0, 0.3, 1.0, 1.0, 1.0]))
    assert torch.allclose(spd.upper_leaky_hard_sigmoid(x), torch.tensor([0.0, 0.0, 0.0, 0.3, 1.0, 1.005, 1.02]))


def test_stochastic_mask_cases_known_answers() -> None:
    cases = ex_spd._stochastic_mask_cases()
    # case 1: m = g + (1 - g) r with r = torch.rand on seed 0, built independently of mechnb
    ci = cases[0].args[0]
    r = torch.rand(ci.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(cases[0].expected, ci + (1 - ci) * r)
    assert cases[1].expected.eq(1).all()                       # g = 1 -> m = 1
    zeros = cases[2].args[0]
    assert zeros.eq(0).all() and cases[2].expected.shape == zeros.shape
    assert 0.45 < float(cases[2].expected.mean()) < 0.55       # g = 0 -> m = r ~ U(0, 1)
    leaky = cases[3].args[0]
    assert (leaky < 0).any()
    r3 = torch.rand(leaky.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(cases[3].expected, leaky + (1 - leaky) * r3)   # g used as it is, not clamped
    assert not torch.allclose(cases[3].expected, masks_clamped(leaky, torch.Generator().manual_seed(3)), atol=1e-6)
    # the range property: holds for the right masks, reports a mask below g
    wide = cases[4].args[0]
    compare = cases[4].compare
    assert compare(None, masks(wide, torch.Generator().manual_seed(4))) is None
    bad = wide.clone()
    bad[0, 0, 0] = wide[0, 0, 0] - 0.5
    msg = compare(None, bad)
    assert msg and "expected every mask in [g, 1]" in msg and "got 1 of" in msg
    assert "wrong shape" in compare(None, wide[:, 0])
    # mean mask is (1 + g) / 2
    g = torch.tensor([0.0, 0.5, 1.0]).repeat(200_000, 1)[:, None, :]
    m = masks(g, torch.Generator().manual_seed(0))
    assert torch.allclose(m.mean(dim=(0, 1)), torch.tensor([0.5, 0.75, 1.0]), atol=3e-3)


def test_masked_layer_cases_known_answers() -> None:
    cases = ex_spd._masked_layer_cases()
    a, U, V, _ = cases[0].args
    W = U @ V.T
    assert torch.allclose(cases[0].expected, torch.stack([W @ row for row in a]))            # all masks 1: W a
    only2 = cases[1].args[3]
    assert only2[:, 2].eq(1).all() and only2.sum() == len(a)
    assert torch.allclose(cases[1].expected, torch.stack([(V[:, 2] @ row) * U[:, 2] for row in a]))
    b = cases[2].kwargs["bias"]
    assert torch.allclose(cases[2].expected, b.expand(len(a), -1))                          # all masks 0: bias
    # the random mask: explicit double loop, and mechnb's SPDComponents.component_forward
    mask = cases[3].args[3]
    loop = torch.stack([sum(mask[i, c] * U[:, c] * (V[:, c] @ a[i]) for c in range(U.shape[1])) + b
                        for i in range(len(a))])
    assert torch.allclose(cases[3].expected, loop)
    assert torch.allclose(cases[3].expected, _component_forward(a, U, V, mask, b))
    assert torch.allclose(cases[4].expected, loop - b)


def test_importance_minimality_cases_known_answers() -> None:
    for case, value in ex_spd._importance_minimality_cases():
        ci, p = case.args
        explicit = sum(float(ci[b].pow(p).sum()) for b in range(ci.shape[0])) / ci.shape[0]
        assert explicit == pytest.approx(value, rel=1e-6, abs=1e-6), case.label
        assert float(spd.importance_minimality_loss(ci, p)) == pytest.approx(value, rel=1e-5, abs=1e-5), case.label


# --------------------------------------------------------------------------------------------
# the notebook
# --------------------------------------------------------------------------------------------

BOX_RE = re.compile(r'^<div class="alert alert-block alert-info">\n\n'
                    r"\*\*Exercise (?P<id>2\.\d+) · (?P<title>[^*]+)\*\*<br>\n"
                    r"Difficulty: [🔴⚪]{5} · Importance: [🔵⚪]{5} · ≈ \d+ min\n")


def test_notebook_exercises_follow_the_checks() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = nb.cells
    found = []
    for i, c in enumerate(cells):
        if c.cell_type != "markdown" or "alert-info" not in c.source:
            continue
        m = BOX_RE.match(c.source)
        assert m, f"cell {i}: exercise box not in the expected shape:\n{c.source[:300]}"
        assert "<summary>💡 Hint</summary>" in c.source and "<summary>✅ Solution</summary>" in c.source
        code = cells[i + 1]
        assert code.cell_type == "code" and code.source.startswith("# NBVAL_CHECK_OUTPUT\n"), f"cell {i + 1}"
        ex_id = m.group("id")
        assert f"# SOLUTION {ex_id}\n" in code.source and "# END SOLUTION" in code.source
        call = re.search(r"^exercises\.spd\.(check_\w+)\((\w+)\)$", code.source, re.MULTILINE)
        assert call, f"cell {i + 1}: no exercises.spd.check_...(fn) call"
        assert registry()[call.group(1)].id == ex_id, f"cell {i + 1}: box {ex_id} calls {call.group(1)}"
        assert re.search(rf"^def {call.group(2)}\(", code.source, re.MULTILINE)
        # the solution shown in the box is the marked solution
        body = code.source.split(f"# SOLUTION {ex_id}\n")[1].split("    # END SOLUTION")[0]
        assert body.strip() in c.source, f"cell {i}: box solution differs"
        # no call of the mechnb function it reimplements
        assert "mechnb" not in body and "spd." not in body
        found.append(ex_id)
    assert found == [ex.id for ex in registry().values() if ex.notebook == ex_spd.NOTEBOOK]
    first_code = next(c for c in cells if c.cell_type == "code")
    assert "from mechnb import exercises" in first_code.source


# --------------------------------------------------------------------------------------------
# the package's own function does not pass for the learner's
# --------------------------------------------------------------------------------------------


def test_stochastic_masks_check_rejects_the_package_function(capsys: pytest.CaptureFixture[str]) -> None:
    from mechnb.spd.losses import stochastic_masks as deep

    for fn in (spd.stochastic_masks, lambda ci, generator: deep(ci, generator)):
        res = ex_spd.check_stochastic_masks(fn)
        out = capsys.readouterr().out
        assert not res.passed and res.n_failed == res.n_cases, out
        assert "WriteItYourself" in out and "spd.stochastic_masks" in out and "Exercise 2.3" in out, out
    assert ex_spd.check_stochastic_masks(masks)   # the guard is gone after the check
    capsys.readouterr()


# --------------------------------------------------------------------------------------------
# 2.6 one SPD training step: the reference passes, each typical mistake fails with expected/got
# --------------------------------------------------------------------------------------------


def _make_step(masks_from="lower", imp_from="upper", freeze=True, p_fixed=None, imp_sum="lc",
               layerwise="one", zero_grad=True):
    """A learner's step with one knob turned away from the reference (the defaults are right)."""

    def step(target, W, x, weights, optimizer, config, p, generator):
        comps, names = target.components, target.components.names
        if freeze:
            target.model.requires_grad_(False)
            with torch.no_grad():
                out, acts = target.capture(x)
        else:
            out, acts = target.capture(x)
        pre = comps.ci_pre_activations(acts)
        lo, up = lower(pre, config.leaky_alpha), upper(pre, config.upper_alpha)
        g_mask, g_imp = (lo if masks_from == "lower" else up), (up if imp_from == "upper" else lo)

        def mse(y):
            return (((y - out) ** 2).reshape(len(y), -1).mean(dim=1) * weights).sum()

        faith = sum(((W[n] - comps.weight(n)) ** 2).sum() for n in names) / sum(W[n].numel() for n in names)
        pw = p if p_fixed is None else p_fixed
        per = (g_imp.abs() + 1e-12).pow(pw)
        per = per.sum(dim=(1, 2)) if imp_sum == "lc" else per.mean(dim=(1, 2))
        imp = (per * weights).sum()
        m = masks(g_mask, generator)
        rec = mse(target.masked(x, {n: m[:, i] for i, n in enumerate(names)}))
        m = masks(g_mask, generator)
        if layerwise == "one":
            lw = sum(mse(target.masked(x, {n: m[:, i]})) for i, n in enumerate(names)) / len(names)
        else:
            lw = mse(target.masked(x, {n: m[:, i] for i, n in enumerate(names)}))
        total = (config.faithfulness * faith + config.stochastic_recon * rec
                 + config.stochastic_recon_layerwise * lw + config.importance_minimality * imp)
        if zero_grad:
            optimizer.zero_grad()
        total.backward()
        optimizer.step()
        return {"faithfulness": faith, "stochastic_recon": rec, "stochastic_recon_layerwise": lw,
                "importance_minimality": imp}

    return step


STEP_MISTAKES = {
    "masks from the upper importances": (_make_step(masks_from="upper"), "stochastic_recon"),
    "minimality on the lower importances": (_make_step(imp_from="lower"), "importance_minimality"),
    "target not frozen or detached": (_make_step(freeze=False), "no gradient to reach the target"),
    "p hard-coded to 1": (_make_step(p_fixed=1.0), "importance_minimality"),
    "minimality without the sum over subcomponents": (_make_step(imp_sum="mean"), "importance_minimality"),
    "layerwise reconstruction all layers at once": (_make_step(layerwise="all"), "stochastic_recon_layerwise"),
    "no zero_grad": (_make_step(zero_grad=False), "the update is not"),
}


def test_spd_train_step_reference_and_written_solution_pass(capsys: pytest.CaptureFixture[str]) -> None:
    for fn in (ex_spd.solution_spd_train_step, _make_step()):
        res = ex_spd.check_spd_train_step(fn)
        out = capsys.readouterr().out
        assert res.passed and res.n_cases == 3, out


@pytest.mark.parametrize("mistake", list(STEP_MISTAKES))
def test_spd_train_step_catches_mistakes(mistake: str, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fn, says = STEP_MISTAKES[mistake]
    monkeypatch.setattr(ex_spd, "_short_run", lambda step_fn, seed: {"linear1": -1, "linear2": -1})  # seeded cases only
    res = ex_spd.check_spd_train_step(fn)
    out = capsys.readouterr().out
    assert not res.passed and res.n_failed >= 2, (mistake, out)   # both seeded cases
    assert out.startswith("✘ Exercise 2.6") and "expected" in out and "got" in out and says in out, (mistake, out)


def test_spd_train_step_rejects_the_package_step(capsys: pytest.CaptureFixture[str]) -> None:
    from mechnb.spd.decompose import spd_step
    from mechnb.spd.losses import total_loss

    def via_package(target, W, x, weights, optimizer, config, p, generator):
        target.model.requires_grad_(False)
        terms = spd_step(target, W, x, weights, config, p, generator)
        optimizer.zero_grad()
        total_loss(terms, config).backward()
        optimizer.step()
        return {n: getattr(terms, n) for n in spd.LOSS_NAMES}

    res = ex_spd.check_spd_train_step(via_package)
    out = capsys.readouterr().out
    assert not res.passed and "WriteItYourself" in out and "spd.spd_step" in out, out


def test_short_run_package_reaches_five_alive_on_three_seeds() -> None:
    """The settings of the 300-step case: the package's decompose gives 5 + 5 alive (the ground truth)."""
    for seed in (0, 1, 2):
        assert ex_spd._package_alive(seed) == {"linear1": 5, "linear2": 5}, seed


def test_short_run_with_a_wrong_step_misses_the_alive_count(capsys: pytest.CaptureFixture[str]) -> None:
    """The 300-step case catches a step that is locally close but trains elsewhere (no minimality sum)."""
    got = ex_spd._short_run(_make_step(imp_sum="mean"), 0)
    assert got != ex_spd._package_alive(0), got
