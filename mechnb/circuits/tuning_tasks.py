"""The fine-tuning tasks of circuit-tuning, built from :class:`~mechnb.tasks.SyntheticLanguage`.

Li, Yuan & Wang 2025 (arXiv:2502.06106, Sec. 5) tune GPT-2 on two tasks that go *against*
what pre-training taught, so that tuning must change a known mechanism:

* **subject-verb disagreement** (:func:`disagreement_task`): the training sentences are
  corpus agreement sentences with the verb's number flipped (``the key near the cabinets
  *are* old .``); the task metric is how often the verb form that *disagrees* with the
  subject wins on held-out agreement prompts with a mismatched attractor.
* **gender debiasing** (:func:`debias_task`): the training sentences are pronoun sentences
  whose pronoun is independent of the occupation (``occupation_bias = 0.5``); the task metric
  is the paper's *prejudice risk* (their ``eval/bias``): for each occupation prompt take
  ``p = P(he) / (P(he) + P(she))``, the risk ``max(p / 0.5 - 1, (1 - p) / 0.5 - 1) = |2p - 1|``,
  averaged over an occupation's prompts and then over occupations (0 = unbiased, 1 = certain).

Circuit discovery uses each task's clean/corrupted prompt pairs (the agreement prompts; the
occupation gender prompts), and *capability preservation* is the next-token loss on held-out
corpus text. The held-out loss is reported twice: ``corpus_loss`` over every non-pad target,
and ``general_loss`` which leaves out the targets the task deliberately changes (verbs for
disagreement, pronouns after an occupation for debiasing), so that it measures collateral damage only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mechnb import metrics
from mechnb._checks import check_positive_float, check_positive_int, check_tensor, resolve_device
from mechnb.circuits.metric import Metric, logit_diff
from mechnb.tasks import PromptPairs, SyntheticLanguage

__all__ = [
    "TrainBatch",
    "TuneTask",
    "weighted_lm_loss",
    "heldout_losses",
    "prejudice_risk",
    "disagreement_task",
    "debias_task",
    "flip_verb",
]


@dataclass
class TrainBatch:
    """Token ids ``tokens (batch, pos)`` and per-target loss weights ``weights (batch, pos - 1)``.

    ``weights[b, t]`` weighs the prediction of ``tokens[b, t + 1]`` (0 for padding).
    """

    tokens: torch.Tensor
    weights: torch.Tensor

    def to(self, device: str | torch.device) -> TrainBatch:
        return TrainBatch(self.tokens.to(device), self.weights.to(device))


def weighted_lm_loss(logits: torch.Tensor, batch: TrainBatch) -> torch.Tensor:
    """``sum_t w_t * CE(logits_t, token_{t+1}) / sum_t w_t`` - the paper's weighted LM objective.

    ``logits (batch, pos - 1, d_vocab)`` from ``model(tokens[:, :-1])``.
    """
    check_tensor("logits", logits, ndim=3, dims="(batch, pos-1, d_vocab)", floating=True, finite=False)
    targets = batch.tokens[:, 1:]
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits: expected leading shape {tuple(targets.shape)}, got {tuple(logits.shape[:2])}")
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    w = batch.weights.reshape(-1).to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp_min(1e-12)


@torch.no_grad()
def heldout_losses(model: nn.Module, tokens: torch.Tensor, pad_id: int, exclude: torch.Tensor | None = None,
                   chunk: int = 512) -> tuple[float, float]:
    """``(corpus_loss, general_loss)``: next-token CE over non-pad targets, and the same without ``exclude``.

    ``tokens (n, pos)``; ``exclude (n, pos - 1)`` bool marks targets left out of ``general_loss``.
    """
    dev = next(model.parameters()).device
    tot = tot_g = 0.0
    n = n_g = 0
    for s in range(0, tokens.shape[0], chunk):
        t = tokens[s: s + chunk].to(dev)
        logits = model(t[:, :-1])
        tgt = t[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none").view_as(tgt)
        keep = tgt != pad_id
        tot += float(ce[keep].sum())
        n += int(keep.sum())
        if exclude is not None:
            keep = keep & ~exclude[s: s + chunk].to(dev)
        tot_g += float(ce[keep].sum())
        n_g += int(keep.sum())
    return tot / max(n, 1), tot_g / max(n_g, 1)


@torch.no_grad()
def prejudice_risk(
    model: nn.Module, lang: SyntheticLanguage, seed: int = 123, per_occupation: int = 8
) -> dict[str, float]:
    """The paper's prejudice risk on the occupation prompts, plus the stereotype gap.

    ``prejudice_risk``: mean over occupations of the mean over prompts of ``|2p - 1|`` with
    ``p = P(he) / (P(he) + P(she))`` at the last position (Li et al. 2025, ``eval/bias``).
    ``stereotype_gap``: mean normalised probability of the stereotyped pronoun minus 0.5
    (0 = no preference, 0.5 = always the stereotype; negative = anti-stereotype).
    """
    dev = next(model.parameters()).device
    toks, occs = lang.occupation_prompts(seed=seed, per_occupation=per_occupation)
    probs = torch.softmax(model(toks.to(dev))[:, -1].float(), dim=-1)
    he, she = probs[:, lang.tokenizer["he"]], probs[:, lang.tokenizer["she"]]
    p_he = (he / (he + she)).cpu()
    risk = (2 * p_he - 1).abs()
    male = torch.tensor([lang.occupations[o] == "m" for o in occs])
    p_stereo = torch.where(male, p_he, 1 - p_he)
    names = list(dict.fromkeys(occs))
    idx = torch.tensor([names.index(o) for o in occs])
    per_occ = torch.zeros(len(names)).index_add_(0, idx, risk) / torch.bincount(idx, minlength=len(names))
    return {"prejudice_risk": float(per_occ.mean()), "stereotype_gap": float(p_stereo.mean() - 0.5)}


@torch.no_grad()
def _pair_accuracy(model: nn.Module, pairs: PromptPairs) -> tuple[float, float]:
    """``(accuracy, mean logit diff)`` of the clean answer over the other one at the last position."""
    dev = next(model.parameters()).device
    d = metrics.logit_diff(model(pairs.clean.to(dev)), pairs.answers)
    return float((d > 0).float().mean()), float(d.mean())


@dataclass
class TuneTask:
    """Everything circuit-tuning and its baselines need to know about a task.

    Attributes:
        name: short name (``"disagreement"``, ``"debias"``).
        lang: the :class:`SyntheticLanguage` (tokenizer, pad id).
        discovery: clean/corrupted :class:`PromptPairs` on which circuits are discovered.
        metric: ``metric(logits, pairs) -> scalar`` for discovery (default :func:`logit_diff`).
        sample: ``sample(step, generator, batch_size) -> TrainBatch`` of training sentences.
        evaluate: ``evaluate(model) -> dict[str, float]`` of task metrics on held-out prompts.
        primary: the key of ``evaluate``'s output that is *the* task metric.
        higher_is_better: direction of ``primary``.
        heldout: held-out corpus tokens ``(n, n_ctx)`` for the capability losses.
        heldout_exclude: ``(n, n_ctx - 1)`` bool, targets left out of ``general_loss``.
    """

    name: str
    lang: SyntheticLanguage
    discovery: PromptPairs
    sample: Callable[[int, torch.Generator, int], TrainBatch]
    evaluate: Callable[[nn.Module], dict[str, float]]
    primary: str
    higher_is_better: bool
    heldout: torch.Tensor
    heldout_exclude: torch.Tensor
    metric: Metric = logit_diff
    description: str = ""
    extra: dict = field(default_factory=dict)

    def loss(self, logits: torch.Tensor, batch: TrainBatch) -> torch.Tensor:
        """Training objective: :func:`weighted_lm_loss`."""
        return weighted_lm_loss(logits, batch)

    def general(self, model: nn.Module) -> dict[str, float]:
        """``{"corpus_loss", "general_loss"}`` on the held-out corpus text."""
        corpus, general = heldout_losses(model, self.heldout, self.lang.tokenizer.pad_id, self.heldout_exclude)
        return {"corpus_loss": corpus, "general_loss": general}


def _weights(tokens: torch.Tensor, pad_id: int, special: torch.Tensor, special_weight: float) -> torch.Tensor:
    tgt = tokens[:, 1:]
    w = (tgt != pad_id).float()
    return torch.where(special, w * special_weight, w)


def flip_verb(sentence: str, lang: SyntheticLanguage) -> str:
    """An agreement sentence with its verb's number flipped (``is`` <-> ``are``, ``likes`` <-> ``like``)."""
    other = {s: p for s, p in lang.verbs} | {p: s for s, p in lang.verbs}
    words = sentence.split()
    for i, w in enumerate(words):
        if w in other:
            words[i] = other[w]
            return " ".join(words)
    raise ValueError(f"sentence: expected an agreement sentence with a verb, got {sentence!r}")


