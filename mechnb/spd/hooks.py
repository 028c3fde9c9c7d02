"""Reading and rewiring the target model for SPD: layer lookup, forward hooks, causal importances.

Bushnaq, Braun & Sharkey (2025), *Stochastic Parameter Decomposition*,
https://arxiv.org/abs/2506.20790, method section. SPD needs two things from the target model
``f``: the inputs ``a_l (N, d_in)`` of every decomposed layer on a batch (they feed the causal
importance functions ``g_{l,c}(x) = sigma_H(Gamma_{l,c}(V_{l,c}^T a_l))``), and its output with
some layers computing ``U_l (m_l * V_l^T a_l) + b_l`` instead of ``W_l a_l + b_l``.
:class:`HookedTarget` provides both through forward hooks on the layers, installed for the
duration of a ``with target.hooks():`` block. Biases are never decomposed: a replaced layer
keeps the target's bias (detached).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from mechnb.models import TiedLinear
from mechnb.spd.components import SPDComponents, _upper_leaky, lower_sigmoid_fn

__all__ = ["resolve_target_modules", "frozen_parameters", "HookedTarget", "causal_importances"]


def resolve_target_modules(model: nn.Module, target_modules: Any) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """``({name: linear layer}, {tied layer: its decomposed source layer})`` for the layer names given.

    Every name must be a distinct ``nn.Linear`` (or :class:`mechnb.models.TiedLinear`) submodule
    of ``model``; a ``TiedLinear`` whose source is also decomposed is reported as tied to it.
    """
    if isinstance(target_modules, str) or not isinstance(target_modules, (list, tuple)) or not target_modules:
        raise TypeError(
            f"target_modules: expected a non-empty list of layer names like ['linear1', 'linear2'], "
            f"got {target_modules!r}"
        )
    if len(set(target_modules)) != len(target_modules):
        raise ValueError(f"target_modules: expected distinct names, got {list(target_modules)!r}")
    linear_names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, TiedLinear))]
    modules: dict[str, nn.Module] = {}
    for name in target_modules:
        if not isinstance(name, str):
            raise TypeError(f"target_modules: expected layer names (str), got {type(name).__name__} {name!r}")
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"target_modules: {name!r} is not a submodule of the model; linear layers: {linear_names}")
        if not isinstance(m, (nn.Linear, TiedLinear)):
            raise ValueError(
                f"target_modules: {name!r} is a {type(m).__name__}, expected an nn.Linear; linear layers: {linear_names}"
            )
        modules[name] = m
    tied: dict[str, str] = {}
    for name, m in modules.items():
        if isinstance(m, TiedLinear):
            for src_name, src in modules.items():
                if src is m._source:
                    tied[name] = src_name
    return modules, tied


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients into the target model's own parameters (flags restored after)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


class HookedTarget:
    """The target model with forward hooks on its decomposed layers.

    Inside ``with target.hooks():``

    * :meth:`capture` ``(x)`` runs the unchanged model and returns ``(output, {layer: a_l (N, d_in)})``;
    * :meth:`masked` ``(x, replace)`` runs it with every layer in ``replace`` computing
      ``U_l (m * V_l^T a) + b`` (``m = replace[layer]`` of shape ``(N, C)`` or ``(C,)``; ``None``
      means all ones); the other layers keep their target weights.

    Args:
        model: the target model.
        modules: ``{layer name: module}`` from :func:`resolve_target_modules`.
        components: the :class:`SPDComponents` that replace the layers.
        input_name: the caller's name for the inputs (``"sample_inputs"`` in :func:`mechnb.spd.decompose`,
            ``"x"`` in the result's methods): a ``ValueError`` / ``TypeError`` that the model raises
            about an input in :meth:`capture` is re-raised naming it.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module], components: SPDComponents,
                 input_name: str | None = None) -> None:
        self.model, self.modules, self.components = model, modules, components
        self.input_name = input_name
        self._capture: dict[str, torch.Tensor] | None = None
        self._replace: dict[str, torch.Tensor | None] = {}

    @contextlib.contextmanager
    def hooks(self) -> Iterator[HookedTarget]:
        """Install the forward hooks for the duration of the block (removed even if it raises)."""
        handles = []
        try:
            for name, module in self.modules.items():
                handles.append(module.register_forward_hook(self._hook(name, module)))
            yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str, module: nn.Module) -> Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor | None]:
        def hook(_m: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            a = inputs[0]
            if self._capture is not None:
                self._capture[name] = a
            if name in self._replace:
                bias = module.bias.detach() if getattr(module, "bias", None) is not None else None
                mask = self._replace[name]
                weight = module.weight.detach() if mask is not None and mask.shape[-1] != self.components.C else None
                return self.components.component_forward(name, a, mask, bias, target_weight=weight)
            return None

        return hook

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """``model(x)``; a ``ValueError`` / ``TypeError`` is re-raised naming :attr:`input_name`."""
        try:
            return self.model(x)
        except (TypeError, ValueError) as e:
            name = self.input_name
            if name is None or str(e).startswith(f"{name}: "):
                raise
            raise type(e)(f"{name}: the model rejects this input of shape {tuple(x.shape)} and dtype "
                          f"{x.dtype} ({e})") from e

    def capture(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(f(x), {layer: a_l})``: the target's output and the decomposed layers' inputs.

        A ``ValueError`` / ``TypeError`` from the model is re-raised naming :attr:`input_name`
        (the caller's argument), not the model's internal one; so is one from :meth:`masked`.
        """
        self._capture, self._replace = {}, {}
        try:
            out = self._run(x)
            return out, self._capture
        finally:
            self._capture = None

    def masked(self, x: torch.Tensor, replace: dict[str, torch.Tensor | None]) -> torch.Tensor:
        """The output with the layers in ``replace`` computed by their masked components.

        A mask with ``C + 1`` columns also scales the delta component ``W_l - U_l V_l^T`` (its
        last column, see :meth:`SPDComponents.component_forward`).
        """
        self._replace = replace
        try:
            return self._run(x)
        finally:
            self._replace = {}


def causal_importances(
    components: SPDComponents, acts: dict[str, torch.Tensor], alpha: float, lower: str = "leaky",
    upper_alpha: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower- and upper-leaky causal importances ``(N, L, C)`` from the layer inputs ``acts``.

    ``g_{l,c}(x) = sigma_H(Gamma_{l,c}(V_l[:, c]^T a_l))`` with ``a_l = acts[l] (N, d_in)`` (or the
    vector / shared CI functions of :meth:`SPDComponents.ci_pre_activations`); the lower hard
    sigmoid builds the masks, the upper-leaky one enters the minimality loss (paper, method
    section). ``lower``: ``"leaky"`` (the paper's ``alpha x`` below 0) or ``"leaky_backward"``
    (:func:`mechnb.spd.lower_leaky_backward_hard_sigmoid`). ``upper_alpha``: the upper-leaky slope
    above 1 (default ``alpha``).
    """
    for n in components.names:
        a = acts[n]
        if a.ndim != 2:
            raise ValueError(
                f"target_modules: layer {n!r} receives inputs of shape {tuple(a.shape)}; "
                "mechnb.spd decomposes layers whose inputs are (batch, d_in)"
            )
    pre = components.ci_pre_activations(acts)  # (N, L, C)
    return lower_sigmoid_fn(lower)(pre, alpha), _upper_leaky(pre, alpha if upper_alpha is None else upper_alpha)
