"""Stored fits of un-trained networks: ``fits/<name>.pt`` beside ``fits/<name>.json``.

An un-trained network (``mrtutor.untrained``) has no weights worth shipping: it is fitted anew to
every scan. What a chapter reuses is the reconstructions, so they are what is stored, the analogue
of a checkpoint for a method without weights. Only the command writes them::

    python -m mrtutor.fits NAME --net convdecoder --split test --acceleration 4 --mask column_random \\
        --slices 8 --iterations 20000 --seed 0 [--runs K] [--maps] [--layers L --channels C ...] [--tier demo]

It fits the first ``--slices`` slices of the demo dataset's split one by one (with the coil maps,
ConvDecoder-SM, only under ``--maps``: the dataset's maps, or with ``--espirit`` maps estimated from
the measured k-space as the paper does; ``--runs K`` averages K fits from the seeds seed, ..., seed +
K - 1, ``untrained.average_fits``). The mask seeds are those of chapters 4 and 5 (0, 10,000 and
20,000 for the training, validation and test split, then the slice's index), so a chapter that
draws the split with the same mask and acceleration sees the very measurements that were fitted.
``--split ood`` fits the out-of-distribution images ``OOD_IMAGES`` instead (``data.ood_samples`` with
the seed 30,000), through the same simulated acquisition.

While fitting, the PSNR of the image against the slice's reference is recorded every ``iterations /
PSNR_POINTS`` steps (``untrained.fit``'s ``monitor``): the curve that shows the network overfitting
the measured k-space, which the loss alone does not show.

``<name>.pt`` holds tensors only (``load`` reads it with ``weights_only=True``); ``<name>.json`` is the
record: the command, the settings, the dataset's sha256, the git commit, the wall time, the final
losses and the sha256 of the ``.pt`` file, which ``load`` checks. Both are written atomically.

A run keeps its state in ``runs/<name>/state.pt``, written atomically after every slice, so the
same command continues after the last finished slice when interrupted, and a larger ``--slices``
only fits the slices not yet fitted.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import platform
import re
import shlex
import sys
from pathlib import Path

import torch

from mrtutor import checkpoints, config, espirit, masks, metrics, untrained
from mrtutor.data import SPLITS
from mrtutor.train import RUNS_DIR, _checked, describe_device, git_commit

FITS_DIR = Path(__file__).resolve().parent.parent / "fits"

# Each split's mask seed, as in chapters 4 and 5: sample i's mask is seeded by (seed, epoch 0, i).
MASK_SEEDS = {split: 10_000 * i for i, split in enumerate(SPLITS)}
# The out-of-distribution images of ``--split ood`` (Fig. 7 of Darestani and Heckel), and their seed.
OOD_IMAGES = ("dipy_t1", "camera")
MASK_SEEDS["ood"] = 30_000

# The PSNR against the reference is recorded this many times in a fit (and at its last step).
PSNR_POINTS = 100

# Loss histories longer than this are kept at this many evenly spaced iterations (first and last included).
HISTORY_POINTS = 1000

# The sizes ``untrained.fit`` passes to the networks, as command-line options (None: the network's default).
SIZES = ("layers", "channels", "in_size", "skip_channels", "in_channels")

# What a resumed run may change: how many slices, and where and how it runs, never what one slice's fit is.
RESUMABLE_CHANGES = frozenset({"slices", "device"})

# The command's defaults are ``untrained.fit``'s own.
_FIT_DEFAULTS = {name: p.default for name, p in inspect.signature(untrained.fit).parameters.items()}


def fits_dir() -> Path:
    """``MRTUTOR_FITS`` if set, else the repository's ``fits/``."""
    return Path(os.environ.get("MRTUTOR_FITS", FITS_DIR))


def record(name: str, directory: Path | None = None) -> dict:
    """The JSON record of the stored fits ``name``."""
    return checkpoints.read_record(fits_dir() if directory is None else Path(directory), name, "fits")


