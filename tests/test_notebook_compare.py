"""The number-aware comparison of checked notebook cells (``tests/notebook_reference.py``, ``conftest.py``).

Unit tests of the tokeniser, the tolerance rule and the marker options, then an end-to-end
run: tiny notebooks with a checked cell and hand-written references, executed by nbval in a
subprocess with the repository's ``conftest.py``, pass within the declared tolerance and fail
outside it with a message naming the number.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import notebook_reference as ref
from notebook_reference import Tolerance, compare_text, parse_options, split_numbers

ROOT = Path(__file__).resolve().parent.parent
EXACT = Tolerance()
LOOSE = Tolerance(rtol=1e-3)


# --------------------------------------------------------------------------------------
# what is a number
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("line,numbers", [
    ("GW(L, circle) = 0.9684", ["0.9684"]),
    ("[-0.24 -0.25  1.13]", ["-0.24", "-0.25", "1.13"]),
    ("lr 1e-3, noise 4.4e-16, big 1.5E+05, +3", ["1e-3", "4.4e-16", "1.5E+05", "+3"]),
    ("accuracy 100.0%, then .5 and 1.", ["100.0", ".5", "1."]),
    ("the loss is 0.25.", ["0.25"]),  # a full stop ends the number
    ("layers 1-2 of 3, rank/2 = 6", ["1", "2", "3", "2", "6"]),
    ("λ=0.75 seed=0", ["0.75", "0"]),
])
def test_numbers_standing_alone_are_found(line, numbers):
    assert split_numbers(line)[1] == numbers


@pytest.mark.parametrize("line", [
    "avx512", "tms-5-2 and tms-40-10", "linear1 float64 layer_1", "6x256", "10k steps", "0x1f",
    "torch 2.13.0", "x-1", "nan inf", "ex-3_1-code",
])
def test_digits_glued_to_words_or_versions_are_text(line):
    skeleton, numbers = split_numbers(line)
    assert numbers == [] and skeleton == line


def test_skeleton_marks_numbers_and_ignores_the_space_next_to_them():
    assert split_numbers("a  =\t-1.5   (n=3)") == ("a =\x00(n=\x00)", ["-1.5", "3"])
    assert split_numbers("a  b\t\tc") == ("a b c", [])
    assert compare_text("a b", "a  b", EXACT) == [] and compare_text("a b", "ab", LOOSE)


# --------------------------------------------------------------------------------------
# the tolerance rule
# --------------------------------------------------------------------------------------
def test_identical_text_matches_under_any_tolerance():
    text = "GW = 0.9684\nalive: 40 of 80\n"
    assert compare_text(text, text, EXACT) == [] and compare_text(text, text, LOOSE) == []


def test_float_within_declared_rtol_passes_and_outside_fails_naming_the_number():
    assert compare_text("GW = 1.0549", "GW = 1.0550", LOOSE) == []  # 9.5e-5 relative
    problems = compare_text("GW = 1.0549", "GW = 0.9684", LOOSE)
    assert len(problems) == 1
    p = problems[0]
    assert "line 1" in p and "'GW = 1.0549'" in p and "'GW = 0.9684'" in p
    assert "number 1 of 1" in p and "1.0549 -> 0.9684" in p and "differs by 0.0865" in p
    assert "allowed 0.00105" in p


def test_default_tolerance_is_essentially_exact_for_floats():
    assert compare_text("x = 0.9684", "x = 0.9685", EXACT)  # a last-digit change must be declared
    assert compare_text("x = 0.123456789", "x = 0.123456790", EXACT) == []  # 8e-9 relative
    assert compare_text("err = 4.4e-16", "err = 2.2e-16", EXACT) == []  # below atol=1e-9: noise
    assert compare_text("err = 4.4e-16", "err = 2.2e-06", EXACT)


def test_atol_dominates_near_zero_and_signed_zero_is_zero():
    tol = Tolerance(rtol=1e-3, atol=1e-3)
    assert compare_text("GW = 0.0000", "GW = -0.0000", EXACT) == []
    assert compare_text("GW = 0.0000", "GW = 0.0009", tol) == []
    assert compare_text("GW = 0.0000", "GW = 0.0020", tol)


def test_negative_numbers_and_a_sign_flip():
    assert compare_text("v = [-0.50  0.25]", "v = [-0.5001  0.25]", LOOSE) == []
    (problem,) = compare_text("v = [-0.50  0.25]", "v = [ 0.50  0.25]", LOOSE)
    assert "number 1 of 2" in problem and "-0.50 -> 0.50" in problem


def test_scientific_notation_compares_by_value():
    assert compare_text("lr 1.000e-03", "lr 1.0004e-3", LOOSE) == []
    assert compare_text("lr 1.000e-03", "lr 1.1e-3", LOOSE)


def test_integers_are_exact_unless_atol_is_at_least_one():
    (problem,) = compare_text("zero eigenvalues: 125", "zero eigenvalues: 124", Tolerance(rtol=0.5))
    assert "125 -> 124" in problem and "integers differ by -1" in problem
    assert compare_text("zero eigenvalues: 125", "zero eigenvalues: 124", Tolerance(atol=1)) == []
    assert compare_text("zero eigenvalues: 125", "zero eigenvalues: 123", Tolerance(atol=1))


def test_integer_and_float_do_not_match_each_other():
    (problem,) = compare_text("n = 3", "n = 3.0", Tolerance(rtol=0.1, atol=1))
    assert "a change of format" in problem


def test_text_change_fails_even_when_the_numbers_agree():
    (problem,) = compare_text("alive on linear1: 5", "alive on linear2: 5", LOOSE)
    assert "the text around the numbers differs" in problem
    assert compare_text("MMCS >= 0.99: True", "MMCS >= 0.99: False", LOOSE)


def test_digits_inside_words_do_not_tolerate_change():
    assert compare_text("model tms-5-2", "model tms-5-3", Tolerance(rtol=1, atol=10))
    assert compare_text("kernels avx512", "kernels avx513", Tolerance(rtol=1, atol=10))
    assert compare_text("torch 2.13.0", "torch 2.13.1", Tolerance(rtol=1, atol=10))


def test_a_different_count_of_numbers_fails():
    (problem,) = compare_text("groups [[6, 7, 8]]", "groups [[6, 7]]", Tolerance(rtol=1, atol=10))
    assert "3 numbers expected, 2 got" in problem


def test_a_missing_or_extra_line_fails():
    problems = compare_text("a 1\nb 2\n", "a 1\n", Tolerance(rtol=1, atol=10))
    assert any("2 lines expected, 1 got" in p for p in problems) and any("'b 2'" in p for p in problems)
    assert compare_text("a 1\n", "a 1\nb 2\n", LOOSE)


def test_widened_columns_still_line_up():
    expected = "  rank   GW\n     9  0.98\n"
    got = "  rank   GW\n    10  0.98\n"
    assert compare_text(expected, got, Tolerance(atol=1)) == []


# --------------------------------------------------------------------------------------
# marker options
# --------------------------------------------------------------------------------------
def test_marker_accepts_options_and_a_comment():
    src = "# NBVAL_CHECK_OUTPUT rtol=1e-3 atol=1e-6  # a non-convex solver\nprint(1)\n"
    assert ref.cell_tolerance(src) == Tolerance(rtol=1e-3, atol=1e-6)
    assert ref.cell_tolerance("#NBVAL_CHECK_OUTPUT\nprint(1)") == Tolerance()
    assert ref.cell_tolerance("  # NBVAL_CHECK_OUTPUT atol=1\n") == Tolerance(atol=1)
    assert ref.cell_tolerance("print(1)") is None
    assert ref.cell_tolerance("# NBVAL_CHECK_OUTPUTS\n") is None
    assert ref.cell_tolerance("# NBVAL_IGNORE_OUTPUT\n") is None
    assert Tolerance() == Tolerance(rtol=ref.DEFAULT_RTOL, atol=ref.DEFAULT_ATOL) == Tolerance(1e-6, 1e-9)


def test_checked_cells_finds_cells_with_options():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT rtol=1e-2\nprint(1)"),
                                         nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(2)"),
                                         nbformat.v4.new_code_cell("print(3)")])
    assert [c.source[-8:] for c in ref.checked_cells(nb)] == ["print(1)", "print(2)"]


@pytest.mark.parametrize("options,msg", [
    ("rtol", "expected rtol=<float> or atol=<float>, got 'rtol'"),
    ("tol=1e-3", "got 'tol=1e-3'"),
    ("rtol=abc", "rtol must be a number, got 'abc'"),
    ("atol=-1", "atol must be finite and >= 0, got '-1'"),
    ("rtol=inf", "rtol must be finite and >= 0"),
    ("rtol=nan", "rtol must be finite and >= 0"),
    ("rtol=1e-3 rtol=1e-2", "rtol given twice"),
])
def test_bad_options_are_rejected_by_name(options, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        parse_options(options)
    with pytest.raises(ValueError, match="NBVAL_CHECK_OUTPUT options"):
        ref.cell_tolerance(f"# NBVAL_CHECK_OUTPUT {options}\nprint(1)")
    with pytest.raises(TypeError, match="options must be a str, got int"):
        parse_options(3)


def test_every_marker_in_the_notebooks_parses():
    nbformat = pytest.importorskip("nbformat")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in ref.checked_cells(nbformat.read(path, as_version=4)):
            ref.cell_tolerance(cell.source)  # raises ValueError naming the bad word


# --------------------------------------------------------------------------------------
# reconciling a cell's outputs (what conftest.py hands nbval)
# --------------------------------------------------------------------------------------
def _stream(text, name="stdout"):
    return {"output_type": "stream", "name": name, "text": text}


def _result(text):
    return {"output_type": "execute_result", "data": {"text/plain": text, "image/png": "abc"}, "metadata": {}}


def test_reconcile_replaces_matching_texts_by_the_reference_and_reports_the_rest():
    test = [_stream("GW = 1.0550\n"), _result("0.5001"), _stream("warn 3\n", "stderr")]
    refs = [_stream("GW = 1.0549\n"), _result("0.5"), _stream("warn 4\n", "stderr")]
    problems = ref.reconcile_outputs(test, refs, LOOSE)
    assert test[0]["text"] == "GW = 1.0549\n" and test[1]["data"]["text/plain"] == "0.5"
    assert test[1]["data"]["image/png"] == "abc"
    assert test[2]["text"] == "warn 3\n"  # integers exact: left for nbval to report
    (problem,) = problems
    assert problem.startswith("stream stderr (output 1)") and "4 -> 3" in problem


def test_reconcile_applies_nbvals_sanitizer_first():
    test, refs = [_stream("run 7f3a: 0.5001\n")], [_stream("run 99c1: 0.5\n")]
    assert ref.reconcile_outputs(test, refs, LOOSE, sanitize=lambda s: re.sub(r"run \w+", "run ID", s)) == []
    assert test[0]["text"] == "run 99c1: 0.5\n"


def test_reconcile_leaves_outputs_without_a_reference_to_nbval():
    test = [_stream("a 1\n"), _result("x")]
    assert ref.reconcile_outputs(test, [_stream("a 1\n")], EXACT) == []
    assert test[1]["data"]["text/plain"] == "x"


# --------------------------------------------------------------------------------------
# end to end: recording, and nbval with the repository's conftest.py
# --------------------------------------------------------------------------------------
_RUNNER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import pytest
import conftest as repo_conftest  # the repository's conftest.py, as a plugin
repo_conftest.notebook_reference.REFERENCE = Path(sys.argv[2])
sys.exit(pytest.main(["--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-rA", "--color=no",
                      *sys.argv[3:]], plugins=[repo_conftest]))
"""


