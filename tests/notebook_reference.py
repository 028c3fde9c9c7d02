"""Reference outputs for the notebooks' ``# NBVAL_CHECK_OUTPUT`` cells.

The notebooks are committed with their outputs stripped, and nbval skips the comparison for a
cell whose stored copy was never run, so on its own a ``# NBVAL_CHECK_OUTPUT`` marker would
check nothing. The expected outputs of those cells live here instead, in
``tests/notebook_outputs.json``: per notebook, per cell id, a hash of the cell's source and the
outputs of a fast-mode run. The repository's ``conftest.py`` hands them to nbval when it
collects the notebooks, so ``pytest --nbval-lax notebooks/`` really compares every marked cell
(figures and widget models are not compared, as in nbval's lax mode), and
``tests/test_project.py`` fails when a marked cell has no reference or its source changed since
the reference was recorded.

After changing a checked cell (or what it prints), record the references again::

    MECHNB_FAST=1 OMP_NUM_THREADS=1 .venv/bin/python tests/notebook_reference.py --update [NN ...]

and review ``git diff tests/notebook_outputs.json`` before committing.

**Number-aware comparison.** A checked cell's output is compared with its reference line by
line: the text between the numbers exactly (except for spaces and tabs: those next to a number
are ignored and other runs of them count as one space, so a column that widens by a digit or
a sign still lines up), every number within the tolerance the marker
line declares::

    # NBVAL_CHECK_OUTPUT                          floats essentially exact (rtol=1e-6, atol=1e-9), integers exact
    # NBVAL_CHECK_OUTPUT rtol=1e-3                floats within 0.1 %
    # NBVAL_CHECK_OUTPUT rtol=1e-2 atol=1e-6      floats within 1 % or 1e-6
    # NBVAL_CHECK_OUTPUT atol=1                   integers (counts) may also move by 1

A number passes when ``|got - expected| <= atol + rtol * |expected|`` (``numpy.isclose``'s
rule, the reference on the right). Integers (no decimal point, no exponent) compare exactly
unless the cell declares ``atol >= 1``, and an integer never matches a float (``3`` vs ``3.0`` is a
change of format). A number is a token like ``-12``, ``0.25``, ``.5``, ``1e-3`` or
``4.4e-16`` standing on its own: digits glued to a word (``avx512``, ``tms-5-2``, ``linear1``,
``10k``, ``0x1f``) and dotted versions (``2.13.0``) are text and compare exactly; ``nan``/``inf`` are
text too. The options are part of the cell's source, so changing a tolerance makes the
reference stale like any other edit of the cell.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
REFERENCE = Path(__file__).resolve().with_name("notebook_outputs.json")
#: The marker line of a checked cell, with optional tolerance options: ``# NBVAL_CHECK_OUTPUT rtol=1e-3 atol=1e-6``.
#: Whatever follows the marker on its line is its options (``key=value`` words), then an optional ``# comment``.
MARKER = re.compile(r"^[ \t]*#[ \t]*NBVAL_CHECK_OUTPUT(?=[ \t]|$)(?P<options>[^\n]*)$", re.M)
#: Output keys kept in the reference (nbval's lax mode ignores metadata, counts and images).
_KEEP_DATA = ("text/plain",)


def source_hash(source: str) -> str:
    """A short hash of a cell's source: the reference is stale once the source changes."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------
# Tolerances and the number-aware comparison
# --------------------------------------------------------------------------------------
#: Float tolerance of a checked cell that declares none: essentially exact (a printed float
#: rarely carries 7 significant digits), so a cell must opt in to a looser one.
DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-9


@dataclass(frozen=True)
class Tolerance:
    """How closely the numbers of a checked cell's output must match its reference.

    A number passes when ``|got - expected| <= atol + rtol * |expected|``; integers only when
    they are equal, unless ``atol >= 1`` (then by the same rule).
    """

    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL

    def __str__(self) -> str:
        ints = "integers within atol" if self.atol >= 1 else "integers exact"
        return f"rtol={self.rtol:g} atol={self.atol:g}, {ints}"


