"""The runner: every method on every task of a suite, one Result record per (method, task).

Splits are made once per (task, version, profile) and reused by hash. One ``--seed`` derives every
method seed. A failing method is recorded with its traceback and the suite goes on; ``resume``
skips runs already recorded as ok or declined for the same split hashes and params.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
from lensbench.baselines.contract import TaskInfo
from lensbench.bench.metrics import binned_lens_finding_metrics, lens_finding_metrics, roc_points
from lensbench.baselines.registry import resolve_method
from lensbench.bench.results import Result, append_result, canonical_run_id, read_results
from lensbench.bench.tasks import Suite, Task, kind_handler
from lensbench.datasets.storage import Split, load_split, split_is_complete

RESULTS_FILE = "results.jsonl"
# Subsets for the binned metrics: lens-only properties bin the lenses against all non-lenses.
BINS = {
    "theta_e": ([0.5, 1.0, 1.5, 2.0, np.inf], False),
    "arc_snr": ([0.0, 5.0, 10.0, 20.0, 50.0, np.inf], False),
}
LENS_MAG_EDGES = [-np.inf, 19.0, 20.0, 21.0, np.inf]
PREDICT_BATCH = 1024


def derive_seed(root: int, *parts: str) -> int:
    """A seed for one (method, task, ...) from the suite seed: stable across runs and machines."""
    digest = hashlib.sha256(json.dumps([int(root), *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def split_key(task: Task, role: str, n: int, seed: int) -> str:
    from lensbench.datasets.simulate import SIMULATOR_VERSION

    # The simulator version is in the key: a split made by older simulator code is never reused.
    payload = json.dumps({"config": task.config.to_dict(), "n": n, "seed": seed,
                          "task": task.name, "version": task.version,
                          "simulator": SIMULATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def ensure_split(task: Task, role: str, profile: str, workdir: Path, *, quiet: bool = False
                 ) -> Split:
    """The task's train or test split for ``profile``: loaded (hashes verified) if made before,
    simulated and written atomically otherwise."""
    from lensbench.datasets.simulate import make_split

    n_train, n_test = task.size(profile)
    n, seed = (n_train, task.train_seed) if role == "train" else (n_test, task.test_seed)
    key = split_key(task, role, n, seed)
    path = workdir / "splits" / f"{task.name}-v{task.version}-{role}-{n}-{key}"
    if not split_is_complete(path):
        from tqdm.auto import tqdm

        with tqdm(total=n, desc=f"simulate {task.name} {role}", unit="img", disable=quiet,
                  leave=False) as bar:
            make_split(task.config, n, seed, path, progress=bar.update,
                       created_by=f"lensbench task {task.name} v{task.version}")
    return load_split(path, verify=True)


def ensure_real_lens_split(task: Task, workdir: Path) -> Split:
    """The task's split of real known lenses and real non-lenses, made once (by key)."""
    from lensbench.datasets.real import make_real_lens_split

    spec = dict(task.real_lenses)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = workdir / "splits" / f"{task.name}-v{task.version}-real-{key}"
    if not split_is_complete(path):
        make_real_lens_split(spec["survey"], spec["bands"], spec["stamp_size"], path,
                             seed=spec["seed"], n_nonlenses=spec["n_nonlenses"],
                             created_by=f"lensbench task {task.name} v{task.version}")
    return load_split(path, verify=True)


def threshold_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """The score a cutout must exceed so that at most ``fpr`` of the non-lenses do (ties at
    the threshold are not counted as found)."""
    negatives = np.sort(scores[~labels.astype(bool)])[::-1]
    allowed = int(np.floor(fpr * len(negatives)))
    return float(negatives[allowed]) if allowed < len(negatives) else -np.inf


