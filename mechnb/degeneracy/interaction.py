"""The Interaction Basis of an MLP, its edges, and the modules of the interaction graph.

Papers: Bushnaq et al. 2024, *Using Degeneracy in the Loss Landscape for Mechanistic
Interpretability* (https://arxiv.org/abs/2405.10927, Sec. 6) and *The Local Interaction Basis*
(https://arxiv.org/abs/2405.10928, Sec. 2-3).

For each layer ``l`` (bias folded in: ``f^l`` is extended by a constant 1 for every layer that
feeds a linear map; the constant flows through, ``[f, 1] -> [σ(W f + b), 1]``, as in RIB's
folded-bias MLPs), working from the output backwards:

1. PCA of the uncentred Gram matrix ``G = (1/n) Σ f fᵀ = U D Uᵀ``, dropping eigenvalues
   ``D_i <= rtol · D_max`` (directions the data never visit);
2. whitening, ``z = D^{-1/2} Uᵀ f``;
3. the Jacobian Gram of the next layer's *interaction-basis* activations in whitened
   coordinates, ``M = D^{1/2} Uᵀ M' U D^{1/2}`` with ``M' = (1/n) Σ Jᵀ J``,
   ``J = ∂f̂^{l+1}/∂f^l`` (``jacobian="next"``, the paper's backward recursion) or
   ``J = ∂f^L/∂f^l`` (``jacobian="output"``, the model output); ``M = V Λ Vᵀ``, dropping
   ``Λ_i <= rtol · Λ_max`` (directions that do not affect what comes after);
4. ``f̂ = Cᵀ f`` with ``C = U D^{-1/2} V Λ^{1/2}``.

Then ``Cᵀ G C = diag(Λ)``, the Jacobian Gram w.r.t. ``f̂`` is the identity, ``Λ`` are the
non-zero eigenvalues of ``G M'``, and ``f̂`` does not change (up to signs) when ``f -> A f``
with the downstream weights ``W -> W A⁻¹`` (for invertible ``A``): the basis is invariant to
the linear reparametrisations that make neuron bases arbitrary. At the output layer
``J = I``, so ``C`` is the orthonormal PCA basis (``Λ = D``).

Edges (2405.10927 Eq. 21 / 2405.10928 Eq. 9):
``E^l_ij = mean_x (∂f̂^{l+1}_i/∂f̂^l_j · f̂^l_j)²``, computed in the interaction basis and in
the plain PCA basis (``C = U``) for comparison.

Rows are samples throughout: ``acts (n, d) @ C (d, d̂) = f̂ (n, d̂)``; ``C_pinv (d̂, d)`` maps back.

Conventions (:mod:`mechnb._linalg`), so that the basis is the same on every machine and kernel:
eigenvalues ``D`` and ``Λ`` in descending order; every column of ``U`` and of ``C`` has its
largest-magnitude entry positive (ties within ``sqrt(eps)`` go to the first index; ``V`` and
``C_pinv`` are flipped with ``C``). Directions of a repeated ``Λ`` are one valid basis of their
eigenspace, not a unique one. Each cut-off is a :class:`mechnb._linalg.RankDecision` kept in
``InteractionBasis.decisions``, so a caller can see how clear each ``d̂_l`` is
(:meth:`InteractionBasis.dim_labels`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from mechnb._checks import check_array, check_positive_float, check_positive_int, check_tensor
from mechnb._linalg import RankDecision, canonical_signs, rank_decision, sym_eig
from mechnb.degeneracy._mlp import (
    check_inputs,
    check_layer,
    check_mlp,
    block_jacobian_factors,
    mlp_forward,
    output_jacobian,
)
from mechnb.io import saveable

__all__ = ["InteractionBasis", "interaction_basis", "InteractionEdges", "interaction_edges", "Modules",
           "find_modules", "AblationCurves", "ablation_curves"]


@saveable()
@dataclass
class InteractionBasis:
    """The Interaction Basis of the requested layers.

    Attributes (dicts keyed by layer index):
        C: ``(d_l [+1], d̂_l)`` float64 basis; ``f̂ = f_ext @ C``.
        C_pinv: ``(d̂_l, d_l [+1])`` its pseudo-inverse; ``f_ext ≈ f̂ @ C_pinv``.
        Lambda: ``(d̂_l,)`` eigenvalues ``Λ`` (descending).
        U, D: the PCA step (eigenvectors ``(d_l [+1], k)`` and eigenvalues ``(k,)`` of ``G``
            above the cut-off); ``U`` is also the PCA basis used for comparison.
        M: ``(d_l [+1], d_l [+1])`` the Jacobian Gram ``M'`` used at that layer.
        with_bias: whether the layer was extended by the constant 1 (its last coordinate).
        jacobian: ``"next"`` or ``"output"``.
        n_layers: ``L`` of the model.
        rtol: the relative eigenvalue cut-off used for ``D`` and ``Λ``.
        layers: the layer indices of this basis, input first.
        decisions: ``{l: {"pca": RankDecision, "lambda": RankDecision}}``, the two cut-offs at
            each layer with their gaps (ratio of the smallest kept to the largest dropped eigenvalue).

    Signs: every column of ``U[l]`` and ``C[l]`` has its largest-magnitude entry positive
    (see the module docstring), so e.g. ``C[L] == U[L]`` at the output layer.
    """

    C: dict[int, torch.Tensor]
    C_pinv: dict[int, torch.Tensor]
    Lambda: dict[int, torch.Tensor]
    U: dict[int, torch.Tensor]
    D: dict[int, torch.Tensor]
    M: dict[int, torch.Tensor]
    with_bias: dict[int, bool]
    jacobian: str
    n_layers: int
    rtol: float = 1e-10
    layers: list[int] = field(default_factory=list)
    decisions: dict[int, dict[str, RankDecision]] = field(default_factory=dict)

    def extend(self, layer: int, acts: torch.Tensor) -> torch.Tensor:
        """Append the constant-1 column when the layer has its bias folded in; float64."""
        a = acts.detach().to(self.C[layer].device, torch.float64)
        if self.with_bias[layer]:
            a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)], dim=1)
        return a

    def transform(self, layer: int, acts: torch.Tensor) -> torch.Tensor:
        """``f̂ = [f, 1] @ C``: ``(n, d_l)`` activations of ``layer`` -> ``(n, d̂_l)`` float64."""
        if layer not in self.C:
            raise ValueError(f"layer: expected one of the layers of this basis {sorted(self.C)}, got {layer!r}")
        d = self.C[layer].shape[0] - int(self.with_bias[layer])
        check_tensor("acts", acts, shape=(None, d), dims="(n_samples, width of the layer)")
        return self.extend(layer, acts) @ self.C[layer]

    def pca_transform(self, layer: int, acts: torch.Tensor) -> torch.Tensor:
        """Coordinates in the PCA basis ``[f, 1] @ U`` (orthonormal, no whitening), ``(n, k)``."""
        if layer not in self.U:
            raise ValueError(f"layer: expected one of the layers of this basis {sorted(self.U)}, got {layer!r}")
        d = self.U[layer].shape[0] - int(self.with_bias[layer])
        check_tensor("acts", acts, shape=(None, d), dims="(n_samples, width of the layer)")
        return self.extend(layer, acts) @ self.U[layer]

    def dims(self) -> dict[int, int]:
        """Interaction-basis width ``d̂_l`` per layer."""
        return {k: int(self.C[k].shape[1]) for k in sorted(self.C)}

    def dim_labels(self, gaps: bool = True) -> dict[int, str]:
        """``d̂_l`` per layer with the margin of the cut-offs behind it: ``"37 (gap 1e+09)"`` or,
        when the PCA or the ``Λ`` cut-off had a gap below its ``min_gap``, ``"~37 (thin gap 4e+01)"``
        (the smaller of the two gaps is shown). A thin ``d̂_l`` depends on ``rtol``: the spectrum
        runs on through the cut-off.

        Args:
            gaps: include the gap (``False``: just ``"37"`` or ``"~37"``).
        """
        out = {}
        for k in sorted(self.C):
            dec = self.decisions.get(k)
            if not dec:
                out[k] = str(self.dims()[k])
                continue
            pca, lam = dec["pca"], dec["lambda"]
            worst = pca if pca.gap / pca.min_gap < lam.gap / lam.min_gap else lam
            label = replace(lam, gap=worst.gap, min_gap=worst.min_gap).label("rank")
            out[k] = label if gaps else label.split(" ")[0]
        return out

    def __repr__(self) -> str:
        return f"InteractionBasis(jacobian={self.jacobian!r}, dims={self.dims()})"


def _keep(values: torch.Tensor, rtol: float) -> tuple[torch.Tensor, RankDecision]:
    """Mask of the eigenvalues ``> rtol · max`` (none if the largest is not positive) and its decision."""
    top = float(values[0]) if values.numel() else 0.0
    dec = rank_decision(values.clamp_min(0.0).cpu().numpy(), rtol=rtol)
    keep = values > rtol * top if top > 0 else torch.zeros_like(values, dtype=torch.bool)
    return keep, dec


def interaction_basis(model: nn.Module, inputs: torch.Tensor, layers: Sequence[int] | None = None, *,
                      jacobian: str = "next", rtol: float = 1e-10) -> InteractionBasis:
    """The Interaction Basis of 2405.10927 (Sec. 6) for a :class:`mechnb.models.MLP`.

    Args:
        model: an MLP (``layers[i]``; see :mod:`mechnb.degeneracy` for layer indices).
        inputs: ``(n, sizes[0])`` data over which ``G`` and ``M'`` are averaged.
        layers: layer indices to return (0 = input ... ``L`` = output); ``None`` = all.
            With ``jacobian="next"`` every layer above the lowest requested one is computed.
        jacobian: ``"next"`` (Jacobian of the next layer's interaction-basis activations, the
            backward recursion of the paper) or ``"output"`` (Jacobian of the model output).
            They coincide for linear networks.
        rtol: eigenvalues of ``G`` (and ``Λ``) at or below ``rtol`` times the largest are dropped;
            each cut-off's gap is reported in ``InteractionBasis.decisions``.

    Returns:
        An :class:`InteractionBasis` with per-layer ``C``, ``C_pinv``, ``Lambda`` and
        ``transform(layer, acts)``; eigenvalues descending, the columns of ``U`` and ``C`` with
        their largest-magnitude entry positive (same basis on every machine and kernel).
    """
    check_mlp(model)
    check_inputs(model, inputs)
    if jacobian not in ("next", "output"):
        raise ValueError(f"jacobian: expected 'next' or 'output', got {jacobian!r}")
    rtol = check_positive_float("rtol", rtol)
    L = len(model.layers)
    if layers is None:
        wanted = list(range(L + 1))
    else:
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or len(layers) == 0:
            raise TypeError(f"layers: expected a non-empty list of layer indices or None, got {layers!r}")
        wanted = sorted({check_layer(model, l, "layers") for l in layers})
    lowest = wanted[0]
    compute = list(range(L, lowest - 1, -1)) if jacobian == "next" else sorted(wanted, reverse=True)

    acts, pre = mlp_forward(model, inputs)
    n = acts[0].shape[0]
    bias = bool(model.bias)
    ext = {l: (bias and l < L) for l in range(L + 1)}
    out: dict[str, dict[int, Any]] = {k: {} for k in ("C", "C_pinv", "Lambda", "U", "D", "M")}
    decisions: dict[int, dict[str, RankDecision]] = {}
    for l in compute:
        f = acts[l]
        if ext[l]:
            f = torch.cat([f, torch.ones(n, 1, dtype=f.dtype, device=f.device)], dim=1)
        G = f.T @ f / n
        D_all, U_all = sym_eig(G)  # descending, canonical signs
        keep, pca_dec = _keep(D_all, rtol)
        D, U = D_all[keep], U_all[:, keep]
        if l == L:
            Mp = torch.eye(f.shape[1], dtype=f.dtype, device=f.device)
        elif jacobian == "next":
            # J(x) = diag(s(x)) B, so E[Jᵀ C Cᵀ J] = Bᵀ ((C Cᵀ) ⊙ E[s sᵀ]) B
            s, B = block_jacobian_factors(model, pre, l, ext[l], ext[l + 1])
            Ch = out["C"][l + 1]
            Mp = B.T @ ((Ch @ Ch.T) * (s.T @ s / n)) @ B
        else:
            J = output_jacobian(model, pre, l, wrt="post", with_bias=ext[l])
            Mp = torch.einsum("nki,nkj->ij", J, J) / n
        Mp = 0.5 * (Mp + Mp.T)
        sqD = D.sqrt()
        Mw = sqD[:, None] * (U.T @ Mp @ U) * sqD[None, :]
        Lam_all, V_all = sym_eig(Mw)
        lkeep, lam_dec = _keep(Lam_all, rtol)
        Lam, V = Lam_all[lkeep], V_all[:, lkeep]
        C = (U / sqD[None, :]) @ V * Lam.sqrt()[None, :]
        # the sign convention is applied to C itself (largest entry of each column positive); V follows
        C, signs = canonical_signs(C, return_signs=True)
        V = V * signs[None, :]
        C_pinv = (V / Lam.sqrt()[None, :]).T @ (sqD[:, None] * U.T)
        for k, v in (("C", C), ("C_pinv", C_pinv), ("Lambda", Lam), ("U", U), ("D", D), ("M", Mp)):
            out[k][l] = v
        decisions[l] = {"pca": pca_dec, "lambda": lam_dec}
    sel = {k: {l: d[l] for l in wanted} for k, d in out.items()}  # requested layers, input first
    return InteractionBasis(C=sel["C"], C_pinv=sel["C_pinv"], Lambda=sel["Lambda"], U=sel["U"], D=sel["D"],
                            M=sel["M"], with_bias={l: ext[l] for l in wanted}, jacobian=jacobian, n_layers=L,
                            rtol=rtol, layers=wanted, decisions={l: decisions[l] for l in wanted})


# --------------------------------------------------------------------------------------
# Edges
# --------------------------------------------------------------------------------------
@dataclass
class InteractionEdges:
    """Edge strengths between consecutive layers.

    Attributes:
        ib: ``{l: E}`` with ``E (d̂_{l+1}, d̂_l)`` the edges from layer ``l`` to ``l + 1`` in the
            interaction basis.
        pca: the same in the PCA basis (``C = U``, orthonormal, no whitening or rotation).
        pca_k: the PCA basis cut to the interaction basis's size at every layer (the top ``d̂_l``
            directions by variance): a like-for-like comparison with ``ib`` (same nodes, same
            number of possible edges).
    """

    ib: dict[int, np.ndarray]
    pca: dict[int, np.ndarray]
    pca_k: dict[int, np.ndarray] = field(default_factory=dict)

    def sparsity_curve(self, which: str = "ib") -> tuple[np.ndarray, np.ndarray]:
        """Fraction of all edge strength in the top-``k`` edges, for every ``k``.

        Returns:
            ``(fraction_of_edges (m,), fraction_of_strength (m,))``; a sparser graph rises faster.
        """
        edges = _select(self, which)
        w = np.sort(np.concatenate([e.ravel() for e in edges.values()]))[::-1]
        tot = w.sum()
        cum = np.cumsum(w) / tot if tot > 0 else np.zeros_like(w)
        return np.arange(1, w.size + 1) / w.size, cum

    def edges_for(self, fraction: float, which: str = "ib") -> int:
        """Smallest number of edges holding ``fraction`` (in ``(0, 1]``) of the total strength.

        At most the number of edges with non-zero strength (``0`` when every edge is zero).
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating, np.integer)):
            raise TypeError(f"fraction: expected a number in (0, 1], got {type(fraction).__name__} {fraction!r}")
        fraction = float(fraction)
        if not 0.0 < fraction <= 1.0:  # also rejects nan
            raise ValueError(f"fraction: expected a number in (0, 1] (a share of the total edge strength), got {fraction}")
        edges = _select(self, which)
        w = np.concatenate([e.ravel() for e in edges.values()])
        n_nonzero = int(np.count_nonzero(w))
        if n_nonzero == 0:
            return 0
        _, cum = self.sparsity_curve(which)
        return min(int(np.searchsorted(cum, fraction - 1e-12) + 1), n_nonzero)


