"""Project-level checks: the set-up files agree with each other, notebooks are stored clean,
the README documents exactly the make targets that exist, CI runs ``make test``, and the
``make lab`` launcher really brings JupyterLab up on ``notebooks/``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from mechnb import lab

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

#: PyPI name (normalised) -> conda-forge name. A new dependency in pyproject.toml needs an entry here
#: and a line in environment.yml.
CONDA_NAME = {
    "torch": "pytorch",
    "numpy": "numpy",
    "scipy": "scipy",
    "pot": "pot",
    "matplotlib": "matplotlib",
    "ipywidgets": "ipywidgets",
    "jupyterlab": "jupyterlab",
    "tqdm": "tqdm",
    "networkx": "networkx",
    "safetensors": "safetensors",
    "pytest": "pytest",
    "pytest-xdist": "pytest-xdist",
    "nbval": "nbval",
    "playwright": "playwright",
    "hypothesis": "hypothesis",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9_-]*)\s*:(?![:=])", text, flags=re.M))


def _default_torch() -> str:
    return re.search(r"^TORCH_VERSION\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), flags=re.M).group(1)


def _make_dry_run(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


# --------------------------------------------------------------------------------------
# pyproject.toml <-> environment.yml <-> Makefile
# --------------------------------------------------------------------------------------
def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = _pyproject()["project"]
    wanted: dict[str, SpecifierSet] = {}
    for line in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(line)
        name = _norm(req.name)
        assert name in CONDA_NAME, f"pyproject.toml: {name!r} has no conda name in tests/test_project.py CONDA_NAME"
        wanted[CONDA_NAME[name]] = req.specifier

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    got: dict[str, SpecifierSet] = {}
    pip_section = None
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep["pip"]
            continue
        name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep.strip()).groups()
        got[name.lower()] = spec
    assert got.pop("python") == "=3.11"
    assert "pip" in got and got.pop("pip") == ""
    assert set(got) == set(wanted), (
        f"environment.yml lacks {sorted(set(wanted) - set(got))}, has extra {sorted(set(got) - set(wanted))}")
    for name, spec in got.items():
        assert SpecifierSet(spec.replace(" ", "")) == wanted[name], f"{name}: {spec!r} vs pyproject {wanted[name]}"
    assert pip_section == ["-e ."]


def test_pyproject_has_the_stack_dependencies_and_admits_the_makefile_torch():
    project = _pyproject()["project"]
    deps = {_norm(Requirement(d).name): Requirement(d).specifier for d in project["dependencies"]}
    for name in ("torch", "numpy", "scipy", "pot", "matplotlib", "ipywidgets", "jupyterlab", "tqdm"):
        assert name in deps, name
    test_extra = {_norm(Requirement(d).name) for d in project["optional-dependencies"]["test"]}
    assert {"pytest", "nbval", "playwright"} <= test_extra
    default_torch = _default_torch()
    # the Makefile installs this torch first; pip must then find the requirement satisfied
    assert Version(default_torch) in deps["torch"], (default_torch, deps["torch"])


def test_makefile_setup_installs_torch_first_and_honours_torch_index(tmp_path):
    venv = tmp_path / "venv"  # a venv that does not exist, so the set-up recipe is printed
    pinned = f'"torch=={_default_torch()}"'
    plain = _make_dry_run("setup", f"VENV={venv}")
    lines = [ln for ln in plain.splitlines() if "pip" in ln and " install " in ln]
    torch_line = next(i for i, ln in enumerate(lines) if pinned in ln)
    editable_line = next(i for i, ln in enumerate(lines) if '-e ".[test]"' in ln)
    assert torch_line < editable_line
    assert "--index-url" not in plain
    idx = _make_dry_run("setup", f"VENV={venv}", "TORCH_INDEX=https://example.invalid/whl/cpu")
    torch_cmd = next(ln for ln in idx.splitlines() if pinned in ln and " install " in ln)
    assert "--index-url https://example.invalid/whl/cpu" in torch_cmd
    editable_cmd = next(ln for ln in idx.splitlines() if '-e ".[test]"' in ln)
    assert "--index-url" not in editable_cmd  # only torch comes from the extra index


def test_make_test_and_make_lab_run_the_documented_commands():
    test = _make_dry_run("test")
    # TEST_WORKERS single-threaded pytest-xdist workers, taking the long modules first (conftest.py)
    xdist = r"--durations=\d+ -n \d+ --dist loadscope --no-loadscope-reorder "
    assert re.search(rf'MECHNB_FAST=1 \S*python -m pytest {xdist}"\$\{{unit_mark\[@\]\}}" tests/', test)
    assert re.search(rf"MECHNB_FAST=1 \S*python -m pytest {xdist}--nbval-lax --nbval-current-env \\?\s*notebooks/", test)
    assert re.search(r'MECHNB_FAST=1 \S*python -m pytest --durations=\d+ \$xdist -m "\$mark" tests/', test)
    assert test.count('numerics "(numerics and not slow) or learner" ') == 1  # portable kernels
    assert test.count('numerics "numerics and not slow" ') == 2  # 2 threads, with and without avx2
    assert "compgen -G \"notebooks/*.ipynb\"" in test  # an empty notebooks/ must not fail make test
    for config in ("ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2",
                   "OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE",
                   "ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2"):
        assert config in test, config
    lab_cmd = _make_dry_run("lab")
    assert re.search(r"python -m mechnb\.lab\b", lab_cmd)  # the launcher tested below


#: Stands in for .venv/bin/python in `make test`: answers torch's CPU capability, logs each pytest
#: run with the environment that matters, and exits with FAKE_RC when its arguments contain FAKE_FAIL.
_FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = -c ]; then echo "$FAKE_BEST"; exit 0; fi
echo "ATEN=${ATEN_CPU_CAPABILITY:-} MKL=${MKL_ENABLE_INSTRUCTIONS:-} OMP=$OMP_NUM_THREADS${OMP_WAIT_POLICY:+/$OMP_WAIT_POLICY} \\
FAST=$MECHNB_FAST | $*" \\
    >> "$FAKE_LOG"
echo "${MECHNB_CHROMIUM:-}" >> "$FAKE_LOG.chromium"
if [ -n "${FAKE_FAIL:-}" ] && [[ "$OMP_NUM_THREADS $*" == *"$FAKE_FAIL"* ]]; then exit "$FAKE_RC"; fi
exit 0
"""


