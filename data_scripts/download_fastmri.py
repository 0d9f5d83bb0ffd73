"""Download fastMRI archives with the links from your fastMRI licence e-mail (https://fastmri.org).

The links are personal and expire, so none is stored here: pass them on the command line. Each
download is resumable (run again after an interruption), checked against ``--sha256`` when given
(one per URL, in order), and renamed into place only when complete; ``--extract`` then unpacks
the tar archive next to it. Not run in CI.

    python data_scripts/download_fastmri.py --dest ~/data/fastmri "https://...brain_multicoil_val.tar.xz?..."
    # then: mrtutor.data.FastMRIDataset("~/data/fastmri/multicoil_val", mask_fn="column_random", acceleration=4)
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import urllib.parse
from pathlib import Path

from mrtutor import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("urls", nargs="+", help="download links from the licence e-mail")
    parser.add_argument("--dest", type=Path, default=data.data_root() / "fastmri", help="target directory")
    parser.add_argument("--sha256", nargs="*", default=[], help="expected sha256 per URL (optional)")
    parser.add_argument("--extract", action="store_true", help="unpack each tar archive after download")
    args = parser.parse_args()
    if args.sha256 and len(args.sha256) != len(args.urls):
        sys.exit(f"error: got {len(args.sha256)} --sha256 values for {len(args.urls)} URLs; give one per URL or none")
    for n, url in enumerate(args.urls):
        name = Path(urllib.parse.urlparse(url).path).name
        if not name:
            sys.exit(f"error: cannot tell a file name from {url!r}")
        try:
            path = data.download(url, args.dest / name, sha256=args.sha256[n] if args.sha256 else None)
        except (ConnectionError, ValueError) as err:
            sys.exit(f"error: {err}")
        print(f"{path}\n  sha256 {data.file_digest(path)}")
        if args.extract and tarfile.is_tarfile(path):
            with tarfile.open(path) as archive:
                archive.extractall(args.dest, filter="data")
            print(f"  extracted into {args.dest}")


if __name__ == "__main__":
    main()
