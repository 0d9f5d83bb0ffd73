"""Every method of the book on one protocol, with uncertainty and cost; and a harness that scores a reader's own
method the same way (chapter 7).

``python -m mrtutor.compare`` runs the protocol and writes, under ``--output``:

* ``results.json``: the protocol (tier, slices, seeds, masks, tuning), the git commit, every method's per-slice
  PSNR, SSIM and VIF at every setting, its time per slice, parameters, training time and peak memory, and the
  summaries below (written atomically after every finished cell, so an interrupted run continues where it stopped);
* ``table.md``: per split and setting, the mean of each score with its 95 % bootstrap interval, and the paired
  comparison with the best classical baseline of that setting; then the cost of every method;
* ``quality_vs_time.png``, ``quality_vs_acceleration.png``, ``image_grid.png``;
* ``images.pt``: the reconstructions of the first test slice that the image grid shows.

The protocol. The demo dataset's test split (the first ``--slices`` of its fixed order) and the out-of-distribution
images of ``data.ood_samples``, each through one simulated acquisition: the noise is the dataset's own (stored
with its k-space; for the OOD images drawn from their seed), the same at every setting. Settings (``SETTINGS``):
2-D variable-density masks at 4x, 6x and 10x and fastMRI's random column masks at 4x and 8x. Slice i of a split
gets the mask of seed (``MASK_SEEDS[split]``, 0, i), the seeds of chapters 4 to 6 (``mrtutor.fits``). Every
method of a setting is given the very same tensors. Scores are the package's (``evaluate.score``), on magnitudes.

Methods (``registry``):

* classical: zero-filled, CG-SENSE, TV and l1-wavelet (``evaluate.baseline_methods``). Their weights are tuned
  per setting on the validation split (``--tuning validation``: chapter 1's grids with ``recon.tune_lambda``, on
  the first validation slices with the validation mask seeds; the choice is cached in the results) or are the
  tier's stored ones (``--tuning stored``: ``config.settings()["baseline_lambda"]``, tuned at 6x in chapter 1);
* trained, each the checkpoint its chapter ships (``CHECKPOINTS``), called as ``model(kspace, maps, mask)``.
  A model tested away from its training setting (mask, acceleration, coils, tier) is marked so;
* un-trained: the ConvDecoder (``untrained.fit``, chapter 6's form without coil maps), at a smaller width and
  on fewer slices than its chapter (``BUDGETS``), for the CPU;
* a reader's function, ``--method package.module:function``, with the signature of every model of the book:
  ``fn(kspace, maps, mask)`` on batches (B, C, H, W), (B, C, H, W), (B, H, W) returning images (B, H, W).

A checkpoint that does not exist yet is skipped with a printed note. Uncertainty: the mean over slices with a
95 % percentile bootstrap interval (``bootstrap_mean``, fixed seed), and per method the paired difference to the
best classical method of the setting and split (best by that score's mean), with its interval and the share of
slices on which the method scored higher (``paired_difference``).

Resuming: the same command continues an interrupted run; ``--settings`` and ``--only`` may change between runs
(new cells are added to the same results), while another ``--slices``, ``--ood-images``, ``--tuning`` or tier is
another protocol and needs ``--restart`` or another ``--output``. A method whose checkpoint (or plug-in source)
changed is computed again. Examples::

    python -m mrtutor.compare --tier quick --slices 2                   # every method, about 40 s
    python -m mrtutor.compare --only zero-filled CG-SENSE TV l1-wavelet --method mypackage.recon:my_method

Measured cost of the demo tier on one CPU thread (2-core machine, beside two trainings), per slice: CG-SENSE
0.05 s, TV 0.46 s, l1-wavelet 0.50 s, MoDL 0.73 s, CG-ET-NS 0.77 s, MOL-LR 0.95 s, neural PGD 0.41 s, a ConvDecoder
fit 42 s; tuning 65 s per setting. The full protocol (60 test slices and 2 OOD images at 5 settings, the
ConvDecoder on 2 + 2 of them) is about 41 minutes: 20 for the trained and classical methods, 14 for the
ConvDecoder, 5.5 for tuning, 1 for the rest. The run that wrote the book's ``comparison/`` took 29 minutes on one
thread of that machine, with the second core busy.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from mrtutor import checkpoints, config, data, evaluate, recon, untrained
from mrtutor.fits import MASK_SEEDS, OOD_IMAGES
from mrtutor.sense import Sense
from mrtutor.train import git_commit

FORMAT = 1  # of results.json; bump when its layout changes, so that old files are not resumed into
SCORES = ("psnr", "ssim", "vif")
SCORE_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "vif": "VIF"}
DATA_SEED = 0  # the demo dataset's seed: anatomy jitter, phase, coils and noise
BOOTSTRAP = {"resamples": 2000, "seed": 0, "level": 0.95}


@dataclass(frozen=True)
class Setting:
    """One sampling setting of the protocol: a mask of ``mrtutor.masks.MASKS`` at an acceleration."""

    mask: str
    acceleration: float

    @property
    def label(self) -> str:
        return f"{MASK_LABELS[self.mask]} {self.acceleration:g}x"


MASK_LABELS = {"variable_density_2d": "2-D VD", "column_random": "columns", "radial_view_ordering": "radial"}
SETTINGS = {
    "vd4": Setting("variable_density_2d", 4.0),
    "vd6": Setting("variable_density_2d", 6.0),
    "vd10": Setting("variable_density_2d", 10.0),
    "col4": Setting("column_random", 4.0),
    "col8": Setting("column_random", 8.0),
}

# What each tier can afford. Classical iterations and validation slices are chapter 1's. The ConvDecoder is
# chapter 6's network (5 layers from an 8 x 8 input, Adam at 0.008 for 2,000 steps) at 16 channels instead of 64
# (its width study's cd_w16_4x: a fit takes about 65 s on one thread instead of 340 s), on the first
# ``slices`` slices of each split; the quick tier shrinks it as chapter 6 does.
BUDGETS = {
    "quick": {"cg_iters": 15, "tv_iters": 30, "wavelet_iters": 30, "validation_slices": 4,
              "convdecoder": {"slices": 1, "iterations": 150, "layers": 4, "channels": 16, "in_size": [4, 4],
                              "lr": 0.02}},
    "demo": {"cg_iters": 30, "tv_iters": 100, "wavelet_iters": 100, "validation_slices": 12,
             "convdecoder": {"slices": 2, "iterations": 2000, "layers": 5, "channels": 16, "in_size": [8, 8],
                             "lr": 0.008}},
}
BUDGETS["paper"] = BUDGETS["demo"]

# Chapter 1's grids of weights for ``--tuning validation``, keyed as config's ``baseline_lambda``.
TUNING_GRIDS = {
    "cg_sense": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "tv": (3e-4, 1e-3, 3e-3, 1e-2),
    "l1_wavelet": (3e-4, 1e-3, 3e-3, 1e-2),
}
CLASSICAL_WEIGHTS = {"CG-SENSE": "cg_sense", "TV": "tv", "l1-wavelet": "l1_wavelet"}  # method -> its weight's key


def _classical_solvers(budget: dict) -> dict[str, Callable]:
    """weight key -> ``recon_fn(op, y, lam)`` at the budget's iterations, as ``evaluate.baseline_methods`` runs them."""
    return {"cg_sense": lambda op, y, lam: recon.cg_sense(op, y, lam=lam, max_iter=budget["cg_iters"]),
            "tv": lambda op, y, lam: recon.tv(op, y, lam=lam, n_iter=budget["tv_iters"]),
            "l1_wavelet": lambda op, y, lam: recon.l1_wavelet(op, y, lam=lam, n_iter=budget["wavelet_iters"])}


