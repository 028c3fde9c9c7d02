"""Reading an SPD decomposition: paper metrics, CI patterns on one-hot inputs.

* :func:`mmcs_ml2r` - mean max cosine similarity and mean L2 ratio (the paper's TMS results).
* :func:`one_hot_causal_importances` + :func:`match_columns` - the CI heatmaps of the paper's
  figures: one input feature at magnitude 0.75, columns permuted by the Hungarian algorithm.
* :func:`identity_ci_error` - how far such a matched pattern is from the identity.
* :func:`dense_ci_error` - how far a one-hot CI pattern is from ``k`` dense columns (the
  residual MLPs' ``W_out``: one rank-``d_mlp`` component whose subcomponents are all on for
  every feature, SPD paper Sec. 4.3).
* :func:`alive_decisions` - the alive count of every layer with the gap around its threshold
  (:class:`AliveDecision`): a count is only as good as the gap between the smallest alive and
  the largest dead subcomponent's causal-importance maximum.

Sweeps of the decomposition over its coefficients live in :mod:`mechnb.experiments.spd`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

import math
from dataclasses import dataclass

from mechnb._checks import check_array, check_choice, check_positive_float, check_positive_int, check_tensor
from mechnb.spd.decompose import SPDResult

__all__ = [
    "AliveDecision",
    "alive_decisions",
    "mmcs_ml2r",
    "feature_matches",
    "one_hot_causal_importances",
    "match_columns",
    "identity_ci_error",
    "dense_ci_error",
    "keep_only_output",
    "summarize",
]


def _check_result(result: object) -> SPDResult:
    if not isinstance(result, SPDResult):
        raise TypeError(f"result: expected an SPDResult, got {type(result).__name__}")
    return result


@dataclass(frozen=True)
class AliveDecision:
    """The alive count of one layer and how clearly its threshold separates alive from dead.

    A subcomponent is alive when its largest causal importance over the evaluation inputs
    (``ci_max``) exceeds ``threshold``. The count is a *clear* decision when no ``ci_max`` lies
    in the band ``(threshold / margin, threshold * margin]`` around the threshold: then a
    different CPU's rounding, which moves a dead subcomponent's ``ci_max`` by far less than that,
    cannot change the count. Otherwise it is *thin* and should not be printed as a bare integer.

    Attributes:
        layer: the decomposed layer.
        n_alive: subcomponents with ``ci_max > threshold``.
        C: subcomponents in the layer.
        threshold, margin: the decision's settings.
        smallest_alive: the smallest ``ci_max`` among the alive (``nan`` if none).
        largest_dead: the largest ``ci_max`` among the dead (``nan`` if none).
    """

    layer: str
    n_alive: int
    C: int
    threshold: float
    margin: float
    smallest_alive: float
    largest_dead: float

    @property
    def gap(self) -> float:
        """``smallest_alive - largest_dead`` (``inf`` when every subcomponent is on one side)."""
        if math.isnan(self.smallest_alive) or math.isnan(self.largest_dead):
            return math.inf
        return self.smallest_alive - self.largest_dead

    @property
    def clear(self) -> bool:
        """No ``ci_max`` within ``(threshold / margin, threshold * margin]``."""
        lo, hi = self.threshold / self.margin, self.threshold * self.margin
        alive_ok = math.isnan(self.smallest_alive) or self.smallest_alive > hi
        dead_ok = math.isnan(self.largest_dead) or self.largest_dead <= lo
        return alive_ok and dead_ok

    def __str__(self) -> str:
        how = "clear" if self.clear else "THIN"
        return (f"{self.layer}: {self.n_alive} of {self.C} alive ({how}: smallest alive CI max "
                f"{self.smallest_alive:.3g}, largest dead {self.largest_dead:.3g}, threshold {self.threshold:g})")


def alive_decisions(result: SPDResult, threshold: float = 0.1, margin: float = 2.0,
                    x: torch.Tensor | None = None) -> dict[str, AliveDecision]:
    """``{layer: AliveDecision}``: the alive count of :meth:`SPDResult.alive` with its gap.

    Args:
        result: an :class:`SPDResult`.
        threshold: a subcomponent is alive when its largest causal importance exceeds it (paper: 0.1).
        margin: the decision is clear when no causal-importance maximum lies within a factor
            ``margin`` of the threshold (default 2: none in ``(0.05, 0.2]``).
        x: evaluate on this batch instead of the statistics recorded by :func:`decompose`.
    """
    result = _check_result(result)
    threshold = check_positive_float("threshold", threshold)
    margin = check_positive_float("margin", margin)
    if margin < 1:
        raise ValueError(f"margin: expected a factor >= 1, got {margin}")
    if x is not None:
        mx = {n: g.reshape(-1, g.shape[-1]).max(dim=0).values for n, g in result.causal_importances(x).items()}
    else:
        if not result.ci_max:
            raise ValueError("alive_decisions: no evaluation statistics recorded (config.n_eval_batches=0); pass x")
        mx = result.ci_max
    out = {}
    for n, v in mx.items():
        v = v.detach().double().cpu()
        alive = v > threshold
        out[n] = AliveDecision(
            layer=n, n_alive=int(alive.sum()), C=int(v.numel()), threshold=threshold, margin=margin,
            smallest_alive=float(v[alive].min()) if bool(alive.any()) else math.nan,
            largest_dead=float(v[~alive].max()) if bool((~alive).any()) else math.nan,
        )
    return out


def feature_matches(
    result: SPDResult, module: str, W: torch.Tensor | None = None, subset: str = "all", threshold: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every column ``W[:, j]`` find the subcomponent whose column ``j`` matches it best.

    Subcomponent ``c``'s contribution to column ``j`` is ``U[:, c] V[j, c]``. Returns
    ``(best_c (d_in,), cosine (d_in,), l2_ratio (d_in,))`` with ``cosine[j] = max_c cos(U_c V_jc, W_j)``
    and ``l2_ratio[j] = ||U_{c*} V_{j c*}|| / ||W_j||`` at the maximiser ``c*``.

    Args:
        subset: ``"all"`` - maximise over every subcomponent, as the paper's code does;
            ``"alive"`` - only over the alive ones (:meth:`SPDResult.alive` at ``threshold``).
            A dead subcomponent can be a tiny sliver exactly parallel to ``W_j``: with
            ``"all"`` it may win the cosine argmax by a hair and report an L2 ratio near 0.
    """
    result = _check_result(result)
    result._check_module(module)
    if W is None:
        W = result.target_weight(module)
    U, V = result.U[module], result.V[module]
    W = check_tensor("W", W, shape=(U.shape[0], V.shape[0]), dims="(d_out, d_in)", floating=True).detach().to(U)
    sub = U.unsqueeze(1) * V.unsqueeze(0)  # (d_out, d_in, C): column j of subcomponent c
    sub_norm = sub.norm(dim=0)  # (d_in, C)
    w_norm = W.norm(dim=0)  # (d_in,)
    if bool((w_norm == 0).any()):
        raise ValueError(f"W: column(s) {torch.nonzero(w_norm == 0).flatten().tolist()} are zero; cosine undefined")
    cos = torch.einsum("oic,oi->ic", sub, W) / (sub_norm * w_norm.unsqueeze(1)).clamp_min(1e-12)
    if subset not in ("all", "alive"):
        raise ValueError(f"subset: expected 'all' or 'alive', got {subset!r}")
    if subset == "alive":
        keep = result.alive(threshold)[module].to(cos.device)
        if not bool(keep.any()):
            raise ValueError(f"subset: no subcomponent of {module!r} is alive at threshold {threshold}")
        cos = cos.masked_fill(~keep.unsqueeze(0), -2.0)
    best_cos, best_c = cos.max(dim=1)
    ratio = sub_norm.gather(1, best_c.unsqueeze(1)).squeeze(1) / w_norm
    return best_c, best_cos, ratio


