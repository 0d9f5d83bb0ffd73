"""The recipe registry: the training command built from it, settings refused before anything is
written, the records' commands that reproduce their runs, and checkpoints that cannot run code."""

import json
import shlex
from pathlib import Path

import pytest
import torch

from mrtutor import checkpoints, recipes, train
from mrtutor.modl import modl

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


def test_help_lists_every_recipe_and_each_recipe_its_own_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main(["--help"])
    assert exit_.value.code == 0
    listing = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    for name, recipe in recipes.registry().items():
        assert name in listing and recipe.doc in listing
    with pytest.raises(SystemExit):
        train.main(["mol_lr", "--help"])
    mol_help = capsys.readouterr().out
    with pytest.raises(SystemExit):
        train.main(["modl", "--help"])
    modl_help = capsys.readouterr().out
    assert "--lipschitz-weight" in mol_help and "--lipschitz-weight" not in modl_help
    assert "--output-scale" in modl_help and "--epochs" in modl_help and "--epochs" in mol_help
    # An option of another recipe is an error, not silently ignored; so is an abbreviation.
    for wrong in (["modl", "--name", "x", "--lipschitz-weight", "1"], ["modl", "--name", "x", "--iter", "3"]):
        with pytest.raises(SystemExit):
            train.parse_args(wrong)


@pytest.mark.parametrize("bad", [
    ["--epochs", "-1"], ["--epochs", "0"], ["--batch-size", "0"], ["--lr", "0"], ["--lr", "-1e-3"],
    ["--iterations", "0"], ["--cg-iters", "-2"], ["--layers", "0"], ["--validate-every", "0"],
    ["--train-slices", "0"], ["--lam", "0"], ["--clip-grad-norm", "0"], ["--epochs", "two"],
])
def test_non_positive_settings_fail_before_anything_is_written(tmp_path, capsys, bad):
    where = ["--run-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt")]
    with pytest.raises(SystemExit):
        train.main(["modl", "--name", "x", "--tier", "quick", *where, *bad])
    assert bad[0] in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("bad", [["--max-iter", "0"], ["--m", "1.5"], ["--anderson", "-1"], ["--tol", "-1e-4"]])
def test_mol_iteration_settings_are_checked_too(bad):
    with pytest.raises(SystemExit):
        train.parse_args(["mol_lr", "--name", "x", *bad])


@pytest.mark.parametrize("path", sorted(CHECKPOINTS.glob("*.json")), ids=lambda p: p.stem)
def test_each_record_s_command_gives_its_run_again(path, monkeypatch):
    """Long runs are reproducible from their records alone: the command re-parses to the recorded
    recipe, builder options and training settings."""
    record = json.loads(path.read_text())
    monkeypatch.setenv("MRTUTOR_MODE", record["config"]["tier"])
    argv = shlex.split(record["command"])
    assert argv[:3] == ["python", "-m", "mrtutor.train"]
    args = train.parse_args(argv[3:])
    recipe = recipes.get(args.recipe)
    assert args.recipe == record["recipe"] and recipe.builder_path == record["builder"]
    assert train.build_model(recipe, args)[1] == record["builder_kwargs"]
    asked = vars(args)
    # The recipe's own options are compared above, as the builder receives them; older records also list
    # every other recipe's options, which do not touch this run.
    options = {option.name for other in recipes.registry().values() for option in other.options}
    for key, value in record["config"].items():
        if key not in train.RESUMABLE_CHANGES and key not in options:
            assert asked[key] == value, (key, asked[key], value)


@pytest.fixture()
def sent(tmp_path):
    """A checkpoint as a student would send it: weights, record and the record's sha256, all consistent."""
    model = modl(iterations=1, layers=2, features=4)
    checkpoints.save("sent", model, "mrtutor.modl.modl", {"iterations": 1, "layers": 2, "features": 4},
                     {"recipe": "modl"}, directory=tmp_path)
    return tmp_path


def rewrite(directory: Path, **changes) -> None:
    path = directory / "sent.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_sent_checkpoint_loads(sent):
    assert checkpoints.load("sent", directory=sent).iterations == 1


