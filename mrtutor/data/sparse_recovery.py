"""The sparse-recovery problems of chapter 5 (Lee and Chun, Sec. 6): images, forward operators,
measurements and the converged l1-synthesis solutions the stepsize networks are trained against.

Four problems, each min_x 1/2 ||A W^T x - y||^2 + lam ||x||_1 (``sgp.L1Synthesis``):

* ``inpainting``: A keeps a random ``fraction`` of the pixels (``masks.random_pixels``), a new mask per image;
* ``fourier``: A keeps a ``fraction`` of the centred Fourier coefficients, a 2-D variable-density
  random mask with a fully sampled centre per image (``masks.variable_density_2d`` at acceleration
  1 / fraction; the paper does not say which random pattern it drew);
* ``deblurring``: a Gaussian blur of sigma 2 with periodic boundaries (Sec. 6.4);
* ``ct``: parallel-beam projections at ``views`` angles over 180 degrees (Sec. 6.6: 144 views);
* ``mri``, beyond the paper: chapter 1's multi-coil l1-wavelet reconstruction (``recon.l1_wavelet``'s
  problem: complex images, Daubechies-4 details penalised, the approximation free), on the demo k-space
  at ``MRI_ACCELERATION`` with a 2-D variable-density mask per slice and chapter 1's weight ``MRI_LAM``.

Images are real, in [0, 1] (MR images: complex, max magnitude 1). The paper used BSDS500 photographs (450 training, 50 test, 256 x 256),
which cannot be downloaded here. Inpainting and deblurring use scikit-image's photographs instead
(``natural.PHOTOGRAPHS``): training images are random square crops of the training photographs,
of a random side between the tier's size and the photograph's, resized to the tier's size, flipped
and rotated at random; validation and test images are the whole held-out photographs (centre square,
resized), in their eight flips and rotations. No test photograph is ever cropped into training. The
Fourier and CT problems use the demo brain slices (magnitude, max 1), split by the demo data's slabs.

Every sample carries its converged solution x*: FISTA with backtracking run for
``REFERENCE_ITERATIONS`` = 1200 iterations (Sec. 4.1's choice), computed once per data set and
cached under ``data_root()/sparse-recovery/`` (the file name holds a hash of everything that
defines the data; the file holds a digest of its arrays, checked on every load).
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from mrtutor import config, masks
from mrtutor.data.demo import demo_manifest
from mrtutor.data.files import _array_digest, _atomic_path, data_root
from mrtutor.data.natural import PHOTOGRAPHS, brain_slices, photograph, random_crop
from mrtutor.data.numerics import _rng, _seed
from mrtutor.operators import GaussianBlur, Inpainting, PartialFourier, Radon
from mrtutor.sgp import L1Synthesis, lipschitz, solve

IMAGE_PROBLEMS = ("inpainting", "fourier", "deblurring", "ct")  # the paper's four, on real images
PROBLEMS = IMAGE_PROBLEMS + ("mri",)
NATURAL = ("inpainting", "deblurring")  # the problems on photographs; the others use brain slices
SPLITS = ("train", "val", "test")

# Lee and Chun set lam = 0.1 (Sec. 6.1) for BSDS500 images in [0, 255]. Images here are in [0, 1]:
# dividing x and y by 255 divides f by 255^2 and ||x||_1 by 255, so lam / 255 keeps the same minimiser.
LAM = 0.1 / 255
# The noisy 50 % test adds Gaussian noise of standard deviation 5 (Sec. 6.1, on the [0, 255] scale).
NOISY = 5 / 255
BLUR_SIGMA = 2.0  # Sec. 6.4
VIEWS = 144  # Sec. 6.6
REFERENCE_ITERATIONS = 1200  # Sec. 4.1: "FISTA with 1200 iterations"
REFERENCE_CHUNK = 64  # images per batched FISTA run
CACHE_VERSION = 1  # raise when what a cache file holds changes
# The MRI problem is chapter 1's: its main acceleration, and the l1-wavelet weight chapter 1 picks on the
# validation split at that acceleration (recon.tune_lambda on its grid, demo tier), with recon.l1_wavelet's basis.
MRI_ACCELERATION = 6
MRI_LAM = 3e-3
MRI_WAVELET = "db4"


def default_lam(problem: str) -> float:
    """The weight a problem is trained and tested at: ``MRI_LAM`` for ``mri``, ``LAM`` for the paper's four."""
    _check_problem(problem)
    return MRI_LAM if problem == "mri" else LAM


def default_fraction(problem: str) -> float:
    """The sampled share a problem is trained at: 1 / ``MRI_ACCELERATION`` for ``mri``, the paper's 50 % otherwise."""
    _check_problem(problem)
    return 1 / MRI_ACCELERATION if problem == "mri" else 0.5


