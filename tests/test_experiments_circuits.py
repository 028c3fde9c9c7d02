"""The planted induction circuit of mechnb.experiments.circuits: prompts of the stated shape, a model
that solves them through the stated heads, distractors that write only into the junk subspace."""

from __future__ import annotations

import pytest
import torch

from mechnb.circuits import Circuit, faithfulness, logit_diff
from mechnb.experiments.circuits import induction_prompts, planted_induction

torch.set_num_threads(1)


def test_induction_prompts_have_the_stated_structure() -> None:
    pr = induction_prompts(40, seed=3, n_tokens=16, n_ctx=8)
    assert pr.clean.shape == pr.corrupted.shape == (40, 8)
    for c, x, (a, b), j in zip(pr.clean, pr.corrupted, pr.answers, pr.labels["first_position"]):
        assert c[0] == 16 and x[0] == 16  # <bos>
        assert len(set(c[1:-1].tolist())) == 6 and len(set(x[1:-1].tolist())) == 6  # distinct body tokens
        assert 1 <= j <= 5 and c[-1] == c[j] and x[-1] == x[j]  # same position of A's first occurrence
        assert a == c[j + 1] and b == x[j + 1] and a != b
    assert torch.equal(induction_prompts(40, seed=3).clean, pr.clean)
    with pytest.raises(ValueError, match="n_tokens"):
        induction_prompts(4, n_tokens=5, n_ctx=8)


def test_planted_model_solves_the_task_through_its_two_heads() -> None:
    pc = planted_induction(n_prompts=32)
    m, pr = pc.model, pc.prompts
    with torch.no_grad():
        logits, cache = m.run_with_cache(pr.clean)
    assert (logits[:, -1].argmax(-1) == pr.answers[:, 0]).all()
    assert float(logit_diff(logits, pr)) > 5
    prev = cache["blocks.0.attn.hook_pattern"][:, 2]  # [b, q, k]
    assert (prev[:, torch.arange(1, 8), torch.arange(0, 7)] > 0.99).all()  # position p attends to p - 1
    ind = cache["blocks.1.attn.hook_pattern"][:, 1, -1]  # the last position's attention, [b, k]
    j = torch.tensor(pr.labels["first_position"])
    assert (ind[torch.arange(32), j + 1] > 0.99).all()  # to the token after A's first occurrence
    # distractors write only into the junk subspace; the unembedding reads only the output subspace
    lo, hi = pc.subspaces["junk"]
    for layer, keep in ((0, 2), (1, 1)):
        W_O = m.blocks[layer].attn.W_O
        for h in range(4):
            if h != keep:
                assert W_O[h].abs().sum() > 0 and not W_O[h][:, :lo].any() and not W_O[h][:, hi:].any()
        assert not m.blocks[layer].mlp.W_out[:, :lo].any()
    o0, o1 = pc.subspaces["output"]
    assert not m.unembed.W_U[:o0].any() and not m.unembed.W_U[o1:].any()
    assert pc.prev_head == "a0.h2" and pc.induction_head == "a1.h1" and len(pc.distractors) == 8


def test_the_true_edges_carry_the_answer() -> None:
    pc = planted_induction(n_prompts=32)
    graph = pc.graph
    assert set(pc.true_edges) <= set(graph.edge_index)
    true = pc.true_circuit()
    assert true.n_edges == 5 and pc.true_circuit(with_positional=True).n_edges == 7
    assert faithfulness(pc.model, true, pc.prompts) > 0.95
    # the mean ablation also needs the positional edges of the previous-token head
    assert faithfulness(pc.model, pc.true_circuit(with_positional=True), pc.prompts, ablation="mean-positional") > 0.9
    rest = Circuit(graph, graph.valid & ~true.mask)
    assert abs(faithfulness(pc.model, rest, pc.prompts)) < 0.05  # without them nothing is left
    with pytest.raises(ValueError, match="prev_head"):
        planted_induction(prev_head=4)
    with pytest.raises(TypeError, match="seed"):
        planted_induction(seed=1.5)  # type: ignore[arg-type]