def _notebook(path: Path, cells: list[str]) -> dict:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in cells])
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i}"
    nbformat.write(nb, path)
    return {cell.id: cell.source for cell in nb.cells}


def test_nbval_passes_within_the_cells_tolerance_and_fails_outside(tmp_path):
    pytest.importorskip("nbval")
    cells = ["# NBVAL_CHECK_OUTPUT rtol=1e-3\nprint(f'GW = {0.12345678:.6f}')",  # prints GW = 0.123457
             "# NBVAL_CHECK_OUTPUT\nprint('alive', 40, 'of', 80)"]
    sources = {}
    for name in ("within.ipynb", "outside.ipynb", "count.ipynb", "text.ipynb"):
        sources[name] = _notebook(tmp_path / name, cells)
    printed = {"c0": "GW = 0.123457\n", "c1": "alive 40 of 80\n"}
    stored = {"within.ipynb": {"c0": "GW = 0.123400\n"},          # 4.6e-4 relative: within rtol=1e-3
              "outside.ipynb": {"c0": "GW = 0.125000\n"},         # 1.2e-2 relative: outside
              "count.ipynb": {"c1": "alive 41 of 80\n"},          # an integer in an exact cell
              "text.ipynb": {"c1": "dead 40 of 80\n"}}            # a word
    references = {name: {cid: {"source_sha": ref.source_hash(src),
                               "outputs": [_stream(stored[name].get(cid, printed[cid]))]}
                         for cid, src in cells_.items()}
                  for name, cells_ in sources.items()}
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "refs.json").write_text(json.dumps(references))
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(ROOT), str(tmp_path / "refs.json"),
                           *sorted(sources)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    status = {cell: result for result, cell in re.findall(r"^(PASSED|FAILED) (\S+\.ipynb::Cell \d)", out, flags=re.M)}
    assert status == {"within.ipynb::Cell 0": "PASSED", "within.ipynb::Cell 1": "PASSED",
                      "outside.ipynb::Cell 0": "FAILED", "outside.ipynb::Cell 1": "PASSED",
                      "count.ipynb::Cell 0": "PASSED", "count.ipynb::Cell 1": "FAILED",
                      "text.ipynb::Cell 0": "PASSED", "text.ipynb::Cell 1": "FAILED"}, out[-3000:]
    assert "outside.ipynb cell c0: outputs differ beyond the tolerance (rtol=0.001" in out
    assert "0.125000 -> 0.123457: differs by 0.00154" in out
    assert "41 -> 40: integers differ by -1" in out
    assert "the text around the numbers differs" in out


