"""MOL: monotone operator learning (Pramanik and Jacob, ISBI 2022; arXiv 2111.11380).

MOL reconstructs x from b = A x + n as the fixed point of eq. 2, lam A^H (A x - b) + F(x) = 0, with
a learned residual operator F = I - H, H a CNN (Sec. 2.3). F is m-monotone (eq. 3),

    Re <x - y, F(x) - F(y)> >= m ||x - y||^2,

when Lip(H) < 1 - m, and then Lip(F) <= 2 - m (Prop. 2.2). Forward-backward splitting gives the
iteration of Fig. 1 (eq. 5)

    x_{k+1} = Q^-1 ((1 - alpha) x_k + alpha H(x_k) + alpha lam A^H b),   Q = I + alpha lam A^H A,

which converges to the unique fixed point when alpha < 2m / (2 - m)^2 (Prop. 2.3), with
||x*(a) - x*(b)|| <= alpha lam / (1 - sqrt(1 - 2 alpha m + alpha^2 (2 - m)^2)) ||a - b|| (Prop. 2.4,
eq. 6). The fixed point is found by ``mrtutor.deq.DeepEquilibrium`` and trained with implicit
gradients, so memory does not grow with the iterations.

Three ways to keep Lip(H) < 1 - m, the paper's three models:

* MOL (unconstrained): nothing; the paper reports that it diverges during training (Fig. 2).
* MOL-SN: every convolution's operator norm is bounded, so Lip(H) <= the product of the bounds.
* MOL-LR: a penalty on the local Lipschitz constant of H at the fixed point, found by gradient
  ascent on an adversarial perturbation (eqs. 7-8): ``lipschitz_estimate``, ``MOL.lipschitz_loss``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mrtutor.cg import check_bound, sample_norms, solve_normal
from mrtutor.deq import DeepEquilibrium, DEQConvergenceWarning, FixedPointInfo
from mrtutor.fft import channels_to_complex, complex_to_channels
from mrtutor.modl import MoDL, register_log_lam
from mrtutor.recipes import Option, Recipe, complex_mse, register
from mrtutor.sense import Sense


# ---------------------------------------------------------------------------------------------
# The step size alpha: convergence (Prop. 2.3) and robustness (Prop. 2.4)
# ---------------------------------------------------------------------------------------------

def _check_m(m: float) -> None:
    if not 0 < m < 1:
        raise ValueError(f"m (the monotonicity of F = I - H) must be in (0, 1), got {m}")


def alpha_bound(m: float) -> float:
    """The largest step of Prop. 2.3, 2m / (2 - m)^2, and the paper's choice of alpha (Sec. 3).

    It is Prop. 2.1's 2m / L^2 with L = 2 - m, the bound on Lip(F) of Prop. 2.2. Because Lip(H) < 1 - m
    holds strictly, Lip(F) < 2 - m, so alpha = 2m / (2 - m)^2 itself still converges.
    """
    _check_m(m)
    return 2 * m / (2 - m) ** 2


def contraction_factor(alpha: float, m: float) -> float:
    """sqrt(1 - 2 alpha m + alpha^2 (2 - m)^2): the bound on the Lipschitz constant of I - alpha F.

    Below 1 exactly when alpha < 2m / (2 - m)^2; it is the square root in eq. 6.
    """
    _check_m(m)
    return math.sqrt(max(0.0, 1 - 2 * alpha * m + alpha**2 * (2 - m) ** 2))


def residual_contraction(alpha: float, lip: float) -> float:
    """(1 - alpha) + alpha lip: a bound on the Lipschitz constant of eq. 5's map for F = I - H, 0 < alpha <= 1.

    Eq. 5's map is x -> Q^-1 ((1 - alpha) x + alpha H(x) + alpha lam A^H b), and Q = I + alpha lam A^H A
    has all eigenvalues >= 1, so Q^-1 is non-expansive and the map's constant is at most that of
    (1 - alpha) I + alpha H. Below 1 whenever Lip(H) = ``lip`` < 1, for every alpha in (0, 1]. Prop. 2.3
    uses only that F is m-monotone and (2 - m)-Lipschitz, which a residual F = I - H is, but it ignores
    the structure; this bound uses it, and it allows alpha = 1 (MoDL's iteration) for any m > 0.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1] for this bound, got {alpha}")
    if not lip >= 0:
        raise ValueError(f"lip (a Lipschitz constant) must be >= 0, got {lip}")
    return (1 - alpha) + alpha * lip


def robustness_bound(alpha: float, m: float, lam: float) -> float:
    """The constant of eq. 6: ||x*(a) - x*(b)|| <= C ||a - b||, C = alpha lam / (1 - contraction).

    Infinite (no guarantee) when the contraction factor reaches 1, e.g. at alpha = 2m / (2 - m)^2.
    As alpha -> 0, C -> lam / m.
    """
    rho = contraction_factor(alpha, m)
    return alpha * lam / (1 - rho) if rho < 1 else math.inf


@dataclass
class AlphaCondition:
    """Prop. 2.3's condition for a given (alpha, m), with eq. 6's robustness constant.

    Attributes:
        alpha, m, lam: the values checked (lam may be None).
        bound: 2m / (2 - m)^2.
        alpha_ok: alpha <= bound (see ``alpha_bound`` on why equality is allowed).
        contraction: sqrt(1 - 2 alpha m + alpha^2 (2 - m)^2).
        robustness: eq. 6's constant (None without lam; inf when contraction >= 1).
        lip: a measured Lipschitz constant of H, or None.
        lip_ok: lip < 1 - m (Prop. 2.2), or None without lip.
        residual_contraction: (1 - alpha) + alpha lip (``residual_contraction``), or None without lip
            or for alpha > 1.
    """

    alpha: float
    m: float
    lam: float | None
    bound: float
    alpha_ok: bool
    contraction: float
    robustness: float | None
    lip: float | None = None
    lip_ok: bool | None = None
    residual_contraction: float | None = None

    @property
    def guaranteed(self) -> bool:
        """Both conditions hold, so eq. 5 converges to the unique fixed point."""
        return self.alpha_ok and bool(self.lip_ok)

    def __str__(self) -> str:
        lines = [f"alpha = {self.alpha:.4g}, m = {self.m:.4g}: Prop. 2.3 needs alpha <= 2m/(2-m)^2 = "
                 f"{self.bound:.4g} -> {'ok' if self.alpha_ok else 'VIOLATED'}",
                 f"contraction bound sqrt(1 - 2 alpha m + alpha^2 (2-m)^2) = {self.contraction:.4g}"]
        if self.robustness is not None:
            lines.append(f"eq. 6: ||x*(a) - x*(b)|| <= {self.robustness:.4g} ||a - b|| (lam = {self.lam:.4g})")
        if self.lip is not None:
            lines.append(f"Lip(H) = {self.lip:.4g} vs 1 - m = {1 - self.m:.4g} (Prop. 2.2) -> "
                         f"{'ok' if self.lip_ok else 'VIOLATED'}")
        if self.residual_contraction is not None:
            lines.append(f"for F = I - H: eq. 5's map contracts by (1 - alpha) + alpha Lip(H) = "
                         f"{self.residual_contraction:.4g} per iteration")
        return "\n".join(lines)


def alpha_condition(alpha: float, m: float, lam: float | None = None, lip: float | None = None) -> AlphaCondition:
    """Check Prop. 2.3 for step ``alpha`` and monotonicity ``m``; optionally Prop. 2.2 for ``lip``."""
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    bound = alpha_bound(m)
    rho = contraction_factor(alpha, m)
    return AlphaCondition(
        alpha=float(alpha), m=float(m), lam=None if lam is None else float(lam), bound=bound,
        alpha_ok=alpha <= bound, contraction=rho,
        robustness=None if lam is None else robustness_bound(alpha, m, lam),
        lip=None if lip is None else float(lip), lip_ok=None if lip is None else lip < 1 - m,
        residual_contraction=None if lip is None or alpha > 1 else residual_contraction(alpha, lip))


# ---------------------------------------------------------------------------------------------
# The CNN H, with optional spectral normalisation of the true convolution operator
# ---------------------------------------------------------------------------------------------

class SpectralNormConv2d(nn.Conv2d):
    """3x3 convolution (zero padding, bias) whose operator norm is kept <= ``bound``.

    The norm is that of the convolution acting on images of the input's size, estimated by power
    iteration on conv^T conv (``conv_transpose2d`` is the exact adjoint of ``conv2d`` with the same
    padding). ``torch.nn.utils.parametrizations.spectral_norm`` would instead normalise the weight
    reshaped to a (c_out, 9 c_in) matrix, whose norm is not the convolution's: for 3x3 kernels the
    operator norm can be up to 3 times larger (||conv|| <= 3 ||W_mat||), and at PyTorch's default
    initialisation it is about 1.5-2.5 times larger, so that normalisation does not give Lip <= 1.

    The used weight is w * min(1, bound / sigma), sigma = ||conv_w(v)|| with v the unit power-iteration
    vector (differentiable in w, as in Miyato et al.). The power vector is re-initialised and iterated
    ``init_iters`` times whenever the image size changes (the norm of a zero-padded convolution grows
    with the image size), and ``power_step`` advances it during training. Power iteration
    approaches sigma from below, so the bound can be exceeded by the estimate's error.
    """

    def __init__(self, in_channels: int, out_channels: int, bound: float, init_iters: int = 50):
        super().__init__(in_channels, out_channels, 3, padding=1, bias=True)
        if not bound > 0:
            raise ValueError(f"bound must be > 0, got {bound}")
        if init_iters < 1:
            raise ValueError(f"init_iters must be >= 1, got {init_iters}")
        self.bound = float(bound)
        self.init_iters = init_iters
        # Not saved in checkpoints: it has the image's size, and is rebuilt on first use.
        self.register_buffer("v", torch.zeros(0), persistent=False)

    @torch.no_grad()
    def power_step(self, n_iter: int = 1, size: tuple[int, int] | None = None) -> None:
        """Advance the power iteration by ``n_iter`` steps (re-initialise it for a new ``size``)."""
        w = self.weight.detach()
        if size is not None and tuple(self.v.shape[-2:]) != tuple(size):
            self.v = torch.randn(1, self.in_channels, *size, dtype=w.dtype, device=w.device)
        if self.v.numel() == 0:
            return
        v = self.v.to(w.dtype)
        for _ in range(n_iter):
            v = F.conv_transpose2d(F.conv2d(v, w, padding=1), w, padding=1)
            v = v / torch.linalg.vector_norm(v).clamp_min(torch.finfo(v.dtype).tiny)
        self.v = v

    def operator_norm(self) -> torch.Tensor:
        """The power-iteration estimate of the raw weight's operator norm (differentiable in it)."""
        if self.v.numel() == 0:
            raise RuntimeError("the power iteration has not run yet: call the layer on an image first")
        return torch.linalg.vector_norm(F.conv2d(self.v.to(self.weight.dtype), self.weight, padding=1))

    def normalised_weight(self) -> torch.Tensor:
        return self.weight * (self.bound / self.operator_norm()).clamp(max=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(self.v.shape[-2:]) != tuple(x.shape[-2:]):
            self.power_step(self.init_iters, size=x.shape[-2:])
        return F.conv2d(x, self.normalised_weight(), self.bias, padding=1)


class MOLNet(nn.Module):
    """H: ``layers`` 3x3 convolutions (with bias) and ReLUs, no batch norm, no ReLU at the end.

    The paper's five-layer CNN "as in [2]" (MoDL), without batch norm because it is hard to bound
    its Lipschitz constant (Sec. 3). Complex images (B, H, W) in and out, 2 real channels inside;
    that conversion is an isometry, so Lipschitz constants carry over.

    Args:
        layers, features: depth and width (paper and MoDL: 5 and 64).
        residual: H(x) = x + CNN(x) instead of CNN(x). The paper does not say; its code uses the plain
            CNN. A residual H is what a MoDL denoiser D(x) = x + N(x) is, so it is needed to warm-start
            from one (``load_denoiser``), but spectral normalisation cannot constrain it: bounding
            the convolutions only gives Lip(H) <= 1 + Lip(CNN), never below 1.
        spectral_bound: if given, bound Lip(H) by it: each of the ``layers`` convolutions gets the
            operator-norm bound spectral_bound ** (1 / layers) (ReLU is 1-Lipschitz). MOL-SN.
        spectral_iters: power iterations when the image size changes (``SpectralNormConv2d``).
    """

    def __init__(self, layers: int = 5, features: int = 64, residual: bool = False,
                 spectral_bound: float | None = None, spectral_iters: int = 50):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        if spectral_bound is not None:
            if not spectral_bound > 0:
                raise ValueError(f"spectral_bound must be > 0, got {spectral_bound}")
            if residual:
                raise ValueError("spectral_bound needs residual=False: with the skip x + CNN(x), bounding the "
                                 "convolutions only gives Lip(H) <= 1 + Lip(CNN), never below 1")
        self.residual = residual
        self.spectral_bound = spectral_bound
        widths = [2] + [features] * (layers - 1) + [2]
        blocks: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            if spectral_bound is None:
                blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=True))
            else:
                blocks.append(SpectralNormConv2d(c_in, c_out, spectral_bound ** (1 / layers), spectral_iters))
            if i < layers - 1:
                blocks.append(nn.ReLU())
        self.cnn = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Under mixed precision the CNN answers in bfloat16; the complex image stays in x's precision.
        out = channels_to_complex(self.cnn(complex_to_channels(x)).to(x.real.dtype))
        return x + out if self.residual else out

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.cnn if isinstance(m, nn.Conv2d)]

    def power_step(self, n_iter: int = 1) -> None:
        """One (or ``n_iter``) power-iteration steps in every spectrally normalised convolution."""
        for conv in self.convs():
            if isinstance(conv, SpectralNormConv2d):
                conv.power_step(n_iter)

    def lipschitz_upper_bound(self) -> float:
        """Product of the layers' operator norms (power-iteration estimates): a bound on Lip(CNN).

        Only for spectrally normalised networks that have seen an image (the norms depend on its size).
        """
        if self.spectral_bound is None:
            raise ValueError("lipschitz_upper_bound needs a spectrally normalised network (spectral_bound)")
        with torch.no_grad():
            norms = [min(conv.bound, float(conv.operator_norm())) for conv in self.convs()]
        return math.prod(norms)

    @torch.no_grad()
    def load_denoiser(self, denoiser: nn.Module) -> None:
        """Warm-start from a MoDL ``Denoiser`` D(x) = x + N(x): copy its convolutions, fold its batch norms.

        In eval mode a batch norm is the affine map s (z - mean) + beta, s = gamma / sqrt(var + eps),
        so it folds exactly into the convolution before it: weight * s and bias beta - s mean. This
        network then equals ``denoiser.eval()``. What is lost: batch norm's training-mode behaviour
        (normalising by batch statistics, and its effect on the optimisation), and nothing keeps the
        copied H's Lipschitz constant below 1 - m: a MoDL denoiser is usually not, so MOL-LR training
        has to bring it down.
        """
        if not self.residual:
            raise ValueError("load_denoiser needs residual=True: a MoDL Denoiser computes x + N(x)")
        noise = getattr(denoiser, "noise", None)
        if not isinstance(noise, nn.Sequential):
            raise TypeError("expected a mrtutor.modl.Denoiser (with a .noise Sequential), "
                            f"got {type(denoiser).__name__}")
        their_convs = [m for m in noise if isinstance(m, nn.Conv2d)]
        their_norms = [m for m in noise if isinstance(m, nn.BatchNorm2d)]
        mine = self.convs()
        if len(their_convs) != len(mine) or len(their_norms) != len(mine):
            raise ValueError(f"the denoiser has {len(their_convs)} convolutions and {len(their_norms)} batch norms; "
                             f"this network has {len(mine)} layers")
        for conv, theirs, norm in zip(mine, their_convs, their_norms):
            if conv.weight.shape != theirs.weight.shape:
                raise ValueError(f"layer shapes differ: {tuple(theirs.weight.shape)} in the denoiser, "
                                 f"{tuple(conv.weight.shape)} here (use the same layers and features)")
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            conv.weight.copy_(theirs.weight * scale[:, None, None, None])
            bias = norm.bias - scale * norm.running_mean
            if theirs.bias is not None:
                bias = bias + scale * theirs.bias
            conv.bias.copy_(bias)


