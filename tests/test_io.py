"""mechnb.io: every result type round-trips exactly and still works; broken files fail with their messages.

Each result comes from a small real run of its method on a zoo model (``tiny-lm``,
``modadd-mlp``, ``tms-5-2``) or a planted MLP. Round trips compare every field exactly (dtype,
shape and every value of each tensor / array, NaN in place, tuples stay tuples), then use the
reloaded object: the same faithfulness, causal importances, LLC trace, report table, basis
transform. The corruption tests damage one part of a saved file at a time (truncated, a flipped
byte, an edited type or schema version, a missing or foreign tensor file) and check the error
names the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from mechnb import circuits, degeneracy, gw, io, plots, spd, zoo
from mechnb.experiments.degeneracy import planted_mlp
from mechnb.io.files import _metadata_sha
from mechnb.tasks import SyntheticLanguage

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------
# exact comparison of two results
# --------------------------------------------------------------------------------------
def assert_same(a, b, where: str = "result") -> None:
    """``a`` and ``b`` are equal value for value, with the same types, dtypes and shapes."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device, where
        assert a.requires_grad == b.requires_grad, where
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), where
    elif isinstance(a, float):
        assert (np.isnan(a) and np.isnan(b)) or a == b, f"{where}: {a!r} != {b!r}"
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, nn.Module):
        assert a.training == b.training, where
        assert_same(dict(a.state_dict()), dict(b.state_dict()), f"{where}.state_dict()")
        assert [p.requires_grad for p in a.parameters()] == [p.requires_grad for p in b.parameters()], where
        if not dataclasses.is_dataclass(a):
            plain = {k: v for k, v in vars(a).items() if not k.startswith("_") and k != "training"}
            assert_same(plain, {k: vars(b)[k] for k in plain}, f"{where} attributes")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, circuits.Graph):
        assert (a.writers, a.readers, a.nodes, a.edges) == (b.writers, b.readers, b.nodes, b.edges), where
        assert torch.equal(a.valid, b.valid), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# --------------------------------------------------------------------------------------
# small real runs of every method (built once)
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lang() -> SyntheticLanguage:
    return SyntheticLanguage()


@pytest.fixture(scope="module")
def lm():
    return zoo.load("tiny-lm")[0]


@pytest.fixture(scope="module")
def pairs(lang):
    return lang.agreement_prompts(8, seed=7)


@pytest.fixture(scope="module")
def graph(lm):
    return circuits.Graph.from_model(lm)


@pytest.fixture(scope="module")
def eap(lm, graph, pairs):
    return circuits.attribute(lm, graph, pairs, method="eap")


@pytest.fixture(scope="module")
def eap_ig(lm, graph, pairs):
    return circuits.attribute(lm, graph, pairs, method="eap-ig", ig_steps=2)


@pytest.fixture(scope="module")
def circuit(eap):
    return eap.top_n(10)


@pytest.fixture(scope="module")
def tune(lm, lang):
    task = circuits.disagreement_task(lang, n_discovery=8, n_eval=16, n_heldout=16)
    cfg = circuits.TuneConfig(steps=2, batch_size=4, discover_every=1, log_every=1, top_n=5)
    return circuits.circuit_tune(lm, task, cfg, progress=False)


@pytest.fixture(scope="module")
def modadd():
    model, _ = zoo.load("modadd-mlp")
    split = zoo.task_for("modadd-mlp").all_pairs()
    return model, split.x[:96], split.y[:96]


@pytest.fixture(scope="module")
def layer_matrix(modadd):
    model, x, _ = modadd
    return gw.layer_gw_matrix(gw.layer_representations(model, x), n_samples=32, progress=False)


@pytest.fixture(scope="module")
def tms():
    return zoo.load("tms-5-2")[0], zoo.task_for("tms-5-2")


@pytest.fixture(scope="module")
def spd_result(tms):
    model, task = tms
    cfg = spd.SPDConfig(C=4, steps=3, batch_size=16, n_eval_batches=1)
    return spd.decompose(model, ["linear1", "linear2"], task.sample, cfg, progress=False)


@pytest.fixture(scope="module")
def llc(modadd):
    model, x, y = modadd
    return degeneracy.estimate_llc(model, F.cross_entropy, (x, y), num_chains=2, num_draws=4, num_burnin_steps=0,
                                   progress=False)


@pytest.fixture(scope="module")
def planted():
    return planted_mlp(d_in=3, d_hidden=4, d_out=3, n_samples=64, duplicated=1, dead=1, seed=0)


