"""Every method notebook (01–05 and later) is built to teach, not only to show.

Checked on the stored facilitator notebooks:

* a header table naming the paper (an arXiv link), the sections covered, the prerequisites and the
  estimated time for full and fast mode, followed by learning objectives;
* at least three exercises, each an exercise box (number, title, difficulty, importance, minutes)
  followed by a hint and the reference solution in collapsible ``<details>`` blocks, and a code
  cell whose ``# SOLUTION N.M`` block is checked by the registered check of that number, called
  through its topic module (``exercises.spd.check_...``);
* a ``#### 💬 Discussion`` cell closing every numbered section;
* links into ``GLOSSARY.md`` that point at entries that exist;
* the README's notebook table carries each notebook's learning objectives.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import nbformat
import pytest

from mechnb.exercises import registry

ROOT = Path(__file__).resolve().parents[1]
METHOD_NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("0[1-9]_*.ipynb"))
GLOSSARY = ROOT / "notebooks" / "GLOSSARY.md"

BOX = re.compile(
    r'<div class="alert alert-block alert-info">\s*\*\*Exercise (?P<id>\d+\.\d+) · (?P<title>[^*]+)\*\*(?:<br>)?\s*\n'
    r"\s*Difficulty: (?P<diff>[🔴⚪]{5}) · Importance: (?P<imp>[🔵⚪]{5}) · ≈ (?P<min>\d+) min",
)
SOLUTION_MARK = re.compile(r"^\s*#\s*SOLUTION\s+(?P<id>\d+\.\d+)\s*$", re.M)
CHECK_CALL = re.compile(r"\bexercises\.(?P<call>\w+\.(?P<name>check_\w+))\(")
SECTION = re.compile(r"^## (?P<title>.+)$", re.M)
UNNUMBERED_SECTIONS = re.compile(r"explore|take-?aways|things to try|summary|further reading", re.I)
GLOSSARY_LINK = re.compile(r"\]\(GLOSSARY\.md(?:#(?P<anchor>[^)\s]+))?\)")


def _cells(path: Path) -> list[nbformat.NotebookNode]:
    return nbformat.read(path, as_version=4).cells


def _slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading (what JupyterLab's markdown viewer also uses)."""
    s = unicodedata.normalize("NFKC", heading).strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)  # drop punctuation (keeps letters incl. Greek, digits, _ and -)
    return s.replace(" ", "-")


def _glossary_anchors() -> set[str]:
    text = GLOSSARY.read_text()
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_there_are_method_notebooks() -> None:
    assert [p.name[:2] for p in METHOD_NOTEBOOKS][:5] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", METHOD_NOTEBOOKS, ids=[p.name[:2] for p in METHOD_NOTEBOOKS])
def test_header_has_paper_sections_prerequisites_time_and_objectives(path: Path) -> None:
    header = next(c for c in _cells(path) if c.cell_type == "markdown").source
    assert header.startswith(f"# {path.name[:2]} · "), f"{path.name}: the first markdown cell is not the title"
    for row in ("**Paper**", "**Sections covered**", "**Prerequisites**", "**Estimated time**"):
        assert re.search(rf"^\| {re.escape(row)} \|.+\|$", header, flags=re.M), f"{path.name}: header row {row} missing"
    assert re.search(r"\(https://arxiv\.org/abs/\d{4}\.\d{4,5}\)", header), f"{path.name}: no arXiv link in the header"
    time_row = re.search(r"^\| \*\*Estimated time\*\* \|(.+)\|$", header, flags=re.M).group(1)
    assert re.search(r"fast mode ≈ \d+", time_row) and re.search(r"full mode ≈ \d+", time_row), time_row
    objectives = header.split("**Learning objectives.**", 1)
    assert len(objectives) == 2, f"{path.name}: no '**Learning objectives.**' in the header"
    bullets = re.findall(r"^- \S.+$", objectives[1], flags=re.M)
    assert len(bullets) >= 3, f"{path.name}: only {len(bullets)} learning objectives"