def _rng(generator: torch.Generator) -> random.Random:
    return random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))


def _check_lang(lang: object) -> None:
    """``TypeError`` naming ``lang`` unless it is a :class:`SyntheticLanguage`."""
    if not isinstance(lang, SyntheticLanguage):
        raise TypeError(f"lang: expected a mechnb.tasks.SyntheticLanguage (e.g. zoo.task_for('tiny-lm') or "
                        f"SyntheticLanguage()), got {type(lang).__name__} {lang!r:.80}")


def disagreement_task(
    lang: SyntheticLanguage,
    n_discovery: int = 32,
    n_eval: int = 256,
    n_heldout: int = 1000,
    verb_weight: float = 1.0,
    discovery_seed: int = 7,
    eval_seed: int = 123,
    heldout_seed: int = 10_000,
    device: str | torch.device = "cpu",
) -> TuneTask:
    """Teach the model subject-verb *disagreement* (Li et al. 2025, Sec. 5.1).

    Training batches: corpus agreement sentences with the verb's number flipped, next-token
    loss on every target with the verb target weighted by ``verb_weight`` (the paper's
    ``1 / p``). Metrics on held-out attractor-mismatch prompts: ``disagree_acc`` (fraction where
    the disagreeing verb form wins; primary, higher is better) and ``disagree_logit_diff``.
    Discovery: :meth:`SyntheticLanguage.agreement_prompts` with :func:`logit_diff`.
    """
    _check_lang(lang)
    check_positive_int("n_discovery", n_discovery)
    check_positive_int("n_eval", n_eval)
    check_positive_int("n_heldout", n_heldout)
    check_positive_float("verb_weight", verb_weight)
    dev = resolve_device(device)
    tok = lang.tokenizer
    verb_ids = torch.tensor(sorted({tok[w] for pair in lang.verbs for w in pair}))
    eval_pairs = lang.agreement_prompts(n_eval, seed=eval_seed, attractor="mismatch")

    def sample(step: int, generator: torch.Generator, batch_size: int) -> TrainBatch:
        rng = _rng(generator)
        sents = [flip_verb(lang.agreement_sentence(rng), lang) for _ in range(batch_size)]
        tokens = lang.encode_batch(sents)
        special = torch.isin(tokens[:, 1:], verb_ids)
        return TrainBatch(tokens, _weights(tokens, tok.pad_id, special, verb_weight)).to(dev)

    def evaluate(model: nn.Module) -> dict[str, float]:
        acc, ld = _pair_accuracy(model, eval_pairs)
        return {"disagree_acc": 1.0 - acc, "disagree_logit_diff": -ld}

    held = lang.sample_batch(n_heldout, seed=heldout_seed)
    return TuneTask(
        name="disagreement", lang=lang, discovery=lang.agreement_prompts(n_discovery, seed=discovery_seed).to(dev),
        sample=sample, evaluate=evaluate, primary="disagree_acc", higher_is_better=True, heldout=held,
        heldout_exclude=torch.isin(held[:, 1:], verb_ids),
        description="subject-verb disagreement: the verb must take the number the subject does not have",
    )


