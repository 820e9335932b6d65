"""The runner: the one suite loop, for every kind of task. Every method on every task of a suite,
one Result record per run.

The task's kind (bench/kinds.py, bench/suites/) says how its splits are obtained, which runs it
holds and how a fitted method is scored; this module fits, records and resumes. Splits are made
once per (task, version, profile) and reused by hash. One ``--seed`` derives every method seed. A
failing method is recorded with its traceback and the suite goes on; ``resume`` skips runs
already recorded as ok or declined for the same split hashes and params.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from lensbench.baselines.persistence import family_of, make_contract, save_model
from lensbench.baselines.registry import resolve_method
from lensbench.bench.kinds import Evaluation, RunCase, SuiteKind, kind_of
from lensbench.bench.results import Result, append_result, read_results
from lensbench.bench.tasks import Suite
from lensbench.datasets.files import exclusive_lock
from lensbench.datasets.interrupts import check_stop

RESULTS_FILE = "results.jsonl"


def derive_seed(root: int, *parts: str) -> int:
    """A seed for one (method, task, ...) from the suite seed: stable across runs and machines."""
    digest = hashlib.sha256(json.dumps([int(root), *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("lensbench", "numpy", "scikit-learn", "torch", "xgboost", "astropy", "mlflow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def torch_threads() -> dict[str, int]:
    """{"torch": N}: torch's intra-op thread count in this process once a method has loaded
    torch ({} before); a method's own ``num_threads`` parameter, which its run id shows,
    overrides it while that method trains."""
    torch = sys.modules.get("torch")
    return {"torch": torch.get_num_threads()} if torch is not None else {}


DIRTY = "+dirty"
# What runs: a change elsewhere (reports/, README) does not make a run's code differ from HEAD.
CODE_PATHS = ("bench", "baselines", "deep", "datasets", "pyproject.toml")


# A copy of the tree without its .git (the GPU machine of scripts/gpu-run.sh) names its commit
# through a stamp made where the checkout is: `git rev-parse HEAD`, then `git ls-tree -r HEAD`
# of CODE_PATHS. This variable gives the stamp's path; the copy's files are checked against it.
COMMIT_STAMP_ENV = "LENSBENCH_COMMIT_STAMP"


@functools.cache  # the commit of the code this process runs, not of later commits made under it
def git_commit() -> str | None:
    """HEAD of the lensbench checkout, with DIRTY appended when tracked code (CODE_PATHS)
    differs from it (the code that ran is then not exactly that commit's); outside a git
    checkout, the commit of the stamp that $LENSBENCH_COMMIT_STAMP names (stamped_commit), else
    None."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, cwd=root)
        if head.returncode == 0 and head.stdout.strip():
            changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                                      "--", *CODE_PATHS], capture_output=True, text=True,
                                     timeout=10, cwd=root)
            return head.stdout.strip() + (DIRTY if changed.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):  # no git on this machine
        pass
    stamp = os.environ.get(COMMIT_STAMP_ENV)
    return stamped_commit(Path(stamp), root) if stamp else None


