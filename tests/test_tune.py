"""`bench tune`: search spaces, validation-only objective, pruning, failures, resume, MLflow,
best-params hand-off, and two workers sharing a study on a real PostgreSQL server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from lensbench.baselines.contract import Method
from lensbench.baselines.registry import METHODS, resolve_method
from lensbench.bench import cli, tune
from lensbench.bench.results import read_results
from lensbench.bench.tasks import find_task, get_suite
from lensbench.bench.tracking import read_suite_runs


class EpochToy(Method):
    """Reports val_auroc = quality * epoch / 5 each epoch; fails when mode == 'boom'."""

    search_space = {"quality": {"type": "float", "low": 0.0, "high": 1.0},
                    "mode": {"type": "categorical", "choices": ["ok", "ok2", "boom"]}}

    def __init__(self, quality: float = 0.5, mode: str = "ok", random_state: int = 0):
        self.quality = quality
        self.mode = mode
        self.random_state = random_state

    def fit(self, X, y, info=None, epoch_callback=None):
        if self.mode == "boom":
            raise RuntimeError("boom trial")
        for epoch in range(1, 6):
            if epoch_callback is not None:
                epoch_callback(epoch, {"val_auroc": self.quality * epoch / 5})
        self.rng_ = np.random.default_rng(self.random_state)
        return self

    def predict_score(self, X):
        brightness = X.reshape(len(X), -1).mean(axis=1)
        return self.quality * brightness + self.rng_.normal(0, 1e-3, len(X))


class MemberToy(EpochToy):
    """A committee reporting member by member, as committee-regressor does: member m's
    val_auroc = quality * epoch / 5 * (1 - m / 2), each member's epochs counted from 1."""

    def fit(self, X, y, info=None, epoch_callback=None):
        for member in (0, 1):
            for epoch in range(1, 6):
                if epoch_callback is not None:
                    epoch_callback(epoch, {f"member{member}/val_auroc":
                                           self.quality * epoch / 5 * (1 - member / 2)})
        self.rng_ = np.random.default_rng(self.random_state)
        return self


@pytest.fixture
def toy_method():
    METHODS["epoch-toy"] = f"{__name__}:EpochToy"
    yield "epoch-toy"
    del METHODS["epoch-toy"]


def test_search_space_types_and_errors():
    study = optuna.create_study()
    trial = study.ask()
    params = tune.suggest(trial, {"a": {"type": "float", "low": 1e-3, "high": 1, "log": True},
                                  "b": {"type": "int", "low": 2, "high": 8},
                                  "c": {"type": "categorical", "choices": ["x", "y"]}})
    assert 1e-3 <= params["a"] <= 1 and 2 <= params["b"] <= 8 and params["c"] in ("x", "y")
    with pytest.raises(ValueError, match="unknown type 'bool'"):
        tune.suggest(study.ask(), {"d": {"type": "bool"}})
    # crops are held to the task's stamp: a wider one crops nothing and repeats a trial
    space = {"crop": {"type": "categorical", "choices": [32, 48, 64, 101], "at_most": "stamp"},
             "side": {"type": "int", "low": 16, "high": 64, "at_most": "stamp"},
             "lr": {"type": "float", "low": 1e-4, "high": 1e-2}}
    fitted = tune.fit_space_to_stamp(space, (4, 48, 48))
    assert fitted["crop"]["choices"] == [32, 48] and fitted["side"]["high"] == 48
    assert fitted["lr"] == space["lr"] and space["crop"]["choices"] == [32, 48, 64, 101]
    assert tune.fit_space_to_stamp(space, (1, 20, 24))["crop"]["choices"] == [20]
    assert (lambda s: (s["low"], s["high"]))(tune.fit_space_to_stamp(space, (1, 12, 12))["side"]) \
        == (12, 12)
    with pytest.raises(KeyError, match="its tasks: smoke-ground"):
        tune.find_task(get_suite("smoke"), "space")


