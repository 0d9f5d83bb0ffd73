"""The training command end to end in the quick tier: a run, its resume, its checkpoint and record."""

import json

import pytest
import torch

from mrtutor import checkpoints
from mrtutor.train import main

TINY = ["--tier", "quick", "--features", "8", "--layers", "3", "--iterations", "1", "--quiet"]


@pytest.fixture()
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("MRTUTOR_DATA", str(tmp_path / "data"))
    return ["--run-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt")], tmp_path


def test_train_resume_checkpoint_and_record(dirs, capsys):
    where, tmp_path = dirs
    main(["modl", "--name", "tiny", "--epochs", "1", *TINY, *where])
    first = json.loads((tmp_path / "ckpt" / "tiny.json").read_text())
    assert len(first["history"]) == 1
    # Asking for more epochs resumes from the saved state instead of starting again.
    main(["modl", "--name", "tiny", "--epochs", "2", *TINY, *where])
    assert "resuming tiny at epoch 1 of 2" in capsys.readouterr().out
    rec = json.loads((tmp_path / "ckpt" / "tiny.json").read_text())
    assert [h["epoch"] for h in rec["history"]] == [1, 2]
    assert rec["history"][0] == first["history"][0]
    for key in ("command", "config", "dataset_sha256", "git_commit", "training_seconds", "device", "final_metrics", "sha256"):
        assert key in rec
    model = checkpoints.load("tiny", directory=tmp_path / "ckpt")
    assert not model.training and model.iterations == 1


def test_initialise_k10_from_k1(dirs):
    where, tmp_path = dirs
    main(["modl", "--name", "k1", "--epochs", "1", *TINY, *where])
    k10 = TINY[:TINY.index("--iterations")] + ["--iterations", "2", "--quiet"]
    main(["cg_et_ns", "--name", "ns", "--epochs", "1", "--init", "k1", *k10, *where,
          "--lr", "1e-12"])  # a vanishing step keeps the copied weights visible
    ckpt_dir = tmp_path / "ckpt"
    k1 = checkpoints.load("k1", directory=ckpt_dir)
    ns = checkpoints.load("ns", directory=ckpt_dir)
    for denoiser in ns.denoisers:
        for (name, a), b in zip(denoiser.state_dict().items(), k1.denoisers[0].state_dict().values()):
            if "running" not in name and "num_batches" not in name:
                assert torch.allclose(a, b, atol=1e-6), name


def test_checkpoint_with_wrong_sha256_is_rejected(dirs):
    where, tmp_path = dirs
    main(["modl", "--name", "tiny", "--epochs", "1", *TINY, *where])
    weights = tmp_path / "ckpt" / "tiny.pt"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 .* does not match the record"):
        checkpoints.load("tiny", directory=tmp_path / "ckpt")


def test_missing_checkpoint_lists_the_available_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint record"):
        checkpoints.load("nope", directory=tmp_path)


def test_builder_must_live_in_mrtutor():
    with pytest.raises(ValueError, match="builder must be a function in mrtutor"):
        checkpoints.build("os.system", {})
