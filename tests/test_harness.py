"""The harness end to end: registry, method contract, runner, resume, CLI, splits and report."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from lensbench.baselines.contract import Method, TaskInfo
from lensbench.baselines.registry import METHODS, resolve_method
from lensbench.bench import cli, splits
from lensbench.bench.results import Result, read_results
from lensbench.bench.runner import derive_seed, run_suite
from lensbench.bench.tasks import COMPARE_GOAL, REAL_VIS, SUITES, get_suite

INFO = TaskInfo(name="t", kind="lens-finding", bands=("g", "r"), pixel_scale=0.2,
                image_shape=(2, 20, 20))


class Boom(Method):
    """A method that always fails in fit: the runner must record it and go on."""

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def fit(self, X, y, info=None):
        raise RuntimeError("boom: this method is broken on purpose")


class Regressor(Method):
    kinds = ("regression",)

    def __init__(self, random_state: int = 0):
        self.random_state = random_state


def toy_images(n=120, seed=0):
    """Lenses carry a ring of flux; non-lenses do not."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(int)
    yy, xx = np.mgrid[:20, :20] - 9.5
    ring = np.exp(-0.5 * ((np.hypot(xx, yy) - 5) / 1.0) ** 2)
    X = rng.normal(0, 1, (n, 2, 20, 20)).astype(np.float32)
    X += (y[:, None, None, None] * 2.0 * ring).astype(np.float32)
    return X, y


def test_unknown_names_get_did_you_mean():
    with pytest.raises(KeyError, match="Did you mean 'pixel-logreg'"):
        resolve_method("pixel-logre")
    with pytest.raises(KeyError, match="Did you mean 'metcalf'"):
        get_suite("metcalff")


def test_reference_methods_are_honest():
    from lensbench.bench.metrics import auroc

    X, y = toy_images(600, seed=1)
    random_scores = resolve_method("random")(random_state=3).fit(X, y).predict_score(X)
    assert abs(auroc(y, random_scores) - 0.5) < 0.07
    logreg = resolve_method("pixel-logreg")(crop=20).fit(X[:400], y[:400])
    assert auroc(y[400:], logreg.predict_score(X[400:])) > 0.9


def test_a_method_may_decline_with_a_reason():
    assert "does regression, not lens-finding" in Regressor().decline(INFO)


def test_a_run_folder_is_found_by_run_id_or_folder_name(tmp_path):
    from lensbench.bench.runner import find_run_folder, run_folder

    folder = run_folder(tmp_path, "real", "real-vis", "committee[lens_light=True,members=5]")
    folder.mkdir(parents=True)
    assert folder.name == "committee_lens_light=True,members=5_"
    for name in ("committee[lens_light=True,members=5]", folder.name):
        assert find_run_folder(tmp_path, "real-vis", name) == folder
    assert find_run_folder(tmp_path, "real-hsc", folder.name) is None
    assert find_run_folder(tmp_path, "real-vis", "committee[lens_light=True]") is None


