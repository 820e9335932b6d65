"""Real data: the registry (hash checks against the mirror), COSMOS sources through a lens
mapping, SLACS degradation, the real-lenses split and the readers for user cutouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from lensbench.datasets import known_lenses, registry
from lensbench.datasets.cosmos import (
    COSMOS_CATALOGUE,
    COSMOS_EXPOSURE_S,
    COSMOS_MAGS,
    CosmosSources,
    lensed_source_image,
)
from lensbench.datasets.degrade import border_noise
from lensbench.datasets.readers import read_cutouts_to_split, read_fits_folder, read_metcalf
from lensbench.datasets.storage import load_split
from lensbench.datasets.surveys import get_survey

SMALL = "slacs_hst_f814w/slacs_params.csv"


@pytest.fixture(scope="module")
def cosmos(real_data):
    real_data("cosmos")
    return CosmosSources()


@pytest.fixture(scope="module")
def slacs(real_data):
    real_data("slacs")
    return known_lenses.load_slacs()


# ------------------------------------------------------------------------------- registry
def test_registry_matches_the_mirror_and_verifies_hashes(real_data):
    mirror = real_data.mirror()
    sums = {line.split()[1].removeprefix("./"): line.split()[0]
            for line in (mirror / "SHA256SUMS").read_text().splitlines() if line.strip()}
    assert set(registry.names()) == set(sums)
    for name in registry.names("slacs_hst_f814w/") + registry.names("cosmos_hst_f814w/"):
        assert registry.fetch(name) == mirror / name
        assert registry.describe(name)["sha256"] == sums[name]
    info = registry.describe("cosmos_hst_f814w/real_galaxy_images_extension.fits")
    assert set(info) >= {"name", "origin", "sha256", "licence", "url"}
    assert "LSSTDESC/BlendingToolKit" in info["origin"] and "MIT" in info["licence"]
    assert info["url"].startswith("https://raw.githubusercontent.com/LSSTDESC/BlendingToolKit/")


def test_registry_table_is_reproducible_from_the_mirror(tmp_path, real_data):
    table = registry.build_registry_table(real_data.mirror(), tmp_path / "t.json")
    packaged = json.loads((Path(registry.__file__).with_name(registry.REGISTRY_FILE))
                          .read_text())
    assert table["files"] == packaged["files"]


def test_corrupt_mirror_file_is_an_error_naming_file_hash_and_mirror(tmp_path, monkeypatch,
                                                                     real_data):
    bad = tmp_path / "mirror"
    target = bad / SMALL
    target.parent.mkdir(parents=True)
    shutil.copy(real_data(SMALL), target)
    data = bytearray(target.read_bytes())
    data[10] ^= 0x01
    target.write_bytes(bytes(data))
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(bad))
    expected = registry.describe(SMALL)["sha256"]
    with pytest.raises(registry.DataFileError) as err:
        registry.fetch(SMALL)
    message = str(err.value)
    assert SMALL in message and expected in message and str(bad) in message


def test_missing_mirror_file_and_unknown_name_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(registry.DataFileError, match="not found in the mirror") as err:
        registry.fetch(SMALL)
    assert str(tmp_path) in str(err.value) and registry.describe(SMALL)["sha256"] in str(
        err.value)
    with pytest.raises(registry.DataFileError, match="Did you mean"):
        registry.fetch("slacs_hst_f814w/slacs_param.csv")


def test_mirror_only_file_without_mirror_names_the_variable(monkeypatch):
    monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
    with pytest.raises(registry.DataFileError, match=registry.DATA_DIR_ENV):
        registry.fetch("known_lens_tables/slacs_auger2010_shajib2021.csv")


# ------------------------------------------------------------------------------- COSMOS
def test_cosmos_stamps_load_finite_with_positive_flux_and_catalogue_mags(cosmos):
    assert len(cosmos) == 100 and not cosmos.problems
    for galaxy in cosmos.galaxies:
        assert np.all(np.isfinite(galaxy.image)) and galaxy.image.sum() > 0
        assert galaxy.pixel_scale == pytest.approx(0.03)
        assert 18 < galaxy.mags["i"] < 28 and set("grizyuY") <= set(galaxy.mags)
    drawn = cosmos.sample(np.random.default_rng(1), 6)
    assert len(drawn) == 6
    for image, scale, mags in drawn:
        assert image.ndim == 2 and scale == pytest.approx(0.03) and "VIS" in mags
    stamps, scales, mags = cosmos.sample_batch(np.random.default_rng(1), 3, ["g", "i"])
    assert len(stamps) == 3 and scales.shape == (3,) and mags["g"].shape == (3,)
    assert set(cosmos.data_files) >= {COSMOS_CATALOGUE, COSMOS_MAGS}


def _centroid(image, x, y):
    w = image / image.sum()
    return float((w * x).sum()), float((w * y).sum())


def test_identity_mapping_reproduces_flux_and_centroid(cosmos):
    stamp = cosmos.galaxies[4].image
    s = 0.03
    h, w = stamp.shape
    # A grid at the stamp's pixel scale, wider than the stamp, offset by a fraction of a pixel.
    n = 160
    axis = (torch.arange(n, dtype=torch.float64) + 0.5 - n / 2) * s + 0.013
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    cx, cy = 0.31, -0.2
    out = lensed_source_image(stamp, s, x[None], y[None], cx, cy, subpixel_area=s * s)
    assert out.shape == (1, n, n)
    assert float(out.sum()) == pytest.approx(1.0, abs=0.01)
    sy, sx = np.indices(stamp.shape)
    expected = _centroid(stamp, (sx + 0.5 - w / 2) * s + cx, (sy + 0.5 - h / 2) * s + cy)
    got = _centroid(out[0].numpy(), x.numpy(), y.numpy())
    assert got == pytest.approx(expected, abs=0.1 * s)
    # Coarser (simulator-like) sampling, batched, stamps of different sizes: flux within 3%.
    stamps = [cosmos.galaxies[k].image for k in (0, 4, 7)]
    n, sub = 64, 0.084
    axis = (torch.arange(n, dtype=torch.float32) + 0.5 - n / 2) * sub
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    bx, by = x.expand(3, n, n), y.expand(3, n, n)
    out = lensed_source_image(stamps, [s] * 3, bx, by, torch.zeros(3), torch.zeros(3),
                                   subpixel_area=sub * sub, smooth_to=sub)
    assert out.dtype == torch.float32 and out.shape == (3, n, n)
    np.testing.assert_allclose(out.sum(dim=(1, 2)).numpy(), 1.0, atol=0.03)


def test_lensed_source_through_the_simulator_mapping_is_magnified(cosmos):
    from lensbench.datasets.lensing import source_plane

    n, sub = 96, 0.05
    axis = (torch.arange(n, dtype=torch.float64) + 0.5 - n / 2) * sub
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    col = lambda v: torch.tensor([v], dtype=torch.float64)[:, None, None]  # noqa: E731
    bx, by = source_plane(x[None], y[None], theta_e=col(1.0), q=col(0.8), phi=col(0.3),
                          gamma1=col(0.0), gamma2=col(0.0), lens_x=col(0.0), lens_y=col(0.0))
    out = lensed_source_image(cosmos.galaxies[4].image, 0.03, bx, by, 0.05, 0.02,
                                   subpixel_area=sub * sub)
    assert torch.all(torch.isfinite(out)) and float(out.sum()) > 2.0  # a source near the caustic


# ------------------------------------------------------------------------------- SLACS
def test_slacs_lenses_have_theta_e_and_degrade_conserving_flux(slacs):
    assert len(slacs) == 5
    survey = get_survey("hsc")
    bands = ["g", "r", "i"]
    for lens in slacs:
        assert 0.8 < lens.theta_e < 1.6 and lens.pixel_scale == pytest.approx(0.05)
        assert 15 < lens.mag_f814w < 19 and 0 <= lens.arcs.sum() < 0.35 * lens.image.sum()
        planes = known_lenses.slacs_band_images(lens, bands)
        out = known_lenses.degrade_image(planes, lens.pixel_scale, survey, bands=bands)
        assert out.shape == (3, survey.stamp_size, survey.stamp_size) and out.dtype == np.float32
        np.testing.assert_allclose(out.sum(axis=(1, 2)), planes.sum(axis=(1, 2)), rtol=0.03)
        # red lens: g fainter than i
        assert out[0].sum() < out[2].sum()
    # Rebinning alone is exact; a point at the centre stays centred.
    image = np.zeros((40, 40))
    image[19:21, 19:21] = 1.0
    binned = known_lenses.rebin_flux(image, 0.05, 0.168, (11, 11))
    assert binned.sum() == pytest.approx(4.0)
    assert np.unravel_index(binned.argmax(), binned.shape) == (5, 5)


def test_slacs_images_know_their_exposure_and_their_own_photon_noise(slacs):
    """Each SLACS image's exposure is its NCOMBINE exposures of SNAPSHOT_EXPOSURE_S (the
    4-exposure SDSSJ0029-0055: 1680 s); its noise with photons is the border's sky variance
    plus its flux over its electrons per nanomaggy, and the sky's alone where it is negative."""
    from lensbench.datasets.config import SNAPSHOT_EXPOSURE_S

    exposures = {lens.name: lens.exposure_s for lens in slacs}
    assert exposures["SDSSJ0029-0055"] == 4 * SNAPSHOT_EXPOSURE_S
    assert sorted(exposures.values())[:4] == [SNAPSHOT_EXPOSURE_S] * 4
    for lens in slacs:
        gain = 10 ** (0.4 * (lens.zeropoint_ab - 22.5)) * lens.exposure_s
        assert lens.effective_gain == pytest.approx(gain)
        expected = lens.noise_variance + np.clip(lens.image, 0, None) / gain
        np.testing.assert_allclose(lens.variance_with_photons(), expected, rtol=1e-12)
        assert lens.variance_with_photons().max() > 10 * lens.noise_variance  # the lens's core
        np.testing.assert_allclose(lens.variance_with_photons(420.0 * 4)[lens.image < 0],
                                   lens.noise_variance, rtol=1e-12)


