"""The base of every dataset (``KspaceDataset``: subclasses give the fully sampled arrays, it draws
and applies the mask) and the masks it accepts: a name from ``mrtutor.masks.MASKS``
(``NamedMask``), a callable ``(shape, seed) -> mask``, or none."""

from __future__ import annotations

from typing import Callable

import torch

from mrtutor.data.numerics import _seed

MaskFn = Callable[[tuple, int], torch.Tensor]


class NamedMask:
    """A ``(shape, seed) -> mask`` callable for the pattern ``name`` of ``mrtutor.masks.MASKS``:
    ``mrtutor.masks.make_mask`` with this ``acceleration`` and ``options``. A class rather than a
    closure so that datasets holding it can be sent to ``DataLoader`` worker processes."""

    def __init__(self, name: str, acceleration: float, **options):
        from mrtutor import masks

        if name not in masks.MASKS:
            raise ValueError(f"mask name must be one of {sorted(masks.MASKS)}, got {name!r}")
        if acceleration is None:
            raise ValueError(f"mask {name!r} needs an acceleration, got acceleration=None")
        self.name, self.acceleration, self.options = name, acceleration, options

    def __call__(self, shape: tuple, seed: int) -> torch.Tensor:
        from mrtutor import masks

        return masks.make_mask(self.name, tuple(shape), self.acceleration, seed, **self.options)

    def __repr__(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"NamedMask({self.name!r}, acceleration={self.acceleration}{options})"


def _resolve_mask_fn(mask_fn, acceleration) -> MaskFn | None:
    if mask_fn is None or callable(mask_fn):
        if acceleration is not None:
            raise ValueError(f"acceleration={acceleration} goes with a mask name; got mask_fn={mask_fn!r}")
        return mask_fn
    if isinstance(mask_fn, str):
        return NamedMask(mask_fn, acceleration)
    raise TypeError(
        f"mask_fn must be None, a mask name or a callable (shape, seed) -> mask, got {type(mask_fn).__name__}"
    )


def _as_mask(mask, shape: tuple[int, int], origin: str) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.is_complex() or tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{origin} must give a real mask of shape {tuple(shape)}, got {mask.dtype} {tuple(mask.shape)}"
        )
    return mask.detach().to(device="cpu", dtype=torch.float32)


class KspaceDataset(torch.utils.data.Dataset):
    """Base class: subclasses provide ``__len__`` and ``fully_sampled_arrays(index)``; this class
    draws the mask and applies it.

    Masks: ``mask_fn`` is ``None`` (fully sampled, unless the subclass has its own masks), a name
    from ``mrtutor.masks.MASKS`` with ``acceleration``, or a callable ``(shape, seed) -> (H, W)
    mask``.
    With ``fixed_mask=True`` every sample gets the mask of seed ``mask_seed``; otherwise sample i
    gets the seed derived from (``mask_seed``, epoch, i), so it is repeatable and
    ``set_epoch(e)`` gives a fresh mask per epoch.
    """

    def __init__(self, mask_fn=None, acceleration: float | None = None, fixed_mask: bool = False, mask_seed: int = 0):
        self.mask_fn = _resolve_mask_fn(mask_fn, acceleration)
        self.fixed_mask = bool(fixed_mask)
        if int(mask_seed) < 0:
            raise ValueError(f"mask_seed must be >= 0, got {mask_seed}")
        self.mask_seed = int(mask_seed)
        self.epoch = 0
        self._fixed_cache: dict[tuple, torch.Tensor] = {}

    def set_epoch(self, epoch: int) -> None:
        """Use the masks of ``epoch`` (per-sample masks only); call it at the start of each epoch."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def mask_seed_for(self, index: int) -> int:
        """The seed of sample ``index``'s mask in the current epoch."""
        if self.fixed_mask:
            return self.mask_seed
        return _seed(self.mask_seed, self.epoch, index)

    def mask_for(self, index: int, shape: tuple[int, int]) -> torch.Tensor:
        """The (H, W) float32 mask of sample ``index`` (ones when there is no mask function)."""
        if self.mask_fn is None:
            return torch.ones(shape, dtype=torch.float32)
        seed = self.mask_seed_for(index)
        if self.fixed_mask and tuple(shape) in self._fixed_cache:
            return self._fixed_cache[tuple(shape)]
        mask = _as_mask(self.mask_fn(tuple(shape), seed), shape, f"mask_fn {self.mask_fn!r}")
        if self.fixed_mask:
            self._fixed_cache[tuple(shape)] = mask
        return mask

    def fully_sampled_arrays(self, index: int) -> dict:
        raise NotImplementedError

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a dataset of {n} samples")
        return index % n

    def fully_sampled(self, index: int) -> dict:
        """Sample ``index`` with the full noisy k-space and a mask of ones."""
        sample = self.fully_sampled_arrays(self._check_index(index))
        sample["mask"] = torch.ones(sample["kspace"].shape[-2:], dtype=torch.float32)
        return sample

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        sample = self.fully_sampled_arrays(index)
        mask = self.mask_for(index, tuple(sample["kspace"].shape[-2:]))
        sample["kspace"] = sample["kspace"] * mask
        sample["mask"] = mask
        return sample
