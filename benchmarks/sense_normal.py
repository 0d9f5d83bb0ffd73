"""Time ``Sense.normal`` against its floor and against sigpy, on one machine, in one run.

The floor is one bare, unshifted ``fft2`` + ``ifft2`` over all coils: a SENSE normal operator
cannot do less. The candidates are timed in turn, round after round (normal, floor, sigpy, ...),
so a drift of the machine's speed hits all of them alike; the ratios are the medians of the
per-round ratios. A fourth candidate is ``Sense.normal`` with a 1-D column mask (the same columns
in every row, as fastMRI samples), which needs 1-D FFTs only; it is divided by the 2-D floor too.
Sizes: 12 coils at 256 x 256 and the demo tier's 8 coils at 128 x 128. On a CUDA machine it also
times the GPU path against the floor on the GPU.

Run: ``python benchmarks/sense_normal.py [--sizes 12x256 8x128] [--rounds 60] [--record]``; ``--record``
keeps the tables for the book's page on speed (``benchmarks/record.py``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import sigpy.mri
import torch

import record
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


def compare(c: int, n: int, rounds: int) -> dict[str, list[dict]]:
    """The CPU table at ``c`` coils x ``n`` x ``n`` (and the CUDA one where a GPU is present), by title."""
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(1, c, n, n, dtype=torch.complex64, generator=gen)
    mask = (torch.rand(n, n, generator=gen) < 0.25).float()
    x = torch.randn(1, n, n, dtype=torch.complex64, generator=gen)
    coil_images = torch.randn(1, c, n, n, dtype=torch.complex64, generator=gen)

    op = Sense(maps, mask)
    columns = (torch.rand(n, generator=gen) < 0.25).float().expand(n, n)
    column_op = Sense(maps, columns)
    torch.testing.assert_close(column_op.normal(x), column_op.adjoint(column_op.forward(x)), rtol=1e-4, atol=1e-4)
    sp_op = sigpy.mri.linop.Sense(maps[0].numpy(), weights=mask.numpy()).N
    x_np = x[0].numpy()
    np.testing.assert_allclose(op.normal(x)[0].numpy(), sp_op * x_np, rtol=1e-3, atol=1e-3 * n)

    floor = "bare fft2 + ifft2"
    times = interleaved_seconds(
        {
            "Sense.normal": lambda: op.normal(x),
            floor: lambda: torch.fft.ifft2(torch.fft.fft2(coil_images, norm="ortho"), norm="ortho"),
            "sigpy Sense.N": lambda: sp_op * x_np,
            "Sense.normal, 1-D mask": lambda: column_op.normal(x),
        },
        rounds,
    )
    notes = {floor: "over the coils, unshifted: what any SENSE normal operator must at least do",
             "sigpy Sense.N": "sigpy.mri.linop.Sense(maps, weights=mask).N, the same operator (checked to 1e-3)",
             "Sense.normal, 1-D mask": "the same columns in every row: 1-D FFTs only (checked against A^H A)"}
    shape = f"{c} coils x {n} x {n} complex64"
    tables = {f"Sense.normal, {shape}, CPU": record.rows(times, notes, floor, {"sigpy Sense.N": "Sense.normal"})}

    if torch.cuda.is_available():
        gpu = Sense(maps.cuda(), mask.cuda())
        xg, cg = x.cuda(), coil_images.cuda()
        gpu_times = interleaved_seconds(
            {
                "Sense.normal": lambda: gpu.normal(xg),
                floor: lambda: torch.fft.ifft2(torch.fft.fft2(cg, norm="ortho"), norm="ortho"),
            },
            rounds,
            sync=torch.cuda.synchronize,
        )
        tables[f"Sense.normal, {shape}, CUDA"] = record.rows(gpu_times, notes, floor)
    return tables


def coils_by_side(text: str) -> tuple[int, int]:
    """``"12x256"`` -> (12, 256)."""
    try:
        coils, side = (int(part) for part in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected coils x image side, such as 12x256") from None
    return coils, side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=coils_by_side, default=[(12, 256), (8, 128)], metavar="COILSxSIDE",
                        help="coils x image side, e.g. 12x256 (the default: 12x256 and the demo tier's 8x128)")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--record", action="store_true", help="keep the tables for the book (book/speed.json)")
    args = parser.parse_args()
    config.reuse_freed_memory()  # every candidate, sigpy too, runs in this process with the same allocator
    print(f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, {args.rounds} interleaved rounds")
    tables = {}
    for coils, side in args.sizes:
        for title, table in compare(coils, side, args.rounds).items():
            record.keep(tables, title, table)
    if args.record:
        record.save(tables)


if __name__ == "__main__":
    main()