# ---------------------------------------------------------------------------------------------
# Local Lipschitz regularisation (eqs. 7-8)
# ---------------------------------------------------------------------------------------------

def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def lipschitz_estimate(net, x: torch.Tensor, n_steps: int = 10, eps: float = 1e-2, step_size: float = 1.0,
                       generator: torch.Generator | None = None, return_history: bool = False):
    """Local Lipschitz constant of ``net`` at ``x`` by gradient ascent on a perturbation (eq. 7).

    Maximises the ratio l(e) = ||net(x + e) - net(x)||^2 / ||e||^2 over perturbations e on the sphere
    ||e|| = eps ||x|| (per sample): the local constant where the images live, as the paper wants.
    Each step is e <- e + step_size * ||e||^2 / (2 l) * grad_e l, then back onto the sphere. For a
    linear network this step (with step_size 1) is exactly one power iteration on J^H J, so the
    estimate rises to the true constant from below; in general it is a lower bound of the global one.

    Args:
        net: images (B, H, W) -> (B, H, W), e.g. ``MOLNet`` (complex), or one iteration of
            chapter 4's super-resolution network (real).
        x: (B, H, W) complex or real floating, e.g. the fixed point x* (detached here); the
            perturbations have its dtype.
        n_steps: gradient-ascent steps (0: the ratio at the random start).
        eps: radius of the perturbation relative to ||x||.
        step_size: multiplies the step above.
        generator: for the random start.
        return_history: also return the estimates after 0, 1, ..., n_steps - 1 steps, (n_steps, B) and
            detached: what shorter ascents from the same start give, without running them again.
    Returns:
        (B,) tensor sqrt(l) per sample, differentiable in the network's parameters (the penalty of
        eq. 8 uses its square, ``lipschitz_penalty``); with ``return_history``, (estimate, history).
    """
    if not isinstance(x, torch.Tensor) or not (x.is_complex() or x.is_floating_point()) or x.dim() != 3:
        raise TypeError(f"x must be a complex or real floating tensor (B, H, W), got "
                        f"{getattr(x, 'dtype', type(x))} of shape {getattr(x, 'shape', None)}")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    x = x.detach()
    x_norm = sample_norms(x)
    radius = _per_sample(eps * torch.where(x_norm > 0, x_norm, torch.ones_like(x_norm)), x)
    e = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    e = e * radius / _per_sample(sample_norms(e), x)
    with torch.no_grad():
        hx = net(x)
    tiny = torch.finfo(x_norm.dtype).tiny
    history = []
    with torch.enable_grad():
        for _ in range(n_steps):
            e = e.detach().requires_grad_()
            ratio = sample_norms(net(x + e) - hx) ** 2 / sample_norms(e) ** 2
            history.append(ratio.detach().sqrt())
            (grad,) = torch.autograd.grad(ratio.sum(), e)
            step = step_size * sample_norms(e).detach() ** 2 / (2 * ratio.detach().clamp_min(tiny))
            e = e.detach() + _per_sample(step, x) * grad
            e = e * radius / _per_sample(sample_norms(e).clamp_min(tiny), x)
    e = e.detach()
    estimate = sample_norms(net(x + e) - net(x)) / sample_norms(e)
    if return_history:
        return estimate, torch.stack(history) if history else estimate.new_zeros((0, len(x)))
    return estimate


