"""Shared test set-up: headless matplotlib, a fixed seed before every test, tiny fixtures.

Every test starts from the same global RNG state (``torch``, ``numpy``, ``random`` seeded
with 0) whatever ran before it and whatever ``OMP_NUM_THREADS`` is, so a test's random
draws do not depend on test order or selection (``-k``, ``-x``, xdist).
"""

from __future__ import annotations

import os
import random

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mechnb.tasks import SyntheticLanguage  # noqa: E402

SEED = 0


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml; repeated here so the suite works if run with -c /dev/null.
    config.addinivalue_line("markers", "slow: long-running quality checks (still run by make test)")
    config.addinivalue_line("markers", "browser: drives JupyterLab in headless chromium")


@pytest.fixture(autouse=True)
def _seed_and_close_figures():
    """Seed every RNG before each test; close any figure a test left open after it."""
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    random.seed(SEED)
    yield
    plt.close("all")


@pytest.fixture(scope="session")
def lang() -> SyntheticLanguage:
    """The default synthetic language (the one ``tiny-lm`` is trained on)."""
    return SyntheticLanguage()
