"""Gromov-Wasserstein (GW) comparison of layer representations and sub-network discovery.

Gao, Dhurandhar, Natesan Ramamurthy & Wei 2024, *Identifying Sub-networks in Neural Networks
via Functionally Similar Representations* (https://arxiv.org/abs/2410.16484): feed the same
``n`` inputs through a network, turn every layer's representation ``X_l (n, d_l)`` into its
intra-layer distance matrix ``C_l (n, n)``, compare every pair of layers with the GW
discrepancy (their method section) and read groups of functionally similar layers off the resulting
``L x L`` matrix with hierarchical clustering. GW needs no shared dimension or alignment of
the feature axes: it only compares how each layer arranges the inputs relative to each other.

The GW discrepancy (square loss; Memoli 2011, Peyre, Cuturi & Solomon 2016) between
``(C1, p)`` and ``(C2, q)`` is::

    GW(C1, C2) = min_{T in U(p, q)}  sum_{i,j,k,l} (C1[i,k] - C2[j,l])**2 * T[i,j] * T[k,l]

over couplings ``T >= 0`` with row sums ``p`` and column sums ``q``. It is solved by POT
(``ot.gromov``): conditional gradient for ``solver="exact"`` and projected (mirror) gradient
with Sinkhorn projections for ``solver="entropic"``; this module never re-implements a solver,
it chooses the start, checks the answer and raises :class:`GWSolverError` when a solve fails.

CKA (Kornblith et al. 2019, https://arxiv.org/abs/1905.00414) is provided as the standard
baseline: :func:`cka` and :func:`layer_cka_matrix`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ot
import torch
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform
from torch import nn
from tqdm.auto import tqdm

from mechnb._checks import (
    check_array,
    check_choice,
    check_positive_float,
    check_positive_int,
    check_tensor,
    resolve_device,
)
from mechnb.models import MLP, TinyTransformer
from mechnb.tasks import ModularArithmetic
from mechnb.train import TrainConfig, cross_entropy_loss, train

__all__ = [
    "GWSolverError",
    "GWSolution",
    "LayerMatrix",
    "TrainedVariant",
    "layer_representations",
    "distance_matrix",
    "gw_solve",
    "gw_distance",
    "layer_gw_matrix",
    "layer_linkage",
    "cluster_layers",
    "auto_threshold",
    "layer_groups",
    "cka",
    "layer_cka_matrix",
    "probe_accuracy",
    "toy_shapes",
    "train_variants",
]

METRICS = ("euclidean", "sqeuclidean", "cosine")
NORMALIZATIONS = ("max", "mean", None)
SOLVERS = ("exact", "entropic")
INITS = ("product", "identity")


class GWSolverError(RuntimeError):
    """A GW solve failed (NaN coupling, violated marginals) or did not converge; the message says what to change."""


# --------------------------------------------------------------------------------------
# Representations
# --------------------------------------------------------------------------------------
def _select_position(x: torch.Tensor, position: int | str, mask: torch.Tensor | None, pos_dim: int) -> torch.Tensor:
    """Reduce the position axis ``pos_dim`` of ``x`` by an index, the last real token or the mean."""
    x = x.movedim(pos_dim, 1)  # (n, pos, ...)
    n, n_pos = x.shape[0], x.shape[1]
    if isinstance(position, int):
        return x[:, position]
    if mask is None:
        mask = torch.ones(n, n_pos, dtype=torch.bool, device=x.device)
    if position == "last":
        last = mask.long().cumsum(1).argmax(1)  # index of the last True in each row
        return x[torch.arange(n, device=x.device), last]
    w = mask.to(x.dtype).reshape(n, n_pos, *([1] * (x.ndim - 2)))
    return (x * w).sum(1) / w.sum(1)


@torch.no_grad()
def layer_representations(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: Sequence[str] | None = None,
    *,
    position: int | str = "last",
    pad_id: int | None = None,
    include_input: bool = True,
) -> OrderedDict[str, torch.Tensor]:
    """Every layer's representation of the same inputs: ``name -> (n, d_l)`` tensor, in depth order.

    * :class:`~mechnb.models.MLP`: ``"input"``, the post-activation hidden layers ``"h1" ... "hK"``
      and the logits ``"output"``.
    * :class:`~mechnb.models.TinyTransformer` (``inputs`` = tokens ``(n, pos)``): the residual
      stream at every layer boundary, ``"blocks.0.hook_resid_pre"`` (embeddings),
      ``"blocks.{l}.hook_resid_mid"``, ``"blocks.{l}.hook_resid_post"``, then ``"output"`` (logits),
      each read at one token ``position``: an int index (``-1`` = last column), ``"last"`` (the
      last non-pad token of each row when ``pad_id`` is given) or ``"mean"`` (mean over non-pad
      tokens). ``layers`` may name any hook point (e.g. ``"blocks.0.hook_mlp_out"``); head-split
      activations are flattened to ``(n, n_heads * d)``.
    * any other ``nn.Module``: ``layers`` must list submodule names; their outputs are flattened.

    Args:
        model: the network (its device is used; nothing is moved).
        inputs: ``(n, d_in)`` features or ``(n, pos)`` tokens.
        layers: a subset / order of names to return (default: all of the above).
        include_input: keep ``"input"`` for MLPs and generic models.

    Returns:
        ``OrderedDict`` of detached float tensors of shape ``(n, d_l)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    check_tensor("inputs", inputs, ndim=2, dims="(n, d_in) or (n, pos)")
    if inputs.shape[0] < 2:
        raise ValueError(f"inputs: expected at least 2 samples to compare layers, got {inputs.shape[0]}")
    if not (isinstance(position, int) and not isinstance(position, bool)) and position not in ("last", "mean"):
        raise ValueError(f"position: expected an int index, 'last' or 'mean', got {position!r}")
    if layers is not None and (isinstance(layers, str) or not all(isinstance(s, str) for s in layers)):
        raise TypeError(f"layers: expected a sequence of layer names, got {layers!r}")
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, MLP):
            reps = _mlp_representations(model, inputs, include_input)
        elif isinstance(model, TinyTransformer):
            return _transformer_representations(model, inputs, layers, position, pad_id)
        else:
            return _module_representations(model, inputs, layers, include_input)
    finally:
        model.train(was_training)
    if layers is not None:
        unknown = [n for n in layers if n not in reps]
        if unknown:
            raise ValueError(f"layers: unknown names {unknown}; valid: {list(reps)}")
        reps = OrderedDict((n, reps[n]) for n in layers)
    return reps


