"""Check functions for notebook 01 (degeneracy, the learning coefficient, the Interaction Basis).

Exercises, in notebook order:

* 1.1 the behavioural Gauss-Newton matrix ``(1/n) Σ_x J_w(x)ᵀ J_w(x)`` (2405.10927): known
  answers from a closed form (one linear layer) and from the Hessian of the squared error at a
  zero-residual point, ``2 G``, computed by :func:`mechnb.degeneracy.hessian.hessian_matvec`;
* 1.2 the nullity of a layer's Gram matrix: known answers from :mod:`mechnb.degeneracy` on
  networks with planted degeneracy;
* 1.3 one SGLD step of the LLC sampler (Lau et al. 2023): known answers from the update rule on
  seeded inputs, with the Langevin noise passed in as an argument so the step is deterministic;
* 1.4 the LLC estimate from the SGLD losses (Lau et al. 2023, Eq. 9).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from mechnb.exercises._core import Case, CheckResult, compare, exercise, run_cases

__all__ = ["check_gauss_newton", "check_gram_nullity", "check_sgld_step", "check_llc_estimate",
           "check_interaction_basis_layer", "solution_gauss_newton", "solution_gram_nullity", "solution_sgld_step",
           "solution_llc_estimate", "solution_interaction_basis_layer"]

NOTEBOOK = "01_degeneracy_and_the_interaction_basis"


# --------------------------------------------------------------------------------------------
# 1.1 the behavioural Gauss-Newton matrix
# --------------------------------------------------------------------------------------------


def linear_gauss_newton(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Closed form of ``G`` for one ``nn.Linear`` (weight ``(d_out, d_in)``, then bias ``(d_out,)``).

    Output ``k`` is ``W[k] · x + b[k]``, so its parameter gradient is ``x̃ = [x, 1]`` on ``W[k], b[k]``
    and zero elsewhere: ``G`` holds one copy of ``(1/n) Σ_x x̃ x̃ᵀ`` per output, on the entries
    of ``W[k]`` (flattened row-major, indices ``k d_in + j``) and ``b[k]`` (index ``d_out d_in + k``).
    """
    d_out, d_in = weight.shape
    x = x.to(torch.float64)
    n = x.shape[0]
    xt = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    gram = xt.T @ xt / n  # (d_in + 1, d_in + 1)
    P = d_out * d_in + d_out
    G = torch.zeros(P, P, dtype=torch.float64)
    for k in range(d_out):
        idx = torch.tensor(list(range(k * d_in, (k + 1) * d_in)) + [d_out * d_in + k])
        G[idx.unsqueeze(1), idx.unsqueeze(0)] = gram
    return G


