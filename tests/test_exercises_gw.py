"""The check functions of notebook 03 (mechnb.exercises.gw).

For every check: a correct solution passes with the success line; a typical mistake fails with
"expected" and "got" in the report; the written-out reference ``solution_<name>`` passes; a learner
function that only calls the package function the exercise asks for fails with "write it yourself".
For the checks: their known answers are right (closed forms by hand, POT's own GW objective,
mechnb.gw.distance_matrix, mechnb.gw.layer_gw_matrix), and the ids follow the order of the exercises
in the notebook.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import ot
import pytest
import torch
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from mechnb import experiments, gw
from mechnb.exercises import gw as gw_ex
from mechnb.exercises import registry

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_gromov_wasserstein_subnetworks.ipynb"


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MECHNB_STRICT_CHECKS", raising=False)


# --------------------------------------------------------------------------------------------
# solutions: right and typically wrong
# --------------------------------------------------------------------------------------------


def gw_loss(C1, C2, T):
    p, q = T.sum(1), T.sum(0)
    return float(p @ (C1 * C1) @ p + q @ (C2 * C2) @ q - 2 * ((C1 @ T @ C2.T) * T).sum())


def gw_loss_einsum(C1, C2, T):  # the definition, term by term: also right
    return float(torch.einsum("ijkl,ij,kl->", (C1[:, None, :, None] - C2[None, :, None, :]) ** 2, T, T))


def gw_loss_uniform(C1, C2, T):  # assumes uniform weights instead of T's marginals
    p = torch.full((C1.shape[0],), 1.0 / C1.shape[0], dtype=C1.dtype)
    q = torch.full((C2.shape[0],), 1.0 / C2.shape[0], dtype=C2.dtype)
    return float(p @ (C1 * C1) @ p + q @ (C2 * C2) @ q - 2 * ((C1 @ T @ C2.T) * T).sum())


def gw_loss_no_two(C1, C2, T):  # forgets the 2 of the cross term
    p, q = T.sum(1), T.sum(0)
    return float(p @ (C1 * C1) @ p + q @ (C2 * C2) @ q - ((C1 @ T @ C2.T) * T).sum())


def distance_matrix(X):
    C = torch.cdist(X, X)
    return C / C.max()


def distance_matrix_squared(X):  # squared distances
    C = torch.cdist(X, X) ** 2
    return C / C.max()


def linear_cka(X, Y):
    X, Y = X - X.mean(0), Y - Y.mean(0)
    return float((X.T @ Y).norm() ** 2 / ((X.T @ X).norm() * (Y.T @ Y).norm()))


def uncentred_cka(X, Y):
    K, L = X @ X.T, Y @ Y.T
    return float((K * L).sum() / (K.norm() * L.norm()))


def layer_gw_groups(reps, *, normalize="max", fill="both", diagonal=0.0, init="identity", method="average",
                    cut="gap"):
    """The notebook's answer to 3.5, with switches for the typical mistakes."""
    names = list(reps)
    Cs = [gw.distance_matrix(X, normalize=normalize) for X in reps.values()]
    L = len(Cs)
    M = np.full((L, L), 0.0)
    np.fill_diagonal(M, diagonal)
    for i in range(L):
        for j in range(i + 1, L):
            v = gw.gw_solve(Cs[i], Cs[j], init=init).value
            M[i, j] = v
            if fill == "both":
                M[j, i] = v
    Z = hierarchy.linkage(squareform(M, checks=False), method=method)
    if cut == "gap":
        h = np.concatenate([[0.0], np.sort(Z[:, 2])])
        k = int(np.argmax(np.diff(h)))
        labels = hierarchy.fcluster(Z, t=0.5 * (h[k] + h[k + 1]), criterion="distance")
    else:
        labels = hierarchy.fcluster(Z, t=2, criterion="maxclust")
    return M, gw.layer_groups(labels, names)


