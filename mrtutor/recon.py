"""Classical reconstructions, the baselines every chapter compares against.

All take a forward operator ``op`` with ``forward``, ``adjoint`` and ``normal`` (for example
``mrtutor.sense.Sense(maps, mask)``) and its measured k-space ``y`` (B, C, H, W), and return complex
images (B, H, W) on ``y``'s device:

* ``zero_filled(op, y)``: A^H y.
* ``cg_sense(op, y, lam)``: (A^H A + lam I)^-1 A^H y by conjugate gradient (Pruessmann et al. 2001).
* ``tv(op, y, lam)``: min 1/2 ||A x - y||^2 + lam TV(x) by primal-dual hybrid gradient.
* ``l1_wavelet(op, y, lam)``: min 1/2 ||A x - y||^2 + lam ||W x||_1 by FISTA, with W an orthonormal
  periodised wavelet transform (``Wavelet``).

The iterative ones accept ``return_info=True`` and then also return a ``ReconInfo`` (iterations,
wall time, per-iteration history) so a chapter can plot convergence. ``tune_lambda`` picks a
regularisation weight on validation samples.

Default weights assume the book's data conventions: reference magnitude max 1, orthonormal FFT,
coil maps with unit sum of squares, complex noise sigma 0.01 in k-space. They are starting points;
chapters tune them with ``tune_lambda``.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pywt
import torch

from mrtutor.cg import conjugate_gradient, sample_norms
from mrtutor.metrics import psnr

Operator = Callable[[torch.Tensor], torch.Tensor]

# Power iteration approaches the largest eigenvalue from below; steps are computed from this much
# more than the estimate so that an unconverged estimate cannot make the iteration diverge.
_LIPSCHITZ_MARGIN = 1.05


@dataclass
class ReconInfo:
    """What an iterative reconstruction did.

    ``iterations``: iterations run (an int, or a (B,) tensor when samples stop on their own);
    ``time_s``: wall time in seconds; ``history``: per-iteration curves, each (iterations, B), e.g.
    ``objective`` and ``rel_change`` = ||x_k - x_{k-1}|| / ||x_k||, or CG's ``residual``.
    """

    iterations: int | torch.Tensor
    time_s: float
    history: dict[str, torch.Tensor] = field(default_factory=dict)


def _check_op(op) -> None:
    for method in ("forward", "adjoint", "normal"):
        if not callable(getattr(op, method, None)):
            raise TypeError(f"op must have forward, adjoint and normal methods (e.g. Sense), got {type(op).__name__}")


def _check_count(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def _check_weight(lam, like: torch.Tensor, name: str = "lam") -> torch.Tensor:
    """A non-negative weight, scalar or per sample, as a (B, 1, 1) real tensor on ``like``'s device."""
    batch = like.shape[0]
    if isinstance(lam, torch.Tensor) and lam.is_complex():
        raise TypeError(f"{name} must be real, got dtype {lam.dtype}")
    value = torch.as_tensor(lam, dtype=like.real.dtype, device=like.device)
    if value.dim() > 1 or (value.dim() == 1 and value.shape[0] not in (1, batch)):
        raise ValueError(f"{name} must be a scalar or have shape (B,) = ({batch},), got {tuple(value.shape)}")
    if not torch.isfinite(value).all() or (value < 0).any():
        raise ValueError(f"{name} must be finite and >= 0, got {value.detach().cpu().tolist()}")
    return value.expand(batch).reshape(batch, 1, 1)


