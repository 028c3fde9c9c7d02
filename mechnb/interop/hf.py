"""Hugging Face causal LMs -> :class:`~mechnb.models.TinyTransformer` (same weights, same logits).

Weight layouts (``d`` = d_model, ``H`` heads of width ``e``, ``m`` = d_mlp):

* **GPT-2** (``GPT2LMHeadModel``): ``Conv1D`` weights are stored ``[in, out]``; ``c_attn.weight
  [d, 3d]`` is ``[W_Q | W_K | W_V]`` with heads contiguous in each third, so
  ``W_Q = c_attn.weight[:, :d].view(d, H, e).permute(1, 0, 2)``; ``c_proj.weight [H e, d]`` is
  ``W_O.view(H, e, d)``; ``mlp.c_fc.weight [d, m]`` is ``W_in``. Learned positions (``wpe``), the
  tanh GELU (``gelu_new``), the unembedding tied to ``wte`` and without bias.
* **GPT-NeoX / Pythia** (``GPTNeoXForCausalLM``): ``nn.Linear`` weights are ``[out, in]``;
  ``query_key_value.weight [3d, d]`` is laid out per head, ``[H, (q|k|v), e, d]``; rotary embeddings
  on the first ``partial_rotary_factor * e`` features of each head (base ``rope_theta``), parallel
  attention and MLP (``use_parallel_residual``), an untied unembedding (``embed_out`` / ``lm_head``) without bias.

Both attention scores are ``q.k / sqrt(e)``; mechnb's LayerNorm is HF's (biased variance, eps
inside the square root).
"""

from __future__ import annotations

import os

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mechnb.models import TinyTransformer

__all__ = ["from_hf", "word_level_tokenizer", "load_cached", "ioi_texts", "SUPPORTED"]

SUPPORTED = ("GPT2LMHeadModel", "GPTNeoXForCausalLM")
"""The Hugging Face classes :func:`from_hf` converts."""

_ACTS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "relu": "relu"}


def _act(name: Any, family: str) -> str:
    if name not in _ACTS:
        raise ValueError(f"model: {family} with activation {name!r} is not supported; expected one of {sorted(_ACTS)}")
    return _ACTS[name]


def _copy_ln(dst: nn.Module, src: nn.LayerNorm) -> None:
    dst.w.copy_(src.weight)
    dst.b.copy_(src.bias)


def _from_gpt2(hf: nn.Module) -> TinyTransformer:
    cfg = hf.config
    for flag, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                     ("reorder_and_upcast_attn", False)):
        if getattr(cfg, flag, ok) != ok:
            raise ValueError(f"model: GPT2LMHeadModel with config.{flag}={getattr(cfg, flag)!r} is not supported "
                             f"(expected {ok})")
    d, H = cfg.n_embd, cfg.n_head
    e = d // H
    tied = hf.lm_head.weight is hf.transformer.wte.weight
    tf = hf.transformer
    model = TinyTransformer(
        cfg.vocab_size, d, cfg.n_layer, H, cfg.n_inner or 4 * d, cfg.n_positions, act_fn=_act(cfg.activation_function,
                                                                                              "GPT2LMHeadModel"),
        tied_unembed=tied, unembed_bias=getattr(hf.lm_head, "bias", None) is not None, ln_eps=cfg.layer_norm_epsilon,
    )
    model.to(tf.wte.weight.dtype)
    with torch.no_grad():
        model.embed.W_E.copy_(tf.wte.weight)
        model.pos_embed.W_pos.copy_(tf.wpe.weight[: model.n_ctx])
        for block, hb in zip(model.blocks, tf.h):
            _copy_ln(block.ln1, hb.ln_1)
            _copy_ln(block.ln2, hb.ln_2)
            W, b = hb.attn.c_attn.weight, hb.attn.c_attn.bias  # [d, 3d], [3d]
            for i, name in enumerate("QKV"):
                getattr(block.attn, f"W_{name}").copy_(W[:, i * d:(i + 1) * d].reshape(d, H, e).permute(1, 0, 2))
                getattr(block.attn, f"b_{name}").copy_(b[i * d:(i + 1) * d].reshape(H, e))
            block.attn.W_O.copy_(hb.attn.c_proj.weight.reshape(H, e, d))
            block.attn.b_O.copy_(hb.attn.c_proj.bias)
            block.mlp.W_in.copy_(hb.mlp.c_fc.weight)
            block.mlp.b_in.copy_(hb.mlp.c_fc.bias)
            block.mlp.W_out.copy_(hb.mlp.c_proj.weight)
            block.mlp.b_out.copy_(hb.mlp.c_proj.bias)
        _copy_ln(model.ln_final, tf.ln_f)
        if not tied:
            model.unembed.W_U.copy_(hf.lm_head.weight.T)
        if model.unembed.b_U is not None:
            model.unembed.b_U.copy_(hf.lm_head.bias)
    return model