def test_seeds_derive_from_one_seed():
    assert derive_seed(0, "random", "a") == derive_seed(0, "random", "a")
    assert len({derive_seed(0, "random", "a"), derive_seed(1, "random", "a"),
                derive_seed(0, "random", "b"), derive_seed(0, "pixel-logreg", "a")}) == 4


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke-suite run through the real CLI with a failing method in the mix."""
    workdir = tmp_path_factory.mktemp("work")
    METHODS["boom"] = f"{__name__}:Boom"
    try:
        code = cli.main(["run", "--suite", "smoke", "--workdir", str(workdir), "--no-tracking",
                         "--methods", "random,boom,pixel-logreg", "--seed", "5"])
    finally:
        del METHODS["boom"]
    return workdir, code


def test_smoke_suite_records_every_run_and_survives_a_failure(smoke_run):
    workdir, code = smoke_run
    assert code == 0
    results = read_results(workdir / "results.jsonl")
    by_method = {r.method: r for r in results}
    assert set(by_method) == {"random", "boom", "pixel-logreg"}
    assert by_method["boom"].status == "failed"
    assert "boom: this method is broken on purpose" in by_method["boom"].error
    assert "Traceback" in by_method["boom"].error
    good = by_method["pixel-logreg"]
    assert good.status == "ok" and good.metrics["auroc"] > by_method["random"].metrics["auroc"]
    assert good.suite_seed == 5 and good.seed == derive_seed(5, "pixel-logreg", "smoke-ground")
    assert good.n_test == 256 and good.metrics["n_lenses"] + good.metrics["n_nonlenses"] == 256
    assert set(good.split_hashes) == {"train", "test"}
    assert any(key.startswith("binned/theta_e/") for key in good.metrics)
    for name in ("scores", "roc", "score_histograms", "mistakes"):
        assert (workdir / good.artifacts[name]).exists(), name
    assert good.versions["numpy"] and good.schema_version == 1


def test_a_run_records_torch_s_thread_count_and_the_report_states_it(tmp_path):
    import torch
    from lensbench.bench.report import provenance_lines, run_command

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        [result] = run_suite(get_suite("smoke"), profile="default", seed=5, workdir=tmp_path,
                             methods=["random"], log=lambda _: None)
    finally:
        torch.set_num_threads(previous)
    [stored] = read_results(tmp_path / "results.jsonl")
    assert result.threads == stored.threads == {"torch": 1}
    # the machine's arithmetic, which the simulated splits' bytes follow (bench data probe)
    arithmetic = stored.versions["arithmetic"]
    assert arithmetic == splits.this_machine_arithmetic()
    assert (arithmetic in splits.MACHINE_ARITHMETICS
            or arithmetic.startswith("unknown (probe truth table "))

    older = Result(**{**asdict(stored), "threads": {}, "versions": {
        key: value for key, value in {**stored.versions, "numpy": "0.1"}.items()
        if key != "arithmetic"}})
    later = Result(**{**asdict(stored), "threads": {"torch": 3}})
    line = next(line for line in provenance_lines("smoke", "default", [stored, older, later],
                                                  tmp_path, None) if "software" in line)
    assert f"numpy 0.1 / {stored.versions['numpy']}," in line
    both = " / ".join(sorted([arithmetic, "not recorded"]))
    assert line.endswith(f"; torch threads 1 / 3; arithmetic {both} (`bench data probe`)")
    [line] = [line for line in provenance_lines("smoke", "default", [older], tmp_path, None)
              if "software" in line]
    assert line.endswith("; torch threads not recorded; arithmetic not recorded "
                         "(`bench data probe`)")
    # The reproducing command sets the count where its runs recorded one.
    base = "bench run --suite smoke --profile default --seed 5 --methods random"
    assert run_command("smoke", "default", [stored, older], [5]) == f"OMP_NUM_THREADS=1 {base}"
    assert run_command("smoke", "default", [stored, later], [5]) == base
    assert run_command("smoke", "default", [older], [5]) == base


def test_resume_skips_completed_runs_and_reuses_splits(smoke_run, capsys):
    workdir, _ = smoke_run
    splits = sorted(p.name for p in (workdir / "splits").iterdir())
    before = len(read_results(workdir / "results.jsonl"))
    results = run_suite(get_suite("smoke"), profile="default", seed=5, workdir=workdir,
                        methods=["random", "pixel-logreg"], resume=True)
    assert results == []  # both were ok: nothing rerun
    assert len(read_results(workdir / "results.jsonl")) == before
    assert sorted(p.name for p in (workdir / "splits").iterdir()) == splits
    # Different params are a different run.
    results = run_suite(get_suite("smoke"), profile="default", seed=5, workdir=workdir,
                        methods=["pixel-logreg"], params={"pixel-logreg": {"C": 0.1}},
                        resume=True)
    assert [r.run_id for r in results] == ["pixel-logreg[C=0.1]"]


def test_resume_reruns_a_run_made_at_another_suite_seed(smoke_run, tmp_path):
    # --seed derives every method's seed: a run at --seed 6 is not the run made at --seed 5.
    import shutil

    workdir = tmp_path / "work"
    shutil.copytree(smoke_run[0], workdir)
    quiet = {"log": lambda _: None, "methods": ["random"], "resume": True}
    assert run_suite(get_suite("smoke"), profile="default", seed=5, workdir=workdir,
                     **quiet) == []
    [result] = run_suite(get_suite("smoke"), profile="default", seed=6, workdir=workdir, **quiet)
    assert result.suite_seed == 6 and result.status == "ok"
    assert run_suite(get_suite("smoke"), profile="default", seed=6, workdir=workdir,
                     **quiet) == []


def test_a_report_is_of_one_suite_seed(smoke_run, tmp_path, capsys):
    import shutil

    workdir = tmp_path / "work"
    shutil.copytree(smoke_run[0], workdir)
    run_suite(get_suite("smoke"), profile="default", seed=6, workdir=workdir, methods=["random"],
              log=lambda _: None)
    # the report bench run suggests names the seed, the store holding two
    assert cli.main(["run", "--suite", "smoke", "--seed", "6", "--methods", "random", "--resume",
                     "--no-tracking", "--workdir", str(workdir)]) == 0
    assert f"`bench report --suite smoke --workdir {workdir} --seed 6` writes the leaderboard" \
        in capsys.readouterr().out
    report = ["report", "--suite", "smoke", "--workdir", str(workdir), "--out",
              str(tmp_path / "reports")]
    assert cli.main(report) == 2
    assert capsys.readouterr().err == (
        f"bench: error: {workdir / 'results.jsonl'}: suite 'smoke', profile 'default' has runs "
        "at the seeds 5, 6; choose one with --seed\n")
    assert cli.main([*report, "--seed", "6"]) == 0
    text = (tmp_path / "reports" / "smoke.md").read_text()
    assert "bench run --suite smoke --profile default --seed 6 --methods random`" in text
    assert "| `random` |" in text and "pixel-logreg" not in text  # the seed-5 runs left out
    assert cli.main([*report, "--seed", "7"]) == 2
    assert "no results for suite 'smoke' and profile 'default' at --seed 7" in \
        capsys.readouterr().err
    # An invalid profile is refused as such, not suggested to bench run.
    with pytest.raises(SystemExit):
        cli.main([*report, "--profile", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_a_torn_last_line_loses_no_record(smoke_run, tmp_path):
    # A crash in the middle of an append leaves half a record and no newline: the next --resume
    # must not glue its record onto it, and the report must name a bad line and go on.
    import shutil
    import warnings

    from lensbench.bench.results import ResultsStoreWarning

    workdir = tmp_path / "work"
    shutil.copytree(smoke_run[0], workdir)
    store = workdir / "results.jsonl"
    # The fixture's own three runs (other tests may have appended theirs).
    lines = [line for line in store.read_bytes().splitlines(keepends=True)
             if json.loads(line)["run_id"] in ("random", "boom", "pixel-logreg")]
    assert [json.loads(line)["method"] for line in lines] == ["random", "boom", "pixel-logreg"]
    torn = lines[-1][:len(lines[-1]) // 2]
    store.write_bytes(b"".join(lines[:-1]) + torn)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["run", "--suite", "smoke", "--workdir", str(workdir), "--no-tracking",
                         "--methods", "random,pixel-logreg", "--seed", "5", "--resume"]) == 0
    messages = [str(w.message) for w in caught if w.category is ResultsStoreWarning]
    assert len(messages) == 2, messages
    assert "results.jsonl: skipped 1 line(s) that are not Result records: line 3 is not JSON" \
        in messages[0]  # read by --resume
    assert "the last line was torn" in messages[1]  # moved aside by the append
    [aside] = workdir.glob("results.jsonl.torn-*")
    assert aside.read_bytes() == torn
    text = store.read_text()
    assert text.endswith("\n") and text.startswith(b"".join(lines[:-1]).decode())
    by_method = {r.method: r for r in read_results(store)}  # no warning: the store is clean
    assert sorted(by_method) == ["boom", "pixel-logreg", "random"]
    assert by_method["pixel-logreg"].status == "ok"

    # A bad line in the middle (a hand edit) is named and skipped; the report is written.
    good = store.read_text().splitlines(keepends=True)
    store.write_text("".join([good[0], "{not json\n", *good[1:]]))
    with pytest.warns(ResultsStoreWarning, match=r"results.jsonl: skipped 1 line.*line 2 is "
                                                 r"not JSON"):
        assert cli.main(["report", "--suite", "smoke", "--workdir", str(workdir), "--out",
                         str(tmp_path / "report")]) == 0
    assert "| `pixel-logreg` |" in (tmp_path / "report" / "smoke.md").read_text()

    # A record whose fields have the wrong types (a hand edit) is named by its field and
    # skipped, as not done: --resume runs it again instead of failing in the report.
    records = [json.loads(line) for line in good]
    edited = next(r for r in records if r["method"] == "pixel-logreg")
    edited["metrics"]["auroc"] = "high"
    store.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.warns(ResultsStoreWarning, match=r"field 'metrics' must be an object of "
                                                 r"numbers keyed by strings, got \{'auroc': "
                                                 r"'high'"):
        assert cli.main(["run", "--suite", "smoke", "--workdir", str(workdir), "--no-tracking",
                         "--methods", "random,pixel-logreg", "--seed", "5", "--resume"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResultsStoreWarning)
        rerun = [r for r in read_results(store) if r.method == "pixel-logreg"]
    assert rerun and isinstance(rerun[-1].metrics["auroc"], float)


def test_a_damaged_run_artefact_is_named_by_the_report(smoke_run, tmp_path, capsys):
    import shutil
    from pathlib import Path

    workdir = tmp_path / "work"
    shutil.copytree(smoke_run[0], workdir)
    # every stored scores file of the store (other tests in this module may add runs to it)
    stored = {workdir / r.artifacts["scores"] for r in read_results(workdir / "results.jsonl")
              if r.status == "ok" and "scores" in r.artifacts}
    report = ["report", "--suite", "smoke", "--workdir", str(workdir), "--out",
              str(tmp_path / "reports")]
    for damage, message in ((lambda path: path.write_bytes(path.read_bytes()[:100]),
                             "a damaged run artefact (BadZipFile"),
                            (lambda path: np.savez(path, scores=np.zeros(3)),
                             "a run artefact without the array(s) labels")):
        for path in stored:
            damage(path)
        assert cli.main(report) == 2
        err = capsys.readouterr().err
        named = err.removeprefix("bench: error: ").split(": ")[0]
        assert Path(named) in stored and message in err and "Traceback" not in err, err


def test_a_record_with_a_field_of_the_wrong_type_is_named(tmp_path):
    from lensbench.bench.results import Result

    base = dict(run_id="r", method="r", task="t", suite="s", profile="p", params={},
                split_hashes={}, seed=0, status="ok", schema_version=1)
    assert Result.from_dict(base).status == "ok"
    for field, value, message in (("seed", "abc", "field 'seed' must be an integer"),
                                  ("params", None, "field 'params' must be an object"),
                                  ("status", "weird", "field 'status' must be one of ok"),
                                  ("metrics", [1, 2], "field 'metrics' must be an object of "
                                                      "numbers")):
        with pytest.raises(TypeError, match=message):
            Result.from_dict({**base, field: value})


def test_a_record_missing_only_its_newline_is_kept(tmp_path):
    from lensbench.bench.results import Result, append_result

    store = tmp_path / "results.jsonl"
    first, second = (Result(run_id=name, method=name, task="t", suite="s", profile="p",
                            params={}, split_hashes={}, seed=0, status="ok")
                     for name in ("a", "b"))
    store.write_text(first.to_json())  # cut just before its newline
    append_result(store, second)
    assert [r.run_id for r in read_results(store)] == ["a", "b"]
    assert list(tmp_path.iterdir()) == [store]


@pytest.mark.parametrize("argv, flag", [
    (["data", "make", "--out", "{file}/sub"], "--out {file}/sub: {file} is a file"),
    (["data", "make", "--out", "{file}"], "--out {file} is a file"),
    (["data", "make", "--out", "{folder}"], "--out {folder} exists and is not a lensbench split"),
    (["run", "--suite", "smoke", "--no-tracking", "--workdir", "{file}"], "--workdir {file}"),
    (["run", "--suite", "metcalf", "--no-tracking", "--tasks", "ground,vis"],
     "--tasks: suite 'metcalf' has no task 'vis'"),
    (["report", "--suite", "smoke", "--out", "{file}/x"], "--out {file}/x: {file} is a file"),
    (["data", "make", "--n", "-5"], "argument --n: expected an integer >= 1, got -5"),
    (["data", "make", "--n", "0"], "argument --n: expected an integer >= 1, got 0"),
    (["data", "make", "--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
    (["data", "make", "--set", "field_density=abc"],
     "--set field_density: SimConfig.field_density must be a number, got 'abc'"),
    (["data", "make", "--config", "{file}"], "--config {file}: not JSON: Expecting value"),
    (["run", "--suite", "smoke", "--no-tracking", "--scheduler", "foo"],
     "argument --scheduler: missing port number in address 'foo'; expected"),
    (["predict", "--model", "{file}", "--catalog", "{file}", "--out", "{folder}"],
     "--out {folder} is a folder"),
    (["scan", "--model", "{file}", "--cutouts", "{folder}", "--out", "{folder}"],
     "--out {folder} is a folder"),
])
def test_bad_arguments_are_one_line_errors_naming_the_flag(argv, flag, tmp_path, capsys):
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    folder = tmp_path / "my-data"  # a folder that is not a split: never replaced
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    if argv[:2] == ["data", "make"]:  # the other arguments valid
        defaults = {"--preset": "hsc", "--n": "4", "--seed": "0", "--out": str(tmp_path / "s")}
        for option, value in defaults.items():
            if option not in argv:
                argv = [*argv, option, value]
    argv = [arg.format(file=file, folder=folder) for arg in argv]
    if argv[0] in ("run", "report"):
        argv += [] if "--workdir" in argv else ["--workdir", str(tmp_path / "work")]
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err
    assert last.startswith("bench") and flag.format(file=file, folder=folder) in last, err
    assert (folder / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "s").exists() and not (tmp_path / "work").exists()


def test_report_is_written_from_results(smoke_run, tmp_path):
    workdir, _ = smoke_run
    assert cli.main(["report", "--suite", "smoke", "--workdir", str(workdir), "--out",
                     str(tmp_path)]) == 0
    text = (tmp_path / "smoke.md").read_text()
    assert "| `pixel-logreg` |" in text and "boom" in text and "failed" in text
    assert "--seed 5" in text and "smoke-ground" in text
    assert (tmp_path / "smoke-smoke-ground-roc.png").stat().st_size > 1000
    assert "<table>" in (tmp_path / "smoke.html").read_text()


def test_list_shows_suites_tasks_and_methods(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in [*SUITES, *METHODS, "metcalf-ground", "metcalf-space", "hsc-holismokes"]:
        assert name in out
    # The default profile's params: the suite's, and a task's own under the task.
    lines = out.splitlines()
    [own] = [n for n, line in enumerate(lines) if "its own params:" in line]
    assert lines[own].strip() == "its own params: committee members=5, max_epochs=40, " \
                                 "patience=None, lens_light_profile=sersic-clipped, " \
                                 "lens_light_keep_image=True, stages=4"
    assert lines[own - 1].strip().startswith(f"task real-vis v{REAL_VIS.version}")
    assert "params: committee lens_light=True" in out


def test_metcalf_tasks_follow_the_challenge():
    ground, space = get_suite("metcalf").tasks
    assert ground.config.band_names == ("u", "g", "r", "i") and ground.config.size == 101
    assert space.config.band_names == ("VIS",) and space.config.psf_fwhm_override == 0.18
    for task in (ground, space):
        assert task.size("challenge") == (20_000, 100_000)
        assert task.config.labelling == "metcalf"
    hsc = get_suite("hsc").tasks[0]
    assert hsc.config.band_names == ("g", "r", "i", "z") and hsc.config.size == 64


def test_data_make_show_and_corruption(tmp_path, capsys):
    out = tmp_path / "split"
    args = ["data", "make", "--preset", "hsc", "--n", "40", "--seed", "1", "--out", str(out),
            "--set", "stamp_size=24", "--set", "shard_size=16"]
    assert cli.main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["counts"]["n"] == 40
    assert len(manifest["shards"]) == 3 and manifest["config"]["survey"] == "hsc"
    assert cli.main(["data", "show", str(out), "--out", str(tmp_path / "grid.png"),
                     "--n", "12"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 1000
    # Same config and seed: identical bytes.
    again = tmp_path / "again"
    assert cli.main([*args[:-6], "--out", str(again), *args[-4:]]) == 0
    for shard in manifest["shards"]:
        assert (out / shard["file"]).read_bytes() == (again / shard["file"]).read_bytes()
    # A flipped byte is refused with the file's name.
    shard = out / manifest["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert cli.main(["data", "show", str(out), "--out", str(tmp_path / "g2.png")]) == 2
    assert manifest["shards"][1]["file"] in capsys.readouterr().err


def test_cli_errors_are_clear(tmp_path, capsys):
    assert cli.main(["run", "--suite", "metcalff", "--workdir", str(tmp_path),
                     "--no-tracking"]) == 2
    assert "Did you mean 'metcalf'" in capsys.readouterr().err
    assert cli.main(["data", "make", "--preset", "hsc", "--n", "4", "--seed", "1", "--out",
                     str(tmp_path / "x"), "--set", "q_range=[0.5, 1.5]"]) == 2
    assert "axis ratio q must lie in (0, 1]" in capsys.readouterr().err


def test_threshold_at_fpr_by_hand():
    from lensbench.bench.suites.lens_finding import real_lens_metrics, threshold_at_fpr

    labels = np.array([0] * 10 + [1, 1])
    scores = np.array([0.1 * k for k in range(10)] + [0.95, 0.5])
    # FPR 0.1 allows one of ten non-lenses above: the threshold is the second-highest (0.8).
    assert threshold_at_fpr(labels, scores, 0.1) == pytest.approx(0.8)
    assert threshold_at_fpr(labels, scores, 0.0) == pytest.approx(0.9)
    metrics = real_lens_metrics(np.array([1, 1, 0]), np.array([0.95, 0.5, 0.85]), 0.8)
    assert metrics["real/recovered_fpr1e-3"] == 1 and metrics["real/known_lenses"] == 2
    assert metrics["real/nonlenses_above_fpr1e-3"] == 1
    assert metrics["real/score/lens1"] == 0.5


def test_real_suite_scores_known_lenses_and_names_its_files(real_suite_smoke):
    _, results = real_suite_smoke  # shared with test_real_diagnosis (conftest.py)
    (result,) = [r for r in results if r.task == "real-hsc"]  # real-vis: test_real_diagnosis
    assert result.status == "ok", result.error
    assert result.metrics["real/known_lenses"] >= 5
    assert 0 <= result.metrics["real/recovered_fpr1e-3"] <= result.metrics["real/known_lenses"]
    # Every real file the run touched is named with its sha256.
    assert result.data_files and all(len(h) == 64 for h in result.data_files.values())
    assert any("slacs" in name for name in result.data_files)


class CornerPixel(Method):
    """Scores by one corner pixel: as far from rotation invariant as a method can be."""

    def fit(self, X, y, info=None):
        self.fitted_ = True
        return self

    def predict_score(self, X):
        return np.asarray(X)[:, 0, 0, 0]


class TotalFlux(CornerPixel):
    def predict_score(self, X):
        return np.asarray(X).sum(axis=(1, 2, 3))


def test_rotation_metrics_separate_invariant_from_orientation_bound_methods():
    from lensbench.bench.suites.lens_finding import rotation_metrics

    X = np.zeros((4, 1, 3, 3))
    X[:, 0, 0, 0] = 1.0  # a bright top-left corner: moved away by 6 of the 7 other transforms
    y = np.array([0, 1, 0, 1])
    bound = rotation_metrics(CornerPixel(), X, y)
    # k = 0..7: identity, rot90, rot180, rot270, then each flipped left-right. The top-left
    # pixel stays put only under the identity and one flipped rotation (the transpose).
    assert bound["rotation/mean_abs_change"] == pytest.approx(6 / 7)
    assert bound["rotation/max_abs_change"] == 1.0
    invariant = rotation_metrics(TotalFlux(), X, y)
    assert invariant["rotation/mean_abs_change"] == invariant["rotation/max_abs_change"] == 0
    assert invariant["rotation/tpr0_spread"] == 0 and invariant["rotation/n_cutouts"] == 4


def test_tasks_option_runs_the_named_tasks_with_their_own_seeds(tmp_path, monkeypatch, capsys):
    import dataclasses

    from lensbench.bench.tasks import SMOKE_TASK, Suite

    other = dataclasses.replace(SMOKE_TASK, name="smoke-other")
    suite = Suite("two", "two smoke tasks", (SMOKE_TASK, other), {"default": ("random",)})
    monkeypatch.setitem(SUITES, "two", suite)
    every = run_suite(suite, profile="smoke", seed=4, workdir=tmp_path / "all",
                      log=lambda _: None)
    assert cli.main(["run", "--suite", "two", "--profile", "smoke", "--seed", "4", "--tasks",
                     "other", "--workdir", str(tmp_path / "one"), "--no-tracking"]) == 0
    [only] = read_results(tmp_path / "one" / "results.jsonl")
    [same] = [r for r in every if r.task == "smoke-other"]
    assert (only.task, only.seed) == (same.task, same.seed)
    np.testing.assert_equal(only.metrics, same.metrics)  # NaN-aware (empty bins)
    assert only.split_hashes == same.split_hashes
    # The next step it suggests finds this run's results; without the profile, the report
    # says which profile the store has.
    suggested = capsys.readouterr().out.splitlines()[-1].split("`")[1]
    assert suggested == f"bench report --suite two --profile smoke --workdir {tmp_path / 'one'}"
    assert cli.main([*suggested.split()[1:], "--out", str(tmp_path / "reports")]) == 0
    assert cli.main(["report", "--suite", "two", "--workdir", str(tmp_path / "one")]) == 2
    assert "it has the profile(s) smoke: `bench report --suite two --profile smoke`" in \
        capsys.readouterr().err


def test_profile_params_tasks_without_the_profile_and_report_names(tmp_path, monkeypatch):
    import dataclasses

    from lensbench.bench.tasks import SMOKE_TASK, Suite

    compare_task = dataclasses.replace(SMOKE_TASK, name="with-compare",
                                       sizes={"compare": (256, 256)})
    suite = Suite("profiled", "a suite with a compare profile", (SMOKE_TASK, compare_task),
                  {"compare": ("pixel-logreg",)}, {"compare": {"pixel-logreg": {"C": 0.5}}})
    monkeypatch.setitem(SUITES, "profiled", suite)
    lines = []
    results = run_suite(suite, profile="compare", seed=1, workdir=tmp_path, log=lines.append)
    # The task without a compare size is skipped, saying so; the suite's params are used.
    assert any("smoke-ground has no 'compare' profile" in line for line in lines)
    assert [(r.run_id, r.task) for r in results] == [("pixel-logreg[C=0.5]", "with-compare")]
    # The user's params win over the suite's.
    [result] = run_suite(suite, profile="compare", seed=1, workdir=tmp_path,
                         params={"pixel-logreg": {"C": 2.0}}, log=lines.append)
    assert result.params == {"C": 2.0}
    assert cli.main(["report", "--suite", "profiled", "--profile", "compare", "--workdir",
                     str(tmp_path), "--out", str(tmp_path / "reports")]) == 0
    assert (tmp_path / "reports" / "profiled-compare.md").exists()
    assert (tmp_path / "reports" / "profiled-compare-with-compare-roc.png").exists()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter 7, 9
def test_a_tasks_own_method_params_come_between_the_suites_and_the_users(tmp_path, monkeypatch):
    import dataclasses

    from lensbench.bench.report import run_command
    from lensbench.bench.tasks import SMOKE_TASK, Suite

    longer = dataclasses.replace(SMOKE_TASK, name="smoke-longer", method_params={
        "default": {"pixel-logreg": {"max_iter": 7}}})
    suite = Suite("per-task", "one task with its own params", (SMOKE_TASK, longer),
                  {"default": ("pixel-logreg",)},
                  {"default": {"pixel-logreg": {"C": 0.5, "max_iter": 50}}})
    assert suite.params_for("default", longer) == {"pixel-logreg": {"C": 0.5, "max_iter": 7}}
    assert suite.params_for("default") == {"pixel-logreg": {"C": 0.5, "max_iter": 50}}
    assert suite.params_for("smoke", longer) == {}
    results = run_suite(suite, profile="default", seed=1, workdir=tmp_path, log=lambda _: None)
    by_task = {r.task: r for r in results}
    assert by_task["smoke-ground"].params == {"C": 0.5, "max_iter": 50}
    assert by_task["smoke-longer"].params == {"C": 0.5, "max_iter": 7}
    assert by_task["smoke-longer"].run_id == "pixel-logreg[C=0.5,max_iter=7]"
    [user] = run_suite(dataclasses.replace(suite, tasks=(longer,)), profile="default", seed=1,
                       workdir=tmp_path, params={"pixel-logreg": {"max_iter": 9}},
                       log=lambda _: None)
    assert user.params == {"C": 0.5, "max_iter": 9}
    # The report's command line needs no --param for either task's own defaults (thread
    # counts left out: their OMP_NUM_THREADS prefix is another test's).
    monkeypatch.setitem(SUITES, "per-task", suite)
    results = [dataclasses.replace(r, threads={}) for r in results]
    user = dataclasses.replace(user, threads={})
    assert run_command("per-task", "default", results, [1]) == \
        "bench run --suite per-task --profile default --seed 1"
    assert run_command("per-task", "default", [user], [1]) == \
        "bench run --suite per-task --profile default --seed 1 --param pixel-logreg.max_iter=9"


def test_report_lists_known_lens_scores_in_split_order():
    from lensbench.bench.results import Result
    from lensbench.bench.suites.lens_finding import known_lens_score_lines

    metrics = {f"real/score/lens{i}": i / 100 for i in range(12)}
    metrics["real/threshold_fpr1e-3"] = 0.5
    result = Result(run_id="m", method="m", task="t", suite="s", profile="default", params={},
                    split_hashes={}, seed=0, status="ok", metrics=metrics)
    [line] = [x for x in known_lens_score_lines([result]) if x.startswith("- ")]
    assert line == ("- `m`: threshold 0.5; known-lens scores "
                    + ", ".join(f"{i / 100:.3g}" for i in range(12)))


def test_auroc_by_negative_class_pits_every_lens_against_one_class_at_a_time():
    from lensbench.bench.suites.lens_finding import auroc_by_negative_class

    # Lenses 0.9 and 0.6. Ellipticals (class 0) 0.1, 0.2: both lenses above both, AUROC 1.
    # Spirals (class 1) 0.7, 0.95: of the 4 pairs only 0.9 > 0.7 is won, AUROC 0.25. Rings
    # (class 2) 0.6: tied with one lens (half a pair) and below the other, (1 + 0.5) / 2.
    # No class 3 at all, and a lens's own class entry (0 here) is ignored.
    labels = np.array([1, 1, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.6, 0.1, 0.2, 0.7, 0.95, 0.6])
    negative_class = np.array([0, 0, 0, 0, 1, 1, 2])
    assert auroc_by_negative_class(labels, scores, negative_class) == {
        "elliptical": (1.0, 2), "spiral": (0.25, 2), "ring": (0.75, 1)}


def test_stored_file_is_a_finished_runs_existing_artefact(tmp_path):
    from lensbench.bench.results import Result

    (tmp_path / "scores.npz").write_bytes(b"x")

    def run(status, artifacts):
        return Result(run_id="m", method="m", task="t", suite="s", profile="default", params={},
                      split_hashes={}, seed=0, status=status, artifacts=artifacts)

    assert run("ok", {"scores": "scores.npz"}).stored_file("scores", tmp_path) == (
        tmp_path / "scores.npz")
    assert run("failed", {"scores": "scores.npz"}).stored_file("scores", tmp_path) is None
    assert run("ok", {"scores": "gone.npz"}).stored_file("scores", tmp_path) is None
    assert run("ok", {}).stored_file("scores", tmp_path) is None


def test_leader_change_lines_set_the_runners_up_against_the_leader(tmp_path):
    from lensbench.bench.metrics import auroc, tpr_at_fpr
    from lensbench.bench.results import Result
    from lensbench.bench.suites.lens_finding import LEADER_RIVALS, leader_change_lines

    labels = np.repeat([0, 1], 500)
    perfect = np.r_[np.arange(500) / 1000, np.linspace(0.6, 1.0, 500)]

    def run(name, scores, test_hash="abc"):
        np.savez(tmp_path / f"{name}.npz", labels=labels, scores=scores, test_hash=test_hash)
        return Result(run_id=name, method=name, task="t", suite="s", profile="default",
                      params={}, split_hashes={}, seed=0, status="ok",
                      artifacts={"scores": f"{name}.npz"},
                      metrics={"auroc": auroc(labels, scores)})

    # ``below`` lenses under every non-lens: AUROC 1 - below / 500, TPR at FPR 1e-3 (no
    # non-lens may pass, as 1e-3 of 500 is below one) 1 - below / 500.
    weaker = {}
    for below in (10, 20, 30, 40):
        scores = perfect.copy()
        scores[500:500 + below] = -1.0
        weaker[below] = scores
    runs = [run(f"weaker{below}", scores) for below, scores in weaker.items()]
    runs += [run("leader", perfect), run("twin", perfect.copy()),
             run("elsewhere", perfect, test_hash="other")]
    lines = leader_change_lines(runs, tmp_path)
    assert "minus `leader`" in lines[1]
    rows = [line for line in lines if line.startswith("| `")]
    # The best AUROC leads; the twin ties it exactly; a run on other cutouts is left out; and
    # only LEADER_RIVALS runners-up are shown, in the order of their AUROC.
    assert [row.split("`")[1] for row in rows] == ["twin", "weaker10", "weaker20"][:LEADER_RIVALS]
    assert rows[0] == ("| `twin` | +0.0000 [+0.0000, +0.0000] | +0.000 [+0.000, +0.000] | "
                       "+0.000 [+0.000, +0.000] |")
    # weaker10: every change is -0.02 observed, and no resample can favour it over a leader
    # that separates the classes in every resample.
    assert tpr_at_fpr(labels, weaker[10], 1e-3) == pytest.approx(0.98)
    cells = rows[1].split(" | ")[1:]
    assert cells[0].startswith("-0.0200 [") and cells[2].startswith("-0.020 [")
    for cell in cells:
        low, high = (float(x) for x in cell.split("[")[1].rstrip("] |").split(", "))
        assert low < 0 and high <= 0
    # One scored run alone has nothing to be compared with.
    assert leader_change_lines([runs[4]], tmp_path) == []


def test_leader_change_table_reads_only_what_its_rows_need():
    from types import SimpleNamespace

    from lensbench.bench.statistics import leader_change_table

    ranked = [SimpleNamespace(run_id=name) for name in ("unstored", "a", "b", "c", "d", "e")]
    stored = {"a": 10.0, "b": 7.0, "c": None, "d": 4.0, "e": 1.0}  # c: other test objects
    loaded = []

    def load(r):
        loaded.append(r.run_id)
        return None if r.run_id == "unstored" else r.run_id

    def change(name, leader_name):
        if stored[name] is None:
            return None
        return {"x": (stored[name] - stored[leader_name], -1.0, 0.5)}

    lines = leader_change_table(ranked, load, change, (("X", "x", 1),), "objects", limit=2)
    # The first run with stored data leads; a run whose change is refused takes no row; the
    # limit stops the reading: "e" is never loaded.
    assert "minus `a`" in lines[1]
    assert [line for line in lines if line.startswith("| `")] == [
        "| `b` | -3.0 [-1.0, +0.5] |", "| `d` | -6.0 [-1.0, +0.5] |"]
    assert loaded == ["unstored", "a", "b", "c", "d"]
    assert leader_change_table(ranked[:2], load, change, (("X", "x", 1),), "objects") == []


def test_paired_bootstrap_names_an_unknown_metric():
    from lensbench.bench.statistics import paired_bootstrap

    with pytest.raises(ValueError, match="tpr0.*known: \\['auroc'"):
        paired_bootstrap(np.array([0, 1]), np.array([0.1, 0.9]), None, metrics=("tpr0",))


def test_compare_goal_is_checked_on_unrounded_metrics_with_intervals(tmp_path):
    from lensbench.bench.metrics import auroc, tpr0, tpr10
    from lensbench.bench.results import Result
    from lensbench.bench.suites.lens_finding import compare_goal_lines

    labels = np.repeat([0, 1], 500)
    results = []
    # Non-lenses score 0..0.499; lenses above them all but for ``below`` lenses under every
    # non-lens and one under ``partly`` of them: AUROC = 1 - (500 below + partly) / 500^2.
    for method, below, partly in (("committee", 10, 25), ("deeplens", 20, 0)):
        scores = np.r_[np.arange(500) / 1000, np.linspace(0.6, 1.0, 500)]
        scores[500:500 + below] = -1.0
        scores[500 + below] = (500 - partly - 0.5) / 1000
        path = tmp_path / f"{method}.npz"
        np.savez(path, labels=labels, scores=scores, test_hash="abc")
        results.append(Result(
            run_id=method, method=method, task="t", suite="metcalf", profile="compare",
            params={}, split_hashes={}, seed=0, status="ok", artifacts={"scores": path.name},
            metrics={"auroc": auroc(labels, scores), "tpr0": tpr0(labels, scores),
                     "tpr10": tpr10(labels, scores)}))
    committee_auroc = results[0].metrics["auroc"]
    assert committee_auroc == pytest.approx(1 - 5025 / 500**2)  # 0.9799: "0.980", still short
    lines = compare_goal_lines(results, tmp_path, {}, COMPARE_GOAL)
    goal = next(line for line in lines if line.startswith("Goal (issue 6)"))
    assert "TPR10" in goal and f"AUROC {committee_auroc:.4f} >= 0.98: NO" in goal
    intervals = next(line for line in lines if line.startswith("95% bootstrap"))
    assert "minus `deeplens`: AUROC +" in intervals
    # Without DeepLens there is nothing to compare against.
    assert compare_goal_lines(results[:1], tmp_path, {}, COMPARE_GOAL) == []


def test_compare_goal_uses_the_profiles_configured_run(tmp_path):
    """A leaderboard may hold committee runs of several configurations; the goal line judges the
    one with the compare profile's own parameters, whichever was run last."""
    from lensbench.bench.results import Result, canonical_run_id
    from lensbench.bench.suites.lens_finding import compare_goal_lines
    from lensbench.bench.tasks import get_suite

    params = get_suite("metcalf").params_for("compare")

    def result(method, run_id, tpr0):
        return Result(run_id=run_id, method=method, task="t", suite="metcalf",
                      profile="compare", params={}, split_hashes={}, seed=0, status="ok",
                      metrics={"auroc": 0.99, "tpr0": tpr0, "tpr10": 0.9})

    configured = canonical_run_id("committee", params["committee"])
    results = [result("deeplens", canonical_run_id("deeplens", params["deeplens"]), 0.5),
               result("committee", configured, 0.7),
               result("committee", "committee[width=8]", 0.1)]
    lines = compare_goal_lines(results, tmp_path, params, COMPARE_GOAL)
    goal = next(x for x in lines if x.startswith("Goal"))
    assert f"`{configured}` against" in goal and "TPR0 0.700 > 0.500: yes" in goal
    # Without the configured run, the last committee run is judged.
    lines = compare_goal_lines(results[::2], tmp_path, params, COMPARE_GOAL)
    goal = next(x for x in lines if x.startswith("Goal"))
    assert "`committee[width=8]` against" in goal and "TPR0 0.100 > 0.500: NO" in goal


