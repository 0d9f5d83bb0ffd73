"""Measure how long each chapter takes to run, for the instructor notes (``book/teaching.md`` includes the tables).

Each chapter runs top to bottom on a fresh kernel (nbclient, as nbval and the book build run it) in the tier asked
for, with the solutions of its exercises. The wall time, the time of each exercise's solution and check cells and
the date are merged into ``book/timings.json`` under the machine (processor cores, native bfloat16 or not, torch
threads, GPU), one measurement per chapter, tier and machine, and ``book/timings.md``, the tables the teaching page
shows, is written again from all the measurements in it: one row per chapter with each machine's time in each tier,
and one per exercise and tier with the time its statement gives a student beside the time its solution takes to
run. Nothing in the tables is typed by hand.

    python book/timings.py --tier quick                       # every chapter in the quick tier
    python book/timings.py --tier demo --chapters 01_forward_model

Run it on an otherwise idle machine: a second job on the same cores slows a chapter two to four times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import time
from pathlib import Path

BOOK = Path(__file__).resolve().parent
REPO = BOOK.parent
NOTEBOOKS = REPO / "notebooks"
RESULTS = BOOK / "timings.json"
TABLE = BOOK / "timings.md"
TIERS = ("quick", "demo", "paper")


EXERCISE = re.compile(r"```\{exercise\}\s*(?P<title>[^\n]*)\n:label:\s*(?P<label>\S+).*?about (?P<minutes>\d+) minutes",
                      re.S)


def exercises(nb) -> dict[str, dict]:
    """{label: {"title", "minutes"}} of a chapter's exercise statements (the course kit's markup)."""
    found = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for match in EXERCISE.finditer(cell.source):
                found[match["label"]] = {"title": match["title"].strip(), "minutes": int(match["minutes"])}
    return found


def exercise_of(cell) -> str | None:
    """The exercise a solution or check cell belongs to (its nbgrader grade_id without "-code"), or None."""
    grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
    if cell.cell_type != "code" or not grade_id:
        return None
    return grade_id.removesuffix("-code")


def run_chapter(path: Path, tier: str, timeout: int) -> tuple[float, dict[str, dict]]:
    """Seconds to execute the notebook at ``path`` in ``tier`` on a fresh kernel (raises if a cell fails), and its
    exercises with the seconds their solution and check cells took."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    found = exercises(nb)
    started: dict[int, float] = {}

    def on_execute(cell, cell_index, **_):
        started[cell_index] = time.perf_counter()

    def on_executed(cell, cell_index, **_):
        label = exercise_of(cell)
        if label in found:
            found[label]["solution_seconds"] = round(
                found[label].get("solution_seconds", 0.0) + time.perf_counter() - started[cell_index], 2)

    os.environ["MRTUTOR_MODE"] = tier  # the kernel inherits it
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", on_cell_execute=on_execute,
                                     on_cell_executed=on_executed, resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start, found


def table(results: dict) -> str:
    """The markdown tables of ``results`` ({chapter: {tier: {machine: {"seconds", "date", "exercises"}}}}): one row
    per chapter, one column per tier measured, each cell the minutes on every machine measured, with a note naming
    the machine and date; then one row per exercise and tier with its solution's time on each machine."""
    tiers = [tier for tier in TIERS if any(tier in by_tier for by_tier in results.values())]
    machines: list[str] = []

    def note(machine: str, entry: dict) -> int:
        where = f"{machine}, {entry['date']}"
        if where not in machines:
            machines.append(where)
        return machines.index(where) + 1

    rows = ["| chapter | " + " | ".join(f"{tier} tier" for tier in tiers) + " |",
            "|---|" + "---|" * len(tiers)]
    for chapter in sorted(results):
        cells = ["; ".join(f"{entry['seconds'] / 60:.1f} min [{note(machine, entry)}]"
                           for machine, entry in results[chapter].get(tier, {}).items()) or "not measured"
                 for tier in tiers]
        rows.append(f"| {chapter} | " + " | ".join(cells) + " |")
    exercise_rows = []
    for chapter in sorted(results):
        for tier in TIERS:
            runs = results[chapter].get(tier, {})
            labels = dict.fromkeys(label for entry in runs.values() for label in entry.get("exercises", {}))
            for label in labels:
                timed = [(machine, entry, entry["exercises"][label]) for machine, entry in runs.items()
                         if "solution_seconds" in entry.get("exercises", {}).get(label, {})]
                if timed:
                    exercise = timed[0][2]
                    times = "; ".join(f"{ex['solution_seconds']:.1f} s [{note(machine, entry)}]" for machine, entry, ex in timed)
                    exercise_rows.append(f"| {label} | {exercise['title']} | about {exercise['minutes']} min | "
                                         f"{times} ({tier} tier) |\n")
    notes = [f"[{i}] {where}" for i, where in enumerate(machines, start=1)]
    text = "\n".join(rows) + "\n\n" + "\n".join(f"{line}  " for line in notes).rstrip() + "\n"
    if exercise_rows:
        text += "\n| exercise | title | time for a student | its solution runs in |\n|---|---|---|---|\n" + "".join(exercise_rows)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", choices=TIERS, default="quick")
    parser.add_argument("--chapters", nargs="*", default=None, help="notebook names without .ipynb (default: all)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    available = sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb"))
    chapters = args.chapters or available
    unknown = sorted(set(chapters) - set(available))
    if unknown:
        raise SystemExit(f"no such chapters {unknown}; the chapters are {available}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    from mrtutor.checkpoints import atomic_write_bytes
    from mrtutor.config import machine

    where, today = machine(), datetime.date.today().isoformat()
    for chapter in chapters:
        seconds, timed = run_chapter(NOTEBOOKS / f"{chapter}.ipynb", args.tier, args.timeout)
        print(f"{chapter}: {seconds:.0f} s in the {args.tier} tier", flush=True)
        results.setdefault(chapter, {}).setdefault(args.tier, {})[where] = {"seconds": round(seconds, 1), "date": today,
                                                                           "exercises": timed}
        atomic_write_bytes(RESULTS, (json.dumps(results, indent=1, sort_keys=True) + "\n").encode())
    atomic_write_bytes(TABLE, table(results).encode())


if __name__ == "__main__":
    main()
