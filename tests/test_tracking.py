"""MLflow tracking: parent and child runs, metrics, curves and artefacts, read back through
MLflow's own client; failures are warnings."""

from __future__ import annotations

import math

import pytest
from lensbench.bench import cli
from lensbench.bench.results import Result
from lensbench.bench.tracking import MlflowTracker, default_tracking_uri, read_suite_runs
from mlflow.tracking import MlflowClient


def make_result(method, status="ok", **metrics):
    return Result(run_id=f"{method}[C=0.1]", method=method, task="toy", suite="toy-suite",
                  profile="smoke", params={"C": 0.1}, split_hashes={"train": "a", "test": "b"},
                  seed=3, status=status, metrics=metrics, fit_time_s=1.5,
                  error="Traceback: boom" if status == "failed" else None)


def test_suite_is_a_parent_run_with_a_child_per_result(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artefact = tmp_path / "roc.png"
    artefact.write_bytes(b"\x89PNG fake")
    with MlflowTracker(uri, "exp") as tracker:
        parent = tracker.start_suite("toy-suite", "smoke", 3)
        ok = tracker.log_result(make_result("good", auroc=0.9, tpr0=math.nan),
                                epoch_metrics={"loss": [1.0, 0.5, 0.25]},
                                artifacts={"roc": artefact})
        failed = tracker.log_result(make_result("bad", status="failed"))
    runs = {run["run_id"]: run for run in read_suite_runs(uri, "exp")}
    assert runs[parent]["parent_run_id"] is None and runs[parent]["status"] == "FINISHED"
    assert runs[ok]["parent_run_id"] == parent and runs[failed]["parent_run_id"] == parent
    assert runs[ok]["metrics"]["auroc"] == 0.9 and "tpr0" not in runs[ok]["metrics"]  # NaN
    assert runs[ok]["metrics"]["fit_time_s"] == 1.5
    assert runs[ok]["params"]["param.C"] == "0.1" and runs[ok]["params"]["split.test"] == "b"
    assert runs[failed]["status"] == "FAILED"
    assert "boom" in runs[failed]["tags"]["lensbench.error"]
    client = MlflowClient(uri)
    history = client.get_metric_history(ok, "epoch/loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert {a.path for a in client.list_artifacts(ok)} == {"result.json", "roc.png"}


def test_default_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    assert default_tracking_uri(tmp_path) == "http://example.invalid:5000"


def test_a_dead_server_is_a_warning_not_an_error():
    from conftest import free_port

    tracker = MlflowTracker(f"http://127.0.0.1:{free_port()}", "exp")
    with pytest.warns(RuntimeWarning, match="MLflow tracking failed"):
        assert tracker.start_suite("s", "smoke", 0) is None
    assert tracker.log_result(make_result("x")) is None  # disabled after the first failure
    tracker.end_suite()


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
