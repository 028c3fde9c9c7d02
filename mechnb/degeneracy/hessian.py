"""Hessian and Gauss-Newton spectra of a training loss (Sagun et al. 2017, arXiv 1706.04454).

The loss Hessian splits as ``H = G + R`` with the Gauss-Newton term
``G = (1/n) Σ_x J_w(x)ᵀ (∂²ℓ/∂f²) J_w(x)`` (positive semi-definite) and a residual
``R = (1/n) Σ_x Σ_k (∂ℓ/∂f_k) ∂²f_k/∂w²`` that vanishes where the model fits the data.
Sagun et al. observe a *bulk* of eigenvalues near zero and a few large *outliers* (about one per
class for a classifier); the outliers live in ``G``.

Small models get the full matrix (``P`` Hessian-vector products, batched); larger ones the
top ``k`` eigenvalues by Lanczos (``scipy.sparse.linalg.eigsh`` on a ``LinearOperator`` whose
mat-vec is an autograd Hessian-vector product). Everything is computed in float64.

Conventions (:mod:`mechnb._linalg`): eigenvalues in descending order; eigenvectors (on request)
with their largest-magnitude entry positive. :func:`hessian_nullity` counts the numerically zero
eigenvalues with numpy's ``matrix_rank`` threshold ``P · eps · |λ|_max`` and reports the gap to
the smallest non-zero ``|λ|``, so a printed count says how clear it is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn
from tqdm.auto import tqdm

from mechnb._checks import check_array, check_materialized, check_positive_int, check_tensor
from mechnb._linalg import DEFAULT_MIN_GAP, RankDecision, canonical_signs, rank_decision, sym_eig

__all__ = ["hessian_spectrum", "hessian_matvec", "hessian_nullity"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _Curvature:
    """Batched Hessian / Gauss-Newton products ``V (k, P) -> V A`` for a model in float64."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                 gauss_newton: bool) -> None:
        self.model = copy.deepcopy(model).to(torch.float64)
        self.model.eval()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.P = sum(p.numel() for p in self.params)
        dev = self.params[0].device
        self.dev = dev
        x = inputs.detach().to(dev)
        self.x = x.to(torch.float64) if x.is_floating_point() else x
        y = targets.detach().to(dev)
        self.y = y.to(torch.float64) if y.is_floating_point() else y
        self.gauss_newton = gauss_newton
        out = self.model(self.x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"model: expected model(inputs) to return a tensor, got {type(out).__name__}")
        if gauss_newton:
            self.out = out
            self.u = torch.zeros_like(out, requires_grad=True)
            # g(u) = J^T u, kept with its graph so that J v = ∂(g(u)·v)/∂u. Parameters the output does
            # not depend on (unused ones) have J = 0: their rows and columns of G are zero.
            JTu = torch.autograd.grad(out, self.params, grad_outputs=self.u, create_graph=True, allow_unused=True)
            self.jtu_idx = [i for i, g in enumerate(JTu) if g is not None and g.requires_grad]
            self.JTu = [JTu[i] for i in self.jtu_idx]
            out_d = out.detach().requires_grad_(True)
            self.out_d = out_d
            loss = _scalar_loss(loss_fn(out_d, self.y))
            self.grad_out = torch.autograd.grad(loss, out_d, create_graph=True)[0]
        else:
            loss = _scalar_loss(loss_fn(out, self.y))
            # unused parameters (and ones the gradient is constant in) have zero Hessian rows: skip them
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
            self.grad_idx = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            self.grads = [grads[i] for i in self.grad_idx]

    def _split(self, V: torch.Tensor) -> list[torch.Tensor]:
        out, off = [], 0
        for p in self.params:
            out.append(V[:, off : off + p.numel()].reshape(V.shape[0], *p.shape))
            off += p.numel()
        return out

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``V (k, P)`` -> ``(k, P)`` rows ``A v``."""
        Vs = self._split(V)
        zeros = [None] * len(self.params)
        if not self.gauss_newton:
            res = zeros
            if self.grads:
                res = torch.autograd.grad(self.grads, self.params, grad_outputs=[Vs[i] for i in self.grad_idx],
                                          is_grads_batched=True, retain_graph=True, allow_unused=True)
        else:
            res = zeros
            if self.JTu:
                Jv = torch.autograd.grad(self.JTu, self.u, grad_outputs=[Vs[i] for i in self.jtu_idx],
                                         is_grads_batched=True, retain_graph=True, allow_unused=True)[0]
                if Jv is not None and self.grad_out.requires_grad:
                    HJv = torch.autograd.grad(self.grad_out, self.out_d, grad_outputs=Jv, is_grads_batched=True,
                                              retain_graph=True, allow_unused=True)[0]
                    if HJv is not None:
                        res = torch.autograd.grad(self.out, self.params, grad_outputs=HJv, is_grads_batched=True,
                                                  retain_graph=True, allow_unused=True)
        return torch.cat([(r if r is not None else torch.zeros(V.shape[0], *p.shape, dtype=V.dtype, device=V.device))
                          .reshape(V.shape[0], -1) for r, p in zip(res, self.params)], dim=1)


def _scalar_loss(loss: object) -> torch.Tensor:
    """The contract of ``loss_fn``: a 0-d tensor (a mean over the batch)."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn: expected loss_fn(output, target) to return a scalar tensor, got {type(loss).__name__}")
    if loss.ndim != 0:
        raise ValueError(f"loss_fn: expected a scalar loss (reduce over the batch, e.g. a mean), got shape "
                         f"{tuple(loss.shape)}")
    if not bool(torch.isfinite(loss)):
        raise ValueError(f"loss_fn: the loss at the current parameters is {float(loss)}; expected a finite value")
    return loss


