"""The check functions of notebook 06 (:mod:`mechnb.exercises.llc`).

A correct solution passes and typical mistakes fail; the reference SGNHT step and MALA acceptance
are what :class:`mechnb.degeneracy.samplers.SGNHTSampler` and
:func:`mechnb.degeneracy.samplers.mala_log_acceptance` compute, and the calibration choice is
:func:`mechnb.degeneracy.calibration.recommend`.
"""

from __future__ import annotations

import math

import pytest
import torch

from mechnb.degeneracy.samplers import NoiseStreams, SGNHTSampler, mala_log_acceptance
from mechnb.exercises import llc as ex
from mechnb.exercises import registry


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MECHNB_STRICT_CHECKS", raising=False)


def test_checks_are_registered_for_notebook_06():
    ids = sorted(e.id for e in registry().values() if e.id.startswith("6."))
    assert ids == ["6.1", "6.2", "6.3"]


def test_reference_solutions_pass():
    assert ex.check_sgnht_step(ex.solution_sgnht_step)
    assert ex.check_mala_acceptance(ex.solution_mala_acceptance)
    assert ex.check_calibration_choice(ex.solution_calibration_choice)


def test_typical_mistakes_fail():
    def no_new_momentum_in_thermostat(w, p, xi, w_star, grad, noise, **kw):
        w2, p2, _ = ex.solution_sgnht_step(w, p, xi, w_star, grad, noise, **kw)
        return w2, p2, xi + (p.pow(2).sum(-1, keepdim=True) / w.shape[-1] - kw["lr"])

    def half_drift(w, p, xi, w_star, grad, noise, *, lr, nbeta, localization, diffusion):
        return ex.solution_sgnht_step(w, p, xi, w_star, 0.5 * grad, noise, lr=lr, nbeta=nbeta,
                                      localization=0.5 * localization, diffusion=diffusion)

    assert not ex.check_sgnht_step(no_new_momentum_in_thermostat)
    assert not ex.check_sgnht_step(half_drift)
    assert not ex.check_mala_acceptance(lambda *a: ex.solution_mala_acceptance(*a).clamp(max=0.5))
    assert not ex.check_mala_acceptance(lambda w, d, U, wn, dn, Un, lr: torch.exp(U - Un))  # no proposal ratio
    assert not ex.check_calibration_choice(lambda table: min(range(len(table)), key=lambda i: table[i]["std"]))


def test_reference_sgnht_step_is_the_samplers_step():
    P, C = 7, 3
    w0 = torch.randn(P, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = SGNHTSampler(w0, C, lr=1e-3, localization=2.0, nbeta=50.0,
                     noise=NoiseStreams(["w"], [P], 0, torch.device("cpu"), torch.float64), diffusion=0.05)
    s.theta += 0.1
    probe = NoiseStreams(["w"], [P], 0, torch.device("cpu"), torch.float64)
    probe.draw(C)  # the sampler drew the initial momentum from the same stream
    noise = probe.draw(C)
    grad = torch.randn(C, P, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exp = ex.solution_sgnht_step(s.theta.clone(), s.p.clone(), s.xi.clone(), w0, grad, noise, lr=1e-3, nbeta=50.0,
                                 localization=2.0, diffusion=0.05)
    s.step(grad.clone())
    for got, want in zip((s.theta, s.p, s.xi), exp):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_reference_acceptance_is_the_samplers():
    g = torch.Generator().manual_seed(2)
    w, d, wn, dn = (torch.randn(3, 4, dtype=torch.float64, generator=g) for _ in range(4))
    U, Un = torch.rand(3, dtype=torch.float64, generator=g), torch.rand(3, dtype=torch.float64, generator=g)
    torch.testing.assert_close(ex.solution_mala_acceptance(w, d, U, wn, dn, Un, 0.01),
                               mala_log_acceptance(w, d, U, wn, dn, Un, 0.01).clamp(max=0).exp())
    assert math.isfinite(float(ex.solution_mala_acceptance(w, d, U, wn, dn, Un, 0.01).sum()))
