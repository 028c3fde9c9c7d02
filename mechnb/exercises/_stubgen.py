"""How ``make exercises`` turns one cell's ``# SOLUTION`` blocks into stubs (used by :mod:`.make`).

A learner notebook must run to the end with every exercise left as its stub, so a stub may only
take a form after which the later cells still work (see :mod:`mechnb.exercises._stubs`):

* a block inside the body of a function defined at the top level of the cell (or in a function
  nested in it) becomes ``raise NotImplementedError("Exercise N.M: ...")``, and the function is
  decorated with ``@exercises.stub("N.M")``, which falls back to the reference solution;
* a block inside a method of a class defined at the top level: the same, on the method (the
  reference is a method of the reference class, called with the learner's ``self``);
* a block at the top level of the cell made of whole statements: each ``def`` keeps its
  signature and docstring and gets the stub body and decorator; each assignment ``name = ...``
  becomes ``name = exercises.stub_value("N.M", "name")`` (the reference value ``solution_name``);
  anything else is refused.

The reference solution of a function passed to its exercise's check in the same cell
(``exercises.spd.check_x(f)``) is ``solution_x`` of the check's topic module; of any other
function ``f``, ``solution_f`` (of a method ``K.m``: ``solution_K.m``, or ``solution_x.m`` when
``K`` is checked). Its signature must accept every call the notebook's function accepts. A stub
without a reference is written as the plain ``raise`` only when nothing outside its own cell's
check uses the name; otherwise :class:`UnsafeStubError` says what is missing, as it does for a
block in any other place (inside a top-level ``for``/``if``/``with``, in a class body outside a
method, ...) and for a top-level ``raise`` (which would stop "Run All").
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mechnb.exercises._core import Exercise, exercise_by_id, registry

__all__ = ["Block", "MarkerError", "Stub", "UnsafeStubError", "binds_exercises", "checked_names", "find_blocks",
           "names_used", "parse_cell", "replace_solutions", "signature_problems", "stub_cell", "stub_line"]

_START = re.compile(r"^(?P<indent>[ \t]*)#\s*SOLUTION\b(?P<rest>.*)$")
_END = re.compile(r"^[ \t]*#\s*END\s+SOLUTION\b.*$")
_ID = re.compile(r"^\s*(?:Exercise\s+)?(?P<id>\d+(?:\.\d+)+)\s*$", re.IGNORECASE)
_MAGIC = re.compile(r"^(?P<indent>[ \t]*)[%!]")
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


class MarkerError(ValueError):
    """A ``# SOLUTION`` / ``# END SOLUTION`` marker without its partner, or nested markers."""


class UnsafeStubError(MarkerError):
    """A solution block that cannot become a stub after which the later cells still run."""


def stub_line(indent: str, exercise_id: str) -> str:
    """The line that replaces one solution block."""
    message = f"Exercise {exercise_id}: write your code here (see the exercise box above)"
    return f'{indent}raise NotImplementedError("{message}")'


@dataclass(frozen=True)
class Block:
    """One marked block: its marker lines (1-based, ``start`` = ``# SOLUTION``), indentation and id."""

    start: int
    end: int
    indent: str
    id: str
    explicit: bool = False  # the marker names the id (``# SOLUTION 2.3``)


