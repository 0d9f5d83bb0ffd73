"""Neural PGD (mrtutor.npgd): the recurrence, shared weights, the learned step, the (P2) loss, the
code's hard data consistency, the contraction parameters of Sec. 4, and its training recipe."""

import json

import pytest
import torch
from torch import nn

from mrtutor import checkpoints, config, data
from mrtutor.data.natural import superresolution_dataset
from mrtutor.fft import fft2c, ifft2c
from mrtutor.npgd import (Gate, LinearCNNProximal, NeuralPGD, ResNetProximal, SuperResolutionPGD, contraction, npgd,
                          npgd_loss)
from mrtutor.operators import AveragePooling
from mrtutor.sense import Sense
from mrtutor.train import main


def single_coil_problem(batch=2, shape=(16, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(batch, *shape, dtype=torch.complex64, generator=g)
    mask = (torch.rand(batch, *shape, generator=g) < 0.4).float()
    mask[:, shape[0] // 2, shape[1] // 2] = 1
    maps = torch.ones(batch, 1, *shape, dtype=torch.complex64)
    kspace = fft2c(target)[:, None] * mask[:, None]
    return kspace, maps, mask, target


class Scale(nn.Module):
    """P(x) = c x: a proximal whose iterates can be computed by hand."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return self.c * x


class ChannelReLU(nn.Module):
    """P(x) = ReLU(Re x) + i ReLU(Im x), through a Gate: masks that can be frozen, and a known M*."""

    def __init__(self):
        super().__init__()
        self.gate = Gate()

    def forward(self, x):
        return torch.complex(self.gate(x.real), self.gate(x.imag))


@pytest.mark.parametrize("coils", [1, 3])
def test_iterates_have_the_image_shape_and_run_past_t(coils):
    kspace, maps, mask, _ = single_coil_problem()
    if coils > 1:
        g = torch.Generator().manual_seed(1)
        maps = torch.randn(2, coils, 16, 12, dtype=torch.complex64, generator=g)
        maps = maps / torch.linalg.vector_norm(maps, dim=1, keepdim=True)
        kspace = Sense(maps, mask).forward(torch.randn(2, 16, 12, dtype=torch.complex64, generator=g))
    model = npgd(iterations=3, blocks=2, features=8).eval()
    with torch.no_grad():
        out = model(kspace, maps, mask)
        xs = model.iterates(kspace, maps, mask, steps=7)
    assert out.shape == (2, 16, 12) and out.dtype == torch.complex64
    assert len(xs) == 7 and torch.allclose(xs[2], out)


def test_one_proximal_is_shared_by_every_iteration():
    counts = {t: sum(p.numel() for p in npgd(iterations=t, blocks=2, features=8).parameters()) for t in (1, 5, 10)}
    assert len(set(counts.values())) == 1
    assert sum(p.numel() for p in npgd(blocks=3, features=8).parameters()) > counts[1]


def test_the_step_alpha_is_learned_and_the_code_s_step_has_none():
    kspace, maps, mask, target = single_coil_problem()
    model = npgd(iterations=3, features=8)
    npgd_loss(model, {"kspace": kspace, "maps": maps, "mask": mask, "target": target}).backward()
    assert model.alpha.grad is not None and model.alpha.grad.abs() > 0
    hard = npgd(iterations=3, features=8, consistency="hard")
    assert "alpha" not in dict(hard.named_parameters()) and "alpha" in hard.state_dict()


def test_p2_loss_on_a_hand_computed_case():
    """P(x) = x / 2, T = 2, alpha = 0.8: the iterates and both terms of (P2) by hand, in the Fourier domain."""
    kspace, maps, mask, target = single_coil_problem(batch=1)
    model = NeuralPGD(iterations=2, proximal=Scale(0.5), alpha=0.8, beta=0.75)
    y, m = kspace[:, 0], mask
    aty = ifft2c(y)
    x1 = 0.5 * (0.8 * aty)
    x2 = 0.5 * (x1 + 0.8 * (aty - ifft2c(m * fft2c(x1))))
    image = (x2 - target).abs().pow(2).mean()
    data_terms = sum((m * fft2c(x) - y).abs().pow(2).mean() for x in (x1, x2))
    expected = 0.75 * image + 0.25 * data_terms
    loss = npgd_loss(model, {"kspace": kspace, "maps": maps, "mask": mask, "target": target})
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    model.beta = 1.0
    assert npgd_loss(model, {"kspace": kspace, "maps": maps, "mask": mask, "target": target}).item() == \
        pytest.approx(image.item(), rel=1e-5)


def test_hard_consistency_puts_back_the_measured_k_space():
    kspace, maps, mask, _ = single_coil_problem()
    model = npgd(iterations=2, features=8, consistency="hard").eval()
    with torch.no_grad():
        out = model(kspace, maps, mask)
    sampled = fft2c(out)[:, None] * mask[:, None]
    assert torch.allclose(sampled, kspace, atol=1e-5)


def test_contraction_parameters_of_a_relu_proximal_have_the_known_values():
    """P = ReLU on the real and imaginary parts and x* with positive parts: all masks at x* are
    open, so M* = I. Then eta_1 = ||(I - alpha A^H A) delta|| / ||delta|| and eta_2 measures what
    the ReLU cuts off the next input, ||P(s) - s|| / ||delta||."""
    _, maps, mask, _ = single_coil_problem(batch=2)
    g = torch.Generator().manual_seed(3)
    x_star = torch.complex(torch.rand(2, 16, 12, generator=g) + 0.1, torch.rand(2, 16, 12, generator=g) + 0.1)
    model = NeuralPGD(iterations=4, proximal=ChannelReLU(), alpha=0.7).eval()
    op = Sense(maps, mask)
    result = contraction(model, op, x_star, steps=5)
    norms = lambda v: torch.linalg.vector_norm(v.reshape(2, -1), dim=1)  # noqa: E731
    x = torch.zeros_like(x_star)
    for t in range(5):
        delta = x - x_star
        moved = delta - 0.7 * op.normal(delta)  # (I - alpha A^H A) delta
        s = x_star + moved
        x_next = torch.complex(torch.relu(s.real), torch.relu(s.imag))
        assert torch.allclose(result["eta1"][t], norms(moved) / norms(delta), rtol=1e-5)
        assert torch.allclose(result["eta2"][t], norms(x_next - s) / norms(delta), rtol=1e-4, atol=1e-7)
        assert torch.allclose(result["nrmse"][t], norms(delta) / norms(x_star), rtol=1e-5)
        x = x_next
    assert torch.allclose(result["xi"], torch.zeros(2))  # x* is a fixed point of P
    # The masks are released afterwards: the proximal is a ReLU again.
    assert not any(m.frozen or m.mask is not None for m in model.modules() if isinstance(m, Gate))


def test_contraction_splits_the_error_of_a_trained_shape_network_exactly():
    """For any ReLU network: x_{t+1} - x* = M*(I - alpha A^H A) delta + (M_t - M*) s + xi, so the
    triangle inequality of eq. 14 holds: nrmse_{t+1} <= (eta1 + eta2) nrmse_t + xi."""
    kspace, maps, mask, target = single_coil_problem(batch=2)
    torch.manual_seed(0)
    model = npgd(iterations=3, blocks=1, features=8).eval()
    with torch.no_grad():  # move batch norm off its identity start
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    r = contraction(model, Sense(maps, mask), target, steps=4)
    bound = (r["eta1"][:-1] + r["eta2"][:-1]) * r["nrmse"][:-1] + r["xi"]
    assert (r["nrmse"][1:] <= bound * (1 + 1e-4)).all()
    with pytest.raises(ValueError, match="eval mode"):
        contraction(model.train(), Sense(maps, mask), target, steps=1)
    with pytest.raises(ValueError, match="gradient step"):
        contraction(npgd(iterations=2, features=8, consistency="hard").eval(), Sense(maps, mask), target, steps=1)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        NeuralPGD(iterations=0)
    with pytest.raises(ValueError, match="consistency must be one of"):
        NeuralPGD(consistency="soft")
    with pytest.raises(ValueError, match="beta must be in"):
        NeuralPGD(beta=1.5)
    with pytest.raises(ValueError, match="blocks and features"):
        ResNetProximal(blocks=0)


def test_single_coil_data_measure_the_reference_image(tmp_path, monkeypatch):
    monkeypatch.setenv("MRTUTOR_DATA", str(tmp_path))
    multi = data.demo_dataset("train", tier="quick", mask_fn="radial_view_ordering", acceleration=5, progress=False)
    single = data.SingleCoil(torch.utils.data.Subset(multi, range(6)), noise_sigma=0.05, noise_seed=3)
    sample, again = single[2], single[2]
    assert sample["kspace"].shape == (1, 48, 48) and torch.equal(sample["maps"], torch.ones_like(sample["kspace"]))
    assert torch.equal(sample["kspace"], again["kspace"])  # the noise is fixed per slice
    noise = (sample["kspace"][0] - fft2c(sample["target"]) * sample["mask"])[sample["mask"] > 0]
    assert noise.abs().pow(2).mean().sqrt().item() == pytest.approx(0.05, rel=0.15)
    assert torch.equal(sample["mask"], multi[2]["mask"])
    before = single[0]["mask"].clone()
    single.set_epoch(1)  # fresh masks reach the wrapped dataset through the Subset
    assert not torch.equal(single[0]["mask"], before)
    with pytest.raises(ValueError, match="noise_sigma must be >= 0"):
        data.SingleCoil(multi, -1.0)


def test_the_npgd_recipe_trains_and_records_its_step(tmp_path, monkeypatch):
    monkeypatch.setenv("MRTUTOR_DATA", str(tmp_path / "data"))
    main(["npgd", "--name", "tiny", "--tier", "quick", "--epochs", "1", "--iterations", "2", "--features", "4",
          "--single-coil", "--mask", "radial_view_ordering", "--acceleration", "5", "--train-slices", "8", "--quiet",
          "--run-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt")])
    record = json.loads((tmp_path / "ckpt" / "tiny.json").read_text())
    assert record["config"]["single_coil"] and "train_alpha" in record["history"][0]
    model = checkpoints.load("tiny", directory=tmp_path / "ckpt")
    assert isinstance(model, NeuralPGD) and model.iterations == 2
    assert model.alpha.item() == pytest.approx(record["history"][0]["train_alpha"], abs=1e-2)


def test_the_residual_proximal_adds_its_input():
    torch.manual_seed(0)
    plain, residual = ResNetProximal(1, 8), ResNetProximal(1, 8, residual=True)
    residual.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, 8, dtype=torch.complex64)
    with torch.no_grad():
        assert torch.allclose(residual.eval()(x), x + plain.eval()(x))


def test_a_swish_gate_records_the_sigmoid_as_its_mask():
    gate, z = Gate("swish", swish_beta=2.0), torch.linspace(-3, 3, 7)
    gate.record = True
    out = gate(z)
    assert torch.allclose(out, z * torch.sigmoid(2 * z)) and torch.allclose(gate.mask, torch.sigmoid(2 * z))
    out.sum().backward()
    assert gate.beta.grad is not None  # beta is learned
    gate.frozen = True
    assert torch.allclose(gate(torch.ones(7)), torch.sigmoid(2 * z))
    with pytest.raises(ValueError, match="activation must be one of"):
        Gate("tanh")


@pytest.mark.parametrize("kernel_size", [1, 2, 5, 8, 32])
def test_the_fourier_linear_cnn_is_the_circular_convolution_network(kernel_size):
    torch.manual_seed(kernel_size)
    proximal = LinearCNNProximal(layers=4, features=3, kernel_size=kernel_size, init_noise=0.5)
    with torch.no_grad():
        for bias in proximal.biases:
            bias.normal_()
    x = torch.randn(2, 40, 36)
    assert torch.allclose(proximal.linear(x), proximal.convolve(x), atol=1e-4)
    z = proximal.convolve(x)
    assert torch.allclose(proximal(x), z * torch.sigmoid(10 * z), atol=1e-4)


def test_the_linear_cnn_starts_as_the_swish_and_refuses_what_it_cannot_do():
    proximal = LinearCNNProximal(kernel_size=8, init_noise=0.0, swish_beta=1.0)
    x = torch.randn(2, 16, 16)
    assert torch.allclose(proximal(x), nn.functional.silu(x), atol=1e-5)
    with pytest.raises(ValueError, match="larger than the image"):
        LinearCNNProximal(kernel_size=32)(x)
    with pytest.raises(TypeError, match="real images"):
        proximal(x.to(torch.complex64))


def test_average_pooling_is_adjoint_and_its_step_puts_back_the_block_means():
    op, g = AveragePooling(2), torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 8, 6, generator=g), torch.randn(3, 4, 3, generator=g)
    assert (op.forward(x) * y).sum().item() == pytest.approx((x * op.adjoint(y)).sum().item(), abs=1e-5)
    assert torch.allclose(op.forward(x)[0, 0, 0], x[0, :2, :2].mean())
    stepped = x + 4 * op.adjoint(y - op.forward(x))  # alpha = factor^2 = 1 / ||A||^2
    assert torch.allclose(op.forward(stepped), y, atol=1e-6)
    with pytest.raises(ValueError, match="not divisible by the factor"):
        op.forward(torch.randn(1, 5, 4))


def test_superresolution_data_pair_images_with_their_block_means(tmp_path, monkeypatch):
    monkeypatch.setenv("MRTUTOR_DATA", str(tmp_path))
    dataset = superresolution_dataset("train", tier="quick", seed=1)
    assert len(dataset) == 2 * config.settings("quick")["demo_slices"]["train"]
    brain, photo = dataset[0], dataset[len(dataset) - 1]
    assert brain["kind"] == "brain" and photo["kind"] == "photograph"
    for sample in (brain, photo):
        assert sample["target"].shape == (48, 48) and sample["measurement"].shape == (24, 24)
        assert torch.allclose(sample["measurement"], AveragePooling(2).forward(sample["target"][None])[0])
    assert torch.equal(dataset[len(dataset) - 1]["target"], photo["target"])  # fixed within an epoch
    dataset.set_epoch(1)
    assert not torch.equal(dataset[len(dataset) - 1]["target"], photo["target"])  # fresh crops per epoch


def test_the_superresolution_recipe_trains_from_its_own_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MRTUTOR_DATA", str(tmp_path / "data"))
    common = ["--name", "sr", "--tier", "quick", "--epochs", "1", "--iterations", "3", "--features", "2",
              "--train-slices", "8", "--quiet", "--run-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt")]
    main(["npgd_sr", *common])
    model = checkpoints.load("sr", directory=tmp_path / "ckpt")
    assert isinstance(model, SuperResolutionPGD) and model.iterations == 3
    assert model(torch.rand(2, 24, 24)).shape == (2, 48, 48)
    with pytest.raises(ValueError, match="brings its own data"):
        main(["npgd_sr", *common, "--single-coil", "--restart"])