def layer_gw_groups_tensor(reps):  # also right: a torch matrix, tuples of names, own distance matrices
    names = list(reps)
    Cs = [torch.cdist(X, X) / torch.cdist(X, X).max() for X in reps.values()]
    M = torch.zeros(len(Cs), len(Cs), dtype=torch.float64)
    for i in range(len(Cs)):
        for j in range(i + 1, len(Cs)):
            M[i, j] = M[j, i] = gw.gw_solve(Cs[i], Cs[j], init="identity").value
    Z = hierarchy.linkage(squareform(M.numpy(), checks=False), method="average")
    h = np.concatenate([[0.0], np.sort(Z[:, 2])])
    k = int(np.argmax(np.diff(h)))
    labels = hierarchy.fcluster(Z, t=0.5 * (h[k] + h[k + 1]), criterion="distance")
    return M, [tuple(g) for g in gw.layer_groups(labels, names)]


LAYER_MISTAKES = {
    "no normalisation": dict(normalize=None),
    "upper triangle only": dict(fill="upper"),
    "diagonal of ones": dict(diagonal=1.0),
    "product start": dict(init="product"),
    **{f"{m} linkage": dict(method=m) for m in ("single", "complete", "weighted", "ward", "centroid", "median")},
    "always two groups": dict(cut="maxclust"),
}


def _mistake(kwargs):
    return lambda reps: layer_gw_groups(reps, **kwargs)


SOLUTIONS = {
    "check_gw_loss": ([gw_loss, gw_loss_einsum], [gw_loss_uniform, gw_loss_no_two]),
    "check_gw_two_point": ([lambda a, b: (a - b) ** 2 / 2], [lambda a, b: (a - b) ** 2, lambda a, b: abs(a - b) / 2]),
    "check_distance_matrix": ([distance_matrix],
                              [distance_matrix_squared, lambda X: torch.cdist(X, X),
                               lambda X: distance_matrix(X) * X.shape[0]]),
    "check_linear_cka": ([linear_cka], [uncentred_cka]),
    "check_layer_gw_groups": ([layer_gw_groups, layer_gw_groups_tensor], [_mistake(k) for k in LAYER_MISTAKES.values()]),
}

#: learner functions that only call the package's own answer: each must fail its check
PACKAGE_CALLS = {
    "check_gw_loss": lambda C1, C2, T: float(ot.gromov.gwloss(*ot.gromov.init_matrix(
        C1.numpy(), C2.numpy(), T.sum(1).numpy(), T.sum(0).numpy(), "square_loss"), T.numpy())),
    "check_gw_two_point": lambda a, b: gw.gw_distance(np.array([[0, a], [a, 0]]), np.array([[0, b], [b, 0]])),
    "check_distance_matrix": lambda X: gw.distance_matrix(X),
    "check_linear_cka": lambda X, Y: gw.cka(X, Y),
    "check_layer_gw_groups": lambda reps: (lambda r: (r.matrix, gw.layer_groups(r.groups(), r.names)))(
        gw.layer_gw_matrix(reps, init="identity", tol=1e-9, dtype="float64", progress=False)),
}


