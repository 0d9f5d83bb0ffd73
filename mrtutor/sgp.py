"""Learned stepsizes for scaled gradient projection (Lee and Chun, "Accelerating optimization algorithms with
dynamic parameter selections using convolutional neural networks for inverse problems in image
processing", arXiv:1902.02449, 2019; cited below as "Lee and Chun").

The problem is l1-synthesis in an orthonormal wavelet basis (Lee and Chun, eq. 10):

    min_x F(x) = f(x) + lam ||x||_1,     f(x) = 1/2 ||A W^T x - y||^2,

with x the wavelet coefficients (``L1Synthesis``). Proximal gradient (eq. 2) moves x to
T_{lam t}(x - t grad f(x)), T the soft threshold of eq. 6. Scaled gradient projection (SGP, Algorithm 1)
multiplies the gradient by a positive diagonal D_k and steps along z = T_{lam t D}(x - t D grad f) - x
only as far as an Armijo line search (eq. 5) allows, so any D_k keeps the objective going down. Lee
and Chun let a CNN pick the stepsize t_k (``StepNet``) or the diagonal D_k (``DiagNet``) from
(x_k, grad f(x_k)) at every iteration, and wrap it in two safeguards: the direction relaxation
scheme (DRS, Algorithm 3), which blends the network's direction with the plain 1/L direction and
drops the network for good once its part gets small, and the Armijo backtracking of Algorithm 4.
``solve`` runs these and the baselines ISTA and FISTA with backtracking.

Two departures, both so that the objective F (not f alone) decreases whatever the network says:

* (5) is written for the constrained form (3), where g is a constraint and F = f on the feasible
  set. For the l1 penalty the Armijo test here is the composite one,
  F(x + gamma z) <= F(x) + beta gamma h(z) with h(z) = <grad f(x), z> + lam (||x + z||_1 - ||x||_1)
  (the variable-metric line search of Bonettini, Loris, Porta and Prato, SIAM J. Optim. 2016);
  when g is the indicator of S it is (5) itself.
* A DRS direction need not be a descent direction (Algorithm 3 only compares lengths). Where
  h(z) >= 0, or where 40 halvings find no Armijo step, the iteration takes the 1/L direction
  instead and stops using the network, as Algorithm 3 does when its own test fails. Every z with
  F(x + z) < F(x) has h(z) < 0 (f is convex), so this only turns away directions that cannot help.

The training of eq. 7 and Algorithm 2 is in ``mrtutor.sgp_training``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from mrtutor.cg import sample_norms
from mrtutor.metrics import nmse_db
from mrtutor.recon import Wavelet, power_iteration, soft_threshold

METHODS = ("ista", "pgm", "fista_b", "sgp_step", "sgp_diag")

# Constants the paper leaves open (Algorithms 1, 3 and 4 only ask for values in (0, 1) or (0, 1]).
ARMIJO_BETA = 1e-4  # beta of (5): the usual Armijo constant; any decrease of 1e-4 of the model passes
ETA_STEP = 0.5  # eta_2 of Algorithm 4: each backtrack halves the step gamma_2
ETA_WEIGHT = 0.5  # eta_1 of Algorithm 4: each backtrack also halves the network's weight gamma_1
DRS_ALPHA = 1.0  # alpha of Algorithm 3: blend while gamma_1 ||z_1|| > (1 - gamma_1) ||z_2||
MAX_BACKTRACKS = 40  # 0.5^40 ~ 1e-12: below that the step is round-off
STEP_RANGE = 100.0  # default stepsize bounds [t_L / 100, 100 t_L], t_L = 1 / L
FISTA_START = 0.1  # FISTA-b starts from L_0 = L / 10 ...
FISTA_GROWTH = 2.0  # ... and doubles L until the sufficient-decrease test holds
FISTA_MAX_GROWTHS = 60  # 2^60: a larger jump means A is not what its Lipschitz estimate says


def _sum(v: torch.Tensor) -> torch.Tensor:
    """Per-sample sum: (B, ...) -> (B,)."""
    return v.flatten(1).sum(dim=1)


def _sq_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample squared Euclidean norm, real or complex: (B, ...) -> (B,)."""
    real = torch.view_as_real(v) if v.is_complex() else v
    return torch.linalg.vector_norm(real.flatten(1), dim=1).square()  # one pass, where v**2 would write a copy


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample real inner product Re <a, b>, real or complex: (B, ...) x 2 -> (B,)."""
    return _sum((a.conj() * b).real) if a.is_complex() else _sum(a * b)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1), broadcastable against ``like`` (B, ...)."""
    return v.reshape(-1, *[1] * (like.dim() - 1))


def _check_operator(op) -> None:
    for method in ("forward", "adjoint"):
        if not callable(getattr(op, method, None)):
            raise TypeError(f"op must have forward and adjoint methods (e.g. Inpainting), got {type(op).__name__}")


