"""Which parameter entries a circuit's nodes own (Li et al. 2025, ``get_relevant_params``).

Circuit-tuning trains exactly these entries (:class:`~mechnb.circuits.tuning.CircuitTuning`).
"""

from __future__ import annotations

import torch
from torch import nn

from mechnb.circuits.circuit import Circuit
from mechnb.circuits.graph import Graph
from mechnb.models import TinyTransformer

__all__ = ["parameter_mask", "node_parameter_mask", "trainable_fraction"]


def parameter_mask(model: TinyTransformer, circuit: Circuit) -> dict[str, torch.Tensor]:
    """Which parameter entries the circuit's nodes own: ``{name: bool tensor like the parameter}``.

    A head ``a{l}.h{h}`` owns ``W_Q[h], b_Q[h]`` if its query input has an incoming circuit
    edge (likewise ``K``, ``V``) and ``W_O[h]`` if it has an outgoing circuit edge. An MLP
    ``m{l}`` owns ``ln2``, ``W_in``, ``b_in`` if it has an incoming edge and ``W_out``, ``b_out`` if it
    has an outgoing one. Shared or non-node parameters (embeddings, ``ln1``, ``b_O``,
    ``ln_final``, unembedding) are owned by no node, as in the paper's ``get_relevant_params``.
    Every parameter of ``model`` has an entry (all ``False`` if not owned).
    """
    if not isinstance(circuit, Circuit):
        raise TypeError(f"circuit: expected a Circuit, got {type(circuit).__name__}")
    graph = circuit.graph
    graph.check_model(model)
    params = dict(model.named_parameters())
    masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    mask = circuit.mask
    outgoing = mask.any(1).tolist()
    incoming = mask.any(0).tolist()
    for i, w in enumerate(graph.writers):
        if not outgoing[i] or w == "input":
            continue
        if w.startswith("a"):
            layer, head = (int(x) for x in w[1:].split(".h"))
            masks[f"blocks.{layer}.attn.W_O"][head] = True
        else:
            layer = int(w[1:])
            masks[f"blocks.{layer}.mlp.W_out"][:] = True
            masks[f"blocks.{layer}.mlp.b_out"][:] = True
    for j, (node, letter) in enumerate(graph.readers):
        if not incoming[j] or node == "logits":
            continue
        if node.startswith("a"):
            layer, head = (int(x) for x in node[1:].split(".h"))
            for kind in ("W", "b"):
                masks[f"blocks.{layer}.attn.{kind}_{letter.upper()}"][head] = True
        else:
            layer = int(node[1:])
            for name in ("ln2.w", "ln2.b", "mlp.W_in", "mlp.b_in"):
                masks[f"blocks.{layer}.{name}"][:] = True
    return masks


def node_parameter_mask(model: TinyTransformer) -> dict[str, torch.Tensor]:
    """The parameters owned by *some* node: :func:`parameter_mask` of the full circuit."""
    return parameter_mask(model, Circuit.full(Graph.from_model(model)))


def trainable_fraction(model: nn.Module, masks: dict[str, torch.Tensor]) -> float:
    """Fraction of all of ``model``'s parameter entries that ``masks`` marks trainable."""
    total = sum(p.numel() for p in model.parameters())
    return sum(int(m.sum()) for m in masks.values()) / total
