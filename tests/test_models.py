"""Tests for mechnb.models: shapes, weight tying, hook semantics checked against a
from-scratch reference computation, causal masking, and input validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mechnb.models import MLP, TMS, ResidualMLP, TinyTransformer


# --------------------------------------------------------------------------------------
# TMS
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_features", "n_hidden", "n_hidden_layers"), [(5, 2, 0), (40, 10, 0), (5, 2, 2)])
def test_tms_shapes_and_forward_formula(n_features, n_hidden, n_hidden_layers):
    m = TMS(n_features, n_hidden, n_hidden_layers=n_hidden_layers)
    assert m.linear1.weight.shape == (n_hidden, n_features) and m.linear1.bias is None
    assert m.linear2.weight.shape == (n_features, n_hidden) and m.linear2.bias.shape == (n_features,)
    assert len(m.hidden_layers) == n_hidden_layers
    x = torch.rand(7, n_features)
    y = m(x)
    assert y.shape == (7, n_features)
    W = m.linear1.weight
    with torch.no_grad():
        m.linear2.bias.normal_()
    expected = F.relu(x @ W.T @ W + m.linear2.bias)  # identity hidden layers change nothing at init
    torch.testing.assert_close(m(x), expected)
    assert (m(x) >= 0).all()


def test_tms_tied_weights_share_storage_and_stay_tied_after_a_step():
    m = TMS(5, 2)
    assert torch.equal(m.linear2.weight, m.linear1.weight.T)
    assert m.linear2.weight.data_ptr() == m.linear1.weight.data_ptr()  # a view, not a copy
    # state_dict holds the shared matrix once
    assert set(m.state_dict()) == {"linear1.weight", "linear2.bias"}
    assert sum(p.numel() for p in m.parameters()) == 5 * 2 + 5
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    before = m.linear1.weight.detach().clone()
    x = torch.rand(16, 5)
    loss = ((m(x) - x) ** 2).mean()
    loss.backward()
    # the gradient of the shared matrix collects both uses (encoder and decoder)
    assert m.linear1.weight.grad is not None and m.linear1.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(m.linear1.weight, before)
    assert torch.equal(m.linear2.weight, m.linear1.weight.T)
    # loading a state_dict keeps the tie
    m2 = TMS(5, 2)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.linear2.weight, m.linear1.weight.T)
    assert m2.linear2.weight.data_ptr() == m2.linear1.weight.data_ptr()


def test_tms_untied_weights_are_independent():
    m = TMS(5, 2, tied_weights=False)
    assert set(m.state_dict()) == {"linear1.weight", "linear2.weight", "linear2.bias"}
    assert m.linear2.weight.data_ptr() != m.linear1.weight.data_ptr()
    assert torch.equal(m.linear2.bias, torch.zeros(5))


def test_tms_hidden_layers_are_identity_at_init():
    m = TMS(6, 3, n_hidden_layers=2)
    for layer in m.hidden_layers:
        assert torch.equal(layer.weight, torch.eye(3)) and layer.bias is None
    assert set(m.state_dict()) == {"linear1.weight", "hidden_layers.0.weight", "hidden_layers.1.weight",
                                   "linear2.bias"}
    plain = TMS(6, 3)
    plain.load_state_dict({"linear1.weight": m.linear1.weight, "linear2.bias": m.linear2.bias})
    x = torch.rand(4, 6)
    torch.testing.assert_close(m(x), plain(x))


@pytest.mark.parametrize(
    ("x", "exc", "needle"),
    [(torch.rand(3, 4), ValueError, r"x: expected shape \(\*, 5\)"), (torch.rand(5), ValueError, "2-D"),
     ([[0.0] * 5], TypeError, "torch.Tensor")],
)
def test_tms_bad_inputs(x, exc, needle):
    with pytest.raises(exc, match=needle):
        TMS(5, 2)(x)


@pytest.mark.parametrize(
    ("args", "exc", "needle"),
    [((0, 2), ValueError, "n_features"), ((5, 2.0), TypeError, "n_hidden"), ((5, 2, -1), ValueError,
                                                                              "n_hidden_layers")],
)
def test_tms_bad_config(args, exc, needle):
    with pytest.raises(exc, match=needle):
        TMS(*args)


# --------------------------------------------------------------------------------------
# ResidualMLP
# --------------------------------------------------------------------------------------
def test_residual_mlp_structure_and_forward():
    m = ResidualMLP(n_features=20, d_embed=30, d_mlp=8, n_layers=2)
    assert m.W_E.shape == (20, 30)
    torch.testing.assert_close(m.W_E.norm(dim=1), torch.ones(20))
    assert "W_E" not in dict(m.named_parameters())  # fixed, not trained
    assert "W_E" in m.state_dict()
    assert all(p.ndim == 2 for p in m.parameters())  # no biases anywhere
    names = {n for n, _ in m.named_parameters()}
    assert names == {f"layers.{i}.{k}.weight" for i in range(2) for k in ("mlp_in", "mlp_out")}
    assert m.layers[0].mlp_in.weight.shape == (8, 30) and m.layers[0].mlp_out.weight.shape == (30, 8)
    x = torch.rand(5, 20) * 2 - 1
    # reference forward pass
    resid = x @ m.W_E
    for blk in m.layers:
        resid = resid + F.relu(resid @ blk.mlp_in.weight.T) @ blk.mlp_out.weight.T
    torch.testing.assert_close(m(x), resid @ m.W_E.T)
    # with the MLPs switched off the model is the embed/unembed round trip W_E W_E^T
    with torch.no_grad():
        for blk in m.layers:
            blk.mlp_out.weight.zero_()
    torch.testing.assert_close(m(x), x @ m.W_E @ m.W_E.T)


def test_residual_mlp_embedding_is_seeded():
    a = ResidualMLP(10, 12, 4, 1, embed_seed=3)
    b = ResidualMLP(10, 12, 4, 1, embed_seed=3)
    c = ResidualMLP(10, 12, 4, 1, embed_seed=4)
    assert torch.equal(a.W_E, b.W_E) and not torch.equal(a.W_E, c.W_E)


def test_residual_mlp_label():
    x = torch.tensor([[-1.0, -0.5, 0.0, 0.25, 1.0]])
    torch.testing.assert_close(ResidualMLP.label(x), torch.tensor([[-1.0, -0.5, 0.0, 0.5, 2.0]]))


def test_residual_mlp_bad_inputs():
    m = ResidualMLP(10, 12, 4, 1)
    with pytest.raises(ValueError, match="n_features"):
        m(torch.rand(3, 11))
    with pytest.raises(ValueError, match="n_layers"):
        ResidualMLP(10, 12, 4, 0)


# --------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "gelu", "linear"])
def test_mlp_return_activations(activation):
    sizes = [6, 9, 7, 4]
    m = MLP(sizes, activation=activation)
    x = torch.randn(11, 6)
    out, acts = m(x, return_activations=True)
    assert out.shape == (11, 4) and len(acts) == 3
    assert [a.shape for a in acts] == [(11, s) for s in sizes[1:]]
    assert acts[-1] is out
    torch.testing.assert_close(m(x), out)
    act = {"relu": F.relu, "gelu": F.gelu, "linear": lambda t: t}[activation]
    h = x
    for i, layer in enumerate(m.layers):
        h = layer(h)
        if i < len(m.layers) - 1:
            h = act(h)
        torch.testing.assert_close(acts[i], h)
    if activation == "relu":
        assert all((a >= 0).all() for a in acts[:-1])
        assert (out < 0).any()  # no activation after the last layer


def test_mlp_linear_without_bias_is_a_linear_map():
    m = MLP([5, 8, 3], activation="linear", bias=False)
    assert all(layer.bias is None for layer in m.layers)
    x, y = torch.randn(4, 5), torch.randn(4, 5)
    torch.testing.assert_close(m(2 * x - 3 * y), 2 * m(x) - 3 * m(y))


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [(dict(sizes=[5]), ValueError, "sizes"), (dict(sizes="55"), ValueError, "sizes"),
     (dict(sizes=[5, 0, 2]), ValueError, r"sizes\[1\]"), (dict(sizes=[5, 3], activation="tanh"), ValueError,
                                                          "activation")],
)
def test_mlp_bad_config(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        MLP(**kwargs)


def test_mlp_bad_input_shape():
    with pytest.raises(ValueError, match="in_features"):
        MLP([5, 3])(torch.rand(2, 4))


# --------------------------------------------------------------------------------------
# TinyTransformer
# --------------------------------------------------------------------------------------
V, D, L, H, DM, CTX = 50, 16, 2, 4, 32, 8


@pytest.fixture
def tt() -> TinyTransformer:
    m = TinyTransformer(V, D, L, H, DM, CTX, init_seed=0)
    # non-trivial biases and LayerNorm parameters, so the reference checks below test them too
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for name, p in m.named_parameters():
            if not name.split(".")[-1].startswith("W_"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.mul_(10.0)  # N(0, 0.2): attention patterns far from uniform
    return m


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, V, (3, CTX), generator=torch.Generator().manual_seed(2))


def _ln(x: torch.Tensor, ln) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), ln.w, ln.b, eps=ln.eps)


def _reference_forward(m: TinyTransformer, tokens: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A textbook pre-LN GPT forward pass written from the weights, head by head."""
    acts: dict[str, torch.Tensor] = {}
    p = tokens.shape[1]
    resid = m.embed.W_E[tokens] + m.pos_embed.W_pos[:p]
    causal = torch.tril(torch.ones(p, p, dtype=torch.bool))
    for li, blk in enumerate(m.blocks):
        a = blk.attn
        x = _ln(resid, blk.ln1)
        results = []
        for h in range(m.n_heads):
            q = x @ a.W_Q[h] + a.b_Q[h]
            k = x @ a.W_K[h] + a.b_K[h]
            v = x @ a.W_V[h] + a.b_V[h]
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(m.d_head)
            pattern = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1)
            results.append((pattern @ v) @ a.W_O[h])
        acts[f"blocks.{li}.attn.hook_result"] = torch.stack(results, dim=2)
        attn_out = sum(results) + a.b_O
        acts[f"blocks.{li}.hook_attn_out"] = attn_out
        resid = resid + attn_out
        if not m.attn_only:
            mlp = blk.mlp
            mlp_out = F.gelu(_ln(resid, blk.ln2) @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out
            acts[f"blocks.{li}.hook_mlp_out"] = mlp_out
            resid = resid + mlp_out
        acts[f"blocks.{li}.hook_resid_post"] = resid
    logits = _ln(resid, m.ln_final) @ m.unembed.W_U + m.unembed.b_U
    return logits, acts


def test_transformer_parameter_layout(tt):
    d_head = D // H
    shapes = {n: tuple(p.shape) for n, p in tt.named_parameters()}
    assert shapes["embed.W_E"] == (V, D) and shapes["pos_embed.W_pos"] == (CTX, D)
    for li in range(L):
        for w in ("W_Q", "W_K", "W_V"):
            assert shapes[f"blocks.{li}.attn.{w}"] == (H, D, d_head)
        assert shapes[f"blocks.{li}.attn.W_O"] == (H, d_head, D)
        assert shapes[f"blocks.{li}.attn.b_Q"] == (H, d_head) and shapes[f"blocks.{li}.attn.b_O"] == (D,)
        assert shapes[f"blocks.{li}.mlp.W_in"] == (D, DM) and shapes[f"blocks.{li}.mlp.W_out"] == (DM, D)
        assert shapes[f"blocks.{li}.ln1.w"] == (D,) and shapes[f"blocks.{li}.ln2.b"] == (D,)
    assert shapes["unembed.W_U"] == (D, V) and shapes["unembed.b_U"] == (V,)
    assert shapes["ln_final.w"] == (D,)
    # config() rebuilds the same architecture and the state_dict loads into it
    clone = TinyTransformer(**tt.config())
    clone.load_state_dict(tt.state_dict())
    assert set(clone.state_dict()) == set(tt.state_dict())


def test_transformer_matches_a_reference_implementation(tt, tokens):
    logits, cache = tt.run_with_cache(tokens)
    ref_logits, ref = _reference_forward(tt, tokens)
    assert logits.shape == (3, CTX, V)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    for name, value in ref.items():
        torch.testing.assert_close(cache[name], value, rtol=1e-4, atol=1e-4, msg=name)


def test_hook_names_and_shapes(tt, tokens):
    b, p, d_head = tokens.shape[0], tokens.shape[1], D // H
    _, cache = tt.run_with_cache(tokens)
    expected = {"hook_embed": (b, p, D), "hook_pos_embed": (b, p, D), "ln_final.hook_normalized": (b, p, D)}
    for li in range(L):
        pre = f"blocks.{li}"
        expected.update({
            f"{pre}.hook_resid_pre": (b, p, D), f"{pre}.hook_resid_mid": (b, p, D),
            f"{pre}.hook_resid_post": (b, p, D), f"{pre}.hook_attn_out": (b, p, D),
            f"{pre}.hook_mlp_in": (b, p, D), f"{pre}.hook_mlp_out": (b, p, D),
            f"{pre}.attn.hook_q_input": (b, p, H, D), f"{pre}.attn.hook_k_input": (b, p, H, D),
            f"{pre}.attn.hook_v_input": (b, p, H, D), f"{pre}.attn.hook_q": (b, p, H, d_head),
            f"{pre}.attn.hook_k": (b, p, H, d_head), f"{pre}.attn.hook_v": (b, p, H, d_head),
            f"{pre}.attn.hook_z": (b, p, H, d_head), f"{pre}.attn.hook_result": (b, p, H, D),
            f"{pre}.attn.hook_attn_scores": (b, H, p, p), f"{pre}.attn.hook_pattern": (b, H, p, p),
            f"{pre}.mlp.hook_pre": (b, p, DM), f"{pre}.mlp.hook_post": (b, p, DM),
        })
    for name, shape in expected.items():
        assert name in cache, name
        assert tuple(cache[name].shape) == shape, name
    assert set(cache) == set(tt.hook_points())  # every hook point fired once and is cached


def test_per_head_results_sum_to_attn_out_and_residual_stream_adds_up(tt, tokens):
    _, cache = tt.run_with_cache(tokens)
    for li in range(L):
        b_O = tt.blocks[li].attn.b_O
        torch.testing.assert_close(cache[f"blocks.{li}.attn.hook_result"].sum(2) + b_O,
                                   cache[f"blocks.{li}.hook_attn_out"])
        torch.testing.assert_close(cache[f"blocks.{li}.hook_resid_mid"],
                                   cache[f"blocks.{li}.hook_resid_pre"] + cache[f"blocks.{li}.hook_attn_out"])
        torch.testing.assert_close(cache[f"blocks.{li}.hook_resid_post"],
                                   cache[f"blocks.{li}.hook_resid_mid"] + cache[f"blocks.{li}.hook_mlp_out"])
        # each head reads the (un-normalised) residual stream before ln1
        for kind in ("q", "k", "v"):
            split = cache[f"blocks.{li}.attn.hook_{kind}_input"]
            torch.testing.assert_close(split, cache[f"blocks.{li}.hook_resid_pre"].unsqueeze(2).expand_as(split))
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], cache["hook_embed"] + cache["hook_pos_embed"])
    # the attention pattern is a causal probability distribution
    pattern = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))
    assert (pattern.triu(diagonal=1) == 0).all()


