"""Training command: ``python -m mrtutor.train RECIPE --name NAME [options]``.

Every checkpoint in ``checkpoints/`` comes from this command. A run keeps its resumable state in
``runs/<name>/state.pt`` (written atomically after every epoch: model, optimiser, scheduler, epoch,
history, random state), so an interrupted run continues where it stopped when started again with
the same command. When the last epoch is done it writes ``checkpoints/<name>.pt`` and its JSON
record (command, config, dataset hash, git commit, time, device, metrics, learning curves).

Recipes (see ``RECIPES``): ``modl`` (MoDL, CG-ET-WS), ``cg_et_ns``, ``sd_et_ws`` are trained end to
end on the reconstruction error; ``cg_pd_ns`` trains its ten denoisers on Gaussian noise alone (one
noise level each) and then tunes its fixed lam on the validation split. ``mol_lr``, ``mol_sn`` and
``mol_unconstrained`` train MOL (``mrtutor.mol``) with implicit gradients; every epoch's record
adds the fixed-point iterations, the share of converged solves and the Lipschitz estimate of H
(the curves of the MOL paper's Fig. 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mrtutor import checkpoints, config, evaluate
from mrtutor.deq import DEQConvergenceWarning
from mrtutor.metrics import psnr

RUNS_DIR = Path(__file__).resolve().parent.parent / "runs"


def complex_mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of complex images: mean |output - target|^2."""
    return (output - target).abs().pow(2).mean()


def reconstruction_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """End-to-end training: the error of the whole unrolled reconstruction."""
    return complex_mse(model(batch["kspace"], batch["maps"], batch["mask"]), batch["target"])


def denoising_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Pre-trained denoisers (CG-PD-NS): denoiser k learns to remove complex Gaussian noise of
    standard deviation ``model.noise_levels[k]`` (E|n|^2 = sigma^2) from the reference images. The
    sum of the ten independent losses trains the ten denoisers at once."""
    target = batch["target"]
    losses = [complex_mse(denoiser(target + sigma * torch.randn_like(target)), target)
              for denoiser, sigma in zip(model.denoisers, model.noise_levels)]
    return torch.stack(losses).sum()


def mol_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """MOL (eq. 8), its first term: the error of the fixed point. The second, the Lipschitz term of
    H there, is ``mol_penalty``; ``training_step`` backpropagates it after this one."""
    out = model(batch["kspace"], batch["maps"], batch["mask"])
    return complex_mse(out, batch["target"])


def mol_penalty(model: nn.Module, batch: dict) -> torch.Tensor:
    """Eq. 8's Lipschitz term l(f*) at the fixed point of the model's last forward pass. Its weight
    is zero for MOL-SN and the unconstrained MOL, whose estimate is still recorded (Fig. 2a).

    Eq. 8 adds l(f*) to a squared error summed over the pixels; with the error averaged over the
    pixels, as every recipe here does, the term is divided by the pixel count to keep eq. 8's balance.
    """
    x_star = model.last_fixed_point
    return model.lipschitz_loss(x_star) / x_star[0].numel()


def mol_monitor(model: nn.Module) -> dict[str, float]:
    """What a MOL step did: fixed-point iterations (forward, and backward after a training step),
    the share of samples whose forward solve converged, and H's Lipschitz estimate when one was made."""
    forward = model.last_forward_info
    stats = {"forward_iterations": float(forward.iterations),
             "forward_converged": forward.converged.float().mean().item()}
    if model.training and model.last_backward_info is not None:
        stats["backward_iterations"] = float(model.last_backward_info.iterations)
    if model.training and model.last_lipschitz is not None:
        stats["lipschitz"] = model.last_lipschitz.mean().item()
    return stats


MODL_OPTIONS = ("layers", "features", "lam", "iterations", "cg_iters", "output_scale")
MOL_OPTIONS = ("layers", "features", "lam", "cg_iters", "m", "alpha", "max_iter", "tol", "anderson", "backward_max_iter")


