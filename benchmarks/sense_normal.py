"""Time ``Sense.normal`` against its floor and against sigpy, on one machine, in one run.

The floor is one bare, unshifted ``fft2`` + ``ifft2`` over all coils: a SENSE normal operator
cannot do less. Prints median times over repeats and the two ratios the foundation issue fixes:
normal / floor (target <= 1.3) and normal / sigpy (target <= 0.5). On a CUDA machine it also times
the GPU path.

Run: ``python benchmarks/sense_normal.py [--coils 12 --size 256 --repeats 50]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import sigpy.mri
import torch

from mrtutor.sense import Sense


def median_seconds(fn, repeats: int, sync=lambda: None) -> float:
    for _ in range(3):  # warm-up: plans, allocator, caches
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coils", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    c, n = args.coils, args.size
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(1, c, n, n, dtype=torch.complex64, generator=gen)
    mask = (torch.rand(n, n, generator=gen) < 0.25).float()
    x = torch.randn(1, n, n, dtype=torch.complex64, generator=gen)
    coils = torch.randn(1, c, n, n, dtype=torch.complex64, generator=gen)

    op = Sense(maps, mask)
    t_normal = median_seconds(lambda: op.normal(x), args.repeats)
    t_floor = median_seconds(lambda: torch.fft.ifft2(torch.fft.fft2(coils, norm="ortho"), norm="ortho"), args.repeats)

    sp_op = sigpy.mri.linop.Sense(maps[0].numpy(), weights=mask.numpy()).N
    x_np = x[0].numpy()
    t_sigpy = median_seconds(lambda: sp_op * x_np, args.repeats)

    print(f"{c} coils x {n} x {n} complex64, CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"  Sense.normal          {t_normal * 1e3:8.2f} ms")
    print(f"  bare fft2 + ifft2     {t_floor * 1e3:8.2f} ms   ratio normal/floor = {t_normal / t_floor:.2f} (target <= 1.3)")
    print(f"  sigpy Sense.N         {t_sigpy * 1e3:8.2f} ms   ratio normal/sigpy = {t_normal / t_sigpy:.2f} (target <= 0.5)")
    np.testing.assert_allclose(op.normal(x)[0].numpy(), sp_op * x_np, rtol=1e-3, atol=1e-3 * n)

    if torch.cuda.is_available():
        sync = torch.cuda.synchronize
        gpu = Sense(maps.cuda(), mask.cuda())
        xg, cg = x.cuda(), coils.cuda()
        tg = median_seconds(lambda: gpu.normal(xg), args.repeats, sync)
        tf = median_seconds(lambda: torch.fft.ifft2(torch.fft.fft2(cg, norm="ortho"), norm="ortho"), args.repeats, sync)
        print(f"  CUDA ({torch.cuda.get_device_name()}): Sense.normal {tg * 1e6:.1f} us, "
              f"bare fft2 + ifft2 {tf * 1e6:.1f} us, ratio {tg / tf:.2f}")


if __name__ == "__main__":
    main()
