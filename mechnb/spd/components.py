"""The parameters SPD learns: rank-one subcomponents and their causal-importance functions.

For each decomposed weight ``W_l (d_out, d_in)`` SPD learns ``C`` rank-one subcomponents
``W_l ~= sum_c U_l[:, c] V_l[:, c]^T = U_l V_l^T`` (Bushnaq, Braun & Sharkey 2025,
https://arxiv.org/abs/2506.20790, method section) and causal-importance functions whose
pre-activations go through a hard sigmoid. Three kinds of CI function (``SPDConfig.ci_fn``):

* ``"scalar"`` (the paper): per subcomponent a tiny MLP ``Gamma_{l,c}`` (``1 -> ci_hidden -> 1``,
  GELU) reading the subcomponent's inner activation ``V_l[:, c]^T a`` (:class:`CausalImportanceMLPs`);
  all ``L x C`` MLPs are evaluated by one batched broadcast, never a Python loop;
* ``"vector"`` (the authors' later code): per subcomponent an MLP ``d_in -> ci_hidden -> 1`` reading
  the whole layer input ``a`` (:class:`VectorCIMLPs`);
* ``"shared"`` (the authors' later code): *one* MLP per layer, ``d_in -> ci_hidden -> C``, reading
  ``a`` and giving all ``C`` pre-activations at once (:class:`SharedCIMLPs`).

Tied layers (TMS: ``linear2.weight = linear1.weight.T``) reuse the source layer's vectors with
``U`` and ``V`` swapped, so ``U_2 V_2^T = (U_1 V_1^T)^T`` holds exactly throughout training.

The *delta component* (``SPDConfig.delta_component``, the authors' later code) is the residual
``Delta_l = W_l - U_l V_l^T``, added to a replaced layer as one more subcomponent whose mask is the
last column of a ``(..., C + 1)`` mask (:meth:`SPDComponents.component_forward`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mechnb._checks import check_choice, check_positive_float, check_tensor
from mechnb.io import saveable

__all__ = [
    "lower_leaky_hard_sigmoid",
    "upper_leaky_hard_sigmoid",
    "lower_leaky_backward_hard_sigmoid",
    "CI_FNS",
    "LOWER_SIGMOIDS",
    "CausalImportanceMLPs",
    "VectorCIMLPs",
    "SharedCIMLPs",
    "SPDComponents",
]

#: kinds of causal-importance function (``SPDConfig.ci_fn``)
CI_FNS = ("scalar", "vector", "shared")
#: hard sigmoids for the masks' causal importances (``SPDConfig.lower_sigmoid``)
LOWER_SIGMOIDS = ("leaky", "leaky_backward")


# --------------------------------------------------------------------------------------
# Hard sigmoids
# --------------------------------------------------------------------------------------
def _check_sigmoid_args(x: Any, alpha: Any) -> float:
    check_tensor("x", x, floating=True)  # NaN / inf rejected: a hard sigmoid of NaN has no meaning here
    return check_positive_float("alpha", alpha, allow_zero=True)


def _lower_leaky(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.where(x > 0, x.clamp(max=1.0), alpha * x)


def _upper_leaky(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.where(x > 1, 1.0 + alpha * (x - 1.0), x.clamp(min=0.0))


class _LeakyBackwardHardSigmoid(torch.autograd.Function):
    """``clamp(x, 0, 1)`` forward; backward 1 on ``(0, 1]``, 0 above 1, and below 0 ``alpha`` only
    where the incoming gradient is negative (the loss asks for a larger importance), else 0."""

    @staticmethod
    def forward(ctx, x, alpha):  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        zero = torch.zeros((), dtype=grad_out.dtype, device=grad_out.device)
        below = torch.where(grad_out < 0, ctx.alpha * grad_out, zero)
        return torch.where(x <= 0, below, torch.where(x <= 1, grad_out, zero)), None


def _lower_leaky_backward(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return _LeakyBackwardHardSigmoid.apply(x, alpha)


def lower_leaky_hard_sigmoid(x: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """``alpha * x`` for ``x < 0``, ``x`` on ``[0, 1]``, ``1`` above (paper, method section).

    Used for the causal importances that build the masks: leaky below so that a subcomponent
    whose CI went negative still gets a gradient from the reconstruction losses.

    Args:
        x: CI pre-activations, any shape (finite; NaN or inf raise ``ValueError``).
        alpha: slope below 0 (paper: 0.01), ``>= 0``.
    """
    return _lower_leaky(x, _check_sigmoid_args(x, alpha))


def upper_leaky_hard_sigmoid(x: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """``0`` for ``x < 0``, ``x`` on ``[0, 1]``, ``1 + alpha (x - 1)`` above (paper, method section).

    Used inside the importance-minimality loss: leaky above so that a CI pushed past 1 is
    still pulled back down. ``x`` must be finite (NaN or inf raise ``ValueError``).
    """
    return _upper_leaky(x, _check_sigmoid_args(x, alpha))


def lower_leaky_backward_hard_sigmoid(x: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """The lower hard sigmoid of the authors' later code (``SPDConfig.lower_sigmoid="leaky_backward"``).

    Forward ``clamp(x, 0, 1)``: masks are never built from a negative importance. Backward: slope
    1 on ``(0, 1]``, 0 above 1, and for ``x <= 0`` the slope ``alpha`` *only where the incoming
    gradient is negative* (where a larger importance would lower the loss), 0 elsewhere. The
    leak can still revive a subcomponent that the reconstruction needs, but no longer pushes a
    dead one ever further below 0 - over long runs the paper's version lets dead pre-activations
    drift without bound.
    """
    return _lower_leaky_backward(x, _check_sigmoid_args(x, alpha))


_LOWER = {"leaky": _lower_leaky, "leaky_backward": _lower_leaky_backward}


def lower_sigmoid_fn(kind: str):
    """The unchecked lower hard sigmoid ``(x, alpha) -> tensor`` of kind ``"leaky"`` or ``"leaky_backward"``."""
    return _LOWER[check_choice("lower_sigmoid", kind, list(LOWER_SIGMOIDS))]


# --------------------------------------------------------------------------------------
# Causal-importance functions
# --------------------------------------------------------------------------------------
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


class VectorCIMLPs(nn.Module):
    """Per subcomponent an MLP ``d_in -> H -> 1`` (GELU) on the whole layer input ``a`` (``ci_fn="vector"``).

    Parameters per layer ``l`` (index ``str(l)``): ``W_in (C, d_in, H)`` ~ ``N(0, 2 / d_in)``,
    ``b_in (C, H)``, ``W_out (C, H)`` ~ ``N(0, 1 / H)``, ``b_out (C,)``.
    ``forward(acts)`` maps the layer inputs ``[(N, d_in_l)]`` to pre-activations ``(N, L, C)``.
    """

    def __init__(self, d_ins: list[int], C: int, hidden: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.C, self.hidden = C, hidden
        self.W_in, self.b_in = nn.ParameterList(), nn.ParameterList()
        self.W_out, self.b_out = nn.ParameterList(), nn.ParameterList()
        for d in d_ins:
            self.W_in.append(nn.Parameter(torch.randn(C, d, hidden, generator=generator) * math.sqrt(2.0 / d)))
            self.b_in.append(nn.Parameter(torch.zeros(C, hidden)))
            self.W_out.append(nn.Parameter(torch.randn(C, hidden, generator=generator) / hidden**0.5))
            self.b_out.append(nn.Parameter(torch.zeros(C)))

    def forward(self, acts: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for l, a in enumerate(acts):
            h = F.gelu(torch.einsum("nd,cdh->nch", a, self.W_in[l]) + self.b_in[l])
            out.append(torch.einsum("nch,ch->nc", h, self.W_out[l]) + self.b_out[l])
        return torch.stack(out, dim=1)


class SharedCIMLPs(nn.Module):
    """One MLP per layer, ``d_in -> H -> C`` (GELU), on the layer input ``a`` (``ci_fn="shared"``).

    Parameters per layer ``l``: ``W_in (d_in, H)`` ~ ``N(0, 2 / d_in)``, ``b_in (H,)``,
    ``W_out (H, C)`` ~ ``N(0, 1 / H)``, ``b_out (C,)``: the ``C`` importances of a layer share one
    hidden layer, so a subcomponent's importance can depend on the whole input, not only on its
    own inner activation. ``forward(acts)``: ``[(N, d_in_l)]`` -> ``(N, L, C)``.
    """

    def __init__(self, d_ins: list[int], C: int, hidden: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.C, self.hidden = C, hidden
        self.W_in, self.b_in = nn.ParameterList(), nn.ParameterList()
        self.W_out, self.b_out = nn.ParameterList(), nn.ParameterList()
        for d in d_ins:
            self.W_in.append(nn.Parameter(torch.randn(d, hidden, generator=generator) * math.sqrt(2.0 / d)))
            self.b_in.append(nn.Parameter(torch.zeros(hidden)))
            self.W_out.append(nn.Parameter(torch.randn(hidden, C, generator=generator) / hidden**0.5))
            self.b_out.append(nn.Parameter(torch.zeros(C)))

    def forward(self, acts: list[torch.Tensor]) -> torch.Tensor:
        out = [F.gelu(a @ self.W_in[l] + self.b_in[l]) @ self.W_out[l] + self.b_out[l] for l, a in enumerate(acts)]
        return torch.stack(out, dim=1)


@saveable()
class SPDComponents(nn.Module):
    """Subcomponents ``U_l (d_out, C)``, ``V_l (d_in, C)`` for every decomposed layer + CI functions.

    Args:
        shapes: ``{layer name: (d_out, d_in)}`` in decomposition order.
        C: subcomponents per layer.
        ci_hidden: hidden width of the CI functions.
        tied: ``{tied layer: source layer}``: the tied layer's ``U`` is the source's ``V`` and its
            ``V`` the source's ``U`` (so ``W_tied = W_source^T`` in components too).
        generator: seeds the initialisation.
        ci_fn: ``"scalar"`` (paper), ``"vector"`` or ``"shared"`` (module docstring).

    Stored parameters are named ``U.<i>`` / ``V.<i>`` for the untied layers (index into
    ``names``); :meth:`U` / :meth:`V` resolve ties. The CI functions are ``ci``.
    """

    def __init__(
        self,
        shapes: dict[str, tuple[int, int]],
        C: int,
        ci_hidden: int,
        tied: dict[str, str] | None = None,
        generator: torch.Generator | None = None,
        ci_fn: str = "scalar",
    ) -> None:
        super().__init__()
        check_choice("ci_fn", ci_fn, list(CI_FNS))
        self.names: list[str] = list(shapes)
        self.shapes = dict(shapes)
        self.C = C
        self.ci_fn = ci_fn
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
        self.ci: nn.Module
        if ci_fn == "scalar":
            self.ci = CausalImportanceMLPs(len(self.names), C, ci_hidden, generator=generator)
        else:
            d_ins = [shapes[n][1] for n in self.names]
            cls = VectorCIMLPs if ci_fn == "vector" else SharedCIMLPs
            self.ci = cls(d_ins, C, ci_hidden, generator=generator)

    # ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(iter(self.U_params.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.U_params.values())).dtype

    # -- saving (mechnb.io) ---------------------------------------------
    def to_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, construction arguments)`` for :func:`mechnb.io.save`.

        Tensors: the ``state_dict`` - ``U_params.<i>`` ``(d_out, C)``, ``V_params.<i>`` ``(d_in, C)``
        and the CI functions' parameters ``ci.*``; arguments: ``shapes``, ``C``, ``ci_hidden``,
        ``tied`` and ``ci_fn``.
        """
        meta = {"shapes": {n: (int(s[0]), int(s[1])) for n, s in self.shapes.items()}, "C": self.C,
                "ci_hidden": self.ci.hidden, "tied": dict(self.tied), "ci_fn": self.ci_fn}
        return {k: v.detach() for k, v in self.state_dict().items()}, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> SPDComponents:
        """Rebuild from :meth:`to_state`'s output (the state loaded strictly, dtypes as stored)."""
        comps = cls(meta["shapes"], meta["C"], meta["ci_hidden"], tied=meta["tied"], ci_fn=meta["ci_fn"])
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

    def ci_pre_activations(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        """CI pre-activations ``(N, L, C)`` from the layer inputs ``acts = {layer: a_l (N, d_in)}``.

        ``"scalar"``: ``Gamma_{l,c}(V_l[:, c]^T a_l)`` (the inner activations are not detached, so
        the importance and reconstruction losses also shape ``V``); ``"vector"`` / ``"shared"``:
        the MLPs read ``a_l`` itself.
        """
        if self.ci_fn == "scalar":
            return self.ci(torch.stack([acts[n] @ self.V(n) for n in self.names], dim=1))
        return self.ci([acts[n] for n in self.names])

    def component_forward(
        self, name: str, a: torch.Tensor, mask: torch.Tensor | None, bias: torch.Tensor | None,
        target_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``U_l (m * V_l^T a) + b``: ``(..., d_in) -> (..., d_out)``.

        ``mask``: ``None`` (all subcomponents kept, mask 1), ``(..., C)``, or ``(..., C + 1)`` whose
        last column masks the delta component ``Delta_l = target_weight - U_l V_l^T``:
        ``U_l (m[:C] * V_l^T a) + m[C] * Delta_l a + b`` (``target_weight (d_out, d_in)`` required).
        """
        U, V = self.U(name), self.V(name)
        h = a @ V
        if mask is not None:
            h = h * mask[..., : self.C]
        out = h @ U.T
        if mask is not None and mask.shape[-1] == self.C + 1:
            if target_weight is None:
                raise ValueError(f"mask: {self.C + 1} columns mask the delta component of {name!r}, "
                                 "which needs target_weight")
            delta = target_weight - U @ V.T
            out = out + mask[..., self.C :] * (a @ delta.T)
        return out if bias is None else out + bias
