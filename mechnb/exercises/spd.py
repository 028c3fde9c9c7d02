"""Check functions for notebook 02 (Stochastic Parameter Decomposition, arXiv:2506.20790).

Known answers come from mechnb's own implementation (:mod:`mechnb.spd`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mechnb.exercises._core import Case, CheckResult, exercise, run_cases

__all__ = ["check_lower_leaky_hard_sigmoid", "check_upper_leaky_hard_sigmoid"]

NOTEBOOK = "02_stochastic_parameter_decomposition"


def _inputs() -> list[tuple[torch.Tensor, str]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.linspace(-2.0, 2.0, 9), "x = linspace(-2, 2, 9)"),
        (torch.tensor([0.0, 1.0, 1e-4, -1e-4, 0.999]), "x = [0, 1, 1e-4, -1e-4, 0.999] (the corners)"),
        (2.0 * torch.randn(4, 6, generator=g) + 0.5, "x = a (4, 6) tensor (batch x subcomponents)"),
    ]


@exercise("2.1", "lower-leaky hard sigmoid", notebook=NOTEBOOK)
def check_lower_leaky_hard_sigmoid(fn: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``fn(x, alpha=0.01) -> Tensor``: ``alpha * x`` below 0, ``x`` on [0, 1], ``1`` above (Sec. 2.2).

    The causal importances that build the masks go through this function.
    """
    from mechnb.spd import lower_leaky_hard_sigmoid as ref

    hint = "below 0 the lower-leaky version returns alpha * x (a small negative number); above 1 exactly 1"
    cases = [Case((x,), ref(x), label=label, hint=hint) for x, label in _inputs()]
    x = torch.linspace(-3.0, 3.0, 7)
    cases.append(Case((x,), ref(x, alpha=0.1), kwargs={"alpha": 0.1}, label="x = linspace(-3, 3, 7), alpha=0.1",
                      hint="use the alpha argument, not a hard-coded 0.01"))
    return run_cases(fn, cases, atol=1e-6, rtol=1e-5)


@exercise("2.2", "upper-leaky hard sigmoid", notebook=NOTEBOOK)
def check_upper_leaky_hard_sigmoid(fn: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``fn(x, alpha=0.01) -> Tensor``: ``0`` below 0, ``x`` on [0, 1], ``1 + alpha (x - 1)`` above.

    Used inside the importance-minimality loss, so a causal importance above 1 is still pulled down.
    """
    from mechnb.spd import upper_leaky_hard_sigmoid as ref

    hint = "below 0 the upper-leaky version is exactly 0; above 1 it keeps rising with slope alpha"
    cases = [Case((x,), ref(x), label=label, hint=hint) for x, label in _inputs()]
    x = torch.linspace(-3.0, 3.0, 7)
    cases.append(Case((x,), ref(x, alpha=0.1), kwargs={"alpha": 0.1}, label="x = linspace(-3, 3, 7), alpha=0.1",
                      hint="use the alpha argument, not a hard-coded 0.01"))
    return run_cases(fn, cases, atol=1e-6, rtol=1e-5)