def _mlp_representations(model: MLP, inputs: torch.Tensor, include_input: bool) -> OrderedDict[str, torch.Tensor]:
    out, acts = model(inputs, return_activations=True)
    reps: OrderedDict[str, torch.Tensor] = OrderedDict()
    if include_input:
        reps["input"] = inputs.float()
    for i, a in enumerate(acts[:-1]):
        reps[f"h{i + 1}"] = a
    reps["output"] = out
    return reps


def _transformer_representations(model: TinyTransformer, tokens: torch.Tensor, layers: Sequence[str] | None,
                                 position: int | str, pad_id: int | None) -> OrderedDict[str, torch.Tensor]:
    if tokens.is_floating_point():
        raise TypeError(f"inputs: expected integer token ids for a TinyTransformer, got dtype {tokens.dtype}")
    n_pos = tokens.shape[1]
    if isinstance(position, int) and not -n_pos <= position < n_pos:
        raise ValueError(f"position: expected an index in [-{n_pos}, {n_pos}) for {n_pos} token positions, "
                         f"got {position}")
    mask = None if pad_id is None else tokens != pad_id
    if mask is not None and not bool(mask.any(1).all()):
        raise ValueError("inputs: some rows contain only pad tokens; drop them or pass pad_id=None")
    default = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_{s}" for l in range(model.n_layers)
                                             for s in ("mid", "post")] + ["output"]
    names = list(layers) if layers is not None else default
    points = model.hook_points()
    unknown = [n for n in names if n != "output" and n not in points]
    if unknown:
        raise ValueError(f"layers: unknown hook names {unknown}; valid: 'output' and {sorted(points)}")
    logits, cache = model.run_with_cache(tokens, names_filter=[n for n in names if n != "output"])
    reps: OrderedDict[str, torch.Tensor] = OrderedDict()
    for n in names:
        act = logits if n == "output" else cache[n]
        pos_dim = 2 if n.endswith(("hook_pattern", "hook_attn_scores")) else 1  # [batch, head, query, key]
        reps[n] = _select_position(act, position, mask, pos_dim).reshape(tokens.shape[0], -1)
    return reps


def _module_representations(model: nn.Module, inputs: torch.Tensor, layers: Sequence[str] | None,
                            include_input: bool) -> OrderedDict[str, torch.Tensor]:
    if layers is None:
        raise ValueError(f"layers: a generic {type(model).__name__} needs the submodule names to read, got None")
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        raise ValueError(f"layers: unknown submodules {unknown}; valid: {sorted(k for k in modules if k)}")
    got: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, o.detach()))
               for n in layers]
    try:
        model(inputs)
    finally:
        for h in handles:
            h.remove()
    reps: OrderedDict[str, torch.Tensor] = OrderedDict()
    if include_input and inputs.is_floating_point():
        reps["input"] = inputs
    for n in layers:
        reps[n] = got[n].reshape(inputs.shape[0], -1)
    return reps


def _as_tensor(name: str, X: Any, ndim: int = 2) -> torch.Tensor:
    if isinstance(X, np.ndarray):
        X = torch.from_numpy(check_array(name, X, ndim=ndim))
    check_tensor(name, X, ndim=ndim, floating=None)
    return X.double()


def distance_matrix(X: torch.Tensor | np.ndarray, metric: str = "euclidean",
                    normalize: str | None = "max") -> torch.Tensor:
    """The intra-layer distance matrix ``C[i, k] = d(x_i, x_k)`` of a representation ``X (n, d)``.

    Args:
        X: ``(n, d)`` representation (tensor or array); computed in float64 on ``X``'s device.
        metric: ``"euclidean"`` (the paper's choice), ``"sqeuclidean"`` or ``"cosine"`` (``1 - cos``).
        normalize: ``"max"`` divides by the largest entry (so ``C`` is in [0, 1] and a layer and
            its rescaled copy become identical), ``"mean"`` by the mean off-diagonal entry,
            ``None`` keeps raw distances.

    Returns:
        ``(n, n)`` float64 tensor: symmetric, zero diagonal, non-negative.
    """
    X = _as_tensor("X", X)
    check_choice("metric", metric, METRICS)
    check_choice("normalize", normalize, NORMALIZATIONS)
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"X: expected at least 2 rows (samples), got shape {tuple(X.shape)}")
    if metric == "cosine":
        norms = X.norm(dim=1)
        if bool((norms == 0).any()):
            raise ValueError(f"X: {int((norms == 0).sum())} rows are all-zero; cosine distance is undefined there "
                             "(use metric='euclidean')")
        U = X / norms[:, None]
        C = (1.0 - U @ U.T).clamp_min(0.0)
    else:  # centring first keeps the matrix-product formula |x|^2 + |y|^2 - 2 x.y accurate in float64
        Xc = X - X.mean(0, keepdim=True)
        C = torch.cdist(Xc, Xc, compute_mode="use_mm_for_euclid_dist")
        if metric == "sqeuclidean":
            C = C**2
    C = 0.5 * (C + C.T)
    C.fill_diagonal_(0.0)
    if normalize is not None:
        scale = C.max() if normalize == "max" else C.sum() / (n * (n - 1))
        if float(scale) <= 0:
            raise ValueError("X: all rows are identical, so the distance matrix is zero and cannot be normalised")
        C = C / scale
    return C


# --------------------------------------------------------------------------------------
# GW discrepancy (POT solvers + checks)
# --------------------------------------------------------------------------------------
@dataclass
class GWSolution:
    """One GW solve: ``value`` (the square-loss discrepancy at ``coupling``), the coupling ``T (n1, n2)``
    and convergence information (``n_iter`` outer iterations, ``marginal_error`` = max |T1 - p|, |T'1 - q|)."""

    value: float
    coupling: np.ndarray
    n_iter: int
    solver: str
    init: str
    epsilon: float | None
    marginal_error: float
    seconds: float


