"""MLflow tracking: parent and child runs, metrics, curves and artefacts, read back through
MLflow's own client; failures are warnings."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from lensbench.bench import cli
from lensbench.bench.results import Result
from lensbench.bench.tracking import (
    DIGEST_LENGTH,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    RUNS_VIEW_ID,
    RUNS_VIEW_NAME,
    SAVED_VIEW_TAG_PREFIX,
    MlflowTracker,
    default_tracking_uri,
    latest_suite_experiment,
    metric_name,
    mlflow_ui_command,
    read_suite_runs,
    runs_view_url,
)
from mlflow.tracking import MlflowClient


def make_result(method, status="ok", **metrics):
    return Result(run_id=f"{method}[C=0.1]", method=method, task="toy", suite="toy-suite",
                  profile="smoke", params={"C": 0.1}, split_hashes={"train": "a", "test": "b"},
                  seed=3, status=status, metrics=metrics, fit_time_s=1.5,
                  error="Traceback: boom" if status == "failed" else None,
                  git_commit="c" * 40, threads={"torch": 2} if status == "ok" else {},
                  versions={"arithmetic": "reference"} if status == "ok" else {})


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    """One SQLite store for the module: creating one runs MLflow's migrations (seconds)."""
    return tmp_path_factory.mktemp("sqlite-store")


@pytest.fixture
def sqlite_uri(sqlite_store):
    return f"sqlite:///{sqlite_store / 'mlflow.db'}"


@pytest.fixture
def experiment(request):
    """A fresh experiment name per test, so tests sharing the store do not see each other."""
    return request.node.name


