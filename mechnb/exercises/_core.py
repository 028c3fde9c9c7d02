"""The check-function framework behind :mod:`mechnb.exercises`.

A reading-group exercise asks the learner to write one real piece of a method (a function). Its
*check function* runs the learner's function on cases whose answers are known (closed forms, or
mechnb's own implementation) and prints one of

* a success line: ``✔ Exercise 2.1 (lower-leaky hard sigmoid): correct on all 6 cases.``
* for every wrong case: which input, what was expected, what came back (and where an array
  differs most);
* for a stub that still raises ``NotImplementedError``: a short note saying what to do, instead of
  a traceback;
* for an exception raised by the learner's code: its type, message and the learner's own frames.

Writing a check function::

    from mechnb.exercises._core import Case, exercise, run_cases

    @exercise("2.1", "lower-leaky hard sigmoid", notebook="02_stochastic_parameter_decomposition")
    def check_lower_leaky_hard_sigmoid(fn):
        "Check ``fn(x: Tensor) -> Tensor``."
        x = torch.linspace(-2, 2, 9)
        return run_cases(fn, [Case((x,), expected=reference(x), label="x = linspace(-2, 2, 9)")])

:func:`exercise` registers the function (so tests can run every check against a stub) and gives
:func:`run_cases` the exercise number and title. Every registered check takes the learner's
callable as its only required argument and returns a :class:`CheckResult`.

Facilitator notebooks are executed by nbval with complete solutions; set ``MECHNB_STRICT_CHECKS=1``
there so that a check that does not pass raises :class:`ExerciseFailed` (failing the cell) instead
of only printing. A learner notebook's stub (see :mod:`mechnb.exercises._stubs`) is reported as
"not implemented yet" and never raises, strict or not.

Every exercise has a *reference solution* in its topic module, named after the check:
``solution_<name>`` for ``check_<name>`` (:attr:`Exercise.solution_name`). The learner notebooks
fall back to it while the learner's function is still the stub.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

import numpy as np

from mechnb._torch import env_flag

__all__ = [
    "Case",
    "CheckResult",
    "Exercise",
    "ExerciseFailed",
    "StubNotDone",
    "WriteItYourself",
    "compare",
    "exercise",
    "exercise_by_id",
    "registry",
    "run_cases",
    "strict_mode",
]

PASS_MARK = "✔"
FAIL_MARK = "✘"
TODO_MARK = "✎"

#: Failing cases printed in full; the rest are only counted.
MAX_REPORTED_FAILURES = 3


class ExerciseFailed(AssertionError):
    """Raised by a check in strict mode (``MECHNB_STRICT_CHECKS=1``) when it does not pass."""


class StubNotDone(NotImplementedError):
    """A learner notebook's stub, called by the check of its own exercise, is still the stub.

    Raised by the wrapper of :func:`mechnb.exercises.stub` (never by learner code); the check
    reports "not implemented yet" and, unlike for any other failure, never raises in strict mode.
    """

    def __init__(self, message: str, *, exercise_id: str, function: str) -> None:
        super().__init__(message)
        self.exercise_id = exercise_id
        self.function = function


def strict_mode() -> bool:
    """True when ``MECHNB_STRICT_CHECKS`` is set to a true value (facilitator notebooks under nbval)."""
    return env_flag("MECHNB_STRICT_CHECKS")


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exercise:
    """One registered exercise: its number (``"2.1"``), title, notebook and check function."""

    id: str
    title: str
    check: Callable[..., CheckResult]
    notebook: str | None = None

    @property
    def label(self) -> str:
        return f"Exercise {self.id} ({self.title})"

    @property
    def topic(self) -> str:
        """The topic module that defines the check (``"gw"`` for ``mechnb.exercises.gw``)."""
        return self.check.__module__.rsplit(".", 1)[-1]

    @property
    def call_name(self) -> str:
        """How a notebook calls the check after ``from mechnb import exercises``: ``exercises.gw.check_gw_loss``."""
        return f"exercises.{self.topic}.{self.check.__name__}"

    @property
    def solution_name(self) -> str:
        """The reference solution's name in the topic module: ``solution_gw_loss`` for ``check_gw_loss``."""
        return "solution_" + self.check.__name__.removeprefix("check_")

    def reference(self, path: str | None = None) -> Any:
        """The object at ``path`` (dotted, e.g. ``"solution_spd_step"`` or ``"solution_Trainer.step"``)
        of the module that defines the check; default :attr:`solution_name`.

        Raises ``LookupError`` naming the module and the missing attribute.
        """
        path = self.solution_name if path is None else path
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f"path: expected a dotted attribute name like 'solution_gw_loss', got {path!r}")
        module = importlib.import_module(self.check.__module__)
        obj: Any = module
        for part in path.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise LookupError(f"{module.__name__} has no {path!r} (the reference solution of exercise "
                                  f"{self.id}, looked up for {self.check.__name__})") from None
        return obj