@pytest.mark.parametrize("path", METHOD_NOTEBOOKS, ids=[p.name[:2] for p in METHOD_NOTEBOOKS])
def test_three_or_more_checked_exercises_with_hints_and_solutions(path: Path) -> None:
    number = path.name[:2].lstrip("0")
    cells = _cells(path)
    checks = {ex.id: ex.call_name.removeprefix("exercises.") for ex in registry().values()}
    boxes = [(i, m) for i, c in enumerate(cells) if c.cell_type == "markdown" for m in BOX.finditer(c.source)]
    ids = [m.group("id") for _, m in boxes]
    assert len(ids) >= 3, f"{path.name}: {len(ids)} exercise boxes, want >= 3"
    assert ids == [f"{number}.{k}" for k in range(1, len(ids) + 1)], f"{path.name}: exercises numbered {ids}"
    for (i, m), nxt in zip(boxes, [b[0] for b in boxes[1:]] + [len(cells)]):
        ex_id = m.group("id")
        assert 1 <= m.group("diff").count("🔴") and 1 <= m.group("imp").count("🔵"), m.group(0)
        assert 1 <= int(m.group("min")) <= 60, m.group(0)
        box_text = cells[i].source[m.start():]
        assert "<details><summary>💡 Hint" in box_text and "<details><summary>✅ Solution" in box_text, \
            f"{path.name}: exercise {ex_id} lacks a hint or a solution <details> block"
        code = [c.source for c in cells[i + 1:nxt] if c.cell_type == "code" and SOLUTION_MARK.search(c.source)]
        assert code, f"{path.name}: exercise {ex_id} has no code cell with a '# SOLUTION {ex_id}' block after its box"
        assert [s.group("id") for s in SOLUTION_MARK.finditer(code[0])] == [ex_id], \
            f"{path.name}: exercise {ex_id}'s solution block is numbered differently"
        assert re.search(r"^\s*#\s*END SOLUTION\s*$", code[0], flags=re.M), f"{path.name}: {ex_id} has no END SOLUTION"
        called = [c.group("call") for c in CHECK_CALL.finditer(code[0])]
        assert ex_id in checks, f"{path.name}: no check function registered for exercise {ex_id}"
        assert called == [checks[ex_id]], f"{path.name}: exercise {ex_id} should call exercises.{checks[ex_id]}"
    registered = sorted(i for i in checks if i.split(".")[0] == number)
    assert registered == sorted(ids), f"{path.name}: checks registered for {registered}, boxes for {ids}"


@pytest.mark.parametrize("path", METHOD_NOTEBOOKS, ids=[p.name[:2] for p in METHOD_NOTEBOOKS])
def test_every_section_ends_with_discussion_questions(path: Path) -> None:
    cells = _cells(path)
    starts = [(i, m.group("title")) for i, c in enumerate(cells) if c.cell_type == "markdown"
              for m in SECTION.finditer(c.source)]
    sections = [(i, t, nxt) for (i, t), nxt in zip(starts, [s[0] for s in starts[1:]] + [len(cells)])
                if not UNNUMBERED_SECTIONS.search(t)]
    assert len(sections) >= 3, f"{path.name}: only {len(sections)} sections"
    for i, title, nxt in sections:
        discussion = [c.source for c in cells[i:nxt] if c.cell_type == "markdown"
                      and c.source.startswith("#### 💬 Discussion")]
        assert discussion, f"{path.name}: section '{title}' has no '#### 💬 Discussion' cell"
        questions = re.findall(r"^\d+\. \S", discussion[-1], flags=re.M)
        assert len(questions) >= 2, f"{path.name}: section '{title}' asks {len(questions)} discussion question(s)"


@pytest.mark.parametrize("path", METHOD_NOTEBOOKS, ids=[p.name[:2] for p in METHOD_NOTEBOOKS])
def test_glossary_links_point_at_entries(path: Path) -> None:
    anchors = _glossary_anchors()
    links = [m.group("anchor") for c in _cells(path) if c.cell_type == "markdown"
             for m in GLOSSARY_LINK.finditer(c.source)]
    assert len(links) >= 3, f"{path.name}: {len(links)} links into GLOSSARY.md"
    broken = sorted({a for a in links if a and a not in anchors})
    assert not broken, f"{path.name}: links to GLOSSARY.md entries that do not exist: {broken}"


def test_slug_matches_github() -> None:
    assert _slug("Causal importance") == "causal-importance"
    assert _slug("Subject–verb agreement") == "subjectverb-agreement"
    assert _slug("Learning coefficient (λ)") == "learning-coefficient-λ"
    assert _slug("Hard sigmoid (lower-leaky, upper-leaky)") == "hard-sigmoid-lower-leaky-upper-leaky"


def test_readme_table_lists_learning_objectives() -> None:
    text = (ROOT / "README.md").read_text()
    header = text.splitlines()[text.splitlines().index("## The notebooks") + 2]
    assert "Learning objectives" in header, f"README notebook table header: {header}"
    for path in METHOD_NOTEBOOKS:
        row = next(ln for ln in text.splitlines() if ln.startswith(f"| {path.name[:2]} |"))
        assert "tbd" not in row and "to be filled" not in row, row


def test_readme_quotes_the_real_check_output(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from mechnb import exercises

    monkeypatch.delenv("MECHNB_STRICT_CHECKS", raising=False)
    exercises.spd.check_lower_leaky_hard_sigmoid(lambda x, alpha=0.01: torch.where(x < 0, alpha * x, x.clamp(max=1.0)))
    line = capsys.readouterr().out.strip()
    assert f"`{line}`" in (ROOT / "README.md").read_text(), f"README should quote the success line {line!r}"


def test_glossary_internal_links_resolve() -> None:
    text = GLOSSARY.read_text()
    links = set(re.findall(r"\]\(#([^)\s]+)\)", text))
    assert len(links) >= 50, "the glossary's topic index links its entries"
    broken = sorted(links - _glossary_anchors())
    assert not broken, f"GLOSSARY.md links to entries that do not exist: {broken}"
