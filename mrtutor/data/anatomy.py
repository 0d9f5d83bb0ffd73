"""Anatomy: the two T1 heads of the demo dataset (Colin27, committed as
``data_scripts/colin27_t1_1mm.npz``, and the MNI152 template from the nilearn wheel inside a
synthetic scalp and skull), their 2-D slices, and the split of the slices into disjoint slabs
(``slice_table``; the rules are in ``mrtutor.data.demo``'s notes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrtutor.data.files import DataFileError

SUBJECTS = ("mni152", "colin27")
ORIENTATIONS = ("axial", "coronal", "sagittal")
SPLITS = ("train", "val", "test")
SLAB_MM = 8
SLAB_PATTERN = ("train", "train", "val", "train", "train", "train", "test", "train")
MIN_AREA_FRACTION = 0.25  # a slice is kept when its brain area is >= this fraction of the largest
COLIN27_FILE = Path(__file__).resolve().parents[2] / "data_scripts" / "colin27_t1_1mm.npz"
MNI152_FILENAME = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def mni152_file() -> Path:
    """The MNI152 2009a symmetric T1 template inside the installed nilearn wheel (no download)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the demo dataset needs nilearn (pip install nilearn) for the MNI152 template")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / MNI152_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"nilearn is installed but does not ship {path}; expected nilearn >= 0.10")
    return path