def test_causal_masking(tt, tokens):
    base = tt(tokens)
    for pos in range(CTX):
        changed = tokens.clone()
        changed[:, pos] = (changed[:, pos] + 1) % V
        out = tt(changed)
        assert torch.equal(out[:, :pos], base[:, :pos]), f"changing position {pos} leaked backwards"
        assert not torch.allclose(out[:, pos], base[:, pos])
    # a prefix gives the same logits as the full sequence on its positions
    torch.testing.assert_close(tt(tokens[:, :3]), base[:, :3])


def test_single_token_and_empty_batch(tt):
    one = torch.tensor([[3]])
    assert tt(one).shape == (1, 1, V) and torch.isfinite(tt(one)).all()
    assert tt(torch.zeros(0, 4, dtype=torch.long)).shape == (0, 4, V)


def test_run_with_hooks_patches_a_head(tt, tokens):
    head = 2
    _, clean = tt.run_with_cache(tokens)

    def kill_head(result, hook):
        result = result.clone()
        result[:, :, head] = 0.0
        return result

    seen = {}

    def save(x, hook):
        seen[hook.name] = x.detach()

    patched = tt.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_result", kill_head),
                                                   ("blocks.1.hook_attn_out", save)])
    # the layer output lost exactly that head's contribution
    torch.testing.assert_close(seen["blocks.1.hook_attn_out"],
                               clean["blocks.1.hook_attn_out"] - clean["blocks.1.attn.hook_result"][:, :, head])
    assert not torch.allclose(patched, tt(tokens))
    # hooks are removed afterwards
    torch.testing.assert_close(tt(tokens), _reference_forward(tt, tokens)[0], rtol=1e-4, atol=1e-4)