# Table name -> (checkpoint, how the chapter ships it). The best variant of MoDL's Table II is CG-ET-NS: in chapter
# 2's Table III it leads MoDL at 6x and 10x (SD-ET-WS only at 6x, CG-PD-NS at neither); the table's own network,
# started from modl_k1, not the random-start ablation modl_cg_et_ns_random.
CHECKPOINTS = {
    "MoDL": ("modl_k10", "chapter 2: MoDL, K = 10, shared denoiser (Table III)"),
    "CG-ET-NS": ("modl_cg_et_ns", "chapter 2: the best Table II variant, ten unshared denoisers (Table III's)"),
    "MOL-LR": ("mol_lr", "chapter 3: MOL with the Lipschitz penalty (deep equilibrium, at most 100 fixed-point iterations)"),
    "neural PGD": ("npgd_t10_rb1", "chapter 4: T = 10, one residual block; trained single-coil, here through its "
                                   "multi-coil Sense gradient step"),
    "learned SGP": ("sgp_step_mri", "chapter 5: Step-learned SGP on chapter 1's l1-wavelet problem, 10 iterations"),
    "U-Net 4x": ("unet_4x", "chapter 6: fastMRI's U-Net at half width (16 channels), trained at column 4x"),
    "U-Net 8x": ("unet_8x", "chapter 6: fastMRI's U-Net at half width (16 channels), trained at column 8x"),
}


@dataclass(frozen=True)
class MethodSpec:
    """A method of the harness.

    ``make(weights, device)`` returns the callable ``(kspace, maps, mask) -> (B, H, W)``; ``weights`` are the
    setting's classical weights (``baseline_lambda`` keys). ``identity`` says what the results were computed with
    (a resumed run recomputes a method whose identity changed). ``slices`` limits the method to the first this many
    slices of each split. ``memory_make``, when given, builds a variant with the same peak memory and less work,
    which ``evaluate.peak_memory`` runs instead (a ConvDecoder fit of a few steps). ``info`` holds what the cost
    table shows: parameters, training seconds, the setting it was trained at.
    """

    name: str
    kind: str
    make: Callable[[Mapping[str, float], torch.device], Callable]
    identity: dict
    note: str = ""
    slices: int | None = None
    memory_make: Callable[[Mapping[str, float], torch.device], Callable] | None = None
    info: dict = dataclasses.field(default_factory=dict)


def training_seconds(name: str, directory: Path | None = None) -> float:
    """A checkpoint's training time including the checkpoints it started from (``--init``), as chapter 2 counts it."""
    record = checkpoints.record(name, directory)
    start = record["config"].get("init")
    return record["training_seconds"] + (training_seconds(start, directory) if start else 0.0)


