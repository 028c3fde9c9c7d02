"""Repository-wide pytest hooks (loaded for ``pytest tests/`` and ``pytest --nbval-lax notebooks/``).

1. **Reference outputs for ``# NBVAL_CHECK_OUTPUT`` cells.** The notebooks are committed with
   their outputs stripped, and nbval does not compare a cell whose stored copy never ran. The
   expected outputs are kept in ``tests/notebook_outputs.json`` (see ``tests/notebook_reference.py``)
   and handed to nbval here, so every marked cell is really compared. A marked cell without a
   current reference is reported by ``tests/test_project.py``.
   The comparison is number-aware: the numbers of a checked output are compared within the
   tolerance its marker line declares (``# NBVAL_CHECK_OUTPUT rtol=1e-3 atol=1e-6``; default:
   floats essentially exact, integers exact), the text around them exactly. nbval itself only
   knows the bare marker, so a cell whose marker carries options is switched to "check" here;
   ``compare_outputs`` of each injected cell first reconciles the outputs that agree within the
   tolerance with their reference (``notebook_reference.reconcile_outputs``) and lets nbval's
   exact comparison judge the rest, adding which number differs by how much to its report.
2. **Output wait.** nbval waits a fixed 5 s for each output message of a cell after the cell has
   finished. A cell that streams many progress-bar updates (a live SPD decomposition sends ~20
   per second) can leave a backlog that a busy 2-core machine does not drain within that
   window, and nbval then fails the cell with "Timeout of 5 seconds exceeded waiting for
   output" although it ran fine. We give every notebook cell a longer output window; the
   cell-execution timeout is unchanged.
3. **Parallel runs.** ``make test`` runs ``pytest -n N --dist loadscope`` (pytest-xdist): each
   notebook (its cells share one kernel), each test module and each test class stays on one
   worker; the long modules (the browser test, the learner notebooks, the SPD quality bars) are
   split into two modules or classes so that both workers share them. The modules holding them
   (any test marked ``browser``, ``learner`` or ``slow``, ranked in that order) are moved to the
   front of the collection, and ``make test`` passes ``--no-loadscope-reorder``, so the workers
   take the long scopes up first and share the many short ones at the end; pytest-xdist's own
   reordering (by number of tests) had put the browser modules, with four tests each, last,
   leaving one worker idle for minutes. (``loadgroup`` with per-test groups would be finer, but
   pytest-xdist 3.8 cannot rename node ids under pytest 9.2, so its groups are silently ignored.)
4. **Numeric configuration.** ``make test`` reruns the ``numerics`` tests (marker registered
   here and in ``pyproject.toml``) under other kernel families and thread counts; the report
   header names torch's kernel family and thread count, and an explicit ``OMP_NUM_THREADS``
   wins over a test module's ``torch.set_num_threads(1)`` at import.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

#: Seconds nbval waits for the next output message of a finished cell (nbval's default: 5).
NBVAL_OUTPUT_TIMEOUT = 60

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
import notebook_reference  # noqa: E402  (tests/notebook_reference.py)


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml (as are tests/conftest.py's markers).
    config.addinivalue_line("markers", "numerics: numerically sensitive tests, rerun by make test under other "
                                       "CPU kernel families and thread counts")


def _tolerant(item: Any, tol: notebook_reference.Tolerance) -> Callable[..., bool]:
    """``item.compare_outputs`` made number-aware within ``tol`` (see the module docstring)."""
    exact = item.compare_outputs
    where = f"{Path(str(item.fspath)).name} cell {item.cell.get('id')}"

    def compare_outputs(test: list[Any], ref: list[Any], skip_compare: Any = None) -> bool:
        test = copy.deepcopy(test)  # keep what the cell really printed in item.test_outputs
        problems = notebook_reference.reconcile_outputs(test, ref, tol, sanitize=item.sanitize)
        if exact(test, ref, skip_compare):
            return True
        if problems:
            item.comparison_traceback[:0] = [f"{where}: outputs differ beyond the tolerance ({tol}):",
                                             *problems, ""]
        return False

    return compare_outputs


#: Markers of long tests: a module holding one is collected before the others, in this order.
LONG_FIRST = ("browser", "learner", "slow")


def front_load_long_modules(items: list[pytest.Item]) -> None:
    """Sort ``items`` in place so that the modules with long tests (:data:`LONG_FIRST`) come first.

    Stable, and by module (a module's items stay together and in their order, so module-scoped
    fixtures are set up once); the same on every pytest-xdist worker, which must collect alike.
    """
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    n = len(LONG_FIRST)
    rank: dict[str, int] = {}
    for item in items:
        marks = [i for i, name in enumerate(LONG_FIRST) if item.get_closest_marker(name) is not None]
        rank[module(item)] = min(rank.get(module(item), n), *marks, n)
    items.sort(key=lambda item: rank[module(item)])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    front_load_long_modules(items)
    references = None
    for item in items:
        if type(item).__name__ != "IPyNbCell" or not hasattr(item, "output_timeout"):  # nbval.plugin.IPyNbCell
            continue
        item.output_timeout = NBVAL_OUTPUT_TIMEOUT
        cell = getattr(item, "cell", None)
        if cell is None or not hasattr(item, "options"):
            continue
        try:
            tol = notebook_reference.cell_tolerance(cell.source)
        except ValueError as err:
            raise pytest.UsageError(f"{item.fspath} cell {cell.get('id')}: {err}") from None
        if tol is None:
            continue
        item.options["check"] = True  # nbval recognises only the bare marker, not one with options
        if references is None:
            references = notebook_reference.load()
        entry = references.get(Path(str(item.fspath)).name, {}).get(cell.get("id"))
        if entry and entry["source_sha"] == notebook_reference.source_hash(cell.source):
            import nbformat

            cell.outputs = [nbformat.from_dict(o) for o in entry["outputs"]]
            cell.execution_count = 1  # nbval compares only cells whose reference ran
            item.compare_outputs = _tolerant(item, tol)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Some test modules pin torch to one thread when imported (the zoo models are tiny); an
    # explicit OMP_NUM_THREADS, e.g. make test's 2-thread configuration, must still reach the tests.
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0 and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


def pytest_report_header(config: pytest.Config) -> list[str]:
    import torch

    # The numeric configuration this run computes under (make test reruns the suite under several).
    knobs = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
    env = " ".join(f"{k}={os.environ[k]}" for k in knobs if k in os.environ)
    lines = [f"torch {torch.__version__}: CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
             f"{torch.get_num_threads()} threads" + (f" ({env})" if env else "")]
    if config.pluginmanager.hasplugin("nbval"):
        lines.append(f"nbval: reference outputs of # NBVAL_CHECK_OUTPUT cells from tests/notebook_outputs.json, "
                     f"numbers within each cell's tolerance; output-message timeout {NBVAL_OUTPUT_TIMEOUT} s "
                     f"(conftest.py)")
    return lines