def lipschitz_penalty(lip: torch.Tensor, weight: float = 1.0, target: float | None = None) -> torch.Tensor:
    """The Lipschitz term of the training loss, from per-sample estimates ``lip`` (B,).

    Without ``target``: weight * mean(lip^2), the l(f*) of eq. 8 (the paper adds it with weight 1).
    With ``target``: weight * mean(relu(lip - target)^2), which only pushes down constants above the
    target (e.g. 1 - m), so H keeps the rest of its representation power.
    """
    if not weight >= 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    if target is None:
        return weight * lip.pow(2).mean()
    return weight * torch.relu(lip - target).pow(2).mean()


# ---------------------------------------------------------------------------------------------
# The MOL reconstruction
# ---------------------------------------------------------------------------------------------

class MOL(nn.Module):
    """Monotone operator learning: the fixed point of eq. 5, trained with implicit gradients.

    Called like MoDL: ``model(kspace, maps, mask) -> (B, H, W)`` complex, starting from A^H b.

    Args:
        net: H (default ``MOLNet()``: 5 layers, 64 features, plain CNN).
        m: monotonicity of F = I - H asked for; Lip(H) must stay below 1 - m (Prop. 2.2). Not given
            in the paper; 0.1 matches the Lipschitz constant of about 0.9 it reports for MOL-LR.
        alpha: the step; default 2m / (2 - m)^2, the paper's choice (Sec. 3). The fixed point does not
            depend on it, only the speed of the iteration does (``residual_contraction``). Fixed at
            construction, since the solver's tolerances are scaled by it.
        lam: data-consistency weight lam of eqs. 1-2, kept positive by storing its logarithm. It is
            1 / lam of MoDL's parametrisation: with alpha = 1 and H = D, eq. 5 is MoDL's iteration.
        learn_lam: train lam with the network.
        max_iter, anderson: forward fixed-point settings (``mrtutor.deq.fixed_point``).
        tol: relative tolerance on the residual of eq. 2 as the iteration sees it, ||Q^-1 R(x)|| / ||x||
            with R(x) = lam A^H (A x - b) + F(x). One step of eq. 5 moves x by alpha Q^-1 R(x), so the
            solver stops when ||x_{k+1} - x_k|| / ||x_{k+1}|| <= alpha tol: the same accuracy whatever
            alpha is. (A tolerance on the step alone would stop 1 / alpha times further from the fixed
            point: 18 times at the paper's alpha for m = 0.1.)
        backward_max_iter, backward_tol: adjoint settings (default: the forward's; the tolerance is
            scaled by alpha in the same way, since the adjoint's steps also carry the factor alpha).
        strict: raise ``DEQConvergenceError`` instead of warning when an iteration stops short.
        cg_iters, cg_tol: CG settings of Q^-1 (forward and backward).
        lipschitz_weight, lipschitz_target: the penalty of ``lipschitz_loss`` (weight 0: none).
        lipschitz_steps: gradient-ascent steps of each Lipschitz estimate (eq. 7's "few").
    """

    def __init__(self, net: nn.Module | None = None, m: float = 0.1, alpha: float | None = None, lam: float = 20.0,
                 learn_lam: bool = True, max_iter: int = 100, tol: float = 1e-4, anderson: int = 0,
                 backward_max_iter: int | None = None, backward_tol: float | None = None, strict: bool = False,
                 cg_iters: int = 10, cg_tol: float = 1e-6, lipschitz_weight: float = 0.0,
                 lipschitz_target: float | None = None, lipschitz_steps: int = 10):
        super().__init__()
        _check_m(m)
        alpha = alpha_bound(m) if alpha is None else alpha
        check_bound("alpha", alpha, 0, strict=True)
        check_bound("lam", lam, 0, strict=True)
        check_bound("cg_iters", cg_iters, 1)
        check_bound("lipschitz_weight", lipschitz_weight, 0)
        check_bound("lipschitz_steps", lipschitz_steps, 0)
        check_bound("tol", tol, 0)
        self.net = MOLNet() if net is None else net
        self.m = float(m)
        self._alpha = float(alpha)
        self.cg_iters = cg_iters
        self.cg_tol = cg_tol
        self.lipschitz_weight = float(lipschitz_weight)
        self.lipschitz_target = lipschitz_target
        self.lipschitz_steps = lipschitz_steps
        self.tol = float(tol)
        backward_tol = self.tol if backward_tol is None else backward_tol
        self.solver = DeepEquilibrium(max_iter, alpha * self.tol, anderson, backward_max_iter, alpha * backward_tol,
                                      strict=strict)
        self.last_lipschitz: torch.Tensor | None = None
        self.last_fixed_point: torch.Tensor | None = None  # the last forward's output, detached
        register_log_lam(self, lam, learn_lam)

    @property
    def lam(self) -> torch.Tensor:
        return self.log_lam.exp()

    @property
    def alpha(self) -> float:
        """The step of eq. 5 (read-only: the solver's tolerances were scaled by it)."""
        return self._alpha

    @property
    def variant(self) -> str:
        """Which of the paper's three models this is: 'sn', 'lr' or 'unconstrained'."""
        if getattr(self.net, "spectral_bound", None) is not None:
            return "sn"
        return "lr" if self.lipschitz_weight > 0 else "unconstrained"

    @property
    def last_forward_info(self) -> FixedPointInfo | None:
        return self.solver.last_forward_info

    @property
    def last_backward_info(self) -> FixedPointInfo | None:
        return self.solver.last_backward_info

    def alpha_condition(self, lip: float | None = None) -> AlphaCondition:
        """Prop. 2.3 for this model's alpha and m (and Prop. 2.2 for a measured ``lip``), printable."""
        return alpha_condition(self.alpha, self.m, float(self.lam.detach()), lip)

    def step(self, x: torch.Tensor, op: Sense, atb: torch.Tensor) -> torch.Tensor:
        """One iteration of eq. 5 from x (B, H, W), with atb = A^H b.

        Q = I + alpha lam A^H A = alpha lam (A^H A + mu I) with mu = 1 / (alpha lam), so
        Q^-1 r = (A^H A + mu I)^-1 (mu r): ``solve_normal`` with rhs mu r and lam mu. CG starts from
        x: near the fixed point the next iterate is close to it, so CG needs few iterations.
        """
        lam = self.lam.to(atb.real.dtype)
        a = self.alpha
        r = (1 - a) * x + a * self.net(x) + (a * lam) * atb
        mu = 1 / (a * lam)
        return solve_normal(op, mu * r, mu, max_iter=self.cg_iters, tol=self.cg_tol, x0=x)

    def forward(self, kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reconstruct complex images (B, H, W) from masked k-space (B, C, H, W), maps and mask."""
        op = Sense(maps, mask)
        atb = op.adjoint(kspace)
        if self.training and isinstance(self.net, MOLNet):
            self.net.power_step()  # the spectral norms follow the weights (once per forward: f stays fixed)
        x = self.solver(lambda x: self.step(x, op, atb), atb)
        self.last_fixed_point = x.detach()
        return x

    def lipschitz_loss(self, x_star: torch.Tensor, n_steps: int | None = None, eps: float = 1e-2) -> torch.Tensor:
        """The Lipschitz term of eq. 8 for the training loss (``mol_penalty``).

        Estimates the local Lipschitz constant of H at the (detached) fixed point ``x_star`` by
        ``lipschitz_estimate`` and returns ``lipschitz_penalty`` with this model's weight and target
        (zero for MOL and MOL-SN, whose estimate is still recorded for monitoring, as Fig. 2a does).
        The estimates are kept in ``last_lipschitz`` (B,). ``n_steps`` defaults to ``lipschitz_steps``.
        """
        n_steps = self.lipschitz_steps if n_steps is None else n_steps
        # With a zero weight the estimate is only recorded: its last evaluation needs no graph.
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.lipschitz_weight > 0):
            lip = lipschitz_estimate(self.net, x_star, n_steps=n_steps, eps=eps)
        self.last_lipschitz = lip.detach()
        return lipschitz_penalty(lip, self.lipschitz_weight, self.lipschitz_target)


def mol_unconstrained(layers: int = 5, features: int = 64, m: float = 0.1, residual: bool = False, **kwargs) -> MOL:
    """MOL with an unconstrained H (the paper's "MOL" curve, which diverges during training).
    ``residual``: H(x) = x + CNN(x), as a MoDL denoiser (needed to warm-start from one)."""
    return MOL(MOLNet(layers, features, residual=residual), m=m, **kwargs)


def mol_lr(layers: int = 5, features: int = 64, m: float = 0.1, lipschitz_weight: float = 1.0,
           lipschitz_target: float | None = None, residual: bool = False, **kwargs) -> MOL:
    """MOL-LR: unconstrained H plus the local Lipschitz penalty of eqs. 7-8 (weight 1 as in eq. 8).
    ``residual``: H(x) = x + CNN(x), as a MoDL denoiser (needed to warm-start from one)."""
    return MOL(MOLNet(layers, features, residual=residual), m=m, lipschitz_weight=lipschitz_weight,
               lipschitz_target=lipschitz_target, **kwargs)


def mol_sn(layers: int = 5, features: int = 64, m: float = 0.1, margin: float = 0.01,
           spectral_iters: int = 50, **kwargs) -> MOL:
    """MOL-SN: every convolution spectrally normalised so Lip(H) <= (1 - margin)(1 - m) < 1 - m.

    The margin keeps Prop. 2.2's inequality strict and absorbs the power iteration's underestimate.
    """
    _check_m(m)
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    net = MOLNet(layers, features, spectral_bound=(1 - margin) * (1 - m), spectral_iters=spectral_iters)
    return MOL(net, m=m, **kwargs)


# ---------------------------------------------------------------------------------------------
# How MOL is trained (``python -m mrtutor.train mol_lr|mol_sn|mol_unconstrained``)
# ---------------------------------------------------------------------------------------------

def mol_loss(model: MOL, batch: dict) -> torch.Tensor:
    """MOL (eq. 8), its first term: the error of the fixed point. The second, the Lipschitz term of
    H there, is ``mol_penalty``; ``training_step`` backpropagates it after this one."""
    out = model(batch["kspace"], batch["maps"], batch["mask"])
    return complex_mse(out, batch["target"])


def mol_penalty(model: MOL, batch: dict) -> torch.Tensor:
    """Eq. 8's Lipschitz term l(f*) at the fixed point of the model's last forward pass. Its weight
    is zero for MOL-SN and the unconstrained MOL, whose estimate is still recorded (Fig. 2a).

    Eq. 8 adds l(f*) to a squared error summed over the pixels; with the error averaged over the
    pixels, as every recipe here does, the term is divided by the pixel count to keep eq. 8's balance.
    """
    x_star = model.last_fixed_point
    return model.lipschitz_loss(x_star) / x_star[0].numel()


def mol_monitor(model: MOL) -> dict[str, float]:
    """What a MOL step did: fixed-point iterations (forward, and backward after a training step),
    the share of samples whose forward solve converged, and H's Lipschitz estimate when one was made."""
    forward = model.last_forward_info
    stats = {"forward_iterations": float(forward.iterations),
             "forward_converged": forward.converged.float().mean().item()}
    if model.training and model.last_backward_info is not None:
        stats["backward_iterations"] = float(model.last_backward_info.iterations)
    if model.training and model.last_lipschitz is not None:
        stats["lipschitz"] = model.last_lipschitz.mean().item()
    return stats


@torch.no_grad()
def warm_start(model: MOL, source: nn.Module) -> None:
    """Start a MOL with a residual H from a trained MoDL: its denoiser with the batch norms folded
    (``MOLNet.load_denoiser``), and lam = 1 / MoDL's lam (MOL weighs the data term, MoDL the prior),
    so that at alpha = 1 the iteration of eq. 5 is MoDL's."""
    if not isinstance(source, MoDL):
        raise ValueError(f"--init: expected a MoDL checkpoint, got a {type(source).__name__}")
    model.net.load_denoiser(source.denoisers[0])
    model.log_lam.copy_(-source.log_lam)


MOL_OPTIONS = (
    Option("layers", int, "convolution layers of H", default=5, bound="> 0"),
    Option("features", int, "filters per layer", default=64, bound="> 0"),
    Option("lam", float, "initial lam (default: the builder's; MOL's lam is 1 / MoDL's)", bound="> 0"),
    Option("cg_iters", int, "CG iterations of each solve with Q", default=10, bound="> 0"),
    Option("m", float, "monotonicity m of I - H (Lip(H) < 1 - m)", bound="in (0, 1)"),
    Option("alpha", float, "step of eq. 5 (default 2m / (2 - m)^2, Prop. 2.3); the fixed point does not depend on it",
           bound="> 0", optional=True),
    Option("max_iter", int, "cap of the fixed-point iterations", bound="> 0"),
    Option("tol", float, "relative tolerance of the fixed point (on ||Q^-1 R(x)|| / ||x||, see MOL)", bound=">= 0"),
    Option("anderson", int, "Anderson history (0: plain iteration)", bound=">= 0"),
    Option("backward_max_iter", int, "cap of the backward fixed point", bound="> 0", optional=True),
    Option("lipschitz_steps", int, "gradient-ascent steps of each Lipschitz estimate (default 10)", bound=">= 0"),
)
_RESIDUAL = Option("residual", bool, "H(x) = x + CNN(x), needed for --init from a MoDL checkpoint")
_TRAINING = dict(loss=mol_loss, penalty=mol_penalty, monitor=mol_monitor, bf16=False, quiet=(DEQConvergenceWarning,))

register(Recipe("mol_lr", mol_lr, "MOL-LR: Lipschitz penalty on H (eqs. 7-8)", MOL_OPTIONS + (
    Option("lipschitz_weight", float, "weight of l(f*) in eq. 8", bound=">= 0"),
    Option("lipschitz_target", float, "penalise only Lipschitz estimates above this (e.g. 1 - m)", optional=True),
    _RESIDUAL), init=warm_start, **_TRAINING))
register(Recipe("mol_sn", mol_sn, "MOL-SN: spectrally normalised H", MOL_OPTIONS, **_TRAINING))
register(Recipe("mol_unconstrained", mol_unconstrained, "MOL with an unconstrained H (diverges in the paper)",
                MOL_OPTIONS + (_RESIDUAL,), init=warm_start, **_TRAINING))