@dataclass
class Recipe:
    """How to build and train a model of one kind."""

    builder: str
    doc: str
    loss: Callable[[nn.Module, dict], torch.Tensor] = reconstruction_loss
    tune_lam: bool = False  # lam is not learned: pick it on the validation split after training
    options: tuple[str, ...] = MODL_OPTIONS  # the command-line options the builder takes
    defaults: dict = field(default_factory=lambda: {"lam": 0.05})  # when the command line leaves them out
    # A second loss term, built after the first one's backward pass so that their graphs never share
    # the memory (gradients add up as for the sum): MOL's Lipschitz term.
    penalty: Callable[[nn.Module, dict], torch.Tensor] | None = None
    monitor: Callable[[nn.Module], dict[str, float]] | None = None  # per-step statistics to average per epoch
    bf16: bool = True  # whether --precision bf16 makes sense (not for a fixed point solved to 1e-4)


RECIPES: dict[str, Recipe] = {
    "modl": Recipe("mrtutor.modl.modl", "MoDL (CG-ET-WS): shared denoiser, CG data consistency"),
    "cg_et_ns": Recipe("mrtutor.modl.cg_et_ns", "CG-ET-NS: one denoiser per iteration"),
    "sd_et_ws": Recipe("mrtutor.modl.sd_et_ws", "SD-ET-WS: shared denoiser, steepest-descent DC",
                       options=("layers", "features", "lam", "iterations", "output_scale")),
    "cg_pd_ns": Recipe("mrtutor.modl.cg_pd_ns", "CG-PD-NS: ten Gaussian denoisers, hand-tuned lam",
                       loss=denoising_loss, tune_lam=True, options=("layers", "features", "lam", "cg_iters", "output_scale")),
    **{f"mol_{kind}": Recipe(f"mrtutor.mol.mol_{kind}", doc, loss=mol_loss, penalty=mol_penalty,
                             options=MOL_OPTIONS + extra, defaults={}, monitor=mol_monitor, bf16=False)
       for kind, doc, extra in (("lr", "MOL-LR: Lipschitz penalty on H (eqs. 7-8)",
                                 ("lipschitz_weight", "lipschitz_target", "lipschitz_steps", "residual")),
                                ("sn", "MOL-SN: spectrally normalised H", ("lipschitz_steps",)),
                                ("unconstrained", "MOL with an unconstrained H (diverges in the paper)",
                                 ("lipschitz_steps", "residual")))},
}


def training_step(recipe: Recipe, model: nn.Module, batch: dict, optimiser: torch.optim.Optimizer,
                  bf16: bool = False, clip_grad_norm: float | None = None) -> float:
    """One optimiser step on ``batch``; returns the loss (with the penalty, when the recipe has one).

    bf16 autocast runs the convolutions in bfloat16 (2-3x faster on CPUs with AVX512-BF16 and on
    GPUs); the FFTs, CG solves and weights stay in full precision. ``clip_grad_norm`` rescales the
    gradient to at most that norm. Why it matters with Adam: a stage that starts far from its optimum
    (K = 10 from the K = 1 weights) has gradients 10^3 times larger at first than later, and Adam's
    second-moment estimate remembers them for thousands of steps, shrinking every later step.
    """
    device_type = batch["kspace"].device.type
    optimiser.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        loss = recipe.loss(model, batch)
    loss.backward()
    value = loss.item()
    if recipe.penalty is not None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
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
    return evaluate.peak_memory(step, batch["kspace"].device)


# The grid of CG-PD-NS's lam search (the paper tuned it "to obtain the best performance").
LAM_GRID = tuple(float(v) for v in torch.logspace(-3, 1, 13))


def git_commit() -> str:
    """HEAD, with ``-dirty`` when the package's code differs from it (checkpoints and notebooks do not count)."""
    package = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=package)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], capture_output=True,
                               text=True, cwd=package).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def mean_stats(steps: list[dict[str, float]]) -> dict[str, float]:
    """Average each statistic over the steps that report it."""
    keys = dict.fromkeys(k for step in steps for k in step)
    return {k: sum(step[k] for step in steps if k in step) / sum(k in step for step in steps) for k in keys}


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, device: torch.device, monitor=None) -> dict:
    """Mean loss and per-image PSNR (magnitude, max of reference) over ``loader``, plus the mean of
    ``monitor(model)`` after each batch when given."""
    model.eval()
    losses, scores, stats = [], [], []
    for batch in loader:
        batch = to_device(batch, device)
        out = model(batch["kspace"], batch["maps"], batch["mask"])
        losses.append(complex_mse(out, batch["target"]).item())
        scores.append(psnr(out, batch["target"]).cpu())
        if monitor is not None:
            stats.append(monitor(model))
    scores = torch.cat(scores)
    return {"loss": sum(losses) / len(losses), "psnr": scores.mean().item(), **mean_stats(stats)}


