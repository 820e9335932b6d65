"""The classical baselines: features on hand-made cases, the arc finder and the PCA finder on
controlled images, catalog-nn's threshold, and every baseline beating random on an easy set."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lensbench.baselines.arcfinder import ArcFinder, group_medians
from lensbench.baselines.catalog import CatalogueNetwork
from lensbench.baselines.common import validation_split
from lensbench.baselines.contract import TaskInfo
from lensbench.baselines.features import (
    APERTURE_RADII_ARCSEC,
    all_features,
    aperture_fluxes,
    asinh_magnitude,
    blue_red_indices,
    catalogue_features,
)
from lensbench.baselines.pca import PCALensFinder
from lensbench.baselines.registry import resolve_method
from lensbench.bench.metrics import auroc
from lensbench.datasets.config import SimConfig
from lensbench.datasets.simulate import Simulator

BASELINES = ("xgboost", "catalog-nn", "arcfinder", "pca", "hog-logreg")
KIDS_NOISE = np.array([0.0026, 0.0038, 0.010], dtype=np.float32)  # g, r, i sky sigma, nMgy/px


def info_for(X, bands, pixel_scale=0.2):
    return TaskInfo(name="test", kind="lens-finding", bands=tuple(bands),
                    pixel_scale=pixel_scale, image_shape=tuple(X.shape[1:]))


# ----------------------------------------------------------------------------- features

def test_aperture_fluxes_match_photutils_and_a_point_source():
    from photutils.aperture import CircularAperture, aperture_photometry

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (3, 2, 40, 40)).astype(np.float32)
    fast = aperture_fluxes(X, 0.2)
    for r, radius in enumerate(APERTURE_RADII_ARCSEC):
        aperture = CircularAperture((19.5, 19.5), r=radius / 0.2)
        slow = aperture_photometry(X[1, 0], aperture, method="exact")["aperture_sum"][0]
        assert fast[1, 0, r] == pytest.approx(slow, rel=1e-4, abs=1e-3)
    # A point source of known flux on the centre pixel of an odd stamp: in every aperture.
    point = np.zeros((1, 2, 65, 65), dtype=np.float32)
    point[0, :, 32, 32] = (10.0, 40.0)
    np.testing.assert_allclose(aperture_fluxes(point, 0.2)[0],
                               [[10.0] * 4, [40.0] * 4], rtol=1e-5)


def test_catalogue_features_give_magnitudes_and_colours():
    point = np.zeros((1, 2, 65, 65), dtype=np.float32)
    point[0, :, 32, 32] = (10.0, 40.0)  # g = 22.5 - 2.5 log10(10) = 20.0, r = 18.495
    values, names = catalogue_features(point, 0.2, ("g", "r"))
    column = dict(zip(names, values[0], strict=True))
    assert column["mag_g_1.04"] == pytest.approx(20.0, abs=1e-3)
    assert column["mag_r_4.64"] == pytest.approx(22.5 - 2.5 * np.log10(40.0), abs=1e-3)
    assert column["colour_g-r_1.76"] == pytest.approx(2.5 * np.log10(4.0), abs=1e-3)
    # A point source has no light outside the first aperture: gradients say so, colour is flat.
    assert column["grad_g_ring1.76-3.00"] > 5
    assert len(names) == len(set(names)) == values.shape[1]
    # Negative fluxes (sky-subtracted noise) still give finite asinh magnitudes.
    assert np.isfinite(asinh_magnitude(np.array([-5.0, 0.0, 5.0]), 0.1)).all()
    negative = -np.abs(np.random.default_rng(1).normal(0, 1, (4, 3, 32, 32))).astype(np.float32)
    assert np.isfinite(all_features(negative, 0.2, ("g", "r", "i"))[0]).all()


def test_band_fallbacks_for_colour_cuts():
    assert blue_red_indices(("u", "g", "r", "i")) == (1, 3)
    assert blue_red_indices(("u", "r", "z")) == (0, 2)
    assert blue_red_indices(("i", "g")) == (1, 0)
    assert blue_red_indices(("VIS",)) == (0, 0)
    assert blue_red_indices(("b0", "b1", "b2")) == (0, 2)


def test_group_medians():
    values = np.array([5.0, 1.0, 3.0, 10.0, 2.0, 7.0])
    groups = np.array([0, 0, 0, 2, 2, 2])
    medians = group_medians(values, groups, 4)
    np.testing.assert_allclose(medians[[0, 2]], [3.0, 7.0])
    assert np.isnan(medians[[1, 3]]).all()


# ----------------------------------------------------------------------------- arc finder

def paint_arc(shape, pixel_scale, radius, centre_angle, half_angle, width, flux_per_band):
    """A Gaussian ring segment (arcsec units) about the stamp centre: (B, H, W) in nMgy, each
    band's image summing to its entry of ``flux_per_band``."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    x, y = (xx - (w - 1) / 2) * pixel_scale, (yy - (h - 1) / 2) * pixel_scale
    r, phi = np.hypot(x, y), np.arctan2(y, x)
    dphi = np.angle(np.exp(1j * (phi - centre_angle)))
    arc = np.exp(-0.5 * ((r - radius) / width) ** 2) * np.exp(-0.5 * (dphi / half_angle) ** 8)
    arc /= arc.sum()
    return np.stack([f * arc for f in flux_per_band]).astype(np.float32)


