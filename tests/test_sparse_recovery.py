"""Chapter 5's sparse-recovery data (mrtutor.data.sparse_recovery): operators per problem, images and
their splits, noise, the cached FISTA-b references (write, hit, corruption) and their convergence."""

import numpy as np
import pytest
import torch

from mrtutor import config
from mrtutor.data import sparse_recovery as sr
from mrtutor.data.natural import PHOTOGRAPHS
from mrtutor.masks import acceleration
from mrtutor.operators import GaussianBlur, Inpainting, PartialFourier, Radon
from mrtutor.sgp import L1Synthesis, solve

SIZE = config.settings("quick")["sgp_image_size"]
COUNTS = config.settings("quick")["sgp_samples"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One data root for the module: the quick demo brains are built once, the caches shared."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("data")
        patch.setenv("MRTUTOR_DATA", str(root))
        yield root


def test_each_problem_builds_its_operator_and_bad_settings_are_refused():
    inpainting = sr.forward_operator("inpainting", 0.3, SIZE, seed=1)
    assert isinstance(inpainting, Inpainting) and inpainting.mask.mean().item() == pytest.approx(0.3, abs=1e-3)
    fourier = sr.forward_operator("fourier", 0.5, SIZE, seed=1)
    assert isinstance(fourier, PartialFourier) and fourier.mask.mean().item() == pytest.approx(0.5, abs=1e-3)
    assert fourier.mask[..., SIZE // 2, SIZE // 2].item() == 1  # the variable-density mask samples the centre
    assert not torch.equal(fourier.mask, sr.forward_operator("fourier", 0.5, SIZE, seed=2).mask)
    blur = sr.forward_operator("deblurring", size=SIZE)
    assert isinstance(blur, GaussianBlur) and blur.sigma == 2.0
    ct = sr.forward_operator("ct", size=SIZE, views=45)
    assert isinstance(ct, Radon) and ct.n_angles == 45 and ct.size == SIZE
    with pytest.raises(ValueError, match="problem must be one of"):
        sr.forward_operator("denoising")
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"fraction must be a number in \(0, 1\)"):
            sr.forward_operator("inpainting", fraction)
    with pytest.raises(ValueError, match="needs mask"):
        sr.recovery_problem("inpainting", torch.zeros(1, SIZE, SIZE))


def test_ct_problems_are_normalised_and_the_others_have_unit_norm():
    """The known ||A||^2 handed to L1Synthesis is what the power iteration finds."""
    x = torch.rand(2, SIZE, SIZE)
    masks = torch.stack([sr.sampling_mask("fourier", SIZE, 0.5, s) for s in (1, 2)])
    for problem, mask in (("fourier", masks), ("deblurring", None), ("ct", None)):
        op = sr.forward_operator(problem, size=SIZE, mask=mask)
        known = sr.recovery_problem(problem, op.forward(x), mask)
        measured = L1Synthesis(op, op.forward(x), sr.LAM, normalise=True)
        torch.testing.assert_close(known.lipschitz_constant, measured.lipschitz_constant, rtol=1e-3, atol=0)
        torch.testing.assert_close(known.scale, measured.scale, rtol=1e-3, atol=0)
    assert measured.scale[0] > 10  # CT's projector was divided by its norm


def test_training_images_are_crops_of_training_photographs_only(monkeypatch):
    asked = []
    original = sr.photograph
    monkeypatch.setattr(sr, "photograph", lambda name: asked.append(name) or original(name))
    train = sr.natural_images("train", 10, SIZE, seed=0)
    assert set(asked) == set(PHOTOGRAPHS["train"]) and set(asked).isdisjoint(PHOTOGRAPHS["test"])
    assert train.shape == (10, SIZE, SIZE) and train.dtype == np.float32 and 0 <= train.min() and train.max() <= 1
    assert not np.allclose(train, sr.natural_images("train", 10, SIZE, seed=1))  # crops drawn from the seed
    asked.clear()
    test = sr.natural_images("test", 6, SIZE)
    assert set(asked) == set(PHOTOGRAPHS["test"])
    whole = sr._resize(sr._centre_square(original(PHOTOGRAPHS["test"][0])), SIZE)
    np.testing.assert_array_equal(test[0], np.clip(whole, 0, 1))  # the whole photograph, resized
    np.testing.assert_array_equal(test[3], np.rot90(test[0]))  # then its rotations


def test_datasets_have_the_tier_sizes_and_the_documented_noise(data_root):
    clean = sr.sparse_recovery_dataset("inpainting", "train", tier="quick")
    noisy = sr.sparse_recovery_dataset("inpainting", "train", tier="quick", noise=sr.NOISY)
    assert len(clean) == COUNTS["train"] and len(sr.sparse_recovery_dataset("inpainting", "test", tier="quick")) == COUNTS["test"]
    sample = clean[0]
    assert {k: tuple(v.shape) for k, v in sample.items()} == {k: (SIZE, SIZE) for k in
                                                               ("target", "mask", "measurement", "reference")}
    torch.testing.assert_close(sample["measurement"], sample["mask"] * sample["target"])
    torch.testing.assert_close(noisy[0]["target"], sample["target"])
    n = (torch.stack([noisy[i]["measurement"] - clean[i]["measurement"] for i in range(len(clean))])
         [torch.stack([clean[i]["mask"] for i in range(len(clean))]) > 0])
    assert n.std().item() == pytest.approx(sr.NOISY, rel=0.05)
    fourier = sr.sparse_recovery_dataset("fourier", "val", tier="quick")[0]
    assert fourier["measurement"].dtype == torch.complex64 and fourier["target"].max().item() == pytest.approx(1.0)
    ct = sr.sparse_recovery_dataset("ct", "val", tier="quick", views=45)[0]
    assert ct["measurement"].shape == (SIZE, 45) and "mask" not in ct
    with pytest.raises(ValueError, match="split must be one of"):
        sr.sparse_recovery_dataset("inpainting", "validation", tier="quick")


@pytest.mark.parametrize("problem", sr.PROBLEMS)
def test_references_reach_the_converged_objective(data_root, problem):
    dataset = sr.sparse_recovery_dataset(problem, "val", tier="quick")
    batch = dataset.arrays
    recovery = sr.recovery_problem(problem, batch["measurement"], batch.get("mask"), maps=batch.get("maps"))
    reference = batch["reference"]
    further = solve(recovery, "fista_b", 300, x0=reference).objective
    short = solve(recovery, "fista_b", 30).objective[-1]
    # 300 more iterations gain nothing past float32 round-off: x* is converged, well below 30 iterations' F
    assert ((further[0] - further.min(dim=0).values) <= 1e-5 * further[0]).all()
    assert (further[0] < short - 1e-4 * short).all()


def test_the_cache_is_written_once_read_back_and_recomputed_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("MRTUTOR_DATA", str(tmp_path))
    first = sr.sparse_recovery_dataset("deblurring", "val", tier="quick")
    files = list((tmp_path / "sparse-recovery").glob("*.pt"))
    assert len(files) == 1 and "deblurring-val-quick-" in files[0].name
    other = sr.sparse_recovery_dataset("deblurring", "val", tier="quick", lam=2 * sr.LAM)
    assert len(list((tmp_path / "sparse-recovery").glob("*.pt"))) == 2  # lam is part of the key
    assert not torch.equal(other.arrays["reference"], first.arrays["reference"])

    def no_solve(*args, **kwargs):
        raise AssertionError("a cache hit must not compute the references again")

    with monkeypatch.context() as patch:
        patch.setattr(sr, "references", no_solve)
        hit = sr.sparse_recovery_dataset("deblurring", "val", tier="quick")
    for key in first.arrays:
        assert torch.equal(hit.arrays[key], first.arrays[key])

    saved = torch.load(files[0], weights_only=True)
    saved["arrays"]["reference"][0, 0, 0] += 1  # changed arrays under the old digest
    torch.save(saved, files[0])
    with pytest.warns(RuntimeWarning, match="do not match their sha256"):
        again = sr.sparse_recovery_dataset("deblurring", "val", tier="quick")
    assert torch.equal(again.arrays["reference"], first.arrays["reference"])
    files[0].write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match="not a usable sparse-recovery cache"):
        again = sr.sparse_recovery_dataset("deblurring", "val", tier="quick")
    assert torch.equal(again.arrays["reference"], first.arrays["reference"])
    assert torch.load(files[0], weights_only=True)["sha256"] == sr._digest(first.arrays)  # rewritten


