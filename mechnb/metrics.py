"""Behaviour measures of a model on its task: the one copy every layer shares.

- :func:`logit_diff`: per-prompt logit difference between the right and the wrong answer token
  (the patching metric of Wang et al. 2023, "Interpretability in the Wild", Sec. 3), used by
  the circuits method, the zoo's manifest metrics and the notebooks.
- :func:`modular_accuracy`: argmax accuracy of a model on modular-arithmetic pairs.
- :func:`lm_loss`: next-token cross-entropy of a language model over non-pad targets.
- :func:`lm_behaviour`, :func:`occupation_pronoun_probs`: agreement / pronoun accuracy and the
  planted occupation bias of a model of :class:`~mechnb.tasks.SyntheticLanguage`.
- :func:`tms_feature_geometry`: norms and angles of the feature directions of a
  :class:`~mechnb.models.TMS` (Elhage et al. 2022, "Toy Models of Superposition", Sec. 3).

This module sits on the ground floor: it imports only torch, :mod:`mechnb.models`,
:mod:`mechnb.tasks`, :mod:`mechnb.train` and the shared helpers.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from mechnb._checks import _under_functorch, check_choice, check_positive_int, check_tensor
from mechnb._torch import eval_mode
from mechnb.models import TMS, TinyTransformer
from mechnb.tasks import ModularArithmetic, ModularSplit, SyntheticLanguage
from mechnb.train import cross_entropy_loss

__all__ = [
    "logit_diff",
    "modular_accuracy",
    "lm_loss",
    "lm_behaviour",
    "occupation_pronoun_probs",
    "tms_feature_geometry",
]


def _check_token_ids(name: str, ids: torch.Tensor, batch: int, d_vocab: int, dims: str) -> torch.Tensor:
    check_tensor(name, ids, ndim=1, dims=dims, floating=False)
    if ids.shape[0] != batch:
        raise ValueError(f"{name}: expected {batch} token ids (one per prompt, the batch of logits), "
                         f"got {ids.shape[0]}")
    if ids.numel() and not _under_functorch(ids):
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= d_vocab:
            raise ValueError(f"{name}: expected token ids in [0, {d_vocab}) (the logits' vocabulary), "
                             f"got values in [{lo}, {hi}]")
    return ids


def logit_diff(logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor | None = None, *,
               position: int = -1) -> torch.Tensor:
    """Per-prompt logit difference ``logits[b, position, answer[b]] - logits[b, position, wrong[b]]``.

    Args:
        logits: ``(batch, pos, d_vocab)`` (read at ``position``) or ``(batch, d_vocab)``
            (already one position per prompt; ``position`` is then ignored). Floating point;
            gradients flow through.
        answer: ``(batch,)`` int token ids of the right answer, or ``(batch, 2)`` int with the
            right answer in column 0 and the wrong one in column 1 (the layout of
            :attr:`mechnb.tasks.PromptPairs.answers`) when ``wrong`` is omitted.
        wrong: ``(batch,)`` int token ids of the wrong answer (omit when ``answer`` has 2 columns).
        position: the sequence position read in 3-D ``logits`` (default the last one).

    Returns:
        ``(batch,)`` differences, positive where the right answer wins (Wang et al. 2023, Sec. 3;
        the batch mean is the patching metric of the circuits method).
    """
    check_tensor("logits", logits, ndim=(2, 3), dims="(batch, pos, d_vocab) or (batch, d_vocab)", floating=True,
                 finite=False)
    if logits.ndim == 3:
        if not isinstance(position, int) or isinstance(position, bool):
            raise TypeError(f"position: expected an int, got {type(position).__name__}")
        n_pos = logits.shape[1]
        if not -n_pos <= position < n_pos:
            raise ValueError(f"position: expected an index into the {n_pos} positions of logits, got {position}")
        logits = logits[:, position]
    batch, d_vocab = logits.shape
    if wrong is None:
        check_tensor("answer", answer, ndim=(1, 2), dims="(batch,) or (batch, 2)", floating=False)
        if answer.ndim != 2 or answer.shape[1] != 2:
            raise ValueError(f"answer: expected shape (batch, 2) [right, wrong] when wrong is omitted, "
                             f"got {tuple(answer.shape)}")
        right_ids, wrong_ids = answer[:, 0], answer[:, 1]
        _check_token_ids("answer", right_ids, batch, d_vocab, "(batch, 2)")
        _check_token_ids("answer", wrong_ids, batch, d_vocab, "(batch, 2)")
    else:
        right_ids = _check_token_ids("answer", answer, batch, d_vocab, "(batch,)")
        wrong_ids = _check_token_ids("wrong", wrong, batch, d_vocab, "(batch,)")
    r = right_ids.to(logits.device)[:, None]
    w = wrong_ids.to(logits.device)[:, None]
    return (logits.gather(1, r) - logits.gather(1, w))[:, 0]


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def modular_accuracy(
    model: nn.Module,
    data: ModularArithmetic | ModularSplit | torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    split: Literal["train", "test", "all"] = "test",
) -> float:
    """Fraction of modular-arithmetic pairs whose argmax logit is the right residue.

    Args:
        model: maps one-hot pairs ``(n, 2P)`` to logits ``(n, P)``.
        data: a :class:`~mechnb.tasks.ModularArithmetic` task (its ``split`` is evaluated), a
            :class:`~mechnb.tasks.ModularSplit`, or the inputs ``x (n, 2P)`` themselves.
        labels: ``(n,)`` int residues; required with a tensor ``data``, not allowed otherwise.
        split: with a task, ``"train"``, ``"test"`` or ``"all"`` pairs.

    Returns:
        Accuracy in ``[0, 1]`` (the model's mode is restored and no gradients are recorded).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(data, ModularArithmetic):
        check_choice("split", split, ["train", "test", "all"])
        if labels is not None:
            raise ValueError("labels: expected None with a ModularArithmetic task (its labels are used)")
        if split == "all":
            part = data.all_pairs()
        else:
            tr, te = data.split()
            part = tr if split == "train" else te
        x, y = part.x, part.y
    elif isinstance(data, ModularSplit):
        if labels is not None:
            raise ValueError("labels: expected None with a ModularSplit (its y is used)")
        x, y = data.x, data.y
    elif isinstance(data, torch.Tensor):
        if labels is None:
            raise ValueError("labels: expected the (n,) int residues that go with the input tensor data, got None")
        x = check_tensor("data", data, ndim=2, dims="(n, 2P)", floating=True)
        y = check_tensor("labels", labels, ndim=1, dims="(n,)", floating=False)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"labels: expected {x.shape[0]} labels (one per row of data), got {y.shape[0]}")
    else:
        raise TypeError(f"data: expected a ModularArithmetic, a ModularSplit or an (n, 2P) tensor, "
                        f"got {type(data).__name__}")
    if x.shape[0] == 0:
        raise ValueError("data: expected at least one pair, got an empty set")
    dev = _model_device(model)
    with torch.no_grad(), eval_mode(model):
        pred = model(x.to(dev)).argmax(-1)
    return float((pred == y.to(dev)).float().mean())


