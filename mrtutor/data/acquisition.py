"""The simulated multi-coil acquisition (used by the demo dataset and the out-of-distribution
images): a magnitude image on a grid ``OVERSAMPLE`` times finer than the reconstruction grid gets a
smooth random phase and birdcage coil maps, and the central band of its coil k-space becomes the
noisy measurement (``simulate_acquisition``); also the random head position of a rendered plane and
the geometry (grid, field of view) of each tier. The steps and why they avoid the "inverse crime"
are in ``mrtutor.data.demo``'s notes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mrtutor import config
from mrtutor.data.numerics import _fft2c, _ifft2c

OVERSAMPLE = 2
FIELD_OF_VIEW_MM = 240.0  # along the longer image side: a head is about 220 mm long, plus head-position jitter


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
        ``model_error`` = ||y0 - A target|| / ||y0|| of the noiseless data (see ``mrtutor.data.demo``).
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