def load(name: str, directory: Path | None = None) -> dict[str, torch.Tensor]:
    """The stored fits ``name``, after checking the file's sha256 against the record.

    Returns a dict of CPU tensors, for N slices, R runs per slice and P stored loss values:

    * ``reconstruction`` (N, H, W): float32 root-sum-of-squares magnitudes, or complex64
      coil-combined images when fitted with the coil maps (``record(name)["config"]["maps"]``);
    * ``index`` (N,) int64: the slices' indices in the demo dataset's split (its fixed order);
    * ``loss`` (N, R, P) float32: the training loss at the iterations ``loss_iteration`` (P,) int64;
    * ``best_iteration`` (N, R) int64: the iteration whose output each fit kept;
    * ``psnr`` (N, R, Q) float64: each run's PSNR (dB) against the slice's reference, of the image it would
      have given had it stopped after the iterations ``psnr_iteration`` (Q,) int64 (``psnr_every``);
    * ``run_reconstruction`` (N, R, H, W), only when R > 1: each run's own image, whose mean is
      ``reconstruction``;
    * ``seconds`` (N,) float64: the wall time of each slice's fits.
    """
    directory = fits_dir() if directory is None else Path(directory)
    data = checkpoints.verified_file(directory, name, record(name, directory), "fits_file", "python -m mrtutor.fits")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def sizes(args: argparse.Namespace) -> dict:
    """The network sizes given on the command line, as ``untrained.fit``'s keyword arguments."""
    return {key: getattr(args, key) for key in SIZES if getattr(args, key) is not None}


def kept_iterations(iterations: int) -> torch.Tensor:
    """The (P,) iterations whose losses are stored: all of them, or ``HISTORY_POINTS`` evenly spaced."""
    return torch.linspace(0, iterations - 1, min(iterations, HISTORY_POINTS)).round().long()