def _check_square(name: str, C: Any) -> np.ndarray:
    arr = check_array(name, C, ndim=2, square=True)
    if arr.shape[0] < 1:
        raise ValueError(f"{name}: expected a non-empty square matrix, got shape {arr.shape}")
    return arr


def _check_weights(name: str, w: Any, n: int) -> np.ndarray:
    if w is None:
        return np.full(n, 1.0 / n)
    arr = check_array(name, w, ndim=1)
    if arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} weights (one per row of the matching C), got {arr.shape[0]}")
    if (arr < 0).any() or abs(arr.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name}: expected non-negative weights summing to 1, got min {arr.min():.3g}, "
                         f"sum {arr.sum():.6g}")
    return arr


def _initial_coupling(init: str | np.ndarray, p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, str]:
    if isinstance(init, str):
        check_choice("init", init, INITS)
        if init == "product":
            return np.outer(p, q), "product"
        if p.shape != q.shape or not np.allclose(p, q, atol=1e-12):
            raise ValueError(f"init: 'identity' needs the same samples on both sides (equal p and q), got "
                             f"{p.shape[0]} and {q.shape[0]} points; use init='product'")
        return np.diag(p), "identity"
    G0 = check_array("init", init, ndim=2)
    if G0.shape != (p.shape[0], q.shape[0]):
        raise ValueError(f"init: expected a coupling of shape {(p.shape[0], q.shape[0])}, got {G0.shape}")
    if (G0 < 0).any() or np.abs(G0.sum(1) - p).max() > 1e-8 or np.abs(G0.sum(0) - q).max() > 1e-8:
        raise ValueError("init: expected a non-negative coupling whose row sums are p and column sums are q")
    return G0, "custom"


def gw_solve(
    C1: Any,
    C2: Any,
    p: Any = None,
    q: Any = None,
    *,
    solver: str = "exact",
    epsilon: float | None = None,
    init: str | np.ndarray = "product",
    max_iter: int | None = None,
    tol: float | None = None,
    dtype: str = "float64",
    max_iter_lp: int = 100_000,
) -> GWSolution:
    """Solve GW between ``(C1, p)`` and ``(C2, q)`` with POT and check the answer.

    Args:
        C1, C2: ``(n1, n1)`` and ``(n2, n2)`` intra-space distance (or similarity) matrices;
            ``n1 != n2`` is fine.
        p, q: weights on the points (default uniform).
        solver: ``"exact"`` - ``ot.gromov.gromov_wasserstein`` (conditional gradient, each step an
            exact OT linear program; finds a local optimum of the non-convex problem);
            ``"entropic"`` - ``ot.gromov.entropic_gromov_wasserstein`` (projected gradient with
            Sinkhorn projections at regularisation ``epsilon``, required).
        init: ``"product"`` starts from ``p q^T`` (POT's default); ``"identity"`` from the
            sample-aligned coupling ``diag(p)``, valid when row ``i`` of both spaces is the same
            input (two layers of one network); or an explicit ``(n1, n2)`` coupling.
        max_iter: outer iterations (default 10000 exact / 1000 entropic, POT's).
        tol: stopping threshold: relative change of the loss (exact, default 1e-9) or
            ``||T_t - T_{t-10}||_F`` (entropic, default 1e-9).
        dtype: ``"float64"`` or ``"float32"`` for the solver's matrix products (the LP is float64).
        max_iter_lp: iteration cap of each exact OT linear program (POT's ``numItermaxEmd``).

    Returns:
        a :class:`GWSolution` whose ``value`` is POT's square-loss GW (no entropy term).

    Raises:
        GWSolverError: NaN/inf coupling, marginals violated (e.g. Sinkhorn under/overflow: POT
            then returns 0.0), the LP solver hit its iteration cap, or no convergence within
            ``max_iter``. The message names the setting to change.
    """
    A, B = _check_square("C1", C1), _check_square("C2", C2)
    p_, q_ = _check_weights("p", p, A.shape[0]), _check_weights("q", q, B.shape[0])
    check_choice("solver", solver, SOLVERS)
    check_choice("dtype", dtype, ["float64", "float32"])
    if solver == "entropic":
        if epsilon is None:
            raise ValueError("epsilon: solver='entropic' needs a regularisation epsilon > 0 (e.g. 1e-2 for "
                             "max-normalised distances), got None")
        epsilon = check_positive_float("epsilon", epsilon)
    elif epsilon is not None:
        raise ValueError(f"epsilon: only used by solver='entropic', got epsilon={epsilon!r} with solver='exact'")
    max_iter = check_positive_int("max_iter", max_iter) if max_iter is not None else (
        10000 if solver == "exact" else 1000)
    tol = check_positive_float("tol", tol) if tol is not None else 1e-9
    max_iter_lp = check_positive_int("max_iter_lp", max_iter_lp)
    G0, init_name = _initial_coupling(init, p_, q_)
    dt = np.float32 if dtype == "float32" else np.float64
    symmetric = bool(np.allclose(A, A.T, atol=1e-10) and np.allclose(B, B.T, atol=1e-10))
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if solver == "exact":
            T, log = ot.gromov.gromov_wasserstein(
                A.astype(dt), B.astype(dt), p_.astype(dt), q_.astype(dt), loss_fun="square_loss",
                symmetric=symmetric, log=True, G0=G0.astype(dt), max_iter=max_iter, tol_rel=tol, tol_abs=1e-12,
                numItermaxEmd=max_iter_lp)
            losses = [float(v) for v in log["loss"]]
            n_iter = len(losses) - 1
            value = losses[-1]
        else:
            with np.errstate(all="ignore"):
                T, log = ot.gromov.entropic_gromov_wasserstein(
                    A.astype(dt), B.astype(dt), p_.astype(dt), q_.astype(dt), loss_fun="square_loss",
                    epsilon=epsilon, symmetric=symmetric, G0=G0.astype(dt), max_iter=max_iter, tol=tol, log=True,
                    stopThr=1e-4 * float(max(p_.max(), q_.max())))  # Sinkhorn: 10x tighter than the check below
            value = float(log["gw_dist"])
            errs = [float(e) for e in log["err"]]  # ||T_t - T_{t-1}|| every 10th iteration
            # POT stops when the last measured change is <= tol, or else at max_iter
            n_iter = 10 * (len(errs) - 1) + 1 if errs[-1] <= tol else max_iter
    seconds = time.perf_counter() - t0
    T = np.asarray(T, dtype=np.float64)
    what = f"GW ({solver}, init={init_name!r}" + (f", epsilon={epsilon:g})" if solver == "entropic" else ")")
    if not np.isfinite(T).all() or not math.isfinite(value):
        hint = ("increase epsilon (Sinkhorn over/underflowed) or normalise the distance matrices"
                if solver == "entropic" else "check C1 and C2 for huge values; normalise them")
        raise GWSolverError(f"{what}: the solver returned a non-finite coupling or value; {hint}")
    marg = float(max(np.abs(T.sum(1) - p_).max(), np.abs(T.sum(0) - q_).max()))
    marg_tol = 1e-6 if solver == "exact" else 1e-3 * float(max(p_.max(), q_.max()))
    if marg > marg_tol:
        hint = (f"increase epsilon (got {epsilon:g}) or the Sinkhorn iterations; POT reports a meaningless "
                f"value ({value:.3g}) for such a plan" if solver == "entropic" else "report this as a bug")
        raise GWSolverError(f"{what}: the coupling violates the marginals by {marg:.3g} (tolerance {marg_tol:.1g}) "
                            f"- the solve failed; {hint}")
    handled = ("numItermax reached", "Sinkhorn did not converge", "Solver failed to produce", "numerical errors")
    for w in caught:  # pass on the warnings this function does not turn into checks
        if not any(h in str(w.message) for h in handled):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if solver == "exact" and any("numItermax reached" in str(w.message) for w in caught):
        raise GWSolverError(f"{what}: an inner OT linear program hit its iteration cap, so the coupling is not "
                            f"optimal; increase max_iter_lp (got {max_iter_lp}) or use fewer points (n_samples)")
    if solver == "exact" and n_iter >= max_iter:
        d = abs(losses[-1] - losses[-2])
        if d >= 1e-12 and d / max(abs(losses[-1]), 1e-300) >= tol:
            raise GWSolverError(f"{what}: no convergence in max_iter={max_iter} iterations (last relative change "
                                f"{d / max(abs(losses[-1]), 1e-300):.2g} > tol={tol:g}); increase max_iter or tol")
    if solver == "entropic" and errs[-1] > tol:
        raise GWSolverError(f"{what}: no convergence in max_iter={max_iter} iterations (coupling change "
                            f"{errs[-1]:.2g} > tol={tol:g}); increase max_iter, tol or epsilon")
    if value < 0:
        if value < -1e-9:
            raise GWSolverError(f"{what}: negative GW value {value:.3g}; the solve failed")
        value = 0.0
    return GWSolution(value=value, coupling=T, n_iter=n_iter, solver=solver, init=init_name,
                      epsilon=epsilon, marginal_error=marg, seconds=seconds)


