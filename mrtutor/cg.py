"""Conjugate gradient for the normal equations, and the data-consistency layers built on it.

* ``conjugate_gradient``: batched CG for a Hermitian positive-definite operator, each sample stopping
  on its own relative residual.
* ``solve_normal``: x = (A^H A + lam I)^-1 rhs as an autograd function. Its backward is a second CG
  on the same system (MoDL paper, eq. 17), so training memory does not grow with CG iterations.
* ``single_coil_dc``: the closed form of the same solve when A = M F (MoDL paper, eq. 12).
* ``steepest_descent_dc``: exact-line-search steepest descent on the same system (MoDL's SD variant).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from mrtutor.fft import fft2c, ifft2c

Operator = Callable[[torch.Tensor], torch.Tensor]


def _batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real part of <a, b> = sum conj(a) b per sample: (B, ...) x (B, ...) -> (B,)."""
    return torch.linalg.vecdot(a.flatten(1), b.flatten(1)).real


def sample_norms(x: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm of a real or complex batch: (B, ...) -> (B,)."""
    # A complex tensor goes through its real view: torch's complex vector_norm is about 40x slower on the CPU.
    return torch.linalg.vector_norm((torch.view_as_real(x) if x.is_complex() else x).flatten(1), dim=1)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) vector to broadcast against ``like`` (B, ...)."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def check_batched(x, name: str) -> None:
    """TypeError unless ``x`` is a tensor with a batch dimension, (B, ...)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise TypeError(f"{name} must be a batched tensor (B, ...), got {getattr(x, 'shape', type(x))}")


def check_bound(name: str, value, low, strict: bool = False) -> None:
    """ValueError unless ``value >= low`` (``value > low`` when ``strict``), for a solver setting.

    Written as ``not value >= low`` so that NaN fails too. Shared by the solvers here and in
    ``mrtutor.deq`` and by the models built on them.
    """
    if not (value > low if strict else value >= low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value}")


@dataclass
class CGInfo:
    """What a CG run did: iterations per sample, and the relative residual history (iters+1, B)."""

    iterations: torch.Tensor
    residuals: list[torch.Tensor] = field(default_factory=list)
    converged: torch.Tensor | None = None

    @property
    def residual_history(self) -> torch.Tensor:
        return torch.stack(self.residuals)


def conjugate_gradient(
    normal: Operator,
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    max_iter: int = 10,
    tol: float = 1e-6,
    return_info: bool = False,
):
    """Solve ``normal(x) = rhs`` for a Hermitian positive-definite ``normal``, batched over dim 0.

    Each sample stops when its residual satisfies ||r|| <= tol * ||rhs||; a stopped sample is frozen
    while the others go on, and the loop ends when all have stopped or after ``max_iter`` steps.

    Args:
        normal: the operator, (B, ...) -> (B, ...).
        rhs: right-hand side (B, ...), real or complex.
        x0: starting point (default zeros).
        max_iter: the most iterations.
        tol: relative residual tolerance per sample.
        return_info: also return a ``CGInfo``.
    Returns:
        x (B, ...), and ``CGInfo`` when ``return_info``.
    """
    check_batched(rhs, "rhs")
    check_bound("max_iter", max_iter, 0)
    check_bound("tol", tol, 0)
    if not torch.isfinite(rhs).all():
        raise ValueError("rhs contains NaN or Inf")
    if x0 is None:
        x = torch.zeros_like(rhs)
        r = rhs.clone()
    else:
        if x0.shape != rhs.shape:
            raise ValueError(f"x0 must have the shape of rhs {tuple(rhs.shape)}, got {tuple(x0.shape)}")
        x = x0.clone()
        r = rhs - normal(x)
    p = r.clone()
    rhs_norm = _batch_dot(rhs, rhs).sqrt()
    # A zero right-hand side has the solution zero: count it as converged at once.
    scale = torch.where(rhs_norm > 0, rhs_norm, torch.ones_like(rhs_norm))
    rr = _batch_dot(r, r)
    rel = rr.sqrt() / scale
    active = rel > tol
    iterations = torch.zeros(rhs.shape[0], dtype=torch.long, device=rhs.device)
    info = CGInfo(iterations=iterations, residuals=[rel])
    for _ in range(max_iter):
        if not active.any():
            break
        ap = normal(p)
        pap = _batch_dot(p, ap)
        alpha = torch.where(active & (pap > 0), rr / torch.where(pap > 0, pap, torch.ones_like(pap)), torch.zeros_like(rr))
        x = x + _per_sample(alpha, x) * p
        r = r - _per_sample(alpha, r) * ap
        rr_new = _batch_dot(r, r)
        beta = torch.where(active, rr_new / torch.where(rr > 0, rr, torch.ones_like(rr)), torch.zeros_like(rr))
        p = r + _per_sample(beta, p) * p
        iterations = iterations + active.long()
        rr = torch.where(active, rr_new, rr)
        rel = rr.sqrt() / scale
        active = active & (rel > tol)
        info.residuals.append(rel)
    info.iterations = iterations
    info.converged = ~active
    return (x, info) if return_info else x


def _check_lam(lam, like: torch.Tensor) -> torch.Tensor:
    """lam as a real tensor of shape () or (B,), strictly positive and finite."""
    if not isinstance(lam, torch.Tensor):
        lam = torch.tensor(float(lam), dtype=like.real.dtype, device=like.device)
    if lam.is_complex():
        raise TypeError(f"lam must be real, got dtype {lam.dtype}")
    if lam.dim() > 1 or (lam.dim() == 1 and lam.shape[0] not in (1, like.shape[0])):
        raise ValueError(f"lam must be a scalar or have shape (B,) = ({like.shape[0]},), got {tuple(lam.shape)}")
    value = lam.detach()  # checks must not enter the autograd graph
    if not torch.isfinite(value).all() or (value <= 0).any():
        raise ValueError(f"lam must be finite and > 0, got {value.cpu().tolist()}")
    return lam


class SolveNormal(torch.autograd.Function):
    """x = (A^H A + lam I)^-1 rhs. Saves only x and lam for backward, whatever max_iter is."""

    @staticmethod
    def forward(ctx, rhs, lam, op, max_iter, tol, x0):
        lam_b = _per_sample(lam.expand(rhs.shape[0]).to(rhs.real.dtype), rhs)

        def system(v):
            return op.normal(v) + lam_b * v

        x = conjugate_gradient(system, rhs, x0=x0, max_iter=max_iter, tol=tol)
        ctx.system = system
        ctx.settings = (max_iter, tol)
        ctx.lam_shape = lam.shape
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad_x):
        (x,) = ctx.saved_tensors
        max_iter, tol = ctx.settings
        # The system is Hermitian, so the vector-Jacobian product is the same solve (eq. 17).
        grad_rhs = conjugate_gradient(ctx.system, grad_x, max_iter=max_iter, tol=tol)
        grad_lam = None
        if ctx.needs_input_grad[1]:
            # dx/dlam = -(A^H A + lam I)^-1 x, hence dL/dlam = -Re<grad_rhs, x> per sample.
            grad_lam = -_batch_dot(grad_rhs, x)
            if len(ctx.lam_shape) == 0 or ctx.lam_shape[0] == 1:  # one lam shared by the batch
                grad_lam = grad_lam.sum().reshape(ctx.lam_shape)
        return grad_rhs, grad_lam, None, None, None, None


