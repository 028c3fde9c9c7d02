"""Check functions for notebook 02 (Stochastic Parameter Decomposition, arXiv:2506.20790).

Known answers come from closed forms and from mechnb's own implementation (:mod:`mechnb.spd`).
In notebook order:

* 2.1 :func:`check_lower_leaky_hard_sigmoid` - the hard sigmoid of the masks' causal importances;
* 2.2 :func:`check_upper_leaky_hard_sigmoid` - the hard sigmoid of the importance-minimality loss;
* 2.3 :func:`check_stochastic_masks` - ``m = g + (1 - g) r`` with ``r ~ U(0, 1)`` from a generator;
* 2.4 :func:`check_masked_layer_forward` - one decomposed layer with masked subcomponents,
  ``a -> U (m * V^T a) + b``;
* 2.5 :func:`check_importance_minimality` - ``E_x sum_{l,c} g_{l,c}(x)^p``;
* 2.6 :func:`check_spd_train_step` - build the method: one SPD training step (the four losses and the
  update), checked against :func:`mechnb.spd.decompose.spd_step` and a 300-step run of the package.

While a check runs the learner's function, the package function that its exercise asks for is off
limits (:func:`mechnb.exercises._core._without`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from mechnb.exercises._core import Case, CheckResult, _fmt_number, _without, exercise, run_cases

__all__ = [
    "check_lower_leaky_hard_sigmoid",
    "check_upper_leaky_hard_sigmoid",
    "check_stochastic_masks",
    "check_masked_layer_forward",
    "check_importance_minimality",
    "check_spd_train_step",
]

NOTEBOOK = "02_stochastic_parameter_decomposition"


# --------------------------------------------------------------------------------------------
# 2.1 / 2.2 the two hard sigmoids
# --------------------------------------------------------------------------------------------


def _inputs() -> list[tuple[torch.Tensor, str]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.linspace(-2.0, 2.0, 9), "x = linspace(-2, 2, 9)"),
        (torch.tensor([0.0, 1.0, 1e-4, -1e-4, 0.999]), "x = [0, 1, 1e-4, -1e-4, 0.999] (the corners)"),
        (2.0 * torch.randn(4, 6, generator=g) + 0.5, "x = a (4, 6) tensor (batch x subcomponents)"),
    ]


def _check_hard_sigmoid(fn: Callable[..., torch.Tensor], ref: Callable[..., torch.Tensor], hint: str) -> CheckResult:
    """Run ``fn`` against the hard sigmoid ``ref`` on :func:`_inputs` and on a non-default ``alpha``
    (``ref`` itself off limits inside ``fn``)."""
    cases = [Case((x,), ref(x), label=label, hint=hint) for x, label in _inputs()]
    x = torch.linspace(-3.0, 3.0, 7)
    cases.append(Case((x,), ref(x, alpha=0.1), kwargs={"alpha": 0.1}, label="x = linspace(-3, 3, 7), alpha=0.1",
                      hint="use the alpha argument, not a hard-coded 0.01"))
    ex_id = "2.1" if ref.__name__.startswith("lower") else "2.2"
    guarded = _without(fn, {f"spd.{ref.__name__}": ref}, ex_id, "torch.where and clamp, as the box says")
    return run_cases(guarded, cases, atol=1e-6, rtol=1e-5)


@exercise("2.1", "lower-leaky hard sigmoid", notebook=NOTEBOOK)
def check_lower_leaky_hard_sigmoid(fn: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``fn(x, alpha=0.01) -> Tensor``: ``alpha * x`` below 0, ``x`` on [0, 1], ``1`` above.

    The paper's lower-leaky hard sigmoid (method section): the causal importances that build the masks
    go through it.
    """
    from mechnb.spd import lower_leaky_hard_sigmoid as ref

    hint = "below 0 the lower-leaky version returns alpha * x (a small negative number); above 1 exactly 1"
    return _check_hard_sigmoid(fn, ref, hint)


