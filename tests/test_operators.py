"""Tests for the chapter 5 operators of mrtutor.operators: Inpainting, PartialFourier,
CircularConvolution / GaussianBlur and Radon (adjointness, shapes, errors, references)."""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrtutor import masks
from mrtutor.operators import CircularConvolution, GaussianBlur, Inpainting, PartialFourier, Radon

# Relative tolerance of the dot-product test per real dtype.
DOT_RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _random(shape, dtype, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        return torch.randn(shape, dtype=dtype, generator=g)
    return torch.randn(shape, dtype=torch.float64, generator=g).to(dtype)


def _inner(a: torch.Tensor, b: torch.Tensor) -> complex:
    """<a, b> = sum conj(a) b, accumulated in double precision."""
    a, b = a.to(torch.complex128), b.to(torch.complex128)
    return complex((a.conj() * b).sum())


def _assert_adjoint(op, x: torch.Tensor, y: torch.Tensor, rtol: float) -> None:
    """<A x, y> = <x, A^H y>, relative to |A x| |y|."""
    ax, aty = op.forward(x), op.adjoint(y)
    lhs, rhs = _inner(ax, y), _inner(x, aty)
    scale = float(ax.to(torch.complex128).abs().norm()) * float(y.to(torch.complex128).abs().norm())
    assert abs(lhs - rhs) <= rtol * scale, (lhs, rhs)


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------------------- Inpainting


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_inpainting_keeps_the_requested_fraction(fraction):
    mask = masks.random_pixels((32, 40), fraction, seed=1)
    op = Inpainting(mask)
    x = _random((2, 32, 40), torch.float64) + 3.0  # no zero pixels
    y = op.forward(x)
    assert y.shape == x.shape
    assert int((y != 0).sum()) == 2 * round(fraction * 32 * 40)
    kept = mask.bool()
    torch.testing.assert_close(y[:, kept], x[:, kept], rtol=0, atol=0)
    assert (y[:, ~kept] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.complex128, torch.complex64])
def test_inpainting_adjoint_and_normal(dtype):
    per_image = torch.stack([masks.random_pixels((24, 20), 0.5, seed=s) for s in range(3)])
    op = Inpainting(per_image)
    x, y = _random((3, 24, 20), dtype, 1), _random((3, 24, 20), dtype, 2)
    _assert_adjoint(op, x, y, DOT_RTOL[x.real.dtype])
    assert op.forward(x).dtype == dtype  # a float32 mask promotes nothing
    torch.testing.assert_close(op.normal(x), op.adjoint(op.forward(x)), rtol=0, atol=0)
    torch.testing.assert_close(op.normal(op.normal(x)), op.normal(x), rtol=0, atol=0)  # a projection
    # Each image gets its own mask: image 1 is cut by mask 1, not by mask 0.
    torch.testing.assert_close(op.forward(x)[1], per_image[1].to(x.real.dtype) * x[1], rtol=0, atol=0)
    assert not torch.equal(per_image[0], per_image[1])


def test_inpainting_bad_input():
    mask = masks.random_pixels((8, 8), 0.5, seed=0)
    with pytest.raises(ValueError, match="only the values 0 and 1"):
        Inpainting(mask * 0.5 + 0.25)
    with pytest.raises(TypeError, match="mask must be real"):
        Inpainting(mask.to(torch.complex64))
    with pytest.raises(ValueError, match=r"mask must have shape \(H, W\) or \(B, H, W\)"):
        Inpainting(mask.flatten())
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
        Inpainting(mask.numpy())
    op = Inpainting(mask)
    with pytest.raises(ValueError, match=r"does not match the mask's \(H, W\) = \(8, 8\)"):
        op.forward(torch.zeros(1, 8, 9))
    with pytest.raises(ValueError, match=r"must have shape \(B, H, W\)"):
        op.forward(torch.zeros(8, 8))
    with pytest.raises(TypeError, match="float or complex"):
        op.adjoint(torch.zeros(1, 8, 8, dtype=torch.int64))
    batched = Inpainting(torch.stack([mask, mask, mask]))
    with pytest.raises(ValueError, match="the mask holds 3 masks"):
        batched.forward(torch.zeros(2, 8, 8))


