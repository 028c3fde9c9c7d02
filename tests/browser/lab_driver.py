"""Driving the notebooks in a real browser: JupyterLab + headless chromium (Playwright).

The machinery of the browser test (``test_widgets_in_browser*.py``; fixtures in ``conftest.py``).

For every numbered notebook ``notebooks/NN_*.ipynb`` (:data:`NOTEBOOKS`: 00–06 today, and any
``07_*`` … as they appear) the test opens it in JupyterLab (served from a temporary
copy of ``notebooks/``, so nothing the browser does touches the committed files), runs all cells
with ``MECHNB_FAST=1`` and ``MECHNB_STRICT_CHECKS=1`` and asserts (:func:`drive`) that

* every code cell ran and none has an error output (a stderr output with a traceback, or an
  error);
* every ``# NBVAL_CHECK_OUTPUT`` cell printed what ``tests/notebook_outputs.json`` holds for it,
  within the tolerance its marker declares (:func:`notebook_reference.compare_cell_outputs`, the
  comparison ``conftest.py`` gives nbval). This is the notebooks' check under the machine's best
  kernels in ``make test`` (its nbval pass of ``notebooks/`` then runs under the portable kernels
  only); a checked cell without a current reference is reported by ``tests/test_project.py``;
* the widgets rendered: ``.widget-dropdown`` / ``.widget-slider`` present, no "Error displaying
  widget" (a notebook of :data:`CONTROLS` must have widgets; another one may have none);
* changing a control (another option in the first dropdown, or a slider moved one step with the
  keyboard) changes the figure the widget shows: the ``src`` (PNG bytes) of the widget output's
  ``<img>`` differs before and after. A predict-first widget (a ``reveal`` toggle that hides its
  figure until pressed, and again after each new question) is revealed before and after. The
  control is the one :data:`CONTROLS` names for the notebook; for a notebook it does not list,
  the first dropdown (else slider) of the first widget that shows a figure.

Each notebook's kernel is shut down once its test is done. ``MECHNB_BROWSER_NOTEBOOKS=00,03``
drives only those notebooks (by number).

Screenshots go to the git-ignored ``tests/artifacts/``: per notebook ``*_after_run.png`` (the
window after "run all"), ``*_widget_page.png`` (the window scrolled to the widget),
``*_widget.png`` (the widget alone), ``*_widget_before.png`` / ``*_widget_after.png`` (its cell
before and after the control changed). ``docs/screenshot_zoo_browser.png`` is a copy of
notebook 00's ``*_widget.png``.

Requirements: PyPI ``playwright`` (test extra; it drives the browser through its own bundled
driver, nothing is downloaded) and Debian's ``chromium`` at ``/usr/bin/chromium`` (or
``$MECHNB_CHROMIUM``). ``make test`` installs chromium with apt when it is missing and it runs as
root (``make browser-deps``); otherwise this test is skipped with a message saying how to enable it.
JupyterLab's notebook windowing (which renders only the visible cells) is switched off through a
temporary ``JUPYTERLAB_SETTINGS_DIR``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

import notebook_reference as reference  # tests/notebook_reference.py (tests/ is on sys.path)
from mechnb.lab import HOST

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path(os.environ.get("MECHNB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
#: Seconds allowed for one notebook to run all its cells in fast mode (generous: loaded CI machines).
RUN_TIMEOUT_S = float(os.environ.get("MECHNB_BROWSER_RUN_TIMEOUT", "900"))
#: Seconds allowed for a widget to redraw after a control changed.
REDRAW_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class NotebookSpec:
    """A notebook to drive and the control to change: ``"dropdown"`` (first dropdown, next option),
    ``"slider"`` (first enabled slider, one step to the right) or ``"auto"`` (see the module docstring)."""

    name: str
    control: str


#: The control to change in each notebook known to have widgets (by notebook number).
CONTROLS = {"00": "dropdown", "01": "slider", "02": "dropdown", "03": "slider", "04": "slider"}


def _notebooks() -> list[NotebookSpec]:
    names = sorted(p.name for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    only = [n.strip() for n in os.environ.get("MECHNB_BROWSER_NOTEBOOKS", "").split(",") if n.strip()]
    if only:
        names = [n for n in names if n[:2] in only]
    return [NotebookSpec(n, CONTROLS.get(n[:2], "auto")) for n in names]


NOTEBOOKS = _notebooks()


#: The browser test is split over two modules (``test_widgets_in_browser.py``: these notebooks;
#: ``test_widgets_in_browser_2.py``: every other one, new notebooks included), so that
#: ``make test``'s two pytest-xdist workers (``--dist loadscope``: one module per worker) share it.
#: Fast-mode seconds in the browser on this 2-core machine (Dec 2026): 00 17, 01 76, 02 101, 03 44,
#: 04 84, 05 40, 06 66, so part 1 (00, 02, 03, 05) ~ 200 s and part 2 (01, 04, 06) ~ 226 s.
PART_1 = frozenset({"00", "02", "03", "05"})


def notebooks_of_part(part: int) -> list[NotebookSpec]:
    """The notebooks module ``part`` (1 or 2) drives."""
    if part not in (1, 2):
        raise ValueError(f"part: expected 1 or 2, got {part!r}")
    return [s for s in NOTEBOOKS if (s.name[:2] in PART_1) == (part == 1)]

_HOW_TO_ENABLE = (
    "as root: `apt-get update && apt-get install -y chromium` (or `make browser-deps`), "
    "and `.venv/bin/pip install playwright` (no browser download needed); "
    "or point MECHNB_CHROMIUM at another chromium binary"
)

# JupyterLab user settings: render every cell (no windowing), no autosave, no news/update checks.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
}


def _skip_loudly(reason: str) -> None:
    msg = f"BROWSER TEST SKIPPED: {reason}. To enable it: {_HOW_TO_ENABLE}."
    print("\n" + "!" * 100 + "\n" + msg + "\n" + "!" * 100, file=sys.stderr)
    pytest.skip(msg)


# --------------------------------------------------------------------------------------------
# fixtures: a JupyterLab server and a browser
# --------------------------------------------------------------------------------------------


@dataclass
class Lab:
    port: int
    token: str
    root: Path
    log: Path

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}/{path.lstrip('/')}?token={self.token}"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no server log)"


def _not_plain_files(folder: str, names: list[str]) -> set[str]:
    """What the copy of ``notebooks/`` leaves out: checkpoints, and anything that is not a plain file
    or folder (e.g. the IPC sockets a kernel started there with ``transport="ipc"`` leaves behind)."""
    base = Path(folder)
    return {n for n in names if n == ".ipynb_checkpoints" or not ((base / n).is_file() or (base / n).is_dir())}


# --------------------------------------------------------------------------------------------
# page helpers (JavaScript evaluated in JupyterLab; `window.jupyterapp` is exposed by the server)
# --------------------------------------------------------------------------------------------

_JS_NOTEBOOK_READY = """(name) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return false;
  const w = app.shell.currentWidget;
  if (!w || !w.context || w.context.path !== name || !w.content) return false;
  const kernel = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""

