"""mrtutor.viz: the figures have the axes, scales and titles they promise; the precomputed explorer is
self-contained HTML; bad input names the argument."""

from __future__ import annotations

import base64
import io
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mrtutor import metrics, viz  # noqa: E402


def _complex_image(seed: int, shape=(16, 16)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=torch.complex64, generator=generator)


def _png_bytes() -> bytes:
    fig = viz.show_images(torch.ones(4, 4))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# ------------------------------------------------------------------ show_images


def test_show_images_draws_one_axes_per_magnitude_image_with_titles():
    images = [_complex_image(seed) for seed in range(3)]
    fig = viz.show_images(images, titles=["a", "b", "c"], ncols=2, suptitle="three")
    assert len(fig.axes) == 3  # the fourth cell of the 2 x 2 grid is removed
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    assert not any(ax.axison for ax in fig.axes)
    assert fig.get_suptitle() == "three"
    for ax, image in zip(fig.axes, images):
        shown = ax.get_images()[0]
        np.testing.assert_allclose(shown.get_array(), image.abs().numpy(), rtol=1e-6)
        assert shown.get_clim() == pytest.approx((0, image.abs().max().item()))


def test_show_images_takes_a_stack_a_single_image_and_a_shared_vmax():
    stack = torch.rand(4, 8, 8)
    fig = viz.show_images(stack, vmax=2.0)
    assert len(fig.axes) == 4
    assert all(ax.get_images()[0].get_clim() == (0, 2.0) for ax in fig.axes)
    assert len(viz.show_images(np.ones((8, 8))).axes) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"images": []}, ValueError, "images is empty"),
        ({"images": torch.zeros(1, 1, 4, 4)}, ValueError, r"images has shape \(1, 1, 4, 4\)"),
        ({"images": [torch.zeros(4, 4), "x"]}, TypeError, r"images\[1\]"),
        ({"images": [torch.zeros(4, 4), torch.zeros(2, 4, 4)]}, ValueError, r"images\[1\] has shape"),
        ({"images": [torch.zeros(4, 4)], "titles": ["a", "b"]}, ValueError, "titles has 2"),
        ({"images": [torch.zeros(4, 4)], "ncols": 0}, ValueError, "ncols"),
    ],
)
def test_show_images_refuses_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        viz.show_images(**kwargs)


# ------------------------------------------------------------------ error maps and comparisons


def test_error_map_is_the_absolute_difference_of_magnitudes():
    x, ref = _complex_image(0), _complex_image(1)
    torch.testing.assert_close(viz.error_map(x, ref), (x.abs() - ref.abs()).abs())
    with pytest.raises(ValueError, match="same shape"):
        viz.error_map(x, ref[:8])


def test_show_comparison_titles_carry_the_package_metrics_and_errors_share_a_scale():
    ref = _complex_image(0).abs()
    recons = {"zero-filled": ref + 0.3 * _complex_image(1), "CG-SENSE": ref + 0.1 * _complex_image(2)}
    fig = viz.show_comparison(recons, ref)
    # The reference, two reconstructions, two error maps, and the error colour bar.
    assert len(fig.axes) == 6
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == [
        "reference",
        *(
            f"{name}\nPSNR {metrics.psnr(x, ref).item():.2f} dB, SSIM {metrics.ssim(x, ref).item():.3f}"
            for name, x in recons.items()
        ),
    ]
    largest = max(viz.error_map(x, ref).max().item() for x in recons.values())
    error_images = [ax.get_images()[0] for ax in fig.axes[3:5]]
    assert [image.get_clim() for image in error_images] == [pytest.approx((0, largest))] * 2
    top_images = [ax.get_images()[0] for ax in fig.axes[:3]]
    assert all(image.get_clim() == pytest.approx((0, ref.max().item())) for image in top_images)

    plain = viz.show_comparison(recons, ref, metrics=False, error_scale=0.05)
    assert [ax.get_title() for ax in plain.axes[1:3]] == list(recons)
    assert plain.axes[3].get_images()[0].get_clim() == (0, 0.05)


