"""Every chapter's training script runs, and every command it would run is one the training command accepts."""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from mrtutor import fits, train

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "train_scripts").glob("chapter*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_command_of_a_training_script_parses(script, tmp_path, monkeypatch):
    shutil.copytree(REPO / "train_scripts", tmp_path / "train_scripts")
    (tmp_path / "checkpoints").mkdir()
    calls = tmp_path / "calls"
    fake = tmp_path / "python"  # records its arguments instead of training
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(calls))}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "THREADS": "1"}
    subprocess.run(["bash", str(tmp_path / "train_scripts" / script.name)], check=True, env=env, cwd=tmp_path)
    commands = [shlex.split(line) for line in calls.read_text().splitlines()]
    # Checkpoints come from the training command; un-trained networks' stored fits from `python -m mrtutor.fits`.
    assert commands and all(command[:2] in (["-m", "mrtutor.train"], ["-m", "mrtutor.fits"]) for command in commands)
    names = [command[command.index("--name") + 1] if command[1] == "mrtutor.train" else command[2]
             for command in commands]
    assert len(names) == len(set(names)), names
    monkeypatch.setenv("MRTUTOR_MODE", "demo")
    for command in commands:
        if command[1] == "mrtutor.fits":
            assert fits.parse_args(command[2:]).quiet
            continue
        args = train.parse_args(command[2:])
        assert args.threads == 1 and args.quiet
