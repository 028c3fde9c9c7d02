"""Essential dynamics: PCA of a model's outputs over training, with the turning points marked.

Hoogland et al. 2024 (*The developmental landscape of in-context learning*, arXiv 2402.02364,
Sec. 4 and Appendix) project the trajectory of a network's outputs on a fixed batch, one
point per checkpoint, onto its top principal components; developmental stages appear as
nearly straight segments joined by turns. :func:`essential_dynamics` computes that projection
and marks the turning points as the checkpoints where a principal-component coordinate has a
clear extremum (its velocity changes sign), a simple, deterministic stage detector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mechnb._checks import check_positive_int, check_probability, check_tensor
from mechnb._linalg import svd
from mechnb._torch import eval_mode
from mechnb.degeneracy.trajectory import checkpoint_states
from mechnb.io import saveable

__all__ = ["EssentialDynamics", "essential_dynamics", "turning_points"]


@saveable()
@dataclass
class EssentialDynamics:
    """Output of :func:`essential_dynamics`.

    Attributes:
        steps: ``(K,)`` the checkpoints' training steps.
        projections: ``(K, k)`` each checkpoint's outputs (centred over checkpoints) on the top ``k`` PCs.
        explained: ``(k,)`` fraction of the trajectory's variance each PC explains.
        components: ``(k, F)`` the PCs in output space (``F`` = batch × output size), each with its
            largest-magnitude entry positive (:func:`mechnb._linalg.canonical_signs`).
        turning: indices of the turning points (:func:`turning_points`), ascending.
    """

    steps: np.ndarray
    projections: np.ndarray
    explained: np.ndarray
    components: np.ndarray
    turning: list[int] = field(default_factory=list)


def turning_points(projections: np.ndarray, min_prominence: float = 0.05) -> list[int]:
    """Checkpoints where some PC coordinate of ``projections (K, k)`` has a local extremum.

    An interior index ``t`` counts when ``z_t`` is strictly above (or below) both neighbours and
    rises (falls) by at least ``min_prominence`` times the trajectory's extent (the largest range
    of any coordinate) on both sides before the next higher (lower) value - small wiggles and
    components that carry no variance do not count.
    """
    Z = np.asarray(projections, dtype=float)
    out: set[int] = set()
    span = float((Z.max(0) - Z.min(0)).max()) if Z.size else 0.0  # the trajectory's extent
    if span == 0:
        return []
    for j in range(Z.shape[1]):
        z = Z[:, j]
        for t in range(1, len(z) - 1):
            for sgn in (1.0, -1.0):
                if sgn * (z[t] - z[t - 1]) > 0 and sgn * (z[t] - z[t + 1]) >= 0:
                    left = right = 0.0
                    for u in range(t - 1, -1, -1):  # how far it falls to the left before rising again
                        if sgn * (z[u] - z[t]) > 0:
                            break
                        left = max(left, sgn * (z[t] - z[u]))
                    for u in range(t + 1, len(z)):
                        if sgn * (z[u] - z[t]) > 0:
                            break
                        right = max(right, sgn * (z[t] - z[u]))
                    if min(left, right) >= min_prominence * span:
                        out.add(t)
    return sorted(out)


@torch.no_grad()
def essential_dynamics(checkpoints: Any, inputs: torch.Tensor, *, model: nn.Module | None = None,
                       n_components: int = 3, min_prominence: float = 0.05) -> EssentialDynamics:
    """PCA of the outputs ``f(inputs; w_k)`` over the checkpoints ``k`` (Hoogland et al. 2024, Sec. 4).

    Args:
        checkpoints: models, state dicts or ``TrainResult.checkpoints`` records (as
            :func:`~mechnb.degeneracy.llc_trajectory`), or a ``TrainResult``.
        inputs: ``(B, ...)`` a fixed batch.
        model: the architecture when ``checkpoints`` are state dicts.
        n_components: ``k``, at most ``K - 1``.
        min_prominence: passed to :func:`turning_points`.

    Returns:
        An :class:`EssentialDynamics`; signs of the PCs follow :func:`mechnb._linalg.svd`.
    """
    model, states, steps = checkpoint_states(checkpoints, model)
    check_tensor("inputs", inputs, finite=True)
    k = check_positive_int("n_components", n_components)
    check_probability("min_prominence", min_prominence)
    K = len(states)
    if K < 2:
        raise ValueError(f"checkpoints: expected at least 2 checkpoints for a trajectory, got {K}")
    k = min(k, K - 1)
    template = {n: t.detach().clone() for n, t in model.state_dict().items()}
    rows = []
    try:
        with eval_mode(model):
            for st in states:
                model.load_state_dict(st)
                rows.append(model(inputs).detach().reshape(-1).double())
    finally:
        model.load_state_dict(template)
    X = torch.stack(rows)  # (K, F)
    Xc = X - X.mean(0, keepdim=True)
    V, S, _ = svd(Xc.T)  # (F, K): columns = PCs in output space, canonical signs
    V, S = V[:, :k], S
    var = S.pow(2)
    explained = (var[:k] / var.sum().clamp_min(1e-300)).numpy()
    Z = (Xc @ V).numpy()  # (K, k)
    return EssentialDynamics(steps=steps, projections=Z, explained=explained, components=V.T.numpy(),
                             turning=turning_points(Z, min_prominence))