def psnr_every(iterations: int) -> int:
    """Steps between two PSNR records of a fit of ``iterations`` steps (``PSNR_POINTS`` in a fit)."""
    return max(1, iterations // PSNR_POINTS)


def psnr_iterations(iterations: int) -> torch.Tensor:
    """The iterations after which ``untrained.fit``'s monitor records the PSNR: every ``psnr_every``, and the last."""
    every = psnr_every(iterations)
    return torch.tensor(sorted(set(range(0, iterations, every)) | {iterations - 1}))


def dataset_for(args: argparse.Namespace):
    """The samples that ``args`` fits: the demo dataset's split, or the out-of-distribution images."""
    from mrtutor import data

    if args.split == "ood":
        return data.ood_samples(OOD_IMAGES, tier=args.tier, mask_fn=args.mask, acceleration=args.acceleration,
                                seed=MASK_SEEDS["ood"])
    return data.demo_dataset(args.split, tier=args.tier, mask_fn=args.mask, acceleration=args.acceleration,
                             mask_seed=MASK_SEEDS[args.split], progress=not args.quiet)


def settings(args: argparse.Namespace, dataset_sha256: str) -> dict:
    """What the fits depend on (and ``slices`` and ``device``, which a resumed run may change)."""
    return {"net": args.net, "maps": args.maps, "espirit": args.espirit,
            "espirit_crop": args.espirit_crop if args.espirit else None, "sizes": sizes(args),
            "iterations": args.iterations, "lr": args.lr, "seed": args.seed, "runs": args.runs, "tier": args.tier,
            "split": args.split, "mask": args.mask,
            "acceleration": args.acceleration, "mask_seed": MASK_SEEDS[args.split], "dataset_sha256": dataset_sha256,
            "slices": args.slices, "device": str(args.device)}


def load_state(path: Path, asked: dict, restart: bool) -> dict | None:
    """The saved state of the run, or None; refused when it was fitted with other settings."""
    if restart or not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    changed = {key: (state["settings"].get(key), value) for key, value in asked.items()
               if key not in RESUMABLE_CHANGES and state["settings"].get(key) != value}
    if changed:
        raise ValueError(f"{path} was fitted with other settings (saved, asked): {changed}; resuming would mix "
                         "two kinds of fit in one record. Use --restart to start again, or another name")
    return state


def fit_slice(sample: dict, args: argparse.Namespace) -> dict:
    """Fit one sample of the dataset (``--runs`` fits averaged); returns its entry of the run's state."""
    maps = None
    if args.maps:  # the dataset's maps, or ESPIRiT's estimate from the very measurements being fitted
        maps = espirit.maps(sample["kspace"], sample["mask"], crop=args.espirit_crop) if args.espirit else sample["maps"]
        maps = maps.to(args.device)
    target = sample["target"].to(args.device)
    scores: list[float] = []  # every run's, one after the other

    def record_psnr(iteration: int, image: torch.Tensor) -> None:
        scores.append(metrics.psnr(image, target).item())

    image, each, infos = untrained.average_fits(
        sample["kspace"].to(args.device), sample["mask"].to(args.device), maps, runs=args.runs, seed=args.seed,
        return_runs=True, return_info=True, net=args.net, iterations=args.iterations, lr=args.lr,
        monitor=record_psnr, monitor_every=psnr_every(args.iterations), **sizes(args))
    kept = kept_iterations(args.iterations)
    return {"reconstruction": image.cpu(), "run_reconstruction": each.cpu(), "slice_id": sample["slice_id"],
            "psnr": torch.tensor(scores, dtype=torch.float64).reshape(args.runs, -1),
            "loss": torch.stack([info.loss[kept] for info in infos]),
            "best_iteration": torch.tensor([info.best_iteration for info in infos]),
            "final_loss": [info.loss[-1].item() for info in infos],
            "seconds": sum(info.time_s for info in infos)}


def run(args: argparse.Namespace) -> Path:
    """Fit the slices not fitted yet, then write ``<name>.pt`` and ``<name>.json``; returns the ``.pt`` path."""
    from mrtutor import data

    dataset = dataset_for(args)
    if args.slices > len(dataset):
        raise ValueError(f"--slices {args.slices} is more than the {len(dataset)} slices of the {args.tier} tier's "
                         f"{args.split} split")
    asked = settings(args, data.demo_manifest(args.tier)["sha256"])
    state_path = Path(args.run_dir) / args.name / "state.pt"
    state = load_state(state_path, asked, args.restart) or {"done": [], "commits": []}
    state["commits"] = list(dict.fromkeys(state["commits"] + [git_commit()]))  # every session's code
    state["settings"] = asked
    if state["done"]:
        print(f"resuming {args.name} after {len(state['done'])} fitted slices", flush=True)
    for index in range(len(state["done"]), args.slices):
        entry = fit_slice(dataset[index], args)
        state["done"].append(entry)
        checkpoints.atomic_torch_save(state, state_path)
        print(json.dumps({"slice": index, "slice_id": entry["slice_id"], "final_loss": entry["final_loss"],
                          "seconds": round(entry["seconds"], 1)}), flush=True)

    done = state["done"][:args.slices]  # a smaller --slices than an earlier run's stores the first ones
    tensors = {"reconstruction": torch.stack([entry["reconstruction"] for entry in done]),
               "index": torch.arange(len(done)),
               "loss": torch.stack([entry["loss"] for entry in done]),
               "loss_iteration": kept_iterations(args.iterations),
               "best_iteration": torch.stack([entry["best_iteration"] for entry in done]),
               "psnr": torch.stack([entry["psnr"] for entry in done]),
               "psnr_iteration": psnr_iterations(args.iterations),
               "seconds": torch.tensor([entry["seconds"] for entry in done], dtype=torch.float64)}
    if args.runs > 1:
        tensors["run_reconstruction"] = torch.stack([entry["run_reconstruction"] for entry in done])
    directory = fits_dir() if args.fits_dir is None else Path(args.fits_dir)
    written = checkpoints.atomic_torch_save(tensors, directory / f"{args.name}.pt")
    full = {"name": args.name, "command": "python -m mrtutor.fits " + shlex.join(args.argv), "config": asked,
            "dataset_sha256": asked["dataset_sha256"], "git_commit": state["commits"][-1],
            "git_commits": state["commits"], "device": describe_device(args.device, 1),
            "host": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}",
            "fit_seconds": round(sum(entry["seconds"] for entry in done), 1),
            "final_loss": [entry["final_loss"] for entry in done], "slice_ids": [entry["slice_id"] for entry in done],
            "fits_file": f"{args.name}.pt", "fits_bytes": len(written), "sha256": checkpoints.sha256(written)}
    checkpoints.atomic_write_bytes(directory / f"{args.name}.json",
                                   (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
    print(f"wrote {directory / args.name}.pt")
    return directory / f"{args.name}.pt"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mrtutor.fits", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    positive_int, positive_float = _checked(int, "> 0"), _checked(float, "> 0")
    parser.add_argument("name", help="fits/<name>.pt and fits/<name>.json")
    parser.add_argument("--net", choices=untrained.NETS, default=_FIT_DEFAULTS["net"])
    parser.add_argument("--maps", action="store_true",
                        help="fit one image through the coil maps (ConvDecoder-SM, eq. 4) instead of every coil image")
    parser.add_argument("--espirit", action="store_true",
                        help="with --maps: estimate the maps by ESPIRiT from each slice's measured k-space (its fully "
                             "sampled centre), as the paper does, instead of using the dataset's maps")
    parser.add_argument("--espirit-crop", type=float, default=0.95, metavar="C",
                        help="ESPIRiT's crop: the maps are zero where its eigenvalue is below C (default %(default)s, "
                             "sigpy's)")
    parser.add_argument("--slices", type=positive_int, required=True, metavar="N", help="fit the split's first N slices")
    parser.add_argument("--iterations", type=positive_int, default=_FIT_DEFAULTS["iterations"],
                        help="Adam steps per fit (default %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=_FIT_DEFAULTS["lr"],
                        help="Adam's constant step size (default %(default)s)")
    parser.add_argument("--seed", type=_checked(int, ">= 0"), default=_FIT_DEFAULTS["seed"],
                        help="seed of the network's input and weights (run r of --runs: seed + r)")
    parser.add_argument("--runs", type=positive_int, default=1, help="average this many fits per slice")
    network = parser.add_argument_group("network sizes (default: the network's own)")
    network.add_argument("--layers", type=positive_int, default=None)
    network.add_argument("--channels", type=positive_int, default=None)
    network.add_argument("--in-size", type=positive_int, nargs=2, default=None, metavar=("H", "W"),
                         help="the fixed input's size (decoders)")
    network.add_argument("--skip-channels", type=positive_int, default=None, help="(dip)")
    network.add_argument("--in-channels", type=positive_int, default=None, help="(dip)")
    parser.add_argument("--tier", choices=config.MODES, default=None, help="data tier (default: MRTUTOR_MODE)")
    parser.add_argument("--split", choices=(*SPLITS, "ood"), default="test",
                        help=f"a split of the demo dataset, or ood: the out-of-distribution images {OOD_IMAGES}")
    parser.add_argument("--mask", choices=sorted(masks.MASKS), default="column_random")
    parser.add_argument("--acceleration", type=positive_float, default=4.0)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when present)")
    parser.add_argument("--run-dir", default=str(RUNS_DIR), help="where resumable state lives")
    parser.add_argument("--fits-dir", default=None, help="default: fits/ (or MRTUTOR_FITS)")
    parser.add_argument("--restart", action="store_true", help="ignore saved state and start again")
    parser.add_argument("--quiet", action="store_true", help="no progress bar while the demo data are built")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[\w.-]+", args.name):  # a file name in fits/ and a folder in runs/, not a path
        parser.error(f"name must be letters, digits, '_', '-' or '.', got {args.name!r}")
    if args.espirit and not args.maps:
        parser.error("--espirit estimates the coil maps that --maps fits through; give both")
    if not 0 <= args.espirit_crop < 1:
        parser.error(f"--espirit-crop must be in [0, 1), got {args.espirit_crop}")
    args.argv = list(argv)
    args.tier = args.tier or config.mode()
    args.device = torch.device(args.device) if args.device else config.device()
    if args.in_size is not None:
        args.in_size = tuple(args.in_size)
    return args


def main(argv: list[str] | None = None) -> None:
    config.reuse_freed_memory()
    run(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
