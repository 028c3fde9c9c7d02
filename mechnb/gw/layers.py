"""Layer x layer comparison matrices: GW discrepancies (Gao et al. 2024) and the CKA baseline.

Gao, Dhurandhar, Natesan Ramamurthy & Wei 2024, *Identifying Sub-networks in Neural Networks
via Functionally Similar Representations* (https://arxiv.org/abs/2410.16484), their method
section: turn every layer's representation into its distance matrix
(:func:`~mechnb.gw.distances.distance_matrix`), compare every pair of layers with the GW
discrepancy (:func:`~mechnb.gw.solve.gw_solve`; Mémoli 2011, Peyré, Cuturi & Solomon 2016) and
collect the values in a symmetric ``L x L`` :class:`LayerMatrix`, whose groups
(:func:`~mechnb.gw.clustering.cluster_layers`) are the sub-networks.
:func:`layer_cka_matrix` builds the same matrix from CKA similarities (Kornblith et al. 2019).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mechnb._checks import check_positive_int, check_seed
from mechnb.gw.baselines import cka
from mechnb.gw.clustering import cluster_layers
from mechnb.gw.distances import distance_matrix
from mechnb.gw.representations import check_reps, subsample_rows
from mechnb.gw.solve import GWSolverError, gw_solve
from mechnb.io import saveable

__all__ = ["LayerMatrix", "layer_gw_matrix", "layer_cka_matrix"]


@saveable()
@dataclass
class LayerMatrix:
    """A layer x layer comparison: ``names`` (L), ``matrix`` (L, L) and how it was made.

    ``kind="gw"``: GW discrepancies (0 on the diagonal, larger = more different).
    ``kind="cka"``: CKA similarities (1 on the diagonal, larger = more similar);
    :meth:`distances` returns ``1 - CKA`` so both can be clustered the same way.
    """

    names: list[str]
    matrix: np.ndarray
    kind: str
    n_samples: int
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    n_iter: np.ndarray | None = None

    def distances(self) -> np.ndarray:
        """``(L, L)`` distances: the GW matrix itself, or ``1 - CKA``."""
        return self.matrix.copy() if self.kind == "gw" else 1.0 - self.matrix

    def groups(self, n_groups: int | None = None, threshold: float | None = None, **kw: Any) -> np.ndarray:
        """:func:`~mechnb.gw.clustering.cluster_layers` on :meth:`distances`."""
        return cluster_layers(self.distances(), n_groups=n_groups, threshold=threshold, **kw)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``n_iter`` left out)."""
        return {"names": list(self.names), "matrix": self.matrix.tolist(), "kind": self.kind,
                "n_samples": self.n_samples, "settings": dict(self.settings), "seconds": self.seconds}


def _pairs(L: int) -> list[tuple[int, int]]:
    """The ``L(L-1)/2`` unordered pairs ``i < j`` (both matrices are symmetric)."""
    return [(i, j) for i in range(L) for j in range(i + 1, L)]


def _layer_distance_matrices(names: list[str], Xs: list[torch.Tensor], metric: str,
                             normalize: str | None) -> list[np.ndarray]:
    """Every layer's ``(n, n)`` distance matrix, built once; a degenerate layer is named in the error."""
    Cs = []
    for name, X in zip(names, Xs):
        try:
            Cs.append(distance_matrix(X, metric, normalize).cpu().numpy())
        except ValueError as e:
            raise ValueError(f"reps[{name!r}]: {e} (a dead or collapsed layer? drop it, or use normalize=None)"
                             ) from None
    return Cs


