import numpy as np
import pytest
import sigpy.mri
import torch

from mrtutor.fft import fft2c, ifft2c
from mrtutor.sense import Sense

DTYPE_TOL = {torch.complex64: 1e-5, torch.complex128: 1e-12}


def random_problem(batch, coils, h, w, dtype, seed, mask_ndim=3):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(batch, coils, h, w, dtype=dtype, generator=g)
    mask_shape = {2: (h, w), 3: (batch, h, w), 4: (batch, 1, h, w)}[mask_ndim]
    mask = (torch.rand(mask_shape, generator=g) < 0.4).to(maps.real.dtype)
    x = torch.randn(batch, h, w, dtype=dtype, generator=g)
    y = torch.randn(batch, coils, h, w, dtype=dtype, generator=g)
    return maps, mask, x, y


def inner(a, b):
    """<a, b> accumulated in complex128: the test measures the operator's rounding, not the sum's
    (a float32 sum of ~10^5 products alone is off by ~1e-5 relative to a cancelling total)."""
    return torch.vdot(a.flatten().to(torch.complex128), b.flatten().to(torch.complex128))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("seed", range(20))
def test_dot_product_adjoint(dtype, seed):
    rng = np.random.default_rng(seed)
    batch, coils = int(rng.integers(1, 4)), int(rng.integers(1, 13))
    h, w = (int(v) for v in rng.integers(5, 65, size=2))
    maps, mask, x, y = random_problem(batch, coils, h, w, dtype, seed, mask_ndim=int(rng.integers(2, 5)))
    op = Sense(maps, mask)
    lhs, rhs = inner(op.forward(x), y), inner(x, op.adjoint(y))
    assert abs(lhs - rhs) / abs(lhs) < DTYPE_TOL[dtype]
    assert torch.allclose(op.normal(x), op.adjoint(op.forward(x)), rtol=DTYPE_TOL[dtype], atol=DTYPE_TOL[dtype])


@pytest.mark.parametrize("shape", [(16, 16), (15, 13)])
def test_matches_the_shifted_fft_definition(shape):
    maps, mask, x, y = random_problem(2, 3, *shape, torch.complex128, seed=1)
    op = Sense(maps, mask)
    assert torch.allclose(op.forward(x), mask[:, None] * fft2c(maps * x[:, None]), atol=1e-12)
    assert torch.allclose(op.adjoint(y), (maps.conj() * ifft2c(mask[:, None] * y)).sum(1), atol=1e-12)


@pytest.mark.parametrize("shape", [(24, 20), (17, 23)])
def test_matches_sigpy_sense(shape):
    maps, mask, x, y = random_problem(1, 4, *shape, torch.complex128, seed=2, mask_ndim=2)
    op = Sense(maps, mask)
    # sigpy's Sense uses the same centred orthonormal FFT; its weights multiply k-space (here 0/1).
    ref = sigpy.mri.linop.Sense(maps[0].numpy(), weights=mask.numpy())
    np.testing.assert_allclose(op.forward(x)[0].numpy(), ref * x[0].numpy(), atol=1e-12)
    np.testing.assert_allclose(op.adjoint(y)[0].numpy(), ref.H * (mask * y[0]).numpy(), atol=1e-12)
    np.testing.assert_allclose(op.normal(x)[0].numpy(), ref.N * x[0].numpy(), atol=1e-12)


def test_single_coil_is_masked_fft():
    mask = (torch.rand(2, 10, 12) > 0.5).float()
    x = torch.randn(2, 10, 12, dtype=torch.complex64)
    op = Sense.single_coil(mask)
    assert op.maps.shape == (2, 1, 10, 12)
    assert torch.allclose(op.forward(x)[:, 0], mask * fft2c(x), atol=1e-6)


