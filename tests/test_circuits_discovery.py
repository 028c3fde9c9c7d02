"""Ground truth for circuit discovery under the four ablations: references, faithfulness, batched
exact patching, ACDC, the area under faithfulness curves and ROC against a planted circuit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechnb.circuits import (
    ABLATIONS,
    Circuit,
    EdgeScores,
    FaithfulnessCurve,
    Graph,
    ablation_reference,
    acdc,
    attribute,
    cache_writers,
    faithfulness,
    faithfulness_curve,
    logit_diff,
    patched_forward,
    roc_against,
)
from mechnb.circuits.exact import exact_edge_metrics
from mechnb.experiments.circuits import planted_induction
from mechnb.models import TinyTransformer
from mechnb.tasks import PromptPairs

torch.set_num_threads(1)


def _rand_model(seed: int = 1, std: float = 0.3, n_layers: int = 2, **kw) -> TinyTransformer:
    """A random model with weights large enough for non-trivial attention and GELU."""
    m = TinyTransformer(20, 32, n_layers, 4, 48, 8, init_seed=seed, **kw)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.split(".")[-1].startswith("W_"):
                p.normal_(0, std, generator=gen)
            elif n.split(".")[-1].startswith("b_"):
                p.normal_(0, 0.1, generator=gen)
    return m.eval()


def _rand_pairs(n: int = 8, pos: int = 6, vocab: int = 20, seed: int = 0) -> PromptPairs:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (n, pos), generator=g)
    corr = clean.clone()
    corr[:, 2] = torch.randint(0, vocab, (n,), generator=g)
    return PromptPairs(clean, corr, torch.randint(0, vocab, (n, 2), generator=g), "random")


@pytest.fixture(scope="module")
def planted():
    return planted_induction()


# --------------------------------------------------------------------------------------
# Ablation references
# --------------------------------------------------------------------------------------
def test_ablation_references_are_the_documented_means() -> None:
    m = _rand_model()
    g = Graph.from_model(m)
    pairs = _rand_pairs()
    out = cache_writers(m, g, pairs.clean).out  # [W, b, p, d]
    corr = ablation_reference(m, g, pairs.clean, pairs.corrupted, "corrupted")
    torch.testing.assert_close(corr, cache_writers(m, g, pairs.corrupted).out, atol=0, rtol=0)
    zero = ablation_reference(m, g, pairs.clean, None, "zero")
    assert zero.shape == (g.n_writers, 1, 1, 32) and not zero.any()
    mean = ablation_reference(m, g, pairs.clean, None, "mean")
    assert mean.shape == (g.n_writers, 1, 1, 32)
    torch.testing.assert_close(mean[:, 0, 0], out.reshape(g.n_writers, -1, 32).mean(1), atol=1e-6, rtol=0)
    pos = ablation_reference(m, g, pairs.clean, None, "mean-positional")
    assert pos.shape == (g.n_writers, 1, 6, 32)
    torch.testing.assert_close(pos[:, 0, 3], out[:, :, 3].mean(1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="ablation"):
        ablation_reference(m, g, pairs.clean, None, "resample")
    with pytest.raises(ValueError, match="corrupted"):
        ablation_reference(m, g, pairs.clean, None, "corrupted")


def test_every_edge_zero_ablated_leaves_only_the_biases() -> None:
    """With every edge zero-ablated the logits read only the constant ``b_O`` of each layer (not a writer:
    ``hook_result`` excludes it; an MLP's ``b_out`` is part of its output and is ablated with it)."""
    m = _rand_model()
    g = Graph.from_model(m)
    pairs = _rand_pairs()
    ref = ablation_reference(m, g, pairs.clean, None, "zero")
    with torch.no_grad():
        got = patched_forward(m, g, pairs.clean, ref, g.valid.float())
        resid = m.blocks[0].attn.b_O + m.blocks[1].attn.b_O
        want = (m.ln_final(resid) @ m.unembed.W_U + m.unembed.b_U).expand_as(got)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------
# Faithfulness under every ablation
# --------------------------------------------------------------------------------------
@pytest.mark.numerics
@pytest.mark.parametrize("ablation", ABLATIONS)
def test_faithfulness_is_one_for_all_edges_and_zero_for_none_under_every_ablation(ablation: str) -> None:
    m = _rand_model()
    g = Graph.from_model(m)
    pairs = _rand_pairs()
    assert faithfulness(m, Circuit.full(g), pairs, ablation=ablation) == pytest.approx(1.0, abs=1e-6)
    assert faithfulness(m, Circuit.empty(g), pairs, ablation=ablation) == pytest.approx(0.0, abs=1e-6)
    scores = attribute(m, g, pairs, method="exact", ablation=ablation)
    assert scores.ablation == ablation and scores.values.abs().max() > 1e-3
    curve = faithfulness_curve(m, scores, pairs, sizes=[0, 10, g.n_edges], ablation=ablation)
    assert curve.faithfulness[0] == pytest.approx(0.0, abs=1e-6)
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-6)
    if ablation != "corrupted":  # the mean and zero ablations need no corrupted prompts
        assert faithfulness(m, Circuit.full(g), pairs.clean, None, lambda lg, b: lg[:, -1, 0].mean(),
                            ablation=ablation) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.numerics