def trained_setting(record: dict) -> dict:
    """The setting a checkpoint was trained at: mask, acceleration, coils ("single" or "multi") and tier."""
    cfg = record["config"]
    recovery = record.get("sparse_recovery")
    if recovery is not None:  # chapter 5's MRI problem: 2-D variable-density masks sampling ``fraction`` of k-space
        mask, acceleration = "variable_density_2d", round(1 / recovery["fraction"], 6)
    else:
        mask, acceleration = cfg.get("mask"), cfg.get("acceleration")
    return {"mask": mask, "acceleration": acceleration, "coils": "single" if cfg.get("single_coil") else "multi",
            "tier": cfg.get("tier")}


def off_setting(trained: dict | None, setting: Setting, tier: str) -> list[str]:
    """How ``setting`` in ``tier`` differs from what a model was trained at (empty: tested where it was trained)."""
    if trained is None:
        return []
    reasons = []
    if trained["mask"] != setting.mask:
        reasons.append(f"trained on {MASK_LABELS.get(trained['mask'], trained['mask'])} masks")
    if trained["acceleration"] is None or not math.isclose(trained["acceleration"], setting.acceleration):
        reasons.append(f"trained at {trained['acceleration']:g}x")
    if trained["coils"] != "multi":
        reasons.append("trained single-coil")
    if trained["tier"] != tier:
        reasons.append(f"trained in the {trained['tier']} tier")
    return reasons


def _trained_spec(name: str, checkpoint: str, note: str, directory: Path | None) -> MethodSpec:
    record = checkpoints.record(checkpoint, directory)

    @functools.cache
    def model(device: torch.device):
        return checkpoints.load(checkpoint, directory, device)

    def make(weights, device):
        net = model(device)
        if record["recipe"] == "sgp_mri":  # LearnedSGP takes (measurement, mask, maps)
            return lambda k, s, m: net(k, m, s)
        return net

    parameters = sum(p.numel() for p in model(torch.device("cpu")).parameters())
    return MethodSpec(name, "trained", make, {"checkpoint": checkpoint, "sha256": record["sha256"]}, note,
                      info={"checkpoint": checkpoint, "parameters": parameters,
                            "training_seconds": training_seconds(checkpoint, directory),
                            "training_device": record["device"], "trained_at": trained_setting(record)})


def _convdecoder_spec(budget: dict, coils: int, shape: tuple[int, int]) -> MethodSpec:
    options = dict(budget["convdecoder"])
    slices = options.pop("slices")
    sizes = {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}

    def fitter(iterations: int):
        def reconstruct(kspace, maps, mask):  # one fit per slice, without the maps (chapter 6's ConvDecoder)
            with torch.enable_grad():
                return torch.stack([untrained.fit(k, m, None, **{**sizes, "iterations": iterations})
                                    for k, m in zip(kspace, mask)])
        return reconstruct

    network = untrained.ConvDecoder(shape, 2 * coils, options["layers"], options["channels"], tuple(options["in_size"]))
    return MethodSpec(
        "ConvDecoder", "untrained", lambda weights, device: fitter(sizes["iterations"]), {"fit": options},
        f"chapter 6: un-trained, fitted to each slice without coil maps ({options['layers']} layers x "
        f"{options['channels']} channels, {options['iterations']} Adam steps); on the first {slices} slices of each "
        "split; peak memory of a 5-step fit (a fit's memory does not grow with its steps)",
        slices=slices, memory_make=lambda weights, device: fitter(5),
        info={"parameters": sum(p.numel() for p in network.parameters()), "training_seconds": 0.0})


def registry(tier: str | None = None, checkpoint_dir: Path | None = None) -> tuple[dict[str, MethodSpec], dict[str, str]]:
    """The book's methods for ``tier``: ({name: MethodSpec} of those that can run, {name: why not} of the others)."""
    tier = tier or config.mode()
    budget = BUDGETS[tier]
    baselines = {"zero-filled": "A^H y", "CG-SENSE": "chapter 1, Tikhonov-regularised SENSE by conjugate gradient",
                 "TV": "chapter 1, total variation by primal-dual", "l1-wavelet": "chapter 1, l1-wavelet by FISTA"}
    iterations = {key: budget[key] for key in ("cg_iters", "tv_iters", "wavelet_iters")}
    specs = {name: MethodSpec(name, "classical",
                              lambda weights, device, name=name: evaluate.baseline_methods(weights, budget["cg_iters"],
                              budget["tv_iters"], budget["wavelet_iters"])[name], {"iterations": iterations}, note)
             for name, note in baselines.items()}
    skipped = {}
    directory = checkpoints.checkpoint_dir() if checkpoint_dir is None else Path(checkpoint_dir)
    for name, (checkpoint, note) in CHECKPOINTS.items():
        if not (directory / f"{checkpoint}.json").exists():
            skipped[name] = f"checkpoint {checkpoint} does not exist yet in {directory} ({note.split(':')[0]})"
            continue
        specs[name] = _trained_spec(name, checkpoint, note, checkpoint_dir)
    settings = config.settings(tier)
    specs["ConvDecoder"] = _convdecoder_spec(budget, settings["num_coils"], tuple(settings["image_shape"]))
    return specs, skipped


# ------------------------------------------------------------------------------------------------ plug-ins


