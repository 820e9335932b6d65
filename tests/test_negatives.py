"""Hard negatives (spirals, rings, mergers, groups, edge-ons, COSMOS galaxies, artefacts) and
real COSMOS sources in the simulator."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from lensbench.datasets import negatives
from lensbench.datasets.config import (
    ADDED_FIELDS,
    ARTEFACT_KINDS,
    NEGATIVE_CLASSES,
    SimConfig,
)
from lensbench.datasets.cosmos import lensed_source_image
from lensbench.datasets.simulate import Simulator
from scipy import stats

TINY = dict(survey="hsc", stamp_size=16, bands=("g", "i"))
ALL_CLASSES = {name: 1 / len(NEGATIVE_CLASSES) for name in NEGATIVE_CLASSES}


# ----------------------------------------------------------------------------- default unchanged
# The default config's output is bit for bit that of the simulator before real sources and hard
# negatives (checked by hand against that commit; SIMULATOR_VERSION stays 1). What a test can
# check without recording old results: the default record and truth keep their old form, and
# the negatives code path renders the simulator's own ellipticals.
NEW_TRUTH = {"source_is_real", "cosmos_index", "negative_class", "artefact_kind", "feature_radius"}


def test_version_1_configuration_keeps_the_version_1_record_and_truth_columns():
    config = SimConfig(survey="hsc", stamp_size=16, bands=("g", "i"), lens_fraction=0.5,
                       core_refinement=0)
    record = config.to_dict()
    assert not set(ADDED_FIELDS) & set(record)
    assert SimConfig.from_dict(record) == config and hash(SimConfig.from_dict(record)) == hash(
        config)
    _, truth = Simulator(config).simulate(8, seed=1)
    assert not NEW_TRUTH & set(truth)
    assert negatives.class_names(truth).count("non-lens") == (truth["label"] == 0).sum()
    used = config.replace(negatives={"elliptical": 0.5, "ring": 0.5})
    assert used.to_dict()["negatives"] == {"elliptical": 0.5, "ring": 0.5}
    _, truth = Simulator(used).simulate(8, seed=1)
    assert NEW_TRUTH <= set(truth)


def test_negatives_code_path_renders_the_default_ellipticals():
    """Forced through ``negatives.sample_negatives`` (the path of every non-default mix) with
    only ellipticals, a split equals the default one: same parameters, same pixels up to the
    float rounding of the flux (magnitudes go through a sum of fluxes), same noise."""
    config = SimConfig(survey="hsc", stamp_size=24, bands=("g", "r", "i"), lens_fraction=0.3)
    default, truth = Simulator(config).simulate(24, seed=4)
    forced = Simulator(config)
    forced.population.hard_negatives = True
    forced.extended = forced.renderer.extended = True
    images, forced_truth = forced.simulate(24, seed=4)
    np.testing.assert_allclose(images, default, rtol=1e-5, atol=1e-6)
    for key, value in truth.items():
        np.testing.assert_allclose(forced_truth[key], value, rtol=1e-6, err_msg=key)
    lens = truth["label"] == 1
    assert (forced_truth["negative_class"][~lens] == 0).all()
    assert (forced_truth["negative_class"][lens] == -1).all()


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("negatives_config, message", [
    ({"elliptical": 0.5, "spiral": 0.3}, "must sum to 1.*valid classes are"),
    ({"elliptical": 0.5, "spirals": 0.5}, r"unknown class\(es\) \['spirals'\].*'edge-on'"),
    ({"elliptical": 1.5, "ring": -0.5}, "finite numbers >= 0"),
    ([("elliptical", 1.0)], "must be a dict"),
])
def test_invalid_negative_fractions_are_clear_errors(negatives_config, message):
    with pytest.raises(ValueError, match=message):
        SimConfig(survey="hsc", negatives=negatives_config)


@pytest.mark.parametrize("change, message", [
    (dict(source_model="real"), "source_model must be one of"),
    (dict(cosmos_fraction=1.5), "cosmos_fraction must lie in"),
    (dict(lens_artefact_fraction=-0.1), "lens_artefact_fraction must lie in"),
    (dict(saturation_level=0.0), "saturation_level must be > 0"),
])
def test_invalid_source_and_artefact_settings_are_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        SimConfig(survey="hsc", **change)


def test_configuration_round_trips_through_json():
    config = SimConfig(survey="hsc", source_model="mix", cosmos_fraction=0.3,
                       negatives={"ring": 0.5, "artefact": 0.5}, lens_artefact_fraction=0.1)
    assert SimConfig.from_dict(config.to_dict()) == config


def test_negative_fractions_are_honoured():
    shares = {"elliptical": 0.4, "spiral": 0.3, "ring": 0.2, "group": 0.1}
    config = SimConfig(survey="hsc", stamp_size=16, bands=("i",), lens_fraction=0.0,
                       noise=False, negatives=shares)
    _, truth = Simulator(config).simulate(240, seed=3)
    counts = np.bincount(truth["negative_class"], minlength=len(NEGATIVE_CLASSES))
    expected = 240 * np.array(config.negative_fractions)
    used = expected > 0
    assert counts[~used].sum() == 0
    assert stats.chisquare(counts[used], expected[used]).pvalue > 1e-3


# ----------------------------------------------------------------------------- every class
def test_every_class_renders_finite_images_with_positive_flux(real_data):
    """The gallery configuration of ``bench data show``: all classes at 1/8 each."""
    real_data("cosmos")
    simulator = Simulator(SimConfig(survey="hsc", lens_fraction=0.0, negatives=ALL_CLASSES))
    images, truth = simulator.simulate(16, seed=5)
    assert images.shape == (16, 5, 64, 64) and np.isfinite(images).all()
    noiseless = Simulator(SimConfig(survey="hsc", stamp_size=32, bands=("g", "i"),
                                    lens_fraction=0.0, negatives=ALL_CLASSES, noise=False))
    images, truth = noiseless.simulate(64, seed=6)
    assert set(truth["negative_class"]) == set(range(len(NEGATIVE_CLASSES)))
    assert np.isfinite(images).all()
    assert (images.sum(axis=(2, 3)) > 0).all()
    for key in ("lens_mag_g", "lens_mag_i", "lens_x"):
        assert np.isfinite(truth[key]).all(), key
    names = negatives.class_names(truth)
    for c, name in enumerate(NEGATIVE_CLASSES):
        rows = np.flatnonzero(truth["negative_class"] == c)
        assert all(names[r].split(" ")[0] == name for r in rows)
    cosmos = truth["negative_class"] == NEGATIVE_CLASSES.index("cosmos")
    assert (truth["cosmos_index"][cosmos] >= 0).all() and (truth["cosmos_index"][~cosmos] == -1
                                                           ).all()


def test_flux_totals_match_the_magnitude_drawn(real_data):
    """Single-galaxy classes keep the reference-band magnitude drawn for the elliptical (same
    seed, same stream up to the class draws); mergers and groups are brighter. A noiseless image
    holds the flux of its truth magnitudes, in every band, to the light beyond the stamp."""
    real_data("cosmos")
    base = SimConfig(survey="hsc", stamp_size=48, bands=("g", "i"), lens_fraction=0.0,
                     noise=False, psf_fwhm_override=0.5)
    _, drawn = Simulator(base).simulate(8, seed=21)
    for name in ("spiral", "ring", "edge-on", "cosmos", "merger", "group"):
        images, truth = Simulator(base.replace(negatives={name: 1.0})).simulate(8, seed=21)
        if name in ("merger", "group"):  # lens-light wings, offset: much flux off the stamp
            assert (truth["lens_mag_i"] < drawn["lens_mag_i"] - 0.05).all(), name
            continue
        np.testing.assert_allclose(truth["lens_mag_i"], drawn["lens_mag_i"], rtol=1e-6,
                                   err_msg=name)
        for b, band in enumerate(("g", "i")):
            expected = 10 ** (-0.4 * (truth[f"lens_mag_{band}"] - 22.5))
            ratio = images[:, b].sum(axis=(1, 2)) / expected
            # Large disks (semi-major r_eff up to 1.8") reach beyond the stamp.
            low = 0.9 if name in ("ring", "cosmos") else 0.8
            # Above 1 only by the point sampling of Sersic cores at subpixel centres (the
            # simulator's, for lens galaxies too): a few percent at r_eff = 0.3".
            assert (ratio < 1.03).all() and (ratio > low).all(), (name, band, ratio)
            assert np.median(ratio) > (0.95 if name in ("ring", "cosmos") else 0.9), (
                name, band, ratio)


def test_class_names_for_captions():
    truth = {"label": np.array([1, 0, 0, 1]), "negative_class": np.array([-1, 2, 7, -1]),
             "artefact_kind": np.array([-1, -1, 0, 3])}
    assert negatives.class_names(truth) == ["lens", "ring", "artefact (cosmic-ray)",
                                            "lens (mask)"]
    assert negatives.class_names({"label": np.array([1, 0])}) == ["lens", "non-lens"]


def _deprojected_radius(shape, scale, x0, y0, q, phi):
    size = shape[-1]
    axis = (np.arange(size) + 0.5 - size / 2) * scale
    y, x = np.meshgrid(axis, axis, indexing="ij")
    dx, dy = x - x0, y - y0
    u = (np.cos(phi) * dx + np.sin(phi) * dy) * np.sqrt(q)
    v = (-np.sin(phi) * dx + np.cos(phi) * dy) / np.sqrt(q)
    return np.hypot(u, v), np.arctan2(v, u)


def test_ring_galaxies_have_a_blue_ring():
    """g/i flux ratio (equal PSFs, no noise): in the annulus at the ring radius it exceeds the
    core's by far; an elliptical's is the same everywhere."""
    base = SimConfig(survey="hsc", stamp_size=48, bands=("g", "i"), lens_fraction=0.0,
                     noise=False, psf_fwhm_override=0.7, colour_scatter=0.0)
    excess = {}
    for name in ("ring", "elliptical"):
        simulator = Simulator(base.replace(negatives={name: 1.0}))
        images, truth = simulator.simulate(24, seed=8)
        ratios = []
        for k in range(len(images)):
            r, _ = _deprojected_radius(images.shape, simulator.pixel_scale, truth["lens_x"][k],
                                       truth["lens_y"][k], 1.0, 0.0)
            radius = truth["feature_radius"][k] if name == "ring" else 1.5
            ring = np.abs(r - radius) < 0.25
            core = r < 0.3
            g, i = images[k, 0], images[k, 1]
            ratios.append((g[ring].sum() / i[ring].sum()) / (g[core].sum() / i[core].sum()))
        excess[name] = np.array(ratios)
    assert np.median(excess["ring"]) > 1.8 and (excess["ring"] > 1.2).mean() > 0.9
    np.testing.assert_allclose(excess["elliptical"], 1.0, rtol=1e-3)


def _mirrored(image, scale, x0, y0, phi):
    """``image`` reflected about the line through (x0, y0) at angle ``phi`` (bilinear)."""
    from scipy.ndimage import map_coordinates

    size = image.shape[-1]
    axis = (np.arange(size) + 0.5 - size / 2) * scale
    y, x = np.meshgrid(axis, axis, indexing="ij")
    dx, dy = x - x0, y - y0
    cos, sin = np.cos(2 * phi), np.sin(2 * phi)
    mx, my = x0 + cos * dx + sin * dy, y0 + sin * dx - cos * dy
    return map_coordinates(image, [my / scale + size / 2 - 0.5, mx / scale + size / 2 - 0.5],
                           order=1, mode="constant")


def test_spirals_are_not_axisymmetric():
    """Spiral arms are chiral: a spiral differs from its mirror image about its major axis,
    where an elliptical (any axis ratio, after the circular PSF) equals its own. Measured in
    the g band within 2.5 disk r_eff, as |I - mirror(I)| / I summed there."""
    base = SimConfig(survey="hsc", stamp_size=64, bands=("g",), lens_fraction=0.0, noise=False,
                     psf_fwhm_override=0.5)
    asymmetry = {}
    for name in ("spiral", "elliptical"):
        simulator = Simulator(base.replace(negatives={name: 1.0}))
        images, truth = simulator.simulate(16, seed=9)
        values = []
        for k in range(len(images)):
            x0, y0, phi = (truth[key][k] for key in ("lens_x", "lens_y", "lens_phi_light"))
            r, _ = _deprojected_radius(images.shape, simulator.pixel_scale, x0, y0, 1.0, 0.0)
            region = r < 2.5 * truth["lens_r_eff"][k]
            mirror = _mirrored(images[k, 0], simulator.pixel_scale, x0, y0, phi)
            values.append(np.abs(images[k, 0] - mirror)[region].sum()
                          / images[k, 0][region].sum())
        asymmetry[name] = np.median(values)
    assert asymmetry["spiral"] > 0.06 and asymmetry["spiral"] > 5 * asymmetry["elliptical"]


def test_profiles_hold_their_total_flux():
    axis = torch.linspace(-12, 12, 961, dtype=torch.float64)  # 0.025" grid
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    area = float(axis[1] - axis[0]) ** 2

    def t(v):
        return torch.tensor(v, dtype=torch.float64).reshape(-1, 1, 1)

    arms = negatives.spiral_arm_profile(x, y, 2.0, t(1.2), t(0.6), t(0.3), t(2.0),
                                        t(math.radians(20)), t(0.4), t(4.0), t(0.2), t(-0.1))
    assert float(arms.sum()) * area == pytest.approx(2.0, rel=2e-3)
    ring = negatives.ring_profile(x, y, 3.0, t(1.5), t(0.15), t(0.7), t(1.0))
    assert float(ring.sum()) * area == pytest.approx(3.0, rel=1e-3)
    # Face-on arms: the surface brightness on a circle swings by far more than 50%.
    on_circle = negatives.spiral_arm_profile(
        t(1.5) * torch.cos(axis), t(1.5) * torch.sin(axis), 1.0, t(1.2), t(1.0), t(0.0),
        t(2.0), t(math.radians(20)), t(0.0), t(4.0))
    assert float(on_circle.std() / on_circle.mean()) > 0.5


# ----------------------------------------------------------------------------- artefacts
def test_cosmic_rays_are_sharper_than_the_psf_and_masks_are_100():
    """Equal PSFs in g and i and no noise: subtracting the other band, scaled by the galaxy's
    colour, leaves the cosmic ray alone. Its peak falls off to its neighbours much faster than
    any PSF-convolved light does."""
    config = SimConfig(survey="hsc", stamp_size=32, bands=("g", "i"), lens_fraction=0.0,
                       noise=False, psf_fwhm_override=1.2, negatives={"artefact": 1.0})
    simulator = Simulator(config)
    images, truth = simulator.simulate(60, seed=10)
    kind = truth["artefact_kind"]
    assert set(kind) == set(range(len(ARTEFACT_KINDS)))

    def falloff(image):
        r, c = np.unravel_index(np.argmax(image), image.shape)
        r, c = min(max(r, 1), image.shape[0] - 2), min(max(c, 1), image.shape[1] - 2)
        neighbours = [image[r - 1, c], image[r + 1, c], image[r, c - 1], image[r, c + 1]]
        return min(neighbours) / image[r, c]

    ray = np.flatnonzero(kind == negatives.COSMIC_RAY)
    assert len(ray) >= 5
    for k in ray:
        ratio = 10 ** (-0.4 * (truth["lens_mag_g"][k] - truth["lens_mag_i"][k]))
        residuals = [images[k, 0] - ratio * images[k, 1], images[k, 1] - images[k, 0] / ratio]
        ray_band = int(np.argmax([res.max() for res in residuals]))
        assert falloff(residuals[ray_band]) < 0.8
        assert falloff(images[k, 1 - ray_band]) > 0.9  # the galaxy alone: PSF-smooth
    masked = images == negatives.MASK_VALUE
    has_mask = masked.any(axis=(1, 2, 3))
    assert has_mask[kind == negatives.MASK].all() and not has_mask[kind != negatives.MASK].any()


def test_saturated_stars_are_clipped_at_the_full_well():
    config = SimConfig(**TINY, lens_fraction=0.0, negatives={"artefact": 1.0},
                       saturation_level=5.0e4)
    simulator = Simulator(config)
    images, truth = simulator.simulate(40, seed=12)
    stars = np.flatnonzero(truth["artefact_kind"] == negatives.SATURATED_STAR)
    assert len(stars) >= 3
    levels = simulator.renderer.saturation_levels()
    for b, band in enumerate(simulator.bands):
        # Full well x exposures less the sky electrons (the images are sky subtracted).
        level = (5.0e4 * band.n_exposures - band.sky_counts) / band.electrons_per_nanomaggy
        assert levels[b] == pytest.approx(level) and 0 < level < 5.0e4 * band.n_exposures / (
            band.electrons_per_nanomaggy)
        assert images[stars, b].max() <= level * (1 + 1e-6)
        assert (images[stars, b].max(axis=(1, 2)) >= level * (1 - 1e-6)).mean() > 0.5
    with pytest.raises(ValueError, match="saturation_level=1000 electrons is below the sky"):
        Simulator(config.replace(saturation_level=1.0e3))


def test_artefacts_on_lenses():
    config = SimConfig(**TINY, lens_fraction=1.0, lens_artefact_fraction=1.0)
    images, truth = Simulator(config).simulate(24, seed=13)
    assert np.isfinite(images).all() and (truth["artefact_kind"] >= 0).all()
    assert (truth["negative_class"] == -1).all() and np.isfinite(truth["magnification"]).all()
    names = negatives.class_names(truth)
    assert all(name.startswith("lens (") for name in names)


# ----------------------------------------------------------------------------- COSMOS sources
def test_cosmos_stamps_are_rotated_and_flipped(real_data):
    """Each drawn stamp is one of the 8 orientations (k x 90 deg, mirrored or not) of its
    galaxy's cleaned stamp, and the draws use all of them."""
    real_data("cosmos")
    simulator = Simulator(SimConfig(**TINY, source_model="cosmos"))
    index, stamps, scales, colours = simulator.population.draw_cosmos(np.random.default_rng(2), 64)
    seen = set()
    for i, stamp in zip(index, stamps, strict=True):
        clean = simulator.population._clean_stamps[int(i)]
        matches = [(k, flip) for k in range(4) for flip in (False, True)
                   if stamp.shape == np.rot90(clean, k).shape and np.array_equal(
                       stamp, np.rot90(clean, k)[:, ::-1] if flip else np.rot90(clean, k))]
        assert matches
        seen.add(matches[0])
    assert len(seen) == 8
    galaxies = simulator.population._cosmos.galaxies
    assert (scales == [galaxies[i].pixel_scale for i in index]).all()
    np.testing.assert_allclose(colours[:, 0], [galaxies[i].mags["g"] - galaxies[i].mags["i"]
                                               for i in index])


