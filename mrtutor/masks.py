"""Sampling masks: every k-space (and pixel) sampling pattern the five papers use.

Conventions (``DESIGN.md``):

* A mask is a real ``torch.float32`` tensor of shape (H, W) with values 0/1, stored centred: DC at
  index ``(H // 2, W // 2)``, like the k-space of ``mrtutor.fft.fft2c``. It broadcasts against
  k-space (B, C, H, W) as it is.
* 1-D masks select phase-encode columns along the last dimension W (as fastMRI) and are expanded
  over all H rows.
* A centred block of size ``c`` along an axis of length ``n`` covers the indices
  ``n//2 - c//2 ... n//2 - c//2 + c - 1``: exactly the frequencies of a ``c``-point centred FFT, so
  it always contains DC. Every k-space mask here samples DC.
* Seeds: each random mask takes ``seed``, an int >= 0 (the same seed gives the same mask) or
  ``None`` (fresh entropy from the OS: a different mask on every call). Each call draws from its own
  ``np.random.default_rng(seed)``; the global RNGs of NumPy, torch and Python are never touched.
* Acceleration: a random mask samples exactly ``round(N / acceleration)`` of its N units (pixels,
  or columns for the 1-D masks), so its real acceleration ``N / count`` is as close to the request
  as whole samples allow: within 5 % whenever at least 10 units are sampled.
  ``acceleration(mask)`` reports the real value.

Masks are built on the CPU; move them with ``.to(device)``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = [
    "MASKS",
    "acceleration",
    "column_equispaced",
    "column_random",
    "low_resolution",
    "make_mask",
    "poisson_disc",
    "radial_view_ordering",
    "random_pixels",
    "variable_density_2d",
]

# Golden angle for full spokes (2 pi / phi^2, about 137.5 degrees): successive spokes never repeat
# and any run of consecutive spokes covers the angles nearly uniformly.
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))

# Poisson disc: at most 20 draws while searching the slope (2 to 5 are typical; 20 halvings would
# narrow it far below any change in the pattern), and sigpy's default number of candidate points
# tried around each sample.
_POISSON_MAX_DRAWS = 20
_POISSON_ATTEMPTS = 30


# ---------------------------------------------------------------------------- input checks


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_shape(shape) -> tuple[int, int]:
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) != 2:
        raise ValueError(f"shape must be a pair of positive ints (H, W), got {shape!r}")
    if not all(_is_int(n) and n > 0 for n in shape):
        raise ValueError(f"shape must be a pair of positive ints (H, W), got {tuple(shape)!r}")
    return int(shape[0]), int(shape[1])


def _check_acceleration(value, minimum: float = 1.0) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"acceleration must be a real number, got {type(value).__name__}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"acceleration must be finite and >= {minimum:g}, got {value!r}")
    return float(value)


def _rng(seed) -> np.random.Generator:
    if seed is not None and not (_is_int(seed) and seed >= 0):
        raise ValueError(f"seed must be an int >= 0 or None, got {seed!r}")
    return np.random.default_rng(seed)


def _check_power(power, minimum: float) -> float:
    """The density exponent of the variable-density masks: a finite real >= ``minimum``."""
    if not (isinstance(power, numbers.Real) and math.isfinite(power) and power >= minimum):
        raise ValueError(f"power must be a finite number >= {minimum:g}, got {power!r}")
    return power


def _check_block(block, shape: tuple[int, int], name: str) -> tuple[int, int]:
    if not isinstance(block, (tuple, list)) or len(block) != 2 or not all(_is_int(n) for n in block):
        raise ValueError(f"{name} must be a pair of ints (h, w), got {block!r}")
    h, w = int(block[0]), int(block[1])
    if not (1 <= h <= shape[0] and 1 <= w <= shape[1]):
        raise ValueError(f"{name} must lie in [1, H] x [1, W] = [1, {shape[0]}] x [1, {shape[1]}], got {(h, w)}")
    return h, w


def _target_count(units: int, accel: float) -> int:
    """Samples that give ``accel`` over ``units`` as closely as whole samples can (at least one)."""
    return max(1, round(units / accel))


def _check_fits(forced: int, count: int, name: str, value, accel: float) -> None:
    if forced > count:
        raise ValueError(
            f"{name}={value!r} fixes {forced} samples, more than the {count} that acceleration "
            f"{accel:g} allows; use a smaller {name} or a lower acceleration"
        )


# ---------------------------------------------------------------------------- geometry helpers


def _centred_slice(n: int, c: int) -> slice:
    """The ``c`` central indices of an axis of length ``n`` (the frequencies of a c-point FFT)."""
    start = n // 2 - c // 2
    return slice(start, start + c)


def _default_calib(shape: tuple[int, int]) -> tuple[int, int]:
    """A small fully sampled centre, 1/16 of each side (16 x 14 at 256 x 232; 3 x 3 at 48 x 48)."""
    return max(1, shape[0] // 16), max(1, shape[1] // 16)


def _normalised_radius(shape: tuple[int, int]) -> np.ndarray:
    """Elliptical k-space radius, (H, W): 0 at DC, 1 at the middle of each edge, about sqrt(2) at corners."""
    ky = (np.arange(shape[0]) - shape[0] // 2) / (shape[0] / 2)
    kx = (np.arange(shape[1]) - shape[1] // 2) / (shape[1] / 2)
    return np.hypot(ky[:, None], kx[None, :])


def _weighted_sample(rng: np.random.Generator, weights: np.ndarray, k: int) -> np.ndarray:
    """``k`` distinct indices drawn one after another with probability proportional to ``weights``.

    Efraimidis and Spirakis (2006): the ``k`` largest keys ``log(u) / w``, u ~ U(0, 1), are a
    weighted sample without replacement; one sort instead of ``k`` sequential draws. Zero weights
    get key -inf and are taken only when nothing else is left.
    """
    with np.errstate(divide="ignore"):
        keys = np.where(weights > 0, np.log(rng.random(weights.size)) / weights, -np.inf)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    return np.argpartition(keys, weights.size - k)[weights.size - k :]


def _to_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))


def _with_calib(shape: tuple[int, int], calib, accel: float) -> tuple[np.ndarray, tuple[int, int], int]:
    """Zero (H, W) mask with its fully sampled centre block set (``calib=None`` picks the default),
    the block (h, w), and the number of samples ``accel`` asks for, checked to leave room for it."""
    calib = _default_calib(shape) if calib is None else _check_block(calib, shape, "calib")
    mask = np.zeros(shape, dtype=bool)
    mask[_centred_slice(shape[0], calib[0]), _centred_slice(shape[1], calib[1])] = True
    count = _target_count(mask.size, accel)
    _check_fits(calib[0] * calib[1], count, "calib", calib, accel)
    return mask, calib, count


# ---------------------------------------------------------------------------- 2-D random masks


def variable_density_2d(shape, acceleration: float, seed, *, calib=None, power: float = 4.0) -> torch.Tensor:
    """Variable-density pseudo-random Cartesian mask with a fully sampled centre (MoDL, MOL).

    MoDL undersamples the two phase-encode directions of a 3-D Cartesian scan with "variable-density
    Cartesian random sampling masks", a different one for each training slice (Aggarwal et al. 2019,
    Sec. IV-B); MOL uses "2D non-uniform variable density undersampling masks" (Pramanik and Jacob,
    Sec. 3). A 2-D slice of such a scan sees a 2-D random pattern, which this function draws.

    The ``calib`` block is sampled fully; the remaining ``round(H*W/acceleration) - h*w`` pixels are
    drawn without replacement with probability proportional to the polynomial density
    ``(1 - r / sqrt(2)) ** power`` of Lustig, Donoho and Pauly (2007), where ``r`` is the elliptical
    k-space radius (1 at the middle of each edge), so the count, and the acceleration, are exact.

    Args:
        shape: (H, W).
        acceleration: target H*W / (number of samples), >= 1.
        seed: int >= 0 for a reproducible mask, or None for a fresh one.
        calib: (h, w) fully sampled centre; default 1/16 of each side.
        power: density decay; larger concentrates the samples nearer the centre.

    Returns:
        (H, W) float32 0/1 mask, DC at (H//2, W//2).
    """
    shape = _check_shape(shape)
    accel = _check_acceleration(acceleration)
    rng = _rng(seed)
    power = _check_power(power, 0)
    mask, calib, count = _with_calib(shape, calib, accel)

    free = np.flatnonzero(~mask)
    density = np.clip(1.0 - _normalised_radius(shape).ravel()[free] / math.sqrt(2.0), 0.0, None) ** power
    mask.ravel()[free[_weighted_sample(rng, density, count - calib[0] * calib[1])]] = True
    return _to_tensor(mask)


def radial_view_ordering(
    shape, acceleration: float, seed, *, calib=None, power: float = 2.0, points_per_spoke: int | None = None
) -> torch.Tensor:
    """Variable-density Cartesian sampling with radial view ordering (Neural proximal gradient descent).

    Mardani et al. (2018, Sec. 5.2) pick the 20 % of k-space they keep (5-fold) by "variable-density
    sampling with radial view ordering", citing Lustig, Donoho and Pauly (2007). The pattern (VDRad,
    from the same Stanford group: Cheng et al., JMRI 2015) belongs to 3-D Cartesian scans: the
    phase-encode points of the ky-kz plane are acquired spoke by spoke, each spoke running from the
    centre outwards, successive spokes rotated by the golden angle, and the points along a spoke
    spaced more widely further out. We draw that plane, (H, W), directly:

    * spoke ``s`` has angle ``theta_0 + s * 137.5 deg`` (``theta_0`` random) and
      ``n`` points at elliptical radii ``r_j = sqrt(2) * ((j + u_s) / n) ** power``,
      ``u_s ~ U(0, 1)`` a random shift per spoke, rounded to the Cartesian grid;
    * spokes are added in order, each contributing the grid points not yet sampled, until exactly
      ``round(H*W/acceleration)`` points are sampled (the last spoke stops part way).

    Spokes crowd together at the centre (angular density 1/r) and ``power > 1`` spreads the points
    of each spoke outwards, so the sampling density falls off about as ``r ** (1/power - 2)``: dense
    at the centre, sparse at the edge. The fully sampled ``calib`` block guarantees DC. This is an
    approximation of the scanner's view ordering (no time ordering or readout timing is modelled):
    what matters for reconstruction is the set of sampled points, which it reproduces.

    Args:
        shape: (H, W).
        acceleration: target H*W / (number of samples), >= 1.
        seed: int >= 0 for a reproducible mask, or None for a fresh one.
        calib: (h, w) fully sampled centre; default 1/16 of each side.
        power: radial spacing exponent (>= 1); 1 gives evenly spaced points along each spoke.
        points_per_spoke: ``n``; default ``max(H, W) // 8`` (32 at 256), which spreads the samples
            over many short spokes, as in VDRad, rather than a few long ones that look like radial
            lines.

    Returns:
        (H, W) float32 0/1 mask, DC at (H//2, W//2).
    """
    shape = _check_shape(shape)
    accel = _check_acceleration(acceleration)
    rng = _rng(seed)
    power = _check_power(power, 1)
    if points_per_spoke is None:
        points_per_spoke = max(2, max(shape) // 8)
    elif not (_is_int(points_per_spoke) and points_per_spoke >= 1):
        raise ValueError(f"points_per_spoke must be an int >= 1 or None, got {points_per_spoke!r}")
    mask, calib, count = _with_calib(shape, calib, accel)

    height, width = shape
    flat = mask.ravel()
    missing = count - calib[0] * calib[1]
    steps = np.arange(points_per_spoke)
    theta0 = rng.uniform(0.0, 2.0 * math.pi)
    spokes_per_batch = 64
    first_spoke = 0
    # Spokes reach every pixel eventually, but the last few pixels near full sampling take very many
    # spokes; past this budget the nearest-to-centre unsampled pixels fill what is left.
    max_spokes = 32 * (height + width)
    while missing > 0 and first_spoke < max_spokes:
        spoke = first_spoke + np.arange(spokes_per_batch)
        theta = theta0 + _GOLDEN_ANGLE * spoke[:, None]
        radius = math.sqrt(2.0) * ((steps[None, :] + rng.random((spokes_per_batch, 1))) / points_per_spoke) ** power
        row = np.rint(height // 2 + radius * np.sin(theta) * height / 2).astype(np.int64)
        col = np.rint(width // 2 + radius * np.cos(theta) * width / 2).astype(np.int64)
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        index = (row * width + col)[inside]  # spoke by spoke, centre outwards
        index = index[~flat[index]]
        _, first = np.unique(index, return_index=True)
        new = index[np.sort(first)][:missing]
        flat[new] = True
        missing -= new.size
        first_spoke += spokes_per_batch
    if missing > 0:
        free = np.flatnonzero(~flat)
        flat[free[np.argsort(_normalised_radius(shape).ravel()[free], kind="stable")[:missing]]] = True
    return _to_tensor(mask)


def _poisson_preference(drawn_count: int, count: int) -> float:
    """Sort key for draws: the relative correction needed, where adding samples (which breaks the
    minimum distance) costs three times as much as thinning them (which keeps it)."""
    miss = drawn_count / count - 1.0
    return miss if miss >= 0 else -3.0 * miss


def poisson_disc(shape, acceleration: float, seed, *, calib=None) -> torch.Tensor:
    """Variable-density Poisson-disc mask drawn by sigpy's sampler (Bridson's algorithm).

    Each sample keeps every other at least a distance ``1 + s r`` away (times ``W / max(H, W)``
    along W and ``H / max(H, W)`` along H, at least one pixel), so the density falls off about as
    ``1 / (1 + s r)^2`` with the elliptical k-space radius ``r``; corners (``r > 1``) are not
    sampled. This is the pattern of ``sigpy.mri.poisson``, which bisects on the slope ``s`` until
    the acceleration is within a tolerance. We run that bisection ourselves, on sigpy's numba
    sampler ``sigpy.mri.samp._poisson``, for two reasons: ``sigpy.mri.poisson`` can loop forever
    when its tolerance cannot be met (its bisection stalls once the two ends are adjacent floats),
    and a search that interpolates and stops as soon as the count is within -3 % to +10 % of
    ``round(H*W/acceleration)`` needs fewer draws. The count is then made exact: surplus samples
    outside ``calib`` are dropped at random (random thinning keeps both the minimum distance and
    the shape of the density); a shortfall is filled with random unsampled pixels with ``r <= 1``.

    Drawing is slow next to the other masks (a few ms): 2 to 5 draws, about 0.01 to 0.1 s at
    64 x 64 and 0.1 to 1.5 s at 256 x 256 on one CPU core. The sampler seeds numba's own RNG, not
    the global one of NumPy or torch. Accelerations below 2 are refused: the densest Poisson disc
    (spacing one pixel, corners cut) keeps only about half of k-space.

    Args:
        shape: (H, W).
        acceleration: target H*W / (number of samples), >= 2.
        seed: int >= 0 for a reproducible mask, or None for a fresh one.
        calib: (h, w) fully sampled centre; default 1/16 of each side.

    Returns:
        (H, W) float32 0/1 mask, DC at (H//2, W//2).
    """
    shape = _check_shape(shape)
    accel = _check_acceleration(acceleration, minimum=2.0)
    rng = _rng(seed)
    calib_mask, calib, count = _with_calib(shape, calib, accel)

    # Imported here: sigpy brings numba, whose import costs about 2 s that the other masks need not pay.
    from sigpy.mri.samp import _poisson as _poisson_sampler

    radius = _normalised_radius(shape)
    support = radius <= 1.0
    sampler_seed = int(rng.integers(2**31))

    def draw(log_slope: float) -> np.ndarray:
        spacing = 1.0 + math.expm1(log_slope) * radius
        radius_y = np.clip(spacing * shape[0] / max(shape), 1.0, None)
        radius_x = np.clip(spacing * shape[1] / max(shape), 1.0, None)
        drawn = _poisson_sampler(shape[1], shape[0], _POISSON_ATTEMPTS, radius_x, radius_y, calib, sampler_seed)
        return ((drawn != 0) & support) | calib_mask

    # Search u = log(1 + slope) in [0, log(1 + max(H, W))]: u = 0 is the densest pattern, the top a
    # sparse one, and log(count) falls about linearly in u. So the next u comes from the line
    # through two draws (the ends of the bracket once both are drawn, else the last two), kept
    # inside the bracket and off its ends so that it keeps shrinking. Stop within -3 % / +10 % of
    # the count; otherwise keep the draw that needs the least correction.
    low, high = 0.0, math.log1p(max(shape))
    counts = {}  # u -> samples drawn
    best = None
    for _ in range(_POISSON_MAX_DRAWS):
        pair = (low, high) if low in counts and high in counts else list(counts)[-2:]
        if len(pair) < 2:
            u = (low + high) / 2
        else:
            (u0, c0), (u1, c1) = [(v, counts[v]) for v in pair]
            u = u0 + (u1 - u0) * math.log(c0 / count) / math.log(c0 / c1) if c0 != c1 else (low + high) / 2
            u = min(max(u, low + 0.1 * (high - low)), high - 0.1 * (high - low))
        mask = draw(u)
        counts[u] = int(mask.sum())
        if best is None or _poisson_preference(counts[u], count) < _poisson_preference(best[0], count):
            best = (counts[u], mask)
        if 0.97 * count <= counts[u] <= 1.1 * count:
            break
        if counts[u] > count:
            low = u
        else:
            high = u

    mask = best[1]
    flat, fixed = mask.ravel(), calib_mask.ravel()
    surplus = best[0] - count
    if surplus > 0:
        flat[rng.choice(np.flatnonzero(flat & ~fixed), surplus, replace=False)] = False
    elif surplus < 0:
        free = np.flatnonzero(~flat & support.ravel())
        flat[rng.choice(free, -surplus, replace=False)] = True
    return _to_tensor(mask)


def random_pixels(shape, fraction: float, seed) -> torch.Tensor:
    """Uniformly random pixel mask keeping ``round(fraction * H * W)`` pixels (SGP inpainting).

    Lee and Chun (SGP, Sec. 6.2) inpaint images from 30, 50 and 70 % of their pixels, a different
    sampling matrix for each image, and recover images from the same fractions of Fourier samples
    (Sec. 6.3). For inpainting the mask lives in the image domain, so it has no centre and need not
    contain DC; used in k-space it is uniform random Fourier sampling. Acceleration is
    ``1 / fraction``.

    Args:
        shape: (H, W).
        fraction: sampled fraction in (0, 1].
        seed: int >= 0 for a reproducible mask, or None for a fresh one.

    Returns:
        (H, W) float32 0/1 mask.
    """
    shape = _check_shape(shape)
    if not isinstance(fraction, numbers.Real) or isinstance(fraction, bool):
        raise TypeError(f"fraction must be a real number, got {type(fraction).__name__}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    rng = _rng(seed)
    size = shape[0] * shape[1]
    mask = np.zeros(size, dtype=bool)
    mask[rng.choice(size, max(1, round(fraction * size)), replace=False)] = True
    return _to_tensor(mask.reshape(shape))


# ---------------------------------------------------------------------------- 1-D column masks


def _centre_columns(width: int, accel: float, center_fraction) -> tuple[np.ndarray, np.ndarray, int]:
    """Column mask (W,) with its fully sampled centre set, the indices of the columns outside the
    centre, and how many of those to sample so that ``accel`` is met."""
    if center_fraction is None:
        center_fraction = 0.32 / accel
    elif not isinstance(center_fraction, numbers.Real) or isinstance(center_fraction, bool):
        raise TypeError(f"center_fraction must be a real number or None, got {type(center_fraction).__name__}")
    elif not 0.0 < center_fraction <= 1.0:
        raise ValueError(f"center_fraction must lie in (0, 1], got {center_fraction!r}")
    count = _target_count(width, accel)
    num_low = max(1, round(width * center_fraction))
    _check_fits(num_low, count, "center_fraction", center_fraction, accel)
    columns = np.zeros(width, dtype=bool)
    columns[_centred_slice(width, num_low)] = True
    return columns, np.flatnonzero(~columns), count - num_low


def _expand_columns(columns: np.ndarray, height: int) -> torch.Tensor:
    return _to_tensor(np.broadcast_to(columns, (height, columns.size)))


def column_random(shape, acceleration: float, seed, *, center_fraction=None) -> torch.Tensor:
    """fastMRI-style random column mask: a fully sampled centre plus random phase-encode columns.

    The ``round(W * center_fraction)`` central columns are sampled; the other columns are drawn
    uniformly without replacement until ``round(W / acceleration)`` columns are sampled in all.
    fastMRI's ``RandomMaskFunc`` (Zbontar et al. 2018) instead keeps each outer column with
    probability ``(W/R - num_low) / (W - num_low)``, which hits the acceleration only on average;
    drawing the exact count keeps every mask at the requested acceleration.

    Args:
        shape: (H, W); columns run along W (phase encodes), the mask is constant along H.
        acceleration: target W / (number of columns), >= 1.
        seed: int >= 0 for a reproducible mask, or None for a fresh one.
        center_fraction: fraction of columns in the fully sampled centre. Default ``0.32 /
            acceleration``: fastMRI's pairs 0.08 at 4x and 0.04 at 8x, i.e. 32 % of the sampled
            columns are in the centre.

    Returns:
        (H, W) float32 0/1 mask, centre block around column W//2.
    """
    height, width = _check_shape(shape)
    accel = _check_acceleration(acceleration)
    rng = _rng(seed)
    columns, outer, needed = _centre_columns(width, accel, center_fraction)
    columns[rng.choice(outer, needed, replace=False)] = True
    return _expand_columns(columns, height)


def column_equispaced(shape, acceleration: float, seed, *, center_fraction=None) -> torch.Tensor:
    """fastMRI-style equispaced column mask: a fully sampled centre plus evenly spaced columns.

    The central columns are sampled as in :func:`column_random`. The ``m`` columns still needed
    are evenly spaced over the ``L`` columns outside the centre (numbered left to right, skipping
    the centre block): positions ``floor(offset + j * L / m)`` with a random ``offset`` in
    ``[0, L / m)``. fastMRI's ``EquispacedMaskFunc`` lays its lattice over all columns with an
    adjusted spacing so that some lattice points fall into the centre; skipping the centre instead
    makes the column count, and the acceleration, exact.

    Args:
        shape: (H, W); columns run along W (phase encodes), the mask is constant along H.
        acceleration: target W / (number of columns), >= 1.
        seed: int >= 0 for a reproducible offset, or None for a fresh one.
        center_fraction: as in :func:`column_random`; default ``0.32 / acceleration``.

    Returns:
        (H, W) float32 0/1 mask, centre block around column W//2.
    """
    height, width = _check_shape(shape)
    accel = _check_acceleration(acceleration)
    rng = _rng(seed)
    columns, outer, needed = _centre_columns(width, accel, center_fraction)
    if needed > 0:
        spacing = outer.size / needed
        positions = np.floor(rng.uniform(0.0, spacing) + spacing * np.arange(needed)).astype(np.int64)
        # offset < spacing keeps every position below L; the clamp only guards float round-off.
        columns[outer[np.minimum(positions, outer.size - 1)]] = True
    return _expand_columns(columns, height)


# ---------------------------------------------------------------------------- deterministic masks


def low_resolution(shape, acceleration: float | None = None, *, block=None) -> torch.Tensor:
    """Fully sampled centred rectangle of k-space: a low-resolution scan (MoDL's super-resolution test).

    MoDL (Aggarwal et al. 2019, Sec. IV-E and Fig. 4k) keeps the central 100 x 100 region of its
    256 x 232 k-space and reconstructs the high-resolution image with the network trained at 10x.
    Give either ``acceleration``, and the block keeps the image's aspect ratio with its size
    rounded to the count closest to ``H*W/acceleration``, or ``block=(h, w)`` explicitly (MoDL:
    ``block=(100, 100)``). Deterministic: there is no seed.

    Returns:
        (H, W) float32 0/1 mask; the block covers the frequencies of an (h, w) centred FFT.
    """
    shape = _check_shape(shape)
    if (acceleration is None) == (block is None):
        raise ValueError(
            f"give exactly one of acceleration or block, got acceleration={acceleration!r}, block={block!r}"
        )
    if block is None:
        accel = _check_acceleration(acceleration)
        target = shape[0] * shape[1] / accel
        sides = [(shape[0] / math.sqrt(accel)), (shape[1] / math.sqrt(accel))]
        candidates = [
            (h, w)
            for h in {max(1, math.floor(sides[0])), min(shape[0], math.ceil(sides[0]))}
            for w in {max(1, math.floor(sides[1])), min(shape[1], math.ceil(sides[1]))}
        ]
        # Closest count first; between equal counts, the aspect ratio closest to the image's.
        block = min(candidates, key=lambda hw: (abs(hw[0] * hw[1] - target), abs(hw[0] / hw[1] - shape[0] / shape[1])))
    h, w = _check_block(block, shape, "block")
    mask = np.zeros(shape, dtype=bool)
    mask[_centred_slice(shape[0], h), _centred_slice(shape[1], w)] = True
    return _to_tensor(mask)


# ---------------------------------------------------------------------------- reporting and registry


def acceleration(mask: torch.Tensor):
    """Real acceleration of a mask: number of locations / number sampled (nonzero).

    Args:
        mask: (H, W), or batched (..., H, W) with one mask per leading index.

    Returns:
        A float for an (H, W) mask, else a float64 tensor of shape ``mask.shape[:-2]`` (on the mask's
        device). A mask with no samples has acceleration ``inf``.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() < 2:
        raise ValueError(f"mask must have shape (..., H, W), got shape {tuple(mask.shape)}")
    sampled = (mask != 0).sum(dim=(-2, -1)).to(torch.float64)
    ratio = (mask.shape[-2] * mask.shape[-1]) / sampled
    return ratio.item() if mask.dim() == 2 else ratio


MASKS = {
    "variable_density_2d": variable_density_2d,
    "radial_view_ordering": radial_view_ordering,
    "poisson_disc": poisson_disc,
    "column_random": column_random,
    "column_equispaced": column_equispaced,
    "random_pixels": random_pixels,
    "low_resolution": low_resolution,
}


def make_mask(name: str, shape, acceleration: float, seed, **options) -> torch.Tensor:
    """Any mask of :data:`MASKS` by name, with one signature (for the data pipeline and widgets).

    ``random_pixels`` gets ``fraction = 1 / acceleration``; ``low_resolution`` is deterministic and
    ignores ``seed``. ``options`` go to the mask function (e.g. ``calib``, ``center_fraction``).
    """
    if name not in MASKS:
        raise ValueError(f"name must be one of {sorted(MASKS)}, got {name!r}")
    if name == "low_resolution":
        return low_resolution(shape, acceleration, **options)
    if name == "random_pixels":
        accel = _check_acceleration(acceleration)
        return random_pixels(shape, 1.0 / accel, seed, **options)
    return MASKS[name](shape, acceleration, seed, **options)