def check_method(fn, name: str) -> None:
    """Refuse, with a clear error, anything that cannot be called as ``fn(kspace, maps, mask)``."""
    if not callable(fn):
        raise ValueError(f"method {name!r} is a {type(fn).__name__}, not a function; expected "
                         "fn(kspace, maps, mask) -> image")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: its output is checked when it runs
        return
    try:
        signature.bind(None, None, None)
    except TypeError as err:
        raise ValueError(f"method {name!r} has the signature {signature}, which cannot be called with three "
                         f"arguments ({err}); expected fn(kspace, maps, mask) with k-space (B, C, H, W), maps "
                         "(B, C, H, W) and mask (B, H, W), returning images (B, H, W)") from None


def load_plugin(spec: str) -> Callable:
    """The function named by ``package.module:function`` (a dotted attribute path after the colon is allowed)."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"--method {spec!r}: expected package.module:function")
    try:
        target = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"--method {spec!r}: cannot import module {module_name!r} ({err})") from err
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"--method {spec!r}: {target.__name__!r} has no attribute {part!r}")
        target = getattr(target, part)
    check_method(target, spec)
    return target


def _plugin_spec(name: str, fn: Callable) -> MethodSpec:
    check_method(fn, name)
    try:  # a changed function is recomputed when a run resumes
        source = hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
    except (OSError, TypeError):
        source = None
    return MethodSpec(name, "plug-in", lambda weights, device: fn, {"plug-in": name, "source_sha256": source},
                      "a reader's method")


# ------------------------------------------------------------------------------------------------ the protocol


def test_slice_ids(tier: str, slices: int | None = None) -> list[str]:
    """The ids of the protocol's test slices: the first ``slices`` of the demo test split (all by default)."""
    test = data.demo_dataset("test", tier, seed=DATA_SEED, progress=False)
    if slices is not None and not 1 <= slices <= len(test):
        raise ValueError(f"slices must lie in [1, {len(test)}] (the {tier} tier's test split), got {slices}")
    return [test.fully_sampled(i)["slice_id"] for i in range(len(test) if slices is None else slices)]


def protocol_samples(setting: Setting, tier: str, slices: int | None = None,
                     ood_images: Iterable[str] = OOD_IMAGES) -> list[dict]:
    """The samples every method gets at ``setting``: the first ``slices`` test slices, then the OOD images, each a
    sample dict of ``mrtutor.data`` with ``split`` ("test" or "ood") added. Deterministic: same arguments, same
    tensors."""
    test = data.demo_dataset("test", tier, mask_fn=setting.mask, acceleration=setting.acceleration,
                             mask_seed=MASK_SEEDS["test"], seed=DATA_SEED, progress=False)
    count = len(test) if slices is None else slices
    samples = [{**test[i], "split": "test"} for i in range(count)]
    ood_images = list(ood_images)
    if ood_images:
        samples += [{**sample, "split": "ood"} for sample in data.ood_samples(
            ood_images, tier, mask_fn=setting.mask, acceleration=setting.acceleration, seed=MASK_SEEDS["ood"])]
    return samples


def tune_weights(setting: Setting, tier: str, budget: dict) -> dict:
    """Chapter 1's tuning at ``setting``: per classical weight, the grid's best on the first validation slices.
    Returns {key: {"lam": best, "validation_psnr": {lam: mean PSNR}, "seconds": wall time of the search}}."""
    val = data.demo_dataset("val", tier, mask_fn=setting.mask, acceleration=setting.acceleration,
                            mask_seed=MASK_SEEDS["val"], seed=DATA_SEED, progress=False)
    count = min(budget["validation_slices"], len(val))
    batch = next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(val, range(count)), batch_size=count)))
    samples = [(Sense(batch["maps"], batch["mask"]), batch["kspace"], batch["target"])]
    tuned = {}
    for key, solver in _classical_solvers(budget).items():
        tic = time.perf_counter()
        best, table = recon.tune_lambda(solver, samples, TUNING_GRIDS[key])
        tuned[key] = {"lam": best, "validation_psnr": {f"{lam:g}": psnr for lam, psnr in table.items()},
                      "seconds": time.perf_counter() - tic}
    return tuned


# ------------------------------------------------------------------------------------------------ statistics


def bootstrap_mean(values, level: float = BOOTSTRAP["level"], resamples: int = BOOTSTRAP["resamples"],
                   seed: int = BOOTSTRAP["seed"]) -> dict:
    """The mean of ``values`` (N,) with its percentile bootstrap interval at ``level``.

    ``resamples`` times, N values are drawn with replacement (torch generator seeded by ``seed``); the interval is
    the (1 - level) / 2 and (1 + level) / 2 quantiles of their means. Returns {"mean", "low", "high", "n"}.
    """
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    if values.numel() == 0:
        raise ValueError("values is empty: a mean needs at least one score")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    generator = torch.Generator().manual_seed(seed)
    means = values[torch.randint(len(values), (resamples, len(values)), generator=generator)].mean(dim=1)
    low, high = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return {"mean": values.mean().item(), "low": low.item(), "high": high.item(), "n": len(values)}


