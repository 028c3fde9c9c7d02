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


from mechnb.models.hooks import HookFn, HookPoint, _HookedMixin, _name_hook_points, _wrap_hook  # noqa: F401
from mechnb.models.toy import _ACTIVATIONS, MLP, TMS, ResidualMLP, TiedLinear, _ResidualBlock  # noqa: F401
from mechnb.models.transformer import (  # noqa: F401
    _TRANSFORMER_ACTS, Attention, LayerNorm, MLPBlock, TinyTransformer, TransformerBlock, _TiedUnembed,
)

__all__ = ["HookPoint", "TiedLinear", "TMS", "ResidualMLP", "MLP", "TinyTransformer", "LayerNorm"]
