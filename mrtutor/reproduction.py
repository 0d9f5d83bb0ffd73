"""A chapter's headline claims of its paper, as data: the paper's number, the book's, a verdict and the reason.

Each chapter builds its list of ``Claim`` from the numbers its cells computed and calls ``report`` once, near its
"Paper vs this book" section. ``report`` shows the rows in the chapter and glues them as an HTML table, with links
to the sections that hold the evidence, under the name ``reproduction``; the book's reproduction page
(``book/reproduction.md``) pastes every chapter's table with MyST-NB's cross-page glue
(``{glue}`notebooks/<chapter>.ipynb::reproduction```), so the page shows the numbers of the same build, never a
copy typed by hand.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

VERDICTS = ("reproduced", "partly", "not reproduced")
GLUE_NAME = "reproduction"


@dataclass(frozen=True)
class Claim:
    """One headline claim of a paper.

    Attributes:
        claim: what the paper claims, in a few words, with the table or figure it comes from.
        paper: the paper's number(s), as the paper prints them.
        book: the book's number(s), formatted from the values the chapter computed.
        verdict: one of ``VERDICTS``.
        reason: one line: what the verdict rests on (for "partly" and "not reproduced", the cause the evidence
            points at).
        section: the title of the chapter's section that shows the evidence, as it appears in the chapter.
    """

    claim: str
    paper: str
    book: str
    verdict: str
    reason: str
    section: str

    def __post_init__(self):
        for field in ("claim", "paper", "book", "reason", "section"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"Claim.{field} must be a non-empty string, got {value!r}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"Claim.verdict must be one of {VERDICTS}, got {self.verdict!r}")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(claims: list[Claim]) -> str:
    """The claims as a markdown table (what the chapter shows)."""
    _check(claims)
    rows = ["| claim | paper | this book | verdict | why | evidence |", "|---|---|---|---|---|---|"]
    rows += [f"| {_cell(c.claim)} | {_cell(c.paper)} | {_cell(c.book)} | {c.verdict} | {_cell(c.reason)} | "
             f"{_cell(c.section)} |" for c in claims]
    return "\n".join(rows)


def section_anchor(title: str) -> str:
    """The HTML id Sphinx gives a section of this title (docutils' ``make_id``)."""
    from docutils.nodes import make_id

    return make_id(title)


def html_table(claims: list[Claim], chapter: str) -> str:
    """The claims as an HTML table for the reproduction page at the site's root: each row links the section of
    ``notebooks/<chapter>.html`` that holds its evidence."""
    _check(claims)
    _check_chapter(chapter)
    head = "".join(f"<th>{name}</th>" for name in ("claim", "paper", "this book", "verdict", "why", "evidence"))
    rows = []
    for c in claims:
        link = f'<a href="notebooks/{html.escape(chapter)}.html#{section_anchor(c.section)}">{html.escape(c.section)}</a>'
        cells = [html.escape(" ".join(text.split())) for text in (c.claim, c.paper, c.book, c.verdict, c.reason)]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + f"<td>{link}</td></tr>")
    return f'<table class="reproduction"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


class _HTML:
    """What ``glue`` stores: the table as text/html (the page pastes it) and as text/plain."""

    def __init__(self, markup: str, text: str):
        self.markup, self.text = markup, text

    def _repr_html_(self) -> str:
        return self.markup

    def __repr__(self) -> str:
        return self.text


def _check(claims) -> None:
    if not isinstance(claims, (list, tuple)) or not claims or not all(isinstance(c, Claim) for c in claims):
        raise ValueError(f"claims must be a non-empty list of Claim, got {claims!r}")


def _check_chapter(chapter) -> None:
    if not isinstance(chapter, str) or not chapter.strip() or "/" in chapter or chapter.endswith(".ipynb"):
        raise ValueError(f"chapter must be the notebook's name without folder or suffix (e.g. '02_modl'), "
                         f"got {chapter!r}")


def report(claims: list[Claim], chapter: str) -> dict[str, int]:
    """Show ``claims`` in the chapter, and glue them (an HTML table with links) as ``reproduction`` for the
    reproduction page. Returns how many claims have each verdict."""
    from IPython.display import Markdown, display
    from myst_nb import glue

    text = table(claims)
    display(Markdown(text))
    glue(GLUE_NAME, _HTML(html_table(claims, chapter), text), display=False)
    return {verdict: sum(c.verdict == verdict for c in claims) for verdict in VERDICTS}