_JS_RUN_STATE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  const code = w.content.widgets.filter(c => c.model.type === 'code');
  const done = code.filter(c => c.model.executionCount !== null).length;
  const errors = code.filter(c => c.model.outputs.toJSON().some(o => o.output_type === 'error')).length;
  return {status: kernel ? kernel.status : 'none', done: done, total: code.length, errors: errors};
}"""

_JS_CELL_OUTPUTS = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  return w.content.widgets.filter(c => c.model.type === 'code').map(c => ({
    id: c.model.id, source: c.model.sharedModel.getSource(), outputs: c.model.outputs.toJSON()}));
}"""


_JS_CELL_REPORT = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  return w.content.widgets.map((c, i) => {
    const outs = (c.model.type === 'code') ? c.model.outputs.toJSON() : [];
    return {index: i, type: c.model.type, count: c.model.type === 'code' ? c.model.executionCount : null,
            errors: outs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
            stderr: outs.filter(o => o.output_type === 'stream' && o.name === 'stderr')
                        .map(o => Array.isArray(o.text) ? o.text.join('') : o.text),
            source: c.model.sharedModel.getSource().slice(0, 80)};
  });
}"""


def _widget_image(cell) -> str:
    """The ``src`` of the image in the widget output of ``cell`` ('' if none yet)."""
    imgs = cell.locator(".widget-output img")
    if imgs.count() == 0:
        return ""
    return imgs.first.get_attribute("src") or ""


def _auto_control(page) -> str | None:
    """For a notebook :data:`CONTROLS` does not list: ``"dropdown"`` or ``"slider"``, from the first cell
    whose widget shows a figure (a dropdown if it has one); ``None`` when no widget shows one."""
    return page.evaluate("""() => {
      for (const cell of document.querySelectorAll('.jp-CodeCell')) {
        if (!cell.querySelector('.widget-output img')) continue;
        if (cell.querySelector('.widget-dropdown select')) return 'dropdown';
        if (cell.querySelector('.widget-slider:not(.mod-disabled) .noUi-handle')) return 'slider';
      }
      return null;
    }""")


_JS_NEW_IMAGE = """((el, old) => { const img = el.querySelector('.widget-output img');
  return !!img && !!img.getAttribute('src') && img.getAttribute('src') !== old; })"""
_JS_REVEAL_OFF = """((el) => [...el.querySelectorAll('.widget-toggle-button')]
  .some(b => b.textContent.trim() === 'reveal' && !b.classList.contains('mod-active')))"""


def _press_reveal(cell) -> bool:
    """Press the ``reveal`` toggle of a predict-first widget (which shows its figure only once the
    learner has predicted) if it is not pressed; True when the cell has such a toggle."""
    toggles = cell.locator(".widget-toggle-button", has_text="reveal")
    if toggles.count() == 0:
        return False
    toggle = toggles.first
    if "mod-active" not in (toggle.get_attribute("class") or ""):
        toggle.click()
    return True


def shutdown_kernels(lab: Lab) -> None:
    """Shut down every kernel of the server (one notebook's kernel must not idle through the next)."""
    try:
        with urllib.request.urlopen(lab.url("/api/kernels"), timeout=10) as r:
            kernels = json.loads(r.read())
        for k in kernels:
            req = urllib.request.Request(lab.url(f"/api/kernels/{k['id']}"), method="DELETE")
            urllib.request.urlopen(req, timeout=30).close()
    except OSError as err:  # the next notebook still gets its own kernel
        print(f"(could not shut the kernels down: {err})")


def _change_control(page, spec: NotebookSpec):
    """Change the first control of kind ``spec.control``; return the cell holding it."""
    if spec.control == "dropdown":
        cell = page.locator(".jp-CodeCell:has(.widget-dropdown)").first
        select = cell.locator(".widget-dropdown select").first
        labels = select.locator("option").all_inner_texts()
        assert len(labels) >= 2, f"{spec.name}: the first dropdown has only {labels}"
        current = int(select.evaluate("s => s.selectedIndex"))
        new = (current + 1) % len(labels)  # by index: ipywidgets shows labels with non-breaking spaces
        select.select_option(index=new)
        return cell, f"dropdown {labels[current]!r} -> {labels[new]!r}"
    if spec.control == "slider":
        cell = page.locator(".jp-CodeCell:has(.widget-slider)").first
        slider = cell.locator(".widget-slider:not(.mod-disabled)").first
        label = slider.locator(".widget-label").first.inner_text()
        readout = slider.locator(".widget-readout").first
        before = readout.inner_text()
        handle = slider.locator(".noUi-handle").first
        handle.focus()
        handle.press("ArrowRight")
        page.wait_for_function("([el, old]) => el.textContent.trim() !== old",
                               arg=[readout.element_handle(), before.strip()], timeout=10_000)
        return cell, f"slider {label!r} {before!r} -> {readout.inner_text()!r}"
    raise ValueError(f"control: expected 'dropdown' or 'slider', got {spec.control!r}")


def notebook_test(part: int):
    """The parametrised browser test of the notebooks of ``part`` (bound to a ``test_*`` name by each test module)."""
    specs = notebooks_of_part(part)

    @pytest.mark.parametrize("spec", specs, ids=[s.name.split("_")[0] for s in specs])
    def test_notebook_runs_and_widgets_respond(spec: NotebookSpec, lab: Lab, browser) -> None:
        try:
            drive(spec, lab, browser)
        finally:
            shutdown_kernels(lab)

    return test_notebook_runs_and_widgets_respond


def drive(spec: NotebookSpec, lab: Lab, browser) -> None:
    """Open ``spec``'s notebook in JupyterLab, run all, check its cells, checked outputs and widgets."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = spec.name.removesuffix(".ipynb")
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    t0 = time.monotonic()
    try:
        page.goto(lab.url(f"/lab/tree/{spec.name}"), wait_until="domcontentloaded", timeout=120_000)
        try:
            page.wait_for_function(_JS_NOTEBOOK_READY, arg=spec.name, timeout=120_000, polling=500)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"{stem}_not_ready.png"))
            raise AssertionError(f"{spec.name}: notebook/kernel not ready in 120 s\n{lab.log_tail()}") from None
        t_open = time.monotonic() - t0

        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        # finished: every code cell has an execution count and the kernel is idle (or an error stopped the run)
        try:
            page.wait_for_function(
                f"() => {{ const s = ({_JS_RUN_STATE})();"
                " return s.status === 'idle' && (s.done === s.total || s.errors > 0); }",
                timeout=RUN_TIMEOUT_S * 1000, polling=1000)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"{stem}_timeout.png"))
            state = page.evaluate(_JS_RUN_STATE)
            raise AssertionError(f"{spec.name}: did not finish within {RUN_TIMEOUT_S:.0f} s: {state}") from None
        t_run = time.monotonic() - t0 - t_open

        cells = page.evaluate(_JS_CELL_REPORT)
        errors = [c for c in cells if c["errors"] or any("Traceback" in s for s in c["stderr"])]
        # the rendered DOM too: an error output is rendered as a stderr output holding the traceback
        dom_tracebacks = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]',
                                      has_text="Traceback").count()
        page.screenshot(path=str(ARTIFACTS / f"{stem}_after_run.png"))
        assert not errors and dom_tracebacks == 0, (
            f"{spec.name}: cells with errors:\n" + "\n".join(
                f"  cell {c['index']} [{c['count']}] {c['source']!r}: {c['errors'] or c['stderr']}" for c in errors))
        not_run = [c for c in cells if c["type"] == "code" and c["count"] is None]
        assert not not_run, f"{spec.name}: cells not executed: {[c['index'] for c in not_run]}"

        # the checked cells' outputs, against tests/notebook_outputs.json
        n_checked, problems = reference.check_executed_cells(spec.name, page.evaluate(_JS_CELL_OUTPUTS))
        assert not problems, (f"{spec.name}: {len(problems)} of {n_checked} checked cells differ from their "
                              "reference beyond the tolerance:\n" + "\n".join(problems))
        expected = reference.n_current_references(NOTEBOOK_DIR / spec.name)
        assert n_checked == expected, (f"{spec.name}: {n_checked} checked cells compared, but {expected} have a "
                                       "current reference (cell ids not read back from JupyterLab?)")

        # widgets rendered
        assert page.get_by_text("Error displaying widget").count() == 0, f"{spec.name}: 'Error displaying widget'"
        if spec.control == "auto":
            control = _auto_control(page)
            if control is None:
                print(f"\n{spec.name}: open {t_open:.1f}s, run all {t_run:.1f}s, {n_checked} checked cells "
                      "as recorded; no widget with a figure to drive")
                return
            spec = NotebookSpec(spec.name, control)
        page.wait_for_selector(".widget-dropdown, .widget-slider", timeout=60_000)
        n_dropdowns = page.locator(".widget-dropdown").count()
        n_sliders = page.locator(".widget-slider").count()
        assert n_dropdowns + n_sliders > 0, f"{spec.name}: no widget controls rendered"

        # changing a control changes the figure
        cell = page.locator(f".jp-CodeCell:has(.widget-{spec.control})").first
        cell.scroll_into_view_if_needed()
        revealed = _press_reveal(cell)  # a predict-first widget shows its figure once revealed
        page.wait_for_function("(el) => !!el.querySelector('.widget-output img')",
                               arg=cell.element_handle(), timeout=60_000)
        before = _widget_image(cell)
        cell.screenshot(path=str(ARTIFACTS / f"{stem}_widget_before.png"))
        # the widget alone (its outermost box), e.g. for docs/screenshot_zoo_browser.png
        cell.locator(".jp-OutputArea-output .widget-vbox").first.screenshot(path=str(ARTIFACTS / f"{stem}_widget.png"))
        page.screenshot(path=str(ARTIFACTS / f"{stem}_widget_page.png"))
        # the figure is shown once, inside the widget: a figure left open in pyplot would also be
        # flushed into the cell's output by the inline backend, a second static copy under the widget
        stray = page.evaluate(
            "(el) => [...el.querySelectorAll('.jp-OutputArea-output img')]"
            ".filter(i => !i.closest('.widget-output')).length",
            cell.element_handle())
        t_change = time.monotonic()
        cell, what = _change_control(page, spec)
        try:
            if revealed:  # a new question hides the answer again: wait for that (or a new figure), reveal
                page.wait_for_function(f"([el, old]) => {_JS_NEW_IMAGE}(el, old) || {_JS_REVEAL_OFF}(el)",
                                       arg=[cell.element_handle(), before], timeout=REDRAW_TIMEOUT_S * 1000,
                                       polling=250)
                if _press_reveal(cell):
                    what += ", reveal pressed again"
            page.wait_for_function(f"([el, old]) => {_JS_NEW_IMAGE}(el, old)",
                                   arg=[cell.element_handle(), before], timeout=REDRAW_TIMEOUT_S * 1000, polling=250)
        except Exception:
            cell.screenshot(path=str(ARTIFACTS / f"{stem}_widget_not_redrawn.png"))
            raise AssertionError(f"{spec.name}: the figure did not change within {REDRAW_TIMEOUT_S:.0f} s "
                                 f"after {what}") from None
        t_redraw = time.monotonic() - t_change
        after = _widget_image(cell)
        cell.screenshot(path=str(ARTIFACTS / f"{stem}_widget_after.png"))
        assert after.startswith("data:image/") and after != before
        assert page.get_by_text("Error displaying widget").count() == 0
        print(f"\n{spec.name}: open {t_open:.1f}s, run all {t_run:.1f}s, {n_checked} checked cells as recorded, "
              f"{n_dropdowns} dropdowns, "
              f"{n_sliders} sliders; {what}: figure redrawn in {t_redraw:.1f}s "
              f"({len(before)} -> {len(after)} chars of PNG data)")
        assert stray == 0, (f"{spec.name}: the widget cell shows {stray} static figure(s) besides the widget's own: "
                            "the widget leaves its figure open in pyplot, so %matplotlib inline displays it again at "
                            "the end of the cell (close it with plt.close(fig) after displaying it in the Output)")
    finally:
        if console_errors:
            (ARTIFACTS / f"{stem}_console_errors.txt").write_text("\n".join(console_errors))
        context.close()
