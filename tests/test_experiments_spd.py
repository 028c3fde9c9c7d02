"""Tests for mechnb.experiments.spd: the importance-minimality sweep of notebook 02.

The sweep's widget (``SweepExplorer``) is tested with the other SPD widgets in ``tests/test_spd.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from mechnb.experiments.spd import (RESIDUAL_MLP_BAR, MatrixQuality, importance_minimality_sweep, residual_mlp_quality,
                                    residual_mlp_targets, tms_identity_hidden)
from mechnb.models import TMS, ResidualMLP
from mechnb.spd import SPDConfig, decompose
from mechnb.tasks import sparse_features

torch.set_num_threads(1)


def pentagon_tms() -> TMS:
    """A hand-built TMS 5-2 solution: features on a regular pentagon, norm 1.13, bias -0.25."""
    torch.manual_seed(0)
    m = TMS(5, 2)
    ang = torch.arange(5) * 2 * math.pi / 5
    with torch.no_grad():
        m.linear1.weight.copy_(1.13 * torch.stack([ang.cos(), ang.sin()]))
        m.linear2.bias.fill_(-0.25)
    return m.eval()


def sampler(n_features: int, p: float = 0.05):
    return lambda b, g: sparse_features(b, n_features, p, g, value_range=(0.0, 1.0))


def test_sweep_runs_every_pair():
    cfg = SPDConfig(C=4, steps=3, batch_size=32, n_eval_batches=1)
    pts = importance_minimality_sweep(pentagon_tms(), ["linear1", "linear2"], sampler(5), cfg, [1e-3, 1e-1],
                                      ps=[1.0, 2.0], progress=False)
    assert [(p.coefficient, p.p) for p in pts] == [(1e-3, 1.0), (1e-1, 1.0), (1e-3, 2.0), (1e-1, 2.0)]
    assert pts[3].result.config.importance_minimality == 1e-1 and pts[3].result.config.p == 2.0
    assert [p.p_label for p in pts] == ["1", "1", "2", "2"]
    annealed_cfg = cfg.replace(p=2.0, p_anneal_final=1.0)
    annealed = importance_minimality_sweep(pentagon_tms(), ["linear1"], sampler(5), annealed_cfg, [1e-3], progress=False)
    assert annealed[0].p == 1.0 and annealed[0].p_label == "2→1"
    with pytest.raises(ValueError, match="coefficients"):
        importance_minimality_sweep(pentagon_tms(), ["linear1"], sampler(5), cfg, [])


def test_identity_hidden_tms_is_trained_with_the_identity_fixed():
    m = tms_identity_hidden(5, 2, steps=50)
    assert torch.equal(m.hidden_layers[0].weight, torch.eye(2)) and not m.training
    x = sparse_features(256, 5, 0.05, torch.Generator().manual_seed(0))
    untrained = tms_identity_hidden(5, 2, steps=1)
    loss = lambda mod: ((mod(x) - x) ** 2).mean().item()  # noqa: E731
    assert loss(tms_identity_hidden(5, 2, steps=300)) < loss(untrained)
    state = torch.random.get_rng_state()
    tms_identity_hidden(5, 2, steps=5, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    with pytest.raises(TypeError, match="seed"):
        tms_identity_hidden(seed=1.5)


def test_matrix_quality_bar_needs_the_count_a_clear_decision_and_few_wrong_entries():
    good = MatrixQuality("layers.0.mlp_in", "identity", 100, 100, True, 99, 1, 9900, 100)
    assert good.bar and "bar met" in good.line()
    assert good.wrong_on_fraction == pytest.approx(0.01) and RESIDUAL_MLP_BAR == 0.01
    assert not MatrixQuality("l", "identity", 100, 99, True, 0, 0, 9900, 100).bar       # one subcomponent short
    assert not MatrixQuality("l", "identity", 100, 100, False, 0, 0, 9900, 100).bar     # thin alive decision
    assert not MatrixQuality("l", "identity", 100, 100, True, 100, 0, 9900, 100).bar    # 1.01 % off-diagonal
    assert not MatrixQuality("l", "dense", 50, 50, True, 0, 26, 2500, 2500).bar        # dense columns not dense
    assert "NOT" in MatrixQuality("l", "dense", 50, 50, True, 0, 26, 2500, 2500).line()


def test_residual_mlp_quality_scores_mlp_in_as_identity_and_mlp_out_as_dense():
    model = ResidualMLP(6, 16, 3, 2)
    targets = residual_mlp_targets(model)
    assert targets == ["layers.0.mlp_in", "layers.0.mlp_out", "layers.1.mlp_in", "layers.1.mlp_out"]
    cfg = SPDConfig(C=8, steps=5, batch_size=64, n_eval_batches=1)
    res = decompose(model, targets, lambda b, g: sparse_features(b, 6, 0.3, g, value_range=(-1.0, 1.0)), cfg,
                    progress=False)
    q = residual_mlp_quality(res)
    assert list(q) == targets
    assert [v.pattern for v in q.values()] == ["identity", "dense"] * 2
    assert [v.expected_alive for v in q.values()] == [6, 3, 6, 3]
    assert q["layers.0.mlp_in"].n_zero_entries == 6 * 8 - 6 and q["layers.0.mlp_out"].n_one_entries == 6 * 3
    with pytest.raises(TypeError, match="ResidualMLP"):
        residual_mlp_targets(TMS(5, 2))
    with pytest.raises(TypeError, match="SPDResult"):
        residual_mlp_quality("nope")  # type: ignore[arg-type]
