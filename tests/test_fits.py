"""The stored fits of un-trained networks (mrtutor.fits) in the quick tier with a tiny ConvDecoder: the
command, its record, the checked loader, resuming after an interruption, and its refusals."""

import json

import pytest
import torch

from mrtutor import data, espirit, fits, metrics, untrained

TINY = ["--tier", "quick", "--layers", "3", "--channels", "8", "--iterations", "5", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def data_home(tmp_path_factory):
    """One quick-tier demo dataset for the whole module (its first build takes about 10 s)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MRTUTOR_DATA", str(tmp_path_factory.mktemp("mrtutor_data")))
        yield


@pytest.fixture()
def dirs(tmp_path):
    return ["--run-dir", str(tmp_path / "runs"), "--fits-dir", str(tmp_path / "fits")], tmp_path / "fits"


@pytest.fixture()
def fit_calls(monkeypatch):
    """The seeds of every ``untrained.fit`` call from here on."""
    real, calls = untrained.fit, []

    def counted(*args, **kwargs):
        calls.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(untrained, "fit", counted)
    return calls


def test_the_command_stores_the_fits_with_their_record(dirs):
    where, directory = dirs
    fits.main(["tiny", "--slices", "2", *TINY, *where])
    record = fits.record("tiny", directory)
    for key in ("command", "config", "dataset_sha256", "git_commit", "device", "host", "fit_seconds", "final_loss",
                "slice_ids", "fits_file", "sha256"):
        assert key in record
    assert record["command"].startswith("python -m mrtutor.fits tiny --slices 2")
    assert record["config"]["mask_seed"] == 20_000 and record["config"]["sizes"] == {"layers": 3, "channels": 8}
    assert record["dataset_sha256"] == data.demo_manifest("quick")["sha256"]
    assert len(record["final_loss"]) == 2 and len(record["final_loss"][0]) == 1
    stored = fits.load("tiny", directory)
    assert stored["reconstruction"].shape == (2, 48, 48) and stored["reconstruction"].dtype == torch.float32
    assert stored["index"].tolist() == [0, 1] and stored["loss_iteration"].tolist() == list(range(5))
    assert stored["loss"].shape == (2, 1, 5) and stored["best_iteration"].shape == (2, 1)
    assert stored["seconds"].shape == (2,) and record["final_loss"][1] == [stored["loss"][1, 0, -1].item()]
    # The stored image is the fit of the test split's slice under the mask of chapter 4's test seed.
    sample = data.demo_dataset("test", tier="quick", mask_fn="column_random", acceleration=4, mask_seed=20_000)[1]
    assert record["slice_ids"][1] == sample["slice_id"]
    assert torch.equal(stored["reconstruction"][1], untrained.fit(sample["kspace"], sample["mask"], iterations=5,
                                                                   layers=3, channels=8))


def test_a_changed_file_or_a_missing_record_is_refused(dirs):
    where, directory = dirs
    fits.main(["tiny", "--slices", "1", *TINY, *where])
    path = directory / "tiny.pt"
    changed = bytearray(path.read_bytes())
    changed[len(changed) // 2] ^= 1
    path.write_bytes(bytes(changed))
    with pytest.raises(ValueError, match="does not match the record"):
        fits.load("tiny", directory)
    with pytest.raises(FileNotFoundError, match=r"no fits record .*other\.json; available: \['tiny'\]"):
        fits.load("other", directory)


def test_an_interrupted_run_continues_after_its_last_fitted_slice(dirs, tmp_path, fit_calls, monkeypatch, capsys):
    where, directory = dirs
    counted = untrained.fit

    def interrupt_the_second(*args, **kwargs):
        if len(fit_calls) == 1:
            raise KeyboardInterrupt
        return counted(*args, **kwargs)

    monkeypatch.setattr(untrained, "fit", interrupt_the_second)
    with pytest.raises(KeyboardInterrupt):
        fits.main(["tiny", "--slices", "2", *TINY, *where])
    assert not (directory / "tiny.pt").exists() and (tmp_path / "runs" / "tiny" / "state.pt").exists()
    monkeypatch.setattr(untrained, "fit", counted)
    fits.main(["tiny", "--slices", "2", *TINY, *where])
    assert len(fit_calls) == 2 and "resuming tiny after 1 fitted slices" in capsys.readouterr().out
    # The same images as a run that was never interrupted.
    fits.main(["whole", "--slices", "2", *TINY, "--run-dir", str(tmp_path / "other"), "--fits-dir", str(directory)])
    assert torch.equal(fits.load("tiny", directory)["reconstruction"], fits.load("whole", directory)["reconstruction"])
    # More slices fit only the new ones; fewer store the first ones and fit nothing.
    del fit_calls[:]
    fits.main(["tiny", "--slices", "3", *TINY, *where])
    fits.main(["tiny", "--slices", "1", *TINY, *where])
    assert len(fit_calls) == 1 and fits.load("tiny", directory)["index"].tolist() == [0]
    assert fits.record("tiny", directory)["config"]["slices"] == 1


def test_coil_maps_several_runs_and_long_histories(dirs, fit_calls, monkeypatch):
    where, directory = dirs
    monkeypatch.setattr(fits, "HISTORY_POINTS", 3)
    command = ["sm", "--slices", "1", "--maps", "--runs", "2", "--seed", "7", "--in-size", "4", "4", *TINY, *where]
    fits.main(command)
    fits.main(command)  # all fitted already: nothing to do
    stored = fits.load("sm", directory)
    assert fit_calls == [7, 8]
    assert stored["reconstruction"].dtype == torch.complex64 and stored["reconstruction"].shape == (1, 48, 48)
    assert stored["loss_iteration"].tolist() == [0, 2, 4] and stored["loss"].shape == (1, 2, 3)
    assert stored["best_iteration"].shape == (1, 2) and len(fits.record("sm", directory)["final_loss"][0]) == 2
    # Each run's image is kept beside their mean, and each run's PSNR curve.
    assert stored["run_reconstruction"].shape == (1, 2, 48, 48)
    torch.testing.assert_close(stored["run_reconstruction"].mean(dim=1), stored["reconstruction"])
    assert stored["psnr_iteration"].tolist() == [0, 1, 2, 3, 4] and stored["psnr"].shape == (1, 2, 5)


def test_the_psnr_curve_is_that_of_the_image_at_each_recorded_step(dirs, monkeypatch):
    where, directory = dirs
    monkeypatch.setattr(fits, "PSNR_POINTS", 2)
    fits.main(["curve", "--slices", "1", *TINY, *where])
    stored = fits.load("curve", directory)
    assert stored["psnr_iteration"].tolist() == [0, 2, 4] and "run_reconstruction" not in stored
    sample = data.demo_dataset("test", tier="quick", mask_fn="column_random", acceleration=4, mask_seed=20_000)[0]
    seen = {}
    untrained.fit(sample["kspace"], sample["mask"], iterations=5, layers=3, channels=8, monitor=seen.__setitem__,
                  monitor_every=2)
    expected = [metrics.psnr(seen[i], sample["target"]).item() for i in (0, 2, 4)]
    torch.testing.assert_close(stored["psnr"][0, 0], torch.tensor(expected, dtype=torch.float64))


def test_the_out_of_distribution_images_are_fitted_under_their_own_seed(dirs):
    where, directory = dirs
    fits.main(["ood", "--slices", "2", "--split", "ood", *TINY, *where])
    record = fits.record("ood", directory)
    assert record["slice_ids"] == list(fits.OOD_IMAGES) and record["config"]["mask_seed"] == 30_000
    sample = data.ood_samples(fits.OOD_IMAGES, tier="quick", mask_fn="column_random", acceleration=4, seed=30_000)[1]
    assert torch.equal(fits.load("ood", directory)["reconstruction"][1],
                       untrained.fit(sample["kspace"], sample["mask"], iterations=5, layers=3, channels=8))


def test_bad_arguments_and_changed_settings_are_refused(dirs, fit_calls, capsys):
    where, directory = dirs
    for bad in (["--net", "unet"], ["--iterations", "0"], ["--mask", "spiral"], ["--split", "holdout"],
                ["--in-size", "4"]):
        with pytest.raises(SystemExit):
            fits.main(["bad", "--slices", "1", *TINY, *where, *bad])
    with pytest.raises(SystemExit):
        fits.main(["../bad", "--slices", "1", *TINY, *where])
    assert "name must be letters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fits.main(["bad", *TINY, *where])
    assert "--slices" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--slices 9 is more than the 8 slices of the quick tier's test split"):
        fits.main(["bad", "--slices", "9", *TINY, *where])
    with pytest.raises(ValueError, match="convdecoder takes the sizes .* unknown \\['skip_channels'\\]"):
        fits.main(["bad", "--slices", "1", "--skip-channels", "2", *TINY, *where])
    fits.main(["tiny", "--slices", "1", *TINY, *where])
    for other in (["--lr", "0.01"], ["--maps"], ["--acceleration", "8"]):
        with pytest.raises(ValueError, match="other settings") as error:
            fits.main(["tiny", "--slices", "1", *TINY, *where, *other])
        assert other[0].lstrip("-") in str(error.value)
    # --restart starts again with the new settings.
    del fit_calls[:]
    fits.main(["tiny", "--slices", "1", "--lr", "0.01", "--restart", *TINY, *where])
    assert len(fit_calls) == 1 and fits.record("tiny", directory)["config"]["lr"] == 0.01


def test_espirit_fits_through_maps_estimated_from_the_measurements(dirs):
    where, directory = dirs
    fits.main(["esp", "--slices", "1", "--maps", "--espirit", *TINY, *where])
    assert fits.record("esp", directory)["config"]["espirit"] is True
    sample = data.demo_dataset("test", tier="quick", mask_fn="column_random", acceleration=4, mask_seed=20_000)[0]
    estimated = espirit.maps(sample["kspace"], sample["mask"])
    assert not torch.allclose(estimated, sample["maps"], atol=1e-2)  # not the simulation's own maps
    expected = untrained.fit(sample["kspace"], sample["mask"], estimated, iterations=5, layers=3, channels=8)
    assert torch.equal(fits.load("esp", directory)["reconstruction"][0], expected)
    with pytest.raises(SystemExit):
        fits.parse_args(["esp", "--slices", "1", "--espirit"])
    with pytest.raises(SystemExit):
        fits.parse_args(["esp", "--slices", "1", "--maps", "--espirit", "--espirit-crop", "1.5"])
    fits.main(["esp_crop", "--slices", "1", "--maps", "--espirit", "--espirit-crop", "0", *TINY, *where])
    uncropped = espirit.maps(sample["kspace"], sample["mask"], crop=0.0)
    assert not torch.equal(uncropped, estimated)  # the default crop zeroes the maps somewhere
    assert fits.record("esp_crop", directory)["config"]["espirit_crop"] == 0.0
    assert torch.equal(fits.load("esp_crop", directory)["reconstruction"][0],
                       untrained.fit(sample["kspace"], sample["mask"], uncropped, iterations=5, layers=3, channels=8))
