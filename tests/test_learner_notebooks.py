"""Every learner notebook runs to the end with every exercise left as its stub.

``make exercises`` writes the learner version of each ``notebooks/NN_*.ipynb``; here they are
written to a temporary folder and each is executed headless in a fresh kernel, exactly as a
learner who skips every exercise would run it: nothing filled in, fast mode (``MECHNB_FAST=1``),
one thread, and ``MECHNB_STRICT_CHECKS=1`` (so a check that treated a stub as a failure would
raise). Asserted for each notebook:

* every code cell ran, and none has an error output or a traceback on stderr;
* every exercise's check printed "not implemented yet" and that later cells use the reference;
* every stub that later cells use printed its fallback note
  (``↪ using the reference solution for Exercise N.M (...): your `f` is still the stub``) exactly
  once;
* every checked cell (``# NBVAL_CHECK_OUTPUT``) of the facilitator notebook that the learner
  version keeps as it is (all but the exercise cells, whose solutions became stubs) prints what
  its reference in ``tests/notebook_outputs.json`` holds, within the cell's tolerance, as under
  nbval (the fallback notes aside). Later cells use the reference solutions, so they must see
  the same numbers as in the facilitator notebook.

Marked ``learner`` (registered in pyproject.toml): it executes every notebook once more, so it
belongs to one ``make test`` configuration only: the one under the portable kernels
(``ATEN_CPU_CAPABILITY=default``), where it is also the notebooks' run under a second kernel
family (the browser test runs the facilitator notebooks under the best kernels).
The time of each notebook is printed (``-s``), and the executed learner notebook is saved as
``tests/artifacts/learner_NN_*.ipynb`` (git-ignored) to look at.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

from mechnb.exercises import exercise_by_id
from mechnb.exercises._stubs import fallback_note
from mechnb.exercises.make import find_notebooks, make_exercises, make_learner_notebook, strip_nbval_markers

import notebook_reference as reference  # tests/notebook_reference.py (tests/ is on sys.path)

pytestmark = pytest.mark.learner

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "tests" / "artifacts"
SOURCES = find_notebooks(NOTEBOOKS)
#: Seconds allowed for one cell (fast mode; generous for a loaded 2-core machine).
CELL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def learner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exercises")


def _text(output: nbformat.NotebookNode) -> str:
    text = output.get("text", "")
    return "".join(text) if isinstance(text, list) else text


def test_there_are_learner_notebooks(tmp_path: Path) -> None:
    reports = make_exercises(NOTEBOOKS, tmp_path)
    assert [r.target.name for r in reports] == [p.name for p in SOURCES] and len(SOURCES) >= 5
    assert sum(r.n_stubs for r in reports) >= 17, "the notebooks' exercises"


#: The notebooks are run by two test classes, so that ``make test``'s two pytest-xdist workers
#: (``--dist loadscope``: one class per worker) share them; these by the first, the others (new
#: notebooks included) by the second.
PART_1 = frozenset({"00", "02", "04"})
_PARTS = [[p.name for p in SOURCES if (p.name[:2] in PART_1) == (k == 1)] for k in (1, 2)]


def test_the_two_parts_run_every_notebook_once():
    assert sorted(_PARTS[0] + _PARTS[1]) == sorted(p.name for p in SOURCES) and all(_PARTS)


class TestLearnerNotebooksPart1:
    @pytest.mark.parametrize("name", _PARTS[0], ids=[n[:2] for n in _PARTS[0]])
    def test_runs_to_the_end_with_every_exercise_skipped(self, name: str, learner_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
        run_learner_notebook(name, learner_dir, monkeypatch)


class TestLearnerNotebooksPart2:
    @pytest.mark.parametrize("name", _PARTS[1], ids=[n[:2] for n in _PARTS[1]])
    def test_runs_to_the_end_with_every_exercise_skipped(self, name: str, learner_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
        run_learner_notebook(name, learner_dir, monkeypatch)


def run_learner_notebook(name: str, learner_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Write the learner version of ``name``, execute it, and assert what the module docstring lists."""
    nbclient = pytest.importorskip("nbclient")
    out = learner_dir
    report = make_learner_notebook(NOTEBOOKS / name, out / name, force=True)  # what `make exercises` writes
    for var, value in {"MECHNB_FAST": "1", "MECHNB_STRICT_CHECKS": "1", "OMP_NUM_THREADS": "1",
                       "MKL_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(var, value)  # the kernel inherits this process's environment
    nb = nbformat.read(out / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(out)}})
    t0 = time.monotonic()
    client.execute()
    seconds = time.monotonic() - t0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, ARTIFACTS / f"learner_{name}")
    print(f"\n{name}: learner version, every exercise skipped, ran in {seconds:.1f} s "
          f"({report.n_stubs} stubs, {len(report.fallbacks)} fallbacks)")

    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    errors = [f"cell {i} ({c.source.splitlines()[0] if c.source else ''!r}): {o.ename}: {o.evalue}"
              for i, c in code for o in c.outputs if o.output_type == "error"]
    errors += [f"cell {i}: a traceback on stderr:\n{_text(o)[-800:]}" for i, c in code for o in c.outputs
               if o.output_type == "stream" and o.name == "stderr" and "Traceback" in _text(o)]
    assert not errors, f"{name} (learner version) does not run to the end:\n" + "\n".join(errors)
    not_run = [i for i, c in code if c.execution_count is None]
    assert not not_run, f"{name} (learner version): cells not executed: {not_run}"

    stdout = "".join(_text(o) for _, c in code for o in c.outputs
                     if o.output_type == "stream" and o.name == "stdout")
    for ex_id in report.exercises:
        ex = exercise_by_id(ex_id)
        assert f"✎ {ex.label}: not implemented yet" in stdout, f"{name}: the check of {ex_id} did not see the stub"
    notes = [line for line in stdout.splitlines() if line.startswith("↪ ")]
    for st in report.fallbacks:
        note = fallback_note(exercise_by_id(st.exercise), st.name)
        assert notes.count(note) == 1, (f"{name}: `{st.name}` (exercise {st.exercise}) is used by cell(s) "
                                        f"{st.used_in}, but its fallback note appeared {notes.count(note)} times")
    expected = {fallback_note(exercise_by_id(st.exercise), st.name) for st in report.fallbacks}
    assert set(notes) == expected, f"{name}: unexpected notes {sorted(set(notes) - expected)}"

    cells, n_exercise_cells = kept_checked_cells(nbformat.read(NOTEBOOKS / name, as_version=4), nb, expected)
    n_compared, problems = reference.check_executed_cells(name, cells)
    print(f"{name}: {n_compared} checked cells compared with their references "
          f"({n_exercise_cells} exercise cells are stubs here)")
    assert not problems, (f"{name} (learner version): checked cells differ from their references:\n"
                          + "\n".join(problems))
    assert n_compared == len(cells), f"{name}: {len(cells) - n_compared} kept checked cells have no current reference"