def _start(op, y: torch.Tensor, lam, count, count_name: str) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The preamble of the iterative reconstructions: check ``op`` and the iteration ``count``, start
    the clock, and compute A^H y.

    Returns:
        (start time, A^H y (B, H, W), lam as a (B, 1, 1) real tensor).
    """
    _check_op(op)
    _check_count(count, count_name)
    start = time.perf_counter()
    rhs = op.adjoint(y)
    return start, rhs, _check_weight(lam, rhs)


def _finish(x: torch.Tensor, return_info: bool, start: float, iterations, history: dict[str, list[torch.Tensor]]):
    """x (B, H, W), or (x, ``ReconInfo``) when ``return_info``.

    ``history`` maps a name to its per-iteration (B,) tensors, stacked to (iterations, B); empty lists
    (no iteration run) are left out.
    """
    if not return_info:
        return x
    _sync(x.device)
    elapsed = time.perf_counter() - start  # before stacking, which is bookkeeping, not reconstruction
    return x, ReconInfo(iterations, elapsed, {k: torch.stack(v) for k, v in history.items() if v})


def _sync(device: torch.device) -> None:
    # CUDA runs asynchronously; wait for it so wall times mean something.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _random_image(like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A fixed random start for power iteration, the same for every sample and every device (drawn
    on the CPU), so a sample gets the same step sizes alone as in a batch."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randn((1, *like.shape[1:]), dtype=like.dtype, generator=g)
    return start.to(like.device).expand_as(like)


def power_iteration(normal: Operator, x0: torch.Tensor, n_iter: int = 30) -> torch.Tensor:
    """Largest eigenvalue of a Hermitian positive semi-definite operator, per sample.

    Repeats x <- N x / ||N x|| and returns the Rayleigh quotient <x, N x> / <x, x>, which approaches
    the largest eigenvalue from below (e.g. ||A||^2 for ``N = A^H A``).

    Args:
        normal: the operator N, (B, ...) -> (B, ...).
        x0: starting point (B, ...); a random one, so it is not orthogonal to the top eigenvector.
        n_iter: number of multiplications by N.
    Returns:
        (B,) real tensor.
    """
    if not isinstance(x0, torch.Tensor) or x0.dim() < 1 or x0.numel() == 0:
        raise TypeError(f"x0 must be a non-empty batched tensor (B, ...), got {getattr(x0, 'shape', type(x0))}")
    _check_count(n_iter, "n_iter")
    x = x0
    for _ in range(n_iter):
        nx = normal(x)
        scale = sample_norms(nx)
        x = nx / torch.where(scale > 0, scale, torch.ones_like(scale)).reshape(-1, *[1] * (x.dim() - 1))
    nx = normal(x)
    xx = torch.linalg.vecdot(x.flatten(1), x.flatten(1)).real
    return torch.linalg.vecdot(x.flatten(1), nx.flatten(1)).real / torch.where(xx > 0, xx, torch.ones_like(xx))


# --------------------------------------------------------------------------------------------- #
# Zero filling and CG-SENSE
# --------------------------------------------------------------------------------------------- #


def zero_filled(op, y: torch.Tensor) -> torch.Tensor:
    """The zero-filled reconstruction A^H y: (B, C, H, W) k-space -> (B, H, W) image.

    With coil maps of unit sum of squares this is the coil-combined inverse FFT of the k-space with
    zeros where nothing was measured.
    """
    _check_op(op)
    return op.adjoint(y)


def cg_sense(op, y: torch.Tensor, lam=1e-2, max_iter: int = 30, tol: float = 1e-6, return_info: bool = False):
    """CG-SENSE: x = (A^H A + lam I)^-1 A^H y, i.e. argmin 1/2 ||A x - y||^2 + lam/2 ||x||^2.

    A small Tikhonov weight keeps the system well conditioned at high acceleration, where plain
    least squares amplifies noise (the g-factor); ``lam=0`` gives the least-squares solution of
    minimum norm (CG from zero stays in the range of A^H), and then ``max_iter`` itself regularises
    by stopping early. The default 1e-2 is of the order of the noise level of the book's data; on a
    64 x 64 four-coil phantom at 4x, lam from 1e-3 to 1e-2 give the same PSNR within 0.05 dB (1e-2
    converges in fewer iterations), while lam = 0 loses 3 dB once CG runs 100 iterations.

    Args:
        op: forward operator with ``forward``, ``adjoint`` and ``normal`` (e.g. ``Sense``).
        y: measured k-space (B, C, H, W).
        lam: Tikhonov weight >= 0, scalar or (B,).
        max_iter, tol: CG settings (each sample stops at relative residual ``tol``).
        return_info: also return a ``ReconInfo`` whose ``iterations`` is (B,) and whose history
            holds CG's relative ``residual`` (iterations + 1, B).
    Returns:
        x (B, H, W), and ``ReconInfo`` when ``return_info``.
    """
    start, rhs, lam = _start(op, y, lam, max_iter, "max_iter")
    x, cg_info = conjugate_gradient(lambda v: op.normal(v) + lam * v, rhs, max_iter=max_iter, tol=tol, return_info=True)
    return _finish(x, return_info, start, cg_info.iterations, {"residual": cg_info.residuals})


# --------------------------------------------------------------------------------------------- #
# Total variation
# --------------------------------------------------------------------------------------------- #


def image_gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences with periodic boundary: (B, H, W) -> (B, 2, H, W) as (d/dH, d/dW).

    Periodic, like the FFT in the forward model; on MRI images the wrap-around joins two stretches
    of background, so it costs nothing and keeps the operator a circulant with norm^2 <= 8.
    """
    return torch.stack([torch.roll(x, -1, dims=-2) - x, torch.roll(x, -1, dims=-1) - x], dim=1)


