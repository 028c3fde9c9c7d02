"""Bad and odd inputs to mechnb.circuits fail loudly, naming the caller's argument: float-noise
faithfulness, NaN and vector metrics, constant rank agreement, the reference's shape, dtypes, seeds,
languages and models that cannot read a task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechnb.circuits import (
    Circuit,
    Graph,
    TuneConfig,
    acdc,
    attribute,
    cache_writers,
    circuit_tune,
    debias_task,
    disagreement_task,
    faithfulness,
    faithfulness_curve,
    logit_diff,
    patched_forward,
    rank_agreement,
)
from mechnb.models import TinyTransformer
from mechnb.tasks import PromptPairs, SyntheticLanguage

torch.set_num_threads(1)


def _model(seed: int = 1) -> TinyTransformer:
    m = TinyTransformer(20, 32, 2, 4, 48, 8, init_seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.split(".")[-1].startswith("W_"):
                p.normal_(0, 0.3, generator=gen)
    return m.eval()


def _pairs(n: int = 8, pos: int = 6, seed: int = 0) -> PromptPairs:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 20, (n, pos), generator=g)
    corr = clean.clone()
    corr[:, 2] = torch.randint(0, 20, (n,), generator=g)
    return PromptPairs(clean, corr, torch.randint(0, 20, (n, 2), generator=g), "random")


def test_faithfulness_refuses_a_metric_that_does_not_separate_full_and_empty() -> None:
    """m(full) - m(empty) at float-noise level gave -1.0 or -0.0 from run to run: now a ValueError."""
    m, pairs = _model(), _pairs()
    g = Graph.from_model(m)

    def nearly_constant(logits: torch.Tensor, batch: object) -> torch.Tensor:
        return 1.0 + 1e-7 * torch.tanh(logits[:, -1, 0].mean())  # moves by ~1e-8 when edges are patched

    for ablation in ("corrupted", "mean"):
        with pytest.raises(ValueError, match=r"metric: does not separate the full and the empty circuit"):
            faithfulness(m, Circuit.full(g), pairs, metric=nearly_constant, ablation=ablation)
    scores = attribute(m, g, pairs)
    with pytest.raises(ValueError, match="metric: does not separate"):
        faithfulness_curve(m, scores, pairs, metric=nearly_constant, sizes=[0, 5])
    # a small but real separation is fine
    assert faithfulness(m, Circuit.full(g), pairs, metric=lambda lg, b: 1e-3 * logit_diff(lg, b)) == \
        pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("method", ["eap", "eap-ig", "exact", "acdc"])
def test_attribute_rejects_nan_and_vector_metrics(method: str) -> None:
    m, pairs = _model(), _pairs()
    g = Graph.from_model(m)
    with pytest.raises(ValueError, match=r"metric: expected a finite value, got nan"):
        attribute(m, g, pairs, metric=lambda lg, b: lg[:, -1, 0].mean() * float("nan"), method=method)
    with pytest.raises(ValueError, match=r"metric: expected a scalar .* shape \(8,\)"):
        attribute(m, g, pairs, metric=lambda lg, b: lg[:, -1, 0], method=method)
    with pytest.raises(TypeError, match="metric: expected a function returning a scalar tensor"):
        attribute(m, g, pairs, metric=lambda lg, b: "high", method=method)


def test_a_metric_that_becomes_nan_under_patching_is_named() -> None:
    m, pairs = _model(), _pairs()
    g = Graph.from_model(m)
    clean_logit = float(m(pairs.clean)[:, -1, 0].mean())

    def nan_when_patched(logits: torch.Tensor, batch: object) -> torch.Tensor:
        v = logits[:, -1, 0].mean()
        return torch.where((v - clean_logit).abs() < 1e-6, v, torch.full_like(v, float("nan")))

    with pytest.raises(ValueError, match=r"metric: expected a finite value, got nan on the corrupted prompts"):
        attribute(m, g, pairs, metric=nan_when_patched, method="exact")
    with pytest.raises(ValueError, match="metric: expected a finite value"):
        acdc(m, g, pairs, metric=nan_when_patched)


def test_rank_agreement_with_a_constant_vector_is_an_error_not_nan() -> None:
    with pytest.raises(ValueError, match=r"scores: expected at least two different values .* all 10 equal to 0"):
        rank_agreement(torch.zeros(10), torch.arange(10.0))
    with pytest.raises(ValueError, match="reference: expected at least two different values"):
        rank_agreement(np.arange(10.0), np.full(10, 3.0))
    with pytest.raises(ValueError, match="scores: expected at least two different absolute values"):
        rank_agreement(np.array([1.0, -1.0, 1.0, -1.0]), np.arange(4.0))
    out = rank_agreement(np.arange(10.0), np.arange(10.0) ** 2)
    assert out["spearman"] == pytest.approx(1.0) and np.isfinite(out["pearson"])


def test_patched_forward_checks_the_reference_width_and_casts_dtypes() -> None:
    m, pairs = _model(), _pairs()
    g = Graph.from_model(m)
    ref = cache_writers(m, g, pairs.corrupted).out  # [11, 8, 6, 32]
    alpha = torch.zeros(g.n_writers, g.n_readers)
    alpha[0, -1] = 1.0
    with pytest.raises(ValueError, match=r"ref: expected shape \(11, 8 or 1, 6 or 1, 32\) .* got \(11, 8, 6, 31\)"):
        patched_forward(m, g, pairs.clean, ref[..., :31], alpha)
    with pytest.raises(ValueError, match=r"ref: expected shape \(11, 8 or 1, 6 or 1, 32\)"):
        patched_forward(m, g, pairs.clean, ref[:, :3], alpha)
    with pytest.raises(ValueError, match="ref: expected shape"):
        patched_forward(m, g, pairs.clean, ref[:10], alpha)
    want = patched_forward(m, g, pairs.clean, ref, alpha)
    # floating inputs of another dtype are cast to the model's dtype
    torch.testing.assert_close(patched_forward(m, g, pairs.clean, ref.double(), alpha.double()), want)
    torch.testing.assert_close(patched_forward(m, g, pairs.clean, ref.half(), alpha.half()), want, atol=5e-2, rtol=0)
    m64 = _model().double()
    got64 = patched_forward(m64, g, pairs.clean, ref, alpha)  # float32 ref into a float64 model
    assert got64.dtype == torch.float64
    # non-floating and complex inputs are refused, naming the argument and the dtype expected
    with pytest.raises(TypeError, match=r"ref: expected a real floating-point tensor .*torch\.float32.*int64"):
        patched_forward(m, g, pairs.clean, ref.long(), alpha)
    with pytest.raises(TypeError, match=r"alpha: expected a real floating-point tensor .*complex64"):
        patched_forward(m, g, pairs.clean, ref, alpha.to(torch.complex64))
    with pytest.raises(TypeError, match="alpha"):
        patched_forward(m, g, pairs.clean, ref, alpha.bool())
    with pytest.raises(TypeError, match="tokens"):
        patched_forward(m, g, pairs.clean.float(), ref, alpha)


def test_tuning_inputs_are_checked_by_name() -> None:
    with pytest.raises(TypeError, match=r"seed: expected an int seed .* got str 'a'"):
        TuneConfig(seed="a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed"):
        TuneConfig(seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        TuneConfig(seed=-1)
    with pytest.raises(TypeError, match=r"lang: expected a mechnb\.tasks\.SyntheticLanguage .* got str 'english'"):
        disagreement_task("english")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lang: expected a mechnb.tasks.SyntheticLanguage"):
        debias_task("english")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="score_ema"):
        TuneConfig(score_ema=1.0)
    with pytest.raises(ValueError, match="ablation: discovery on the training batch"):
        TuneConfig(discover_on="batch")
    with pytest.raises(ValueError, match="top_n_start"):
        TuneConfig(top_n_schedule="linear", top_n_warmup=10)
    with pytest.raises(ValueError, match="selection"):
        TuneConfig(selection="magnitude")


def test_circuit_tune_names_the_callers_model_not_the_internal_tokens() -> None:
    lang = SyntheticLanguage()
    task = disagreement_task(lang, n_discovery=8, n_eval=8, n_heldout=8)
    small_vocab = TinyTransformer(10, 16, 1, 2, 16, lang.n_ctx)
    with pytest.raises(ValueError, match=r"^model: expected a TinyTransformer that reads the language of task "
                                         r"'disagreement' \(vocab_size >= \d+, n_ctx >= \d+\), got vocab_size=10"):
        circuit_tune(small_vocab, task, TuneConfig(steps=2), progress=False)
    short_context = TinyTransformer(lang.vocab_size, 16, 1, 2, 16, 4)
    with pytest.raises(ValueError, match=r"^model: .* got vocab_size=\d+, n_ctx=4"):
        circuit_tune(short_context, task, TuneConfig(steps=2), progress=False)
