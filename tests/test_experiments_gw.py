"""Tests for mechnb.experiments.gw: the toy point clouds and training-strategy variants of notebook 03."""

from __future__ import annotations

import numpy as np
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


def test_train_variants_leaves_the_global_rng_alone_and_follows_the_recipe() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = experiments.gw.train_variants(["scratch", "l1"], P=5, hidden=(8,), steps=3, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # no reseeding of the caller's RNG
    b = experiments.gw.train_variants(["scratch"], P=5, hidden=(8,), steps=3, progress=False)
    # same seed, same starting weights: bit-identical runs
    assert all(torch.equal(x, y) for x, y in zip(a["scratch"].model.state_dict().values(),
                                                 b["scratch"].model.state_dict().values()))
    recipe = zoo.RECIPES["modadd-mlp"]
    m = a["scratch"].model
    assert m.sizes == [10, 8, 5] and isinstance(recipe, zoo.ModularMLPRecipe)
    assert a["l1"].config.l1 == pytest.approx(2e-6) and a["scratch"].config.schedule == recipe.train.schedule


def _block_matrix(within: float, between: float, drift: float = 0.0) -> gw.LayerMatrix:
    L = 6
    M = np.zeros((L, L))
    for i in range(L):
        for j in range(L):
            if i != j:
                M[i, j] = (within if (i < 3) == (j < 3) else between) + drift * abs(i - j)
    return gw.LayerMatrix([f"l{i}" for i in range(L)], M, "gw", 10)


def test_variant_structure_blocks_and_drift() -> None:
    blocks = experiments.gw.variant_structure(_block_matrix(0.01, 0.2))
    assert blocks.groups == [["l0", "l1", "l2"], ["l3", "l4", "l5"]]
    assert blocks.within_max == pytest.approx(0.01) and blocks.between_min == pytest.approx(0.2)
    assert blocks.contrast == pytest.approx(20.0)
    chain = experiments.gw.variant_structure(_block_matrix(0.0, 0.0, drift=0.05))
    assert chain.drift == pytest.approx(1.0)  # GW grows exactly with the distance in depth
    forced = experiments.gw.variant_structure(_block_matrix(0.0, 0.0, drift=0.05), labels=[0, 0, 0, 1, 1, 1])
    assert forced.contrast < 1  # a cut through a drift: cross pairs closer than some pairs inside
    assert "block contrast" in forced.describe() and "{l0 … l2} | {l3 … l5}" in forced.describe()
    with pytest.raises(TypeError, match="matrix: expected a gw.LayerMatrix"):
        experiments.gw.variant_structure(np.zeros((3, 3)))


@pytest.mark.numerics
def test_compare_starts_on_planted_layers() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 3, generator=g, dtype=torch.float64)
    reps = {f"l{k}": torch.cat([base + 0.05 * k * torch.randn(40, 3, generator=g, dtype=torch.float64),
                                torch.zeros(40, k, dtype=torch.float64)], 1) for k in range(4)}
    cmp = experiments.gw.compare_starts(reps, n_samples=30)
    iu = np.triu_indices(4, 1)
    # the identity coupling is one coupling: GW from its start can only be at most its cost
    assert np.all(cmp.identity.matrix[iu] <= cmp.aligned[iu] * (1 + 1e-4) + 1e-12)  # float32 solves
    assert np.all(cmp.identity_over_aligned <= 1 + 1e-4) and cmp.mean_iterations >= 1
    assert cmp.n_pairs == 6 and cmp.n_product_lower + cmp.n_product_higher <= 6
    assert cmp.identity.n_samples == 30 and set(cmp.groups) == {"aligned", "identity", "product"}
    lines = cmp.summary()
    assert len(lines) == 4 and "6 pairs of layers, n = 30 inputs." == lines[0]


def test_small_weight_fraction_counts_the_hidden_matrices() -> None:
    from mechnb.models import MLP

    torch.manual_seed(0)
    m = MLP([4, 3, 3, 2])
    with torch.no_grad():
        m.layers[1].weight.copy_(torch.tensor([[1.0, 0.0, 0.005], [0.2, 0.0, 0.0], [0.0, 0.5, 0.009]]))
    # hidden-to-hidden: only layers[1] (3 x 3); 6 of its 9 entries are below 1% of its largest |w| = 1
    assert experiments.gw.small_weight_fraction(m) == pytest.approx(6 / 9)
    assert experiments.gw.small_weight_fraction(m, rel=0.3) == pytest.approx(7 / 9)
    assert np.isnan(experiments.gw.small_weight_fraction(MLP([4, 2])))
    with pytest.raises(TypeError, match="model: expected an MLP"):
        experiments.gw.small_weight_fraction(torch.nn.Linear(2, 2))
