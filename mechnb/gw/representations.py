"""Layer representations: every layer's activations on the same ``n`` inputs, as ``(n, d_l)`` tensors.

The first step of Gao, Dhurandhar, Natesan Ramamurthy & Wei 2024, *Identifying Sub-networks in
Neural Networks via Functionally Similar Representations* (https://arxiv.org/abs/2410.16484):
feed the same inputs through the network and keep one representation ``X_l (n, d_l)`` per layer
(for a transformer, the residual stream at one token position), in depth order. The GW
comparison (:mod:`mechnb.gw.distances`, :mod:`mechnb.gw.solve`) and the baselines
(:mod:`mechnb.gw.baselines`) all start from such a mapping ``name -> X_l``.

Also here: the validation shared by every function that takes such a mapping
(:func:`check_reps`: same rows in every layer; :func:`subsample_rows`: one seeded subset of
rows for all layers; :func:`as_float64`: a tensor or array as a float64 tensor, complex refused;
:func:`real_array`; :func:`power_of_two_scale`: the exact rescaling that keeps huge or tiny
representations from overflowing when distances or Gram matrices are formed).

Inputs follow the dtype policy of :mod:`mechnb._checks`: real floating inputs are cast to the
model's dtype, integer, bool (for an MLP) and complex inputs raise ``TypeError`` naming ``inputs``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mechnb._checks import check_array, check_float_input, check_positive_int, check_seed, check_tensor, model_dtype
from mechnb._torch import eval_mode
from mechnb.models import MLP, TinyTransformer

__all__ = ["layer_representations", "subsample_reps", "as_float64", "real_array", "power_of_two_scale", "check_reps",
           "subsample_rows"]


def _select_position(x: torch.Tensor, position: int | str, mask: torch.Tensor | None, pos_dim: int) -> torch.Tensor:
    """Reduce the position axis ``pos_dim`` of ``x`` by an index, the last real token or the mean."""
    x = x.movedim(pos_dim, 1)  # (n, pos, ...)
    n, n_pos = x.shape[0], x.shape[1]
    if isinstance(position, int):
        return x[:, position]
    if mask is None:
        mask = torch.ones(n, n_pos, dtype=torch.bool, device=x.device)
    if position == "last":
        last = mask.long().cumsum(1).argmax(1)  # index of the last True in each row
        return x[torch.arange(n, device=x.device), last]
    w = mask.to(x.dtype).reshape(n, n_pos, *([1] * (x.ndim - 2)))
    return (x * w).sum(1) / w.sum(1)


@torch.no_grad()
def layer_representations(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: Sequence[str] | None = None,
    *,
    position: int | str = "last",
    pad_id: int | None = None,
    include_input: bool = True,
) -> OrderedDict[str, torch.Tensor]:
    """Every layer's representation of the same inputs: ``name -> (n, d_l)`` tensor, in depth order.

    * :class:`~mechnb.models.MLP`: ``"input"``, the post-activation hidden layers ``"h1" ... "hK"``
      and the logits ``"output"``.
    * :class:`~mechnb.models.TinyTransformer` (``inputs`` = tokens ``(n, pos)``): the residual
      stream at every layer boundary, ``"blocks.0.hook_resid_pre"`` (embeddings),
      ``"blocks.{l}.hook_resid_mid"``, ``"blocks.{l}.hook_resid_post"``, then ``"output"`` (logits),
      each read at one token ``position``: an int index (``-1`` = last column), ``"last"`` (the
      last non-pad token of each row when ``pad_id`` is given) or ``"mean"`` (mean over non-pad
      tokens). ``layers`` may name any hook point (e.g. ``"blocks.0.hook_mlp_out"``); head-split
      activations are flattened to ``(n, n_heads * d)``.
    * any other ``nn.Module``: ``layers`` must list submodule names; their outputs are flattened.

    Args:
        model: the network (its device is used; nothing is moved).
        inputs: ``(n, d_in)`` features or ``(n, pos)`` integer tokens. Real floating features are
            cast to the model's dtype (float16/bfloat16/float64 into a float32 MLP); integer, bool
            or complex features raise ``TypeError``, as do non-integer tokens.
        layers: a subset / order of names to return (default: all of the above).
        include_input: keep ``"input"`` for MLPs and generic models.

    Returns:
        ``OrderedDict`` of detached float tensors of shape ``(n, d_l)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    check_tensor("inputs", inputs, ndim=2, dims="(n, d_in) or (n, pos)")
    if inputs.shape[0] < 2:
        raise ValueError(f"inputs: expected at least 2 samples to compare layers, got {inputs.shape[0]}")
    if not (isinstance(position, int) and not isinstance(position, bool)) and position not in ("last", "mean"):
        raise ValueError(f"position: expected an int index, 'last' or 'mean', got {position!r}")
    if layers is not None and (isinstance(layers, str) or not all(isinstance(s, str) for s in layers)):
        raise TypeError(f"layers: expected a sequence of layer names, got {layers!r}")
    if inputs.is_complex():
        raise TypeError(f"inputs: expected real features or integer tokens, got complex dtype {inputs.dtype}")
    with eval_mode(model):
        if isinstance(model, MLP):
            reps = _mlp_representations(model, check_float_input("inputs", inputs, model_dtype(model)),
                                        include_input)
        elif isinstance(model, TinyTransformer):
            return _transformer_representations(model, inputs, layers, position, pad_id)
        else:
            return _module_representations(model, inputs, layers, include_input)
    if layers is not None:
        unknown = [n for n in layers if n not in reps]
        if unknown:
            raise ValueError(f"layers: unknown names {unknown}; valid: {list(reps)}")
        reps = OrderedDict((n, reps[n]) for n in layers)
    return reps


