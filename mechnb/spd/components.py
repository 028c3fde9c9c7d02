"""The parameters SPD learns: rank-one subcomponents and their causal-importance functions.

For each decomposed weight ``W_l (d_out, d_in)`` SPD learns ``C`` rank-one subcomponents
``W_l ~= sum_c U_l[:, c] V_l[:, c]^T = U_l V_l^T`` (Bushnaq, Braun & Sharkey 2025,
https://arxiv.org/abs/2506.20790, method section) and, per subcomponent, a tiny MLP ``Gamma_{l,c}``
(``1 -> ci_hidden -> 1``, GELU) that reads the subcomponent's inner activation ``V_l[:, c]^T a``
and outputs its causal importance through a hard sigmoid.

All ``L x C`` CI MLPs are evaluated by one batched broadcast/einsum, never a Python loop.
Tied layers (TMS: ``linear2.weight = linear1.weight.T``) reuse the source layer's vectors with
``U`` and ``V`` swapped, so ``U_2 V_2^T = (U_1 V_1^T)^T`` holds exactly throughout training.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mechnb.io import saveable

__all__ = [
    "lower_leaky_hard_sigmoid",
    "upper_leaky_hard_sigmoid",
    "CausalImportanceMLPs",
    "SPDComponents",
]


def lower_leaky_hard_sigmoid(x: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """``alpha * x`` for ``x < 0``, ``x`` on ``[0, 1]``, ``1`` above (paper, method section).

    Used for the causal importances that build the masks: leaky below so that a subcomponent
    whose CI went negative still gets a gradient from the reconstruction losses.
    """
    return torch.where(x > 0, x.clamp(max=1.0), alpha * x)


def upper_leaky_hard_sigmoid(x: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """``0`` for ``x < 0``, ``x`` on ``[0, 1]``, ``1 + alpha (x - 1)`` above (paper, method section).

    Used inside the importance-minimality loss: leaky above so that a CI pushed past 1 is
    still pulled back down.
    """
    return torch.where(x > 1, 1.0 + alpha * (x - 1.0), x.clamp(min=0.0))


class _ChunkedCIMLP(torch.autograd.Function):
    """Forward and backward of the ``L x C`` CI MLPs, streamed over row chunks.

    The hidden activations ``(N, L, C, H)`` are never stored: each chunk of rows is small
    enough to stay in the CPU's L2 cache, and the backward pass recomputes its chunk's
    pre-activations instead of reading them back from memory. Gradients are exactly those of
    the plain autograd graph (``CausalImportanceMLPs.reference``); on the TMS 40-10 shapes this
    is ~4x faster and saves ~4 copies of the ``N x L x C x H`` hidden tensor.
    """

    @staticmethod
    def forward(ctx, x, W_in, b_in, W_out, b_out, chunk):  # type: ignore[override]
        out = torch.empty_like(x)
        for s in range(0, x.shape[0], chunk):
            h = F.gelu(torch.addcmul(b_in, x[s : s + chunk].unsqueeze(-1), W_in))
            torch.sum(h.mul_(W_out), dim=-1, out=out[s : s + chunk])
        out.add_(b_out)
        ctx.save_for_backward(x, W_in, b_in, W_out)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, W_in, b_in, W_out = ctx.saved_tensors
        chunk = ctx.chunk
        grad_out = grad_out.contiguous()
        gx = torch.empty_like(x)
        gW_in, gb_in, gW_out = torch.zeros_like(W_in), torch.zeros_like(b_in), torch.zeros_like(W_out)
        for s in range(0, x.shape[0], chunk):
            xs, gs = x[s : s + chunk].unsqueeze(-1), grad_out[s : s + chunk].unsqueeze(-1)
            pre = torch.addcmul(b_in, xs, W_in)  # (n, L, C, H), recomputed
            gW_out += F.gelu(pre).mul_(gs).sum(0)
            gpre = torch.ops.aten.gelu_backward(gs * W_out, pre)
            gb_in += gpre.sum(0)
            torch.sum(gpre * W_in, dim=-1, out=gx[s : s + chunk])
            gW_in += gpre.mul_(xs).sum(0)
        return gx, gW_in, gb_in, gW_out, grad_out.sum(0), None


class CausalImportanceMLPs(nn.Module):
    """``L x C`` independent MLPs ``1 -> H -> 1`` with GELU, evaluated in one batched op.

    Parameters (``L`` layers, ``C`` subcomponents, ``H = ci_hidden``): ``W_in, b_in, W_out``
    of shape ``(L, C, H)`` and ``b_out (L, C)``. Initialisation as in the authors' code:
    ``W_in ~ N(0, 2)`` (Kaiming, fan-in 1), ``W_out ~ N(0, 1/H)``, biases 0.

    ``forward(inner)`` maps inner activations ``(N, L, C)`` to CI pre-activations ``(N, L, C)``:
    ``out[n,l,c] = sum_h W_out[l,c,h] * gelu(inner[n,l,c] * W_in[l,c,h] + b_in[l,c,h]) + b_out[l,c]``
    (paper, method section). All ``L x C`` MLPs are evaluated together by broadcasting, streamed over
    cache-sized row chunks by a custom autograd function (:meth:`reference` is the plain
    autograd version, used by the tests to check the gradients).
    """

    #: target number of hidden activations per chunk (~1 MiB of float32, fits in L2)
    chunk_elements: int = 1 << 18

    def __init__(self, n_layers: int, C: int, hidden: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.n_layers, self.C, self.hidden = n_layers, C, hidden
        self.W_in = nn.Parameter(torch.randn(n_layers, C, hidden, generator=generator) * 2**0.5)
        self.b_in = nn.Parameter(torch.zeros(n_layers, C, hidden))
        self.W_out = nn.Parameter(torch.randn(n_layers, C, hidden, generator=generator) / hidden**0.5)
        self.b_out = nn.Parameter(torch.zeros(n_layers, C))

    def reference(self, inner: torch.Tensor) -> torch.Tensor:
        """The same function as :meth:`forward` through plain autograd (materialises ``(N, L, C, H)``)."""
        hid = F.gelu(torch.addcmul(self.b_in, inner.unsqueeze(-1), self.W_in))
        return (hid * self.W_out).sum(dim=-1) + self.b_out

    def forward(self, inner: torch.Tensor) -> torch.Tensor:
        per_row = self.n_layers * self.C * self.hidden
        chunk = max(8, self.chunk_elements // per_row)
        return _ChunkedCIMLP.apply(inner.contiguous(), self.W_in, self.b_in, self.W_out, self.b_out, chunk)


@saveable()
class SPDComponents(nn.Module):
    """Subcomponents ``U_l (d_out, C)``, ``V_l (d_in, C)`` for every decomposed layer + CI MLPs.

    Args:
        shapes: ``{layer name: (d_out, d_in)}`` in decomposition order.
        C: subcomponents per layer.
        ci_hidden: hidden width of each CI MLP.
        tied: ``{tied layer: source layer}``: the tied layer's ``U`` is the source's ``V`` and its
            ``V`` the source's ``U`` (so ``W_tied = W_source^T`` in components too).

    Stored parameters are named ``U.<i>`` / ``V.<i>`` for the untied layers (index into
    ``names``); :meth:`U` / :meth:`V` resolve ties.
    """

    def __init__(
        self,
        shapes: dict[str, tuple[int, int]],
        C: int,
        ci_hidden: int,
        tied: dict[str, str] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.names: list[str] = list(shapes)
        self.shapes = dict(shapes)
        self.C = C
        self.tied = dict(tied or {})
        for t, s in self.tied.items():
            if t not in shapes or s not in shapes or s in self.tied:
                raise ValueError(f"tied: {t!r} -> {s!r} must map a decomposed layer to an untied decomposed layer")
            if shapes[t] != tuple(reversed(shapes[s])):
                raise ValueError(f"tied: {t!r} has shape {shapes[t]}, expected the transpose of {s!r} {shapes[s]}")
        self.U_params = nn.ParameterDict()
        self.V_params = nn.ParameterDict()
        for i, name in enumerate(self.names):
            if name in self.tied:
                continue
            d_out, d_in = shapes[name]
            self.U_params[str(i)] = nn.Parameter(torch.randn(d_out, C, generator=generator))
            self.V_params[str(i)] = nn.Parameter(torch.randn(d_in, C, generator=generator))
        self.ci = CausalImportanceMLPs(len(self.names), C, ci_hidden, generator=generator)

    # -- saving (mechnb.io) ---------------------------------------------
    def to_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, construction arguments)`` for :func:`mechnb.io.save`.

        Tensors: the ``state_dict`` - ``U_params.<i>`` ``(d_out, C)``, ``V_params.<i>`` ``(d_in, C)``
        and the CI MLPs' ``ci.W_in``, ``ci.b_in``, ``ci.W_out`` ``(L, C, H)``, ``ci.b_out`` ``(L, C)``;
        arguments: ``shapes``, ``C``, ``ci_hidden`` and ``tied``.
        """
        meta = {"shapes": {n: (int(s[0]), int(s[1])) for n, s in self.shapes.items()}, "C": self.C,
                "ci_hidden": self.ci.hidden, "tied": dict(self.tied)}
        return {k: v.detach() for k, v in self.state_dict().items()}, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> SPDComponents:
        """Rebuild from :meth:`to_state`'s output (the state loaded strictly, dtypes as stored)."""
        comps = cls(meta["shapes"], meta["C"], meta["ci_hidden"], tied=meta["tied"])
        comps.load_state_dict(tensors, strict=True, assign=True)
        return comps

    # ------------------------------------------------------------------
    def U(self, name: str) -> torch.Tensor:
        """``U_l`` of shape ``(d_out, C)`` (the source's ``V`` for a tied layer)."""
        if name in self.tied:
            return self.V_params[str(self.names.index(self.tied[name]))]
        return self.U_params[str(self.names.index(name))]

    def V(self, name: str) -> torch.Tensor:
        """``V_l`` of shape ``(d_in, C)`` (the source's ``U`` for a tied layer)."""
        if name in self.tied:
            return self.U_params[str(self.names.index(self.tied[name]))]
        return self.V_params[str(self.names.index(name))]

    def weight(self, name: str) -> torch.Tensor:
        """The reassembled weight ``U_l V_l^T`` of shape ``(d_out, d_in)``."""
        return self.U(name) @ self.V(name).T

    def subcomponent_weights(self, name: str) -> torch.Tensor:
        """All rank-one matrices ``U_l[:, c] V_l[:, c]^T`` stacked: ``(C, d_out, d_in)``."""
        U, V = self.U(name), self.V(name)
        return torch.einsum("oc,ic->coi", U, V)

    @torch.no_grad()
    def init_from_targets(self, targets: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> None:
        """Authors' initialisation: unit-norm random ``U_c``, ``V_c``, then scale ``U_c`` by ``U_c^T W V_c``.

        Each subcomponent starts as the projection of ``W`` onto its own random rank-one direction.
        """
        for i, name in enumerate(self.names):
            if name in self.tied:
                continue
            U, V = self.U_params[str(i)], self.V_params[str(i)]
            U.copy_(torch.randn(U.shape, generator=generator).to(U))
            V.copy_(torch.randn(V.shape, generator=generator).to(V))
            U.div_(U.norm(dim=0, keepdim=True))
            V.div_(V.norm(dim=0, keepdim=True))
            scale = torch.einsum("oc,oi,ic->c", U, targets[name], V)
            U.mul_(scale)

    def inner_acts(self, name: str, a: torch.Tensor) -> torch.Tensor:
        """``V_l^T a``: ``(..., d_in) -> (..., C)``."""
        return a @ self.V(name)

    def component_forward(
        self, name: str, a: torch.Tensor, mask: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """``U_l (m * V_l^T a) + b``: ``(..., d_in) -> (..., d_out)``; ``mask`` ``(..., C)`` or ``None`` (all 1)."""
        h = a @ self.V(name)
        if mask is not None:
            h = h * mask
        out = h @ self.U(name).T
        return out if bias is None else out + bias
