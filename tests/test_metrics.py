import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mrtutor.metrics import MS_SSIM_WEIGHTS, ms_ssim, nmse, nmse_db, normalise, psnr, snr, ssim, ssim_map, vif

SHAPES = [(7, 7), (13, 20), (33, 31), (64, 64)]


def image_pair(shape, kind, seed=0):
    """A reference and a degraded copy, float64 numpy, reference max about 1."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        ref = rng.random(shape)
    else:  # smooth: a few low-frequency cosines, where SSIM is driven by local structure
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
        ref = 0.5 + 0.3 * np.cos(2 * np.pi * (1.3 * xx + 0.4 * yy)) + 0.2 * np.sin(2 * np.pi * 2.1 * yy)
    x = np.abs(ref + 0.1 * rng.standard_normal(shape))
    return x, ref


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_psnr_and_ssim_agree_with_skimage(shape, kind):
    x, ref = image_pair(shape, kind)
    expected_psnr = peak_signal_noise_ratio(ref, x, data_range=ref.max())
    expected_ssim = structural_similarity(ref, x, win_size=7, data_range=ref.max())
    got_psnr = psnr(torch.from_numpy(x), torch.from_numpy(ref))
    got_ssim = ssim(torch.from_numpy(x), torch.from_numpy(ref))
    assert got_psnr.shape == () and got_ssim.shape == ()
    assert abs(got_psnr.item() - expected_psnr) < 1e-8
    assert abs(got_ssim.item() - expected_ssim) < 1e-8


@pytest.mark.parametrize("shape", [(13, 20), (33, 31)])
def test_ssim_map_is_skimage_full_map_inside_the_border(shape):
    x, ref = image_pair(shape, "smooth", seed=1)
    _, expected = structural_similarity(ref, x, win_size=7, data_range=ref.max(), full=True)
    got = ssim_map(torch.from_numpy(x), torch.from_numpy(ref))
    assert got.shape == (shape[0] - 6, shape[1] - 6)
    np.testing.assert_allclose(got.numpy(), expected[3:-3, 3:-3], atol=1e-10)
    batch = ssim_map(torch.from_numpy(np.stack([x, ref])), torch.from_numpy(np.stack([ref, ref])))
    assert batch.shape == (2, shape[0] - 6, shape[1] - 6) and torch.allclose(batch[1], torch.ones_like(batch[1]))


def test_float32_complex_input_agrees_with_skimage_on_magnitudes():
    rng = np.random.default_rng(3)
    phase_x, phase_r = (np.exp(2j * np.pi * rng.random((40, 36))) for _ in range(2))
    x, ref = image_pair((40, 36), "smooth")
    xc = torch.from_numpy(x * phase_x).to(torch.complex64)
    rc = torch.from_numpy(ref * phase_r).to(torch.complex64)
    mag_x, mag_r = xc.abs().double().numpy(), rc.abs().double().numpy()
    assert abs(ssim(xc, rc).item() - structural_similarity(mag_r, mag_x, win_size=7, data_range=mag_r.max())) < 1e-4
    assert abs(psnr(xc, rc).item() - peak_signal_noise_ratio(mag_r, mag_x, data_range=mag_r.max())) < 1e-4
    # The phase is ignored entirely: the scores equal those of the magnitudes.
    assert torch.allclose(ssim(xc, rc), ssim(xc.abs(), rc.abs()))
    assert torch.allclose(psnr(xc, rc), psnr(xc.abs(), rc.abs()))
    assert torch.allclose(nmse(xc, rc), nmse(xc.abs(), rc.abs()))


def test_explicit_data_range_agrees_with_skimage():
    x, ref = image_pair((20, 24), "random", seed=1)
    for data_range in (1.0, 2.5):
        expected = structural_similarity(ref, x, win_size=7, data_range=data_range)
        assert abs(ssim(torch.from_numpy(x), torch.from_numpy(ref), data_range=data_range).item() - expected) < 1e-8
        expected = peak_signal_noise_ratio(ref, x, data_range=data_range)
        assert abs(psnr(torch.from_numpy(x), torch.from_numpy(ref), data_range=data_range).item() - expected) < 1e-8


def test_nmse_matches_numpy():
    x, ref = image_pair((17, 23), "random", seed=2)
    expected = np.linalg.norm(x - ref) ** 2 / np.linalg.norm(ref) ** 2
    got = nmse(torch.from_numpy(x), torch.from_numpy(ref))
    assert abs(got.item() - expected) < 1e-12
    assert abs(nmse_db(torch.from_numpy(x), torch.from_numpy(ref)).item() - 10 * np.log10(expected)) < 1e-9


@pytest.mark.parametrize("metric", [psnr, ssim, nmse, nmse_db])
def test_batched_equals_per_image_loop(metric):
    pairs = [image_pair((30, 27), kind, seed) for seed, kind in enumerate(["random", "smooth", "random"])]
    # Different scales per image, so a per-batch (not per-image) data range would show.
    x = torch.stack([torch.from_numpy(p[0]) * s for p, s in zip(pairs, (1.0, 3.0, 0.2))])
    ref = torch.stack([torch.from_numpy(p[1]) * s for p, s in zip(pairs, (1.0, 3.0, 0.2))])
    batched = metric(x, ref)
    assert batched.shape == (3,)
    looped = torch.stack([metric(x[i], ref[i]) for i in range(3)])
    assert torch.allclose(batched, looped, rtol=0, atol=1e-12)


def test_per_sample_data_range():
    x, ref = (torch.from_numpy(v) for v in image_pair((16, 16), "random"))
    batch_x, batch_ref = torch.stack([x, x]), torch.stack([ref, ref])
    got = ssim(batch_x, batch_ref, data_range=torch.tensor([1.0, 2.0]))
    assert torch.allclose(got, torch.stack([ssim(x, ref, data_range=1.0), ssim(x, ref, data_range=2.0)]))


def test_identical_images():
    ref = torch.rand(2, 12, 12, dtype=torch.float64) + 0.1
    assert torch.isinf(psnr(ref, ref)).all()
    assert torch.allclose(ssim(ref, ref), torch.ones(2, dtype=torch.float64))
    assert torch.equal(nmse(ref, ref), torch.zeros(2, dtype=torch.float64))


def test_ssim_is_differentiable():
    ref = torch.rand(1, 16, 16, dtype=torch.float64)
    x = (ref + 0.1 * torch.rand(1, 16, 16, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: ssim(v, ref), (x,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_stay_on_the_gpu():
    x, ref = (torch.from_numpy(v).cuda() for v in image_pair((32, 32), "smooth"))
    for metric in (psnr, ssim, nmse):
        score = metric(x, ref)
        assert score.device == x.device
        assert abs(score.item() - metric(x.cpu(), ref.cpu()).item()) < 1e-8


@pytest.mark.parametrize("metric", [psnr, ssim, nmse])
def test_bad_input_raises(metric):
    ref = torch.rand(2, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        metric(torch.rand(2, 16, 15), ref)
    with pytest.raises(ValueError, match="empty"):
        metric(torch.rand(0, 16, 16), torch.rand(0, 16, 16))
    bad = ref.clone()
    bad[1, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        metric(bad, ref)
    with pytest.raises(ValueError, match="ref contains NaN"):
        metric(ref, bad)
    with pytest.raises(ValueError, match=r"\(B, H, W\) or \(H, W\)"):
        metric(ref[None], ref[None])
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        metric(ref.numpy(), ref)
    zero_ref = ref.clone()
    zero_ref[0] = 0
    with pytest.raises(ValueError, match="zero"):
        metric(ref, zero_ref)


def test_bad_options_raise():
    ref = torch.rand(2, 16, 16)
    with pytest.raises(ValueError, match="smaller than the 7x7"):
        ssim(torch.rand(6, 20), torch.rand(6, 20))
    with pytest.raises(ValueError, match="win_size"):
        ssim(ref, ref, win_size=4)
    with pytest.raises(ValueError, match="data_range"):
        psnr(ref, ref, data_range=torch.ones(3))
    with pytest.raises(ValueError, match="data_range"):
        ssim(ref, ref, data_range=-1.0)


def test_snr_is_the_energy_ratio_in_decibels():
    ref = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    x = ref + torch.tensor([[0.3, 0.0], [0.0, 0.4]])  # ||ref|| = 5, ||x - ref|| = 0.5
    assert snr(x, ref).item() == pytest.approx(20.0)
    assert snr(x, ref).item() == pytest.approx(-nmse_db(x, ref).item())


def disk_pair(shape, noise, seed=0):
    """An MRI-like reference (a textured disk on a dark background) and a noisy magnitude copy, as tensors."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    ref = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.15) * (0.6 + 0.4 * np.cos(9 * xx))
    x = np.abs(ref + noise * rng.standard_normal(shape))
    return torch.from_numpy(x), torch.from_numpy(ref)


