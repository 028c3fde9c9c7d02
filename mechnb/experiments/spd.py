"""Experiments of notebook 02: SPD's importance-minimality trade-off, one decomposition per setting.

* :func:`importance_minimality_sweep` - the same decomposition (:func:`mechnb.spd.decompose`) over
  several importance-minimality coefficients and exponents ``p``; each run is a :class:`SweepPoint`.
* :func:`tms_identity_hidden` - the paper's TMS with a fixed identity hidden layer (``tms-5-2-id``,
  ``tms-40-10-id``), trained here: the zoo holds only the plain TMS models.
* :func:`tiny_lm_mlp` - SPD on the four MLP weight matrices of the zoo's ``tiny-lm`` (recipe
  ``SPDConfig.for_model("tiny-lm-mlp")``, per-token KL reconstruction), with the per-token L0,
  the stochastic / rounded / adversarial KLs and, for every alive subcomponent, the tokens where
  it is causally important, scored against the synthetic grammar's word classes
  (:func:`grammar_classes`, :class:`SubcomponentTokens`).
* :func:`residual_mlp` / :func:`residual_mlp_quality` - SPD on the zoo's residual MLPs
  (``resid-mlp-1/2/3``), scored against the paper's ground truth per matrix: every ``mlp_in``
  one subcomponent per feature (identity one-hot CI pattern), every ``mlp_out`` ``d_mlp`` dense
  subcomponents (one rank-``d_mlp`` component, SPD paper Sec. 4.3).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mechnb import zoo
from mechnb._checks import check_choice, check_positive_float, check_positive_int, check_probability, check_seed
from mechnb.models import TMS, ResidualMLP
from mechnb.spd import (SPDConfig, SPDEvaluation, SPDResult, alive_decisions, decompose, dense_ci_error, evaluate,
                        identity_ci_error, match_columns, one_hot_causal_importances)
from mechnb.tasks import SyntheticLanguage, sparse_features
from mechnb.train import TrainConfig, mse_loss, train

__all__ = [
    "SweepPoint", "importance_minimality_sweep", "tms_identity_hidden",
    "TINY_LM_MLP_TARGETS", "GRAMMAR_PARTS", "grammar_classes", "sentence_sampler", "TokenContext",
    "SubcomponentTokens", "LMDecomposition", "subcomponent_tokens", "tiny_lm_mlp",
    "RESIDUAL_MLP_BAR", "MatrixQuality", "residual_mlp_quality", "residual_mlp_targets", "residual_mlp",
]


@dataclass
class SweepPoint:
    """One decomposition of an importance-minimality sweep.

    ``p`` is the exponent the run ended with; :attr:`p_label` also says whether it was annealed.
    """

    coefficient: float
    p: float
    result: SPDResult

    @property
    def p_label(self) -> str:
        """``"2"`` for a constant exponent, ``"2→1"`` for one annealed from 2 to 1."""
        cfg = self.result.config
        if cfg.p_anneal_final is None or cfg.p_anneal_final == cfg.p:
            return f"{cfg.p:g}"
        return f"{cfg.p:g}→{cfg.p_anneal_final:g}"


def importance_minimality_sweep(
    model: nn.Module,
    target_modules: list[str],
    sample_inputs: Callable[[int, torch.Generator], torch.Tensor],
    config: SPDConfig,
    coefficients: Sequence[float],
    ps: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[SweepPoint]:
    """Run :func:`decompose` for every ``(coefficient, p)`` pair (same seed, other settings fixed).

    ``ps=None`` keeps ``config``'s exponent and its annealing (the point's ``p`` is the final
    exponent); an explicit ``ps`` runs each exponent as a constant (annealing switched off).

    Shows the trade-off the paper's method section describes: too small a coefficient leaves many subcomponents
    causally important on every input (no minimality); too large a one kills subcomponents the
    model needs, so reconstruction fails.
    """
    if isinstance(coefficients, (str, bytes)) or not isinstance(coefficients, Sequence) or not coefficients:
        raise ValueError(f"coefficients: expected a non-empty list of numbers, got {coefficients!r}")
    coefs = [check_positive_float("coefficients[]", c, allow_zero=True) for c in coefficients]
    final_p = config.p if config.p_anneal_final is None else config.p_anneal_final
    p_list = [final_p] if ps is None else [check_positive_float("ps[]", p) for p in ps]
    if not p_list:
        raise ValueError("ps: expected a non-empty list of exponents or None")
    points = []
    for p in p_list:
        for c in coefs:
            cfg = config.replace(importance_minimality=c) if ps is None else config.replace(
                importance_minimality=c, p=p, p_anneal_final=None)
            res = decompose(model, target_modules, sample_inputs, cfg, device=device, progress=progress)
            points.append(SweepPoint(coefficient=c, p=p, result=res))
    return points


def tms_identity_hidden(n_features: int = 5, n_hidden: int = 2, steps: int = 3000, seed: int = 0,
                        feature_probability: float = 0.05) -> TMS:
    """A TMS ``n_features -> n_hidden -> n_features`` with one fixed identity hidden layer, trained.

    As in the paper's ``tms_5-2-id`` experiment: ``x -> linear1 -> I -> linear2 (tied) -> ReLU``
    with the identity frozen, trained on sparse features (probability ``feature_probability``,
    values ``U[0, 1]``) to reconstruct its input (MSE, lr ``1e-2``, cosine schedule, batch 1024).
    SPD should find ``n_features`` alive subcomponents in ``linear1`` / ``linear2`` and ``n_hidden``
    in ``hidden_layers.0``. Returns the model in eval mode; the global RNGs are left alone.
    """
    nf, nh = check_positive_int("n_features", n_features), check_positive_int("n_hidden", n_hidden)
    steps, seed = check_positive_int("steps", steps), check_seed("seed", seed)
    prob = check_positive_float("feature_probability", feature_probability)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TMS(nf, nh, n_hidden_layers=1)
    for layer in model.hidden_layers:
        layer.weight.requires_grad_(False)  # the identity stays fixed
    train(model, lambda s, g: sparse_features(1024, nf, prob, g), lambda m, x: mse_loss(m(x), x),
          TrainConfig(steps=steps, lr=1e-2, schedule="cosine", seed=seed), progress=False)
    return model.eval()


# --------------------------------------------------------------------------------------
# SPD on a language model: the MLP weights of tiny-lm
# --------------------------------------------------------------------------------------
#: the decomposed weights of the ``tiny-lm-mlp`` recipe: both MLP matrices of both blocks
TINY_LM_MLP_TARGETS = [f"blocks.{layer}.mlp.{w}" for layer in (0, 1) for w in ("W_in", "W_out")]

#: the grammar's phenomena and the word classes (:func:`grammar_classes`) that carry them
GRAMMAR_PARTS: dict[str, tuple[str, ...]] = {
    "number agreement": ("noun (singular)", "noun (plural)", "verb (singular)", "verb (plural)",
                         "occupation (plural)"),
    "pronouns": ("he", "she"),
    "names": ("male name", "female name"),
    "occupations": ("occupation (m)", "occupation (f)", "occupation (plural)"),
}


def grammar_classes(lang: SyntheticLanguage) -> dict[str, str]:
    """``{word: class}``: every word of :class:`mechnb.tasks.SyntheticLanguage`'s vocabulary in one class.

    The classes are the grammar's own parts (:meth:`mechnb.tasks.SyntheticLanguage.word_classes`:
    nouns and verbs by number, occupations by stereotyped gender, names, past verbs, adjectives,
    prepositions, connectives, and each function word as itself), so a subcomponent is scored
    against the grammar, not against a reading of its tokens. Raises ``ValueError`` if a
    vocabulary word has no class (the grammar grew a word list ``word_classes`` does not know).
    """
    if not isinstance(lang, SyntheticLanguage):
        raise TypeError(f"lang: expected a SyntheticLanguage, got {type(lang).__name__}")
    out = lang.word_classes()
    missing = [w for w in lang.tokenizer.vocab if w not in out]
    if missing:  # the grammar grew a word list this function does not know
        raise ValueError(f"lang: words without a class {missing[:5]}")
    return out


def sentence_sampler(lang: SyntheticLanguage) -> Callable[[int, torch.Generator], torch.Tensor]:
    """``(n, generator) -> (n, n_ctx)`` token ids of fresh corpus sentences (the seed drawn from ``generator``)."""
    def sample(n: int, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return lang.sample_batch(n, seed=seed)

    return sample


@dataclass
class TokenContext:
    """One token where a subcomponent is causally important.

    ``row``, ``pos``: where in the evaluation batch; ``token``: the word; ``words``: the sentence up to
    and including it; ``ci``: the (clipped) causal importance there; ``next_token``: the word that
    follows in the sentence (what the model predicts at ``pos``).
    """

    row: int
    pos: int
    token: str
    words: list[str]
    ci: float
    next_token: str


@dataclass
class SubcomponentTokens:
    """The tokens on which one subcomponent is causally important, scored against the grammar's classes.

    Attributes:
        layer, c: the decomposed weight and the subcomponent.
        n_important: text tokens (``<pad>`` excluded) with causal importance ``> important``.
        firing_rate: ``n_important`` over all text tokens.
        top: the ``top_k`` tokens of largest importance (:class:`TokenContext`).
        token_class, purity: the commonest class of the important tokens (:func:`grammar_classes`)
            and the fraction of them in it; ``base_rate``: that class's share of all text tokens,
            ``lift = purity / base_rate``.
        next_class, next_purity, next_base_rate: the same for the *next* token (what is predicted).
        part: the grammar phenomenon (:data:`GRAMMAR_PARTS`) whose classes hold the largest share of
            the important tokens, with that share ``part_share`` (and its base rate ``part_base_rate``).
    """

    layer: str
    c: int
    n_important: int
    firing_rate: float
    top: list[TokenContext]
    token_class: str
    purity: float
    base_rate: float
    next_class: str
    next_purity: float
    next_base_rate: float
    part: str
    part_share: float
    part_base_rate: float

    @property
    def lift(self) -> float:
        return self.purity / self.base_rate if self.base_rate > 0 else float("nan")

    def corresponds(self, min_purity: float = 0.8, min_lift: float = 3.0) -> bool:
        """Whether its important tokens are one grammar class: ``purity >= min_purity`` and ``lift >= min_lift``."""
        return self.purity >= min_purity and self.lift >= min_lift

    def label(self) -> str:
        """``"noun (plural) 0.95 (base 0.08)"``: the dominant class with its purity and base rate."""
        return f"{self.token_class} {self.purity:.2f} (base {self.base_rate:.2f})"


def _dominant(classes: list[str], base: Counter, n_base: int) -> tuple[str, float, float]:
    if not classes:
        return "-", 0.0, 0.0
    cls, k = Counter(classes).most_common(1)[0]
    return cls, k / len(classes), base[cls] / max(1, n_base)


def subcomponent_tokens(
    ci: np.ndarray | torch.Tensor, tokens: torch.Tensor, lang: SyntheticLanguage, layer: str, c: int,
    top_k: int = 12, important: float = 0.5,
) -> SubcomponentTokens:
    """Score subcomponent ``c``'s per-token causal importances ``ci (batch, pos, C)`` on ``tokens (batch, pos)``.

    Padding positions are left out; the class statistics use every text token with importance
    above ``important``, the displayed contexts are the ``top_k`` largest.
    """
    ci = torch.as_tensor(ci)
    if ci.ndim != 3 or tuple(ci.shape[:2]) != tuple(tokens.shape):
        raise ValueError(f"ci: expected (batch, pos, C) matching tokens {tuple(tokens.shape)}, got {tuple(ci.shape)}")
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= int(c) < ci.shape[-1]:
        raise ValueError(f"c: expected a subcomponent index in [0, {ci.shape[-1]}), got {c!r}")
    important = check_probability("important", important)
    top_k = check_positive_int("top_k", top_k)
    classes = grammar_classes(lang)
    vocab = lang.tokenizer.vocab
    tok = tokens.cpu()
    text = tok != lang.tokenizer.pad_id
    nxt = torch.cat([tok[:, 1:], torch.full((tok.shape[0], 1), lang.tokenizer.pad_id)], dim=1)
    words = [[vocab[i] for i in row] for row in tok.tolist()]
    g = ci[..., int(c)].detach().cpu().double().masked_fill(~text, -1.0)
    cls_of = [[classes[w] for w in row] for row in words]
    base = Counter(cls_of[b][p] for b, p in text.nonzero().tolist())
    base_next = Counter(classes[vocab[int(nxt[b, p])]] for b, p in text.nonzero().tolist())
    n_text = int(text.sum())
    idx = (g > important).nonzero().tolist()
    cur = [cls_of[b][p] for b, p in idx]
    nex = [classes[vocab[int(nxt[b, p])]] for b, p in idx]
    token_class, purity, base_rate = _dominant(cur, base, n_text)
    next_class, next_purity, next_base = _dominant(nex, base_next, n_text)
    shares = {part: sum(k in members for k in cur) / max(1, len(cur)) for part, members in GRAMMAR_PARTS.items()}
    part = max(shares, key=shares.get)
    part_base = sum(base[k] for k in GRAMMAR_PARTS[part]) / max(1, n_text)
    order = torch.argsort(g.flatten(), descending=True)[:top_k].tolist()
    top = []
    for flat in order:
        b, p = divmod(flat, g.shape[1])
        if g[b, p] < 0:
            break
        top.append(TokenContext(row=b, pos=p, token=words[b][p], words=words[b][: p + 1], ci=float(g[b, p]),
                                next_token=vocab[int(nxt[b, p])]))
    return SubcomponentTokens(
        layer=layer, c=int(c), n_important=len(idx), firing_rate=len(idx) / max(1, n_text), top=top,
        token_class=token_class, purity=purity, base_rate=base_rate, next_class=next_class,
        next_purity=next_purity, next_base_rate=next_base, part=part if cur else "-", part_share=shares[part],
        part_base_rate=part_base,
    )


@dataclass
class LMDecomposition:
    """SPD on a language model's MLP weights, evaluated and read against the grammar (:func:`tiny_lm_mlp`).

    Attributes:
        result: the :class:`mechnb.spd.SPDResult`.
        evaluation: :func:`mechnb.spd.evaluate` on ``tokens`` (KLs per token, L0 per token over all
            ``batch * pos`` positions, padding included).
        l0_text: ``{layer: mean L0 per text token}`` (padding left out).
        tokens: the evaluation batch ``(batch, pos)``.
        ci: ``{layer: clipped causal importances (batch, pos, C)}`` on ``tokens``.
        subcomponents: ``{layer: [SubcomponentTokens]}`` for every alive subcomponent that is
            important (``> 0.5``) on at least one evaluation token, commonest first.
        lang: the task (tokenizer, word lists).
    """

    result: SPDResult
    evaluation: SPDEvaluation
    l0_text: dict[str, float]
    tokens: torch.Tensor
    ci: dict[str, np.ndarray]
    subcomponents: dict[str, list[SubcomponentTokens]] = field(default_factory=dict)
    lang: SyntheticLanguage | None = None

    @property
    def kl(self) -> dict[str, float]:
        """``{"stochastic", "rounded", "adversarial", "zero"}``: per-token KLs (``zero``: every mask 0, the baseline)."""
        ev = self.evaluation
        return {"stochastic": ev.stochastic_recon, "rounded": ev.rounded_recon,
                "adversarial": ev.adversarial_recon, "zero": ev.zero_recon}

    def corresponding(self, min_purity: float = 0.8, min_lift: float = 3.0) -> list[SubcomponentTokens]:
        """The subcomponents whose important tokens are one grammar class (:meth:`SubcomponentTokens.corresponds`)."""
        return [s for subs in self.subcomponents.values() for s in subs if s.corresponds(min_purity, min_lift)]


def tiny_lm_mlp(
    recipe: str = "fast",
    n_eval: int = 256,
    seed: int = 0,
    targets: Sequence[str] | None = None,
    top_k: int = 12,
    progress: bool = False,
    **overrides: object,
) -> LMDecomposition:
    """Decompose the MLP weights of the zoo's ``tiny-lm`` on its corpus and read the subcomponents.

    Runs :func:`mechnb.spd.decompose` with ``SPDConfig.for_model("tiny-lm-mlp", recipe, seed=seed,
    **overrides)`` on :data:`TINY_LM_MLP_TARGETS` (or ``targets``), batches of fresh corpus
    sentences of the model's task (:func:`sentence_sampler`), then on ``n_eval`` held-out sentences
    (seed ``10_000 + seed``) evaluates it (:func:`mechnb.spd.evaluate`: stochastic, rounded and
    adversarial per-token KL against the all-ablated baseline, L0 per token) and scores every
    alive subcomponent's important tokens against the grammar (:func:`subcomponent_tokens`).

    Args:
        recipe: ``"fast"`` (~20 s on one CPU thread) or ``"full"`` (a few minutes).
        n_eval: evaluation sentences.
        seed: the decomposition's seed.
        targets: the decomposed weights (default all four MLP matrices).
        top_k: contexts kept per subcomponent.
        progress: a progress bar.
    """
    check_choice("recipe", recipe, ["fast", "full", "paper"])
    n_eval = check_positive_int("n_eval", n_eval)
    seed = check_seed("seed", seed)
    model, _ = zoo.load("tiny-lm")
    lang = zoo.task_for("tiny-lm")
    cfg = SPDConfig.for_model("tiny-lm-mlp", recipe=recipe, seed=seed, **overrides)
    names = list(TINY_LM_MLP_TARGETS if targets is None else targets)
    res = decompose(model, names, sentence_sampler(lang), cfg, progress=progress)
    tokens = lang.sample_batch(n_eval, seed=10_000 + seed)
    ev = evaluate(res, tokens, seed=seed)
    ci = {n: v.cpu().numpy() for n, v in res.causal_importances(tokens, kind="clipped").items()}
    text = (tokens != lang.tokenizer.pad_id).numpy()
    l0_text = {n: float((v > ev.settings["l0_threshold"]).sum(-1)[text].mean()) for n, v in ci.items()}
    alive = res.alive()
    subs: dict[str, list[SubcomponentTokens]] = {}
    for n in names:
        rows = [subcomponent_tokens(ci[n], tokens, lang, n, c, top_k=top_k)
                for c in torch.nonzero(alive[n]).flatten().tolist()]
        subs[n] = sorted([r for r in rows if r.n_important > 0], key=lambda r: -r.n_important)
    return LMDecomposition(result=res, evaluation=ev, l0_text=l0_text, tokens=tokens, ci=ci, subcomponents=subs,
                           lang=lang)


# --------------------------------------------------------------------------------------
# Residual MLPs: the paper's ground truth per matrix
# --------------------------------------------------------------------------------------
#: The quality bar of a residual-MLP decomposition, per matrix (issue 16 / SPD paper Sec. 4.3):
#: the fraction of "wrong" one-hot CI entries allowed (above 0.1 where the target pattern has 0,
#: at or below 0.1 where it has 1).
RESIDUAL_MLP_BAR = 0.01


@dataclass(frozen=True)
class MatrixQuality:
    """How one decomposed matrix of a residual MLP compares with the paper's ground truth.

    ``mlp_in`` (``pattern="identity"``): ``expected_alive = n_features`` subcomponents, each
    causally important for its own feature only - the one-hot CI pattern after Hungarian matching
    is the identity. ``mlp_out`` (``pattern="dense"``): ``expected_alive = d_mlp`` subcomponents,
    all important for (almost) every feature - together one rank-``d_mlp`` component, the whole
    matrix (the paper: "SPD splits its corresponding W_out into 50 subcomponents, which appear to
    all be effectively part of a single rank-50 component").

    Attributes:
        layer, pattern, expected_alive: as above.
        n_alive, alive_clear: :func:`mechnb.spd.alive_decisions` (clear: no CI maximum near 0.1).
        n_wrong_on: entries above 0.1 where the pattern has 0 (identity: off-diagonal; dense:
            outside the ``d_mlp`` densest columns).
        n_wrong_off: entries at or below 0.1 where the pattern has 1 (identity: the diagonal;
            dense: inside the densest columns).
        n_zero_entries, n_one_entries: how many entries the pattern has of each kind.
        bar: ``n_alive == expected_alive`` (clear) and both wrong fractions at most
            :data:`RESIDUAL_MLP_BAR`.
    """

    layer: str
    pattern: str
    expected_alive: int
    n_alive: int
    alive_clear: bool
    n_wrong_on: int
    n_wrong_off: int
    n_zero_entries: int
    n_one_entries: int

    @property
    def wrong_on_fraction(self) -> float:
        return self.n_wrong_on / max(1, self.n_zero_entries)

    @property
    def wrong_off_fraction(self) -> float:
        return self.n_wrong_off / max(1, self.n_one_entries)

    @property
    def bar(self) -> bool:
        return (self.n_alive == self.expected_alive and self.alive_clear
                and self.wrong_on_fraction <= RESIDUAL_MLP_BAR and self.wrong_off_fraction <= RESIDUAL_MLP_BAR)

    def line(self) -> str:
        """One printable line: counts, fractions and the verdict."""
        kind = "off-diagonal" if self.pattern == "identity" else "outside the dense columns"
        inner = "diagonal" if self.pattern == "identity" else "inside the dense columns"
        return (f"{self.layer:16s} {self.pattern:8s} alive {self.n_alive:3d} (expected {self.expected_alive}"
                f"{'' if self.alive_clear else ', THIN decision'}); {kind} > 0.1: {self.n_wrong_on} "
                f"({100 * self.wrong_on_fraction:.1f} %); {inner} <= 0.1: {self.n_wrong_off} "
                f"({100 * self.wrong_off_fraction:.1f} %) -> {'bar met' if self.bar else 'bar NOT met'}")


def residual_mlp_targets(model: nn.Module) -> list[str]:
    """``["layers.0.mlp_in", "layers.0.mlp_out", ...]``: every MLP matrix of a residual MLP."""
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"model: expected a ResidualMLP, got {type(model).__name__}")
    return [f"layers.{i}.{m}" for i in range(model.n_layers) for m in ("mlp_in", "mlp_out")]


def residual_mlp_quality(result: SPDResult, magnitude: float = 0.75) -> dict[str, MatrixQuality]:
    """Score a residual-MLP decomposition against the paper's ground truth, per matrix (:class:`MatrixQuality`).

    The one-hot causal importances (:func:`mechnb.spd.one_hot_causal_importances` at ``magnitude``)
    of every ``mlp_in`` are compared with the identity after Hungarian matching, those of every
    ``mlp_out`` with ``d_mlp`` dense columns (:func:`mechnb.spd.dense_ci_error`).
    """
    if not isinstance(result, SPDResult):
        raise TypeError(f"result: expected an SPDResult, got {type(result).__name__}")
    model = result.model
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"result: expected a decomposition of a ResidualMLP, got one of {type(model).__name__}")
    ci = one_hot_causal_importances(result, magnitude=magnitude)
    dec = alive_decisions(result)
    out: dict[str, MatrixQuality] = {}
    for layer, v in ci.items():
        n, C = v.shape
        if layer.endswith("mlp_in"):
            e = identity_ci_error(v[:, match_columns(v)])
            q = MatrixQuality(layer, "identity", model.n_features, dec[layer].n_alive, dec[layer].clear,
                              e["n_offdiag_above"], e["n_diag_below"], n * C - n, n)
        elif layer.endswith("mlp_out"):
            k = min(model.d_mlp, C)
            e = dense_ci_error(v, k)
            q = MatrixQuality(layer, "dense", model.d_mlp, dec[layer].n_alive, dec[layer].clear,
                              e["n_outside_above"], e["n_dense_below"], n * (C - k), n * k)
        else:
            continue
        out[layer] = q
    return out


def residual_mlp(
    name: str = "resid-mlp-1", recipe: str = "fast", seed: int = 0, progress: bool = False, **overrides: object
) -> tuple[SPDResult, dict[str, MatrixQuality]]:
    """Decompose every MLP matrix of the zoo's residual MLP ``name`` and score it (:func:`residual_mlp_quality`).

    Uses ``SPDConfig.for_model(name, recipe, seed=seed, **overrides)`` on the model's own sparse
    inputs. Returns ``(result, {layer: MatrixQuality})``.
    """
    check_choice("name", name, ["resid-mlp-1", "resid-mlp-2", "resid-mlp-3"])
    seed = check_seed("seed", seed)
    model, _ = zoo.load(name)
    task = zoo.task_for(name)
    cfg = SPDConfig.for_model(name, recipe=recipe, seed=seed, **overrides)
    res = decompose(model, residual_mlp_targets(model), task.sample, cfg, progress=progress)
    return res, residual_mlp_quality(res)
