"""The model zoo: small models trained by mechnb itself, shipped as checkpoints in ``data/``.

>>> from mechnb import zoo
>>> zoo.names()
['modadd-mlp', 'resid-mlp-1', 'tiny-lm', 'tms-40-10', 'tms-5-2']
>>> model, info = zoo.load("tms-5-2")          # verified against data/manifest.json
>>> task = zoo.task_for("tms-5-2")             # the data the model was trained on

Every entry is described by a :class:`Recipe` (architecture, task, training config, seed).
``python -m mechnb.zoo build [NAME ...]`` retrains entries and rewrites their checkpoints and
``data/manifest.json`` (config, seed, training metrics and curves, sha256). Writes are atomic
(temporary file + ``os.replace``), so an interrupted build leaves the old checkpoint intact.
Loading verifies the sha256 first and uses ``torch.load(..., weights_only=True)``, so no
arbitrary object is ever unpickled.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mechnb._checks import resolve_device
from mechnb.models import MLP, TMS, ResidualMLP, TinyTransformer
from mechnb.tasks import ModularArithmetic, SparseFeatures, SyntheticLanguage
from mechnb.train import TrainConfig, TrainResult, cross_entropy_loss, train

__all__ = ["names", "load", "task_for", "build", "info", "manifest", "data_dir", "ChecksumError", "RECIPES",
           "evaluate", "tms_feature_geometry", "lm_behaviour", "occupation_pronoun_probs", "lm_loss"]

MANIFEST = "manifest.json"


class ChecksumError(ValueError):
    """A checkpoint's sha256 differs from the one recorded in the manifest."""


def data_dir() -> Path:
    """The zoo directory: ``$MECHNB_DATA`` if set, else ``data/`` at the repository root."""
    env = os.environ.get("MECHNB_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


# --------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------
@dataclass
class Recipe:
    """How one zoo entry is built: architecture + kwargs, task + kwargs, training config."""

    name: str
    arch: str
    model_kwargs: dict[str, Any]
    task_kind: str
    task_kwargs: dict[str, Any]
    train: TrainConfig
    batch_size: int
    description: str
    extra: dict[str, Any] = field(default_factory=dict)


_ARCHS: dict[str, Callable[..., nn.Module]] = {
    "TMS": TMS,
    "ResidualMLP": ResidualMLP,
    "MLP": MLP,
    "TinyTransformer": TinyTransformer,
}

_MODADD_P = 23
_LANG = dict(occupation_bias=0.85, p_attractor=0.6, p_agreement=0.5, n_ctx=16)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "tms-5-2", "TMS", dict(n_features=5, n_hidden=2, n_hidden_layers=0, tied_weights=True),
            "sparse_features", dict(n_features=5, feature_probability=0.05, value_range=(0.0, 1.0)),
            TrainConfig(steps=3000, lr=1e-2, schedule="cosine", seed=0, log_every=100), 1024,
            "Toy model of superposition: 5 sparse features in 2 dimensions (a regular pentagon).",
        ),
        Recipe(
            "tms-40-10", "TMS", dict(n_features=40, n_hidden=10, n_hidden_layers=0, tied_weights=True),
            "sparse_features", dict(n_features=40, feature_probability=0.05, value_range=(0.0, 1.0)),
            TrainConfig(steps=5000, lr=1e-2, schedule="cosine", seed=0, log_every=250), 1024,
            "Toy model of superposition: 40 sparse features in 10 dimensions.",
        ),
        Recipe(
            "resid-mlp-1", "ResidualMLP", dict(n_features=100, d_embed=1000, d_mlp=50, n_layers=1, embed_seed=0),
            "sparse_features",
            dict(n_features=100, feature_probability=0.01, value_range=(-1.0, 1.0), target="resid_relu"),
            TrainConfig(steps=1000, lr=3e-3, weight_decay=0.01, schedule="cosine", seed=0, log_every=100), 2048,
            "Residual MLP computing y = x + ReLU(x) for 100 features with 50 neurons (compressed computation).",
        ),
        Recipe(
            "modadd-mlp", "MLP", dict(sizes=[2 * _MODADD_P] + [256] * 6 + [_MODADD_P], activation="relu", bias=True),
            "modular_arithmetic", dict(P=_MODADD_P, op="add", train_frac=0.9, seed=0),
            TrainConfig(steps=12000, lr=3e-3, weight_decay=1.0, betas=(0.9, 0.98), warmup_steps=100, schedule="wsd",
                        grad_clip=1.0, seed=0, log_every=250), 0,
            "Deep MLP (6 hidden layers of 256 ReLUs, identity-initialised) on a + b mod 23 from one-hot inputs, "
            "trained on 90% of the pairs with weight decay (it groks).",
            extra={"init": "identity"},
        ),
        Recipe(
            "tiny-lm", "TinyTransformer", dict(d_model=64, n_layers=2, n_heads=4, d_mlp=256, n_ctx=16, init_seed=0),
            "synthetic_language", dict(_LANG),
            TrainConfig(steps=4000, lr=2e-3, weight_decay=0.01, warmup_steps=200, schedule="cosine", seed=0,
                        log_every=250, grad_clip=1.0), 128,
            "2-layer transformer on a synthetic English-like language with agreement and a planted occupation bias.",
            extra={"corpus_sentences": 200_000, "corpus_seed": 0, "heldout_seed": 10_000},
        ),
    ]
}


