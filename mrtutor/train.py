"""Training command: ``python -m mrtutor.train RECIPE --name NAME [options]``, on one process or many.

Every checkpoint in ``checkpoints/`` comes from this command. The recipes (``mrtutor.recipes``) are
declared by the method modules: ``python -m mrtutor.train --help`` lists them, and
``python -m mrtutor.train RECIPE --help`` gives a recipe's own options beside the shared ones. This
module is the loop they share: data, Adam with a cosine schedule, validation, resumable state,
mixed precision, devices, processes, and the checkpoint with its record.

A run keeps its resumable state in ``runs/<name>/state.pt`` (written atomically after every epoch:
model, optimiser, scheduler, epoch, history, random state), so an interrupted run continues where it
stopped when started again with the same command. When the last epoch is done it writes
``checkpoints/<name>.pt`` and its JSON record (command, config, dataset hash, git commit, time,
device, metrics, learning curves).

Several processes, on one machine or many, train one model with PyTorch's DistributedDataParallel
when started by ``torchrun``::

    torchrun --nproc_per_node=4 -m mrtutor.train modl --name NAME ...            # one machine, 4 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d \
             --rdzv-endpoint=HOST:29500 -m mrtutor.train modl --name NAME ...     # on each of two machines

NCCL connects GPUs, gloo CPU processes. ``--batch-size`` is the global batch, split evenly over the
processes, and a ``DistributedSampler`` deals each process its share of the same shuffled order a
single process would use, so N processes take the steps that one process with the whole batch would
take. Process 0 validates and writes the state, the checkpoint and the record; resuming works the
same with any number of processes. Batch norm (MoDL's denoisers) is synchronised across GPUs; gloo
has no synchronised batch norm, so on CPU each process normalises by its own share of the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from mrtutor import checkpoints, config, evaluate, recipes
from mrtutor.metrics import psnr
from mrtutor.recipes import Recipe, complex_mse

RUNS_DIR = Path(__file__).resolve().parent.parent / "runs"


class TrainingObjective(nn.Module):
    """A recipe's loss plus its penalty as one module, so that DistributedDataParallel sees one
    forward and one backward per step (its gradient is the same as that of the two apart)."""

    def __init__(self, recipe: Recipe, model: nn.Module):
        super().__init__()
        self.recipe, self.model = recipe, model

    def forward(self, batch: dict) -> torch.Tensor:
        loss = self.recipe.loss(self.model, batch)
        if self.recipe.penalty is not None:
            loss = loss + self.recipe.penalty(self.model, batch)
        return loss


def training_step(recipe: Recipe, model: nn.Module, batch: dict, optimiser: torch.optim.Optimizer,
                  bf16: bool = False, clip_grad_norm: float | None = None,
                  distributed: DistributedDataParallel | None = None) -> float:
    """One optimiser step on ``batch``; returns the loss (with the penalty, when the recipe has one).

    bf16 autocast runs the convolutions in bfloat16 (2-3x faster on CPUs with AVX512-BF16 and on
    GPUs); the FFTs, CG solves and weights stay in full precision. ``clip_grad_norm`` rescales the
    gradient to at most that norm. Why it matters with Adam: a stage that starts far from its optimum
    (K = 10 from the K = 1 weights) has gradients 10^3 times larger at first than later, and Adam's
    second-moment estimate remembers them for thousands of steps, shrinking every later step.

    On one process the penalty is built after the loss's backward pass, so the two graphs never
    share the memory. ``distributed`` (a ``DistributedDataParallel`` around ``TrainingObjective(recipe,
    model)``) backpropagates their sum in one pass instead, which averages the gradients over the
    processes; it holds both graphs at once.
    """
    device_type = next(model.parameters()).device.type
    optimiser.zero_grad(set_to_none=True)
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16)
    if distributed is not None:
        with autocast:
            loss = distributed(batch)
        loss.backward()
        value = loss.item()
    else:
        with autocast:
            loss = recipe.loss(model, batch)
        loss.backward()
        value = loss.item()
        if recipe.penalty is not None:
            with autocast:
                penalty = recipe.penalty(model, batch)
            if penalty.requires_grad:  # a zero weight builds no graph
                penalty.backward()
            value += penalty.item()
    if clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimiser.step()
    return value


def training_memory(recipe: Recipe, model: nn.Module, batch: dict) -> int:
    """Bytes held for the backward pass at the peak of a ``training_step``: the loss's graph, or the
    penalty's if larger (the step never holds both)."""
    held = evaluate.saved_for_backward(lambda: recipe.loss(model, batch))
    if recipe.penalty is not None:
        held = max(held, evaluate.saved_for_backward(lambda: recipe.penalty(model, batch)))
    return held


