"""Repository-wide pytest hooks (loaded for ``pytest tests/`` and ``pytest --nbval-lax notebooks/``).

1. **Reference outputs for ``# NBVAL_CHECK_OUTPUT`` cells.** The notebooks are committed with
   their outputs stripped, and nbval does not compare a cell whose stored copy never ran. The
   expected outputs are kept in ``tests/notebook_outputs.json`` (see ``tests/notebook_reference.py``)
   and handed to nbval here, so every marked cell is really compared. A marked cell without a
   current reference is reported by ``tests/test_project.py``.
2. **Output wait.** nbval waits a fixed 5 s for each output message of a cell after the cell has
   finished. A cell that streams many progress-bar updates (a live SPD decomposition sends ~20
   per second) can leave a backlog that a busy 2-core machine does not drain within that
   window, and nbval then fails the cell with "Timeout of 5 seconds exceeded waiting for
   output" although it ran fine. We give every notebook cell a longer output window; the
   cell-execution timeout is unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

#: Seconds nbval waits for the next output message of a finished cell (nbval's default: 5).
NBVAL_OUTPUT_TIMEOUT = 60

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
import notebook_reference  # noqa: E402  (tests/notebook_reference.py)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    references = None
    for item in items:
        if type(item).__name__ != "IPyNbCell" or not hasattr(item, "output_timeout"):  # nbval.plugin.IPyNbCell
            continue
        item.output_timeout = NBVAL_OUTPUT_TIMEOUT
        cell = getattr(item, "cell", None)
        if cell is None or not item.options.get("check") or not notebook_reference.MARKER.search(cell.source):
            continue
        if references is None:
            references = notebook_reference.load()
        entry = references.get(Path(str(item.fspath)).name, {}).get(cell.get("id"))
        if entry and entry["source_sha"] == notebook_reference.source_hash(cell.source):
            import nbformat

            cell.outputs = [nbformat.from_dict(o) for o in entry["outputs"]]
            cell.execution_count = 1  # nbval compares only cells whose reference ran


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.pluginmanager.hasplugin("nbval"):
        return (f"nbval: reference outputs of # NBVAL_CHECK_OUTPUT cells from tests/notebook_outputs.json; "
                f"output-message timeout {NBVAL_OUTPUT_TIMEOUT} s (conftest.py)")
    return None
