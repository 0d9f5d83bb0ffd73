"""Time ``mrtutor.untrained.fit`` per iteration at the demo size (128 x 128, 8 coils, no coil maps).

The time of one iteration is (t(long) - t(short)) / (long - short) for two fits of ``short`` and
``long`` iterations, so that building the network and the final step cancel. Printed: iterations
per second, minutes per fit of 20,000 iterations (the authors' shortest) and fits per minute of
1,000 iterations. The speed does not depend on the data, so the k-space is random.

Run: ``OMP_NUM_THREADS=1 python benchmarks/untrained_speed.py [--threads 1 --short 3 --long 13]``.
"""

from __future__ import annotations

import argparse

import torch

from mrtutor import config
from mrtutor.masks import column_random
from mrtutor.untrained import fit

SETTINGS = (  # (label, net, sizes)
    ("ConvDecoder 8 x 256 (paper, Table 10)", "convdecoder", dict(layers=8, channels=256)),
    ("ConvDecoder 7 x 160 (authors' code)", "convdecoder", dict(layers=7, channels=160)),
    ("ConvDecoder 7 x 128", "convdecoder", dict(layers=7, channels=128)),
    ("ConvDecoder 7 x 64", "convdecoder", dict(layers=7, channels=64)),
    ("ConvDecoder 6 x 64, input 4 x 4 (8x knee)", "convdecoder", dict(layers=6, channels=64, in_size=(4, 4))),
    ("ConvDecoder 5 x 64 (Table 11)", "convdecoder", dict(layers=5, channels=64)),
    ("ConvDecoder 5 x 32", "convdecoder", dict(layers=5, channels=32)),
    ("Deep Decoder 10 x 64 (Table 11)", "deepdecoder", {}),
    ("DIP 12 layers x 64 (Table 11)", "dip", {}),
)


def seconds_per_iteration(kspace, mask, net: str, sizes: dict, short: int, long: int) -> float:
    times = [fit(kspace, mask, net=net, iterations=n, return_info=True, **sizes)[1].time_s for n in (short, long)]
    return (times[1] - times[0]) / (long - short)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--short", type=int, default=3)
    parser.add_argument("--long", type=int, default=13)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config.reuse_freed_memory()
    g = torch.Generator().manual_seed(0)
    kspace = torch.randn(8, 128, 128, dtype=torch.complex64, generator=g)
    mask = column_random((128, 128), 4, seed=0)
    print(f"{'setting':45s} {'it/s':>7s} {'min/20k fit':>12s} {'1k fits/min':>12s}")
    for label, net, sizes in SETTINGS:
        t = seconds_per_iteration(kspace, mask, net, sizes, args.short, args.long)
        print(f"{label:45s} {1 / t:7.2f} {20000 * t / 60:12.1f} {60 / (1000 * t):12.3f}", flush=True)


if __name__ == "__main__":
    main()