def gauss_newton_from_hessian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``G = H / 2``: the Hessian of ``L(w) = (1/n) Σ_x |f(x; w) - f(x; w*)|²`` at ``w = w*``.

    At ``w*`` the residuals are exactly zero (the targets come from the same float64 model), so the
    Hessian of the squared error is its Gauss-Newton term ``(2/n) Σ_x J_wᵀ J_w``. Built column by
    column from :func:`mechnb.degeneracy.hessian.hessian_matvec`, in float64.
    """
    from mechnb.degeneracy.hessian import hessian_matvec
    from mechnb.degeneracy.llc import sse_loss

    m64 = copy.deepcopy(model).to(torch.float64)
    x64 = x.detach().to(torch.float64)
    with torch.no_grad():
        y = m64(x64)
    mv = hessian_matvec(m64, sse_loss, x64, y)
    P = sum(p.numel() for p in m64.parameters())
    H = np.stack([mv(e) for e in np.eye(P)], axis=1)
    return torch.from_numpy(0.5 * (H + H.T) / 2.0)


def _nullity(G: np.ndarray) -> int:
    from mechnb.degeneracy import spectrum_nullity

    G = 0.5 * (G + G.T)
    return spectrum_nullity(np.linalg.eigvalsh(G)[::-1])


def _compare_gauss_newton(expected: torch.Tensor, got: object) -> str | None:
    """Entry-wise comparison, then the number of zero eigenvalues (what the notebook uses G for)."""
    scale = float(expected.abs().max())
    problem = compare(expected, got, atol=1e-6 * scale, rtol=1e-4)
    if problem:
        return problem
    got_np = np.asarray(got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    n_exp, n_got = _nullity(expected.numpy()), _nullity(got_np)
    if n_exp != n_got:
        return (f"the entries match, but the number of zero eigenvalues (the free directions) differs: expected "
                f"{n_exp}, got {n_got} — float32 round-off (~1e-7 relative) hides the null space; work in float64")
    return None


@exercise("1.1", "behavioural Gauss-Newton matrix", notebook=NOTEBOOK)
def check_gauss_newton(fn: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``fn(model, x) -> Tensor (P, P)``: ``G = (1/n) Σ_x J_w(x)ᵀ J_w(x)``, ``J_w(x) = ∂f(x; w)/∂w``.

    ``J_w(x)`` is ``(d_out, P)``: the derivatives of the ``d_out`` outputs for input ``x`` with
    respect to all ``P`` parameters, in ``model.parameters()`` order, each parameter flattened
    (row-major); ``n`` is the number of inputs. Known answers: the closed form
    :func:`linear_gauss_newton` for one linear layer, and half the Hessian of the squared error at
    a zero-residual point (:func:`gauss_newton_from_hessian`) for ReLU networks from
    :func:`mechnb.experiments.degeneracy.planted_mlp`. The returned matrix must also have the right
    number of zero eigenvalues (``sqrt(λ / λ_max) <= 1e-6``), which needs float64.
    """
    from mechnb.experiments.degeneracy import planted_mlp
    from mechnb.models import MLP

    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, 3, generator=g))
        lin.bias.copy_(torch.randn(2, generator=g))
    x_lin = torch.randn(5, 3, generator=g, dtype=torch.float64)
    lin = lin.double()

    torch.manual_seed(0)  # MLP's default initialisation, then overwritten below
    deep = MLP([2, 4, 4, 2])
    with torch.no_grad():
        for name, p in deep.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name.endswith("bias") else 1.0))
    x_deep = torch.randn(40, 2, generator=g)

    generic, x_pl = planted_mlp(seed=0)
    copies, _ = planted_mlp(seed=0, duplicated=2)

    hint_n = "divide by n, the number of inputs (rows of x) — not by n * d_out and without a factor 2"
    cases = [
        Case((lin, x_lin), linear_gauss_newton(lin.weight.detach(), x_lin), compare=_compare_gauss_newton,
             label="nn.Linear(3, 2) (float64) on 5 inputs (closed form: one block (1/n) Σ [x,1][x,1]ᵀ per output)",
             hint=hint_n + "; parameters in model.parameters() order: the weight (row-major), then the bias"),
        Case((generic, x_pl), gauss_newton_from_hessian(generic, x_pl), compare=_compare_gauss_newton,
             label="planted_mlp(seed=0): 4 -> 6 ReLUs -> 3 (float32 model), 256 inputs",
             hint=hint_n + "; sum J(x)ᵀ J(x) over every input and every output"),
        Case((copies, x_pl), gauss_newton_from_hessian(copies, x_pl), compare=_compare_gauss_newton,
             label="planted_mlp(seed=0, duplicated=2): 14 free directions",
             hint="compute in float64 (a float64 copy of the model and of x), or the zero eigenvalues are lost"),
        Case((deep, x_deep), gauss_newton_from_hessian(deep, x_deep), compare=_compare_gauss_newton,
             label="MLP([2, 4, 4, 2]) (two hidden layers, 2 outputs), 40 inputs",
             hint="include every parameter of every layer, in model.parameters() order"),
    ]
    return run_cases(fn, cases)


# --------------------------------------------------------------------------------------------
# 1.2 the Gram-matrix nullity
# --------------------------------------------------------------------------------------------


