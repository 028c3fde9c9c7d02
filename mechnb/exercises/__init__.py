"""Exercises for the reading group: check functions for the code learners write.

Every notebook 01–04 has exercises in which the learner writes one real piece of a method. Each
exercise has a check function in the topic module of its notebook, e.g.
``exercises.spd.check_lower_leaky_hard_sigmoid(my_function)``: it runs the learner's function on
cases with known answers and prints either a success line, or which input went wrong with the
expected and the returned value, or — while the function is still the stub of the learner
notebook — a short note on what to do instead of a traceback.

* :mod:`mechnb.exercises._core` — the framework (:class:`Case`, :func:`run_cases`,
  :func:`exercise`, :func:`compare`, :class:`CheckResult`, :func:`registry`).
* the topic modules, one per notebook: :mod:`.degeneracy` (01), :mod:`.spd` (02), :mod:`.gw` (03),
  :mod:`.circuits` (04). Each is imported here, so ``from mechnb import exercises`` makes
  ``exercises.gw.check_gw_loss`` available and :func:`registry` complete. A new topic module is
  added to the import below. The topic modules import the methods they check inside the check
  functions, so importing this package stays cheap.
* :mod:`mechnb.exercises.make` — ``python -m mechnb.exercises.make`` (``make exercises``) writes
  the learner versions of the notebooks to ``exercises/``, where every solution is a stub
  decorated with :func:`stub` (:mod:`mechnb.exercises._stubs`): while it is still the stub, its
  check says "not implemented yet" and every later caller gets the reference solution
  ``solution_<name>`` of the topic module, with a one-line note, so a skipped exercise blocks
  nothing after it.
"""

from __future__ import annotations

from mechnb.exercises import _core, circuits, degeneracy, gw, interop, llc, spd  # the topic modules register their checks
from mechnb.exercises._core import (
    Case,
    CheckResult,
    Exercise,
    ExerciseFailed,
    StubNotDone,
    compare,
    exercise,
    exercise_by_id,
    registry,
    run_cases,
    strict_mode,
)
from mechnb.exercises._stubs import is_stub, stub, stub_value

__all__ = [*_core.__all__, "is_stub", "stub", "stub_value", "circuits", "degeneracy", "gw", "interop", "llc", "spd"]
