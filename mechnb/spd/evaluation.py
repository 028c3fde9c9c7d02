"""Evaluating a decomposition: stochastic, rounded-mask and adversarial reconstruction, and L0.

A trained decomposition claims that on input ``x`` every subcomponent with causal importance
``g_{l,c}(x)`` can be scaled by any factor in ``[g_{l,c}(x), 1]`` without changing the output
(Bushnaq, Braun & Sharkey 2025, https://arxiv.org/abs/2506.20790, method section). Three tests of
that claim, each the distance between the target's output and the output with *every* decomposed
layer replaced by its masked subcomponents - the MSE, or for a language model
(``SPDConfig.output_loss="kl"``) the KL divergence of the next-token distributions per token:

* **stochastic** - masks ``m = g + (1 - g) r`` with ``r ~ U(0, 1)`` (what training optimises);
* **rounded** - masks ``1[g > 1/2]``: the important subcomponents kept whole, the others removed;
* **adversarial** - masks in the box ``[g, 1]`` chosen to *maximise* the error by projected
  gradient ascent (:func:`adversarial_masks`), the evidence the authors' later work asks for:
  a random mask can miss the few ablations that break the model.

and the mean **L0**: the number of subcomponents per layer with importance above a threshold,
averaged over the inputs (over the tokens for a transformer). A baseline sets the scale: the
same distance with every mask 0 (all decomposed weights ablated, ``zero_recon``). ``g`` here is the lower causal importance clipped to ``[0, 1]``. With
the delta component (``SPDConfig.delta_component``) the residual ``W - U V^T`` is one more
subcomponent with importance 0 in all three tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mechnb._checks import check_positive_float, check_positive_int, check_probability, check_seed
from mechnb._torch import eval_mode
from mechnb.spd.decompose import SPDResult
from mechnb.spd.hooks import frozen_parameters
from mechnb.spd.losses import output_distance

__all__ = ["SPDEvaluation", "evaluate", "adversarial_masks"]


@dataclass
class SPDEvaluation:
    """Reconstruction losses (MSE or per-token KL against the target's output) and L0 of a decomposition.

    Attributes:
        stochastic_recon: mean over ``n_mask_samples`` draws of ``m = g + (1 - g) r``.
        rounded_recon: masks ``1[g > round_threshold]``.
        adversarial_recon: the largest loss found by :func:`adversarial_masks` (``>=`` the loss of
            its random starting masks, which are a stochastic draw).
        l0: ``{layer: mean over inputs of #{c : g_c(x) > l0_threshold}}`` (over tokens for a
            transformer: the mean L0 per token).
        l0_total: the sum over layers.
        n_inputs: rows of the batch.
        settings: the arguments used.
        zero_recon: the baseline, every mask 0 (the decomposed weights ablated; with the delta
            component, it too).
        output_loss: ``"mse"`` or ``"kl"`` (the decomposition's ``SPDConfig.output_loss``): what
            the four losses measure.
        n_tokens: the token rows the L0 is averaged over (``n_inputs`` for non-sequence inputs).
    """

    stochastic_recon: float
    rounded_recon: float
    adversarial_recon: float
    l0: dict[str, float]
    l0_total: float
    n_inputs: int
    settings: dict[str, Any] = field(default_factory=dict)
    zero_recon: float = float("nan")
    output_loss: str = "mse"
    n_tokens: int = 0


def adversarial_masks(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    ci: torch.Tensor,
    n_steps: int = 10,
    step_size: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """Masks in ``[g, 1]`` that maximise ``loss_fn`` by projected (sign-)gradient ascent.

    Masks are written ``m = g + (1 - g) s`` with ``s`` in ``[0, 1]``: ``s`` starts uniform at
    random (a stochastic mask), takes ``n_steps`` steps ``s <- clamp(s + step_size * sign(grad_s
    loss), 0, 1)``, and the iterate with the largest loss (the start included) is returned, so the
    result is never below the loss of its random start. Every returned mask lies in ``[g, 1]``.

    Args:
        loss_fn: ``masks (same shape as ci) -> scalar`` loss, differentiable in the masks.
        ci: causal importances in ``[0, 1]``, any shape (e.g. ``(N, L, C)``).
        n_steps: gradient steps (>= 0).
        step_size: step in ``s`` per iteration, ``> 0``.
        generator: seeds the random start.

    Returns:
        ``(masks (shape of ci), loss at those masks)``.
    """
    if not isinstance(ci, torch.Tensor):
        raise TypeError(f"ci: expected a torch.Tensor, got {type(ci).__name__}")
    if not ci.is_floating_point():
        raise TypeError(f"ci: expected a floating-point tensor, got dtype {ci.dtype}")
    if bool(((ci < 0) | (ci > 1) | ~torch.isfinite(ci)).any()):
        raise ValueError("ci: expected causal importances in [0, 1] (clip them first)")
    n_steps = check_positive_int("n_steps", n_steps, minimum=0)
    step_size = check_positive_float("step_size", step_size)
    ci = ci.detach()
    s = torch.rand(ci.shape, generator=generator, dtype=ci.dtype).to(ci.device)
    best_s, best = s, -float("inf")
    for i in range(n_steps + 1):
        s = s.detach().requires_grad_(i < n_steps)
        with torch.set_grad_enabled(i < n_steps):
            loss = loss_fn(ci + (1.0 - ci) * s)
        value = float(loss.detach())
        if value > best:
            best_s, best = s.detach(), value
        if i < n_steps:
            (grad,) = torch.autograd.grad(loss, s)
            s = (s + step_size * grad.sign()).clamp(0.0, 1.0)
    return ci + (1.0 - ci) * best_s, best


def evaluate(
    result: SPDResult,
    x: torch.Tensor,
    *,
    n_mask_samples: int = 4,
    pgd_steps: int = 10,
    pgd_step_size: float = 0.1,
    l0_threshold: float = 0.1,
    round_threshold: float = 0.5,
    seed: int = 0,
) -> SPDEvaluation:
    """Stochastic, rounded-mask and adversarial reconstruction losses and the mean L0 on a batch.

    The losses are MSEs, or per-token KL divergences when ``result.config.output_loss == "kl"``
    (a language model: ``x`` token ids ``(N, pos)``, L0 per token); ``zero_recon`` is the
    all-masks-0 baseline.

    Args:
        result: a trained :class:`SPDResult`.
        x: a batch of model inputs ``(N, ...)`` (e.g. ``task.sample(4096, generator)``).
        n_mask_samples: stochastic mask draws averaged in ``stochastic_recon``.
        pgd_steps, pgd_step_size: the projected gradient ascent of :func:`adversarial_masks`.
        l0_threshold: a subcomponent counts towards L0 on an input when ``g > l0_threshold``.
        round_threshold: rounded masks are ``1[g > round_threshold]``.
        seed: seeds the stochastic masks and the adversarial start.

    Returns:
        An :class:`SPDEvaluation`. The model and the decomposition are not changed.
    """
    if not isinstance(result, SPDResult):
        raise TypeError(f"result: expected an SPDResult, got {type(result).__name__}")
    n_mask_samples = check_positive_int("n_mask_samples", n_mask_samples)
    l0_threshold = check_probability("l0_threshold", l0_threshold)
    round_threshold = check_probability("round_threshold", round_threshold)
    seed = check_seed("seed", seed)
    x = result._check_x(x)
    names = result.modules
    delta = result.config.delta_component
    target = result._target()
    gen = torch.Generator().manual_seed(seed)
    with eval_mode(result.model), frozen_parameters(result.model), frozen_parameters(result.components):
        with torch.no_grad(), target.hooks():
            target_out, acts = target.capture(x)
            lower, _ = result._ci(acts)
        g = lower.clamp(0.0, 1.0)  # (N, L, C)
        l0 = {n: float((g[:, i] > l0_threshold).sum(dim=-1).to(torch.float64).mean()) for i, n in enumerate(names)}
        if delta:  # the delta component: importance 0
            g = torch.cat([g, g.new_zeros((*g.shape[:2], 1))], dim=-1)

        kind = result.config.output_loss
        uniform = torch.full((x.shape[0],), 1.0 / x.shape[0], device=target_out.device, dtype=g.dtype)

        def loss_fn(masks: torch.Tensor) -> torch.Tensor:
            with target.hooks():
                out = target.masked(x, {n: masks[:, i] for i, n in enumerate(names)})
            if kind == "mse":  # the original expression, kept bit for bit
                return ((out - target_out) ** 2).reshape(out.shape[0], -1).mean(dim=1).mean()
            return output_distance(out, target_out, uniform, kind)

        with torch.no_grad():
            stochastic = sum(
                float(loss_fn(g + (1.0 - g) * torch.rand(g.shape, generator=gen, dtype=g.dtype).to(g.device)))
                for _ in range(n_mask_samples)
            ) / n_mask_samples
            rounded = float(loss_fn((g > round_threshold).to(g.dtype)))
            zero = float(loss_fn(torch.zeros_like(g)))
        _, adversarial = adversarial_masks(loss_fn, g, pgd_steps, pgd_step_size, gen)
    settings = dict(n_mask_samples=n_mask_samples, pgd_steps=pgd_steps, pgd_step_size=pgd_step_size,
                    l0_threshold=l0_threshold, round_threshold=round_threshold, seed=seed, delta_component=delta)
    return SPDEvaluation(stochastic_recon=stochastic, rounded_recon=rounded, adversarial_recon=adversarial, l0=l0,
                         l0_total=float(sum(l0.values())), n_inputs=int(x.shape[0]), settings=settings,
                         zero_recon=zero, output_loss=kind, n_tokens=int(g.shape[0]))
