"""Uncertainty of the benchmark's figures: the paired, class-stratified bootstrap of a finder's
AUROC and TPR10 (and TPR at FPR 1e-3) on one test set (used by the design study's changes against
its baseline, by the compare profile's goal check and by the leaderboards' runners-up against
their leader)."""

from __future__ import annotations

import numpy as np

BOOTSTRAP_RESAMPLES = 200


def _bootstrap_metrics() -> dict:
    """The metrics :func:`paired_bootstrap` can resample, by their result keys."""
    from lensbench.bench.metrics import auroc, tpr10, tpr_at_fpr

    return {"auroc": auroc, "tpr10": tpr10,
            "tpr_fpr1e-3": lambda labels, scores: tpr_at_fpr(labels, scores, 1e-3)}


def paired_bootstrap(labels: np.ndarray, scores: np.ndarray, base_scores: np.ndarray | None,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                     metrics: tuple[str, ...] = ("auroc", "tpr10")
                     ) -> dict[str, tuple[float, float, float]]:
    """Change of each of ``metrics`` (result keys: auroc, tpr10, tpr_fpr1e-3) from
    ``base_scores`` to ``scores`` on one test set: (observed change, 2.5th and 97.5th percentile
    over ``resamples`` stratified resamples of the test set, the same resample for both). With
    ``base_scores`` None: the metrics of ``scores`` themselves and their intervals. The metrics
    draw their resamples one after another in the order given, so a metric added at the end
    leaves the others' intervals unchanged."""
    known = _bootstrap_metrics()
    unknown = [key for key in metrics if key not in known]
    if unknown:
        raise ValueError(f"paired_bootstrap: unknown metric(s) {unknown}; known: {list(known)}")
    labels = labels.astype(bool)
    lens, other = np.flatnonzero(labels), np.flatnonzero(~labels)
    rng = np.random.default_rng(seed)

    def change(metric, rows):
        value = metric(labels[rows], scores[rows])
        return value if base_scores is None else value - metric(labels[rows], base_scores[rows])

    out = {}
    for key in metrics:
        metric = known[key]
        observed = change(metric, np.arange(len(labels)))
        draws = []
        for _ in range(resamples):
            rows = np.concatenate([rng.choice(lens, len(lens)), rng.choice(other, len(other))])
            draws.append(change(metric, rows))
        low, high = np.percentile(draws, [2.5, 97.5])
        out[key] = (float(observed), float(low), float(high))
    return out


def change_text(change: tuple[float, float, float], digits: int = 3) -> str:
    """One :func:`paired_bootstrap` entry as the reports write it: "+0.012 [+0.004, +0.020]"."""
    observed, low, high = change
    return f"{observed:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
