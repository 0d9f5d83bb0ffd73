import copy
import math

import pytest
import torch
from torch import nn

from mrtutor.deq import DEQConvergenceError, DEQConvergenceWarning
from mrtutor.evaluate import saved_for_backward
from mrtutor.fft import channels_to_complex, complex_to_channels
from mrtutor.modl import Denoiser
from mrtutor.mol import (
    MOL, MOLNet, SpectralNormConv2d, alpha_bound, alpha_condition, contraction_factor, lipschitz_estimate,
    lipschitz_penalty, mol_lr, mol_sn, mol_unconstrained, residual_contraction, robustness_bound,
)
from mrtutor.sense import Sense


def problem(batch=2, coils=3, size=16, seed=0, dtype=torch.complex64):
    """Maps normalised to sum_c |S_c|^2 = 1 and a 0/1 mask, so ||A|| <= 1 as the paper assumes."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(batch, coils, size, size, dtype=dtype, generator=g)
    maps = maps / torch.linalg.vector_norm(maps, dim=1, keepdim=True)
    mask = (torch.rand(batch, size, size, generator=g) < 0.4).to(maps.real.dtype)
    truth = torch.randn(batch, size, size, dtype=dtype, generator=g)
    kspace = Sense(maps, mask).forward(truth)
    return kspace, maps, mask, truth


def complex_images(batch, size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, size, size, dtype=torch.complex128, generator=g)


def amplify(net, factor):
    """Scale every weight up, so that spectral normalisation has something to do."""
    with torch.no_grad():
        for conv in net.convs():
            conv.weight.mul_(factor)
    return net


def dense_norm(fn, x):
    """Largest singular value of the (real) Jacobian of a complex image map at x, by a dense SVD."""
    real_in = complex_to_channels(x)

    def real_fn(v):
        return complex_to_channels(fn(channels_to_complex(v)))

    jac = torch.autograd.functional.jacobian(real_fn, real_in)
    return torch.linalg.matrix_norm(jac.reshape(real_fn(real_in).numel(), real_in.numel()), ord=2).item()


def batch_norms(v):
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1)


def test_alpha_condition_matches_propositions():
    assert alpha_bound(0.5) == pytest.approx(1 / 2.25)
    assert alpha_condition(0.3, 0.5).alpha_ok and not alpha_condition(0.5, 0.5).alpha_ok
    # The paper's remark after Prop. 2.3: alpha = 1 (MoDL's iteration) needs m > 0.76 (3 - sqrt 5).
    assert alpha_condition(1.0, 0.77).alpha_ok and not alpha_condition(1.0, 0.76).alpha_ok
    assert alpha_bound(3 - math.sqrt(5)) == pytest.approx(1.0)
    # At the paper's alpha = 2m/(2-m)^2 the contraction bound reaches 1 and eq. 6 says nothing.
    assert contraction_factor(alpha_bound(0.3), 0.3) == pytest.approx(1.0)
    assert robustness_bound(0.01, 0.3, 2.0) < robustness_bound(alpha_bound(0.3) * 0.999, 0.3, 2.0)
    # As alpha -> 0, eq. 6's constant tends to lam / m.
    assert robustness_bound(1e-6, 0.5, 2.0) == pytest.approx(4.0, rel=1e-4)
    check = alpha_condition(0.05, 0.1, lam=20.0, lip=0.95)
    assert check.alpha_ok and check.lip_ok is False and not check.guaranteed
    assert "VIOLATED" in str(check) and "1 - m = 0.9" in str(check)
    assert alpha_condition(0.05, 0.1, lip=0.5).guaranteed
    model = MOL(MOLNet(2, 4), m=0.2)
    assert model.alpha == pytest.approx(alpha_bound(0.2)) and model.alpha_condition().alpha_ok


def test_residual_structure_lets_alpha_one_contract_where_prop_2_3_does_not():
    # Prop. 2.3 needs m > 0.76 for alpha = 1; with F = I - H the map contracts for any Lip(H) < 1.
    assert not alpha_condition(1.0, 0.1).alpha_ok
    assert residual_contraction(1.0, 0.85) == pytest.approx(0.85)
    assert residual_contraction(alpha_bound(0.1), 0.85) == pytest.approx(1 - alpha_bound(0.1) * 0.15)
    check = alpha_condition(1.0, 0.1, lip=0.85)
    assert check.residual_contraction == pytest.approx(0.85) and "0.85 per iteration" in str(check)
    assert alpha_condition(1.5, 0.1, lip=0.5).residual_contraction is None
    with pytest.raises(ValueError, match="alpha must be in"):
        residual_contraction(1.2, 0.5)
    # Measured on eq. 5's map itself, with a spectrally normalised H whose bounds are active.
    torch.manual_seed(0)
    model = mol_sn(layers=3, features=8, m=0.1, alpha=1.0, lam=5.0).double()
    amplify(model.net, 5.0)
    kspace, maps, mask, _ = problem(coils=2, size=10, dtype=torch.complex128)
    op, atb = Sense(maps, mask), Sense(maps, mask).adjoint(kspace)
    model.net(atb)  # the power iterations run on the first image
    lip = model.net.lipschitz_upper_bound()
    assert lip == pytest.approx(0.99 * 0.9, rel=1e-6)
    x, y = complex_images(2, 10, seed=3), complex_images(2, 10, seed=4)
    with torch.no_grad():
        ratio = batch_norms(model.step(x, op, atb) - model.step(y, op, atb)) / batch_norms(x - y)
    assert (ratio <= residual_contraction(1.0, lip) + 1e-9).all()


def test_fixed_point_and_its_accuracy_do_not_depend_on_alpha():
    torch.manual_seed(0)
    net = amplify(MOLNet(layers=3, features=8, spectral_bound=0.85, spectral_iters=200).double(), 5.0)
    kspace, maps, mask, _ = problem(coils=2, size=12, dtype=torch.complex128)

    def solve(alpha, tol):
        model = MOL(copy.deepcopy(net), m=0.1, alpha=alpha, lam=5.0, tol=tol, max_iter=5000, cg_iters=200,
                    cg_tol=1e-13, strict=True).eval()
        with torch.no_grad():
            return model(kspace, maps, mask), model.last_forward_info

    reference, _ = solve(1.0, 1e-12)
    for alpha in (alpha_bound(0.1), 0.5, 1.0):
        x, info = solve(alpha, 1e-5)
        # The tolerance is on ||Q^-1 G(x)|| / ||x||, not on the step: the same accuracy for every alpha
        # (measured 0.3-0.9e-5; a tolerance on the step stops 1.5e-4 away at the paper's alpha).
        assert (batch_norms(x - reference) / batch_norms(reference) < 3e-5).all(), alpha
        assert info.tol == pytest.approx(alpha * 1e-5)


def conv_matrix_norm(weight, x):
    """Operator norm of the zero-padded 3x3 convolution with ``weight`` on x's grid, by a dense SVD."""
    v = complex_to_channels(x)
    jac = torch.autograd.functional.jacobian(lambda u: torch.nn.functional.conv2d(u, weight, padding=1), v)
    return torch.linalg.matrix_norm(jac.reshape(weight.shape[0] * v[0, 0].numel(), v.numel()), ord=2).item()


