"""Check functions for notebook 01 (degeneracy, the learning coefficient, the Interaction Basis).

Known answers come from mechnb's own implementation (:mod:`mechnb.degeneracy`) on networks with
planted degeneracy, and from the LLC estimator's definition (Lau et al. 2023, Eq. 9).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mechnb.exercises._core import Case, CheckResult, exercise, run_cases

__all__ = ["check_gram_nullity", "check_llc_estimate"]

NOTEBOOK = "01_degeneracy_and_the_interaction_basis"


@exercise("1.1", "Gram-matrix nullity", notebook=NOTEBOOK)
def check_gram_nullity(fn: Callable[..., int]) -> CheckResult:
    """Check ``fn(acts, rtol=1e-6) -> int``: nullity of ``G = (1/n) sum_x f f^T`` with a constant 1 appended.

    ``acts`` is ``(n, d)`` (float64); ``G`` is ``(d + 1, d + 1)`` (2405.10927 Sec. 3.1). An
    eigenvalue counts as zero when ``sqrt(lambda / lambda_max) <= rtol``. The cases are hidden
    activations of :func:`mechnb.degeneracy.planted_mlp` networks (duplicated, dead neurons) and a
    low-rank matrix; expected values from :func:`~mechnb.degeneracy.gram_spectrum` +
    :func:`~mechnb.degeneracy.spectrum_nullity`.
    """
    from mechnb import degeneracy as dg

    def hidden(**planted: int) -> torch.Tensor:
        model, x = dg.planted_mlp(seed=0, **planted)
        with torch.no_grad():
            return model(x, return_activations=True)[1][0].double()  # output of layers[0] after the ReLU

    g = torch.Generator().manual_seed(1)
    low_rank = torch.randn(200, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 7, generator=g,
                                                                                     dtype=torch.float64)
    one_hot = torch.nn.functional.one_hot(torch.arange(60) % 5, 5).double()  # columns sum to the constant 1
    hint = "append a column of ones to acts before forming G (the next layer's bias reads it)"
    cases = []
    for label, acts in [("6 generic ReLUs", hidden()), ("6 generic + 2 duplicated ReLUs", hidden(duplicated=2)),
                        ("6 generic + 3 dead ReLUs", hidden(dead=3)),
                        ("(200, 7) activations of rank 3", low_rank),
                        ("one-hot codes (their sum is the constant 1)", one_hot)]:
        expected = dg.spectrum_nullity(dg.gram_spectrum(acts, with_bias=True))
        cases.append(Case((acts,), int(expected), label=f"acts = {label} {tuple(acts.shape)}", hint=hint))
    return run_cases(fn, cases)


@exercise("1.2", "LLC estimate from SGLD losses", notebook=NOTEBOOK)
def check_llc_estimate(fn: Callable[..., float]) -> CheckResult:
    """Check ``fn(losses, init_loss, nbeta) -> float``: ``nbeta * (mean(losses) - init_loss)`` (Lau et al. Eq. 9).

    ``losses`` is ``(num_chains, num_draws)``: the loss ``L_n`` at every kept SGLD draw of every
    chain; the expectation over the tempered posterior is the mean over chains *and* draws.
    """
    g = np.random.default_rng(0)
    traces = 0.5 + 0.01 * g.random((4, 50))
    uneven = np.stack([np.full(10, 0.2), np.full(10, 0.4)])
    cases = [
        Case((traces, 0.5, 100.0), float(100.0 * (traces.mean() - 0.5)), label="losses (4, 50), init 0.5, nbeta 100",
             hint="average over every chain and every draw, then subtract L_n(w*)"),
        Case((uneven, 0.1, 10.0), float(10.0 * (uneven.mean() - 0.1)),
             label="two chains at 0.2 and 0.4, init 0.1, nbeta 10"),
        Case((np.full((3, 5), 1.0), 1.0, 50.0), 0.0, label="chains that never leave L_n(w*)"),
        Case((torch.from_numpy(traces), 0.49, 30.0), float(30.0 * (traces.mean() - 0.49)),
             label="the same losses as a torch tensor, init 0.49, nbeta 30"),
    ]
    return run_cases(fn, cases, atol=1e-8, rtol=1e-6)
