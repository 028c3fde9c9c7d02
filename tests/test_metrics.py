"""mechnb.metrics: behaviour measures checked against hand-computed logits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mechnb import metrics
from mechnb.models import MLP, TMS
from mechnb.tasks import ModularArithmetic, SyntheticLanguage


# --------------------------------------------------------------------------------------
# logit_diff
# --------------------------------------------------------------------------------------
def _logits3() -> torch.Tensor:
    # batch 2, pos 2, vocab 3; position 0 holds decoys, position 1 (the last) the values used
    return torch.tensor([[[9.0, 9.0, 9.0], [1.0, 4.0, -2.0]],
                         [[0.0, 0.0, 0.0], [0.5, -1.0, 3.0]]])


def test_logit_diff_last_position_pairs() -> None:
    answers = torch.tensor([[1, 0], [0, 2]])
    d = metrics.logit_diff(_logits3(), answers)
    assert d.shape == (2,)
    assert d.tolist() == [4.0 - 1.0, 0.5 - 3.0]


def test_logit_diff_separate_wrong_and_position() -> None:
    d = metrics.logit_diff(_logits3(), torch.tensor([2, 1]), torch.tensor([0, 0]), position=0)
    assert d.tolist() == [0.0, 0.0]
    d = metrics.logit_diff(_logits3(), torch.tensor([2, 1]), torch.tensor([0, 0]), position=-1)
    assert d.tolist() == [-2.0 - 1.0, -1.0 - 0.5]


def test_logit_diff_two_d_logits_and_gradient() -> None:
    logits = torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    d = metrics.logit_diff(logits, torch.tensor([[1, 0], [1, 0]]))
    assert d.tolist() == [1.0, -4.0]
    d.sum().backward()
    assert logits.grad.tolist() == [[-1.0, 1.0], [-1.0, 1.0]]


@pytest.mark.parametrize("kwargs, err, words", [
    (dict(logits=torch.zeros(2, 3, 4, 5), answer=torch.tensor([[0, 1], [0, 1]])), ValueError, "logits"),
    (dict(logits=torch.zeros(2, 3, dtype=torch.long), answer=torch.tensor([[0, 1], [0, 1]])), TypeError, "logits"),
    (dict(logits=torch.zeros(2, 3), answer=torch.tensor([0, 1])), ValueError, "answer"),
    (dict(logits=torch.zeros(2, 3), answer=torch.tensor([[0, 3], [0, 1]])), ValueError, "[0, 3)"),
    (dict(logits=torch.zeros(2, 3), answer=torch.tensor([[0, -1], [0, 1]])), ValueError, "answer"),
    (dict(logits=torch.zeros(2, 3), answer=torch.tensor([[0.0, 1.0], [0.0, 1.0]])), TypeError, "answer"),
    (dict(logits=torch.zeros(2, 3), answer=torch.tensor([0, 1, 2]), wrong=torch.tensor([0, 1])), ValueError,
     "answer"),
    (dict(logits=torch.zeros(2, 3), answer=torch.tensor([0, 1]), wrong=torch.tensor([0])), ValueError, "wrong"),
    (dict(logits=torch.zeros(2, 4, 3), answer=torch.tensor([[0, 1], [0, 1]]), position=4), ValueError, "position"),
])
def test_logit_diff_rejects_bad_input(kwargs, err, words) -> None:
    with pytest.raises(err, match=words.replace("[", r"\[").replace(")", r"\)")):
        metrics.logit_diff(**kwargs)


# --------------------------------------------------------------------------------------
# modular_accuracy
# --------------------------------------------------------------------------------------
class _Oracle(nn.Module):
    """Reads a, b from the one-hot halves and puts logit 1 on (a + b + shift) mod P."""

    def __init__(self, P: int, shift: int = 0, wrong_on_a: int | None = None) -> None:
        super().__init__()
        self.P, self.shift, self.wrong_on_a = P, shift, wrong_on_a
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, :self.P].argmax(-1), x[:, self.P:].argmax(-1)
        c = (a + b + self.shift) % self.P
        if self.wrong_on_a is not None:
            c = torch.where(a == self.wrong_on_a, (c + 1) % self.P, c)
        return nn.functional.one_hot(c, self.P).float() + 0 * self.dummy


def test_modular_accuracy_ground_truth() -> None:
    task = ModularArithmetic(P=5, op="add", train_frac=0.6, seed=0)
    assert metrics.modular_accuracy(_Oracle(5), task) == 1.0
    assert metrics.modular_accuracy(_Oracle(5), task, split="train") == 1.0
    assert metrics.modular_accuracy(_Oracle(5, shift=1), task, split="all") == 0.0
    # wrong exactly when a == 0: 5 of the 25 pairs
    assert metrics.modular_accuracy(_Oracle(5, wrong_on_a=0), task, split="all") == pytest.approx(20 / 25)
    tr, te = task.split()
    n_wrong_te = int((te.ab[:, 0] == 0).sum())
    assert metrics.modular_accuracy(_Oracle(5, wrong_on_a=0), te) == pytest.approx(1 - n_wrong_te / len(te.y))
    assert metrics.modular_accuracy(_Oracle(5, wrong_on_a=0), tr.x, tr.y) == pytest.approx(
        1 - int((tr.ab[:, 0] == 0).sum()) / len(tr.y))


def test_modular_accuracy_restores_mode_and_rejects_bad_input() -> None:
    task = ModularArithmetic(P=5)
    m = MLP([10, 8, 5])
    m.train()
    metrics.modular_accuracy(m, task)
    assert m.training
    with pytest.raises(ValueError, match="labels"):
        metrics.modular_accuracy(m, task.split()[0].x)
    with pytest.raises(TypeError, match="data"):
        metrics.modular_accuracy(m, [1, 2])
    with pytest.raises(ValueError, match="split"):
        metrics.modular_accuracy(m, task, split="val")
    with pytest.raises(TypeError, match="model"):
        metrics.modular_accuracy("mlp", task)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# tms_feature_geometry, lm_loss, language behaviour
# --------------------------------------------------------------------------------------
def test_tms_feature_geometry_pentagon() -> None:
    m = TMS(5, 2)
    ang = torch.arange(5) * 2 * math.pi / 5
    with torch.no_grad():
        m.linear1.weight.copy_(torch.stack([ang.cos(), ang.sin()]) * torch.tensor([1.0, 1.0, 1.0, 1.0, 0.1]))
    g = metrics.tms_feature_geometry(m)
    assert g["norms"] == pytest.approx([1, 1, 1, 1, 0.1])
    assert g["n_represented"] == 4
    assert g["angle_gaps_deg"] == pytest.approx([72.0] * 5)


def test_tms_feature_geometry_rejects_other_models() -> None:
    with pytest.raises(TypeError, match="model: expected a TMS.*got MLP"):
        metrics.tms_feature_geometry(MLP([4, 3]))  # type: ignore[arg-type]


class _Fixed(nn.Module):
    """Returns the same logits at every position: (batch, pos, V)."""

    def __init__(self, row: torch.Tensor) -> None:
        super().__init__()
        self.row = nn.Parameter(row.clone())

    def forward(self, toks: torch.Tensor) -> torch.Tensor:
        return self.row.expand(*toks.shape, -1)


def test_lm_loss_ignores_pad_targets() -> None:
    row = torch.tensor([0.0, math.log(3.0), 0.0])  # softmax = [1/5, 3/5, 1/5]
    toks = torch.tensor([[0, 1, 2, 2], [1, 1, 2, 2]])  # pad_id 2: targets 1, 2(pad), 2(pad) / 1, 2, 2
    loss = metrics.lm_loss(_Fixed(row), toks, pad_id=2)  # type: ignore[arg-type]
    assert float(loss.detach()) == pytest.approx(-math.log(3 / 5))


def test_lm_behaviour_of_a_model_that_always_says_she() -> None:
    lang = SyntheticLanguage(n_ctx=16)
    V = lang.vocab_size
    row = torch.zeros(V)
    she, he = lang.tokenizer["she"], lang.tokenizer["he"]
    row[she], row[he] = math.log(3.0), 0.0  # P(she) / (P(he) + P(she)) = 3/4 everywhere
    occs, p_she, stereo = metrics.occupation_pronoun_probs(_Fixed(row), lang)  # type: ignore[arg-type]
    assert occs == list(lang.occupations) and stereo == [lang.occupations[o] for o in occs]
    assert torch.allclose(p_she, torch.full((len(occs),), 0.75))
    beh = metrics.lm_behaviour(_Fixed(row), lang, n=40)  # type: ignore[arg-type]
    assert beh["bias_she_f"] == pytest.approx(0.75) and beh["bias_she_m"] == pytest.approx(0.75)
    # name prompts: the model is right exactly on the prompts whose answer is "she"
    pairs = lang.gender_prompts(40, 123, "name")
    assert beh["name_pronoun_acc"] == pytest.approx(float((pairs.answers[:, 0] == she).float().mean()))
    with pytest.raises(TypeError, match="lang"):
        metrics.lm_behaviour(_Fixed(row), "english")  # type: ignore[arg-type]
