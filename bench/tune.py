"""`bench tune`: Optuna tuning of any registered method on a task of any kind. The only module
that imports optuna.

The search space is the method's own ``search_space`` declaration, less the parameters the user
fixes (``--param``). The task's kind (bench/kinds.py) says what the study sees: a part to fit and
a VALIDATION part (carved by seed out of the training split, or the catalogue's own validation
part); the test split is never made or read while tuning. The objective is a metric of the kind
(its ``tune_metric`` unless ``--metric`` names another), minimised or maximised as the kind says.
Epoch-based methods report every epoch and are pruned. Storage is an embedded journal file by
default (safe for several processes on one machine, thanks to file locks) or any Optuna RDB URL
(e.g. PostgreSQL for many machines); rerunning the same command resumes the study until it holds
``trials`` finished trials.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from lensbench.baselines.registry import resolve_method
from lensbench.bench.kinds import MAXIMIZE, get_kind
from lensbench.bench.runner import derive_seed
from lensbench.bench.tasks import DEFAULT_PROFILE, Suite, find_task
from lensbench.datasets.files import atomic_savefig, atomic_write_text

PRUNERS = ("median", "hyperband", "none")


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
    moment and connects again, by which time the tables exist. A URL that cannot work (not a
    database URL, an unknown driver, a database that cannot be opened or reached after the
    retries) is a ValueError naming it, its password hidden."""
    import random
    import time

    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as error:  # sqlalchemy errors of the schema race are retried
            if attempt == attempts - 1 or isinstance(error, (ArgumentError, NoSuchModuleError)):
                reason = (str(error).strip().splitlines() or [repr(error)])[0]
                raise ValueError(f"--storage {_hide_password(url)}: not an Optuna storage "
                                 f"that can be opened ({type(error).__name__}: {reason})"
                                 ) from None
            time.sleep(random.uniform(0.2, 1.0) * (attempt + 1))


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL: nothing in it is a password
        return url


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
    metric: str
    direction: str
    best_value: float | None
    best_params: dict
    n_trials: int
    params_file: Path


def tune(suite: Suite, task_name: str, method_name: str, *, trials: int, workdir: Path,
         profile: str = DEFAULT_PROFILE, seed: int = 0, metric: str | None = None,
         fixed_params: dict | None = None, study_name: str | None = None,
         storage: str | None = None, timeout: float | None = None, n_jobs: int = 1,
         pruner: str = "median", tracker=None, log=print) -> TuneOutcome:
    """Tune ``method_name`` on one task of ``suite``: ``trials`` finished trials in the study
    (a rerun resumes it). ``fixed_params`` (the user's ``--param``) are set in every trial and
    left out of the search; the suite's parameters for the profile are the base every trial
    starts from. The best parameters (with the fixed ones) go to ``best_params.json``, which
    ``bench run --params`` reads."""
    cls = resolve_method(method_name)
    task = find_task(suite, task_name)
    kind = get_kind(task.kind)
    metric = metric or kind.tune_metric
    direction = kind.direction(metric)  # an unknown metric fails here, before any data
    fixed = dict(fixed_params or {})
    space = {name: spec for name, spec in cls.search_space.items() if name not in fixed}
    if not space:
        raise ValueError(f"method {method_name!r} declares no search_space"
                         + (" beyond the fixed --param values" if cls.search_space else "")
                         + "; nothing to tune")
    study_storage = make_storage(storage, workdir)  # a bad URL fails before any simulation
    base_params = {**suite.params_for(profile, task).get(method_name, {}), **fixed}
    default_name = f"{suite.name}.{task.name}.{method_name}.{profile}"
    study_name = study_name or (default_name if metric == kind.tune_metric
                                else f"{default_name}.{metric}")
    study_data = kind.study_data(task, profile, workdir,
                                 derive_seed(seed, "validation", task.name))
    reason = cls(**base_params).decline(study_data.info)
    if reason:
        raise ValueError(f"method {method_name!r} declines task {task.name!r}: {reason}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name, storage=study_storage, direction=direction,
        load_if_exists=True, pruner=make_pruner(pruner),
        sampler=optuna.samplers.TPESampler(seed=derive_seed(seed, "sampler", study_name)))
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                optuna.trial.TrialState.FAIL)

    def objective(trial: optuna.Trial) -> float:
        init = {**base_params, **suggest(trial, space)}
        if "random_state" in cls().get_params():
            init["random_state"] = derive_seed(seed, method_name, task.name, str(trial.number))
        method = cls(**init)

        def report(epoch: int, metrics: dict) -> None:
            value = metrics.get(f"val_{metric}")
            if value is not None and np.isfinite(value):
                trial.report(float(value), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        accepted = inspect.signature(method.fit).parameters
        kwargs = {key: value for key, value in study_data.fit_kwargs.items() if key in accepted}
        if "epoch_callback" in accepted:
            kwargs["epoch_callback"] = report
        start = time.perf_counter()
        method.fit(study_data.X_fit, study_data.y_fit, info=study_data.info, **kwargs)
        metrics = kind.validation_metrics(method, study_data)
        trial.set_user_attr("fit_time_s", time.perf_counter() - start)
        trial.set_user_attr("val_metrics", {k: float(v) for k, v in metrics.items()})
        value = float(metrics.get(metric, np.nan))
        if not np.isfinite(value):
            raise ValueError(f"validation {metric} is {metrics.get(metric, 'missing')} for "
                             f"{method_name} with {init}")
        return value

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log(f"trial {trial.number}: {trial.state.name} {metric}={trial.value} "
            f"params={trial.params}")
        if tracker is not None:
            tracker.log_trial(trial.number, trial.params, trial.value, trial.state.name,
                              dict(trial.user_attrs))

    done = sum(t.state in finished for t in study.get_trials(deepcopy=False))
    if tracker is not None:
        tracker.start_study(study_name, {"suite": suite.name, "task": task.name,
                                         "method": method_name, "profile": profile,
                                         "seed": seed, "trials": trials, "pruner": pruner,
                                         "metric": metric, "direction": direction,
                                         **{f"fixed.{k}": v for k, v in fixed.items()}})
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
        outcome = _write_outcome(study, method_name, fixed, metric, direction, workdir,
                                 study_name)
        if tracker is not None:
            tracker.end_study(_figures(study, workdir / "tune" / _safe(study_name)),
                              outcome.best_params, outcome.best_value, status)
    return outcome


def _write_outcome(study: optuna.Study, method_name: str, fixed: dict, metric: str,
                   direction: str, workdir: Path, study_name: str) -> TuneOutcome:
    """best_params.json: ``{method: {param: value}}``, the best trial's parameters with the
    fixed ones, as ``bench run --params`` reads it (written atomically)."""
    complete = [t for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
    pick = max if direction == MAXIMIZE else min
    best = pick(complete, key=lambda t: t.value) if complete else None
    best_params = {**fixed, **best.params} if best else {}
    folder = workdir / "tune" / _safe(study_name)
    folder.mkdir(parents=True, exist_ok=True)
    params_file = folder / "best_params.json"
    atomic_write_text(params_file,  # never a half-written params file
                      json.dumps({method_name: best_params}, indent=2, sort_keys=True) + "\n")
    return TuneOutcome(study_name, metric, direction, best.value if best else None, best_params,
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
            atomic_savefig(figure, path, dpi=100, bbox_inches="tight")
            plt.close(figure)
            paths.append(path)
        except (ValueError, RuntimeError) as error:  # e.g. importances need 2+ complete trials
            logging.getLogger(__name__).info("no %s figure: %s", name, error)
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
