"""``make exercises`` (mechnb.exercises.make) and the check-function framework (mechnb.exercises).

* learner versions of a synthetic notebook: every marked block replaced by its stub at the right
  indentation, signature/docstring/trailing lines kept, outputs stripped, the stub really raises
  NotImplementedError with the exercise number, marker errors named;
* learner versions of the real notebooks: parse with nbformat, one stub per marked block, no
  solution text leaks;
* every registered check function, given a stub, prints the helpful note instead of raising; and
  the framework reports wrong answers with the input, expected and got values.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from mechnb import exercises
from mechnb.exercises import Case, CheckResult, ExerciseFailed, compare, exercise, registry, run_cases
from mechnb.exercises import _core
from mechnb.exercises.make import (MarkerError, find_notebooks, main, make_exercises, make_learner_notebook,
                                   replace_solutions)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STUB_RE = re.compile(r'^(?P<indent>[ \t]*)raise NotImplementedError\("Exercise (?P<id>\d+\.\d+): ', re.MULTILINE)
START_RE = re.compile(r"^(?P<indent>[ \t]*)#\s*SOLUTION\b", re.MULTILINE)


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MECHNB_STRICT_CHECKS", raising=False)


# --------------------------------------------------------------------------------------------
# a synthetic notebook
# --------------------------------------------------------------------------------------------

EX1 = '''def hard_sigmoid(x, leak=0.01):
    """Lower-leaky hard sigmoid."""
    # SOLUTION
    y = x.clamp(max=1.0)
    return torch.where(y > 0, y, leak * y)
    # END SOLUTION

check_hard_sigmoid(hard_sigmoid)'''

EX2 = '''class Thing:
    def two_point(self, a, b):
        # SOLUTION
        secret_gw_line = (a - b) ** 2 / 2
        return secret_gw_line
        # END SOLUTION

    def other(self):
        # SOLUTION 5.7
        return "secret other"
        # END SOLUTION'''

EX3 = '''# a top-level exercise
# SOLUTION
answer = 42  # secret top-level
# END SOLUTION
print(answer)'''


def _synthetic(path: Path, minor: int = 5) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.nbformat_minor = minor
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 05 · Synthetic\nThe box mentions # SOLUTION in markdown, left alone."),
        nbformat.v4.new_code_cell("import torch\nx = 1", execution_count=3,
                                  outputs=[nbformat.v4.new_output("stream", name="stdout", text="hi\n")]),
        nbformat.v4.new_code_cell(EX1, execution_count=4,
                                  outputs=[nbformat.v4.new_output("display_data", data={"text/plain": "fig"})]),
        nbformat.v4.new_code_cell(EX2),
        nbformat.v4.new_code_cell(EX3),
        nbformat.v4.new_code_cell("print('no exercise, says SOLUTION in a string')"),
    ]
    if minor < 5:
        for c in nb.cells:
            c.pop("id", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_synthetic_notebook_learner_version(tmp_path: Path) -> None:
    src = _synthetic(tmp_path / "src" / "05_synthetic.ipynb")
    report = make_learner_notebook(src, tmp_path / "out" / "05_synthetic.ipynb")
    assert report.exercises == ["5.1", "5.2", "5.7", "5.3"]
    assert report.n_stubs == 4
    nb = nbformat.read(report.target, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["mechnb"]["learner_version"] is True
    assert "Learner version" in nb.cells[0].source and "notebooks/05_synthetic.ipynb" in nb.cells[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    ex1, ex2, ex3 = code[1].source, code[2].source, code[3].source

    # signature, docstring and the call after the block kept; the block replaced at its indentation
    assert ex1.splitlines()[:2] == EX1.splitlines()[:2]
    assert ex1.splitlines()[2] == ('    raise NotImplementedError("Exercise 5.1: write your code here '
                                   '(see the exercise box above)")')
    assert ex1.rstrip().endswith("check_hard_sigmoid(hard_sigmoid)")
    assert [m.group("indent") for m in STUB_RE.finditer(ex2)] == [" " * 8, " " * 8]
    assert [m.group("id") for m in STUB_RE.finditer(ex2)] == ["5.2", "5.7"]
    assert STUB_RE.search(ex3).group("indent") == ""
    for src_text in (EX1, EX2, EX3):
        for line in src_text.splitlines():
            if "secret" in line or "clamp" in line:
                assert all(line.strip() not in c.source for c in code), f"solution line leaked: {line!r}"
    assert not any("SOLUTION" in c.source for c in code[1:4])
    assert "SOLUTION" in nb.cells[1].source  # markdown untouched
    assert code[4].source == "print('no exercise, says SOLUTION in a string')"

    # the learner code is valid Python and the stub raises with its exercise number
    ns: dict = {"torch": torch, "check_hard_sigmoid": lambda f: None}
    exec(compile(ex1, "<ex1>", "exec"), ns)
    with pytest.raises(NotImplementedError, match=r"Exercise 5\.1: .*exercise box above"):
        ns["hard_sigmoid"](torch.zeros(2))
    exec(compile(ex2, "<ex2>", "exec"), ns)
    with pytest.raises(NotImplementedError, match=r"Exercise 5\.7"):
        ns["Thing"]().other()
    with pytest.raises(NotImplementedError, match=r"Exercise 5\.3"):
        exec(compile(ex3, "<ex3>", "exec"), {})

    # deterministic: regenerating gives the same bytes
    first = report.target.read_bytes()
    make_learner_notebook(src, report.target)
    assert report.target.read_bytes() == first


def test_old_nbformat_minor_and_markdown_copied(tmp_path: Path) -> None:
    _synthetic(tmp_path / "src" / "05_old.ipynb", minor=4)
    (tmp_path / "src" / "GLOSSARY.md").write_text("# Glossary\n")
    (tmp_path / "src" / "scratch.ipynb").write_text("not a numbered notebook, ignored")
    reports = make_exercises(tmp_path / "src", tmp_path / "out")
    assert [r.target.name for r in reports] == ["05_old.ipynb"]
    nbformat.validate(nbformat.read(reports[0].target, as_version=4))
    assert (tmp_path / "out" / "GLOSSARY.md").read_text() == "# Glossary\n"
    assert not (tmp_path / "out" / "scratch.ipynb").exists()


@pytest.mark.parametrize("source, message", [
    ("def f():\n    # SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    # END SOLUTION\n", "without a '# SOLUTION'"),
    ("# SOLUTION\n# SOLUTION\nx = 1\n# END SOLUTION\n", "inside the block"),
    ("# SOLUTION for later\nx = 1\n# END SOLUTION\n", "SOLUTION N.M"),
])
def test_marker_errors(source: str, message: str) -> None:
    with pytest.raises(MarkerError, match=re.escape(message)):
        replace_solutions(source, "1.1", where="nb, cell 3")
    with pytest.raises(MarkerError, match="nb, cell 3, line"):
        replace_solutions(source, "1.1", where="nb, cell 3")


def test_cli_errors_and_bad_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("# SOLUTION\nx = 1\n")]
    (tmp_path / "src").mkdir()
    nbformat.write(nb, tmp_path / "src" / "07_broken.ipynb")
    assert main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "07_broken.ipynb, cell 0, line 1" in err and "never closed" in err
    assert main(["--src", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 1
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="NN_<name>.ipynb"):
        make_learner_notebook(_named(tmp_path, "broken.ipynb"), tmp_path / "x.ipynb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no notebooks named"):
        make_exercises(tmp_path / "empty", tmp_path / "out")


def _named(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    nbformat.write(nbformat.v4.new_notebook(), path)
    return path


# --------------------------------------------------------------------------------------------
# the real notebooks
# --------------------------------------------------------------------------------------------


def test_real_notebooks_learner_versions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sources = find_notebooks(NOTEBOOKS)
    assert sources, "notebooks/: no NN_*.ipynb found"
    assert main(["--src", str(NOTEBOOKS), "--out", str(tmp_path)]) == 0
    assert f"{len(sources)} learner notebook(s)" in capsys.readouterr().out
    for src in sources:
        original = nbformat.read(src, as_version=4)
        learner = nbformat.read(tmp_path / src.name, as_version=4)
        nbformat.validate(learner)
        orig_code = [c for c in original.cells if c.cell_type == "code"]
        learn_code = [c for c in learner.cells if c.cell_type == "code"]
        assert len(learn_code) == len(orig_code), src.name
        n_blocks = sum(len(START_RE.findall(c.source)) for c in orig_code)
        n_stubs = sum(len(STUB_RE.findall(c.source)) for c in learn_code)
        assert n_stubs == n_blocks, f"{src.name}: {n_blocks} solution blocks but {n_stubs} stubs"
        number = int(src.name[:2])
        for o, c in zip(orig_code, learn_code):
            assert c.outputs == [] and c.execution_count is None
            assert not re.search(r"#\s*(END\s+)?SOLUTION\b", c.source), f"{src.name}: a marker leaked"
            for m in STUB_RE.finditer(c.source):
                assert m.group("id").split(".")[0] == str(number), f"{src.name}: stub numbered {m.group('id')}"
            if START_RE.search(o.source):
                body = _solution_lines(o.source)
                leaked = [ln for ln in body if ln.strip() and ln.strip() not in _outside_lines(o.source)
                          and ln.strip() in {x.strip() for x in c.source.splitlines()}]
                assert not leaked, f"{src.name}: solution lines leaked: {leaked}"
            try:  # a learner cell is still valid Python (IPython magics aside)
                ast.parse("\n".join(ln for ln in c.source.splitlines() if not ln.lstrip().startswith(("%", "!"))))
            except SyntaxError as e:  # pragma: no cover - reported with the cell
                pytest.fail(f"{src.name}: learner cell is not valid Python ({e}):\n{c.source}")


def _solution_lines(source: str) -> list[str]:
    out, inside = [], False
    for ln in source.splitlines():
        if re.match(r"^\s*#\s*END\s+SOLUTION", ln):
            inside = False
        elif re.match(r"^\s*#\s*SOLUTION", ln):
            inside = True
        elif inside:
            out.append(ln)
    return out


def _outside_lines(source: str) -> set[str]:
    inside_lines = set(_solution_lines(source))
    return {ln.strip() for ln in source.splitlines() if ln not in inside_lines}


# --------------------------------------------------------------------------------------------
# the check functions
# --------------------------------------------------------------------------------------------


def _stub(*args, **kwargs):
    raise NotImplementedError("Exercise 0.0: write your code here (see the exercise box above)")


def test_every_registered_check_handles_the_stub(capsys: pytest.CaptureFixture[str]) -> None:
    checks = registry()
    for name, ex in checks.items():
        topic = getattr(exercises, ex.topic)
        assert getattr(topic, name) is ex.check, f"{ex.call_name} is not importable"
        result = ex.check(_stub)  # must not raise
        out = capsys.readouterr().out
        assert isinstance(result, CheckResult) and not result.passed and result.not_implemented, name
        assert f"Exercise {ex.id}" in out and "not implemented yet" in out and "NotImplementedError" in out, out
        assert "Traceback" not in out, out


def test_every_registered_check_in_strict_mode_raises(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MECHNB_STRICT_CHECKS", "1")
    for ex in registry().values():
        with pytest.raises(ExerciseFailed, match=f"Exercise {re.escape(ex.id)}"):
            ex.check(_stub)
    capsys.readouterr()


@pytest.fixture()
def relu_check():
    """A check function of the test's own (registered only for the test), to test the reports."""

    @exercise("99.1", "test relu")
    def check_test_relu(fn):
        x = torch.tensor([-1.0, 0.5, 2.0])
        return run_cases(fn, [
            Case((x,), torch.relu(x), label="x = [-1, 0.5, 2]"),
            Case((torch.zeros(2, 3),), torch.zeros(2, 3), label="x = zeros(2, 3)", hint="ReLU keeps the shape"),
        ])

    yield check_test_relu
    _core._REGISTRY.pop("check_test_relu", None)  # keep the registry to the real exercises


