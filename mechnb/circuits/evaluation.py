"""Judging edge scores: agreement between two methods, and recovery of a known circuit (ROC, AUC).

* :func:`rank_agreement` - how well one method's scores reproduce another's (e.g. EAP against
  exact patching): rank and linear correlations and top-``k`` overlap.
* :func:`roc_against` - how well a ranking by ``|score|`` separates the edges of a known
  ("planted" or canonical) circuit from the rest: the ROC curve and its area (AUC), as
  auto-circuit (Miller, Chughtai & Saunders 2024) evaluates discovery methods against planted
  circuits. AUC is the probability that a random true edge is ranked above a random other edge
  (ties count one half); 1 is a perfect ranking, 0.5 a random one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mechnb._checks import check_array, check_positive_int
from mechnb.circuits.circuit import Circuit, EdgeScores, noise_floored
from mechnb.circuits.graph import Edge, Graph

__all__ = ["rank_agreement", "ROCCurve", "roc_against"]


def _values(name: str, x: EdgeScores | torch.Tensor | np.ndarray) -> np.ndarray:
    return check_array(name, x.values if isinstance(x, EdgeScores) else x, ndim=1)


def rank_agreement(scores: EdgeScores | torch.Tensor | np.ndarray, reference: EdgeScores | torch.Tensor | np.ndarray,
                   k: int = 20) -> dict[str, float]:
    """How well ``scores`` reproduce ``reference`` (e.g. EAP vs exact patching), per edge.

    Returns ``spearman`` (rank correlation of the signed scores), ``spearman_abs`` (of ``|score|``,
    what circuit selection uses), ``pearson`` and ``top_k_overlap`` (fraction of the reference's
    top-``k`` edges by ``|score|`` that are also in ``scores``' top ``k``).

    A correlation with a constant vector is undefined, so constant ``scores`` or ``reference``
    (or constant ``|score|`` for ``spearman_abs``) raise ``ValueError`` naming the argument instead
    of returning NaN.
    """
    from scipy.stats import pearsonr, spearmanr

    a = _values("scores", scores)
    b = _values("reference", reference)
    if a.shape != b.shape:
        raise ValueError(f"scores: expected the reference's shape {b.shape}, got {a.shape}")
    if a.size < 2:
        raise ValueError(f"scores: expected at least 2 edges to correlate, got {a.size}")
    for name, v, what in (("scores", a, "values"), ("reference", b, "values"),
                          ("scores", np.abs(a), "absolute values"), ("reference", np.abs(b), "absolute values")):
        if np.all(v == v[0]):
            raise ValueError(f"{name}: expected at least two different {what} (a correlation with a constant is "
                             f"undefined), got all {v.size} equal to {v[0]:g}")
    k = min(check_positive_int("k", k), a.size)
    top_a = set(np.argsort(-np.abs(a), kind="stable")[:k].tolist())
    top_b = set(np.argsort(-np.abs(b), kind="stable")[:k].tolist())
    return {
        "spearman": float(spearmanr(a, b)[0]),
        "spearman_abs": float(spearmanr(np.abs(a), np.abs(b))[0]),
        "pearson": float(pearsonr(a, b)[0]),
        "top_k_overlap": len(top_a & top_b) / k,
        "k": float(k),
    }


@dataclass
class ROCCurve:
    """ROC of a ranking by ``|score|`` against a set of true edges.

    ``fpr``, ``tpr``: false and true positive rates as the threshold on ``|score|`` goes down through
    ``thresholds`` (from above the largest score, where both are 0, to the smallest, where both are
    1); ``auc``: the area under it; ``n_true``/``n_false``: the number of true / other edges.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float
    n_true: int
    n_false: int
    method: str = ""


def _true_mask(true_edges: Circuit | Sequence[Edge | str] | np.ndarray | torch.Tensor, graph: Graph | None,
               n: int) -> np.ndarray:
    if isinstance(true_edges, Circuit):
        return true_edges.graph.edge_vector(true_edges.mask).numpy().astype(bool)
    if isinstance(true_edges, (np.ndarray, torch.Tensor)):
        arr = np.asarray(true_edges.cpu() if isinstance(true_edges, torch.Tensor) else true_edges)
        if arr.dtype != bool or arr.shape != (n,):
            raise ValueError(f"true_edges: expected a bool vector of shape ({n},) (one entry per edge), "
                             f"got dtype {arr.dtype} and shape {arr.shape}")
        return arr
    if isinstance(true_edges, (str, bytes)) or not isinstance(true_edges, Sequence):
        raise TypeError(f"true_edges: expected a Circuit, a list of edge names or a bool vector, got "
                        f"{type(true_edges).__name__}")
    if graph is None:
        raise ValueError("graph: expected the Graph to look up edge names (or pass scores as EdgeScores), got None")
    mask = np.zeros(n, dtype=bool)
    for e in true_edges:
        name = e.name if isinstance(e, Edge) else e
        if name not in graph.edge_index:
            raise ValueError(f"true_edges: {name!r} is not an edge of the graph")
        mask[graph.edge_index[name]] = True
    return mask


def roc_against(scores: EdgeScores | torch.Tensor | np.ndarray,
                true_edges: Circuit | Sequence[Edge | str] | np.ndarray | torch.Tensor,
                graph: Graph | None = None) -> ROCCurve:
    """ROC curve and AUC of the ranking by ``|score|`` against ``true_edges``.

    Args:
        scores: an :class:`EdgeScores` or per-edge values ``(n_edges,)`` in ``graph.edges`` order.
        true_edges: the known circuit: a :class:`Circuit`, edge names / :class:`Edge` objects, or a
            bool vector ``(n_edges,)``.
        graph: needed only to look up edge names when ``scores`` is not an :class:`EdgeScores`.

    The AUC is the Mann-Whitney statistic ``P(|s_true| > |s_other|) + P(|s_true| = |s_other|) / 2``,
    equal to the trapezoidal area under the curve whose points are the distinct thresholds. Scores
    within float noise of 0 (``|s| <= NOISE_RTOL * max |s|``, the rule of
    :meth:`EdgeScores.magnitudes`) count as 0: a method that gives a true edge only float noise (EAP
    at a saturated softmax) ties it with the other noise-level edges instead of ranking it by
    rounding.
    """
    if isinstance(scores, EdgeScores):
        graph = scores.graph if graph is None else graph
    v = noise_floored(_values("scores", scores))
    truth = _true_mask(true_edges, graph, v.size)
    if truth.shape != v.shape:
        raise ValueError(f"true_edges: expected {v.size} entries (one per edge), got {truth.size}")
    n_true, n_false = int(truth.sum()), int((~truth).sum())
    if n_true == 0 or n_false == 0:
        raise ValueError(f"true_edges: expected at least one true and one other edge, got {n_true} true of {v.size}")
    thresholds = np.unique(v)[::-1]
    tp = np.array([int((truth & (v >= t)).sum()) for t in thresholds])
    fp = np.array([int((~truth & (v >= t)).sum()) for t in thresholds])
    tpr = np.concatenate([[0.0], tp / n_true])
    fpr = np.concatenate([[0.0], fp / n_false])
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return ROCCurve(fpr, tpr, np.concatenate([[np.inf], thresholds]), auc, n_true, n_false,
                    scores.method if isinstance(scores, EdgeScores) else "")
