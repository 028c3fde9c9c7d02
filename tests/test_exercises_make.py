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
import types
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from mechnb import exercises
from mechnb.exercises import Case, CheckResult, ExerciseFailed, compare, exercise, registry, run_cases
from mechnb.exercises import _core, _stubs
from mechnb.exercises import exercise_by_id
from mechnb.exercises._stubgen import checked_names, names_used, signature_problems, stub_cell
from mechnb.exercises.make import (MarkerError, UnsafeStubError, find_notebooks, main, make_exercises,
                                   make_learner_notebook, replace_solutions)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STUB_RE = re.compile(r'^(?P<indent>[ \t]*)raise NotImplementedError\("Exercise (?P<id>\d+\.\d+): ', re.MULTILINE)
START_RE = re.compile(r"^(?P<indent>[ \t]*)#\s*SOLUTION\b", re.MULTILINE)


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MECHNB_STRICT_CHECKS", raising=False)


# --------------------------------------------------------------------------------------------
# a synthetic notebook, with exercises of the test's own (97.x) and their reference solutions
# --------------------------------------------------------------------------------------------


def solution_double(x, scale=2):
    """Reference of exercise 97.1 (looked up by make exercises in the check's module: this one)."""
    return x * scale


class solution_Counter:  # noqa: N801 - named like the learner's class
    """Reference of exercise 97.2: the method ``step`` is the exercise."""

    def __init__(self, start):
        self.start = start

    def step(self, k):
        return self.start + k


solution_threshold = 0.25  # reference value of exercise 97.3


def solution_helper(y):
    """Reference of ``helper`` (exercise 97.3, not checked itself)."""
    return y + 100


@pytest.fixture()
def fake_exercises():
    """Checks of exercises 97.1–97.3, registered for the test only."""

    @exercise("97.1", "double")
    def check_double(fn):
        return run_cases(fn, [Case((3.0,), 6.0)])

    @exercise("97.2", "counter step")
    def check_counter(cls):
        return run_cases(lambda start, k: cls(start).step(k), [Case((1, 2), 3)])

    @exercise("97.3", "a threshold")
    def check_threshold(fn):
        return run_cases(fn, [Case((), 0.25)])

    checks = {f.__name__: f for f in (check_double, check_counter, check_threshold)}
    _stubs._ANNOUNCED.clear()
    yield checks
    for name in checks:
        _core._REGISTRY.pop(name, None)
    _stubs._ANNOUNCED.clear()


EX1 = '''# NBVAL_CHECK_OUTPUT
def double(x, scale=2):
    """Twice x."""
    # SOLUTION
    y = x * scale  # secret double
    return y
    # END SOLUTION

exercises.fake.check_double(double)'''

EX2 = '''class Counter:
    def __init__(self, start):
        self.start = start

    def step(self, k):
        # SOLUTION 97.2
        return self.start + k  # secret step
        # END SOLUTION

exercises.fake.check_counter(Counter)'''

EX3 = '''# a top-level exercise: a value and a helper
# SOLUTION 97.3
threshold = 0.25  # secret threshold


def helper(y):
    """Add 100."""
    return y + 100  # secret helper
# END SOLUTION
print("threshold set")'''

EX4 = '''def unused(a):
    # SOLUTION 97.9
    return a  # secret unused
    # END SOLUTION'''

LATER = "print(double(3), Counter(1).step(2), threshold, helper(1))"

STUB = 'raise NotImplementedError("Exercise {}: write your code here (see the exercise box above)")'

LEARNER = {
    "EX1": f'''@exercises.stub("97.1")
def double(x, scale=2):
    """Twice x."""
    {STUB.format("97.1")}

exercises.fake.check_double(double)''',
    "EX2": f'''class Counter:
    def __init__(self, start):
        self.start = start

    @exercises.stub("97.2", "solution_Counter.step")
    def step(self, k):
        {STUB.format("97.2")}

exercises.fake.check_counter(Counter)''',
    "EX3": f'''# a top-level exercise: a value and a helper
threshold = exercises.stub_value("97.3", "threshold")  # Exercise 97.3: replace this line with your code (see the exercise box above)

@exercises.stub("97.3", "solution_helper")
def helper(y):
    """Add 100."""
    {STUB.format("97.3")}
print("threshold set")''',
    "EX4": f'''def unused(a):
    {STUB.format("97.9")}''',
}


