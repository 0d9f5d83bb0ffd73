"""Regenerate ``data_scripts/colin27_t1_1mm.npz`` from Debian's ``mricron-data`` package.

The committed file is a derived, compressed copy of the Colin27 single-subject T1 head that
``mrtutor.data.load_head`` (``mrtutor/data/anatomy.py``) reads for the demo dataset: the whole head
(scalp, skull, brain) from ``ch2.nii.gz`` and the brain mask from ``ch2bet.nii.gz`` (MRIcron's
brain-extracted version on the same 1 mm grid).
The head matters: a brain alone on an exactly zero background flatters total-variation
reconstruction far beyond what real scans show. Derivation, all deterministic:

1. read ``usr/share/mricron/templates/ch2.nii.gz`` and ``ch2bet.nii.gz`` (1 mm, same grid);
2. crop both to the bounding box of the head (non-zero voxels of ``ch2``) plus a 2-voxel margin,
   where the volume allows, and shift the affine to match;
3. keep the head as uint8 (it is uint8 already) and the brain mask as ``ch2bet > 0``;
4. save with ``numpy.savez_compressed``: ``volume`` (X, Y, Z) uint8 in the NIfTI voxel order of the
   source, ``brain`` (X, Y, Z) bool, ``affine`` (4, 4) float64 voxel -> world (mm), and ``source``.

Usage (Debian/Ubuntu, no root needed)::

    apt-get update && cd /tmp && apt-get download mricron-data
    dpkg -x /tmp/mricron-data_*.deb /tmp/mricron
    python data_scripts/make_colin27_volume.py /tmp/mricron/usr/share/mricron/templates

The copyright notice that comes with the package is in ``data_scripts/COLIN27_LICENSE.txt``.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

OUTPUT = Path(__file__).resolve().parent / "colin27_t1_1mm.npz"
HEAD_FILE, BRAIN_FILE = "ch2.nii.gz", "ch2bet.nii.gz"
MARGIN = 2


def derive(templates: Path) -> dict:
    """The derived arrays (volume, brain, affine, source) from the MRIcron templates folder."""
    import nibabel  # ships with nilearn

    head_image, brain_image = (nibabel.load(str(templates / name)) for name in (HEAD_FILE, BRAIN_FILE))
    if head_image.shape != brain_image.shape or not np.allclose(head_image.affine, brain_image.affine):
        raise ValueError(f"{HEAD_FILE} and {BRAIN_FILE} must share one voxel grid")
    head = np.asarray(head_image.dataobj)
    if head.dtype != np.uint8:
        raise ValueError(f"{HEAD_FILE}: expected uint8 voxels, got {head.dtype}")
    brain = np.asarray(brain_image.dataobj) > 0
    affine = np.array(head_image.affine, dtype=np.float64)

    nonzero = np.argwhere(head > 0)
    lo = np.maximum(nonzero.min(axis=0) - MARGIN, 0)
    hi = np.minimum(nonzero.max(axis=0) + MARGIN + 1, head.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ lo

    digests = {name: hashlib.sha256((templates / name).read_bytes()).hexdigest() for name in (HEAD_FILE, BRAIN_FILE)}
    description = (
        "Colin27 T1 head (ch2.nii.gz) and brain mask (ch2bet.nii.gz > 0) from the Debian package "
        "mricron-data, cropped to the head; source sha256 "
        + ", ".join(f"{name} {digest}" for name, digest in digests.items())
    )
    return {"volume": head[box], "brain": brain[box], "affine": affine, "source": np.array(description)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("templates", type=Path, help="the usr/share/mricron/templates folder of mricron-data")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"output .npz (default {OUTPUT})")
    args = parser.parse_args()
    missing = [name for name in (HEAD_FILE, BRAIN_FILE) if not (args.templates / name).is_file()]
    if missing:
        raise SystemExit(f"{args.templates} lacks {missing}; see the usage notes in this script's docstring")
    arrays = derive(args.templates)
    tmp = args.output.with_name(args.output.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(args.output)
    print(
        f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB): volume {arrays['volume'].shape} uint8, "
        f"brain {int(arrays['brain'].sum())} voxels, voxel {np.abs(np.diag(arrays['affine'])[:3])} mm"
    )


if __name__ == "__main__":
    main()