def test_patching_the_final_residual_stream_determines_the_logits(tt, tokens):
    target = torch.randn(tokens.shape[0], tokens.shape[1], D)
    logits = tt.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{L - 1}.hook_resid_post", lambda x, hook: target)])
    torch.testing.assert_close(logits, _ln(target, tt.ln_final) @ tt.unembed.W_U + tt.unembed.b_U)


def test_patching_one_heads_query_input_only_changes_that_head(tt, tokens):
    other = torch.randint(0, V, tokens.shape, generator=torch.Generator().manual_seed(5))
    _, clean = tt.run_with_cache(tokens)
    _, corrupt = tt.run_with_cache(other)

    def patch_q(x, hook, h=1):
        x = x.clone()
        x[:, :, h] = corrupt["blocks.0.attn.hook_q_input"][:, :, h]
        return x

    with tt.hooks([("blocks.0.attn.hook_q_input", patch_q)]):
        _, patched = tt.run_with_cache(tokens)
    res_c, res_p = clean["blocks.0.attn.hook_result"], patched["blocks.0.attn.hook_result"]
    for h in range(H):
        if h == 1:
            assert not torch.allclose(res_p[:, :, h], res_c[:, :, h])
        else:
            torch.testing.assert_close(res_p[:, :, h], res_c[:, :, h])
    torch.testing.assert_close(patched["blocks.0.attn.hook_k"], clean["blocks.0.attn.hook_k"])


