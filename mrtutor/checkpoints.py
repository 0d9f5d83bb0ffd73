"""Trained weights with their records: ``checkpoints/<name>.pt`` beside ``checkpoints/<name>.json``.

The ``.pt`` file is a plain state dict (loaded with ``weights_only=True``). The JSON record says how
to rebuild the model (a builder in ``mrtutor`` and its keyword arguments), how the weights were
made (command, config, dataset hash, git commit, time, device, final metrics) and the sha256 of the
``.pt`` file, which ``load`` checks before trusting the weights. Both files are written atomically.
Only ``python -m mrtutor.train`` writes them.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def checkpoint_dir() -> Path:
    """``MRTUTOR_CHECKPOINTS`` if set, else the repository's ``checkpoints/``."""
    return Path(os.environ.get("MRTUTOR_CHECKPOINTS", CHECKPOINT_DIR))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so no reader sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: Path) -> bytes:
    """``torch.save`` atomically; returns the bytes written (to hash them)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build(builder: str, kwargs: dict) -> nn.Module:
    """Call ``builder`` ("mrtutor.module.function") with ``kwargs``; only mrtutor builders are allowed."""
    module_name, _, func_name = builder.rpartition(".")
    if not module_name.startswith("mrtutor."):
        raise ValueError(f"builder must be a function in mrtutor, got {builder!r}")
    return getattr(importlib.import_module(module_name), func_name)(**kwargs)


def save(name: str, model: nn.Module, builder: str, builder_kwargs: dict, record: dict, directory: Path | None = None) -> Path:
    """Write ``<name>.pt`` (state dict) and ``<name>.json`` (record + builder + sha256)."""
    directory = checkpoint_dir() if directory is None else Path(directory)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    data = atomic_torch_save(state, directory / f"{name}.pt")
    full = {"name": name, "builder": builder, "builder_kwargs": builder_kwargs, **record,
            "weights_file": f"{name}.pt", "weights_bytes": len(data), "sha256": sha256(data)}
    atomic_write_bytes(directory / f"{name}.json", (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
    return directory / f"{name}.pt"


def record(name: str, directory: Path | None = None) -> dict:
    """The JSON record of checkpoint ``name``."""
    directory = checkpoint_dir() if directory is None else Path(directory)
    path = directory / f"{name}.json"
    if not path.exists():
        available = sorted(p.stem for p in directory.glob("*.json"))
        raise FileNotFoundError(f"no checkpoint record {path}; available: {available}")
    return json.loads(path.read_text())


def load(name: str, directory: Path | None = None, device: torch.device | str | None = None) -> nn.Module:
    """The trained model ``name`` in eval mode, after checking its sha256 against the record."""
    directory = checkpoint_dir() if directory is None else Path(directory)
    info = record(name, directory)
    weights = directory / info["weights_file"]
    data = weights.read_bytes()
    if sha256(data) != info["sha256"]:
        raise ValueError(f"{weights}: sha256 {sha256(data)} does not match the record's {info['sha256']}; "
                         "the file is corrupt or was not produced by `python -m mrtutor.train`")
    model = build(info["builder"], info["builder_kwargs"])
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return model.to(device or "cpu").eval()