def lipschitz(op, shape, iterations: int = 100, *, dtype: torch.dtype = torch.float64, device=None,
              seed: int = 0) -> torch.Tensor:
    """||A||^2, the Lipschitz constant of grad f for f(x) = 1/2 ||A x - y||^2, per sample: on real images,
    or on complex ones when ``dtype`` is complex.

    Power iteration (``recon.power_iteration``) on the normal operator v -> Re(A^H A v): for a
    complex-valued A (``PartialFourier``) acting on real images the adjoint is Re A^H, so this is
    A^H A of A as a map from real images. The estimate approaches the constant from below. The
    start is one fixed random image shared by every sample, so a sample gets the same value alone
    as in a batch. Since W is orthogonal, ||A W^T|| = ||A||: the same constant serves the wavelet
    coefficients.

    Args:
        op: operator with ``forward`` and ``adjoint`` taking real images of ``shape``, e.g. ``Inpainting``,
            or an ``L1Synthesis`` (then ``shape`` is that of its coefficients).
        shape: (B, H, W) of the images.
        iterations: multiplications by A^H A.
        dtype, device: of the random start (``Radon`` takes only its own dtype).
        seed: of the random start.
    Returns:
        (B,) real tensor.
    """
    _check_operator(op)
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"shape must be (B, H, W) with positive integers, got {shape!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    start = torch.randn((1, *shape[1:]), dtype=dtype, generator=torch.Generator().manual_seed(seed))
    if device is not None:
        start = start.to(device)
    start = start.expand(*shape)

    def normal(v: torch.Tensor) -> torch.Tensor:
        out = op.adjoint(op.forward(v))
        return out.real if out.is_complex() and not v.is_complex() else out

    return power_iteration(normal, start, iterations)


