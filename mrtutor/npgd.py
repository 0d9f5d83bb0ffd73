"""Neural proximal gradient descent (Mardani, Sun, Vasanawala, Papyan, Monajemi, Pauly and Donoho, NeurIPS 2018).

Proximal gradient descent for min_x 1/2 ||y - A x||^2 + psi(x) alternates a gradient step on the
data term with the proximal map of psi (paper eq. 2). Neural PGD unrolls T iterations and learns the
proximal map, one network shared by every iteration, together with the step alpha (eqs. 3-4):

    s_{t+1} = alpha A^H y + (I - alpha A^H A) x_t          (gradient step: data consistency)
    x_{t+1} = P(s_{t+1})                                    (learned proximal)

from x_0 = 0, so that s_1 = alpha A^H y. Training minimises (P2):
beta ||x_T - x*||^2 + (1 - beta) sum_t ||y - A x_t||^2, beta = 0.75 (``npgd_loss``).

The authors' TensorFlow code (github.com/MortezaMardani/Neural-PGD) departs from the paper: it
applies the proximal first and then replaces the sampled k-space ("hard" data consistency, from
x_0 = A^H y), hard-codes two pre-activation residual blocks, trains on the last iterate alone, and
normalises by batch statistics at test time too. ``NeuralPGD`` builds the paper's version and offers
the code's step as ``consistency="hard"``.

Section 4 asks when the iterates contract towards x*. Written as sigma(z) = D(z) z, every ReLU of the
proximal is a mask; with the masks frozen at x* the proximal is one linear map M*, and the error
obeys ||x_{t+1} - x*|| <= (eta_1^t + eta_2^t) ||x_t - x*|| + eps (eq. 14). ``contraction`` measures
eta_1 (eq. 11), eta_2 (eq. 12) and the normalised error along the iterates.

Sec. 5.3 checks the analysis on 2x super-resolution with a proximal that is one nonlinearity after a
linear CNN: ``SuperResolutionPGD`` with ``LinearCNNProximal`` and ``operators.AveragePooling``,
trained by the recipe ``npgd_sr`` on ``data.superresolution_dataset``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from mrtutor.cg import sample_norms
from mrtutor.data.natural import superresolution_datasets
from mrtutor.fft import channels_to_complex, complex_to_channels
from mrtutor.operators import AveragePooling
from mrtutor.recipes import Option, Recipe, complex_mse, register
from mrtutor.sense import Sense

CONSISTENCY = ("gradient", "hard")


ACTIVATIONS = ("relu", "swish")


class Gate(nn.Module):
    """An activation written as sigma(z) = D(z) z (Sec. 3.2): a ReLU, D(z) = 1[z > 0], or a Swish
    (Ramachandran et al. 2017), D(z) = 1 / (1 + e^(-beta z)) with a learned beta (``swish_beta`` its start).

    For the contraction analysis the mask can be recorded (``record``) and then frozen: a frozen gate
    multiplies by the recorded mask whatever its input, which turns the network into the linear map
    of eq. 6 (with its biases, an affine one).
    """

    def __init__(self, activation: str = "relu", swish_beta: float = 1.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.beta = nn.Parameter(torch.tensor(float(swish_beta))) if activation == "swish" else None
        self.record = False
        self.mask: torch.Tensor | None = None
        self.frozen = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            return z * self.mask
        if self.activation == "relu":
            if self.record:
                self.mask = (z > 0).to(z.dtype)
            return torch.relu(z)
        mask = torch.sigmoid(self.beta * z)
        if self.record:
            self.mask = mask.detach()
        return z * mask


class ResidualBlock(nn.Module):
    """x + [conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN -> ReLU](x), ``features`` maps throughout (Sec. 5.1)."""

    def __init__(self, features: int):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features), Gate(),
            nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features), Gate(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class ResNetProximal(nn.Module):
    """The proximal of Sec. 5.1: residual blocks, then three 1x1 convolutions, the first two with ReLU.

    Complex images (B, H, W) in and out, two real channels inside. A 1x1 convolution lifts the two
    channels to ``features`` maps before the first block; the paper does not say how, and the
    authors' code does it this way.

    ``residual``: P(s) = s + N(s) with N the network above, instead of P(s) = N(s). Neither the paper
    nor the authors' code has this skip over the whole proximal; without it the network must first
    learn to pass the image through its ReLUs, and it learns far more slowly (chapter 4 compares the two).
    """

    def __init__(self, blocks: int = 1, features: int = 128, residual: bool = False):
        super().__init__()
        if blocks < 1 or features < 1:
            raise ValueError(f"blocks and features must be >= 1, got blocks={blocks}, features={features}")
        self.residual = residual
        self.lift = nn.Conv2d(2, features, 1)
        self.blocks = nn.Sequential(*[ResidualBlock(features) for _ in range(blocks)])
        self.head = nn.Sequential(nn.Conv2d(features, features, 1), Gate(), nn.Conv2d(features, features, 1), Gate(),
                                  nn.Conv2d(features, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Under mixed precision the CNN answers in bfloat16; the complex image stays in x's precision.
        out = channels_to_complex(self.head(self.blocks(self.lift(complex_to_channels(x)))).to(x.real.dtype))
        return x + out if self.residual else out


class LinearCNNProximal(nn.Module):
    """The super-resolution proximal of Sec. 5.3: ``layers`` linear convolutions (1 -> ``features`` ->
    ... -> 1 channels, ``kernel_size`` x ``kernel_size``, with biases, no activation between them), then
    one Swish: P(x) = sigma(W x + b), "effectively a single layer nonlinear neural network".

    Real images (B, H, W) in and out. The convolutions are circular (periodic padding) and computed in
    the Fourier domain: the layers compose into one transfer function per frequency, which costs
    the same for the 32 x 32 kernels as for 8 x 8 ones, where a direct 32 x 32 convolution would take
    hours per epoch on a CPU. ``convolve`` is the same map computed layer by layer with ``conv2d``.

    The paper gives neither the width nor the initialisation, nor the images' scale, which decides
    what a Swish does: z sigmoid(z) is far from z on [0, 1] (0.73 at z = 1), so with images in [0, 1]
    no linear map before it can make P close to the identity. The Swish of Ramachandran et al. has a
    parameter, z sigmoid(beta z); here beta is learned and starts at ``swish_beta`` = 10, where the
    Swish keeps a grey level of 0.5 to within 1 %. Each layer starts as the identity (a centred delta,
    averaged over its input channels) plus small noise, so that P starts as that Swish and the 25
    unrolled copies start stable.
    """

    def __init__(self, layers: int = 5, features: int = 8, kernel_size: int = 8, init_noise: float = 1e-3,
                 swish_beta: float = 10.0):
        super().__init__()
        if layers < 2 or features < 1 or kernel_size < 1:
            raise ValueError(f"need layers >= 2, features >= 1, kernel_size >= 1; got {layers}, {features}, {kernel_size}")
        widths = [1] + [features] * (layers - 1) + [1]
        self.kernel_size = kernel_size
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        centre = kernel_size // 2
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            weight = init_noise * torch.randn(c_out, c_in, kernel_size, kernel_size) / kernel_size
            weight[:, :, centre, centre] += 1 / c_in
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.zeros(c_out)))
        self.gate = Gate("swish", swish_beta)

    def _padding(self) -> tuple[int, int, int, int]:
        centre = self.kernel_size // 2
        return (centre, self.kernel_size - 1 - centre) * 2

    def transfer(self, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """W x + b = irfft2(h * rfft2(x)) + offset: the transfer function h (H, W // 2 + 1) of the
        composed convolutions and the constant ``offset`` their biases add up to."""
        k, centre = self.kernel_size, self.kernel_size // 2
        if k > min(shape):
            raise ValueError(f"kernel size {k} is larger than the image {shape}")
        h = offset = None
        for weight, bias in zip(self.weights, self.biases):
            # conv2d correlates: out[i] = sum_u w[u] x[i + u - centre], a convolution with w flipped
            # and placed so that its tap u lands at (centre - u) mod N.
            kernel = nn.functional.pad(weight.flip(-2, -1), (0, shape[1] - k, 0, shape[0] - k))
            spectrum = torch.fft.rfft2(torch.roll(kernel, (centre - k + 1, centre - k + 1), (-2, -1)))
            h = spectrum[:, 0] if h is None else torch.einsum("oihw,ihw->ohw", spectrum, h)
            gain = weight.sum((-2, -1))  # the response to a constant image
            offset = bias if offset is None else gain @ offset + bias
        return h[0], offset[0]

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """W x + b for real images (B, H, W)."""
        if x.is_complex():
            raise TypeError("the super-resolution proximal takes real images")
        h, offset = self.transfer(tuple(x.shape[-2:]))
        return torch.fft.irfft2(h * torch.fft.rfft2(x), s=x.shape[-2:]) + offset

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """W x + b computed layer by layer with circular ``conv2d`` (the reference ``linear`` is tested against)."""
        z = x[:, None]
        for weight, bias in zip(self.weights, self.biases):
            z = nn.functional.conv2d(nn.functional.pad(z, self._padding(), mode="circular"), weight, bias)
        return z[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.linear(x))


class NeuralPGD(nn.Module):
    """T unrolled proximal gradient iterations with one learned proximal and a learned step alpha.

    Called like ``MoDL``: ``model(kspace, maps, mask) -> (B, H, W)`` complex, the last iterate x_T.

    Args:
        iterations: T, the unrolled iterations (copies of the proximal) of training and of ``forward``.
        blocks, features, residual: the ``ResNetProximal`` that is P (Sec. 5.1).
        alpha: initial step. For single-coil data A^H A = F^H M F is a projection, so at alpha = 1 the
            gradient step replaces the sampled k-space of x_t by the data.
        consistency: ``"gradient"`` (the paper, eqs. 3-4) or ``"hard"`` (the authors' code:
            x_{t+1} = D(P(x_t)) with D the step at alpha = 1, from x_0 = A^H y; alpha is not learned).
        beta: the weight of the image error in (P2), kept here for the training loss.
        proximal: any other P, a module from complex images (B, H, W) to complex images, instead of
            the ResNet (the super-resolution's linear network, or a hand-made map in a test).
    """

    def __init__(self, iterations: int = 10, blocks: int = 1, features: int = 128, residual: bool = False,
                 alpha: float = 1.0, consistency: str = "gradient", beta: float = 0.75, proximal: nn.Module | None = None):
        super().__init__()
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if consistency not in CONSISTENCY:
            raise ValueError(f"consistency must be one of {CONSISTENCY}, got {consistency!r}")
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.proximal = ResNetProximal(blocks, features, residual) if proximal is None else proximal
        self.iterations = iterations
        self.consistency = consistency
        self.beta = float(beta)
        alpha = torch.tensor(float(alpha))
        if consistency == "gradient":
            self.alpha = nn.Parameter(alpha)
        else:  # saved with the weights, so that every checkpoint has the same keys
            self.register_buffer("alpha", alpha)

    def gradient_step(self, x: torch.Tensor, op, aty: torch.Tensor) -> torch.Tensor:
        """g(x; y) = alpha A^H y + (I - alpha A^H A) x, eq. 3."""
        alpha = self.alpha.to(aty.real.dtype)
        return x + alpha * (aty - op.normal(x))

    def step(self, x: torch.Tensor, op, aty: torch.Tensor) -> torch.Tensor:
        """x_{t+1} from x_t: P(g(x_t)), or the code's D(P(x_t))."""
        if self.consistency == "gradient":
            return self.proximal(self.gradient_step(x, op, aty))
        z = self.proximal(x)
        return z + (aty - op.normal(z))

    def iterates(self, kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor,
                 steps: int | None = None) -> list[torch.Tensor]:
        """[x_1, ..., x_steps] (each (B, H, W)); ``steps`` defaults to T and may run past it."""
        op = Sense(maps, mask)
        return self.iterates_for(op, op.adjoint(kspace), steps)

    def iterates_for(self, op, aty: torch.Tensor, steps: int | None = None) -> list[torch.Tensor]:
        """The iterates for any operator ``op`` (with ``normal``) and A^H y; what ``iterates`` runs."""
        x = torch.zeros_like(aty) if self.consistency == "gradient" else aty
        out = []
        for _ in range(self.iterations if steps is None else steps):
            x = self.step(x, op, aty)
            out.append(x)
        return out

    def forward(self, kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.iterates(kspace, maps, mask)[-1]


class SuperResolutionPGD(NeuralPGD):
    """Neural PGD for super-resolution (Sec. 5.3): ``AveragePooling(factor)`` as A, the
    ``LinearCNNProximal`` as P, T = 25. Called as ``model(y)`` on low-resolution images (B, H/f, W/f),
    it returns x_T (B, H, W). The step starts at alpha = factor^2 = 1 / ||A||^2, where the gradient
    step puts the measured block means into the image (``AveragePooling``)."""

    def __init__(self, factor: int = 2, kernel_size: int = 8, features: int = 8, layers: int = 5,
                 iterations: int = 25, beta: float = 0.75):
        super().__init__(iterations, alpha=float(factor**2), beta=beta,
                         proximal=LinearCNNProximal(layers, features, kernel_size))
        self.operator = AveragePooling(factor)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.iterates_for(self.operator, self.operator.adjoint(y))[-1]


def npgd(iterations: int = 10, blocks: int = 1, features: int = 128, residual: bool = False, alpha: float = 1.0,
         consistency: str = "gradient", beta: float = 0.75) -> NeuralPGD:
    """Neural PGD with the ResNet proximal of Sec. 5.1. ``iterations=1`` is the paper's deep ResNet
    baseline: one copy, P(alpha A^H y), a ResNet applied to the (scaled) zero-filled image."""
    return NeuralPGD(iterations, blocks, features, residual, alpha, consistency, beta)


# ---------------------------------------------------------------------------------------------
# Contraction analysis (Sec. 4)
# ---------------------------------------------------------------------------------------------

@contextmanager
def masks_frozen_at(proximal: nn.Module, x: torch.Tensor):
    """Record the mask of every ``Gate`` of ``proximal`` at input ``x`` and yield M*: a function that
    applies ``proximal`` with those masks frozen, the affine map (linear map plus biases) of eqs. 6-7.
    Outside M*, ``proximal`` keeps its own masks. Batch norm must be in eval mode (affine too)."""
    if proximal.training:
        raise ValueError("the contraction analysis needs the proximal in eval mode (batch norm as an affine map)")
    gates = [m for m in proximal.modules() if isinstance(m, Gate)]
    for gate in gates:
        gate.record = True
    try:
        proximal(x)
        for gate in gates:
            gate.record = False

        def m_star(v: torch.Tensor) -> torch.Tensor:
            for gate in gates:
                gate.frozen = True
            try:
                return proximal(v)
            finally:
                for gate in gates:
                    gate.frozen = False

        yield m_star
    finally:
        for gate in gates:
            gate.record, gate.frozen, gate.mask = False, False, None


@torch.no_grad()
def contraction(model: NeuralPGD, op, target: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
    """eta_1^t, eta_2^t (eqs. 11-12) and the NRMSE ||x_t - x*|| / ||x*|| along ``steps`` iterates.

    As Sec. 4 assumes, the data are noiseless, y = A x* with x* = ``target`` (B, H, W) and A = ``op``
    (any operator with ``normal``: ``Sense``, or the super-resolution's average pooling), and the
    perturbations are the iterates' own errors delta_t = x_t - x* (Sec. 5.3 evaluates eqs. 11-12
    on them). With s_{t+1} = x* + (I - alpha A^H A) delta_t the next input of the proximal and M*
    its masks frozen at x*:

        eta_1^t = ||M* (I - alpha A^H A) delta_t|| / ||delta_t||
        eta_2^t = ||(M_t - M*) s_{t+1}|| / ||delta_t||,   M_t s_{t+1} = P(s_{t+1}) = x_{t+1}

    so that x_{t+1} - x* = M* (I - alpha A^H A) delta_t + (M_t - M*) s_{t+1} + xi with the
    representation error xi = M* x* - x* = P(x*) - x* of (A1). Returns ``eta1``, ``eta2`` and
    ``nrmse`` as (steps, B) tensors for t = 0 .. steps - 1 (x_0 = 0), and ``xi`` = ||xi|| / ||x*|| (B,).
    """
    if model.consistency != "gradient":
        raise ValueError("the contraction analysis of Sec. 4 is for the gradient step (consistency='gradient')")
    aty = op.normal(target)  # A^H y for y = A x*
    x_star_norm = sample_norms(target)
    eta1, eta2, nrmse = [], [], []
    x = torch.zeros_like(target)
    with masks_frozen_at(model.proximal, target) as m_star:
        at_star = m_star(target)
        for _ in range(steps):
            size = sample_norms(x - target)
            s = model.gradient_step(x, op, aty)
            masked = m_star(s)
            x_next = model.proximal(s)
            eta1.append(sample_norms(masked - at_star) / size)  # the biases cancel: the linear part of M*
            eta2.append(sample_norms(x_next - masked) / size)
            nrmse.append(size / x_star_norm)
            x = x_next
    return {"eta1": torch.stack(eta1), "eta2": torch.stack(eta2), "nrmse": torch.stack(nrmse),
            "xi": sample_norms(at_star - target) / x_star_norm}


# ---------------------------------------------------------------------------------------------
# How it is trained (``python -m mrtutor.train npgd``)
# ---------------------------------------------------------------------------------------------

def p2_loss(model: NeuralPGD, op, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(P2): beta * MSE(x_T, x*) + (1 - beta) * sum_t mean |y - A x_t|^2, with A = ``op``.

    The paper sums squared errors over the pixels in both terms; here both are means over the same
    number of entries (pixels, or measurements), which keeps (P2)'s balance.
    """
    xs = model.iterates_for(op, op.adjoint(y))
    loss = model.beta * complex_mse(xs[-1], target)
    if model.beta < 1:
        loss = loss + (1 - model.beta) * sum(complex_mse(op.forward(x), y) for x in xs)
    return loss


def npgd_loss(model: NeuralPGD, batch: dict) -> torch.Tensor:
    """(P2) on MRI data: A = ``Sense(maps, mask)``, y the measured k-space."""
    return p2_loss(model, Sense(batch["maps"], batch["mask"]), batch["kspace"], batch["target"])


def superresolution_loss(model: SuperResolutionPGD, batch: dict) -> torch.Tensor:
    """(P2) on super-resolution pairs: A = average pooling, y the low-resolution image."""
    return p2_loss(model, model.operator, batch["measurement"], batch["target"])


def superresolve(model: SuperResolutionPGD, batch: dict) -> torch.Tensor:
    """What validation scores: x_T from the low-resolution images."""
    return model(batch["measurement"])


def npgd_monitor(model: NeuralPGD) -> dict[str, float]:
    """The learned step, per epoch in the record."""
    return {"alpha": model.alpha.item()}


register(Recipe("npgd", npgd, "Neural PGD: T copies of a ResNet proximal with a learned step (Mardani et al.)", (
    Option("iterations", int, "T, unrolled iterations (copies of the proximal)", default=10, bound="> 0"),
    Option("blocks", int, "residual blocks of the proximal", default=1, bound="> 0"),
    Option("features", int, "feature maps (the paper: 128)", default=128, bound="> 0"),
    Option("residual", bool, "a skip over the whole proximal, P(s) = s + N(s) (not in the paper)"),
    Option("alpha", float, "initial step alpha", default=1.0, bound="> 0"),
    Option("consistency", str, "gradient step then proximal (the paper), or proximal then k-space "
           "replacement (the authors' code)", default="gradient", choices=CONSISTENCY),
    Option("beta", float, "weight of the image error in (P2); 1 - beta weighs the data terms", default=0.75,
           bound="in [0, 1]"),
), loss=npgd_loss, monitor=npgd_monitor))

register(Recipe("npgd_sr", SuperResolutionPGD, "Neural PGD for 2x super-resolution with a linear CNN + Swish proximal "
                "(Mardani et al., Sec. 5.3; photographs and brain slices)", (
    Option("factor", int, "downsampling factor (block averages)", default=2, bound="> 0"),
    Option("kernel_size", int, "kernel size of every layer (the paper: 8 and 32)", default=8, bound="> 0"),
    Option("features", int, "channels of the hidden layers (not stated in the paper)", default=8, bound="> 0"),
    Option("layers", int, "linear convolutions before the Swish (the paper: 5)", default=5, bound="> 0"),
    Option("iterations", int, "T, unrolled iterations (the paper: 25)", default=25, bound="> 0"),
    Option("beta", float, "weight of the image error in (P2)", default=0.75, bound="in [0, 1]"),
), loss=superresolution_loss, monitor=npgd_monitor, bf16=False, data=superresolution_datasets,
   reconstruct=superresolve))
