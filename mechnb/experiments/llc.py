"""Experiments for notebook 06 (the learning coefficient over training).

* :func:`stagewise_dln` - a deep linear network trained from a small initialisation towards a
  teacher with well-separated singular values: gradient descent learns the teacher's directions
  one at a time (Saxe et al. 2014, *Exact solutions to the nonlinear dynamics of learning in
  deep linear neural networks*, arXiv 1312.6120; saddle-to-saddle dynamics, Jacot et al. 2021,
  arXiv 2106.15933), so the loss falls in steps and the LLC climbs from plateau to plateau.
* :func:`learned_rank` - how many teacher directions a network has learned.
* :func:`plateaus` - the checkpoints on each plateau of a stage-wise run.
* :func:`grokking_run` - an MLP of the zoo's ``modadd-mlp`` family (one-hot ``a, b`` to the
  logits of ``a + b mod P``) trained on a small fraction of the pairs with strong weight decay, so
  it memorises first and generalises much later (grokking; Power et al. 2022, arXiv 2201.02177),
  with the LLC and the per-layer weight-restricted LLC at its checkpoints.
* :func:`grokking_transition` - the memorisation and generalisation steps read off accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mechnb._checks import check_choice, check_positive_float, check_positive_int, check_probability, check_seed
from mechnb._torch import eval_mode
from mechnb.degeneracy import LLCTrajectory, dln_learning_coefficient, llc_trajectory, sse_loss
from mechnb.metrics import modular_accuracy
from mechnb.models import MLP
from mechnb.tasks import ModularArithmetic, ModularSplit
from mechnb.train import TrainConfig, TrainResult, cross_entropy_loss, train

__all__ = ["StagewiseRun", "stagewise_dln", "learned_rank", "plateaus", "STAGEWISE_LLC",
           "GrokkingRun", "grokking_run", "grokking_transition", "GROKKING_LLC"]

STAGEWISE_LLC = dict(num_chains=4, num_draws=500, num_burnin_steps=500, lr=1e-4, nbeta=100.0, localization=300.0,
                     seed=0, progress=False)
"""The sampler setting for :func:`stagewise_dln`'s checkpoints: ``γ / nβ = 3`` keeps the chains of a
plateau (a saddle whose escape direction has curvature about ``-2 s_{k+1}``) from sliding off it."""


@dataclass
class StagewiseRun:
    """A stage-wise training run (:func:`stagewise_dln`).

    Attributes:
        model: the trained network (bias-free linear :class:`mechnb.models.MLP`).
        x, y: ``(n, d_in)`` inputs and ``(n, d_out)`` noiseless targets ``y = T x``.
        teacher: ``(d_out, d_in)`` the teacher ``T = U diag(s) V^T``.
        singular_values: ``(r,)`` the teacher's singular values ``s`` (descending).
        widths: the network's widths.
        result: the :class:`mechnb.train.TrainResult` with ``checkpoints``.
        ranks: ``(K,)`` the rank learned at each checkpoint (:func:`learned_rank`).
        aoyagi: ``(K,)`` Aoyagi's λ for the rank learned at each checkpoint.
    """

    model: MLP
    x: torch.Tensor
    y: torch.Tensor
    teacher: torch.Tensor
    singular_values: torch.Tensor
    widths: tuple[int, ...]
    result: TrainResult
    ranks: np.ndarray
    aoyagi: np.ndarray

    @property
    def steps(self) -> np.ndarray:
        """``(K,)`` the checkpoints' training steps."""
        return np.asarray([c["step"] for c in self.result.checkpoints])


def learned_rank(product: torch.Tensor, singular_values: torch.Tensor, frac: float = 0.5) -> int:
    """The number of the model's singular values above ``frac`` times the teacher's matching one.

    ``product (d_out, d_in)`` is the network's end-to-end map; a direction counts as learned once
    its singular value has reached half of the teacher's (the sigmoidal rise of Saxe et al. is
    steep, so the count hardly depends on ``frac``).
    """
    S = torch.linalg.svdvals(product.double())
    s = singular_values.double()
    return int((S[: s.numel()] > frac * s).sum())


