"""Tests for lensbench.bench.metrics (Metcalf et al. 2019 lens-finding figures of merit).

Expected values are worked out by hand in the comments; the scikit-learn comparison is the only
place where an external implementation provides the reference.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from lensbench.bench.metrics import (
    RocCurve,
    auroc,
    binned_lens_finding_metrics,
    expected_calibration_error,
    lens_finding_metrics,
    roc_points,
    tpr0,
    tpr10,
    tpr_at_fpr,
)
from sklearn.metrics import roc_auc_score, roc_curve

METRIC_KEYS = [
    "auroc",
    "tpr0",
    "tpr10",
    "tpr_fpr1e-2",
    "tpr_fpr1e-3",
    "tpr_fpr1e-4",
    "n_lenses",
    "n_nonlenses",
]


# --------------------------------------------------------------------------- hand-worked ROC

# y = [1, 1, 0, 1, 0, 0] with distinct scores 0.9 ... 0.4 (3 lenses, 3 non-lenses).
# Lowering the threshold:
#   thr   called     tp fp   (fpr, tpr)
#   inf   -          0  0    (0,   0)
#   0.9   L          1  0    (0,   1/3)
#   0.8   L          2  0    (0,   2/3)
#   0.7   N          2  1    (1/3, 2/3)
#   0.6   L          3  1    (1/3, 1)
#   0.5   N          3  2    (2/3, 1)
#   0.4   N          3  3    (1,   1)
# AUROC (trapezoids): 1/3*2/3 + 1/3*1 + 1/3*1 = 2/9 + 6/9 = 8/9.
# Check by pair counting: lens 0.9 beats 3 non-lenses, 0.8 beats 3, 0.6 beats 2 -> 8/9.
# TPR0 = 2/3 (two lenses before the first non-lens); TPR10 = 1 (only 3 non-lenses).
Y_SIMPLE = np.array([1, 1, 0, 1, 0, 0])
S_SIMPLE = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])


def test_roc_points_hand_worked_distinct_scores():
    roc = roc_points(Y_SIMPLE, S_SIMPLE)
    np.testing.assert_allclose(roc.fpr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(roc.tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(roc.tp, [0, 1, 2, 2, 3, 3, 3])
    np.testing.assert_array_equal(roc.fp, [0, 0, 0, 1, 1, 2, 3])
    np.testing.assert_array_equal(roc.thresholds, [np.inf, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert (roc.n_pos, roc.n_neg) == (3, 3)
    assert auroc(Y_SIMPLE, S_SIMPLE) == pytest.approx(8 / 9, abs=1e-15)
    assert tpr0(Y_SIMPLE, S_SIMPLE) == pytest.approx(2 / 3, abs=1e-15)
    assert tpr10(Y_SIMPLE, S_SIMPLE) == 1.0


def test_input_order_does_not_matter():
    perm = np.array([4, 0, 5, 2, 1, 3])
    roc = roc_points(Y_SIMPLE[perm], S_SIMPLE[perm])
    np.testing.assert_array_equal(roc.tp, [0, 1, 2, 2, 3, 3, 3])
    np.testing.assert_array_equal(roc.fp, [0, 0, 0, 1, 1, 2, 3])
    assert auroc(Y_SIMPLE[perm], S_SIMPLE[perm]) == pytest.approx(8 / 9, abs=1e-15)


def test_bool_labels_and_integer_scores_accepted():
    # Same ranking as Y_SIMPLE/S_SIMPLE with integer scores 6..1 -> same AUROC 8/9.
    assert auroc(Y_SIMPLE.astype(bool), [6, 5, 4, 3, 2, 1]) == pytest.approx(8 / 9, abs=1e-15)


def test_roc_curve_is_frozen_and_read_only():
    roc = roc_points(Y_SIMPLE, S_SIMPLE)
    assert isinstance(roc, RocCurve)
    with pytest.raises(dataclasses.FrozenInstanceError):
        roc.n_pos = 5  # type: ignore[misc]
    with pytest.raises(ValueError):
        roc.tpr[0] = 0.5


# --------------------------------------------------------------------------- ties


# y = [1, 1, 0, 1, 0], scores [0.9, 0.7, 0.7, 0.5, 0.3]: a lens and a non-lens share 0.7.
#   thr   tp fp   (fpr, tpr)
#   inf   0  0    (0,   0)
#   0.9   1  0    (0,   1/3)
#   0.7   2  1    (1/2, 2/3)   <- both tied samples enter at once: diagonal segment
#   0.5   3  1    (1/2, 1)
#   0.3   3  2    (1,   1)
# AUROC: diagonal trapezoid 1/2*(1/3+2/3)/2 = 1/4, plus 1/2*1 = 1/2 -> 3/4.
# Pair counting with ties = 1/2: lens 0.9 beats 2; lens 0.7 ties one (1/2) and beats one (1);
# lens 0.5 beats one -> (2 + 1.5 + 1) / 6 = 3/4.
# TPR0 = 1/3: the tied group at 0.7 contains a false positive, so it is not reached.
def test_ties_are_one_threshold():
    y = [1, 1, 0, 1, 0]
    s = [0.9, 0.7, 0.7, 0.5, 0.3]
    roc = roc_points(y, s)
    np.testing.assert_allclose(roc.fpr, [0, 0, 0.5, 0.5, 1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(roc.tpr, [0, 1 / 3, 2 / 3, 1, 1], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(roc.thresholds, [np.inf, 0.9, 0.7, 0.5, 0.3])
    assert auroc(y, s) == pytest.approx(0.75, abs=1e-15)
    assert tpr0(y, s) == pytest.approx(1 / 3, abs=1e-15)


def test_all_equal_scores():
    # One threshold adds everything: ROC is exactly [(0,0), (1,1)], AUROC 1/2, TPR0 0.
    y = [1, 0, 1, 0, 0]
    s = [0.5] * 5
    roc = roc_points(y, s)
    np.testing.assert_array_equal(roc.fpr, [0.0, 1.0])
    np.testing.assert_array_equal(roc.tpr, [0.0, 1.0])
    np.testing.assert_array_equal(roc.thresholds, [np.inf, 0.5])
    assert auroc(y, s) == 0.5
    assert tpr0(y, s) == 0.0
    assert tpr10(y, s) == 1.0  # only 3 false positives in total


# --------------------------------------------------------------------------- TPR10


def _ranked_scores(seq: str) -> tuple[np.ndarray, np.ndarray]:
    """'L'/'N' string from highest to lowest score -> (y, distinct descending scores)."""
    y = np.array([1 if c == "L" else 0 for c in seq])
    return y, np.arange(len(seq), 0, -1, dtype=float)


# 5 lenses, 20 non-lenses, ordered from the highest score down:
#   L  N*5  L  N*4  L  N  L  N*10  L
# The lenses enter at fp = 0, 5, 9, 10, 20.
#   TPR0  = 1/5 (only the first lens before any false positive)
#   TPR10 = 3/5 (fp <= 9: lenses entering at fp 0, 5, 9; the 4th needs the 10th false positive)
#   AUROC = (20 + 15 + 11 + 10 + 0) / (5 * 20) = 56/100
TPR10_SEQ = "L" + "N" * 5 + "L" + "N" * 4 + "L" + "N" + "L" + "N" * 10 + "L"


def test_tpr10_hand_constructed():
    y, s = _ranked_scores(TPR10_SEQ)
    assert y.sum() == 5 and (y == 0).sum() == 20
    assert tpr10(y, s) == pytest.approx(0.6, abs=1e-15)
    assert tpr0(y, s) == pytest.approx(0.2, abs=1e-15)
    assert auroc(y, s) == pytest.approx(0.56, abs=1e-15)


def test_tpr10_tie_crossing_ten_false_positives():
    # Same as above but the 3rd lens ties with the 10th non-lens right below it: the tied group
    # takes fp from 9 to 10 at once, so the 3rd lens no longer counts -> TPR10 = 2/5.
    y, s = _ranked_scores(TPR10_SEQ)
    third_lens = np.flatnonzero(y == 1)[2]
    assert y[third_lens + 1] == 0
    s[third_lens + 1] = s[third_lens]
    assert tpr10(y, s) == pytest.approx(0.4, abs=1e-15)


# --------------------------------------------------------------------------- TPR at fixed FPR

# 100 lenses, 1000 non-lenses, from the highest score down:
#   L*30  N  L*20  N*9  L*30  N  N*989  L*20
#   after block      tp   fp
#   L*30             30   0
#   N                30   1
#   L*20             50   1
#   N*9              50   10
#   L*30             80   10
#   N*990            80   1000
#   L*20             100  1000
# FPR <= 1e-2 -> fp <= 10 -> TPR 0.8 (boundary fp == 10 included)
# FPR <= 1e-3 -> fp <= 1  -> TPR 0.5
# FPR <= 1e-4 -> fp <= 0.1, i.e. 0 -> TPR 0.3 (= TPR0)
# TPR10: fp <= 9 -> 0.5
FIXED_FPR_SEQ = "L" * 30 + "N" + "L" * 20 + "N" * 9 + "L" * 30 + "N" * 990 + "L" * 20


def test_tpr_at_fpr_constructed_1000_negatives():
    y, s = _ranked_scores(FIXED_FPR_SEQ)
    assert y.sum() == 100 and (y == 0).sum() == 1000
    assert tpr_at_fpr(y, s, 1e-2) == pytest.approx(0.8, abs=1e-15)
    assert tpr_at_fpr(y, s, 1e-3) == pytest.approx(0.5, abs=1e-15)
    assert tpr_at_fpr(y, s, 1e-4) == pytest.approx(0.3, abs=1e-15)
    assert tpr_at_fpr(y, s, 0.0) == pytest.approx(0.3, abs=1e-15)
    assert tpr_at_fpr(y, s, 1.0) == 1.0
    assert tpr0(y, s) == pytest.approx(0.3, abs=1e-15)
    assert tpr10(y, s) == pytest.approx(0.5, abs=1e-15)
    m = lens_finding_metrics(y, s / len(s))  # rescaled into (0, 1]: same ranking
    assert m["tpr_fpr1e-2"] == pytest.approx(0.8, abs=1e-15)
    assert m["tpr_fpr1e-3"] == pytest.approx(0.5, abs=1e-15)
    assert m["tpr_fpr1e-4"] == pytest.approx(0.3, abs=1e-15)
    assert (m["n_lenses"], m["n_nonlenses"]) == (100, 1000)


def test_tpr_at_fpr_with_few_negatives_is_tpr0():
    # TPR10_SEQ has 20 non-lenses: 1e-2 * 20 = 0.2 < 1, so only fp == 0 qualifies -> 1/5.
    y, s = _ranked_scores(TPR10_SEQ)
    assert tpr_at_fpr(y, s, 1e-2) == pytest.approx(0.2, abs=1e-15)
    # 0.25 * 20 = 5 false positives allowed -> lenses at fp 0 and 5 -> 2/5.
    assert tpr_at_fpr(y, s, 0.25) == pytest.approx(0.4, abs=1e-15)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_tpr_at_fpr_rejects_bad_rate(bad):
    with pytest.raises(ValueError, match="fpr must lie in"):
        tpr_at_fpr(Y_SIMPLE, S_SIMPLE, bad)


# --------------------------------------------------------------------------- validation


def test_no_positives_raises():
    with pytest.raises(ValueError, match=r"no lenses \(y_true == 1\).*AUROC, TPR0 and TPR10"):
        auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"no lenses"):
        lens_finding_metrics([0, 0], [0.1, 0.2])


def test_no_negatives_raises():
    with pytest.raises(ValueError, match=r"no non-lenses \(y_true == 0\)"):
        tpr0([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"no non-lenses"):
        roc_points([True, True], [0.1, 0.2])


def test_nan_and_inf_scores_raise_with_count():
    with pytest.raises(ValueError, match=r"2 NaN and 0 infinite"):
        auroc([1, 0, 1, 0], [0.1, np.nan, np.nan, 0.3])
    with pytest.raises(ValueError, match=r"0 NaN and 1 infinite"):
        lens_finding_metrics([1, 0, 1, 0], [0.1, np.inf, 0.2, 0.3])


def test_length_mismatch_raises_with_both_lengths():
    with pytest.raises(ValueError, match=r"length mismatch.*3.*4"):
        auroc([1, 0, 1], [0.1, 0.2, 0.3, 0.4])


def test_bad_labels_raise():
    with pytest.raises(ValueError, match=r"0/1 \(or bool\)"):
        auroc([1, 0, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"0/1 \(or bool\)"):
        auroc(["lens", "x", "lens"], [0.1, 0.2, 0.3])


def test_empty_input_raises():
    with pytest.raises(ValueError, match="empty input"):
        lens_finding_metrics([], [])


# --------------------------------------------------------------------------- scikit-learn


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_matches_sklearn_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    n = 2000
    y = rng.random(n) < 0.3
    # Lenses score higher on average; rounding to 2 decimals creates many ties.
    s = np.round(np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1), 2)
    assert np.unique(s).size < n // 10
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    roc = roc_points(y, s)
    np.testing.assert_allclose(roc.fpr, fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(roc.tpr, tpr, rtol=0, atol=1e-15)
    assert thr[0] == np.inf and roc.thresholds[0] == np.inf
    np.testing.assert_array_equal(roc.thresholds[1:], thr[1:])


@pytest.mark.parametrize("seed", [10, 11])
def test_matches_sklearn_integer_scores(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    s = rng.integers(-3, 4, 500) + y  # only ~8 distinct values, negatives included
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    roc = roc_points(y, s)
    np.testing.assert_allclose(roc.fpr, fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(roc.tpr, tpr, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- ECE


def test_ece_hand_worked():
    # 15 bins of width 1/15. p = 0.10, 0.12 -> bin 1 ([1/15, 2/15)); p = 0.90, 0.92 -> bin 13.
    # bin 1: mean y = 1/2, mean p = 0.11 -> |0.39| * 2/4 = 0.195
    # bin 13: mean y = 1, mean p = 0.91 -> |0.09| * 2/4 = 0.045
    # ECE = 0.24
    ece = expected_calibration_error([0, 1, 1, 1], [0.10, 0.12, 0.90, 0.92])
    assert ece == pytest.approx(0.24, abs=1e-12)


def test_ece_last_bin_includes_one():
    # p = 1.0 and 0.98 both fall in the last bin [14/15, 1]: mean y 1/2, mean p 0.99 -> 0.49.
    # (If 1.0 were put in a bin of its own, ECE would be (|0 - 1| + |1 - 0.98|)/2 = 0.51.)
    assert expected_calibration_error([0, 1], [1.0, 0.98]) == pytest.approx(0.49, abs=1e-12)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0


def test_ece_single_bin():
    # One bin: |mean y - mean p| = |2/4 - 0.25| = 0.25
    ece = expected_calibration_error([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], n_bins=1)
    assert ece == pytest.approx(0.25, abs=1e-12)


def test_ece_calibrated_large_n_is_small_and_miscalibrated_is_not():
    rng = np.random.default_rng(42)
    p = rng.random(200_000)
    y_cal = rng.random(p.size) < p
    assert expected_calibration_error(y_cal, p) < 0.01
    # Truth probability p**2 while predicting p: ECE ~ E[p - p^2] = 1/2 - 1/3 = 1/6.
    y_mis = rng.random(p.size) < p**2
    assert expected_calibration_error(y_mis, p) == pytest.approx(1 / 6, abs=0.01)


def test_ece_out_of_range_raises():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1, 0], [1.2, 0.3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1, 0], [0.5, -0.01])


def test_lens_finding_metrics_keys_and_ece_presence():
    m = lens_finding_metrics(Y_SIMPLE, S_SIMPLE)
    assert list(m) == [*METRIC_KEYS, "ece"]
    assert m["auroc"] == pytest.approx(8 / 9, abs=1e-15)
    assert m["tpr0"] == pytest.approx(2 / 3, abs=1e-15)
    assert m["ece"] == pytest.approx(expected_calibration_error(Y_SIMPLE, S_SIMPLE))
    # Scores outside [0, 1] (e.g. logits): no ECE key, ranking metrics unchanged.
    m_logit = lens_finding_metrics(Y_SIMPLE, 10 * S_SIMPLE - 5)
    assert list(m_logit) == METRIC_KEYS
    assert m_logit["auroc"] == pytest.approx(8 / 9, abs=1e-15)


def test_lens_finding_metrics_on_100k_heavily_tied_scores_match_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(100_000) < 0.1
    s = np.round(rng.random(100_000), 3)  # ~100 scores share each value: ties everywhere
    m = lens_finding_metrics(y, s)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["n_nonlenses"] == int((~y).sum())


# --------------------------------------------------------------------------- binned metrics

# 10 non-lenses with scores 0.05, 0.15, ..., 0.95 and theta_E = NaN (they have no Einstein radius).
# Small-theta_E lenses (theta 0.6) score 0.1, 0.3, 0.5: they beat 1, 3, 5 non-lenses -> 9/30.
# Large-theta_E lenses (theta 1.0, 1.6, 1.6, 1.6; 1.0 lies on an edge and belongs to [1, 2))
# score 0.92, 0.96, 0.97, 0.99: they beat 9, 10, 10, 10 non-lenses -> 39/40.
NEG_SCORES = np.arange(10) / 10 + 0.05
LENS_SCORES = np.array([0.1, 0.3, 0.5, 0.92, 0.96, 0.97, 0.99])
LENS_THETA = np.array([0.6, 0.6, 0.6, 1.0, 1.6, 1.6, 1.6])


def _theta_case():
    y = np.r_[np.ones(7, int), np.zeros(10, int)]
    s = np.r_[LENS_SCORES, NEG_SCORES]
    theta = np.r_[LENS_THETA, np.full(10, np.nan)]
    return y, s, theta


def test_binned_lens_only_property_uses_all_nonlenses():
    y, s, theta = _theta_case()
    rows = binned_lens_finding_metrics(y, s, theta, [0.5, 1.0, 2.0, 3.0], bin_negatives=False)
    assert [(r["lo"], r["hi"]) for r in rows] == [(0.5, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert [r["n_lenses"] for r in rows] == [3, 4, 0]
    assert [r["n_nonlenses"] for r in rows] == [10, 10, 10]
    assert rows[0]["auroc"] == pytest.approx(9 / 30, abs=1e-15)
    assert rows[1]["auroc"] == pytest.approx(39 / 40, abs=1e-15)
    assert rows[0]["auroc"] < rows[1]["auroc"]
    # Low bin: the top score 0.5 is below non-lenses 0.55..0.95 -> TPR0 = 0.
    # High bin: 0.96, 0.97, 0.99 are above every non-lens -> TPR0 = 3/4.
    assert rows[0]["tpr0"] == 0.0
    assert rows[1]["tpr0"] == pytest.approx(0.75, abs=1e-15)
    # Empty bin: counts, NaN metrics, same keys as the others.
    assert list(rows[2]) == list(rows[0]) == ["lo", "hi", *METRIC_KEYS, "ece"]
    for key in ["auroc", "tpr0", "tpr10", "tpr_fpr1e-2", "tpr_fpr1e-3", "tpr_fpr1e-4", "ece"]:
        assert math.isnan(rows[2][key])
        assert not math.isnan(rows[0][key])


def test_binned_nan_value_for_lens_raises():
    y, s, theta = _theta_case()
    theta[0] = np.nan
    with pytest.raises(ValueError, match="NaN for 1 lenses"):
        binned_lens_finding_metrics(y, s, theta, [0.0, 2.0], bin_negatives=False)


def test_binned_both_classes():
    # Lens magnitudes: lenses at 18, 18, 21, 21, 21; non-lenses at 18, 19, 21, 22, 23, 23.
    # Edges [17, 20, 24]: bin [17, 20) has 2 lenses + 2 non-lenses, bin [20, 24) 3 + 4.
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    mag = np.array([18, 18, 21, 21, 21, 18, 19, 21, 22, 23, 23], dtype=float)
    s = np.array([0.9, 0.2, 0.8, 0.7, 0.1, 0.5, 0.3, 0.6, 0.4, 0.05, 0.15])
    rows = binned_lens_finding_metrics(y, s, mag, [17, 20, 24], bin_negatives=True)
    assert [(r["n_lenses"], r["n_nonlenses"]) for r in rows] == [(2, 2), (3, 4)]
    # Bin 1: lenses 0.9, 0.2 vs non-lenses 0.5, 0.3: 0.9 beats 2, 0.2 beats 0 -> 2/4.
    assert rows[0]["auroc"] == pytest.approx(0.5, abs=1e-15)
    # Bin 2: lenses 0.8, 0.7, 0.1 vs 0.6, 0.4, 0.05, 0.15: beats 4 + 4 + 1 = 9 of 12 -> 3/4.
    assert rows[1]["auroc"] == pytest.approx(0.75, abs=1e-15)
    # Binned without the non-lenses' magnitudes, bin 1 would compare against all 6 non-lenses.
    rows_all = binned_lens_finding_metrics(y, s, mag, [17, 20, 24], bin_negatives=False)
    assert [r["n_nonlenses"] for r in rows_all] == [6, 6]


def test_binned_no_nonlenses_in_bin_gives_nan():
    # Both classes binned; the [0, 1) bin holds only a lens.
    y = [1, 0, 1, 0]
    s = [0.9, 0.1, 0.8, 0.2]
    vals = [0.5, 1.5, 1.5, 1.5]
    rows = binned_lens_finding_metrics(y, s, vals, [0.0, 1.0, 2.0], bin_negatives=True)
    assert (rows[0]["n_lenses"], rows[0]["n_nonlenses"]) == (1, 0)
    assert math.isnan(rows[0]["auroc"])
    assert rows[1]["auroc"] == 1.0  # lens 0.8 beats both non-lenses 0.2, 0.1
