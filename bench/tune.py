"""`bench tune`: Optuna tuning of any registered method on a task of any kind. The only module
that imports optuna.

The search space is the method's own ``search_space`` declaration, less the parameters the user
fixes (``--param``). The task's kind (bench/kinds.py) says what the study sees: a part to fit and
a VALIDATION part (carved by seed out of the training split, or the catalogue's own validation
part); the test split is never made or read while tuning. The objective is a metric of the kind
(its ``tune_metric`` unless ``--metric`` names another), minimised or maximised as the kind says.
Methods that report the metric's validation figure each epoch (``val_<metric>``, or
``member0/val_<metric>`` for a committee reporting member by member: the lens-finding CNNs,
the photo-z networks, the lens-model regressors) are pruned; others run every trial to its end
(README).
Storage is an embedded journal file by default (safe for several processes on one machine,
thanks to file locks) or any Optuna RDB URL (e.g. PostgreSQL for many machines); rerunning the
same command resumes the study until it holds ``trials`` completed or pruned trials (a failed or
interrupted trial does not count).

A study is of one objective: its name says the method's fixed parameters and the seed (which
carves the validation part), and a study given by ``--study`` that was made with others is
refused rather than mixed. Each trial's proposals are drawn with a seed of its own (the study's
seed and the trial's number), so one uninterrupted single-process study gives the same trials
for the same seed, while a resumed study and parallel workers go on proposing new ones.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from lensbench.baselines.registry import resolve_method
from lensbench.bench.kinds import MAXIMIZE, get_kind
from lensbench.bench.results import canonical_run_id
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


def fit_space_to_stamp(space: dict, image_shape: tuple[int, ...]) -> dict:
    """``space`` with every parameter marked ``"at_most": "stamp"`` (a crop) held to the side of
    the task's (bands, H, W) stamp: a crop wider than the stamp crops nothing, so each such
    value would repeat the trial of the whole stamp (crops of 64 and 101 on a 32-pixel task
    were proposed)."""
    fitted = {}
    for name, spec in space.items():
        if spec.get("at_most") == "stamp":
            stamp_side = min(image_shape[-2:])
            spec = dict(spec)
            if spec["type"] == "categorical":
                spec["choices"] = [c for c in spec["choices"] if c <= stamp_side] or [stamp_side]
            else:
                spec["high"] = min(spec["high"], stamp_side)
                spec["low"] = min(spec["low"], spec["high"])
        fitted[name] = spec
    return fitted


JOURNAL = "optuna-journal.log"  # the default storage, in the workdir


def make_storage(storage: str | None, workdir: Path):
    """An Optuna storage: an RDB URL as given, else a journal file in the workdir."""
    if storage:
        return rdb_storage(storage)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    workdir.mkdir(parents=True, exist_ok=True)
    with named_journal(workdir):
        return JournalStorage(JournalFileBackend(str(workdir / JOURNAL)))


@contextmanager
def named_journal(workdir: Path):
    """A damaged journal named: Optuna reads it whenever it syncs (a bad last line is taken for
    one being written, and fails at the next read) and raises json's bare error."""
    try:
        yield
    except json.JSONDecodeError as error:
        raise ValueError(f"{workdir / JOURNAL}: not an Optuna journal ({error}); move it aside "
                         "to start the studies anew, or name another --storage") from None


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


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Optuna's TPE sampler, seeded afresh for each trial from ``seed`` and the trial's number.
    A TPESampler seeded once draws the same sequence in every process that makes it: a resumed
    study re-proposed its first trials and two workers on one study proposed the same ones.
    Trial numbers are unique within a study, whoever asks, so here every trial draws its own
    numbers, and a study made in one go by one process is still the same for the same seed."""

    def __init__(self, seed: int):
        self.seed = seed
        self._samplers: dict[int, optuna.samplers.TPESampler] = {}  # by trial number

    def _for(self, trial) -> optuna.samplers.TPESampler:
        if trial.number not in self._samplers:
            self._samplers[trial.number] = optuna.samplers.TPESampler(
                seed=derive_seed(self.seed, "trial", str(trial.number)))
        return self._samplers[trial.number]

    def before_trial(self, study, trial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._for(trial).sample_independent(study, trial, param_name,
                                                   param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        del self._samplers[trial.number]


IDENTITY_ATTR = "lensbench.objective"  # the study's user attribute: what its trials optimise


def default_study_name(suite: str, task: str, method: str, profile: str, seed: int,
                       fixed: dict, metric: str | None) -> str:
    """``suite.task.method[fixed params].profile``, then ``.seed<N>`` for a seed other than 0
    and ``.<metric>`` for a metric other than the kind's: one name per objective."""
    return ".".join([suite, task, canonical_run_id(method, fixed), profile]
                    + ([f"seed{seed}"] if seed else []) + ([metric] if metric else []))