def test_cosmos_source_lenses_are_deterministic(real_data):
    real_data("cosmos")
    config = SimConfig(**TINY, lens_fraction=1.0, source_model="cosmos")
    a, truth_a = Simulator(config).simulate(10, seed=14)
    b, truth_b = Simulator(config).simulate(10, seed=14)
    np.testing.assert_array_equal(a, b)
    for key in truth_a:
        np.testing.assert_array_equal(truth_a[key], truth_b[key])
    assert (truth_a["source_is_real"] == 1).all() and (truth_a["cosmos_index"] >= 0).all()
    assert (truth_a["n_clumps"] == 0).all() and np.isnan(truth_a["source_r_eff"]).all()


def test_cosmos_sources_are_magnified_and_keep_the_catalogue_colours(real_data):
    real_data("cosmos")
    config = SimConfig(survey="hsc", stamp_size=48, bands=("g", "i"), lens_fraction=1.0,
                       source_model="cosmos", noise=False, theta_e_distribution="flat",
                       theta_e_range=(1.0, 1.5), source_radius=0.5)
    simulator = Simulator(config)
    _, truth = simulator.simulate(16, seed=15)
    assert (truth["magnification"] > 1.0).all()
    low, high = config.source_mag_range
    assert ((truth["source_mag_i"] >= low) & (truth["source_mag_i"] <= high)).all()
    galaxies = simulator.population._cosmos.galaxies
    catalogue = np.array([galaxies[i].mags["g"] - galaxies[i].mags["i"]
                          for i in truth["cosmos_index"]])
    np.testing.assert_allclose(truth["source_mag_g"] - truth["source_mag_i"], catalogue,
                               atol=1e-4)
    # Through the identity mapping (beta = theta) a stamp keeps its unit flux, to the point
    # sampling of grid_sample (bilinear at the 0.084" subpixels of a stamp box-filtered to that
    # width: ~1% per galaxy, unbiased).
    _, stamps, scales, _ = simulator.population.draw_cosmos(np.random.default_rng(0), 6)
    x = simulator.renderer.grid.x_fine.expand(6, -1, -1)
    y = simulator.renderer.grid.y_fine.expand(6, -1, -1)
    unlensed = lensed_source_image(stamps, scales, x, y, 0.0, 0.0,
                                   subpixel_area=simulator.renderer.grid.subpixel_area,
                                   smooth_to=simulator.renderer.grid.subpixel_side)
    totals = unlensed.sum(dim=(1, 2)).numpy()
    np.testing.assert_allclose(totals, 1.0, rtol=0.03)
    assert abs(totals.mean() - 1.0) < 0.01