class SealedParts(dict):
    """A photo-z split's parts with the test part sealed: reading it fails the test."""

    def __getitem__(self, role):
        if role == "test":
            raise AssertionError("a tuning study read the photo-z test part")
        return super().__getitem__(role)


@pytest.fixture
def loaded_splits(monkeypatch):
    """The names of the simulated splits loaded (every kind's go through bench.splits), with the
    test part of the real photo-z splits sealed."""
    from lensbench.bench import splits
    from lensbench.datasets import photoz

    names = []
    real_load, real_photoz = splits.load_split, photoz.ensure_photoz_split

    def recording_load(path, *args, **kwargs):
        names.append(Path(path).name)
        return real_load(path, *args, **kwargs)

    def sealed(*args, **kwargs):
        split = real_photoz(*args, **kwargs)
        names.append(f"photoz {split.name}, test part sealed")
        split.parts = SealedParts(split.parts)
        return split

    monkeypatch.setattr(splits, "load_split", recording_load)
    monkeypatch.setattr(photoz, "ensure_photoz_split", sealed)
    return names


def test_tuning_prunes_records_failures_and_never_reads_the_test_split(tmp_path, loaded_splits,
                                                                        toy_method):
    outcome = tune.tune(get_suite("smoke"), "ground", toy_method, trials=8, workdir=tmp_path,
                        pruner="median", tracker=None, log=lambda _: None)
    assert [name.split("-")[3] for name in loaded_splits] == ["train"]
    assert [p.name.split("-")[3] for p in (tmp_path / "splits").iterdir()] == ["train"]
    study = optuna.load_study(study_name=outcome.study_name, storage=tune.make_storage(
        None, tmp_path))
    states = [t.state for t in study.trials]
    assert sum(state in tune.COUNTED for state in states) == 8  # failures do not count
    assert optuna.trial.TrialState.FAIL in states  # mode == "boom", and the study went on
    assert optuna.trial.TrialState.PRUNED in states
    assert json.loads(outcome.params_file.read_text()) == {toy_method: outcome.best_params}
    # Rerunning the same command resumes: the study already holds 8 counted trials.
    again = tune.tune(get_suite("smoke"), "ground", toy_method, trials=10, workdir=tmp_path,
                      tracker=None, log=lambda _: None)
    counted = [t for t in study.get_trials() if t.state in tune.COUNTED]
    assert len(counted) == 10 and again.n_trials == len(study.get_trials())


def test_a_committee_reporting_member_by_member_is_pruned_on_its_first_member(
        tmp_path, loaded_splits):
    METHODS["member-toy"] = f"{__name__}:MemberToy"
    try:
        outcome = tune.tune(get_suite("smoke"), "ground", "member-toy", trials=8,
                            workdir=tmp_path, pruner="median", tracker=None,
                            fixed_params={"mode": "ok"}, log=lambda _: None)
    finally:
        del METHODS["member-toy"]
    study = optuna.load_study(study_name=outcome.study_name, storage=tune.make_storage(
        None, tmp_path))
    assert optuna.trial.TrialState.PRUNED in [t.state for t in study.trials]
    assert all(trial.intermediate_values for trial in study.trials)
    for trial in study.trials:  # the first member's curve, not the second's (half as high)
        quality = trial.params["quality"]
        assert trial.intermediate_values == pytest.approx(
            {epoch: quality * epoch / 5 for epoch in trial.intermediate_values})


