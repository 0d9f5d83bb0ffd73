"""The single-coil version of any k-space dataset: one coil with a unit map, measuring the Fourier
coefficients of the dataset's complex reference image, with complex Gaussian noise.

This is the acquisition of Neural PGD's MRI experiment (Mardani et al. 2018, Sec. 5.2, eq. 15):
y = M (F x + v). The image is the dataset's ``target`` (max magnitude 1), the mask the dataset's
own (so fresh masks per epoch and fixed masks work as for the multi-coil data), and the noise has
E|v|^2 = ``noise_sigma``^2 per k-space sample, fixed per slice by ``noise_seed``.
"""

from __future__ import annotations

import torch

from mrtutor.data.numerics import _seed
from mrtutor.fft import fft2c


class SingleCoil(torch.utils.data.Dataset):
    """Samples of ``dataset`` with ``kspace`` (1, H, W) = mask * (F target + noise) and ``maps`` ones."""

    def __init__(self, dataset, noise_sigma: float, noise_seed: int = 0):
        if not noise_sigma >= 0:
            raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
        if int(noise_seed) < 0:
            raise ValueError(f"noise_seed must be >= 0, got {noise_seed}")
        self.dataset, self.noise_sigma, self.noise_seed = dataset, float(noise_sigma), int(noise_seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """The masks of ``epoch`` (see ``KspaceDataset.set_epoch``), through any ``Subset`` in between."""
        inner = self.dataset
        while isinstance(inner, torch.utils.data.Subset):
            inner = inner.dataset
        inner.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        target = sample["target"]
        generator = torch.Generator().manual_seed(_seed(self.noise_seed, index % len(self)))
        noise = torch.randn((2, *target.shape), generator=generator) * (self.noise_sigma / 2**0.5)
        kspace = fft2c(target) + torch.complex(noise[0], noise[1])
        sample["kspace"] = (kspace * sample["mask"])[None]
        sample["maps"] = torch.ones_like(sample["kspace"])
        return sample
