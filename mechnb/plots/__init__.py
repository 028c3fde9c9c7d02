"""Matplotlib figures, one submodule per topic. Pure functions: arrays in, ``Figure`` out."""
