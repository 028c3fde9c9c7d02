"""Ground-truth tests for mechnb.circuits (EAP / EAP-IG / exact, circuits, circuit-tuning)."""

from __future__ import annotations

import copy
import types

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from mechnb.circuits import (  # noqa: E402
    Circuit,
    EdgeScores,
    Graph,
    LoRA,
    NodeRedundancy,
    TuneConfig,
    attribute,
    cache_writers,
    circuit_tune,
    debias_task,
    disagreement_task,
    faithfulness,
    faithfulness_curve,
    finetune,
    flip_verb,
    logit_diff,
    node_parameter_mask,
    node_redundancy,
    parameter_mask,
    patched_forward,
    prejudice_risk,
    trainable_fraction,
)
from mechnb.models import HookPoint, TinyTransformer  # noqa: E402
from mechnb.tasks import PromptPairs, SyntheticLanguage  # noqa: E402

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------
# Fixtures: small models with known structure
# --------------------------------------------------------------------------------------
def _rand_model(seed: int = 1, std: float = 0.3, **kw) -> TinyTransformer:
    """A random 2-layer model with weights large enough for non-trivial attention and GELU."""
    m = TinyTransformer(20, 32, 2, 4, 48, 8, init_seed=seed, **kw)
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


class _IdentityLN(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _linear_mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    post = self.hook_post(self.hook_pre(x @ self.W_in + self.b_in))  # identity instead of GELU
    return post @ self.W_out + self.b_out


def _linearize(m: TinyTransformer, freeze_patterns: bool) -> TinyTransformer:
    """Remove every LayerNorm and the GELU; optionally freeze attention patterns (W_Q = W_K = 0)."""
    for block in m.blocks:
        block.ln1 = _IdentityLN()
        block.ln2 = _IdentityLN()
        block.mlp.forward = types.MethodType(_linear_mlp_forward, block.mlp)
        if freeze_patterns:
            with torch.no_grad():
                block.attn.W_Q.zero_()
                block.attn.W_K.zero_()
    m.ln_final = _IdentityLN()
    for name, mod in m.named_modules():
        if isinstance(mod, HookPoint):
            mod.name = name
    return m


V, P = 16, 8


def _one_head_model(head: int = 1, seed: int = 0) -> TinyTransformer:
    """Random 2-layer model in which only head a0.h{head} copies the token at position 1 to the output."""
    m = TinyTransformer(V, 32, 2, 4, 32, P, d_head=16, init_seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.split(".")[-1].startswith("W_"):
                p.normal_(0, 0.2, generator=gen)
        m.embed.W_E.zero_()
        m.embed.W_E[:, :V] = 3 * torch.eye(V)  # token subspace
        m.pos_embed.W_pos.zero_()
        m.pos_embed.W_pos[:, V: V + P] = 3 * torch.eye(P)  # position subspace
        a = m.blocks[0].attn
        for w in (a.W_Q, a.W_K, a.W_V, a.W_O, a.b_Q):
            w[head].zero_()
        a.b_Q[head, 0] = 10.0  # every query asks ...
        a.W_K[head, V + 1, 0] = 1.0  # ... "is this key at position 1?"
        a.W_V[head, :V, :V] = torch.eye(V)  # value: the token identity
        a.W_O[head, :V, :V] = 4 * torch.eye(V)  # written back to the token subspace
        m.unembed.W_U.zero_()
        m.unembed.W_U[:V] = 3 * torch.eye(V)
    return m.eval()


def _copy_pairs(n: int = 32, seed: int = 1) -> PromptPairs:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, V, (n, 6), generator=g)
    A = clean[:, 1].clone()
    B = (A + 1 + torch.randint(0, V - 1, (n,), generator=g)) % V
    corr = clean.clone()
    corr[:, 1] = B
    return PromptPairs(clean, corr, torch.stack([A, B], 1), "copy")


@pytest.fixture(scope="module")
def lang() -> SyntheticLanguage:
    return SyntheticLanguage()


@pytest.fixture(scope="module")
def small_lm(lang: SyntheticLanguage) -> TinyTransformer:
    """A quickly trained 1-layer LM (a few hundred steps) - enough for agreement to be above chance."""
    from mechnb.train import TrainConfig, cross_entropy_loss, train

    m = TinyTransformer(lang.vocab_size, 32, 1, 2, 64, lang.n_ctx, init_seed=0)
    pad = lang.tokenizer.pad_id

    def loss_fn(model: nn.Module, toks: torch.Tensor) -> torch.Tensor:
        tgt = toks[:, 1:].masked_fill(toks[:, 1:] == pad, -100)
        return cross_entropy_loss(model(toks[:, :-1]), tgt)

    train(m, lambda s, g: lang.sample_batch(32, seed=50_000 + s), loss_fn,
          TrainConfig(steps=150, lr=3e-3, seed=0), progress=False)
    return m.eval()


# --------------------------------------------------------------------------------------
# Graph
# --------------------------------------------------------------------------------------
def test_graph_counts_and_names() -> None:
    g = Graph.from_model(TinyTransformer(10, 16, 2, 4, 32, 8))
    # writers: input + 4 heads + mlp per layer; readers: 12 qkv + mlp per layer + logits
    assert g.n_writers == 11 and g.n_readers == 27 and g.n_nodes == 12
    # layer 0 qkv: 1 writer x 12; m0: 5; layer 1 qkv: 6 x 12; m1: 10; logits: 11
    assert g.n_edges == 12 + 5 + 72 + 10 + 11 == 110
    names = {e.name for e in g.edges}
    assert "input->a0.h0<q>" in names and "a0.h3->m0" in names and "m0->a1.h2<k>" in names
    assert "a1.h0->a1.h1<q>" not in names and "m1->m1" not in names  # no same-layer head->head, no loops
    assert g.nodes[0] == "input" and g.nodes[-1] == "logits"
    ga = Graph.from_model(TinyTransformer(10, 16, 2, 2, 32, 8, attn_only=True))
    assert ga.n_writers == 5 and ga.n_readers == 13 and ga.n_edges == 6 + 3 * 6 + 5
    with pytest.raises(TypeError, match="model"):
        Graph.from_model(nn.Linear(2, 2))  # type: ignore[arg-type]


def test_edge_matrix_roundtrip() -> None:
    g = Graph(2, 3)
    v = torch.arange(g.n_edges, dtype=torch.float32)
    assert torch.equal(g.edge_vector(g.edge_matrix(v)), v)
    with pytest.raises(ValueError, match="values"):
        g.edge_matrix(torch.zeros(3))


# --------------------------------------------------------------------------------------
# Attribution ground truth
# --------------------------------------------------------------------------------------
def test_eap_equals_gradient_wrt_edge_masks() -> None:
    m = _rand_model().double()
    g = Graph.from_model(m)
    pairs = _rand_pairs()
    scores = attribute(m, g, pairs)
    corr = cache_writers(m, g, pairs.corrupted)
    alpha = torch.zeros(g.n_writers, g.n_readers, dtype=torch.float64, requires_grad=True)
    value = logit_diff(patched_forward(m, g, pairs.clean, corr.out, alpha), pairs)
    (grad,) = torch.autograd.grad(value, alpha)
    assert float(value.detach()) == pytest.approx(scores.metric_clean, abs=1e-9)  # alpha = 0 is the clean model
    assert scores.values.abs().max() > 0.1  # non-trivial
    torch.testing.assert_close(g.edge_vector(grad).float(), scores.values, atol=1e-5, rtol=0)
    # EAP-IG with one step is EAP (right Riemann sum ends at the clean point)
    ig1 = attribute(m, g, pairs, method="eap-ig", ig_steps=1)
    torch.testing.assert_close(ig1.values, scores.values, atol=1e-5, rtol=0)


def test_patching_all_edges_reproduces_corrupted_run() -> None:
    m = _rand_model()
    g = Graph.from_model(m)
    pairs = _rand_pairs()
    corr = cache_writers(m, g, pairs.corrupted)
    with torch.no_grad():
        all_patched = patched_forward(m, g, pairs.clean, corr.out, g.valid.float())
        none = patched_forward(m, g, pairs.clean, corr.out, torch.zeros(g.n_writers, g.n_readers))
        torch.testing.assert_close(all_patched, m(pairs.corrupted), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(none, m(pairs.clean), atol=0, rtol=0)


@pytest.mark.parametrize("freeze", [True, False])
def test_eap_equals_exact_in_linear_model(freeze: bool) -> None:
    """No LayerNorm, no GELU: the metric is linear in every edge whose effect avoids queries/keys.

    With frozen (uniform) attention patterns every edge is linear, so EAP == exact for all 110
    edges. With live patterns, patching an edge that reaches a later query/key changes an
    attention pattern (quadratic in the residual), so only edges into the last layer's values,
    the last MLP and the logits are exactly linear - and those must agree.
    """
    m = _linearize(_rand_model(), freeze).double()
    g = Graph.from_model(m)
    pairs = _rand_pairs()
    eap = attribute(m, g, pairs).values.double()
    exact = attribute(m, g, pairs, method="exact").values.double()
    assert exact.abs().max() > 1.0
    if freeze:
        torch.testing.assert_close(eap, exact, atol=1e-5, rtol=0)
    else:
        linear = torch.tensor([e.dst in ("logits", "m1") or (e.dst.startswith("a1.") and e.letter == "v")
                               for e in g.edges])
        torch.testing.assert_close(eap[linear], exact[linear], atol=1e-5, rtol=0)
        assert (eap[~linear] - exact[~linear]).abs().max() > 1e-2  # the nonlinear edges do differ


@pytest.mark.parametrize("method", ["eap", "eap-ig", "exact"])
def test_one_head_model_ranks_its_head_first(method: str) -> None:
    m = _one_head_model(head=1)
    g = Graph.from_model(m)
    pairs = _copy_pairs()
    scores = attribute(m, g, pairs, method=method)
    assert scores.metric_clean > 5 and scores.metric_corrupted < -5
    top2 = {e.name for e in scores.ranking()[:2]}
    assert top2 == {"input->a0.h1<v>", "a0.h1->logits"}
    circuit = scores.top_n(2)
    assert circuit.nodes == ["input", "a0.h1", "logits"]
    assert faithfulness(m, circuit, pairs) > 0.9


def test_attribute_rejects_bad_inputs() -> None:
    m = _rand_model()
    g = Graph.from_model(m)
    pairs = _rand_pairs()
    with pytest.raises(ValueError, match="method"):
        attribute(m, g, pairs, method="path-patching")
    with pytest.raises(ValueError, match="ig_steps"):
        attribute(m, g, pairs, method="eap-ig", ig_steps=0)
    with pytest.raises(ValueError, match="corrupted"):
        attribute(m, g, pairs.clean, pairs.corrupted[:, :4])
    with pytest.raises(ValueError, match="corrupted"):
        attribute(m, g, pairs.clean, None, metric=lambda lg, b: lg[:, -1, 0].mean())
    with pytest.raises(TypeError, match="metric"):
        attribute(m, g, pairs, metric="logit_diff")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model"):
        attribute(TinyTransformer(20, 32, 1, 4, 48, 8), g, pairs)
    with pytest.raises(TypeError, match="clean"):
        attribute(m, g, pairs.clean.float(), pairs.corrupted)


# --------------------------------------------------------------------------------------
# Circuits and faithfulness
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ablation", ["corrupted", "mean"])
def test_faithfulness_is_one_for_all_edges_and_zero_for_none(ablation: str) -> None:
    m = _rand_model()
    g = Graph.from_model(m)
    pairs = _rand_pairs()
    assert faithfulness(m, Circuit.full(g), pairs, ablation=ablation) == pytest.approx(1.0, abs=1e-6)
    assert faithfulness(m, Circuit.empty(g), pairs, ablation=ablation) == pytest.approx(0.0, abs=1e-6)
    scores = attribute(m, g, pairs)
    curve = faithfulness_curve(m, scores, pairs, sizes=[0, 10, g.n_edges], ablation=ablation)
    assert curve.faithfulness[0] == pytest.approx(0.0, abs=1e-6)
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-6)
    assert curve.n_edges[-1] == g.n_edges and curve.n_edges[1] <= 10
    with pytest.raises(ValueError, match="ablation"):
        faithfulness(m, Circuit.full(g), pairs, ablation="resample")


def test_top_n_prunes_dangling_edges_and_fill() -> None:
    g = Graph(2, 2, attn_only=True)
    vals = torch.zeros(g.n_edges)
    idx = g.edge_index
    vals[idx["a0.h0->a1.h1<q>"]] = 10.0  # a dangling edge: a0.h0 has no input, a1.h1 no output
    vals[idx["input->a0.h1<v>"]] = 5.0
    vals[idx["a0.h1->logits"]] = -4.0
    vals[idx["input->logits"]] = 0.5
    scores = EdgeScores(g, g.edge_matrix(vals), "manual")
    assert [e.name for e in scores.ranking()[:3]] == ["a0.h0->a1.h1<q>", "input->a0.h1<v>", "a0.h1->logits"]
    c = scores.top_n(3)
    assert {e.name for e in c.edges} == {"input->a0.h1<v>", "a0.h1->logits"}  # the dangling one is gone
    assert c.nodes == ["input", "a0.h1", "logits"] and c.n_edges == 2
    assert scores.top_n(1).n_edges == 0  # only the dangling edge -> nothing left
    assert scores.top_n(1, fill=True).n_edges >= 1
    assert scores.top_n(3, prune=False).n_edges == 3
    assert {e.name for e in scores.threshold(3.0).edges} == {"input->a0.h1<v>", "a0.h1->logits"}
    c2 = Circuit.from_edges(g, ["input->a0.h1<v>", "a0.h1->logits"])
    assert c2.overlap(c) == 1.0 and c2.overlap(Circuit.empty(g)) == 0.0
    with pytest.raises(ValueError, match="edges"):
        Circuit.from_edges(g, ["input->nowhere"])
    with pytest.raises(ValueError, match="n"):
        scores.top_n(-1)
    with pytest.raises(ValueError, match="tau"):
        scores.threshold(float("nan"))


def test_parameter_mask_owns_head_slices() -> None:
    m = TinyTransformer(20, 32, 2, 4, 48, 8)
    g = Graph.from_model(m)
    c = Circuit.from_edges(g, ["input->a0.h1<v>", "a0.h1->m0", "m0->logits", "input->m0"])
    mask = parameter_mask(m, c)
    assert set(mask) == {n for n, _ in m.named_parameters()}
    assert mask["blocks.0.attn.W_V"][1].all() and not mask["blocks.0.attn.W_V"][[0, 2, 3]].any()
    assert mask["blocks.0.attn.b_V"][1].all() and not mask["blocks.0.attn.W_Q"].any()
    assert mask["blocks.0.attn.W_O"][1].all() and not mask["blocks.0.attn.W_O"][0].any()
    assert mask["blocks.0.mlp.W_in"].all() and mask["blocks.0.mlp.W_out"].all() and mask["blocks.0.ln2.w"].all()
    assert not mask["blocks.1.mlp.W_in"].any() and not mask["embed.W_E"].any() and not mask["blocks.0.attn.b_O"].any()
    expected = (32 * 8 + 8) + 8 * 32 + (32 * 48 + 48 + 64) + (48 * 32 + 32)
    assert sum(int(v.sum()) for v in mask.values()) == expected
    full = node_parameter_mask(m)
    assert 0 < trainable_fraction(m, mask) < trainable_fraction(m, full) < 1
    with pytest.raises(TypeError, match="circuit"):
        parameter_mask(m, "a0.h1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------
def test_disagreement_data_flips_the_verb(lang: SyntheticLanguage) -> None:
    assert flip_verb("the key near the cabinets is old .", lang) == "the key near the cabinets are old ."
    assert flip_verb("the dogs like the cup .", lang) == "the dogs likes the cup ."
    task = disagreement_task(lang, n_heldout=20, verb_weight=3.0)
    batch = task.sample(0, torch.Generator().manual_seed(0), 16)
    sing = {s for s, _ in lang.verbs}
    plur = {p for _, p in lang.verbs}
    subjects = dict(lang._subjects)  # singular -> plural
    plurals = set(subjects.values())
    for row, w in zip(batch.tokens, batch.weights):
        words = lang.tokenizer.decode(row).split()
        verb = next(x for x in words if x in sing | plur)
        subject_plural = words[1] in plurals or words[2] in plurals  # "the [ADJ] SUBJ"
        assert (verb in plur) != subject_plural  # the verb disagrees with the subject
        assert w.max() == 3.0  # verb target up-weighted
    with pytest.raises(ValueError, match="sentence"):
        flip_verb("john saw the dog .", lang)


class _FixedPronounModel(nn.Module):
    """Predicts P(he) = p_he * (P(he) + P(she)) at every position."""

    def __init__(self, lang: SyntheticLanguage, p_he: float) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.logits = torch.zeros(lang.vocab_size)
        self.logits[lang.tokenizer["he"]] = float(np.log(p_he))
        self.logits[lang.tokenizer["she"]] = float(np.log(1 - p_he))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*tokens.shape, -1)


def test_prejudice_risk_definition(lang: SyntheticLanguage) -> None:
    assert prejudice_risk(_FixedPronounModel(lang, 0.5), lang)["prejudice_risk"] == pytest.approx(0.0, abs=1e-6)
    r = prejudice_risk(_FixedPronounModel(lang, 0.75), lang)
    assert r["prejudice_risk"] == pytest.approx(0.5, abs=1e-5)  # |2 * 0.75 - 1|
    # half the occupations are male-stereotyped: P(stereotype) averages 0.75 and 0.25
    assert r["stereotype_gap"] == pytest.approx(0.0, abs=1e-5)


def test_debias_task_data_is_balanced(lang: SyntheticLanguage) -> None:
    task = debias_task(lang, n_heldout=50, occupation_only=True)
    batch = task.sample(0, torch.Generator().manual_seed(0), 400)
    he, she = lang.tokenizer["he"], lang.tokenizer["she"]
    fem = [o for o, s in lang.occupations.items() if s == "f"]
    n_she_fem = n_fem = 0
    for row in batch.tokens:
        words = lang.tokenizer.decode(row).split()
        assert words[1] in lang.occupations
        if words[1] in fem:
            n_fem += 1
            n_she_fem += int((row == she).any())
        assert int((row == he).any()) + int((row == she).any()) == 1
    assert abs(n_she_fem / n_fem - 0.5) < 0.12  # the planted bias (0.85) is gone
    assert task.heldout_exclude.any() and not task.higher_is_better


# --------------------------------------------------------------------------------------
# Circuit-tuning
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_circuit_tune_leaves_outside_parameters_bit_identical(
    small_lm: TinyTransformer, lang: SyntheticLanguage, optimizer: str
) -> None:
    task = disagreement_task(lang, n_discovery=16, n_eval=32, n_heldout=40)
    cfg = TuneConfig(steps=6, lr=0.05, optimizer=optimizer, momentum=0.9, weight_decay=0.1, top_n=4,
                     discover_every=2, log_every=3, batch_size=8, grad_clip=None)
    prev = {n: p.detach().clone() for n, p in small_lm.named_parameters()}
    checked = {"outside": 0, "moved_inside": 0}

    def callback(step: int, model: TinyTransformer, masks: dict[str, torch.Tensor] | None) -> None:
        assert masks is not None
        for n, p in model.named_parameters():
            m = masks[n]
            assert torch.equal(p.detach()[~m], prev[n][~m]), f"{n} moved outside the circuit at step {step}"
            checked["outside"] += int((~m).sum())
            checked["moved_inside"] += int((p.detach()[m] != prev[n][m]).sum())
            prev[n] = p.detach().clone()

    res = circuit_tune(small_lm, task, cfg, progress=False, callback=callback)
    assert checked["outside"] > 0 and checked["moved_inside"] > 0
    assert len(res.circuits) == 3 and all(r["n_edges"] >= 4 for r in res.log)
    assert 0 < res.log[-1]["trainable_fraction"] < 1
    # the original model is untouched (circuit_tune copies unless inplace)
    assert res.model is not small_lm and torch.equal(small_lm.embed.W_E, prev["embed.W_E"])


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_circuit_of_every_edge_equals_node_finetuning(
    small_lm: TinyTransformer, lang: SyntheticLanguage, optimizer: str
) -> None:
    task = disagreement_task(lang, n_discovery=8, n_eval=16, n_heldout=20)
    n_all = Graph.from_model(small_lm).n_edges
    cfg = TuneConfig(steps=5, lr=0.02, optimizer=optimizer, weight_decay=0.05, top_n=n_all, discover_every=2,
                     log_every=5, batch_size=8)
    a = circuit_tune(small_lm, task, cfg, progress=False)
    b = finetune(small_lm, task, "nodes", cfg, progress=False)
    assert a.log[-1]["n_edges"] == n_all
    assert a.log[-1]["trainable_fraction"] == pytest.approx(b.log[-1]["trainable_fraction"])
    for (n, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=0, msg=n)
    np.testing.assert_allclose(a.losses, b.losses, atol=1e-6)
    full = finetune(small_lm, task, "full", cfg, progress=False)
    assert not torch.equal(full.model.embed.W_E, a.model.embed.W_E)  # full FT also moves embeddings


def test_lora_starts_at_base_and_merges(small_lm: TinyTransformer, lang: SyntheticLanguage) -> None:
    lora = LoRA(small_lm, rank=2, alpha=4.0)
    toks = lang.sample_batch(4, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(lora(toks), small_lm(toks))
        for B in lora.B:
            B.normal_(0, 0.1)
        merged = lora.merged()
        torch.testing.assert_close(merged(toks), lora(toks), atol=1e-5, rtol=1e-5)
    assert len(lora.names) == 6 and lora.n_parameters() < 0.2 * sum(p.numel() for p in small_lm.parameters())
    task = disagreement_task(lang, n_discovery=8, n_eval=16, n_heldout=20)
    cfg = TuneConfig(steps=3, log_every=3, batch_size=4, lora_rank=2)
    res = finetune(small_lm, task, "lora", cfg, progress=False)
    assert res.log[-1]["trainable_fraction"] == pytest.approx(lora.n_parameters() / sum(
        p.numel() for p in small_lm.parameters()))
    assert not torch.equal(res.model.blocks[0].attn.W_Q, small_lm.blocks[0].attn.W_Q)
    assert torch.equal(res.model.embed.W_E, small_lm.embed.W_E)  # embeddings not adapted


def test_strategies_drive_the_shared_loop(small_lm: TinyTransformer, lang: SyntheticLanguage) -> None:
    from mechnb.circuits import CircuitTuning, FullTuning, LoRATuning, run_strategy

    task = disagreement_task(lang, n_discovery=8, n_eval=16, n_heldout=20)
    cfg = TuneConfig(steps=3, lr=0.02, log_every=3, batch_size=4, lora_rank=2, lora_lr=0.2, top_n=3)
    # a strategy run by hand is the baseline run by finetune, bit for bit
    model = copy.deepcopy(small_lm)
    by_hand = run_strategy(FullTuning(model, cfg), task, progress=False)
    baseline = finetune(small_lm, task, "full", cfg, progress=False)
    assert by_hand.losses == baseline.losses and by_hand.log == baseline.log
    for pa, pb in zip(model.parameters(), baseline.model.parameters()):
        assert torch.equal(pa, pb)
    # LoRA trains at lora_lr (recorded in the result) with the base frozen only during the run
    model = copy.deepcopy(small_lm)
    model.embed.W_E.requires_grad_(False)
    lora = LoRATuning(model, cfg)
    assert lora.optim.lr == 0.2 and lora.optim.optimizer == cfg.optim.optimizer
    res = run_strategy(lora, task, progress=False)
    assert res.config["lr"] == 0.2 and res.config["top_n"] == 3
    assert [p.requires_grad for p in model.parameters()] == [n != "embed.W_E" for n, _ in model.named_parameters()]
    assert all(p.grad is None for p in model.parameters())  # the frozen base collected no gradients
    # circuit-tuning re-discovers at step 0 and exposes the masks it trains under
    circuit = CircuitTuning(copy.deepcopy(small_lm), task, cfg)
    circuit.before_step(0, task.sample(0, torch.Generator().manual_seed(0), 4))
    assert circuit.circuit is not None and circuit.circuit.n_edges >= 3 and circuit.circuits[0][0] == 0
    assert circuit.trainable_fraction() == trainable_fraction(circuit.model, circuit.masks) > 0
    with pytest.raises(TypeError, match="strategy"):
        run_strategy("full", task)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config"):
        FullTuning(small_lm, {"steps": 3})  # type: ignore[arg-type]


def test_node_redundancy_empty_circuit_changes_nothing(small_lm: TinyTransformer, lang: SyntheticLanguage) -> None:
    task = disagreement_task(lang, n_discovery=8, n_eval=32, n_heldout=20)
    cfg = TuneConfig(steps=4, lr=0.05, top_n=0, discover_every=2, log_every=4, batch_size=8)
    nr = node_redundancy(small_lm, task, [0, 8], cfg, progress=False)
    assert nr.trainable_fraction[0] == 0.0 and nr.n_edges[0] == 0
    assert nr.final_metric[0] == pytest.approx(nr.base_metric)
    assert nr.n_edges[1] >= 8 and nr.trainable_fraction[1] > 0
    assert nr.general_loss[0] == pytest.approx(nr.base_general_loss)  # nothing trained, nothing lost
    synthetic = NodeRedundancy([1, 2, 4, 8], [0.2, 0.6, 0.95, 1.0], [1, 2, 4, 8], [1, 2, 3, 4], [.1, .2, .3, .4],
                               0.0, "acc", True)
    assert synthetic.saturation_point(0.1) == 4 and synthetic.saturation_point(0.0) == 8
    with pytest.raises(ValueError, match="sizes"):
        node_redundancy(small_lm, task, [], cfg, progress=False)


@pytest.mark.numerics
@pytest.mark.parametrize("decoupled", [True, False])
def test_entry_adam_is_torch_adam_bit_for_bit_and_a_reset_entry_starts_fresh(decoupled: bool) -> None:
    from mechnb.circuits import EntryAdam

    gen = torch.Generator().manual_seed(0)
    p1 = nn.Parameter(torch.randn(50, generator=gen))
    p2 = nn.Parameter(p1.detach().clone())
    ref_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    o1 = ref_cls([p1], lr=0.02, weight_decay=0.05)
    o2 = EntryAdam([p2], lr=0.02, weight_decay=0.05, decoupled=decoupled)
    grads = [torch.randn(50, generator=gen) * 10.0 ** torch.randint(-6, 2, (50,), generator=gen) for _ in range(8)]
    for g in grads:
        p1.grad, p2.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
        assert torch.equal(p1, p2)  # every entry trained at every step: torch's update to the last bit
    # zero the state of the first 10 entries (what circuit-tuning does to entries outside the circuit):
    # their next step is a fresh Adam step, lr * g / (|g| + eps), whatever the tensor's step count
    for v in o2.state[p2].values():
        v[:10] = 0
    g = torch.randn(50, generator=gen)
    before = p2.detach().clone()
    p2.grad = g.clone()
    o2.step()
    decay = (1 - 0.02 * 0.05) if decoupled else 1.0
    gg = g[:10] + (0.0 if decoupled else 0.05 * before[:10])
    fresh = before[:10] * decay - 0.02 * gg / (gg.abs() + 1e-8)
    torch.testing.assert_close(p2.detach()[:10], fresh, atol=1e-7, rtol=1e-6)


def test_entries_that_join_a_later_circuit_take_a_fresh_adam_step(
    small_lm: TinyTransformer, lang: SyntheticLanguage
) -> None:
    """With one step count per tensor, an entry joining at step t > 1 was bias-corrected as if it had t
    steps of history (~3x a fresh step for large t); per-entry counts give it Adam's first step."""
    task = disagreement_task(lang, n_discovery=16, n_eval=16, n_heldout=20)
    lr = 0.01
    cfg = TuneConfig(steps=9, lr=lr, optimizer="adamw", weight_decay=0.0, grad_clip=None, top_n=20,
                     top_n_schedule="linear", top_n_start=2, top_n_warmup=8, discover_every=4, log_every=9,
                     batch_size=8)
    prev_masks: dict[str, torch.Tensor] = {}
    prev = {n: p.detach().clone() for n, p in small_lm.named_parameters()}
    checked = {"joined": 0}

    def callback(step: int, model: TinyTransformer, masks: dict[str, torch.Tensor] | None) -> None:
        assert masks is not None
        for n, p in model.named_parameters():
            if step > 0 and n in prev_masks:
                joined = masks[n] & ~prev_masks[n]
                g = p.grad.detach()[joined]
                moved = (p.detach() - prev[n])[joined]
                live = g.abs() > 1e-5
                # a fresh Adam step: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps)
                torch.testing.assert_close(moved[live], -lr * g[live] / (g[live].abs() + 1e-8), atol=1e-7, rtol=1e-4)
                checked["joined"] += int(live.sum())
            prev[n] = p.detach().clone()
            prev_masks[n] = masks[n].clone()

    res = circuit_tune(small_lm, task, cfg, progress=False, callback=callback)
    assert [s for s, _ in res.circuits] == [0, 4, 8] and checked["joined"] > 100


@pytest.mark.parametrize("options", [
    {"score_ema": 0.7},
    {"top_n_schedule": "geometric", "top_n_start": 2, "top_n_warmup": 5},
    {"discover_on": "batch", "ablation": "mean", "discover_every": 1},
    {"selection": "random"},
], ids=["ema", "schedule", "batch-every-step", "random"])
def test_tuning_options_keep_freezing_bit_exact(small_lm: TinyTransformer, lang: SyntheticLanguage,
                                                options: dict) -> None:
    task = disagreement_task(lang, n_discovery=16, n_eval=16, n_heldout=20)
    base = dict(steps=6, lr=0.05, optimizer="adamw", weight_decay=0.1, top_n=6, discover_every=2, log_every=3,
                batch_size=8, grad_clip=None)
    cfg = TuneConfig(**{**base, **options})
    prev = {n: p.detach().clone() for n, p in small_lm.named_parameters()}
    checked = {"outside": 0, "moved_inside": 0}

    def callback(step: int, model: TinyTransformer, masks: dict[str, torch.Tensor] | None) -> None:
        assert masks is not None
        for n, p in model.named_parameters():
            m = masks[n]
            assert torch.equal(p.detach()[~m], prev[n][~m]), f"{n} moved outside the selection at step {step}"
            checked["outside"] += int((~m).sum())
            checked["moved_inside"] += int((p.detach()[m] != prev[n][m]).sum())
            prev[n] = p.detach().clone()

    res = circuit_tune(small_lm, task, cfg, progress=False, callback=callback)
    assert checked["outside"] > 0 and checked["moved_inside"] > 0
    assert res.mode == ("random" if options.get("selection") == "random" else "circuit")
    every = cfg.discover_every
    assert [s for s, _ in res.circuits] == list(range(0, cfg.steps, every))


def test_schedule_ema_batch_discovery_and_random_selection_do_what_they_say(
    small_lm: TinyTransformer, lang: SyntheticLanguage
) -> None:
    from mechnb.circuits import CircuitTuning, RandomSelectionTuning, discover_on_batch

    task = disagreement_task(lang, n_discovery=16, n_eval=16, n_heldout=20)
    # circuit-size schedules: linear and geometric from top_n_start to top_n over top_n_warmup steps
    lin = TuneConfig(top_n=20, top_n_schedule="linear", top_n_start=4, top_n_warmup=8)
    assert [lin.top_n_at(s) for s in (0, 2, 4, 8, 100)] == [4, 8, 12, 20, 20]
    geo = TuneConfig(top_n=16, top_n_schedule="geometric", top_n_start=1, top_n_warmup=4)
    assert [geo.top_n_at(s) for s in range(6)] == [1, 2, 4, 8, 16, 16]
    assert TuneConfig(top_n=7).top_n_at(0) == 7
    batch = task.sample(0, torch.Generator().manual_seed(0), 8)
    # smoothed scores: s_bar = beta * s_bar + (1 - beta) * s, the circuit chosen from s_bar
    cfg = TuneConfig(top_n=5, score_ema=0.6, discover_every=1)
    strat = CircuitTuning(copy.deepcopy(small_lm), task, cfg)
    noise = torch.Generator().manual_seed(1)
    for step in range(3):
        strat.before_step(step, batch)
        with torch.no_grad():  # move the model a little between discoveries
            for p in strat.model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=noise))
    raw = [torch.tensor(r) for r in strat.raw_scores]
    want = raw[0]
    for r in raw[1:]:
        want = 0.6 * want + 0.4 * r
    torch.testing.assert_close(torch.tensor(strat.scores[-1]), want, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(raw[0], raw[-1])  # the smoothing had something to smooth
    g = strat.graph
    smoothed = EdgeScores(g, g.edge_matrix(want), "eap")
    assert strat.circuit is not None and strat.circuit.edges == smoothed.top_n(5, fill=True).edges
    # discovery on the training batch: scores of -loss on the batch under a mean ablation
    circuit, scores = discover_on_batch(small_lm, task, batch, 5, ablation="mean")
    with torch.no_grad():
        assert scores.metric_clean == pytest.approx(-float(task.loss(small_lm(batch.tokens[:, :-1]), batch)), abs=1e-5)
    assert scores.ablation == "mean" and circuit.n_edges >= 5
    bcfg = TuneConfig(top_n=5, discover_on="batch", ablation="mean")
    bstrat = CircuitTuning(copy.deepcopy(small_lm), task, bcfg)
    bstrat.before_step(0, batch)
    assert bstrat.circuit is not None and bstrat.circuit.edges == circuit.edges
    # the random-parameter baseline: its trainable count is within one block of the circuit's
    rcfg = TuneConfig(top_n=8, selection="random", seed=3)
    rstrat = RandomSelectionTuning(copy.deepcopy(small_lm), task, rcfg)
    rstrat.before_step(0, batch)
    assert rstrat.circuit is not None
    owned = parameter_mask(rstrat.model, rstrat.circuit)
    n_circuit = sum(int(m.sum()) for m in owned.values())
    n_random = sum(int(m.sum()) for m in rstrat.masks.values())
    biggest = max(sum(dict(small_lm.named_parameters())[n][h].numel() if h is not None else
                      dict(small_lm.named_parameters())[n].numel() for n, h in b)
                  for b in rstrat._blocks)
    assert abs(n_random - n_circuit) <= biggest / 2 and n_random > 0
    assert any(not torch.equal(rstrat.masks[n], owned[n]) for n in owned)  # not the circuit's own parameters
    again = RandomSelectionTuning(copy.deepcopy(small_lm), task, rcfg)
    again.before_step(0, batch)
    assert all(torch.equal(again.masks[n], rstrat.masks[n]) for n in owned)  # seeded


def test_tuning_rejects_bad_inputs(small_lm: TinyTransformer, lang: SyntheticLanguage) -> None:
    task = disagreement_task(lang, n_discovery=8, n_eval=8, n_heldout=8)
    with pytest.raises(ValueError, match="optimizer"):
        TuneConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="method"):
        TuneConfig(method="exact")
    with pytest.raises(ValueError, match="lr"):
        TuneConfig(lr=float("inf"))
    with pytest.raises(ValueError, match="lora_lr"):
        TuneConfig(lora_lr=-1.0)
    with pytest.raises(ValueError, match="mode"):
        finetune(small_lm, task, "prefix")
    with pytest.raises(TypeError, match="task"):
        circuit_tune(small_lm, "disagreement")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config"):
        circuit_tune(small_lm, task, {"steps": 3})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Plots and widget
