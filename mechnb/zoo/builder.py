"""Building zoo entries: train from the recipe, evaluate, then write checkpoint + manifest atomically.

``python -m mechnb.zoo build [NAME ...]`` (:func:`main`) retrains entries. For each entry
:func:`build` first computes everything - the trained model, its manifest metrics, the bytes
of the checkpoint and the text of the new manifest - and only then swaps the checkpoint and
the manifest together with :func:`mechnb.zoo.store.commit`, so an interruption at any instant
(training, evaluation, writing) leaves both old or both new.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mechnb._checks import check_positive_int, resolve_device
from mechnb.train import TrainConfig, TrainResult, train
from mechnb.zoo import store
from mechnb.zoo.recipes import RECIPES, get_recipe, names

__all__ = ["train_entry", "build", "entry_record", "main"]


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _config(name: str, steps: int | None) -> TrainConfig:
    cfg = get_recipe(name).train
    if steps is None:
        return cfg
    return TrainConfig(**{**cfg.to_dict(), "steps": check_positive_int("steps", steps)})


def train_entry(name: str, progress: bool = True, device: str | torch.device = "cpu",
                steps: int | None = None) -> tuple[nn.Module, TrainResult]:
    """Train zoo entry ``name`` from its recipe (``steps`` overrides the recipe's step count).

    The model's initialisation is drawn from torch's global RNG seeded with the recipe's seed
    (so a rebuild reproduces the shipped checkpoint), inside :func:`torch.random.fork_rng`: the
    caller's global RNG state (CPU and CUDA) is the same before and after.
    """
    recipe = get_recipe(name)
    cfg = _config(name, steps)
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=_cuda_devices()):
        torch.manual_seed(cfg.seed)
        model = recipe.make_model()
        task = recipe.make_task()
        obj = recipe.objective(task, dev)
        result = train(model, obj.batch_fn, obj.loss_fn, cfg, eval_fn=obj.eval_fn, device=dev, progress=progress,
                       desc=name)
    return model, result


def _subsample(xs: list[float], n: int) -> list[list[float]]:
    """``[[step, value], ...]`` at about ``n`` evenly spaced steps (means over each window)."""
    if not xs:
        return []
    w = max(1, len(xs) // n)
    return [[i + w, float(sum(xs[i:i + w]) / len(xs[i:i + w]))] for i in range(0, len(xs), w)]


def _command(name: str, steps: int | None) -> str:
    return f"python -m mechnb.zoo build {name}" + (f" --steps {steps}" if steps is not None else "")


def entry_record(name: str, model: nn.Module, result: TrainResult, seconds: float, sha256: str,
                 steps: int | None = None) -> dict[str, Any]:
    """The manifest entry of ``name`` for a trained ``model`` (metrics are measured here)."""
    recipe = get_recipe(name)
    cfg = _config(name, steps)
    return {
        "file": f"{name}.pt",
        "sha256": sha256,
        "arch": recipe.arch,
        "config": recipe.model_config(model),
        "task": {"kind": recipe.task_kind, **recipe.task_kwargs},
        "train": recipe.train_record(cfg),
        "seed": cfg.seed,
        "description": recipe.description,
        "metrics": {"final_train_loss": result.final_loss, "train_seconds": round(seconds, 1),
                    **recipe.evaluate(model)},
        "curves": {"loss": _subsample(result.losses, 200), "evals": result.evals},
        "torch_version": torch.__version__.split("+")[0],
        "command": _command(name, steps),
    }


def _checkpoint_bytes(model: nn.Module) -> bytes:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _read_manifest(directory: Path) -> dict[str, Any]:
    if not (directory / store.MANIFEST).exists():
        store.resolve_pending(directory)
    if not (directory / store.MANIFEST).exists():
        return {}
    return store.manifest(directory)  # refuses (ManifestError) to overwrite an unreadable manifest


def build(which: list[str] | None = None, progress: bool = True, directory: Path | None = None,
          steps: int | None = None) -> dict[str, Any]:
    """Retrain the named entries (default: all) and rewrite their checkpoints and the manifest.

    Per entry: train, evaluate, serialise the checkpoint and the new manifest, then replace both
    in one transaction (:func:`mechnb.zoo.store.commit`). ``steps`` overrides every recipe's step
    count (a quick smoke build; the manifest then records the steps used and the command).
    Returns the new manifest.
    """
    directory = Path(directory) if directory is not None else store.data_dir()
    todo = names() if not which else [get_recipe(n, "which").name for n in which]
    if steps is not None:
        check_positive_int("steps", steps)
    man = _read_manifest(directory)
    for name in todo:
        t0 = time.perf_counter()
        model, result = train_entry(name, progress=progress, steps=steps)
        seconds = time.perf_counter() - t0
        store._stage("trained")
        ckpt = _checkpoint_bytes(model)
        record = entry_record(name, model, result, seconds, store.sha256_bytes(ckpt), steps)
        store._stage("evaluated")
        new = {**man, "format": man.get("format", 1), "regenerate": "python -m mechnb.zoo build [NAME ...]",
               "entries": {**man.get("entries", {}), name: record}}
        payload = json.dumps(new, indent=1, sort_keys=True).encode() + b"\n"
        store.commit(directory, {record["file"]: ckpt, store.MANIFEST: payload})
        man = new
        if progress:
            print(f"built {name} in {seconds:.1f}s: {record['metrics']}", file=sys.stderr)
    return man


def main(argv: list[str] | None = None) -> int:
    """The command line: ``python -m mechnb.zoo build [NAME ...] [--steps N]`` and ``python -m mechnb.zoo list``."""
    parser = argparse.ArgumentParser(prog="python -m mechnb.zoo", description="The mechnb model zoo.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="retrain entries and rewrite their checkpoints and the manifest")
    b.add_argument("names", nargs="*", help=f"entries to build (default: all of {', '.join(names())})")
    b.add_argument("--steps", type=int, default=None, help="override every recipe's step count (smoke builds)")
    sub.add_parser("list", help="list entries and their descriptions")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        try:
            build(args.names or None, steps=args.steps)
        except (KeyError, ValueError) as e:
            parser.error(str(e).strip("'\""))
        except KeyboardInterrupt:
            store.resolve_pending(store.data_dir())  # finish a swap that was already committed
            print("zoo build interrupted: every entry has either its old or its new checkpoint and manifest "
                  "entry, never a mix", file=sys.stderr)
            return 130
    else:
        for n in names():
            print(f"{n:12s} {RECIPES[n].description}")
    return 0