def check_study_objective(study: optuna.Study, objective: dict) -> None:
    """Stamp ``objective`` (what a trial's value depends on: task, method, fixed params, seed,
    metric, profile) on the study, or, where the study already holds another, refuse: its
    trials would be ranked with ours. A study made before the stamp existed is stamped now."""
    stored = study.user_attrs.get(IDENTITY_ATTR)
    if stored is None:
        study.set_user_attr(IDENTITY_ATTR, objective)
        return
    differing = [f"{key} {stored.get(key)!r} (now {value!r})" for key, value in objective.items()
                 if stored.get(key) != value]
    if differing:
        raise ValueError(f"--study {study.study_name}: that study was made with "
                         f"{'; '.join(differing)}; its trials would be ranked with this tune's: "
                         "give the same options or another --study name")


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
    params_file: Path | None  # None: no trial completed


COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # toward --trials


def tune(suite: Suite, task_name: str, method_name: str, *, trials: int, workdir: Path,
         profile: str = DEFAULT_PROFILE, seed: int = 0, metric: str | None = None,
         fixed_params: dict | None = None, study_name: str | None = None,
         storage: str | None = None, timeout: float | None = None, n_jobs: int = 1,
         pruner: str = "median", tracker=None, log=print) -> TuneOutcome:
    """Tune ``method_name`` on one task of ``suite`` until the study holds ``trials`` completed
    or pruned trials (a rerun resumes it; a failed trial is recorded and another tried in its
    place, until ``trials`` fail in a row). ``fixed_params`` (the user's ``--param``)
    are set in every trial and left out of the search; the suite's parameters for the profile
    are the base every trial starts from. The best parameters (with the fixed ones) go to
    ``best_params.json``, which ``bench run --params`` reads; a study with no completed trial
    is a ValueError giving the first failure's reason, and writes none."""
    for option, value, least in (("--trials", trials, 1), ("--n-jobs", n_jobs, 1)):
        if value < least:
            raise ValueError(f"{option} must be at least {least}, got {value}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {timeout}")
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
    study_name = study_name or default_study_name(
        suite.name, task.name, method_name, profile, seed, fixed,
        None if metric == kind.tune_metric else metric)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with named_journal(workdir):
        study = optuna.create_study(
            study_name=study_name, storage=study_storage, direction=direction,
            load_if_exists=True, pruner=make_pruner(pruner),
            sampler=TrialSeededSampler(derive_seed(seed, "sampler", study_name)))
    check_study_objective(study, {"suite": suite.name, "task": task.name,  # before any data
                                  "method": method_name, "profile": profile, "seed": seed,
                                  "metric": metric, "fixed_params": fixed})
    study_data = kind.study_data(task, profile, workdir,
                                 derive_seed(seed, "validation", task.name))
    reason = cls(**base_params).decline(study_data.info)
    if reason:
        raise ValueError(f"method {method_name!r} declines task {task.name!r}: {reason}")
    space = fit_space_to_stamp(space, study_data.info.image_shape)

    def objective(trial: optuna.Trial) -> float:
        init = {**base_params, **suggest(trial, space)}
        if "random_state" in cls().get_params():
            init["random_state"] = derive_seed(seed, method_name, task.name, str(trial.number))
        method = cls(**init)

        def report(epoch: int, metrics: dict) -> None:
            # A committee that reports member by member (committee-regressor) is pruned on its
            # first member's curve: later members restart at epoch 0, and a poor trial shows by
            # then.
            value = metrics.get(f"val_{metric}", metrics.get(f"member0/val_{metric}"))
            if value is not None and np.isfinite(value):
                trial.report(float(value), epoch)
                if trial.should_prune():
                    trial.set_user_attr("pruned_at", {"epoch": epoch, f"val_{metric}": value})
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

    def recorded(trial: optuna.Trial) -> float:
        """The objective, with why a trial failed kept in the study (the first failure's
        reason is the error of a study with no completed trial) and an interrupted trial
        tracked as killed before the interrupt goes on."""
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            lines = str(error).strip().splitlines()
            trial.set_user_attr("error", f"{type(error).__name__}: {lines[-1] if lines else ''}")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            if tracker is not None:
                tracker.log_trial(trial.number, trial.params, None, "KILLED",
                                  dict(trial.user_attrs))
            raise

    # Failures in a row in this invocation: as many as --trials stop it (every trial failing
    # would otherwise never end), while a space where some trials fail still gets its --trials.
    failures_in_a_row = [0]

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        why = {optuna.trial.TrialState.FAIL: f" ({trial.user_attrs.get('error')})",
               optuna.trial.TrialState.PRUNED: f" ({trial.user_attrs.get('pruned_at')})"}
        log(f"trial {trial.number}: {trial.state.name} {metric}={trial.value}"
            f"{why.get(trial.state, '')} params={trial.params}")
        if tracker is not None:
            tracker.log_trial(trial.number, trial.params, trial.value, trial.state.name,
                              dict(trial.user_attrs))
        failed = trial.state == optuna.trial.TrialState.FAIL
        failures_in_a_row[0] = failures_in_a_row[0] + 1 if failed else 0
        if failures_in_a_row[0] >= trials:
            study.stop()

    done = sum(t.state in COUNTED for t in study.get_trials(deepcopy=False))
    if tracker is not None:
        tracker.start_study(study_name, {"suite": suite.name, "task": task.name,
                                         "method": method_name, "profile": profile,
                                         "seed": seed, "trials": trials, "pruner": pruner,
                                         "metric": metric, "direction": direction,
                                         **{f"fixed.{k}": v for k, v in fixed.items()}})
    status = "FINISHED"
    try:
        if done < trials:
            with _quiet_failures():
                study.optimize(
                    recorded, timeout=timeout, n_jobs=n_jobs,
                    catch=(Exception,),  # a failed trial is recorded as FAIL; the study goes on
                    callbacks=[log_trial, optuna.study.MaxTrialsCallback(trials, states=COUNTED)])
        else:
            log(f"study {study_name!r} already has {done} completed or pruned trials "
                f"(asked {trials})")
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        outcome = _write_outcome(study, method_name, fixed, metric, direction, workdir,
                                 study_name)
        if tracker is not None:
            tracker.end_study(_figures(study, workdir / "tune" / _safe(study_name)),
                              outcome.best_params, outcome.best_value,
                              "FAILED" if status == "FINISHED" and not outcome.params_file
                              else status)
    if outcome.params_file is None:
        first = next((t for t in study.get_trials(deepcopy=False)
                      if t.state == optuna.trial.TrialState.FAIL and "error" in t.user_attrs),
                     None)
        raise ValueError(f"study {study_name}: no trial completed, so no best parameters"
                         + (f"; the first failure, trial {first.number}: "
                            f"{first.user_attrs['error']}" if first else ""))
    return outcome


