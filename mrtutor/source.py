"""The package's own code as the chapters show it: the idea of a function, without its argument checks.

A chapter prints the source it teaches. Validation (``if ...: raise ...`` blocks, calls of
``check_*`` helpers) makes a function safe to call but hides its idea, so ``trimmed`` leaves those
statements out, keeps the first paragraph of the docstring, marks each cut with a comment, and
says where the full source lives.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _is_check(node: ast.stmt) -> bool:
    """An ``if`` whose body only raises (with no ``else``), or a call of a ``check_*`` / ``_check*`` helper."""
    if isinstance(node, ast.If) and not node.orelse:
        return all(isinstance(statement, ast.Raise) for statement in node.body)
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name.startswith(("check_", "_check"))
    return False


def _docstring_tail(node: ast.AST, lines: list[str]) -> range | None:
    """Lines of ``node``'s docstring after its first paragraph (0-based), or None when nothing is cut."""
    body = getattr(node, "body", [])
    if not (body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)):
        return None
    first, last = body[0].lineno - 1, body[0].end_lineno - 1
    for i in range(first, last):
        if not lines[i].strip():
            return range(i, last)  # from the blank line to the line before the closing quotes
    return None


def trimmed(obj) -> str:
    """The source of a function, method or class of the package, without argument checks and with
    docstrings cut to their first paragraph, followed by a line that names the full source."""
    lines = textwrap.dedent(inspect.getsource(obj)).splitlines()
    tree = ast.parse("\n".join(lines))
    cut: dict[int, str] = {}  # first line -> comment replacing the cut
    removed: set[int] = set()
    for node in ast.walk(tree):
        tail = _docstring_tail(node, lines) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                  ast.ClassDef)) else None
        if tail is not None:
            removed.update(tail)
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            for statement in block:
                if isinstance(statement, ast.stmt) and _is_check(statement):
                    span = range(statement.lineno - 1, statement.end_lineno)
                    removed.update(span)
                    indent = lines[span[0]][: len(lines[span[0]]) - len(lines[span[0]].lstrip())]
                    cut.setdefault(span[0], f"{indent}# (argument checks left out)")
    shown, previous_cut = [], False
    for i, line in enumerate(lines):
        if i in removed:
            if i in cut and not previous_cut:
                shown.append(cut[i])
            previous_cut = previous_cut or i in cut
            continue
        previous_cut = False
        shown.append(line)
    path = Path(inspect.getsourcefile(obj)).resolve()
    start = inspect.getsourcelines(obj)[1]
    where = path.relative_to(PACKAGE_ROOT).as_posix() if path.is_relative_to(PACKAGE_ROOT) else path.name
    shown.append(f"# full source: {where}, lines {start}-{start + len(lines) - 1}")
    return "\n".join(shown)


def show(*objects) -> None:
    """Print ``trimmed`` for each object, separated by a blank line."""
    print("\n\n".join(trimmed(obj) for obj in objects))
