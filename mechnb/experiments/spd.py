"""Experiments of notebook 02: SPD's importance-minimality trade-off, one decomposition per setting.

* :func:`importance_minimality_sweep` - the same decomposition (:func:`mechnb.spd.decompose`) over
  several importance-minimality coefficients and exponents ``p``; each run is a :class:`SweepPoint`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mechnb._checks import check_positive_float
from mechnb.spd import SPDConfig, SPDResult, decompose

__all__ = ["SweepPoint", "importance_minimality_sweep"]


@dataclass
class SweepPoint:
    """One decomposition of an importance-minimality sweep.

    ``p`` is the exponent the run ended with; :attr:`p_label` also says whether it was annealed.
    """

    coefficient: float
    p: float
    result: SPDResult

    @property
    def p_label(self) -> str:
        """``"2"`` for a constant exponent, ``"2→1"`` for one annealed from 2 to 1."""
        cfg = self.result.config
        if cfg.p_anneal_final is None or cfg.p_anneal_final == cfg.p:
            return f"{cfg.p:g}"
        return f"{cfg.p:g}→{cfg.p_anneal_final:g}"


def importance_minimality_sweep(
    model: nn.Module,
    target_modules: list[str],
    sample_inputs: Callable[[int, torch.Generator], torch.Tensor],
    config: SPDConfig,
    coefficients: Sequence[float],
    ps: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[SweepPoint]:
    """Run :func:`decompose` for every ``(coefficient, p)`` pair (same seed, other settings fixed).

    ``ps=None`` keeps ``config``'s exponent and its annealing (the point's ``p`` is the final
    exponent); an explicit ``ps`` runs each exponent as a constant (annealing switched off).

    Shows the trade-off the paper's method section describes: too small a coefficient leaves many subcomponents
    causally important on every input (no minimality); too large a one kills subcomponents the
    model needs, so reconstruction fails.
    """
    if isinstance(coefficients, (str, bytes)) or not isinstance(coefficients, Sequence) or not coefficients:
        raise ValueError(f"coefficients: expected a non-empty list of numbers, got {coefficients!r}")
    coefs = [check_positive_float("coefficients[]", c, allow_zero=True) for c in coefficients]
    final_p = config.p if config.p_anneal_final is None else config.p_anneal_final
    p_list = [final_p] if ps is None else [check_positive_float("ps[]", p) for p in ps]
    if not p_list:
        raise ValueError("ps: expected a non-empty list of exponents or None")
    points = []
    for p in p_list:
        for c in coefs:
            cfg = config.replace(importance_minimality=c) if ps is None else config.replace(
                importance_minimality=c, p=p, p_anneal_final=None)
            res = decompose(model, target_modules, sample_inputs, cfg, device=device, progress=progress)
            points.append(SweepPoint(coefficient=c, p=p, result=res))
    return points
