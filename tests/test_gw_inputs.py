"""mechnb.gw fails loudly on odd inputs: huge or tiny values, complex numbers, bad seeds, dtypes.

Every case here returned a silent NaN, dropped an imaginary part or crashed with torch's message
before: the distances and CKA are now computed on inputs rescaled by a power of two (exact), complex
inputs raise ``TypeError`` naming the argument, seeds are checked, and ``layer_representations``
applies the dtype policy (real floating inputs cast to the model's dtype, other dtypes refused).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechnb import experiments, gw
from mechnb.models import MLP, TinyTransformer


def _X(seed: int = 0, n: int = 15, d: int = 4) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------------------
# overflow and underflow
# --------------------------------------------------------------------------------------
@pytest.mark.numerics
@pytest.mark.parametrize("metric", gw.METRICS)
@pytest.mark.parametrize("normalize", ["max", "mean"])
def test_distance_matrix_of_huge_and_tiny_inputs(metric: str, normalize: str) -> None:
    X = _X()
    ref = gw.distance_matrix(X, metric, normalize)
    for factor in (1e200, 1e-200, 1e300):
        C = gw.distance_matrix(X * factor, metric, normalize)
        assert bool(torch.isfinite(C).all())
        assert torch.allclose(C, ref, rtol=1e-12, atol=1e-14), factor
    # a power of two changes only the exponents: bit for bit the same matrix
    assert torch.equal(gw.distance_matrix(X * 2.0**700, metric, normalize), ref)


def test_raw_distances_of_huge_inputs_are_finite_or_refused() -> None:
    X = _X(1)
    raw = gw.distance_matrix(X, normalize=None)
    big = gw.distance_matrix(X * 1e200, normalize=None)
    assert bool(torch.isfinite(big).all()) and torch.allclose(big / 1e200, raw, rtol=1e-12)
    tiny = gw.distance_matrix(X * 1e-200, normalize=None)
    assert torch.allclose(tiny / 1e-200, raw, rtol=1e-12)
    cos = gw.distance_matrix(X * 1e200, "cosine", None)
    assert torch.allclose(cos, gw.distance_matrix(X, "cosine", None), atol=1e-14)
    with pytest.raises(ValueError, match="X: the raw sqeuclidean distances exceed float64's range"):
        gw.distance_matrix(X * 1e200, "sqeuclidean", None)
    with pytest.raises(ValueError, match="X: the raw sqeuclidean distances underflow"):
        gw.distance_matrix(X * 1e-200, "sqeuclidean", None)
    with pytest.raises(ValueError, match="X: the raw euclidean distances exceed"):
        gw.distance_matrix(X / X.abs().max() * 1.5e308, normalize=None)  # finite entries, distances beyond


@pytest.mark.numerics
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_huge_and_tiny_inputs(kernel: str, debiased: bool) -> None:
    X, Y = _X(2, n=30), _X(3, n=30, d=6)
    ref = gw.cka(X, Y, kernel, debiased)
    for fx, fy in ((1e200, 1e200), (1e200, 1.0), (1e-200, 1e150)):
        assert gw.cka(X * fx, Y * fy, kernel, debiased) == pytest.approx(ref, rel=1e-10), (fx, fy)
    assert gw.cka(X * 1e200, X * 1e200, kernel, debiased) == pytest.approx(1.0, abs=1e-12)


def test_probe_and_layer_matrices_of_huge_inputs() -> None:
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 3, (90,), generator=g)
    X = torch.nn.functional.one_hot(y, 3).double() @ torch.randn(3, 5, generator=g, dtype=torch.float64)
    X = X + 0.05 * torch.randn(90, 5, generator=g, dtype=torch.float64)
    acc = gw.probe_accuracy({"x": X}, y)
    assert gw.probe_accuracy({"x": X * 1e200}, y) == acc
    reps = {"a": X, "b": X**3, "c": torch.relu(X)}
    huge = {k: v * 1e250 for k, v in reps.items()}
    M, Mh = gw.layer_gw_matrix(reps, progress=False).matrix, gw.layer_gw_matrix(huge, progress=False).matrix
    assert np.isfinite(Mh).all() and np.allclose(Mh, M, rtol=1e-6, atol=1e-9)
    K = gw.layer_cka_matrix(huge).matrix
    assert np.isfinite(K).all() and np.allclose(K, gw.layer_cka_matrix(reps).matrix, rtol=1e-10)


# --------------------------------------------------------------------------------------
# complex inputs
# --------------------------------------------------------------------------------------
def test_complex_inputs_are_refused() -> None:
    Z = torch.randn(6, 3, dtype=torch.complex128)
    with pytest.raises(TypeError, match="X: expected real values, got complex dtype torch.complex128"):
        gw.distance_matrix(Z)
    with pytest.raises(TypeError, match="X: expected real values, got complex dtype complex128"):
        gw.distance_matrix(Z.numpy())
    with pytest.raises(TypeError, match="X: expected real values"):
        gw.cka(Z, Z)
    with pytest.raises(TypeError, match="Y: expected real values"):
        gw.cka(Z.real, Z)
    C = gw.distance_matrix(Z.real)
    with pytest.raises(TypeError, match="C1: expected real"):
        gw.gw_solve(C.numpy().astype(complex), C)
    with pytest.raises(TypeError, match="C2: expected real"):
        gw.gw_distance(C, C.to(torch.complex128))
    with pytest.raises(TypeError, match="reps\\['b'\\]: expected real"):
        gw.layer_gw_matrix({"a": Z.real, "b": Z}, progress=False)
    with pytest.raises(TypeError, match="matrix: expected a real"):
        gw.cluster_layers(np.zeros((3, 3), dtype=complex))


# --------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1.5, "a", True, None])
def test_seeds_are_validated(seed: object) -> None:
    reps = {"a": _X(5), "b": _X(6) ** 2, "c": _X(7)}
    y = torch.arange(15) % 3
    for call in (lambda: gw.layer_gw_matrix(reps, seed=seed, progress=False),
                 lambda: gw.layer_cka_matrix(reps, seed=seed),
                 lambda: gw.probe_accuracy(reps, y, seed=seed),
                 lambda: gw.subsample_reps(reps, 5, seed=seed)):
        with pytest.raises(TypeError, match="seed: expected an int seed"):
            call()
    with pytest.raises(ValueError, match="seed: expected an int seed in \\[0, 2\\*\\*64\\), got -3"):
        gw.layer_gw_matrix(reps, seed=-3, progress=False)


def test_subsample_reps_matches_the_layer_matrix_rows() -> None:
    reps = {"a": _X(8, n=40), "b": _X(9, n=40) ** 3, "c": torch.relu(_X(10, n=40))}
    sub = gw.subsample_reps(reps, 12, seed=2)
    assert list(sub) == list(reps) and all(v.shape == (12, 4) and v.dtype == torch.float64 for v in sub.values())
    assert np.array_equal(gw.layer_gw_matrix(sub, progress=False).matrix,
                          gw.layer_gw_matrix(reps, n_samples=12, seed=2, progress=False).matrix)
    assert gw.subsample_reps(reps, None)["b"].shape == (40, 4)


# --------------------------------------------------------------------------------------
# the dtype policy of layer_representations
# --------------------------------------------------------------------------------------
def test_layer_representations_casts_floating_inputs_to_the_model_dtype() -> None:
    torch.manual_seed(0)
    m = MLP([6, 8, 4])
    x = torch.randn(10, 6)
    ref = gw.layer_representations(m, x)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        reps = gw.layer_representations(m, x.to(dtype))
        assert all(v.dtype == torch.float32 for v in reps.values()), dtype
        assert torch.allclose(reps["output"], gw.layer_representations(m, x.to(dtype).float())["output"])
    assert torch.equal(gw.layer_representations(m, x.double())["h1"], ref["h1"])
    m64 = MLP([6, 8, 4]).double()
    assert gw.layer_representations(m64, x)["output"].dtype == torch.float64


def test_layer_representations_refuses_other_dtypes() -> None:
    torch.manual_seed(0)
    m = MLP([6, 8, 4])
    for x in (torch.ones(10, 6, dtype=torch.int64), torch.ones(10, 6, dtype=torch.bool)):
        with pytest.raises(TypeError, match=r"inputs: expected a real floating-point tensor .*torch\.float32.*"
                                            rf"got dtype {x.dtype}"):
            gw.layer_representations(m, x)
    with pytest.raises(TypeError, match="inputs: expected real features or integer tokens, got complex"):
        gw.layer_representations(m, torch.randn(10, 6, dtype=torch.complex64))
    with pytest.raises(ValueError, match="inputs: values up to 1e\\+200 do not fit in the model's dtype"):
        gw.layer_representations(m, torch.full((10, 6), 1e200, dtype=torch.float64))
    lm = TinyTransformer(vocab_size=11, d_model=16, n_layers=1, n_heads=2, d_mlp=32, n_ctx=8, init_seed=0)
    with pytest.raises(TypeError, match="inputs: expected integer token ids"):
        gw.layer_representations(lm, torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="inputs: expected real features or integer tokens"):
        gw.layer_representations(lm, torch.ones(4, 5, dtype=torch.complex64))


def test_layer_representations_generic_module_dtypes() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    x = torch.randn(7, 3)
    reps = gw.layer_representations(net, x.double(), layers=["2"])
    assert reps["2"].dtype == torch.float32 and torch.allclose(reps["2"], net(x))
    assert reps["input"].dtype == torch.float32
    with pytest.raises(TypeError, match="inputs: dtype torch.int64 does not fit Sequential"):
        gw.layer_representations(net, torch.ones(7, 3, dtype=torch.int64), layers=["2"])


# --------------------------------------------------------------------------------------
# train_variants
# --------------------------------------------------------------------------------------
def test_train_variants_refuses_a_bare_string() -> None:
    with pytest.raises(TypeError, match="variants: expected a sequence of variant names such as \\['scratch'\\], "
                                        "got the string 'scratch'"):
        experiments.gw.train_variants("scratch", steps=1, progress=False)
    with pytest.raises(TypeError, match="hidden: expected a sequence of layer widths"):
        experiments.gw.train_variants(["scratch"], hidden=8, steps=1, progress=False)
    with pytest.raises(TypeError, match="seed: expected an int seed"):
        experiments.gw.train_variants(["scratch"], seed=1.5, steps=1, progress=False)
