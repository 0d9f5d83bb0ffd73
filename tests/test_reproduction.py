"""mrtutor.reproduction: the claims' checks, their tables, and the glue the reproduction page pastes."""

import re
from pathlib import Path

import nbformat
import pytest

from mrtutor import reproduction
from mrtutor.reproduction import Claim

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "book" / "reproduction.md"


def claim(**changes):
    fields = dict(claim="MoDL ahead of CG-SENSE (Table III)", paper="39.2 dB", book="38.10 dB", verdict="partly",
                  reason="a | in the text", section="When the paper does not reproduce")
    return Claim(**{**fields, **changes})


@pytest.mark.parametrize("field", ["claim", "paper", "book", "reason", "section"])
def test_a_claim_needs_every_field(field):
    with pytest.raises(ValueError, match=f"Claim.{field} must be a non-empty string"):
        claim(**{field: "  "})


def test_a_claim_needs_a_known_verdict():
    with pytest.raises(ValueError, match="Claim.verdict must be one of"):
        claim(verdict="mostly")


def test_markdown_table_has_a_row_per_claim_and_escapes_pipes():
    text = reproduction.table([claim(), claim(verdict="reproduced")])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].count("|") == 7
    assert "a \\| in the text" in lines[2] and "| reproduced |" in lines[3]


def test_html_table_links_the_evidence_section_of_the_chapter_and_escapes_text():
    markup = reproduction.html_table([claim(claim="x < y & z")], "02_modl")
    assert 'href="notebooks/02_modl.html#when-the-paper-does-not-reproduce"' in markup
    assert "x &lt; y &amp; z" in markup and markup.count("<tr>") == 2


def test_bad_claims_and_chapters_are_refused():
    with pytest.raises(ValueError, match="non-empty list of Claim"):
        reproduction.table([])
    with pytest.raises(ValueError, match="non-empty list of Claim"):
        reproduction.table(["a claim"])
    for chapter in ("notebooks/02_modl", "02_modl.ipynb", ""):
        with pytest.raises(ValueError, match="notebook's name"):
            reproduction.html_table([claim()], chapter)


def test_report_glues_the_html_table_under_its_name(monkeypatch):
    glued, shown = {}, []
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display=True: glued.update({name: value}))
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    counts = reproduction.report([claim(), claim(verdict="reproduced")], "02_modl")
    assert counts == {"reproduced": 1, "partly": 1, "not reproduced": 0}
    assert "notebooks/02_modl.html#" in glued["reproduction"]._repr_html_()
    assert "| partly |" in shown[0].data


def test_the_page_pastes_the_table_of_every_chapter_that_reports_and_only_those():
    pasted = set(re.findall(r"\{glue\}`notebooks/(\w+)\.ipynb::reproduction`", PAGE.read_text()))
    reporting = {path.stem for path in (REPO / "notebooks").glob("*.ipynb")
                 if any(cell.cell_type == "code" and f'reproduction.report(' in cell.source
                        and f'"{path.stem}"' in cell.source for cell in nbformat.read(path, 4).cells)}
    assert pasted == reporting, f"pasted on the page {sorted(pasted)}, reported by chapters {sorted(reporting)}"
