"""The paper's TMS quality bars on real SPD decompositions, for several seeds (slow).

Bushnaq, Braun & Sharkey (2025), https://arxiv.org/abs/2506.20790, toy-model experiments: a
decomposition of TMS 5-2 (and of TMS 5-2 with a fixed identity hidden layer, and TMS 40-10) has
one alive subcomponent per feature in ``linear1`` / ``linear2`` (plus one per hidden dimension in
the identity layer), each matching its feature's column of ``W`` (MMCS >= 0.99, ML2R in
[0.95, 1.05]), and a one-hot causal-importance pattern without off-diagonal entries.

The alive counts are asserted as *decisions with margin* (:func:`mechnb.spd.alive_decisions`): no
subcomponent's causal-importance maximum within a factor 2 of the 0.1 threshold, so that a
CPU's rounding cannot flip the count. ``make test`` runs them for three seeds, once, under the best kernels
(``make test NUMERICS_MARK=numerics`` reruns them under the portable ones); all seeds under every
kernel family are measured by ``benchmarks/bench_spd.py --seeds`` (``benchmarks/results/spd_seeds.json``).

TMS 40-10 is not asserted here: its fast recipe (4000 steps with a learning-rate warm-up) does not
meet the bar on every seed (``benchmarks/results/spd_seeds.json``: seeds 0 and 1 meet it under every
kernel family tried, seed 2 keeps a dead subcomponent within a factor 2 of the threshold, seeds 3
and 4 merge two features into one subcomponent), and a decomposition costs about 6 CPU-minutes.
``benchmarks/bench_spd.py --seeds --models tms-40-10`` measures it.
"""

from __future__ import annotations

import pytest

from mechnb.experiments.spd import tms_identity_hidden
from mechnb.models import TMS
from mechnb.spd import (
    SPDConfig,
    SPDResult,
    alive_decisions,
    decompose,
    identity_ci_error,
    match_columns,
    mmcs_ml2r,
    one_hot_causal_importances,
)
from mechnb.tasks import sparse_features

pytestmark = [pytest.mark.slow, pytest.mark.numerics]

#: seeds of the decomposition checked here: 3 of the 5 that ``benchmarks/bench_spd.py --seeds`` runs
#: under every kernel family (``benchmarks/results/spd_seeds.json``: 5 of 5 for both bars on each);
#: the other two would add ~2 CPU-minutes to ``make test``, which must stay under 15 minutes
TMS_5_2_SEEDS = range(3)


def sampler(n_features: int):
    return lambda b, g: sparse_features(b, n_features, 0.05, g, value_range=(0.0, 1.0))


def _zoo(name: str) -> TMS:
    from mechnb import zoo

    model, _ = zoo.load(name)
    return model


@pytest.fixture(scope="module")
def tms_5_2() -> TMS:
    return _zoo("tms-5-2")


@pytest.fixture(scope="module")
def tms_5_2_id() -> TMS:
    return tms_identity_hidden(5, 2)


def _assert_bar(r: SPDResult, expected_alive: dict[str, int]) -> None:
    dec = alive_decisions(r)
    for layer, n in expected_alive.items():
        assert dec[layer].n_alive == n and dec[layer].clear, str(dec[layer])
    # among the alive subcomponents: a dead sliver parallel to a feature can otherwise win the
    # cosine argmax by a hair and report an L2 ratio of ~0 for that feature
    mmcs, ml2r = mmcs_ml2r(r, "linear1", subset="alive")
    assert mmcs >= 0.99 and 0.95 <= ml2r <= 1.05, (mmcs, ml2r)
    ci = one_hot_causal_importances(r)["linear1"]
    err = identity_ci_error(ci[:, match_columns(ci)])
    assert err["n_offdiag_above"] == 0 and err["n_diag_below"] == 0, err


# Two classes: ``make test``'s ``--dist loadscope`` gives each its own pytest-xdist worker.
class TestTMS52:
    @pytest.mark.parametrize("seed", TMS_5_2_SEEDS)
    def test_tms_5_2_quality_bar(self, tms_5_2, seed):
        cfg = SPDConfig.for_model("tms-5-2", recipe="fast", seed=seed)
        r = decompose(tms_5_2, ["linear1", "linear2"], sampler(5), cfg, progress=False)
        _assert_bar(r, {"linear1": 5, "linear2": 5})
        mmcs, ml2r = mmcs_ml2r(r, "linear1", tms_5_2.linear1.weight)  # over every subcomponent, as the paper
        assert mmcs >= 0.99 and 0.95 <= ml2r <= 1.05, (mmcs, ml2r)


class TestTMS52IdentityHiddenLayer:
    @pytest.mark.parametrize("seed", TMS_5_2_SEEDS)
    def test_tms_5_2_identity_hidden_layer_5_plus_2_alive(self, tms_5_2_id, seed):
        """As in the paper: 5 alive subcomponents in linear1 / linear2 and 2 in the 2-D identity layer."""
        cfg = SPDConfig.for_model("tms-5-2-id", recipe="fast", seed=seed)
        r = decompose(tms_5_2_id, ["linear1", "hidden_layers.0", "linear2"], sampler(5), cfg, progress=False)
        _assert_bar(r, {"linear1": 5, "hidden_layers.0": 2, "linear2": 5})
