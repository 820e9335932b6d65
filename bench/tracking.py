"""MLflow mirror of the Result store: one parent run per suite invocation, one child run per
(method, task). The only module that imports mlflow.

The JSONL store stays the source of truth, so a tracking failure (server down, disk full) is a
warning, never fatal. When the store cannot be reached at all the tracker disables itself, so a
dead server costs one time-out rather than one per run; any other failure only loses the run
being logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import posixpath
import re
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from lensbench.bench.results import Result
from lensbench.datasets.files import exclusive_lock

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value (mlflow.utils.validation)
MAX_TAG_LENGTH = 8000  # MLflow's limit on a tag value
MAX_KEY_LENGTH = 250  # MLflow's limit on a param, metric or tag key
PARAMS_PER_BATCH = 100  # MLflow's log_batch limit on params
METRICS_PER_BATCH = 1000  # MLflow's log_batch limit on metrics
HTTP_TIMEOUT_S = "10"  # per request; MLflow's default is 120 s with 7 retries (minutes when down)
# MLflow 3 opens an experiment tagged "custom_model_development" on its runs, not on the GenAI
# overview (mlflow/server/js: ExperimentKind). The UI of MLflow 3.17 takes the kind from its
# GenAI / Model training switch instead, which a URL sets: see runs_view_url.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# The UI's saved views ("Views" menu, "Share") are experiment tags with this prefix holding a
# JSON envelope {name, createdAt, updatedAt, state}; ?viewStateShareKey=<id> opens one.
SAVED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
RUNS_VIEW_ID = "lensbench"
RUNS_VIEW_NAME = "lensbench: compare methods"
DIGEST_LENGTH = 12  # MLflow keeps at most 36 characters of a dataset digest; reports show 12
# A split's role -> MLflow's dataset context (the real lenses are scored like a test set).
DATASET_CONTEXTS = {"train": "training", "val": "validation", "test": "testing",
                    "real": "testing"}
# The characters MLflow accepts in a key on every OS (it also allows ':' except on Windows).
_NOT_A_KEY_CHARACTER = re.compile(r"[^A-Za-z0-9_\-. /]")


# The MLflow status of a trial's run by its state (Optuna's, or KILLED: interrupted); a pruned
# trial, stopped on purpose, is FINISHED with its state in the optuna.state tag.
TRIAL_RUN_STATUS = {"FAIL": "FAILED", "KILLED": "KILLED"}


def default_tracking_uri(workdir: Path) -> str:
    """$MLFLOW_TRACKING_URI when set, else an embedded SQLite store in the workdir, so tracking
    works with no server and `bench ui` finds it again."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{workdir / 'mlflow.db'}"


def mlflow_ui_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """argv that serves the MLflow UI on ``tracking_uri`` with this interpreter's mlflow."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port)]


def fail_fast_on_a_server(tracking_uri: str) -> None:
    """For a tracking server: fail fast when it is dead instead of MLflow's minutes of
    retries (setdefault, so a user's own settings win)."""
    if tracking_uri.startswith("http"):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)


def runs_view_url(base_url: str, experiment_id: str, saved_view: bool = True) -> str:
    """The MLflow UI's runs table of an experiment, in its Model training mode (MLflow 3.17
    opens every experiment on the GenAI overview otherwise), with lensbench's saved view (the
    (method, task) runs with their main metrics, best first) when the experiment holds one."""
    query = "workflowType=machine_learning"
    if saved_view:
        query += f"&viewStateShareKey={RUNS_VIEW_ID}"
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def runs_view_state(main_metrics: list[str], lower_is_better: bool = False) -> dict:
    """The UI state of lensbench's saved view: the (method, task) runs only (which also lays
    them out flat instead of folded under their suite run), the main metrics as the first
    columns, then the datasets; sorted by the first main metric, best first."""
    columns = [f"metrics.`{metric_name(m)}`" for m in dict.fromkeys(main_metrics)]
    columns.append("attributes.`Dataset`")
    state = {"selectedColumns": columns, "columnOrder": columns,
             "searchFilter": "tags.`lensbench.kind` = 'run'"}
    if main_metrics:
        state |= {"orderByKey": columns[0], "orderByAsc": bool(lower_is_better)}
    return state


