"""The MoDL brain dataset (``dataset.hdf5``, Aggarwal et al. 2019) as distributed: ``ModlDataset``,
and the one place where MoDL's uncentred masks become centred (``_modl_mask_to_centred``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mrtutor.data.datasets import KspaceDataset
from mrtutor.data.files import DataFileError, _complex, _H5Files
from mrtutor.data.numerics import _fft2c, _rng


def _modl_mask_to_centred(mask: np.ndarray) -> np.ndarray:
    """The one place where MoDL's masks (DC at [0, 0], for its uncentred ``np.fft.fft2``) become
    centred (DC in the middle): an fftshift over the last two axes."""
    return np.fft.fftshift(mask, axes=(-2, -1))


class ModlDataset(KspaceDataset):
    """The MoDL brain dataset (``dataset.hdf5``, Aggarwal et al. 2019) as distributed.

    Layout, as the MoDL code reads it (``supportingFunctions.getData``, h5py, row-major; the int8
    mask dtype is from the PyTorch port ``bo-10000/MoDL_PyTorch``; not checked against the file
    itself, which was not downloaded here): ``trnOrg`` (360, 256, 232) complex64 images, ``trnCsm``
    (360, 12, 256, 232) complex64 ESPIRiT maps, ``trnMask`` (360, 256, 232) int8 6x masks; ``tst*``
    the same for 164 test slices. Any mask dtype works (non-zero = sampled). MoDL's operator is
    ``fft2(csm * x) / sqrt(nrow * ncol)``, uncentred, so its masks have DC at [0, 0]: they are
    shifted to the centred convention in ``_modl_mask_to_centred`` and nowhere else.

    The file has no k-space: as in MoDL, it is simulated from the image and maps (centred
    orthonormal FFT), after scaling the image to max |x| = 1, with complex noise of standard
    deviation ``sigma`` (E|n|^2 = sigma^2; MoDL used 0.01), fixed per slice by ``noise_seed``.

    Args:
        path: ``dataset.hdf5``.
        split: ``"train"`` (trn*) or ``"test"`` (tst*).
        mask_fn: ``None`` uses the file's masks; else see ``KspaceDataset``.
        sigma: noise standard deviation on max-1 images.
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        mask_fn=None,
        acceleration: float | None = None,
        fixed_mask: bool = False,
        mask_seed: int = 0,
        sigma: float = 0.01,
        noise_seed: int = 0,
    ):
        super().__init__(mask_fn, acceleration, fixed_mask, mask_seed)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.path, self.split, self.sigma, self.noise_seed = Path(path), split, float(sigma), int(noise_seed)
        self.prefix = "trn" if split == "train" else "tst"
        self._h5 = _H5Files()
        shapes = {}
        for name in ("Org", "Csm", "Mask"):
            key = self.prefix + name
            f = self._h5.get(self.path, key)
            if key not in f:
                raise DataFileError(f"{self.path} has no key {key!r}; it has {sorted(f.keys())}")
            shapes[name] = f[key].shape
        org, csm, mask = shapes["Org"], shapes["Csm"], shapes["Mask"]
        if len(org) != 3 or len(csm) != 4 or csm[0] != org[0] or csm[2:] != org[1:] or mask not in (org, org[1:]):
            raise DataFileError(
                f"{self.path}: inconsistent shapes {self.prefix}Org {org}, {self.prefix}Csm {csm}, "
                f"{self.prefix}Mask {mask}; expected (N, H, W), (N, C, H, W) and (N, H, W)"
            )
        self._length = org[0]

    def __len__(self) -> int:
        return self._length

    def mask_for(self, index: int, shape: tuple[int, int]) -> torch.Tensor:
        if self.mask_fn is not None:
            return super().mask_for(index, shape)
        key = self.prefix + "Mask"
        mask = self._h5.read(self.path, key, index if self._h5.get(self.path, key)[key].ndim == 3 else ())
        return torch.from_numpy((_modl_mask_to_centred(mask) != 0).astype(np.float32))

    def fully_sampled_arrays(self, index: int) -> dict:
        org = _complex(self._h5.read(self.path, self.prefix + "Org", index), self.path, self.prefix + "Org")
        csm = _complex(self._h5.read(self.path, self.prefix + "Csm", index), self.path, self.prefix + "Csm")
        peak = float(np.abs(org).max())
        if not peak > 0:
            raise DataFileError(f"{self.path}: {self.prefix}Org[{index}] is all zero")
        target = org / peak
        noise = _rng(self.noise_seed, 1 if self.split == "train" else 2, index).standard_normal((2, *csm.shape))
        kspace = _fft2c(csm * target) + (self.sigma / np.sqrt(2)) * (noise[0] + 1j * noise[1])
        return {
            "kspace": torch.from_numpy(kspace.astype(np.complex64)),
            "maps": torch.from_numpy(csm),
            "target": torch.from_numpy(target.astype(np.complex64)),
            "scale": 1.0 / peak,
            "subject": f"modl-{self.split}",
            "slice_id": f"{self.prefix}:{index}",
            "fname": self.path.name,
            "slice": int(index),
        }