def image_gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """The adjoint of ``image_gradient`` (minus the divergence): (B, 2, H, W) -> (B, H, W)."""
    return (torch.roll(g[:, 0], 1, dims=-2) - g[:, 0]) + (torch.roll(g[:, 1], 1, dims=-1) - g[:, 1])


def _pixel_magnitude(g: torch.Tensor) -> torch.Tensor:
    """|g| of each pixel's gradient vector: (B, 2, H, W) -> (B, 1, H, W)."""
    # Written out: torch.linalg.vector_norm over a complex dim=1 is ~20x slower on the CPU.
    square = g.real**2 + g.imag**2 if g.is_complex() else g**2
    return square.sum(dim=1, keepdim=True).sqrt()


def tv_norm(x: torch.Tensor) -> torch.Tensor:
    """Isotropic total variation sum_pixels sqrt(|d_H x|^2 + |d_W x|^2) per image: (B, H, W) -> (B,)."""
    return _pixel_magnitude(image_gradient(x)).flatten(1).sum(dim=1)


def _data_term(op, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * sample_norms(op.forward(x) - y) ** 2


def tv(
    op,
    y: torch.Tensor,
    lam=3e-3,
    n_iter: int = 200,
    step_ratio: float = 5.0,
    tol: float = 0.0,
    return_info: bool = False,
):
    """Total-variation compressed sensing: argmin_x 1/2 ||A x - y||^2 + lam TV(x).

    TV is the isotropic complex total variation (``tv_norm``) with periodic forward differences.
    Solved with the primal-dual hybrid gradient method of Chambolle and Pock (2011, Algorithm 1) on
    K = [A; grad]: both pieces of the objective have closed-form dual proximal steps (a scaling for
    the data term, a pointwise projection onto |q| <= lam for TV), so every iteration costs one A
    and one A^H and nothing is solved inside the loop (ADMM would need an inner CG per iteration).
    It starts from the zero-filled image with zero dual variables.

    Steps: tau = step_ratio / ||K|| (primal) and sigma = 1 / (step_ratio ||K||) (dual), so that
    sigma tau ||K||^2 < 1 as convergence requires, with ||K||^2 estimated per sample by
    ``power_iteration`` of A^H A + grad^H grad (about 1 + 8). Only the product is fixed by the
    theory; the ratio sets the speed. The image (magnitude ~1) has far to travel while the TV dual
    stays within |q| <= lam, so a primal step larger than the dual one pays: on a 64 x 64
    Shepp-Logan phantom at 4x, step_ratio 5 (tau / sigma = 25) reaches a relative objective gap
    of 1e-3 or less within 200 iterations for lam from 1e-3 to 3e-2, where equal steps
    (step_ratio 1) leave 1.4e-2 at lam = 3e-3.

    Args:
        op: forward operator with ``forward``, ``adjoint`` and ``normal`` (e.g. ``Sense``).
        y: measured k-space (B, C, H, W).
        lam: TV weight >= 0, scalar or (B,). ``lam=0`` solves least squares.
        n_iter: the most iterations.
        step_ratio: tau ||K|| = 1 / (sigma ||K||), so tau / sigma = step_ratio^2 (see above).
        tol: stop once every sample's relative change ||x_k - x_{k-1}|| / ||x_k|| is below it
            (0 runs all ``n_iter``).
        return_info: also return a ``ReconInfo`` with ``objective`` and ``rel_change`` histories.
    Returns:
        x (B, H, W), and ``ReconInfo`` when ``return_info``.
    """
    start, x, lam = _start(op, y, lam, n_iter, "n_iter")
    if not step_ratio > 0:
        raise ValueError(f"step_ratio must be > 0, got {step_ratio!r}")
    norm_sq = power_iteration(lambda v: op.normal(v) + image_gradient_adjoint(image_gradient(v)), _random_image(x))
    norm_k = torch.sqrt(_LIPSCHITZ_MARGIN * norm_sq)
    tiny = torch.finfo(norm_k.dtype).tiny
    step_x = (step_ratio / norm_k).reshape(-1, 1, 1)
    step_y = step_g = (1.0 / (step_ratio * norm_k)).reshape(-1, 1, 1, 1)

    x_bar = x
    dual_y = torch.zeros_like(y)
    dual_g = x.new_zeros((x.shape[0], 2, *x.shape[1:]))
    history: dict[str, list[torch.Tensor]] = {"objective": [], "rel_change": []}
    iterations = 0
    for _ in range(n_iter):
        # Dual step for 1/2 ||z - y||^2: prox of its conjugate is (v - sigma y) / (1 + sigma).
        dual_y = (dual_y + step_y * (op.forward(x_bar) - y)) / (1 + step_y)
        # Dual step for lam ||.||_{2,1}: project each pixel's gradient vector onto the lam-ball.
        dual_g = dual_g + step_g * image_gradient(x_bar)
        magnitude = _pixel_magnitude(dual_g).clamp_min(tiny)
        dual_g = dual_g * torch.clamp(lam[:, None] / magnitude, max=1.0)
        x_new = x - step_x * (op.adjoint(dual_y) + image_gradient_adjoint(dual_g))
        x_bar = 2 * x_new - x
        rel_change = sample_norms(x_new - x) / sample_norms(x_new).clamp_min(tiny)
        x = x_new
        iterations += 1
        if return_info:
            history["objective"].append(_data_term(op, x, y) + lam.flatten() * tv_norm(x))
            history["rel_change"].append(rel_change)
        if tol > 0 and bool((rel_change < tol).all()):
            break
    return _finish(x, return_info, start, iterations, history)


# --------------------------------------------------------------------------------------------- #
# Orthonormal wavelets and l1-wavelet
# --------------------------------------------------------------------------------------------- #


@functools.lru_cache(maxsize=64)
def dwt_matrix(n: int, wavelet: str = "db4") -> torch.Tensor:
    """The one-level periodised orthonormal DWT of length ``n`` (even) as an n x n float64 matrix.

    Row m < n/2 gives approximation a[m] = sum_k h[k] x[(2m + L/2 - k) mod n], row n/2 + m the detail
    with g in place of h, where h, g are ``pywt.Wavelet(wavelet).dec_lo / dec_hi`` of length L. This
    is exactly ``pywt.dwt(x, wavelet, mode="periodization")``. For an orthogonal wavelet and even n
    the rows are orthonormal, also when n < L (the wrapped filters still only meet at even shifts).
    """
    if not isinstance(n, int) or n < 2 or n % 2:
        raise ValueError(f"n must be an even integer >= 2, got {n!r}")
    filters = pywt.Wavelet(wavelet)
    if not filters.orthogonal:
        raise ValueError(f"wavelet must be orthogonal (e.g. 'haar', 'db4', 'sym8'), got {wavelet!r}")
    taps = filters.dec_len
    rows = np.arange(n // 2)[:, None]
    cols = (2 * rows + taps // 2 - np.arange(taps)[None, :]) % n
    matrix = np.zeros((n, n))
    np.add.at(matrix, (np.broadcast_to(rows, cols.shape), cols), np.broadcast_to(filters.dec_lo, cols.shape))
    np.add.at(matrix, (np.broadcast_to(rows + n // 2, cols.shape), cols), np.broadcast_to(filters.dec_hi, cols.shape))
    return torch.from_numpy(matrix)


class Wavelet:
    """Orthonormal multi-level 2-D periodised wavelet transform W of (B, H, W) images.

    The coefficients are stored in one array of the image's shape (Mallat's layout, as
    ``pywt.coeffs_to_array(pywt.wavedec2(x, wavelet, mode="periodization", level=levels))``): each
    level applies the 1-D matrix ``dwt_matrix`` along H and along W to the current top-left
    approximation block. W is square and orthogonal, so ``adjoint`` is its inverse and
    ||W x|| = ||x||.

    Sizes: every level halves the block, so H and W must be divisible by 2**levels. ``levels=None``
    takes the largest number up to 4 that divides both (e.g. 3 for 256 x 232); sizes that allow no
    level (odd H or W) raise, rather than silently padding (padding would make W non-square and its
    l1 proximal step no longer closed-form).

    Args:
        shape: (H, W) of the images.
        wavelet: name of an orthogonal ``pywt`` wavelet.
        levels: number of decomposition levels, >= 1, or None.
    """

    def __init__(self, shape: tuple[int, int], wavelet: str = "db4", levels: int | None = None):
        if len(shape) != 2 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"shape must be (H, W) with positive integers, got {shape!r}")
        h, w = shape
        if levels is None:
            levels = 0
            while levels < 4 and h % 2 ** (levels + 1) == 0 and w % 2 ** (levels + 1) == 0:
                levels += 1
            if levels == 0:
                raise ValueError(f"image shape {shape} has an odd side: the periodised DWT needs even H and W")
        elif isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be an integer >= 1 or None, got {levels!r}")
        elif h % 2**levels or w % 2**levels:
            raise ValueError(f"levels={levels} needs H and W divisible by {2**levels}, got shape {shape}")
        self.shape = (h, w)
        self.wavelet = wavelet
        self.levels = levels
        self._blocks = [(h >> j, w >> j) for j in range(levels)]
        dwt_matrix(h, wavelet)  # fails here on a wavelet that is unknown or not orthogonal
        self._cache: dict = {}

    def _matrices(self, like: torch.Tensor, n: int) -> torch.Tensor:
        key = (n, like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = dwt_matrix(n, self.wavelet).to(dtype=like.dtype, device=like.device)
        return self._cache[key]

    def _check(self, x: torch.Tensor, name: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or tuple(x.shape[-2:]) != self.shape:
            raise ValueError(f"{name} must have shape (B, {self.shape[0]}, {self.shape[1]}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """W x: image (B, H, W) -> coefficients (B, H, W), real or complex."""
        self._check(x, "x")
        c = x.clone()
        for bh, bw in self._blocks:
            c[:, :bh, :bw] = self._matrices(c, bh) @ c[:, :bh, :bw] @ self._matrices(c, bw).T
        return c

    def adjoint(self, c: torch.Tensor) -> torch.Tensor:
        """W^T c = W^-1 c: coefficients (B, H, W) -> image (B, H, W)."""
        self._check(c, "c")
        x = c.clone()
        for bh, bw in reversed(self._blocks):
            x[:, :bh, :bw] = self._matrices(x, bh).T @ x[:, :bh, :bw] @ self._matrices(x, bw)
        return x

    def detail_mask(self, device=None) -> torch.Tensor:
        """Real (H, W) mask: 1 on detail coefficients, 0 on the coarsest approximation block."""
        mask = torch.ones(self.shape, device=device)
        mask[: self.shape[0] >> self.levels, : self.shape[1] >> self.levels] = 0
        return mask

    __call__ = forward


def soft_threshold(z: torch.Tensor, threshold) -> torch.Tensor:
    """Complex soft thresholding z * max(1 - t / |z|, 0): the proximal map of t ||.||_1."""
    magnitude = z.abs()
    return z * torch.clamp(1 - threshold / magnitude.clamp_min(torch.finfo(magnitude.dtype).tiny), min=0)


def l1_wavelet(
    op,
    y: torch.Tensor,
    lam=2e-3,
    n_iter: int = 100,
    wavelet: str = "db4",
    levels: int | None = None,
    tol: float = 0.0,
    return_info: bool = False,
):
    """l1-wavelet compressed sensing: argmin_x 1/2 ||A x - y||^2 + lam ||W_d x||_1, by FISTA.

    W is the orthonormal ``Wavelet``; W_d keeps its detail coefficients only: the coarsest
    approximation is not sparse, and shrinking it would only dim the image. Because W is
    orthonormal the proximal step is exact, x = W^T soft(W v, step lam) on the details. FISTA (Beck
    and Teboulle 2009) with step 1/L, L = ||A||^2 from ``power_iteration``; it starts from the
    zero-filled image.

    Args:
        op: forward operator with ``forward``, ``adjoint`` and ``normal`` (e.g. ``Sense``).
        y: measured k-space (B, C, H, W).
        lam: l1 weight >= 0, scalar or (B,).
        n_iter: the most iterations.
        wavelet, levels: passed to ``Wavelet`` (H and W divisible by 2**levels).
        tol: stop once every sample's relative change is below it (0 runs all ``n_iter``).
        return_info: also return a ``ReconInfo`` with ``objective`` and ``rel_change`` histories.
    Returns:
        x (B, H, W), and ``ReconInfo`` when ``return_info``.
    """
    start, rhs, lam = _start(op, y, lam, n_iter, "n_iter")
    transform = Wavelet(tuple(rhs.shape[-2:]), wavelet, levels)
    detail = transform.detail_mask(rhs.device)
    lipschitz = _LIPSCHITZ_MARGIN * power_iteration(op.normal, _random_image(rhs))
    step = (1.0 / lipschitz.clamp_min(torch.finfo(lipschitz.dtype).tiny)).reshape(-1, 1, 1)
    threshold = step * lam * detail

    x = rhs
    z = x
    momentum = 1.0
    history: dict[str, list[torch.Tensor]] = {"objective": [], "rel_change": []}
    iterations = 0
    for _ in range(n_iter):
        v = z - step * (op.normal(z) - rhs)  # gradient step on 1/2 ||A z - y||^2
        x_new = transform.adjoint(soft_threshold(transform.forward(v), threshold))
        momentum_new = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
        z = x_new + ((momentum - 1) / momentum_new) * (x_new - x)
        rel_change = sample_norms(x_new - x) / sample_norms(x_new).clamp_min(torch.finfo(lipschitz.dtype).tiny)
        x, momentum = x_new, momentum_new
        iterations += 1
        if return_info:
            l1 = (transform.forward(x).abs() * detail).flatten(1).sum(dim=1)
            history["objective"].append(_data_term(op, x, y) + lam.flatten() * l1)
            history["rel_change"].append(rel_change)
        if tol > 0 and bool((rel_change < tol).all()):
            break
    return _finish(x, return_info, start, iterations, history)


# --------------------------------------------------------------------------------------------- #
# Choosing the regularisation weight
# --------------------------------------------------------------------------------------------- #


def tune_lambda(
    recon_fn: Callable,
    samples: Iterable,
    lams: Iterable[float],
    metric: Callable = psnr,
    higher_is_better: bool = True,
) -> tuple[float, dict[float, float]]:
    """Grid search of a regularisation weight on validation samples.

    Args:
        recon_fn: ``recon_fn(op, y, lam) -> x`` (B, H, W), e.g.
            ``lambda op, y, lam: tv(op, y, lam, n_iter=100)``.
        samples: iterable of ``(op, y, target)`` with target (B, H, W); read once.
        lams: the weights to try.
        metric: ``metric(x, target) -> (B,)`` scores (default ``psnr``).
        higher_is_better: False for error metrics such as ``nmse``.
    Returns:
        (best lam, {lam: mean score over every image of every sample}).
    """
    samples = list(samples)
    lams = [float(lam) for lam in lams]
    if not samples:
        raise ValueError("samples is empty: need at least one (op, y, target)")
    if not lams:
        raise ValueError("lams is empty: need at least one weight to try")
    for i, sample in enumerate(samples):
        if not isinstance(sample, (tuple, list)) or len(sample) != 3:
            raise ValueError(f"samples[{i}] must be a tuple (op, y, target), got {type(sample).__name__}")
    table = {}
    for lam in lams:
        scores = [metric(recon_fn(op, y, lam), target).reshape(-1) for op, y, target in samples]
        table[lam] = torch.cat(scores).mean().item()
    choose = max if higher_is_better else min
    best = choose(table, key=lambda lam: table[lam])
    return best, table
