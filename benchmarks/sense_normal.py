"""Time ``Sense.normal`` against its floor and against sigpy, on one machine, in one run.

The floor is one bare, unshifted ``fft2`` + ``ifft2`` over all coils: a SENSE normal operator
cannot do less. The three candidates are timed in turn, round after round (normal, floor, sigpy,
normal, ...), so a drift of the machine's speed hits all of them alike; the ratios are the medians
of the per-round ratios. Targets of the foundation issue: normal / floor <= 1.3 and
normal / sigpy <= 0.5. A fourth candidate is ``Sense.normal`` with a 1-D column mask (the same columns in
every row, as fastMRI samples), which needs 1-D FFTs only: its target is 0.6 of the 2-D floor. On a CUDA
machine it also times the GPU path.

Run: ``python benchmarks/sense_normal.py [--coils 12 --size 256 --rounds 60]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import sigpy.mri
import torch

from mrtutor import config
from mrtutor.sense import Sense


def interleaved_seconds(fns: dict, rounds: int, warmup: int = 5, sync=lambda: None) -> dict[str, list[float]]:
    """Per-round wall times of each function, the functions called in turn within every round. The order rotates
    from round to round: a call runs slower right after one that evicted the caches or let torch's threads sleep
    (sigpy's single-threaded numpy), and no candidate should always be the one that follows it."""
    for _ in range(warmup):  # FFT plans, allocator, caches
        for fn in fns.values():
            fn()
    sync()
    times = {name: [] for name in fns}
    order = list(fns)
    for _ in range(rounds):
        for name in order:
            start = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - start)
        order = order[1:] + order[:1]
    return times


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coils", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    config.reuse_freed_memory()  # every candidate, sigpy too, runs in this process with the same allocator

    c, n = args.coils, args.size
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(1, c, n, n, dtype=torch.complex64, generator=gen)
    mask = (torch.rand(n, n, generator=gen) < 0.25).float()
    x = torch.randn(1, n, n, dtype=torch.complex64, generator=gen)
    coils = torch.randn(1, c, n, n, dtype=torch.complex64, generator=gen)

    op = Sense(maps, mask)
    columns = (torch.rand(n, generator=gen) < 0.25).float().expand(n, n)
    column_op = Sense(maps, columns)
    torch.testing.assert_close(column_op.normal(x), column_op.adjoint(column_op.forward(x)), rtol=1e-4, atol=1e-4)
    sp_op = sigpy.mri.linop.Sense(maps[0].numpy(), weights=mask.numpy()).N
    x_np = x[0].numpy()
    np.testing.assert_allclose(op.normal(x)[0].numpy(), sp_op * x_np, rtol=1e-3, atol=1e-3 * n)

    times = interleaved_seconds(
        {
            "normal": lambda: op.normal(x),
            "floor": lambda: torch.fft.ifft2(torch.fft.fft2(coils, norm="ortho"), norm="ortho"),
            "sigpy": lambda: sp_op * x_np,
            "normal, 1-D mask": lambda: column_op.normal(x),
        },
        args.rounds,
    )
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f"{c} coils x {n} x {n} complex64, CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"{args.rounds} interleaved rounds, medians")
    print(f"  Sense.normal          {ms['normal']:8.2f} ms")
    print(f"  bare fft2 + ifft2     {ms['floor']:8.2f} ms   ratio normal/floor = "
          f"{median_ratio(times['normal'], times['floor']):.2f} (target <= 1.3)")
    print(f"  sigpy Sense.N         {ms['sigpy']:8.2f} ms   ratio normal/sigpy = "
          f"{median_ratio(times['normal'], times['sigpy']):.2f} (target <= 0.5)")
    print(f"  Sense.normal, 1-D     {ms['normal, 1-D mask']:8.2f} ms   ratio to the 2-D floor = "
          f"{median_ratio(times['normal, 1-D mask'], times['floor']):.2f} (target <= 0.6)")

    if torch.cuda.is_available():
        gpu = Sense(maps.cuda(), mask.cuda())
        xg, cg = x.cuda(), coils.cuda()
        gpu_times = interleaved_seconds(
            {
                "normal": lambda: gpu.normal(xg),
                "floor": lambda: torch.fft.ifft2(torch.fft.fft2(cg, norm="ortho"), norm="ortho"),
            },
            args.rounds,
            sync=torch.cuda.synchronize,
        )
        print(f"  CUDA ({torch.cuda.get_device_name()}): Sense.normal {statistics.median(gpu_times['normal']) * 1e6:.1f} us, "
              f"bare fft2 + ifft2 {statistics.median(gpu_times['floor']) * 1e6:.1f} us, "
              f"ratio {median_ratio(gpu_times['normal'], gpu_times['floor']):.2f}")


if __name__ == "__main__":
    main()
