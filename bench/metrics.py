"""Figures of merit for strong-lens finding.

Definitions follow Metcalf et al. 2019, A&A 625, A119 ("The Strong Gravitational Lens Finding
Challenge"), plus the expected calibration error of Guo et al. 2017 (ICML, "On Calibration of
Modern Neural Networks").

Conventions
-----------
* ``y_true``: 1 (or True) for a lens, 0 (or False) for a non-lens.
* ``scores``: any finite real number; a higher score means "more lens-like".  Everything with
  ``score >= threshold`` is called a lens.
* TPR = found lenses / all lenses; FPR = non-lenses called lenses / all non-lenses.
* Tied scores form ONE threshold: a group of equal scores enters the ROC curve all at once, so
  the curve joins discrete points with straight (possibly diagonal) segments.  With this
  convention the trapezoidal AUROC equals the Mann-Whitney statistic with ties counted as 1/2
  (i.e. ``sklearn.metrics.roc_auc_score``).

Everything is vectorised (argsort + cumulative sums); there are no Python loops over samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "FIXED_FPRS",
    "RocCurve",
    "auroc",
    "binned_lens_finding_metrics",
    "expected_calibration_error",
    "lens_finding_metrics",
    "roc_points",
    "tpr0",
    "tpr10",
    "tpr_at_fpr",
]

#: Fixed false-positive rates reported by :func:`lens_finding_metrics` (key -> FPR).
FIXED_FPRS: dict[str, float] = {
    "tpr_fpr1e-2": 1e-2,
    "tpr_fpr1e-3": 1e-3,
    "tpr_fpr1e-4": 1e-4,
}

#: TPR10 counts ROC points with strictly fewer than this many false positives.
_TPR10_FP_LIMIT = 10

#: Keys whose value is a figure of merit (NaN in a degenerate bin); counts are separate.
_RANKING_KEYS: tuple[str, ...] = ("auroc", "tpr0", "tpr10", *FIXED_FPRS)


@dataclass(frozen=True, eq=False)
class RocCurve:
    """Discrete ROC curve, one point per distinct score (plus the (0, 0) start point).

    Point ``i`` is obtained by calling every sample with ``score >= thresholds[i]`` a lens.
    ``thresholds`` is strictly decreasing and starts at ``+inf`` (nothing called a lens, the
    (0, 0) point); the last point, at the lowest score, is always (1, 1).  ``fp``/``tp`` are the
    false/true-positive counts, ``fpr = fp / n_neg`` and ``tpr = tp / n_pos``.  The arrays are
    read-only.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    fp: np.ndarray
    tp: np.ndarray
    n_pos: int
    n_neg: int


# --------------------------------------------------------------------------- validation


def _as_labels(y_true: ArrayLike) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one-dimensional, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(np.int8)
    if y.dtype.kind not in "iuf":
        raise ValueError(f"y_true must contain only 0/1 (or bool) labels, got dtype {y.dtype}")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        examples = np.unique(y[bad])[:5].tolist()
        raise ValueError(
            f"y_true must contain only 0/1 (or bool) labels; found {int(bad.sum())} other "
            f"value(s), e.g. {examples}"
        )
    return y.astype(np.int8)


def _as_scores(scores: ArrayLike, name: str) -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {s.shape}")
    if s.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64)
    n_nan = int(np.isnan(s).sum())
    n_inf = int(np.isinf(s).sum())
    if n_nan or n_inf:
        raise ValueError(
            f"{name} must be finite: found {n_nan} NaN and {n_inf} infinite value(s) "
            f"out of {s.size}"
        )
    return s


def _validate(y_true: ArrayLike, scores: ArrayLike, name: str = "scores"):
    """Return (labels as int8 0/1, scores as float64) after checking shapes and values."""
    y = _as_labels(y_true)
    s = _as_scores(scores, name)
    if y.size != s.size:
        raise ValueError(f"length mismatch: y_true has {y.size} entries but {name} has {s.size}")
    if y.size == 0:
        raise ValueError(f"empty input: y_true and {name} have length 0")
    return y, s


def _require_both_classes(n_pos: int, n_neg: int) -> None:
    if n_pos == 0:
        raise ValueError(
            "no lenses (y_true == 1) in the test set: AUROC, TPR0 and TPR10 are undefined"
        )
    if n_neg == 0:
        raise ValueError(
            "no non-lenses (y_true == 0) in the test set: FPR, AUROC, TPR0 and TPR10 are undefined"
        )


# --------------------------------------------------------------------------- ROC and derived


