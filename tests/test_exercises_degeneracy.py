"""The check functions of notebook 01 (:mod:`mechnb.exercises.degeneracy`).

For every check: a correct solution passes and typical mistakes fail with the expected and the
returned value. For the checks' known answers: the Gauss-Newton matrices agree between the closed
form, the Hessian route and mechnb's Jacobian, and have the planted numbers of free directions;
the SGLD reference step is the update :func:`mechnb.degeneracy.estimate_llc` applies, and it
samples the tempered posterior (the LLC of ``w1² + w2⁴`` is ``1/2 + 1/4``).
"""

from __future__ import annotations

import copy
import math
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from mechnb import degeneracy
from mechnb.exercises import degeneracy as ex
from mechnb.exercises import registry
from mechnb.experiments.degeneracy import planted_mlp, quartic_toy_llc


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MECHNB_STRICT_CHECKS", raising=False)


# --------------------------------------------------------------------------------------------
# learner solutions: one right, several typical mistakes per check
# --------------------------------------------------------------------------------------------


def _jacobian(model: nn.Module, x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(n * d_out, P)`` Jacobian by a loop of backward passes (how a learner might write it)."""
    m = copy.deepcopy(model).to(dtype)
    out = m(x.to(dtype)).reshape(-1)
    params = list(m.parameters())
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[i], params, retain_graph=True)])
            for i in range(out.numel())]
    return torch.stack(rows)


def gauss_newton(model, x):
    J = _jacobian(model, x)
    return J.T @ J / x.shape[0]


def gauss_newton_jacrev(model, x):  # the notebook's solution: torch.func
    params = {k: p.detach().double() for k, p in model.named_parameters()}
    x = x.double()
    J = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x,)))(params)
    J = torch.cat([j.reshape(x.shape[0] * j.shape[1], -1) for j in J.values()], dim=1)
    return J.T @ J / x.shape[0]


def gram_nullity(acts, rtol=1e-6):
    f = torch.cat([acts, torch.ones(acts.shape[0], 1, dtype=acts.dtype)], dim=1)
    ev = torch.linalg.eigvalsh(f.T @ f / f.shape[0])
    return int((torch.sqrt(ev.clamp_min(0) / ev.max()) <= rtol).sum())


def sgld_step(w, w_star, grad, noise, *, lr, nbeta, localization):
    return w - lr / 2 * (nbeta * grad + localization * (w - w_star)) + math.sqrt(lr) * noise


def llc_estimate(losses, init_loss, nbeta):
    return nbeta * (np.asarray(losses).mean() - init_loss)


def _eig_desc(A, rtol):
    ev, vec = torch.linalg.eigh(0.5 * (A + A.T))
    ev, vec = ev.flip(0), vec.flip(1)
    keep = ev > rtol * ev[0]
    return ev[keep], vec[:, keep], ev, vec


def ib_layer(G, M, rtol=1e-10):  # a learner's version: eigh, flip, cut, whiten, rotate, scale
    D, U, _, _ = _eig_desc(G, rtol)
    Lam, V, _, _ = _eig_desc(D.sqrt()[:, None] * (U.T @ M @ U) * D.sqrt()[None, :], rtol)
    return U @ torch.diag(D.rsqrt()) @ V @ torch.diag(Lam.sqrt()), Lam


def ib_layer_svd(G, M, rtol=1e-10):  # the same through an SVD of the whitened Jacobian factor
    D, U, _, _ = _eig_desc(G, rtol)
    Mw = D.sqrt()[:, None] * (U.T @ M @ U) * D.sqrt()[None, :]
    Uw, S, _ = torch.linalg.svd(0.5 * (Mw + Mw.T))
    keep = S > rtol * S[0]
    V, Lam = Uw[:, keep], S[keep]
    return (U / D.sqrt()) @ V * Lam.sqrt(), Lam


def _ib_no_whitening(G, M, rtol=1e-10):
    D, U, _, _ = _eig_desc(G, rtol)
    Lam, V, _, _ = _eig_desc(U.T @ M @ U, rtol)
    return U @ V * Lam.sqrt(), Lam


def _ib_no_g_cut(G, M, rtol=1e-10):
    _, _, D, U = _eig_desc(G, rtol)
    D = D.clamp_min(1e-300)
    Lam, V, _, _ = _eig_desc(D.sqrt()[:, None] * (U.T @ M @ U) * D.sqrt()[None, :], rtol)
    return (U / D.sqrt()) @ V * Lam.sqrt(), Lam


def _ib_no_lambda_cut(G, M, rtol=1e-10):
    D, U, _, _ = _eig_desc(G, rtol)
    _, _, Lam, V = _eig_desc(D.sqrt()[:, None] * (U.T @ M @ U) * D.sqrt()[None, :], rtol)
    Lam = Lam.clamp_min(0)
    return (U / D.sqrt()) @ V * Lam.sqrt(), Lam


def _ib_ascending(G, M, rtol=1e-10):
    C, Lam = ib_layer(G, M, rtol)
    return C.flip(1), Lam.flip(0)


RIGHT = {
    "check_interaction_basis_layer": [ib_layer, ib_layer_svd],
    "check_gauss_newton": [gauss_newton, gauss_newton_jacrev],
    "check_gram_nullity": [gram_nullity],
    "check_sgld_step": [sgld_step],
    "check_llc_estimate": [llc_estimate],
}

WRONG = {
    "check_interaction_basis_layer": {
        "no whitening (eigenvectors of Uᵀ M' U)": _ib_no_whitening,
        "scaled by Λ^-½ instead of Λ^½": lambda G, M, rtol=1e-10: (lambda C, L: (C / L, L))(*ib_layer(G, M, rtol)),
        "G's zero eigenvalues kept": _ib_no_g_cut,
        "Λ's zero eigenvalues kept": _ib_no_lambda_cut,
        "eigenvalues in eigh's ascending order": _ib_ascending,
        "C without the Λ^½ scaling": lambda G, M, rtol=1e-10: (lambda C, L: (C / L.sqrt(), L))(*ib_layer(G, M, rtol)),
    },
    "check_gauss_newton": {
        "Hessian of the squared error (factor 2)": lambda m, x: 2 * gauss_newton(m, x),
        "divided by n * d_out": lambda m, x: (lambda J: J.T @ J / J.shape[0])(_jacobian(m, x)),
        "float32 (null space lost)": lambda m, x: (lambda J: J.T @ J / x.shape[0])(_jacobian(m, x, torch.float32)),
        "weights only, no biases": lambda m, x: gauss_newton(m, x)[:-1, :-1],
    },
    "check_gram_nullity": {
        "no constant-1 feature":
            lambda a, rtol=1e-6: degeneracy.spectrum_nullity(degeneracy.gram_spectrum(a, with_bias=False)),
        "hard-coded 1e-6 (rtol ignored)": lambda a, rtol=1e-6: gram_nullity(a),
        "λ/λ_max instead of sqrt(λ/λ_max)": lambda a, rtol=1e-6: gram_nullity(a, rtol=math.sqrt(rtol)),
        "rtol times λ_max on λ, no square root":
            lambda a, rtol=1e-6: (lambda ev: int((ev <= rtol * ev.max()).sum()))(
                torch.linalg.eigvalsh((lambda f: f.T @ f / f.shape[0])(
                    torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)))),
    },
    "check_sgld_step": {
        "noise times lr": lambda w, w_star, grad, noise, *, lr, nbeta, localization:
            w - lr / 2 * (nbeta * grad + localization * (w - w_star)) + lr * noise,
        "no 1/2 on the drift": lambda w, w_star, grad, noise, *, lr, nbeta, localization:
            w - lr * (nbeta * grad + localization * (w - w_star)) + math.sqrt(lr) * noise,
        "localisation pushes away": lambda w, w_star, grad, noise, *, lr, nbeta, localization:
            w - lr / 2 * (nbeta * grad - localization * (w - w_star)) + math.sqrt(lr) * noise,
        "forgets nbeta": lambda w, w_star, grad, noise, *, lr, nbeta, localization:
            w - lr / 2 * (grad + localization * (w - w_star)) + math.sqrt(lr) * noise,
    },
    "check_llc_estimate": {
        "first chain only": lambda L, l0, nb: nb * (np.asarray(L)[0].mean() - l0),
        "no nbeta": lambda L, l0, nb: np.asarray(L).mean() - l0,
    },
}


def test_every_check_of_the_topic_is_covered() -> None:
    mine = {name for name, e in registry().items() if e.notebook == ex.NOTEBOOK}
    checks = [n for n in ex.__all__ if n.startswith("check_")]
    assert mine == set(checks) == set(RIGHT) == set(WRONG)
    assert {n for n in ex.__all__ if n.startswith("solution_")} == {"solution_" + n[6:] for n in checks}
    ids = [registry()[name].id for name in checks]
    assert ids == ["1.1", "1.2", "1.3", "1.4", "1.5"], ids  # __all__ lists them in notebook order


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_reference_solution_passes_and_is_written_out(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    import inspect

    solution = getattr(ex, "solution_" + name.removeprefix("check_"))
    res = getattr(ex, name)(solution)
    assert res.passed, capsys.readouterr().out
    body = inspect.getsource(solution)
    for forbidden in ("degeneracy.", "interaction_basis(", "spectrum_nullity(", "gram_spectrum(", "sgld_reference(",
                      "estimate_llc("):
        assert forbidden not in body, (name, forbidden)


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_correct_solutions_pass(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    check = getattr(ex, name)
    for fn in RIGHT[name]:
        res = check(fn)
        out = capsys.readouterr().out
        assert res.passed, out
        assert out.startswith("✔ Exercise") and "correct on all" in out, out


@pytest.mark.parametrize("name, mistake", [(n, m) for n in sorted(WRONG) for m in WRONG[n]])
def test_typical_mistakes_fail_with_expected_and_got(name: str, mistake: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    res = getattr(ex, name)(WRONG[name][mistake])
    out = capsys.readouterr().out
    assert not res.passed and res.n_failed >= 1, out
    assert out.startswith("✘ Exercise") and "expected" in out and "got" in out, out
    assert "hint:" in out or name == "check_llc_estimate", out


@pytest.mark.numerics
def test_float32_gauss_newton_is_told_about_the_null_space(capsys: pytest.CaptureFixture[str]) -> None:
    ex.check_gauss_newton(WRONG["check_gauss_newton"]["float32 (null space lost)"])
    out = capsys.readouterr().out
    assert "zero eigenvalues" in out and "float64" in out, out


# --------------------------------------------------------------------------------------------
# the known answers
# --------------------------------------------------------------------------------------------


@pytest.mark.numerics
def test_gauss_newton_known_answers_agree() -> None:
    g = torch.Generator().manual_seed(5)
    lin = nn.Linear(4, 3).double()
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    closed = ex.linear_gauss_newton(lin.weight.detach(), x)
    via_hessian = ex.gauss_newton_from_hessian(lin, x)
    J = degeneracy.measures._output_param_jacobian(lin, x, [k for k, _ in lin.named_parameters()])
    torch.testing.assert_close(closed, via_hessian, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(closed, J.T @ J / x.shape[0], atol=1e-12, rtol=1e-10)
    # one block (1/n) Σ [x,1][x,1]ᵀ per output: rank 3 * 5, no free direction with 9 generic inputs
    assert ex._nullity(closed.numpy()) == 0


@pytest.mark.numerics
@pytest.mark.parametrize("planted, free", [({}, 6), ({"duplicated": 2}, 6 + 2 * (3 + 1)),
                                           ({"dead": 1}, 6 + (4 + 1 + 3)), ({"unread": 1}, 6 + (4 + 1))])
def test_gauss_newton_from_hessian_has_the_planted_free_directions(planted: dict, free: int) -> None:
    model, x = planted_mlp(seed=0, **planted)
    G = ex.gauss_newton_from_hessian(model, x)
    names = [k for k, _ in model.named_parameters()]
    J = degeneracy.measures._output_param_jacobian(model, x, names)
    torch.testing.assert_close(G, J.T @ J / x.shape[0], atol=1e-10, rtol=1e-8)
    assert ex._nullity(G.numpy()) == free == degeneracy.effective_parameter_count(model, x).nullity


def test_sgld_reference_is_the_update_of_estimate_llc() -> None:
    """Two steps of estimate_llc, replayed with the reference step and estimate_llc's noise stream.

    estimate_llc records the loss *before* each step, so draws 1 and 2 are the losses at w1 and w2;
    its Langevin noise for a parameter named ``weight`` comes from a generator seeded with
    ``seed * 1_000_003 + crc32("weight")`` (see mechnb/degeneracy/llc.py). If that seeding changes,
    update the replay below; the update rule itself must not change.
    """
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 3, generator=g))
    x, y = torch.randn(20, 3, generator=g), torch.randn(20, 2, generator=g)  # targets off the model: ∇L ≠ 0
    C, lr, nbeta, gamma, seed = 3, 1e-3, 10.0, 5.0, 3
    res = degeneracy.estimate_llc(model, degeneracy.sse_loss, (x, y), num_chains=C, num_draws=3, lr=lr,
                                  localization=gamma, nbeta=nbeta, seed=seed, progress=False)

    def loss_and_grad(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = w.detach().requires_grad_(True)
        out = torch.einsum("ni,cki->cnk", x.double(), w.view(C, 2, 3))
        losses = ((out - y.double()) ** 2).sum(-1).mean(-1)
        return losses.detach(), torch.autograd.grad(losses.sum(), w)[0]

    noise_gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(b"weight")) % 2**63)
    w_star = model.weight.detach().reshape(-1).double()
    w = w_star.repeat(C, 1)
    for draw in range(3):
        losses, grad = loss_and_grad(w)
        np.testing.assert_allclose(res.loss_trace[:, draw], losses.numpy(), rtol=1e-5)
        noise = torch.randn(C, 6, generator=noise_gen).double()
        w = ex.sgld_reference(w, w_star, grad, noise, lr=lr, nbeta=nbeta, localization=gamma)


@pytest.mark.numerics
def test_sgld_reference_samples_the_posterior_and_the_llc_of_a_quartic() -> None:
    """L(w) = w1² + w2⁴ (w3 free): E[nβ L] = 1/2 + 1/4 + 0 under exp(-nβ L), the learning coefficient."""
    lam = quartic_toy_llc(ex.sgld_reference, llc_estimate, lr=5e-5, nbeta=1000.0, localization=0.0)
    assert abs(lam - 0.75) < 0.03, lam
