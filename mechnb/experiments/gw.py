"""Experiments of the gw notebook (filled in as they move here from the method packages)."""