def test_cli_tune_logs_to_mlflow_and_hands_best_params_to_run(tmp_path, capsys):
    args = ["tune", "--suite", "smoke", "--task", "ground", "--method", "pixel-logreg",
            "--trials", "3", "--workdir", str(tmp_path)]
    assert cli.main(args) == 0
    uri = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    runs = read_suite_runs(uri, "lensbench-tune-smoke")
    parents = [r for r in runs if r["parent_run_id"] is None]
    trials = [r for r in runs if r["parent_run_id"] is not None]
    assert len(parents) == 1 and len(trials) == 3
    assert all(0 < t["metrics"]["value"] <= 1 and "C" in t["params"] for t in trials)
    from mlflow.tracking import MlflowClient

    artefacts = {a.path for a in MlflowClient(uri).list_artifacts(parents[0]["run_id"])}
    assert {"history.png", "importances.png", "best_params.json"} <= artefacts
    params_file = next((tmp_path / "tune").glob("*/best_params.json"))
    best = json.loads(params_file.read_text())["pixel-logreg"]
    assert cli.main(["run", "--suite", "smoke", "--methods", "pixel-logreg", "--params",
                     str(params_file), "--workdir", str(tmp_path), "--no-tracking"]) == 0
    (result,) = read_results(tmp_path / "results.jsonl")
    assert result.params == best and result.run_id.startswith("pixel-logreg[C=")


def test_two_workers_share_a_study_on_postgresql(postgres_url, tmp_path):
    from lensbench.bench.splits import ensure_split

    task = get_suite("smoke").tasks[0]
    ensure_split(task, "train", "default", tmp_path, quiet=True)  # both workers reuse it
    command = [sys.executable, "-m", "lensbench.bench.cli", "tune", "--suite", "smoke",
               "--task", "ground", "--method", "pixel-logreg", "--trials", "6", "--study",
               "shared", "--storage", postgres_url, "--workdir", str(tmp_path),
               "--no-tracking"]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    numbers = [int(line.split()[1].rstrip(":")) for out in outputs for line in out.splitlines()
               if line.startswith("trial ")]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert len(study.trials) >= 6
    # Every trial is recorded exactly once: each number was run by one worker only.
    assert sorted(numbers) == sorted(t.number for t in study.trials)
    assert len(set(numbers)) == len(numbers)


# Every kind through the CLI on the smoke profile: a 2-trial study completes on the validation
# part only, and its best_params.json is what `bench run --params` takes. The fixed --param
# values keep the trials small (the design study's committee: one tiny member, one epoch).
KIND_STUDIES = {
    "lens-finding": ("smoke", "ground", "pixel-logreg", [], (), "auroc", "maximize"),
    "photoz": ("photoz", "boss", "knn-photoz", [], ("photoz",), "sigma_nmad", "minimize"),
    # max_depth 3 and one thread: a depth-10 draw on 2 threads took 15 s a trial (7 targets,
    # 121 features), most of this test's 69 s
    "modeling": ("modeling", "hsc", "xgboost-modeling",
                 ["xgboost-modeling.n_estimators=20", "xgboost-modeling.max_depth=3",
                  "xgboost-modeling.n_jobs=1"], ("cosmos", "slacs"),
                 "theta_e/half_width_68", "minimize"),
    # num_threads=1: with torch 2.13's CPU build on 2 threads one of these trials segfaulted in
    # oneDNN (jit_avx512_common_1x1_convolution_bwd_weights_t inside a GOMP parallel region,
    # seen with gdb): a channels-last net narrower than 16 channels, which memory_format "auto"
    # now trains contiguous (deep/train.py, CHANNELS_LAST_MIN_CHANNELS; tests/test_deep.py).
    "design": ("design", "hsc", "committee",
               ["committee.members=1", "committee.max_epochs=1", "committee.width=8",
                "committee.tta=none", "committee.num_threads=1"], ("cosmos", "slacs"), "auroc",
               "maximize"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KIND_STUDIES))
