"""Where the data live and how their files are read and written: the cache directory
(``data_root``), the error for unusable files (``DataFileError``), atomic writes, digests of files
and arrays, open h5 handles that survive ``DataLoader`` workers, complex arrays as h5 stores them,
and the progress bar of long file jobs (builds, downloads)."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
from pathlib import Path

import h5py
import numpy as np


class DataFileError(ValueError):
    """A data file that cannot be used: missing, truncated, not HDF5, or without a needed key."""


def data_root() -> Path:
    """Where data are cached: ``MRTUTOR_DATA``, else ``$XDG_CACHE_HOME/mrtutor`` or ``~/.cache/mrtutor``."""
    if os.environ.get("MRTUTOR_DATA"):
        return Path(os.environ["MRTUTOR_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mrtutor"


@contextlib.contextmanager
def _atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _array_digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 16 MB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


class _H5Files:
    """Open h5 files, reused per process (h5py handles cannot cross a fork) and capped at
    ``MAX_OPEN`` (the least recently used is closed); read errors name the file and the key."""

    MAX_OPEN = 32

    def __init__(self):
        self._pid, self._open = os.getpid(), collections.OrderedDict()

    def get(self, path: Path, key: str) -> h5py.File:
        if self._pid != os.getpid():
            self._pid, self._open = os.getpid(), collections.OrderedDict()
        if path in self._open:
            self._open.move_to_end(path)
        else:
            self._open[path] = _open_h5(path, key)
            if len(self._open) > self.MAX_OPEN:
                self._open.popitem(last=False)[1].close()
        return self._open[path]

    def read(self, path: Path, key: str, index=()) -> np.ndarray:
        f = self.get(path, key)
        if key not in f:
            raise DataFileError(f"{path} has no key {key!r}; it has {sorted(f.keys())}")
        try:
            return f[key][index]
        except (OSError, ValueError, KeyError) as err:
            raise DataFileError(f"cannot read key {key!r} from {path}: {err} (is the file truncated?)") from err

    def __getstate__(self):
        return {"_pid": None, "_open": collections.OrderedDict()}


def _open_h5(path: Path, key: str) -> h5py.File:
    if not Path(path).is_file():
        raise DataFileError(f"cannot read key {key!r}: {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataFileError(
            f"cannot read key {key!r} from {path}: not a readable HDF5 file, truncated or corrupt ({err})"
        ) from err


def _complex(array: np.ndarray, path, key: str) -> np.ndarray:
    """h5 complex data as numpy complex64: native complex, or a compound of (r, i) / (real, imag)."""
    if np.iscomplexobj(array):
        return array.astype(np.complex64, copy=False)
    names = array.dtype.names or ()
    for re, im in (("r", "i"), ("real", "imag")):
        if re in names and im in names:
            return (array[re] + 1j * array[im]).astype(np.complex64)
    raise DataFileError(f"key {key!r} of {path} must be complex, got dtype {array.dtype}")


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)