def find_blocks(source: str, exercise_id: str, *, where: str = "cell") -> list[Block]:
    """The marked blocks of ``source``; ``exercise_id`` for a marker without an id.

    Raises :class:`MarkerError` (naming ``where`` and the line) on an unmatched or nested marker,
    or on a marker followed by something that is not an exercise id.
    """
    blocks: list[Block] = []
    open_at: tuple[int, str, str, bool] | None = None
    lines = source.split("\n")
    for lineno, line in enumerate(lines, start=1):
        start, end = _START.match(line), _END.match(line)
        if start:
            if open_at is not None:
                raise MarkerError(f"{where}, line {lineno}: '# SOLUTION' inside the block opened on line {open_at[0]} "
                                  "(close it with '# END SOLUTION' first)")
            rest = start.group("rest").strip(" :-—")
            block_id = exercise_id
            if rest:
                m = _ID.match(rest)
                if not m:
                    raise MarkerError(f"{where}, line {lineno}: expected '# SOLUTION' or '# SOLUTION N.M', "
                                      f"got {line.strip()!r}")
                block_id = m.group("id")
            open_at = (lineno, start.group("indent"), block_id, bool(rest))
        elif end:
            if open_at is None:
                raise MarkerError(f"{where}, line {lineno}: '# END SOLUTION' without a '# SOLUTION' before it")
            blocks.append(Block(open_at[0], lineno, *open_at[1:]))
            open_at = None
    if open_at is not None:
        raise MarkerError(f"{where}, line {open_at[0]}: '# SOLUTION' is never closed by '# END SOLUTION'")
    return blocks


def replace_solutions(source: str, exercise_id: str, *, where: str = "cell") -> tuple[str, list[str]]:
    """Replace every marked block of ``source`` by its ``raise NotImplementedError`` line (text only,
    no stub decorator); return ``(new_source, block_ids)``. Marker errors as :func:`find_blocks`."""
    blocks = find_blocks(source, exercise_id, where=where)
    return _apply(source.split("\n"), {b.start: (b.end, [stub_line(b.indent, b.id)]) for b in blocks}, {}), \
        [b.id for b in blocks]


def _apply(lines: list[str], replace: dict[int, tuple[int, list[str]]], insert: dict[int, str]) -> str:
    """``lines`` with ``replace[start] = (end, new_lines)`` (1-based, inclusive) and a line
    ``insert[n]`` put before line ``n``."""
    out: list[str] = []
    n = 1
    while n <= len(lines):
        if n in replace:
            end, new = replace[n]
            out += new
            n = end + 1
            continue
        if n in insert:
            out.append(insert[n])
        out.append(lines[n - 1])
        n += 1
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# reading a cell
# --------------------------------------------------------------------------------------------


def parse_cell(source: str) -> ast.Module:
    """``source`` parsed, IPython magics (``%...``, ``!...``) read as ``pass``; ``SyntaxError`` if not Python."""
    masked = [(m.group("indent") + "pass") if (m := _MAGIC.match(ln)) else ln for ln in source.split("\n")]
    return ast.parse("\n".join(masked))


def names_used(source: str) -> set[str]:
    """The names a cell reads (``ast.Name`` loads), except a function handed to an exercise check
    (``check_x(f)``: the check runs the learner's own code); every identifier when it is not valid Python."""
    try:
        tree = parse_cell(source)
    except SyntaxError:
        return set(re.findall(r"[A-Za-z_]\w*", source))
    args = {id(node) for _, node in _check_calls(tree)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
            and id(n) not in args}


def checked_names(source: str) -> dict[str, Exercise]:
    """``{name: exercise}`` for every ``<...>.check_x(name, ...)`` of a registered check in the cell."""
    try:
        tree = parse_cell(source)
    except SyntaxError:
        return {}
    found: dict[str, Exercise] = {}
    for ex, node in _check_calls(tree):
        found.setdefault(node.id, ex)
    return found


def binds_exercises(source: str) -> bool:
    """True when the cell binds the name ``exercises`` to :mod:`mechnb.exercises`."""
    try:
        tree = parse_cell(source)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "mechnb":
            if any(a.name == "exercises" and a.asname in (None, "exercises") for a in node.names):
                return True
        if isinstance(node, ast.Import):
            if any(a.name == "mechnb.exercises" and a.asname == "exercises" for a in node.names):
                return True
    return False


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno] + [d.lineno for d in decorators])


def _check_calls(tree: ast.Module) -> list[tuple[Exercise, ast.Name]]:
    """``(exercise, the Name node of f)`` for every ``<...>.check_x(f, ...)`` of a registered check."""
    checks = registry()
    found: list[tuple[Exercise, ast.Name]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Name):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in checks:
            found.append((checks[name], node.args[0]))
    return found