def names() -> list[str]:
    """Names of the zoo entries, sorted."""
    return sorted(RECIPES)


def _check_name(name: str) -> Recipe:
    if not isinstance(name, str):
        raise TypeError(f"name: expected a zoo entry name (str), got {type(name).__name__}")
    if name not in RECIPES:
        raise KeyError(f"unknown zoo model {name!r}; valid names: {', '.join(names())}")
    return RECIPES[name]


def task_for(name: str) -> SparseFeatures | ModularArithmetic | SyntheticLanguage:
    """The task object a zoo entry was trained on (``SparseFeatures``, ``ModularArithmetic`` or ``SyntheticLanguage``)."""
    r = _check_name(name)
    if r.task_kind == "sparse_features":
        return SparseFeatures(**r.task_kwargs)
    if r.task_kind == "modular_arithmetic":
        return ModularArithmetic(**r.task_kwargs)
    return SyntheticLanguage(**r.task_kwargs)


def _build_model(r: Recipe) -> nn.Module:
    kwargs = dict(r.model_kwargs)
    if r.arch == "TinyTransformer":
        kwargs["vocab_size"] = task_for(r.name).vocab_size  # type: ignore[union-attr]
    return _ARCHS[r.arch](**kwargs)


# --------------------------------------------------------------------------------------
# Evaluation (used for the manifest metrics, the tests and notebook 00)
# --------------------------------------------------------------------------------------
def tms_feature_geometry(model: TMS) -> dict[str, Any]:
    """Norms of the feature directions (columns of ``linear1.weight``) and, for 2-D hidden
    spaces, the sorted angular gaps between consecutive features in degrees."""
    W = model.linear1.weight.detach().cpu().double()  # (n_hidden, n_features)
    out: dict[str, Any] = {"norms": W.norm(dim=0).tolist(), "n_represented": int((W.norm(dim=0) > 0.5).sum())}
    if W.shape[0] == 2:
        ang = torch.sort(torch.atan2(W[1], W[0])).values
        gaps = torch.diff(torch.cat([ang, ang[:1] + 2 * math.pi])) * 180 / math.pi
        out["angle_gaps_deg"] = gaps.tolist()
    return out


