"""Stochastic Parameter Decomposition: the training loop, its step function and :class:`SPDResult`.

Bushnaq, Braun & Sharkey (2025), *Stochastic Parameter Decomposition*,
https://arxiv.org/abs/2506.20790. Notation: decomposed layers ``l``, subcomponents ``c``,
``W_l ~= U_l V_l^T``, causal importances ``g_{l,c}(x) = sigma_H(Gamma_{l,c}(V_{l,c}^T a_l))``
stochastic masks ``m = g + (1 - g) r`` with ``r ~ U(0, 1)``.

:func:`decompose` reads as its named steps: resolve the layers and initialise the components,
optionally warm up on faithfulness (:func:`_faithfulness_warmup`), then per main-phase step
draw a batch (:func:`_draw_batch`), compute the four loss terms (:func:`spd_step`, returning
:class:`~mechnb.spd.losses.SPDLosses`), sum them with the config's coefficients
(:func:`~mechnb.spd.losses.total_loss`), backward, AdamW step, log (:class:`_History`,
:func:`_report`); finally record each subcomponent's largest causal importance
(:func:`_ci_max`). The losses are pure functions in :mod:`mechnb.spd.losses`; the hooks that
read and rewire the target are in :mod:`mechnb.spd.hooks`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.profiler import record_function
from tqdm.auto import tqdm

from mechnb._checks import (
    check_finite,
    check_float_input,
    check_materialized,
    check_positive_float,
    check_positive_int,
    check_tensor,
    resolve_device,
)
from mechnb._torch import eval_mode
from mechnb.io import saveable
from mechnb.spd.components import SPDComponents
from mechnb.spd.config import SPDConfig
from mechnb.spd.hooks import (
    HookedTarget,
    MLPWeight,
    causal_importances,
    frozen_parameters,
    resolve_target_modules,
    token_weights,
)
from mechnb.spd.losses import (
    LOSS_NAMES,
    SPDLosses,
    _importance_minimality,
    faithfulness_loss,
    importance_minimality_loss,
    stochastic_masks,
    stochastic_recon_layerwise_loss,
    stochastic_recon_loss,
    total_loss,
)

__all__ = [
    "SPDResult",
    "decompose",
    "spd_step",
    "faithfulness_loss",
    "importance_minimality_loss",
    "stochastic_masks",
    "compress_zero_rows",
    "LOSS_NAMES",
]

Sampler = Callable[[int, torch.Generator], torch.Tensor]


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------
def compress_zero_rows(x: torch.Tensor, multiple: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the all-zero rows of a batch into a single row carrying their total weight.

    Returns ``(x_kept (N', ...), weights (N',))`` with the nonzero rows first, then (if any)
    one zero row with weight ``n_zero / B``; weights sum to 1. Exact for every SPD term whose
    value for a zero row does not depend on the random mask (all of them for bias-free layers;
    see :class:`SPDConfig.compress_zero_rows`).

    ``N'`` is rounded up to a multiple of ``multiple`` (at most ``B``) with extra zero rows of
    weight 0, so that successive batches reuse a few tensor shapes: with a new shape every
    step the CPU allocator fragments and the process grows by hundreds of MB.

    Args:
        x: a non-empty floating batch ``(B, ...)``, ``B >= 1``.
        multiple: an int ``>= 1`` (1: no padding).
    """
    x = check_tensor("x", x, floating=True)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x: expected a non-empty batch (B, ...) with B >= 1, got shape {tuple(x.shape)}")
    return _compress_zero_rows(x, check_positive_int("multiple", multiple))


