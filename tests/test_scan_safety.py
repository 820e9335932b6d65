"""Hostile and careless input to `bench scan`, `bench inspect` and `bench run --param` (issue 20):
non-finite or absurd pixels never give a score, the grading page is safe for any id and any
table, a typo in --param stops the run before any work, and bad options or an all-bad scan end
with one clear line."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import toy_lens_images
from lensbench.bench import runner
from lensbench.bench.cli import main
from lensbench.bench.tools.inspect_page import write_page
from lensbench.bench.tools.scan import scan
from lensbench.datasets.storage import SplitWriter
from lensbench.deep.checkpoint import load_checkpoint, save_checkpoint
from lensbench.deep.methods import NetFinder, ResNetFinder

SHAPE = (4, 32, 32)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny fitted 4-band ResNetFinder checkpoint (training sky sigma ~1 per band) and 8
    ordinary cutouts."""
    root = tmp_path_factory.mktemp("scan-safety")
    rng = np.random.default_rng(11)
    X, y = toy_lens_images(rng, 64)
    method = ResNetFinder(width=8, crop=None, max_epochs=1, batch_size=32, device="cpu",
                          num_threads=1, random_state=1).fit(X, y)
    ckpt = save_checkpoint(method, root / "model.pt")
    cubes, _ = toy_lens_images(rng, 8)
    return {"ckpt": ckpt, "cubes": cubes, "noise": method.preprocessor_.noise}


def _fits_folder(folder: Path, cubes: dict[str, np.ndarray]) -> Path:
    folder.mkdir()
    for name, cube in cubes.items():
        fits.writeto(folder / f"{name}.fits", cube)
    return folder


def _assert_ranked_and_finite(rows):
    scores = [float(r["score"]) for r in rows]
    assert all(np.isfinite(scores)) and all(np.isfinite([float(r["spread"]) for r in rows]))
    assert scores == sorted(scores, reverse=True)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))


def test_non_finite_and_absurd_pixels_are_listed_as_bad_never_scored(model, tmp_path):
    good = {f"obj{k}": cube for k, cube in enumerate(model["cubes"][:6])}
    hostile = {}
    for name, value, where in (("nan", np.nan, (1, 3, 3)), ("inf", np.inf, (0, 0, 0)),
                               ("neginf", -np.inf, (3, 31, 31)),
                               ("huge", 3e38, (2, 16, 16)),  # issue 20: scored NaN
                               ("negative", -1e30, (0, 10, 20))):
        cube = model["cubes"][6].copy()
        cube[where] = value
        hostile[name] = cube
    hostile["filled"] = np.full(SHAPE, 1e30, dtype=np.float32)  # issue 20: scored 1.0, rank 1
    # a pixel 1e4 sky sigma bright (a saturated star's core in a survey coadd) is plausible
    bright = model["cubes"][7].copy()
    bright[1, 5, 5] = 1e4 * model["noise"][1]
    folder = _fits_folder(tmp_path / "cutouts", {**good, **hostile, "bright": bright})
    out = tmp_path / "candidates.csv"

    summary = scan(model["ckpt"], folder, out, batch_size=4, progress=False)

    rows = read_csv(out)
    _assert_ranked_and_finite(rows)
    assert {r["id"] for r in rows} == set(good) | {"bright"}
    expected, _ = load_checkpoint(model["ckpt"]).predict_score_with_spread(
        np.stack([*good.values(), bright]))
    got = {r["id"]: float(r["score"]) for r in rows}
    np.testing.assert_allclose([got[k] for k in [*good, "bright"]], expected, atol=1e-6)
    bad = {r["id"]: r["reason"] for r in read_csv(tmp_path / "candidates.bad.csv")}
    assert set(bad) == set(hostile) and summary.n_bad == len(hostile)
    for name in ("nan", "inf", "neginf"):
        assert "1 NaN/inf pixel(s)" in bad[name]
    assert "1 pixel(s) beyond" in bad["huge"] and "band 2" in bad["huge"]
    assert "1 pixel(s) beyond" in bad["negative"] and "band 0" in bad["negative"]
    assert f"{4 * 32 * 32} pixel(s) beyond" in bad["filled"]
    assert all("training sky sigma" in bad[k] for k in ("huge", "negative", "filled"))


