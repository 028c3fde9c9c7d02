"""The notebooks' experiments: planted networks, training-strategy variants, sweeps, toy data.

One module per notebook topic. Experiments may use the methods, the zoo and :mod:`mechnb.train`;
the method packages never import this package (see ``ARCHITECTURE.md``).

* :mod:`mechnb.experiments.degeneracy` — planted MLPs / deep linear networks with known
  degeneracies, the toy quartic loss for the LLC exercises (notebook 01).
* :mod:`mechnb.experiments.spd` — sweeps over SPD's importance-minimality coefficient (notebook 02).
* :mod:`mechnb.experiments.gw` — toy point clouds and the training-strategy variants compared
  layer by layer with Gromov-Wasserstein (notebook 03).
* :mod:`mechnb.experiments.circuits` — a transformer with a planted induction circuit among
  distractors, the ground truth for circuit discovery (notebook 04).
* :mod:`mechnb.experiments.llc` — a deep linear network learning a teacher one direction at a
  time, the ground truth for the LLC over training (notebook 06).
"""

from mechnb.experiments import circuits, degeneracy, gw, llc, spd

__all__ = ["circuits", "degeneracy", "gw", "llc", "spd"]