def gw_distance(C1: Any, C2: Any, p: Any = None, q: Any = None, *, solver: str = "exact",
                epsilon: float | None = None, init: str | np.ndarray = "product", **kwargs: Any) -> float:
    """The GW discrepancy between ``(C1, p)`` and ``(C2, q)`` - POT's square-loss value (see module docstring).

    ``GW = 0`` iff the two metric-measure spaces are isometric (up to the solver finding the
    global optimum); it is symmetric and ignores rotations, translations, reflections and the
    order of the points. Two uniform two-point spaces at distances ``a`` and ``b`` give
    ``(a - b)**2 / 2``. Keyword arguments are those of :func:`gw_solve` (``max_iter``, ``tol``,
    ``dtype``); failures raise :class:`GWSolverError`, never return a silent 0.
    """
    return gw_solve(C1, C2, p, q, solver=solver, epsilon=epsilon, init=init, **kwargs).value


# --------------------------------------------------------------------------------------
# Layer x layer matrices
# --------------------------------------------------------------------------------------
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
        return self.matrix.copy() if self.kind == "gw" else 1.0 - self.matrix

    def groups(self, n_groups: int | None = None, threshold: float | None = None, **kw: Any) -> np.ndarray:
        """:func:`cluster_layers` on :meth:`distances`."""
        return cluster_layers(self.distances(), n_groups=n_groups, threshold=threshold, **kw)

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "matrix": self.matrix.tolist(), "kind": self.kind,
                "n_samples": self.n_samples, "settings": dict(self.settings), "seconds": self.seconds}


def _check_reps(reps: Any, min_layers: int = 2) -> tuple[list[str], list[torch.Tensor]]:
    if not isinstance(reps, Mapping) or len(reps) < min_layers:
        raise ValueError(f"reps: expected a mapping name -> (n, d) representation with at least {min_layers} layers, "
                         f"got {type(reps).__name__} of length {len(reps) if hasattr(reps, '__len__') else '?'}")
    names, Xs = [], []
    for k, v in reps.items():
        X = _as_tensor(f"reps[{k!r}]", v)
        if Xs and X.shape[0] != Xs[0].shape[0]:
            raise ValueError(f"reps[{k!r}]: expected {Xs[0].shape[0]} rows like reps[{names[0]!r}] (the same inputs), "
                             f"got {X.shape[0]}")
        names.append(str(k))
        Xs.append(X)
    return names, Xs


def _subsample_rows(Xs: list[torch.Tensor], n_samples: int | None, seed: int) -> list[torch.Tensor]:
    n = Xs[0].shape[0]
    if n_samples is None or check_positive_int("n_samples", n_samples, minimum=2) >= n:
        return Xs
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_samples]
    return [X[idx.to(X.device)] for X in Xs]