# ---------------------------------------------------------------------------- PartialFourier


def test_partial_fourier_full_mask_is_unitary():
    op = PartialFourier(torch.ones(16, 12))
    x = _random((2, 16, 12), torch.complex128)
    k = op.forward(x)
    torch.testing.assert_close(op.adjoint(k), x, rtol=0, atol=1e-12)
    assert math.isclose(float(k.abs().norm()), float(x.abs().norm()), rel_tol=1e-12)


def test_partial_fourier_matches_numpy_centred_fft():
    mask = masks.random_pixels((16, 14), 0.4, seed=3)
    x = _random((2, 16, 14), torch.complex128)
    expected = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    expected = torch.from_numpy(expected * mask.numpy())
    torch.testing.assert_close(PartialFourier(mask).forward(x), expected, rtol=0, atol=1e-12)
    # A constant image has only DC, at the centre (H // 2, W // 2).
    dc = PartialFourier(torch.ones(16, 14)).forward(torch.ones(1, 16, 14, dtype=torch.float64))
    assert math.isclose(abs(dc[0, 8, 7]), math.sqrt(16 * 14), rel_tol=1e-12)
    assert float(dc.abs().sum() - dc[0, 8, 7].abs()) < 1e-10


@pytest.mark.parametrize(
    "x_dtype, k_dtype",
    [
        (torch.float64, torch.complex128),
        (torch.complex128, torch.complex128),
        (torch.float32, torch.complex64),
        (torch.complex64, torch.complex64),
    ],
)
def test_partial_fourier_adjoint_and_normal(x_dtype, k_dtype):
    mask = torch.stack([masks.random_pixels((20, 16), 0.3, seed=s) for s in range(2)])
    op = PartialFourier(mask)
    x, y = _random((2, 20, 16), x_dtype, 1), _random((2, 20, 16), k_dtype, 2) * mask
    assert op.forward(x).dtype == k_dtype  # real images are cast to the matching complex dtype
    assert op.adjoint(y).dtype == k_dtype  # complex: the real part is not taken
    _assert_adjoint(op, x.to(k_dtype), y, DOT_RTOL[x.real.dtype])
    torch.testing.assert_close(op.normal(x), op.adjoint(op.forward(x)), rtol=0, atol=0)
    # For real images the adjoint of A restricted to real inputs is adjoint(y).real.
    if not x_dtype.is_complex:
        lhs, rhs = _inner(op.forward(x), y).real, _inner(x, op.adjoint(y).real).real
        assert math.isclose(lhs, rhs, rel_tol=DOT_RTOL[x_dtype] * 10)


def test_partial_fourier_bad_input():
    op = PartialFourier(torch.ones(8, 8))
    with pytest.raises(TypeError, match="y must be complex k-space"):
        op.adjoint(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match=r"does not match the mask's \(H, W\) = \(8, 8\)"):
        op.forward(torch.zeros(1, 8, 4))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        op.forward(np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="only the values 0 and 1"):
        PartialFourier(torch.full((8, 8), 2.0))


# ---------------------------------------------------------------------------- CircularConvolution, GaussianBlur