def parse_options(options: str) -> Tolerance:
    """The :class:`Tolerance` declared by the text after ``NBVAL_CHECK_OUTPUT`` on the marker line.

    ``options`` holds whitespace-separated ``rtol=<float>`` / ``atol=<float>`` words (each at most
    once, non-negative, finite), optionally followed by a ``# comment``. Anything else raises
    ``ValueError`` naming the word, so a typo never silently leaves a cell exact or unchecked.
    """
    if not isinstance(options, str):
        raise TypeError(f"options must be a str, got {type(options).__name__}")
    words = options.split("#", 1)[0].split()
    values: dict[str, float] = {}
    for word in words:
        key, sep, raw = word.partition("=")
        if not sep or key not in ("rtol", "atol"):
            raise ValueError(f"NBVAL_CHECK_OUTPUT options: expected rtol=<float> or atol=<float>, got {word!r}")
        if key in values:
            raise ValueError(f"NBVAL_CHECK_OUTPUT options: {key} given twice in {options.strip()!r}")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"NBVAL_CHECK_OUTPUT options: {key} must be a number, got {raw!r}") from None
        if not (value >= 0 and value != float("inf")):
            raise ValueError(f"NBVAL_CHECK_OUTPUT options: {key} must be finite and >= 0, got {raw!r}")
        values[key] = value
    return Tolerance(**values)


def cell_tolerance(source: str) -> Tolerance | None:
    """The tolerance a cell's ``# NBVAL_CHECK_OUTPUT`` line declares; ``None`` for an unchecked cell."""
    match = MARKER.search(source)
    return None if match is None else parse_options(match.group("options"))


#: A word: a letter or ``_`` then word characters, with ``-``-joined parts (``avx512``, ``tms-5-2``,
#: ``float64``). Its digits are text. Tried before a number at every position.
_WORD = r"[^\W\d]\w*(?:-\w+)*"
#: A number standing on its own: not glued to a word or to another number's dot on either side.
_NUMBER = r"(?<!\w)(?<!\w\.)[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?!\w|\.\w)"
_TOKEN = re.compile(rf"(?P<word>{_WORD})|(?P<number>{_NUMBER})")
_SPACE = re.compile(r"[ \t]+")
_SPACE_AT_NUMBER = re.compile(r" ?\x00 ?")


def split_numbers(line: str) -> tuple[str, list[str]]:
    """``(skeleton, numbers)``: the line with each number replaced by ``\\x00`` (spaces and tabs
    next to a number dropped, other runs of them made one space), and the numbers' texts in order.

    ``split_numbers("avx512: GW = -0.25  (n=3)")`` is ``("avx512: GW =\\x00(n=\\x00)", ["-0.25", "3"])``.
    """
    numbers: list[str] = []
    parts: list[str] = []
    last = 0
    for m in _TOKEN.finditer(line):
        if m.group("number") is None:
            continue
        parts.append(line[last:m.start()])
        parts.append("\x00")
        numbers.append(m.group())
        last = m.end()
    parts.append(line[last:])
    return _SPACE_AT_NUMBER.sub("\x00", _SPACE.sub(" ", "".join(parts))), numbers


def _is_integer(text: str) -> bool:
    return not any(c in text for c in ".eE")


def compare_numbers(expected: str, got: str, tol: Tolerance) -> str | None:
    """``None`` if the number ``got`` matches ``expected`` within ``tol``, else why not."""
    if _is_integer(expected) != _is_integer(got):
        kinds = ("an integer", "a float") if _is_integer(expected) else ("a float", "an integer")
        return f"{expected} -> {got}: {kinds[0]} became {kinds[1]} (a change of format)"
    if _is_integer(expected) and tol.atol < 1:
        e, g = int(expected), int(got)
        return None if e == g else f"{expected} -> {got}: integers differ by {g - e:+d} (exact unless atol>=1)"
    e, g = float(expected), float(got)
    allowed = tol.atol + tol.rtol * abs(e)
    diff = abs(g - e)
    if diff <= allowed:
        return None
    rel = f"{diff / abs(e):.2g}" if e else "inf"
    return f"{expected} -> {got}: differs by {diff:.3g} (relative {rel}), allowed {allowed:.3g} ({tol})"


def compare_text(expected: str, got: str, tol: Tolerance) -> list[str]:
    """Why ``got`` does not match ``expected`` (an empty list if it does), line by line.

    The text between numbers must be equal (up to spaces, see :func:`split_numbers`), each
    line must hold as many numbers, and each number must pass :func:`compare_numbers`. Every
    problem names the line, the expected and the got line, and (for numbers) which one
    differs by how much.
    """
    exp_lines, got_lines = expected.splitlines(), got.splitlines()
    problems: list[str] = []
    if len(exp_lines) != len(got_lines):
        problems.append(f"{len(exp_lines)} lines expected, {len(got_lines)} got")
    for i, (e_line, g_line) in enumerate(zip(exp_lines, got_lines), start=1):
        if e_line == g_line:
            continue
        (e_skel, e_nums), (g_skel, g_nums) = split_numbers(e_line), split_numbers(g_line)
        where = f"line {i}:\n    expected {e_line!r}\n    got      {g_line!r}\n    "
        if len(e_nums) != len(g_nums):
            problems.append(where + f"{len(e_nums)} numbers expected, {len(g_nums)} got")
        elif e_skel != g_skel:
            problems.append(where + "the text around the numbers differs")
        else:
            bad = [(k, why) for k, (a, b) in enumerate(zip(e_nums, g_nums), start=1)
                   if (why := compare_numbers(a, b, tol)) is not None]
            problems.extend(where + f"number {k} of {len(e_nums)}: {why}" for k, why in bad)
    if len(exp_lines) != len(got_lines):
        extra = exp_lines[len(got_lines):] or got_lines[len(exp_lines):]
        side = "missing" if len(exp_lines) > len(got_lines) else "unexpected"
        problems.append(f"first {side} line: {extra[0]!r}")
    return problems