def test_every_kind_tunes_on_validation_only_and_hands_params_to_run(
        kind, tmp_path, loaded_splits, monkeypatch, real_data, capsys, simulated_splits):
    suite, task, method, fixed, data, metric, direction = KIND_STUDIES[kind]
    if data:
        real_data(*data)
    if kind == "modeling":  # its training lenses, simulated once this session (conftest)
        simulated_splits.copy_into(tmp_path, find_task(get_suite(suite), task), "smoke",
                                   roles=("train",))
    fixed_args = [arg for value in fixed for arg in ("--param", value)]
    assert cli.main(["tune", "--suite", suite, "--task", task, "--method", method, "--trials",
                     "2", "--profile", "smoke", "--no-tracking", "--workdir", str(tmp_path),
                     *fixed_args]) == 0
    out = capsys.readouterr().out
    assert f"best validation {metric} ({direction})" in out
    assert loaded_splits and not [n for n in loaded_splits if "-test-" in n]
    assert not [p.name for p in (tmp_path / "splits").iterdir() if "-test-" in p.name]
    (params_file,) = (tmp_path / "tune").glob("*/best_params.json")
    # the run it suggests reads this profile's splits in this workdir
    # ... and the task tuned alone: params tuned on one task are not the others'
    task_name = tune.find_task(get_suite(suite), task).name
    assert (f"bench run --suite {suite} --tasks {task_name} --methods {method} --params "
            f"{params_file} --profile smoke --workdir {tmp_path}`") in out
    best = json.loads(params_file.read_text())[method]
    space = set(resolve_method(method).search_space)
    assert space - {value.split("=")[0].split(".")[1] for value in fixed} <= set(best)
    for value in fixed:  # the fixed values travel with the tuned ones
        key, number = value.split(".", 1)[1].split("=")
        assert str(best[key]) == number
    if kind == "design":
        # A design run trains every variant; the file passes the checks `bench run` makes.
        checked = cli._check_params(cli._params_from_file(params_file), [method], "--params")
        assert checked == {method: best}
        return
    monkeypatch.undo()  # the run reads the test split: unseal it
    assert cli.main(["run", "--suite", suite, "--profile", "smoke", "--methods", method,
                     "--params", str(params_file), "--workdir", str(tmp_path / "run"),
                     "--no-tracking"]) == 0
    results = read_results(tmp_path / "run" / "results.jsonl")
    assert results and all(r.status == "ok" and r.params == best for r in results)


