"""The SENSE forward model A = M F S: coil sensitivities S, centred Fourier transform F, sampling M.

Shapes (DESIGN.md): image x (B, H, W), maps (B, C, H, W), k-space y (B, C, H, W), mask real 0/1
broadcastable to k-space. Single coil is C = 1 with unit maps (``Sense.single_coil``).

Speed: the centred FFT is ``post * fft(pre * v)`` per axis (see ``mrtutor.fft.centring_phases``).
The operator folds ``pre`` into the maps and ``post`` into the mask once, at construction, so
forward, adjoint and normal run bare ``fft2``/``ifft2`` calls with no ``fftshift`` per coil. In the
normal operator ``|post|^2 = 1`` cancels, leaving ``S~^H F^-1 |M|^2 F S~ x``.

One-dimensional masks: when the mask is the same in every row (fastMRI's column masks) or in every
column, |M|^2 acts along one axis only, and F = F_H F_W lets the transform along the other axis cancel:
F^-1 |M|^2 F = F_W^-1 |m|^2 F_W. ``normal`` then runs 1-D FFTs along that axis alone, half the FFT work
(the image-side phase of the cancelled axis, folded into the maps, cancels with its conjugate too).
"""

from __future__ import annotations

import torch

from mrtutor.fft import centring_phases


def _check_image(x: torch.Tensor, name: str, batch: int, shape: tuple[int, int], dtype: torch.dtype) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_complex():
        raise TypeError(f"{name} must be complex ({dtype}), got dtype {x.dtype}")
    if x.dim() != 3 or x.shape[1:] != shape or x.shape[0] not in (batch, 1):
        raise ValueError(f"{name} must have shape (B={batch}, {shape[0]}, {shape[1]}), got {tuple(x.shape)}")


class Sense:
    """Multi-coil Cartesian SENSE operator with ``forward``, ``adjoint`` and ``normal``.

    Args:
        maps: complex coil sensitivities (B, C, H, W), complex64 or complex128.
        mask: real sampling mask, centred (DC in the middle), of shape (H, W), (B, H, W) or
            (B, 1, H, W); 0/1 or non-negative weights.
    """

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor):
        if not isinstance(maps, torch.Tensor):
            raise TypeError(f"maps must be a torch.Tensor, got {type(maps).__name__}")
        if not maps.is_complex():
            raise TypeError(f"maps must be complex (complex64 or complex128), got dtype {maps.dtype}")
        if maps.dim() != 4:
            raise ValueError(f"maps must have shape (B, C, H, W), got {tuple(maps.shape)}")
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
        if mask.is_complex():
            raise TypeError(f"mask must be real (0/1 or weights), got complex dtype {mask.dtype}")
        batch, _, h, w = maps.shape
        if mask.dim() == 2:
            mask = mask[None, None]
        elif mask.dim() == 3:
            mask = mask[:, None]
        elif mask.dim() != 4 or mask.shape[1] != 1:
            raise ValueError(f"mask must have shape (H, W), (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
        if mask.shape[-2:] != (h, w) or mask.shape[0] not in (1, batch):
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not match maps of shape {tuple(maps.shape)}: "
                f"expected (H, W) = ({h}, {w}) and batch 1 or {batch}"
            )
        if not torch.isfinite(maps).all():
            raise ValueError("maps contain NaN or Inf")
        if not torch.isfinite(mask).all() or (mask < 0).any():
            raise ValueError("mask must be finite and non-negative")

        self.maps = maps
        self.mask = mask.to(device=maps.device, dtype=maps.real.dtype)
        self.shape = (h, w)
        self.batch = batch
        pre_h, post_h = centring_phases(h, maps.dtype, maps.device)
        pre_w, post_w = centring_phases(w, maps.dtype, maps.device)
        # Folded once: maps carry the image-side phase, the mask the k-space-side phase.
        self._maps = maps * (pre_h[:, None] * pre_w[None, :])
        self._maps_conj = self._maps.conj().resolve_conj()  # coil combination without a conj per call
        self._mask_post = self.mask * (post_h[:, None] * post_w[None, :])
        self._mask_sq = self.mask**2
        # The axis along which the mask varies, when it is constant along the other (None: a 2-D mask).
        self.line_axis = next((axis for axis, other in ((-1, -2), (-2, -1))
                               if bool((self.mask == self.mask.narrow(other, 0, 1)).all())), None)
        if self.line_axis is not None:
            other = -2 if self.line_axis == -1 else -1
            self._line_sq = self._mask_sq.narrow(other, 0, 1)

    @classmethod
    def single_coil(cls, mask: torch.Tensor, dtype: torch.dtype = torch.complex64) -> "Sense":
        """The single-coil Fourier sampling operator A = M F: one coil with unit sensitivity."""
        if not isinstance(mask, torch.Tensor) or mask.dim() < 2:
            raise TypeError(f"mask must be a tensor of shape (H, W) or (B, H, W), got {getattr(mask, 'shape', type(mask))}")
        batch = mask.shape[0] if mask.dim() >= 3 else 1
        maps = torch.ones((batch, 1, *mask.shape[-2:]), dtype=dtype, device=mask.device)
        return cls(maps, mask)

    @property
    def dtype(self) -> torch.dtype:
        return self.maps.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A x: image (B, H, W) -> undersampled centred k-space (B, C, H, W)."""
        _check_image(x, "x", self.batch, self.shape, self.dtype)
        return torch.fft.fft2(self._maps * x[:, None], norm="ortho") * self._mask_post

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^H y: k-space (B, C, H, W) -> coil-combined image (B, H, W)."""
        if not isinstance(y, torch.Tensor) or not y.is_complex():
            raise TypeError(f"y must be a complex tensor, got {getattr(y, 'dtype', type(y))}")
        if y.shape[-3:] != self.maps.shape[-3:] or y.dim() != 4:
            raise ValueError(f"y must have shape (B, C, H, W) = {tuple(self.maps.shape)}, got {tuple(y.shape)}")
        return self._combine(torch.fft.ifft2(y * self._mask_post.conj(), norm="ortho"))

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^H A x: image (B, H, W) -> image (B, H, W), without forming k-space shifts (with 1-D FFTs
        along ``line_axis`` alone when the mask is one-dimensional: see the module docstring)."""
        _check_image(x, "x", self.batch, self.shape, self.dtype)
        if self.line_axis is not None:
            k = torch.fft.fft(self._maps * x[:, None], dim=self.line_axis, norm="ortho")
            k.mul_(self._line_sq)
            return self._combine(torch.fft.ifft(k, dim=self.line_axis, norm="ortho"))
        k = torch.fft.fft2(self._maps * x[:, None], norm="ortho")
        k.mul_(self._mask_sq)
        return self._combine(torch.fft.ifft2(k, norm="ortho"))

    def _combine(self, coil_images: torch.Tensor) -> torch.Tensor:
        """sum_c conj(S_c) * image_c over coil images (B, C, H, W) that this operator just made.

        In place: the coil images are a fresh FFT output that nothing else holds, and skipping the
        temporary roughly halves the combine's time (autograd still gets it right, tested for x and maps).
        """
        return coil_images.mul_(self._maps_conj).sum(dim=1)

    __call__ = forward
