import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mrtutor.metrics import nmse, nmse_db, psnr, snr, ssim, ssim_map

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