class L1Synthesis:
    """min_x F(x) = 1/2 ||A W^T x - y||^2 + lam ||x||_1 over real wavelet coefficients x (Lee and Chun, eq. 10).

    x has the image's shape (B, H, W) in the Mallat layout of ``recon.Wavelet`` (default: three-level
    symlet-4, as Lee and Chun, Sec. 6.1). Every coefficient is penalised, the coarse approximation
    too: eq. 10 writes lam ||x_n||_1 of the whole coefficient vector and eq. 6 thresholds every
    element. (``recon.l1_wavelet`` leaves the approximation free; this problem does not.)

    Images are real by default; A may be complex-valued (``PartialFourier``): f uses |.|^2 of the
    complex residual, and since x is real its gradient is W Re(A^H (A W^T x - y)). With
    ``complex_images=True`` (MR images, ``Sense``) x and the image are complex, the gradient is
    W A^H (A W^T x - y), and the threshold shrinks each coefficient's modulus (complex soft thresholding).
    ``penalise_approximation=False`` leaves the coarsest approximation block free, as
    ``recon.l1_wavelet`` does (chapter 1's problem): F = f + lam ||W_d x||_1.

    Normalisation. Lee and Chun use measurement matrices normalised so that the Lipschitz constant
    of grad f is at most 1 (Sec. 6.1), but do not say how. With ``normalise=True`` the power-iteration
    estimate L_0 of ||A||^2 is computed per sample and, where L_0 > 1, A and y are both divided by
    s = sqrt(L_0) (``scale``; s = 1 elsewhere), so that the estimate becomes 1 (the true constant
    exceeds it only by the power iteration's error, which approaches from below). x, the image and the
    minimiser keep their scale, but f is divided by L_0: the problem solved is
    (1 / L_0) [1/2 ||A W^T x - y||^2 + lam L_0 ||x||_1], i.e. ``lam`` acts as lam * L_0 on the
    original data, and ``objective``, ``smooth`` and ``residual`` report values on the normalised
    scale (the stored ``y`` is y / s). Operators with ||A|| = 1 (``Inpainting``, ``PartialFourier``,
    ``GaussianBlur``) are left as they are, to round-off; ``Radon`` is the one that needs it.

    Args:
        op: forward operator on real images (B, H, W) with ``forward`` and ``adjoint`` (``mrtutor.operators``).
        y: measurements (B, ...), as ``op.forward`` returns them (complex for ``PartialFourier``).
        lam: l1 weight >= 0, a number or a (B,) tensor.
        wavelet, levels: of the ``recon.Wavelet`` (H and W divisible by 2**levels).
        normalise: divide A and y by sqrt(L_0) where L_0 > 1 (see above).
        power_iterations: of ``lipschitz``.
        lipschitz_estimate: a known ||A||^2 (a number or (B,)) instead of the power iteration: 1 for
            the operators with ||A|| = 1, or the estimate of an operator shared by many problems
            (``Radon``), computed once.
        complex_images: complex images and coefficients (see above).
        penalise_approximation: lam on every coefficient (eq. 10), or on the detail coefficients only.

    Attributes:
        shape: (B, H, W) of images and coefficients.
        transform: the ``Wavelet`` W.
        lam: (B, 1, 1) weights.
        weights: (H, W) real, 1 where lam applies and 0 on a free approximation block.
        dtype: of the coefficients (real, or complex with ``complex_images``).
        scale: (B,) the factor A and y were divided by.
        lipschitz_constant: (B,) the estimate of ||A W^T||^2 after normalisation (1 where normalised).
    """

    def __init__(self, op, y: torch.Tensor, lam, wavelet: str = "sym4", levels: int = 3, normalise: bool = False,
                 power_iterations: int = 100, lipschitz_estimate=None, complex_images: bool = False,
                 penalise_approximation: bool = True):
        _check_operator(op)
        if not isinstance(y, torch.Tensor) or y.dim() < 2:
            raise TypeError(f"y must be a batched torch.Tensor (B, ...), got {getattr(y, 'shape', type(y).__name__)}")
        back = op.adjoint(y)
        if back.dim() != 3:
            raise ValueError(f"op.adjoint(y) must give images (B, H, W), got shape {tuple(back.shape)}")
        if complex_images and not back.is_complex():
            raise TypeError(f"complex_images needs an operator whose adjoint gives complex images, got {back.dtype}")
        self.op = op
        self.complex_images = bool(complex_images)
        self.shape = tuple(back.shape)
        self.transform = Wavelet(self.shape[1:], wavelet, levels)
        real_dtype = back.real.dtype
        self.dtype = back.dtype if complex_images else real_dtype
        self.weights = (torch.ones(self.shape[1:], dtype=real_dtype, device=y.device) if penalise_approximation
                        else self.transform.detail_mask(y.device).to(real_dtype))
        if isinstance(lam, torch.Tensor) and lam.is_complex():
            raise TypeError(f"lam must be real, got dtype {lam.dtype}")
        lam = torch.as_tensor(lam, dtype=real_dtype, device=y.device)
        if lam.dim() > 1 or (lam.dim() == 1 and lam.shape[0] not in (1, self.shape[0])):
            raise ValueError(f"lam must be a number or have shape (B,) = ({self.shape[0]},), got {tuple(lam.shape)}")
        if not torch.isfinite(lam).all() or (lam < 0).any():
            raise ValueError(f"lam must be finite and >= 0, got {lam.tolist()}")
        self.lam = lam.expand(self.shape[0]).reshape(-1, 1, 1)
        self.y = y
        self.scale = torch.ones(self.shape[0], dtype=real_dtype, device=y.device)
        if lipschitz_estimate is None:
            estimate = lipschitz(op, self.shape, power_iterations, dtype=back.dtype if complex_images else real_dtype,
                                 device=y.device)
        else:
            estimate = torch.as_tensor(lipschitz_estimate, dtype=real_dtype, device=y.device).expand(self.shape[0])
        if not (torch.isfinite(estimate).all() and (estimate > 0).all()):
            raise ValueError(f"the Lipschitz estimate ||A||^2 must be finite and > 0, got {estimate.tolist()}")
        if normalise:
            self.scale = torch.where(estimate > 1, estimate.sqrt(), self.scale)
            self.y = y / _per_sample(self.scale, y)
        self.lipschitz_constant = estimate / self.scale**2
        self._unscaled = bool((self.scale == 1).all())  # forward and adjoint then skip a pass over their output

    def _check(self, x: torch.Tensor, name: str = "x") -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.is_complex() != self.complex_images:
            kind = "complex" if self.complex_images else "real"
            raise TypeError(f"{name} must be {kind} wavelet coefficients, got dtype {x.dtype}")
        if tuple(x.shape) != self.shape:
            raise ValueError(f"{name} must have shape {self.shape}, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A W^T x / s: coefficients (B, H, W) -> measurements (B, ...)."""
        self._check(x)
        out = self.op.forward(self.transform.adjoint(x))
        return out if self._unscaled else out / _per_sample(self.scale, out)

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """W Re(A^H r) / s (W A^H r / s for complex images): measurements (B, ...) -> coefficients (B, H, W),
        the adjoint of ``forward``."""
        image = self.op.adjoint(r)
        if image.is_complex() and not self.complex_images:
            image = image.real  # x is real: the adjoint of A restricted to real images is Re A^H
        coefficients = self.transform.forward(image)
        return coefficients if self._unscaled else coefficients / _per_sample(self.scale, image)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """A W^T x - y (B, ...), on the normalised scale."""
        return self.forward(x) - self.y

    def smooth(self, x: torch.Tensor, ax: torch.Tensor | None = None) -> torch.Tensor:
        """f(x) = 1/2 ||A W^T x - y||^2 per sample: (B, H, W) -> (B,). ``ax``: ``forward(x)``, where the caller
        has it already (it saves applying A once more)."""
        return 0.5 * _sq_norm(self.residual(x) if ax is None else ax - self.y)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """grad f(x) = W Re(A^H (A W^T x - y)) (without Re for complex images): (B, H, W) -> (B, H, W)."""
        return self.adjoint(self.residual(x))

    def l1(self, x: torch.Tensor) -> torch.Tensor:
        """lam ||x||_1 per sample (on the weighted coefficients): (B, H, W) -> (B,)."""
        return self.lam.flatten() * _sum(self.weights * x.abs())

    def objective(self, x: torch.Tensor, ax: torch.Tensor | None = None) -> torch.Tensor:
        """F(x) = f(x) + lam ||x||_1 per sample: (B, H, W) -> (B,); ``ax`` as in ``smooth``."""
        return self.smooth(x, ax) + self.l1(x)

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """W^T x: coefficients (B, H, W) -> image (B, H, W)."""
        self._check(x)
        return self.transform.adjoint(x)

    def prox(self, x: torch.Tensor, step) -> torch.Tensor:
        """Soft thresholding T at lam * step (Lee and Chun, eq. 6), the proximal map of step * lam ||.||_1
        (on the weighted coefficients; complex coefficients have their modulus shrunk).

        ``step`` is a number, a (B,) tensor (one stepsize per sample) or a (B, H, W) tensor, the
        diagonal d of D: prox_D of lam ||.||_1 thresholds coefficient i at lam d_i (Sec. 5.2, T_d).
        Steps must be finite and >= 0.
        """
        self._check(x)
        step = torch.as_tensor(step, dtype=x.real.dtype, device=x.device)
        if step.dim() == 1:
            step = step.reshape(-1, 1, 1)
        if not torch.isfinite(step).all() or (step < 0).any():
            raise ValueError("step must be finite and >= 0")
        return soft_threshold(x, self.lam * self.weights * step)


# --------------------------------------------------------------------------------------------- #
# Stepsize networks
# --------------------------------------------------------------------------------------------- #


def bounded_positive(u: torch.Tensor, t_min: float, t_max: float) -> torch.Tensor:
    """Map any real u into [t_min, t_max]: exp(log t_min + sigmoid(u) log(t_max / t_min)).

    Geometric rather than linear interpolation, so that u = 0 gives sqrt(t_min t_max) (1 for the
    default bounds [0.01, 100], i.e. the 1/L step of a normalised problem) and equal changes of u
    scale the step by equal factors, whether it is 0.05 or 50.
    """
    t = torch.exp(math.log(t_min) + torch.sigmoid(u) * math.log(t_max / t_min))
    return t.clamp(t_min, t_max)  # exp may round a saturated sigmoid a hair past t_max


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by batch norm and ReLU (Lee and Chun, Sec. 6.1)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A reduced FBPConvNet / U-Net on real channels: (B, H, W) x in_channels -> features (B, widths[0], H, W).

    As Lee and Chun, Sec. 6.1: 3x3 convolutions with batch norm and ReLU, 2x2 max pooling in the
    first half, 2x2 transposed convolutions ("deconvolution", with batch norm and ReLU) and skip
    connections in the second half. Their reduced network has 7M parameters but its widths are not
    stated; ``widths=(16, 32, 64)`` (three levels, two poolings, about 0.1M parameters) is small
    enough for the book's CPU runs. H and W must be divisible by 2**(len(widths) - 1). The heads
    on top are ``StepNet``, ``DiagNet`` and ``DirectUNet`` (the paper's non-iterative comparison).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), in_channels: int = 2):
        super().__init__()
        widths = tuple(widths)
        if len(widths) < 2 or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f"widths must hold at least two positive integers, got {widths!r}")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
        self.widths, self.in_channels = widths, in_channels
        self.down = nn.ModuleList(_conv_block(c_in, c_out) for c_in, c_out in zip((in_channels,) + widths[:-1], widths))
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(wide, narrow, 2, stride=2, bias=False), nn.BatchNorm2d(narrow),
                          nn.ReLU(inplace=True))
            for narrow, wide in zip(widths[:-1], widths[1:])
        )
        self.merge = nn.ModuleList(_conv_block(2 * w, w) for w in widths[:-1])

    def features(self, *channels: torch.Tensor) -> torch.Tensor:
        """``in_channels`` real (B, H, W) channels -> (B, widths[0], H, W) features, in the network's dtype."""
        if len(channels) != self.in_channels:
            raise ValueError(f"the network takes {self.in_channels} channels, got {len(channels)}")
        first = channels[0]
        if first.dim() != 3 or any(c.shape != first.shape for c in channels):
            raise ValueError(f"the inputs must all have shape (B, H, W), got {[tuple(c.shape) for c in channels]}")
        factor = 2 ** (len(self.widths) - 1)
        if first.shape[-2] % factor or first.shape[-1] % factor:
            raise ValueError(
                f"H and W must be divisible by {factor} for {len(self.widths)} levels, got {tuple(first.shape)}")
        h = torch.stack(channels, dim=1).to(self.down[0][0].weight.dtype)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else nn.functional.max_pool2d(h, 2))
            skips.append(h)
        for up, merge, skip in zip(reversed(self.up), reversed(self.merge), reversed(skips[:-1])):
            h = merge(torch.cat([skip, up(h)], dim=1))
        return h


