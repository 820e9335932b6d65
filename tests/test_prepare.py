"""Preparing a user's real cutouts to a model's inputs (datasets/prepare.py, issue 23.2): units,
pixel scale, bands, stamp and padding, on FITS files written here (the same on SLACS lenses
degraded by `bench degrade`: tests/test_degrade.py)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from astropy.io import fits
from lensbench.bench import cli
from lensbench.bench.tools.scan import scan
from lensbench.datasets.prepare import (
    ModelInputs,
    PreparationError,
    _clipped_border,
    prepare_cutout,
    read_cutout,
)

GR = ModelInputs(("g", "r"), 0.2, (16, 16))


def wcs_header(scale_arcsec: float, n: int, rotation_deg: float = 0.0) -> fits.Header:
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    d = scale_arcsec / 3600
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRPIX1"] = header["CRPIX2"] = (n + 1) / 2
    header["CRVAL1"], header["CRVAL2"] = 150.0, 2.0
    header["CD1_1"], header["CD1_2"], header["CD2_1"], header["CD2_2"] = -d * c, d * s, d * s, d * c
    return header


def point_image(n: int, flux: float) -> np.ndarray:
    """A point source of ``flux`` spread over the 2x2 central pixels (even n), so the cutout's
    centre is the source's."""
    image = np.zeros((n, n))
    image[n // 2 - 1:n // 2 + 1, n // 2 - 1:n // 2 + 1] = flux / 4
    return image


def test_band_files_in_counts_are_converted_and_resampled_conserving_flux(tmp_path):
    """Per-band files at 0.1"/px in counts with MAGZERO 27 (one band, the other PHOTZP 25):
    nanomaggies at the model's 0.2"/px, total flux kept, each step recorded."""
    files = {}
    for band, key, zp in (("g", "MAGZERO", 27.0), ("r", "PHOTZP", 25.0)):
        header = wcs_header(0.1, 40, rotation_deg=30)  # rotated: the scale is still 0.1"
        header[key] = zp
        fits.PrimaryHDU(point_image(40, 1000.0), header).writeto(tmp_path / f"a_{band}.fits")
        files[band] = {"sci": tmp_path / f"a_{band}.fits"}
    image, record = prepare_cutout(files, GR, cutout_id="a")
    assert image.shape == (2, 16, 16) and image.dtype == np.float32
    assert image[0].sum() == pytest.approx(1000.0 * 10 ** (-0.4 * (27.0 - 22.5)), rel=1e-6)
    assert image[1].sum() == pytest.approx(1000.0 * 10 ** (-0.4 * (25.0 - 22.5)), rel=1e-6)
    # the source stays at the centre: the 2x2 central pixels of the 0.2" grid hold it all
    assert image[0, 7:9, 7:9].sum() == pytest.approx(image[0].sum())
    assert record.resampling == "rebin_flux" and record.scale_factor == pytest.approx(0.5)
    assert record.pixel_scale_from == "WCS" and record.pixel_scale_in == pytest.approx(0.1)
    assert record.zero_point_from == "g=MAGZERO,r=PHOTZP"
    assert record.crop_pixels == 20 * 20 - 16 * 16 and record.padding_pixels == 0


def test_zero_point_flag_photflam_and_bunit_and_a_clear_refusal(tmp_path):
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.ones((16, 16)), fits.Header({"PIXSCALE": 0.2})).writeto(plain)
    one = ModelInputs(("i",), 0.2, (16, 16))
    with pytest.raises(PreparationError, match=r"plain\.fits.*band i.*--zeropoint"):
        prepare_cutout(plain, one, cutout_id="x")
    image, record = prepare_cutout(plain, one, cutout_id="x", zero_point=20.0)
    assert np.allclose(image, 10 ** (-0.4 * (20.0 - 22.5)))
    assert record.zero_point_from == "i=--zeropoint"
    # HST: PHOTFLAM/PHOTPLAM give the zero point of 1 e-/s; an image in electrons is divided by
    # EXPTIME first
    hst = fits.Header({"PIXSCALE": 0.2, "PHOTFLAM": 7.0e-20, "PHOTPLAM": 8045.0,
                       "BUNIT": "ELECTRONS", "EXPTIME": 400.0})
    fits.PrimaryHDU(np.full((16, 16), 400.0), hst).writeto(tmp_path / "hst.fits")
    image, record = prepare_cutout(tmp_path / "hst.fits", one, cutout_id="h")
    zp = -2.5 * math.log10(7.0e-20) - 5 * math.log10(8045.0) - 2.408
    assert np.allclose(image, 10 ** (-0.4 * (zp - 22.5)), rtol=1e-6)
    assert record.zero_point_from == "i=PHOTFLAM/EXPTIME"
    del hst["EXPTIME"]
    fits.PrimaryHDU(np.ones((16, 16)), hst).writeto(tmp_path / "hst2.fits")
    with pytest.raises(PreparationError, match="EXPTIME"):
        prepare_cutout(tmp_path / "hst2.fits", one, cutout_id="h2")
    # no pixel scale anywhere: refused, naming the flag
    fits.PrimaryHDU(np.ones((16, 16)), fits.Header({"BUNIT": "nanomaggy"})).writeto(
        tmp_path / "noscale.fits")
    with pytest.raises(PreparationError, match=r"noscale\.fits.*--pixel-scale"):
        prepare_cutout(tmp_path / "noscale.fits", one, cutout_id="n")


