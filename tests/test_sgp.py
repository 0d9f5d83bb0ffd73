"""Learned-stepsize SGP (mrtutor.sgp): the l1-synthesis problem (wavelet, gradient, prox, normalisation),
the baselines ISTA and FISTA-b, the safeguards of Algorithms 3-4 against any network output, and the
stepsize networks."""

import contextlib
import math
import warnings

import numpy as np
import pytest
import torch

from mrtutor import masks, sgp
from mrtutor.metrics import nmse_db
from mrtutor.operators import GaussianBlur, Inpainting, PartialFourier, Radon
from mrtutor.recon import Wavelet
from mrtutor.sgp import STEP_RANGE, DiagNet, L1Synthesis, StepNet, bounded_positive, lipschitz, solve

N = 32
LAM = 0.05  # on these images FISTA-b is converged to round-off by 1200 iterations (tested)


def images(batch=2, n=N, seed=0):
    """Piecewise-smooth test images in [0, 1.1]: an ellipse and a Gaussian bump, placed at random (B, n, n)."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.linspace(-1, 1, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    out = []
    for _ in range(batch):
        a, b = (torch.rand(2, generator=g, dtype=torch.float64) * 0.6 - 0.3).tolist()
        ellipse = ((xx - a) ** 2 / 0.5 + (yy - b) ** 2 / 0.3 < 0.5).double()
        out.append(0.8 * ellipse + 0.3 * torch.exp(-((xx + b) ** 2 + (yy - a) ** 2) / 0.1))
    return torch.stack(out)


def pixel_masks(fraction=0.5, batch=2, n=N):
    return torch.stack([masks.random_pixels((n, n), fraction, seed) for seed in range(1, batch + 1)]).double()


def constant_net(value, diagonal):
    """A stand-in network answering ``value`` everywhere (or random numbers for value="random")."""
    g = torch.Generator().manual_seed(0)

    def net(x, grad):
        shape = x.shape if diagonal else x.shape[:1]
        if value == "random":  # half of them negative, some above t_max
            return 10 * torch.randn(shape, dtype=x.dtype, generator=g)
        return torch.full(shape, value, dtype=x.dtype)

    return net


@contextlib.contextmanager
def nan_warning(expected):
    """Expect the NaN RuntimeWarning, or no warning at all."""
    if expected:
        with pytest.warns(RuntimeWarning, match="NaN"):
            yield
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield


def assert_monotone(objective, rtol=1e-12):
    """F(x_k+1) <= F(x_k) for every sample, up to round-off."""
    rise = objective[1:] - objective[:-1]
    assert (rise <= rtol * objective[:-1].abs()).all(), f"largest rise {rise.max().item():.3e}"


def adam_losses(model, loss, batch, steps, lr=1e-2):
    """The losses of ``steps`` Adam steps on one batch: a network that learns lowers them."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimiser.zero_grad()
        value = loss(model, batch)
        value.backward()
        optimiser.step()
        losses.append(value.item())
    return losses


@pytest.fixture(scope="module")
def inpainting():
    """50 % inpainting, lam = 0.05, and its optimum F* from 1200 FISTA-b iterations (Lee and Chun's ground truth)."""
    truth = images()
    op = Inpainting(pixel_masks())
    problem = L1Synthesis(op, op.forward(truth), LAM)
    optimum = solve(problem, "fista_b", 1200)
    return problem, truth, optimum


# ------------------------------------------------------------------------------------- problem


def test_wavelet_sym4_three_levels_is_orthonormal_and_its_transpose_is_the_adjoint():
    transform = Wavelet((N, N), "sym4", 3)
    g = torch.Generator().manual_seed(0)
    x, v, c = (torch.randn(2, N, N, dtype=torch.float64, generator=g) for _ in range(3))
    # pywt stores sym4's filter to about 5e-13 (its energy is 1 + 5e-13), hence 1e-10 rather than round-off
    torch.testing.assert_close(transform.adjoint(transform.forward(x)), x, rtol=0, atol=1e-10)  # W^T W = I
    torch.testing.assert_close(transform.forward(transform.adjoint(c)), c, rtol=0, atol=1e-10)  # W W^T = I

    def inner(a, b):
        return (a * b).sum().item()

    assert inner(transform.forward(x), transform.forward(v)) == pytest.approx(inner(x, v), rel=1e-10)
    assert inner(transform.forward(x), c) == pytest.approx(inner(x, transform.adjoint(c)), rel=1e-10)
    # the problem's default is the paper's three-level symlet-4
    problem = L1Synthesis(Inpainting(pixel_masks()), images(), LAM)
    assert (problem.transform.wavelet, problem.transform.levels) == ("sym4", 3)


