"""Find what a built page would load from the internet.

A page is offline-clean when no script, stylesheet, icon, image, frame or media element takes its
source from an absolute ``http(s)://`` or protocol-relative ``//`` address, and no inline style or
stylesheet ``url()``/``@import`` does. Plain links (``<a href>``) are fine: they load nothing until
the reader follows them.

Usage: ``python book/check_offline.py [SITE_DIR]`` (default ``book/_build/html``); exits 1 and
lists every external reference it finds.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

DEFAULT_SITE = Path(__file__).resolve().parent / "_build" / "html"

_EXTERNAL = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)
# url(...) and @import "..." in CSS text (stylesheets, <style> blocks, style="" attributes).
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""", re.IGNORECASE)

# Which attributes of which elements make the browser fetch something when the page opens.
_FETCHING_ATTRIBUTES = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "frame": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "input": ("src",),
}
# <link rel=...> values that load their href (a canonical or alternate link loads nothing).
_FETCHING_LINK_RELS = {
    "stylesheet",
    "icon",
    "shortcut",
    "apple-touch-icon",
    "preload",
    "prefetch",
    "modulepreload",
    "manifest",
    "preconnect",
    "dns-prefetch",
}


def is_external(address: str) -> bool:
    """Whether ``address`` points outside the site (``http(s)://...`` or ``//host/...``)."""
    return bool(_EXTERNAL.match(address))


def external_css_references(css: str) -> list[str]:
    """Every external address a piece of CSS would fetch."""
    found = []
    for match in _CSS_URL.finditer(css):
        address = match.group(1) or match.group(2)
        if is_external(address):
            found.append(address)
    return found


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        values = {name: value or "" for name, value in attrs}
        for name in _FETCHING_ATTRIBUTES.get(tag, ()):
            # srcset holds "address width, address width, ...".
            for candidate in values.get(name, "").split(","):
                address = candidate.strip().split(" ")[0]
                if address and is_external(address):
                    self.found.append(f"<{tag} {name}={address}>")
        if tag == "link":
            rels = set(values.get("rel", "").lower().split())
            if rels & _FETCHING_LINK_RELS and is_external(values.get("href", "")):
                self.found.append(f"<link rel={values['rel']} href={values['href']}>")
        if "style" in values:
            self.found += [f"<{tag} style=url({a})>" for a in external_css_references(values["style"])]
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.found += [f"<style> url({a})" for a in external_css_references(data)]


def external_references(html: str) -> list[str]:
    """Every external resource the page ``html`` would load when opened, as short descriptions."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.found


def check_site(site: Path) -> dict[str, list[str]]:
    """Map each HTML page or CSS file under ``site`` that loads something external to what it loads."""
    site = Path(site)
    if not (site / "index.html").is_file():
        raise FileNotFoundError(f"site={str(site)!r} holds no index.html; build the book first")
    problems = {}
    for path in sorted(site.rglob("*")):
        if path.suffix == ".html":
            found = external_references(path.read_text(encoding="utf-8", errors="replace"))
        elif path.suffix == ".css":
            found = external_css_references(path.read_text(encoding="utf-8", errors="replace"))
        else:
            continue
        if found:
            problems[path.relative_to(site).as_posix()] = found
    return problems


def main(argv: list[str]) -> int:
    site = Path(argv[0]) if argv else DEFAULT_SITE
    problems = check_site(site)
    pages = sum(1 for _ in site.rglob("*.html"))
    if problems:
        print(f"check_offline: {len(problems)} file(s) under {site} load from the internet:")
        for name, found in problems.items():
            for item in found:
                print(f"  {name}: {item}")
        return 1
    print(f"check_offline: {pages} pages under {site} load nothing from the internet")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
