"""p(z) of the photo-z methods (``predict_pdf``, baselines/contract.py): every registered photo-z
method gives one on the shared grid, normalised and non-negative, and the helpers that build
them (Gaussian, quantiles, re-gridded bins, the k-NN kernel density) by hand."""

from __future__ import annotations

import numpy as np
import pytest
from lensbench.baselines import photoz as bp
from lensbench.baselines.registry import METHODS, resolve_method
from scipy import stats
from test_contract import PHOTOZ_INFO, TINY, fitted_digest, tiny_catalogue

PHOTOZ_METHODS = sorted(name for name in METHODS if "photoz" in resolve_method(name).kinds)


def test_the_photoz_methods_are_the_ones_expected():
    """A new photo-z method is covered below as soon as it is registered."""
    assert {"knn-photoz", "xgboost-photoz", "mlp-photoz", "pdf-mlp-photoz", "netz-photoz",
            "netz-fusion-photoz"} <= set(PHOTOZ_METHODS)


@pytest.mark.parametrize("name", PHOTOZ_METHODS)
def test_every_photoz_method_gives_a_normalised_pdf_on_the_shared_grid(name):
    X, y = tiny_catalogue()
    method = resolve_method(name)(**TINY.get(name, {})).fit(X[:100], y[:100], info=PHOTOZ_INFO)
    fitted = fitted_digest(method)
    pdf = method.predict_pdf(X[100:])
    assert pdf.shape == (60, len(bp.PDF_GRID)) and np.isfinite(pdf).all() and (pdf >= 0).all()
    np.testing.assert_allclose(np.trapezoid(pdf, bp.PDF_GRID, axis=1), 1.0, atol=1e-9)
    assert fitted_digest(method) == fitted, "predict_pdf changed the fitted method"
    np.testing.assert_array_equal(pdf, method.predict_pdf(X[100:]))
    # galaxies far brighter and fainter than any trained on: a regression runs past the grid
    # (mlp-photoz gave z = -0.135), the point estimate must stay where its p(z) is
    n_bands = X.shape[1] // 2
    extreme = np.concatenate([X[100:110], X[100:110]])
    extreme[:10, :n_bands] -= 8.0
    extreme[10:, :n_bands] += 8.0
    z = method.predict(extreme)
    assert ((z >= bp.PDF_GRID[0]) & (z <= bp.PDF_GRID[-1])).all(), (z.min(), z.max())


def test_gaussian_pdf_matches_scipy_and_floors_the_width():
    pdf = bp.gaussian_pdf(np.array([0.5, 0.3]), np.array([0.03**2, 0.0]))
    np.testing.assert_allclose(pdf[0], stats.norm.pdf(bp.PDF_GRID, 0.5, 0.03), atol=1e-6)
    # zero variance: one grid step wide, still normalised
    np.testing.assert_allclose(pdf[1], stats.norm.pdf(bp.PDF_GRID, 0.3, bp.PDF_STEP),
                               rtol=1e-3, atol=1e-6)
    # a mean below 0 is cut at z = 0 and renormalised: the half-Gaussian
    half = bp.gaussian_pdf(np.array([0.0]), np.array([0.1**2]))[0]
    assert half[0] == pytest.approx(2 * stats.norm.pdf(0, 0, 0.1), rel=0.01)


def test_quantile_pdf_rebuilds_a_gaussian_and_keeps_its_cdf_at_the_levels():
    levels = np.array(bp.PDF_QUANTILES)
    quantiles = stats.norm.ppf(levels, 0.6, 0.05)[None]
    pdf = bp.quantile_pdf(quantiles, levels)[0]
    cdf = np.concatenate([[0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * bp.PDF_STEP)])
    np.testing.assert_allclose(np.interp(quantiles[0], bp.PDF_GRID, cdf), levels, atol=0.01)
    # a CDF linear between seven quantiles, lightly smoothed: within 20% of the peak, ~6% of
    # the mass moved (an L1 distance of 0.115)
    truth = stats.norm.pdf(bp.PDF_GRID, 0.6, 0.05)
    difference = np.abs(pdf - truth)
    assert difference.max() < 0.2 * pdf.max()
    assert np.trapezoid(difference, bp.PDF_GRID) < 0.13
    # two nearly equal quantiles make no spike: the density stays below the kernel's peak mass
    close = quantiles.copy()
    close[0, 4] = close[0, 3] + 1e-6  # levels 0.5 and 0.84 almost together: 34% of the mass
    spiky = bp.quantile_pdf(close, levels, widths=0.01)[0]
    assert spiky.max() <= 0.34 * stats.norm.pdf(0, 0, 0.01) + 2 * pdf.max()
    # crossing quantiles are sorted; identical ones still give a normalised pdf
    crossed = bp.quantile_pdf(quantiles[:, ::-1], levels)[0]
    np.testing.assert_allclose(crossed, pdf)
    flat = bp.quantile_pdf(np.full((1, len(levels)), 0.4), levels)[0]
    assert np.trapezoid(flat, bp.PDF_GRID) == pytest.approx(1.0)
    assert bp.PDF_GRID[np.argmax(flat)] == pytest.approx(0.4, abs=0.03)