@pytest.fixture(scope="module")
def report(planted):
    model, x = planted
    return degeneracy.degeneracy_report(model, x)


@pytest.fixture(scope="module")
def basis(planted):
    model, x = planted
    return degeneracy.interaction_basis(model, x)


RESULTS = ["eap", "eap_ig", "circuit", "tune", "layer_matrix", "spd_result", "llc", "report", "basis"]


# --------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", RESULTS)
def test_every_result_type_round_trips_exactly_and_deterministically(name, request, tmp_path):
    result = request.getfixturevalue(name)
    path = io.save(result, tmp_path / "a" / name)
    assert path == tmp_path / "a" / f"{name}.json"
    back = io.load(path, expected_type=type(result))
    assert back is not result
    assert_same(result, back)
    # the reloaded object writes the very same bytes (nothing was lost or reordered)
    again = io.save(back, tmp_path / "b" / name)
    assert again.read_text() == path.read_text(), "".join(__import__("difflib").unified_diff(
        path.read_text().splitlines(True), again.read_text().splitlines(True)))
    (t1,), (t2,) = sorted((tmp_path / "a").glob("*.safetensors")), sorted((tmp_path / "b").glob("*.safetensors"))
    assert t1.name == t2.name and t1.read_bytes() == t2.read_bytes()


def test_reloaded_scores_and_circuits_give_the_same_circuits_and_faithfulness(eap, circuit, lm, pairs, tmp_path):
    s = io.load(io.save(eap, tmp_path / "eap"))
    assert [e.name for e in s.ranking()] == [e.name for e in eap.ranking()]
    assert torch.equal(s.top_n(7, fill=True).mask, eap.top_n(7, fill=True).mask)
    c = io.load(io.save(circuit, tmp_path / "c"), expected_type="Circuit")
    assert c.edges == circuit.edges and c.nodes == circuit.nodes
    assert circuits.faithfulness(lm, c, pairs) == circuits.faithfulness(lm, circuit, pairs)


def test_reloaded_tuning_result_has_the_tuned_model(tune, pairs, tmp_path):
    r = io.load(io.save(tune, tmp_path / "tune"))
    assert isinstance(r.model, type(tune.model)) and r.model is not tune.model
    with torch.no_grad():
        assert torch.equal(r.model(pairs.clean), tune.model(pairs.clean))
    assert isinstance(r.circuits[0], tuple) and r.circuits == tune.circuits
    assert r.config["betas"] == tune.config["betas"] and isinstance(r.config["betas"], tuple)
    for key in ("trainable_fraction", tune.primary):
        np.testing.assert_array_equal(r.series(key)[1], tune.series(key)[1])


def test_reloaded_spd_result_computes_the_same_causal_importances(spd_result, tms, tmp_path):
    r = io.load(io.save(spd_result, tmp_path / "spd"), expected_type=spd.SPDResult)
    x = tms[1].sample(64, torch.Generator().manual_seed(3))
    for kind in ("lower", "upper", "clipped"):
        a, b = spd_result.causal_importances(x, kind), r.causal_importances(x, kind)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for m in spd_result.modules:
        assert torch.equal(r.weight(m), spd_result.weight(m))
    assert r.components.tied == {"linear2": "linear1"}
    # the target model keeps its tie: linear2's weight is linear1's transpose, not a copy
    assert r.model.linear2.weight.data_ptr() == r.model.linear1.weight.data_ptr()
    ci = r.components.ci
    assert (ci.n_layers, ci.C, ci.hidden) == (2, 4, spd_result.config.ci_hidden)


def test_reloaded_degeneracy_results_work(llc, report, basis, planted, layer_matrix, tmp_path):
    r = io.load(io.save(llc, tmp_path / "llc"))
    np.testing.assert_array_equal(r.llc_trace, llc.llc_trace)
    assert repr(r) == repr(llc) and r.config == llc.config
    rep = io.load(io.save(report, tmp_path / "report"))
    assert rep.table() == report.table() and rep.thin_decisions() == report.thin_decisions()
    assert isinstance(rep.gauss_newton.decision, type(report.gauss_newton.decision))
    b = io.load(io.save(basis, tmp_path / "basis"))
    model, x = planted
    acts = model(x, return_activations=True)[1][0].detach()
    assert torch.equal(b.transform(1, acts), basis.transform(1, acts))
    assert list(b.C) == list(basis.C) and all(isinstance(k, int) for k in b.C)  # int keys stay ints
    assert b.dim_labels() == basis.dim_labels()
    lmx = io.load(io.save(layer_matrix, tmp_path / "gw"))
    np.testing.assert_array_equal(lmx.groups(n_groups=2), layer_matrix.groups(n_groups=2))


