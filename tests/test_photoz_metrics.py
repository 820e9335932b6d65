"""RAIL's distribution and point metrics and Beck et al. (2016)'s figures (bench/photoz_metrics.py)
against hand-worked cases: Gaussian ensembles whose PIT distribution and CDE loss are known in
closed form, and point estimates small enough to work out by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from lensbench.bench import photoz_metrics as pm
from scipy import stats

GRID = np.linspace(0.0, 1.5, 301)
SIGMA = 0.06  # the true scatter: 12 grid steps, so the grid barely blurs the pdfs


def gaussian_ensemble(width_factor, n=4000, seed=0):
    """z_spec = mu + N(0, SIGMA); p(z) = N(mu, width_factor * SIGMA) on GRID."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.3, 1.0, n)
    z = mu + rng.normal(0, SIGMA, n)
    return stats.norm.pdf(GRID[None], mu[:, None], width_factor * SIGMA), z, mu


def test_anderson_darling_statistic_is_its_integral_definition():
    """A^2 = n int_0^1 (F_n(u) - u)^2 / (u (1 - u)) du, integrated numerically between the
    sample's steps, equals the computing form; values beyond 1e-4 of 0 or 1 are clipped."""
    from scipy import integrate

    pit = np.array([0.1, 0.35, 0.6, 0.8, 0.93])
    n, steps = len(pit), np.r_[0.0, np.sort(pit), 1.0]
    integral = sum(integrate.quad(lambda u, k=k: (k / n - u) ** 2 / (u * (1 - u)), lo, hi)[0]
                   for k, (lo, hi) in enumerate(itertools.pairwise(steps)))
    assert pm.anderson_darling_uniform(pit) == pytest.approx(n * integral, rel=1e-8)
    assert pm.anderson_darling_uniform([0.0, 0.5, 1.0]) == pytest.approx(
        pm.anderson_darling_uniform([1e-4, 0.5, 0.9999]))


def test_calibrated_gaussian_ensemble_has_a_uniform_pit():
    pdfs, z, mu = gaussian_ensemble(1.0)
    metrics, pit = pm.distribution_metrics(pdfs, GRID, z)
    # the PIT is the Gaussian CDF at z_spec, to the grid's interpolation
    np.testing.assert_allclose(pit, stats.norm.cdf(z, mu, SIGMA), atol=2e-3)
    # uniform: KS ~ 1/sqrt(n) (0.016 here), CvM ~ 1/6, AD ~ 1, no PIT outliers
    assert metrics["pit_ks"] < 0.03 and metrics["pit_cvm"] < 0.5 and 0 < metrics["pit_ad"] < 2
    assert metrics["pit_outlier_rate"] < 0.002


@pytest.mark.parametrize("width_factor", [0.25, 0.5])
def test_too_narrow_ensemble_has_a_u_shaped_pit_with_the_closed_form_outlier_rate(width_factor):
    """p(z) of width s sigma: PIT = Phi(d / (s sigma)), d ~ N(0, sigma), so
    P(PIT < u) = Phi(s Phi^-1(u)): a U shape, KS = max_u |Phi(s Phi^-1(u)) - u| and the PIT
    outlier rate 2 Phi(s Phi^-1(1e-4))."""
    pdfs, z, _ = gaussian_ensemble(width_factor)
    metrics, pit = pm.distribution_metrics(pdfs, GRID, z)
    u = np.linspace(1e-6, 1 - 1e-6, 200001)
    expected_ks = np.max(np.abs(stats.norm.cdf(width_factor * stats.norm.ppf(u)) - u))
    expected_outliers = 2 * stats.norm.cdf(width_factor * stats.norm.ppf(1e-4))
    assert metrics["pit_ks"] == pytest.approx(expected_ks, abs=0.02)
    assert metrics["pit_outlier_rate"] == pytest.approx(expected_outliers, abs=0.02)
    counts = np.histogram(pit, bins=10, range=(0, 1))[0]
    assert counts[0] > 2 * counts[4] and counts[-1] > 2 * counts[5]  # the U
    calibrated_pdfs, calibrated_z, _ = gaussian_ensemble(1.0)
    calibrated = pm.distribution_metrics(calibrated_pdfs, GRID, calibrated_z)[0]
    assert metrics["pit_cvm"] > 10 * calibrated["pit_cvm"]
    assert metrics["pit_ad"] > 10 * calibrated["pit_ad"]