def mmcs_ml2r(
    result: SPDResult, module: str, W: torch.Tensor | None = None, subset: str = "all", threshold: float = 0.1
) -> tuple[float, float]:
    """Mean max cosine similarity and mean L2 ratio of ``module``'s subcomponents vs ``W``'s columns.

    As in the paper's TMS experiments: for each input feature ``j`` (column ``W[:, j]``, e.g. TMS
    ``linear1``'s embedding of feature ``j``), take the subcomponent whose ``j``-th column
    ``U_c V_jc`` has the highest cosine similarity with it; MMCS is the mean of those maxima,
    ML2R the mean ratio of their norms. A perfect decomposition of TMS gives ``(1, 1)``.

    Args:
        result: an :class:`SPDResult`.
        module: a decomposed layer.
        W: the reference weight ``(d_out, d_in)``; default the target layer's weight.
        subset, threshold: which subcomponents may match (see :func:`feature_matches`).
    """
    _, cos, ratio = feature_matches(result, module, W, subset, threshold)
    return float(cos.mean()), float(ratio.mean())


@torch.no_grad()
def one_hot_causal_importances(
    result: SPDResult, n_features: int | None = None, magnitude: float = 0.75, kind: str = "clipped"
) -> dict[str, np.ndarray]:
    """Causal importances on the one-hot inputs ``magnitude * e_i``: ``{layer: (n_features, C)}``.

    Row ``i`` is the input with only feature ``i`` active (the paper's CI plots use 0.75).
    """
    result = _check_result(result)
    mag = check_positive_float("magnitude", magnitude)
    if n_features is None:
        n_features = getattr(result.model, "n_features", None)
        if n_features is None:
            raise ValueError("n_features: the model has no n_features attribute; pass n_features")
    n = check_positive_int("n_features", n_features)
    x = torch.eye(n, device=result._device(), dtype=result.components.dtype) * mag
    ci = result.causal_importances(x, kind=kind)
    return {k: v.cpu().numpy() for k, v in ci.items()}


