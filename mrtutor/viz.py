"""Figures the chapters share: image grids, reconstructions against a reference, k-space for display,
and a precomputed slider that keeps an exploration useful on the static website.

Images are shown by magnitude (complex or real, torch tensors or numpy arrays, any device). The
figures are ``matplotlib.figure.Figure`` objects outside pyplot: a figure shows when it is a cell's
last expression (or through ``IPython.display.display(fig)``), exactly once, and figures made only
to become frames of ``precomputed_explorer`` never show on their own.
"""

from __future__ import annotations

import base64
import html
import io
import sys
import uuid
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mrtutor.metrics import psnr, ssim

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _magnitudes(images, name: str) -> list[np.ndarray]:
    """``images`` ((H, W), (N, H, W) or a sequence of (H, W)) as a list of float (H, W) magnitudes."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        if images.ndim not in (2, 3):
            raise ValueError(
                f"{name} has shape {tuple(images.shape)}; expected (H, W), (N, H, W) or a list of (H, W)"
            )
        stack = [images] if images.ndim == 2 else list(images)
    elif isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        stack = list(images)
    else:
        raise TypeError(f"{name} must be a tensor, an array or a list of them, got {type(images).__name__}")
    if not stack:
        raise ValueError(f"{name} is empty; expected at least one (H, W) image")
    result = []
    for index, image in enumerate(stack):
        if not isinstance(image, (torch.Tensor, np.ndarray)):
            raise TypeError(f"{name}[{index}] must be a tensor or an array, got {type(image).__name__}")
        if image.ndim != 2:
            raise ValueError(f"{name}[{index}] has shape {tuple(image.shape)}; expected (H, W)")
        result.append(torch.as_tensor(image).detach().abs().cpu().double().numpy())
    return result


def _grid(count: int, ncols: int, figsize_per: float) -> tuple[Figure, np.ndarray]:
    """A figure with ``count`` image axes (axes off) on ``ncols`` columns; the spare cells removed."""
    nrows = -(-count // ncols)
    fig = Figure(figsize=(ncols * figsize_per, nrows * figsize_per), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.remove()
    for ax in axes[:count]:
        ax.set_axis_off()
    return fig, axes[:count]


def show_images(
    images,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    cmap: str = "gray",
    vmax: float | None = None,
    figsize_per: float = 2.5,
    suptitle: str | None = None,
) -> Figure:
    """A grid of magnitude images.

    Args:
        images: one image (H, W), a stack (N, H, W) or a list of (H, W) images; real or complex.
        titles: one title per image, or None.
        ncols: columns of the grid; default all images on one row, at most 5 per row.
        cmap: matplotlib colour map.
        vmax: the grey level shown white, shared by every image; default each image's own maximum.
            Black is always 0.
        figsize_per: inches per image cell.
        suptitle: a title over the whole grid.
    Returns:
        The figure, with one axes per image.
    """
    magnitudes = _magnitudes(images, "images")
    count = len(magnitudes)
    if titles is not None and len(titles) != count:
        raise ValueError(f"titles has {len(titles)} entries; expected one per image ({count})")
    if ncols is None:
        ncols = min(count, 5)
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    if figsize_per <= 0:
        raise ValueError(f"figsize_per must be > 0 inches, got {figsize_per}")
    fig, axes = _grid(count, ncols, figsize_per)
    for index, (ax, image) in enumerate(zip(axes, magnitudes)):
        ax.imshow(image, cmap=cmap, vmin=0, vmax=image.max() if vmax is None else vmax)
        if titles is not None:
            ax.set_title(titles[index])
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def error_map(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Absolute difference of magnitudes, ``||x| - |ref||``, the error map the chapters show.

    Args:
        x: reconstruction (..., H, W), real or complex.
        ref: reference of the same shape.
    Returns:
        Real tensor (..., H, W) on ``x``'s device.
    """
    for name, value in (("x", x), ("ref", ref)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if x.shape != ref.shape:
        raise ValueError(f"x and ref must have the same shape, got x {tuple(x.shape)} and ref {tuple(ref.shape)}")
    return (x.abs() - ref.abs().to(x.device)).abs()


def show_comparison(
    recons: Mapping[str, torch.Tensor],
    ref: torch.Tensor,
    metrics: bool = True,
    error_scale: float | None = None,
    figsize_per: float = 2.5,
    zoom: tuple[float, float, float] | None = None,
) -> Figure:
    """Reconstructions beside their reference, with their scores and error maps.

    Top row: the reference, then each reconstruction, all on the reference's grey scale (0 to its
    maximum magnitude); with ``metrics``, each title gives PSNR and SSIM against ``ref``
    (``mrtutor.metrics``). Bottom row: under each reconstruction its ``error_map`` on one shared
    scale, with a colour bar.

    Args:
        recons: name -> reconstruction (H, W), real or complex; at least one.
        ref: reference image (H, W).
        metrics: whether to put PSNR and SSIM in the titles.
        error_scale: the error shown brightest; default the largest error of all maps.
        figsize_per: inches per image cell.
        zoom: ``(top, left, side)`` of a square region as fractions of the image's height and width:
            it is framed in every top-row image and shown enlarged in an inset in its lower right
            corner, as the papers' figures zoom into detail.
    Returns:
        The figure: 1 + 2 * len(recons) image axes (each top-row one with its inset when zoomed),
        then the colour bar's axes.
    """
    if not isinstance(recons, Mapping):
        raise TypeError(f"recons must be a dict of name -> (H, W) image, got {type(recons).__name__}")
    if not recons:
        raise ValueError("recons is empty; expected at least one name -> (H, W) reconstruction")
    if not isinstance(ref, torch.Tensor):
        raise TypeError(f"ref must be a torch.Tensor, got {type(ref).__name__}")
    if ref.dim() != 2:
        raise ValueError(f"ref must be an (H, W) image, got shape {tuple(ref.shape)}")
    for name, image in recons.items():
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"recons[{name!r}] must be a torch.Tensor, got {type(image).__name__}")
        if image.shape != ref.shape:
            raise ValueError(f"recons[{name!r}] has shape {tuple(image.shape)}; expected ref's {tuple(ref.shape)}")
    if error_scale is not None and not error_scale > 0:
        raise ValueError(f"error_scale must be > 0, got {error_scale}")
    if zoom is not None:
        if len(zoom) != 3 or not (0 <= zoom[0] < 1 and 0 <= zoom[1] < 1 and 0 < zoom[2] <= 1
                                  and zoom[0] + zoom[2] <= 1 and zoom[1] + zoom[2] <= 1):
            raise ValueError(f"zoom must be (top, left, side) fractions with the square inside the image, got {zoom}")

    recons = {name: image.detach().to(ref.device) for name, image in recons.items()}
    ref = ref.detach()
    errors = {name: error_map(image, ref).cpu().double().numpy() for name, image in recons.items()}
    if error_scale is None:
        # Identical images have no error to scale; any positive scale then shows them black.
        error_scale = max(error.max() for error in errors.values()) or 1.0
    peak = ref.abs().max().item()

    columns = len(recons) + 1
    fig = Figure(figsize=(columns * figsize_per, 2 * figsize_per + 0.6), layout="constrained")
    axes = fig.subplots(2, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    axes[1, 0].remove()
    region = None
    if zoom is not None:
        h, w = ref.shape
        top, left, side = round(zoom[0] * h), round(zoom[1] * w), max(2, round(zoom[2] * min(h, w)))
        region = (slice(top, top + side), slice(left, left + side))

    def draw(ax, image):
        magnitude = image.abs().cpu().numpy()
        ax.imshow(magnitude, cmap="gray", vmin=0, vmax=peak)
        if region is not None:
            rows, cols = region
            ax.add_patch(Rectangle((cols.start - 0.5, rows.start - 0.5), cols.stop - cols.start, rows.stop - rows.start,
                                   fill=False, edgecolor="yellow", linewidth=1))
            inset = ax.inset_axes([0.58, 0.0, 0.42, 0.42])
            inset.imshow(magnitude[rows, cols], cmap="gray", vmin=0, vmax=peak)
            inset.set_xticks([])
            inset.set_yticks([])
            for spine in inset.spines.values():
                spine.set_edgecolor("yellow")

    draw(axes[0, 0], ref)
    axes[0, 0].set_title("reference")
    for column, (name, image) in enumerate(recons.items(), start=1):
        title = name
        if metrics:
            title = f"{name}\nPSNR {psnr(image, ref).item():.2f} dB, SSIM {ssim(image, ref).item():.3f}"
        draw(axes[0, column], image)
        axes[0, column].set_title(title)
        shown = axes[1, column].imshow(errors[name], cmap="inferno", vmin=0, vmax=error_scale)
        axes[1, column].set_title("|error|")
    fig.colorbar(shown, ax=list(axes[1, 1:]), shrink=0.8)
    return fig


def paper_vs_book(
    paper: Mapping[str, Mapping[str, float]],
    book: Mapping[str, Mapping[str, float]],
    ylabel: str = "PSNR (dB)",
    figsize_per: float = 3.2,
) -> Figure:
    """The paper's numbers beside the book's, as grouped bars: one panel per column of the table.

    Args:
        paper: column (e.g. "6x") -> method -> the paper's value; a method it lacks gets no paper bar.
        book: column -> method -> the book's value, for the same columns; its methods set the order.
        ylabel: what the values are.
        figsize_per: inches per panel.
    Returns:
        The figure: one axes per column, each with a legend ("paper", "this book").
    """
    if not book:
        raise ValueError("book is empty; expected column -> method -> value")
    if set(paper) - set(book):
        raise ValueError(f"paper has columns that book lacks: {sorted(set(paper) - set(book))}")
    fig = Figure(figsize=(len(book) * figsize_per + 0.5, 3.2), layout="constrained")
    axes = fig.subplots(1, len(book), squeeze=False, sharey=True)[0]
    values = [v for column in book.values() for v in column.values()]
    values += [v for column in paper.values() for v in column.values()]
    low, high = min(values), max(values)
    for ax, (column, ours) in zip(axes, book.items()):
        theirs = paper.get(column, {})
        names = list(ours)
        positions = np.arange(len(names))
        ax.bar(positions - 0.2, [theirs.get(n, np.nan) for n in names], 0.4, label="paper", color="lightgray",
               edgecolor="k", hatch="//")
        ax.bar(positions + 0.2, [ours[n] for n in names], 0.4, label="this book", color="tab:blue")
        ax.set_xticks(positions, names, rotation=30, ha="right", fontsize=8)
        ax.set_title(column)
        ax.set_ylim(low - 0.15 * (high - low) - 1, high + 0.1 * (high - low) + 0.5)  # bars differ near the top
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=8, loc="lower left")
    return fig


