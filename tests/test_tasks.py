"""Tests for mechnb.tasks: the statistics each data source promises, checked on samples.

Tolerances are binomial: a measured frequency must be within 5 standard errors of the
configured probability (false-alarm rate ~1e-6 per check; the draws are seeded anyway).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from mechnb.tasks import ModularArithmetic, PromptPairs, SyntheticLanguage, Tokenizer, sparse_features


def within_binomial(freq: float, p: float, n: int, z: float = 5.0) -> bool:
    return abs(freq - p) <= z * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12


# --------------------------------------------------------------------------------------
# sparse_features
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.01, 0.05, 0.3, 1.0])
def test_sparse_features_activation_frequency_and_values(p):
    g = torch.Generator().manual_seed(1)
    x = sparse_features(4000, 50, p, generator=g)
    assert x.shape == (4000, 50) and x.dtype == torch.float32
    active = x != 0
    freq = active.float().mean().item()
    assert within_binomial(freq, p, x.numel()), (freq, p)
    # per-feature frequencies are all close to p too (features are independent and identical)
    per_feature = active.float().mean(0)
    assert (per_feature - p).abs().max().item() <= 5 * math.sqrt(max(p * (1 - p), 1e-12) / 4000) + 1e-12
    vals = x[active]
    assert vals.min() >= 0 and vals.max() < 1
    # active values are U[0, 1]: Kolmogorov-Smirnov against the uniform law
    assert stats.kstest(vals.numpy(), "uniform").pvalue > 1e-6


def test_sparse_features_value_range_and_independence():
    g = torch.Generator().manual_seed(2)
    x = sparse_features(20000, 8, 0.5, generator=g, value_range=(-1.0, 1.0))
    vals = x[x != 0]
    assert vals.min() >= -1 and vals.max() < 1
    assert stats.kstest(vals.numpy(), stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-6
    assert abs(vals.mean().item()) < 0.02
    # activity of two different features is uncorrelated
    a = (x != 0).float()
    corr = torch.corrcoef(a.T)
    off = corr - torch.diag(torch.diag(corr))
    assert off.abs().max().item() < 0.05


def test_sparse_features_is_deterministic_given_the_generator():
    a = sparse_features(64, 10, 0.2, generator=torch.Generator().manual_seed(7))
    b = sparse_features(64, 10, 0.2, generator=torch.Generator().manual_seed(7))
    c = sparse_features(64, 10, 0.2, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sparse_features_edge_probabilities():
    assert torch.count_nonzero(sparse_features(100, 5, 0.0)) == 0
    assert torch.count_nonzero(sparse_features(100, 5, 1.0)) == 500  # U[0,1) hits exactly 0 with prob ~0


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        (dict(batch_size=0, n_features=5, feature_probability=0.1), ValueError, "batch_size"),
        (dict(batch_size=4, n_features=2.5, feature_probability=0.1), TypeError, "n_features"),
        (dict(batch_size=4, n_features=5, feature_probability=1.5), ValueError, "feature_probability"),
        (dict(batch_size=4, n_features=5, feature_probability=float("nan")), ValueError, "feature_probability"),
        (dict(batch_size=4, n_features=5, feature_probability=0.1, value_range=(1.0, 0.0)), ValueError,
         "value_range"),
    ],
)
def test_sparse_features_bad_inputs(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        sparse_features(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error message")
def test_sparse_features_unavailable_device():
    with pytest.raises(ValueError, match="device"):
        sparse_features(4, 5, 0.1, device="cuda")


# --------------------------------------------------------------------------------------
# ModularArithmetic
# --------------------------------------------------------------------------------------
def test_modular_encode_is_two_one_hots():
    task = ModularArithmetic(P=7)
    a = torch.tensor([0, 3, 6, 2])
    b = torch.tensor([6, 3, 0, 5])
    x = task.encode(a, b)
    assert x.shape == (4, 14) and task.n_inputs == 14
    assert torch.equal(x.sum(1), torch.full((4,), 2.0))
    assert torch.equal(x[:, :7].argmax(1), a) and torch.equal(x[:, 7:].argmax(1), b)
    assert set(x.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize(
    ("op", "fn"),
    [("add", lambda a, b, P: (a + b) % P), ("sub", lambda a, b, P: (a - b) % P),
     ("mul", lambda a, b, P: (a * b) % P), ("sq_sum", lambda a, b, P: (a * a + b * b) % P)],
)
def test_modular_labels_match_python_arithmetic(op, fn):
    P = 11
    full = ModularArithmetic(P=P, op=op).all_pairs()
    assert full.x.shape == (P * P, 2 * P)
    for (a, b), y in zip(full.ab.tolist(), full.y.tolist()):
        assert y == fn(a, b, P)
        assert 0 <= y < P


def test_modular_split_is_disjoint_complete_and_seeded():
    P = 13
    task = ModularArithmetic(P=P, train_frac=0.7, seed=3)
    train, test = task.split()
    pairs_tr = {tuple(r) for r in train.ab.tolist()}
    pairs_te = {tuple(r) for r in test.ab.tolist()}
    assert len(pairs_tr) == len(train.ab) and len(pairs_te) == len(test.ab)  # no duplicates
    assert pairs_tr.isdisjoint(pairs_te)
    assert pairs_tr | pairs_te == {(a, b) for a in range(P) for b in range(P)}
    assert len(train.ab) == round(0.7 * P * P)
    # x / y rows belong to their pairs
    assert torch.equal(train.x, task.encode(train.ab[:, 0], train.ab[:, 1]))
    assert torch.equal(test.y, (test.ab[:, 0] + test.ab[:, 1]) % P)
    # same seed -> same split; other seed -> other split
    train2, _ = ModularArithmetic(P=P, train_frac=0.7, seed=3).split()
    train3, _ = ModularArithmetic(P=P, train_frac=0.7, seed=4).split()
    assert torch.equal(train.ab, train2.ab)
    assert not torch.equal(train.ab, train3.ab)


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [(dict(P=1), ValueError, "P"), (dict(P=7.0), TypeError, "P"), (dict(op="div"), ValueError, "op"),
     (dict(train_frac=0.0), ValueError, "train_frac"), (dict(train_frac=1.2), ValueError, "train_frac")],
)
def test_modular_bad_config(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        ModularArithmetic(**kwargs)


def test_modular_encode_bad_inputs():
    task = ModularArithmetic(P=5)
    with pytest.raises(ValueError, match="a, b"):
        task.encode(torch.tensor([1, 2]), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        task.encode(torch.tensor([5]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        task.encode(torch.tensor([0]), torch.tensor([-1]))


# --------------------------------------------------------------------------------------
# SyntheticLanguage: vocabulary and corpus
# --------------------------------------------------------------------------------------
def _number_sets(lang: SyntheticLanguage) -> tuple[set[str], set[str], dict[str, tuple[str, str]]]:
    sing = {s for s, _ in lang._subjects}
    plur = {p for _, p in lang._subjects}
    verb_of = {w: pair for pair in lang.verbs for w in pair}
    return sing, plur, verb_of


def test_vocabulary_has_a_few_hundred_unique_words(lang):
    assert 100 <= lang.vocab_size < 1000
    assert len(set(lang.tokenizer.vocab)) == lang.vocab_size
    # the words the grammar needs to tell apart are distinct classes
    sing, plur, verb_of = _number_sets(lang)
    assert not (sing & plur)
    assert not ((sing | plur) & set(verb_of))
    assert not (set(lang.male_names) & set(lang.female_names))


def test_word_classes_cover_the_vocabulary_and_follow_the_word_lists(lang):
    cls = lang.word_classes()
    assert set(cls) == set(lang.tokenizer.vocab)
    sing, plur, _ = _number_sets(lang)
    assert {cls[w] for w in sing} == {"noun (singular)", "occupation (m)", "occupation (f)"}
    assert {cls[w] for w in plur} == {"noun (plural)", "occupation (plural)"}
    assert {cls[s] for s, _ in lang.verbs} == {"verb (singular)"}
    assert {cls[p] for _, p in lang.verbs} == {"verb (plural)"}
    assert {cls[n] for n in lang.male_names} == {"male name"} and {cls[n] for n in lang.female_names} == {"female name"}
    assert all(cls[o] == f"occupation ({g})" for o, g in lang.occupations.items())
    assert cls["he"] == "he" and cls["<bos>"] == "<bos>"


def test_tokenizer_round_trip_and_errors(lang):
    tok = lang.tokenizer
    text = "the old dog near the cabinets is happy ."
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id and len(ids) == len(text.split()) + 1
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids + [tok.pad_id] * 3)) == text
    assert tok.encode(text, bos=False) == ids[1:]
    assert tok["dog"] == ids[3]
    with pytest.raises(ValueError, match="unknown word 'zebra'"):
        tok.encode("the zebra is old .")
    with pytest.raises(TypeError, match="text"):
        tok.encode(["the", "dog"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicates"):
        Tokenizer(["<pad>", "<bos>", "a", "a"])


def test_corpus_is_deterministic_by_seed(lang):
    a = lang.sample_sentences(200, seed=5)
    assert a == lang.sample_sentences(200, seed=5)
    assert a != lang.sample_sentences(200, seed=6)
    assert torch.equal(lang.sample_batch(50, seed=5), lang.encode_batch(a[:50]))


def test_batches_are_bos_prefixed_padded_and_fit_the_context(lang):
    sentences = lang.sample_sentences(20000, seed=11)
    batch = lang.encode_batch(sentences)
    tok = lang.tokenizer
    assert batch.shape == (20000, lang.n_ctx) and batch.dtype == torch.long
    assert (batch[:, 0] == tok.bos_id).all()
    lengths = (batch != tok.pad_id).sum(1)
    assert torch.equal(lengths, torch.tensor([len(s.split()) + 1 for s in sentences]))
    # padding only at the end, and every sentence ends with "."
    for row, n in zip(batch[:200], lengths[:200]):
        assert (row[n:] == tok.pad_id).all() and row[n - 1] == tok["."]
    assert lengths.max() <= lang.n_ctx


def test_smallest_allowed_context_fits_every_sentence():
    # the longest sentence the grammar can produce is 15 tokens (<bos> + 14 words); the
    # minimum n_ctx that the constructor accepts must hold all of them
    small = None
    for n_ctx in range(1, 20):
        try:
            small = SyntheticLanguage(n_ctx=n_ctx)
            break
        except ValueError:
            continue
    assert small is not None
    small.sample_batch(30000, seed=1)  # must not raise


def _split_corpus(sentences: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    agree, pron = [], []
    for s in sentences:
        w = s.split()
        (pron if ("he" in w or "she" in w) else agree).append(w)
    return agree, pron


@pytest.mark.parametrize("p_agreement", [0.5, 0.8])
def test_corpus_mixes_the_two_phenomena_as_configured(p_agreement):
    n = 6000
    agree, pron = _split_corpus(SyntheticLanguage(p_agreement=p_agreement).sample_sentences(n, seed=2))
    assert within_binomial(len(agree) / n, p_agreement, n)


def test_agreement_sentences_always_agree_with_the_head_noun(lang):
    sing, plur, verb_of = _number_sets(lang)
    agree, _ = _split_corpus(lang.sample_sentences(8000, seed=3))
    n_attr = n_mismatch = 0
    for w in agree:
        assert w[0] == "the"
        head = w[2] if w[1] not in sing | plur else w[1]  # optional adjective before the head noun
        assert head in sing | plur, w
        verb_pos = next(i for i, x in enumerate(w) if x in verb_of)
        verb = w[verb_pos]
        nouns_before = [x for x in w[:verb_pos] if x in sing | plur]
        assert nouns_before[0] == head and len(nouns_before) in (1, 2), w
        singular_verb, plural_verb = verb_of[verb]
        assert verb == (plural_verb if head in plur else singular_verb), " ".join(w)
        if len(nouns_before) == 2:
            n_attr += 1
            n_mismatch += (nouns_before[1] in plur) != (head in plur)
    # attractor phrases appear at the configured rate, and half of them are the hard (mismatch) case
    assert within_binomial(n_attr / len(agree), lang.p_attractor, len(agree))
    assert within_binomial(n_mismatch / n_attr, 0.5, n_attr)


def test_pronouns_after_names_always_match_the_name_gender(lang):
    _, pron = _split_corpus(lang.sample_sentences(8000, seed=4))
    males, females = set(lang.male_names), set(lang.female_names)
    n_named = 0
    for w in pron:
        if w[0] in males | females:
            n_named += 1
            pronouns = [x for x in w if x in ("he", "she")]
            assert pronouns == ["he" if w[0] in males else "she"], " ".join(w)
    assert n_named > 1000


@pytest.mark.parametrize("bias", [0.85, 0.5, 1.0, 0.2])
def test_measured_occupation_bias_matches_the_configured_one(bias):
    lang = SyntheticLanguage(occupation_bias=bias)
    _, pron = _split_corpus(lang.sample_sentences(20000, seed=5))
    n = n_stereo = 0
    per_gender = {"m": [0, 0], "f": [0, 0]}
    for w in pron:
        if w[0] == "the" and w[1] in lang.occupations:
            stereo = "he" if lang.occupations[w[1]] == "m" else "she"
            pronoun = next(x for x in w if x in ("he", "she"))
            n += 1
            n_stereo += pronoun == stereo
            per_gender[lang.occupations[w[1]]][0] += 1
            per_gender[lang.occupations[w[1]]][1] += pronoun == stereo
    assert n > 3000
    assert within_binomial(n_stereo / n, bias, n), (n_stereo / n, bias)
    for g, (count, hits) in per_gender.items():  # the bias holds for both stereotypes
        assert within_binomial(hits / count, bias, count), (g, hits / count, bias)


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [(dict(occupation_bias=1.5), ValueError, "occupation_bias"), (dict(p_attractor=-0.1), ValueError, "p_attractor"),
     (dict(p_agreement=float("nan")), ValueError, "p_agreement"), (dict(n_ctx=8), ValueError, "n_ctx"),
     (dict(n_ctx=16.0), TypeError, "n_ctx")],
)
def test_synthetic_language_bad_config(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        SyntheticLanguage(**kwargs)


def test_encode_batch_rejects_too_long_sentences(lang):
    with pytest.raises(ValueError, match="n_ctx"):
        lang.encode_batch([" ".join(["the", "dog", "is", "old"] * 5) + " ."])
    with pytest.raises(ValueError, match="n"):
        lang.sample_sentences(0)


# --------------------------------------------------------------------------------------
# SyntheticLanguage: prompt pairs
# --------------------------------------------------------------------------------------
def _differ_in_exactly_one_position(pairs: PromptPairs) -> torch.Tensor:
    assert pairs.clean.shape == pairs.corrupted.shape
    diff = pairs.clean != pairs.corrupted
    assert (diff.sum(1) == 1).all()
    return diff.float().argmax(1)


@pytest.mark.parametrize("attractor", ["mismatch", "match", "none"])
def test_agreement_prompts(lang, attractor):
    pairs = lang.agreement_prompts(300, seed=1, attractor=attractor)
    assert len(pairs) == 300 and pairs.task == "agreement"
    assert pairs.clean.shape == (300, 6 if attractor != "none" else 3)
    assert pairs.answers.shape == (300, 2)
    assert (_differ_in_exactly_one_position(pairs) == 2).all()  # <bos> the SUBJ ...
    sing, plur, verb_of = _number_sets(lang)
    tok = lang.tokenizer
    for i in range(len(pairs)):
        clean = tok.decode(pairs.clean[i]).split()
        corr = tok.decode(pairs.corrupted[i]).split()
        right, wrong = tok.vocab[int(pairs.answers[i, 0])], tok.vocab[int(pairs.answers[i, 1])]
        s_form, p_form = verb_of[right]
        assert verb_of[wrong] == (s_form, p_form) and right != wrong  # two forms of one verb
        subj_plural = clean[1] in plur
        assert right == (p_form if subj_plural else s_form)
        assert (corr[1] in plur) != subj_plural  # the corrupted subject has the other number...
        assert wrong == (p_form if corr[1] in plur else s_form)  # ...and the other answer agrees with it
        assert pairs.labels["plural"][i] == subj_plural
        if attractor != "none":
            attr_plural = clean[4] in plur
            assert attr_plural == (subj_plural if attractor == "match" else not subj_plural)
    # both numbers are represented
    assert 0.3 < sum(pairs.labels["plural"]) / len(pairs) < 0.7


def test_gender_prompts_with_names(lang):
    pairs = lang.gender_prompts(300, seed=2, subject="name")
    pos = _differ_in_exactly_one_position(pairs)
    assert (pos == 1).all()  # <bos> NAME ...
    tok = lang.tokenizer
    males = set(lang.male_names)
    for i in range(len(pairs)):
        c, k = tok.vocab[int(pairs.clean[i, 1])], tok.vocab[int(pairs.corrupted[i, 1])]
        assert (c in males) != (k in males)  # the corrupted name has the other gender
        assert tok.vocab[int(pairs.answers[i, 0])] == ("he" if c in males else "she")
        assert tok.vocab[int(pairs.answers[i, 1])] == ("he" if k in males else "she")
        assert tok.vocab[int(pairs.clean[i, -1])] == "and"
        assert pairs.labels["clean_subject"][i] == c and pairs.labels["corrupted_subject"][i] == k


def test_gender_prompts_with_occupations(lang):
    pairs = lang.gender_prompts(200, seed=3, subject="occupation")
    assert (_differ_in_exactly_one_position(pairs) == 2).all()  # <bos> the OCC ...
    tok = lang.tokenizer
    assert (pairs.answers[:, 0] == tok["she"]).all() and (pairs.answers[:, 1] == tok["he"]).all()
    for i in range(len(pairs)):
        assert lang.occupations[tok.vocab[int(pairs.clean[i, 2])]] == "f"
        assert lang.occupations[tok.vocab[int(pairs.corrupted[i, 2])]] == "m"


def test_occupation_prompts_cover_every_occupation(lang):
    tokens, names = lang.occupation_prompts(seed=0, per_occupation=5)
    assert tokens.shape == (len(lang.occupations) * 5, 7)
    assert sorted(set(names)) == sorted(lang.occupations)
    tok = lang.tokenizer
    for row, occ in zip(tokens, names):
        words = tok.decode(row).split()
        assert words[:2] == ["the", occ] and words[-1] == "and"


def test_prompt_pairs_are_deterministic_indexable_and_movable(lang):
    a = lang.agreement_prompts(20, seed=9)
    b = lang.agreement_prompts(20, seed=9)
    assert torch.equal(a.clean, b.clean) and torch.equal(a.answers, b.answers)
    sub = a[2:5]
    assert len(sub) == 3 and torch.equal(sub.clean, a.clean[2:5]) and sub.labels["verb"] == a.labels["verb"][2:5]
    picked = a[torch.tensor([0, 7])]
    assert torch.equal(picked.corrupted, a.corrupted[[0, 7]]) and picked.labels["plural"] == [
        a.labels["plural"][0], a.labels["plural"][7]]
    moved = a.to("cpu")
    assert moved.clean.device.type == "cpu" and moved.task == a.task


def test_prompt_bad_inputs(lang):
    with pytest.raises(ValueError, match="attractor"):
        lang.agreement_prompts(5, attractor="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="subject"):
        lang.gender_prompts(5, subject="pet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n"):
        lang.gender_prompts(0)
    with pytest.raises(TypeError, match="per_occupation"):
        lang.occupation_prompts(per_occupation=2.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# SparseFeatures (the task object of the TMS / residual-MLP zoo entries)
# --------------------------------------------------------------------------------------
def test_sparse_features_task_samples_and_labels():
    from mechnb.tasks import SparseFeatures

    tms = SparseFeatures(n_features=5, feature_probability=0.05)
    x = tms.sample(20000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (20000, 5)
    assert within_binomial((x != 0).float().mean().item(), 0.05, x.numel())
    assert torch.equal(x, sparse_features(20000, 5, 0.05, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(tms.label(x), x)
    resid = SparseFeatures(n_features=4, feature_probability=0.5, value_range=(-1, 1), target="resid_relu")
    x = resid.sample(1000, generator=torch.Generator().manual_seed(1))
    assert (x < 0).any() and (x > 0).any()
    torch.testing.assert_close(resid.label(x), x + torch.relu(x))
    with pytest.raises(ValueError, match="target"):
        SparseFeatures(5, 0.05, target="square")
    with pytest.raises(ValueError, match="feature_probability"):
        SparseFeatures(5, 2.0)


# --------------------------------------------------------------------------------------
# Non-finite value ranges, the tokenizer's ids and vocabulary, integer residues, seeds
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value_range", "exc", "needle"),
    [((0, math.inf), ValueError, r"value_range: expected finite \(low, high\)"),
     ((-math.inf, 0), ValueError, "finite"), ((0, math.nan), ValueError, "finite"),
     ((-1e308, 1e308), ValueError, "finite width"), ((0, 1, 2), TypeError, "pair"),
     ("ab", TypeError, "pair"), ((0, "1"), TypeError, "pair"), ((False, True), TypeError, "pair"),
     ((1.0, 1.0), ValueError, "low < high")],
)
def test_a_value_range_without_a_uniform_distribution_is_refused(value_range, exc, needle):
    from mechnb.tasks import SparseFeatures

    with pytest.raises(exc, match=needle):
        sparse_features(8, 5, 0.5, value_range=value_range)
    with pytest.raises(exc, match=needle):
        SparseFeatures(5, 0.5, value_range=value_range)


def test_a_wide_value_range_gives_finite_float32_values_inside_it():
    x = sparse_features(500, 4, 1.0, generator=torch.Generator().manual_seed(0), value_range=(-1.5e38, 1.5e38))
    assert x.dtype == torch.float32 and torch.isfinite(x).all() and (x.abs() <= 1.5e38).all()
    assert (x < -1e37).any() and (x > 1e37).any()
    with pytest.raises(ValueError, match="value_range: expected bounds and width high - low within float32's range"):
        sparse_features(8, 4, 1.0, value_range=(-1e300, 1e300))  # finite in float64, inf once sampled in float32
    with pytest.raises(ValueError, match="within float32's range"):
        sparse_features(8, 4, 1.0, value_range=(-3e38, 3e38))  # each bound fits, the width does not


def test_sparse_features_generator_must_be_a_generator():
    with pytest.raises(TypeError, match="generator: expected a torch.Generator"):
        sparse_features(4, 5, 0.5, generator=0)


@pytest.mark.parametrize(
    ("ids", "exc", "needle"),
    [([-1], ValueError, r"ids: expected ids in \[0, \d+\), got -1"), ([9999], ValueError, "got 9999"),
     (torch.tensor([-2]), ValueError, "got -2"), ([1.0], TypeError, "ids: expected ints, got float"),
     ([True], TypeError, "got bool"), (torch.tensor([1.0]), TypeError, "integer tensor"),
     (torch.tensor([[1, 2]]), ValueError, "1-D"), ("the dog", TypeError, "ids: expected a list"),
     (5, TypeError, "ids: expected a list")],
)
def test_decode_refuses_ids_outside_the_vocabulary(lang, ids, exc, needle):
    with pytest.raises(exc, match=needle):
        lang.tokenizer.decode(ids)


def test_decode_keeps_its_round_trip_for_the_first_and_last_ids(lang):
    tok = lang.tokenizer
    last = len(tok) - 1
    assert tok.decode([last, 0], skip_special=False) == f"{tok.vocab[last]} <pad>"
    assert tok.decode([]) == ""
    with pytest.raises(TypeError, match="stop_at"):
        tok.decode([3], stop_at=3)


@pytest.mark.parametrize(
    ("vocab", "exc", "needle"),
    [(["a", "b"], ValueError, r"vocab: expected the special words '<pad>' and '<bos>' in it, \['<pad>', '<bos>'\] "
                              r"missing from \['a', 'b'\]"),
     (["<pad>", "a"], ValueError, r"\['<bos>'\] missing"), ("abc", TypeError, "vocab: expected a list of words"),
     (["<pad>", "<bos>", "two words"], ValueError, "without whitespace"),
     (["<pad>", "<bos>", 3], ValueError, "without whitespace"),
     (["<pad>", "<bos>", "a", "a"], ValueError, r"duplicates \['a'\]")],
)
def test_tokenizer_vocabulary_is_checked(vocab, exc, needle):
    with pytest.raises(exc, match=needle):
        Tokenizer(vocab)


def test_unknown_word_lookup_says_so(lang):
    with pytest.raises(KeyError, match="'zebra' is not in the vocabulary"):
        lang.tokenizer["zebra"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_modular_encode_refuses_non_integer_residues(dtype):
    task = ModularArithmetic(P=5)
    with pytest.raises(TypeError, match=f"a: expected integer residues .*got dtype {dtype}"):
        task.encode(torch.tensor([1, 0]).to(dtype), torch.tensor([2, 3]))
    with pytest.raises(TypeError, match=f"b: expected integer residues .*got dtype {dtype}"):
        task.encode(torch.tensor([1, 0]), torch.tensor([2, 3]).to(dtype))
    assert torch.equal(task.encode([1, 0], [2, 3]), task.encode(torch.tensor([1, 0]), torch.tensor([2, 3])))


@pytest.mark.parametrize(("seed", "exc"), [(1.5, TypeError), ("a", TypeError), (True, TypeError), (-1, ValueError)])
def test_task_seeds_are_ints(lang, seed, exc):
    with pytest.raises(exc, match="seed: expected an int seed"):
        ModularArithmetic(seed=seed)
    with pytest.raises(exc, match="seed: expected an int seed"):
        lang.sample_sentences(3, seed=seed)
    with pytest.raises(exc, match="seed: expected an int seed"):
        lang.agreement_prompts(3, seed=seed)
    with pytest.raises(exc, match="seed: expected an int seed"):
        lang.gender_prompts(3, seed=seed)
    with pytest.raises(exc, match="seed: expected an int seed"):
        lang.occupation_prompts(seed=seed)


def test_encode_batch_wants_a_list_of_sentences(lang):
    with pytest.raises(TypeError, match="sentences: expected a list of str"):
        lang.encode_batch("the dog is old .")