def test_run_with_cache_filters_and_gradients(tt, tokens):
    _, cache = tt.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_post", "hook_embed"])
    assert set(cache) == {"blocks.0.hook_resid_post", "hook_embed"}
    _, cache = tt.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert set(cache) == {f"blocks.{li}.attn.hook_pattern" for li in range(L)}
    assert not cache["blocks.0.attn.hook_pattern"].requires_grad
    out, cache = tt.run_with_cache(tokens, names_filter=["blocks.0.hook_mlp_out"], detach=False)
    out.sum().backward()
    assert cache["blocks.0.hook_mlp_out"].requires_grad and tt.blocks[0].mlp.W_in.grad is not None


def test_unknown_hook_names_raise_key_error_listing_valid_names(tt, tokens):
    with pytest.raises(KeyError, match="blocks.0.attn.hook_result"):
        tt.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_reslut", lambda x, hook: None)])
    with pytest.raises(KeyError, match="unknown hook names"):
        tt.run_with_cache(tokens, names_filter=["blocks.9.hook_resid_post"])
    # a failed installation leaves no hook behind
    torch.testing.assert_close(tt(tokens), _reference_forward(tt, tokens)[0], rtol=1e-4, atol=1e-4)


def test_attn_only_model():
    m = TinyTransformer(V, D, 1, H, DM, CTX, attn_only=True, init_seed=0)
    assert not any(".mlp." in n or "ln2" in n for n, _ in m.named_parameters())
    toks = torch.randint(0, V, (2, 5))
    out, cache = m.run_with_cache(toks)
    assert "blocks.0.hook_mlp_out" not in cache
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_mid"])
    torch.testing.assert_close(out, _reference_forward(m, toks)[0], rtol=1e-4, atol=1e-4)


