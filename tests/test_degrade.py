"""The public degradation (datasets/degrade.py, issue 23.4): `degrade`, `bench degrade`, and the
real suite's SLACS lenses reproduced by the command line, prepared in every layout and scanned
with the suite's own saved models to the suite's scores (issue 23.5)."""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil

import numpy as np
import pytest
from astropy.io import fits
from lensbench.bench import cli
from lensbench.datasets.config import LENS_COLOURS, SOURCE_COLOURS
from lensbench.datasets.degrade import (
    colour_factor,
    degrade,
    degrade_image,
    matching_kernel,
    survey_sigma,
    to_nanomaggies,
)
from lensbench.datasets.prepare import ModelInputs, prepare_cutout
from lensbench.datasets.surveys import get_survey


def gaussian(n: int, sigma_px: float, flux: float) -> np.ndarray:
    yy, xx = np.indices((n, n)) - (n - 1) / 2
    image = np.exp(-0.5 * (xx**2 + yy**2) / sigma_px**2)
    return image * flux / image.sum()


def test_degrade_keeps_flux_and_gives_lens_and_arcs_their_colours():
    """Noise-free: each band's total is the input flux in nanomaggies times the colour factor,
    the lens light's (LENS_COLOURS) or the arcs' (SOURCE_COLOURS)."""
    lens, arcs = gaussian(160, 6.0, 500.0), gaussian(160, 3.0, 100.0)  # counts, ZP 25
    bands = ["g", "r", "i", "z"]
    out = degrade(lens + arcs, 0.05, 25.0, "hsc", bands, arc_image=arcs, seed=None,
                  stamp_size=64)
    assert out.shape == (4, 64, 64) and out.dtype == np.float32
    nmgy = to_nanomaggies(25.0)
    for k, band in enumerate(bands):
        expected = nmgy * (500.0 * colour_factor(LENS_COLOURS, band)
                           + 100.0 * colour_factor(SOURCE_COLOURS, band))
        assert out[k].sum() == pytest.approx(expected, rel=0.01)
    # one plane per band is taken as it is
    planes = np.stack([lens * f for f in (1.0, 2.0)])
    out = degrade(planes, 0.05, 22.5, "hsc", ["r", "i"], seed=None, stamp_size=64)
    assert out[1].sum() == pytest.approx(2 * out[0].sum(), rel=1e-6)
    assert out[0].sum() == pytest.approx(500.0, rel=0.01)


def test_degrade_noise_is_the_surveys_and_reproducible_by_seed():
    blank = np.zeros((200, 200))
    survey = get_survey("hsc").select(["i"])
    a = degrade(blank, 0.05, 22.5, survey, seed=7, stamp_size=64)
    assert np.array_equal(a, degrade(blank, 0.05, 22.5, survey, seed=7, stamp_size=64))
    assert not np.array_equal(a, degrade(blank, 0.05, 22.5, survey, seed=8, stamp_size=64))
    sigma = survey_sigma(np.zeros((1, 64, 64)), survey)[0, 0, 0]
    assert a.std() == pytest.approx(sigma, rel=0.05)
    # the input's own noise is part of the survey's: only the missing variance is added
    some = degrade(blank, 0.05, 22.5, survey, seed=7, stamp_size=64, native_variance=sigma**2)
    assert 0 < some.std() < a.std()
    noisier = degrade(blank, 0.05, 22.5, survey, seed=7, stamp_size=64,
                      native_variance=1e4 * sigma**2)
    assert not noisier.any()


