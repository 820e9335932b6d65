"""Small helpers shared by the classical baselines: task geometry, the internal validation split
and Platt calibration of a one-dimensional score."""

from __future__ import annotations

import numpy as np
from lensbench.baselines.contract import TaskInfo
from lensbench.baselines.features import DEFAULT_PIXEL_SCALE, band_names
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split


def task_geometry(X, info: TaskInfo | None) -> tuple[float, tuple[str, ...]]:
    """(pixel scale in arcsec/px, band names): from ``info``, else 0.2"/px and positional names."""
    n_bands = np.shape(X)[1]
    if info is None:
        return DEFAULT_PIXEL_SCALE, band_names(None, n_bands)
    return float(info.pixel_scale), band_names(info.bands, n_bands)


def validation_split(y, fraction: float, random_state) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): a ``fraction`` held out, stratified by label when every class
    has at least two members, seeded by ``random_state``."""
    y = np.asarray(y)
    index = np.arange(len(y))
    counts = np.unique(y, return_counts=True)[1]
    n_val = int(round(fraction * len(y)))
    if not 0.0 < fraction < 1.0 or n_val < 1 or n_val >= len(y):
        raise ValueError(f"validation_fraction {fraction} leaves no train or validation data "
                         f"for {len(y)} examples")
    stratify = y if counts.min() >= 2 and n_val >= len(counts) else None
    train, val = train_test_split(index, test_size=n_val, stratify=stratify,
                                  random_state=random_state)
    return np.sort(train), np.sort(val)


def platt_fit(raw, y) -> tuple[float, float]:
    """(slope, intercept) of p = sigmoid(slope raw + intercept) fitted on labels ``y`` (Platt
    scaling); with a single class, a unit slope about the median score. Monotone: never changes
    a ranking."""
    raw = np.asarray(raw, dtype=np.float64)
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        return 1.0, -float(np.median(raw)) if len(raw) else 0.0
    model = LogisticRegression(C=1.0).fit(raw[:, None], y)
    slope = float(model.coef_[0, 0])
    return (slope if slope > 0 else 1e-6), float(model.intercept_[0])


def platt_apply(raw, calibration: tuple[float, float]) -> np.ndarray:
    slope, intercept = calibration
    z = slope * np.asarray(raw, dtype=np.float64) + intercept
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid, overflow-free