def test_init_is_seeded_and_gpt2_like():
    a = TinyTransformer(V, D, L, H, DM, CTX, init_seed=3)
    b = TinyTransformer(V, D, L, H, DM, CTX, init_seed=3)
    c = TinyTransformer(V, D, L, H, DM, CTX, init_seed=4)
    for (n, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), n
        leaf = n.split(".")[-1]
        if leaf.startswith("W_"):
            assert not torch.equal(p, r), n
            assert abs(p.std().item() - 0.02) < 0.01, n
        elif leaf == "w":
            assert torch.equal(p, torch.ones_like(p)), n
        else:
            assert torch.equal(p, torch.zeros_like(p)), n


def test_custom_d_head():
    m = TinyTransformer(V, 12, 1, 3, DM, CTX, d_head=5)
    assert m.blocks[0].attn.W_Q.shape == (3, 12, 5)
    assert m(torch.randint(0, V, (2, 4))).shape == (2, 4, V)


@pytest.mark.parametrize(
    ("toks", "exc", "needle"),
    [(torch.zeros(2, 3), TypeError, "integer"), (torch.zeros(2, 3, dtype=torch.bool), TypeError, "integer"),
     (torch.zeros(6, dtype=torch.long), ValueError, "2-D"), (torch.zeros(1, CTX + 1, dtype=torch.long), ValueError,
                                                             f"n_ctx={CTX}"),
     (torch.full((1, 3), V, dtype=torch.long), ValueError, rf"\[0, {V}\)"),
     (torch.full((1, 3), -1, dtype=torch.long), ValueError, rf"\[0, {V}\)"), ([[1, 2]], TypeError, "torch.Tensor")],
)
def test_transformer_bad_tokens(tt, toks, exc, needle):
    with pytest.raises(exc, match=needle):
        tt(toks)


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [(dict(d_model=18), ValueError, "d_model"), (dict(n_heads=0), ValueError, "n_heads"),
     (dict(vocab_size=10.5), TypeError, "vocab_size"), (dict(n_ctx=0), ValueError, "n_ctx")],
)
def test_transformer_bad_config(kwargs, exc, needle):
    cfg = dict(vocab_size=V, d_model=D, n_layers=L, n_heads=H, d_mlp=DM, n_ctx=CTX) | kwargs
    with pytest.raises(exc, match=needle):
        TinyTransformer(**cfg)


