"""Reading and rewiring the target model for SPD: layer lookup, forward hooks, causal importances.

Bushnaq, Braun & Sharkey (2025), *Stochastic Parameter Decomposition*,
https://arxiv.org/abs/2506.20790, method section. SPD needs two things from the target model
``f``: the inputs ``a_l (N, d_in)`` of every decomposed layer on a batch (they feed the causal
importance functions ``g_{l,c}(x) = sigma_H(Gamma_{l,c}(V_{l,c}^T a_l))``), and its output with
some layers computing ``U_l (m_l * V_l^T a_l) + b_l`` instead of ``W_l a_l + b_l``.
:class:`HookedTarget` provides both through forward hooks on the layers, installed for the
duration of a ``with target.hooks():`` block. Biases are never decomposed: a replaced layer
keeps the target's bias (detached).

Two kinds of target:

* an ``nn.Linear`` (or :class:`mechnb.models.TiedLinear`) submodule, named like ``"linear1"``:
  ``a`` is the layer's input, its weight ``W (d_out, d_in)`` is the layer's own;
* a weight matrix of a transformer MLP (:class:`mechnb.models.MLPBlock`, so every
  :class:`~mechnb.models.TinyTransformer` and every model from :func:`mechnb.interop.from_hf`),
  named by its parameter, ``"blocks.0.mlp.W_in"`` or ``"blocks.0.mlp.W_out"``
  (:class:`MLPWeight`). The block computes ``x @ W_in + b_in`` and ``post @ W_out + b_out`` with
  parameters of shape ``[d_in, d_out]``, so SPD's weight is the *transpose*:
  ``W = W_in^T (d_mlp, d_model)``, ``U (d_mlp, C)``, ``V (d_model, C)`` and
  ``W_in ~= V U^T``; likewise ``W = W_out^T (d_model, d_mlp)``, ``U (d_model, C)``,
  ``V (d_mlp, C)``. ``W_in``'s input ``a`` is the block's input (the normalised residual
  stream, read by a forward pre-hook); its replaced output is ``hook_pre``'s value,
  ``U (m * V^T a) + b_in``. ``W_out``'s input is ``hook_post``'s value (the activation); its
  replaced output is the block's, ``U (m * V^T post) + b_out``.

Inputs with a sequence axis ``a (batch, pos, d_in)`` are decomposed per token: the causal
importances are computed on the ``batch * pos`` token rows (:func:`causal_importances`), and a
token-row mask ``(batch * pos, C)`` is reshaped to ``(batch, pos, C)`` inside the hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from mechnb.models import MLPBlock, TiedLinear
from mechnb.spd.components import SPDComponents, _upper_leaky, lower_sigmoid_fn

__all__ = ["MLPWeight", "decomposable_names", "resolve_target_modules", "frozen_parameters", "HookedTarget",
           "causal_importances", "token_weights"]

#: the MLP weight matrices that can be decomposed, by parameter name inside an :class:`MLPBlock`
MLP_WEIGHTS = ("W_in", "W_out")


class MLPWeight:
    """A transformer MLP weight matrix (``MLPBlock.W_in`` or ``W_out``) as an SPD target.

    It looks like an ``nn.Linear`` to the rest of :mod:`mechnb.spd`: :attr:`weight` is the
    ``(d_out, d_in)`` matrix the block applies (the *transpose* of the stored ``[d_in, d_out]``
    parameter, a read-only view) and :attr:`bias` its bias (``b_in`` / ``b_out``).
    :meth:`install` registers the hooks that read its input ``a`` and replace its output.

    Args:
        block: the :class:`mechnb.models.MLPBlock`.
        which: ``"W_in"`` or ``"W_out"``.
    """

    def __init__(self, block: MLPBlock, which: str) -> None:
        if which not in MLP_WEIGHTS:
            raise ValueError(f"which: expected one of {MLP_WEIGHTS}, got {which!r}")
        self.block, self.which = block, which

    @property
    def parameter(self) -> nn.Parameter:
        """The stored parameter ``[d_in, d_out]`` (``W_in [d_model, d_mlp]``, ``W_out [d_mlp, d_model]``)."""
        return getattr(self.block, self.which)

    @property
    def weight(self) -> torch.Tensor:
        """``(d_out, d_in)``: the transpose of :attr:`parameter` (a view)."""
        return self.parameter.T

    @property
    def bias(self) -> torch.Tensor | None:
        return self.block.b_in if self.which == "W_in" else self.block.b_out

    def install(self, replace: Callable[[torch.Tensor], torch.Tensor | None]) -> list[Any]:
        """Register the hooks: ``replace(a)`` sees the matmul's input and returns its output plus bias
        (``None``: the block's own). Returns the hook handles."""
        stash: dict[str, torch.Tensor] = {}
        if self.which == "W_in":
            def read(_m: nn.Module, inputs: tuple) -> None:
                stash["a"] = inputs[0]

            def write(_m: nn.Module, _inputs: tuple, _output: torch.Tensor) -> torch.Tensor | None:
                return replace(stash.pop("a"))

            return [self.block.register_forward_pre_hook(read), self.block.hook_pre.register_forward_hook(write)]

        def read_post(_m: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            stash["a"] = output

        def write_out(_m: nn.Module, _inputs: tuple, _output: torch.Tensor) -> torch.Tensor | None:
            return replace(stash.pop("a"))

        return [self.block.hook_post.register_forward_hook(read_post), self.block.register_forward_hook(write_out)]


def decomposable_names(model: nn.Module) -> list[str]:
    """Every name :func:`mechnb.spd.decompose` accepts in ``target_modules``: the ``nn.Linear`` /
    ``TiedLinear`` submodules, then ``<block>.W_in`` and ``<block>.W_out`` of every :class:`MLPBlock`."""
    linear = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, TiedLinear))]
    mlp = [f"{n}.{w}" for n, m in model.named_modules() if isinstance(m, MLPBlock) for w in MLP_WEIGHTS]
    return linear + mlp


