"""Downloads of the real datasets (never run by the tests): ``download`` (resumable, checksummed,
atomic) and ``download_modl_dataset`` (the MoDL brain dataset from Zenodo record 6481291)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from mrtutor.data.files import _progress, file_digest

MODL_ZENODO_RECORD = "6481291"


def _offline_message(url: str, err: Exception) -> str:
    return (
        f"cannot download {url}: {err}. Are you offline? The real datasets need internet access; "
        "everything else in mrtutor works offline with the demo dataset (mrtutor.data.demo_dataset)."
    )


def download(
    url: str, dest: str | Path, sha256: str | None = None, md5: str | None = None, progress: bool = True
) -> Path:
    """Download ``url`` to ``dest``: resumable, checksummed, atomic.

    Data go to ``dest.part``; an existing ``.part`` is resumed with an HTTP Range request (a server
    that ignores it makes the download restart). When complete, the sha256 (and md5, e.g. from
    Zenodo) are checked if given, and ``.part`` is renamed to ``dest`` in one step; a mismatch deletes
    the partial file and raises. An existing ``dest`` with the right checksum is not downloaded again.
    Returns ``dest``.
    """
    dest = Path(dest)
    if dest.is_file() and _checksums_ok(dest, sha256, md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the range starts at the end: the part file is complete
            response = None
        else:
            raise ConnectionError(f"cannot download {url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(_offline_message(url, err)) from err
    if response is not None:
        with response:
            append = have and response.status == 206
            total = response.headers.get("Content-Length")
            total = int(total) + (have if append else 0) if total else None
            bar = _progress(total or 0, progress, dest.name)
            bar.update(have if append else 0)
            with open(part, "ab" if append else "wb") as out:
                try:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
                except OSError as err:
                    raise ConnectionError(_offline_message(url, err) + " Run again to resume.") from err
            bar.close()
    if not _checksums_ok(part, sha256, md5):
        part.unlink()
        raise ValueError(f"checksum mismatch for {url}: the partial file was deleted; run again")
    os.replace(part, dest)
    return dest


def _checksums_ok(path: Path, sha256: str | None, md5: str | None) -> bool:
    ok = True
    if sha256:
        ok &= file_digest(path, "sha256") == sha256.lower()
    if md5:
        ok &= file_digest(path, "md5") == md5.lower()
    return ok


def download_modl_dataset(dest_dir: str | Path, filename: str = "dataset.hdf5", sha256: str | None = None) -> Path:
    """Download the MoDL brain dataset from Zenodo record 6481291 into ``dest_dir``.

    The record's metadata (``https://zenodo.org/api/records/6481291``) give the file's URL and its
    md5, which is checked; ``sha256`` is checked too when given. Returns the file's path.
    """
    api = f"https://zenodo.org/api/records/{MODL_ZENODO_RECORD}"
    try:
        with urllib.request.urlopen(api, timeout=60) as response:
            record = json.load(response)
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(_offline_message(api, err)) from err
    entries = {entry["key"]: entry for entry in record.get("files", [])}
    if filename not in entries:
        raise ValueError(f"Zenodo record {MODL_ZENODO_RECORD} has no file {filename!r}; it has {sorted(entries)}")
    entry = entries[filename]
    algorithm, _, value = entry.get("checksum", "").partition(":")
    url = entry["links"].get("self") or entry["links"].get("content")
    return download(url, Path(dest_dir) / filename, sha256=sha256, md5=value if algorithm == "md5" else None)
