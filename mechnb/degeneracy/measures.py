"""The three kinds of internal degeneracy of Bushnaq et al. 2024 and the effective parameter count.

Paper: *Using Degeneracy in the Loss Landscape for Mechanistic Interpretability*
(https://arxiv.org/abs/2405.10927). Section 2 relates the behavioural loss
``L_B(w) = (1/n) Σ_x |f(x; w) - f(x; w*)|²`` to the Gauss-Newton matrix ``J_wᵀ J_w`` and its
rank to an *effective parameter count*; Section 3 names three internal structures that leave
directions in parameter space free (nullity of the Gauss-Newton matrix):

1. **activations** in a low-dimensional subspace: the uncentred Gram matrix
   ``G^l = (1/n) Σ_x f^l(x) f^l(x)ᵀ`` (bias folded in) has nullity ``a_l``; the outgoing weights
   of layer ``l`` can move in ``a_l · d_{l+1}`` directions without changing any activation
   downstream (Sec. 3.1);
2. **Jacobians** in a low-dimensional subspace: ``M^l = (1/n) Σ_x Jᵀ J`` with ``J = ∂f^L/∂p^l``
   has nullity ``j_l``; the incoming weights can move in ``j_l · d_{l-1}`` directions (Sec. 3.2);
3. **synchronised nonlinearities**: ``m`` ReLUs that are on for exactly the same inputs act as
   one linear block, so any invertible mixing ``A`` of their inputs undone on their outputs
   (``W_in -> A W_in``, ``W_out -> W_out A⁻¹``) is free: ``m²`` directions, of which ``m`` are
   the per-neuron rescalings every ReLU has anyway, so ``m(m - 1)`` new ones (Sec. 3.3).

Layer indices follow :mod:`mechnb.degeneracy._mlp` (0 = input, ``L`` = output).

Numerical ranks are :class:`mechnb._linalg.RankDecision` s on singular values. Every Gram matrix
``(1/n) Σ_x a(x) a(x)ᵀ`` is ranked through the singular values of its data matrix ``A / sqrt(n)``
(rows ``a(x)``), never through the eigenvalues of the formed product: exact zeros then come out
at ``eps · σ_max`` instead of ``sqrt(eps) · σ_max``. A singular value counts as zero when it is
``<= rtol · σ_max``, with ``rtol`` by default numpy's ``matrix_rank`` rule ``max(shape) · eps``;
each decision keeps its *gap* (smallest kept / largest dropped singular value), and
:meth:`DegeneracyReport.table` marks a count whose gap is below ``1e3`` as ``~N`` (thin: it could
change with the kernel, the threads or the machine). :func:`spectrum_nullity` ranks eigenvalues
a caller computed (``sqrt(λ / λ_max) <= rtol``, ``rtol = 1e-6`` by default, above the
``sqrt(eps)`` round-off of an eigensolver on a formed Gram matrix).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mechnb._checks import check_array, check_float_input, check_materialized, check_positive_float, check_tensor
from mechnb._linalg import DEFAULT_MIN_GAP, RankDecision, rank_decision
from mechnb.degeneracy._mlp import (
    check_inputs,
    check_layer,
    check_mlp,
    mlp_forward,
    output_jacobian,
)
from mechnb.io import saveable

__all__ = [
    "gram_spectrum",
    "spectrum_nullity",
    "spectrum_decision",
    "jacobian_gram",
    "relu_synchrony",
    "EffectiveParameterCount",
    "effective_parameter_count",
    "LayerDegeneracy",
    "DegeneracyReport",
    "degeneracy_report",
]

DEFAULT_RTOL = 1e-6


def _as_float64(name: str, x: Any) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(check_array(name, x))
    check_tensor(name, x, ndim=2, dims="(n_samples, n_features)")
    if x.dtype == torch.bool:
        x = x.to(torch.float64)
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8)):
        raise TypeError(f"{name}: expected a real-valued tensor, got dtype {x.dtype}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name}: expected at least one sample and one feature, got shape {tuple(x.shape)}")
    return x.detach().to(torch.float64)


def _with_one(acts: torch.Tensor, with_bias: bool) -> torch.Tensor:
    if with_bias:
        acts = torch.cat([acts, torch.ones(acts.shape[0], 1, dtype=acts.dtype, device=acts.device)], dim=1)
    return acts


def _data_decision(A: torch.Tensor, rtol: float | None) -> RankDecision:
    """Rank of the Gram matrix ``(1/n) AᵀA`` from the singular values of ``A / sqrt(n)`` (rows = samples)."""
    if A.numel() == 0:
        return rank_decision(np.zeros(A.shape[1]), rtol=rtol)
    sv = torch.linalg.svdvals(A / A.shape[0] ** 0.5).cpu().numpy()
    sv = np.concatenate([sv, np.zeros(A.shape[1] - sv.size)])  # fewer samples than columns: the rest are 0
    return rank_decision(sv, rtol=rtol, shape=tuple(A.shape), dtype=torch.float64)


def _worst(decisions: Sequence[RankDecision]) -> RankDecision | None:
    """The decision with the thinnest gap (``None`` for none)."""
    return min(decisions, key=lambda d: d.gap, default=None)


def gram_spectrum(acts: torch.Tensor | np.ndarray, with_bias: bool = True) -> np.ndarray:
    """Eigenvalues of the uncentred activation Gram matrix, largest first (2405.10927 Sec. 3.1).

    ``G = (1/n) Σ_x f(x) f(x)ᵀ`` with ``f(x)`` extended by a constant 1 when ``with_bias`` (the
    next layer's bias folded into its weights, so ``G`` is the Gram of what that layer reads).

    Args:
        acts: ``(n, d)`` real activations (a tensor or an array; integers and bools are cast to
            float64, complex values raise ``TypeError``); values so large that ``G`` overflows
            float64 (``|acts| ≳ 1e154``) raise ``ValueError``.
        with_bias: append the constant-1 feature (``G`` is then ``(d + 1, d + 1)``).

    Returns:
        ``(d [+1],)`` float64 eigenvalues in descending order, computed as the squared singular
        values of ``f / sqrt(n)`` (so exact zeros come out at ``~eps² · λ_max``, not at the
        ``eps · λ_max`` round-off of an eigensolver on ``G``). Count the zero ones with
        :func:`spectrum_nullity` (or :func:`spectrum_decision` for the gap).
    """
    if not isinstance(with_bias, bool):
        raise TypeError(f"with_bias: expected a bool, got {type(with_bias).__name__}")
    f = _with_one(_as_float64("acts", acts), with_bias)
    scale = float(f.abs().max())
    if scale == 0.0:
        return np.zeros(f.shape[1])
    # SVD of f / (scale·sqrt(n)): entries in [-1, 1], so LAPACK neither overflows nor fails to converge
    sv = torch.linalg.svdvals(f / (scale * f.shape[0] ** 0.5)).cpu().numpy()
    with np.errstate(over="ignore"):
        ev = (sv * scale) ** 2
    if not np.all(np.isfinite(ev)):
        raise ValueError(f"acts: values up to {scale:.3g} make the Gram eigenvalues (~{scale:.1g}²) overflow float64 "
                         f"(largest {np.finfo(np.float64).max:.3g}); rescale the activations")
    return np.concatenate([ev, np.zeros(f.shape[1] - sv.size)])


def spectrum_decision(eigenvalues: np.ndarray | Sequence[float], rtol: float = DEFAULT_RTOL, *,
                      min_gap: float = DEFAULT_MIN_GAP) -> RankDecision:
    """Rank decision on a PSD matrix's eigenvalues in singular-value scale, with its gap.

    ``σ_i = sqrt(max(λ_i, 0))`` counts as zero when ``σ_i <= rtol · σ_max`` (all of them if
    ``λ_max <= 0``); the gap is the ratio of the smallest kept to the largest dropped ``σ``.

    Args:
        eigenvalues: ``(d,)`` eigenvalues, any order (round-off negatives count as 0).
        rtol: relative threshold on ``sqrt(λ / λ_max)``.
        min_gap: gaps below this make the decision thin.

    Returns:
        A :class:`mechnb._linalg.RankDecision` (``.nullity``, ``.gap``, ``.thin``, ``.label()``).
    """
    ev = check_array("eigenvalues", eigenvalues, ndim=1)
    rtol = check_positive_float("rtol", rtol)
    return rank_decision(np.sqrt(np.clip(ev, 0, None)), rtol=rtol, min_gap=min_gap)


def spectrum_nullity(eigenvalues: np.ndarray | Sequence[float], rtol: float = DEFAULT_RTOL) -> int:
    """Number of zero eigenvalues of a PSD matrix: ``sqrt(λ_i / λ_max) <= rtol`` (all of them if ``λ_max = 0``).

    The count of :func:`spectrum_decision`, which also reports how clear it is.
    """
    return spectrum_decision(eigenvalues, rtol).nullity


def jacobian_gram(model: nn.Module, inputs: torch.Tensor, layer: int, *, wrt: str = "post",
                  with_bias: bool = False) -> np.ndarray:
    """Jacobian Gram matrix ``M' = (1/n) Σ_x J(x)ᵀ J(x)`` of the model output w.r.t. a layer.

    ``J(x) = ∂f^L(x) / ∂f^l(x)`` (``wrt="post"``, the layer's activations) or
    ``∂f^L / ∂p^l`` (``wrt="pre"``, its pre-activations; 2405.10927 Sec. 3.2 uses these for the
    free directions of the incoming weights: a dead ReLU has a zero column here).

    Args:
        model: a :class:`mechnb.models.MLP`.
        inputs: ``(n, sizes[0])`` data.
        layer: layer index, 0 = input ... ``L`` = output (for the output ``J = I``).
        wrt: ``"post"`` or ``"pre"`` (``"pre"`` needs ``layer >= 1``).
        with_bias: (``"post"``, ``layer < L``) add the folded constant 1 of this layer as a last
            coordinate. The constant flows through the network (``[f, 1] -> [σ(W f + b), 1]``), so
            its column is the derivative through this layer's bias *and* every later bias — the
            convention of :func:`mechnb.degeneracy.interaction_basis`.

    Returns:
        ``(d_l [+1], d_l [+1])`` float64 PSD matrix.
    """
    check_mlp(model)
    check_inputs(model, inputs)
    check_layer(model, layer)
    if wrt not in ("post", "pre"):
        raise ValueError(f"wrt: expected 'post' or 'pre', got {wrt!r}")
    if wrt == "pre" and layer == 0:
        raise ValueError("layer: wrt='pre' needs layer >= 1 (layer 0 is the input and has no pre-activations)")
    if with_bias and (wrt == "pre" or layer == len(model.layers)):
        raise ValueError("with_bias: only defined for wrt='post' and a layer that feeds a linear map (layer < L)")
    _, pre = mlp_forward(model, inputs)
    J = output_jacobian(model, pre, layer, wrt=wrt, with_bias=with_bias)
    M = torch.einsum("noi,noj->ij", J, J) / J.shape[0]
    return (0.5 * (M + M.T)).cpu().numpy()


def relu_synchrony(preacts: torch.Tensor | np.ndarray) -> list[list[int]]:
    """Groups of ReLUs that are on (``p > 0``) for exactly the same data points (2405.10927 Sec. 3.3).

    Neurons that are never on are left out (a dead neuron is a degeneracy of its own, counted by
    the Gram and Jacobian nullities).

    Args:
        preacts: ``(n, d)`` pre-activations of one layer.

    Returns:
        Groups (sorted lists of neuron indices, each of size >= 2), ordered by their first index.
    """
    p = _as_float64("preacts", preacts)
    on = (p > 0).cpu().numpy()
    alive = np.flatnonzero(on.any(axis=0))
    groups: dict[bytes, list[int]] = {}
    for i in alive:
        groups.setdefault(np.packbits(on[:, i]).tobytes(), []).append(int(i))
    return sorted((g for g in groups.values() if len(g) >= 2), key=lambda g: g[0])


# --------------------------------------------------------------------------------------
# Effective parameter count (behavioural Gauss-Newton rank)
# --------------------------------------------------------------------------------------
@saveable()
@dataclass
class EffectiveParameterCount:
    """Rank of the behavioural Gauss-Newton matrix ``J_wᵀ J_w`` (2405.10927 Sec. 2).

    Attributes:
        rank: numerical rank (the effective parameter count at second order).
        n_params: number of parameters considered.
        nullity: ``n_params - rank``, the number of free directions.
        singular_values: singular values of the output-parameter Jacobian, descending.
        params: names of the parameters considered.
        decision: the rank decision behind ``rank``, with its gap (smallest kept / largest
            dropped singular value; see :class:`mechnb._linalg.RankDecision`).
    """

    rank: int
    n_params: int
    nullity: int
    singular_values: np.ndarray
    params: list[str] = field(default_factory=list)
    decision: RankDecision | None = None

    @property
    def gap(self) -> float:
        """Gap of the rank decision (``inf`` when unknown)."""
        return self.decision.gap if self.decision is not None else float("inf")

    @property
    def thin(self) -> bool:
        """Whether the rank decision's gap is below its ``min_gap`` (the count could flip with round-off)."""
        return self.decision is not None and self.decision.thin

    def __repr__(self) -> str:
        return f"EffectiveParameterCount(rank={self.rank}, n_params={self.n_params}, nullity={self.nullity})"


def _output_param_jacobian(model: nn.Module, inputs: torch.Tensor, names: list[str], chunk: int = 512) -> torch.Tensor:
    """``(n * d_out, P)`` Jacobian of the flattened outputs w.r.t. the named parameters, float64."""
    m64 = copy.deepcopy(model).to(torch.float64)
    m64.eval()
    dev = next(m64.parameters()).device
    params = dict(m64.named_parameters())
    chosen = [params[k] for k in names]
    x = inputs.detach().to(dev, torch.float64)
    out = m64(x).reshape(-1)
    N = out.numel()
    rows = []
    for s in range(0, N, chunk):
        k = min(chunk, N - s)
        V = torch.zeros(k, N, dtype=torch.float64, device=dev)
        V[torch.arange(k), torch.arange(s, s + k)] = 1.0
        grads = torch.autograd.grad(out, chosen, grad_outputs=V, is_grads_batched=True, retain_graph=True,
                                    allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros(k, *p.shape, dtype=torch.float64, device=dev))
                               .reshape(k, -1) for g, p in zip(grads, chosen)], dim=1))
    return torch.cat(rows, dim=0)