def lm_loss(model: TinyTransformer, tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Next-token cross-entropy over non-pad targets; ``tokens (batch, pos)``."""
    logits = model(tokens[:, :-1])
    targets = tokens[:, 1:].masked_fill(tokens[:, 1:] == pad_id, -100)
    return cross_entropy_loss(logits, targets)


@torch.no_grad()
def occupation_pronoun_probs(model: TinyTransformer, lang: SyntheticLanguage, seed: int = 123,
                             per_occupation: int = 8) -> tuple[list[str], torch.Tensor, list[str]]:
    """Per occupation, the mean ``P(she) / (P(he) + P(she))`` after ``the OCC PAST the OBJ and``.

    Returns ``(occupations, p_she (n_occ,), stereotype ("m"/"f") per occupation)``.
    """
    dev = next(model.parameters()).device
    toks, occs = lang.occupation_prompts(seed=seed, per_occupation=per_occupation)
    probs = torch.softmax(model(toks.to(dev))[:, -1], dim=-1).cpu()
    frac = probs[:, lang.tokenizer["she"]] / (probs[:, lang.tokenizer["he"]] + probs[:, lang.tokenizer["she"]])
    names_ = list(lang.occupations)
    p = torch.stack([frac[[i for i, o in enumerate(occs) if o == n]].mean() for n in names_])
    return names_, p, [lang.occupations[n] for n in names_]


@torch.no_grad()
def lm_behaviour(model: TinyTransformer, lang: SyntheticLanguage, n: int = 400, seed: int = 123) -> dict[str, float]:
    """Agreement accuracy (attractor mismatch / none), name-pronoun accuracy and the occupation bias.

    ``bias_she_f`` / ``bias_she_m``: mean ``P(she) / (P(he) + P(she))`` after female- /
    male-stereotyped occupations.
    """
    dev = next(model.parameters()).device
    out: dict[str, float] = {}
    for key, prompts in [("agree_acc_mismatch", lang.agreement_prompts(n, seed, "mismatch")),
                         ("agree_acc_none", lang.agreement_prompts(n, seed, "none")),
                         ("name_pronoun_acc", lang.gender_prompts(n, seed, "name"))]:
        logits = model(prompts.clean.to(dev))[:, -1]
        ans = prompts.answers.to(dev)
        diff = logits.gather(1, ans[:, :1]) - logits.gather(1, ans[:, 1:])
        out[key] = float((diff > 0).float().mean())
    _, p_she, stereo = occupation_pronoun_probs(model, lang, seed)
    fem = torch.tensor([g == "f" for g in stereo])
    out["bias_she_f"] = float(p_she[fem].mean())
    out["bias_she_m"] = float(p_she[~fem].mean())
    return out


@torch.no_grad()
def evaluate(name: str, model: nn.Module) -> dict[str, Any]:
    """The metrics recorded in the manifest for ``name`` (deterministic held-out data)."""
    r = _check_name(name)
    task = task_for(name)
    if isinstance(task, SparseFeatures):
        x = task.sample(20_000, torch.Generator().manual_seed(10_000))
        metrics: dict[str, Any] = {"eval_loss": float(((model(x) - task.label(x)) ** 2).mean())}
        if isinstance(model, TMS):
            metrics.update(tms_feature_geometry(model))
        return metrics
    if isinstance(task, ModularArithmetic):
        tr, te = task.split()
        return {
            "train_acc": float((model(tr.x).argmax(-1) == tr.y).float().mean()),
            "test_acc": float((model(te.x).argmax(-1) == te.y).float().mean()),
            "test_loss": float(F.cross_entropy(model(te.x), te.y)),
        }
    assert isinstance(task, SyntheticLanguage) and isinstance(model, TinyTransformer)
    held = task.sample_batch(2000, seed=r.extra["heldout_seed"])
    return {"heldout_loss": float(lm_loss(model, held, task.tokenizer.pad_id)), **lm_behaviour(model, task)}


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------
def train_entry(name: str, progress: bool = True, device: str | torch.device = "cpu",
                steps: int | None = None) -> tuple[nn.Module, TrainResult]:
    """Train zoo entry ``name`` from its recipe (``steps`` overrides the recipe's step count)."""
    r = _check_name(name)
    cfg = r.train if steps is None else TrainConfig(**{**r.train.to_dict(), "steps": steps})
    torch.manual_seed(cfg.seed)
    model = _build_model(r)
    if r.extra.get("init") == "identity":
        model.identity_init_()  # type: ignore[operator]
    dev = resolve_device(device)
    task = task_for(name)
    eval_fn: Callable[[nn.Module], dict[str, float]] | None
    if isinstance(task, SparseFeatures):
        def batch_fn(step: int, g: torch.Generator) -> torch.Tensor:
            return task.sample(r.batch_size, g).to(dev)

        def loss_fn(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
            return ((m(x) - task.label(x)) ** 2).mean()
        eval_fn = None
    elif isinstance(task, ModularArithmetic):
        tr, te = task.split()
        tr_x, tr_y, te_x, te_y = tr.x.to(dev), tr.y.to(dev), te.x.to(dev), te.y.to(dev)

        def batch_fn(step: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            return tr_x, tr_y  # full batch

        def loss_fn(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            return cross_entropy_loss(m(b[0]), b[1])

        def eval_fn(m: nn.Module) -> dict[str, float]:
            return {"train_acc": float((m(tr_x).argmax(-1) == tr_y).float().mean()),
                    "test_acc": float((m(te_x).argmax(-1) == te_y).float().mean())}
    else:
        corpus = task.sample_batch(r.extra["corpus_sentences"], seed=r.extra["corpus_seed"]).to(dev)
        pad = task.tokenizer.pad_id

        def batch_fn(step: int, g: torch.Generator) -> torch.Tensor:
            return corpus[torch.randint(0, corpus.shape[0], (r.batch_size,), generator=g).to(dev)]

        def loss_fn(m: nn.Module, toks: torch.Tensor) -> torch.Tensor:
            return lm_loss(m, toks, pad)  # type: ignore[arg-type]

        def eval_fn(m: nn.Module) -> dict[str, float]:
            return lm_behaviour(m, task, n=200)  # type: ignore[arg-type]
    result = train(model, batch_fn, loss_fn, cfg, eval_fn=eval_fn, device=dev, progress=progress, desc=name)
    return model, result


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def manifest(directory: Path | None = None) -> dict[str, Any]:
    """The parsed ``manifest.json`` (``{"entries": {name: {...}}, ...}``)."""
    path = (directory or data_dir()) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; build the zoo with `python -m mechnb.zoo build`")
    return json.loads(path.read_text())


def info(name: str) -> dict[str, Any]:
    """The manifest entry of ``name``: config, seed, metrics, curves, sha256, file."""
    _check_name(name)
    entries = manifest()["entries"]
    if name not in entries:
        raise KeyError(f"zoo model {name!r} is not in the manifest; run `python -m mechnb.zoo build {name}`")
    return entries[name]


def build(which: list[str] | None = None, progress: bool = True, directory: Path | None = None) -> dict[str, Any]:
    """Retrain the named entries (default: all) and atomically rewrite checkpoints + manifest."""
    directory = directory or data_dir()
    todo = names() if not which else [_check_name(n).name for n in which]
    mpath = directory / MANIFEST
    man = json.loads(mpath.read_text()) if mpath.exists() else {}
    man.setdefault("format", 1)
    man["regenerate"] = "python -m mechnb.zoo build [NAME ...]"
    entries = man.setdefault("entries", {})
    for name in todo:
        r = RECIPES[name]
        t0 = time.perf_counter()
        model, result = train_entry(name, progress=progress)
        seconds = time.perf_counter() - t0
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        fname = f"{name}.pt"
        _atomic_write_bytes(directory / fname, lambda f: torch.save(state, f))
        model_cfg = dict(r.model_kwargs)
        if r.arch == "TinyTransformer":
            model_cfg["vocab_size"] = model.vocab_size  # type: ignore[union-attr]
        entries[name] = {
            "file": fname,
            "sha256": _sha256(directory / fname),
            "arch": r.arch,
            "config": model_cfg,
            "task": {"kind": r.task_kind, **r.task_kwargs},
            "train": {**r.train.to_dict(), "batch_size": r.batch_size, **r.extra},
            "seed": r.train.seed,
            "description": r.description,
            "metrics": {"final_train_loss": result.final_loss, "train_seconds": round(seconds, 1),
                        **evaluate(name, model)},
            "curves": {"loss": _subsample(result.losses, 200), "evals": result.evals},
            "torch_version": torch.__version__.split("+")[0],
            "command": f"python -m mechnb.zoo build {name}",
        }
        payload = json.dumps(man, indent=1, sort_keys=True).encode() + b"\n"
        _atomic_write_bytes(mpath, lambda f: f.write(payload))
        if progress:
            print(f"built {name} in {seconds:.1f}s: {entries[name]['metrics']}", file=sys.stderr)
    return man


def _subsample(xs: list[float], n: int) -> list[list[float]]:
    """``[[step, value], ...]`` at about ``n`` evenly spaced steps (means over each window)."""
    if not xs:
        return []
    w = max(1, len(xs) // n)
    return [[i + w, float(sum(xs[i:i + w]) / len(xs[i:i + w]))] for i in range(0, len(xs), w)]


def load(name: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load zoo entry ``name``: returns ``(model in eval mode, manifest entry)``.

    Raises ``KeyError`` (listing valid names) for an unknown name, :class:`ChecksumError`
    (naming the file and both hashes) if the checkpoint does not match the manifest.
    """
    r = _check_name(name)
    dev = resolve_device(device)
    entry = info(name)
    path = data_dir() / entry["file"]
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} is missing; run `python -m mechnb.zoo build {name}`")
    got = _sha256(path)
    if got != entry["sha256"]:
        raise ChecksumError(
            f"checkpoint {path} has sha256 {got} but the manifest records {entry['sha256']}; "
            f"the file is corrupted or stale - rebuild it with `python -m mechnb.zoo build {name}`"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = _ARCHS[r.arch](**entry["config"])
    model.load_state_dict(state, strict=True)
    return model.to(dev).eval(), entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mechnb.zoo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="retrain entries and rewrite their checkpoints and the manifest")
    b.add_argument("names", nargs="*", help=f"entries to build (default: all of {', '.join(names())})")
    sub.add_parser("list", help="list entries and their metrics")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        try:
            build(args.names or None)
        except KeyError as e:
            parser.error(str(e))
    else:
        for n in names():
            print(f"{n:12s} {RECIPES[n].description}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