def test_spectral_norm_bounds_the_true_convolution_operator():
    torch.manual_seed(0)
    conv = SpectralNormConv2d(2, 3, bound=0.5, init_iters=300).double()
    with torch.no_grad():
        conv.weight.mul_(10)
    x = complex_images(1, 6, seed=1)
    conv(complex_to_channels(x))  # the first call on 6x6 images runs the power iteration
    with torch.no_grad():
        true_norm = conv_matrix_norm(conv.weight, x)
        estimate = conv.operator_norm().item()
        # Power iteration on the operator (not on the reshaped weight) finds its norm, from below.
        assert estimate == pytest.approx(true_norm, rel=1e-6) and estimate <= true_norm * (1 + 1e-9)
        # The reshaped (c_out, 9 c_in) matrix that torch's spectral_norm uses has another norm.
        reshaped = torch.linalg.matrix_norm(conv.weight.reshape(3, -1), ord=2).item()
        assert abs(reshaped - true_norm) > 0.05 * true_norm
        # The normalised layer's norm equals the bound (the constraint is active).
        assert conv_matrix_norm(conv.normalised_weight(), x) == pytest.approx(0.5, rel=1e-6)


def test_sn_network_lipschitz_bound_holds():
    torch.manual_seed(0)
    net = amplify(MOLNet(layers=3, features=4, spectral_bound=0.8, spectral_iters=300).double(), 5.0)
    x = complex_images(4, 6, seed=2)
    net(x)
    per_layer = [min(c.bound, c.operator_norm().item()) for c in net.convs()]
    assert max(per_layer) == pytest.approx(0.8 ** (1 / 3), rel=1e-6)  # the constraint is active
    assert net.lipschitz_upper_bound() <= 0.8 * (1 + 1e-9)
    # Local constants (Jacobian norms) and finite ratios stay below the bound.
    for i in range(2):
        assert dense_norm(net, x[i:i + 1]) <= 0.8 * (1 + 1e-4)
    y = x + 0.1 * complex_images(4, 6, seed=3)
    ratios = batch_norms(net(x) - net(y)) / batch_norms(x - y)
    assert ratios.max() <= 0.8
    assert lipschitz_estimate(net, x, n_steps=20).max() <= 0.8 * (1 + 1e-4)
    # Without the normalisation the same weights break the bound by far.
    free = MOLNet(layers=3, features=4).double()
    free.load_state_dict(net.state_dict())
    assert lipschitz_estimate(free, x, n_steps=20).max() > 2.0