def test_a_bad_tolerance_on_a_marker_stops_the_run_naming_the_cell(tmp_path):
    pytest.importorskip("nbval")
    _notebook(tmp_path / "bad.ipynb", ["# NBVAL_CHECK_OUTPUT rtol=1e-3 atl=1\nprint(1)"])
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "refs.json").write_text("{}")
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(ROOT), str(tmp_path / "refs.json"), "bad.ipynb"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out[-3000:]
    assert "bad.ipynb cell c0: NBVAL_CHECK_OUTPUT options: expected rtol=<float> or atol=<float>, got 'atl=1'" in out


def test_record_keeps_the_cells_whose_marker_has_options(tmp_path, monkeypatch):
    """What ``notebook_reference.py --update`` stores: every checked cell, options or not, keyed by id and hash."""
    pytest.importorskip("nbclient")
    sources = _notebook(tmp_path / "rec.ipynb", ["# NBVAL_CHECK_OUTPUT rtol=1e-3  # noisy\nprint(0.5)",
                                                 "print('unchecked')", "# NBVAL_CHECK_OUTPUT\nprint(2)"])
    monkeypatch.setenv("MECHNB_FAST", "1")
    recorded = ref.record([tmp_path / "rec.ipynb"], timeout=120)["rec.ipynb"]
    assert set(recorded) == {"c0", "c2"}
    assert recorded["c0"] == {"source_sha": ref.source_hash(sources["c0"]), "outputs": [_stream("0.5\n")]}
    assert recorded["c2"]["outputs"] == [_stream("2\n")]