_REGISTRY: dict[str, Exercise] = {}
_CURRENT: contextvars.ContextVar[Exercise | None] = contextvars.ContextVar("mechnb_exercise", default=None)
#: the learner's function handed to the running check (a stub handed to a check is never replaced)
_CHECKED: contextvars.ContextVar[Any] = contextvars.ContextVar("mechnb_checked", default=None)


def registry() -> dict[str, Exercise]:
    """Every registered exercise, keyed by check-function name, in exercise-number order.

    Complete as soon as :mod:`mechnb.exercises` is imported (which happens before this module is
    loaded): the package imports every topic module, and each registers its checks on import.
    """
    return dict(sorted(_REGISTRY.items(), key=lambda kv: _id_key(kv[1].id)))


def exercise_by_id(ex_id: str) -> Exercise:
    """The registered exercise numbered ``ex_id`` (``"2.3"``); ``LookupError`` if there is none."""
    if not isinstance(ex_id, str):
        raise TypeError(f"ex_id: expected a string like '2.3', got {type(ex_id).__name__}")
    for ex in _REGISTRY.values():
        if ex.id == ex_id:
            return ex
    known = ", ".join(ex.id for ex in registry().values())
    raise LookupError(f"ex_id: no exercise {ex_id!r} is registered (known: {known})")


def _id_key(ex_id: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in ex_id.replace("-", ".").split("."))


CheckFunction = Callable[..., "CheckResult"]