def kept_checked_cells(facilitator: nbformat.NotebookNode, learner: nbformat.NotebookNode,
                       notes: set[str]) -> tuple[list[dict], int]:
    """``(cells, n_changed)``: the facilitator's checked cells that the learner version keeps unchanged.

    Each as ``{"id", "source", "outputs"}`` for :func:`notebook_reference.check_executed_cells`: the
    facilitator's source (its marker carries the tolerance, its hash keys the reference) with the
    outputs the executed learner cell printed, the fallback-note lines (``notes``) removed.
    ``n_changed``: checked exercise cells (their solutions are stubs in the learner version); a checked
    cell without an exercise that the learner version changed or dropped fails the test.
    """
    by_id = {c.get("id"): c for c in learner.cells if c.cell_type == "code"}
    cells, n_changed = [], 0
    for cell in reference.checked_cells(facilitator):
        twin = by_id.get(cell.get("id"))
        if twin is None or twin.source != strip_nbval_markers(cell.source):
            # only an exercise cell (one with a solution block) may differ: any other checked cell must be compared
            assert twin is not None and "SOLUTION" in cell.source, (
                f"checked cell {cell.get('id')} holds no exercise, but the learner version "
                f"{'dropped' if twin is None else 'changed'} it")
            n_changed += 1
            continue
        outputs = []
        for out in twin.outputs:
            if out.output_type == "stream":
                kept = "".join(line for line in _text(out).splitlines(keepends=True) if line.rstrip("\n") not in notes)
                if not kept:
                    continue
                out = nbformat.from_dict({**out, "text": kept})
            outputs.append(out)
        cells.append({"id": cell.get("id"), "source": cell.source, "outputs": outputs})
    return cells, n_changed