# --------------------------------------------------------------------------------------
# Ablation curves (2405.10928's evaluation)
# --------------------------------------------------------------------------------------
@dataclass
class AblationCurves:
    """Task loss and accuracy when only the ``k`` most important directions of one layer are kept.

    Attributes:
        layer: the layer ablated.
        kept: ``{basis: (m,) ints}``, the numbers of directions kept.
        loss, accuracy: ``{basis: (m,) floats}``, cross-entropy and accuracy of the model with
            the layer's activations projected onto the kept directions.
        full_loss, full_accuracy: the intact model's values.
        n_directions: ``{basis: number of directions of that basis at this layer}``.
    """

    layer: int
    kept: dict[str, np.ndarray]
    loss: dict[str, np.ndarray]
    accuracy: dict[str, np.ndarray]
    full_loss: float
    full_accuracy: float
    n_directions: dict[str, int]

    def needed(self, basis: str, tolerance: float = 0.01) -> int:
        """Fewest kept directions (of those evaluated) whose accuracy is within ``tolerance`` of the intact model's."""
        if basis not in self.kept:
            raise ValueError(f"basis: expected one of {sorted(self.kept)}, got {basis!r}")
        tolerance = check_positive_float("tolerance", tolerance, allow_zero=True)
        ok = np.nonzero(self.accuracy[basis] >= self.full_accuracy - tolerance)[0]
        return int(self.kept[basis][ok[0]]) if ok.size else int(self.n_directions[basis])