def test_tune_metric_names_another_metric_of_the_kind_or_lists_them(tmp_path, capsys):
    base = ["tune", "--suite", "smoke", "--task", "ground", "--method", "pixel-logreg",
            "--trials", "1", "--no-tracking", "--workdir", str(tmp_path)]
    assert cli.main([*base, "--metric", "sigma_nmad"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and "no metric 'sigma_nmad'" in err
    assert "auroc, tpr0, tpr10" in err and "ece" in err
    assert not (tmp_path / "splits").exists()  # refused before any data was made
    assert cli.main([*base, "--metric", "ece"]) == 0
    assert "best validation ece (minimize)" in capsys.readouterr().out
    study = optuna.load_study(study_name="smoke.smoke-ground.pixel-logreg.default.ece",
                              storage=tune.make_storage(None, tmp_path))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE


@pytest.mark.parametrize("url, reason", [
    ("bogus", "ArgumentError: Could not parse"),
    ("nosuchdriver://host/db", "NoSuchModuleError"),
])
def test_a_storage_that_cannot_be_opened_is_refused_before_any_data(url, reason, tmp_path,
                                                                    capsys):
    assert cli.main(["tune", "--suite", "smoke", "--task", "ground", "--method", "pixel-logreg",
                     "--trials", "1", "--no-tracking", "--workdir", str(tmp_path),
                     "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"bench: error: --storage {url}: not an Optuna storage") and reason in err
    assert not (tmp_path / "splits").exists()
    # a password in a URL is never printed
    assert tune._hide_password("postgresql://me:secret@db/lens") == "postgresql://me:***@db/lens"


# --------------------------------------------------------------------------- study identity,
# counting and proposals
def test_a_resumed_study_and_a_second_worker_propose_new_trials():
    from optuna.storages import InMemoryStorage

    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}}

    def invocation(storage):  # what one `bench tune` process makes
        return optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                   sampler=tune.TrialSeededSampler(7))

    def proposals(study, n):
        study.optimize(lambda trial: tune.suggest(trial, space)["x"], n_trials=n)
        return [t.params["x"] for t in study.trials]

    # One uninterrupted study: the same trials for the same seed.
    assert proposals(invocation(InMemoryStorage()), 6) == proposals(
        invocation(InMemoryStorage()), 6)
    # Resumed by a second invocation: new proposals (a seed per invocation repeated 0-2 as 3-5).
    storage = InMemoryStorage()
    proposals(invocation(storage), 3)
    assert len(set(proposals(invocation(storage), 3))) == 6
    # Two workers asking at once each get their own.
    storage = InMemoryStorage()
    first, second = invocation(storage).ask(), invocation(storage).ask()
    assert tune.suggest(first, space) != tune.suggest(second, space)


def test_fixed_params_and_seed_name_the_study_and_another_objective_is_refused(tmp_path,
                                                                            toy_method):
    def run(**options):
        return tune.tune(get_suite("smoke"), "ground", toy_method, trials=1, workdir=tmp_path,
                         log=lambda _: None, **options)

    assert run(fixed_params={"mode": "ok"}).study_name == \
        "smoke.smoke-ground.epoch-toy[mode=ok].default"
    assert run(fixed_params={"mode": "ok"}, seed=3).study_name == \
        "smoke.smoke-ground.epoch-toy[mode=ok].default.seed3"
    assert run(study_name="mine", fixed_params={"mode": "ok"}).params_file.is_file()
    with pytest.raises(ValueError, match=r"^--study mine: that study was made with seed 0 "
                                         r"\(now 1\); its trials would be ranked"):
        run(study_name="mine", fixed_params={"mode": "ok"}, seed=1)
    with pytest.raises(ValueError, match=r"fixed_params \{'mode': 'ok'\} \(now \{'mode': "
                                         r"'ok2'\}\)"):
        run(study_name="mine", fixed_params={"mode": "ok2"})


def test_the_fixed_params_win_over_a_trial_s_in_best_params(tmp_path):
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"C": 1.0})
    study.optimize(lambda trial: trial.suggest_float("C", 1e-4, 10.0, log=True), n_trials=1)
    outcome = tune._write_outcome(study, "pixel-logreg", {"C": 1e-4}, "auroc", "maximize",
                                  tmp_path, "s")
    assert json.loads(outcome.params_file.read_text()) == {"pixel-logreg": {"C": 1e-4}}


class Tracked:
    """A tracker that keeps what tune() tells it."""

    def __init__(self):
        self.trials, self.ended = [], None

    def start_study(self, name, params):
        pass

    def log_trial(self, number, params, value, state, attributes):
        self.trials.append((number, state))

    def end_study(self, figures, best_params, best_value, status):
        self.ended = (best_params, status)


