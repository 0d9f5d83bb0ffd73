"""Data: the embedded demo dataset (real brain anatomy, simulated multi-coil acquisition), images for
robustness tests, and loaders for the real datasets (fastMRI, MoDL brain), all yielding one layout.

Sample layout (every dataset here; DESIGN.md conventions, CPU tensors, so a ``DataLoader`` batches
them into (B, ...)):

* ``kspace`` (C, H, W) complex64: the measured, noisy k-space, centred, ALREADY MASKED
  (``mask * fully_sampled_kspace``);
* ``mask`` (H, W) float32: the 0/1 centred sampling mask that was applied;
* ``maps`` (C, H, W) complex64: coil sensitivities (unit sum of squares on the object);
* ``target`` (H, W) complex64: the reference image, magnitude max 1;
* ``scale`` (float): the factor the raw data were multiplied by to make ``max |target| = 1``;
* ``subject`` (str), ``slice_id`` (str), ``fname`` (str), ``slice`` (int): where it came from.

``dataset.fully_sampled(i)`` gives the same sample with the unmasked k-space and a mask of ones.

Demo dataset (``demo_dataset``): 2-D slices of two real brains in three orientations: the Colin27
single-subject T1 head (``ch2`` from Debian's ``mricron-data``, scalp and skull included, with the
brain mask of ``ch2bet``; committed as ``data_scripts/colin27_t1_1mm.npz``) and the MNI152 2009a
symmetric T1 template shipped inside the nilearn wheel (an average of 152 subjects, so smooth, and
brain only), wrapped in a synthetic skull and scalp (``synthetic_head``). Heads, not bare brains:
a brain on an exactly zero background flatters total-variation reconstruction (at 6x on the
validation split TV beat CG-SENSE by 6.5 dB with bare brains, by 3.3 dB with heads). Slices are
chosen by brain area and centred on the brain. Per slice (``simulate_acquisition``):

1. the 1 mm plane is resampled (cubic spline, small random rotation / zoom / shift, i.e. head
   position) onto a FINE grid with ``OVERSAMPLE = 2`` times the pixels of the reconstruction grid
   (H, W) over the same field of view;
2. complex image = magnitude x exp(i phase), the phase a smooth random field (offset, ramps and
   bumps of at most one cycle per field of view);
3. coil maps from ``sigpy.mri.birdcage_maps`` on the fine grid with a random coil-array radius and
   centre shift, normalised (by sigpy) to unit sum of squares at every pixel;
4. coil k-space = centred orthonormal FFT of maps x image on the fine grid; its central (H, W)
   block times ``1 / OVERSAMPLE`` (the ratio of the orthonormal FFT scalings, so intensities keep
   their size) is the noiseless k-space ``y0`` of the reconstruction grid;
5. maps on the reconstruction grid are the fine maps at the coarse pixel centres (every second
   fine pixel: with the centred FFT, coarse pixel i sits on fine pixel 2 i);
6. ``target = sum_c conj(S_c) ifft2c(y0_c)``, the fully sampled, noiseless SENSE combination. With
   unit-sum-of-squares maps and full sampling A^H A = I, so the target is the least-squares image
   of the noiseless data: the best any reconstruction on this grid could do with unlimited data.
   ``y0 - A target`` is what no image on the (H, W) grid explains (the product maps x image has
   content outside the kept band): the model error that real data also have, which avoids the
   "inverse crime" of simulating with the reconstruction's own operator. It is 0.3% of ``||y0||``
   in the demo tier and 1.5% in the quick tier (``model_error_mean`` in the manifest), far below
   the noise (about 10% of ``||y||``), so metrics against the target measure the reconstruction,
   not the simulation: a fully sampled zero-filled image scores about 42 dB PSNR (noise only);
7. scale so ``max |target| = 1`` and add complex Gaussian noise of standard deviation
   ``noise_sigma`` (E|n|^2 = sigma^2: real and imaginary parts each sigma / sqrt(2), as the MoDL
   code did) to every k-space sample.

Splits are disjoint slabs: along each slice axis the positions are cut into ``SLAB_MM`` slabs that
are assigned train/val/test by a fixed pattern, and the slice on each side of a slab boundary is
dropped, so a slice and its immediate neighbours never sit in two splits. The MNI template is
exactly left-right symmetric, so its sagittal slices come from one hemisphere only; Colin27's
sagittal slabs are cut by |x|, so mirror positions share a split. Slices of different orientations
cross along a line of voxels; that overlap is not removed (the subject split, ``subject_split``,
is the strictly unseen test). Near-empty slices are dropped. The data are written in the fastMRI
multi-coil h5 layout (``kspace`` (slices, coils, H, W), ``reconstruction_rss``, ``ismrmrd_header``,
attrs ``max``, ``norm``, ``acquisition``, ``patient_id``) plus ``target``, ``maps``, ``scale``,
``slice_position_mm`` and ``slice_index``, one file per split, brain and orientation, cached in
``data_root()`` (``MRTUTOR_DATA``, default ``~/.cache/mrtutor``). Same seed, same bytes.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable

import h5py
import numpy as np
import scipy.fft
import torch
from scipy import ndimage

from mrtutor import config

VERSION = 3  # bump whenever the generated bytes change, so stale caches are not reused
OVERSAMPLE = 2
SUBJECTS = ("mni152", "colin27")
ORIENTATIONS = ("axial", "coronal", "sagittal")
SPLITS = ("train", "val", "test")
ACQUISITION = {"axial": "AXT1", "coronal": "CORT1", "sagittal": "SAGT1"}
SLAB_MM = 8
SLAB_PATTERN = ("train", "train", "val", "train", "train", "train", "test", "train")
MIN_AREA_FRACTION = 0.25  # a slice is kept when its brain area is >= this fraction of the largest
FIELD_OF_VIEW_MM = 240.0  # along the longer image side: a head is about 220 mm long, plus head-position jitter
COLIN27_FILE = Path(__file__).resolve().parents[1] / "data_scripts" / "colin27_t1_1mm.npz"
MNI152_FILENAME = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
OOD_NAMES = ("dipy_t1", "camera", "astronaut", "moon", "coins", "brick", "grass", "phantom")
MaskFn = Callable[[tuple, int], torch.Tensor]


class DataFileError(ValueError):
    """A data file that cannot be used: missing, truncated, not HDF5, or without a needed key."""


# --------------------------------------------------------------------------------------------- #
# Paths and small helpers
# --------------------------------------------------------------------------------------------- #


def data_root() -> Path:
    """Where data are cached: ``MRTUTOR_DATA``, else ``$XDG_CACHE_HOME/mrtutor`` or ``~/.cache/mrtutor``."""
    if os.environ.get("MRTUTOR_DATA"):
        return Path(os.environ["MRTUTOR_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mrtutor"


# numpy twins of mrtutor.fft.fft2c / ifft2c for the data pipeline (scipy.fft: threads over coils).
def _fft2c(x: np.ndarray) -> np.ndarray:
    x = scipy.fft.ifftshift(x, axes=(-2, -1))
    return scipy.fft.fftshift(scipy.fft.fft2(x, norm="ortho", workers=-1), axes=(-2, -1))


def _ifft2c(k: np.ndarray) -> np.ndarray:
    k = scipy.fft.ifftshift(k, axes=(-2, -1))
    return scipy.fft.fftshift(scipy.fft.ifft2(k, norm="ortho", workers=-1), axes=(-2, -1))


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _seed(*key: int) -> int:
    """An integer seed (32 bits) derived from a tuple of non-negative integers."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])


