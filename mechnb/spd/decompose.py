"""Stochastic Parameter Decomposition: the losses, the training loop and :class:`SPDResult`.

Bushnaq, Braun & Sharkey (2025), *Stochastic Parameter Decomposition*,
https://arxiv.org/abs/2506.20790. Notation: decomposed layers ``l``, subcomponents ``c``,
``W_l ~= U_l V_l^T``, causal importances ``g_{l,c}(x) = sigma_H(Gamma_{l,c}(V_{l,c}^T a_l))``
stochastic masks ``m = g + (1 - g) r`` with ``r ~ U(0, 1)``.

Losses (paper, method section), summed with the coefficients of :class:`SPDConfig`:

* faithfulness ``sum_l ||W_l - U_l V_l^T||_F^2 / N_params``;
* stochastic reconstruction: MSE between the target output and the output with *every*
  decomposed layer replaced by its masked components ``U_l (m_l * V_l^T a)``;
* stochastic layerwise reconstruction: the same with one layer replaced at a time,
  averaged over layers;
* importance minimality ``sum_l sum_c |g^upper_{l,c}(x)|^p`` averaged over the batch.

Biases are never decomposed: a replaced layer keeps the target's bias.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.profiler import record_function
from tqdm.auto import tqdm

from mechnb._checks import check_finite, check_positive_float, check_tensor, resolve_device
from mechnb.models import TiedLinear
from mechnb.spd.components import SPDComponents, lower_leaky_hard_sigmoid, upper_leaky_hard_sigmoid
from mechnb.spd.config import SPDConfig

__all__ = [
    "SPDResult",
    "decompose",
    "faithfulness_loss",
    "importance_minimality_loss",
    "stochastic_masks",
    "compress_zero_rows",
    "LOSS_NAMES",
]

LOSS_NAMES = ("faithfulness", "stochastic_recon", "stochastic_recon_layerwise", "importance_minimality")
_EPS = 1e-12


# --------------------------------------------------------------------------------------
# Loss pieces (pure functions, unit-tested against closed forms)
# --------------------------------------------------------------------------------------
def faithfulness_loss(components: SPDComponents, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """``sum_l ||W_l - U_l V_l^T||_F^2 / sum_l numel(W_l)`` (paper, method section)."""
    total = sum(((targets[n] - components.weight(n)) ** 2).sum() for n in components.names)
    n_params = sum(targets[n].numel() for n in components.names)
    return total / n_params


def importance_minimality_loss(ci_upper: torch.Tensor, p: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``E_x sum_{l,c} |g^upper_{l,c}(x)|^p`` (the importance-minimality loss).

    Args:
        ci_upper: upper-leaky causal importances ``(N, L, C)`` (non-negative).
        p: the exponent.
        weights: per-row weights ``(N,)`` summing to 1 (default: uniform mean).
    """
    per_row = (ci_upper + _EPS).pow(p).sum(dim=(1, 2))
    return per_row.mean() if weights is None else (per_row * weights).sum()


