"""The zoo on disk: interrupted builds never lose data, broken manifests and checkpoints fail loudly.

The interruption tests run real builds of ``tms-5-2`` (shortened to a few steps) into a copy of
``data/`` and interrupt them at every stage of the write (a hook), at many instants by a real
timer signal, and once as a real ``python -m mechnb.zoo build`` process stopped with SIGINT.
After each, ``zoo.load`` must give either the old or the new model, with a verified hash.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mechnb import zoo
from mechnb.models import MLP, TMS
from mechnb.zoo import store

NAME = "tms-5-2"
STEPS = 100  # the shortened build (the recipe trains 3000 steps)
SHIPPED = zoo.data_dir()


def _copy_zoo(d: Path) -> Path:
    d.mkdir(parents=True)
    shutil.copy(SHIPPED / "manifest.json", d / "manifest.json")
    shutil.copy(SHIPPED / f"{NAME}.pt", d / f"{NAME}.pt")
    return d


@pytest.fixture()
def zoo_copy(tmp_path, monkeypatch) -> Path:
    d = _copy_zoo(tmp_path / "data")
    monkeypatch.setenv("MECHNB_DATA", str(d))
    return d


@pytest.fixture(scope="module")
def old_and_new(tmp_path_factory) -> dict:
    """The shipped entry, and the entry an uninterrupted shortened build writes (deterministic bytes)."""
    d = _copy_zoo(tmp_path_factory.mktemp("control") / "data")
    old_entry = json.loads((d / "manifest.json").read_text())["entries"][NAME]
    zoo.build([NAME], progress=False, directory=d, steps=STEPS)
    new_entry = json.loads((d / "manifest.json").read_text())["entries"][NAME]
    assert new_entry["sha256"] != old_entry["sha256"] and new_entry["train"]["steps"] == STEPS
    return {"old": old_entry, "new": new_entry, "other": json.loads((d / "manifest.json").read_text())["entries"]}


def _outcome(d: Path, old_and_new: dict, monkeypatch, *, allow_orphans: bool = False) -> str:
    """``"old"`` or ``"new"``: what ``zoo.load`` gives after an interruption (failing on anything else)."""
    monkeypatch.setenv("MECHNB_DATA", str(d))
    model, entry = zoo.load(NAME)  # verifies the sha256 (and finishes a committed swap)
    assert zoo._sha256(d / entry["file"]) == entry["sha256"]
    entries = zoo.manifest()["entries"]
    others = {k: v for k, v in entries.items() if k != NAME}
    assert others == {k: v for k, v in old_and_new["other"].items() if k != NAME}  # other entries untouched
    if entry == old_and_new["old"]:
        kind = "old"
    else:
        new = {k: v for k, v in old_and_new["new"].items() if k != "metrics"}
        assert {k: v for k, v in entry.items() if k != "metrics"} == new
        m_got = {k: v for k, v in entry["metrics"].items() if k != "train_seconds"}
        m_new = {k: v for k, v in old_and_new["new"]["metrics"].items() if k != "train_seconds"}
        assert m_got == m_new
        kind = "new"
    left = sorted(p.name for p in d.iterdir())
    assert store.PENDING not in left
    extra = [n for n in left if n not in ("manifest.json", f"{NAME}.pt")]
    if allow_orphans:  # a signal inside the clean-up handler itself may leave a temporary file
        assert all(n.startswith(".") and n.endswith(".tmp") for n in extra), left
    else:
        assert extra == [], left
    assert isinstance(model, TMS)
    return kind


# --------------------------------------------------------------------------------------
# Interrupted builds
# --------------------------------------------------------------------------------------
STAGES = ["trained", "evaluated", f"wrote temporary {NAME}.pt", "wrote temporary manifest.json",
          "wrote temporary journal", "committed", f"replaced {NAME}.pt", "replaced manifest.json", "journal removed"]


@pytest.mark.parametrize("stage", STAGES)
def test_build_interrupted_at_each_stage_leaves_both_old_or_both_new(stage, tmp_path, monkeypatch, old_and_new):
    d = _copy_zoo(tmp_path / "data")

    def hook(s: str) -> None:
        if s == stage:
            raise KeyboardInterrupt(f"interrupted at {s}")

    monkeypatch.setattr(store, "_stage_hook", hook)
    with pytest.raises(KeyboardInterrupt):
        zoo.build([NAME], progress=False, directory=d, steps=STEPS)
    monkeypatch.setattr(store, "_stage_hook", None)
    committed = STAGES.index(stage) >= STAGES.index("committed")
    if committed and stage != "journal removed":
        assert (d / store.PENDING).exists()  # decided but unfinished: the next reader finishes it
    assert _outcome(d, old_and_new, monkeypatch) == ("new" if committed else "old")


def _alarm(seconds: float) -> None:
    signal.setitimer(signal.ITIMER_REAL, seconds)


@pytest.fixture()
def sigalrm_interrupts():
    def handler(signum, frame):
        raise KeyboardInterrupt("SIGALRM")

    previous = signal.signal(signal.SIGALRM, handler)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def _interrupted_build(d: Path, arm: Callable[[], None] | None, monkeypatch, hook: Callable[[str], None] | None):
    monkeypatch.setattr(store, "_stage_hook", hook)
    try:
        if arm is not None:
            arm()
        zoo.build([NAME], progress=False, directory=d, steps=STEPS)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except KeyboardInterrupt:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        monkeypatch.setattr(store, "_stage_hook", None)


def test_build_interrupted_by_a_real_signal_at_many_instants(tmp_path, monkeypatch, old_and_new, sigalrm_interrupts):
    seen = []
    # during training and evaluation: a timer started with the build
    for i, delay in enumerate([0.001, 0.005, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3]):
        d = _copy_zoo(tmp_path / f"t{i}")
        _interrupted_build(d, lambda: _alarm(delay), monkeypatch, None)
        seen.append(_outcome(d, old_and_new, monkeypatch, allow_orphans=True))
    # during evaluation and the write (metrics, serialising, temporaries, fsyncs, journal, replaces:
    # ~30-60 ms here): a timer started once the model is trained
    for i, delay in enumerate([1e-4, 3e-3, 6e-3, 9e-3, 12e-3, 15e-3, 18e-3, 21e-3, 24e-3, 27e-3, 30e-3, 34e-3,
                               38e-3, 45e-3, 0.3]):
        d = _copy_zoo(tmp_path / f"w{i}")

        def hook(s: str, delay: float = delay) -> None:
            if s == "trained":
                _alarm(delay)

        _interrupted_build(d, None, monkeypatch, hook)
        seen.append(_outcome(d, old_and_new, monkeypatch, allow_orphans=True))
    assert "old" in seen and seen[-1] == "new"  # the early timers really interrupted the build


def test_cli_build_stopped_with_sigint_keeps_the_old_entry(tmp_path, old_and_new, monkeypatch):
    d = _copy_zoo(tmp_path / "data")
    env = {**os.environ, "MECHNB_DATA": str(d), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # Ctrl-C in a terminal: SIGINT at its default disposition in the build. A run of the suite
    # started in the background by a non-interactive shell (`bash .ci/run &`) inherits SIGINT
    # *ignored*, Python then installs no KeyboardInterrupt handler, and the build would train on.
    proc = subprocess.Popen([sys.executable, "-m", "mechnb.zoo", "build", NAME, "--steps", "1000000"], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    buf = ""
    deadline = time.monotonic() + 120
    while NAME not in buf and time.monotonic() < deadline:  # the progress bar: training has started
        ch = proc.stderr.read(1)
        if not ch:
            break
        buf += ch
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, buf + rest[-3000:]
    assert "interrupted" in rest
    assert _outcome(d, old_and_new, monkeypatch) == "old"


def test_pending_swap_is_finished_by_the_next_reader(zoo_copy, old_and_new):
    """A journal whose temporaries were partly moved already (a crash mid-swap) is completed on read."""
    new_dir = _copy_zoo(zoo_copy.parent / "new")
    zoo.build([NAME], progress=False, directory=new_dir, steps=STEPS)
    shutil.copy(new_dir / f"{NAME}.pt", zoo_copy / f"{NAME}.pt")  # the first replace happened ...
    shutil.copy(new_dir / "manifest.json", zoo_copy / ".manifest.json.x.tmp")  # ... the second did not
    (zoo_copy / store.PENDING).write_text(json.dumps(
        {"replace": [[f".{NAME}.pt.y.tmp", f"{NAME}.pt"], [".manifest.json.x.tmp", "manifest.json"]]}))
    _, entry = zoo.load(NAME)
    assert entry["sha256"] == old_and_new["new"]["sha256"]
    assert sorted(p.name for p in zoo_copy.iterdir()) == ["manifest.json", f"{NAME}.pt"]


def test_pending_journal_with_paths_outside_is_refused(zoo_copy):
    (zoo_copy / store.PENDING).write_text(json.dumps({"replace": [["../evil.tmp", "manifest.json"]]}))
    with pytest.raises(zoo.ManifestError, match=r"\.pending\.json.*plain file name"):
        zoo.load(NAME)


# --------------------------------------------------------------------------------------
# Manifest and checkpoint errors name the file and the entry
# --------------------------------------------------------------------------------------
def _edit_entry(d: Path, edit: Callable[[dict], None]) -> None:
    man = json.loads((d / "manifest.json").read_text())
    edit(man["entries"][NAME])
    (d / "manifest.json").write_text(json.dumps(man))


@pytest.mark.parametrize("field", ["sha256", "config", "file"])
def test_entry_missing_a_field(zoo_copy, field):
    _edit_entry(zoo_copy, lambda e: e.pop(field))
    with pytest.raises(zoo.ManifestError, match=rf"manifest .*manifest\.json: entry '{NAME}' has no '{field}' field"):
        zoo.load(NAME)


@pytest.mark.parametrize("text", ["", "{\"entries\": {\"tms-5-2\": {\"file\": ", "[1, 2]", "\"zoo\"",
                                  "{\"entries\": [1]}"])
def test_unreadable_or_non_object_manifest_names_its_path(zoo_copy, text):
    if text.startswith("{\"entries\": {"):
        text = (SHIPPED / "manifest.json").read_text()[:5000]  # truncated in the middle
    (zoo_copy / "manifest.json").write_text(text)
    with pytest.raises(zoo.ManifestError, match=rf"manifest {zoo_copy / 'manifest.json'}"):
        zoo.load(NAME)
    with pytest.raises(zoo.ManifestError):
        zoo.info(NAME)


def test_entry_that_is_not_an_object(zoo_copy):
    man = json.loads((zoo_copy / "manifest.json").read_text())
    man["entries"][NAME] = "tms-5-2.pt"
    (zoo_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(zoo.ManifestError, match=f"entry '{NAME}' must be an object"):
        zoo.load(NAME)


def _set_checkpoint(d: Path, data: bytes, name: str = f"{NAME}.pt") -> None:
    (d / name).write_bytes(data)
    _edit_entry(d, lambda e: e.update(sha256=zoo._sha256(d / name)))  # the hash matches: only the reader can tell


@pytest.mark.parametrize("cut", ["empty", "half"])
def test_truncated_or_empty_checkpoint_with_matching_hash(zoo_copy, cut):
    raw = (zoo_copy / f"{NAME}.pt").read_bytes()
    _set_checkpoint(zoo_copy, b"" if cut == "empty" else raw[: len(raw) // 2])
    with pytest.raises(zoo.CheckpointError, match=rf"checkpoint {zoo_copy / (NAME + '.pt')} of zoo entry '{NAME}' "
                                                  r"cannot be read"):
        zoo.load(NAME)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_checkpoint_with_non_finite_weights_is_refused(zoo_copy, bad):
    state = torch.load(zoo_copy / f"{NAME}.pt", weights_only=True)
    state["linear1.weight"][0, 3] = bad
    torch.save(state, zoo_copy / f"{NAME}.pt")
    _set_checkpoint(zoo_copy, (zoo_copy / f"{NAME}.pt").read_bytes())
    with pytest.raises(zoo.CheckpointError, match=rf"of zoo entry '{NAME}': tensor 'linear1.weight' has "
                                                  rf"{int(bad != bad)} NaN and {int(bad == bad)} inf"):
        zoo.load(NAME)


def test_checkpoint_of_another_architecture(zoo_copy):
    torch.save(TMS(40, 10).state_dict(), zoo_copy / f"{NAME}.pt")
    _set_checkpoint(zoo_copy, (zoo_copy / f"{NAME}.pt").read_bytes())
    with pytest.raises(zoo.CheckpointError, match=rf"checkpoint .*{NAME}\.pt of zoo entry '{NAME}' does not fit"):
        zoo.load(NAME)


def test_config_the_architecture_rejects(zoo_copy):
    _edit_entry(zoo_copy, lambda e: e.update(config={"n_features": 5, "n_hidden": 2, "width": 3}))
    with pytest.raises(zoo.ManifestError, match=f"entry '{NAME}' has a config the TMS rejects"):
        zoo.load(NAME)


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_checkpoint_file_must_stay_inside_the_data_directory(zoo_copy, where):
    outside = zoo_copy.parent / "outside.pt"
    shutil.copy(zoo_copy / f"{NAME}.pt", outside)  # a valid checkpoint with the right hash
    file = {"parent": "../outside.pt", "absolute": str(outside), "symlink": "link.pt"}[where]
    if where == "symlink":
        (zoo_copy / "link.pt").symlink_to(outside)
    _edit_entry(zoo_copy, lambda e: e.update(file=file))
    with pytest.raises(zoo.ManifestError, match=rf"entry '{NAME}' has file .*outside the data directory"):
        zoo.load(NAME)


def test_missing_entry_names_the_manifest(zoo_copy):
    man = json.loads((zoo_copy / "manifest.json").read_text())
    del man["entries"][NAME]
    (zoo_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(KeyError, match="not in the manifest"):
        zoo.load(NAME)


def test_build_refuses_to_overwrite_an_unreadable_manifest(zoo_copy):
    (zoo_copy / "manifest.json").write_text("{\"entries\": ")
    with pytest.raises(zoo.ManifestError, match="not valid JSON"):
        zoo.build([NAME], progress=False, directory=zoo_copy, steps=1)
    assert (zoo_copy / "manifest.json").read_text() == "{\"entries\": "


# --------------------------------------------------------------------------------------
# evaluate, metrics, the global RNG
# --------------------------------------------------------------------------------------
def test_evaluate_names_the_callers_argument():
    with pytest.raises(TypeError, match=r"model: expected a TinyTransformer \(the architecture of zoo entry "
                                        r"'tiny-lm'\), got TMS"):
        zoo.evaluate("tiny-lm", TMS(5, 2))
    with pytest.raises(ValueError, match="model: expected a TMS with n_features=5 .* got n_features=6") as err:
        zoo.evaluate(NAME, TMS(6, 2))
    assert not str(err.value).startswith("x:")
    with pytest.raises(ValueError, match=r"model: expected an MLP from 46 one-hot inputs to 23 logits"):
        zoo.evaluate("modadd-mlp", MLP([10, 5]))
    with pytest.raises(TypeError, match="model: expected a TMS"):
        zoo.tms_feature_geometry(MLP([4, 3]))  # type: ignore[arg-type]


def test_evaluate_of_a_fresh_model_restores_its_mode():
    m = TMS(5, 2).train()
    out = zoo.evaluate(NAME, m)
    assert m.training and out["eval_loss"] > 0 and len(out["angle_gaps_deg"]) == 5


def test_train_entry_leaves_the_global_rng_alone():
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    m1, r1 = zoo.train_entry(NAME, progress=False, steps=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(999)  # another caller state: the same training run
    m2, r2 = zoo.train_entry(NAME, progress=False, steps=5)
    assert r1.losses == r2.losses
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_recipes_are_typed_frozen_data():
    r = zoo.RECIPES["modadd-mlp"]
    assert isinstance(r, zoo.ModularMLPRecipe) and r.identity_init and r.hidden == (256,) * 6
    with pytest.raises(AttributeError):
        r.P = 7  # type: ignore[misc]
    lm = zoo.RECIPES["tiny-lm"]
    assert isinstance(lm, zoo.LanguageRecipe) and lm.heldout_seed == 10_000
    for name, recipe in zoo.RECIPES.items():  # the manifest is written from the recipe fields
        entry = zoo.info(name)
        assert entry["arch"] == recipe.arch and entry["task"]["kind"] == recipe.task_kind
        assert {k: v for k, v in entry["config"].items() if k != "vocab_size"} == json.loads(
            json.dumps(recipe.model_kwargs))
        assert entry["task"] == json.loads(json.dumps({"kind": recipe.task_kind, **recipe.task_kwargs}))
