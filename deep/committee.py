"""Committees, test-time augmentation and calibration (pure functions on arrays).

* Test-time augmentation over the 8 dihedral transforms, combined by the mean or by Schaefer et
  al. (2018)'s product rule (the product of the 8 probabilities).
* Members combined by the mean, the median or a vote (fraction of members with p >= 0.5, ties
  broken by the mean probability so the ranking stays total).
* Everything works on logits (float64, log space), so probabilities near 0 or 1 never collapse
  into ties before the final sigmoid.
* Temperature scaling (Guo et al. 2017): one T > 0 dividing the logits, fitted by minimising the
  validation negative log-likelihood over log T (so T > 0 by construction). Monotone: it never
  changes AUROC, TPR0 or TPR10.
* The 15-bin expected calibration error (same definition as lensbench.bench.metrics, which deep
  does not import).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit, logsumexp

TTA_RULES = ("none", "mean", "product")
COMBINE_RULES = ("mean", "median", "vote")
_EPS = 1e-12
_MAX_LOGIT = 700.0
# Temperatures are searched in [1/4, 100]: a separable validation set drives the NLL optimum to
# T -> 0, which would saturate every probability (ties at 0 and 1).
LOG_T_BOUNDS = (float(np.log(0.25)), float(np.log(100.0)))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _log1mexp(a: np.ndarray) -> np.ndarray:
    """log(1 - exp(a)) for a <= 0, accurate on both sides of -log 2 (Maechler 2012)."""
    a = np.minimum(a, -1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > -np.log(2.0), np.log(-np.expm1(a)), np.log1p(-np.exp(a)))


def _as_logits(z) -> np.ndarray:
    return np.clip(np.asarray(z, dtype=np.float64), -_MAX_LOGIT, _MAX_LOGIT)


def mean_of_probabilities(z: np.ndarray) -> np.ndarray:
    """logit(mean_k sigmoid(z_k)) over axis 0, computed in log space (no saturation)."""
    z = _as_logits(z)
    log_k = np.log(len(z))
    return ((logsumexp(log_expit(z), axis=0) - log_k)
            - (logsumexp(log_expit(-z), axis=0) - log_k))


def product_of_probabilities(z: np.ndarray) -> np.ndarray:
    """logit(prod_k sigmoid(z_k)) over axis 0 (Schaefer et al. 2018's product rule)."""
    log_p = log_expit(_as_logits(z)).sum(axis=0)
    return log_p - _log1mexp(log_p)


def combine_tta(z: np.ndarray, rule: str = "mean") -> np.ndarray:
    """Combine logits (n_transforms, n) over transforms by the mean or the product of the
    probabilities; returns the logit of the combined probability."""
    if rule == "mean":
        return mean_of_probabilities(z)
    if rule == "product":
        return product_of_probabilities(z)
    raise ValueError(f"tta rule must be one of {TTA_RULES[1:]}, got {rule!r}")


def combine_members(z: np.ndarray, rule: str = "mean") -> np.ndarray:
    """Combine logits (n_members, n) of committee members; returns a logit. "mean": mean of the
    probabilities; "median": median (of logits, i.e. of probabilities for odd n_members);
    "vote": (number of members with p >= 0.5 + mean probability) / (n_members + 1)."""
    z = _as_logits(z)
    if rule == "mean":
        return mean_of_probabilities(z)
    if rule == "median":
        return np.median(z, axis=0)
    if rule == "vote":
        votes = (z >= 0).sum(axis=0)
        return logit((votes + expit(mean_of_probabilities(z))) / (len(z) + 1))
    raise ValueError(f"combine rule must be one of {COMBINE_RULES}, got {rule!r}")


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): sum_b (n_b / N) |mean(y in b) - mean(p in b)| over equal-width bins
    [lo, hi) of [0, 1], the last bin including 1."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    diff = np.bincount(idx, weights=y, minlength=n_bins) - np.bincount(idx, weights=p,
                                                                        minlength=n_bins)
    return float(np.abs(diff).sum() / max(len(p), 1))


def binary_nll(y: np.ndarray, z: np.ndarray) -> float:
    """Mean negative log-likelihood of labels y under sigmoid(z)."""
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    return float(-np.mean(y * log_expit(z) + (1 - y) * log_expit(-z)))


@dataclass(frozen=True)
class Temperature:
    """A fitted temperature and what it did on the validation set."""

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float


def fit_temperature(z: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = LOG_T_BOUNDS
                    ) -> Temperature:
    """The T > 0 minimising the NLL of sigmoid(z / T) on (z, y), searched over log T within
    ``bounds`` (T = exp(log T) > 0 by construction); T = 1 if no T in the bounds does better."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    result = minimize_scalar(lambda log_t: binary_nll(y, z / np.exp(log_t)), bounds=bounds,
                             method="bounded", options={"xatol": 1e-6})
    log_t = float(result.x)
    if binary_nll(y, z / np.exp(log_t)) > binary_nll(y, z):
        log_t = 0.0  # never worse than leaving the logits alone
    t = float(np.exp(log_t))
    return Temperature(temperature=t, nll_before=binary_nll(y, z), nll_after=binary_nll(y, z / t),
                       ece_before=expected_calibration_error(y, expit(z)),
                       ece_after=expected_calibration_error(y, expit(z / t)))
