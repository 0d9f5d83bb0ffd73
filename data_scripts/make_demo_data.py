"""Build the embedded demo dataset now (``mrtutor.data.demo_dataset`` also builds it on first use).

Offline: the anatomy comes from the nilearn wheel (MNI152 2009a) and the committed Colin27 volume
(``data_scripts/colin27_t1_1mm.npz``). The files go to ``$MRTUTOR_DATA`` (default
``~/.cache/mrtutor``) or ``--root``; see ``mrtutor/data/demo.py`` for the simulation and the
files, ``mrtutor/data/__init__.py`` for the layout of the samples.

    python data_scripts/make_demo_data.py --tier demo
"""

from __future__ import annotations

import argparse
import json
import time

from mrtutor import config, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", choices=config.MODES, default=None, help="default: MRTUTOR_MODE (demo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=None, help="cache directory (default: MRTUTOR_DATA or ~/.cache/mrtutor)")
    args = parser.parse_args()
    start = time.perf_counter()
    directory = data.build_demo_data(args.tier, args.seed, args.root, progress=True)
    manifest = json.loads((directory / "manifest.json").read_text())
    sizes = {split: manifest["splits"][split]["slices"] for split in data.SPLITS}
    print(f"{directory}\n  slices {sizes}, sha256 {manifest['sha256'][:16]}...")
    print(f"  built in {manifest['build_seconds']} s (this call: {time.perf_counter() - start:.1f} s; 0 when cached)")


if __name__ == "__main__":
    main()
