"""Experiments of the spd notebook (filled in as they move here from the method packages)."""