def test_mix_fraction_is_honoured(real_data):
    real_data("cosmos")
    config = SimConfig(**TINY, lens_fraction=1.0, source_model="mix", cosmos_fraction=0.3,
                       noise=False)
    _, truth = Simulator(config).simulate(120, seed=16)
    real = truth["source_is_real"] == 1
    assert stats.binomtest(int(real.sum()), 120, 0.3).pvalue > 1e-3
    assert (truth["cosmos_index"][real] >= 0).all() and (truth["cosmos_index"][~real] == -1).all()
    assert np.isfinite(truth["source_r_eff"][~real]).all()


# ----------------------------------------------------------------------------- command line
def test_cli_makes_and_draws_a_split_with_hard_negatives(tmp_path):
    from lensbench.bench import cli
    from lensbench.datasets.storage import load_split

    config_file = tmp_path / "config.json"
    config_file.write_text('{"stamp_size": 24, "bands": ["g", "r", "i"], "lens_fraction": 0.2}')
    out = tmp_path / "split"
    shares = "elliptical=0.1,spiral=0.2,ring=0.2,merger=0.1,group=0.1,edge-on=0.1,artefact=0.2"
    assert cli.main(["data", "make", "--preset", "hsc", "--n", "40", "--seed", "2", "--out",
                     str(out), "--config", str(config_file), "--negatives", shares,
                     "--set", "shard_size=20"]) == 0
    split = load_split(out)
    assert split.manifest["config"]["negatives"]["ring"] == 0.2
    assert split.manifest["config"]["stamp_size"] == 24
    groups = negatives.class_groups(split.truth, per_class=3)
    names = [name for name, _ in groups]
    assert names[0].startswith("lens") and "ring" in names and "spiral" in names
    assert any(name.startswith("artefact (") for name in names)
    assert all(1 <= len(rows) <= 3 for _, rows in groups)
    png = tmp_path / "classes.png"
    assert cli.main(["data", "show", str(out), "--out", str(png), "--per-class", "3"]) == 0
    assert png.stat().st_size > 5000
    # A bad fraction is a clear error that names the field.
    assert cli.main(["data", "make", "--preset", "hsc", "--n", "4", "--seed", "1", "--out",
                     str(tmp_path / "bad"), "--negatives", "elliptical=0.5,spirals=0.5"]) == 2
    assert cli.main(["data", "make", "--preset", "hsc", "--n", "4", "--seed", "1", "--out",
                     str(tmp_path / "bad"), "--negatives", "elliptical"]) == 2


