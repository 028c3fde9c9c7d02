"""Exercises for the reading group: check functions for the code learners write.

Every notebook 01–04 has exercises in which the learner writes one real piece of a method. Each
exercise has a check function here, e.g. ``check_lower_leaky_hard_sigmoid(my_function)``: it runs
the learner's function on cases with known answers and prints either a success line, or which
input went wrong with the expected and the returned value, or — while the function is still the
stub of the learner notebook — a short note on what to do instead of a traceback.

* :mod:`mechnb.exercises._core` — the framework (:class:`Case`, :func:`run_cases`,
  :func:`exercise`, :func:`compare`, :class:`CheckResult`).
* ``mechnb/exercises/<topic>.py`` — the check functions of one notebook's topic. A topic module is
  found automatically (every module here whose name does not start with ``_``, except ``make``);
  its ``__all__`` names are available as ``mechnb.exercises.<name>``.
* :mod:`mechnb.exercises.make` — ``python -m mechnb.exercises.make`` (``make exercises``) writes
  the learner versions of the notebooks to ``exercises/``.

Topic modules are imported lazily (on first access of a check function, or by :func:`registry`),
so ``import mechnb.exercises`` stays cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any

from mechnb.exercises import _core
from mechnb.exercises._core import (
    Case,
    CheckResult,
    Exercise,
    ExerciseFailed,
    compare,
    exercise,
    registry,
    run_cases,
    strict_mode,
)

__all__ = [*_core.__all__, "topic_modules"]

_NOT_TOPICS = {"make"}


def topic_modules() -> list[str]:
    """Names of the topic modules (``degeneracy``, ``spd``, ...) present in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if not m.name.startswith("_") and m.name not in _NOT_TOPICS)


def _import_topics() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{name}") for name in topic_modules()]


def __getattr__(name: str) -> Any:
    """``mechnb.exercises.check_x``: look ``check_x`` up in the topic modules' ``__all__``."""
    if name.startswith("__"):
        raise AttributeError(name)
    for module in _import_topics():
        if name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r} "
                         f"(topic modules: {', '.join(topic_modules()) or 'none yet'})")


def __dir__() -> list[str]:
    names = set(globals()) | set(__all__)
    for module in _import_topics():
        names |= set(getattr(module, "__all__", ()))
    return sorted(names)
