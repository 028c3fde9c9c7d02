"""mechnb.spd with bad and odd inputs: every case fails loudly, names the caller's argument, or is defined.

Empty batches and a zero padding multiple in ``compress_zero_rows``; NaN into the hard sigmoids;
negative importances into the minimality loss; the dtype policy of ``decompose``'s
``sample_inputs`` and of the result's ``x`` / ``masks`` (real floating inputs cast to the model's
dtype, integer / complex refused with the expected dtype named); models on the ``meta`` device;
model errors re-raised under the caller's argument name; a non-finite loss that names its cause.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mechnb._checks import check_tensor
from mechnb.models import TMS
from mechnb.spd import (
    SPDConfig,
    compress_zero_rows,
    decompose,
    importance_minimality_loss,
    lower_leaky_backward_hard_sigmoid,
    lower_leaky_hard_sigmoid,
    upper_leaky_hard_sigmoid,
)
from mechnb.tasks import sparse_features

torch.set_num_threads(1)


def pentagon_tms() -> TMS:
    torch.manual_seed(0)
    m = TMS(5, 2)
    ang = torch.arange(5) * 2 * math.pi / 5
    with torch.no_grad():
        m.linear1.weight.copy_(1.13 * torch.stack([ang.cos(), ang.sin()]))
        m.linear2.bias.fill_(-0.25)
    return m.eval()


def sampler(n_features: int = 5, dtype: torch.dtype = torch.float32, scale: float = 1.0):
    def sample(b: int, g: torch.Generator) -> torch.Tensor:
        return (scale * sparse_features(b, n_features, 0.05, g, value_range=(0.0, 1.0))).to(dtype)

    return sample


def cfg(**kw) -> SPDConfig:
    fields = dict(C=4, steps=3, batch_size=32, n_eval_batches=1, log_every=1)
    fields.update(kw)
    return SPDConfig(**fields)


@pytest.fixture(scope="module")
def result():
    return decompose(pentagon_tms(), ["linear1", "linear2"], sampler(), cfg(steps=5), progress=False)


# --------------------------------------------------------------------------------------
# compress_zero_rows
# --------------------------------------------------------------------------------------
def test_compress_zero_rows_rejects_an_empty_batch_and_a_bad_multiple():
    with pytest.raises(ValueError, match=r"x: expected a non-empty batch.*\(0, 3\)"):
        compress_zero_rows(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"multiple: expected an int >= 1, got 0"):
        compress_zero_rows(torch.zeros(4, 3), multiple=0)
    with pytest.raises(TypeError, match="multiple"):
        compress_zero_rows(torch.zeros(4, 3), multiple=1.5)
    with pytest.raises(TypeError, match="x"):
        compress_zero_rows([[0.0, 1.0]])
    # a one-row batch and an all-zero batch are fine: one row of weight 1
    kept, w = compress_zero_rows(torch.zeros(5, 3), multiple=1)
    assert kept.shape == (1, 3) and w.tolist() == [1.0]
    kept, w = compress_zero_rows(torch.ones(1, 3))
    assert kept.shape == (1, 3) and w.tolist() == [1.0]


# --------------------------------------------------------------------------------------
# hard sigmoids and importance minimality
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [lower_leaky_hard_sigmoid, upper_leaky_hard_sigmoid, lower_leaky_backward_hard_sigmoid])
def test_hard_sigmoids_reject_nan_inf_and_bad_alpha(fn):
    with pytest.raises(ValueError, match=r"x: expected finite values, got 1 NaN"):
        fn(torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match=r"x: expected finite values, got 0 NaN and 1 inf"):
        fn(torch.tensor([float("inf")]))
    with pytest.raises(ValueError, match="alpha"):
        fn(torch.zeros(3), alpha=-0.1)
    with pytest.raises(TypeError, match="x"):
        fn(torch.zeros(3, dtype=torch.int64))
    assert torch.isfinite(fn(torch.linspace(-5, 5, 11))).all()


def test_importance_minimality_of_negative_importances_is_defined():
    """The paper's loss is sum |g|^p: a negative g (e.g. a lower-leaky one) is charged |g|^p, not NaN."""
    loss = importance_minimality_loss(-torch.ones(2, 1, 3), 0.5)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(3.0, rel=1e-6)
    g = torch.tensor([[[-0.25, 0.25]]])
    assert importance_minimality_loss(g, 1.0).item() == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ValueError, match="p"):
        importance_minimality_loss(torch.ones(2, 1, 3), 0.0)
    with pytest.raises(ValueError, match="ci_upper"):
        importance_minimality_loss(torch.ones(2, 3), 1.0)
    with pytest.raises(ValueError, match="ci_upper.*NaN"):
        importance_minimality_loss(torch.full((2, 1, 3), float("nan")), 1.0)
    with pytest.raises(ValueError, match="weights"):
        importance_minimality_loss(torch.ones(2, 1, 3), 1.0, torch.ones(3))


