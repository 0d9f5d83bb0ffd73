"""The scoring loop every chapter's tables use."""

import os

import pytest
import torch

from mrtutor import evaluate, metrics
from mrtutor.evaluate import peak_memory, saved_for_backward


def samples(n=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        target = torch.randn(9, 8, dtype=torch.complex64, generator=gen)
        out.append({"kspace": torch.randn(2, 9, 8, dtype=torch.complex64, generator=gen),
                    "maps": torch.ones(2, 9, 8, dtype=torch.complex64), "mask": torch.ones(9, 8), "target": target})
    return out


def test_scores_equal_the_metrics_per_sample_in_dataset_order():
    data = samples()
    noisy = {i: d["target"] + 0.1 * (i + 1) for i, d in enumerate(data)}
    calls = iter(range(len(data)))
    # A method that returns, for each sample of the batch, its target plus a known error.
    method = lambda k, s, m: torch.stack([noisy[next(calls)] for _ in range(k.shape[0])])  # noqa: E731
    results = evaluate.score({"m": method}, data, batch_size=2)
    expected = torch.stack([metrics.psnr(noisy[i], d["target"]) for i, d in enumerate(data)])
    torch.testing.assert_close(results["m"]["psnr"], expected)
    assert results["m"]["ssim"].shape == (5,) and results["m"]["seconds"] >= 0
    summary = evaluate.summary(results)["m"]
    assert summary["min"] == pytest.approx(expected.min().item()) and summary["max"] == pytest.approx(expected.max().item())


def test_table_has_a_row_per_method_and_a_cell_per_column_and_metric():
    data = samples(3)
    zeros = evaluate.score({"zeros": lambda k, s, m: torch.zeros_like(k[:, 0])}, data)
    table = evaluate.format_table({"4x": zeros, "8x": zeros})
    lines = table.splitlines()
    assert len(lines) == 2 and "4x PSNR" in lines[0] and "8x SSIM" in lines[0]
    assert lines[1].startswith("zeros") and lines[1].count("±") == 4


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="methods must name at least one method"):
        evaluate.score({}, samples(1))
    with pytest.raises(ValueError, match="dataset is empty"):
        evaluate.score({"m": lambda k, s, m: k[:, 0]}, [])
    with pytest.raises(ValueError, match="method 'm' returned shape"):
        evaluate.score({"m": lambda k, s, m: k}, samples(1))
    with pytest.raises(ValueError, match="method 'm' returned NaN or infinite values"):
        evaluate.score({"m": lambda k, s, m: k[:, 0] / 0}, samples(1))
    with pytest.raises(ValueError, match="scores must name functions of mrtutor.metrics"):
        evaluate.score({"m": lambda k, s, m: k[:, 0]}, samples(1), scores=("psnr", "sharpness"))


def test_score_computes_the_scores_asked_for_and_keeps_the_first_images():
    data = samples(3)
    results = evaluate.score({"m": lambda k, s, m: 2 * k[:, 0]}, data, batch_size=2, scores=("psnr", "snr"),
                             keep_images=3)["m"]
    assert set(results) == {"psnr", "snr", "seconds", "images"} and results["snr"].shape == (3,)
    torch.testing.assert_close(results["images"], torch.stack([2 * d["kspace"][0] for d in data]).abs())


def test_saved_for_backward_counts_the_live_graph_only():
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(8, 64)

    def with_a_dropped_graph():
        (torch.tanh(x @ w) ** 2).sum()  # built and dropped at once: nothing of it stays
        return torch.tanh(x @ w).sum()

    live = saved_for_backward(lambda: torch.tanh(x @ w).sum())
    assert live == saved_for_backward(with_a_dropped_graph) > 0
    # tanh saves its (8, 64) float32 output, the product saves x: 2 * 2048 bytes
    assert live == 2 * 8 * 64 * 4
    assert saved_for_backward(lambda: None) == 0


def test_peak_memory_sees_a_temporary_that_is_freed_before_it_returns():
    def run():
        x = torch.ones(2**24)  # 64 MiB of float32
        y = x * 2  # 64 MiB more, while x is alive: the peak
        del x
        z = torch.ones(2**23)  # 32 MiB, after x is gone
        return float(y[-1] + z[-1])  # y and z are freed here: only the peak remembers them

    # a few KiB more: the scalars of the sum and whatever else torch allocates on the way (16 KiB seen)
    assert 0 <= peak_memory(run) - 128 * 2**20 < 256 * 2**10
    assert peak_memory(lambda: None) == 0


def test_peak_memory_does_not_count_tensors_left_by_an_earlier_measurement():
    kept = []
    peak_memory(lambda: kept.append(torch.ones(2**20)))  # 4 MiB allocated under the profiler, still alive
    assert 0 <= peak_memory(lambda: torch.ones(2**18).sum()) - 2**20 < 64 * 2**10