def _from_neox(hf: nn.Module) -> TinyTransformer:
    cfg = hf.config
    d, H = cfg.hidden_size, cfg.num_attention_heads
    e = d // H
    rope = dict(getattr(cfg, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"model: GPTNeoXForCausalLM with rope_type={rope['rope_type']!r} is not supported "
                         f"(expected 'default')")
    pct = rope.get("partial_rotary_factor", getattr(cfg, "rotary_pct", 1.0))
    base = rope.get("rope_theta", getattr(cfg, "rotary_emb_base", 10000.0))
    gx = hf.gpt_neox
    if not getattr(cfg, "attention_bias", True):
        raise ValueError("model: GPTNeoXForCausalLM with attention_bias=False is not supported (expected True)")
    head = hf.get_output_embeddings()  # ``embed_out`` (transformers 4) or ``lm_head`` (5)
    tied = head.weight is gx.embed_in.weight
    model = TinyTransformer(
        cfg.vocab_size, d, cfg.num_hidden_layers, H, cfg.intermediate_size, cfg.max_position_embeddings,
        act_fn=_act(cfg.hidden_act, "GPTNeoXForCausalLM"), positional="rotary", rotary_dim=int(e * pct),
        rotary_base=float(base), parallel_attn_mlp=bool(cfg.use_parallel_residual), tied_unembed=tied,
        unembed_bias=getattr(head, "bias", None) is not None, ln_eps=cfg.layer_norm_eps,
    )
    model.to(gx.embed_in.weight.dtype)
    with torch.no_grad():
        model.embed.W_E.copy_(gx.embed_in.weight)
        for block, hb in zip(model.blocks, gx.layers):
            _copy_ln(block.ln1, hb.input_layernorm)
            _copy_ln(block.ln2, hb.post_attention_layernorm)
            W = hb.attention.query_key_value.weight.reshape(H, 3, e, d)  # [H, q|k|v, e, d]
            b = hb.attention.query_key_value.bias.reshape(H, 3, e)
            for i, name in enumerate("QKV"):
                getattr(block.attn, f"W_{name}").copy_(W[:, i].transpose(1, 2))  # [H, d, e]
                getattr(block.attn, f"b_{name}").copy_(b[:, i])
            block.attn.W_O.copy_(hb.attention.dense.weight.T.reshape(H, e, d))
            block.attn.b_O.copy_(hb.attention.dense.bias)
            block.mlp.W_in.copy_(hb.mlp.dense_h_to_4h.weight.T)
            block.mlp.b_in.copy_(hb.mlp.dense_h_to_4h.bias)
            block.mlp.W_out.copy_(hb.mlp.dense_4h_to_h.weight.T)
            block.mlp.b_out.copy_(hb.mlp.dense_4h_to_h.bias)
        _copy_ln(model.ln_final, gx.final_layer_norm)
        if not tied:
            model.unembed.W_U.copy_(head.weight.T)
        if model.unembed.b_U is not None:
            model.unembed.b_U.copy_(head.bias)
    return model


_CONVERTERS = {"GPT2LMHeadModel": _from_gpt2, "GPTNeoXForCausalLM": _from_neox}


def from_hf(model: nn.Module) -> TinyTransformer:
    """A :class:`~mechnb.models.TinyTransformer` with the weights of a Hugging Face causal LM.

    Args:
        model: a ``transformers`` ``GPT2LMHeadModel`` or ``GPTNeoXForCausalLM`` (any size, e.g.
            ``gpt2`` or ``EleutherAI/pythia-70m``, or one built from a config).

    Returns:
        a new model (eval mode, the HF model's dtype, on the CPU) whose logits on ``tokens (batch,
        pos)`` equal ``model(tokens).logits`` (float32: to about 1e-5), with hook points
        ``hook_embed``, ``blocks.{l}.hook_resid_pre``, ``attn.hook_pattern``, ``attn.hook_result``,
        ``hook_mlp_out`` ... (TransformerLens names). GPT-2 keeps its tied unembedding
        (``unembed.W_U`` is ``embed.W_E.T``); GPT-NeoX gets rotary attention and parallel blocks.

    Raises:
        TypeError: for any other class, naming it and the supported ones.
        ValueError: for a supported class with a configuration option mechnb does not implement.
    """
    name = type(model).__name__
    if name not in _CONVERTERS or not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a Hugging Face causal LM of a supported class {list(SUPPORTED)}, "
                        f"got {type(model).__module__}.{name}")
    converted = _CONVERTERS[name](model.cpu() if next(model.parameters()).device.type != "cpu" else model)
    return converted.eval()


