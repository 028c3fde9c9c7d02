"""The four SPD losses as pure functions, their named bundle and the weighted total.

Bushnaq, Braun & Sharkey (2025), *Stochastic Parameter Decomposition*,
https://arxiv.org/abs/2506.20790, method section. Notation: decomposed layers ``l = 1..L``,
subcomponents ``c = 1..C``, ``W_l ~= U_l V_l^T``, causal importances ``g_{l,c}(x)`` and stochastic
masks ``m = g + (1 - g) r`` with ``r ~ U(0, 1)``:

* :func:`faithfulness_loss` ``sum_l ||W_l - U_l V_l^T||_F^2 / N_params``;
* :func:`stochastic_recon_loss` - MSE between the target output and the output with *every*
  decomposed layer replaced by its masked components ``U_l (m_l * V_l^T a_l)`` (for a language
  model, ``SPDConfig.output_loss="kl"``: the per-token KL divergence of the output
  distributions, :func:`weighted_kl`);
* :func:`stochastic_recon_layerwise_loss` - the same with one layer replaced at a time,
  averaged over layers;
* :func:`importance_minimality_loss` ``E_x sum_{l,c} |g^upper_{l,c}(x)|^p``.

A batch may carry per-row weights ``(N,)`` summing to 1 (:func:`mechnb.spd.compress_zero_rows`
merges the all-zero rows into one weighted row); every batch mean is a weighted sum. The
reconstruction losses take a ``masked_forward(replace) -> output`` callable (the target model
with the layers in ``replace`` swapped for their masked components, e.g.
:meth:`mechnb.spd.hooks.HookedTarget.masked` bound to a batch), so they need no hooks of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mechnb._checks import check_positive_float, check_tensor
from mechnb.spd.components import SPDComponents
from mechnb.spd.config import SPDConfig

__all__ = [
    "LOSS_NAMES",
    "SPDLosses",
    "total_loss",
    "faithfulness_loss",
    "importance_minimality_loss",
    "stochastic_masks",
    "weighted_mse",
    "weighted_kl",
    "output_distance",
    "stochastic_recon_loss",
    "stochastic_recon_layerwise_loss",
]

LOSS_NAMES = ("faithfulness", "stochastic_recon", "stochastic_recon_layerwise", "importance_minimality")
_EPS = 1e-12

MaskedForward = Callable[[dict[str, torch.Tensor]], torch.Tensor]
"""``masked_forward({layer: mask (N, C)}) -> output (N, ...)``: the target on the step's batch with
the named layers computing ``U_l (m * V_l^T a) + b`` and every other layer its target weight."""


@dataclass
class SPDLosses:
    """The four loss terms of one SPD step (scalars, attached to the graph); names as :data:`LOSS_NAMES`."""

    faithfulness: torch.Tensor
    stochastic_recon: torch.Tensor
    stochastic_recon_layerwise: torch.Tensor
    importance_minimality: torch.Tensor

    def values(self) -> list[torch.Tensor]:
        """The terms in :data:`LOSS_NAMES` order."""
        return [getattr(self, name) for name in LOSS_NAMES]


def total_loss(losses: SPDLosses, config: SPDConfig) -> torch.Tensor:
    """``sum_k coefficient_k * L_k`` with each coefficient the :class:`SPDConfig` field of the same name.

    With ``config.delta_component`` the faithfulness term is left out (the delta component
    replaces it; see :class:`SPDConfig`).
    """
    total = None
    for name, term in zip(LOSS_NAMES, losses.values()):
        if name == "faithfulness" and config.delta_component:
            continue
        weighted = getattr(config, name) * term
        total = weighted if total is None else total + weighted
    return total


# --------------------------------------------------------------------------------------
# The losses
# --------------------------------------------------------------------------------------
def faithfulness_loss(components: SPDComponents, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """``sum_l ||W_l - U_l V_l^T||_F^2 / sum_l numel(W_l)`` (paper, method section).

    Args:
        components: the subcomponents (``U_l (d_out, C)``, ``V_l (d_in, C)``).
        targets: ``{layer: W_l (d_out, d_in)}`` for every decomposed layer.
    """
    total = sum(((targets[n] - components.weight(n)) ** 2).sum() for n in components.names)
    n_params = sum(targets[n].numel() for n in components.names)
    return total / n_params


def _importance_minimality(ci_upper: torch.Tensor, p: float, weights: torch.Tensor | None) -> torch.Tensor:
    per_row = (ci_upper.abs() + _EPS).pow(p).sum(dim=(1, 2))
    return per_row.mean() if weights is None else (per_row * weights).sum()


def importance_minimality_loss(ci_upper: torch.Tensor, p: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``E_x sum_{l,c} |g^upper_{l,c}(x)|^p`` (the importance-minimality loss, paper, method section).

    The absolute value is the paper's: upper-leaky importances are never negative, and any
    other input (e.g. a lower-leaky ``g`` slightly below 0) is charged ``|g|^p`` instead of
    giving NaN for a fractional ``p``. ``10^-12`` is added before the power so that the gradient
    stays finite at ``g = 0`` for ``p < 1``.

    Args:
        ci_upper: upper-leaky causal importances ``(N, L, C)``, finite.
        p: the exponent, a finite number ``> 0``.
        weights: per-row weights ``(N,)`` summing to 1 (default: uniform mean).
    """
    ci_upper = check_tensor("ci_upper", ci_upper, ndim=3, dims="(batch, L, C)", floating=True)
    p = check_positive_float("p", p)
    if weights is not None:
        weights = check_tensor("weights", weights, shape=(ci_upper.shape[0],), dims="(batch,)", floating=True)
    return _importance_minimality(ci_upper, p, weights)


