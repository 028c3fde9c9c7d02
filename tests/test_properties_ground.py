"""Property-based tests (Hypothesis) of the ground floor: models, tasks, train, _checks, lab, planted networks.

Every property has the same shape: a generated call either returns a result that is finite and
satisfies the function's documented invariants, or raises ``ValueError``/``TypeError`` (or an
error the docstring names) whose message starts with the name of an argument (``"x: expected
..."``). A call that is valid must succeed, and one that is not must fail: nothing is accepted
silently. Inputs cover shapes (empty and one-row batches, wrong widths and ranks), dtypes (half,
bfloat16, double, integer, bool, complex), NaN / inf / values beyond the model's dtype, wrong
types and unknown names.

The runs are deterministic (``derandomize=True``, no example database) and bounded
(``max_examples``), so ``make test`` sees the same examples every time.
"""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mechnb import _checks, lab  # noqa: E402
from mechnb.experiments import degeneracy as exp_deg  # noqa: E402
from mechnb.models import MLP, TMS, ResidualMLP, TinyTransformer  # noqa: E402
from mechnb.tasks import ModularArithmetic, SparseFeatures, SyntheticLanguage, Tokenizer, sparse_features  # noqa: E402
from mechnb.train import TrainConfig, train  # noqa: E402

pytestmark = pytest.mark.properties
torch.set_num_threads(1)


