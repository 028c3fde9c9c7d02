"""mechnb.interop.from_hf: Hugging Face GPT-2 and GPT-NeoX (Pythia) models as TinyTransformers.

Every model is built from a config with random weights (nothing is downloaded; the hub is switched
off): 2 layers, d_model 32, 4 heads, the vocabulary of mechnb's synthetic language (269 words).
The converted model must give the HF logits, and every method must run on it with its own ground
truth (faithfulness 1/0, EAP = the edge-mask gradient, batched exact = the per-edge loop, tuning
leaves what it may not train bit for bit, the graph of a parallel block).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers", reason="the hf extra (pip install mechnb[hf]) is not installed")

from mechnb.circuits import (  # noqa: E402
    Circuit, Graph, TuneConfig, attribute, circuit_tune, disagreement_task, faithfulness, finetune, parameter_mask,
    patched_forward,
)
from mechnb.circuits.ablation import ablation_reference  # noqa: E402
from mechnb.circuits.metric import logit_diff  # noqa: E402
from mechnb.interop import SUPPORTED, from_hf, word_level_tokenizer  # noqa: E402
from mechnb.models import TinyTransformer  # noqa: E402
from mechnb.tasks import PromptPairs, SyntheticLanguage  # noqa: E402

LANG = SyntheticLanguage()
V = LANG.vocab_size


def _randomise(hf: nn.Module, seed: int) -> nn.Module:
    """Weights far from the init (LayerNorm gains and biases too), so every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif "norm" in name or name.split(".")[-2].startswith("ln"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g) if name.endswith("weight")
                        else 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return hf.eval()


def gpt2(seed: int = 0) -> nn.Module:
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=V, n_positions=LANG.n_ctx,
                                  bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return _randomise(transformers.GPT2LMHeadModel(cfg), seed)


def neox(seed: int = 0, parallel: bool = True) -> nn.Module:
    cfg = transformers.GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=V, max_position_embeddings=LANG.n_ctx,
                                     rotary_pct=0.5, use_parallel_residual=parallel, bos_token_id=1, eos_token_id=1,
                                     pad_token_id=0)
    return _randomise(transformers.GPTNeoXForCausalLM(cfg), seed)


FAMILIES = {"gpt2": gpt2, "neox": neox}


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request: pytest.FixtureRequest) -> tuple[nn.Module, TinyTransformer]:
    hf = FAMILIES[request.param]()
    return hf, from_hf(hf)


@pytest.fixture(scope="module")
def prompts() -> PromptPairs:
    return LANG.agreement_prompts(6, seed=1)


# -- logits and layout ------------------------------------------------------------------
@pytest.mark.parametrize("family, kwargs", [("gpt2", {}), ("neox", {}), ("neox", {"parallel": False})])
def test_logits_equal_the_hugging_face_model(family: str, kwargs: dict) -> None:
    hf = FAMILIES[family](seed=3, **kwargs)
    model = from_hf(hf)
    tokens = torch.randint(0, V, (5, LANG.n_ctx), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = hf(tokens).logits, model(tokens)
    assert want.abs().max() > 1.0  # not a degenerate comparison
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # shorter prompts too (positions / rotary angles start at 0 for every length)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens[:, :7]), hf(tokens[:, :7]).logits, atol=1e-4, rtol=0)


def test_architecture_options_follow_the_family() -> None:
    g, n = from_hf(gpt2()), from_hf(neox())
    assert (g.act_fn, g.positional, g.parallel_attn_mlp, g.tied_unembed, g.unembed_bias) == (
        "gelu_new", "learned", False, True, False)
    assert (n.act_fn, n.positional, n.rotary_dim, n.parallel_attn_mlp, n.tied_unembed, n.unembed_bias) == (
        "gelu", "rotary", 4, True, False, False)
    # GPT-2's unembedding stays tied: W_U is a view of W_E, and the parameter count is HF's
    assert g.unembed.W_U.data_ptr() == g.embed.W_E.data_ptr()
    assert sum(p.numel() for p in g.parameters()) == sum(p.numel() for p in gpt2().parameters())
    assert sum(p.numel() for p in n.parameters()) == sum(p.numel() for p in neox().parameters())
    assert "hook_pos_embed" in g.hook_points() and "hook_pos_embed" not in n.hook_points()
    assert "blocks.1.attn.hook_rot_q" in n.hook_points() and "blocks.1.attn.hook_rot_q" not in g.hook_points()
    # the config rebuilds the architecture
    twin = TinyTransformer(**n.config())
    twin.load_state_dict(n.state_dict())
    toks = LANG.sample_batch(3, seed=0)
    with torch.no_grad():
        assert torch.equal(twin.eval()(toks), n(toks))


def test_unsupported_classes_are_named() -> None:
    class LlamaForCausalLM(nn.Module):
        pass

    with pytest.raises(TypeError, match=r"LlamaForCausalLM.*") as err:
        from_hf(LlamaForCausalLM())
    assert all(s in str(err.value) for s in SUPPORTED)
    with pytest.raises(TypeError, match="GPT2Model"):
        from_hf(transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10)))
    cfg = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10, scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        from_hf(transformers.GPT2LMHeadModel(cfg))