def test_suite_is_a_parent_run_with_a_child_per_result(tmp_path, sqlite_store, sqlite_uri,
                                                       experiment):
    uri = sqlite_uri
    artefact = tmp_path / "roc.png"
    artefact.write_bytes(b"\x89PNG fake")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nothing here may fail quietly
        with MlflowTracker(uri, experiment) as tracker:
            parent = tracker.start_suite("toy-suite", "smoke", 3, params={"methods": "a,b"})
            ok = tracker.log_result(
                make_result("good", auroc=0.9, tpr0=math.nan, ece=np.float32(0.25),
                            **{"tpr@fpr=0.01": 0.5}),
                epoch_metrics={"loss": [1.0, 0.5, 0.25]}, artifacts={"roc": artefact})
            failed = tracker.log_result(make_result("bad", status="failed"))
    runs = {run["run_id"]: run for run in read_suite_runs(uri, experiment)}
    assert len(runs) == 3
    assert runs[parent]["parent_run_id"] is None and runs[parent]["status"] == "FINISHED"
    assert runs[parent]["name"] == "toy-suite:smoke:seed3"
    assert runs[parent]["params"]["methods"] == "a,b" and runs[parent]["params"]["seed"] == "3"
    assert runs[ok]["parent_run_id"] == parent and runs[failed]["parent_run_id"] == parent
    assert runs[ok]["name"] == "good[C=0.1] @ toy"
    assert runs[ok]["status"] == "FINISHED" and runs[failed]["status"] == "FAILED"
    assert runs[ok]["metrics"]["auroc"] == 0.9 and "tpr0" not in runs[ok]["metrics"]  # NaN
    assert runs[ok]["metrics"]["ece"] == 0.25 and runs[ok]["metrics"]["tpr_fpr_0.01"] == 0.5
    assert runs[ok]["metrics"]["fit_time_s"] == 1.5
    assert runs[ok]["params"]["param.C"] == "0.1" and runs[ok]["params"]["split.test"] == "b"
    assert runs[ok]["tags"]["lensbench.status"] == "ok"
    assert runs[ok]["tags"]["mlflow.source.git.commit"] == "c" * 40
    assert runs[ok]["tags"]["lensbench.torch_threads"] == "2"
    assert "lensbench.torch_threads" not in runs[failed]["tags"]
    assert runs[ok]["tags"]["lensbench.arithmetic"] == "reference"
    assert "lensbench.arithmetic" not in runs[failed]["tags"]
    assert "boom" in runs[failed]["tags"]["lensbench.error"]
    client = MlflowClient(uri)
    history = client.get_metric_history(ok, "epoch/loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert {a.path for a in client.list_artifacts(ok)} == {"result.json", "roc.png"}
    # beside the database, not in ./mlruns of whatever directory the tests run from
    assert (sqlite_store / "mlartifacts" / experiment / ok / "artifacts" / "roc.png").is_file()
    (tmp_path / "dl").mkdir()
    record = Path(client.download_artifacts(ok, "result.json", str(tmp_path / "dl")))
    assert Result.from_dict(json.loads(record.read_text())).run_id == "good[C=0.1]"


def test_metric_names_become_keys_mlflow_accepts():
    assert metric_name("tpr@fpr=1e-2") == "tpr_fpr_1e-2"
    assert metric_name("epoch/val loss") == "epoch/val loss"
    assert metric_name("/a//b") == "a/b" and metric_name("..") == "_"
    assert len(metric_name("x" * 400)) == 250


def test_a_half_logged_run_is_closed_failed_and_tracking_goes_on(sqlite_uri, experiment,
                                                                 monkeypatch):
    tracker = MlflowTracker(sqlite_uri, experiment)
    parent = tracker.start_suite("s", "smoke", 0)

    def broken_log_text(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(MlflowClient, "log_text", broken_log_text)
    with pytest.warns(RuntimeWarning, match="disk full"):
        assert tracker.log_result(make_result("first")) is None
    monkeypatch.undo()
    with pytest.warns(RuntimeWarning, match="skipped artefact 'roc'"):
        second = tracker.log_result(make_result("second"), artifacts={"roc": "/no/such.png"})
    tracker.end_suite()
    tracker.end_suite()  # idempotent
    runs = {run["name"]: run for run in read_suite_runs(sqlite_uri, experiment)}
    assert runs["first[C=0.1] @ toy"]["status"] == "FAILED"  # not left RUNNING
    assert runs["second[C=0.1] @ toy"]["status"] == "FINISHED"
    assert runs["second[C=0.1] @ toy"]["run_id"] == second
    assert runs["s:smoke:seed0"]["run_id"] == parent
    assert runs["s:smoke:seed0"]["status"] == "FINISHED"


def test_an_interrupt_kills_the_suite_run(sqlite_uri, experiment):
    with pytest.raises(KeyboardInterrupt), MlflowTracker(sqlite_uri, experiment) as tracker:
        tracker.start_suite("s", "smoke", 0)
        raise KeyboardInterrupt
    assert [run["status"] for run in read_suite_runs(sqlite_uri, experiment)] == ["KILLED"]


def test_default_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    assert default_tracking_uri(tmp_path) == "http://example.invalid:5000"


def test_mlflow_ui_command():
    command = mlflow_ui_command("sqlite:////w/mlflow.db", port=5123)
    assert command[1:] == ["-m", "mlflow", "ui", "--backend-store-uri", "sqlite:////w/mlflow.db",
                           "--host", "127.0.0.1", "--port", "5123"]


def test_a_dead_server_is_a_warning_not_an_error(tmp_path):
    from conftest import free_port

    tracker = MlflowTracker(f"http://127.0.0.1:{free_port()}", "exp")
    with pytest.warns(RuntimeWarning, match="MLflow tracking failed"):
        assert tracker.start_suite("s", "smoke", 0) is None
    assert not tracker.enabled
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # disabled: no second time-out, no second warning
        assert tracker.log_result(make_result("x")) is None
        tracker.end_suite()


def test_tracker_against_a_real_mlflow_server(mlflow_server, tmp_path):
    artefact = tmp_path / "curve.csv"
    artefact.write_text("epoch,loss\n0,1.0\n")
    with MlflowTracker(mlflow_server, "tracker-direct") as tracker:
        parent = tracker.start_suite("toy-suite", "smoke", 5)
        child = tracker.log_result(make_result("good", auroc=0.75),
                                   epoch_metrics={"loss": [1.0, 0.5]},
                                   artifacts={"curve": artefact})
    runs = {run["run_id"]: run for run in read_suite_runs(mlflow_server, "tracker-direct")}
    assert set(runs) == {parent, child}
    assert runs[child]["parent_run_id"] == parent and runs[child]["metrics"]["auroc"] == 0.75
    assert runs[parent]["status"] == runs[child]["status"] == "FINISHED"
    client = MlflowClient(mlflow_server)
    assert len(client.get_metric_history(child, "epoch/loss")) == 2
    assert {a.path for a in client.list_artifacts(child)} == {"result.json", "curve.csv"}


def test_smoke_suite_against_a_real_mlflow_server(mlflow_server, tmp_path):
    code = cli.main(["run", "--suite", "smoke", "--workdir", str(tmp_path), "--seed", "2",
                     "--tracking-uri", mlflow_server])
    assert code == 0
    runs = read_suite_runs(mlflow_server, "lensbench-smoke")
    parents = [r for r in runs if r["parent_run_id"] is None]
    children = [r for r in runs if r["parent_run_id"] is not None]
    assert len(parents) == 1 and parents[0]["params"]["seed"] == "2"
    assert {c["name"] for c in children} == {"random @ smoke-ground",
                                             "pixel-logreg @ smoke-ground"}
    assert all(c["parent_run_id"] == parents[0]["run_id"] for c in children)
    client = MlflowClient(mlflow_server)
    for child in children:
        assert 0 <= child["metrics"]["auroc"] <= 1
        names = {a.path for a in client.list_artifacts(child["run_id"])}
        assert {"result.json", "roc.png", "scores.png", "mistakes.png"} <= names


def test_bench_ui_serves_the_store(tmp_path):
    """`bench ui` starts the MLflow UI on the workdir's store and answers on its port."""
    import os
    import subprocess
    import sys

    from conftest import free_port, stop_process_groups, wait_until_healthy

    port, log = free_port(), tmp_path / "ui.log"
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "lensbench.bench.cli", "ui",
                                    "--workdir", str(tmp_path), "--port", str(port)],
                                   env=environment, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own group: stop the workers too
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process, log, "bench ui", timeout_s=120)
        assert (tmp_path / "mlflow.db").exists()
    finally:
        stop_process_groups([process], timeout_s=30)