class _StepsizeNet(UNet):
    """A ``UNet`` on [x_k, grad f(x_k)] in the coefficient domain whose head gives steps in [t_min, t_max]:
    two channels for real coefficients, four (real and imaginary parts) with ``complex_inputs``, as Lee
    and Chun feed complex images (Sec. 6.3).

    The head (``StepNet`` or ``DiagNet``) starts at zero, so an untrained network answers
    sqrt(t_min t_max) everywhere: the 1/L step of a normalised problem for the default bounds.
    """

    def __init__(self, widths: tuple[int, ...], t_min: float, t_max: float, complex_inputs: bool = False):
        super().__init__(widths, 4 if complex_inputs else 2)
        if not (math.isfinite(t_min) and math.isfinite(t_max) and 0 < t_min <= t_max):
            raise ValueError(f"need finite bounds 0 < t_min <= t_max, got t_min={t_min!r}, t_max={t_max!r}")
        self.t_min, self.t_max = float(t_min), float(t_max)

    def inputs(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The features of (x, grad), real channels of both."""
        if x.shape != grad.shape:
            raise ValueError(f"x and grad must have the same shape, got {tuple(x.shape)} and {tuple(grad.shape)}")
        if x.is_complex():
            return self.features(x.real, x.imag, grad.real, grad.imag)
        return self.features(x, grad)


class StepNet(_StepsizeNet):
    """One stepsize t_k per sample from (x_k, grad f(x_k)): ``net(x, grad)`` (B, H, W) x 2 -> (B,) in [t_min, t_max].

    The U-Net's features are averaged over the image (global pooling, so any size works) and one
    fully connected layer gives a number per sample (Lee and Chun, Sec. 6.1: "one fully connected
    layer was added at the end"), mapped into [t_min, t_max] by ``bounded_positive``.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), t_min: float = 0.01, t_max: float = 100.0,
                 complex_inputs: bool = False):
        super().__init__(widths, t_min, t_max, complex_inputs)
        self.head = nn.Linear(self.widths[0], 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        u = self.head(self.inputs(x, grad).mean(dim=(-2, -1)))[:, 0]
        return bounded_positive(u.to(x.real.dtype), self.t_min, self.t_max)


class DiagNet(_StepsizeNet):
    """A diagonal scaling d_k, one positive value per coefficient: ``net(x, grad)`` -> (B, H, W) in [t_min, t_max].

    Lee and Chun, Sec. 4.1, only say that the output dimension becomes the number of coefficients. The
    diagonal here has Algorithm 1's form t_k D_k: a stepsize t_k in [t_min, t_max] from the pooled features
    (``step_head``, as ``StepNet``) times a per-coefficient factor in [1 / delta, delta] from a 1x1
    convolution of the features (``head``), the product clipped to [t_min, t_max]. Both heads start at
    zero, so an untrained network answers sqrt(t_min t_max) everywhere. The scale of the step is thus
    learned from the whole image, as by ``StepNet``, and the factor only redistributes it between
    coefficients; a single output per coefficient would have to find the scale coefficient by coefficient.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), t_min: float = 0.01, t_max: float = 100.0,
                 complex_inputs: bool = False, delta: float = 10.0):
        super().__init__(widths, t_min, t_max, complex_inputs)
        if not (math.isfinite(delta) and delta >= 1):
            raise ValueError(f"delta must be a finite number >= 1, got {delta!r}")
        self.delta = float(delta)
        self.step_head = nn.Linear(self.widths[0], 1)
        self.head = nn.Conv2d(self.widths[0], 1, 1)
        for layer in (self.step_head, self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        h = self.inputs(x, grad)
        step = bounded_positive(self.step_head(h.mean(dim=(-2, -1)))[:, 0].to(x.real.dtype), self.t_min, self.t_max)
        factor = bounded_positive(self.head(h)[:, 0].to(x.real.dtype), 1 / self.delta, self.delta)
        return (step[:, None, None] * factor).clamp(self.t_min, self.t_max)


class DirectUNet(UNet):
    """The paper's non-iterative comparison (Lee and Chun, Sec. 6.1): a U-Net trained to map the
    measurements straight to the converged image W^T x*. ``net(zero_filled)``: A^H y (B, H, W), real or
    complex, -> (B, H, W) real.

    Its input channels are the real and imaginary parts of A^H y (Lee and Chun feed partial-Fourier
    images to their networks as real and imaginary channels, Sec. 6.3); its output is Re(A^H y) plus a
    1x1 convolution of the features, the input-to-output skip of FBPConvNet. The head starts at zero,
    so an untrained network returns Re(A^H y). ``skip=False`` leaves the skip out (the paper does not
    say whether its U-Net has one): the output is the head alone.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), skip: bool = True):
        super().__init__(widths)
        self.skip = skip
        self.head = nn.Conv2d(self.widths[0], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, zero_filled: torch.Tensor) -> torch.Tensor:
        real = zero_filled.real if zero_filled.is_complex() else zero_filled
        imag = zero_filled.imag if zero_filled.is_complex() else torch.zeros_like(zero_filled)
        correction = self.head(self.features(real, imag))[:, 0].to(real.dtype)
        return real + correction if self.skip else correction