def test_a_slacs_image_without_its_exposure_count_is_refused_by_name(tmp_path, monkeypatch,
                                                                      real_data):
    real_data("slacs")
    name = f"{known_lenses.SLACS_DIR}/99x99/SDSSJ0737+3216.fits"
    broken = tmp_path / "SDSSJ0737+3216.fits"
    with fits.open(registry.fetch(name)) as hdul:
        del hdul["SCI"].header["NCOMBINE"]
        hdul.writeto(broken)
    fetch = registry.fetch
    monkeypatch.setattr(known_lenses.registry, "fetch",
                        lambda wanted: broken if wanted == name else fetch(wanted))
    with pytest.raises(ValueError, match=r"SDSSJ0737\+3216.fits: header SCI NCOMBINE must be"):
        known_lenses.load_slacs("99x99")


def test_cosmos_noise_with_photons_is_the_catalogues_sky_plus_the_stamps_own(cosmos):
    galaxy = cosmos.galaxies[0]
    np.testing.assert_allclose(
        galaxy.variance_with_photons(),
        galaxy.noise_variance + np.clip(galaxy.image, 0, None) / COSMOS_EXPOSURE_S, rtol=1e-12)
    turned = np.rot90(galaxy.image)
    np.testing.assert_allclose(galaxy.variance_with_photons(turned),
                               np.rot90(galaxy.variance_with_photons()), rtol=1e-12)