def test_hook_points_read_and_patch(pair: tuple[nn.Module, TinyTransformer]) -> None:
    hf, model = pair
    toks = LANG.sample_batch(4, seed=2)
    with torch.no_grad():
        out = hf(toks, output_hidden_states=True)
    logits, cache = model.run_with_cache(toks)
    # HF's hidden states are the residual stream before each block (the last one after ln_f)
    for layer in range(model.n_layers):
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_pre"], out.hidden_states[layer], atol=1e-5,
                                   rtol=0)
    assert cache["blocks.0.attn.hook_pattern"].shape == (4, 4, toks.shape[1], toks.shape[1])
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(4, 4, toks.shape[1]))
    # zeroing the last MLP's output by a hook = unembedding the residual stream without it
    zeroed = model.run_with_hooks(toks, fwd_hooks=[("blocks.1.hook_mlp_out", lambda x, h: torch.zeros_like(x))])
    want = model.unembed_resid(cache["blocks.1.hook_resid_post"] - cache["blocks.1.hook_mlp_out"])
    torch.testing.assert_close(zeroed, want, atol=1e-5, rtol=0)
    assert not torch.allclose(zeroed, logits, atol=1e-3)


# -- circuit graph ----------------------------------------------------------------------
def test_parallel_blocks_have_no_head_to_own_mlp_edges() -> None:
    g_seq, g_par = Graph.from_model(from_hf(gpt2())), Graph.from_model(from_hf(neox()))
    assert g_par.parallel and not g_seq.parallel
    for graph, own in ((g_seq, True), (g_par, False)):
        for layer in range(2):
            m = graph.reader_slot(f"m{layer}")
            for h in range(4):
                assert bool(graph.valid[graph.writer_index[f"a{layer}.h{h}"], m]) is own
            assert bool(graph.valid[graph.writer_index["input"], m])
        assert bool(graph.valid[graph.writer_index["a0.h0"], graph.reader_slot("m1")])
        assert not bool(graph.valid[graph.writer_index["m0"], graph.reader_slot("a0.h0", "q")])
    assert g_seq.n_edges - g_par.n_edges == 2 * 4
    assert Graph(**g_par.config()).n_edges == g_par.n_edges
    with pytest.raises(ValueError, match="parallel_attn_mlp"):
        g_seq.check_model(from_hf(neox()))


