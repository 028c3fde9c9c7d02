"""What a patched edge carries: the reference activations of the four ablations.

Patching edge ``u -> v`` replaces the term ``out_u`` of reader ``v``'s input by a reference value
``ref_u`` (:mod:`.graph`). Which reference is used is the *ablation*, and circuit metrics depend on
it (Miller, Chughtai & Saunders 2024, "Transformer circuit faithfulness metrics are not robust",
arXiv:2407.08734; Zhang & Nanda 2024, arXiv:2309.16042):

* ``"corrupted"`` - ``ref_u = out_u(corrupted prompt)``, prompt by prompt (interchange / resample
  ablation; Wang et al. 2023). Asks which paths carry the *difference* between the two prompts.
* ``"zero"`` - ``ref_u = 0``: the edge is cut.
* ``"mean"`` - ``ref_u = mean over the clean prompts and their positions of out_u``: one vector per
  writer.
* ``"mean-positional"`` - ``ref_u[pos] = mean over the clean prompts of out_u[pos]``: one vector per
  writer and position (the mean ablation of Wang et al. 2023 on fixed-template prompts).

The mean ablations take their means over the *clean* prompts the circuit is evaluated on, so they
need no corrupted prompts. :func:`ablation_reference` returns ``ref`` in the layout
:func:`~mechnb.circuits.graph.patched_forward` takes: ``[n_writers, batch or 1, pos or 1, d_model]``.
"""

from __future__ import annotations

import torch

from mechnb._checks import check_choice
from mechnb.circuits.graph import Graph, WriterCache, cache_writers
from mechnb.models import TinyTransformer

__all__ = ["ABLATIONS", "check_ablation", "ablation_reference", "reference_from_cache"]

ABLATIONS: tuple[str, ...] = ("corrupted", "zero", "mean", "mean-positional")
"""The ablations every attribution method and faithfulness measure accepts."""


def check_ablation(ablation: object) -> str:
    """``ablation`` if it is one of :data:`ABLATIONS`, else ``ValueError`` naming ``ablation``."""
    return check_choice("ablation", ablation, list(ABLATIONS))


def needs_corrupted(ablation: str) -> bool:
    """Whether ``ablation`` needs corrupted prompts (only ``"corrupted"`` does)."""
    return ablation == "corrupted"


def reference_from_cache(clean: WriterCache, corrupted: WriterCache | None, ablation: str) -> torch.Tensor:
    """``ref [n_writers, b | 1, p | 1, d_model]`` of ``ablation`` from the writer outputs already cached.

    ``clean``: :func:`cache_writers` of the clean prompts (the mean ablations average it);
    ``corrupted``: of the corrupted prompts (``"corrupted"`` only).
    """
    check_ablation(ablation)
    out = clean.out
    if ablation == "corrupted":
        if corrupted is None:
            raise ValueError("corrupted: expected the corrupted prompts' writer outputs for ablation='corrupted', "
                             "got None")
        return corrupted.out
    if ablation == "zero":
        return torch.zeros(out.shape[0], 1, 1, out.shape[3], dtype=out.dtype, device=out.device)
    if ablation == "mean":
        return out.mean(dim=(1, 2), keepdim=True)
    return out.mean(dim=1, keepdim=True)  # mean-positional


def ablation_reference(model: TinyTransformer, graph: Graph, clean: torch.Tensor, corrupted: torch.Tensor | None,
                       ablation: str) -> torch.Tensor:
    """The reference activations ``ref [n_writers, b | 1, p | 1, d_model]`` of ``ablation``.

    ``clean``/``corrupted``: ``(batch, pos)`` token ids (``corrupted`` only for ``"corrupted"``).
    One forward pass (no gradients) on the prompts the reference is taken from.
    """
    check_ablation(ablation)
    if ablation == "corrupted":
        if corrupted is None:
            raise ValueError("corrupted: expected a (batch, pos) token tensor for ablation='corrupted', got None")
        return cache_writers(model, graph, corrupted).out
    if ablation == "zero":
        d = model.d_model
        p = next(model.parameters())
        return torch.zeros(graph.n_writers, 1, 1, d, dtype=p.dtype, device=p.device)
    return reference_from_cache(cache_writers(model, graph, clean), None, ablation)
