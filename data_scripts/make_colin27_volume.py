"""Regenerate ``data_scripts/colin27_t1_1mm.npz`` from Debian's ``mricron-data`` package.

The committed file is a derived, compressed copy of the Colin27 single-subject T1 brain
(``ch2better.nii.gz``, 0.5 mm isotropic, brain-extracted) that ``mrtutor.data`` uses for the demo
dataset. Derivation, all deterministic:

1. read ``usr/share/mricron/templates/ch2better.nii.gz`` from the package;
2. low-pass with the separable kernel [1, 2, 1] / 4 along each axis (anti-aliasing) and keep every
   second voxel, starting at voxel 0, so each 1 mm voxel centre lies on a 0.5 mm voxel centre and
   the world coordinates of the new grid are exact: affine = old affine with the voxel size doubled;
3. crop to the bounding box of the non-zero voxels plus a 2-voxel margin (affine shifted to match);
4. quantise linearly to uint8 with the volume maximum at 255;
5. save with ``numpy.savez_compressed``: ``volume`` (X, Y, Z) uint8 in the NIfTI voxel order of
   the source, ``affine`` (4, 4) float64 voxel -> world (mm), and ``source`` (a description).

Usage (Debian/Ubuntu, no root needed)::

    apt-get update && cd /tmp && apt-get download mricron-data
    dpkg -x /tmp/mricron-data_*.deb /tmp/mricron
    python data_scripts/make_colin27_volume.py /tmp/mricron/usr/share/mricron/templates/ch2better.nii.gz

The copyright notice that comes with the package is in ``data_scripts/COLIN27_LICENSE.txt``.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

OUTPUT = Path(__file__).resolve().parent / "colin27_t1_1mm.npz"
MARGIN = 2


def _smooth_and_decimate(volume: np.ndarray) -> np.ndarray:
    """[1, 2, 1] / 4 along every axis, then every second voxel from voxel 0 (edges zero-padded)."""
    out = volume.astype(np.float64)
    for axis in range(out.ndim):
        padded = np.pad(out, [(1, 1) if a == axis else (0, 0) for a in range(out.ndim)])
        n = out.shape[axis]
        left = np.take(padded, np.arange(0, n), axis=axis)
        centre = np.take(padded, np.arange(1, n + 1), axis=axis)
        right = np.take(padded, np.arange(2, n + 2), axis=axis)
        out = (left + 2 * centre + right) / 4
        out = np.take(out, np.arange(0, n, 2), axis=axis)
    return out


def derive(source: Path) -> dict:
    """The derived arrays (volume, affine, source) from the path of ``ch2better.nii.gz``."""
    import nibabel  # ships with nilearn

    image = nibabel.load(str(source))
    data = np.asarray(image.dataobj, dtype=np.float64)
    affine = np.array(image.affine, dtype=np.float64)

    volume = _smooth_and_decimate(data)
    affine[:3, :3] = affine[:3, :3] * 2.0  # same origin: voxel 0 is still voxel 0

    nonzero = np.argwhere(volume > 0)
    lo = np.maximum(nonzero.min(axis=0) - MARGIN, 0)
    hi = np.minimum(nonzero.max(axis=0) + MARGIN + 1, volume.shape)
    volume = volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ lo

    quantised = np.round(volume / volume.max() * 255.0).astype(np.uint8)
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    description = (
        "Colin27 T1 (ch2better.nii.gz, Debian package mricron-data), [1,2,1]/4-filtered and decimated "
        f"to 1 mm, cropped, uint8-quantised; source sha256 {digest}"
    )
    return {"volume": quantised, "affine": affine, "source": np.array(description)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="path to ch2better.nii.gz from the mricron-data package")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"output .npz (default {OUTPUT})")
    args = parser.parse_args()
    if not args.source.is_file():
        raise SystemExit(f"source {args.source} does not exist; see the usage notes in this script's docstring")
    arrays = derive(args.source)
    tmp = args.output.with_name(args.output.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(args.output)
    print(
        f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB): volume {arrays['volume'].shape} uint8, "
        f"voxel {np.abs(np.diag(arrays['affine'])[:3])} mm"
    )


if __name__ == "__main__":
    main()