def test_every_edge_patched_gives_the_reference_run(pair: tuple[nn.Module, TinyTransformer],
                                                    prompts: PromptPairs) -> None:
    """With every edge ablated each reader sees the corrupted residual stream, so the logits are the
    corrupted run's: wrong if the graph had an edge a parallel MLP does not read (or missed one)."""
    _, model = pair
    graph = Graph.from_model(model)
    ref = ablation_reference(model, graph, prompts.clean, prompts.corrupted, "corrupted")
    with torch.no_grad():
        patched = patched_forward(model, graph, prompts.clean, ref, graph.valid.float())
        torch.testing.assert_close(patched, model(prompts.corrupted), atol=1e-4, rtol=0)
        torch.testing.assert_close(patched_forward(model, graph, prompts.clean, ref, torch.zeros_like(
            graph.valid, dtype=torch.float)), model(prompts.clean), atol=1e-5, rtol=0)


def test_attribution_methods_on_converted_models(pair: tuple[nn.Module, TinyTransformer],
                                                 prompts: PromptPairs) -> None:
    _, model = pair
    graph = Graph.from_model(model)
    eap = attribute(model, graph, prompts, method="eap")
    # EAP is the gradient of the metric with respect to the edge masks at 0
    ref = ablation_reference(model, graph, prompts.clean, prompts.corrupted, "corrupted")
    alpha = torch.zeros(graph.n_writers, graph.n_readers, requires_grad=True)
    logit_diff(patched_forward(model, graph, prompts.clean, ref, alpha), prompts).backward()
    torch.testing.assert_close(eap.scores, alpha.grad * graph.valid, atol=1e-5, rtol=1e-4)
    # batched exact patching = one patched forward pass per edge
    exact = attribute(model, graph, prompts, method="exact")
    loop = attribute(model, graph, prompts, method="exact", batched=False)
    torch.testing.assert_close(exact.scores, loop.scores, atol=1e-5, rtol=1e-4)
    assert exact.scores.abs().max() > 1e-3
    ig = attribute(model, graph, prompts, method="eap-ig", ig_steps=3)
    assert ig.scores.shape == (graph.n_writers, graph.n_readers) and torch.isfinite(ig.scores).all()
    # eap-ig with one step at the clean end is EAP
    torch.testing.assert_close(attribute(model, graph, prompts, method="eap-ig", ig_steps=1).scores, eap.scores,
                               atol=1e-5, rtol=1e-4)


def test_faithfulness_on_converted_models(pair: tuple[nn.Module, TinyTransformer], prompts: PromptPairs) -> None:
    _, model = pair
    graph = Graph.from_model(model)
    assert faithfulness(model, Circuit.full(graph), prompts) == pytest.approx(1.0, abs=1e-5)
    assert faithfulness(model, Circuit.empty(graph), prompts) == pytest.approx(0.0, abs=1e-5)
    for ablation in ("zero", "mean"):
        assert faithfulness(model, Circuit.full(graph), prompts, ablation=ablation) == pytest.approx(1.0, abs=1e-5)


def test_parameter_mask_covers_every_parameter(pair: tuple[nn.Module, TinyTransformer]) -> None:
    _, model = pair
    masks = parameter_mask(model, Circuit.full(Graph.from_model(model)))
    assert set(masks) == {n for n, _ in model.named_parameters()}
    assert not masks["embed.W_E"].any() and masks["blocks.1.mlp.W_out"].all() and masks["blocks.0.attn.W_Q"].all()
    assert ("pos_embed.W_pos" in masks) is (model.positional == "learned")


