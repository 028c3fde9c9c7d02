"""Layer addressing for :class:`mechnb.models.MLP` used by every degeneracy measure.

**Layer index convention** (used throughout :mod:`mechnb.degeneracy`): an MLP with
``L = len(model.layers)`` linear maps has ``L + 1`` *layers* of activations ``f^0 ... f^L``:

* ``layer 0`` is the input ``x`` (width ``sizes[0]``);
* ``layer l`` for ``1 <= l <= L - 1`` is the post-activation output of ``model.layers[l-1]``
  (width ``sizes[l]``), i.e. ``acts[l-1]`` of ``model(x, return_activations=True)``;
* ``layer L`` is the model output (logits, no activation).

``model.layers[l]`` (the *weight block* ``l``) maps layer ``l`` to the pre-activations
``p^{l+1} = W f^l + b`` of layer ``l + 1``. With the bias folded in, the block acts on
``[f^l, 1]``, which is why Gram matrices append a constant-1 entry (``with_bias``).

All helpers compute in float64 on the model's device.
"""

from __future__ import annotations

import torch
from torch import nn

from mechnb._checks import check_float_input, check_materialized, check_tensor

__all__ = ["check_mlp", "check_layer", "check_inputs", "mlp_forward", "act_derivative", "block_weight",
           "block_jacobian_factors", "ext_block_jacobian", "output_jacobian"]


def check_mlp(model: nn.Module, name: str = "model") -> None:
    """Require a :class:`mechnb.models.MLP` (layer addressing is defined for it) with finite, materialised weights."""
    from mechnb.models import MLP

    if not isinstance(model, MLP):
        raise TypeError(f"{name}: expected a mechnb.models.MLP (layers[i], forward(x, return_activations=True)), "
                        f"got {type(model).__name__}")
    check_materialized(model, name, finite=True)  # no meta-device or NaN/inf weights


def check_layer(model: nn.Module, layer: int, name: str = "layer", *, allow_output: bool = True) -> int:
    """Validate a layer index ``0 <= layer <= L`` (``L`` excluded unless ``allow_output``)."""
    L = len(model.layers)  # type: ignore[arg-type]
    hi = L if allow_output else L - 1
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"{name}: expected an int layer index in [0, {hi}], got {type(layer).__name__} {layer!r}")
    if not 0 <= layer <= hi:
        what = "0 = input, " + (f"{L} = output" if allow_output else f"{hi} = last hidden layer")
        raise ValueError(f"{name}: expected a layer index in [0, {hi}] ({what}) for an MLP with {L} linear layers, "
                         f"got {layer}")
    return layer


def check_inputs(model: nn.Module, inputs: torch.Tensor, name: str = "inputs") -> torch.Tensor:
    d_in = model.sizes[0]  # type: ignore[attr-defined]
    check_tensor(name, inputs, shape=(None, d_in), dims="(n_samples, in_features)")
    if inputs.shape[0] < 1:
        raise ValueError(f"{name}: expected at least one sample, got shape {tuple(inputs.shape)}")
    # dtype policy: any real floating precision is accepted (everything here is computed in float64);
    # integer, bool and complex inputs raise TypeError naming the argument
    return check_float_input(name, inputs, torch.float64)


