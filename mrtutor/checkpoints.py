"""Trained weights with their records: ``checkpoints/<name>.pt`` beside ``checkpoints/<name>.json``.

The ``.pt`` file is a plain state dict (loaded with ``weights_only=True``). The JSON record says how
to rebuild the model (a registered recipe's builder and its keyword arguments), how the weights were
made (command, config, dataset hash, git commit, time, device, final metrics) and the sha256 of the
``.pt`` file, which ``load`` checks before trusting the weights. Both files are written atomically.
Only ``python -m mrtutor.train`` writes them.

Checkpoints travel (students exchange them), and whoever sends a record sends its weights and their
sha256 too, so the hash proves nothing about intent. What protects the reader is that loading runs
no code but a builder registered in ``mrtutor.recipes``, called with that recipe's declared options,
each checked for its type and range before the call.

``python -m mrtutor.checkpoints`` writes ``checkpoints/README.md``, the table of every record.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
from pathlib import Path

import torch
from torch import nn

from mrtutor import recipes

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def checkpoint_dir() -> Path:
    """``MRTUTOR_CHECKPOINTS`` if set, else the repository's ``checkpoints/``."""
    return Path(os.environ.get("MRTUTOR_CHECKPOINTS", CHECKPOINT_DIR))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so no reader sees half a file.

    The file gets the permissions a plain ``open`` would give it (0666 less the umask), not ``mkstemp``'s
    owner-only 0600: checkpoints and results in a course's shared folder must be readable by its students.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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


def build(builder: str, kwargs: dict, recipe: str | None = None) -> nn.Module:
    """The model of registered builder ``builder`` (of recipe ``recipe``, when given) with ``kwargs``.

    Anything else is refused before a call: a function that no recipe registers, an option the
    recipe does not declare, a value of the wrong type or out of range.
    """
    if not isinstance(kwargs, dict):
        raise ValueError(f"builder_kwargs of {builder} must be a dict of options, got {type(kwargs).__name__}")
    return recipes.for_builder(builder, recipe).build(kwargs, origin=f"builder_kwargs of {builder}")


def save(name: str, model: nn.Module, builder: str, builder_kwargs: dict, record: dict, directory: Path | None = None) -> Path:
    """Write ``<name>.pt`` (state dict) and ``<name>.json`` (record + builder + sha256)."""
    directory = checkpoint_dir() if directory is None else Path(directory)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    data = atomic_torch_save(state, directory / f"{name}.pt")
    full = {"name": name, "builder": builder, "builder_kwargs": builder_kwargs, **record,
            "weights_file": f"{name}.pt", "weights_bytes": len(data), "sha256": sha256(data)}
    atomic_write_bytes(directory / f"{name}.json", (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
    return directory / f"{name}.pt"


def read_record(directory: Path, name: str, what: str = "checkpoint") -> dict:
    """The JSON record ``name`` in ``directory``; a missing one is named with the records that exist."""
    path = Path(directory) / f"{name}.json"
    if not path.exists():
        available = sorted(p.stem for p in Path(directory).glob("*.json"))
        raise FileNotFoundError(f"no {what} record {path}; available: {available}")
    return json.loads(path.read_text())


def verified_file(directory: Path, name: str, info: dict, key: str, command: str) -> bytes:
    """The bytes of the file that record ``info`` names under ``key``, which must be ``<name>.pt`` beside the
    record, after checking them against the record's sha256 (``command`` is what writes such files)."""
    if info.get(key) != f"{name}.pt":
        raise ValueError(f"record {name}.json names {key} {info.get(key)!r}; a record's file is {name}.pt beside it")
    path = Path(directory) / info[key]
    data = path.read_bytes()
    if sha256(data) != info["sha256"]:
        raise ValueError(f"{path}: sha256 {sha256(data)} does not match the record's {info['sha256']}; "
                         f"the file is corrupt or was not produced by `{command}`")
    return data


def record(name: str, directory: Path | None = None) -> dict:
    """The JSON record of checkpoint ``name``."""
    return read_record(checkpoint_dir() if directory is None else Path(directory), name)


def load(name: str, directory: Path | None = None, device: torch.device | str | None = None) -> nn.Module:
    """The trained model ``name`` in eval mode, after checking its sha256 against the record."""
    directory = checkpoint_dir() if directory is None else Path(directory)
    info = record(name, directory)
    data = verified_file(directory, name, info, "weights_file", "python -m mrtutor.train")
    model = build(info["builder"], info["builder_kwargs"], info.get("recipe"))
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return model.to(device or "cpu").eval()


README_HEADER = """# Checkpoints

Trained weights of the demo tier, each `<name>.pt` beside its record `<name>.json`. Every one was
written by `python -m mrtutor.train`; the command below, run again from the same commit
(`git_commit` in the record), trains it again (add `--tier demo` when `MRTUTOR_MODE` is set
otherwise). The record also holds the whole config, the dataset's sha256, the learning curves and
the sha256 of the weights, which `mrtutor.checkpoints.load` checks.

This file is generated by `python -m mrtutor.checkpoints` (`make checkpoints/README.md`); a test
checks that it is current.

| name | recipe | command (after `python -m mrtutor.train`) | epochs | training time | device | validation PSNR |
|---|---|---|---|---|---|---|
"""


def setting(info: dict) -> str:
    """What a record's validation score was measured on: "at 6x" for MRI, "on inpainting from 50 %
    of the samples" (or "on deblurring", "on ct with 144 views", "..., noise 0.02") for the
    sparse-recovery networks of chapter 5."""
    recovery = info.get("sparse_recovery")
    if recovery is None:
        return f"at {info['config']['acceleration']:g}x"
    problem = recovery["problem"]
    text = f"on {problem}"
    if problem in ("inpainting", "fourier"):
        text += f" from {100 * recovery['fraction']:g} % of the samples"
    elif problem == "ct":
        text += f" with {recovery['views']} views"
    return text + (f", noise {recovery['noise']:g}" if recovery["noise"] else "")


def catalogue(directory: Path | None = None) -> str:
    """``README.md`` of a checkpoint directory: one row per record, sorted by name."""
    directory = checkpoint_dir() if directory is None else Path(directory)
    rows = []
    for path in sorted(directory.glob("*.json")):
        info = json.loads(path.read_text())
        command = info["command"].removeprefix("python -m mrtutor.train ")
        config = info["config"]
        psnr = info["final_metrics"].get("val_psnr")
        score = "" if psnr is None else f"{psnr:.2f} dB {setting(info)}"
        minutes = info["training_seconds"] / 60
        rows.append(f"| `{info['name']}` | `{info['recipe']}` | `{command}` | {len(info['history'])} | "
                    f"{minutes:.0f} min | {info['device']} | {score} |")
    return README_HEADER + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mrtutor.checkpoints",
                                     description="Write README.md, the table of every checkpoint record.")
    parser.add_argument("--directory", default=None, help="default: checkpoints/ (or MRTUTOR_CHECKPOINTS)")
    args = parser.parse_args(argv)
    directory = checkpoint_dir() if args.directory is None else Path(args.directory)
    atomic_write_bytes(directory / "README.md", catalogue(directory).encode())
    print(f"wrote {directory / 'README.md'}")


if __name__ == "__main__":
    main()