def test_normal_of_full_sampling_with_normalised_maps_is_identity():
    maps = torch.randn(1, 5, 12, 12, dtype=torch.complex128)
    maps = maps / torch.linalg.vector_norm(maps, dim=1, keepdim=True)
    x = torch.randn(1, 12, 12, dtype=torch.complex128)
    assert torch.allclose(Sense(maps, torch.ones(12, 12)).normal(x), x, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    maps, mask, x, y = random_problem(2, 4, 32, 32, torch.complex64, seed=3)
    cpu = Sense(maps, mask)
    gpu = Sense(maps.cuda(), mask.cuda())
    assert torch.allclose(gpu.normal(x.cuda()).cpu(), cpu.normal(x), atol=1e-5)


def test_bad_input_names_the_argument():
    maps = torch.randn(1, 2, 8, 8, dtype=torch.complex64)
    with pytest.raises(TypeError, match="maps must be complex"):
        Sense(maps.real, torch.ones(8, 8))
    with pytest.raises(ValueError, match=r"maps must have shape \(B, C, H, W\)"):
        Sense(maps[0], torch.ones(8, 8))
    with pytest.raises(ValueError, match="mask of shape .* does not match maps"):
        Sense(maps, torch.ones(8, 9))
    with pytest.raises(TypeError, match="mask must be real"):
        Sense(maps, torch.ones(8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="maps contain NaN"):
        Sense(maps * float("nan"), torch.ones(8, 8))
    op = Sense(maps, torch.ones(8, 8))
    with pytest.raises(TypeError, match="x must be complex"):
        op.forward(torch.randn(1, 8, 8))
    with pytest.raises(ValueError, match=r"x must have shape \(B=1, 8, 8\)"):
        op.normal(torch.randn(1, 8, 7, dtype=torch.complex64))
    with pytest.raises(ValueError, match="y must have shape"):
        op.adjoint(torch.randn(1, 3, 8, 8, dtype=torch.complex64))


@pytest.mark.parametrize("wrt", ["x", "maps"])
def test_gradients_through_every_operator(wrt):
    """The in-place coil combination must not break autograd, whether the image or the maps need a
    gradient (learned coil maps are a common extension)."""
    gen = torch.Generator().manual_seed(3)
    maps = torch.randn(2, 3, 6, 5, dtype=torch.complex128, generator=gen, requires_grad=wrt == "maps")
    mask = (torch.rand(6, 5, generator=gen) < 0.5).double()
    x = torch.randn(2, 6, 5, dtype=torch.complex128, generator=gen, requires_grad=wrt == "x")
    y = torch.randn(2, 3, 6, 5, dtype=torch.complex128, generator=gen)
    inputs = (maps,) if wrt == "maps" else (x,)

    def run(*args):
        op = Sense(args[0], mask) if wrt == "maps" else Sense(maps, mask)
        image = args[0] if wrt == "x" else x
        return op.normal(image), op.adjoint(y), op.forward(image)

    assert torch.autograd.gradcheck(run, inputs)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("axis, shape", [(-1, (16, 20)), (-2, (16, 20)), (-1, (15, 13)), (-2, (15, 13))])
def test_one_dimensional_masks_take_the_one_dimensional_normal_and_agree_with_the_two_dimensional_path(
        dtype, axis, shape):
    """A mask that is the same in every row (columns sampled, axis -1) or in every column takes 1-D FFTs in
    ``normal``; the result is A^H A x as the 2-D forward and adjoint compute it, for even and odd sizes."""
    maps, _, x, _ = random_problem(2, 4, *shape, dtype, seed=3)
    g = torch.Generator().manual_seed(4)
    line = (torch.rand(2, shape[axis], generator=g) < 0.4).to(maps.real.dtype)
    mask = line[:, None, :].expand(2, *shape) if axis == -1 else line[:, :, None].expand(2, *shape)
    op = Sense(maps, mask)
    assert op.line_axis == axis
    torch.testing.assert_close(op.normal(x), op.adjoint(op.forward(x)), rtol=DTYPE_TOL[dtype], atol=DTYPE_TOL[dtype])
    two_d = Sense(maps, random_problem(2, 4, *shape, dtype, seed=5)[1])
    assert two_d.line_axis is None  # a random 2-D mask keeps the 2-D path
    full = Sense(maps, torch.ones(shape))  # constant both ways: either axis serves
    torch.testing.assert_close(full.normal(x), full.adjoint(full.forward(x)), rtol=DTYPE_TOL[dtype],
                               atol=DTYPE_TOL[dtype])