def paired_difference(values, reference, **bootstrap) -> dict:
    """Slice by slice ``values - reference`` (same slices, same order): its mean with the bootstrap interval of
    ``bootstrap_mean``, and ``won``, the share of slices where ``values`` is higher."""
    values = torch.as_tensor(values, dtype=torch.float64)
    reference = torch.as_tensor(reference, dtype=torch.float64)
    if values.shape != reference.shape:
        raise ValueError(f"paired scores need the same slices: got {tuple(values.shape)} and {tuple(reference.shape)}")
    difference = values - reference
    return {**bootstrap_mean(difference, **bootstrap), "won": (difference > 0).double().mean().item()}


def summarise(results: dict) -> dict:
    """summary[split][setting][method]: per score the bootstrap mean, and ``vs_best_classical`` per score: the best
    classical method of that split, setting and score (by mean) and the paired difference to it."""
    summary: dict = {}
    methods = results["methods"]
    for method, cells in results["cells"].items():
        for key, cell in cells.items():
            for split in dict.fromkeys(cell["split"]):
                rows = [i for i, s in enumerate(cell["split"]) if s == split]
                entry = summary.setdefault(split, {}).setdefault(key, {})[method] = {
                    "slices": len(rows), "seconds_per_slice": cell["seconds_per_slice"],
                    "off_setting": cell["off_setting"]}
                for metric in SCORES:
                    entry[metric] = bootstrap_mean([cell[metric][i] for i in rows])
    for split, by_setting in summary.items():
        for key, entries in by_setting.items():
            classical = [name for name in entries if methods[name]["kind"] == "classical"]
            for metric in SCORES:
                if not classical:
                    continue
                best = max(classical, key=lambda name: entries[name][metric]["mean"])
                reference = scores_by_slice(results["cells"][best][key], split, metric)
                for name, entry in entries.items():
                    mine = scores_by_slice(results["cells"][name][key], split, metric)
                    common = [slice_id for slice_id in mine if slice_id in reference]
                    entry.setdefault("vs_best_classical", {})[metric] = {
                        "baseline": best, **paired_difference([mine[s] for s in common], [reference[s] for s in common])}
    return summary


def scores_by_slice(cell: dict, split: str, metric: str) -> dict[str, float]:
    """slice id -> ``metric`` of one result cell (a method at a setting), for the slices of ``split``."""
    return {slice_id: value for slice_id, s, value in zip(cell["slice_ids"], cell["split"], cell[metric]) if s == split}


# ------------------------------------------------------------------------------------------------ the run


def _protocol(tier: str, slices: int | None, ood_images: list[str], tuning: str) -> dict:
    return {"tier": tier, "test_slices": test_slice_ids(tier, slices), "ood_images": ood_images,
            "data_seed": DATA_SEED, "mask_seeds": {split: MASK_SEEDS[split] for split in ("test", "val", "ood")},
            "dataset_sha256": data.demo_manifest(tier, DATA_SEED)["sha256"], "tuning": tuning,
            "tuning_grids": {key: list(grid) for key, grid in TUNING_GRIDS.items()}, "budget": BUDGETS[tier],
            "scores": list(SCORES), "bootstrap": BOOTSTRAP}


def _read_results(path: Path, protocol: dict, restart: bool) -> dict:
    fresh = {"format": FORMAT, "protocol": protocol, "tuning": {}, "methods": {}, "cells": {}, "skipped": {}}
    if restart or not path.exists():
        return fresh
    results = json.loads(path.read_text())
    if results.get("format") != FORMAT:
        raise ValueError(f"{path} has format {results.get('format')}, this harness writes {FORMAT}; use --restart "
                         "or another --output")
    changed = sorted(key for key in protocol if results["protocol"].get(key) != protocol[key])
    if changed:
        raise ValueError(f"{path} was run with another protocol (it differs in {changed}); use --restart to start "
                         "again, or another --output")
    return results


def _write(output: Path, results: dict, images: dict) -> None:
    checkpoints.atomic_write_bytes(output / "results.json", (json.dumps(results, indent=1) + "\n").encode())
    checkpoints.atomic_torch_save(images, output / "images.pt")


def _weights(results: dict, key: str, setting: Setting, tier: str, tuning: str) -> dict[str, float]:
    """The classical weights of a setting: tuned once per run (and kept in the results) or the tier's stored ones."""
    if tuning == "stored":
        return dict(config.settings(tier)["baseline_lambda"])
    if key not in results["tuning"]:
        results["tuning"][key] = tune_weights(setting, tier, BUDGETS[tier])
    return {name: entry["lam"] for name, entry in results["tuning"][key].items()}