def test_show_comparison_zoom_frames_the_region_and_enlarges_it_in_an_inset():
    ref = _complex_image(0).abs()
    recons = {"noisy": ref + 0.1 * _complex_image(1)}
    h, w = ref.shape
    fig = viz.show_comparison(recons, ref, zoom=(0.25, 0.5, 0.25))
    top, left, side = round(0.25 * h), round(0.5 * w), round(0.25 * min(h, w))
    for ax, image in ((fig.axes[0], ref), (fig.axes[1], recons["noisy"])):
        (frame,) = ax.patches
        assert frame.get_xy() == (left - 0.5, top - 0.5) and frame.get_width() == side == frame.get_height()
        (inset,) = ax.child_axes
        shown = inset.get_images()[0].get_array()
        assert np.allclose(shown, image.abs()[top:top + side, left:left + side].numpy())
        assert inset.get_images()[0].get_clim() == pytest.approx((0, ref.max().item()))
    assert not viz.show_comparison(recons, ref).axes[0].child_axes


@pytest.mark.parametrize("zoom", [(0.8, 0.0, 0.3), (0.0, 0.0, 0.0), (0.1, 0.1)])
def test_show_comparison_refuses_a_zoom_outside_the_image(zoom):
    ref = _complex_image(0).abs()
    with pytest.raises(ValueError, match="zoom must be"):
        viz.show_comparison({"a": ref}, ref, zoom=zoom)


@pytest.mark.parametrize(
    ("recons", "ref", "error", "match"),
    [
        ({}, torch.zeros(8, 8), ValueError, "recons is empty"),
        ([torch.zeros(8, 8)], torch.zeros(8, 8), TypeError, "recons must be a dict"),
        ({"a": torch.zeros(8, 8)}, torch.zeros(2, 8, 8), ValueError, r"ref must be an \(H, W\) image"),
        ({"a": torch.zeros(8, 8)}, np.zeros((8, 8)), TypeError, "ref must be a torch.Tensor"),
        ({"a": np.zeros((8, 8))}, torch.zeros(8, 8), TypeError, r"recons\['a'\] must be a torch.Tensor"),
        ({"a": torch.zeros(8, 8), "b": torch.zeros(8, 7)}, torch.zeros(8, 8), ValueError, r"recons\['b'\]"),
    ],
)
def test_show_comparison_refuses_bad_input(recons, ref, error, match):
    with pytest.raises(error, match=match):
        viz.show_comparison(recons, ref)


def test_log_kspace_compresses_relative_to_the_peak():
    k = torch.zeros(8, 8, dtype=torch.complex64)
    k[4, 4], k[0, 0] = 3 + 4j, 5e-4
    shown = viz.log_kspace(k)
    assert shown.dtype == torch.float32 and shown.shape == k.shape
    # Default scale 1e-4 * peak = 5e-4: the peak maps to log(1 + 1e4), the faint sample to log(2).
    assert shown[4, 4].item() == pytest.approx(np.log1p(1e4), rel=1e-5)
    assert shown[0, 0].item() == pytest.approx(np.log(2), rel=1e-4)
    assert viz.log_kspace(k, scale=5.0)[4, 4].item() == pytest.approx(np.log(2), rel=1e-6)
    assert torch.equal(viz.log_kspace(torch.zeros(3, 3)), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="scale must be > 0"):
        viz.log_kspace(k, scale=0.0)


# ------------------------------------------------------------------ the precomputed explorer