def test_a_split_in_the_folder_of_another_is_refused(tmp_path):
    import re
    import shutil

    from lensbench.bench.splits import ensure_split
    from lensbench.bench.tasks import SMOKE_TASK

    train = ensure_split(SMOKE_TASK, "train", "smoke", tmp_path, quiet=True)
    test = ensure_split(SMOKE_TASK, "test", "smoke", tmp_path, quiet=True)
    assert ensure_split(SMOKE_TASK, "train", "smoke", tmp_path).path == train.path  # reused
    # The test split copied over the training split's folder: its bytes verify, but it is not
    # the split that folder's name stands for; training on it would be training on the test set.
    shutil.rmtree(train.path)
    shutil.copytree(test.path, train.path)
    with pytest.raises(ValueError, match=rf"{re.escape(str(train.path))}: not the split its "
                                         r"folder name stands for: its manifest has another "
                                         r"seed; remove the folder"):
        ensure_split(SMOKE_TASK, "train", "smoke", tmp_path)



def test_splits_copied_from_another_workdir_are_used_as_they_are(tmp_path, monkeypatch):
    """How a machine of another arithmetic runs on the reports' bytes (README,
    Reproducibility): the `splits/` folder of a workdir made elsewhere, copied into its own, is
    found by key, verified and used, never simulated again."""
    import shutil

    from lensbench.bench.splits import ensure_split
    from lensbench.bench.tasks import SMOKE_TASK
    from lensbench.datasets import simulate

    elsewhere, here = tmp_path / "elsewhere", tmp_path / "here"
    made = {role: ensure_split(SMOKE_TASK, role, "smoke", elsewhere, quiet=True).content_hash
            for role in ("train", "test")}
    shutil.copytree(elsewhere / "splits", here / "splits")

    def no_simulation(*args, **kwargs):
        raise AssertionError("a copied split was simulated again")

    monkeypatch.setattr(simulate, "make_split", no_simulation)
    used = {role: ensure_split(SMOKE_TASK, role, "smoke", here, quiet=True)
            for role in ("train", "test")}
    assert {role: split.content_hash for role, split in used.items()} == made
    assert all(split.path.parent == here / "splits" for split in used.values())

