import pytest
import torch

from mrtutor.deq import DEQConvergenceError, DEQConvergenceWarning, DeepEquilibrium, fixed_point
from mrtutor.evaluate import saved_for_backward


def affine_contraction(rho, n=16, batch=2, seed=0):
    """f(x) = M x + c on (B, 4, 4) complex128 images; returns f and the exact fixed point.

    M is Hermitian with eigenvalues spread over [0, rho], so plain iteration converges like rho^k.
    """
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.complex128, generator=g))
    m = q @ torch.diag(torch.linspace(0, rho, n, dtype=torch.float64).to(q.dtype)) @ q.mH
    c = torch.randn(batch, n, dtype=torch.complex128, generator=g)
    side = int(n**0.5)

    def f(x):
        return (x.reshape(batch, n) @ m.T + c).reshape(batch, side, side)

    exact = torch.linalg.solve(torch.eye(n, dtype=m.dtype) - m, c.T).T.reshape(batch, side, side)
    return f, exact


def toy_problem(seed=0):
    """A nonlinear contraction f(x) = s * tanh(x W) + b (tanh on real and imaginary parts), s < 1."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 3, dtype=torch.complex128, generator=g)
    w = (w / torch.linalg.matrix_norm(w, ord=2)).requires_grad_()
    b = torch.randn(2, 3, 3, dtype=torch.complex128, generator=g).requires_grad_()
    s = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, 3, dtype=torch.complex128, generator=g)
    return w, b, s, target


def toy_map(w, b, s):
    def f(x):
        y = x @ w
        return s * torch.complex(torch.tanh(y.real), torch.tanh(y.imag)) + b
    return f


def test_plain_iteration_finds_the_fixed_point_of_a_contraction():
    f, exact = affine_contraction(rho=0.5)
    x, info = fixed_point(f, torch.zeros_like(exact), max_iter=200, tol=1e-12)
    assert torch.allclose(x, exact, atol=1e-10)
    assert bool(info.converged.all())
    history = info.residual_history
    assert history.shape == (info.iterations, 2)
    assert history[-1].max() <= 1e-12 < history[-2].max()
    # A contraction by 0.5 cannot need more than ~log(1e-12)/log(0.5) + a few steps.
    assert info.iterations <= 50
    assert "converged after" in str(info)


def test_anderson_finds_the_same_point_in_fewer_iterations():
    f, exact = affine_contraction(rho=0.95)
    x0 = torch.zeros_like(exact)
    x_plain, plain = fixed_point(f, x0, max_iter=2000, tol=1e-10)
    x_anderson, anderson = fixed_point(f, x0, max_iter=2000, tol=1e-10, anderson=5)
    assert bool(plain.converged.all()) and bool(anderson.converged.all())
    assert torch.allclose(x_plain, exact, atol=1e-8)
    assert torch.allclose(x_anderson, exact, atol=1e-8)
    assert anderson.iterations < plain.iterations / 3


def test_samples_converge_independently_and_stop_when_all_do():
    f, exact = affine_contraction(rho=0.5)
    x0 = torch.stack([exact[0], torch.zeros_like(exact[1])])  # sample 0 starts at its fixed point
    _, info = fixed_point(f, x0, max_iter=100, tol=1e-10)
    history = info.residual_history
    assert history[0, 0] < 1e-13 and history[0, 1] > 1e-3
    assert history[-1, 1] <= 1e-10 and info.iterations > 5


def test_anderson_leaves_a_sample_alone_once_it_sits_exactly_at_its_fixed_point():
    """A sample with f(x) == x exactly (say, a warm-started CG that had nothing left to do) has an
    all-zero Anderson history; it must keep its point while the others go on, not turn into NaN."""
    c = torch.randn(2, 8, dtype=torch.float64)
    x0 = torch.stack([2 * c[0], torch.randn(8, dtype=torch.float64)])  # sample 0 starts at x* = 2c, exactly
    x, info = fixed_point(lambda x: 0.5 * x + c, x0, max_iter=50, tol=1e-10, anderson=3)
    assert bool(info.converged.all()) and torch.allclose(x, 2 * c, atol=1e-9)


def test_implicit_gradient_matches_finite_differences():
    w, b, s, _ = toy_problem()
    layer = DeepEquilibrium(max_iter=300, tol=1e-14)

    def solve(b, s):
        return layer(toy_map(w.detach(), b, s), torch.zeros_like(b))

    # Complex input b (Wirtinger derivatives) and real parameter s, in float64/complex128.
    assert torch.autograd.gradcheck(solve, (b, s), atol=1e-7, rtol=1e-5)
    assert layer.last_backward_info is not None and bool(layer.last_backward_info.converged.all())


def test_implicit_gradient_matches_backprop_through_a_long_unrolled_iteration():
    w, b, s, target = toy_problem(seed=1)
    f = toy_map(w, b, s)
    x = torch.zeros_like(b)
    for _ in range(200):  # 0.7^200: fully converged
        x = f(x)
    loss_unrolled = (x - target).abs().pow(2).sum()
    unrolled = torch.autograd.grad(loss_unrolled, (w, b, s))

    x_deq = DeepEquilibrium(max_iter=200, tol=1e-14)(f, torch.zeros_like(b))
    implicit = torch.autograd.grad((x_deq - target).abs().pow(2).sum(), (w, b, s))
    assert torch.allclose(x_deq, x, atol=1e-12)
    for g_unrolled, g_implicit in zip(unrolled, implicit):
        assert torch.allclose(g_implicit, g_unrolled, atol=1e-10)


def test_memory_does_not_grow_with_the_iterations():
    w, b, s, _ = toy_problem()
    f = toy_map(w, b, s)
    few, many = DeepEquilibrium(max_iter=300, tol=1e-3), DeepEquilibrium(max_iter=300, tol=1e-14)
    bytes_few = saved_for_backward(lambda: few(f, torch.zeros_like(b)))
    bytes_many = saved_for_backward(lambda: many(f, torch.zeros_like(b)))
    assert many.last_forward_info.iterations > 4 * few.last_forward_info.iterations
    assert bytes_few == bytes_many > 0

    def unrolled(k):
        x = torch.zeros_like(b)
        for _ in range(k):
            x = f(x)
        return x

    # The counter does see growth where there is some: unrolling saves per iteration.
    assert saved_for_backward(lambda: unrolled(40)) > 5 * saved_for_backward(lambda: unrolled(5))


def test_no_graph_without_gradients():
    w, b, s, _ = toy_problem()
    with torch.no_grad():
        x = DeepEquilibrium(tol=1e-8)(toy_map(w, b, s), torch.zeros_like(b))
    assert not x.requires_grad


def test_expansive_map_warns_with_the_numbers():
    x0 = torch.ones(2, 3, 3, dtype=torch.complex128)
    with pytest.warns(DEQConvergenceWarning, match=r"did not converge after 20 iterations: relative residual "
                                                     r"\d\.\d+e[-+]\d+ > tol 1\.0e-06"):
        _, info = fixed_point(lambda x: 2 * x + 1, x0, max_iter=20, tol=1e-6)
    assert not bool(info.converged.any()) and info.iterations == 20
    assert info.final_residual > 0.4  # ||x_{k+1} - x_k|| / ||x_{k+1}|| -> 1/2
    with pytest.raises(DEQConvergenceError, match="forward fixed-point iteration did not converge after 20"):
        fixed_point(lambda x: 2 * x + 1, x0, max_iter=20, tol=1e-6, strict=True)


def test_overflow_stops_early_and_says_diverged():
    x0 = torch.ones(1, 2, 2, dtype=torch.float64)
    with pytest.warns(DEQConvergenceWarning, match="diverged"):
        _, info = fixed_point(lambda x: 1e200 * x, x0, max_iter=100, tol=1e-6)
    assert info.iterations < 5


def test_layer_warns_or_raises_in_both_directions():
    w, b, s, target = toy_problem()
    f = toy_map(w, b, s)
    with pytest.warns(DEQConvergenceWarning, match="forward"):
        DeepEquilibrium(max_iter=3, tol=1e-12)(f, torch.zeros_like(b))
    with pytest.raises(DEQConvergenceError, match="forward"):
        DeepEquilibrium(max_iter=3, tol=1e-12, strict=True)(f, torch.zeros_like(b))

    layer = DeepEquilibrium(max_iter=200, tol=1e-12, backward_max_iter=2)
    x = layer(f, torch.zeros_like(b))
    assert bool(layer.last_forward_info.converged.all())
    with pytest.warns(DEQConvergenceWarning, match="backward fixed-point iteration did not converge after 2"):
        (x - target).abs().pow(2).sum().backward()
    assert layer.last_backward_info.iterations == 2 and not bool(layer.last_backward_info.converged.all())

    strict = DeepEquilibrium(max_iter=200, tol=1e-12, backward_max_iter=2, strict=True)
    x = strict(f, torch.zeros_like(b))
    with pytest.raises(DEQConvergenceError, match="backward"):
        (x - target).abs().pow(2).sum().backward()


def test_bad_arguments():
    x0 = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="max_iter must be >= 1, got 0"):
        fixed_point(lambda x: x, x0, max_iter=0)
    with pytest.raises(ValueError, match="tol must be >= 0"):
        fixed_point(lambda x: x, x0, tol=-1.0)
    with pytest.raises(ValueError, match="anderson .* must be >= 0"):
        fixed_point(lambda x: x, x0, anderson=-1)
    with pytest.raises(ValueError, match="beta must be in"):
        fixed_point(lambda x: x, x0, anderson=3, beta=0.0)
    with pytest.raises(ValueError, match=r"f must keep the shape of x \(1, 2, 2\), returned \(1, 4\)"):
        fixed_point(lambda x: x.reshape(1, 4), x0)
    with pytest.raises(TypeError, match="x0 must be a batched tensor"):
        fixed_point(lambda x: x, 3.0)
    with pytest.raises(ValueError, match="backward_tol must be >= 0"):
        DeepEquilibrium(backward_tol=-1.0)