def test_check_success_and_failure_reports(relu_check, capsys: pytest.CaptureFixture[str]) -> None:
    res = relu_check(torch.relu)
    out = capsys.readouterr().out
    assert res and res.passed and res.n_cases == 2
    assert out.strip() == "✔ Exercise 99.1 (test relu): correct on all 2 cases."

    res = relu_check(lambda x: x)
    out = capsys.readouterr().out
    assert not res and res.n_failed == 1
    assert "1 of 2 cases wrong" in out and "case 1 x = [-1, 0.5, 2]" in out
    assert "worst at index [0]: expected 0, got -1" in out

    res = relu_check(lambda x: x.sum())
    out = capsys.readouterr().out
    assert res.n_failed == 2 and "wrong shape: expected (3,), got ()" in out and "hint: ReLU keeps the shape" in out

    def buggy(x):
        return x.no_such_method()
    res = relu_check(buggy)
    out = capsys.readouterr().out
    assert res.n_failed == 2 and "raised AttributeError" in out and "buggy" in out

    res = relu_check(lambda x: None)
    assert "forget to `return`" in capsys.readouterr().out

    res = relu_check(torch.relu(torch.ones(1)))  # passed the result, not the function
    assert not res and "Pass the function itself" in capsys.readouterr().out

    res = relu_check(_stub)
    out = capsys.readouterr().out
    assert res.not_implemented and out.startswith("✎ Exercise 99.1 (test relu): not implemented yet")


