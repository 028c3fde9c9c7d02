"""The two files of a saved result, written atomically and verified on every load.

``save(result, "runs/eap")`` writes

* ``runs/eap.<h>.safetensors`` - every tensor of the result (``<h>``: the first 16 hex digits
  of the file's sha256, so a new save never overwrites the tensors an old metadata file names);
* ``runs/eap.json`` - the metadata: ``format``, ``schema_version``, ``mechnb_version``,
  ``torch_version``, ``type`` / ``type_version`` / ``type_package``, ``tensor_file``,
  ``tensor_bytes``, ``tensor_sha256``, the ``result`` tree (:mod:`.codec`) and
  ``metadata_sha256``, the sha256 of the canonical JSON (sorted keys, no spaces) of every
  other key, so an edit anywhere in the metadata is detected too.

**Atomicity.** Both files are written to temporary files in the target directory and fsynced;
the tensor file is moved onto its content-addressed name, then the metadata onto ``NAME.json``
with one ``os.replace`` - the commit point. Before it, ``NAME.json`` still names the old tensor
file, which is untouched; after it, the new pair is complete. Only then are the old tensor files
of ``NAME`` removed. An interruption at any instant leaves the old result or the new one
(at worst plus an orphaned ``NAME.<h>.safetensors``, removed by the next save of ``NAME``).

**Loading** reads the JSON and checks, in order: it parses (a truncated file does not), its
format, the schema version, the metadata checksum, the mechnb version (a newer major version is
refused), the type (registered; the one asked for), its type version, then the tensor file's
name (next to the JSON), presence, size and sha256, and parses it with safetensors (no pickle
anywhere). Every failure is a :class:`ResultFileError` naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from mechnb import __version__
from mechnb._checks import resolve_device
from mechnb.io.codec import Decoder, Encoder
from mechnb.io.registry import SaveableType, UnknownTypeError, entry_for, entry_of_class, lookup, saveable_types

__all__ = ["FORMAT", "SCHEMA_VERSION", "ResultFileError", "save", "load", "read_metadata", "result_paths"]

FORMAT = "mechnb.io/result"
SCHEMA_VERSION = 1
_HEX16 = "[0-9a-f]{16}"


class ResultFileError(ValueError):
    """A result file that cannot be loaded: missing, truncated, edited, corrupted or of another type.

    ``path`` is the file at fault (the JSON metadata or its tensor file).
    """

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


# --------------------------------------------------------------------------------------
# paths and hashes
# --------------------------------------------------------------------------------------
def _json_path(path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if p.name in ("", ".", ".."):
        raise ValueError(f"path: expected a file name, got {str(path)!r}")
    return p if p.suffix == ".json" else p.with_name(p.name + ".json")


def result_paths(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(metadata file, tensor file)`` of the result at ``path`` (``None`` when no metadata exists yet).

    ``path`` may name the JSON file or leave out its ``.json`` suffix.
    """
    jpath = _json_path(path)
    if not jpath.is_file():
        return jpath, None
    try:
        name = json.loads(jpath.read_text(encoding="utf-8")).get("tensor_file")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return jpath, None
    return jpath, (jpath.parent / name if isinstance(name, str) and _plain_name(name) else None)


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _metadata_sha(doc: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in doc.items() if k != "metadata_sha256"})).hexdigest()