def _resolve_one(model: nn.Module, name: str) -> nn.Module | MLPWeight:
    parent, _, attr = name.rpartition(".")
    if attr in MLP_WEIGHTS:
        try:
            block = model.get_submodule(parent) if parent else model
        except AttributeError:
            block = None
        if isinstance(block, MLPBlock):
            return MLPWeight(block, attr)
    try:
        m = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"target_modules: {name!r} is neither a submodule nor an MLP weight of the model; "
                         f"decomposable: {decomposable_names(model)}") from None
    if not isinstance(m, (nn.Linear, TiedLinear)):
        raise ValueError(f"target_modules: {name!r} is a {type(m).__name__}, expected an nn.Linear or an "
                         f"MLPBlock weight (W_in / W_out); decomposable: {decomposable_names(model)}")
    return m


def resolve_target_modules(model: nn.Module, target_modules: Any
                           ) -> tuple[dict[str, nn.Module | MLPWeight], dict[str, str]]:
    """``({name: layer}, {tied layer: its decomposed source layer})`` for the target names given.

    Every name must be a distinct ``nn.Linear`` (or :class:`mechnb.models.TiedLinear`) submodule
    of ``model`` or an MLP weight ``"<block>.W_in"`` / ``"<block>.W_out"`` of an
    :class:`MLPBlock` (returned as an :class:`MLPWeight`); a ``TiedLinear`` whose source is
    also decomposed is reported as tied to it. A bad name raises ``ValueError`` listing
    :func:`decomposable_names`.
    """
    if isinstance(target_modules, str) or not isinstance(target_modules, (list, tuple)) or not target_modules:
        raise TypeError(
            f"target_modules: expected a non-empty list of layer names like ['linear1', 'linear2'], "
            f"got {target_modules!r}"
        )
    if len(set(target_modules)) != len(target_modules):
        raise ValueError(f"target_modules: expected distinct names, got {list(target_modules)!r}")
    modules: dict[str, nn.Module | MLPWeight] = {}
    for name in target_modules:
        if not isinstance(name, str):
            raise TypeError(f"target_modules: expected layer names (str), got {type(name).__name__} {name!r}")
        modules[name] = _resolve_one(model, name)
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

    * :meth:`capture` ``(x)`` runs the unchanged model and returns ``(output, {layer: a_l (N, d_in)})``
      (``(batch, pos, d_in)`` for a transformer);
    * :meth:`masked` ``(x, replace)`` runs it with every layer in ``replace`` computing
      ``U_l (m * V_l^T a) + b`` (``m = replace[layer]`` of shape ``(N, C)`` or ``(C,)``, for
      sequence inputs also ``(batch, pos, C)`` or token rows ``(batch * pos, C)``; ``None``
      means all ones); the other layers keep their target weights.

    Args:
        model: the target model.
        modules: ``{layer name: module or MLPWeight}`` from :func:`resolve_target_modules`.
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
                if isinstance(module, MLPWeight):
                    handles.extend(module.install(self._replacer(name, module)))
                else:
                    handles.append(module.register_forward_hook(self._hook(name, module)))
            yield self
        finally:
            for h in handles:
                h.remove()

    def _replacer(self, name: str, module: nn.Module | MLPWeight) -> Callable[[torch.Tensor], torch.Tensor | None]:
        """``a -> output``: record ``a`` when capturing; when ``name`` is replaced, its masked components' output."""
        def replace(a: torch.Tensor) -> torch.Tensor | None:
            if self._capture is not None:
                self._capture[name] = a
            if name in self._replace:
                bias = module.bias.detach() if getattr(module, "bias", None) is not None else None
                mask = self._replace[name]
                if mask is not None and mask.ndim == 2 and a.ndim > 2 and mask.shape[0] == a.shape[:-1].numel():
                    mask = mask.reshape(*a.shape[:-1], mask.shape[-1])  # token rows -> (batch, pos, C)
                weight = module.weight.detach() if mask is not None and mask.shape[-1] != self.components.C else None
                return self.components.component_forward(name, a, mask, bias, target_weight=weight)
            return None

        return replace

    def _hook(self, name: str, module: nn.Module) -> Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor | None]:
        replace = self._replacer(name, module)

        def hook(_m: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            return replace(inputs[0])

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

    Inputs with more axes, ``(batch, pos, d_in)``, are flattened to token rows: ``N = batch * pos``
    (importances per token, as in the paper's language-model experiments). Every layer must see
    the same leading shape.
    """
    lead = acts[components.names[0]].shape[:-1]
    for n in components.names:
        a = acts[n]
        if a.ndim < 2 or a.shape[:-1] != lead:
            raise ValueError(
                f"target_modules: layer {n!r} receives inputs of shape {tuple(a.shape)}; mechnb.spd decomposes "
                f"layers whose inputs are (batch, d_in) or (batch, pos, d_in), all with the same leading shape "
                f"(here {tuple(lead)})"
            )
    if len(lead) > 1:
        acts = {n: acts[n].reshape(-1, acts[n].shape[-1]) for n in components.names}
    pre = components.ci_pre_activations(acts)  # (N, L, C)
    return lower_sigmoid_fn(lower)(pre, alpha), _upper_leaky(pre, alpha if upper_alpha is None else upper_alpha)


def token_weights(weights: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Per-row weights ``(B,)`` spread over ``n_rows = B * pos`` token rows: ``(n_rows,)``, each ``w_b / pos``.

    The weights of ``B`` rows summing to 1 stay summing to 1, so a weighted sum over token rows is
    the per-token mean. ``n_rows == B`` returns ``weights`` itself.
    """
    B = weights.shape[0]
    if n_rows == B:
        return weights
    if n_rows % B:
        raise ValueError(f"n_rows: expected a multiple of the batch size {B}, got {n_rows}")
    pos = n_rows // B
    return weights.repeat_interleave(pos) / pos
