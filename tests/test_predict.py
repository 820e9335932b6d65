"""``bench predict`` on real files (issue 23.3, 23.5): a photo-z model saved by ``bench run``
predicts the real BOSS test catalogue, written as a CSV, with the suite's metrics to the last
digit; a lens-model regressor saved by ``bench run`` predicts theta_E for the simulated test
cutouts and for the real SLACS lenses (the modeling task's real split, written as one FITS file
per band) exactly as the suite predicted them. Plus the catalogue cleaning and the errors."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from lensbench.bench.cli import main
from lensbench.bench.results import read_results
from lensbench.bench.splits import version_prefix
from lensbench.bench.tasks import SUITES, get_suite

BANDS = ("u", "g", "r", "i", "z")
COLUMNS = ",".join([*(f"{b}=MAG_{b.upper()}" for b in BANDS),
                    *(f"err_{b}=MAGERR_{b.upper()}" for b in BANDS), "id=OBJID"])


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_catalogue(path: Path, X: np.ndarray, z: np.ndarray | None = None) -> Path:
    """A catalogue as a survey would give it: its own column names, numbers written exactly."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["OBJID", *(f"MAG_{b.upper()}" for b in BANDS),
                         *(f"MAGERR_{b.upper()}" for b in BANDS), *(["Z"] if z is not None
                                                                     else [])])
        for k, row in enumerate(X):
            writer.writerow([f"obj{k}", *map(repr, map(float, row)),
                             *([repr(float(z[k]))] if z is not None else [])])
    return path


# --------------------------------------------------------------------------- photo-z


@pytest.fixture(scope="module")
def photoz_run(tmp_path_factory, real_data):
    """knn-photoz trained by `bench run` on the smoke profile of photoz-boss (MLflow on)."""
    real_data("photoz_sdss_boss_dr10/")
    workdir = tmp_path_factory.mktemp("photoz")
    suite = SUITES["photoz"]
    boss = next(task for task in suite.tasks if task.name == "photoz-boss")
    with pytest.MonkeyPatch.context() as patch:  # this task only: the MGS one takes as long
        patch.setitem(SUITES, "photoz", replace(suite, tasks=(boss,)))
        assert main(["run", "--suite", "photoz", "--profile", "smoke", "--methods",
                     "knn-photoz", "--workdir", str(workdir)]) == 0
    [result] = read_results(workdir / "results.jsonl")
    return workdir, boss, result


def test_a_saved_photoz_model_reproduces_the_suites_metrics_on_the_real_catalogue(
        photoz_run, tmp_path, capsys):
    from lensbench.bench.suites.photoz import load_task_data

    workdir, task, result = photoz_run
    model = workdir / result.artifacts["model"]
    assert model.name == "model.lbmodel"
    data = load_task_data(task, "smoke", workdir)  # the split the run made, read back
    assert data.hashes["test"] == result.split_hashes["test"]
    catalogue = _write_catalogue(tmp_path / "boss.csv", data.X["test"], data.z["test"])
    out = tmp_path / "z.csv"
    assert main(["predict", "--model", str(model), "--catalog", str(catalogue), "--columns",
                 COLUMNS + ",z_spec=Z", "--out", str(out)]) == 0
    assert "600 of 600 galaxies predicted, 0 dropped" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "z.metrics.json").read_text())
    for key in ("sigma_nmad", "outlier_frac", "bias_mean", "bias_median", "sigma_iqr"):
        assert metrics[key] == result.metrics[key], key  # exactly: same predictions, same code
    rows = _rows(out)
    saved = np.load(workdir / result.artifacts["predictions"])
    np.testing.assert_array_equal([float(r["z_phot"]) for r in rows], saved["z_phot"])
    np.testing.assert_array_equal([float(r["z_phot_sigma"]) for r in rows],
                                  np.sqrt(saved["variance"]))  # knn-photoz has a variance
    assert [r["id"] for r in rows[:2]] == ["obj0", "obj1"]
    pdf = _rows(tmp_path / "z.pdf.csv")
    assert len(pdf) == 600 and len(pdf[0]) == 2 + 301  # row, id, the grid
    density = np.array([float(v) for k, v in pdf[0].items() if k not in ("row", "id")])
    assert np.trapezoid(density, np.linspace(0, 1.5, 301)) == pytest.approx(1.0, abs=1e-6)