def write_mef(path, order, filters=True, missing=()):
    hdus = [fits.PrimaryHDU(header=fits.Header({"MAGZERO": 30.0, "PIXSCALE": 0.2}))]
    for value, band in enumerate(order):
        if band in missing:
            continue
        header = fits.Header({"EXTNAME": f"SCI_{band.upper()}"})
        if filters:
            header["FILTER"] = f"DECam {band}"
        hdus.append(fits.ImageHDU(np.full((16, 16), float(value + 1)), header))
    fits.HDUList(hdus).writeto(path)


def test_multi_extension_bands_from_filter_keywords_or_a_map(tmp_path):
    """DES style: one band per HDU, found by FILTER in any order (zero point from the primary
    header), or by a --bands map; a missing band names the file and the band."""
    write_mef(tmp_path / "des.fits", ["r", "z", "g"])
    planes = read_cutout(tmp_path / "des.fits", ("g", "r"))
    assert [p.band for p in planes] == ["g", "r"]
    assert [p.data[0, 0] for p in planes] == [3.0, 1.0]
    image, record = prepare_cutout(tmp_path / "des.fits", GR, cutout_id="d")
    assert np.allclose(image[0], 3.0 * 10 ** (-0.4 * 7.5))
    assert record.zero_point_from == "g=MAGZERO,r=MAGZERO" and record.resampling == "none"
    write_mef(tmp_path / "nofilter.fits", ["r", "z", "g"], filters=False)
    with pytest.raises(PreparationError, match=r"nofilter\.fits: no HDU for band g.*--bands"):
        prepare_cutout(tmp_path / "nofilter.fits", GR, cutout_id="n")
    image, _ = prepare_cutout(tmp_path / "nofilter.fits", GR, cutout_id="n",
                              band_map={"g": "SCI_G", "r": "1"})
    assert image[0, 0, 0] == pytest.approx(3.0 * 10 ** (-0.4 * 7.5))
    assert image[1, 0, 0] == pytest.approx(1.0 * 10 ** (-0.4 * 7.5))
    write_mef(tmp_path / "nog.fits", ["r", "z", "g"], missing=("g",))
    with pytest.raises(PreparationError, match=r"nog\.fits: no HDU for band g"):
        prepare_cutout(tmp_path / "nog.fits", GR, cutout_id="m")


def test_a_cube_takes_its_bands_from_bands_keyword_or_the_model_order(tmp_path):
    cube = np.stack([np.full((16, 16), v) for v in (1.0, 2.0, 3.0)])
    header = fits.Header({"BUNIT": "nanomaggy", "PIXSCALE": 0.2, "BANDS": "z,r,g"})
    fits.PrimaryHDU(cube, header).writeto(tmp_path / "cube.fits")
    image, _ = prepare_cutout(tmp_path / "cube.fits", GR, cutout_id="c")
    assert image[:, 0, 0].tolist() == [3.0, 2.0]
    del header["BANDS"]
    fits.PrimaryHDU(cube[:2], header).writeto(tmp_path / "ordered.fits")
    image, _ = prepare_cutout(tmp_path / "ordered.fits", GR, cutout_id="o")
    assert image[:, 0, 0].tolist() == [1.0, 2.0]
    fits.PrimaryHDU(cube, header).writeto(tmp_path / "three.fits")
    with pytest.raises(PreparationError, match=r"three\.fits: a cube of 3 planes.*--bands"):
        prepare_cutout(tmp_path / "three.fits", GR, cutout_id="t")
    # a BANDS keyword that does not count the planes, and a --bands map that misses a band
    header["BANDS"] = "z,r,g,i"
    fits.PrimaryHDU(cube, header).writeto(tmp_path / "miscount.fits")
    with pytest.raises(PreparationError, match=r"miscount\.fits: the cube's BANDS 'z,r,g,i' "
                                               r"names 4 bands, but it has 3 planes"):
        prepare_cutout(tmp_path / "miscount.fits", GR, cutout_id="m")
    with pytest.raises(PreparationError, match=r"no plane \(0-2\) of the cube for band r "
                                               r"\(it names g, q; the model needs g, r\)"):
        prepare_cutout(tmp_path / "three.fits", GR, cutout_id="t", band_map={"g": "0", "q": "1"})