def test_cde_loss_of_gaussian_pdfs_in_closed_form():
    """CDE loss = E[int p^2 dz] - 2 E[p(z_spec)]; for p = N(mu, s sigma) and z_spec - mu ~
    N(0, sigma): 1/(2 sqrt(pi) s sigma) - 2 / (sqrt(2 pi) sigma sqrt(1 + s^2)), smallest at the
    calibrated width s = 1 (-1/(2 sqrt(pi) sigma))."""
    losses = {}
    for s in (0.5, 1.0, 2.0):
        pdfs, z, mu = gaussian_ensemble(s)
        tau = s * SIGMA
        on_this_sample = 1 / (2 * np.sqrt(np.pi) * tau) - 2 * np.mean(stats.norm.pdf(z, mu, tau))
        population = (1 / (2 * np.sqrt(np.pi) * tau)
                      - 2 / (np.sqrt(2 * np.pi) * SIGMA * np.sqrt(1 + s**2)))
        losses[s] = pm.distribution_metrics(pdfs, GRID, z)[0]["cdeloss"]
        # RAIL reads p at the grid point nearest z_spec: ~1% from the exact sample value
        assert losses[s] == pytest.approx(on_this_sample, rel=0.01)
        assert losses[s] == pytest.approx(population, rel=0.08)  # 4000 galaxies: ~3% noise
    assert losses[1.0] < min(losses[0.5], losses[2.0])


def test_rail_point_metrics_and_beck_by_hand():
    # z_spec = 0, so dz = z_phot: 18 values of +-0.01 and two of +-0.5
    z_phot = np.array([0.01, -0.01] * 9 + [0.5, -0.5])
    z_spec = np.zeros(20)
    beck = pm.beck_metrics(z_phot, z_spec)
    # mean 0, variance (18e-4 + 0.5) / 20 = 0.02509, sigma 0.1584: 3 sigma 0.475, 2 outliers
    assert beck["beck_bias"] == pytest.approx(0.0, abs=1e-15)
    assert beck["beck_sigma"] == pytest.approx(np.sqrt((18e-4 + 0.5) / 20))
    assert beck["beck_outlier_rate_3sigma"] == pytest.approx(0.1)
    rail = pm.rail_point_metrics(z_phot, z_spec)
    # median 0; |dz - 0| has median 0.01: sigma_MAD 0.014826; quartiles -0.01, 0.01
    assert rail["point_bias"] == pytest.approx(0.0, abs=1e-15)
    assert rail["point_stats_sigma_mad"] == pytest.approx(0.014826)
    assert rail["point_stats_iqr"] == pytest.approx(0.02 / 1.349)
    # |dz| > max(0.06, 3 * 0.0148): the two +-0.5
    assert rail["point_outlier_rate"] == pytest.approx(0.1)
    # the same definitions as lensbench's own point metrics, on another sample
    rng = np.random.default_rng(3)
    zs = rng.uniform(0.1, 0.8, 500)
    zp = zs + rng.normal(0, 0.03, 500) + 0.3 * (rng.random(500) < 0.05)
    ours, theirs = pm.photoz_metrics(zp, zs), pm.rail_point_metrics(zp, zs)
    assert theirs["point_stats_sigma_mad"] == pytest.approx(ours["sigma_nmad"])
    assert theirs["point_stats_iqr"] == pytest.approx(ours["sigma_iqr"])
    assert theirs["point_bias"] == pytest.approx(ours["bias_median"])
    assert theirs["point_outlier_rate"] == pytest.approx(ours["outlier_frac_lsst"])


def test_pit_outlier_rate_bounds_are_strict():
    assert pm.pit_outlier_rate([0.0, 1e-4, 0.5, 0.9999, 1.0]) == pytest.approx(0.4)


def test_distribution_metrics_reject_bad_input():
    pdfs, z, _ = gaussian_ensemble(1.0, n=50)
    with pytest.raises(ValueError, match=r"shape \(50, 301\); expected \(49, 301\)"):
        pm.distribution_metrics(pdfs, GRID, z[:49])
    with pytest.raises(ValueError, match="non-negative"):
        pm.distribution_metrics(-pdfs, GRID, z)
    with pytest.raises(ValueError, match="increasing"):
        pm.distribution_metrics(pdfs, GRID[::-1], z)