def load_head(subject: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A T1 head: ``(volume (X, Y, Z) float32 with max 1, affine (4, 4) voxel -> mm, brain (X, Y, Z) bool)``.

    ``subject`` is ``"colin27"`` (the committed whole-head volume and its brain mask) or ``"mni152"``
    (nilearn's brain-only template inside a synthetic scalp and skull, see ``synthetic_head``).
    """
    if subject == "mni152":
        import nibabel  # a dependency of nilearn

        image = nibabel.load(str(mni152_file()))
        template, affine = np.asarray(image.dataobj, dtype=np.float32), np.array(image.affine, dtype=np.float64)
        volume, affine, brain = synthetic_head(template / template.max(), affine)
    elif subject == "colin27":
        if not COLIN27_FILE.is_file():
            raise FileNotFoundError(
                f"{COLIN27_FILE} is missing: it is committed in the mrtutor repository (data_scripts/); "
                "use a git checkout, or rebuild it with data_scripts/make_colin27_volume.py"
            )
        with np.load(COLIN27_FILE) as archive:
            if "brain" not in archive.files:
                raise DataFileError(f"{COLIN27_FILE}: no key 'brain' (an old brain-only file?); rebuild it")
            volume, affine = archive["volume"].astype(np.float32), archive["affine"].astype(np.float64)
            brain = archive["brain"].astype(bool)
    else:
        raise ValueError(f"subject must be one of {SUBJECTS}, got {subject!r}")
    # The slicing and the renderer assume 1 mm voxels on RAS-ordered axes.
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise ValueError(f"{subject}: expected 1 mm voxels on RAS axes (affine[:3, :3] = I), got\n{affine}")
    return volume / volume.max(), affine, brain


# Tissue layers outside the brain, (outer edge in mm from the brain surface, intensity relative to
# white matter), read off Colin27's head along a few lines through the vertex and the temples.
HEAD_LAYERS = (
    (2.5, 0.3),  # cerebrospinal fluid (with partial volume)
    (4.0, 0.15),  # inner table of the skull
    (6.5, 0.55),  # diploe (fatty marrow)
    (8.0, 0.15),  # outer table
    (10.0, 0.7),  # galea and muscle
    (13.0, 1.25),  # subcutaneous fat
    (14.5, 0.5),  # skin
)


def synthetic_head(template: np.ndarray, affine: np.ndarray, seed: int = 152) -> tuple[np.ndarray, ...]:
    """Wrap a brain-only template (max 1, zero outside the brain) in CSF, skull and scalp.

    Each voxel outside the brain gets the intensity of the layer its distance to the brain lies in
    (``HEAD_LAYERS``), with the distance stretched by a smooth random field (layer thickness varies
    by up to +-30% around the head) and the intensity textured by +-10% smooth noise; a 0.6 mm
    Gaussian blur gives the layer edges partial volume. The volume is padded by 20 mm on each side
    to make room. Returns ``(volume, affine, brain)`` like ``load_head``.
    """
    rng = np.random.default_rng(seed)
    pad = 20
    brain_image = np.pad(template, pad)
    affine = affine.copy()
    affine[:3, 3] -= pad * np.diag(affine)[:3]
    brain = ndimage.binary_fill_holes(brain_image > 0.05)
    white = np.percentile(brain_image[brain], 95)

    def smooth_field(sigma: float) -> np.ndarray:
        field = ndimage.gaussian_filter(rng.standard_normal(brain.shape).astype(np.float32), sigma)
        return field / np.abs(field).max()

    distance = ndimage.distance_transform_edt(~brain).astype(np.float32) * (1 + 0.3 * smooth_field(12.0))
    layers = np.zeros_like(brain_image)
    inner = 0.0
    for outer, level in HEAD_LAYERS:
        layers[(distance > inner) & (distance <= outer)] = level * white
        inner = outer
    layers *= 1 + 0.1 * smooth_field(1.5)
    volume = np.where(brain, brain_image, ndimage.gaussian_filter(layers, 0.6))
    return np.clip(volume, 0, None).astype(np.float32), affine, brain


_SLICE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def _display_plane(volume: np.ndarray, orientation: str, index) -> np.ndarray:
    """The plane at voxel ``index`` of the slice axis, rows top-down (anterior or superior first)."""
    where = [slice(None)] * 3
    where[_SLICE_AXIS[orientation]] = index
    return volume[tuple(where)].T[::-1]


def _slice_positions(affine: np.ndarray, orientation: str, count: int) -> np.ndarray:
    axis = _SLICE_AXIS[orientation]
    return affine[axis, axis] * np.arange(count) + affine[axis, 3]


def _split_of(position: np.ndarray, origin: float, offset: int) -> np.ndarray:
    """Split name of each slab position (mm) by the fixed pattern, shifted by ``offset`` slabs."""
    slab = np.floor((position - origin) / SLAB_MM).astype(int)
    return np.array(SLAB_PATTERN)[(slab + offset) % len(SLAB_PATTERN)]


def slice_table(subject: str, brain: np.ndarray, affine: np.ndarray) -> list[dict]:
    """Every usable slice of one brain with its split: dicts of subject, orientation, index,
    position_mm (world coordinate along the slice axis) and split.

    Slices with a brain area below ``MIN_AREA_FRACTION`` of the largest are dropped, and so are the
    slices next to a slab boundary. Sagittal slabs are cut by |x|; for the (exactly symmetric) MNI
    template only x >= 0 is used.
    """
    rows = []
    for o, orientation in enumerate(ORIENTATIONS):
        axis = _SLICE_AXIS[orientation]
        area = np.moveaxis(brain, axis, 0).reshape(brain.shape[axis], -1).sum(axis=1)
        position = _slice_positions(affine, orientation, brain.shape[axis])
        slab_position = np.abs(position) if orientation == "sagittal" else position
        usable = area >= MIN_AREA_FRACTION * area.max()
        if orientation == "sagittal" and subject == "mni152":
            usable &= position >= 0
        origin = slab_position[usable].min()
        offset = 3 * (SUBJECTS.index(subject) * len(ORIENTATIONS) + o)
        split = _split_of(slab_position, origin, offset)
        # Drop a slice whose 1 mm neighbours (in slab coordinates) fall in another split.
        step = abs(affine[axis, axis])
        same = (_split_of(slab_position - step, origin, offset) == split) & (
            _split_of(slab_position + step, origin, offset) == split
        )
        for index in np.flatnonzero(usable & same):
            rows.append(
                {
                    "subject": subject,
                    "orientation": orientation,
                    "index": int(index),
                    "position_mm": float(position[index]),
                    "split": str(split[index]),
                }
            )
    return rows


def _choose(rows: list[dict], count: int, split: str) -> list[dict]:
    """``count`` rows spread evenly over the (subject, orientation, position)-sorted pool."""
    def order(row: dict) -> tuple:
        return SUBJECTS.index(row["subject"]), ORIENTATIONS.index(row["orientation"]), row["position_mm"]

    pool = sorted(rows, key=order)
    if count > len(pool):
        raise ValueError(f"demo_slices asks for {count} {split} slices but the slabs hold only {len(pool)}")
    picks = np.round(np.linspace(0, len(pool) - 1, count)).astype(int) if count else []
    return [pool[i] for i in picks]