def _params64(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    out = []
    for lin in model.layers:  # type: ignore[attr-defined]
        W = lin.weight.detach().to(torch.float64)
        b = lin.bias.detach().to(torch.float64) if lin.bias is not None else None
        out.append((W, b))
    return out


@torch.no_grad()
def mlp_forward(model: nn.Module, inputs: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """All activations and pre-activations in float64.

    Returns:
        ``(acts, preacts)``: ``acts[l]`` is layer ``l`` (``l = 0..L``, ``acts[0]`` the input,
        ``acts[L]`` the output), shape ``(n, sizes[l])``; ``preacts[l]`` is ``p^l`` for
        ``l = 1..L`` (``preacts[0]`` is ``None``).
    """
    dev = next(model.parameters()).device
    h = inputs.detach().to(dev, torch.float64)
    acts: list[torch.Tensor] = [h]
    pre: list[torch.Tensor | None] = [None]
    params = _params64(model)
    L = len(params)
    for i, (W, b) in enumerate(params):
        p = h @ W.T + (b if b is not None else 0.0)
        pre.append(p)
        h = model.act_fn(p) if i < L - 1 else p  # type: ignore[attr-defined]
        acts.append(h)
    return acts, pre  # type: ignore[return-value]


def act_derivative(model: nn.Module, pre: torch.Tensor) -> torch.Tensor:
    """Elementwise derivative ``σ'(p)`` of the model's activation (ReLU: 1 where ``p > 0``)."""
    if model.activation == "relu":  # type: ignore[attr-defined]
        return (pre > 0).to(pre.dtype)
    if model.activation == "linear":  # type: ignore[attr-defined]
        return torch.ones_like(pre)
    with torch.enable_grad():
        p = pre.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.act_fn(p).sum(), p)  # type: ignore[attr-defined]
    return g.detach()


def block_weight(model: nn.Module, block: int, with_bias: bool) -> torch.Tensor:
    """``[W, b]`` of ``model.layers[block]`` in float64, shape ``(d_out, d_in [+1])``."""
    W, b = _params64(model)[block]
    if with_bias:
        bb = b if b is not None else torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
        W = torch.cat([W, bb[:, None]], dim=1)
    return W


def block_jacobian_factors(model: nn.Module, preacts: list[torch.Tensor], block: int, ext_in: bool,
                           ext_out: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, B)`` with ``∂f^{l+1}_ext/∂f^l_ext (x) = diag(s(x)) B`` (see :func:`ext_block_jacobian`).

    ``s (n, d_{l+1} [+1])`` are the activation derivatives (1 for the output layer and for the
    constant), ``B (d_{l+1} [+1], d_l [+1])`` is ``[[W, b], [0, 1]]``. Factored form lets
    averages over samples be taken before the matrix products.
    """
    L = len(model.layers)  # type: ignore[arg-type]
    B = block_weight(model, block, ext_in)
    n = preacts[block + 1].shape[0]
    if block + 1 < L:
        s = act_derivative(model, preacts[block + 1])
    else:
        s = torch.ones(n, B.shape[0], dtype=B.dtype, device=B.device)
    if ext_out:
        row = torch.zeros(1, B.shape[1], dtype=B.dtype, device=B.device)
        if ext_in:
            row[0, -1] = 1.0
        B = torch.cat([B, row], dim=0)
        s = torch.cat([s, torch.ones(n, 1, dtype=s.dtype, device=s.device)], dim=1)
    return s, B


def ext_block_jacobian(model: nn.Module, preacts: list[torch.Tensor], block: int, ext_in: bool,
                       ext_out: bool) -> torch.Tensor:
    """Per-sample ``∂f^{l+1}_ext / ∂f^l_ext`` of weight block ``l``, ``(n, d_{l+1} [+1], d_l [+1])``.

    With the bias folded in, the constant 1 is a coordinate that *flows through* the network
    (as in RIB's folded-bias MLPs): ``f^{l+1}_ext = [σ(W f + b·c), c]``, so the block Jacobian is
    ``[[D W, D b], [0, 1]]`` with ``D = diag(σ'(p^{l+1}))`` (no ``D`` into the output layer).
    Then ``J(x) f_ext(x) = f^{l+1}_ext(x)`` for ReLU and linear layers.
    """
    s, B = block_jacobian_factors(model, preacts, block, ext_in, ext_out)
    return s[:, :, None] * B


def output_jacobian(model: nn.Module, preacts: list[torch.Tensor], layer: int, *, wrt: str = "post",
                    with_bias: bool = False) -> torch.Tensor:
    """Per-sample Jacobian of the model output with respect to layer ``layer``.

    ``J(x) = W_L D_{L-1}(x) W_{L-1} ... D_{l+1}(x) W_{l+1}`` with ``D_k = diag(σ'(p^k))`` for
    ``wrt="post"`` (w.r.t. ``f^l``) and ``J(x) D_l(x)`` for ``wrt="pre"`` (w.r.t. ``p^l``,
    ``l >= 1``). ``with_bias`` (``wrt="post"``, ``l < L``, model with biases) adds a last column
    for the folded constant of layer ``l``, which flows through every later bias
    (:func:`ext_block_jacobian`).

    Returns:
        ``(n, d_out, d_l [+1])`` float64.
    """
    params = _params64(model)
    L = len(params)
    n = preacts[-1].shape[0]
    d_out = params[-1][0].shape[0]
    dev = params[-1][0].device
    eye = torch.eye(d_out, dtype=torch.float64, device=dev)
    if layer == L:  # the output itself (p^L = f^L: no activation)
        if with_bias:
            raise ValueError("with_bias: the output layer feeds no linear map, so there is no folded bias")
        return eye.expand(n, d_out, d_out).clone()
    if with_bias:
        if wrt != "post":
            raise ValueError("with_bias: only defined for wrt='post'")
        J = eye.expand(n, d_out, d_out)
        for k in range(L - 1, layer - 1, -1):  # d out / d f^k_ext = (d out / d f^{k+1}_ext) J_ext^{(k)}
            J = J @ ext_block_jacobian(model, preacts, k, True, k + 1 < L)
        return J
    # J w.r.t. p^{l+1}: back-propagate from the output
    Jp = eye.expand(n, d_out, d_out)  # d out / d p^L
    for k in range(L, layer + 1, -1):  # k = L .. l+2: d out/d p^{k-1} = (d out/d p^k) W_k D_{k-1}
        W = params[k - 1][0]
        Jp = (Jp @ W) * act_derivative(model, preacts[k - 1])[:, None, :]
    # now Jp = d out / d p^{l+1}
    if wrt == "pre":
        if layer == 0:
            raise ValueError("wrt='pre': layer 0 is the input and has no pre-activations")
        return (Jp @ params[layer][0]) * act_derivative(model, preacts[layer])[:, None, :]
    return Jp @ params[layer][0]
