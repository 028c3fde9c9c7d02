"""The models a result may hold (``SPDResult.model``, ``TuneResult.model``): mechnb's architectures.

A model is stored as its class name, the constructor arguments that rebuild its architecture,
its ``state_dict`` (parameters and persistent buffers, each in the tensor file), its
``training`` flag and the names of the parameters with ``requires_grad=False``. Rebuilding
constructs the class from those arguments (inside :func:`torch.random.fork_rng`, so loading
never moves the caller's RNG), loads the state strictly with ``assign=True`` (dtypes exactly
as saved) and restores the flags.

Architectures: :class:`~mechnb.models.TinyTransformer` (``model.config()``),
:class:`~mechnb.models.TMS`, :class:`~mechnb.models.ResidualMLP` and
:class:`~mechnb.models.MLP`. Any other ``nn.Module`` must be registered with
:func:`mechnb.io.saveable` and define ``to_state`` / ``from_state`` (as ``SPDComponents`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mechnb.models import MLP, TMS, ResidualMLP, TinyTransformer

__all__ = ["ARCHITECTURES", "module_config", "build_module", "module_state", "module_flags", "restore_flags"]


def _tms(m: TMS) -> dict[str, Any]:
    return dict(n_features=m.n_features, n_hidden=m.n_hidden, n_hidden_layers=m.n_hidden_layers,
                tied_weights=m.tied_weights)


def _resid(m: ResidualMLP) -> dict[str, Any]:
    # the embedding W_E is a persistent buffer: the state restores it whatever embed_seed built it
    return dict(n_features=m.n_features, d_embed=m.d_embed, d_mlp=m.d_mlp, n_layers=m.n_layers)


def _mlp(m: MLP) -> dict[str, Any]:
    return dict(sizes=list(m.sizes), activation=m.activation, bias=m.bias)


def _transformer(m: TinyTransformer) -> dict[str, Any]:
    return dict(m.config())


#: class name -> (class, constructor arguments of an instance)
ARCHITECTURES: dict[str, tuple[type[nn.Module], Callable[[Any], dict[str, Any]]]] = {
    "TinyTransformer": (TinyTransformer, _transformer),
    "TMS": (TMS, _tms),
    "ResidualMLP": (ResidualMLP, _resid),
    "MLP": (MLP, _mlp),
}


def module_config(model: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """``(class name, constructor arguments)`` of a mechnb architecture (exact type), else ``None``."""
    for name, (cls, config) in ARCHITECTURES.items():
        if type(model) is cls:
            return name, config(model)
    return None


def module_flags(model: nn.Module) -> dict[str, Any]:
    """``{"training": model.training, "frozen": names of the parameters with requires_grad=False}``."""
    return {"training": bool(model.training), "frozen": [k for k, p in model.named_parameters() if not p.requires_grad]}


def module_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, flags)``: the tensors of ``model`` (parameters, persistent buffers) and :func:`module_flags`."""
    return {k: v.detach() for k, v in model.state_dict().items()}, module_flags(model)


def restore_flags(model: nn.Module, flags: dict[str, Any]) -> nn.Module:
    """Set ``requires_grad=False`` on the ``frozen`` parameters and the ``training`` mode; returns ``model``."""
    params = dict(model.named_parameters())
    unknown = [k for k in flags["frozen"] if k not in params]
    if unknown:
        raise ValueError(f"frozen: {unknown} are not parameters of the rebuilt {type(model).__name__}")
    for k in flags["frozen"]:
        params[k].requires_grad_(False)
    return model.train(bool(flags["training"]))


def build_module(name: str, config: dict[str, Any], state: dict[str, torch.Tensor], flags: dict[str, Any]) -> nn.Module:
    """Rebuild architecture ``name`` from ``config``, load ``state`` strictly and restore ``flags``.

    Raises ``ValueError`` for an unknown architecture, arguments its constructor rejects or a
    state that does not fit it (the messages of ``nn.Module.load_state_dict``).
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"model class {name!r} is not one of the architectures mechnb.io rebuilds "
                         f"{sorted(ARCHITECTURES)}")
    cls, _ = ARCHITECTURES[name]
    with torch.random.fork_rng(devices=[]):
        try:
            model = cls(**config)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}({config}) cannot be built: {e}") from None
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"the stored state does not fit {name}: {e}") from None
    return restore_flags(model, flags)