def layer_gw_matrix(
    reps: Mapping[str, torch.Tensor],
    *,
    metric: str = "euclidean",
    normalize: str | None = "max",
    solver: str = "exact",
    epsilon: float | None = None,
    init: str = "identity",
    n_samples: int | None = None,
    seed: int = 0,
    max_iter: int | None = None,
    tol: float | None = None,
    dtype: str | None = None,
    progress: bool = True,
) -> LayerMatrix:
    """The symmetric ``L x L`` matrix of GW discrepancies between all layers (Gao et al. 2024).

    Each layer's ``(n, n)`` distance matrix is built once with :func:`distance_matrix`; only
    the ``L(L-1)/2`` unordered pairs are solved (GW is symmetric) and the diagonal is 0.

    The defaults are tuned for layers of one network seen on the same inputs: ``init="identity"``
    starts the solver from the sample-aligned coupling (the natural correspondence, usually
    near-optimal); for the exact solver ``tol=None`` means ``1e-2``, stopping when a solver step
    lowers the loss by less than 1% (on trained MLPs this stays within about 3% of the fully
    converged value, median 0.2%), and ``dtype=None`` means float32, which halves the cost of
    the matrix products. ``init="product", tol=1e-9, dtype="float64"`` reproduces POT's defaults
    (see ``benchmarks/bench_gw.py`` for the agreement between the two). For
    ``solver="entropic"``, ``tol=None`` and ``dtype=None`` keep :func:`gw_solve`'s defaults.

    Args:
        reps: ``name -> (n, d_l)`` representations with the same ``n`` rows (e.g. from
            :func:`layer_representations`).
        metric, normalize: passed to :func:`distance_matrix`.
        solver, epsilon, init, max_iter, tol, dtype: passed to :func:`gw_solve`.
        n_samples: use a seeded random subset of this many rows (the same rows in every layer).
        seed: seeds that subset.
        progress: ``tqdm`` bar over the pairs.

    Returns:
        a :class:`LayerMatrix` with ``kind="gw"``, the per-pair iteration counts in ``n_iter``.
    """
    names, Xs = _check_reps(reps)
    Xs = _subsample_rows(Xs, n_samples, seed)
    t0 = time.perf_counter()
    Cs = []
    for name, X in zip(names, Xs):
        try:
            Cs.append(distance_matrix(X, metric, normalize).cpu().numpy())
        except ValueError as e:
            raise ValueError(f"reps[{name!r}]: {e} (a dead or collapsed layer? drop it, or use normalize=None)"
                             ) from None
    L = len(Cs)
    M = np.zeros((L, L))
    iters = np.zeros((L, L), dtype=int)
    if tol is None and solver == "exact":
        tol = 1e-2
    if dtype is None:
        dtype = "float32" if solver == "exact" else "float64"
    pairs = [(i, j) for i in range(L) for j in range(i + 1, L)]
    for i, j in tqdm(pairs, desc="GW pairs", disable=not progress, leave=False):
        try:
            sol = gw_solve(Cs[i], Cs[j], solver=solver, epsilon=epsilon, init=init, max_iter=max_iter, tol=tol,
                           dtype=dtype)
        except GWSolverError as e:
            raise GWSolverError(f"layers {names[i]!r} vs {names[j]!r}: {e}") from None
        M[i, j] = M[j, i] = sol.value
        iters[i, j] = iters[j, i] = sol.n_iter
    settings = dict(metric=metric, normalize=normalize, solver=solver, epsilon=epsilon, init=init, seed=seed,
                    max_iter=max_iter, tol=tol, dtype=dtype)
    return LayerMatrix(names, M, "gw", Xs[0].shape[0], settings, time.perf_counter() - t0, iters)


# --------------------------------------------------------------------------------------
# Clustering
# --------------------------------------------------------------------------------------
def _check_distance_matrix(matrix: Any) -> np.ndarray:
    if isinstance(matrix, LayerMatrix):
        matrix = matrix.distances()
    D = check_array("matrix", matrix, ndim=2, square=True)
    if D.shape[0] < 1:
        raise ValueError("matrix: expected at least one layer, got an empty matrix")
    if (D < -1e-9).any():
        raise ValueError(f"matrix: expected non-negative distances, got min {D.min():.3g} "
                         "(pass LayerMatrix.distances() for a CKA similarity matrix)")
    D = 0.5 * (D + D.T)  # a solver's GW(A, B) and GW(B, A) can differ slightly: use their mean
    np.fill_diagonal(D, 0.0)
    return np.clip(D, 0.0, None)


def layer_linkage(matrix: Any, method: str = "average") -> np.ndarray:
    """scipy's ``(L-1, 4)`` linkage matrix for hierarchical clustering of a layer distance matrix."""
    check_choice("method", method, ["average", "complete", "single", "weighted"])
    D = _check_distance_matrix(matrix)
    if D.shape[0] < 2:
        raise ValueError("matrix: expected at least 2 layers to build a dendrogram, got 1")
    return hierarchy.linkage(squareform(D, checks=False), method=method)


