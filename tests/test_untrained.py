"""Un-trained networks (mrtutor.untrained): the decoders' size schedule and parameter counts against the
authors' configurations, the scale factor, data consistency, and short fits on a small phantom."""

import math

import pytest
import torch
from torch import nn

from mrtutor.fft import fft2c, ifft2c, rss
from mrtutor.masks import column_random
from mrtutor.metrics import psnr
from mrtutor.untrained import (DIP, ConvDecoder, DeepDecoder, average_fits, data_consistency, fit, hidden_sizes,
                               scale_factor)

N = 32
SMALL = dict(layers=4, channels=32, in_size=(4, 4))  # a ConvDecoder that fits a 32 x 32 phantom in a second


def phantom(n=N):
    """A smooth complex image (n, n), unit-sum-of-squares maps of two coils (2, n, n) and a 3x column mask."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    ellipse = ((x / 0.7) ** 2 + (y / 0.85) ** 2 < 1).float()
    disc = ((x + 0.3) ** 2 + (y - 0.3) ** 2 < 0.04).float()
    magnitude = 0.6 * ellipse + 0.4 * torch.exp(-((x - 0.2) ** 2 + (y + 0.1) ** 2) / 0.05) + 0.3 * disc
    image = magnitude * torch.exp(1j * math.pi / 4 * (x + y))
    maps = torch.stack([torch.exp(-((x - c) ** 2)) * torch.exp(1j * math.pi * c * y / 2) for c in (-1, 1)])
    maps = (maps / rss(maps, dim=0)).to(torch.complex64)
    return image.to(torch.complex64), maps, column_random((n, n), 3, seed=0)


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_hidden_sizes_grow_geometrically_to_the_image_size():
    # fastMRI knee k-space (640 x 368) from the authors' 8 x 4 input in 7 layers: factors 80^(1/6) and 92^(1/6).
    assert hidden_sizes((8, 4), (640, 368), 7) == [(17, 9), (35, 19), (72, 39), (149, 82), (309, 174), (640, 368)]
    assert hidden_sizes((4, 4), (128, 128), 6) == [(8, 8), (16, 16), (32, 32), (64, 64), (128, 128)]
    assert hidden_sizes((8, 4), (20, 10), 2) == [(20, 10)]
    assert hidden_sizes((8, 8), (8, 8), 4) == [(8, 8)] * 3


@pytest.mark.parametrize("layers, channels, count", [(7, 160, 1_619_840), (8, 256, 4_730_368)])
def test_convdecoder_parameter_count_is_the_authors(layers, channels, count):
    # 15 coils -> 30 output channels; (layers - 1) upsampling blocks and the last block each hold a
    # 3 x 3 convolution without bias (9 c^2) and a batch norm's scale and shift (2 c), and the 1 x 1
    # output convolution 30 c.
    assert layers * (9 * channels**2 + 2 * channels) + 30 * channels == count
    assert parameters(ConvDecoder((16, 8), 30, layers, channels)) == count


def test_convdecoder_block_order_and_fixed_input():
    model = ConvDecoder((16, 8), 4, layers=3, channels=8)
    kinds = [type(m).__name__ for m in model.net]
    block = ["Upsample", "Conv2d", "ReLU", "BatchNorm2d"]
    assert kinds == block * 2 + block[1:] + ["Conv2d"]
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert [m.mode for m in model.net if isinstance(m, nn.Upsample)] == ["nearest"] * 2
    assert "z" in dict(model.named_buffers()) and model.z.shape == (1, 8, 8, 4)
    assert 0 <= model.z.min() and model.z.max() < 1


@pytest.mark.parametrize("cls, sizes", [(ConvDecoder, dict(layers=3, channels=8)),
                                        (DeepDecoder, dict(layers=3, channels=8)),
                                        (DIP, dict(layers=4, channels=8, skip_channels=2, in_channels=4))])
def test_networks_map_their_input_to_the_image_channels(cls, sizes):
    model = cls((20, 12), 6, **sizes)
    out = model()
    assert out.shape == (6, 20, 12)
    assert torch.equal(out, model())  # a fixed input: the same image twice


def test_deep_decoder_uses_one_by_one_convolutions():
    model = DeepDecoder((16, 8), 4, layers=3, channels=8)
    assert {m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)} == {(1, 1)}
    assert parameters(model) == 3 * (8**2 + 2 * 8) + 4 * 8


def test_scale_factor_matches_the_rss_images():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 16, 12, dtype=torch.complex64, generator=g)
    kspace = torch.randn(4, 16, 12, dtype=torch.complex64, generator=g) * (torch.rand(16, 12, generator=g) < 0.3)
    s = scale_factor(images, kspace)
    by_definition = torch.linalg.vector_norm(rss(images, 0)) / torch.linalg.vector_norm(rss(ifft2c(kspace), 0))
    assert s == pytest.approx(by_definition.item(), rel=1e-5)
    assert torch.linalg.vector_norm(rss(ifft2c(s * kspace), 0)).item() == pytest.approx(
        torch.linalg.vector_norm(rss(images, 0)).item(), rel=1e-5)
    with pytest.raises(ValueError, match="all zero"):
        scale_factor(images, torch.zeros_like(kspace))


def test_fit_is_equivariant_to_the_kspace_scale():
    # The scale factor normalises the data, so a k-space 10 times larger gives an image 10 times larger.
    image, maps, mask = phantom(16)
    kspace = fft2c(maps * image)
    small, info = fit(kspace, mask, iterations=5, return_info=True, **SMALL)
    large, info_large = fit(10 * kspace, mask, iterations=5, return_info=True, **SMALL)
    assert info_large.scale == pytest.approx(info.scale / 10, rel=1e-5)
    torch.testing.assert_close(large, 10 * small, rtol=1e-3, atol=1e-5)


def test_data_consistency_restores_the_measured_kspace():
    image, maps, mask = phantom(16)
    kspace = fft2c(maps * image)
    g = torch.Generator().manual_seed(1)
    coil_images = torch.randn(2, 16, 16, dtype=torch.complex64, generator=g)
    for estimate, with_maps in ((coil_images, None), (coil_images[0], maps)):
        out = data_consistency(estimate, kspace, mask, with_maps)
        model = fft2c(estimate if with_maps is None else with_maps * estimate)
        sampled = mask.bool().expand(2, 16, 16)
        assert torch.equal(out[sampled], kspace[sampled])
        assert torch.equal(out[~sampled], model[~sampled])


def test_single_coil_fit_keeps_the_measurements():
    # One coil with a unit map: the reconstruction's k-space equals the data where it was measured.
    image, _, mask = phantom(16)
    kspace = fft2c(image)[None]
    out, info = fit(kspace, mask, torch.ones_like(kspace), iterations=5, return_info=True, **SMALL)
    assert out.shape == (16, 16) and out.is_complex()
    sampled = mask.bool()
    torch.testing.assert_close(fft2c(out)[sampled], kspace[0][sampled], rtol=1e-4, atol=1e-5)
    assert info.loss.shape == (5,) and 0 <= info.best_iteration < 5 and info.time_s > 0
    magnitude = fit(kspace, mask, iterations=3, **SMALL)  # eq. 2: two output channels, magnitude out
    assert magnitude.shape == (16, 16) and not magnitude.is_complex() and (magnitude >= 0).all()


def test_fit_beats_zero_filling():
    image, maps, mask = phantom()
    kspace = fft2c(maps * image)
    reference = image.abs()
    zero_filled = rss(ifft2c(kspace * mask), dim=0)
    sense_zero_filled = (maps.conj() * ifft2c(kspace * mask)).sum(0)
    # 150 steps at a larger rate than the authors' 0.008: 21.0 - 22.2 dB over seeds 0 - 2 without
    # maps, 22.8 - 23.4 dB with them (zero filling: 18.6 and 19.3 dB).
    coil_fit = fit(kspace, mask, iterations=150, lr=0.02, **SMALL)
    sense_fit = fit(kspace, mask, maps, iterations=150, lr=0.02, **SMALL)
    assert psnr(coil_fit, reference) > psnr(zero_filled, reference) + 1
    assert psnr(sense_fit, reference) > psnr(sense_zero_filled, reference) + 3


def test_fits_are_seeded_and_average_fits_averages_them():
    image, maps, mask = phantom(16)
    kspace = fft2c(maps * image)
    state = torch.random.get_rng_state()
    first, second = (fit(kspace, mask, iterations=3, seed=seed, **SMALL) for seed in (0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone
    assert torch.equal(first, fit(kspace, mask, iterations=3, seed=0, **SMALL))
    assert not torch.equal(first, second)
    mean, infos = average_fits(kspace, mask, runs=2, iterations=3, return_info=True, **SMALL)
    torch.testing.assert_close(mean, (first + second) / 2)
    assert len(infos) == 2
    dip = fit(kspace, mask, net="dip", iterations=2, crop=(8, 6), layers=2, channels=4, skip_channels=2, in_channels=4)
    assert dip.shape == (8, 6)


def test_monitor_sees_the_image_the_fit_would_return_at_each_watched_step():
    image, maps, mask = phantom(16)
    kspace = fft2c(maps * image)
    single = kspace[:1]  # one coil with a unit map: the image's own k-space is measured
    seen = {}
    out, info = fit(single, mask, torch.ones_like(single), iterations=7, return_info=True, monitor=seen.__setitem__,
                    monitor_every=3, **SMALL)
    assert sorted(seen) == [0, 3, 6]  # every third step and the last
    sampled = mask.bool()
    for watched in seen.values():  # data consistency is done before the monitor sees an image
        torch.testing.assert_close(fft2c(watched)[sampled], single[0][sampled], rtol=1e-4, atol=1e-5)
    assert not torch.equal(seen[0], seen[6])
    if info.best_iteration == 6:
        torch.testing.assert_close(seen[6], out)
    # a monitor changes nothing of the fit
    torch.testing.assert_close(fit(single, mask, torch.ones_like(single), iterations=7, **SMALL), out)
    mean, each = average_fits(kspace, mask, runs=2, iterations=3, return_runs=True, **SMALL)
    assert each.shape == (2, 16, 16)
    torch.testing.assert_close(mean, each.mean(dim=0))
    for bad, message in ((dict(monitor_every=0), "monitor_every"), (dict(monitor="psnr"), "callable")):
        with pytest.raises(ValueError, match=message):
            fit(kspace, mask, iterations=1, **SMALL, **bad)


def _bad_inputs():
    image, maps, mask = phantom(16)
    kspace = fft2c(maps * image)
    return [
        (dict(kspace=kspace.abs()), "complex"),
        (dict(kspace=kspace[0]), r"\(C, H, W\)"),
        (dict(mask=torch.ones(8, 8)), "does not broadcast"),
        (dict(mask=0.5 * mask), "0s and 1s"),
        (dict(mask=torch.zeros(16, 16)), "all zero"),
        (dict(maps=maps[:1]), "must match"),
        (dict(net="unet"), "net must be one of"),
        (dict(iterations=0), "iterations"),
        (dict(lr=-1.0), "lr"),
        (dict(seed=-1), "seed"),
        (dict(crop=(20, 8)), "larger than the image"),
        (dict(width=4), "unknown"),
        (dict(in_size=(32, 4)), "must not exceed"),
        (dict(layers=1), "layers"),
        (dict(net="dip", layers=3), "even"),
        (dict(net="dip", layers=10), "fewer layers"),
        (dict(kspace=torch.zeros_like(kspace)), "all zero"),
    ], kspace, mask


@pytest.mark.parametrize("case", range(17))
def test_bad_inputs_raise_clear_errors(case):
    cases, kspace, mask = _bad_inputs()
    assert len(cases) == 17
    change, message = cases[case]
    arguments = dict(kspace=kspace, mask=mask, iterations=1, **SMALL)
    if change.get("net") == "dip":
        arguments = {k: v for k, v in arguments.items() if k != "in_size"}
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        fit(**arguments)