def ablation_curves(basis: InteractionBasis, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                    layer: int, kept: Sequence[int] | None = None) -> AblationCurves:
    """Keep the ``k`` most important directions of one layer and measure the task (2405.10928 Sec. 4).

    The Local Interaction Basis paper evaluates a basis by ablating its directions in order of
    importance and watching the loss: a basis that concentrates the computation in few directions
    keeps the loss low with small ``k``. Three bases of the extended activations ``[f^l, 1]``:

    * ``"ib"``: the interaction basis, directions in order of ``Λ`` (descending); the kept part is
      ``f̂_{:k} C_pinv_{:k}``;
    * ``"pca"``: the PCA basis ``U`` in order of the variance ``D``: ``[f, 1] U_{:k} U_{:k}ᵀ``;
    * ``"neuron"``: the neurons in order of ``E[f_j²] · |W_{:, j}|²`` (how much each feeds the
      next layer), the rest set to zero (the constant is kept).

    The projected activations are run through the rest of the network (float64) and scored with
    the cross-entropy and the accuracy against ``targets``.

    Args:
        basis: from :func:`interaction_basis` on the same model, containing ``layer``.
        model: the MLP (a classifier: outputs are logits).
        inputs: ``(n, sizes[0])``; targets: ``(n,)`` class indices.
        layer: a hidden layer ``1 <= layer < L``.
        kept: the numbers of directions to keep (default: 1, 2, 4, ... up to each basis's size).

    Returns:
        An :class:`AblationCurves`.
    """
    if not isinstance(basis, InteractionBasis):
        raise TypeError(f"basis: expected an InteractionBasis, got {type(basis).__name__}")
    check_mlp(model)
    check_inputs(model, inputs)
    check_tensor("targets", targets, shape=(inputs.shape[0],), dims="(n_samples,) class indices", floating=False)
    L = len(model.layers)
    check_layer(model, layer, "layer", allow_output=False)
    if layer == 0 or layer not in basis.C:
        raise ValueError(f"layer: expected a hidden layer of the basis (1 <= layer < {L}, one of {basis.layers}), "
                         f"got {layer}")
    acts, _ = mlp_forward(model, inputs)
    f = basis.extend(layer, acts[layer])  # (n, d [+1])
    W, b = model.layers[layer].weight.detach().to(torch.float64), model.layers[layer].bias
    has_one = basis.with_bias[layer]
    y = targets.to(f.device)

    d = acts[layer].shape[1]

    def score(h_ext: torch.Tensor) -> tuple[float, float]:
        # the folded bias reads the (projected) constant coordinate: p = h Wᵀ + h_const b
        out = h_ext[:, :d] @ W.T
        if b is not None:
            const = h_ext[:, d : d + 1] if has_one else 1.0
            out = out + const * b.detach().to(torch.float64)
        for i in range(layer, L):
            if i > layer:
                lin = model.layers[i]
                out = out @ lin.weight.detach().to(torch.float64).T + (
                    lin.bias.detach().to(torch.float64) if lin.bias is not None else 0.0)
            if i < L - 1:
                out = model.act_fn(out)  # type: ignore[attr-defined]
        loss = float(torch.nn.functional.cross_entropy(out, y))
        return loss, float((out.argmax(-1) == y).double().mean())

    C, Cp, U = basis.C[layer], basis.C_pinv[layer], basis.U[layer]
    imp = (acts[layer] ** 2).mean(0) * (W**2).sum(0)  # (d,)
    order = torch.argsort(imp, descending=True)
    sizes = {"ib": C.shape[1], "pca": U.shape[1], "neuron": acts[layer].shape[1]}
    full = score(f)
    out_k, out_l, out_a = {}, {}, {}
    for name, size in sizes.items():
        ks = sorted({int(k) for k in kept if 1 <= int(k) <= size} | {size}) if kept is not None else \
            sorted({2**i for i in range(int(np.log2(size)) + 1)} | {size})
        losses, accs = [], []
        for k in ks:
            if name == "ib":
                h = (f @ C[:, :k]) @ Cp[:k]
            elif name == "pca":
                h = f @ U[:, :k] @ U[:, :k].T
            else:
                mask = torch.zeros(f.shape[1], dtype=f.dtype, device=f.device)
                mask[order[:k]] = 1.0
                if has_one:
                    mask[-1] = 1.0
                h = f * mask
            lo, ac = score(h)
            losses.append(lo)
            accs.append(ac)
        out_k[name], out_l[name], out_a[name] = np.array(ks), np.array(losses), np.array(accs)
    return AblationCurves(layer=layer, kept=out_k, loss=out_l, accuracy=out_a, full_loss=full[0],
                          full_accuracy=full[1], n_directions=sizes)


