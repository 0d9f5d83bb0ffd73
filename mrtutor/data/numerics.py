"""The data pipeline's numpy arithmetic: twins of ``mrtutor.fft.fft2c`` / ``ifft2c`` and seeded random
generators, so that every draw (anatomy jitter, phase, coils, noise, masks, orders) is fixed by a
tuple of integers."""

from __future__ import annotations

import numpy as np
import scipy.fft


# numpy twins of mrtutor.fft.fft2c / ifft2c for the data pipeline (scipy.fft: threads over coils).
def _fft2c(x: np.ndarray) -> np.ndarray:
    x = scipy.fft.ifftshift(x, axes=(-2, -1))
    return scipy.fft.fftshift(scipy.fft.fft2(x, norm="ortho", workers=-1), axes=(-2, -1))


def _ifft2c(k: np.ndarray) -> np.ndarray:
    k = scipy.fft.ifftshift(k, axes=(-2, -1))
    return scipy.fft.fftshift(scipy.fft.ifft2(k, norm="ortho", workers=-1), axes=(-2, -1))


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _seed(*key: int) -> int:
    """An integer seed (32 bits) derived from a tuple of non-negative integers."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])
