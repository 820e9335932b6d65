"""Photometric-redshift metrics as pure functions of (z_phot, z_spec) (definitions in
docs/references.md, "Photometric-redshift metrics").

dz = (z_phot - z_spec) / (1 + z_spec). Reported: mean and median bias of dz; sigma_NMAD =
1.4826 median(|dz - median(dz)|); the outlier fraction |dz| > 0.15; sigma_IQR = IQR(dz) / 1.349
and the LSST/RAIL outlier rate, the fraction with |dz| > max(0.06, 3 sigma_IQR); the
same in bins of any property (spectroscopic z, photometric z, magnitude). Percentiles are numpy's
linear interpolation (``np.percentile`` default), as in RAIL.

Distributions (``distribution_metrics``) and RAIL's point metrics (``rail_point_metrics``) are
computed by RAIL's own code, the ``qp`` package (``qp-prob``, the PDF library of LSST DESC's
photo-z framework RAIL, whose evaluators call these classes), under RAIL's names: the p(z) rows
on their grid become a ``qp.Ensemble(qp.interp, ...)``; the PIT (the CDF of each p(z) at its
z_spec) and its KS and CvM statistics against the uniform distribution come from
``qp.metrics.pit.PIT`` (the AD statistic is its definition, ``anderson_darling_uniform``: qp's
is the k-sample form); the CDE loss (Izbicki & Lee 2017) from ``CDELossMetric`` on the same
grid; ``point_bias`` (median dz), ``point_stats_iqr``, ``point_stats_sigma_mad`` and
``point_outlier_rate`` from qp's point-estimate classes. The other exception, the PIT outlier
rate: RAIL reads it off a quantile ensemble fitted to the PIT values, whose CDF qp 1.1.4
extrapolates wildly when many PIT values pile up near 0 or 1 (a rate of 1487 for a Gaussian
ensemble 4 times too narrow); here it is its definition, the fraction of PIT values below 1e-4
or above 0.9999, counted on qp's PIT values. Beck et al. (2016)'s figures (``beck_metrics``):
the mean and the standard deviation of dz and the fraction of |dz - mean| > 3 sigma.
"""

from __future__ import annotations

import numpy as np
from lensbench.datasets.robust import mad_sigma
from numpy.typing import ArrayLike

IQR_SCALE = 1.349  # IQR of a unit Gaussian
OUTLIER_DZ = 0.15
LSST_OUTLIER_FLOOR = 0.06
METRIC_NAMES = ("bias_mean", "bias_median", "sigma_nmad", "outlier_frac", "sigma_iqr",
                "outlier_frac_lsst", "n")
PIT_OUTLIER_LIMITS = (1e-4, 0.9999)  # RAIL's (qp's) defaults
DISTRIBUTION_METRIC_NAMES = ("pit_ks", "pit_cvm", "pit_ad", "pit_outlier_rate", "cdeloss")
RAIL_POINT_METRIC_NAMES = ("point_bias", "point_stats_iqr", "point_stats_sigma_mad",
                           "point_outlier_rate")
BECK_METRIC_NAMES = ("beck_bias", "beck_sigma", "beck_outlier_rate_3sigma")


