"""Ground-truth tests for mechnb.gw: GW invariances and closed forms, planted layer families, CKA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechnb import gw
from mechnb.experiments.gw import toy_shapes
from mechnb.models import MLP, TinyTransformer


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthogonal(d: int, g: torch.Generator) -> torch.Tensor:
    Q, R = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R))


def _two_point(a: float) -> np.ndarray:
    return np.array([[0.0, a], [a, 0.0]])


# --------------------------------------------------------------------------------------
# GW ground truth
# --------------------------------------------------------------------------------------
@pytest.mark.numerics
@pytest.mark.parametrize("n,d", [(30, 5), (60, 3)])
def test_gw_zero_for_rotated_translated_permuted_copy(n: int, d: int) -> None:
    g = _gen(n)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = (X @ _orthogonal(d, g) + 3.0 * torch.randn(d, generator=g, dtype=torch.float64))[torch.randperm(n, generator=g)]
    C1, C2 = gw.distance_matrix(X), gw.distance_matrix(Y)
    sol = gw.gw_solve(C1, C2)  # exact solver, POT's default product start
    assert sol.value < 1e-10
    # the coupling recovers the permutation: each row puts all its mass on one point
    assert np.allclose(sol.coupling.max(1), 1.0 / n)
    # a genuinely different cloud is far away
    Z = torch.randn(n, d, generator=g, dtype=torch.float64) ** 3
    assert gw.gw_distance(C1, gw.distance_matrix(Z)) > 1e-3


@pytest.mark.numerics
def test_gw_symmetric() -> None:
    # GW(A, B) = GW(B, A): the coupling found for (A, B), transposed, is a coupling of (B, A) with the same
    # value, and the solver started there stays (two independent non-convex solves need not meet the
    # same local optimum, so their digits are not compared)
    g = _gen(1)
    A = gw.distance_matrix(torch.randn(25, 3, generator=g))
    B = gw.distance_matrix(torch.randn(18, 7, generator=g) ** 2)
    ab = gw.gw_solve(A, B)
    assert ab.value > 1e-3
    ba = gw.gw_solve(B, A, init=ab.coupling.T)
    assert ba.value == pytest.approx(ab.value, rel=1e-9)
    assert gw.gw_solve(A, B, init=ba.coupling.T).value == pytest.approx(ab.value, rel=1e-9)
    # and the best of several starts is as low from either side, up to the local optima they reach
    both = gw.gw_distance(A, B, n_init=8), gw.gw_distance(B, A, n_init=8)
    assert gw.gw_lower_bound(A, B) == pytest.approx(gw.gw_lower_bound(B, A), rel=1e-9)
    assert all(gw.gw_lower_bound(A, B) <= v + 1e-12 for v in both)


@pytest.mark.numerics
def test_gw_one_point_closed_form() -> None:
    # a one-point space must be coupled to everything: GW = sum_jl q_j q_l C2[j, l]^2
    g = _gen(2)
    C2 = gw.distance_matrix(torch.randn(12, 4, generator=g)).numpy()
    q = torch.rand(12, generator=g, dtype=torch.float64).numpy()
    q /= q.sum()
    expected = float(q @ (C2**2) @ q)
    assert gw.gw_distance(np.zeros((1, 1)), C2, q=q) == pytest.approx(expected, rel=1e-9)


@pytest.mark.numerics
@pytest.mark.parametrize("a,b", [(1.0, 0.3), (0.2, 2.5), (1.0, 1.0)])
def test_gw_two_point_closed_form(a: float, b: float) -> None:
    assert gw.gw_distance(_two_point(a), _two_point(b)) == pytest.approx((a - b) ** 2 / 2, abs=1e-12)
    assert gw.gw_distance(_two_point(a), _two_point(b), init="identity") == pytest.approx((a - b) ** 2 / 2, abs=1e-12)


@pytest.mark.numerics
def test_gw_below_product_coupling_bound() -> None:
    g = _gen(3)
    for trial in range(3):
        C1 = gw.distance_matrix(torch.randn(20, 2, generator=g)).numpy()
        C2 = gw.distance_matrix(torch.randn(15, 6, generator=g)).numpy()
        p, q = np.full(20, 1 / 20), np.full(15, 1 / 15)
        # value of the independent coupling p q^T, in closed form
        bound = p @ C1**2 @ p + q @ C2**2 @ q - 2 * (p @ C1 @ p) * (q @ C2 @ q)
        value = gw.gw_distance(C1, C2)
        assert 0 <= value <= bound + 1e-12
        assert value < 0.9 * bound  # the solver actually improves on the product coupling


@pytest.mark.numerics
def test_gw_different_widths_and_sizes() -> None:
    g = _gen(4)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    W = _orthogonal(12, g)[:3]  # (3, 12) with orthonormal rows: an isometric embedding into 12-D
    wide = X @ W
    assert gw.gw_distance(gw.distance_matrix(X), gw.distance_matrix(wide), init="identity") < 1e-12
    # different numbers of points are fine too (product start)
    value = gw.gw_distance(gw.distance_matrix(X), gw.distance_matrix(wide[:25]))
    assert 0 < value < 0.05


@pytest.mark.numerics
def test_max_normalisation_removes_scale() -> None:
    g = _gen(5)
    X = torch.randn(30, 4, generator=g)
    C1, C2 = gw.distance_matrix(X, normalize="max"), gw.distance_matrix(2 * X, normalize="max")
    assert gw.gw_distance(C1, C2) == pytest.approx(0.0, abs=1e-14)
    assert gw.gw_distance(gw.distance_matrix(X, normalize="mean"), gw.distance_matrix(3 * X, normalize="mean")) < 1e-12
    raw1, raw2 = gw.distance_matrix(X, normalize=None), gw.distance_matrix(2 * X, normalize=None)
    assert gw.gw_distance(raw1, raw2) > 0.1


@pytest.mark.numerics
def test_distance_matrix_properties() -> None:
    g = _gen(6)
    X = torch.randn(15, 5, generator=g)
    for metric in gw.METRICS:
        C = gw.distance_matrix(X, metric=metric)
        assert C.shape == (15, 15) and C.dtype == torch.float64
        assert torch.equal(C, C.T) and bool((torch.diagonal(C) == 0).all()) and bool((C >= 0).all())
        assert float(C.max()) == pytest.approx(1.0)
    C = gw.distance_matrix(X, normalize="mean")
    assert float(C.sum() / (15 * 14)) == pytest.approx(1.0)
    raw = gw.distance_matrix(X, normalize=None)
    assert float(raw[0, 1]) == pytest.approx(float((X[0] - X[1]).norm()), rel=1e-6)
    # numpy input works the same
    assert torch.allclose(gw.distance_matrix(X.numpy()), gw.distance_matrix(X))


# --------------------------------------------------------------------------------------
# Planted layer families -> three groups
# --------------------------------------------------------------------------------------
def _planted_families(n: int = 60, seed: int = 0) -> tuple[dict[str, torch.Tensor], list[int]]:
    """9 'layers' in 3 families; within a family: the same points rotated, scaled, padded and noised."""
    g = _gen(seed)
    bases = [torch.randn(n, 4, generator=g, dtype=torch.float64),
             torch.randn(n, 4, generator=g, dtype=torch.float64) ** 3,
             torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([6.0, 0.5], dtype=torch.float64)]
    reps, fam = {}, []
    for k in range(9):
        f = [0, 1, 2, 0, 1, 2, 1, 0, 2][k]  # interleaved, so groups are not contiguous
        Z = bases[f]
        width = Z.shape[1] + 3 * k
        Zp = torch.cat([Z, torch.zeros(n, width - Z.shape[1], dtype=torch.float64)], 1)
        Y = (0.5 + k) * Zp @ _orthogonal(width, g) + 0.01 * torch.randn(n, width, generator=g, dtype=torch.float64)
        reps[f"layer{k}"] = Y
        fam.append(f)
    return reps, fam


def _same_partition(a: np.ndarray, b: list[int]) -> bool:
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(b)) for j in range(len(b)))


@pytest.mark.numerics
def test_planted_families_recovered_as_three_groups() -> None:
    reps, fam = _planted_families()
    res = gw.layer_gw_matrix(reps, progress=False)
    M = res.matrix
    assert res.names == list(reps) and M.shape == (9, 9)
    assert np.array_equal(M, M.T) and np.all(np.diag(M) == 0)
    same = np.array([[fam[i] == fam[j] for j in range(9)] for i in range(9)])
    off = ~np.eye(9, dtype=bool)
    assert M[same & off].max() < 0.2 * M[~same].min()  # within-family GW << between-family GW
    labels = gw.cluster_layers(M)  # automatic cut (largest gap)
    assert len(set(labels.tolist())) == 3 and _same_partition(labels, fam)
    assert _same_partition(gw.cluster_layers(M, n_groups=3), fam)
    assert _same_partition(res.groups(threshold=0.5 * M[~same].min()), fam)
    # the POT-default settings agree with the fast defaults
    slow = gw.layer_gw_matrix(reps, init="product", tol=1e-9, dtype="float64", progress=False)
    assert _same_partition(gw.cluster_layers(slow.matrix), fam)
    # CKA sees the same three families
    ck = gw.layer_cka_matrix(reps)
    assert ck.kind == "cka" and np.allclose(np.diag(ck.matrix), 1.0)
    assert _same_partition(ck.groups(n_groups=3), fam)


@pytest.mark.numerics
def test_layer_gw_matrix_subsamples_and_validates() -> None:
    reps, _ = _planted_families(n=50)
    res = gw.layer_gw_matrix(dict(list(reps.items())[:3]), n_samples=20, seed=1, progress=False)
    assert res.n_samples == 20 and res.n_iter is not None and res.settings["seed"] == 1
    with pytest.raises(ValueError, match="rows"):
        gw.layer_gw_matrix({"a": torch.randn(10, 2), "b": torch.randn(11, 2)}, progress=False)
    with pytest.raises(ValueError, match="at least 2 layers"):
        gw.layer_gw_matrix({"a": torch.randn(10, 2)}, progress=False)
    with pytest.raises(ValueError, match="n_samples"):
        gw.layer_gw_matrix(reps, n_samples=1, progress=False)
    with pytest.raises(ValueError, match="reps\\['dead'\\].*identical.*dead or collapsed"):
        gw.layer_gw_matrix({"a": torch.randn(10, 2), "dead": torch.zeros(10, 3)}, progress=False)


@pytest.mark.numerics
def test_cluster_layers_contiguous_threshold_and_errors() -> None:
    # two blocks of consecutive layers, and a far-away layer in the middle of block 0
    D = np.array([[0, 1, 9, 9, 1],
                  [1, 0, 9, 9, 1],
                  [9, 9, 0, 1, 9],
                  [9, 9, 1, 0, 9],
                  [1, 1, 9, 9, 0]], dtype=float)
    assert gw.cluster_layers(D).tolist() == [0, 0, 1, 1, 0]
    assert gw.cluster_layers(D, contiguous=True, n_groups=3).tolist() == [0, 0, 1, 1, 2]
    assert gw.cluster_layers(D, threshold=0.5).tolist() == [0, 1, 2, 3, 4]
    assert gw.cluster_layers(D, threshold=20.0).tolist() == [0, 0, 0, 0, 0]
    assert gw.layer_groups([0, 0, 1, 1, 0], list("abcde")) == [["a", "b", "e"], ["c", "d"]]
    Z = gw.layer_linkage(D)
    assert Z.shape == (4, 4)
    with pytest.raises(ValueError, match="one of them"):
        gw.cluster_layers(D, n_groups=2, threshold=1.0)
    with pytest.raises(ValueError, match="non-negative"):
        gw.cluster_layers(-D)
    with pytest.raises(ValueError, match="square"):
        gw.cluster_layers(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        gw.cluster_layers(np.array([[0, np.nan], [np.nan, 0]]))


# --------------------------------------------------------------------------------------
# Solver failures and bad inputs
# --------------------------------------------------------------------------------------
def test_entropic_failure_raises_instead_of_silent_zero() -> None:
    C = gw.distance_matrix(torch.randn(30, 3, generator=_gen(7)))
    D = gw.distance_matrix(torch.randn(30, 3, generator=_gen(8)) ** 2)
    ok = gw.gw_solve(C, D, solver="entropic", epsilon=1e-2)
    assert ok.value > 0 and ok.marginal_error < 1e-4
    with pytest.raises(gw.GWSolverError, match="marginals.*increase epsilon"):
        gw.gw_distance(C, D, solver="entropic", epsilon=1e-5, max_iter=3)  # POT alone returns 0.0 here


def test_nonconvergence_raises() -> None:
    C = gw.distance_matrix(torch.randn(40, 3, generator=_gen(9)))
    D = gw.distance_matrix(torch.randn(40, 5, generator=_gen(10)) ** 3)
    with pytest.raises(gw.GWSolverError, match="max_iter"):
        gw.gw_distance(C, D, max_iter=1, tol=1e-12)
    with pytest.raises(gw.GWSolverError, match="max_iter"):
        gw.gw_distance(C, D, solver="entropic", epsilon=1e-2, max_iter=2, tol=1e-12)


def test_gw_bad_inputs() -> None:
    C = gw.distance_matrix(torch.randn(5, 2))
    with pytest.raises(ValueError, match="C1: expected a square"):
        gw.gw_distance(np.zeros((2, 3)), C)
    with pytest.raises(ValueError, match="C2: expected finite"):
        gw.gw_distance(C, np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="p: expected 5 weights"):
        gw.gw_distance(C, C, p=np.ones(4) / 4)
    with pytest.raises(ValueError, match="q: expected non-negative weights summing to 1"):
        gw.gw_distance(C, C, q=np.ones(5))
    with pytest.raises(ValueError, match="epsilon"):
        gw.gw_distance(C, C, solver="entropic")
    with pytest.raises(ValueError, match="epsilon"):
        gw.gw_distance(C, C, epsilon=0.1)
    with pytest.raises(ValueError, match="solver"):
        gw.gw_distance(C, C, solver="sinkhorn")
    with pytest.raises(ValueError, match="identity"):
        gw.gw_distance(C, gw.distance_matrix(torch.randn(6, 2)), init="identity")
    with pytest.raises(ValueError, match="metric"):
        gw.distance_matrix(torch.randn(4, 2), metric="manhattan")
    with pytest.raises(ValueError, match="normalize"):
        gw.distance_matrix(torch.randn(4, 2), normalize="sum")
    with pytest.raises(ValueError, match="identical"):
        gw.distance_matrix(torch.ones(4, 2))
    with pytest.raises(ValueError, match="all-zero"):
        gw.distance_matrix(torch.zeros(4, 2), metric="cosine")
    with pytest.raises(TypeError, match="X: expected a torch.Tensor"):
        gw.distance_matrix([[1.0, 2.0], [3.0, 4.0]])


# --------------------------------------------------------------------------------------
# CKA
# --------------------------------------------------------------------------------------
@pytest.mark.numerics
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_invariances(kernel: str, debiased: bool) -> None:
    g = _gen(11)
    scales = torch.diag(torch.linspace(0.2, 3, 6, dtype=torch.float64))
    X = torch.randn(80, 6, generator=g, dtype=torch.float64) @ scales
    assert gw.cka(X, X, kernel, debiased) == pytest.approx(1.0, abs=1e-10)
    Q = _orthogonal(6, g)
    assert gw.cka(X, 7.5 * X @ Q, kernel, debiased) == pytest.approx(1.0, abs=1e-9)
    A = torch.eye(6, dtype=torch.float64) + 2.0 * torch.randn(6, 6, generator=g, dtype=torch.float64)
    assert torch.linalg.matrix_rank(A) == 6
    assert gw.cka(X, X @ A, kernel, debiased) < 0.95  # not invariant to a general invertible map
    unrelated = torch.randn(80, 6, generator=g, dtype=torch.float64)
    assert gw.cka(X, unrelated, kernel, debiased) < 0.3


def test_cka_bad_inputs() -> None:
    X = torch.randn(10, 3)
    with pytest.raises(ValueError, match="Y: expected 10 rows"):
        gw.cka(X, torch.randn(9, 3))
    with pytest.raises(ValueError, match="kernel"):
        gw.cka(X, X, kernel="poly")
    with pytest.raises(ValueError, match="does not vary"):
        gw.cka(X, torch.ones(10, 3))
    with pytest.raises(ValueError, match="at least 4"):
        gw.cka(X[:3], X[:3], debiased=True)


# --------------------------------------------------------------------------------------
# Representations
# --------------------------------------------------------------------------------------
def test_layer_representations_mlp() -> None:
    torch.manual_seed(0)
    m = MLP([6, 8, 9, 4])
    x = torch.randn(12, 6)
    reps = gw.layer_representations(m, x)
    assert list(reps) == ["input", "h1", "h2", "output"]
    assert [tuple(v.shape) for v in reps.values()] == [(12, 6), (12, 8), (12, 9), (12, 4)]
    _, acts = m(x, return_activations=True)
    assert torch.allclose(reps["h2"], acts[1]) and torch.allclose(reps["output"], m(x))
    assert bool((reps["h1"] >= 0).all())  # post-ReLU
    sub = gw.layer_representations(m, x, layers=["output", "h1"])
    assert list(sub) == ["output", "h1"]
    with pytest.raises(ValueError, match="unknown names"):
        gw.layer_representations(m, x, layers=["h7"])
    with pytest.raises(ValueError, match="inputs"):
        gw.layer_representations(m, torch.randn(1, 6))


def test_layer_representations_transformer_positions() -> None:
    model = TinyTransformer(vocab_size=11, d_model=16, n_layers=2, n_heads=2, d_mlp=32, n_ctx=8, init_seed=0)
    toks = torch.randint(1, 11, (5, 8), generator=_gen(12))
    toks[0, 5:] = 0  # padded row: its last real token is at position 4
    reps = gw.layer_representations(model, toks, position="last", pad_id=0)
    assert list(reps) == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post",
                          "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post", "output"]
    logits, cache = model.run_with_cache(toks)
    assert torch.allclose(reps["output"][0], logits[0, 4]) and torch.allclose(reps["output"][1], logits[1, -1])
    emb = model.embed.W_E[toks] + model.pos_embed.W_pos[:8]
    assert torch.allclose(reps["blocks.0.hook_resid_pre"][0], emb[0, 4])
    fixed = gw.layer_representations(model, toks, position=2)
    assert torch.allclose(fixed["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_post"][:, 2])
    mean = gw.layer_representations(model, toks, layers=["blocks.0.hook_mlp_out"], position="mean", pad_id=0)
    assert torch.allclose(mean["blocks.0.hook_mlp_out"][0], cache["blocks.0.hook_mlp_out"][0, :5].mean(0), atol=1e-6)
    heads = gw.layer_representations(model, toks, layers=["blocks.0.attn.hook_result"])
    assert heads["blocks.0.attn.hook_result"].shape == (5, 2 * 16)
    with pytest.raises(ValueError, match="position"):
        gw.layer_representations(model, toks, position="first")
    with pytest.raises(ValueError, match="position: expected an index"):
        gw.layer_representations(model, toks, position=8)
    with pytest.raises(ValueError, match="unknown hook names"):
        gw.layer_representations(model, toks, layers=["blocks.5.hook_resid_post"])
    with pytest.raises(TypeError, match="integer token ids"):
        gw.layer_representations(model, toks.float())


def test_layer_representations_generic_module() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    x = torch.randn(7, 3)
    reps = gw.layer_representations(net, x, layers=["1", "2"])
    assert list(reps) == ["input", "1", "2"] and torch.allclose(reps["2"], net(x))
    with pytest.raises(ValueError, match="needs the submodule names"):
        gw.layer_representations(net, x)
    with pytest.raises(ValueError, match="unknown submodules"):
        gw.layer_representations(net, x, layers=["9"])


# --------------------------------------------------------------------------------------
# Plots and widget
# --------------------------------------------------------------------------------------
def test_plots_return_labelled_figures() -> None:
    import matplotlib.pyplot as plt

    from mechnb.plots import gw as gwplots

    s = toy_shapes()
    C1 = gw.distance_matrix(torch.from_numpy(s["L"]), normalize=None)
    C2 = gw.distance_matrix(torch.from_numpy(s["L moved"]), normalize=None)
    sol = gw.gw_solve(C1, C2)
    fig = gwplots.plot_coupling(s["L"], s["L moved"], sol.coupling, names=("L", "L moved"), value=sol.value)
    assert all(ax.get_xlabel() and ax.get_ylabel() and ax.get_title() for ax in fig.axes[:2])
    plt.close(fig)
    with pytest.raises(ValueError, match="T: expected shape"):
        gwplots.plot_coupling(s["L"], s["L moved"], sol.coupling[:3])
    reps, fam = _planted_families(n=30)
    res = gw.layer_gw_matrix(reps, progress=False)
    ck = gw.layer_cka_matrix(reps)
    labels = gw.cluster_layers(res.matrix)
    heat = gwplots.plot_layer_matrix(res, labels=labels)
    assert [t.get_text() for t in heat.axes[0].get_xticklabels()] == res.names
    for fig in (heat, gwplots.plot_dendrogram(res, threshold=0.1), gwplots.plot_dendrogram(ck),
                gwplots.plot_layer_comparison(res, ck, gw_labels=labels),
                gwplots.plot_matrix_grid({"a": res, "b": res}, labels={"a": labels})):
        ax = fig.axes[0]
        assert ax.get_xlabel() == "layer" and ax.get_ylabel() and ax.get_title()
        plt.close(fig)
    with pytest.raises(ValueError, match="labels"):
        gwplots.plot_layer_matrix(res, labels=[0, 1])
    schematic = gwplots.plot_gw_schematic(s["L"], s["L moved"], sol.coupling, i=3, k=5, names=("L", "L moved"))
    top = schematic.axes[0]
    assert top.get_xlabel() and top.get_ylabel() and "one term of GW" in top.get_title()
    # at the solver's coupling of two isometric clouds the drawn term is 0: the two distances agree
    assert float(top.get_title().rsplit("= ", 1)[1]) < 1e-20
    assert [ax.get_title() for ax in schematic.axes[1::2]][:3] == ["C1: distances in L",
                                                                    "T: the coupling (mass from x to y)",
                                                                    "C2: distances in L moved"]
    plt.close(schematic)
    with pytest.raises(ValueError, match="k: expected a second point different from i=2"):
        gwplots.plot_gw_schematic(s["L"], s["L moved"], sol.coupling, i=2, k=2)
    with pytest.raises(ValueError, match="i: expected a point index in \\[0, 7\\), got 9"):
        gwplots.plot_gw_schematic(s["L"], s["L moved"], sol.coupling, i=9)
    with pytest.raises(ValueError, match="T: expected a non-negative coupling"):
        gwplots.plot_gw_schematic(s["L"], s["L moved"], -sol.coupling)
    assert gwplots.short_name("blocks.1.hook_resid_mid") == "1.resid_mid"
    assert gwplots.short_name("blocks.0.attn.hook_result") == "0.attn.result"


def test_gw_explorer_widget_updates_on_value_changes() -> None:
    import matplotlib.pyplot as plt

    from mechnb.widgets.gw import GWExplorer

    torch.manual_seed(0)
    mlp_a, mlp_b = MLP([5, 16, 16, 16, 3]), MLP([5, 12, 12, 3])
    x = torch.randn(60, 5, generator=_gen(13))
    ex = GWExplorer({"a": (mlp_a, x), "b": (mlp_b, x, {"include_input": False})}, n_samples=40)
    assert ex.result is not None and ex.result.names == ["input", "h1", "h2", "h3", "output"]
    assert ex.result.n_samples == 40 and "groups" in ex.groups.value and ex.figure is not None
    before, fig_before = ex.result.matrix.copy(), ex.figure
    ex.metric.value = "cosine"
    assert not np.allclose(before, ex.result.matrix) and ex.figure is not fig_before
    ex.n_samples.value = 30
    assert ex.result.n_samples == 30
    ex.cut.value = 0.01  # a very low cut: every layer on its own
    assert ex.labels is not None and len(set(ex.labels.tolist())) == 5 and "5 groups" in ex.groups.value
    ex.cut.value = 1.0  # at the top merge: one group
    assert len(set(ex.labels.tolist())) == 1
    assert ex.epsilon.disabled
    ex.solver.value = "entropic"
    assert not ex.epsilon.disabled and ex.result is not None and ex.result.settings["solver"] == "entropic"
    ex.epsilon.value = 1e-4  # too small: reported, not raised, and never a silent 0
    assert ex.result is None and "solve failed" in ex.status.value and "epsilon" in ex.status.value
    ex.solver.value = "exact"
    ex.model.value = "b"
    assert ex.result is not None and ex.result.names == ["h1", "h2", "output"]
    plt.close("all")


@pytest.mark.numerics
def test_probe_accuracy_finds_linearly_decodable_layer() -> None:
    g = _gen(14)
    y = torch.randint(0, 5, (300,), generator=g)
    signal = torch.nn.functional.one_hot(y, 5).double() @ torch.randn(5, 12, generator=g, dtype=torch.float64)
    signal = signal + 0.05 * torch.randn(300, 12, generator=g, dtype=torch.float64)
    xor_like = torch.randn(300, 12, generator=g, dtype=torch.float64)
    acc = gw.probe_accuracy({"signal": signal, "noise": xor_like}, y)
    assert acc["signal"] == 1.0 and acc["noise"] < 0.4
    with pytest.raises(ValueError, match="y: expected shape"):
        gw.probe_accuracy({"signal": signal}, y[:10])
    with pytest.raises(TypeError, match="integer"):
        gw.probe_accuracy({"signal": signal}, y.float())


def test_lp_iteration_cap_raises() -> None:
    C = gw.distance_matrix(torch.randn(40, 3, generator=_gen(15)))
    D = gw.distance_matrix(torch.randn(40, 5, generator=_gen(16)) ** 3)
    with pytest.raises(gw.GWSolverError, match="max_iter_lp"):
        gw.gw_distance(C, D, max_iter_lp=3)