def run(output: str | Path, tier: str | None = None, settings: Iterable[str] = tuple(SETTINGS),
        slices: int | None = None, only: Iterable[str] | None = None, plugins: Mapping[str, Callable] | None = None,
        tuning: str = "validation", ood_images: Iterable[str] = OOD_IMAGES, device: torch.device | str | None = None,
        restart: bool = False, progress: bool = True, checkpoint_dir: str | Path | None = None) -> dict:
    """Run the protocol and write its results, table and figures under ``output``; returns the results dict.

    Args:
        output: folder of ``results.json`` (resumed when it exists and the protocol matches), ``table.md``,
            ``images.pt`` and the figures.
        tier: ``quick``, ``demo`` or ``paper`` (default ``config.mode()``).
        settings: keys of ``SETTINGS``.
        slices: the first this many test slices (default all).
        only: names of ``registry`` methods to run (default all that exist).
        plugins: name -> a reader's function ``(kspace, maps, mask) -> (B, H, W)``.
        tuning: ``"validation"`` (tune the classical weights per setting) or ``"stored"`` (the tier's).
        ood_images: names of ``data.OOD_NAMES`` (none: test split only).
        device: where the methods run (default ``config.device()``).
        restart: ignore earlier results in ``output``.
        progress: progress bars and notes on stdout.
        checkpoint_dir: where the checkpoints are (default ``checkpoints.checkpoint_dir()``).
    """
    tier = tier or config.mode()
    if tier not in BUDGETS:
        raise ValueError(f"tier must be one of {tuple(BUDGETS)}, got {tier!r}")
    if tuning not in ("validation", "stored"):
        raise ValueError(f"tuning must be 'validation' or 'stored', got {tuning!r}")
    settings = list(settings)
    unknown = [key for key in settings if key not in SETTINGS]
    if unknown or not settings:
        raise ValueError(f"settings must be a non-empty selection of {list(SETTINGS)}, got {settings}")
    ood_images = list(ood_images)
    unknown = [name for name in ood_images if name not in data.OOD_NAMES]
    if unknown:
        raise ValueError(f"ood_images must come from {data.OOD_NAMES}, got {unknown}")
    specs, skipped = registry(tier, checkpoint_dir)
    if only is not None:
        only = list(only)
        unknown = [name for name in only if name not in specs and name not in skipped]
        if unknown:
            raise ValueError(f"unknown method {unknown}; the registry has {list(specs) + list(skipped)}")
        specs = {name: spec for name, spec in specs.items() if name in only}
        skipped = {name: why for name, why in skipped.items() if name in only}
    for name, fn in (plugins or {}).items():
        if name in specs or name in skipped:
            raise ValueError(f"plug-in name {name!r} is taken by a method of the registry")
        specs[name] = _plugin_spec(name, fn)
    if not specs:
        raise ValueError("no method to run: every selected method was skipped")
    log = print if progress else (lambda *args, **kwargs: None)
    for name, why in skipped.items():
        log(f"skipping {name}: {why}")
    device = torch.device(device) if device is not None else config.device()
    output = Path(output)
    results = _read_results(output / "results.json", _protocol(tier, slices, ood_images, tuning), restart)
    images = torch.load(output / "images.pt", weights_only=True) if (output / "images.pt").exists() and results["cells"] else {}
    results.update(git_commit=git_commit(), device=str(device), threads=torch.get_num_threads())
    results["skipped"].update(skipped)
    for name, spec in specs.items():
        if results["methods"].get(name, {}).get("identity") not in (None, spec.identity):
            log(f"{name} changed since its results were computed ({spec.identity}): computing them again")
            results["cells"].pop(name, None)
            results["methods"].pop(name)
        results["methods"][name] = {**results["methods"].get(name, {}), "kind": spec.kind, "note": spec.note,
                                    "identity": spec.identity, "slices_per_split": spec.slices, **spec.info}
        results["skipped"].pop(name, None)

    pending = [(key, name) for key in settings for name in specs if key not in results["cells"].get(name, {})]
    bar = _progress_bar(pending, progress)
    samples_of: dict[str, list[dict]] = {}
    for key, name in bar:
        spec, setting = specs[name], SETTINGS[key]
        if progress:
            bar.set_description(f"{name} at {setting.label}")
        if key not in samples_of:
            samples_of = {key: protocol_samples(setting, tier, slices, ood_images)}  # one setting in memory at a time
        samples = samples_of[key]
        if spec.slices is not None:
            samples = [s for split in ("test", "ood") for s in [s for s in samples if s["split"] == split][:spec.slices]]
        weights = _weights(results, key, setting, tier, tuning) if spec.kind == "classical" else {}
        method = spec.make(weights, device)
        if "peak_memory_bytes" not in results["methods"][name]:
            results["methods"][name]["peak_memory_bytes"] = _peak_memory(spec, weights, device, samples[0])
            results["methods"][name]["peak_memory_device"] = str(device)
        scored = evaluate.score({name: method}, samples, batch_size=1, device=device, progress=progress,
                                scores=SCORES, keep_images=1)[name]
        trained_at = results["methods"][name].get("trained_at")
        results["cells"].setdefault(name, {})[key] = {
            "slice_ids": [s["slice_id"] for s in samples], "split": [s["split"] for s in samples],
            **{metric: scored[metric].tolist() for metric in SCORES},
            "seconds": scored["seconds"], "seconds_per_slice": scored["seconds"] / len(samples),
            "device": str(device), "threads": torch.get_num_threads(),
            "weight": weights[CLASSICAL_WEIGHTS[name]] if name in CLASSICAL_WEIGHTS else None,
            "off_setting": off_setting(trained_at, setting, tier)}
        images.setdefault(key, {"reference": samples[0]["target"].abs(), "slice_id": samples[0]["slice_id"]})
        images[key][name] = scored["images"][0]
        _write(output, results, images)
    results["summary"] = summarise(results)
    _write(output, results, images)
    checkpoints.atomic_write_bytes(output / "table.md", markdown_table(results).encode())
    for filename, figure in figures(results, images).items():
        from mrtutor.viz import figure_png

        checkpoints.atomic_write_bytes(output / filename, figure_png(figure))
    log(f"wrote {output / 'results.json'}, table.md and the figures")
    return results


