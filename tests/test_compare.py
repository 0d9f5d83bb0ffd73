"""The comparison harness (mrtutor.compare) in the quick tier: the protocol's determinism, identical inputs for
every method, the bootstrap, a reader's method through --method, its refusals, and resuming."""

import json
import math
import sys
import textwrap

import pytest
import torch

from mrtutor import checkpoints, compare, masks
from mrtutor.data.numerics import _seed
from mrtutor.sense import Sense
from mrtutor.sgp_training import mri_sgp

QUICK = {"tier": "quick", "device": "cpu", "progress": False}


def zero_filled(kspace, maps, mask):
    return Sense(maps, mask).adjoint(kspace)


@pytest.fixture()
def plugin_module(tmp_path, monkeypatch):
    """A module ``toy_methods`` on sys.path with a toy method and the broken ones the harness must refuse."""
    (tmp_path / "toy_methods.py").write_text(textwrap.dedent("""
        import torch
        from mrtutor.sense import Sense

        def toy(kspace, maps, mask):
            return 0.9 * Sense(maps, mask).adjoint(kspace)

        def two_arguments(kspace, maps):
            return kspace[:, 0]

        def coil_images(kspace, maps, mask):
            return kspace

        def nan(kspace, maps, mask):
            return torch.full(kspace.shape[:1] + kspace.shape[2:], float("nan"), dtype=kspace.dtype)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "toy_methods"
    sys.modules.pop("toy_methods", None)


def test_the_protocol_is_deterministic_and_keeps_one_acquisition_per_slice():
    vd4 = compare.protocol_samples(compare.SETTINGS["vd4"], "quick", slices=2, ood_images=["camera"])
    again = compare.protocol_samples(compare.SETTINGS["vd4"], "quick", slices=2, ood_images=["camera"])
    col8 = compare.protocol_samples(compare.SETTINGS["col8"], "quick", slices=2, ood_images=["camera"])
    assert [s["split"] for s in vd4] == ["test", "test", "ood"]
    for a, b, c in zip(vd4, again, col8):
        for key in ("kspace", "maps", "mask", "target"):
            assert torch.equal(a[key], b[key]), key
        # one simulated acquisition: where both settings sample, they measured the same (noisy) k-space
        both = a["mask"] * c["mask"]
        assert both.sum() > 0 and torch.equal(a["kspace"] * both, c["kspace"] * both)
        assert torch.equal(a["maps"], c["maps"]) and torch.equal(a["target"], c["target"])
    # the recorded seeds: test slice i gets the mask of seed (MASK_SEEDS["test"], epoch 0, i)
    shape = tuple(vd4[1]["mask"].shape)
    expected = masks.variable_density_2d(shape, 4.0, _seed(compare.MASK_SEEDS["test"], 0, 1))
    assert torch.equal(vd4[1]["mask"], expected)
    assert masks.acceleration(col8[0]["mask"]) == pytest.approx(8, rel=0.1)


def test_every_method_gets_the_same_masks_and_noise(tmp_path):
    seen = {"a": [], "b": []}

    def spy(name):
        def method(kspace, maps, mask):
            seen[name].append((kspace.clone(), maps.clone(), mask.clone()))
            return zero_filled(kspace, maps, mask)
        return method

    compare.run(tmp_path, settings=["vd6"], slices=2, only=[], plugins={"a": spy("a"), "b": spy("b")},
                tuning="stored", ood_images=["camera"], **QUICK)
    # first the peak-memory run on the first sample, then two test slices and one OOD image, one per call
    assert len(seen["a"]) == len(seen["b"]) == 4
    samples = compare.protocol_samples(compare.SETTINGS["vd6"], "quick", 2, ["camera"])
    for got_a, got_b, sample in zip(seen["a"], seen["b"], samples[:1] + samples):
        for x, y, key in zip(got_a, got_b, ("kspace", "maps", "mask")):
            assert torch.equal(x, y) and torch.equal(x[0], sample[key]), key


def test_the_bootstrap_interval_covers_a_known_mean():
    generator = torch.Generator().manual_seed(1)
    covered = 0
    for trial in range(200):  # synthetic PSNRs around a true mean of 30 dB
        scores = 30 + torch.randn(40, generator=generator, dtype=torch.float64)
        interval = compare.bootstrap_mean(scores, seed=trial)
        assert interval["low"] < interval["mean"] < interval["high"]
        covered += interval["low"] <= 30 <= interval["high"]
    assert 0.88 <= covered / 200 <= 0.99
    assert compare.bootstrap_mean(scores) == compare.bootstrap_mean(scores)  # fixed seed, same interval
    paired = compare.paired_difference([3.0, 2.0, 1.0, 5.0], [1.0, 2.0, 2.0, 1.0])
    assert paired["mean"] == pytest.approx(1.25) and paired["won"] == 0.5 and paired["n"] == 4


def test_a_plugged_in_method_gets_a_full_row(tmp_path, plugin_module):
    results = compare.main(["--tier", "quick", "--settings", "vd4", "col8", "--slices", "2", "--only", "zero-filled",
                            "neural PGD", "--method", f"{plugin_module}:toy", "--tuning", "stored", "--ood-images",
                            "camera", "--output", str(tmp_path), "--device", "cpu", "--quiet"])
    name = f"{plugin_module}:toy"
    for key in ("vd4", "col8"):
        for split, count in (("test", 2), ("ood", 1)):
            entry = results["summary"][split][key][name]
            assert entry["slices"] == count and entry["off_setting"] == []
            for metric in compare.SCORES:
                assert math.isfinite(entry[metric]["mean"]) and entry[metric]["low"] <= entry[metric]["high"]
                versus = entry["vs_best_classical"][metric]
                assert versus["baseline"] == "zero-filled" and 0 <= versus["won"] <= 1
        # 0.9 A^H y is zero filling scaled: the same SSIM within rounding is not asserted, PSNR must differ
        assert results["cells"][name][key]["psnr"] != results["cells"]["zero-filled"][key]["psnr"]
        assert results["summary"]["test"][key]["neural PGD"]["off_setting"]  # trained single-coil, radial, at 5x
    assert results["methods"][name]["kind"] == "plug-in" and "peak_memory_bytes" in results["methods"][name]
    assert results["methods"]["neural PGD"]["parameters"] > 0 and results["methods"]["neural PGD"]["training_seconds"] > 0
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["protocol"]["mask_seeds"] == {"test": 20_000, "val": 10_000, "ood": 30_000}
    assert written["git_commit"] and written["protocol"]["test_slices"] == results["protocol"]["test_slices"]
    table = (tmp_path / "table.md").read_text()
    assert f"| {name} | 2 |" in table and "| neural PGD † |" in table
    for figure in ("quality_vs_time.png", "quality_vs_acceleration.png", "image_grid.png"):
        assert (tmp_path / figure).read_bytes().startswith(b"\x89PNG")


def test_bad_methods_get_clear_errors(tmp_path, plugin_module):
    with pytest.raises(ValueError, match="unknown method.*no such method"):
        compare.run(tmp_path, only=["no such method"], **QUICK)
    with pytest.raises(ValueError, match="expected package.module:function"):
        compare.load_plugin("toy_methods.toy")
    with pytest.raises(ValueError, match="cannot import module"):
        compare.load_plugin("no_such_module_here:toy")
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        compare.load_plugin(f"{plugin_module}:missing")
    with pytest.raises(ValueError, match=r"signature \(kspace, maps\).*expected fn\(kspace, maps, mask\)"):
        compare.load_plugin(f"{plugin_module}:two_arguments")
    with pytest.raises(ValueError, match="not a function"):
        compare.check_method(42, "answer")
    options = dict(settings=["vd4"], slices=1, only=[], tuning="stored", ood_images=[], **QUICK)
    with pytest.raises(ValueError, match=r"coil_images' returned shape \(1, 4, 48, 48\); expected \(1, 48, 48\)"):
        compare.run(tmp_path / "shape", plugins={"coil_images": compare.load_plugin(f"{plugin_module}:coil_images")},
                    **options)
    with pytest.raises(ValueError, match="'nan' returned NaN"):
        compare.run(tmp_path / "nan", plugins={"nan": compare.load_plugin(f"{plugin_module}:nan")}, **options)
    with pytest.raises(ValueError, match="settings must be"):
        compare.run(tmp_path, settings=["vd5"], **QUICK)
    with pytest.raises(SystemExit, match="error: --method 'toy_methods.toy': expected package.module:function"):
        compare.main(["--tier", "quick", "--method", "toy_methods.toy", "--output", str(tmp_path)])


def test_a_rerun_skips_the_finished_cells(tmp_path, monkeypatch):
    calls, tunings = [], []
    real_tune = compare.tune_weights
    monkeypatch.setattr(compare, "tune_weights", lambda *args: tunings.append(args[0]) or real_tune(*args))

    def counted(kspace, maps, mask):
        calls.append(1)
        return zero_filled(kspace, maps, mask)

    options = dict(slices=1, only=["zero-filled", "CG-SENSE"], plugins={"counted": counted}, ood_images=[], **QUICK)
    first = compare.run(tmp_path, settings=["vd4"], **options)
    assert len(calls) == 2 and len(tunings) == 1  # peak memory, one slice; tuned once for the two classical methods
    assert first["cells"]["CG-SENSE"]["vd4"]["weight"] == first["tuning"]["vd4"]["cg_sense"]["lam"]
    again = compare.run(tmp_path, settings=["vd4"], **options)
    assert len(calls) == 2 and len(tunings) == 1  # nothing recomputed, the tuning reused
    assert again["cells"]["CG-SENSE"]["vd4"]["psnr"] == first["cells"]["CG-SENSE"]["vd4"]["psnr"]
    compare.run(tmp_path, settings=["vd4", "col4"], **options)
    assert len(calls) == 3 and len(tunings) == 2  # only the new setting (peak memory is measured once)
    with pytest.raises(ValueError, match=r"another protocol.*test_slices"):
        compare.run(tmp_path, settings=["vd4"], **{**options, "slices": 2})


def test_a_fresh_run_reproduces_every_score(tmp_path):
    # Two runs from scratch, one folder each: the same scores to 1e-4 dB (PSNR) and 1e-6 (SSIM, VIF); only timings differ.
    options = dict(settings=["vd6"], slices=2, only=["zero-filled", "CG-SENSE", "TV", "MoDL", "ConvDecoder"],
                   ood_images=["camera"], **QUICK)
    first = compare.run(tmp_path / "first", **options)
    second = compare.run(tmp_path / "second", **options)
    for name in options["only"]:
        a, b = first["cells"][name]["vd6"], second["cells"][name]["vd6"]
        assert a["slice_ids"] == b["slice_ids"] and len(a["psnr"]) == len(a["slice_ids"]) >= 2, name
        for metric, tolerance in (("psnr", 1e-4), ("ssim", 1e-6), ("vif", 1e-6)):
            assert max(abs(x - y) for x, y in zip(a[metric], b[metric])) <= tolerance, (name, metric)


def test_missing_checkpoints_are_skipped_with_a_note(tmp_path, capsys):
    specs, skipped = compare.registry("quick", checkpoint_dir=tmp_path)
    assert set(skipped) == set(compare.CHECKPOINTS)
    assert {"zero-filled", "CG-SENSE", "TV", "l1-wavelet", "ConvDecoder"} <= set(specs)
    results = compare.run(tmp_path / "out", settings=["vd4"], slices=1, only=["zero-filled", "MoDL"],
                          tuning="stored", ood_images=[], checkpoint_dir=tmp_path, tier="quick", device="cpu")
    assert "skipping MoDL: checkpoint modl_k10 does not exist" in capsys.readouterr().out
    assert list(results["cells"]) == ["zero-filled"] and "MoDL" in results["skipped"]


def test_off_setting_names_every_difference():
    record = {"config": {"mask": "radial_view_ordering", "acceleration": 5.0, "single_coil": True, "tier": "demo"}}
    reasons = compare.off_setting(compare.trained_setting(record), compare.SETTINGS["vd4"], "quick")
    assert len(reasons) == 4
    modl = {"config": {"mask": "variable_density_2d", "acceleration": 10.0, "tier": "demo"}}
    assert compare.off_setting(compare.trained_setting(modl), compare.SETTINGS["vd10"], "demo") == []
    sgp = {"config": {"tier": "demo"}, "sparse_recovery": {"problem": "mri", "fraction": 1 / 6}}
    assert compare.off_setting(compare.trained_setting(sgp), compare.SETTINGS["vd6"], "demo") == []


def test_learned_sgp_enters_through_its_own_argument_order(tmp_path):
    """``sgp_step_mri`` does not exist yet: a small stand-in with its recipe and record shows the harness calls
    LearnedSGP as model(kspace, mask, maps) and reads its training setting from the record."""
    options = {"kind": "step", "iterations": 2, "features": 4}
    checkpoints.save("sgp_step_mri", mri_sgp(**options), "mrtutor.sgp_training.mri_sgp", options,
                     {"recipe": "sgp_mri", "config": {"tier": "quick"}, "training_seconds": 1.0, "device": "cpu",
                      "sparse_recovery": {"problem": "mri", "fraction": 1 / 6}}, directory=tmp_path)
    results = compare.run(tmp_path / "out", settings=["vd6", "vd10"], slices=1, only=["learned SGP"],
                          tuning="stored", ood_images=[], checkpoint_dir=tmp_path, **QUICK)
    assert results["cells"]["learned SGP"]["vd6"]["off_setting"] == []
    assert results["cells"]["learned SGP"]["vd10"]["off_setting"] == ["trained at 6x"]
    assert results["methods"]["learned SGP"]["parameters"] > 0