def test_predict_drops_rows_as_the_suite_cleans_them_and_says_why(photoz_run, tmp_path):
    from lensbench.bench.suites.photoz import load_task_data

    workdir, task, result = photoz_run
    X = load_task_data(task, "smoke", workdir).X["test"][:6].copy()
    X[1, 2] = 99.0  # a sentinel r magnitude
    X[2, 5 + 1] = 1.7  # a g error above the suite's 1 mag
    X[3, 0] = np.nan
    X[4, 5 + 3] = -1.0  # a negative i error
    catalogue = _write_catalogue(tmp_path / "c.csv", X)
    out = tmp_path / "z.csv"
    assert main(["predict", "--model", str(workdir / result.artifacts["model"]), "--catalog",
                 str(catalogue), "--columns", COLUMNS, "--out", str(out)]) == 0
    assert [r["row"] for r in _rows(out)] == ["0", "5"]
    assert [(r["row"], r["id"], r["reason"]) for r in _rows(tmp_path / "z.dropped.csv")] == [
        ("1", "obj1", "sentinel_magnitude"), ("2", "obj2", "huge_error"),
        ("3", "obj3", "non_finite"), ("4", "obj4", "sentinel_error")]
    assert not (tmp_path / "z.metrics.json").exists()  # no spectroscopic z mapped


def test_predict_from_the_mlflow_run_and_from_a_fits_table(photoz_run, tmp_path):
    from astropy.table import Table
    from lensbench.bench.suites.photoz import load_task_data
    from lensbench.bench.tracking import default_tracking_uri, read_suite_runs

    workdir, task, result = photoz_run
    X = load_task_data(task, "smoke", workdir).X["test"][:50]
    table = Table({f"MAG_{b.upper()}": X[:, k] for k, b in enumerate(BANDS)}
                  | {f"MAGERR_{b.upper()}": X[:, 5 + k] for k, b in enumerate(BANDS)}
                  | {"OBJID": [f"obj{k}" for k in range(len(X))]})
    table.write(tmp_path / "c.fits")
    run = next(r for r in read_suite_runs(default_tracking_uri(workdir), "lensbench-photoz")
               if r["parent_run_id"])  # the (method, task) run, not the suite's
    out = tmp_path / "z.csv"
    assert main(["predict", "--model", run["run_id"], "--catalog", str(tmp_path / "c.fits"),
                 "--columns", COLUMNS, "--out", str(out), "--workdir", str(workdir)]) == 0
    saved = np.load(workdir / result.artifacts["predictions"])
    np.testing.assert_array_equal([float(r["z_phot"]) for r in _rows(out)], saved["z_phot"][:50])