def test_a_non_finite_score_goes_to_the_bad_list(model, tmp_path, monkeypatch):
    real = NetFinder.predict_score_with_spread

    def first_score_nan(self, X):
        scores, spreads = real(self, X)
        scores = np.array(scores, dtype=float)
        scores[0] = np.nan
        return scores, spreads

    monkeypatch.setattr(NetFinder, "predict_score_with_spread", first_score_nan)
    folder = _fits_folder(tmp_path / "cutouts",
                          {f"obj{k}": c for k, c in enumerate(model["cubes"][:6])})
    out = tmp_path / "candidates.csv"
    summary = scan(model["ckpt"], folder, out, batch_size=3, progress=False)
    rows = read_csv(out)
    _assert_ranked_and_finite(rows)
    # batches of 3: the first cutout of each batch got NaN
    assert sorted(r["id"] for r in rows) == ["obj1", "obj2", "obj4", "obj5"]
    bad = {r["id"]: r["reason"] for r in read_csv(tmp_path / "candidates.bad.csv")}
    assert set(bad) == {"obj0", "obj3"} and summary.n_bad == 2
    assert all("score is not finite" in reason for reason in bad.values())


def _page_data(page: Path):
    """The page's embedded data, parsed as strict JSON (NaN or Infinity are an error)."""
    text = page.read_text(encoding="utf-8")
    match = re.search(r'<script id="data" type="application/json">(.*?)</script>', text, re.S)
    assert match, "no data script in the page"

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(match[1], parse_constant=refuse)


