"""Input validation shared by every mechnb module.

Every public function in mechnb validates its inputs with these helpers so that a
mistake produces a message naming the argument, what was expected and what was
given, e.g.::

    ValueError: inputs: expected a 2-D tensor (batch, n_features), got shape (3, 4, 5)

NaN and inf are always rejected, never propagated.

**Dtype policy** (one rule for every model input in mechnb, :func:`check_float_input`):
a real floating-point input (float16, bfloat16, float32, float64) is cast to the model's
dtype (:func:`model_dtype`); a value that does not fit in that dtype (``1e200`` into a float32
model) raises ``ValueError`` instead of turning into inf. Integer, bool and complex inputs to a
floating-point model raise ``TypeError`` naming the argument, the expected dtype and the given
one, e.g.::

    TypeError: x: expected a real floating-point tensor (cast to the model's dtype torch.float32),
    got dtype torch.int64

Arrays handed to an analysis (:func:`check_array`) become float64; complex ones are refused
the same way, never silently stripped of their imaginary part.

A model whose parameters live on the ``meta`` device (shapes only, no values) is refused by
:func:`check_materialized`; seeds are checked by :func:`check_seed`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "check_tensor",
    "check_array",
    "check_finite",
    "check_positive_int",
    "check_probability",
    "check_positive_float",
    "check_choice",
    "check_seed",
    "check_float_input",
    "model_dtype",
    "check_materialized",
    "resolve_device",
]


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")" if len(shape) != 1 else f"({int(shape[0])},)"


def _under_functorch(x: torch.Tensor) -> bool:
    """True for tensors seen inside ``torch.func`` transforms (vmap / grad), where a
    data-dependent ``bool()`` is not allowed; their inputs were checked outside the transform."""
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))
    except AttributeError:  # pragma: no cover - older torch
        return False


def check_finite(name: str, x: torch.Tensor | np.ndarray) -> None:
    """Raise ``ValueError`` if ``x`` contains NaN or inf."""
    if isinstance(x, torch.Tensor):
        if _under_functorch(x):
            return
        if x.is_floating_point() or x.is_complex():
            bad = ~torch.isfinite(x)
            if bool(bad.any()):
                n_nan = int(torch.isnan(x).sum())
                n_inf = int(bad.sum()) - n_nan
                raise ValueError(f"{name}: expected finite values, got {n_nan} NaN and {n_inf} inf entries")
    else:
        arr = np.asarray(x)
        if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
            bad = ~np.isfinite(arr)
            if bad.any():
                n_nan = int(np.isnan(arr).sum())
                raise ValueError(
                    f"{name}: expected finite values, got {n_nan} NaN and {int(bad.sum()) - n_nan} inf entries"
                )


def check_tensor(
    name: str,
    x: Any,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | None] | None = None,
    dims: str | None = None,
    floating: bool | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Validate that ``x`` is a ``torch.Tensor`` with the expected rank / shape.

    Args:
        name: argument name used in the error message.
        ndim: the allowed number of dimensions (an int or a collection of ints).
        shape: expected shape; ``None`` entries match any size. Implies ``ndim``.
        dims: human-readable dimension names for the message, e.g. ``"(batch, n_features)"``.
        floating: if True require a floating dtype, if False require an integer dtype.
        finite: reject NaN / inf (default True).

    Returns:
        ``x`` unchanged, so calls can be chained.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            extra = f" {dims}" if dims else ""
            raise ValueError(f"{name}: expected a {want} tensor{extra}, got shape {_shape_str(x.shape)}")
    if shape is not None:
        for i, (got, want) in enumerate(zip(x.shape, shape)):
            if want is not None and got != want:
                exp = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
                extra = f" {dims}" if dims else ""
                raise ValueError(
                    f"{name}: expected shape {exp}{extra}, got {_shape_str(x.shape)} (dimension {i} differs)"
                )
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if floating is False and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name}: expected an integer tensor, got dtype {x.dtype}")
    if finite:
        check_finite(name, x)
    return x


def check_array(name: str, x: Any, *, ndim: int | None = None, square: bool = False, finite: bool = True) -> np.ndarray:
    """Validate an array-like (numpy array or tensor) and return it as a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name}: expected a real-valued array, got complex dtype {x.dtype}")
        if x.is_meta:
            raise ValueError(f"{name}: expected a tensor with values, got one on the 'meta' device")
        arr = x.detach().cpu().double().numpy()
    elif isinstance(x, (np.ndarray, list, tuple)):
        try:
            raw = np.asarray(x)
            if np.iscomplexobj(raw):
                raise TypeError(f"{name}: expected a real-valued array, got complex dtype {raw.dtype}")
            if raw.dtype.kind in "USV":
                raise TypeError(f"{name}: expected a numeric array, got dtype {raw.dtype}")
            arr = raw.astype(np.float64)
        except (TypeError, ValueError) as e:
            if str(e).startswith(f"{name}: "):
                raise
            raise TypeError(f"{name}: expected a numeric array, got {type(x).__name__} ({e})") from None
    else:
        raise TypeError(f"{name}: expected a numpy array or torch.Tensor, got {type(x).__name__}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {_shape_str(arr.shape)}")
    if square and (arr.ndim != 2 or arr.shape[0] != arr.shape[1]):
        raise ValueError(f"{name}: expected a square matrix, got shape {_shape_str(arr.shape)}")
    if finite:
        check_finite(name, arr)
    return arr


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Require an ``int`` (not bool) that is at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def check_positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Require a finite real number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return v


