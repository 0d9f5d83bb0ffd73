"""ESPIRiT coil maps from the fully sampled centre of undersampled k-space."""

import pytest
import torch

from mrtutor import espirit, masks
from mrtutor.fft import fft2c


def phantom(h=48, w=48, coils=4):
    """An ellipse with a smooth phase, seen by coils with smooth Gaussian profiles (unit sum of squares)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    image = ((x / 0.7) ** 2 + (y / 0.8) ** 2 < 1).float() * (1 + 0.3 * x) * torch.exp(1j * 0.5 * y)
    centres = [(0.9 * torch.cos(torch.tensor(a)), 0.9 * torch.sin(torch.tensor(a))) for a in (0.0, 1.6, 3.2, 4.7)[:coils]]
    profiles = torch.stack([torch.exp(-((x - cx) ** 2 + (y - cy) ** 2)) * torch.exp(1j * (c + 1) * 0.4 * x)
                            for c, (cx, cy) in enumerate(centres)])
    maps = profiles / profiles.abs().pow(2).sum(0).sqrt()
    return image.to(torch.complex64), maps.to(torch.complex64)


def test_centre_width_is_the_fully_sampled_centred_square():
    column = masks.column_random((40, 64), 4, seed=0)  # round(64 * 0.08) = 5 central columns
    assert espirit.centre_width(column) == 5 == espirit.centre_width(column[:1])
    square = torch.zeros(32, 32)
    square[16 - 3:16 + 3, 16 - 3:16 + 3] = 1
    assert espirit.centre_width(square) == 6
    assert espirit.centre_width(torch.ones(8, 30)) == 8  # no wider than the image is high
    square[16, 16] = 0
    assert espirit.centre_width(square) == 0


def test_maps_from_undersampled_data_span_the_true_maps_inside_the_object():
    image, true_maps = phantom()
    mask = masks.column_random((48, 48), 2.5, seed=1, center_fraction=0.25)  # a 12-column centre
    kspace = fft2c(true_maps * image) * mask
    estimate = espirit.maps(kspace, mask)
    assert estimate.shape == true_maps.shape and estimate.dtype == torch.complex64
    inside = image.abs() > 0
    # Maps are defined up to one phase per pixel: compare the coil vectors' alignment.
    alignment = (estimate.conj() * true_maps).sum(0).abs()[inside]
    assert (alignment > 0.95).float().mean() > 0.95, alignment.min()
    norms = estimate.abs().pow(2).sum(0)
    assert torch.allclose(norms[norms > 0], torch.ones(()), atol=1e-4)


def test_bad_calibration_regions_are_named():
    image, true_maps = phantom()
    kspace = fft2c(true_maps * image)
    narrow = masks.column_random((48, 48), 8, seed=0, center_fraction=0.06)  # a 3-column centre
    with pytest.raises(ValueError, match="at least 2 wider than its kernel"):
        espirit.maps(kspace * narrow, narrow)
    with pytest.raises(ValueError, match="larger than the fully sampled centre"):
        espirit.maps(kspace * narrow, narrow, calib_width=12)
    with pytest.raises(ValueError, match="complex tensor"):
        espirit.maps(kspace.abs(), narrow)