def test_a_terminated_run_is_marked_killed_and_keeps_its_store(tmp_path):
    # SIGTERM (a scheduler's or timeout's stop) takes the Ctrl-C path: exit 130, the MLflow
    # suite run KILLED rather than left RUNNING, the message on how to resume.
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "lensbench.bench.cli", "run", "--suite", "smoke", "--workdir",
         str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_line = process.stdout.readline()  # printed once the suite run is open in MLflow
    assert first_line.startswith("suite smoke"), first_line + process.stderr.read()[-2000:]
    # Signalled in the middle of the work: once the first split's first shard is written.
    deadline = time.monotonic() + 300
    while not list((tmp_path / "splits").glob("*.partial-*/shard-00000.h5")):
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.002)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "rerun with --resume" in stderr
    runs = read_suite_runs(f"sqlite:///{tmp_path.resolve()}/mlflow.db", "lensbench-smoke")
    assert [run["status"] for run in runs if run["parent_run_id"] is None] == ["KILLED"]


def test_experiments_open_on_the_runs_with_the_main_metrics_first(sqlite_uri, experiment):
    """The experiment is marked model training and holds lensbench's saved runs view: the
    (method, task) runs only, the main metrics as the first columns, best first."""
    client = MlflowClient(sqlite_uri)
    older = f"{experiment}-older"
    client.create_experiment(older)  # as an older lensbench left it: no kind tag
    MlflowTracker(sqlite_uri, older).start_suite("s", "smoke", 0)
    assert client.get_experiment_by_name(older).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND

    tracker = MlflowTracker(sqlite_uri, experiment)
    parent = tracker.start_suite("toy-suite", "smoke", 0,
                                 main_metrics=["sigma_nmad", "tpr@fpr=0.01", "sigma_nmad"],
                                 lower_is_better=True)
    children = {tracker.log_result(make_result(name, sigma_nmad=value))
                for name, value in (("a", 0.02), ("b", 0.01))}
    tracker.end_suite()
    found = client.get_experiment_by_name(experiment)
    assert found.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    envelope = json.loads(found.tags[SAVED_VIEW_TAG_PREFIX + RUNS_VIEW_ID])
    assert envelope["name"] == RUNS_VIEW_NAME and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    assert state["selectedColumns"] == ["metrics.`sigma_nmad`", "metrics.`tpr_fpr_0.01`",
                                        "attributes.`Dataset`"]
    assert state["orderByKey"] == "metrics.`sigma_nmad`" and state["orderByAsc"] is True
    # The view's filter is a search MLflow runs: it finds the children, not their suite run.
    shown = client.search_runs([found.experiment_id], filter_string=state["searchFilter"],
                               order_by=["metrics.sigma_nmad ASC"])
    assert {run.info.run_id for run in shown} == children and parent not in children
    assert [run.info.run_name for run in shown] == ["b[C=0.1] @ toy", "a[C=0.1] @ toy"]
    # ... and a run name search finds a method or a task at once.
    by_method = client.search_runs([found.experiment_id],
                                   filter_string="attributes.run_name LIKE 'b[%'")
    assert [run.info.run_name for run in by_method] == ["b[C=0.1] @ toy"]
    by_tag = client.search_runs([found.experiment_id],
                                filter_string="tags.`lensbench.method` = 'a'")
    assert [run.info.run_name for run in by_tag] == ["a[C=0.1] @ toy"]