def effective_parameter_count(model: nn.Module, inputs: torch.Tensor, rtol: float | None = None, *,
                              params: Sequence[str] | None = None) -> EffectiveParameterCount:
    """Rank and nullity of the behavioural Gauss-Newton matrix ``(1/n) Σ_x J_w(x)ᵀ J_w(x)``.

    ``J_w(x) = ∂f(x; w)/∂w`` is the Jacobian of the model outputs w.r.t. the parameters; the
    behavioural loss is ``L_B(w* + δ) ≈ δᵀ (Σ_x J_wᵀ J_w) δ / n`` (2405.10927 Eq. 3), so its
    null space is the set of directions that do not change the network's outputs on ``inputs``
    to first order. The rank is computed from the singular values of the stacked
    ``(n · d_out, P)`` Jacobian in float64.

    Args:
        model: any ``nn.Module`` mapping ``inputs`` to outputs (``(n, ...)``), with finite,
            materialised (not ``meta``) parameters.
        inputs: the data the behaviour is measured on: a real floating tensor of any precision
            (cast to float64, as the model is); integer and complex tensors raise ``TypeError``.
        rtol: singular values ``<= rtol · max`` count as zero; default numpy's ``matrix_rank``
            rule ``max(n · d_out, P) · eps(float64)``.
        params: restrict to these parameter names (e.g. one weight block); default all.

    Returns:
        An :class:`EffectiveParameterCount` (``.decision`` holds the gap of the rank decision).
    """
    check_materialized(model, "model", finite=True)
    check_tensor("inputs", inputs)
    inputs = check_float_input("inputs", inputs, torch.float64)  # dtype policy: real floats, computed in float64
    if inputs.ndim < 1 or inputs.shape[0] < 1:
        raise ValueError(f"inputs: expected a batch of at least one sample, got shape {tuple(inputs.shape)}")
    rtol = check_positive_float("rtol", rtol) if rtol is not None else None
    all_names = [k for k, _ in model.named_parameters()]
    if params is None:
        names = all_names
    else:
        if isinstance(params, str) or not isinstance(params, Sequence) or not params:
            raise TypeError(f"params: expected a non-empty list of parameter names, got {params!r}")
        unknown = [k for k in params if k not in all_names]
        if unknown:
            raise ValueError(f"params: unknown parameter names {unknown}; the model has {all_names}")
        names = list(params)
    J = _output_param_jacobian(model, inputs, names)
    sv = torch.linalg.svdvals(J).cpu().numpy() if J.numel() else np.zeros(0)
    P = J.shape[1]
    # fewer output rows than parameters: the missing singular values are exact zeros
    dec = rank_decision(np.concatenate([sv, np.zeros(max(P - sv.size, 0))]), rtol=rtol, shape=tuple(J.shape),
                        dtype=torch.float64)
    return EffectiveParameterCount(rank=dec.rank, n_params=P, nullity=P - dec.rank, singular_values=sv, params=names,
                                   decision=dec)


