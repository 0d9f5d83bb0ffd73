import pytest
import torch

from mrtutor.modl import Denoiser, MoDL, cg_et_ns, cg_pd_ns, modl, sd_et_ws, table_one_count
from mrtutor.sense import Sense


def problem(batch=2, coils=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(batch, coils, size, size, dtype=torch.complex64, generator=g)
    maps = maps / torch.linalg.vector_norm(maps, dim=1, keepdim=True)
    mask = (torch.rand(batch, size, size, generator=g) < 0.4).float()
    truth = torch.randn(batch, size, size, dtype=torch.complex64, generator=g)
    kspace = Sense(maps, mask).forward(truth)
    return kspace, maps, mask, truth


def test_table_one_parameter_count():
    model = modl(iterations=10)
    assert table_one_count(model) == 113_929
    # In PyTorch, BN's running mean and variance are buffers, not parameters.
    assert sum(p.numel() for p in model.parameters()) == 113_929 - 2 * (4 * 64 + 2)


def test_parameter_count_does_not_depend_on_iterations():
    assert table_one_count(modl(iterations=1)) == table_one_count(modl(iterations=10))
    assert table_one_count(cg_et_ns(iterations=10)) == 10 * (113_929 - 1) + 1


@pytest.mark.parametrize("build", [lambda: modl(3, features=8), lambda: cg_et_ns(3, features=8),
                                   lambda: sd_et_ws(3, features=8)])
def test_shapes_dtypes_and_gradient_reaches_lam(build):
    model = build()
    kspace, maps, mask, truth = problem()
    out = model(kspace, maps, mask)
    assert out.shape == truth.shape and out.dtype == torch.complex64
    (out - truth).abs().pow(2).mean().backward()
    assert model.log_lam.grad is not None and model.log_lam.grad.abs() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_denoiser_is_residual():
    d = Denoiser(layers=3, features=4)
    x = torch.randn(2, 8, 8, dtype=torch.complex64)
    assert torch.allclose(d(x), x + d.estimate_noise(x))


@pytest.mark.parametrize("scale", [0.03, 0.1, 1.0])
def test_output_scale_sets_the_training_mode_rms_of_the_noise_estimate(scale):
    # The last batch norm normalises N_w's output per channel over the batch, so in training mode
    # its rms is gamma = output_scale whatever the input's size (beta starts at 0).
    torch.manual_seed(0)
    d = Denoiser(layers=3, features=8, output_scale=scale).train()
    for size in (0.01, 1.0, 100.0):
        x = size * torch.randn(4, 16, 16, dtype=torch.complex64)
        rms = d.estimate_noise(x).abs().pow(2).mean().sqrt().item()
        assert rms == pytest.approx(scale * 2**0.5, rel=1e-2)  # two channels, each of rms gamma


def test_output_scale_must_be_positive():
    with pytest.raises(ValueError, match="output_scale"):
        Denoiser(output_scale=0.0)


def test_return_steps_follow_the_iteration():
    model = modl(2, features=8).eval()
    kspace, maps, mask, _ = problem()
    out, steps = model(kspace, maps, mask, return_steps=True)
    assert len(steps) == 2
    x0, n0, z0 = steps[0]
    assert torch.allclose(x0, Sense(maps, mask).adjoint(kspace))
    assert torch.allclose(z0, x0 + n0)
    assert torch.allclose(out, model(kspace, maps, mask), atol=1e-5)


def test_pd_variant_keeps_lam_fixed():
    model = cg_pd_ns(layers=3, features=4, lam=0.3, noise_levels=(0.2, 0.1))
    assert "log_lam" not in dict(model.named_parameters())
    assert torch.isclose(model.lam, torch.tensor(0.3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_matches_cpu():
    model = modl(2, features=8).eval()
    kspace, maps, mask, _ = problem()
    cpu = model(kspace, maps, mask)
    gpu = model.cuda()(kspace.cuda(), maps.cuda(), mask.cuda()).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="got 2 denoisers for 3 iterations"):
        MoDL(3, [Denoiser(), Denoiser()])
    with pytest.raises(ValueError, match="dc must be 'cg' or 'sd'"):
        MoDL(2, dc="admm")
    with pytest.raises(ValueError, match="lam must be > 0"):
        MoDL(2, lam=0.0)
