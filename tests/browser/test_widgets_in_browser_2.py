"""The notebooks' widgets, proven in a real browser: JupyterLab + headless chromium (Playwright), part 2.

For every numbered notebook ``notebooks/NN_*.ipynb`` the browser test opens it in JupyterLab
(served from a temporary copy of ``notebooks/``, so nothing the browser does touches the committed
files), runs all cells with ``MECHNB_FAST=1`` and asserts what ``lab_driver.py``'s docstring lists:
every cell ran without an error, every ``# NBVAL_CHECK_OUTPUT`` cell printed its reference output
(``tests/notebook_outputs.json``, within the cell's tolerance), the widgets rendered, and changing
a control redraws the figure. The notebooks are split over this module and ``test_widgets_in_browser.py`` (see
``lab_driver.PART_1``), so that two pytest-xdist workers share them.
"""

from __future__ import annotations

import pytest

from lab_driver import NotebookSpec, drive, notebooks_of_part, shutdown_kernels

pytestmark = pytest.mark.browser

SPECS = notebooks_of_part(2)


@pytest.mark.parametrize("spec", SPECS, ids=[s.name.split("_")[0] for s in SPECS])
def test_notebook_runs_and_widgets_respond(spec: NotebookSpec, lab, browser) -> None:
    try:
        drive(spec, lab, browser)
    finally:
        shutdown_kernels(lab)