def real_lens_metrics(real_labels: np.ndarray, real_scores: np.ndarray, threshold: float
                      ) -> dict[str, float]:
    """How many known lenses score above the simulated test set's FPR-1e-3 threshold, how many
    real non-lenses do, and each known lens's score."""
    lens = real_labels.astype(bool)
    metrics = {"real/known_lenses": float(lens.sum()),
               "real/recovered_fpr1e-3": float((real_scores[lens] > threshold).sum()),
               "real/nonlenses_above_fpr1e-3": float((real_scores[~lens] > threshold).sum()),
               "real/threshold_fpr1e-3": threshold}
    for number, score in enumerate(real_scores[lens]):
        metrics[f"real/score/lens{number}"] = float(score)
    return metrics


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("lensbench", "numpy", "scikit-learn", "torch", "xgboost", "astropy", "mlflow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


DIRTY = "+dirty"
# What runs: a change elsewhere (reports/, README) does not make a run's code differ from HEAD.
CODE_PATHS = ("bench", "baselines", "deep", "datasets", "pyproject.toml")


@functools.cache  # the commit of the code this process runs, not of later commits made under it
def git_commit() -> str | None:
    """HEAD of the lensbench checkout, with DIRTY appended when tracked code (CODE_PATHS)
    differs from it (the code that ran is then not exactly that commit's); None outside a git
    checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, cwd=root)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                  *CODE_PATHS], capture_output=True, text=True, timeout=10,
                                 cwd=root)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + (DIRTY if changed.stdout.strip() else "")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def task_info(task: Task, split: Split) -> TaskInfo:
    from lensbench.datasets.surveys import get_survey

    return TaskInfo(name=task.name, kind=task.kind, bands=tuple(split.bands),
                    pixel_scale=get_survey(task.config.survey).pixel_scale,
                    image_shape=tuple(split.image_shape), survey=task.config.survey)


def score_metrics(labels: np.ndarray, scores: np.ndarray, truth: dict, reference_band: str
                  ) -> dict[str, float]:
    """The task metrics plus the binned ones, flat: ``binned/<property>/<lo>-<hi>/<metric>``."""
    metrics = dict(lens_finding_metrics(labels, scores))
    binned = [(name, truth[name], edges, negatives) for name, (edges, negatives) in BINS.items()]
    lens_mag = f"lens_mag_{reference_band}"
    if lens_mag in truth:
        binned.append(("lens_mag", truth[lens_mag], LENS_MAG_EDGES, True))
    for name, values, edges, negatives in binned:
        for row in binned_lens_finding_metrics(labels, scores, values, edges,
                                               bin_negatives=negatives):
            label = f"{row['lo']:g}-{row['hi']:g}"
            for key in ("auroc", "tpr0", "tpr10", "n_lenses"):
                metrics[f"binned/{name}/{label}/{key}"] = float(row[key])
    return metrics


@dataclass
class RunOutcome:
    result: Result
    scores: np.ndarray | None
    history: dict
    spread: np.ndarray | None = None  # committee spread per test cutout, when the method has one
    files: dict[str, Path] = field(default_factory=dict)  # files the method wrote (checkpoint)


ROTATION_SUBSET = 1000  # test cutouts scored under all 8 dihedral transforms


def dihedral_images(images: np.ndarray, k: int) -> np.ndarray:
    """The k-th dihedral transform of the last two axes, as ``deep.preprocess.dihedral`` (k % 4
    quarter turns, then a left-right flip for k >= 4), in numpy for any method."""
    turned = np.rot90(images, k % 4, axes=(-2, -1))
    return np.ascontiguousarray(turned[..., ::-1] if k >= 4 else turned)


def rotation_metrics(method, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How far a method is from rotation invariance (Schaefer et al. 2018): over the 8 dihedral
    transforms of each cutout, the mean and maximum |score change| from the untransformed score
    (averaged over cutouts), and the spread (max - min) of TPR0 across the transforms."""
    from lensbench.bench.metrics import tpr0

    scores = [np.asarray(method.predict_score(dihedral_images(images, k)), dtype=np.float64)
              for k in range(8)]
    scores = np.stack(scores)
    change = np.abs(scores[1:] - scores[0])
    tpr0s = [tpr0(labels, s) for s in scores] if 0 < labels.sum() < len(labels) else [np.nan]
    return {"rotation/mean_abs_change": float(change.mean()),
            "rotation/max_abs_change": float(change.max(axis=0).mean()),
            "rotation/tpr0_spread": float(np.max(tpr0s) - np.min(tpr0s)),
            "rotation/n_cutouts": float(images.shape[0])}


def run_folder(workdir: Path, suite: str, task: str, run_id: str) -> Path:
    """Where the artefacts of one (method, task) run go."""
    return workdir / "runs" / suite / task / _safe(run_id)


def predict_with_spread(method, split: Split) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores of every cutout of ``split`` in batches, plus the committee spread if the method
    reports one."""
    with_spread = hasattr(method, "predict_score_with_spread")
    scores, spreads = [], []
    for batch in _image_batches(split):
        if with_spread:
            score, spread = method.predict_score_with_spread(batch)
            spreads.append(np.asarray(spread, dtype=np.float64))
        else:
            score = method.predict_score(batch)
        scores.append(np.asarray(score, dtype=np.float64))
    return np.concatenate(scores), (np.concatenate(spreads) if with_spread else None)


def start_record(name: str, params: dict, task: Task, *, suite: str, profile: str, seed: int,
                 split_hashes: dict, n_train: int, n_test: int, data_files: dict) -> dict:
    """The fields every Result of one run shares, fixed when it starts (run id, the method's
    seed derived from the suite seed, versions, commit, start time); the runners of every
    suite kind add the status and what the run measured."""
    return dict(run_id=canonical_run_id(name, params), method=name, task=task.name, suite=suite,
                profile=profile, params=params, split_hashes=split_hashes,
                seed=derive_seed(seed, name, task.name), suite_seed=seed,
                versions=package_versions(), git_commit=git_commit(), started_at=now(),
                n_train=n_train, n_test=n_test, data_files=data_files)


def run_method(name: str, params: dict, task: Task, train: Split, test: Split, *,
               suite: str, profile: str, seed: int,
               train_images: np.ndarray | None = None, real: Split | None = None,
               artifact_dir: Path | None = None, rotation_subset: int = ROTATION_SUBSET
               ) -> RunOutcome:
    """Fit and score one method on one task; any exception becomes a failed Result. Methods
    with a ``checkpoint_dir`` parameter the user left unset save their checkpoint in
    ``artifact_dir``. The rotation metrics use the first ``rotation_subset`` test cutouts (none
    when 0)."""
    base = start_record(
        name, params, task, suite=suite, profile=profile, seed=seed,
        split_hashes={"train": train.content_hash, "test": test.content_hash},
        n_train=train.n, n_test=test.n,
        data_files={**train.manifest.get("data_files", {}),
                    **test.manifest.get("data_files", {}),
                    **(real.manifest.get("data_files", {}) if real else {})})
    method_seed = base["seed"]
    scores, spread, history, files = None, None, {}, {}
    try:
        method = build_method(name, params, method_seed, artifact_dir)
        info = task_info(task, train)
        reason = method.decline(info)
        if reason:
            result = Result(**base, status="declined", error=reason, finished_at=now())
            return RunOutcome(result, None, {})
        X = train.images() if train_images is None else train_images
        fit_kwargs = {}
        if "epoch_callback" in inspect.signature(method.fit).parameters:
            fit_kwargs["epoch_callback"] = _collect_into(history)
        start = time.perf_counter()
        method.fit(X, train.truth[task.target], info=info, **fit_kwargs)
        fit_time = time.perf_counter() - start
        if getattr(method, "checkpoint_path_", None):
            files["checkpoint"] = Path(method.checkpoint_path_)
        start = time.perf_counter()
        scores, spread = predict_with_spread(method, test)
        predict_time = time.perf_counter() - start
        if scores.shape != (test.n,) or not np.isfinite(scores).all():
            raise ValueError(f"{name}.predict_score returned shape {scores.shape} with "
                             f"{int((~np.isfinite(scores)).sum())} non-finite values; expected "
                             f"{test.n} finite scores")
        metrics = score_metrics(test.truth[task.target], scores, test.truth,
                                task.config.reference)
        if real is not None:
            real_scores = np.concatenate([np.asarray(method.predict_score(batch), dtype=float)
                                          for batch in _image_batches(real)])
            threshold = threshold_at_fpr(test.truth[task.target], scores, 1e-3)
            metrics |= real_lens_metrics(real.truth["label"], real_scores, threshold)
        if spread is not None:
            metrics["committee_spread_mean"] = float(spread.mean())
        subset = np.arange(min(test.n, rotation_subset))
        if len(subset):
            metrics |= rotation_metrics(method, test.images(subset),
                                        test.truth[task.target][subset])
        if hasattr(method, "diagnostics"):
            metrics |= {f"diag/{key}": float(value)
                        for key, value in method.diagnostics().items()}
        if not history:
            history.update(getattr(method, "history_", {}) or {})
        result = Result(**base, status="ok", metrics=metrics, fit_time_s=fit_time,
                        predict_time_s=predict_time, finished_at=now())
    except Exception:  # a failing method is recorded, the suite goes on
        result = Result(**base, status="failed", error=traceback.format_exc(), finished_at=now())
        scores = spread = None
    return RunOutcome(result, scores, history, spread, files)


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


def _collect_into(history: dict):
    """An epoch callback that appends each epoch's metrics to ``history`` (name -> list)."""
    def callback(epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            history.setdefault(key, []).append(float(value))
    return callback


def _image_batches(split: Split):
    for start in range(0, split.n, PREDICT_BATCH):
        yield split.images(np.arange(start, min(split.n, start + PREDICT_BATCH)))


def _resume_key(result: Result) -> tuple:
    return (result.run_id, result.task, json.dumps(result.split_hashes, sort_keys=True),
            json.dumps(result.params, sort_keys=True, default=str))


def completed_runs(store: Path, suite: str, profile: str) -> set[tuple]:
    """Resume keys of the runs of ``suite`` and ``profile`` that finished (ok or declined)."""
    return {_resume_key(r) for r in read_results(store)
            if r.status in ("ok", "declined") and r.suite == suite and r.profile == profile}


def record_result(result: Result, *, store: Path, workdir: Path, artifacts: dict[str, Path],
                  history: dict, tracker, log, line: str) -> None:
    """Append one finished run to the store, mirror it to the tracker and print its line."""
    result.artifacts = {k: str(v.relative_to(workdir)) for k, v in artifacts.items()}
    append_result(store, result)
    if tracker is not None:
        tracker.log_result(result, epoch_metrics=history, artifacts=artifacts)
    log(line)


def run_suite(suite: Suite, *, profile: str, seed: int, workdir: Path,
              methods: list[str] | None = None, params: dict[str, dict] | None = None,
              tracker=None, resume: bool = False, log=print) -> list[Result]:
    """Run ``methods`` (default: the suite's for this profile) on every task of ``suite``."""
    runner = kind_handler(suite, "run_suite")
    if runner is not None:
        return runner(suite, profile=profile, seed=seed, workdir=workdir, methods=methods,
                      params=params, tracker=tracker, resume=resume, log=log)
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / RESULTS_FILE
    names = list(methods or suite.methods_for(profile))
    for name in names:
        resolve_method(name)  # fail fast on typos, before any simulation
    params = {name: {**suite.params_for(profile).get(name, {}), **(params or {}).get(name, {})}
              for name in names}
    done = completed_runs(store, suite.name, profile) if resume else set()
    results = []
    for task in suite.tasks:
        if profile not in task.sizes:
            log(f"task {task.name} has no {profile!r} profile: skipped")
            continue
        train = ensure_split(task, "train", profile, workdir)
        test = ensure_split(task, "test", profile, workdir)
        train_images = None  # read once per task, shared by its methods
        real = ensure_real_lens_split(task, workdir) if task.real_lenses else None
        for name in names:
            method_params = dict(params.get(name, {}))
            probe = Result(run_id=canonical_run_id(name, method_params), method=name,
                           task=task.name, suite=suite.name, profile=profile,
                           params=method_params, split_hashes={"train": train.content_hash,
                                                               "test": test.content_hash},
                           seed=seed, status="ok")
            if _resume_key(probe) in done:
                log(f"skip {probe.run_id} on {task.name}: already done (--resume)")
                continue
            if train_images is None:
                train_images = train.images()
            outcome = run_method(name, method_params, task, train, test, suite=suite.name,
                                 profile=profile, seed=seed, train_images=train_images,
                                 real=real, artifact_dir=run_folder(
                                     workdir, suite.name, task.name, probe.run_id))
            artifacts = {}
            if outcome.scores is not None:
                artifacts = write_artifacts(outcome, test, task, workdir)
            record_result(outcome.result, store=store, workdir=workdir, artifacts=artifacts,
                          history=outcome.history, tracker=tracker, log=log,
                          line=summary_line(outcome.result))
            results.append(outcome.result)
    return results


def summary_line(result: Result) -> str:
    if result.status == "ok":
        m = result.metrics
        return (f"{result.run_id:>24} on {result.task}: AUROC {m['auroc']:.3f}  TPR0 "
                f"{m['tpr0']:.3f}  TPR10 {m['tpr10']:.3f}  ({int(m['n_nonlenses'])} non-lenses; "
                f"fit {result.fit_time_s:.1f} s)")
    return f"{result.run_id:>24} on {result.task}: {result.status.upper()} {result.error_line}"


def write_artifacts(outcome: RunOutcome, test: Split, task: Task, workdir: Path
                    ) -> dict[str, Path]:
    """Scores, ROC curve, score histograms and a gallery of the worst mistakes of one run."""
    from lensbench.bench.plots import plot_curves, plot_roc_curves, plot_score_histograms
    from lensbench.datasets.gallery import save_gallery

    result, scores = outcome.result, outcome.scores
    labels = test.truth[task.target].astype(bool)
    folder = run_folder(workdir, result.suite, task.name, result.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"scores": folder / "scores.npz", **outcome.files}
    extra = {} if outcome.spread is None else {"committee_spread": outcome.spread}
    np.savez_compressed(paths["scores"], scores=scores, labels=labels,
                        test_hash=np.array(test.content_hash), **extra)
    roc = roc_points(labels, scores)
    paths["roc"] = plot_roc_curves({result.run_id: (roc.fpr, roc.tpr)}, folder / "roc.png",
                                   title=f"{result.run_id} on {task.name}")
    paths["score_histograms"] = plot_score_histograms(labels, scores, folder / "scores.png",
                                                      title=f"{result.run_id} on {task.name}")
    false_positives = np.flatnonzero(~labels)[np.argsort(-scores[~labels])][:8]
    missed_lenses = np.flatnonzero(labels)[np.argsort(scores[labels])][:8]
    rows = np.concatenate([false_positives, missed_lenses])
    if len(rows):
        order = np.argsort(rows)  # h5py reads want increasing indices
        images = np.empty((len(rows), *test.image_shape), dtype=np.float32)
        images[order] = test.images(rows[order])
        bands, picked = display_bands(test.bands)
        captions = [("FP" if not labels[r] else f"lens {test.truth['theta_e'][r]:.2f}\"")
                    + f" s={scores[r]:.2f}" for r in rows]
        paths["mistakes"] = save_gallery(images[:, picked], bands, captions,
                                         folder / "mistakes.png", ncols=8,
                                         title="top: highest-scoring non-lenses; bottom: "
                                               "lowest-scoring lenses")
    if outcome.history:
        paths["curves"] = plot_curves(outcome.history, folder / "curves.png")
    return paths


def display_bands(bands: list[str]) -> tuple[list[str], list[int]]:
    """Bands for a colour composite: g, r, i where present, else the reddest three."""
    if all(b in bands for b in ("g", "r", "i")):
        chosen = ["g", "r", "i"]
    else:
        chosen = list(bands[-3:])
    return chosen, [bands.index(b) for b in chosen]


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=," else "_" for c in run_id)
