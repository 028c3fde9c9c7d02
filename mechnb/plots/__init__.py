"""Matplotlib figures, one submodule per topic. Pure functions: arrays in, ``Figure`` out.

``from mechnb import plots`` imports every topic module, so ``plots.gw.layer_matrix(...)`` works:
:mod:`.zoo` (00), :mod:`.degeneracy` (01), :mod:`.spd` (02), :mod:`.gw` (03), :mod:`.circuits` (04), :mod:`.llc` (06);
:mod:`.schematics` (block diagrams of a method's pipeline: 02, 04).
A new topic module is added to the import below.
"""

from mechnb.plots import circuits, degeneracy, gw, llc, schematics, spd, zoo

__all__ = ["circuits", "degeneracy", "gw", "llc", "schematics", "spd", "zoo"]