def _select(edges: InteractionEdges | Mapping[int, Any], which: str) -> dict[int, np.ndarray]:
    if isinstance(edges, InteractionEdges):
        if which not in ("ib", "pca", "pca_k"):
            raise ValueError(f"which: expected 'ib', 'pca' or 'pca_k', got {which!r}")
        out = getattr(edges, which)
        if not out:
            raise ValueError(f"which: these edges have no {which!r} part")
        return out
    if not isinstance(edges, Mapping) or not edges:
        raise TypeError(f"edges: expected an InteractionEdges or a non-empty dict {{layer: (d_out, d_in) array}}, "
                        f"got {type(edges).__name__}")
    return {int(k): check_array(f"edges[{k}]", v, ndim=2) for k, v in edges.items()}


def _edges_in_basis(s: torch.Tensor, B: torch.Tensor, f_hat: torch.Tensor, C_next: torch.Tensor,
                    C_pinv: torch.Tensor, chunk: int = 128) -> np.ndarray:
    """``E_ij = mean_x ((C_nextᵀ diag(s(x)) B C_pinvᵀ)_ij f̂_j(x))²``, batched matmuls over sample chunks."""
    n = s.shape[0]
    A = B @ C_pinv.T  # (d_{l+1}[+1], d̂_l)
    Ct = C_next.T  # (d̂_{l+1}, d_{l+1}[+1])
    E = torch.zeros(Ct.shape[0], A.shape[1], dtype=torch.float64, device=s.device)
    for a in range(0, n, chunk):
        Jh = (Ct[None] * s[a : a + chunk, None, :]) @ A  # (c, d̂_{l+1}, d̂_l) = ∂f̂^{l+1}/∂f̂^l
        E += ((Jh * f_hat[a : a + chunk, None, :]) ** 2).sum(0)
    return (E / n).cpu().numpy()