@exercise("2.2", "upper-leaky hard sigmoid", notebook=NOTEBOOK)
def check_upper_leaky_hard_sigmoid(fn: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``fn(x, alpha=0.01) -> Tensor``: ``0`` below 0, ``x`` on [0, 1], ``1 + alpha (x - 1)`` above.

    Used inside the importance-minimality loss, so a causal importance above 1 is still pulled down.
    """
    from mechnb.spd import upper_leaky_hard_sigmoid as ref

    hint = "below 0 the upper-leaky version is exactly 0; above 1 it keeps rising with slope alpha"
    return _check_hard_sigmoid(fn, ref, hint)


# --------------------------------------------------------------------------------------------
# 2.3 stochastic masks
# --------------------------------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mask_in_range(ci: torch.Tensor) -> Callable[[object, object], str | None]:
    """A ``Case.compare``: every mask lies in ``[g, 1]`` (up to rounding) and has the shape of ``g``."""

    def compare(expected: object, got: object) -> str | None:
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor of shape {tuple(ci.shape)}, got {type(got).__name__}"
        if tuple(got.shape) != tuple(ci.shape):
            return f"wrong shape: expected {tuple(ci.shape)} (the shape of ci), got {tuple(got.shape)}"
        m = got.detach().to(ci.dtype)
        bad = (m < ci - 1e-6) | (m > 1.0 + 1e-6)
        if not bad.any():
            return None
        i = tuple(int(k) for k in torch.nonzero(bad)[0])
        return (f"expected every mask in [g, 1], got {int(bad.sum())} of {m.numel()} outside; e.g. at index "
                f"{list(i)}: g = {_fmt_number(ci[i].item())}, mask = {_fmt_number(m[i].item())}")

    return compare


def _stochastic_mask_cases() -> list[Case]:
    """The cases of :func:`check_stochastic_masks` (expected values from :func:`mechnb.spd.stochastic_masks`)."""
    from mechnb.spd import stochastic_masks as ref

    draw = ("draw r with ONE call torch.rand(ci.shape, generator=generator, dtype=ci.dtype) and return "
            "ci + (1 - ci) * r; torch.rand_like(ci) ignores the generator, so the same seed would not give the "
            "same masks")
    g = _gen(5)
    ci = torch.rand(4, 2, 5, generator=g)
    ci[0, 0, :2] = torch.tensor([0.0, 1.0])
    ones, zeros = torch.ones(3, 1, 4), torch.zeros(1000, 1, 3)
    leaky = torch.tensor([[[-0.004, -0.001, 0.0, 0.3, 1.0]]]).repeat(6, 1, 1)
    wide = torch.rand(2000, 2, 3, generator=g)
    return [
        Case((ci, _gen(0)), ref(ci, _gen(0)), label="ci (4, 2, 5) in [0, 1], generator seed 0", hint=draw),
        Case((ones, _gen(1)), torch.ones(3, 1, 4), label="ci = ones(3, 1, 4) (every subcomponent important)",
             atol=0.0, rtol=0.0, hint="g = 1 must give m = 1 exactly: an important subcomponent is never ablated"),
        Case((zeros, _gen(2)), torch.rand(1000, 1, 3, generator=_gen(2)),
             label="ci = zeros(1000, 1, 3), generator seed 2",
             hint="g = 0 must give m = r, a uniform random factor in [0, 1]: an unimportant subcomponent may be "
                  "scaled by any amount; " + draw),
        Case((leaky, _gen(3)), ref(leaky, _gen(3)),
             label="ci with slightly negative entries (from the lower leak), generator seed 3",
             hint="use g as it is, without clamping it to [0, 1]: the lower leak exists so that a negative g "
                  "still gets gradient through the masks"),
        Case((wide, _gen(4)), None, label="ci (2000, 2, 3) in [0, 1], generator seed 4: every mask in [g, 1]?",
             compare=_mask_in_range(wide),
             hint="m = g + (1 - g) r with r in [0, 1] lies between g (r = 0) and 1 (r = 1)"),
    ]


@exercise("2.3", "stochastic masks", notebook=NOTEBOOK)
def check_stochastic_masks(fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor]) -> CheckResult:
    """Check ``fn(ci, generator) -> Tensor``: ``m = g + (1 - g) r``, ``r ~ U(0, 1)`` drawn from ``generator``.

    ``ci`` holds causal importances ``(batch, L, C)``; the masks have the same shape. Known answers:
    ``m = 1`` where ``g = 1``; ``m = r`` (the generator's uniform draws) where ``g = 0``; every mask
    in ``[g, 1]``; and on the same generator seed, the same masks as :func:`mechnb.spd.stochastic_masks`
    (which draws ``r`` with one ``torch.rand(ci.shape, generator=generator, dtype=ci.dtype)``).
    ``spd.stochastic_masks`` itself is off limits inside ``fn``.
    """
    from mechnb.spd import losses

    forbidden = {"spd.stochastic_masks": losses.stochastic_masks}
    return run_cases(_without(fn, forbidden, "2.3", "one torch.rand draw from the generator and the formula"),
                     _stochastic_mask_cases(), atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# 2.4 one decomposed layer with masked subcomponents
# --------------------------------------------------------------------------------------------


def masked_layer_reference(a: torch.Tensor, U: torch.Tensor, V: torch.Tensor, mask: torch.Tensor,
                           bias: torch.Tensor | None = None) -> torch.Tensor:
    """``out[b] = sum_c mask[b, c] U[:, c] (V[:, c]^T a[b]) + bias`` by building each example's weight.

    Deliberately not the efficient form: it assembles the per-example matrix
    ``W_b = sum_c m_bc U_c V_c^T`` ``(batch, d_out, d_in)`` and applies it, an independent route to
    the same number.
    """
    W_b = torch.einsum("bc,oc,ic->boi", mask, U, V)
    out = torch.einsum("boi,bi->bo", W_b, a)
    return out if bias is None else out + bias


def _masked_layer_cases() -> list[Case]:
    """The cases of :func:`check_masked_layer_forward` (d_in = 5, d_out = 3, C = 4, batch = 6: all different)."""
    g = _gen(7)
    batch, d_in, d_out, C = 6, 5, 3, 4
    a = torch.randn(batch, d_in, generator=g, dtype=torch.float64)
    U = torch.randn(d_out, C, generator=g, dtype=torch.float64)
    V = torch.randn(d_in, C, generator=g, dtype=torch.float64)
    b = torch.randn(d_out, generator=g, dtype=torch.float64)
    mask = torch.rand(batch, C, generator=g, dtype=torch.float64)
    ones, zeros = torch.ones(batch, C, dtype=torch.float64), torch.zeros(batch, C, dtype=torch.float64)
    only2 = zeros.clone()
    only2[:, 2] = 1.0
    W = U @ V.T
    shapes = "a (6, 5), U (3, 4), V (5, 4)"
    return [
        Case((a, U, V, ones), a @ W.T, label=f"{shapes}, mask = ones(6, 4), no bias",
             hint="with every mask 1 the layer computes W a with W = U V^T; in batch form (a @ V) @ U.T, "
                  "shape (6, 3)"),
        Case((a, U, V, only2), torch.outer(a @ V[:, 2], U[:, 2]),
             label=f"{shapes}, mask keeps only subcomponent 2, no bias",
             hint="only subcomponent 2 kept: out = (V[:, 2]^T a) U[:, 2]; the mask multiplies the C inner "
                  "activations a @ V (batch, C), not the inputs or the outputs"),
        Case((a, U, V, zeros), b.expand(batch, d_out), kwargs={"bias": b},
             label=f"{shapes}, mask = zeros(6, 4), bias b (3,)",
             hint="biases are never decomposed: with every subcomponent masked to 0 the layer outputs the bias"),
        Case((a, U, V, mask), masked_layer_reference(a, U, V, mask, b), kwargs={"bias": b},
             label=f"{shapes}, a random mask (6, 4) (one row per example), bias b",
             hint="each example has its own mask row: (a @ V) * mask, then @ U.T, then + bias"),
        Case((a, U, V, mask), masked_layer_reference(a, U, V, mask), kwargs={"bias": None},
             label=f"{shapes}, the same random mask, bias=None", hint="bias=None means no bias"),
    ]


@exercise("2.4", "masked forward of a decomposed layer", notebook=NOTEBOOK)
def check_masked_layer_forward(fn: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``fn(a, U, V, mask, bias=None) -> Tensor``: ``out = U (mask * V^T a) + bias`` per example.

    Shapes: ``a (batch, d_in)``, ``U (d_out, C)``, ``V (d_in, C)``, ``mask (batch, C)``,
    ``bias (d_out,)`` or ``None``; returns ``(batch, d_out)``. Known answers (closed forms): all
    masks 1 give ``W a`` with ``W = U V^T``; a mask keeping only subcomponent ``c`` gives
    ``(V_c^T a) U_c``; all masks 0 give the bias; a random mask gives
    ``sum_c m_c U_c V_c^T a + b`` assembled as one weight matrix per example
    (:func:`masked_layer_reference`), the same as :meth:`mechnb.spd.SPDComponents.component_forward`.
    """
    return run_cases(fn, _masked_layer_cases(), atol=1e-9, rtol=1e-7)


# --------------------------------------------------------------------------------------------
# 2.5 importance minimality
# --------------------------------------------------------------------------------------------


def importance_minimality_reference(ci_upper: torch.Tensor, p: float) -> torch.Tensor:
    """``mean_b sum_{l,c} ci_upper[b, l, c] ** p`` (the authors' normalisation, without mechnb's 1e-12)."""
    return ci_upper.pow(p).sum(dim=(1, 2)).mean()


def _importance_minimality_cases() -> list[tuple[Case, float]]:
    """``(case, its closed-form value)``: the hand-computable cases of :func:`check_importance_minimality`."""
    g = _gen(11)
    one = torch.tensor([[[1.0, 0.5], [0.0, 0.25]]])  # (batch 1, L 2, C 2)
    two = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]],
                        [[1.0, 1.0, 0.0], [0.5, 0.25, 0.25]]])  # row sums 1 and 3
    leak = torch.tensor([[[1.02, 0.0], [0.0, 0.0]]])  # above 1 from the upper leak
    rand = 1.1 * torch.rand(64, 2, 20, generator=g) + 1e-3
    mean_all = "sum over layers AND subcomponents (dims 1, 2), then average over the batch (dim 0) only"
    return [
        (Case((one, 1.0), label="ci = [[[1, 0.5], [0, 0.25]]] (batch 1, L 2, C 2), p = 1",
              hint="the sum of g^p over all layers and subcomponents; with p = 1 just the sum, 1.75"), 1.75),
        (Case((one, 2.0), label="the same ci, p = 2", hint="raise each importance to the power p before summing"),
         1.3125),
        (Case((two, 1.0), label="ci (batch 2, L 2, C 3) with per-example sums 1 and 3, p = 1", hint=mean_all), 2.0),
        (Case((one, 0.5), label="the same ci as case 1, p = 0.5",
              hint="g^0.5: sqrt(1) + sqrt(0.5) + sqrt(0) + sqrt(0.25)"), 1.0 + 0.5**0.5 + 0.5),
        (Case((leak, 2.0), label="ci = [[[1.02, 0], [0, 0]]] (above 1 from the upper leak), p = 2",
              hint="do not clamp: the upper-leaky importances may exceed 1 and the loss must keep pulling them down"),
         1.02**2),
        (Case((rand, 1.0), label="ci (64, 2, 20) random in [0, 1.1], p = 1", hint=mean_all),
         float(importance_minimality_reference(rand, 1.0))),
        (Case((rand, 0.5), label="the same ci, p = 0.5", hint=mean_all),
         float(importance_minimality_reference(rand, 0.5))),
    ]


