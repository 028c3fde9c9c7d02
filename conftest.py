"""Repository-wide pytest hooks (loaded for ``pytest tests/`` and ``pytest --nbval-lax notebooks/``).

nbval waits a fixed 5 s for each output message of a cell after the cell has finished. A cell
that streams many progress-bar updates (a live SPD decomposition sends ~20 per second) can
leave a backlog that a busy 2-core machine does not drain within that window, and nbval then
fails the cell with "Timeout of 5 seconds exceeded waiting for output" although it ran fine.
We give every notebook cell a longer output window; the cell-execution timeout is unchanged.
"""

from __future__ import annotations

import pytest

#: Seconds nbval waits for the next output message of a finished cell (nbval's default: 5).
NBVAL_OUTPUT_TIMEOUT = 60


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if type(item).__name__ == "IPyNbCell" and hasattr(item, "output_timeout"):  # nbval.plugin.IPyNbCell
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.pluginmanager.hasplugin("nbval"):
        return f"nbval: output-message timeout raised to {NBVAL_OUTPUT_TIMEOUT} s by conftest.py"
    return None
