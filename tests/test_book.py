"""The book's build tooling: the offline checker, the chapter sync and table of contents, the config
that keeps every asset local, the bibliography, and (when a site was built) the built site itself."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
SITE = BOOK / "_build" / "html"

sys.path.insert(0, str(BOOK))
import build  # noqa: E402
import check_offline  # noqa: E402
import screenshots  # noqa: E402
import vendor_assets  # noqa: E402

CONFIG = yaml.safe_load((BOOK / "_config.yml").read_text())
TOC = yaml.safe_load((BOOK / "_toc.yml").read_text())


# ------------------------------------------------------------------ the offline checker


@pytest.mark.parametrize(
    "html",
    [
        '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>',
        '<script defer src="http://example.org/a.js"></script>',
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">',
        '<LINK REL="Stylesheet" HREF="//cdn.example.org/theme.css">',
        '<link rel="preload" as="script" href="https://cdn.example.org/x.js">',
        '<link rel="icon" href="https://example.org/favicon.ico">',
        '<img src="https://example.org/figure.png" alt="">',
        '<img src="local.png" srcset="local.png 1x, https://example.org/big.png 2x">',
        '<iframe src="https://www.youtube.com/embed/x"></iframe>',
        '<div style="background: url(\'https://example.org/bg.png\')"></div>',
        '<style>@import "https://example.org/more.css";</style>',
    ],
)
def test_checker_finds_external_sources(html):
    assert len(check_offline.external_references(f"<html><head></head><body>{html}</body></html>")) == 1


@pytest.mark.parametrize(
    "html",
    [
        '<script src="../_static/mathjax/tex-mml-chtml.js"></script>',
        "<script>const url = 'https://unpkg.com/never-loaded.js';</script>",
        '<link rel="stylesheet" href="_static/styles/theme.css">',
        '<link rel="canonical" href="https://example.org/book/intro.html">',
        '<a href="https://colab.research.google.com/github/x/y/blob/main/notebooks/01.ipynb">Colab</a>',
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="">',
        '<div style="background: url(data:image/svg+xml;charset=utf-8,%3Csvg%3E)"></div>',
    ],
)
def test_checker_accepts_local_sources_and_plain_links(html):
    assert check_offline.external_references(f"<html><body>{html}</body></html>") == []


def test_checker_reads_css_files_and_reports_each_page(tmp_path):
    (tmp_path / "index.html").write_text('<script src="_static/a.js"></script>')
    (tmp_path / "bad.html").write_text('<img src="https://example.org/x.png">')
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "theme.css").write_text("body { background: url(//cdn.example.org/bg.png) }")
    problems = check_offline.check_site(tmp_path)
    assert problems == {
        "_static/theme.css": ["//cdn.example.org/bg.png"],
        "bad.html": ["<img src=https://example.org/x.png>"],
    }
    assert check_offline.main([str(tmp_path)]) == 1


def test_checker_refuses_a_folder_without_a_site(tmp_path):
    with pytest.raises(FileNotFoundError, match="no index.html"):
        check_offline.check_site(tmp_path)


# ------------------------------------------------------------------ the browser's network witness


def test_net_log_reading_keeps_page_requests_and_ignores_the_browser_s_own(tmp_path):
    event_type = {"URL_REQUEST_START_JOB": 7, "REQUEST_ALIVE": 3}
    events = [
        {"type": 7, "params": {"url": "https://update.googleapis.com/x", "initiator": "not an origin"}},
        {"type": 7, "params": {"url": "https://example.org/x.png", "initiator": "null"}},
        {"type": 3, "params": {"url": "https://example.org/other.png"}},
        {"type": 7, "phase": 2},
    ]
    log = tmp_path / "net-log.json"
    # As Chromium leaves it when it stops before closing the JSON.
    log.write_text(json.dumps({"constants": {"logEventTypes": event_type}, "events": events})[:-2] + ",")
    assert screenshots.page_requests(log) == {"https://example.org/x.png"}


# ------------------------------------------------------------------ config: everything local


def test_config_serves_mathjax_requirejs_and_widgets_from_local_copies():
    sphinx = CONFIG["sphinx"]["config"]
    assert not check_offline.is_external(sphinx["mathjax_path"])
    assert sphinx["mathjax_path"].startswith("mathjax/")
    assert sphinx["nb_ipywidgets_js"], "myst-nb would fall back to its CDN defaults"
    assert not any(check_offline.is_external(path) for path in sphinx["nb_ipywidgets_js"])
    assert sphinx["html_static_path"] == [vendor_assets.VENDOR_DIR.name]
    dests = {asset.dest for asset in vendor_assets.ASSETS}
    used = [sphinx["mathjax_path"], *sphinx["nb_ipywidgets_js"]]
    assert {path.split("/")[0] for path in used} <= dests


def test_config_loads_no_extension_that_reaches_the_internet():
    extensions = CONFIG["sphinx"]["config"]["extensions"]
    assert "sphinx.ext.intersphinx" not in extensions and "sphinx_thebe" not in extensions
    assert "myst_nb" in extensions and "sphinxcontrib.bibtex" in extensions


def test_no_static_folder_whose_scripts_jupyter_book_would_add_to_every_page():
    assert not (BOOK / "_static").exists()


def test_launch_buttons_and_install_cell_name_the_same_repository():
    url = CONFIG["repository"]["url"]
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["repository"]["path_to_book"] == "", "Colab links must resolve to notebooks/<chapter>.ipynb"
    template = nbformat.read(BOOK / "templates" / "chapter_template.ipynb", as_version=4)
    setup = next(cell.source for cell in template.cells if cell.cell_type == "code")
    assert f'"{url}"' in setup


def test_vendored_assets_are_pinned_and_selected_by_pattern():
    for asset in vendor_assets.ASSETS:
        assert re.fullmatch(r"(@[\w-]+/)?[\w.-]+@\d+\.\d+\.\d+", asset.spec), asset.spec
        assert asset.integrity.startswith("sha512-")
    mathjax, _, manager = vendor_assets.ASSETS
    assert vendor_assets._selected("input/tex/extensions/ams.js", mathjax)
    assert not vendor_assets._selected("tex-svg-full.js", mathjax)
    assert vendor_assets._selected("embed-amd.js", manager)
    assert not vendor_assets._selected("embed-amd.js.map", manager)


# ------------------------------------------------------------------ chapters and table of contents


def test_toc_lists_the_seven_chapters_in_order():
    assert build.toc_chapters(TOC) == [
        "notebooks/01_forward_model",
        "notebooks/02_modl",
        "notebooks/03_mol",
        "notebooks/04_npgd",
        "notebooks/05_sgp",
        "notebooks/06_convdecoder",
        "notebooks/07_comparison",
    ]


def test_toc_keeps_only_existing_chapters_and_drops_empty_parts():
    only_first = build.toc_with_existing_chapters(TOC, {"notebooks/01_forward_model"})
    assert build.toc_chapters(only_first) == ["notebooks/01_forward_model"]
    none = build.toc_with_existing_chapters(TOC, set())
    assert build.toc_chapters(none) == []
    assert "Chapters" not in [part.get("caption") for part in none["parts"]]
    assert [entry["file"] for part in none["parts"] for entry in part["chapters"]] == [
        "running",
        "teaching",
        "reproduction",
        "speed",
        "data",
        "bibliography",
    ]


def test_sync_copies_chapters_removes_stale_copies_and_refuses_unlisted(tmp_path):
    source, target = tmp_path / "notebooks", tmp_path / "copy"
    source.mkdir()
    (source / "01_forward_model.ipynb").write_text("{}")
    (source / "figures").mkdir()
    (source / "figures" / "scan.png").write_bytes(b"png")
    (source / ".ipynb_checkpoints").mkdir()
    (source / ".ipynb_checkpoints" / "01_forward_model-checkpoint.ipynb").write_text("{}")
    (target / "old").mkdir(parents=True)
    (target / "old" / "02_modl.ipynb").write_text("{}")
    listed = build.toc_chapters(TOC)

    assert build.sync_chapters(source, listed, target) == {"notebooks/01_forward_model"}
    copied = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert copied == ["01_forward_model.ipynb", "figures/scan.png"]

    (source / "99_extra.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="99_extra.ipynb"):
        build.sync_chapters(source, listed, target)
    assert build.sync_chapters(tmp_path / "absent", listed, target) == set()


def test_pages_of_removed_chapters_are_deleted_from_the_site(tmp_path):
    for relative in ("notebooks/01_forward_model.html", "notebooks/02_modl.html", "_sources/notebooks/02_modl.ipynb"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("")
    build.prune_removed_chapters(tmp_path, {"notebooks/01_forward_model"})
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["notebooks/01_forward_model.html"]


def test_tier_table_has_a_row_per_setting_and_a_column_per_tier():
    table = build.tier_table({"quick": {"image_shape": (48, 48), "num_coils": 4}, "demo": {"num_coils": 8}})
    assert table.splitlines() == [
        "| setting | `quick` | `demo` |",
        "|---|---|---|",
        "| `image_shape` | 48 x 48 |  |",
        "| `num_coils` | 4 | 8 |",
    ]


# ------------------------------------------------------------------ pages and references


CHAPTERS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _markdown(notebook: Path) -> list[str]:
    return [cell.source for cell in nbformat.read(notebook, 4).cells if cell.cell_type == "markdown"]


def _cited_keys() -> set[str]:
    texts = [page.read_text() for page in BOOK.glob("*.md")] + [t for nb in CHAPTERS for t in _markdown(nb)]
    keys = set()
    for text in texts:
        for group in re.findall(r"\{cite(?::[pt])?\}`([^`]+)`", text):
            keys.update(key.strip() for key in group.split(","))
    return keys


# What is not a measured number: mathematics, code, glued values, and labels (Sec. 5.1, Props. 2.2 and 2.3).
NOT_NUMBERS = [r"\$\$.*?\$\$", r"\$[^$\n]*\$", r"\{glue[^}]*\}`[^`]*`", r"`[^`]*`",
               r"\b(?:Secs?\.|Sections?|Props?\.|Figs?\.|Figures?|Tables?|Eqs?\.|Thm\.|Theorems?|Lemmas?|Algorithms?)"
               r"\s+\d+(?:\.\d+)*(?:\s*(?:,|and|to|-)\s*\d+(?:\.\d+)*)*"]
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+")
DIRECTIVE_FENCE = re.compile(r"^\s*(?:```|:::)[^\n]*$", re.MULTILINE)


def typed_decimals(notebook: Path) -> list[str]:
    """Decimals in a chapter's markdown that no cell computes and its metadata does not declare as quoted
    (``metadata.mrtutor.quoted_numbers``: number -> where it is quoted from, such as the paper's Table 1)."""
    quoted = nbformat.read(notebook, 4).metadata.get("mrtutor", {}).get("quoted_numbers", {})
    found = []
    for text in _markdown(notebook):
        text = DIRECTIVE_FENCE.sub(" ", text)  # a directive's fence is markup, and would pair its backticks wrongly
        for pattern in NOT_NUMBERS:
            text = re.sub(pattern, " ", text, flags=re.S)
        found += [number for number in DECIMAL.findall(text) if number not in quoted]
    return found


def test_typed_decimal_finder_skips_maths_code_glue_and_labels():
    text = ("Sec. 5.1 and Props. 2.2 and 2.3, $x = 0.5$, `lam=0.1`, {glue:text}`snr:.2f` dB; "
            "but 34.30 dB is typed, and so is 1.5")
    for pattern in NOT_NUMBERS:
        text = re.sub(pattern, " ", text, flags=re.S)
    assert DECIMAL.findall(text) == ["34.30", "1.5"]


def test_typed_decimal_finder_reads_inside_a_directive(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("```{exercise} A title\n:label: ch00-ex1\n\nTrain with `beta=1.0` "
                                              "for 2.5 s.\n```\n:::{solution-start} ch00-ex1\n:::")]
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    assert typed_decimals(path) == ["2.5"]


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_numbers_in_the_prose_are_computed_or_declared_quotes(notebook):
    typed = typed_decimals(notebook)
    assert not typed, f"{notebook.name}: decimals typed into the prose, neither glued nor declared quotes: {typed}"


def test_every_key_in_references_bib_is_defined_once():
    keys = re.findall(r"^@\w+\{([^,]+),", (BOOK / "references.bib").read_text(), re.MULTILINE)
    assert len(keys) == len(set(keys)), sorted({key for key in keys if keys.count(key) > 1})


def test_every_cited_key_is_in_references_bib_with_the_five_papers():
    bib_keys = set(re.findall(r"^@\w+\{([^,]+),", (BOOK / "references.bib").read_text(), re.MULTILINE))
    five = {"aggarwal2019modl", "pramanik2022mol", "mardani2018npgd", "lee2019sgp", "darestani2021convdecoder"}
    assert five <= bib_keys
    assert _cited_keys() - bib_keys == set()


def test_every_page_in_the_toc_exists():
    pages = [TOC["root"]] + [entry["file"] for part in TOC["parts"] for entry in part["chapters"]]
    for page in pages:
        if not page.startswith("notebooks/"):
            assert (BOOK / f"{page}.md").is_file(), page


def test_data_page_carries_the_template_notices():
    text = " ".join((BOOK / "data.md").read_text().split())
    assert (
        "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological "
        "Institute, McGill University. Permission to use, copy, modify, and distribute" in text
    )
    assert "holmes1998colin27" in text and "Copyright 2006-2010 Chris Rorden" in text


# ------------------------------------------------------------------ the built site, when there is one


@pytest.mark.skipif(not (SITE / "index.html").is_file(), reason="no built site (make book builds it)")
def test_built_site_loads_nothing_from_the_internet():
    assert check_offline.check_site(SITE) == {}
    assert (SITE / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()


def test_the_timings_table_names_each_measurement_s_machine_once():
    import timings

    results = {"01_forward_model": {"quick": {"2 cores": {"seconds": 18.0, "date": "2026-12-04"}},
                                    "demo": {"2 cores": {"seconds": 275.0, "date": "2026-12-04"}}},
               "02_modl": {"quick": {"16 cores, GPU": {"seconds": 45.0, "date": "2026-12-05"}}}}
    text = timings.table(results)
    lines = text.splitlines()
    assert lines[0] == "| chapter | quick tier | demo tier |"
    assert lines[2] == "| 01_forward_model | 0.3 min [1] | 4.6 min [1] |"
    assert lines[3] == "| 02_modl | 0.8 min [2] | not measured |"
    assert "[1] 2 cores, 2026-12-04" in text and "[2] 16 cores, GPU, 2026-12-05" in text
    # a second machine keeps the first one's measurement beside its own
    results["01_forward_model"]["demo"]["2 cores, no native bfloat16"] = {"seconds": 600.0, "date": "2026-12-05"}
    assert timings.table(results).splitlines()[2] == "| 01_forward_model | 0.3 min [1] | 4.6 min [1]; 10.0 min [2] |"
    results["01_forward_model"]["quick"]["2 cores"]["exercises"] = {
        "ch01-ex1": {"title": "Adjoint", "minutes": 15, "solution_seconds": 0.42}}
    assert "| ch01-ex1 | Adjoint | about 15 min | 0.4 s [1] (quick tier) |" in timings.table(results)


def test_the_timings_script_finds_every_exercise_of_a_marked_up_chapter():
    import nbformat
    import timings

    nb = nbformat.read(REPO / "notebooks" / "01_forward_model.ipynb", as_version=4)
    found = timings.exercises(nb)
    graded = {timings.exercise_of(cell) for cell in nb.cells} - {None}
    assert len(found) >= 4 and set(found) == graded
    assert all(exercise["minutes"] > 0 and exercise["title"] for exercise in found.values())
