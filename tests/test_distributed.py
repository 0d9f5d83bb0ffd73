"""Training on several processes with torchrun (DistributedDataParallel over gloo on CPU): the
processes take the steps of one process with the same global batch, and a killed run resumes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil  # a dependency of ipykernel
import pytest
import torch

from mrtutor import checkpoints

TOY = Path(__file__).with_name("train_toy.py")
OPTIONS = ["toy", "--tier", "quick", "--device", "cpu", "--threads", "1", "--quiet"]


def command(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, str(TOY)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", str(TOY)]


@pytest.fixture()
def where(tmp_path):
    """The shared options that put runs and checkpoints in tmp_path, and the environment to run in."""
    env = {**os.environ, "MRTUTOR_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    return ["--run-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt")], env, tmp_path


def run(processes: int, args: list[str], where) -> subprocess.CompletedProcess:
    options, env, _ = where
    done = subprocess.run(command(processes) + OPTIONS + args + options, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def weights(tmp_path: Path, name: str) -> dict:
    return torch.load(tmp_path / "ckpt" / f"{name}.pt", weights_only=True)


def test_two_processes_take_the_steps_of_one_with_the_same_global_batch(where):
    tmp_path = where[2]
    two_steps = ["--epochs", "1", "--train-slices", "8", "--batch-size", "4"]  # 8 slices, global batches of 4
    run(1, ["--name", "one", *two_steps], where)
    run(2, ["--name", "two", *two_steps], where)
    one, two = weights(tmp_path, "one"), weights(tmp_path, "two")
    for key in one:
        # Measured 9e-10 after two Adam steps of 1e-3 and 5e-5: float sums in another order. The tolerance
        # is a ten-thousandth of one step; a process that skipped its share or averaged wrongly is off by ~1e-3.
        assert torch.allclose(one[key], two[key], rtol=0, atol=1e-7), key
    record = json.loads((tmp_path / "ckpt" / "two.json").read_text())
    assert record["processes"] == 2 and record["device"].startswith("2 processes")
    assert record["history"][0]["train_loss"] == pytest.approx(
        json.loads((tmp_path / "ckpt" / "one.json").read_text())["history"][0]["train_loss"], rel=1e-6)


def test_a_torchrun_run_killed_after_an_epoch_resumes_where_it_stopped(where):
    options, env, tmp_path = where
    args = ["--name", "killed", "--epochs", "30", "--train-slices", "8"]
    state = tmp_path / "runs" / "killed" / "state.pt"
    process = subprocess.Popen(command(2) + OPTIONS + args + options, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # torchrun and its workers, as a crash or the end of a session would
    launcher = psutil.Process(process.pid)
    for worker in launcher.children(recursive=True):
        worker.kill()
    launcher.kill()
    process.wait()
    assert state.exists(), "the run wrote no state before it was killed"
    saved = torch.load(state, weights_only=False)
    assert 1 <= saved["epoch"] < 30, saved["epoch"]
    assert not (tmp_path / "ckpt" / "killed.pt").exists()

    done = run(2, args, where)
    assert f"resuming killed at epoch {saved['epoch']} of 30" in done.stdout
    record = json.loads((tmp_path / "ckpt" / "killed.json").read_text())
    assert [h["epoch"] for h in record["history"]] == list(range(1, 31))
    assert record["history"][:saved["epoch"]] == saved["history"]

    # The same run never killed, on one process: the same weights.
    run(1, ["--name", "whole", "--epochs", "30", "--train-slices", "8"], where)
    whole, resumed = weights(tmp_path, "whole"), weights(tmp_path, "killed")
    for key in whole:
        assert torch.allclose(whole[key], resumed[key], rtol=0, atol=1e-6), key


def test_the_global_batch_must_split_evenly_over_the_processes(where):
    options, env, _ = where
    done = subprocess.run(command(2) + OPTIONS + ["--name", "odd", "--epochs", "1", "--batch-size", "3"] + options,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "must split evenly over 2 processes" in done.stderr


def test_a_reader_s_own_recipe_needs_no_change_to_train(where):
    """The toy recipe lives in tests/toy_recipe.py; its checkpoint loads once that module is imported."""
    import toy_recipe

    tmp_path = where[2]
    run(1, ["--name", "mine", "--epochs", "1", "--train-slices", "4"], where)
    model = checkpoints.load("mine", directory=tmp_path / "ckpt")
    assert isinstance(model, toy_recipe.ZeroFilledPlusCNN)
    assert checkpoints.record("mine", tmp_path / "ckpt")["builder"] == "toy_recipe.toy"