def test_strict_mode_raises_on_wrong_answer(relu_check, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MECHNB_STRICT_CHECKS", "1")
    assert relu_check(torch.relu)
    with pytest.raises(ExerciseFailed, match="1 of 2 cases wrong"):
        relu_check(lambda x: x)
    capsys.readouterr()


def test_compare() -> None:
    assert compare(1.0, torch.tensor(1.0 + 1e-7)) is None
    assert compare(np.arange(3.0), torch.arange(3.0)) is None
    assert compare(3, 3.0) is None
    assert "expected 3, got 4" in compare(3, 4)
    assert "expected 3, got 3.1" in compare(3, 3.1)
    assert "NaN" in compare(np.ones(2), np.array([1.0, np.nan]))
    assert "wrong shape" in compare(np.ones((2, 2)), np.ones(4))
    assert "at [1]" in compare((1.0, np.ones(2)), (1.0, np.zeros(2)))
    assert "expected 3 items, got 2" in compare((1.0, 2.0, "x"), (1.0, 2.0))
    assert "keys differ" in compare({"a": 1}, {"b": 1})
    assert "at ['a']" in compare({"a": 1.0}, {"a": 2.0})
    assert compare("abc", "abc") is None and "expected 'abc'" in compare("abc", "abd")
    assert "expected a number/array" in compare(1.0, "1.0")
    assert compare(True, np.bool_(True)) is None and compare(True, False)


def test_framework_bad_inputs() -> None:
    with pytest.raises(ValueError, match="ex_id"):
        exercise("", "title")
    with pytest.raises(ValueError, match="title"):
        exercise("1.1", "")
    with pytest.raises(TypeError, match="only required argument"):
        exercise("98.1", "two args")(lambda fn, other: None)
    assert "<lambda>" not in _core._REGISTRY
    with pytest.raises(ValueError, match="exercise="):
        run_cases(abs, [Case((1,), 1)])
    with pytest.raises(ValueError, match="cases"):
        run_cases(abs, [], exercise="98.2")
    with pytest.raises(TypeError, match="fn"):
        run_cases(3, [Case((1,), 1)], exercise="98.2")


def test_checks_registered_with_unique_ids_matching_notebooks() -> None:
    checks = registry()
    ids = [ex.id for ex in checks.values()]
    assert len(ids) == len(set(ids)), f"duplicate exercise ids: {ids}"
    numbers = {int(p.name[:2]) for p in find_notebooks(NOTEBOOKS)}
    for name, ex in checks.items():
        assert name.startswith("check_"), name
        assert re.fullmatch(r"\d+\.\d+", ex.id), f"{name}: exercise id {ex.id!r} is not N.M"
        assert int(ex.id.split(".")[0]) in numbers, f"{name}: exercise {ex.id} names no notebook in notebooks/"


# --------------------------------------------------------------------------------------------
# the topic check functions: a correct solution passes, a typical mistake is caught
# --------------------------------------------------------------------------------------------


def _solutions() -> dict[str, tuple]:
    """check name -> (a correct solution, a typical wrong one)."""
    from mechnb import degeneracy as dg
    from mechnb import spd

    def gram_nullity(acts, rtol=1e-6):
        f = torch.cat([acts, torch.ones(acts.shape[0], 1, dtype=acts.dtype)], dim=1)
        ev = torch.linalg.eigvalsh(f.T @ f / f.shape[0])
        return int((torch.sqrt(ev.clamp_min(0) / ev.max()) <= rtol).sum())

    def lower(x, alpha=0.01):
        return torch.where(x < 0, alpha * x, x.clamp(max=1.0))

    def upper(x, alpha=0.01):
        return torch.where(x > 1, 1 + alpha * (x - 1), x.clamp(min=0.0))

    def linear_cka(X, Y):
        X, Y = X - X.mean(0), Y - Y.mean(0)
        return float((X.T @ Y).norm() ** 2 / ((X.T @ X).norm() * (Y.T @ Y).norm()))

    def uncentred_cka(X, Y):  # forgets H K H
        K, L = X @ X.T, Y @ Y.T
        return float((K * L).sum() / (K.norm() * L.norm()))

    def logit_diff(logits, answers):
        last = logits[:, -1]
        return (last.gather(1, answers[:, :1]) - last.gather(1, answers[:, 1:])).mean()

    return {
        "check_gram_nullity": (gram_nullity,  # wrong: forgets the constant-1 feature
                               lambda a, rtol=1e-6: dg.spectrum_nullity(dg.gram_spectrum(a, with_bias=False))),
        "check_llc_estimate": (lambda L, l0, nb: nb * (np.asarray(L).mean() - l0),
                               lambda L, l0, nb: nb * (np.asarray(L)[0].mean() - l0)),
        "check_lower_leaky_hard_sigmoid": (lower, spd.upper_leaky_hard_sigmoid),
        "check_upper_leaky_hard_sigmoid": (upper, spd.lower_leaky_hard_sigmoid),
        "check_gw_two_point": (lambda a, b: (a - b) ** 2 / 2, lambda a, b: (a - b) ** 2),
        "check_linear_cka": (linear_cka, uncentred_cka),
        "check_logit_diff": (logit_diff, lambda logits, answers: logit_diff(logits, answers) * len(answers)),
        "check_eap_edge_score": (lambda c, k, g: ((k - c) * g).sum(), lambda c, k, g: ((c - k) * g).sum()),
    }


TOPIC_CHECKS = ["check_gram_nullity", "check_llc_estimate", "check_lower_leaky_hard_sigmoid",
                "check_upper_leaky_hard_sigmoid", "check_gw_two_point", "check_linear_cka", "check_logit_diff",
                "check_eap_edge_score"]


@pytest.mark.parametrize("name", TOPIC_CHECKS)
def test_topic_check_accepts_a_solution_and_catches_a_mistake(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    right, wrong = _solutions()[name]
    check = registry()[name].check
    ok = check(right)
    out = capsys.readouterr().out
    assert ok.passed, out
    assert out.startswith("✔ Exercise") and "correct on all" in out
    bad = check(wrong)
    out = capsys.readouterr().out
    assert not bad.passed and bad.n_failed >= 1, out
    assert out.startswith("✘ Exercise") and "expected" in out and "got" in out, out


# --------------------------------------------------------------------------------------------
# end to end, in a kernel: the learner sees the note, the facilitator the success line
# --------------------------------------------------------------------------------------------


def test_learner_and_facilitator_versions_in_a_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("from mechnb import exercises"),
        nbformat.v4.new_code_cell("def gw_two_point(a, b):\n"
                                  '    """GW between uniform two-point spaces at distances a and b."""\n'
                                  "    # SOLUTION\n"
                                  "    return (a - b) ** 2 / 2\n"
                                  "    # END SOLUTION"),
        nbformat.v4.new_code_cell("exercises.gw.check_gw_two_point(gw_two_point)"),
    ]
    src = tmp_path / "src" / "03_synthetic.ipynb"
    src.parent.mkdir()
    nbformat.write(nb, src)
    make_exercises(src.parent, tmp_path / "out")
    monkeypatch.setenv("MECHNB_STRICT_CHECKS", "0")

    def run(path: Path) -> list[str]:
        book = nbformat.read(path, as_version=4)
        nbclient.NotebookClient(book, timeout=120, kernel_name="python3").execute()
        outs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outs if o.output_type == "error"], outs
        return ["".join(o.get("text", "")) for o in outs if o.output_type == "stream"]

    facilitator = run(src)
    assert facilitator == ["✔ Exercise 3.2 (GW between two-point spaces): correct on all 5 cases.\n"]
    learner = run(tmp_path / "out" / src.name)
    assert len(learner) == 1 and learner[0].startswith("✎ Exercise 3.2 (GW between two-point spaces): not implemented")
    assert "Traceback" not in learner[0]


def test_learner_edits_are_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _synthetic(tmp_path / "src" / "05_synthetic.ipynb")
    out = tmp_path / "out"
    target = out / src.name
    assert main(["--src", str(src.parent), "--out", str(out)]) == 0
    fresh = target.read_bytes()
    # running cells (outputs) is not an edit: regenerating overwrites
    nb = nbformat.read(target, as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    nb.cells[2].execution_count = 1
    nbformat.write(nb, target)
    assert main(["--src", str(src.parent), "--out", str(out)]) == 0
    assert target.read_bytes() == fresh
    # an answer typed into an exercise cell is kept ...
    nb = nbformat.read(target, as_version=4)
    nb.cells[3].source = nb.cells[3].source.replace('raise NotImplementedError("Exercise 5.1',
                                                    'return x  # ("Exercise 5.1')
    nbformat.write(nb, target)
    edited = target.read_bytes()
    capsys.readouterr()
    assert main(["--src", str(src.parent), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "NOT overwritten" in text and "1 kept (your edits)" in text
    assert target.read_bytes() == edited
    # ... unless --force
    assert main(["--src", str(src.parent), "--out", str(out), "--force"]) == 0
    assert target.read_bytes() == fresh
