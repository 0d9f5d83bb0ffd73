"""The training command end to end in the quick tier: a run, its resume, its checkpoint and record."""

import json

import pytest
import torch

from mrtutor import checkpoints, recipes
from mrtutor.modl import LAM_GRID, PD_NOISE_LEVELS, cg_pd_ns, denoising_loss
from mrtutor.mol import mol_lr
from mrtutor.sense import Sense
from mrtutor import train as train_module
from mrtutor.evaluate import saved_for_backward
from mrtutor.train import main, training_memory, training_peak_memory, training_step

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
    # Resuming with other training settings would mix two trainings under one record: refused, and the
    # checkpoint is left as it was.
    for other in (["--clip-grad-norm", "0.05"], ["--lr", "1e-4"], ["--init", "tiny"]):
        with pytest.raises(ValueError, match="other settings") as error:
            main(["modl", "--name", "tiny", "--epochs", "2", *TINY, *where, *other])
        assert other[0].lstrip("-").replace("-", "_") in str(error.value)
    assert json.loads((tmp_path / "ckpt" / "tiny.json").read_text()) == rec


def test_a_run_resumed_on_other_data_says_so_and_its_record_lists_both(dirs, capsys, monkeypatch):
    where, tmp_path = dirs
    main(["modl", "--name", "moved", "--epochs", "1", *TINY, *where])
    first = json.loads((tmp_path / "ckpt" / "moved.json").read_text())
    assert first["dataset_sha256s"] == [first["dataset_sha256"]] and first["devices"] == [first["device"]]
    real = train_module.make_datasets

    def rebuilt_elsewhere(args):  # the same slices, hashed as if built by other library versions
        train_set, val_set, _ = real(args)
        return train_set, val_set, "f" * 64

    monkeypatch.setattr(train_module, "make_datasets", rebuilt_elsewhere)
    main(["modl", "--name", "moved", "--epochs", "2", *TINY, *where])
    assert "resumes on data of sha256 ffffffffffff" in capsys.readouterr().out
    record = json.loads((tmp_path / "ckpt" / "moved.json").read_text())
    assert record["dataset_sha256s"] == [first["dataset_sha256"], "f" * 64] and record["dataset_sha256"] == "f" * 64


def test_an_interrupted_run_resumed_with_more_epochs_stretches_its_schedule(dirs, monkeypatch):
    where, tmp_path = dirs
    real_validate, calls = train_module.validate, []

    def interrupt_after_the_first_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train_module, "validate", interrupt_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        main(["modl", "--name", "long", "--epochs", "3", *TINY, *where])
    monkeypatch.setattr(train_module, "validate", real_validate)
    main(["modl", "--name", "long", "--epochs", "5", *TINY, *where])
    lrs = [h["lr"] for h in json.loads((tmp_path / "ckpt" / "long.json").read_text())["history"]]
    # The cosine goes on falling from where the interrupted run left it and ends at its floor at
    # the new end, instead of following the 3-epoch schedule and rising again after it.
    assert len(lrs) == 5 and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(1e-3 * 0.05)


def test_validate_every_skips_epochs_but_never_the_last(dirs):
    where, tmp_path = dirs
    main(["modl", "--name", "sparse", "--epochs", "5", "--validate-every", "2", *TINY, *where])
    record = json.loads((tmp_path / "ckpt" / "sparse.json").read_text())
    assert [h["epoch"] for h in record["history"] if "val_psnr" in h] == [2, 4, 5]
    assert record["final_metrics"]["val_psnr"] == record["history"][-1]["val_psnr"]
    with pytest.raises(SystemExit):
        main(["modl", "--name", "never", "--validate-every", "0", *TINY, *where])


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


