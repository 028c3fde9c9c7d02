"""Tests for mechnb.experiments.degeneracy: the planted networks of notebook 01 hold what they promise.

How the planted MLPs' degeneracies show in the measures (Gram nullity, Gauss-Newton nullity,
the degeneracy report) is tested with those measures in ``tests/test_degeneracy.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechnb.degeneracy import LLCResult
from mechnb.experiments.degeneracy import llc_shift, planted_dln, planted_mlp, quartic_toy_expected, quartic_toy_llc

torch.set_num_threads(1)


def make_dln(widths, rank=None, n=100, seed=0):
    return planted_dln(widths, rank=rank, n_samples=n, seed=seed)


def test_planted_dln_is_well_conditioned_and_noiseless():
    m, x, y = make_dln((5, 4, 3, 6))
    prod = m.layers[2].weight @ m.layers[1].weight @ m.layers[0].weight
    torch.testing.assert_close(torch.linalg.svdvals(prod.detach())[:3], torch.ones(3))
    torch.testing.assert_close(m(x), y)
    m2, _, _ = make_dln((6, 4, 4, 5), rank=2)
    for layer in m2.layers:
        assert int(torch.linalg.matrix_rank(layer.weight.detach())) == 2
    with pytest.raises(ValueError, match="rank"):
        planted_dln((3, 2), rank=3)


def test_planted_mlp_rejects_a_synchronised_group_wider_than_the_output():
    with pytest.raises(ValueError, match="synchronised"):
        planted_mlp(d_out=2, synchronised=3)


def _within(seconds, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, failing (not hanging) if it runs longer than ``seconds``."""
    import signal

    def alarm(*_):
        raise TimeoutError(f"{fn.__name__} did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_planted_mlp_says_what_is_impossible_instead_of_looping():
    # two inputs admit no firing pattern beyond the x_0 split: three generic neurons cannot exist
    with pytest.raises(ValueError, match=r"n_samples: 2 inputs admit at most 0 firing patterns .* d_hidden \+ unread = 3"):
        _within(20, planted_mlp, d_in=2, d_hidden=3, n_samples=2)
    with pytest.raises(ValueError, match=r"d_hidden \+ unread = 2"):
        _within(20, planted_mlp, d_in=2, d_hidden=1, unread=1, n_samples=2)


def test_planted_mlp_gives_up_after_a_bounded_number_of_draws():
    # 8 inputs count 2**7 - 2 = 126 patterns, but lines in the plane through 0.8 x a data point realise far fewer
    with pytest.raises(ValueError, match=r"d_hidden, unread: found only \d+ of the 40 generic neurons .* in 10000 draws"):
        _within(60, planted_mlp, d_in=2, d_hidden=40, n_samples=8)


def test_planted_mlp_still_plants_on_few_inputs_when_possible():
    m, x = planted_mlp(d_in=2, d_hidden=3, n_samples=4, seed=0)
    on = (x @ m.layers[0].weight.T + m.layers[0].bias > 0)
    pats = {tuple(c.tolist()) for c in on.T} | {tuple((~c).tolist()) for c in on.T}
    assert len(pats) == 6  # three distinct patterns, none equal to another's complement
    assert all(0 < int(c.sum()) < 4 for c in on.T)


@pytest.mark.parametrize(("seed", "exc"), [(1.5, TypeError), (True, TypeError), ("0", TypeError), (-1, ValueError)])
def test_planted_networks_reject_a_seed_that_is_not_an_int(seed, exc):
    with pytest.raises(exc, match="seed: expected an int seed"):
        planted_mlp(seed=seed)
    with pytest.raises(exc, match="seed: expected an int seed"):
        planted_dln((3, 2), seed=seed)


def test_planted_mlp_is_unchanged_for_valid_seeds():
    # the bound on redraws changes nothing for networks that could be built before: fixed reference values
    m, x = planted_mlp(seed=0)
    assert m.sizes == [4, 6, 3] and x.shape == (256, 4)
    # recorded with the unbounded loop before the bound was added (bit-identical there)
    assert m.layers[0].weight.sum().item() == pytest.approx(0.8987045288085938, rel=1e-6)
    assert m.layers[1].weight.sum().item() == pytest.approx(1.4208133220672607, rel=1e-6)
    assert x.sum().item() == pytest.approx(-24.71463966369629, rel=1e-6)
    a, xa = planted_mlp(seed=np.int64(3))
    b, xb = planted_mlp(seed=3)
    assert torch.equal(xa, xb) and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [(dict(chains=0), ValueError, "chains"), (dict(lr=float("nan")), ValueError, "lr"),
     (dict(seed=0.5), TypeError, "seed"), (dict(step_fn=None), TypeError, "step_fn"),
     (dict(steps=10, burn_in=10), ValueError, "steps")],
)
def test_quartic_toy_llc_names_bad_settings(kwargs, exc, needle):
    args = dict(step_fn=lambda w, *a, **k: w, estimate_fn=lambda *a: 0.0, steps=20, burn_in=5, chains=2)
    with pytest.raises(exc, match=needle):
        quartic_toy_llc(**{**args, **kwargs})


def test_quartic_toy_expected_is_three_quarters_without_localisation_and_matches_a_quadrature_grid():
    assert quartic_toy_expected(1000.0, 0.0) == pytest.approx(0.75, abs=1e-9)
    assert quartic_toy_expected(3.0, 0.0) == pytest.approx(0.75, abs=1e-9)  # exact at any nβ without γ
    nbeta, gamma = 1000.0, 1.0
    w = np.linspace(-3.0, 3.0, 600_001)
    grid = 0.0
    for L in (w**2, w**4):  # the density factorises; E[nβ L] one coordinate at a time on a fine grid
        p = np.exp(-nbeta * L - gamma / 2 * w**2)
        grid += float((nbeta * L * p).sum() / p.sum())
    assert quartic_toy_expected(nbeta, gamma) == pytest.approx(grid, rel=1e-7)
    assert quartic_toy_expected(nbeta, gamma) < 0.75 - 2e-3  # γ = 1 pulls the target 0.4% below 3/4


def test_quartic_toy_expected_names_bad_settings():
    with pytest.raises(ValueError, match="nbeta"):
        quartic_toy_expected(0.0)
    with pytest.raises(ValueError, match="localization"):
        quartic_toy_expected(10.0, -1.0)


def _llc(per_chain):
    per_chain = np.asarray(per_chain, dtype=float)
    return LLCResult(mean=float(per_chain.mean()), std=float(per_chain.std(ddof=1)) if per_chain.size > 1 else 0.0,
                     llc_per_chain=per_chain, loss_trace=np.zeros((per_chain.size, 4)), init_loss=0.0, nbeta=1.0)


def test_llc_shift_is_the_move_of_the_mean_in_standard_errors():
    a, b = _llc([8.0, 10.0, 9.0, 9.0]), _llc([11.0, 12.0, 10.0, 11.0])
    se2 = a.std**2 / 4 + b.std**2 / 4  # std 0.8165 each: se² = 2/3 / 4 twice
    got = llc_shift(a, b)
    assert got["shift"] == pytest.approx(2.0) and got["z"] == pytest.approx(2.0 / np.sqrt(se2))
    assert llc_shift(b, a)["z"] == pytest.approx(-got["z"])
    assert llc_shift(_llc([1.0]), _llc([2.0])) == {"shift": 1.0, "z": float("inf")}
    assert llc_shift(_llc([1.0]), _llc([1.0])) == {"shift": 0.0, "z": 0.0}
    with pytest.raises(TypeError, match="longer"):
        llc_shift(a, 3.0)