def test_tuning_converted_models(pair: tuple[nn.Module, TinyTransformer]) -> None:
    _, model = pair
    task = disagreement_task(LANG, n_discovery=8, n_eval=16, n_heldout=20)
    cfg = TuneConfig(steps=3, lr=0.05, top_n=4, discover_every=1, log_every=3, batch_size=4, grad_clip=None)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = {"outside": 0, "inside": 0}

    prev = {n: p.clone() for n, p in before.items()}

    def callback(step: int, m: TinyTransformer, masks: dict[str, torch.Tensor] | None) -> None:
        assert masks is not None  # this step's mask: nothing outside it moved during the step
        for n, p in m.named_parameters():
            assert torch.equal(p.detach()[~masks[n]], prev[n][~masks[n]]), n
            seen["outside"] += int((~masks[n]).sum())
            seen["inside"] += int((p.detach()[masks[n]] != prev[n][masks[n]]).sum())
            prev[n] = p.detach().clone()

    res = circuit_tune(copy.deepcopy(model), task, cfg, progress=False, callback=callback)
    assert seen["outside"] > 0 and seen["inside"] > 0 and len(res.losses) == 3
    full = finetune(model, task, "full", cfg, progress=False)
    assert not torch.equal(full.model.embed.W_E, model.embed.W_E)
    if model.tied_unembed:  # the tie survives training
        assert full.model.unembed.W_U.data_ptr() == full.model.embed.W_E.data_ptr()
    for n, p in model.named_parameters():  # the original is untouched
        assert torch.equal(p, before[n])


def test_gw_representations_and_llc_on_converted_models(pair: tuple[nn.Module, TinyTransformer]) -> None:
    from mechnb.degeneracy import estimate_llc
    from mechnb.gw import layer_representations

    _, model = pair
    toks = LANG.sample_batch(8, seed=4)
    reps = layer_representations(model, toks, position=-1)
    _, cache = model.run_with_cache(toks)
    for name, r in reps.items():
        if name in cache:
            torch.testing.assert_close(r, cache[name][:, -1].reshape(len(toks), -1))
    assert "blocks.1.hook_resid_post" in reps
    # LLC of the next-token loss, restricted to one MLP: finite, and the model is left unchanged
    x, y = toks[:, :-1], toks[:, 1:]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

    res = estimate_llc(model, loss, (x, y), num_chains=2, num_draws=10, lr=1e-5, localization=100.0,
                       restrict="blocks.1.mlp.W_out", progress=False, warn=False)
    assert torch.isfinite(torch.as_tensor(res.mean))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


# -- prompts from text ------------------------------------------------------------------
def test_prompt_pairs_from_texts_match_mechnb_tokens() -> None:
    tok = word_level_tokenizer(LANG.tokenizer.vocab)
    want = LANG.agreement_prompts(4, seed=5)
    clean = [LANG.tokenizer.decode(r.tolist()) for r in want.clean]
    corr = [LANG.tokenizer.decode(r.tolist()) for r in want.corrupted]
    ans = [LANG.tokenizer.vocab[int(i)] for i in want.answers[:, 0]]
    wrong = [LANG.tokenizer.vocab[int(i)] for i in want.answers[:, 1]]
    got = PromptPairs.from_texts(tok, ["<bos> " + c for c in clean], ["<bos> " + c for c in corr], ans, wrong)
    assert torch.equal(got.clean, want.clean) and torch.equal(got.corrupted, want.corrupted)
    assert torch.equal(got.answers, want.answers) and len(got) == 4


def test_prompt_pairs_from_texts_errors() -> None:
    tok = word_level_tokenizer(LANG.tokenizer.vocab)
    with pytest.raises(ValueError, match=r"corrupted\[0\]: expected as many tokens as clean\[0\] \(3"):
        PromptPairs.from_texts(tok, ["the dog is"], ["the big dog is"], ["old"], ["happy"])
    with pytest.raises(ValueError, match=r"answer\[0\]: expected a single token, got 2 tokens"):
        PromptPairs.from_texts(tok, ["the dog"], ["the dogs"], ["is old"], ["are"])
    with pytest.raises(ValueError, match=r"clean\[1\]: expected 2 tokens like clean\[0\]"):
        PromptPairs.from_texts(tok, ["the dog", "the big dog"], ["the dogs", "the big dogs"], ["is", "is"],
                               ["are", "are"])
    with pytest.raises(ValueError, match=r"wrong: expected 1 entries"):
        PromptPairs.from_texts(tok, ["the dog"], ["the dogs"], ["is"], ["are", "are"])
    with pytest.raises(TypeError, match="tokenizer: expected a tokenizer with an encode"):
        PromptPairs.from_texts(object(), ["the dog"], ["the dogs"], ["is"], ["are"])
    with pytest.raises(TypeError, match=r"clean\[0\]: expected a string"):
        PromptPairs.from_texts(tok, [3], ["the dogs"], ["is"], ["are"])