def log_kspace(k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """``log(1 + |k| / scale)``: k-space compressed so that its faint outer part is visible.

    Args:
        k: k-space of any shape, real or complex.
        scale: magnitudes far below it map to about 0; default 1e-4 times the peak magnitude, which
            keeps four decades visible whatever the data's units.
    Returns:
        Real tensor of ``k``'s shape on its device (all zero when ``k`` is).
    """
    if not isinstance(k, torch.Tensor):
        raise TypeError(f"k must be a torch.Tensor, got {type(k).__name__}")
    magnitude = k.detach().abs()
    if scale is None:
        scale = 1e-4 * magnitude.max().item()
        if scale == 0:
            return magnitude
    elif not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return torch.log1p(magnitude / scale)


def figure_png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes, cropped to what it draws."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _draw_in_ipython() -> None:
    """Let IPython draw every Figure as a PNG from the first cell on.

    IPython learns to draw figures only when pyplot first picks its inline backend; before that,
    a figure made outside pyplot (as these are) shows as the text ``<Figure size ... with N Axes>``.
    Registering the same PNG formatter here makes a fresh kernel draw it.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


_draw_in_ipython()


def _png(frame, index: int) -> bytes:
    """A frame (a figure or PNG bytes) as PNG bytes."""
    if isinstance(frame, Figure):
        png = figure_png(frame)
        # A pyplot figure would otherwise also show below the explorer when the cell ends.
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close(frame)
        return png
    if isinstance(frame, (bytes, bytearray)):
        if not bytes(frame).startswith(PNG_SIGNATURE):
            raise ValueError(f"frames[{index}] is bytes but not a PNG image")
        return bytes(frame)
    raise TypeError(f"frames[{index}] must be a matplotlib Figure or PNG bytes, got {type(frame).__name__}")


def precomputed_explorer(frames: Sequence, labels: Sequence[str], title: str = ""):
    """A slider over precomputed images, for pages where no kernel runs (the book's website).

    The result is self-contained HTML: every frame is an inline base64 PNG, and a small ``oninput``
    handler on an ``<input type="range">`` shows one frame and its label at a time; nothing is loaded
    from anywhere. Element ids are unique per call, so several explorers can share a page. Every
    frame lands in the page, so keep them few and small (a dozen figures of a few images each).

    Args:
        frames: matplotlib figures (pyplot ones are closed once drawn) or PNG bytes, at least one.
        labels: one label per frame, e.g. ``"acceleration 4x"``.
        title: a line above the slider.
    Returns:
        ``IPython.display.HTML``; as a cell's last expression it shows the explorer.
    """
    from IPython.display import HTML

    if isinstance(frames, (str, bytes)) or not isinstance(frames, Sequence):
        raise TypeError(f"frames must be a list of figures or PNG bytes, got {type(frames).__name__}")
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a list of strings, got {type(labels).__name__}")
    if not frames:
        raise ValueError("frames is empty; expected at least one figure or PNG")
    if len(labels) != len(frames):
        raise ValueError(f"labels has {len(labels)} entries; expected one per frame ({len(frames)})")
    for index, label in enumerate(labels):
        if not isinstance(label, str):
            raise TypeError(f"labels[{index}] must be a str, got {type(label).__name__}")

    uid = f"mrtutor-explorer-{uuid.uuid4().hex[:12]}"
    images = []
    for index, frame in enumerate(frames):
        encoded = base64.b64encode(_png(frame, index)).decode("ascii")
        visibility = "block" if index == 0 else "none"
        images.append(
            f'<img id="{uid}-{index}" src="data:image/png;base64,{encoded}" '
            f'alt="{html.escape(labels[index])}" style="display:{visibility};max-width:100%">'
        )
    # Show frame `value`, hide the others, and copy its alt text into the label.
    script = (
        f"for(var i=0;i<{len(frames)};i++){{document.getElementById('{uid}-'+i).style.display="
        f"(i==this.value)?'block':'none';}}"
        f"document.getElementById('{uid}-label').textContent="
        f"document.getElementById('{uid}-'+this.value).alt;"
    )
    heading = f"<div><strong>{html.escape(title)}</strong></div>" if title else ""
    return HTML(
        f'<div id="{uid}" class="mrtutor-explorer">{heading}'
        f'<input type="range" min="0" max="{len(frames) - 1}" step="1" value="0" '
        f'aria-label="{html.escape(title or "frame")}" oninput="{script}"> '
        f'<span id="{uid}-label">{html.escape(labels[0])}</span>'
        f"<div>{''.join(images)}</div></div>"
    )