def _output_texts(outputs: Iterable[Any]) -> list[tuple[str, Any, str]]:
    """``(key, container, field)`` of every text value nbval compares: streams by name, data by MIME type."""
    slots = []
    for out in outputs:
        if out.get("output_type") == "stream" and isinstance(out.get("text"), str):
            slots.append((f"stream {out.get('name')}", out, "text"))
        for mime, value in (out.get("data") or {}).items():
            if mime.startswith("text/") and isinstance(value, str):
                slots.append((mime, out["data"], mime))
    return slots


def reconcile_outputs(test: list[Any], ref: list[Any], tol: Tolerance,
                      sanitize: Callable[[str], str] = lambda s: s) -> list[str]:
    """Number-aware matching of a cell's outputs ``test`` against its reference ``ref``.

    Pairs the text values as nbval does (the n-th ``stdout`` stream with the n-th, the n-th
    ``text/plain`` with the n-th, ...). A value that matches its reference within ``tol``
    (after ``sanitize``, nbval's normalisation) is replaced in ``test`` by the reference's text,
    so nbval's exact comparison that follows passes on it; the others are left as they are
    (nbval then reports them) and the returned list says why each differs.
    """
    refs: dict[str, list[str]] = {}
    for key, box, field in _output_texts(ref):
        refs.setdefault(key, []).append(box[field])
    seen: dict[str, int] = {}
    problems = []
    for key, box, field in _output_texts(test):
        n = seen[key] = seen.get(key, -1) + 1
        if n >= len(refs.get(key, ())):
            continue  # an output the reference lacks: nbval reports it
        expected = refs[key][n]
        why = compare_text(sanitize(expected), sanitize(box[field]), tol)
        if why:
            problems.append(f"{key} (output {n + 1}):\n  " + "\n  ".join(why))
        else:
            box[field] = expected
    return problems


_CR_OVERWRITE = re.compile(r"[^\n]*\r(?!\n)")
_BACKSPACE = re.compile(r"[^\n]\x08")


def comparable_outputs(outputs: Iterable[Any]) -> list[tuple[str, str]]:
    """``[(key, text), ...]``: what nbval's lax mode compares of a cell's ``outputs``, in order.

    Streams of one name are joined into the first of them (nbval's ``coalesce_streams``, with its
    handling of ``\r`` and ``\b``); a display or result contributes its ``text/plain``; errors and
    everything else (figures, HTML, widget models, metadata) are left out. Accepts nbformat nodes
    or the plain dicts a notebook's JSON (or JupyterLab's output model) holds.
    """
    items: list[list[str]] = []
    streams: dict[str, list[str]] = {}
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            text = out.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            name = out.get("name", "stdout")
            if name in streams:
                streams[name][1] += text
            else:
                streams[name] = [f"stream {name}", text]
                items.append(streams[name])
        elif kind in ("execute_result", "display_data"):
            value = (out.get("data") or {}).get("text/plain")
            if value is not None:
                items.append(["text/plain", "".join(value) if isinstance(value, list) else value])
    for item in streams.values():
        text = item[1]
        while True:
            shorter = _BACKSPACE.sub("", text)
            if len(shorter) == len(text):
                break
            text = shorter
        item[1] = _CR_OVERWRITE.sub("", text)
    return [(k, v) for k, v in items]