def _largest_gap_cut(heights: np.ndarray) -> float:
    """A threshold in the middle of the largest jump between consecutive merge heights."""
    h = np.concatenate([[0.0], np.sort(heights)])
    k = int(np.argmax(np.diff(h)))
    return float(0.5 * (h[k] + h[k + 1]))


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel 0, 1, 2 ... in order of first appearance (so layer 0 is always in group 0)."""
    out, seen = np.empty(len(labels), dtype=int), {}
    for i, lab in enumerate(labels):
        out[i] = seen.setdefault(int(lab), len(seen))
    return out


def _contiguous_clusters(D: np.ndarray, n_groups: int | None, threshold: float | None) -> np.ndarray:
    """Agglomerative clustering that only merges neighbouring segments (average linkage)."""
    segs = [[i] for i in range(D.shape[0])]
    heights: list[float] = []
    history = [list(map(list, segs))]
    while len(segs) > 1:
        gaps = [D[np.ix_(a, b)].mean() for a, b in zip(segs[:-1], segs[1:])]
        k = int(np.argmin(gaps))
        heights.append(float(gaps[k]))
        segs = segs[:k] + [segs[k] + segs[k + 1]] + segs[k + 2:]
        history.append(list(map(list, segs)))
    if n_groups is not None:
        chosen = history[D.shape[0] - min(n_groups, D.shape[0])]
    else:
        cut = threshold if threshold is not None else _largest_gap_cut(np.array(heights))
        n_merges = sum(1 for h in heights if h <= cut)  # merge heights are usually increasing
        chosen = history[n_merges]
    labels = np.empty(D.shape[0], dtype=int)
    for g, seg in enumerate(chosen):
        labels[seg] = g
    return labels


def cluster_layers(matrix: Any, n_groups: int | None = None, threshold: float | None = None, *,
                   method: str = "average", contiguous: bool = False) -> np.ndarray:
    """Hierarchical clustering of layers from a distance matrix (e.g. GW) into groups.

    Args:
        matrix: ``(L, L)`` non-negative distances (symmetrised by averaging with the transpose)
            or a :class:`LayerMatrix` (its :meth:`~LayerMatrix.distances`).
        n_groups: cut the dendrogram into this many groups.
        threshold: or cut it at this merge height (layers closer than it end up together).
            With neither, the cut is placed in the largest gap between merge heights.
        method: scipy linkage (``"average"`` = UPGMA).
        contiguous: only allow groups of consecutive layers (merge neighbouring segments).

    Returns:
        ``(L,)`` int labels, numbered 0, 1, ... in order of first appearance.
    """
    D = _check_distance_matrix(matrix)
    check_choice("method", method, ["average", "complete", "single", "weighted"])
    if n_groups is not None and threshold is not None:
        raise ValueError(f"n_groups, threshold: pass one of them, got n_groups={n_groups} and threshold={threshold}")
    if n_groups is not None:
        n_groups = check_positive_int("n_groups", n_groups)
    if threshold is not None:
        threshold = check_positive_float("threshold", threshold, allow_zero=True)
    L = D.shape[0]
    if L == 1:
        return np.zeros(1, dtype=int)
    if contiguous:
        return _canonical(_contiguous_clusters(D, n_groups, threshold))
    Z = hierarchy.linkage(squareform(D, checks=False), method=method)
    if n_groups is not None:
        labels = hierarchy.fcluster(Z, t=min(n_groups, L), criterion="maxclust")
    else:
        cut = threshold if threshold is not None else _largest_gap_cut(Z[:, 2])
        labels = hierarchy.fcluster(Z, t=cut, criterion="distance")
    return _canonical(labels)


def auto_threshold(matrix: Any, method: str = "average") -> float:
    """The cut height :func:`cluster_layers` uses when given neither ``n_groups`` nor ``threshold``:
    the middle of the largest gap between consecutive merge heights of the dendrogram."""
    return _largest_gap_cut(layer_linkage(matrix, method)[:, 2])


def layer_groups(labels: Any, names: Sequence[str]) -> list[list[str]]:
    """``labels`` from :func:`cluster_layers` as lists of layer names, e.g. ``[["input", "h1"], ["h2", ...]]``."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != len(names):
        raise ValueError(f"labels: expected {len(names)} labels (one per name), got shape {lab.shape}")
    return [[names[i] for i in np.flatnonzero(lab == g)] for g in sorted(set(lab.tolist()), key=lambda g: int(
        np.flatnonzero(lab == g)[0]))]


# --------------------------------------------------------------------------------------
# CKA baseline
# --------------------------------------------------------------------------------------
def _gram(X: torch.Tensor, kernel: str, rbf_sigma: float) -> torch.Tensor:
    if kernel == "linear":
        return X @ X.T
    sq = torch.cdist(X, X, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    off = sq[~torch.eye(X.shape[0], dtype=torch.bool, device=X.device)]
    med = off.median()
    if float(med) <= 0:
        raise ValueError("X: more than half of the pairwise distances are zero; the RBF bandwidth "
                         "(median distance) is undefined - use kernel='linear'")
    return torch.exp(-sq / (2.0 * rbf_sigma**2 * med))


def _hsic(K: torch.Tensor, L: torch.Tensor, debiased: bool) -> torch.Tensor:
    n = K.shape[0]
    if not debiased:  # <HKH, HLH>: HSIC (Kornblith et al. 2019) up to 1/(n-1)^2, which cancels in CKA
        Kc = K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()
        Lc = L - L.mean(0, keepdim=True) - L.mean(1, keepdim=True) + L.mean()
        return (Kc * Lc).sum()
    # the unbiased HSIC estimator of Song et al. (2012), as used for debiased CKA
    K = K - torch.diag(torch.diag(K))
    L = L - torch.diag(torch.diag(L))
    KL1 = K @ L.sum(1)
    return ((K * L).sum() + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2.0 * KL1.sum() / (n - 2)) / (n * (n - 3))


def cka(X: Any, Y: Any, kernel: str = "linear", debiased: bool = False, *, rbf_sigma: float = 1.0) -> float:
    """Centered kernel alignment between two representations of the same ``n`` inputs (Kornblith et al. 2019).

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with Gram matrices ``K = k(X, X)``,
    ``L = k(Y, Y)``; ``kernel="linear"`` (``X X^T``) or ``"rbf"`` (bandwidth ``rbf_sigma`` times
    the median pairwise distance). Invariant to orthogonal maps and isotropic scaling of either
    side, not to general invertible linear maps. ``debiased=True`` uses the unbiased HSIC
    estimator (needs ``n >= 4``), which removes the upward bias of CKA for ``d >> n``.

    Args:
        X: ``(n, d1)``; Y: ``(n, d2)``. Computed in float64 on ``X``'s device.

    Returns:
        a float, 1 for identical representations (biased CKA lies in [0, 1]).
    """
    A, B = _as_tensor("X", X), _as_tensor("Y", Y).to(_as_tensor("X", X).device)
    check_choice("kernel", kernel, ["linear", "rbf"])
    rbf_sigma = check_positive_float("rbf_sigma", rbf_sigma)
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"Y: expected {A.shape[0]} rows like X (the same inputs), got {B.shape[0]}")
    if A.shape[0] < (4 if debiased else 2):
        raise ValueError(f"X: expected at least {4 if debiased else 2} samples, got {A.shape[0]}")
    K, L = _gram(A, kernel, rbf_sigma), _gram(B, kernel, rbf_sigma)
    kk, ll = _hsic(K, K, debiased), _hsic(L, L, debiased)
    for name, v in (("X", kk), ("Y", ll)):
        if float(v) <= 0:
            raise ValueError(f"{name}: the representation does not vary across samples (HSIC = {float(v):.3g}); "
                             "CKA is undefined")
    return float(_hsic(K, L, debiased) / torch.sqrt(kk * ll))