# --------------------------------------------------------------------------------------------
# the signature a reference must accept
# --------------------------------------------------------------------------------------------


def _literal(node: ast.expr | None) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node) if node is not None else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def signature_problems(fn: ast.FunctionDef | ast.AsyncFunctionDef, ref: Callable[..., Any]) -> list[str]:
    """Why ``ref`` cannot stand in for the notebook's function ``fn``: every call ``fn`` accepts (by
    position and by keyword, with its defaults) must mean the same to ``ref``; [] when it can."""
    try:
        sig = inspect.signature(ref)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to compare
        return []
    P = inspect.Parameter
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    by_name = {p.name: p for p in params}
    var_pos = any(p.kind == P.VAR_POSITIONAL for p in params)
    var_kw = any(p.kind == P.VAR_KEYWORD for p in params)
    a = fn.args
    problems: list[str] = []
    used: set[str] = set()

    def default_problem(name: str, default: ast.expr | None, p: inspect.Parameter) -> None:
        if default is None:
            return
        if p.default is P.empty:
            problems.append(f"`{name}` has a default in the notebook but not in the reference")
            return
        ok, value = _literal(default)
        try:
            differs = ok and bool(value != p.default)
        except Exception:  # noqa: BLE001 - e.g. an array default: not comparable, not checked
            differs = False
        if differs:
            problems.append(f"`{name}` defaults to {value!r} in the notebook but to {p.default!r} in the reference")

    nb_positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(nb_positional) - len(a.defaults)) + list(a.defaults)
    for i, (arg, default) in enumerate(zip(nb_positional, defaults)):
        if i < len(positional):
            p = positional[i]
            if arg not in a.posonlyargs and p.name != arg.arg:
                problems.append(f"parameter {i + 1} is `{arg.arg}` in the notebook but `{p.name}` in the reference")
            used.add(p.name)
            default_problem(arg.arg, default, p)
        elif not var_pos:
            problems.append(f"the reference takes no parameter {i + 1} (`{arg.arg}`)")
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        p = by_name.get(arg.arg)
        if p is None or p.kind not in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY):
            if not var_kw:
                problems.append(f"the reference takes no keyword `{arg.arg}`")
            continue
        used.add(p.name)
        default_problem(arg.arg, default, p)
    if a.vararg and not var_pos:
        problems.append(f"the notebook's function takes *{a.vararg.arg}, the reference no *args")
    if a.kwarg and not var_kw:
        problems.append(f"the notebook's function takes **{a.kwarg.arg}, the reference no **kwargs")
    for p in params:
        if p.name not in used and p.default is P.empty and p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
            problems.append(f"the reference needs `{p.name}`, which the notebook's function does not take")
    return problems


# --------------------------------------------------------------------------------------------
# one cell
# --------------------------------------------------------------------------------------------


@dataclass
class Stub:
    """One stub of a learner notebook.

    ``kind``: ``"function"``, ``"method"`` or ``"value"``; ``name``: the learner's name
    (``"sample_masks"``, ``"Trainer.step"``); ``reference``: the reference solution's name in the
    check's topic module, ``None`` for a plain stub without fallback; ``used_in``: the cells that
    use the name besides its own exercise check (the cells that will show the fallback note).
    """

    exercise: str
    name: str
    kind: str
    reference: str | None
    cell: int
    used_in: list[int] = field(default_factory=list)


@dataclass
class _Target:
    node: ast.FunctionDef | ast.AsyncFunctionDef
    kind: str
    name: str       # learner's qualified name
    owner: str      # the top-level name later cells use (function or class)
    method: str | None
    blocks: list[Block] = field(default_factory=list)


