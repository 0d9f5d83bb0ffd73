"""The course kit: the student edition (``book/student.py``) and the grader (``book/grade.py``).

The student edition keeps every exercise and check, and no solution; its chapters still run in the quick tier
with the stubs and checks skipped. The grader gives the chapters full marks and their student stubs zero. The
chapters' exercises follow the markup of ``book/teaching.md`` ("The course kit").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.utils import is_grade, is_solution

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "notebooks").glob("*.ipynb"))
CHAPTER_1 = REPO / "notebooks" / "01_forward_model.ipynb"

sys.path.insert(0, str(REPO / "book"))
import grade  # noqa: E402
import student  # noqa: E402

EXERCISE = re.compile(r"^(?::{3,}|`{3,})\{exercise\}", re.MULTILINE)


def _nbgrader(grade_id: str, *, solution: bool, graded: bool) -> dict:
    meta = {"grade": graded, "grade_id": grade_id, "locked": graded, "schema_version": 3, "solution": solution}
    return {"nbgrader": {**meta, "points": 1} if graded else meta}


def _toy_chapter() -> nbformat.NotebookNode:
    """A chapter with one exercise in the book's markup: statement, gate, solution code, check, answer, gate."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Toy"),
        nbformat.v4.new_code_cell("base = 20"),
        nbformat.v4.new_markdown_cell("```{exercise} Add\n:label: toy-ex1\n\nMake `answer` equal `base + 22`.\n```"),
        nbformat.v4.new_markdown_cell(":::{solution-start} toy-ex1\n:class: dropdown\n:::"),
        nbformat.v4.new_code_cell("### BEGIN SOLUTION\nanswer = base + 22  # secret-code\n### END SOLUTION",
                                  metadata=_nbgrader("toy-ex1-code", solution=True, graded=False)),
        nbformat.v4.new_code_cell("assert answer == 42\n### BEGIN HIDDEN TESTS\nassert answer - base == 22\n"
                                  "### END HIDDEN TESTS", metadata=_nbgrader("toy-ex1", solution=False, graded=True)),
        nbformat.v4.new_markdown_cell("*Solution.* Forty-two, the secret-text.",
                                      metadata=_nbgrader("toy-ex1-answer", solution=True, graded=False)),
        nbformat.v4.new_markdown_cell(":::{solution-end}\n:::"),
        nbformat.v4.new_code_cell("after = base + 1  # a later cell still runs"),
    ]
    return nb


def solution_texts(nb: nbformat.NotebookNode) -> list[str]:
    """The lines of ``nb``'s solutions worth finding again: the code between the solution markers and the written
    answers, each line stripped, the markers and short lines left out."""
    texts = []
    for cell in nb.cells:
        if not is_solution(cell):
            continue
        lines = cell.source.splitlines()
        if cell.cell_type == "code":
            start, end = lines.index("### BEGIN SOLUTION"), lines.index("### END SOLUTION")
            lines = lines[start + 1 : end]
        texts += [line.strip() for line in lines if len(line.strip()) > 12]
    return texts


def leftovers(chapter: nbformat.NotebookNode, edition: nbformat.NotebookNode) -> list[str]:
    """What of ``chapter``'s solutions is still in its student ``edition``: solution text (a line that the chapter
    also has outside its solutions, as a solution reusing a line of the chapter does, is no leak), solution
    directives, solution markers."""
    text = "\n".join(cell.source for cell in edition.cells)
    outside = "\n".join(cell.source for cell in chapter.cells if not is_solution(cell))
    found = [line for line in solution_texts(chapter) if line in text and line not in outside]
    found += [cell.source for cell in edition.cells if student.SOLUTION_DIRECTIVE.search(cell.source)]
    found += [marker for marker in ("BEGIN SOLUTION", "HIDDEN TESTS") if marker in text]
    return found


# ------------------------------------------------------------------ the transformation, on a toy chapter


def test_student_edition_keeps_exercise_and_check_drops_solution_and_skips_stub_and_check():
    chapter = _toy_chapter()
    edition = student.student_notebook(chapter)
    sources = [cell.source for cell in edition.cells]
    assert sources == ["# Toy", "base = 20", chapter.cells[2].source, student.CODE_STUB, "assert answer == 42",
                       student.TEXT_STUB, "after = base + 1  # a later cell still runs"]
    assert leftovers(chapter, edition) == []
    skipped = [index for index, cell in enumerate(edition.cells) if set(student.SKIP_TAGS) <= set(cell.metadata.get("tags", []))]
    assert skipped == [3, 4]
    assert chapter.cells[4].source.startswith("### BEGIN SOLUTION"), "the chapter itself is left unchanged"


def test_leftover_finder_finds_solution_text_markers_and_directives():
    chapter = _toy_chapter()
    assert len(leftovers(chapter, chapter)) == 6  # two solution lines, two gates, two markers
    assert solution_texts(chapter) == ["answer = base + 22  # secret-code", "*Solution.* Forty-two, the secret-text."]


