"""Image quality metrics on magnitude images, scored image by image: PSNR, SSIM (and its local map),
MS-SSIM, VIF, NMSE, SNR; and the normalisations that come before them.

Conventions (DESIGN.md, as fastMRI): complex inputs are compared by magnitude; each image of a
batch (B, H, W) gets its own score, so every function returns a (B,) tensor (a 0-d tensor for a
single (H, W) image); ``data_range`` defaults to the maximum of each reference image. SSIM uses a
7 x 7 uniform window, K1 = 0.01, K2 = 0.03 and the sample covariance, and agrees with
``skimage.metrics.structural_similarity(ref, x, win_size=7, data_range=ref.max())``.

Image-based or volume-based scores (Darestani and Heckel 2021, Section 5 and Appendix A): with
``volume=True`` the batch (B, H, W) is taken as the B slices of one volume, and every statistic a
metric takes from the images (the default data range, VIF's default noise variance, the means,
standard deviations, minima and maxima of ``normalise``) is taken over the whole volume instead of
slice by slice. The scores stay per slice, (B,); average them for the volume (fastMRI's volume PSNR
pools the squared error over the volume instead, which weighs the slices differently). The paper scores
image by image (the default here) and shows that the two give very different numbers (its Table 1),
and that the normalisation alone can change which method wins (its Table 8).

All arithmetic is done in float64 (SSIM subtracts nearly equal local moments) on the input's
device, and the scores are returned in float64. The functions are differentiable, so ``1 - ssim``
can serve as a training loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Wang et al. 2003's exponents for the five scales, finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

NORMALISATIONS = ("mean_std_ref", "mean_std", "min_max")

# VIF's threshold for "no local variance", as in Sheikh and Bovik's code (absolute, in squared intensity).
_VIF_EPS = 1e-10


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


def _statistic(images: torch.Tensor, name: str, volume: bool) -> torch.Tensor:
    """``name`` ("max", "min", "mean" or "std", the population std) of each image of (B, H, W) as
    (B,), or with ``volume`` of the whole batch, repeated B times."""
    flat = images.reshape(1, -1) if volume else images.flatten(1)
    if name == "max":
        value = flat.amax(dim=1)
    elif name == "min":
        value = flat.amin(dim=1)
    elif name == "mean":
        value = flat.mean(dim=1)
    else:
        value = flat.std(dim=1, correction=0)
    return value.expand(images.shape[0])


def _per_image(name: str, value, default: torch.Tensor, default_is: str) -> torch.Tensor:
    """A user's scalar or (B,) ``value`` as a positive (B,) float64 tensor; ``default`` (B,) where it is None."""
    batch = default.shape[0]
    if value is None:
        result = default
    else:
        result = torch.as_tensor(value, dtype=torch.float64, device=default.device)
        if result.dim() > 1 or (result.dim() == 1 and result.shape[0] not in (1, batch)):
            raise ValueError(f"{name} must be a scalar or have shape (B,) = ({batch},), got {tuple(result.shape)}")
        result = result.expand(batch)
    if not (torch.isfinite(result) & (result > 0)).all():
        raise ValueError(
            f"{name} must be finite and > 0, got {result.detach().cpu().tolist()}"
            + (f" ({default_is})" if value is None else "")
        )
    return result


def _data_range(data_range, ref: torch.Tensor, volume: bool) -> torch.Tensor:
    """data_range as a positive (B,) float64 tensor; default: the maximum of each reference (or of the volume)."""
    return _per_image("data_range", data_range, _statistic(ref, "max", volume), "the maximum of ref; is ref all zero?")


def _finish(score: torch.Tensor, single: bool) -> torch.Tensor:
    return score[0] if single else score


