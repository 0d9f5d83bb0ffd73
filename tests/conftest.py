"""Suite-wide pytest wiring: a clock for the chapters that nbval runs, and a check of their figures.

``make test`` runs ``pytest --nbval-lax tests notebooks/*.ipynb`` in the quick tier: nbval executes
each chapter once, cell by cell. The clock below adds up, per notebook, the time of every phase of
every cell (kernel start and shutdown included), prints the totals at the end of the run, and hands
them to ``tests/test_notebooks.py``, whose timing test runs after all notebooks (marker
``after_notebooks``) and fails a chapter over the limit. No notebook is executed twice. While nbval
runs a chapter in its fresh kernel, ``FiguresAsImages`` fails any cell whose figure comes out as
text only (``<Figure size ... with N Axes>``), which is what a reader would see instead of the image,
and ``GluedNames`` collects the names each chapter glues (``myst_nb.glue``) for the test that every
``{glue:...}`` reference in the prose has its value.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

CLOCK_PLUGIN = "mrtutor-notebook-clock"
FIGURES_PLUGIN = "mrtutor-figures-as-images"
GLUE_PLUGIN = "mrtutor-glued-names"


class NotebookClock:
    """Seconds and cell counts per notebook, from nbval's test reports (node ids ``path.ipynb::Cell n``)."""

    limit_s = 180.0  # a chapter's quick-tier run on two CPU cores, kernel start included

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.cells: dict[str, int] = defaultdict(int)
        self.failed: set[str] = set()

    # Registered as a plain plugin (not a conftest hook), so it sees reports from every directory.
    def pytest_runtest_logreport(self, report):
        path = report.nodeid.partition("::")[0]
        if not path.endswith(".ipynb"):
            return
        self.seconds[path] += report.duration
        if report.when == "call":
            self.cells[path] += 1
        if report.failed:
            self.failed.add(path)

    def pytest_terminal_summary(self, terminalreporter):
        if not self.seconds:
            return
        terminalreporter.write_sep("-", f"chapter run times (limit {self.limit_s:.0f} s each)")
        for path, seconds in sorted(self.seconds.items()):
            verdict = "over the limit" if seconds >= self.limit_s else "ok"
            note = ", with failures" if path in self.failed else ""
            terminalreporter.write_line(
                f"{path}: {seconds:6.1f} s, {self.cells[path]} cells, {verdict}{note}"
            )


class FiguresAsImages:
    """Fails an nbval cell whose outputs hold a matplotlib figure without its image."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        result = yield
        for output in getattr(item, "test_outputs", None) or []:
            shown = output.get("data", {})
            text = str(shown.get("text/plain", ""))
            if text.startswith("<Figure size") and "image/png" not in shown:
                raise AssertionError(f"{item.nodeid}: a figure shows as the text {text!r}, not as an image")
        return result


class GluedNames:
    """The names glued by each notebook's cells as nbval ran them (``scrapbook`` metadata of their outputs)."""

    def __init__(self):
        self.names: dict[str, dict[str, str]] = defaultdict(dict)  # notebook -> name -> its text/plain

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        try:
            return (yield)
        finally:
            path = item.nodeid.partition("::")[0]
            for output in getattr(item, "test_outputs", None) or []:
                scrapbook = output.get("metadata", {}).get("scrapbook", {})
                if scrapbook.get("name"):
                    text = output.get("data", {}).get(scrapbook.get("mime_prefix", "") + "text/plain", "")
                    self.names[path][scrapbook["name"]] = str(text)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "after_notebooks: run after every notebook item (reads what nbval measured)"
    )
    if not config.pluginmanager.has_plugin(CLOCK_PLUGIN):
        config.pluginmanager.register(NotebookClock(), CLOCK_PLUGIN)
    if not config.pluginmanager.has_plugin(FIGURES_PLUGIN):
        config.pluginmanager.register(FiguresAsImages(), FIGURES_PLUGIN)
    if not config.pluginmanager.has_plugin(GLUE_PLUGIN):
        config.pluginmanager.register(GluedNames(), GLUE_PLUGIN)


def pytest_collection_modifyitems(config, items):
    # The timing checks read the clock, so they go after every notebook, whatever the argument order.
    late = [item for item in items if item.get_closest_marker("after_notebooks")]
    items[:] = [item for item in items if not item.get_closest_marker("after_notebooks")] + late


@pytest.fixture
def notebook_clock(request) -> NotebookClock:
    """The clock that timed this session's nbval notebooks."""
    return request.config.pluginmanager.get_plugin(CLOCK_PLUGIN)


@pytest.fixture
def glued_names(request) -> GluedNames:
    """The names glued by this session's nbval notebooks."""
    return request.config.pluginmanager.get_plugin(GLUE_PLUGIN)