def hessian_matvec(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor, *,
                   gauss_newton: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``v (P,) -> H v`` (or ``G v``) in float64, for custom linear algebra."""
    curv = _Curvature(model, loss_fn, inputs, targets, gauss_newton)

    def mv(v: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(1, -1), device=curv.dev)
        return curv.matmat(t)[0].cpu().numpy()

    return mv


def hessian_spectrum(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    k: int | None = None,
    *,
    gauss_newton: bool = False,
    max_full: int = 3000,
    chunk: int = 64,
    seed: int = 0,
    progress: bool = False,
    return_eigenvectors: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of the loss Hessian (or of its Gauss-Newton term) at the current parameters.

    Args:
        model: any ``nn.Module`` with finite, materialised (not ``meta``) parameters; those with
            ``requires_grad=False`` are left out; those the loss does not depend on get zero rows
            and columns (exact zero eigenvalues).
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar`` (a mean over the batch); a
            non-scalar or non-finite loss raises ``ValueError``.
        inputs, targets: the data the loss is evaluated on (all at once). Dtype policy: the
            model is evaluated in float64 and real floating ``inputs`` / ``targets`` are cast to
            it; integer ones (token ids, class labels) pass unchanged; complex ones raise ``TypeError``.
        k: ``None`` for the full spectrum (needs ``P <= max_full``); otherwise the ``k``
            algebraically largest eigenvalues by Lanczos (``eigsh(which="LA")``).
        gauss_newton: the spectrum of ``G = (1/n) Σ Jᵀ (∂²ℓ/∂f²) J`` instead of ``H``.
        max_full: largest parameter count for which the full matrix is built.
        chunk: Hessian-vector products per batched autograd call when building the full matrix.
        seed: seeds Lanczos' start vector.
        progress: ``tqdm`` bar over the full-matrix chunks.
        return_eigenvectors: also return the eigenvectors, ``(P, P)`` or ``(P, k)`` columns in the
            order of the eigenvalues (parameters in ``model.parameters()`` order, each flattened),
            each with its largest-magnitude entry positive (:func:`mechnb._linalg.canonical_signs`).

    Returns:
        float64 eigenvalues in descending order: ``(P,)`` or ``(k,)``; with
        ``return_eigenvectors``, ``(eigenvalues, eigenvectors)``. Count the zero ones with
        :func:`hessian_nullity`.
    """
    check_materialized(model, "model", finite=True)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable loss_fn(output, target) -> scalar, got {type(loss_fn).__name__}")
    check_tensor("inputs", inputs)
    check_tensor("targets", targets)
    for name, t in (("inputs", inputs), ("targets", targets)):
        if t.is_complex():  # dtype policy: real floats are cast to float64, integers (ids, labels) pass as they are
            raise TypeError(f"{name}: expected a real floating-point tensor (cast to float64) or an integer tensor, "
                            f"got dtype {t.dtype}")
    if inputs.ndim == 0 or targets.ndim == 0 or inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs, targets: expected the same leading (sample) dimension, got shapes "
                         f"{tuple(inputs.shape)} and {tuple(targets.shape)}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model: expected at least one parameter with requires_grad=True, got none")
    curv = _Curvature(model, loss_fn, inputs, targets, bool(gauss_newton))
    P = curv.P
    if k is None:
        max_full = check_positive_int("max_full", max_full)
        if P > max_full:
            raise ValueError(f"k: the model has {P} parameters (> max_full={max_full}); pass k=<number of top "
                             f"eigenvalues> for Lanczos, or raise max_full")
        chunk = check_positive_int("chunk", chunk)
        eye = torch.eye(P, dtype=torch.float64, device=curv.dev)
        rows = [curv.matmat(eye[s : s + chunk]) for s in tqdm(range(0, P, chunk), disable=not progress,
                                                                 desc="Hessian", leave=False)]
        H = torch.cat(rows, dim=0)
        if return_eigenvectors:
            ev, vec = sym_eig(H)  # symmetrised, descending, canonical signs
            return ev.cpu().numpy(), vec.cpu().numpy()
        H = 0.5 * (H + H.T)
        return torch.linalg.eigvalsh(H).flip(0).cpu().numpy()
    k = check_positive_int("k", k)
    if k >= P:
        raise ValueError(f"k: Lanczos needs k < number of parameters ({P}), got {k}; use k=None for all")
    op = LinearOperator((P, P), matvec=lambda v: curv.matmat(torch.as_tensor(
        np.asarray(v, dtype=np.float64).reshape(1, -1), device=curv.dev))[0].cpu().numpy(), dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(P)
    if return_eigenvectors:
        vals, vecs = eigsh(op, k=k, which="LA", v0=v0, return_eigenvectors=True)
        order = np.argsort(vals)[::-1]
        return vals[order].copy(), canonical_signs(np.ascontiguousarray(vecs[:, order]))
    vals = eigsh(op, k=k, which="LA", v0=v0, return_eigenvectors=False)
    return np.sort(vals)[::-1].copy()


def hessian_nullity(eigenvalues: np.ndarray | torch.Tensor, *, rtol: float | None = None,
                    min_gap: float = DEFAULT_MIN_GAP) -> RankDecision:
    """The numerically zero eigenvalues of a (full) Hessian spectrum, with the gap that separates them.

    An eigenvalue counts as zero when ``|λ| <= rtol · max|λ|``; the default ``rtol = P · eps``
    (float64) is numpy's ``matrix_rank(hermitian=True)`` convention, the size of the round-off
    of a backward-stable symmetric eigensolver on a ``(P, P)`` matrix. Exactly flat directions
    (symmetries of the loss, e.g. the softmax's logit shift or inputs that span a subspace) sit
    at that round-off; the report's ``gap`` says how far above it the smallest non-zero ``|λ|``
    is. For Sagun et al.'s bulk (1706.04454) the near-zero-but-not-zero eigenvalues are real
    curvature, so a small gap means "near-zero", not "zero": read ``.thin``.

    Args:
        eigenvalues: ``(P,)`` the full spectrum (:func:`hessian_spectrum` with ``k=None``), any order.
        rtol: relative threshold on ``|λ|``; default ``P · eps(float64)``.
        min_gap: gaps below this mark the decision as thin.

    Returns:
        A :class:`mechnb._linalg.RankDecision`: ``.nullity`` the zero count, ``.gap`` the ratio
        of the smallest non-zero ``|λ|`` to the largest zero one, ``.label()`` e.g. ``"125 (gap 1e+09)"``.
    """
    ev = check_array("eigenvalues", eigenvalues, ndim=1)
    if ev.size == 0:
        raise ValueError("eigenvalues: expected the (P,) spectrum of a Hessian, got an empty array")
    return rank_decision(np.abs(ev), rtol=rtol, shape=(ev.size, ev.size), dtype=torch.float64, min_gap=min_gap)
