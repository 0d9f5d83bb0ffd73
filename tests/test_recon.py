import numpy as np
import pytest
import pywt
import sigpy
import sigpy.mri
import torch

from mrtutor.metrics import nmse, psnr
from mrtutor.recon import (
    ReconInfo,
    Wavelet,
    cg_sense,
    dwt_matrix,
    image_gradient,
    image_gradient_adjoint,
    l1_wavelet,
    power_iteration,
    soft_threshold,
    tune_lambda,
    tv,
    tv_norm,
    zero_filled,
)
from mrtutor.sense import Sense

N, COILS, SIGMA = 64, 4, 0.01


def shepp_logan_with_phase(n=N):
    """Shepp-Logan with a smooth phase, magnitude max 1: (1, n, n) complex64."""
    yy, xx = np.mgrid[-1 : 1 : 1j * n, -1 : 1 : 1j * n]
    image = sigpy.shepp_logan((n, n)).real * np.exp(1j * np.pi / 2 * (xx + 0.5 * yy**2))
    return torch.from_numpy(image / np.abs(image).max()).to(torch.complex64)[None]


def birdcage(normalise=True):
    maps = sigpy.mri.birdcage_maps((COILS, N, N))
    if normalise:  # unit sum of squares, as the book's data
        maps = maps / np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    return torch.from_numpy(maps).to(torch.complex64)[None]


