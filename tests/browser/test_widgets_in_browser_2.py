"""The browser test, part 2: the notebooks ``test_widgets_in_browser.py`` does not drive (see its docstring).

A module of its own so that ``make test``'s two pytest-xdist workers (one module each) share the notebooks.
"""

from __future__ import annotations

import pytest

from lab_driver import notebook_test

pytestmark = pytest.mark.browser

test_notebook_runs_and_widgets_respond = notebook_test(2)