def exercise(ex_id: str, title: str, *, notebook: str | None = None) -> Callable[[CheckFunction], CheckFunction]:
    """Decorator: register a check function for exercise ``ex_id`` (``"N.M"``, N = notebook number).

    The decorated function must take the learner's callable as its first positional argument and
    need no other argument; it normally ends with ``return run_cases(fn, cases)``. The wrapper

    * makes the exercise known to :func:`run_cases` (number and title in every message);
    * turns a ``NotImplementedError`` that escapes the body (the learner's stub, called outside
      :func:`run_cases`) into the helpful note;
    * rejects a learner argument that is not callable with a plain message.
    """
    if not isinstance(ex_id, str) or not ex_id.strip():
        raise ValueError(f"ex_id: expected a non-empty string like '2.1', got {ex_id!r}")
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"title: expected a non-empty string, got {title!r}")

    def decorate(check: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        params = list(inspect.signature(check).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not positional or len(required) > 1:
            raise TypeError(f"{check.__name__}: a check function takes the learner's function as its only "
                            f"required argument, got signature {inspect.signature(check)}")
        for other in _REGISTRY.values():
            if other.id == ex_id and other.check.__name__ != check.__name__:
                raise ValueError(f"ex_id: exercise {ex_id} is already checked by {other.check.__name__}")

        @functools.wraps(check)
        def wrapper(fn: Any, *args: Any, **kwargs: Any) -> CheckResult:
            if not callable(fn):
                result = CheckResult(ex.id, ex.title, False, 0, 0,
                                     [f"{FAIL_MARK} {ex.label}: expected your function, got "
                                      f"{_short_repr(fn)} (type {type(fn).__name__}). Pass the function itself, "
                                      f"e.g. {check.__name__}(my_function), without calling it."])
                return result._finish()
            token, token_fn = _CURRENT.set(ex), _CHECKED.set(fn)
            try:
                return check(fn, *args, **kwargs)
            except NotImplementedError as err:
                return _not_implemented(ex, fn, err)._finish()
            finally:
                _CHECKED.reset(token_fn)
                _CURRENT.reset(token)

        ex = Exercise(ex_id, title, wrapper, notebook)  # read by wrapper when it is called
        _REGISTRY[check.__name__] = ex
        wrapper.exercise = ex  # type: ignore[attr-defined]
        return wrapper

    return decorate


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """What a check found. ``bool(result)`` is ``result.passed``.

    In Jupyter a check's result is not echoed as ``Out[...]`` (the printed report says it all).
    """

    exercise: str
    title: str
    passed: bool
    n_cases: int
    n_failed: int
    messages: list[str] = field(default_factory=list)
    not_implemented: bool = False
    #: the learner's function is still the learner notebook's stub (later cells use the reference)
    stub: bool = False

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        state = "not implemented" if self.not_implemented else ("passed" if self.passed else "failed")
        return (f"CheckResult(exercise={self.exercise!r}, {state}, "
                f"{self.n_cases - self.n_failed}/{self.n_cases} cases right)")

    def _ipython_display_(self) -> None:  # the report is already printed
        return None

    @property
    def report(self) -> str:
        return "\n".join(self.messages)

    def _finish(self) -> CheckResult:
        print(self.report, flush=True)
        if strict_mode() and not self.passed and not self.stub:
            raise ExerciseFailed(f"Exercise {self.exercise} ({self.title}) did not pass (MECHNB_STRICT_CHECKS=1):\n"
                                 + self.report)
        return self


def _not_implemented(ex: Exercise, fn: Any, err: BaseException) -> CheckResult:
    stub = isinstance(err, StubNotDone)
    name = err.function if stub else getattr(fn, "__name__", "your function")
    detail = "" if stub else str(err).strip()  # a learner notebook's stub says only what the box says
    lines = [
        f"{TODO_MARK} {ex.label}: not implemented yet — `{name}` still raises NotImplementedError"
        + (f" ({detail})." if detail else "."),
        "   Replace the `raise NotImplementedError(...)` line in the exercise cell with your code,",
        "   run that cell, then run this check again. Stuck? Open the hints under the exercise.",
    ]
    if stub:
        lines.append("   Until then the cells below use the reference solution instead (and say so).")
    return CheckResult(ex.id, ex.title, False, 0, 0, lines, not_implemented=True, stub=stub)


# --------------------------------------------------------------------------------------------
# cases and comparison
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One known-answer case: ``fn(*args, **kwargs)`` should equal ``expected``.

    Args:
        args, kwargs: the inputs (deep-copied before every call, so a learner function that
            modifies its inputs in place cannot spoil later cases).
        expected: the right answer (number, array/tensor, or a tuple/list/dict of them).
        label: how to describe the input in a message, e.g. ``"x = [-1, 0, 2]"``; default: the
            arguments' short reprs.
        atol, rtol: tolerances for floating-point comparisons (default: those of :func:`run_cases`).
        compare: ``compare(expected, got) -> str | None`` replacing :func:`compare` for this case
            (return a description of what is wrong, or ``None`` when right).
        hint: one line printed under the failure, e.g. the likely mistake.
    """

    args: tuple[Any, ...] = ()
    expected: Any = None
    label: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    atol: float | None = None
    rtol: float | None = None
    compare: Callable[[Any, Any], str | None] | None = None
    hint: str | None = None

    def describe(self) -> str:
        if self.label:
            return self.label
        parts = [_short_repr(a) for a in self.args] + [f"{k}={_short_repr(v)}" for k, v in self.kwargs.items()]
        return "(" + ", ".join(parts) + ")"


def _to_numpy(x: Any) -> Any:
    """Tensors and numpy scalars to numpy; other objects unchanged."""
    mod = type(x).__module__
    if mod.startswith("torch") and hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if isinstance(x, np.generic):
        return np.asarray(x)
    return x


def _fmt_number(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if v == 0 or (1e-3 <= abs(v) < 1e5):
        return f"{v:.6g}"
    return f"{v:.4e}"


def _short_repr(x: Any, max_items: int = 8) -> str:
    x_np = _to_numpy(x)
    if isinstance(x_np, np.ndarray):
        if x_np.ndim == 0:
            return _fmt_number(x_np.item())
        kind = "tensor" if type(x).__module__.startswith("torch") else "array"
        if x_np.size <= max_items:
            body = np.array2string(x_np, precision=4, separator=", ", suppress_small=True).replace("\n", "")
            return f"{kind}({body})" if x_np.ndim > 1 or kind == "tensor" else body
        return f"{kind} of shape {tuple(x_np.shape)}"
    if isinstance(x, (bool, int, float, np.number)):
        return _fmt_number(x)
    if isinstance(x, (list, tuple)) and len(x) <= max_items and all(isinstance(v, (int, float, str)) for v in x):
        return repr(x)
    if isinstance(x, (list, tuple)):
        return f"{type(x).__name__} of {len(x)}"
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


def compare(expected: Any, got: Any, *, atol: float = 1e-5, rtol: float = 1e-4, path: str = "") -> str | None:
    """Describe how ``got`` differs from ``expected``; ``None`` when they match.

    Numbers and arrays (numpy or torch, any mix) are compared with ``|got - expected| <= atol +
    rtol * |expected|`` after checking the shape; integers and booleans must match exactly;
    tuples, lists and dicts are compared element by element; anything else with ``==``.
    """
    where = f" at {path}" if path else ""
    if got is None and expected is not None:
        return f"got None{where} — did the function forget to `return` its result?"
    exp = _to_numpy(expected)
    g = _to_numpy(got)

    if isinstance(exp, Mapping):
        if not isinstance(g, Mapping):
            return f"expected a dict{where}, got {type(got).__name__}"
        missing, extra = set(exp) - set(g), set(g) - set(exp)
        if missing or extra:
            return (f"keys differ{where}: missing {sorted(map(str, missing))}, unexpected {sorted(map(str, extra))}")
        for k in exp:
            msg = compare(exp[k], g[k], atol=atol, rtol=rtol, path=f"{path}[{k!r}]")
            if msg:
                return msg
        return None

    if isinstance(exp, (tuple, list)) and not _looks_numeric_sequence(exp):
        if not isinstance(g, (tuple, list)):
            return f"expected a {type(expected).__name__} of {len(exp)} items{where}, got {type(got).__name__}"
        if len(g) != len(exp):
            return f"expected {len(exp)} items{where}, got {len(g)}"
        for i, (e_i, g_i) in enumerate(zip(exp, g)):
            msg = compare(e_i, g_i, atol=atol, rtol=rtol, path=f"{path}[{i}]")
            if msg:
                return msg
        return None

    if isinstance(exp, (np.ndarray, int, float, bool, np.number, np.bool_)) or _looks_numeric_sequence(exp):
        e_arr = np.asarray(exp)
        try:
            g_arr = np.asarray(g)
        except Exception:  # noqa: BLE001 - anything numpy cannot read is simply the wrong type
            return f"expected a number/array{where}, got {type(got).__name__}"
        if g_arr.dtype == object or not (np.issubdtype(g_arr.dtype, np.number) or g_arr.dtype == bool):
            return f"expected a number/array{where}, got {type(got).__name__}: {_short_repr(got)}"
        if e_arr.shape != g_arr.shape:
            if e_arr.size == 1 and g_arr.size == 1:
                e_arr, g_arr = e_arr.reshape(()), g_arr.reshape(())
            else:
                return f"wrong shape{where}: expected {tuple(e_arr.shape)}, got {tuple(g_arr.shape)}"
        if np.iscomplexobj(g_arr) and not np.iscomplexobj(e_arr):
            return f"got complex values{where}, expected real ones"
        exact = e_arr.dtype == bool or np.issubdtype(e_arr.dtype, np.integer)
        g_f, e_f = g_arr.astype(np.float64), e_arr.astype(np.float64)
        if not np.all(np.isfinite(g_f)) and np.all(np.isfinite(e_f)):
            n_bad = int((~np.isfinite(g_f)).sum())
            return f"got {n_bad} NaN/inf value(s){where}: {_short_repr(got)}"
        bad = (g_f != e_f) if exact else ~np.isclose(g_f, e_f, atol=atol, rtol=rtol, equal_nan=True)
        if not bad.any():
            return None
        if e_arr.ndim == 0:
            diff = "" if exact else f" (difference {_fmt_number(float(g_f) - float(e_f))})"
            return f"expected {_fmt_number(e_arr.item())}{where}, got {_fmt_number(g_arr.item())}{diff}"
        err = np.abs(g_f - e_f)
        worst = np.unravel_index(int(np.argmax(np.where(bad, err, -1.0))), e_arr.shape)
        idx = "[" + ", ".join(str(int(i)) for i in worst) + "]"
        msg = (f"{int(bad.sum())} of {e_arr.size} entries wrong{where}; worst at index {idx}: "
               f"expected {_fmt_number(e_arr[worst])}, got {_fmt_number(g_arr[worst])}")
        if e_arr.size <= 12:
            msg += f"\n      expected {_short_repr(e_arr, 12)}\n      got      {_short_repr(g_arr, 12)}"
        return msg

    try:
        equal = bool(exp == g)
    except Exception:  # noqa: BLE001
        equal = False
    return None if equal else f"expected {_short_repr(expected)}{where}, got {_short_repr(got)}"


def _looks_numeric_sequence(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(
        isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in x)


def _learner_frames(err: BaseException) -> str:
    """The traceback of ``err`` restricted to frames outside mechnb (the learner's own code)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../mechnb
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not os.path.abspath(f.filename).startswith(here)]
    if not frames:
        return ""
    lines = traceback.format_list(frames[-3:])
    return "".join("      " + ln.replace("\n", "\n      ").rstrip(" ") for ln in lines).rstrip()


def run_cases(
    fn: Callable[..., Any],
    cases: Sequence[Case],
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    exercise: str | Exercise | None = None,
    title: str | None = None,
) -> CheckResult:
    """Run ``fn`` on every case, print the report and return a :class:`CheckResult`.

    Inside a check function decorated with :func:`exercise` the exercise number and title are
    known; elsewhere pass ``exercise="N.M"`` (and ``title``).

    A ``NotImplementedError`` (the learner's stub) stops the check with the helpful note; any other
    exception is reported for its case (type, message, the learner's frames) and the check goes
    on with the next case.
    """
    ex = exercise if isinstance(exercise, Exercise) else _CURRENT.get()
    if isinstance(exercise, str):
        ex = Exercise(exercise, title or "exercise", lambda f: None)  # type: ignore[arg-type,return-value]
    if ex is None:
        raise ValueError("exercise: run_cases outside a check decorated with @exercise needs exercise='N.M'")
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    if len(cases) == 0:
        raise ValueError("cases: expected at least one Case, got none")

    failures: list[str] = []
    for i, case in enumerate(cases, start=1):
        args = copy.deepcopy(tuple(case.args))
        kwargs = copy.deepcopy(dict(case.kwargs))
        try:
            got = fn(*args, **kwargs)
        except NotImplementedError as err:
            return _not_implemented(ex, fn, err)._finish()
        except Exception as err:  # noqa: BLE001 - the learner's bug, reported with its input
            frames = _learner_frames(err)
            msg = (f"  case {i} {case.describe()}: your function raised {type(err).__name__}: {err}"
                   + (f"\n{frames}" if frames else ""))
            failures.append(msg + (f"\n      hint: {case.hint}" if case.hint else ""))
            continue
        cmp = case.compare or functools.partial(compare, atol=case.atol if case.atol is not None else atol,
                                                rtol=case.rtol if case.rtol is not None else rtol)
        problem = cmp(case.expected, got)
        if problem:
            failures.append(f"  case {i} {case.describe()}: {problem}"
                            + (f"\n      hint: {case.hint}" if case.hint else ""))

    n = len(cases)
    if not failures:
        lines = [f"{PASS_MARK} {ex.label}: correct on all {n} case{'s' if n != 1 else ''}."]
        return CheckResult(ex.id, ex.title, True, n, 0, lines)._finish()
    lines = [f"{FAIL_MARK} {ex.label}: {len(failures)} of {n} case{'s' if n != 1 else ''} wrong."]
    lines += failures[:MAX_REPORTED_FAILURES]
    if len(failures) > MAX_REPORTED_FAILURES:
        lines.append(f"  ... and {len(failures) - MAX_REPORTED_FAILURES} more wrong case(s).")
    return CheckResult(ex.id, ex.title, False, n, len(failures), lines)._finish()


# --------------------------------------------------------------------------------------------
# the package function an exercise asks for is off limits while its check runs
# --------------------------------------------------------------------------------------------


class WriteItYourself(RuntimeError):
    """The learner's function called the package function that its exercise asks the learner to write."""


def _code(obj: Any) -> CodeType:
    fn = getattr(obj, "fget", obj)  # properties
    fn = getattr(fn, "__wrapped__", fn)
    return fn.__code__


def _without(fn: Callable[..., Any], forbidden: Mapping[str, Callable[..., Any]], exercise_id: str,
             advice: str) -> Callable[..., Any]:
    """``fn`` run so that calling any of ``forbidden`` (name -> function) inside it raises :class:`WriteItYourself`.

    The calls are recognised by their code objects (a profile hook on this thread, restored
    afterwards), so ``gw.distance_matrix``, ``mechnb.gw.distances.distance_matrix`` and a name
    imported earlier (``from mechnb.gw import distance_matrix as dm``) are all caught. The error
    is raised when ``fn`` returns, and reported by :func:`~mechnb.exercises._core.run_cases` as
    the case's failure; ``NotImplementedError`` (the learner's stub) passes through unchanged.
    """
    codes = {_code(f): name for name, f in forbidden.items()}

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        hits: list[str] = []
        previous = sys.getprofile()

        def hook(frame: FrameType, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code in codes and codes[frame.f_code] not in hits:
                hits.append(codes[frame.f_code])
            if previous is not None:
                previous(frame, event, arg)

        sys.setprofile(hook)
        try:
            out = fn(*args, **kwargs)
        finally:
            sys.setprofile(previous)
        if hits:
            raise WriteItYourself(f"your function called {', '.join(hits)}: that is the package's own answer to "
                                  f"Exercise {exercise_id}, so the check cannot tell whether yours is right. "
                                  f"Write it yourself - {advice}")
        return out

    return guarded
