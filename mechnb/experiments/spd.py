"""Experiments of notebook 02: SPD's importance-minimality trade-off, one decomposition per setting.

* :func:`importance_minimality_sweep` - the same decomposition (:func:`mechnb.spd.decompose`) over
  several importance-minimality coefficients and exponents ``p``; each run is a :class:`SweepPoint`.
* :func:`tms_identity_hidden` - the paper's TMS with a fixed identity hidden layer (``tms-5-2-id``,
  ``tms-40-10-id``), trained here: the zoo holds only the plain TMS models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mechnb._checks import check_positive_float, check_positive_int, check_seed
from mechnb.models import TMS
from mechnb.spd import SPDConfig, SPDResult, decompose
from mechnb.tasks import sparse_features
from mechnb.train import TrainConfig, mse_loss, train

__all__ = ["SweepPoint", "importance_minimality_sweep", "tms_identity_hidden"]


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


def tms_identity_hidden(n_features: int = 5, n_hidden: int = 2, steps: int = 3000, seed: int = 0,
                        feature_probability: float = 0.05) -> TMS:
    """A TMS ``n_features -> n_hidden -> n_features`` with one fixed identity hidden layer, trained.

    As in the paper's ``tms_5-2-id`` experiment: ``x -> linear1 -> I -> linear2 (tied) -> ReLU``
    with the identity frozen, trained on sparse features (probability ``feature_probability``,
    values ``U[0, 1]``) to reconstruct its input (MSE, lr ``1e-2``, cosine schedule, batch 1024).
    SPD should find ``n_features`` alive subcomponents in ``linear1`` / ``linear2`` and ``n_hidden``
    in ``hidden_layers.0``. Returns the model in eval mode; the global RNGs are left alone.
    """
    nf, nh = check_positive_int("n_features", n_features), check_positive_int("n_hidden", n_hidden)
    steps, seed = check_positive_int("steps", steps), check_seed("seed", seed)
    prob = check_positive_float("feature_probability", feature_probability)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TMS(nf, nh, n_hidden_layers=1)
    for layer in model.hidden_layers:
        layer.weight.requires_grad_(False)  # the identity stays fixed
    train(model, lambda s, g: sparse_features(1024, nf, prob, g), lambda m, x: mse_loss(m(x), x),
          TrainConfig(steps=steps, lr=1e-2, schedule="cosine", seed=seed), progress=False)
    return model.eval()