def latest_suite_experiment(tracking_uri: str) -> tuple[str, bool] | None:
    """(id, whether it holds lensbench's saved view) of the experiment of the most recently
    started suite in the store; None when the store holds no suite run."""
    from mlflow.tracking import MlflowClient

    fail_fast_on_a_server(tracking_uri)
    create_sqlite_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    with quiet_store_setup():  # an existing store may still need a migration
        experiments = client.search_experiments(filter_string="name LIKE 'lensbench-%'")
    if not experiments:
        return None
    runs = client.search_runs([e.experiment_id for e in experiments],
                              filter_string="tags.`lensbench.kind` = 'suite'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    experiment_id = runs[0].info.experiment_id
    tags = next(e.tags for e in experiments if e.experiment_id == experiment_id)
    return experiment_id, SAVED_VIEW_TAG_PREFIX + RUNS_VIEW_ID in tags


# MLflow's server imports starlette.middleware.wsgi, which starlette deprecates: one warning per
# UI worker process, about MLflow's code, that a user can do nothing about.
UI_WARNING_FILTER = "ignore:starlette.middleware.wsgi is deprecated:UserWarning"


def mlflow_ui_environment(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` for the UI process: the user's PYTHONWARNINGS, then UI_WARNING_FILTER (a
    later entry wins). The variable reaches the UI's worker processes, which a filter set here
    would not."""
    user = environ.get("PYTHONWARNINGS", "")
    return {**environ, "PYTHONWARNINGS": ",".join(filter(None, [user, UI_WARNING_FILTER]))}


def _sqlite_folder(tracking_uri: str) -> Path | None:
    """The folder of a SQLite store's database file; None for other stores."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = tracking_uri[len("sqlite:///"):].split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    return Path(database).resolve().parent


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artefacts: beside a SQLite store's file, since MLflow's
    own default is ./mlruns in whatever directory the process happens to run from. None (the
    store's default) for servers and other stores."""
    folder = _sqlite_folder(tracking_uri)
    if folder is None:
        return None
    return (folder / "mlartifacts" / metric_name(experiment)).as_uri()


@contextlib.contextmanager
def quiet_store_setup():
    """Silence MLflow's and alembic's INFO lines while a store creates or migrates its tables
    ("Creating initial MLflow database tables..."): routine, and they led a run's output."""
    loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def create_sqlite_store(tracking_uri: str) -> None:
    """Make a new SQLite store's tables, with MLflow's ``Default`` experiment (id 0) keeping its
    artefacts beside the database (``mlartifacts/0``, created). Left to the client, Default
    points at ./mlruns/0 of whatever directory the first process ran in, which never exists.
    Nothing to do for an existing database or another kind of store. Processes starting at
    once on a fresh workdir make it one at a time, under a lock beside it (``mlflow.db.lock``):
    a second one saw the half-made file, took it for a store and failed on its tables ("table
    metrics already exists") or its alembic version, and ran untracked."""
    folder = _sqlite_folder(tracking_uri)
    if folder is None:
        return
    database = Path(tracking_uri[len("sqlite:///"):].split("?", 1)[0])
    with exclusive_lock(database.with_name(database.name + ".lock")):  # waits for the maker
        if database.exists():
            return
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        root = folder / "mlartifacts"
        with quiet_store_setup():
            store = SqlAlchemyStore(tracking_uri, root.as_uri())
        store.engine.dispose()
        (root / "0").mkdir(parents=True, exist_ok=True)


def metric_name(name: str) -> str:
    """A key MLflow accepts: bad characters become '_', and it must not look like a path that
    normalises to another name ('a//b', '/a', '..'), which MLflow rejects."""
    key = posixpath.normpath(_NOT_A_KEY_CHARACTER.sub("_", str(name))).lstrip("/")
    while key.startswith("."):
        key = key[1:]
    return key[:MAX_KEY_LENGTH] or "_"


def finite_float(value) -> float | None:
    """``value`` as a float when it is a finite number (numpy scalars included), else None:
    MLflow stores NaN, but a NaN metric is a missing one and would poison UI plots."""
    if isinstance(value, bool | str) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plain(value):
    """JSON fallback for a numpy scalar or array (``.tolist()``) or anything else (``str``)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def is_unreachable(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) is a network failure: MLflow wraps the requests
    ConnectionError/Timeout of a dead or hung server into an MlflowException."""
    import requests

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, requests.RequestException | ConnectionError | TimeoutError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


class MlflowTracker:
    """Logs a suite to MLflow through an explicit client (no global fluent state), so two
    trackers or a user's own ``mlflow.start_run`` never interfere."""

    def __init__(self, tracking_uri: str, experiment: str, splits_dir: Path | None = None):
        """``splits_dir``: where the suite's splits live (``<workdir>/splits``), so a run's
        datasets name the manifest of each split it read."""
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.splits_dir = None if splits_dir is None else Path(splits_dir).resolve()
        self.task_versions: dict[str, int] = {}
        self._manifests: dict[str, Path] = {}  # content hash -> manifest.json, filled on demand
        self._read_manifests: set[Path] = set()
        self.parent_run_id: str | None = None
        self.enabled = True
        fail_fast_on_a_server(tracking_uri)
        self._client = None
        self._experiment_id: str | None = None

    # ------------------------------------------------------------------ public API
    def start_suite(self, suite: str, profile: str, seed: int, params: dict | None = None, *,
                    main_metrics: list[str] = (), lower_is_better: bool = False,
                    task_versions: dict[str, int] | None = None) -> str | None:
        """Open the parent run of a suite invocation; returns its run id (None if tracking
        failed). ``main_metrics`` (the kind's, the same key for every method) are the columns
        of the experiment's saved runs view, sorted by the first (``lower_is_better``: lowest
        first); ``task_versions`` (task -> version) name the runs' datasets."""
        self.task_versions = dict(task_versions or {})

        def action():
            self._save_runs_view(runs_view_state(list(main_metrics), lower_is_better))
            run_id = self._create_run(
                f"{suite}:{profile}:seed{seed}",
                {"lensbench.suite": suite, "lensbench.profile": profile,
                 "lensbench.seed": str(seed), "lensbench.kind": "suite"})
            self.parent_run_id = run_id
            self._log_params(run_id, {"suite": suite, "profile": profile, "seed": seed,
                                      **(params or {})})
            return run_id
        return self._guard("start suite", action)

    def log_result(self, result: Result, epoch_metrics: dict[str, list[float]] | None = None,
                   artifacts: dict[str, Path] | None = None) -> str | None:
        """Mirror one Result as a child run of the suite; returns its run id (None if tracking
        failed). A run that fails half-way is closed as FAILED rather than left RUNNING."""
        def action():
            run_id = self._create_run(f"{result.run_id} @ {result.task}", self._result_tags(result))
            try:
                self._log_params(run_id, self._result_params(result))
                self._log_metrics(run_id, self._final_metrics(result), epoch_metrics or {})
                self._log_datasets(run_id, result)
                self._log_record(run_id, result)
                self._log_files(run_id, artifacts or {})
            except BaseException:
                self._close_quietly(run_id)
                raise
            self._client.set_terminated(run_id, "FAILED" if result.status == "failed"
                                        else "FINISHED")
            return run_id
        return self._guard(f"log {result.run_id} on {result.task}", action)

    def end_suite(self, status: str = "FINISHED") -> None:
        """Close the parent run with ``status`` (FINISHED, FAILED or KILLED); idempotent."""
        if self.parent_run_id is None:
            return
        run_id, self.parent_run_id = self.parent_run_id, None
        self._guard("end suite", lambda: self._connect().set_terminated(run_id, status))

    # ------------------------------------------------------------------ tuning studies
    def start_study(self, study_name: str, params: dict) -> str | None:
        """Open the parent run of one `bench tune` invocation of an Optuna study."""
        def action():
            run_id = self._create_run(f"study {study_name}", {"lensbench.kind": "study",
                                                              "lensbench.study": study_name})
            self.parent_run_id = run_id
            self._log_params(run_id, {"study": study_name, **params})
            return run_id
        return self._guard("start study", action)

    def log_trial(self, number: int, params: dict, value: float | None, state: str,
                  attributes: dict | None = None) -> str | None:
        """A nested run per trial: its params, objective value, validation metrics and state
        (Optuna's, or KILLED for a trial interrupted). Only a completed trial has a ``value``: a
        pruned one's last reported validation figure, from an earlier epoch, is logged as
        ``pruned_at/<name>`` (with ``pruned_at/epoch``), so sorting by value compares like with
        like."""
        attributes = attributes or {}

        def action():
            tags = {"lensbench.kind": "trial", "optuna.state": state,
                    "optuna.trial": str(number)}
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            run_id = self._create_run(f"trial {number}", tags)
            try:
                self._log_params(run_id, params)
                finals = {f"val/{k}": v for k, v in attributes.get("val_metrics", {}).items()}
                if state == "COMPLETE":
                    finals["value"] = value
                finals |= {f"pruned_at/{k}": v
                           for k, v in attributes.get("pruned_at", {}).items()}
                self._log_metrics(run_id, finals, {})
            except BaseException:
                self._close_quietly(run_id)
                raise
            self._client.set_terminated(run_id, TRIAL_RUN_STATUS.get(state, "FINISHED"))
            return run_id
        return self._guard(f"log trial {number}", action)

    def end_study(self, figures: list[Path], best_params: dict, best_value: float | None,
                  status: str = "FINISHED") -> None:
        """Figures and best params on the study's parent run, then close it."""
        if self.parent_run_id is None:
            return
        run_id, self.parent_run_id = self.parent_run_id, None

        def action():
            self._log_files(run_id, {path.name: path for path in figures})
            self._client.log_text(run_id, json.dumps(best_params, indent=2, sort_keys=True),
                                  "best_params.json")
            self._log_metrics(run_id, {"best_value": best_value}, {})
            self._client.set_terminated(run_id, status)
        self._guard("end study", action)

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.end_suite("FINISHED")
        else:
            self.end_suite("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
        return False

    # ------------------------------------------------------------------ plumbing
    def _guard(self, what: str, action):
        """Run ``action``; any failure becomes a warning, because tracking must never stop a
        benchmark. Disable the tracker when the store is unreachable."""
        if not self.enabled:
            return None
        try:
            return action()
        except Exception as error:
            if self._client is None or is_unreachable(error):
                self.enabled = False
            warnings.warn(f"MLflow tracking failed ({what}): {error}; results are still in "
                          "the JSONL store", RuntimeWarning, stacklevel=3)
            return None

    def _connect(self):
        """The client, created on first use with the experiment got or created by name."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            create_sqlite_store(self.tracking_uri)
            client = MlflowClient(tracking_uri=self.tracking_uri)
            with quiet_store_setup():  # an existing store may still need a migration
                self._experiment_id = self._experiment_id_in(client)
            self._client = client
        return self._client

    def _experiment_id_in(self, client) -> str:
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND_TAG) is None:  # made by an older lensbench
                client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG,
                                          MODEL_TRAINING_KIND)
            return found.experiment_id
        try:
            return client.create_experiment(
                self.experiment, artifact_location=artifact_location(self.tracking_uri,
                                                                     self.experiment),
                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except Exception:  # another process created it since we looked
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def _create_run(self, name: str, tags: dict[str, str]) -> str:
        run = self._connect().create_run(self._experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def _result_tags(self, result: Result) -> dict[str, str]:
        tags = {"lensbench.method": result.method, "lensbench.task": result.task,
                "lensbench.status": result.status, "lensbench.kind": "run",
                "lensbench.suite": result.suite, "lensbench.profile": result.profile}
        tags |= {f"lensbench.split.{metric_name(k)}": str(v)
                 for k, v in result.split_hashes.items()}
        if result.git_commit:  # MLflow's own tag for it: the run page shows it
            tags["mlflow.source.git.commit"] = result.git_commit
        if "torch" in result.threads:
            tags["lensbench.torch_threads"] = str(result.threads["torch"])
        if "arithmetic" in result.versions:  # the CPU's arithmetic: README, Reproducibility
            tags["lensbench.arithmetic"] = result.versions["arithmetic"]
        if "variant" in result.params:  # the design suite: one run per training-set variant
            tags["lensbench.variant"] = str(result.params["variant"])
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        if result.error:
            tags["lensbench.error"] = result.error[-MAX_TAG_LENGTH:]  # a traceback ends usefully
        return tags

    @staticmethod
    def _result_params(result: Result) -> dict:
        params = {f"param.{k}": v for k, v in result.params.items()}
        params |= {"method": result.method, "task": result.task, "seed": result.seed,
                   "run_id": result.run_id, "n_train": result.n_train,
                   "n_test": result.n_test}
        params |= {f"split.{k}": v for k, v in result.split_hashes.items()}
        return params

    @staticmethod
    def _final_metrics(result: Result) -> dict:
        metrics = dict(result.metrics)
        for key in ("fit_time_s", "predict_time_s"):
            if getattr(result, key) is not None:
                metrics[key] = getattr(result, key)
        return metrics

    def _log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = {metric_name(k): str(v)[:MAX_PARAM_LENGTH] for k, v in params.items()}
        entities = [Param(key, value) for key, value in items.items()]
        for start in range(0, len(entities), PARAMS_PER_BATCH):
            self._client.log_batch(run_id, params=entities[start: start + PARAMS_PER_BATCH])

    def _log_metrics(self, run_id: str, finals: dict, curves: dict[str, list[float]]) -> None:
        """Final metrics at step 0; each per-epoch curve as ``epoch/<name>`` with step = epoch
        index. Non-finite values are skipped."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        entities = [Metric(metric_name(k), number, stamp, 0) for k, v in finals.items()
                    if (number := finite_float(v)) is not None]
        entities += [Metric(metric_name(f"epoch/{name}"), number, stamp, step)
                     for name, values in curves.items() for step, v in enumerate(values)
                     if (number := finite_float(v)) is not None]
        for start in range(0, len(entities), METRICS_PER_BATCH):
            self._client.log_batch(run_id, metrics=entities[start: start + METRICS_PER_BATCH])

    def _save_runs_view(self, state: dict) -> None:
        """Write lensbench's saved view of the runs table into the experiment (replacing an
        older one): it is what runs_view_url opens, and the UI's "Views" menu lists it."""
        stamp = int(time.time() * 1000)
        envelope = {"name": RUNS_VIEW_NAME, "createdAt": stamp, "updatedAt": stamp,
                    "state": json.dumps(state)}
        self._connect().set_experiment_tag(self._experiment_id,
                                           SAVED_VIEW_TAG_PREFIX + RUNS_VIEW_ID,
                                           json.dumps(envelope))

    def _log_datasets(self, run_id: str, result: Result) -> None:
        """Each split the run read as an MLflow dataset input, so the runs table says which
        data each method saw and runs on the same splits group together: named
        ``<task>@v<version>/<role>``, its digest the start of the split's content hash, its
        source the split's manifest, its context training/validation/testing. Built as
        entities: mlflow.data's datasets are logged through the fluent active run, which this
        tracker does not use."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        version = self.task_versions.get(result.task)
        task = result.task if version is None else f"{result.task}@v{version}"
        inputs = []
        for role, content_hash in result.split_hashes.items():
            manifest = self._manifest_of(content_hash)
            if manifest is not None:
                source_type, source = "local", {"uri": str(manifest)}
            else:  # e.g. a photo-z part: a seeded subsample of a split, with no manifest
                source_type, source = "code", {"tags": {"lensbench.task": result.task}}
            dataset = Dataset(name=f"{task}/{role}", digest=str(content_hash)[:DIGEST_LENGTH],
                              source_type=source_type, source=json.dumps(source))
            tags = [InputTag("lensbench.role", role),
                    InputTag("lensbench.content_hash", str(content_hash))]
            if role in DATASET_CONTEXTS:
                tags.append(InputTag(MLFLOW_DATASET_CONTEXT, DATASET_CONTEXTS[role]))
            inputs.append(DatasetInput(dataset, tags))
        if inputs:
            self._client.log_inputs(run_id, datasets=inputs)

    def _manifest_of(self, content_hash: str) -> Path | None:
        """The manifest under ``splits_dir`` whose content_hash is ``content_hash``, if any.
        Each manifest is read once; the folder is listed again only for a hash not seen yet
        (a split made since)."""
        if content_hash in self._manifests or self.splits_dir is None:
            return self._manifests.get(content_hash)
        for manifest in sorted(self.splits_dir.glob("*/manifest.json")):
            if manifest in self._read_manifests:
                continue
            self._read_manifests.add(manifest)
            try:
                record = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # provenance only: an unreadable one names nothing
                continue
            if isinstance(record, dict) and isinstance(record.get("content_hash"), str):
                self._manifests[record["content_hash"]] = manifest
        return self._manifests.get(content_hash)

    def _log_record(self, run_id: str, result: Result) -> None:
        """The Result record itself, so the run is self-describing in the UI."""
        record = json.dumps(asdict(result), indent=2, sort_keys=True, default=_plain)
        self._client.log_text(run_id, record, "result.json")

    def _log_files(self, run_id: str, artifacts: dict[str, Path]) -> None:
        """Each artefact file under its file name; a missing one is a warning, not a lost run."""
        for name, path in artifacts.items():
            if not Path(path).is_file():
                warnings.warn(f"MLflow tracking skipped artefact {name!r}: {path} is not a file",
                              RuntimeWarning, stacklevel=5)
                continue
            self._client.log_artifact(run_id, str(path))

    def _close_quietly(self, run_id: str) -> None:
        try:
            self._client.set_terminated(run_id, "FAILED")
        except Exception:  # the original failure is the one worth reporting
            pass


def read_suite_runs(tracking_uri: str, experiment: str) -> list[dict]:
    """Every run of an experiment as plain dicts (run_id, name, parent_run_id, status, params,
    metrics, tags), newest first; [] when the experiment does not exist."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    return [{"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
             "parent_run_id": r.data.tags.get("mlflow.parentRunId"), "params": r.data.params,
             "metrics": r.data.metrics, "tags": r.data.tags} for r in runs]


CHECKPOINT_SUFFIXES = (".pt", ".pth")
MODEL_SUFFIXES = (".lbmodel",)  # baselines/persistence.py model files, one per fitted run


def download_model(run_id: str, tracking_uri: str | None,
                   dst: str | os.PathLike | None = None) -> Path:
    """The model file (``model.lbmodel``, any fitted method with its contract) logged as an
    artefact of MLflow run ``run_id``, downloaded to ``dst`` (default: a temporary directory);
    a ValueError naming what the run holds when it has none."""
    return download_checkpoint(run_id, tracking_uri, dst, suffixes=MODEL_SUFFIXES,
                               key="model")


def download_checkpoint(run_id: str, tracking_uri: str | None,
                        dst: str | os.PathLike | None = None, *,
                        suffixes: tuple[str, ...] = CHECKPOINT_SUFFIXES,
                        key: str = "checkpoint") -> Path:
    """The checkpoint file logged as an artefact of MLflow run ``run_id``, downloaded to
    ``dst`` (default: a temporary directory). The artefact is the one ``.pt``/``.pth`` file
    (``suffixes``) of the run, or the one under (or named) ``key`` where the run holds several;
    anything else is a ValueError naming what the run holds."""
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        client.get_run(run_id)
    except Exception as error:
        store = tracking_uri or "the default tracking store"
        raise ValueError(f"MLflow run {run_id} not found in {store} "
                         f"({type(error).__name__})") from None
    files, stack = [], [None]
    while stack:
        for info in client.list_artifacts(run_id, stack.pop()):
            (stack if info.is_dir else files).append(info.path)
    found = [p for p in files if p.lower().endswith(suffixes)]
    if len(found) > 1:
        keyed = [p for p in found if posixpath.basename(p).lower().startswith(key)
                 or p.split("/")[0].lower() == key]
        found = keyed or found
    if len(found) != 1:
        raise ValueError(f"MLflow run {run_id} has {len(found)} {key} artefacts "
                         f"({found or 'none'}; artefacts: {files}); expected one "
                         f"{suffixes[0]} file")
    if dst is None:
        import tempfile

        dst = tempfile.mkdtemp(prefix=f"lensbench-{run_id}-")
    Path(dst).mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=found[0],
                                                dst_path=str(dst), tracking_uri=tracking_uri)
    return Path(local)
