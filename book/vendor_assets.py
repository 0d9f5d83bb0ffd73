"""Copy the browser assets the book needs into ``book/_vendor/`` so built pages load nothing from the
internet.

The HTML pages need three JavaScript libraries that Sphinx and myst-nb would otherwise take from a
CDN: MathJax 3 (equations), RequireJS and the ipywidgets HTML manager (widgets saved in executed
notebooks). They come from their npm packages, fetched once with ``npm pack`` at set-up; each
tarball's sha512 is pinned below. Afterwards the book builds without a network.

Usage: ``python book/vendor_assets.py`` (``book/build.py`` calls it when a copy is missing).
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Not under book/_static: jupyter-book adds every .js file found there to every page.
VENDOR_DIR = Path(__file__).resolve().parent / "_vendor"
STAMP_NAME = ".vendored-from"


@dataclass(frozen=True)
class Asset:
    """One npm package and the part of it the site serves."""

    spec: str  # npm name@version
    integrity: str  # the tarball's sha512, as npm reports it
    dest: str  # folder under VENDOR_DIR
    root: str  # folder inside the package whose content is copied
    include: tuple[str, ...]  # glob patterns, relative to root
    exclude: tuple[str, ...] = ()


ASSETS = (
    Asset(
        spec="mathjax@3.2.2",
        integrity="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        dest="mathjax",
        root="es5",
        # The combined component Sphinx loads, plus what it loads lazily (TeX extensions, fonts,
        # the accessibility menu and its speech rule engine).
        include=("tex-mml-chtml.js", "input/*", "output/*", "a11y/*", "ui/*", "adaptors/*", "sre/*"),
    ),
    Asset(
        spec="requirejs@2.3.8",
        integrity="sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
        dest="requirejs",
        root="",
        include=("require.js",),
    ),
    Asset(
        # The release that matches ipywidgets 8.1 (controls 2.0, base 2.0, output 1.0).
        spec="@jupyter-widgets/html-manager@1.0.15",
        integrity="sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        dest="html-manager",
        root="dist",
        # embed-amd.js finds its fonts beside itself; the other bundles and source maps are unused.
        include=("*",),
        exclude=("*.map", "embed.js", "embed.js.LICENSE.txt", "libembed-amd.js"),
    ),
)


def is_vendored(asset: Asset) -> bool:
    """Whether ``VENDOR_DIR/asset.dest`` holds this exact release."""
    stamp = VENDOR_DIR / asset.dest / STAMP_NAME
    return stamp.is_file() and stamp.read_text().strip() == f"{asset.spec} {asset.integrity}"


def npm_pack(spec: str, into: Path) -> tuple[Path, str]:
    """Download ``spec`` with ``npm pack``; return the tarball and the integrity npm computed."""
    if shutil.which("npm") is None:
        raise RuntimeError(
            "npm is needed once, to fetch the book's offline JavaScript assets "
            "(Debian: apt-get install -y npm)"
        )
    result = subprocess.run(
        ["npm", "pack", spec, "--json", "--pack-destination", str(into)],
        check=True,
        capture_output=True,
        text=True,
    )
    (info,) = json.loads(result.stdout)
    return into / info["filename"], info["integrity"]


def _selected(relative: str, asset: Asset) -> bool:
    def matches(patterns):
        return any(fnmatch.fnmatch(relative, p) for p in patterns)

    return matches(asset.include) and not matches(asset.exclude)


def vendor(asset: Asset) -> Path:
    """Fetch ``asset`` and copy its selected files into ``VENDOR_DIR/asset.dest``."""
    target = VENDOR_DIR / asset.dest
    with tempfile.TemporaryDirectory() as tmp:
        tarball, integrity = npm_pack(asset.spec, Path(tmp))
        if integrity != asset.integrity:
            raise RuntimeError(
                f"{asset.spec}: the tarball's integrity is {integrity}, expected {asset.integrity}"
            )
        staging = Path(tmp) / "staging"
        prefix = f"package/{asset.root}/" if asset.root else "package/"
        with tarfile.open(tarball) as archive:
            for member in archive.getmembers():
                if not member.isfile() or not member.name.startswith(prefix):
                    continue
                relative = member.name[len(prefix):]
                if not _selected(relative, asset):
                    continue
                member.name = relative
                archive.extract(member, staging, filter="data")
        (staging / STAMP_NAME).write_text(f"{asset.spec} {asset.integrity}\n")
        # Replace the folder whole, so an interrupted run never leaves a half-copied release.
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), target)
    return target


def ensure_vendored() -> None:
    """Vendor every asset whose pinned release is not in place yet."""
    for asset in ASSETS:
        if not is_vendored(asset):
            print(f"vendoring {asset.spec} into {VENDOR_DIR / asset.dest}", flush=True)
            vendor(asset)


if __name__ == "__main__":
    try:
        ensure_vendored()
    except (RuntimeError, subprocess.CalledProcessError) as error:
        sys.exit(f"vendor_assets: {error}")
