import pytest
import torch

from mrtutor.cg import conjugate_gradient, sample_norms, single_coil_dc, solve_normal, steepest_descent_dc
from mrtutor.evaluate import saved_for_backward
from mrtutor.fft import fft2c
from mrtutor.sense import Sense


def random_spd(batch, n, cond, dtype=torch.complex128, seed=0):
    """Hermitian positive-definite matrices with a given condition number."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(batch, n, n, dtype=dtype, generator=g))
    eig = torch.logspace(0, torch.log10(torch.tensor(float(cond))), n, dtype=torch.float64)
    return q @ torch.diag_embed(eig.to(dtype)) @ q.mH


def matvec(mats):
    return lambda v: (mats @ v[..., None])[..., 0]


def small_sense(batch=2, coils=3, h=10, w=9, dtype=torch.complex128, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(batch, coils, h, w, dtype=dtype, generator=g)
    mask = (torch.rand(batch, h, w, generator=g) < 0.5).to(maps.real.dtype)
    return Sense(maps, mask), torch.randn(batch, h, w, dtype=dtype, generator=g)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_cg_matches_dense_solve(dtype):
    mats = random_spd(3, 12, cond=50.0, dtype=dtype)
    rhs = torch.randn(3, 12, dtype=dtype)
    x, info = conjugate_gradient(matvec(mats), rhs, max_iter=100, tol=1e-12, return_info=True)
    expected = torch.linalg.solve(mats, rhs[..., None])[..., 0]
    assert torch.allclose(x, expected, rtol=1e-9, atol=1e-10)
    assert bool(info.converged.all())
    assert info.residual_history.shape[1] == 3


def test_cg_warm_start_at_the_solution_needs_no_iteration():
    mats = random_spd(2, 8, cond=10.0)
    rhs = torch.randn(2, 8, dtype=torch.complex128)
    exact = torch.linalg.solve(mats, rhs[..., None])[..., 0]
    _, info = conjugate_gradient(matvec(mats), rhs, x0=exact, max_iter=20, tol=1e-8, return_info=True)
    assert info.iterations.tolist() == [0, 0]


def test_per_sample_stopping():
    # Sample 0 is the identity (one step), sample 1 is ill-conditioned (many steps).
    easy = torch.eye(20, dtype=torch.complex128)
    hard = random_spd(1, 20, cond=1e4, seed=1)[0]
    mats = torch.stack([easy, hard])
    rhs = torch.randn(2, 20, dtype=torch.complex128)
    x, info = conjugate_gradient(matvec(mats), rhs, max_iter=200, tol=1e-10, return_info=True)
    assert info.iterations[0].item() == 1
    assert info.iterations[1].item() > 10
    # The easy sample is frozen once converged: its answer is exact, not perturbed by later steps.
    assert torch.allclose(x[0], rhs[0], atol=1e-14)
    history = info.residual_history
    assert history.shape == (info.iterations.max().item() + 1, 2)
    assert history[-1, 1] <= 1e-10


def test_cg_zero_rhs_returns_zero():
    x, info = conjugate_gradient(lambda v: 2 * v, torch.zeros(2, 5, dtype=torch.complex64), return_info=True)
    assert torch.equal(x, torch.zeros_like(x)) and info.iterations.tolist() == [0, 0]


def test_solve_normal_solves_the_system():
    op, rhs = small_sense()
    lam = torch.tensor(0.3, dtype=torch.float64)
    x = solve_normal(op, rhs, lam, max_iter=200, tol=1e-13)
    assert torch.allclose(op.normal(x) + lam * x, rhs, atol=1e-10)


def test_solve_normal_gradcheck():
    op, rhs = small_sense(batch=2, coils=2, h=6, w=5)
    rhs.requires_grad_(True)
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda r, l: solve_normal(op, r, l, max_iter=500, tol=1e-14), (rhs, lam), eps=1e-6, atol=1e-6
    )
    per_sample = torch.tensor([0.4, 1.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda l: solve_normal(op, rhs.detach(), l, max_iter=500, tol=1e-14), (per_sample,), eps=1e-6, atol=1e-6
    )


def test_solve_normal_warm_start_changes_neither_solution_nor_gradients():
    op, rhs = small_sense(seed=2)
    x_star = solve_normal(op, rhs, 0.7, max_iter=500, tol=1e-14)
    grads = []
    for x0 in (None, x_star + 1e-3 * torch.randn_like(x_star), torch.randn_like(x_star).requires_grad_()):
        r = rhs.clone().requires_grad_(True)
        lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        x = solve_normal(op, r, lam, max_iter=500, tol=1e-12, x0=x0)
        assert torch.allclose(x, x_star, atol=1e-10)
        x.abs().pow(2).sum().backward()
        grads.append((r.grad, lam.grad))
        if x0 is not None and x0.requires_grad:
            assert x0.grad is None  # the solution does not depend on where CG starts
    for grad_rhs, grad_lam in grads[1:]:
        assert torch.allclose(grad_rhs, grads[0][0], atol=1e-10) and torch.allclose(grad_lam, grads[0][1], atol=1e-10)


def test_solve_normal_gradient_matches_autograd_through_unrolled_cg():
    op, rhs = small_sense(seed=4)
    lam = torch.tensor(0.5, dtype=torch.float64)
    target = torch.randn_like(rhs)

    def loss_of(solution):
        return (solution - target).abs().pow(2).sum()

    r1 = rhs.clone().requires_grad_(True)
    loss_of(solve_normal(op, r1, lam, max_iter=300, tol=1e-14)).backward()
    r2 = rhs.clone().requires_grad_(True)
    unrolled = conjugate_gradient(lambda v: op.normal(v) + lam * v, r2, max_iter=300, tol=1e-14)
    loss_of(unrolled).backward()
    assert torch.allclose(r1.grad, r2.grad, atol=1e-9)


def saved_bytes(max_iter):
    op, rhs = small_sense(batch=2, coils=4, h=32, w=32, dtype=torch.complex64)
    rhs.requires_grad_(True)
    lam = torch.tensor(0.1, requires_grad=True)
    return saved_for_backward(lambda: solve_normal(op, rhs, lam, max_iter=max_iter, tol=0.0))


def test_saved_memory_does_not_grow_with_cg_iterations():
    few, many = saved_bytes(5), saved_bytes(50)
    assert few == many
    assert few == 2 * 32 * 32 * 8  # the solution x alone, complex64


def test_single_coil_closed_form_equals_cg():
    g = torch.Generator().manual_seed(5)
    mask = (torch.rand(2, 12, 11, generator=g) < 0.4).double()
    truth = torch.randn(2, 12, 11, dtype=torch.complex128, generator=g)
    z = torch.randn(2, 12, 11, dtype=torch.complex128, generator=g)
    y = mask * fft2c(truth)
    lam = torch.tensor([0.2, 3.0], dtype=torch.float64)
    op = Sense.single_coil(mask, dtype=torch.complex128)
    rhs = op.adjoint(y[:, None]) + lam[:, None, None] * z
    expected = solve_normal(op, rhs, lam, max_iter=200, tol=1e-14)
    assert torch.allclose(single_coil_dc(z, y, mask, lam), expected, atol=1e-10)


def test_steepest_descent_decreases_the_residual_and_converges():
    op, rhs = small_sense(seed=6)
    lam = 1.0  # well conditioned: steepest descent converges quickly

    def residual(x):
        return torch.linalg.vector_norm(rhs - op.normal(x) - lam * x)

    one = steepest_descent_dc(op, rhs, lam, torch.zeros_like(rhs), n_steps=1)
    many = steepest_descent_dc(op, rhs, lam, torch.zeros_like(rhs), n_steps=200)
    assert residual(one) < residual(torch.zeros_like(rhs))
    assert residual(many) < 1e-8 * torch.linalg.vector_norm(rhs)


def test_bad_input_names_the_argument():
    op, rhs = small_sense()
    with pytest.raises(ValueError, match="lam must be finite and > 0"):
        solve_normal(op, rhs, 0.0)
    with pytest.raises(ValueError, match="lam must be finite and > 0"):
        solve_normal(op, rhs, torch.tensor(float("nan")))
    with pytest.raises(ValueError, match=r"lam must be a scalar or have shape \(B,\)"):
        solve_normal(op, rhs, torch.ones(3))
    with pytest.raises(TypeError, match="rhs must be a complex tensor"):
        solve_normal(op, rhs.real, 1.0)
    with pytest.raises(TypeError, match="op must have a normal"):
        solve_normal(object(), rhs, 1.0)
    with pytest.raises(ValueError, match="rhs contains NaN"):
        conjugate_gradient(lambda v: v, torch.full((1, 3), float("nan")))
    with pytest.raises(ValueError, match="x0 must have the shape of rhs"):
        conjugate_gradient(lambda v: v, torch.ones(1, 3), x0=torch.ones(1, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64, torch.complex128])
def test_sample_norms_are_the_euclidean_norm_of_each_sample(dtype):
    x = torch.randn(3, 4, 6, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    x = x.transpose(-1, -2)  # not contiguous: the real view must still see every element once
    expected = torch.stack([(sample.abs().double() ** 2).sum().sqrt() for sample in x])
    norms = sample_norms(x)
    assert norms.shape == (3,) and not norms.is_complex()
    torch.testing.assert_close(norms.double(), expected, rtol=1e-6, atol=0)