def test_a_chapter_without_exercise_markup_is_copied_unchanged():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Plain\n\n## Exercises\n\n1. Think."), nbformat.v4.new_code_cell("x = 1")]
    assert [cell.source for cell in student.student_notebook(nb).cells] == [cell.source for cell in nb.cells]


@pytest.mark.parametrize(
    ("source", "metadata", "error"),
    [
        ("Some text.\n\n:::{solution-start} ex1\n:::", {}, ValueError),  # a gate must be alone in its cell
        ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", {}, RuntimeError),  # solution code in a cell not marked
    ],
)
def test_student_edition_refuses_markup_it_would_get_wrong(source, metadata, error):
    nb = nbformat.v4.new_notebook()
    make = nbformat.v4.new_markdown_cell if source.startswith("Some") else nbformat.v4.new_code_cell
    nb.cells = [make(source, metadata=metadata)]
    with pytest.raises(error):
        student.student_notebook(nb)


# ------------------------------------------------------------------ the grader, on a toy chapter


def test_grader_scores_solution_stub_tampered_check_and_missing_check(tmp_path):
    chapter = _toy_chapter()
    source = tmp_path / "toy.ipynb"
    nbformat.write(chapter, source)
    edition = student.student_notebook(chapter)
    tampered = student.student_notebook(chapter)
    tampered.cells[4].source = "pass"  # a weakened check is replaced by the chapter's
    missing = student.student_notebook(chapter)
    del missing.cells[4]
    expected = {"solution": 1.0, "stub": 0.0, "tampered": 0.0, "missing": 0.0}
    for name, nb in (("solution", chapter), ("stub", edition), ("tampered", tampered), ("missing", missing)):
        path = tmp_path / f"{name}.ipynb"
        nbformat.write(nb, path)
        assert grade.grade(path, source, timeout=60) == [grade.Score("toy-ex1", expected[name], 1.0)], name
    assert grade.report([grade.Score("toy-ex1", 1.0, 1.0)]).splitlines()[-1].split()[1:] == ["1", "/", "1"]


# ------------------------------------------------------------------ the chapters


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_student_edition_of_every_chapter_holds_no_solution(path):
    chapter = nbformat.read(path, as_version=4)
    edition = student.student_notebook(chapter)
    assert leftovers(chapter, edition) == []
    for cell in edition.cells:
        if cell.cell_type == "code" and is_solution(cell):
            assert cell.source == student.CODE_STUB, cell.source


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_marked_up_chapter_has_four_exercises_each_graded_placed_and_timed(path):
    nb = nbformat.read(path, as_version=4)
    statements = [cell.source for cell in nb.cells if cell.cell_type == "markdown" and EXERCISE.search(cell.source)]
    if not statements and path != CHAPTER_1:
        pytest.skip(f"{path.name} has no exercise markup yet")
    checks = [cell for cell in nb.cells if cell.cell_type == "code" and is_grade(cell)]
    assert len(statements) >= 4 and len(checks) == len(statements)
    for text in statements:
        assert "Builds on:" in text and re.search(r"\babout \d+ minutes\b", text), text
    answers = [cell for cell in nb.cells if cell.cell_type == "markdown" and is_solution(cell)]
    assert len(answers) == len(statements), "each exercise explains its solution in a written answer"
    assert any("$$" in cell.source for cell in answers), "at least one solution is a derivation"


def _quick_env() -> dict[str, str]:
    return {**os.environ, "MRTUTOR_MODE": "quick", "OMP_NUM_THREADS": "1"}


def test_student_chapter_1_runs_in_the_quick_tier_under_nbval_with_stubs_skipped(tmp_path):
    written = student.write_student_notebooks(target=tmp_path / "notebooks")
    notebook = next(path for path in written if path.name == CHAPTER_1.name)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
         "--nbval-cell-timeout=120", "--rootdir", str(tmp_path), str(notebook)],
        cwd=tmp_path, env=_quick_env(), capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"\b10 skipped\b", run.stdout), run.stdout[-2000:]  # five stubs and five checks


@pytest.fixture
def quick_tier(monkeypatch):
    """The kernels the grader starts run in the quick tier."""
    monkeypatch.setenv("MRTUTOR_MODE", "quick")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_grader_gives_chapter_1_full_marks_and_its_student_stubs_zero(tmp_path, quick_tier):
    written = student.write_student_notebooks(target=tmp_path)
    stubs = next(path for path in written if path.name == CHAPTER_1.name)
    full = grade.grade(CHAPTER_1, CHAPTER_1)
    zero = grade.grade(stubs, CHAPTER_1)
    assert [score.exercise for score in full] == [f"ch01-ex{k}" for k in range(1, 6)]
    assert all(score.points == score.max_points == 1 for score in full), full
    assert [score.points for score in zero] == [0] * len(full), zero