def test_loading_leaves_the_global_rng_alone(tune, spd_result, tmp_path):
    paths = [io.save(tune, tmp_path / "t"), io.save(spd_result, tmp_path / "s")]
    state = torch.random.get_rng_state()
    for p in paths:
        io.load(p)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_values_of_every_kind_round_trip(graph, tmp_path):
    shared = torch.arange(6.0).reshape(2, 3)
    info = {
        "nan": float("nan"), "inf": float("inf"), "-inf": -float("inf"), "big": 2**70, "none": None, "flag": True,
        "tuple": (1, "a", (2.5,)), "list": [1, [2, 3]], "int keys": {0: "a", 3: "b"}, "tuple keys": {(1, 2): 3.0},
        "$dollar": {"$tensor": "not a tag"}, "np": [np.float32(1.5), np.int64(-3), np.bool_(True), np.float64("nan")],
        "dtype": torch.bfloat16, "empty": torch.zeros(0, 3), "bools": torch.tensor([True, False]),
        "half": torch.randn(3, dtype=torch.float16), "ints": torch.arange(4, dtype=torch.int32),
        "f64": np.linspace(0, 1, 5), "u8": np.arange(3, dtype=np.uint8), "scalar": torch.tensor(2.0, dtype=torch.float64),
        "shared": [shared, shared], "view": shared[:, 1],
    }
    s = circuits.EdgeScores(graph, torch.randn(graph.n_writers, graph.n_readers), "eap", 0.5, float("nan"), info)
    path = io.save(s, tmp_path / "values")
    back = io.load(path)
    assert_same(s, back)
    assert back.info["shared"][0] is back.info["shared"][1]  # a tensor met twice is stored once
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    names = set(_tensor_names(path))
    assert {"scores", "info.shared.0", "info.view"} <= names and "info.shared.1" not in names


def _tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    tfile = path.parent / json.loads(path.read_text())["tensor_file"]
    with safe_open(str(tfile), framework="pt") as f:
        return list(f.keys())


def test_metadata_records_versions_type_and_the_tensor_files_hash(eap, tmp_path):
    path = io.save(eap, tmp_path / "eap.json")
    doc = io.read_metadata(path)
    assert doc["format"] == io.FORMAT and doc["schema_version"] == io.SCHEMA_VERSION == 1
    assert doc["mechnb_version"] == __import__("mechnb").__version__
    assert (doc["type"], doc["type_version"], doc["type_package"]) == ("EdgeScores", 1, "mechnb.circuits")
    tfile = tmp_path / doc["tensor_file"]
    assert hashlib.sha256(tfile.read_bytes()).hexdigest() == doc["tensor_sha256"]
    assert tfile.name == f"eap.{doc['tensor_sha256'][:16]}.safetensors" and tfile.stat().st_size == doc["tensor_bytes"]
    assert doc["metadata_sha256"] == _metadata_sha(doc)
    assert io.result_paths(tmp_path / "eap") == (path, tfile)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, tfile.name])


def test_the_types_the_notebooks_produce_are_registered():
    names = set(io.saveable_types())
    assert {"EdgeScores", "Circuit", "Graph", "TuneResult", "LayerMatrix", "SPDResult", "SPDComponents", "SPDConfig",
            "LLCResult", "DegeneracyReport", "LayerDegeneracy", "EffectiveParameterCount", "InteractionBasis",
            "RankDecision"} <= names


def test_registration_rules(monkeypatch, graph, tmp_path):
    from mechnb.io import registry

    monkeypatch.setattr(registry, "_BY_NAME", dict(registry._BY_NAME))
    monkeypatch.setattr(registry, "_BY_CLASS", dict(registry._BY_CLASS))
    with pytest.raises(ValueError, match="name: 'EdgeScores' is already registered for mechnb.circuits.circuit.EdgeScores"):
        io.register(circuits.FaithfulnessCurve, "EdgeScores")
    with pytest.raises(TypeError, match="cls: dict is neither a dataclass nor defines to_state"):
        io.register(dict)

    @dataclasses.dataclass
    class Local:
        x: int

    with pytest.raises(ValueError, match="cls: expected a class defined in a mechnb module"):
        io.register(Local)
    with pytest.raises(ValueError, match="version: expected an int >= 1, got 0"):
        io.saveable(version=0)(circuits.FaithfulnessCurve)
    assert io.saveable(circuits.FaithfulnessCurve) is circuits.FaithfulnessCurve  # bare @saveable
    curve = circuits.FaithfulnessCurve([0, 3], [0, 3], [0, 4], [0.0, 0.5], "corrupted")
    assert_same(io.load(io.save(curve, tmp_path / "curve")), curve)
    assert io.register(circuits.EdgeScores) is circuits.EdgeScores  # registering a class again is harmless


