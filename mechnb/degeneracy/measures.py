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
Numerical ranks use singular values: a direction is null when its singular value is below
``rtol`` times the largest (for a Gram matrix, ``sqrt`` of its eigenvalues).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mechnb._checks import check_array, check_positive_float, check_tensor
from mechnb.degeneracy._mlp import (
    check_inputs,
    check_layer,
    check_mlp,
    mlp_forward,
    output_jacobian,
)

__all__ = [
    "gram_spectrum",
    "spectrum_nullity",
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


def _gram(acts: torch.Tensor, with_bias: bool) -> torch.Tensor:
    if with_bias:
        acts = torch.cat([acts, torch.ones(acts.shape[0], 1, dtype=acts.dtype, device=acts.device)], dim=1)
    return acts.T @ acts / acts.shape[0]


def _eigh_desc(M: torch.Tensor) -> np.ndarray:
    ev = torch.linalg.eigvalsh(0.5 * (M + M.T)).flip(0)
    return ev.clamp_min(0.0).cpu().numpy()


def gram_spectrum(acts: torch.Tensor | np.ndarray, with_bias: bool = True) -> np.ndarray:
    """Eigenvalues of the uncentred activation Gram matrix, largest first (2405.10927 Sec. 3.1).

    ``G = (1/n) Σ_x f(x) f(x)ᵀ`` with ``f(x)`` extended by a constant 1 when ``with_bias`` (the
    next layer's bias folded into its weights, so ``G`` is the Gram of what that layer reads).

    Args:
        acts: ``(n, d)`` activations (a tensor or an array).
        with_bias: append the constant-1 feature (``G`` is then ``(d + 1, d + 1)``).

    Returns:
        ``(d [+1],)`` float64 eigenvalues in descending order (round-off negatives clipped to 0).
        Count the zero ones with :func:`spectrum_nullity`.
    """
    if not isinstance(with_bias, bool):
        raise TypeError(f"with_bias: expected a bool, got {type(with_bias).__name__}")
    f = _as_float64("acts", acts)
    return _eigh_desc(_gram(f, with_bias))


def spectrum_nullity(eigenvalues: np.ndarray | Sequence[float], rtol: float = DEFAULT_RTOL) -> int:
    """Number of zero eigenvalues of a PSD matrix: ``sqrt(λ_i / λ_max) <= rtol`` (all of them if ``λ_max = 0``)."""
    ev = check_array("eigenvalues", eigenvalues, ndim=1)
    rtol = check_positive_float("rtol", rtol)
    if ev.size == 0:
        return 0
    top = float(ev.max())
    if top <= 0:
        return int(ev.size)
    return int((np.sqrt(np.clip(ev, 0, None) / top) <= rtol).sum())


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
@dataclass
class EffectiveParameterCount:
    """Rank of the behavioural Gauss-Newton matrix ``J_wᵀ J_w`` (2405.10927 Sec. 2).

    Attributes:
        rank: numerical rank (the effective parameter count at second order).
        n_params: number of parameters considered.
        nullity: ``n_params - rank``, the number of free directions.
        singular_values: singular values of the output-parameter Jacobian, descending.
        params: names of the parameters considered.
    """

    rank: int
    n_params: int
    nullity: int
    singular_values: np.ndarray
    params: list[str] = field(default_factory=list)

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


def effective_parameter_count(model: nn.Module, inputs: torch.Tensor, rtol: float = DEFAULT_RTOL, *,
                              params: Sequence[str] | None = None) -> EffectiveParameterCount:
    """Rank and nullity of the behavioural Gauss-Newton matrix ``(1/n) Σ_x J_w(x)ᵀ J_w(x)``.

    ``J_w(x) = ∂f(x; w)/∂w`` is the Jacobian of the model outputs w.r.t. the parameters; the
    behavioural loss is ``L_B(w* + δ) ≈ δᵀ (Σ_x J_wᵀ J_w) δ / n`` (2405.10927 Eq. 3), so its
    null space is the set of directions that do not change the network's outputs on ``inputs``
    to first order. The rank is computed from the singular values of the stacked
    ``(n · d_out, P)`` Jacobian in float64.

    Args:
        model: any ``nn.Module`` mapping ``inputs`` to outputs (``(n, ...)``).
        inputs: the data the behaviour is measured on.
        rtol: singular values ``<= rtol · max`` count as zero.
        params: restrict to these parameter names (e.g. one weight block); default all.

    Returns:
        An :class:`EffectiveParameterCount`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    check_tensor("inputs", inputs)
    if inputs.ndim < 1 or inputs.shape[0] < 1:
        raise ValueError(f"inputs: expected a batch of at least one sample, got shape {tuple(inputs.shape)}")
    rtol = check_positive_float("rtol", rtol)
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
    rank = int((sv > rtol * sv.max()).sum()) if sv.size and sv.max() > 0 else 0
    return EffectiveParameterCount(rank=rank, n_params=P, nullity=P - rank, singular_values=sv, params=names)


# --------------------------------------------------------------------------------------
# Degeneracy report
# --------------------------------------------------------------------------------------
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

    @property
    def predicted(self) -> int:
        return self.free_activation + self.free_jacobian + self.free_restricted + self.free_sync + self.rescalings


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

    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer, for tables."""
        return [dict(layer=r.layer, width=r.width, act_nullity=r.activation_nullity, free_act=r.free_activation,
                     jac_nullity=r.jacobian_nullity, free_jac=r.free_jacobian, free_restricted=r.free_restricted,
                     sync_groups=len(r.sync_groups), free_sync=r.free_sync, rescalings=r.rescalings,
                     predicted=r.predicted, measured_block=r.measured_block_nullity) for r in self.layers]

    def table(self) -> str:
        """A fixed-width text table (deterministic, for notebooks)."""
        cols = ["layer", "width", "act_nullity", "free_act", "jac_nullity", "free_jac", "free_restricted",
                "sync_groups", "free_sync", "rescalings", "predicted", "measured_block"]
        rows = self.rows()
        fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
        widths = [max(len(c), *(len(fmt(r[c])) for r in rows)) for c in cols]
        lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(fmt(r[c]).rjust(w) for c, w in zip(cols, widths)) for r in rows]
        lines.append(f"predicted free directions: {self.predicted_nullity}   measured Gauss-Newton nullity: "
                     f"{self.measured_nullity} (of {self.gauss_newton.n_params} parameters, rank "
                     f"{self.gauss_newton.rank})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"DegeneracyReport(layers={len(self.layers)}, predicted_nullity={self.predicted_nullity}, "
                f"measured_nullity={self.measured_nullity})")


def _nullity_psd(M: torch.Tensor, rtol: float) -> int:
    return spectrum_nullity(_eigh_desc(M), rtol)


def degeneracy_report(model: nn.Module, inputs: torch.Tensor, rtol: float = DEFAULT_RTOL) -> DegeneracyReport:
    """The three kinds of degeneracy per layer, their predicted free directions, and the measured nullity.

    For a :class:`mechnb.models.MLP` with ``L`` linear layers, see :class:`LayerDegeneracy`
    for the per-layer quantities (2405.10927 Sec. 3.1-3.3, plus a per-neuron refinement of the
    activation kind: the activations a neuron sees on the inputs where it matters). The measured value is the nullity of
    the behavioural Gauss-Newton matrix (:func:`effective_parameter_count`), in total and per
    weight block. The prediction adds the kinds up; when they overlap (a neuron that is both
    dead and duplicated, say) it over-counts, which the comparison makes visible.

    Args:
        model: a :class:`mechnb.models.MLP`.
        inputs: ``(n, sizes[0])`` data.
        rtol: relative singular-value threshold for every rank.

    Returns:
        A :class:`DegeneracyReport` (``.table()`` prints it).
    """
    check_mlp(model)
    check_inputs(model, inputs)
    rtol = check_positive_float("rtol", rtol)
    acts, pre = mlp_forward(model, inputs)
    L = len(model.layers)
    bias = model.bias
    sizes = model.sizes
    act_null: list[int | None] = []
    for l in range(L + 1):
        act_null.append(_nullity_psd(_gram(acts[l], bias), rtol) if l < L else None)
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
        J = output_jacobian(model, pre, l, wrt="pre")
        Mpre = torch.einsum("noi,noj->ij", J, J) / J.shape[0]
        jac_null.append(_nullity_psd(Mpre, rtol))
        diag = Mpre.diagonal()
        live = diag > (rtol**2) * float(diag.max()) if float(diag.max()) > 0 else diag > 0
        read.append(live)
        # per neuron: the previous layer's Gram restricted to (weighted by) where the neuron matters
        weight = (J**2).sum(1)  # (n, d_l)
        f_prev = acts[l - 1]
        if bias:
            f_prev = torch.cat([f_prev, torch.ones(n, 1, dtype=f_prev.dtype, device=f_prev.device)], dim=1)
        a_prev = act_null[l - 1] or 0
        extra = 0
        for i in torch.nonzero(live).flatten().tolist():
            G_i = (f_prev * weight[:, i : i + 1]).T @ f_prev / n
            extra += max(0, _nullity_psd(G_i, rtol) - a_prev)
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
            for g in groups:
                r = len(g) - _nullity_psd(_gram(acts[l][:, g], False), rtol)  # rank of the group's activations
                free_sync += len(g) * (r - 1)
        block_null = None
        if l < L:
            names = [f"layers.{l}.weight"] + ([f"layers.{l}.bias"] if bias else [])
            block_null = effective_parameter_count(model, inputs, rtol, params=names).nullity
        rows.append(LayerDegeneracy(layer=l, width=sizes[l], activation_nullity=a, free_activation=free_act,
                                    jacobian_nullity=j, free_jacobian=free_jac, free_restricted=restricted[l],
                                    sync_groups=groups,
                                    free_sync=free_sync, rescalings=rescale, measured_block_nullity=block_null))
    return DegeneracyReport(layers=rows, gauss_newton=gn)