@pytest.fixture(scope="module")
def galaxies():
    """Noiseless KiDS-like g, r, i red galaxies without any lensed source, 64x64 at 0.2"/px."""
    sim = Simulator(SimConfig(survey="kids", bands=("g", "r", "i"), stamp_size=64,
                              lens_fraction=0.0, noise=False))
    images, _ = sim.simulate(8, seed=3)
    return images


def test_arcfinder_scores_a_painted_arc_above_the_same_galaxy(galaxies):
    rng = np.random.default_rng(4)
    n = len(galaxies)
    noise = rng.normal(0, 1, galaxies.shape).astype(np.float32) * KIDS_NOISE[None, :, None, None]
    plain = galaxies + noise
    # A blue arc of ~21 mag (source colours g - i ~ 0.2) at 1.6", subtending ~100 deg.
    arcs = np.stack([paint_arc((64, 64), 0.2, 1.6, angle, 0.9, 0.12, (4.5, 4.0, 3.8))
                     for angle in rng.uniform(-np.pi, np.pi, n)])
    finder = ArcFinder().fit(np.concatenate([plain, plain + arcs]),
                             np.r_[np.zeros(n), np.ones(n)], info=info_for(plain, "gri"))
    with_arc = finder.best_arcs(plain + arcs)
    without = finder.best_arcs(plain)
    assert (with_arc["score"] > without["score"]).all()
    assert (with_arc["n_passing"] >= 1).mean() >= 0.75
    assert (without["n_passing"] == 0).mean() >= 0.75
    assert 1.0 < np.nanmedian(with_arc["distance"]) < 2.0  # arcsec; the arc is at 1.6"
    scores = finder.predict_score(np.concatenate([plain, plain + arcs]))
    assert ((scores >= 0) & (scores <= 1)).all()
    # The same arc with a single band: no colour cut, still found.
    mono = ArcFinder().fit(plain[:, 2:], np.zeros(n), info=info_for(plain[:, 2:], ["i"]))
    assert (mono.best_arcs(plain[:, 2:] + arcs[:, 2:])["score"]
            > mono.best_arcs(plain[:, 2:])["score"]).mean() >= 0.75


# ----------------------------------------------------------------------------- PCA

def test_pca_residual_of_a_basis_galaxy_is_near_zero(galaxies):
    finder = PCALensFinder(n_components=7, crop_arcsec=10.0).fit(
        galaxies, np.zeros(len(galaxies)), info=info_for(galaxies, "gri"))
    # A basis galaxy at 2.5x the brightness: the flux normalisation makes it a basis member.
    brighter = 2.5 * galaxies[3:4]
    residual = finder.residuals(brighter)
    crop = brighter[..., 7:57, 7:57]  # the 50-px (10") crop the basis was fitted on
    assert np.abs(residual).max() < 1e-3 * np.abs(crop).max()
    # A painted arc stays in the residual.
    arc = paint_arc((64, 64), 0.2, 1.6, 0.3, 0.9, 0.12, (4.5, 4.0, 3.8))[None]
    assert finder.residuals(brighter + arc).sum() > 0.5 * arc[..., 7:57, 7:57].sum()


# ----------------------------------------------------------------------------- catalog-nn

@pytest.fixture(scope="module")
def easy_set():
    """KiDS-like g, r, i 32x32 with bright sources (21-23 mag): 300 train, 300 test."""
    config = SimConfig(survey="kids", bands=("g", "r", "i"), stamp_size=32, lens_fraction=0.5,
                       theta_e_range=(0.8, 2.5), source_mag_range=(21.0, 23.0))
    images, truth = Simulator(config).simulate(600, seed=11)
    return images[:300], truth["label"][:300], images[300:], truth["label"][300:]


def test_catalog_nn_keeps_99_percent_of_validation_lenses(easy_set):
    X, y, _, _ = easy_set
    info = info_for(X, "gri")
    method = CatalogueNetwork(random_state=2).fit(X, y, info=info)
    assert method.validation_kept_ >= 0.99
    _, val = validation_split(y, method.validation_fraction, method.random_state)
    lenses = val[y[val] == 1]
    assert method.passes(X[lenses]).mean() >= 0.99
    assert CatalogueNetwork.lens_keeping_threshold(np.arange(100.0), 0.99) == 1.0
    assert CatalogueNetwork.lens_keeping_threshold(np.arange(10.0), 0.99) == 0.0