@pytest.mark.parametrize("ablation", ABLATIONS)
def test_eap_is_the_edge_mask_gradient_under_every_ablation(ablation: str) -> None:
    m = _rand_model().double()
    g = Graph.from_model(m)
    pairs = _rand_pairs()
    scores = attribute(m, g, pairs, ablation=ablation)
    ref = ablation_reference(m, g, pairs.clean, pairs.corrupted, ablation)
    alpha = torch.zeros(g.n_writers, g.n_readers, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(logit_diff(patched_forward(m, g, pairs.clean, ref, alpha), pairs), alpha)
    assert scores.values.abs().max() > 0.05
    torch.testing.assert_close(g.edge_vector(grad).float(), scores.values, atol=1e-5, rtol=0)
    ig1 = attribute(m, g, pairs, method="eap-ig", ig_steps=1, ablation=ablation)  # right Riemann sum of 1 = EAP
    torch.testing.assert_close(ig1.values, scores.values, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------
# Exact patching: batched over edges == the per-edge loop
# --------------------------------------------------------------------------------------
@pytest.mark.numerics
@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("arch", ["2 layers", "3 layers attn-only"])
def test_batched_exact_equals_the_per_edge_loop(ablation: str, arch: str) -> None:
    m = _rand_model() if arch == "2 layers" else _rand_model(seed=3, n_layers=3, attn_only=True)
    g = Graph.from_model(m)
    pairs = _rand_pairs()
    loop = attribute(m, g, pairs, method="exact", ablation=ablation, batched=False)
    batched = attribute(m, g, pairs, method="exact", ablation=ablation)
    assert loop.info == {"forward_passes": g.n_edges + 1, "batched": False}
    assert batched.info["batched"] and batched.info["forward_passes"] < g.n_edges / 4
    assert loop.values.abs().max() > 0.1
    torch.testing.assert_close(batched.values, loop.values, atol=1e-5, rtol=0)
    assert batched.metric_clean == loop.metric_clean and batched.metric_corrupted == loop.metric_corrupted
    # any chunk size gives the same numbers: one edge per pass, and all edges of a group in one pass
    clean = cache_writers(m, g, pairs.clean)
    ref = ablation_reference(m, g, pairs.clean, pairs.corrupted, ablation)
    with torch.no_grad():
        for tokens_per_pass in (1, 10**6):
            vals, _ = exact_edge_metrics(m, g, pairs.clean, clean.out, ref, lambda lg: logit_diff(lg, pairs),
                                         tokens_per_pass)
            torch.testing.assert_close(vals - loop.metric_clean, loop.values, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------
# ACDC
# --------------------------------------------------------------------------------------
@pytest.mark.numerics
def test_acdc_threshold_zero_keeps_every_edge_that_changes_the_metric(planted) -> None:
    model, prompts, graph = planted.model, planted.prompts, planted.graph
    res = acdc(model, graph, prompts, threshold=0.0)
    kept = {e.name for e in res.circuit.edges}
    d = res.scores.as_dict()
    changed = {name for name in res.tried if d[name] != 0.0}
    unchanged = set(res.tried) - changed
    # an edge is removed exactly when removing it left the metric unchanged
    assert changed >= kept and not (unchanged & kept) and not (set(res.removed_untried) & kept)
    assert set(planted.true_edges) <= kept
    # every removal changed nothing: the circuit is the model (up to the rounding of untried removals)
    assert res.metric_circuit == pytest.approx(res.metric_full, rel=1e-6)
    assert faithfulness(model, res.circuit, prompts) == pytest.approx(1.0, abs=1e-6)
    assert res.forward_passes == len(res.tried) + 2 <= graph.n_edges + 2
    assert len(res.tried) + len(res.removed_untried) == graph.n_edges
    assert res.scores.circuit is res.circuit and res.scores.method == "acdc"


def test_acdc_with_a_huge_threshold_keeps_nothing_and_the_default_finds_the_planted_circuit(planted) -> None:
    model, prompts, graph = planted.model, planted.prompts, planted.graph
    assert acdc(model, graph, prompts, threshold=1e9).circuit.n_edges == 0
    res = acdc(model, graph, prompts)  # threshold: 1% of |m(full) - m(empty)|
    assert res.threshold == pytest.approx(0.01 * abs(res.metric_full - res.metric_empty))
    assert {e.name for e in res.circuit.edges} == set(planted.true_edges)
    kl = acdc(model, graph, prompts, objective="kl")
    assert {e.name for e in kl.circuit.edges} == set(planted.true_edges)
    scores = attribute(model, graph, prompts, method="acdc", threshold=res.threshold)
    assert scores.circuit is not None and scores.circuit.edges == res.circuit.edges
    with pytest.raises(ValueError, match="threshold"):
        acdc(model, graph, prompts, threshold=-1.0)
    with pytest.raises(ValueError, match="objective"):
        acdc(model, graph, prompts, objective="loss")


# --------------------------------------------------------------------------------------
# Area under the faithfulness curve
# --------------------------------------------------------------------------------------
def test_area_is_the_trapezoidal_integral_over_the_fraction_of_edges_kept() -> None:
    c = FaithfulnessCurve(sizes=[0, 5, 10], n_edges=[0, 5, 10], n_nodes=[0, 3, 4], faithfulness=[0.0, 1.0, 1.0],
                          ablation="corrupted", n_total=10)
    assert c.area == pytest.approx(0.5 * 0.5 + 0.5 * 1.0) and c.cmd == pytest.approx(0.25)
    # end points (0, 0) and (1, 1) are added when missing; requested sizes do not matter, kept sizes do
    c2 = FaithfulnessCurve(sizes=[3, 8], n_edges=[2, 8], n_nodes=[2, 3], faithfulness=[0.5, 1.2],
                           ablation="mean", n_total=10)
    want = 0.2 * (0 + 0.5) / 2 + 0.6 * (0.5 + 1.2) / 2 + 0.2 * (1.2 + 1.0) / 2
    assert c2.area == pytest.approx(want)
    assert c2.cmd == pytest.approx(0.2 * (1 + 0.5) / 2 + 0.6 * (0.5 + 0.2) / 2 + 0.2 * (0.2 + 0) / 2)
    with pytest.raises(ValueError, match="n_total"):
        _ = FaithfulnessCurve([0], [0], [0], [0.0], "zero").area


def test_planted_circuit_first_gives_a_larger_area_than_a_random_ranking(planted) -> None:
    model, prompts, graph = planted.model, planted.prompts, planted.graph
    exact = attribute(model, graph, prompts, method="exact")
    sizes = [0, 1, 2, 3, 4, 5, 10, 20, 40, 80, graph.n_edges]
    good = faithfulness_curve(model, exact, prompts, sizes=sizes)
    rand = faithfulness_curve(model, EdgeScores.random(graph, seed=0), prompts, sizes=sizes)
    assert good.faithfulness[5] > 0.95  # the 5 planted edges come first and carry the answer
    assert good.area > 0.97 and rand.area < good.area - 0.2
    assert good.area + good.cmd == pytest.approx(1.0, abs=0.02)  # F stays close to [0, 1]
    assert torch.equal(EdgeScores.random(graph, 3).scores, EdgeScores.random(graph, 3).scores)


# --------------------------------------------------------------------------------------
# ROC against a known circuit
# --------------------------------------------------------------------------------------
def test_roc_auc_is_the_mann_whitney_statistic() -> None:
    g = Graph(2, 2, attn_only=True)
    rng = np.random.default_rng(0)
    vals = rng.normal(size=g.n_edges).round(1)  # ties on purpose
    truth = np.zeros(g.n_edges, dtype=bool)
    truth[rng.choice(g.n_edges, 6, replace=False)] = True
    roc = roc_against(torch.tensor(vals), torch.tensor(truth))
    a, b = np.abs(vals[truth]), np.abs(vals[~truth])
    mw = ((a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()) / (a.size * b.size)
    assert roc.auc == pytest.approx(mw, abs=1e-12)
    assert (roc.fpr[0], roc.tpr[0], roc.fpr[-1], roc.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(roc.fpr) >= 0) and np.all(np.diff(roc.tpr) >= 0)
    perfect = np.where(truth, 2.0, 1.0)
    assert roc_against(perfect, truth).auc == 1.0 and roc_against(-perfect + 3.0, truth).auc == 0.0
    assert roc_against(np.ones(g.n_edges), truth).auc == 0.5
    scores = EdgeScores(g, g.edge_matrix(torch.tensor(perfect, dtype=torch.float32)), "manual")
    names = [e.name for e, t in zip(g.edges, truth) if t]
    assert roc_against(scores, names).auc == 1.0
    assert roc_against(scores, Circuit.from_edges(g, names, prune=False)).auc == 1.0
    with pytest.raises(ValueError, match="true_edges"):
        roc_against(scores, [])
    with pytest.raises(ValueError, match="true_edges"):
        roc_against(scores, ["input->nowhere"])
    with pytest.raises(ValueError, match="true_edges"):
        roc_against(perfect, truth[:-1])
    with pytest.raises(ValueError, match="graph"):
        roc_against(perfect, names)


@pytest.mark.numerics
def test_every_method_recovers_the_planted_circuit(planted, record_property) -> None:
    """AUC of each method against the planted edges (recorded); exact patching and ACDC recover them."""
    model, prompts, graph = planted.model, planted.prompts, planted.graph
    aucs = {}
    for method in ("eap", "eap-ig", "exact", "acdc"):
        scores = attribute(model, graph, prompts, method=method)
        aucs[method] = roc_against(scores, planted.true_edges).auc
    aucs["random"] = roc_against(EdgeScores.random(graph, 0), planted.true_edges).auc
    record_property("planted_auc", aucs)
    print("AUC against the planted edges:", {k: round(v, 3) for k, v in aucs.items()})
    assert aucs["exact"] >= 0.95 and aucs["acdc"] >= 0.95
    assert all(0.0 <= v <= 1.0 for v in aucs.values())
    # exact patching ranks the five planted edges strictly first; the position-only edges score 0 up to float
    # rounding (exactly 0 under some CPU kernels, ~1e-6 under others), far below the planted edges' 9-20
    exact = attribute(model, graph, prompts, method="exact")
    assert {e.name for e in exact.ranking()[:5]} == set(planted.true_edges)
    d = exact.as_dict()
    scale = max(abs(v) for v in d.values())
    assert all(abs(d[e]) <= 1e-5 * scale for e in planted.positional_edges)
    assert min(abs(d[e]) for e in planted.true_edges) > 0.1 * scale
    # zero ablation sees the positional edges (it destroys the position signal)
    zero = attribute(model, graph, prompts, method="exact", ablation="zero").as_dict()
    assert all(abs(zero[e]) > 1.0 for e in planted.positional_edges)


def test_scores_within_float_noise_of_zero_tie_in_rankings_and_roc() -> None:
    g = Graph(2, 2, attn_only=True)
    vals = torch.zeros(g.n_edges)
    vals[[0, 1, 2, 3]] = torch.tensor([3e-7, 1e-7, 2.0, -1.0])  # edges 0 and 1: noise next to 2.0
    scores = EdgeScores(g, g.edge_matrix(vals), "manual")
    assert scores.magnitudes()[0] == 0.0 and scores.magnitudes()[1] == 0.0 and scores.magnitudes()[3] == 1.0
    order = [g.edge_index[e.name] for e in scores.ranking()]
    assert order[:2] == [2, 3] and order[2:4] == [0, 1]  # the noise ties with the zeros, in graph order
    truth = np.zeros(g.n_edges, dtype=bool)
    truth[1] = True  # a true edge that only got noise ties with every other noise-level edge
    assert roc_against(scores, torch.tensor(truth)).auc == pytest.approx((g.n_edges - 3) / 2 / (g.n_edges - 1))


def test_batched_exact_reuses_the_clean_prefix_and_handles_identical_prompts() -> None:
    """Positions before the first one where the prompts differ are clean in every patched run; when the
    corrupted prompts equal the clean ones no patch changes anything and every exact score is 0."""
    m = _rand_model(n_layers=3)
    g = Graph.from_model(m)
    pairs = _rand_pairs(pos=8)
    late = PromptPairs(pairs.clean, pairs.clean.clone(), pairs.answers, "late")
    late.corrupted[:, 6] = (late.corrupted[:, 6] + 1) % 20  # only the last two positions can change
    loop = attribute(m, g, late, method="exact", batched=False)
    torch.testing.assert_close(attribute(m, g, late, method="exact").values, loop.values, atol=1e-5, rtol=0)
    assert loop.values.abs().max() > 1e-3
    same = PromptPairs(pairs.clean, pairs.clean.clone(), pairs.answers, "same")
    assert torch.equal(attribute(m, g, same, method="exact").values, torch.zeros(g.n_edges))
