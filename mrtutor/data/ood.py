"""Out-of-distribution images for robustness experiments: dipy's real T1 slice and scikit-image's
shipped images (``OOD_NAMES``), through the demo dataset's simulated acquisition (``ood_samples``)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from scipy import ndimage

from mrtutor.data.acquisition import OVERSAMPLE, _tier_geometry, simulate_acquisition
from mrtutor.data.datasets import _as_mask, _resolve_mask_fn
from mrtutor.data.numerics import _rng, _seed

OOD_NAMES = ("dipy_t1", "camera", "astronaut", "moon", "coins", "brick", "grass", "phantom")


def _ood_image(name: str) -> tuple[np.ndarray, bool]:
    """A 2-D image in [0, 1] and whether it is an object on a background (else it fills the view)."""
    if name == "dipy_t1":
        from dipy.data import get_fnames

        return np.load(get_fnames(name="t1_coronal_slice")).astype(np.float64), True
    import skimage.data
    from skimage.color import rgb2gray

    image = getattr(skimage.data, "shepp_logan_phantom" if name == "phantom" else name)()
    image = rgb2gray(image) if image.ndim == 3 else image.astype(np.float64)
    return image / image.max(), name == "phantom"


def ood_samples(
    names: Iterable[str] = ("dipy_t1", "camera"),
    tier: str | None = None,
    mask_fn=None,
    acceleration: float | None = None,
    seed: int = 0,
) -> list[dict]:
    """Out-of-distribution images through the demo's simulated acquisition, as samples.

    ``names`` from ``OOD_NAMES``: ``dipy_t1`` (dipy's real single-subject coronal T1 slice, shipped
    in the dipy wheel) and scikit-image's shipped images (``camera``, ``astronaut`` in grey, ...).
    An object on a background (dipy's brain, the phantom) is scaled so that its extent fills 75%
    of the field of view like the demo brains; a natural image fills the whole field of view.
    Masks: as in ``demo_dataset`` (one mask per image, seeded by ``seed`` and its position).
    """
    settings, shape, _ = _tier_geometry(tier)
    names = list(names)
    for name in names:
        if name not in OOD_NAMES:
            raise ValueError(f"names must come from {OOD_NAMES}, got {name!r}")
    mask_fn = _resolve_mask_fn(mask_fn, acceleration)
    fine = tuple(s * OVERSAMPLE for s in shape)
    samples = []
    for n, name in enumerate(names):
        image, is_object = _ood_image(name)
        if is_object:  # the object's larger extent spans 75% of the shorter side of the view
            nz = np.argwhere(image > 0.05)
            lo, hi = nz.min(axis=0), nz.max(axis=0)
            centre, step = (lo + hi) / 2, (hi - lo + 1).max() / (0.75 * min(fine))
        else:  # the image covers the whole view, cropped to its aspect ratio
            centre, step = (np.array(image.shape) - 1) / 2, min(image.shape[0] / fine[0], image.shape[1] / fine[1])
        # step: source pixels per fine pixel, the same along both axes
        rows, cols = [(np.arange(f) - f // 2) * step + c for f, c in zip(fine, centre)]
        image_fine = ndimage.map_coordinates(image, np.meshgrid(rows, cols, indexing="ij"), order=3, mode="constant")
        rng = _rng(seed, 99, n)  # 99: no demo subject, so these draws differ from every demo slice's
        image_fine = np.clip(image_fine, 0, None)
        sim = simulate_acquisition(image_fine, shape, settings["num_coils"], settings["noise_sigma"], rng)
        mask = torch.ones(shape)
        if mask_fn is not None:
            mask = _as_mask(mask_fn(shape, _seed(seed, n)), shape, "mask_fn")
        samples.append(
            {
                "kspace": torch.from_numpy(sim["kspace"]) * mask,
                "mask": mask,
                "maps": torch.from_numpy(sim["maps"]),
                "target": torch.from_numpy(sim["target"]),
                "scale": sim["scale"],
                "subject": name,
                "slice_id": name,
                "fname": "",
                "slice": 0,
            }
        )
    return samples
