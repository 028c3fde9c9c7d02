"""The model zoo: checkpoints match the manifest, load safely, and show what they should."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mechnb import zoo
from mechnb.models import MLP, TMS, ResidualMLP, TinyTransformer
from mechnb.train import TrainResult


@pytest.fixture(scope="module")
def loaded() -> dict:
    return {name: zoo.load(name) for name in zoo.names()}


def test_names_and_manifest_agree():
    assert zoo.names() == ["modadd-mlp", "resid-mlp-1", "resid-mlp-2", "resid-mlp-3", "tiny-lm", "tms-40-10",
                           "tms-5-2"]
    man = zoo.manifest()
    assert set(man["entries"]) == set(zoo.names())
    for name, entry in man["entries"].items():
        assert entry["file"] == f"{name}.pt"
        assert len(entry["sha256"]) == 64
        assert entry["command"] == f"python -m mechnb.zoo build {name}"
        assert {"config", "seed", "metrics", "train", "task"} <= set(entry)


def test_every_checkpoint_matches_its_hash(loaded):
    for name, (model, entry) in loaded.items():
        assert zoo._sha256(zoo.data_dir() / entry["file"]) == entry["sha256"]
        assert not model.training
        assert entry is not None


def test_model_types(loaded):
    assert isinstance(loaded["tms-5-2"][0], TMS)
    assert isinstance(loaded["tms-40-10"][0], TMS)
    for name, (n_features, d_mlp, n_layers) in {"resid-mlp-1": (100, 50, 1), "resid-mlp-2": (100, 25, 2),
                                                "resid-mlp-3": (102, 17, 3)}.items():
        model = loaded[name][0]
        assert isinstance(model, ResidualMLP)
        assert (model.n_features, model.d_mlp, model.n_layers, model.d_embed) == (n_features, d_mlp, n_layers, 1000)
    assert isinstance(loaded["modadd-mlp"][0], MLP)
    assert isinstance(loaded["tiny-lm"][0], TinyTransformer)
    assert len(loaded["modadd-mlp"][0].layers) - 1 >= 6  # at least 6 hidden layers


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError, match="tms-5-2"):
        zoo.load("tms-5-3")
    with pytest.raises(KeyError, match="valid names"):
        zoo.task_for("nope")
    with pytest.raises(TypeError, match="name"):
        zoo.load(3)  # type: ignore[arg-type]


def test_tms_5_2_is_a_regular_pentagon(loaded):
    geom = zoo.tms_feature_geometry(loaded["tms-5-2"][0])
    assert geom["n_represented"] == 5
    assert all(0.9 < n < 1.4 for n in geom["norms"])
    assert all(abs(g - 72.0) < 2.0 for g in geom["angle_gaps_deg"]), geom["angle_gaps_deg"]
    assert (loaded["tms-5-2"][0].linear2.bias < 0).all()  # interference is suppressed by a negative bias


def test_tms_40_10_represents_all_features(loaded):
    assert zoo.tms_feature_geometry(loaded["tms-40-10"][0])["n_represented"] == 40


@pytest.mark.parametrize("name", ["resid-mlp-1", "resid-mlp-2", "resid-mlp-3"])
def test_resid_mlp_beats_the_identity_baseline(loaded, name):
    model, entry = loaded[name]
    task = zoo.task_for(name)
    x = task.sample(20_000, torch.Generator().manual_seed(5))
    with torch.no_grad():
        loss = ((model(x) - task.label(x)) ** 2).mean().item()
    baseline = ((x - task.label(x)) ** 2).mean().item()  # output = input, no ReLU computed at all
    assert loss < 0.5 * baseline
    assert math.isclose(entry["metrics"]["eval_loss"], loss, rel_tol=0.1)


def test_modadd_generalises(loaded):
    model, entry = loaded["modadd-mlp"]
    _, test = zoo.task_for("modadd-mlp").split()
    with torch.no_grad():
        acc = (model(test.x).argmax(-1) == test.y).float().mean().item()
    assert acc >= 0.99
    assert entry["metrics"]["test_acc"] == pytest.approx(acc)


def test_tiny_lm_agreement_and_planted_bias(loaded):
    model, entry = loaded["tiny-lm"]
    beh = zoo.lm_behaviour(model, zoo.task_for("tiny-lm"), n=400, seed=7)
    assert beh["agree_acc_mismatch"] >= 0.95
    assert beh["agree_acc_none"] >= 0.95
    assert beh["name_pronoun_acc"] >= 0.95
    # the planted occupation bias (corpus: 85% stereotyped pronoun) is visible in the model
    assert beh["bias_she_f"] > 0.65 and beh["bias_she_m"] < 0.35
    assert entry["config"]["n_layers"] in (2, 3, 4)


def test_load_moves_to_device(loaded):
    model, _ = zoo.load("tms-5-2", device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="device"):
        zoo.load("tms-5-2", device="tpu")


@pytest.fixture()
def zoo_copy(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    shutil.copy(zoo.data_dir() / "manifest.json", d / "manifest.json")
    shutil.copy(zoo.data_dir() / "tms-5-2.pt", d / "tms-5-2.pt")
    monkeypatch.setenv("MECHNB_DATA", str(d))
    return d


def test_corrupted_checkpoint_names_file_and_both_hashes(zoo_copy):
    path = zoo_copy / "tms-5-2.pt"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    expected = zoo.manifest()["entries"]["tms-5-2"]["sha256"]
    got = zoo._sha256(path)
    with pytest.raises(zoo.ChecksumError) as err:
        zoo.load("tms-5-2")
    msg = str(err.value)
    assert str(path) in msg and expected in msg and got in msg


def test_missing_checkpoint(zoo_copy):
    (zoo_copy / "tms-5-2.pt").unlink()
    with pytest.raises(FileNotFoundError, match="mechnb.zoo build tms-5-2"):
        zoo.load("tms-5-2")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_loading_never_unpickles_arbitrary_objects(zoo_copy):
    path = zoo_copy / "tms-5-2.pt"
    torch.save({"linear1.weight": torch.zeros(2, 5), "payload": _Evil()}, path)
    man = json.loads((zoo_copy / "manifest.json").read_text())
    man["entries"]["tms-5-2"]["sha256"] = zoo._sha256(path)  # hash matches: only weights_only protects us
    (zoo_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        zoo.load("tms-5-2")


def test_interrupted_build_leaves_old_checkpoint_intact(zoo_copy, monkeypatch):
    before = (zoo_copy / "tms-5-2.pt").read_bytes()
    man_before = (zoo_copy / "manifest.json").read_text()

    def crash(obj, f, *a, **k):
        f.write(b"partial checkpoint bytes")
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(torch, "save", crash)
    quick_model = zoo.load("tms-5-2")[0]
    monkeypatch.setattr(zoo.builder, "train_entry",
                        lambda name, progress=True, steps=None: (quick_model, TrainResult(losses=[0.0])))
    with pytest.raises(KeyboardInterrupt):
        zoo.build(["tms-5-2"], progress=False, directory=zoo_copy)
    assert (zoo_copy / "tms-5-2.pt").read_bytes() == before
    assert (zoo_copy / "manifest.json").read_text() == man_before
    assert sorted(p.name for p in zoo_copy.iterdir()) == ["manifest.json", "tms-5-2.pt"]  # no temp files left
    zoo.load("tms-5-2")  # still loads and verifies


def test_retraining_tms_5_2_reproduces_the_manifest_loss():
    entry = zoo.info("tms-5-2")
    model, result = zoo.train_entry("tms-5-2", progress=False)
    metrics = zoo.evaluate("tms-5-2", model)
    assert metrics["eval_loss"] == pytest.approx(entry["metrics"]["eval_loss"], rel=0.05)
    assert result.final_loss == pytest.approx(entry["metrics"]["final_train_loss"], rel=0.1)
    assert metrics["n_represented"] == 5


def test_cli_rejects_unknown_names():
    proc = subprocess.run([sys.executable, "-m", "mechnb.zoo", "build", "not-a-model"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "valid names" in proc.stderr and "tms-5-2" in proc.stderr