def test_binned_pdf_regrid_keeps_the_mean_and_the_mass():
    from lensbench.deep.photoz_pdf import regrid_binned_pdf

    edges = np.linspace(0, 1.05, 121)
    centres = (edges[1:] + edges[:-1]) / 2
    probabilities = stats.norm.pdf(centres, 0.4, 0.04)[None]
    probabilities /= probabilities.sum()
    pdf = regrid_binned_pdf(edges, probabilities)[0]
    assert np.trapezoid(pdf, bp.PDF_GRID) == pytest.approx(1.0)
    assert np.trapezoid(pdf * bp.PDF_GRID, bp.PDF_GRID) == pytest.approx(0.4, abs=1e-3)
    assert (pdf[bp.PDF_GRID > 1.05] == 0).all()


def _noisy_catalogue(n, seed, scatter=0.03):
    """z = a function of the colours plus Gaussian scatter (1 + z): the true p(z) is a Gaussian
    of width scatter (1 + z)."""
    rng = np.random.default_rng(seed)
    z0 = rng.uniform(0.1, 0.7, n)
    g = 20.0 + rng.normal(0, 0.5, n)
    mags = np.column_stack([g + 1.0, g, g - 2.0 * z0, g - 2.5 * z0, g - 2.8 * z0])
    z = z0 + rng.normal(0, scatter, n) * (1 + z0)
    return np.hstack([mags, np.full((n, 5), 0.02)]), z


def test_knn_bandwidth_chosen_on_validation_gives_a_calibrated_pit():
    from lensbench.bench.photoz_metrics import distribution_metrics

    X, y = _noisy_catalogue(3000, 0)
    Xv, yv = _noisy_catalogue(500, 1)
    Xt, yt = _noisy_catalogue(1500, 2)
    chosen = bp.KNNPhotoz().fit(X, y, validation=(Xv, yv))
    assert chosen.bandwidth_ in bp.KNNPhotoz.BANDWIDTHS
    assert bp.KNNPhotoz().fit(X, y).bandwidth_ == 0.01  # no validation: the default
    metrics = distribution_metrics(chosen.predict_pdf(Xt), bp.PDF_GRID, yt)[0]
    too_wide = bp.KNNPhotoz(bandwidth=0.1).fit(X, y)
    wide = distribution_metrics(too_wide.predict_pdf(Xt), bp.PDF_GRID, yt)[0]
    assert metrics["pit_ks"] < 0.05 < wide["pit_ks"]
    assert metrics["cdeloss"] < wide["cdeloss"]
    # the point estimate is the local fit, whatever the bandwidth
    np.testing.assert_array_equal(chosen.predict(Xt), too_wide.predict(Xt))


def _gaussian_set(width_factor, n, seed, sigma=0.05):
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.3, 1.0, n)
    z = mu + rng.normal(0, sigma, n)
    return bp.gaussian_pdf(mu, np.full(n, (width_factor * sigma) ** 2)), z


def test_pit_recalibration_on_held_out_rows_makes_a_too_narrow_set_calibrated():
    held_pdf, held_z = _gaussian_set(0.5, 3000, 0)
    test_pdf, test_z = _gaussian_set(0.5, 3000, 1)
    before = stats.kstest(bp.pit_of(test_pdf, test_z), "uniform").statistic
    quantiles = bp.pit_recalibration(held_pdf, held_z)
    fixed = bp.recalibrated_pdf(test_pdf, quantiles)
    assert (fixed >= 0).all()
    np.testing.assert_allclose(np.trapezoid(fixed, bp.PDF_GRID, axis=1), 1.0, atol=1e-9)
    after = stats.kstest(bp.pit_of(fixed, test_z), "uniform").statistic
    assert before > 0.1 and after < 0.03, (before, after)
    # a calibrated set is left nearly as it was
    calibrated_pdf, calibrated_z = _gaussian_set(1.0, 3000, 2)
    same = bp.recalibrated_pdf(calibrated_pdf, bp.pit_recalibration(*_gaussian_set(1.0, 3000, 3)))
    assert np.trapezoid(np.abs(same - calibrated_pdf), bp.PDF_GRID, axis=1).mean() < 0.1


def test_pdf_mlp_recalibration_changes_the_pdf_not_the_point_estimate():
    from lensbench.deep.photoz_pdf import PDFMLPPhotoz

    X, y = tiny_catalogue(n=400)
    params = dict(epochs=2, hidden=16, n_members=1, n_bins=30, num_threads=1)
    validation = (X[200:300], y[200:300])
    plain = PDFMLPPhotoz(recalibrate=False, **params).fit(X[:200], y[:200],
                                                          validation=validation)
    calibrated = PDFMLPPhotoz(recalibrate=True, **params).fit(X[:200], y[:200],
                                                             validation=validation)
    assert plain.pit_quantiles_ is None and calibrated.pit_quantiles_.shape == (51,)
    np.testing.assert_array_equal(plain.predict(X[300:]), calibrated.predict(X[300:]))
    assert not np.allclose(plain.predict_pdf(X[300:]), calibrated.predict_pdf(X[300:]))