def _roc_from_validated(y: np.ndarray, s: np.ndarray) -> RocCurve:
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    _require_both_classes(n_pos, n_neg)

    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # Last index of each group of equal scores: ties are added as one threshold.
    group_end = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tp = np.cumsum(y_sorted, dtype=np.int64)[group_end]
    fp = (group_end + 1) - tp

    tp = np.r_[0, tp].astype(np.int64)
    fp = np.r_[0, fp].astype(np.int64)
    thresholds = np.r_[np.inf, s_sorted[group_end]]
    tpr = tp / n_pos
    fpr = fp / n_neg
    for arr in (fpr, tpr, thresholds, fp, tp):
        arr.setflags(write=False)
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thresholds, fp=fp, tp=tp, n_pos=n_pos, n_neg=n_neg)


def _auroc_from_roc(roc: RocCurve) -> float:
    return float(np.sum(np.diff(roc.fpr) * (roc.tpr[1:] + roc.tpr[:-1])) / 2.0)


def _max_tpr_where(roc: RocCurve, allowed: np.ndarray) -> float:
    # The (0, 0) point is always allowed (fp == 0), so the maximum is never over an empty set.
    return float(np.max(roc.tpr[allowed]))


def _tpr0_from_roc(roc: RocCurve) -> float:
    return _max_tpr_where(roc, roc.fp == 0)


def _tpr10_from_roc(roc: RocCurve) -> float:
    return _max_tpr_where(roc, roc.fp < _TPR10_FP_LIMIT)


def _check_fpr(fpr: float) -> float:
    f = float(fpr)
    if not 0.0 <= f <= 1.0:  # also rejects NaN
        raise ValueError(f"fpr must lie in [0, 1], got {fpr!r}")
    return f


def _tpr_at_fpr_from_roc(roc: RocCurve, fpr: float) -> float:
    return _max_tpr_where(roc, roc.fpr <= _check_fpr(fpr))


def roc_points(y_true: ArrayLike, scores: ArrayLike) -> RocCurve:
    """ROC curve with one point per distinct score (Metcalf et al. 2019, A&A 625, A119).

    A sample is called a lens when ``score >= threshold``.  Tied scores are one threshold, so a
    tie between lenses and non-lenses gives a diagonal segment.  The curve starts at (0, 0)
    (threshold ``+inf``) and ends at (1, 1).  The points equal those of
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.

    Raises ValueError for malformed input or when either class is absent.
    """
    y, s = _validate(y_true, scores)
    return _roc_from_validated(y, s)


def auroc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve, trapezoidal over :func:`roc_points` (Metcalf et al. 2019).

    Ties contribute 1/2, so this equals ``sklearn.metrics.roc_auc_score``.
    """
    return _auroc_from_roc(roc_points(y_true, scores))


def tpr0(y_true: ArrayLike, scores: ArrayLike) -> float:
    """TPR0 (Metcalf et al. 2019): the highest TPR reached, lowering the threshold, before the
    first false positive, i.e. max TPR over ROC points with zero false positives.

    A lens tied with the highest-scoring non-lens does not count (the tie is one threshold), so
    all-equal scores give 0.
    """
    return _tpr0_from_roc(roc_points(y_true, scores))


def tpr10(y_true: ArrayLike, scores: ArrayLike) -> float:
    """TPR10 (Metcalf et al. 2019): the TPR at the point where fewer than ten false positives are
    made, i.e. max TPR over ROC points with at most 9 false positives.
    """
    return _tpr10_from_roc(roc_points(y_true, scores))


def tpr_at_fpr(y_true: ArrayLike, scores: ArrayLike, fpr: float) -> float:
    """TPR at a fixed false-positive rate: max TPR over ROC points with ``FPR <= fpr``.

    No interpolation between ROC points.  When ``fpr * n_nonlenses < 1`` only the points with
    zero false positives qualify, so the value equals TPR0; report ``n_nonlenses`` beside it.
    """
    return _tpr_at_fpr_from_roc(roc_points(y_true, scores), fpr)


# --------------------------------------------------------------------------- calibration


def _in_unit_interval(p: np.ndarray) -> bool:
    return bool(np.all((p >= 0.0) & (p <= 1.0)))


def _ece_from_validated(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are [lo, hi); the last bin is [lo, 1] so that p == 1 is included.
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    # sum_b (n_b / N) |mean_y_b - mean_p_b| == sum_b |sum_y_b - sum_p_b| / N (empty bins give 0)
    return float(np.sum(np.abs(sum_y - sum_p)) / p.size)


def expected_calibration_error(y_true: ArrayLike, probs: ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017) of the predicted lens probability.

    ``ECE = sum_b (n_b / N) |mean(y in b) - mean(p in b)|`` over ``n_bins`` equal-width bins of
    [0, 1]; bins are ``[lo, hi)`` except the last, which includes 1.0.  Used alongside the
    Metcalf et al. 2019 (A&A 625, A119) ranking metrics.  One class alone is allowed.

    Raises ValueError if any probability lies outside [0, 1].
    """
    if isinstance(n_bins, bool) or int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    y, p = _validate(y_true, probs, name="probs")
    if not _in_unit_interval(p):
        n_out = int(np.sum((p < 0.0) | (p > 1.0)))
        raise ValueError(
            f"probs must lie in [0, 1] for the ECE: {n_out} value(s) outside "
            f"(min {p.min():g}, max {p.max():g})"
        )
    return _ece_from_validated(y, p, int(n_bins))


