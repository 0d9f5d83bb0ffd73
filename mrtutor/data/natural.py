"""Super-resolution data (Neural PGD, Sec. 5.3): high-resolution images and their 2x2 block averages.

The paper uses CelebA faces (128 x 128 downsampled to 64 x 64). Nothing may download here, so this
module uses what is on disk instead: square crops of the photographs that scikit-image ships, in
grey levels, and the brain slices of the demo dataset (magnitude), half of each. The photographs are
split by image (no crop of a test photograph is ever seen in training), the brains by the demo
dataset's slabs. Crops are redrawn every epoch (``set_epoch``), like the masks of the MRI data.
"""

from __future__ import annotations

import numpy as np
import torch

from mrtutor import config
from mrtutor.data.demo import demo_dataset, demo_manifest
from mrtutor.data.files import _array_digest
from mrtutor.data.numerics import _rng

# scikit-image's bundled photographs (``skimage.data``; no download), split by image. Not ``moon``: it is a 2x
# pixel-replicated image, which average pooling followed by nearest upsampling restores exactly.
PHOTOGRAPHS = {
    "train": ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "grass", "gravel", "cell", "retina"),
    "val": ("brick", "rocket"),
    "test": ("camera", "chelsea", "coins"),
}

# Crops of the photographs with a smaller standard deviation of grey levels are drawn again.
MIN_CROP_STD = 0.05


def photograph(name: str) -> np.ndarray:
    """scikit-image's photograph ``name`` in grey levels, float32 in [0, 1]."""
    import skimage.color
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        image = skimage.color.rgb2gray(image[..., :3])
    image = image.astype(np.float32)
    return image / image.max()


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` x ``size`` view of ``image`` (H, W) at a position drawn from ``rng`` (top, then left)."""
    if min(image.shape[:2]) < size:
        raise ValueError(f"cannot crop {size} x {size} from an image of shape {image.shape}")
    top = rng.integers(0, image.shape[0] - size + 1)
    left = rng.integers(0, image.shape[1] - size + 1)
    return image[top:top + size, left:left + size]


def brain_slices(split: str, tier: str | None = None) -> np.ndarray:
    """The demo dataset's reference magnitudes of ``split``, (N, H, W) float32 with max 1 each."""
    dataset = demo_dataset(split, tier=tier, progress=False)
    return np.stack([dataset[i]["target"].abs().numpy() for i in range(len(dataset))]).astype(np.float32)


class SuperResolutionDataset(torch.utils.data.Dataset):
    """Pairs ``target`` (H, W) and ``measurement`` = its ``factor`` x ``factor`` block means (H/f, W/f).

    Sample i is brain slice i for i < len(brains); after them come ``len(brains)`` crops of
    ``size`` x ``size`` from the photographs in turn, at positions drawn from (seed, epoch, i) (flat
    crops, of grey-level standard deviation below ``MIN_CROP_STD``, drawn again).
    ``kind`` says which ("brain" or "photograph").
    """

    def __init__(self, brains: np.ndarray, photographs: list[np.ndarray], factor: int = 2, seed: int = 0):
        size = brains.shape[-1]
        if brains.ndim != 3 or brains.shape[-2] != size or size % factor:
            raise ValueError(f"brains must be (N, S, S) with S divisible by {factor}, got {brains.shape}")
        small = [p.shape for p in photographs if min(p.shape) < size]
        if small:
            raise ValueError(f"photographs of shape {small} are smaller than the {size} x {size} crops")
        self.brains, self.photographs = torch.from_numpy(brains), photographs
        self.size, self.factor, self.seed, self.epoch = size, factor, seed, 0

    def __len__(self) -> int:
        return 2 * len(self.brains)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _crop(self, index: int) -> torch.Tensor:
        # A flat crop (a wall, the sky) is upsampled exactly by any interpolation: redraw it.
        image = self.photographs[index % len(self.photographs)]
        rng = _rng(self.seed, self.epoch, index)
        for _ in range(100):
            crop = random_crop(image, self.size, rng)
            if crop.std() >= MIN_CROP_STD:
                break
        return torch.from_numpy(crop.copy())

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples")
        if index < len(self.brains):
            target, kind = self.brains[index], "brain"
        else:
            target, kind = self._crop(index), "photograph"
        f = self.factor
        measurement = target.reshape(self.size // f, f, self.size // f, f).mean((1, 3))
        return {"target": target, "measurement": measurement, "kind": kind}


def superresolution_dataset(split: str, tier: str | None = None, factor: int = 2, seed: int = 0
                            ) -> SuperResolutionDataset:
    """The super-resolution samples of ``split`` ("train", "val" or "test") at the tier's image size."""
    if split not in PHOTOGRAPHS:
        raise ValueError(f"split must be one of {tuple(PHOTOGRAPHS)}, got {split!r}")
    return SuperResolutionDataset(brain_slices(split, tier), [photograph(n) for n in PHOTOGRAPHS[split]], factor, seed)


def superresolution_datasets(args) -> tuple[SuperResolutionDataset, SuperResolutionDataset, str]:
    """``Recipe.data`` of ``npgd_sr``: training and validation sets (validation crops drawn apart),
    and a sha256 of the demo data's hash and the training photographs."""
    tier = args.tier or config.mode()
    train = superresolution_dataset("train", tier, args.factor, args.seed)
    val = superresolution_dataset("val", tier, args.factor, 10_000 + args.seed)
    digest = _array_digest(np.frombuffer(demo_manifest(tier)["sha256"].encode(), np.uint8), *train.photographs)
    return train, val, digest
