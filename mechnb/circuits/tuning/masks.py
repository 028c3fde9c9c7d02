"""Which parameter entries a circuit's nodes own: what circuit-tuning trains (Li et al. 2025, Alg. 1).

Circuit-tuning trains exactly these entries (:class:`~mechnb.circuits.tuning.CircuitTuning`);
:func:`ownership_blocks` / :func:`random_blocks_mask` draw the random-parameter baseline from the
same kind of blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from mechnb.circuits.circuit import Circuit
from mechnb.circuits.graph import Graph
from mechnb.models import TinyTransformer

__all__ = ["parameter_mask", "node_parameter_mask", "trainable_fraction", "ownership_blocks", "random_blocks_mask"]


def parameter_mask(model: TinyTransformer, circuit: Circuit) -> dict[str, torch.Tensor]:
    """Which parameter entries the circuit's nodes own: ``{name: bool tensor like the parameter}``.

    A head ``a{l}.h{h}`` owns ``W_Q[h], b_Q[h]`` if its query input has an incoming circuit
    edge (likewise ``K``, ``V``) and ``W_O[h]`` if it has an outgoing circuit edge. An MLP
    ``m{l}`` owns ``ln2``, ``W_in``, ``b_in`` if it has an incoming edge and ``W_out``, ``b_out`` if it
    has an outgoing one. Shared or non-node parameters (embeddings, ``ln1``, ``b_O``,
    ``ln_final``, unembedding) are owned by no node. Every parameter of ``model`` has an entry
    (all ``False`` if not owned).

    This deliberately differs from the selection in the authors' released code
    (``get_relevant_params``), which works on whole parameter tensors: there a head whose query
    (key, value) input is in the circuit makes the *whole* ``W_Q`` (``W_K``, ``W_V``) tensor of its
    layer, every head's slice, and its bias trainable; a head that writes into the circuit makes
    ``W_O`` and ``b_O`` trainable, with the other heads' ``W_O`` rows' gradients zeroed; an MLP owns
    ``W_in``/``b_in`` and ``W_out``/``b_out`` but never its LayerNorm; and frozen tensors are frozen
    through ``requires_grad`` while masked gradients still see momentum and weight decay. Here
    ownership is per head slice (a head outside the circuit is never changed), ``b_O`` (shared by
    all heads of a layer) is owned by no node, an MLP's input side includes the ``ln2`` that only it
    reads, and everything outside the mask is held bit for bit (see :class:`CircuitTuning`).
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


def ownership_blocks(model: TinyTransformer) -> list[list[tuple[str, int | None]]]:
    """The blocks of entries a node can own, each a list of ``(parameter name, head index or None)``.

    Per head: its query, key and value slices (``W_Q[h]`` with ``b_Q[h]``, ...) and its output slice
    ``W_O[h]``; per MLP: its input side (``ln2.w``, ``ln2.b``, ``W_in``, ``b_in``) and its output side
    (``W_out``, ``b_out``) - the units :func:`parameter_mask` switches on.
    """
    blocks: list[list[tuple[str, int | None]]] = []
    for layer in range(model.n_layers):
        for h in range(model.n_heads):
            for letter in "QKV":
                blocks.append([(f"blocks.{layer}.attn.W_{letter}", h), (f"blocks.{layer}.attn.b_{letter}", h)])
            blocks.append([(f"blocks.{layer}.attn.W_O", h)])
        if not model.attn_only:
            blocks.append([(f"blocks.{layer}.{n}", None) for n in ("ln2.w", "ln2.b", "mlp.W_in", "mlp.b_in")])
            blocks.append([(f"blocks.{layer}.mlp.{n}", None) for n in ("W_out", "b_out")])
    return blocks


def random_blocks_mask(model: TinyTransformer, blocks: list[list[tuple[str, int | None]]], target: int,
                       seed: int) -> dict[str, torch.Tensor]:
    """A mask of random ``blocks`` whose entry count is closest to ``target``.

    The blocks are taken in a random order (``seed``); each is added if that brings the count
    closer to ``target``, so the count ends at most half the largest block away from ``target``
    (when ``target`` is at most the total of the blocks).
    """
    params = dict(model.named_parameters())
    masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed)).tolist()
    count = 0
    for b in order:
        size = sum(params[n][h].numel() if h is not None else params[n].numel() for n, h in blocks[b])
        if abs(count + size - target) < abs(count - target):
            for n, h in blocks[b]:
                if h is None:
                    masks[n][:] = True
                else:
                    masks[n][h] = True
            count += size
    return masks
