"""Experiments of the degeneracy notebook (filled in as they move here from the method packages)."""