@exercise("1.2", "Gram-matrix nullity", notebook=NOTEBOOK)
def check_gram_nullity(fn: Callable[..., int]) -> CheckResult:
    """Check ``fn(acts, rtol=1e-6) -> int``: nullity of ``G = (1/n) sum_x f f^T`` with a constant 1 appended.

    ``acts`` is ``(n, d)`` (float64); ``G`` is ``(d + 1, d + 1)`` (2405.10927 Sec. 3.1). An
    eigenvalue counts as zero when ``sqrt(lambda / lambda_max) <= rtol``. The cases are hidden
    activations of :func:`mechnb.experiments.degeneracy.planted_mlp` networks (duplicated, dead
    neurons) and a low-rank matrix; expected values from :func:`~mechnb.degeneracy.gram_spectrum` +
    :func:`~mechnb.degeneracy.spectrum_nullity`.
    """
    from mechnb import degeneracy
    from mechnb.experiments.degeneracy import planted_mlp

    def hidden(**planted: int) -> torch.Tensor:
        model, x = planted_mlp(seed=0, **planted)
        with torch.no_grad():
            return model(x, return_activations=True)[1][0].double()  # output of layers[0] after the ReLU

    g = torch.Generator().manual_seed(1)
    low_rank = torch.randn(200, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 7, generator=g,
                                                                                     dtype=torch.float64)
    one_hot = torch.nn.functional.one_hot(torch.arange(60) % 5, 5).double()  # columns sum to the constant 1
    hint = "append a column of ones to acts before forming G (the next layer's bias reads it)"
    cases = []
    for label, acts in [("6 generic ReLUs", hidden()), ("6 generic + 2 duplicated ReLUs", hidden(duplicated=2)),
                        ("6 generic + 3 dead ReLUs", hidden(dead=3)),
                        ("(200, 7) activations of rank 3", low_rank),
                        ("one-hot codes (their sum is the constant 1)", one_hot)]:
        expected = degeneracy.spectrum_nullity(degeneracy.gram_spectrum(acts, with_bias=True))
        cases.append(Case((acts,), int(expected), label=f"acts = {label} {tuple(acts.shape)}", hint=hint))
    # the threshold convention: singular values σ/σ_max of [acts, 1] / sqrt(n) planted at these ratios, and
    # thresholds chosen so that λ/λ_max (= ratio²) or a hard-coded 1e-6 count differently from sqrt(λ/λ_max)
    graded = graded_activations(GRADED_RATIOS)
    ratios = ", ".join(f"{r:g}" for r in GRADED_RATIOS)
    conv = ("the threshold is on sqrt(λ / λ_max) (a singular-value ratio), not on λ / λ_max; and use the rtol "
            "argument, do not hard-code it")
    for rtol in (1e-6, 1e-3, 0.05):
        expected = degeneracy.spectrum_nullity(degeneracy.gram_spectrum(graded, with_bias=True), rtol)
        cases.append(Case((graded,), int(expected), kwargs={"rtol": rtol}, hint=conv,
                          label=f"acts {tuple(graded.shape)} whose [acts, 1] has σ/σ_max = {ratios}; rtol={rtol:g}"))
    return run_cases(fn, cases)


GRADED_RATIOS = (1.0, 0.5, 0.1, 0.02, 1e-4, 1e-7)


def graded_activations(ratios: tuple[float, ...] = GRADED_RATIOS, n: int = 64, seed: int = 0) -> torch.Tensor:
    """``(n, len(ratios) - 1)`` float64 activations whose extended matrix ``[acts, 1] / sqrt(n)`` has
    singular values ``ratios · 2`` up to the constant's one, which is ``1`` (ratio 0.5 of the largest).

    Built as ``[acts, 1] = Q diag(s) R`` with ``Q`` orthonormal (first column ``1/sqrt(n)``) and ``R``
    orthogonal with last column ``e_0`` (so the last column of the product is the constant 1).
    ``ratios`` must contain 0.5 (the constant direction) and start with 1.
    """
    if not ratios or ratios[0] != 1.0 or 0.5 not in ratios:
        raise ValueError(f"ratios: expected a tuple starting with 1.0 and containing 0.5, got {ratios!r}")
    g = torch.Generator().manual_seed(seed)
    d = len(ratios) - 1
    raw = torch.cat([torch.ones(n, 1, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)], 1)
    Q, _ = torch.linalg.qr(raw)  # (n, d + 1), column 0 = ±1/sqrt(n)
    Q = Q * torch.sign(Q[0:1, :])  # column 0 = +1/sqrt(n)
    rest = [2.0 * r for i, r in enumerate(ratios) if i != ratios.index(0.5)]
    s = torch.tensor([n**0.5] + [r * n**0.5 for r in rest], dtype=torch.float64)  # constant: σ = 1 after /sqrt(n)
    rot, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    R = torch.zeros(d + 1, d + 1, dtype=torch.float64)
    R[0, d] = 1.0
    R[1:, :d] = rot
    f = (Q * s[None, :]) @ R  # (n, d + 1); last column = Q[:, 0] * sqrt(n) = 1
    return f[:, :d].contiguous()


