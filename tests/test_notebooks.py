"""The chapters as git stores them, and how long each takes in the quick tier.

nbval runs the notebooks themselves (``make test``: ``pytest --nbval-lax tests notebooks/*.ipynb``
with ``MRTUTOR_MODE=quick``); ``tests/conftest.py`` times those runs and the timing test below checks
each chapter stayed under the limit. The other tests read the files only, and also hold the chapter
template (``book/templates/chapter_template.ipynb``) to the same rules.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import nbformat
import pytest

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
    """What keeps ``nb`` from its stored form (see ``book/nbtools.py``), one line per problem:
    no outputs and no execution counts, except that a ``# NBVAL_CHECK_OUTPUT`` cell holds its text
    reference output and the execution count nbval needs to compare it."""
    problems = []
    if "widgets" in nb.metadata:
        problems.append("notebook metadata holds saved widget state")
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        check = nbtools.is_check_cell(cell)
        expected_count = nbtools.CHECK_EXECUTION_COUNT if check else None
        if cell.execution_count != expected_count:
            problems.append(f"cell {index} has execution count {cell.execution_count}, not {expected_count}")
        for output in cell.outputs:
            if not check:
                problems.append(f"cell {index} holds a {output.output_type} output")
            elif output.output_type not in ("stream", "execute_result"):
                problems.append(f"check cell {index} holds a {output.output_type} output")
            elif output.output_type == "execute_result" and set(output.data) != {"text/plain"}:
                problems.append(f"check cell {index} holds a result that is not plain text")
    return problems


# ------------------------------------------------------------------ the rule itself can fail


def test_storage_problems_finds_outputs_counts_and_widget_state():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("print(1)", execution_count=3),
        nbformat.v4.new_code_cell(
            "import matplotlib", outputs=[nbformat.v4.new_output("display_data", data={"image/png": "AA=="})]
        ),
        nbformat.v4.new_code_cell(
            "print(2)\n# NBVAL_CHECK_OUTPUT",
            outputs=[nbformat.v4.new_output("display_data", data={"text/html": "<b>2</b>"})],
        ),
    ]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    found = storage_problems(nb)
    assert found == [
        "notebook metadata holds saved widget state",
        "cell 0 has execution count 3, not None",
        "cell 1 holds a display_data output",
        "cell 2 has execution count None, not 1",
        "check cell 2 holds a display_data output",
    ]


def test_clean_keeps_only_check_outputs_and_refuses_pictures_in_checks():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1\nx", execution_count=1, outputs=[
            nbformat.v4.new_output("execute_result", data={"text/plain": "1"}, execution_count=1)]),
        nbformat.v4.new_code_cell("print('ok')\n#  NBVAL_CHECK_OUTPUT", execution_count=2, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="ok\n")]),
    ]
    nb.cells[0].metadata["execution"] = {"iopub.status.busy": "2025-01-01"}
    nb.metadata["widgets"] = {}
    cleaned = nbtools.clean(copy.deepcopy(nb))
    assert storage_problems(cleaned) == []
    assert cleaned.cells[0].outputs == [] and "execution" not in cleaned.cells[0].metadata
    assert [o.text for o in cleaned.cells[1].outputs] == ["ok\n"]
    assert (cleaned.cells[0].execution_count, cleaned.cells[1].execution_count) == (None, 1)

    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"image/png": "AA=="})]
    with pytest.raises(ValueError, match="image/png"):
        nbtools.clean(nb, "bad.ipynb")


# ------------------------------------------------------------------ every chapter and the template


@pytest.mark.parametrize("path", CHAPTERS + [TEMPLATE], ids=_id)
def test_stored_without_outputs_or_execution_counts(path):
    problems = storage_problems(_read(path))
    assert not problems, f"{_id(path)}: {problems}; run `python book/nbtools.py clean {_id(path)}`"


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
        "(Colab install, then print(mrtutor.config.describe()))"
    )


def test_template_setup_cell_installs_when_missing_and_prints_tier_and_device():
    setup = _first_code_cell(_read(TEMPLATE))
    assert 'importlib.util.find_spec("mrtutor") is None' in setup
    assert '"pip", "install"' in setup and "git+https://" in setup
    assert setup.rstrip().endswith("print(mrtutor.config.describe())")


@pytest.mark.parametrize("path", CHAPTERS, ids=_id)
def test_chapter_is_in_the_table_of_contents(path):
    toc = (REPO / "book" / "_toc.yml").read_text()
    assert f"file: notebooks/{path.stem}\n" in toc, f"add `- file: notebooks/{path.stem}` to book/_toc.yml"


def test_template_runs_in_the_quick_tier_and_matches_its_check_output():
    from nbclient import NotebookClient

    nb = _read(TEMPLATE)
    executed = copy.deepcopy(nb)
    env_before = os.environ.get("MRTUTOR_MODE")
    os.environ["MRTUTOR_MODE"] = "quick"
    try:
        NotebookClient(executed, timeout=120, resources={"metadata": {"path": str(TEMPLATE.parent)}}).execute()
    finally:
        os.environ.pop("MRTUTOR_MODE")
        if env_before is not None:
            os.environ["MRTUTOR_MODE"] = env_before
    setup_index = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    printed = "".join(o.get("text", "") for o in executed.cells[setup_index].outputs)
    assert printed.startswith("mrtutor tier: quick | device: "), printed
    for stored, ran in zip(nb.cells, executed.cells):
        if nbtools.is_check_cell(stored):
            assert [o.text for o in stored.outputs] == [o.text for o in ran.outputs if o.output_type == "stream"]


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

