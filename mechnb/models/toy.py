"""The toy models: :class:`TMS`, :class:`ResidualMLP` and the plain :class:`MLP` (with :class:`TiedLinear`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mechnb._checks import check_choice, check_float_input, check_positive_int, check_seed, check_tensor

__all__ = ["TiedLinear", "TMS", "ResidualMLP", "MLP"]


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