def test_a_dataset_without_x_star_skips_its_solve_and_a_later_call_adds_it_to_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MRTUTOR_DATA", str(tmp_path))

    def no_solve(*args, **kwargs):
        raise AssertionError("reference=False must not compute x*")

    with monkeypatch.context() as patch:
        patch.setattr(sr, "references", no_solve)
        lean = sr.sparse_recovery_dataset("inpainting", "val", tier="quick", reference=False)
    assert set(lean.arrays) == {"target", "mask", "measurement"} and set(lean[0]) == set(lean.arrays)
    files = list((tmp_path / "sparse-recovery").glob("*.pt"))
    assert len(files) == 1
    full = sr.sparse_recovery_dataset("inpainting", "val", tier="quick")  # computes x* into the same file
    assert list((tmp_path / "sparse-recovery").glob("*.pt")) == files
    for key in lean.arrays:
        assert torch.equal(full.arrays[key], lean.arrays[key])
    monkeypatch.setenv("MRTUTOR_DATA", str(tmp_path / "fresh"))  # the same x* as a dataset computed in one call
    torch.testing.assert_close(full.arrays["reference"],
                               sr.sparse_recovery_dataset("inpainting", "val", tier="quick").arrays["reference"],
                               rtol=0, atol=0)
    monkeypatch.setenv("MRTUTOR_DATA", str(tmp_path))
    with monkeypatch.context() as patch:
        patch.setattr(sr, "references", no_solve)
        again = sr.sparse_recovery_dataset("inpainting", "val", tier="quick", reference=False)
    assert torch.equal(again.arrays["reference"], full.arrays["reference"])  # a cache that holds x* gives it