def _synthetic(path: Path, minor: int = 5) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.nbformat_minor = minor
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 97 · Synthetic\nThe box mentions # SOLUTION in markdown, left alone."),
        nbformat.v4.new_code_cell("%matplotlib inline\nfrom mechnb import exercises\nimport torch\nx = 1",
                                  execution_count=3,
                                  outputs=[nbformat.v4.new_output("stream", name="stdout", text="hi\n")]),
        nbformat.v4.new_code_cell(EX1, execution_count=4,
                                  outputs=[nbformat.v4.new_output("display_data", data={"text/plain": "fig"})]),
        nbformat.v4.new_code_cell(EX2),
        nbformat.v4.new_code_cell(EX3),
        nbformat.v4.new_code_cell(EX4),
        nbformat.v4.new_code_cell(LATER),
        nbformat.v4.new_code_cell("print('no exercise, says SOLUTION in a string')"),
    ]
    if minor < 5:
        for c in nb.cells:
            c.pop("id", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _run_cells(sources: list[str], checks: dict, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Execute cell sources in one namespace (magics skipped), ``exercises.fake`` = the test's checks;
    return what each cell printed."""
    ns: dict = {}
    fake = types.SimpleNamespace(**checks)
    outs = []
    for src in sources:
        code = "\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith("%"))
        exec(compile(code, "<cell>", "exec"), ns)
        ns["exercises"] = types.SimpleNamespace(stub=exercises.stub, stub_value=exercises.stub_value, fake=fake)
        outs.append(capsys.readouterr().out)
    return outs


def test_synthetic_notebook_learner_version(tmp_path: Path, fake_exercises, capsys, monkeypatch) -> None:
    src = _synthetic(tmp_path / "src" / "97_synthetic.ipynb")
    report = make_learner_notebook(src, tmp_path / "out" / "97_synthetic.ipynb")
    assert report.exercises == ["97.1", "97.2", "97.3", "97.9"]
    assert report.n_stubs == 4
    assert [(st.exercise, st.name, st.kind, st.reference, st.cell, st.used_in) for st in report.stubs] == [
        ("97.1", "double", "function", "solution_double", 2, [6]),
        ("97.2", "Counter.step", "method", "solution_Counter.step", 3, [6]),
        ("97.3", "threshold", "value", "solution_threshold", 4, [4, 6]),
        ("97.3", "helper", "function", "solution_helper", 4, [6]),
        ("97.9", "unused", "function", None, 5, []),
    ]
    assert [st.name for st in report.fallbacks] == ["double", "Counter.step", "threshold", "helper"]
    assert "without a reference solution to fall back to: unused" in report.line()
    nb = nbformat.read(report.target, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["mechnb"]["learner_version"] is True
    assert "Learner version" in nb.cells[0].source and "notebooks/97_synthetic.ipynb" in nb.cells[0].source
    assert "@exercises.stub" in nb.cells[0].source and "reference solution" in nb.cells[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)

    # the blocks replaced at their indentation, the functions marked as stubs, the rest kept (nbval's markers go)
    assert [c.source for c in code[1:5]] == [LEARNER["EX1"], LEARNER["EX2"], LEARNER["EX3"], LEARNER["EX4"]]
    for src_text in (EX1, EX2, EX3, EX4):
        for line in src_text.splitlines():
            if "secret" in line:
                assert all(line.strip() not in c.source for c in code), f"solution line leaked: {line!r}"
    assert not any("SOLUTION" in c.source for c in code[1:5])
    assert "SOLUTION" in nb.cells[1].source  # markdown untouched
    assert code[5].source == LATER and code[6].source == "print('no exercise, says SOLUTION in a string')"

    # run with nothing filled in (strict mode): checks say "not implemented", later cells fall back
    monkeypatch.setenv("MECHNB_STRICT_CHECKS", "1")
    outs = _run_cells([c.source for c in code], fake_exercises, capsys)
    assert outs[1].startswith("✎ Exercise 97.1 (double): not implemented yet") and "↪" not in outs[1]
    assert outs[2].startswith("✎ Exercise 97.2 (counter step): not implemented yet — `step`")
    assert outs[3] == ("↪ using the reference solution for Exercise 97.3 (a threshold): your `threshold` is still "
                       "the stub\nthreshold set\n")
    assert outs[4] == ""
    assert outs[5].splitlines() == [
        "↪ using the reference solution for Exercise 97.1 (double): your `double` is still the stub",
        "↪ using the reference solution for Exercise 97.2 (counter step): your `Counter.step` is still the stub",
        "↪ using the reference solution for Exercise 97.3 (a threshold): your `helper` is still the stub",
        "6 3 0.25 101",
    ]

    # deterministic: regenerating gives the same bytes
    first = report.target.read_bytes()
    make_learner_notebook(src, report.target)
    assert report.target.read_bytes() == first


def test_learner_version_with_answers_filled_in(tmp_path: Path, fake_exercises, capsys) -> None:
    src = _synthetic(tmp_path / "src" / "97_synthetic.ipynb")
    report = make_learner_notebook(src, tmp_path / "out" / "97_synthetic.ipynb")
    code = [c.source for c in nbformat.read(report.target, as_version=4).cells if c.cell_type == "code"]
    code[1] = code[1].replace(STUB.format("97.1"), "return x * scale")
    code[2] = code[2].replace(STUB.format("97.2"), "return self.start + k + 1000  # a wrong answer")
    outs = _run_cells(code, fake_exercises, capsys)
    assert outs[1].startswith("✔ Exercise 97.1 (double): correct on all 1 case.")
    assert outs[2].startswith("✘ Exercise 97.2 (counter step): 1 of 1 case wrong.") and "expected 3, got 1003" in outs[2]
    assert outs[5].splitlines()[-1] == "6 1003 0.25 101"  # the learner's own answers, right or wrong
    assert not any("your `double`" in o or "your `Counter.step`" in o for o in outs)


@pytest.mark.parametrize("source, message", [
    # used by a later cell, no reference to fall back to
    ("def other(x):\n    # SOLUTION 97.1\n    return x\n    # END SOLUTION",
     "`other` (exercise 97.1) is used by cell(s) [9], but test_exercises_make has no `solution_other`"),
    ("def other(x):\n    # SOLUTION 96.1\n    return x\n    # END SOLUTION",
     "no check is registered for exercise 96.1"),
    # places a raise would stop Run All, or that are not a function body
    ("for i in range(3):\n    # SOLUTION 97.1\n    x = i\n    # END SOLUTION", "inside a top-level `for` statement"),
    ("class K:\n    # SOLUTION 97.2\n    x = 1\n    # END SOLUTION", "in the body of class `K` outside its methods"),
    ("# SOLUTION 97.1\nprint(1)\n# END SOLUTION", "a top-level `Expr` inside a SOLUTION block"),
    ("# SOLUTION 97.1\nanswer = 42\n# END SOLUTION", "has no `solution_answer`"),
    ("# SOLUTION 97.1\nx.attr = 42\n# END SOLUTION", "a top-level `Assign` inside a SOLUTION block"),
    ("x = (1 +\n# SOLUTION 97.1\n2)\n# END SOLUTION", "cuts a statement in two"),
    ("def double(x, scale=2):\n    # SOLUTION 97.1\n    # END SOLUTION\n    return x", "is empty"),
    ("def f(:\n    # SOLUTION 97.1\n    pass\n    # END SOLUTION", "must be valid Python"),
    ("def double(x, scale=2):\n    # SOLUTION 97.1\n    y = x\n    # END SOLUTION\n"
     "    # SOLUTION 97.3\n    return y\n    # END SOLUTION", "holds blocks of exercises ['97.1', '97.3']"),
    # the reference cannot stand in for the notebook's function
    ("def double(y, scale=2):\n    # SOLUTION 97.1\n    return y\n    # END SOLUTION\ncheck_double(double)",
     "parameter 1 is `y` in the notebook but `x` in the reference"),
    ("def double(x, scale=3):\n    # SOLUTION 97.1\n    return x\n    # END SOLUTION\ncheck_double(double)",
     "`scale` defaults to 3 in the notebook but to 2 in the reference"),
    ("def double(x, scale=2, *, extra=1):\n    # SOLUTION 97.1\n    return x\n    # END SOLUTION\ncheck_double(double)",
     "the reference takes no keyword `extra`"),
    ("def double(x, scale=2, more=0):\n    # SOLUTION 97.1\n    return x\n    # END SOLUTION\ncheck_double(double)",
     "the reference takes no parameter 3 (`more`)"),
    ("def double():\n    # SOLUTION 97.1\n    return 1\n    # END SOLUTION\ncheck_double(double)",
     "the reference needs `x`, which the notebook's function does not take"),
    ("def double(x, *args, scale=2):\n    # SOLUTION 97.1\n    return x\n    # END SOLUTION\ncheck_double(double)",
     "takes *args, the reference no *args"),
    # the block's number and the check it is passed to disagree
    ("def double(x, scale=2):\n    # SOLUTION 97.3\n    return x\n    # END SOLUTION\nexercises.t.check_double(double)",
     "`double` is marked as exercise 97.3 but passed to check_double (exercise 97.1)"),
])
def test_blocks_that_cannot_be_stubbed_safely(source: str, message: str, fake_exercises) -> None:
    with pytest.raises(UnsafeStubError, match=re.escape(message)) as err:
        stub_cell(source, "97.1", where="97_x.ipynb, cell 3", index=3, uses_after=lambda name: [9])
    assert str(err.value).startswith("97_x.ipynb, cell 3")


def test_stubs_need_exercises_imported(tmp_path: Path, fake_exercises) -> None:
    source = "def double(x, scale=2):\n    # SOLUTION 97.1\n    return x\n    # END SOLUTION"
    with pytest.raises(UnsafeStubError, match=r"no cell before it imports `exercises` \(add `from mechnb import"):
        stub_cell(source, "97.1", exercises_bound=False)
    new, ids, stubs = stub_cell(source, "97.1")
    assert new.startswith('@exercises.stub("97.1")\ndef double') and ids == ["97.1"]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source), nbformat.v4.new_code_cell("from mechnb import exercises")]
    nbformat.write(nb, tmp_path / "97_late.ipynb")
    with pytest.raises(UnsafeStubError, match="97_late.ipynb, cell 0: the stub of `double`"):
        make_learner_notebook(tmp_path / "97_late.ipynb", tmp_path / "out.ipynb")
    assert not (tmp_path / "out.ipynb").exists()


def test_unnumbered_block_takes_the_id_of_its_check(tmp_path: Path, fake_exercises) -> None:
    source = "def counter_step(x, scale=2):\n    # SOLUTION\n    return x\n    # END SOLUTION"
    assert names_used("check_double(counter_step)\nprint(counter_step(1))") == {"check_double", "print", "counter_step"}
    assert names_used("exercises.t.check_double(counter_step)") == {"exercises"}  # the check runs the learner's code
    assert checked_names("exercises.t.check_double(counter_step)") == {"counter_step": exercise_by_id("97.1")}
    new, ids, stubs = stub_cell(source, "97.3", checked_elsewhere={"counter_step": exercise_by_id("97.1")})
    assert ids == ["97.1"] and new.startswith('@exercises.stub("97.1")\n') and 'Exercise 97.1: write' in new
    new, ids, _ = stub_cell(source, "97.3")  # no check anywhere: the default id
    assert ids == ["97.3"] and 'Exercise 97.3: write' in new
    with pytest.raises(UnsafeStubError, match="marked as exercise 97.3 but passed to check_double"):
        stub_cell(source.replace("# SOLUTION", "# SOLUTION 97.3"), "97.3",
                  checked_elsewhere={"counter_step": exercise_by_id("97.1")})


def test_nothing_written_when_a_notebook_cannot_be_stubbed(tmp_path: Path, fake_exercises, capsys) -> None:
    src = tmp_path / "src"
    _synthetic(src / "97_fine.ipynb")
    bad = nbformat.v4.new_notebook()
    bad.cells = [nbformat.v4.new_code_cell("for i in range(2):\n    # SOLUTION 97.1\n    x = i\n    # END SOLUTION")]
    nbformat.write(bad, src / "98_bad.ipynb")  # converted after 97_fine
    assert main(["--src", str(src), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "98_bad.ipynb, cell 0, line 2: a SOLUTION block inside a top-level `for` statement" in err
    assert not (tmp_path / "out").exists()


def test_signature_problems_accepts_compatible_references() -> None:
    def fn_node(src: str) -> ast.FunctionDef:
        return ast.parse(src).body[0]

    def ref(x, scale=2, *, extra=None):
        return x

    assert signature_problems(fn_node("def f(x, scale=2): pass"), ref) == []
    assert signature_problems(fn_node("def f(x): pass"), ref) == []  # the reference's extra defaults are fine
    assert signature_problems(fn_node("def f(x, /, scale=2): pass"), lambda a, scale=2: a) == []  # positional-only
    assert signature_problems(fn_node("def f(x, *, extra=None): pass"), ref) == []
    assert signature_problems(fn_node("def f(x, **kw): pass"), lambda x, **kwargs: x) == []
    assert signature_problems(fn_node("def f(x, scale=2.0): pass"), ref) == []  # 2.0 == 2
    assert signature_problems(fn_node("def f(x, scale=torch.ones(1)): pass"), ref) == []  # not a literal: unchecked
    problems = signature_problems(fn_node("def f(x, scale=2): pass"), lambda a, /: a)
    assert problems == ["parameter 1 is `x` in the notebook but `a` in the reference",
                        "the reference takes no parameter 2 (`scale`)"]


def test_old_nbformat_minor_and_markdown_copied(tmp_path: Path, fake_exercises) -> None:
    _synthetic(tmp_path / "src" / "97_old.ipynb", minor=4)
    (tmp_path / "src" / "GLOSSARY.md").write_text("# Glossary\n")
    (tmp_path / "src" / "scratch.ipynb").write_text("not a numbered notebook, ignored")
    reports = make_exercises(tmp_path / "src", tmp_path / "out")
    assert [r.target.name for r in reports] == ["97_old.ipynb"]
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
    reports = {r.source.name: r for r in make_exercises(NOTEBOOKS, tmp_path / "again")}
    for src in sources:
        # every exercise falls back to a reference solution: none is a plain stub
        plain = [st.name for st in reports[src.name].stubs if st.reference is None]
        assert not plain, f"{src.name}: stubs without a reference solution: {plain}"
        original = nbformat.read(src, as_version=4)
        learner = nbformat.read(tmp_path / src.name, as_version=4)
        nbformat.validate(learner)
        orig_code = [c for c in original.cells if c.cell_type == "code"]
        learn_code = [c for c in learner.cells if c.cell_type == "code"]
        assert len(learn_code) == len(orig_code), src.name
        n_blocks = sum(len(START_RE.findall(c.source)) for c in orig_code)
        assert reports[src.name].n_stubs == n_blocks, f"{src.name}: {n_blocks} solution blocks"
        n_stubs = sum(len(STUB_RE.findall(c.source)) + c.source.count("exercises.stub_value(") for c in learn_code)
        assert n_stubs >= n_blocks, f"{src.name}: {n_blocks} solution blocks but {n_stubs} stubs"
        for st in reports[src.name].stubs:  # a function stub is marked right above its def
            if st.kind != "value":
                head = re.escape(st.name.rsplit(".", 1)[-1])
                assert re.search(rf'^[ \t]*@exercises\.stub\("{re.escape(st.exercise)}"[^\n]*\n[ \t]*def {head}\(',
                                 learner.cells[st.cell + 1].source, flags=re.M), (src.name, st)
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


@pytest.mark.parametrize("name", list(registry()))
def test_every_exercise_has_a_reference_solution_that_passes_its_check(
        name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ex = registry()[name]
    ref = ex.reference()  # LookupError: the topic module lacks solution_<name>
    assert callable(ref) and ref.__name__ == ex.solution_name, ex.solution_name
    assert ref.__doc__, f"{ex.solution_name}: the reference solution needs a docstring"
    monkeypatch.setenv("MECHNB_STRICT_CHECKS", "1")
    result = ex.check(ref)
    out = capsys.readouterr().out
    assert result.passed and not result.stub, out
    assert out.startswith(f"✔ {ex.label}: correct on all"), out


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
        nbformat.v4.new_code_cell("print(gw_two_point(1.0, 0.0))"),
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
        printed = ["".join("".join(o.get("text", "")) for o in c.outputs if o.output_type == "stream")
                   for c in book.cells if c.cell_type == "code"]
        return [text for text in printed if text]  # what each cell printed

    facilitator = run(src)
    assert facilitator == ["✔ Exercise 3.2 (GW between two-point spaces): correct on all 5 cases.\n", "0.5\n"]
    monkeypatch.setenv("MECHNB_STRICT_CHECKS", "1")  # a learner notebook's stub never fails a check
    learner = run(tmp_path / "out" / src.name)
    assert len(learner) == 2 and learner[0].startswith("✎ Exercise 3.2 (GW between two-point spaces): not implemented")
    assert "Traceback" not in learner[0]
    assert learner[1] == ("↪ using the reference solution for Exercise 3.2 (GW between two-point spaces): your "
                          "`gw_two_point` is still the stub\n0.5\n")


def test_readme_shows_a_real_learner_cell_and_note(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    reports = make_exercises(NOTEBOOKS, tmp_path, [NOTEBOOKS / "02_stochastic_parameter_decomposition.ipynb"])
    stub = next(st for st in reports[0].stubs if st.exercise == "2.1")
    cell = nbformat.read(reports[0].target, as_version=4).cells[stub.cell + 1].source
    assert f"```python\n{cell}\n```" in readme, f"README should show the learner cell of exercise 2.1:\n{cell}"
    note = _stubs.fallback_note(exercises.exercise_by_id("2.1"), stub.name)
    assert f"`{note}`" in readme, f"README should quote the fallback note {note!r}"
    assert "make lab-exercises" in readme and "make lab-exercises" in (ROOT / "notebooks" / "00_welcome_and_model_zoo.ipynb").read_text()


def test_learner_edits_are_not_overwritten(tmp_path: Path, fake_exercises,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    src = _synthetic(tmp_path / "src" / "97_synthetic.ipynb")
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
    nb.cells[3].source = nb.cells[3].source.replace('raise NotImplementedError("Exercise 97.1',
                                                    'return x  # ("Exercise 97.1')
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