def test_a_lens_finding_run_records_the_hash_of_the_real_lenses_it_scored():
    from types import SimpleNamespace

    from lensbench.bench.suites.lens_finding import LensFindingSplits

    train, test, real = (SimpleNamespace(content_hash=h) for h in ("a1", "b2", "c3"))
    assert LensFindingSplits(train, test, real).hashes == {"train": "a1", "test": "b2",
                                                           "real": "c3"}
    assert LensFindingSplits(train, test).hashes == {"train": "a1", "test": "b2"}


def test_the_store_is_strict_json_and_a_missing_metric_reads_back_as_nan(tmp_path):
    # Strict parsers (JavaScript's JSON.parse, Go's) refuse bare NaN: a metric of an empty bin
    # is stored as null, and read back as NaN.
    import math

    result = Result(run_id="r", method="random", task="t", suite="s", profile="p", params={},
                    split_hashes={}, seed=0, status="ok",
                    metrics={"auroc": 0.5, "tpr0": float("nan")})
    line = result.to_json()
    strict = json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in the store"))
    assert strict["metrics"] == {"auroc": 0.5, "tpr0": None}
    store = tmp_path / "results.jsonl"
    store.write_text(line + "\n")
    [back] = read_results(store)
    assert back.metrics["auroc"] == 0.5 and math.isnan(back.metrics["tpr0"])
