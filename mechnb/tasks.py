"""Data for the zoo models: sparse features, modular arithmetic, and a tiny synthetic language.

* :func:`sparse_features` - each feature active independently with probability ``p``,
  value ``U[lo, hi]`` (TMS: ``U[0, 1]``; residual MLP: ``U[-1, 1]``).
* :class:`ModularArithmetic` - ``a (op) b mod P`` as one-hot pairs for an MLP.
* :class:`SyntheticLanguage` - a probabilistic grammar with a few hundred words that contains
  subject-verb number agreement across attractor phrases ("the key near the cabinets *is*")
  and pronoun gender after names and occupations, with a configurable occupation->gender
  bias planted in the training corpus. Gives the corpus sampler, a word-level tokenizer and
  clean/corrupted prompt pairs with their two answer tokens.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from mechnb._checks import check_choice, check_positive_int, check_probability, check_seed, resolve_device

__all__ = [
    "sparse_features",
    "SparseFeatures",
    "ModularArithmetic",
    "ModularSplit",
    "Tokenizer",
    "PromptPairs",
    "SyntheticLanguage",
]


# --------------------------------------------------------------------------------------
# Sparse features
# --------------------------------------------------------------------------------------
def _check_value_range(value_range: Any) -> tuple[float, float]:
    """``value_range`` as ``(low, high)`` floats: finite, ``low < high``, bounds and width within float32's range."""
    if isinstance(value_range, (str, bytes)) or not isinstance(value_range, Sequence) or len(value_range) != 2:
        raise TypeError(f"value_range: expected a pair (low, high) of numbers, got {value_range!r}")
    for v in value_range:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"value_range: expected a pair (low, high) of numbers, got {value_range!r}")
    lo, hi = float(value_range[0]), float(value_range[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(hi - lo)):
        raise ValueError(f"value_range: expected finite (low, high) with a finite width high - low, got {value_range!r}")
    top = torch.finfo(torch.float32).max  # the samples are float32
    if max(abs(lo), abs(hi), hi - lo) > top:
        raise ValueError(f"value_range: expected bounds and width high - low within float32's range (+-{top:.3g}), "
                         f"got {value_range!r}")
    if not lo < hi:
        raise ValueError(f"value_range: expected (low, high) with low < high, got {value_range!r}")
    return lo, hi


def sparse_features(
    batch_size: int,
    n_features: int,
    feature_probability: float,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Sample ``(batch_size, n_features)`` sparse inputs.

    Each feature is active independently with probability ``feature_probability``; an active
    feature takes a value ``U[value_range]``, an inactive one is exactly 0. ``value_range`` must be
    finite (``(0, inf)`` raises ``ValueError``: there is no uniform distribution on it).
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("n_features", n_features)
    p = check_probability("feature_probability", feature_probability)
    lo, hi = _check_value_range(value_range)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    dev = resolve_device(device)
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    active = torch.rand(batch_size, n_features, generator=generator, device=gen_dev) < p
    values = torch.rand(batch_size, n_features, generator=generator, device=gen_dev) * (hi - lo) + lo
    return (values * active).to(dev)


@dataclass
class SparseFeatures:
    """The sparse-feature task of a TMS / residual-MLP model: ``sample(batch, generator)``.

    ``target="identity"`` (TMS: reconstruct ``x``) or ``"resid_relu"`` (``y = x + ReLU(x)``).
    """

    n_features: int
    feature_probability: float
    value_range: tuple[float, float] = (0.0, 1.0)
    target: str = "identity"

    def __post_init__(self) -> None:
        check_positive_int("n_features", self.n_features)
        check_probability("feature_probability", self.feature_probability)
        check_choice("target", self.target, ["identity", "resid_relu"])
        self.value_range = _check_value_range(self.value_range)

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: str | torch.device = "cpu") -> torch.Tensor:
        """``(batch_size, n_features)`` inputs (see :func:`sparse_features`)."""
        return sparse_features(batch_size, self.n_features, self.feature_probability, generator, device,
                               self.value_range)

    def label(self, x: torch.Tensor) -> torch.Tensor:
        """The regression target for inputs ``x``."""
        return x if self.target == "identity" else x + torch.relu(x)


# --------------------------------------------------------------------------------------
# Modular arithmetic
# --------------------------------------------------------------------------------------
@dataclass
class ModularSplit:
    """One-hot inputs ``x (n, 2P)``, labels ``y (n,)`` and the raw pairs ``ab (n, 2)`` of a split."""

    x: torch.Tensor
    y: torch.Tensor
    ab: torch.Tensor


_MOD_OPS = {
    "add": lambda a, b, P: (a + b) % P,
    "sub": lambda a, b, P: (a - b) % P,
    "mul": lambda a, b, P: (a * b) % P,
    "sq_sum": lambda a, b, P: (a * a + b * b) % P,
}


@dataclass
class ModularArithmetic:
    """``c = a (op) b mod P`` with ``a, b`` encoded as the concatenation of two one-hots.

    ``op`` is ``"add"`` (the modular-addition task of the zoo), ``"sub"``, ``"mul"`` or
    ``"sq_sum"`` (``a^2 + b^2``; used as the "other task" for fine-tuning experiments).
    The ``P^2`` pairs are split into train/test by a seeded permutation.
    """

    P: int = 23
    op: str = "add"
    train_frac: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("P", self.P, minimum=2)
        check_choice("op", self.op, list(_MOD_OPS))
        check_probability("train_frac", self.train_frac, open_left=True)
        check_seed("seed", self.seed)

    @property
    def n_inputs(self) -> int:
        return 2 * self.P

    def encode(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """One-hot encode pairs: ``a, b (n,)`` int -> ``(n, 2P)`` float (floats and bools raise ``TypeError``)."""
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        for name, t in (("a", a), ("b", b)):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise TypeError(f"{name}: expected integer residues (an int tensor or list of ints), got dtype {t.dtype}")
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"a, b: expected two 1-D tensors of equal length, got {tuple(a.shape)} and {tuple(b.shape)}")
        if (a < 0).any() or (a >= self.P).any() or (b < 0).any() or (b >= self.P).any():
            raise ValueError(f"a, b: expected residues in [0, {self.P}), got values outside that range")
        x = torch.zeros(a.shape[0], 2 * self.P)
        x[torch.arange(a.shape[0]), a] = 1.0
        x[torch.arange(a.shape[0]), self.P + b] = 1.0
        return x

    def label(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _MOD_OPS[self.op](a, b, self.P)

    def all_pairs(self) -> ModularSplit:
        """Every pair ``(a, b)`` in row-major order (``a`` slow, ``b`` fast)."""
        a = torch.arange(self.P).repeat_interleave(self.P)
        b = torch.arange(self.P).repeat(self.P)
        return ModularSplit(self.encode(a, b), self.label(a, b), torch.stack([a, b], 1))

    def split(self) -> tuple[ModularSplit, ModularSplit]:
        """``(train, test)`` splits of all pairs, by a permutation seeded with ``seed``."""
        full = self.all_pairs()
        perm = torch.randperm(self.P * self.P, generator=torch.Generator().manual_seed(self.seed))
        n_train = int(round(self.train_frac * self.P * self.P))
        tr, te = perm[:n_train], perm[n_train:]
        return (ModularSplit(full.x[tr], full.y[tr], full.ab[tr]), ModularSplit(full.x[te], full.y[te], full.ab[te]))


# --------------------------------------------------------------------------------------
# Synthetic language
# --------------------------------------------------------------------------------------
_NOUNS = [
    ("dog", "dogs"), ("cat", "cats"), ("key", "keys"), ("table", "tables"), ("book", "books"), ("car", "cars"),
    ("house", "houses"), ("tree", "trees"), ("bird", "birds"), ("box", "boxes"), ("letter", "letters"),
    ("picture", "pictures"), ("garden", "gardens"), ("window", "windows"), ("door", "doors"), ("road", "roads"),
    ("river", "rivers"), ("song", "songs"), ("game", "games"), ("plan", "plans"), ("idea", "ideas"),
    ("horse", "horses"), ("chair", "chairs"), ("cup", "cups"), ("shoe", "shoes"), ("phone", "phones"),
    ("lamp", "lamps"), ("cabinet", "cabinets"), ("painting", "paintings"), ("bridge", "bridges"),
    ("tower", "towers"), ("coin", "coins"), ("flower", "flowers"), ("boat", "boats"), ("clock", "clocks"),
    ("map", "maps"), ("bag", "bags"), ("desk", "desks"), ("wall", "walls"), ("stone", "stones"),
]  # fmt: skip
#: occupations and the gender the training corpus associates with them ("m" -> he, "f" -> she)
_OCCUPATIONS = {
    "engineer": "m", "mechanic": "m", "pilot": "m", "carpenter": "m", "farmer": "m", "soldier": "m",
    "plumber": "m", "surgeon": "m", "guard": "m", "builder": "m", "banker": "m", "sailor": "m",
    "nurse": "f", "secretary": "f", "dancer": "f", "librarian": "f", "teacher": "f", "baker": "f",
    "nanny": "f", "hairdresser": "f", "receptionist": "f", "designer": "f", "cashier": "f", "stylist": "f",
}  # fmt: skip
_MALE_NAMES = ["john", "james", "robert", "michael", "david", "william", "richard", "thomas", "charles", "daniel",
               "paul", "mark", "george", "peter", "henry", "jack", "adam", "oliver", "samuel", "edward"]
_FEMALE_NAMES = ["mary", "linda", "susan", "sarah", "karen", "lisa", "nancy", "emma", "anna", "laura",
                 "julia", "alice", "grace", "helen", "rose", "clara", "sophie", "lucy", "olivia", "kate"]
_VERBS = [
    ("is", "are"), ("was", "were"), ("has", "have"), ("likes", "like"), ("sees", "see"), ("needs", "need"),
    ("wants", "want"), ("finds", "find"), ("makes", "make"), ("takes", "take"), ("helps", "help"),
    ("holds", "hold"), ("moves", "move"), ("follows", "follow"), ("opens", "open"), ("watches", "watch"),
    ("reaches", "reach"), ("breaks", "break"), ("carries", "carry"), ("loves", "love"),
]  # fmt: skip
_COPULAS = {"is", "are", "was", "were"}
_PAST = ["saw", "found", "liked", "took", "made", "helped", "visited", "painted", "opened", "fixed", "cleaned",
         "moved", "wanted", "bought", "sold", "watched", "carried", "followed", "needed", "built"]
_ADJS = ["old", "new", "red", "big", "small", "green", "blue", "tall", "quiet", "happy", "dark", "bright",
         "heavy", "strange", "young", "quick", "broken", "empty", "warm", "cold"]
_PREPS = ["near", "behind", "beside", "under", "above", "by", "with", "for"]
_CONNECTIVES = ["and", "because", "so"]
_SPECIAL = ["<pad>", "<bos>", "."]
_FUNCTION = ["the", "he", "she", "said", "that", "today", "again"]


def _occupation_plural(o: str) -> str:
    return o[:-1] + "ies" if o.endswith("y") and o[-2] not in "aeiou" else o + "s"


class Tokenizer:
    """Word-level tokenizer over a fixed vocabulary (whitespace-separated words).

    ``vocab`` is a list of unique words without whitespace that contains the special words
    ``<pad>`` and ``<bos>``; ids are positions in it.
    """

    def __init__(self, vocab: list[str]) -> None:
        if isinstance(vocab, (str, bytes)) or not isinstance(vocab, Sequence):
            raise TypeError(f"vocab: expected a list of words, got {type(vocab).__name__}")
        bad = [w for w in vocab if not isinstance(w, str) or not w or w.split() != [w]]
        if bad:
            raise ValueError(f"vocab: expected non-empty words without whitespace, got {bad[:5]!r}")
        if len(set(vocab)) != len(vocab):
            dup = sorted({w for w in vocab if list(vocab).count(w) > 1})
            raise ValueError(f"vocab: expected unique words, got duplicates {dup[:5]!r}")
        missing = [w for w in ("<pad>", "<bos>") if w not in vocab]
        if missing:
            raise ValueError(f"vocab: expected the special words '<pad>' and '<bos>' in it, {missing} missing "
                             f"from {list(vocab)[:8]!r}{' ...' if len(vocab) > 8 else ''}")
        self.vocab = list(vocab)
        self.token_to_id = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id = self.token_to_id["<pad>"]
        self.bos_id = self.token_to_id["<bos>"]

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, bos: bool = True) -> list[int]:
        """``"the dog is old ."`` -> ids (with a leading ``<bos>`` unless ``bos=False``)."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        ids = [self.bos_id] if bos else []
        for w in text.split():
            if w not in self.token_to_id:
                raise ValueError(f"text: unknown word {w!r} (the vocabulary has {len(self.vocab)} words)")
            ids.append(self.token_to_id[w])
        return ids

    def decode(self, ids: list[int] | torch.Tensor, skip_special: bool = True, stop_at: str | None = None) -> str:
        """ids -> text; ``stop_at="."`` cuts after the first occurrence of that word.

        ``ids``: a list of ints or a 1-D integer tensor, each in ``[0, len(vocab))`` (negative ids
        are not counted from the end: they raise ``ValueError`` like any id out of range).
        """
        if isinstance(ids, torch.Tensor):
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
                raise TypeError(f"ids: expected an integer tensor, got dtype {ids.dtype}")
            if ids.ndim != 1:
                raise ValueError(f"ids: expected a 1-D tensor of token ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise TypeError(f"ids: expected a list of ints or a 1-D integer tensor, got {type(ids).__name__}")
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise TypeError(f"ids: expected ints, got {type(i).__name__} {i!r}")
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"ids: expected ids in [0, {len(self.vocab)}), got {int(i)}")
        if stop_at is not None and not isinstance(stop_at, str):
            raise TypeError(f"stop_at: expected a word (str) or None, got {type(stop_at).__name__}")
        words = [self.vocab[i] for i in ids]
        if stop_at is not None and stop_at in words:
            words = words[: words.index(stop_at) + 1]
        if skip_special:
            words = [w for w in words if w not in ("<pad>", "<bos>")]
        return " ".join(words)

    def __getitem__(self, word: str) -> int:
        """The id of ``word``; an unknown word raises ``KeyError`` saying so."""
        try:
            return self.token_to_id[word]
        except (KeyError, TypeError):
            raise KeyError(f"word: {word!r} is not in the vocabulary ({len(self.vocab)} words)") from None


@dataclass
class PromptPairs:
    """Clean/corrupted prompts that differ in one word, with the two answer tokens.

    ``clean`` and ``corrupted``: ``(n, pos)`` int64; ``answers``: ``(n, 2)`` int64 where
    ``answers[:, 0]`` is the correct next token for the clean prompt and ``answers[:, 1]``
    the correct one for the corrupted prompt. The task metric is the logit difference
    ``logits[-1, answers[:, 0]] - logits[-1, answers[:, 1]]`` (positive = clean answer wins).
    ``labels`` carries phenomenon-specific metadata (e.g. the occupation's stereotype).
    """

    clean: torch.Tensor
    corrupted: torch.Tensor
    answers: torch.Tensor
    task: str
    labels: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.clean.shape[0])

    @classmethod
    def from_texts(cls, tokenizer: Any, clean: Sequence[str], corrupted: Sequence[str], answer: Sequence[str],
                   wrong: Sequence[str], task: str = "custom", add_special_tokens: bool = False) -> PromptPairs:
        """Prompt pairs from text, for any Hugging Face tokenizer (anything with ``encode(text,
        add_special_tokens=...) -> list[int]``).

        Args:
            clean, corrupted: ``n`` prompts each; pair ``i`` must tokenize to the same number of
                tokens, and all pairs to one length (they are stacked into ``(n, pos)``).
            answer: the token that should follow ``clean[i]`` (e.g. ``" Mary"`` for GPT-2, whose
                tokens carry their leading space); ``wrong``: the one that should follow
                ``corrupted[i]`` (the logit-difference metric is ``answer - wrong`` on the clean prompt).
                Each must be exactly one token.
            task: a name for the prompts; ``add_special_tokens``: passed to ``encode`` for the prompts.

        Raises:
            ValueError: lists of different lengths, an empty list, a pair whose prompts tokenize to
                different lengths, pairs of different lengths, or an answer that is not one token
                (the message names the argument, the index, the text and its tokens).
            TypeError: a tokenizer without ``encode``, or a non-string entry.
        """
        if not callable(getattr(tokenizer, "encode", None)):
            raise TypeError(f"tokenizer: expected a tokenizer with an encode(text) method (e.g. a Hugging Face "
                            f"tokenizer), got {type(tokenizer).__name__}")
        lists = {"clean": clean, "corrupted": corrupted, "answer": answer, "wrong": wrong}
        for name, texts in lists.items():
            if isinstance(texts, str) or not isinstance(texts, Sequence):
                raise TypeError(f"{name}: expected a list of strings, got {type(texts).__name__}")
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise TypeError(f"{name}[{i}]: expected a string, got {type(t).__name__} {t!r}")
        n = len(clean)
        if n == 0:
            raise ValueError("clean: expected at least one prompt, got an empty list")
        for name, texts in lists.items():
            if len(texts) != n:
                raise ValueError(f"{name}: expected {n} entries (one per clean prompt), got {len(texts)}")

        def encode(text: str, special: bool) -> list[int]:
            ids = tokenizer.encode(text, add_special_tokens=special)
            return [int(i) for i in ids]

        rows_c, rows_k, ans = [], [], []
        for i in range(n):
            c, k = encode(clean[i], add_special_tokens), encode(corrupted[i], add_special_tokens)
            if len(c) != len(k):
                raise ValueError(f"corrupted[{i}]: expected as many tokens as clean[{i}] ({len(c)}: {c}), got "
                                 f"{len(k)}: {k} for {corrupted[i]!r} (clean {clean[i]!r}); patching needs "
                                 f"position-aligned prompts")
            if rows_c and len(c) != len(rows_c[0]):
                raise ValueError(f"clean[{i}]: expected {len(rows_c[0])} tokens like clean[0], got {len(c)} for "
                                 f"{clean[i]!r}; the prompts are stacked into one (n, pos) tensor")
            pair = []
            for name, text in (("answer", answer[i]), ("wrong", wrong[i])):
                ids = encode(text, False)
                if len(ids) != 1:
                    raise ValueError(f"{name}[{i}]: expected a single token, got {len(ids)} tokens {ids} for "
                                     f"{text!r}")
                pair.append(ids[0])
            rows_c.append(c)
            rows_k.append(k)
            ans.append(pair)
        if not rows_c[0]:
            raise ValueError(f"clean[0]: expected at least one token, got none for {clean[0]!r}")
        return cls(torch.tensor(rows_c, dtype=torch.long), torch.tensor(rows_k, dtype=torch.long),
                   torch.tensor(ans, dtype=torch.long), task,
                   {"clean_text": list(clean), "corrupted_text": list(corrupted)})

    def to(self, device: str | torch.device) -> PromptPairs:
        return PromptPairs(self.clean.to(device), self.corrupted.to(device), self.answers.to(device), self.task,
                           self.labels)

    def __getitem__(self, idx: slice | torch.Tensor) -> PromptPairs:
        sel = idx if isinstance(idx, slice) else torch.as_tensor(idx)
        lab = {k: (v[sel] if isinstance(sel, slice) else [v[int(i)] for i in sel]) for k, v in self.labels.items()}
        return PromptPairs(self.clean[sel], self.corrupted[sel], self.answers[sel], self.task, lab)


@dataclass
class SyntheticLanguage:
    """A small English-like probabilistic grammar with two planted phenomena.

    Sentence kinds (each one sequence ``<bos> ... .``):

    * **agreement**: ``the [ADJ] SUBJ [PREP the [ADJ] ATTRACTOR] VERB ...`` - the verb
      agrees in number with ``SUBJ``, never with the attractor noun inside the prepositional
      phrase (present with probability ``p_attractor``, its number random).
    * **pronoun**: ``NAME|the OCCUPATION PAST the [ADJ] OBJ CONNECTIVE he|she PAST ...`` or
      ``... said that he|she PAST ...``. Names have a fixed gender; an occupation's pronoun
      is its stereotyped gender with probability ``occupation_bias`` (the planted bias).

    Args:
        occupation_bias: P(stereotyped pronoun | occupation) in the corpus, in [0, 1].
        p_attractor: probability that an agreement sentence has an attractor phrase.
        p_agreement: fraction of agreement sentences in the corpus (the rest are pronoun ones).
        n_ctx: context length that batches are padded to.
    """

    occupation_bias: float = 0.85
    p_attractor: float = 0.6
    p_agreement: float = 0.5
    n_ctx: int = 16

    def __post_init__(self) -> None:
        check_probability("occupation_bias", self.occupation_bias)
        check_probability("p_attractor", self.p_attractor)
        check_probability("p_agreement", self.p_agreement)
        check_positive_int("n_ctx", self.n_ctx, minimum=15)  # longest sentence: <bos> + 14 words
        occ_plural = [_occupation_plural(o) for o in _OCCUPATIONS]
        vocab = (_SPECIAL + _FUNCTION + [w for pair in _NOUNS for w in pair] + list(_OCCUPATIONS) + occ_plural
                 + _MALE_NAMES + _FEMALE_NAMES + [w for pair in _VERBS for w in pair] + _PAST + _ADJS + _PREPS
                 + _CONNECTIVES)
        self.tokenizer = Tokenizer(vocab)
        self.occupations = dict(_OCCUPATIONS)
        self.male_names, self.female_names = list(_MALE_NAMES), list(_FEMALE_NAMES)
        self.verbs = list(_VERBS)
        self._subjects = [(s, p) for s, p in _NOUNS] + [(o, _occupation_plural(o)) for o in _OCCUPATIONS]

    # -- corpus ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def word_classes(self) -> dict[str, str]:
        """``{word: class}``: each vocabulary word's part in the grammar, from its own word lists.

        Classes: ``noun (singular)`` / ``noun (plural)`` (object and subject nouns),
        ``occupation (m)`` / ``occupation (f)`` (singular, by the stereotyped gender) and
        ``occupation (plural)``, ``male name`` / ``female name``, ``verb (singular)`` /
        ``verb (plural)`` (present tense, agreeing with the subject), ``past verb``, ``adjective``,
        ``preposition``, ``connective``; the function and special words are their own class
        (``the``, ``he``, ``she``, ``said``, ``that``, ``today``, ``again``, ``.``, ``<bos>``, ``<pad>``).
        """
        out: dict[str, str] = {w: w for w in _SPECIAL + _FUNCTION}
        for sing, plur in _NOUNS:
            out[sing], out[plur] = "noun (singular)", "noun (plural)"
        for occ, gender in self.occupations.items():
            out[occ], out[_occupation_plural(occ)] = f"occupation ({gender})", "occupation (plural)"
        out.update({n: "male name" for n in self.male_names})
        out.update({n: "female name" for n in self.female_names})
        for sing, plur in self.verbs:
            out[sing], out[plur] = "verb (singular)", "verb (plural)"
        for words, cls in ((_PAST, "past verb"), (_ADJS, "adjective"), (_PREPS, "preposition"),
                           (_CONNECTIVES, "connective")):
            out.update({w: cls for w in words})
        return out

    def _np(self, rng: random.Random, plural: bool | None = None, adj_p: float = 0.3) -> tuple[list[str], bool]:
        sing, plur = rng.choice(self._subjects)
        if plural is None:
            plural = rng.random() < 0.5
        words = ["the"] + ([rng.choice(_ADJS)] if rng.random() < adj_p else []) + [plur if plural else sing]
        return words, plural

    def _object(self, rng: random.Random) -> list[str]:
        sing, plur = rng.choice(_NOUNS)
        return ["the"] + ([rng.choice(_ADJS)] if rng.random() < 0.3 else []) + [rng.choice([sing, plur])]

    def agreement_sentence(self, rng: random.Random) -> str:
        words, plural = self._np(rng)
        if rng.random() < self.p_attractor:
            attr, _ = self._np(rng)
            words += [rng.choice(_PREPS)] + attr
        verb = rng.choice(self.verbs)[1 if plural else 0]
        words.append(verb)
        words += [rng.choice(_ADJS)] if verb in _COPULAS else self._object(rng)
        return " ".join(words + ["."])

    def pronoun_sentence(self, rng: random.Random) -> str:
        if rng.random() < 0.5:
            male = rng.random() < 0.5
            subj = [rng.choice(self.male_names if male else self.female_names)]
        else:
            occ = rng.choice(list(self.occupations))
            stereo_male = self.occupations[occ] == "m"
            male = stereo_male if rng.random() < self.occupation_bias else not stereo_male
            subj = ["the", occ]
        pron = "he" if male else "she"
        if rng.random() < 0.25:
            words = subj + ["said", "that", pron, rng.choice(_PAST)] + self._object(rng)
        else:
            words = subj + [rng.choice(_PAST)] + self._object(rng) + [rng.choice(_CONNECTIVES), pron, rng.choice(_PAST)]
            words += self._object(rng)
        if rng.random() < 0.2:
            words.append(rng.choice(["today", "again"]))
        return " ".join(words + ["."])

    def sample_sentences(self, n: int, seed: int = 0) -> list[str]:
        """``n`` corpus sentences (a deterministic function of ``seed``)."""
        check_positive_int("n", n)
        rng = random.Random(check_seed("seed", seed))
        return [self.agreement_sentence(rng) if rng.random() < self.p_agreement else self.pronoun_sentence(rng)
                for _ in range(n)]

    def encode_batch(self, sentences: list[str]) -> torch.Tensor:
        """Encode sentences as ``(n, n_ctx)`` int64, ``<bos>``-prefixed and ``<pad>``-padded."""
        if isinstance(sentences, (str, bytes)) or not isinstance(sentences, Sequence):
            raise TypeError(f"sentences: expected a list of str, got {type(sentences).__name__}")
        out = torch.full((len(sentences), self.n_ctx), self.tokenizer.pad_id, dtype=torch.long)
        for i, s in enumerate(sentences):
            ids = self.tokenizer.encode(s)
            if len(ids) > self.n_ctx:
                raise ValueError(f"sentences[{i}]: {len(ids)} tokens exceed n_ctx={self.n_ctx}")
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def sample_batch(self, n: int, seed: int = 0) -> torch.Tensor:
        """``(n, n_ctx)`` token ids of freshly sampled corpus sentences."""
        return self.encode_batch(self.sample_sentences(n, seed))

    # -- prompts --------------------------------------------------------------------------
    def agreement_prompts(
        self, n: int, seed: int = 0, attractor: Literal["mismatch", "match", "none"] = "mismatch",
        device: str | torch.device = "cpu",
    ) -> PromptPairs:
        """``<bos> the SUBJ PREP the ATTR`` -> verb, and the same with SUBJ's number flipped.

        ``attractor="mismatch"``: the attractor has the opposite number to the clean subject
        (the hard case); ``"match"``: the same number; ``"none"``: prompts are
        ``<bos> the SUBJ`` only. ``answers[:, 0]`` is the verb form agreeing with the clean
        subject, ``answers[:, 1]`` the other form of the same verb.
        """
        check_positive_int("n", n)
        check_choice("attractor", attractor, ["mismatch", "match", "none"])
        rng = random.Random(check_seed("seed", seed))
        tok = self.tokenizer
        clean, corr, ans = [], [], []
        lab: dict[str, list] = {"plural": [], "verb": []}
        for _ in range(n):
            sing, plur = rng.choice(self._subjects)
            plural = rng.random() < 0.5
            verb = rng.choice(self.verbs)
            tail: list[str] = []
            if attractor != "none":
                a_sing, a_plur = rng.choice(self._subjects)
                a_plural = (not plural) if attractor == "mismatch" else plural
                tail = [rng.choice(_PREPS), "the", a_plur if a_plural else a_sing]
            clean.append(tok.encode(" ".join(["the", plur if plural else sing] + tail)))
            corr.append(tok.encode(" ".join(["the", sing if plural else plur] + tail)))
            right, wrong = (verb[1], verb[0]) if plural else (verb[0], verb[1])
            ans.append([tok[right], tok[wrong]])
            lab["plural"].append(plural)
            lab["verb"].append(verb[0])
        dev = resolve_device(device)
        return PromptPairs(torch.tensor(clean, device=dev), torch.tensor(corr, device=dev),
                           torch.tensor(ans, device=dev), "agreement", lab)

    def gender_prompts(
        self, n: int, seed: int = 0, subject: Literal["name", "occupation"] = "name",
        device: str | torch.device = "cpu",
    ) -> PromptPairs:
        """Pronoun prompts ``<bos> SUBJ PAST the OBJ and`` -> he/she.

        ``subject="name"``: clean subject a name of one gender, corrupted a name of the other;
        ``answers = (clean pronoun, other pronoun)``.
        ``subject="occupation"``: clean ``the OCC`` with a female-stereotyped occupation,
        corrupted ``the OCC'`` with a male-stereotyped one; answers ``(she, he)``. For a model
        that learned the planted bias the clean logit difference is positive;
        ``labels["occupation"]`` names the clean occupation.
        """
        check_positive_int("n", n)
        check_choice("subject", subject, ["name", "occupation"])
        rng = random.Random(check_seed("seed", seed))
        tok = self.tokenizer
        fem_occ = [o for o, g in self.occupations.items() if g == "f"]
        male_occ = [o for o, g in self.occupations.items() if g == "m"]
        clean, corr, ans = [], [], []
        lab: dict[str, list] = {"clean_subject": [], "corrupted_subject": []}
        for _ in range(n):
            mid = [rng.choice(_PAST), "the", rng.choice(rng.choice(_NOUNS)), "and"]
            if subject == "name":
                male = rng.random() < 0.5
                a = rng.choice(self.male_names if male else self.female_names)
                b = rng.choice(self.female_names if male else self.male_names)
                c_words, k_words = [a], [b]
                answers = ("he", "she") if male else ("she", "he")
            else:
                a, b = rng.choice(fem_occ), rng.choice(male_occ)
                c_words, k_words = ["the", a], ["the", b]
                answers = ("she", "he")
            clean.append(tok.encode(" ".join(c_words + mid)))
            corr.append(tok.encode(" ".join(k_words + mid)))
            ans.append([tok[answers[0]], tok[answers[1]]])
            lab["clean_subject"].append(a)
            lab["corrupted_subject"].append(b)
        dev = resolve_device(device)
        return PromptPairs(torch.tensor(clean, device=dev), torch.tensor(corr, device=dev),
                           torch.tensor(ans, device=dev), f"gender-{subject}", lab)

    def occupation_prompts(self, seed: int = 0, per_occupation: int = 8) -> tuple[torch.Tensor, list[str]]:
        """``per_occupation`` prompts ``<bos> the OCC PAST the OBJ and`` for every occupation.

        Returns ``(tokens (n_occ * per_occupation, 7), occupation name per row)``; read
        ``P(he)`` and ``P(she)`` at the last position to see the planted bias.
        """
        check_positive_int("per_occupation", per_occupation)
        rng = random.Random(check_seed("seed", seed))
        rows, names = [], []
        for occ in self.occupations:
            for _ in range(per_occupation):
                words = ["the", occ, rng.choice(_PAST), "the", rng.choice(rng.choice(_NOUNS)), "and"]
                rows.append(self.tokenizer.encode(" ".join(words)))
                names.append(occ)
        return torch.tensor(rows), names
