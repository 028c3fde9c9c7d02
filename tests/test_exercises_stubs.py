"""Learner-notebook stubs (mechnb.exercises._stubs): a skipped exercise falls back to its reference.

On exercises of the test's own (numbered 97.x, registered only for the test, with their reference
solutions ``solution_*`` defined in this module):

* a stub called by its own check is reported "not implemented yet" and never raises, strict or not;
* called by anything else it returns the reference's result and prints the fallback note once;
* a filled-in function is the learner's own, right or wrong; the learner's other errors, and a
  ``NotImplementedError`` that is not the stub's own raise, reach the learner unchanged;
* a stub used inside the learner's code of another exercise falls back there;
* methods of a class fall back to the reference class's method with the learner's ``self``;
  values to the reference value; bad arguments are named.
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch

from mechnb import exercises
from mechnb.exercises import Case, ExerciseFailed, exercise, exercise_by_id, registry, run_cases
from mechnb.exercises import _core, _stubs

STUB_MESSAGE = "Exercise {}: write your code here (see the exercise box above)"


# the reference solutions of the test's exercises, found by name in this module ------------------


def solution_double(x, scale=2):
    """Reference of exercise 97.1: ``scale * x``."""
    return x * scale


class solution_Counter:  # noqa: N801 - named like the learner's class, as make exercises looks it up
    """Reference of exercise 97.2 (a class whose method ``step`` is the exercise)."""

    def __init__(self, start):
        self.start = start

    def step(self, k):
        return self.start + k


solution_threshold = 0.25  # reference value of exercise 97.3


def solution_helper(y):
    """Reference of exercise 97.4: ``y + 100``."""
    return y + 100


@pytest.fixture()
def fake_exercises(monkeypatch: pytest.MonkeyPatch):
    """Exercises 97.1–97.4, registered for the test only; strict mode on (stubs must not raise)."""
    monkeypatch.setenv("MECHNB_STRICT_CHECKS", "1")

    @exercise("97.1", "double")
    def check_double(fn):
        return run_cases(fn, [Case((3.0,), 6.0), Case((torch.tensor([1.0, -2.0]),), torch.tensor([2.0, -4.0]))])

    @exercise("97.2", "counter step")
    def check_counter(cls):
        return run_cases(lambda start, k: cls(start).step(k), [Case((1, 2), 3), Case((10, -1), 9)])

    @exercise("97.3", "a threshold")
    def check_threshold(fn):
        return run_cases(fn, [Case((), 0.25)])

    @exercise("97.4", "helper")
    def check_helper(fn):
        return run_cases(fn, [Case((1,), 101)])

    checks = {f.__name__: f for f in (check_double, check_counter, check_threshold, check_helper)}
    _stubs._ANNOUNCED.clear()
    yield checks
    for name in checks:
        _core._REGISTRY.pop(name, None)
    _stubs._ANNOUNCED.clear()


def _note(ex_id: str, name: str) -> str:
    return _stubs.fallback_note(exercise_by_id(ex_id), name)


# --------------------------------------------------------------------------------------------


def test_stub_reports_not_done_to_its_check_and_falls_back_elsewhere(fake_exercises, capsys) -> None:
    @exercises.stub("97.1")
    def double(x, scale=2):
        """Twice x (the learner's docstring)."""
        raise NotImplementedError(STUB_MESSAGE.format("97.1"))

    assert exercises.is_stub(double) and not exercises.is_stub(solution_double)
    assert double.__name__ == "double" and double.__doc__ == "Twice x (the learner's docstring)."
    assert str(inspect.signature(double)) == "(x, scale=2)"

    result = fake_exercises["check_double"](double)  # strict mode: must not raise
    out = capsys.readouterr().out
    assert result.not_implemented and result.stub and not result.passed and not result
    assert out.startswith("✎ Exercise 97.1 (double): not implemented yet — `double` still raises NotImplementedError")
    assert "the cells below use the reference solution" in out and _stubs.FALLBACK_MARK not in out

    assert double(3) == 6 and double(4, scale=3) == 12
    out = capsys.readouterr().out
    assert out == _note("97.1", "double") + "\n"  # once, however often it is called
    assert out == "↪ using the reference solution for Exercise 97.1 (double): your `double` is still the stub\n"
    assert fake_exercises["check_double"](double).stub  # the check still sees the stub
    assert "not implemented yet" in capsys.readouterr().out


def test_filled_in_function_is_the_learners_own(fake_exercises, capsys) -> None:
    @exercises.stub("97.1")
    def double(x, scale=2):
        return x + x if scale == 2 else x * scale

    assert fake_exercises["check_double"](double).passed
    assert double(5) == 10 and _stubs.FALLBACK_MARK not in capsys.readouterr().out

    @exercises.stub("97.1")
    def wrong(x, scale=2):
        return x * 3

    with pytest.raises(ExerciseFailed, match="2 of 2 cases wrong"):  # strict: a wrong answer still fails
        fake_exercises["check_double"](wrong)
    assert wrong(1) == 3
    assert _stubs.FALLBACK_MARK not in capsys.readouterr().out


def test_other_errors_reach_the_learner(fake_exercises, capsys) -> None:
    def library_call(x):
        raise NotImplementedError("not for this dtype")

    @exercises.stub("97.1")
    def buggy(x, scale=2):
        return x.no_such_method()

    @exercises.stub("97.1")
    def calls_a_library(x, scale=2):
        return library_call(x)  # a NotImplementedError raised below the learner's own code

    @exercises.stub("97.1")
    def own_message(x, scale=2):
        raise NotImplementedError("complex inputs")  # not the stub's message

    @exercises.stub("97.1")
    def from_torch(x, scale=2):
        return torch.ones(2, 2).to_sparse().view(4)  # torch raises NotImplementedError from C++, in this frame

    with pytest.raises(AttributeError):
        buggy(torch.ones(1))
    with pytest.raises(NotImplementedError, match="not for this dtype"):
        calls_a_library(1.0)
    with pytest.raises(NotImplementedError, match="complex inputs"):
        own_message(1.0)
    with pytest.raises(NotImplementedError, match="SparseCPU"):
        from_torch(1.0)
    assert _stubs.FALLBACK_MARK not in capsys.readouterr().out


def test_stub_raise_in_a_nested_function_and_a_bare_raise(fake_exercises, capsys) -> None:
    @exercises.stub("97.1")
    def double(x, scale=2):
        def inner():
            raise NotImplementedError(STUB_MESSAGE.format("97.1"))
        return inner()

    @exercises.stub("97.4")
    def helper(y):
        raise NotImplementedError

    assert double(2) == 4 and helper(1) == 101
    out = capsys.readouterr().out.splitlines()
    assert out == [_note("97.1", "double"), _note("97.4", "helper")]
    assert fake_exercises["check_helper"](helper).stub


def test_stub_inside_another_exercise_falls_back(fake_exercises, capsys) -> None:
    @exercises.stub("97.4")
    def helper(y):
        raise NotImplementedError(STUB_MESSAGE.format("97.4"))

    @exercises.stub("97.1")
    def double(x, scale=2):
        return helper(x) - 100 + x * (scale - 1)  # the learner's 97.1 uses their unfinished 97.4

    res = fake_exercises["check_double"](double)
    out = capsys.readouterr().out
    assert res.passed, out
    assert _note("97.4", "helper") in out.splitlines() and "✔ Exercise 97.1 (double): correct on all 2 cases." in out

    @exercises.stub("97.4")
    def step_one(y):
        raise NotImplementedError(STUB_MESSAGE.format("97.4"))

    @exercises.stub("97.4")
    def helper_pipeline(y):
        return step_one(y)  # a helper of the same exercise, still the stub: that exercise is not done

    res = fake_exercises["check_helper"](helper_pipeline)
    out = capsys.readouterr().out
    assert res.stub and "`step_one` still raises NotImplementedError" in out


def test_a_stub_handed_to_a_check_is_never_replaced(fake_exercises, capsys) -> None:
    @exercises.stub("97.4")
    def helper(y):
        raise NotImplementedError(STUB_MESSAGE.format("97.4"))

    res = fake_exercises["check_double"](helper)  # a stub numbered differently from the check it is handed to
    out = capsys.readouterr().out
    assert res.stub and not res.passed and out.startswith("✎ Exercise 97.1 (double): not implemented yet — `helper`")
    assert _stubs.FALLBACK_MARK not in out


def test_method_stub_uses_the_reference_class_with_the_learners_self(fake_exercises, capsys) -> None:
    class Counter:
        def __init__(self, start):
            self.start = start

        @exercises.stub("97.2", "solution_Counter.step")
        def step(self, k):
            raise NotImplementedError(STUB_MESSAGE.format("97.2"))

    assert fake_exercises["check_counter"](Counter).stub
    assert "not implemented yet — `step`" in capsys.readouterr().out
    c = Counter(5)
    assert c.step(2) == 7 and Counter(1).step(1) == 2
    assert capsys.readouterr().out == _note("97.2", "Counter.step") + "\n"


def test_stub_value(fake_exercises, capsys) -> None:
    threshold = exercises.stub_value("97.3", "threshold")
    assert threshold == 0.25
    assert exercises.stub_value("97.3", "threshold") == 0.25
    assert capsys.readouterr().out == _note("97.3", "threshold") + "\n"
    assert exercises.stub_value("97.1", "x", "solution_threshold") == 0.25


def test_bad_arguments(fake_exercises) -> None:
    with pytest.raises(ValueError, match=r"exercise_id: .*registered exercise.*'99\.99'"):
        exercises.stub("99.99")
    with pytest.raises(ValueError, match=r"exercise_id: .*got 2\.3"):
        exercises.stub(2.3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"reference: .*has no 'solution_missing'.*exercise 97\.1"):
        exercises.stub("97.1", "solution_missing")
    with pytest.raises(TypeError, match=r"reference: expected a dotted name .* got 5"):
        exercises.stub("97.1", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"reference: .*solution_threshold is a float, not a function"):
        exercises.stub("97.3")
    with pytest.raises(TypeError, match=r"decorates a function .* got int"):
        exercises.stub("97.1")(42)
    with pytest.raises(ValueError, match="name: expected the learner's variable name"):
        exercises.stub_value("97.3", "not a name")
    with pytest.raises(ValueError, match=r"reference: .*has no 'solution_nothing'"):
        exercises.stub_value("97.3", "nothing")
    with pytest.raises(LookupError, match=r"no exercise '99\.99' is registered \(known: .*97\.1"):
        exercise_by_id("99.99")
    with pytest.raises(TypeError, match="ex_id: expected a string"):
        exercise_by_id(2.3)  # type: ignore[arg-type]
    ex = exercise_by_id("97.2")
    assert ex.solution_name == "solution_counter" and ex.reference("solution_Counter.step") is solution_Counter.step
    with pytest.raises(LookupError, match=re.escape(f"{__name__} has no 'solution_counter'")):
        ex.reference()
    with pytest.raises(ValueError, match="path: expected a dotted attribute name"):
        ex.reference("")


def test_plain_not_implemented_still_fails_strict_checks(fake_exercises, capsys) -> None:
    def not_a_stub(x, scale=2):
        raise NotImplementedError(STUB_MESSAGE.format("97.1"))

    with pytest.raises(ExerciseFailed, match="Exercise 97.1"):  # a facilitator notebook's forgotten stub
        fake_exercises["check_double"](not_a_stub)
    capsys.readouterr()
    assert all(not exercises.is_stub(ex.check) for ex in registry().values())