def test_peak_memory_rejects_a_device_it_cannot_measure():
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        peak_memory(lambda: None, device="meta")


def test_saved_for_backward_counts_a_storage_once_and_whole():
    w = torch.randn(64, 64, requires_grad=True)
    y = torch.randn(8, 64) @ w  # (8, 64) float32: 2048 bytes
    # sin and cos both save y: one storage, counted once
    assert saved_for_backward(lambda: (y.sin() + y.cos()).sum()) == 8 * 64 * 4
    # sin saves its input, here a view of one row of z: the view holds all of z's storage
    z = y * 2  # a product with a number saves nothing
    assert saved_for_backward(lambda: z[0].sin().sum()) == 8 * 64 * 4


def test_peak_memory_keeps_what_run_prints_and_drops_the_profilers_markers(capfd):
    peak_memory(lambda: os.write(2, b"a line of run's own\n"))
    err = capfd.readouterr().err
    assert "a line of run's own" in err and "profiler_start" not in err and "USDT" not in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_peak_memory_on_cuda_reads_the_allocators_peak():
    def run():
        x = torch.ones(2**24, device="cuda")  # 64 MiB
        y = x * 2
        return float(y[-1])

    assert 128 * 2**20 <= peak_memory(run, device="cuda") < 130 * 2**20


def trained_denoiser(seed=0):
    """MoDL's denoiser with batch-norm statistics and affine parameters far from their defaults, in eval mode."""
    from mrtutor.modl import Denoiser

    torch.manual_seed(seed)
    net = Denoiser(layers=4, features=8)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.2, 3.0)
                module.weight.normal_(1, 0.3)
                module.bias.normal_(0, 0.3)
    return net.eval()


def test_folding_batch_norms_keeps_the_function_and_leaves_the_original_alone():
    net = trained_denoiser()
    folded = evaluate.fold_batch_norms(net)
    x = torch.randn(3, 16, 12, dtype=torch.complex64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 4
    assert all(conv.bias is not None for conv in folded.modules() if isinstance(conv, torch.nn.Conv2d))


def test_batch_norms_in_training_mode_are_not_folded():
    net = trained_denoiser()
    net.noise[1].train()  # normalises by each batch's own statistics: not a fixed affine map
    folded = evaluate.fold_batch_norms(net)
    assert folded.noise[1] is not net.noise[1] and isinstance(folded.noise[1], torch.nn.BatchNorm2d)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == 1


def test_bfloat16_wraps_only_blocks_of_plain_layers_and_stays_close():
    net = trained_denoiser()
    fast = evaluate.for_inference(net, bfloat16=True)
    assert isinstance(fast.noise, evaluate.Bfloat16Block)
    x = torch.randn(2, 16, 12, dtype=torch.complex64)
    with torch.no_grad():
        out = fast(x)
        assert out.dtype == torch.complex64
        torch.testing.assert_close(out, net(x), rtol=0.05, atol=0.05)
        assert not torch.equal(out, net(x))  # it did compute in bfloat16
    gated = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.Sigmoid())
    assert isinstance(evaluate.bfloat16_convolutions(torch.nn.Sequential(gated)).get_submodule("0"), torch.nn.Sequential)
    assert evaluate.for_inference(net.train(), bfloat16=True) is net  # a training-mode network runs as it is


def test_score_folds_and_batches_without_changing_the_scores():
    class FirstCoil(torch.nn.Module):  # a network method: denoise the first coil's k-space as an image
        def __init__(self):
            super().__init__()
            self.net = trained_denoiser()

        def forward(self, kspace, maps, mask):
            return self.net(kspace[:, 0])

    data = samples(6)
    method = FirstCoil().eval()
    default = evaluate.score({"m": method}, data)["m"]["psnr"]
    one_batch = evaluate.score({"m": method}, data, batch_size=6)["m"]["psnr"]
    torch.testing.assert_close(default, one_batch, rtol=1e-5, atol=1e-5)
    assert evaluate.default_batch_size("cpu") == evaluate.CPU_BATCH < evaluate.GPU_BATCH == evaluate.default_batch_size("cuda")
    assert method.net.noise[1].__class__ is torch.nn.BatchNorm2d  # score worked on a copy


def test_native_bfloat16_can_be_turned_off(monkeypatch):
    from mrtutor import config

    monkeypatch.setenv("MRTUTOR_BFLOAT16", "0")
    assert config.native_bfloat16("cpu") is False
    monkeypatch.delenv("MRTUTOR_BFLOAT16")
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    assert config.native_bfloat16("cpu") == ("avx512_bf16" in flags or "amx_bf16" in flags)
    assert config.native_bfloat16("meta") is False