def test_every_check_of_the_topic_is_covered() -> None:
    checks = {n for n in gw_ex.__all__ if n.startswith("check_")}
    assert checks == set(SOLUTIONS) == set(PACKAGE_CALLS)
    assert {n for n in gw_ex.__all__ if n.startswith("solution_")} == {"solution_" + n[6:] for n in checks}
    ours = {name: ex.id for name, ex in registry().items() if ex.notebook == gw_ex.NOTEBOOK}
    assert ours == {"check_gw_loss": "3.1", "check_gw_two_point": "3.2", "check_distance_matrix": "3.3",
                    "check_linear_cka": "3.4", "check_layer_gw_groups": "3.5"}


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_reference_solution_passes_and_is_written_out(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    import inspect

    solution = getattr(gw_ex, "solution_" + name.removeprefix("check_"))
    assert getattr(gw_ex, name)(solution).passed, capsys.readouterr().out
    body = inspect.getsource(solution)
    # not a call of the package function the exercise asks for
    for forbidden in ("layer_gw_matrix(", "cluster_layers(", "gw.cka(", "gw.distance_matrix(X)\n", "gwloss("):
        if name == "check_layer_gw_groups" and forbidden.startswith("gw.distance_matrix"):
            continue
        assert forbidden not in body, (name, forbidden)


@pytest.mark.parametrize("name", sorted(PACKAGE_CALLS))
def test_calling_the_package_does_not_pass(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    res = getattr(gw_ex, name)(PACKAGE_CALLS[name])
    out = capsys.readouterr().out
    assert not res.passed and res.n_failed == res.n_cases, out
    assert "WriteItYourself" in out and "Write it yourself" in out, out


def test_package_call_through_an_earlier_import_is_caught(capsys: pytest.CaptureFixture[str]) -> None:
    from mechnb.gw.distances import distance_matrix as imported_long_ago

    res = gw_ex.check_distance_matrix(lambda X: imported_long_ago(X))
    assert not res.passed and "your function called gw.distance_matrix" in capsys.readouterr().out
    # the guard is gone afterwards: the package function works as usual
    assert gw.distance_matrix(torch.eye(3)).shape == (3, 3)
    import sys

    assert sys.getprofile() is None


def test_layer_gw_groups_mistakes_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    expected_words = {"no normalisation": "normalize='max'", "upper triangle only": "not symmetric",
                      "diagonal of ones": "on the diagonal", "product start": "expected",
                      "single linkage": "average linkage", "always two groups": "groups: expected"}
    for mistake, words in expected_words.items():
        gw_ex.check_layer_gw_groups(_mistake(LAYER_MISTAKES[mistake]))
        out = capsys.readouterr().out
        assert words in out, (mistake, out)


@pytest.mark.numerics
def test_layer_cases_expected_values() -> None:
    cases = gw_ex._layer_cases()
    assert len(cases) == 3
    for case in cases:
        (reps,) = case.args
        M, groups = case.expected
        L = len(reps)
        assert M.shape == (L, L) and np.array_equal(M, M.T) and np.all(np.diag(M) == 0) and np.all(M > 0) == (L == 1)
        assert sorted(n for g in groups for n in g) == sorted(reps)
    # the planted families come out as the three families
    assert cases[0].expected[1] == [["layer0", "layer2"], ["layer1", "layer4"], ["layer3", "layer5"]]
    # the drifting chains: every other linkage rule gives other groups in at least one of them
    for method in ("single", "complete", "weighted", "ward", "centroid", "median"):
        assert any(layer_gw_groups(c.args[0], method=method)[1] != c.expected[1] for c in cases[1:]), method


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_check_accepts_right_and_catches_wrong(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    check = getattr(gw_ex, name)
    rights, wrongs = SOLUTIONS[name]
    for right in rights:
        res = check(right)
        out = capsys.readouterr().out
        assert res.passed, out
        assert out.startswith("✔ Exercise") and "correct on all" in out, out
    for wrong in wrongs:
        res = check(wrong)
        out = capsys.readouterr().out
        assert not res.passed and res.n_failed >= 1, out
        assert out.startswith("✘ Exercise") and "expected" in out and "got" in out, out


def test_gw_loss_hints_point_at_the_mistake(capsys: pytest.CaptureFixture[str]) -> None:
    gw_ex.check_gw_loss(gw_loss_uniform)
    out = capsys.readouterr().out
    assert "2 of 5 cases wrong" in out and "p = T.sum(1)" in out, out
    gw_ex.check_distance_matrix(distance_matrix_squared)
    assert "not their squares" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# the known answers
# --------------------------------------------------------------------------------------------


def test_gw_loss_expected_values_match_pot_and_the_definition() -> None:
    cases = gw_ex._gw_loss_cases()
    assert len(cases) == 5
    for case in cases:
        C1, C2, T = (a.numpy() for a in case.args)
        constC, hC1, hC2 = ot.gromov.init_matrix(C1, C2, T.sum(1), T.sum(0), "square_loss")
        pot = float(ot.gromov.gwloss(constC, hC1, hC2, T))
        brute = sum((C1[i, k] - C2[j, l]) ** 2 * T[i, j] * T[k, l]
                    for i in range(len(C1)) for k in range(len(C1)) for j in range(len(C2)) for l in range(len(C2)))
        assert case.expected == pytest.approx(pot, abs=1e-12), case.label
        assert case.expected == pytest.approx(brute, abs=1e-12), case.label
        assert np.all(T >= 0) and T.sum() == pytest.approx(1.0)


def test_gw_loss_closed_forms_by_hand() -> None:
    matching, product, shuffled = gw_ex._gw_loss_cases()[:3]
    a, b = 1.0, 0.3
    # matching: only (C1_01 - C2_01)^2 and (C1_10 - C2_10)^2 survive, each with weight 1/4
    assert matching.expected == pytest.approx(2 * (a - b) ** 2 / 4)
    # product: all 16 terms with weight 1/16 -> 4 * (0 + a^2 + b^2 + (a - b)^2) / 16
    assert product.expected == pytest.approx(0.395)
    assert shuffled.expected == 0.0
    C, C_shuffled, undo = shuffled.args
    assert gw_ex.gw_loss_bruteforce(C, C_shuffled, undo) == pytest.approx(0.0, abs=1e-12)
    # the matching coupling is the minimum over all couplings of two-point spaces: GW's closed form
    assert matching.expected == pytest.approx(gw.gw_distance(gw_ex._two_point(a), gw_ex._two_point(b)))


def test_gw_loss_at_the_solver_coupling_is_the_solver_value() -> None:
    shapes = experiments.gw.toy_shapes()
    C1 = gw.distance_matrix(torch.from_numpy(shapes["L"]))
    C2 = gw.distance_matrix(torch.from_numpy(shapes["L stretched"]))
    sol = gw.gw_solve(C1, C2)
    assert gw_loss(C1, C2, torch.from_numpy(sol.coupling)) == pytest.approx(sol.value, abs=1e-10)
    assert gw_ex.gw_loss_bruteforce(C1, C2, sol.coupling) == pytest.approx(sol.value, abs=1e-10)


def test_distance_matrix_expected_values() -> None:
    triangle, random_X, moved, layer = gw_ex._distance_matrix_cases()
    pts = triangle.args[0]
    by_hand = torch.tensor([[((pts[i] - pts[k]) ** 2).sum().sqrt() for k in range(3)] for i in range(3)])
    assert torch.allclose(triangle.expected, by_hand.double() / 5.0)
    for case in (random_X, layer):
        (X,) = case.args
        D = np.linalg.norm(X.numpy()[:, None, :] - X.numpy()[None, :, :], axis=-1)
        assert np.allclose(case.expected.numpy(), D / D.max(), atol=1e-12)
    assert torch.allclose(moved.expected, random_X.expected)
    assert layer.expected.shape == (30, 30)


# --------------------------------------------------------------------------------------------
# the notebook: exercise boxes in order, one check per exercise cell
# --------------------------------------------------------------------------------------------


def test_notebook_exercises_in_order_and_checked() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    boxes = [m.group(1) for c in nb.cells if c.cell_type == "markdown"
             for m in re.finditer(r"\*\*Exercise (\d+\.\d+) · ", c.source)]
    markers = [m.group(1) for c in nb.cells if c.cell_type == "code"
               for m in re.finditer(r"^\s*# SOLUTION (\d+\.\d+)", c.source, re.MULTILINE)]
    assert boxes == ["3.1", "3.2", "3.3", "3.4", "3.5"]
    assert markers == boxes
    by_id = {ex.id: name for name, ex in registry().items() if ex.notebook == gw_ex.NOTEBOOK}
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    for ex_id in boxes:
        cell = next(s for s in code if f"# SOLUTION {ex_id}" in s)
        assert cell.startswith("# NBVAL_CHECK_OUTPUT"), ex_id
        assert f"exercises.gw.{by_id[ex_id]}(" in cell, ex_id