# --------------------------------------------------------------------------- summaries


def _metrics_from_validated(y: np.ndarray, s: np.ndarray, with_ece: bool) -> dict[str, float]:
    roc = _roc_from_validated(y, s)
    out: dict[str, float] = {
        "auroc": _auroc_from_roc(roc),
        "tpr0": _tpr0_from_roc(roc),
        "tpr10": _tpr10_from_roc(roc),
    }
    for key, f in FIXED_FPRS.items():
        out[key] = _tpr_at_fpr_from_roc(roc, f)
    out["n_lenses"] = roc.n_pos
    out["n_nonlenses"] = roc.n_neg
    if with_ece:
        out["ece"] = _ece_from_validated(y, s, 15)
    return out


def lens_finding_metrics(y_true: ArrayLike, scores: ArrayLike) -> dict[str, float]:
    """All lens-finding figures of merit of Metcalf et al. 2019 (A&A 625, A119) at once.

    Keys: ``auroc``, ``tpr0``, ``tpr10``, ``tpr_fpr1e-2``, ``tpr_fpr1e-3``, ``tpr_fpr1e-4``,
    ``n_lenses``, ``n_nonlenses`` (ints) and, only when every score lies in [0, 1], ``ece``
    (15 bins).  The ROC curve is computed once and everything else is derived from it.
    """
    y, s = _validate(y_true, scores)
    return _metrics_from_validated(y, s, with_ece=_in_unit_interval(s))


def binned_lens_finding_metrics(
    y_true: ArrayLike,
    scores: ArrayLike,
    values: ArrayLike,
    edges: Sequence[float] | np.ndarray,
    *,
    bin_negatives: bool,
) -> list[dict[str, float]]:
    """:func:`lens_finding_metrics` on subsets binned by a property (Metcalf et al. 2019).

    Bins are ``[lo, hi)`` for consecutive ``edges`` (use ``np.inf`` as the last edge to keep
    everything above the last finite edge).

    * ``bin_negatives=False`` (properties only lenses have: Einstein radius, arc S/N): each bin
      holds the lenses with ``lo <= value < hi`` plus ALL non-lenses; ``values`` of non-lenses
      are ignored and may be NaN.
    * ``bin_negatives=True`` (properties both classes have, e.g. lens magnitude): both classes
      are binned.

    Each dict has ``lo``, ``hi`` and the :func:`lens_finding_metrics` keys; ``ece`` is present
    in every bin iff all scores lie in [0, 1].  A bin without lenses or without non-lenses gets
    its counts and NaN for every other metric.  NaN ``values`` among the binned samples raise
    ValueError (drop those samples first).
    """
    y, s = _validate(y_true, scores)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size != y.size:
        raise ValueError(
            f"length mismatch: values has shape {v.shape} but y_true has {y.size} entries"
        )
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"edges must be a 1-D sequence of at least 2 values, got {edges!r}")
    if np.isnan(e).any() or not np.all(np.diff(e) > 0):
        raise ValueError(f"edges must be strictly increasing and not NaN, got {e.tolist()}")

    binned = np.ones(y.size, dtype=bool) if bin_negatives else (y == 1)
    n_nan = int(np.isnan(v[binned]).sum())
    if n_nan:
        which = "samples" if bin_negatives else "lenses"
        raise ValueError(f"values are NaN for {n_nan} {which}; these cannot be binned")

    with_ece = _in_unit_interval(s)
    results: list[dict[str, float]] = []
    for lo, hi in zip(e[:-1], e[1:], strict=True):  # loop over bins, not samples
        in_bin = (v >= lo) & (v < hi)
        keep = (in_bin & binned) | ~binned
        yb, sb = y[keep], s[keep]
        n_pos = int(yb.sum())
        n_neg = int(yb.size - n_pos)
        row: dict[str, float] = {"lo": float(lo), "hi": float(hi)}
        if n_pos == 0 or n_neg == 0:
            row.update({key: float("nan") for key in _RANKING_KEYS})
            row["n_lenses"] = n_pos
            row["n_nonlenses"] = n_neg
            if with_ece:
                row["ece"] = float("nan")
        else:
            row.update(_metrics_from_validated(yb, sb, with_ece))
        results.append(row)
    return results