def build_model(recipe: str, args: argparse.Namespace) -> tuple[nn.Module, dict]:
    spec = RECIPES[recipe]
    kwargs = {}
    for option in spec.options:
        value = getattr(args, option)
        if value is None:
            value = spec.defaults.get(option)
        if value is not None:
            kwargs[option] = value
    return checkpoints.build(spec.builder, kwargs), kwargs


def tune_lam(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Set the fixed lam of ``model`` to the value of ``LAM_GRID`` with the best validation PSNR;
    return the validation PSNR of every value tried."""
    scores = {}
    for lam in LAM_GRID:
        model.log_lam.fill_(math.log(lam))
        scores[f"{lam:.4g}"] = validate(model, loader, device)["psnr"]
    best = max(scores, key=scores.get)
    model.log_lam.fill_(math.log(float(best)))
    return scores


def initialise_from(model: nn.Module, name: str, directory: str | None = None) -> None:
    """Start from MoDL checkpoint ``name``: MoDL's two-step schedule (K=1 weights initialise K=10), or
    a warm start of MOL.

    A shared denoiser is copied into every denoiser of an unshared model, and lam is copied. A MOL
    with a residual H gets the denoiser with its batch norms folded (``MOLNet.load_denoiser``) and lam
    = 1 / MoDL's lam (MOL weighs the data term, MoDL the prior), so at alpha = 1 its iteration is MoDL's.
    """
    source = checkpoints.load(name, directory=directory)
    if not hasattr(source, "denoisers"):
        raise ValueError(f"--init {name}: expected a MoDL checkpoint, got a {type(source).__name__}")
    if hasattr(model, "denoisers"):
        model.log_lam.data.copy_(source.log_lam.data)
        for target in model.denoisers:
            target.load_state_dict(source.denoisers[0].state_dict())
    elif hasattr(getattr(model, "net", None), "load_denoiser"):
        model.net.load_denoiser(source.denoisers[0])
        model.log_lam.data.copy_(-source.log_lam.data)
    else:
        raise ValueError(f"--init copies a MoDL denoiser; {type(model).__name__} has no place for one")


# The MoDL dataset.hdf5 has training and test slices only: the last tenth of its training slices
# validates (monitoring, and the lam search of CG-PD-NS), so the test slices stay unseen.
MODL_VALIDATION_FRACTION = 0.1


def make_datasets(args: argparse.Namespace):
    """Training and validation sets, and the sha256 of the data they come from."""
    from mrtutor import data

    masks = dict(mask_fn=args.mask, acceleration=args.acceleration)
    if args.modl_data:
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
    """Fresh masks every epoch. (The MoDL paper's data file holds one mask per training slice, used in
    every epoch; ``--fixed-masks`` trains that way.)"""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    dataset.set_epoch(epoch)


def train(args: argparse.Namespace) -> Path:
    config.seed_everything(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else config.device()
    recipe = RECIPES[args.recipe]
    if args.precision == "bf16" and not recipe.bf16:
        raise ValueError(f"--precision bf16 does not suit {args.recipe}: its fixed point is solved to a relative "
                         "tolerance below bfloat16's resolution (about 4e-3); use fp32")
    model, builder_kwargs = build_model(args.recipe, args)
    train_set, val_set, data_hash = make_datasets(args)
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = len(train_set) // args.batch_size  # the loader drops the last, incomplete batch
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training slices make no full batch of --batch-size {args.batch_size}")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=args.epochs * steps_per_epoch,
                                                           eta_min=args.lr * args.final_lr_fraction)
    run_dir = Path(args.run_dir) / args.name
    state_path = run_dir / "state.pt"
    history: list[dict] = []
    start_epoch, seconds = 0, 0.0
    commits = [git_commit()]  # the code of every session that trained this run
    if state_path.exists() and not args.restart:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["args"]["recipe"] != args.recipe or state["builder_kwargs"] != builder_kwargs:
            raise ValueError(f"{state_path} belongs to a different run ({state['args']}); use --restart or another --name")
        # Options that did not exist when the state was saved count as their default, None.
        changed = {key: (state["args"].get(key), value) for key, value in vars(args).items()
                   if key not in RESUMABLE_CHANGES and state["args"].get(key) != value}
        if changed:
            raise ValueError(f"{state_path} was trained with other settings (saved, asked): {changed}; resuming would "
                             "mix two trainings in one record. Use --restart to start again, or another --name")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        # Asked for more (or fewer) epochs than before: the cosine continues from the current rate
        # and reaches its floor at the new end, instead of following the old schedule past its end.
        scheduler.T_max = args.epochs * steps_per_epoch
        torch.set_rng_state(state["rng"])
        start_epoch, history, seconds = state["epoch"], state["history"], state["seconds"]
        commits = list(dict.fromkeys(state["commits"] + commits))
        print(f"resuming {args.name} at epoch {start_epoch} of {args.epochs}")
    elif args.init:
        initialise_from(model, args.init, args.checkpoint_dir)

    loader_kwargs = dict(batch_size=args.batch_size, num_workers=0)
    val_loader = DataLoader(val_set, shuffle=False, **loader_kwargs)
    for epoch in range(start_epoch, args.epochs):
        if not args.fixed_masks:
            set_epoch(train_set, epoch)
        loader = DataLoader(train_set, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(args.seed + epoch),
                            **loader_kwargs)
        model.train()
        tic = time.perf_counter()
        losses, stats = [], []
        bar = tqdm(loader, desc=f"{args.name} epoch {epoch + 1}/{args.epochs}", leave=False, disable=args.quiet)
        # Solves that stop short are counted by the monitor (forward_converged) instead of warned about
        # once per batch.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DEQConvergenceWarning)
            for batch in bar:
                loss = training_step(recipe, model, to_device(batch, device), optimiser, bf16=args.precision == "bf16",
                                     clip_grad_norm=args.clip_grad_norm)
                scheduler.step()
                losses.append(loss)
                if recipe.monitor is not None:
                    stats.append(recipe.monitor(model))
                bar.set_postfix(loss=f"{loss:.2e}")
            seconds += time.perf_counter() - tic
            # Every --validate-every-th epoch, and always the last one (the record's final metrics).
            if (epoch + 1) % args.validate_every == 0 or epoch + 1 == args.epochs:
                val = validate(model, val_loader, device, recipe.monitor)
            else:
                val = {}
        entry = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses),
                 **({"val_loss": val["loss"], "val_psnr": val["psnr"]} if val else {}),
                 "lam": model.lam.item(), "lr": optimiser.param_groups[0]["lr"],
                 "seconds": round(seconds, 1),
                 **{f"train_{k}": v for k, v in mean_stats(stats).items()},
                 **{f"val_{k}": v for k, v in val.items() if k not in ("loss", "psnr")}}
        history.append(entry)
        print(json.dumps(entry), flush=True)
        checkpoints.atomic_torch_save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                                       "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                                       "epoch": epoch + 1, "history": history, "seconds": seconds,
                                       "args": vars(args), "builder_kwargs": builder_kwargs, "commits": commits},
                                      state_path)

    model.eval()
    lam_scores = None
    if recipe.tune_lam:
        lam_scores = tune_lam(model, val_loader, device)
        print(f"tuned lam = {model.lam.item():.4g} (validation PSNR {max(lam_scores.values()):.2f} dB)")
    record = {
        "command": "python -m mrtutor.train " + " ".join(shlex.quote(a) for a in args.argv),
        "recipe": args.recipe,
        "config": {k: v for k, v in vars(args).items() if k not in ("argv", "quiet")},
        "dataset_sha256": data_hash,
        "git_commit": commits[-1],
        "git_commits": commits,
        "training_seconds": round(seconds, 1),
        "device": str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "host": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}",
        "final_metrics": {k: history[-1][k] for k in ("val_psnr", "val_loss", "lam")} if history else {},
        "history": history,
    }
    if lam_scores is not None:
        record["lam_tuning"] = {"validation_psnr": lam_scores, "lam": model.lam.item()}
        record["final_metrics"]["val_psnr"] = max(lam_scores.values())
        record["final_metrics"]["lam"] = model.lam.item()
    path = checkpoints.save(args.name, model.cpu(), recipe.builder, builder_kwargs, record,
                            directory=args.checkpoint_dir)
    print(f"wrote {path}")
    return path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mrtutor.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", choices=sorted(RECIPES), help="what to train")
    parser.add_argument("--name", required=True, help="checkpoint name (checkpoints/<name>.pt)")
    parser.add_argument("--tier", choices=config.MODES, default=None, help="data tier (default: MRTUTOR_MODE)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--validate-every", type=int, default=1, metavar="N",
                        help="validate every N epochs and after the last (for small --train-slices, where an epoch is short)")
    parser.add_argument("--iterations", type=int, default=10, help="unrolled iterations K")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--lam", type=float, default=None,
                        help="initial lambda (default: MoDL 0.05; MOL's builder default, its lam being 1 / MoDL's)")
    parser.add_argument("--cg-iters", type=int, default=10)
    parser.add_argument("--output-scale", type=float, default=None,
                        help="MoDL: initial gamma of the denoiser's last batch norm (default 0.1; PyTorch's is 1)")
    parser.add_argument("--m", type=float, default=None, help="MOL: monotonicity m of I - H (Lip(H) < 1 - m)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="MOL: step of eq. 5 (default 2m / (2 - m)^2, Prop. 2.3); the fixed point does not depend on it")
    parser.add_argument("--max-iter", type=int, default=None, help="MOL: cap of the fixed-point iterations")
    parser.add_argument("--tol", type=float, default=None,
                        help="MOL: relative tolerance of the fixed point (on ||Q^-1 G(x)|| / ||x||, see mrtutor.mol.MOL)")
    parser.add_argument("--anderson", type=int, default=None, help="MOL: Anderson history (0: plain iteration)")
    parser.add_argument("--backward-max-iter", type=int, default=None, help="MOL: cap of the backward fixed point")
    parser.add_argument("--lipschitz-weight", type=float, default=None, help="MOL-LR: weight of l(f*) in eq. 8")
    parser.add_argument("--lipschitz-target", type=float, default=None,
                        help="MOL-LR: penalise only Lipschitz estimates above this (e.g. 1 - m)")
    parser.add_argument("--lipschitz-steps", type=int, default=None,
                        help="MOL: gradient-ascent steps of each Lipschitz estimate (default 10)")
    parser.add_argument("--residual", action="store_true", default=None,
                        help="MOL-LR / MOL: H(x) = x + CNN(x), needed for --init from a MoDL checkpoint")
    parser.add_argument("--mask", default="variable_density_2d", help="mask name in mrtutor.masks")
    parser.add_argument("--acceleration", type=float, default=6.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--final-lr-fraction", type=float, default=0.05, help="cosine decay to lr * this")
    parser.add_argument("--clip-grad-norm", type=float, default=None, metavar="C",
                        help="rescale each step's gradient to a norm of at most C (default: no clipping)")
    parser.add_argument("--init", default=None, help="checkpoint to start from (e.g. modl_k1)")
    parser.add_argument("--train-slices", type=int, default=None, help="train on N slices drawn at random (seeded) from the training split")
    parser.add_argument("--fixed-masks", action="store_true", default=None,
                        help="each training slice keeps one mask in every epoch, as in the MoDL paper's data "
                             "(default: a fresh mask per slice and epoch)")
    parser.add_argument("--train-subject", default=None, help="train on one brain only (subject split)")
    parser.add_argument("--modl-data", default=None, metavar="PATH",
                        help="train on the MoDL dataset.hdf5 (paper tier) instead of the demo data; the last tenth "
                             "of its training slices validates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="training forward/backward precision of the CNNs (evaluation is always fp32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--run-dir", default=str(RUNS_DIR), help="where resumable state lives")
    parser.add_argument("--checkpoint-dir", default=None, help="default: checkpoints/ (or MRTUTOR_CHECKPOINTS)")
    parser.add_argument("--restart", action="store_true", help="ignore saved state and start again")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.validate_every < 1:
        parser.error(f"--validate-every must be at least 1, got {args.validate_every}")
    if args.clip_grad_norm is not None and not args.clip_grad_norm > 0:
        parser.error(f"--clip-grad-norm must be > 0, got {args.clip_grad_norm}")
    args.argv = list(argv)
    args.tier = args.tier or config.mode()
    return args


def main(argv: list[str] | None = None) -> None:
    train(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
