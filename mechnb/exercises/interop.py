"""Check functions for notebook 05 (bring your own model: Hugging Face GPT-2 and Pythia in mechnb).

Exercises, in notebook order: 5.1 split GPT-2's fused query/key/value weight into per-head
``W_Q, W_K, W_V [n_heads, d_model, d_head]``; 5.2 rotary position embedding on part of each head
(Su et al. 2021, GPT-NeoX's half-split layout); 5.3 the edges of a graph whose blocks run attention
and MLP in parallel. Known answers come from :func:`mechnb.interop.from_hf` on small random GPT-2
models, from ``Attention.rotate`` and from :class:`mechnb.circuits.Graph`, and from closed forms
(a rotation by angle ``pos * theta`` of a unit vector; a one-layer graph counted by hand).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mechnb.exercises._core import Case, CheckResult, exercise, run_cases

__all__ = ["check_split_qkv", "check_partial_rotary", "check_parallel_edges",
           "solution_split_qkv", "solution_partial_rotary", "solution_parallel_edges"]

NOTEBOOK = "05_bring_your_own_model"


# --------------------------------------------------------------------------------------------
# 5.1 GPT-2's fused qkv weight
# --------------------------------------------------------------------------------------------
def solution_split_qkv(c_attn_weight: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``c_attn_weight [d, 3d]`` (a ``Conv1D``: input rows, output columns ``[q | k | v]``, heads
    contiguous in each third) -> ``W_Q, W_K, W_V``, each ``[n_heads, d, d_head]``."""
    d = c_attn_weight.shape[0]
    d_head = d // n_heads
    parts = c_attn_weight.split(d, dim=1)  # three [d, d]
    return tuple(p.reshape(d, n_heads, d_head).permute(1, 0, 2) for p in parts)  # type: ignore[return-value]


def _gpt2_cases() -> list[Case]:
    import transformers

    from mechnb.interop import from_hf

    cases = []
    for layers, d, heads, seed in ((1, 16, 2, 0), (2, 24, 3, 1), (1, 32, 8, 2)):
        torch.manual_seed(seed)
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=layers, n_embd=d, n_head=heads,
                                                                  vocab_size=11, n_positions=8,
                                                                  bos_token_id=0, eos_token_id=0))
        model = from_hf(hf)
        W = hf.transformer.h[-1].attn.c_attn.weight.detach().clone()
        a = model.blocks[-1].attn
        cases.append(Case((W, heads), (a.W_Q.detach(), a.W_K.detach(), a.W_V.detach()),
                          label=f"random GPT-2, d_model {d}, {heads} heads (c_attn.weight {tuple(W.shape)})",
                          hint="split the columns into thirds first, then each third into heads: "
                               "reshape(d, n_heads, d_head) and move the head axis to the front"))
    return cases


@exercise("5.1", "GPT-2's fused query/key/value weight", notebook=NOTEBOOK)
def check_split_qkv(fn: Callable[[torch.Tensor, int], Any]) -> CheckResult:
    """Check ``fn(c_attn_weight [d, 3d], n_heads) -> (W_Q, W_K, W_V)``, each ``[n_heads, d, d_head]``,
    against the weights :func:`mechnb.interop.from_hf` gives random GPT-2 models."""
    return run_cases(fn, _gpt2_cases(), atol=0, rtol=0)


# --------------------------------------------------------------------------------------------
# 5.2 partial rotary embedding
# --------------------------------------------------------------------------------------------
def solution_partial_rotary(x: torch.Tensor, rotary_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Rotate queries or keys ``x [pos, d_head]``: the first ``rotary_dim`` features as pairs
    ``(i, i + rotary_dim/2)`` by angle ``pos * base^(-2i/rotary_dim)``; the rest unchanged."""
    n, half = x.shape[0], rotary_dim // 2
    theta = base ** (-torch.arange(half, dtype=torch.float64) * 2 / rotary_dim)  # [half]
    angle = torch.arange(n, dtype=torch.float64)[:, None] * theta[None, :]  # [pos, half]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[:, :half], x[:, half:rotary_dim]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[:, rotary_dim:]], dim=1)


def _rotary_cases() -> list[Case]:
    from mechnb.models import Attention

    cases = []
    # closed form: a unit vector on feature 0 of a 2-dim rotary block turns by angle pos (theta_0 = 1)
    e0 = torch.zeros(4, 2, dtype=torch.float64)
    e0[:, 0] = 1.0
    want = torch.stack([torch.cos(torch.arange(4.0)), torch.sin(torch.arange(4.0))], 1).to(torch.float64)
    cases.append(Case((e0, 2), want, label="x = e_0 at 4 positions, rotary_dim 2: (cos pos, sin pos)",
                      hint="pair feature i with feature i + rotary_dim/2 (halves, not neighbours)"))
    g = torch.Generator().manual_seed(0)
    for d_head, rot, base in ((8, 4, 10000.0), (8, 8, 10000.0), (16, 4, 500.0)):
        attn = Attention(d_head, 1, d_head, 12, rotary_dim=rot, rotary_base=base)
        x = torch.randn(12, d_head, generator=g)
        cases.append(Case((x, rot, base), attn.rotate(x, pos_dim=0),
                          label=f"random x [12, {d_head}], rotary_dim {rot}, base {base:g}",
                          hint="features past rotary_dim pass unchanged; the angle is pos * base^(-2i/rotary_dim)"))
    return cases


@exercise("5.2", "rotary embedding on part of a head", notebook=NOTEBOOK)
def check_partial_rotary(fn: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``fn(x [pos, d_head], rotary_dim, base=10000.0) -> [pos, d_head]`` against a closed form
    and ``Attention.rotate`` (what :func:`mechnb.interop.from_hf` gives a Pythia model)."""
    return run_cases(fn, _rotary_cases(), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# 5.3 the edges of parallel blocks
# --------------------------------------------------------------------------------------------
def solution_parallel_edges(n_layers: int, n_heads: int) -> int:
    """The number of edges of a graph whose blocks run attention and MLP in parallel.

    Writers before layer ``l``: ``1 + l (H + 1)``. Its ``3H`` head inputs and (in a parallel block)
    its MLP input read all of them; ``logits`` reads all ``1 + L (H + 1)`` writers."""
    H = n_heads
    before = [1 + layer * (H + 1) for layer in range(n_layers)]
    return sum((3 * H + 1) * b for b in before) + 1 + n_layers * (H + 1)


def _parallel_cases() -> list[Case]:
    from mechnb.circuits import Graph

    hint = "in a parallel block the MLP reads the block's input, so it sees no head of its own layer"
    cases = [Case((1, 1), 4 + 3, label="1 layer, 1 head: input->{q,k,v,m0} and {input,a0.h0,m0}->logits",
                  hint=hint)]
    for L, H in ((2, 4), (3, 2), (6, 8)):
        cases.append(Case((L, H), Graph(L, H, parallel=True).n_edges, label=f"{L} layers, {H} heads", hint=hint))
    return cases


@exercise("5.3", "edges of parallel blocks", notebook=NOTEBOOK)
def check_parallel_edges(fn: Callable[[int, int], int]) -> CheckResult:
    """Check ``fn(n_layers, n_heads) -> number of edges`` of the graph of parallel blocks against a
    count by hand and :class:`mechnb.circuits.Graph` with ``parallel=True``."""
    return run_cases(fn, _parallel_cases(), atol=0, rtol=0)
