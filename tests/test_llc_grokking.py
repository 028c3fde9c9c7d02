"""Grokking on modular addition (experiments.llc.grokking_run): the run memorises before it
generalises, the transition is read where the accuracies say, and the LLC rises during
memorisation and falls while the model generalises (as devinterp's grokking example reports)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from mechnb import plots
from mechnb.experiments.llc import GROKKING_LLC, grokking_run, grokking_transition


@pytest.fixture(scope="module")
def run():
    return grokking_run(seed=0, layer_every=3)


def _grokking_properties(r) -> None:
    st = r.steps
    # the training pairs are fitted early, the test pairs stay at chance or below for a while
    assert r.memorised_step is not None and r.memorised_step <= 200
    i_mem = int(np.flatnonzero(st == r.memorised_step)[0])
    assert r.train_acc[i_mem] >= 0.99 and r.test_acc[i_mem] < 0.1
    # ... and much later the test pairs too: a delay of at least 500 steps
    assert r.transition_step is not None and r.transition_step >= r.memorised_step + 500
    assert r.groks
    assert r.train_acc[-1] == 1.0 and r.test_acc[-1] > 0.95
    assert r.test_loss[-1] < 0.2 * r.test_loss[i_mem]


def _llc_properties(r) -> None:
    m = r.llc.mean
    i_peak = int(np.argmax(m))
    # the LLC peaks while the model memorises (before the transition) and ends far below its peak
    assert r.memorised_step <= r.steps[i_peak] < r.transition_step
    assert m[-1] < 0.6 * m[i_peak]
    # ... and is lower after the transition than at any checkpoint of the memorisation phase
    mem = (r.steps >= r.memorised_step) & (r.steps < r.transition_step - 300)
    assert m[r.steps >= r.transition_step].max() < m[mem].min()
    # each layer's restricted LLC is below the whole network's at every checkpoint
    idx = np.searchsorted(r.steps, r.layer_steps)
    for name, t in r.layer_llc.items():
        assert np.all(t.mean < m[idx]), name
        assert t.mean[-1] < t.mean.max()


def test_grokking_run_memorises_then_generalises(run):
    _grokking_properties(run)
    assert run.steps[0] == 0 and run.steps[-1] == 1500
    assert run.train.x.shape[0] + run.test.x.shape[0] == run.task.P ** 2


def test_transition_is_the_first_checkpoint_past_the_threshold(run):
    i = int(np.flatnonzero(run.steps == run.transition_step)[0])
    assert run.test_acc[i] >= 0.9 and np.all(run.test_acc[:i] < 0.9)
    j = int(np.flatnonzero(run.steps == run.memorised_step)[0])
    assert run.train_acc[j] >= 0.99 and np.all(run.train_acc[:j] < 0.99)


def test_llc_trajectory_one_finite_value_per_checkpoint(run):
    assert run.llc is not None
    np.testing.assert_array_equal(run.llc.steps, run.steps)
    assert run.llc.mean.shape == run.steps.shape and np.all(np.isfinite(run.llc.mean))
    assert run.llc.llc_per_chain.shape == (len(run.steps), GROKKING_LLC["num_chains"])
    # the LLC's own record of L_n(w_k) is the train loss of the checkpoints
    np.testing.assert_allclose(run.llc.init_loss, run.train_loss, rtol=1e-4, atol=1e-7)
    assert sorted(run.layer_llc) == ["layers.0", "layers.1"]
    # every third checkpoint, the last, and the two landmarks
    expected = sorted({*run.steps[::3].tolist(), int(run.steps[-1]), run.memorised_step, run.transition_step})
    np.testing.assert_array_equal(run.layer_steps, expected)
    for t in run.layer_llc.values():
        np.testing.assert_array_equal(t.steps, run.layer_steps)
        assert np.all(np.isfinite(t.mean))


def test_llc_rises_while_memorising_and_falls_while_generalising(run):
    _llc_properties(run)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_grokking_and_llc_properties_hold_for_other_seeds(seed):
    r = grokking_run(seed=seed, layer_every=3)
    _grokking_properties(r)
    _llc_properties(r)


def test_grokking_transition_known_answers():
    steps = np.array([0, 10, 20, 30, 40])
    assert grokking_transition(steps, [0.1, 1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.95, 0.99]) == (10, 30)
    # a test accuracy that is high before memorisation does not count
    assert grokking_transition(steps, [0.1, 0.5, 1.0, 1.0, 1.0], [0.95, 0.0, 0.0, 0.0, 0.92]) == (20, 40)
    assert grokking_transition(steps, [0.1, 0.5, 1.0, 1.0, 1.0], [0.0] * 5) == (20, None)
    assert grokking_transition(steps, [0.1] * 5, [1.0] * 5) == (None, None)
    assert grokking_transition(steps, [0.1, 0.5, 0.8, 0.8, 0.8], [0.0] * 5, memorised=0.75, generalised=0.5) == (20, None)


def test_grokking_input_errors():
    with pytest.raises(ValueError, match="steps, train_acc, test_acc"):
        grokking_transition([0, 1], [1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="generalised"):
        grokking_transition([0], [1.0], [1.0], generalised=1.5)
    with pytest.raises(ValueError, match="hidden"):
        grokking_run(hidden=(), llc=None)
    with pytest.raises(ValueError, match="activation"):
        grokking_run(activation="tanh", llc=None)
    with pytest.raises(TypeError, match="llc"):
        grokking_run(llc="fast")
    with pytest.raises(ValueError, match="steps"):
        grokking_run(steps=0, llc=None)


def test_layer_llc_plot():
    fig = plots.llc.layer_llc_over_training([0, 1, 2], {"layers.0": [0.1, 0.5, 0.2], "layers.1": [0.0, 0.3, 0.1]},
                                            full=[1.0, 2.0, 1.5], marks=[1.5])
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [l.get_label() for l in ax.get_lines()][:3] == ["layers.0", "layers.1", "all weights"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [0.1, 0.5, 0.2])
    plt.close(fig)
    with pytest.raises(ValueError, match=r"layer_llc\['a'\]"):
        plots.llc.layer_llc_over_training([0, 1], {"a": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="layer_llc"):
        plots.llc.layer_llc_over_training([0, 1], {})


def test_summary_matches_the_arrays(run):
    s = run.summary()
    m = run.llc.mean
    assert s["llc_peak"] == pytest.approx(m.max()) and s["llc_end"] == pytest.approx(m[-1])
    assert s["llc_peak_step"] == run.steps[int(np.argmax(m))]
    assert s["llc_at_transition"] == pytest.approx(m[run.steps == run.transition_step][0])
    assert s["end_over_peak"] == pytest.approx(m[-1] / m.max())
    keep = run.steps >= run.memorised_step
    assert s["corr_llc_test_loss"] == pytest.approx(np.corrcoef(m[keep], run.test_loss[keep])[0, 1])
    assert set(s["layer_end"]) == {"layers.0", "layers.1"}
    with pytest.raises(ValueError, match="llc"):
        grokking_run(steps=20, checkpoint_every=10, llc=None).summary()
