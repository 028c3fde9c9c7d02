"""The small models that mechnb trains, decomposes and dissects.

All models are plain ``torch.nn.Module``s with readable layer names:

* :class:`TMS` - toy model of superposition (Elhage et al. 2022), as used in the SPD paper.
* :class:`ResidualMLP` - the "compressed computation" residual MLP of the APD/SPD papers.
* :class:`MLP` - a plain multilayer perceptron that can return all its activations.
* :class:`TinyTransformer` - a pre-LayerNorm GPT-style transformer with the weight layout
  (``W_Q[n_heads, d_model, d_head]`` ...) and hook names (``blocks.{l}.attn.hook_result`` ...)
  of TransformerLens.

Inputs follow the dtype policy of :mod:`mechnb._checks`: a real floating input is cast to the
model's dtype (a float64 batch into a float32 TMS is fine), an integer, bool or complex one
raises ``TypeError`` naming the argument.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mechnb._checks import (
    check_choice, check_float_input, check_positive_float, check_positive_int, check_seed, check_tensor,
)

__all__ = ["HookPoint", "TiedLinear", "TMS", "ResidualMLP", "MLP", "TinyTransformer", "LayerNorm"]

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


# --------------------------------------------------------------------------------------
# Toy model of superposition
# --------------------------------------------------------------------------------------
class TiedLinear(nn.Module):
    """A linear layer whose weight is the transpose of another ``nn.Linear``'s weight.

    ``weight`` is a read-only property (``source.weight.T``, shape ``(out, in)``), so the
    tie survives optimisation and ``state_dict`` holds only the bias.
    """

    def __init__(self, source: nn.Linear, bias: bool = True) -> None:
        super().__init__()
        object.__setattr__(self, "_source", source)  # not a submodule: no duplicate parameters
        self.in_features = source.out_features
        self.out_features = source.in_features
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        return self._source.weight.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tied to transpose of linear1"


class TMS(nn.Module):
    """Toy model of superposition: ``x -> linear1 -> [hidden_layers] -> linear2 -> ReLU``.

    ``linear1``: ``n_features -> n_hidden``, no bias. ``hidden_layers``: ``n_hidden_layers``
    square ``nn.Linear`` maps without bias, initialised to the identity (the SPD paper's
    "TMS with an identity hidden layer"). ``linear2``: ``n_hidden -> n_features`` with bias;
    with ``tied_weights`` its weight *is* ``linear1.weight.T`` (a :class:`TiedLinear`).

    Shapes: ``x (batch, n_features) -> (batch, n_features)``; ``x`` is cast to the model's dtype.
    """

    def __init__(self, n_features: int, n_hidden: int, n_hidden_layers: int = 0, tied_weights: bool = True) -> None:
        super().__init__()
        self.n_features = check_positive_int("n_features", n_features)
        self.n_hidden = check_positive_int("n_hidden", n_hidden)
        self.n_hidden_layers = check_positive_int("n_hidden_layers", n_hidden_layers, minimum=0)
        self.tied_weights = bool(tied_weights)
        self.linear1 = nn.Linear(n_features, n_hidden, bias=False)
        self.hidden_layers = nn.ModuleList()
        for _ in range(n_hidden_layers):
            layer = nn.Linear(n_hidden, n_hidden, bias=False)
            with torch.no_grad():
                layer.weight.copy_(torch.eye(n_hidden))
            self.hidden_layers.append(layer)
        if tied_weights:
            self.linear2: nn.Module = TiedLinear(self.linear1, bias=True)
        else:
            self.linear2 = nn.Linear(n_hidden, n_features, bias=True)
            with torch.no_grad():
                self.linear2.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, shape=(None, self.n_features), dims="(batch, n_features)")
        x = check_float_input("x", x, self.linear1.weight.dtype)
        h = self.linear1(x)
        for layer in self.hidden_layers:
            h = layer(h)
        return F.relu(self.linear2(h))


# --------------------------------------------------------------------------------------
# Residual MLP (compressed computation)
# --------------------------------------------------------------------------------------
class _ResidualBlock(nn.Module):
    def __init__(self, d_embed: int, d_mlp: int) -> None:
        super().__init__()
        self.mlp_in = nn.Linear(d_embed, d_mlp, bias=False)
        self.mlp_out = nn.Linear(d_mlp, d_embed, bias=False)

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        return resid + self.mlp_out(F.relu(self.mlp_in(resid)))


class ResidualMLP(nn.Module):
    """Residual MLP that computes ``y = x + ReLU(x)`` for many sparse features at once.

    A fixed random embedding ``W_E (n_features, d_embed)`` with unit-norm rows (a buffer,
    not trained) writes the features into the residual stream; each block adds
    ``layers[i].mlp_out(ReLU(layers[i].mlp_in(resid)))``; the unembedding is ``W_E.T``.
    No biases. With ``d_mlp < n_features`` the MLPs must compute the ReLUs in superposition
    ("compressed computation", SPD paper Sec. 4.3).

    Shapes: ``x (batch, n_features) -> (batch, n_features)``; ``x`` is cast to the model's dtype.
    """

    def __init__(self, n_features: int, d_embed: int, d_mlp: int, n_layers: int, embed_seed: int = 0) -> None:
        super().__init__()
        self.n_features = check_positive_int("n_features", n_features)
        self.d_embed = check_positive_int("d_embed", d_embed)
        self.d_mlp = check_positive_int("d_mlp", d_mlp)
        self.n_layers = check_positive_int("n_layers", n_layers)
        g = torch.Generator().manual_seed(check_seed("embed_seed", embed_seed))
        W_E = torch.randn(n_features, d_embed, generator=g)
        self.register_buffer("W_E", W_E / W_E.norm(dim=1, keepdim=True))
        self.layers = nn.ModuleList(_ResidualBlock(d_embed, d_mlp) for _ in range(n_layers))

    @staticmethod
    def label(x: torch.Tensor) -> torch.Tensor:
        """The target function ``y = x + ReLU(x)``."""
        return x + F.relu(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, shape=(None, self.n_features), dims="(batch, n_features)")
        x = check_float_input("x", x, self.W_E.dtype)
        resid = x @ self.W_E
        for block in self.layers:
            resid = block(resid)
        return resid @ self.W_E.T


# --------------------------------------------------------------------------------------
# Plain MLP
# --------------------------------------------------------------------------------------
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "linear": lambda x: x,
}


class MLP(nn.Module):
    """A multilayer perceptron ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    ``layers[i]`` is the ``nn.Linear`` from ``sizes[i]`` to ``sizes[i+1]``. The activation
    follows every layer except the last (which returns logits / raw outputs).

    ``forward(x, return_activations=True)`` also returns the list of post-activations of
    every layer in order: ``acts[i]`` has shape ``(batch, sizes[i+1])`` and the last entry
    is the output itself. ``x (batch, sizes[0])`` is cast to the model's dtype.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu", bias: bool = True) -> None:
        super().__init__()
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2:
            raise ValueError(f"sizes: expected a sequence of at least two layer widths, got {sizes!r}")
        self.sizes = [check_positive_int(f"sizes[{i}]", s) for i, s in enumerate(sizes)]
        self.activation = check_choice("activation", activation, list(_ACTIVATIONS))
        self.bias = bool(bias)
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    @torch.no_grad()
    def identity_init_(self) -> MLP:
        """Set every square hidden layer to the identity with zero bias (Le et al. 2015).

        After a ReLU the activations are non-negative, so an identity layer passes them through
        unchanged: a deep MLP initialised this way starts out computing what its first layer and
        last layer compute, and trains like a shallow network. Returns ``self``.
        """
        for layer in self.layers[1:-1]:
            if layer.weight.shape[0] == layer.weight.shape[1]:
                layer.weight.copy_(torch.eye(layer.weight.shape[0]))
                if layer.bias is not None:
                    layer.bias.zero_()
        return self

    @property
    def act_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return _ACTIVATIONS[self.activation]

    def forward(
        self, x: torch.Tensor, return_activations: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        check_tensor("x", x, shape=(None, self.sizes[0]), dims="(batch, in_features)")
        x = check_float_input("x", x, self.layers[0].weight.dtype)
        acts: list[torch.Tensor] = []
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.act_fn(h)
            acts.append(h)
        return (h, acts) if return_activations else h


# --------------------------------------------------------------------------------------
# Tiny transformer (TransformerLens conventions)
# --------------------------------------------------------------------------------------
class LayerNorm(nn.Module):
    """LayerNorm with TransformerLens parameter names ``w`` and ``b``.

    Works on any tensor whose last dimension is ``d_model`` (so it can normalise the split
    per-head q/k/v inputs ``(batch, pos, n_heads, d_model)`` too).
    """

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w + self.b


class Attention(nn.Module):
    """Multi-head causal self-attention with per-head q/k/v inputs and per-head results.

    Weights: ``W_Q, W_K, W_V [n_heads, d_model, d_head]``, ``W_O [n_heads, d_head, d_model]``,
    biases ``b_Q, b_K, b_V [n_heads, d_head]``, ``b_O [d_model]``.

    Hook points (``blocks.{l}.attn.*``): ``hook_q_input``/``hook_k_input``/``hook_v_input``
    ``[batch, pos, n_heads, d_model]`` (the residual stream each head reads, *before* ln1),
    ``hook_q``/``hook_k``/``hook_v`` ``[batch, pos, n_heads, d_head]``, ``hook_attn_scores`` /
    ``hook_pattern`` ``[batch, n_heads, query_pos, key_pos]``, ``hook_z`` and ``hook_result``
    ``[batch, pos, n_heads, d_model]`` (each head's contribution to the residual stream,
    without ``b_O``).
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, n_ctx: int, rotary_dim: int = 0,
                 rotary_base: float = 10000.0) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.rotary_dim = int(rotary_dim)
        if self.rotary_dim:
            # RoFormer (Su et al. 2021, Eq. 34) on the first rotary_dim dims of each head, halves rotated
            # against each other (GPT-NeoX layout): frequencies base^(-2i/rotary_dim), i < rotary_dim/2
            inv_freq = 1.0 / (rotary_base ** (torch.arange(0, self.rotary_dim, 2, dtype=torch.float32) / self.rotary_dim))
            self.register_buffer("inv_freq", inv_freq, persistent=False)
            self.hook_rot_q = HookPoint()
            self.hook_rot_k = HookPoint()
        self.W_Q = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_K = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_V = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_O = nn.Parameter(torch.empty(n_heads, d_head, d_model))
        self.b_Q = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_K = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_V = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_O = nn.Parameter(torch.zeros(d_model))
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)), persistent=False)
        for name in ("q_input", "k_input", "v_input", "q", "k", "v", "attn_scores", "pattern", "z", "result"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, resid: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        split = resid.unsqueeze(2).expand(-1, -1, self.n_heads, -1)  # [b, p, h, d_model]
        q_in = ln(self.hook_q_input(split))
        k_in = ln(self.hook_k_input(split))
        v_in = ln(self.hook_v_input(split))
        q = self.hook_q(torch.einsum("bphd,hde->bphe", q_in, self.W_Q) + self.b_Q)
        k = self.hook_k(torch.einsum("bphd,hde->bphe", k_in, self.W_K) + self.b_K)
        v = self.hook_v(torch.einsum("bphd,hde->bphe", v_in, self.W_V) + self.b_V)
        if self.rotary_dim:
            q = self.hook_rot_q(self.rotate(q, pos_dim=1))
            k = self.hook_rot_k(self.rotate(k, pos_dim=1))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(self.d_head)
        n = resid.shape[1]
        scores = scores.masked_fill(~self.mask[:n, :n], float("-inf"))
        pattern = self.hook_pattern(torch.softmax(self.hook_attn_scores(scores), dim=-1))
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        return self.hook_result(torch.einsum("bqhe,hed->bqhd", z, self.W_O))  # [b, p, h, d_model]

    def rotate(self, x: torch.Tensor, pos_dim: int) -> torch.Tensor:
        """Rotary position embedding of queries or keys ``x [..., d_head]`` whose dimension ``pos_dim``
        is the position (0, 1, ...); the identity without rotary embeddings.

        The first ``rotary_dim`` features are split into halves ``x1, x2`` and rotated pairwise,
        ``(x1 cos - x2 sin, x2 cos + x1 sin)`` with angle ``pos * inv_freq[i]`` (Su et al. 2021,
        Eq. 34, the half-split layout of GPT-NeoX); the remaining features pass unchanged.
        """
        if not self.rotary_dim:
            return x
        n, r = x.shape[pos_dim], self.rotary_dim
        freqs = torch.outer(torch.arange(n, device=x.device, dtype=torch.float32), self.inv_freq)  # [n, r/2]
        emb = torch.cat([freqs, freqs], dim=-1)  # [n, r]
        shape = [1] * x.ndim
        shape[pos_dim], shape[-1] = n, r
        cos, sin = emb.cos().to(x.dtype).view(shape), emb.sin().to(x.dtype).view(shape)
        x_rot, x_pass = x[..., :r], x[..., r:]
        x1, x2 = x_rot[..., : r // 2], x_rot[..., r // 2:]
        rotated = torch.cat([-x2, x1], dim=-1)
        return torch.cat([x_rot * cos + rotated * sin, x_pass], dim=-1)


_TRANSFORMER_ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact (erf) GELU: mechnb's own models and GPT-NeoX / Pythia
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's tanh approximation
    "relu": F.relu,
}


class MLPBlock(nn.Module):
    """Transformer MLP: ``W_in [d_model, d_mlp]``, ``b_in``, activation, ``W_out [d_mlp, d_model]``, ``b_out``.

    ``act_fn``: ``"gelu"`` (exact, the default), ``"gelu_new"`` (tanh approximation, GPT-2) or ``"relu"``.
    """

    def __init__(self, d_model: int, d_mlp: int, act_fn: str = "gelu") -> None:
        super().__init__()
        self.act_fn = act_fn
        self._act = _TRANSFORMER_ACTS[act_fn]
        self.W_in = nn.Parameter(torch.empty(d_model, d_mlp))
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.empty(d_mlp, d_model))
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        post = self.hook_post(self._act(self.hook_pre(x @ self.W_in + self.b_in)))
        return post @ self.W_out + self.b_out


class TransformerBlock(nn.Module):
    """Pre-LN block: ``resid_mid = resid_pre + Σ_h result_h + b_O``; ``resid_post = resid_mid + mlp(ln2(resid_mid))``.

    With ``parallel`` (GPT-J / GPT-NeoX) the MLP reads the block's input instead:
    ``resid_post = resid_mid + mlp(ln2(resid_pre))`` (``hook_mlp_in`` is then ``resid_pre``), so no
    head of this layer is upstream of its MLP.
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, d_mlp: int, n_ctx: int, attn_only: bool,
                 act_fn: str = "gelu", parallel: bool = False, ln_eps: float = 1e-5, rotary_dim: int = 0,
                 rotary_base: float = 10000.0) -> None:
        super().__init__()
        self.attn_only = attn_only
        self.parallel = parallel
        self.ln1 = LayerNorm(d_model, ln_eps)
        self.attn = Attention(d_model, n_heads, d_head, n_ctx, rotary_dim, rotary_base)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()
        if not attn_only:
            self.ln2 = LayerNorm(d_model, ln_eps)
            self.mlp = MLPBlock(d_model, d_mlp, act_fn)
            self.hook_mlp_in = HookPoint()
            self.hook_mlp_out = HookPoint()

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        resid_pre = resid = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.attn(resid, self.ln1).sum(dim=2) + self.attn.b_O)
        resid = self.hook_resid_mid(resid + attn_out)
        if not self.attn_only:
            mlp_out = self.hook_mlp_out(self.mlp(self.ln2(self.hook_mlp_in(resid_pre if self.parallel else resid))))
            resid = resid + mlp_out
        return self.hook_resid_post(resid)