def props(n: int = 40):
    """The suite's Hypothesis settings: deterministic, no deadline, ``n`` examples."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def outcome(fn, *args, names, errors=(ValueError, TypeError), **kwargs):
    """``(True, result)`` or ``(False, exc)``; an error of ``errors`` must start with one of ``names`` + ``":"``.

    Any other exception (a bare RuntimeError from torch, an IndexError ...) escapes and fails the test.
    """
    try:
        return True, fn(*args, **kwargs)
    except errors as e:
        msg = str(e)
        assert any(msg.startswith(f"{n}:") for n in names), (
            f"{type(e).__name__} does not name one of {names}: {msg!r}")
        return False, e


# junk that is the wrong type for almost every argument
JUNK = st.sampled_from([None, "a", "", b"x", [], [1], (1, 2), {}, object(), 1j, True, False, float("nan")])
NUMBERS = st.one_of(st.integers(-5, 10), st.floats(-3, 3, allow_nan=False),
                    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e300, -1e300]))
REAL_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
BAD_DTYPES = [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64, torch.complex128]
# entries: moderate numbers (finite in every dtype's forward pass), values only float64 can hold,
# and non-finite ones
MODERATE = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)
ENTRY = st.one_of(MODERATE, MODERATE, MODERATE, st.sampled_from([1e39, -1e200, float("nan"), float("inf")]))


@st.composite
def batches(draw, width: int):
    """``(x, good)``: a batch for a model that takes ``(batch, width)`` float inputs, and whether it is valid."""
    shape_kind = draw(st.sampled_from(["ok", "ok", "ok", "wide", "1d", "3d"]))
    n = draw(st.integers(0, 4))
    shape = {"ok": (n, width), "wide": (n, width + draw(st.sampled_from([-1, 1, 3]))), "1d": (width,),
             "3d": (n, 1, width)}[shape_kind]
    dtype = draw(st.sampled_from(REAL_DTYPES * 2 + BAD_DTYPES))
    size = int(np.prod(shape))
    if dtype.is_floating_point:
        vals = np.array(draw(st.lists(ENTRY, min_size=size, max_size=size)), dtype=np.float64).reshape(shape)
        x = torch.from_numpy(vals).to(dtype)
    elif dtype.is_complex:
        vals = np.array(draw(st.lists(MODERATE, min_size=size, max_size=size)), dtype=np.float64).reshape(shape)
        x = torch.from_numpy(vals + 1j * vals).to(dtype)
    else:
        vals = np.array(draw(st.lists(st.integers(0, 1), min_size=size, max_size=size)), dtype=np.int64)
        x = torch.from_numpy(vals.reshape(shape)).to(dtype)
    finite_in_f32 = bool(torch.isfinite(x.double().float()).all()) if dtype.is_floating_point else False
    good = shape_kind == "ok" and dtype.is_floating_point and finite_in_f32
    return x, good


VECTOR_MODELS = {
    "tms": (lambda: TMS(5, 2), 5, 5),
    "tms-hidden-untied": (lambda: TMS(4, 3, n_hidden_layers=1, tied_weights=False), 4, 4),
    "resid": (lambda: ResidualMLP(6, 8, 3, 2), 6, 6),
    "mlp": (lambda: MLP([3, 5, 2], activation="gelu"), 3, 2),
}
_BUILT: dict[str, nn.Module] = {}


def _model(name: str) -> nn.Module:
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = VECTOR_MODELS[name][0]()
    return _BUILT[name]


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------
@props(60)
@given(name=st.sampled_from(sorted(VECTOR_MODELS)), data=st.data())
def test_vector_models_cast_real_floats_and_name_everything_else(name, data):
    model = _model(name)
    _, n_in, n_out = VECTOR_MODELS[name]
    x, good = data.draw(batches(n_in))
    ok, out = outcome(model, x, names=["x"])
    assert ok == good, f"valid={good} but the call {'succeeded' if ok else 'failed'}: {out!r}"
    if ok:
        assert out.shape == (x.shape[0], n_out) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        assert torch.equal(out, model(x.float()))  # the cast is the only thing that happened


@props(25)
@given(x=st.one_of(JUNK, st.lists(st.floats(), max_size=3)))
def test_vector_models_refuse_non_tensors(x):
    for name in VECTOR_MODELS:
        with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
            _model(name)(x)


_TT = TinyTransformer(vocab_size=7, d_model=8, n_layers=1, n_heads=2, d_mlp=8, n_ctx=4, init_seed=0)


@st.composite
def token_batches(draw):
    b, pos = draw(st.integers(0, 3)), draw(st.integers(0, 6))
    dtype = draw(st.sampled_from([torch.int64, torch.int64, torch.int32, torch.float32, torch.bool, torch.complex64]))
    ids = draw(st.lists(st.integers(-2, 8), min_size=b * pos, max_size=b * pos))
    x = torch.tensor(ids, dtype=torch.int64).reshape(b, pos).to(dtype)
    ndim = draw(st.sampled_from([2, 2, 2, 1, 3]))
    if ndim == 1:
        x = x.reshape(-1)
    elif ndim == 3:
        x = x.unsqueeze(0)
    in_range = all(0 <= i < 7 for i in ids)
    good = ndim == 2 and dtype in (torch.int64, torch.int32) and pos <= 4 and in_range
    return x, good


@props(50)
@given(tb=token_batches())
def test_transformer_logits_are_finite_for_every_valid_token_batch(tb):
    tokens, good = tb
    ok, out = outcome(_TT, tokens, names=["tokens"])
    assert ok == good, f"valid={good}: {out!r}"
    if ok:
        assert out.shape == (*tokens.shape, 7) and torch.isfinite(out).all()


@props(50)
@given(max_new=st.one_of(st.integers(-1, 4), st.sampled_from([1.0, "2", None])),
       temperature=st.one_of(st.floats(0, 3), st.sampled_from([-0.5, float("nan"), float("inf"), "1", None, True])),
       stop=st.one_of(st.none(), st.integers(-1, 8), st.sampled_from([1.5, "x"])), rows=st.integers(1, 3),
       seed=st.integers(0, 3))
def test_generation_extends_the_prompt_with_valid_ids_or_names_the_argument(max_new, temperature, stop, rows, seed):
    prompt = torch.tensor([[1, 2]] * rows)
    gen = torch.Generator().manual_seed(seed)
    ok, out = outcome(_TT.generate, prompt, max_new, temperature=temperature, stop_token=stop, generator=gen,
                      names=["max_new_tokens", "temperature", "stop_token"])
    good = (type(max_new) is int and max_new >= 1 and type(temperature) is float and math.isfinite(temperature)
            and temperature >= 0 and (stop is None or (type(stop) is int and 0 <= stop < 7)))
    assert ok == good, f"valid={good}: {out!r}"
    if ok:
        assert torch.equal(out[:, :2], prompt) and 2 < out.shape[1] <= min(4, 2 + max_new)
        assert int(out.min()) >= 0 and int(out.max()) < 7


# --------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------
PAIR = st.one_of(st.tuples(NUMBERS, NUMBERS), st.tuples(st.floats(-3.4e38, 3.4e38), st.floats(-3.4e38, 3.4e38)),
                 JUNK, st.tuples(NUMBERS, NUMBERS, NUMBERS))


def _valid_range(r) -> bool:
    if not isinstance(r, tuple) or len(r) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                      for v in r):
        return False
    lo, hi = float(r[0]), float(r[1])
    top = float(torch.finfo(torch.float32).max)
    return all(math.isfinite(v) for v in (lo, hi, hi - lo)) and lo < hi and max(abs(lo), abs(hi), hi - lo) <= top


@props(80)
@given(batch=st.one_of(st.integers(-1, 4), JUNK), n=st.one_of(st.integers(-1, 4), st.sampled_from([2.0, None])),
       p=st.one_of(st.floats(0, 1), NUMBERS, JUNK), value_range=PAIR, seed=st.integers(0, 2))
def test_sparse_features_are_zero_or_inside_the_range(batch, n, p, value_range, seed):
    gen = torch.Generator().manual_seed(seed)
    ok, x = outcome(sparse_features, batch, n, p, gen, value_range=value_range,
                    names=["batch_size", "n_features", "feature_probability", "value_range"])
    good = (type(batch) is int and batch >= 1 and type(n) is int and n >= 1 and type(p) in (int, float)
            and 0 <= p <= 1 and _valid_range(value_range))
    assert ok == good, f"valid={good}: {x!r}"
    if ok:
        lo, hi = (float(v) for v in value_range)
        assert x.shape == (batch, n) and x.dtype == torch.float32 and torch.isfinite(x).all()
        active = x != 0
        # the uniform draw is in [lo, hi) up to float32 rounding of the bounds
        slack = 1e-6 * max(abs(lo), abs(hi), 1e-30)
        assert ((x[active] >= lo - slack) & (x[active] <= hi + slack)).all()
        if p == 0:
            assert not active.any()
        ok_task, task = outcome(SparseFeatures, n, p, value_range=value_range,
                                names=["n_features", "feature_probability", "value_range"])
        assert ok_task and torch.equal(task.sample(batch, torch.Generator().manual_seed(seed)), x)


_LANG = SyntheticLanguage()
_TOK = _LANG.tokenizer


@props(60)
@given(ids=st.one_of(st.lists(st.integers(-3, len(_TOK) + 2), max_size=6),
                     st.lists(st.sampled_from([1.0, True, None, "a"]), min_size=1, max_size=2), JUNK),
       as_tensor=st.booleans())
def test_decode_round_trips_every_valid_id_list_and_names_the_rest(ids, as_tensor):
    arg = ids
    if as_tensor and isinstance(ids, list) and all(type(i) is int for i in ids):
        arg = torch.tensor(ids, dtype=torch.int64)
    ok, text = outcome(_TOK.decode, arg, skip_special=False, names=["ids"])
    good = isinstance(ids, (list, tuple)) and all(type(i) is int and 0 <= i < len(_TOK) for i in ids)
    assert ok == good, f"valid={good}: {text!r}"
    if ok:
        assert _TOK.encode(text, bos=False) == list(ids)


@props(30)
@given(words=st.lists(st.sampled_from(_TOK.vocab[3:] + ["zebra", "Dog"]), max_size=6))
def test_encode_inverts_decode_for_known_words(words):
    text = " ".join(words)
    ok, ids = outcome(_TOK.encode, text, names=["text"])
    assert ok == all(w in _TOK.token_to_id for w in words)
    if ok:
        assert ids[0] == _TOK.bos_id and _TOK.decode(ids) == text


@props(40)
@given(vocab=st.one_of(st.lists(st.sampled_from(["<pad>", "<bos>", "a", "b", "a b", "", 3]), max_size=5), JUNK))
def test_tokenizer_accepts_exactly_the_documented_vocabularies(vocab):
    ok, tok = outcome(Tokenizer, vocab, names=["vocab"])
    good = (isinstance(vocab, list) and all(isinstance(w, str) and w and " " not in w for w in vocab)
            and len(set(vocab)) == len(vocab) and {"<pad>", "<bos>"} <= set(vocab))
    assert ok == good, f"valid={good}: {tok!r}"
    if ok:
        assert [tok.decode([i], skip_special=False) for i in range(len(vocab))] == vocab


@props(40)
@given(P=st.one_of(st.integers(0, 7), st.sampled_from([3.0, None])), op=st.sampled_from(["add", "sub", "mul",
       "sq_sum", "div", 1]), frac=st.one_of(st.floats(0, 1.2), JUNK), seed=st.one_of(st.integers(0, 9), JUNK))
def test_modular_splits_partition_every_pair_with_the_right_labels(P, op, frac, seed):
    ok, task = outcome(ModularArithmetic, P=P, op=op, train_frac=frac, seed=seed,
                       names=["P", "op", "train_frac", "seed"])
    good = (type(P) is int and P >= 2 and op in ("add", "sub", "mul", "sq_sum") and type(frac) in (int, float)
            and 0 < frac <= 1 and type(seed) is int)
    assert ok == good, f"valid={good}: {task!r}"
    if ok:
        train_s, test_s = task.split()
        pairs = [tuple(r) for r in torch.cat([train_s.ab, test_s.ab]).tolist()]
        assert sorted(pairs) == [(a, b) for a in range(P) for b in range(P)]
        fn = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
              "sq_sum": lambda a, b: a * a + b * b}[op]
        for split in (train_s, test_s):
            a, b = split.ab[:, 0], split.ab[:, 1]
            assert torch.equal(split.y, fn(a, b) % P)
            assert torch.equal(split.x, task.encode(a, b)) and (split.x.sum(1) == 2).all()


@props(40)
@given(a=st.lists(st.integers(-1, 5), min_size=0, max_size=4), b=st.lists(st.integers(-1, 5), max_size=4),
       dtype=st.sampled_from([torch.int64, torch.int32, torch.float32, torch.bool]))
def test_modular_encode_is_two_one_hots_or_names_a_and_b(a, b, dtype):
    task = ModularArithmetic(P=5)
    ta, tb = torch.tensor(a, dtype=torch.int64).to(dtype), torch.tensor(b, dtype=torch.int64).to(dtype)
    ok, x = outcome(task.encode, ta, tb, names=["a", "b", "a, b"])
    good = (dtype in (torch.int64, torch.int32) and len(a) == len(b)
            and all(0 <= v < 5 for v in a + b))
    assert ok == good, f"valid={good}: {x!r}"
    if ok:
        assert x.shape == (len(a), 10)
        for row, i, j in zip(x, a, b):
            assert row.nonzero().flatten().tolist() == sorted({i, 5 + j})


# --------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------
_CONFIG_FIELDS = {
    "steps": st.one_of(st.integers(-1, 3), JUNK), "lr": st.one_of(st.floats(0, 1), NUMBERS, JUNK),
    "optimizer": st.sampled_from(["adamw", "adam", "sgd", "lbfgs", None, 3]),
    "weight_decay": st.one_of(NUMBERS, JUNK), "momentum": st.one_of(NUMBERS, JUNK),
    "betas": st.one_of(st.tuples(st.floats(-1, 1.5), st.floats(-1, 1.5)), JUNK),
    "grad_clip": st.one_of(st.none(), NUMBERS, JUNK), "l1": st.one_of(NUMBERS, JUNK),
    "schedule": st.sampled_from(["constant", "cosine", "linear", "wsd", "step", None]),
    "warmup_steps": st.one_of(st.integers(-1, 3), JUNK), "decay_frac": st.one_of(st.floats(-0.5, 1.5), NUMBERS, JUNK),
    "seed": st.one_of(st.integers(-2, 2**65), JUNK), "log_every": st.one_of(st.integers(-1, 3), JUNK),
}


@props(80)
@given(kwargs=st.fixed_dictionaries({}, optional=_CONFIG_FIELDS))
def test_train_config_either_round_trips_or_names_the_field(kwargs):
    ok, cfg = outcome(TrainConfig, **kwargs, names=list(_CONFIG_FIELDS))
    if ok:
        assert TrainConfig(**cfg.to_dict()) == cfg
        for k, v in kwargs.items():
            got = getattr(cfg, k)
            assert got == v or (k == "betas" and tuple(v) == got), (k, v, got)


class _Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(1.0))


_LOSSES = {
    "scalar": lambda m: (m.p - 2) ** 2,
    "one-element": lambda m: ((m.p - 2) ** 2).reshape(1),
    "vector": lambda m: m.p * torch.ones(3),
    "python-float": lambda m: 1.0,
    "detached": lambda m: m.p.detach() ** 2,
    "integer": lambda m: (m.p > 0).long(),
    "nan-later": lambda m: m.p * (float("nan") if float(m.p.detach()) != 1.0 else 1.0),
}


@props(40)
@given(kind=st.sampled_from(sorted(_LOSSES)), steps=st.integers(1, 3), mode=st.booleans())
def test_train_returns_finite_losses_or_names_loss_fn_and_restores_the_mode(kind, steps, mode):
    model = _Scalar().train(mode)
    ok, res = outcome(train, model, lambda s, g: None, lambda m, b: _LOSSES[kind](m),
                      TrainConfig(steps=steps, lr=0.1, optimizer="sgd"), progress=False, names=["loss_fn", "train"],
                      errors=(ValueError, TypeError, FloatingPointError))
    assert model.training is mode
    good = kind in ("scalar", "one-element") or (kind == "nan-later" and steps == 1)
    assert ok == good, f"{kind}: {res!r}"
    if ok:
        assert len(res.losses) == steps and all(math.isfinite(v) for v in res.losses)


# --------------------------------------------------------------------------------------
# _checks
# --------------------------------------------------------------------------------------
ANY = st.one_of(JUNK, NUMBERS, st.integers(-(2**66), 2**66), st.just(np.int64(3)), st.just(np.float32(0.5)))


@props(100)
@given(value=ANY, minimum=st.integers(0, 2))
def test_scalar_checks_return_a_valid_value_or_name_the_argument(value, minimum):
    ok, v = outcome(_checks.check_positive_int, "k", value, minimum=minimum, names=["k"])
    assert ok == (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum)
    if ok:
        assert type(v) is int and v >= minimum
    for allow_zero in (False, True):
        ok, v = outcome(_checks.check_positive_float, "lr", value, allow_zero=allow_zero, names=["lr"])
        if ok:
            assert type(v) is float and math.isfinite(v) and (v > 0 or (allow_zero and v == 0))
    ok, v = outcome(_checks.check_probability, "p", value, names=["p"])
    if ok:
        assert 0 <= v <= 1
    ok, v = outcome(_checks.check_seed, "seed", value, names=["seed"])
    assert ok == (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < 2**64)
    if ok:
        torch.Generator().manual_seed(v)
    ok, v = outcome(_checks.check_choice, "mode", value, ["a", 1], names=["mode"])
    assert ok == (value in ["a", 1])


@props(60)
@given(dtype=st.sampled_from(REAL_DTYPES + BAD_DTYPES), target=st.sampled_from([torch.float16, torch.float32,
       torch.float64]), vals=st.lists(ENTRY, min_size=0, max_size=4))
def test_check_float_input_follows_the_dtype_policy(dtype, target, vals):
    arr = np.array(vals, dtype=np.float64)
    if dtype.is_floating_point:
        x = torch.from_numpy(arr).to(dtype)
    elif dtype.is_complex:
        x = torch.from_numpy(np.nan_to_num(arr) * (1 + 1j)).to(dtype)
    else:
        x = torch.from_numpy(np.nan_to_num(arr)).clamp(0, 1).to(dtype)
    x_finite = bool(torch.isfinite(x).all()) if dtype.is_floating_point else True
    ok, y = outcome(_checks.check_float_input, "x", x, target, names=["x"])
    if not dtype.is_floating_point:
        assert not ok and isinstance(y, TypeError)
    elif dtype == target:
        assert ok and y is x
    else:  # finiteness of x itself is check_tensor's job; the cast must not create inf from finite values
        fits = bool(torch.isfinite(x.to(target)).all())
        if x_finite:
            assert ok == fits, (x, y)
        if ok:
            assert y.dtype == target and (torch.equal(y, x.to(target)) or not fits)


@props(40)
@given(x=st.one_of(JUNK, st.lists(st.one_of(NUMBERS, st.just(1 + 2j)), max_size=4),
                   st.lists(st.lists(NUMBERS, min_size=2, max_size=2), min_size=1, max_size=3)),
       ndim=st.sampled_from([None, 1, 2]))
def test_check_array_gives_float64_of_the_right_rank_or_names_the_argument(x, ndim):
    ok, arr = outcome(_checks.check_array, "X", x, ndim=ndim, names=["X"])
    if ok:
        assert arr.dtype == np.float64 and np.isfinite(arr).all() and (ndim is None or arr.ndim == ndim)


# --------------------------------------------------------------------------------------
# lab
# --------------------------------------------------------------------------------------
@props(40)
@given(start=st.one_of(st.integers(-70000, 70000), st.sampled_from([0, 65535]), JUNK),
       tries=st.one_of(st.integers(-1, 2), st.just(2.0)))
def test_find_free_port_returns_a_bindable_port_in_range_or_names_the_argument(start, tries):
    ok, port = outcome(lab.find_free_port, start, tries, names=["start", "tries", "port"],
                       errors=(ValueError, TypeError, RuntimeError))
    valid = type(start) is int and 0 <= start <= 65535 and type(tries) is int and tries >= 1
    if not valid:
        assert not ok and not isinstance(port, RuntimeError)
    if ok:
        assert 1 <= port <= 65535 and (start == 0 or start <= port < start + tries)


@props(40)
@given(port=st.one_of(st.integers(-5, 70000), st.sampled_from([1, 65535, 8888.0, "8888"]), JUNK),
       folder=st.one_of(st.sampled_from([".", "notebooks"]), JUNK))
def test_lab_command_binds_to_loopback_on_the_given_port_or_names_the_argument(port, folder):
    ok, cmd = outcome(lab.lab_command, port, folder, names=["port", "notebook_dir"])
    good = type(port) is int and 1 <= port <= 65535 and isinstance(folder, str) and folder != ""
    assert ok == good, f"valid={good}: {cmd!r}"
    if ok:
        assert f"--ServerApp.ip={lab.HOST}" in cmd and f"--ServerApp.port={port}" in cmd
        assert lab.lab_url(port, "t") == f"http://127.0.0.1:{port}/lab?token=t"


# --------------------------------------------------------------------------------------
# planted networks (mechnb.experiments.degeneracy)
# --------------------------------------------------------------------------------------
@props(40)
@given(d_in=st.integers(1, 3), d_hidden=st.integers(0, 3), d_out=st.integers(1, 3), n=st.integers(1, 12),
       dup=st.integers(0, 2), dead=st.integers(0, 1), unread=st.integers(0, 1), sync=st.integers(0, 2),
       seed=st.one_of(st.integers(0, 5), st.sampled_from([1.5, True, "0", -1])))
def test_planted_mlp_plants_what_it_says_or_names_what_is_impossible(d_in, d_hidden, d_out, n, dup, dead, unread,
                                                                       sync, seed):
    names = ["d_in", "d_hidden", "d_out", "n_samples", "duplicated", "dead", "unread", "synchronised", "seed",
             "d_hidden, unread", "d_hidden, duplicated, dead, unread, synchronised"]
    with mock.patch.object(exp_deg, "MAX_NEURON_DRAWS", 300):  # the bound, not its size, is the property
        ok, out = outcome(exp_deg.planted_mlp, d_in, d_hidden, d_out, n_samples=n, duplicated=dup, dead=dead,
                          unread=unread, synchronised=sync, seed=seed, names=names)
    if type(seed) is not int or seed < 0 or d_in < 2 or n < 2:
        assert not ok
    if not ok:
        return
    model, x = out
    h = d_hidden + unread + dup + dead + sync
    assert model.sizes == [d_in, h, d_out] and x.shape == (n, d_in) and torch.isfinite(x).all()
    with torch.no_grad():
        on = (x @ model.layers[0].weight.T + model.layers[0].bias) > 0
    generic = on[:, : d_hidden + unread].T
    split = x[:, 0] > 0
    for i, c in enumerate(generic):
        assert c.any() and (~c).any()
        for other in [split, *generic[:i]]:
            assert not torch.equal(c, other) and not torch.equal(c, ~other)
    first_dead = d_hidden + unread + dup
    assert not on[:, first_dead: first_dead + dead].any()  # dead neurons never fire
    assert torch.equal(on[:, h - sync:], split[:, None].expand(-1, sync))  # synchronised: on iff x_0 > 0
    assert (model.layers[1].weight[:, d_hidden: d_hidden + unread] == 0).all()  # unread: nothing reads them


@props(30)
@given(widths=st.one_of(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.lists(JUNK, max_size=2), JUNK),
       rank=st.one_of(st.none(), st.integers(0, 5)), seed=st.one_of(st.integers(0, 3), st.just(0.5)))
def test_planted_dln_is_noiseless_with_the_requested_rank(widths, rank, seed):
    ok, out = outcome(exp_deg.planted_dln, widths, rank=rank, n_samples=8, seed=seed,
                      names=["widths", "rank", "seed"] + [f"widths[{i}]" for i in range(4)])
    if not ok:
        return
    model, x, y = out
    assert torch.equal(model(x), y) and torch.isfinite(y).all()
    for layer in model.layers:
        r = int(torch.linalg.matrix_rank(layer.weight.detach()))
        assert r == (min(layer.weight.shape) if rank is None else rank)