def match_columns(ci: np.ndarray | torch.Tensor, pattern: str = "identity") -> np.ndarray:
    """Column order that puts the largest causal importances on the diagonal (Hungarian algorithm).

    Args:
        ci: ``(n_inputs, C)`` causal importances (``n_inputs <= C`` for ``"identity"``).
        pattern: ``"identity"`` - the Hungarian matching below; ``"dense"`` - simply the columns
            in decreasing order of their total CI (the order :func:`dense_ci_error` uses).

    Returns:
        A permutation of ``range(C)``: the first ``n_inputs`` entries are the columns matched to
        inputs ``0..n_inputs-1`` (``scipy.optimize.linear_sum_assignment`` maximising the
        matched sum), followed by the unmatched columns in decreasing order of their total CI.
    """
    arr = check_array("ci", ci, ndim=2)
    check_choice("pattern", pattern, ["identity", "dense"])
    if pattern == "dense":
        return np.argsort(-arr.sum(axis=0), kind="stable")
    n, C = arr.shape
    if n > C:
        raise ValueError(f"ci: expected at most as many rows as columns (n_inputs <= C), got shape {arr.shape}")
    rows, cols = linear_sum_assignment(-arr)
    order = np.empty(n, dtype=np.int64)
    order[rows] = cols
    rest = np.setdiff1d(np.arange(C), cols)
    rest = rest[np.argsort(-arr[:, rest].sum(axis=0), kind="stable")]
    return np.concatenate([order, rest])


def identity_ci_error(ci: np.ndarray | torch.Tensor, threshold: float = 0.1) -> dict[str, float]:
    """Compare a matched one-hot CI pattern with the identity.

    Args:
        ci: ``(n_inputs, C)`` causal importances, columns already ordered by :func:`match_columns`.
        threshold: an entry counts as "on" above this value.

    Returns:
        ``{"n_offdiag_above": number of entries outside the diagonal above threshold,
        "n_diag_below": diagonal entries at or below threshold, "mean_abs_error": mean |ci - I|}``
        where ``I`` is the ``(n_inputs, C)`` identity.
    """
    arr = check_array("ci", ci, ndim=2)
    thr = check_positive_float("threshold", threshold, allow_zero=True)
    n, C = arr.shape
    eye = np.eye(n, C)
    diag = np.diagonal(arr[:, :n]) if n <= C else np.diagonal(arr)
    return {
        "n_offdiag_above": int(((arr > thr) & (eye == 0)).sum()),
        "n_diag_below": int((diag <= thr).sum()),
        "mean_abs_error": float(np.abs(arr - eye).mean()),
    }