def test_splits_are_logged_as_datasets(tmp_path, sqlite_uri, experiment):
    """Each split is a dataset input: task, version and role as the name, the content hash as
    the digest, the manifest as the source; runs on the same splits share them."""
    splits = tmp_path / "splits"
    for folder, content_hash in (("toy-v3-train-8-k1", "a" * 64), ("toy-v3-test-8-k2", "b" * 64)):
        (splits / folder).mkdir(parents=True)
        (splits / folder / "manifest.json").write_text(json.dumps({"content_hash": content_hash}))
    (splits / "broken").mkdir()
    (splits / "broken" / "manifest.json").write_text("{not json")  # names nothing, harms none
    tracker = MlflowTracker(sqlite_uri, experiment, splits_dir=splits)
    tracker.start_suite("toy-suite", "smoke", 0, task_versions={"toy": 3})
    hashes = {"train": "a" * 64, "test": "b" * 64, "val": "c" * 64}
    first, second = (tracker.log_result(dataclasses.replace(make_result(name),
                                                            split_hashes=hashes))
                     for name in ("first", "second"))
    tracker.end_suite()
    client = MlflowClient(sqlite_uri)
    inputs = {run_id: client.get_run(run_id).inputs.dataset_inputs for run_id in (first, second)}
    logged = {d.dataset.name: d for d in inputs[first]}
    assert set(logged) == {"toy@v3/train", "toy@v3/test", "toy@v3/val"}
    train = logged["toy@v3/train"]
    assert train.dataset.digest == "a" * DIGEST_LENGTH and train.dataset.source_type == "local"
    assert json.loads(train.dataset.source)["uri"] == str(splits / "toy-v3-train-8-k1" /
                                                          "manifest.json")
    contexts = {name: {t.key: t.value for t in d.tags}["mlflow.data.context"]
                for name, d in logged.items()}
    assert contexts == {"toy@v3/train": "training", "toy@v3/test": "testing",
                        "toy@v3/val": "validation"}
    assert {t.key: t.value for t in train.tags}["lensbench.content_hash"] == "a" * 64
    assert logged["toy@v3/val"].dataset.source_type == "code"  # no manifest holds its hash
    assert ({(d.dataset.name, d.dataset.digest) for d in inputs[first]}
            == {(d.dataset.name, d.dataset.digest) for d in inputs[second]})