def test_load_cached_never_downloads_and_ioi_texts(tmp_path, monkeypatch) -> None:
    from mechnb.interop import ioi_texts, load_cached

    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing to find, nothing fetched
    assert load_cached("gpt2") is None and load_cached("EleutherAI/pythia-70m") is None
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    texts = ioi_texts(5, seed=1)
    assert {k: len(v) for k, v in texts.items()} == {"clean": 5, "corrupted": 5, "answer": 5, "wrong": 5}
    for c, k, a, w in zip(texts["clean"], texts["corrupted"], texts["answer"], texts["wrong"]):
        assert c.startswith(f"When {a.strip()} and {w.strip()}") or c.startswith(f"When {w.strip()} and {a.strip()}")
        assert c.endswith(f"{w.strip()} gave a " + c.split(" gave a ")[1]) and k.split(", ")[1].startswith(a.strip())


def _plant_in_hf_cache(home, repo: str, model: nn.Module, tokenizer) -> None:
    """Write ``model`` and ``tokenizer`` where the hub cache keeps ``repo`` (``$HF_HOME/hub/models--…``)."""
    commit = "0" * 40
    root = home / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)


@pytest.mark.parametrize("repo", ["gpt2", "EleutherAI/pythia-70m"])
def test_full_mode_ioi_path_runs_on_a_model_found_in_the_local_cache(tmp_path, monkeypatch, repo) -> None:
    """Notebook 05's full-mode section on a random model planted in a temporary cache under the
    pretrained name (no pretrained weights are ever downloaded, so CI cannot run the real one)."""
    from mechnb.interop import ioi_texts, load_cached

    texts = ioi_texts(8, seed=0)
    words = sorted({w for key in texts for t in texts[key] for w in t.replace(",", " ,").split()})
    vocab = ["<pad>", "<bos>", *words]
    tok = word_level_tokenizer(vocab)
    # word-level ids: every IOI name is one token, clean and corrupted prompts have equal lengths
    cfg = dict(vocab_size=len(vocab), bos_token_id=1, eos_token_id=1, pad_token_id=0)
    if repo == "gpt2":
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=32,
                                                                  **cfg))
    else:
        hf = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=32, rotary_pct=0.25, **cfg))
    _randomise(hf, seed=3)
    _plant_in_hf_cache(tmp_path, repo, hf, tok)
    assert load_cached(repo, cache_dir=tmp_path / "empty") is None
    with pytest.raises(TypeError, match="cache_dir: expected a path or None"):
        load_cached(repo, cache_dir=3)
    found = load_cached(repo, cache_dir=tmp_path / "hub")
    assert found is not None, f"{repo} planted in {tmp_path} was not found"
    pretrained, pretrained_tok = found
    big = from_hf(pretrained)
    with torch.no_grad():
        ids = torch.tensor([pretrained_tok.encode(texts["clean"][0])])
        assert torch.allclose(big(ids), pretrained(ids).logits, atol=1e-4)
    ioi = PromptPairs.from_texts(pretrained_tok, task="ioi", **texts)
    scores = attribute(big, Graph.from_model(big), ioi, method="eap")
    exact = attribute(big, Graph.from_model(big), ioi, method="exact")
    assert torch.isfinite(scores.scores).all() and scores.top_n(10).edges  # the notebook prints these
    # the metric of the clean run is the logit difference of the answer over the wrong name
    assert abs(scores.metric_clean - exact.metric_clean) < 1e-5
