"""Build the book's HTML site: ``make book`` runs this.

Steps, each cheap when already done:

1. vendor the offline JavaScript assets (``vendor_assets.py``; needs npm once, then never);
2. copy the chapters from ``notebooks/`` (the one source, stored without outputs) into
   ``book/notebooks/`` (git-ignored) and write the table of contents of the chapters that exist;
3. build the embedded demo dataset if it is missing;
4. execute every chapter in the tier named by ``MRTUTOR_MODE`` (default ``demo``) through
   jupyter-cache, one cache per tier, and write the site to ``book/_build/html``;
5. fail if any page would load something from the internet (``check_offline.py``).

Usage: ``python book/build.py [--notebooks DIR] [--all]``. ``book/student.py`` calls :func:`build` on a copy of
this folder to build the student edition.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

BOOK = Path(__file__).resolve().parent
REPO = BOOK.parent
BUILD = BOOK / "_build"
SITE = BUILD / "html"
CHAPTERS_IN_BOOK = BOOK / "notebooks"  # the toc names chapters notebooks/<name>, as in the repo
SKIPPED_DIRS = {".ipynb_checkpoints", "__pycache__"}

sys.path.insert(0, str(BOOK))
import check_offline  # noqa: E402
import vendor_assets  # noqa: E402


def toc_chapters(toc: dict) -> list[str]:
    """The ``notebooks/<name>`` entries of the table of contents, in order."""
    return [
        entry["file"]
        for part in toc.get("parts", [])
        for entry in part.get("chapters", [])
        if entry["file"].startswith("notebooks/")
    ]


def toc_with_existing_chapters(toc: dict, existing: set[str]) -> dict:
    """``toc`` without the chapters whose notebook does not exist, and without parts left empty."""
    parts = []
    for part in toc.get("parts", []):
        chapters = [
            entry
            for entry in part.get("chapters", [])
            if not entry["file"].startswith("notebooks/") or entry["file"] in existing
        ]
        if chapters:
            parts.append({**part, "chapters": chapters})
    return {**toc, "parts": parts}


def sync_chapters(source: Path, listed: list[str], target: Path = CHAPTERS_IN_BOOK) -> set[str]:
    """Mirror ``source`` (the notebooks folder) into ``target``; return the chapters present.

    Files whose content did not change keep their time stamp, so Sphinx does not re-read them.
    A notebook missing from the table of contents is an error: it would silently not be in the book.
    A missing ``source`` means no chapter yet (git keeps no empty folder).
    """
    notebooks = sorted(source.glob("*.ipynb"))
    unlisted = [p.name for p in notebooks if f"notebooks/{p.stem}" not in listed]
    if unlisted:
        raise ValueError(f"{unlisted} in {source} are not in book/_toc.yml; add them to it")

    wanted = set()
    for path in source.rglob("*") if source.is_dir() else ():
        relative = path.relative_to(source)
        if path.is_dir() or SKIPPED_DIRS & set(relative.parts):
            continue
        wanted.add(relative)
        copy = target / relative
        if not copy.exists() or not filecmp.cmp(path, copy, shallow=False):
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
    if target.exists():
        for path in sorted(target.rglob("*"), reverse=True):
            relative = path.relative_to(target)
            if path.is_file() and relative not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return {f"notebooks/{p.stem}" for p in notebooks}


def prune_removed_chapters(site: Path, existing: set[str]) -> None:
    """Delete the pages of chapters no longer in the book (Sphinx leaves old output files behind)."""
    for folder, suffix in ((site / "notebooks", ".html"), (site / "_sources" / "notebooks", ".ipynb")):
        for page in folder.glob(f"*{suffix}"):
            if f"notebooks/{page.stem}" not in existing:
                page.unlink()


def _table_cell(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {item}" for key, item in value.items())
    if isinstance(value, (tuple, list)):
        return " x ".join(str(item) for item in value)
    return str(value)


def tier_table(tiers: dict[str, dict]) -> str:
    """A Markdown table of ``mrtutor.config.TIERS``: one row per setting, one column per tier."""
    names = list(tiers)
    keys = sorted({key for settings in tiers.values() for key in settings})
    lines = [
        "| setting | " + " | ".join(f"`{name}`" for name in names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for key in keys:
        cells = " | ".join(_table_cell(tiers[name].get(key, "")) for name in names)
        lines.append(f"| `{key}` | {cells} |")
    return "\n".join(lines)


def write_build_config(tier: str, book: Path = BOOK) -> Path:
    """Write the config this build uses under ``book/_build``: ``book/_config.yml`` plus what depends on
    the tier (its execution cache and footer) and the tier table the pages show; return its path."""
    import mrtutor.config

    config = yaml.safe_load((book / "_config.yml").read_text())
    config["parse"]["myst_substitutions"] = {"tier_table": tier_table(mrtutor.config.TIERS)}
    config["execute"]["cache"] = str(book / "_build" / ".jupyter_cache" / tier)
    config["html"]["extra_footer"] = (
        f"<p>Chapters executed in the <code>{tier}</code> tier (<code>MRTUTOR_MODE={tier}</code>).</p>"
    )
    (book / "_build").mkdir(exist_ok=True)
    config_path = book / "_build" / "_config.build.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


def ensure_demo_data(tier: str) -> None:
    """Build the embedded demo dataset of ``tier`` now (once; it is cached), so no chapter pays for it."""
    from mrtutor.data import build_demo_data

    print(f"build: demo data in {build_demo_data(tier, progress=True)}", flush=True)


def build(notebooks: Path, rebuild_all: bool, book: Path = BOOK) -> Path:
    """Build the site of the book whose pages are in ``book`` (this folder, or a copy of it) with the chapters
    of ``notebooks``, into ``book/_build/html``; return that folder."""
    import mrtutor.config

    tier = mrtutor.config.mode()
    started = time.perf_counter()
    vendor_assets.ensure_vendored()
    site = book / "_build" / "html"

    toc = yaml.safe_load((book / "_toc.yml").read_text())
    existing = sync_chapters(notebooks, toc_chapters(toc), book / "notebooks")
    (book / "_build").mkdir(exist_ok=True)
    toc_path = book / "_build" / "_toc.build.yml"
    toc_path.write_text(yaml.safe_dump(toc_with_existing_chapters(toc, existing), sort_keys=False))
    config_path = write_build_config(tier, book)
    print(f"build: tier {tier}; chapters: {sorted(existing) or 'none yet'}", flush=True)

    ensure_demo_data(tier)

    command = [
        str(Path(sys.executable).with_name("jupyter-book")),
        "build",
        str(book),
        "--config",
        str(config_path),
        "--toc",
        str(toc_path),
        "--warningiserror",
        "--keep-going",
    ]
    if rebuild_all:
        command.append("--all")
    subprocess.run(command, check=True, env={**os.environ, "MRTUTOR_MODE": tier})
    prune_removed_chapters(site, existing)

    problems = check_offline.check_site(site)
    if problems:
        for name, found in problems.items():
            print(f"  {name}: {', '.join(found)}", file=sys.stderr)
        raise SystemExit(f"build: {len(problems)} built file(s) load something from the internet")
    print(
        f"build: {site} written in {time.perf_counter() - started:.0f} s; "
        "no page loads anything from the internet",
        flush=True,
    )
    return site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--notebooks",
        type=Path,
        default=REPO / "notebooks",
        help="folder the chapters come from (default: the repository's notebooks/)",
    )
    parser.add_argument("--all", action="store_true", help="re-read and re-write every page")
    args = parser.parse_args()
    if not args.notebooks.is_dir() and args.notebooks != REPO / "notebooks":
        raise SystemExit(f"build: --notebooks {args.notebooks} is not a folder")
    try:
        build(args.notebooks, args.all)
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"build: {error.cmd[0]} failed with exit status {error.returncode}")
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        raise SystemExit(f"build: {error}")


if __name__ == "__main__":
    main()