def _mlp_representations(model: MLP, inputs: torch.Tensor, include_input: bool) -> OrderedDict[str, torch.Tensor]:
    """``"input"``, the post-activation hidden layers ``"h1" ... "hK"`` and the logits ``"output"`` of an MLP."""
    out, acts = model(inputs, return_activations=True)
    reps: OrderedDict[str, torch.Tensor] = OrderedDict()
    if include_input:
        reps["input"] = inputs
    for i, a in enumerate(acts[:-1]):
        reps[f"h{i + 1}"] = a
    reps["output"] = out
    return reps


def _transformer_representations(model: TinyTransformer, tokens: torch.Tensor, layers: Sequence[str] | None,
                                 position: int | str, pad_id: int | None) -> OrderedDict[str, torch.Tensor]:
    """Residual stream (or any hook point) of a TinyTransformer at one token position, flattened to ``(n, -1)``."""
    if tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise TypeError(f"inputs: expected integer token ids for a TinyTransformer, got dtype {tokens.dtype}")
    n_pos = tokens.shape[1]
    if isinstance(position, int) and not -n_pos <= position < n_pos:
        raise ValueError(f"position: expected an index in [-{n_pos}, {n_pos}) for {n_pos} token positions, "
                         f"got {position}")
    mask = None if pad_id is None else tokens != pad_id
    if mask is not None and not bool(mask.any(1).all()):
        raise ValueError("inputs: some rows contain only pad tokens; drop them or pass pad_id=None")
    default = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_{s}" for l in range(model.n_layers)
                                             for s in ("mid", "post")] + ["output"]
    names = list(layers) if layers is not None else default
    points = model.hook_points()
    unknown = [n for n in names if n != "output" and n not in points]
    if unknown:
        raise ValueError(f"layers: unknown hook names {unknown}; valid: 'output' and {sorted(points)}")
    logits, cache = model.run_with_cache(tokens, names_filter=[n for n in names if n != "output"])
    reps: OrderedDict[str, torch.Tensor] = OrderedDict()
    for n in names:
        act = logits if n == "output" else cache[n]
        pos_dim = 2 if n.endswith(("hook_pattern", "hook_attn_scores")) else 1  # [batch, head, query, key]
        reps[n] = _select_position(act, position, mask, pos_dim).reshape(tokens.shape[0], -1)
    return reps


def _module_representations(model: nn.Module, inputs: torch.Tensor, layers: Sequence[str] | None,
                            include_input: bool) -> OrderedDict[str, torch.Tensor]:
    """The flattened outputs of the named submodules of any ``nn.Module``, captured by forward hooks."""
    if layers is None:
        raise ValueError(f"layers: a generic {type(model).__name__} needs the submodule names to read, got None")
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        raise ValueError(f"layers: unknown submodules {unknown}; valid: {sorted(k for k in modules if k)}")
    if inputs.is_floating_point():
        inputs = check_float_input("inputs", inputs, model_dtype(model))
    got: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, o.detach()))
               for n in layers]
    try:
        model(inputs)
    except RuntimeError as e:
        if "dtype" not in str(e) and "scalar type" not in str(e):
            raise
        raise TypeError(f"inputs: dtype {inputs.dtype} does not fit {type(model).__name__} (parameters in "
                        f"{model_dtype(model)}): {e}") from None
    finally:
        for h in handles:
            h.remove()
    reps: OrderedDict[str, torch.Tensor] = OrderedDict()
    if include_input and inputs.is_floating_point():
        reps["input"] = inputs
    for n in layers:
        reps[n] = got[n].reshape(inputs.shape[0], -1)
    return reps