def _operator(name):
    if name == "inpainting":
        return Inpainting(pixel_masks())
    if name == "blur":
        return GaussianBlur(2.0)
    if name == "fourier":  # a random mask: not conjugate-symmetric, so A^H A x is complex for real x
        return PartialFourier(pixel_masks(0.4))
    return Radon(np.linspace(0, 180, 10, endpoint=False), N, dtype=torch.float64)


@pytest.mark.parametrize("name", ["inpainting", "blur", "fourier", "radon"])
def test_gradient_and_objective_match_autograd_and_the_definition(name):
    op = _operator(name)
    g = torch.Generator().manual_seed(1)
    y = op.forward(images())
    noise = torch.randn(y.shape, dtype=y.real.dtype, generator=g)
    y = y + (noise * (1 + 1j) if y.is_complex() else noise) * 0.05
    lam = torch.tensor([0.03, 0.1], dtype=torch.float64)
    problem = L1Synthesis(op, y, lam)
    x = torch.randn(2, N, N, dtype=torch.float64, generator=g).requires_grad_()
    problem.smooth(x).sum().backward()
    gradient = problem.gradient(x.detach())
    assert not gradient.is_complex()
    torch.testing.assert_close(gradient, x.grad, rtol=1e-10, atol=1e-10)
    # F = 1/2 ||A W^T x - y||^2 + lam ||x||_1, written out
    x = x.detach()
    residual = op.forward(problem.transform.adjoint(x)) - y
    expected = 0.5 * (residual.abs() ** 2).flatten(1).sum(1) + lam * x.abs().flatten(1).sum(1)
    torch.testing.assert_close(problem.objective(x), expected, rtol=1e-12, atol=0)
    if name == "fourier":  # the real part in W Re(A^H r) matters here
        assert op.adjoint(residual).imag.abs().max() > 1e-2


def test_prox_soft_thresholds_with_scalar_per_sample_and_diagonal_steps():
    problem = L1Synthesis(Inpainting(torch.ones(8, 8)), torch.zeros(2, 8, 8, dtype=torch.float64), 0.5, levels=1)
    x = torch.zeros(2, 8, 8, dtype=torch.float64)
    x[:, 0, :4] = torch.tensor([3.0, -0.5, 0.2, -2.0])
    out = problem.prox(x, 2.0)  # threshold lam * 2 = 1
    torch.testing.assert_close(out[:, 0, :4], torch.tensor([[2.0, 0.0, 0.0, -1.0]] * 2, dtype=torch.float64))
    assert (out[:, 1:] == 0).all() and (out[:, 0, 4:] == 0).all()
    out = problem.prox(x, torch.tensor([2.0, 0.2], dtype=torch.float64))  # thresholds 1 and 0.1
    torch.testing.assert_close(out[1, 0, :4], torch.tensor([2.9, -0.4, 0.1, -1.9], dtype=torch.float64))
    d = torch.ones_like(x)
    d[:, 0, :4] = torch.tensor([1.0, 0.5, 0.1, 4.0])  # thresholds lam * d_i = 0.5, 0.25, 0.05, 2
    torch.testing.assert_close(problem.prox(x, d)[:, 0, :4], torch.tensor([[2.5, -0.25, 0.15, 0.0]] * 2,
                                                                          dtype=torch.float64))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="step"):
            problem.prox(x, bad)


def test_normalisation_brings_the_lipschitz_constant_to_one_and_rescales_lam():
    op = Radon(np.linspace(0, 180, 8, endpoint=False), 16, dtype=torch.float64)
    truth = images(n=16)
    y = op.forward(truth)
    original = L1Synthesis(op, y, LAM)
    problem = L1Synthesis(op, y, LAM, normalise=True)
    big = original.lipschitz_constant
    assert (big > 10).all()  # a CT projector needs it
    torch.testing.assert_close(problem.scale, big.sqrt())
    # the exact ||A W^T||^2 of the normalised problem, from its dense matrix (both samples share A and s)
    basis = torch.eye(256, dtype=torch.float64).reshape(128, 2, 16, 16)
    columns = torch.cat([problem.forward(pair).flatten(1) for pair in basis]).T
    assert torch.linalg.matrix_norm(columns, ord=2).item() ** 2 <= 1 + 1e-6
    assert (lipschitz(problem, problem.shape, 300, seed=7) <= 1 + 1e-6).all()
    # the same minimiser as lam * L_0 on the original scale: F_normalised = F_original(lam L_0) / L_0
    x = problem.adjoint(problem.y)
    rescaled = L1Synthesis(op, y, LAM * big)
    torch.testing.assert_close(problem.objective(x), rescaled.objective(x) / big, rtol=1e-10, atol=0)
    # operators with ||A|| = 1 are left alone
    assert (L1Synthesis(Inpainting(pixel_masks()), truth.new_zeros(2, N, N), LAM, normalise=True).scale == 1).all()