# ----------------------------------------------------------------------------- all baselines

@pytest.mark.parametrize("name", BASELINES)
def test_baseline_beats_random_on_an_easy_set(name, easy_set):
    X, y, X_test, y_test = easy_set
    method = resolve_method(name)(random_state=0)
    method.fit(X, y, info=info_for(X, "gri"))
    scores = method.predict_score(X_test)
    assert scores.shape == (len(X_test),) and np.isfinite(scores).all()
    assert auroc(y_test, scores) > 0.7


def test_adaptive_moments_recover_the_shape_and_centre_a_round_weight_biases():
    from lensbench.baselines.arcfinder import adaptive_moments, elliptical_model
    from lensbench.baselines.lenslight import subtract_lens_light

    # Elliptical exponential galaxies, axis ratio 0.5 at 30 degrees, 0.7 px off the centre.
    q, angle, (cx, cy) = 0.5, math.radians(30), (0.7, -0.4)
    yy, xx = np.mgrid[:64, :64] - 31.5
    x, y = xx - cx, yy - cy
    major = x * math.cos(angle) + y * math.sin(angle)
    minor = -x * math.sin(angle) + y * math.cos(angle)
    galaxy = np.exp(-np.sqrt(q * major ** 2 + minor ** 2 / q) / 4.0)[None].astype(np.float32)
    got_x, got_y, ixx, iyy, ixy = adaptive_moments(galaxy, np.zeros(1), np.zeros(1), 6.0)
    root = math.hypot((ixx[0] - iyy[0]) / 2, ixy[0])
    axis_ratio = math.sqrt(((ixx[0] + iyy[0]) / 2 - root) / ((ixx[0] + iyy[0]) / 2 + root))
    assert axis_ratio == pytest.approx(q, abs=0.01)
    assert 0.5 * math.atan2(2 * ixy[0], ixx[0] - iyy[0]) == pytest.approx(angle, abs=0.01)
    assert (got_x[0], got_y[0]) == pytest.approx((cx, cy), abs=0.02)
    # The model of the adaptive shape leaves a fraction of the weighted one's residual.
    residual = {shape: np.abs(subtract_lens_light(galaxy[:, None], bands=("i",), pixel_scale=0.2,
                                                  shape=shape)).sum() for shape in
                ("weighted", "adaptive")}
    assert residual["adaptive"] < 0.5 * residual["weighted"]
    with pytest.raises(ValueError, match="shape must be one of"):
        elliptical_model(galaxy, 0.2, shape="round")


def test_sersic_clipped_profile_keeps_a_full_ring_the_annulus_medians_take():
    from lensbench.baselines.arcfinder import elliptical_model
    from lensbench.baselines.lenslight import subtract_lens_light

    # A de Vaucouleurs lens (closed form, b_4 = 7.669) with a full Einstein ring at 12 px, in
    # white noise of unit sigma; the same lenses without the ring.
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:64, :64] - 31.5
    radius = np.hypot(xx, yy / 0.8)
    lens = 40.0 * np.exp(-7.669 * ((radius / 8.0) ** 0.25 - 1))
    ring = 6.0 * np.exp(-0.5 * ((np.hypot(xx, yy) - 12.0) / 1.2) ** 2)
    noise = rng.normal(0, 1, (20, 1, 64, 64))
    with_ring = (lens + ring + noise).astype(np.float32)
    without = (lens + noise).astype(np.float32)
    on_ring = np.abs(np.hypot(xx, yy) - 12.0) < 2.5

    def ring_kept(profile):
        kept = (subtract_lens_light(with_ring, bands=("vis",), pixel_scale=0.1, profile=profile)
                - subtract_lens_light(without, bands=("vis",), pixel_scale=0.1, profile=profile))
        return kept[:, 0][:, on_ring].sum(axis=1).mean() / ring[on_ring].sum()

    # The medians of annuli take most of the ring with the lens; the Sersic fit does not bend
    # around it, so the annuli it raised are replaced and most of the ring stays.
    median_kept, clipped_kept = ring_kept("median"), ring_kept("sersic-clipped")
    assert median_kept < 0.1
    assert clipped_kept > 0.6
    # Without a ring no annulus is clipped: the model is the medians' to the last bit.
    median = elliptical_model(without[:, 0], 0.1)[0]
    clipped = elliptical_model(without[:, 0], 0.1, profile="sersic-clipped")[0]
    assert np.array_equal(median, clipped)
    with pytest.raises(ValueError, match="profile must be one of"):
        elliptical_model(without[:, 0], 0.1, profile="bump-free")