def test_noise_budget_is_the_variance_degrade_leaves_and_photons_keep_the_top_up_right():
    """``noise_budget``: realisations of an input's own noise (sky plus its photons, variance V
    per pixel), degraded with ``native_variance=V``, vary as the larger of the survey's
    variance and the carried one, pixel by pixel. With the sky's variance alone as
    ``native_variance`` the top-up adds what the photons already gave: noisier near the
    object, as the real splits' SLACS lenses were before ``own_photon_noise``."""
    from lensbench.datasets.degrade import noise_budget, noise_variance_with_photons

    survey = get_survey("hsc").select(["i"])
    # 4 x 4 input pixels to one HSC pixel: the rebinned noise stays white, so the variance
    # degrade propagates (squared weights, then the PSF's squares) is the exact one.
    scale = survey.pixel_scale / 4
    galaxy = gaussian(192, 14.0, 4000.0)  # nMgy: bright, wide against HSC's PSF
    sky_sigma, gain = 2e-3, 5000.0  # its photons beat HSC's own noise near the centre
    variance = noise_variance_with_photons(galaxy, sky_sigma, gain)
    np.testing.assert_allclose(variance, sky_sigma**2 + galaxy / gain)
    args = dict(stamp_size=32, noise_correlation=1.0)
    budget = noise_budget(galaxy, scale, 22.5, survey, native_variance=variance, **args)
    sky_only = noise_budget(galaxy, scale, 22.5, survey, native_variance=sky_sigma**2, **args)
    least = np.maximum(budget.survey, budget.carried)[0]
    centre = (slice(13, 19), slice(13, 19))
    assert (budget.carried[0][centre] > 1.3 * budget.survey[0][centre]).all()
    expected = degrade(galaxy, scale, 22.5, survey, seed=None, **args)[0]
    rng = np.random.default_rng(2)
    for native, predicted in ((variance, least),
                              (sky_sigma**2, budget.carried[0] + np.clip(
                                  sky_only.survey[0] - sky_only.carried[0], 0, None))):
        draws = np.stack([degrade(galaxy + rng.normal(size=galaxy.shape) * np.sqrt(variance),
                                  scale, 22.5, survey, seed=rng, native_variance=native,
                                  **args)[0] for _ in range(400)])
        measured = ((draws - expected) ** 2).mean(axis=0)
        assert measured[centre].mean() / predicted[centre].mean() == pytest.approx(1, rel=0.1)
        assert measured[:4, :4].mean() / predicted[:4, :4].mean() == pytest.approx(1, rel=0.1)
    assert predicted[centre].mean() > 1.3 * least[centre].mean()  # the sky-only top-up's excess


def write_image(path, data, **keys):
    header = fits.Header()
    for key, value in keys.items():
        header[key] = value
    fits.PrimaryHDU(data, header).writeto(path)
    return path


