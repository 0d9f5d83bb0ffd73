"""The chapters as git stores them, and how long each takes in the quick tier.

nbval runs the notebooks themselves (``make test``: ``pytest --nbval-lax tests notebooks/*.ipynb``
with ``MRTUTOR_MODE=quick``); ``tests/conftest.py`` times those runs and the timing test below checks
each chapter stayed under the limit. The other tests read the chapters only, and hold the chapter
template (``book/templates/chapter_template.ipynb``) to the same rules; the template is also run.

Stored form: an id and no outputs or execution counts in any cell. A cell marked ``# NBVAL_CHECK_OUTPUT``
therefore has nothing stored to be compared with: it proves its point by asserting it, and nbval fails
the chapter when the assertion fails.
"""

from __future__ import annotations

import ast
import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "book" / "templates" / "chapter_template.ipynb"
CHAPTERS = sorted((REPO / "notebooks").glob("*.ipynb"))

sys.path.insert(0, str(REPO / "book"))
import nbtools  # noqa: E402


def _id(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _first_code_cell(nb) -> str:
    return next(cell.source for cell in nb.cells if cell.cell_type == "code")


def storage_problems(nb: nbformat.NotebookNode) -> list[str]:
    """What keeps ``nb`` from its stored form (see ``book/nbtools.py``), one line per problem: any
    output, any execution count (check cells included) and saved widget state."""
    problems = []
    if "widgets" in nb.metadata:
        problems.append("notebook metadata holds saved widget state")
    for index, cell in enumerate(nb.cells):
        if "id" not in cell:
            problems.append(f"cell {index} has no id")
        if cell.cell_type != "code":
            continue
        if cell.execution_count is not None:
            problems.append(f"cell {index} has execution count {cell.execution_count}")
        problems += [f"cell {index} holds a {output.output_type} output" for output in cell.outputs]
    return problems


def _asserts(node: ast.AST) -> bool:
    """Whether ``node`` is an ``assert`` statement or a call to an ``assert_*`` function."""
    if isinstance(node, ast.Assert):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name.startswith("assert_")  # torch.testing.assert_close, np.testing.assert_allclose
    return False


def _python(cell) -> ast.Module:
    """A code cell's syntax tree; IPython magics and shell escapes are not Python, so they become blank lines."""
    lines = cell.source.splitlines()
    return ast.parse("\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines))


def checks_that_cannot_fail(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of the ``# NBVAL_CHECK_OUTPUT`` cells that hold no ``assert`` (statement or
    ``assert_*`` call): with nothing stored to compare, such a cell passes whatever it prints."""
    weak = []
    for index, cell in enumerate(nb.cells):
        if not nbtools.is_check_cell(cell):
            continue
        if not any(_asserts(node) for node in ast.walk(_python(cell))):
            weak.append(index)
    return weak


def hidden_figures(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of code cells where a ``viz.show_*`` figure is made as a bare statement but never shown.

    ``mrtutor.viz`` returns figures outside pyplot: one shows only as the cell's last expression
    (without a trailing ``;``) or through ``display(...)``; anywhere else it is silently dropped.
    """
    hidden = []
    for index, cell in enumerate(nb.cells):
        if "id" not in cell:
            problems.append(f"cell {index} has no id")
        if cell.cell_type != "code":
            continue
        body = _python(cell).body
        for position, statement in enumerate(body):
            call = statement.value if isinstance(statement, ast.Expr) else None
            func = getattr(call, "func", None)
            if not (isinstance(func, ast.Attribute) and func.attr.startswith("show_")
                    and getattr(func.value, "id", "") == "viz"):
                continue
            if position != len(body) - 1 or cell.source.rstrip().endswith(";"):
                hidden.append(index)
                break
    return hidden


# ------------------------------------------------------------------ the rules themselves can fail


def test_hidden_figures_finds_viz_figures_that_never_show():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (
        "viz.show_images([x])",  # last expression: shows
        "viz.show_images([x]);",  # the semicolon hides it
        "viz.show_images([x])\ny = 1",  # not the last statement: dropped
        "display(viz.show_images([x]))\nviz.show_comparison(r, x)",  # both show
        "fig = viz.show_images([x])",  # kept for later: not a bare statement
    )]
    assert hidden_figures(nb) == [1, 2]


def test_storage_problems_finds_outputs_counts_and_widget_state_in_check_cells_too():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("print(1)", execution_count=3),
        nbformat.v4.new_code_cell(
            "import matplotlib", outputs=[nbformat.v4.new_output("display_data", data={"image/png": "AA=="})]
        ),
        nbformat.v4.new_code_cell(
            "print(2)\nassert True\n# NBVAL_CHECK_OUTPUT",
            execution_count=1,
            outputs=[nbformat.v4.new_output("stream", name="stdout", text="2\n")],
        ),
        nbformat.v4.new_markdown_cell("text"),
    ]
    del nb.cells[3]["id"]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    assert storage_problems(nb) == [
        "notebook metadata holds saved widget state",
        "cell 0 has execution count 3",
        "cell 1 holds a display_data output",
        "cell 2 has execution count 1",
        "cell 2 holds a stream output",
        "cell 3 has no id",
    ]


