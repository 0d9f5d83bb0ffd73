"""fastMRI h5 files as distributed (multi-coil or single-coil), and the demo files that share their
layout: ``FastMRIDataset``, with ESPIRiT maps computed once per file and cached
(``espirit_maps_file``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np
import torch

from mrtutor.data.datasets import KspaceDataset
from mrtutor.data.files import DataFileError, _atomic_path, _complex, _H5Files, _open_h5, data_root
from mrtutor.data.numerics import _ifft2c, _rng
from mrtutor.espirit import maps as estimate_maps


class FastMRIDataset(KspaceDataset):
    """Slices of fastMRI h5 files as distributed (multi-coil or single-coil), or of the demo files.

    Multi-coil ``kspace`` is (slices, coils, H, W), single-coil (slices, H, W) (then C = 1 with unit
    maps). Maps: the file's ``maps`` when present (demo files), else ESPIRiT maps from sigpy
    (``mrtutor.espirit.maps``), computed for the whole file on first use and cached in
    ``maps_cache`` (default ``data_root() / "espirit"``). Target: the file's ``target`` when present,
    else the coil combination ``sum_c conj(S_c) ifft2c(y_c)`` of the fully sampled noisy k-space (a
    complex reference at the k-space grid, including the readout oversampling). Both are scaled so
    that max |target| = 1. Files with a ``mask`` key (fastMRI test/challenge data, already
    undersampled, no reference) are refused.

    Args:
        files: h5 paths, or one directory (all ``*.h5`` in it, sorted).
        mask_fn, acceleration, fixed_mask, mask_seed: see ``KspaceDataset``.
        maps_cache: directory for the ESPIRiT maps.
        espirit: keyword arguments for ``mrtutor.espirit.maps`` (default calib_width 24, thresh 0.02, crop 0.95).
        order_seed: ``None`` keeps the slices in file order; an integer applies a fixed random
            permutation, so that any prefix (e.g. ``Subset(ds, range(n))``) mixes all files.
    """

    def __init__(
        self,
        files: Iterable[str | Path] | str | Path,
        mask_fn=None,
        acceleration: float | None = None,
        fixed_mask: bool = False,
        mask_seed: int = 0,
        maps_cache: str | Path | None = None,
        espirit: dict | None = None,
        order_seed: int | None = None,
    ):
        super().__init__(mask_fn, acceleration, fixed_mask, mask_seed)
        if isinstance(files, (str, Path)) and Path(files).is_dir():
            files = sorted(Path(files).glob("*.h5"))
        elif isinstance(files, (str, Path)):
            files = [files]
        self.files = [Path(f) for f in files]
        if not self.files:
            raise ValueError("files is empty: expected at least one h5 file")
        self.maps_cache = Path(maps_cache) if maps_cache is not None else data_root() / "espirit"
        self.espirit = {"calib_width": 24, "thresh": 0.02, "crop": 0.95, **(espirit or {})}
        self._h5 = _H5Files()
        self.index: list[tuple[int, int]] = []
        for n, path in enumerate(self.files):
            f = self._h5.get(path, "kspace")
            if "kspace" not in f:
                raise DataFileError(f"{path} has no key 'kspace'; it has {sorted(f.keys())}")
            if "mask" in f:
                raise DataFileError(
                    f"{path} has a 'mask' key: undersampled fastMRI test data have no reference; use train/val files"
                )
            if f["kspace"].ndim not in (3, 4):
                raise DataFileError(
                    f"key 'kspace' of {path} must be (slices, H, W) or (slices, coils, H, W), got {f['kspace'].shape}"
                )
            self.index += [(n, s) for s in range(f["kspace"].shape[0])]
        if order_seed is not None:
            self.index = [self.index[i] for i in _rng(order_seed).permutation(len(self.index))]

    def __len__(self) -> int:
        return len(self.index)

    def _maps(self, path: Path, f: h5py.File, slice_: int, kspace: np.ndarray) -> np.ndarray:
        if "maps" in f:
            return _complex(self._h5.read(path, "maps", slice_), path, "maps")
        if f["kspace"].ndim == 3:  # single coil
            return np.ones_like(kspace)
        cached = espirit_maps_file(path, self.maps_cache, **self.espirit)
        return self._h5.read(cached, "maps", slice_)

    def fully_sampled_arrays(self, index: int) -> dict:
        file_index, slice_ = self.index[index]
        path = self.files[file_index]
        f = self._h5.get(path, "kspace")
        kspace = _complex(self._h5.read(path, "kspace", slice_), path, "kspace")
        if kspace.ndim == 2:
            kspace = kspace[None]
        maps = self._maps(path, f, slice_, kspace)
        if maps.shape != kspace.shape:
            raise DataFileError(f"maps of {path} slice {slice_} have shape {maps.shape}, k-space {kspace.shape}")
        if "target" in f:
            target = _complex(self._h5.read(path, "target", slice_), path, "target")
        else:
            target = (maps.conj() * _ifft2c(kspace)).sum(axis=0).astype(np.complex64)
        peak = float(np.abs(target).max())
        if not peak > 0:
            raise DataFileError(f"{path} slice {slice_}: the reference image is all zero")
        file_scale = float(self._h5.read(path, "scale", slice_)) if "scale" in f else 1.0
        subject = f.attrs.get("patient_id", path.stem)
        subject = subject.decode() if isinstance(subject, bytes) else str(subject)
        if "slice_position_mm" in f:
            position = float(self._h5.read(path, "slice_position_mm", slice_))
            slice_id = f"{subject}:{f.attrs.get('orientation', '')}:{position:+.1f}mm"
        else:
            slice_id = f"{path.name}:{slice_}"
        return {
            "kspace": torch.from_numpy(kspace / peak),
            "maps": torch.from_numpy(np.ascontiguousarray(maps, dtype=np.complex64)),
            "target": torch.from_numpy(target / peak),
            "scale": file_scale / peak,
            "subject": subject,
            "slice_id": slice_id,
            "fname": path.name,
            "slice": int(slice_),
        }


def espirit_maps_file(path: str | Path, cache_dir: str | Path | None = None, **espirit) -> Path:
    """The h5 file holding ESPIRiT maps ``maps`` (slices, C, H, W) complex64 of a multi-coil
    fastMRI file, computed on first call (``mrtutor.espirit.maps`` per slice, on the fully sampled
    k-space) and written atomically into ``cache_dir`` (default ``data_root() / "espirit"``).
    The cache key hashes the file's path, size and modification time and the ESPIRiT settings."""
    path = Path(path)
    cache_dir = Path(cache_dir) if cache_dir is not None else data_root() / "espirit"
    stat = path.stat()
    key = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, espirit], sort_keys=True)
    cached = cache_dir / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.h5"
    if cached.is_file():
        return cached
    with _open_h5(path, "kspace") as source, _atomic_path(cached) as tmp, h5py.File(tmp, "w") as out:
        if "kspace" not in source:
            raise DataFileError(f"{path} has no key 'kspace'; it has {sorted(source.keys())}")
        kspace = source["kspace"]
        maps = out.create_dataset("maps", shape=kspace.shape, dtype=np.complex64)
        for s in range(kspace.shape[0]):  # slice by slice: a whole file can be gigabytes
            maps[s] = estimate_maps(torch.from_numpy(_complex(kspace[s], path, "kspace")), **espirit).numpy()
    return cached
