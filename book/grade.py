"""Grade a filled-in chapter: run it and score every exercise by its grading cells, with nbgrader's own rules.

The grading cells (nbgrader grade cells, ``metadata.nbgrader.grade``; see ``book/student.py``) are taken from the
chapter as the repository holds it, by their ``grade_id``, so a submission cannot change what is checked. The
notebook then runs top to bottom in a fresh kernel (nbgrader's ``Execute``: a failing cell does not stop the run, and
the cells the student edition tags to skip are run), in the tier named by ``MRTUTOR_MODE``. A grading cell scores
its points when it runs without an error, and zero otherwise (``nbgrader.utils.determine_grade``). Written answers
are not scored here: they are read by a person.

This is what ``nbgrader autograde`` does for one notebook, without its course folder and gradebook database.

Usage: ``python book/grade.py SUBMISSION [--source CHAPTER] [--timeout SECONDS]``; ``CHAPTER`` defaults to
``notebooks/<name of SUBMISSION>``. Prints one line per exercise and the total.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbgrader.preprocessors import Execute
from nbgrader.utils import determine_grade, is_grade

BOOK = Path(__file__).resolve().parent
REPO = BOOK.parent

sys.path.insert(0, str(BOOK))
from student import SKIP_TAGS  # noqa: E402


@dataclass(frozen=True)
class Score:
    """The score of one exercise: its grading cell's ``grade_id``, the points earned and the points possible."""

    exercise: str
    points: float
    max_points: float


def grading_cells(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    """The code cells of ``nb`` that grade an exercise, by ``grade_id`` (a duplicate id is an error)."""
    cells = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and is_grade(cell):
            grade_id = cell.metadata.nbgrader["grade_id"]
            if grade_id in cells:
                raise ValueError(f"two grading cells have grade_id {grade_id!r}")
            cells[grade_id] = cell
    return cells


def prepare(submission: nbformat.NotebookNode, source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``submission`` with the grading cells of ``source`` in place of its own and every skip tag removed.

    A grading cell that the submission lacks is not added back: its exercise scores zero."""
    prepared = copy.deepcopy(submission)
    official = grading_cells(source)
    if not official:
        raise ValueError("the chapter has no grading cells (nbgrader grade cells): nothing to grade")
    for grade_id, cell in grading_cells(prepared).items():
        if grade_id in official:
            cell.source = official[grade_id].source
            cell.metadata.nbgrader = copy.deepcopy(official[grade_id].metadata.nbgrader)
    for cell in prepared.cells:
        tags = cell.metadata.get("tags")
        if tags:
            cell.metadata.tags = [tag for tag in tags if tag not in SKIP_TAGS]
    return prepared


def grade(submission: Path, source: Path, timeout: int = 600) -> list[Score]:
    """Run ``submission`` with the grading cells of chapter ``source`` and score each exercise, in ``source``'s order."""
    chapter = nbformat.read(source, as_version=4)
    prepared = prepare(nbformat.read(submission, as_version=4), chapter)
    executor = Execute(timeout=timeout)
    ran, _ = executor.preprocess(prepared, {"metadata": {"path": str(source.resolve().parent)}})
    earned = {}
    for grade_id, cell in grading_cells(ran).items():
        points, max_points = determine_grade(cell)
        earned[grade_id] = Score(grade_id, points, max_points)
    return [
        earned.get(grade_id, Score(grade_id, 0.0, float(cell.metadata.nbgrader["points"])))
        for grade_id, cell in grading_cells(chapter).items()
    ]


def report(scores: list[Score]) -> str:
    """One line per exercise, then the total."""
    lines = [f"{score.exercise:24s} {score.points:g} / {score.max_points:g}" for score in scores]
    total, possible = sum(score.points for score in scores), sum(score.max_points for score in scores)
    return "\n".join([*lines, f"{'total':24s} {total:g} / {possible:g}"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("submission", type=Path, help="the filled-in notebook")
    parser.add_argument("--source", type=Path, help="the chapter it answers (default: notebooks/<same name>)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = parser.parse_args(argv)
    source = args.source or REPO / "notebooks" / args.submission.name
    for path in (args.submission, source):
        if not path.is_file():
            raise SystemExit(f"grade: {path} is not a file")
    try:
        print(report(grade(args.submission, source, args.timeout)))
    except ValueError as error:
        raise SystemExit(f"grade: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
