"""A result as a JSON tree plus a flat dict of tensors, and back - never through pickle.

Values and their JSON form (a dict whose first key starts with ``$`` is a tag):

=========================================  ==========================================================
value                                      stored as
=========================================  ==========================================================
``None``, ``bool``, ``int``, ``str``       themselves
finite ``float``                           itself (Python writes the shortest repr that reads back)
``nan``, ``inf``, ``-inf``                 ``{"$float": "nan"}`` (the JSON stays strict)
``list``                                   a list
``tuple``                                  ``{"$tuple": [...]}``
``dict`` with ``str`` keys                 an object (``{"$dict": [[key, value], ...]}`` when a key
                                           is not a ``str`` or starts with ``$``)
numpy scalar (bool, int, float)            ``{"$numpy": "float64", "value": ...}``
``torch.dtype``                            ``{"$dtype": "float32"}``
``torch.Tensor``                           ``{"$tensor": key}``, the tensor in the safetensors file
``numpy.ndarray``                          ``{"$ndarray": key}`` (a tensor of the same dtype)
registered type (:func:`.saveable`)        ``{"$object": name, "version", "package", "fields"}``
                                           (dataclass) or ``... "tensors", "meta"`` (``to_state``)
mechnb architecture (:mod:`.modules`)      ``{"$module": class, "config", "state", "flags"}``
=========================================  ==========================================================

Tensor keys are the dotted path of the value in the result (``"scores"``,
``"model.blocks.0.attn.W_Q"``); a tensor object met twice is stored once. Anything else is
refused at save time with a ``TypeError`` naming where in the result it sits.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from mechnb.io.modules import build_module, module_config, module_flags, module_state, restore_flags
from mechnb.io.registry import entry_for, lookup

__all__ = ["Encoder", "Decoder"]

_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_NUMPY_KINDS = "biuf"  # numpy scalar kinds stored in JSON: bool, int, unsigned, float


def _float_tag(x: float) -> Any:
    if math.isfinite(x):
        return x
    return {"$float": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}


def _join(key: str, part: str) -> str:
    return f"{key}.{part}" if key else part


def _describe(x: Any) -> str:
    return f"{type(x).__module__}.{type(x).__qualname__}"


class Encoder:
    """Turns a result into ``(tree, tensors)``; :meth:`encode` raises ``TypeError`` naming the bad value."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._seen: dict[int, tuple[str, Any]] = {}  # id(tensor) -> (key, tensor kept alive)
        self._active: set[int] = set()  # objects being encoded (cycle check)

    # -- tensors ----------------------------------------------------------------------
    def _tensor(self, t: torch.Tensor, where: str, key: str) -> str:
        if id(t) in self._seen:
            return self._seen[id(t)][0]
        if t.layout != torch.strided or t.is_quantized or t.is_meta:
            raise TypeError(f"{where}: a {t.layout} / quantized / meta tensor cannot be saved; save a dense tensor")
        k = key or "value"
        n = 1
        while k in self.tensors:
            k, n = f"{key}#{n}", n + 1
        self.tensors[k] = t.detach().cpu().contiguous().clone()
        self._seen[id(t)] = (k, t)
        return k

    def _array(self, a: np.ndarray, where: str, key: str) -> str:
        if a.dtype.kind not in "biufc" or not a.dtype.isnative:
            raise TypeError(f"{where}: a numpy array of dtype {a.dtype} cannot be saved (numeric, native byte order)")
        k = self._tensor(torch.from_numpy(np.ascontiguousarray(a)), where, key)
        self._seen[id(a)] = (k, a)
        return k

    # -- values -----------------------------------------------------------------------
    def encode(self, x: Any, where: str = "result", key: str = "") -> Any:
        """The JSON form of ``x`` (``where``: its place in the result, for messages; ``key``: tensor key)."""
        if x is None or isinstance(x, (bool, str)):
            return x
        if isinstance(x, np.generic):
            if x.dtype.kind not in _NUMPY_KINDS:
                raise TypeError(f"{where}: a numpy scalar of dtype {x.dtype} cannot be saved")
            value = x.item()
            return {"$numpy": x.dtype.name, "value": _float_tag(value) if isinstance(value, float) else value}
        if isinstance(x, int):
            return int(x)
        if isinstance(x, float):
            return _float_tag(float(x))
        if isinstance(x, torch.Tensor):
            return {"$tensor": self._tensor(x, where, key)}
        if isinstance(x, np.ndarray):
            if id(x) in self._seen:
                return {"$ndarray": self._seen[id(x)][0]}
            return {"$ndarray": self._array(x, where, key)}
        if isinstance(x, torch.dtype):
            return {"$dtype": str(x).removeprefix("torch.")}
        if type(x) is list:
            return [self.encode(v, f"{where}[{i}]", _join(key, str(i))) for i, v in enumerate(x)]
        if type(x) is tuple:
            return {"$tuple": [self.encode(v, f"{where}[{i}]", _join(key, str(i))) for i, v in enumerate(x)]}
        if type(x) is dict:
            return self._dict(x, where, key)
        entry = entry_for(x)
        if entry is not None:
            return self._object(x, entry, where, key)
        if isinstance(x, nn.Module):
            return self._module(x, where, key)
        raise TypeError(f"{where}: a {_describe(x)} cannot be saved; mechnb.io stores numbers, strings, lists, "
                        "tuples, dicts, tensors, numpy arrays, mechnb models and types registered with "
                        "mechnb.io.saveable")

    def _dict(self, x: dict, where: str, key: str) -> Any:
        if all(isinstance(k, str) and not k.startswith("$") for k in x):
            return {k: self.encode(v, f"{where}[{k!r}]", _join(key, k)) for k, v in x.items()}
        items = []
        for k, v in x.items():
            if not (k is None or isinstance(k, (bool, int, float, str, tuple, np.generic))):
                raise TypeError(f"{where}: a dict key of type {_describe(k)} cannot be saved")
            items.append([self.encode(k, f"{where} key {k!r}", ""), self.encode(v, f"{where}[{k!r}]", _join(key, str(k)))])
        return {"$dict": items}

    def _enter(self, x: Any, where: str) -> None:
        if id(x) in self._active:
            raise TypeError(f"{where}: the result contains itself (a reference cycle); it cannot be saved")
        self._active.add(id(x))

    def _object(self, x: Any, entry: Any, where: str, key: str) -> dict[str, Any]:
        self._enter(x, where)
        try:
            out: dict[str, Any] = {"$object": entry.name, "version": entry.version, "package": entry.package}
            if entry.custom:
                tensors, meta = x.to_state()
                if not isinstance(tensors, dict) or not all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                                            for k, t in tensors.items()):
                    raise TypeError(f"{where}: {entry.name}.to_state() must return (dict[str, Tensor], dict), "
                                    f"got {type(tensors).__name__} as the tensors")
                if not isinstance(meta, dict):
                    raise TypeError(f"{where}: {entry.name}.to_state() must return a dict as the metadata, "
                                    f"got {type(meta).__name__}")
                out["tensors"] = {k: {"$tensor": self._tensor(t, f"{where}.to_state()[{k!r}]", _join(key, k))}
                                  for k, t in tensors.items()}
                out["meta"] = self.encode(meta, f"{where}.to_state() metadata", _join(key, "meta"))
            else:
                out["fields"] = {f.name: self.encode(getattr(x, f.name), f"{where}.{f.name}", _join(key, f.name))
                                 for f in dataclasses.fields(x) if f.init}
            if isinstance(x, nn.Module):
                out["flags"] = module_flags(x)
            return out
        finally:
            self._active.discard(id(x))

    def _module(self, x: nn.Module, where: str, key: str) -> dict[str, Any]:
        found = module_config(x)
        if found is None:
            raise TypeError(f"{where}: a {_describe(x)} cannot be saved; mechnb.io saves the mechnb.models "
                            "architectures (TinyTransformer, TMS, ResidualMLP, MLP) and modules registered with "
                            "mechnb.io.saveable that define to_state() / from_state()")
        name, config = found
        state, flags = module_state(x)
        return {"$module": name, "config": self.encode(config, f"{where} config", ""),
                "state": {k: {"$tensor": self._tensor(t, f"{where}.{k}", _join(key, k))} for k, t in state.items()},
                "flags": flags}


