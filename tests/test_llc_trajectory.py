"""LLC over training: checkpoints from train, llc_trajectory, calibration, essential dynamics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mechnb.degeneracy import estimate_llc, sse_loss
from mechnb.degeneracy.calibration import calibrate_llc
from mechnb.degeneracy.dynamics import essential_dynamics, turning_points
from mechnb.degeneracy.trajectory import llc_trajectory
from mechnb.experiments.degeneracy import planted_dln
from mechnb.models import MLP
from mechnb.train import TrainConfig, train

torch.set_num_threads(1)


def _regression(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.randn(3, 2, generator=g)
    return x, y


def test_train_keeps_checkpoints_every_k_steps():
    x, y = _regression()
    m = MLP([3, 2], activation="linear", bias=False)
    w_init = m.layers[0].weight.detach().clone()
    res = train(m, lambda s, g: (x, y), lambda mm, b: sse_loss(mm(b[0]), b[1]), TrainConfig(steps=25, lr=1e-2),
                progress=False, checkpoint_every=10)
    assert [c["step"] for c in res.checkpoints] == [0, 10, 20, 25]
    assert torch.equal(res.checkpoints[0]["state"]["layers.0.weight"], w_init)
    assert torch.equal(res.checkpoints[-1]["state"]["layers.0.weight"], m.layers[0].weight.detach())
    assert not torch.equal(res.checkpoints[1]["state"]["layers.0.weight"], w_init)
    assert train(m, lambda s, g: (x, y), lambda mm, b: sse_loss(mm(b[0]), b[1]), TrainConfig(steps=3),
                 progress=False).checkpoints == []
    with pytest.raises(ValueError, match="checkpoint_every: expected None or a positive int, got 0"):
        train(m, lambda s, g: (x, y), lambda mm, b: sse_loss(mm(b[0]), b[1]), TrainConfig(steps=3), progress=False,
              checkpoint_every=0)


KW = dict(num_chains=3, num_draws=40, nbeta=100.0, lr=1e-4, localization=10.0, seed=2, progress=False)


def test_trajectory_of_one_checkpoint_is_estimate_llc_and_chunks_are_separate_runs():
    m1, x, y = planted_dln((3, 4, 2), n_samples=50, seed=0)
    m2, _, _ = planted_dln((3, 4, 2), n_samples=50, seed=1)
    one = llc_trajectory([m1], sse_loss, (x, y), **KW)
    ref = estimate_llc(m1, sse_loss, (x, y), **KW)
    np.testing.assert_array_equal(one.loss_trace[0], ref.loss_trace)
    assert one.mean[0] == ref.mean
    # one checkpoint per batch (cap = C chains): each checkpoint is exactly its own estimate_llc run
    chunked = llc_trajectory([m1.state_dict(), m2.state_dict()], sse_loss, (x, y), model=m1, max_batched_chains=3, **KW)
    assert chunked.config["batches"] == 2
    ref2 = estimate_llc(m2, sse_loss, (x, y), **KW)
    np.testing.assert_allclose(chunked.mean, [ref.mean, ref2.mean], rtol=1e-12)
    np.testing.assert_allclose(chunked.init_loss, [ref.init_loss, ref2.init_loss], rtol=1e-12)
    batched = llc_trajectory([m1, m2], sse_loss, (x, y), **KW)  # both in one batch: 6 chains
    assert batched.config["batches"] == 1 and batched.llc_per_chain.shape == (2, 3)
    with pytest.raises(ValueError, match="checkpoints: expected a non-empty"):
        llc_trajectory([], sse_loss, (x, y), **KW)
    with pytest.raises(ValueError, match="model: expected the architecture"):
        llc_trajectory([m1.state_dict()], sse_loss, (x, y), **KW)
    with pytest.raises(ValueError, match=r"checkpoints\[0\]: parameter 'layers.0.weight' has shape"):
        llc_trajectory([{"layers.0.weight": torch.zeros(2, 2), "layers.1.weight": torch.zeros(2, 4)}], sse_loss,
                       (x, y), model=m1, **KW)


@pytest.mark.numerics
def test_stagewise_deep_linear_network_llc_steps_up_from_plateau_to_plateau():
    from mechnb.experiments.llc import STAGEWISE_LLC, plateaus, stagewise_dln

    run = stagewise_dln()
    pl = plateaus(run.ranks)
    assert [r for r, _ in pl] == [0, 1, 2, 3]  # every teacher direction learned, one at a time
    losses = [run.result.losses[int(run.steps[idx].mean())] for r, idx in pl]
    assert all(a > b for a, b in zip(losses, losses[1:]))
    sel = [idx for r, idx in pl if r > 0]
    ck = [run.result.checkpoints[i] for idx in sel for i in idx]
    tr = llc_trajectory(ck, sse_loss, (run.x, run.y), model=run.model, **STAGEWISE_LLC)
    means, off = [], 0
    for idx in sel:
        means.append(float(tr.mean[off : off + len(idx)].mean()))
        off += len(idx)
    assert means[1] - means[0] > 1.0 and means[2] - means[1] > 1.0, means  # a step at every new direction
    aoyagi = [run.aoyagi[idx[0]] for idx in sel]
    assert all(m < a for m, a in zip(means, aoyagi))  # below Aoyagi: localised at saddles / finite chains


def test_calibration_grid_flags_a_too_large_step_and_recommends_a_clean_setting():
    m, x, y = planted_dln((4, 3), n_samples=100)  # regular: λ = 6
    cal = calibrate_llc(m, sse_loss, (x, y), lrs=[1e-4, 1e-3], nbetas=[500.0], localizations=[1.0], num_chains=4,
                        num_draws=300, num_burnin_steps=300, seed=0)
    assert len(cal.table) == 2 and cal.grid("mean").shape == (1, 2)
    small, big = cal.table
    assert small["ok"] and small["mean"] == pytest.approx(6.0, rel=0.15)
    assert not big["ok"] and big["acceptance"] < 0.8
    assert cal.recommended == 0 and cal.best["lr"] == 1e-4
    with pytest.raises(TypeError, match="lr: set the grid with lrs="):
        calibrate_llc(m, sse_loss, (x, y), lr=1e-3)
    with pytest.raises(ValueError, match="lrs"):
        calibrate_llc(m, sse_loss, (x, y), lrs=[])


def test_essential_dynamics_finds_the_corner_of_a_piecewise_straight_path():
    m = MLP([2, 2], activation="linear", bias=False)
    a, b, c = torch.zeros(2, 2), torch.tensor([[1.0, 0], [0, 0]]), torch.tensor([[1.0, 0], [0, 1.0]])
    path = [a + (b - a) * t for t in np.linspace(0, 1, 6)] + [b + (c - b) * t for t in np.linspace(0, 1, 6)[1:]]
    states = [{"layers.0.weight": w} for w in path]
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    ed = essential_dynamics(states, x, model=m, n_components=2)
    assert ed.projections.shape == (11, 2) and ed.explained.sum() == pytest.approx(1.0)
    assert ed.turning == [5]  # the corner at b
    again = essential_dynamics(states, x, model=m, n_components=2)
    np.testing.assert_array_equal(again.projections, ed.projections)  # deterministic signs
    for comp in ed.components:
        assert comp[np.abs(comp).argmax()] > 0
    straight = essential_dynamics(states[:6], x, model=m, n_components=2)
    assert straight.explained[0] == pytest.approx(1.0) and straight.turning == []


def test_turning_points_ignore_small_wiggles():
    z = np.array([0, 1, 2, 3, 2.98, 3.5, 4, 3, 2, 1.0])[:, None]
    assert turning_points(z, 0.05) == [6]


def test_results_round_trip_through_io(tmp_path):
    from mechnb import io

    m, x, y = planted_dln((3, 4, 2), n_samples=30)
    res = estimate_llc(m, sse_loss, (x, y), **KW)
    tr = llc_trajectory([m, m], sse_loss, (x, y), **KW)
    for obj, name in ((res, "res"), (tr, "traj")):
        io.save(obj, tmp_path / name)
        back = io.load(tmp_path / name)
        np.testing.assert_array_equal(back.llc_per_chain, obj.llc_per_chain)
        assert back.config == obj.config
    assert io.load(tmp_path / "res").acceptance.shape == (3,)