def stochastic_masks(ci: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``m = g + (1 - g) r`` with a fresh ``r ~ U(0, 1)`` per entry; ``ci (N, L, C)``."""
    r = torch.rand(ci.shape, generator=generator, device=ci.device, dtype=ci.dtype)
    return ci + (1.0 - ci) * r


def compress_zero_rows(x: torch.Tensor, multiple: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the all-zero rows of a batch into a single row carrying their total weight.

    Returns ``(x_kept (N', ...), weights (N',))`` with the nonzero rows first, then (if any)
    one zero row with weight ``n_zero / B``; weights sum to 1. Exact for every SPD term whose
    value for a zero row does not depend on the random mask (all of them for bias-free layers;
    see :class:`SPDConfig.compress_zero_rows`).

    ``N'`` is rounded up to a multiple of ``multiple`` (at most ``B``) with extra zero rows of
    weight 0, so that successive batches reuse a few tensor shapes: with a new shape every
    step the CPU allocator fragments and the process grows by hundreds of MB.
    """
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


def _weighted_mse(out: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    per_row = ((out - target) ** 2).reshape(out.shape[0], -1).mean(dim=1)
    return (per_row * weights).sum()


# --------------------------------------------------------------------------------------
# Hooking the target model
# --------------------------------------------------------------------------------------
class _HookState:
    """What the forward hooks do on the next forward pass: capture inputs and/or replace layers."""

    def __init__(self) -> None:
        self.capture: dict[str, torch.Tensor] | None = None
        self.replace: dict[str, torch.Tensor | None] = {}


@contextlib.contextmanager
def _hooked(
    modules: dict[str, nn.Module], components: SPDComponents, state: _HookState
) -> Iterator[_HookState]:
    """Install forward hooks on the decomposed layers for the duration of the block.

    A hooked layer records its input in ``state.capture`` (if not None) and, when its name is
    in ``state.replace``, returns ``U (m * V^T a) + b`` instead of ``W a + b`` (``m`` the mask
    in ``state.replace[name]``, ``None`` meaning all ones). Biases are the target's, detached.
    """
    handles = []

    def make(name: str, module: nn.Module) -> Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor | None]:
        def hook(_m: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            a = inputs[0]
            if state.capture is not None:
                state.capture[name] = a
            if name in state.replace:
                bias = module.bias.detach() if getattr(module, "bias", None) is not None else None
                return components.component_forward(name, a, state.replace[name], bias)
            return None

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make(name, module)))
        yield state
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients into the target model's own parameters."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def _resolve_modules(model: nn.Module, target_modules: Any) -> tuple[dict[str, nn.Module], dict[str, str]]:
    if isinstance(target_modules, str) or not isinstance(target_modules, (list, tuple)) or not target_modules:
        raise TypeError(
            f"target_modules: expected a non-empty list of layer names like ['linear1', 'linear2'], "
            f"got {target_modules!r}"
        )
    if len(set(target_modules)) != len(target_modules):
        raise ValueError(f"target_modules: expected distinct names, got {list(target_modules)!r}")
    linear_names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, TiedLinear))]
    modules: dict[str, nn.Module] = {}
    for name in target_modules:
        if not isinstance(name, str):
            raise TypeError(f"target_modules: expected layer names (str), got {type(name).__name__} {name!r}")
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"target_modules: {name!r} is not a submodule of the model; linear layers: {linear_names}")
        if not isinstance(m, (nn.Linear, TiedLinear)):
            raise ValueError(
                f"target_modules: {name!r} is a {type(m).__name__}, expected an nn.Linear; linear layers: {linear_names}"
            )
        modules[name] = m
    tied: dict[str, str] = {}
    for name, m in modules.items():
        if isinstance(m, TiedLinear):
            for src_name, src in modules.items():
                if src is m._source:
                    tied[name] = src_name
    return modules, tied


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------
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
        return self.model.get_submodule(module).weight.detach()

    def subcomponent_weights(self, module: str) -> torch.Tensor:
        """``U_l[:, c] V_l[:, c]^T`` for every ``c``: ``(C, d_out, d_in)``."""
        self._check_module(module)
        return self.components.subcomponent_weights(module).detach()

    def _check_module(self, module: str) -> None:
        if module not in self.modules:
            raise ValueError(f"module: expected one of the decomposed layers {self.modules}, got {module!r}")

    def _device(self) -> torch.device:
        return self.components.ci.W_in.device

    def _check_x(self, x: Any) -> torch.Tensor:
        x = check_tensor("x", x, floating=True)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"x: expected a non-empty batch (batch, ...), got shape {tuple(x.shape)}")
        return x.to(self._device())

    # -- causal importances --------------------------------------------------------------
    def _modules_dict(self) -> dict[str, nn.Module]:
        return {n: self.model.get_submodule(n) for n in self.modules}

    def _acts_and_output(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        state = _HookState()
        state.capture = {}
        with _hooked(self._modules_dict(), self.components, state):
            out = self.model(x)
        return out, state.capture

    def _ci(self, acts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return _causal_importances(self.components, acts, self.config.leaky_alpha)

    @torch.no_grad()
    def causal_importances(self, x: torch.Tensor, kind: str = "lower") -> dict[str, torch.Tensor]:
        """Causal importances ``g_l(x)`` of every subcomponent: ``{layer: (batch, C)}``.

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
        return {n: g[:, i] for i, n in enumerate(self.modules)}

    @torch.no_grad()
    def masked_forward(self, x: torch.Tensor, masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Model output with the given layers replaced by their masked components.

        Args:
            x: a batch of model inputs ``(batch, ...)``.
            masks: ``{layer: mask}`` with ``mask`` of shape ``(batch, C)`` or ``(C,)``; a layer
                in ``masks`` computes ``U_l (m * V_l^T a) + b``, a decomposed layer not in
                ``masks`` keeps the target weight. ``None``: every decomposed layer replaced
                with all-ones masks (the plain ``U V^T`` model).
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
                m = check_tensor(f"masks[{n!r}]", m, ndim=(1, 2), floating=True)
                if m.shape[-1] != self.C or (m.ndim == 2 and m.shape[0] != x.shape[0]):
                    raise ValueError(
                        f"masks[{n!r}]: expected shape ({x.shape[0]}, {self.C}) or ({self.C},), got {tuple(m.shape)}"
                    )
                replace[n] = m.to(self._device())
        state = _HookState()
        state.replace = replace
        with _hooked(self._modules_dict(), self.components, state):
            return self.model(x)

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
            mx = {n: g.max(dim=0).values for n, g in ci.items()}
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


def _causal_importances(
    components: SPDComponents, acts: dict[str, torch.Tensor], alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower- and upper-leaky causal importances ``(N, L, C)`` from the layer inputs ``acts``.

    The CI MLPs read ``V_l^T a_l`` without detaching (as in the paper), so the importance and
    reconstruction losses also shape ``V``.
    """
    inner = []
    for n in components.names:
        a = acts[n]
        if a.ndim != 2:
            raise ValueError(
                f"target_modules: layer {n!r} receives inputs of shape {tuple(a.shape)}; "
                "mechnb.spd decomposes layers whose inputs are (batch, d_in)"
            )
        inner.append(a @ components.V(n))
    pre = components.ci(torch.stack(inner, dim=1))  # (N, L, C)
    return lower_leaky_hard_sigmoid(pre, alpha), upper_leaky_hard_sigmoid(pre, alpha)


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
            "linear2"]``. A :class:`mechnb.models.TiedLinear` whose source layer is also
            decomposed shares that layer's subcomponents, transposed (TMS with tied weights).
        sample_inputs: ``sample_inputs(batch_size, generator) -> (batch_size, ...)`` model
            inputs; ``generator`` is a CPU ``torch.Generator`` seeded from ``config.seed``.
        config: an :class:`SPDConfig`.
        device: ``"cpu"`` or ``"cuda"``.
        progress: show a ``tqdm.auto`` progress bar.
        callback: ``callback(step, result)`` every ``config.log_every`` steps with a live
            :class:`SPDResult` (``ci_max`` empty); returning ``True`` stops training.

    Returns:
        An :class:`SPDResult`. A non-finite loss raises ``FloatingPointError`` naming the step.

    Per main-phase step: draw a batch (zero rows compressed if ``config.compress_zero_rows``),
    run the target with its layer inputs recorded, compute the causal importances, then the
    four losses, each stochastic one with freshly drawn masks, and take one AdamW step.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not callable(sample_inputs):
        raise TypeError(f"sample_inputs: expected a callable (batch_size, generator) -> tensor, got {type(sample_inputs).__name__}")
    if not isinstance(config, SPDConfig):
        raise TypeError(f"config: expected an SPDConfig, got {type(config).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
    dev = resolve_device(device)
    t0 = time.perf_counter()
    model.to(dev)
    modules, tied = _resolve_modules(model, target_modules)
    names = list(modules)
    with torch.no_grad():
        targets = {n: modules[n].weight.detach().clone() for n in names}
    for n, W in targets.items():
        check_finite(f"weight of {n!r}", W)
    dtype = next(iter(targets.values())).dtype

    init_gen = torch.Generator().manual_seed(config.seed)
    comps = SPDComponents(
        {n: tuple(targets[n].shape) for n in names}, config.C, config.ci_hidden, tied=tied, generator=init_gen
    ).to(device=dev, dtype=dtype)
    comps.init_from_targets(targets, generator=init_gen)
    data_gen = torch.Generator().manual_seed(config.seed + 1)
    mask_gen = torch.Generator(device=dev).manual_seed(config.seed + 2)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        x = sample_inputs(config.batch_size, data_gen)
        x = check_tensor("sample_inputs(...)", x)
        if x.ndim < 1 or x.shape[0] != config.batch_size:
            raise ValueError(
                f"sample_inputs: expected a batch of {config.batch_size} rows, got shape {tuple(x.shape)}"
            )
        x = x.to(dev)
        if config.compress_zero_rows and x.is_floating_point():
            return compress_zero_rows(x)
        return x, torch.full((x.shape[0],), 1.0 / x.shape[0], device=dev, dtype=dtype)

    result = SPDResult(model=model, modules=names, components=comps, config=config, tied=tied)
    state = _HookState()
    was_training = model.training
    model.eval()
    history_rows: list[torch.Tensor] = []
    L = len(names)
    try:
        with _frozen(model), _hooked(modules, comps, state):
            # ---- optional faithfulness warm-up: U V^T := W before the stochastic losses start.
            if config.faithfulness_warmup_steps > 0:
                uv = list(comps.U_params.parameters()) + list(comps.V_params.parameters())
                warm_opt = torch.optim.AdamW(uv, lr=config.faithfulness_warmup_lr, weight_decay=0.0)
                for _ in range(config.faithfulness_warmup_steps):
                    warm_opt.zero_grad(set_to_none=True)
                    faithfulness_loss(comps, targets).backward()
                    warm_opt.step()

            opt = torch.optim.AdamW(comps.parameters(), lr=config.lr, weight_decay=0.0)
            bar = tqdm(range(config.steps), desc="SPD", disable=not progress, leave=False)
            step = -1
            for step in bar:
                lr = config.lr_at(step)
                p = config.p_at(step)
                for g in opt.param_groups:
                    g["lr"] = lr
                with record_function("spd/sample_inputs"):
                    x, w = draw()
                # target pass: record layer inputs a_l and the output to reconstruct
                with record_function("spd/target_forward"), torch.no_grad():
                    state.capture, state.replace = {}, {}
                    target_out = model(x)
                acts = state.capture
                state.capture = None
                with record_function("spd/causal_importances"):
                    ci_lower, ci_upper = _causal_importances(comps, acts, config.leaky_alpha)
                with record_function("spd/faithfulness_and_minimality"):
                    loss_faith = faithfulness_loss(comps, targets)
                    loss_imp = importance_minimality_loss(ci_upper, p, w)
                loss_rec = torch.zeros((), device=dev, dtype=dtype)
                loss_lw = torch.zeros((), device=dev, dtype=dtype)
                for _ in range(config.n_mask_samples):
                    if config.stochastic_recon > 0:
                        with record_function("spd/stochastic_recon"):
                            m = stochastic_masks(ci_lower, mask_gen)
                            state.replace = {n: m[:, i] for i, n in enumerate(names)}
                            loss_rec = loss_rec + _weighted_mse(model(x), target_out, w)
                    if config.stochastic_recon_layerwise > 0:
                        with record_function("spd/stochastic_recon_layerwise"):
                            m = stochastic_masks(ci_lower, mask_gen)
                            for i, n in enumerate(names):
                                state.replace = {n: m[:, i]}
                                loss_lw = loss_lw + _weighted_mse(model(x), target_out, w)
                state.replace = {}
                loss_rec = loss_rec / config.n_mask_samples
                loss_lw = loss_lw / (config.n_mask_samples * L)
                total = (
                    config.faithfulness * loss_faith
                    + config.stochastic_recon * loss_rec
                    + config.stochastic_recon_layerwise * loss_lw
                    + config.importance_minimality * loss_imp
                )
                with record_function("spd/backward"):
                    opt.zero_grad(set_to_none=True)
                    total.backward()
                with record_function("spd/optimizer"):
                    opt.step()
                history_rows.append(torch.stack([total, loss_faith, loss_rec, loss_lw, loss_imp]).detach())

                if (step + 1) % config.log_every == 0 or step == config.steps - 1:
                    last = history_rows[-1].cpu()
                    if not torch.isfinite(last).all():
                        raise FloatingPointError(f"decompose: loss became non-finite at step {step}; lower config.lr")
                    if progress:
                        bar.set_postfix(total=f"{last[0]:.3g}", recon=f"{last[2]:.3g}", imp=f"{last[4]:.3g}")
                    if callback is not None:
                        result.history = _history(history_rows, config, step + 1)
                        if callback(step + 1, result):
                            break
            bar.close()
            result.steps_run = step + 1
            result.history = _history(history_rows, config, result.steps_run)

            # ---- evaluation statistics for alive(): largest CI of each subcomponent
            if config.n_eval_batches > 0:
                eval_gen = torch.Generator().manual_seed(config.seed + 3)
                mx = torch.full((L, config.C), -float("inf"), device=dev, dtype=dtype)
                with torch.no_grad():
                    for _ in range(config.n_eval_batches):
                        x = sample_inputs(config.batch_size, eval_gen).to(dev)
                        if config.compress_zero_rows and x.is_floating_point():
                            x, _ = compress_zero_rows(x)
                        state.capture, state.replace = {}, {}
                        model(x)
                        lower, _ = _causal_importances(comps, state.capture, config.leaky_alpha)
                        state.capture = None
                        mx = torch.maximum(mx, lower.amax(dim=0))
                result.ci_max = {n: mx[i].detach() for i, n in enumerate(names)}
    finally:
        model.train(was_training)
    result.seconds = time.perf_counter() - t0
    return result


def _history(rows: list[torch.Tensor], config: SPDConfig, n: int) -> dict[str, list[float]]:
    if not rows:
        return {k: [] for k in ("total", *LOSS_NAMES, "lr", "p")}
    arr = torch.stack(rows).cpu().tolist()
    cols = list(zip(*arr))
    hist = {"total": list(cols[0])}
    for k, col in zip(LOSS_NAMES, cols[1:]):
        hist[k] = list(col)
    hist["lr"] = [config.lr_at(s) for s in range(n)]
    hist["p"] = [config.p_at(s) for s in range(n)]
    return hist