class Decoder:
    """Rebuilds a result from ``(tree, tensors)``; raises ``ValueError`` naming the bad place in the tree."""

    def __init__(self, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
        self.tensors = tensors
        self.device = device
        self.used: set[str] = set()

    def _tensor(self, ref: Any, where: str) -> torch.Tensor:
        if not isinstance(ref, str) or ref not in self.tensors:
            raise ValueError(f"{where}: tensor {ref!r} is not in the tensor file")
        self.used.add(ref)
        return self.tensors[ref].to(self.device)

    def _tagged(self, x: dict[str, Any], tag: str, keys: set[str], where: str) -> None:
        if set(x) != keys:
            raise ValueError(f"{where}: a {tag} entry has keys {sorted(x)}, expected {sorted(keys)}")

    def decode(self, x: Any, where: str = "result") -> Any:
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, list):
            return [self.decode(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if not isinstance(x, dict):
            raise ValueError(f"{where}: unexpected JSON value of type {type(x).__name__}")
        tag = next((k for k in x if k.startswith("$")), None)
        if tag is None:
            return {k: self.decode(v, f"{where}[{k!r}]") for k, v in x.items()}
        if tag == "$tensor":
            self._tagged(x, tag, {"$tensor"}, where)
            return self._tensor(x["$tensor"], where)
        if tag == "$ndarray":
            self._tagged(x, tag, {"$ndarray"}, where)
            ref = x["$ndarray"]
            if not isinstance(ref, str) or ref not in self.tensors:
                raise ValueError(f"{where}: tensor {ref!r} is not in the tensor file")
            self.used.add(ref)
            return self.tensors[ref].numpy()
        if tag == "$float":
            self._tagged(x, tag, {"$float"}, where)
            if x["$float"] not in _FLOATS:
                raise ValueError(f"{where}: $float must be one of {sorted(_FLOATS)}, got {x['$float']!r}")
            return _FLOATS[x["$float"]]
        if tag == "$numpy":
            self._tagged(x, tag, {"$numpy", "value"}, where)
            try:
                dtype = np.dtype(x["$numpy"])
            except TypeError:
                raise ValueError(f"{where}: unknown numpy dtype {x['$numpy']!r}") from None
            if dtype.kind not in _NUMPY_KINDS:
                raise ValueError(f"{where}: numpy dtype {dtype} is not a stored scalar kind")
            return dtype.type(self.decode(x["value"], where))
        if tag == "$dtype":
            self._tagged(x, tag, {"$dtype"}, where)
            dt = getattr(torch, str(x["$dtype"]), None)
            if not isinstance(dt, torch.dtype):
                raise ValueError(f"{where}: {x['$dtype']!r} is not a torch dtype")
            return dt
        if tag == "$tuple":
            self._tagged(x, tag, {"$tuple"}, where)
            return tuple(self.decode(v, f"{where}[{i}]") for i, v in enumerate(self._list(x["$tuple"], where)))
        if tag == "$dict":
            self._tagged(x, tag, {"$dict"}, where)
            out = {}
            for i, pair in enumerate(self._list(x["$dict"], where)):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ValueError(f"{where}: $dict item {i} must be a [key, value] pair")
                out[self.decode(pair[0], f"{where} key {i}")] = self.decode(pair[1], f"{where}[item {i}]")
            return out
        if tag == "$object":
            return self._object(x, where)
        if tag == "$module":
            return self._module(x, where)
        raise ValueError(f"{where}: unknown tag {tag!r}")

    @staticmethod
    def _flags(flags: Any, where: str) -> dict[str, Any]:
        if (not isinstance(flags, dict) or set(flags) != {"training", "frozen"} or not isinstance(flags["frozen"], list)
                or not all(isinstance(k, str) for k in flags["frozen"])):
            raise ValueError(f"{where}: flags must be {{'training': bool, 'frozen': [names]}}, got {flags!r}")
        return flags

    @staticmethod
    def _obj(x: Any, where: str) -> dict:
        if not isinstance(x, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(x).__name__}")
        return x

    @staticmethod
    def _list(x: Any, where: str) -> list:
        if not isinstance(x, list):
            raise ValueError(f"{where}: expected a JSON list, got {type(x).__name__}")
        return x

    def _object(self, x: dict[str, Any], where: str) -> Any:
        name, version, package = x.get("$object"), x.get("version"), x.get("package")
        entry = lookup(str(name), package if isinstance(package, str) else None)
        if version != entry.version:
            raise ValueError(f"{where}: {entry.name} was written as type version {version!r}, this mechnb reads "
                             f"version {entry.version}")
        if entry.custom:
            self._tagged(x, "$object", {"$object", "version", "package", "tensors", "meta"}
                         | ({"flags"} if "flags" in x else set()), where)
            tensors = {k: self.decode(v, f"{where}.tensors[{k!r}]") for k, v in self._obj(x["tensors"], where).items()}
            if not all(isinstance(t, torch.Tensor) for t in tensors.values()):
                raise ValueError(f"{where}: the tensors of a {entry.name} must all be $tensor entries")
            meta = self.decode(x["meta"], f"{where}.meta")
            try:
                with torch.random.fork_rng(devices=[]):
                    obj = entry.cls.from_state(tensors, meta)
            except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as e:
                raise ValueError(f"{where}: {entry.name}.from_state failed: {type(e).__name__}: {e}") from None
        else:
            self._tagged(x, "$object", {"$object", "version", "package", "fields"}
                         | ({"flags"} if "flags" in x else set()), where)
            obj = self._dataclass(entry, x["fields"], where)
        if isinstance(obj, nn.Module) and "flags" in x:
            try:
                restore_flags(obj.to(self.device), self._flags(x["flags"], where))
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        return obj

    def _dataclass(self, entry: Any, fields: Any, where: str) -> Any:
        if not isinstance(fields, dict):
            raise ValueError(f"{where}: fields must be a JSON object")
        known = {f.name for f in dataclasses.fields(entry.cls) if f.init}
        extra = sorted(set(fields) - known)
        if extra:
            raise ValueError(f"{where}: {extra} are not fields of {entry.name} in this mechnb")
        kwargs = {k: self.decode(v, f"{where}.{k}") for k, v in fields.items()}
        try:
            with torch.random.fork_rng(devices=[]):
                return entry.cls(**kwargs)
        except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as e:
            raise ValueError(f"{where}: {entry.name} could not be rebuilt from the stored fields: {e}") from None

    def _module(self, x: dict[str, Any], where: str) -> nn.Module:
        self._tagged(x, "$module", {"$module", "config", "state", "flags"}, where)
        config = self._obj(self.decode(x["config"], f"{where} config"), f"{where} config")
        state = {k: self._tensor(v.get("$tensor") if isinstance(v, dict) else None, f"{where}.{k}")
                 for k, v in self._obj(x["state"], where).items()}
        flags = self._flags(x["flags"], where)
        try:
            return build_module(str(x["$module"]), config, state, flags).to(self.device)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
