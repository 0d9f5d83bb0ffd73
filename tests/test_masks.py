"""Tests for mrtutor.masks: shape, values, exact acceleration, centring, seeds, density, bad input."""

from __future__ import annotations

import functools
import math
import random
import time

import numpy as np
import pytest
import torch

from mrtutor import masks

SHAPES = [(128, 128), (96, 80), (57, 63)]
ACCELERATIONS = [2, 4, 6, 8, 10]
RANDOM_2D = ["variable_density_2d", "radial_view_ordering", "poisson_disc"]
COLUMNS = ["column_random", "column_equispaced"]
RANDOM = RANDOM_2D + COLUMNS + ["random_pixels"]


@functools.lru_cache(maxsize=None)
def _mask(name: str, shape: tuple[int, int], accel: float, seed: int = 0) -> torch.Tensor:
    """Masks are reused across tests (Poisson disc takes up to a few tenths of a second)."""
    return masks.make_mask(name, shape, accel, seed)


def _centre(n: int, c: int) -> slice:
    """The c central indices of an axis of length n, written out independently of the module."""
    return slice(n // 2 - c // 2, n // 2 - c // 2 + c)


def _radius(shape: tuple[int, int]) -> torch.Tensor:
    ky = (torch.arange(shape[0]) - shape[0] // 2) / (shape[0] / 2)
    kx = (torch.arange(shape[1]) - shape[1] // 2) / (shape[1] / 2)
    return torch.hypot(ky[:, None], kx[None, :])


# ---------------------------------------------------------------------------- every mask


@pytest.mark.parametrize("accel", ACCELERATIONS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(masks.MASKS))
def test_mask_is_binary_float32_of_the_right_shape(name, shape, accel):
    mask = _mask(name, shape, accel)
    assert mask.shape == shape
    assert mask.dtype == torch.float32
    assert mask.device.type == "cpu"
    assert torch.all((mask == 0) | (mask == 1))


@pytest.mark.parametrize("accel", ACCELERATIONS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", RANDOM_2D + ["random_pixels"])
def test_pixel_masks_sample_exactly_the_requested_count(name, shape, accel):
    mask = _mask(name, shape, accel)
    pixels = shape[0] * shape[1]
    assert int(mask.sum()) == round(pixels / accel)
    assert masks.acceleration(mask) == pytest.approx(accel, rel=0.05)


@pytest.mark.parametrize("accel", ACCELERATIONS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", COLUMNS)
def test_column_masks_sample_exactly_the_requested_columns(name, shape, accel):
    mask = _mask(name, shape, accel)
    assert torch.equal(mask, mask[:1].expand(shape)), "a column mask is constant along H"
    columns = round(shape[1] / accel)
    assert int(mask[0].sum()) == columns
    assert masks.acceleration(mask) == pytest.approx(shape[1] / columns)
    if shape[1] / accel >= 10:  # whole columns can always get within 5 % from 10 columns on
        assert masks.acceleration(mask) == pytest.approx(accel, rel=0.05)


@pytest.mark.parametrize("accel", ACCELERATIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_low_resolution_is_a_centred_block_with_the_image_aspect(shape, accel):
    mask = masks.low_resolution(shape, accel)
    rows = mask.any(dim=1).nonzero().flatten()
    cols = mask.any(dim=0).nonzero().flatten()
    h, w = len(rows), len(cols)
    assert int(mask.sum()) == h * w, "the sampled set is one rectangle"
    assert rows.tolist() == list(range(shape[0]))[_centre(shape[0], h)]
    assert cols.tolist() == list(range(shape[1]))[_centre(shape[1], w)]
    assert masks.acceleration(mask) == pytest.approx(accel, rel=0.05)
    assert (h / w) / (shape[0] / shape[1]) == pytest.approx(1.0, rel=0.1)


def test_low_resolution_reproduces_modl_super_resolution_block():
    mask = masks.low_resolution((256, 232), block=(100, 100))
    assert int(mask.sum()) == 100 * 100
    assert torch.all(mask[78:178, 66:166] == 1)
    assert masks.acceleration(mask) == pytest.approx(256 * 232 / 100**2)
    by_name = masks.make_mask("low_resolution", (256, 232), 10, seed=None)
    assert torch.equal(by_name, masks.low_resolution((256, 232), 10))


# ---------------------------------------------------------------------------- centre and DC


@pytest.mark.parametrize("accel", ACCELERATIONS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", RANDOM_2D)
def test_2d_masks_sample_dc_and_the_default_calibration_block(name, shape, accel):
    mask = _mask(name, shape, accel)
    assert mask[shape[0] // 2, shape[1] // 2] == 1
    h, w = max(1, shape[0] // 16), max(1, shape[1] // 16)
    assert torch.all(mask[_centre(shape[0], h), _centre(shape[1], w)] == 1)


@pytest.mark.parametrize("calib", [(5, 3), (8, 8), (1, 1), (9, 12)])
@pytest.mark.parametrize("shape", [(64, 64), (57, 63)])
@pytest.mark.parametrize("name", RANDOM_2D)
def test_2d_masks_sample_an_explicit_calibration_block_where_a_centred_fft_has_it(name, shape, calib):
    mask = masks.MASKS[name](shape, 4, 3, calib=calib)
    assert torch.all(mask[_centre(shape[0], calib[0]), _centre(shape[1], calib[1])] == 1)
    assert int(mask.sum()) == round(shape[0] * shape[1] / 4)


@pytest.mark.parametrize("accel", ACCELERATIONS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", COLUMNS)
def test_column_masks_have_a_full_centre_block_around_w_half(name, shape, accel):
    width = shape[1]
    line = _mask(name, shape, accel)[0]
    num_low = max(1, round(width * 0.32 / accel))
    assert line[width // 2] == 1
    assert torch.all(line[_centre(width, num_low)] == 1)
    # The block is centred: it reaches as far left of W//2 as right of it (one more when even).
    block = torch.arange(width)[_centre(width, num_low)]
    assert (width // 2 - block[0]) - (block[-1] - width // 2) == (1 if num_low % 2 == 0 else 0)


@pytest.mark.parametrize("name", COLUMNS)
def test_column_masks_honour_an_explicit_center_fraction(name):
    line = masks.MASKS[name]((32, 100), 4, 0, center_fraction=0.2)[0]
    assert torch.all(line[40:60] == 1)
    assert int(line.sum()) == 25


def test_equispaced_columns_are_evenly_spaced_outside_the_centre():
    width, accel = 200, 6
    for seed in range(5):
        line = masks.column_equispaced((4, width), accel, seed)[0]
        centre = torch.zeros(width, dtype=torch.bool)
        centre[_centre(width, round(width * 0.32 / accel))] = True
        # Number the outer columns left to right, skipping the centre, as the docstring says.
        outer_positions = torch.nonzero(line[~centre] == 1).flatten()
        gaps = outer_positions.diff()
        assert int(gaps.max() - gaps.min()) <= 1
        assert outer_positions.numel() == round(width / accel) - int(centre.sum())


def test_equispaced_offset_covers_a_whole_spacing():
    width, accel = 200, 6
    num_low = round(width * 0.32 / accel)
    spacing = (width - num_low) / (round(width / accel) - num_low)
    centre = torch.zeros(width, dtype=torch.bool)
    centre[_centre(width, num_low)] = True
    lines = [masks.column_equispaced((4, width), accel, seed)[0] for seed in range(100)]
    first = {int(torch.nonzero(line[~centre]).min()) for line in lines}
    assert min(first) == 0 and max(first) == math.ceil(spacing) - 1


# ---------------------------------------------------------------------------- seeds and RNG


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_mask_other_seed_other_mask(name):
    shape, accel = (57, 63), 4
    first = _mask(name, shape, accel, 7)
    assert torch.equal(first, masks.make_mask(name, shape, accel, 7))
    others = [_mask(name, shape, accel, seed) for seed in (8, 9, 10)]
    assert all(not torch.equal(first, other) for other in others)


@pytest.mark.parametrize("name", RANDOM_2D + ["random_pixels"])
def test_other_seeds_give_unrelated_masks_not_small_variations(name):
    shape, accel = (96, 80), 4
    first, second = _mask(name, shape, accel, 7), _mask(name, shape, accel, 8)
    outer = _radius(shape) > 0.3  # outside the fully sampled centre
    shared = (first * second)[outer].sum() / first[outer].sum()
    assert shared < 0.7


@pytest.mark.parametrize("name", RANDOM)
def test_seed_none_draws_a_fresh_valid_mask_each_call(name):
    # An equispaced lattice has only about `acceleration` offsets, so two draws agree one time in
    # four; twenty draws all alike would happen about once in 4**19.
    drawn = [masks.make_mask(name, (96, 80), 4, None) for _ in range(20)]
    assert all(mask.shape == (96, 80) for mask in drawn)
    assert all(masks.acceleration(mask) == pytest.approx(4, rel=0.05) for mask in drawn)
    assert any(not torch.equal(drawn[0], mask) for mask in drawn[1:])


def test_masks_leave_the_global_random_states_alone():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    for name in masks.MASKS:
        masks.make_mask(name, (40, 36), 4, 11)
    after = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    assert before[0] == after[0]
    assert all(np.array_equal(a, b) for a, b in zip(before[1][1:3], after[1][1:3]))
    assert torch.equal(before[2], after[2])


# ---------------------------------------------------------------------------- density


@pytest.mark.parametrize("accel", [4, 10])
@pytest.mark.parametrize("name", RANDOM_2D)
def test_variable_density_is_denser_at_the_centre(name, accel):
    shape = (128, 128)
    mask = _mask(name, shape, accel)
    radius = _radius(shape)
    inner = mask[(radius > 0.1) & (radius < 0.3)].mean()  # beyond the 8 x 8 calibration block
    outer = mask[(radius > 0.7) & (radius < 1.0)].mean()
    assert inner > 2 * outer
    assert outer > 0, "the outer k-space is sampled too"


def test_random_pixels_are_uniform():
    shape = (128, 128)
    mask = masks.random_pixels(shape, 0.3, 5)
    radius = _radius(shape)
    inner = mask[radius < 0.5].mean()
    outer = mask[(radius > 0.7) & (radius < 1.0)].mean()
    assert inner == pytest.approx(0.3, abs=0.03)
    assert outer == pytest.approx(0.3, abs=0.03)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_random_pixels_keep_the_sgp_fractions(fraction):
    mask = masks.random_pixels((96, 80), fraction, 0)
    assert int(mask.sum()) == round(fraction * 96 * 80)
    assert masks.acceleration(mask) == pytest.approx(1 / fraction, rel=1e-3)


@pytest.mark.parametrize("name", ["variable_density_2d", "radial_view_ordering", "column_random", "column_equispaced"])
def test_acceleration_one_samples_everything_and_near_one_is_exact(name):
    assert torch.all(masks.make_mask(name, (40, 30), 1, 0) == 1)
    mask = masks.make_mask(name, (40, 30), 1.1, 0)
    units = 30 if name in COLUMNS else 40 * 30
    assert int(mask.sum()) == round(units / 1.1) * (40 if name in COLUMNS else 1)


def test_radial_view_ordering_at_paper_setting_5x():
    shape = (200, 100)  # Mardani et al.: 200 x 100 slices, 20 % of k-space
    mask = masks.radial_view_ordering(shape, 5, 0)
    assert int(mask.sum()) == 4000
    radius = _radius(shape)
    assert mask[radius < 0.2].mean() > 0.8
    assert mask[radius > 0.8].mean() < 0.15


# ---------------------------------------------------------------------------- acceleration()


def test_acceleration_of_single_and_batched_masks():
    single = masks.variable_density_2d((32, 32), 4, 0)
    assert isinstance(masks.acceleration(single), float)
    assert masks.acceleration(single) == 4.0

    batch = torch.stack([single, masks.column_random((32, 32), 8, 0), torch.zeros(32, 32)])
    per_mask = masks.acceleration(batch)
    assert per_mask.shape == (3,)
    assert per_mask[:2].tolist() == [4.0, 8.0]
    assert math.isinf(per_mask[2])
    assert masks.acceleration(batch[:, None]).shape == (3, 1)


def test_acceleration_rejects_bad_input():
    with pytest.raises(TypeError, match="mask"):
        masks.acceleration(np.ones((4, 4)))
    with pytest.raises(ValueError, match="mask"):
        masks.acceleration(torch.ones(4))


# ---------------------------------------------------------------------------- bad input


BAD_CALLS = [
    (lambda: masks.variable_density_2d((64,), 4, 0), ValueError, "shape"),
    (lambda: masks.variable_density_2d((64, 64, 1), 4, 0), ValueError, "shape"),
    (lambda: masks.variable_density_2d((64, 0), 4, 0), ValueError, "shape"),
    (lambda: masks.variable_density_2d((64.0, 64), 4, 0), ValueError, "shape"),
    (lambda: masks.variable_density_2d(64, 4, 0), ValueError, "shape"),
    (lambda: masks.variable_density_2d((64, 64), 0.5, 0), ValueError, "acceleration"),
    (lambda: masks.variable_density_2d((64, 64), float("nan"), 0), ValueError, "acceleration"),
    (lambda: masks.variable_density_2d((64, 64), float("inf"), 0), ValueError, "acceleration"),
    (lambda: masks.variable_density_2d((64, 64), "4", 0), TypeError, "acceleration"),
    (lambda: masks.variable_density_2d((64, 64), True, 0), TypeError, "acceleration"),
    (lambda: masks.variable_density_2d((64, 64), 4, -1), ValueError, "seed"),
    (lambda: masks.variable_density_2d((64, 64), 4, 1.5), ValueError, "seed"),
    (lambda: masks.variable_density_2d((64, 64), 4, 0, calib=(40, 40)), ValueError, "calib"),
    (lambda: masks.variable_density_2d((64, 64), 4, 0, calib=(0, 4)), ValueError, "calib"),
    (lambda: masks.variable_density_2d((64, 64), 4, 0, calib=(4, 65)), ValueError, "calib"),
    (lambda: masks.variable_density_2d((64, 64), 4, 0, calib=4), ValueError, "calib"),
    (lambda: masks.variable_density_2d((64, 64), 4, 0, power=-1), ValueError, "power"),
    (lambda: masks.radial_view_ordering((64, 64), 10, 0, calib=(21, 21)), ValueError, "calib"),
    (lambda: masks.radial_view_ordering((64, 64), 4, 0, power=0.5), ValueError, "power"),
    (lambda: masks.radial_view_ordering((64, 64), 4, 0, points_per_spoke=0), ValueError, "points_per_spoke"),
    (lambda: masks.poisson_disc((64, 64), 1.5, 0), ValueError, "acceleration"),
    (lambda: masks.poisson_disc((64, 64), 8, 0, calib=(30, 30)), ValueError, "calib"),
    (lambda: masks.column_random((64, 64), 4, 0, center_fraction=0.5), ValueError, "center_fraction"),
    (lambda: masks.column_random((64, 64), 4, 0, center_fraction=0.0), ValueError, "center_fraction"),
    (lambda: masks.column_equispaced((64, 64), 4, 0, center_fraction=1.5), ValueError, "center_fraction"),
    (lambda: masks.column_equispaced((64, 64), 4, 0, center_fraction="0.08"), TypeError, "center_fraction"),
    (lambda: masks.random_pixels((64, 64), 0.0, 0), ValueError, "fraction"),
    (lambda: masks.random_pixels((64, 64), 1.5, 0), ValueError, "fraction"),
    (lambda: masks.random_pixels((64, 64), None, 0), TypeError, "fraction"),
    (lambda: masks.low_resolution((64, 64)), ValueError, "acceleration"),
    (lambda: masks.low_resolution((64, 64), 4, block=(8, 8)), ValueError, "block"),
    (lambda: masks.low_resolution((64, 64), block=(65, 8)), ValueError, "block"),
    (lambda: masks.make_mask("spiral", (64, 64), 4, 0), ValueError, "name"),
]


@pytest.mark.parametrize("call, error, argument", BAD_CALLS)
def test_bad_input_raises_naming_the_argument(call, error, argument):
    with pytest.raises(error, match=argument):
        call()


# ---------------------------------------------------------------------------- registry and speed


@pytest.mark.parametrize("name", RANDOM_2D + COLUMNS)
def test_make_mask_matches_the_named_function(name):
    assert torch.equal(masks.make_mask(name, (48, 40), 4, 2), masks.MASKS[name]((48, 40), 4, 2))


def test_make_mask_maps_acceleration_to_a_pixel_fraction():
    assert torch.equal(masks.make_mask("random_pixels", (48, 40), 2, 2), masks.random_pixels((48, 40), 0.5, 2))


@pytest.mark.parametrize("name", [n for n in masks.MASKS if n != "poisson_disc"])
def test_masks_are_fast_at_256(name):
    # A loose guard against accidental per-pixel Python loops; typical times are 1-15 ms.
    masks.make_mask(name, (256, 256), 2, 0)
    start = time.perf_counter()
    for accel in (2, 4, 10):
        masks.make_mask(name, (256, 256), accel, 1)
    assert (time.perf_counter() - start) / 3 < 0.25