@pytest.mark.parametrize("shape", [(176, 176), (181, 190)])
@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_ms_ssim_agrees_with_torchmetrics(shape, kind):
    tm = pytest.importorskip("torchmetrics.functional.image")
    x, ref = (torch.from_numpy(v) for v in image_pair(shape, kind))
    got = ms_ssim(x, ref)
    expected = tm.multiscale_structural_similarity_index_measure(
        x[None, None], ref[None, None], data_range=ref.max().item(), reduction="none"
    )
    # torchmetrics averages the coarsest scale's SSIM over reflected borders too (ms_ssim's docstring):
    # 1e-4 to 1e-3 apart on these images.
    assert got.shape == () and abs(got.item() - expected.item()) < 2e-3

    # Built from torchmetrics' SSIM pieces with Wang et al.'s definition (every mean over the
    # windows inside the image), the two agree to rounding.
    a, b, r, pad = x[None, None], ref[None, None], ref.max().item(), 5
    rebuilt = torch.ones((), dtype=torch.float64)
    for scale, weight in enumerate(MS_SSIM_WEIGHTS):
        if scale > 0:
            a, b = torch.nn.functional.avg_pool2d(a, 2), torch.nn.functional.avg_pool2d(b, 2)
        if scale < len(MS_SSIM_WEIGHTS) - 1:
            _, term = tm.structural_similarity_index_measure(a, b, data_range=r, return_contrast_sensitivity=True)
        else:
            _, full = tm.structural_similarity_index_measure(a, b, data_range=r, return_full_image=True)
            term = full[..., pad:-pad, pad:-pad].mean()
        rebuilt = rebuilt * term.clamp(min=0) ** weight
    assert abs(got.item() - rebuilt.item()) < 1e-12


