"""Gromov-Wasserstein (GW) comparison of layer representations and sub-network discovery.

Gao, Dhurandhar, Natesan Ramamurthy & Wei 2024, *Identifying Sub-networks in Neural Networks
via Functionally Similar Representations* (https://arxiv.org/abs/2410.16484): feed the same
``n`` inputs through a network, turn every layer's representation ``X_l (n, d_l)`` into its
intra-layer distance matrix ``C_l (n, n)``, compare every pair of layers with the GW
discrepancy (their method section) and read groups of functionally similar layers off the
resulting ``L x L`` matrix with hierarchical clustering. GW needs no shared dimension or
alignment of the feature axes: it only compares how each layer arranges the inputs relative to
each other.

The GW discrepancy (square loss; Mémoli 2011, Peyré, Cuturi & Solomon 2016) between
``(C1, p)`` and ``(C2, q)`` is::

    GW(C1, C2) = min_{T in U(p, q)}  sum_{i,j,k,l} (C1[i,k] - C2[j,l])**2 * T[i,j] * T[k,l]

over couplings ``T >= 0`` with row sums ``p`` and column sums ``q``. It is solved by POT
(``ot.gromov``); this package never re-implements a solver, it chooses the start, checks the
answer and raises :class:`GWSolverError` when a solve fails. CKA (Kornblith et al. 2019,
https://arxiv.org/abs/1905.00414) is the standard baseline.

Public API::

    reps = layer_representations(model, inputs)            # name -> (n, d_l)
    C = distance_matrix(reps["h1"])                        # (n, n), max-normalised
    sol = gw_solve(C1, C2); gw_distance(C1, C2)            # coupling + value / value
    gw_distance(C1, C2, n_init=10); gw_lower_bound(C1, C2) # best of 10 starts / certified lower bound
    res = layer_gw_matrix(reps)                            # LayerMatrix (L, L)
    labels = cluster_layers(res.matrix); layer_groups(labels, res.names)
    cka(X, Y), layer_cka_matrix(reps), probe_accuracy(reps, y)

Modules, in pipeline order: :mod:`.representations` (activations capture), :mod:`.distances`
(intra-layer distance matrices), :mod:`.solve` (the POT solver wrapper and its checks),
:mod:`.layers` (layer x layer matrices), :mod:`.clustering` (groups of layers),
:mod:`.baselines` (CKA, probes). The notebook's experiments (toy point clouds, training-strategy
variants) live in :mod:`mechnb.experiments.gw`.
"""

from mechnb.gw.baselines import cka, probe_accuracy
from mechnb.gw.clustering import auto_threshold, cluster_layers, layer_groups, layer_linkage
from mechnb.gw.distances import METRICS, NORMALIZATIONS, distance_matrix
from mechnb.gw.layers import LayerMatrix, layer_cka_matrix, layer_gw_matrix
from mechnb.gw.representations import layer_representations, subsample_reps
from mechnb.gw.solve import (
    INITS,
    SOLVERS,
    GWSolution,
    GWSolverError,
    gw_distance,
    gw_lower_bound,
    gw_solve,
    random_coupling,
)

__all__ = [
    "GWSolverError",
    "GWSolution",
    "LayerMatrix",
    "layer_representations",
    "subsample_reps",
    "distance_matrix",
    "gw_solve",
    "gw_distance",
    "gw_lower_bound",
    "random_coupling",
    "layer_gw_matrix",
    "layer_linkage",
    "cluster_layers",
    "auto_threshold",
    "layer_groups",
    "cka",
    "layer_cka_matrix",
    "probe_accuracy",
    "METRICS",
    "NORMALIZATIONS",
    "SOLVERS",
    "INITS",
]