# --------------------------------------------------------------------------------------
# dtype policy
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_decompose_casts_real_floating_sample_inputs_to_the_model_dtype(dtype):
    plain = nn.Sequential(nn.Linear(5, 3, bias=False), nn.ReLU(), nn.Linear(3, 5))  # casts nothing itself
    r = decompose(plain, ["0", "2"], sampler(dtype=dtype), cfg(), progress=False)
    assert r.U["0"].dtype == torch.float32 and all(math.isfinite(v) for v in r.history["total"])
    r = decompose(pentagon_tms(), ["linear1", "linear2"], sampler(dtype=dtype), cfg(), progress=False)
    assert r.U["linear1"].dtype == torch.float32
    assert all(math.isfinite(v) for v in r.history["total"])


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_decompose_names_sample_inputs_for_an_integer_batch_into_a_float_model(dtype):
    with pytest.raises(TypeError, match=rf"^sample_inputs: .*{dtype}.*torch.float32"):
        decompose(pentagon_tms(), ["linear1"], sampler(dtype=dtype), cfg(), progress=False)


def test_decompose_rejects_complex_sample_inputs():
    with pytest.raises(TypeError, match=r"^sample_inputs: expected a real tensor.*complex64"):
        decompose(pentagon_tms(), ["linear1"], sampler(dtype=torch.complex64), cfg(), progress=False)


def test_result_methods_cast_floating_x_and_masks_and_name_x(result):
    x32 = sparse_features(16, 5, 0.3, torch.Generator().manual_seed(0))
    m32 = torch.rand(16, 4, generator=torch.Generator().manual_seed(1))
    ref = result.masked_forward(x32, {"linear1": m32})
    out = result.masked_forward(x32.double(), {"linear1": m32.double()})
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=1e-6)
    ci = result.causal_importances(x32.half())
    assert ci["linear1"].dtype == torch.float32
    with pytest.raises(TypeError, match=r"^x: .*torch.int64"):
        result.masked_forward(x32.long())
    with pytest.raises(TypeError, match=r"^x: expected a real tensor.*complex"):
        result.causal_importances(x32.to(torch.complex64))
    with pytest.raises(TypeError, match=r"masks\['linear1'\].*torch.int64"):
        result.masked_forward(x32, {"linear1": torch.ones(16, 4, dtype=torch.int64)})


# --------------------------------------------------------------------------------------
# meta device, the caller's argument names, the cause of a non-finite loss
# --------------------------------------------------------------------------------------
def test_decompose_refuses_a_model_on_the_meta_device():
    with torch.device("meta"):
        model = TMS(5, 2)
    with pytest.raises(ValueError, match=r"model: .*'meta' device"):
        decompose(model, ["linear1"], sampler(), cfg(), progress=False)


class _Named(nn.Module):
    """A model whose forward argument is called ``inputs`` and that validates it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 3, bias=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        check_tensor("inputs", inputs, shape=(None, 5), dims="(batch, 5)")
        return self.lin(inputs)


def test_model_errors_name_the_callers_argument():
    with pytest.raises(ValueError, match=r"^sample_inputs: the model rejects .*\(16, 7\).*n_features"):
        decompose(pentagon_tms(), ["linear1"], lambda b, g: torch.rand(b, 7, generator=g), cfg(batch_size=16),
                  progress=False)
    r = decompose(_Named(), ["lin"], sampler(), cfg(), progress=False)
    with pytest.raises(ValueError, match=r"^x: the model rejects this input of shape \(2, 7\).*inputs: expected"):
        r.masked_forward(torch.rand(2, 7))
    with pytest.raises(ValueError, match=r"^x: "):
        r.causal_importances(torch.rand(2, 7))


def test_huge_inputs_name_the_data_not_the_learning_rate():
    with pytest.raises(FloatingPointError) as info:
        decompose(pentagon_tms(), ["linear1", "linear2"], sampler(scale=1e30), cfg(steps=50, log_every=25),
                  progress=False)
    msg = str(info.value)
    assert "step 0" in msg and "sample_inputs" in msg and "too large" in msg and "rescale" in msg, msg
    assert "lower config.lr" not in msg, msg


def test_huge_weights_name_the_weights():
    model = pentagon_tms()
    with torch.no_grad():
        model.linear1.weight.mul_(1e25)
    with pytest.raises(FloatingPointError, match=r"step 0.*too large"):
        decompose(model, ["linear1", "linear2"], sampler(), cfg(), progress=False)