def training_peak_memory(recipe: Recipe, model: nn.Module, batch: dict) -> int:
    """Bytes by which memory rises at the peak of one whole ``training_step`` (forward, backward,
    Adam's update), measured on a second step so that Adam's state already exists; the step's own
    gradients count. The model's weights change (two Adam steps at lr 1e-4)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = lambda: training_step(recipe, model, batch, optimiser)  # noqa: E731
    step()
    optimiser.zero_grad(set_to_none=True)
    return evaluate.peak_memory(step, next(model.parameters()).device)


def git_commit() -> str:
    """HEAD, with ``-dirty`` when the package's code differs from it (checkpoints and notebooks do not count).

    Where the code is a copy without its git repository (a tree sent to a GPU machine), the commit
    it was copied from can be declared in ``MRTUTOR_GIT_COMMIT``; the record says it was declared.
    """
    package = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=package)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], capture_output=True,
                               text=True, cwd=package).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        declared = os.environ.get("MRTUTOR_GIT_COMMIT")
        return f"{declared} (declared: a copy without git)" if declared else "unknown"


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def mean_stats(steps: list[dict[str, float]]) -> dict[str, float]:
    """Average each statistic over the steps that report it."""
    keys = dict.fromkeys(k for step in steps for k in step)
    return {k: sum(step[k] for step in steps if k in step) / sum(k in step for step in steps) for k in keys}


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, device: torch.device, monitor=None,
             reconstruct=recipes.reconstruct_kspace) -> dict:
    """Mean loss and per-image PSNR (magnitude, max of reference) of ``reconstruct(model, batch)`` over
    ``loader``, plus the mean of ``monitor(model)`` after each batch when given."""
    model.eval()
    losses, scores, stats = [], [], []
    for batch in loader:
        batch = to_device(batch, device)
        out = reconstruct(model, batch)
        losses.append(complex_mse(out, batch["target"]).item())
        scores.append(psnr(out, batch["target"]).cpu())
        if monitor is not None:
            stats.append(monitor(model))
    scores = torch.cat(scores)
    return {"loss": sum(losses) / len(losses), "psnr": scores.mean().item(), **mean_stats(stats)}


def build_model(recipe: Recipe, args: argparse.Namespace) -> tuple[nn.Module, dict]:
    """The recipe's model with the options given on the command line (and their declared defaults)."""
    kwargs = {option.name: getattr(args, option.name) for option in recipe.options
              if getattr(args, option.name) is not None}
    return recipe.build(kwargs, origin="the command line"), kwargs


def initialise_from(recipe: Recipe, model: nn.Module, name: str, directory: str | None = None) -> None:
    """Start ``model`` from checkpoint ``name`` the recipe's way (``Recipe.init``): MoDL's two-step
    schedule (K = 1 weights start K = 10), or a warm start of MOL from MoDL."""
    if recipe.init is None:
        raise ValueError(f"--init {name}: recipe {recipe.name} does not start from another checkpoint")
    recipe.init(model, checkpoints.load(name, directory=directory))


# The MoDL dataset.hdf5 has training and test slices only: the last tenth of its training slices
# validates (monitoring, and the lam search of CG-PD-NS), so the test slices stay unseen.
MODL_VALIDATION_FRACTION = 0.1