def solve_normal(op, rhs: torch.Tensor, lam, max_iter: int = 10, tol: float = 1e-6,
                 x0: torch.Tensor | None = None) -> torch.Tensor:
    """x = (A^H A + lam I)^-1 rhs by CG, differentiable in ``rhs`` and ``lam``.

    The backward pass solves the same system with a second CG (implicit differentiation, MoDL eq.
    17) instead of backpropagating through the iterations, so the graph holds only ``x``.

    Args:
        op: an operator with ``normal`` (e.g. ``mrtutor.sense.Sense``).
        rhs: (B, H, W) complex right-hand side, e.g. A^H b + lam z.
        lam: positive scalar or (B,) tensor (a learnable parameter is fine).
        max_iter, tol: CG settings for both the forward and the backward solve.
        x0: where the forward CG starts (default zeros). A guess near the solution saves iterations
            and, since the solve is exact to ``tol``, changes neither x nor the gradients; x0 gets
            no gradient.
    """
    if not isinstance(rhs, torch.Tensor) or not rhs.is_complex():
        raise TypeError(f"rhs must be a complex tensor (B, H, W), got {getattr(rhs, 'dtype', type(rhs))}")
    if not hasattr(op, "normal"):
        raise TypeError(f"op must have a normal(x) method, got {type(op).__name__}")
    lam = _check_lam(lam, rhs)
    if x0 is not None:
        x0 = x0.detach()
    return SolveNormal.apply(rhs, lam, op, max_iter, tol, x0)


def single_coil_dc(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, lam) -> torch.Tensor:
    """Closed-form argmin_x ||M F x - y||^2 + lam ||x - z||^2 for one coil (MoDL eq. 12).

    In k-space the solution is (y + lam z^)/(1 + lam) where sampled and z^ elsewhere.

    Args:
        z: image (B, H, W) complex, the denoiser output.
        y: centred k-space (B, H, W) or (B, 1, H, W), zero where not sampled.
        mask: real 0/1 centred mask broadcastable to (B, H, W).
        lam: positive scalar or (B,) tensor.
    """
    if not isinstance(z, torch.Tensor) or not z.is_complex() or z.dim() != 3:
        raise TypeError(f"z must be a complex tensor (B, H, W), got {getattr(z, 'shape', type(z))}")
    if y.dim() == 4:
        if y.shape[1] != 1:
            raise ValueError(f"single_coil_dc takes one coil; y has shape {tuple(y.shape)}")
        y = y[:, 0]
    if mask.dim() == 4:
        mask = mask[:, 0]
    lam = _per_sample(_check_lam(lam, z).expand(z.shape[0]), z)
    z_k = fft2c(z)
    return ifft2c(torch.where(mask > 0, (y + lam * z_k) / (1 + lam), z_k))


def steepest_descent_dc(op, rhs: torch.Tensor, lam, x0: torch.Tensor, n_steps: int = 1) -> torch.Tensor:
    """``n_steps`` of steepest descent with exact line search on (A^H A + lam I) x = rhs, from x0.

    r = rhs - Q x;  x <- x + (r^H r / r^H Q r) r. Differentiable by ordinary autograd.
    """
    lam = _per_sample(_check_lam(lam, rhs).expand(rhs.shape[0]), rhs)
    x = x0
    for _ in range(n_steps):
        r = rhs - (op.normal(x) + lam * x)
        qr = op.normal(r) + lam * r
        rr = _batch_dot(r, r)
        rqr = _batch_dot(r, qr)
        step = rr / torch.where(rqr > 0, rqr, torch.ones_like(rqr))
        x = x + _per_sample(step, x) * r
    return x