@pytest.mark.parametrize("shape", [(41, 41), (64, 57), (96, 96)])
@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_vif_agrees_with_torchmetrics(shape, kind):
    tm = pytest.importorskip("torchmetrics.functional.image")
    x, ref = (torch.from_numpy(v) for v in image_pair(shape, kind))
    for sigma_nsq in (2.0, 0.05, None):
        got = vif(x, ref, sigma_nsq)
        noise = x.mean().item() if sigma_nsq is None else sigma_nsq
        expected = tm.visual_information_fidelity(x[None, None], ref[None, None], sigma_n_sq=noise, reduction="none")
        assert got.shape == () and abs(got.item() - expected.item()) < 1e-10


def test_identical_images_give_vif_and_ms_ssim_one():
    ref = disk_pair((180, 176), 0.0)[1] + 0.05 * torch.rand(180, 176, dtype=torch.float64)
    batch = torch.stack([ref, 3 * ref])
    assert torch.allclose(ms_ssim(batch, batch), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    # Not exactly 1: the original's 1e-10 regularisers (the gain's denominator, the floor of var_v).
    assert torch.allclose(vif(batch, batch), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-7)
    assert torch.allclose(vif(batch, batch, sigma_nsq=2.0), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-7)


def test_more_noise_lowers_vif_and_ms_ssim():
    scores = []
    for noise in (0.01, 0.05, 0.2, 0.5):
        x, ref = disk_pair((176, 176), noise, seed=4)
        scores.append((vif(x, ref).item(), vif(x, ref, sigma_nsq=2.0).item(), ms_ssim(x, ref).item()))
    for metric in zip(*scores):
        assert all(a > b for a, b in zip(metric, metric[1:])), metric
        assert 0 < metric[-1] < metric[0] < 1


def test_blur_lowers_vif_but_contrast_gain_raises_it():
    x, ref = disk_pair((64, 64), 0.0)
    blurred = torch.nn.functional.avg_pool2d(ref[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
    assert vif(blurred, ref, sigma_nsq=0.01) < 0.9
    # VIF's gain g > 1 means contrast enhancement, which can score above 1.
    mean = ref.mean()
    assert vif(mean + 1.5 * (ref - mean), ref, sigma_nsq=0.01) > 1


@pytest.mark.parametrize("metric", [ms_ssim, vif])
def test_new_metrics_batched_equals_per_image_loop(metric):
    pairs = [disk_pair((176, 180), noise, seed) for seed, noise in enumerate((0.05, 0.1, 0.3))]
    # Different scales per image, so a per-batch (not per-image) default would show.
    x = torch.stack([p[0] * s for p, s in zip(pairs, (1.0, 3.0, 0.2))])
    ref = torch.stack([p[1] * s for p, s in zip(pairs, (1.0, 3.0, 0.2))])
    batched = metric(x, ref)
    assert batched.shape == (3,)
    looped = torch.stack([metric(x[i], ref[i]) for i in range(3)])
    assert torch.allclose(batched, looped, rtol=0, atol=1e-12)


def test_complex_inputs_are_scored_by_magnitude():
    x, ref = disk_pair((176, 176), 0.1)
    phase = torch.exp(2j * torch.pi * torch.rand(176, 176, dtype=torch.float64))
    for metric in (ms_ssim, vif):
        assert torch.allclose(metric(x * phase, ref * phase.conj()), metric(x, ref), rtol=0, atol=1e-12)


def test_volume_takes_statistics_over_the_whole_batch():
    pairs = [disk_pair((176, 176), 0.1, seed) for seed in range(3)]
    x = torch.stack([p[0] * s for p, s in zip(pairs, (1.0, 0.5, 0.25))])
    ref = torch.stack([p[1] * s for p, s in zip(pairs, (1.0, 0.5, 0.25))])
    peak = ref.max()
    for metric in (psnr, ssim, ms_ssim):
        volume = metric(x, ref, volume=True)
        assert volume.shape == (3,)
        assert torch.allclose(volume, metric(x, ref, data_range=peak), rtol=0, atol=1e-12)
        # The dim slices are scored against the volume's larger range: higher scores than image by image.
        image = metric(x, ref)
        assert torch.allclose(volume[0], image[0]) and (volume[1:] > image[1:]).all()
    assert torch.allclose(vif(x, ref, volume=True), vif(x, ref, sigma_nsq=x.mean()), rtol=0, atol=1e-12)
    assert not torch.allclose(vif(x, ref, volume=True), vif(x, ref))
    # A single image is its own volume.
    assert torch.equal(psnr(x[0], ref[0], volume=True), psnr(x[0], ref[0]))


def test_normalise_follows_darestani_and_heckel():
    rng = np.random.default_rng(5)
    slice_scale = torch.tensor([1.0, 0.5], dtype=torch.float64)[:, None, None]
    x = (torch.from_numpy(rng.random((2, 20, 24)) * 3) + 1) * slice_scale
    ref = torch.from_numpy(rng.random((2, 20, 24)) * 0.5) * slice_scale
    flat = lambda v: v.flatten(1)  # noqa: E731

    same_x, matched = normalise(x, ref)  # "mean_std_ref", as MLI-lab/ConvDecoder
    assert torch.equal(same_x, x)
    expected = (ref - ref.mean((1, 2), keepdim=True)) / flat(ref).std(1, correction=0)[:, None, None]
    expected = expected * flat(x).std(1, correction=0)[:, None, None] + x.mean((1, 2), keepdim=True)
    assert torch.allclose(matched, expected, rtol=0, atol=1e-12)
    assert torch.allclose(flat(matched).mean(1), flat(x).mean(1)) and torch.allclose(flat(matched).std(1), flat(x).std(1))

    for pair in (normalise(x, ref, "mean_std"), normalise(x, ref, "mean_std", volume=True)):
        assert all(torch.allclose(v.mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-12) for v in pair)
    for v in normalise(x, ref, "mean_std"):
        assert torch.allclose(flat(v).std(1, correction=0), torch.ones(2, dtype=torch.float64))
        assert torch.allclose(flat(v).mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    for v in normalise(x, ref, "min_max"):
        assert torch.equal(flat(v).amin(1), torch.zeros(2, dtype=torch.float64))
        assert torch.allclose(flat(v).amax(1), torch.ones(2, dtype=torch.float64))
    # Volume-based: one min and max for both slices, so only the volume spans [0, 1].
    for v in normalise(x, ref, "min_max", volume=True):
        assert v.min() == 0 and torch.isclose(v.max(), torch.tensor(1.0, dtype=torch.float64))
        assert flat(v).amax(1)[1] < 0.7

    # Shapes, magnitudes of complex inputs, composition with the metrics.
    single_x, single_ref = normalise(x[0].to(torch.complex64), ref[0])
    assert single_x.shape == single_ref.shape == (20, 24) and single_x.dtype == torch.float64
    assert torch.allclose(single_ref, matched[0], atol=1e-5)
    assert torch.equal(psnr(*normalise(x, ref)), psnr(x, matched))


def test_normalisation_can_change_the_ranking():
    # Appendix A's point in miniature: a reconstruction with the right structure but the wrong
    # intensity scale loses on raw PSNR and wins once the reference is matched to it.
    _, ref = disk_pair((64, 64), 0.0)
    scaled = 0.7 * ref + 0.02 * torch.from_numpy(np.random.default_rng(6).standard_normal((64, 64)))
    noisy = ref + 0.08 * torch.from_numpy(np.random.default_rng(7).standard_normal((64, 64)))
    assert psnr(scaled, ref) < psnr(noisy, ref)
    assert psnr(*normalise(scaled, ref)) > psnr(*normalise(noisy, ref))


def test_vif_and_ms_ssim_are_differentiable():
    x, ref = disk_pair((176, 176), 0.1)
    directions = torch.randn(3, 176, 176, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    along = lambda t: x + 0.01 * (t[:, None, None] * directions).sum(0)  # noqa: E731
    assert torch.autograd.gradcheck(lambda t: ms_ssim(along(t), ref), (t,))
    assert torch.autograd.gradcheck(lambda t: vif(along(t)[:48, :48], ref[:48, :48]), (t,))
    assert torch.autograd.gradcheck(lambda t: vif(along(t)[:48, :48], ref[:48, :48], sigma_nsq=0.1), (t,))


def test_new_metrics_bad_input_raises():
    x, ref = disk_pair((176, 176), 0.1)
    with pytest.raises(ValueError, match="too small for MS-SSIM.*at least 176"):
        ms_ssim(x[:175], ref[:175])
    assert torch.isfinite(ms_ssim(x[:44, :44], ref[:44, :44], weights=(0.5, 0.5), win_size=11))
    with pytest.raises(ValueError, match="weights"):
        ms_ssim(x, ref, weights=())
    with pytest.raises(ValueError, match="win_size"):
        ms_ssim(x, ref, win_size=10)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        ms_ssim(x, ref, sigma=0.0)
    with pytest.raises(ValueError, match="data_range"):
        ms_ssim(x, torch.zeros_like(ref))
    with pytest.raises(ValueError, match="same shape"):
        vif(x, ref[:-1])
    with pytest.raises(ValueError, match="too small for VIF.*at least 41"):
        vif(x[:40], ref[:40])
    with pytest.raises(ValueError, match="sigma_nsq must be finite and > 0.*the mean of x"):
        vif(*normalise(x, ref, "mean_std"))
    assert torch.isfinite(vif(*normalise(x, ref, "mean_std"), sigma_nsq=0.5))
    with pytest.raises(ValueError, match="sigma_nsq must be a scalar or have shape"):
        vif(x, ref, sigma_nsq=torch.ones(2))
    with pytest.raises(ValueError, match="no local variance"):
        vif(x, torch.ones_like(ref))
    with pytest.raises(ValueError, match="how must be one of"):
        normalise(x, ref, how="z-score")
    with pytest.raises(ValueError, match="ref is constant"):
        normalise(x, torch.ones_like(ref))
    with pytest.raises(ValueError, match="x is constant"):
        normalise(torch.ones_like(x), ref, "min_max")
    # Matching the reference to a constant reconstruction is allowed: the reference becomes that constant.
    assert torch.allclose(normalise(torch.ones_like(x), ref)[1], torch.ones_like(ref))