def stochastic_masks(ci: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``m = g + (1 - g) r`` with a fresh ``r ~ U(0, 1)`` per entry; ``ci (N, L, C)`` -> ``(N, L, C)``."""
    r = torch.rand(ci.shape, generator=generator, device=ci.device, dtype=ci.dtype)
    return ci + (1.0 - ci) * r


def weighted_mse(out: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i mean_j (out_ij - target_ij)^2``: the per-row MSE of ``(N, ...)`` outputs, weighted by ``(N,)``."""
    per_row = ((out - target) ** 2).reshape(out.shape[0], -1).mean(dim=1)
    return (per_row * weights).sum()


def weighted_kl(out: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i mean_t KL(softmax(target_it) || softmax(out_it))``: per-token KL of logits ``(N, ..., V)``.

    The KL runs over the last axis (the vocabulary), is averaged over the middle axes (positions)
    and weighted over the rows ``(N,)``: with uniform weights, the mean KL per token of the
    masked model's next-token distribution from the target's (the paper's language-model
    reconstruction loss).
    """
    log_p = torch.log_softmax(target, dim=-1)
    log_q = torch.log_softmax(out, dim=-1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    per_row = per_token.reshape(out.shape[0], -1).mean(dim=1)
    return (per_row * weights).sum()


def output_distance(out: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """:func:`weighted_mse` (``kind="mse"``) or :func:`weighted_kl` (``"kl"``) of ``out`` against ``target``."""
    if kind == "kl":
        return weighted_kl(out, target, weights)
    if kind != "mse":
        raise ValueError(f"kind: expected 'mse' or 'kl', got {kind!r}")
    return weighted_mse(out, target, weights)


def stochastic_recon_loss(masked_forward: MaskedForward, names: Sequence[str], target_out: torch.Tensor,
                          masks: torch.Tensor, weights: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """``MSE(f(x | every layer l masked by m_l), f(x))`` for one mask sample (paper, method section).

    Args:
        masked_forward: the target on the batch with the given layers masked (see :data:`MaskedForward`).
        names: the decomposed layers, in the order of ``masks``' layer axis.
        target_out: the target model's output ``f(x)`` on the batch ``(N, ...)``.
        masks: one stochastic mask sample ``(N, L, C)`` (:func:`stochastic_masks`).
        weights: per-row weights ``(N,)`` summing to 1.
        kind: ``"mse"`` or ``"kl"`` (:func:`output_distance`, ``SPDConfig.output_loss``).

    For a transformer the masks have one row per token, ``(batch * pos, L, C)``, while
    ``target_out`` and ``weights`` have one per sequence.
    """
    out = masked_forward({n: masks[:, i] for i, n in enumerate(names)})
    return output_distance(out, target_out, weights, kind)


def stochastic_recon_layerwise_loss(masked_forward: MaskedForward, names: Sequence[str], target_out: torch.Tensor,
                                    masks: torch.Tensor, weights: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """``(1/L) sum_l MSE(f(x | only layer l masked by m_l), f(x))`` for one mask sample (paper, method section).

    Same arguments as :func:`stochastic_recon_loss`; each layer is replaced on its own while the
    others keep their target weights.
    """
    total = sum(output_distance(masked_forward({n: masks[:, i]}), target_out, weights, kind)
                for i, n in enumerate(names))
    return total / len(names)