@exercise("2.5", "importance-minimality loss", notebook=NOTEBOOK)
def check_importance_minimality(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Check ``fn(ci_upper, p) -> scalar``: ``L_imp-min = mean over the batch of sum_{l,c} g_{l,c}^p``.

    ``ci_upper`` holds the upper-leaky causal importances ``(batch, L, C)`` (non-negative, may
    exceed 1). Known answers: hand-computed sums for tiny inputs (e.g. ``[[[1, 0.5], [0, 0.25]]]``
    gives 1.75 at ``p = 1`` and 1.3125 at ``p = 2``) and the formula on a random batch. This is the
    normalisation of the authors' code and of :func:`mechnb.spd.importance_minimality_loss` (which
    adds 1e-12 before the power, keeping the gradient finite at ``g = 0`` for ``p < 1``).
    """
    from mechnb.spd import losses

    cases = []
    for case, value in _importance_minimality_cases():
        case.expected = value
        cases.append(case)
    forbidden = {"spd.importance_minimality_loss": losses.importance_minimality_loss,
                 "spd.losses._importance_minimality": losses._importance_minimality}
    return run_cases(_without(fn, forbidden, "2.5", "pow, then sum over layers and subcomponents, then the batch mean"),
                     cases, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# reference solutions, with the notebook's signatures (learner notebooks fall back to them
# while an exercise is still its stub)
# --------------------------------------------------------------------------------------------


def solution_lower_leaky_hard_sigmoid(x: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """Reference for 2.1: ``alpha * x`` below 0, ``x`` on [0, 1], 1 above (SPD, Sec. 2.2); same shape as ``x``."""
    return torch.where(x > 0, x.clamp(max=1.0), alpha * x)


def solution_upper_leaky_hard_sigmoid(x: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """Reference for 2.2: 0 below 0, ``x`` on [0, 1], ``1 + alpha (x - 1)`` above; same shape as ``x``."""
    return torch.where(x > 1, 1.0 + alpha * (x - 1.0), x.clamp(min=0.0))


def solution_stochastic_masks(ci: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Reference for 2.3: ``m = g + (1 - g) r`` with ``r ~ U(0, 1)`` drawn from ``generator``; ``ci (batch, L, C)``."""
    r = torch.rand(ci.shape, generator=generator, dtype=ci.dtype)  # one uniform draw per entry, in order
    return ci + (1.0 - ci) * r