def test_sn_training_step_follows_the_weights_and_reaches_every_parameter():
    torch.manual_seed(0)
    model = mol_sn(layers=3, features=4, m=0.5, tol=1e-5, cg_iters=30)  # training mode
    kspace, maps, mask, truth = problem(size=8, coils=2)
    model(kspace, maps, mask)  # first call: power iterations at the 8x8 size
    v_before = [c.v.clone() for c in model.net.convs()]
    out = model(kspace, maps, mask)  # one power step per forward in training mode
    assert all(not torch.equal(c.v, v) for c, v in zip(model.net.convs(), v_before))
    (out - truth).abs().pow(2).mean().backward()
    assert bool(model.last_backward_info.converged.all())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_i_minus_h_is_monotone_when_h_is_a_contraction():
    m = 0.3
    net = amplify(MOLNet(layers=3, features=4, spectral_bound=(1 - m) * 0.99, spectral_iters=300).double(), 5.0)
    x = complex_images(16, 6, seed=4)
    for scale in (1.0, 0.01):  # far and near pairs
        y = x + scale * complex_images(16, 6, seed=5)
        d = x - y
        f_diff = d - (net(x) - net(y))  # F = I - H
        inner = torch.linalg.vecdot(d.flatten(1), f_diff.flatten(1)).real
        assert (inner >= m * batch_norms(d) ** 2).all()


