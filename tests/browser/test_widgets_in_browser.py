"""The notebooks' widgets, proven in a real browser: JupyterLab + headless chromium (Playwright), part 1.

For every numbered notebook ``notebooks/NN_*.ipynb`` the browser test opens it in JupyterLab
(served from a temporary copy of ``notebooks/``, so nothing the browser does touches the committed
files), runs all cells with ``MECHNB_FAST=1`` and asserts what ``lab_driver.py``'s docstring lists:
every cell ran without an error, every ``# NBVAL_CHECK_OUTPUT`` cell printed its reference output
(``tests/notebook_outputs.json``, within the cell's tolerance), the widgets rendered, and changing
a control redraws the figure. The notebooks are split over this module and ``test_widgets_in_browser_2.py`` (see
``lab_driver.PART_1``), so that two pytest-xdist workers share them.
"""

from __future__ import annotations

import pytest

from lab_driver import CONTROLS, NOTEBOOKS, notebook_test, notebooks_of_part

pytestmark = pytest.mark.browser

test_notebook_runs_and_widgets_respond = notebook_test(1)


def test_every_numbered_notebook_is_driven() -> None:
    import os

    if os.environ.get("MECHNB_BROWSER_NOTEBOOKS"):
        pytest.skip("MECHNB_BROWSER_NOTEBOOKS narrows the notebooks")
    numbers = [s.name[:2] for s in NOTEBOOKS]
    assert numbers[:7] == ["00", "01", "02", "03", "04", "05", "06"], numbers
    assert all(spec.control == "auto" for spec in NOTEBOOKS if spec.name[:2] not in CONTROLS)
    # the two parts together drive every notebook, once
    both = sorted(s.name for part in (1, 2) for s in notebooks_of_part(part))
    assert both == sorted(s.name for s in NOTEBOOKS)
    assert notebooks_of_part(1) and notebooks_of_part(2)