def _check_problem(problem: str) -> None:
    if problem not in PROBLEMS:
        raise ValueError(f"problem must be one of {PROBLEMS}, got {problem!r}")


def _check_fraction(fraction) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"fraction must be a number in (0, 1), the sampled share, got {fraction!r}")
    return float(fraction)


def sampling_mask(problem: str, size: int, fraction: float = 0.5, seed: int = 0) -> torch.Tensor | None:
    """The (size, size) 0/1 mask of one image's operator, or None for the problems without one."""
    _check_problem(problem)
    fraction = _check_fraction(fraction)
    if problem == "inpainting":
        return masks.random_pixels((size, size), fraction, seed)
    if problem == "fourier":
        return masks.variable_density_2d((size, size), 1 / fraction, seed)
    return None


@functools.lru_cache(maxsize=4)
def _radon(views: int, size: int, dtype: torch.dtype, device: str) -> tuple[Radon, float]:
    """The projector of ``views`` angles and its power-iteration ||A||^2, built once per size."""
    op = Radon(np.linspace(0, 180, views, endpoint=False), size, dtype=dtype, device=device)
    return op, lipschitz(op, (1, size, size), dtype=dtype, device=device).item()


def forward_operator(problem: str, fraction: float = 0.5, size: int = 64, seed: int = 0, views: int = VIEWS,
                     mask: torch.Tensor | None = None, dtype: torch.dtype = torch.float32, device=None):
    """The forward operator A of ``problem`` on real images (B, size, size).

    Args:
        problem: one of ``IMAGE_PROBLEMS`` (MRI's ``Sense`` needs each slice's coil maps: ``recovery_problem``).
        fraction: sampled share in (0, 1) of inpainting and Fourier (checked for every problem).
        size: image side.
        seed: of the mask drawn when ``mask`` is not given.
        views: projection angles of CT.
        mask: (size, size) or (B, size, size) masks of inpainting or Fourier, e.g. a batch's ``mask``.
        dtype, device: of CT's sparse matrices (the other operators follow their inputs).
    Returns:
        an ``Inpainting``, ``PartialFourier``, ``GaussianBlur`` or ``Radon``.
    """
    _check_problem(problem)
    if problem == "mri":
        raise ValueError("mri has no operator without coil maps: use recovery_problem('mri', kspace, mask, maps=maps)")
    _check_fraction(fraction)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if problem in ("inpainting", "fourier"):
        mask = sampling_mask(problem, size, fraction, seed) if mask is None else mask
        return Inpainting(mask) if problem == "inpainting" else PartialFourier(mask)
    if problem == "deblurring":
        return GaussianBlur(BLUR_SIGMA)
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise ValueError(f"views must be a positive integer, got {views!r}")
    return _radon(views, size, dtype, str(torch.device(device or "cpu")))[0]


def recovery_problem(problem: str, measurement: torch.Tensor, mask: torch.Tensor | None = None,
                     lam: float | None = None, views: int = VIEWS, maps: torch.Tensor | None = None) -> L1Synthesis:
    """The ``L1Synthesis`` of a batch: measurements (B, ...) with their masks (B, H, W) when the problem has one,
    and for ``mri`` the coil maps (B, C, H, W) of the k-space (B, C, H, W). ``lam``: default ``default_lam``.

    CT's projector is normalised (``L1Synthesis(normalise=True)``: A and y divided by ||A||), as
    Lee and Chun normalise their measurement matrices (Sec. 6.1), so lam weighs the l1 norm against
    the normalised data term; the other operators have ||A|| = 1 already (for ``Sense`` with maps of
    unit sum of squares, ||A|| <= 1, and 1 serves as the constant).
    """
    _check_problem(problem)
    lam = default_lam(problem) if lam is None else lam
    if (mask is None) != (problem not in ("inpainting", "fourier", "mri")):
        raise ValueError(f"{problem} {'needs' if mask is None else 'takes no'} mask")
    if (maps is None) != (problem != "mri"):
        raise ValueError(f"{problem} {'needs' if maps is None else 'takes no'} coil maps")
    if problem == "mri":
        from mrtutor.sense import Sense

        return L1Synthesis(Sense(maps, mask), measurement, lam, wavelet=MRI_WAVELET, levels=None, lipschitz_estimate=1.0,
                           complex_images=True, penalise_approximation=False)
    size = measurement.shape[-2] if problem == "ct" else measurement.shape[-1]
    if problem == "ct":  # the projector and its ||A||^2, computed once per size
        op, lip = _radon(views, size, measurement.dtype, str(measurement.device))
    else:  # a projection, rows of a unitary map, a blur of DC gain 1: ||A||^2 = 1
        op, lip = forward_operator(problem, size=size, mask=mask), 1.0
    return L1Synthesis(op, measurement, lam, normalise=True, lipschitz_estimate=lip)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