def test_the_mri_problem_is_chapter_1s_l1_wavelet_reconstruction(data_root):
    """Complex images, Daubechies-4 details penalised and the approximation free, A = Sense: the objective is
    recon.l1_wavelet's, and the gradient of f is autograd's."""
    from mrtutor import recon
    from mrtutor.sense import Sense

    batch = sr.sparse_recovery_dataset("mri", "val", tier="quick").arrays
    assert batch["target"].is_complex() and batch["reference"].is_complex()
    assert batch["measurement"].shape == batch["maps"].shape and batch["mask"].shape == batch["target"].shape
    assert abs(1 / acceleration(batch["mask"][0]) - sr.default_fraction("mri")) < 0.02
    problem = sr.recovery_problem("mri", batch["measurement"], batch["mask"], maps=batch["maps"])
    assert problem.complex_images and problem.lam.flatten()[0].item() == pytest.approx(sr.MRI_LAM)
    op = Sense(batch["maps"], batch["mask"])
    image = problem.image(batch["reference"])
    transform = recon.Wavelet(tuple(image.shape[-2:]), sr.MRI_WAVELET)
    expected = (0.5 * (op.forward(image) - batch["measurement"]).abs().pow(2).flatten(1).sum(1)
                + sr.MRI_LAM * (transform.forward(image).abs() * transform.detail_mask()).flatten(1).sum(1))
    torch.testing.assert_close(problem.objective(batch["reference"]), expected, rtol=1e-5, atol=1e-6)
    coefficients = batch["reference"].clone().requires_grad_()
    problem.smooth(coefficients).sum().backward()
    # autograd's gradient of a real function of complex x is the conjugate Wirtinger one: d f / d conj(x) times 2
    torch.testing.assert_close(coefficients.grad, problem.gradient(batch["reference"]), rtol=1e-4, atol=1e-6)
    # the approximation block is not thresholded
    free = problem.weights == 0
    assert free.any() and torch.equal(problem.prox(batch["reference"], 100.0)[:, free], batch["reference"][:, free])
    with pytest.raises(ValueError, match="needs coil maps"):
        sr.recovery_problem("mri", batch["measurement"], batch["mask"])
    with pytest.raises(ValueError, match="noise must be 0"):
        sr.sparse_recovery_dataset("mri", "val", tier="quick", noise=0.01)


def test_an_interrupted_reference_computation_continues_after_its_saved_batches(tmp_path, monkeypatch):
    data = sr.sparse_recovery_dataset("inpainting", "val", tier="quick", lam=3 * sr.LAM).arrays
    args = ("inpainting", data["measurement"], data["mask"], sr.LAM)
    whole = sr.references(*args, iterations=20)
    monkeypatch.setattr(sr, "REFERENCE_CHUNK", 1)  # one image per batch, so the run can stop between images
    solved, real_solve = [], sr.solve

    def solve_then_stop(problem, *rest, **kwargs):
        if len(solved) == 2:
            raise KeyboardInterrupt  # the session ends after two batches
        solved.append(1)
        return real_solve(problem, *rest, **kwargs)

    partial = tmp_path / "x.partial.pt"
    with monkeypatch.context() as patch:
        patch.setattr(sr, "solve", solve_then_stop)
        with pytest.raises(KeyboardInterrupt):
            sr.references(*args, iterations=20, partial=partial)
    assert len(torch.load(partial, weights_only=True)["batches"]) == 2
    counted = []
    monkeypatch.setattr(sr, "solve", lambda *a, **k: counted.append(1) or real_solve(*a, **k))
    resumed = sr.references(*args, iterations=20, partial=partial)
    assert len(counted) == len(whole) - 2  # only the images not yet done
    torch.testing.assert_close(resumed, whole, rtol=0, atol=1e-6)
    with pytest.warns(RuntimeWarning, match="another computation"):  # other inputs do not reuse the batches
        sr.references("inpainting", data["measurement"], data["mask"], 2 * sr.LAM, iterations=20, partial=partial)