def lm_loss(model: TinyTransformer, tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Next-token cross-entropy over non-pad targets (a scalar, differentiable).

    ``tokens (batch, pos)`` int; the model reads ``tokens[:, :-1]`` and is scored on
    ``tokens[:, 1:]``, ignoring targets equal to ``pad_id``.
    """
    logits = model(tokens[:, :-1])
    targets = tokens[:, 1:].masked_fill(tokens[:, 1:] == pad_id, -100)
    return cross_entropy_loss(logits, targets)


def _check_lm(model: Any, lang: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a language model (torch.nn.Module, e.g. TinyTransformer), "
                        f"got {type(model).__name__}")
    if not isinstance(lang, SyntheticLanguage):
        raise TypeError(f"lang: expected a SyntheticLanguage, got {type(lang).__name__}")


@torch.no_grad()
def occupation_pronoun_probs(model: TinyTransformer, lang: SyntheticLanguage, seed: int = 123,
                             per_occupation: int = 8) -> tuple[list[str], torch.Tensor, list[str]]:
    """Per occupation, the mean ``P(she) / (P(he) + P(she))`` after ``the OCC PAST the OBJ and``.

    Returns ``(occupations, p_she (n_occ,), stereotype ("m"/"f") per occupation)``.
    """
    _check_lm(model, lang)
    check_positive_int("per_occupation", per_occupation)
    dev = _model_device(model)
    toks, occs = lang.occupation_prompts(seed=seed, per_occupation=per_occupation)
    probs = torch.softmax(model(toks.to(dev))[:, -1], dim=-1).cpu()
    frac = probs[:, lang.tokenizer["she"]] / (probs[:, lang.tokenizer["he"]] + probs[:, lang.tokenizer["she"]])
    names_ = list(lang.occupations)
    p = torch.stack([frac[[i for i, o in enumerate(occs) if o == n]].mean() for n in names_])
    return names_, p, [lang.occupations[n] for n in names_]


@torch.no_grad()
def lm_behaviour(model: TinyTransformer, lang: SyntheticLanguage, n: int = 400, seed: int = 123) -> dict[str, float]:
    """Agreement accuracy (attractor mismatch / none), name-pronoun accuracy and the occupation bias.

    Accuracies: fraction of prompts whose :func:`logit_diff` at the last position is positive.
    ``bias_she_f`` / ``bias_she_m``: mean ``P(she) / (P(he) + P(she))`` after female- /
    male-stereotyped occupations.
    """
    _check_lm(model, lang)
    check_positive_int("n", n)
    dev = _model_device(model)
    out: dict[str, float] = {}
    for key, prompts in [("agree_acc_mismatch", lang.agreement_prompts(n, seed, "mismatch")),
                         ("agree_acc_none", lang.agreement_prompts(n, seed, "none")),
                         ("name_pronoun_acc", lang.gender_prompts(n, seed, "name"))]:
        diff = logit_diff(model(prompts.clean.to(dev)), prompts.answers)
        out[key] = float((diff > 0).float().mean())
    _, p_she, stereo = occupation_pronoun_probs(model, lang, seed)
    fem = torch.tensor([g == "f" for g in stereo])
    out["bias_she_f"] = float(p_she[fem].mean())
    out["bias_she_m"] = float(p_she[~fem].mean())
    return out


def tms_feature_geometry(model: TMS) -> dict[str, Any]:
    """Norms of the feature directions (columns of ``linear1.weight (n_hidden, n_features)``) and,
    for 2-D hidden spaces, the sorted angular gaps between consecutive features in degrees.

    Returns ``{"norms": [n_features], "n_represented": #features with norm > 0.5,
    "angle_gaps_deg": [n_features] (only when n_hidden == 2)}`` (Elhage et al. 2022, Sec. 3:
    a pentagon of 5 features in 2-D has five gaps of 72 degrees).
    """
    if not isinstance(model, TMS):
        raise TypeError(f"model: expected a TMS (toy model of superposition), got {type(model).__name__}")
    W = model.linear1.weight.detach().cpu().double()  # (n_hidden, n_features)
    out: dict[str, Any] = {"norms": W.norm(dim=0).tolist(), "n_represented": int((W.norm(dim=0) > 0.5).sum())}
    if W.shape[0] == 2:
        ang = torch.sort(torch.atan2(W[1], W[0])).values
        gaps = torch.diff(torch.cat([ang, ang[:1] + 2 * math.pi])) * 180 / math.pi
        out["angle_gaps_deg"] = gaps.tolist()
    return out