def _compress_zero_rows(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, torch.Tensor]:
    B = x.shape[0]
    nonzero = x.reshape(B, -1).ne(0).any(dim=1)
    n_nonzero = int(nonzero.sum())
    if n_nonzero == B:
        return x, torch.full((B,), 1.0 / B, device=x.device, dtype=x.dtype)
    n_kept = min(B, -(-(n_nonzero + 1) // multiple) * multiple)
    kept = torch.zeros((n_kept, *x.shape[1:]), device=x.device, dtype=x.dtype)
    kept[:n_nonzero] = x[nonzero]
    weights = torch.zeros(n_kept, device=x.device, dtype=x.dtype)
    weights[:n_nonzero] = 1.0 / B
    weights[n_nonzero] = (B - n_nonzero) / B
    return kept, weights


def _draw_batch(sample_inputs: Sampler, config: SPDConfig, generator: torch.Generator, device: torch.device,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (N, ...), weights (N,))``: ``config.batch_size`` inputs, zero rows compressed if configured.

    Dtype policy (:func:`mechnb._checks.check_float_input`): a real floating batch is cast to the
    decomposed weights' ``dtype``; a complex one raises ``TypeError``; an integer or bool batch
    (token ids) is handed to the model as it is, and the model's own complaint, if any, is
    re-raised naming ``sample_inputs`` (:class:`~mechnb.spd.hooks.HookedTarget`).
    """
    x = sample_inputs(config.batch_size, generator)
    x = check_tensor("sample_inputs", x)
    if x.ndim < 1 or x.shape[0] != config.batch_size:
        raise ValueError(
            f"sample_inputs: expected a batch of {config.batch_size} rows, got shape {tuple(x.shape)}"
        )
    if x.is_complex():
        raise TypeError(f"sample_inputs: expected a real tensor (floating inputs are cast to the model's dtype "
                        f"{dtype}), got dtype {x.dtype}")
    if x.is_floating_point():
        x = check_float_input("sample_inputs", x, dtype)
    x = x.to(device)
    if config.compress_zero_rows and x.is_floating_point():
        return _compress_zero_rows(x, 64)
    return x, torch.full((x.shape[0],), 1.0 / x.shape[0], device=device, dtype=dtype)


# --------------------------------------------------------------------------------------
# One step: the loss terms
# --------------------------------------------------------------------------------------
def spd_step(target: HookedTarget, targets: dict[str, torch.Tensor], x: torch.Tensor, weights: torch.Tensor,
             config: SPDConfig, p: float, mask_generator: torch.Generator) -> SPDLosses:
    """The four SPD loss terms on one batch (paper, method section); the hooks must be installed.

    Runs the target once to record the layer inputs ``a_l`` and the output ``f(x)`` to
    reconstruct, computes the causal importances ``(N, L, C)`` (``N = batch * pos`` token rows for
    a transformer: importance minimality is then the mean over tokens), then faithfulness, importance
    minimality (exponent ``p``) and, for each of ``config.n_mask_samples`` fresh mask samples,
    the stochastic reconstruction (all layers masked) and layerwise reconstruction (one layer
    at a time) losses, averaged over the samples. A reconstruction term whose coefficient is 0
    is not computed (returned as 0). With ``config.delta_component`` each layer's masks get one
    more column, the delta component's mask ``r ~ U(0, 1)`` (its causal importance is 0).

    Args:
        target: the hooked target model (its components are the ones being trained).
        targets: ``{layer: W_l (d_out, d_in)}`` the target weights.
        x: the batch ``(N, ...)``.
        weights: per-row weights ``(N,)`` summing to 1.
        config: the coefficients, ``n_mask_samples`` and ``leaky_alpha``.
        p: the importance-minimality exponent at this step.
        mask_generator: the stream of the masks' uniform noise ``r``.
    """
    components = target.components
    names = components.names
    W = next(iter(targets.values()))
    with record_function("spd/target_forward"), torch.no_grad():
        target_out, acts = target.capture(x)
    with record_function("spd/causal_importances"):
        ci_lower, ci_upper = causal_importances(components, acts, config.leaky_alpha, config.lower_sigmoid,
                                                config.upper_alpha)
    with record_function("spd/faithfulness_and_minimality"):
        loss_faith = faithfulness_loss(components, targets)
        loss_imp = _importance_minimality(ci_upper, p, token_weights(weights, ci_upper.shape[0]))
    if config.delta_component:  # the delta component: one more subcomponent per layer, with importance 0
        ci_lower = torch.cat([ci_lower, ci_lower.new_zeros((*ci_lower.shape[:2], 1))], dim=-1)

    def masked_forward(replace: dict[str, torch.Tensor]) -> torch.Tensor:
        return target.masked(x, replace)

    loss_rec = torch.zeros((), device=W.device, dtype=W.dtype)
    loss_lw = torch.zeros((), device=W.device, dtype=W.dtype)
    for _ in range(config.n_mask_samples):
        if config.stochastic_recon > 0:
            with record_function("spd/stochastic_recon"):
                masks = stochastic_masks(ci_lower, mask_generator)
                loss_rec = loss_rec + stochastic_recon_loss(masked_forward, names, target_out, masks, weights,
                                                            config.output_loss)
        if config.stochastic_recon_layerwise > 0:
            with record_function("spd/stochastic_recon_layerwise"):
                masks = stochastic_masks(ci_lower, mask_generator)
                loss_lw = loss_lw + stochastic_recon_layerwise_loss(masked_forward, names, target_out, masks, weights,
                                                                    config.output_loss)
    return SPDLosses(
        faithfulness=loss_faith,
        stochastic_recon=loss_rec / config.n_mask_samples,
        stochastic_recon_layerwise=loss_lw / config.n_mask_samples,
        importance_minimality=loss_imp,
    )


# --------------------------------------------------------------------------------------
# The other phases: faithfulness warm-up, logging, evaluation statistics
# --------------------------------------------------------------------------------------
def _faithfulness_warmup(components: SPDComponents, targets: dict[str, torch.Tensor], config: SPDConfig) -> None:
    """``config.faithfulness_warmup_steps`` AdamW steps on faithfulness alone: ``U V^T := W`` before the main phase."""
    uv = list(components.U_params.parameters()) + list(components.V_params.parameters())
    opt = torch.optim.AdamW(uv, lr=config.faithfulness_warmup_lr, weight_decay=0.0)
    for _ in range(config.faithfulness_warmup_steps):
        opt.zero_grad(set_to_none=True)
        faithfulness_loss(components, targets).backward()
        opt.step()


class _History:
    """Per-step ``(total, *LOSS_NAMES)`` rows, kept on the device until read."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []

    def append(self, total: torch.Tensor, losses: SPDLosses) -> None:
        self.rows.append(torch.stack([total, *losses.values()]).detach())

    def last(self) -> torch.Tensor:
        """The latest row on the CPU, ``(1 + len(LOSS_NAMES),)``."""
        return self.rows[-1].cpu()

    def as_dict(self, config: SPDConfig, n: int) -> dict[str, list[float]]:
        """``{"total", *LOSS_NAMES, "lr", "p": list over the first n steps}`` (:attr:`SPDResult.history`)."""
        if not self.rows:
            return {k: [] for k in ("total", *LOSS_NAMES, "lr", "p")}
        cols = list(zip(*torch.stack(self.rows).cpu().tolist()))
        hist = {"total": list(cols[0])}
        for k, col in zip(LOSS_NAMES, cols[1:]):
            hist[k] = list(col)
        hist["lr"] = [config.lr_at(s) for s in range(n)]
        hist["p"] = [config.p_at(s) for s in range(n)]
        return hist


def _report(step: int, history: _History, bar: Any, progress: bool, result: SPDResult,
            callback: Callable[[int, SPDResult], bool | None] | None, diagnose: Callable[[], str]) -> bool:
    """At step 0 and every ``log_every`` steps: reject a non-finite loss (with ``diagnose()``'s
    message), refresh the bar, call ``callback``; True stops."""
    config = result.config
    if step != 0 and (step + 1) % config.log_every != 0 and step != config.steps - 1:
        return False
    last = history.last()
    if not torch.isfinite(last).all():
        raise FloatingPointError(diagnose())
    if (step + 1) % config.log_every != 0 and step != config.steps - 1:
        return False
    if progress:
        bar.set_postfix(total=f"{last[0]:.3g}", recon=f"{last[2]:.3g}", imp=f"{last[4]:.3g}")
    if callback is not None:
        result.history = history.as_dict(config, step + 1)
        return bool(callback(step + 1, result))
    return False


@torch.no_grad()
def _diagnose_nonfinite(history: _History, target: HookedTarget, sample_inputs: Sampler, config: SPDConfig,
                        targets: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> str:
    """Why the loss became non-finite: the data's scale (inputs, target outputs, weights) or the optimisation.

    Redraws the first training batch and runs the target on it: values whose squares overflow
    ``dtype`` (``|v| > sqrt(finfo.max) / 1e3``) or a non-finite target output name the data as
    the cause; otherwise the optimisation diverged and the message asks for a lower ``lr``.
    """
    rows = torch.stack(history.rows).cpu()
    first = int((~torch.isfinite(rows).all(dim=1)).nonzero()[0])
    terms = [n for n, v in zip(("total", *LOSS_NAMES), rows[first].tolist()) if not math.isfinite(v)]
    where = f"decompose: the loss became non-finite at step {first} ({', '.join(terms)})"
    limit = math.sqrt(torch.finfo(dtype).max) / 1e3
    x, _ = _draw_batch(sample_inputs, config, torch.Generator().manual_seed(config.seed + 1), device, dtype)
    out, acts = target.capture(x)
    x_max = float(x.abs().max()) if x.is_floating_point() else float("nan")
    out_max = float(out.abs().max()) if out.is_floating_point() else float("nan")
    act_max = max(float(a.abs().max()) for a in acts.values()) if acts else 0.0
    w_name, w_max = max(((n, float(W.abs().max())) for n, W in targets.items()), key=lambda t: t[1])
    finite_out = bool(torch.isfinite(out).all()) if out.is_floating_point() else True
    if not finite_out or out_max > limit or act_max > limit or x_max > limit:
        return (f"{where}: the data is too large for {dtype}, not the learning rate - sample_inputs gives values up "
                f"to {x_max:.3g}, the decomposed layers see inputs up to {act_max:.3g} and the target's outputs "
                f"reach {out_max:.3g}{'' if finite_out else ' (non-finite)'}, while squared errors overflow "
                f"{dtype} above about {math.sqrt(torch.finfo(dtype).max):.3g}; rescale sample_inputs "
                "(or decompose a float64 copy of the model)")
    if w_max > limit:
        return (f"{where}: the weight of {w_name!r} reaches {w_max:.3g}, too large to square in {dtype}; "
                "rescale the model or decompose a float64 copy")
    return (f"{where}: the inputs (up to {x_max:.3g}) and the target's outputs (up to {out_max:.3g}) are finite "
            f"and moderate, so the optimisation diverged; lower config.lr (now {config.lr:g})"
            + (f" or config.faithfulness_warmup_lr (now {config.faithfulness_warmup_lr:g})"
               if config.faithfulness_warmup_steps else ""))


@torch.no_grad()
def _ci_max(target: HookedTarget, sample_inputs: Sampler, config: SPDConfig) -> dict[str, torch.Tensor]:
    """``{layer: (C,)}`` each subcomponent's largest lower-leaky CI over ``config.n_eval_batches`` fresh batches."""
    components = target.components
    generator = torch.Generator().manual_seed(config.seed + 3)
    dev, dtype = components.device, components.dtype
    mx = torch.full((len(components.names), config.C), -float("inf"), device=dev, dtype=dtype)
    for _ in range(config.n_eval_batches):
        x, _ = _draw_batch(sample_inputs, config, generator, dev, dtype)
        _, acts = target.capture(x)
        lower, _ = causal_importances(components, acts, config.leaky_alpha, config.lower_sigmoid, config.upper_alpha)
        mx = torch.maximum(mx, lower.amax(dim=0))
    return {n: mx[i].detach() for i, n in enumerate(components.names)}


# --------------------------------------------------------------------------------------
# The optimisation
# --------------------------------------------------------------------------------------
def decompose(
    model: nn.Module,
    target_modules: list[str],
    sample_inputs: Callable[[int, torch.Generator], torch.Tensor],
    config: SPDConfig,
    device: str | torch.device = "cpu",
    progress: bool = True,
    callback: Callable[[int, SPDResult], bool | None] | None = None,
) -> SPDResult:
    """Decompose the weights of ``target_modules`` into rank-one subcomponents with SPD.

    Args:
        model: the trained target model (moved to ``device``; its parameters are not changed).
        target_modules: names of the ``nn.Linear`` layers to decompose, e.g. ``["linear1",
            "linear2"]``, or of transformer MLP weights, e.g. ``["blocks.0.mlp.W_in",
            "blocks.0.mlp.W_out"]`` (:class:`mechnb.spd.hooks.MLPWeight`: SPD's weight is the
            transpose of the stored ``[d_in, d_out]`` parameter, causal importances are per
            token). A :class:`mechnb.models.TiedLinear` whose source layer is also
            decomposed shares that layer's subcomponents, transposed (TMS with tied weights).
        sample_inputs: ``sample_inputs(batch_size, generator) -> (batch_size, ...)`` model
            inputs; ``generator`` is a CPU ``torch.Generator`` seeded from ``config.seed``.
        config: an :class:`SPDConfig`.
        device: ``"cpu"`` or ``"cuda"``.
        progress: show a ``tqdm.auto`` progress bar.
        callback: ``callback(step, result)`` every ``config.log_every`` steps with a live
            :class:`SPDResult` (``ci_max`` empty); returning ``True`` stops training.

    Returns:
        An :class:`SPDResult`. A non-finite loss (checked at step 0 and every ``log_every``
        steps) raises ``FloatingPointError`` naming the first bad step, the terms and the cause:
        inputs, outputs or weights too large for the dtype, or a divergent optimisation.

    Raises:
        TypeError / ValueError naming the argument: ``model`` not a module or with parameters on
        the ``meta`` device; ``sample_inputs`` returning a wrong-sized, non-finite, complex or
        (for a float model) integer batch - real floating batches are cast to the model's dtype.

    Per main-phase step: draw a batch (zero rows compressed if ``config.compress_zero_rows``),
    compute the four loss terms with :func:`spd_step` (each stochastic one with freshly drawn
    masks), sum them with the config's coefficients and take one AdamW step.
    """
    check_materialized(model, "model")
    if not callable(sample_inputs):
        raise TypeError(f"sample_inputs: expected a callable (batch_size, generator) -> tensor, got {type(sample_inputs).__name__}")
    if not isinstance(config, SPDConfig):
        raise TypeError(f"config: expected an SPDConfig, got {type(config).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
    dev = resolve_device(device)
    t0 = time.perf_counter()
    model.to(dev)
    modules, tied = resolve_target_modules(model, target_modules)
    names = list(modules)
    with torch.no_grad():
        targets = {n: modules[n].weight.detach().clone(memory_format=torch.contiguous_format)
                   if isinstance(modules[n], MLPWeight) else modules[n].weight.detach().clone() for n in names}
    for n, W in targets.items():
        check_finite(f"weight of {n!r}", W)
    dtype = next(iter(targets.values())).dtype

    init_gen = torch.Generator().manual_seed(config.seed)
    comps = SPDComponents(
        {n: tuple(targets[n].shape) for n in names}, config.C, config.ci_hidden, tied=tied, generator=init_gen,
        ci_fn=config.ci_fn,
    ).to(device=dev, dtype=dtype)
    comps.init_from_targets(targets, generator=init_gen)
    data_gen = torch.Generator().manual_seed(config.seed + 1)
    mask_gen = torch.Generator(device=dev).manual_seed(config.seed + 2)

    result = SPDResult(model=model, modules=names, components=comps, config=config, tied=tied)
    target = HookedTarget(model, modules, comps, input_name="sample_inputs")
    history = _History()

    def diagnose() -> str:
        return _diagnose_nonfinite(history, target, sample_inputs, config, targets, dev, dtype)

    with eval_mode(model), frozen_parameters(model), target.hooks():
        if config.faithfulness_warmup_steps > 0:
            _faithfulness_warmup(comps, targets, config)
        opt = torch.optim.AdamW(comps.parameters(), lr=config.lr, weight_decay=0.0)
        bar = tqdm(range(config.steps), desc="SPD", disable=not progress, leave=False)
        step = -1
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = config.lr_at(step)
            with record_function("spd/sample_inputs"):
                x, w = _draw_batch(sample_inputs, config, data_gen, dev, dtype)
            losses = spd_step(target, targets, x, w, config, config.p_at(step), mask_gen)
            total = total_loss(losses, config)
            with record_function("spd/backward"):
                opt.zero_grad(set_to_none=True)
                total.backward()
            with record_function("spd/optimizer"):
                opt.step()
            history.append(total, losses)
            if _report(step, history, bar, progress, result, callback, diagnose):
                break
        bar.close()
        result.steps_run = step + 1
        result.history = history.as_dict(config, result.steps_run)
        if config.n_eval_batches > 0:
            result.ci_max = _ci_max(target, sample_inputs, config)
    result.seconds = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------
@saveable()
@dataclass
class SPDResult:
    """A trained decomposition of some linear layers of ``model``.

    Attributes:
        model: the target model (unchanged).
        modules: the decomposed layer names, in order (index ``l`` of the ``(N, L, C)`` tensors).
        components: the learned :class:`SPDComponents` (subcomponents + CI MLPs).
        config: the :class:`SPDConfig` used.
        history: per main-phase step, ``"total"``, each loss in :data:`LOSS_NAMES`, ``"lr"``, ``"p"``.
        ci_max: per layer, each subcomponent's largest causal importance over the
            ``config.n_eval_batches`` evaluation batches drawn after training ``(C,)``.
        seconds: wall time of :func:`decompose`.
        steps_run: main-phase steps run (fewer than ``config.steps`` if a callback stopped early).
    """

    model: nn.Module
    modules: list[str]
    components: SPDComponents
    config: SPDConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    ci_max: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    steps_run: int = 0
    tied: dict[str, str] = field(default_factory=dict)

    # -- parameters ----------------------------------------------------------------
    @property
    def U(self) -> dict[str, torch.Tensor]:
        """``{layer: U_l (d_out, C)}`` (detached); column ``c`` is subcomponent ``c``'s output direction."""
        return {n: self.components.U(n).detach() for n in self.modules}

    @property
    def V(self) -> dict[str, torch.Tensor]:
        """``{layer: V_l (d_in, C)}`` (detached); column ``c`` is subcomponent ``c``'s input direction."""
        return {n: self.components.V(n).detach() for n in self.modules}

    @property
    def C(self) -> int:
        return self.components.C

    def weight(self, module: str) -> torch.Tensor:
        """``U_l V_l^T`` ``(d_out, d_in)``, the decomposition's reassembled weight."""
        self._check_module(module)
        return self.components.weight(module).detach()

    def target_weight(self, module: str) -> torch.Tensor:
        """The target layer's weight ``(d_out, d_in)``."""
        self._check_module(module)
        return self._modules_dict()[module].weight.detach()

    def subcomponent_weights(self, module: str) -> torch.Tensor:
        """``U_l[:, c] V_l[:, c]^T`` for every ``c``: ``(C, d_out, d_in)``."""
        self._check_module(module)
        return self.components.subcomponent_weights(module).detach()

    def _check_module(self, module: str) -> None:
        if module not in self.modules:
            raise ValueError(f"module: expected one of the decomposed layers {self.modules}, got {module!r}")

    def _device(self) -> torch.device:
        return self.components.device

    def _check_x(self, x: Any) -> torch.Tensor:
        """The dtype policy of :func:`decompose`'s batches: real floating ``x`` cast to the components' dtype."""
        x = check_tensor("x", x)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"x: expected a non-empty batch (batch, ...), got shape {tuple(x.shape)}")
        if x.is_complex():
            raise TypeError(f"x: expected a real tensor (floating inputs are cast to the model's dtype "
                            f"{self.components.dtype}), got dtype {x.dtype}")
        if x.is_floating_point():
            x = check_float_input("x", x, self.components.dtype)
        return x.to(self._device())

    # -- causal importances --------------------------------------------------------------
    def _modules_dict(self) -> dict[str, nn.Module | MLPWeight]:
        return resolve_target_modules(self.model, list(self.modules))[0]

    def _target(self) -> HookedTarget:
        return HookedTarget(self.model, self._modules_dict(), self.components, input_name="x")

    def _acts_and_output(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target = self._target()
        with target.hooks():
            return target.capture(x)

    def _ci(self, acts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return causal_importances(self.components, acts, self.config.leaky_alpha, self.config.lower_sigmoid,
                                  self.config.upper_alpha)

    @torch.no_grad()
    def causal_importances(self, x: torch.Tensor, kind: str = "lower") -> dict[str, torch.Tensor]:
        """Causal importances ``g_l(x)`` of every subcomponent: ``{layer: (batch, C)}``.

        For a transformer (token inputs ``(batch, pos)``) one per token: ``{layer: (batch, pos, C)}``.

        Args:
            x: a batch of model inputs.
            kind: ``"lower"`` - the lower-leaky hard sigmoid used for the masks (can be
                slightly negative); ``"upper"`` - the upper-leaky one of the minimality loss;
                ``"clipped"`` - clamped to ``[0, 1]``.
        """
        if kind not in ("lower", "upper", "clipped"):
            raise ValueError(f"kind: expected 'lower', 'upper' or 'clipped', got {kind!r}")
        x = self._check_x(x)
        _, acts = self._acts_and_output(x)
        lower, upper = self._ci(acts)
        g = {"lower": lower, "upper": upper, "clipped": lower.clamp(0.0, 1.0)}[kind]
        lead = acts[self.modules[0]].shape[:-1]  # (batch,) or (batch, pos)
        if len(lead) > 1:
            return {n: g[:, i].reshape(*lead, self.C) for i, n in enumerate(self.modules)}
        return {n: g[:, i] for i, n in enumerate(self.modules)}

    @torch.no_grad()
    def masked_forward(self, x: torch.Tensor, masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Model output with the given layers replaced by their masked components.

        Args:
            x: a batch of model inputs ``(batch, ...)``.
            masks: ``{layer: mask}`` with ``mask`` of shape ``(batch, C)`` or ``(C,)`` (token inputs
                ``(batch, pos)`` also take ``(batch, pos, C)``, one mask per token); a layer
                in ``masks`` computes ``U_l (m * V_l^T a) + b``, a decomposed layer not in
                ``masks`` keeps the target weight. A mask with ``C + 1`` columns also scales the
                delta component ``W_l - U_l V_l^T`` by its last column. ``None``: every
                decomposed layer replaced with all-ones masks (the plain ``U V^T`` model). Real
                floating masks are cast to the components' dtype.
        """
        x = self._check_x(x)
        if masks is None:
            replace: dict[str, torch.Tensor | None] = {n: None for n in self.modules}
        else:
            if not isinstance(masks, dict):
                raise TypeError(f"masks: expected a dict {{layer: (batch, C) tensor}}, got {type(masks).__name__}")
            replace = {}
            for n, m in masks.items():
                self._check_module(n)
                m = check_tensor(f"masks[{n!r}]", m, ndim=(1, 2, 3))
                m = check_float_input(f"masks[{n!r}]", m, self.components.dtype)
                if (m.shape[-1] not in (self.C, self.C + 1) or (m.ndim >= 2 and m.shape[0] != x.shape[0])
                        or (m.ndim == 3 and (x.ndim != 2 or m.shape[1] != x.shape[1]))):
                    per_token = f", ({x.shape[0]}, {x.shape[1]}, {self.C}) per token" if x.ndim == 2 and not \
                        x.is_floating_point() else ""
                    raise ValueError(
                        f"masks[{n!r}]: expected shape ({x.shape[0]}, {self.C}){per_token} or ({self.C},) "
                        f"(C + 1 = {self.C + 1} columns with the delta component), got {tuple(m.shape)}"
                    )
                replace[n] = m.to(self._device())
        target = self._target()
        with target.hooks():
            return target.masked(x, replace)

    @torch.no_grad()
    def alive(self, threshold: float = 0.1, x: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Which subcomponents are alive: causal importance above ``threshold`` on some input.

        Uses the evaluation statistics recorded at the end of :func:`decompose`
        (``config.n_eval_batches`` fresh batches), or the batch ``x`` if given.
        Returns ``{layer: bool tensor (C,)}``; sum it to count (the paper's "alive" count).
        """
        threshold = check_positive_float("threshold", threshold, allow_zero=True)
        if x is not None:
            ci = self.causal_importances(x)
            mx = {n: g.reshape(-1, g.shape[-1]).max(dim=0).values for n, g in ci.items()}
        else:
            if not self.ci_max:
                raise ValueError("alive: no evaluation statistics recorded (config.n_eval_batches=0); pass x")
            mx = self.ci_max
        return {n: (v > threshold).cpu() for n, v in mx.items()}

    def n_alive(self, threshold: float = 0.1, x: torch.Tensor | None = None) -> dict[str, int]:
        """``{layer: number of alive subcomponents}`` (see :meth:`alive`)."""
        return {n: int(a.sum()) for n, a in self.alive(threshold, x).items()}

    def final_losses(self, last: int = 100) -> dict[str, float]:
        """Mean of each history series over the last ``last`` steps."""
        out = {}
        for k, v in self.history.items():
            tail = v[-last:] if v else []
            out[k] = float(sum(tail) / len(tail)) if tail else float("nan")
        return out