def interaction_edges(basis: InteractionBasis, model: nn.Module, inputs: torch.Tensor, *,
                      integrated_steps: int | None = None) -> InteractionEdges:
    """Edge strengths ``E_ij = mean_x (∂f̂^{l+1}_i/∂f̂^l_j · f̂^l_j)²`` between consecutive layers.

    ``∂f̂^{l+1}/∂f̂^l = C^{l+1 ᵀ} J(x) C^{l, pinv ᵀ}`` with ``J(x) = ∂f^{l+1}_ext/∂f^l_ext`` (ReLU
    gates at ``x``). The PCA-basis edges use ``U`` (and ``Uᵀ``) in place of ``C`` (and ``C_pinv``).

    Args:
        basis: from :func:`interaction_basis` for the same model (every consecutive pair of its
            layers gets edges).
        model: the MLP.
        inputs: ``(n, sizes[0])`` data (usually the same as for the basis).
        integrated_steps: ``None`` (single-point) or the number of path points of the integrated gradient.

    By default these are single-point attributions (the local gradient at each input times the
    activation), as in 2405.10927 Eq. 21. With ``integrated_steps=m`` they are integrated-gradient
    attributions instead: the gradient is averaged over ``m`` midpoints ``α = (t + ½)/m`` of the
    straight path from the baseline "every activation of layer ``l`` zero, the constant 1 kept"
    to the actual ``[f^l, 1]`` (the ReLU gates of layer ``l + 1`` evaluated at ``α W f^l + b``), and
    multiplied by the displacement ``f̂^l - f̂^l(baseline)`` instead of ``f̂^l``. (Our choice of path
    and baseline; 2405.10928 uses integrated gradients for its edges.)

    Returns:
        An :class:`InteractionEdges` with ``ib``, ``pca`` and ``pca_k`` dicts ``{l: (d̂_{l+1}, d̂_l)}``.
    """
    if not isinstance(basis, InteractionBasis):
        raise TypeError(f"basis: expected an InteractionBasis from interaction_basis(), got {type(basis).__name__}")
    check_mlp(model)
    check_inputs(model, inputs)
    L = len(model.layers)
    if basis.n_layers != L:
        raise ValueError(f"basis: built for an MLP with {basis.n_layers} linear layers, but model has {L}")
    pairs = [l for l in basis.layers if l + 1 in basis.C]
    if not pairs:
        raise ValueError(f"basis: expected at least two consecutive layers, got layers {basis.layers}")
    if integrated_steps is not None:
        integrated_steps = check_positive_int("integrated_steps", integrated_steps)
    acts, pre = mlp_forward(model, inputs)
    ib, pca, pca_k = {}, {}, {}
    for l in pairs:
        ext_in, ext_out = basis.with_bias[l], basis.with_bias[l + 1]
        d_in = basis.C[l].shape[0] - int(ext_in)
        if acts[l].shape[1] != d_in:
            raise ValueError(f"basis: layer {l} has width {d_in} in the basis but {acts[l].shape[1]} in the model")
        s, B = block_jacobian_factors(model, pre, l, ext_in, ext_out)
        f_ext = basis.extend(l, acts[l])
        if integrated_steps is not None:
            lin = model.layers[l]
            bias = lin.bias.detach().to(torch.float64) if lin.bias is not None else 0.0
            s_bar = torch.zeros_like(s)
            for t in range(integrated_steps):
                a = (t + 0.5) / integrated_steps
                pre_a = list(pre)
                pre_a[l + 1] = a * (pre[l + 1] - bias) + bias  # W (α f) + b
                s_bar += block_jacobian_factors(model, pre_a, l, ext_in, ext_out)[0]
            s = s_bar / integrated_steps
            base = torch.zeros(1, f_ext.shape[1], dtype=f_ext.dtype, device=f_ext.device)
            if ext_in:
                base[0, -1] = 1.0
            f_ext = f_ext - base  # displacement from the baseline (edges are linear in it)
        ib[l] = _edges_in_basis(s, B, f_ext @ basis.C[l], basis.C[l + 1], basis.C_pinv[l])
        pca[l] = _edges_in_basis(s, B, f_ext @ basis.U[l], basis.U[l + 1], basis.U[l].T)
        Uk, Uk_next = basis.U[l][:, : basis.C[l].shape[1]], basis.U[l + 1][:, : basis.C[l + 1].shape[1]]
        pca_k[l] = _edges_in_basis(s, B, f_ext @ Uk, Uk_next, Uk.T)
    return InteractionEdges(ib=ib, pca=pca, pca_k=pca_k)