def _major(version: Any) -> int | None:
    m = re.fullmatch(r"(\d+)\.(\d+)(\.\d+)?([.+-]?[0-9A-Za-z.+-]*)?", version) if isinstance(version, str) else None
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def _write_temp(directory: Path, final_name: str, data: bytes) -> Path:
    """``data`` in a fresh fsynced temporary file in ``directory``; returns its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final_name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _stale_tensor_files(directory: Path, stem: str, keep: str) -> list[Path]:
    pattern = re.compile(re.escape(stem) + r"\." + _HEX16 + r"\.safetensors")
    return [p for p in directory.iterdir() if pattern.fullmatch(p.name) and p.name != keep]


def save(result: Any, path: str | os.PathLike) -> Path:
    """Write ``result`` to ``path`` (``NAME`` or ``NAME.json``) and ``NAME.<h>.safetensors``; returns the JSON path.

    ``result`` is an instance of a registered type (:func:`mechnb.io.saveable_types`; e.g.
    ``EdgeScores``, ``Circuit``, ``TuneResult``, ``LayerMatrix``, ``SPDResult``, ``LLCResult``,
    ``DegeneracyReport``, ``InteractionBasis``). Tensors are stored on the CPU with their dtype.
    The write is atomic (see the module docstring); missing parent directories are created.

    Raises ``TypeError`` for an unregistered result or a value inside it that cannot be stored
    (naming where it sits, e.g. ``result.config['loss']``), before anything is written.
    """
    from safetensors.torch import save as st_save

    entry = entry_for(result)
    if entry is None:
        raise TypeError(f"result: expected an instance of a type registered with mechnb.io.saveable "
                        f"({sorted(saveable_types())}), got {type(result).__module__}.{type(result).__qualname__}")
    jpath = _json_path(path)
    enc = Encoder()
    tree = enc.encode(result)
    blob = st_save(enc.tensors, metadata={"format": FORMAT})  # one key: safetensors' header order is not fixed
    sha = hashlib.sha256(blob).hexdigest()
    stem = jpath.name[: -len(".json")]
    tname = f"{stem}.{sha[:16]}.safetensors"
    doc: dict[str, Any] = {
        "format": FORMAT, "schema_version": SCHEMA_VERSION, "mechnb_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "type": entry.name, "type_version": entry.version, "type_package": entry.package,
        "tensor_file": tname, "tensor_bytes": len(blob), "tensor_sha256": sha, "result": tree,
    }
    doc["metadata_sha256"] = _metadata_sha(doc)
    text = json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n"

    directory = jpath.parent
    directory.mkdir(parents=True, exist_ok=True)
    tpath = directory / tname
    existed = tpath.exists()
    tmp_t = tmp_j = None
    try:
        tmp_t = _write_temp(directory, tname, blob)
        tmp_j = _write_temp(directory, jpath.name, text.encode("utf-8"))
        os.replace(tmp_t, tpath)
        tmp_t = None
        os.replace(tmp_j, jpath)  # the commit point
        tmp_j = None
    except BaseException:
        for tmp in (tmp_t, tmp_j):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        if not existed and tmp_t is None and tmp_j is not None:  # our new tensor file, never committed
            tpath.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    for old in _stale_tensor_files(directory, stem, keep=tname):
        old.unlink(missing_ok=True)
    return jpath


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
def _read_doc(jpath: Path) -> dict[str, Any]:
    """The parsed metadata of ``jpath`` after the format, schema, checksum and version checks."""
    if not jpath.is_file():
        raise ResultFileError(jpath, "no such result file (save writes NAME.json next to NAME.<hash>.safetensors)")
    raw = jpath.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ResultFileError(jpath, f"not a mechnb result file: not UTF-8 text ({e.reason} at byte {e.start})"
                              ) from None
    except json.JSONDecodeError as e:
        raise ResultFileError(jpath, f"not a mechnb result file: not valid JSON ({e.msg} at line {e.lineno} column "
                                     f"{e.colno}); the file is truncated or was not written by mechnb.io.save") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ResultFileError(jpath, f'not a mechnb result file (expected a JSON object with "format": "{FORMAT}")')
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ResultFileError(jpath, f"schema version {doc.get('schema_version')!r}; this mechnb ({__version__}) "
                                     f"reads schema version {SCHEMA_VERSION}")
    want = doc.get("metadata_sha256")
    got = _metadata_sha(doc) if isinstance(want, str) else None
    if got != want:
        raise ResultFileError(jpath, f"the metadata was edited or corrupted after it was written (metadata_sha256 "
                                     f"records {want!r}, the content hashes to {got})")
    major = _major(doc.get("mechnb_version"))
    if major is None:
        raise ResultFileError(jpath, f"mechnb_version {doc.get('mechnb_version')!r} is not a version number")
    if major > (_major(__version__) or 0):
        raise ResultFileError(jpath, f"written by mechnb {doc['mechnb_version']}, a newer major version than this "
                                     f"mechnb {__version__}; upgrade mechnb to read it")
    return doc


def _expected_entry(expected_type: Any) -> SaveableType | None:
    if expected_type is None:
        return None
    if isinstance(expected_type, str):
        try:
            return lookup(expected_type)
        except UnknownTypeError as e:
            raise ValueError(f"expected_type: {e}") from None
    found = entry_of_class(expected_type) if isinstance(expected_type, type) else None
    if found is None:
        raise TypeError(f"expected_type: expected a type registered with mechnb.io.saveable or its name, "
                        f"got {expected_type!r}")
    return found


def _type_entry(jpath: Path, doc: dict[str, Any], expected: SaveableType | None) -> SaveableType:
    name, package = doc.get("type"), doc.get("type_package")
    try:
        entry = lookup(str(name), package if isinstance(package, str) else None)
    except (UnknownTypeError, ValueError) as e:
        raise ResultFileError(jpath, str(e)) from None
    if expected is not None and entry.name != expected.name:
        raise ResultFileError(jpath, f"holds a {entry.name}, expected a {expected.name}")
    if doc.get("type_version") != entry.version:
        raise ResultFileError(jpath, f"{entry.name} type version {doc.get('type_version')!r}; this mechnb "
                                     f"({__version__}) reads {entry.name} version {entry.version}")
    return entry


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The verified metadata of the result at ``path`` (every JSON check of :func:`load`, no tensors read)."""
    return _read_doc(_json_path(path))


