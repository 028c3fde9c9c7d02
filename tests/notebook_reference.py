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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
REFERENCE = Path(__file__).resolve().with_name("notebook_outputs.json")
MARKER = re.compile(r"^\s*#\s*NBVAL_CHECK_OUTPUT\s*$", re.M)
#: Output keys kept in the reference (nbval's lax mode ignores metadata, counts and images).
_KEEP_DATA = ("text/plain",)


def source_hash(source: str) -> str:
    """A short hash of a cell's source: the reference is stale once the source changes."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


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