# --------------------------------------------------------------------------------------
# TinyTransformer.generate
# --------------------------------------------------------------------------------------
def test_greedy_generation_follows_the_argmax(tt):
    prompt = torch.tensor([[1, 2], [3, 4]])
    out = tt.generate(prompt, max_new_tokens=3, temperature=0)
    assert out.shape == (2, 5) and torch.equal(out[:, :2], prompt)
    for t in range(2, 5):
        assert torch.equal(out[:, t], tt(out[:, :t])[:, -1].argmax(-1))


def test_sampled_generation_is_seeded_and_stops_at_n_ctx(tt):
    prompt = torch.tensor([[1, 2, 3]])
    a = tt.generate(prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(0))
    b = tt.generate(prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert a.shape == (1, CTX)  # 20 new tokens requested, capped at the context length
    assert int(a.max()) < V and int(a.min()) >= 0


def test_generation_pads_finished_rows_with_the_stop_token(tt):
    prompt = torch.tensor([[1, 2], [5, 6]])
    free = tt.generate(prompt, 4, temperature=0)
    stop = int(free[0, 2])  # row 0 produces this token first
    out = tt.generate(prompt, 4, temperature=0, stop_token=stop)
    assert out[0, 2] == stop and (out[0, 2:] == stop).all()


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [(dict(max_new_tokens=0), ValueError, "max_new_tokens"), (dict(temperature=-1.0), ValueError, "temperature"),
     (dict(tokens=torch.zeros(1, 2)), TypeError, "integer")],
)
def test_generation_bad_inputs(tt, kwargs, exc, needle):
    args = dict(tokens=torch.tensor([[1, 2]]), max_new_tokens=2) | kwargs
    with pytest.raises(exc, match=needle):
        tt.generate(**args)