# --------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------
@dataclass
class Modules:
    """Communities of the interaction graph.

    Attributes:
        communities: lists of nodes ``(layer, index)``, largest first.
        modularity: Newman's ``Q`` of that partition (weighted).
        graph: the ``networkx.Graph`` (nodes ``(layer, index)``, edge attribute ``weight``).
    """

    communities: list[list[tuple[int, int]]]
    modularity: float
    graph: Any

    def membership(self) -> dict[tuple[int, int], int]:
        """``{node: community index}``."""
        return {node: i for i, comm in enumerate(self.communities) for node in comm}

    def __repr__(self) -> str:
        return f"Modules(n={len(self.communities)}, sizes={[len(c) for c in self.communities]}, Q={self.modularity:.3f})"


def find_modules(edges: InteractionEdges | Mapping[int, Any], resolution: float = 1.0, seed: int = 0, *,
                 which: str = "ib", threshold: float = 1e-12) -> Modules:
    """Louvain communities of the layered interaction graph, with Newman modularity ``Q``.

    Nodes are ``(layer, index)``; the edge between ``(l+1, i)`` and ``(l, j)`` has weight
    ``E^l_ij``. Edges below ``threshold × (largest edge)`` are dropped (round-off). Isolated
    nodes become singleton communities.

    Args:
        edges: an :class:`InteractionEdges` (``which`` picks ``"ib"`` or ``"pca"``) or a dict
            ``{l: (d_{l+1}, d_l) array}``.
        resolution: Louvain resolution (> 1 favours smaller communities).
        seed: seeds Louvain's node order.

    Returns:
        A :class:`Modules`.
    """
    import networkx as nx
    from networkx.algorithms import community as nxc

    E = _select(edges, which)
    resolution = check_positive_float("resolution", resolution)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    threshold = check_positive_float("threshold", threshold, allow_zero=True)
    for l, e in E.items():
        if (e < 0).any():
            raise ValueError(f"edges[{l}]: expected non-negative edge strengths, got a minimum of {e.min():g}")
        if l + 1 in E and E[l + 1].shape[1] != e.shape[0]:
            raise ValueError(f"edges: layer {l + 1} has {e.shape[0]} nodes as a target but {E[l + 1].shape[1]} as a source")
    top = max((float(e.max()) for e in E.values() if e.size), default=0.0)
    G = nx.Graph()
    for l, e in sorted(E.items()):
        G.add_nodes_from((l, j) for j in range(e.shape[1]))
        G.add_nodes_from((l + 1, i) for i in range(e.shape[0]))
        ii, jj = np.nonzero(e > threshold * top) if top > 0 else (np.array([], int), np.array([], int))
        G.add_weighted_edges_from(((l + 1, int(i)), (l, int(j)), float(e[i, j])) for i, j in zip(ii, jj))
    if G.number_of_edges() == 0:
        comms = [[node] for node in sorted(G.nodes)]
        return Modules(communities=comms, modularity=0.0, graph=G)
    parts = nxc.louvain_communities(G, weight="weight", resolution=resolution, seed=int(seed))
    Q = float(nxc.modularity(G, parts, weight="weight", resolution=resolution))
    comms = sorted((sorted(p) for p in parts), key=lambda c: (-len(c), c[0]))
    return Modules(communities=comms, modularity=Q, graph=G)
