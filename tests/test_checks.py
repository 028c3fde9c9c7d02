"""The shared input checks of mechnb._checks: the dtype policy, seeds, models on the meta device, arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mechnb._checks import check_array, check_float_input, check_materialized, check_seed, model_dtype
from mechnb.models import MLP, TMS


# --------------------------------------------------------------------------------------
# dtype policy
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("src", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("dst", [torch.float16, torch.float32, torch.float64])
def test_real_floats_are_cast_to_the_target_dtype(src, dst):
    x = torch.tensor([0.5, -2.0, 3.25]).to(src)  # exact in every dtype
    y = check_float_input("x", x, dst)
    assert y.dtype == dst and torch.equal(y.double(), x.double())
    if src == dst:
        assert y is x  # nothing copied


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.uint8, torch.bool, torch.complex64,
                                   torch.complex128])
def test_integer_bool_and_complex_are_named_with_the_expected_dtype(dtype):
    with pytest.raises(TypeError, match=rf"inputs: expected a real floating-point tensor \(cast to the model's "
                                        rf"dtype torch.float64\), got dtype {dtype}"):
        check_float_input("inputs", torch.zeros(2, dtype=dtype), torch.float64)


def test_a_value_that_overflows_the_target_dtype_is_named():
    with pytest.raises(ValueError, match=r"x: values up to 1e\+200 do not fit in the model's dtype torch.float32 "
                                         r"\(largest 3.4e\+38\)"):
        check_float_input("x", torch.tensor([1.0, -1e200], dtype=torch.float64), torch.float32)
    with pytest.raises(ValueError, match="x: expected finite values, got 1 NaN"):
        check_float_input("x", torch.tensor([1e200, float("nan")], dtype=torch.float64), torch.float32)
    assert check_float_input("x", torch.tensor([3e38], dtype=torch.float64), torch.float32).isfinite().all()
    with pytest.raises(TypeError, match="x: expected a torch.Tensor, got list"):
        check_float_input("x", [1.0], torch.float32)


def test_model_dtype_follows_the_parameters_then_the_buffers():
    assert model_dtype(TMS(3, 2)) == torch.float32
    assert model_dtype(MLP([2, 3]).double()) == torch.float64

    class OnlyBuffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("b", torch.zeros(2, dtype=torch.float16))

    assert model_dtype(OnlyBuffer()) == torch.float16
    assert model_dtype(nn.Identity()) == torch.get_default_dtype()


# --------------------------------------------------------------------------------------
# models on the meta device, non-finite weights
# --------------------------------------------------------------------------------------
def test_a_model_on_the_meta_device_is_named_with_the_remedy():
    with torch.device("meta"):
        m = TMS(5, 2)
    with pytest.raises(ValueError, match=r"net: 'linear1.weight' is on the 'meta' device \(shapes only, no values\); "
                                         r"materialise the model first, e.g. model.to_empty"):
        check_materialized(m, "net")
    real = m.to_empty(device="cpu")
    assert check_materialized(real) is real


def test_check_materialized_rejects_non_modules_and_optionally_non_finite_weights():
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module, got function"):
        check_materialized(lambda x: x)
    m = MLP([2, 3, 1])
    with torch.no_grad():
        m.layers[1].bias[0] = float("nan")
    assert check_materialized(m) is m  # values exist; finiteness only on request
    with pytest.raises(ValueError, match=r"model: 'layers.1.bias' has 1 NaN and 0 inf entries"):
        check_materialized(m, finite=True)


# --------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2**63, 2**64 - 1, np.int64(7), np.uint32(3)])
def test_valid_seeds_come_back_as_ints(seed):
    out = check_seed("seed", seed)
    assert type(out) is int and out == int(seed)
    torch.Generator().manual_seed(out)  # torch takes every one of them


@pytest.mark.parametrize(("seed", "exc"), [(1.5, TypeError), (1.0, TypeError), (True, TypeError), ("1", TypeError),
                                           (None, TypeError), (-1, ValueError), (2**64, ValueError)])
def test_invalid_seeds_are_named(seed, exc):
    with pytest.raises(exc, match=r"rng_seed: expected an int seed in \[0, 2\*\*64\)"):
        check_seed("rng_seed", seed)


# --------------------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("x", [np.ones((2, 2)) * (1 + 1j), torch.ones(2, 2, dtype=torch.complex128), [[1 + 2j, 3]]])
def test_check_array_never_drops_an_imaginary_part(x):
    with pytest.raises(TypeError, match="X: expected a real-valued array, got complex dtype"):
        check_array("X", x)


def test_check_array_converts_real_inputs_and_names_the_rest():
    np.testing.assert_array_equal(check_array("X", [[1, 2], [3, 4]]), np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert check_array("X", torch.arange(3)).dtype == np.float64
    assert check_array("X", np.array([True, False])).tolist() == [1.0, 0.0]
    for bad in (["a", "b"], np.array(["1.0"]), [[1], [1, 2]]):
        with pytest.raises(TypeError, match="X: expected a numeric array"):
            check_array("X", bad)
    with torch.device("meta"):
        meta = torch.zeros(3)
    with pytest.raises(ValueError, match="X: expected a tensor with values, got one on the 'meta' device"):
        check_array("X", meta)