def test_clean_strips_every_output_count_and_run_record_check_cells_included():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1\nx", execution_count=1, outputs=[
            nbformat.v4.new_output("execute_result", data={"text/plain": "1"}, execution_count=1)]),
        nbformat.v4.new_code_cell("print('ok')\nassert x\n#  NBVAL_CHECK_OUTPUT", execution_count=2, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="ok\n")]),
    ]
    nb.cells[0].metadata["execution"] = {"iopub.status.busy": "2025-01-01"}
    nb.cells[1].metadata["scrolled"] = True
    nb.metadata["widgets"] = {}
    del nb.cells[0]["id"]
    cleaned = nbtools.clean(copy.deepcopy(nb))
    assert len(storage_problems(nb)) == 6 and storage_problems(cleaned) == []
    assert all(cell.metadata == {} for cell in cleaned.cells)
    assert [cell.source for cell in cleaned.cells] == [cell.source for cell in nb.cells]


def test_checks_that_cannot_fail_finds_check_cells_that_only_print():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("print('err', 1e-7)\n# NBVAL_CHECK_OUTPUT"),
        nbformat.v4.new_code_cell("err = 1e-7\nprint(err)\nassert err < 1e-5, err\n# NBVAL_CHECK_OUTPUT"),
        nbformat.v4.new_code_cell("torch.testing.assert_close(a, b)\n# NBVAL_CHECK_OUTPUT"),
        nbformat.v4.new_code_cell("%time x = 1\nprint('assert in a string')\n# NBVAL_CHECK_OUTPUT"),
        nbformat.v4.new_code_cell("print(1)"),  # not a check cell
    ]
    assert checks_that_cannot_fail(nb) == [0, 3]


# ------------------------------------------------------------------ every chapter and the template


@pytest.mark.parametrize("path", CHAPTERS + [TEMPLATE], ids=_id)
def test_stored_without_outputs_or_execution_counts(path):
    problems = storage_problems(_read(path))
    assert not problems, f"{_id(path)}: {problems}; run `python book/nbtools.py clean {_id(path)}`"


@pytest.mark.parametrize("path", CHAPTERS + [TEMPLATE], ids=_id)
def test_every_check_cell_asserts_its_result(path):
    weak = checks_that_cannot_fail(_read(path))
    assert not weak, (
        f"{_id(path)}: cells {weak} are marked {nbtools.CHECK_MARKER} but hold no assert; no output is "
        "stored to compare with, so assert what the cell prints (`assert err < tol, err`)"
    )


@pytest.mark.parametrize("path", CHAPTERS + [TEMPLATE], ids=_id)
def test_every_viz_figure_is_shown(path):
    hidden = hidden_figures(_read(path))
    assert not hidden, (
        f"{_id(path)}: cells {hidden} make a viz figure that never shows (a trailing ';' or not the cell's last "
        "expression); end the cell with it, or wrap it in display(...)"
    )


@pytest.mark.parametrize("path", CHAPTERS + [TEMPLATE], ids=_id)
def test_first_cell_is_a_title_and_kernel_is_python3(path):
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), (
        f"{_id(path)} must open with a markdown cell whose first line is the '# ' title"
    )
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{_id(path)}: kernel is not python3"


@pytest.mark.parametrize("path", CHAPTERS, ids=_id)
def test_first_code_cell_is_the_setup_cell_of_the_template(path):
    setup = _first_code_cell(_read(TEMPLATE))
    assert _first_code_cell(_read(path)).startswith(setup), (
        f"{_id(path)}: the first code cell must start with the setup cell of {_id(TEMPLATE)} "
        "(when mrtutor is missing: clone the repository and install it; then print(mrtutor.config.describe()))"
    )