def _validated(z_phot: ArrayLike, z_spec: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    zp = np.asarray(z_phot, dtype=np.float64).ravel()
    zs = np.asarray(z_spec, dtype=np.float64).ravel()
    if zp.shape != zs.shape:
        raise ValueError(f"z_phot has {zp.size} values, z_spec {zs.size}")
    if zp.size == 0:
        raise ValueError("photo-z metrics need at least one galaxy")
    if not (np.isfinite(zp).all() and np.isfinite(zs).all()):
        raise ValueError("z_phot and z_spec must be finite")
    if (zs <= -1).any():
        raise ValueError("z_spec must be > -1")
    return zp, zs


def delta_z(z_phot: ArrayLike, z_spec: ArrayLike) -> np.ndarray:
    """dz = (z_phot - z_spec) / (1 + z_spec)."""
    zp, zs = _validated(z_phot, z_spec)
    return (zp - zs) / (1.0 + zs)


def sigma_nmad(dz: ArrayLike) -> float:
    """1.4826 median(|dz - median(dz)|)."""
    return float(mad_sigma(np.asarray(dz, dtype=np.float64)))


def sigma_iqr(dz: ArrayLike) -> float:
    """(P75 - P25) / 1.349."""
    q25, q75 = np.percentile(np.asarray(dz, dtype=np.float64), [25, 75])
    return float((q75 - q25) / IQR_SCALE)


def outlier_fraction(dz: ArrayLike, threshold: float = OUTLIER_DZ) -> float:
    """Fraction of galaxies with |dz| > threshold (strictly)."""
    return float(np.mean(np.abs(np.asarray(dz, dtype=np.float64)) > threshold))


def lsst_outlier_fraction(dz: ArrayLike) -> float:
    """Fraction with |dz| > max(0.06, 3 sigma_IQR) (LSST SRD; RAIL's PointOutlierRate)."""
    dz = np.asarray(dz, dtype=np.float64)
    cut = max(LSST_OUTLIER_FLOOR, 3.0 * sigma_iqr(dz))
    return float(np.mean(np.abs(dz) > cut))


def photoz_metrics(z_phot: ArrayLike, z_spec: ArrayLike) -> dict[str, float]:
    """All the scalar metrics of one set of predictions (keys: ``METRIC_NAMES``)."""
    dz = delta_z(z_phot, z_spec)
    return {"bias_mean": float(dz.mean()), "bias_median": float(np.median(dz)),
            "sigma_nmad": sigma_nmad(dz), "outlier_frac": outlier_fraction(dz),
            "sigma_iqr": sigma_iqr(dz), "outlier_frac_lsst": lsst_outlier_fraction(dz),
            "n": float(dz.size)}


def binned_photoz_metrics(z_phot: ArrayLike, z_spec: ArrayLike, values: ArrayLike,
                          edges: ArrayLike, min_count: int = 1) -> list[dict]:
    """``photoz_metrics`` in bins ``lo <= value < hi`` of ``values`` (z_spec, a magnitude ...):
    one row per bin with ``lo``, ``hi`` and the metrics; bins with fewer than ``min_count``
    galaxies have ``n`` and NaN metrics."""
    zp, zs = _validated(z_phot, z_spec)
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.shape != zs.shape:
        raise ValueError(f"values has {values.size} entries, z_spec {zs.size}")
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or (np.diff(edges) <= 0).any():
        raise ValueError("edges must be a strictly increasing 1-d sequence of >= 2 values")
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (values >= lo) & (values < hi)
        n = int(inside.sum())
        if n >= max(1, min_count):
            row = photoz_metrics(zp[inside], zs[inside])
        else:
            row = {key: float("nan") for key in METRIC_NAMES} | {"n": float(n)}
        rows.append({"lo": float(lo), "hi": float(hi), **row})
    return rows


def _validated_pdfs(pdfs: ArrayLike, grid: ArrayLike, z_spec: ArrayLike):
    pdfs = np.asarray(pdfs, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64).ravel()
    zs = np.asarray(z_spec, dtype=np.float64).ravel()
    if pdfs.ndim != 2 or pdfs.shape != (zs.size, grid.size):
        raise ValueError(f"p(z) has shape {pdfs.shape}; expected ({zs.size}, {grid.size}): one "
                         "row per galaxy on the grid")
    if zs.size == 0:
        raise ValueError("photo-z metrics need at least one galaxy")
    if not (np.isfinite(pdfs).all() and np.isfinite(zs).all()) or (pdfs < 0).any():
        raise ValueError("p(z) must be finite and non-negative and z_spec finite")
    if (np.diff(grid) <= 0).any():
        raise ValueError("the p(z) grid must be strictly increasing")
    return pdfs, grid, zs


def pdf_ensemble(pdfs: ArrayLike, grid: ArrayLike):
    """The p(z) rows on ``grid`` as a qp ensemble (linear interpolation between grid points)."""
    import qp

    return qp.Ensemble(qp.interp, data={"xvals": np.asarray(grid, dtype=np.float64),
                                        "yvals": np.asarray(pdfs, dtype=np.float64)})


def _pit(ensemble, z_spec: np.ndarray):
    from qp.metrics.pit import PIT

    return PIT(ensemble, z_spec)


def pit_values(pdfs: ArrayLike, grid: ArrayLike, z_spec: ArrayLike) -> np.ndarray:
    """The PIT of each galaxy: the CDF of its p(z) at its z_spec (qp's)."""
    pdfs, grid, zs = _validated_pdfs(pdfs, grid, z_spec)
    return np.asarray(_pit(pdf_ensemble(pdfs, grid), zs).pit_samps, dtype=np.float64).ravel()


def anderson_darling_uniform(pit: ArrayLike,
                             limits: tuple[float, float] = PIT_OUTLIER_LIMITS) -> float:
    """The Anderson-Darling distance of the PIT values from uniform, A^2 = n int (F_n(u) - u)^2
    / (u (1 - u)) du (docs/references.md), in its computing form -n - (1/n) sum_i (2i - 1)
    [ln u_(i) + ln(1 - u_(n+1-i))], with the values clipped to ``limits`` as RAIL clips the
    tails (a PIT of exactly 0 or 1 makes it infinite). Written here because neither library
    gives this statistic: qp's ``evaluate_PIT_anderson_ksamp`` is scipy's normalised k-sample
    statistic (-0.78 for a calibrated set of 2000, where A^2 is 0.80), and scipy computes the
    one-sample one for the uniform only inside goodness_of_fit's Monte Carlo."""
    u = np.sort(np.clip(np.asarray(pit, dtype=np.float64).ravel(), *limits))
    n = len(u)
    weights = 2 * np.arange(1, n + 1) - 1
    return float(-n - np.mean(weights * (np.log(u) + np.log1p(-u[::-1]))))


def pit_outlier_rate(pit: ArrayLike, limits: tuple[float, float] = PIT_OUTLIER_LIMITS) -> float:
    """Fraction of PIT values < limits[0] or > limits[1]."""
    pit = np.asarray(pit, dtype=np.float64)
    return float(np.mean((pit < limits[0]) | (pit > limits[1])))


def distribution_metrics(pdfs: ArrayLike, grid: ArrayLike, z_spec: ArrayLike
                         ) -> tuple[dict[str, float], np.ndarray]:
    """(RAIL's distribution metrics (keys ``DISTRIBUTION_METRIC_NAMES``), the PIT values)."""
    from qp.metrics.concrete_metric_classes import CDELossMetric

    pdfs, grid, zs = _validated_pdfs(pdfs, grid, z_spec)
    ensemble = pdf_ensemble(pdfs, grid)
    pit = _pit(ensemble, zs)
    values = np.asarray(pit.pit_samps, dtype=np.float64).ravel()
    metrics = {"pit_ks": float(pit.evaluate_PIT_KS().statistic),
               "pit_cvm": float(pit.evaluate_PIT_CvM().statistic),
               "pit_ad": anderson_darling_uniform(values),
               "pit_outlier_rate": pit_outlier_rate(values),
               "cdeloss": float(CDELossMetric(grid).evaluate(ensemble, zs))}
    return metrics, values


def rail_point_metrics(z_phot: ArrayLike, z_spec: ArrayLike) -> dict[str, float]:
    """RAIL's point-estimate metrics (qp's classes), keys ``RAIL_POINT_METRIC_NAMES``: the
    median of dz, sigma_IQR, sigma_MAD (1.4826 MAD, = sigma_NMAD) and the outlier rate
    |dz| > max(0.06, 3 sigma_IQR)."""
    from qp.metrics.point_estimate_metric_classes import (
        PointBias,
        PointOutlierRate,
        PointSigmaIQR,
        PointSigmaMAD,
    )

    zp, zs = _validated(z_phot, z_spec)
    return {name: float(cls().evaluate(zp, zs)) for name, cls in (
        ("point_bias", PointBias), ("point_stats_iqr", PointSigmaIQR),
        ("point_stats_sigma_mad", PointSigmaMAD), ("point_outlier_rate", PointOutlierRate))}


def beck_metrics(z_phot: ArrayLike, z_spec: ArrayLike) -> dict[str, float]:
    """Beck et al. (2016)'s: the mean of dz (their dz_norm), its standard deviation, and the
    fraction of galaxies more than 3 standard deviations from the mean."""
    dz = delta_z(z_phot, z_spec)
    sigma = float(dz.std())
    return {"beck_bias": float(dz.mean()), "beck_sigma": sigma,
            "beck_outlier_rate_3sigma": float(np.mean(np.abs(dz - dz.mean()) > 3 * sigma))}


__all__ = ["BECK_METRIC_NAMES", "DISTRIBUTION_METRIC_NAMES", "METRIC_NAMES",
           "RAIL_POINT_METRIC_NAMES", "beck_metrics", "binned_photoz_metrics", "delta_z",
           "distribution_metrics", "lsst_outlier_fraction", "outlier_fraction", "pdf_ensemble",
           "photoz_metrics", "pit_outlier_rate", "pit_values", "rail_point_metrics", "sigma_iqr",
           "sigma_nmad"]