def _gaussian(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps; its outer product with itself is the 2-D window."""
    t = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(images: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """'valid' separable filtering of (B, C, H, W) with the 2-D window ``taps`` x ``taps``:
    (B, C, H - k + 1, W - k + 1), one output per window lying wholly inside the image."""
    b, c, h, w = images.shape
    out = F.conv2d(images.reshape(b * c, 1, h, w), taps.view(1, 1, -1, 1))
    out = F.conv2d(out, taps.view(1, 1, 1, -1))
    return out.reshape(b, c, *out.shape[-2:])


def _ssim_terms(
    x: torch.Tensor, ref: torch.Tensor, peak: torch.Tensor, taps: torch.Tensor, k1: float, k2: float, cov_norm: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM's local luminance term and contrast-structure term, each (B, H', W'), of two (B, H, W)
    images under the window ``taps`` x ``taps``; ``cov_norm`` scales the local (co)variances."""
    c1, c2 = (k1 * peak[:, None, None]) ** 2, (k2 * peak[:, None, None]) ** 2
    # One filter pass over the five local moments at once: (B, 5, H', W').
    stack = torch.stack([x, ref, x * x, ref * ref, x * ref], dim=1)
    mu_x, mu_r, xx, rr, xr = _filter(stack, taps).unbind(dim=1)
    var_x = cov_norm * (xx - mu_x**2)
    var_r = cov_norm * (rr - mu_r**2)
    cov = cov_norm * (xr - mu_x * mu_r)
    luminance = (2 * mu_x * mu_r + c1) / (mu_x**2 + mu_r**2 + c1)
    contrast_structure = (2 * cov + c2) / (var_x + var_r + c2)
    return luminance, contrast_structure


def _check_constants(k1: float, k2: float) -> None:
    if k1 < 0 or k2 < 0:
        raise ValueError(f"k1 and k2 must be >= 0, got k1={k1}, k2={k2}")


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range=None, *, volume: bool = False) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), per image.

    Args:
        x: reconstruction (B, H, W) or (H, W), real or complex (magnitude is used).
        ref: reference of the same shape.
        data_range: scalar or (B,); default the maximum of each reference magnitude.
        volume: default data range from the whole batch as one volume (the module docstring).
    Returns:
        (B,) float64 tensor (0-d for a single image). Identical images give +inf.
    """
    x, ref, single = _prepare(x, ref)
    peak = _data_range(data_range, ref, volume)
    mse = ((x - ref) ** 2).flatten(1).mean(dim=1)
    return _finish(10 * torch.log10(peak**2 / mse), single)


def ssim_map(
    x: torch.Tensor,
    ref: torch.Tensor,
    data_range=None,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
    *,
    volume: bool = False,
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
        volume: default data range from the whole batch as one volume (the module docstring).
    Returns:
        (B, H - win_size + 1, W - win_size + 1) float64 tensor in [-1, 1] (without B for a single
        image); entry (i, j) belongs to the window centred on pixel (i + r, j + r), r = (win_size - 1) // 2.
    """
    x, ref, single = _prepare(x, ref)
    if not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size!r}")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"images of shape {tuple(x.shape[-2:])} are smaller than the {win_size}x{win_size} SSIM window")
    _check_constants(k1, k2)
    peak = _data_range(data_range, ref, volume)
    box = torch.full((win_size,), 1 / win_size, dtype=x.dtype, device=x.device)
    luminance, contrast_structure = _ssim_terms(x, ref, peak, box, k1, k2, win_size**2 / (win_size**2 - 1))
    return _finish(luminance * contrast_structure, single)