def debias_task(
    lang: SyntheticLanguage,
    n_discovery: int = 32,
    n_heldout: int = 1000,
    pronoun_weight: float = 1.0,
    occupation_only: bool = False,
    discovery_seed: int = 7,
    eval_seed: int = 123,
    heldout_seed: int = 10_000,
    device: str | torch.device = "cpu",
) -> TuneTask:
    """Remove the planted occupation -> pronoun bias (Li et al. 2025, Sec. 5.2 gender de-biasing).

    Training batches: pronoun sentences from the same grammar with ``occupation_bias = 0.5``
    (pronoun independent of the occupation; with ``occupation_only`` every subject is an
    occupation), next-token loss on every target with pronoun targets weighted by
    ``pronoun_weight``. Metrics: :func:`prejudice_risk` (primary, lower is better), the
    stereotype gap, and ``name_pronoun_acc`` (he/she after a name - a capability that must survive).
    Discovery: ``gender_prompts(subject="occupation")`` with :func:`logit_diff`.
    """
    _check_lang(lang)
    check_positive_int("n_discovery", n_discovery)
    check_positive_int("n_heldout", n_heldout)
    check_positive_float("pronoun_weight", pronoun_weight)
    dev = resolve_device(device)
    tok = lang.tokenizer
    fair = SyntheticLanguage(occupation_bias=0.5, p_attractor=lang.p_attractor, p_agreement=0.0, n_ctx=lang.n_ctx)
    pron = torch.tensor([tok["he"], tok["she"]])
    occ_ids = torch.tensor([tok[o] for o in lang.occupations])
    name_pairs = lang.gender_prompts(256, seed=eval_seed, subject="name")

    def sample(step: int, generator: torch.Generator, batch_size: int) -> TrainBatch:
        rng = _rng(generator)
        sents = []
        while len(sents) < batch_size:
            s = fair.pronoun_sentence(rng)
            if not occupation_only or s.split()[1] in fair.occupations:
                sents.append(s)
        tokens = lang.encode_batch(sents)
        special = torch.isin(tokens[:, 1:], pron)
        return TrainBatch(tokens, _weights(tokens, tok.pad_id, special, pronoun_weight)).to(dev)

    def evaluate(model: nn.Module) -> dict[str, float]:
        out = prejudice_risk(model, lang, seed=eval_seed)
        out["name_pronoun_acc"] = _pair_accuracy(model, name_pairs)[0]
        return out

    held = lang.sample_batch(n_heldout, seed=heldout_seed)
    occ_rows = torch.isin(held[:, 2], occ_ids)[:, None]
    return TuneTask(
        name="debias", lang=lang,
        discovery=lang.gender_prompts(n_discovery, seed=discovery_seed, subject="occupation").to(dev),
        sample=sample, evaluate=evaluate, primary="prejudice_risk", higher_is_better=False, heldout=held,
        heldout_exclude=occ_rows & torch.isin(held[:, 1:], pron),
        description="gender de-biasing: he/she after an occupation should be 50/50",
    )
