"""The simulator against lenstronomy, closed forms and its own configuration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from astropy.io import fits
from lensbench.datasets.config import NEGATIVE_CLASSES, SimConfig
from lensbench.datasets.lensing import LENS_KEYS, count_images
from lensbench.datasets.population import einstein_radius, velocity_dispersion_for
from lensbench.datasets.psf import psf_kernel
from lensbench.datasets.simulate import Simulator
from lensbench.datasets.surveys import get_survey
from scipy import stats

SMALL = dict(survey="hsc", stamp_size=24, bands=("g", "i"))


def lens_tensors(n, **values):
    base = dict(theta_e=1.0, q=1.0, phi=0.0, gamma1=0.0, gamma2=0.0, lens_x=0.0, lens_y=0.0)
    base.update(values)
    return {key: torch.full((n, 1, 1), float(base[key]), dtype=torch.float64)
            for key in LENS_KEYS}


# ----------------------------------------------------------------------------- against lenstronomy
def test_noiseless_images_match_lenstronomy_pixel_for_pixel(tmp_path):
    """Same systems, same pixelised PSF: lens light + lensed source agree with lenstronomy."""
    pytest.importorskip("lenstronomy")
    from lensbench.bench.tools.perf import PERF_CONFIG, lenstronomy_image_model, lenstronomy_kwargs
    from lenstronomy.Data.psf import PSF

    kernel = psf_kernel("moffat", 0.7, 0.168, beta=3.5)
    path = tmp_path / "psf.fits"
    fits.PrimaryHDU(kernel).writeto(path)
    config = PERF_CONFIG.replace(noise=False, psf_model="pixelised", psf_file=str(path),
                                 bands=("g", "i"))
    simulator = Simulator(config, dtype=torch.float64)
    images, truth = simulator.simulate(6, seed=3)
    assert (truth["label"] == 1).all() and (truth["n_images"] >= 1).all()
    worst = []
    for b, band in enumerate(simulator.bands):
        model = lenstronomy_image_model(config.replace(psf_model="gaussian", psf_file=None), b)
        model.update_psf(PSF(psf_type="PIXEL", kernel_point_source=kernel))
        for row in range(len(images)):
            reference = model.image(*lenstronomy_kwargs(truth, row, band, config.reference))
            ours = images[row, b] * band.electrons_per_nanomaggy
            worst.append(np.abs(ours - reference).max() / reference.max())
            assert ours.sum() == pytest.approx(reference.sum(), rel=1e-3)
    # Typical residuals are ~2e-4 of the peak. lenstronomy approximates the Sersic b_n as
    # 1.9992 n - 0.3271 (3% off at n = 0.5) where we solve for it exactly, which moves a few
    # source pixels by up to ~0.6% of the peak.
    assert np.median(worst) < 1e-3 and max(worst) < 1e-2


# ----------------------------------------------------------------------------- closed forms
def test_image_counts_of_an_isothermal_sphere_and_an_ellipsoid():
    # SIS: a source inside the Einstein ring has two images, outside one.
    lens = lens_tensors(1)
    beta = torch.tensor([[0.3, 0.6, 1.4, 2.0]], dtype=torch.float64)
    counts = count_images(lens, beta, torch.zeros_like(beta))
    assert counts.tolist() == [[2, 2, 1, 1]]
    # SIE q = 0.6: a source at the centre lies inside the astroid caustic (4 images); a source
    # just inside the cut but outside the caustic has 2.
    lens = lens_tensors(1, q=0.6, phi=0.4, theta_e=1.3, lens_x=0.2, lens_y=-0.1)
    sx = torch.tensor([[0.2 + 0.02, 0.2 + 0.8]], dtype=torch.float64)
    counts = count_images(lens, sx, torch.full_like(sx, -0.1))
    assert counts.tolist() == [[4, 2]]


def test_sis_magnification_matches_closed_form():
    """A compact source behind an SIS: total magnification 2 theta_E / beta (beta < theta_E)."""
    config = SimConfig(survey="euclid-vis", stamp_size=48, supersample=10, lens_fraction=1.0,
                       mean_clumps=0.0, max_clumps=0, noise=False, q_range=(1.0, 1.0),
                       shear_sigma=0.0, lens_offset_sigma=0.0, theta_e_distribution="flat",
                       theta_e_range=(1.5, 1.5), source_r_eff_range=(0.03, 0.03),
                       source_radius=0.5)
    _, truth = Simulator(config, dtype=torch.float64).simulate(16, seed=2)
    beta = np.hypot(truth["source_x"], truth["source_y"])
    far = beta > 0.3  # the point-source formula fails where the source touches the caustic
    expected = 2 * truth["theta_e"] / beta
    np.testing.assert_allclose(truth["magnification"][far], expected[far], rtol=0.03)


def test_einstein_radius_of_a_typical_lens():
    # sigma = 250 km/s, z_l = 0.3, z_s = 1.0 (D_ls/D_s = 0.631 in flat LCDM 70/0.3):
    # 4 pi (250/c)^2 0.631 rad = 1.14 arcsec.
    theta = einstein_radius(np.array([250.0]), np.array([0.3]), np.array([1.0]))
    assert theta[0] == pytest.approx(1.14, abs=0.02)
    assert velocity_dispersion_for(theta, np.array([0.3]), np.array([1.0]))[0] == \
        pytest.approx(250.0)


# ----------------------------------------------------------------------------- noise
@pytest.mark.parametrize("survey", ["hsc", "lsst-1visit", "lsst-10yr"])
def test_point_source_depth_matches_closed_form(survey):
    """Inject a point source at the closed-form 5-sigma depth into simulated sky, measure its
    PSF-weighted flux S/N over many noise draws; the measured depth agrees within 0.2 mag."""
    simulator = Simulator(SimConfig(survey=survey))
    generator = torch.Generator().manual_seed(0)
    n_draws = 1500
    for b, band in enumerate(simulator.bands):
        kernel = torch.as_tensor(simulator.renderer.kernels[b], dtype=torch.float32)
        depth = band.point_source_depth(simulator.renderer.n_eff_pixels[b])
        electrons = band.counts(depth)
        expected = torch.zeros((n_draws, len(simulator.bands), *kernel.shape))
        expected[:, b] = electrons * kernel
        noisy = simulator.renderer.add_noise(expected, generator)[:, b]
        estimate = (noisy * kernel).sum(dim=(1, 2)) / (kernel**2).sum()
        snr = float(estimate.mean() / estimate.std())
        assert float(estimate.mean()) == pytest.approx(electrons, rel=0.03)
        measured_depth = depth + 2.5 * math.log10(snr / 5.0)
        assert measured_depth == pytest.approx(depth, abs=0.2), (survey, band.name)


@pytest.mark.parametrize("survey", ["hsc", "lsst-1visit", "lsst-10yr"])
def test_closed_form_depth_is_near_the_published_one(survey):
    """The presets are consistent: sky, zeropoint, exposure and PSF give the published 5-sigma
    depths to within 0.6 mag (docs/references.md: ~0.4 mag is typical)."""
    simulator = Simulator(SimConfig(survey=survey))
    for band, n_eff in zip(simulator.bands, simulator.renderer.n_eff_pixels, strict=True):
        assert abs(band.point_source_depth(n_eff) - band.depth_5sigma) < 0.6, band.name


# ----------------------------------------------------------------------------- configuration
def test_same_config_and_seed_give_identical_arrays():
    simulator = Simulator(SimConfig(**SMALL))
    a, truth_a = simulator.simulate(40, seed=7)
    b, truth_b = Simulator(SimConfig(**SMALL)).simulate(40, seed=7)
    np.testing.assert_array_equal(a, b)
    for key in truth_a:
        np.testing.assert_array_equal(truth_a[key], truth_b[key])
    c, _ = simulator.simulate(40, seed=8)
    d, _ = simulator.simulate(40, seed=7, shard=1)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_worker_threads_give_the_same_arrays_as_one_thread():
    # On 2 torch threads, chunks are rendered by two worker threads (noise still added in
    # order); on 1, one after the other. The bytes must not depend on it.
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            simulator = Simulator(SimConfig(**SMALL))
            results.append(simulator.simulate(100, seed=3))  # 4 chunks: the pipeline fills
    finally:
        torch.set_num_threads(previous)
    (a, truth_a), (b, truth_b) = results
    np.testing.assert_array_equal(a, b)
    for key in truth_a:
        np.testing.assert_array_equal(truth_a[key], truth_b[key])


def test_truth_is_complete_and_consistent():
    simulator = Simulator(SimConfig(**SMALL, lens_fraction=0.5))
    images, truth = simulator.simulate(200, seed=1)
    assert images.shape == (200, 2, 24, 24) and images.dtype == np.float32
    assert np.isfinite(images).all()
    lens = truth["label"] == 1
    assert 60 < lens.sum() < 140
    for key in ("theta_e", "q", "phi", "e1", "gamma1", "source_x", "magnification", "arc_snr",
                "source_mag_g", "source_mag_i"):
        assert np.isfinite(truth[key][lens]).all(), key
        assert np.isnan(truth[key][~lens]).all(), key
    for key in ("lens_mag_g", "lens_mag_i", "lens_x", "lens_y", "lens_r_eff"):
        assert np.isfinite(truth[key]).all(), key
    assert (truth["n_images"][lens] >= 1).all() and (truth["n_images"][~lens] == 0).all()
    assert (truth["lens_mag_g"] > truth["lens_mag_i"]).mean() > 0.95  # red lenses
    e = np.hypot(truth["e1"][lens], truth["e2"][lens])
    np.testing.assert_allclose(e, (1 - truth["q"][lens]) / (1 + truth["q"][lens]), atol=1e-6)
    np.testing.assert_allclose(truth["arc_snr"][lens], np.maximum(
        truth["arc_snr_g"][lens], truth["arc_snr_i"][lens]))


def test_theta_e_distributions():
    flat = Simulator(SimConfig(**SMALL, theta_e_distribution="flat", theta_e_range=(0.8, 2.0),
                               lens_fraction=1.0, noise=False))
    _, truth = flat.simulate(300, seed=4)
    assert stats.kstest((truth["theta_e"] - 0.8) / 1.2, "uniform").pvalue > 0.01
    natural = Simulator(SimConfig(**SMALL, lens_fraction=1.0, noise=False))
    _, truth = natural.simulate(300, seed=4)
    theta = truth["theta_e"]
    assert theta.min() >= 0.5 and theta.max() <= 3.0
    # The natural distribution falls steeply: most Einstein radii are near the low end.
    assert np.median(theta) < 1.2 and (theta > 2.0).mean() < 0.1


def test_quad_fraction_is_honoured():
    config = SimConfig(**SMALL, lens_fraction=1.0, noise=False, quad_fraction=0.5,
                       q_range=(0.5, 0.8))
    _, truth = Simulator(config).simulate(200, seed=5)
    assert 0.35 < (truth["n_images"] >= 4).mean() < 0.65
    _, truth = Simulator(config.replace(quad_fraction=0.0)).simulate(100, seed=5)
    assert (truth["n_images"] < 4).all()


def test_clean_labelling_applies_its_cuts():
    config = SimConfig(**SMALL, lens_fraction=1.0, labelling="clean", min_magnification=3.0,
                       min_arc_snr=10.0)
    _, truth = Simulator(config).simulate(60, seed=6)
    assert (truth["magnification"] >= 3.0).all() and (truth["arc_snr"] >= 10.0).all()
    _, metcalf = Simulator(config.replace(labelling="metcalf")).simulate(60, seed=6)
    assert (metcalf["arc_snr"] < 10.0).any()  # Metcalf keeps barely visible lenses


@pytest.mark.parametrize("change, message", [
    (dict(q_range=(0.5, 1.2)), "axis ratio q must lie in"),
    (dict(q_range=(0.0, 1.0)), "axis ratio q must lie in"),
    (dict(theta_e_range=(0.0, 2.0)), "theta_E must be > 0"),
    (dict(bands=("g", "u")), "has no band 'u'; its bands are"),
    (dict(survey="hcs"), "Did you mean 'hsc'"),
    (dict(labelling="strict"), "labelling must be one of"),
    (dict(field_density=-1.0), "field_density must be a finite number >= 0"),
    (dict(field_mag_range=(25.0, 18.0)), "field_mag_range must be"),
    # a wrong type (from JSON or --set) is named before the simulator meets it
    (dict(field_density="abc"), "field_density must be a number, got 'abc'"),
    (dict(theta_e_range=(1.0, "a")), r"theta_e_range must be a list of 2 numbers"),
    (dict(theta_e_range=(1.0, 2.0, 3.0)), r"theta_e_range must be a list of 2 numbers"),
    (dict(max_clumps=2.5), "max_clumps must be an integer, got 2.5"),
    (dict(noise=1), "noise must be true or false, got 1"),
    (dict(bands="gri"), "bands must be a list of strings or None"),
    (dict(shard_size=0), "shard_size must be >= 1"),
    (dict(stamp_size=100000), r"stamp_size in \[8, 1024\] pixels, got .* stamp_size 100000"),
    (dict(stamp_size=4), r"stamp_size in \[8, 1024\]"),
    (dict(supersample=64), r"supersample must lie in \[1, 16\]"),
])
def test_invalid_configuration_is_a_clear_error(change, message):
    with pytest.raises(ValueError, match=message):
        SimConfig(**{**dict(survey="hsc"), **change})


def test_pixelised_psf_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad_psf.fits"
    fits.PrimaryHDU(np.ones((4, 4))).writeto(path)
    with pytest.raises(ValueError, match="bad_psf.fits.*odd-sized"):
        Simulator(SimConfig(**SMALL, psf_model="pixelised", psf_file=str(path)))
    nan = np.ones((5, 5))
    nan[2, 2] = np.nan  # its sum is NaN, which "sum <= 0" lets through
    fits.PrimaryHDU(nan).writeto(path, overwrite=True)
    with pytest.raises(ValueError, match=r"bad_psf.fits: PSF HDU 0 must be odd-sized, finite.*"
                                         r"1 non-finite pixel"):
        Simulator(SimConfig(**SMALL, psf_model="pixelised", psf_file=str(path)))
    text = tmp_path / "notes.txt"
    text.write_text("not a PSF")
    for where, message in ((text, "notes.txt: not a FITS file"),
                           (tmp_path / "none.fits", "none.fits: no such file")):
        with pytest.raises(ValueError, match=rf"SimConfig.psf_file .*{message}"):
            Simulator(SimConfig(**SMALL, psf_model="pixelised", psf_file=str(where)))


def test_psf_kernels_have_the_requested_width():
    for model in ("gaussian", "moffat"):
        kernel = psf_kernel(model, fwhm=0.8, pixel_scale=0.1, oversample=9)
        assert kernel.sum() == pytest.approx(1.0)
        profile = kernel[kernel.shape[0] // 2]
        above = np.flatnonzero(profile >= profile.max() / 2)
        # Width at half maximum, within a pixel of 8 pixels.
        assert abs((above[-1] - above[0] + 1) - 8) <= 1, model
    assert get_survey("hsc").psf_model == "moffat"


def test_early_type_sizes_follow_the_shen_relation_at_the_lens_redshift():
    from astropy.cosmology import FlatLambdaCDM
    from lensbench.datasets.population import early_type_r_eff

    # Shen et al. (2003) eq. 14 for early types: log10(R / kpc) = -0.4 * 0.65 * M_r - 5.06,
    # with M_r = M_i + 0.4 (rest-frame r - i of an elliptical); seen through D_A.
    absolute_i, z = np.array([-23.0, -22.0, -23.0]), np.array([0.15, 0.15, 0.6])
    kpc = 10 ** (-0.4 * 0.65 * (absolute_i + 0.4) - 5.06)
    d_a_kpc = FlatLambdaCDM(H0=70, Om0=0.3).angular_diameter_distance(z).value * 1e3
    expected = kpc / d_a_kpc * 180 / math.pi * 3600
    assert np.allclose(early_type_r_eff(absolute_i, z, np.zeros(3)), expected, rtol=1e-6)
    # A one-sigma deviate is the relation's log-normal scatter, sigma_lnR = 0.3.
    assert np.allclose(early_type_r_eff(absolute_i, z, np.ones(3)), expected * math.exp(0.3))


def test_lens_sizes_by_luminosity_change_only_the_sizes():
    config = SimConfig(**SMALL, lens_fraction=1.0, noise=False, z_lens_range=(0.1, 0.9))
    _, uniform = Simulator(config).simulate(200, seed=6)
    _, by_light = Simulator(config.replace(lens_size="size-luminosity")).simulate(200, seed=6)
    for key in ("z_lens", "sigma_v", "theta_e", "lens_mag_i", "source_mag_i", "n_images"):
        assert np.array_equal(uniform[key], by_light[key]), key  # the same random stream
    assert not np.array_equal(uniform["lens_r_eff"], by_light["lens_r_eff"])
    # Brighter and nearer lenses are larger on the sky; uniform sizes ignore both.
    assert stats.spearmanr(by_light["lens_mag_i"], by_light["lens_r_eff"])[0] < -0.5
    assert abs(stats.spearmanr(uniform["lens_mag_i"], uniform["lens_r_eff"])[0]) < 0.2
    assert uniform["z_lens"].min() < 0.2 and uniform["lens_mag_i"].min() < 17.5


def test_field_galaxies_add_neighbours_and_change_nothing_else():
    # Metcalf labels (no cuts) so that the same systems are kept with and without neighbours.
    config = SimConfig(**{**SMALL, "stamp_size": 48}, noise=False, labelling="metcalf")
    alone, alone_truth = Simulator(config).simulate(400, seed=8)
    field = config.replace(field_density=300.0, field_mag_range=(20.0, 23.0))
    crowded, truth = Simulator(field).simulate(400, seed=8)
    for key in ("label", "theta_e", "lens_mag_i", "source_mag_i", "lens_x", "magnification"):
        assert np.array_equal(alone_truth[key], truth[key], equal_nan=True), key
    # Poisson counts: density x stamp area (48 x 0.168" = 8.064" wide), the same for lenses
    # and non-lenses: a neighbour says nothing about the label.
    assert truth["field_count"].mean() == pytest.approx(300 * (48 * 0.168 / 60) ** 2, rel=0.1)
    lens = truth["label"] == 1
    assert abs(truth["field_count"][lens].mean() - truth["field_count"][~lens].mean()) < 0.4
    # The images differ by the neighbours only, positive light: in i, at least a quarter of the
    # brightest one's flux (its centre lies in the stamp) and at most all of theirs.
    added = (crowded - alone)[:, 1].sum(axis=(1, 2))  # nanomaggies in i
    assert (crowded - alone).min() > -1e-4 * alone.max()
    has = truth["field_count"] > 0
    assert np.all(np.abs(added[~has]) < 1e-4)
    brightest = 10 ** (-0.4 * (truth["field_mag_min"][has] - 22.5))
    assert np.all(added[has] > 0.24 * brightest)
    assert np.all(added[has] < 1.01 * truth["field_count"][has] * brightest)
    # Magnitudes follow N(m) ~ 10^(0.3 m) in 20-23: the share brighter than 22 in closed form.
    population = Simulator(field).population
    population.field_rng = np.random.default_rng(0)
    mags = population.draw_field(2000)["field_mag"]
    mags = mags[np.isfinite(mags)]
    share = (10 ** (0.3 * (22 - 23)) - 10 ** (0.3 * (20 - 23))) / (1 - 10 ** (0.3 * (20 - 23)))
    assert np.mean(mags < 22) == pytest.approx(share, abs=0.03)
    assert mags.min() >= 20 and mags.max() <= 23


def test_correlated_noise_keeps_the_variance_and_has_the_psf_correlation():
    """Noise minus the noise-free image, in the stamp corners: below one sky sigma of
    correlated noise the variance per pixel is the sky's (the white part is lowered); above, all
    of it is the correlated field, whose neighbouring pixels correlate as the PSF with itself:
    sum k(x, y) k(x + 1, y) / sum k^2 (closed form). The truth is that of white noise."""
    base = SimConfig(survey="euclid-vis", stamp_size=101, lens_fraction=0.5, field_density=0.0)
    band = get_survey("euclid-vis").bands[0]
    sky_sigma = (math.sqrt(band.sky_counts + band.n_exposures * band.read_noise**2)
                 / band.electrons_per_nanomaggy)
    clean, plain_truth = Simulator(base.replace(noise=False)).simulate(160, seed=4)
    noisy, truth = Simulator(base.replace(correlated_noise=2.0)).simulate(160, seed=4)
    level = truth.pop("correlated_noise")
    assert level.min() >= 0 and level.max() <= 2.0 and np.ptp(level) > 1.5
    for key, values in plain_truth.items():
        if not key.startswith("arc_snr"):
            np.testing.assert_array_equal(truth[key], values, err_msg=key)
    noise = (noisy - clean)[:, 0, :24, :24].astype(np.float64) / sky_sigma
    low, high = level < 0.7, level > 1.5
    assert np.mean(noise[low] ** 2) == pytest.approx(1.0, rel=0.04)
    assert np.mean(noise[high] ** 2) == pytest.approx(np.mean(level[high] ** 2), rel=0.06)
    kernel = psf_kernel(get_survey("euclid-vis").psf_model, band.psf_fwhm, band.pixel_scale,
                        get_survey("euclid-vis").moffat_beta)
    expected = np.sum(kernel[:, 1:] * kernel[:, :-1]) / np.sum(kernel**2)
    lag = np.mean(noise[high][:, :, 1:] * noise[high][:, :, :-1]) / np.mean(noise[high] ** 2)
    assert lag == pytest.approx(expected, abs=0.03)
    white = (Simulator(base).simulate(160, seed=4)[0] - clean)[:, 0, :24, :24]
    assert abs(np.mean(white[:, :, 1:] * white[:, :, :-1]) / np.mean(white**2)) < 0.02


def test_correlated_noise_through_the_acs_matching_kernel_correlates_as_degraded_hst_noise(
        real_data):
    """``correlated_noise_kernel="acs-f814w-matched"``: above one sky sigma the noise is the
    correlated field, whose pixels 1 and 2 apart correlate as those of white noise on 0.05" HST
    pixels degraded to VIS by ``degrade_image`` with the ACS F814W PSF matched (the real split's
    path: flux-conserving rebinning, then numpy's convolution with the matching kernel), and not
    as the PSF kernel's (0.65 and 0.19). Its variance is still the level's."""
    from lensbench.datasets import known_lenses
    from lensbench.datasets.degrade import degrade_image

    real_data(known_lenses.ACS_F814W_PSF)
    base = SimConfig(survey="euclid-vis", stamp_size=101, lens_fraction=0.5, field_density=0.0)
    matched = base.replace(correlated_noise=3.0, correlated_noise_kernel="acs-f814w-matched")
    assert SimConfig.from_dict(matched.to_dict()) == matched
    assert "correlated_noise_kernel" not in base.to_dict()
    band = get_survey("euclid-vis").bands[0]
    sky_sigma = (math.sqrt(band.sky_counts + band.n_exposures * band.read_noise**2)
                 / band.electrons_per_nanomaggy)
    clean, _ = Simulator(base.replace(noise=False)).simulate(120, seed=4)
    noisy, truth = Simulator(matched).simulate(120, seed=4)
    high = truth["correlated_noise"] > 1.8
    noise = (noisy - clean)[high, 0, :24, :24].astype(np.float64) / sky_sigma
    assert np.mean(noise**2) == pytest.approx(np.mean(truth["correlated_noise"][high] ** 2),
                                              rel=0.08)

    def lag(field, k):
        centred = field - field.mean(axis=(-2, -1), keepdims=True)
        return np.mean(centred[..., k:] * centred[..., :-k]) / np.mean(centred**2)

    rng = np.random.default_rng(0)
    native = known_lenses.acs_f814w_psf()
    hst = np.stack([degrade_image(rng.normal(size=(202, 202)), 0.05, "euclid-vis",
                                  stamp_size=101, native_psf=native,
                                  native_psf_scale=known_lenses.ACS_F814W_PSF_SCALE)[0]
                    for _ in range(20)])
    for k in (1, 2):
        assert lag(noise, k) == pytest.approx(lag(hst, k), abs=0.03), k
    assert lag(hst, 1) < 0.5 and abs(lag(hst, 2)) < 0.1  # unlike the PSF's 0.65 and 0.19


def test_correlated_noise_photons_add_the_objects_own_to_the_correlated_field():
    """``correlated_noise_electrons_per_nanomaggy`` E: at a pixel of noise-free flux I the
    correlated field's variance is level^2 sky + I / E through the kernel (its sum of squares),
    as a degraded HST snapshot's near a bright lens; the total is the larger of that and the
    survey's own (the white part tops it up). In the corners, where I ~ 0, it is as without."""
    base = SimConfig(survey="euclid-vis", stamp_size=61, lens_fraction=1.0, field_density=0.0,
                     correlated_noise=2.0, z_lens_range=(0.1, 0.2))
    band = get_survey("euclid-vis").bands[0]
    epn = band.electrons_per_nanomaggy
    background = band.sky_counts + band.n_exposures * band.read_noise**2
    kernel = psf_kernel(get_survey("euclid-vis").psf_model, band.psf_fwhm, band.pixel_scale,
                        get_survey("euclid-vis").moffat_beta)
    # A tenth of a 420 s ACS F814W snapshot's electrons per nanomaggy, so that through the VIS
    # PSF (which smooths far more than the ACS-to-VIS kernel does) the photons stand out.
    deep_electrons = 1.0e3
    with_photons = base.replace(correlated_noise_electrons_per_nanomaggy=deep_electrons)
    assert "correlated_noise_electrons_per_nanomaggy" not in base.to_dict()
    assert SimConfig.from_dict(with_photons.to_dict()) == with_photons
    clean, _ = Simulator(base.replace(noise=False)).simulate(300, seed=4)
    noisy, truth = Simulator(with_photons).simulate(300, seed=4)
    level = truth["correlated_noise"].astype(np.float64)[:, None, None]
    flux = np.clip(clean[:, 0].astype(np.float64), 0, None)  # nMgy per pixel
    sky_part = level**2 * background / epn**2  # nMgy^2
    correlated = sky_part + flux / deep_electrons * np.sum(kernel**2)
    survey_total = (flux * epn + background) / epn**2
    expected = np.maximum(correlated, survey_total)
    noise2 = (noisy[:, 0] - clean[:, 0]).astype(np.float64) ** 2
    centre = (slice(None), slice(27, 34), slice(27, 34))
    bright = np.broadcast_to(level > 1.0, flux.shape)[centre] & (flux[centre] > 0.05)
    assert bright.sum() > 1000
    assert noise2[centre][bright].mean() / expected[centre][bright].mean() == pytest.approx(
        1.0, rel=0.06)
    # There the objects' photons are most of it: without them it would be far lower.
    stationary = np.maximum(sky_part, survey_total)
    assert noise2[centre][bright].mean() > 1.5 * stationary[centre][bright].mean()
    corners = (slice(None), slice(0, 12), slice(0, 12))
    assert noise2[corners].mean() / expected[corners].mean() == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        base.replace(correlated_noise_electrons_per_nanomaggy=-1.0)
    with pytest.raises(ValueError, match="needs correlated_noise > 0"):
        base.replace(correlated_noise=0.0, correlated_noise_electrons_per_nanomaggy=1e4)


def test_correlated_noise_photons_per_band_use_each_bands_own_number():
    """One electrons-per-nanomaggy number per band (a deep image in one band degraded to
    several): each band's correlated variance near the lens grows by I_b / E_b through its
    kernel, closed form as above; a list, as JSON gives it, is the same config."""
    base = SimConfig(survey="hsc", bands=("g", "i"), stamp_size=41, lens_fraction=1.0,
                     field_density=0.0, correlated_noise=(1.0, 1.0), z_lens_range=(0.1, 0.2),
                     psf_model="gaussian", psf_fwhm_override=0.3)
    survey = get_survey("hsc").select(("g", "i"))
    # Small numbers, so that through the PSF the photons stand out in both bands; i's is a
    # fifth of g's, so a config that took one number for both would miss one band by 5x.
    per_band = (1.0e2, 2.0e1)
    config = base.replace(correlated_noise_electrons_per_nanomaggy=list(per_band))
    assert config.correlated_noise_electrons_per_nanomaggy == per_band
    assert SimConfig.from_dict(config.to_dict()) == config
    clean, _ = Simulator(base.replace(noise=False)).simulate(200, seed=6)
    noisy, truth = Simulator(config).simulate(200, seed=6)
    centre = (slice(None), slice(17, 24), slice(17, 24))
    for b, band in enumerate(survey.bands):
        epn = band.electrons_per_nanomaggy
        background = band.sky_counts + band.n_exposures * band.read_noise**2
        kernel = psf_kernel("gaussian", 0.3, band.pixel_scale, survey.moffat_beta)
        level = truth[f"correlated_noise_{band.name}"].astype(np.float64)[:, None, None]
        flux = np.clip(clean[:, b].astype(np.float64), 0, None)
        correlated = level**2 * background / epn**2 + flux / per_band[b] * np.sum(kernel**2)
        expected = np.maximum(correlated, (flux * epn + background) / epn**2)
        noise2 = (noisy[:, b] - clean[:, b]).astype(np.float64) ** 2
        bright = flux[centre] > np.quantile(flux[centre], 0.5)
        assert noise2[centre][bright].mean() / expected[centre][bright].mean() == pytest.approx(
            1.0, rel=0.08), band.name
        stationary = np.maximum(level**2 * background / epn**2, (flux * epn + background) / epn**2)
        assert noise2[centre][bright].mean() > 1.5 * stationary[centre][bright].mean(), band.name
    for bad, message in (((1e4, 1e4, 1e4), "one number per band"),
                         ((1e4, float("nan")), "finite number >= 0 or one per band")):
        with pytest.raises(ValueError, match=message):
            base.replace(correlated_noise_electrons_per_nanomaggy=bad)


def test_bad_correlated_noise_kernel_is_refused():
    with pytest.raises(ValueError, match="correlated_noise_kernel must be one of"):
        SimConfig(survey="euclid-vis", correlated_noise=1.0, correlated_noise_kernel="gauss")


def test_correlated_noise_per_band_draws_one_fraction_of_each_bands_maximum():
    """Levels per band: each cutout's level in a band is one fraction in [0, 1] of the band's
    maximum (the same in every band), recorded per band; each band's noise has the variance of
    its own level (closed form as above). A list, as JSON gives it, is the same config."""
    base = SimConfig(survey="hsc", bands=("g", "i"), stamp_size=48, lens_fraction=0.5,
                     field_density=0.0)
    config = base.replace(correlated_noise=[0.2, 1.8])
    assert config.correlated_noise == (0.2, 1.8)
    assert SimConfig.from_dict(config.to_dict()) == config
    clean, _ = Simulator(base.replace(noise=False)).simulate(160, seed=5)
    noisy, truth = Simulator(config).simulate(160, seed=5)
    assert "correlated_noise" not in truth
    level_g, level_i = truth["correlated_noise_g"], truth["correlated_noise_i"]
    np.testing.assert_allclose(level_g / 0.2, level_i / 1.8, rtol=1e-5)
    assert level_i.min() >= 0 and level_i.max() <= 1.8 and np.ptp(level_i) > 1.2
    high = level_i > 1.2
    for b, band in enumerate(get_survey("hsc").select(("g", "i")).bands):
        sky_sigma = (math.sqrt(band.sky_counts + band.n_exposures * band.read_noise**2)
                     / band.electrons_per_nanomaggy)
        noise = (noisy - clean)[:, b, :12, :12].astype(np.float64) / sky_sigma
        # g stays below one sky sigma: its variance is the sky's; i above: the level's.
        expected = 1.0 if b == 0 else np.mean(level_i[high] ** 2)
        assert np.mean(noise[high] ** 2) == pytest.approx(expected, rel=0.08), band.name


@pytest.mark.parametrize("levels, message", [
    ((0.2, 0.4, 0.1), "one level per band"),
    (-0.5, "must be a number >= 0"),
    ((0.2, float("nan")), "must be a number >= 0"),
])
def test_bad_correlated_noise_levels_are_refused(levels, message):
    with pytest.raises(ValueError, match=message):
        SimConfig(survey="hsc", bands=("g", "i"), correlated_noise=levels)


def test_isophote_structure_is_drawn_for_every_central_early_type_and_changes_only_its_light():
    """``lens_isophote_*``: each lens and each elliptical or group non-lens draws a twist,
    an axis-ratio change and an a4 in the configured ranges (recorded in the truth; NaN where the
    centre is another class); its own stream leaves every other draw as it was, and the images
    differ only by the central galaxy's light (a noise-free difference that the lens light's own
    footprint bounds)."""
    base = SimConfig(survey="euclid-vis", stamp_size=64, lens_fraction=0.5, noise=False,
                     negatives={"elliptical": 0.5, "spiral": 0.25, "group": 0.25})
    shaped = base.replace(lens_isophote_twist=20.0, lens_isophote_dq=0.15,
                          lens_isophote_a4_range=[-0.02, 0.03])
    assert shaped.lens_isophote_a4_range == (-0.02, 0.03) and shaped.lens_isophotes
    assert not base.lens_isophotes and "lens_isophote_twist" not in base.to_dict()
    assert SimConfig.from_dict(shaped.to_dict()) == shaped
    plain_images, plain = Simulator(base).simulate(200, seed=6)
    images, truth = Simulator(shaped).simulate(200, seed=6)
    assert not any(key.startswith(("lens_isophote", "lens_a4")) for key in plain)
    for key, values in plain.items():
        if not key.startswith("arc_snr"):
            np.testing.assert_array_equal(truth[key], values, err_msg=key)
    spiral = truth["negative_class"] == NEGATIVE_CLASSES.index("spiral")
    early = ~spiral
    assert spiral.any() and (truth["label"] == 1).any()
    twist, dq, a4 = (truth[key] for key in ("lens_isophote_twist", "lens_isophote_dq", "lens_a4"))
    assert np.all(np.isnan(twist[spiral]) & np.isnan(a4[spiral]))
    assert np.abs(np.degrees(twist[early])).max() <= 20.0 and np.ptp(twist[early]) > 0.5
    assert np.abs(dq[early]).max() <= 0.15 and a4[early].min() >= -0.02
    assert a4[early].max() <= 0.03
    np.testing.assert_array_equal(images[spiral], plain_images[spiral])
    changed = np.abs(images - plain_images).reshape(len(images), -1).max(axis=1)
    peak = plain_images.reshape(len(images), -1).max(axis=1)
    assert np.all(changed[early] > 1e-4 * peak[early]) and np.all(changed < 0.5 * peak)


def test_lens_companions_are_a_groups_members_added_to_the_lens_and_nothing_else():
    """``lens_companion_fraction``: that share of the lenses gets a group's members (2-4, each
    0.3-2 mag fainter than the lens, their count in the truth; the group non-lenses' count too)
    from a stream of its own: every other draw is as without it, the non-lenses' images are
    unchanged and a lens's noise-free image gains its companions' flux."""
    base = SimConfig(survey="euclid-vis", stamp_size=64, lens_fraction=0.5, noise=False,
                     negatives={"elliptical": 0.5, "spiral": 0.25, "group": 0.25})
    grouped = base.replace(lens_companion_fraction=0.5)
    assert "lens_companion_fraction" not in base.to_dict()
    assert SimConfig.from_dict(grouped.to_dict()) == grouped
    plain_images, plain = Simulator(base).simulate(300, seed=8)
    images, truth = Simulator(grouped).simulate(300, seed=8)
    assert "n_companions" not in plain
    for key, values in plain.items():
        if not key.startswith("arc_snr"):
            np.testing.assert_array_equal(truth[key], values, err_msg=key)
    lens = truth["label"] == 1
    count = truth["n_companions"]
    with_companions = lens & (count > 0)
    assert 0.35 < with_companions.sum() / lens.sum() < 0.65
    assert set(np.unique(count[with_companions])) <= {2, 3, 4}
    group = ~lens & (truth["negative_class"] == NEGATIVE_CLASSES.index("group"))
    assert group.any() and np.all(count[group] >= 2) and np.all(count[~lens & ~group] == 0)
    # equal to float32 rounding: one more component changes the order of the sums
    rounding = 1e-5 * np.abs(plain_images).max()
    alone = ~lens | (count == 0)
    np.testing.assert_allclose(images[alone], plain_images[alone], rtol=0, atol=rounding)
    gained = (images - plain_images)[with_companions, 0].sum(axis=(1, 2))
    lens_flux = 10 ** (-0.4 * (truth["lens_mag_VIS"][with_companions] - 22.5))
    # each companion 0.3-2 mag fainter than the lens, less what falls off the 6.4" stamp
    assert np.all(gained > 0.1 * lens_flux) and np.all(gained < 4 * 10 ** (-0.12) * lens_flux)


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_bad_lens_companion_fraction_is_refused(fraction):
    with pytest.raises(ValueError, match="lens_companion_fraction"):
        SimConfig(survey="hsc", lens_companion_fraction=fraction)


@pytest.mark.parametrize("field, value", [("lens_isophote_twist", -5.0),
                                          ("lens_isophote_dq", 0.8),
                                          ("lens_isophote_a4_range", (-0.3, 0.0))])
def test_bad_isophote_ranges_are_refused(field, value):
    with pytest.raises(ValueError, match="lens_isophote"):
        SimConfig(survey="hsc", **{field: value})
