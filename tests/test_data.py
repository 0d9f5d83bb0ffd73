"""mrtutor.data: the demo dataset (offline, deterministic, consistent, disjoint splits), the loaders
of the real layouts (fastMRI multi-/single-coil, MoDL), clear errors, and the download helper."""

import hashlib
import http.server
import json
import pickle
import shutil
import socket
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage
import torch

from mrtutor import config, data
from mrtutor.data.anatomy import _choose
from mrtutor.fft import fft2c
from mrtutor.sense import Sense

TIER = "quick"


def stand_in_mask(shape, seed):
    """A seeded random 0/1 mask with the centre sampled (stands in for mrtutor.masks)."""
    g = torch.Generator().manual_seed(int(seed))
    mask = (torch.rand(shape, generator=g) < 0.3).float()
    h, w = shape
    mask[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2] = 1
    return mask


def _refuse(*args, **kwargs):
    raise OSError("network access is blocked in this test")


@pytest.fixture(scope="module", autouse=True)
def data_home(tmp_path_factory):
    """MRTUTOR_DATA points to a temporary directory for the whole module."""
    root = tmp_path_factory.mktemp("mrtutor_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MRTUTOR_DATA", str(root))
        yield root


@pytest.fixture(scope="module")
def offline_build(data_home):
    """The quick-tier demo data built with every socket connection and DNS lookup refused."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse)
        mp.setattr(socket.socket, "connect_ex", _refuse)
        mp.setattr(socket, "getaddrinfo", _refuse)
        directory = data.build_demo_data(TIER, seed=0)
        # The OOD images must come from the installed wheels too.
        ood = data.ood_samples(("dipy_t1", "camera", "phantom"), tier=TIER)
    assert directory.parent == data_home
    return directory, ood


def _array_hashes(directory: Path) -> dict:
    hashes = {}
    for path in sorted(directory.rglob("*.h5")):
        with h5py.File(path, "r") as f:
            for key in sorted(f.keys()):
                array = np.ascontiguousarray(f[key][()])
                hashes[f"{path.relative_to(directory)}/{key}"] = hashlib.sha256(array.tobytes()).hexdigest()
    return hashes


def test_build_is_offline_deterministic_and_complete(offline_build, tmp_path):
    directory, _ = offline_build
    again = data.build_demo_data(TIER, seed=0, root=tmp_path)
    assert _array_hashes(directory) == _array_hashes(again)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["sha256"] == json.loads((again / "manifest.json").read_text())["sha256"]
    wanted = config.settings(TIER)["demo_slices"]
    assert {s: manifest["splits"][s]["slices"] for s in data.SPLITS} == wanted
    other = data.build_demo_data(TIER, seed=1, root=tmp_path)
    assert _array_hashes(other) != _array_hashes(again)
    assert not list(tmp_path.glob(".*tmp*")), "temporary build directories were left behind"


# The sha256 of the quick tier's manifest (seed 0): the hash of every file's arrays.
QUICK_SHA256 = "032adc77ca0b9521009d804d8f5e36bd13da5edd2a0035728f7554eeb90450fd"
CHANGED = (
    "the simulation changed: the demo dataset no longer has the same bytes. If that is meant, bump "
    "mrtutor.data.VERSION, retrain the checkpoints (python -m mrtutor.train) and update this hash; "
    "otherwise undo the change."
)


def test_quick_tier_bytes_are_unchanged(offline_build):
    directory, _ = offline_build
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["sha256"] == QUICK_SHA256, f"quick tier sha256 {manifest['sha256']}: {CHANGED}"


def _checkpoint_dataset_hashes() -> dict:
    """``dataset_sha256`` of every checkpoint record trained on the demo tier of the demo dataset (not the
    records of recipes that bring their own data, such as super-resolution, whose hash covers more)."""
    from mrtutor import recipes

    hashes = {}
    for path in sorted((Path(__file__).resolve().parents[1] / "checkpoints").glob("*.json")):
        record = json.loads(path.read_text())
        own_data = recipes.get(record["recipe"]).data is not None
        if record["config"].get("tier") == "demo" and not record["config"].get("modl_data") and not own_data:
            hashes[path.name] = record["dataset_sha256"]
    return hashes


# The same demo tier built by other library versions: another sha256 from rounding alone. Each entry says which
# build it is and the evidence that networks trained on it are networks of this data.
OTHER_BUILDS = {
    "b587a3e6e5556464dbc39114dc57b24affec53c7423258e3226d040b7fd02fde":
        "built on the H200 device image (numpy 2.5.2, scipy 1.18.1) for chapters 4 and 6's trainings of 2026-12-04; "
        "npgd_t2_rb1 and unet_4x, trained on it, score their recorded validation PSNR on this build to 1e-4 dB "
        "(29.7852 vs 29.7851, 27.4602 vs 27.4602)",
    "be97229ba10acb59a2a91d32c90a62eeb37e92d089e9363c471f29ef7d1f9fb8":
        "built by the 2-core CPU set-up of 2026-12-05 from the package registry (numpy 2.4.6, scipy 1.17.1, "
        "scikit-image 0.26.0); modl_k10, modl_k1 (trained on 220f4064...) and unet_4x (on b587a3e6...) score their "
        "recorded validation PSNR on this build to 1e-4 dB (34.3356, 30.1592, 27.4602, each equal to its record)",
}


def test_demo_tier_bytes_match_the_checkpoints(tmp_path, monkeypatch):
    """The demo tier (about 25 s, 1.1 GB, deleted afterwards) is the dataset the checkpoints were trained on: this
    build, or one of ``OTHER_BUILDS``, the same data built by other numpy/scipy versions."""
    recorded = _checkpoint_dataset_hashes()
    assert recorded, "no checkpoint record of the demo tier in checkpoints/"
    builds = set(recorded.values()) - set(OTHER_BUILDS)
    assert len(builds) == 1, f"the checkpoints were trained on different demo datasets: {recorded}"
    (expected,) = builds
    monkeypatch.setenv("MRTUTOR_DATA", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse)
    try:
        directory = data.build_demo_data("demo", seed=0)
        assert directory.parent == tmp_path
        manifest = json.loads((directory / "manifest.json").read_text())
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert manifest["sha256"] == expected or manifest["sha256"] in OTHER_BUILDS, (
        f"demo tier sha256 {manifest['sha256']}, the checkpoints' dataset_sha256 {expected} (or a build of "
        f"OTHER_BUILDS): {CHANGED}"
    )


def test_files_have_the_fastmri_multicoil_layout(offline_build):
    directory, _ = offline_build
    h, w = config.settings(TIER)["image_shape"]
    coils = config.settings(TIER)["num_coils"]
    for path in directory.rglob("*.h5"):
        with h5py.File(path, "r") as f:
            n = f["kspace"].shape[0]
            assert f["kspace"].shape == (n, coils, h, w) and f["kspace"].dtype == np.complex64
            assert f["maps"].shape == (n, coils, h, w) and f["maps"].dtype == np.complex64
            assert f["target"].shape == (n, h, w) and f["target"].dtype == np.complex64
            assert f["reconstruction_rss"].shape == (n, h, w)
            assert f.attrs["acquisition"] in ("AXT1", "CORT1", "SAGT1")
            rss = f["reconstruction_rss"][()]
            assert np.isclose(f.attrs["max"], rss.max()) and np.isclose(f.attrs["norm"], np.linalg.norm(rss))
            assert b"ismrmrdHeader" in f["ismrmrd_header"][()]


def test_samples_layout_scaling_and_maps(offline_build):
    ds = data.demo_dataset("val", TIER, mask_fn=stand_in_mask)
    assert len(ds) == config.settings(TIER)["demo_slices"]["val"]
    h, w = config.settings(TIER)["image_shape"]
    coils = config.settings(TIER)["num_coils"]
    for i in range(len(ds)):
        s = ds[i]
        assert s["kspace"].shape == (coils, h, w) and s["kspace"].dtype == torch.complex64
        assert s["maps"].shape == (coils, h, w) and s["maps"].dtype == torch.complex64
        assert s["target"].shape == (h, w) and s["target"].dtype == torch.complex64
        assert s["mask"].shape == (h, w) and s["mask"].dtype == torch.float32
        assert set(s["mask"].unique().tolist()) <= {0.0, 1.0}
        assert abs(s["target"].abs().max().item() - 1) < 1e-6
        assert torch.allclose((s["maps"].abs() ** 2).sum(0), torch.ones(h, w), atol=1e-5)
        full = ds.fully_sampled(i)
        assert torch.equal(s["kspace"], full["kspace"] * s["mask"])
        assert s["scale"] > 0 and s["subject"] in data.SUBJECTS and isinstance(s["slice_id"], str)
    # A fixed shuffled order: a prefix mixes both brains.
    assert {ds[i]["subject"] for i in range(4)} == set(data.SUBJECTS)
    again = data.demo_dataset("val", TIER)
    assert [ds[i]["slice_id"] for i in range(len(ds))] == [again[i]["slice_id"] for i in range(len(again))]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["kspace"].shape == (3, coils, h, w) and len(batch["slice_id"]) == 3


def test_kspace_agrees_with_maps_and_target_up_to_noise_and_model_error(offline_build):
    settings = config.settings(TIER)
    sigma = settings["noise_sigma"]
    ds = data.demo_dataset("test", TIER, mask_fn=stand_in_mask)
    for i in range(len(ds)):
        s = ds[i]
        full = ds.fully_sampled(i)["kspace"]
        op = Sense(s["maps"][None], torch.ones(s["mask"].shape))
        residual = (full - op.forward(s["target"][None])[0]).norm().item()
        noise = sigma * np.sqrt(full.numel())
        # The residual is the noise plus a small model error (the finer simulation grid).
        assert 0.95 * noise < residual < 1.3 * noise, (residual, noise)
        masked = Sense(s["maps"][None], s["mask"])
        assert (s["kspace"] - masked.forward(s["target"][None])[0]).norm() < 0.1 * s["kspace"].norm()


def test_simulation_avoids_the_inverse_crime():
    shape = (32, 28)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: 2 * shape[0], : 2 * shape[1]]
    disc = ((yy - 32.3) ** 2 / 22**2 + (xx - 28.1) ** 2 / 18**2 < 1).astype(float)
    image = disc * (1 + 0.3 * np.sin(xx / 3))
    sim = data.simulate_acquisition(image, shape, 6, 0.0, rng)
    target, maps, kspace = (torch.from_numpy(sim[k]) for k in ("target", "maps", "kspace"))
    # Intensities keep their size: |target| / scale matches the image at the coarse pixel centres
    # (up to ringing at the sharp edge: compare the means; a wrong FFT scaling is off by 2x).
    coarse = image[:: data.OVERSAMPLE, :: data.OVERSAMPLE]
    assert abs(np.abs(sim["target"]).mean() / sim["scale"] / coarse.mean() - 1) < 0.1
    exact = Sense(maps[None], torch.ones(shape)).forward(target[None])[0]
    error = ((kspace - exact).norm() / kspace.norm()).item()
    # Not the reconstruction's own operator (that would give ~1e-7), yet a small mismatch.
    assert 1e-3 < error < 0.05
    assert abs(error - sim["model_error"]) < 1e-4
    # The target is the least-squares image: the adjoint of the full noiseless data.
    adjoint = Sense(maps[None], torch.ones(shape)).adjoint(kspace[None])[0]
    assert torch.allclose(adjoint, target, atol=1e-5)


def test_splits_are_disjoint_slabs(offline_build):
    rows = []
    for subject in data.SUBJECTS:
        volume, affine, brain = data.load_head(subject)
        rows += data.slice_table(subject, brain, affine)
    by_key = {}
    for r in rows:
        slab = abs(r["position_mm"]) if r["orientation"] == "sagittal" else r["position_mm"]
        by_key.setdefault((r["subject"], r["orientation"]), []).append((slab, r["split"]))
    for key, items in by_key.items():
        for split in data.SPLITS:
            assert any(s == split for _, s in items), f"{key} has no {split} slices"
        for a, sa in items:
            for b, sb in items:
                if sa != sb:
                    assert abs(a - b) > 1.0 + 1e-6, f"{key}: {sa} slice at {a} mm next to {sb} slice at {b} mm"
    assert all(r["position_mm"] >= 0 for r in rows if r["subject"] == "mni152" and r["orientation"] == "sagittal")
    # The demo tier's sizes fit in the pools and meet the minimum.
    demo = config.settings("demo")["demo_slices"]
    assert demo["train"] >= 300 and demo["val"] >= 50 and demo["test"] >= 50
    for split in data.SPLITS:
        _choose([r for r in rows if r["split"] == split], demo[split], split)
    # The built files: slice ids of different splits never coincide.
    ids = {}
    for split in data.SPLITS:
        ds = data.demo_dataset(split, TIER)
        ids[split] = {ds[i]["slice_id"] for i in range(len(ds))}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])


@pytest.mark.parametrize("subject", data.SUBJECTS)
def test_heads_have_scalp_and_skull_around_the_brain(subject):
    """A brain on an exactly zero background flatters TV (issue 3): both anatomies are whole heads.
    Along rays from the brain's centre outwards, past the brain's edge, the intensity must dip (CSF
    and bone) and rise again (marrow, fat, skin) before it reaches zero outside the head."""
    volume, affine, brain = data.load_head(subject)
    assert volume.shape == brain.shape and volume.dtype == np.float32 and brain.dtype == bool
    assert volume.max() == 1 and volume.min() >= 0
    assert 0.05 < brain.mean() < 0.4
    head = ndimage.binary_fill_holes(volume > 0.05)
    assert head.sum() > 1.3 * brain.sum()  # a head's shell is thick: ~40% more voxels than the brain
    centre = np.round(np.argwhere(brain).mean(axis=0)).astype(int)
    white = np.percentile(volume[brain], 95)
    layered = 0
    for direction in [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1)]:
        ray = [centre + t * np.array(direction) for t in range(200)]
        ray = [p for p in ray if all(0 <= p[a] < volume.shape[a] for a in range(3))]
        inside = np.array([brain[tuple(p)] for p in ray])
        edge = len(inside) - np.argmax(inside[::-1])  # first voxel past the brain's outer edge
        profile = np.array([volume[tuple(p)] for p in ray[edge : edge + 25]])
        dip = np.argmax(profile < 0.3 * white)
        layered += profile[dip] < 0.3 * white and profile[dip:].max() > 0.6 * white
    assert layered >= 4, f"{subject}: only {layered} of 5 rays cross dark bone then bright scalp"


def test_subject_split(offline_build):
    parts = data.subject_split("mni152", TIER)
    subjects = {name: {parts[name][i]["subject"] for i in range(len(parts[name]))} for name in parts}
    assert subjects == {"train": {"mni152"}, "val": {"mni152"}, "test": {"colin27"}}


def test_subject_indices_pick_each_head_with_its_masks(offline_build):
    ds = data.demo_dataset("test", TIER, mask_fn=stand_in_mask)
    picked = {subject: data.subject_indices(ds, subject) for subject in data.SUBJECTS}
    assert sorted(picked["mni152"] + picked["colin27"]) == list(range(len(ds)))
    for subject, indices in picked.items():
        assert indices and all(ds[i]["subject"] == subject for i in indices)
    own = data.demo_dataset("test", TIER, mask_fn=stand_in_mask, subjects=("colin27",))
    assert len(own) == len(picked["colin27"])
    with pytest.raises(ValueError, match="subject must be one of"):
        data.subject_indices(ds, "colin")
    with pytest.raises(TypeError, match="FastMRIDataset"):
        data.subject_indices(list(ds), "colin27")


def test_masks_per_sample_per_epoch_or_fixed(offline_build):
    ds = data.demo_dataset("val", TIER, mask_fn=stand_in_mask, mask_seed=3)
    m0, m1 = ds[0]["mask"], ds[1]["mask"]
    assert not torch.equal(m0, m1) and torch.equal(m0, ds[0]["mask"])
    ds.set_epoch(1)
    assert not torch.equal(m0, ds[0]["mask"])
    fixed = data.demo_dataset("val", TIER, mask_fn=stand_in_mask, fixed_mask=True, mask_seed=3)
    assert torch.equal(fixed[0]["mask"], fixed[5]["mask"])
    assert torch.equal(fixed[0]["mask"], stand_in_mask(tuple(m0.shape), 3))
    assert torch.equal(data.demo_dataset("val", TIER)[0]["mask"], torch.ones_like(m0))
    with pytest.raises(ValueError, match="mask_fn"):
        data.demo_dataset("val", TIER, mask_fn=lambda shape, seed: torch.ones(3, 3))[0]
    with pytest.raises(ValueError, match="mask name"):
        data.demo_dataset("val", TIER, mask_fn="no_such_mask", acceleration=4)
    with pytest.raises(ValueError, match="split"):
        data.demo_dataset("training", TIER)


def test_named_masks_from_mrtutor_masks(offline_build):
    ds = data.demo_dataset("val", TIER, mask_fn="variable_density_2d", acceleration=4)
    mask = ds[0]["mask"]
    assert mask.shape == tuple(config.settings(TIER)["image_shape"]) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert 2.5 < mask.numel() / mask.sum().item() < 6
    # Picklable, so DataLoader workers started with "spawn" get the same dataset.
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[0]["mask"], mask) and torch.equal(clone[0]["kspace"], ds[0]["kspace"])


def test_ood_samples(offline_build):
    _, ood = offline_build
    h, w = config.settings(TIER)["image_shape"]
    assert [s["subject"] for s in ood] == ["dipy_t1", "camera", "phantom"]
    for s in ood:
        assert s["kspace"].shape == (config.settings(TIER)["num_coils"], h, w) and s["target"].shape == (h, w)
        assert abs(s["target"].abs().max().item() - 1) < 1e-6
    with pytest.raises(ValueError, match="names"):
        data.ood_samples(["lena"], tier=TIER)


# --------------------------------------------------------------------------------------------- #
# Real layouts, written tiny
# --------------------------------------------------------------------------------------------- #


def _phantom_and_maps(h, w, coils, slices, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    images, maps = [], []
    import sigpy.mri

    for s in range(slices):
        disc = ((yy - h / 2) ** 2 / (0.35 * h) ** 2 + (xx - w / 2) ** 2 / (0.35 * w) ** 2 < 1).astype(float)
        blob = np.exp(-((yy - h / 2 - 3) ** 2 + (xx - w / 2 + s) ** 2) / 8)
        images.append((disc * (0.5 + blob) * np.exp(1j * rng.uniform(0, 0.5) * xx / w)).astype(np.complex64))
        maps.append(sigpy.mri.birdcage_maps((coils, h, w), r=1.2 + 0.1 * s, dtype=np.complex64))
    return np.stack(images), np.stack(maps)


def _write_fastmri(path, kspace, recon_key="reconstruction_rss", acquisition="CORPD_FBK"):
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.create_dataset(recon_key, data=np.zeros((kspace.shape[0], 16, 16), dtype=np.float32))
        f.create_dataset("ismrmrd_header", data=np.bytes_(b"<ismrmrdHeader/>"))
        f.attrs["acquisition"] = acquisition
        f.attrs["max"] = 1.0
        f.attrs["norm"] = 1.0
        f.attrs["patient_id"] = "abc123"


def test_fastmri_multicoil_layout_with_cached_espirit(tmp_path, monkeypatch):
    h, w, coils = 32, 24, 4
    images, maps = _phantom_and_maps(h, w, coils, slices=2)
    kspace = fft2c(torch.from_numpy(maps * images[:, None])).numpy()
    path = tmp_path / "file_brain_AXT1_001.h5"
    _write_fastmri(path, kspace, acquisition="AXT1")
    cache = tmp_path / "espirit"
    ds = data.FastMRIDataset(path, mask_fn=stand_in_mask, maps_cache=cache, espirit={"calib_width": 12})
    assert len(ds) == 2
    for i in range(2):
        s = ds[i]
        assert s["kspace"].shape == (coils, h, w) and s["maps"].shape == (coils, h, w)
        assert s["subject"] == "abc123" and s["slice"] == i
        target = s["target"]
        assert abs(target.abs().max().item() - 1) < 1e-6
        # ESPIRiT maps explain the k-space, and the target is the image up to a phase and the scale.
        full = ds.fully_sampled(i)["kspace"]
        assert (full - Sense(s["maps"][None], torch.ones(h, w)).forward(target[None])[0]).norm() < 0.05 * full.norm()
        reference = torch.from_numpy(np.abs(images[i])) * s["scale"]
        assert (target.abs() - reference).norm() < 0.05 * reference.norm()
    assert len(list(cache.glob("*.h5"))) == 1
    # A second dataset reads the cache instead of running ESPIRiT again.
    import sigpy.mri.app

    monkeypatch.setattr(sigpy.mri.app, "EspiritCalib", _refuse)
    again = data.FastMRIDataset(path, maps_cache=cache, espirit={"calib_width": 12})
    assert torch.equal(again[1]["maps"], ds[1]["maps"])


def test_fastmri_singlecoil_layout(tmp_path):
    images, _ = _phantom_and_maps(20, 16, 1, slices=3)
    kspace = fft2c(torch.from_numpy(images)).numpy()
    path = tmp_path / "file1000001.h5"
    _write_fastmri(path, kspace, recon_key="reconstruction_esc")
    ds = data.FastMRIDataset(tmp_path)
    s = ds[2]
    assert s["kspace"].shape == (1, 20, 16) and torch.equal(s["maps"], torch.ones(1, 20, 16, dtype=torch.complex64))
    expected = torch.from_numpy(images[2]) / np.abs(images[2]).max()
    assert torch.allclose(s["target"], expected, atol=1e-5)
    assert torch.allclose(s["kspace"][0], fft2c(expected), atol=1e-5)


def _write_modl(path, n_train=3, n_test=2, h=16, w=12, coils=4):
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        for prefix, n in (("trn", n_train), ("tst", n_test)):
            images, maps = _phantom_and_maps(h, w, coils, n, seed=n)
            mask = (rng.random((n, h, w)) < 0.3).astype(np.int8)
            mask[:, 0, 0] = 1  # DC of the uncentred FFT
            mask[:, h // 2, w // 2] = 0  # the highest frequency: unsampled
            f.create_dataset(prefix + "Org", data=images * 3.0)
            f.create_dataset(prefix + "Csm", data=maps)
            f.create_dataset(prefix + "Mask", data=mask)


def test_modl_layout_and_mask_shift(tmp_path):
    path = tmp_path / "dataset.hdf5"
    _write_modl(path)
    with h5py.File(path, "r") as f:
        org, csm, mask = f["tstOrg"][1], f["tstCsm"][1], f["tstMask"][1]
    ds = data.ModlDataset(path, "test", sigma=0.0)
    assert len(ds) == 2 and len(data.ModlDataset(path, "train")) == 3
    s = ds[1]
    h, w = org.shape
    assert s["mask"][h // 2, w // 2] == 1 and s["mask"][0, 0] == 0  # DC moved to the centre
    assert s["mask"].sum() == mask.sum()
    # Our zero-filled image equals MoDL's own A^H A x (uncentred FFT, uncentred mask).
    x = org / np.abs(org).max()
    theirs = (csm.conj() * np.fft.ifft2(mask * np.fft.fft2(csm * x, norm="ortho"), norm="ortho")).sum(0)
    ours = Sense(s["maps"][None], s["mask"]).adjoint(s["kspace"][None])[0]
    assert np.allclose(ours.numpy(), theirs, atol=1e-5)
    assert abs(s["scale"] - 1 / np.abs(org).max()) < 1e-6
    # Noise: fixed per slice, sigma on max-1 images.
    noisy = data.ModlDataset(path, "test", sigma=0.01)
    k1, k2 = noisy.fully_sampled(0)["kspace"], noisy.fully_sampled(0)["kspace"]
    assert torch.equal(k1, k2)
    clean = data.ModlDataset(path, "test", sigma=0.0).fully_sampled(0)["kspace"]
    assert abs((k1 - clean).norm().item() / np.sqrt(k1.numel()) - 0.01) < 0.003
    # A mask function overrides the file's masks.
    override = data.ModlDataset(path, "test", mask_fn=stand_in_mask, fixed_mask=True)
    assert torch.equal(override[0]["mask"], stand_in_mask((h, w), 0))


def test_errors_name_the_file_and_the_key(tmp_path):
    good = tmp_path / "good.h5"
    images, _ = _phantom_and_maps(20, 16, 1, slices=2)
    _write_fastmri(good, fft2c(torch.from_numpy(images)).numpy())
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(data.DataFileError, match=r"(?s)'kspace'.*truncated\.h5|truncated\.h5.*'kspace'"):
        data.FastMRIDataset(truncated)
    no_kspace = tmp_path / "no_kspace.h5"
    with h5py.File(no_kspace, "w") as f:
        f.create_dataset("reconstruction_rss", data=np.zeros((1, 4, 4), np.float32))
    with pytest.raises(data.DataFileError, match=r"no_kspace\.h5 has no key 'kspace'"):
        data.FastMRIDataset(no_kspace)
    test_file = tmp_path / "test_file.h5"
    _write_fastmri(test_file, fft2c(torch.from_numpy(images)).numpy())
    with h5py.File(test_file, "a") as f:
        f.create_dataset("mask", data=np.ones(16, np.float32))
    with pytest.raises(data.DataFileError, match="test_file.h5 has a 'mask' key"):
        data.FastMRIDataset(test_file)
    modl = tmp_path / "dataset.hdf5"
    _write_modl(modl)
    with h5py.File(modl, "a") as f:
        del f["tstCsm"]
    with pytest.raises(data.DataFileError, match=r"dataset\.hdf5 has no key 'tstCsm'"):
        data.ModlDataset(modl, "test")
    with pytest.raises(data.DataFileError, match=r"'trnOrg'.*missing\.hdf5 does not exist"):
        data.ModlDataset(tmp_path / "missing.hdf5")


# --------------------------------------------------------------------------------------------- #
# Downloads: a local server that honours Range requests
# --------------------------------------------------------------------------------------------- #

PAYLOAD = bytes(range(256)) * 400


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/file.bin"
    httpd.shutdown()


def test_download_resumes_checks_and_renames(server, tmp_path):
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:1000])
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert data.download(server, dest, sha256=sha, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "file.bin.part").exists()
    other = tmp_path / "other.bin"
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.download(server, other, sha256="0" * 64, progress=False)
    assert not other.exists() and not (tmp_path / "other.bin.part").exists()


def test_download_offline_message(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    with pytest.raises(ConnectionError, match="offline"):
        data.download(f"http://127.0.0.1:{port}/x", tmp_path / "x", progress=False)