def _resize(image: np.ndarray, size: int) -> np.ndarray:
    import skimage.transform

    return skimage.transform.resize(image, (size, size), anti_aliasing=True, order=1).astype(np.float32)


def _dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the eight flips and quarter turns of a square image, k in 0..7."""
    image = np.rot90(image, k % 4)
    return np.ascontiguousarray(image[:, ::-1] if k >= 4 else image)


def _centre_square(image: np.ndarray) -> np.ndarray:
    side = min(image.shape)
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top:top + side, left:left + side]


def natural_images(split: str, count: int, size: int, seed: int = 0) -> np.ndarray:
    """(count, size, size) float32 images in [0, 1] from the photographs of ``split``.

    Training: image i is a random square crop of photograph i mod 8, its side drawn between ``size``
    and the photograph's shorter side, resized to ``size``, in a random flip and rotation (all drawn
    from (seed, i)). Validation and test: the whole photograph i mod n (centre square, resized), in
    flip-and-rotation i // n mod 8.
    """
    photos = [photograph(name) for name in PHOTOGRAPHS[split]]
    out = []
    for i in range(count):
        image = photos[i % len(photos)]
        if split == "train":
            rng = _rng(seed, i)
            square = random_crop(image, int(rng.integers(size, min(image.shape) + 1)), rng)
            out.append(_dihedral(_resize(square, size), int(rng.integers(8))))
        else:
            out.append(_dihedral(_resize(_centre_square(image), size), (i // len(photos)) % 8))
    return np.clip(np.stack(out), 0, 1)


def brain_images(split: str, count: int, size: int, tier: str) -> np.ndarray:
    """(count, size, size) float32 brain slices of the demo data's ``split``, each with max 1:
    ``count`` slices evenly spaced through the split (after all of them, their flips and rotations)."""
    slices = brain_slices(split, tier)
    picks = np.linspace(0, len(slices) - 1, min(count, len(slices))).round().astype(int)
    out = []
    for i in range(count):
        image = _resize(slices[picks[i % len(picks)]], size)
        out.append(_dihedral(np.clip(image, 0, None) / image.max(), (i // len(picks)) % 8))
    return np.stack(out)


# ---------------------------------------------------------------------------------------------
# Measurements, references and their cache
# ---------------------------------------------------------------------------------------------

class SparseRecoveryDataset(torch.utils.data.Dataset):
    """Samples of one problem: ``target`` (H, W) real image in [0, 1], ``measurement`` y (as A returns
    it: (H, W), complex for Fourier, (H, views) for CT), ``mask`` (H, W) for inpainting and Fourier,
    and ``reference`` (H, W), the converged wavelet coefficients x* of ``recovery_problem`` (absent when the
    dataset was asked for without it and the cache did not hold it). For
    ``mri``: ``target`` (H, W) complex, ``measurement`` the k-space (C, H, W), ``mask`` (H, W), ``maps``
    (C, H, W), ``reference`` complex.

    ``info`` holds what defines the data (problem, split, tier, fraction, noise, lam, seed, views).
    """

    def __init__(self, arrays: dict[str, torch.Tensor], info: dict):
        self.arrays, self.info = arrays, info
        self.problem = info["problem"]

    def __len__(self) -> int:
        return len(self.arrays["target"])

    def set_epoch(self, epoch: int) -> None:
        """The samples stay fixed from epoch to epoch: each one's x* is computed once and cached."""

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples")
        return {key: value[index] for key, value in self.arrays.items()}


def _measure(problem: str, images: torch.Tensor, fraction: float, noise: float, seeds: list[int], views: int
             ) -> dict[str, torch.Tensor]:
    """``target``, ``measurement`` and (inpainting, Fourier) ``mask`` of images (B, H, W).

    y = A x + n: real Gaussian noise of standard deviation ``noise``, or complex noise with
    E|n|^2 = noise^2 for Fourier (the same noise as in the image domain, the FFT being
    orthonormal); only measured entries get noise. Sample i draws its mask and noise from seeds[i].
    """
    size = images.shape[-1]
    arrays = {"target": images}
    mask = None
    if problem in ("inpainting", "fourier"):
        mask = torch.stack([sampling_mask(problem, size, fraction, s) for s in seeds])
        arrays["mask"] = mask
    clean = forward_operator(problem, fraction, size, views=views, mask=mask).forward(images)
    generators = [torch.Generator().manual_seed(_seed(s, 1)) for s in seeds]
    # complex randn has E|n|^2 = 1, half in each part
    n = torch.stack([torch.randn(clean.shape[1:], dtype=clean.dtype, generator=g) for g in generators])
    n = noise * (n if mask is None else n * mask)
    arrays["measurement"] = clean + n
    return arrays


