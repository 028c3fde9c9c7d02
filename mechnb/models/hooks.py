"""Hook points (TransformerLens ``HookPoint``) and the ``run_with_hooks`` / ``run_with_cache`` mixin."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["HookPoint", "HookFn"]

HookFn = Callable[[torch.Tensor, "HookPoint"], torch.Tensor | None]


# --------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------
class HookPoint(nn.Module):
    """An identity module that marks a named activation (TransformerLens ``HookPoint``).

    ``fn(activation, hook)`` hooks added with :meth:`TinyTransformer.hooks` may return a
    replacement tensor (patching) or ``None`` (read-only, e.g. caching).
    """

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _HookedMixin:
    """``hooks``, ``run_with_hooks`` and ``run_with_cache`` for models made of HookPoints."""

    def hook_points(self) -> dict[str, HookPoint]:
        """All hook points of the model, by TransformerLens-style name."""
        return {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]]) -> Iterator[None]:
        """Context manager that installs forward hooks ``[(name or name-filter, fn), ...]``.

        ``fn(activation, hook)`` may return a tensor to replace the activation.
        Unknown names raise ``KeyError`` listing the valid ones.
        """
        points = self.hook_points()
        handles = []
        try:
            for key, fn in fwd_hooks:
                if callable(key):
                    targets = [p for n, p in points.items() if key(n)]
                else:
                    if key not in points:
                        raise KeyError(f"hook name {key!r} does not exist; valid names: {sorted(points)}")
                    targets = [points[key]]
                for point in targets:
                    handles.append(point.register_forward_hook(_wrap_hook(fn)))
            yield
        finally:
            for h in handles:
                h.remove()

    def run_with_hooks(self, *args: Any, fwd_hooks: Sequence[tuple[Any, HookFn]] = (), **kwargs: Any) -> Any:
        """Run ``forward(*args, **kwargs)`` with the given hooks installed."""
        with self.hooks(fwd_hooks):
            return self(*args, **kwargs)  # type: ignore[operator]

    def run_with_cache(
        self, *args: Any, names_filter: Callable[[str], bool] | Sequence[str] | None = None, detach: bool = True,
        **kwargs: Any,
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        """Run the model and return ``(output, cache)`` with the activations at every hook point.

        Args:
            names_filter: a predicate or a list of names; ``None`` caches every hook point.
            detach: detach cached tensors (set False to backpropagate through them).
        """
        cache: dict[str, torch.Tensor] = {}
        if names_filter is None:
            pred: Callable[[str], bool] = lambda n: True  # noqa: E731
        elif callable(names_filter):
            pred = names_filter
        else:
            wanted = set(names_filter)
            unknown = wanted - set(self.hook_points())
            if unknown:
                raise KeyError(f"names_filter: unknown hook names {sorted(unknown)}; valid: {sorted(self.hook_points())}")
            pred = wanted.__contains__

        def save(x: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = x.detach() if detach else x

        out = self.run_with_hooks(*args, fwd_hooks=[(pred, save)], **kwargs)
        return out, cache


def _wrap_hook(fn: HookFn) -> Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor | None]:
    def _hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return fn(output, module)  # type: ignore[arg-type]

    return _hook


def _name_hook_points(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, HookPoint):
            m.name = name