class _Cell:
    """The analysis of one cell: its tree, checked names and the uses of names outside defs."""

    def __init__(self, source: str, where: str, index: int, uses_after: Callable[[str], list[int]],
                 checked_elsewhere: Mapping[str, Exercise]) -> None:
        self.lines = source.split("\n")
        self.where = where
        self.index = index
        self.uses_after = uses_after
        try:
            self.tree = parse_cell(source)
        except SyntaxError as err:
            raise UnsafeStubError(f"{where}, line {err.lineno}: a cell with a SOLUTION block must be valid Python "
                                  f"({err.msg})") from None
        calls = _check_calls(self.tree)
        own = {node.id: ex for ex, node in reversed(calls)}  # the first check of a name wins
        self.checked: dict[str, Exercise] = {**checked_elsewhere, **own}
        self.check_args = {id(node) for _, node in calls}

    def effective_id(self, block: Block, owner: str) -> str:
        """A marker without an id takes the id of the check the function is handed to, if any."""
        return self.checked[owner].id if not block.explicit and owner in self.checked else block.id

    def used_in(self, name: str, own: ast.stmt | None) -> list[int]:
        """Cells that read ``name``: this one outside ``own`` and outside its check call, and later ones."""
        skip = self.check_args
        lo, hi = (_first_line(own), own.end_lineno or own.lineno) if own is not None else (0, -1)
        here = any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)
                   and id(n) not in skip and not lo <= n.lineno <= hi for n in ast.walk(self.tree))
        return ([self.index] if here else []) + self.uses_after(name)

    def reference(self, ex: Exercise | None, candidates: Sequence[str]) -> tuple[str | None, Any]:
        if ex is None:
            return None, None
        for path in candidates:
            try:
                return path, ex.reference(path)
            except LookupError:
                continue
        return None, None


def _exercise(block_id: str) -> Exercise | None:
    try:
        return exercise_by_id(block_id)
    except LookupError:
        return None


def stub_cell(source: str, default_id: str, *, where: str = "cell", index: int = 0,
              uses_after: Callable[[str], list[int]] = lambda name: [],
              exercises_bound: bool = True,
              checked_elsewhere: Mapping[str, Exercise] | None = None) -> tuple[str, list[str], list[Stub]]:
    """The learner version of one cell: ``(new_source, block_ids, stubs)`` (see the module docstring).

    Args:
        default_id: the exercise id of a block whose marker names none.
        where: how messages name the cell (``"02_spd.ipynb, cell 17"``); ``index``: its index.
        uses_after: name -> the indices of the later cells that read it.
        exercises_bound: whether ``exercises`` (:mod:`mechnb.exercises`) is imported by then.
        checked_elsewhere: ``{name: exercise}`` of the checks the notebook's other cells call
            (:func:`checked_names`): a function checked there belongs to that exercise.

    Raises:
        MarkerError: unmatched or nested markers; :class:`UnsafeStubError`: a block that cannot be
        stubbed safely (the message says why and what to change).
    """
    blocks = find_blocks(source, default_id, where=where)
    if not blocks:
        return source, [], []
    cell = _Cell(source, where, index, uses_after, checked_elsewhere or {})
    replace: dict[int, tuple[int, list[str]]] = {}
    insert: dict[int, str] = {}
    targets: dict[int, _Target] = {}
    stubs: list[Stub] = []
    ids: list[str] = []
    for block in blocks:
        content = [n for n in range(block.start + 1, block.end)
                   if cell.lines[n - 1].strip() and not cell.lines[n - 1].lstrip().startswith("#")]
        at = f"{where}, line {block.start}"
        if not content:
            raise UnsafeStubError(f"{at}: the SOLUTION block of exercise {block.id} is empty")
        lo, hi = content[0], content[-1]
        top = [n for n in cell.tree.body if _first_line(n) <= hi and (n.end_lineno or n.lineno) >= lo]
        if not block.indent:
            lines, block_ids = _top_level(cell, block, top, stubs, exercises_bound)
            replace[block.start] = (block.end, lines)
            ids.append(block_ids[0] if block_ids else block.id)
            continue
        target = _enclosing(top, block, lo, hi, at)
        block_id = cell.effective_id(block, target.owner)
        ids.append(block_id)
        targets.setdefault(target.node.lineno, target).blocks.append(Block(block.start, block.end, block.indent,
                                                                             block_id, block.explicit))
        replace[block.start] = (block.end, [stub_line(block.indent, block_id)])
    for line, target in targets.items():
        target_ids = list(dict.fromkeys(b.id for b in target.blocks))
        if len(target_ids) > 1:
            raise UnsafeStubError(f"{where}, line {line}: `{target.name}` holds blocks of exercises {target_ids}: "
                                  "one function stands for one exercise")
        decorator = _plan(cell, target_ids[0], target, target.node, stubs, exercises_bound)
        if decorator:
            indent = re.match(r"[ \t]*", cell.lines[line - 1]).group(0)
            insert[line] = indent + decorator
    return _apply(cell.lines, replace, insert), ids, stubs