# --------------------------------------------------------------------------------------------- #
# Solvers
# --------------------------------------------------------------------------------------------- #


@dataclass
class Solution:
    """What ``solve`` returns.

    ``image`` (B, H, W): W^T of the last iterate; ``coefficients`` (B, H, W): the last iterate;
    ``objective`` (iterations + 1, B): F(x_k) from x_0 on; ``nmse_db`` (iterations + 1, B): NMSE in
    dB of W^T x_k against the reference image (None without one); ``network_used`` (iterations, B),
    SGP only: whether iteration k's direction held the network's part (Algorithm 3's useCNN).
    """

    image: torch.Tensor
    coefficients: torch.Tensor
    objective: torch.Tensor
    nmse_db: torch.Tensor | None = None
    network_used: torch.Tensor | None = None


def _network_step(out, diagonal: bool, x: torch.Tensor, t_min: torch.Tensor, t_max: torch.Tensor,
                  fallback: torch.Tensor) -> torch.Tensor:
    """The network's answer as a stepsize (B, 1, 1) or a diagonal (B, H, W) inside [t_min, t_max].

    Out-of-range values are clipped (0, negatives and -inf to t_min; 1e6 and +inf to t_max); NaN
    has no nearest bound, so it becomes ``fallback`` (the 1/L step) with a warning.
    """
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the network must return a torch.Tensor, got {type(out).__name__}")
    if out.is_complex():
        raise TypeError(f"the network must return real stepsizes, got dtype {out.dtype}")
    batch = x.shape[0]
    if diagonal:
        if out.numel() != x.numel() or out.shape[0] != batch:
            raise ValueError(
                f"sgp_diag needs one value per coefficient, shape {tuple(x.shape)}, got {tuple(out.shape)}")
        out = out.reshape(x.shape)
    else:
        if out.numel() != batch or (out.dim() > 0 and out.shape[0] != batch):
            raise ValueError(f"sgp_step needs one stepsize per sample, shape ({batch},), got {tuple(out.shape)}")
        out = out.reshape(batch, 1, 1)
    out = out.to(dtype=x.real.dtype, device=x.device)
    nan = torch.isnan(out)
    if nan.any():
        warnings.warn("the stepsize network returned NaN; using the 1/L step there", RuntimeWarning, stacklevel=3)
        out = torch.where(nan, fallback, out)
    return torch.minimum(torch.maximum(out, t_min), t_max)


