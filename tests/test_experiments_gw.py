"""Tests for mechnb.experiments.gw: the toy point clouds and training-strategy variants of notebook 03."""

from __future__ import annotations

import pytest
import torch

from mechnb import experiments, gw, zoo


def test_toy_shapes_isometries() -> None:
    s = experiments.gw.toy_shapes()
    C = {k: gw.distance_matrix(torch.from_numpy(v), normalize=None) for k, v in s.items()}
    assert gw.gw_distance(C["L"], C["L moved"]) < 1e-12
    assert gw.gw_distance(C["L"], C["L mirrored"]) < 1e-12  # GW cannot see reflections
    assert gw.gw_distance(C["L"], C["L stretched"]) > 0.05


def test_train_variants_tiny() -> None:
    vs = experiments.gw.train_variants(["scratch", "weight_decay", "l1", "finetune"], P=5, hidden=(8, 8),
                                       steps=10, pretrain_steps=10, progress=False)
    assert list(vs) == ["scratch", "weight_decay", "l1", "finetune"]
    assert vs["l1"].config.l1 > 0
    recipe = zoo.RECIPES["modadd-mlp"].train
    assert vs["weight_decay"].config.weight_decay == recipe.weight_decay and vs["scratch"].config.weight_decay == 0.01
    assert vs["scratch"].config.lr == recipe.lr
    assert vs["finetune"].pretrain is not None and vs["finetune"].pretrain["op"] == "mul"
    a, b = vs["scratch"].model.layers[0].weight, vs["weight_decay"].model.layers[0].weight
    assert a.shape == (8, 10) and not torch.allclose(a, b)
    assert 0.0 <= vs["scratch"].test_acc <= 1.0
    with pytest.raises(ValueError, match="variants"):
        experiments.gw.train_variants(["dropout"], steps=1, progress=False)


def test_train_variants_reuses_the_zoo_run_for_the_recipe() -> None:
    if "modadd-mlp" not in zoo.manifest().get("entries", {}):
        pytest.skip("zoo checkpoint modadd-mlp not built")
    v = experiments.gw.train_variants(["weight_decay"], progress=False)["weight_decay"]
    ref, info = zoo.load("modadd-mlp")
    assert all(torch.equal(a, b) for a, b in zip(v.model.state_dict().values(), ref.state_dict().values()))
    assert v.test_acc == pytest.approx(info["metrics"]["test_acc"])
