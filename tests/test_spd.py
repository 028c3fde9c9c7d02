"""Tests for mechnb.spd (Stochastic Parameter Decomposition), its plots and widgets.

Fast tests check closed forms and invariances of the pieces. The paper's TMS quality bars on
real decompositions (several seeds) are in ``tests/test_spd_quality.py``; bad inputs in
``tests/test_spd_inputs.py``; the later recipe switches and ``spd.evaluate`` in
``tests/test_spd_recipes.py``.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from mechnb.experiments.spd import importance_minimality_sweep
from mechnb.models import TMS, ResidualMLP
from mechnb.spd import (
    AliveDecision,
    CausalImportanceMLPs,
    alive_decisions,
    SPDComponents,
    SPDConfig,
    SPDResult,
    compress_zero_rows,
    decompose,
    faithfulness_loss,
    feature_matches,
    dense_ci_error,
    identity_ci_error,
    importance_minimality_loss,
    keep_only_output,
    lower_leaky_hard_sigmoid,
    match_columns,
    mmcs_ml2r,
    one_hot_causal_importances,
    stochastic_masks,
    summarize,
    upper_leaky_hard_sigmoid,
)
from mechnb.tasks import sparse_features


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def pentagon_tms(n_hidden_layers: int = 0) -> TMS:
    """A hand-built TMS 5-2 solution: features on a regular pentagon, norm 1.13, bias -0.25."""
    torch.manual_seed(0)
    m = TMS(5, 2, n_hidden_layers=n_hidden_layers)
    ang = torch.arange(5) * 2 * math.pi / 5
    with torch.no_grad():
        m.linear1.weight.copy_(1.13 * torch.stack([ang.cos(), ang.sin()]))
        m.linear2.bias.fill_(-0.25)
    return m.eval()


def sampler(n_features: int, p: float = 0.05, value_range: tuple[float, float] = (0.0, 1.0)):
    return lambda b, g: sparse_features(b, n_features, p, g, value_range=value_range)


def tiny_run(model: nn.Module | None = None, steps: int = 30, **kw) -> SPDResult:
    model = pentagon_tms() if model is None else model
    fields = dict(C=8, steps=steps, batch_size=256, lr=1e-2, n_eval_batches=2, faithfulness_warmup_steps=50)
    fields.update(kw)
    cfg = SPDConfig(**fields)
    return decompose(model, ["linear1", "linear2"], sampler(5), cfg, progress=False)


@pytest.fixture(scope="module")
def short_result() -> SPDResult:
    return tiny_run(steps=40)


# --------------------------------------------------------------------------------------
# hard sigmoids, CI MLPs, masks
# --------------------------------------------------------------------------------------
def test_hard_sigmoids_closed_form():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.0, 3.0], requires_grad=True)
    lo = lower_leaky_hard_sigmoid(x, 0.01)
    up = upper_leaky_hard_sigmoid(x, 0.01)
    assert torch.allclose(lo, torch.tensor([-0.02, -0.005, 0.0, 0.3, 1.0, 1.0]))
    assert torch.allclose(up, torch.tensor([0.0, 0.0, 0.0, 0.3, 1.0, 1.02]))
    (g_lo,) = torch.autograd.grad(lo.sum(), x)
    (g_up,) = torch.autograd.grad(up.sum(), x)
    # lower: leaky below 0, flat above 1; upper: flat below 0, leaky above 1
    assert torch.allclose(g_lo[[0, 1, 3, 5]], torch.tensor([0.01, 0.01, 1.0, 0.0]))
    assert torch.allclose(g_up[[0, 1, 3, 5]], torch.tensor([0.0, 0.0, 1.0, 0.01]))


def test_ci_mlps_match_independent_tiny_mlps():
    g = torch.Generator().manual_seed(0)
    mlps = CausalImportanceMLPs(n_layers=2, C=3, hidden=4, generator=g)
    with torch.no_grad():
        mlps.b_in.normal_(generator=g)
        mlps.b_out.normal_(generator=g)
    inner = torch.randn(7, 2, 3, generator=g)
    out = mlps(inner)
    for l in range(2):
        for c in range(3):
            h = torch.nn.functional.gelu(inner[:, l, c, None] * mlps.W_in[l, c] + mlps.b_in[l, c])
            ref = h @ mlps.W_out[l, c] + mlps.b_out[l, c]
            assert torch.allclose(out[:, l, c], ref, atol=1e-6)


@pytest.mark.parametrize("chunk_elements", [64, 1 << 18])
def test_chunked_ci_mlps_match_autograd_reference(chunk_elements, monkeypatch):
    g = torch.Generator().manual_seed(1)
    mlps = CausalImportanceMLPs(n_layers=2, C=5, hidden=3, generator=g)
    monkeypatch.setattr(mlps, "chunk_elements", chunk_elements)  # 64: many chunks of 2 rows
    with torch.no_grad():
        mlps.b_in.normal_(generator=g)
        mlps.b_out.normal_(generator=g)
    inner = torch.randn(37, 2, 5, generator=g, requires_grad=True)
    gout = torch.randn(37, 2, 5, generator=g)
    params = [inner, *mlps.parameters()]
    out, ref = mlps(inner), mlps.reference(inner)
    assert torch.allclose(out, ref, atol=1e-6)
    for a, b in zip(torch.autograd.grad(out, params, gout), torch.autograd.grad(ref, params, gout)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_stochastic_masks_interpolate_between_ci_and_one():
    g = torch.Generator().manual_seed(0)
    ci = torch.tensor([0.0, 0.5, 1.0]).repeat(20000, 1).unsqueeze(1)  # (N, 1, 3)
    m = stochastic_masks(ci, g)
    assert m.shape == ci.shape
    assert (m >= ci - 1e-7).all() and (m <= 1 + 1e-7).all()
    assert torch.allclose(m[..., 2], torch.ones_like(m[..., 2]))  # g = 1: never ablated
    means = m.mean(dim=(0, 1))
    assert torch.allclose(means, torch.tensor([0.5, 0.75, 1.0]), atol=0.01)  # E[m] = (1 + g) / 2
    m2 = stochastic_masks(ci, g)
    assert not torch.equal(m, m2)  # fresh r each call


def test_importance_minimality_closed_form():
    ci = torch.tensor([[[0.0, 0.5], [1.0, 0.25]], [[0.5, 0.5], [0.0, 0.0]]])  # (N=2, L=2, C=2)
    assert importance_minimality_loss(ci, 1.0).item() == pytest.approx((1.75 + 1.0) / 2, abs=1e-6)
    assert importance_minimality_loss(ci, 2.0).item() == pytest.approx((1.3125 + 0.5) / 2, abs=1e-6)
    w = torch.tensor([0.25, 0.75])
    assert importance_minimality_loss(ci, 1.0, w).item() == pytest.approx(0.25 * 1.75 + 0.75, abs=1e-6)


def test_faithfulness_zero_at_exact_decomposition_and_closed_form():
    W = torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 0.0]])  # (2, 3)
    comps = SPDComponents({"a": (2, 3)}, C=3, ci_hidden=2)
    with torch.no_grad():
        comps.U("a").copy_(torch.eye(2, 3))
        comps.V("a").copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [2.0, 0.0, 0.0]]))
    assert faithfulness_loss(comps, {"a": W}).item() == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        comps.V("a").zero_()
    assert faithfulness_loss(comps, {"a": W}).item() == pytest.approx(6.0 / 6, abs=1e-6)


def test_tied_components_share_parameters_transposed():
    comps = SPDComponents({"l1": (2, 5), "l2": (5, 2)}, C=4, ci_hidden=3, tied={"l2": "l1"})
    assert comps.U("l2") is comps.V("l1") and comps.V("l2") is comps.U("l1")
    assert torch.allclose(comps.weight("l2"), comps.weight("l1").T)
    assert len(list(comps.U_params.parameters())) == 1
    with pytest.raises(ValueError, match="tied"):
        SPDComponents({"l1": (2, 5), "l2": (5, 3)}, C=4, ci_hidden=3, tied={"l2": "l1"})


def test_compress_zero_rows_weights_and_exactness():
    x = torch.zeros(10, 3)
    x[2, 1] = 0.5
    x[7, 0] = 0.9
    kept, w = compress_zero_rows(x, multiple=1)
    assert kept.shape == (3, 3) and torch.equal(kept[:2], x[[2, 7]]) and torch.equal(kept[2], torch.zeros(3))
    assert torch.allclose(w, torch.tensor([0.1, 0.1, 0.8]))
    kept, w = compress_zero_rows(x, multiple=4)  # padded with weight-0 zero rows to a multiple of 4
    assert kept.shape == (4, 3) and torch.equal(kept[3], torch.zeros(3))
    assert torch.allclose(w, torch.tensor([0.1, 0.1, 0.8, 0.0]))
    assert compress_zero_rows(x, multiple=64)[0].shape[0] == 10  # never more rows than the batch
    dense = torch.rand(4, 3) + 0.1
    kept, w = compress_zero_rows(dense)
    assert torch.equal(kept, dense) and torch.allclose(w, torch.full((4,), 0.25))


def test_zero_row_compression_gives_the_full_batch_losses_and_gradients():
    """Importance minimality is identical and the zero rows' reconstruction error is exactly
    zero for bias-free layers (TMS), so the compressed loss equals the full-batch loss."""
    from mechnb.spd.hooks import HookedTarget, causal_importances
    from mechnb.spd.losses import weighted_mse

    model = pentagon_tms()
    comps = SPDComponents({"linear1": (2, 5), "linear2": (5, 2)}, C=6, ci_hidden=4, tied={"linear2": "linear1"},
                          generator=torch.Generator().manual_seed(0))
    x = sparse_features(512, 5, 0.05, torch.Generator().manual_seed(1))
    target = HookedTarget(model, {"linear1": model.linear1, "linear2": model.linear2}, comps)

    def loss(xb, w):
        with target.hooks():
            with torch.no_grad():
                tgt, acts = target.capture(xb)
            lo, up = causal_importances(comps, acts, 0.01)
            m = stochastic_masks(lo, torch.Generator().manual_seed(3))
            # deterministic per-row masks for the nonzero rows so both batches see the same masks
            rec = weighted_mse(target.masked(xb, {"linear1": lo[:, 0], "linear2": m[:, 1] * 0 + lo[:, 1]}), tgt, w)
        return rec + 0.1 * importance_minimality_loss(up, 1.0, w)

    full = loss(x, torch.full((512,), 1 / 512))
    g_full = torch.autograd.grad(full, list(comps.parameters()))
    xc, wc = compress_zero_rows(x)
    assert xc.shape[0] < 200  # ~77% of TMS 5-2 rows are all zero
    comp = loss(xc, wc)
    g_comp = torch.autograd.grad(comp, list(comps.parameters()))
    assert comp.item() == pytest.approx(full.item(), rel=1e-5)
    for a, b in zip(g_full, g_comp):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_ci_input_is_not_detached():
    """The CI MLPs read V^T a, so the importance loss sends gradient into V (paper, method section)."""
    from mechnb.spd.hooks import causal_importances

    comps = SPDComponents({"l": (2, 5)}, C=4, ci_hidden=3, generator=torch.Generator().manual_seed(0))
    a = torch.rand(16, 5)
    _, up = causal_importances(comps, {"l": a}, 0.01)
    up.sum().backward()
    assert comps.V("l").grad is not None and comps.V("l").grad.abs().sum() > 0


def test_reconstruction_losses_and_weighted_total_closed_form():
    """Full and layerwise stochastic reconstruction on a known masked forward; the total is
    sum_k coefficient_k * L_k with the SPDConfig field of each loss's name."""
    from mechnb.spd.losses import SPDLosses, stochastic_recon_layerwise_loss, stochastic_recon_loss, total_loss

    masks = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]])  # (N=2, L=2, C=1): row 0 a=1 b=2, row 1 a=3 b=4
    w = torch.tensor([0.25, 0.75])
    out0 = torch.zeros(2, 1)

    def masked_forward(replace):  # output = sum of the replaced layers' masks
        return sum(m[:, :1] for m in replace.values())

    rec = stochastic_recon_loss(masked_forward, ["a", "b"], out0, masks, w)
    lw = stochastic_recon_layerwise_loss(masked_forward, ["a", "b"], out0, masks, w)
    assert rec.item() == pytest.approx(0.25 * 3**2 + 0.75 * 7**2)  # 39
    assert lw.item() == pytest.approx(((0.25 * 1 + 0.75 * 9) + (0.25 * 4 + 0.75 * 16)) / 2)  # 10
    cfg = SPDConfig(faithfulness=2.0, stochastic_recon=0.5, stochastic_recon_layerwise=0.0, importance_minimality=0.1)
    terms = SPDLosses(*(torch.tensor(v) for v in (1.0, 2.0, 3.0, 4.0)))
    assert total_loss(terms, cfg).item() == pytest.approx(2.0 * 1 + 0.5 * 2 + 0.0 * 3 + 0.1 * 4)