#: pytest-xdist as `make test` runs it with TEST_WORKERS=2
XDIST = "-n 2 --dist loadscope --no-loadscope-reorder"


def _fake_make_test(tmp_path: Path, best: str = "AVX512", fail: str = "", rc: int = 1, *args: str):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    fake, stamp, log = tmp_path / "python", tmp_path / "stamp", tmp_path / "runs.log"
    fake.write_text(_FAKE_PYTHON)
    fake.chmod(0o755)
    stamp.touch()
    log.write_text("")
    # a clean environment: no kernel choice, and no make variables of an outer `make test PYTEST_ARGS=...`
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update(FAKE_BEST=best, FAKE_FAIL=fail, FAKE_RC=str(rc), FAKE_LOG=str(log))
    # no chromium by default: nbval then runs notebooks/ under the best kernels too (NBVAL_BEST=auto)
    proc = subprocess.run(["make", "--no-print-directory", "test", f"PY={fake}", f"STAMP={stamp}", "BROWSER_DEPS=0",
                           "TEST_WORKERS=2", f"CHROMIUM={tmp_path / 'no-chromium'}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    runs = [line.replace(str(fake), "PY") for line in log.read_text().splitlines()]
    return proc.returncode, proc.stdout + proc.stderr, runs


def test_make_test_runs_the_suite_under_every_numeric_configuration(tmp_path):
    rc, out, runs = _fake_make_test(tmp_path)
    assert rc == 0, out
    assert runs == [
        f"ATEN= MKL= OMP=1 FAST=1 | -m pytest --durations=15 {XDIST} -m not learner tests/",
        f"ATEN= MKL= OMP=1 FAST=1 | -m pytest --durations=15 {XDIST} --nbval-lax --nbval-current-env notebooks/",
        # the learner notebooks run (and their kept checked cells are compared) under the portable kernels
        f"ATEN=default MKL=SSE4_2 OMP=1 FAST=1 | -m pytest --durations=15 {XDIST} -m (numerics and not slow) or learner tests/",
        # one process, 2 threads, AVX2 kernels
        "ATEN=avx2 MKL=AVX2 OMP=2/PASSIVE FAST=1 | -m pytest --durations=15 -n 0 -m numerics and not slow tests/",
    ], out
    headers = re.findall(r"^==> \[(\d)/(\d)\] (.*)$", out, flags=re.M)
    assert [(n, total) for n, total, _ in headers] == [(str(i), "4") for i in range(1, 5)]
    assert headers[0][2].startswith("unit tests (tests/, the learner notebooks in step 2)")
    assert headers[2][2] == ("numerics subset and learner notebooks under ATEN_CPU_CAPABILITY=default "
                             "MKL_ENABLE_INSTRUCTIONS=SSE4_2")
    assert "(AVX512)" in headers[0][2] and "==> make test passed" in out
    assert len(re.findall(r"^    \[\d/4\] .*: passed, \d+ s$", out, flags=re.M)) == 4  # the summary with times

    # NUMERICS_PATHS are rerun in full in each other configuration; TEST_MATRIX=0 runs only the first
    # (the learner notebooks included)
    rc, out, runs = _fake_make_test(tmp_path, "AVX512", "", 1, "NUMERICS_PATHS=tests/test_gw.py")
    assert rc == 0 and sum(r.endswith("tests/test_gw.py") and "-m pytest" in r for r in runs) == 2, out
    # TEST_WORKERS=0: every pytest run in one process
    rc, out, runs = _fake_make_test(tmp_path, "AVX512", "", 1, "TEST_WORKERS=0")
    assert rc == 0 and all("-n 0" in r for r in runs), runs
    rc, out, runs = _fake_make_test(tmp_path, "AVX512", "", 1, "TEST_MATRIX=0")
    assert rc == 0 and len(runs) == 2 and "[2/2]" in out, out
    assert runs[0] == f"ATEN= MKL= OMP=1 FAST=1 | -m pytest --durations=15 {XDIST} tests/", runs
    # NOTEBOOKS_PORTABLE=1: nbval on notebooks/ under the portable kernels as well
    rc, out, runs = _fake_make_test(tmp_path, "AVX512", "", 1, "NOTEBOOKS_PORTABLE=1")
    assert rc == 0 and len(runs) == 5 and "[5/5]" in out, out
    assert runs[3] == (f"ATEN=default MKL=SSE4_2 OMP=1 FAST=1 | -m pytest --durations=15 {XDIST} --nbval-lax "
                       "--nbval-current-env notebooks/"), runs


def test_with_a_browser_the_browser_test_checks_the_notebooks_under_the_best_kernels(tmp_path):
    chromium = tmp_path / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    rc, out, runs = _fake_make_test(tmp_path, "AVX512", "", 1, f"CHROMIUM={chromium}")  # the fake imports playwright
    assert rc == 0, out
    assert runs == [
        f"ATEN= MKL= OMP=1 FAST=1 | -m pytest --durations=15 {XDIST} -m not learner tests/",
        f"ATEN=default MKL=SSE4_2 OMP=1 FAST=1 | -m pytest --durations=15 {XDIST} -m (numerics and not slow) or learner tests/",
        "ATEN=avx2 MKL=AVX2 OMP=2/PASSIVE FAST=1 | -m pytest --durations=15 -n 0 -m numerics and not slow tests/",
    ], out
    assert "run and checked by the browser test of step 1" in out
    # every run sees the chromium that make checked for (the browser test reads MECHNB_CHROMIUM)
    assert set((tmp_path / "runs.log.chromium").read_text().split()) == {str(chromium)}
    assert [t for _, t in re.findall(r"^==> \[(\d)/(\d)\]", out, flags=re.M)] == ["3"] * 3
    # NBVAL_BEST=1 runs nbval there as well; NBVAL_BEST=0 never (even without a browser)
    rc, out, runs = _fake_make_test(tmp_path, "AVX512", "", 1, f"CHROMIUM={chromium}", "NBVAL_BEST=1")
    assert rc == 0 and len(runs) == 4 and runs[1] == (f"ATEN= MKL= OMP=1 FAST=1 | -m pytest --durations=15 {XDIST} "
                                                      "--nbval-lax --nbval-current-env notebooks/"), runs
    rc, out, runs = _fake_make_test(tmp_path, "AVX512", "", 1, "NBVAL_BEST=0")
    assert rc == 0 and len(runs) == 3 and "[3/3]" in out, out


@pytest.mark.parametrize("best", ["AVX2", "DEFAULT", "SVE256"])
def test_make_test_uses_the_avx2_kernels_only_when_the_cpu_has_avx512(tmp_path, best):
    rc, out, runs = _fake_make_test(tmp_path, best)
    assert rc == 0 and len(runs) == 4 and not any("ATEN=avx2" in r for r in runs), out
    assert runs[-1] == "ATEN= MKL= OMP=2/PASSIVE FAST=1 | -m pytest --durations=15 -n 0 -m numerics and not slow tests/", runs
    assert f"no AVX2 kernels in the 2-thread configuration: the best kernel family here is {best}" in out


def test_make_test_fails_when_any_configuration_fails_and_still_runs_the_others(tmp_path):
    rc, out, runs = _fake_make_test(tmp_path, "AVX512", "2 -m pytest --durations=15 -n 0 -m numerics")  # only the 2-thread run fails
    assert rc != 0 and len(runs) == 4, out
    assert re.search(r"^    \[4/4\] quick numerics subset with 2 threads .*: FAILED \(pytest exit 1\)", out,
                     flags=re.M), out
    assert "!! make test FAILED" in out and "==> make test passed" not in out


def test_make_test_treats_an_empty_selection_as_a_failure_unless_pytest_args_narrowed_it(tmp_path):
    rc, out, _ = _fake_make_test(tmp_path, "AVX512", "or learner", 5)  # step 3 collects nothing
    assert rc != 0 and "no test collected: this configuration's selection is empty" in out, out
    assert re.search(r"\[3/4\] numerics subset .*: FAILED \(pytest exit 5\)", out), out
    rc, out, runs = _fake_make_test(tmp_path, "AVX512", "or learner", 5, "PYTEST_ARGS=-k gw_symmetric")
    assert rc == 0, out
    assert re.search(r"\[3/4\] numerics subset .*: passed, nothing selected by PYTEST_ARGS", out), out
    assert all(r.endswith("-k gw_symmetric") for r in runs), runs


def test_the_numerics_subset_is_registered_and_used():
    markers = _pyproject()["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("numerics:") for m in markers), markers
    uses = re.compile(r"^(?:@pytest\.mark\.numerics$|pytestmark = .*pytest\.mark\.numerics)", flags=re.M)
    marked = {p.name for p in (ROOT / "tests").glob("test_*.py") if uses.search(p.read_text())}
    for method in ("test_degeneracy", "test_gw", "test_spd"):  # each method's eigen/rank/GW/alive-count tests
        assert any(name.startswith(method) for name in marked), (method, sorted(marked))


def test_ci_runs_make_test():
    ci = ROOT / ".ci" / "run"
    text = ci.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert re.search(r"^make test\s*$", text, flags=re.M)
    assert os.access(ci, os.X_OK)


def test_gitignore_keeps_the_venv_out_of_git():
    assert ".venv/" in (ROOT / ".gitignore").read_text().split()


# --------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------
def _readme_code() -> str:
    text = (ROOT / "README.md").read_text()
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    return "\n".join(fenced + inline)


def _readme_make_targets() -> set[str]:
    pattern = r"(?:^|[ \t;&|(])make[ \t]+(?:[A-Z_]+=\S*[ \t]+)*([a-z][a-z0-9_-]*)"
    return set(re.findall(pattern, _readme_code(), flags=re.M))


def test_readme_shows_exactly_the_make_targets_that_exist():
    targets, documented = _makefile_targets(), _readme_make_targets()
    assert {"lab", "test", "zoo", "bench"} <= targets
    assert documented == targets, (f"README documents targets the Makefile lacks: {sorted(documented - targets)}; "
                                   f"Makefile targets missing from README: {sorted(targets - documented)}")


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S).group(1)
    assert re.search(r"^make lab\b", first_block, flags=re.M) and re.search(r"^make test\b", first_block, flags=re.M)


def test_readme_notebook_table_lists_every_notebook():
    text = (ROOT / "README.md").read_text()
    for number in ("00", "01", "02", "03", "04"):
        assert re.search(rf"^\| {number} \|", text, flags=re.M), f"README: no table row for notebook {number}"
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.name}" in text, f"README: the notebook table does not link {nb.name}"


# --------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------
def test_notebooks_are_stored_without_outputs():
    dirty = []
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            if cell.get("outputs"):
                dirty.append(f"{path.name} cell {i}: has outputs")
            if cell.get("execution_count") is not None:
                dirty.append(f"{path.name} cell {i}: execution_count={cell['execution_count']}")
        if "widgets" in nb.get("metadata", {}):
            dirty.append(f"{path.name}: stored widget state in metadata")
    assert not dirty, "strip these notebooks before committing:\n" + "\n".join(dirty)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_valid_and_well_formed(path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), f"{path.name}: expected NN_name.ipynb"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "%matplotlib inline" in first_code.source, f"{path.name}: the first code cell must set %matplotlib inline"


# --------------------------------------------------------------------------------------
# make lab: the launcher brings JupyterLab up
# --------------------------------------------------------------------------------------
def _get(url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback only)
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_lab_command_is_local_and_token_protected(tmp_path):
    cmd = lab.lab_command(8899, ROOT / "notebooks")
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"]
    assert "--ServerApp.ip=127.0.0.1" in cmd and "--ServerApp.port=8899" in cmd
    assert "--ServerApp.port_retries=0" in cmd
    assert f"--ServerApp.root_dir={(ROOT / 'notebooks').resolve()}" in cmd
    assert not any("token" in c.lower() for c in cmd)  # the token goes through the environment, not ps
    assert lab.lab_env("s3cret", base={})["JUPYTER_TOKEN"] == "s3cret"
    with pytest.raises(ValueError, match="token"):
        lab.lab_env("")
    assert lab.lab_url(8899, "abc") == "http://127.0.0.1:8899/lab?token=abc"
    assert lab.default_notebook_dir() == ROOT / "notebooks"
    port = lab.find_free_port(0)
    assert 0 < port < 65536
    with pytest.raises(SystemExit):  # argparse error naming the folder, before anything starts
        lab.main(["--notebook-dir", str(tmp_path / "missing"), "--no-browser"])


def test_make_lab_brings_jupyterlab_up(tmp_path):
    port = lab.find_free_port(0)
    token = "mechnb-test-token"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    log = (tmp_path / "lab.log").open("w")
    # exactly what `make lab` runs (`$(PY) -m mechnb.lab`), plus a fixed port/token and no browser
    proc = subprocess.Popen([sys.executable, "-m", "mechnb.lab", "--port", str(port), "--token", token,
                             "--no-browser"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def logtail() -> str:
        log.flush()
        return (tmp_path / "lab.log").read_text()[-3000:]

    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # generous: start-up is ~7 s here, far slower on a saturated machine
        status = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"jupyter lab exited with {proc.returncode}:\n{logtail()}"
            try:
                status, body = _get(f"{base}/api", timeout=2)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                status = None
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, f"/api did not answer 200 within 120 s:\n{logtail()}"
        assert "version" in json.loads(body)
        # the token is required ...
        status, _ = _get(f"{base}/api/contents")
        assert status == 403, f"/api/contents without the token answered {status}:\n{logtail()}"
        # ... and with it the server shows notebooks/
        status, body = _get(f"{base}/api/contents?token={token}")
        assert status == 200, f"/api/contents with the token answered {status}:\n{logtail()}"
        listed = {item["name"] for item in json.loads(body)["content"]}
        assert {p.name for p in NOTEBOOKS} <= listed, (sorted(listed), [p.name for p in NOTEBOOKS])
        status, page = _get(f"{base}/lab?token={token}")
        assert status == 200 and b"JupyterLab" in page, f"/lab answered {status}:\n{logtail()}"
        log.flush()
        printed = (tmp_path / "lab.log").read_text()
        assert f"{base}/lab?token={token}" in printed, f"the launcher did not print the URL:\n{printed[:3000]}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _root_conftest():
    import importlib.util

    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    root_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root_conftest)
    return root_conftest


def test_root_conftest_lengthens_nbval_output_timeout(monkeypatch):
    """nbval's fixed 5 s wait for a finished cell's output messages fails long progress-bar cells on a busy machine."""
    nbval_plugin = pytest.importorskip("nbval.plugin")
    root_conftest = _root_conftest()
    monkeypatch.setattr(root_conftest, "front_load_long_modules", lambda items: None)  # bare items have no node id
    item = nbval_plugin.IPyNbCell.__new__(nbval_plugin.IPyNbCell)
    item.output_timeout = 5
    other = type("OtherItem", (), {"output_timeout": 5})()
    root_conftest.pytest_collection_modifyitems(None, [item, other])
    assert item.output_timeout == root_conftest.NBVAL_OUTPUT_TIMEOUT >= 30 and other.output_timeout == 5


def test_the_modules_with_long_tests_are_collected_first():
    """``make test``'s workers take the long scopes up first: by module, ranked browser, learner, slow; stable."""
    class Item:
        def __init__(self, nodeid, *marks):
            self.nodeid, self.marks = nodeid, marks

        def get_closest_marker(self, name):
            return name if name in self.marks else None

    items = [Item("a.py::t1"), Item("b.py::t1"), Item("b.py::T::t2", "slow"), Item("c.py::t1", "learner"),
             Item("d.py::t1"), Item("e.py::t1", "browser"), Item("e.py::t2"), Item("f.py::t1", "slow")]
    _root_conftest().front_load_long_modules(items)
    assert [i.nodeid for i in items] == ["e.py::t1", "e.py::t2", "c.py::t1", "b.py::t1", "b.py::T::t2", "f.py::t1",
                                         "a.py::t1", "d.py::t1"]


def test_a_notebook_stays_on_one_xdist_worker(tmp_path):
    """End to end: ``pytest -n 2 --dist loadscope --nbval-lax`` on a notebook whose cells depend on each other."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("xdist")
    folder = ROOT / "tests" / "artifacts" / f"xdist-{os.getpid()}-{tmp_path.name}"  # under the root conftest
    folder.mkdir(parents=True, exist_ok=True)
    try:
        cells = [nbformat.v4.new_code_cell("x = 0")]
        cells += [nbformat.v4.new_code_cell(f"assert x == {i}\nx += 1") for i in range(12)]
        nb = nbformat.v4.new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        for name in ("a.ipynb", "b.ipynb"):
            nbformat.write(nb, folder / name)
        proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadscope", "--nbval-lax",
                               "--nbval-current-env", "-p", "no:cacheprovider", "-q", str(folder)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "26 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_every_checked_notebook_cell_has_a_current_reference():
    """``# NBVAL_CHECK_OUTPUT`` cells are compared with tests/notebook_outputs.json (stored notebooks are stripped)."""
    nbformat = pytest.importorskip("nbformat")
    import notebook_reference as ref

    refs = ref.load()
    missing, stale, empty = [], [], []
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in ref.checked_cells(nb):
            entry = refs.get(path.name, {}).get(cell.get("id"))
            where = f"{path.name} cell {cell.get('id')}: {cell.source.splitlines()[1][:60] if cell.source.count(chr(10)) else ''}"
            if entry is None:
                missing.append(where)
            elif entry["source_sha"] != ref.source_hash(cell.source):
                stale.append(where)
            elif not entry["outputs"]:
                empty.append(where)
    hint = "\nrecord them: MECHNB_FAST=1 OMP_NUM_THREADS=1 .venv/bin/python tests/notebook_reference.py --update"
    assert not missing, "checked cells without a reference output:\n" + "\n".join(missing) + hint
    assert not stale, "checked cells changed since their reference was recorded:\n" + "\n".join(stale) + hint
    assert not empty, "checked cells that print nothing (nothing to compare):\n" + "\n".join(empty)


def test_conftest_hands_the_references_to_nbval():
    """Collecting a notebook gives its checked cells their reference outputs, so nbval compares them."""
    pytest.importorskip("nbval")
    import notebook_reference as ref

    path = next(p for p in NOTEBOOKS if p.name.startswith("02_"))
    script = (
        "import json, sys, pytest\n"
        "seen = {}\n"
        "class Spy:\n"
        "    @pytest.hookimpl(trylast=True)\n"
        "    def pytest_collection_modifyitems(self, items):\n"
        "        for item in items:\n"
        "            if getattr(item, 'options', {}).get('check'):\n"
        "                seen[item.cell.get('id')] = [item.cell.execution_count, len(item.cell.outputs)]\n"
        "rc = pytest.main(['--nbval-lax', '--collect-only', '-q', '-p', 'no:cacheprovider', sys.argv[1]], plugins=[Spy()])\n"
        "print('SEEN', json.dumps(seen))\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    seen = json.loads(proc.stdout.split("SEEN ", 1)[1].splitlines()[0])
    expected = ref.load()[path.name]
    assert seen and set(seen) == set(expected)
    assert all(count == 1 and n == len(expected[cid]["outputs"]) for cid, (count, n) in seen.items()), seen
