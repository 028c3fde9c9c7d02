"""Which types :mod:`mechnb.io` may write and rebuild: the registry behind :func:`saveable`.

A result class opts in with one decorator line in its own module::

    from mechnb.io import saveable

    @saveable()                      # name "EdgeScores", type version 1
    @dataclass
    class EdgeScores: ...

A registered **dataclass** is stored field by field (its ``init`` fields; see :mod:`.codec` for
the values a field may hold) and rebuilt with ``cls(**fields)``, so its ``__post_init__``
checks run on every load. A class that is not a dataclass (or needs a different layout)
defines the pair::

    def to_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...   # tensors, metadata
    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Self: ...

``meta`` may hold anything a dataclass field may hold (tuples, NaN, nested saveable objects).

Only registered types are ever constructed on load. The file records the type's name, its
version and the package that registers it (``"mechnb.circuits"``); when that type has not been
registered yet in this process, :func:`lookup` imports that package - the one dynamic import
of :mod:`mechnb.io`, restricted to module names under ``mechnb.`` - and looks again.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from mechnb._linalg import RankDecision

__all__ = ["SaveableType", "saveable", "register", "lookup", "entry_for", "entry_of_class", "saveable_types", "UnknownTypeError"]

T = TypeVar("T", bound=type)

_MODULE_NAME = re.compile(r"mechnb(\.[A-Za-z_][A-Za-z0-9_]*)+")
_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UnknownTypeError(LookupError):
    """A type name that no registered class carries (even after importing its package)."""


@dataclass(frozen=True)
class SaveableType:
    """One registered type: its file name ``name``, ``version``, the class and how it is stored.

    ``package`` is the module that registers it when imported (the class's top-level mechnb
    package, e.g. ``"mechnb.circuits"``), recorded in every file so that :func:`lookup` can
    import it. ``custom``: the class defines ``to_state`` / ``from_state`` (else it is a dataclass
    stored field by field).
    """

    name: str
    version: int
    cls: type
    package: str
    custom: bool

    @property
    def qualname(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


_BY_NAME: dict[str, SaveableType] = {}
_BY_CLASS: dict[type, SaveableType] = {}


def _package_of(cls: type) -> str:
    """``mechnb.circuits.attribution`` -> ``mechnb.circuits``: the package whose import registers ``cls``."""
    parts = cls.__module__.split(".")
    if parts[0] != "mechnb" or len(parts) < 2:
        raise ValueError(f"cls: expected a class defined in a mechnb module, got {cls.__module__}.{cls.__qualname__}")
    return ".".join(parts[:2])


def register(cls: type, name: str | None = None, *, version: int = 1) -> type:
    """Register ``cls`` under ``name`` (default: its class name) with type ``version``; returns ``cls``.

    Raises ``TypeError`` unless ``cls`` is a dataclass or defines ``to_state`` and a classmethod
    ``from_state``, ``ValueError`` for a bad name or version, or a name another class holds.
    Registering the same class again (a reloaded module) replaces the entry.
    """
    if not isinstance(cls, type):
        raise TypeError(f"cls: expected a class, got {type(cls).__name__}")
    name = cls.__name__ if name is None else name
    if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
        raise ValueError(f"name: expected a Python identifier, got {name!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version: expected an int >= 1, got {version!r}")
    custom = callable(getattr(cls, "to_state", None)) and callable(getattr(cls, "from_state", None))
    if not custom and not dataclasses.is_dataclass(cls):
        raise TypeError(f"cls: {cls.__qualname__} is neither a dataclass nor defines to_state() and from_state()")
    entry = SaveableType(name, version, cls, _package_of(cls), custom)
    old = _BY_NAME.get(name)
    if old is not None and old.qualname != entry.qualname:
        raise ValueError(f"name: {name!r} is already registered for {old.qualname}, cannot register {entry.qualname}")
    _BY_NAME[name] = entry
    _BY_CLASS[cls] = entry
    return cls


def saveable(name: str | type | None = None, *, version: int = 1) -> Any:
    """Class decorator: make a result type writable by :func:`mechnb.io.save` (see :func:`register`).

    ``@saveable()``, ``@saveable`` and ``@saveable("Name", version=2)`` all work. Bump ``version``
    when the stored layout changes incompatibly: files of another version are then refused with a
    message naming both versions.
    """
    if isinstance(name, type):  # used bare: @saveable
        return register(name, version=version)

    def deco(cls: T) -> T:
        register(cls, name, version=version)
        return cls

    return deco


def entry_for(obj: Any) -> SaveableType | None:
    """The registry entry of ``type(obj)`` (exact type), or ``None``."""
    return _BY_CLASS.get(type(obj))


def entry_of_class(cls: type) -> SaveableType | None:
    """The registry entry of class ``cls``, or ``None``."""
    return _BY_CLASS.get(cls)


def lookup(name: str, package: str | None = None) -> SaveableType:
    """The entry registered as ``name``, importing ``package`` first if it is not registered yet.

    Raises :class:`UnknownTypeError` when ``name`` stays unknown, ``ValueError`` when ``package``
    is not a module name under ``mechnb.``.
    """
    if name in _BY_NAME:
        return _BY_NAME[name]
    if package is not None:
        if not isinstance(package, str) or not _MODULE_NAME.fullmatch(package):
            raise ValueError(f"package: expected a module name under mechnb., got {package!r}")
        try:
            importlib.import_module(package)  # registers the package's saveable types
        except ImportError as e:
            raise UnknownTypeError(f"type {name!r}: its package {package} cannot be imported ({e})") from None
        if name in _BY_NAME:
            return _BY_NAME[name]
    raise UnknownTypeError(f"type {name!r} is not a saveable type of this mechnb"
                           + (f" (not registered by {package})" if package else "")
                           + f"; known: {sorted(_BY_NAME)}")


def saveable_types() -> dict[str, SaveableType]:
    """Every type registered so far, by name (the method packages register theirs when imported)."""
    return dict(_BY_NAME)


# Ground-floor types that results hold: registered here, since ``mechnb._linalg`` sits below io.
register(RankDecision)