def test_mol_warm_start_from_modl_makes_its_alpha_one_step_modls_iteration(dirs):
    where, tmp_path = dirs
    main(["modl", "--name", "k1", "--epochs", "1", *TINY, *where])
    ckpt_dir = tmp_path / "ckpt"
    modl = checkpoints.load("k1", directory=ckpt_dir)
    # Both solves run to convergence: MOL's CG starts from x, MoDL's from zero, so they agree only once solved.
    modl.cg_iters, modl.cg_tol = 100, 1e-7
    model = mol_lr(layers=3, features=8, residual=True, alpha=1.0, cg_iters=modl.cg_iters, cg_tol=modl.cg_tol).eval()
    train_module.initialise_from(recipes.get("mol_lr"), model, "k1", ckpt_dir)
    assert model.lam.item() == pytest.approx(1 / modl.lam.item(), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 3, 16, 16, dtype=torch.complex64, generator=g)
    maps = maps / torch.linalg.vector_norm(maps, dim=1, keepdim=True)
    op = Sense(maps, (torch.rand(2, 16, 16, generator=g) < 0.4).float())
    atb = op.adjoint(op.forward(torch.randn(2, 16, 16, dtype=torch.complex64, generator=g)))
    with torch.no_grad():
        expected = modl.data_consistency(op, atb, modl.denoisers[0](atb))
        assert torch.allclose(model.step(atb, op, atb), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    with pytest.raises(ValueError, match="MOLNet.*residual=True|load_denoiser needs residual=True"):
        train_module.initialise_from(recipes.get("mol_lr"), mol_lr(layers=3, features=8), "k1", ckpt_dir)


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


def test_cg_pd_ns_trains_denoisers_on_noise_and_tunes_lam(dirs):
    where, tmp_path = dirs
    main(["cg_pd_ns", "--name", "pd", "--epochs", "1", "--tier", "quick", "--features", "8", "--layers", "3",
          "--quiet", *where])
    rec = json.loads((tmp_path / "ckpt" / "pd.json").read_text())
    scores = rec["lam_tuning"]["validation_psnr"]
    assert len(scores) == len(LAM_GRID)
    assert rec["lam_tuning"]["lam"] == pytest.approx(float(max(scores, key=scores.get)), rel=1e-3)
    model = checkpoints.load("pd", directory=tmp_path / "ckpt")
    assert model.lam.item() == pytest.approx(rec["lam_tuning"]["lam"], rel=1e-5)
    assert len(model.denoisers) == len(PD_NOISE_LEVELS) and "log_lam" not in dict(model.named_parameters())
    first, last = (d.noise[0].weight for d in (model.denoisers[0], model.denoisers[-1]))
    assert not torch.allclose(first, last)  # ten denoisers, each trained on its own noise level


def test_denoising_loss_trains_each_denoiser_at_its_own_noise_level():
    torch.manual_seed(0)
    model = cg_pd_ns(layers=2, features=4, noise_levels=(0.5, 0.01))
    target = torch.randn(2, 8, 8, dtype=torch.complex64)
    for denoiser in model.denoisers:  # identity denoisers: the loss is the noise power, sigma^2 each
        torch.nn.init.zeros_(denoiser.noise[-1].weight)
    loss = denoising_loss(model.train(), {"target": target})
    assert loss.item() == pytest.approx(0.5**2 + 0.01**2, rel=0.15)


def test_bf16_training_records_its_precision_and_evaluates_in_full_precision(dirs):
    where, tmp_path = dirs
    main(["modl", "--name", "bf", "--epochs", "1", "--precision", "bf16", *TINY, *where])
    rec = json.loads((tmp_path / "ckpt" / "bf.json").read_text())
    assert rec["config"]["precision"] == "bf16" and rec["final_metrics"]["val_psnr"] > 10
    model = checkpoints.load("bf", directory=tmp_path / "ckpt")
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("recipe", ["mol_lr", "mol_sn"])
def test_mol_trains_with_fixed_point_statistics_per_epoch(dirs, recipe):
    """MOL's record carries the curves of the paper's Fig. 2: fixed-point iterations, converged
    share and the Lipschitz estimate of H, for training and validation."""
    where, tmp_path = dirs
    main([recipe, "--name", recipe, "--epochs", "1", "--tier", "quick", "--features", "4", "--layers", "3",
          "--train-slices", "4", "--max-iter", "30", "--quiet", *where])
    rec = json.loads((tmp_path / "ckpt" / f"{recipe}.json").read_text())
    entry = rec["history"][0]
    assert 1 <= entry["train_forward_iterations"] <= 30 and 1 <= entry["val_forward_iterations"] <= 30
    assert 0 <= entry["val_forward_converged"] <= 1 and entry["train_backward_iterations"] >= 1
    assert entry["train_lipschitz"] > 0
    assert rec["config"]["lam"] is None and "lam" not in checkpoints.record(recipe, tmp_path / "ckpt")["builder_kwargs"]
    model = checkpoints.load(recipe, directory=tmp_path / "ckpt")
    assert model.variant == recipe.removeprefix("mol_")


def test_mol_step_backpropagates_its_two_terms_apart_with_the_gradient_of_their_sum(monkeypatch):
    """eq. 8's Lipschitz term is built after the error's backward pass: the same gradient as one
    backward pass of the sum, while the step never holds both graphs."""
    from mrtutor import data

    monkeypatch.setenv("MRTUTOR_MODE", "quick")
    batch = next(iter(torch.utils.data.DataLoader(
        data.demo_dataset("train", mask_fn="variable_density_2d", acceleration=4, progress=False), batch_size=2)))
    recipe = recipes.get("mol_lr")
    grads = []
    for together in (False, True):
        torch.manual_seed(0)
        model = mol_lr(layers=3, features=8, alpha=1.0, cg_iters=30).train()
        optimiser = torch.optim.SGD(model.parameters(), lr=0.0)  # a step that leaves the weights as they are
        torch.manual_seed(1)  # the same random start of the Lipschitz ascent in both runs
        if together:
            (recipe.loss(model, batch) + recipe.penalty(model, batch)).backward()
        else:
            assert training_step(recipe, model, batch, optimiser) > 0
        grads.append([p.grad.clone() for p in model.parameters()])
    for apart, together in zip(*grads):
        assert torch.allclose(apart, together, rtol=1e-4, atol=1e-7)

    model = mol_lr(layers=3, features=8, alpha=1.0, cg_iters=30).train()
    loss_bytes = saved_for_backward(lambda: recipe.loss(model, batch))
    penalty_bytes = saved_for_backward(lambda: recipe.penalty(model, batch))
    assert training_memory(recipe, model, batch) == max(loss_bytes, penalty_bytes) > 0
    # Built together, both graphs are held at once; they share no more than the weights and the fixed point.
    together = saved_for_backward(lambda: recipe.loss(model, batch) + recipe.penalty(model, batch))
    shared_at_most = sum(p.numel() * p.element_size() for p in model.parameters()) + model.last_fixed_point.nbytes
    assert together >= loss_bytes + penalty_bytes - shared_at_most > max(loss_bytes, penalty_bytes)


def test_clipping_caps_the_step_s_gradient_norm_and_leaves_small_gradients_alone(dirs):
    model = torch.nn.Linear(3, 1, bias=False)
    recipe = recipes.Recipe("clip", torch.nn.Linear, "", loss=lambda m, b: 100 * m(b["x"]).sum())
    batch = {"x": torch.ones(2, 3), "kspace": torch.zeros(1)}
    seen = []
    optimiser = torch.optim.SGD(model.parameters(), lr=0.0)
    optimiser.step = lambda: seen.append(model.weight.grad.norm().item())
    for clip in (1.0, 1e6, None):
        training_step(recipe, model, batch, optimiser, clip_grad_norm=clip)
    raw = 200 * 3 ** 0.5  # d/dw of 100 * sum over 2 rows of w . (1, 1, 1)
    assert seen == pytest.approx([1.0, raw, raw])
    where, _ = dirs
    with pytest.raises(SystemExit):
        main(["modl", "--name", "x", "--clip-grad-norm", "0", *TINY, *where])


def test_a_zero_weight_penalty_is_recorded_but_builds_no_graph():
    from mrtutor.mol import mol_sn

    model = mol_sn(layers=3, features=8).train()
    x = torch.randn(2, 16, 16, dtype=torch.complex64)
    model.last_fixed_point = x
    penalty = recipes.get("mol_sn").penalty(model, {})
    assert penalty.item() == 0 and not penalty.requires_grad and model.last_lipschitz.shape == (2,)


def test_mol_refuses_bf16(dirs):
    where, _ = dirs
    with pytest.raises(ValueError, match="bf16 does not suit mol_lr"):
        main(["mol_lr", "--name", "x", "--epochs", "1", "--tier", "quick", "--precision", "bf16", "--quiet", *where])


def test_schedule_ends_at_its_floor_when_the_last_batch_is_dropped(dirs):
    where, tmp_path = dirs
    # 10 slices in batches of 4: two steps per epoch (the loader drops the incomplete third batch)
    main(["modl", "--name", "odd", "--epochs", "2", "--train-slices", "10", *TINY, *where])
    lrs = [h["lr"] for h in json.loads((tmp_path / "ckpt" / "odd.json").read_text())["history"]]
    assert lrs[-1] == pytest.approx(1e-3 * 0.05)
    with pytest.raises(ValueError, match="make no full batch"):
        main(["modl", "--name", "tiny_set", "--epochs", "1", "--train-slices", "3", *TINY, *where])


def test_a_training_subset_is_drawn_across_the_split_and_nested_in_larger_ones(dirs):
    def subset(n):
        args = train_module.parse_args(["modl", "--name", "x", "--tier", "quick", "--train-slices", str(n)])
        return train_module.make_datasets(args)[0].indices

    full = len(train_module.make_datasets(train_module.parse_args(["modl", "--name", "x", "--tier", "quick"]))[0])
    small, large = subset(4), subset(full // 2)
    assert len(set(small)) == 4 and set(small) <= set(large) <= set(range(full))
    # Not the first slices (one volume's neighbours): the draw reaches past the first half of the split.
    assert max(small) >= full // 2


def _write_modl_layout(path, n_train=6, n_test=2, h=16, w=12, coils=2):
    """A tiny file in the layout of the MoDL dataset.hdf5 (trn/tst Org, Csm, Mask)."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for prefix, n in (("trn", n_train), ("tst", n_test)):
            images = rng.standard_normal((n, h, w)) + 1j * rng.standard_normal((n, h, w))
            maps = rng.standard_normal((n, coils, h, w)) + 1j * rng.standard_normal((n, coils, h, w))
            maps /= np.sqrt((np.abs(maps) ** 2).sum(1, keepdims=True))
            f.create_dataset(prefix + "Org", data=images.astype(np.complex64))
            f.create_dataset(prefix + "Csm", data=maps.astype(np.complex64))
            f.create_dataset(prefix + "Mask", data=(rng.random((n, h, w)) < 0.3).astype(np.int8))


def test_paper_tier_trains_and_evaluates_on_the_modl_data_layout(dirs, capsys):
    from mrtutor import data, evaluate

    where, tmp_path = dirs
    path = tmp_path / "dataset.hdf5"
    _write_modl_layout(path)
    main(["modl", "--name", "paper", "--modl-data", str(path), "--acceleration", "4", "--epochs", "1",
          "--batch-size", "2", *TINY, *where])
    record = json.loads((tmp_path / "ckpt" / "paper.json").read_text())
    assert record["dataset_sha256"] == data.file_digest(path)
    assert record["config"]["modl_data"] == str(path)
    # Five training slices make two batches of 2; the sixth validates.
    assert len(record["history"]) == 1
    stats = evaluate.main(["--modl-data", str(path), "--checkpoints", "paper", "--checkpoint-dir", str(tmp_path / "ckpt"),
                           "--accelerations", "4", "6", "--output", str(tmp_path / "table.json")])
    assert set(stats) == {"4x", "6x"}
    assert set(stats["4x"]["psnr"]) == {"zero-filled", "CG-SENSE", "TV", "paper"}
    assert json.loads((tmp_path / "table.json").read_text()) == stats
    assert "paper" in capsys.readouterr().out


def test_modl_data_split_keeps_the_last_tenth_for_validation(tmp_path):
    path = tmp_path / "dataset.hdf5"
    _write_modl_layout(path, n_train=20)
    args = train_module.parse_args(["modl", "--name", "x", "--modl-data", str(path), "--acceleration", "4"])
    train_set, val_set, digest = train_module.make_datasets(args)
    assert list(train_set.indices) == list(range(18)) and list(val_set.indices) == [18, 19]
    # Validation masks are drawn with their own seed, and do not change when training moves on an epoch.
    before = val_set[0]["mask"].clone()
    train_module.set_epoch(train_set, 3)
    assert torch.equal(val_set[0]["mask"], before)


@pytest.mark.parametrize("fixed", [False, True])
def test_fixed_masks_keep_each_slice_s_mask_across_epochs(dirs, monkeypatch, fixed):
    where, _ = dirs
    real_step, seen = train_module.training_step, []

    def record_masks(recipe, model, batch, *args, **kwargs):
        seen.append(sorted(tuple(mask.flatten().tolist()) for mask in batch["mask"]))
        return real_step(recipe, model, batch, *args, **kwargs)

    monkeypatch.setattr(train_module, "training_step", record_masks)
    options = ["--fixed-masks"] if fixed else []
    main(["modl", "--name", f"masks_{fixed}", "--epochs", "2", "--train-slices", "4", *options, *TINY, *where])
    first, second = seen  # one batch of the four slices per epoch, in shuffled order
    assert len(set(first)) == 4  # one mask per slice, not one for all
    assert (first == second) == fixed


def test_training_peak_memory_holds_the_graph_and_grows_with_the_unrolled_depth(monkeypatch):
    from mrtutor import data
    from mrtutor.modl import modl

    monkeypatch.setenv("MRTUTOR_MODE", "quick")
    batch = next(iter(torch.utils.data.DataLoader(
        data.demo_dataset("train", mask_fn="variable_density_2d", acceleration=4, progress=False), batch_size=1)))
    recipe, peaks = recipes.get("modl"), {}
    for k in (1, 3):
        torch.manual_seed(0)
        model = modl(iterations=k, features=8).train()
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        peaks[k] = training_peak_memory(recipe, model, batch)
        # the step allocates every saved tensor except the weights, which exist before it
        assert peaks[k] >= training_memory(recipe, model, batch) - weights > 0
    assert peaks[3] > 1.5 * peaks[1]  # measured: 1.9x (the gradients and Adam do not grow with K)


def test_git_commit_without_a_repository(monkeypatch):
    """A copy of the tree without git records the declared commit, marked as declared, else 'unknown'."""
    def no_git(*args, **kwargs):
        raise OSError("git: not found")

    monkeypatch.setattr(train_module.subprocess, "run", no_git)
    monkeypatch.delenv("MRTUTOR_GIT_COMMIT", raising=False)
    assert train_module.git_commit() == "unknown"
    monkeypatch.setenv("MRTUTOR_GIT_COMMIT", "0123abc")
    assert train_module.git_commit() == "0123abc (declared: a copy without git)"
