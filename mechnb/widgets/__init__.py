"""ipywidgets panels, one submodule per topic: build controls, call a method, redraw a figure.

Each panel is a small class whose callback is a plain method, so tests can set ``.value``
on a control and check that the output changed.
"""