def test_sky_is_fitted_beside_the_lens_halo_not_taken_from_the_border():
    """A de Vaucouleurs galaxy (R_e 2") on a sky of 10 sigma in a SLACS-sized cutout (198 x 198
    at 0.05"/px): the border median holds the halo as well, the fit gets the sky alone."""
    size, scale, r_eff, sky, sigma = 198, 0.05, 2.0, 10.0, 1.0
    radius = np.hypot(*np.mgrid[:size, :size] - (size - 1) / 2) * scale
    halo = 400.0 * np.exp(-known_lenses.DE_VAUCOULEURS_B * ((radius / r_eff) ** 0.25 - 1))
    image = sky + halo + np.random.default_rng(1).normal(0, sigma, (size, size))
    halo_at_border = float(np.median(np.concatenate(
        [halo[:12].ravel(), halo[-12:].ravel(), halo[:, :12].ravel(), halo[:, -12:].ravel()])))
    assert halo_at_border > 5 * sigma  # what the border median took for sky
    border_sky, _, _ = border_noise(image)
    assert border_sky - sky == pytest.approx(halo_at_border, abs=0.5 * sigma)
    fitted = known_lenses.sky_level_beside_halo(image, scale, r_eff)
    assert fitted == pytest.approx(sky, abs=0.2 * sigma)
    # An R_e 20% off moves the sky by less than a tenth of the halo at the border.
    for wrong in (0.8 * r_eff, 1.2 * r_eff):
        fitted = known_lenses.sky_level_beside_halo(image, scale, wrong)
        assert abs(fitted - sky) < 0.1 * halo_at_border
    with pytest.raises(ValueError, match="r_eff"):
        known_lenses.sky_level_beside_halo(image, scale, float("nan"))
    with pytest.raises(ValueError, match="too few annuli"):
        known_lenses.sky_level_beside_halo(image[:60, :60], scale, r_eff)


