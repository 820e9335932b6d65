"""Colour composites and image galleries of lens / non-lens cutouts.

Composites use the Lupton et al. 2004 asinh scheme (``astropy.visualization.make_lupton_rgb``):
the stretch acts on the total intensity, so colours are preserved while bright cores and faint
arcs are both visible.  Bands are given blue -> red; the reddest three become (R, G, B).

Only the object-oriented matplotlib API is used (``Figure`` + ``FigureCanvasAgg``), so nothing
touches pyplot's global figure registry or opens a window.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.visualization import LuptonAsinhStretch, ManualInterval, make_lupton_rgb
from lensbench.datasets.files import atomic_savefig
from lensbench.datasets.robust import mad_sigma
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["auto_lupton_parameters", "colour_composite", "grouped_layout", "save_gallery"]

_DPI = 110
# LuptonAsinhStretch maps x to asinh(Q x / stretch) * frac / asinh(frac Q) with frac = 0.1, so
# an intensity x_sat = stretch * sinh(asinh(frac Q) / frac) / Q reaches full brightness, and the
# response is linear below x_lin = stretch / Q.  The dynamic range x_sat / x_lin depends on Q only.
_FRAC = 0.1
_Q_MIN, _Q_MAX = 0.5, 12.0
_SAT_PERCENTILE = 99.5  # intensity percentile that is mapped to full brightness
_NOISE_SIGMAS = 2.0  # the asinh compression starts this many noise sigmas above zero


def _dynamic_range(q: float) -> float:
    return math.sinh(math.asinh(_FRAC * q) / _FRAC)


def auto_lupton_parameters(intensity: np.ndarray) -> tuple[float, float]:
    """Per-image ``(stretch, Q)`` for a Lupton composite of ``intensity`` (>= 0 after minimum).

    Per-image normalisation, so faint and bright stamps are both visible: the 99.5th percentile
    of the intensity is mapped to full brightness, and Q is chosen so that the response stays
    linear up to ~2 noise sigmas (noise from the MAD) and compresses (asinh) above that.  A
    noise-only stamp therefore gets a nearly linear stretch, a bright lens a strongly
    compressive one.  Degenerate inputs (all zero, constant) give finite defaults.
    """
    values = np.asarray(intensity, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 1.0, 8.0
    x_sat = float(np.percentile(values, _SAT_PERCENTILE))
    if not x_sat > 0.0:
        x_sat = float(values.max())
    if not x_sat > 0.0:
        return 1.0, 8.0  # nothing above the minimum: the composite is black whatever we choose
    sigma = float(mad_sigma(values))
    if sigma > 0.0:
        target = max(x_sat / (_NOISE_SIGMAS * sigma), 1.0)
        # invert D = sinh(asinh(frac Q) / frac) for Q
        q = math.sinh(_FRAC * math.asinh(target)) / _FRAC
    else:
        q = _Q_MAX
    q = min(max(q, _Q_MIN), _Q_MAX)
    stretch = x_sat * q / _dynamic_range(q)
    return stretch, q


def _rgb_planes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = image.shape[0]
    if n >= 3:
        return image[-1], image[-2], image[-3]
    if n == 2:
        return image[1], 0.5 * (image[0] + image[1]), image[0]
    return image[0], image[0], image[0]


def colour_composite(
    image: np.ndarray,
    bands: Sequence[str],
    *,
    stretch: float | None = None,
    Q: float | None = None,
    minimum: float | Sequence[float] = 0.0,
) -> np.ndarray:
    """(H, W, 3) uint8 Lupton colour composite of a (B, H, W) cutout.

    ``bands`` lists the image's bands blue -> red (one per plane).  With >= 3 bands the
    reddest three are used: (R, G, B) = (bands[-1], bands[-2], bands[-3]), e.g. g,r,i,z ->
    R=z, G=i, B=r.  With 2 bands R=bands[-1], B=bands[0] and G is their mean; one band gives a
    grey image.  ``stretch`` and ``Q`` default to per-image values from
    :func:`auto_lupton_parameters`; pass them to fix the scaling across images.  ``minimum``
    (scalar or one per R, G, B) is mapped to black; the default 0 suits sky-subtracted data.
    Non-finite pixels are treated as 0.  The array is in image order (row 0 = first row of
    the cutout); show it with ``origin="lower"`` for the usual astronomical orientation.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must have shape (B, H, W); got shape {image.shape}")
    if len(bands) != image.shape[0]:
        raise ValueError(
            f"expected one band name per image plane ({image.shape[0]}); got {len(bands)}: "
            f"{list(bands)}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    image = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    r, g, b = _rgb_planes(image)

    mins = np.broadcast_to(np.asarray(minimum, dtype=np.float64), (3,))
    if stretch is None or Q is None:
        # same intensity as RGBImageMappingLupton: mean of the minimum-subtracted planes
        intensity = ((r - mins[0]) + (g - mins[1]) + (b - mins[2])) / 3.0
        auto_stretch, auto_q = auto_lupton_parameters(intensity)
        stretch = auto_stretch if stretch is None else stretch
        Q = auto_q if Q is None else Q
    if not stretch > 0:
        raise ValueError(f"stretch must be > 0; got {stretch}")

    # explicit interval: make_lupton_rgb's ``minimum`` keyword is deprecated in astropy
    interval = [ManualInterval(vmin=float(m), vmax=None) for m in mins]
    # astropy computes f(I)/I everywhere before masking I <= 0: silence its 0/0 warnings
    with np.errstate(invalid="ignore", divide="ignore"):
        rgb = make_lupton_rgb(
            r,
            g,
            b,
            interval=interval,
            stretch_object=LuptonAsinhStretch(stretch=float(stretch), Q=float(Q)),
            output_dtype=np.uint8,
        )
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def save_gallery(
    images: np.ndarray,
    bands: Sequence[str],
    captions: Sequence[str],
    path: str | os.PathLike[str],
    ncols: int = 8,
    title: str | None = None,
    panel_size: float = 1.6,
    layout: Sequence[int | None] | None = None,
) -> Path:
    """Write a PNG grid of colour composites of ``images`` (N, B, H, W), one caption per panel.

    Each panel is scaled on its own (see :func:`colour_composite`).  ``layout`` (optional) gives
    the grid's panels in reading order: an image index, or None for an empty panel (e.g. from
    :func:`grouped_layout`, to start each group on a new row); by default image i is panel i.
    Parent directories are created.  Returns the path written.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, B, H, W); got shape {images.shape}")
    n = images.shape[0]
    if n == 0:
        raise ValueError("images is empty (N=0): nothing to draw")
    if len(captions) != n:
        raise ValueError(f"expected {n} captions (one per image); got {len(captions)}")
    if len(bands) != images.shape[1]:
        raise ValueError(
            f"expected {images.shape[1]} band names (one per image plane); got {len(bands)}: "
            f"{list(bands)}"
        )
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1; got {ncols}")
    if not panel_size > 0:
        raise ValueError(f"panel_size must be > 0; got {panel_size}")

    if layout is None:
        layout = list(range(n))
    layout = list(layout)
    if any(i is not None and not 0 <= i < n for i in layout):
        raise ValueError(f"layout indices must lie in [0, {n}) or be None; got {layout}")
    ncols = min(ncols, len(layout))
    nrows = math.ceil(len(layout) / ncols)
    caption_h = 0.22  # inches of room for a one-line caption above each panel
    title_h = 0.35 if title else 0.0
    fig = Figure(
        figsize=(ncols * panel_size, nrows * (panel_size + caption_h) + title_h), dpi=_DPI
    )
    FigureCanvasAgg(fig)
    try:
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for slot, ax in enumerate(axes.ravel()):
            ax.set_xticks([])
            ax.set_yticks([])
            i = layout[slot] if slot < len(layout) else None
            if i is None:
                ax.set_axis_off()
                continue
            ax.imshow(colour_composite(images[i], bands), origin="lower", interpolation="nearest")
            ax.set_title(str(captions[i]), fontsize=7, pad=2)
        if title:
            fig.suptitle(title, fontsize=10)
        height = fig.get_figheight()
        fig.subplots_adjust(
            left=0.01,
            right=0.99,
            bottom=0.01,
            top=1.0 - (title_h + caption_h) / height,  # the first row's captions sit above it
            wspace=0.04,
            hspace=caption_h / panel_size,  # hspace is in units of the mean axes height
        )
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_savefig(fig, out, dpi=_DPI)
    finally:
        fig.clear()
    return out


def grouped_layout(groups: Sequence[Sequence[int]], ncols: int) -> list[int | None]:
    """Panels for :func:`save_gallery` with each group of image indices starting a new row of
    ``ncols`` (a group longer than a row wraps); None marks the empty panels."""
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1; got {ncols}")
    layout: list[int | None] = []
    for group in groups:
        group = list(group)
        layout += group + [None] * (-len(group) % ncols)
    return layout