def make_datasets(args: argparse.Namespace):
    """Training and validation sets, and the sha256 of the data they come from: the recipe's own
    (``Recipe.data``), or the k-space datasets of the shared options."""
    from mrtutor import data

    recipe = recipes.get(args.recipe)
    masks = dict(mask_fn=args.mask, acceleration=args.acceleration)
    if recipe.data is not None:
        if args.single_coil or args.modl_data or args.train_subject:
            raise ValueError(f"recipe {recipe.name} brings its own data: --single-coil, --modl-data and "
                             "--train-subject do not apply to it")
        train_set, val_set, data_hash = recipe.data(args)
    elif args.modl_data:
        train_set = data.ModlDataset(args.modl_data, "train", mask_seed=args.seed, **masks)
        val_set = data.ModlDataset(args.modl_data, "train", mask_seed=10_000 + args.seed, **masks)
        n_val = max(1, round(MODL_VALIDATION_FRACTION * len(train_set)))
        if n_val >= len(train_set):
            raise ValueError(f"{args.modl_data} has {len(train_set)} training slices; at least 2 are needed")
        train_set = torch.utils.data.Subset(train_set, range(len(train_set) - n_val))
        val_set = torch.utils.data.Subset(val_set, range(len(val_set) - n_val, len(val_set)))
        data_hash = data.file_digest(args.modl_data)
    else:
        if args.train_subject:
            sets = data.subject_split(args.train_subject, tier=args.tier, mask_seed=args.seed, **masks)
            train_set, val_set = sets["train"], sets["val"]
        else:
            train_set = data.demo_dataset("train", tier=args.tier, mask_seed=args.seed, **masks)
            val_set = data.demo_dataset("val", tier=args.tier, mask_seed=10_000 + args.seed, **masks)
        data_hash = data.demo_manifest(args.tier)["sha256"]
    if args.single_coil:  # seeded apart, so that no validation slice shares its noise with a training slice
        sigma = config.settings(args.tier)["noise_sigma"]
        train_set, val_set = data.SingleCoil(train_set, sigma, args.seed), data.SingleCoil(val_set, sigma, 10_000 + args.seed)
    if args.train_slices:
        if args.train_slices > len(train_set):
            raise ValueError(f"--train-slices {args.train_slices} is more than the {len(train_set)} training slices")
        # A seeded random subset, not the first N: those would be one orientation of one brain. Smaller subsets
        # are nested in larger ones, so a training-set size experiment only adds slices as N grows.
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(args.seed))
        train_set = torch.utils.data.Subset(train_set, order[:args.train_slices].sort().values.tolist())
    return train_set, val_set, data_hash


# What a resumed run may change: its length (the cosine stretches to the new end) and how it runs, never what it
# learns from or how.
RESUMABLE_CHANGES = frozenset({"epochs", "validate_every", "threads", "device", "quiet", "run_dir", "checkpoint_dir",
                               "restart", "argv"})


def set_epoch(dataset, epoch: int) -> None:
    """Fresh masks (or, for a recipe's own data, fresh draws of what it varies) every epoch. (The MoDL
    paper's data file holds one mask per training slice, used in every epoch; ``--fixed-masks`` trains that way.)"""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    dataset.set_epoch(epoch)