def _progress_bar(cells: list, enabled: bool):
    if not enabled:
        return cells
    from tqdm.auto import tqdm

    return tqdm(cells, desc="comparing", unit="cell")


def _peak_memory(spec: MethodSpec, weights: dict, device: torch.device, sample: dict) -> int:
    """Bytes of ``evaluate.peak_memory`` for one reconstruction of ``sample`` (with ``spec.memory_make`` if given)."""
    method = (spec.memory_make or spec.make)(weights, device)
    k, s, m = (sample[key][None].to(device) for key in ("kspace", "maps", "mask"))
    with torch.no_grad():
        return evaluate.peak_memory(lambda: method(k, s, m), device)


# ------------------------------------------------------------------------------------------------ reporting


def _interval(stat: dict, digits: int) -> str:
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.2g} s"


def markdown_table(results: dict) -> str:
    """The tables of ``results`` (with ``summary``) in markdown: one per split and setting, then the cost table."""
    digits = {"psnr": 2, "ssim": 3, "vif": 3}
    protocol, methods = results["protocol"], results["methods"]
    lines = [f"# Comparison, {protocol['tier']} tier",
             "",
             f"Mean over slices [95 % bootstrap interval, {protocol['bootstrap']['resamples']} resamples, seed "
             f"{protocol['bootstrap']['seed']}]. Δ: the paired mean difference to the best classical method of the "
             "setting and split by that score (chosen on these slices), with its interval, and the share of slices "
             "won. † a model tested away from its "
             f"training setting. Classical weights: {protocol['tuning']} ({'tuned per setting on validation slices' if protocol['tuning'] == 'validation' else 'the tier’s stored weights'}). "
             f"git {results['git_commit']}, device {results['device']}, {results['threads']} threads.", ""]
    split_titles = {"test": f"test split ({len(protocol['test_slices'])} slices)",
                    "ood": f"out-of-distribution images ({', '.join(protocol['ood_images'])})"}
    for split, by_setting in results["summary"].items():
        for key in (k for k in SETTINGS if k in by_setting):
            lines += [f"## {SETTINGS[key].label}, {split_titles[split]}", "",
                      "| method | slices | " + " | ".join(SCORE_LABELS[m] for m in SCORES) + " | " +
                      " | ".join(f"Δ {SCORE_LABELS[m].split()[0]} (won)" for m in SCORES) + " | s / slice |",
                      "|---" * (3 + 2 * len(SCORES)) + "|"]
            for name, entry in by_setting[key].items():
                mark = " †" if entry["off_setting"] else ""
                deltas = []
                for metric in SCORES:
                    paired = entry.get("vs_best_classical", {}).get(metric)
                    if paired is None or paired["baseline"] == name:
                        deltas.append("best classical" if paired else "-")
                    else:
                        deltas.append(f"{paired['mean']:+.{digits[metric]}f} [{paired['low']:+.{digits[metric]}f}, "
                                      f"{paired['high']:+.{digits[metric]}f}] ({100 * paired['won']:.0f} %)")
                lines.append(f"| {name}{mark} | {entry['slices']} | " +
                             " | ".join(_interval(entry[m], digits[m]) for m in SCORES) + " | " + " | ".join(deltas) +
                             f" | {entry['seconds_per_slice']:.3g} |")
            off = {name: entry["off_setting"] for name, entry in by_setting[key].items() if entry["off_setting"]}
            lines += [""] + [f"† {name}: {', '.join(why)}." for name, why in off.items()] + ([""] if off else [])
    lines += ["## Cost", "", "| method | kind | parameters | training | trained at | peak memory (MB) | note |",
              "|---|---|---|---|---|---|---|"]
    for name, entry in methods.items():
        trained = entry.get("trained_at")
        where = (f"{MASK_LABELS.get(trained['mask'], trained['mask'])} {trained['acceleration']:g}x, "
                 f"{trained['coils']}-coil, {trained['tier']}") if trained else "-"
        parameters = f"{entry['parameters']:,}" if "parameters" in entry else "-"
        training = _duration(entry["training_seconds"]) if entry.get("training_seconds") else "-"
        memory = f"{entry['peak_memory_bytes'] / 1e6:.1f}" if "peak_memory_bytes" in entry else "-"
        lines.append(f"| {name} | {entry['kind']} | {parameters} | {training} | {where} | {memory} | {entry['note']} |")
    if results["skipped"]:
        lines += ["", "Skipped:"] + [f"- {name}: {why}" for name, why in results["skipped"].items()]
    return "\n".join(lines) + "\n"


