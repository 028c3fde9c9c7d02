"""The zoo on disk: the manifest, sha256-verified checkpoints, and the atomic swap of both.

Layout of the data directory (``$MECHNB_DATA`` or ``data/``): ``manifest.json`` and one
``NAME.pt`` per entry (a ``state_dict`` saved with ``torch.save``).

Loading (:func:`load`) checks the manifest entry (``file`` inside the data directory, a sha256,
a ``config``), verifies the checkpoint's sha256, reads it with ``torch.load(weights_only=True)``
(no arbitrary object is ever unpickled), refuses NaN/inf weights and loads the state strictly.
Every failure names the file and the entry.

Writing (:func:`commit`) replaces several files (a checkpoint and the manifest) as one
transaction, so an interruption at any instant leaves either all old or all new files:

1. every new file is written to a temporary file in the data directory and fsynced;
2. a journal ``.pending.json`` listing ``[temporary, final]`` pairs is written the same way and
   moved into place with one ``os.replace`` - **the commit point**;
3. each temporary file is moved onto its final name (``os.replace``), then the journal is removed.

Before step 2 completes the old files are untouched (the temporaries are removed on an
exception). After it, the transaction is decided: whoever reads the zoo next
(:func:`resolve_pending`, called by :func:`manifest`, :func:`load` and the builder) finishes
step 3 - moving the temporaries that are still there and deleting the journal - which is
idempotent, so an interruption during the recovery itself is harmless too.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mechnb._checks import resolve_device
from mechnb.zoo.recipes import get_recipe

__all__ = ["MANIFEST", "PENDING", "ZooError", "ManifestError", "CheckpointError", "ChecksumError", "data_dir",
           "manifest", "info", "load", "commit", "resolve_pending", "sha256_file", "sha256_bytes"]

MANIFEST = "manifest.json"
PENDING = ".pending.json"

#: called with a stage name at every step of :func:`commit` (tests interrupt a build there)
_stage_hook: Callable[[str], None] | None = None


def _stage(name: str) -> None:
    if _stage_hook is not None:
        _stage_hook(name)


class ZooError(ValueError):
    """Base of the zoo's data errors (a ``ValueError``): the message names the file and the entry."""


class ManifestError(ZooError):
    """The manifest (or an entry of it) is unreadable or lacks what loading needs."""


class CheckpointError(ZooError):
    """A checkpoint file cannot be read, holds non-finite weights or does not fit its architecture."""


class ChecksumError(CheckpointError):
    """A checkpoint's sha256 differs from the one recorded in the manifest."""