def test_explorer_inlines_every_frame_and_loads_nothing():
    frames = [viz.show_images(_complex_image(seed)) for seed in range(2)] + [_png_bytes()]
    labels = ["R = 2", "R = 4", "<R = 8>"]
    page = viz.precomputed_explorer(frames, labels, title="acceleration").data
    encoded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(encoded) == 3
    assert all(base64.b64decode(data).startswith(viz.PNG_SIGNATURE) for data in encoded)
    # Nothing to fetch: every source is inline, and no address remains once the images are taken out.
    assert re.findall(r'src="([a-z]+:)', page) == ["data:"] * 3
    assert not re.search(r"https?:|//", re.sub(r"base64,[A-Za-z0-9+/=]+", "", page), flags=re.IGNORECASE)
    assert 'type="range" min="0" max="2"' in page and "oninput=" in page
    assert "&lt;R = 8&gt;" in page and "<R = 8>" not in page  # labels are escaped
    assert page.count("display:block") == 1  # one frame at a time


def test_explorer_ids_are_unique_per_call():
    frames, labels = [_png_bytes()], ["only"]
    first, second = (set(re.findall(r'id="([^"]+)"', viz.precomputed_explorer(frames, labels).data)) for _ in "ab")
    assert first and second and not first & second
    # The handler addresses the elements of its own explorer.
    page = viz.precomputed_explorer(frames, labels).data
    uid = re.search(r'<div id="([^"]+)" class="mrtutor-explorer">', page).group(1)
    handler = re.search(r'oninput="([^"]+)"', page).group(1)
    assert set(re.findall(r"getElementById\('([^']+)'", handler)) == {f"{uid}-", f"{uid}-label"}
    assert f'id="{uid}-0"' in page and f'id="{uid}-label"' in page


def test_explorer_closes_pyplot_frames_so_they_do_not_show_twice():
    fig = plt.figure()
    fig.add_subplot().imshow(np.eye(4))
    viz.precomputed_explorer([fig], ["eye"])
    assert fig.number not in plt.get_fignums()


@pytest.mark.parametrize(
    ("frames", "labels", "error", "match"),
    [
        ([], [], ValueError, "frames is empty"),
        ([b"\x89PNG\r\n\x1a\n"], ["a", "b"], ValueError, "labels has 2 entries; expected one per frame"),
        ([b"GIF89a"], ["a"], ValueError, r"frames\[0\] is bytes but not a PNG"),
        (["x.png"], ["a"], TypeError, r"frames\[0\] must be"),
        ([b"\x89PNG\r\n\x1a\n"], "a", TypeError, "labels must be a list"),
        ([b"\x89PNG\r\n\x1a\n"], [1], TypeError, r"labels\[0\] must be a str"),
    ],
)
def test_explorer_refuses_bad_input(frames, labels, error, match):
    with pytest.raises(error, match=match):
        viz.precomputed_explorer(frames, labels)


def test_paper_vs_book_draws_a_panel_per_column_and_leaves_missing_paper_values_out():
    paper = {"6x": {"TV": 34.5, "MoDL": 39.24}, "10x": {"TV": 31.98, "MoDL": 37.35}}
    book = {"6x": {"TV": 33.0, "CG-SENSE": 30.0, "MoDL": 35.9}, "10x": {"TV": 30.0, "CG-SENSE": 27.0, "MoDL": 34.7}}
    fig = viz.paper_vs_book(paper, book)
    assert [ax.get_title() for ax in fig.axes] == ["6x", "10x"]
    for ax, column in zip(fig.axes, book):
        paper_bars, book_bars = ax.containers
        assert [bar.get_height() for bar in book_bars] == list(book[column].values())
        heights = [bar.get_height() for bar in paper_bars]
        assert heights[0] == paper[column]["TV"] and np.isnan(heights[1]) and heights[2] == paper[column]["MoDL"]
        assert [label.get_text() for label in ax.get_xticklabels()] == list(book[column])


def test_paper_vs_book_refuses_columns_the_book_lacks():
    with pytest.raises(ValueError, match="columns that book lacks"):
        viz.paper_vs_book({"4x": {"a": 1.0}}, {"6x": {"a": 1.0}})
    with pytest.raises(ValueError, match="book is empty"):
        viz.paper_vs_book({}, {})