# --------------------------------------------------------------------------------------
# Degeneracy report
# --------------------------------------------------------------------------------------
@saveable()
@dataclass
class LayerDegeneracy:
    """The degeneracies of one layer ``l`` and the free directions each predicts.

    Attributes:
        layer: layer index (0 = input, ``L`` = output).
        width: ``d_l``.
        activation_nullity: nullity ``a_l`` of the Gram matrix of ``[f^l, 1]`` (bias folded in);
            ``None`` for the output layer (it feeds no weights).
        free_activation: ``a_l · d_{l+1}`` free outgoing-weight directions.
        jacobian_nullity: nullity ``j_l`` of ``(1/n) Σ Jᵀ J`` with ``J = ∂f^L/∂p^l``; ``None`` for
            the input layer (and 0 for the output, where ``J = I``).
        free_jacobian: ``j_l · (d_{l-1} [+1]) - a_{l-1} j_l`` free incoming-weight directions (the
            last term removes directions already counted by ``a_{l-1}``).
        free_restricted: ``Σ_i (n_i - a_{l-1})`` over the neurons ``i`` the output reads, where
            ``n_i`` is the nullity of ``G_i = (1/n) Σ_x |∂f^L/∂p^l_i|² f̃^{l-1} f̃^{l-1 ᵀ}``: the
            previous layer's activations *on the inputs where neuron i matters* (ReLU on and read
            downstream) can span less than all of them, freeing more of its incoming weights.
            This refines kind 1 per neuron; it is 0 when every neuron sees the full activation span.
        sync_groups: groups of synchronised ReLUs in this (hidden) layer.
        free_sync: ``Σ_g m_g (r_g - 1)`` with ``m_g`` the group size and ``r_g`` the rank of the
            group's activations (``m(m-1)`` for linearly independent neurons; 0 for copies).
        rescalings: neurons with a positive-rescaling symmetry (ReLUs that fire at least once,
            or every neuron of a linear layer) that the output reads (non-zero Jacobian column):
            one free direction each.
        measured_block_nullity: Gauss-Newton nullity of ``layers[l]`` alone (``None`` for the output).
        decisions: the rank decisions behind these counts, with their gaps, keyed ``"activation"``
            (Gram of ``[f^l, 1]``), ``"jacobian"`` (``M`` w.r.t. ``p^l``), ``"read"`` (which neurons
            the output reads: Jacobian column norms), ``"restricted"`` and ``"sync"`` (the thinnest
            over neurons / groups) and ``"block"`` (Gauss-Newton of ``layers[l]``), where they apply.
    """

    layer: int
    width: int
    activation_nullity: int | None
    free_activation: int
    jacobian_nullity: int | None
    free_jacobian: int
    free_restricted: int
    sync_groups: list[list[int]]
    free_sync: int
    rescalings: int
    measured_block_nullity: int | None
    decisions: dict[str, RankDecision] = field(default_factory=dict)

    @property
    def predicted(self) -> int:
        return self.free_activation + self.free_jacobian + self.free_restricted + self.free_sync + self.rescalings

    def thin(self, *keys: str) -> bool:
        """Whether any of the named decisions (all of them if none named) has a thin gap."""
        return any(d.thin for k, d in self.decisions.items() if not keys or k in keys)


