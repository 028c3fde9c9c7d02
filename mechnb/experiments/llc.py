"""Experiments for notebook 06 (the learning coefficient over training).

* :func:`stagewise_dln` - a deep linear network trained from a small initialisation towards a
  teacher with well-separated singular values: gradient descent learns the teacher's directions
  one at a time (Saxe et al. 2014, *Exact solutions to the nonlinear dynamics of learning in
  deep linear neural networks*, arXiv 1312.6120; saddle-to-saddle dynamics, Jacot et al. 2021,
  arXiv 2106.15933), so the loss falls in steps and the LLC climbs from plateau to plateau.
* :func:`learned_rank` - how many teacher directions a network has learned.
* :func:`plateaus` - the checkpoints on each plateau of a stage-wise run.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np
import torch

from mechnb._checks import check_positive_float, check_positive_int, check_seed
from mechnb.degeneracy import dln_learning_coefficient, sse_loss
from mechnb.models import MLP
from mechnb.train import TrainConfig, TrainResult, train

__all__ = ["StagewiseRun", "stagewise_dln", "learned_rank", "plateaus", "STAGEWISE_LLC"]

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