def test_bench_ui_finds_the_latest_suite(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert latest_suite_experiment(uri) is None
    client = MlflowClient(uri)
    older = client.create_experiment("lensbench-older")  # a suite logged with no saved view
    client.create_run(older, tags={"lensbench.kind": "suite"})
    assert latest_suite_experiment(uri) == (older, False)
    with MlflowTracker(uri, "lensbench-first") as tracker:
        tracker.start_suite("first", "smoke", 0, main_metrics=["auroc"])
    with MlflowTracker(uri, "lensbench-second") as tracker:
        tracker.start_suite("second", "smoke", 0, main_metrics=["auroc"])
    with MlflowTracker(uri, "lensbench-tune-second") as tracker:  # a study is no suite
        tracker.start_study("study", {})
        tracker.end_study([], {}, None)
    second = MlflowClient(uri).get_experiment_by_name("lensbench-second").experiment_id
    assert latest_suite_experiment(uri) == (second, True)
    assert runs_view_url("http://h:1/", second) == (
        f"http://h:1/#/experiments/{second}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={RUNS_VIEW_ID}")
    assert runs_view_url("http://h:1", second, saved_view=False).endswith(
        "/runs?workflowType=machine_learning")


def test_trials_are_logged_with_their_state_and_only_a_completed_one_has_a_value(
        sqlite_uri, experiment):
    tracker = MlflowTracker(sqlite_uri, experiment)
    tracker.start_study("s", {})
    tracker.log_trial(0, {"C": 1.0}, 0.91, "COMPLETE", {"val_metrics": {"auroc": 0.91}})
    tracker.log_trial(1, {"C": 2.0}, 0.55, "PRUNED", {"pruned_at": {"epoch": 2,
                                                                     "val_auroc": 0.55}})
    tracker.log_trial(2, {"C": 3.0}, None, "KILLED", {"interrupted": True})
    tracker.end_study([], {"C": 1.0}, 0.91, "KILLED")
    runs = {run["name"]: run for run in read_suite_runs(sqlite_uri, experiment)}
    assert runs["trial 0"]["metrics"]["value"] == 0.91
    pruned = runs["trial 1"]
    assert "value" not in pruned["metrics"] and pruned["tags"]["optuna.state"] == "PRUNED"
    assert pruned["metrics"]["pruned_at/val_auroc"] == 0.55
    assert pruned["metrics"]["pruned_at/epoch"] == 2
    assert runs["trial 2"]["status"] == "KILLED" and runs["study s"]["status"] == "KILLED"


CONNECT_WHEN_BOTH_READY = """
import pathlib, sys, time
from lensbench.bench.tracking import MlflowTracker
folder = pathlib.Path(sys.argv[1])
(folder / f"ready-{sys.argv[2]}").touch()
while len(list(folder.glob("ready-*"))) < 2:
    time.sleep(0.001)
MlflowTracker(f"sqlite:///{folder}/mlflow.db", "lensbench-smoke")._connect()
"""


def test_two_processes_starting_on_a_fresh_store_both_track(tmp_path):
    # Without the lock one of the two failed, each time, on the other's half-made tables.
    import subprocess
    import sys

    processes = [subprocess.Popen([sys.executable, "-c", CONNECT_WHEN_BOTH_READY, str(tmp_path),
                                   str(i)], stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlartifacts", "mlflow.db", "ready-1",
                                                          "ready-2"]
