"""Keep chapter notebooks in the form git stores them.

Stored form: no outputs, no execution counts, no saved widget state, no execution timings, except
in the cells marked ``# NBVAL_CHECK_OUTPUT``. nbval (``--nbval-lax``) compares those cells' output in
the quick tier with the stored one, and only for a cell stored as run, so a check cell keeps its
reference output (text only) and the execution count 1.

Usage:
    python book/nbtools.py clean NOTEBOOK...    strip everything but the check cells' outputs
    python book/nbtools.py record NOTEBOOK...   run each notebook in the quick tier, store its
                                                check cells' outputs, strip the rest
(``make record-checks`` runs ``record`` on every chapter.)
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import nbformat

CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
# nbval skips the comparison for a cell whose stored execution count is None; the number itself is
# not compared, so every check cell stores the same one and diffs stay quiet.
CHECK_EXECUTION_COUNT = 1
# Per-cell metadata that records a run rather than the content.
RUN_METADATA = ("execution", "scrolled", "collapsed")


def is_check_cell(cell) -> bool:
    """Whether ``cell`` is a code cell whose output nbval compares (marked ``# NBVAL_CHECK_OUTPUT``)."""
    # The rule nbval applies: a comment line whose text, after the '#', is the marker's name.
    return cell.cell_type == "code" and any(
        line.strip().startswith("#") and line.strip().lstrip("#").strip() == "NBVAL_CHECK_OUTPUT"
        for line in cell.source.splitlines()
    )


def text_outputs(outputs: list, where: str) -> list:
    """``outputs`` reduced to what a reference may hold: streams and plain-text results.

    Raises ValueError when a check cell shows something else (an image, HTML, an error): nbval would
    compare it too, and a picture is not a deterministic check.
    """
    kept = []
    for output in outputs:
        if output.output_type == "stream":
            kept.append(nbformat.v4.new_output("stream", name=output.name, text=output.text))
        elif output.output_type == "execute_result" and set(output.data) == {"text/plain"}:
            kept.append(nbformat.v4.new_output("execute_result", data=dict(output.data)))
        else:
            kinds = sorted(output.get("data", {})) or [output.output_type]
            raise ValueError(f"{where} is marked {CHECK_MARKER} but shows {kinds}; print text instead")
    return kept


def clean(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """Put ``nb`` (changed in place, and returned) in its stored form."""
    nb.metadata.pop("widgets", None)
    for index, cell in enumerate(nb.cells):
        for key in RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        if is_check_cell(cell):
            cell.execution_count = CHECK_EXECUTION_COUNT
            cell.outputs = text_outputs(cell.outputs, f"{name} cell {index}")
        else:
            cell.execution_count = None
            cell.outputs = []
    return nb


def record(path: Path, timeout: int = 180) -> nbformat.NotebookNode:
    """Run ``path`` in the quick tier; return it in stored form with its check cells' new outputs."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    executed = copy.deepcopy(nb)
    previous = os.environ.get("MRTUTOR_MODE")
    os.environ["MRTUTOR_MODE"] = "quick"
    try:
        NotebookClient(executed, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if previous is None:
            os.environ.pop("MRTUTOR_MODE")
        else:
            os.environ["MRTUTOR_MODE"] = previous
    for cell, ran in zip(nb.cells, executed.cells):
        if is_check_cell(cell):
            cell.outputs = ran.outputs
    return clean(nb, path.name)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("clean", "record"))
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if args.command == "record":
            nb = record(path)
        else:
            nb = clean(nbformat.read(path, as_version=4), path.name)
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(f"nbtools: {args.command} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