def _write_table(path: Path, rows: list[dict], columns=("rank", "id", "score", "spread",
                                                          "source")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({c: row.get(c, "") for c in columns} for row in rows)


def test_inspect_page_data_is_valid_json_when_the_table_holds_nan(model, tmp_path):
    folder = _fits_folder(tmp_path / "cutouts", {"a": model["cubes"][0]})
    source = str(folder / "a.fits")
    table = tmp_path / "hand-made.csv"  # no rank column: the page orders by score
    _write_table(table, [{"id": "x1", "score": "nan", "spread": "nan", "source": source},
                         {"id": "x2", "score": "0.5", "spread": "inf", "source": source},
                         {"id": "x3", "score": "0.9", "spread": "0.1", "source": source},
                         {"id": "x4", "score": "-inf", "spread": "", "source": source}],
                 columns=("id", "score", "spread", "source"))
    page = write_page(table, tmp_path / "page.html")
    data = _page_data(page)
    records = {r["id"]: r for r in data["candidates"]}
    assert records["x1"]["score"] is None and records["x1"]["spread"] is None
    assert records["x2"]["spread"] is None and records["x4"]["score"] is None
    # finite scores first, best first; the unscorable ones last, never ranked among them
    assert [r["id"] for r in data["candidates"]][:2] == ["x3", "x2"]
    assert [r["rank"] for r in data["candidates"]] == [1, 2, 3, 4]


HOSTILE_IDS = [
    "<!--<script>",  # issue 20: switched the parser into script-escaped mode, blank page
    "</script><script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    "</SCRIPT ><svg onload=window.__pwned=3>",
    "line\u2028separator\u2029paragraph",
    "&lt;b&gt; & <b>bold</b> \"quoted\" 'single' \\back",
    "ordinary-42",
]


def test_hostile_ids_render_as_text_and_run_nothing_in_headless_chromium(model, tmp_path,
                                                                         chromium):
    from playwright.sync_api import sync_playwright

    n = len(HOSTILE_IDS)
    split = tmp_path / "split"
    with SplitWriter(split, config={"kind": "test", "ids": HOSTILE_IDS}, seed=0,
                     bands=["g", "r", "i", "z"], created_by="test_scan_safety") as writer:
        writer.add_shard(np.asarray(model["cubes"][:n]), {"label": np.zeros(n, np.int64)})
    candidates = tmp_path / "candidates.csv"
    assert main(["scan", "--model", str(model["ckpt"]), "--cutouts", str(split), "--out",
                 str(candidates), "--no-progress"]) == 0
    assert sorted(r["id"] for r in read_csv(candidates)) == sorted(HOSTILE_IDS)
    # one unscorable row as well: the page must render it, not go blank
    rows = read_csv(candidates)
    rows.append({"rank": n + 1, "id": "not-scored", "score": "nan", "spread": "nan",
                 "source": rows[0]["source"]})
    _write_table(candidates, rows)
    page_file = tmp_path / "inspect.html"
    assert main(["inspect", str(candidates), "--out", str(page_file)]) == 0
    expected_ids = [r["id"] for r in rows]

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            errors, dialogs = [], []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(page_file.as_uri())
            cards = page.locator(".card")
            assert cards.count() == n + 1
            assert [cards.nth(k).get_attribute("data-id") for k in range(n + 1)] == expected_ids
            for k, oid in enumerate(expected_ids):
                assert f"#{k + 1} {oid}" in cards.nth(k).locator(".meta").text_content()
            assert page.evaluate("window.__pwned") is None
            assert page.locator("script").count() == 2  # the page's own data and code only
            assert page.locator("svg").count() == 0
            images = page.locator("img")
            assert images.count() == n + 1
            assert all(images.nth(k).get_attribute("src").startswith("data:image/png;base64,")
                       for k in range(n + 1))
            assert "score n/a" in cards.nth(n).text_content()
            assert errors == [] and dialogs == []
        finally:
            browser.close()


@pytest.mark.parametrize("args, message", [
    (["--param", "pixel_logreg.C=0.0001"],
     "--param pixel_logreg.C: unknown method 'pixel_logreg'. Did you mean 'pixel-logreg'?"),
    (["--param", "nosuch.C=1"], "--param nosuch.C: unknown method 'nosuch'"),
    (["--param", ".C=1"], "--param '.C=1': expected METHOD.KEY=VALUE"),
    (["--param", "pixel-logreg.=1"], "--param 'pixel-logreg.=1': expected METHOD.KEY=VALUE"),
    (["--param", "pixel-logreg.c=0.1"],
     "--param pixel-logreg.c: PixelLogisticRegression (pixel-logreg) takes no parameter 'c'. "
     "Did you mean 'C'?"),
    (["--methods", "random", "--param", "pixel-logreg.C=0.1"],
     "--param pixel-logreg.C: method 'pixel-logreg' is not in this run (methods: random)"),
    (["--methods", "random,pixel_logreg"], "--methods: unknown method 'pixel_logreg'"),
    (["--param", "pixel-logreg.stretch=sqrt"],
     "--param pixel-logreg.stretch='sqrt': PixelLogisticRegression expects a number"),
    (["--param", "pixel-logreg.crop=None"],
     "--param pixel-logreg.crop=None: PixelLogisticRegression expects an integer"),
    (["--param", "pixel-logreg.crop=true"],
     "--param pixel-logreg.crop=True: PixelLogisticRegression expects an integer"),
    (["--methods", "committee", "--param", "committee.patience=none"],
     "--param committee.patience='none': CommitteeFinder expects an integer or None (write "
     "None or null)"),
    (["--params", "FILE"], "--params FILE: pixel-logreg.max_iters: PixelLogisticRegression "
                           "(pixel-logreg) takes no parameter 'max_iters'. Did you mean "
                           "'max_iter'?"),
])
def test_a_param_typo_stops_bench_run_before_any_work(args, message, tmp_path, monkeypatch,
                                                      capsys):
    started = []
    monkeypatch.setattr(runner, "run_suite", lambda *a, **k: started.append(1) or [])
    params_file = tmp_path / "best_params.json"
    params_file.write_text(json.dumps({"pixel-logreg": {"max_iters": 5}}))
    args = [str(params_file) if a == "FILE" else a for a in args]
    message = message.replace("FILE", str(params_file))
    workdir = tmp_path / "work"
    rc = main(["run", "--suite", "smoke", "--no-tracking", "--workdir", str(workdir), *args])
    err = capsys.readouterr().err
    assert rc == 2 and started == []
    assert err.startswith(f"bench: error: {message}") and err.count("\n") == 1, err
    assert not (workdir / "splits").exists()


@pytest.mark.parametrize("param, message", [
    ("pixel-logreg.c=0.1", "--param pixel-logreg.c: PixelLogisticRegression (pixel-logreg) "
                           "takes no parameter 'c'. Did you mean 'C'?"),
    ("hog-logreg.C=1", "--param hog-logreg.C: method 'hog-logreg' is not in this run"),
])
def test_a_param_typo_stops_bench_tune_before_any_work(param, message, tmp_path, monkeypatch,
                                                       capsys):
    from lensbench.bench import tune

    started = []
    monkeypatch.setattr(tune, "tune", lambda *a, **k: started.append(1))
    workdir = tmp_path / "work"
    rc = main(["tune", "--suite", "smoke", "--task", "ground", "--method", "pixel-logreg",
               "--trials", "1", "--workdir", str(workdir), "--param", param])
    err = capsys.readouterr().err
    assert rc == 2 and started == []
    assert err.startswith(f"bench: error: {message}") and err.count("\n") == 1, err
    assert not workdir.exists()  # not even the MLflow store


def test_a_valid_param_reaches_the_run(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(runner, "run_suite",
                        lambda *a, **k: seen.update(k) or [])
    assert main(["run", "--suite", "smoke", "--no-tracking", "--workdir", str(tmp_path),
                 "--param", "pixel-logreg.C=0.0001", "--param", "pixel-logreg.stretch=2",
                 "--methods", "committee,pixel-logreg", "--param", "committee.patience=None",
                 "--param", "committee.lens_light=False", "--param", "committee.crop=null"]
                ) == 0
    # Python's None/True/False and JSON's null/true/false are values, not strings; an
    # integer is a number.
    assert seen["params"] == {"pixel-logreg": {"C": 0.0001, "stretch": 2},
                              "committee": {"patience": None, "lens_light": False,
                                            "crop": None}}


def test_a_params_file_that_is_not_method_params_is_named(tmp_path):
    from lensbench.bench import cli

    path = tmp_path / "best_params.json"
    for content, message in ((b"\xff\xfe not utf-8", "cannot read a JSON object of method "
                                                      "params: 'utf-8' codec"),
                             (b"[1, 2]", "expected {method: {param: value}}, got a JSON list"),
                             (b'{"pixel-logreg": [1]}', "'pixel-logreg' must map parameter "
                                                        "names to values ({param: value}), got "
                                                        "[1]")):
        path.write_bytes(content)
        with pytest.raises(ValueError) as refused:
            cli._params_from_file(path)
        assert str(refused.value).startswith(f"--params {path}: {message}")


def test_a_value_is_checked_against_a_type_hint_item_by_item():
    import typing

    import numpy as np
    from lensbench.datasets.typecheck import fits_type, type_text

    assert fits_type(3, float) and fits_type(np.int64(3), int) and fits_type(np.float32(1), float)
    assert fits_type(True, float) is False and fits_type(True, bool)
    assert fits_type([1, 2.5], tuple[float, float]) and fits_type((1,), tuple[int, ...])
    assert fits_type([1, "a"], tuple[float, float]) is False
    assert fits_type([1, 2, 3], tuple[float, float]) is False
    assert fits_type(None, int | None) and fits_type("x", int | None) is False
    assert fits_type("a", typing.Literal["a", "b"]) is None  # not checked
    assert fits_type("a", typing.Literal["a"] | None) is None
    assert (type_text(tuple[float, float] | None)
            == "a list of 2 numbers or None (write None or null)")
    assert type_text(tuple[str, ...]) == "a list of strings"
    assert type_text(list[bool]) == "a list of booleans (true or false)"
    assert type_text(list[int | None]) == "a list of integers or nulls"
    assert type_text(dict[str, float]) == "an object of numbers keyed by strings"
    assert fits_type({"a": 1}, dict[str, float]) and not fits_type({"a": "x"}, dict[str, float])


def test_param_values_are_checked_against_the_parameters_types():
    from lensbench.bench import cli

    # JSON has lists only: a list fits a tuple parameter (netz-photoz's channels).
    assert cli._check_params({"netz-photoz": {"channels": [16, 32]}}, ["netz-photoz"], "--param")
    with pytest.raises(ValueError, match="netz-photoz.channels='wide': .* expects a list"):
        cli._check_params({"netz-photoz": {"channels": "wide"}}, ["netz-photoz"], "--param")
    # An integer fits a float; a bool fits no number; a dict parameter takes an object.
    assert cli._check_params({"pixel-logreg": {"C": 1}}, ["pixel-logreg"], "--param")
    with pytest.raises(ValueError, match="expects a number"):
        cli._check_params({"pixel-logreg": {"C": True}}, ["pixel-logreg"], "--param")
    assert cli._check_params({"two-step": {"cnn_params": {"members": 1}}}, ["two-step"], "--p")


@pytest.mark.parametrize("argv, flag", [
    (["inspect", "c.csv", "--top", "-3"], "--top"),
    (["inspect", "c.csv", "--per-page", "0"], "--per-page"),
    (["scan", "--model", "m.pt", "--cutouts", "x", "--out", "c.csv", "--batch-size", "0"],
     "--batch-size"),
    (["scan", "--model", "m.pt", "--cutouts", "x", "--out", "c.csv", "--workers", "-1"],
     "--workers"),
    (["scan", "--model", "m.pt", "--cutouts", "x", "--out", "c.csv", "--threads-per-worker",
      "0"], "--threads-per-worker"),
])
def test_scan_and_inspect_counts_must_be_positive_integers(argv, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert f"argument {flag}" in err and "Traceback" not in err


def test_a_scan_where_every_cutout_is_bad_exits_2_with_the_reason(model, tmp_path, capsys):
    rng = np.random.default_rng(2)
    split = tmp_path / "three-band"
    with SplitWriter(split, config={"kind": "test"}, seed=0, bands=["g", "r", "i"],
                     created_by="test_scan_safety") as writer:
        writer.add_shard(toy_lens_images(rng, 10, (3, 32, 32))[0],
                         {"object_id": np.arange(10, dtype=np.int64)})
    out = tmp_path / "candidates.csv"
    rc = main(["scan", "--model", str(model["ckpt"]), "--cutouts", str(split), "--out",
               str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("bench: error: none of the 10 cutouts")
    assert "10 x shape (3, 32, 32), the model expects (4, 32, 32)" in err
    assert str(tmp_path / "candidates.bad.csv") in err
    assert len(read_csv(tmp_path / "candidates.bad.csv")) == 10


def test_a_damaged_or_contractless_model_file_is_named_as_such(tmp_path):
    import io
    import zipfile

    from lensbench.baselines.contract import TaskInfo
    from lensbench.baselines.persistence import make_contract, save_model
    from lensbench.baselines.registry import resolve_method

    X, y = toy_lens_images(np.random.default_rng(6), 32)
    info = TaskInfo(name="t", kind="lens-finding", bands=("g", "r", "i", "z"), pixel_scale=0.2,
                    image_shape=X.shape[1:])
    method = resolve_method("pixel-logreg")(max_iter=20).fit(X, y, info=info)
    path = save_model(method, tmp_path / "m.lbmodel", make_contract(method, info))
    cutouts = _fits_folder(tmp_path / "cutouts", {"a": X[0], "b": X[1]})
    whole = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(whole)) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}

    def rewrite(changed: dict[str, bytes | None]) -> None:  # None removes a member
        with zipfile.ZipFile(path, "w") as archive:
            for name, content in {**members, **changed}.items():
                if content is not None:
                    archive.writestr(name, content)

    # cut short: named as a damaged model file, not taken for a torch checkpoint
    path.write_bytes(whole[:300])
    with pytest.raises(ValueError, match=r"m\.lbmodel: not a lensbench model file"):
        scan(path, cutouts, tmp_path / "c.csv", progress=False)
    # without its contract, a method that does not record its bands cannot say its input
    rewrite({"contract.json": None})
    with pytest.raises(ValueError, match=r"m\.lbmodel: no contract \(contract\.json\), and its "
                                         r"PixelLogisticRegression does not record its bands"):
        scan(path, cutouts, tmp_path / "c.csv", progress=False)
    # an edited fitted state (a number where its noise array belongs) is named on loading
    state = json.loads(members["state.json"])
    state["items"]["noise_"] = 5
    rewrite({"state.json": json.dumps(state).encode()})
    with pytest.raises(ValueError, match=r"m\.lbmodel: its fitted state cannot score an input of "
                                         r"its own contract \(TypeError"):
        scan(path, cutouts, tmp_path / "c.csv", progress=False)
