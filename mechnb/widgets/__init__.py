"""ipywidgets panels, one submodule per topic: build controls, call a method, redraw a figure.

Each panel is a small class whose callback is a plain method, so tests can set ``.value``
on a control and check that the output changed.

``from mechnb import widgets`` imports every topic module, so ``widgets.gw.GWExplorer(...)`` works:
:mod:`.zoo` (00), :mod:`.degeneracy` (01), :mod:`.spd` (02), :mod:`.gw` (03), :mod:`.circuits` (04), :mod:`.llc` (06).
A new topic module is added to the import below.
"""

from mechnb.widgets import circuits, degeneracy, gw, llc, spd, zoo

__all__ = ["circuits", "degeneracy", "gw", "llc", "spd", "zoo"]
