"""Open pages of the built site in headless Chromium, save screenshots, and prove they load nothing
from the internet: Chromium records every request in a net log, and any http(s) request fails the run.

Usage: ``python book/screenshots.py [PAGE ...]`` with pages relative to ``book/_build/html``
(default: the front page and the first chapter). Screenshots go to ``book/_build/screenshots/``.
``make screenshots`` installs Debian's ``chromium`` first when it is missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BOOK = Path(__file__).resolve().parent
SITE = BOOK / "_build" / "html"
OUT = BOOK / "_build" / "screenshots"

# Flags that keep Chromium itself quiet on the network, so every request in the log is the page's.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
)


def default_pages(site: Path) -> list[str]:
    """The front page and the first chapter (the lowest-numbered notebook page)."""
    chapters = sorted(p.relative_to(site).as_posix() for p in (site / "notebooks").glob("*.html"))
    return ["intro.html", *chapters[:1]]


def page_requests(net_log: Path) -> set[str]:
    """The URLs that pages (not the browser itself) asked for, from Chromium's net log.

    A request a page makes carries the page's origin as initiator (``null`` for a file:// page);
    the browser's own housekeeping requests carry ``not an origin``.
    """
    text = net_log.read_text(encoding="utf-8", errors="replace").rstrip()
    # Chromium may stop before closing the JSON; the events list is still readable when closed here.
    if not text.endswith("}"):
        text = text.rstrip(",") + "]}"
    log = json.loads(text)
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = set()
    for event in log.get("events", []):
        params = event.get("params", {})
        if event["type"] == start_job and "url" in params and params.get("initiator") != "not an origin":
            urls.add(params["url"])
    return urls


def screenshot(chromium: str, page: Path, png: Path, width: int, height: int) -> set[str]:
    """Save a screenshot of ``page`` to ``png``; return the http(s) URLs the page requested."""
    with tempfile.TemporaryDirectory() as profile:
        net_log = Path(profile) / "net-log.json"
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--log-net-log={net_log}",
                # Let MathJax typeset and the widget manager render before the picture is taken.
                "--virtual-time-budget=15000",
                f"--window-size={width},{height}",
                f"--screenshot={png}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
        if not png.is_file():
            raise RuntimeError(f"chromium wrote no screenshot for {page}")
        return {u for u in page_requests(net_log) if u.startswith(("http://", "https://"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", help="pages relative to the site (default: front page, chapter 1)")
    parser.add_argument("--site", type=Path, default=SITE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--size", default="1280,1600", help="window width,height in pixels")
    args = parser.parse_args()

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("screenshots: chromium is not installed (make screenshots installs Debian's package)")
    if not (args.site / "index.html").is_file():
        sys.exit(f"screenshots: no built site in {args.site}; run make book first")
    width, height = (int(v) for v in args.size.split(","))
    args.out.mkdir(parents=True, exist_ok=True)

    online = {}
    for name in args.pages or default_pages(args.site):
        page = args.site / name
        if not page.is_file():
            sys.exit(f"screenshots: page={name!r} is not in {args.site}")
        png = args.out / (name.replace("/", "__").removesuffix(".html") + ".png")
        png.unlink(missing_ok=True)
        urls = screenshot(chromium, page, png, width, height)
        print(f"screenshots: {png} ({len(urls)} internet requests)")
        if urls:
            online[name] = sorted(urls)
    for name, urls in online.items():
        print(f"screenshots: {name} requested {urls}", file=sys.stderr)
    return 1 if online else 0


if __name__ == "__main__":
    sys.exit(main())
