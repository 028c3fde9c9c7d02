"""The recipe switches of the authors' later code and ``spd.evaluate``, with closed-form answers.

* ``delta_component``: the residual ``W - U V^T`` as one more subcomponent (importance 0) that
  replaces the faithfulness loss;
* ``lower_sigmoid="leaky_backward"``: ``clamp(x, 0, 1)`` forward, the leak only in the backward
  pass and only where the gradient asks for a larger importance;
* ``ci_fn="vector"`` / ``"shared"``: CI functions on the whole layer input;
* ``evaluate``: stochastic, rounded and adversarial (PGD in ``[g, 1]``) reconstruction and L0.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mechnb.models import TMS
from mechnb.spd import (
    SharedCIMLPs,
    SPDComponents,
    SPDConfig,
    SPDResult,
    VectorCIMLPs,
    adversarial_masks,
    decompose,
    evaluate,
    lower_leaky_backward_hard_sigmoid,
)
from mechnb.spd.decompose import spd_step
from mechnb.spd.hooks import HookedTarget
from mechnb.spd.losses import SPDLosses, total_loss
from mechnb.tasks import sparse_features

torch.set_num_threads(1)


def pentagon_tms() -> TMS:
    torch.manual_seed(0)
    m = TMS(5, 2)
    ang = torch.arange(5) * 2 * math.pi / 5
    with torch.no_grad():
        m.linear1.weight.copy_(1.13 * torch.stack([ang.cos(), ang.sin()]))
        m.linear2.bias.fill_(-0.25)
    return m.eval()


def sampler(n: int = 5, p: float = 0.05, value_range=(0.0, 1.0)):
    return lambda b, g: sparse_features(b, n, p, g, value_range=value_range)


def short(model=None, modules=("linear1", "linear2"), **kw) -> SPDResult:
    fields = dict(C=6, steps=20, batch_size=128, lr=1e-2, n_eval_batches=1, faithfulness_warmup_steps=20)
    fields.update(kw)
    return decompose(pentagon_tms() if model is None else model, list(modules), sampler(), SPDConfig(**fields),
                     progress=False)


# --------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, exc", [(dict(lower_sigmoid="sigmoid"), ValueError), (dict(ci_fn="mlp"), ValueError),
                                     (dict(delta_component=1), TypeError), (dict(upper_leaky_alpha=-1.0), ValueError)])
def test_switches_are_validated(kw, exc):
    with pytest.raises(exc, match=next(iter(kw))):
        SPDConfig(**kw)


def test_upper_leaky_alpha_sets_the_pull_on_saturated_importances():
    from mechnb.spd.hooks import causal_importances

    comps = SPDComponents({"l": (2, 3)}, C=2, ci_hidden=2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        comps.ci.W_out.zero_()
        comps.ci.b_out.copy_(torch.tensor([[3.0, 0.5]]))  # one saturated pre-activation, one not
    acts = {"l": torch.rand(4, 3)}
    lo, up = causal_importances(comps, acts, 0.01)
    assert torch.allclose(up[0, 0], torch.tensor([1.02, 0.5]))
    lo2, up2 = causal_importances(comps, acts, 0.01, upper_alpha=0.5)
    assert torch.allclose(up2[0, 0], torch.tensor([2.0, 0.5])) and torch.equal(lo, lo2)
    cfg = SPDConfig(upper_leaky_alpha=0.5)
    assert cfg.upper_alpha == 0.5 and SPDConfig().upper_alpha == SPDConfig().leaky_alpha


# --------------------------------------------------------------------------------------
# delta component
# --------------------------------------------------------------------------------------
def test_delta_component_makes_the_all_ones_model_exact_at_any_init():
    comps = SPDComponents({"l": (3, 4)}, C=2, ci_hidden=2, generator=torch.Generator().manual_seed(0))
    W, b = torch.randn(3, 4), torch.randn(3)
    a = torch.randn(7, 4)
    out = comps.component_forward("l", a, torch.ones(7, 3), b, target_weight=W)  # C + 1 columns: delta kept
    assert torch.allclose(out, a @ W.T + b, atol=1e-5)
    no_delta = comps.component_forward("l", a, torch.ones(7, 3) * torch.tensor([1.0, 1.0, 0.0]), b, target_weight=W)
    assert torch.allclose(no_delta, comps.component_forward("l", a, torch.ones(7, 2), b), atol=1e-6)
    half = comps.component_forward("l", a, torch.tensor([0.0, 0.0, 0.5]).expand(7, 3), None, target_weight=W)
    assert torch.allclose(half, 0.5 * a @ (W - comps.weight("l")).T, atol=1e-5)
    with pytest.raises(ValueError, match="target_weight"):
        comps.component_forward("l", a, torch.ones(7, 3), b)


def test_delta_component_replaces_faithfulness_in_the_total():
    terms = SPDLosses(*(torch.tensor(v) for v in (1.0, 2.0, 3.0, 4.0)))
    plain = SPDConfig(importance_minimality=0.1)
    assert total_loss(terms, plain).item() == pytest.approx(1.0 + 2.0 + 3.0 + 0.4)
    assert total_loss(terms, plain.replace(delta_component=True)).item() == pytest.approx(2.0 + 3.0 + 0.4)


def test_delta_component_step_masks_the_residual_with_a_random_factor():
    """U V^T = W / 2 and every CI 1: without the delta component the masked model is the halved
    layer; with it the residual W / 2 comes back scaled by r ~ U(0, 1), so the reconstruction error
    is E[(1 - r)^2] = 1/3 of the error without it."""
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
    W = model[0].weight.detach()
    comps = SPDComponents({"0": (3, 4)}, C=4, ci_hidden=2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        comps.U("0").copy_(W / 2)
        comps.V("0").copy_(torch.eye(4))
        comps.ci.W_out.zero_()
        comps.ci.b_out.fill_(10.0)  # CI 1 everywhere
    x = torch.randn(20000, 4, generator=torch.Generator().manual_seed(1))
    w = torch.full((20000,), 1 / 20000)
    target = HookedTarget(model, {"0": model[0]}, comps)
    res = {}
    for delta in (False, True):
        cfg = SPDConfig(C=4, ci_hidden=2, delta_component=delta, stochastic_recon_layerwise=0.0)
        with target.hooks():
            res[delta] = spd_step(target, {"0": W}, x, w, cfg, 1.0, torch.Generator().manual_seed(2))
    full = ((x @ (W / 2).T) ** 2).mean().item()
    assert res[False].stochastic_recon.item() == pytest.approx(full, rel=1e-5)
    assert res[True].stochastic_recon.item() == pytest.approx(full / 3, rel=0.03)
    assert res[True].faithfulness.item() == pytest.approx(res[False].faithfulness.item())  # still recorded


def test_delta_component_run_records_faithfulness_and_evaluates():
    r = short(delta_component=True)
    assert len(r.history["faithfulness"]) == 20 and all(math.isfinite(v) for v in r.history["total"])
    x = sampler()(256, torch.Generator().manual_seed(0))
    ev = evaluate(r, x, pgd_steps=3)
    assert ev.settings["delta_component"] and ev.adversarial_recon >= 0.0


# --------------------------------------------------------------------------------------
# lower sigmoid with the leak in the backward pass
# --------------------------------------------------------------------------------------
def test_leaky_backward_hard_sigmoid_closed_form():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5], requires_grad=True)
    y = lower_leaky_backward_hard_sigmoid(x, 0.01)
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.0, 0.0, 0.3, 1.0, 1.0]))
    # negative incoming gradient (the loss wants a larger importance): leak below 0
    (g,) = torch.autograd.grad(y, x, -torch.ones(6))
    assert torch.allclose(g, torch.tensor([-0.01, -0.01, -0.01, -1.0, -1.0, 0.0]))
    # positive incoming gradient: no push below 0 at all
    (g,) = torch.autograd.grad(lower_leaky_backward_hard_sigmoid(x, 0.01), x, torch.ones(6))
    assert torch.allclose(g, torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 0.0]))


def test_leaky_backward_run_never_builds_negative_importances():
    r = short(lower_sigmoid="leaky_backward")
    x = sampler(p=0.3)(256, torch.Generator().manual_seed(0))
    lower = torch.stack(list(r.causal_importances(x, kind="lower").values()))
    assert (lower >= 0).all() and (lower <= 1).all()
    assert short().causal_importances(x, kind="lower")["linear1"].min() < 0  # the paper's leak goes below 0


# --------------------------------------------------------------------------------------
# vector and shared CI functions
# --------------------------------------------------------------------------------------
def test_vector_and_shared_ci_functions_match_plain_mlps():
    g = torch.Generator().manual_seed(0)
    acts = [torch.randn(7, 5, generator=g), torch.randn(7, 2, generator=g)]
    vec = VectorCIMLPs([5, 2], C=3, hidden=4, generator=g)
    sh = SharedCIMLPs([5, 2], C=3, hidden=4, generator=g)
    with torch.no_grad():
        for p in (*vec.b_in, *vec.b_out, *sh.b_in, *sh.b_out):
            p.normal_(generator=g)
    out_v, out_s = vec(acts), sh(acts)
    assert out_v.shape == out_s.shape == (7, 2, 3)
    for l, a in enumerate(acts):
        ref_s = F.gelu(a @ sh.W_in[l] + sh.b_in[l]) @ sh.W_out[l] + sh.b_out[l]
        assert torch.allclose(out_s[:, l], ref_s, atol=1e-5)
        for c in range(3):
            ref_v = F.gelu(a @ vec.W_in[l][c] + vec.b_in[l][c]) @ vec.W_out[l][c] + vec.b_out[l][c]
            assert torch.allclose(out_v[:, l, c], ref_v, atol=1e-5)
    # one network per layer: the shared function's parameter count does not grow with C x hidden x d_in
    n_sh = sum(p.numel() for p in sh.parameters())
    assert n_sh == (5 * 4 + 4 + 4 * 3 + 3) + (2 * 4 + 4 + 4 * 3 + 3)


@pytest.mark.parametrize("ci_fn", ["vector", "shared"])
def test_vector_and_shared_ci_read_the_whole_layer_input(ci_fn):
    """A scalar CI function sees only V_c^T a; the vector / shared ones see every input coordinate."""
    comps = SPDComponents({"l": (2, 5)}, C=3, ci_hidden=4, ci_fn=ci_fn, generator=torch.Generator().manual_seed(0))
    a = torch.randn(1, 5, requires_grad=True)
    pre = comps.ci_pre_activations({"l": a})
    (grad,) = torch.autograd.grad(pre[0, 0, 0], a)
    assert (grad.abs() > 0).all()
    V = comps.V("l").detach()
    with torch.no_grad():
        null = torch.linalg.svd(V.T).Vh[-1]  # a direction with V^T null = 0
    scalar = SPDComponents({"l": (2, 5)}, C=3, ci_hidden=4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scalar.V("l").copy_(V)
        b = a.detach() + null
        assert torch.allclose(scalar.ci_pre_activations({"l": a.detach()}), scalar.ci_pre_activations({"l": b}),
                              atol=1e-5)
        assert not torch.allclose(comps.ci_pre_activations({"l": a.detach()}), comps.ci_pre_activations({"l": b}),
                                  atol=1e-3)


@pytest.mark.parametrize("ci_fn", ["vector", "shared"])
def test_runs_with_vector_and_shared_ci_functions_and_save(ci_fn, tmp_path):
    from mechnb import io

    r = short(ci_fn=ci_fn)
    assert r.components.ci_fn == ci_fn and all(math.isfinite(v) for v in r.history["total"])
    x = sampler(p=0.3)(64, torch.Generator().manual_seed(0))
    assert r.causal_importances(x)["linear2"].shape == (64, 6)
    tensors, meta = r.components.to_state()
    back = SPDComponents.from_state(tensors, meta)
    assert back.ci_fn == ci_fn
    acts = {"linear1": x, "linear2": x @ r.target_weight("linear1").T}
    assert torch.equal(back.ci_pre_activations(acts), r.components.ci_pre_activations(acts))


# --------------------------------------------------------------------------------------
# evaluate: stochastic, rounded, adversarial reconstruction and L0
# --------------------------------------------------------------------------------------
def _one_linear(C: int = 5) -> tuple[SPDResult, torch.Tensor]:
    """A bias-free linear layer W (3, 5) with non-negative entries, decomposed into its columns
    (U = W, V = I): subcomponent j reads only input feature j."""
    model = nn.Sequential(nn.Linear(5, 3, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) + 0.1)
    r = decompose(model, ["0"], sampler(), SPDConfig(C=C, ci_hidden=1, steps=1, batch_size=16, n_eval_batches=1),
                  progress=False)
    with torch.no_grad():
        r.components.U("0").copy_(model[0].weight)
        r.components.V("0").copy_(torch.eye(5))
    x = sparse_features(4096, 5, 0.2, torch.Generator().manual_seed(1), value_range=(0.1, 1.0))
    return r, x


def test_evaluate_a_perfect_decomposition_gives_zero_everywhere():
    """CI 1 exactly when a feature is active (gelu(1000 v) >= 1 for v >= 0.1, 0 at v = 0); an
    inactive subcomponent reads 0, so every mask in [g, 1] reproduces the output."""
    r, x = _one_linear()
    with torch.no_grad():
        r.components.ci.W_in.fill_(1000.0)
        r.components.ci.b_in.zero_()
        r.components.ci.W_out.fill_(1.0)
        r.components.ci.b_out.zero_()
    ev = evaluate(r, x, pgd_steps=5)
    assert ev.stochastic_recon == pytest.approx(0.0, abs=1e-12)
    assert ev.rounded_recon == pytest.approx(0.0, abs=1e-12)
    assert ev.adversarial_recon == pytest.approx(0.0, abs=1e-12)
    assert ev.l0["0"] == pytest.approx(float((x > 0).sum(1).double().mean()), abs=1e-9)
    assert ev.l0_total == ev.l0["0"] and ev.n_inputs == 4096


def test_evaluate_adversarial_finds_the_worst_mask_and_beats_stochastic():
    """All importances 0: the worst mask in [0, 1] for a non-negative W and x ablates everything,
    giving mean ||W x||^2 / 3; random masks lose only part of the output."""
    r, x = _one_linear()
    with torch.no_grad():
        r.components.ci.W_out.zero_()
        r.components.ci.b_out.fill_(-10.0)  # lower-leaky -0.1, clipped to 0
    ev = evaluate(r, x, pgd_steps=10, pgd_step_size=0.1, n_mask_samples=8)
    worst = ((x @ r.target_weight("0").T) ** 2).mean().item()
    assert ev.adversarial_recon == pytest.approx(worst, rel=1e-5)
    assert ev.rounded_recon == pytest.approx(worst, rel=1e-5)  # rounded masks of g = 0 ablate everything
    assert ev.stochastic_recon < 0.6 * ev.adversarial_recon
    assert ev.l0["0"] == 0.0


def test_adversarial_masks_stay_in_the_box_and_never_lose_to_their_start():
    g = torch.rand(64, 2, 7, generator=torch.Generator().manual_seed(0))
    target = torch.randn(64, 2, 7, generator=torch.Generator().manual_seed(1))

    def loss_fn(m):
        return ((m - target) ** 2).mean()

    start = g + (1 - g) * torch.rand(g.shape, generator=torch.Generator().manual_seed(3))
    masks, value = adversarial_masks(loss_fn, g, n_steps=6, step_size=0.3, generator=torch.Generator().manual_seed(3))
    assert (masks >= g - 1e-7).all() and (masks <= 1 + 1e-7).all()
    assert value == pytest.approx(loss_fn(masks).item(), rel=1e-6)
    assert value >= loss_fn(start).item()
    # a separable convex loss: sign ascent drives each mask from its start away from its target, to
    # the end of [g, 1] on that side (0.3-steps reach it within 4 steps)
    ends = torch.where(start > target, torch.ones_like(g), g)
    assert torch.allclose(masks, ends, atol=1e-6)
    with pytest.raises(ValueError, match="ci"):
        adversarial_masks(loss_fn, g + 1.0)
    with pytest.raises(ValueError, match="step_size"):
        adversarial_masks(loss_fn, g, step_size=0.0)


def test_evaluate_on_a_trained_decomposition_is_ordered_and_reproducible():
    r = short(steps=40)
    x = sampler()(2048, torch.Generator().manual_seed(0))
    ev = evaluate(r, x)
    assert ev.adversarial_recon >= ev.stochastic_recon >= 0.0 and ev.rounded_recon >= 0.0
    assert 0.0 <= ev.l0["linear1"] <= r.C
    again = evaluate(r, x)
    assert (again.stochastic_recon, again.adversarial_recon) == (ev.stochastic_recon, ev.adversarial_recon)
    with pytest.raises(TypeError, match="result"):
        evaluate("result", x)
    with pytest.raises(ValueError, match="l0_threshold"):
        evaluate(r, x, l0_threshold=2.0)
    with pytest.raises(TypeError, match="seed"):
        evaluate(r, x, seed=1.5)
