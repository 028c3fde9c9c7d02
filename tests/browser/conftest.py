"""Make a skipped browser test impossible to miss in the terminal summary (even without ``-rs``)."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "tests/browser/" in r.nodeid.replace("\\", "/")]
    if not skipped:
        return
    reasons = sorted({str(r.longrepr[2]) if isinstance(r.longrepr, tuple) else str(r.longrepr) for r in skipped})
    terminalreporter.write_sep("!", "THE REAL-BROWSER TEST DID NOT RUN", red=True, bold=True)
    for reason in reasons:
        terminalreporter.write_line(reason.removeprefix("Skipped: "), red=True)