def layer_cka_matrix(reps: Mapping[str, torch.Tensor], *, kernel: str = "linear", debiased: bool = False,
                     rbf_sigma: float = 1.0, n_samples: int | None = None, seed: int = 0,
                     progress: bool = False) -> LayerMatrix:
    """The ``L x L`` CKA similarity matrix of ``reps`` (see :func:`cka`), ``kind="cka"``."""
    names, Xs = _check_reps(reps)
    Xs = _subsample_rows(Xs, n_samples, seed)
    t0 = time.perf_counter()
    L = len(Xs)
    M = np.eye(L)
    pairs = [(i, j) for i in range(L) for j in range(i + 1, L)]
    for i, j in tqdm(pairs, desc="CKA pairs", disable=not progress, leave=False):
        M[i, j] = M[j, i] = cka(Xs[i], Xs[j], kernel, debiased, rbf_sigma=rbf_sigma)
    settings = dict(kernel=kernel, debiased=debiased, rbf_sigma=rbf_sigma, seed=seed)
    return LayerMatrix(names, M, "cka", Xs[0].shape[0], settings, time.perf_counter() - t0)


@torch.no_grad()
def probe_accuracy(reps: Mapping[str, torch.Tensor], y: torch.Tensor, *, train_frac: float = 0.8,
                   ridge: float = 1e-2, seed: int = 0) -> dict[str, float]:
    """Held-out accuracy of a linear (ridge-regression, one-hot targets) probe for ``y`` on every layer.

    Tells which layers make a quantity *linearly decodable* - e.g. where the answer ``a + b mod P``
    appears in the modular-addition MLP - to interpret the GW groups. Features are standardised;
    the probe is ``W = (X'X + ridge * n * I)^-1 X'Y`` on a seeded ``train_frac`` split of the rows
    (with a bias column), evaluated by argmax on the rest.

    Args:
        reps: ``name -> (n, d)`` representations; y: ``(n,)`` integer class labels.

    Returns:
        ``name -> accuracy`` on the held-out rows (chance is ``1 / n_classes``).
    """
    names, Xs = _check_reps(reps, min_layers=1)
    check_tensor("y", y, shape=(Xs[0].shape[0],), dims="(n,)", floating=False)
    check_positive_float("ridge", ridge)
    n = Xs[0].shape[0]
    n_train = int(round(n * check_positive_float("train_frac", train_frac)))
    if not 1 <= n_train < n:
        raise ValueError(f"train_frac: expected a split leaving rows on both sides, got {train_frac} of {n} rows")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:n_train], perm[n_train:]
    classes, yi = torch.unique(y, return_inverse=True)
    out: dict[str, float] = {}
    for name, X in zip(names, Xs):
        dev = X.device
        Y = torch.nn.functional.one_hot(yi.to(dev), len(classes)).double()
        mu, sd = X[tr.to(dev)].mean(0), X[tr.to(dev)].std(0).clamp_min(1e-8)
        Z = torch.cat([(X - mu) / sd, torch.ones(n, 1, dtype=X.dtype, device=dev)], 1)
        Ztr = Z[tr.to(dev)]
        A = Ztr.T @ Ztr + ridge * n_train * torch.eye(Z.shape[1], dtype=Z.dtype, device=dev)
        W = torch.linalg.solve(A, Ztr.T @ Y[tr.to(dev)])
        pred = (Z[te.to(dev)] @ W).argmax(1)
        out[name] = float((pred == yi.to(dev)[te.to(dev)]).double().mean())
    return out


