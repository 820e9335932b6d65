"""Report figures: ROC curves, score histograms and per-epoch training curves.

matplotlib only, through the object-oriented API (``Figure`` + ``FigureCanvasAgg``): nothing
touches pyplot's global state or opens a window, so this is safe in worker processes and CI.
Every function creates the parent directory of ``path``, writes a PNG and returns the path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from lensbench.datasets.files import atomic_savefig
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

__all__ = ["curve_panels", "plot_curves", "plot_roc_curves", "plot_score_histograms"]

_DPI = 110
_MIN_LOG_FPR = 1e-5


def _new_figure(figsize: tuple[float, float] = (5.0, 4.0)) -> Figure:
    fig = Figure(figsize=figsize, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.tight_layout()
        atomic_savefig(fig, out, dpi=_DPI)
    finally:
        fig.clear()
    return out


def plot_roc_curves(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    path: str | os.PathLike[str],
    title: str | None = None,
    log_fpr: bool = True,
) -> Path:
    """Overlay ROC curves ``{method: (fpr, tpr)}`` with a chance diagonal; write a PNG.

    With ``log_fpr`` the x axis is logarithmic from 1e-5 to 1 and false-positive rates are
    clipped to >= 1e-5 (so the (0, 0) point and zero-FPR plateau show at the left edge).
    """
    if not curves:
        raise ValueError("curves is empty: expected {method name: (fpr, tpr)}")
    checked = {}
    for name, pair in curves.items():
        if len(pair) != 2:
            raise ValueError(f"curve {name!r}: expected a (fpr, tpr) pair; got {len(pair)} items")
        fpr = np.asarray(pair[0], dtype=np.float64).ravel()
        tpr = np.asarray(pair[1], dtype=np.float64).ravel()
        if fpr.shape != tpr.shape or fpr.size == 0:
            raise ValueError(
                f"curve {name!r}: fpr and tpr must be non-empty and the same length; "
                f"got {fpr.size} and {tpr.size}"
            )
        checked[str(name)] = (fpr, tpr)

    fig = _new_figure((5.2, 4.4))
    ax = fig.add_subplot()
    if log_fpr:
        chance = np.logspace(np.log10(_MIN_LOG_FPR), 0.0, 200)
    else:
        chance = np.array([0.0, 1.0])
    ax.plot(chance, chance, color="0.6", linestyle="--", linewidth=1.0, label="chance")
    for name, (fpr, tpr) in checked.items():
        x = np.clip(fpr, _MIN_LOG_FPR, None) if log_fpr else fpr
        ax.plot(x, tpr, linewidth=1.5, label=name)
    if log_fpr:
        ax.set_xscale("log")
        ax.set_xlim(_MIN_LOG_FPR, 1.0)
    else:
        ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_score_histograms(
    y_true: ArrayLike,
    scores: ArrayLike,
    path: str | os.PathLike[str],
    title: str | None = None,
    bins: int | Sequence[float] = 40,
) -> Path:
    """Step histograms (density) of the scores of lenses (``y_true`` = 1) and non-lenses.

    Both classes share the bin edges.  Non-finite scores are left out (and not counted in the
    ``n=`` of the legend); a class with no finite score is listed in the legend but not drawn.
    """
    y = np.asarray(y_true).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true and scores must have the same length; got {y.size} and {s.size}")
    if y.size == 0:
        raise ValueError("y_true and scores are empty")
    is_lens = y.astype(bool)
    finite = np.isfinite(s)
    if not finite.any():
        raise ValueError("no finite scores to histogram")
    edges = np.histogram_bin_edges(s[finite], bins=bins)

    fig = _new_figure((5.2, 4.0))
    ax = fig.add_subplot()
    for mask, label, colour in (
        (is_lens & finite, "lenses", "C3"),
        (~is_lens & finite, "non-lenses", "C0"),
    ):
        values = s[mask]
        text = f"{label} (n={values.size})"
        if values.size:
            ax.hist(values, bins=edges, density=True, histtype="step", linewidth=1.5,
                    color=colour, label=text)
        else:
            ax.plot([], [], color=colour, label=text)
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def curve_panels(curves: Mapping[str, Sequence[float]]) -> dict[str, dict[str, Sequence[float]]]:
    """Group curves ``{"member0/val_x/rmse": [...], "train_loss": [...]}`` into one panel per
    quantity: ``{"x/rmse": {"member0 val": [...]}, "loss": {"train": [...]}}``. A committee's
    members and a net's train/validation values of one quantity share a panel (and a scale)."""
    panels: dict[str, dict[str, Sequence[float]]] = {}
    for name, values in curves.items():
        # a member's prefix is split off; the rest is the quantity ("theta_e/half_width_68")
        prefix, _, metric = str(name).partition("/")
        if not re.fullmatch(r"member\d+", prefix):
            prefix, metric = "", str(name)
        split = ""
        for part in ("train_", "val_"):
            if metric.startswith(part):
                split, metric = part[:-1], metric[len(part):]
        label = " ".join(word for word in (prefix, split) if word) or metric
        panels.setdefault(metric, {})[label] = values
    return panels


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    xlabel: str = "epoch",
    ylabel: str | None = None,
    title: str | None = None,
) -> Path:
    """Per-epoch curves ``{name: [value per epoch]}``, one panel per quantity (`curve_panels`);
    x runs 1, 2, ..., n. ``ylabel`` labels a single panel; with several, each is titled by its
    quantity. Curves may have different lengths; NaN values leave gaps.
    """
    if not curves:
        raise ValueError("curves is empty: expected {name: [value per epoch]}")
    panels = curve_panels(curves)
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig = _new_figure((3.6 * columns + 0.6, 2.8 * rows + 0.4))
    for i, (metric, lines) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, columns, i + 1)
        for label, values in lines.items():
            v = np.asarray(values, dtype=np.float64).ravel()
            ax.plot(np.arange(1, v.size + 1), v, marker="o" if v.size <= 30 else None,
                    markersize=2.5, label=label)
        ax.set_xlabel(xlabel)
        if len(panels) == 1 and ylabel:
            ax.set_ylabel(ylabel)
        else:
            ax.set_title(metric, fontsize=9)
        ax.grid(True, alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def display_bands(bands: list[str]) -> tuple[list[str], list[int]]:
    """Bands for a colour composite: g, r, i where present, else the reddest three."""
    if all(b in bands for b in ("g", "r", "i")):
        chosen = ["g", "r", "i"]
    else:
        chosen = list(bands[-3:])
    return chosen, [bands.index(b) for b in chosen]