# ------------------------------------------------------------------------------------- baselines


def test_fista_b_reaches_the_optimum_and_ista_is_monotone(inpainting):
    problem, truth, optimum = inpainting
    best = optimum.objective[-1]
    x = optimum.coefficients  # the 1200-iteration answer is a fixed point of the prox-gradient map
    fixed_point_error = problem.prox(x - problem.gradient(x), 1.0) - x
    assert (fixed_point_error.flatten(1).norm(dim=1) <= 1e-9 * x.flatten(1).norm(dim=1)).all()
    fista = solve(problem, "fista_b", 300, reference=truth)
    assert ((fista.objective[-1] - best) <= 1e-8 * best).all()
    ista = solve(problem, "ista", 300)
    assert_monotone(ista.objective)
    gap_ista = (ista.objective - best) / best
    assert (gap_ista[-1] < 1e-4).all() and (gap_ista[0] > 0.1).all()
    assert (fista.objective[100] - best < 0.1 * (ista.objective[100] - best)).all()  # the O(1/k^2) rate shows
    # histories: shapes, and the NMSE of the last image
    assert fista.objective.shape == fista.nmse_db.shape == (301, 2)
    torch.testing.assert_close(fista.nmse_db[-1], nmse_db(fista.image, truth))
    torch.testing.assert_close(fista.image, problem.image(fista.coefficients))
    assert ista.nmse_db is None and ista.network_used is None
    torch.testing.assert_close(solve(problem, "pgm", 5).objective, ista.objective[:6])