def test_padding_is_noise_from_the_rms_map_or_the_border_reproducible_per_id(tmp_path):
    rng = np.random.default_rng(1)
    small = rng.normal(0.0, 0.5, (2, 24, 24))
    small[:, 11:13, 11:13] += 20.0
    array_model = ModelInputs(("g", "r"), None, (32, 32))
    image, record = prepare_cutout(small, array_model, cutout_id="obj-1", zero_point=22.5)
    assert image.shape == (2, 32, 32) and record.padding_pixels == 32 * 32 - 24 * 24
    assert np.array_equal(image[:, 4:28, 4:28], small.astype(np.float32))  # centred
    assert record.noise_source == "border sigma-clipped std"
    assert (record.centre_dx, record.centre_dy) == (0.0, 0.0)
    frame = np.concatenate([image[0, :4].ravel(), image[0, 28:].ravel()])
    assert frame.std() == pytest.approx(_clipped_border(small[0])[2], rel=0.15)  # its sigma
    assert frame.std() == pytest.approx(0.5, rel=0.3)  # the clipped border ignores the source
    again, _ = prepare_cutout(small, array_model, cutout_id="obj-1", zero_point=22.5)
    other, _ = prepare_cutout(small, array_model, cutout_id="obj-2", zero_point=22.5)
    assert np.array_equal(image, again) and not np.array_equal(image, other)
    # with an rms map the padding has its sigma
    files = {}
    for band in ("g", "r"):
        header = fits.Header({"BUNIT": "nanomaggy", "PIXSCALE": 0.2})
        fits.PrimaryHDU(np.pad(small[0], 12), header).writeto(tmp_path / f"s_{band}.fits")
        fits.PrimaryHDU(np.full((48, 48), 3.0), header).writeto(tmp_path / f"s_{band}.rms.fits")
        files[band] = {"sci": tmp_path / f"s_{band}.fits", "rms": tmp_path / f"s_{band}.rms.fits"}
    image, record = prepare_cutout(files, ModelInputs(("g", "r"), 0.2, (64, 64)), cutout_id="s")
    assert record.noise_source == "rms map" and record.noise_sigma == "g=3,r=3"
    assert image[1, :8].std() == pytest.approx(3.0, rel=0.1)
    files["r"] = {"sci": tmp_path / "s_z.fits"}
    with pytest.raises(PreparationError, match=r"s_z\.fits: no such file \(band r\)"):
        prepare_cutout(files, GR, cutout_id="s")