# ----------------------------------------------------------------------------- Sersic cores
def _sersic_pixel_flux(x0, x1, y0, y1, r_eff, n, q, phi, cx, cy):
    """The unit-flux elliptical Sersic's flux over one rectangle by scipy's adaptive quadrature,
    split at the centre so that the cusp sits at the corners of the parts: independent of the
    simulator's kernels (b_n from scipy's inverse incomplete gamma)."""
    from scipy import integrate, special

    b_n = special.gammaincinv(2 * n, 0.5)
    norm = r_eff**2 * 2 * math.pi * n * math.exp(b_n) * b_n ** (-2 * n) * special.gamma(2 * n)

    def profile(y, x):
        dx, dy = x - cx, y - cy
        xr = math.cos(phi) * dx + math.sin(phi) * dy
        yr = -math.sin(phi) * dx + math.cos(phi) * dy
        radius = math.sqrt(q * xr * xr + yr * yr / q)
        return math.exp(-b_n * ((radius / r_eff) ** (1 / n) - 1)) / norm

    xs = sorted({x0, x1, min(max(cx, x0), x1)})
    ys = sorted({y0, y1, min(max(cy, y0), y1)})
    return sum(integrate.dblquad(profile, a, b, c, d, epsabs=1e-10, epsrel=1e-7)[0]
               for a, b in itertools.pairwise(xs) for c, d in itertools.pairwise(ys)
               if b > a and d > c)


