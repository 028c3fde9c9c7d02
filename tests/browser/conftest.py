"""Fixtures of the browser test (a JupyterLab server, a headless chromium) and a loud skip notice.

The machinery lives in ``lab_driver.py``; the tests in ``test_widgets_in_browser.py`` and
``test_widgets_in_browser_2.py``. The fixtures are module-scoped: each of the two modules starts
its own JupyterLab and browser, so that the two can run on two pytest-xdist workers at once.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from lab_driver import CHROMIUM, CHROMIUM_ARGS, LAB_SETTINGS, NOTEBOOK_DIR, Lab, _not_plain_files, _skip_loudly
from mechnb.lab import find_free_port, lab_command, lab_env


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "tests/browser/" in r.nodeid.replace("\\", "/")]
    if not skipped:
        return
    reasons = sorted({str(r.longrepr[2]) if isinstance(r.longrepr, tuple) else str(r.longrepr) for r in skipped})
    # narrowed on purpose (MECHNB_BROWSER_NOTEBOOKS): not a browser that failed to start
    reasons = [r for r in reasons if "MECHNB_BROWSER_NOTEBOOKS" not in r and "empty parameter set" not in r]
    if not reasons:
        return
    terminalreporter.write_sep("!", "THE REAL-BROWSER TEST DID NOT RUN", red=True, bold=True)
    for reason in reasons:
        terminalreporter.write_line(reason.removeprefix("Skipped: "), red=True)


@pytest.fixture(scope="module")
def playwright_api():
    if not CHROMIUM.exists():
        _skip_loudly(f"no chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_loudly("the PyPI package `playwright` is not installed in this environment")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, playwright_api) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, root, ignore=_not_plain_files)
    settings = base / "settings"
    for rel, content in LAB_SETTINGS.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))
    env = {
        **os.environ,
        "MECHNB_FAST": "1",            # the kernel inherits the server's environment
        "MECHNB_STRICT_CHECKS": "1",   # an exercise check that fails on the solution is an error
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_DATA_DIR": str(base / "data"),        # only the venv's kernel spec and extensions
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "IPYTHONDIR": str(base / "ipython"),
    }
    env.pop("MPLBACKEND", None)  # tests/conftest.py sets Agg; the kernel should see what a user's does
    token = secrets.token_urlsafe(24)
    port = find_free_port(0)
    cmd = lab_command(port, root) + ["--LabApp.expose_app_in_browser=True",  # window.jupyterapp for the test
                                     "--ServerApp.shutdown_no_activity_timeout=900"]
    log = base / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=lab_env(token, base=env), stdout=fh, stderr=subprocess.STDOUT,
                                cwd=base, start_new_session=True)
    server = Lab(port, token, root, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode} before answering:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(server.url("/api/status"), timeout=10) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer on port {port} within 120 s:\n{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(playwright_api):
    b = playwright_api.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()