def references(problem: str, measurement: torch.Tensor, mask: torch.Tensor | None, lam: float, views: int = VIEWS,
               iterations: int = REFERENCE_ITERATIONS, device=None, maps: torch.Tensor | None = None,
               partial: Path | None = None) -> torch.Tensor:
    """x* (N, H, W) on the CPU: FISTA-b for ``iterations`` on the problems of N measurements (with their
    coil maps for ``mri``), in batches of ``REFERENCE_CHUNK``, computed on ``device`` (default
    ``config.device()``: CUDA when present).

    With ``partial``, each finished batch is saved there (atomically), and a call whose run was interrupted
    continues after the batches saved for the same inputs; the caller removes the file once it has kept the result.
    """
    device = torch.device(device) if device is not None else config.device()
    inputs = {"problem": problem, "lam": float(lam), "views": views, "iterations": iterations,
              "chunk": REFERENCE_CHUNK, "sha256": _digest({name: value for name, value in
                                                           (("measurement", measurement), ("mask", mask),
                                                            ("maps", maps)) if value is not None})}
    out = _read_partial(partial, inputs) if partial is not None and partial.exists() else []
    for start in range(len(out) * REFERENCE_CHUNK, len(measurement), REFERENCE_CHUNK):
        part = slice(start, start + REFERENCE_CHUNK)
        part_mask = None if mask is None else mask[part].to(device)
        part_maps = None if maps is None else maps[part].to(device)
        problem_part = recovery_problem(problem, measurement[part].to(device), part_mask, lam, views, part_maps)
        out.append(solve(problem_part, "fista_b", iterations).coefficients.cpu())
        if partial is not None:
            with _atomic_path(partial) as tmp:
                torch.save({"inputs": inputs, "batches": out}, tmp)
    return torch.cat(out)


def _read_partial(path: Path, inputs: dict) -> list[torch.Tensor]:
    """The batches of x* an interrupted ``references`` saved for these inputs, or [] (with a warning saying why)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["inputs"] != inputs:
            raise ValueError("it holds another computation")
        return list(saved["batches"])
    except Exception as error:  # unreadable or another computation's: start over
        warnings.warn(f"{path} is not a usable partial result ({error}); starting the references from the first batch",
                      RuntimeWarning, stacklevel=3)
        return []


def _digest(arrays: dict[str, torch.Tensor]) -> str:
    return _array_digest(*(torch.view_as_real(v).numpy() if v.is_complex() else v.numpy()
                           for _, v in sorted(arrays.items())))


def _cache_path(info: dict) -> Path:
    key = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]
    return data_root() / "sparse-recovery" / f"{info['problem']}-{info['split']}-{info['tier']}-{key}.pt"


def _read_cache(path: Path, info: dict, count: int, size: int) -> dict[str, torch.Tensor] | None:
    """The cached arrays, or None (with a warning saying why) when the file is unusable."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        arrays, problem = saved["arrays"], info["problem"]
        if saved["info"] != info:
            raise ValueError(f"it holds data of {saved['info']}")
        required = ("target",) + (("mask",) if problem in ("inpainting", "fourier", "mri") else ())
        for key in required + (("reference",) if "reference" in arrays else ()):
            if tuple(arrays[key].shape) != (count, size, size):
                raise ValueError(f"{key} has shape {tuple(arrays[key].shape)}, expected {(count, size, size)}")
        if _digest(arrays) != saved["sha256"]:
            raise ValueError("its arrays do not match their sha256")
    except Exception as error:  # any unreadable or inconsistent file is computed again
        warnings.warn(f"{path} is not a usable sparse-recovery cache ({error}); computing it again",
                      RuntimeWarning, stacklevel=3)
        return None
    return arrays


def _mri_arrays(split: str, tier: str, count: int, fraction: float) -> dict[str, torch.Tensor]:
    """``target``, ``measurement`` (k-space), ``mask`` and ``maps`` of the first ``count`` demo slices of
    ``split``, each with its own 2-D variable-density mask at acceleration 1 / ``fraction`` (the mask seeds
    of chapter 4's splits: 0, 10,000 and 20,000 for training, validation and test, then the slice index)."""
    from mrtutor.data.demo import demo_dataset

    slices = demo_dataset(split, tier, mask_fn="variable_density_2d", acceleration=1 / fraction,
                          mask_seed=10_000 * SPLITS.index(split))
    samples = [slices[i] for i in range(min(count, len(slices)))]
    names = {"target": "target", "measurement": "kspace", "mask": "mask", "maps": "maps"}
    return {key: torch.stack([sample[name] for sample in samples]) for key, name in names.items()}