@pytest.mark.parametrize("n, offset", [(4.0, 0.25), (5.5, 0.25), (5.5, 0.0), (3.0, 0.13)])
def test_sersic_core_pixels_hold_the_integrated_flux(n, offset):
    """An early type's core is far narrower than a subpixel. Sampled at subpixel centres, a
    centre on one (offset 0.25 of a pixel at supersample 2) made a 24-pixel stamp's flux 1.9x
    (n = 4) to 18x (n = 5.5) what it is, the excess all in its pixel; integrated
    (core_refinement 3) the central pixels hold the quadrature's flux to 0.2% (measured: 0.15% at
    most, float32 maps)."""
    from lensbench.datasets.render import Grid, _bin

    pixel, size, r_eff, q, phi = 0.168, 16, 0.97, 0.8, 0.3
    cx = cy = offset * pixel

    def pixels(levels):
        grid = Grid.build(size, pixel, 2, torch.float32, torch.device("cpu"), levels)
        values = negatives.sersic_map(grid, *(np.array([v]) for v in (r_eff, n, q, phi, cx, cy)))
        return _bin(values, 2)[0].double().numpy()

    centre = size // 2
    expected = np.array([[_sersic_pixel_flux((col - centre) * pixel, (col - centre + 1) * pixel,
                                             (row - centre) * pixel, (row - centre + 1) * pixel,
                                             r_eff, n, q, phi, cx, cy)
                          for col in (centre - 1, centre)] for row in (centre - 1, centre)])
    integrated = pixels(3)[centre - 1:centre + 1, centre - 1:centre + 1]
    np.testing.assert_allclose(integrated, expected, rtol=2e-3)
    if offset == 0.25:  # sampled, the pixel holding the centre is far off
        sampled = pixels(0)[centre - 1:centre + 1, centre - 1:centre + 1]
        assert sampled.max() > 1.4 * expected.max()