def test_lipschitz_estimate_recovers_the_constant_of_a_linear_network():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 2, 3, padding=1, bias=False).double()

    def linear(z):
        return channels_to_complex(conv(complex_to_channels(z)))

    x = complex_images(2, 6, seed=6)
    with torch.no_grad():
        true = dense_norm(linear, x[:1])
    g = torch.Generator().manual_seed(0)
    start = lipschitz_estimate(linear, x, n_steps=0, generator=g)
    estimate = lipschitz_estimate(linear, x, n_steps=200, generator=torch.Generator().manual_seed(0))
    assert (start <= true * (1 + 1e-9)).all() and (estimate <= true * (1 + 1e-9)).all()
    assert (estimate >= 0.99 * true).all() and (estimate > start).all()
    # the history of one ascent holds what every shorter ascent from the same start returns
    final, history = lipschitz_estimate(linear, x, n_steps=12, generator=torch.Generator().manual_seed(0),
                                        return_history=True)
    assert history.shape == (12, 2) and not history.requires_grad
    for n in (0, 1, 5, 11):
        shorter = lipschitz_estimate(linear, x, n_steps=n, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(history[n], shorter.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(final, lipschitz_estimate(linear, x, n_steps=12, generator=torch.Generator().manual_seed(0)))
    # Real images too: a real 3x3 convolution's norm is its transfer function's largest modulus.
    real = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular", bias=False).double()
    real_net = lambda z: real(z[:, None])[:, 0]  # noqa: E731
    transfer = torch.fft.fft2(nn.functional.pad(real.weight[0, 0].detach(), (0, 5, 0, 5))).abs().max()
    real_estimate = lipschitz_estimate(real_net, torch.rand(2, 8, 8, dtype=torch.float64), n_steps=300,
                                       generator=torch.Generator().manual_seed(0))
    assert (real_estimate <= transfer * (1 + 1e-9)).all() and (real_estimate >= 0.99 * transfer).all()
    # The estimate is differentiable in the weights, so the penalty can train them.
    lipschitz_penalty(estimate).backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_lipschitz_penalty_and_model_loss():
    lip = torch.tensor([0.5, 1.2])
    assert lipschitz_penalty(lip).item() == pytest.approx((0.25 + 1.44) / 2)  # eq. 8: l = lip^2
    assert lipschitz_penalty(lip, weight=2.0, target=0.9).item() == pytest.approx(2 * 0.09 / 2)
    kspace, maps, mask, _ = problem(size=8, coils=2)
    x = Sense(maps, mask).adjoint(kspace)
    model = mol_lr(layers=2, features=4, lipschitz_weight=0.5)
    loss = model.lipschitz_loss(x, n_steps=2)
    assert loss.item() == pytest.approx(0.5 * model.last_lipschitz.pow(2).mean().item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.net.parameters())
    plain = mol_unconstrained(layers=2, features=4)
    assert plain.lipschitz_loss(x, n_steps=2).item() == 0 and plain.last_lipschitz.shape == (2,)
    assert (model.variant, plain.variant, mol_sn(layers=2, features=4).variant) == ("lr", "unconstrained", "sn")


@pytest.mark.parametrize("build", [
    lambda: mol_sn(layers=3, features=8, m=0.5, tol=1e-6, cg_iters=30),
    lambda: mol_unconstrained(layers=3, features=8, m=0.5, tol=1e-6, anderson=3, cg_iters=30),
])
def test_forward_converges_to_the_fixed_point_of_eq_2(build):
    torch.manual_seed(0)
    model = build().eval()
    kspace, maps, mask, truth = problem()
    with torch.no_grad():
        x = model(kspace, maps, mask)
        info = model.last_forward_info
        assert x.shape == truth.shape and x.dtype == torch.complex64
        assert bool(info.converged.all()) and info.final_residual <= 1e-6
        op = Sense(maps, mask)
        atb = op.adjoint(kspace)
        step = model.step(x, op, atb)
        assert (batch_norms(step - x) / batch_norms(x)).max() < 1e-5
        # Eq. 2, independent of alpha and of the CG scaling: lam A^H (A x - b) + x - H(x) = 0.
        grad_c = model.lam * (op.normal(x) - atb) + x - model.net(x)
        assert (batch_norms(grad_c) / batch_norms(model.lam * atb)).max() < 1e-4


def test_gradient_matches_finite_differences_in_float64():
    torch.manual_seed(0)
    kspace, maps, mask, truth = problem(batch=1, coils=2, size=6, dtype=torch.complex128)
    model = MOL(MOLNet(layers=2, features=3).double(), m=0.5, lam=2.0, max_iter=300, tol=1e-13,
                cg_iters=100, cg_tol=1e-14).double()
    kspace = kspace.requires_grad_()

    def loss():
        return (model(kspace, maps, mask) - truth).abs().pow(2).sum()

    params = list(model.parameters())
    grads = torch.autograd.grad(loss(), params + [kspace])
    assert bool(model.last_backward_info.converged.all())
    g = torch.Generator().manual_seed(1)
    directions = [torch.randn(p.shape, dtype=p.dtype, generator=g) for p in params]
    dk = torch.randn(kspace.shape, dtype=kspace.dtype, generator=g) * mask[:, None]
    predicted = sum((gp * d).sum() for gp, d in zip(grads, directions)) + (grads[-1].conj() * dk).real.sum()
    h = 1e-6

    def shifted(sign):
        with torch.no_grad():
            for p, d in zip(params, directions):
                p.add_(sign * h * d)
            kspace.add_(sign * h * dk)
            value = loss()
            for p, d in zip(params, directions):
                p.sub_(sign * h * d)
            kspace.sub_(sign * h * dk)
        return value

    numeric = (shifted(1) - shifted(-1)) / (2 * h)
    assert predicted.item() == pytest.approx(numeric.item(), rel=1e-6)


def test_robustness_bound_of_eq_6_holds():
    torch.manual_seed(0)
    m = 0.5
    alpha = m / (2 - m) ** 2  # the step that minimises the contraction bound, so eq. 6 is finite
    model = mol_sn(layers=3, features=8, m=m, alpha=alpha, lam=2.0, tol=1e-7).eval()
    amplify(model.net, 5.0)
    kspace, maps, mask, _ = problem(size=8, coils=2)
    noise = 0.1 * torch.randn(kspace.shape, dtype=kspace.dtype) * mask[:, None]
    with torch.no_grad():
        x_a = model(kspace, maps, mask)
        x_b = model(kspace + noise, maps, mask)
    bound = model.alpha_condition().robustness
    assert math.isfinite(bound)
    assert (batch_norms(x_a - x_b) <= bound * batch_norms(noise)).all()


def test_memory_does_not_grow_with_forward_iterations():
    kspace, maps, mask, truth = problem(size=8, coils=2)

    def saved(tol):
        torch.manual_seed(0)
        model = mol_unconstrained(layers=2, features=4, m=0.5, tol=tol)
        return saved_for_backward(lambda: model(kspace, maps, mask)), model.last_forward_info.iterations

    (few_bytes, few), (many_bytes, many) = saved(1e-1), saved(1e-6)
    assert many > 3 * few and few_bytes == many_bytes


def test_warm_start_from_a_modl_denoiser_is_exact_in_eval_mode():
    torch.manual_seed(0)
    denoiser = Denoiser(layers=3, features=4)
    with torch.no_grad():  # non-trivial batch-norm statistics and affine parameters
        for bn in (m for m in denoiser.noise if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    denoiser.eval()
    net = MOLNet(layers=3, features=4, residual=True)
    net.load_denoiser(denoiser)
    x = torch.randn(2, 8, 8, dtype=torch.complex64)
    assert torch.allclose(net(x), denoiser(x), atol=1e-5)
    with pytest.raises(ValueError, match="needs residual=True"):
        MOLNet(layers=3, features=4).load_denoiser(denoiser)
    with pytest.raises(ValueError, match="layer shapes differ"):
        MOLNet(layers=3, features=8, residual=True).load_denoiser(denoiser)
    with pytest.raises(ValueError, match="this network has 2 layers"):
        MOLNet(layers=2, features=4, residual=True).load_denoiser(denoiser)


def test_non_convergence_is_reported():
    kspace, maps, mask, _ = problem(size=8, coils=2)
    with pytest.warns(DEQConvergenceWarning, match="forward fixed-point iteration did not converge after 2"):
        mol_unconstrained(layers=2, features=4, max_iter=2, tol=1e-12)(kspace, maps, mask)
    with pytest.raises(DEQConvergenceError, match="after 2 iterations"):
        mol_unconstrained(layers=2, features=4, max_iter=2, tol=1e-12, strict=True)(kspace, maps, mask)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"m \(the monotonicity of F = I - H\) must be in \(0, 1\), got 1"):
        MOL(MOLNet(2, 4), m=1.0)
    with pytest.raises(ValueError, match="alpha must be > 0, got -1"):
        MOL(MOLNet(2, 4), alpha=-1.0)
    with pytest.raises(ValueError, match="lam must be > 0"):
        MOL(MOLNet(2, 4), lam=0.0)
    with pytest.raises(ValueError, match="spectral_bound needs residual=False"):
        MOLNet(2, 4, residual=True, spectral_bound=0.5)
    with pytest.raises(ValueError, match="margin must be in"):
        mol_sn(layers=2, features=4, margin=1.0)
    with pytest.raises(ValueError, match="lipschitz_upper_bound needs a spectrally normalised network"):
        MOLNet(2, 4).lipschitz_upper_bound()
    with pytest.raises(TypeError, match="x must be a complex or real floating tensor"):
        lipschitz_estimate(MOLNet(2, 4), torch.zeros(1, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="n_steps must be >= 0"):
        lipschitz_estimate(MOLNet(2, 4), torch.zeros(1, 8, 8, dtype=torch.complex64), n_steps=-1)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        alpha_condition(0.0, 0.5)
    with pytest.raises(RuntimeError, match="power iteration has not run yet"):
        SpectralNormConv2d(2, 2, bound=1.0).operator_norm()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    model = mol_sn(layers=3, features=8, m=0.5, tol=1e-6, cg_iters=30).eval()
    kspace, maps, mask, _ = problem(size=8, coils=2)
    with torch.no_grad():
        cpu = model(kspace, maps, mask)
        gpu = model.cuda()(kspace.cuda(), maps.cuda(), mask.cuda()).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-4)
