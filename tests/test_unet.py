"""The fastMRI U-Net baseline of chapter 6: its size, the calling convention, the undone normalisation, the recipe."""

import json

import pytest
import torch

from mrtutor import checkpoints, data, evaluate, recipes
from mrtutor.sense import Sense
from mrtutor.train import main
from mrtutor.unet import UNet, UNetReconstruction, magnitude_l1_loss, normalise_instance, unet


def batch(b=2, coils=4, h=32, w=32, seed=0):
    """Random k-space, unit-sum-of-squares maps and a column mask, as the datasets give them."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(b, coils, h, w, dtype=torch.complex64, generator=g)
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    mask = (torch.rand(b, 1, w, generator=g) < 0.4).float().expand(b, h, w).clone()
    kspace = torch.randn(b, coils, h, w, dtype=torch.complex64, generator=g) * mask[:, None]
    return kspace, maps, mask


def test_fastmri_s_unet_has_7756097_parameters():
    assert sum(p.numel() for p in UNet(1, 1, 32, 4).parameters()) == 7_756_097
    model = unet()
    assert sum(p.numel() for p in model.parameters()) == 7_756_097
    # Only the last 1 x 1 convolution has a bias; instance norm has no weights.
    assert [name for name, _ in model.named_parameters() if name.endswith("bias")] == ["net.head.bias"]


def test_a_k_space_batch_gives_real_magnitude_images():
    torch.manual_seed(0)
    kspace, maps, mask = batch()
    model = unet(channels=8).eval()  # 4 poolings: 2 x 2 at the bottom of a 32 x 32 image
    out = model(kspace, maps, mask)
    assert out.shape == (2, 32, 32) and out.dtype == torch.float32 and not out.is_complex()
    assert torch.equal(model.zero_filled(kspace, maps, mask), Sense(maps, mask).adjoint(kspace).abs())
    # Sizes that the poolings do not divide come back whole.
    assert unet(channels=4, pools=2).eval()(*batch(h=35, w=34)).shape == (2, 35, 34)


def test_the_normalisation_is_undone_so_the_output_scales_with_the_k_space():
    torch.manual_seed(0)
    # In double precision, so that what is left is the eps of the normalisation (1e-11 next to std ~ 1).
    kspace, maps, mask = (v.to(torch.complex128) if v.is_complex() else v for v in batch())
    model = unet(channels=8).double().eval()
    with torch.no_grad():
        out, scaled = model(kspace, maps, mask), model(10 * kspace, maps, mask)
    assert out.dtype == torch.float64
    torch.testing.assert_close(scaled, 10 * out, rtol=1e-9, atol=1e-9)
    image = model.zero_filled(kspace, maps, mask)
    normalised, mean, std = normalise_instance(image)
    assert normalised.abs().max() <= 6 and mean.shape == std.shape == (2, 1, 1)
    torch.testing.assert_close(normalise_instance(image, clamp=1e9)[0] * std + mean, image)


def test_the_loss_is_the_l1_distance_to_the_target_magnitude():
    torch.manual_seed(0)
    kspace, maps, mask = batch()
    target = torch.randn(2, 32, 32, dtype=torch.complex64)
    model = unet(channels=4, pools=2).eval()
    expected = (model(kspace, maps, mask) - target.abs()).abs().mean()
    torch.testing.assert_close(magnitude_l1_loss(model, {"kspace": kspace, "maps": maps, "mask": mask,
                                                         "target": target}), expected)


def test_the_unet_recipe_trains_loads_and_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("MRTUTOR_DATA", str(tmp_path / "data"))
    main(["unet", "--name", "tiny", "--tier", "quick", "--epochs", "1", "--channels", "4", "--pools", "2",
          "--mask", "column_random", "--acceleration", "4", "--train-slices", "8", "--quiet",
          "--run-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt")])
    record = json.loads((tmp_path / "ckpt" / "tiny.json").read_text())
    assert record["recipe"] == "unet" and record["builder_kwargs"] == {"channels": 4, "pools": 2, "dropout": 0.0}
    assert record["config"]["mask"] == "column_random" and "val_psnr" in record["final_metrics"]
    model = checkpoints.load("tiny", directory=tmp_path / "ckpt")
    assert isinstance(model, UNetReconstruction) and not model.training
    val_set = torch.utils.data.Subset(data.demo_dataset("val", tier="quick", mask_fn="column_random",
                                                         acceleration=4, progress=False), range(2))
    scores = evaluate.score({"unet": model}, val_set)["unet"]
    assert scores["psnr"].shape == (2,) and torch.isfinite(scores["psnr"]).all()


def test_bad_settings_are_refused():
    for kwargs, message in (({"channels": 0}, "channels must be"), ({"pools": 0}, "pools must be"),
                            ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"), ({"dropout": -0.1}, "dropout")):
        with pytest.raises(ValueError, match=message):
            unet(**kwargs)
    with pytest.raises(ValueError, match="must be in"):
        recipes.get("unet").build({"dropout": 1.5})
    with pytest.raises(ValueError, match="H, W >= 32 for 4 poolings"):
        unet(channels=4)(*batch(h=16, w=16))
    with pytest.raises(ValueError, match="real with shape"):
        normalise_instance(torch.ones(2, 4, 4, dtype=torch.complex64))
