"""The benchmarks' tables: printed as they finish, and kept for the book's page on speed (``book/speed.md``).

Each table is a list of rows (a candidate's median and minimum time over the interleaved rounds, and the median of
its per-round ratios to another row). ``save`` merges the tables of one run into ``book/speed.json`` under the
machine they ran on (its CPU, cores and GPU, torch's version and threads), one measurement per table and machine,
and writes ``book/speed_tables.md``, which the page includes, from everything in it. Nothing on the page is typed
by hand.
"""

from __future__ import annotations

import datetime
import json
import statistics
from pathlib import Path

BOOK = Path(__file__).resolve().parent.parent / "book"
RESULTS = BOOK / "speed.json"
TABLES = BOOK / "speed_tables.md"


def rows(times: dict[str, list[float]], notes: dict[str, str], reference: str,
         references: dict[str, str] | None = None) -> list[dict]:
    """One row per candidate of ``times`` (seconds of each round): median, minimum, and the median per-round ratio
    to ``reference``, or to the candidate that ``references`` names for it."""
    table = []
    for name, values in times.items():
        against = (references or {}).get(name, reference)
        table.append({"name": name, "median": statistics.median(values), "min": min(values),
                      "ratio": statistics.median(a / b for a, b in zip(values, times[against])),
                      "against": against, "note": notes.get(name, "")})
    return table


def duration(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 1 else f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} µs"


def keep(tables: dict[str, list[dict]], title: str, table: list[dict]) -> None:
    """Print ``table`` under ``title`` as soon as it is measured, and add it to ``tables`` for ``save``."""
    show(title, table)
    tables[title] = table


def show(title: str, table: list[dict]) -> None:
    """Print ``table`` under ``title``."""
    print(f"\n{title}")
    width = max(len(row["name"]) for row in table)
    for row in table:
        print(f"  {row['name']:{width}s}  median {duration(row['median']):>10s}  min {duration(row['min']):>10s}  "
              f"{row['ratio']:5.2f} x {row['against']}  {row['note']}".rstrip())


def where() -> dict:
    """The machine of this run: its name (the key in ``speed.json``) and what the page says about it."""
    import torch

    from mrtutor.config import cpuinfo, machine

    return {"machine": machine(), "cpu": cpuinfo("model name") or "CPU model not reported",
            "torch": torch.__version__}


def save(tables: dict[str, list[dict]], results: Path = RESULTS, page: Path = TABLES) -> None:
    """Merge ``tables`` ({title: rows}) into ``results`` under this machine and write ``page`` from all of it."""
    from mrtutor.checkpoints import atomic_write_bytes

    recorded = json.loads(results.read_text()) if results.exists() else {}
    here = where()
    entry = recorded.setdefault(here["machine"], {"tables": {}})
    entry.update(cpu=here["cpu"], torch=here["torch"])
    today = datetime.date.today().isoformat()
    for title, table in tables.items():
        entry["tables"][title] = {"date": today, "rows": table}
    atomic_write_bytes(results, (json.dumps(recorded, indent=1) + "\n").encode())
    atomic_write_bytes(page, markdown(recorded).encode())


def markdown(recorded: dict) -> str:
    """Every machine's tables as markdown: a heading per machine, then each table with its date."""
    lines = []
    for machine in sorted(recorded):
        entry = recorded[machine]
        lines += [f"### {entry['cpu']}: {machine}, torch {entry['torch']}", ""]
        for title, table in entry["tables"].items():
            lines += [f"**{title}** (measured {table['date']})", "",
                      "| candidate | median | min | ratio | to | note |", "|---|---|---|---|---|---|"]
            lines += [f"| {row['name']} | {duration(row['median'])} | {duration(row['min'])} | {row['ratio']:.2f} | "
                      f"{row['against']} | {row['note']} |" for row in table["rows"]]
            lines.append("")
    return "\n".join(lines)
