"""Download the MoDL brain dataset (``dataset.hdf5``, Zenodo record 6481291) for the paper tier.

Resumable (run it again after an interruption), checked against the md5 that Zenodo publishes
(and ``--sha256`` when you give one), renamed into place only when complete. Not run in CI.

    python data_scripts/download_modl_dataset.py --dest ~/data/modl
    # then: mrtutor.data.ModlDataset("~/data/modl/dataset.hdf5", "train")
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mrtutor import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=data.data_root() / "modl", help="target directory")
    parser.add_argument("--sha256", default=None, help="expected sha256 of dataset.hdf5 (optional)")
    args = parser.parse_args()
    try:
        path = data.download_modl_dataset(args.dest, sha256=args.sha256)
    except (ConnectionError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(f"{path}\n  sha256 {data.file_digest(path)}")


if __name__ == "__main__":
    main()