def sparse_recovery_dataset(problem: str, split: str, tier: str | None = None, fraction: float | None = None,
                            noise: float = 0.0, lam: float | None = None, seed: int = 0, views: int = VIEWS,
                            reference: bool = True) -> SparseRecoveryDataset:
    """The samples of ``problem`` in ``split`` at the tier's ``sgp_image_size`` and ``sgp_samples``,
    measured at ``fraction`` (inpainting, Fourier; default ``default_fraction``) with noise of standard
    deviation ``noise``, with their x* for ``lam`` (default ``default_lam``); read from the cache, or
    computed and cached. ``mri`` takes the demo slices at their own size, with their own noise (``noise``
    must be 0), and as many as the split has when it has fewer than ``sgp_samples``.

    x* costs 1200 FISTA-b iterations per sample: with ``reference=False`` it is left out unless the cache
    already holds it (a later call that asks for it computes it and adds it to the same cache file)."""
    _check_problem(problem)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    fraction = _check_fraction(default_fraction(problem) if fraction is None else fraction)
    lam = default_lam(problem) if lam is None else lam
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise must be a standard deviation >= 0, got {noise!r}")
    if problem == "mri" and noise != 0:
        raise ValueError(f"mri uses the demo k-space with its own noise; noise must be 0, got {noise!r}")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam >= 0:
        raise ValueError(f"lam must be a number >= 0, got {lam!r}")
    tier = tier or config.mode()
    settings = config.settings(tier)
    size, count = settings["sgp_image_size"], settings["sgp_samples"][split]
    if problem == "mri":
        size = settings["image_shape"][0]
        count = min(count, demo_manifest(tier)["slices"][split])
    info = {"version": CACHE_VERSION, "problem": problem, "split": split, "tier": tier, "fraction": fraction,
            "noise": float(noise), "lam": float(lam), "seed": seed, "size": size, "count": count,
            "views": views if problem == "ct" else None,
            "images": list(PHOTOGRAPHS[split]) if problem in NATURAL else demo_manifest(tier)["sha256"]}
    path = _cache_path(info)
    arrays = _read_cache(path, info, count, size) if path.exists() else None
    missing = arrays is None or (reference and "reference" not in arrays)
    if arrays is None:
        if problem == "mri":
            arrays = _mri_arrays(split, tier, count, fraction)
        else:
            images = (natural_images(split, count, size, seed) if problem in NATURAL
                      else brain_images(split, count, size, tier))
            seeds = [_seed(seed, SPLITS.index(split), i) for i in range(count)]
            arrays = _measure(problem, torch.from_numpy(images), fraction, noise, seeds, views)
    if missing:
        partial = path.with_name(path.stem + ".partial.pt")  # the batches of x* done so far, if interrupted
        if reference:
            arrays["reference"] = references(problem, arrays["measurement"], arrays.get("mask"), lam, views,
                                             maps=arrays.get("maps"), partial=partial)
        with _atomic_path(path) as tmp:
            torch.save({"info": info, "arrays": arrays, "sha256": _digest(arrays)}, tmp)
        partial.unlink(missing_ok=True)
    return SparseRecoveryDataset(arrays, info)


def training_datasets(problem: str, **kwargs) -> tuple[SparseRecoveryDataset, SparseRecoveryDataset, str]:
    """The training and validation sets of ``problem`` (``kwargs`` as ``sparse_recovery_dataset``'s), and a
    sha256 of both: what the training recipes' ``data`` return."""
    train = sparse_recovery_dataset(problem, "train", **kwargs)
    val = sparse_recovery_dataset(problem, "val", **kwargs)
    return train, val, hashlib.sha256((_digest(train.arrays) + _digest(val.arrays)).encode()).hexdigest()


def sparse_recovery_datasets(args) -> tuple[SparseRecoveryDataset, SparseRecoveryDataset, str]:
    """``Recipe.data`` of ``sgp`` and ``sgp_unet``: the training and validation sets of ``args.problem`` at
    ``args.fraction`` and ``args.noise``, with x* for ``args.lam``, and a sha256 of both."""
    return training_datasets(args.problem, tier=args.tier or config.mode(), fraction=args.fraction, noise=args.noise,
                             lam=args.lam, seed=args.seed, views=args.views)