def data_dir() -> Path:
    """The zoo directory: ``$MECHNB_DATA`` if set, else ``data/`` at the repository root."""
    env = os.environ.get("MECHNB_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "data"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_sha256 = sha256_file  # the name the tests and older callers use


# --------------------------------------------------------------------------------------
# The transaction
# --------------------------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_temp(directory: Path, final: str, data: bytes) -> Path:
    """Write ``data`` to a fresh fsynced temporary file next to ``final``; returns its path."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{final}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are meant to be shared
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _plain_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ManifestError(f"{what}: expected a plain file name inside the data directory, got {name!r}")
    return name


def _read_journal(directory: Path) -> list[tuple[str, str]] | None:
    path = directory / PENDING
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        pairs = json.loads(text)["replace"]
        out = [(_plain_name(t, str(path)), _plain_name(f, str(path))) for t, f in pairs]
    except (ValueError, KeyError, TypeError) as e:
        raise ManifestError(f"unfinished zoo write {path} is unreadable ({e}); delete it and rebuild with "
                            f"`python -m mechnb.zoo build`") from e
    return out


def _apply(directory: Path, pairs: list[tuple[str, str]]) -> None:
    for tmp, final in pairs:
        try:
            os.replace(directory / tmp, directory / final)
        except FileNotFoundError:
            pass  # moved already (by an earlier, interrupted run of this step)
        _stage(f"replaced {final}")
    _fsync_dir(directory)
    (directory / PENDING).unlink(missing_ok=True)
    _fsync_dir(directory)
    _stage("journal removed")


def resolve_pending(directory: Path | None = None) -> bool:
    """Finish a committed but interrupted :func:`commit` in ``directory``; True if there was one."""
    directory = Path(directory) if directory is not None else data_dir()
    pairs = _read_journal(directory)
    if pairs is None:
        return False
    try:
        _apply(directory, pairs)
    except PermissionError as e:
        raise ManifestError(f"{directory / PENDING}: an interrupted zoo build must be finished before the zoo can be "
                            f"read, and that needs write access to {directory} ({e})") from e
    return True


def commit(directory: Path, files: Mapping[str, bytes]) -> None:
    """Replace the files ``{file name: new bytes}`` in ``directory`` all together or not at all.

    See the module docstring for the protocol (temporary files, a journal as the commit point,
    recovery by :func:`resolve_pending`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    resolve_pending(directory)
    temps: list[Path] = []
    journal_tmp: Path | None = None
    try:
        for final, data in files.items():
            temps.append(_write_temp(directory, _plain_name(final, "files"), data))
            _stage(f"wrote temporary {final}")
        pairs = [[t.name, final] for t, final in zip(temps, files)]
        journal_tmp = _write_temp(directory, PENDING, json.dumps({"replace": pairs}).encode())
        _stage("wrote temporary journal")
        os.replace(journal_tmp, directory / PENDING)  # the commit point
        journal_tmp = None
    except BaseException:
        # Not committed unless the journal is in place; if it is (an interruption right after the
        # replace), roll forward instead, so the temporaries it names are never lost.
        if _read_journal(directory) is not None:
            resolve_pending(directory)
        else:
            for t in [*temps, *([journal_tmp] if journal_tmp is not None else [])]:
                t.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    _stage("committed")
    _apply(directory, [(t.name, final) for t, final in zip(temps, files)])


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------
_REBUILD = "rebuild it with `python -m mechnb.zoo build {name}`"


def manifest(directory: Path | None = None) -> dict[str, Any]:
    """The parsed ``manifest.json`` (``{"entries": {name: {...}}, ...}``), checked to be an object with entries."""
    directory = Path(directory) if directory is not None else data_dir()
    resolve_pending(directory)
    path = directory / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; build the zoo with `python -m mechnb.zoo build`")
    text = path.read_text()
    try:
        man = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"manifest {path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}; "
                            f"{len(text)} characters - truncated?); restore it (git checkout data/) or rebuild "
                            f"with `python -m mechnb.zoo build`") from e
    if not isinstance(man, dict):
        raise ManifestError(f"manifest {path}: expected a JSON object with an 'entries' object, "
                            f"got a JSON {type(man).__name__}")
    entries = man.get("entries", {})
    if not isinstance(entries, dict):
        raise ManifestError(f"manifest {path}: expected 'entries' to be an object (name -> entry), "
                            f"got a JSON {type(entries).__name__}")
    man.setdefault("entries", entries)
    return man


def info(name: str) -> dict[str, Any]:
    """The manifest entry of ``name``: config, seed, metrics, curves, sha256, file."""
    get_recipe(name)
    path = data_dir() / MANIFEST
    entries = manifest()["entries"]
    if name not in entries:
        raise KeyError(f"zoo model {name!r} is not in the manifest {path}; run `python -m mechnb.zoo build {name}`")
    entry = entries[name]
    if not isinstance(entry, dict):
        raise ManifestError(f"manifest {path}: entry {name!r} must be an object, got a JSON {type(entry).__name__}; "
                            + _REBUILD.format(name=name))
    return entry


def _checkpoint_path(name: str, entry: dict[str, Any], directory: Path) -> Path:
    mpath = directory / MANIFEST
    for key, kind in (("file", str), ("sha256", str), ("config", dict)):
        if key not in entry:
            raise ManifestError(f"manifest {mpath}: entry {name!r} has no {key!r} field; " + _REBUILD.format(name=name))
        if not isinstance(entry[key], kind):
            raise ManifestError(f"manifest {mpath}: entry {name!r} field {key!r} must be a JSON "
                                f"{'string' if kind is str else 'object'}, got {entry[key]!r}")
    sha = entry["sha256"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
        raise ManifestError(f"manifest {mpath}: entry {name!r} field 'sha256' must be 64 hex digits, got {sha!r}")
    file = entry["file"]
    root = directory.resolve()
    path = (directory / file).resolve()
    if not file or Path(file).is_absolute() or root not in path.parents:
        raise ManifestError(f"manifest {mpath}: entry {name!r} has file {file!r}, which is outside the data "
                            f"directory {root}; expected a file name inside it (e.g. '{name}.pt')")
    return directory / file


def _read_state(name: str, path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every reader failure becomes one error naming file and entry
        size = path.stat().st_size
        raise CheckpointError(f"checkpoint {path} of zoo entry {name!r} cannot be read ({size} bytes; "
                              f"{type(e).__name__}: {e}); " + _REBUILD.format(name=name)) from e
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"checkpoint {path} of zoo entry {name!r}: expected a state_dict (names -> tensors), "
                              f"got {type(state).__name__}; " + _REBUILD.format(name=name))
    for key, t in state.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int((~torch.isfinite(t)).sum()) - n_nan
            raise CheckpointError(f"checkpoint {path} of zoo entry {name!r}: tensor {key!r} has {n_nan} NaN and "
                                  f"{n_inf} inf entries; the checkpoint is broken - " + _REBUILD.format(name=name))
    return state


def load(name: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load zoo entry ``name``: returns ``(model in eval mode, manifest entry)``.

    Raises ``KeyError`` (listing valid names) for an unknown name, ``FileNotFoundError`` for a
    missing checkpoint, :class:`ManifestError` for an unusable manifest entry (no ``file`` /
    ``sha256`` / ``config``, a ``file`` outside the data directory, a config the architecture
    rejects), :class:`ChecksumError` (naming the file and both hashes) if the checkpoint does not
    match the manifest, and :class:`CheckpointError` for an unreadable, non-finite or
    mismatching checkpoint.
    """
    recipe = get_recipe(name)
    dev = resolve_device(device)
    directory = data_dir()
    entry = info(name)
    mpath = directory / MANIFEST
    path = _checkpoint_path(name, entry, directory)
    if "arch" in entry and entry["arch"] != recipe.arch:
        raise ManifestError(f"manifest {mpath}: entry {name!r} records arch {entry['arch']!r} but the recipe "
                            f"builds a {recipe.arch}; " + _REBUILD.format(name=name))
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} is missing; run `python -m mechnb.zoo build {name}`")
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise ChecksumError(
            f"checkpoint {path} has sha256 {got} but the manifest records {entry['sha256']}; "
            f"the file is corrupted or stale - rebuild it with `python -m mechnb.zoo build {name}`"
        )
    state = _read_state(name, path)
    try:
        model = recipe.model_class(**entry["config"])
    except (TypeError, ValueError) as e:
        raise ManifestError(f"manifest {mpath}: entry {name!r} has a config the {recipe.arch} rejects "
                            f"({e}): {entry['config']!r}; " + _REBUILD.format(name=name)) from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} of zoo entry {name!r} does not fit a {recipe.arch} with config "
                              f"{entry['config']}: {e}") from e
    return model.to(dev).eval(), entry