def test_degraded_noise_matches_the_survey_background():
    band = get_survey("lsst-10yr").band("i")
    rng = np.random.default_rng(0)
    blank = np.zeros((1, 50, 50))
    out = known_lenses.degrade_image(blank, 0.05, "lsst-10yr", bands=["i"], stamp_size=48, rng=rng)
    sigma_nmgy = band.background_sigma / band.electrons_per_nanomaggy
    assert out.std() == pytest.approx(sigma_nmgy, rel=0.05)
    # Native noise above the target's over the whole stamp: nothing is added.
    wide = np.zeros((1, 260, 260))
    out = known_lenses.degrade_image(wide, 0.05, "lsst-10yr", bands=["i"], stamp_size=48, rng=rng,
                             native_variance=1e3)
    assert np.abs(out).max() < 1e-3 * sigma_nmgy


def test_every_flag_of_a_real_split_is_stated_by_the_reports_sentence():
    """A flag of make_real_lens_split that changes how the HST images are prepared is named in
    the reports' sentence (PREPARATION_STEPS), with its phrase for on and for off."""
    import inspect

    flags = {name for name, parameter in
             inspect.signature(known_lenses.make_real_lens_split).parameters.items()
             if parameter.default is False}
    assert flags == set(known_lenses.PREPARATION_STEPS)
    for flag, (topic, with_flag, without) in known_lenses.PREPARATION_STEPS.items():
        on = known_lenses.preparation_sentence({flag: True})
        off = known_lenses.preparation_sentence({})
        assert f"{topic}: {with_flag}" in on and f"{topic}: {without}" not in on
        assert f"{topic}: {without}" in off and f"{topic}: {with_flag}" not in off


def test_real_lens_split_pairs_slacs_with_cosmos(tmp_path, real_data):
    real_data("slacs", "cosmos")
    out = known_lenses.make_real_lens_split("hsc", ["g", "r", "i"], 48, tmp_path / "real",
                                            seed=3, n_nonlenses=12)
    split = load_split(out)
    assert split.n == 17 and split.image_shape == (3, 48, 48)
    labels = split.truth["label"]
    assert labels.sum() == 5
    assert np.all(np.isfinite(split.truth["theta_e"][labels == 1]))
    assert np.all(np.isnan(split.truth["theta_e"][labels == 0]))
    images = split.images()
    assert np.all(np.isfinite(images))
    data_files = split.manifest["data_files"]
    assert known_lenses.SLACS_TABLE in data_files and COSMOS_CATALOGUE in data_files
    assert all(registry.describe(k)["sha256"] == v for k, v in data_files.items())
    again = known_lenses.make_real_lens_split("hsc", ["g", "r", "i"], 48, tmp_path / "again",
                                              seed=3, n_nonlenses=12)
    assert load_split(again).content_hash == split.content_hash


# ------------------------------------------------------------------------------- readers
def _write(path: Path, data) -> None:
    fits.HDUList([fits.PrimaryHDU(np.asarray(data, dtype=np.float32))]).writeto(path)