@pytest.mark.parametrize("colab", [True, False], ids=["colab", "elsewhere"])
def test_template_setup_cell_clones_and_installs_the_repository_when_mrtutor_is_missing(
    colab, tmp_path, monkeypatch, capsys
):
    """The setup cell run as if mrtutor were missing, with git and pip recorded instead of run."""
    import importlib.util

    url = yaml.safe_load((REPO / "book" / "_config.yml").read_text())["repository"]["url"]
    home = tmp_path / "home"
    clone = "/content/mrtutor" if colab else str(home / "mrtutor")
    commands = []
    find_spec, isdir = importlib.util.find_spec, os.path.isdir
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mrtutor" else find_spec(name, *a))
    monkeypatch.setattr(os.path, "isdir", lambda path: colab if path == "/content" else isdir(path))
    monkeypatch.setattr(subprocess, "run", lambda args, **kwargs: commands.append((args, kwargs)))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(sys, "path", list(sys.path))

    exec(_first_code_cell(_read(TEMPLATE)), {})

    assert commands == [
        (["git", "clone", "--depth", "1", url, clone], {"check": True}),
        ([sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{clone}[data]"], {"check": True}),
    ]
    assert sys.path[0] == clone
    assert capsys.readouterr().out.startswith("mrtutor tier: ")

    # Run again after a clone that stopped before the install: no second clone into the same folder.
    commands.clear()
    monkeypatch.setattr(os.path, "isdir", lambda path: path == clone or (colab if path == "/content" else isdir(path)))
    exec(_first_code_cell(_read(TEMPLATE)), {})
    assert [args[:3] for args, _ in commands] == [[sys.executable, "-m", "pip"]]


@pytest.mark.parametrize("path", CHAPTERS, ids=_id)
def test_chapter_is_in_the_table_of_contents(path):
    toc = (REPO / "book" / "_toc.yml").read_text()
    assert f"file: notebooks/{path.stem}\n" in toc, f"add `- file: notebooks/{path.stem}` to book/_toc.yml"


def test_template_runs_in_the_quick_tier_and_its_check_prints_its_number():
    from nbclient import NotebookClient

    nb = _read(TEMPLATE)
    executed = copy.deepcopy(nb)
    env_before = os.environ.get("MRTUTOR_MODE")
    os.environ["MRTUTOR_MODE"] = "quick"
    try:
        # Raises if a cell fails, a check cell's assertion included.
        NotebookClient(executed, timeout=120, resources={"metadata": {"path": str(TEMPLATE.parent)}}).execute()
    finally:
        os.environ.pop("MRTUTOR_MODE")
        if env_before is not None:
            os.environ["MRTUTOR_MODE"] = env_before
    setup_index = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    printed = "".join(o.get("text", "") for o in executed.cells[setup_index].outputs)
    assert printed.startswith("mrtutor tier: quick | device: "), printed
    checks = [ran for stored, ran in zip(nb.cells, executed.cells) if nbtools.is_check_cell(stored)]
    assert checks, f"{_id(TEMPLATE)} must show a check cell"
    for ran in checks:
        assert [o.output_type for o in ran.outputs] == ["stream"] and ran.outputs[0].text.strip()


# ------------------------------------------------------------------ quick-tier time, from nbval's run


@pytest.mark.after_notebooks
@pytest.mark.parametrize("path", CHAPTERS, ids=_id)
def test_chapter_runs_in_the_quick_tier_within_the_limit(path, notebook_clock):
    key = _id(path)
    if key not in notebook_clock.seconds:
        pytest.skip(f"nbval did not run {key} in this session (make test does)")
    if os.environ.get("MRTUTOR_MODE") != "quick":
        pytest.fail(f"{key} was run with MRTUTOR_MODE={os.environ.get('MRTUTOR_MODE')!r}; time it in quick")
    seconds = notebook_clock.seconds[key]
    assert seconds < notebook_clock.limit_s, (
        f"{key} took {seconds:.0f} s in the quick tier; the limit is {notebook_clock.limit_s:.0f} s"
    )


@pytest.mark.after_notebooks
@pytest.mark.parametrize("path", CHAPTERS, ids=_id)
def test_every_glued_value_in_the_prose_is_glued_by_a_cell(path, notebook_clock, glued_names):
    key = _id(path)
    if key not in notebook_clock.seconds or key in notebook_clock.failed:
        pytest.skip(f"nbval did not run {key} to the end in this session (make test does)")
    markdown = "\n".join(c.source for c in nbformat.read(path, 4).cells if c.cell_type == "markdown")
    references = re.findall(r"\{glue(?::\w+)?\}`([^`:]+)(:[^`]*)?`", markdown)
    glued = glued_names.names.get(key, {})
    missing = {name for name, _ in references} - set(glued)
    assert not missing, f"{key}: the prose shows values that no cell glues: {sorted(missing)}"
    # A format spec is applied to the number in the value's text; np.float64(...) or tensor(...) has none.
    not_numbers = {name: glued[name] for name, spec in references if spec and not _is_number(glued[name])}
    assert not not_numbers, f"{key}: formatted glued values that are not plain numbers: {not_numbers}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