# --------------------------------------------------------------------------------------
# Teaching data: tiny point clouds and training-strategy variants
# --------------------------------------------------------------------------------------
def toy_shapes(seed: int = 0) -> dict[str, np.ndarray]:
    """Small 2-D point clouds ``(k, 2)`` for drawing GW couplings.

    ``"L"`` (an asymmetric L of 7 points), ``"L moved"`` (rotated by 70 degrees, translated and
    with its points shuffled: isometric to ``"L"``), ``"L mirrored"`` (a reflection: also
    isometric, so GW cannot tell it from ``"L"``), ``"L stretched"`` (x-axis scaled by 2: not
    isometric) and ``"circle"`` (7 points on a circle). Deterministic given ``seed``.
    """
    L = np.array([[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [2, 0], [0.5, 0.5]], dtype=np.float64)
    rng = np.random.default_rng(seed)
    a = np.deg2rad(70.0)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    perm = rng.permutation(len(L))
    ang = np.linspace(0, 2 * np.pi, len(L), endpoint=False)
    return {
        "L": L,
        "L moved": (L @ R.T + np.array([4.0, 1.0]))[perm],
        "L mirrored": L * np.array([-1.0, 1.0]),
        "L stretched": L * np.array([2.0, 1.0]),
        "circle": 1.5 * np.stack([np.cos(ang), np.sin(ang)], 1),
    }


@dataclass
class TrainedVariant:
    """One training strategy for the modular-addition MLP: the model and how well it does."""

    name: str
    description: str
    model: MLP
    config: TrainConfig
    train_acc: float
    test_acc: float
    pretrain: dict[str, Any] | None = None


VARIANTS = ("scratch", "weight_decay", "l1", "finetune")


@torch.no_grad()
def _accuracy(model: nn.Module, task: ModularArithmetic, dev: torch.device) -> tuple[float, float]:
    tr, te = task.split()
    acc = [float((model(s.x.to(dev)).argmax(-1) == s.y.to(dev)).float().mean()) for s in (tr, te)]
    return acc[0], acc[1]


def _fit_modular(model: MLP, task: ModularArithmetic, cfg: TrainConfig, dev: torch.device, progress: bool,
                 desc: str) -> tuple[float, float]:
    tr, _ = task.split()
    trx, try_ = tr.x.to(dev), tr.y.to(dev)
    train(model, lambda step, g: (trx, try_), lambda m, b: cross_entropy_loss(m(b[0]), b[1]), cfg, device=dev,
          progress=progress, desc=desc)
    return _accuracy(model, task, dev)


def train_variants(
    variants: Sequence[str] = VARIANTS,
    *,
    steps: int | None = None,
    P: int | None = None,
    hidden: Sequence[int] | None = None,
    weight_decay: float | None = None,
    l1: float = 2e-6,
    pretrain_op: str = "mul",
    pretrain_steps: int | None = None,
    seed: int | None = None,
    use_zoo: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, TrainedVariant]:
    """Train the ``modadd-mlp`` architecture on ``a + b mod P`` with different training strategies (Gao et al. 2024).

    Every variant follows the zoo recipe ``zoo.RECIPES["modadd-mlp"]`` (architecture and its
    initialisation, task split, optimiser, schedule, full batch, seed - hence the same starting
    weights) and changes only the regulariser:

    * ``"scratch"``: plain AdamW (weight decay 0.01);
    * ``"weight_decay"``: strong decoupled weight decay (default: the recipe's value);
    * ``"l1"``: weight decay 0.01 plus an L1 penalty ``l1 * sum |W|`` on every weight matrix
      (``TrainConfig.l1``), which drives many weights to zero;
    * ``"finetune"``: first ``pretrain_steps`` (default ``steps``) on ``a (pretrain_op) b mod P``
      (``"sub"``, ``"mul"`` or ``"sq_sum"``), then ``steps`` on addition, both plain AdamW.

    Args:
        steps, P, hidden, weight_decay, seed: override the recipe (``None`` keeps it); ``P`` and
            ``hidden`` change the architecture (``sizes = [2P, *hidden, P]``).
        use_zoo: when ``"weight_decay"`` is exactly the recipe (no override), load the zoo's
            ``modadd-mlp`` checkpoint instead of repeating its training run.

    Returns:
        ``name -> TrainedVariant`` (model in eval mode, train/test accuracy on addition).
    """
    from mechnb import zoo  # the zoo recipe is the reference training run

    recipe = zoo.RECIPES["modadd-mlp"]
    for v in variants:
        check_choice("variants", v, VARIANTS)
    check_choice("pretrain_op", pretrain_op, ["sub", "mul", "sq_sum"])
    P = check_positive_int("P", P, minimum=2) if P is not None else int(recipe.task_kwargs["P"])
    hid = list(hidden) if hidden is not None else list(recipe.model_kwargs["sizes"][1:-1])
    sizes = [2 * P] + [check_positive_int("hidden", h) for h in hid] + [P]
    rc = recipe.train
    steps = check_positive_int("steps", steps) if steps is not None else rc.steps
    pre_steps = check_positive_int("pretrain_steps", pretrain_steps) if pretrain_steps is not None else steps
    wd = check_positive_float("weight_decay", weight_decay) if weight_decay is not None else rc.weight_decay
    l1 = check_positive_float("l1", l1)
    seed = rc.seed if seed is None else seed
    dev = resolve_device(device)
    task = ModularArithmetic(P, "add", train_frac=recipe.task_kwargs.get("train_frac", 0.8),
                             seed=recipe.task_kwargs.get("seed", 0))
    base = {**rc.to_dict(), "steps": steps, "weight_decay": 0.01, "warmup_steps": min(rc.warmup_steps, steps // 10),
            "seed": seed, "log_every": steps}
    configs = {"scratch": TrainConfig(**base),
               "weight_decay": TrainConfig(**{**base, "weight_decay": wd}),
               "l1": TrainConfig(**{**base, "l1": l1}),
               "finetune": TrainConfig(**base)}
    descriptions = {"scratch": "plain AdamW (weight decay 0.01)",
                    "weight_decay": f"strong weight decay ({wd:g})",
                    "l1": f"L1 penalty on the weights ({l1:g})",
                    "finetune": f"pre-trained on a {pretrain_op} b mod {P}, fine-tuned on a + b"}
    is_recipe = (steps == rc.steps and sizes == list(recipe.model_kwargs["sizes"]) and wd == rc.weight_decay
                 and seed == rc.seed)
    out: dict[str, TrainedVariant] = {}
    for name in variants:
        if name == "weight_decay" and is_recipe and use_zoo and "modadd-mlp" in zoo.manifest().get("entries", {}):
            model = zoo.load("modadd-mlp", device=dev)[0]  # the very same training run, already done
            tr_acc, te_acc = _accuracy(model, task, dev)
            out[name] = TrainedVariant(name, descriptions[name] + " - the zoo's modadd-mlp", model, configs[name],
                                       tr_acc, te_acc)
            continue
        torch.manual_seed(seed)
        model = MLP(sizes).to(dev)
        if recipe.extra.get("init") == "identity":
            with torch.no_grad():
                model.identity_init_()
        pre = None
        if name == "finetune":
            pre_task = ModularArithmetic(P, pretrain_op, train_frac=task.train_frac, seed=task.seed)
            pre_cfg = TrainConfig(**{**base, "steps": pre_steps, "log_every": pre_steps})
            tr_acc, te_acc = _fit_modular(model, pre_task, pre_cfg, dev, progress, f"pretrain {pretrain_op}")
            pre = {"op": pretrain_op, "steps": pre_steps, "train_acc": tr_acc, "test_acc": te_acc}
        tr_acc, te_acc = _fit_modular(model, task, configs[name], dev, progress, name)
        out[name] = TrainedVariant(name, descriptions[name], model.eval(), configs[name], tr_acc, te_acc, pre)
    return out
