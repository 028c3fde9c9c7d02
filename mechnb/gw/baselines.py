"""Baselines for the GW layer comparison: CKA similarity and linear probes.

* :func:`cka` - centered kernel alignment (Kornblith, Norouzi, Lee & Hinton 2019, *Similarity of
  Neural Network Representations Revisited*, https://arxiv.org/abs/1905.00414), the standard
  measure Gao, Dhurandhar, Natesan Ramamurthy & Wei 2024 (https://arxiv.org/abs/2410.16484)
  compare GW against; the ``L x L`` matrix is :func:`mechnb.gw.layers.layer_cka_matrix`.
* :func:`probe_accuracy` - held-out accuracy of a ridge-regression probe on every layer, to
  interpret the GW groups by what each layer makes linearly decodable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mechnb._checks import check_choice, check_positive_float, check_seed, check_tensor
from mechnb.gw.representations import as_float64, check_reps, power_of_two_scale

__all__ = ["cka", "probe_accuracy"]


def _gram(X: torch.Tensor, kernel: str, rbf_sigma: float) -> torch.Tensor:
    """The ``(n, n)`` Gram matrix ``k(X, X)``: linear ``X X^T`` or RBF with the median-distance bandwidth."""
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
    """HSIC of two ``(n, n)`` Gram matrices (biased up to a constant, or the unbiased estimator)."""
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
        X: ``(n, d1)``; Y: ``(n, d2)``, real (complex raises ``TypeError``). Computed in float64 on
            ``X``'s device, each rescaled by a power of two first (exact; CKA ignores isotropic
            scaling), so huge or tiny but finite entries give the right value, never NaN.

    Returns:
        a float, 1 for identical representations (biased CKA lies in [0, 1]).
    """
    A = power_of_two_scale(as_float64("X", X))[0]
    B = power_of_two_scale(as_float64("Y", Y))[0].to(A.device)
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
    names, Xs = check_reps(reps, min_layers=1)
    check_tensor("y", y, shape=(Xs[0].shape[0],), dims="(n,)", floating=False)
    check_positive_float("ridge", ridge)
    seed = check_seed("seed", seed)
    n = Xs[0].shape[0]
    n_train = int(round(n * check_positive_float("train_frac", train_frac)))
    if not 1 <= n_train < n:
        raise ValueError(f"train_frac: expected a split leaving rows on both sides, got {train_frac} of {n} rows")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:n_train], perm[n_train:]
    classes, yi = torch.unique(y, return_inverse=True)
    out: dict[str, float] = {}
    for name, X in zip(names, Xs):
        X = power_of_two_scale(X)[0]  # exact; standardising removes the scale, and 1e200-sized features cannot overflow
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
