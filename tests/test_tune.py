"""`bench tune`: search spaces, validation-only objective, pruning, failures, resume, MLflow,
best-params hand-off, and two workers sharing a study on a real PostgreSQL server."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import optuna
import pytest
from lensbench.baselines.contract import Method
from lensbench.bench import cli, tune
from lensbench.baselines.registry import METHODS
from lensbench.bench.results import read_results
from lensbench.bench.tasks import get_suite
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
    with pytest.raises(KeyError, match="its tasks: smoke-ground"):
        tune.find_task(get_suite("smoke"), "space")


def test_tuning_prunes_records_failures_and_never_reads_the_test_split(tmp_path, monkeypatch,
                                                                        toy_method):
    roles = []
    real_ensure = tune.ensure_split

    def recording(task, role, *args, **kwargs):
        roles.append(role)
        return real_ensure(task, role, *args, **kwargs)

    monkeypatch.setattr(tune, "ensure_split", recording)
    outcome = tune.tune(get_suite("smoke"), "ground", toy_method, trials=14, workdir=tmp_path,
                        pruner="median", tracker=None, log=lambda _: None)
    assert roles == ["train"]
    assert [p.name.split("-")[3] for p in (tmp_path / "splits").iterdir()] == ["train"]
    study = optuna.load_study(study_name=outcome.study_name, storage=tune.make_storage(
        None, tmp_path))
    states = [t.state for t in study.trials]
    assert len(states) == 14
    assert optuna.trial.TrialState.FAIL in states  # mode == "boom", and the study went on
    assert optuna.trial.TrialState.PRUNED in states
    assert json.loads(outcome.params_file.read_text()) == {toy_method: outcome.best_params}
    # Rerunning the same command resumes: the study already holds 14 finished trials.
    again = tune.tune(get_suite("smoke"), "ground", toy_method, trials=16, workdir=tmp_path,
                      tracker=None, log=lambda _: None)
    assert again.n_trials == 16


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
    from lensbench.bench.runner import ensure_split

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
