"""`bench tune`: Optuna tuning of any registered method. The only module that imports optuna.

The search space is the method's own ``search_space`` declaration. The objective is the task's
main metric on a VALIDATION split carved (stratified, by seed) out of the task's training split:
the test split is never made or read while tuning. Epoch-based methods report every epoch and are
pruned. Storage is an embedded journal file by default (safe for several processes on one
machine, thanks to file locks) or any Optuna RDB URL (e.g. PostgreSQL for many machines);
rerunning the same command resumes the study until it holds ``trials`` finished trials.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from lensbench.bench.metrics import lens_finding_metrics
from lensbench.baselines.registry import resolve_method
from lensbench.bench.runner import derive_seed, ensure_split, task_info
from lensbench.bench.tasks import Suite, Task

PRUNERS = ("median", "hyperband", "none")
VALIDATION_FRACTION = 0.2


def find_task(suite: Suite, name: str) -> Task:
    """A suite's task by full name or unique suffix (``ground`` -> ``metcalf-ground``)."""
    matches = [t for t in suite.tasks if t.name == name or t.name.endswith(f"-{name}")]
    if len(matches) != 1:
        raise KeyError(f"suite {suite.name!r} has no task {name!r}; its tasks: "
                       f"{', '.join(t.name for t in suite.tasks)}")
    return matches[0]


def suggest(trial: optuna.Trial, space: dict) -> dict:
    """Parameters for one trial from a method's plain-data search space."""
    params = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "float":
            params[name] = trial.suggest_float(name, spec["low"], spec["high"],
                                               log=spec.get("log", False))
        elif kind == "int":
            params[name] = trial.suggest_int(name, spec["low"], spec["high"],
                                             log=spec.get("log", False), step=spec.get("step", 1))
        elif kind == "categorical":
            params[name] = trial.suggest_categorical(name, spec["choices"])
        else:
            raise ValueError(f"search space of {name!r}: unknown type {kind!r}; expected float, "
                             "int or categorical")
    return params


def validation_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (fit rows, validation rows) of the training split."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    fit, val = train_test_split(rows, test_size=VALIDATION_FRACTION, stratify=labels,
                                random_state=seed)
    return np.sort(fit), np.sort(val)


def make_storage(storage: str | None, workdir: Path):
    """An Optuna storage: an RDB URL as given, else a journal file in the workdir."""
    if storage:
        return rdb_storage(storage)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    workdir.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(workdir / "optuna-journal.log")))


def rdb_storage(url: str, attempts: int = 6):
    """Optuna's RDB storage for ``url``. Workers that start together on an empty database race to
    create its tables (one gets a duplicate-key error on alembic_version): a loser waits a random
    moment and connects again, by which time the tables exist."""
    import random
    import time

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except Exception:  # sqlalchemy errors of the schema race; the last attempt re-raises
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.2, 1.0) * (attempt + 1))


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; choose one of {PRUNERS}")


@dataclass
class TuneOutcome:
    study_name: str
    best_value: float | None
    best_params: dict
    n_trials: int
    params_file: Path


def tune(suite: Suite, task_name: str, method_name: str, *, trials: int, workdir: Path,
         profile: str = "default", seed: int = 0, study_name: str | None = None,
         storage: str | None = None, timeout: float | None = None, n_jobs: int = 1,
         pruner: str = "median", tracker=None, log=print) -> TuneOutcome:
    cls = resolve_method(method_name)
    if not cls.search_space:
        raise ValueError(f"method {method_name!r} declares no search_space; nothing to tune")
    task = find_task(suite, task_name)
    study_name = study_name or f"{suite.name}.{task.name}.{method_name}.{profile}"
    train = ensure_split(task, "train", profile, workdir)  # never the test split
    images, labels = train.images(), train.truth[task.target]
    fit_rows, val_rows = validation_split(labels, derive_seed(seed, "validation", task.name))
    info = task_info(task, train)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name, storage=make_storage(storage, workdir), direction="maximize",
        load_if_exists=True, pruner=make_pruner(pruner),
        sampler=optuna.samplers.TPESampler(seed=derive_seed(seed, "sampler", study_name)))
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                optuna.trial.TrialState.FAIL)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, cls.search_space)
        init = dict(params)
        if "random_state" in cls().get_params():
            init["random_state"] = derive_seed(seed, method_name, task.name, str(trial.number))
        method = cls(**init)

        def report(epoch: int, metrics: dict) -> None:
            value = metrics.get(f"val_{task.main_metric}")
            if value is not None and np.isfinite(value):
                trial.report(float(value), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        kwargs = {}
        import inspect

        if "epoch_callback" in inspect.signature(method.fit).parameters:
            kwargs["epoch_callback"] = report
        start = time.perf_counter()
        method.fit(images[fit_rows], labels[fit_rows], info=info, **kwargs)
        scores = np.asarray(method.predict_score(images[val_rows]), dtype=np.float64)
        metrics = lens_finding_metrics(labels[val_rows], scores)
        trial.set_user_attr("fit_time_s", time.perf_counter() - start)
        trial.set_user_attr("val_metrics", {k: float(v) for k, v in metrics.items()})
        return float(metrics[task.main_metric])

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log(f"trial {trial.number}: {trial.state.name} value={trial.value} params={trial.params}")
        if tracker is not None:
            tracker.log_trial(trial.number, trial.params, trial.value, trial.state.name,
                              dict(trial.user_attrs))

    done = sum(t.state in finished for t in study.get_trials(deepcopy=False))
    if tracker is not None:
        tracker.start_study(study_name, {"suite": suite.name, "task": task.name,
                                         "method": method_name, "profile": profile,
                                         "seed": seed, "trials": trials, "pruner": pruner})
    status = "FINISHED"
    try:
        if done < trials:
            study.optimize(
                objective, n_trials=trials - done, timeout=timeout, n_jobs=n_jobs,
                catch=(Exception,),  # a failed trial is recorded as FAIL; the study goes on
                callbacks=[log_trial, optuna.study.MaxTrialsCallback(trials, states=finished)])
        else:
            log(f"study {study_name!r} already has {done} finished trials (asked {trials})")
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        outcome = _write_outcome(study, method_name, workdir, study_name)
        if tracker is not None:
            tracker.end_study(_figures(study, workdir / "tune" / _safe(study_name)),
                              outcome.best_params, outcome.best_value, status)
    return outcome


def _write_outcome(study: optuna.Study, method_name: str, workdir: Path, study_name: str
                   ) -> TuneOutcome:
    complete = [t for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    best_params = dict(best.params) if best else {}
    folder = workdir / "tune" / _safe(study_name)
    folder.mkdir(parents=True, exist_ok=True)
    params_file = folder / "best_params.json"
    tmp = params_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({method_name: best_params}, indent=2, sort_keys=True) + "\n")
    tmp.replace(params_file)  # atomic: never a half-written params file
    return TuneOutcome(study_name, best.value if best else None, best_params,
                       len(study.get_trials(deepcopy=False)), params_file)


def _figures(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimisation history and parameter importances (optuna.visualization.matplotlib)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    paths = []
    folder.mkdir(parents=True, exist_ok=True)
    for name, plot in (("history", optuna_plots.plot_optimization_history),
                       ("importances", optuna_plots.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna flags these plots experimental
                axes = plot(study)
            figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
            path = folder / f"{name}.png"
            figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(figure)
            paths.append(path)
        except (ValueError, RuntimeError) as error:  # e.g. importances need 2+ complete trials
            logging.getLogger(__name__).info("no %s figure: %s", name, error)
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