def _enclosing(top: list[ast.stmt], block: Block, lo: int, hi: int, at: str) -> _Target:
    """The function (or method) whose body holds the indented ``block``."""
    if len(top) != 1:
        raise UnsafeStubError(f"{at}: an indented SOLUTION block must lie inside one function; this one spans "
                              f"{len(top)} top-level statements")
    node = top[0]
    width = len(block.indent.expandtabs())

    def inside(n: ast.stmt) -> bool:
        return n.lineno < block.start and (n.end_lineno or n.lineno) >= hi and n.col_offset < width

    if isinstance(node, _DEFS) and inside(node):
        return _Target(node, "function", node.name, node.name, None)
    if isinstance(node, ast.ClassDef):
        for m in node.body:
            if isinstance(m, _DEFS) and inside(m):
                return _Target(m, "method", f"{node.name}.{m.name}", node.name, m.name)
        raise UnsafeStubError(f"{at}: a SOLUTION block in the body of class `{node.name}` outside its methods "
                              "cannot be stubbed safely; put it inside a method")
    kind = type(node).__name__.lower()
    raise UnsafeStubError(f"{at}: a SOLUTION block inside a top-level `{kind}` statement cannot be stubbed safely "
                          "(a raise there stops Run All); put the solution inside a function body")


def _plan(cell: _Cell, block_id: str, target: _Target, own: ast.stmt, stubs: list[Stub],
          exercises_bound: bool) -> str | None:
    """Pick the reference of a function/method stub; return its decorator line (None: plain stub)."""
    ex = _exercise(block_id)
    checked = cell.checked.get(target.owner)
    if checked is not None and checked.id != block_id:
        raise UnsafeStubError(f"{cell.where}, line {target.node.lineno}: `{target.owner}` is marked as exercise "
                              f"{block_id} but passed to {checked.check.__name__} (exercise {checked.id})")
    bases = ([ex.solution_name] if (ex is not None and checked is not None) else []) + [f"solution_{target.owner}"]
    candidates = [b if target.method is None else f"{b}.{target.method}" for b in bases]
    path, ref = cell.reference(ex, candidates)
    used = cell.used_in(target.owner, own)
    if path is None:
        if used:
            module = ex.check.__module__ if ex is not None else "the topic module"
            why = (f"{module} has no " + " and no ".join(f"`{c}`" for c in candidates) if ex is not None
                   else f"no check is registered for exercise {block_id}, so there is no topic module to take "
                        "a reference solution from")
            raise UnsafeStubError(f"{cell.where}, line {target.node.lineno}: `{target.name}` (exercise {block_id}) "
                                  f"is used by cell(s) {used}, but {why}: add the reference solution "
                                  f"with the notebook's signature so the learner version can fall back to it")
        stubs.append(Stub(block_id, target.name, target.kind, None, cell.index, []))
        return None
    if not callable(ref):
        raise UnsafeStubError(f"{cell.where}, line {target.node.lineno}: the reference {ex.check.__module__}."
                              f"{path} of `{target.name}` is a {type(ref).__name__}, not a function")
    problems = signature_problems(target.node, ref)
    if problems:
        raise UnsafeStubError(f"{cell.where}, line {target.node.lineno}: the reference {ex.check.__module__}.{path}"
                              f"{inspect.signature(ref)} cannot stand in for `{target.name}`: " + "; ".join(problems))
    if not exercises_bound:
        raise UnsafeStubError(f"{cell.where}: the stub of `{target.name}` is decorated with @exercises.stub, but no "
                              "cell before it imports `exercises` (add `from mechnb import exercises`)")
    stubs.append(Stub(block_id, target.name, target.kind, path, cell.index, used))
    return f'@exercises.stub("{block_id}")' if path == ex.solution_name else \
        f'@exercises.stub("{block_id}", "{path}")'