def check_probability(name: str, value: Any, *, open_left: bool = False) -> float:
    """Require a number in [0, 1] (or (0, 1] with ``open_left``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a probability (float in [0, 1]), got {type(value).__name__}")
    v = float(value)
    lo_ok = v > 0 if open_left else v >= 0
    if not (math.isfinite(v) and lo_ok and v <= 1):
        rng = "(0, 1]" if open_left else "[0, 1]"
        raise ValueError(f"{name}: expected a probability in {rng}, got {value!r}")
    return v


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Require ``value`` to be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)!r}, got {value!r}")
    return value


def check_seed(name: str, value: Any) -> int:
    """Require a seed: an ``int`` (not bool) in ``[0, 2**64)``, the range ``torch.Generator.manual_seed`` takes.

    ``1.5`` or ``"a"`` raise ``TypeError`` (a float is never truncated to a different seed).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int seed in [0, 2**64), got {type(value).__name__} {value!r}")
    if not 0 <= int(value) < 2**64:
        raise ValueError(f"{name}: expected an int seed in [0, 2**64), got {value}")
    return int(value)


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of ``model``: that of its first floating parameter, else buffer, else torch's default."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def check_float_input(name: str, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Apply the dtype policy (module docstring) to a model input ``x``: return it in ``dtype``.

    A real floating ``x`` of another dtype is cast (``x.to(dtype)``); if a finite value of ``x``
    overflows ``dtype`` the cast raises ``ValueError`` naming the largest value. Integer, bool
    and complex ``x`` raise ``TypeError``. Call it after :func:`check_tensor` (which checks shape
    and finiteness); ``x`` already in ``dtype`` is returned as is.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype == dtype:
        return x
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name}: expected a real floating-point tensor (cast to the model's dtype {dtype}), "
                        f"got dtype {x.dtype}")
    y = x.to(dtype)
    if not _under_functorch(y) and torch.finfo(dtype).max < torch.finfo(x.dtype).max and y.numel():
        if not bool(torch.isfinite(y).all()):
            check_finite(name, x)
            big = float(x.abs().max())
            raise ValueError(f"{name}: values up to {big:.3g} do not fit in the model's dtype {dtype} (largest "
                             f"{torch.finfo(dtype).max:.3g}); rescale the input or convert the model")
    return y


def check_materialized(model: Any, name: str = "model", *, finite: bool = False) -> nn.Module:
    """Require an ``nn.Module`` whose parameters and buffers hold values (none on the ``meta`` device).

    With ``finite=True`` a NaN or inf parameter or buffer also raises ``ValueError`` naming it.
    Returns ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name}: expected a torch.nn.Module, got {type(model).__name__}")
    for pname, t in (*model.named_parameters(), *model.named_buffers()):
        if t.is_meta:
            raise ValueError(f"{name}: {pname!r} is on the 'meta' device (shapes only, no values); materialise "
                             f"the model first, e.g. model.to_empty(device='cpu') then model.load_state_dict(...)")
        if finite and (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            n_nan = int(torch.isnan(t).sum())
            raise ValueError(f"{name}: {pname!r} has {n_nan} NaN and {int((~torch.isfinite(t)).sum()) - n_nan} "
                             f"inf entries; expected finite weights")
    return model


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn ``device`` into a ``torch.device``; a CUDA device that is not available raises ``ValueError``."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r} ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available on this machine; use device='cpu'")
    return dev
