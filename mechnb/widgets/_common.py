"""Pieces every widget panel shares."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["show_figure"]


def show_figure(output: widgets.Output, fig: Figure) -> None:
    """Replace what ``output`` shows by ``fig``.

    The outputs are set directly (this works with or without a running kernel, so tests can
    inspect them), and the figure is closed in pyplot: otherwise ``%matplotlib inline`` would
    draw a second, static copy under the widget at the end of the cell. The ``Figure`` object
    stays usable (e.g. ``fig.savefig``).
    """
    output.outputs = ()
    output.append_display_data(fig)
    plt.close(fig)