def git_blob_hash(data: bytes) -> str:
    """The object name git gives a file of these bytes (`git hash-object`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def stamped_commit(stamp: Path, root: Path) -> str:
    """The commit ``stamp`` names, with DIRTY appended when a code file under ``root`` is
    missing or differs from its blob in that commit (as `git status` would say)."""
    lines = stamp.read_text(encoding="utf-8").splitlines()
    head = lines[0].strip() if lines else ""
    if not re.fullmatch(r"[0-9a-f]{40}", head):
        raise ValueError(f"{stamp}: line 1 must be a commit (40 hex digits, `git rev-parse "
                         f"HEAD`), got {head!r}")
    if len(lines) < 2:
        raise ValueError(f"{stamp}: no files listed after the commit (`git ls-tree -r HEAD -- "
                         f"{' '.join(CODE_PATHS)}`)")
    changed = False
    for number, line in enumerate(lines[1:], start=2):
        entry = re.fullmatch(r"[0-7]{6} blob ([0-9a-f]{40})\t(.+)", line)
        if entry is None:
            raise ValueError(f"{stamp}: line {number} must be `MODE blob SHA<tab>PATH` (`git "
                             f"ls-tree -r HEAD`), got {line!r}")
        file = root / entry.group(2)
        changed |= not file.is_file() or git_blob_hash(file.read_bytes()) != entry.group(1)
    return head + (DIRTY if changed else "")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class RunOutcome:
    result: Result
    evaluation: Evaluation | None
    history: dict
    # files of the fitted method: the checkpoint it wrote, the model file the harness saved
    files: dict[str, Path] = field(default_factory=dict)


MODEL_FILE = "model.lbmodel"  # the fitted method of a run, in its artefact folder


def safe_name(run_id: str) -> str:
    """A run id as a folder name."""
    return "".join(c if c.isalnum() or c in "-_.=," else "_" for c in run_id)


def run_folder(workdir: Path, suite: str, task: str, run_id: str) -> Path:
    """Where the artefacts of one (method, task) run go."""
    return workdir / "runs" / suite / task / safe_name(run_id)


def find_run_folder(workdir: Path, task: str, run_id: str) -> Path | None:
    """The artefact folder of the run ``run_id`` (the id, ``committee[lens_light=True]``, or its
    folder name, ``committee_lens_light=True_``: :func:`safe_name` is idempotent) of ``task``
    under ``workdir``, whichever suite ran it; None if there is none."""
    return next(workdir.glob(f"runs/*/{task}/{safe_name(run_id)}"), None)


def start_record(case: RunCase, *, suite: str, profile: str, seed: int) -> dict:
    """The fields every Result of one run shares, fixed when it starts (run id, the method's
    seed derived from the suite seed, versions and the machine's arithmetic, commit, start
    time); the run adds the status and what it measured."""
    from lensbench.bench.splits import this_machine_arithmetic

    # The arithmetic: simulated splits' bytes, and so a run's figures, differ by CPU (README,
    # Reproducibility).
    versions = {**package_versions(), "arithmetic": this_machine_arithmetic()}
    return dict(run_id=case.run_id, method=case.method, task=case.task.name, suite=suite,
                profile=profile, params=case.record_params, split_hashes=case.split_hashes,
                seed=derive_seed(seed, case.method, case.task.name), suite_seed=seed,
                versions=versions, git_commit=git_commit(), started_at=now(),
                n_train=case.n_train, n_test=case.n_test, data_files=case.data_files)


def run_method(kind: SuiteKind, case: RunCase, *, suite: str, profile: str, seed: int,
               artifact_dir: Path | None = None) -> RunOutcome:
    """Fit one method on the case's training data and let the kind score it; any exception
    becomes a failed Result. Methods with a ``checkpoint_dir`` parameter the user left unset save
    their checkpoint in ``artifact_dir``; every fitted method that has something to save is saved
    there as ``model.lbmodel`` with its input contract (baselines/persistence.py)."""
    base = start_record(case, suite=suite, profile=profile, seed=seed)
    history: dict = {}
    files: dict[str, Path] = {}
    if case.declined:
        return RunOutcome(Result(**base, status="declined", error=case.declined,
                                 finished_at=now()), None, history)
    try:
        method = build_method(case.method, case.params, base["seed"], artifact_dir)
        info = kind.task_info(case.task, case.splits)
        reason = method.decline(info)
        if reason:
            return RunOutcome(Result(**base, status="declined", error=reason,
                                     finished_at=now()), None, history)
        X, y = kind.training_data(case.task, case.splits)
        accepted = inspect.signature(method.fit).parameters
        fit_kwargs = kind.fit_kwargs(accepted, case.splits)
        if "epoch_callback" in accepted:
            fit_kwargs["epoch_callback"] = collect_into(history)
        start = time.perf_counter()
        method.fit(X, y, info=info, **fit_kwargs)
        fit_time = time.perf_counter() - start
        if getattr(method, "checkpoint_path_", None):
            files["checkpoint"] = Path(method.checkpoint_path_)
        if artifact_dir is not None and family_of(type(method)) is not None:
            files["model"] = save_model(method, artifact_dir / MODEL_FILE, make_contract(
                method, info, task_version=case.task.version, split_hashes=case.split_hashes,
                git_commit=base["git_commit"], lensbench_version=base["versions"].get(
                    "lensbench", "unknown"), **kind.contract_details(case.task, case.splits)))
        evaluation = kind.evaluate(method, case.task, case.splits, case.method)
        if hasattr(method, "diagnostics"):
            evaluation.metrics |= {f"diag/{key}": float(value)
                                   for key, value in method.diagnostics().items()}
        if not history:
            history.update(getattr(method, "history_", {}) or {})
        result = Result(**base, status="ok", metrics=evaluation.metrics, fit_time_s=fit_time,
                        predict_time_s=evaluation.predict_time_s, finished_at=now(),
                        threads=torch_threads())
        return RunOutcome(result, evaluation, history, files)
    except Exception:  # a failing method is recorded, the suite goes on
        result = Result(**base, status="failed", error=traceback.format_exc(), finished_at=now())
        return RunOutcome(result, None, history, files)


def build_method(name: str, params: dict, method_seed: int, artifact_dir: Path | None = None):
    """The method ``name`` with ``params``; its ``random_state`` (if it has one) defaults to
    ``method_seed`` and its ``checkpoint_dir`` (if it has one) to ``artifact_dir``."""
    cls = resolve_method(name)
    init = dict(params)
    defaults = cls().get_params()
    if "random_state" in defaults:
        init.setdefault("random_state", method_seed)
    if "checkpoint_dir" in defaults and artifact_dir is not None:
        init.setdefault("checkpoint_dir", str(artifact_dir))
    return cls(**init)


def collect_into(history: dict):
    """An epoch callback that appends each epoch's metrics to ``history`` (name -> list)."""
    def callback(epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            history.setdefault(key, []).append(float(value))
        check_stop()  # between epochs
    return callback


def resume_key(result: Result) -> tuple:
    """What makes two runs the same run: run id, task, split hashes, recorded params and the
    method's seed (derived from the suite's ``--seed``, so another ``--seed`` is another run;
    every record holds it, older ones without ``suite_seed`` too)."""
    return (result.run_id, result.task, json.dumps(result.split_hashes, sort_keys=True),
            json.dumps(result.params, sort_keys=True, default=str), result.seed)


def already_done(case: RunCase, done: set[tuple], *, suite: str, profile: str,
                 seed: int) -> bool:
    """Whether ``done`` (:func:`completed_runs`) holds this case's run at suite seed ``seed``."""
    probe = Result(**start_record(case, suite=suite, profile=profile, seed=seed), status="ok")
    return resume_key(probe) in done


def completed_runs(store: Path, suite: str, profile: str) -> set[tuple]:
    """Resume keys of the runs of ``suite`` and ``profile`` that finished (ok or declined)."""
    return {resume_key(r) for r in read_results(store)
            if r.status in ("ok", "declined") and r.suite == suite and r.profile == profile}


def record_result(result: Result, *, store: Path, workdir: Path, artifacts: dict[str, Path],
                  history: dict, tracker, log, line: str) -> None:
    """Append one finished run to the store, mirror it to the tracker and print its line."""
    result.artifacts = {k: str(v.relative_to(workdir)) for k, v in artifacts.items()}
    append_result(store, result)
    if tracker is not None:
        tracker.log_result(result, epoch_metrics=history, artifacts=artifacts)
    log(line)
    check_stop()  # between methods, in every suite kind: the finished run is kept


def write_run_artifacts(kind: SuiteKind, case: RunCase, outcome: RunOutcome, folder: Path
                        ) -> dict[str, Path]:
    """The files of one finished run in its artefact folder: the fitted method's, the kind's
    (predictions, figures) and the training curves."""
    artifacts = dict(outcome.files)
    if outcome.evaluation is not None:
        folder.mkdir(parents=True, exist_ok=True)
        artifacts |= kind.write_artifacts(outcome.result, outcome.evaluation, case.task,
                                          case.splits, folder)
        if outcome.history:
            from lensbench.bench.plots import plot_curves

            artifacts["curves"] = plot_curves(outcome.history, folder / "curves.png")
    return artifacts


def suite_lock(workdir: Path, suite: str, profile: str):
    """The lock one `bench run` of ``suite`` and ``profile`` holds on ``workdir`` (two at once
    would each do every run and record it twice): a second is refused at once, naming the
    first's process (:func:`lensbench.datasets.files.exclusive_lock`)."""
    return exclusive_lock(workdir / f"run.{suite}.{profile}.lock",
                          busy=f"another bench run of suite {suite}, profile {profile}, is "
                               f"using {workdir}")


def run_suite(suite: Suite, *, profile: str, seed: int, workdir: Path,
              methods: list[str] | None = None, params: dict[str, dict] | None = None,
              tracker=None, resume: bool = False, log=print, cluster_loop=None) -> list[Result]:
    """Run ``methods`` (default: the suite's for this profile) on every task of ``suite``; with
    ``cluster_loop`` (bench/distributed.py's ``run_on_cluster`` bound to a Dask client), on its
    cluster."""
    kind = kind_of(suite)
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / RESULTS_FILE
    names = list(methods or suite.methods_for(profile))
    for name in names:
        resolve_method(name)  # fail fast on typos, before any simulation
    done = completed_runs(store, suite.name, profile) if resume else set()
    results = []
    # How much work there is, then after each run how much is left: a suite runs for hours.
    counts = {task.name: kind.n_cases(task, names, profile) for task in suite.tasks
              if profile in task.sizes}
    total, left = sum(counts.values()), sum(counts.values())
    log(f"{total} runs to do ({', '.join(f'{name}: {n}' for name, n in counts.items())})")
    if cluster_loop is not None:
        return cluster_loop(kind, suite, names=names, profile=profile, seed=seed,
                            workdir=workdir, params=params or {}, done=done, total=total,
                            tracker=tracker, log=log)
    for task in suite.tasks:
        if profile not in task.sizes:
            log(f"task {task.name} has no {profile!r} profile: skipped")
            continue
        splits = kind.splits(task, profile, workdir, log=log)
        for case in kind.cases(suite, task, splits, names, params or {}, profile, workdir):
            check_stop()  # between methods (a skipped one included)
            left -= 1
            if already_done(case, done, suite=suite.name, profile=profile, seed=seed):
                log(f"skip {case.run_id} on {case.task.name}: already done (--resume)")
                continue
            folder = run_folder(workdir, suite.name, case.task.name, case.run_id)
            outcome = run_method(kind, case, suite=suite.name, profile=profile, seed=seed,
                                 artifact_dir=folder)
            artifacts = write_run_artifacts(kind, case, outcome, folder)
            record_result(outcome.result, store=store, workdir=workdir, artifacts=artifacts,
                          history=outcome.history, tracker=tracker, log=log,
                          line=kind.summary_line(outcome.result))
            results.append(outcome.result)
            if left:
                log(f"{left} of {total} runs left")
    return results