class _TiedUnembed(nn.Module):
    """The unembedding of a model whose ``W_U`` *is* ``embed.W_E.T`` (a read-only view, GPT-2)."""

    def __init__(self, embed: nn.Module, bias: bool, d_vocab: int) -> None:
        super().__init__()
        object.__setattr__(self, "_embed", embed)  # not a submodule: W_E stays one parameter
        if bias:
            self.b_U = nn.Parameter(torch.zeros(d_vocab))
        else:
            self.register_parameter("b_U", None)

    @property
    def W_U(self) -> torch.Tensor:
        return self._embed.W_E.T


class TinyTransformer(_HookedMixin, nn.Module):
    """A small pre-LayerNorm GPT-style transformer in TransformerLens conventions.

    Parameters: ``embed.W_E [d_vocab, d_model]``, ``pos_embed.W_pos [n_ctx, d_model]``,
    ``blocks.{l}.attn.W_Q/W_K/W_V [n_heads, d_model, d_head]``, ``W_O [n_heads, d_head, d_model]``,
    ``blocks.{l}.mlp.W_in [d_model, d_mlp]``, ``W_out [d_mlp, d_model]``,
    ``ln_final``, ``unembed.W_U [d_model, d_vocab]``, ``unembed.b_U``.

    Residual writers (the nodes of a circuit graph): ``hook_embed + hook_pos_embed`` (the
    input), ``blocks.{l}.attn.hook_result[:, :, h]`` (head ``h``; ``b_O`` is a constant) and
    ``blocks.{l}.hook_mlp_out``. Readers: ``blocks.{l}.attn.hook_{q,k,v}_input[:, :, h]``,
    ``blocks.{l}.hook_mlp_in`` and ``blocks.{n_layers-1}.hook_resid_post`` (read by the
    unembedding). Every hook point can be read or patched with :meth:`run_with_hooks` /
    :meth:`run_with_cache`.

    Architecture options (the defaults are mechnb's own models; :func:`mechnb.interop.from_hf`
    sets them for GPT-2 and GPT-NeoX / Pythia):

    * ``act_fn``: the MLP nonlinearity, ``"gelu"`` (exact), ``"gelu_new"`` (tanh, GPT-2) or ``"relu"``.
    * ``positional``: ``"learned"`` (``pos_embed.W_pos`` added to the input, ``hook_pos_embed``) or
      ``"rotary"`` (no position embedding; queries and keys rotated on their first ``rotary_dim``
      features with base ``rotary_base``, hook points ``attn.hook_rot_q`` / ``hook_rot_k``). The
      ``input`` node of a circuit graph is then the token embedding alone.
    * ``parallel_attn_mlp``: each block's MLP reads the block's input, like its attention.
    * ``tied_unembed``: ``unembed.W_U`` is ``embed.W_E.T`` (one parameter); ``unembed_bias``: whether
      ``unembed.b_U`` exists (``None`` otherwise).
    * ``ln_eps``: the epsilon of every LayerNorm.

    Shapes: ``tokens (batch, pos)`` int64 with ``pos <= n_ctx`` -> logits ``(batch, pos, d_vocab)``.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_mlp: int,
        n_ctx: int,
        attn_only: bool = False,
        d_head: int | None = None,
        init_seed: int | None = None,
        *,
        act_fn: str = "gelu",
        positional: str = "learned",
        rotary_dim: int | None = None,
        rotary_base: float = 10000.0,
        parallel_attn_mlp: bool = False,
        tied_unembed: bool = False,
        unembed_bias: bool = True,
        ln_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.d_model = check_positive_int("d_model", d_model)
        self.n_layers = check_positive_int("n_layers", n_layers)
        self.n_heads = check_positive_int("n_heads", n_heads)
        self.d_mlp = check_positive_int("d_mlp", d_mlp)
        self.n_ctx = check_positive_int("n_ctx", n_ctx)
        if d_head is None:
            if d_model % n_heads:
                raise ValueError(f"d_model: expected a multiple of n_heads={n_heads} (or pass d_head), got {d_model}")
            d_head = d_model // n_heads
        self.d_head = check_positive_int("d_head", d_head)
        self.attn_only = bool(attn_only)
        self.act_fn = check_choice("act_fn", act_fn, list(_TRANSFORMER_ACTS))
        self.positional = check_choice("positional", positional, ["learned", "rotary"])
        if self.positional == "rotary":
            rotary_dim = self.d_head if rotary_dim is None else check_positive_int("rotary_dim", rotary_dim)
            if rotary_dim > self.d_head or rotary_dim % 2:
                raise ValueError(f"rotary_dim: expected an even number <= d_head={self.d_head}, got {rotary_dim}")
            self.rotary_dim = int(rotary_dim)
        elif rotary_dim is not None:
            raise ValueError(f"rotary_dim: expected None with positional='learned', got {rotary_dim!r}")
        else:
            self.rotary_dim = 0
        self.rotary_base = check_positive_float("rotary_base", rotary_base)
        for name, flag in (("parallel_attn_mlp", parallel_attn_mlp), ("tied_unembed", tied_unembed),
                           ("unembed_bias", unembed_bias)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name}: expected a bool, got {type(flag).__name__} {flag!r}")
        self.parallel_attn_mlp, self.tied_unembed, self.unembed_bias = parallel_attn_mlp, tied_unembed, unembed_bias
        self.ln_eps = check_positive_float("ln_eps", ln_eps)

        self.embed = nn.Module()
        self.embed.W_E = nn.Parameter(torch.empty(vocab_size, d_model))
        if self.positional == "learned":
            self.pos_embed = nn.Module()
            self.pos_embed.W_pos = nn.Parameter(torch.empty(n_ctx, d_model))
        self.hook_embed = HookPoint()
        if self.positional == "learned":
            self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, self.d_head, d_mlp, n_ctx, self.attn_only, self.act_fn,
                             self.parallel_attn_mlp, self.ln_eps, self.rotary_dim, self.rotary_base)
            for _ in range(n_layers)
        )
        self.ln_final = LayerNorm(d_model, self.ln_eps)
        if tied_unembed:
            self.unembed: nn.Module = _TiedUnembed(self.embed, unembed_bias, vocab_size)
        else:
            self.unembed = nn.Module()
            self.unembed.W_U = nn.Parameter(torch.empty(d_model, vocab_size))
            if unembed_bias:
                self.unembed.b_U = nn.Parameter(torch.zeros(vocab_size))
            else:
                self.unembed.register_parameter("b_U", None)
        if init_seed is not None:
            check_seed("init_seed", init_seed)
        self.reset_parameters(init_seed)
        _name_hook_points(self)

    _OPTION_DEFAULTS: dict[str, Any] = dict(act_fn="gelu", positional="learned", rotary_dim=None, rotary_base=10000.0,
                                            parallel_attn_mlp=False, tied_unembed=False, unembed_bias=True,
                                            ln_eps=1e-5)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, so ``TinyTransformer(**m.config())`` rebuilds the architecture.

        The architecture options appear only where they differ from their defaults (so the
        config of mechnb's own models is what it always was)."""
        cfg = dict(vocab_size=self.vocab_size, d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
                   d_mlp=self.d_mlp, n_ctx=self.n_ctx, attn_only=self.attn_only, d_head=self.d_head)
        options = dict(act_fn=self.act_fn, positional=self.positional,
                       rotary_dim=self.rotary_dim if self.positional == "rotary" else None,
                       rotary_base=self.rotary_base, parallel_attn_mlp=self.parallel_attn_mlp,
                       tied_unembed=self.tied_unembed, unembed_bias=self.unembed_bias, ln_eps=self.ln_eps)
        cfg.update({k: v for k, v in options.items() if v != self._OPTION_DEFAULTS[k]})
        return cfg

    def unembed_resid(self, resid: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., d_vocab)`` from the final residual stream ``resid (..., d_model)``:
        ``ln_final`` then ``W_U`` (and ``b_U`` when the model has one)."""
        logits = self.ln_final(resid) @ self.unembed.W_U
        return logits if self.unembed.b_U is None else logits + self.unembed.b_U

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """GPT-2 style init: N(0, 0.02) weights, zero biases, unit LayerNorm gains."""
        g = torch.Generator().manual_seed(check_seed("seed", seed)) if seed is not None else None
        for name, p in self.named_parameters():
            leaf = name.split(".")[-1]
            if leaf.startswith("W_"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif leaf == "w":
                p.fill_(1.0)
            else:
                p.zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tensor("tokens", tokens, ndim=2, dims="(batch, pos)", floating=False)
        if tokens.shape[1] > self.n_ctx:
            raise ValueError(f"tokens: expected at most n_ctx={self.n_ctx} positions, got {tokens.shape[1]}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(
                f"tokens: expected ids in [0, {self.vocab_size}), got range [{int(tokens.min())}, {int(tokens.max())}]"
            )
        resid = self.hook_embed(self.embed.W_E[tokens])
        if self.positional == "learned":
            resid = resid + self.hook_pos_embed(self.pos_embed.W_pos[: tokens.shape[1]].unsqueeze(0).expand_as(resid))
        for block in self.blocks:
            resid = block(resid)
        return self.unembed_resid(resid)

    @torch.no_grad()
    def generate(
        self, tokens: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
        generator: torch.Generator | None = None, stop_token: int | None = None,
    ) -> torch.Tensor:
        """Sample a continuation of ``tokens (batch, pos)``; returns ``(batch, pos + new)``.

        ``temperature=0`` is greedy decoding (a finite number >= 0; NaN and inf raise ``ValueError``).
        Generation stops at ``n_ctx`` tokens, or once every row has produced ``stop_token`` (an id
        in ``[0, vocab_size)``). ``generator`` is a CPU ``torch.Generator`` for the sampling.
        """
        check_tensor("tokens", tokens, ndim=2, dims="(batch, pos)", floating=False)
        check_positive_int("max_new_tokens", max_new_tokens)
        temperature = check_positive_float("temperature", temperature, allow_zero=True)
        if stop_token is not None:
            check_positive_int("stop_token", stop_token, minimum=0)
            if stop_token >= self.vocab_size:
                raise ValueError(f"stop_token: expected an id in [0, {self.vocab_size}), got {stop_token}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        out = tokens
        done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        for _ in range(max_new_tokens):
            if out.shape[1] >= self.n_ctx:
                break
            logits = self(out)[:, -1]
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(out.device)
            if stop_token is not None:
                nxt = torch.where(done, torch.full_like(nxt, stop_token), nxt)
                done = done | (nxt == stop_token)
            out = torch.cat([out, nxt[:, None]], dim=1)
            if stop_token is not None and bool(done.all()):
                break
        return out