def layer_gw_matrix(
    reps: Mapping[str, torch.Tensor],
    *,
    metric: str = "euclidean",
    normalize: str | None = "max",
    solver: str = "exact",
    epsilon: float | None = None,
    init: str = "identity",
    n_init: int = 1,
    n_samples: int | None = None,
    seed: int = 0,
    max_iter: int | None = None,
    tol: float | None = None,
    dtype: str | None = None,
    progress: bool = True,
) -> LayerMatrix:
    """The symmetric ``L x L`` matrix of GW discrepancies between all layers (Gao et al. 2024).

    Each layer's ``(n, n)`` distance matrix is built once with
    :func:`~mechnb.gw.distances.distance_matrix`; only the ``L(L-1)/2`` unordered pairs are solved
    (GW is symmetric) and the diagonal is 0.

    The defaults are tuned for layers of one network seen on the same inputs: ``init="identity"``
    starts the solver from the sample-aligned coupling (the natural correspondence, usually
    near-optimal); for the exact solver ``tol=None`` means ``1e-2``, stopping when a solver step
    lowers the loss by less than 1% (on trained MLPs this stays within about 3% of the fully
    converged value, median 0.2%), and ``dtype=None`` means float32, which halves the cost of
    the matrix products. ``init="product", tol=1e-9, dtype="float64"`` reproduces POT's defaults
    (see ``benchmarks/bench_gw.py`` for the agreement between the two). For
    ``solver="entropic"``, ``tol=None`` and ``dtype=None`` keep the defaults of
    :func:`~mechnb.gw.solve.gw_solve`.

    Args:
        reps: ``name -> (n, d_l)`` representations with the same ``n`` rows (e.g. from
            :func:`~mechnb.gw.representations.layer_representations`).
        metric, normalize: passed to :func:`~mechnb.gw.distances.distance_matrix`.
        solver, epsilon, init, max_iter, tol, dtype: passed to :func:`~mechnb.gw.solve.gw_solve`.
        n_init: starts per pair (:func:`~mechnb.gw.solve.gw_solve`): ``init`` first, then the
            product coupling and seeded random couplings; the lowest value is kept. The default 1
            keeps the sample-aligned start alone.
        n_samples: use a seeded random subset of this many rows (the same rows in every layer).
        seed: seeds that subset and the random starts (an int >= 0).
        progress: ``tqdm`` bar over the pairs.

    Returns:
        a :class:`LayerMatrix` with ``kind="gw"``, the per-pair iteration counts in ``n_iter``.
    """
    names, Xs = check_reps(reps)
    seed = check_seed("seed", seed)
    n_init = check_positive_int("n_init", n_init)
    Xs = subsample_rows(Xs, n_samples, seed)
    t0 = time.perf_counter()
    Cs = _layer_distance_matrices(names, Xs, metric, normalize)
    L = len(Cs)
    M = np.zeros((L, L))
    iters = np.zeros((L, L), dtype=int)
    if tol is None and solver == "exact":
        tol = 1e-2
    if dtype is None:
        dtype = "float32" if solver == "exact" else "float64"
    for i, j in tqdm(_pairs(L), desc="GW pairs", disable=not progress, leave=False):
        try:
            sol = gw_solve(Cs[i], Cs[j], solver=solver, epsilon=epsilon, init=init, n_init=n_init, seed=seed,
                           max_iter=max_iter, tol=tol, dtype=dtype)
        except GWSolverError as e:
            raise GWSolverError(f"layers {names[i]!r} vs {names[j]!r}: {e}") from None
        M[i, j] = M[j, i] = sol.value
        iters[i, j] = iters[j, i] = sol.n_iter
    settings = dict(metric=metric, normalize=normalize, solver=solver, epsilon=epsilon, init=init, n_init=n_init,
                    seed=seed, max_iter=max_iter, tol=tol, dtype=dtype)
    return LayerMatrix(names, M, "gw", Xs[0].shape[0], settings, time.perf_counter() - t0, iters)


def layer_cka_matrix(reps: Mapping[str, torch.Tensor], *, kernel: str = "linear", debiased: bool = False,
                     rbf_sigma: float = 1.0, n_samples: int | None = None, seed: int = 0,
                     progress: bool = False) -> LayerMatrix:
    """The ``L x L`` CKA similarity matrix of ``reps`` (see :func:`~mechnb.gw.baselines.cka`), ``kind="cka"``."""
    names, Xs = check_reps(reps)
    seed = check_seed("seed", seed)
    Xs = subsample_rows(Xs, n_samples, seed)
    t0 = time.perf_counter()
    L = len(Xs)
    M = np.eye(L)
    for i, j in tqdm(_pairs(L), desc="CKA pairs", disable=not progress, leave=False):
        M[i, j] = M[j, i] = cka(Xs[i], Xs[j], kernel, debiased, rbf_sigma=rbf_sigma)
    settings = dict(kernel=kernel, debiased=debiased, rbf_sigma=rbf_sigma, seed=seed)
    return LayerMatrix(names, M, "cka", Xs[0].shape[0], settings, time.perf_counter() - t0)