def test_a_record_naming_a_function_that_writes_files_is_refused(sent):
    target = sent / "written_by_loading"
    rewrite(sent, builder="mrtutor.checkpoints.atomic_torch_save",
            builder_kwargs={"obj": "anything", "path": str(target)}, recipe=None)
    with pytest.raises(ValueError, match="not a registered model builder"):
        checkpoints.load("sent", directory=sent)
    assert not target.exists()


def test_a_record_naming_the_downloader_is_refused(sent, monkeypatch):
    import urllib.request

    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: calls.append(a))
    rewrite(sent, builder="mrtutor.data.download", recipe=None,
            builder_kwargs={"url": "http://127.0.0.1:9/x", "dest": str(sent / "sent.pt")})
    with pytest.raises(ValueError, match="not a registered model builder"):
        checkpoints.load("sent", directory=sent)
    assert calls == [] and not (sent / "sent.pt.part").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"iterations": 1, "evil": 1}, r"\['evil'\] are not options of recipe 'modl'"),
    ({"iterations": "1"}, "option 'iterations' must be int, got str"),
    ({"layers": True}, "option 'layers' must be int, got bool"),
    ({"lam": "0.05"}, "option 'lam' must be float, got str"),
    ({"iterations": -1}, "option 'iterations' must be > 0"),
])
def test_undeclared_options_and_wrong_types_are_refused_before_a_call(sent, kwargs, message):
    # The builder itself would accept layers=True (a bool is an int) and fail on the others with a TypeError.
    rewrite(sent, builder_kwargs=kwargs)
    with pytest.raises(ValueError, match=message):
        checkpoints.load("sent", directory=sent)


def test_a_builder_of_another_recipe_and_a_weights_path_elsewhere_are_refused(sent):
    rewrite(sent, recipe="mol_lr")
    with pytest.raises(ValueError, match="builder 'mrtutor.modl.modl' of recipe 'mol_lr' is not a registered"):
        checkpoints.load("sent", directory=sent)
    rewrite(sent, recipe="modl", weights_file="../elsewhere.pt")
    with pytest.raises(ValueError, match="weights_file '../elsewhere.pt'"):
        checkpoints.load("sent", directory=sent)


def test_options_check_their_types_and_ranges():
    iterations = recipes.Option("iterations", int, "", bound="> 0")
    assert iterations.check(3, "here") == 3
    for bad in (0, 2.5, True, "3", None):
        with pytest.raises(ValueError, match="here: option 'iterations'"):
            iterations.check(bad, "here")
    lam = recipes.Option("lam", float, "", bound="> 0")
    assert lam.check(1, "here") == 1.0 and isinstance(lam.check(1, "here"), float)
    assert recipes.Option("alpha", float, "", optional=True).check(None, "here") is None
    flag = recipes.Option("residual", bool, "")
    assert flag.check(True, "here") is True
    with pytest.raises(ValueError):
        flag.check(1, "here")
    with pytest.raises(ValueError, match="bound must be one of"):
        recipes.Option("x", int, "", bound="> 1")


def test_a_second_recipe_under_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="a recipe named 'modl' is registered already"):
        recipes.register(recipes.Recipe("modl", torch.nn.Identity, "another"))
    with pytest.raises(KeyError, match="no recipe 'nope'"):
        recipes.get("nope")


def test_checkpoints_readme_is_current():
    assert (CHECKPOINTS / "README.md").read_text() == checkpoints.catalogue(CHECKPOINTS), \
        "checkpoints/README.md is stale: run `python -m mrtutor.checkpoints` (make checkpoints/README.md)"


def test_atomic_writes_leave_no_temporary_file_and_give_the_umask_s_permissions(tmp_path):
    import os

    previous = os.umask(0o022)
    try:
        checkpoints.atomic_write_bytes(tmp_path / "sub" / "a.json", b"{}")
        os.umask(0o077)
        checkpoints.atomic_write_bytes(tmp_path / "b.json", b"{}")
    finally:
        os.umask(previous)
    # readable by a course's students under the usual umask, as a plain open() would make it; private under 077
    assert (tmp_path / "sub" / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sub" / "a.json").read_bytes() == b"{}"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.json", "b.json"]
