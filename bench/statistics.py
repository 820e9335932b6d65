"""Uncertainty of the benchmark's figures: the paired bootstrap of a figure of merit on one test
set, class-stratified for a lens finder's AUROC, TPR10 and TPR at FPR 1e-3 (the design study's
changes against its baseline, the compare profile's goal check, the leaderboards' runners-up
against their leader), over all test objects for a statistic of one value per object (photo-z's
sigma_NMAD, outlier fraction and mean bias; a lens model's error)."""

from __future__ import annotations

import numpy as np

BOOTSTRAP_RESAMPLES = 200


def _bootstrap_metrics() -> dict:
    """The metrics :func:`paired_bootstrap` can resample, by their result keys."""
    from lensbench.bench.metrics import auroc, tpr10, tpr_at_fpr

    return {"auroc": auroc, "tpr10": tpr10,
            "tpr_fpr1e-3": lambda labels, scores: tpr_at_fpr(labels, scores, 1e-3)}


def bootstrap_change(figure, base_figure, strata: list[np.ndarray], resamples: int, rng
                     ) -> tuple[float, float, float]:
    """The change ``figure(rows) - base_figure(rows)`` (``figure(rows)`` itself with
    ``base_figure`` None) on every row, and its 2.5th and 97.5th percentile over ``resamples``
    bootstrap resamples, both figures on the same rows: each resample draws, with replacement,
    as many rows from each of ``strata`` (arrays of row indices) as it holds."""
    def change(rows):
        value = figure(rows)
        return value if base_figure is None else value - base_figure(rows)

    observed = change(np.concatenate(strata))
    draws = [change(np.concatenate([rng.choice(rows, len(rows)) for rows in strata]))
             for _ in range(resamples)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(observed), float(low), float(high)


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
    strata = [np.flatnonzero(labels), np.flatnonzero(~labels)]
    rng = np.random.default_rng(seed)

    def figure_of(metric, values):
        return None if values is None else lambda rows: metric(labels[rows], values[rows])

    return {key: bootstrap_change(figure_of(known[key], scores),
                                  figure_of(known[key], base_scores), strata, resamples, rng)
            for key in metrics}


def paired_bootstrap_rows(values: np.ndarray, base_values: np.ndarray | None,
                          statistics: dict, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                          ) -> dict[str, tuple[float, float, float]]:
    """As :func:`paired_bootstrap` for a figure that is a statistic of one value per test object
    (a redshift's dz, a lens model's error): the change of each of ``statistics`` (name ->
    function of the values) from ``base_values`` to ``values``, or with ``base_values`` None
    the statistic itself, over resamples of all the test objects as one stratum."""
    values = np.asarray(values, dtype=np.float64)
    base = None if base_values is None else np.asarray(base_values, dtype=np.float64)
    rng = np.random.default_rng(seed)

    def figure_of(statistic, per_object):
        return None if per_object is None else lambda rows: statistic(per_object[rows])

    everyone = [np.arange(len(values))]
    return {name: bootstrap_change(figure_of(statistic, values), figure_of(statistic, base),
                                   everyone, resamples, rng)
            for name, statistic in statistics.items()}


def paired_bootstrap_photoz(z_phot: np.ndarray, base_z_phot: np.ndarray | None,
                            z_spec: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                            seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """:func:`paired_bootstrap_rows` of dz = (z_phot - z_spec) / (1 + z_spec): the change of
    sigma_NMAD, the outlier fraction and the mean bias from ``base_z_phot`` to ``z_phot`` (or,
    with ``base_z_phot`` None, those of ``z_phot`` themselves)."""
    from lensbench.bench.photoz_metrics import delta_z, outlier_fraction, sigma_nmad

    statistics = {"sigma_nmad": sigma_nmad, "outlier_frac": outlier_fraction,
                  "bias_mean": lambda dz: float(np.mean(dz))}
    return paired_bootstrap_rows(
        delta_z(z_phot, z_spec), None if base_z_phot is None else delta_z(base_z_phot, z_spec),
        statistics, resamples, seed)


def change_text(change: tuple[float, float, float], digits: int = 3) -> str:
    """One :func:`paired_bootstrap` entry as the reports write it: "+0.012 [+0.004, +0.020]"."""
    observed, low, high = change
    return f"{observed:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def leader_change_table(ranked: list, load, change, columns: tuple[tuple[str, str, int], ...],
                        resampled: str, limit: int | None = None) -> list[str]:
    """A report's table of runners-up against the leader, the one skeleton of every kind's.

    ``ranked``: Results, best first. ``load(result)``: the test predictions it stored, or None
    (a run without them takes no part). The leader is the first run with stored predictions;
    each later one, up to ``limit`` of them, is a row: ``change(its predictions, the leader's)``,
    a change dict of :func:`paired_bootstrap` or :func:`paired_bootstrap_photoz`, or None where
    the two did not predict the same test objects (no paired change exists). ``columns``:
    (title, change key, decimals); ``resampled``: what the resamples draw from."""
    # lazy, so that loading stops once ``limit`` rows are made
    stored = ((r, data) for r in ranked if (data := load(r)) is not None)
    leader, lead = next(stored, (None, None))
    changes = []
    for r, data in stored:
        if (difference := change(data, lead)) is not None:
            changes.append((r.run_id, difference))
            if len(changes) == limit:
                break
    if not changes:
        return []
    return ["", f"How far apart: each runner-up minus `{leader.run_id}` on the same test "
            f"{resampled}, with 95% intervals from {BOOTSTRAP_RESAMPLES} paired bootstrap "
            "resamples. They cover the test set's noise, not the training seed's; an interval "
            "that holds 0 is no firm difference.", "",
            "| method | " + " | ".join(f"{title} change" for title, _, _ in columns) + " |",
            "|" + "---|" * (len(columns) + 1),
            *(f"| `{run_id}` | " + " | ".join(change_text(change[key], digits)
                                             for _, key, digits in columns) + " |"
              for run_id, change in changes)]
