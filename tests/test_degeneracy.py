"""Ground-truth tests for mechnb.degeneracy (2405.10927, 2405.10928, Lau et al. 2023, Aoyagi 2024)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mechnb.degeneracy import (
    InteractionEdges,
    degeneracy_report,
    dln_learning_coefficient,
    effective_parameter_count,
    estimate_llc,
    find_modules,
    gram_spectrum,
    hessian_spectrum,
    interaction_basis,
    interaction_edges,
    jacobian_gram,
    relu_synchrony,
    sse_loss,
    spectrum_nullity,
)
from mechnb.degeneracy.hessian import hessian_nullity
from mechnb.degeneracy._mlp import block_weight, ext_block_jacobian, mlp_forward, output_jacobian
from mechnb.degeneracy.samplers import FlatParams, NoiseStreams, SGLDSampler, batched_grad_fns
from mechnb.experiments.degeneracy import planted_dln, planted_mlp
from mechnb.models import MLP
from mechnb.tasks import ModularArithmetic
from mechnb.train import TrainConfig, train

torch.set_num_threads(1)


sum_mse = sse_loss


def hidden_acts(model: MLP, x: torch.Tensor) -> torch.Tensor:
    return model(x, return_activations=True)[1][0]


# --------------------------------------------------------------------------------------
# Layer convention
# --------------------------------------------------------------------------------------
def test_layer_convention_matches_mlp_forward():
    torch.manual_seed(0)
    m = MLP([3, 5, 4, 2])
    x = torch.randn(7, 3)
    acts, pre = mlp_forward(m, x)
    out, mlp_acts = m(x, return_activations=True)
    assert len(acts) == len(m.layers) + 1 and pre[0] is None
    torch.testing.assert_close(acts[0], x.double())
    for l in range(1, len(m.layers) + 1):
        torch.testing.assert_close(acts[l].float(), mlp_acts[l - 1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(acts[-1].float(), out, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------
# Activation Gram, Jacobian Gram, synchrony
# --------------------------------------------------------------------------------------
@pytest.mark.numerics
def test_gram_spectrum_is_descending_float64_and_matches_numpy():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(50, 4, generator=g)
    ev = gram_spectrum(a, with_bias=True)
    assert ev.dtype == np.float64 and ev.shape == (5,)
    assert np.all(np.diff(ev) <= 0)
    ext = np.c_[a.double().numpy(), np.ones(50)]
    np.testing.assert_allclose(ev, np.sort(np.linalg.eigvalsh(ext.T @ ext / 50))[::-1], rtol=1e-10, atol=1e-12)
    assert gram_spectrum(a, with_bias=False).shape == (4,)


@pytest.mark.numerics
@pytest.mark.parametrize("k", [0, 1, 2, 4])
def test_duplicated_and_dead_neurons_raise_gram_nullity_by_exactly_k(k):
    base, x = planted_mlp(seed=3)
    base_null = spectrum_nullity(gram_spectrum(hidden_acts(base, x)))
    dup, xd = planted_mlp(seed=3, duplicated=k)
    dead, xz = planted_mlp(seed=3, dead=k)
    assert torch.equal(x, xd) and torch.equal(x, xz)
    assert spectrum_nullity(gram_spectrum(hidden_acts(dup, x))) == base_null + k
    assert spectrum_nullity(gram_spectrum(hidden_acts(dead, x))) == base_null + k
    # appending copies / zero columns to arbitrary activations does the same
    a = torch.randn(64, 5, generator=torch.Generator().manual_seed(k))
    a2 = torch.cat([a, a[:, :1].repeat(1, k), torch.zeros(64, k)], dim=1)
    assert spectrum_nullity(gram_spectrum(a2, with_bias=False)) == 2 * k


@pytest.mark.numerics
@pytest.mark.parametrize("k", [0, 1, 3])
def test_output_block_gauss_newton_nullity_is_gram_nullity_times_d_out(k):
    model, x = planted_mlp(d_out=3, duplicated=k, dead=1, seed=5)
    ev = gram_spectrum(hidden_acts(model, x), with_bias=True)
    rank_G = ev.size - spectrum_nullity(ev)
    d_l = model.sizes[1] + 1  # bias folded in
    last = effective_parameter_count(model, x, params=["layers.1.weight", "layers.1.bias"])
    assert last.n_params == d_l * 3
    assert last.nullity == (d_l - rank_G) * 3


@pytest.mark.numerics
def test_generic_relu_mlp_nullity_equals_number_of_hidden_neurons():
    for seed in range(3):
        model, x = planted_mlp(d_in=4, d_hidden=6, d_out=3, seed=seed)
        gn = effective_parameter_count(model, x)
        assert gn.n_params == sum(p.numel() for p in model.parameters())
        assert gn.nullity == 6, seed


@pytest.mark.numerics
@pytest.mark.parametrize("m", [2, 3])
def test_synchronised_relus_add_m_times_m_minus_1(m):
    model, x = planted_mlp(d_in=4, d_hidden=6, d_out=3, synchronised=m, seed=1)
    assert effective_parameter_count(model, x).nullity == 6 + m + m * (m - 1)  # rescalings of all + m(m-1)
    pre = x.double() @ model.layers[0].weight.double().T + model.layers[0].bias.double()
    assert relu_synchrony(pre) == [list(range(6, 6 + m))]


@pytest.mark.numerics
@pytest.mark.parametrize("kw", [dict(), dict(duplicated=2), dict(dead=2), dict(unread=2), dict(synchronised=3),
                                dict(duplicated=1, dead=1, unread=1, synchronised=2)])
def test_degeneracy_report_predicts_the_measured_nullity(kw):
    model, x = planted_mlp(seed=2, **kw)
    rep = degeneracy_report(model, x)
    assert rep.predicted_nullity == rep.measured_nullity
    h = rep.layers[1]
    assert h.activation_nullity == kw.get("duplicated", 0) + kw.get("dead", 0)
    assert h.jacobian_nullity == kw.get("dead", 0) + kw.get("unread", 0)
    assert h.free_sync == kw.get("synchronised", 0) * (kw.get("synchronised", 0) - 1)
    assert rep.layers[0].measured_block_nullity is not None and rep.layers[-1].measured_block_nullity is None
    assert "measured Gauss-Newton nullity" in rep.table()
    # every count rests on a wide gap (exact zeros at round-off, the rest O(1e-3) or more)
    assert rep.decisions() and not rep.thin_decisions()
    assert min(d.gap for _, d in rep.decisions()) > 1e8, rep.decisions()
    assert h.decisions["activation"].nullity == h.activation_nullity
    assert h.decisions["jacobian"].nullity == h.jacobian_nullity
    assert rep.gauss_newton.decision.nullity == rep.measured_nullity and not rep.gauss_newton.thin
    assert "~" not in rep.table() and "rank decisions: all clear" in rep.table()


@pytest.mark.numerics
def test_a_nearly_duplicated_neuron_is_reported_as_a_thin_decision():
    # a copy of neuron 0 whose bias differs by 1e-12: its activations are independent, but only
    # just (σ_min / σ_max ~ 1e-12, a few dozen times the round-off threshold max(n, d) · eps)
    model, x = planted_mlp(seed=2, duplicated=1)
    model = model.double()
    with torch.no_grad():
        model.layers[0].bias[6] += 1e-12
    rep = degeneracy_report(model, x.double())
    act = rep.layers[1].decisions["activation"]
    assert act.nullity == 0 and act.thin and act.gap < 1e3, act
    assert ("layer 1 activation", act) in rep.thin_decisions()
    table = rep.table()
    row = table.splitlines()[2].split()
    assert row[0] == "1" and row[2] == "~0" and row[3] == "~0", table  # act_nullity, free_act of layer 1
    assert "thin rank decisions" in table and "layer 1 activation (gap" in table
    # a wider bias difference is a clear decision again
    with torch.no_grad():
        model.layers[0].bias[6] += 1e-3
    rep = degeneracy_report(model, x.double())
    assert not rep.layers[1].decisions["activation"].thin and rep.layers[1].activation_nullity == 0


@pytest.mark.numerics
def test_effective_parameter_count_uses_numpys_rank_rule_and_reports_the_gap():
    model, x = planted_mlp(seed=0, duplicated=2)
    e = effective_parameter_count(model, x)
    N, P = x.shape[0] * model.sizes[-1], e.n_params
    assert e.decision.threshold == pytest.approx(max(N, P) * np.finfo(np.float64).eps * e.singular_values.max())
    assert e.decision.rank == e.rank == int((e.singular_values > e.decision.threshold).sum())
    assert e.nullity == P - e.rank == 14
    assert e.gap > 1e10 and not e.thin
    # an explicit rtol still applies (singular values <= rtol · max are zero)
    big = effective_parameter_count(model, x, rtol=0.5)
    assert big.rank == int((e.singular_values > 0.5 * e.singular_values.max()).sum())
    # spectrum_decision: the same rule on eigenvalues, in singular-value scale
    from mechnb.degeneracy.measures import spectrum_decision
    d = spectrum_decision(np.array([4.0, 1.0, 1e-20, 0.0]))
    assert (d.nullity, d.kept_min, d.dropped_max) == (2, 1.0, 1e-10) and d.gap == pytest.approx(1e10)
    assert spectrum_nullity(np.array([4.0, 1.0, 1e-20, 0.0])) == 2


@pytest.mark.numerics
def test_degeneracy_report_predicts_a_trained_one_hot_classifier():
    # one-hot inputs: the input Gram has nullity 2 (each half sums to 1, like the bias), and a
    # neuron that matters on few inputs sees an even smaller span (free_restricted)
    pairs = ModularArithmetic(P=7, train_frac=1.0).all_pairs()
    for seed in range(2):
        torch.manual_seed(seed)
        clf = MLP([14, 16, 7])
        train(clf, lambda s, g: (pairs.x, pairs.y), lambda m, b: F.cross_entropy(m(b[0]), b[1]),
              TrainConfig(steps=300, lr=1e-2, seed=seed), progress=False)
        rep = degeneracy_report(clf, pairs.x)
        assert rep.layers[0].activation_nullity == 2
        assert rep.layers[1].free_restricted > 0
        assert rep.predicted_nullity == rep.measured_nullity


def test_relu_synchrony_groups_and_dead_neurons():
    p = torch.tensor([[1.0, 2.0, -1.0, 0.5, -3.0], [-1.0, -2.0, 1.0, -0.5, -3.0], [2.0, 1.0, 1.0, 3.0, -1.0]])
    # neurons 0, 1, 3 fire on rows {0, 2}; neuron 2 on {1, 2}; neuron 4 never (excluded)
    assert relu_synchrony(p) == [[0, 1, 3]]
    assert relu_synchrony(np.array([[1.0, -1.0], [-1.0, 1.0]])) == []


def test_jacobian_gram_closed_form_linear_and_autograd_relu():
    torch.manual_seed(0)
    lin = MLP([3, 4, 2], activation="linear", bias=False)
    x = torch.randn(20, 3)
    W2 = lin.layers[1].weight.detach().double()
    np.testing.assert_allclose(jacobian_gram(lin, x, 1), (W2.T @ W2).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jacobian_gram(lin, x, 2), np.eye(2), atol=0)
    relu = MLP([3, 6, 5, 2])
    x = torch.randn(15, 3)
    m64 = MLP([3, 6, 5, 2]).double()
    m64.load_state_dict({k: v.double() for k, v in relu.state_dict().items()})
    for layer in (0, 1, 2):
        acts, _ = mlp_forward(relu, x)
        Ms = []
        for i in range(x.shape[0]):
            def tail(f, i=i):
                h = f
                for j in range(layer, 3):
                    h = m64.layers[j](h)
                    if j < 2:
                        h = torch.relu(h)
                return h
            with torch.no_grad():
                pass
            J = torch.autograd.functional.jacobian(tail, acts[layer][i]).detach()
            Ms.append(J.T @ J)
        np.testing.assert_allclose(jacobian_gram(relu, x, layer), torch.stack(Ms).mean(0).numpy(), rtol=1e-9, atol=1e-12)
    # pre-activation Jacobian of a dead neuron is a zero column
    model, xd = planted_mlp(dead=1, seed=0)
    Mpre = jacobian_gram(model, xd, 1, wrt="pre")
    assert np.all(Mpre[-1] == 0) and np.all(Mpre[:, -1] == 0)


@pytest.mark.numerics
def test_effective_parameter_count_of_linear_regression_is_full():
    torch.manual_seed(0)
    m = MLP([4, 3])
    x = torch.randn(30, 4)
    e = effective_parameter_count(m, x)
    assert (e.rank, e.n_params, e.nullity) == (15, 15, 0)


# --------------------------------------------------------------------------------------
# Hessian
# --------------------------------------------------------------------------------------
@pytest.mark.numerics
def test_hessian_of_linear_regression_matches_closed_form_and_lanczos():
    torch.manual_seed(0)
    m = MLP([4, 3])
    x, y = torch.randn(40, 4), torch.randn(40, 3)
    mse = lambda o, t: ((o - t) ** 2).mean()  # noqa: E731
    xt = np.c_[x.double().numpy(), np.ones(40)]
    base = np.linalg.eigvalsh(2 * xt.T @ xt / 40 / 3)
    expected = np.sort(np.repeat(base, 3))[::-1]  # H = (2/(n d_out)) X̃ᵀX̃ ⊗ I_3
    full = hessian_spectrum(m, mse, x, y)
    np.testing.assert_allclose(full, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hessian_spectrum(m, mse, x, y, gauss_newton=True), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hessian_spectrum(m, mse, x, y, k=4), expected[:4], rtol=1e-8)


@pytest.mark.numerics
def test_hessian_lanczos_matches_full_and_gauss_newton_is_psd():
    torch.manual_seed(1)
    m = MLP([2, 12, 3])
    x, y = torch.randn(80, 2), torch.randint(0, 3, (80,))
    full = hessian_spectrum(m, F.cross_entropy, x, y)
    top = hessian_spectrum(m, F.cross_entropy, x, y, k=5)
    np.testing.assert_allclose(top, full[:5], rtol=1e-7, atol=1e-10)
    gn = hessian_spectrum(m, F.cross_entropy, x, y, gauss_newton=True)
    assert gn.min() > -1e-10 * gn.max()
    assert full.size == gn.size == sum(p.numel() for p in m.parameters())


@pytest.mark.numerics
def test_hessian_eigenvectors_follow_the_sign_convention_and_lanczos_agrees():
    torch.manual_seed(1)
    m = MLP([2, 12, 3])
    x, y = torch.randn(80, 2), torch.randint(0, 3, (80,))
    ev, V = hessian_spectrum(m, F.cross_entropy, x, y, return_eigenvectors=True)
    np.testing.assert_allclose(ev, hessian_spectrum(m, F.cross_entropy, x, y), rtol=1e-10, atol=1e-14)
    P = ev.size
    assert V.shape == (P, P)
    np.testing.assert_allclose(V.T @ V, np.eye(P), atol=1e-10)
    Vt = torch.from_numpy(V)
    assert_sign_convention(Vt)
    # H v = λ v through Hessian-vector products
    from mechnb.degeneracy.hessian import hessian_matvec
    mv = hessian_matvec(m, F.cross_entropy, x, y)
    for j in (0, 1, P // 2):
        np.testing.assert_allclose(mv(V[:, j]), ev[j] * V[:, j], atol=1e-10 * abs(ev[0]))
    # Lanczos gives the same vectors (top eigenvalues are simple here), signs included
    assert np.all(ev[:4] / ev[1:5] > 1.01)
    top, Vk = hessian_spectrum(m, F.cross_entropy, x, y, k=4, return_eigenvectors=True)
    np.testing.assert_allclose(top, ev[:4], rtol=1e-8)
    np.testing.assert_allclose(Vk, V[:, :4], atol=1e-6)


@pytest.mark.numerics
def test_hessian_nullity_counts_planted_flat_directions_with_a_wide_gap():
    # linear regression with input 2 = input 0 + input 1: H = (2/(n d_out)) X̃ᵀX̃ ⊗ I_3 has
    # exactly one null direction of X̃ per output, so nullity 3; the rest is O(1)
    torch.manual_seed(0)
    m = MLP([4, 3])
    x = torch.randn(40, 4, dtype=torch.float64)
    x[:, 2] = x[:, 0] + x[:, 1]
    y = torch.randn(40, 3, dtype=torch.float64)
    mse = lambda o, t: ((o - t) ** 2).mean()  # noqa: E731
    H = hessian_spectrum(m, mse, x, y)
    zero = hessian_nullity(H)
    assert (zero.nullity, zero.rank) == (3, 12)
    assert zero.gap > 1e10 and not zero.thin, zero
    assert zero.label() == f"3 (gap {zero.gap:.0e})"
    # softmax regression: the logit shift (b += c 1, W += 1 uᵀ) is exactly flat, 3 + 1 directions
    torch.manual_seed(2)
    clf = MLP([3, 4])
    xc, yc = torch.randn(60, 3), torch.randint(0, 4, (60,))
    zc = hessian_nullity(hessian_spectrum(clf, F.cross_entropy, xc, yc))
    assert zc.nullity == 3 + 1 and zc.gap > 1e8, zc
    # an eigenvalue planted just above the cut is flagged as thin
    thin = hessian_nullity(np.r_[1.0, 0.5, 1e-14, -1e-16, 1e-16])  # cut at 5 eps = 1.1e-15
    assert thin.thin and thin.nullity == 2 and thin.label().startswith("~2 (thin gap")
    with pytest.raises(ValueError, match="eigenvalues"):
        hessian_nullity(np.zeros(0))


# --------------------------------------------------------------------------------------
# Learning coefficient: theory
# --------------------------------------------------------------------------------------
def rrr_lambda(M: int, H: int, N: int, r: int) -> float:
    """Reduced-rank regression, Aoyagi & Watanabe (2005), Main Theorem."""
    if N + r <= M + H and M + r <= N + H and H + r <= M + N:
        base = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
        return (base + (1 if (M + H + N + r) % 2 else 0)) / 8
    if M + H < N + r:
        return (H * M - H * r + N * r) / 2
    if N + H < M + r:
        return (H * N - H * r + M * r) / 2
    return M * N / 2


def test_dln_learning_coefficient_closed_forms():
    for M in range(1, 7):
        for H in range(1, 7):
            for N in range(1, 7):
                for r in range(0, min(M, H, N) + 1):
                    assert dln_learning_coefficient([M, H, N], rank=r) == pytest.approx(rrr_lambda(M, H, N, r)), (M, H, N, r)
    assert dln_learning_coefficient([5, 3]) == 7.5  # one layer: regular, MN/2
    assert dln_learning_coefficient([5, 3], rank=1) == 7.5
    assert dln_learning_coefficient([1, 1, 1, 1]) == 0.5  # w1 w2 w3 = c != 0: codimension 1
    assert dln_learning_coefficient([1, 1, 1, 1], rank=0) == 0.5  # (w1 w2 w3)^2: RLCT 1/2
    assert dln_learning_coefficient([5, 4, 3, 6]) == 12.0
    lam = dln_learning_coefficient([6, 4, 4, 5], rank=2)
    assert 0 < lam < (6 * 4 + 4 * 4 + 4 * 5) / 2


def test_dln_learning_coefficient_bad_inputs():
    with pytest.raises(ValueError, match="widths"):
        dln_learning_coefficient([3])
    with pytest.raises(ValueError, match="rank"):
        dln_learning_coefficient([3, 4, 2], rank=3)
    with pytest.raises(TypeError, match=r"widths\[1\]"):
        dln_learning_coefficient([3, 2.5])


# --------------------------------------------------------------------------------------
# Learning coefficient: SGLD estimates
# --------------------------------------------------------------------------------------
def make_dln(widths, rank=None, n=100, seed=0):
    return planted_dln(widths, rank=rank, n_samples=n, seed=seed)


DLN_SETTINGS = dict(num_chains=8, nbeta=500.0, lr=3e-5, localization=1.0)


@pytest.mark.numerics
def test_llc_of_full_rank_linear_regression_is_half_the_parameter_count():
    g = torch.Generator().manual_seed(0)
    m = MLP([5, 3])  # d = 18 parameters
    x = torch.randn(400, 5, generator=g)
    y = x @ torch.randn(5, 3, generator=g) + 0.3 * torch.randn(400, 3, generator=g)
    xt = torch.cat([x, torch.ones(400, 1)], 1)
    sol = torch.linalg.lstsq(xt, y).solution  # w* = the empirical minimiser
    with torch.no_grad():
        m.layers[0].weight.copy_(sol[:5].T)
        m.layers[0].bias.copy_(sol[5])
    res = estimate_llc(m, sum_mse, (x, y), num_draws=600, num_burnin_steps=200, batch_size=100, progress=False,
                       **DLN_SETTINGS)
    assert res.mean == pytest.approx(18 / 2, rel=0.1)
    assert res.loss_trace.shape == (8, 600) and res.llc_per_chain.shape == (8,)
    assert res.config["mode"] == "mlp"


@pytest.mark.numerics
@pytest.mark.parametrize("widths", [(5, 4, 3, 6), (3, 6, 2, 4), (4, 3, 3, 4)])
def test_llc_of_deep_linear_networks_matches_aoyagi(widths):
    m, x, y = make_dln(widths)
    res = estimate_llc(m, sum_mse, (x, y), num_draws=1500, num_burnin_steps=1500, seed=1, progress=False,
                       **DLN_SETTINGS)
    theory = dln_learning_coefficient(widths)
    assert res.mean == pytest.approx(theory, rel=0.15), (res.mean, theory)


@pytest.mark.numerics
@pytest.mark.slow
def test_llc_of_rank_deficient_deep_linear_network_matches_aoyagi():
    widths, rank = (6, 4, 4, 5), 2  # every factor of rank 2: the most singular true parameters
    m, x, y = make_dln(widths, rank=rank)
    res = estimate_llc(m, sum_mse, (x, y), num_draws=3000, num_burnin_steps=3000, seed=1, progress=False,
                       **DLN_SETTINGS)
    theory = dln_learning_coefficient(widths, rank=rank)
    assert res.mean == pytest.approx(theory, rel=0.15), (res.mean, theory)


class Wrapped(nn.Module):
    """A DLN behind a generic module (takes the vmap path), optionally with a parameter it never uses."""

    def __init__(self, inner: MLP, unused: bool) -> None:
        super().__init__()
        self.inner = inner
        if unused:
            self.unused = nn.Parameter(torch.randn(7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


@pytest.mark.numerics
def test_llc_unused_parameter_leaves_the_estimate_unchanged():
    m, x, y = make_dln((4, 3, 5), n=64)
    kw = dict(num_draws=150, num_burnin_steps=50, batch_size=32, seed=3, progress=False, **DLN_SETTINGS)
    plain = estimate_llc(Wrapped(m, unused=False), sum_mse, (x, y), **kw)
    extra = estimate_llc(Wrapped(m, unused=True), sum_mse, (x, y), **kw)
    assert plain.config["mode"] == "vmap" and extra.config["mode"] == "vmap"
    # each parameter has its own noise stream, so the chains of the used parameters are identical
    assert extra.mean == pytest.approx(plain.mean, rel=1e-5)
    np.testing.assert_allclose(extra.loss_trace, plain.loss_trace, rtol=1e-5)
    fast = estimate_llc(m, sum_mse, (x, y), **kw)
    again = estimate_llc(m, sum_mse, (x, y), **kw)
    assert fast.config["mode"] == "mlp"
    np.testing.assert_array_equal(again.loss_trace, fast.loss_trace)  # seeded


@pytest.mark.parametrize("full_batch", [True, False])
def test_batched_chain_steps_agree_with_one_chain_at_a_time(full_batch):
    torch.manual_seed(0)
    m = MLP([4, 6, 3])  # ReLU, biases: the hand-batched fast path
    cands = dict(batched_grad_fns(m, F.cross_entropy, FlatParams.of(m), full_batch))
    assert list(cands) == ["mlp", "vmap", "loop"]
    theta = torch.cat([p.detach().reshape(-1) for p in m.parameters()]).repeat(5, 1) + 0.1 * torch.randn(5, 51)
    x, y = (torch.randn(20, 4), torch.randint(0, 3, (20,))) if full_batch else (torch.randn(5, 20, 4),
                                                                               torch.randint(0, 3, (5, 20)))
    g_ref, l_ref = cands["loop"](theta, x, y)
    for name in ("mlp", "vmap"):
        g, l = cands[name](theta, x, y)
        torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(l, l_ref, atol=1e-6, rtol=1e-5)


def test_sgld_sampler_step_is_the_localised_langevin_update():
    """One step is Δw = -(ε/2)(nβ ∇L_m(w) + γ(w - w*)) + √ε ξ (Lau et al. 2023), ξ the chains' own noise."""
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(5, generator=g, dtype=torch.float64)
    noise = NoiseStreams(["a", "b"], [2, 3], seed=7, device=torch.device("cpu"), dtype=torch.float64)
    sgld = SGLDSampler(w0, 3, lr=0.01, localization=2.0, nbeta=50.0, noise=noise)
    sgld.theta += torch.randn(3, 5, generator=g, dtype=torch.float64)
    theta, grads = sgld.theta.clone(), torch.randn(3, 5, generator=g, dtype=torch.float64)
    xi = NoiseStreams(["a", "b"], [2, 3], seed=7, device=torch.device("cpu"), dtype=torch.float64).draw(3)
    sgld.step(grads.clone())
    expected = theta - 0.005 * (50.0 * grads + 2.0 * (theta - w0)) + 0.1 * xi
    torch.testing.assert_close(sgld.theta, expected, rtol=1e-12, atol=1e-12)
    # each parameter tensor has its own stream: dropping "a" leaves "b"'s noise unchanged
    only_b = NoiseStreams(["b"], [3], seed=7, device=torch.device("cpu"), dtype=torch.float64).draw(3)
    torch.testing.assert_close(only_b, xi[:, 2:], rtol=0, atol=0)


