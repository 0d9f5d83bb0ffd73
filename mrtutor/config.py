"""Run-time configuration read in one place: the tier (``MRTUTOR_MODE``), the device, seeding, the C
allocator's reuse of freed memory, and the machine in words (for the timings the book records).

Tiers:

* ``quick``: what the tests and CI run; tiny images and a few steps, proving the code path.
* ``demo`` (default): the embedded dataset at a CPU-friendly size; the book is executed in it.
* ``paper``: the papers' own sizes and hyper-parameters on the real datasets, meant for a GPU.
"""

from __future__ import annotations

import ctypes
import os
import platform
import random

import numpy as np
import torch

MODES = ("quick", "demo", "paper")
DEFAULT_MODE = "demo"


def mode() -> str:
    """The tier named by ``MRTUTOR_MODE`` (default ``demo``); an unknown name is an error."""
    value = os.environ.get("MRTUTOR_MODE", DEFAULT_MODE).strip().lower()
    if value not in MODES:
        raise ValueError(f"MRTUTOR_MODE={value!r} is not a tier; expected one of {MODES}")
    return value


def device() -> torch.device:
    """CUDA when present, else CPU; ``MRTUTOR_DEVICE`` (e.g. ``cpu``) overrides."""
    requested = os.environ.get("MRTUTOR_DEVICE")
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def native_bfloat16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 convolutions in hardware: a CUDA GPU that supports it, or
    a CPU with AVX512-BF16 or AMX (read from /proc/cpuinfo; False where that file is missing).

    Elsewhere bfloat16 is emulated and can be slower than float32, so the chapters score their
    networks in bfloat16 only where this is True. ``MRTUTOR_BFLOAT16=0`` turns it off.
    """
    if os.environ.get("MRTUTOR_BFLOAT16", "1").strip() == "0":
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    flags = cpuinfo("flags").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpuinfo(field: str) -> str:
    """The value of ``field`` ("flags", "model name") for the first processor in /proc/cpuinfo; "" where the
    file or the field is missing (not Linux)."""
    try:
        with open("/proc/cpuinfo") as lines:
            return next((line.split(":", 1)[1].strip() for line in lines
                         if line.split(":", 1)[0].strip() == field and ":" in line), "")
    except OSError:
        return ""


def machine() -> str:
    """The machine a measurement ran on, in words: cores, whether they compute bfloat16 natively (the chapters
    score their networks in bfloat16 only then, so it can halve a chapter's time), torch's threads and the GPU."""
    bf16 = "native bfloat16" if native_bfloat16("cpu") else "no native bfloat16"
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{os.cpu_count()} cores ({platform.machine()}, {bf16}), torch {torch.get_num_threads()} threads{gpu}"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks of up to 32 MB for reuse instead of returning them to the OS.

    A reconstruction allocates and frees tensors of a few MB in every iteration (a 12-coil stack at
    320 x 368 is 11 MB, a batch of MoDL's activations 17 MB). By default glibc unmaps such a block, or
    trims the heap, when it is freed, and the next one of the same size faults its pages in again,
    each zeroed by the kernel. Measured on a 2-core VM: 100 CG-SENSE iterations at that size took
    1.8-2.8 s with 0.1-0.46 million page faults and 1.3-1.6 s without them; scoring MoDL on 12 slices
    4.5 s and 3.9 s. The price is memory: the process keeps its peak heap until it exits.

    32 MB is the largest threshold every 64-bit glibc accepts. Applies to the whole process, for its
    lifetime. Returns True where it took effect (Linux with glibc), False elsewhere.
    """
    if platform.libc_ver()[0] != "glibc":  # macOS, Windows, musl
        return False
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(mallopt(m_mmap_threshold, 32 * 2**20)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def describe() -> str:
    """One line for a chapter's first cell: tier, device, torch version."""
    return f"mrtutor tier: {mode()} | device: {device()} | torch {torch.__version__}"


# Sizes and classical-baseline weights per tier. Chapters read these through ``settings()`` so that
# the same code runs at every tier and only this table differs.
TIERS: dict[str, dict] = {
    "quick": {
        # Chapter 5's sparse-recovery images (mrtutor.data.sparse_recovery): side and samples per split.
        "sgp_image_size": 32,
        "sgp_samples": {"train": 8, "val": 4, "test": 4},
        "image_shape": (48, 48),
        "num_coils": 4,
        "noise_sigma": 0.01,
        "demo_slices": {"train": 24, "val": 8, "test": 8},
        # Classical baselines' weights, tuned on the validation split at 6x (chapter 1).
        "baseline_lambda": {"cg_sense": 3e-3, "tv": 3e-3, "l1_wavelet": 1e-3},
    },
    "demo": {
        "sgp_image_size": 128,
        "sgp_samples": {"train": 240, "val": 24, "test": 24},
        "image_shape": (128, 128),
        "num_coils": 8,
        "noise_sigma": 0.01,
        # Slices of the embedded demo dataset per split (mrtutor.data.demo_dataset).
        "demo_slices": {"train": 360, "val": 60, "test": 60},
        "baseline_lambda": {"cg_sense": 1e-2, "tv": 1e-3, "l1_wavelet": 3e-3},
    },
    "paper": {
        # Lee and Chun: BSDS500 at 256 x 256, 450 training and 50 test images.
        "sgp_image_size": 256,
        "sgp_samples": {"train": 450, "val": 50, "test": 50},
        # The MoDL brain data: 256 x 232, 12 coils, sigma = 0.01 on max-1 images.
        "image_shape": (256, 232),
        "num_coils": 12,
        "noise_sigma": 0.01,
        "demo_slices": {"train": 360, "val": 60, "test": 60},
        # Not tuned at this size yet: the demo tier's weights (same intensity and noise conventions).
        "baseline_lambda": {"cg_sense": 1e-2, "tv": 1e-3, "l1_wavelet": 3e-3},
    },
}


def settings(tier: str | None = None) -> dict:
    """A copy of the settings of ``tier`` (default: the current ``mode()``)."""
    tier = mode() if tier is None else tier
    if tier not in TIERS:
        raise ValueError(f"tier={tier!r} is not known; expected one of {MODES}")
    return dict(TIERS[tier])
