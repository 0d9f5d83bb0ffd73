"""Keep chapter notebooks in the form git stores them.

Stored form: an id, and no outputs, execution counts, saved widget state or execution timings, in every
cell. Cells marked ``# NBVAL_CHECK_OUTPUT`` are no exception: a check cell prints its result and
asserts it, so nbval (``--nbval-lax``) fails the chapter when the check fails, with nothing stored to
compare against.

Usage:
    python book/nbtools.py clean NOTEBOOK...    strip outputs, counts and run metadata in place
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
# Per-cell metadata that records a run rather than the content.
RUN_METADATA = ("execution", "scrolled", "collapsed")


def is_check_cell(cell) -> bool:
    """Whether ``cell`` is a code cell marked ``# NBVAL_CHECK_OUTPUT`` (a deterministic check)."""
    # The rule nbval applies: a comment line whose text, after the '#', is the marker's name.
    return cell.cell_type == "code" and any(
        line.strip().startswith("#") and line.strip().lstrip("#").strip() == "NBVAL_CHECK_OUTPUT"
        for line in cell.source.splitlines()
    )


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Put ``nb`` (changed in place, and returned) in its stored form."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if "id" not in cell:  # nbformat 4.5 wants one; cells pasted in by hand can lack it
            cell.id = nbformat.v4.nbbase.random_cell_id()
        for key in RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.execution_count = None
            cell.outputs = []
    return nb


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("clean",))
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.notebooks:
        nb = clean(nbformat.read(path, as_version=4))
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(f"nbtools: clean {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