def test_step_on_an_exact_decomposition_with_all_ones_masks():
    """U V^T = W and causal importances saturated at 1 (masks m = 1 whatever r): faithfulness and
    both reconstruction losses vanish, importance minimality is L * C * (1 + alpha (x - 1))^p."""
    from mechnb.spd.decompose import spd_step
    from mechnb.spd.hooks import HookedTarget

    model = pentagon_tms()
    W = model.linear1.weight.detach()  # (2, 5)
    comps = SPDComponents({"linear1": (2, 5), "linear2": (5, 2)}, C=5, ci_hidden=3, tied={"linear2": "linear1"},
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        comps.U("linear1").copy_(W)
        comps.V("linear1").copy_(torch.eye(5))
        comps.ci.W_out.zero_()
        comps.ci.b_out.fill_(10.0)  # pre-activation 10: lower-leaky CI 1, upper-leaky 1 + 0.01 * 9
    targets = {"linear1": W, "linear2": W.T}
    cfg = SPDConfig(C=5, ci_hidden=3, n_mask_samples=2, p=2.0)
    x = torch.rand(16, 5)
    target = HookedTarget(model, {"linear1": model.linear1, "linear2": model.linear2}, comps)
    with target.hooks():
        losses = spd_step(target, targets, x, torch.full((16,), 1 / 16), cfg, cfg.p, torch.Generator().manual_seed(0))
    assert losses.faithfulness.item() == pytest.approx(0.0, abs=1e-12)
    assert losses.stochastic_recon.item() == pytest.approx(0.0, abs=1e-10)
    assert losses.stochastic_recon_layerwise.item() == pytest.approx(0.0, abs=1e-10)
    assert losses.importance_minimality.item() == pytest.approx(2 * 5 * 1.09**2, rel=1e-5)


# --------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------
def test_config_presets_and_schedules():
    cfg = SPDConfig.for_model("tms-5-2")
    assert (cfg.C, cfg.batch_size, cfg.lr, cfg.importance_minimality, cfg.p) == (20, 4096, 1e-3, 3e-3, 1.0)
    c40 = SPDConfig.for_model("tms-40-10")
    assert (c40.C, c40.importance_minimality, c40.p) == (200, 1e-4, 2.0)
    r = SPDConfig.for_model("resid-mlp-1")
    assert (r.C, r.batch_size, r.lr, r.lr_schedule, r.importance_minimality, r.p) == (100, 2048, 2e-3, "constant", 1e-5, 2.0)
    r2, r3 = SPDConfig.for_model("resid-mlp-2"), SPDConfig.for_model("resid-mlp-3")  # the paper's appendix
    assert (r2.C, r2.steps, r2.lr, r2.importance_minimality) == (400, 50_000, 1e-3, 1e-5)
    assert (r3.C, r3.steps, r3.lr, r3.importance_minimality, r3.ci_hidden) == (500, 200_000, 1e-3, 5e-6, 128)
    assert SPDConfig.for_model("resid-mlp-3", recipe="fast").C >= 102  # room for one subcomponent per feature
    assert SPDConfig.for_model("tms-5-2", recipe="fast", steps=7).steps == 7
    assert cfg.lr_at(0) == pytest.approx(1e-3)
    assert cfg.lr_at((cfg.steps - 1) // 2) == pytest.approx(1e-3 * math.cos(math.pi / 4), rel=1e-4)  # quarter cosine
    assert cfg.lr_at(cfg.steps - 1) == pytest.approx(0.0, abs=1e-12)
    ann = SPDConfig(steps=100, p=2.0, p_anneal_final=1.0, p_anneal_start_frac=0.5, p_anneal_end_frac=1.0)
    assert [ann.p_at(s) for s in (0, 50, 75, 100)] == pytest.approx([2.0, 2.0, 1.5, 1.0])


@pytest.mark.parametrize(
    "kw, exc, msg",
    [
        (dict(C=0), ValueError, "C"),
        (dict(lr=-1.0), ValueError, "lr"),
        (dict(lr=float("nan")), ValueError, "lr"),
        (dict(p=0), ValueError, "p"),
        (dict(lr_schedule="step"), ValueError, "lr_schedule"),
        (dict(importance_minimality=-1e-3), ValueError, "importance_minimality"),
        (dict(p_anneal_start_frac=0.8, p_anneal_end_frac=0.5), ValueError, "p_anneal_end_frac"),
        (dict(steps=1.5), TypeError, "steps"),
        (dict(seed="0"), TypeError, "seed"),
    ],
)
def test_config_rejects_bad_values(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        SPDConfig(**kw)


def test_for_model_rejects_unknown_name_and_recipe():
    with pytest.raises(ValueError, match="name"):
        SPDConfig.for_model("tms-3-1")
    with pytest.raises(ValueError, match="recipe"):
        SPDConfig.for_model("tms-5-2", recipe="slow")


# --------------------------------------------------------------------------------------
# decompose: API, ties, determinism, bad inputs
# --------------------------------------------------------------------------------------
def test_result_shapes_and_tied_layers(short_result):
    r = short_result
    assert r.modules == ["linear1", "linear2"] and r.tied == {"linear2": "linear1"}
    assert r.U["linear1"].shape == (2, 8) and r.V["linear1"].shape == (5, 8)
    assert r.U["linear2"].shape == (5, 8) and r.V["linear2"].shape == (2, 8)
    assert torch.equal(r.U["linear2"], r.V["linear1"]) and torch.equal(r.V["linear2"], r.U["linear1"])
    assert torch.allclose(r.weight("linear2"), r.weight("linear1").T)
    assert torch.allclose(r.target_weight("linear2"), r.model.linear1.weight.T)
    assert r.subcomponent_weights("linear1").shape == (8, 2, 5)
    assert torch.allclose(r.subcomponent_weights("linear1").sum(0), r.weight("linear1"), atol=1e-6)
    assert set(r.history) >= {"total", "faithfulness", "stochastic_recon", "stochastic_recon_layerwise",
                              "importance_minimality", "lr", "p"}
    assert all(len(v) == 40 for v in r.history.values()) and r.steps_run == 40
    ci = r.causal_importances(torch.rand(6, 5))
    assert set(ci) == {"linear1", "linear2"} and ci["linear1"].shape == (6, 8)
    assert set(r.alive()) == {"linear1", "linear2"} and r.alive()["linear1"].dtype == torch.bool


def test_faithfulness_warmup_makes_uv_equal_w_and_masked_forward_matches():
    cold = tiny_run(steps=1, lr=1e-9, faithfulness_warmup_steps=0)
    assert not torch.allclose(cold.weight("linear1"), cold.target_weight("linear1"), atol=0.1)  # random init
    r = tiny_run(steps=1, lr=1e-9, faithfulness_warmup_steps=200)
    assert torch.allclose(r.weight("linear1"), r.target_weight("linear1"), atol=1e-2)
    x = sparse_features(64, 5, 0.3, torch.Generator().manual_seed(0))
    target = r.model(x)
    ones = r.masked_forward(x)  # U V^T everywhere, all masks 1
    assert torch.allclose(ones, target, atol=2e-2)
    # a layer absent from masks keeps its target weight: zero mask on linear1 only
    zero = torch.zeros(r.C)
    out = r.masked_forward(x, {"linear1": zero})
    assert torch.allclose(out, torch.relu(r.model.linear2.bias).expand_as(out))


def test_target_model_is_left_untouched():
    model = pentagon_tms()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    tiny_run(model, steps=5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not model.linear1._forward_hooks and not model.linear2._forward_hooks


def test_same_seed_same_decomposition():
    a, b = tiny_run(steps=10), tiny_run(steps=10)
    assert torch.equal(a.U["linear1"], b.U["linear1"]) and a.history["total"] == b.history["total"]
    c = tiny_run(steps=10, seed=1)
    assert not torch.equal(a.U["linear1"], c.U["linear1"])


def test_callback_can_stop_early():
    seen = []

    def cb(step, res):
        seen.append(step)
        return step >= 20

    cfg = SPDConfig(C=4, steps=100, batch_size=64, log_every=10, n_eval_batches=1)
    r = decompose(pentagon_tms(), ["linear1", "linear2"], sampler(5), cfg, progress=False, callback=cb)
    assert seen == [10, 20] and r.steps_run == 20 and len(r.history["total"]) == 20


def test_untied_and_hidden_layers_and_residual_mlp_run():
    m = pentagon_tms(n_hidden_layers=1)
    cfg = SPDConfig(C=4, steps=3, batch_size=32, n_eval_batches=1)
    r = decompose(m, ["linear1", "hidden_layers.0", "linear2"], sampler(5), cfg, progress=False)
    assert r.tied == {"linear2": "linear1"} and r.U["hidden_layers.0"].shape == (2, 4)
    rm = ResidualMLP(6, 8, 3, 1)
    r2 = decompose(rm, ["layers.0.mlp_in", "layers.0.mlp_out"], sampler(6, 0.3, (-1.0, 1.0)), cfg, progress=False)
    assert r2.U["layers.0.mlp_in"].shape == (3, 4) and r2.V["layers.0.mlp_in"].shape == (8, 4) and r2.tied == {}


def test_decompose_rejects_bad_inputs():
    m, cfg = pentagon_tms(), SPDConfig(C=4, steps=2, batch_size=16, n_eval_batches=0)
    s = sampler(5)
    with pytest.raises(ValueError, match="linear3.*linear1"):
        decompose(m, ["linear3"], s, cfg, progress=False)
    with pytest.raises(ValueError, match="hidden_layers.*ModuleList"):
        decompose(pentagon_tms(1), ["hidden_layers"], s, cfg, progress=False)
    with pytest.raises(TypeError, match="target_modules"):
        decompose(m, "linear1", s, cfg, progress=False)
    with pytest.raises(ValueError, match="distinct"):
        decompose(m, ["linear1", "linear1"], s, cfg, progress=False)
    with pytest.raises(TypeError, match="config"):
        decompose(m, ["linear1"], s, {"C": 4}, progress=False)
    with pytest.raises(TypeError, match="sample_inputs"):
        decompose(m, ["linear1"], None, cfg, progress=False)
    with pytest.raises(ValueError, match="sample_inputs.*16"):
        decompose(m, ["linear1"], lambda b, g: torch.rand(3, 5), cfg, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        decompose(m, ["linear1"], lambda b, g: torch.full((b, 5), float("nan")), cfg, progress=False)
    with pytest.raises(ValueError, match="device"):
        decompose(m, ["linear1"], s, cfg, device="tpu", progress=False)


def test_result_methods_reject_bad_inputs(short_result):
    r = short_result
    with pytest.raises(ValueError, match="module"):
        r.weight("linear9")
    with pytest.raises(TypeError, match="x"):
        r.causal_importances([[0.0] * 5])
    with pytest.raises(ValueError, match="kind"):
        r.causal_importances(torch.rand(2, 5), kind="middle")
    with pytest.raises(ValueError, match=r"masks\['linear1'\]"):
        r.masked_forward(torch.rand(2, 5), {"linear1": torch.ones(3)})
    with pytest.raises(ValueError, match="threshold"):
        r.alive(threshold=-1.0)


# --------------------------------------------------------------------------------------
# analysis: metrics with known answers
# --------------------------------------------------------------------------------------
def _result_with(U: torch.Tensor, V: torch.Tensor) -> SPDResult:
    r = tiny_run(steps=1)
    with torch.no_grad():
        r.components.U("linear1").copy_(U)
        r.components.V("linear1").copy_(V)
    return r


@pytest.mark.numerics
def test_mmcs_ml2r_known_answers():
    W = pentagon_tms().linear1.weight.detach()  # (2, 5)
    C = 8
    U = torch.zeros(2, C)
    V = torch.zeros(5, C)
    perm = [3, 0, 6, 1, 5]  # feature j lives in subcomponent perm[j]
    for j, c in enumerate(perm):
        U[:, c] = W[:, j]
        V[j, c] = 1.0
    r = _result_with(U, V)
    assert mmcs_ml2r(r, "linear1") == pytest.approx((1.0, 1.0), abs=1e-6)
    best, cos, ratio = feature_matches(r, "linear1")
    assert best.tolist() == perm
    r2 = _result_with(U * 0.5, V)
    assert mmcs_ml2r(r2, "linear1") == pytest.approx((1.0, 0.5), abs=1e-6)
    # one subcomponent holding two features: cosine drops for both
    U3, V3 = U.clone(), V.clone()
    V3[1, perm[0]] = 1.0
    V3[1, perm[1]] = 0.0
    mm, _ = mmcs_ml2r(_result_with(U3, V3), "linear1")
    assert mm < 0.95
    with pytest.raises(ValueError, match="W"):
        mmcs_ml2r(r, "linear1", torch.zeros(3, 5))
    # a dead sliver exactly parallel to feature 0 wins the cosine argmax among "all" by a hair
    U4, V4 = U.clone(), V.clone()
    U4[:, 7] = W[:, 0] * 1e-3
    V4[0, 7] = 1.0
    r4 = _result_with(U4, V4)
    r4.ci_max = {"linear1": torch.tensor([1.0 if c in perm else 0.0 for c in range(C)]), "linear2": torch.zeros(C)}
    assert feature_matches(r4, "linear1")[0][0].item() in (perm[0], 7)
    assert mmcs_ml2r(r4, "linear1", subset="alive") == pytest.approx((1.0, 1.0), abs=1e-5)
    with pytest.raises(ValueError, match="subset"):
        mmcs_ml2r(r, "linear1", subset="some")


def test_alive_decisions_report_the_gap_and_flag_thin_counts():
    r = tiny_run(steps=1)
    r.ci_max = {"linear1": torch.tensor([1.0, 0.9, 0.3, 0.04, 0.0, -0.01, 0.0, 0.0]),
                "linear2": torch.tensor([1.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])}
    dec = alive_decisions(r)
    d1, d2 = dec["linear1"], dec["linear2"]
    assert isinstance(d1, AliveDecision) and d1.n_alive == 3 and d1.C == 8
    assert d1.smallest_alive == pytest.approx(0.3) and d1.largest_dead == pytest.approx(0.04)
    assert d1.gap == pytest.approx(0.26) and d1.clear  # nothing in (0.05, 0.2]
    assert d2.n_alive == 2 and not d2.clear  # 0.12 sits within a factor 2 of 0.1
    assert "THIN" in str(d2) and "clear" in str(d1)
    assert not alive_decisions(r, margin=8.0)["linear1"].clear  # 0.04 > 0.1 / 8
    assert alive_decisions(r, threshold=0.5)["linear1"].n_alive == 2
    assert {n: d.n_alive for n, d in dec.items()} == r.n_alive()
    r.ci_max = {"linear1": torch.ones(8), "linear2": torch.zeros(8)}
    every = alive_decisions(r)
    assert every["linear1"].gap == math.inf and every["linear1"].clear and every["linear2"].n_alive == 0
    with pytest.raises(ValueError, match="margin"):
        alive_decisions(r, margin=0.5)
    with pytest.raises(ValueError, match="threshold"):
        alive_decisions(r, threshold=0.0)


@pytest.mark.numerics
def test_match_columns_recovers_permutation_and_identity_error():
    perm = np.array([4, 0, 2])
    ci = np.zeros((3, 6))
    ci[np.arange(3), perm] = 1.0
    ci[0, 5] = 0.3
    order = match_columns(ci)
    assert order[:3].tolist() == perm.tolist() and sorted(order.tolist()) == list(range(6))
    assert order[3] == 5  # unmatched columns by total CI
    err = identity_ci_error(ci[:, order])
    assert err["n_offdiag_above"] == 1 and err["n_diag_below"] == 0
    assert identity_ci_error(np.eye(3, 6))["mean_abs_error"] == 0.0
    with pytest.raises(ValueError, match="ci"):
        match_columns(np.zeros((5, 3)))


@pytest.mark.numerics
def test_dense_ci_error_counts_entries_off_the_k_dense_columns():
    ci = np.zeros((4, 6))
    ci[:, [1, 4]] = 1.0            # two dense columns, on for every input
    ci[2, 4] = 0.05                # one dense entry off
    ci[0, 0] = 0.5                 # one stray entry outside them
    e = dense_ci_error(ci, k=2)
    assert (e["n_outside_above"], e["n_dense_below"], e["n_outside_columns_on"]) == (1, 1, 1)
    assert e["dense_fraction"] == pytest.approx(7 / 8)
    perfect = dense_ci_error(np.repeat([[0, 1, 1, 0]], 3, axis=0), k=2)
    assert (perfect["n_outside_above"], perfect["n_dense_below"], perfect["dense_fraction"]) == (0, 0, 1.0)
    assert dense_ci_error(np.eye(4), k=2)["n_outside_above"] == 2  # a one-hot pattern is not dense
    assert match_columns(ci, pattern="dense")[:2].tolist() == [1, 4]
    with pytest.raises(ValueError, match="pattern"):
        match_columns(ci, pattern="diagonal")
    with pytest.raises(ValueError, match="k"):
        dense_ci_error(ci, k=7)


def test_one_hot_ci_keep_only_and_summary(short_result):
    r = short_result
    ci = one_hot_causal_importances(r)
    assert ci["linear1"].shape == (5, 8) and (ci["linear1"] >= 0).all() and (ci["linear1"] <= 1).all()
    x = torch.eye(5) * 0.75
    out = keep_only_output(r, x, "linear1", 0)
    U, V, b = r.U["linear1"][:, 0], r.V["linear1"][:, 0], r.model.linear2.bias
    expected = torch.relu((x @ V)[:, None] * (U @ U) * V[None, :] + b)  # tied: V U^T U V^T x
    assert torch.allclose(out, expected, atol=1e-5)
    s = summarize(r, "linear1")
    assert {"n_alive", "mmcs", "ml2r", "stochastic_recon", "onehot_n_offdiag_above"} <= set(s)
    with pytest.raises(ValueError, match="c"):
        keep_only_output(r, x, "linear1", 99)
    with pytest.raises(ValueError, match="magnitude"):
        one_hot_causal_importances(r, magnitude=0)


# --------------------------------------------------------------------------------------
# plots and widgets
# --------------------------------------------------------------------------------------
def _labelled(fig: Figure) -> bool:
    axes = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    titled = bool(fig._suptitle is not None and fig._suptitle.get_text()) or any(a.get_title() for a in axes)
    return titled and all(a.get_xlabel() or a.get_ylabel() for a in axes)


def test_plots_return_labelled_figures(short_result):
    from mechnb.plots import spd as sp

    r = short_result
    figs = [
        sp.loss_curves(r.history),
        sp.feature_arrows(r.target_weight("linear1"), r.subcomponent_weights("linear1"), [0, 1]),
        sp.subcomponent_matrices(r.target_weight("linear1"), r.subcomponent_weights("linear1"), [0, 2]),
        sp.ci_heatmaps({"linear1": np.eye(5, 8)}, {"linear1": match_columns(np.eye(5, 8))}),
        sp.sweep_summary([1e-3, 1e-2, 1e-1], [8, 5, 2], [1e-4, 2e-4, 1e-2]),
        sp.subcomponent_card(np.ones((2, 5)), np.zeros(5), np.zeros(5), np.ones(5), 0, output_all=np.ones(5)),
        sp.hard_sigmoids(np.linspace(-1, 2, 7), np.zeros(7), np.ones(7)),
    ]
    for f in figs:
        assert isinstance(f, Figure) and _labelled(f)
        plt.close(f)
    with pytest.raises(ValueError, match="W"):
        sp.feature_arrows(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="history"):
        sp.loss_curves({"lr": [1.0]})
    with pytest.raises(ValueError, match="orders"):
        sp.ci_heatmaps({"a": np.eye(2, 3)}, {"a": [0, 0, 1]})
    with pytest.raises(ValueError, match="coefficients"):
        sp.sweep_summary([1e-3], [1, 2], [1.0])


def test_subcomponent_browser_updates(short_result):
    from mechnb.widgets.spd import SubcomponentBrowser

    b = SubcomponentBrowser(short_result, "linear1")
    first_fig, first_text = b.figure, b.text.value
    assert isinstance(first_fig, Figure) and "subcomponent" in first_text
    other = [v for _, v in b.subcomponent.options if v != b.subcomponent.value][0]
    b.subcomponent.value = other
    assert b.figure is not first_fig and f"subcomponent {other}" in b.text.value
    assert len(b.output.outputs) == 1 and "Figure" in b.output.outputs[0]["data"]["text/plain"]  # the new figure, once
    b.input_feature.value = 3
    assert "input x3" in b.text.value
    plt.close("all")
    with pytest.raises(TypeError, match="result"):
        SubcomponentBrowser("not a result")


def test_sweep_explorer_updates():
    from mechnb.widgets.spd import SweepExplorer

    cfg = SPDConfig(C=6, steps=3, batch_size=32, n_eval_batches=1)
    pts = importance_minimality_sweep(pentagon_tms(), ["linear1", "linear2"], sampler(5), cfg, [1e-3, 1e-2, 1e-1],
                                      ps=[1.0, 2.0], progress=False)
    w = SweepExplorer(pts)
    assert "1.0e-02" in w.text.value and isinstance(w.figure, Figure)
    fig = w.figure
    w.coefficient.value = 1e-1
    assert "1.0e-01" in w.text.value and w.figure is not fig
    assert len(w.output.outputs) == 1 and "Figure" in w.output.outputs[0]["data"]["text/plain"]
    w.p.value = "2"
    assert "p=2" in w.text.value
    plt.close("all")
    with pytest.raises(TypeError, match="points"):
        SweepExplorer([])


def test_ci_heatmaps_wrap_many_layers_onto_rows():
    cis = {f"layers.{i}.mlp_in": np.eye(3, 4) for i in range(5)}
    from mechnb.plots import spd as sp

    fig = sp.ci_heatmaps(cis, ncols=2)
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in shown] == list(cis)
    assert len({round(ax.get_position().y0, 3) for ax in shown}) == 3  # 5 panels, 2 per row
    plt.close(fig)