@contextmanager
def _quiet_failures():
    """Optuna logs every failed trial with its whole traceback, a trial ended by Ctrl-C too. The
    command says 'interrupted' itself and gives each failure's reason in one line (log_trial),
    so Optuna's traceback is kept for the first failure of each kind only: a bug shows where it
    is once, and a bad fixed parameter does not print it again for every trial."""
    seen = set()

    def decide(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, KeyboardInterrupt):
            return False
        if error is not None:
            kind = (type(error).__name__, str(error))
            if kind in seen:
                return False
            seen.add(kind)
        return True

    def first_of_its_kind(record: logging.LogRecord) -> bool:
        # once per record: every handler asks, and the first to ask would mark it seen
        if not hasattr(record, "lensbench_shown"):
            record.lensbench_shown = decide(record)
        return record.lensbench_shown

    # On the handlers: a logger's own filters do not see what its child loggers log.
    handlers = logging.getLogger("optuna").handlers
    for handler in handlers:
        handler.addFilter(first_of_its_kind)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(first_of_its_kind)


def _write_outcome(study: optuna.Study, method_name: str, fixed: dict, metric: str,
                   direction: str, workdir: Path, study_name: str) -> TuneOutcome:
    """best_params.json: ``{method: {param: value}}``, the best completed trial's parameters
    with the fixed ones (which win: they are what the user asked for), as ``bench run
    --params`` reads it (written atomically). No completed trial: no file (``params_file`` is
    None), never an empty recommendation."""
    complete = [t for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
    n_trials = len(study.get_trials(deepcopy=False))
    if not complete:
        return TuneOutcome(study_name, metric, direction, None, {}, n_trials, None)
    pick = max if direction == MAXIMIZE else min
    best = pick(complete, key=lambda t: t.value)
    best_params = {**best.params, **fixed}
    folder = workdir / "tune" / _safe(study_name)
    folder.mkdir(parents=True, exist_ok=True)
    params_file = folder / "best_params.json"
    atomic_write_text(params_file,  # never a half-written params file
                      json.dumps({method_name: best_params}, indent=2, sort_keys=True) + "\n")
    return TuneOutcome(study_name, metric, direction, best.value, best_params, n_trials,
                       params_file)


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