# --------------------------------------------------------------------------------------
# Validation of representations (shared by distances, layer matrices and baselines)
# --------------------------------------------------------------------------------------
def real_array(name: str, x: Any) -> Any:
    """``x`` unchanged, unless it holds complex numbers: then ``TypeError`` naming ``name``
    (GW, CKA and the probes compare real representations; silently dropping the imaginary part
    would change the answer)."""
    if isinstance(x, torch.Tensor):
        complex_ = x.is_complex()
    elif isinstance(x, (np.ndarray, list, tuple)):
        try:
            complex_ = bool(np.iscomplexobj(np.asarray(x)))
        except (TypeError, ValueError):  # ragged or non-numeric: left to the shape checks
            complex_ = False
    else:
        complex_ = isinstance(x, complex)
    if complex_:
        dtype = getattr(x, "dtype", "complex")
        raise TypeError(f"{name}: expected real values, got complex dtype {dtype}; pass the real part, the "
                        "modulus or both stacked as real features explicitly")
    return x


def as_float64(name: str, X: Any, ndim: int = 2) -> torch.Tensor:
    """``X`` (tensor or array, checked: ``ndim`` axes, finite, real) as a float64 tensor on its device."""
    real_array(name, X)
    if isinstance(X, np.ndarray):
        X = torch.from_numpy(check_array(name, X, ndim=ndim))
    check_tensor(name, X, ndim=ndim, floating=None)
    return X.double()


def power_of_two_scale(X: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(X * 2**-e, e)`` with ``2**(e-1) <= max |X| < 2**e`` (``e = 0`` for an all-zero ``X``).

    Multiplying by a power of two is exact in floating point (only the exponent changes), so
    computing on the scaled ``X`` and rescaling the result by ``2**e`` (``torch.ldexp``) gives
    bit-for-bit the answer computed on ``X`` whenever that does not overflow or underflow - and
    a finite one when it would (the squared distances of ``1e200``-sized entries overflow float64).
    """
    top = float(X.abs().max()) if X.numel() else 0.0
    if top == 0.0 or not np.isfinite(top):
        return X, 0
    e = int(np.frexp(top)[1])
    return torch.ldexp(X, torch.tensor(-e, dtype=torch.int32, device=X.device)), e


def check_reps(reps: Any, min_layers: int = 2) -> tuple[list[str], list[torch.Tensor]]:
    """``reps`` (``name -> (n, d_l)``, at least ``min_layers`` layers, the same ``n`` rows in each) as
    names and float64 tensors, in the mapping's order."""
    if not isinstance(reps, Mapping) or len(reps) < min_layers:
        raise ValueError(f"reps: expected a mapping name -> (n, d) representation with at least {min_layers} layers, "
                         f"got {type(reps).__name__} of length {len(reps) if hasattr(reps, '__len__') else '?'}")
    names, Xs = [], []
    for k, v in reps.items():
        X = as_float64(f"reps[{k!r}]", v)
        if Xs and X.shape[0] != Xs[0].shape[0]:
            raise ValueError(f"reps[{k!r}]: expected {Xs[0].shape[0]} rows like reps[{names[0]!r}] (the same inputs), "
                             f"got {X.shape[0]}")
        names.append(str(k))
        Xs.append(X)
    return names, Xs


def subsample_rows(Xs: list[torch.Tensor], n_samples: int | None, seed: int) -> list[torch.Tensor]:
    """The same seeded random ``n_samples`` rows of every ``X (n, d_l)`` (all rows when ``None`` or ``>= n``)."""
    seed = check_seed("seed", seed)
    n = Xs[0].shape[0]
    if n_samples is None or check_positive_int("n_samples", n_samples, minimum=2) >= n:
        return Xs
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_samples]
    return [X[idx.to(X.device)] for X in Xs]


def subsample_reps(reps: Mapping[str, Any], n_samples: int | None, seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """The same seeded random ``n_samples`` rows of every layer: ``name -> (n_samples, d_l)`` float64 tensors.

    The rows :func:`~mechnb.gw.layers.layer_gw_matrix` and :func:`~mechnb.gw.layers.layer_cka_matrix`
    use for ``n_samples=..., seed=...``, so ``layer_gw_matrix(subsample_reps(reps, 200))`` equals
    ``layer_gw_matrix(reps, n_samples=200)``. ``None`` (or ``n_samples >= n``) keeps every row.
    """
    names, Xs = check_reps(reps, min_layers=1)
    return OrderedDict(zip(names, subsample_rows(Xs, n_samples, seed)))
