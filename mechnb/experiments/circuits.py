"""Experiments of notebook 04: a transformer with a planted circuit, the ground truth for circuit discovery.

:func:`planted_induction` builds a 2-layer :class:`~mechnb.models.TinyTransformer` by hand in which
a known set of edges computes the answer of an induction task (Olsson et al. 2022), among
distractor heads and MLPs that compute things the answer does not use:

* the prompts (:func:`induction_prompts`) are ``<bos> t1 .. t6 A`` with ``t1 .. t6`` distinct
  tokens and ``A = t_j`` one of them; the answer is the token after ``A``'s first occurrence,
  ``t_{j+1}``. The corrupted prompt is another prompt of the same shape (same ``j``) with other
  tokens, so the two answers differ;
* layer 0, head ``prev_head``: a previous-token head. Its query and key read the position
  embedding (position ``p`` attends to ``p - 1``), its value reads the token embedding and writes
  "the previous token was ``t``" into a subspace of its own;
* layer 1, head ``induction_head``: its query reads the current token (``A``) from the input, its
  key reads the previous-token subspace written by the previous-token head, so it attends to the
  position after ``A``'s first occurrence; its value reads that position's token from the input
  and writes it to the subspace the unembedding reads;
* every other head and both MLPs read the residual stream with random weights and write only
  into a "junk" subspace nothing reads (they change later layers only through the LayerNorms).

The residual stream is split into orthogonal subspaces: token identity, position, previous token,
output (read by the unembedding) and junk; token and position embeddings are scaled one-hots, so
every LayerNorm sees the same mean and norm whatever the token and the position.

:attr:`PlantedCircuit.true_edges` are the five edges through which the answer flows when the
tokens change: ``input -> prev<v>``, ``prev -> induction<k>``, ``input -> induction<q>``,
``input -> induction<v>`` and ``induction -> logits``. The previous-token head's query and key
edges (:attr:`PlantedCircuit.positional_edges`) are part of the mechanism too, but they carry only
position, which is the same on the clean and the corrupted prompt: corrupted patching cannot see
them (their exact scores are 0), zero and mean ablation can (they destroy the position signal).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mechnb._checks import check_positive_int, check_seed
from mechnb.circuits import Circuit, Graph
from mechnb.models import TinyTransformer
from mechnb.tasks import PromptPairs

__all__ = ["PlantedCircuit", "planted_induction", "induction_prompts"]


@dataclass
class PlantedCircuit:
    """A model with a hand-set circuit, its prompts and the edges that carry the answer.

    Attributes:
        model: the :class:`TinyTransformer` (eval mode).
        prompts: clean/corrupted :class:`PromptPairs` of the task; ``answers[:, 0]`` is the clean
            answer, ``answers[:, 1]`` the corrupted prompt's answer.
        true_edges: names of the edges that carry the answer (the ground truth of :func:`roc_against`).
        positional_edges: mechanism edges that carry only position (invisible to corrupted patching).
        prev_head, induction_head: node names of the two heads of the circuit.
        distractors: the other heads and MLPs (node names).
        subspaces: ``{name: (start, stop)}`` of the residual stream's subspaces.
    """

    model: TinyTransformer
    prompts: PromptPairs
    true_edges: list[str]
    positional_edges: list[str]
    prev_head: str
    induction_head: str
    distractors: list[str] = field(default_factory=list)
    subspaces: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def graph(self) -> Graph:
        return Graph.from_model(self.model)

    def true_circuit(self, with_positional: bool = False) -> Circuit:
        """The planted circuit as a :class:`Circuit` (with the positional edges if asked)."""
        edges = self.true_edges + (self.positional_edges if with_positional else [])
        return Circuit.from_edges(self.graph, edges, prune=False)


def induction_prompts(n: int = 64, seed: int = 0, n_tokens: int = 16, n_ctx: int = 8) -> PromptPairs:
    """``n`` clean/corrupted induction prompts ``<bos> t1 .. t_{n_ctx-2} A`` (see the module docstring).

    Token ids ``0 .. n_tokens-1`` are content tokens, ``n_tokens`` is ``<bos>``. ``A = t_j`` with
    ``j`` uniform in ``1 .. n_ctx - 3`` (so the answer ``t_{j+1}`` is never the last token before
    ``A``); the corrupted prompt has the same ``j`` and fresh tokens, and a different answer.
    """
    check_positive_int("n", n)
    check_seed("seed", seed)
    check_positive_int("n_ctx", n_ctx, minimum=5)
    check_positive_int("n_tokens", n_tokens, minimum=n_ctx)
    g = torch.Generator().manual_seed(seed)
    bos = n_tokens
    L = n_ctx - 2  # distinct tokens t1 .. tL, then A

    def prompt(j: int) -> torch.Tensor:
        body = torch.randperm(n_tokens, generator=g)[:L]
        return torch.cat([torch.tensor([bos]), body, body[j - 1: j]])

    clean, corrupted, answers = [], [], []
    for _ in range(n):
        j = int(torch.randint(1, L, (1,), generator=g))  # position of A's first occurrence, 1 .. L-1
        c = prompt(j)
        while True:
            x = prompt(j)
            if int(x[j + 1]) != int(c[j + 1]):
                break
        clean.append(c)
        corrupted.append(x)
        answers.append([int(c[j + 1]), int(x[j + 1])])
    return PromptPairs(torch.stack(clean), torch.stack(corrupted), torch.tensor(answers), "induction",
                       {"first_position": [int(torch.nonzero(c[1:-1] == c[-1])[0]) + 1 for c in clean]})


def planted_induction(
    n_prompts: int = 64,
    seed: int = 0,
    *,
    n_tokens: int = 16,
    n_ctx: int = 8,
    n_heads: int = 4,
    prev_head: int = 2,
    induction_head: int = 1,
    n_junk: int = 8,
    d_mlp: int = 32,
    distractor_scale: float = 0.5,
) -> PlantedCircuit:
    """A 2-layer TinyTransformer with a planted induction circuit among distractors (module docstring).

    Args:
        n_prompts, seed: the prompts (:func:`induction_prompts`) and the distractors' random weights.
        n_tokens, n_ctx: content tokens (plus ``<bos>``) and context length.
        n_heads: heads per layer; ``prev_head`` (layer 0) and ``induction_head`` (layer 1) form the
            circuit, the others are distractors.
        n_junk, d_mlp: width of the junk subspace the distractors write to, and of the MLPs.
        distractor_scale: size of the distractors' random weights (their writes stay in the junk
            subspace whatever the scale; larger ones perturb the LayerNorms more).
    """
    check_seed("seed", seed)
    check_positive_int("n_heads", n_heads, minimum=2)
    for name, h in (("prev_head", prev_head), ("induction_head", induction_head)):
        if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < n_heads:
            raise ValueError(f"{name}: expected a head index in [0, {n_heads}), got {h!r}")
    check_positive_int("n_junk", n_junk)
    if not distractor_scale >= 0:
        raise ValueError(f"distractor_scale: expected a number >= 0, got {distractor_scale!r}")
    prompts = induction_prompts(n_prompts, seed, n_tokens, n_ctx)
    vocab = n_tokens + 1
    spans, start = {}, 0
    for name, width in (("token", vocab), ("position", n_ctx), ("previous", vocab), ("output", n_tokens),
                        ("junk", n_junk)):
        spans[name] = (start, start + width)
        start += width
    d_model, d_head = start, max(vocab, n_ctx + 1)
    model = TinyTransformer(vocab, d_model, 2, n_heads, d_mlp, n_ctx, d_head=d_head, init_seed=seed)
    T, P, R, O, J = (spans[k] for k in ("token", "position", "previous", "output", "junk"))
    gen = torch.Generator().manual_seed(seed + 1)

    def rand(*shape: int) -> torch.Tensor:  # fan-in scaled: reads of unit size, writes of size ~ distractor_scale
        return torch.randn(*shape, generator=gen) / shape[0] ** 0.5

    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in [model.ln_final] + [m for b in model.blocks for m in (b.ln1, b.ln2)]:
            ln.w.fill_(1.0)
        model.embed.W_E[:, T[0]:T[1]] = 4.0 * torch.eye(vocab)
        model.pos_embed.W_pos[:, P[0]:P[1]] = 4.0 * torch.eye(n_ctx)
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        # previous-token head: query "I am at p", key "I am at s, so I am the previous token of s + 1"
        for p in range(n_ctx):
            a0.W_Q[prev_head, P[0] + p, p] = 2.0
            if p + 1 < n_ctx:
                a0.W_K[prev_head, P[0] + p, p + 1] = 2.0
        a0.W_V[prev_head, T[0]:T[1], :vocab] = torch.eye(vocab)
        a0.W_O[prev_head, :vocab, R[0]:R[1]] = 1.0 * torch.eye(vocab)
        # induction head: query = current token, key = previous token, value = the token itself
        a1.W_Q[induction_head, T[0]:T[1], :vocab] = 2.0 * torch.eye(vocab)
        a1.W_K[induction_head, R[0]:R[1], :vocab] = 2.0 * torch.eye(vocab)
        a1.W_V[induction_head, T[0]:T[0] + n_tokens, :n_tokens] = torch.eye(n_tokens)
        a1.W_O[induction_head, :n_tokens, O[0]:O[1]] = 1.0 * torch.eye(n_tokens)
        model.unembed.W_U[O[0]:O[1], :n_tokens] = 3.0 * torch.eye(n_tokens)
        # distractors: random reads of the stream, writes only into the junk subspace
        for layer, attn in enumerate((a0, a1)):
            readable = slice(0, (P if layer == 0 else J)[1])
            for h in range(n_heads):
                if h == (prev_head if layer == 0 else induction_head):
                    continue
                n_read = readable.stop
                attn.W_Q[h, readable] = rand(n_read, d_head)
                attn.W_K[h, readable] = rand(n_read, d_head)
                attn.W_V[h, readable] = rand(n_read, d_head)
                attn.W_O[h, :, J[0]:J[1]] = distractor_scale * rand(d_head, n_junk)
            mlp = model.blocks[layer].mlp
            mlp.W_in[readable] = rand(readable.stop, d_mlp)
            mlp.W_out[:, J[0]:J[1]] = distractor_scale * rand(d_mlp, n_junk)
    model.eval()
    pn, ind = f"a0.h{prev_head}", f"a1.h{induction_head}"
    true_edges = [f"input->{pn}<v>", f"{pn}->{ind}<k>", f"input->{ind}<q>", f"input->{ind}<v>", f"{ind}->logits"]
    positional = [f"input->{pn}<q>", f"input->{pn}<k>"]
    distractors = [f"a{layer}.h{h}" for layer, keep in ((0, prev_head), (1, induction_head)) for h in range(n_heads)
                   if h != keep] + ["m0", "m1"]
    return PlantedCircuit(model, prompts, true_edges, positional, pn, ind, distractors, spans)