# which decisions each table column depends on (a thin one marks the cell with "~")
_COLUMN_DECISIONS = {"act_nullity": ("activation",), "free_act": ("activation",), "jac_nullity": ("jacobian",),
                     "free_jac": ("jacobian", "activation"), "free_restricted": ("restricted", "read", "activation"),
                     "free_sync": ("sync", "read"), "rescalings": ("read",), "measured_block": ("block",)}


@saveable()
@dataclass
class DegeneracyReport:
    """Per-layer degeneracies, their predicted free directions and the measured GN nullity."""

    layers: list[LayerDegeneracy]
    gauss_newton: EffectiveParameterCount

    @property
    def predicted_nullity(self) -> int:
        """Sum over layers of the predicted free directions (assumes the kinds do not overlap)."""
        return sum(r.predicted for r in self.layers)

    @property
    def measured_nullity(self) -> int:
        return self.gauss_newton.nullity

    def decisions(self) -> list[tuple[str, RankDecision]]:
        """Every rank decision of the report, ``("layer 1 activation", decision)``, the total Gauss-Newton last."""
        out = [(f"layer {r.layer} {k}", d) for r in self.layers for k, d in r.decisions.items()]
        if self.gauss_newton.decision is not None:
            out.append(("Gauss-Newton", self.gauss_newton.decision))
        return out

    def thin_decisions(self) -> list[tuple[str, RankDecision]]:
        """The decisions whose gap is below their ``min_gap``: counts that could flip with round-off."""
        return [(k, d) for k, d in self.decisions() if d.thin]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer, for tables."""
        return [dict(layer=r.layer, width=r.width, act_nullity=r.activation_nullity, free_act=r.free_activation,
                     jac_nullity=r.jacobian_nullity, free_jac=r.free_jacobian, free_restricted=r.free_restricted,
                     sync_groups=len(r.sync_groups), free_sync=r.free_sync, rescalings=r.rescalings,
                     predicted=r.predicted, measured_block=r.measured_block_nullity) for r in self.layers]

    def table(self) -> str:
        """A fixed-width text table (deterministic, for notebooks).

        A count that rests on a thin rank decision (gap below ``min_gap``, see
        :meth:`thin_decisions`) is printed as ``~N``; the last line says whether every decision
        was clear, or lists the thin ones with their gaps.
        """
        cols = ["layer", "width", "act_nullity", "free_act", "jac_nullity", "free_jac", "free_restricted",
                "sync_groups", "free_sync", "rescalings", "predicted", "measured_block"]
        rows = self.rows()

        def fmt(layer: LayerDegeneracy, c: str, v: Any) -> str:
            if v is None:
                return "-"
            if c == "predicted":  # rests on every decision of its row
                thin = layer.thin()
            else:
                keys = _COLUMN_DECISIONS.get(c, ())
                thin = bool(keys) and layer.thin(*keys)
            return f"~{v}" if thin else str(v)

        cells = [[fmt(layer, c, r[c]) for c in cols] for layer, r in zip(self.layers, rows)]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        gn = self.gauss_newton
        measured = f"~{self.measured_nullity}" if gn.thin else str(self.measured_nullity)
        lines.append(f"predicted free directions: {self.predicted_nullity}   measured Gauss-Newton nullity: "
                     f"{measured} (of {gn.n_params} parameters, rank {gn.rank})")
        thin = self.thin_decisions()
        min_gap = min((d.min_gap for _, d in self.decisions()), default=DEFAULT_MIN_GAP)
        if thin:
            lines.append(f"thin rank decisions (gap < {min_gap:.0e}, counts marked ~ could change with round-off): "
                         + ", ".join(f"{k} (gap {d.gap:.0e})" for k, d in thin))
        else:
            lines.append(f"rank decisions: all clear (every gap between kept and dropped singular values >= "
                         f"{min_gap:.0e})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"DegeneracyReport(layers={len(self.layers)}, predicted_nullity={self.predicted_nullity}, "
                f"measured_nullity={self.measured_nullity})")


def degeneracy_report(model: nn.Module, inputs: torch.Tensor, rtol: float | None = None) -> DegeneracyReport:
    """The three kinds of degeneracy per layer, their predicted free directions, and the measured nullity.

    For a :class:`mechnb.models.MLP` with ``L`` linear layers, see :class:`LayerDegeneracy`
    for the per-layer quantities (2405.10927 Sec. 3.1-3.3, plus a per-neuron refinement of the
    activation kind: the activations a neuron sees on the inputs where it matters). The measured value is the nullity of
    the behavioural Gauss-Newton matrix (:func:`effective_parameter_count`), in total and per
    weight block. The prediction adds the kinds up; when they overlap (a neuron that is both
    dead and duplicated, say) it over-counts, which the comparison makes visible.

    Every rank is a :class:`mechnb._linalg.RankDecision` on the singular values of a data
    matrix (see the module docstring), kept in ``LayerDegeneracy.decisions`` with its gap;
    ``.table()`` marks counts that rest on a thin decision.

    Args:
        model: a :class:`mechnb.models.MLP`.
        inputs: ``(n, sizes[0])`` data.
        rtol: relative singular-value threshold for every rank; default numpy's ``matrix_rank``
            rule ``max(shape) · eps(float64)`` for each matrix.

    Returns:
        A :class:`DegeneracyReport` (``.table()`` prints it).
    """
    check_mlp(model)
    check_inputs(model, inputs)
    rtol = check_positive_float("rtol", rtol) if rtol is not None else None
    acts, pre = mlp_forward(model, inputs)
    L = len(model.layers)
    bias = model.bias
    sizes = model.sizes
    decisions: list[dict[str, RankDecision]] = [{} for _ in range(L + 1)]
    act_null: list[int | None] = []
    for l in range(L + 1):
        if l < L:
            decisions[l]["activation"] = _data_decision(_with_one(acts[l], bias), rtol)
            act_null.append(decisions[l]["activation"].nullity)
        else:
            act_null.append(None)
    jac_null: list[int | None] = [None]
    read: list[torch.Tensor | None] = [None]  # neurons whose pre-activation the output depends on
    restricted: list[int] = [0]
    n = inputs.shape[0]
    for l in range(1, L + 1):
        if l == L:
            jac_null.append(0)
            read.append(None)
            restricted.append(0)
            continue
        J = output_jacobian(model, pre, l, wrt="pre")  # (n, d_out, d_l)
        J_rows = J.reshape(-1, J.shape[2])  # M = (1/n) Σ_x JᵀJ = (1/n) J_rowsᵀ J_rows
        decisions[l]["jacobian"] = _data_decision(J_rows, rtol)
        jac_null.append(decisions[l]["jacobian"].nullity)
        # the neurons the output reads: non-zero Jacobian columns (a decision of its own)
        col = J_rows.norm(dim=0).cpu().numpy()
        decisions[l]["read"] = rank_decision(col, rtol=rtol, shape=tuple(J_rows.shape), dtype=torch.float64)
        live = torch.as_tensor(col > decisions[l]["read"].threshold, device=J.device)
        read.append(live)
        # per neuron: the previous layer's Gram restricted to (weighted by) where the neuron matters,
        # G_i = (1/n) Σ_x w_i(x) f̃ f̃ᵀ, ranked through its data matrix sqrt(w_i) f̃
        weight = (J**2).sum(1)  # (n, d_l)
        f_prev = _with_one(acts[l - 1], bias)
        a_prev = act_null[l - 1] or 0
        extra = 0
        per_neuron = []
        for i in torch.nonzero(live).flatten().tolist():
            per_neuron.append(_data_decision(f_prev * weight[:, i : i + 1].sqrt(), rtol))
            extra += max(0, per_neuron[-1].nullity - a_prev)
        if per_neuron:
            decisions[l]["restricted"] = _worst(per_neuron)
        restricted.append(extra)

    gn = effective_parameter_count(model, inputs, rtol)
    rows: list[LayerDegeneracy] = []
    for l in range(L + 1):
        a = act_null[l]
        free_act = a * sizes[l + 1] if a is not None else 0
        j = jac_null[l]
        free_jac = 0
        if j is not None and l >= 1:
            a_prev = act_null[l - 1] or 0
            free_jac = j * (sizes[l - 1] + int(bias)) - a_prev * j
        groups: list[list[int]] = []
        free_sync = rescale = 0
        if 1 <= l <= L - 1 and model.activation in ("relu", "linear"):
            p = pre[l]
            # a neuron the output never reads (zero Jacobian column) is already free in its
            # incoming weights (Jacobian nullity), so its rescaling is not counted again
            live = read[l] if read[l] is not None else torch.ones(sizes[l], dtype=torch.bool, device=p.device)
            if model.activation == "relu":
                groups = [g for g in relu_synchrony(p) if bool(live[g].all())]
                rescale = int(((p > 0).any(dim=0) & live).sum())
            else:  # a linear layer is one synchronised group: every neuron is always "on"
                groups = [list(range(sizes[l]))] if sizes[l] >= 2 else []
                rescale = int(live.sum())
            per_group = []
            for g in groups:
                per_group.append(_data_decision(acts[l][:, g], rtol))  # rank of the group's activations
                free_sync += len(g) * (per_group[-1].rank - 1)
            if per_group:
                decisions[l]["sync"] = _worst(per_group)
        block_null = None
        if l < L:
            names = [f"layers.{l}.weight"] + ([f"layers.{l}.bias"] if bias else [])
            block = effective_parameter_count(model, inputs, rtol, params=names)
            block_null = block.nullity
            if block.decision is not None:
                decisions[l]["block"] = block.decision
        rows.append(LayerDegeneracy(layer=l, width=sizes[l], activation_nullity=a, free_activation=free_act,
                                    jacobian_nullity=j, free_jacobian=free_jac, free_restricted=restricted[l],
                                    sync_groups=groups,
                                    free_sync=free_sync, rescalings=rescale, measured_block_nullity=block_null,
                                    decisions=decisions[l]))
    return DegeneracyReport(layers=rows, gauss_newton=gn)
