"""Un-trained networks for accelerated MRI (Darestani and Heckel 2021): ConvDecoder, Deep Decoder, DIP.

An un-trained network G maps a fixed random input z to an image; its weights C are the unknowns,
fitted to one scan's measurements alone, with no training data (Sec. 3):

* without coil maps (eq. 3, eq. 2 for one coil), G has 2 x coils output channels, the real and
  imaginary parts of every coil image, and the loss is 1/2 sum_i ||y_i - M F G_i(C)||^2;
* with coil maps S (eq. 4, "ConvDecoder-SM"), G has 2 channels, one complex image x, and the loss is
  1/2 sum_i ||y_i - M F S_i G(C)||^2.

After the fit, the measured k-space entries replace the network's (data consistency, Step 2), and
the coil images are combined: root-sum-of-squares (eq. 1) without maps, sum_i conj(S_i) x_i with
them. Averaging the images of k fits from independent initialisations improves them further
(Sec. 6, ``average_fits``).

Details from the authors' code (github.com/MLI-lab/ConvDecoder, ``include/decoder_conv.py``,
``include/fit.py``, ``include/mri_helpers.py``), carried over here:

* The ConvDecoder's block is nearest-neighbour upsampling, a 3 x 3 convolution, ReLU and an affine
  batch norm, in that order; after the last upsampling comes one more convolution + ReLU + BN, then a
  1 x 1 convolution to the output channels with no nonlinearity; no convolution has a bias.
* The spatial sizes grow geometrically from the input's to the image's (``hidden_sizes``). The
  input is drawn uniformly in [0, 1) and has 8 x 4 pixels (the paper's Appendix B.1 says Gaussian
  and 10 x 5).
* Before fitting, the k-space is multiplied by ||RSS(G(z))|| / ||RSS(F^-1 y)||, so that the
  untouched network's output already has the data's scale (``scale_factor``). The authors compute it
  from the fully sampled k-space; here it comes from the measured (zero-filled) k-space, which is
  all a reconstruction has. The image is divided by it at the end.
* The loss is the mean squared error of the masked, centred, orthonormal FFT of the output against
  the masked k-space, minimised by Adam at a constant rate (0.008 in the code, 0.01 in the paper's
  Appendix B.1). The output is kept whenever the loss falls below best / 1.005, and the last one kept
  is the result. (The code keeps the network after the step that computed that loss; here the
  output is kept together with its own loss.)
* The experiments fit 7 or 8 layers of 160 channels for 20,000 - 25,000 iterations; Table 10 of the
  paper lists 8 layers of 256 channels.

The networks normalise with the statistics of their one input in the fit and at the end alike
(``track_running_stats=False``): a network that is only ever run on z has no other statistics.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from mrtutor.fft import fft2c, ifft2c, rss

NETS = ("convdecoder", "deepdecoder", "dip")

# Keep an output only when the loss improves on the best by more than half a percent (the authors' rule).
_IMPROVEMENT = 1.005


def _pair(value, name: str) -> tuple[int, int]:
    """A (H, W) pair of positive ints."""
    pair = tuple(value) if isinstance(value, (tuple, list, torch.Size)) else None
    if pair is None or len(pair) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in pair):
        raise ValueError(f"{name} must be a pair of positive integers (H, W), got {value!r}")
    return pair


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def hidden_sizes(in_size, out_size, layers: int) -> list[tuple[int, int]]:
    """The spatial sizes after each of the ``layers - 1`` upsamplings of a decoder.

    Per dimension the sizes grow by the factor s = (out / in)^(1 / (layers - 1)):
    size_n = ceil(s^n in) for n = 1, ..., layers - 2, and the last one is ``out_size`` itself (the
    authors' schedule).

    Args:
        in_size: (h, w) of the network's input.
        out_size: (H, W) of the image, at least ``in_size`` in each dimension.
        layers: the decoder's layers, >= 2.
    Returns:
        list of ``layers - 1`` pairs (h_n, w_n).
    """
    in_size, out_size = _pair(in_size, "in_size"), _pair(out_size, "out_size")
    _check_int(layers, "layers", 2)
    if any(i > o for i, o in zip(in_size, out_size)):
        raise ValueError(f"in_size {in_size} must not exceed out_size {out_size}: a decoder only upsamples")
    scales = [(o / i) ** (1 / (layers - 1)) for i, o in zip(in_size, out_size)]
    grown = [tuple(math.ceil(s**n * i) for s, i in zip(scales, in_size)) for n in range(1, layers - 1)]
    return grown + [out_size]


def _norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, track_running_stats=False)


class _Decoder(nn.Module):
    """[upsample -> conv -> ReLU -> BN] x (layers - 1), then conv -> ReLU -> BN, then a 1 x 1
    convolution to ``out_channels``; the input z (1, channels, h, w) is a fixed buffer drawn
    uniformly in [0, 1) when the network is built (seed torch's generator to fix it)."""

    def __init__(self, out_size, out_channels: int, layers: int, channels: int, in_size, kernel_size: int,
                 mode: str):
        super().__init__()
        _check_int(out_channels, "out_channels", 1)
        _check_int(channels, "channels", 1)

        def block() -> list[nn.Module]:
            conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=False)
            return [conv, nn.ReLU(), _norm(channels)]

        modules: list[nn.Module] = []
        for size in hidden_sizes(in_size, out_size, layers):
            modules += [nn.Upsample(size=size, mode=mode), *block()]
        modules += [*block(), nn.Conv2d(channels, out_channels, 1, bias=False)]
        self.net = nn.Sequential(*modules)
        self.register_buffer("z", torch.rand(1, channels, *_pair(in_size, "in_size")))

    def forward(self) -> torch.Tensor:
        """G(z): (out_channels, H, W)."""
        return self.net(self.z)[0]


class ConvDecoder(_Decoder):
    """The ConvDecoder (Sec. 4, Fig. 1): nearest-neighbour upsampling and 3 x 3 convolutions.

    Args:
        out_size: (H, W) of the image.
        out_channels: 2 x coils without coil maps, 2 with them (real and imaginary parts).
        layers: upsampling layers + 1 (the authors' ``num_layers``); 7 as in the authors' 4x knee runs.
        channels: channels of every hidden layer; 160 as in those runs (the paper's Table 10: 256).
        in_size: (h, w) of the fixed input; (8, 4) as in the authors' code.
    The output is (out_channels, H, W). With 15 coils the authors' 7 x 160 network has 1,619,840
    parameters and the 8 x 256 one 4,730,368 (batch norms' scales and shifts included).
    """

    def __init__(self, out_size, out_channels: int, layers: int = 7, channels: int = 160, in_size=(8, 4)):
        super().__init__(out_size, out_channels, layers, channels, in_size, kernel_size=3, mode="nearest")


class DeepDecoder(_Decoder):
    """The Deep Decoder (Heckel and Hand 2019) as compared in the paper: bilinear upsampling and
    1 x 1 convolutions, the ConvDecoder's skeleton otherwise.

    A 1 x 1 convolution mixes channels and upsampling mixes pixels, so the two commute and the order
    within a block does not matter. The sizes follow ``hidden_sizes`` here, so that any image size
    works (the original doubles the size at each layer).

    Args:
        out_size, out_channels, in_size: as ``ConvDecoder``.
        layers, channels: 10 and 64, the choice of the paper's Table 11 (4x brain); Table 10 (4x knee)
            lists 10 and 368.
    """

    def __init__(self, out_size, out_channels: int, layers: int = 10, channels: int = 64, in_size=(8, 4)):
        super().__init__(out_size, out_channels, layers, channels, in_size, kernel_size=1, mode="bilinear")


def _conv_bn(c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel_size, stride, padding=kernel_size // 2, bias=False), _norm(c_out),
            nn.LeakyReLU(0.2)]


class DIP(nn.Module):
    """The Deep Image Prior's encoder-decoder with skip connections (Ulyanov, Vedaldi and Lempitsky 2018).

    ``layers // 2`` levels. Level l halves the size with a strided 3 x 3 convolution and then
    convolves again (3 x 3), each followed by BN and a leaky ReLU (slope 0.2); its skip connection is
    a 1 x 1 convolution to ``skip_channels``. On the way back, the deeper result is upsampled
    (bilinear) to the level's size, joined to the skip, normalised, and passed through a 3 x 3 and a
    1 x 1 convolution (each with BN and leaky ReLU). A last 1 x 1 convolution makes the output. The
    input z (1, in_channels, H, W) is uniform in [0, 0.1), drawn when the network is built.

    Args:
        out_size: (H, W) of the image.
        out_channels: 2 x coils without coil maps, 2 with them.
        layers: encoder + decoder layers, even, >= 2. Default 12, the paper's Table 11 (4x brain;
            Table 10, 4x knee: 16).
        channels: channels of every level; 64 (Table 11; Table 10: 256).
        skip_channels: channels of each skip connection, the tables' "residuals"; 4 (Table 11;
            Table 10: 2).
        in_channels: channels of z; 32 as in the DIP paper.
    The output is (out_channels, H, W). Each level halves the size (rounding up); the deepest must
    keep more than one pixel, since batch norm needs more than one value per channel.
    """

    def __init__(self, out_size, out_channels: int, layers: int = 12, channels: int = 64, skip_channels: int = 4,
                 in_channels: int = 32):
        super().__init__()
        out_size = _pair(out_size, "out_size")
        if _check_int(layers, "layers", 2) % 2:
            raise ValueError(f"layers must be even (half encoder, half decoder), got {layers}")
        for value, name in ((out_channels, "out_channels"), (channels, "channels"), (skip_channels, "skip_channels"),
                            (in_channels, "in_channels")):
            _check_int(value, name, 1)
        levels = layers // 2
        deepest = [math.ceil(n / 2**levels) for n in out_size]
        if deepest[0] * deepest[1] < 2:
            raise ValueError(f"{levels} levels shrink a {out_size} image to {deepest[0]} x {deepest[1]}: "
                             "use fewer layers")
        self.down = nn.ModuleList()
        self.skip = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in range(levels):
            c_in = in_channels if level == 0 else channels
            self.down.append(nn.Sequential(*_conv_bn(c_in, channels, 3, stride=2), *_conv_bn(channels, channels, 3)))
            self.skip.append(nn.Sequential(*_conv_bn(c_in, skip_channels, 1)))
            self.up.append(nn.Sequential(_norm(channels + skip_channels), *_conv_bn(channels + skip_channels, channels, 3),
                                         *_conv_bn(channels, channels, 1)))
        self.out = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.register_buffer("z", 0.1 * torch.rand(1, in_channels, *out_size))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        deeper = self.down[level](x)
        if level + 1 < len(self.down):
            deeper = self._level(level + 1, deeper)
        deeper = nn.functional.interpolate(deeper, size=x.shape[-2:], mode="bilinear")
        return self.up[level](torch.cat([self.skip[level](x), deeper], dim=1))

    def forward(self) -> torch.Tensor:
        """G(z): (out_channels, H, W)."""
        return self.out(self._level(0, self.z))[0]


_NETWORKS = {"convdecoder": ConvDecoder, "deepdecoder": DeepDecoder, "dip": DIP}


def scale_factor(images: torch.Tensor, kspace: torch.Tensor) -> float:
    """s = ||RSS(images)|| / ||RSS(F^-1 kspace)||, the factor that brings the k-space to the scale
    of an untouched network's output.

    The norm of a root-sum-of-squares image is the norm of all coil images together, and the
    orthonormal FFT keeps norms, so s = ||images|| / ||kspace||.

    Args:
        images: the network's complex image(s), (C', H, W) coil images or one (H, W) image.
        kspace: measured k-space (C, H, W), zeros where nothing was measured.
    Returns:
        s as a float.
    """
    if not isinstance(images, torch.Tensor) or not isinstance(kspace, torch.Tensor):
        raise TypeError("images and kspace must be torch tensors")
    measured = torch.linalg.vector_norm(kspace).item()
    if not measured > 0:
        raise ValueError("the measured k-space is all zero: there is nothing to fit")
    return torch.linalg.vector_norm(images).item() / measured


def data_consistency(images: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor,
                     maps: torch.Tensor | None = None) -> torch.Tensor:
    """The k-space of the network's images with the measured entries put back (Step 2).

    Args:
        images: complex coil images (C, H, W), or one complex image (H, W) when ``maps`` are given.
        kspace: measured k-space (C, H, W).
        mask: 0/1 mask broadcastable to (H, W); its ones are the measured entries.
        maps: optional coil sensitivities (C, H, W).
    Returns:
        (C, H, W) k-space: ``kspace`` where the mask is 1, F(images) (or F(maps images)) elsewhere.
    """
    estimate = fft2c(images if maps is None else maps * images)
    return torch.where(mask.to(torch.bool), kspace, estimate)


def _check_problem(kspace, mask, maps) -> torch.Tensor:
    """Validate the inputs of ``fit``; returns the mask as a bool (H, W) tensor on kspace's device."""
    if not isinstance(kspace, torch.Tensor) or not kspace.is_complex():
        raise ValueError(f"kspace must be a complex tensor (C, H, W), got {getattr(kspace, 'dtype', type(kspace))}")
    if kspace.dim() != 3 or kspace.numel() == 0:
        raise ValueError(f"kspace must have shape (C, H, W), got {tuple(kspace.shape)}")
    if not torch.isfinite(kspace).all():
        raise ValueError("kspace contains NaN or Inf")
    shape = tuple(kspace.shape[-2:])
    if not isinstance(mask, torch.Tensor) or mask.is_complex():
        raise ValueError(f"mask must be a real tensor broadcastable to (H, W) = {shape}, got {type(mask).__name__}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, shape) == shape
    except RuntimeError:
        broadcast = False
    if not broadcast:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to (H, W) = {shape}")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must hold 0s and 1s: data consistency replaces the measured entries")
    if not mask.any():
        raise ValueError("mask is all zero: nothing was measured")
    if maps is not None:
        if not isinstance(maps, torch.Tensor) or not maps.is_complex():
            raise ValueError(f"maps must be a complex tensor (C, H, W), got {getattr(maps, 'dtype', type(maps))}")
        if maps.shape != kspace.shape:
            raise ValueError(f"maps of shape {tuple(maps.shape)} must match kspace of shape {tuple(kspace.shape)}")
    return mask.to(kspace.device, torch.bool).expand(shape)


def _build(net: str, out_size: tuple[int, int], out_channels: int, sizes: dict) -> nn.Module:
    if net not in _NETWORKS:
        raise ValueError(f"net must be one of {NETS}, got {net!r}")
    cls = _NETWORKS[net]
    allowed = [name for name in inspect.signature(cls).parameters if name not in ("out_size", "out_channels")]
    unknown = sorted(set(sizes) - set(allowed))
    if unknown:
        raise ValueError(f"{net} takes the sizes {allowed}, got unknown {unknown}")
    return cls(out_size, out_channels, **sizes)


@dataclass
class FitInfo:
    """What a fit did: ``loss`` (iterations,) the training loss of every iteration's output,
    ``best_iteration`` the iteration whose output was kept, ``scale`` the k-space's factor
    (``scale_factor``), ``time_s`` the wall time in seconds."""

    loss: torch.Tensor
    best_iteration: int
    scale: float
    time_s: float


def fit(kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None = None, net: str = "convdecoder",
        iterations: int = 20000, seed: int = 0, lr: float = 0.008, crop=None, return_info: bool = False,
        monitor=None, monitor_every: int = 100, **sizes):
    """Reconstruct one scan by fitting an un-trained network to its measurements.

    Builds the network (``net``) with the seed ``seed``, scales the k-space by ``scale_factor``,
    runs ``iterations`` Adam steps on the masked k-space's mean squared error, keeps the output
    whenever the loss falls below best / 1.005, puts the measured k-space back into the kept output
    (``data_consistency``), combines the coils and undoes the scaling.

    Args:
        kspace: measured k-space (C, H, W), complex, centred (DC at (H // 2, W // 2)); entries where
            the mask is 0 are ignored. C = 1 is single-coil imaging (eq. 2).
        mask: 0/1 sampling mask broadcastable to (H, W).
        maps: optional coil sensitivities (C, H, W) with unit sum of squares. With them the network
            makes one complex image x and the forward model is M F (S x) (eq. 4); without them it
            makes the C coil images (eq. 3).
        net: ``"convdecoder"``, ``"deepdecoder"`` or ``"dip"``.
        iterations: Adam steps, >= 1 (the authors run 20,000 - 25,000).
        seed: seeds the network's input and initial weights; the fit is otherwise deterministic.
        lr: Adam's constant step size (0.008 in the authors' code).
        crop: optional (h, w): return the centred h x w part of the image.
        return_info: also return a ``FitInfo``.
        monitor: optional ``monitor(iteration, image)``, called after the Adam steps 0, ``monitor_every``,
            2 ``monitor_every``, ... and after the last one, with the image the fit would return if it
            stopped there and kept that step's output (data consistency, coil combination and crop
            done): the way to watch the image, not the loss, while the network overfits.
        monitor_every: steps between two calls of ``monitor``, >= 1.
        **sizes: the network's sizes (``layers``, ``channels``, ``in_size``; for the DIP
            ``skip_channels``, ``in_channels``); the network's defaults otherwise.
    Returns:
        (H, W) image (or (h, w) with ``crop``) on kspace's device: the root-sum-of-squares magnitude
        (real) without maps, the coil-combined complex image with maps; and a ``FitInfo`` when
        ``return_info``.
    """
    start = time.perf_counter()
    mask = _check_problem(kspace, mask, maps)
    out_size = tuple(kspace.shape[-2:])
    _check_int(iterations, "iterations", 1)
    _check_int(seed, "seed", 0)
    _check_int(monitor_every, "monitor_every", 1)
    if monitor is not None and not callable(monitor):
        raise ValueError(f"monitor must be callable as monitor(iteration, image), got {monitor!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if crop is not None and any(c > n for c, n in zip(_pair(crop, "crop"), out_size)):
        raise ValueError(f"crop {tuple(crop)} is larger than the image {out_size}")
    coils = 1 if maps is not None else kspace.shape[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(net, out_size, 2 * coils, sizes).to(kspace.device)

    def images() -> torch.Tensor:
        """G(z) as complex images (coils, H, W), channel pairs (2i, 2i + 1) the real and imaginary parts."""
        out = model().to(kspace.real.dtype)
        return torch.complex(out[0::2], out[1::2])

    measured = kspace * mask

    def finish(output: torch.Tensor) -> torch.Tensor:
        """Step 2 and the coil combination: the image that the network's ``output`` stands for."""
        coil_images = ifft2c(data_consistency(output if maps is None else output[0], scale * measured, mask,
                                              maps)) / scale
        image = rss(coil_images, dim=0) if maps is None else (maps.conj() * coil_images).sum(dim=0)
        if crop is not None:
            top, left = ((n - c) // 2 for n, c in zip(out_size, crop))
            image = image[top:top + crop[0], left:left + crop[1]]
        return image

    with torch.no_grad():
        scale = scale_factor(images(), measured)
    target = torch.view_as_real(scale * measured)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = torch.empty(iterations)
    best, kept, best_iteration = math.inf, None, 0
    for i in range(iterations):
        optimizer.zero_grad(set_to_none=True)
        x = images()
        estimate = fft2c(x if maps is None else maps * x) * mask
        loss = nn.functional.mse_loss(torch.view_as_real(estimate), target)
        loss.backward()
        optimizer.step()
        losses[i] = value = loss.item()
        if value < best / _IMPROVEMENT:
            best, kept, best_iteration = value, x.detach(), i
        if monitor is not None and (i % monitor_every == 0 or i == iterations - 1):
            with torch.no_grad():
                monitor(i, finish(x.detach()))
    if kept is None:
        raise RuntimeError(f"the loss was never finite (first value {losses[0].item()}): try a smaller lr")

    image = finish(kept)
    if not return_info:
        return image
    if kspace.device.type == "cuda":  # wait for the GPU, so that the time means something
        torch.cuda.synchronize(kspace.device)
    return image, FitInfo(losses, best_iteration, scale, time.perf_counter() - start)


def average_fits(kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None = None, runs: int = 2,
                 seed: int = 0, return_info: bool = False, return_runs: bool = False, **options):
    """The mean of ``runs`` reconstructions by ``fit`` from independent initialisations (Sec. 6).

    Run r uses the seed ``seed + r``; ``options`` go to ``fit`` (``net``, ``iterations``, ``lr``,
    ``crop``, ``monitor``, sizes). Returns the mean image; with ``return_runs`` also the runs' own
    images stacked (runs, ...), and with ``return_info`` the list of the runs' ``FitInfo``, in that
    order.
    """
    _check_int(runs, "runs", 1)
    _check_int(seed, "seed", 0)
    fits = [fit(kspace, mask, maps, seed=seed + r, return_info=True, **options) for r in range(runs)]
    each = torch.stack([image for image, _ in fits])
    results = (each.mean(dim=0),) + ((each,) if return_runs else ()) + (([info for _, info in fits],) if return_info
                                                                        else ())
    return results if len(results) > 1 else results[0]