def _read_tensors(jpath: Path, doc: dict[str, Any]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    name = doc.get("tensor_file")
    if not isinstance(name, str) or not _plain_name(name) or not name.endswith(".safetensors"):
        raise ResultFileError(jpath, f"tensor_file {name!r} is not the name of a .safetensors file next to it")
    tpath = jpath.parent / name
    if not tpath.is_file():
        raise ResultFileError(tpath, f"the tensor file of {jpath.name} is missing")
    blob = tpath.read_bytes()
    if len(blob) != doc.get("tensor_bytes"):
        raise ResultFileError(tpath, f"has {len(blob)} bytes, {jpath.name} records {doc.get('tensor_bytes')!r}: "
                                     "the file is truncated or was replaced")
    sha = hashlib.sha256(blob).hexdigest()
    if sha != doc.get("tensor_sha256"):
        raise ResultFileError(tpath, f"has sha256 {sha}, {jpath.name} records {doc.get('tensor_sha256')!r}: "
                                     "the file is corrupted or was replaced")
    try:
        return st_load(blob)
    except SafetensorError as e:
        raise ResultFileError(tpath, f"not a readable safetensors file ({e})") from None


def load(path: str | os.PathLike, expected_type: Any = None, *, device: str | torch.device = "cpu") -> Any:
    """Read the result saved at ``path`` (``NAME`` or ``NAME.json``) and rebuild it on ``device``.

    ``expected_type``: a registered class (``EdgeScores``) or its name; a file holding another
    type is refused. Loading never unpickles: tensors come from safetensors, everything else from
    JSON, and only registered types are constructed (their package is imported if needed).

    Raises :class:`ResultFileError` (a ``ValueError``) naming the file for a missing, truncated,
    edited or corrupted file, another schema / type version, an unknown type or one that is not
    ``expected_type``.
    """
    jpath = _json_path(path)
    dev = resolve_device(device)
    expected = _expected_entry(expected_type)
    doc = _read_doc(jpath)
    entry = _type_entry(jpath, doc, expected)
    tensors = _read_tensors(jpath, doc)
    tree = doc.get("result")
    if not isinstance(tree, dict) or tree.get("$object") != entry.name:
        raise ResultFileError(jpath, f"its result tree is not a {entry.name} object")
    dec = Decoder(tensors, dev)
    try:
        obj = dec.decode(tree)
    except (UnknownTypeError, ValueError) as e:
        raise ResultFileError(jpath, f"cannot rebuild the {entry.name}: {e}") from None
    unused = sorted(set(tensors) - dec.used)
    if unused:
        raise ResultFileError(jpath, f"its tensor file holds tensors the metadata does not name: {unused[:5]}")
    return obj
