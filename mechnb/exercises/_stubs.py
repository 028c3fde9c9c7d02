"""Learner-notebook stubs that fall back to the reference solution, so a skipped exercise blocks nothing.

``make exercises`` (:mod:`mechnb.exercises.make`) writes every exercise function of a learner
notebook as a stub, decorated with :func:`stub`::

    @exercises.stub("2.3")
    def sample_masks(ci, generator):
        \"\"\"Stochastic masks m = g + (1 - g) r ...\"\"\"
        raise NotImplementedError("Exercise 2.3: write your code here (see the exercise box above)")

    exercises.spd.check_stochastic_masks(sample_masks)

* The check of exercise 2.3 (and any check handed the stub itself) sees the learner's own
  function: while it is the stub, the check prints "not implemented yet" (and never raises, even
  with ``MECHNB_STRICT_CHECKS=1``); once the learner has written it, the check tests the
  learner's code as usual.
* Any other caller (a later cell, a package function the notebook hands the function to, the check
  of another exercise) gets the learner's result, or — while the body still raises the stub's
  ``NotImplementedError`` — the reference solution's, and the first such call prints one line::

      ↪ using the reference solution for Exercise 2.3 (stochastic masks): your `sample_masks` is still the stub

Only the stub's own ``raise NotImplementedError("Exercise ...")`` (raised in the function's own
code, or in a function defined inside it) switches to the reference; any other exception of the
learner's code, a ``NotImplementedError`` from torch included, reaches the learner unchanged.

The reference is ``solution_<name>`` of the topic module that defines ``check_<name>``
(:meth:`Exercise.reference`); ``stub("2.6", "solution_causal_importances")`` names another one, and
``stub("2.6", "solution_Trainer.step")`` a method of a reference class (called with the learner's
``self``). A value the learner is asked to set is written as
``threshold = exercises.stub_value("1.5", "threshold")``: the reference value ``solution_threshold``.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mechnb.exercises import _core
from mechnb.exercises._core import Exercise, StubNotDone, exercise_by_id

__all__ = ["FALLBACK_MARK", "StubInfo", "fallback_note", "is_stub", "stub", "stub_value"]

F = TypeVar("F", bound=Callable[..., Any])

FALLBACK_MARK = "↪"

#: ``(exercise id, learner name)`` of every fallback already announced in this process.
_ANNOUNCED: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class StubInfo:
    """What a stub stands for: its exercise, the learner's name for it and the reference's path."""

    exercise: Exercise
    name: str
    reference: str

    @property
    def reference_name(self) -> str:
        """``mechnb.exercises.spd.solution_stochastic_masks``."""
        return f"{self.exercise.check.__module__}.{self.reference}"


def fallback_note(ex: Exercise, name: str) -> str:
    """The one line printed the first time a stub falls back to the reference solution."""
    return f"{FALLBACK_MARK} using the reference solution for {ex.label}: your `{name}` is still the stub"


def _announce(info: StubInfo) -> None:
    key = (info.exercise.id, info.name)
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        print(fallback_note(info.exercise, info.name), flush=True)


def is_stub(obj: Any) -> bool:
    """True for a function decorated with :func:`stub` (whether or not the learner has filled it in)."""
    return isinstance(getattr(obj, "__mechnb_stub__", None), StubInfo)


def _code_objects(code: types.CodeType) -> set[types.CodeType]:
    """``code`` and every code object defined inside it (nested functions, lambdas, comprehensions)."""
    found = {code}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _code_objects(const)
    return found


def _is_stub_raise(err: NotImplementedError, codes: set[types.CodeType]) -> bool:
    """The stub's own ``raise NotImplementedError("Exercise ...")``: raised in the learner's code
    (``codes``), by a Python ``raise`` with no message or one starting with ``Exercise``."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    message = str(err)
    return tb.tb_frame.f_code in codes and (not message or message.startswith("Exercise "))


def _exercise(exercise_id: Any) -> Exercise:
    try:
        return exercise_by_id(exercise_id)
    except (LookupError, TypeError) as err:
        raise ValueError(f"exercise_id: expected the number of a registered exercise like '2.3', got "
                         f"{exercise_id!r} ({err})") from None


def _reference(ex: Exercise, reference: Any) -> tuple[str, Any]:
    path = ex.solution_name if reference is None else reference
    if not isinstance(path, str) or not path.strip():
        raise TypeError(f"reference: expected a dotted name in {ex.check.__module__} like "
                        f"{ex.solution_name!r}, got {reference!r}")
    try:
        return path, ex.reference(path)
    except LookupError as err:
        raise ValueError(f"reference: {err}") from None


def stub(exercise_id: str, reference: str | None = None) -> Callable[[F], F]:
    """Decorator for a learner notebook's stub of exercise ``exercise_id`` (see the module docstring).

    Args:
        exercise_id: the exercise number, ``"2.3"``; it must be registered (its check exists).
        reference: the reference solution's dotted name in the check's topic module (default
            ``solution_<name>`` for ``check_<name>``).

    Raises:
        ValueError: no exercise ``exercise_id``, or its topic module has no ``reference``.
        TypeError: the decorated object is not a function, or the reference is not callable.
    """
    ex = _exercise(exercise_id)
    path, ref = _reference(ex, reference)
    if not callable(ref):
        raise TypeError(f"reference: {ex.check.__module__}.{path} is a {type(ref).__name__}, not a function "
                        "(a value exercise uses exercises.stub_value)")

    def decorate(fn: F) -> F:
        if not inspect.isfunction(fn):
            raise TypeError(f"exercises.stub({exercise_id!r}) decorates a function (def ...), got "
                            f"{type(fn).__name__} {fn!r}")
        codes = _code_objects(fn.__code__)
        info = StubInfo(ex, fn.__qualname__.rsplit("<locals>.", 1)[-1], path)  # Counter.step, not f.<locals>...

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except NotImplementedError as err:
                if isinstance(err, StubNotDone) or not _is_stub_raise(err, codes):
                    raise
                current = _core._CURRENT.get()
                if (current is not None and current.id == ex.id) or _core._CHECKED.get() is wrapper:
                    # the check of this very exercise, or a check handed this very stub: not done yet
                    raise StubNotDone(str(err), exercise_id=ex.id, function=fn.__name__) from None
            _announce(info)  # outside the except block: the reference's own errors chain to nothing
            return ref(*args, **kwargs)

        wrapper.__mechnb_stub__ = info  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def stub_value(exercise_id: str, name: str, reference: str | None = None) -> Any:
    """The reference value of the learner's ``name`` in exercise ``exercise_id`` (default
    ``solution_<name>`` of the check's topic module); announces the fallback once.

    A learner notebook writes ``name = exercises.stub_value("1.5", "name")`` where the facilitator
    notebook computes ``name``; the learner replaces that line with their own code.
    """
    ex = _exercise(exercise_id)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name: expected the learner's variable name, got {name!r}")
    path, value = _reference(ex, f"solution_{name}" if reference is None else reference)
    _announce(StubInfo(ex, name, path))
    return value