# --------------------------------------------------------------------------------------
def test_plots_return_labelled_figures() -> None:
    from matplotlib.figure import Figure

    from mechnb.circuits import NodeRedundancy as NR
    from mechnb.plots import circuits as cp

    m = _one_head_model()
    g = Graph.from_model(m)
    pairs = _copy_pairs(16)
    eap = attribute(m, g, pairs)
    exact = attribute(m, g, pairs, method="exact")
    fig = cp.graph_figure(g)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert set(g.nodes) <= texts and fig.axes[0].get_title()
    plt.close(fig)
    c = eap.top_n(2)
    fig = cp.graph_figure(g, c, eap)
    colored = [ln for ln in fig.axes[0].lines if ln.get_color() in ("C0", "C3")]
    assert len(colored) == c.n_edges  # one coloured line per circuit edge
    plt.close(fig)
    fig = cp.score_agreement({"EAP": eap}, exact)
    assert "Spearman" in fig.axes[0].get_title() and fig.axes[0].get_xlabel() and fig.axes[0].get_ylabel()
    plt.close(fig)
    curve = faithfulness_curve(m, eap, pairs, sizes=[0, 2, 10])
    fig = cp.faithfulness_figure({"EAP": curve}, mark=2)
    assert fig.axes[0].get_ylabel().startswith("faithfulness")
    plt.close(fig)
    fig = cp.faithfulness_figure({"EAP": curve}, x="fraction", show_area=True)
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == f"EAP (area {curve.area:.2f})"
    assert fig.axes[0].get_xlabel() == "fraction of edges kept"
    plt.close(fig)
    zero = faithfulness_curve(m, eap, pairs, sizes=[0, 2, 10], ablation="zero")
    fig = cp.faithfulness_panels({"corrupted": {"EAP": curve}, "zero": {"EAP": zero, "exact": zero}})
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "ablation: zero" and len(fig.axes[1].lines) >= 2
    plt.close(fig)
    from mechnb.circuits import roc_against
    roc = roc_against(exact, ["input->a0.h1<v>", "a0.h1->logits"])
    fig = cp.roc_figure({"exact": roc})
    assert "AUC" in fig.axes[0].get_legend().get_texts()[0].get_text() and "2 planted" in fig.axes[0].get_ylabel()
    plt.close(fig)
    with pytest.raises(ValueError, match="x"):
        cp.faithfulness_figure({"EAP": curve}, x="log")
    with pytest.raises(ValueError, match="rocs"):
        cp.roc_figure({})
    nr = NR([1, 2, 4, 8], [0.2, 0.6, 0.95, 1.0], [1, 2, 4, 8], [1, 2, 3, 4], [.1, .2, .3, .4], 0.0, "acc", True)
    fig = cp.node_redundancy_figure(nr)
    assert any("saturation" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    plt.close(fig)
    nr.general_loss, nr.base_general_loss = [2.0, 2.1, 2.2, 2.5], 1.9
    fig = cp.node_redundancy_figure(nr)
    assert any(ax.get_ylabel().startswith("held-out") for ax in fig.axes)
    plt.close(fig)
    fig = cp.circuits_side_by_side(g, [c, Circuit.full(g)], ["a", "b"])
    assert len(fig.axes) == 2 and isinstance(fig, Figure)
    plt.close(fig)
    fig = cp.circuit_evolution([0, 5], [3, 4], [2, 3], [1.0, 0.5], [1.0, 0.8])
    assert fig.axes[1].get_ylabel().startswith("IoU")
    plt.close(fig)
    with pytest.raises(ValueError, match="n_edges"):
        cp.circuit_evolution([0, 5], [3], [2, 3], [1.0, 0.5], [1.0, 0.8])
    with pytest.raises(ValueError, match="titles"):
        cp.circuits_side_by_side(g, [c], ["a", "b"])


def test_tuning_plots_and_table(small_lm: TinyTransformer, lang: SyntheticLanguage) -> None:
    from mechnb.circuits import circuit_history, comparison_table
    from mechnb.plots import circuits as cp

    task = disagreement_task(lang, n_discovery=8, n_eval=16, n_heldout=20)
    cfg = TuneConfig(steps=4, lr=0.05, top_n=3, discover_every=2, log_every=2, batch_size=8)
    res = {"disagreement": {"circuit": circuit_tune(small_lm, task, cfg, progress=False),
                            "full": finetune(small_lm, task, "full", cfg, progress=False)}}
    table = comparison_table(res)
    assert "disagree_acc" in table and "circuit" in table and len(table.splitlines()) == 4
    fig = cp.tuning_comparison(res)
    assert len(fig.axes) == 4 and fig.axes[0].get_ylabel() == "disagree_acc"
    assert fig.axes[2].get_xlabel() == "disagree_acc" and len(fig.axes[2].lines) == 2
    plt.close(fig)
    hist = circuit_history(res["disagreement"]["circuit"], Graph.from_model(small_lm))
    assert hist.steps == [0, 2] and hist.edge_overlap[0] == 1.0 and hist.n_edges[0] >= 3
    assert hist.circuits[0].edges == hist.scores[0].top_n(3, fill=True).edges  # scores behind each circuit
    with pytest.raises(ValueError, match="result"):
        circuit_history(res["disagreement"]["full"], Graph.from_model(small_lm))


def test_circuit_explorer_updates_on_controls() -> None:
    from mechnb.widgets.circuits import CircuitExplorer

    m = _one_head_model()
    pairs = _copy_pairs(16)
    other = _copy_pairs(16, seed=5)
    ex = CircuitExplorer(m, {"copy": pairs, "copy (other seed)": other}, initial_size=2)
    assert ex.circuit.n_edges >= 2 and "faithfulness" in ex.text.value
    f_small, fig0, text0 = ex.faithfulness, ex.figure, ex.text.value
    assert f_small > 0.9  # the planted head's two edges carry the task
    ex.size.value = ex.graph.n_edges
    assert ex.faithfulness == pytest.approx(1.0, abs=1e-6)
    assert ex.figure is not fig0 and ex.text.value != text0
    assert len(ex.output.outputs) == 1 and "Figure" in ex.output.outputs[0]["data"]["text/plain"]  # shown once
    ex.method.value = "eap-ig"
    assert ("copy", "eap-ig", "corrupted") in ex._scores and "EAP-IG" in ex.text.value
    ex.ablation_control.value = "mean-positional"
    assert ex.ablation == "mean-positional" and ("copy", "eap-ig", "mean-positional") in ex._scores
    assert "mean-positional ablation" in ex.text.value and "area under the faithfulness curve" in ex.text.value
    assert ex._curves[("copy", "eap-ig", "mean-positional")].ablation == "mean-positional"
    ex.task.value = "copy (other seed)"
    assert "copy (other seed)" in ex.text.value
    plt.close("all")
    with pytest.raises(ValueError, match="prompts"):
        CircuitExplorer(m, {})
    with pytest.raises(ValueError, match="methods"):
        CircuitExplorer(m, {"copy": pairs}, methods=("acdc",))