# --------------------------------------------------------------------------------------------
# 1.3 one SGLD step
# --------------------------------------------------------------------------------------------


def sgld_reference(w: torch.Tensor, w_star: torch.Tensor, grad: torch.Tensor, noise: torch.Tensor, *, lr: float,
                   nbeta: float, localization: float) -> torch.Tensor:
    """``w - (ε/2) (nβ ∇L_m(w) + γ (w - w*)) + sqrt(ε) ξ``; ``ε = lr``, ``γ = localization``, ``ξ = noise``.

    The update :func:`mechnb.degeneracy.estimate_llc` applies to every chain at every step; ``ξ``
    is standard normal, so ``sqrt(ε) ξ`` is the ``N(0, ε)`` Langevin noise.
    """
    w, w_star, grad, noise = (torch.as_tensor(t, dtype=torch.float64) for t in (w, w_star, grad, noise))
    return w - 0.5 * lr * (nbeta * grad + localization * (w - w_star)) + math.sqrt(lr) * noise


@exercise("1.3", "one SGLD step", notebook=NOTEBOOK)
def check_sgld_step(fn: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``fn(w, w_star, grad, noise, *, lr, nbeta, localization) -> Tensor``: one SGLD step.

    ``Δw = -(ε/2) (nβ ∇L_m(w) + γ (w - w*)) + N(0, ε)`` (the sampler of Lau et al. 2023 that
    :func:`mechnb.degeneracy.estimate_llc` runs), with the standard-normal ``noise`` passed in, so
    the new ``w = w + Δw`` is determined. ``w``, ``grad`` and ``noise`` share a shape (``(P,)``,
    or ``(C, P)`` for ``C`` chains); ``w_star`` is ``(P,)``. Known answers from
    :func:`sgld_reference` on inputs that switch the three terms on one at a time, then all at once.
    """
    g = torch.Generator().manual_seed(0)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    w, w_star, grad, noise = rnd(5), rnd(5), rnd(5), rnd(5)
    zero = torch.zeros(5, dtype=torch.float64)
    W, Wst, Gr, Nz = rnd(4, 6), rnd(6), rnd(4, 6), rnd(4, 6)
    settings = [
        ((w, w_star, grad, zero), dict(lr=0.01, nbeta=10.0, localization=0.0),
         "gradient only: noise = 0, localization = 0, lr 0.01, nbeta 10",
         "the drift is -(lr/2) * nbeta * grad: mind the 1/2 and the nbeta"),
        ((w, w, zero, noise), dict(lr=0.04, nbeta=10.0, localization=5.0),
         "noise only: w = w_star, grad = 0, lr 0.04",
         "N(0, ε) has standard deviation sqrt(ε): add sqrt(lr) * noise, not lr * noise"),
        ((w, w_star, zero, zero), dict(lr=1e-3, nbeta=10.0, localization=100.0),
         "localization only: grad = 0, noise = 0, gamma 100, lr 1e-3",
         "gamma * (w - w_star) pulls w back towards w_star: it enters the drift with the gradient, times -lr/2"),
        ((W, Wst, Gr, Nz), dict(lr=1e-4, nbeta=500.0, localization=1.0),
         "all terms, 4 chains x 6 parameters (w_star (6,) shared), lr 1e-4, nbeta 500, gamma 1",
         "if cases 1-3 pass, this is about shapes: w (4, 6) and w_star (6,) broadcast; keep the chains apart"),
    ]
    cases = [Case(args, sgld_reference(*args, **kw), kwargs=kw, label=label, hint=hint)
             for args, kw, label, hint in settings]
    return run_cases(fn, cases, atol=1e-9, rtol=1e-7)


# --------------------------------------------------------------------------------------------
# 1.4 the LLC estimate
# --------------------------------------------------------------------------------------------


@exercise("1.4", "LLC estimate from SGLD losses", notebook=NOTEBOOK)
def check_llc_estimate(fn: Callable[..., float]) -> CheckResult:
    """Check ``fn(losses, init_loss, nbeta) -> float``: ``nbeta * (mean(losses) - init_loss)`` (Lau et al. Eq. 9).

    ``losses`` is ``(num_chains, num_draws)``: the loss ``L_n`` at every kept SGLD draw of every
    chain; the expectation over the tempered posterior is the mean over chains *and* draws.
    """
    g = np.random.default_rng(0)
    traces = 0.5 + 0.01 * g.random((4, 50))
    uneven = np.stack([np.full(10, 0.2), np.full(10, 0.4)])
    cases = [
        Case((traces, 0.5, 100.0), float(100.0 * (traces.mean() - 0.5)), label="losses (4, 50), init 0.5, nbeta 100",
             hint="average over every chain and every draw, then subtract L_n(w*)"),
        Case((uneven, 0.1, 10.0), float(10.0 * (uneven.mean() - 0.1)),
             label="two chains at 0.2 and 0.4, init 0.1, nbeta 10",
             hint="both chains count: the mean is over the chains and the draws"),
        Case((np.full((3, 5), 1.0), 1.0, 50.0), 0.0, label="chains that never leave L_n(w*)"),
        Case((torch.from_numpy(traces), 0.49, 30.0), float(30.0 * (traces.mean() - 0.49)),
             label="the same losses as a torch tensor, init 0.49, nbeta 30"),
    ]
    return run_cases(fn, cases, atol=1e-8, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# 1.5 the Interaction Basis of one layer (build the method)
# --------------------------------------------------------------------------------------------


def _ib_layer_inputs(model: nn.Module, x: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """``(G, M', basis)`` of one layer of an MLP: the Gram of ``[f^l, 1]``, the package's ``M'`` and its basis."""
    from mechnb import degeneracy
    from mechnb.degeneracy._mlp import mlp_forward

    basis = degeneracy.interaction_basis(model, x, layers=[layer])
    acts, _ = mlp_forward(model, x)
    f = basis.extend(layer, acts[layer])
    return f.T @ f / f.shape[0], basis.M[layer].clone(), basis


def _compare_ib_layer(G: torch.Tensor, Mp: torch.Tensor) -> Callable[[object, object], str | None]:
    """Compare ``(C, Λ)``: shapes, ``Λ``, ``CᵀGC = diag(Λ)``, the identity Jacobian Gram, ``C`` up to column signs."""

    def cmp(expected: object, got: object) -> str | None:
        C_exp, L_exp = expected  # type: ignore[misc]
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            return f"expected a tuple (C, Lambda), got {type(got).__name__}"
        C, Lam = (torch.as_tensor(np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t),
                                  dtype=torch.float64) for t in got)
        if C.shape != C_exp.shape:
            return (f"expected C of shape {tuple(C_exp.shape)} (d_l + 1 rows, one column per kept direction), got "
                    f"{tuple(C.shape)}; drop the eigenvalues of G and of M at or below rtol · max")
        if Lam.shape != L_exp.shape:
            return f"expected Lambda of shape {tuple(L_exp.shape)}, got {tuple(Lam.shape)}"
        problem = compare(L_exp, Lam, atol=1e-9 * float(L_exp.max()), rtol=1e-6, path="Lambda")
        if problem:
            return problem + " (Λ: the eigenvalues of the whitened M = D^½ Uᵀ M' U D^½, largest first)"
        scale = float(L_exp.max())
        dev = float((C.T @ G @ C - torch.diag(Lam)).abs().max())
        if dev > 1e-7 * scale:
            return (f"expected CᵀGC = diag(Λ) (the new coordinates are uncorrelated with variances Λ), got a largest "
                    f"deviation of {dev:.3g} (Λ_max {scale:.3g})")
        P = Lam.reciprocal()[:, None] * (C.T @ G)  # the pseudo-inverse of C on the data: f̂ -> f
        eye = P @ Mp @ P.T
        dev = float((eye - torch.eye(eye.shape[0], dtype=eye.dtype)).abs().max())
        if dev > 1e-6:
            return (f"expected the Jacobian Gram in the new coordinates to be the identity, got a largest deviation "
                    f"of {dev:.3g} from I")
        signs = torch.sign((C * C_exp).sum(0))
        signs[signs == 0] = 1.0
        return compare(C_exp, C * signs[None, :], atol=1e-7 * float(C_exp.abs().max()), rtol=1e-5,
                       path="C (up to the sign of each column)")

    return cmp


@exercise("1.5", "the Interaction Basis of one layer", notebook=NOTEBOOK)
def check_interaction_basis_layer(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> CheckResult:
    """Check ``fn(G, M, rtol=1e-10) -> (C, Lambda)``: the Interaction Basis of one layer (2405.10927 Sec. 6).

    ``G (d, d)`` is the Gram matrix of the layer's extended activations ``[f, 1]``, ``M (d, d)``
    the Jacobian Gram ``M' = (1/n) Σ_x Jᵀ J`` of what comes next. The answer: ``G = U D Uᵀ``
    keeping ``D > rtol · D_max``; ``M = D^½ Uᵀ M' U D^½ = V Λ Vᵀ`` keeping ``Λ > rtol · Λ_max``
    (descending); ``C = U D^{-½} V Λ^½`` ``(d, d̂)``. Checked on a synthetic full-rank layer and on
    layers of :func:`mechnb.experiments.degeneracy.planted_mlp` networks against
    :func:`mechnb.degeneracy.interaction_basis` (its ``M`` as input, its ``C`` and ``Λ`` as
    answers), through ``Λ``, ``CᵀGC = diag(Λ)``, the identity Jacobian Gram
    ``(Λ⁻¹CᵀG) M' (Λ⁻¹CᵀG)ᵀ = I`` and ``C`` up to the sign of each column.
    """
    from mechnb.experiments.degeneracy import planted_mlp

    g = torch.Generator().manual_seed(3)
    f = torch.cat([torch.randn(80, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.5]) + 0.3,
                   torch.ones(80, 1, dtype=torch.float64)], dim=1)
    G0 = f.T @ f / 80
    B = torch.randn(5, 4, generator=g, dtype=torch.float64)
    M0 = B.T @ B
    generic, x = planted_mlp(seed=0)
    copies, _ = planted_mlp(seed=0, duplicated=2)
    cases = []
    cases.append(Case((G0, M0), solution_interaction_basis_layer(G0, M0), compare=_compare_ib_layer(G0, M0),
                      label="synthetic layer: G of [f, 1] (80 samples, 3 features), M' = BᵀB of full rank 4",
                      hint="whiten before the rotation: M = D^½ Uᵀ M' U D^½, and C = U D^{-½} V Λ^½"))
    steps = ("PCA of G (drop D <= rtol·D_max), whiten M = D^½ Uᵀ M' U D^½, its eigenvectors largest first "
             "(drop Λ <= rtol·Λ_max), then C = U D^{-½} V Λ^½")
    for label, model, layer, hint in [
            ("planted_mlp(seed=0), layer 1 (6 ReLUs + 1): M' from the 3 outputs has rank 3", generic, 1, steps),
            ("planted_mlp(seed=0), layer 0 (the 4 inputs + 1)", generic, 0, steps),
            ("planted_mlp(seed=0, duplicated=2), layer 1: G has 2 zero eigenvalues", copies, 1,
             "drop the eigenvalues of G at or below rtol · D_max before dividing by sqrt(D); " + steps),
            ("planted_mlp(seed=0), output layer 2: M' = I (so C is the PCA basis, Λ = D)", generic, 2, steps)]:
        G, Mp, basis = _ib_layer_inputs(model, x, layer)
        cases.append(Case((G, Mp), (basis.C[layer], basis.Lambda[layer]), compare=_compare_ib_layer(G, Mp),
                          label=label, hint=hint))
    return run_cases(fn, cases)


def solution_interaction_basis_layer(G: torch.Tensor, M: torch.Tensor, rtol: float = 1e-10
                                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for exercise 1.5: ``C = U D^{-½} V Λ^½`` and ``Λ`` (descending) from ``G`` and ``M'`` (float64).

    Args:
        G: ``(d, d)`` Gram matrix of the extended activations.
        M: ``(d, d)`` Jacobian Gram ``M'`` of what comes next, w.r.t. the same coordinates.
        rtol: eigenvalues of ``G`` and of the whitened ``M`` at or below ``rtol`` times the largest are dropped.

    Returns:
        ``(C (d, d̂), Lambda (d̂,))``.
    """
    G = 0.5 * (G + G.T).to(torch.float64)
    M = 0.5 * (M + M.T).to(torch.float64)
    D, U = torch.linalg.eigh(G)  # ascending
    D, U = D.flip(0), U.flip(1)
    keep = D > rtol * D[0]
    D, U = D[keep], U[:, keep]  # step 1: PCA, the directions the data visit
    sqD = D.sqrt()
    Mw = sqD[:, None] * (U.T @ M @ U) * sqD[None, :]  # step 3: M' in whitened coordinates z = D^-½ Uᵀ f
    Mw = 0.5 * (Mw + Mw.T)
    Lam, V = torch.linalg.eigh(Mw)
    Lam, V = Lam.flip(0), V.flip(1)
    keep = Lam > rtol * Lam[0]
    Lam, V = Lam[keep], V[:, keep]  # directions the next layer reads
    C = (U / sqD[None, :]) @ V * Lam.sqrt()[None, :]  # steps 2-4: whiten, rotate, scale
    return C, Lam


# --------------------------------------------------------------------------------------------
# reference solutions of 1.1-1.4 (written out: what the learner notebooks fall back to)
# --------------------------------------------------------------------------------------------


def solution_gauss_newton(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference for exercise 1.1: ``G = (1/n) Σ_x J_w(x)ᵀ J_w(x)`` ``(P, P)`` float64, one backward pass per output row."""
    m = copy.deepcopy(model).to(torch.float64)  # float64: the null space is what we are after
    params = list(m.parameters())
    out = m(x.detach().to(torch.float64)).reshape(-1)  # (n * d_out,)
    rows = []
    for out_i in out:
        grads = torch.autograd.grad(out_i, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                               for g, p in zip(grads, params)]))
    J = torch.stack(rows)  # (n * d_out, P)
    return J.T @ J / x.shape[0]


