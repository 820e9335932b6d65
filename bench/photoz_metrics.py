"""Photometric-redshift metrics as pure functions of (z_phot, z_spec) (definitions in
docs/references.md, "Photometric-redshift metrics").

dz = (z_phot - z_spec) / (1 + z_spec). Reported: mean and median bias of dz; sigma_NMAD =
1.4826 median(|dz - median(dz)|); the outlier fraction |dz| > 0.15; sigma_IQR = IQR(dz) / 1.349
and the LSST/RAIL outlier rate, the fraction with |dz| > max(0.06, 3 sigma_IQR); the
same in bins of any property (spectroscopic z, photometric z, magnitude). Percentiles are numpy's
linear interpolation (``np.percentile`` default), as in RAIL.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

NMAD_SCALE = 1.4826  # 1 / Phi^-1(3/4): sigma of a Gaussian from its median absolute deviation
IQR_SCALE = 1.349  # IQR of a unit Gaussian
OUTLIER_DZ = 0.15
LSST_OUTLIER_FLOOR = 0.06
METRIC_NAMES = ("bias_mean", "bias_median", "sigma_nmad", "outlier_frac", "sigma_iqr",
                "outlier_frac_lsst", "n")


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
    dz = np.asarray(dz, dtype=np.float64)
    return float(NMAD_SCALE * np.median(np.abs(dz - np.median(dz))))


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


__all__ = ["METRIC_NAMES", "binned_photoz_metrics", "delta_z", "lsst_outlier_fraction",
           "outlier_fraction", "photoz_metrics", "sigma_iqr", "sigma_nmad"]