def start_processes(args: argparse.Namespace) -> tuple[int, int, torch.device]:
    """(rank, number of processes, device) of this process. Under ``torchrun`` (``WORLD_SIZE`` > 1)
    it joins the process group: NCCL with one GPU per process (``LOCAL_RANK``), else gloo."""
    device = torch.device(args.device) if args.device else config.device()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def from_rank_zero(value):
    """``value`` as process 0 has it, on every process (itself when there is one process)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def load_state(path: Path, rank: int, restart: bool) -> dict | None:
    """The saved state of the run, read by process 0 (the one that writes it) and sent to the others."""
    return from_rank_zero(torch.load(path, map_location="cpu", weights_only=False)
                          if rank == 0 and path.exists() and not restart else None)


def resume(state: dict, args: argparse.Namespace, builder_kwargs: dict, path: Path) -> None:
    """Refuse a saved state that belongs to another run or was trained with other settings."""
    if state["args"]["recipe"] != args.recipe or state["builder_kwargs"] != builder_kwargs:
        raise ValueError(f"{path} belongs to a different run ({state['args']}); use --restart or another --name")
    # Options that did not exist when the state was saved count as their default, None.
    changed = {key: (state["args"].get(key), value) for key, value in vars(args).items()
               if key not in RESUMABLE_CHANGES and state["args"].get(key) != value}
    if changed:
        raise ValueError(f"{path} was trained with other settings (saved, asked): {changed}; resuming would "
                         "mix two trainings in one record. Use --restart to start again, or another --name")


def describe_device(device: torch.device, world: int) -> str:
    name = str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})"
    return name if world == 1 else f"{world} processes, {name} on process 0"


def train(args: argparse.Namespace) -> Path:
    recipe = recipes.get(args.recipe)
    if args.precision == "bf16" and not recipe.bf16:
        raise ValueError(f"--precision bf16 does not suit {args.recipe}: its fixed point is solved to a relative "
                         "tolerance below bfloat16's resolution (about 4e-3); use fp32")
    rank, world, device = start_processes(args)
    try:
        return _train(args, recipe, rank, world, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(args: argparse.Namespace, recipe: Recipe, rank: int, world: int, device: torch.device) -> Path:
    if args.batch_size % world:
        raise ValueError(f"--batch-size {args.batch_size} is the global batch: it must split evenly over {world} "
                         "processes")
    config.seed_everything(args.seed)  # the same initial weights on every process
    if args.threads:
        torch.set_num_threads(args.threads)
    model, builder_kwargs = build_model(recipe, args)
    if rank == 0:  # builds the demo data on first use, once
        train_set, val_set, data_hash = make_datasets(args)
    from_rank_zero(None)
    if rank != 0:
        train_set, val_set, data_hash = make_datasets(args)
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = len(train_set) // args.batch_size  # the loader drops the last, incomplete batch
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training slices make no full batch of --batch-size {args.batch_size}")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=args.epochs * steps_per_epoch,
                                                           eta_min=args.lr * args.final_lr_fraction)
    state_path = Path(args.run_dir) / args.name / "state.pt"
    history: list[dict] = []
    start_epoch, seconds = 0, 0.0
    commits = [git_commit()]  # the code of every session that trained this run
    datasets, devices = [data_hash], [describe_device(device, world)]  # and the data and device of each
    state = load_state(state_path, rank, args.restart)
    if state is not None:
        resume(state, args, builder_kwargs, state_path)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        # Asked for more (or fewer) epochs than before: the cosine continues from the current rate
        # and reaches its floor at the new end, instead of following the old schedule past its end.
        scheduler.T_max = args.epochs * steps_per_epoch
        torch.set_rng_state(state["rng"])
        start_epoch, history, seconds = state["epoch"], state["history"], state["seconds"]
        commits = list(dict.fromkeys(state["commits"] + commits))
        earlier = state.get("datasets", [])
        if earlier and data_hash not in earlier and rank == 0:
            print(f"warning: {args.name} resumes on data of sha256 {data_hash[:12]}, its earlier epochs saw "
                  f"{', '.join(h[:12] for h in earlier)} (other data, or the demo data built by other numpy/scipy "
                  "versions); the record lists both")
        datasets = list(dict.fromkeys(earlier + datasets))
        devices = list(dict.fromkeys(state.get("devices", []) + devices))
        if rank == 0:
            print(f"resuming {args.name} at epoch {start_epoch} of {args.epochs}")
    elif args.init:
        initialise_from(recipe, model, args.init, args.checkpoint_dir)

    distributed = None
    if world > 1:
        if device.type == "cuda":  # batch statistics over the global batch, as on one process
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        distributed = DistributedDataParallel(TrainingObjective(recipe, model),
                                              device_ids=[device] if device.type == "cuda" else None)
    # Every process sees the same shuffled order (seeded per epoch) and takes every world-th slice of it.
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=args.batch_size // world, sampler=sampler, drop_last=True, num_workers=0)
    val_loader = DataLoader(val_set, batch_size=args.batch_size, shuffle=False, num_workers=0)
    for epoch in range(start_epoch, args.epochs):
        if not args.fixed_masks:
            set_epoch(train_set, epoch)
        sampler.set_epoch(epoch)
        if rank > 0:  # process 0 carries the saved random state; the others draw their own
            torch.manual_seed(hash((args.seed, epoch, rank)) % 2**63)
        model.train()
        tic = time.perf_counter()
        losses, stats = [], []
        bar = tqdm(loader, desc=f"{args.name} epoch {epoch + 1}/{args.epochs}", leave=False,
                   disable=args.quiet or rank > 0)
        with warnings.catch_warnings():
            for category in recipe.quiet:
                warnings.simplefilter("ignore", category)
            for batch in bar:
                loss = training_step(recipe, model, to_device(batch, device), optimiser, bf16=args.precision == "bf16",
                                     clip_grad_norm=args.clip_grad_norm, distributed=distributed)
                scheduler.step()
                losses.append(loss)
                if recipe.monitor is not None:
                    stats.append(recipe.monitor(model))
                bar.set_postfix(loss=f"{loss:.2e}")
            seconds += time.perf_counter() - tic
            train_loss = sum(losses) / len(losses)
            if world > 1:  # the mean over every process's share of the batches
                train_loss = torch.tensor(train_loss, dtype=torch.float64, device=device)
                dist.all_reduce(train_loss)
                train_loss = train_loss.item() / world
            # Every --validate-every-th epoch, and always the last one (the record's final metrics).
            if rank == 0 and ((epoch + 1) % args.validate_every == 0 or epoch + 1 == args.epochs):
                val = validate(model, val_loader, device, recipe.monitor, recipe.reconstruct)
            else:
                val = {}
        if rank == 0:
            entry = {"epoch": epoch + 1, "train_loss": train_loss,
                     **({"val_loss": val["loss"], "val_psnr": val["psnr"]} if val else {}),
                     **({"lam": model.lam.item()} if hasattr(model, "lam") else {}),
                     "lr": optimiser.param_groups[0]["lr"], "seconds": round(seconds, 1),
                     **{f"train_{k}": v for k, v in mean_stats(stats).items()},
                     **{f"val_{k}": v for k, v in val.items() if k not in ("loss", "psnr")}}
            history.append(entry)
            print(json.dumps(entry), flush=True)
            checkpoints.atomic_torch_save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                                           "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                                           "epoch": epoch + 1, "history": history, "seconds": seconds,
                                           "args": vars(args), "builder_kwargs": builder_kwargs, "commits": commits,
                                           "datasets": datasets, "devices": devices},
                                          state_path)
    if rank > 0:
        return Path(args.checkpoint_dir or checkpoints.checkpoint_dir()) / f"{args.name}.pt"

    model.eval()
    final_metrics = {k: history[-1][k] for k in ("val_psnr", "val_loss", "lam") if k in history[-1]} if history else {}
    extra = {}
    if recipe.finish is not None:
        extra = recipe.finish(model, lambda: validate(model, val_loader, device, reconstruct=recipe.reconstruct)["psnr"])
        val = validate(model, val_loader, device, reconstruct=recipe.reconstruct)
        final_metrics.update(val_psnr=val["psnr"], val_loss=val["loss"],
                             **({"lam": model.lam.item()} if hasattr(model, "lam") else {}))
    record = {
        "command": "python -m mrtutor.train " + " ".join(shlex.quote(a) for a in args.argv),
        "recipe": args.recipe,
        "config": {k: v for k, v in vars(args).items() if k not in ("argv", "quiet")},
        "dataset_sha256": data_hash,
        "dataset_sha256s": datasets,  # more than one when a resumed run saw other data than its first epochs
        "git_commit": commits[-1],
        "git_commits": commits,
        "training_seconds": round(seconds, 1),
        "device": describe_device(device, world),
        "devices": devices,
        "processes": world,
        "host": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}",
        "final_metrics": final_metrics,
        "history": history,
        **extra,
    }
    path = checkpoints.save(args.name, model.cpu(), recipe.builder_path, builder_kwargs, record,
                            directory=args.checkpoint_dir)
    print(f"wrote {path}")
    return path


def _checked(kind: type, bound: str):
    """An argparse type: ``kind`` whose value must satisfy ``recipes.BOUNDS[bound]``."""
    def parse(text: str):
        value = kind(text)
        if not recipes.BOUNDS[bound](value):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


def shared_options() -> argparse.ArgumentParser:
    """The options every recipe takes: data, schedule, precision, devices, where things are written."""
    parser = argparse.ArgumentParser(add_help=False)
    positive_int, positive_float = _checked(int, "> 0"), _checked(float, "> 0")
    parser.add_argument("--name", required=True, help="checkpoint name (checkpoints/<name>.pt)")
    parser.add_argument("--tier", choices=config.MODES, default=None, help="data tier (default: MRTUTOR_MODE)")
    parser.add_argument("--epochs", type=positive_int, default=50)
    parser.add_argument("--validate-every", type=positive_int, default=1, metavar="N",
                        help="validate every N epochs and after the last (for small --train-slices, where an epoch is short)")
    parser.add_argument("--mask", default="variable_density_2d", help="mask name in mrtutor.masks")
    parser.add_argument("--acceleration", type=positive_float, default=6.0)
    parser.add_argument("--batch-size", type=positive_int, default=4,
                        help="the global batch: with several processes each takes an equal share")
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--final-lr-fraction", type=_checked(float, ">= 0"), default=0.05,
                        help="cosine decay to lr * this")
    parser.add_argument("--clip-grad-norm", type=positive_float, default=None, metavar="C",
                        help="rescale each step's gradient to a norm of at most C (default: no clipping)")
    parser.add_argument("--init", default=None, help="checkpoint to start from (e.g. modl_k1)")
    parser.add_argument("--train-slices", type=positive_int, default=None,
                        help="train on N slices drawn at random (seeded) from the training split")
    parser.add_argument("--fixed-masks", action="store_true", default=None,
                        help="each training slice keeps one mask in every epoch, as in the MoDL paper's data "
                             "(default: a fresh mask per slice and epoch)")
    parser.add_argument("--train-subject", default=None, help="train on one brain only (subject split)")
    parser.add_argument("--single-coil", action="store_true", default=None,
                        help="one coil measuring the reference image's Fourier coefficients, with the tier's noise "
                             "(mrtutor.data.SingleCoil; Neural PGD's setting)")
    parser.add_argument("--modl-data", default=None, metavar="PATH",
                        help="train on the MoDL dataset.hdf5 (paper tier) instead of the demo data; the last tenth "
                             "of its training slices validates")
    parser.add_argument("--seed", type=_checked(int, ">= 0"), default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when present)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="training forward/backward precision of the CNNs (evaluation is always fp32)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads per process (default: torch's choice)")
    parser.add_argument("--run-dir", default=str(RUNS_DIR), help="where resumable state lives")
    parser.add_argument("--checkpoint-dir", default=None, help="default: checkpoints/ (or MRTUTOR_CHECKPOINTS)")
    parser.add_argument("--restart", action="store_true", help="ignore saved state and start again")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line: a recipe, its own options (``RECIPE --help``) and the shared ones."""
    parser = argparse.ArgumentParser(prog="python -m mrtutor.train", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    commands = parser.add_subparsers(dest="recipe", required=True, metavar="RECIPE",
                                     title="recipes (python -m mrtutor.train RECIPE --help for its options)")
    shared = shared_options()
    for name, recipe in sorted(recipes.registry().items()):
        command = commands.add_parser(name, parents=[shared], help=recipe.doc, description=recipe.doc,
                                      allow_abbrev=False)
        own = command.add_argument_group(f"options of {name} (builder {recipe.builder_path})")
        for option in recipe.options:
            if option.type is bool:
                own.add_argument(option.flag, action="store_true", default=None, help=option.help)
                continue
            kind = option.type if option.bound is None else _checked(option.type, option.bound)
            suffix = "".join(f" ({note})" for note in (option.bound, option.default and f"default {option.default}") if note)
            own.add_argument(option.flag, type=kind, default=option.default, help=option.help + suffix,
                             choices=option.choices, metavar=None if option.choices else option.type.__name__.upper())
    args = parser.parse_args(argv)
    args.argv = list(argv)
    args.tier = args.tier or config.mode()
    return args


def main(argv: list[str] | None = None) -> None:
    config.reuse_freed_memory()
    train(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
