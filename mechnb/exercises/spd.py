"""Check functions for notebook 02 (Stochastic Parameter Decomposition, arXiv:2506.20790).

Known answers come from closed forms and from mechnb's own implementation (:mod:`mechnb.spd`).
In notebook order:

* 2.1 :func:`check_lower_leaky_hard_sigmoid` - the hard sigmoid of the masks' causal importances;
* 2.2 :func:`check_upper_leaky_hard_sigmoid` - the hard sigmoid of the importance-minimality loss;
* 2.3 :func:`check_stochastic_masks` - ``m = g + (1 - g) r`` with ``r ~ U(0, 1)`` from a generator;
* 2.4 :func:`check_masked_layer_forward` - one decomposed layer with masked subcomponents,
  ``a -> U (m * V^T a) + b``;
* 2.5 :func:`check_importance_minimality` - ``E_x sum_{l,c} g_{l,c}(x)^p``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mechnb.exercises._core import Case, CheckResult, _fmt_number, exercise, run_cases

__all__ = [
    "check_lower_leaky_hard_sigmoid",
    "check_upper_leaky_hard_sigmoid",
    "check_stochastic_masks",
    "check_masked_layer_forward",
    "check_importance_minimality",
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
    """Run ``fn`` against the hard sigmoid ``ref`` on :func:`_inputs` and on a non-default ``alpha``."""
    cases = [Case((x,), ref(x), label=label, hint=hint) for x, label in _inputs()]
    x = torch.linspace(-3.0, 3.0, 7)
    cases.append(Case((x,), ref(x, alpha=0.1), kwargs={"alpha": 0.1}, label="x = linspace(-3, 3, 7), alpha=0.1",
                      hint="use the alpha argument, not a hard-coded 0.01"))
    return run_cases(fn, cases, atol=1e-6, rtol=1e-5)


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
    """
    return run_cases(fn, _stochastic_mask_cases(), atol=1e-6, rtol=1e-5)


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
    cases = []
    for case, value in _importance_minimality_cases():
        case.expected = value
        cases.append(case)
    return run_cases(fn, cases, atol=1e-5, rtol=1e-5)


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
