"""Issue 22: real non-lenses as bright as the lenses, the Euclid VIS real task, and the
real-lens diagnosis of the lens-finding report (probe, training-set distributions, nearest
simulated lenses)."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
from lensbench.baselines.contract import Method
from lensbench.bench import tasks
from lensbench.bench.report import write_report
from lensbench.bench.suites import lens_finding, real_diagnosis
from lensbench.datasets import cosmos, known_lenses
from lensbench.datasets.config import NEGATIVE_CLASSES
from lensbench.datasets.storage import load_split


@pytest.fixture(scope="module")
def sources(real_data):
    real_data("cosmos")
    return cosmos.CosmosSources()


def test_a_galaxy_rendered_at_its_own_redshift_is_unchanged_and_nearer_is_brighter(sources):
    index = next(k for k, g in enumerate(sources.galaxies) if 0.5 < g.z_phot < 1.5)
    galaxy = sources.galaxies[index]
    same = cosmos.nearer_analogue(sources, index, z=galaxy.z_phot)
    assert same.size_factor == pytest.approx(1.0)
    assert same.mag_i == pytest.approx(galaxy.f814w)
    assert same.pixel_scale == pytest.approx(galaxy.pixel_scale)
    near = cosmos.nearer_analogue(sources, index, z=0.2)
    assert near.size_factor > 1.5 and near.pixel_scale > galaxy.pixel_scale
    # f_nu of a flat spectrum: (D_L ratio)^2 (1 + z0) / (1 + z): ~4 mag from z ~ 1 to 0.2.
    assert galaxy.f814w - near.mag_i > 2.5
    # The image carries that flux: its total (sky zeroed) scales by the same factor.
    assert near.image.sum() / same.image.sum() == pytest.approx(
        10 ** (-0.4 * (near.mag_i - same.mag_i)), rel=1e-9)
    assert np.all(near.variance[near.image == 0] == 0)


def test_bright_early_types_are_red_placed_and_ranked_by_luminosity(sources):
    chosen = cosmos.bright_early_types(sources, 50)
    assert 0 < len(chosen) < len(sources)
    for analogue in chosen:
        galaxy = sources.galaxies[analogue.galaxy_index]
        assert galaxy.mags["g"] - galaxy.mags["i"] >= cosmos.MIN_EARLY_TYPE_G_MINUS_I
        assert 0 < galaxy.z_phot <= cosmos.MAX_EARLY_TYPE_Z
    mags = [a.mag_i for a in chosen]
    assert mags == sorted(mags)
    # Every qualifying galaxy and no other: the red, placed galaxies left out are fainter.
    assert len({a.galaxy_index for a in chosen}) == len(chosen)
    assert [a.galaxy_index for a in cosmos.bright_early_types(sources, 3)] == \
        [a.galaxy_index for a in chosen[:3]]


def test_real_split_gains_bright_early_types_and_vis_takes_the_f814w_flux(tmp_path,
                                                                          real_data):
    real_data("cosmos", "slacs")
    out = known_lenses.make_real_lens_split("euclid-vis", ["VIS"], 64, tmp_path / "vis",
                                            seed=3, n_nonlenses=4, n_bright_early_types=3,
                                            colours_from_f814w=True)
    split = load_split(out)
    kinds = split.truth["kind"]
    assert [(kinds == k).sum() for k in (1, 2, 3)] == [5, 4, 3]
    assert np.all(split.truth["label"][kinds == 3] == 0)
    assert split.manifest["config"]["n_bright_early_types"] == 3
    # No invented colour: a lens's VIS magnitude is its F814W magnitude.
    lenses = known_lenses.load_slacs()
    for row in np.flatnonzero(kinds == 1):
        lens = lenses[split.truth["object_index"][row]]
        assert split.truth["mag_VIS"][row] == pytest.approx(lens.mag_f814w, abs=1e-6)
    # The bright early types are the brightest non-lenses of the split.
    mags = split.truth["mag_VIS"]
    assert mags[kinds == 3].min() < mags[kinds == 2].min()
    # With colours (HSC), the early types get the lens light's: g - i as the SLACS lenses'.
    hsc = load_split(known_lenses.make_real_lens_split(
        "hsc", ["g", "i"], 48, tmp_path / "hsc", seed=3, n_nonlenses=2, n_bright_early_types=2))
    colour = hsc.truth["mag_g"] - hsc.truth["mag_i"]
    expected = known_lenses.LENS_COLOURS["g"] - known_lenses.LENS_COLOURS["i"]
    assert np.allclose(colour[hsc.truth["kind"] == 3], expected, atol=1e-5)


class CentralFlux(Method):
    """Scores by the flux in the central 9x9 pixels of all bands."""

    def fit(self, X, y, info=None):
        self.fitted_ = True
        return self

    def predict_score(self, X):
        X = np.asarray(X)
        h, w = X.shape[-2:]
        return X[..., h // 2 - 4:h // 2 + 5, w // 2 - 4:w // 2 + 5].sum(axis=(1, 2, 3))


def test_probe_edits_change_the_cutouts_as_named(tmp_path, real_data):
    real_data("cosmos", "slacs")
    spec = {"survey": "hsc", "bands": ("g", "r", "i"), "stamp_size": 48}
    real = load_split(known_lenses.make_real_lens_split(
        "hsc", ["g", "r", "i"], 48, tmp_path / "real", seed=3, n_nonlenses=2))
    parts = real_diagnosis.real_lens_parts(spec, real)
    observed = real.images(parts.rows)
    # The noise-free parts are what the observed cutouts hold, up to the noise.
    residual = (observed - parts.lens_light - parts.arcs) / parts.sigma
    assert abs(residual.mean()) < 0.1 and 0.5 < residual.std() < 1.5
    assert np.all(parts.arcs.sum(axis=(1, 2, 3)) > 0)
    scores = real_diagnosis.probe_edits(CentralFlux().fit(None, None), spec, real)
    assert list(scores) == list(real_diagnosis.EDITS)
    assert np.allclose(scores["cutout x2"], 2 * scores["as observed"], rtol=1e-5)
    assert np.all(scores["lens removed"] < scores["lens x0.25"])
    assert np.all(scores["lens x0.25"] < scores["lens x0.5"])
    assert np.all(scores["lens x0.5"] < scores["as observed"])
    assert np.all(scores["arcs x2"] >= scores["as observed"])
    assert np.all(scores["shift 4 px"] < scores["as observed"])  # the lens leaves the centre
    edited = real_diagnosis.edited_cutouts(observed, parts)
    assert np.array_equal(edited["no cosmic rays"],
                          (observed - parts.cosmic_rays).astype(np.float32))
    assert np.all(parts.cosmic_rays.sum(axis=(1, 2, 3)) >= 0)
    extra = (edited["noise x2"] - observed) / parts.sigma
    assert extra.std() == pytest.approx(math.sqrt(3), rel=0.05)


def test_cosmic_rays_are_found_and_the_lens_is_not(real_data):
    real_data("slacs")
    lens = next(lens for lens in known_lenses.load_slacs() if lens.name == "SDSSJ0029-0055")
    assert np.all(real_diagnosis.cosmic_ray_image(lens) == 0)  # 4 exposures, rays rejected
    sigma = math.sqrt(lens.noise_variance)
    hit = dataclasses.replace(lens, image=lens.image.copy())
    hit.image[30, 40:46] += 40 * sigma  # a one-pixel-wide streak, as a ray leaves
    rays = real_diagnosis.cosmic_ray_image(hit)
    assert np.all(rays[30, 40:46] > 20 * sigma)
    assert rays.sum() == pytest.approx(6 * 40 * sigma, rel=0.2)
    h, w = rays.shape
    assert np.all(rays[h // 2 - 10:h // 2 + 10, w // 2 - 10:w // 2 + 10] == 0)


def test_cosmic_rays_are_judged_against_the_images_own_exposure(real_data):
    """SDSSJ0029-0055 combines 4 snapshots: beside its lens, a ray 10 sigma above that image's
    own noise (sky and photons in 1680 s) is found whole, while one snapshot's photon noise,
    twice as large there, would hide it."""
    real_data("slacs")
    lens = next(lens for lens in known_lenses.load_slacs() if lens.name == "SDSSJ0029-0055")
    assert lens.exposure_s == 4 * known_lenses.SNAPSHOT_EXPOSURE_S
    h, w = lens.image.shape
    row, cols = h // 2 + 12, slice(w // 2, w // 2 + 6)  # 0.6" from the centre
    hit = dataclasses.replace(lens, image=lens.image.copy())
    hit.image[row, cols] += 10 * np.sqrt(lens.variance_with_photons()[row, cols])
    assert np.all(real_diagnosis.cosmic_ray_image(hit)[row, cols] > 0)
    one_snapshot = known_lenses.cosmic_rays(hit.image, lens.zeropoint_ab, lens.noise_variance,
                                            known_lenses.SNAPSHOT_EXPOSURE_S)
    assert np.all(one_snapshot[row, cols] == 0)


def test_cleaned_slacs_images_lose_their_cosmic_rays_before_the_arc_split(real_data):
    real_data("slacs")
    raw = {lens.name: lens for lens in known_lenses.load_slacs()}
    cleaned = {lens.name: lens for lens in known_lenses.load_slacs(clean_cosmic_rays=True)}
    assert raw.keys() == cleaned.keys()
    for name, lens in raw.items():
        rays = real_diagnosis.cosmic_ray_image(lens)
        assert np.allclose(cleaned[name].image, lens.image - rays)
        # The arc split sees the cleaned image: what it took for arcs no longer holds the rays.
        assert cleaned[name].arcs.sum() <= lens.arcs.sum() + 1e-9
    # SDSSJ1430+6104 is a single exposure: rays were part of its "arcs" before cleaning.
    hit = "SDSSJ1430+6104"
    assert cleaned[hit].arcs.sum() < 0.8 * raw[hit].arcs.sum()


def test_real_suite_report_names_every_real_object_and_diagnoses_the_lenses(tmp_path,
                                                                            real_suite_smoke):
    # The run is shared with test_harness (conftest.py); the report is written here.
    (workdir, results), out = real_suite_smoke, tmp_path / "reports"
    assert {r.task for r in results} == {"real-hsc", "real-vis"}
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    for r in results:
        assert r.metrics["real/bright_early_types"] == 20
        assert 0 <= r.metrics["real/bright_early_types_above_fpr1e-3"] <= 20
    paths = write_report("real", workdir=workdir, out_dir=out, profile="smoke")
    text = next(p for p in paths if p.suffix == ".md").read_text()
    for task in ("real-hsc", "real-vis"):
        section = text.split(f"## {task} ")[1].split("\n## ")[0]
        real = next(load_split(p) for p in (workdir / "splits").glob(f"{task}-v*-real-*"))
        names = real_diagnosis.object_names(real)
        assert len(names) == 125
        # Every real object named with its score, the counts beside the figures.
        for name in names:
            assert f"| {name} |" in section
        assert "5 real lenses; real non-lenses: 20 bright COSMOS early types" in section
        spec = tasks.all_tasks()[task].real_lenses
        assert known_lenses.preparation_sentence(spec) in section
        assert "SLACS lenses" in section and "/ 5;" in section and "/ 20;" in section
        lens_names = [n for n, k in zip(names, real.truth["kind"], strict=True) if k == 1]
        probe_rows = [line for line in section.splitlines()
                      if line.startswith("| `pixel-logreg` | SDSSJ")]
        assert sorted(line.split(" | ")[1] for line in probe_rows) == sorted(lens_names)
        assert all(len(line.split(" | ")) == 2 + len(real_diagnosis.EDITS) for line in
                   probe_rows)
        assert "| theta_E (arcsec) |" in section and "| arc S/N |" in section
        # The simulated test lenses by their brightest field galaxy: the bins' shares and lens
        # counts, which add up to the test split's lenses.
        test = next(load_split(p) for p in (workdir / "splits").glob(f"{task}-v*-test-*"))
        row = next(line for line in section.split("by the brightest field galaxy")[1]
                   .splitlines() if line.startswith("| `pixel-logreg` |"))
        counts = [int(count) for count in re.findall(r"\((\d+)\)", row)]
        assert sum(counts) == int((test.truth["label"] == 1).sum())
        assert 0 < counts[0] < sum(counts)  # some lenses alone, some with neighbours
        # Which non-lenses pass for lenses: each class's count and AUROC, recomputed from the
        # run's stored scores and the test split's classes.
        table = section.split("Which non-lenses pass for lenses")[1].split("\n\n")[1]
        header, _, row = table.splitlines()[:3]
        classes = re.findall(r"\| ([\w-]+) \((\d+)\)", header)
        negative_class = test.truth["negative_class"][test.truth["label"] == 0]
        assert [(name, int(n)) for name, n in classes] == [
            (name, int((negative_class == k).sum())) for k, name in enumerate(NEGATIVE_CLASSES)
            if (negative_class == k).any()]
        labels, scores, _ = real_diagnosis.stored_test_scores(
            next(r for r in results if r.task == task), workdir)
        expected = lens_finding.auroc_by_negative_class(labels, scores,
                                                        test.truth["negative_class"])
        assert row == "| `pixel-logreg` | " + " | ".join(
            f"{value:.3f}" for value, _ in expected.values()) + " |"
        # ... and by group companions: the two add up to the lenses again, some in each.
        row = next(line for line in section.split("with a group's companions")[1]
                   .splitlines() if line.startswith("| `pixel-logreg` |"))
        counts = [int(count) for count in re.findall(r"\((\d+)\)", row)]
        assert len(counts) == 2 and sum(counts) == int((test.truth["label"] == 1).sum())
        assert min(counts) > 0
        assert all(f"{name} " in section.split("Cosmic rays found")[1].split("\n")[0]
                   for name in lens_names)
        # The HST noise line: every lens, one positive ratio per band.
        noise_line = section.split("The HST images' own noise")[1].split("\n")[0]
        assert "the simulated cutouts carry a noise field" in noise_line  # then the list
        ratios = [float(v) for v in re.findall(r" (\d+\.\d+)", noise_line.rsplit(": ", 1)[1])]
        assert all(f"{name} " in noise_line for name in lens_names)
        assert len(ratios) == 5 * len(real.bands) and all(0 < r < 10 for r in ratios)
        # Look-alikes: one share per real lens, and "found" is the count of the real lenses
        # above the threshold that the object table gives.
        row = next(line for line in section.split("Look-alikes (5 real lenses)")[1]
                   .splitlines() if line.startswith("| `pixel-logreg` |")).split(" | ")
        shares = [float(cell) for cell in row[1:6]]
        assert all(0 <= share <= 1 for share in shares)
        assert float(row[7]) == pytest.approx(sum(shares), abs=0.051)
        row_expected = row[7]
        above = re.search(r"`pixel-logreg`: SLACS lenses (\d+) / 5", section).group(1)
        assert row[9] == above
        # The simulated test lenses by source offset: the bins, open-ended at the top, add up to
        # the lenses.
        row = next(line for line in section.split("offset from the lens centre")[1]
                   .splitlines() if line.startswith("| `pixel-logreg` |"))
        counts = [int(count) for count in re.findall(r"\((\d+)\)", row)]
        assert len(counts) == len(real_diagnosis.OFFSET_BINS)
        assert sum(counts) == int((test.truth["label"] == 1).sum())
        # Weighted look-alikes: mu^0 is the unweighted table's expected count, and the
        # magnification bias moves the look-alikes towards the lens centre.
        weighted = next(line for line in section.split("flux-limited spectroscopic")[1]
                        .splitlines() if line.startswith("| `pixel-logreg` |")).split(" | ")
        assert weighted[1] == above
        cells = [[float(v) for v in cell.strip(" |").split("; ")] for cell in weighted[2:]]
        assert len(cells) == len(real_diagnosis.SELECTION_SLOPES)
        assert f"{cells[0][1]:.1f}" == row_expected
        assert cells[2][0] < cells[0][0]
        for figure in (f"real-smoke-{task}-real-dist.png", f"real-smoke-{task}-real-neighbours"
                       ".png"):
            assert f"({figure})" in section and (out / figure).stat().st_size > 1000


def test_lookalike_shares_count_the_found_among_the_nearest_by_hand():
    # Axis 0 has MAD 10 (abs. deviations 20 10 0 10 20 0 0), axis 1 MAD 1 (1 1 0 2 2 1 1).
    simulated = np.array([[-20.0, 1.0], [-10.0, -1.0], [0.0, 0.0], [10.0, 2.0], [20.0, -2.0],
                          [0.0, 1.0], [0.0, -1.0]])
    found = np.array([False, False, False, True, False, True, False])
    real = np.array([[6.0, 0.2], [0.0, 0.6]])
    # (6, 0.2) in MAD units (x 1/1.4826): (0, 0) at sqrt(0.6^2 + 0.2^2) is nearest, not found;
    # unscaled, (10, 2) at 4.4 would beat (0, 0) at 6.0. (0, 0.6): (0, 1) at 0.4, found.
    def shares(k):
        return real_diagnosis.lookalike_mean(
            found, real_diagnosis.nearest_lookalikes(simulated, real, k))

    np.testing.assert_allclose(shares(1), [0.0, 1.0])
    np.testing.assert_allclose(shares(7), [2 / 7, 2 / 7])


def test_weighted_lookalike_shares_and_source_offsets_by_hand():
    # One axis; the real lens at 0 has the four look-alikes 0, +-1 and 2 (k = 4; 3 is farthest).
    simulated = np.array([[0.0], [1.0], [-1.0], [2.0], [3.0]])
    found = np.array([True, False, True, False, True])
    real = np.array([[0.0]])
    weights = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    nearest = real_diagnosis.nearest_lookalikes(simulated, real, k=4)
    # Found: weights 1 and 3 of 1 + 2 + 3 + 4; unweighted 2 of 4. The far row's weight is unused.
    np.testing.assert_allclose(real_diagnosis.lookalike_mean(found, nearest, weights), [0.4])
    np.testing.assert_allclose(real_diagnosis.lookalike_mean(found, nearest), [0.5])
    # Numbers give their weighted mean: (1*10 + 2*20 + 3*30 + 4*40) / 10 = 30.
    values = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    np.testing.assert_allclose(real_diagnosis.lookalike_mean(values, nearest, weights), [30.0])
    # Source offsets: (0.3, 0.4) from a lens at the origin with theta_E 1 is 0.5; from a lens at
    # (0.1, 0.1) with theta_E 0.5, (0.4, 0.5) is 0.5 / 0.5 = 1; a non-lens has NaN.
    truth = {"source_x": np.array([0.3, 0.4, np.nan]), "source_y": np.array([0.4, 0.5, np.nan]),
             "lens_x": np.array([0.0, 0.1, 0.0]), "lens_y": np.array([0.0, 0.1, 0.0]),
             "theta_e": np.array([1.0, 0.5, 0.0])}
    offset = real_diagnosis.source_offset(truth)
    np.testing.assert_allclose(offset[:2], [0.5, 1.0])
    assert np.isnan(offset[2])
    assert real_diagnosis.source_offset({"theta_e": truth["theta_e"]}) is None


def test_success_count_distribution_by_hand():
    # Two fair coins: 0, 1, 2 heads with 1/4, 1/2, 1/4; one sure and one impossible trial: 1.
    np.testing.assert_allclose(real_diagnosis.success_count_distribution(np.array([0.5, 0.5])),
                               [0.25, 0.5, 0.25])
    np.testing.assert_allclose(real_diagnosis.success_count_distribution(np.array([1.0, 0.0])),
                               [0.0, 1.0, 0.0])
    # 0.2 and 0.7: P(0) = 0.8 * 0.3, P(2) = 0.2 * 0.7, P(1) the rest.
    np.testing.assert_allclose(real_diagnosis.success_count_distribution(np.array([0.2, 0.7])),
                               [0.24, 0.62, 0.14])


def test_the_report_says_what_correlated_noise_the_simulations_carry():
    """Beside the real cutouts' own noise the report names the simulated noise: none, one
    level through the PSF, or per-band levels, and the ACS-matching kernel when it is used."""
    from lensbench.datasets.config import SimConfig

    white = SimConfig(survey="euclid-vis")
    assert real_diagnosis.simulated_noise_sentence(white) == "the simulated cutouts have none"
    matched = white.replace(correlated_noise=2.3, correlated_noise_kernel="acs-f814w-matched")
    sentence = real_diagnosis.simulated_noise_sentence(matched)
    assert "matches HST ACS F814W's PSF" in sentence and "up to 2.3 sky sigma" in sentence
    with_photons = matched.replace(correlated_noise_electrons_per_nanomaggy=1.0e4)
    assert "with the objects' own photon noise at 1e+04 electrons per nanomaggy" in (
        real_diagnosis.simulated_noise_sentence(with_photons))
    assert "photon" not in real_diagnosis.simulated_noise_sentence(matched)
    per_band = SimConfig(survey="hsc", bands=("g", "i"), correlated_noise=(0.06, 0.42))
    sentence = real_diagnosis.simulated_noise_sentence(per_band)
    assert "the band's PSF" in sentence and "g 0.06, i 0.42 sky sigma" in sentence
    per_band = per_band.replace(correlated_noise_electrons_per_nanomaggy=(3.2e4, 1.0e4))
    assert "photon noise at g 3.2e+04, i 1e+04 electrons per nanomaggy" in (
        real_diagnosis.simulated_noise_sentence(per_band))


def test_hst_noise_with_photons_adds_the_objects_poisson_variance_and_only_where_it_shines():
    """``degraded_hst_noise(photon_exposure_s=...)``: near a bright object an HST snapshot's
    noise is mostly the object's own photons, which the border's sky variance leaves out."""
    size, scale, zeropoint = 160, 0.05, 25.9
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    # A galaxy wide against the degradation's kernels, so its variance is flat across them.
    width = 20.0  # native pixels, 1"
    image = 2.0 * np.exp(-(x**2 + y**2) / (2 * width**2))  # nMgy per 0.05" pixel
    lens = known_lenses.SlacsLens(
        name="synthetic", file="", image=image, pixel_scale=scale, zeropoint_ab=zeropoint,
        background=0.0, noise_variance=1e-4, noise_correlation=np.ones((1, 1)),
        block_sum_factor=1.0, theta_e=1.0,
        theta_e_ref=0, z_lens=0.2, z_source=1.0, arcs=np.zeros_like(image))
    survey = "euclid-vis"
    rng = np.random.default_rng(3)
    exposure = 420.0

    def variance(photon_exposure_s):
        draws = np.stack([real_diagnosis.degraded_hst_noise(
            lens, survey, rng, photon_exposure_s, seed=None, stamp_size=41)[0]
            for _ in range(300)])
        per_pixel = draws.var(axis=0)
        # The central 5 x 5 survey pixels, and 5 x 3 at the middle of the left edge (1.8-2").
        return per_pixel[18:23, 18:23].mean(), per_pixel[18:23, :3].mean()

    centre_sky, edge_sky = variance(None)
    centre, edge = variance(exposure)
    assert centre_sky == pytest.approx(edge_sky, rel=0.1)  # the border's variance everywhere
    electrons_per_nmgy = 10 ** (0.4 * (zeropoint - 22.5)) * exposure
    # At the centre the native variance grows by the object's photons: I / (e- per nMgy).
    expected = (1e-4 + image.max() / electrons_per_nmgy) / 1e-4
    assert centre / centre_sky == pytest.approx(expected, rel=0.1)
    # At the edge, 1.8-2" out (1.6-2" with the PSF's and the rebinning's reach), the galaxy is
    # at 13-28% of its peak and adds that much less.
    def ratio_at(native_pixels):
        peak_share = np.exp(-native_pixels**2 / (2 * width**2))
        return (1e-4 + image.max() * peak_share / electrons_per_nmgy) / 1e-4

    assert ratio_at(40) < edge / edge_sky < ratio_at(32)