def _circular_conv2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Reference convolution: conv2d (a correlation) with the flipped kernel on a circularly padded image."""
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = F.pad(x[:, None], (pw, pw, ph, ph), mode="circular")
    return F.conv2d(padded, kernel.flip(0, 1)[None, None].to(x.dtype))[:, 0]


def _asymmetric_kernel() -> torch.Tensor:
    return _random((5, 3), torch.float64, seed=7)


def test_gaussian_kernel():
    blur = GaussianBlur(2.0)
    k = blur.kernel
    assert k.shape == (17, 17)  # truncated at 4 sigma: 2 * 8 + 1
    assert blur.sigma == 2.0
    assert math.isclose(float(k.sum()), 1.0, rel_tol=1e-14)
    torch.testing.assert_close(k, k.T, rtol=0, atol=0)
    assert k.argmax() == 8 * 17 + 8
    # Ratio of neighbouring taps of a Gaussian of standard deviation 2: exp(-1 / 8) between 0 and 1.
    assert math.isclose(float(k[8, 9] / k[8, 8]), math.exp(-1 / 8), rel_tol=1e-12)
    assert GaussianBlur(1.0, size=5).kernel.shape == (5, 5)


@pytest.mark.parametrize("make", [GaussianBlur, lambda: CircularConvolution(_asymmetric_kernel())])
def test_circular_convolution_matches_circular_conv2d(make):
    op = make()
    x = _random((2, 24, 20), torch.float64)
    torch.testing.assert_close(op.forward(x), _circular_conv2d(x, op.kernel), rtol=0, atol=1e-12)
    # The adjoint is the correlation with the kernel: conv2d with the unflipped one.
    torch.testing.assert_close(op.adjoint(x), _circular_conv2d(x, op.kernel.flip(0, 1)), rtol=0, atol=1e-12)


def test_circular_convolution_impulse_response_is_the_centred_kernel():
    kernel = _asymmetric_kernel()
    impulse = torch.zeros(1, 12, 10, dtype=torch.float64)
    impulse[0, 6, 4] = 1.0
    torch.testing.assert_close(CircularConvolution(kernel).forward(impulse)[0, 4:9, 3:6], kernel, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.complex128])
@pytest.mark.parametrize("make", [GaussianBlur, lambda: CircularConvolution(_asymmetric_kernel())])
def test_circular_convolution_adjoint_and_normal(dtype, make):
    op = make()
    x, y = _random((2, 32, 24), dtype, 1), _random((2, 32, 24), dtype, 2)
    assert op.forward(x).shape == x.shape and op.forward(x).dtype == dtype
    _assert_adjoint(op, x, y, DOT_RTOL[x.real.dtype])
    torch.testing.assert_close(op.normal(x), op.adjoint(op.forward(x)), rtol=0, atol=0)


def _power_iteration(op, shape, iterations=200) -> float:
    x = _random(shape, torch.float64, 3)
    for _ in range(iterations):
        x = op.normal(x)
        x = x / x.norm()
    return math.sqrt(float(x.flatten() @ op.normal(x).flatten()))


def test_gaussian_blur_norm_is_one_and_keeps_the_mean():
    blur = GaussianBlur(2.0)
    transfer = blur.transfer((32, 32))
    assert transfer.shape == (32, 17)
    assert float(transfer.abs().max()) <= 1.0 + 1e-12
    assert math.isclose(_power_iteration(blur, (1, 32, 32)), 1.0, rel_tol=1e-6)
    x = _random((1, 32, 32), torch.float64)
    assert math.isclose(float(blur.forward(x).sum()), float(x.sum()), rel_tol=1e-10, abs_tol=1e-10)
    # High frequencies are damped: a checkerboard almost vanishes.
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1.0
    assert float(blur.forward(checker[None].double()).abs().max()) < 1e-6


def test_circular_convolution_norm_is_the_transfer_maximum():
    op = CircularConvolution(_asymmetric_kernel())
    expected = float(op.transfer((16, 16)).abs().max())
    assert math.isclose(_power_iteration(op, (1, 16, 16), 500), expected, rel_tol=1e-4)


def test_circular_convolution_bad_input():
    with pytest.raises(ValueError, match="odd kh and kw"):
        CircularConvolution(torch.ones(4, 3))
    with pytest.raises(TypeError, match="kernel must be a real float tensor"):
        CircularConvolution(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        GaussianBlur(0.0)
    with pytest.raises(ValueError, match="size must be an odd positive int"):
        GaussianBlur(2.0, size=8)
    blur = GaussianBlur(2.0)
    with pytest.raises(ValueError, match=r"images of size \(16, 16\) are smaller than the kernel \(17, 17\)"):
        blur.forward(torch.zeros(1, 16, 16))
    with pytest.raises(TypeError, match="x must be a float or complex tensor"):
        blur.forward(torch.zeros(1, 32, 32, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"y must have shape \(B, H, W\)"):
        blur.adjoint(torch.zeros(32, 32))


# ---------------------------------------------------------------------------- Radon


@functools.lru_cache(maxsize=None)
def _radon(size: int, n_angles: int, dtype: torch.dtype = torch.float64) -> Radon:
    return Radon(np.linspace(0, 180, n_angles, endpoint=False), size, dtype=dtype)


def _phantom(size: int) -> np.ndarray:
    """Off-centre and asymmetric, zero outside the inscribed circle: an offset Gaussian blob plus a
    small rectangle in another quadrant, so that a wrong angle direction, a flipped detector axis or a
    shifted centre would all show."""
    c = size // 2
    rows, cols = np.mgrid[:size, :size]
    blob = np.exp(-((rows - c - size / 6) ** 2 + (cols - c + size / 8) ** 2) / (2 * (size / 10) ** 2))
    box = (abs(rows - c + size / 5) < size / 10) & (abs(cols - c - size / 6) < size / 16)
    return (blob + 0.5 * box) * (((rows - c) ** 2 + (cols - c) ** 2) <= (c - 1) ** 2)


def test_radon_geometry_of_a_single_pixel():
    """Independent of skimage: a pixel at offset (v, u) from (c, c) lands on detector c + u cos - v sin."""
    op = Radon([0.0, 90.0, 30.0], 32, dtype=torch.float64)
    image = torch.zeros(1, 32, 32, dtype=torch.float64)
    image[0, 16 - 5, 16 + 10] = 1.0  # v = -5, u = 10
    sino = op.forward(image)[0]
    assert sino.shape == (32, 3)
    assert sino[:, 0].argmax() == 16 + 10 and math.isclose(float(sino[26, 0]), 1.0)
    assert sino[:, 1].argmax() == 16 + 5 and math.isclose(float(sino[21, 1]), 1.0)
    s = 10 * math.cos(math.radians(30)) + 5 * math.sin(math.radians(30))  # 11.16: between detectors 27 and 28
    assert set(torch.nonzero(sino[:, 2] > 0.05).flatten().tolist()) <= {26, 27, 28, 29}
    assert math.isclose(float((sino[:, 2] * (torch.arange(32) - 16)).sum()), s, rel_tol=0.02)
    # Mass: exact where the sample points fall on the pixel grid (0 and 90 degrees); at 30 degrees the
    # bilinear weights of the rotated points add up to 1 only approximately (measured 0.995).
    torch.testing.assert_close(sino[:, :2].sum(0), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    assert math.isclose(float(sino[:, 2].sum()), 1.0, rel_tol=0.01)


@pytest.mark.parametrize(
    "size, angles",
    [(64, np.linspace(0, 180, 45, endpoint=False)), (33, np.array([-20.0, 0.0, 13.7, 90.0, 151.0, 200.0, 271.5]))],
)
def test_radon_matches_skimage(size, angles):
    transform = pytest.importorskip("skimage.transform")
    image = _phantom(size)
    expected = transform.radon(image, theta=angles, circle=True)
    ours = Radon(torch.as_tensor(angles), size, dtype=torch.float64).forward(torch.from_numpy(image)[None])[0]
    assert ours.shape == expected.shape == (size, len(angles))
    # The same bilinear sampling as skimage's rotation: measured 6e-16 (64 px) and 5e-16 (33 px).
    assert _rel(ours, expected) < 1e-12
    # The test can fail: mirroring the angle direction or the detector axis is far off.
    assert _rel(ours.flip(0), expected) > 0.3
    mirrored = Radon(torch.as_tensor(-angles), size, dtype=torch.float64).forward(torch.from_numpy(image)[None])[0]
    assert _rel(mirrored, expected) > 0.3


def test_radon_fbp_matches_skimage_iradon():
    transform = pytest.importorskip("skimage.transform")
    op = _radon(64, 45)
    angles = op.angles.numpy()
    image = _phantom(64)
    sinogram = transform.radon(image, theta=angles, circle=True)
    expected = transform.iradon(sinogram, theta=angles, filter_name="ramp", circle=True)
    ours = op.fbp(torch.from_numpy(sinogram)[None])[0].numpy()
    # Measured 2.6 % (2.3 % with 144 angles, 1.5 % at 128 px and 144 angles). The ramp filtering is
    # the same; the back-projections differ: iradon interpolates linearly along the detector,
    # adjoint spreads each pixel over its bilinear footprint, a little wider at oblique angles.
    assert _rel(ours, expected) < 0.04
    assert math.isclose(float((ours * expected).sum() / (expected**2).sum()), 1.0, rel_tol=0.01)  # scale: 1.0001
    # Both reconstruct the image about equally well (measured 7.8 % and 7.4 %).
    assert _rel(ours, image) < 1.2 * _rel(expected, image) < 0.1
    assert (ours[((np.mgrid[:64, :64] - 32) ** 2).sum(0) > 32**2] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_radon_adjoint_and_normal(dtype):
    op = _radon(32, 20, dtype)
    x, y = _random((3, 32, 32), dtype, 1), _random((3, 32, 20), dtype, 2)
    assert op.forward(x).shape == (3, 32, 20) and op.forward(x).dtype == dtype
    assert op.adjoint(y).shape == (3, 32, 32)
    _assert_adjoint(op, x, y, DOT_RTOL[dtype])
    torch.testing.assert_close(op.normal(x), op.adjoint(op.forward(x)), rtol=0, atol=0)
    # The batch is independent: image 1 alone gives the same sinogram.
    torch.testing.assert_close(op.forward(x[1:2])[0], op.forward(x)[1], rtol=0, atol=0)


def test_radon_is_differentiable_with_the_adjoint_as_gradient():
    op = _radon(32, 20)
    x = _random((2, 32, 32), torch.float64, 1).requires_grad_()
    y = _random((2, 32, 20), torch.float64, 2)
    (op.forward(x) * y).sum().backward()
    torch.testing.assert_close(x.grad, op.adjoint(y), rtol=0, atol=1e-12)
    small = Radon([0.0, 45.0, 100.0], 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(small.forward, (_random((1, 6, 6), torch.float64).requires_grad_(),))
    assert torch.autograd.gradcheck(small.fbp, (_random((1, 6, 3), torch.float64).requires_grad_(),))


def test_radon_build_time_and_size_at_the_chapter_setting():
    start = time.perf_counter()
    op = Radon(np.linspace(0, 180, 144, endpoint=False), 128)  # SGP's CT: 144 views (measured 0.8 s)
    elapsed = time.perf_counter() - start
    assert elapsed < 4.0, f"building took {elapsed:.1f} s"
    assert op.forward(torch.zeros(1, 128, 128)).shape == (1, 128, 144)
    assert op._matrix.values().numel() <= 2 * 128**2 * 144  # the docstring's memory estimate


def test_radon_bad_input():
    with pytest.raises(ValueError, match="non-empty 1-D sequence of finite degrees"):
        Radon([[0.0, 90.0]], 8)
    with pytest.raises(ValueError, match="non-empty 1-D sequence of finite degrees"):
        Radon([], 8)
    with pytest.raises(TypeError, match="angles must be a 1-D sequence of numbers"):
        Radon(["a", "b"], 8)
    with pytest.raises(ValueError, match="size must be a positive int"):
        Radon([0.0], 0)
    with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.float64"):
        Radon([0.0], 8, dtype=torch.float16)
    op = Radon([0.0, 90.0], 8)
    with pytest.raises(TypeError, match="must have the operator's dtype torch.float32"):
        op.forward(torch.zeros(1, 8, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="must have the operator's dtype"):
        op.forward(torch.zeros(1, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"y must have shape \(B, 8, 2\)"):
        op.adjoint(torch.zeros(1, 8, 3))
    with pytest.raises(ValueError, match=r"sinogram must have shape \(B, 8, 2\)"):
        op.fbp(torch.zeros(1, 2, 8))
