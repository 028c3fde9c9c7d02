"""Write the learner versions of the notebooks: ``python -m mechnb.exercises.make`` (``make exercises``).

The notebooks in ``notebooks/`` are the facilitator versions: complete, executed by nbval. Inside
their exercise cells the reference solution is marked::

    def lower_leaky_hard_sigmoid(x):
        \"\"\"...\"\"\"
        # SOLUTION
        return x.clamp(max=1.0) ...
        # END SOLUTION

For every ``notebooks/NN_*.ipynb`` this tool writes ``exercises/NN_*.ipynb`` in which each marked
block (markers included) is replaced by one line at the indentation of its ``# SOLUTION`` marker,
and the function holding it is marked as the stub of its exercise::

    @exercises.stub("2.1")
    def lower_leaky_hard_sigmoid(x):
        \"\"\"...\"\"\"
        raise NotImplementedError("Exercise 2.1: write your code here (see the exercise box above)")

Everything outside the blocks — the ``def`` line, the docstring, a ``return`` after the block —
stays. While the learner has not written it, the exercise's check reports "not implemented yet"
and every later use of the function falls back to the reference solution with a one-line note
(:mod:`mechnb.exercises._stubs`), so a learner notebook runs to the end with every exercise
skipped. The forms a block may take (inside a function or a method, or whole defs and assignments
at the top level) and the reference each stub falls back to are those of
:mod:`mechnb.exercises._stubgen`; any other block, or one used by later cells without a reference
solution, stops this tool with a message naming the cell and line (nothing is written).

Outputs, execution counts and nbval's ``# NBVAL_...`` marker lines are stripped, a note saying
where the complete version lives (and that skipping an exercise is fine) is put at the top, and
the other files of ``notebooks/`` that the notebooks link to (``*.md``, e.g. the glossary) are
copied along.

Learners write their answers into ``exercises/``: a learner notebook whose cells were edited since
it was written is never overwritten (``--force`` does); running its cells does not count as an edit.

Exercise numbers: ``N`` is the notebook's number (``02_...`` -> 2). ``M`` is given on the marker
(``# SOLUTION 2.3`` or ``# SOLUTION Exercise 2.3``), otherwise it is that of the check the
function is handed to (``exercises.spd.check_x(f)``, in any cell), otherwise it counts the code
cells that hold solution blocks (every block of one cell belongs to the same exercise).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from mechnb.exercises._stubgen import (
    MarkerError,
    Stub,
    UnsafeStubError,
    binds_exercises,
    checked_names,
    names_used,
    replace_solutions,
    stub_cell,
    stub_line,
)

__all__ = [
    "LEARNER_NOTE",
    "MarkerError",
    "NotebookReport",
    "Stub",
    "UnsafeStubError",
    "default_paths",
    "find_notebooks",
    "learner_edits",
    "make_learner_notebook",
    "make_exercises",
    "replace_solutions",
    "strip_nbval_markers",
    "stub_line",
    "main",
]

_NOTEBOOK = re.compile(r"^(?P<num>\d{2})_.*\.ipynb$")

#: The markdown cell put at the top of every learner notebook (``{source}`` = the facilitator file).
LEARNER_NOTE = (
    "> **Learner version** — written by `make exercises` from `notebooks/{source}`. Every exercise cell "
    "holds a stub that raises `NotImplementedError`: replace that line with your code, run the cell, then "
    "run the check below it. Hints and a reference solution are in the collapsible boxes under each "
    "exercise; the complete notebook (with solutions in place) is `notebooks/{source}`.\n>\n"
    "> **Skipping an exercise is fine.** The `@exercises.stub(\"N.M\")` line above an exercise function "
    "marks it as the stub: while it still raises `NotImplementedError`, its check says *not implemented "
    "yet* and the cells after it use the reference solution instead, saying so in one line "
    "(`↪ using the reference solution for Exercise N.M ...`). So *Run All* works from the start, and "
    "your own code takes over as soon as you have written it."
)


@dataclass
class NotebookReport:
    """What :func:`make_learner_notebook` did to one notebook."""

    source: Path
    target: Path
    exercises: list[str] = field(default_factory=list)  # exercise ids, in order
    n_stubs: int = 0
    skipped: bool = False  # the target holds the learner's edits and was left alone
    stubs: list[Stub] = field(default_factory=list)  # every stubbed function/method/value

    @property
    def fallbacks(self) -> list[Stub]:
        """The stubs that later cells use: running the notebook unchanged prints their fallback note."""
        return [st for st in self.stubs if st.reference is not None and st.used_in]

    def line(self) -> str:
        if self.skipped:
            return (f"{_relative(self.target)}: NOT overwritten — it holds your edits "
                    f"(move it away, or run with --force to replace it)")
        ids = ", ".join(f"Exercise {i}" for i in self.exercises) if self.exercises else "no exercises"
        plain = [st.name for st in self.stubs if st.reference is None]
        note = f"; without a reference solution to fall back to: {', '.join(plain)}" if plain else ""
        return f"{_relative(self.target)}: {self.n_stubs} stub(s) ({ids}){note}"


def _relative(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


_NBVAL_LINE = re.compile(r"^[ \t]*#[ \t]*NBVAL_\w+.*(?:\n|$)", re.MULTILINE)


def strip_nbval_markers(source: str) -> str:
    """``source`` without nbval's ``# NBVAL_...`` marker lines, as the learner version shows a cell.

    A facilitator cell that holds no exercise reaches the learner notebook as exactly this, so its
    outputs can be checked against the facilitator notebook's references (``tests/test_learner_notebooks.py``).
    """
    if not isinstance(source, str):
        raise TypeError(f"source: expected a cell's source as a str, got {type(source).__name__}")
    return _NBVAL_LINE.sub("", source)


def _strip(cell: nbformat.NotebookNode) -> None:
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    for key in ("execution", "collapsed", "scrolled"):
        cell.metadata.pop(key, None)


def _sources_digest(nb: nbformat.NotebookNode) -> str:
    """A hash of the cells' types and sources (not outputs): changes when someone edits the notebook."""
    h = hashlib.sha256()
    for cell in nb.cells:
        h.update(cell.cell_type.encode() + b"\0" + cell.source.encode() + b"\0")
    return h.hexdigest()