def word_level_tokenizer(vocab: Sequence[str], unk_token: str = "<pad>", pad_token: str = "<pad>",
                         bos_token: str | None = "<bos>") -> Any:
    """A ``transformers.PreTrainedTokenizerFast`` that splits on whitespace and maps word ``i`` of
    ``vocab`` to id ``i`` (a ``tokenizers`` WordLevel model; built locally, nothing downloaded).

    With ``vocab = SyntheticLanguage().tokenizer.vocab`` its ids are mechnb's own, so a Hugging Face
    model trained with it reads the same token ids as ``tiny-lm``. ``save_pretrained(dir)`` writes it
    beside a model.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(vocab)
    if len(set(words)) != len(words) or not words or not all(isinstance(w, str) and w for w in words):
        raise ValueError(f"vocab: expected distinct non-empty words, got {len(words)} entries "
                         f"({len(set(words))} distinct)")
    for arg, tok in (("unk_token", unk_token), ("pad_token", pad_token), ("bos_token", bos_token)):
        if tok is not None and tok not in words:
            raise ValueError(f"{arg}: expected a word of vocab, got {tok!r}")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=unk_token))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kwargs: dict[str, Any] = {"unk_token": unk_token, "pad_token": pad_token}
    if bos_token is not None:
        kwargs["bos_token"] = bos_token
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def load_cached(name: str, cache_dir: str | os.PathLike | None = None) -> tuple[nn.Module, Any] | None:
    """``(model, tokenizer)`` of a pretrained Hugging Face model *already in the local cache*, or ``None``.

    Never downloads: the hub is switched off (``HF_HUB_OFFLINE=1``) and every load passes
    ``local_files_only=True``; a model that is not cached (or cannot be read) gives ``None``. The
    model is in eval mode, float32. ``cache_dir``: the hub cache to look in (default: the one
    ``huggingface_hub`` uses, ``$HF_HOME/hub``, fixed when ``transformers`` is first imported).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a model name such as 'gpt2', got {name!r}")
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir: expected a path or None, got {type(cache_dir).__name__}")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import transformers

    try:
        where = {} if cache_dir is None else {"cache_dir": os.fspath(cache_dir)}
        tok = transformers.AutoTokenizer.from_pretrained(name, local_files_only=True, **where)
        model = transformers.AutoModelForCausalLM.from_pretrained(name, local_files_only=True,
                                                                  dtype=torch.float32, **where)
    except (OSError, ValueError, KeyError):
        return None
    return model.eval(), tok


_IOI_NAMES = ("Mary", "John", "Tom", "James", "Anna", "Paul", "Sarah", "David", "Lisa", "Mark")
_IOI_PLACES = ("store", "park", "school", "market", "office", "garden")
_IOI_OBJECTS = ("drink", "book", "ball", "letter", "gift", "bag")


def ioi_texts(n: int, seed: int = 0) -> dict[str, list[str]]:
    """``n`` indirect-object-identification prompts as text (Wang et al. 2023, Sec. 2).

    Clean: ``"When Mary and John went to the store, John gave a drink to"`` -> ``" Mary"`` (the
    indirect object); corrupted: the same with the second name swapped (``"..., Mary gave a drink
    to"`` -> ``" John"``). Returns ``{"clean", "corrupted", "answer", "wrong"}``, ready for
    :meth:`mechnb.tasks.PromptPairs.from_texts` (answers with GPT-2's leading space).
    """
    import random

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    rng = random.Random(seed)
    out: dict[str, list[str]] = {"clean": [], "corrupted": [], "answer": [], "wrong": []}
    for _ in range(n):
        io, s = rng.sample(_IOI_NAMES, 2)
        place, obj = rng.choice(_IOI_PLACES), rng.choice(_IOI_OBJECTS)
        out["clean"].append(f"When {io} and {s} went to the {place}, {s} gave a {obj} to")
        out["corrupted"].append(f"When {io} and {s} went to the {place}, {io} gave a {obj} to")
        out["answer"].append(f" {io}")
        out["wrong"].append(f" {s}")
    return out
