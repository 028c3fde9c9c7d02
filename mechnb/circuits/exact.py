"""Exact per-edge patching, batched: many single-edge patched runs in one forward pass.

The exact score of edge ``u -> v`` is ``m(edge patched) - m(clean)``: reader ``v``'s input becomes
``input_v - (out_u - ref_u)`` and everything downstream of ``v`` is recomputed (:mod:`.graph`). One
patched forward pass per edge (:func:`~mechnb.circuits.graph.patched_forward`) is the reference
loop. This module computes the same numbers for a chunk of edges at once, with the edges along the
batch dimension (edge ``k`` of a chunk owns batch rows ``k*b .. (k+1)*b - 1``), and recomputes only
what an edge can change:

* everything upstream of ``v`` is the clean run, so each patched run starts from the clean
  activations at ``v``'s layer (cached once);
* the positions before the first one where some writer's output differs from its reference
  (``ref_u = out_u`` there: for corrupted patching, the positions before the first token in which the
  prompts differ) are the clean run at every layer, by causality: only the later positions are
  recomputed, their queries attending to the clean keys and values before them;
* an edge into head ``h``'s query, key or value input changes only head ``h`` in that layer: its
  attention is recomputed with the patched input (the other two inputs and the other heads are
  the clean ones), then the layer's MLP and every later layer run on the whole chunk;
* an edge into MLP ``m{l}`` changes only that MLP's output; an edge into ``logits`` only the final
  residual stream. In a parallel block (GPT-NeoX) the MLP reads ``resid_pre``, so a patched head
  leaves its layer's MLP output clean.

The layer arithmetic is :class:`~mechnb.models.TinyTransformer`'s: its LayerNorm and MLP modules
are called as they are; the one recomputed head follows ``Attention.forward`` and the later blocks
``TransformerBlock.forward`` (with ``ln1`` applied once per position rather than once per head: the
heads read the same residual stream). A test checks that the batched scores equal the per-edge loop
to 1e-5.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mechnb.circuits.graph import Graph, check_metric_value
from mechnb.models import TinyTransformer

__all__ = ["exact_edge_metrics", "DEFAULT_TOKENS_PER_PASS"]

DEFAULT_TOKENS_PER_PASS = 8192
"""Default chunk size: edges per pass = max(1, this // (batch * pos)) token positions per pass."""


@dataclass
class _CleanLayer:
    """Clean activations of one layer: ``resid_pre``/``resid_mid``/``resid_post`` ``[b, p, d]``,
    per-head ``q``/``k``/``v`` ``[b, p, H, d_head]`` (before any rotary embedding) and results
    ``[b, p, H, d]``."""

    resid_pre: torch.Tensor
    resid_mid: torch.Tensor
    resid_post: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    result: torch.Tensor


def _clean_layers(model: TinyTransformer, tokens: torch.Tensor) -> tuple[list[_CleanLayer], torch.Tensor]:
    """One clean forward pass caching what every layer's patched runs start from, and its logits."""
    names = ["hook_resid_pre", "hook_resid_mid", "hook_resid_post", "attn.hook_q", "attn.hook_k", "attn.hook_v",
             "attn.hook_result"]
    wanted = [f"blocks.{layer}.{n}" for layer in range(model.n_layers) for n in names]
    logits, cache = model.run_with_cache(tokens, names_filter=wanted)
    layers = [_CleanLayer(*(cache[f"blocks.{layer}.{n}"] for n in names)) for layer in range(model.n_layers)]
    return layers, logits


def _with_prefix(clean: torch.Tensor, suffix: torch.Tensor, p0: int, K: int) -> torch.Tensor:
    """``[K * b, p, ...]``: the clean positions ``< p0`` of ``clean [b, p, ...]`` (repeated for the ``K``
    chunk elements) followed by ``suffix [K * b, p - p0, ...]``."""
    if p0 == 0:
        return suffix
    return torch.cat([clean[:, :p0].repeat(K, *[1] * (clean.ndim - 1)), suffix], dim=1)


def _one_head(model: TinyTransformer, layer: int, heads: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor, p0: int) -> torch.Tensor:
    """Result ``[K, b, p - p0, d_model]`` at the positions ``>= p0`` of head ``heads[i]`` of ``layer`` for
    chunk element ``i``, from its ``q``, ``k``, ``v`` ``[K, b, p, d_head]`` (``Attention.forward`` for
    one head per element; queries before ``p0`` are not needed)."""
    attn = model.blocks[layer].attn
    n = q.shape[2]
    q, k = attn.rotate(q, pos_dim=2)[:, :, p0:], attn.rotate(k, pos_dim=2)  # rotary models only (else identity)
    scores = torch.einsum("kbqe,kbse->kbqs", q, k) / math.sqrt(attn.d_head)
    scores = scores.masked_fill(~attn.mask[p0:n, :n], float("-inf"))
    pattern = torch.softmax(scores, dim=-1)
    z = torch.einsum("kbqs,kbse->kbqe", pattern, v)
    return torch.einsum("kbqe,ked->kbqd", z, attn.W_O[heads])


def _head_readers(model: TinyTransformer, layer: int, clean: _CleanLayer, delta: torch.Tensor,
                  heads: torch.Tensor, letters: torch.Tensor, p0: int) -> torch.Tensor:
    """``resid_post [K, b, p - p0, d]`` of ``layer`` at the positions ``>= p0`` when element ``i`` patches
    head ``heads[i]``'s input ``letters[i]`` (0 = q, 1 = k, 2 = v) by ``delta[i] = ref_u - out_u``
    ``[K, b, p - p0, d]`` (zero before ``p0``, so the patched input is the clean one there)."""
    block = model.blocks[layer]
    attn = block.attn
    x = block.ln1(clean.resid_pre[:, p0:].unsqueeze(0) + delta)  # [K, b, p - p0, d]: the patched input, normalised
    W = torch.stack([attn.W_Q, attn.W_K, attn.W_V])[letters, heads]  # [K, d, d_head]
    bias = torch.stack([attn.b_Q, attn.b_K, attn.b_V])[letters, heads]  # [K, d_head]
    new = torch.einsum("kbpd,kde->kbpe", x, W) + bias[:, None, None]
    sel = [letters == i for i in range(3)]
    q, k, v = (torch.where(s[:, None, None, None], torch.cat([c.permute(2, 0, 1, 3)[heads][:, :, :p0], new], dim=2),
                           c.permute(2, 0, 1, 3)[heads])
               for s, c in zip(sel, (clean.q, clean.k, clean.v)))
    change = _one_head(model, layer, heads, q, k, v, p0) - clean.result.permute(2, 0, 1, 3)[heads][:, :, p0:]
    resid_mid = clean.resid_mid[:, p0:].unsqueeze(0) + change  # only head heads[i] changed in this layer
    if block.attn_only:
        return resid_mid
    if block.parallel:  # the MLP reads resid_pre, which the patched head does not change
        return clean.resid_post[:, p0:].unsqueeze(0) + change
    return resid_mid + block.mlp(block.ln2(resid_mid))


def _mlp_reader(model: TinyTransformer, layer: int, clean: _CleanLayer, delta: torch.Tensor, p0: int) -> torch.Tensor:
    """``resid_post [K, b, p - p0, d]`` of ``layer`` with MLP ``m{layer}``'s input patched by ``delta``."""
    block = model.blocks[layer]
    mlp_in = (clean.resid_pre if block.parallel else clean.resid_mid)[:, p0:]
    return clean.resid_mid[:, p0:].unsqueeze(0) + block.mlp(block.ln2(mlp_in.unsqueeze(0) + delta))


def _block(model: TinyTransformer, layer: int, resid: torch.Tensor, clean: _CleanLayer, p0: int,
           K: int) -> torch.Tensor:
    """``resid_post`` at the positions ``>= p0`` of block ``layer`` from ``resid_pre [K * b, p - p0, d]`` there:
    ``TransformerBlock.forward`` with ``ln1`` applied once instead of once per head (the heads read the
    same residual), the queries at positions ``>= p0`` attending to the clean keys and values before
    ``p0`` (unchanged by any edge patched there) and to the new ones after."""
    block = model.blocks[layer]
    attn = block.attn
    n = resid.shape[1] + p0
    x = block.ln1(resid)
    q = torch.einsum("npd,hde->nphe", x, attn.W_Q) + attn.b_Q
    k = _with_prefix(clean.k, torch.einsum("npd,hde->nphe", x, attn.W_K) + attn.b_K, p0, K)
    v = _with_prefix(clean.v, torch.einsum("npd,hde->nphe", x, attn.W_V) + attn.b_V, p0, K)
    if attn.rotary_dim:
        q = attn.rotate(_with_prefix(clean.q, q, p0, K), pos_dim=1)[:, p0:]
        k = attn.rotate(k, pos_dim=1)
    scores = torch.einsum("nqhe,nkhe->nhqk", q, k) / math.sqrt(attn.d_head)
    pattern = torch.softmax(scores.masked_fill(~attn.mask[p0:n, :n], float("-inf")), dim=-1)
    z = torch.einsum("nhqk,nkhe->nqhe", pattern, v)
    resid_pre = resid
    resid = resid + torch.einsum("nqhe,hed->nqd", z, attn.W_O) + attn.b_O
    if block.attn_only:
        return resid
    return resid + block.mlp(block.ln2(resid_pre if block.parallel else resid))


def _logits_from(model: TinyTransformer, first_layer: int, resid: torch.Tensor, layers: list[_CleanLayer],
                 clean_logits: torch.Tensor, p0: int) -> torch.Tensor:
    """Logits ``[K, b, p, d_vocab]`` from ``resid [K, b, p - p0, d]`` entering block ``first_layer`` at the
    positions ``>= p0``; before ``p0`` they are the clean logits (no patched edge changes them)."""
    K, b, s, d = resid.shape
    r = resid.reshape(K * b, s, d)
    for layer in range(first_layer, model.n_layers):
        r = _block(model, layer, r, layers[layer], p0, K)
    logits = model.unembed_resid(r).reshape(K, b, s, -1)
    if p0 == 0:
        return logits
    return torch.cat([clean_logits[:, :p0].unsqueeze(0).expand(K, -1, -1, -1), logits], dim=2)


def _reader_groups(graph: Graph) -> list[tuple[str, int, list[int]]]:
    """``(kind, layer, reader slots)`` per group of readers that share a recomputation."""
    groups: list[tuple[str, int, list[int]]] = []
    H = graph.n_heads
    for layer in range(graph.n_layers):
        first = graph._reader_first[layer]
        groups.append(("head", layer, list(range(first, first + 3 * H))))
        if not graph.attn_only:
            groups.append(("mlp", layer, [first + 3 * H]))
    groups.append(("logits", graph.n_layers - 1, [graph.n_readers - 1]))
    return groups


@torch.no_grad()
def exact_edge_metrics(
    model: TinyTransformer,
    graph: Graph,
    tokens: torch.Tensor,
    clean_out: torch.Tensor,
    ref: torch.Tensor,
    metric: Callable[[torch.Tensor], torch.Tensor],
    tokens_per_pass: int = DEFAULT_TOKENS_PER_PASS,
) -> tuple[torch.Tensor, int]:
    """``m`` with each edge patched alone, for every edge: ``(values (n_edges,), forward passes)``.

    Args:
        tokens: the clean prompts ``(b, p)``; ``clean_out``: their writer outputs
            ``[n_writers, b, p, d]`` (:func:`~mechnb.circuits.graph.cache_writers`).
        ref: the ablation's reference ``[n_writers, b | 1, p | 1, d]``.
        metric: ``m(logits (b, p, d_vocab)) -> scalar``.
        tokens_per_pass: at most this many token positions per batched pass (edges per pass
            ``max(1, tokens_per_pass // (b * (p - p0)))`` with ``p0`` the first position any patch changes).

    Returns the metric values in ``graph.edges`` order and the number of batched passes run
    (the clean caching pass included).
    """
    b, p = tokens.shape
    layers, clean_logits = _clean_layers(model, tokens)
    delta_all = (ref - clean_out).expand(-1, b, p, -1)  # [W, b, p, d]: what patching u -> v adds to v's input
    changed = delta_all.ne(0).any(dim=3).any(dim=1).any(dim=0)  # [p]: positions where some patch changes anything
    p0 = int(changed.nonzero()[0]) if bool(changed.any()) else p  # before p0 every patched run is the clean one
    per_pass = max(1, int(tokens_per_pass) // (b * max(p - p0, 1)))
    delta_all = delta_all[:, :, p0:]
    vals = torch.zeros(graph.n_writers, graph.n_readers, dtype=clean_out.dtype, device=clean_out.device)
    H = graph.n_heads
    passes = 1
    for kind, layer, readers in _reader_groups(graph):
        pairs = [(i, j) for j in readers for i in range(int(graph.n_upstream[j]))]
        for s in range(0, len(pairs), per_pass):
            chunk = pairs[s: s + per_pass]
            if p0 == p:  # no patch changes any position: every patched run is the clean run
                for i, j in chunk:
                    vals[i, j] = check_metric_value(metric(clean_logits), "on the clean prompts")
                continue
            src = torch.tensor([i for i, _ in chunk], device=clean_out.device)
            dst = torch.tensor([j for _, j in chunk], device=clean_out.device)
            delta = delta_all[src]
            if kind == "head":
                local = dst - readers[0]
                resid = _head_readers(model, layer, layers[layer], delta, local % H, local // H, p0)
                logits = _logits_from(model, layer + 1, resid, layers, clean_logits, p0)
            elif kind == "mlp":
                resid = _mlp_reader(model, layer, layers[layer], delta, p0)
                logits = _logits_from(model, layer + 1, resid, layers, clean_logits, p0)
            else:
                resid = layers[-1].resid_post[:, p0:].unsqueeze(0) + delta
                logits = _logits_from(model, graph.n_layers, resid, layers, clean_logits, p0)
            passes += 1
            for (i, j), lg in zip(chunk, logits):
                vals[i, j] = check_metric_value(metric(lg), f"with edge {graph.writers[i]}->"
                                                f"{graph.readers[j][0]} patched")
    return graph.edge_vector(vals), passes