def learner_edits(target: Path) -> bool:
    """True when learner notebook ``target`` exists and its cells were edited since ``make exercises`` wrote it.

    Running cells (outputs) does not count; a notebook without the recorded digest (not written
    by this tool) counts as edited.
    """
    target = Path(target)
    if not target.exists():
        return False
    try:
        nb = nbformat.read(target, as_version=4)
    except Exception:  # noqa: BLE001 - unreadable: do not overwrite blindly
        return True
    recorded = nb.metadata.get("mechnb", {}).get("sources_sha256")
    return recorded != _sources_digest(nb)


def make_learner_notebook(source: Path, target: Path, *, force: bool = False) -> NotebookReport:
    """Write the learner version of notebook ``source`` to ``target`` (see the module docstring).

    A ``target`` whose cells the learner has edited since it was written (see
    :func:`learner_edits`) is left alone (``report.skipped``) unless ``force``. Raises
    :class:`MarkerError` / :class:`UnsafeStubError` (nothing written) for a block it cannot stub.
    """
    return _write(*_learner_version(Path(source), Path(target)), force=force)


def _learner_version(source: Path, target: Path) -> tuple[nbformat.NotebookNode, NotebookReport]:
    m = _NOTEBOOK.match(source.name)
    if not m:
        raise ValueError(f"source: expected a notebook named NN_<name>.ipynb, got {source.name!r}")
    number = int(m.group("num"))
    nb = nbformat.read(source, as_version=4)
    report = NotebookReport(source, target)
    counter = 0
    code = {i: c.source for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    used = {i: names_used(src) for i, src in code.items()}
    checked: dict = {}
    for src in code.values():  # the exercise each checked function belongs to (first check wins)
        checked = {**checked_names(src), **checked}
    bound = False  # whether `exercises` is imported by the cell at hand
    for index, cell in enumerate(nb.cells):
        _strip(cell)
        if cell.cell_type != "code":
            continue
        bound = bound or binds_exercises(cell.source)
        if "SOLUTION" not in cell.source:
            continue
        new_source, ids, stubs = stub_cell(
            cell.source, f"{number}.{counter + 1}", where=f"{source.name}, cell {index}", index=index,
            uses_after=lambda name, i=index: [j for j in used if j > i and name in used[j]], exercises_bound=bound,
            checked_elsewhere=checked)
        if not ids:
            continue
        counter += 1
        cell.source = new_source
        report.n_stubs += len(ids)
        report.stubs += stubs
        report.exercises += [i for i in dict.fromkeys(ids) if i not in report.exercises]
    for cell in nb.cells:  # after stubbing, so that messages give the facilitator notebook's line numbers
        if cell.cell_type == "code":
            cell.source = strip_nbval_markers(cell.source)  # nbval's markers mean nothing to a learner
    note = nbformat.v4.new_markdown_cell(LEARNER_NOTE.format(source=source.name))
    if (nb.nbformat, nb.nbformat_minor) >= (4, 5):
        note.id = "mechnb-learner-note"  # fixed, so regenerating gives the same file
    else:
        note.pop("id", None)  # cell ids only exist from nbformat 4.5
    nb.cells.insert(0, note)
    nb.metadata["mechnb"] = {"learner_version": True, "facilitator_version": f"notebooks/{source.name}",
                             "sources_sha256": _sources_digest(nb)}
    nbformat.validate(nb)
    return nb, report


def _write(nb: nbformat.NotebookNode, report: NotebookReport, *, force: bool) -> NotebookReport:
    target = report.target
    if not force and learner_edits(target):
        report.skipped = True
        return report
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(target)
    return report


def default_paths() -> tuple[Path, Path]:
    """``(notebooks/, exercises/)`` of the checkout mechnb is installed from, else of the CWD."""
    checkout = Path(__file__).resolve().parents[2]
    root = checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()
    return root / "notebooks", root / "exercises"


def find_notebooks(src: Path) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` of folder ``src``, sorted."""
    return sorted(p for p in Path(src).glob("*.ipynb") if _NOTEBOOK.match(p.name))


def make_exercises(src: Path | None = None, out: Path | None = None,
                   notebooks: Sequence[Path] | None = None, *, force: bool = False) -> list[NotebookReport]:
    """Write the learner version of every numbered notebook of ``src`` (or of ``notebooks``) to ``out``.

    Learner notebooks with the learner's edits are kept unless ``force`` (see
    :func:`make_learner_notebook`). Also copies ``src/*.md`` (glossary, ...) to ``out`` so the
    notebooks' relative links work there. Every notebook is converted before any is written, so
    a block that cannot be stubbed (:class:`UnsafeStubError`) leaves ``out`` as it was.
    """
    d_src, d_out = default_paths()
    src = Path(src) if src is not None else d_src
    out = Path(out) if out is not None else d_out
    if not src.is_dir():
        raise ValueError(f"src: expected a folder of notebooks, got {src} (not a folder)")
    paths = [Path(p) for p in notebooks] if notebooks else find_notebooks(src)
    if not paths:
        raise ValueError(f"src: no notebooks named NN_*.ipynb in {src}")
    versions = [_learner_version(p, out / p.name) for p in paths]
    out.mkdir(parents=True, exist_ok=True)
    reports = [_write(nb, report, force=force) for nb, report in versions]
    for extra in sorted(src.glob("*.md")):
        shutil.copyfile(extra, out / extra.name)
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mechnb.exercises.make", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to convert (default: every NN_*.ipynb of --src)")
    parser.add_argument("--src", type=Path, default=None, help="folder of facilitator notebooks (default: notebooks/)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the learner notebooks (default: exercises/)")
    parser.add_argument("--force", action="store_true",
                        help="also overwrite learner notebooks whose cells you edited (your answers are lost)")
    args = parser.parse_args(argv)
    try:
        reports = make_exercises(args.src, args.out, args.notebooks or None, force=args.force)
    except (MarkerError, ValueError) as err:
        print(f"make exercises: {err}", file=sys.stderr)
        return 1
    for r in reports:
        print(r.line())
    written = [r for r in reports if not r.skipped]
    total = sum(r.n_stubs for r in written)
    kept = f", {len(reports) - len(written)} kept (your edits)" if len(written) < len(reports) else ""
    print(f"make exercises: {len(written)} learner notebook(s), {total} stub(s) in "
          f"{_relative(reports[0].target.parent)}/{kept}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