@pytest.mark.parametrize("argv, message", [
    (["--columns", "u=MAG_U"], "--columns: the model needs g, r, i, z, err_u"),
    (["--columns", COLUMNS.replace("MAG_R", "MAG_RR")], "no column 'MAG_RR' (mapped to r)"),
    (["--columns", COLUMNS + ",y=MAG_Y"], "--columns: 'y' is not an input of the model"),
    (["--columns", "u"], "--columns: 'u' is not NAME=COLUMN"),
    ([], "no column 'mag_u' (mapped to u)"),
])
def test_bad_column_maps_are_one_line_errors(photoz_run, tmp_path, capsys, argv, message):
    workdir, _, result = photoz_run
    catalogue = _write_catalogue(tmp_path / "c.csv", np.full((2, 10), 20.0))
    code = main(["predict", "--model", str(workdir / result.artifacts["model"]), "--catalog",
                 str(catalogue), "--out", str(tmp_path / "z.csv"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("bench: error: ") and message in err, err
    assert err.count("\n") == 1 and not (tmp_path / "z.csv").exists()


def test_a_missing_catalogue_or_a_text_cell_is_named_with_its_row(photoz_run, tmp_path, capsys,
                                                                  monkeypatch):
    from lensbench.bench.tools import predict

    monkeypatch.setattr(predict, "CATALOGUE_CHUNK", 1)  # the text cell's row counts over chunks
    workdir, _, result = photoz_run
    catalogue = _write_catalogue(tmp_path / "c.csv", np.full((3, 10), 20.0))
    lines = catalogue.read_text().splitlines()
    cells = lines[2].split(",")
    cells[3] = "abc"  # MAG_R of the second data row
    lines[2] = ",".join(cells)
    catalogue.write_text("\n".join(lines) + "\n")
    base = ["predict", "--model", str(workdir / result.artifacts["model"]), "--columns", COLUMNS,
            "--out", str(tmp_path / "z.csv")]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    for where, message in ((catalogue, f"{catalogue}: column 'MAG_R' (mapped to r) is not "
                                       "numeric: data row 2 holds 'abc'; expected numbers"),
                           (tmp_path / "nope.csv", f"--catalog {tmp_path / 'nope.csv'}: no such "
                                                   "file"),
                           (empty, f"{empty}: not a readable CSV table: 'No columns to parse "
                                   "from file'")):
        assert main([*base, "--catalog", str(where)]) == 2
        err = capsys.readouterr().err
        assert err == f"bench: error: {message}\n"
    assert not (tmp_path / "z.csv").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["cleaning"].update(max_error="one"),
     "'columns.cleaning.max_error': expected a number, got 'one'"),
    (lambda c: c.update(magnitudes=c["magnitudes"][:2]),
     "'columns.magnitudes': expected one name per band of u, g, r, i, z"),
    (lambda c: c["cleaning"].update(colours="all"),
     "'columns.cleaning.colours' is not one a photo-z model has"),
    (lambda c: c["cleaning"].update(error_bands=["g", "q"]),
     "'columns.cleaning.error_bands': expected bands of the model"),
])
def test_a_photoz_contracts_columns_are_checked(photoz_run, tmp_path, capsys, edit, message):
    from lensbench.bench.tools.predict import PHOTOZ_CLEANING
    from lensbench.datasets.photoz import CLEANING

    assert set(PHOTOZ_CLEANING) == set(CLEANING)  # every cleaning setting has its check
    _edited_photoz_model_is_refused(photoz_run, tmp_path, capsys, "contract.json",
                                    lambda contract: edit(contract["columns"]),
                                    f"contract field {message}")


def test_an_edited_photoz_state_is_named_on_loading(photoz_run, tmp_path, capsys):
    def edit(state):
        state["items"]["bandwidth_"] = "x"  # a string where knn-photoz keeps a number

    _edited_photoz_model_is_refused(photoz_run, tmp_path, capsys, "state.json", edit,
                                    "its fitted state cannot score an input of its own "
                                    "contract (UFuncTypeError")


def _edited_model(model: Path, member: str, edit, out: Path) -> Path:
    """A copy of the model file ``model`` at ``out`` with its JSON ``member`` changed by
    ``edit``."""
    import io
    import zipfile

    with zipfile.ZipFile(model) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    record = json.loads(members[member])
    edit(record)
    members[member] = json.dumps(record).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    out.write_bytes(buffer.getvalue())
    return out