@pytest.mark.parametrize(
    "model, n_in",
    [(TMS(5, 2), 5), (ResidualMLP(10, 20, 4, 1), 10), (MLP([3, 4, 2]), 3)],
)
def test_nan_and_inf_inputs_are_rejected(model, n_in):
    for bad in (float("nan"), float("inf")):
        x = torch.zeros(2, n_in)
        x[1, 0] = bad
        with pytest.raises(ValueError, match="x: expected finite values"):
            model(x)


# --------------------------------------------------------------------------------------
# Dtype policy (mechnb._checks): real floats are cast to the model's dtype, the rest is named
# --------------------------------------------------------------------------------------
_VECTOR_MODELS = [(lambda: TMS(5, 2, n_hidden_layers=1), 5), (lambda: TMS(5, 2, tied_weights=False), 5),
                  (lambda: ResidualMLP(10, 20, 4, 1), 10), (lambda: MLP([3, 4, 2]), 3)]


@pytest.mark.parametrize("make, n_in", _VECTOR_MODELS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_real_floating_inputs_are_cast_to_the_models_dtype(make, n_in, dtype):
    torch.manual_seed(0)
    model = make()
    x = torch.rand(4, n_in).to(dtype)  # values exactly representable in dtype
    out = model(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(x.float()), rtol=0, atol=0)  # the same as a float32 call
    if dtype == torch.float64:  # and a float64 model takes a float32 batch the same way
        m64 = make().double()
        assert m64(x.float()).dtype == torch.float64


@pytest.mark.parametrize("make, n_in", _VECTOR_MODELS)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64, torch.complex128])
def test_integer_bool_and_complex_inputs_are_named(make, n_in, dtype):
    x = torch.ones(2, n_in).to(dtype)
    with pytest.raises(TypeError, match=rf"x: expected a real floating-point tensor \(cast to the model's dtype "
                                        rf"torch.float32\), got dtype {dtype}"):
        make()(x)


@pytest.mark.parametrize("make, n_in", _VECTOR_MODELS)
def test_values_that_overflow_the_models_dtype_are_named(make, n_in):
    x = torch.ones(2, n_in, dtype=torch.float64) * 1e200
    with pytest.raises(ValueError, match=r"x: values up to 1e\+200 do not fit in the model's dtype torch.float32"):
        make()(x)
    half = make().half()
    with pytest.raises(ValueError, match="torch.float16"):
        half(torch.full((1, n_in), 1e5))  # float16 tops out at 65504


def test_empty_and_one_row_batches_keep_their_shape():
    for make, n_in in _VECTOR_MODELS:
        m = make()
        assert m(torch.zeros(0, n_in)).shape == (0, m(torch.zeros(1, n_in)).shape[1])


@pytest.mark.parametrize(
    ("temperature", "exc"),
    [(float("nan"), ValueError), (float("inf"), ValueError), (-1.0, ValueError), ("hot", TypeError),
     (None, TypeError)],
)
def test_generation_temperature_must_be_a_finite_number(tt, temperature, exc):
    with pytest.raises(exc, match="temperature: expected a"):
        tt.generate(torch.tensor([[1, 2]]), 2, temperature=temperature)


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [(dict(stop_token=-1), ValueError, "stop_token"), (dict(stop_token=10**6), ValueError, r"stop_token: .*\[0, "),
     (dict(stop_token=1.0), TypeError, "stop_token"), (dict(generator=0), TypeError, "generator: expected a torch")],
)
def test_generation_stop_token_and_generator_are_checked(tt, kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        tt.generate(torch.tensor([[1, 2]]), 2, **kwargs)


def test_transformer_tokens_of_a_float_or_bool_dtype_are_named(tt):
    for dtype in (torch.float32, torch.bool, torch.complex64):
        with pytest.raises(TypeError, match=f"tokens: expected an integer tensor, got dtype {dtype}"):
            tt(torch.zeros(1, 3, dtype=dtype))


@pytest.mark.parametrize(("seed", "exc"), [(1.5, TypeError), ("0", TypeError), (True, TypeError), (-1, ValueError)])
def test_model_seeds_are_ints(seed, exc):
    with pytest.raises(exc, match="embed_seed: expected an int seed"):
        ResidualMLP(4, 3, 2, 1, embed_seed=seed)
    with pytest.raises(exc, match="init_seed: expected an int seed"):
        TinyTransformer(5, 4, 1, 1, 4, 3, init_seed=seed)
    tt = TinyTransformer(5, 4, 1, 1, 4, 3)
    with pytest.raises(exc, match="seed: expected an int seed"):
        tt.reset_parameters(seed)


# --------------------------------------------------------------------------------------
# Architecture options (GPT-2 / GPT-NeoX, used by mechnb.interop.from_hf)
# --------------------------------------------------------------------------------------
def test_default_options_keep_the_config_and_parameters_of_mechnb_models():
    m = TinyTransformer(20, 16, 2, 2, 32, 8, init_seed=0)
    assert set(m.config()) == {"vocab_size", "d_model", "n_layers", "n_heads", "d_mlp", "n_ctx", "attn_only", "d_head"}
    assert "pos_embed.W_pos" in dict(m.named_parameters()) and m.unembed.b_U is not None
    twin = TinyTransformer(20, 16, 2, 2, 32, 8, init_seed=0, act_fn="gelu", positional="learned", ln_eps=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), twin.state_dict().values()))


