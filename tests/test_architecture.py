"""The house rules of ``ARCHITECTURE.md`` (in the shared notes next to the repository), checked on the source.

* **Import direction.** Every module under ``mechnb/`` is parsed with :mod:`ast`; every import in
  it — at the top, inside functions (lazy imports), under ``TYPE_CHECKING``, relative, or through
  ``importlib.import_module("mechnb....")`` — is resolved to the *room* it reaches, and the room
  must be one the importing room may use (the table :data:`MAY_IMPORT` below). Imports point down:

  ====================  =====================================================================
  room                  may import (besides itself)
  ====================  =====================================================================
  ground floor          other ground-floor modules: ``models``, ``tasks``, ``train``, the
                        private ``_*`` helpers, the package root
  ``metrics``           the ground floor
  ``zoo``               the ground floor, ``metrics``
  ``interop``, ``io``   the ground floor, ``metrics``, ``zoo`` (outside models in, results out)
  method packages       the ground floor, ``metrics``, ``interop``, ``io`` — never the zoo,
  (``degeneracy``,      the experiments, the face, ``lab``, or each other
  ``spd``, ``gw``,
  ``circuits``)
  ``experiments``       everything above plus the zoo and the methods — never the face
  ``plots``             everything below the face (arrays and result dataclasses in)
  ``widgets``           everything below the face, and ``plots``
  ``exercises``         everything below the face
  ``lab``               anything (the JupyterLab launcher)
  ====================  =====================================================================

  A new top-level module or package has to be given a room here (see
  :func:`test_every_module_has_a_room`), and ``ARCHITECTURE.md`` updated with it.
* **File size.** No file in ``mechnb/`` is longer than :data:`MAX_LINES` lines: a module that
  grows past ~600 lines becomes a package of the same name.
* **Wording.** Docstrings (in ``mechnb/`` and ``tests/``) and test names say what the code does,
  not which tracker item asked for it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mechnb"
TESTS = ROOT / "tests"

# --------------------------------------------------------------------------------------------
# rooms and the import rule
# --------------------------------------------------------------------------------------------

#: Ground-floor modules by name; every top-level private module ``mechnb/_*.py`` (shared helpers
#: such as ``_checks``, ``_torch``) and the package root ``mechnb/__init__.py`` (room ``""``) are
#: ground floor too.
GROUND = {"", "models", "tasks", "train"}
METHODS = {"degeneracy", "spd", "gw", "circuits"}
FACES = {"plots", "widgets", "exercises"}
#: Rooms that may not exist yet; listed so that they have a place in the table when they arrive.
FUTURE = {"interop", "io"}


def _ground() -> set[str]:
    private = {p.stem for p in PACKAGE.glob("_*.py") if p.name != "__init__.py"}
    private |= {p.name for p in PACKAGE.glob("_*") if p.is_dir() and (p / "__init__.py").exists()}
    return GROUND | private


def may_import() -> dict[str, set[str]]:
    """Room -> the rooms its modules may import (a room may always import itself)."""
    ground = _ground()
    below_methods = ground | {"metrics", "interop", "io"}
    below_face = below_methods | {"zoo"} | METHODS | {"experiments"}
    table: dict[str, set[str]] = {room: set(ground) for room in ground}
    table["metrics"] = set(ground)
    table["zoo"] = ground | {"metrics"}
    for room in ("interop", "io"):
        table[room] = ground | {"metrics", "zoo", "interop", "io"}
    for method in METHODS:
        table[method] = set(below_methods)
    table["experiments"] = below_methods | {"zoo"} | METHODS
    table["plots"] = set(below_face)
    table["widgets"] = below_face | {"plots"}
    table["exercises"] = set(below_face)
    table["lab"] = below_face | FACES
    for room, allowed in table.items():
        allowed.add(room)
    return table


MAY_IMPORT = may_import()


def room_of(module: str) -> str:
    """``"mechnb.gw.solve"`` -> ``"gw"``; ``"mechnb"`` -> ``""`` (the package root)."""
    parts = module.split(".")
    if parts[0] != "mechnb":
        raise ValueError(f"module: expected a name under mechnb, got {module!r}")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path, package_dir: Path = PACKAGE) -> str:
    """``mechnb/gw/solve.py`` -> ``"mechnb.gw.solve"``; ``mechnb/gw/__init__.py`` -> ``"mechnb.gw"``."""
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_submodule(name: str, package_dir: Path) -> bool:
    """Whether ``mechnb.<...>.name`` is a module or package on disk (``from mechnb import zoo``)."""
    return (package_dir / f"{name}.py").exists() or (package_dir / name / "__init__.py").exists()


def imported_modules(source: str, module: str, is_package: bool,
                     package_dir: Path = PACKAGE) -> list[tuple[int, str]]:
    """Every ``mechnb`` module that ``source`` (the text of ``module``) imports, as ``(line, name)``.

    Walks the whole tree, so imports inside functions and ``if TYPE_CHECKING:`` blocks count.
    ``from mechnb import zoo`` reaches ``mechnb.zoo`` (a submodule); ``from mechnb import fast_mode``
    reaches ``mechnb`` (the root). Relative imports are resolved against ``module``
    (``is_package``: ``module`` is an ``__init__``). ``importlib.import_module("mechnb.x")`` and
    ``__import__("mechnb.x")`` with a literal name count as imports of ``mechnb.x``.
    """
    found: list[tuple[int, str]] = []
    base_parts = module.split(".") if is_package else module.split(".")[:-1]
    root_dir = package_dir.parent
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "mechnb"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base_parts[: len(base_parts) - (node.level - 1)] if node.level > 1 else list(base_parts)
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "mechnb":
                continue
            target_dir = root_dir.joinpath(*target.split("."))
            for alias in node.names:
                if alias.name != "*" and target_dir.is_dir() and _is_submodule(alias.name, target_dir):
                    found.append((node.lineno, f"{target}.{alias.name}"))
                else:
                    found.append((node.lineno, target))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0].value
            if name in {"import_module", "__import__"} and isinstance(arg, str) and arg.split(".")[0] == "mechnb":
                found.append((node.lineno, arg))
    return list(dict.fromkeys(found))  # one entry per (line, module), first-seen order


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def import_violations(package_dir: Path = PACKAGE, table: dict[str, set[str]] | None = None) -> list[str]:
    """``"mechnb/gw/x.py:12: room 'gw' imports mechnb.zoo (room 'zoo')"`` for every import against the rule."""
    table = MAY_IMPORT if table is None else table
    out = []
    for path in sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts):
        module = module_name(path, package_dir)
        room = room_of(module)
        allowed = table.get(room)
        if allowed is None:
            out.append(f"{path.relative_to(package_dir.parent)}: room {room!r} is not in the table of rooms")
            continue
        for line, target in imported_modules(path.read_text(), module, path.name == "__init__.py", package_dir):
            if room_of(target) not in allowed:
                out.append(f"{path.relative_to(package_dir.parent)}:{line}: room {room!r} imports {target} "
                           f"(room {room_of(target)!r})")
    return out


def test_every_module_has_a_room() -> None:
    rooms = {room_of(module_name(p)) for p in _modules()}
    missing = sorted(rooms - set(MAY_IMPORT))
    assert not missing, (f"top-level modules without a room in tests/test_architecture.py: {missing}; "
                         "give each one a room (and a line in ARCHITECTURE.md)")
    assert METHODS | FACES | {"zoo", "experiments", "metrics"} <= rooms, "a room of the map is missing from mechnb/"


def test_imports_point_down() -> None:
    violations = import_violations()
    assert not violations, ("imports against the direction of ARCHITECTURE.md (methods import only the ground "
                            "floor; the zoo no method, experiment or face; experiments no face):\n  "
                            + "\n  ".join(violations))


def test_the_rule_forbids_what_the_map_forbids() -> None:
    """The table itself: methods reach neither the zoo, the experiments, the face nor each other."""
    for method in METHODS:
        assert MAY_IMPORT[method] & (METHODS | FACES | {"zoo", "experiments", "lab"}) == {method}
    assert not MAY_IMPORT["zoo"] & (METHODS | FACES | {"experiments", "lab", "interop", "io"})
    assert not MAY_IMPORT["experiments"] & (FACES | {"lab"})
    for room in _ground():
        assert MAY_IMPORT[room] <= _ground(), room
    assert "widgets" not in MAY_IMPORT["plots"] and "plots" in MAY_IMPORT["widgets"]


def test_checker_finds_lazy_relative_and_dynamic_imports(tmp_path: Path) -> None:
    """Ground truth for the checker on a made-up package: every kind of import is found and judged."""
    pkg = tmp_path / "mechnb"
    for d in ("", "gw", "zoo"):
        (pkg / d).mkdir(parents=True, exist_ok=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "models.py").write_text("")
    (pkg / "experiments.py").write_text("")
    (pkg / "gw" / "solve.py").write_text(
        "import numpy\n"
        "from mechnb.models import MLP\n"                     # 2: ground floor, fine
        "from .. import zoo\n"                                # 3: relative, the zoo
        "from . import layers\n"                              # 4: own package, fine
        "def f():\n"
        "    from mechnb import experiments\n"                # 6: lazy
        "    import importlib\n"
        "    return importlib.import_module('mechnb.zoo')\n"  # 8: dynamic
    )
    (pkg / "gw" / "layers.py").write_text("")
    (pkg / "zoo" / "build.py").write_text("from mechnb import models, fast_mode\nfrom mechnb.gw.solve import f\n")
    src = (pkg / "gw" / "solve.py").read_text()
    found = sorted(imported_modules(src, "mechnb.gw.solve", False, pkg))
    assert found == [(2, "mechnb.models"), (3, "mechnb.zoo"), (4, "mechnb.gw.layers"), (6, "mechnb.experiments"),
                     (8, "mechnb.zoo")]
    build = sorted(imported_modules((pkg / "zoo" / "build.py").read_text(), "mechnb.zoo.build", False, pkg))
    assert build == [(1, "mechnb"), (1, "mechnb.models"), (2, "mechnb.gw.solve")]
    table = {"": {""}, "models": {"", "models"}, "gw": {"", "models", "gw"}, "zoo": {"", "models", "zoo"},
             "experiments": {"experiments"}}
    assert import_violations(pkg, table) == [
        "mechnb/gw/solve.py:3: room 'gw' imports mechnb.zoo (room 'zoo')",
        "mechnb/gw/solve.py:6: room 'gw' imports mechnb.experiments (room 'experiments')",
        "mechnb/gw/solve.py:8: room 'gw' imports mechnb.zoo (room 'zoo')",
        "mechnb/zoo/build.py:2: room 'zoo' imports mechnb.gw.solve (room 'gw')",
    ]
    del table["experiments"]
    assert "mechnb/experiments.py: room 'experiments' is not in the table of rooms" in import_violations(pkg, table)


# --------------------------------------------------------------------------------------------
# file size
# --------------------------------------------------------------------------------------------

MAX_LINES = 650

#: Files allowed to be longer than MAX_LINES, each with the reason. Empty: split a long module
#: into a package of the same name instead of adding it here.
LONG_FILES_ALLOWED: dict[str, str] = {}


def test_no_module_is_longer_than_the_limit() -> None:
    too_long = {}
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and rel not in LONG_FILES_ALLOWED:
            too_long[rel] = n
    assert not too_long, (f"files in mechnb/ longer than {MAX_LINES} lines (make each a package of the same "
                          f"name, public names kept in its __init__): {too_long}")
    stale = sorted(rel for rel in LONG_FILES_ALLOWED
                   if not (ROOT / rel).exists() or len((ROOT / rel).read_text().splitlines()) <= MAX_LINES)
    assert not stale, f"LONG_FILES_ALLOWED lists files that are short now (remove them): {stale}"


# --------------------------------------------------------------------------------------------
# wording
# --------------------------------------------------------------------------------------------

TRACKER_WORD = re.compile(r"\bissues?\b", re.IGNORECASE)


def tracker_wording(source: str, path: str, is_test: bool) -> list[str]:
    """Docstrings (module, class, function) and, in tests, test names that mention a tracker item."""
    tree = ast.parse(source)
    out = []
    for node in [tree, *ast.walk(tree)]:
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node, clean=False)
        line = getattr(node, "lineno", 1)
        if doc and TRACKER_WORD.search(doc):
            out.append(f"{path}:{line}: docstring: {TRACKER_WORD.search(doc).group(0)!r}")
        name = getattr(node, "name", "")
        if is_test and name.lower().startswith("test") and TRACKER_WORD.search(name.replace("_", " ")):
            out.append(f"{path}:{line}: test name {name}")
    return sorted(set(out))


def test_tracker_wording_finds_docstrings_and_test_names() -> None:
    src = ('"""Module for issue 3."""\n'
           "class A:\n    '''Fine.'''\n"
           "def test_the_issue_goal():\n    '''Issues: none.'''\n"
           "def tissue():\n    'tissue is not the word'\n")
    assert tracker_wording(src, "t.py", is_test=True) == [
        "t.py:1: docstring: 'issue'", "t.py:4: docstring: 'Issues'", "t.py:4: test name test_the_issue_goal"]
    assert tracker_wording("def test_issue(): pass\n", "m.py", is_test=False) == []


@pytest.mark.parametrize("folder", ["mechnb", "tests"])
def test_docstrings_and_test_names_do_not_cite_tracker_items(folder: str) -> None:
    base = ROOT / folder
    found = []
    for path in sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts):
        found += tracker_wording(path.read_text(), path.relative_to(ROOT).as_posix(), is_test=folder == "tests")
    assert not found, ("say what the code does instead of which tracker item asked for it:\n  "
                       + "\n  ".join(found))
