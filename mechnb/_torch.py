"""Small torch and environment helpers shared by every layer of mechnb (the ground floor).

- :func:`eval_mode`: run a block with a model in eval mode and restore its previous mode,
  whatever happens inside (the one copy of the save/restore ``try/finally``).
- :func:`env_flag`: read a boolean environment flag such as ``MECHNB_FAST`` the same way
  everywhere (``""``, ``0``, ``false``, ``no``, ``off`` are false; anything else is true).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn as nn

__all__ = ["eval_mode", "env_flag"]

_FALSE = ("", "0", "false", "no", "off")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model): ...`` — ``model.eval()`` for the block, then the caller's mode back.

    The previous mode (``model.training``) is restored even when the block raises, so a method
    never leaves the caller's model in a state it did not choose.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def env_flag(name: str, default: bool = False) -> bool:
    """The boolean environment flag ``name`` (unset: ``default``; ``0/false/no/off/""``: False)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty environment-variable name, got {name!r}")
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in _FALSE