def solution_gram_nullity(acts: torch.Tensor, rtol: float = 1e-6) -> int:
    """Reference for exercise 1.2: eigenvalues of ``G`` of ``[acts, 1]`` with ``sqrt(λ / λ_max) <= rtol``."""
    acts = torch.as_tensor(acts, dtype=torch.float64)
    f = torch.cat([acts, torch.ones(acts.shape[0], 1, dtype=acts.dtype)], dim=1)  # (n, d + 1)
    ev = torch.linalg.eigvalsh(f.T @ f / f.shape[0]).clamp_min(0.0)
    return int((torch.sqrt(ev / ev.max()) <= rtol).sum())


def solution_sgld_step(w: torch.Tensor, w_star: torch.Tensor, grad: torch.Tensor, noise: torch.Tensor, *,
                       lr: float, nbeta: float, localization: float) -> torch.Tensor:
    """Reference for exercise 1.3: ``w - (ε/2)(nβ ∇L + γ (w - w*)) + sqrt(ε) ξ`` (broadcasts over chains)."""
    drift = nbeta * grad + localization * (w - w_star)
    return w - 0.5 * lr * drift + math.sqrt(lr) * noise


def solution_llc_estimate(losses: np.ndarray | torch.Tensor, init_loss: float, nbeta: float) -> float:
    """Reference for exercise 1.4: ``nβ (mean over chains and draws of L - L_n(w*))`` (Lau et al. Eq. 9)."""
    arr = losses.detach().cpu().numpy() if isinstance(losses, torch.Tensor) else np.asarray(losses)
    return float(nbeta * (arr.astype(np.float64).mean() - init_loss))
