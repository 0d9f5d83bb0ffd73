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
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from mrtutor.fft import channels_to_complex, complex_to_channels
from mrtutor.recipes import Option, Recipe, complex_mse, register
from mrtutor.sense import Sense

CONSISTENCY = ("gradient", "hard")


class Gate(nn.Module):
    """A ReLU written as sigma(z) = D(z) z with the mask D(z) = 1[z > 0] (Sec. 3.2).

    For the contraction analysis the mask can be recorded (``record``) and then frozen: a frozen gate
    multiplies by the recorded mask whatever its input, which turns the network into the linear map
    of eq. 6 (with its biases, an affine one).
    """

    def __init__(self):
        super().__init__()
        self.record = False
        self.mask: torch.Tensor | None = None
        self.frozen = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            return z * self.mask
        if self.record:
            self.mask = (z > 0).to(z.dtype)
        return torch.relu(z)


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


def _norms(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1)


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
    x_star_norm = _norms(target)
    eta1, eta2, nrmse = [], [], []
    x = torch.zeros_like(target)
    with masks_frozen_at(model.proximal, target) as m_star:
        at_star = m_star(target)
        for _ in range(steps):
            size = _norms(x - target)
            s = model.gradient_step(x, op, aty)
            masked = m_star(s)
            x_next = model.proximal(s)
            eta1.append(_norms(masked - at_star) / size)  # the biases cancel: the linear part of M*
            eta2.append(_norms(x_next - masked) / size)
            nrmse.append(size / x_star_norm)
            x = x_next
    return {"eta1": torch.stack(eta1), "eta2": torch.stack(eta2), "nrmse": torch.stack(nrmse),
            "xi": _norms(at_star - target) / x_star_norm}


# ---------------------------------------------------------------------------------------------
# How it is trained (``python -m mrtutor.train npgd``)
# ---------------------------------------------------------------------------------------------

def npgd_loss(model: NeuralPGD, batch: dict) -> torch.Tensor:
    """(P2): beta * MSE(x_T, x*) + (1 - beta) * sum_t mean |y - A x_t|^2.

    The paper sums squared errors over the pixels in both terms; here both are means over the same
    number of entries (pixels, or k-space samples times coils), which keeps (P2)'s balance.
    """
    kspace, maps, mask = batch["kspace"], batch["maps"], batch["mask"]
    xs = model.iterates(kspace, maps, mask)
    loss = model.beta * complex_mse(xs[-1], batch["target"])
    if model.beta < 1:
        op = Sense(maps, mask)
        loss = loss + (1 - model.beta) * sum(complex_mse(op.forward(x), kspace) for x in xs)
    return loss


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