def ssim(
    x: torch.Tensor,
    ref: torch.Tensor,
    data_range=None,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
    *,
    volume: bool = False,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with a uniform window, per image: the mean of ``ssim_map``.

    Averaging over the positions where the window lies wholly inside the image is skimage's default:
    it filters the whole image, then drops a border of ``(win_size - 1) // 2`` before averaging.

    Args:
        the same as ``ssim_map``.
    Returns:
        (B,) float64 tensor in [-1, 1] (0-d for a single image).
    """
    local = ssim_map(x, ref, data_range, win_size, k1, k2, volume=volume)
    return local.flatten(-2).mean(dim=-1)


def ms_ssim(
    x: torch.Tensor,
    ref: torch.Tensor,
    data_range=None,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    *,
    volume: bool = False,
) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003), per image: prod_j cs_j^w_j, times l_M^w_M at the coarsest scale.

    At scale j = 1..M (M = ``len(weights)``) both images are filtered with a ``win_size`` Gaussian
    window of std ``sigma`` (the population covariance, as in the paper, not ``ssim``'s sample one);
    cs_j is the mean of SSIM's contrast-structure term over the positions where the window lies
    wholly inside the image (as ``ssim`` averages), and l_M, at the last scale only, the mean
    luminance term, so the last factor is that scale's SSIM. Between scales the images are halved by
    2 x 2 average pooling (an odd last row or column is dropped). The constants use the full-size
    ``data_range`` at every scale. A negative cs_j (anti-correlated images) is set to 0 before the
    fractional power, as pytorch_msssim and torchmetrics do, so the score lies in [0, 1].

    torchmetrics' ``multiscale_structural_similarity_index_measure`` differs in one place: it
    averages the coarsest scale's SSIM over the whole image with reflected borders, so the two differ
    by up to about 0.02 on images near the smallest allowed size (176 x 176); built from its SSIM
    pieces with this definition, it agrees to 1e-12 (tests/test_metrics.py).

    Args:
        x: reconstruction (B, H, W) or (H, W), real or complex (magnitude is used).
        ref: reference of the same shape; H and W at least ``win_size * 2^(M - 1)`` (176 for the default).
        data_range: scalar or (B,); default the maximum of each reference magnitude.
        weights: the exponents w_1..w_M, finest scale first; default Wang et al.'s five.
        win_size: odd Gaussian window side.
        sigma: the Gaussian's std in pixels.
        k1, k2: the stabilising constants, C1 = (k1 R)^2, C2 = (k2 R)^2.
        volume: default data range from the whole batch as one volume (the module docstring).
    Returns:
        (B,) float64 tensor in [0, 1] (0-d for a single image).
    """
    x, ref, single = _prepare(x, ref)
    weights = tuple(weights)
    if not weights or any(not w > 0 for w in weights):
        raise ValueError(f"weights must be a non-empty sequence of positive numbers, got {weights!r}")
    if not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    _check_constants(k1, k2)
    smallest = win_size * 2 ** (len(weights) - 1)
    if min(x.shape[-2:]) < smallest:
        raise ValueError(
            f"images of shape {tuple(x.shape[-2:])} are too small for MS-SSIM with {len(weights)} scales and a "
            f"{win_size}x{win_size} window: H and W must be at least {smallest}"
        )
    peak = _data_range(data_range, ref, volume)
    taps = _gaussian(win_size, sigma, x)
    score = torch.ones_like(peak)
    for scale, weight in enumerate(weights):
        if scale > 0:
            x, ref = F.avg_pool2d(torch.stack([x, ref], dim=1), 2).unbind(dim=1)
        luminance, contrast_structure = _ssim_terms(x, ref, peak, taps, k1, k2, 1.0)
        last = scale == len(weights) - 1
        term = (luminance * contrast_structure) if last else contrast_structure
        score = score * term.flatten(1).mean(dim=1).clamp(min=0) ** weight
    return _finish(score, single)


def vif(x: torch.Tensor, ref: torch.Tensor, sigma_nsq=None, *, volume: bool = False) -> torch.Tensor:
    """Pixel-domain multi-scale visual information fidelity (Sheikh and Bovik 2006, their ``vifp_mscale``), per image.

    At scale s = 1..4 a Gaussian window of side N = 2^(5 - s) + 1 (17, 9, 5, 3) and std N / 5 gives
    local variances of the reference, var_r, and of x, and their covariance; x is modelled as
    g ref + v, a local gain g and additive noise of variance var_v, both seen through a visual noise
    of variance ``sigma_nsq``. VIF = sum log10(1 + g^2 var_r / (var_v + sigma_nsq)) over
    sum log10(1 + var_r / sigma_nsq), both summed over positions and scales: the information x
    keeps of ref, relative to the information in ref. 1 for identical images, lower for blur and
    noise, above 1 possible for contrast enhancement. From one scale to the next both images are
    filtered with the next scale's window and every other row and column is kept. All filtering is
    'valid' (no padding), as in the original MATLAB code and torchmetrics, so H and W must be at
    least 41. The original's special cases are kept: where var_r < 1e-10, g = 0 and var_v is the
    variance of x; where the variance of x < 1e-10, g = var_v = 0; a negative g is set to 0 with
    var_v the variance of x; var_v is at least 1e-10.

    Darestani and Heckel (MLI-lab/ConvDecoder) call ``vifp_mscale(gt, rec, sigma_nsq=rec.mean())``,
    the noise variance being the mean intensity of the reconstruction; that is the default here. VIF
    is not invariant to the intensity scale: the 1e-10 thresholds are absolute, and the noise
    variance is in squared intensity units (a number) or in intensity units (the mean), so score
    images on one scale, for example after ``normalise``. A mean-std normalised x has mean 0 and
    needs a number. Their code is a Python port that filters with scipy.ndimage.gaussian_filter
    (reflected borders, a window cut at 4 std, so wider than N) and so gives different numbers: a few
    1e-3 apart on 320 x 320 images, a few 1e-2 on 64 x 64 ones. piq's ``vif_p`` rescales its inputs to 0-255 and refuses mean-std-normalised (negative) inputs.

    Unlike torchmetrics' ``visual_information_fidelity``, whose in-place masking has no working
    backward pass, this one is differentiable.

    Args:
        x: reconstruction (distorted image) (B, H, W) or (H, W), real or complex (magnitude is used).
        ref: reference of the same shape, H and W at least 41. The order matters: VIF is not symmetric.
        sigma_nsq: the visual noise variance, scalar or (B,), > 0; default the mean of each x (with
            ``volume``, of the whole volume).
        volume: default noise variance from the whole batch as one volume (the module docstring).
    Returns:
        (B,) float64 tensor (0-d for a single image).
    """
    x, ref, single = _prepare(x, ref)
    if min(x.shape[-2:]) < 41:
        raise ValueError(f"images of shape {tuple(x.shape[-2:])} are too small for VIF: H and W must be at least 41")
    noise = _per_image("sigma_nsq", sigma_nsq, _statistic(x, "mean", volume), "the mean of x")[:, None, None]
    num = x.new_zeros(x.shape[0])
    den = x.new_zeros(x.shape[0])
    for scale in range(4):
        n = 2 ** (4 - scale) + 1
        taps = _gaussian(n, n / 5, x)
        if scale > 0:
            ref, x = _filter(torch.stack([ref, x], dim=1), taps)[..., ::2, ::2].unbind(dim=1)
        stack = torch.stack([ref, x, ref * ref, x * x, ref * x], dim=1)
        mu_r, mu_x, rr, xx, rx = _filter(stack, taps).unbind(dim=1)
        var_r = (rr - mu_r**2).clamp(min=0)
        var_x = (xx - mu_x**2).clamp(min=0)
        cov = rx - mu_r * mu_x
        gain = cov / (var_r + _VIF_EPS)
        var_v = var_x - gain * cov
        # torch.where rather than in-place masking keeps the graph differentiable.
        flat_ref = var_r < _VIF_EPS
        gain = torch.where(flat_ref, 0.0, gain)
        var_v = torch.where(flat_ref, var_x, var_v)
        var_r = torch.where(flat_ref, 0.0, var_r)
        flat_x = var_x < _VIF_EPS
        gain = torch.where(flat_x, 0.0, gain)
        var_v = torch.where(flat_x, 0.0, var_v)
        var_v = torch.where(gain < 0, var_x, var_v)
        gain = gain.clamp(min=0)
        var_v = var_v.clamp(min=_VIF_EPS)
        num = num + torch.log10(1 + gain**2 * var_r / (var_v + noise)).flatten(1).sum(dim=1)
        den = den + torch.log10(1 + var_r / noise).flatten(1).sum(dim=1)
    if (den == 0).any():
        raise ValueError("ref has no local variance in at least one image (is it constant?): VIF is undefined")
    return _finish(num / den, single)


def normalise(
    x: torch.Tensor, ref: torch.Tensor, how: str = "mean_std_ref", *, volume: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The image normalisations of Darestani and Heckel 2021 (Appendix A), to apply before scoring.

    - ``"mean_std_ref"`` (their choice, and the default): only the reference changes, to match the
      mean and std of the reconstruction: ref' = (ref - mean(ref)) / std(ref) * std(x) + mean(x)
      (as in MLI-lab/ConvDecoder). x is returned unchanged.
    - ``"mean_std"``: both images to mean 0 and std 1, I' = (I - mean(I)) / std(I).
    - ``"min_max"``: both images to [0, 1], I' = (I - min(I)) / (max(I) - min(I)).

    std is the population std (numpy's default, as the authors' code). With ``volume`` the
    statistics are those of the whole batch as one volume, so the slices keep their relative
    intensities. Their Table 8 shows the normalisation alone can change which method scores best.
    ``psnr(*normalise(x, ref))`` scores the normalised pair; mind that the default data range is then
    the maximum of the normalised reference, and that after ``"mean_std"`` images have negative values
    (VIF then needs a numeric ``sigma_nsq``).

    Args:
        x: reconstruction (B, H, W) or (H, W), real or complex (magnitude is used).
        ref: reference of the same shape.
        how: one of ``NORMALISATIONS``.
        volume: statistics over the whole batch as one volume (the module docstring).
    Returns:
        (x', ref'), float64 magnitude images of the input's shape, in the order given.
    """
    if how not in NORMALISATIONS:
        raise ValueError(f"how must be one of {NORMALISATIONS}, got {how!r}")
    x, ref, single = _prepare(x, ref)

    def stat(images: torch.Tensor, name: str) -> torch.Tensor:
        return _statistic(images, name, volume)[:, None, None]

    def spread(images: torch.Tensor, label: str) -> torch.Tensor:
        value = stat(images, "max") - stat(images, "min") if how == "min_max" else stat(images, "std")
        if (value == 0).any():
            raise ValueError(f"{label} is constant in at least one image: {how!r} normalisation divides by its spread")
        return value

    if how == "mean_std_ref":
        ref = (ref - stat(ref, "mean")) / spread(ref, "ref") * stat(x, "std") + stat(x, "mean")
    elif how == "mean_std":
        x, ref = ((v - stat(v, "mean")) / spread(v, label) for v, label in ((x, "x"), (ref, "ref")))
    else:
        x, ref = ((v - stat(v, "min")) / spread(v, label) for v, label in ((x, "x"), (ref, "ref")))
    return _finish(x, single), _finish(ref, single)


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
