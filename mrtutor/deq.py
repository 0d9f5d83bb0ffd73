"""Deep equilibrium (DEQ) layers: solve x = f(x) forwards, differentiate implicitly backwards.

A DEQ layer returns the fixed point x* = f(x*, theta) of a map f instead of the output of a fixed
number of unrolled steps. By the implicit function theorem, differentiating x* = f(x*, theta) gives

    dx*/dtheta = (I - J)^-1 df/dtheta,        J = df/dx at x*,

so the vector-Jacobian product a loss needs, v^T dx*/dtheta, is g^T df/dtheta where g solves the
adjoint fixed point

    g = J^H g + v.

* ``fixed_point``: batched fixed-point iteration, plain or with Anderson acceleration, that records
  its residuals and never fails silently (``DEQConvergenceWarning`` or ``DEQConvergenceError``).
* ``DeepEquilibrium``: the layer. The forward iteration runs without autograd; one extra
  application of f attaches x* to the graph, and a hook on its output replaces the incoming
  gradient v by the adjoint solution g (itself a fixed point of vector-Jacobian products). The
  graph holds two applications of f whatever the number of iterations, so memory does not grow
  with them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from mrtutor.cg import check_batched, check_bound, sample_norms

Map = Callable[[torch.Tensor], torch.Tensor]


class DEQConvergenceWarning(RuntimeWarning):
    """A fixed-point iteration stopped before reaching its tolerance."""


class DEQConvergenceError(RuntimeError):
    """A fixed-point iteration stopped before reaching its tolerance (``strict=True``)."""


@dataclass
class FixedPointInfo:
    """What a fixed-point run did.

    Attributes:
        iterations: evaluations of f made (the iteration count).
        residuals: one (B,) tensor per evaluation, ||f(x_k) - x_k|| / ||f(x_k)|| per sample
            (for plain iteration this is ||x_{k+1} - x_k|| / ||x_{k+1}||).
        converged: (B,) bool, which samples reached ``tol``.
        tol: the tolerance asked for.
        name: "forward" or "backward", used in messages.
    """

    iterations: int = 0
    residuals: list[torch.Tensor] = field(default_factory=list)
    converged: torch.Tensor | None = None
    tol: float = 0.0
    name: str = "forward"

    @property
    def residual_history(self) -> torch.Tensor:
        """(iterations, B) relative residuals."""
        return torch.stack(self.residuals)

    @property
    def final_residual(self) -> float:
        """The worst sample's last relative residual."""
        return float(self.residuals[-1].max()) if self.residuals else float("nan")

    def __str__(self) -> str:
        state = "converged" if self.converged is not None and bool(self.converged.all()) else "NOT converged"
        return (f"{self.name}: {state} after {self.iterations} iterations, "
                f"relative residual {self.final_residual:.3e} (tol {self.tol:.1e})")


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) real or complex -> (B, D) real, so Anderson works in real arithmetic."""
    return (torch.view_as_real(x) if x.is_complex() else x).reshape(x.shape[0], -1)


def _unflat(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.is_complex():
        return torch.view_as_complex(v.reshape(*like.shape, 2).contiguous())
    return v.reshape(like.shape)


def _relative_residual(fx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """||f(x) - x|| / ||f(x)|| per sample; 0 when both are 0."""
    diff = sample_norms(fx - x)
    norm = sample_norms(fx)
    return diff / norm.clamp_min(torch.finfo(norm.dtype).tiny)


def anderson_mix(xs: list[torch.Tensor], fs: list[torch.Tensor], beta: float, reg: float) -> torch.Tensor:
    """Type-II Anderson step from the last n iterates x_i and their images f(x_i), each (B, D) real.

    Solves min_a ||sum_i a_i g_i||^2 + reg ||a||^2 subject to sum_i a_i = 1, g_i = f(x_i) - x_i, per
    sample, whose solution is a = (G G^T + delta I)^-1 1, normalised to sum 1; then mixes
    x = beta sum_i a_i f(x_i) + (1 - beta) sum_i a_i x_i.
    """
    x_hist = torch.stack(xs, dim=1)  # (B, n, D)
    f_hist = torch.stack(fs, dim=1)
    g = (f_hist - x_hist).double()  # the small solve in float64: Gram matrices are ill-conditioned
    gram = g @ g.transpose(1, 2)  # (B, n, n)
    n = gram.shape[-1]
    # Regularise relative to the Gram matrix's scale, so the step does not depend on units.
    # A sample whose residuals are all exactly zero sits at its fixed point while others iterate on:
    # its Gram matrix is zero, so regularise with scale 1 (equal weights on its fixed points) rather
    # than with a vanishing scale whose inverse overflows to 0 / 0.
    scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    ones = torch.ones(gram.shape[0], n, 1, dtype=gram.dtype, device=gram.device)
    a = torch.linalg.solve(gram + reg * scale[:, None, None] * eye, ones)[..., 0]
    a = (a / a.sum(dim=1, keepdim=True)).to(x_hist.dtype)
    mixed_f = torch.einsum("bn,bnd->bd", a, f_hist)
    if beta == 1.0:
        return mixed_f
    return beta * mixed_f + (1 - beta) * torch.einsum("bn,bnd->bd", a, x_hist)


def _report(info: FixedPointInfo, strict: bool, diverged: bool) -> None:
    """Warn (or raise when ``strict``) with the numbers of a run that did not converge."""
    worst = int(info.residuals[-1].nan_to_num(float("inf")).argmax())
    what = "diverged (non-finite values)" if diverged else "did not converge"
    message = (f"{info.name} fixed-point iteration {what} after {info.iterations} iterations: "
               f"relative residual {info.final_residual:.3e} > tol {info.tol:.1e} "
               f"(worst sample {worst}, {int((~info.converged).sum())} of {info.converged.numel()} samples "
               f"not converged)")
    if strict:
        raise DEQConvergenceError(message)
    warnings.warn(message, DEQConvergenceWarning, stacklevel=3)


def fixed_point(
    f: Map,
    x0: torch.Tensor,
    max_iter: int = 100,
    tol: float = 1e-4,
    anderson: int = 0,
    beta: float = 1.0,
    reg: float = 1e-8,
    strict: bool = False,
    name: str = "forward",
) -> tuple[torch.Tensor, FixedPointInfo]:
    """Find x = f(x) by iteration, batched over dim 0.

    Stops when every sample's relative residual ||f(x_k) - x_k|| / ||f(x_k)|| is <= ``tol``, after
    ``max_iter`` evaluations of f, or when the residual is no longer finite. Not converging is
    never silent: it warns (``DEQConvergenceWarning``) or, with ``strict``, raises
    ``DEQConvergenceError``, giving the iterations, the final residual and the tolerance.
    Runs under whatever autograd mode the caller set; ``DeepEquilibrium`` calls it under no_grad.

    Args:
        f: the map, (B, ...) -> (B, ...), real or complex.
        x0: starting point (B, ...).
        max_iter: the most evaluations of f (>= 1).
        tol: relative residual tolerance, per sample.
        anderson: Anderson history size; 0 is plain iteration x_{k+1} = f(x_k).
        beta: Anderson damping (1 = undamped).
        reg: Anderson's Tikhonov regularisation, relative to the Gram matrix's mean diagonal.
        strict: raise instead of warn when not converged.
        name: "forward" or "backward", for messages and the info.
    Returns:
        (x, info): the last f(x_k), which meets the tolerance when converged, and a ``FixedPointInfo``.
    """
    check_batched(x0, "x0")
    check_bound("max_iter", max_iter, 1)
    check_bound("tol", tol, 0)
    check_bound("anderson (history size)", anderson, 0)
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    info = FixedPointInfo(tol=tol, name=name)
    xs: list[torch.Tensor] = []
    fs: list[torch.Tensor] = []
    x = x0
    fx = x0
    diverged = False
    for _ in range(max_iter):
        fx = f(x)
        if fx.shape != x.shape:
            raise ValueError(f"f must keep the shape of x {tuple(x.shape)}, returned {tuple(fx.shape)}")
        residual = _relative_residual(fx, x)
        info.iterations += 1
        info.residuals.append(residual)
        if not torch.isfinite(residual).all():
            diverged = True
            break
        if (residual <= tol).all():
            break
        if anderson:
            xs.append(_flat(x))
            fs.append(_flat(fx))
            if len(xs) > anderson:
                xs.pop(0)
                fs.pop(0)
            x = _unflat(anderson_mix(xs, fs, beta, reg), x)
        else:
            x = fx
    info.converged = info.residuals[-1] <= tol  # False for NaN, as it should be
    if not bool(info.converged.all()):
        _report(info, strict, diverged)
    return fx, info


class DeepEquilibrium:
    """A DEQ layer: ``layer(f, x0)`` returns the fixed point x* = f(x*), differentiable implicitly.

    ``f`` may close over parameters and inputs (an ``nn.Module``'s weights, measured data); their
    gradients are exact at the fixed point (implicit function theorem), not the gradients of the
    unrolled iterations. The forward iteration runs under ``torch.no_grad``; the autograd graph holds
    two applications of f (one to attach x* to the parameters, one for the vector-Jacobian products
    of the backward iteration), so memory does not grow with the iteration count.

    Args:
        max_iter, tol, anderson: forward ``fixed_point`` settings.
        backward_max_iter, backward_tol, backward_anderson: adjoint settings (default: the forward's).
        strict: raise ``DEQConvergenceError`` instead of warning when either iteration stops short.

    After each call ``last_forward_info`` holds the forward ``FixedPointInfo``, and after each
    backward pass ``last_backward_info`` the adjoint's.
    """

    def __init__(self, max_iter: int = 100, tol: float = 1e-4, anderson: int = 0,
                 backward_max_iter: int | None = None, backward_tol: float | None = None,
                 backward_anderson: int | None = None, strict: bool = False):
        self.max_iter = max_iter
        self.tol = tol
        self.anderson = anderson
        self.backward_max_iter = max_iter if backward_max_iter is None else backward_max_iter
        self.backward_tol = tol if backward_tol is None else backward_tol
        self.backward_anderson = anderson if backward_anderson is None else backward_anderson
        self.strict = strict
        self.last_forward_info: FixedPointInfo | None = None
        self.last_backward_info: FixedPointInfo | None = None
        check_bound("max_iter", self.max_iter, 1)
        check_bound("backward_max_iter", self.backward_max_iter, 1)
        check_bound("tol", self.tol, 0)
        check_bound("backward_tol", self.backward_tol, 0)
        check_bound("anderson (history size)", self.anderson, 0)
        check_bound("backward_anderson (history size)", self.backward_anderson, 0)

    def __call__(self, f: Map, x0: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x_star, self.last_forward_info = fixed_point(
                f, x0.detach(), self.max_iter, self.tol, self.anderson, strict=self.strict, name="forward")
        z = f(x_star)  # one application with autograd: attaches x* to f's parameters and inputs
        if not z.requires_grad:
            return z
        # A second application at a leaf copy of z, kept for the vector-Jacobian products J^H g.
        z0 = z.detach().requires_grad_()
        f0 = f(z0)

        def adjoint(grad: torch.Tensor | None) -> torch.Tensor | None:
            if grad is None:  # an undefined gradient stays undefined
                return None

            def step(g: torch.Tensor) -> torch.Tensor:
                (vjp,) = torch.autograd.grad(f0, z0, g, retain_graph=True, allow_unused=True)
                return grad if vjp is None else vjp + grad  # None: f does not depend on x

            g, self.last_backward_info = fixed_point(
                step, grad, self.backward_max_iter, self.backward_tol, self.backward_anderson,
                strict=self.strict, name="backward")
            return g

        z.register_hook(adjoint)
        return z
