"""Image quality metrics on magnitude images, scored image by image: PSNR, SSIM (and its local map), NMSE, SNR.

Conventions (DESIGN.md, as fastMRI): complex inputs are compared by magnitude; each image of a
batch (B, H, W) gets its own score, so every function returns a (B,) tensor (a 0-d tensor for a
single (H, W) image); ``data_range`` defaults to the maximum of each reference image. SSIM uses a
7 x 7 uniform window, K1 = 0.01, K2 = 0.03 and the sample covariance, and agrees with
``skimage.metrics.structural_similarity(ref, x, win_size=7, data_range=ref.max())``.

All arithmetic is done in float64 (SSIM subtracts nearly equal local moments) on the input's
device, and the scores are returned in float64. The functions are differentiable, so ``1 - ssim``
can serve as a training loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _prepare(x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate a pair of images and return their float64 magnitudes as (B, H, W), and whether
    the input was a single (H, W) image."""
    for name, value in (("x", x), ("ref", ref)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() not in (2, 3):
            raise ValueError(f"{name} must have shape (B, H, W) or (H, W), got {tuple(value.shape)}")
        if value.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(value.shape)})")
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or Inf")
    if x.shape != ref.shape:
        raise ValueError(f"x and ref must have the same shape, got x {tuple(x.shape)} and ref {tuple(ref.shape)}")
    single = x.dim() == 2
    # Complex images are compared by magnitude; real images as they are.
    x, ref = (v.abs() if v.is_complex() else v for v in (x, ref))
    x, ref = x.to(torch.float64), ref.to(torch.float64)
    if single:
        x, ref = x[None], ref[None]
    return x, ref, single


def _data_range(data_range, ref: torch.Tensor) -> torch.Tensor:
    """data_range as a positive (B,) float64 tensor; default: the maximum of each reference."""
    batch = ref.shape[0]
    if data_range is None:
        value = ref.flatten(1).amax(dim=1)
    else:
        value = torch.as_tensor(data_range, dtype=torch.float64, device=ref.device)
        if value.dim() > 1 or (value.dim() == 1 and value.shape[0] not in (1, batch)):
            raise ValueError(f"data_range must be a scalar or have shape (B,) = ({batch},), got {tuple(value.shape)}")
        value = value.expand(batch)
    if not (torch.isfinite(value) & (value > 0)).all():
        raise ValueError(
            f"data_range must be finite and > 0, got {value.detach().cpu().tolist()}"
            + (" (the maximum of ref; is ref all zero?)" if data_range is None else "")
        )
    return value


def _finish(score: torch.Tensor, single: bool) -> torch.Tensor:
    return score[0] if single else score


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range=None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), per image.

    Args:
        x: reconstruction (B, H, W) or (H, W), real or complex (magnitude is used).
        ref: reference of the same shape.
        data_range: scalar or (B,); default the maximum of each reference magnitude.
    Returns:
        (B,) float64 tensor (0-d for a single image). Identical images give +inf.
    """
    x, ref, single = _prepare(x, ref)
    peak = _data_range(data_range, ref)
    mse = ((x - ref) ** 2).flatten(1).mean(dim=1)
    return _finish(10 * torch.log10(peak**2 / mse), single)


def ssim_map(
    x: torch.Tensor,
    ref: torch.Tensor,
    data_range=None,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Local SSIM (Wang et al. 2004) at every position where a uniform window lies wholly inside the image.

    Local means, variances (sample covariance, ``N / (N - 1)``) and covariance come from a
    ``win_size`` box filter. ``ssim`` is the mean of this map; the map itself shows where two images
    differ in structure (say, inside the head or in the air around it).

    Args:
        x: reconstruction (B, H, W) or (H, W), real or complex (magnitude is used).
        ref: reference of the same shape; H and W must be at least ``win_size``.
        data_range: scalar or (B,); default the maximum of each reference magnitude.
        win_size: odd window side.
        k1, k2: the stabilising constants, C1 = (k1 R)^2, C2 = (k2 R)^2.
    Returns:
        (B, H - win_size + 1, W - win_size + 1) float64 tensor in [-1, 1] (without B for a single
        image); entry (i, j) belongs to the window centred on pixel (i + r, j + r), r = (win_size - 1) // 2.
    """
    x, ref, single = _prepare(x, ref)
    if not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size!r}")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"images of shape {tuple(x.shape[-2:])} are smaller than the {win_size}x{win_size} SSIM window")
    if k1 < 0 or k2 < 0:
        raise ValueError(f"k1 and k2 must be >= 0, got k1={k1}, k2={k2}")
    peak = _data_range(data_range, ref)[:, None, None]
    c1, c2 = (k1 * peak) ** 2, (k2 * peak) ** 2

    # One box filter over the five local moments at once: (B, 5, H', W').
    stack = torch.stack([x, ref, x * x, ref * ref, x * ref], dim=1)
    mu_x, mu_r, xx, rr, xr = F.avg_pool2d(stack, win_size, stride=1).unbind(dim=1)
    cov_norm = win_size**2 / (win_size**2 - 1)
    var_x = cov_norm * (xx - mu_x**2)
    var_r = cov_norm * (rr - mu_r**2)
    cov = cov_norm * (xr - mu_x * mu_r)
    ssim_local = ((2 * mu_x * mu_r + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_r**2 + c1) * (var_x + var_r + c2))
    return _finish(ssim_local, single)


def ssim(
    x: torch.Tensor,
    ref: torch.Tensor,
    data_range=None,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with a uniform window, per image: the mean of ``ssim_map``.

    Averaging over the positions where the window lies wholly inside the image is skimage's default:
    it filters the whole image, then drops a border of ``(win_size - 1) // 2`` before averaging.

    Args:
        the same as ``ssim_map``.
    Returns:
        (B,) float64 tensor in [-1, 1] (0-d for a single image).
    """
    local = ssim_map(x, ref, data_range, win_size, k1, k2)
    return local.flatten(-2).mean(dim=-1)


def nmse(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Normalised mean squared error ||x - ref||^2 / ||ref||^2 per image (fastMRI's NMSE).

    Args:
        x: reconstruction (B, H, W) or (H, W), real or complex (magnitude is used).
        ref: reference of the same shape, not all zero.
    Returns:
        (B,) float64 tensor (0-d for a single image).
    """
    x, ref, single = _prepare(x, ref)
    energy = (ref**2).flatten(1).sum(dim=1)
    if (energy == 0).any():
        raise ValueError("ref is all zero in at least one image: NMSE is undefined")
    return _finish(((x - ref) ** 2).flatten(1).sum(dim=1) / energy, single)


def nmse_db(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """NMSE in decibels, 10 log10(nmse), as the SGP paper reports it (lower is better)."""
    return 10 * torch.log10(nmse(x, ref))


def snr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio in dB, 20 log10(||ref|| / ||x - ref||) per image, as Neural PGD reports it
    (Mardani et al. 2018, Table 1): the negative of ``nmse_db``, higher is better."""
    return -nmse_db(x, ref)