def solution_masked_layer_forward(a: torch.Tensor, U: torch.Tensor, V: torch.Tensor, mask: torch.Tensor,
                                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference for 2.4: ``U (mask * V^T a) + bias``; ``a (batch, d_in)``, ``U (d_out, C)``, ``V (d_in, C)``,
    ``mask (batch, C)`` -> ``(batch, d_out)``."""
    out = ((a @ V) * mask) @ U.T  # (batch, C) inner activations, masked, then read out by U
    return out if bias is None else out + bias


def solution_importance_minimality(ci_upper: torch.Tensor, p: float) -> torch.Tensor:
    """Reference for 2.5: the mean over the batch of ``sum_{l,c} g_{l,c}^p``; ``ci_upper (batch, L, C)`` -> scalar."""
    return ci_upper.pow(p).sum(dim=(1, 2)).mean()


# --------------------------------------------------------------------------------------------
# 2.6 build the method: one SPD training step
# --------------------------------------------------------------------------------------------

#: the settings of the 300-step run of :func:`check_spd_train_step` (tms-5-2, its fast recipe shortened:
#: C = 10, a stronger importance minimality; the package reaches 5 alive in both layers on seeds 0, 1, 2)
SHORT_RUN = dict(C=10, steps=300, batch_size=2048, lr=1e-2, importance_minimality=1e-2, faithfulness_warmup_steps=100,
                 n_eval_batches=4)


def solution_spd_train_step(target, W: dict[str, torch.Tensor], x: torch.Tensor, weights: torch.Tensor,
                            optimizer: torch.optim.Optimizer, config, p: float,
                            generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Reference for 2.6: one SPD step (paper, method section) - the four losses, their weighted sum, one update.

    ``target``: a :class:`mechnb.spd.hooks.HookedTarget` with its hooks installed; ``W``: ``{layer:
    W_l (d_out, d_in)}``; ``x (N, ...)``; ``weights (N,)`` summing to 1; ``optimizer`` over the
    components' parameters; ``config``: an :class:`mechnb.spd.SPDConfig` (coefficients, ``leaky_alpha``,
    ``upper_alpha``; one mask sample); ``p`` the minimality exponent; ``generator`` the masks' noise.
    Returns the four loss terms (scalars) by name.
    """
    comps = target.components
    names = comps.names
    target.model.requires_grad_(False)  # the target network is fixed: no gradient may reach it
    with torch.no_grad():
        out, acts = target.capture(x)  # f(x) (N, ...) and the layer inputs {layer: a_l (N, d_in)}
    pre = comps.ci_pre_activations(acts)  # (N, L, C)
    g_lower = solution_lower_leaky_hard_sigmoid(pre, config.leaky_alpha)  # builds the masks
    g_upper = solution_upper_leaky_hard_sigmoid(pre, config.upper_alpha)  # enters the minimality loss

    def mse(y: torch.Tensor) -> torch.Tensor:  # per-row MSE, weighted over the batch
        return (((y - out) ** 2).reshape(len(y), -1).mean(dim=1) * weights).sum()

    faith = sum(((W[n] - comps.weight(n)) ** 2).sum() for n in names) / sum(W[n].numel() for n in names)
    imp = ((g_upper.abs() + 1e-12).pow(p).sum(dim=(1, 2)) * weights).sum()
    m = solution_stochastic_masks(g_lower, generator)  # first draw: every layer masked at once
    rec = mse(target.masked(x, {n: m[:, i] for i, n in enumerate(names)}))
    m = solution_stochastic_masks(g_lower, generator)  # second draw: one layer at a time
    lw = sum(mse(target.masked(x, {n: m[:, i]})) for i, n in enumerate(names)) / len(names)
    total = (config.faithfulness * faith + config.stochastic_recon * rec
             + config.stochastic_recon_layerwise * lw + config.importance_minimality * imp)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    return {"faithfulness": faith, "stochastic_recon": rec, "stochastic_recon_layerwise": lw,
            "importance_minimality": imp}


class _TwoLayer(torch.nn.Module):
    """A small untied MLP ``6 -> 4 -> 3`` with biases (float64): two decomposed layers that differ."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(6, 4).double(), torch.nn.Linear(4, 3).double()
        g = _gen(seed)  # seeded without touching the global generator
        with torch.no_grad():
            for q in self.parameters():
                q.copy_(0.6 * torch.randn(q.shape, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def _step_setup(kind: str) -> dict:
    """A seeded float64 case: model (parameters requiring grad), hooked target, W, batch, weights, config."""
    from mechnb import zoo
    from mechnb.spd import SPDComponents, SPDConfig
    from mechnb.spd.decompose import _compress_zero_rows
    from mechnb.spd.hooks import HookedTarget, resolve_target_modules

    if kind == "tms":
        model, _ = zoo.load("tms-5-2")
        model = model.double()
        layers = ["linear1", "linear2"]
        x = zoo.task_for("tms-5-2").sample(96, generator=_gen(21)).double()
        x, w = _compress_zero_rows(x, 1)  # the zero rows merged into one weighted row
        C = 6
    else:
        model = _TwoLayer(5)
        layers = ["fc1", "fc2"]
        x = torch.randn(24, 6, generator=_gen(22), dtype=torch.float64)
        w = torch.full((24,), 1 / 24, dtype=torch.float64)
        C = 5
    model.requires_grad_(True)
    modules, tied = resolve_target_modules(model, layers)
    W = {n: modules[n].weight.detach().clone() for n in modules}
    g = _gen(23)
    comps = SPDComponents({n: tuple(W[n].shape) for n in W}, C, 4, tied=tied, generator=g).double()
    comps.init_from_targets(W, generator=g)
    with torch.no_grad():  # non-zero CI biases: no pre-activation sits exactly on a kink of the hard sigmoids
        for q in comps.ci.parameters():
            q.add_(0.3 * torch.randn(q.shape, generator=g, dtype=q.dtype))
    config = SPDConfig(C=C, lr=1e-2, importance_minimality=0.05, leaky_alpha=0.01, upper_leaky_alpha=0.05, p=2.0)
    opt = torch.optim.AdamW(comps.parameters(), lr=config.lr, weight_decay=0.0)
    return {"model": model, "target": HookedTarget(model, modules, comps), "W": W, "x": x, "w": w,
            "config": config, "opt": opt, "p": 1.5, "kind": kind}


_N_STEPS = 3


def _step_trace(step_fn: Callable, kind: str, package: bool) -> dict:
    """Three steps from the seeded setup: the losses of each, the components' parameters after each,
    and what happened to the target network (its parameters' gradients, whether they changed)."""
    from mechnb.spd.decompose import spd_step
    from mechnb.spd.hooks import frozen_parameters
    from mechnb.spd.losses import LOSS_NAMES, total_loss

    s = _step_setup(kind)
    target, opt = s["target"], s["opt"]
    before = {n: p.detach().clone() for n, p in s["model"].named_parameters()}
    mask_gen = _gen(24)
    losses, params = [], []
    with target.hooks():
        for _ in range(_N_STEPS):
            if package:
                with frozen_parameters(s["model"]):
                    terms = spd_step(target, s["W"], s["x"], s["w"], s["config"], s["p"], mask_gen)
                    opt.zero_grad(set_to_none=True)
                    total_loss(terms, s["config"]).backward()
                    opt.step()
                got = {n: getattr(terms, n) for n in LOSS_NAMES}
            else:
                got = step_fn(target, s["W"], s["x"], s["w"], opt, s["config"], s["p"], mask_gen)
            losses.append(got)
            params.append({n: p.detach().clone() for n, p in target.components.named_parameters()})
    model_grads = sorted(n for n, p in s["model"].named_parameters() if p.grad is not None and p.grad.abs().sum() > 0)
    changed = sorted(n for n, p in s["model"].named_parameters() if not torch.equal(p.detach(), before[n]))
    return {"losses": losses, "params": params, "model_grads": model_grads, "model_changed": changed}


def _compare_step_trace(expected: dict, got: object) -> str | None:
    """What differs between the package's three steps and the learner's: target untouched, losses, update."""
    from mechnb.spd.losses import LOSS_NAMES

    if not isinstance(got, dict) or "losses" not in got:
        return f"expected the four losses as a dict, got {type(got).__name__}"
    if got["model_changed"]:
        return (f"expected the target network unchanged, got its parameters {got['model_changed']} changed: the target "
                "is what SPD decomposes and stays fixed")
    if got["model_grads"]:
        return (f"expected no gradient to reach the target network, got .grad on {got['model_grads']}: freeze it "
                "(target.model.requires_grad_(False)) and run f(x) under torch.no_grad() - its output is the fixed "
                "thing to reconstruct")
    for k, (exp, g) in enumerate(zip(expected["losses"], got["losses"]), start=1):
        if not isinstance(g, dict):
            return f"step {k}: expected a dict of the four losses, got {type(g).__name__}"
        missing = [n for n in LOSS_NAMES if n not in g]
        if missing:
            return f"step {k}: expected the keys {list(LOSS_NAMES)}, got {sorted(map(str, g))} (missing {missing})"
        for n in LOSS_NAMES:
            e, v = float(exp[n].detach()), float(g[n].detach() if isinstance(g[n], torch.Tensor) else g[n])
            if not abs(v - e) <= 1e-9 + 1e-7 * abs(e):
                return f"step {k}: {n}: expected {_fmt_number(e)}, got {_fmt_number(v)}"
        for n, e in expected["params"][k - 1].items():
            v = got["params"][k - 1][n]
            if not torch.allclose(v, e, rtol=1e-6, atol=1e-9):
                err = (v - e).abs().max().item()
                return (f"step {k}: the losses are right but the update is not: parameter {n} differs from the package's "
                        f"by up to {_fmt_number(err)} (expected the AdamW step on the weighted total, gradients zeroed "
                        f"first)")
    return None


@functools.lru_cache(maxsize=4)
def _package_alive(seed: int) -> dict[str, int]:
    """Alive counts of the package's own :func:`mechnb.spd.decompose` on tms-5-2 with :data:`SHORT_RUN` and ``seed``."""
    return _short_run(None, seed)


def _short_run(step_fn: Callable | None, seed: int) -> dict[str, int]:
    """:func:`mechnb.spd.decompose`'s loop with ``step_fn`` as its step (``None``: the package's ``decompose``)."""
    from mechnb import zoo
    from mechnb.spd import SPDComponents, SPDConfig, SPDResult, decompose
    from mechnb.spd.decompose import _ci_max, _draw_batch, _faithfulness_warmup
    from mechnb.spd.hooks import HookedTarget, resolve_target_modules

    model, _ = zoo.load("tms-5-2")
    task = zoo.task_for("tms-5-2")
    config = SPDConfig.for_model("tms-5-2", recipe="fast").replace(seed=seed, **SHORT_RUN)
    layers = ["linear1", "linear2"]

    def sample(n: int, g: torch.Generator) -> torch.Tensor:
        return task.sample(n, generator=g)

    if step_fn is None:
        return decompose(model, layers, sample, config, progress=False).n_alive()
    modules, tied = resolve_target_modules(model, layers)
    W = {n: modules[n].weight.detach().clone() for n in layers}
    init_gen = torch.Generator().manual_seed(config.seed)
    comps = SPDComponents({n: tuple(W[n].shape) for n in layers}, config.C, config.ci_hidden, tied=tied,
                          generator=init_gen, ci_fn=config.ci_fn)
    comps.init_from_targets(W, generator=init_gen)
    data_gen = torch.Generator().manual_seed(config.seed + 1)
    mask_gen = torch.Generator().manual_seed(config.seed + 2)
    target = HookedTarget(model, modules, comps)
    flags = [(q, q.requires_grad) for q in model.parameters()]
    try:
        with target.hooks():
            _faithfulness_warmup(comps, W, config)
            opt = torch.optim.AdamW(comps.parameters(), lr=config.lr, weight_decay=0.0)
            for step in range(config.steps):
                for group in opt.param_groups:
                    group["lr"] = config.lr_at(step)
                x, w = _draw_batch(sample, config, data_gen, torch.device("cpu"), torch.float32)
                step_fn(target, W, x, w, opt, config, config.p_at(step), mask_gen)
            result = SPDResult(model=model, modules=layers, components=comps, config=config, tied=tied)
            result.ci_max = _ci_max(target, sample, config)
    finally:
        for q, f in flags:
            q.requires_grad_(f)
    return result.n_alive()


def _compare_alive(expected: dict[str, int], got: object) -> str | None:
    if not isinstance(got, dict):
        return f"expected alive counts per layer, got {type(got).__name__}"
    for n, e in expected.items():
        if got.get(n) != e:
            return (f"{n}: expected {e} alive subcomponents (the package's decompose, same seed and settings), got "
                    f"{got.get(n)}")
    return None


def _spd_step_cases() -> list[Case]:
    return [
        Case(("tms",), _step_trace(None, "tms", package=True), compare=_compare_step_trace,
             label="tms-5-2 (tied, zero rows merged into one weighted row), C = 6, 3 steps, p = 1.5",
             hint="masks from the LOWER-leaky importances, minimality on the UPPER-leaky ones; weighted batch means"),
        Case(("mlp",), _step_trace(None, "mlp", package=True), compare=_compare_step_trace,
             label="an untied MLP 6 -> 4 -> 3 with biases, C = 5, 3 steps, p = 1.5",
             hint="layerwise: one masked forward per layer, only that layer replaced, averaged over the layers"),
        Case(("run",), _package_alive(0), compare=_compare_alive,
             label=f"300 steps of your step on tms-5-2 (seed 0, C = {SHORT_RUN['C']})",
             hint="the step is right on the seeded cases but training goes elsewhere: is the optimiser stepped once "
                  "per call, on the total with the config's coefficients?"),
    ]


@exercise("2.6", "one SPD training step", notebook=NOTEBOOK)
def check_spd_train_step(fn: Callable[..., dict[str, torch.Tensor]]) -> CheckResult:
    """Check ``fn(target, W, x, weights, optimizer, config, p, generator) -> {loss name: scalar}``: one SPD step.

    Cases 1-2 (float64, seeded): three calls of ``fn`` against three steps of the package
    (:func:`mechnb.spd.decompose.spd_step`, :func:`mechnb.spd.losses.total_loss`, backward, AdamW step
    under :func:`mechnb.spd.hooks.frozen_parameters`) on tms-5-2 and on an untied MLP: the same four
    losses (relative 1e-7), the same parameters after every step, the target network unchanged and
    without gradient (its parameters are handed over with ``requires_grad=True``). The mask noise is
    drawn as the package draws it: one ``(N, L, C)`` sample for the all-layers reconstruction, then
    one for the layerwise one. Case 3: 300 steps of ``fn`` in the package's loop on tms-5-2
    (:data:`SHORT_RUN`) reach the package's alive counts with the same seed (5 and 5).
    ``spd_step``, ``decompose``, the loss functions, ``causal_importances`` and ``stochastic_masks``
    of :mod:`mechnb.spd` are off limits inside ``fn``.
    """
    from mechnb.spd import hooks, losses
    from mechnb.spd.decompose import decompose, spd_step

    forbidden = {"spd.spd_step": spd_step, "spd.decompose": decompose,
                 "spd.losses.total_loss": losses.total_loss, "spd.faithfulness_loss": losses.faithfulness_loss,
                 "spd.importance_minimality_loss": losses.importance_minimality_loss,
                 "spd.losses.stochastic_recon_loss": losses.stochastic_recon_loss,
                 "spd.losses.stochastic_recon_layerwise_loss": losses.stochastic_recon_layerwise_loss,
                 "spd.stochastic_masks": losses.stochastic_masks, "spd.hooks.causal_importances":
                 hooks.causal_importances}
    guarded = _without(fn, forbidden, "2.6", "your functions of Exercises 2.1-2.5 and the box's building blocks")

    def run(kind: str) -> object:
        if kind == "run":
            return _short_run(fn, 0)
        return _step_trace(guarded, kind, package=False)

    functools.update_wrapper(run, fn)
    return run_cases(run, _spd_step_cases())