def compare_cell_outputs(got: Iterable[Any], expected: Iterable[Any], tol: Tolerance) -> list[str]:
    """Why the outputs ``got`` of a checked cell differ from its reference ``expected`` (``[]``: they agree).

    The outside-nbval twin of the comparison ``conftest.py`` gives nbval (for a notebook executed
    elsewhere, e.g. in JupyterLab by the browser test): the :func:`comparable_outputs` of both
    sides must have the same kinds in the same order, and each text must agree with its
    reference under :func:`compare_text` within ``tol``.
    """
    g, e = comparable_outputs(got), comparable_outputs(expected)
    if [k for k, _ in g] != [k for k, _ in e]:
        return [f"output kinds differ: got {[k for k, _ in g]}, expected {[k for k, _ in e]}"]
    problems = []
    for n, ((key, text), (_, ref)) in enumerate(zip(g, e)):
        why = compare_text(ref, text, tol)
        if why:
            problems.append(f"{key} (output {n + 1}):\n  " + "\n  ".join(why))
    return problems


def check_executed_cells(name: str, cells: list[dict[str, Any]],
                         references: dict[str, dict[str, dict[str, Any]]] | None = None) -> tuple[int, list[str]]:
    """``(n_compared, problems)``: the checked cells of notebook ``name`` against their references.

    ``cells``: ``[{"id", "source", "outputs"}, ...]`` of the executed notebook (e.g. read from
    JupyterLab by ``tests/browser/lab_driver.py``); ``references``: :func:`load`'s mapping (default:
    ``tests/notebook_outputs.json``).
    Only checked cells whose reference was recorded from their current source are compared
    (``tests/test_project.py`` reports the others).
    """
    refs = (load() if references is None else references).get(name, {})
    compared, problems = 0, []
    for cell in cells:
        tol = cell_tolerance(cell["source"])
        entry = refs.get(cell["id"])
        if tol is None or not entry or entry["source_sha"] != source_hash(cell["source"]):
            continue
        compared += 1
        why = compare_cell_outputs(cell["outputs"], entry["outputs"], tol)
        if why:
            problems.append(f"cell {cell['id']} ({tol}):\n    " + "\n    ".join(why))
    return compared, problems


def n_current_references(path: Path, references: dict[str, dict[str, dict[str, Any]]] | None = None) -> int:
    """How many checked cells of the notebook at ``path`` have a reference recorded from their current source."""
    import nbformat

    refs = (load() if references is None else references).get(path.name, {})
    return sum(1 for c in checked_cells(nbformat.read(path, as_version=4))
               if c.get("id") in refs and refs[c.get("id")]["source_sha"] == source_hash(c.source))


def checked_cells(nb: Any) -> list[Any]:
    """The code cells of ``nb`` marked ``# NBVAL_CHECK_OUTPUT``."""
    return [c for c in nb.cells if c.cell_type == "code" and MARKER.search(c.source)]


def load() -> dict[str, dict[str, dict[str, Any]]]:
    """``{notebook file name: {cell id: {"source_sha": ..., "outputs": [...]}}}`` (empty if absent)."""
    if not REFERENCE.exists():
        return {}
    return json.loads(REFERENCE.read_text())


def _clean(output: dict[str, Any]) -> dict[str, Any] | None:
    kind = output["output_type"]
    if kind == "stream":
        return {"output_type": "stream", "name": output["name"], "text": output["text"]}
    if kind in ("execute_result", "display_data"):
        data = {k: v for k, v in output.get("data", {}).items() if k in _KEEP_DATA}
        return {"output_type": kind, "data": data, "metadata": {}}
    return None  # errors never belong in a reference


def record(paths: list[Path], timeout: int = 600) -> dict[str, dict[str, dict[str, Any]]]:
    """Execute each notebook (fast mode, in this interpreter's kernel) and collect its checked cells' outputs."""
    import nbclient
    import nbformat

    if os.environ.get("MECHNB_FAST", "0") in ("", "0"):
        raise SystemExit("record the references in fast mode: MECHNB_FAST=1 (what make test runs)")
    out = {}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        print(f"executing {path.name} ...", flush=True)
        nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}}).execute()
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        if errors:
            raise SystemExit(f"{path.name}: a cell raised {errors[0].ename}: {errors[0].evalue}")
        out[path.name] = {c.id: {"source_sha": source_hash(c.source),
                                 "outputs": [o for o in map(_clean, c.outputs) if o is not None]}
                          for c in checked_cells(nb)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--update", action="store_true", help="execute the notebooks and rewrite the references")
    ap.add_argument("numbers", nargs="*", help="only these notebooks (e.g. 02 03); default: all")
    args = ap.parse_args(argv)
    paths = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if not args.numbers or p.name[:2] in args.numbers)
    if not args.update:
        ref = load()
        for p in paths:
            print(f"{p.name}: {len(ref.get(p.name, {}))} checked cells with a reference")
        return 0
    ref = load()
    ref.update(record(paths))
    REFERENCE.write_text(json.dumps(dict(sorted(ref.items())), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {REFERENCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