def dense_ci_error(ci: np.ndarray | torch.Tensor, k: int, threshold: float = 0.1) -> dict[str, float]:
    """Compare a one-hot CI pattern with ``k`` dense columns and nothing else.

    The SPD paper (Sec. 4.3, the Toy Model of Compressed Computation) finds that a residual MLP's
    output matrix ``W_out`` is *not* split per feature: SPD decomposes it into ``d_mlp``
    subcomponents that are causally important for (almost) every input feature - together one
    rank-``d_mlp`` component, the whole matrix. The authors' code scores it the same way (a
    "dense" target with ``k = d_mlp``). Columns are ranked by their total CI; the ``k`` largest
    are the dense part.

    Args:
        ci: ``(n_inputs, C)`` causal importances on one-hot inputs (any column order).
        k: the number of dense columns expected (``1 <= k <= C``).
        threshold: an entry counts as "on" above this value.

    Returns:
        ``{"n_outside_above": entries above threshold outside the k dense columns,
        "n_dense_below": entries of the k dense columns at or below threshold,
        "dense_fraction": fraction of the k dense columns' entries above threshold,
        "n_outside_columns_on": columns outside the k with any entry above threshold}``.
        A perfect match has 0, 0, 1.0, 0.
    """
    arr = check_array("ci", ci, ndim=2)
    n, C = arr.shape
    k = check_positive_int("k", k)
    if k > C:
        raise ValueError(f"k: expected at most C = {C} dense columns, got {k}")
    thr = check_positive_float("threshold", threshold, allow_zero=True)
    order = match_columns(arr, pattern="dense")
    dense, rest = arr[:, order[:k]], arr[:, order[k:]]
    return {
        "n_outside_above": int((rest > thr).sum()),
        "n_dense_below": int((dense <= thr).sum()),
        "dense_fraction": float((dense > thr).mean()),
        "n_outside_columns_on": int((rest > thr).any(axis=0).sum()),
    }


def _tied_group(result: SPDResult, module: str) -> list[str]:
    """``module`` plus every decomposed layer that shares its subcomponent indices through a tie."""
    root = result.tied.get(module, module)
    return [n for n in result.modules if n == root or result.tied.get(n) == root]


@torch.no_grad()
def keep_only_output(
    result: SPDResult, x: torch.Tensor, module: str, c: int, with_tied: bool = True
) -> torch.Tensor:
    """Model output on ``x`` when ``module`` keeps only subcomponent ``c`` (mask ``e_c``).

    With ``with_tied`` the layers tied to ``module`` (TMS: ``linear1`` / ``linear2``) keep their
    subcomponent ``c`` too - the same rank-one piece of the shared weight; every other
    decomposed layer keeps its target weight.
    """
    result = _check_result(result)
    result._check_module(module)
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= int(c) < result.C:
        raise ValueError(f"c: expected a subcomponent index in [0, {result.C}), got {c!r}")
    dtype = result.components.dtype
    e = torch.zeros(result.C, device=result._device(), dtype=dtype)
    e[int(c)] = 1.0
    layers = _tied_group(result, module) if with_tied else [module]
    return result.masked_forward(x, {n: e for n in layers})


def summarize(result: SPDResult, module: str, W: torch.Tensor | None = None, threshold: float = 0.1,
              magnitude: float = 0.75) -> dict[str, float]:
    """The numbers the notebook and the sweep widget print for one layer of one run.

    Returns ``n_alive``, ``mmcs``, ``ml2r``, the final (last-100-step mean) losses, and the
    identity error of the matched one-hot CI pattern (:func:`identity_ci_error`).
    """
    result = _check_result(result)
    mm, ml = mmcs_ml2r(result, module, W)
    final = result.final_losses()
    ci = one_hot_causal_importances(result, magnitude=magnitude)[module]
    n_in = ci.shape[0]
    err = identity_ci_error(ci[:, match_columns(ci)] if n_in <= ci.shape[1] else ci, threshold)
    out = {"n_alive": float(result.n_alive(threshold)[module]), "mmcs": mm, "ml2r": ml}
    out.update({k: final[k] for k in ("stochastic_recon", "stochastic_recon_layerwise", "importance_minimality",
                                      "faithfulness") if k in final})
    out.update({f"onehot_{k}": float(v) for k, v in err.items()})
    return out
