"""MLflow mirror of the Result store: one parent run per suite invocation, one child run per
(method, task). The only module that imports mlflow.

The JSONL store stays the source of truth, so a tracking failure (server down, disk full) is a
warning, never fatal: after the first failure the tracker disables itself to avoid repeating
long network time-outs.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

from lensbench.bench.results import Result

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
MAX_TAG_LENGTH = 5000
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-. /:]")


def default_tracking_uri(workdir: Path) -> str:
    """$MLFLOW_TRACKING_URI when set, else an embedded SQLite store in the workdir."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{workdir / 'mlflow.db'}"


def mlflow_ui_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """argv that serves the MLflow UI on ``tracking_uri``."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port)]


def metric_name(name: str) -> str:
    return _METRIC_NAME.sub("_", name)


class MlflowTracker:
    """Logs a suite to MLflow through an explicit client (no global fluent state)."""

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.parent_run_id: str | None = None
        self.enabled = True
        if tracking_uri.startswith("http"):
            # Fail fast on a dead server instead of MLflow's minutes of retries.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self._client = None
        self._experiment_id = None

    # ------------------------------------------------------------------ plumbing
    def _guard(self, what: str, action):
        if not self.enabled:
            return None
        try:
            return action()
        except Exception as error:  # tracking must never stop a benchmark
            self.enabled = False
            warnings.warn(f"MLflow tracking failed ({what}): {error}; results are still in "
                          "the JSONL store", RuntimeWarning, stacklevel=3)
            return None

    def _connect(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=self.tracking_uri)
            found = client.get_experiment_by_name(self.experiment)
            self._experiment_id = (found.experiment_id if found is not None
                                   else client.create_experiment(self.experiment))
            self._client = client
        return self._client

    # ------------------------------------------------------------------ API
    def start_suite(self, suite: str, profile: str, seed: int, params: dict | None = None
                    ) -> str | None:
        def action():
            client = self._connect()
            run = client.create_run(
                self._experiment_id, run_name=f"{suite}:{profile}:seed{seed}",
                tags={"lensbench.suite": suite, "lensbench.profile": profile,
                      "lensbench.seed": str(seed), "lensbench.kind": "suite"})
            self.parent_run_id = run.info.run_id
            self._log_params(run.info.run_id, {"suite": suite, "profile": profile,
                                               "seed": seed, **(params or {})})
            return self.parent_run_id
        return self._guard("start suite", action)

    def log_result(self, result: Result, epoch_metrics: dict[str, list[float]] | None = None,
                   artifacts: dict[str, Path] | None = None) -> str | None:
        def action():
            from mlflow.entities import Metric

            client = self._connect()
            tags = {"lensbench.method": result.method, "lensbench.task": result.task,
                    "lensbench.status": result.status, "lensbench.kind": "run"}
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            if result.error:
                tags["lensbench.error"] = result.error[-MAX_TAG_LENGTH:]
            run = client.create_run(self._experiment_id, run_name=f"{result.run_id} @ "
                                    f"{result.task}", tags=tags)
            run_id = run.info.run_id
            params = {f"param.{k}": v for k, v in result.params.items()}
            params |= {"method": result.method, "task": result.task, "seed": result.seed,
                       "run_id": result.run_id, "n_train": result.n_train,
                       "n_test": result.n_test}
            params |= {f"split.{k}": v for k, v in result.split_hashes.items()}
            self._log_params(run_id, params)
            stamp = int(time.time() * 1000)
            metrics = dict(result.metrics)
            for key in ("fit_time_s", "predict_time_s"):
                if getattr(result, key) is not None:
                    metrics[key] = getattr(result, key)
            finals = [Metric(metric_name(k), float(v), stamp, 0) for k, v in metrics.items()
                      if isinstance(v, int | float) and math.isfinite(v)]
            curves = [Metric(metric_name(f"epoch/{name}"), float(v), stamp, step)
                      for name, values in (epoch_metrics or {}).items()
                      for step, v in enumerate(values) if math.isfinite(v)]
            for start in range(0, len(finals) + len(curves), 900):  # MLflow batch limit 1000
                client.log_batch(run_id, metrics=(finals + curves)[start: start + 900])
            client.log_text(run_id, json.dumps(json.loads(result.to_json()), indent=2),
                            "result.json")
            for path in (artifacts or {}).values():
                client.log_artifact(run_id, str(path))
            client.set_terminated(run_id, "FAILED" if result.status == "failed" else "FINISHED")
            return run_id
        return self._guard(f"log {result.run_id} on {result.task}", action)

    def end_suite(self, status: str = "FINISHED") -> None:
        if self.parent_run_id is None:
            return
        self._guard("end suite", lambda: self._connect().set_terminated(self.parent_run_id,
                                                                         status))

    def _log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), 90):  # MLflow batch limit 100 params
            self._connect().log_batch(run_id, params=items[start: start + 90])

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.end_suite("FINISHED")
        else:
            self.end_suite("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
        return False


def read_suite_runs(tracking_uri: str, experiment: str) -> list[dict]:
    """Every run of an experiment as plain dicts (for tests and tools)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], max_results=10_000)
    return [{"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
             "parent_run_id": r.data.tags.get("mlflow.parentRunId"), "params": r.data.params,
             "metrics": r.data.metrics, "tags": r.data.tags} for r in runs]
