import numpy as np
import pytest
import torch

from mrtutor.fft import centring_phases, channels_to_complex, complex_to_channels, fft2c, ifft2c, rss


def numpy_fft2c(x: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), norm="ortho"), axes=axes)


def numpy_ifft2c(k: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=axes), norm="ortho"), axes=axes)


@pytest.mark.parametrize("shape", [(16, 16), (2, 3, 15, 17), (1, 6, 5)])
def test_fft2c_matches_numpy(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    np.testing.assert_allclose(fft2c(torch.from_numpy(x)).numpy(), numpy_fft2c(x), atol=1e-12)
    np.testing.assert_allclose(ifft2c(torch.from_numpy(x)).numpy(), numpy_ifft2c(x), atol=1e-12)


def test_fft2c_is_orthonormal_and_centred():
    x = torch.randn(3, 32, 30, dtype=torch.complex128)
    assert torch.allclose(ifft2c(fft2c(x)), x, atol=1e-12)
    assert torch.allclose(torch.linalg.vector_norm(fft2c(x)), torch.linalg.vector_norm(x))
    # A constant image has all its energy at DC, which sits at (H//2, W//2).
    k = fft2c(torch.ones(1, 8, 7, dtype=torch.complex64))
    peak = torch.nonzero(k.abs() > 1e-4)
    assert peak.tolist() == [[0, 4, 3]]


@pytest.mark.parametrize("n", [1, 2, 7, 8, 33])
def test_centring_phases_reproduce_the_shifted_fft(n):
    pre, post = centring_phases(n, torch.complex128)
    v = torch.randn(n, dtype=torch.complex128)
    shifted = torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(v), norm="ortho"))
    assert torch.allclose(post * torch.fft.fft(pre * v, norm="ortho"), shifted, atol=1e-12)


def test_channels_round_trip_and_layout():
    x = torch.randn(2, 5, 6, dtype=torch.complex64)
    c = complex_to_channels(x)
    assert c.shape == (2, 2, 5, 6) and c.dtype == torch.float32
    assert torch.equal(c[:, 0], x.real) and torch.equal(c[:, 1], x.imag)
    assert torch.equal(channels_to_complex(c), x)
    # No copy, and the channels-last order the CPU convolutions are fastest on.
    assert c.data_ptr() == x.data_ptr() and c.is_contiguous(memory_format=torch.channels_last)


def test_rss_matches_definition():
    coils = torch.randn(2, 4, 5, 6, dtype=torch.complex64)
    expected = np.sqrt((np.abs(coils.numpy()) ** 2).sum(axis=1))
    np.testing.assert_allclose(rss(coils).numpy(), expected, rtol=1e-6)


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="x must be a complex tensor"):
        fft2c(torch.randn(4, 4))
    with pytest.raises(TypeError, match="k must be a torch.Tensor, got ndarray"):
        ifft2c(np.zeros((4, 4), complex))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2, H, W\)"):
        channels_to_complex(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"x must have shape \(B, H, W\)"):
        complex_to_channels(torch.randn(4, 4, dtype=torch.complex64))
