"""Exercises 5.1-5.3 (notebook 05): the reference solutions pass, typical mistakes fail."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason="the hf extra (pip install mechnb[hf]) is not installed")

from mechnb.exercises import interop  # noqa: E402


def test_reference_solutions_pass() -> None:
    assert interop.check_split_qkv(interop.solution_split_qkv).passed
    assert interop.check_partial_rotary(interop.solution_partial_rotary).passed
    assert interop.check_parallel_edges(interop.solution_parallel_edges).passed


def test_typical_mistakes_fail() -> None:
    def heads_first(W: torch.Tensor, n_heads: int):  # splits heads before the q|k|v thirds
        d = W.shape[0]
        return tuple(W.reshape(d, n_heads, 3, d // n_heads).permute(2, 1, 0, 3))

    def no_permute(W: torch.Tensor, n_heads: int):  # reshapes [d, d] straight to [H, d, e]
        d = W.shape[0]
        return tuple(p.reshape(n_heads, d, d // n_heads) for p in W.split(d, dim=1))

    assert not interop.check_split_qkv(heads_first).passed
    assert not interop.check_split_qkv(no_permute).passed

    def interleaved(x: torch.Tensor, rotary_dim: int, base: float = 10000.0) -> torch.Tensor:  # GPT-J layout
        n, half = x.shape[0], rotary_dim // 2
        theta = base ** (-torch.arange(half, dtype=torch.float64) * 2 / rotary_dim)
        a = torch.arange(n, dtype=torch.float64)[:, None] * theta
        cos, sin = a.cos().to(x.dtype), a.sin().to(x.dtype)
        x1, x2 = x[:, 0:rotary_dim:2], x[:, 1:rotary_dim:2]
        out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).reshape(n, rotary_dim)
        return torch.cat([out, x[:, rotary_dim:]], 1)

    def whole_head(x: torch.Tensor, rotary_dim: int, base: float = 10000.0) -> torch.Tensor:  # ignores rotary_dim
        return interop.solution_partial_rotary(x, x.shape[1], base)

    assert not interop.check_partial_rotary(interleaved).passed
    assert not interop.check_partial_rotary(whole_head).passed

    def sequential(n_layers: int, n_heads: int) -> int:  # counts the head -> own MLP edges too
        return interop.solution_parallel_edges(n_layers, n_heads) + n_layers * n_heads

    assert not interop.check_parallel_edges(sequential).passed