def _top_level(cell: _Cell, block: Block, top: list[ast.stmt], stubs: list[Stub],
               exercises_bound: bool) -> tuple[list[str], list[str]]:
    """The stub lines of a block at the top level of the cell (whole defs and assignments only) and
    the exercise ids of its defs."""
    out: list[str] = []
    ids: list[str] = []
    previous = block.start
    for node in top:
        first, last = _first_line(node), node.end_lineno or node.lineno
        at = f"{cell.where}, line {node.lineno}"
        if first <= block.start or last >= block.end:
            raise UnsafeStubError(f"{at}: the SOLUTION block starting on line {block.start} cuts a statement in two")
        if out and any(not ln.strip() for ln in cell.lines[previous:first - 1]):
            out.append("")  # keep the blank line(s) between two statements as one
        previous = last
        if isinstance(node, _DEFS):
            body = node.body
            doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str)
            head_end = (body[0].end_lineno or body[0].lineno) if doc else body[0].lineno - 1
            if head_end < node.lineno:
                raise UnsafeStubError(f"{at}: write the body of `{node.name}` on its own lines")
            body_line = cell.lines[body[0].lineno - 1]
            indent = re.match(r"[ \t]*", body_line).group(0) or "    "
            target = _Target(node, "function", node.name, node.name, None, [block])
            block_id = cell.effective_id(block, node.name)
            ids.append(block_id)
            decorator = _plan(cell, block_id, target, node, stubs, exercises_bound)
            head = cell.lines[first - 1:head_end]
            if decorator:
                head.insert(node.lineno - first, decorator)
            out += head + [stub_line(indent, block_id)]
            continue
        names: list[str] = []
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                elts = t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]
                names += [e.id for e in elts if isinstance(e, ast.Name)]
                if not all(isinstance(e, ast.Name) for e in elts):
                    names = []
                    break
        if not names:
            kind = type(node).__name__
            raise UnsafeStubError(f"{at}: a top-level `{kind}` inside a SOLUTION block cannot be stubbed safely "
                                  "(a raise there stops Run All): put the solution inside a function body, or make "
                                  "the block assign names only (`name = ...`, with a reference value "
                                  "`solution_name` in the topic module)")
        out += [_value_stub(cell, block.id, name, node, stubs, exercises_bound) for name in dict.fromkeys(names)]
    return out, ids


def _value_stub(cell: _Cell, block_id: str, name: str, node: ast.stmt, stubs: list[Stub],
                exercises_bound: bool) -> str:
    ex = _exercise(block_id)
    path, _ = cell.reference(ex, [f"solution_{name}"])
    at = f"{cell.where}, line {node.lineno}"
    if path is None:
        where = f"{ex.check.__module__} has no `solution_{name}`" if ex is not None else \
            f"no check is registered for exercise {block_id}"
        raise UnsafeStubError(f"{at}: the learner version replaces `{name} = ...` (exercise {block_id}) by its "
                              f"reference value, but {where}")
    if not exercises_bound:
        raise UnsafeStubError(f"{at}: the stub of `{name}` calls exercises.stub_value, but no cell before it "
                              "imports `exercises` (add `from mechnb import exercises`)")
    used = cell.used_in(name, node)
    stubs.append(Stub(block_id, name, "value", path, cell.index, used if cell.index in used else [cell.index, *used]))
    return (f'{name} = exercises.stub_value("{block_id}", "{name}")  '
            f'# Exercise {block_id}: replace this line with your code (see the exercise box above)')