def _model_decrease(problem: L1Synthesis, x: torch.Tensor, z: torch.Tensor, grad: torch.Tensor,
                    l1_x: torch.Tensor) -> torch.Tensor:
    """h(z) = <grad f(x), z> + lam (||x + z||_1 - ||x||_1) (B,): negative for a descent direction."""
    return _inner(grad, z) + problem.l1(x + z) - l1_x


def armijo_search(problem: L1Synthesis, x: torch.Tensor, z: torch.Tensor, grad: torch.Tensor, l1_x: torch.Tensor,
                 h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Armijo backtracking (Algorithm 4's inner loop), per sample: gamma_2 = ETA_STEP^i for the first
    i <= MAX_BACKTRACKS with F(x + gamma_2 z) - F(x) <= ARMIJO_BETA gamma_2 h(z).

    f is quadratic, so F(x + gamma z) - F(x) = gamma <grad f(x), z> + gamma^2 / 2 ||A W^T z||^2
    + lam (||x + gamma z||_1 - ||x||_1), exactly: one application of A per search, and a change
    computed directly rather than as a difference of two nearly equal objectives. A direction with
    h(z) >= 0 (or NaN) is no descent direction; it gets no step, since the test would otherwise let F
    rise by up to ARMIJO_BETA gamma h(z).
    Returns gamma_2 (B,), 0 where no i passes, and the number of backtracks i (B,).
    """
    slope = _inner(grad, z)
    curvature = 0.5 * _sq_norm(problem.forward(z))
    gamma = torch.ones_like(h)
    backtracks = torch.zeros_like(h)
    searching = h < 0
    for i in range(MAX_BACKTRACKS + 1):
        step = _per_sample(gamma, x)
        change = gamma * slope + gamma**2 * curvature + problem.l1(x + step * z) - l1_x
        searching = searching & ~(change <= ARMIJO_BETA * gamma * h)
        if not searching.any() or i == MAX_BACKTRACKS:
            break
        gamma = torch.where(searching, gamma * ETA_STEP, gamma)
        backtracks = backtracks + searching.to(h.dtype)
    return torch.where(searching | ~(h < 0), torch.zeros_like(gamma), gamma), backtracks


def _check_iterate(x0, problem: L1Synthesis) -> torch.Tensor:
    if x0 is None:
        return problem.adjoint(problem.y)  # the zero-filled start of Lee and Chun, Sec. 6.3
    problem._check(x0, "x0")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or Inf")
    return x0.to(problem.dtype)


def _bound(value, default: torch.Tensor, name: str) -> torch.Tensor:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return torch.full_like(default, float(value))


def step_bounds(t_lip: torch.Tensor, t_min: float | None = None, t_max: float | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The SGP methods' stepsize bounds (B, 1, 1) x 2: ``t_min`` and ``t_max``, by default
    [t_L / STEP_RANGE, t_L * STEP_RANGE] per sample, t_L = ``t_lip`` (B, 1, 1)."""
    low = _bound(t_min, t_lip / STEP_RANGE, "t_min")
    high = _bound(t_max, t_lip * STEP_RANGE, "t_max")
    if (low > high).any():
        raise ValueError(f"t_min must not exceed t_max, got t_min={t_min!r}, t_max={t_max!r}")
    return low, high


def sgp_iteration(problem: L1Synthesis, x: torch.Tensor, grad: torch.Tensor, d: torch.Tensor | None,
                  t_lip: torch.Tensor, use_net: torch.Tensor, weight: torch.Tensor, drs: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One iteration of Algorithm 4 (with Algorithm 3 when ``drs``), as ``solve`` describes it.

    Args:
        x, grad: the iterate x_k and grad f(x_k), (B, H, W).
        d: the network's step, (B, 1, 1) or (B, H, W) inside its bounds (``_network_step``); None
            when no sample uses the network any more.
        t_lip: 1/L, (B, 1, 1).
        use_net: (B,) bool, Algorithm 3's useCNN; weight: (B,) gamma_1.
    Returns:
        x_k+1 (B, H, W), and the updated use_net and weight.
    """
    l1_x = problem.l1(x)
    z_lip = problem.prox(x - t_lip * grad, t_lip) - x  # z_2
    z = z_lip
    if d is not None:
        x_net = problem.prox(x - d * grad, d)
        if drs:
            z_net = problem.prox(x_net - t_lip * problem.gradient(x_net), t_lip) - x  # z_1
            blend = weight * sample_norms(z_net) > DRS_ALPHA * (1 - weight) * sample_norms(z_lip)
            use_net = use_net & blend
            w = _per_sample(weight, x)
            z_net = w * z_net + (1 - w) * z_lip
        else:
            z_net = x_net - x
        z = torch.where(_per_sample(use_net, x), z_net, z_lip)
    gamma, backtracks = armijo_search(problem, x, z, grad, l1_x, _model_decrease(problem, x, z, grad, l1_x))
    weight = weight * ETA_WEIGHT**backtracks
    stuck = use_net & (gamma == 0)  # no descent direction, or no Armijo step along it
    if stuck.any():  # -> the 1/L direction, and the network is dropped
        use_net = use_net & ~stuck
        z = torch.where(_per_sample(stuck, x), z_lip, z)
        h = _model_decrease(problem, x, z, grad, l1_x)
        gamma = torch.where(stuck, armijo_search(problem, x, z, grad, l1_x, h)[0], gamma)
    return x + _per_sample(gamma, x) * z, use_net, weight


@torch.no_grad()
def solve(problem: L1Synthesis, method: str, iterations: int, net=None, x0: torch.Tensor | None = None,
          reference: torch.Tensor | None = None, *, t_min: float | None = None, t_max: float | None = None,
          drs: bool = True) -> Solution:
    """Minimise an ``L1Synthesis`` problem with one of ``METHODS``, every sample on its own.

    * ``"ista"`` / ``"pgm"``: proximal gradient (eq. 2) with t = 1/L, L the power-iteration estimate
      (``problem.lipschitz_constant``). Monotone for any step below 2 / ||A||^2, so an estimate that
      is a little low does no harm.
    * ``"fista_b"``: FISTA with backtracking (Beck and Teboulle 2009). Starts from L_0 =
      ``FISTA_START`` * L, so that the backtracking, not the estimate, sets the step, and doubles L
      until f(p) <= f(v) + <grad f(v), p - v> + L/2 ||p - v||^2, which for this quadratic f reads
      ||A W^T (p - v)||^2 <= L ||p - v||^2. L never decreases.
    * ``"sgp_step"`` / ``"sgp_diag"``: Algorithm 4 with the DRS of Algorithm 3 (Lee and Chun).
      At x_k, with g = grad f(x_k) and t_L = 1/L:

          d      = net(x_k, g) in [t_min, t_max]       (a (B,) stepsize, or (B, H, W) diagonal)
          x~     = T_{lam d}(x_k - d g)                 (the network's step, eq. 6)
          z_1    = T_{lam t_L}(x~ - t_L grad f(x~)) - x_k   (then a 1/L step from x~, as eq. 8)
          z_2    = T_{lam t_L}(x_k - t_L g) - x_k           (the plain 1/L direction)
          z      = gamma_1 z_1 + (1 - gamma_1) z_2 if gamma_1 ||z_1|| > alpha (1 - gamma_1) ||z_2||,
                   else z_2, and the network is not asked again (useCNN <- false)
          x_k+1  = x_k + gamma_2 z, gamma_2 = 1, 1/2, 1/4, ... until the Armijo test passes;
                   every halving also halves gamma_1 (gamma_1 starts at 1).

      The Armijo test is the composite form of (5) (module docstring), and a z that is no descent
      direction (h(z) >= 0) or that finds no step is replaced by z_2, with the network dropped, so
      F(x_k+1) <= F(x_k) whatever the network returns (up to the round-off of F itself: about 1e-7
      relative in float32 near convergence, as for ISTA). Bounds: d is clipped to [t_min, t_max],
      default [t_L / 100, 100 t_L] per sample (``STEP_RANGE``): wide enough for steps far past 1/L
      (useful along the flat directions of deblurring), and it keeps D_k's eigenvalues in a bounded
      interval as Algorithm 1 requires. 0, negatives and -inf become t_min, 1e6 and +inf t_max, NaN
      becomes t_L (with a RuntimeWarning). ``drs=False`` drops Algorithm 3 and searches along
      Algorithm 1's direction z = T_{lam d}(x_k - d g) - x_k (with t_k D_k = diag(d)), which is a
      descent direction for every positive d.

    Args:
        problem: the ``L1Synthesis`` to minimise.
        method: one of ``METHODS``.
        iterations: number of iterations, >= 0.
        net: for the SGP methods, ``net(x_k, grad_k)`` -> (B,) stepsizes (``StepNet``) or a (B, H, W)
            diagonal (``DiagNet``); its mode is left as it is (call ``net.eval()`` for batch norm's
            running statistics).
        x0: starting coefficients (B, H, W); default ``problem.adjoint(problem.y)`` = W Re(A^H y), the
            zero-filled image (Lee and Chun, Sec. 6.3), divided by L_0 where the problem is normalised.
        reference: image (B, H, W) for the NMSE history.
        t_min, t_max: stepsize bounds of the SGP methods (numbers; default relative to t_L, above).
        drs: SGP with Algorithm 3 (True) or Algorithm 1's plain direction (False).
    Returns:
        a ``Solution``. No autograd graph is kept.
    """
    if not isinstance(problem, L1Synthesis):
        raise TypeError(f"problem must be an L1Synthesis, got {type(problem).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    sgp = method.startswith("sgp")
    if sgp and not callable(net):
        raise ValueError(f"method {method!r} needs a stepsize network net(x, grad), got {net!r}")
    if not sgp and net is not None:
        raise ValueError(f"method {method!r} takes no network; the SGP methods are {METHODS[3:]}")
    if reference is not None and (not isinstance(reference, torch.Tensor) or tuple(reference.shape) != problem.shape):
        raise ValueError(
            f"reference must be an image of shape {problem.shape}, got {getattr(reference, 'shape', reference)}")
    x = _check_iterate(x0, problem)
    t_lip = _per_sample(1.0 / problem.lipschitz_constant, x)

    # ISTA and FISTA-b keep A W^T x beside x: A is linear, so the objective, the next gradient and the
    # backtracking test share one application of A (and one of A^H) per iteration.
    ax = problem.forward(x)
    objective = [problem.objective(x, ax)]
    errors = [nmse_db(problem.image(x), reference)] if reference is not None else None
    used_history = []

    def record(x_new: torch.Tensor, ax_new: torch.Tensor | None = None) -> None:
        objective.append(problem.objective(x_new, ax_new))
        if errors is not None:
            errors.append(nmse_db(problem.image(x_new), reference))

    if method in ("ista", "pgm"):
        for _ in range(iterations):
            x = problem.prox(x - t_lip * problem.adjoint(ax - problem.y), t_lip)
            ax = problem.forward(x)
            record(x, ax)

    elif method == "fista_b":
        lip = FISTA_START * problem.lipschitz_constant
        v, av, momentum = x, ax, 1.0
        for _ in range(iterations):
            grad = problem.adjoint(av - problem.y)
            for _ in range(FISTA_MAX_GROWTHS + 1):
                step = _per_sample(1.0 / lip, v)
                p = problem.prox(v - step * grad, step)
                ap = problem.forward(p)
                small = _sq_norm(ap - av) <= lip * _sq_norm(p - v)
                if not small.all():  # A p - A v cancels as p nears v: ask A (p - v) itself before growing L
                    small = _sq_norm(problem.forward(p - v)) <= lip * _sq_norm(p - v)
                if small.all():
                    break
                lip = torch.where(small, lip, FISTA_GROWTH * lip)
            else:
                raise RuntimeError("FISTA-b: the Lipschitz constant kept growing; is the operator linear and finite?")
            momentum_new = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
            weight = 1 + (momentum - 1) / momentum_new  # v = p + (t_k - 1) / t_k+1 (p - x), in one pass
            v, av = torch.lerp(x, p, weight), torch.lerp(ax, ap, weight)
            x, ax, momentum = p, ap, momentum_new
            record(x, ax)

    else:
        diagonal = method == "sgp_diag"
        low, high = step_bounds(t_lip, t_min, t_max)
        batch = x.shape[0]
        use_net = torch.ones(batch, dtype=torch.bool, device=x.device)
        weight = torch.ones(batch, dtype=x.real.dtype, device=x.device)  # gamma_1
        for _ in range(iterations):
            grad = problem.gradient(x)
            d = _network_step(net(x, grad), diagonal, x, low, high, t_lip) if use_net.any() else None
            x, use_net, weight = sgp_iteration(problem, x, grad, d, t_lip, use_net, weight, drs)
            used_history.append(use_net.clone())
            record(x)

    return Solution(
        image=problem.image(x),
        coefficients=x,
        objective=torch.stack(objective),
        nmse_db=torch.stack(errors) if errors is not None else None,
        network_used=(torch.stack(used_history) if used_history else x.new_zeros((0, x.shape[0]), dtype=torch.bool))
        if sgp else None,
    )