# --------------------------------------------------------------------------------------
# a notebook executed elsewhere (JupyterLab, for the browser test)
# --------------------------------------------------------------------------------------
def _stream(text, name="stdout"):
    return {"output_type": "stream", "name": name, "text": text}


def test_comparable_outputs_join_streams_and_keep_text_plain_only():
    outs = [_stream("a = 1\n"), {"output_type": "display_data", "data": {"image/png": "...", "text/plain": "<Figure>"}},
            _stream("b = 2\n"), _stream("warn\n", "stderr"), {"output_type": "error", "ename": "E", "evalue": ""},
            {"output_type": "display_data", "data": {"image/png": "..."}}]
    assert ref.comparable_outputs(outs) == [("stream stdout", "a = 1\nb = 2\n"), ("text/plain", "<Figure>"),
                                            ("stream stderr", "warn\n")]
    # carriage returns overwrite a line, backspaces delete a character (as nbval)
    assert ref.comparable_outputs([_stream(["10%\r", "100%\n"]), _stream("ab\bc\n")]) == [("stream stdout", "100%\nac\n")]


def test_compare_cell_outputs_within_and_beyond_the_tolerance():
    expected = [_stream("GW = 0.9684, n = 12\n")]
    assert ref.compare_cell_outputs([_stream("GW = 0.96845, "), _stream("n = 12\n")], expected, LOOSE) == []
    why = ref.compare_cell_outputs([_stream("GW = 0.9784, n = 12\n")], expected, LOOSE)
    assert len(why) == 1 and "0.9784" in why[0] and "0.9684" in why[0]
    assert ref.compare_cell_outputs([_stream("GW = 0.9684, n = 13\n")], expected, LOOSE)  # integers exact
    assert "kinds differ" in ref.compare_cell_outputs([], expected, LOOSE)[0]
    assert ref.compare_cell_outputs(expected + [{"output_type": "execute_result", "data": {"text/plain": "3"}}],
                                    expected, LOOSE)


def test_check_executed_cells_compares_only_current_references():
    checked = "# NBVAL_CHECK_OUTPUT rtol=1e-3\nprint(x)"
    refs = {"nb.ipynb": {"c1": {"source_sha": ref.source_hash(checked), "outputs": [_stream("x = 1.000\n")]},
                         "c2": {"source_sha": "stale", "outputs": [_stream("anything\n")]}}}
    cells = [{"id": "c1", "source": checked, "outputs": [_stream("x = 1.0004\n")]},
             {"id": "c2", "source": checked, "outputs": [_stream("other\n")]},   # stale: not compared here
             {"id": "c3", "source": "print(1)", "outputs": [_stream("1\n")]}]    # not a checked cell
    assert ref.check_executed_cells("nb.ipynb", cells, refs) == (1, [])
    cells[0]["outputs"] = [_stream("x = 1.1\n")]
    n, problems = ref.check_executed_cells("nb.ipynb", cells, refs)
    assert n == 1 and len(problems) == 1 and problems[0].startswith("cell c1")
    assert ref.check_executed_cells("other.ipynb", cells, refs) == (0, [])


def test_every_notebook_has_its_checked_cells_counted():
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        import nbformat

        assert ref.n_current_references(path) == len(ref.checked_cells(nbformat.read(path, as_version=4))), path.name
