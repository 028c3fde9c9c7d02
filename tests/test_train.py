"""Tests for mechnb.train: reproducibility, convergence, the exact learning-rate schedule,
the L1 penalty, gradient clipping, evaluation logging and error handling.

The schedule/L1/clipping tests use plain SGD on a loss whose gradient is known in closed
form, so the parameter trajectory *is* the learning rate and can be compared exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mechnb.models import MLP
from mechnb.train import TrainConfig, TrainResult, cross_entropy_loss, mse_loss, seed_everything, train


class Scalar(nn.Module):
    """One float64 parameter ``p``; used with ``loss = slope * p`` so ``dL/dp = slope``."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(value, dtype=torch.float64))


def linear_slope_loss(slope: float = 1.0):
    return lambda model, batch: slope * model.p


def regression_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = MLP([4, 16, 2])
    w_true = torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 1.5], [-1.0, 1.0]])

    def batch_fn(step, g):
        x = torch.randn(64, 4, generator=g)
        return x, x @ w_true

    def loss_fn(model, batch):
        x, y = batch
        return mse_loss(model(x), y)

    return model, batch_fn, loss_fn


def test_same_seed_gives_identical_losses_and_weights():
    cfg = TrainConfig(steps=60, lr=1e-2, seed=3)
    runs = []
    for _ in range(2):
        model, batch_fn, loss_fn = regression_setup(seed=0)
        res = train(model, batch_fn, loss_fn, cfg, progress=False)
        runs.append((res.losses, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]  # bit-identical
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    model, batch_fn, loss_fn = regression_setup(seed=0)
    other = train(model, batch_fn, loss_fn, TrainConfig(steps=60, lr=1e-2, seed=4), progress=False)
    assert other.losses != runs[0][0]  # the data stream follows config.seed


def test_loss_decreases_on_a_simple_regression():
    model, batch_fn, loss_fn = regression_setup()
    res = train(model, batch_fn, loss_fn, TrainConfig(steps=400, lr=1e-2, schedule="cosine"), progress=False)
    assert isinstance(res, TrainResult) and len(res.losses) == 400
    first = sum(res.losses[:10]) / 10
    assert res.final_loss < 0.01 * first, (first, res.final_loss)
    assert res.seconds > 0
    assert model.training  # handed back in the caller's mode (a fresh module trains)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
@pytest.mark.parametrize("warmup", [0, 5])
def test_learning_rate_schedule_is_exact(schedule, warmup):
    steps, lr = 20, 0.1
    model = Scalar()
    cfg = TrainConfig(steps=steps, lr=lr, optimizer="sgd", momentum=0.0, schedule=schedule, warmup_steps=warmup)
    res = train(model, lambda s, g: None, linear_slope_loss(), cfg, progress=False)
    # with dL/dp = 1 and plain SGD, p_{t+1} = p_t - lr_t, and the recorded loss is p_t
    trajectory = res.losses + [model.p.item()]
    got = [trajectory[t] - trajectory[t + 1] for t in range(steps)]
    for t in range(steps):
        if t < warmup:
            want = lr * (t + 1) / warmup
        else:
            frac = (t - warmup) / (steps - warmup)
            factor = {"constant": 1.0, "linear": 1.0 - frac, "cosine": 0.5 * (1 + math.cos(math.pi * frac))}
            want = lr * factor[schedule]
        assert got[t] == pytest.approx(want, abs=1e-12), (t, got[t], want)


def test_l1_penalty_is_added_to_the_loss_and_skips_biases():
    torch.manual_seed(0)
    model = MLP([3, 5, 2])
    w_abs = sum(layer.weight.abs().sum().item() for layer in model.layers)
    x = torch.randn(8, 3)
    base = mse_loss(model(x), torch.zeros(8, 2)).item()
    cfg = TrainConfig(steps=1, lr=1e-3, l1=0.05)
    res = train(model, lambda s, g: x, lambda m, b: mse_loss(m(b), torch.zeros(8, 2)), cfg, progress=False)
    assert res.losses[0] == pytest.approx(base + 0.05 * w_abs, rel=1e-6)


def test_l1_shrinks_unused_weights_by_exactly_lr_times_l1():
    class TwoParams(nn.Module):
        def __init__(self):
            super().__init__()
            self.W = nn.Parameter(torch.tensor([[0.5, -0.25], [1.0, -2.0]], dtype=torch.float64))
            self.b = nn.Parameter(torch.tensor([0.5, -0.5], dtype=torch.float64))

    model = TwoParams()
    W0, b0 = model.W.detach().clone(), model.b.detach().clone()
    cfg = TrainConfig(steps=3, lr=0.01, optimizer="sgd", momentum=0.0, l1=2.0)
    train(model, lambda s, g: None, lambda m, b: 0.0 * (m.W.sum() + m.b.sum()), cfg, progress=False)
    torch.testing.assert_close(model.W.detach(), W0 - 3 * 0.01 * 2.0 * W0.sign())
    torch.testing.assert_close(model.b.detach(), b0)  # 1-D parameters carry no L1 penalty


def test_grad_clip_limits_the_step():
    model = Scalar()
    cfg = TrainConfig(steps=4, lr=0.1, optimizer="sgd", momentum=0.0, grad_clip=0.5)
    train(model, lambda s, g: None, linear_slope_loss(slope=100.0), cfg, progress=False)
    assert model.p.item() == pytest.approx(-4 * 0.1 * 0.5, rel=1e-6)
    model = Scalar()
    train(model, lambda s, g: None, linear_slope_loss(slope=100.0),
          TrainConfig(steps=4, lr=0.1, optimizer="sgd", momentum=0.0), progress=False)
    assert model.p.item() == pytest.approx(-4 * 0.1 * 100.0)


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_only_the_given_params_move(optimizer):
    model, batch_fn, loss_fn = regression_setup()
    frozen = [p.detach().clone() for p in model.layers[0].parameters()]
    cfg = TrainConfig(steps=5, lr=1e-2, optimizer=optimizer, weight_decay=0.1)
    train(model, batch_fn, loss_fn, cfg, params=model.layers[1].parameters(), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.layers[0].parameters()))