def variable_density_mask(accel=4, seed=0, n=N):
    """A local 2-D variable-density random mask with a fully sampled 8 x 8 centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1 : 1 : 1j * n, -1 : 1 : 1j * n]
    prob = (1 - np.sqrt(xx**2 + yy**2) / np.sqrt(2)) ** 4
    for _ in range(50):  # rescale to the target density, clipping at 1
        prob = np.clip(prob * (n * n / accel) / prob.sum(), 0, 1)
    mask = rng.random((n, n)) < prob
    mask[n // 2 - 4 : n // 2 + 4, n // 2 - 4 : n // 2 + 4] = True
    return torch.from_numpy(mask.astype(np.float32))


def measure(op, x, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = SIGMA * torch.randn(op.maps.shape, dtype=torch.complex64, generator=g)
    return op.forward(x) + noise * op.mask


@pytest.fixture(scope="module")
def problem():
    x = shepp_logan_with_phase()
    op = Sense(birdcage(), variable_density_mask(accel=4))
    return x, op, measure(op, x)


@pytest.fixture(scope="module")
def reconstructions(problem):
    x, op, y = problem
    return {
        "zero_filled": zero_filled(op, y),
        "cg_sense": cg_sense(op, y),
        "tv": tv(op, y),
        "l1_wavelet": l1_wavelet(op, y),
    }


def test_the_phantom_problem_is_what_the_tests_assume(problem):
    x, op, y = problem
    assert 3.8 < op.mask.numel() / op.mask.sum().item() < 4.2
    assert torch.allclose((op.maps.abs() ** 2).sum(1), torch.ones(1, N, N), atol=1e-5)
    assert x.abs().max().item() == pytest.approx(1.0)


def test_every_method_beats_zero_filling_and_tv_beats_cg_sense(problem, reconstructions):
    x = problem[0]
    score = {name: psnr(image, x).item() for name, image in reconstructions.items()}
    for name, image in reconstructions.items():
        assert image.shape == x.shape and image.dtype == torch.complex64, name
    assert score["cg_sense"] > score["zero_filled"] + 1.0, score
    assert score["l1_wavelet"] > score["zero_filled"] + 3.0, score
    assert score["tv"] > score["zero_filled"] + 6.0, score
    # The phantom is piecewise constant: TV's prior fits it, Tikhonov's does not.
    assert score["tv"] > score["cg_sense"] + 4.0, score


def test_cg_sense_on_full_sampling_without_noise_returns_the_truth():
    x = shepp_logan_with_phase()
    op = Sense(birdcage(normalise=False), torch.ones(N, N))  # A^H A = sum |S_c|^2, not the identity
    for lam in (0.0, 1e-9):
        estimate = cg_sense(op, op.forward(x), lam=lam, max_iter=100, tol=1e-7)
        assert nmse(estimate, x).item() < 1e-10
        assert (estimate - x).abs().max().item() < 1e-4


def test_tv_without_regularisation_converges_to_least_squares():
    # Regular 2x undersampling with 4 coils: SENSE is well conditioned, so least squares is unique.
    x = shepp_logan_with_phase()
    rows = torch.zeros(N, N).index_fill_(0, torch.arange(0, N, 2), 1.0)
    op = Sense(birdcage(), rows)
    y = measure(op, x, seed=1)
    least_squares = cg_sense(op, y, lam=0.0, max_iter=100, tol=1e-7)
    distance = [nmse(tv(op, y, lam=0.0, n_iter=n), least_squares).sqrt().item() for n in (30, 100, 300)]
    assert distance[0] > distance[1] > distance[2]
    assert distance[2] < 1e-4, distance


def test_iteration_info_records_convergence(problem):
    x, op, y = problem
    lam = 2e-3
    for method in (tv, l1_wavelet):
        image, info = method(op, y, lam, n_iter=60, return_info=True)
        assert isinstance(info, ReconInfo) and info.iterations == 60 and info.time_s > 0
        objective, change = info.history["objective"], info.history["rel_change"]
        assert objective.shape == change.shape == (60, 1)
        assert objective[-1, 0] < objective[0, 0], method.__name__
        assert change[-1, 0] < 0.2 * change[0, 0], method.__name__
        # The objective is what the docstrings say it is.
        data = 0.5 * (op.forward(image) - y).abs().pow(2).sum()
        if method is tv:
            penalty = lam * tv_norm(image).sum()
        else:  # details only: all but the 4 x 4 approximation block of a 4-level transform
            coeffs = Wavelet((N, N)).forward(image).abs()
            penalty = lam * (coeffs.sum() - coeffs[:, :4, :4].sum())
        assert objective[-1, 0].item() == pytest.approx((data + penalty).item(), rel=1e-4)
    image, info = cg_sense(op, y, max_iter=50, tol=1e-5, return_info=True)
    assert info.iterations.shape == (1,) and 0 < info.iterations.item() < 50
    assert info.history["residual"][-1, 0] <= 1e-5


def test_l1_wavelet_reaches_its_minimum(problem):
    x, op, y = problem
    _, info = l1_wavelet(op, y, n_iter=300, return_info=True)
    objective = info.history["objective"][:, 0]
    best = objective.min()
    # FISTA converges as O(1/k^2) (here faster): measured gaps 4e-3, 3e-4, 2e-5 at 50, 100, 200.
    assert (objective[99] - best) / best < 1e-3
    assert (objective[199] - best) / best < 1e-4


def test_tol_stops_early(problem):
    x, op, y = problem
    for method in (tv, l1_wavelet):
        _, info = method(op, y, n_iter=500, tol=1e-3, return_info=True)
        assert info.iterations < 500
        assert info.history["rel_change"][-1, 0] < 1e-3 <= info.history["rel_change"][-2, 0]


def test_batched_with_per_sample_lam_equals_separate_runs():
    first = shepp_logan_with_phase()
    second = torch.flip(first, dims=(-1,)) * 0.7
    images = torch.cat([first, second])
    maps = birdcage().expand(2, -1, -1, -1).contiguous()
    masks = torch.stack([variable_density_mask(seed=1), variable_density_mask(seed=2)])
    op = Sense(maps, masks)
    y = measure(op, images)
    lams = torch.tensor([2e-3, 6e-3])
    for method, kwargs in ((tv, {"n_iter": 40}), (l1_wavelet, {"n_iter": 40}), (cg_sense, {"max_iter": 20})):
        batched = method(op, y, lams, **kwargs)
        for i in range(2):
            alone = method(Sense(maps[i : i + 1], masks[i]), y[i : i + 1], lams[i].item(), **kwargs)
            assert torch.allclose(batched[i : i + 1], alone, atol=2e-5), method.__name__


def test_image_gradient_adjoint_and_tv_norm():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 12, dtype=torch.complex128, generator=g)
    d = torch.randn(2, 2, 9, 12, dtype=torch.complex128, generator=g)
    lhs = torch.vdot(image_gradient(x).flatten(), d.flatten())
    rhs = torch.vdot(x.flatten(), image_gradient_adjoint(d).flatten())
    assert torch.allclose(lhs, rhs, rtol=1e-12)
    # A vertical band of height 1j: with periodic boundaries it has two edges of 9 pixels each.
    band = torch.zeros(1, 9, 12, dtype=torch.complex128)
    band[..., 3:7] = 1j
    assert tv_norm(band).item() == pytest.approx(18.0)
    # Isotropic: a one-pixel dot has a corner pixel whose gradient is (-1, -1) / sqrt(2) long.
    dot = torch.zeros(1, 5, 5, dtype=torch.float64)
    dot[0, 2, 2] = 1
    assert tv_norm(dot).item() == pytest.approx(2 + np.sqrt(2))


def test_power_iteration_matches_the_largest_eigenvalue():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 20, 20, dtype=torch.complex128, generator=g))
    eig = torch.rand(3, 20, dtype=torch.float64, generator=g) * 0.5
    eig[:, 0] = torch.tensor([1.0, 3.0, 0.9])
    mats = q @ torch.diag_embed(eig.to(torch.complex128)) @ q.mH
    x0 = torch.randn(3, 20, dtype=torch.complex128, generator=g)
    estimate = power_iteration(lambda v: (mats @ v[..., None])[..., 0], x0, n_iter=60)
    expected = torch.linalg.eigvalsh(mats)[:, -1]
    assert torch.allclose(estimate, expected, rtol=1e-9)


def test_sense_norm_from_power_iteration_is_at_most_one(problem):
    # Unit sum-of-squares maps and a 0/1 mask make ||A|| <= 1; the fully sampled centre makes it 1.
    _, op, _ = problem
    start = torch.randn(1, N, N, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    assert 0.98 < power_iteration(op.normal, start, n_iter=50).item() <= 1.0 + 1e-5


@pytest.mark.filterwarnings("ignore:Level value of")  # pywt's note that coarse levels wrap around
@pytest.mark.parametrize(
    "wavelet, shape, levels",
    [("haar", (16, 16), None), ("db4", (48, 40), 3), ("db4", (12, 8), 2), ("sym8", (32, 64), None), ("coif2", (64, 24), 3)],
)
def test_wavelet_is_orthonormal_and_matches_pywt(wavelet, shape, levels):
    transform = Wavelet(shape, wavelet, levels)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *shape, dtype=torch.complex128, generator=g)
    coeffs = transform.forward(x)
    assert torch.allclose(transform.adjoint(coeffs), x, atol=1e-12)  # W^T W = I
    assert torch.allclose(torch.linalg.vector_norm(coeffs.flatten(1), dim=1), torch.linalg.vector_norm(x.flatten(1), dim=1))
    expected, _ = pywt.coeffs_to_array(
        pywt.wavedec2(x[0].real.numpy(), wavelet, mode="periodization", level=transform.levels)
    )
    assert np.allclose(coeffs[0].real.numpy(), expected, atol=1e-12)


def test_wavelet_is_an_orthogonal_matrix_also_for_blocks_shorter_than_the_filter():
    # 8 x 8 with db4 (8 taps) at 3 levels: the last level acts on 2 x 2 blocks.
    transform = Wavelet((8, 8), "db4", levels=3)
    basis = torch.eye(64, dtype=torch.float64).reshape(64, 8, 8)
    matrix = transform.forward(basis).reshape(64, 64)
    assert torch.allclose(matrix @ matrix.T, torch.eye(64, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(matrix.T @ matrix, torch.eye(64, dtype=torch.float64), atol=1e-12)
    for n in (2, 4, 6, 10):
        m = dwt_matrix(n, "db4")
        assert torch.allclose(m @ m.T, torch.eye(n, dtype=torch.float64), atol=1e-12)


def test_wavelet_levels_and_bad_sizes():
    assert Wavelet((256, 232)).levels == 3
    assert Wavelet((64, 64)).levels == 4
    assert Wavelet((48, 40)).levels == 3
    with pytest.raises(ValueError, match="odd side"):
        Wavelet((64, 63))
    with pytest.raises(ValueError, match="divisible by 8"):
        Wavelet((48, 36), levels=3)
    with pytest.raises(ValueError, match="orthogonal"):
        Wavelet((16, 16), "bior2.2")
    with pytest.raises(ValueError, match="levels"):
        Wavelet((16, 16), levels=0)
    with pytest.raises(ValueError, match=r"shape \(B, 16, 16\)"):
        Wavelet((16, 16)).forward(torch.zeros(1, 16, 8))


def test_soft_threshold_shrinks_the_magnitude_and_keeps_the_phase():
    z = torch.tensor([3 + 4j, 0.3j, 0.0, -2.0], dtype=torch.complex128)
    out = soft_threshold(z, 1.0)
    assert torch.allclose(out.abs(), torch.tensor([4.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    assert out[0].item() == pytest.approx((3 + 4j) * 0.8) and out[3].item() == -1.0
    assert torch.isfinite(out).all()


def test_tune_lambda_picks_the_best_weight(problem):
    x, op, y = problem
    samples = [(op, y, x)]
    recon = lambda op, y, lam: cg_sense(op, y, lam=lam, max_iter=20)  # noqa: E731
    best, table = tune_lambda(recon, samples, [1.0, 1e-2, 0.3])
    assert best == 1e-2 and list(table) == [1.0, 1e-2, 0.3]
    assert table[1e-2] > table[0.3] > table[1.0]
    assert table[1e-2] == pytest.approx(psnr(recon(op, y, 1e-2), x).item())
    best_nmse, _ = tune_lambda(recon, samples, [1.0, 1e-2, 0.3], metric=nmse, higher_is_better=False)
    assert best_nmse == 1e-2
    with pytest.raises(ValueError, match="samples is empty"):
        tune_lambda(recon, [], [1.0])
    with pytest.raises(ValueError, match="lams is empty"):
        tune_lambda(recon, samples, [])
    with pytest.raises(ValueError, match=r"samples\[0\] must be a tuple"):
        tune_lambda(recon, [(op, y)], [1.0])


def test_bad_inputs_raise(problem):
    x, op, y = problem
    for method in (zero_filled, cg_sense, tv, l1_wavelet):
        with pytest.raises(TypeError, match="op must have forward, adjoint and normal"):
            method(object(), y)
        with pytest.raises(ValueError, match="y must have shape"):
            method(op, y[:, :2])
    for method in (cg_sense, tv, l1_wavelet):
        with pytest.raises(ValueError, match="lam must be finite and >= 0"):
            method(op, y, -1.0)
        with pytest.raises(ValueError, match="lam must be a scalar or have shape"):
            method(op, y, torch.ones(3))
        with pytest.raises(TypeError, match="lam must be real"):
            method(op, y, torch.tensor(1j))
    with pytest.raises(ValueError, match="n_iter must be an integer >= 0"):
        tv(op, y, n_iter=-1)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 0"):
        cg_sense(op, y, max_iter=2.5)
    with pytest.raises(ValueError, match="step_ratio"):
        tv(op, y, step_ratio=0)
    with pytest.raises(ValueError, match="odd side"):
        l1_wavelet(Sense(birdcage()[..., :63], torch.ones(N, 63)), torch.zeros(1, COILS, N, 63, dtype=torch.complex64))
    with pytest.raises(TypeError, match="x0 must be"):
        power_iteration(op.normal, torch.zeros(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_reconstructions_run_on_the_gpu(problem, reconstructions):
    x, op, y = problem
    gpu_op = Sense(op.maps.cuda(), op.mask.cuda())
    for name, method in (("cg_sense", cg_sense), ("tv", tv), ("l1_wavelet", l1_wavelet)):
        image = method(gpu_op, y.cuda())
        assert image.device.type == "cuda"
        assert torch.allclose(image.cpu(), reconstructions[name], atol=1e-4), name