def test_a_study_whose_trials_all_fail_is_an_error_and_a_rerun_tries_again(
        tmp_path, toy_method, monkeypatch, capsys):
    original = EpochToy.fit
    monkeypatch.setattr(EpochToy, "fit", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("max_iter must be positive")))
    tracker = Tracked()
    with pytest.raises(ValueError, match=r"^study s: no trial completed, so no best "
                                         r"parameters; the first failure, trial 0: "
                                         r"RuntimeError: max_iter must be positive$"):
        tune.tune(get_suite("smoke"), "ground", toy_method, trials=3, workdir=tmp_path,
                  study_name="s", fixed_params={"mode": "ok"}, tracker=tracker,
                  log=lambda _: None)
    assert not list(tmp_path.glob("tune/*/best_params.json"))
    assert tracker.trials == [(0, "FAIL"), (1, "FAIL"), (2, "FAIL")]
    assert tracker.ended == ({}, "FAILED")
    # The cause fixed, the same command does its 3 trials: failures do not count.
    monkeypatch.setattr(EpochToy, "fit", original)
    outcome = tune.tune(get_suite("smoke"), "ground", toy_method, trials=3, workdir=tmp_path,
                        study_name="s", fixed_params={"mode": "ok"}, pruner="none",
                        log=lambda _: None)
    assert outcome.n_trials == 6 and outcome.best_params["mode"] == "ok"
    # Through the CLI: exit 2, one line.
    monkeypatch.setattr(EpochToy, "fit", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("max_iter must be positive")))
    capsys.readouterr()
    assert cli.main(["tune", "--suite", "smoke", "--task", "ground", "--method", toy_method,
                     "--trials", "1", "--no-tracking", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: study ") and err.count("\n") == 1
    assert err.strip().endswith("RuntimeError: max_iter must be positive")


def test_an_interrupted_trial_is_tracked_killed_quietly_and_not_counted(tmp_path, toy_method,
                                                                        monkeypatch):
    import logging

    original = EpochToy.fit
    monkeypatch.setattr(EpochToy, "fit", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("optuna").addHandler(handler)
    tracker = Tracked()
    try:
        with pytest.raises(KeyboardInterrupt):
            tune.tune(get_suite("smoke"), "ground", toy_method, trials=2, workdir=tmp_path,
                      study_name="s", tracker=tracker, log=lambda _: None)
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    assert tracker.trials == [(0, "KILLED")] and tracker.ended == ({}, "KILLED")
    assert not [r for r in records if r.exc_info]  # no traceback before "bench: interrupted"
    monkeypatch.setattr(EpochToy, "fit", original)
    outcome = tune.tune(get_suite("smoke"), "ground", toy_method, trials=2, workdir=tmp_path,
                        study_name="s", pruner="none", log=lambda _: None)
    study = optuna.load_study(study_name="s", storage=tune.make_storage(None, tmp_path))
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert outcome.n_trials == 3


@pytest.mark.parametrize("option, value, message", [
    ("--trials", "0", "--trials must be at least 1, got 0"),
    ("--trials", "-3", "--trials must be at least 1, got -3"),
    ("--timeout", "-1", "--timeout must be a positive number of seconds, got -1.0"),
    ("--n-jobs", "0", "--n-jobs must be at least 1, got 0"),
])
def test_a_bad_count_is_refused_naming_its_option(option, value, message, tmp_path, capsys):
    args = ["tune", "--suite", "smoke", "--task", "ground", "--method", "pixel-logreg",
            "--no-tracking", "--workdir", str(tmp_path), option, value]
    assert cli.main(args) == 2
    assert capsys.readouterr().err == f"bench: error: {message}\n"
    assert not (tmp_path / "splits").exists()


@pytest.mark.parametrize("lines", ["{garbage\n", '{garbage\n{"op_code": 0}\n'])
def test_a_damaged_journal_is_named(tmp_path, lines):
    # Optuna takes a bad last line for one being written and fails at its next read; a bad
    # line before others fails at once. Either way the error names the journal.
    journal = tmp_path / "optuna-journal.log"
    journal.write_text(lines)
    with pytest.raises(ValueError, match=rf"{journal}: not an Optuna journal .* move it aside"):
        tune.tune(get_suite("smoke"), "ground", "pixel-logreg", trials=1, workdir=tmp_path,
                  tracker=None, log=lambda _: None)


def test_a_failure_repeated_in_every_trial_prints_its_traceback_once(tmp_path, loaded_splits):
    import logging

    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Collect()
    logging.getLogger("optuna").addHandler(handler)  # beside Optuna's own stderr handler
    try:
        with pytest.raises(ValueError, match="no trial completed"):
            tune.tune(get_suite("smoke"), "ground", "pixel-logreg", trials=3, workdir=tmp_path,
                      fixed_params={"C": -1.0}, tracker=None, log=lambda _: None)
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    failed = [r for r in records if "failed" in r.getMessage()]
    assert len({r.getMessage().split(" failed")[0] for r in failed}) == 3  # three trials failed
    assert len([r for r in records if r.exc_info]) == 1  # one traceback
