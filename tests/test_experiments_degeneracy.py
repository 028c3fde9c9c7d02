"""Tests for mechnb.experiments.degeneracy: the planted networks of notebook 01 hold what they promise.

How the planted MLPs' degeneracies show in the measures (Gram nullity, Gauss-Newton nullity,
the degeneracy report) is tested with those measures in ``tests/test_degeneracy.py``.
"""

from __future__ import annotations

import pytest
import torch

from mechnb.experiments.degeneracy import planted_dln, planted_mlp

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