def test_llc_burn_in_and_thinning_pick_the_recorded_steps():
    from mechnb.degeneracy.llc import _check_settings

    s = _check_settings(100, 2, 4, 1e-4, 1.0, None, None, 3, 2, 0)
    assert s.total_steps == 11 and [t for t in range(s.total_steps) if s.is_draw(t)] == [4, 6, 8, 10]
    assert s.nbeta == pytest.approx(100 / math.log(100)) and s.batch_size == 100


def test_estimate_llc_bad_inputs():
    m, x, y = make_dln((3, 2, 2), n=10)
    with pytest.raises(TypeError, match="data"):
        estimate_llc(m, sum_mse, x, progress=False)
    with pytest.raises(ValueError, match="same number of samples"):
        estimate_llc(m, sum_mse, (x, y[:5]), progress=False)
    with pytest.raises(ValueError, match="lr"):
        estimate_llc(m, sum_mse, (x, y), lr=0.0, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        estimate_llc(m, sum_mse, (x, y), batch_size=11, progress=False)
    with pytest.raises(ValueError, match="finite"):
        estimate_llc(m, sum_mse, (x, y * float("nan")), progress=False)
    with pytest.raises(FloatingPointError, match="lower lr"):
        estimate_llc(m, sum_mse, (x, y), lr=10.0, nbeta=1e4, num_draws=50, progress=False)


# --------------------------------------------------------------------------------------
# Interaction basis
# --------------------------------------------------------------------------------------
def ib_model(activation="relu", seed=0):
    torch.manual_seed(seed)
    return MLP([5, 8, 7, 4], activation=activation), torch.randn(300, 5)


def assert_sign_convention(V: torch.Tensor) -> None:
    """Every column's first entry of largest magnitude (ties within sqrt(eps)) is positive."""
    for j in range(V.shape[1]):
        a = V[:, j].abs()
        first = int(torch.nonzero(a >= a.max() * (1 - 1.5e-8))[0])
        assert V[first, j] > 0, (j, V[:, j])


@pytest.mark.numerics
@pytest.mark.parametrize("jacobian", ["next", "output"])
def test_interaction_basis_identities(jacobian):
    # holds on every kernel family (ATEN_CPU_CAPABILITY=default/avx2/avx512): the bases are
    # compared after the sign convention, which interaction_basis applies to U and C
    model, x = ib_model()
    basis = interaction_basis(model, x, jacobian=jacobian)
    acts, pre = mlp_forward(model, x)
    L = len(model.layers)
    assert basis.layers == list(range(L + 1))
    for l in range(L + 1):
        f = basis.extend(l, acts[l])
        G = f.T @ f / f.shape[0]
        C, Lam = basis.C[l], basis.Lambda[l]
        torch.testing.assert_close(C.T @ G @ C, torch.diag(Lam), atol=1e-10 * float(Lam.max()), rtol=0)
        # Λ = the non-zero eigenvalues of G M'
        ev = np.sort(np.linalg.eigvals((G @ basis.M[l]).numpy()).real)[::-1][: Lam.numel()]
        np.testing.assert_allclose(ev, Lam.numpy(), rtol=1e-7, atol=1e-10 * float(Lam.max()))
        torch.testing.assert_close(basis.transform(l, acts[l].float()), f @ C, atol=1e-5, rtol=1e-5)
        if l == L:
            continue
        # the Jacobian Gram in the interaction basis is the identity
        if jacobian == "next":
            J = torch.einsum("ki,nkl,jl->nij", basis.C[l + 1], ext_block_jacobian(model, pre, l, True, l + 1 < L),
                             basis.C_pinv[l])
        else:
            J = output_jacobian(model, pre, l, with_bias=True) @ basis.C_pinv[l].T
            np.testing.assert_allclose(basis.M[l].numpy(), jacobian_gram(model, x, l, with_bias=True), atol=1e-12)
        Mhat = torch.einsum("nki,nkj->ij", J, J) / J.shape[0]
        torch.testing.assert_close(Mhat, torch.eye(Mhat.shape[0], dtype=torch.float64), atol=1e-8, rtol=0)
    # the output layer's basis is its PCA basis, with the same signs (largest entry positive)
    torch.testing.assert_close(basis.C[L], basis.U[L])
    for l in basis.layers:
        assert_sign_convention(basis.C[l])
        assert_sign_convention(basis.U[l])
        # every cut-off is a clear decision here: the dims are not round-off-dependent
        dec = basis.decisions[l]
        assert dec["lambda"].rank == basis.dims()[l] and dec["pca"].rank == basis.U[l].shape[1]
        assert not dec["pca"].thin and not dec["lambda"].thin, (l, dec)
    assert basis.dim_labels()[L].startswith(f"{basis.dims()[L]} (gap ")
    assert basis.dim_labels(gaps=False) == {l: str(d) for l, d in basis.dims().items()}


@pytest.mark.numerics
def test_interaction_basis_modes_agree_on_linear_networks():
    model, x = ib_model("linear")
    a = interaction_basis(model, x, jacobian="next")
    b = interaction_basis(model, x, jacobian="output")
    for l in a.layers:
        torch.testing.assert_close(a.Lambda[l], b.Lambda[l], rtol=1e-8, atol=1e-12)


def _match_up_to_sign(a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
    assert a.shape == b.shape
    for j in range(a.shape[1]):
        s = torch.sign((a[:, j] * b[:, j]).sum())
        torch.testing.assert_close(a[:, j], s * b[:, j], atol=tol, rtol=0)


@pytest.mark.numerics
@pytest.mark.parametrize("jacobian", ["next", "output"])
def test_interaction_basis_is_invariant_to_reparametrisation(jacobian):
    # ReLU layer 2: f -> A f with A = permutation x positive diagonal (the rescaling symmetry);
    # linear network: any invertible A. Downstream weights W -> W A^{-1}.
    for activation in ("relu", "linear"):
        model, x = ib_model(activation, seed=1)
        g = torch.Generator().manual_seed(7)
        d = model.sizes[2]
        if activation == "relu":
            A = torch.diag(torch.rand(d, generator=g) + 0.5)[torch.randperm(d, generator=g)]
        else:
            A = torch.randn(d, d, generator=g) + 2 * torch.eye(d)
        repar = MLP(model.sizes, activation=activation)
        repar.load_state_dict(model.state_dict())
        with torch.no_grad():
            repar.layers[1].weight.copy_(A @ model.layers[1].weight)
            repar.layers[1].bias.copy_(A @ model.layers[1].bias)
            repar.layers[2].weight.copy_(model.layers[2].weight @ torch.linalg.inv(A))
        b0 = interaction_basis(model, x, jacobian=jacobian)
        b1 = interaction_basis(repar, x, jacobian=jacobian)
        acts0, _ = mlp_forward(model, x)
        acts1, _ = mlp_forward(repar, x)
        torch.testing.assert_close(acts1[2], acts0[2] @ A.double().T, atol=1e-4, rtol=1e-4)
        for l in b0.layers:
            torch.testing.assert_close(b1.Lambda[l], b0.Lambda[l], rtol=1e-4, atol=1e-8)
            _match_up_to_sign(b1.extend(l, acts1[l]) @ b1.C[l], b0.extend(l, acts0[l]) @ b0.C[l], tol=1e-3)


def block_diagonal_linear_mlp(blocks=(3, 2, 4), depth=3, n=500, seed=0):
    """A linear MLP with block-diagonal weights, on data whose blocks are exactly uncorrelated.

    The input columns are orthonormalised (QR), so the empirical Gram matrix is block-diagonal
    to round-off, not just in expectation; each block then gets its own random mixing.
    """
    g = torch.Generator().manual_seed(seed)
    d = sum(blocks)
    model = MLP([d] * (depth + 1), activation="linear", bias=False)
    mix = torch.zeros(d, d, dtype=torch.float64)
    with torch.no_grad():
        for layer in model.layers:
            W = torch.zeros(d, d)
            s = 0
            for b in blocks:
                W[s : s + b, s : s + b] = torch.randn(b, b, generator=g) + 1.5 * torch.eye(b)
                s += b
            layer.weight.copy_(W)
    s = 0
    for b in blocks:
        mix[s : s + b, s : s + b] = torch.randn(b, b, generator=g, dtype=torch.float64) + 2 * torch.eye(b)
        s += b
    Q, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    x = n**0.5 * Q @ mix  # float64: the block structure holds to round-off
    owner = np.repeat(np.arange(len(blocks)), blocks)
    return model, x, owner


def block_of_directions(basis, owner) -> dict[tuple[int, int], int]:
    """The block each interaction-basis direction lives in (asserting it lives in exactly one)."""
    block_of = {}
    for l, C in basis.C.items():
        support = C.abs() > 1e-6 * C.abs().max()
        for j in range(C.shape[1]):
            blocks = set(owner[l][support[:, j].numpy()])
            assert len(blocks) == 1, (l, j, blocks)
            block_of[(l, j)] = int(blocks.pop())
    return block_of


def assert_block_diagonal(edges: dict, block_of: dict) -> None:
    for l, E in edges.items():
        for i in range(E.shape[0]):
            for j in range(E.shape[1]):
                if block_of[(l + 1, i)] != block_of[(l, j)]:
                    assert E[i, j] <= 1e-12 * E.max(), (l, i, j)


@pytest.mark.numerics
def test_linear_block_diagonal_network_has_block_diagonal_edges():
    model, x, owner = block_diagonal_linear_mlp()
    owners = {l: owner for l in range(len(model.layers) + 1)}
    basis = interaction_basis(model, x)
    edges = interaction_edges(basis, model, x)
    assert isinstance(edges, InteractionEdges) and sorted(edges.ib) == [0, 1, 2]
    block_of = block_of_directions(basis, owners)
    assert_block_diagonal(edges.ib, block_of)
    # a linear network is even sparser in its interaction basis: every direction feeds exactly
    # one direction of the next layer (the network splits into independent 1-d channels)
    for E in edges.ib.values():
        assert ((E > 1e-10 * E.max()).sum(axis=0) == 1).all()
    # so modules never straddle blocks; in the (block-diagonal, dense) PCA basis they are the blocks
    for c in find_modules(edges, seed=0).communities:
        assert len({block_of[n] for n in c}) == 1
    pca = find_modules(edges, resolution=0.1, seed=0, which="pca")
    pca_owner = lambda node: int(owner[np.argmax(np.abs(basis.U[node[0]][:, node[1]].numpy()))])  # noqa: E731
    assert sorted(sorted({pca_owner(n) for n in c}) for c in pca.communities) == [[0], [1], [2]]
    frac, cum = edges.sparsity_curve("ib")
    assert cum[-1] == pytest.approx(1.0) and np.all(np.diff(cum) >= -1e-12)
    assert edges.edges_for(0.99, "ib") < edges.edges_for(0.99, "pca")


def block_sparse_relu_mlp(blocks=(3, 2, 4), depth=3, n=600, seed=0):
    """A ReLU MLP of independent blocks (block-diagonal weights, no biases) on block-sparse data.

    Each input is non-zero in one block only, so a block's activations (and Jacobians) vanish on
    the other blocks' inputs: the uncentred Gram matrices are exactly block-diagonal even though
    ReLU outputs are non-negative. Within a block the ReLUs mix the channels.
    """
    g = torch.Generator().manual_seed(seed)
    hid = [2 * b for b in blocks]
    model = MLP([sum(blocks)] + [sum(hid)] * (depth - 1) + [sum(blocks)], activation="relu", bias=False)
    ins, outs = [blocks] + [hid] * (depth - 1), [hid] * (depth - 1) + [blocks]
    with torch.no_grad():
        for layer, bi, bo in zip(model.layers, ins, outs):
            W = torch.zeros(sum(bo), sum(bi))
            si = so = 0
            for a, b in zip(bi, bo):
                W[so : so + b, si : si + a] = torch.randn(b, a, generator=g) / a**0.5
                si, so = si + a, so + b
            layer.weight.copy_(W)
    x = torch.zeros(n, sum(blocks), dtype=torch.float64)
    which = torch.randint(len(blocks), (n,), generator=g)
    s = 0
    for k, b in enumerate(blocks):
        rows = which == k
        x[rows, s : s + b] = torch.randn(int(rows.sum()), b, generator=g, dtype=torch.float64)
        s += b
    owners = {0: np.repeat(np.arange(len(blocks)), blocks), depth: np.repeat(np.arange(len(blocks)), blocks)}
    for l in range(1, depth):
        owners[l] = np.repeat(np.arange(len(blocks)), hid)
    return model, x, owners


@pytest.mark.numerics
@pytest.mark.parametrize("seed", [0, 1])
def test_find_modules_recovers_the_blocks_of_a_block_sparse_relu_network(seed):
    model, x, owners = block_sparse_relu_mlp(seed=seed)
    basis = interaction_basis(model, x)
    edges = interaction_edges(basis, model, x)
    block_of = block_of_directions(basis, owners)
    assert_block_diagonal(edges.ib, block_of)
    for c in find_modules(edges, seed=0).communities:  # default resolution: never across blocks
        assert len({block_of[n] for n in c}) == 1
    mods = find_modules(edges, resolution=0.1, seed=0)  # coarser: exactly the blocks
    found = sorted(sorted({block_of[n] for n in c}) for c in mods.communities)
    assert found == [[0], [1], [2]]
    assert 0.5 < mods.modularity <= 1.0


def test_find_modules_on_a_dict_and_bad_inputs():
    E = {0: np.array([[1.0, 0.0], [0.0, 1.0]]), 1: np.array([[2.0, 0.0], [0.0, 3.0]])}
    mods = find_modules(E, seed=1)
    assert sorted(map(sorted, mods.communities)) == [[(0, 0), (1, 0), (2, 0)], [(0, 1), (1, 1), (2, 1)]]
    with pytest.raises(ValueError, match="non-negative"):
        find_modules({0: -np.ones((2, 2))})
    with pytest.raises(TypeError, match="edges"):
        find_modules([np.ones((2, 2))])
    with pytest.raises(ValueError, match="which"):
        find_modules(InteractionEdges(ib=E, pca=E), which="neuron")


# --------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------
def test_bad_inputs_name_the_argument():
    model, x = planted_mlp()
    with pytest.raises(ValueError, match="acts.*NaN"):
        gram_spectrum(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="acts: expected a 2-D"):
        gram_spectrum(torch.ones(3))
    with pytest.raises(ValueError, match=r"layer: expected a layer index in \[0, 2\]"):
        jacobian_gram(model, x, 3)
    with pytest.raises(ValueError, match="inputs: expected shape"):
        jacobian_gram(model, torch.ones(5, 7), 1)
    with pytest.raises(ValueError, match="wrt"):
        jacobian_gram(model, x, 1, wrt="both")
    with pytest.raises(TypeError, match="model: expected a mechnb.models.MLP"):
        interaction_basis(nn.Linear(4, 2), x)
    with pytest.raises(ValueError, match="layers"):
        interaction_basis(model, x, layers=[0, 5])
    with pytest.raises(ValueError, match="preacts"):
        relu_synchrony(torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="params: unknown"):
        effective_parameter_count(model, x, params=["nope"])
    with pytest.raises(ValueError, match="rtol"):
        degeneracy_report(model, x, rtol=-1.0)
    with pytest.raises(ValueError, match="k: Lanczos"):
        hessian_spectrum(model, sum_mse, x, torch.zeros(x.shape[0], 3), k=10_000)
    basis = interaction_basis(model, x, layers=[1, 2])
    assert basis.layers == [1, 2] and set(basis.C) == {1, 2}
    with pytest.raises(ValueError, match="layer"):
        basis.transform(0, x)
    with pytest.raises(ValueError, match="acts: expected shape"):
        basis.transform(1, x)
    assert math.isfinite(float(block_weight(model, 0, True).sum()))


@pytest.mark.numerics
def test_ablation_curves_keep_everything_is_the_intact_model_and_the_output_rank_bounds_ib():
    from mechnb.degeneracy import ablation_curves

    torch.manual_seed(0)
    model = MLP([6, 12, 12, 4])
    x = torch.randn(300, 6)
    with torch.no_grad():
        y = model(x).argmax(-1)  # the model's own labels: intact accuracy 1
    basis = interaction_basis(model, x)
    for layer in (1, 2):
        c = ablation_curves(basis, model, x, y, layer)
        assert c.full_accuracy == 1.0
        assert c.n_directions == {"ib": basis.C[layer].shape[1], "pca": basis.U[layer].shape[1], "neuron": 12}
        for key in c.kept:  # every direction kept: the intact network, whatever the basis
            assert c.kept[key][-1] == c.n_directions[key]
            assert c.accuracy[key][-1] == 1.0
            np.testing.assert_allclose(c.loss[key][-1], c.full_loss, rtol=1e-9)
    # below the linear output layer M' = Wᵀ W has rank <= d_out: at most 4 interaction-basis directions
    assert basis.C[2].shape[1] <= 4
    c = ablation_curves(basis, model, x, y, 1, kept=[1, 3])
    assert list(c.kept["neuron"]) == [1, 3, 12]
    assert c.needed("neuron", 0.0) >= 1
    with pytest.raises(ValueError, match="layer: expected a hidden layer"):
        ablation_curves(basis, model, x, y, 0)
    with pytest.raises(TypeError, match="targets: expected an integer"):
        ablation_curves(basis, model, x, y.double(), 1)


@pytest.mark.numerics
def test_same_size_pca_edges_use_the_top_pca_directions():
    model, x = planted_mlp(seed=0)
    basis = interaction_basis(model, x)
    edges = interaction_edges(basis, model, x)
    for l, E in edges.pca_k.items():
        assert E.shape == edges.ib[l].shape
        k_in, k_out = basis.C[l].shape[1], basis.C[l + 1].shape[1]
        # the top-left block of the full PCA edges is not the same: the kept part is re-projected (C_pinv = Uᵀ)
        assert E.shape == (k_out, k_in)
        np.testing.assert_allclose(E, edges.pca[l][:k_out, :k_in], rtol=1e-9, atol=1e-15)
    assert edges.edges_for(1.0, "pca_k") <= sum(e.size for e in edges.pca_k.values())
    with pytest.raises(ValueError, match="which"):
        edges.edges_for(0.5, "nope")


@pytest.mark.numerics
def test_integrated_gradient_edges_are_exact_for_linear_blocks_and_differ_for_relu():
    from mechnb.degeneracy.interaction import _edges_in_basis
    from mechnb.degeneracy._mlp import block_jacobian_factors

    torch.manual_seed(0)
    lin = MLP([4, 5, 3], activation="linear")
    x = torch.randn(50, 4)
    basis = interaction_basis(lin, x)
    ig = interaction_edges(basis, lin, x, integrated_steps=3)
    acts, pre = mlp_forward(lin, x)
    for l in ig.ib:  # linear: the gradient is the same along the path, only f̂ -> f̂ - f̂(baseline) changes
        s, B = block_jacobian_factors(lin, pre, l, basis.with_bias[l], basis.with_bias[l + 1])
        f = basis.extend(l, acts[l])
        f[:, -1] = 0.0  # minus the baseline [0, ..., 0, 1]
        np.testing.assert_allclose(ig.ib[l], _edges_in_basis(s, B, f @ basis.C[l], basis.C[l + 1], basis.C_pinv[l]),
                                   rtol=1e-10, atol=1e-14)
    model, xr = planted_mlp(seed=0)
    b = interaction_basis(model, xr)
    one, many = interaction_edges(b, model, xr), interaction_edges(b, model, xr, integrated_steps=16)
    assert not np.allclose(one.ib[0], many.ib[0])  # ReLU gates change along the path
    with pytest.raises(ValueError, match="integrated_steps"):
        interaction_edges(b, model, xr, integrated_steps=0)


class _WithUnused(nn.Module):
    """A linear model plus a parameter the forward pass never touches."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.unused = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


@pytest.mark.parametrize("gauss_newton", [False, True])
def test_hessian_spectrum_with_an_unused_parameter_adds_exact_zeros(gauss_newton):
    # before the fix, both modes raised "One of the differentiated Tensors appears to not have been used"
    torch.manual_seed(0)
    model = _WithUnused().double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    ev = hessian_spectrum(model, sum_mse, x, y, gauss_newton=gauss_newton)
    assert ev.shape == (8 + 4,)
    # without the unused parameter: the 8 eigenvalues of the linear model's Hessian, plus 4 exact zeros
    ref = hessian_spectrum(model.lin, sum_mse, x, y, gauss_newton=gauss_newton)
    np.testing.assert_allclose(ev[:8], ref, rtol=1e-10)
    assert np.all(ev[8:] == 0.0)
    top = hessian_spectrum(model, sum_mse, x, y, k=3, gauss_newton=gauss_newton)
    np.testing.assert_allclose(top, ref[:3], rtol=1e-8)


def test_hessian_spectrum_gauss_newton_rejects_a_non_scalar_loss():
    model, x = planted_mlp()
    y = torch.zeros(x.shape[0], 3)

    def per_sample(out, t):
        return ((out - t) ** 2).sum(-1)  # (n,): not reduced

    for gn in (False, True):
        with pytest.raises(ValueError, match=r"loss_fn: expected a scalar loss.*got shape \(%d,\)" % x.shape[0]):
            hessian_spectrum(model, per_sample, x, y, gauss_newton=gn)


def test_nan_weights_and_huge_activations_are_named_not_eigh_failures():
    model, x = planted_mlp()
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.layers[0].weight[0, 0] = float("nan")
    for call in (lambda: degeneracy_report(bad, x), lambda: interaction_basis(bad, x),
                 lambda: effective_parameter_count(bad, x), lambda: jacobian_gram(bad, x, 1),
                 lambda: hessian_spectrum(bad, sum_mse, x, torch.zeros(x.shape[0], 3))):
        with pytest.raises(ValueError, match=r"model: 'layers.0.weight' has 1 NaN"):
            call()
    acts = torch.randn(10, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"acts: .*overflow float64"):
        gram_spectrum(acts * 1e200)
    # large but representable: the same spectrum, scaled by 1e300
    np.testing.assert_allclose(gram_spectrum(acts * 1e150, with_bias=False), gram_spectrum(acts, with_bias=False) * 1e300,
                               rtol=1e-10)


def test_models_on_the_meta_device_are_rejected_by_name():
    with torch.device("meta"):
        meta = MLP([4, 6, 3])
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match=r"model: 'layers.0.weight' is on the 'meta' device"):
        hessian_spectrum(meta, sum_mse, x, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="meta"):
        degeneracy_report(meta, x)
    with pytest.raises(ValueError, match="meta"):
        interaction_basis(meta, x)


def test_edges_for_takes_a_fraction_in_zero_one():
    E = InteractionEdges(ib={0: np.arange(24, dtype=float).reshape(4, 6)}, pca={0: np.ones((4, 6))})
    assert E.edges_for(1.0) == 23  # the zero edge holds none of the strength
    assert E.edges_for(1.0, "pca") == 24
    assert E.edges_for(1 / 24, "pca") == 1
    for bad in (2.0, -1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"fraction: expected a number in \(0, 1\]"):
            E.edges_for(bad)
    with pytest.raises(TypeError, match="fraction"):
        E.edges_for("0.5")
    zero = InteractionEdges(ib={0: np.zeros((2, 2))}, pca={0: np.zeros((2, 2))})
    assert zero.edges_for(0.5) == 0  # no strength at all: no edge is needed


def test_dtype_policy_casts_real_floats_and_names_the_argument_otherwise():
    model, x = planted_mlp()
    y = torch.zeros(x.shape[0], 3)
    ref = degeneracy_report(model, x).measured_nullity
    for dt in (torch.float16, torch.bfloat16, torch.float64):  # cast to float64 inside: the planted zeros stay exact
        assert degeneracy_report(model, x.to(dt)).measured_nullity == ref
    ev32 = hessian_spectrum(model, sum_mse, x, y)
    np.testing.assert_allclose(hessian_spectrum(model, sum_mse, x.double(), y.double()), ev32, rtol=1e-10, atol=1e-12)
    for fn in (lambda z: degeneracy_report(model, z), lambda z: interaction_basis(model, z),
               lambda z: effective_parameter_count(model, z), lambda z: jacobian_gram(model, z, 1),
               lambda z: hessian_spectrum(model, sum_mse, z, y)):
        with pytest.raises(TypeError, match=r"inputs: expected a real floating-point tensor.*complex"):
            fn(x.to(torch.complex64))
    for fn in (lambda z: degeneracy_report(model, z), lambda z: interaction_basis(model, z)):
        with pytest.raises(TypeError, match=r"inputs: expected a real floating-point tensor.*int64"):
            fn(x.long())
    with pytest.raises(TypeError, match=r"targets: expected a real.*complex"):
        hessian_spectrum(model, sum_mse, x, y.to(torch.complex64))
    with pytest.raises(TypeError, match=r"acts: expected a real-valued tensor.*complex"):
        gram_spectrum(x.to(torch.complex128))


# --------------------------------------------------------------------------------------
# Plots and widgets
# --------------------------------------------------------------------------------------
def test_plots_return_labelled_figures():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from mechnb.plots import degeneracy as dplots

    model, x = planted_mlp(duplicated=2)
    rep = degeneracy_report(model, x)
    model_b, x_b, _ = block_sparse_relu_mlp()
    basis = interaction_basis(model_b, x_b)
    edges = interaction_edges(basis, model_b, x_b)
    figs = [
        dplots.gram_spectra({"hidden": gram_spectrum(hidden_acts(model, x))}),
        dplots.nullity_sweep([0, 1, 2], [6, 10, 14], [6, 10, 14], xlabel="k", current=1),
        dplots.degeneracy_bars(rep),
        dplots.llc_vs_theory([5.0, 12.0], [5.2, 11.0], [0.3, 0.5], ["a", "b"]),
        dplots.llc_traces({"lr=1e-5": np.random.rand(3, 40), "lr=1e-3": np.random.rand(3, 40)}),
        dplots.hessian_histogram(np.r_[10.0, 3.0, np.linspace(1e-6, 1e-3, 50), -1e-5],
                                 np.r_[9.0, 3.0, np.linspace(1e-6, 1e-3, 51)]),
        dplots.edge_heatmaps(edges.pca[1], edges.ib[1], 1),
        dplots.edge_sparsity({"PCA": edges.sparsity_curve("pca"), "IB": edges.sparsity_curve("ib")}),
        dplots.module_graph(find_modules(edges, resolution=0.1)),
        dplots.degenerate_landscapes(),
        dplots.interaction_basis_steps(),
        dplots.ablation_curves([degeneracy_ablation(basis, model_b, x_b)]),
    ]
    for fig in figs:
        assert isinstance(fig, Figure)
        ax = fig.axes[0]
        assert ax.get_xlabel() and (ax.get_title() or fig._suptitle is not None)
        plt.close(fig)
    with pytest.raises(ValueError, match="measured"):
        dplots.nullity_sweep([0, 1], [1.0], [1.0, 2.0], xlabel="k")
    with pytest.raises(ValueError, match="traces"):
        dplots.llc_traces({})
    with pytest.raises(ValueError, match="levels"):
        dplots.degenerate_landscapes(levels=(0.1, 0.01))
    with pytest.raises(ValueError, match="curves"):
        dplots.ablation_curves([])


def degeneracy_ablation(basis, model, x):
    from mechnb.degeneracy import ablation_curves

    with torch.no_grad():
        y = model(x).argmax(-1)
    return ablation_curves(basis, model, x, y, 1)


def test_degeneracy_panel_moves_the_nullity_as_predicted():
    from mechnb.widgets.degeneracy import DegeneracyPanel

    panel = DegeneracyPanel(d_in=4, d_hidden=6, d_out=4, max_k=3)
    # predict first: nothing of the answer is shown until reveal
    assert "press <b>reveal</b>" in panel.text.value and "nullity <b>" not in panel.text.value
    assert panel.figure is None
    panel.reveal.value = True
    assert "predicted nullity <b>6</b> · measured <b>6</b>" in panel.text.value
    fig0 = panel.figure
    assert fig0 is not None
    panel.slider.value = 2  # two duplicated neurons: 2 * (d_out + 1) more free directions
    assert panel.reveal.value is False and panel.figure is None and "nullity <b>" not in panel.text.value
    panel.reveal.value = True
    assert "predicted nullity <b>16</b> · measured <b>16</b>" in panel.text.value
    assert panel.figure is not fig0
    panel.kind.value = "synchronised"  # k = 2 synchronised ReLUs: 2 rescalings + 2 mixings
    assert panel.figure is None
    panel.reveal.value = True
    assert "predicted nullity <b>10</b> · measured <b>10</b>" in panel.text.value
    panel.slider.value = 3
    panel.reveal.value = True
    assert "measured <b>15</b>" in panel.text.value
    ks, measured, predicted = panel.sweep("dead")
    assert measured == predicted == [6 + k * (4 + 1 + 4) for k in ks]
    ks, measured, predicted = panel.sweep("unread")
    assert measured == predicted == [6 + k * (4 + 1) for k in ks]
    with pytest.raises(ValueError, match="kind"):
        DegeneracyPanel(kind="nope")
    # the default network is the notebook's planted one: 4 inputs, 3 outputs (planted_mlp's defaults)
    default = DegeneracyPanel(kind="duplicated", k=2, reveal=True)
    assert default.d_out == 3 and "d_out=3" in default.text.value
    assert "predicted nullity <b>14</b> · measured <b>14</b>" in default.text.value  # 6 + 2 * (3 + 1), as in part 1


def test_modules_panel_reruns_louvain_on_the_slider():
    from mechnb.widgets.degeneracy import ModulesPanel

    model, x, _ = block_sparse_relu_mlp()
    edges = interaction_edges(interaction_basis(model, x), model, x)
    panel = ModulesPanel(edges, resolution=0.1)
    assert "<b>3</b> modules" in panel.text.value
    fig0 = panel.figure
    panel.slider.value = 10.0
    assert panel.figure is not fig0 and len(panel.modules.communities) > 3
    with pytest.raises(TypeError, match="edges"):
        ModulesPanel({0: np.ones((2, 2))})