def figures(results: dict, images: dict) -> dict:
    """{file name: matplotlib Figure}: quality vs time, quality vs acceleration, and the image grid (test split)."""
    from matplotlib.figure import Figure

    summary = results["summary"].get("test", {})
    names = list(dict.fromkeys(name for entries in summary.values() for name in entries))
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    markers = dict(zip(SETTINGS, "osD^v"))
    out = {}

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for key, entries in summary.items():
        for name, entry in entries.items():
            stat = entry["psnr"]
            ax.errorbar(entry["seconds_per_slice"], stat["mean"], [[stat["mean"] - stat["low"]], [stat["high"] - stat["mean"]]],
                        marker=markers[key], color=colours[name], mfc="none" if entry["off_setting"] else colours[name])
    for name in names:
        ax.plot([], [], "s", color=colours[name], label=name)
    for key in summary:
        ax.plot([], [], markers[key], color="gray", label=SETTINGS[key].label)
    ax.set(xscale="log", xlabel=f"seconds per slice ({results['device']})", ylabel="mean PSNR, test split (dB)",
           title="quality against time (open: tested away from its training setting)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    out["quality_vs_time.png"] = fig

    families = list(dict.fromkeys(SETTINGS[key].mask for key in SETTINGS if key in summary))
    fig = Figure(figsize=(5 * max(len(families), 1), 4), layout="constrained")
    axes = fig.subplots(1, max(len(families), 1), squeeze=False)[0]
    for ax, family in zip(axes, families):
        keys = [key for key in SETTINGS if key in summary and SETTINGS[key].mask == family]
        for name in names:
            points = [(SETTINGS[k].acceleration, summary[k][name]) for k in keys if name in summary[k]]
            if not points:
                continue
            x = [a for a, _ in points]
            ax.plot(x, [e["psnr"]["mean"] for _, e in points], "-", color=colours[name], label=name)
            for a, e in points:
                ax.errorbar(a, e["psnr"]["mean"], [[e["psnr"]["mean"] - e["psnr"]["low"]], [e["psnr"]["high"] - e["psnr"]["mean"]]],
                            marker="o", color=colours[name], mfc="none" if e["off_setting"] else colours[name])
        ax.set(xlabel="acceleration", ylabel="mean PSNR, test split (dB)", title=f"{MASK_LABELS[family]} masks",
               xticks=[SETTINGS[k].acceleration for k in keys])
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    out["quality_vs_acceleration.png"] = fig

    keys = [key for key in SETTINGS if key in images]
    if keys:
        columns = ["reference"] + names
        fig = Figure(figsize=(1.5 * len(columns), 1.6 * len(keys)), layout="constrained")
        axes = fig.subplots(len(keys), len(columns), squeeze=False)
        for row, key in zip(axes, keys):
            for ax, name in zip(row, columns):
                ax.set_xticks([])
                ax.set_yticks([])
                if name in images[key]:
                    ax.imshow(images[key][name].numpy(), cmap="gray", vmin=0, vmax=1)
                    psnr = results["cells"].get(name, {}).get(key, {}).get("psnr", [None])[0] if name != "reference" else None
                    ax.set_title(name if psnr is None else f"{name}\n{psnr:.1f} dB", fontsize=6)
                else:
                    ax.set_axis_off()
            row[0].set_ylabel(SETTINGS[key].label, fontsize=7)
        fig.suptitle(f"test slice {images[keys[0]]['slice_id']}", fontsize=8)
        out["image_grid.png"] = fig
    return out


# ------------------------------------------------------------------------------------------------ command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mrtutor.compare", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--tier", choices=tuple(BUDGETS), default=None, help="default: MRTUTOR_MODE (demo)")
    parser.add_argument("--settings", nargs="+", choices=tuple(SETTINGS), default=list(SETTINGS),
                        help="the sampling settings to run (default all): " +
                        ", ".join(f"{key} = {s.label}" for key, s in SETTINGS.items()))
    parser.add_argument("--slices", type=int, default=None, help="only the first N test slices (default all)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="run only these methods of the registry (see --list); plug-ins always run")
    parser.add_argument("--method", action="append", default=[], metavar="package.module:function",
                        help="a reader's method fn(kspace, maps, mask) -> (B, H, W); repeatable")
    parser.add_argument("--tuning", choices=("validation", "stored"), default="validation",
                        help="classical weights: tuned per setting on validation slices, or the tier's stored ones")
    parser.add_argument("--ood-images", nargs="*", default=list(OOD_IMAGES), metavar="NAME",
                        help=f"out-of-distribution images from {data.OOD_NAMES} (none: test split only)")
    parser.add_argument("--output", default=None, help="results folder (default runs/compare/TIER)")
    parser.add_argument("--device", default=None, help="default: CUDA when present, else CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (timings depend on them)")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--restart", action="store_true", help="ignore the results already in --output")
    parser.add_argument("--list", action="store_true", help="list the methods and whether they can run, then exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tier = args.tier or config.mode()
    if args.list:
        specs, skipped = registry(tier, args.checkpoint_dir)
        for name, spec in specs.items():
            print(f"{name:14s} {spec.kind:10s} {spec.note}")
        for name, why in skipped.items():
            print(f"{name:14s} {'skipped':10s} {why}")
        return None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config.reuse_freed_memory()
    output = args.output or Path(__file__).resolve().parent.parent / "runs" / "compare" / tier
    try:
        plugins = {spec: load_plugin(spec) for spec in args.method}
        return run(output, tier, args.settings, args.slices, args.only, plugins, args.tuning, args.ood_images,
                   args.device, args.restart, not args.quiet, args.checkpoint_dir)
    except ValueError as err:  # bad input: say what was wrong, without a traceback
        raise SystemExit(f"python -m mrtutor.compare: error: {err}") from err


if __name__ == "__main__":
    main()