@pytest.mark.parametrize("method", ["ista", "fista_b"])
def test_ista_and_fista_b_apply_a_and_its_adjoint_once_per_iteration(inpainting, monkeypatch, method):
    problem, truth, _ = inpainting
    calls = {"forward": 0, "adjoint": 0}
    for name in calls:
        original = getattr(problem, name)
        monkeypatch.setattr(problem, name, lambda v, name=name, original=original:
                            calls.__setitem__(name, calls[name] + 1) or original(v))
    iterations = 60
    run = solve(problem, method, iterations)
    # FISTA-b's backtracking grows L from FISTA_START * L to at most L: each growth costs A p again and A (p - v)
    growths = math.ceil(math.log(1 / sgp.FISTA_START, sgp.FISTA_GROWTH)) if method == "fista_b" else 0
    # one more of each for the start: A^H y (the zero-filled start) and A x_0 (its objective)
    assert calls["adjoint"] == iterations + 1, calls
    assert iterations + 1 <= calls["forward"] <= iterations + 1 + 2 * growths, calls
    monkeypatch.undo()
    # the objectives computed from the kept A x are the objectives themselves
    torch.testing.assert_close(run.objective[-1], problem.objective(run.coefficients), rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------- SGP safeguards


@pytest.mark.parametrize("method", ["sgp_step", "sgp_diag"])
@pytest.mark.parametrize("value", [1e6, 0.0, -1.0, -math.inf, math.inf, math.nan, "random"])
def test_sgp_decreases_the_objective_and_converges_whatever_the_network_says(inpainting, method, value):
    problem, _, optimum = inpainting
    with nan_warning(isinstance(value, float) and math.isnan(value)):
        result = solve(problem, method, 200, net=constant_net(value, method == "sgp_diag"))
    assert_monotone(result.objective)
    best = optimum.objective[-1]
    assert ((result.objective[-1] - best) / best < 1e-4).all()
    assert result.network_used.shape == (200, 2)


@pytest.mark.parametrize("value, bound", [(1e6, "high"), (math.inf, "high"), (0.0, "low"), (-1.0, "low"),
                                          (-math.inf, "low"), (math.nan, "lipschitz")])
def test_out_of_range_network_outputs_become_the_documented_steps(inpainting, value, bound):
    problem, _, _ = inpainting
    t_lip = 1 / problem.lipschitz_constant[0].item()
    step = {"high": STEP_RANGE * t_lip, "low": t_lip / STEP_RANGE, "lipschitz": t_lip}[bound]
    with nan_warning(bound == "lipschitz"):
        clipped = solve(problem, "sgp_step", 3, net=constant_net(value, False))
        bounded = solve(problem, "sgp_diag", 3, net=constant_net(value, True), t_min=0.3, t_max=3.0)
    exact = solve(problem, "sgp_step", 3, net=constant_net(step, False))
    torch.testing.assert_close(clipped.coefficients, exact.coefficients, rtol=0, atol=0)
    fixed = solve(problem, "sgp_diag", 3, net=constant_net({"high": 3.0, "low": 0.3}.get(bound, t_lip), True),
                  t_min=0.3, t_max=3.0)
    torch.testing.assert_close(bounded.coefficients, fixed.coefficients, rtol=0, atol=0)


def test_each_sample_has_its_own_stepsize_and_line_search():
    truth, mask = images(), pixel_masks()

    def net(x, grad):  # a different, wild stepsize per sample, from its own input only
        return 40 * torch.tanh(50 * x.flatten(1).mean(dim=1)) + 20

    batch = solve(L1Synthesis(Inpainting(mask), truth * mask, LAM), "sgp_step", 30, net=net)
    for i in range(2):
        alone = solve(L1Synthesis(Inpainting(mask[i : i + 1]), (truth * mask)[i : i + 1], LAM), "sgp_step", 30, net=net)
        torch.testing.assert_close(batch.objective[:, i], alone.objective[:, 0], rtol=1e-12, atol=0)
        torch.testing.assert_close(batch.network_used[:, i], alone.network_used[:, 0])


def first_then(first, then):
    """A network that answers ``first`` on its first call and ``then`` afterwards, counting its calls."""

    def net(x, grad):
        net.calls += 1
        return torch.full(x.shape[:1], first if net.calls == 1 else then, dtype=x.dtype)

    net.calls = 0
    return net


@pytest.mark.parametrize("first, backtracks, kept", [(1e6, 4, False), (10.0, 1, True)])
def test_drs_blends_and_drops_the_network_as_algorithm_3_says(first, backtracks, kept):
    """The first step (t_max = 100, or 10) needs 4 (or 1) Armijo halvings, which cut gamma_1 to 1/16 (1/2).
    The second answer is t_L, so z_1 is two 1/L steps, about twice z_2: gamma_1 ||z_1|| > (1 - gamma_1) ||z_2||
    fails at 1/16 and holds at 1/2. Once dropped, the network is not asked again."""
    op = PartialFourier(pixel_masks(0.4))
    problem = L1Synthesis(op, op.forward(images()), LAM)
    net = first_then(first, 1.0)
    result = solve(problem, "sgp_step", 6, net=net)
    assert_monotone(result.objective)
    assert result.network_used[0].all()
    assert (result.network_used[1:] == kept).all()
    assert net.calls == (6 if kept else 2)
    # the count of halvings behind it, read off the first step: x_1 = x_0 + 2^-backtracks z_1
    x0 = problem.adjoint(problem.y)
    t_max = STEP_RANGE / problem.lipschitz_constant.reshape(-1, 1, 1)
    x_net = problem.prox(x0 - t_max.clamp(max=first) * problem.gradient(x0), t_max.clamp(max=first))
    z1 = problem.prox(x_net - problem.gradient(x_net), 1.0) - x0
    x1 = solve(problem, "sgp_step", 1, net=first_then(first, 1.0)).coefficients
    torch.testing.assert_close(x1, x0 + 0.5**backtracks * z1, rtol=0, atol=1e-12)
    if kept:  # the second direction is the blend 1/2 z_1 + 1/2 z_2 (accepted at gamma_2 = 1)
        z2 = problem.prox(x1 - problem.gradient(x1), 1.0) - x1
        x_net = problem.prox(x1 - problem.gradient(x1), 1.0)
        z1 = problem.prox(x_net - problem.gradient(x_net), 1.0) - x1
        x2 = solve(problem, "sgp_step", 2, net=first_then(first, 1.0)).coefficients
        torch.testing.assert_close(x2, x1 + 0.5 * z1 + 0.5 * z2, rtol=0, atol=1e-12)


def test_without_an_armijo_step_sgp_falls_back_to_the_lipschitz_direction(monkeypatch):
    op = PartialFourier(pixel_masks(0.4))
    problem = L1Synthesis(op, op.forward(images()), LAM)
    monkeypatch.setattr(sgp, "MAX_BACKTRACKS", 0)  # the step t_max needs 4 halvings: none is allowed
    result = solve(problem, "sgp_step", 1, net=constant_net(1e6, False))
    assert not result.network_used.any()
    torch.testing.assert_close(result.coefficients, solve(problem, "ista", 1).coefficients, rtol=0, atol=1e-12)


def test_algorithm_1_without_drs_is_monotone_and_keeps_the_network(inpainting):
    problem, _, optimum = inpainting
    result = solve(problem, "sgp_diag", 100, net=constant_net("random", True), drs=False)
    assert_monotone(result.objective)
    assert result.network_used[:50].all()  # z = T_d(x - d g) - x is a descent direction for every d > 0


def test_bad_network_outputs_and_arguments_raise(inpainting):
    problem, _, _ = inpainting
    with pytest.raises(ValueError, match="one stepsize per sample"):
        solve(problem, "sgp_step", 1, net=lambda x, g: torch.ones_like(x))
    with pytest.raises(ValueError, match="one value per coefficient"):
        solve(problem, "sgp_diag", 1, net=lambda x, g: torch.ones(2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        solve(problem, "sgp_step", 1, net=lambda x, g: 1.0)
    with pytest.raises(ValueError, match="needs a stepsize network"):
        solve(problem, "sgp_step", 1)
    with pytest.raises(ValueError, match="takes no network"):
        solve(problem, "ista", 1, net=StepNet())
    with pytest.raises(ValueError, match="method must be one of"):
        solve(problem, "adam", 1)
    with pytest.raises(ValueError, match="t_min"):
        solve(problem, "sgp_step", 1, net=StepNet(), t_min=-1.0)
    with pytest.raises(ValueError, match="lam"):
        L1Synthesis(Inpainting(pixel_masks()), images(), -1.0)


# ------------------------------------------------------------------------------------- networks


@pytest.mark.parametrize("kind", [StepNet, DiagNet])
def test_stepsize_networks_shapes_bounds_and_an_untrained_run(kind):
    torch.manual_seed(0)  # the network's random weights, whatever ran before
    net = kind(t_min=0.05, t_max=20.0).eval()
    g = torch.Generator().manual_seed(2)
    x, grad = (torch.randn(3, N, N, dtype=torch.float64, generator=g) for _ in range(2))
    shape = (3,) if kind is StepNet else (3, N, N)
    out = net(x, grad)
    assert out.shape == shape and out.dtype == torch.float64
    torch.testing.assert_close(out, torch.ones(shape, dtype=torch.float64))  # zero head: sqrt(t_min t_max)
    with torch.no_grad():  # a large head of both signs drives the sigmoid into both bounds
        signs = torch.ones(net.head.weight.numel(), dtype=net.head.weight.dtype)
        signs[1::2] = -1
        net.head.weight.copy_(1e3 * signs.reshape(net.head.weight.shape))
    out = net(x, grad)
    assert ((out >= 0.05) & (out <= 20.0)).all()
    if kind is DiagNet:  # the factor spans [1 / delta, delta] around the step, here 1
        assert out.min().item() == pytest.approx(1 / net.delta) and out.max().item() == pytest.approx(net.delta)
        with torch.no_grad():
            net.step_head.bias.fill_(1e3)
        assert net(x, grad).max().item() == pytest.approx(20.0)  # the product is clipped to t_max
    with pytest.raises(ValueError, match="divisible"):
        net(x[:, :30, :30], grad[:, :30, :30])
    # an untrained network (random head) drives SGP on a complex-valued operator; F still goes down
    with torch.no_grad():
        torch.nn.init.normal_(net.head.weight, std=0.3)
    op = PartialFourier(pixel_masks(0.4))
    truth = images()
    problem = L1Synthesis(op, op.forward(truth), LAM)
    result = solve(problem, "sgp_step" if kind is StepNet else "sgp_diag", 10, net=net, reference=truth)
    assert_monotone(result.objective)
    assert result.objective[-1].max() < 0.5 * result.objective[0].min()
    assert result.nmse_db.shape == (11, 2)


def test_bounded_positive_is_geometric_and_stays_inside():
    u = torch.tensor([-math.inf, -1e4, 0.0, 1e4, math.inf])
    t = bounded_positive(u, 0.01, 100.0)
    torch.testing.assert_close(t, torch.tensor([0.01, 0.01, 1.0, 100.0, 100.0]))
    for bad in ((0.0, 1.0), (2.0, 1.0)):
        with pytest.raises(ValueError, match="bounds"):
            StepNet(t_min=bad[0], t_max=bad[1])


# ------------------------------------------------------------------------------------- training


def test_a_known_lipschitz_estimate_replaces_the_power_iteration(inpainting):
    problem = inpainting[0]
    known = L1Synthesis(problem.op, problem.y, LAM, lipschitz_estimate=1.0)
    torch.testing.assert_close(known.lipschitz_constant, problem.lipschitz_constant, rtol=1e-6, atol=0)
    scaled = L1Synthesis(problem.op, problem.y, LAM, normalise=True, lipschitz_estimate=4.0)
    torch.testing.assert_close(scaled.scale, torch.full((2,), 2.0, dtype=torch.float64))


@pytest.fixture(scope="module")
def quick_data(tmp_path_factory):
    """The quick tier's inpainting data in a data root of its own."""
    from mrtutor.data import sparse_recovery

    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("data")
        patch.setenv("MRTUTOR_DATA", str(root))
        yield root, {split: sparse_recovery.sparse_recovery_dataset("inpainting", split, tier="quick")
                     for split in ("train", "test")}


def test_the_greedy_loss_is_eq_7_at_the_zero_filled_start(quick_data):
    from mrtutor.sgp_training import LearnedSGP, greedy_loss

    batch = quick_data[1]["train"].arrays
    model = LearnedSGP("step", iterations=1, features=4).eval()
    problem = model.problem_for(batch["measurement"], batch["mask"])
    loss, stats = greedy_loss(problem, model.net, batch["reference"], 1, diagonal=False)
    x0 = problem.adjoint(problem.y)
    t = model.net(x0, problem.gradient(x0)).reshape(-1, 1, 1)
    expected = (batch["reference"] - problem.prox(x0 - t * problem.gradient(x0), t)).pow(2).mean()
    torch.testing.assert_close(loss, expected)
    assert stats["network_used"] == 1.0 and stats["log10_step"] == pytest.approx(0.0, abs=1e-6)  # zero head: t = 1
    two, _ = greedy_loss(problem, model.net, batch["reference"], 2, diagonal=False)
    assert two.item() != pytest.approx(loss.item())


def test_the_greedy_loss_drives_the_iterates_in_eval_mode_and_trains_on_all_of_them_at_once(quick_data):
    """Batch norm sees the iterates of all K iterations in one batch (Algorithm 2's training set), so its
    running statistics are those of the mixture that ``solve`` meets; the iterates come from the network
    in evaluation mode, as at test time, and its mode is restored."""
    from mrtutor.sgp_training import LearnedSGP, greedy_loss

    batch = quick_data[1]["train"].arrays
    model = LearnedSGP("step", iterations=3, features=4).train()
    calls = []
    model.net.register_forward_hook(lambda net, args, out: calls.append((net.training, args[0].shape[0])))
    problem = model.problem_for(batch["measurement"], batch["mask"])
    loss, _ = greedy_loss(problem, model.net, batch["reference"], 3, diagonal=False)
    size = batch["measurement"].shape[0]
    assert calls == [(False, size)] * 3 + [(True, 3 * size)]
    assert model.net.training and loss.requires_grad


@pytest.mark.parametrize("kind", ["step", "diag"])
def test_a_few_training_steps_lower_the_greedy_loss(quick_data, kind):
    from mrtutor.sgp_training import LearnedSGP, sgp_loss

    torch.manual_seed(0)
    batch = quick_data[1]["train"].arrays
    model = LearnedSGP(kind, iterations=3, features=4)
    losses = adam_losses(model, sgp_loss, batch, 15)
    assert losses[-1] < 0.95 * losses[0], losses
    assert model.stats["log10_step"] > 0.1  # larger steps than 1/L fill the holes faster


@pytest.fixture(scope="module")
def trained(quick_data, tmp_path_factory):
    """One quick-tier epoch of recipe sgp per kind, through ``python -m mrtutor.train``."""
    from mrtutor.train import main

    out = tmp_path_factory.mktemp("train")
    for kind in ("step", "diag"):
        main(["sgp", "--kind", kind, "--name", f"sgp_{kind}", "--tier", "quick", "--epochs", "1", "--iterations", "3",
              "--features", "4", "--batch-size", "4", "--lr", "1e-2", "--quiet", "--run-dir", str(out / "runs"),
              "--checkpoint-dir", str(out / "ckpt")])
    return out / "ckpt"


@pytest.mark.parametrize("kind", ["step", "diag"])
def test_the_sgp_recipe_round_trip_records_lam_and_the_image_scale(trained, quick_data, kind):
    from mrtutor import checkpoints
    from mrtutor.data.sparse_recovery import LAM
    from mrtutor.sgp_training import LearnedSGP

    record = checkpoints.record(f"sgp_{kind}", trained)
    assert record["sparse_recovery"] == {"problem": "inpainting", "fraction": 0.5, "noise": 0.0, "lam": pytest.approx(LAM),
                                         "image_range": [0.0, 1.0], "views": None}
    assert record["builder_kwargs"]["lam"] == LAM and record["final_metrics"]["lam"] == pytest.approx(LAM)
    assert f"on inpainting from 50 % of the samples" in checkpoints.catalogue(trained)
    model = checkpoints.load(f"sgp_{kind}", directory=trained)
    assert isinstance(model, LearnedSGP) and model.kind == kind and model.iterations == 3
    assert model.lam.item() == pytest.approx(LAM) and model.fraction == 0.5
    batch = quick_data[1]["test"].arrays
    image = model(batch["measurement"], batch["mask"])
    assert image.shape == batch["target"].shape
    problem = model.problem_for(batch["measurement"], batch["mask"])
    result = solve(problem, model.method, 3, net=model.net)
    torch.testing.assert_close(image, result.image)
    assert (result.objective[-1] < result.objective[0]).all()


@pytest.mark.parametrize("kind", ["step", "diag"])
@pytest.mark.parametrize("fraction, noise", [(0.3, 0.0), (0.5, 0.0), (0.7, 0.0), (0.5, 5 / 255)])
def test_every_solve_with_a_trained_network_is_monotone(trained, quick_data, kind, fraction, noise):
    """Armijo keeps F going down at every test setting of the paper, for 20 iterations past the trained K."""
    from mrtutor import checkpoints
    from mrtutor.data.sparse_recovery import forward_operator

    model = checkpoints.load(f"sgp_{kind}", directory=trained)
    target = quick_data[1]["test"].arrays["target"]
    mask = torch.stack([masks.random_pixels(target.shape[1:], fraction, seed) for seed in range(len(target))])
    op = forward_operator("inpainting", fraction, target.shape[-1], mask=mask)
    y = op.forward(target + noise * torch.randn(target.shape, generator=torch.Generator().manual_seed(0)))
    result = solve(model.problem_for(y, mask), model.method, 20, net=model.net, t_min=model.net.t_min,
                   t_max=model.net.t_max)
    assert_monotone(result.objective, rtol=1e-6)
    assert (result.objective[-1] < result.objective[0]).all()


def test_the_direct_unet_starts_as_the_zero_filled_image_and_takes_complex_input():
    from mrtutor.sgp import DirectUNet

    net = DirectUNet((4, 8)).eval()
    real = torch.rand(2, 16, 16)
    complex_image = torch.complex(real, torch.rand(2, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(net(real), real)  # zero head: the input-to-output skip alone
        torch.testing.assert_close(net(complex_image), real)
        net.head.bias.fill_(0.5)
        out = net(complex_image)
    assert out.dtype == torch.float32 and not out.is_complex()
    torch.testing.assert_close(out, real + 0.5)
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.rand(1, 15, 16))


def test_the_direct_unet_without_its_skip_returns_its_head_alone():
    from mrtutor.sgp import DirectUNet

    torch.manual_seed(0)
    with_skip, plain = DirectUNet((4, 8)).eval(), DirectUNet((4, 8), skip=False).eval()
    plain.load_state_dict(with_skip.state_dict())
    image = torch.rand(2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(plain(image), torch.zeros_like(image))  # zero head, nothing passed through
        for net in (with_skip, plain):
            net.head.bias.fill_(0.25)
        torch.testing.assert_close(with_skip(image) - plain(image), image)


def test_the_unet_baseline_recipe_learns_the_converged_image(quick_data, tmp_path):
    """``python -m mrtutor.train sgp_unet``: the loss is the squared error to W^T x*, a few steps lower it, and
    the checkpoint loads as a ``UNetBaseline`` that maps measurements to images."""
    from mrtutor import checkpoints
    from mrtutor.sgp_training import UNetBaseline, unet_loss
    from mrtutor.train import main

    torch.manual_seed(0)
    batch = quick_data[1]["train"].arrays
    model = UNetBaseline("inpainting", features=4)
    problem = model.problem_for(batch["measurement"], batch["mask"])
    zero_filled = problem.op.adjoint(problem.y)
    expected = (zero_filled - problem.image(batch["reference"])).pow(2).mean()  # the untrained network: A^H y
    torch.testing.assert_close(unet_loss(model, batch), expected)
    losses = adam_losses(model, unet_loss, batch, 15)
    assert losses[-1] < 0.7 * losses[0], losses

    main(["sgp_unet", "--name", "unet", "--tier", "quick", "--epochs", "1", "--features", "4", "--batch-size", "4",
          "--quiet", "--run-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt")])
    record = checkpoints.record("unet", tmp_path / "ckpt")
    assert record["sparse_recovery"]["problem"] == "inpainting" and record["sparse_recovery"]["lam"] > 0
    loaded = checkpoints.load("unet", directory=tmp_path / "ckpt")
    test = quick_data[1]["test"].arrays
    assert isinstance(loaded, UNetBaseline) and loaded.net.skip
    assert loaded(test["measurement"], test["mask"]).shape == test["target"].shape

    main(["sgp_unet", "--name", "plain", "--tier", "quick", "--epochs", "1", "--features", "4", "--batch-size", "4",
          "--no-skip", "--quiet", "--run-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt")])
    assert not checkpoints.load("plain", directory=tmp_path / "ckpt").net.skip


def test_complex_step_and_diag_networks_see_real_and_imaginary_parts():
    for net_type in (StepNet, DiagNet):
        net = net_type((4, 8), complex_inputs=True).eval()
        assert net.in_channels == 4
        x = torch.randn(2, 16, 16, dtype=torch.complex64)
        out = net(x, torch.randn_like(x))
        assert not out.is_complex() and out.dtype == torch.float32
        with pytest.raises(ValueError, match="takes 4 channels, got 2"):
            net.features(x.real, x.imag)


def test_learned_sgp_on_chapter_1s_mri_problem_trains_and_stays_monotone(tmp_path, monkeypatch):
    """The mri problem through the recipe's own loss: complex iterates, a few steps lower L_K, and solve with the
    network keeps F falling."""
    from mrtutor.data import sparse_recovery
    from mrtutor.sgp_training import mri_sgp, sgp_loss

    monkeypatch.setenv("MRTUTOR_DATA", str(tmp_path))
    batch = sparse_recovery.sparse_recovery_dataset("mri", "val", tier="quick").arrays
    torch.manual_seed(0)
    model = mri_sgp("step", iterations=3, features=4)
    assert model.lam.item() == pytest.approx(sparse_recovery.MRI_LAM) and model.net.in_channels == 4
    losses = adam_losses(model, sgp_loss, batch, 10)
    assert losses[-1] < losses[0], losses
    assert all(isinstance(value, float) for value in model.stats.values())  # the record's monitor is JSON
    model.eval()
    problem = model.problem_for(batch["measurement"], batch["mask"], batch["maps"])
    run = solve(problem, "sgp_step", 10, net=model.net, t_min=model.net.t_min, t_max=model.net.t_max)
    assert_monotone(run.objective, rtol=1e-6)
    assert run.image.is_complex()
    assert model(batch["measurement"], batch["mask"], batch["maps"]).shape == batch["target"].shape

    from mrtutor import checkpoints
    from mrtutor.train import main

    main(["sgp_mri", "--name", "mri", "--tier", "quick", "--epochs", "1", "--iterations", "2", "--features", "4",
          "--batch-size", "4", "--quiet", "--run-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt")])
    record = checkpoints.record("mri", tmp_path / "ckpt")
    assert record["sparse_recovery"]["problem"] == "mri" and record["sparse_recovery"]["lam"] == pytest.approx(
        sparse_recovery.MRI_LAM)
    assert checkpoints.load("mri", directory=tmp_path / "ckpt").net.in_channels == 4