def _edited_photoz_model_is_refused(photoz_run, tmp_path, capsys, member, edit, message):
    """``member`` of the photo-z run's model file changed by ``edit``: bench predict refuses
    it with ``message``, naming the file, and writes nothing."""
    workdir, _, result = photoz_run
    model = _edited_model(workdir / result.artifacts["model"], member, edit,
                          tmp_path / "edited.lbmodel")
    catalogue = _write_catalogue(tmp_path / "c.csv", np.full((2, 10), 20.0))
    assert main(["predict", "--model", str(model), "--catalog", str(catalogue), "--columns",
                 COLUMNS, "--out", str(tmp_path / "z.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bench: error: {model}: {message}"), err
    assert err.count("\n") == 1 and not (tmp_path / "z.csv").exists()


def test_a_photoz_model_given_cutouts_says_what_it_is(photoz_run, tmp_path, capsys):
    workdir, _, result = photoz_run
    code = main(["predict", "--model", str(workdir / result.artifacts["model"]), "--cutouts",
                 str(tmp_path), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "a photoz model (knn-photoz); --cutouts takes a lens-model regressor" \
        in err
    # bench scan takes lens finders: it says where a photo-z model goes (it said "no contract")
    code = main(["scan", "--model", str(workdir / result.artifacts["model"]), "--cutouts",
                 str(tmp_path), "--out", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "a photoz model (knn-photoz), not a lens finder: bench predict " \
        "--catalog gives its redshifts" in err, err


# --------------------------------------------------------------------------- lens modeling
MODELING_PREFIX = version_prefix(get_suite("modeling").tasks[0])  # its split folders' names


@pytest.fixture(scope="module")
def modeling_run(tmp_path_factory, real_data, real_lens_splits, simulated_splits):
    """xgboost-modeling trained by `bench run` on the modeling smoke profile (its splits made
    once this session: conftest.real_lens_splits, conftest.simulated_splits)."""
    real_data("cosmos", "slacs")
    workdir = tmp_path_factory.mktemp("modeling")
    real_lens_splits.copy_into(workdir, *get_suite("modeling").tasks)
    for task in get_suite("modeling").tasks:
        simulated_splits.copy_into(workdir, task, "smoke")
    assert main(["run", "--suite", "modeling", "--profile", "smoke", "--methods",
                 "xgboost-modeling", "--no-tracking", "--workdir", str(workdir)]) == 0
    [result] = read_results(workdir / "results.jsonl")
    return workdir, result


def test_a_saved_regressor_predicts_the_test_cutouts_as_the_suite_did(modeling_run, tmp_path,
                                                                      capsys):
    workdir, result = modeling_run
    [test_split] = (workdir / "splits").glob(f"{MODELING_PREFIX}test-*")
    out = tmp_path / "params.csv"
    assert main(["predict", "--model", str(workdir / result.artifacts["model"]), "--cutouts",
                 str(test_split), "--out", str(out)]) == 0
    rows = _rows(out)
    saved = np.load(workdir / result.artifacts["predictions"])
    targets = list(saved["targets"])
    assert list(rows[0]) == ["id", *(c for t in targets for c in (t, f"{t}_sigma")), "east",
                             "east_sigma", "north", "north_sigma", "pa", "pa_sigma",
                             "shear_pa", "shear_pa_sigma", "outside_training"]
    assert {row["east"] for row in rows} == {""}  # a split has no WCS: no position on the sky
    # the contract holds the training targets' ranges; a prediction beyond one is flagged
    from lensbench.baselines.persistence import load_model
    from lensbench.bench.suites.modeling import targets_of
    from lensbench.datasets.storage import load_split

    _, contract = load_model(workdir / result.artifacts["model"])
    [train_split] = (workdir / "splits").glob(f"{MODELING_PREFIX}train-*")
    truth = targets_of(load_split(train_split), tuple(targets))
    assert contract.target_ranges == {t: [truth[:, k].min(), truth[:, k].max()]
                                      for k, t in enumerate(targets)}
    expected = [",".join(t for k, t in enumerate(targets) if not (
        contract.target_ranges[t][0] <= saved["pred"][row, k] <= contract.target_ranges[t][1]))
        for row in range(len(rows))]
    assert [row["outside_training"] for row in rows] == expected
    flagged, err = sum(map(bool, expected)), capsys.readouterr().err
    assert (f"note: {flagged} of them have a parameter predicted beyond its range" in err
            if flagged else "note:" not in err), err
    for k, target in enumerate(targets):
        np.testing.assert_array_equal([float(r[target]) for r in rows], saved["pred"][:, k])
        np.testing.assert_array_equal([float(r[f"{target}_sigma"]) for r in rows],
                                      np.sqrt(saved["variance"][:, k]))


def test_an_edited_regressor_state_is_named_before_any_cutout_is_read(modeling_run, tmp_path,
                                                                      capsys):
    workdir, result = modeling_run
    [test_split] = (workdir / "splits").glob(f"{MODELING_PREFIX}test-*")

    def edit(state):
        state["items"]["scale_"] = "x"  # a string where the target scales belong

    model = _edited_model(workdir / result.artifacts["model"], "state.json", edit,
                          tmp_path / "edited.lbmodel")
    out = tmp_path / "params.csv"
    assert main(["predict", "--model", str(model), "--cutouts", str(test_split), "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bench: error: {model}: its fitted state cannot score an input of "
                          "its own contract ("), err
    assert err.count("\n") == 1 and not out.exists()


def test_a_saved_regressor_predicts_theta_e_of_real_slacs_lenses_from_band_files(
        modeling_run, tmp_path):
    """The real split's SLACS lenses written as one FITS file per band, as a survey's cutout
    service delivers them (BUNIT, PIXSCALE, FILTER in the headers): the predictions equal the
    suite's (the preparation finds nothing to change)."""
    from lensbench.datasets.storage import load_split

    workdir, result = modeling_run
    saved = np.load(workdir / result.artifacts["predictions"])
    [real] = (workdir / "splits").glob(f"{MODELING_PREFIX}real-*")
    split = load_split(real)
    lenses = np.flatnonzero(np.asarray(split.truth["label"]) == 1)
    images = split.images(lenses)
    bands = ("g", "r", "i", "z")
    cutouts = tmp_path / "cutouts"
    cutouts.mkdir()
    for k, image in zip(lenses, images, strict=True):
        for b, band in enumerate(bands):
            header = fits.Header({"BUNIT": "nanomaggy", "PIXSCALE": 0.168, "FILTER": band})
            fits.PrimaryHDU(image[b], header).writeto(cutouts / f"slacs{k}_{band}.fits")
    out = tmp_path / "theta.csv"
    assert main(["predict", "--model", str(workdir / result.artifacts["model"]), "--cutouts",
                 str(cutouts), "--band-files", "{id}_{band}.fits", "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r["id"] for r in rows] == [f"slacs{k}" for k in lenses]
    theta = list(saved["targets"]).index("theta_e")
    np.testing.assert_array_equal([float(r["theta_e"]) for r in rows],
                                  saved["real_pred"][:, theta])
    prepared = _rows(tmp_path / "theta.prepared.csv")
    assert len(prepared) == len(lenses)
    # their sky is subtracted (levels 0-0.44 sky sigma): none is flagged
    assert all(r["sky_not_subtracted"] == "" for r in prepared)


def test_positions_are_given_from_the_cutouts_own_centre(modeling_run, tmp_path):
    """Test cutouts 65 pixels wide (one more column and row than the 64-pixel stamp, centred on
    the lens as a cutout service cuts them): preparation keeps the stamp's pixels, so the centre
    of the cutout lies half a pixel from the stamp's, and x, y are given from the cutout's."""
    from lensbench.datasets.storage import load_split

    workdir, result = modeling_run
    saved = np.load(workdir / result.artifacts["predictions"])
    [test_split] = (workdir / "splits").glob(f"{MODELING_PREFIX}test-*")
    images = load_split(test_split).images(np.arange(3))
    cutouts = tmp_path / "odd"
    cutouts.mkdir()
    header = fits.Header({"BUNIT": "nanomaggy", "PIXSCALE": 0.168, "BANDS": "g,r,i,z"})
    for k, image in enumerate(images):
        fits.PrimaryHDU(np.pad(image, ((0, 0), (0, 1), (0, 1))), header).writeto(
            cutouts / f"{k}.fits")
    out = tmp_path / "params.csv"
    assert main(["predict", "--model", str(workdir / result.artifacts["model"]), "--cutouts",
                 str(cutouts), "--prepare", "--out", str(out)]) == 0
    rows = _rows(out)
    targets = list(saved["targets"])
    for name in ("x", "y"):
        np.testing.assert_allclose([float(r[name]) for r in rows],
                                   saved["pred"][:3, targets.index(name)] - 0.5 * 0.168,
                                   rtol=0, atol=1e-12)
    np.testing.assert_array_equal([float(r["theta_e"]) for r in rows],
                                  saved["pred"][:3, targets.index("theta_e")])
    records = _rows(tmp_path / "params.prepared.csv")
    assert {(r["centre_dx"], r["centre_dy"]) for r in records} == {("0.5", "0.5")}


def test_galaxies_beyond_the_training_magnitudes_are_flagged_and_fluxes_refused(
        photoz_run, tmp_path, capsys):
    """The contract records the training magnitudes' 0.1-99.9 percentile range per band;
    bench predict names the bands a galaxy lies beyond, and refuses a column whose median lies
    beyond (fluxes given as magnitudes: 90% outliers in the audit, with no word said)."""
    from lensbench.baselines.persistence import load_model
    from lensbench.bench.suites.photoz import load_task_data

    workdir, task, result = photoz_run
    model = workdir / result.artifacts["model"]
    _, contract = load_model(model)
    data = load_task_data(task, "smoke", workdir)
    ranges = contract.columns["magnitude_range"]
    train = data.X["train"][:, :5]
    for k, band in enumerate(BANDS):
        low, high = ranges[band]
        assert low == pytest.approx(np.percentile(train[:, k], 0.1), abs=1e-4)
        assert high == pytest.approx(np.percentile(train[:, k], 99.9), abs=1e-4)
        low, high = contract.columns["error_range"][band]  # and of the errors
        assert low == pytest.approx(np.percentile(data.X["train"][:, 5 + k], 0.1), abs=1e-5)
        assert high == pytest.approx(np.percentile(data.X["train"][:, 5 + k], 99.9), abs=1e-5)
    X = data.X["test"].copy()
    X[7, 1] = ranges["g"][1] + 1.0  # one galaxy fainter in g than any the model saw
    out = tmp_path / "z.csv"
    assert main(["predict", "--model", str(model), "--catalog",
                 str(_write_catalogue(tmp_path / "c.csv", X)), "--columns", COLUMNS,
                 "--out", str(out)]) == 0
    flags = [row["outside_training"] for row in _rows(out)]
    assert "g" in flags[7].split(",")
    assert f"note: {sum(map(bool, flags))} of them have a magnitude or error beyond" in \
        capsys.readouterr().err
    fluxes = data.X["test"].copy()
    fluxes[:, 0] = 10 ** (-0.4 * (fluxes[:, 0] - 22.5))  # u in nanomaggies, not magnitudes
    assert main(["predict", "--model", str(model), "--catalog",
                 str(_write_catalogue(tmp_path / "f.csv", fluxes)), "--columns", COLUMNS,
                 "--out", str(tmp_path / "zf.csv")]) == 2
    err = capsys.readouterr().err
    assert "column 'MAG_U' (band u) has median" in err and "the model takes AB magnitudes" in err
    assert not (tmp_path / "zf.csv").exists()


def test_the_lens_model_is_also_given_on_the_sky_through_each_cutouts_wcs(modeling_run,
                                                                            tmp_path):
    """Test cutouts with a WCS rotated 30 degrees (North 30 degrees from +y towards +x) and one
    mirrored: x, y stay in the stamp's grid (preparation does not rotate); east, north are the
    lens centre's offsets on the sky and pa, shear_pa the position angles of the ellipticity's
    and the shear's axes, as astropy's full transform of their pixels gives them; a cutout
    without a celestial WCS has none."""
    import math

    import astropy.units as u
    from astropy.wcs import WCS
    from lensbench.datasets.storage import load_split

    workdir, result = modeling_run
    saved = np.load(workdir / result.artifacts["predictions"])
    targets = list(saved["targets"])
    [test_split] = (workdir / "splits").glob(f"{MODELING_PREFIX}test-*")
    images = load_split(test_split).images(np.arange(3))
    cutouts = tmp_path / "sky"
    cutouts.mkdir()
    d, c, s = 0.168 / 3600, math.cos(math.radians(30)), math.sin(math.radians(30))
    headers = []
    for k, mirror in enumerate((1, -1)):
        header = fits.Header({"BUNIT": "nanomaggy", "BANDS": "g,r,i,z", "CTYPE1": "RA---TAN",
                              "CTYPE2": "DEC--TAN", "CRPIX1": 32.5, "CRPIX2": 32.5,
                              "CRVAL1": 150.0, "CRVAL2": 2.0, "CD1_1": -d * c * mirror,
                              "CD1_2": d * s, "CD2_1": d * s * mirror, "CD2_2": d * c})
        fits.PrimaryHDU(images[k], header).writeto(cutouts / f"{k}.fits")
        headers.append(header)
    plain = fits.Header({"BUNIT": "nanomaggy", "BANDS": "g,r,i,z", "PIXSCALE": 0.168})
    fits.PrimaryHDU(images[2], plain).writeto(cutouts / "2.fits")
    out = tmp_path / "params.csv"
    assert main(["predict", "--model", str(workdir / result.artifacts["model"]), "--cutouts",
                 str(cutouts), "--prepare", "--out", str(out)]) == 0
    rows = _rows(out)
    for k, header in enumerate(headers):
        x, y = (saved["pred"][k, targets.index(name)] for name in ("x", "y"))
        assert float(rows[k]["x"]) == x and float(rows[k]["y"]) == y
        wcs = WCS(header)
        centre = wcs.pixel_to_world(31.5, 31.5)
        lens = wcs.pixel_to_world(31.5 + x / 0.168, 31.5 + y / 0.168)
        east, north = centre.spherical_offsets_to(lens)
        assert float(rows[k]["east"]) == pytest.approx(east.to_value(u.arcsec), abs=1e-5)
        assert float(rows[k]["north"]) == pytest.approx(north.to_value(u.arcsec), abs=1e-5)
        sx, sy = (math.sqrt(saved["variance"][k, targets.index(n)]) for n in ("x", "y"))
        assert float(rows[k]["east_sigma"]) == pytest.approx(math.hypot(sx * c, sy * s))
        # the major axis (phi counter-clockwise from +x) as a position angle East of North
        for c1, c2, name in (("e1", "e2", "pa"), ("gamma1", "gamma2", "shear_pa")):
            phi = 0.5 * math.atan2(*(saved["pred"][k, targets.index(n)] for n in (c2, c1)))
            tip = wcs.pixel_to_world(31.5 + math.cos(phi), 31.5 + math.sin(phi))
            expected = centre.position_angle(tip).to_value(u.deg) % 180.0
            got = float(rows[k][name])
            assert min(abs(got - expected), 180 - abs(got - expected)) < 1e-3, (name, k)
            assert float(rows[k][f"{name}_sigma"]) > 0
    assert all(rows[2][name] == "" for name in ("east", "east_sigma", "north", "north_sigma",
                                                 "pa", "shear_pa"))


def test_galaxies_without_a_usable_spec_z_are_predicted_and_left_out_of_the_metrics(
        photoz_run, tmp_path, capsys):
    # The usual catalogue has spec-z for a few galaxies: a missing, failed (-1) or quasar's
    # (3.5, beyond the model's z_max) spec-z leaves a galaxy's photo-z as it is.
    from lensbench.bench.photoz_metrics import photoz_metrics
    from lensbench.bench.suites.photoz import load_task_data

    workdir, task, result = photoz_run
    data = load_task_data(task, "smoke", workdir)
    X, z = data.X["test"][:40], data.z["test"][:40].copy()
    z[1], z[2], z[3] = np.nan, -1.0, 3.5
    model = str(workdir / result.artifacts["model"])
    out = tmp_path / "z.csv"
    assert main(["predict", "--model", model, "--catalog",
                 str(_write_catalogue(tmp_path / "c.csv", X, z)), "--columns",
                 COLUMNS + ",z_spec=Z", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "40 of 40 galaxies predicted, 0 dropped" in printed
    assert "metrics on the 37 with a usable z_spec" in printed
    z_phot = np.array([float(r["z_phot"]) for r in _rows(out)])
    assert len(z_phot) == 40 and np.isfinite(z_phot).all()
    usable = np.ones(40, bool)
    usable[1:4] = False
    metrics = json.loads((tmp_path / "z.metrics.json").read_text())
    expected = photoz_metrics(z_phot[usable], z[usable])
    for key in ("sigma_nmad", "outlier_frac", "bias_mean", "bias_median"):
        assert metrics[key] == expected[key], key
    # the same table again without z_spec: the first run's metrics must not pass for this one's
    assert main(["predict", "--model", model, "--catalog", str(tmp_path / "c.csv"),
                 "--columns", COLUMNS, "--out", str(out)]) == 0
    assert not (tmp_path / "z.metrics.json").exists() and (tmp_path / "z.pdf.csv").exists()


def test_an_empty_id_stays_empty(photoz_run, tmp_path):
    # astropy fills a masked string cell with "0" (or "N/A"), which could name another object
    from lensbench.bench.suites.photoz import load_task_data

    workdir, task, result = photoz_run
    catalogue = _write_catalogue(tmp_path / "c.csv",
                                 load_task_data(task, "smoke", workdir).X["test"][:3])
    lines = catalogue.read_text().splitlines()
    lines[2] = "," + lines[2].split(",", 1)[1]  # obj1's id left empty
    catalogue.write_text("\n".join(lines) + "\n")
    out = tmp_path / "z.csv"
    assert main(["predict", "--model", str(workdir / result.artifacts["model"]), "--catalog",
                 str(catalogue), "--columns", COLUMNS, "--out", str(out)]) == 0
    assert [r["id"] for r in _rows(out)] == ["obj0", "", "obj2"]


def test_a_catalogue_is_predicted_in_chunks_to_the_same_bytes(photoz_run, tmp_path,
                                                              monkeypatch):
    from lensbench.bench.suites.photoz import load_task_data
    from lensbench.bench.tools import predict

    workdir, task, result = photoz_run
    catalogue = _write_catalogue(tmp_path / "c.csv",
                                 load_task_data(task, "smoke", workdir).X["test"][:50])
    model = str(workdir / result.artifacts["model"])
    outputs = []
    for chunk in (20_000, 7):
        monkeypatch.setattr(predict, "CATALOGUE_CHUNK", chunk)
        out = tmp_path / f"z{chunk}.csv"
        assert main(["predict", "--model", model, "--catalog", str(catalogue), "--columns",
                     COLUMNS, "--out", str(out)]) == 0
        outputs.append((out.read_bytes(), out.with_name(out.stem + ".pdf.csv").read_bytes()))
    assert outputs[0] == outputs[1] and outputs[0][0].count(b"\n") == 51


def test_errors_beyond_the_training_sets_are_flagged(photoz_run, tmp_path, capsys):
    # a catalogue's 0 for "no error" moved a pdf-mlp-photoz z from 0.60 to 0.50, unflagged
    from lensbench.bench.suites.photoz import load_task_data

    workdir, task, result = photoz_run
    X = load_task_data(task, "smoke", workdir).X["test"][:4].copy()
    X[1, 5:] = 0.0
    out = tmp_path / "z.csv"
    assert main(["predict", "--model", str(workdir / result.artifacts["model"]), "--catalog",
                 str(_write_catalogue(tmp_path / "c.csv", X)), "--columns", COLUMNS,
                 "--out", str(out)]) == 0
    flags = [r["outside_training"] for r in _rows(out)]
    assert {f"err_{b}" for b in BANDS} <= set(flags[1].split(","))
    assert f"{sum(map(bool, flags))} of them have a magnitude or error beyond" in \
        capsys.readouterr().err


def test_the_pdfs_are_also_a_qp_ensemble_as_rail_writes_them(photoz_run, tmp_path):
    import qp
    from lensbench.baselines.photoz import PDF_GRID
    from lensbench.bench.suites.photoz import load_task_data

    workdir, task, result = photoz_run
    X = load_task_data(task, "smoke", workdir).X["test"][:30].copy()
    X[4, 0] = 99.0  # dropped: not in the ensemble
    out = tmp_path / "z.csv"
    assert main(["predict", "--model", str(workdir / result.artifacts["model"]), "--catalog",
                 str(_write_catalogue(tmp_path / "c.csv", X)), "--columns", COLUMNS,
                 "--out", str(out)]) == 0
    ensemble = qp.read(str(tmp_path / "z.pdf.hdf5"))
    table, pdf = _rows(out), _rows(tmp_path / "z.pdf.csv")
    assert ensemble.npdf == len(table) == 29
    assert [int(r) for r in ensemble.ancil["row"]] == [int(r["row"]) for r in table]
    assert list(ensemble.ancil["id"]) == [r["id"] for r in table]
    np.testing.assert_array_equal(ensemble.ancil["z_phot"], [float(r["z_phot"]) for r in table])
    written = np.array([[float(v) for k, v in row.items() if k not in ("row", "id")]
                        for row in pdf])
    np.testing.assert_allclose(ensemble.pdf(PDF_GRID), written, rtol=1e-12, atol=1e-12)


def test_an_undetermined_position_angle_has_the_sigma_of_a_uniform_axis():
    """Linear propagation gives (1/2) s / |c| radians: 2.9 degrees for |c| = 0.1 +- 0.01, but
    286 degrees for |c| = 0.01 +- 0.1, where the axis is undetermined: at most 180 / sqrt(12)."""
    from lensbench.bench.tools.predict import _position_angle

    north, east = np.array([0.0, 1.0]), np.array([-1.0, 0.0])
    assert _position_angle(0.1, 0.0, 0.01, 0.01, north, east)[1] == pytest.approx(
        np.degrees(0.5 * 0.01 / 0.1))
    assert _position_angle(0.01, 0.0, 0.1, 0.1, north, east)[1] == pytest.approx(
        180 / np.sqrt(12))
