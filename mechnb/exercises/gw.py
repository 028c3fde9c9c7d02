"""Check functions for notebook 03 (Gromov-Wasserstein sub-networks, arXiv:2410.16484).

Known answers come from closed forms, from a brute-force quadruple sum, and from mechnb's own
implementation (:mod:`mechnb.gw`). In notebook order:

* 3.1 :func:`check_gw_loss` - the GW objective of a given coupling, in the tensor-product form
  of Peyre, Cuturi & Solomon (2016, Proposition 1);
* 3.2 :func:`check_gw_two_point` - GW between two uniform two-point spaces (closed form);
* 3.3 :func:`check_distance_matrix` - a layer's max-normalised Euclidean distance matrix;
* 3.4 :func:`check_linear_cka` - linear CKA, the baseline;
* 3.5 :func:`check_layer_gw_groups` - build the method: the layer x layer GW matrix from the
  representations and its groups by hierarchical clustering (Gao et al. 2024), checked against
  :func:`mechnb.gw.layer_gw_matrix` and :func:`mechnb.gw.cluster_layers`.

Every check ``check_<name>`` has a written-out reference solution ``solution_<name>`` with the
learner's signature (learner notebooks fall back to it while an exercise is still its stub).
While a check runs the learner's function, the package function that the exercise asks the
learner to write is off limits (:func:`_without`): a learner function that calls it fails with
"write it yourself" instead of passing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mechnb.exercises._core import Case, CheckResult, WriteItYourself, _without, exercise, run_cases  # noqa: F401

__all__ = ["check_gw_loss", "check_gw_two_point", "check_distance_matrix", "check_linear_cka",
           "check_layer_gw_groups", "solution_gw_loss", "solution_gw_two_point", "solution_distance_matrix",
           "solution_linear_cka", "solution_layer_gw_groups"]

NOTEBOOK = "03_gromov_wasserstein_subnetworks"


def _two_point(d: float) -> np.ndarray:
    return np.array([[0.0, d], [d, 0.0]])


# --------------------------------------------------------------------------------------------
# 3.1 the GW objective of a given coupling
# --------------------------------------------------------------------------------------------


def gw_loss_bruteforce(C1: torch.Tensor, C2: torch.Tensor, T: torch.Tensor) -> float:
    """``sum_{i,j,k,l} (C1[i,k] - C2[j,l])**2 T[i,j] T[k,l]`` by materialising the ``(n1, n2, n1, n2)`` tensor.

    The definition itself, O(n^4) memory: only for the tiny cases of :func:`check_gw_loss`.
    """
    C1, C2, T = (torch.as_tensor(a, dtype=torch.float64) for a in (C1, C2, T))
    diff2 = (C1[:, None, :, None] - C2[None, :, None, :]) ** 2  # index order (i, j, k, l)
    return float((diff2 * T[:, :, None, None] * T[None, None, :, :]).sum())


def _random_distances(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    return torch.cdist(X, X)


def _gw_loss_cases() -> list[Case]:
    """The cases of :func:`check_gw_loss` (their ``expected`` values are checked against POT in the tests)."""
    g = torch.Generator().manual_seed(3)
    a, b = 1.0, 0.3
    A, B = torch.from_numpy(_two_point(a)), torch.from_numpy(_two_point(b))
    matching = torch.tensor([[0.5, 0.0], [0.0, 0.5]], dtype=torch.float64)
    product = torch.full((2, 2), 0.25, dtype=torch.float64)

    # a cloud and a shuffled copy of it: the coupling that undoes the shuffle preserves every distance
    n = 6
    C = _random_distances(n, 2, g)
    perm = torch.randperm(n, generator=g)
    C_shuffled = C[perm][:, perm]  # point j of the copy is point perm[j] of the cloud
    undo = torch.zeros(n, n, dtype=torch.float64)
    undo[perm, torch.arange(n)] = 1.0 / n

    # different sizes, a coupling with non-uniform marginals that is not a product
    C1, C2 = _random_distances(6, 3, g), _random_distances(4, 5, g)
    T_free = torch.rand(6, 4, generator=g, dtype=torch.float64) ** 2
    T_free /= T_free.sum()

    # the product coupling p q^T of two non-uniform weight vectors
    D1, D2 = _random_distances(5, 2, g), _random_distances(8, 4, g)
    p = torch.rand(5, generator=g, dtype=torch.float64) + 0.2
    q = torch.rand(8, generator=g, dtype=torch.float64) + 0.2
    T_prod = torch.outer(p / p.sum(), q / q.sum())

    marginals = ("take the weights from the coupling itself, p = T.sum(1) and q = T.sum(0); they are not "
                 "uniform here")
    return [
        Case((A, B, matching), (a - b) ** 2 / 2, label="two-point spaces a = 1, b = 0.3, T = [[1/2, 0], [0, 1/2]]",
             hint="only (i, k) = (0, 1), (1, 0) against (j, l) the same pairs survive: 2 terms of (a - b)^2 / 4; "
                  "is the cross term -2 <C1 T C2^T, T> (with the 2)?"),
        Case((A, B, product), (a**2 + b**2 + (a - b) ** 2) / 4,
             label="two-point spaces a = 1, b = 0.3, product coupling T = ones(2, 2) / 4",
             hint="with T = p q^T every (i, k) meets every (j, l): the sum of all 16 (C1_ik - C2_jl)^2, over 16"),
        Case((C, C_shuffled, undo), 0.0, label="a 6-point cloud vs a shuffled copy, T = the permutation / 6 undoing it",
             hint="this coupling maps every pair to a pair at the same distance, so every term is 0; check the "
                  "cross term C1 @ T @ C2.T (not T @ C2 @ C1 or C1 @ T.T ...)"),
        Case((C1, C2, T_free), gw_loss_bruteforce(C1, C2, T_free),
             label="C1 (6, 6), C2 (4, 4), a random T (6, 4) with non-uniform marginals",
             hint=marginals + "; shapes: C1 @ T @ C2.T is (6, 4) like T"),
        Case((D1, D2, T_prod), gw_loss_bruteforce(D1, D2, T_prod),
             label="C1 (5, 5), C2 (8, 8), T = p q^T with non-uniform p, q", hint=marginals),
    ]


def solution_gw_loss(C1: torch.Tensor, C2: torch.Tensor, T: torch.Tensor) -> float:
    """Reference for 3.1: ``L(T) = p^T (C1*C1) p + q^T (C2*C2) q - 2 <C1 T C2^T, T>`` with ``p = T 1``, ``q = T^T 1``.

    ``C1 (n1, n1)``, ``C2 (n2, n2)`` symmetric, ``T (n1, n2)`` (float64 tensors); Peyre, Cuturi &
    Solomon (2016, Proposition 1), matrix products only.
    """
    p, q = T.sum(1), T.sum(0)  # (n1,), (n2,): the coupling's own marginals
    const = p @ (C1 * C1) @ p + q @ (C2 * C2) @ q  # the terms without a C1-C2 cross product
    cross = ((C1 @ T @ C2.T) * T).sum()  # sum_{ijkl} C1_ik C2_jl T_ij T_kl
    return float(const - 2.0 * cross)


@exercise("3.1", "the GW objective of a coupling", notebook=NOTEBOOK)
def check_gw_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float]) -> CheckResult:
    """Check ``fn(C1, C2, T) -> float``: ``L(T) = sum_{i,j,k,l} (C1_ik - C2_jl)^2 T_ij T_kl``.

    ``C1 (n1, n1)`` and ``C2 (n2, n2)`` are symmetric distance matrices, ``T (n1, n2)`` a
    non-negative coupling (float64 tensors). The intended solution is the O(n^3) form of Peyre,
    Cuturi & Solomon (2016, Proposition 1) for the square loss, with ``p = T 1`` and ``q = T^T 1``::

        L(T) = p^T (C1 * C1) p + q^T (C2 * C2) q - 2 <C1 T C2^T, T>

    (POT: ``ot.gromov.gwloss(*ot.gromov.init_matrix(C1, C2, p, q), T)``). Expected values: closed
    forms for two-point spaces (``(a - b)^2 / 2`` at the matching coupling,
    ``(a^2 + b^2 + (a - b)^2) / 4`` at the product coupling), 0 for a shuffled copy with the
    coupling that undoes the shuffle, and the brute-force quadruple sum otherwise.
    """
    cases = _gw_loss_cases()
    from ot import gromov

    forbidden = {"ot.gromov.gwloss": gromov.gwloss}
    return run_cases(_without(fn, forbidden, "3.1", "expand the square as in the box"), cases, atol=1e-9, rtol=1e-7)


# --------------------------------------------------------------------------------------------
# 3.2 two-point spaces
# --------------------------------------------------------------------------------------------


def solution_gw_two_point(a: float, b: float) -> float:
    """Reference for 3.2: ``(a - b)**2 / 2``.

    Every coupling is ``T(t) = [[t, 1/2 - t], [1/2 - t, t]]``; its loss
    ``(a^2 + b^2)/2 - 4ab (t^2 + (1/2 - t)^2)`` is concave in ``t``, so the minimum is at a
    permutation (``t = 1/2`` or ``0``), where the two terms with ``i != k`` each cost ``(a - b)^2 / 4``.
    """
    return (a - b) ** 2 / 2


@exercise("3.2", "GW between two-point spaces", notebook=NOTEBOOK)
def check_gw_two_point(fn: Callable[[float, float], float]) -> CheckResult:
    """Check ``fn(a, b) -> float``: GW between two uniform two-point spaces at distances ``a`` and ``b``.

    With ``GW = min_T sum (C1_ik - C2_jl)^2 T_ij T_kl`` (POT's convention, the one mechnb uses)
    the answer is ``(a - b)^2 / 2`` for either matching. The expected values are computed by
    :func:`mechnb.gw.gw_distance` on the two distance matrices.
    """
    from mechnb import gw

    pairs = [(1.0, 0.3), (0.3, 1.0), (2.0, 2.0), (0.0, 1.5), (5.0, 1.0)]
    cases = [Case((a, b), gw.gw_distance(_two_point(a), _two_point(b)), label=f"a = {a}, b = {b}",
                  hint="every (i, k) pair meets every (j, l) pair with weight T_ij T_kl = 1/2 * 1/2 or 0; "
                       "count the (C1_ik - C2_jl)^2 terms that survive")
             for a, b in pairs]
    forbidden = {"gw.gw_distance": gw.gw_distance, "gw.gw_solve": gw.gw_solve}
    return run_cases(_without(fn, forbidden, "3.2", "work out the closed form by hand"), cases, atol=1e-8, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# 3.3 a layer's distance matrix
# --------------------------------------------------------------------------------------------


def _distance_matrix_cases() -> list[Case]:
    """The cases of :func:`check_distance_matrix`."""
    from mechnb.gw import distance_matrix

    g = torch.Generator().manual_seed(4)
    triangle = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    X = torch.randn(12, 5, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    moved = 3.0 * X @ Q + 10.0
    H = torch.relu(torch.randn(30, 64, generator=g, dtype=torch.float64) @ torch.randn(64, 64, generator=g,
                                                                                      dtype=torch.float64))
    expected_X = distance_matrix(X)
    return [
        Case((triangle,), torch.tensor([[0.0, 0.6, 0.8], [0.6, 0.0, 1.0], [0.8, 1.0, 0.0]], dtype=torch.float64),
             label="the 3-4-5 triangle (0, 0), (3, 0), (0, 4)",
             hint="Euclidean distances (3, 4, 5; not their squares 9, 16, 25) divided by the largest one, 5"),
        Case((X,), expected_X, label="X: 12 random points in R^5"),
        Case((moved,), expected_X, label="3 * X @ Q + 10 (X rotated, scaled by 3 and shifted)",
             hint="a rotation and a shift keep every distance; dividing by the largest distance removes the scale"),
        Case((H,), distance_matrix(H), label="H: a ReLU layer, 30 inputs x 64 units",
             hint="one row and one column per input (30 x 30), whatever the number of units"),
    ]


def solution_distance_matrix(X: torch.Tensor) -> torch.Tensor:
    """Reference for 3.3: ``C[i, k] = ||x_i - x_k|| / max ||x_i' - x_k'||`` for ``X (n, d)``; ``(n, n)``."""
    diff = X[:, None, :] - X[None, :, :]  # (n, n, d): x_i - x_k
    C = (diff**2).sum(-1).sqrt()  # Euclidean distances, not their squares
    return C / C.max()


@exercise("3.3", "a layer's distance matrix", notebook=NOTEBOOK)
def check_distance_matrix(fn: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``fn(X) -> Tensor``: ``C[i, k] = ||x_i - x_k|| / max_{i,k} ||x_i - x_k||`` for ``X (n, d)``, ``C (n, n)``.

    What :func:`mechnb.gw.distance_matrix` computes with its defaults (``metric="euclidean"``,
    ``normalize="max"``). Expected values: the 3-4-5 triangle in closed form, mechnb's matrix
    otherwise (and the same matrix for a rotated, rescaled, shifted copy).
    """
    from mechnb import gw

    cases = _distance_matrix_cases()
    forbidden = {"gw.distance_matrix": gw.distance_matrix}
    advice = "torch.cdist(X, X), or the norm of X[:, None] - X[None], divided by the largest entry"
    return run_cases(_without(fn, forbidden, "3.3", advice), cases, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# 3.4 linear CKA
# --------------------------------------------------------------------------------------------


def solution_linear_cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Reference for 3.4: ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``.

    ``<HKH, HLH> = ||Xc^T Yc||_F^2`` because ``HKH = Xc Xc^T`` (Kornblith et al. 2019, linear kernel).
    """
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)  # H K H is the Gram matrix of the centred X
    return float((Xc.T @ Yc).norm() ** 2 / ((Xc.T @ Xc).norm() * (Yc.T @ Yc).norm()))


@exercise("3.4", "linear CKA", notebook=NOTEBOOK)
def check_linear_cka(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> CheckResult:
    """Check ``fn(X, Y) -> float``: linear CKA of ``X (n, d1)`` and ``Y (n, d2)`` (Kornblith et al. 2019).

    ``CKA = <HKH, HLH> / sqrt(<HKH, HKH> <HLH, HLH>)`` with ``K = X X^T``, ``L = Y Y^T`` and ``H``
    the centring matrix. Expected values from :func:`mechnb.gw.cka` (plus its invariances: a
    rotation and a rescaling of ``X`` give exactly 1).
    """
    from mechnb import gw

    cka = gw.cka
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 6, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    Y = torch.randn(40, 9, generator=g, dtype=torch.float64)
    Z = torch.cat([X[:, :3], torch.randn(40, 2, generator=g, dtype=torch.float64)], dim=1)
    shifted = X + 5.0  # centring removes the offset
    cases = [
        Case((X, X @ Q * 3.0), 1.0, label="X vs X rotated and scaled by 3",
             hint="CKA is invariant to rotations and isotropic scaling; did you centre K and L?"),
        Case((X, Y), cka(X, Y), label="X (40, 6) vs an unrelated Y (40, 9)"),
        Case((X, Z), cka(X, Z), label="X vs [3 of X's columns, 2 new ones]"),
        Case((shifted, Y), cka(shifted, Y), label="X + 5 vs Y",
             hint="centre the Gram matrices (H K H), otherwise a constant offset changes the answer"),
    ]
    forbidden = {"gw.cka": gw.cka, "gw.layer_cka_matrix": gw.layer_cka_matrix}
    return run_cases(_without(fn, forbidden, "3.4", "centre X and Y, then the formula in the box"), cases,
                     atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# 3.5 build the method: the layer x layer GW matrix and its groups
# --------------------------------------------------------------------------------------------


def solution_layer_gw_groups(reps: Mapping[str, torch.Tensor]) -> tuple[np.ndarray, list[list[str]]]:
    """Reference for 3.5: the layer x layer GW matrix of ``reps`` and its groups (Gao et al. 2024).

    1. every layer's max-normalised Euclidean distance matrix ``C_l (n, n)``;
    2. for every pair ``i < j``: ``GW(C_i, C_j)`` from the sample-aligned start (``init="identity"``),
       written into ``M[i, j]`` and ``M[j, i]`` (GW is symmetric; the diagonal stays 0);
    3. average-linkage (UPGMA) hierarchical clustering of ``M`` (scipy), cut in the middle of the
       largest gap between consecutive merge heights (0 included);
    4. the groups as lists of layer names, in order of their first layer.

    Returns ``(M (L, L) float64 array, groups)``.
    """
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import squareform

    from mechnb import gw

    names = list(reps)
    Cs = [gw.distance_matrix(X) for X in reps.values()]  # step 1: (n, n) each, divided by the largest distance
    L = len(names)
    M = np.zeros((L, L))
    for i in range(L):  # step 2: each unordered pair once
        for j in range(i + 1, L):
            M[i, j] = M[j, i] = gw.gw_solve(Cs[i], Cs[j], init="identity").value
    Z = hierarchy.linkage(squareform(M, checks=False), method="average")  # step 3: (L-1, 4) merges
    heights = np.concatenate([[0.0], np.sort(Z[:, 2])])
    k = int(np.argmax(np.diff(heights)))  # the largest gap lies between heights[k] and heights[k + 1]
    labels = hierarchy.fcluster(Z, t=0.5 * (heights[k] + heights[k + 1]), criterion="distance")
    groups: dict[int, list[str]] = {}
    for name, label in zip(names, labels):  # step 4: dicts keep insertion order = first appearance
        groups.setdefault(int(label), []).append(name)
    return M, list(groups.values())


def _orthogonal(d: int, g: torch.Generator) -> torch.Tensor:
    Q, R = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R))


def _embed(Z: torch.Tensor, width: int, scale: float, noise: float, g: torch.Generator) -> torch.Tensor:
    """``Z (n, d)`` padded to ``width`` columns, rotated, scaled by ``scale``, plus Gaussian noise."""
    n, d = Z.shape
    Zp = torch.cat([Z, torch.zeros(n, width - d, dtype=torch.float64)], 1)
    return scale * Zp @ _orthogonal(width, g) + noise * torch.randn(n, width, generator=g, dtype=torch.float64)


def _family_reps(n: int = 40, seed: int = 0) -> dict[str, torch.Tensor]:
    """6 layers in 3 planted families (interleaved), each a rotated, rescaled, widened, noised copy of its base."""
    g = torch.Generator().manual_seed(seed)
    bases = [torch.randn(n, 4, generator=g, dtype=torch.float64),
             torch.randn(n, 4, generator=g, dtype=torch.float64) ** 3,
             torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([6.0, 0.5], dtype=torch.float64)]
    family = [0, 1, 0, 2, 1, 2]
    return {f"layer{k}": _embed(bases[f], bases[f].shape[1] + 2 * k, 0.5 + 3 * k, 0.01, g)
            for k, f in enumerate(family)}


def _drift_reps(seed: int, n: int = 40, n_layers: int = 7) -> dict[str, torch.Tensor]:
    """``n_layers`` layers drifting from one cloud to another (``cos(t) A + sin(t) B`` at sorted random ``t``),
    each widened, rotated and scaled differently: a chain whose groups depend on the linkage rule."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, 3, generator=g, dtype=torch.float64)
    B = torch.randn(n, 3, generator=g, dtype=torch.float64) ** 3
    ts = torch.sort(torch.rand(n_layers, generator=g, dtype=torch.float64)).values.tolist()
    return {f"layer{k}": _embed(np.cos(np.pi / 2 * t) * A + np.sin(np.pi / 2 * t) * B, 3 + 2 * k, 0.3 + 2 * k,
                                0.02, g)
            for k, t in enumerate(ts)}


def _compare_layer_result(expected: tuple[np.ndarray, list[list[str]]], got: Any) -> str | None:
    """What is wrong with the learner's ``(M, groups)``: shape, symmetry, diagonal, values, then the groups."""
    M_exp, groups_exp = expected
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return (f"expected a pair (M, groups), got {type(got).__name__}"
                + (f" of {len(got)} items" if isinstance(got, (tuple, list)) else ""))
    M_got, groups_got = got
    try:
        M = np.asarray(M_got.detach().cpu() if isinstance(M_got, torch.Tensor) else M_got, dtype=np.float64)
    except (TypeError, ValueError):
        return f"M: expected an (L, L) array of GW values, got {type(M_got).__name__}"
    L = M_exp.shape[0]
    if M.shape != (L, L):
        return f"M: expected shape {(L, L)} (one row and column per layer), got {M.shape}"
    if not np.isfinite(M).all():
        return "M: got NaN or inf entries"
    asym = np.abs(M - M.T)
    if asym.max() > 1e-9 * max(1.0, np.abs(M).max()):
        i, j = np.unravel_index(int(np.argmax(asym)), asym.shape)
        return (f"M is not symmetric: expected M[{j}, {i}] = M[{i}, {j}] = {M[i, j]:.6g}, got M[{j}, {i}] = "
                f"{M[j, i]:.6g}; GW(A, B) = GW(B, A), so solve each pair i < j once and write the value into both "
                "entries")
    diag = np.abs(np.diag(M))
    if diag.max() > 1e-12:
        k = int(np.argmax(diag))
        return (f"M[{k}, {k}]: expected 0 on the diagonal, got {M[k, k]:.6g} (a layer is at GW distance 0 from "
                "itself: set the diagonal to 0 rather than solving it - from the product start a solve of C with "
                "itself can get stuck, as the circle showed)")
    bad = ~np.isclose(M, M_exp, rtol=1e-4, atol=1e-8)
    if bad.any():
        i, j = np.unravel_index(int(np.argmax(np.where(bad, np.abs(M - M_exp), -1.0))), M.shape)
        ratio = M[i, j] / M_exp[i, j] if M_exp[i, j] else float("inf")
        hint = (" - far too large: are the distance matrices divided by their largest entry (normalize='max')? "
                "The layers here have different scales" if ratio > 10 else
                " - larger than the package's: did every solve start from init='identity'?" if ratio > 1 else "")
        return (f"M: {int(bad.sum())} of {M.size} entries wrong; worst at [{i}, {j}]: expected {M_exp[i, j]:.6g}, "
                f"got {M[i, j]:.6g}{hint}")
    if not isinstance(groups_got, (list, tuple)) or not all(isinstance(gr, (list, tuple)) for gr in groups_got):
        return f"groups: expected a list of lists of layer names, got {type(groups_got).__name__}"
    got_groups = [[str(n) for n in gr] for gr in groups_got]
    if got_groups != groups_exp:
        return (f"groups: expected {groups_exp}, got {got_groups} (M is right); average linkage (UPGMA) cut in the "
                "middle of the largest gap between the merge heights, with 0 counted as the first height?")
    return None


def _layer_cases() -> list[Case]:
    """The cases of :func:`check_layer_gw_groups`: planted families and two drifting chains whose groups
    change with the linkage rule (single, complete, weighted, ward, centroid and median linkage all
    give other groups in at least one of them)."""
    from mechnb import gw

    cases = []
    specs = [(_family_reps(), "6 layers in 3 planted families (rotated, rescaled, widened, noised copies)",
              "the families are interleaved: groups need not be consecutive layers"),
             (_drift_reps(11), "7 layers drifting from one cloud to another (seed 11)",
              "average linkage: the distance between two groups is the mean of their pairwise GW values"),
             (_drift_reps(18), "7 layers drifting from one cloud to another (seed 18)",
              "cut in the middle of the largest gap between consecutive merge heights (0 included)")]
    for reps, label, hint in specs:
        res = gw.layer_gw_matrix(reps, init="identity", tol=1e-9, dtype="float64", progress=False)
        groups = gw.layer_groups(gw.cluster_layers(res.matrix), res.names)
        cases.append(Case((reps,), (res.matrix, groups), label=label, compare=_compare_layer_result, hint=hint))
    return cases


@exercise("3.5", "the layer x layer GW matrix and its groups", notebook=NOTEBOOK)
def check_layer_gw_groups(fn: Callable[[Mapping[str, torch.Tensor]], tuple[Any, Sequence[Sequence[str]]]]
                          ) -> CheckResult:
    """Check ``fn(reps) -> (M, groups)``: the method of Gao et al. (2024) end to end.

    ``reps`` maps layer names to ``(n, d_l)`` float64 representations of the same ``n`` inputs.
    ``M (L, L)``: ``GW(C_i, C_j)`` of the max-normalised Euclidean distance matrices, each pair
    solved once by ``gw.gw_solve(C_i, C_j, init="identity")`` (0 diagonal, symmetric);
    ``groups``: average-linkage clustering of ``M`` cut in the middle of the largest gap between
    merge heights, as lists of names in order of their first layer. Expected values:
    :func:`mechnb.gw.layer_gw_matrix` with ``init="identity", tol=1e-9, dtype="float64"`` (the
    same solver calls) and :func:`mechnb.gw.cluster_layers` / :func:`mechnb.gw.layer_groups`.
    The package's ``layer_gw_matrix``, ``cluster_layers``, ``layer_linkage``, ``auto_threshold``
    and ``LayerMatrix.groups`` are off limits inside ``fn`` (``gw.distance_matrix``,
    ``gw.gw_solve`` and ``gw.layer_groups`` are the building blocks to use).
    """
    from mechnb import gw

    cases = _layer_cases()
    forbidden = {"gw.layer_gw_matrix": gw.layer_gw_matrix, "gw.cluster_layers": gw.cluster_layers,
                 "gw.layer_linkage": gw.layer_linkage, "gw.auto_threshold": gw.auto_threshold,
                 "LayerMatrix.groups": gw.LayerMatrix.groups}
    advice = ("gw.distance_matrix per layer, gw.gw_solve per pair, scipy.cluster.hierarchy.linkage and fcluster "
              "for the groups")
    return run_cases(_without(fn, forbidden, "3.5", advice), cases)
