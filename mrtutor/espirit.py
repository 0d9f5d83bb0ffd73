"""Coil sensitivity maps estimated from the data: ESPIRiT (Uecker et al., MRM 2014) through sigpy.

ESPIRiT finds the coil maps as the eigenvectors, with eigenvalue 1, of an operator built from the
k-space kernels that the fully sampled centre of k-space (the calibration region) obeys. Real
scans come without maps, so a method that needs them estimates them this way, from the very
undersampled measurements it reconstructs: Darestani and Heckel's ConvDecoder-SM does, and
fastMRI files (``mrtutor.data.FastMRIDataset``) get their maps so, once per file.

sigpy's ``EspiritCalib`` takes a square calibration region of ``calib_width`` (default 24) around
the centre. Under a column mask only the central columns are fully sampled (``centre_width``): 26 of
fastMRI's 320 at 4x, but 10 of the demo tier's 128, so the region has to shrink with the mask.
"""

from __future__ import annotations

import numpy as np
import torch


def centre_width(mask: torch.Tensor) -> int:
    """Side of the largest fully sampled square centred at (H // 2, W // 2) of a mask (H, W) or (1, W)
    (a column mask): the calibration region that ESPIRiT can use."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"mask must be a tensor (H, W), got {getattr(mask, 'shape', type(mask).__name__)}")
    sampled = mask != 0
    height, width = sampled.shape
    side = 0
    for n in range(1, min(width, height if height > 1 else width) + 1):  # the squares are nested
        columns = slice(width // 2 - n // 2, width // 2 - n // 2 + n)  # sigpy's centred crop
        rows = slice(None) if height == 1 else slice(height // 2 - n // 2, height // 2 - n // 2 + n)
        if not sampled[rows, columns].all():
            break
        side = n
    return side


def maps(kspace: torch.Tensor, mask: torch.Tensor | None = None, calib_width: int | None = None,
         kernel_width: int | None = None, thresh: float = 0.02, crop: float = 0.95) -> torch.Tensor:
    """ESPIRiT coil maps (C, H, W) complex64 from centred k-space (C, H, W).

    Args:
        kspace: centred k-space of one slice (C, H, W), complex; zeros where not sampled.
        mask: the sampling mask (H, W) or (1, W); the calibration region is its fully sampled centre
            (``centre_width``), at most 24 wide (sigpy's default). Without a mask the k-space is taken
            as fully sampled and ``calib_width`` defaults to 24.
        calib_width: side of the square calibration region; must be fully sampled.
        kernel_width: side of the k-space kernels; by default half the calibration width, at most 6
            (sigpy's default). A wider kernel leaves too few calibration rows: on the demo tier's
            10-column centre at 4x, kernels of 6 lost 5-15 dB of CG-SENSE PSNR against kernels of 5.
        thresh: singular values of the calibration matrix kept, relative to the largest.
        crop: eigenvalue below which a pixel's maps are set to zero (outside the object).
    Returns:
        maps (C, H, W) complex64 on kspace's device; zero where cropped, unit sum of squares elsewhere.
    """
    if not isinstance(kspace, torch.Tensor) or not kspace.is_complex() or kspace.dim() != 3:
        raise ValueError(f"kspace must be a complex tensor (C, H, W), got "
                         f"{getattr(kspace, 'dtype', type(kspace).__name__)} {tuple(getattr(kspace, 'shape', ()))}")
    available = min(kspace.shape[-2:]) if mask is None else centre_width(mask)
    if calib_width is None:
        calib_width = min(24, available)
    if calib_width > available:
        raise ValueError(f"calib_width {calib_width} is larger than the fully sampled centre ({available} wide)")
    if kernel_width is None:
        kernel_width = min(6, calib_width // 2)
    if kernel_width < 2 or calib_width < kernel_width + 2:
        raise ValueError(f"ESPIRiT needs a calibration region at least 2 wider than its kernel (>= 2); got a "
                         f"{calib_width}-wide region and kernels of {kernel_width}. The mask's fully sampled centre "
                         f"is {available} wide")
    from sigpy.mri.app import EspiritCalib  # a dependency only of this estimate

    estimate = EspiritCalib(kspace.detach().cpu().numpy(), calib_width=calib_width, kernel_width=kernel_width,
                            thresh=thresh, crop=crop, show_pbar=False).run()
    return torch.from_numpy(np.asarray(estimate)).to(device=kspace.device, dtype=torch.complex64)