def test_load_imports_the_package_that_registers_the_type(eap, tmp_path):
    """In a fresh interpreter only mechnb.io is imported; loading an EdgeScores imports mechnb.circuits."""
    path = io.save(eap, tmp_path / "eap")
    code = ("import sys, mechnb.io as io\n"
            "assert 'mechnb.circuits' not in sys.modules\n"
            f"s = io.load({str(path)!r})\n"
            "print(type(s).__module__, 'mechnb.circuits' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [type(eap).__module__, "True"]


# --------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------
def test_overwriting_replaces_both_files_and_removes_the_old_tensor_file(eap, eap_ig, tmp_path):
    io.save(eap, tmp_path / "s")
    io.save(eap_ig, tmp_path / "s")
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".safetensors"]
    assert io.load(tmp_path / "s").method == "eap-ig"
    io.save(eap_ig, tmp_path / "s")  # same content again: same names, still two files
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("failing", [1, 2])  # the tensor file's move, the metadata's move (the commit point)
def test_an_interrupted_save_leaves_the_old_result(eap, eap_ig, tmp_path, monkeypatch, failing):
    path = io.save(eap, tmp_path / "s")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    calls = []
    real = os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == failing:
            raise KeyboardInterrupt("interrupted")
        return real(src, dst)

    monkeypatch.setattr("mechnb.io.files.os.replace", replace)
    with pytest.raises(KeyboardInterrupt):
        io.save(eap_ig, path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary or new file left
    monkeypatch.undo()
    assert io.load(path).method == "eap"


def test_nothing_is_written_when_a_value_cannot_be_saved(graph, lm, tune, tmp_path):
    bad = circuits.EdgeScores(graph, torch.zeros(graph.n_writers, graph.n_readers), "eap", info={"fn": print})
    with pytest.raises(TypeError, match=r"result\.info\['fn'\]: a builtins\.builtin_function_or_method cannot be"):
        io.save(bad, tmp_path / "bad")
    wrapped = dataclasses.replace(tune, model=nn.Sequential(lm))
    with pytest.raises(TypeError, match=r"result\.model: a torch\.nn\.modules\.container\.Sequential cannot be saved"):
        io.save(wrapped, tmp_path / "bad")
    with pytest.raises(TypeError, match=r"result: expected an instance of a type registered with mechnb\.io\.saveable"):
        io.save({"scores": 1}, tmp_path / "bad")
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------
# broken files
# --------------------------------------------------------------------------------------
@pytest.fixture()
def saved(eap, tmp_path) -> tuple[Path, Path]:
    path = io.save(eap, tmp_path / "eap")
    return path, tmp_path / json.loads(path.read_text())["tensor_file"]


def _rewrite(path: Path, edit, rehash: bool) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    if rehash:  # a consistent forgery: the checksum matches the edited content
        doc["metadata_sha256"] = _metadata_sha(doc)
    path.write_text(json.dumps(doc))


def _fails(path, match: str, at: Path, **kw) -> io.ResultFileError:
    with pytest.raises(io.ResultFileError, match=match) as e:
        io.load(path, **kw)
    assert isinstance(e.value, ValueError) and e.value.path == at
    assert str(e.value).startswith(f"{at}: ")
    return e.value


def test_a_truncated_metadata_file_is_refused(saved):
    path, _ = saved
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    _fails(path, r"not a mechnb result file: not valid JSON \(.* at line \d+ column \d+\); the file is truncated", path)


def test_a_truncated_or_flipped_tensor_file_is_refused(saved):
    path, tfile = saved
    blob = tfile.read_bytes()
    tfile.write_bytes(blob[:-10])
    _fails(path, rf"has {len(blob) - 10} bytes, eap.json records {len(blob)}: the file is truncated", tfile)
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x01
    tfile.write_bytes(bytes(flipped))
    _fails(path, r"has sha256 [0-9a-f]{64}, eap.json records '[0-9a-f]{64}': the file is corrupted", tfile)


def test_an_edited_metadata_file_is_refused(saved):
    path, _ = saved
    text = path.read_text()
    old = json.dumps(json.loads(text)["result"]["fields"]["metric_clean"])
    path.write_text(text.replace(f'"metric_clean": {old}', '"metric_clean": 1234.5'))
    _fails(path, r"the metadata was edited or corrupted after it was written \(metadata_sha256 records '[0-9a-f]{64}', "
                 r"the content hashes to [0-9a-f]{64}\)", path)


def test_an_edited_type_is_refused(saved):
    path, _ = saved
    _rewrite(path, lambda d: d.update(type="Circuit"), rehash=False)
    _fails(path, "the metadata was edited or corrupted", path)
    _rewrite(path, lambda d: d.update(type="Circuit"), rehash=True)
    _fails(path, "its result tree is not a Circuit object", path)
    _rewrite(path, lambda d: d.update(type="Bogus"), rehash=True)
    _fails(path, r"type 'Bogus' is not a saveable type of this mechnb \(not registered by mechnb.circuits\)", path)
    _rewrite(path, lambda d: d.update(type="Bogus", type_package="os"), rehash=True)
    _fails(path, r"package: expected a module name under mechnb\., got 'os'", path)


def test_the_wrong_type_is_refused(saved):
    path, _ = saved
    _fails(path, r"holds a EdgeScores, expected a Circuit$", path, expected_type=circuits.Circuit)
    _fails(path, r"holds a EdgeScores, expected a LLCResult$", path, expected_type="LLCResult")
    with pytest.raises(TypeError, match="expected_type: expected a type registered with mechnb.io.saveable"):
        io.load(path, expected_type=dict)


def test_another_schema_type_or_mechnb_version_is_refused(saved):
    path, _ = saved
    _rewrite(path, lambda d: d.update(schema_version=2), rehash=False)
    _fails(path, r"schema version 2; this mechnb \(0\.1\.0\) reads schema version 1$", path)
    _rewrite(path, lambda d: d.update(schema_version=1, type_version=2), rehash=True)
    _fails(path, r"EdgeScores type version 2; this mechnb \(0\.1\.0\) reads EdgeScores version 1$", path)
    _rewrite(path, lambda d: d.update(type_version=1, mechnb_version="1.0.0"), rehash=True)
    _fails(path, r"written by mechnb 1\.0\.0, a newer major version than this mechnb 0\.1\.0", path)
    _rewrite(path, lambda d: d.update(mechnb_version="0.9.3"), rehash=True)
    assert io.load(path).method == "eap"  # a newer minor version with the same schema and type versions loads


def test_a_missing_or_foreign_tensor_file_is_refused(saved, tmp_path):
    path, tfile = saved
    _rewrite(path, lambda d: d.update(tensor_file="../elsewhere.safetensors"), rehash=True)
    _fails(path, r"tensor_file '\.\./elsewhere\.safetensors' is not the name of a \.safetensors file next to it", path)
    _rewrite(path, lambda d: d.update(tensor_file=tfile.name), rehash=True)
    tfile.unlink()
    _fails(path, r"the tensor file of eap\.json is missing$", tfile)


def test_files_that_are_not_results_are_refused(tmp_path):
    _fails(tmp_path / "nothing", r"no such result file", tmp_path / "nothing.json")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    _fails(tmp_path / "other.json", r'not a mechnb result file \(expected a JSON object with "format"', tmp_path /
           "other.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    _fails(tmp_path / "bin.json", r"not a mechnb result file: not UTF-8 text", tmp_path / "bin.json")


def test_a_tensor_file_that_is_not_safetensors_is_refused(saved):
    path, tfile = saved
    junk = b"x" * 64
    tfile.write_bytes(junk)
    _rewrite(path, lambda d: d.update(tensor_bytes=len(junk), tensor_sha256=hashlib.sha256(junk).hexdigest()),
             rehash=True)
    _fails(path, r"not a readable safetensors file", tfile)


def test_stored_fields_that_do_not_fit_the_type_are_refused(saved):
    path, _ = saved
    _rewrite(path, lambda d: d["result"]["fields"].update(extra=1), rehash=True)
    _fails(path, r"cannot rebuild the EdgeScores: result: \['extra'\] are not fields of EdgeScores", path)
    _rewrite(path, lambda d: d["result"]["fields"].pop("extra") and None, rehash=True)
    _rewrite(path, lambda d: d["result"]["fields"]["scores"].update({"$tensor": "nope"}), rehash=True)
    _fails(path, r"result\.scores: tensor 'nope' is not in the tensor file", path)


# --------------------------------------------------------------------------------------
# circuits as plain JSON, and drawn without graphviz
# --------------------------------------------------------------------------------------
def test_circuit_json_round_trip(circuit, eap, graph):
    text = circuit.to_json()
    doc = json.loads(text)
    assert doc["format"] == "mechnb.circuit" and doc["version"] == 1
    assert doc["edges"] == [e.name for e in circuit.edges] and "scores" not in doc
    back = circuits.Circuit.from_json(text)
    assert torch.equal(back.mask, circuit.mask) and back.graph.writers == graph.writers
    scored = json.loads(circuit.to_json(scores=eap))
    assert scored["scores"] == {e.name: float(eap.as_dict()[e.name]) for e in circuit.edges}
    assert torch.equal(circuits.Circuit.from_json(scored).mask, circuit.mask)


def test_circuit_from_json_rejects_bad_input(circuit):
    with pytest.raises(ValueError, match="text: not valid JSON"):
        circuits.Circuit.from_json("{")
    with pytest.raises(ValueError, match='text: expected a mechnb circuit'):
        circuits.Circuit.from_json('{"format": "other"}')
    doc = json.loads(circuit.to_json())
    doc["edges"].append("a9.h9->logits")
    with pytest.raises(ValueError, match="'a9.h9->logits' is not an edge of the graph"):
        circuits.Circuit.from_json(json.dumps(doc))
    with pytest.raises(TypeError, match="text: expected a JSON string or a dict"):
        circuits.Circuit.from_json(3)
    doc = json.loads(circuit.to_json())
    doc["graph"]["n_layers"] = "two"
    with pytest.raises(ValueError, match="text: graph .* does not describe a Graph"):
        circuits.Circuit.from_json(doc)
    with pytest.raises(ValueError, match="text: circuit JSON version 2; this mechnb reads version 1"):
        circuits.Circuit.from_json({**json.loads(circuit.to_json()), "version": 2})


def test_circuit_figure_draws_only_the_circuit(circuit, eap, tmp_path):
    fig = plots.circuits.circuit_figure(circuit, eap, label_top=3)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    arrows = {p.get_gid(): p for p in ax.patches}
    assert set(arrows) == {e.name for e in circuit.edges}
    scores = eap.as_dict()
    for name, arrow in arrows.items():  # blue for a positive score, red for a negative one
        want = "C0" if scores[name] >= 0 else "C3"
        assert matplotlib.colors.same_color(arrow.get_edgecolor()[:3], matplotlib.colors.to_rgb(want)), name
    nodes = {t.get_gid()[5:]: t for t in ax.texts if (t.get_gid() or "").startswith("node:")}
    assert list(nodes) == circuit.nodes
    ys = {n: t.get_position()[1] for n, t in nodes.items()}
    assert ys["input"] == min(ys.values()) and ys["logits"] == max(ys.values())
    labels = [t for t in ax.texts if t.get_gid() is None and t.get_text().startswith(("+", "-"))]
    assert len(labels) == 3
    fig.savefig(tmp_path / "c.svg")
    svg = (tmp_path / "c.svg").read_text()
    assert all(f'id="{name}"'.replace(">", "&gt;").replace("<", "&lt;") in svg for name in arrows)


def test_circuit_figure_from_shared_json_and_empty(circuit, eap, graph):
    doc = json.loads(circuit.to_json(scores=eap))
    fig = plots.circuits.circuit_figure(circuits.Circuit.from_json(doc), doc["scores"])
    assert len(fig.axes[0].patches) == circuit.n_edges
    empty = plots.circuits.circuit_figure(circuits.Circuit.empty(graph))
    assert not empty.axes[0].patches and "empty circuit" in [t.get_text() for t in empty.axes[0].texts][0]
    with pytest.raises(ValueError, match="scores: expected a score for every circuit edge, missing"):
        plots.circuits.circuit_figure(circuit, {})
    with pytest.raises(TypeError, match="circuit: expected a Circuit, got EdgeScores"):
        plots.circuits.circuit_figure(eap)
    small = circuits.Graph(1, 2)
    other = circuits.EdgeScores(small, torch.zeros(small.n_writers, small.n_readers), "eap")
    with pytest.raises(ValueError, match="scores: expected scores of the circuit's graph"):
        plots.circuits.circuit_figure(circuit, other)
