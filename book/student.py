"""The student edition: every chapter with its solutions taken out, and a website built from them.

``make student`` runs this. It writes the student notebooks to ``book/_build/student/notebooks`` and, unless
``--notebooks-only``, builds their website from a copy of the book's pages in ``book/_build/student/book``
(with ``build.py``, in the tier named by ``MRTUTOR_MODE``) into ``book/_build/student/book/_build/html``.

A chapter marks its exercises as follows (``book/teaching.md``, "The course kit", has the full convention):

* the statement is a sphinx-exercise ``exercise`` directive in a markdown cell; it stays;
* the solution sits between a ``solution-start`` and a ``solution-end`` directive, each alone in a markdown cell;
  both cells go;
* solution code is an nbgrader solution cell (``metadata.nbgrader.solution``) whose code lies between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the region becomes a stub that runs (:data:`CODE_STUB`);
* a written answer is an nbgrader solution cell in markdown; its text becomes :data:`TEXT_STUB`;
* the checks are an nbgrader grade cell (``metadata.nbgrader.grade``, ``points``); it stays, less any
  ``### BEGIN HIDDEN TESTS`` region, so students see what is checked.

Stubs and checks are tagged so that neither the website build (myst-nb's ``skip-execution``) nor nbval
(``nbval-skip``) runs them; ``book/grade.py`` runs them. A chapter without this markup is copied unchanged.

Usage: ``python book/student.py [--notebooks-only] [--all]``.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml
from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions
from nbgrader.utils import is_grade, is_solution

BOOK = Path(__file__).resolve().parent
REPO = BOOK.parent
STUDENT = BOOK / "_build" / "student"
STUDENT_NOTEBOOKS = STUDENT / "notebooks"
STUDENT_BOOK = STUDENT / "book"

sys.path.insert(0, str(BOOK))
import build  # noqa: E402
import nbtools  # noqa: E402
import vendor_assets  # noqa: E402

CODE_STUB = "# YOUR CODE HERE\n..."
TEXT_STUB = "*Your answer here.*"
SKIP_TAGS = ("skip-execution", "nbval-skip")
SOLUTION_DIRECTIVE = re.compile(r"^[ \t]*(?::{3,}|`{3,})[ \t]*\{solution(?:-start|-end)?\}", re.MULTILINE)
# The book's own pages: everything the site needs besides the chapters and what a build writes.
PAGE_SUFFIXES = {".md", ".yml", ".bib"}


def is_solution_directive_cell(cell) -> bool:
    """Whether ``cell`` is a markdown cell that holds a ``solution``, ``solution-start`` or ``solution-end`` directive.

    Such a cell must hold nothing else: the student edition drops it whole, so text beside the directive would be lost.
    """
    if cell.cell_type != "markdown" or not SOLUTION_DIRECTIVE.search(cell.source):
        return False
    if not SOLUTION_DIRECTIVE.match(cell.source.lstrip("\n")):
        raise ValueError(
            f"cell {cell.get('id')}: a solution directive must open its markdown cell and be alone in it:\n{cell.source}"
        )
    return True


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student edition of chapter ``nb`` (left unchanged): solutions out, stubs in, checks kept but skipped."""
    student = copy.deepcopy(nb)
    student.cells = [cell for cell in student.cells if not is_solution_directive_cell(cell)]
    clear = ClearSolutions(code_stub={"python": CODE_STUB}, text_stub=TEXT_STUB, enforce_metadata=True)
    student, _ = clear.preprocess(student, {})
    student, _ = ClearHiddenTests(enforce_metadata=True).preprocess(student, {})
    for cell in student.cells:
        if cell.cell_type == "code" and (is_solution(cell) or is_grade(cell)):
            tags = cell.metadata.setdefault("tags", [])
            tags.extend(tag for tag in SKIP_TAGS if tag not in tags)
    return nbtools.clean(student)


def write_student_notebooks(source: Path = REPO / "notebooks", target: Path = STUDENT_NOTEBOOKS) -> list[Path]:
    """Write the student edition of every chapter in ``source`` to ``target`` (emptied first); return the paths."""
    chapters = sorted(source.glob("*.ipynb"))
    if not chapters:
        raise FileNotFoundError(f"no chapter notebooks in {source}")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    written = []
    for chapter in chapters:
        nb = student_notebook(nbformat.read(chapter, as_version=4))
        nbformat.validate(nb)
        nbformat.write(nb, target / chapter.name)
        written.append(target / chapter.name)
    return written


def copy_book_pages(target: Path = STUDENT_BOOK) -> Path:
    """Copy the book's pages, config and vendored assets to ``target`` for the student site; return ``target``.

    The copy's title says it is the student edition. Its ``_build`` folder (the execution cache) is kept.
    """
    target.mkdir(parents=True, exist_ok=True)
    for path in BOOK.iterdir():
        if path.is_file() and path.suffix in PAGE_SUFFIXES:
            shutil.copy2(path, target / path.name)
    shutil.copytree(vendor_assets.VENDOR_DIR, target / vendor_assets.VENDOR_DIR.name, dirs_exist_ok=True)
    config = yaml.safe_load((target / "_config.yml").read_text())
    config["title"] = f"{config['title']} (student edition)"
    (target / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks-only", action="store_true", help="write the student notebooks, build no site")
    parser.add_argument("--all", action="store_true", help="re-read and re-write every page of the site")
    args = parser.parse_args()
    try:
        written = write_student_notebooks()
        print(f"student: {len(written)} chapter(s) in {STUDENT_NOTEBOOKS}", flush=True)
        if not args.notebooks_only:
            vendor_assets.ensure_vendored()
            build.build(STUDENT_NOTEBOOKS, args.all, book=copy_book_pages())
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"student: {error.cmd[0]} failed with exit status {error.returncode}")
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        raise SystemExit(f"student: {error}")


if __name__ == "__main__":
    main()
