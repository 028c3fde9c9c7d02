"""LoRA adapters for :class:`~mechnb.models.TinyTransformer` (Hu et al. 2021, arXiv:2106.09685).

The low-rank baseline of circuit-tuning (:func:`mechnb.circuits.finetune` with ``mode="lora"``):
every attention and MLP weight ``W`` is replaced by ``W + (alpha / r) A B`` (Hu et al. 2021,
Sec. 4.1, Eq. 3) with trainable ``A [rows, r]``, ``B [r, cols]`` and ``W`` frozen.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from mechnb._checks import check_positive_float, check_positive_int
from mechnb.models import TinyTransformer

__all__ = ["LoRA"]


class LoRA(nn.Module):
    """Low-rank adapters ``W + (alpha / r) A B`` on every attention and MLP weight of a TinyTransformer.

    Attention weights are adapted as the whole matrices a dense implementation would hold
    (``W_Q`` as ``[d_model, n_heads * d_head]``, ``W_O`` as ``[n_heads * d_head, d_model]``), MLP
    weights as they are. ``A`` is Kaiming-uniform, ``B`` zero, so training starts at the base model.
    The base model's parameters are not modified until :meth:`merge`.
    """

    TARGETS = ("attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "mlp.W_in", "mlp.W_out")

    def __init__(self, model: TinyTransformer, rank: int = 4, alpha: float = 8.0, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(model, TinyTransformer):
            raise TypeError(f"model: expected a mechnb.models.TinyTransformer, got {type(model).__name__}")
        self.rank = check_positive_int("rank", rank)
        self.scale = check_positive_float("alpha", alpha) / rank
        object.__setattr__(self, "base", model)  # not a submodule: only the adapters are LoRA parameters
        g = torch.Generator().manual_seed(seed)
        self.names: list[str] = []
        self.A = nn.ParameterList()
        self.B = nn.ParameterList()
        for name, p in model.named_parameters():
            if not any(name.endswith(t) for t in self.TARGETS):
                continue
            rows, cols = self._matrix_shape(name, p)
            bound = 1.0 / math.sqrt(rows)
            self.A.append(nn.Parameter((torch.rand(rows, rank, generator=g) * 2 - 1).mul_(bound).to(p.device)))
            self.B.append(nn.Parameter(torch.zeros(rank, cols, device=p.device)))
            self.names.append(name)

    @staticmethod
    def _matrix_shape(name: str, p: torch.Tensor) -> tuple[int, int]:
        if name.endswith("W_O"):
            return p.shape[0] * p.shape[1], p.shape[2]
        if name.split(".")[-1] in ("W_Q", "W_K", "W_V"):
            return p.shape[1], p.shape[0] * p.shape[2]
        return p.shape[0], p.shape[1]

    def delta(self, i: int) -> torch.Tensor:
        """The update of adapted weight ``names[i]`` in the parameter's own shape."""
        p = dict(self.base.named_parameters())[self.names[i]]
        d = (self.A[i] @ self.B[i]) * self.scale
        name = self.names[i]
        if name.endswith("W_O"):
            return d.view(p.shape)
        if name.split(".")[-1] in ("W_Q", "W_K", "W_V"):
            return d.view(p.shape[1], p.shape[0], p.shape[2]).permute(1, 0, 2)
        return d

    def adapted(self) -> dict[str, torch.Tensor]:
        params = dict(self.base.named_parameters())
        return {n: params[n].detach() + self.delta(i) for i, n in enumerate(self.names)}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.base, self.adapted(), (tokens,), strict=False)

    @torch.no_grad()
    def merged(self) -> TinyTransformer:
        """A copy of the base model with the adapters merged into its weights."""
        m = copy.deepcopy(self.base)
        params = dict(m.named_parameters())
        for i, n in enumerate(self.names):
            params[n].add_(self.delta(i))
        return m

    @torch.no_grad()
    def merge(self) -> TinyTransformer:
        """Merge the adapters into the base model in place and return it."""
        params = dict(self.base.named_parameters())
        for i, n in enumerate(self.names):
            params[n].add_(self.delta(i))
            self.B[i].zero_()
        return self.base

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