def test_fits_folder_of_cubes_and_label_csv(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(4):
        _write(tmp_path / f"obj{k}.fits", rng.normal(size=(3, 20, 20)))
    (tmp_path / "labels.csv").write_text("id,label\nobj0,1\nobj1,0\nobj2,1\nobj3,0\n")
    images, ids, labels, problems = read_fits_folder(tmp_path, ["g", "r", "i"],
                                                     labels_csv=tmp_path / "labels.csv")
    assert images.shape == (4, 3, 20, 20) and images.dtype == np.float32
    assert ids == ["obj0", "obj1", "obj2", "obj3"] and labels.tolist() == [1, 0, 1, 0]
    assert problems == []


def test_fits_folder_reports_each_bad_file_by_name(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(3):
        _write(tmp_path / f"obj{k}.fits", rng.normal(size=(2, 16, 16)))
    _write(tmp_path / "wrong.fits", rng.normal(size=(2, 12, 16)))
    nan = rng.normal(size=(2, 16, 16))
    nan[1, 3, 4] = np.nan
    _write(tmp_path / "nan.fits", nan)
    (tmp_path / "broken.fits").write_text("not a FITS file")
    (tmp_path / "labels.csv").write_text("id,label\nobj0,1\nobj1,0\nobj2,0\nghost,1\n")
    cut = read_fits_folder(tmp_path, ["g", "r"], labels_csv=tmp_path / "labels.csv")
    assert cut.ids == ["obj0", "obj1", "obj2"] and cut.images.shape == (3, 2, 16, 16)
    text = "\n".join(cut.problems)
    assert len(cut.problems) == 4
    for name in ("wrong.fits", "nan.fits", "broken.fits", "'ghost'"):
        assert name in text
    with pytest.raises(ValueError, match="broken.fits"):
        read_fits_folder(tmp_path, ["g", "r"], strict=True)


def test_fits_folder_one_file_per_band_missing_band(tmp_path):
    rng = np.random.default_rng(0)
    for oid in ("a", "b", "c"):
        for band in ("g", "r"):
            if (oid, band) != ("c", "r"):
                _write(tmp_path / f"{oid}_{band}.fits", rng.normal(size=(10, 10)))
    cut = read_fits_folder(tmp_path, ["g", "r"], pattern="{id}_{band}.fits")
    assert cut.ids == ["a", "b"] and cut.images.shape == (2, 2, 10, 10) and cut.labels is None
    assert len(cut.problems) == 1 and "c_g.fits" in cut.problems[0] and "['r']" in cut.problems[0]
    with pytest.raises(ValueError, match="c_g.fits"):
        read_fits_folder(tmp_path, ["g", "r"], pattern="{id}_{band}.fits", strict=True)


def _metcalf(root: Path, ids, *, bad=None, labels_extra="") -> Path:
    rng = np.random.default_rng(1)
    folders = {"R": "Band1", "I": "Band2", "G": "Band3", "U": "Band4"}
    for letter, folder in folders.items():
        (root / "Public" / folder).mkdir(parents=True, exist_ok=True)
        for oid in ids:
            data = rng.normal(size=(12, 12))
            data[0, 0] = 100.0  # a masked pixel
            if bad == ("nan", oid, letter):
                data[5, 5] = np.nan
            if bad == ("shape", oid, letter):
                data = rng.normal(size=(10, 12))
            if bad == ("missing", oid, letter):
                continue
            _write(root / "Public" / folder / f"imageSDSS_{letter}-{oid}.fits", data)
    rows = "".join(f"{oid},{oid % 2},{0.5 * oid},{10 + oid},{3.5}\n" for oid in ids)
    (root / "classifications.csv").write_text(
        "ID,is_lens,Einstein_area,numb_pix_lensed_image,flux_lensed_image_in_sigma\n"
        + rows + labels_extra)
    return root


def test_metcalf_layout_happy_path_and_split(tmp_path):
    root = _metcalf(tmp_path / "challenge", [100001, 100002, 100003])
    cut = read_metcalf(root)
    assert cut.bands == ["u", "g", "r", "i"] and cut.images.shape == (3, 4, 12, 12)
    assert cut.ids == ["100001", "100002", "100003"] and cut.labels.tolist() == [1, 0, 1]
    assert cut.problems == [] and np.all(cut.images[:, :, 0, 0] == 0)
    assert cut.columns["n_masked"].tolist() == [4, 4, 4]
    assert cut.columns["Einstein_area"].tolist() == [50000.5, 50001.0, 50001.5]
    out, problems = read_cutouts_to_split(root, tmp_path / "split", layout="metcalf")
    split = load_split(out)
    assert split.n == 3 and split.bands == ["u", "g", "r", "i"] and problems == []
    assert split.truth["label"].tolist() == [1, 0, 1]
    assert split.truth["object_id"].tolist() == [100001, 100002, 100003]
    assert list(split.manifest["data_files"]) == ["challenge"]
    np.testing.assert_array_equal(split.images(), cut.images)


@pytest.mark.parametrize("case", ["nan", "shape", "missing", "unknown"])
def test_metcalf_bad_files_reported_by_name_and_strict_raises(tmp_path, case):
    ids = [7, 8, 9]
    if case == "unknown":
        root = _metcalf(tmp_path, ids, labels_extra="12345,1,0,0,0\n")
        expected = "12345"
    else:
        root = _metcalf(tmp_path, ids, bad=(case, 8, "G"))
        expected = "imageSDSS_G-8.fits" if case != "missing" else "imageSDSS_R-8.fits"
    cut = read_metcalf(root)
    assert len(cut.problems) == 1 and expected in cut.problems[0]
    assert cut.ids == (["7", "8", "9"] if case == "unknown" else ["7", "9"])
    with pytest.raises(ValueError, match=expected):
        read_metcalf(root, strict=True)


def test_space_metcalf_layout(tmp_path):
    (tmp_path / "Public" / "Band1").mkdir(parents=True)
    for oid in (1, 2):
        _write(tmp_path / "Public" / "Band1" / f"imageEUC_VIS-{oid}.fits", np.ones((8, 8)))
    cut = read_metcalf(tmp_path)
    assert cut.bands == ["VIS"] and cut.images.shape == (2, 1, 8, 8) and cut.labels is None