def test_bench_degrade_writes_per_band_files_and_cubes_with_their_headers(tmp_path, capsys):
    image = write_image(tmp_path / "lens.fits", gaussian(120, 5.0, 2000.0), MAGZERO=26.0,
                        CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRPIX1=60.5, CRPIX2=60.5,
                        CRVAL1=150.0, CRVAL2=2.0, CD1_1=-0.05 / 3600, CD1_2=0.0, CD2_1=0.0,
                        CD2_2=0.05 / 3600)
    out = tmp_path / "out"
    assert cli.main(["degrade", "--image", str(image), "--survey", "hsc", "--bands", "g,i",
                     "--stamp-size", "32", "--per-band-files", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["lens_g.fits", "lens_g.rms.fits",
                                                      "lens_i.fits", "lens_i.rms.fits"]
    with fits.open(out / "lens_i.fits") as hdul:
        header, data = hdul[0].header, hdul[0].data
    assert (header["BUNIT"], header["MAGZERO"], header["FILTER"], header["SURVEY"]) == (
        "nanomaggy", 22.5, "i", "hsc")
    assert header["PIXSCALE"] == pytest.approx(0.168)
    assert header["CD2_2"] * 3600 == pytest.approx(0.168) and header["CRVAL1"] == pytest.approx(
        150.0)
    assert data.shape == (32, 32) and data.sum() == pytest.approx(
        2000.0 * to_nanomaggies(26.0), rel=0.1)
    rms = fits.getdata(out / "lens_i.rms.fits")
    assert (rms > 0).all() and rms[16, 16] > rms[0, 0]  # source Poisson noise on top of sky
    assert cli.main(["degrade", "--image", str(image), "--survey", "hsc", "--bands", "g,i",
                     "--stamp-size", "32", "--out", str(tmp_path / "cube")]) == 0
    with fits.open(tmp_path / "cube" / "lens.fits") as hdul:
        assert hdul[0].data.shape == (2, 32, 32) and hdul[0].header["BANDS"] == "g,i"
        assert np.array_equal(hdul["RMS"].data[1], rms)
        assert np.array_equal(hdul[0].data[1], data)  # same seed, same pixels
    capsys.readouterr()
    bare = write_image(tmp_path / "bare.fits", np.ones((50, 50)), PIXSCALE=0.05)
    assert cli.main(["degrade", "--image", str(bare), "--survey", "hsc", "--out",
                     str(tmp_path / "x")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("bench: error: ") and "bare.fits" in line and "--zeropoint" in line
    edge = tmp_path / "edge.fits"  # its peak on its border: no centre to match
    fits.PrimaryHDU(np.pad(np.ones((2, 2)), ((0, 0), (0, 3)))).writeto(edge)
    for psf in (tmp_path / "missing.fits", edge):
        assert cli.main(["degrade", "--image", str(image), "--survey", "hsc", "--psf", str(psf),
                         "--out", str(tmp_path / "x")]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"bench: error: --psf {psf}"), line
    assert cli.main(["degrade", "--image", str(image), "--image", str(bare), "--arc", str(image),
                     "--survey", "hsc", "--out", str(tmp_path / "x")]) == 2
    assert "--arc is given 1 times for 2 --image" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    for flag, value in (("--pixel-scale", "-0.05"), ("--zeropoint", "nan"),
                        ("--effective-gain", "0")):
        with pytest.raises(SystemExit) as stop:  # argparse's usage error, naming the flag
            cli.main(["degrade", "--image", str(image), flag, value, "--survey", "hsc",
                      "--out", str(tmp_path / "x")])
        assert stop.value.code == 2
        assert f"argument {flag}: expected a finite number" in capsys.readouterr().err


# ------------------------------------------------------------------------------ correlated noise
# A drizzled HST image's noise: neighbours correlate 0.20-0.25, diagonals up to 0.07 (the SLACS
# cutouts' borders, scripts/slacs_noise.py --correlation).
DRIZZLED = np.array([[0.05, 0.24, 0.05], [0.22, 1.0, 0.22], [0.05, 0.24, 0.05]])


def block_factor(correlation: np.ndarray, block: int) -> float:
    """Closed form: the variance of ``block`` x ``block`` sums of noise with this (3 x 3)
    correlation over block**2 pixel variances."""
    return sum((block - abs(dy)) * (block - abs(dx)) * correlation[dy + 1, dx + 1]
               for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / block**2


def test_the_correlation_factor_of_whole_blocks_is_the_block_sum_closed_form():
    """4 x 4 input pixels to a survey pixel and no PSF: each survey pixel is a 4 x 4 block sum,
    so the factor is the closed form's; white noise keeps the white model exact through any
    PSF (the blocks are disjoint)."""
    from lensbench.datasets.degrade import degraded_correlation_factor

    args = dict(native_shape=(64, 64), in_scale=0.042, out_scale=0.168, canvas=16)
    assert degraded_correlation_factor(DRIZZLED, kernel=np.ones((1, 1)), **args) == \
        pytest.approx(block_factor(DRIZZLED, 4), rel=1e-9)
    psf = gaussian(9, 1.2, 1.0)
    assert degraded_correlation_factor(np.ones((1, 1)), kernel=psf, **args) == \
        pytest.approx(1.0, rel=1e-9)
    with pytest.raises(ValueError, match="odd square"):
        degraded_correlation_factor(np.ones((2, 2)), kernel=psf, **args)


def test_the_carried_variance_of_correlated_noise_is_what_degrading_its_realisations_gives():
    """HST's 0.05" pixels to HSC's 0.168" through HSC's PSF: the variance ``noise_budget``
    carries for noise of a drizzled image's correlation is the one its realisations have after
    ``degrade`` (Monte Carlo, 600 fields). The white model alone (a factor of 1) falls short even
    for white noise: survey pixels that share an input pixel covary."""
    from lensbench.datasets.degrade import (
        correlated_noise_field,
        degraded_correlation_factor,
        noise_budget,
    )

    survey = get_survey("hsc").select(["i"])
    size, native, scale = 36, 160, 0.05
    canvas = size + 2 * (survey_psf_kernel(survey).shape[0] // 2)  # as degrade renders
    rng = np.random.default_rng(4)
    centre = (slice(8, 28), slice(8, 28))  # 3.4" across, well inside the input's 8"
    blank = np.zeros((native, native))
    for correlation in (DRIZZLED, np.ones((1, 1))):
        carried = noise_budget(blank, scale, 22.5, survey, native_variance=1.0,
                               noise_correlation=correlation, stamp_size=size).carried[0]
        draws = np.stack([degrade(correlated_noise_field(blank.shape, correlation, rng), scale,
                                  22.5, survey, seed=None, stamp_size=size)[0]
                          for _ in range(600)])
        # 600 fields: the mean variance of these strongly correlated pixels to about 1.5%.
        assert draws[(slice(None), *centre)].var(axis=0).mean() == pytest.approx(
            carried[centre].mean(), rel=0.05)
    white_model = noise_budget(blank, scale, 22.5, survey, native_variance=1.0,
                               stamp_size=size).carried[0]
    assert (carried / white_model)[centre] == pytest.approx(degraded_correlation_factor(
        np.ones((1, 1)), blank.shape, scale, survey.pixel_scale, canvas,
        survey_psf_kernel(survey)), rel=1e-6)
    assert (carried / white_model)[centre].min() > 1.1


def survey_psf_kernel(survey):
    from lensbench.datasets.degrade import survey_psf_kernels

    (kernel,) = survey_psf_kernels(survey)
    return kernel


def test_the_border_correlation_sees_the_noise_not_the_borders_structure():
    """A drizzled-like noise field (``correlated_noise_field``) under a galaxy's halo and a sky
    gradient: the border's correlation is the field's within the measurement's noise, where the
    raw border's block sums (``block_sum_factor``, the real splits' measure before real-hsc v12)
    also count the structure and read it as correlation."""
    from lensbench.datasets.degrade import (
        block_sum_factor,
        border_correlation,
        border_noise,
        correlated_noise_field,
    )

    size, sigma = 198, 0.01
    noise = sigma * correlated_noise_field((size, size), DRIZZLED, np.random.default_rng(5))
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    structure = 40 * sigma * np.exp(-np.hypot(x, y) / 25.0) + 1e-4 * x
    np.testing.assert_allclose(border_correlation(noise), DRIZZLED, atol=0.03)
    np.testing.assert_allclose(border_correlation(noise + structure), DRIZZLED, atol=0.03)
    assert block_sum_factor(noise) == pytest.approx(block_factor(DRIZZLED, 4), rel=0.15)
    assert block_sum_factor(noise + structure) > 1.5 * block_factor(DRIZZLED, 4)
    _, measured_sigma, correlation = border_noise(noise)
    assert measured_sigma == pytest.approx(sigma, rel=0.1)
    np.testing.assert_array_equal(correlation, border_correlation(noise))


def test_bench_degrade_takes_a_noise_correlation_map_from_fits(tmp_path, capsys):
    """``--noise-correlation`` with a FITS map gives the pixels ``degrade`` gives with that
    map; a map that is not an odd square is refused, naming the file, before anything is
    written."""
    from lensbench.datasets.degrade import degrade_files

    image = write_image(tmp_path / "lens.fits", gaussian(120, 5.0, 2000.0), MAGZERO=26.0,
                        PIXSCALE=0.05)
    cf = tmp_path / "cf.fits"
    fits.PrimaryHDU(DRIZZLED * 3.0).writeto(cf)  # any normalisation: the centre is lag 0
    args = ["degrade", "--image", str(image), "--survey", "hsc", "--bands", "i",
            "--stamp-size", "24", "--rms", "0.02", "--noise-correlation"]
    assert cli.main([*args, str(cf), "--out", str(tmp_path / "map")]) == 0
    direct = degrade_files([image], tmp_path / "direct", "hsc", ["i"], stamp_size=24,
                           rms=[0.02], noise_correlation=[None])
    with_map = fits.getdata(tmp_path / "map" / "lens.fits")
    data, header = fits.getdata(image), fits.getheader(image)
    expected = degrade(data, 0.05, header["MAGZERO"], "hsc", ["i"], seed=0, stamp_size=24,
                       native_variance=0.02**2, noise_correlation=DRIZZLED)
    np.testing.assert_allclose(with_map, expected, rtol=1e-6)
    assert not np.allclose(fits.getdata(direct[0]), expected, rtol=1e-3)  # its border: no noise
    capsys.readouterr()
    even = tmp_path / "even.fits"
    fits.PrimaryHDU(np.ones((2, 2))).writeto(even)
    assert cli.main([*args, str(even), "--out", str(tmp_path / "x")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"--noise-correlation {even}" in line and "odd square" in line
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    with pytest.raises(SystemExit):
        cli.main([*args, str(tmp_path / "missing.fits"), "--out", str(tmp_path / "x")])
    assert "expected a finite number > 0 or an existing file" in capsys.readouterr().err


# ------------------------------------------------------------------------------ real files


@pytest.fixture(scope="module")
def slacs_hsc(tmp_path_factory, real_data):
    """The SLACS lenses (lens light + arcs as the suite splits them) written as nanomaggy FITS
    with their HST WCS, and degraded to HSC g,r,i,z 64x64 by `bench degrade` with the real
    suite's seed, in load order (one noise generator, as the suite's split does), given the HST
    PSF file as the suite matches it: per-band files with rms maps, and cubes."""
    from lensbench.datasets import known_lenses, registry

    real_data("slacs", "cosmos")
    root = tmp_path_factory.mktemp("slacs")
    args = []
    # As the suite loads them: cleaned of cosmic rays and their sky fitted where its spec says so.
    spec = real_hsc().real_lenses
    lenses = known_lenses.load_slacs(clean_cosmic_rays=spec.get("clean_cosmic_rays", False),
                                     sky_beside_halo=spec.get("sky_beside_halo", False))
    for lens in lenses:
        with fits.open(registry.fetch(lens.file)) as hdul:
            header = fits.Header([card for card in hdul["SCI"].header.cards if card.keyword in (
                "CTYPE1", "CTYPE2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2",
                "CD2_1", "CD2_2")])
        header["BUNIT"] = "nanomaggy"
        fits.PrimaryHDU(lens.image, header).writeto(root / f"{lens.name}.fits")
        fits.PrimaryHDU(lens.arcs, header).writeto(root / f"{lens.name}.arc.fits")
        args += ["--image", str(root / f"{lens.name}.fits"),
                 "--arc", str(root / f"{lens.name}.arc.fits"),
                 "--rms", repr(math.sqrt(lens.noise_variance))]
        if spec.get("measured_noise_correlation", False):  # the map, as a FITS file
            fits.PrimaryHDU(lens.noise_correlation).writeto(root / f"{lens.name}.cf.fits")
            args += ["--noise-correlation", str(root / f"{lens.name}.cf.fits")]
        else:
            args += ["--noise-correlation", repr(lens.block_sum_factor)]
        if spec.get("own_photon_noise", False):  # its own photons beside the border's sky
            args += ["--effective-gain", repr(lens.effective_gain)]
    common = ["degrade", *args, "--survey", "hsc", "--bands", "g,r,i,z", "--stamp-size", "64",
              "--seed", str(real_hsc().real_lenses["seed"])]
    if real_hsc().real_lenses.get("match_native_psf", False):  # the PSF file as it is stored
        common += ["--psf", str(registry.fetch(known_lenses.ACS_F814W_PSF)),
                   "--psf-scale", repr(known_lenses.ACS_F814W_PSF_SCALE)]
    assert cli.main([*common, "--per-band-files", "--out", str(root / "bands")]) == 0
    assert cli.main([*common, "--out", str(root / "cubes")]) == 0
    return root, [lens.name for lens in lenses]


def real_hsc():
    from lensbench.bench.tasks import all_tasks

    return all_tasks()["real-hsc"]


def band_files(root, name):
    return {b: {"sci": root / "bands" / f"{name}_{b}.fits",
                "rms": root / "bands" / f"{name}_{b}.rms.fits"} for b in "griz"}


def test_bench_degrade_reproduces_the_real_suites_slacs_pixels(slacs_hsc, real_lens_splits):
    """The real suite renders SLACS with the same public function: the command line given the
    same images, noise and seed writes exactly the pixels of the real-hsc split's lenses."""
    from lensbench.datasets import known_lenses

    root, names = slacs_hsc
    split = real_lens_splits(real_hsc())  # ensure_real_lens_split, once per session (conftest)
    rows = np.flatnonzero(split.truth["kind"] == 1)
    assert len(rows) == len(names) >= 5
    for row in rows:
        name = names[int(split.truth["object_index"][row])]
        written = np.stack([fits.getdata(band_files(root, name)[b]["sci"]) for b in "griz"])
        assert np.array_equal(written, split.images([row])[0]), name
    assert known_lenses.degrade is degrade


def test_slacs_files_from_bench_degrade_prepare_in_every_layout(slacs_hsc, tmp_path):
    """The per-band files, the cube and a DES-style multi-extension file made from them prepare
    to the same pixels (what `bench degrade` wrote: a model at HSC's contract needs nothing
    done); to a model at 0.25"/px they are resampled with their flux kept."""
    root, names = slacs_hsc
    hsc = ModelInputs(("g", "r", "i", "z"), 0.168, (64, 64))
    for name in names:
        files = band_files(root, name)
        written = np.stack([fits.getdata(files[b]["sci"]) for b in "griz"])
        from_bands, record = prepare_cutout(files, hsc, cutout_id=name)
        assert np.array_equal(from_bands, written)
        assert (record.resampling, record.padding_pixels, record.crop_pixels) == ("none", 0, 0)
        assert record.zero_point_from == "g=BUNIT,r=BUNIT,i=BUNIT,z=BUNIT"
        from_cube, _ = prepare_cutout(root / "cubes" / f"{name}.fits", hsc, cutout_id=name)
        assert np.array_equal(from_cube, written)
        mef = tmp_path / f"{name}.mef.fits"
        hdus = [fits.PrimaryHDU()]
        for b in "zgri":  # any HDU order: FILTER says the band
            with fits.open(files[b]["sci"]) as hdul:
                hdus.append(fits.ImageHDU(hdul[0].data, hdul[0].header))
        fits.HDUList(hdus).writeto(mef)
        from_mef, _ = prepare_cutout(mef, hsc, cutout_id=name)
        assert np.array_equal(from_mef, written)
        # 64 x 0.168" = 43.008 x 0.25": 43 pixels, fully covered; the flux is kept
        coarse, record = prepare_cutout(files, ModelInputs(("g", "r", "i", "z"), 0.25, (43, 43)),
                                        cutout_id=name)
        assert (record.resampling, record.padding_pixels, record.crop_pixels) == (
            "rebin_flux", 0, 0)
        totals = written.astype(np.float64).sum(axis=(1, 2))
        assert np.allclose(coarse.sum(axis=(1, 2)), totals,
                           atol=1e-3 * np.abs(written).sum(axis=(1, 2)).max())


def test_scanning_the_degraded_slacs_files_gives_the_suites_scores(slacs_hsc, tmp_path,
                                                                   real_suite_smoke):
    """End to end: the real suite (real-hsc, smoke) fits xgboost and a one-epoch committee and
    saves them; `bench scan` of the per-band files with rms maps written by `bench degrade`,
    prepared to each saved model's contract, scores every SLACS lens as the suite did."""
    from lensbench.bench.runner import run_suite
    from lensbench.bench.tasks import get_suite

    root, names = slacs_hsc
    suite = dataclasses.replace(get_suite("real"), tasks=(real_hsc(),))
    # The workdir starts with the real-hsc splits the shared real-suite run made (conftest):
    # the run finds them by their keys rather than simulating and degrading them again.
    shutil.copytree(real_suite_smoke[0] / "splits", tmp_path / "w" / "splits",
                    ignore=lambda folder, names: [n for n in names if n.startswith("real-vis")])
    results = run_suite(suite, profile="smoke", seed=0, workdir=tmp_path / "w",
                        methods=["xgboost", "committee"],
                        params={"xgboost": {"n_estimators": 100, "n_jobs": 1},
                                "committee": {"max_epochs": 1, "members": 2, "tta": "none",
                                              "device": "cpu"}},
                        log=lambda _: None)
    split = next(p for p in (tmp_path / "w" / "splits").iterdir() if "-real-" in p.name)
    from lensbench.datasets.storage import load_split

    truth = load_split(split).truth
    lens_names = [names[int(k)] for k in truth["object_index"][truth["kind"] == 1]]
    for result in results:
        assert result.status == "ok", result.error
        suite_scores = {name: result.metrics[f"real/score/lens{k}"]
                        for k, name in enumerate(lens_names)}
        out = tmp_path / f"{result.method}.csv"
        assert cli.main(["scan", "--model", str(tmp_path / "w" / result.artifacts["model"]),
                         "--cutouts", str(root / "bands"), "--band-files", "{id}_{band}.fits",
                         "--rms-files", "{id}_{band}.rms.fits", "--out", str(out),
                         "--no-progress", "--workdir", str(tmp_path / "w")]) == 0
        with open(out, newline="") as f:
            scanned = {row["id"]: float(row["score"]) for row in csv.DictReader(f)}
        assert set(scanned) == set(suite_scores)
        with open(tmp_path / f"{result.method}.prepared.csv", newline="") as f:
            records = list(csv.DictReader(f))
        hsc = get_survey("hsc")  # the saved contract names the training PSF
        assert {r["model_psf_fwhm"] for r in records} == {",".join(
            f"{b}={hsc.band(b).psf_fwhm:.3g}" for b in "griz")}
        assert {r["resampling"] for r in records} == {"none"}
        # xgboost exactly; the committee to float rounding (torch's batch size differs)
        tolerance = 0.0 if result.method == "xgboost" else 1e-6
        for name, score in suite_scores.items():
            assert scanned[name] == pytest.approx(score, abs=tolerance), (result.method, name)


def _rms_radius(image: np.ndarray, scale: float) -> float:
    n = image.shape[-1]
    r2 = np.sum((np.indices(image.shape) - (n - 1) / 2) ** 2, axis=0) * scale**2
    return float(np.sqrt(np.sum(image * r2) / np.sum(image)))


def _gaussian(n: int, fwhm_pixels: float) -> np.ndarray:
    r2 = np.sum((np.indices((n, n)) - (n - 1) / 2) ** 2, axis=0)
    kernel = np.exp(-0.5 * r2 / (fwhm_pixels / 2.3548) ** 2)
    return kernel / kernel.sum()


def test_an_hst_point_source_degraded_with_its_own_psf_has_the_surveys_psf():
    """A point source seen through a native PSF (Gaussian 0.1" at 0.05"/px, as HST ACS F814W)
    and degraded to Euclid VIS: given its PSF, the cutout is the survey's PSF (the rms radius
    of the simulator's kernel, to 1%); without it, the survey's PSF on top of the native one
    (wider: mean squared radii add under convolution, closed form). A native PSF wider than the
    survey's needs no blur: the kernel is a delta. A PSF whose peak is on its edge, or that is
    not a finite 2-D image, is refused with its name."""
    from lensbench.datasets.degrade import centred_psf, survey_psf_kernels

    survey = get_survey("euclid-vis")
    band = survey.bands[0]
    native = _gaussian(41, 2.0)  # 0.1" at 0.05"/px
    star = np.zeros((201, 201))
    star[90:111, 90:111] = native[10:31, 10:31]
    target = survey_psf_kernels(survey)[0]
    matched = degrade_image(star, 0.05, survey, stamp_size=31, native_psf=native)[0]
    doubled = degrade_image(star, 0.05, survey, stamp_size=31)[0]
    assert _rms_radius(matched, 0.1) == pytest.approx(_rms_radius(target, 0.1), rel=0.01)
    # Convolutions add their mean squared radii: the survey's kernel, the native Gaussian
    # (2 sigma^2) and the survey pixel the rebinning integrates over (2 x 0.1^2 / 12).
    native_r2, pixel_r2 = 2 * (0.1 / 2.3548) ** 2, 2 * 0.1**2 / 12
    assert _rms_radius(doubled, 0.1) == pytest.approx(
        math.sqrt(_rms_radius(target, 0.1) ** 2 + native_r2 + pixel_r2), rel=0.03)
    assert matched.max() > 1.15 * doubled.max()
    assert matched.sum() == pytest.approx(star.sum(), rel=1e-3)
    # HST's PSF has faint wide wings (13% of the light beyond 0.2"): they make its rms radius
    # larger than VIS's, yet its core is narrower, and the core is matched.
    winged = 0.87 * native + 0.13 * _gaussian(41, 16.0)
    star[90:111, 90:111] = winged[10:31, 10:31]
    matched = degrade_image(star, 0.05, survey, stamp_size=31, native_psf=winged)[0]
    doubled = degrade_image(star, 0.05, survey, stamp_size=31)[0]
    assert matched.max() == pytest.approx(target.max() * star.sum(), rel=0.05)
    assert doubled.max() < 0.8 * matched.max()
    wide = matching_kernel(_gaussian(41, 8.0), 0.05, target, band.pixel_scale)
    assert wide[len(wide) // 2, len(wide) // 2] == 1.0 and wide.sum() == 1.0
    with pytest.raises(ValueError, match="edge"):
        centred_psf(np.eye(5)[::-1] * np.arange(5), "edge.fits")
    with pytest.raises(ValueError, match="bad.fits: a PSF must be a finite 2-D image"):
        centred_psf(np.full((5, 5), np.nan), "bad.fits")