def test_rotary_rotation_preserves_norms_and_makes_scores_depend_on_distance():
    attn = TinyTransformer(20, 16, 1, 2, 32, 12, positional="rotary", rotary_dim=4).blocks[0].attn
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)
    rq = attn.rotate(q.expand(12, 16), pos_dim=0)
    rk = attn.rotate(k.expand(12, 16), pos_dim=0)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(12))  # a rotation
    assert torch.equal(rq[:, 4:], q[4:].expand(12, 12))  # features past rotary_dim unchanged
    assert torch.equal(rq[0], q)  # position 0: angle 0
    # q_i . k_j depends only on i - j (RoFormer's relative-position property)
    torch.testing.assert_close(rq[5] @ rk[2], rq[9] @ rk[6], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(rq[5] @ rk[2], rq[5] @ rk[4], atol=1e-3)


def test_parallel_block_mlp_reads_the_block_input():
    m = TinyTransformer(20, 16, 1, 2, 32, 8, init_seed=1, parallel_attn_mlp=True)
    toks = torch.randint(0, 20, (3, 8), generator=torch.Generator().manual_seed(0))
    _, cache = m.run_with_cache(toks)
    b = "blocks.0."
    assert torch.equal(cache[b + "hook_mlp_in"], cache[b + "hook_resid_pre"])
    torch.testing.assert_close(cache[b + "hook_resid_post"],
                               cache[b + "hook_resid_pre"] + cache[b + "hook_attn_out"] + cache[b + "hook_mlp_out"])


def test_tied_and_bias_free_unembedding():
    m = TinyTransformer(20, 16, 1, 2, 32, 8, init_seed=2, tied_unembed=True, unembed_bias=False)
    assert m.unembed.b_U is None and "unembed.W_U" not in dict(m.named_parameters())
    assert m.unembed.W_U.data_ptr() == m.embed.W_E.data_ptr()
    toks = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(0))
    _, cache = m.run_with_cache(toks)
    torch.testing.assert_close(m(toks), cache["ln_final.hook_normalized"] * m.ln_final.w @ m.embed.W_E.T
                               + m.ln_final.b @ m.embed.W_E.T)


@pytest.mark.parametrize("kwargs, exc, needle", [
    ({"act_fn": "swish"}, ValueError, "act_fn"),
    ({"positional": "alibi"}, ValueError, "positional"),
    ({"positional": "rotary", "rotary_dim": 3}, ValueError, "rotary_dim"),
    ({"positional": "rotary", "rotary_dim": 10}, ValueError, "rotary_dim"),
    ({"rotary_dim": 4}, ValueError, "rotary_dim"),
    ({"parallel_attn_mlp": 1}, TypeError, "parallel_attn_mlp"),
    ({"ln_eps": 0.0}, ValueError, "ln_eps"),
])
def test_architecture_options_are_checked(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        TinyTransformer(20, 16, 1, 2, 32, 8, **kwargs)