def stagewise_dln(widths: Sequence[int] = (6, 3, 3, 6), singular_values: Sequence[float] = (5.0, 1.5, 0.6),
                  *, n_samples: int = 200, init_scale: float = 0.1, steps: int = 2500, lr: float = 0.01,
                  checkpoint_every: int = 50, seed: int = 0) -> StagewiseRun:
    """Train a deep linear network by full-batch gradient descent from ``init_scale`` towards a teacher.

    The teacher ``T = U diag(s) V^T`` has random orthonormal ``U, V`` and the given singular
    values; inputs are standard normal and targets noiseless. With a small initialisation,
    direction ``i`` is learned after about ``log(1 / init_scale) / (lr · s_i)`` steps (Saxe et
    al. 2014, Eq. 8 for two layers), so well-separated ``s_i`` give separated plateaus. Loss:
    :func:`mechnb.degeneracy.sse_loss`; optimiser: plain SGD without momentum.

    Returns:
        A :class:`StagewiseRun` with the checkpoints every ``checkpoint_every`` steps.
    """
    H = tuple(check_positive_int(f"widths[{i}]", w) for i, w in enumerate(widths))
    if len(H) < 3:
        raise ValueError(f"widths: expected at least three widths (a deep network), got {widths!r}")
    s = torch.as_tensor([check_positive_float(f"singular_values[{i}]", v) for i, v in enumerate(singular_values)],
                        dtype=torch.float64)
    if s.numel() > min(H) or s.numel() == 0:
        raise ValueError(f"singular_values: expected 1 to min(widths) = {min(H)} values, got {s.numel()}")
    if bool((s[1:] > s[:-1]).any()):
        raise ValueError(f"singular_values: expected descending values, got {list(singular_values)}")
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    U, _ = torch.linalg.qr(torch.randn(H[-1], s.numel(), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(H[0], s.numel(), generator=g, dtype=torch.float64))
    T = (U * s) @ V.T
    x = torch.randn(check_positive_int("n_samples", n_samples, minimum=2), H[0], generator=g, dtype=torch.float64)
    # whiten the inputs so the dynamics follow the teacher's singular values exactly (Saxe et al.)
    L = torch.linalg.cholesky(x.T @ x / x.shape[0])
    x = torch.linalg.solve_triangular(L, x.T, upper=False).T
    y = x @ T.T
    model = MLP(list(H), activation="linear", bias=False).double()
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.copy_(init_scale * torch.randn(layer.weight.shape, generator=g, dtype=torch.float64))
    cfg = TrainConfig(steps=check_positive_int("steps", steps), optimizer="sgd", lr=check_positive_float("lr", lr),
                      momentum=0.0, seed=int(seed))
    res = train(model, lambda step, gen: (x, y), lambda m, b: sse_loss(m(b[0]), b[1]), cfg, progress=False,
                checkpoint_every=check_positive_int("checkpoint_every", checkpoint_every))
    ranks = []
    for c in res.checkpoints:
        P = torch.eye(H[0], dtype=torch.float64)
        for i in range(len(H) - 1):
            P = c["state"][f"layers.{i}.weight"] @ P
        ranks.append(learned_rank(P, s))
    aoyagi = [dln_learning_coefficient(H, rank=r) if r > 0 else 0.0 for r in ranks]
    return StagewiseRun(model=model, x=x, y=y, teacher=T, singular_values=s, widths=H, result=res,
                        ranks=np.asarray(ranks), aoyagi=np.asarray(aoyagi))


def plateaus(ranks: np.ndarray, min_length: int = 2) -> list[tuple[int, np.ndarray]]:
    """``[(rank, checkpoint indices), ...]``: the runs of at least ``min_length`` checkpoints at one learned rank.

    The first and last checkpoint of each run are dropped when the run is long enough (at least
    ``min_length + 2``), so transitions half-way through a direction's rise are not counted.
    """
    out, start = [], 0
    r = np.asarray(ranks)
    for i in range(1, len(r) + 1):
        if i == len(r) or r[i] != r[start]:
            idx = np.arange(start, i)
            if len(idx) >= min_length + 2:
                idx = idx[1:-1]
            if len(idx) >= min_length:
                out.append((int(r[start]), idx))
            start = i
    return out


# --------------------------------------------------------------------------------------
# Grokking: modular addition memorised first, generalised later
# --------------------------------------------------------------------------------------
GROKKING_LLC = dict(num_chains=2, num_draws=200, num_burnin_steps=0, lr=3e-3, nbeta=2.0, localization=5.0, seed=0,
                    progress=False)
"""The sampler setting for :func:`grokking_run`'s checkpoints (full-batch SGLD on the training pairs):
step size, ``nβ`` and ``γ`` as calibrated in devinterp's grokking example for its modular-addition
MLP (``ε = 3e-3``, ``nβ = 2``, ``γ = 5``); a small ``nβ`` keeps the chains of a memorising
checkpoint, whose loss is nearly zero, from being squeezed into its immediate neighbourhood."""


@dataclass
class GrokkingRun:
    """A grokking run (:func:`grokking_run`): the checkpoints with their losses, accuracies and LLCs.

    Attributes:
        model: the trained :class:`mechnb.models.MLP` ``2P -> hidden -> P`` (its final state).
        task: the :class:`mechnb.tasks.ModularArithmetic` task (``op="add"``).
        train, test: the :class:`mechnb.tasks.ModularSplit` of the pairs.
        result: the :class:`mechnb.train.TrainResult` with ``checkpoints`` (step 0 included).
        steps: ``(K,)`` the checkpoints' training steps.
        train_loss, test_loss: ``(K,)`` cross-entropy on the train / test pairs at each checkpoint
            (the training loss without the weight-decay term).
        train_acc, test_acc: ``(K,)`` accuracy (:func:`mechnb.metrics.modular_accuracy`).
        memorised_step, transition_step: :func:`grokking_transition` of the accuracies (``None``
            where the run never got there).
        llc: the :class:`mechnb.degeneracy.LLCTrajectory` over all checkpoints, on the training
            pairs (``None`` when not estimated).
        layer_llc: ``{"layers.i": LLCTrajectory}``, the weight-restricted LLC of each layer
            (its weight and bias sampled, the rest held) at ``layer_steps``.
        layer_steps: ``(K',)`` the checkpoints of ``layer_llc`` (every ``layer_every``-th one, the
            last, and those of ``memorised_step`` and ``transition_step``).
    """

    model: MLP
    task: ModularArithmetic
    train: ModularSplit
    test: ModularSplit
    result: TrainResult
    steps: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray
    memorised_step: int | None
    transition_step: int | None
    llc: LLCTrajectory | None = None
    layer_llc: dict[str, LLCTrajectory] = field(default_factory=dict)
    layer_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def groks(self) -> bool:
        """True when the training pairs were fitted strictly before the test pairs (a delay of at
        least one checkpoint between ``memorised_step`` and ``transition_step``)."""
        return (self.memorised_step is not None and self.transition_step is not None
                and self.transition_step > self.memorised_step)

    def summary(self) -> dict[str, Any]:
        """The run's landmarks as plain numbers (needs :attr:`llc`).

        ``llc_start`` / ``llc_peak`` (at ``llc_peak_step``) / ``llc_at_transition`` / ``llc_end``:
        the LLC at step 0, its maximum, at ``transition_step`` (``nan`` without one) and at the
        last checkpoint; ``end_over_peak``; ``corr_llc_test_loss``: Pearson's correlation of the
        LLC with the test loss over the checkpoints from ``memorised_step`` on (devinterp's
        grokking example remarks that the two track each other); ``layer_peak`` / ``layer_end``:
        ``{layer: value}`` of the restricted LLCs; final accuracies.
        """
        if self.llc is None:
            raise ValueError("llc: this run has no LLC estimates (grokking_run(..., llc=None)); run it with llc settings")
        m = self.llc.mean
        i_peak = int(np.argmax(m))
        after = self.steps >= (self.memorised_step if self.memorised_step is not None else 0)
        corr = float(np.corrcoef(m[after], self.test_loss[after])[0, 1]) if after.sum() > 2 else float("nan")
        at = np.flatnonzero(self.steps == self.transition_step)
        return dict(memorised_step=self.memorised_step, transition_step=self.transition_step,
                    llc_start=float(m[0]), llc_peak=float(m[i_peak]), llc_peak_step=int(self.steps[i_peak]),
                    llc_at_transition=float(m[at[0]]) if at.size else float("nan"), llc_end=float(m[-1]),
                    end_over_peak=float(m[-1] / m[i_peak]), corr_llc_test_loss=corr,
                    layer_peak={k: float(t.mean.max()) for k, t in self.layer_llc.items()},
                    layer_end={k: float(t.mean[-1]) for k, t in self.layer_llc.items()},
                    final_train_acc=float(self.train_acc[-1]), final_test_acc=float(self.test_acc[-1]))

    def __repr__(self) -> str:
        return (f"GrokkingRun(P={self.task.P}, checkpoints={len(self.steps)}, memorised_step={self.memorised_step}, "
                f"transition_step={self.transition_step}, final train/test acc={self.train_acc[-1]:.3f}/"
                f"{self.test_acc[-1]:.3f})")


def grokking_transition(steps: Any, train_acc: Any, test_acc: Any, *, memorised: float = 0.99,
                        generalised: float = 0.9) -> tuple[int | None, int | None]:
    """``(memorised_step, transition_step)`` of a training run, read off its checkpoints.

    ``memorised_step``: the first checkpoint whose train accuracy is at least ``memorised``;
    ``transition_step``: the first checkpoint at or after it whose test accuracy is at least
    ``generalised``. Either is ``None`` if no checkpoint qualifies. ``steps, train_acc, test_acc``
    are ``(K,)`` arrays in training order.
    """
    st = np.asarray(steps)
    tr, te = np.asarray(train_acc, float), np.asarray(test_acc, float)
    if st.ndim != 1 or tr.shape != st.shape or te.shape != st.shape or st.size == 0:
        raise ValueError(f"steps, train_acc, test_acc: expected three 1-D arrays of one non-zero length, got shapes "
                         f"{st.shape}, {tr.shape}, {te.shape}")
    for name, v in (("memorised", memorised), ("generalised", generalised)):
        check_probability(name, v, open_left=True)
    hit = np.flatnonzero(tr >= memorised)
    if hit.size == 0:
        return None, None
    i = int(hit[0])
    later = np.flatnonzero(te[i:] >= generalised)
    return int(st[i]), (int(st[i + int(later[0])]) if later.size else None)


def _split_metrics(model: MLP, split: ModularSplit) -> tuple[float, float]:
    with eval_mode(model), torch.no_grad():
        loss = float(cross_entropy_loss(model(split.x), split.y))
    return loss, modular_accuracy(model, split.x, split.y)


def grokking_run(P: int = 23, hidden: Sequence[int] = (128,), *, train_frac: float = 0.65, activation: str = "gelu",
                 steps: int = 1500, lr: float = 2e-2, weight_decay: float = 1.0, checkpoint_every: int = 100,
                 seed: int = 0, llc: Mapping[str, Any] | None = GROKKING_LLC, per_layer: bool = True,
                 layer_every: int = 1) -> GrokkingRun:
    """Train an MLP on ``a + b mod P`` until it groks; the LLC at every checkpoint.

    The model family of the zoo's ``modadd-mlp`` (one-hot ``a`` and ``b`` concatenated,
    ``(n, 2P) -> hidden -> (n, P)`` logits, cross-entropy), but shallow, on a small fraction of the
    pairs, full batch, with AdamW and a strong decoupled weight decay (``betas = (0.9, 0.98)``,
    constant learning rate). Weight decay is what makes it grok (Power et al. 2022; Liu et al.
    2023, *Omnigrok*, arXiv 2210.01117): the memorising solution fits the training pairs within a
    few hundred steps, and the decay keeps pulling the weights towards the smaller-norm
    solution that also fits the test pairs. A one-hidden-layer MLP on one-hots is devinterp's
    grokking model with its embedding folded into the first layer.

    ``llc``: the keywords of :func:`mechnb.degeneracy.llc_trajectory` (default
    :data:`GROKKING_LLC`; ``None`` skips the estimates); the loss is the mean cross-entropy on the
    training pairs, as in training. With ``per_layer`` every layer ``layers.i`` gets its
    weight-restricted trajectory (weight and bias sampled, Wang et al. 2024, arXiv 2410.02984) at
    every ``layer_every``-th checkpoint, the last one, and the memorisation and transition
    checkpoints.

    Returns:
        A :class:`GrokkingRun`.
    """
    H = tuple(check_positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden))
    if not H:
        raise ValueError(f"hidden: expected at least one hidden width, got {hidden!r}")
    check_choice("activation", activation, ["relu", "gelu"])
    if llc is not None and not isinstance(llc, Mapping):
        raise TypeError(f"llc: expected None or a mapping of llc_trajectory keywords, got {type(llc).__name__}")
    task = ModularArithmetic(P=check_positive_int("P", P, minimum=2), op="add", train_frac=train_frac,
                             seed=check_seed("seed", seed))
    tr, te = task.split()
    if len(te.y) == 0:
        raise ValueError(f"train_frac: expected a fraction that leaves test pairs, got {train_frac!r}")
    torch.manual_seed(int(seed))
    model = MLP([2 * task.P, *H, task.P], activation=activation, bias=True)
    cfg = TrainConfig(steps=check_positive_int("steps", steps), lr=check_positive_float("lr", lr),
                      weight_decay=check_positive_float("weight_decay", weight_decay, allow_zero=True),
                      betas=(0.9, 0.98), seed=int(seed), log_every=int(steps))
    res = train(model, lambda step, gen: (tr.x, tr.y), lambda m, b: cross_entropy_loss(m(b[0]), b[1]), cfg,
                progress=False, checkpoint_every=check_positive_int("checkpoint_every", checkpoint_every))
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rows = []
    for c in res.checkpoints:
        model.load_state_dict(c["state"])
        rows.append((*_split_metrics(model, tr), *_split_metrics(model, te)))
    model.load_state_dict(final)
    trl, tra, tel, tea = (np.asarray(col) for col in zip(*rows))
    st = np.asarray([c["step"] for c in res.checkpoints], dtype=np.int64)
    mem, trans = grokking_transition(st, tra, tea)
    run = GrokkingRun(model=model, task=task, train=tr, test=te, result=res, steps=st, train_loss=trl, test_loss=tel,
                      train_acc=tra, test_acc=tea, memorised_step=mem, transition_step=trans)
    if llc is None:
        return run
    kw = dict(llc)
    run.llc = llc_trajectory(res, cross_entropy_loss, (tr.x, tr.y), model=model, **kw)
    if per_layer:
        every = check_positive_int("layer_every", layer_every)
        landmarks = {int(np.flatnonzero(st == v)[0]) for v in (mem, trans) if v is not None}
        idx = sorted(set(range(0, len(st), every)) | {len(st) - 1} | landmarks)
        ckpts = [res.checkpoints[i] for i in idx]
        run.layer_steps = st[idx]
        for i in range(len(model.layers)):
            names = [f"layers.{i}.weight", f"layers.{i}.bias"]
            run.layer_llc[f"layers.{i}"] = llc_trajectory(ckpts, cross_entropy_loss, (tr.x, tr.y), model=model,
                                                          restrict=names, **kw)
    return run