def test_core_refinement_is_recorded_only_when_it_differs_from_version_1():
    assert "core_refinement" in SimConfig().to_dict()  # integrated cores: new splits
    assert "core_refinement" not in SimConfig(core_refinement=0).to_dict()
    # a record written before the field existed describes version-1 sampling
    record = SimConfig(core_refinement=0).to_dict()
    assert SimConfig.from_dict(record).core_refinement == 0
    for bad in (-1, 7, 2.5, "3"):
        with pytest.raises(ValueError, match="core_refinement"):
            SimConfig(core_refinement=bad)


@pytest.mark.parametrize("isophotes", [False, True])
def test_lens_light_cores_are_integrated_like_other_sersic_parts(isophotes):
    """The lens light (early_type_map, with or without isophote structure at its neutral
    values) integrates its core as sersic_map does."""
    from lensbench.datasets.render import Grid

    grid = Grid.build(16, 0.168, 2, torch.float64, torch.device("cpu"), 3)
    p = {"lens_r_eff": np.array([0.97]), "lens_sersic_n": np.array([5.5]),
         "lens_q_light": np.array([0.8]), "lens_phi_light": np.array([0.3]),
         "lens_x": np.array([0.042]), "lens_y": np.array([0.042])}
    if isophotes:
        p.update(lens_a4=np.zeros(1), lens_isophote_dq=np.zeros(1),
                 lens_isophote_twist=np.zeros(1))
    lens = negatives.early_type_map(grid, p, np.arange(1))
    other = negatives.sersic_map(grid, *(p[key] for key in (
        "lens_r_eff", "lens_sersic_n", "lens_q_light", "lens_phi_light", "lens_x", "lens_y")))
    np.testing.assert_allclose(lens.numpy(), other.numpy(), rtol=1e-9, atol=1e-15)
    sampled = Grid.build(16, 0.168, 2, torch.float64, torch.device("cpu"), 0)
    assert negatives.early_type_map(sampled, p, np.arange(1)).max() > 5 * lens.max()
