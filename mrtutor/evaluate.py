"""Scoring reconstruction methods on a test set: one loop that every chapter's tables use; and the
memory a training step keeps for its backward pass (``saved_for_backward``) and the peak memory it
uses (``peak_memory``).

``python -m mrtutor.evaluate --modl-data dataset.hdf5 --checkpoints NAME ...`` scores checkpoints
against zero-filling, CG-SENSE and TV on the test slices of the MoDL brain data (paper tier) with
Table III's protocol of MoDL: 6x and 10x, a fresh variable-density mask per slice, noise sigma = 0.01.

A *method* is any callable ``(kspace, maps, mask) -> image`` on batches in the DESIGN.md layout
(k-space (B, C, H, W), maps (B, C, H, W), mask (B, H, W) -> complex image (B, H, W)): a trained
network such as ``mrtutor.modl.MoDL`` is one as it is, and a classical solver becomes one with a
lambda, e.g. ``lambda k, s, m: recon.cg_sense(Sense(s, m), k, lam=1e-2)``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.data import DataLoader

from mrtutor import checkpoints, config, data, metrics, recon
from mrtutor.sense import Sense

Method = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def saved_for_backward(run: Callable[[], object]) -> int:
    """Bytes of the tensors that autograd holds for the backward pass when ``run()`` returns.

    ``run`` builds a graph (a forward pass, a loss) and returns its output, which is kept alive while
    the count is taken: the memory that grows with an unrolled network's depth (MoDL's K) and that
    implicit gradients (CG in ``solve_normal``, fixed points in ``mrtutor.deq``) keep constant.
    Tensors saved by graphs that ``run`` built and dropped on the way (say, the ascent steps of a
    Lipschitz estimate) are not counted. Each storage counts once, whole: a convolution and the
    ReLU before it save the same tensor, and a saved view holds all of the memory it views.
    """
    held = 0
    saved_by_storage: dict[tuple[str, int], int] = {}  # live storage -> how many saved tensors use it

    class Saved:  # one box per saved tensor, so that we see when autograd lets go of it
        __slots__ = ("tensor", "__weakref__")

    def release(key: tuple[str, int], size: int) -> None:
        nonlocal held
        saved_by_storage[key] -= 1
        if saved_by_storage[key] == 0:
            del saved_by_storage[key]
            held -= size

    def pack(t: torch.Tensor) -> Saved:
        nonlocal held
        storage = t.untyped_storage()
        key, size = (str(t.device), storage.data_ptr()), storage.nbytes()
        if key not in saved_by_storage:
            saved_by_storage[key] = 0
            held += size
        saved_by_storage[key] += 1
        box = Saved()
        box.tensor = t.detach()  # not t itself: an output would hold its own grad_fn in a cycle
        weakref.finalize(box, release, key, size)
        return box

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
        output = run()  # noqa: F841 (kept alive, and with it the graph, until the count is read)
        return held


# What the profiler's C++ side prints on its own: start and stop markers, and the warning that it
# cannot credit the free of a tensor allocated before it started (``peak_memory`` says so itself).
_PROFILER_CHATTER = re.compile(r"^(USDT|STAGE):.*ActivityProfiler|^\[W.*CPUAllocator\.cpp.*unknown size")


@contextlib.contextmanager
def _without_profiler_chatter():
    """Hold back the profiler's own lines from file descriptors 1 and 2; pass every other line on to
    stderr once the block ends (Python's own ``print`` in a notebook does not go through them)."""
    sys.stdout.flush()
    sys.stderr.flush()
    originals = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, original in zip((1, 2), originals):
                os.dup2(original, fd)
                os.close(original)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines(keepends=True):
                if not _PROFILER_CHATTER.search(line):
                    sys.stderr.write(line)


def peak_memory(run: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Bytes by which the memory of tensors on ``device`` rose at the peak of ``run()``, above its
    level when ``run`` started.

    Unlike ``saved_for_backward`` this counts everything a step allocates: the graph, the gradients,
    the optimiser's state, temporaries. On CUDA it is the caching allocator's peak. On a CPU, where
    PyTorch keeps no such statistic, ``run`` goes through the profiler, whose memory events carry the
    running total of allocated bytes. Both count tensors, not what the allocator or the operating
    system reserves around them. The profiler does not know the size of a tensor allocated before
    ``run`` and freed inside it, so on a CPU such frees are not credited and the
    figure can exceed the true rise by their size (in a training step: the previous gradients).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    if device.type != "cpu":
        raise ValueError(f"peak_memory measures 'cpu' or 'cuda' devices, got {device.type!r}")
    with tempfile.TemporaryDirectory() as folder:
        with _without_profiler_chatter(), torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
            run()
        trace = Path(folder) / "trace.json"
        profiler.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = sorted((event for event in events
                     if event.get("name") == "[memory]" and event["args"].get("Device Type") == 0),
                    key=lambda event: event["ts"])
    if not memory:
        return 0
    # "Total Allocated" also counts what tensors allocated under an earlier profiler, still alive, hold:
    # the level before the first event is the start
    start = memory[0]["args"]["Total Allocated"] - memory[0]["args"]["Bytes"]
    return max([0, *(event["args"]["Total Allocated"] - start for event in memory)])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


SCORES = ("psnr", "ssim", "nmse")

# Samples per method call on a CPU. Small batches keep a CNN's activations (64 channels of 128 x 128 are
# 4 MB per slice) and the coil images in the cache: on this book's 2-core machine MoDL scores 1.4x and
# TV 1.6x faster in batches of 4 than of 20 (one thread). A GPU wants large batches.
CPU_BATCH = 4
GPU_BATCH = 20


def default_batch_size(device: torch.device | str) -> int:
    """Samples per method call that ``score`` uses on ``device`` unless told otherwise."""
    return GPU_BATCH if torch.device(device).type == "cuda" else CPU_BATCH


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in which every evaluation-mode ``BatchNorm2d`` that directly follows a
    ``Conv2d`` inside an ``nn.Sequential`` is folded into that convolution's weights and bias.

    The copy computes the same function (to float round-off, about 1e-6 relative) with one pass over
    the activations fewer per layer: MoDL's denoiser runs about 10 % faster. Batch norms in training
    mode normalise by each batch's statistics, so they are kept as they are.
    """
    model = copy.deepcopy(model)
    for sequence in model.modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        for i in range(len(sequence) - 1):
            conv, norm = sequence[i], sequence[i + 1]
            if type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d and not norm.training:
                sequence[i] = fuse_conv_bn_eval(conv, norm)
                sequence[i + 1] = nn.Identity()
    return model


# Layers that a bfloat16 block may hold: plain convolutions and what sits between them. A layer that
# computes something else (a spectral norm's power iteration, a gate with a learned threshold) keeps
# its block in the input's precision.
_PLAIN_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.Identity)


class Bfloat16Block(nn.Module):
    """Runs ``block`` under bfloat16 autocast and returns its output in the input's dtype."""

    def __init__(self, block: nn.Sequential):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.block(x).to(x.dtype)


def bfloat16_convolutions(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose plain convolution blocks (an ``nn.Sequential`` of ``_PLAIN_LAYERS`` only,
    with at least one convolution) compute in bfloat16; everything else (data consistency, FFTs,
    solvers) stays in the input's precision.

    On a CPU with native bfloat16 (``config.native_bfloat16``) MoDL's denoiser runs about 1.6x faster;
    chapter 2 measures what it costs in PSNR (under 0.01 dB per slice).
    """
    model = copy.deepcopy(model)
    blocks = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
              if isinstance(child, nn.Sequential) and all(type(layer) in _PLAIN_LAYERS for layer in child)
              and any(type(layer) in (nn.Conv2d, nn.ConvTranspose2d) for layer in child)]
    for parent, name, child in blocks:
        setattr(parent, name, Bfloat16Block(child))
    return model


def for_inference(method: Method, bfloat16: bool = False) -> Method:
    """What ``score`` runs for ``method``: an evaluation-mode network with its batch norms folded (and,
    with ``bfloat16``, its convolution blocks in bfloat16); any other method as it is."""
    if not isinstance(method, nn.Module) or method.training:
        return method
    model = fold_batch_norms(method)
    return bfloat16_convolutions(model) if bfloat16 else model


@torch.no_grad()
def score(
    methods: Mapping[str, Method],
    dataset,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    scores: tuple[str, ...] = SCORES,
    keep_images: int = 0,
    bfloat16: bool = False,
) -> dict[str, dict[str, torch.Tensor | float]]:
    """Run every method on every sample of ``dataset`` and score it against ``target``.

    Args:
        methods: name -> method (see the module docstring).
        dataset: yields the sample dicts of ``mrtutor.data`` (``kspace``, ``maps``, ``mask``, ``target``).
        batch_size: samples per call of a method; by default ``default_batch_size(device)``.
        device: where the methods run.
        progress: show a progress bar over batches.
        scores: names of ``mrtutor.metrics`` functions ``(x, ref) -> (B,)`` to compute (e.g. add ``"vif"``).
        keep_images: also return the magnitudes of the first this many reconstructions.
        bfloat16: run the convolution blocks of evaluation-mode networks in bfloat16
            (``bfloat16_convolutions``); worth it where ``config.native_bfloat16(device)``.
    Returns:
        name -> ``{"psnr": (N,), "ssim": (N,), "nmse": (N,), "seconds": float}`` (one entry per name in
        ``scores``): per-sample scores on magnitude images (``mrtutor.metrics`` defaults) and the method's
        total wall time; with ``keep_images``, ``"images"`` (keep_images, H, W) on the CPU too.
    Raises:
        ValueError when a method returns an image of another shape than ``target`` or one with NaN or
        infinite values.
    """
    if not methods:
        raise ValueError("methods must name at least one method, got an empty mapping")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: nothing to score")
    unknown = [name for name in scores if not callable(getattr(metrics, name, None))]
    if unknown:
        raise ValueError(f"scores must name functions of mrtutor.metrics, got {unknown}")
    device = torch.device(device)
    methods = {name: for_inference(method, bfloat16) for name, method in methods.items()}
    results = {name: {**{metric: [] for metric in scores}, "seconds": 0.0, "images": []} for name in methods}
    loader = DataLoader(dataset, batch_size=batch_size or default_batch_size(device), shuffle=False)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="scoring", leave=False)
    for batch in loader:
        kspace, maps, mask = (batch[key].to(device) for key in ("kspace", "maps", "mask"))
        target = batch["target"].to(device)
        for name, method in methods.items():
            _sync(device)
            tic = time.perf_counter()
            image = method(kspace, maps, mask)
            _sync(device)
            results[name]["seconds"] += time.perf_counter() - tic
            if not isinstance(image, torch.Tensor):
                raise ValueError(f"method {name!r} returned a {type(image).__name__}; expected a tensor of images")
            if image.shape != target.shape:
                raise ValueError(f"method {name!r} returned shape {tuple(image.shape)}; expected {tuple(target.shape)}, "
                                 "the target's (B, H, W)")
            if not torch.isfinite(image).all():
                raise ValueError(f"method {name!r} returned NaN or infinite values (in {int((~torch.isfinite(image)).sum())} "
                                 f"of {image.numel()} pixels)")
            for metric in scores:
                results[name][metric].append(getattr(metrics, metric)(image, target).cpu())
            kept = sum(len(images) for images in results[name]["images"])
            if kept < keep_images:
                results[name]["images"].append(image[:keep_images - kept].abs().float().cpu())
    for entry in results.values():
        for metric in scores:
            entry[metric] = torch.cat(entry[metric])
        images = entry.pop("images")
        if keep_images:
            entry["images"] = torch.cat(images)
    return results


def summary(results: Mapping[str, Mapping], metric: str = "psnr") -> dict[str, dict[str, float]]:
    """name -> mean, std, min and max of ``metric`` over the samples (MoDL's Table III columns)."""
    out = {}
    for name, entry in results.items():
        values = entry[metric].double()
        out[name] = {"mean": values.mean().item(), "std": values.std().item() if len(values) > 1 else 0.0,
                     "min": values.min().item(), "max": values.max().item()}
    return out


def format_table(columns: Mapping[str, Mapping[str, Mapping]], metrics_shown=("psnr", "ssim")) -> str:
    """A plain-text table: one row per method and, for each column (e.g. an acceleration), the
    mean +- std of each metric. ``columns`` maps a column title to the ``score`` results there."""
    names = list(dict.fromkeys(name for results in columns.values() for name in results))
    width = max(len(name) for name in names) + 2
    lines = [" " * width + "".join(f"{f'{title} {metric.upper()}':>17s}" for title in columns for metric in metrics_shown)]
    for name in names:
        cells = []
        for results in columns.values():
            for metric in metrics_shown:
                if name not in results:
                    cells.append("-")
                    continue
                values = results[name][metric].double()
                digits = 2 if metric == "psnr" else 3
                cells.append(f"{values.mean():.{digits}f} ± {values.std():.{digits}f}")
        lines.append(f"{name:{width}s}" + "".join(f"{cell:>17s}" for cell in cells))
    return "\n".join(lines)


def baseline_methods(weights: Mapping[str, float], cg_iters: int = 30, tv_iters: int = 100,
                     wavelet_iters: int | None = None) -> dict[str, Method]:
    """The classical reference methods of the tables: zero-filled, CG-SENSE and TV, with the weights
    ``weights["cg_sense"]`` and ``weights["tv"]`` (a tier's ``baseline_lambda``); with ``wavelet_iters``
    also l1-wavelet with ``weights["l1_wavelet"]``."""
    methods = {
        "zero-filled": lambda k, s, m: Sense(s, m).adjoint(k),
        "CG-SENSE": lambda k, s, m: recon.cg_sense(Sense(s, m), k, lam=weights["cg_sense"], max_iter=cg_iters),
        "TV": lambda k, s, m: recon.tv(Sense(s, m), k, lam=weights["tv"], n_iter=tv_iters),
    }
    if wavelet_iters is not None:
        methods["l1-wavelet"] = lambda k, s, m: recon.l1_wavelet(Sense(s, m), k, lam=weights["l1_wavelet"],
                                                                 n_iter=wavelet_iters)
    return methods


def paper_table(modl_data: str, names: list[str], accelerations=(6.0, 10.0), slices: int | None = None,
                checkpoint_dir: str | None = None, device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """MoDL's Table III protocol on the test slices of ``dataset.hdf5``: zero-filled, CG-SENSE, TV and
    the checkpoints ``names`` at each acceleration. Returns {"6x": score results, ...}."""
    methods = baseline_methods(config.settings("paper")["baseline_lambda"])
    for name in names:
        methods[name] = checkpoints.load(name, directory=checkpoint_dir, device=device)
    columns = {}
    for acceleration in accelerations:
        test_set = data.ModlDataset(modl_data, "test", mask_fn="variable_density_2d", acceleration=acceleration)
        if slices is not None:
            test_set = torch.utils.data.Subset(test_set, range(min(slices, len(test_set))))
        columns[f"{acceleration:g}x"] = score(methods, test_set, device=device, progress=progress)
    return columns


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m mrtutor.evaluate",
                                     description="MoDL's Table III protocol on the MoDL brain data (paper tier).")
    parser.add_argument("--modl-data", required=True, metavar="PATH", help="the MoDL dataset.hdf5")
    parser.add_argument("--checkpoints", nargs="*", default=[], help="names in checkpoints/ to score")
    parser.add_argument("--accelerations", nargs="+", type=float, default=[6.0, 10.0])
    parser.add_argument("--slices", type=int, default=None, help="only the first N test slices")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--output", default=None, help="write the mean, std, min and max per method as JSON")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config.reuse_freed_memory()
    device = torch.device(args.device) if args.device else config.device()
    columns = paper_table(args.modl_data, args.checkpoints, args.accelerations, args.slices, args.checkpoint_dir, device)
    print(format_table(columns))
    stats = {column: {metric: summary(results, metric) for metric in ("psnr", "ssim")} for column, results in columns.items()}
    for column, by_metric in stats.items():
        print(f"{column} PSNR (dB): " + "; ".join(f"{name} {v['mean']:.2f} ± {v['std']:.2f} [{v['min']:.2f}, {v['max']:.2f}]"
                                                   for name, v in by_metric["psnr"].items()))
    if args.output:
        checkpoints.atomic_write_bytes(Path(args.output), json.dumps(stats, indent=1).encode())
    return stats


if __name__ == "__main__":
    main()