def _array_digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------------------------- #
# Anatomy
# --------------------------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------------------------- #
# Simulated acquisition
# --------------------------------------------------------------------------------------------- #


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator, max_cycles: float = 1.0) -> np.ndarray:
    """A smooth random phase map (radians) of ``shape``: offset plus a random field of spatial
    frequencies up to ``max_cycles`` cycles per field of view, 0.25 pi to 0.75 pi standard deviation."""
    freqs = np.arange(-2, 3) * (max_cycles / 2)
    axes = [(np.arange(n) - n // 2) / n for n in shape]  # in fields of view, centre at 0
    basis = [np.exp(2j * np.pi * freqs[:, None] * a[None, :]) for a in axes]
    weight = np.exp(-(freqs[:, None] ** 2 + freqs[None, :] ** 2) / max_cycles**2)
    coeffs = (rng.standard_normal((5, 5)) + 1j * rng.standard_normal((5, 5))) * weight
    right = coeffs @ basis[1]
    field = basis[0].real.T @ right.real - basis[0].imag.T @ right.imag  # Re(B0^T C B1), real BLAS
    field = (field - field.mean()) / field.std()
    return rng.uniform(-np.pi, np.pi) + rng.uniform(0.25, 0.75) * np.pi * field


COIL_RADII = (1.3, 1.4, 1.5, 1.6, 1.7, 1.8)


def birdcage_coil_maps(
    num_coils: int, shape: tuple[int, int], rng: np.random.Generator, cache: dict | None = None
) -> np.ndarray:
    """Coil maps (C, H, W) complex64 from ``sigpy.mri.birdcage_maps``, unit sum of squares at every
    pixel, with a random coil-array radius (one of ``COIL_RADII``, in half fields of view) and a
    random centre (up to 10% of the half field of view off in each direction).

    The shift is made by evaluating the maps on a padded grid and cropping a shifted window; the
    padded maps of each radius can be kept in ``cache`` (a dict) across calls, since evaluating
    them is the slowest step of the simulation.
    """
    radius = COIL_RADII[rng.integers(len(COIL_RADII))]
    shift = rng.uniform(-0.1, 0.1, size=2)
    pad = [int(np.ceil(0.1 * n / 2)) + 1 for n in shape]
    padded = tuple(n + 2 * p for n, p in zip(shape, pad))
    key = (num_coils, padded, radius)
    if cache is None or key not in cache:
        from sigpy.mri import birdcage_maps

        # sigpy measures the radius in half-sizes of the grid it is given: rescale to the unpadded grid.
        maps = birdcage_maps((num_coils, *padded), r=radius * shape[0] / padded[0], dtype=np.complex64)
        if cache is None:
            cache = {}
        cache[key] = maps
    start = [p + int(round(s * n / 2)) for p, s, n in zip(pad, shift, shape)]
    return cache[key][:, start[0] : start[0] + shape[0], start[1] : start[1] + shape[1]]


def _crop_offsets(fine: tuple[int, int], shape: tuple[int, int]) -> tuple[list[int], list[int]]:
    """Start of the centred k-space crop, and of the coarse pixel centres on the fine grid."""
    k_start = [f // 2 - n // 2 for f, n in zip(fine, shape)]
    x_start = [f // 2 - OVERSAMPLE * (n // 2) for f, n in zip(fine, shape)]
    return k_start, x_start


def simulate_acquisition(
    image_fine: np.ndarray,
    shape: tuple[int, int],
    num_coils: int,
    noise_sigma: float,
    rng: np.random.Generator,
    maps_cache: dict | None = None,
) -> dict:
    """Simulate a fully sampled multi-coil scan of a magnitude image given on the fine grid.

    Args:
        image_fine: real magnitude (OVERSAMPLE * H, OVERSAMPLE * W) over the field of view.
        shape: the reconstruction grid (H, W).
        num_coils: number of birdcage coils C.
        noise_sigma: noise standard deviation per k-space sample (E|n|^2 = sigma^2) on max-1 images.
        rng: random generator (phase, coil geometry, noise).
        maps_cache: optional dict that keeps the padded birdcage maps between calls.
    Returns:
        numpy dict: ``kspace`` (C, H, W) complex64 noisy and fully sampled, ``maps`` (C, H, W)
        complex64, ``target`` (H, W) complex64 with max magnitude 1, ``scale`` (float), and
        ``model_error`` = ||y0 - A target|| / ||y0|| of the noiseless data (see the module notes).
    """
    shape = tuple(int(n) for n in shape)
    fine = tuple(n * OVERSAMPLE for n in shape)
    if image_fine.shape != fine:
        raise ValueError(f"image_fine must have shape {fine} (OVERSAMPLE x {shape}), got {image_fine.shape}")
    if not noise_sigma >= 0:
        raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
    image = (image_fine * np.exp(1j * smooth_phase(fine, rng))).astype(np.complex64)
    maps_fine = birdcage_coil_maps(num_coils, fine, rng, maps_cache)
    k_start, x_start = _crop_offsets(fine, shape)
    kspace_fine = _fft2c(maps_fine * image)
    # The central band, times the ratio of the orthonormal scalings sqrt(H W / (OH OW)) = 1 / O.
    y0 = kspace_fine[:, k_start[0] : k_start[0] + shape[0], k_start[1] : k_start[1] + shape[1]] / OVERSAMPLE
    maps = maps_fine[:, x_start[0] :: OVERSAMPLE, x_start[1] :: OVERSAMPLE][:, : shape[0], : shape[1]]
    maps = np.ascontiguousarray(maps)
    target = (maps.conj() * _ifft2c(y0)).sum(axis=0)
    peak = float(np.abs(target).max())
    if not peak > 0:
        raise ValueError("the image is empty: nothing to simulate")
    model_error = float(np.linalg.norm(y0 - _fft2c(maps * target)) / np.linalg.norm(y0))
    noise = rng.standard_normal((2, *y0.shape), dtype=np.float32) * np.float32(noise_sigma / np.sqrt(2))
    return {
        "kspace": (y0 / np.float32(peak) + (noise[0] + 1j * noise[1])).astype(np.complex64),
        "maps": maps,
        "target": (target / np.float32(peak)).astype(np.complex64),
        "scale": 1.0 / peak,
        "model_error": model_error,
    }


def _fine_grid_coordinates(shape: tuple[int, int], pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (mm, relative to the field-of-view centre) of the fine grid's pixel centres."""
    fine = [s * OVERSAMPLE for s in shape]
    rows, cols = [(np.arange(n) - n // 2) * (pixel_mm / OVERSAMPLE) for n in fine]
    return np.meshgrid(rows, cols, indexing="ij")


def _render(plane: np.ndarray, centre: tuple[float, float], shape, pixel_mm: float, rng: np.random.Generator):
    """Resample a 1 mm plane onto the fine grid with a random head position (rotation up to 8
    degrees, zoom 0.95 to 1.05, shift up to 6 mm); cubic spline, zero outside, clipped at 0."""
    angle = np.deg2rad(rng.uniform(-8, 8))
    zoom = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-6, 6, size=2)
    q_r, q_c = _fine_grid_coordinates(shape, pixel_mm)
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    src_r = centre[0] + shift[0] + cos * q_r - sin * q_c
    src_c = centre[1] + shift[1] + sin * q_r + cos * q_c
    out = ndimage.map_coordinates(plane.astype(np.float64), [src_r, src_c], order=3, mode="constant", cval=0.0)
    return np.clip(out, 0.0, None)


def _tier_geometry(tier: str | None) -> tuple[dict, tuple[int, int], float]:
    settings = config.settings(tier)
    shape = tuple(int(s) for s in settings["image_shape"])
    pixel_mm = FIELD_OF_VIEW_MM / max(shape)
    return settings, shape, pixel_mm


# --------------------------------------------------------------------------------------------- #
# Building the demo dataset
# --------------------------------------------------------------------------------------------- #


def _ismrmrd_header(shape: tuple[int, int], pixel_mm: float) -> bytes:
    """A minimal ISMRMRD XML header like fastMRI's: encoded/recon matrix and field of view."""
    h, w = shape
    space = (
        f"<matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize>"
        f"<fieldOfView_mm><x>{h * pixel_mm:.3f}</x><y>{w * pixel_mm:.3f}</y><z>1.0</z></fieldOfView_mm>"
    )
    limits = (
        f"<kspace_encoding_step_1><minimum>0</minimum><maximum>{w - 1}</maximum>"
        f"<center>{w // 2}</center></kspace_encoding_step_1>"
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
        f"<encodedSpace>{space}</encodedSpace><reconSpace>{space}</reconSpace>"
        f"<encodingLimits>{limits}</encodingLimits></encoding></ismrmrdHeader>"
    ).encode()


def _demo_config(tier: str, seed: int) -> dict:
    settings = config.settings(tier)
    return {
        "version": VERSION,
        "tier": tier,
        "seed": int(seed),
        "image_shape": [int(s) for s in settings["image_shape"]],
        "num_coils": int(settings["num_coils"]),
        "noise_sigma": float(settings["noise_sigma"]),
        "slices": {split: int(settings["demo_slices"][split]) for split in SPLITS},
        "oversample": OVERSAMPLE,
        "field_of_view_mm": FIELD_OF_VIEW_MM,
    }


def demo_dir(tier: str | None = None, seed: int = 0, root: str | Path | None = None) -> Path:
    """The cache directory of the demo dataset for ``tier`` and ``seed`` (its name hashes the config)."""
    tier = config.mode() if tier is None else tier
    cfg = _demo_config(tier, seed)
    key = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]
    return Path(root if root is not None else data_root()) / f"demo-v{VERSION}-{tier}-seed{seed}-{key}"


def build_demo_data(
    tier: str | None = None, seed: int = 0, root: str | Path | None = None, progress: bool = False
) -> Path:
    """Build the demo dataset if it is not cached yet, and return its directory.

    Needs no network: the anatomy comes from the nilearn wheel and the committed Colin27 volume.
    The directory is assembled under a temporary name and renamed in one step, so an interrupted
    build leaves nothing half-written; ``manifest.json`` lists the files, the split sizes, the
    sha256 of every file's arrays and of the whole dataset, and the build time.
    """
    tier = config.mode() if tier is None else tier
    final = demo_dir(tier, seed, root)
    if (final / "manifest.json").is_file():
        return final
    start = time.perf_counter()
    cfg = _demo_config(tier, seed)
    _, shape, pixel_mm = _tier_geometry(tier)

    volumes = {subject: load_head(subject) for subject in SUBJECTS}
    rows = [row for subject, (_, aff, brain) in volumes.items() for row in slice_table(subject, brain, aff)]
    chosen = {s: _choose([r for r in rows if r["split"] == s], cfg["slices"][s], s) for s in SPLITS}

    # The field-of-view centre per brain and orientation: the middle of the brain's in-plane extent.
    centres = {}
    for subject, (_, _, brain) in volumes.items():
        for orientation in ORIENTATIONS:
            projection = _display_plane(brain.any(axis=_SLICE_AXIS[orientation], keepdims=True), orientation, 0)
            nz = np.argwhere(projection)
            centres[subject, orientation] = tuple((nz.min(axis=0) + nz.max(axis=0)) / 2)

    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = _write_demo_files(tmp, cfg, volumes, chosen, centres, shape, pixel_mm, progress)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest["build_seconds"] = round(time.perf_counter() - start, 2)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    try:
        os.replace(tmp, final)
    except OSError:  # another process finished the same build first; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_demo_files(
    tmp: Path, cfg: dict, volumes: dict, chosen: dict, centres: dict, shape, pixel_mm: float, progress: bool
) -> dict:
    """Simulate the chosen slices and write one h5 file per split, brain and orientation into
    ``tmp``; return the manifest (without the build time)."""
    seed, num_coils, sigma = cfg["seed"], cfg["num_coils"], cfg["noise_sigma"]
    manifest = {**cfg, "splits": {}, "files": {}, "sources": {s: _array_digest(volumes[s][0]) for s in SUBJECTS}}
    model_errors, maps_cache = [], {}
    todo = [(split, s, o) for split in SPLITS for s in SUBJECTS for o in ORIENTATIONS]
    bar = _progress(sum(len(v) for v in chosen.values()), progress, "building demo data")
    for split, subject, orientation in todo:
        group = [r for r in chosen[split] if r["subject"] == subject and r["orientation"] == orientation]
        if not group:
            continue
        vol = volumes[subject][0]
        sims = []
        for row in group:
            rng = _rng(seed, SUBJECTS.index(subject), ORIENTATIONS.index(orientation), row["index"])
            plane = _display_plane(vol, orientation, row["index"])
            image = _render(plane, centres[subject, orientation], shape, pixel_mm, rng)
            sims.append(simulate_acquisition(image, shape, num_coils, sigma, rng, maps_cache))
            model_errors.append(sims[-1]["model_error"])
            bar.update(1)
        arrays = {key: np.stack([s[key] for s in sims]) for key in ("kspace", "maps", "target")}
        rss = np.sqrt((np.abs(_ifft2c(arrays["kspace"])) ** 2).sum(axis=1))
        arrays["reconstruction_rss"] = rss.astype(np.float32)
        arrays["scale"] = np.array([s["scale"] for s in sims], dtype=np.float64)
        arrays["slice_position_mm"] = np.array([r["position_mm"] for r in group], dtype=np.float32)
        arrays["slice_index"] = np.array([r["index"] for r in group], dtype=np.int32)
        relative = f"{split}/{subject}_{orientation}.h5"
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            for key in sorted(arrays):
                f.create_dataset(key, data=arrays[key])
            f.create_dataset("ismrmrd_header", data=np.bytes_(_ismrmrd_header(shape, pixel_mm)))
            f.attrs["acquisition"] = ACQUISITION[orientation]
            f.attrs["patient_id"] = subject
            f.attrs["max"] = float(arrays["reconstruction_rss"].max())
            f.attrs["norm"] = float(np.linalg.norm(arrays["reconstruction_rss"]))
            f.attrs["orientation"] = orientation
            f.attrs["mrtutor_demo_version"] = VERSION
        manifest["files"][relative] = _array_digest(*(arrays[k] for k in sorted(arrays)))
        manifest["splits"].setdefault(split, {"files": [], "slices": 0})
        manifest["splits"][split]["files"].append(relative)
        manifest["splits"][split]["slices"] += len(group)
    bar.close()
    manifest["sha256"] = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()
    manifest["model_error_mean"] = float(np.mean(model_errors))
    return manifest


def demo_manifest(tier: str | None = None, seed: int = 0, root: str | Path | None = None) -> dict:
    """The manifest of the (built on demand) demo dataset: files, split sizes, hashes, build time."""
    return json.loads((build_demo_data(tier, seed, root) / "manifest.json").read_text())


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


# --------------------------------------------------------------------------------------------- #
# Masks
# --------------------------------------------------------------------------------------------- #


class NamedMask:
    """A ``(shape, seed) -> mask`` callable for the pattern ``name`` of ``mrtutor.masks.MASKS``:
    ``mrtutor.masks.make_mask`` with this ``acceleration`` and ``options``. A class rather than a
    closure so that datasets holding it can be sent to ``DataLoader`` worker processes."""

    def __init__(self, name: str, acceleration: float, **options):
        from mrtutor import masks

        if name not in masks.MASKS:
            raise ValueError(f"mask name must be one of {sorted(masks.MASKS)}, got {name!r}")
        if acceleration is None:
            raise ValueError(f"mask {name!r} needs an acceleration, got acceleration=None")
        self.name, self.acceleration, self.options = name, acceleration, options

    def __call__(self, shape: tuple, seed: int) -> torch.Tensor:
        from mrtutor import masks

        return masks.make_mask(self.name, tuple(shape), self.acceleration, seed, **self.options)

    def __repr__(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"NamedMask({self.name!r}, acceleration={self.acceleration}{options})"


def _resolve_mask_fn(mask_fn, acceleration) -> MaskFn | None:
    if mask_fn is None or callable(mask_fn):
        if acceleration is not None:
            raise ValueError(f"acceleration={acceleration} goes with a mask name; got mask_fn={mask_fn!r}")
        return mask_fn
    if isinstance(mask_fn, str):
        return NamedMask(mask_fn, acceleration)
    raise TypeError(
        f"mask_fn must be None, a mask name or a callable (shape, seed) -> mask, got {type(mask_fn).__name__}"
    )


def _as_mask(mask, shape: tuple[int, int], origin: str) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.is_complex() or tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{origin} must give a real mask of shape {tuple(shape)}, got {mask.dtype} {tuple(mask.shape)}"
        )
    return mask.detach().to(device="cpu", dtype=torch.float32)


# --------------------------------------------------------------------------------------------- #
# Datasets
# --------------------------------------------------------------------------------------------- #


class KspaceDataset(torch.utils.data.Dataset):
    """Base class: subclasses provide ``__len__`` and ``fully_sampled_arrays(index)``; this class
    draws the mask and applies it.

    Masks: ``mask_fn`` is ``None`` (fully sampled, unless the subclass has its own masks), a name
    from ``mrtutor.masks.MASKS`` with ``acceleration``, or a callable ``(shape, seed) -> (H, W)
    mask``.
    With ``fixed_mask=True`` every sample gets the mask of seed ``mask_seed``; otherwise sample i
    gets the seed derived from (``mask_seed``, epoch, i), so it is repeatable and
    ``set_epoch(e)`` gives a fresh mask per epoch.
    """

    def __init__(self, mask_fn=None, acceleration: float | None = None, fixed_mask: bool = False, mask_seed: int = 0):
        self.mask_fn = _resolve_mask_fn(mask_fn, acceleration)
        self.fixed_mask = bool(fixed_mask)
        if int(mask_seed) < 0:
            raise ValueError(f"mask_seed must be >= 0, got {mask_seed}")
        self.mask_seed = int(mask_seed)
        self.epoch = 0
        self._fixed_cache: dict[tuple, torch.Tensor] = {}

    def set_epoch(self, epoch: int) -> None:
        """Use the masks of ``epoch`` (per-sample masks only); call it at the start of each epoch."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def mask_seed_for(self, index: int) -> int:
        """The seed of sample ``index``'s mask in the current epoch."""
        if self.fixed_mask:
            return self.mask_seed
        return _seed(self.mask_seed, self.epoch, index)

    def mask_for(self, index: int, shape: tuple[int, int]) -> torch.Tensor:
        """The (H, W) float32 mask of sample ``index`` (ones when there is no mask function)."""
        if self.mask_fn is None:
            return torch.ones(shape, dtype=torch.float32)
        seed = self.mask_seed_for(index)
        if self.fixed_mask and tuple(shape) in self._fixed_cache:
            return self._fixed_cache[tuple(shape)]
        mask = _as_mask(self.mask_fn(tuple(shape), seed), shape, f"mask_fn {self.mask_fn!r}")
        if self.fixed_mask:
            self._fixed_cache[tuple(shape)] = mask
        return mask

    def fully_sampled_arrays(self, index: int) -> dict:
        raise NotImplementedError

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a dataset of {n} samples")
        return index % n

    def fully_sampled(self, index: int) -> dict:
        """Sample ``index`` with the full noisy k-space and a mask of ones."""
        sample = self.fully_sampled_arrays(self._check_index(index))
        sample["mask"] = torch.ones(sample["kspace"].shape[-2:], dtype=torch.float32)
        return sample

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        sample = self.fully_sampled_arrays(index)
        mask = self.mask_for(index, tuple(sample["kspace"].shape[-2:]))
        sample["kspace"] = sample["kspace"] * mask
        sample["mask"] = mask
        return sample


class _H5Files:
    """Open h5 files, reused per process (h5py handles cannot cross a fork) and capped at
    ``MAX_OPEN`` (the least recently used is closed); read errors name the file and the key."""

    MAX_OPEN = 32

    def __init__(self):
        self._pid, self._open = os.getpid(), collections.OrderedDict()

    def get(self, path: Path, key: str) -> h5py.File:
        if self._pid != os.getpid():
            self._pid, self._open = os.getpid(), collections.OrderedDict()
        if path in self._open:
            self._open.move_to_end(path)
        else:
            self._open[path] = _open_h5(path, key)
            if len(self._open) > self.MAX_OPEN:
                self._open.popitem(last=False)[1].close()
        return self._open[path]

    def read(self, path: Path, key: str, index=()) -> np.ndarray:
        f = self.get(path, key)
        if key not in f:
            raise DataFileError(f"{path} has no key {key!r}; it has {sorted(f.keys())}")
        try:
            return f[key][index]
        except (OSError, ValueError, KeyError) as err:
            raise DataFileError(f"cannot read key {key!r} from {path}: {err} (is the file truncated?)") from err

    def __getstate__(self):
        return {"_pid": None, "_open": collections.OrderedDict()}


def _open_h5(path: Path, key: str) -> h5py.File:
    if not Path(path).is_file():
        raise DataFileError(f"cannot read key {key!r}: {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataFileError(
            f"cannot read key {key!r} from {path}: not a readable HDF5 file, truncated or corrupt ({err})"
        ) from err


def _complex(array: np.ndarray, path, key: str) -> np.ndarray:
    """h5 complex data as numpy complex64: native complex, or a compound of (r, i) / (real, imag)."""
    if np.iscomplexobj(array):
        return array.astype(np.complex64, copy=False)
    names = array.dtype.names or ()
    for re, im in (("r", "i"), ("real", "imag")):
        if re in names and im in names:
            return (array[re] + 1j * array[im]).astype(np.complex64)
    raise DataFileError(f"key {key!r} of {path} must be complex, got dtype {array.dtype}")


class FastMRIDataset(KspaceDataset):
    """Slices of fastMRI h5 files as distributed (multi-coil or single-coil), or of the demo files.

    Multi-coil ``kspace`` is (slices, coils, H, W), single-coil (slices, H, W) (then C = 1 with unit
    maps). Maps: the file's ``maps`` when present (demo files), else ESPIRiT maps from sigpy
    (``sigpy.mri.app.EspiritCalib``), computed for the whole file on first use and cached in
    ``maps_cache`` (default ``data_root() / "espirit"``). Target: the file's ``target`` when present,
    else the coil combination ``sum_c conj(S_c) ifft2c(y_c)`` of the fully sampled noisy k-space (a
    complex reference at the k-space grid, including the readout oversampling). Both are scaled so
    that max |target| = 1. Files with a ``mask`` key (fastMRI test/challenge data, already
    undersampled, no reference) are refused.

    Args:
        files: h5 paths, or one directory (all ``*.h5`` in it, sorted).
        mask_fn, acceleration, fixed_mask, mask_seed: see ``KspaceDataset``.
        maps_cache: directory for the ESPIRiT maps.
        espirit: keyword arguments for ``EspiritCalib`` (default calib_width 24, thresh 0.02, crop 0.95).
        order_seed: ``None`` keeps the slices in file order; an integer applies a fixed random
            permutation, so that any prefix (e.g. ``Subset(ds, range(n))``) mixes all files.
    """

    def __init__(
        self,
        files: Iterable[str | Path] | str | Path,
        mask_fn=None,
        acceleration: float | None = None,
        fixed_mask: bool = False,
        mask_seed: int = 0,
        maps_cache: str | Path | None = None,
        espirit: dict | None = None,
        order_seed: int | None = None,
    ):
        super().__init__(mask_fn, acceleration, fixed_mask, mask_seed)
        if isinstance(files, (str, Path)) and Path(files).is_dir():
            files = sorted(Path(files).glob("*.h5"))
        elif isinstance(files, (str, Path)):
            files = [files]
        self.files = [Path(f) for f in files]
        if not self.files:
            raise ValueError("files is empty: expected at least one h5 file")
        self.maps_cache = Path(maps_cache) if maps_cache is not None else data_root() / "espirit"
        self.espirit = {"calib_width": 24, "thresh": 0.02, "crop": 0.95, **(espirit or {})}
        self._h5 = _H5Files()
        self.index: list[tuple[int, int]] = []
        for n, path in enumerate(self.files):
            f = self._h5.get(path, "kspace")
            if "kspace" not in f:
                raise DataFileError(f"{path} has no key 'kspace'; it has {sorted(f.keys())}")
            if "mask" in f:
                raise DataFileError(
                    f"{path} has a 'mask' key: undersampled fastMRI test data have no reference; use train/val files"
                )
            if f["kspace"].ndim not in (3, 4):
                raise DataFileError(
                    f"key 'kspace' of {path} must be (slices, H, W) or (slices, coils, H, W), got {f['kspace'].shape}"
                )
            self.index += [(n, s) for s in range(f["kspace"].shape[0])]
        if order_seed is not None:
            self.index = [self.index[i] for i in _rng(order_seed).permutation(len(self.index))]

    def __len__(self) -> int:
        return len(self.index)

    def _maps(self, path: Path, f: h5py.File, slice_: int, kspace: np.ndarray) -> np.ndarray:
        if "maps" in f:
            return _complex(self._h5.read(path, "maps", slice_), path, "maps")
        if f["kspace"].ndim == 3:  # single coil
            return np.ones_like(kspace)
        cached = espirit_maps_file(path, self.maps_cache, **self.espirit)
        return self._h5.read(cached, "maps", slice_)

    def fully_sampled_arrays(self, index: int) -> dict:
        file_index, slice_ = self.index[index]
        path = self.files[file_index]
        f = self._h5.get(path, "kspace")
        kspace = _complex(self._h5.read(path, "kspace", slice_), path, "kspace")
        if kspace.ndim == 2:
            kspace = kspace[None]
        maps = self._maps(path, f, slice_, kspace)
        if maps.shape != kspace.shape:
            raise DataFileError(f"maps of {path} slice {slice_} have shape {maps.shape}, k-space {kspace.shape}")
        if "target" in f:
            target = _complex(self._h5.read(path, "target", slice_), path, "target")
        else:
            target = (maps.conj() * _ifft2c(kspace)).sum(axis=0).astype(np.complex64)
        peak = float(np.abs(target).max())
        if not peak > 0:
            raise DataFileError(f"{path} slice {slice_}: the reference image is all zero")
        file_scale = float(self._h5.read(path, "scale", slice_)) if "scale" in f else 1.0
        subject = f.attrs.get("patient_id", path.stem)
        subject = subject.decode() if isinstance(subject, bytes) else str(subject)
        if "slice_position_mm" in f:
            position = float(self._h5.read(path, "slice_position_mm", slice_))
            slice_id = f"{subject}:{f.attrs.get('orientation', '')}:{position:+.1f}mm"
        else:
            slice_id = f"{path.name}:{slice_}"
        return {
            "kspace": torch.from_numpy(kspace / peak),
            "maps": torch.from_numpy(np.ascontiguousarray(maps, dtype=np.complex64)),
            "target": torch.from_numpy(target / peak),
            "scale": file_scale / peak,
            "subject": subject,
            "slice_id": slice_id,
            "fname": path.name,
            "slice": int(slice_),
        }


def espirit_maps_file(path: str | Path, cache_dir: str | Path | None = None, **espirit) -> Path:
    """The h5 file holding ESPIRiT maps ``maps`` (slices, C, H, W) complex64 of a multi-coil
    fastMRI file, computed on first call (``sigpy.mri.app.EspiritCalib`` per slice, on the fully
    sampled k-space) and written atomically into ``cache_dir`` (default ``data_root() / "espirit"``).
    The cache key hashes the file's path, size and modification time and the ESPIRiT settings."""
    path = Path(path)
    cache_dir = Path(cache_dir) if cache_dir is not None else data_root() / "espirit"
    stat = path.stat()
    key = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, espirit], sort_keys=True)
    cached = cache_dir / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.h5"
    if cached.is_file():
        return cached
    from sigpy.mri.app import EspiritCalib

    with _open_h5(path, "kspace") as source, _atomic_path(cached) as tmp, h5py.File(tmp, "w") as out:
        if "kspace" not in source:
            raise DataFileError(f"{path} has no key 'kspace'; it has {sorted(source.keys())}")
        kspace = source["kspace"]
        maps = out.create_dataset("maps", shape=kspace.shape, dtype=np.complex64)
        for s in range(kspace.shape[0]):  # slice by slice: a whole file can be gigabytes
            maps[s] = EspiritCalib(_complex(kspace[s], path, "kspace"), show_pbar=False, **espirit).run()
    return cached


def _modl_mask_to_centred(mask: np.ndarray) -> np.ndarray:
    """The one place where MoDL's masks (DC at [0, 0], for its uncentred ``np.fft.fft2``) become
    centred (DC in the middle): an fftshift over the last two axes."""
    return np.fft.fftshift(mask, axes=(-2, -1))


class ModlDataset(KspaceDataset):
    """The MoDL brain dataset (``dataset.hdf5``, Aggarwal et al. 2019) as distributed.

    Layout, as the MoDL code reads it (``supportingFunctions.getData``, h5py, row-major; the int8
    mask dtype is from the PyTorch port ``bo-10000/MoDL_PyTorch``; not checked against the file
    itself, which was not downloaded here): ``trnOrg`` (360, 256, 232) complex64 images, ``trnCsm``
    (360, 12, 256, 232) complex64 ESPIRiT maps, ``trnMask`` (360, 256, 232) int8 6x masks; ``tst*``
    the same for 164 test slices. Any mask dtype works (non-zero = sampled). MoDL's operator is
    ``fft2(csm * x) / sqrt(nrow * ncol)``, uncentred, so its masks have DC at [0, 0]: they are
    shifted to the centred convention in ``_modl_mask_to_centred`` and nowhere else.

    The file has no k-space: as in MoDL, it is simulated from the image and maps (centred
    orthonormal FFT), after scaling the image to max |x| = 1, with complex noise of standard
    deviation ``sigma`` (E|n|^2 = sigma^2; MoDL used 0.01), fixed per slice by ``noise_seed``.

    Args:
        path: ``dataset.hdf5``.
        split: ``"train"`` (trn*) or ``"test"`` (tst*).
        mask_fn: ``None`` uses the file's masks; else see ``KspaceDataset``.
        sigma: noise standard deviation on max-1 images.
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        mask_fn=None,
        acceleration: float | None = None,
        fixed_mask: bool = False,
        mask_seed: int = 0,
        sigma: float = 0.01,
        noise_seed: int = 0,
    ):
        super().__init__(mask_fn, acceleration, fixed_mask, mask_seed)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.path, self.split, self.sigma, self.noise_seed = Path(path), split, float(sigma), int(noise_seed)
        self.prefix = "trn" if split == "train" else "tst"
        self._h5 = _H5Files()
        shapes = {}
        for name in ("Org", "Csm", "Mask"):
            key = self.prefix + name
            f = self._h5.get(self.path, key)
            if key not in f:
                raise DataFileError(f"{self.path} has no key {key!r}; it has {sorted(f.keys())}")
            shapes[name] = f[key].shape
        org, csm, mask = shapes["Org"], shapes["Csm"], shapes["Mask"]
        if len(org) != 3 or len(csm) != 4 or csm[0] != org[0] or csm[2:] != org[1:] or mask not in (org, org[1:]):
            raise DataFileError(
                f"{self.path}: inconsistent shapes {self.prefix}Org {org}, {self.prefix}Csm {csm}, "
                f"{self.prefix}Mask {mask}; expected (N, H, W), (N, C, H, W) and (N, H, W)"
            )
        self._length = org[0]

    def __len__(self) -> int:
        return self._length

    def mask_for(self, index: int, shape: tuple[int, int]) -> torch.Tensor:
        if self.mask_fn is not None:
            return super().mask_for(index, shape)
        key = self.prefix + "Mask"
        mask = self._h5.read(self.path, key, index if self._h5.get(self.path, key)[key].ndim == 3 else ())
        return torch.from_numpy((_modl_mask_to_centred(mask) != 0).astype(np.float32))

    def fully_sampled_arrays(self, index: int) -> dict:
        org = _complex(self._h5.read(self.path, self.prefix + "Org", index), self.path, self.prefix + "Org")
        csm = _complex(self._h5.read(self.path, self.prefix + "Csm", index), self.path, self.prefix + "Csm")
        peak = float(np.abs(org).max())
        if not peak > 0:
            raise DataFileError(f"{self.path}: {self.prefix}Org[{index}] is all zero")
        target = org / peak
        noise = _rng(self.noise_seed, 1 if self.split == "train" else 2, index).standard_normal((2, *csm.shape))
        kspace = _fft2c(csm * target) + (self.sigma / np.sqrt(2)) * (noise[0] + 1j * noise[1])
        return {
            "kspace": torch.from_numpy(kspace.astype(np.complex64)),
            "maps": torch.from_numpy(csm),
            "target": torch.from_numpy(target.astype(np.complex64)),
            "scale": 1.0 / peak,
            "subject": f"modl-{self.split}",
            "slice_id": f"{self.prefix}:{index}",
            "fname": self.path.name,
            "slice": int(index),
        }


def demo_dataset(
    split: str,
    tier: str | None = None,
    mask_fn=None,
    acceleration: float | None = None,
    fixed_mask: bool = False,
    mask_seed: int = 0,
    subjects: Iterable[str] = SUBJECTS,
    seed: int = 0,
    root: str | Path | None = None,
    progress: bool = True,
) -> FastMRIDataset:
    """The embedded demo dataset (built offline and cached on first use) as a torch Dataset.

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` (disjoint slabs of both brains) or ``"all"``.
        tier: ``quick`` / ``demo`` / ``paper`` (default: ``config.mode()``); sets H, W, coils, noise
            and the number of slices (``config.TIERS[tier]["demo_slices"]``).
        mask_fn, acceleration, fixed_mask, mask_seed: the masks (see ``KspaceDataset``); for example
            ``mask_fn="variable_density_2d", acceleration=4``. Default: fully sampled.
        subjects: which brains, a subset of ``SUBJECTS``.
        seed: the dataset's seed (anatomy jitter, phase, coils, noise).
        root: cache directory (default ``data_root()``).
    Returns:
        a ``FastMRIDataset`` whose samples follow the layout in this module's docstring, in a fixed
        shuffled order (seeded by ``seed``), so that the first n samples mix brains and orientations.
    """
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {(*SPLITS, 'all')}, got {split!r}")
    subjects = tuple(subjects)
    if not subjects or any(s not in SUBJECTS for s in subjects):
        raise ValueError(f"subjects must be a non-empty subset of {SUBJECTS}, got {subjects}")
    directory = build_demo_data(tier, seed, root, progress=progress)
    manifest = json.loads((directory / "manifest.json").read_text())
    splits = SPLITS if split == "all" else (split,)
    files = [
        directory / rel
        for s in splits
        for rel in manifest["splits"].get(s, {}).get("files", [])
        if Path(rel).stem.split("_")[0] in subjects
    ]
    if not files:
        raise ValueError(f"the demo dataset has no {split} slices of {subjects} in tier {manifest['tier']}")
    return FastMRIDataset(files, mask_fn, acceleration, fixed_mask, mask_seed, order_seed=seed)


def subject_split(train_subject: str = "mni152", tier: str | None = None, **kwargs) -> dict[str, FastMRIDataset]:
    """Train on one brain, test on the other (the analog of MoDL's unseen test subject).

    Returns ``{"train", "val", "test"}``: the train and val slabs of ``train_subject`` and every
    slice of the other brain. ``kwargs`` go to ``demo_dataset`` (masks, seed, root).
    """
    if train_subject not in SUBJECTS:
        raise ValueError(f"train_subject must be one of {SUBJECTS}, got {train_subject!r}")
    (other,) = [s for s in SUBJECTS if s != train_subject]
    return {
        "train": demo_dataset("train", tier, subjects=(train_subject,), **kwargs),
        "val": demo_dataset("val", tier, subjects=(train_subject,), **kwargs),
        "test": demo_dataset("all", tier, subjects=(other,), **kwargs),
    }


# --------------------------------------------------------------------------------------------- #
# Out-of-distribution images
# --------------------------------------------------------------------------------------------- #


def _ood_image(name: str) -> tuple[np.ndarray, bool]:
    """A 2-D image in [0, 1] and whether it is an object on a background (else it fills the view)."""
    if name == "dipy_t1":
        from dipy.data import get_fnames

        return np.load(get_fnames(name="t1_coronal_slice")).astype(np.float64), True
    import skimage.data
    from skimage.color import rgb2gray

    image = getattr(skimage.data, "shepp_logan_phantom" if name == "phantom" else name)()
    image = rgb2gray(image) if image.ndim == 3 else image.astype(np.float64)
    return image / image.max(), name == "phantom"


def ood_samples(
    names: Iterable[str] = ("dipy_t1", "camera"),
    tier: str | None = None,
    mask_fn=None,
    acceleration: float | None = None,
    seed: int = 0,
) -> list[dict]:
    """Out-of-distribution images through the demo's simulated acquisition, as samples.

    ``names`` from ``OOD_NAMES``: ``dipy_t1`` (dipy's real single-subject coronal T1 slice, shipped
    in the dipy wheel) and scikit-image's shipped images (``camera``, ``astronaut`` in grey, ...).
    An object on a background (dipy's brain, the phantom) is scaled so that its extent fills 75%
    of the field of view like the demo brains; a natural image fills the whole field of view.
    Masks: as in ``demo_dataset`` (one mask per image, seeded by ``seed`` and its position).
    """
    settings, shape, _ = _tier_geometry(tier)
    names = list(names)
    for name in names:
        if name not in OOD_NAMES:
            raise ValueError(f"names must come from {OOD_NAMES}, got {name!r}")
    mask_fn = _resolve_mask_fn(mask_fn, acceleration)
    fine = tuple(s * OVERSAMPLE for s in shape)
    samples = []
    for n, name in enumerate(names):
        image, is_object = _ood_image(name)
        if is_object:  # the object's larger extent spans 75% of the shorter side of the view
            nz = np.argwhere(image > 0.05)
            lo, hi = nz.min(axis=0), nz.max(axis=0)
            centre, step = (lo + hi) / 2, (hi - lo + 1).max() / (0.75 * min(fine))
        else:  # the image covers the whole view, cropped to its aspect ratio
            centre, step = (np.array(image.shape) - 1) / 2, min(image.shape[0] / fine[0], image.shape[1] / fine[1])
        # step: source pixels per fine pixel, the same along both axes
        rows, cols = [(np.arange(f) - f // 2) * step + c for f, c in zip(fine, centre)]
        image_fine = ndimage.map_coordinates(image, np.meshgrid(rows, cols, indexing="ij"), order=3, mode="constant")
        rng = _rng(seed, 99, n)  # 99: no demo subject, so these draws differ from every demo slice's
        image_fine = np.clip(image_fine, 0, None)
        sim = simulate_acquisition(image_fine, shape, settings["num_coils"], settings["noise_sigma"], rng)
        mask = torch.ones(shape)
        if mask_fn is not None:
            mask = _as_mask(mask_fn(shape, _seed(seed, n)), shape, "mask_fn")
        samples.append(
            {
                "kspace": torch.from_numpy(sim["kspace"]) * mask,
                "mask": mask,
                "maps": torch.from_numpy(sim["maps"]),
                "target": torch.from_numpy(sim["target"]),
                "scale": sim["scale"],
                "subject": name,
                "slice_id": name,
                "fname": "",
                "slice": 0,
            }
        )
    return samples


# --------------------------------------------------------------------------------------------- #
# Downloads (the real datasets; never run by the tests)
# --------------------------------------------------------------------------------------------- #

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


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 16 MB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


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
