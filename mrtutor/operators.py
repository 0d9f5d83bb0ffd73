"""Linear forward operators of inverse problems beyond MRI, each with ``forward``, ``adjoint`` and ``normal``.

They follow ``mrtutor.sense.Sense``: images are (B, H, W) tensors, ``normal(x) = adjoint(forward(x))``,
and every operator is tested for adjointness (<A x, y> = <x, A^H y>). Neural PGD's super-resolution
experiment (chapter 4) uses ``AveragePooling``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_images(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, H, W), got {tuple(x.shape)}")


class AveragePooling:
    """Downsampling by averaging ``factor`` x ``factor`` non-overlapping blocks (Mardani et al. 2018, Sec. 5.3).

    ``forward``: (B, H, W) -> (B, H / factor, W / factor), each pixel the mean of its block.
    ``adjoint``: each low-resolution pixel spread over its block, divided by factor^2.
    A A^H = I / factor^2, so ||A|| = 1 / factor, and A^H A = P / factor^2 with P the projection onto
    images constant on each block: a gradient step x + factor^2 A^H (y - A x) replaces each block's mean
    by the measured one, as the step 1 does for single-coil MRI. Real or complex images.
    """

    def __init__(self, factor: int = 2):
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        self.factor = int(factor)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x[:, None], self.factor)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "x")
        if x.shape[-2] % self.factor or x.shape[-1] % self.factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by the factor {self.factor}")
        if x.is_complex():
            return torch.complex(self._pool(x.real), self._pool(x.imag))
        return self._pool(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _check_images(y, "y")
        f = self.factor
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) / f**2

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return self.adjoint(self.forward(x))