def test_a_psf_image_is_measured_and_recorded_beside_the_models(tmp_path):
    files = {}
    for band, sigma_px in (("g", 4.0), ("r", 3.0)):
        header = fits.Header({"BUNIT": "nanomaggy", "PIXSCALE": 0.1})
        fits.PrimaryHDU(np.zeros((32, 32)), header).writeto(tmp_path / f"p_{band}.fits")
        yy, xx = np.indices((41, 41)) - 20
        psf = np.exp(-0.5 * (xx**2 + yy**2) / sigma_px**2)
        fits.PrimaryHDU(psf).writeto(tmp_path / f"p_{band}.psf.fits")  # scale: the image's
        files[band] = {"sci": tmp_path / f"p_{band}.fits", "psf": tmp_path / f"p_{band}.psf.fits"}
    model = ModelInputs(("g", "r"), 0.2, (16, 16), psf_fwhm=(0.8, 0.7))
    _, record = prepare_cutout(files, model, cutout_id="p")
    measured = dict(part.split("=") for part in record.psf_fwhm.split(","))
    assert float(measured["g"]) == pytest.approx(2.3548 * 4.0 * 0.1, rel=0.05)
    assert float(measured["r"]) == pytest.approx(2.3548 * 3.0 * 0.1, rel=0.05)
    assert record.model_psf_fwhm == "g=0.8,r=0.7"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _tiny_gr_task(n: int, boost: float):
    """(X, y, info): n g,r 16x16 noise stamps at 0.2"/px, the second half (the lenses) with a
    central square ``boost`` sigma bright."""
    from lensbench.baselines.contract import TaskInfo

    rng = np.random.default_rng(0)
    X = rng.normal(0.0, 1.0, (n, 2, 16, 16)).astype(np.float32)
    y = np.repeat([0, 1], n // 2)
    X[y == 1, :, 6:10, 6:10] += boost
    return X, y, TaskInfo("tiny", "lens-finding", ("g", "r"), 0.2, (2, 16, 16))


@pytest.fixture(scope="module")
def finder(tmp_path_factory):
    """A tiny torch finder on g,r 16x16 (a bare checkpoint: no pixel scale stored)."""
    from lensbench.deep.checkpoint import save_checkpoint
    from lensbench.deep.methods import ResNetFinder

    X, y, info = _tiny_gr_task(32, 5.0)
    method = ResNetFinder(max_epochs=1, crop=None, device="cpu", random_state=0).fit(X, y, info)
    return save_checkpoint(method, tmp_path_factory.mktemp("finder") / "finder.pt")


def test_bench_scan_prepares_band_files_and_records_it(finder, tmp_path, capsys):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for oid in ("1", "2", "3"):
        for band in ("g", "r"):
            if oid == "3" and band == "r":
                continue  # a missing band: one bad cutout, named
            header = wcs_header(0.1, 24)
            header["MAGZPT"] = 27.0
            sky = 30.0 if (oid, band) == ("2", "g") else 0.0  # 10 sigma of sky left in
            fits.PrimaryHDU(rng.normal(sky, 3, (24, 24)), header).writeto(
                folder / f"obj{oid}_{band}.fits")
            fits.PrimaryHDU(np.full((24, 24), 3.0), header).writeto(
                folder / f"obj{oid}_{band}.rms.fits")
    out = tmp_path / "cands.csv"
    argv = ["scan", "--model", str(finder), "--cutouts", str(folder), "--out", str(out),
            "--band-files", "obj{id}_{band}.fits", "--rms-files", "obj{id}_{band}.rms.fits",
            "--no-progress", "--workdir", str(tmp_path / "w")]
    # a bare checkpoint does not say its pixel scale: refused before any work
    assert cli.main(argv) == 2
    assert "--model-pixel-scale" in capsys.readouterr().err.splitlines()[-1]
    assert cli.main([*argv, "--model-pixel-scale", "0.2", "--restart"]) == 0
    assert [r["id"] for r in read_csv(out)] != [] and {r["id"] for r in read_csv(out)} == {"1", "2"}
    (bad,) = read_csv(tmp_path / "cands.bad.csv")
    assert bad["id"] == "3" and "obj3_r.fits: no such file (band r)" in bad["reason"]
    records = {r["id"]: r for r in read_csv(tmp_path / "cands.prepared.csv")}
    assert set(records) == {"1", "2"}
    assert records["1"]["resampling"] == "rebin_flux"
    assert float(records["1"]["scale_factor"]) == pytest.approx(0.5)
    assert records["1"]["zero_point_from"] == "g=MAGZPT,r=MAGZPT"
    assert records["1"]["noise_source"] == "rms map" and int(records["1"]["padding_pixels"]) \
        == 16 * 16 - 12 * 12
    # the sky left in obj2's g band is named, and counted on stderr
    assert (records["1"]["sky_not_subtracted"], records["2"]["sky_not_subtracted"]) == ("", "g")
    assert "note: 1 cutout(s) have a band whose border lies more than 5 sky sigmas" \
        in capsys.readouterr().err
    # a rerun reproduces the table (the padding noise is seeded by the id)
    first = read_csv(out)
    assert cli.main([*argv, "--model-pixel-scale", "0.2", "--restart"]) == 0
    assert read_csv(out) == first


def test_a_scan_counts_one_cause_met_by_many_cutout_files_once(finder, tmp_path, capsys):
    folder = tmp_path / "cubes"
    folder.mkdir()
    header = wcs_header(0.2, 16)
    header["MAGZPT"], header["BANDS"] = 27.0, "g,r,i"
    for k in range(3):
        fits.PrimaryHDU(np.ones((2, 16, 16)), header).writeto(folder / f"c{k}.fits")
    assert cli.main(["scan", "--model", str(finder), "--cutouts", str(folder), "--out",
                     str(tmp_path / "c.csv"), "--prepare", "--model-pixel-scale", "0.2",
                     "--no-progress", "--workdir", str(tmp_path / "w")]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert "none of the 3 cutouts could be scored: 3 x the cube's BANDS 'g,r,i' names 3 " \
           "bands, but it has 2 planes" in last, last
    # each bad cutout keeps its own file in the list
    assert all(row["reason"].startswith(row["source"])
               for row in read_csv(tmp_path / "c.bad.csv"))


def test_bench_scan_prepares_a_manifest_with_weights_and_multi_extension_files(finder, tmp_path):
    """A manifest CSV (inverse-variance weights; an id lacking band r is bad, named) and a
    folder of DES-style multi-extension files (--prepare) score the same pixels the same."""
    rng = np.random.default_rng(5)
    planes = {oid: rng.normal(0, 2, (2, 16, 16)) for oid in ("a", "b")}
    rows = []
    for oid, data in planes.items():
        for k, band in enumerate(("g", "r")):
            header = fits.Header({"BUNIT": "nanomaggy", "PIXSCALE": 0.2})
            fits.PrimaryHDU(data[k], header).writeto(tmp_path / f"{oid}{band}.fits")
            fits.PrimaryHDU(np.full((16, 16), 0.25), header).writeto(
                tmp_path / f"{oid}{band}w.fits")
            rows.append({"id": oid, "band": band, "sci": f"{oid}{band}.fits",
                         "weight": f"{oid}{band}w.fits"})
    rows.append({"id": "c", "band": "g", "sci": "ag.fits", "weight": ""})
    with open(tmp_path / "cutouts.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "band", "sci", "weight"])
        writer.writeheader()
        writer.writerows(rows)
    common = ["--model", str(finder), "--model-pixel-scale", "0.2", "--no-progress",
              "--workdir", str(tmp_path / "w")]
    assert cli.main(["scan", "--cutouts", str(tmp_path / "cutouts.csv"),
                     "--out", str(tmp_path / "manifest.csv"), *common]) == 0
    (bad,) = read_csv(tmp_path / "manifest.bad.csv")
    assert bad["id"] == "c" and "no file for band r" in bad["reason"] and "ag.fits" in bad["reason"]
    from_manifest = {r["id"]: r["score"] for r in read_csv(tmp_path / "manifest.csv")}
    assert set(from_manifest) == {"a", "b"}
    mef = tmp_path / "mef"
    mef.mkdir()
    for oid, data in planes.items():
        hdus = [fits.PrimaryHDU(header=fits.Header({"MAGZERO": 22.5, "PIXSCALE": 0.2}))]
        hdus += [fits.ImageHDU(data[k], fits.Header({"FILTER": f"HSC-{band.upper()}"}))
                 for k, band in ((1, "r"), (0, "g"))]
        fits.HDUList(hdus).writeto(mef / f"{oid}.fits")
    assert cli.main(["scan", "--cutouts", str(mef), "--prepare", "--out",
                     str(tmp_path / "mef.csv"), *common]) == 0
    assert {r["id"]: r["score"] for r in read_csv(tmp_path / "mef.csv")} == from_manifest
    records = read_csv(tmp_path / "mef.prepared.csv")
    assert [r["zero_point_from"] for r in records] == ["g=MAGZERO,r=MAGZERO"] * 2


# ------------------------------------------------------------- headers as surveys write them


def _zero_point(header: dict):
    from lensbench.datasets.prepare import zero_point_of

    return zero_point_of(fits.Header(header), "x.fits")


HST_ZP = -2.5 * math.log10(7.0e-20) - 5.0 * math.log10(8000.0) - 2.408  # of 1 e-/s


@pytest.mark.parametrize("bunit", ["ELECTRONS/S", "electron / s", "count s-1", "COUNTS/S", "CPS",
                                   "e-/s"])
def test_a_count_rate_bunit_in_any_spelling_takes_photflams_zero_point(bunit):
    header = {"BUNIT": bunit, "PHOTFLAM": 7.0e-20, "PHOTPLAM": 8000.0, "EXPTIME": 2000.0}
    zero_point, factor, source = _zero_point(header)
    assert (zero_point, factor, source) == (pytest.approx(HST_ZP), 1.0, "PHOTFLAM")


@pytest.mark.parametrize("bunit", ["ELECTRONS", "counts", "DN", "ADU"])
def test_counts_are_divided_by_the_exposure_time(bunit):
    header = {"BUNIT": bunit, "PHOTFLAM": 7.0e-20, "PHOTPLAM": 8000.0, "EXPTIME": 2000.0}
    assert _zero_point(header) == (pytest.approx(HST_ZP), 1 / 2000.0, "PHOTFLAM/EXPTIME")


def test_photflam_without_a_bunit_that_says_counts_or_rates_is_refused_with_both_zero_points():
    header = {"PHOTFLAM": 7.0e-20, "PHOTPLAM": 8000.0, "EXPTIME": 2000.0}
    with pytest.raises(PreparationError, match=r"x\.fits: BUNIT 'missing' does not say whether "
                       rf"the values are counts or counts per second.*\({HST_ZP:.4f}\).*over "
                       rf"EXPTIME 2000 s, counts have zero point {HST_ZP + 8.2526:.4f}"):
        _zero_point(header)


@pytest.mark.parametrize(("bunit", "zero_point"), [("nJy", 31.4), ("uJy", 23.9), ("mJy", 16.4),
                                                   ("nanomaggies", 22.5), ("nmgy", 22.5)])
def test_flux_density_units_give_their_ab_zero_point(bunit, zero_point):
    assert _zero_point({"BUNIT": bunit})[0] == pytest.approx(zero_point, abs=1e-3)


def test_header_numbers_written_as_strings_are_read():
    assert _zero_point({"MAGZERO": "30.0"})[:2] == (30.0, 1.0)
    with pytest.raises(PreparationError, match="BUNIT 'MJy/sr' is not a flux density"):
        _zero_point({"BUNIT": "MJy/sr"})


def test_only_a_sky_wcs_gives_a_pixel_scale(tmp_path):
    """CDELT1 = 1 without CTYPE or CUNIT counts pixels: read as degrees it made a 1"/px cutout
    3600"/px and its resampling a 96 TiB allocation. Angular CUNITs do say the scale."""
    from lensbench.datasets.prepare import pixel_scale_of

    assert pixel_scale_of(fits.Header({"CDELT1": 1.0, "CDELT2": 1.0}), "x") == (None, "unknown")
    linear = fits.Header({"CDELT1": 0.2, "CDELT2": 0.2, "CUNIT1": "arcsec", "CUNIT2": "arcsec"})
    assert pixel_scale_of(linear, "x") == (pytest.approx(0.2), "WCS")
    header = fits.Header({"CDELT1": 1.0, "CDELT2": 1.0, "MAGZERO": 22.5})
    fits.PrimaryHDU(np.ones((16, 16)), header).writeto(tmp_path / "lin.fits")
    with pytest.raises(PreparationError, match=r"lin\.fits: no pixel scale \(no celestial WCS"):
        prepare_cutout(tmp_path / "lin.fits", ModelInputs(("g",), 0.2, (16, 16)), cutout_id="l")
    # a scale in the wrong unit: each input pixel would cover 18 x 18 model pixels
    coarse = wcs_header(3.6, 16)
    coarse["MAGZERO"] = 22.5
    fits.PrimaryHDU(np.ones((16, 16)), coarse).writeto(tmp_path / "coarse.fits")
    with pytest.raises(PreparationError, match=r"coarse\.fits: its pixels of 3\.6\" \(WCS\) "
                       r"would each cover 18 x 18 of the model's 0\.2\" pixels"):
        prepare_cutout(tmp_path / "coarse.fits", ModelInputs(("g",), 0.2, (16, 16)),
                       cutout_id="c")


def test_a_file_cut_short_or_a_tiny_cutout_is_one_named_bad_cutout(tmp_path):
    header = fits.Header({"MAGZERO": 22.5, "PIXSCALE": 0.2, "BANDS": "g,r"})
    fits.PrimaryHDU(np.ones((2, 16, 16)), header).writeto(tmp_path / "whole.fits")
    (tmp_path / "cut.fits").write_bytes((tmp_path / "whole.fits").read_bytes()[:2880 + 1000])
    with pytest.raises(PreparationError, match=r"cut\.fits: unreadable FITS"):
        prepare_cutout(tmp_path / "cut.fits", GR, cutout_id="c")
    # a (2, 1, 1) cube is a cube of two 1x1 planes (np.squeeze made it a line of 2 values)
    fits.PrimaryHDU(np.ones((2, 1, 1)), header).writeto(tmp_path / "dot.fits")
    with pytest.raises(PreparationError, match=r"dot\.fits: its data would fill 1 of the "
                       r"model's 16x16 stamp pixels .* at least 50% must hold the cutout's data"):
        prepare_cutout(tmp_path / "dot.fits", GR, cutout_id="d")
    fits.PrimaryHDU(np.ones((2, 11, 11)), header).writeto(tmp_path / "small.fits")
    with pytest.raises(PreparationError, match="its data would fill 121 of"):
        prepare_cutout(tmp_path / "small.fits", GR, cutout_id="s")
    fits.PrimaryHDU(np.ones((2, 12, 12)), header).writeto(tmp_path / "enough.fits")
    assert prepare_cutout(tmp_path / "enough.fits", GR, cutout_id="e")[1].padding_pixels == \
        16 * 16 - 12 * 12


def test_pixels_without_data_are_sky_noise_and_counted(tmp_path):
    """Zero weight (a chip gap along the border) and NaN pixels: no data, filled with noise of
    the rms map's sigma like padding, counted; the rms of the data sets the padding's sigma."""
    rng = np.random.default_rng(4)
    files = {}
    for band in ("g", "r"):
        header = fits.Header({"BUNIT": "nanomaggy", "PIXSCALE": 0.2})
        data = rng.normal(0.0, 2.0, (14, 14))
        data[5, 5] = np.nan
        weight = np.full((14, 14), 0.25)
        weight[:, :3] = 0.0  # the left 3 columns lie in a chip gap
        fits.PrimaryHDU(data, header).writeto(tmp_path / f"m_{band}.fits")
        fits.PrimaryHDU(weight, header).writeto(tmp_path / f"m_{band}.wht.fits")
        files[band] = {"sci": tmp_path / f"m_{band}.fits",
                       "weight": tmp_path / f"m_{band}.wht.fits"}
    image, record = prepare_cutout(files, GR, cutout_id="m")
    assert np.isfinite(image).all()
    assert record.masked_pixels == 14 * 3 + 1 and record.noise_source == "rms map"
    assert record.noise_sigma == "g=2,r=2"
    assert image[:, 1:15, 1:4].std() == pytest.approx(2.0, rel=0.3)  # the gap: noise, sigma 2


def test_the_cutout_centre_lies_half_a_pixel_off_when_parities_differ_and_is_recorded(tmp_path):
    """A 17x17 cutout centred on its object into a 16x16 stamp: whole pixels are cut, so the
    object sits +0.5 px from the stamp's centre on each axis, recorded; resampled cutouts go
    straight onto the stamp's grid and stay centred."""
    header = fits.Header({"BUNIT": "nanomaggy", "PIXSCALE": 0.2, "BANDS": "g,r"})
    odd = np.zeros((2, 17, 17))
    odd[:, 8, 8] = 100.0  # the object, at the cutout's centre
    fits.PrimaryHDU(odd, header).writeto(tmp_path / "odd.fits")
    image, record = prepare_cutout(tmp_path / "odd.fits", GR, cutout_id="o")
    assert (record.centre_dx, record.centre_dy) == (0.5, 0.5)
    assert image[0, 8, 8] == 100.0  # the stamp centre is at 7.5: the object at +0.5
    fits.PrimaryHDU(odd[:, :15, :15], header).writeto(tmp_path / "pad.fits")  # 15 -> 16
    assert (lambda r: (r.centre_dx, r.centre_dy))(
        prepare_cutout(tmp_path / "pad.fits", GR, cutout_id="p")[1]) == (-0.5, -0.5)
    fine = wcs_header(0.1, 41)
    fine["BUNIT"], fine["BANDS"] = "nanomaggy", "g,r"
    point = np.zeros((2, 41, 41))
    point[:, 20, 20] = 100.0
    fits.PrimaryHDU(point, fine).writeto(tmp_path / "fine.fits")
    image, record = prepare_cutout(tmp_path / "fine.fits", GR, cutout_id="f")
    assert (record.centre_dx, record.centre_dy) == (0.0, 0.0)
    assert record.crop_pixels == 20 * 20 - 16 * 16
    # the point at the centre of 41 pixels of 0.1" spreads evenly over the central 2x2
    np.testing.assert_allclose(image[0, 7:9, 7:9], 25.0, rtol=1e-6)


def test_the_sky_orientation_and_the_border_sky_level_are_recorded(tmp_path):
    rng = np.random.default_rng(2)
    header = wcs_header(0.2, 16, rotation_deg=30)
    header["BUNIT"], header["BANDS"] = "nanomaggy", "g,r"
    cube = rng.normal(0.0, 1.0, (2, 16, 16))
    cube[1] += 3.0  # band r keeps a sky level of 3 sigma
    fits.PrimaryHDU(cube, header).writeto(tmp_path / "sky.fits")
    _, record = prepare_cutout(tmp_path / "sky.fits", GR, cutout_id="s")
    assert record.north_angle == pytest.approx(30.0) and record.east_left == "True"
    assert (record.north_angle, record.east_left) == pytest.approx(_north_east_by_astropy(header),
                                                                    abs=1e-3)
    levels = {band: float(v) for band, v in (p.split("=") for p in record.sky_level.split(","))}
    assert abs(levels["g"]) < 0.5 and levels["r"] == pytest.approx(3.0, abs=0.5)
    cube[1] += 4.0  # 7 sigma: beyond SKY_LEVEL_LIMIT, named
    fits.PrimaryHDU(cube, header).writeto(tmp_path / "sky7.fits")
    assert prepare_cutout(tmp_path / "sky7.fits", GR, cutout_id="s7")[1].sky_not_subtracted \
        == "r"
    assert record.sky_not_subtracted == ""  # 3 sigma is not beyond it
    mirrored = wcs_header(0.2, 16)
    mirrored["CD1_1"] = -mirrored["CD1_1"]  # East to the right: a mirror image of the sky
    mirrored["BUNIT"], mirrored["BANDS"] = "nanomaggy", "g,r"
    fits.PrimaryHDU(cube, mirrored).writeto(tmp_path / "mirror.fits")
    _, record = prepare_cutout(tmp_path / "mirror.fits", GR, cutout_id="m")
    assert (record.north_angle, record.east_left) == (0.0, "False")
    assert _north_east_by_astropy(mirrored) == (pytest.approx(0.0, abs=1e-3), "False")


def _north_east_by_astropy(header) -> tuple[float, str]:
    """(North's angle from +y towards +x, whether East lies counter-clockwise of North) the long
    way, independent of the CD matrix algebra: astropy's full transform of the centre and of
    points 1" North and 1" East of it."""
    import astropy.units as u
    from astropy.wcs import WCS

    wcs = WCS(header)
    centre = wcs.pixel_to_world(7.5, 7.5)
    steps = [np.subtract(wcs.world_to_pixel(centre.directional_offset_by(angle, 1 * u.arcsec)),
                         7.5) for angle in (0 * u.deg, 90 * u.deg)]  # position angles E of N
    (nx, ny), (ex, ey) = steps
    return math.degrees(math.atan2(nx, ny)), str(bool(nx * ey - ny * ex > 0))


@pytest.fixture(scope="module")
def saved_finder(tmp_path_factory):
    """pixel-logreg on g,r 16x16 at 0.2"/px, saved with its contract (model.lbmodel)."""
    from lensbench.baselines.persistence import make_contract, save_model
    from lensbench.baselines.reference import PixelLogisticRegression

    X, y, info = _tiny_gr_task(64, 3.0)
    method = PixelLogisticRegression().fit(X, y, info)
    path = tmp_path_factory.mktemp("saved") / "model.lbmodel"
    return save_model(method, path, make_contract(method, info))


def test_a_cube_scanned_as_it_is_whose_header_says_otherwise_is_a_bad_cutout(saved_finder,
                                                                              tmp_path):
    """Without --prepare a cube is taken to be in the model's bands, nanomaggies and pixel
    scale. A header that says otherwise made silently wrong scores (planes reversed: every
    non-lens a lens); it is now a bad cutout naming what the header says, and --prepare reads
    it right."""
    rng = np.random.default_rng(6)
    cube = rng.normal(0.0, 1.0, (2, 16, 16))
    folder = tmp_path / "cubes"
    folder.mkdir()
    headers = {
        "plain": {},
        "agrees": {"BANDS": "g,r", "BUNIT": "nanomaggy", "PIXSCALE": 0.2},
        "reversed": {"BANDS": "r,g"},
        "zp30": {"MAGZERO": 30.0},
        "coarse": {"PIXSCALE": 0.263},
        "adu": {"BUNIT": "adu"},
    }
    for name, cards in headers.items():
        data = cube[::-1] if name == "reversed" else cube
        fits.PrimaryHDU(data, fits.Header(cards)).writeto(folder / f"{name}.fits")
    out = tmp_path / "as-is.csv"
    scan(saved_finder, folder, out, progress=False)
    scored = {r["id"]: r["score"] for r in read_csv(out)}
    assert set(scored) == {"plain", "agrees"} and scored["plain"] == scored["agrees"]
    reasons = {r["id"]: r["reason"] for r in read_csv(tmp_path / "as-is.bad.csv")}
    assert "its header says bands r,g (the model takes g,r, in that order): pass --prepare" \
        in reasons["reversed"]
    assert "zero point 30 from MAGZERO (the model takes nanomaggies, zero point 22.5)" \
        in reasons["zp30"]
    assert "pixels of 0.263\" from PIXSCALE (the model takes 0.2\")" in reasons["coarse"]
    assert "values in BUNIT 'adu' (the model takes nanomaggies)" in reasons["adu"]
    # prepared, the reversed cube's planes are put in the model's order: the plain cube's score
    prepared = tmp_path / "prepared.csv"
    scan(saved_finder, folder, prepared, progress=False, prepare=True, zero_point=22.5,
         pixel_scale=0.2)
    again = {r["id"]: float(r["score"]) for r in read_csv(prepared)}
    # the same pixels; batches of other cutouts move the last digits of BLAS sums
    assert again["reversed"] == pytest.approx(float(scored["plain"]), rel=1e-6)
    assert again["plain"] == pytest.approx(float(scored["plain"]), rel=1e-6)


def test_compressed_cutouts_and_subfolders_are_read_when_asked(saved_finder, tmp_path, capsys):
    """fpack'ed .fits.fz cutouts (lossless here) score as their .fits; a folder's subfolders are
    read with --recursive (ids are paths in it), and otherwise a note says they were not."""
    rng = np.random.default_rng(8)
    cube = rng.normal(0.0, 1.0, (2, 16, 16)).astype(np.float32)
    folder = tmp_path / "cutouts"
    (folder / "night2").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    fits.PrimaryHDU(cube).writeto(folder / "a.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(cube, quantize_level=0.0,
                                                       compression_type="GZIP_2")]
                 ).writeto(folder / "b.fits.fz")
    fits.PrimaryHDU(cube).writeto(folder / "night2" / "a.fits")
    fits.PrimaryHDU(cube).writeto(folder / ".hidden" / "c.fits")
    common = ["--model", str(saved_finder), "--cutouts", str(folder), "--no-progress",
              "--workdir", str(tmp_path / "w")]
    assert cli.main(["scan", *common, "--out", str(tmp_path / "top.csv")]) == 0
    assert "note: 1 FITS file(s) in subfolders of" in capsys.readouterr().err
    top = {r["id"]: r["score"] for r in read_csv(tmp_path / "top.csv")}
    assert set(top) == {"a", "b"} and top["a"] == top["b"]
    assert cli.main(["scan", *common, "--recursive", "--out", str(tmp_path / "all.csv")]) == 0
    assert "note:" not in capsys.readouterr().err
    every = {r["id"]: float(r["score"]) for r in read_csv(tmp_path / "all.csv")}
    assert every == pytest.approx({"a": float(top["a"]), "b": float(top["a"]),
                                   "night2/a": float(top["a"])}, rel=1e-6)
