"""The one robust sigma (datasets/robust.py) against hand-worked cases and astropy's mad_std."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import mad_std
from lensbench.datasets.robust import NMAD_SCALE, mad_sigma


def test_hand_worked_outlier_is_ignored():
    # median 3; deviations 2, 1, 0, 1, 97 -> median 1
    assert mad_sigma([1.0, 2.0, 3.0, 4.0, 100.0]) == pytest.approx(1.4826, abs=0)


def test_axis_per_row_and_over_several_axes():
    values = np.array([[0.0, 1.0, 5.0], [10.0, 10.0, 13.0]])
    # rows: medians 1 and 10; deviations (1, 0, 4) and (0, 0, 3) -> 1 and 0
    np.testing.assert_array_equal(mad_sigma(values, axis=1), [NMAD_SCALE, 0.0])
    cube = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    expected = [NMAD_SCALE * np.median(np.abs(cube[:, b] - np.median(cube[:, b])))
                for b in range(3)]
    np.testing.assert_array_equal(mad_sigma(cube, axis=(0, 2)), expected)


def test_float32_stays_float32():
    values = np.random.default_rng(0).normal(size=(4, 50)).astype(np.float32)
    assert mad_sigma(values, axis=1).dtype == np.float32


def test_gaussian_sigma_agrees_with_astropy_to_its_rounding():
    values = np.random.default_rng(1).normal(0.0, 3.0, 200_001)
    assert mad_sigma(values) / mad_std(values) == pytest.approx(1.4826 / 1.482602218505602,
                                                                rel=1e-12)
    assert mad_sigma(values) == pytest.approx(3.0, rel=0.01)