def test_eval_fn_is_logged_every_log_every_steps_and_at_the_end():
    model, batch_fn, loss_fn = regression_setup()
    modes = []

    def eval_fn(m):
        modes.append((m.training, torch.is_grad_enabled()))
        return {"w_norm": torch.stack([p.norm() for p in m.parameters()]).sum()}

    res = train(model, batch_fn, loss_fn, TrainConfig(steps=25, log_every=10), eval_fn=eval_fn, progress=False)
    assert [r["step"] for r in res.evals] == [10, 20, 25]
    assert all(isinstance(r["w_norm"], float) for r in res.evals)
    assert modes == [(False, False)] * 3  # evaluated in eval mode without autograd


def test_batch_fn_gets_the_step_and_a_seeded_generator():
    seen = []

    def batch_fn(step, g):
        seen.append((step, torch.rand(1, generator=g).item()))
        return None

    train(Scalar(), batch_fn, linear_slope_loss(), TrainConfig(steps=3, seed=11), progress=False)
    g = torch.Generator().manual_seed(11)
    assert seen == [(s, torch.rand(1, generator=g).item()) for s in range(3)]


def test_progress_bar_does_not_change_the_result(capsys):
    a_model, batch_fn, loss_fn = regression_setup()
    a = train(a_model, batch_fn, loss_fn, TrainConfig(steps=20), progress=True)
    b_model, batch_fn, loss_fn = regression_setup()
    b = train(b_model, batch_fn, loss_fn, TrainConfig(steps=20), progress=False)
    assert a.losses == b.losses


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_raises_naming_the_step(bad):
    def loss_fn(model, batch):
        return model.p * (bad if batch == 3 else 1.0)

    with pytest.raises(FloatingPointError, match="step 3"):
        train(Scalar(), lambda s, g: s, loss_fn, TrainConfig(steps=10, lr=0.01), progress=False)


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [(dict(steps=0), ValueError, "steps"), (dict(steps=1.5), TypeError, "steps"), (dict(lr=0.0), ValueError, "lr"),
     (dict(lr=float("nan")), ValueError, "lr"), (dict(optimizer="lbfgs"), ValueError, "optimizer"),
     (dict(schedule="step"), ValueError, "schedule"), (dict(warmup_steps=-1), ValueError, "warmup_steps"),
     (dict(grad_clip=0.0), ValueError, "grad_clip"), (dict(l1=-0.1), ValueError, "l1"),
     (dict(weight_decay=float("inf")), ValueError, "weight_decay"), (dict(log_every=0), ValueError, "log_every")],
)
def test_bad_config_raises(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        TrainConfig(**kwargs)


def test_bad_train_arguments():
    cfg = TrainConfig(steps=2)
    with pytest.raises(TypeError, match="model"):
        train(lambda x: x, lambda s, g: None, linear_slope_loss(), cfg)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config"):
        train(Scalar(), lambda s, g: None, linear_slope_loss(), {"steps": 2})  # type: ignore[arg-type]
    frozen = Scalar()
    frozen.p.requires_grad_(False)
    with pytest.raises(ValueError, match="params"):
        train(frozen, lambda s, g: None, linear_slope_loss(), cfg, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error message")
def test_unavailable_device_raises():
    with pytest.raises(ValueError, match="device"):
        train(Scalar(), lambda s, g: None, linear_slope_loss(), TrainConfig(steps=2), device="cuda", progress=False)


def test_config_round_trips_through_a_dict():
    cfg = TrainConfig(steps=7, lr=3e-3, schedule="cosine", l1=0.1, grad_clip=1.0)
    assert TrainConfig(**cfg.to_dict()) == cfg


def test_final_loss_averages_the_last_percent():
    assert TrainResult(losses=[5.0] * 100 + [1.0] * 100 + [3.0] * 2).final_loss == pytest.approx(3.0)
    assert TrainResult(losses=[4.0, 2.0]).final_loss == 2.0


def test_loss_helpers():
    pred, target = torch.tensor([[1.0, 2.0], [3.0, 5.0]]), torch.tensor([[0.0, 2.0], [3.0, 3.0]])
    assert mse_loss(pred, target).item() == pytest.approx((1 + 0 + 0 + 4) / 4)
    assert mse_loss(pred, target, importance=torch.tensor([1.0, 0.5])).item() == pytest.approx((1 + 2) / 4)
    logits = torch.randn(2, 3, 7)
    labels = torch.randint(0, 7, (2, 3))
    labels[0, 1] = -100
    keep = labels.reshape(-1) != -100
    manual = -torch.log_softmax(logits.reshape(-1, 7), -1)[keep, labels.reshape(-1)[keep]].mean()
    torch.testing.assert_close(cross_entropy_loss(logits, labels), manual)


def test_seed_everything():
    g = seed_everything(5)
    a = torch.rand(3)
    b = torch.rand(3, generator=g)
    seed_everything(5)
    assert torch.equal(torch.rand(3), a)
    assert torch.equal(torch.rand(3, generator=torch.Generator().manual_seed(5)), b)


def test_make_optimizer_follows_the_config():
    from mechnb.circuits import TuneConfig
    from mechnb.train import make_optimizer

    p = [torch.nn.Parameter(torch.zeros(3))]
    opt = make_optimizer(p, TrainConfig(optimizer="sgd", lr=0.5, momentum=0.9).optim)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9 and opt.defaults["lr"] == 0.5
    opt = make_optimizer(p, TrainConfig(optimizer="adamw", weight_decay=0.1, betas=(0.8, 0.95)).optim)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.95)
    opt = make_optimizer(p, TuneConfig(optimizer="adam", lr=1e-3).optim)
    assert type(opt) is torch.optim.Adam and opt.defaults["lr"] == 1e-3
    with pytest.raises(TypeError, match="OptimConfig"):
        make_optimizer(p, TrainConfig())  # type: ignore[arg-type]


def test_one_optimiser_config_embedded_in_both_configs():
    import dataclasses

    from mechnb.circuits import TuneConfig
    from mechnb.train import OPTIM_FIELDS, OptimConfig

    optim = OptimConfig(optimizer="sgd", lr=0.05, momentum=0.5, weight_decay=0.01, grad_clip=2.0)
    flat = {k: getattr(optim, k) for k in OPTIM_FIELDS}
    assert TrainConfig(steps=5, **flat) == TrainConfig(steps=5, optim=optim)
    assert TuneConfig(steps=5, **flat) == TuneConfig(steps=5, optim=optim)
    assert TrainConfig(optim=optim).lr == 0.05 and TuneConfig(optim=optim).momentum == 0.5
    # flat keywords override the given (or default) optim field by field
    assert TrainConfig(optim=optim, lr=0.2).optim == dataclasses.replace(optim, lr=0.2)
    assert TrainConfig().optim == OptimConfig()  # AdamW, lr 1e-3, no clipping
    assert TuneConfig().optim == OptimConfig(optimizer="sgd", lr=1e-2, momentum=0.9, grad_clip=1.0)
    assert TuneConfig(grad_clip=None).optim.grad_clip is None
    # flat dicts, as before the embedding, and they round-trip
    cfg = TuneConfig(steps=3, lr=0.3, top_n=7)
    assert cfg.to_dict()["lr"] == 0.3 and "optim" not in cfg.to_dict()
    assert TuneConfig(**cfg.to_dict()) == cfg and dataclasses.replace(cfg, top_n=2).optim == cfg.optim
    with pytest.raises(TypeError, match="optim"):
        TrainConfig(optim={"lr": 0.1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="betas"):
        OptimConfig(betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="momentum"):
        TrainConfig(momentum=-0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        optim.lr = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------------------
# the caller's mode, the loss_fn contract, seeds
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [True, False])
def test_train_hands_the_model_back_in_the_callers_mode(mode):
    seen = []

    def loss_fn(model, batch):
        seen.append(model.training)
        return model.p ** 2

    m = Scalar(1.0).train(mode)
    train(m, lambda s, g: None, loss_fn, TrainConfig(steps=3, lr=0.1), progress=False)
    assert seen == [True] * 3  # trained in train mode
    assert m.training is mode  # the caller's mode is back


def test_train_restores_the_callers_mode_when_it_raises():
    m = Scalar(1.0).eval()

    def loss_fn(model, batch):
        return model.p * (float("nan") if batch == 1 else 1.0)

    with pytest.raises(FloatingPointError, match="step 1"):
        train(m, lambda s, g: s, loss_fn, TrainConfig(steps=5, lr=0.1), progress=False)
    assert not m.training


@pytest.mark.parametrize(
    ("loss", "exc", "needle"),
    [(lambda m: m.p * torch.ones(3), ValueError, r"loss_fn: expected it to return a scalar tensor .*got shape \(3,\)"),
     (lambda m: 1.0, TypeError, "loss_fn: expected it to return a scalar torch.Tensor, got float"),
     (lambda m: m.p.detach() * 2, ValueError, "loss_fn: the returned loss does not depend on the trained"),
     (lambda m: (m.p > 0).long(), TypeError, "loss_fn: expected a real floating-point loss, got dtype torch.int64")],
)
def test_loss_fn_must_return_a_scalar_that_depends_on_the_parameters(loss, exc, needle):
    m = Scalar(1.0)
    before = m.p.detach().clone()
    with pytest.raises(exc, match=needle):
        train(m, lambda s, g: None, lambda model, batch: loss(model), TrainConfig(steps=2), progress=False)
    assert torch.equal(m.p.detach(), before)  # nothing was stepped


def test_a_one_element_loss_trains_like_a_scalar():
    a, b = Scalar(1.0), Scalar(1.0)
    ra = train(a, lambda s, g: None, lambda m, _: (m.p ** 2).reshape(1), TrainConfig(steps=5, lr=0.1), progress=False)
    rb = train(b, lambda s, g: None, lambda m, _: m.p ** 2, TrainConfig(steps=5, lr=0.1), progress=False)
    assert ra.losses == rb.losses and torch.equal(a.p, b.p)


def test_a_non_finite_loss_before_any_step_points_at_the_inputs():
    with pytest.raises(FloatingPointError, match="step 0, before any optimiser step.*batch"):
        train(Scalar(1.0), lambda s, g: None, lambda m, _: m.p * float("inf"), TrainConfig(steps=3), progress=False)


@pytest.mark.parametrize(
    ("seed", "exc"),
    [("a", TypeError), (1.5, TypeError), (True, TypeError), (None, TypeError), (-1, ValueError), (2**64, ValueError)],
)
def test_seeds_are_validated(seed, exc):
    with pytest.raises(exc, match="seed: expected an int seed"):
        TrainConfig(seed=seed)
    with pytest.raises(exc, match="seed: expected an int seed"):
        seed_everything(seed)


def test_decay_frac_of_the_wrong_type_is_named():
    with pytest.raises(TypeError, match="decay_frac"):
        TrainConfig(decay_frac="a")


def test_a_model_on_the_meta_device_is_refused_before_training():
    with torch.device("meta"):
        m = MLP([2, 3, 1])
    with pytest.raises(ValueError, match=r"model: 'layers.0.weight' is on the 'meta' device"):
        train(m, lambda s, g: None, lambda model, batch: model(torch.zeros(1, 2)).sum(), TrainConfig(steps=1),
              progress=False)
