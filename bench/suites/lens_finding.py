"""The lens-finding kind: is there a lens in this cutout? (Metcalf et al. 2019's challenge)

Splits are simulated (bench/splits.py); methods are fitted on the train split's images and
labels and score every test cutout. Metrics (bench/metrics.py): AUROC, TPR0, TPR10, TPR at fixed
FPR, ECE, the same in bins of theta_E, arc S/N and lens magnitude, the rotation-invariance check
on a subset of the test cutouts and, for tasks with real known lenses, how many score above the
simulated test set's FPR-1e-3 threshold. Where the test split holds several classes of non-lens
(spirals, rings, mergers...), the report also gives each run's AUROC against each class alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lensbench.baselines.contract import TaskInfo
from lensbench.baselines.transforms import dihedral
from lensbench.bench.kinds import MAXIMIZE, MINIMIZE, Evaluation, RunCase, StudyData, SuiteKind
from lensbench.bench.metrics import (
    auroc,
    binned_lens_finding_metrics,
    lens_finding_metrics,
    roc_points,
)
from lensbench.bench.report import fmt
from lensbench.bench.results import Result, canonical_run_id
from lensbench.bench.splits import ensure_real_lens_split, ensure_split
from lensbench.bench.suites.real_diagnosis import scored_test_splits, stored_test_scores
from lensbench.bench.tasks import Suite, Task
from lensbench.datasets.config import NEGATIVE_CLASSES
from lensbench.datasets.files import atomic_savez
from lensbench.datasets.interrupts import check_stop
from lensbench.datasets.storage import Split

# Subsets for the binned metrics: lens-only properties bin the lenses against all non-lenses.
BINS = {
    "theta_e": ([0.5, 1.0, 1.5, 2.0, np.inf], False),
    "arc_snr": ([0.0, 5.0, 10.0, 20.0, 50.0, np.inf], False),
}
LENS_MAG_EDGES = [-np.inf, 19.0, 20.0, 21.0, np.inf]
PREDICT_BATCH = 1024
ROTATION_SUBSET = 1000  # test cutouts scored under all 8 dihedral transforms
BRIGHT_EARLY_TYPE = 3  # the "kind" of the real split's bright early-type non-lenses
VALIDATION_FRACTION = 0.2  # of the training split, for tuning

# (column title, metric key) of the rotation-invariance check, in every lens-finding table.
ROTATION_COLUMNS = [("rot. mean abs(ds)", "rotation/mean_abs_change"),
                    ("rot. max abs(ds)", "rotation/max_abs_change"),
                    ("rot. TPR0 spread", "rotation/tpr0_spread")]
COLUMNS = [("AUROC", "auroc"), ("TPR0", "tpr0"), ("TPR10", "tpr10"),
           ("TPR@FPR1e-2", "tpr_fpr1e-2"), ("TPR@FPR1e-3", "tpr_fpr1e-3"),
           ("TPR@FPR1e-4", "tpr_fpr1e-4"), ("ECE", "ece"), *ROTATION_COLUMNS,
           ("member spread", "committee_spread_mean")]


# ----------------------------------------------------------------------------- splits
@dataclass
class LensFindingSplits:
    """A task's train and test splits (or views of them) and its real known lenses."""

    train: Split
    test: Split | None
    real: Split | None = None
    _train_images: np.ndarray | None = None

    def train_images(self) -> np.ndarray:
        """The training images, read once and shared by the task's methods."""
        if self._train_images is None:
            self._train_images = self.train.images()
        return self._train_images

    @property
    def hashes(self) -> dict[str, str]:
        """The content hash of each split a run scores: train, test and the real lenses (in
        the Result, the resume key and MLflow's Dataset column)."""
        hashes = {"train": self.train.content_hash, "test": self.test.content_hash}
        if self.real is not None:
            hashes["real"] = self.real.content_hash
        return hashes

    @property
    def data_files(self) -> dict:
        return {**self.train.manifest.get("data_files", {}),
                **self.test.manifest.get("data_files", {}),
                **(self.real.manifest.get("data_files", {}) if self.real else {})}


def image_task_info(task: Task, split, kind: str | None = None, **extra) -> TaskInfo:
    """The TaskInfo of a task whose inputs are the cutouts of ``split``."""
    from lensbench.datasets.surveys import get_survey

    return TaskInfo(name=task.name, kind=kind or task.kind, bands=tuple(split.bands),
                    pixel_scale=get_survey(task.config.survey).pixel_scale,
                    image_shape=tuple(split.image_shape), survey=task.config.survey, **extra)


def validation_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (fit rows, validation rows) of the training split."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    fit, val = train_test_split(rows, test_size=VALIDATION_FRACTION, stratify=labels,
                                random_state=seed)
    return np.sort(fit), np.sort(val)


# ----------------------------------------------------------------------------- metrics
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


def rotation_metrics(method, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How far a method is from rotation invariance (Schaefer et al. 2018): over the 8 dihedral
    transforms of each cutout, the mean and maximum |score change| from the untransformed score
    (averaged over cutouts), and the spread (max - min) of TPR0 across the transforms."""
    from lensbench.bench.metrics import tpr0

    scores = [np.asarray(method.predict_score(dihedral(images, k)), dtype=np.float64)
              for k in range(8)]
    scores = np.stack(scores)
    change = np.abs(scores[1:] - scores[0])
    tpr0s = [tpr0(labels, s) for s in scores] if 0 < labels.sum() < len(labels) else [np.nan]
    return {"rotation/mean_abs_change": float(change.mean()),
            "rotation/max_abs_change": float(change.max(axis=0).mean()),
            "rotation/tpr0_spread": float(np.max(tpr0s) - np.min(tpr0s)),
            "rotation/n_cutouts": float(images.shape[0])}


def image_batches(split):
    for start in range(0, split.n, PREDICT_BATCH):
        check_stop()  # between batches
        yield split.images(np.arange(start, min(split.n, start + PREDICT_BATCH)))


def predict_with_spread(method, split) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores of every cutout of ``split`` in batches, plus the committee spread if the method
    reports one."""
    with_spread = hasattr(method, "predict_score_with_spread")
    scores, spreads = [], []
    for batch in image_batches(split):
        if with_spread:
            score, spread = method.predict_score_with_spread(batch)
            spreads.append(np.asarray(spread, dtype=np.float64))
        else:
            score = method.predict_score(batch)
        scores.append(np.asarray(score, dtype=np.float64))
    return np.concatenate(scores), (np.concatenate(spreads) if with_spread else None)


# ----------------------------------------------------------------------------- the kind
class LensFinding(SuiteKind):
    name = "lens-finding"
    metric_directions = {"auroc": MAXIMIZE, "tpr0": MAXIMIZE, "tpr10": MAXIMIZE,
                         "tpr_fpr1e-2": MAXIMIZE, "tpr_fpr1e-3": MAXIMIZE,
                         "tpr_fpr1e-4": MAXIMIZE, "ece": MINIMIZE}
    tune_metric = "auroc"
    info_kind = "lens-finding"  # the kind methods are told (the design study's too)
    rotation_subset = ROTATION_SUBSET

    def splits(self, task: Task, profile: str, workdir: Path, log=print) -> LensFindingSplits:
        train = ensure_split(task, "train", profile, workdir)
        test = ensure_split(task, "test", profile, workdir)
        real = ensure_real_lens_split(task, workdir) if task.real_lenses else None
        return LensFindingSplits(train, test, real)

    def case(self, name: str, params: dict, task: Task, splits: LensFindingSplits) -> RunCase:
        return RunCase(name, params, task, splits, splits.hashes, splits.train.n, splits.test.n,
                       splits.data_files)

    def task_info(self, task: Task, splits: LensFindingSplits) -> TaskInfo:
        return image_task_info(task, splits.train, kind=self.info_kind)

    def training_data(self, task: Task, splits: LensFindingSplits):
        return splits.train_images(), splits.train.truth[task.target]

    def evaluate(self, method, task: Task, splits: LensFindingSplits, name: str) -> Evaluation:
        test, real = splits.test, splits.real
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
                                          for batch in image_batches(real)])
            threshold = threshold_at_fpr(test.truth[task.target], scores, 1e-3)
            metrics |= real_lens_metrics(real.truth["label"], real_scores, threshold)
            bright = real.truth["kind"] == BRIGHT_EARLY_TYPE
            if bright.any():
                metrics |= {"real/bright_early_types": float(bright.sum()),
                            "real/bright_early_types_above_fpr1e-3":
                                float((real_scores[bright] > threshold).sum())}
            real_predictions = {"real_scores": real_scores, "real_threshold": threshold,
                                "real_hash": real.content_hash}
            # The probe edits the real cutouts as made; a view of them (the design kind's band
            # subsets, lens-light subtraction) is another input, not probed.
            if isinstance(real, Split):
                from lensbench.bench.suites.real_diagnosis import probe_edits

                real_predictions["real_probe"] = probe_edits(method, task.real_lenses, real)
        if spread is not None:
            metrics["committee_spread_mean"] = float(spread.mean())
        subset = np.arange(min(test.n, self.rotation_subset))
        if len(subset):
            metrics |= rotation_metrics(method, test.images(subset),
                                        test.truth[task.target][subset])
        return Evaluation(metrics, predict_time, {"scores": scores, "spread": spread,
                                                  **(real_predictions if real is not None
                                                     else {})})

    def write_artifacts(self, result: Result, evaluation: Evaluation, task: Task,
                        splits: LensFindingSplits, folder: Path) -> dict[str, Path]:
        """Scores, ROC curve, score histograms and a gallery of the worst mistakes of one run."""
        from lensbench.bench.plots import display_bands, plot_roc_curves, plot_score_histograms
        from lensbench.datasets.gallery import save_gallery

        test = splits.test
        scores, spread = evaluation.predictions["scores"], evaluation.predictions["spread"]
        labels = test.truth[task.target].astype(bool)
        paths = {"scores": folder / "scores.npz"}
        extra = {} if spread is None else {"committee_spread": spread}
        atomic_savez(paths["scores"], scores=scores, labels=labels,
                     test_hash=np.array(test.content_hash), **extra)
        if "real_scores" in evaluation.predictions:
            # Every real object's score and the probe of the real lenses, for the report's
            # real-lens diagnosis (bench/suites/real_diagnosis.py).
            predictions = evaluation.predictions
            probe = {f"probe/{edit}": values
                     for edit, values in predictions.get("real_probe", {}).items()}
            paths["real_scores"] = folder / "real_scores.npz"
            atomic_savez(paths["real_scores"], scores=predictions["real_scores"],
                         threshold=np.array(predictions["real_threshold"]),
                         real_hash=np.array(predictions["real_hash"]), **probe)
        roc = roc_points(labels, scores)
        title = f"{result.run_id} on {task.name}"
        paths["roc"] = plot_roc_curves({result.run_id: (roc.fpr, roc.tpr)}, folder / "roc.png",
                                       title=title)
        paths["score_histograms"] = plot_score_histograms(labels, scores, folder / "scores.png",
                                                          title=title)
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
        return paths

    def summary_line(self, result: Result) -> str:
        if result.status == "ok":
            m = result.metrics
            return (f"{result.run_id:>24} on {result.task}: AUROC {m['auroc']:.3f}  TPR0 "
                    f"{m['tpr0']:.3f}  TPR10 {m['tpr10']:.3f}  ({int(m['n_nonlenses'])} "
                    f"non-lenses; fit {result.fit_time_s:.1f} s)")
        return super().summary_line(result)

    # ------------------------------------------------------------------ tuning
    def study_train_split(self, task: Task, profile: str, workdir: Path):
        """The split a study carves its fit and validation parts from: the task's training
        split (the test split is never made or read)."""
        return ensure_split(task, "train", profile, workdir)

    def study_data(self, task: Task, profile: str, workdir: Path, seed: int) -> StudyData:
        train = self.study_train_split(task, profile, workdir)
        images, labels = train.images(), train.truth[task.target]
        fit_rows, val_rows = validation_split(labels, seed)
        return StudyData(image_task_info(task, train, kind=self.info_kind), images[fit_rows],
                         labels[fit_rows], images[val_rows], labels[val_rows])

    def validation_metrics(self, method, study: StudyData) -> dict[str, float]:
        scores = np.asarray(method.predict_score(study.X_val), dtype=np.float64)
        return lens_finding_metrics(study.y_val, scores)

    # ------------------------------------------------------------------ report
    def report_notes(self, suite: Suite, profile: str) -> list[str]:
        return ["- metrics as defined by Metcalf et al. (2019): TPR0 and TPR10 depend on the "
                "number of non-lenses, so it is given beside them; TPR at fixed FPR does not.",
                f"- rotation columns: the first {ROTATION_SUBSET} test cutouts scored under the "
                "8 dihedral transforms (rotations by 90 deg and flips): mean and maximum |score "
                "change| per cutout (averaged), and the spread of TPR0 across the transforms; 0 "
                "is a perfectly invariant method. Member spread: the mean standard deviation of "
                "a committee's member scores.", ""]

    def report_section(self, suite: Suite, task: Task, results: list[Result], *, workdir: Path,
                       out_dir: Path, stem: str, profile: str) -> tuple[list[str], list[Path]]:
        if not results:
            return [], []
        hashes = results[0].split_hashes
        md = [f"## {task.name} (v{task.version})", "", task.description, "",
              f"Splits: train `{hashes.get('train', '?')[:12]}`, test "
              f"`{hashes.get('test', '?')[:12]}` (content hashes).", ""]
        figures = []
        md += task_table(results)
        md += leader_change_lines(results, workdir)
        md += negative_class_lines(task, results, workdir)
        md += diagnostics_lines(results)
        goal = suite.goals.get(profile)
        if goal:
            md += compare_goal_lines(results, workdir, suite.params_for(profile, task), goal)
        if task.real_lenses:
            from lensbench.datasets.known_lenses import preparation_sentence

            md += ["", "Known real lenses: SLACS HST lenses degraded to the survey, scored "
                   "against the threshold that gives FPR 1e-3 on the simulated test set. The "
                   "real non-lenses are COSMOS field galaxies, much fainter than the SLACS "
                   "lenses, so brightness alone separates them: read the recovered count, not "
                   "an AUROC; and, where the task has them, bright COSMOS early types rendered "
                   "as seen at the SLACS lenses' redshift (datasets/cosmos.py), which are not. "
                   + preparation_sentence(task.real_lenses)]
            md += known_lens_score_lines(results)
            if task.real_lenses.get("n_bright_early_types"):
                from lensbench.bench.suites.real_diagnosis import report_lines

                diagnosis, diagnosis_figures = report_lines(
                    task, results, workdir=workdir, out_dir=out_dir, stem=stem, profile=profile)
                md += diagnosis
                figures += diagnosis_figures
        figure = roc_figure(results, workdir, out_dir / f"{stem}-{task.name}-roc.png",
                            f"{task.name} ({profile} profile)")
        if figure is not None:
            md += ["", f"![ROC curves]({figure.name})"]
            figures.append(figure)
        md.append("")
        return md, figures


# ----------------------------------------------------------------------------- report parts
def task_table(results: list[Result]) -> list[str]:
    ok = sorted((r for r in results if r.status == "ok"), key=lambda r: -r.metrics["auroc"])
    real = any("real/known_lenses" in r.metrics for r in ok)
    header = ["method", *[name for name, _ in COLUMNS], "lenses / non-lenses", "train",
              "fit time (s)"]
    if real:
        header += ["known lenses > FPR1e-3 threshold", "real non-lenses above"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in ok:
        m = r.metrics
        cells = [f"`{r.run_id}`", *[fmt(m.get(key)) for _, key in COLUMNS],
                 f"{int(m['n_lenses'])} / {int(m['n_nonlenses'])}", str(r.n_train),
                 f"{r.fit_time_s:.1f}"]
        if real:
            cells += [f"{int(m.get('real/recovered_fpr1e-3', 0))} / "
                      f"{int(m.get('real/known_lenses', 0))}",
                      f"{int(m.get('real/nonlenses_above_fpr1e-3', 0))}"]
        lines.append("| " + " | ".join(cells) + " |")
    for r in results:
        if r.status != "ok":
            lines.append(f"| `{r.run_id}` | {r.status}: {r.error_line[:80]} |" + " |" *
                         (len(header) - 2))
    return lines


# How many runners-up a leaderboard sets against its leader, and on which metrics (column,
# result key, decimals: AUROC changes between leaders are a few thousandths).
LEADER_RIVALS = 3
LEADER_METRICS = (("AUROC", "auroc", 4), ("TPR10", "tpr10", 3), ("TPR@FPR1e-3", "tpr_fpr1e-3", 3))


def leader_change_lines(results: list[Result], workdir: Path) -> list[str]:
    """Is the leaderboard's order more than test-set noise? Each of the next
    :data:`LEADER_RIVALS` runs minus the leader (the best AUROC among the runs whose test scores
    are stored), on the same test cutouts, with 95% intervals from paired, class-stratified
    bootstrap resamples (:func:`~lensbench.bench.statistics.paired_bootstrap`)."""
    from lensbench.bench.statistics import leader_change_table, paired_bootstrap

    def change(stored, leader_stored):
        (_, scores, test_hash), (labels, leader_scores, leader_hash) = stored, leader_stored
        if test_hash != leader_hash:  # a change needs the same cutouts
            return None
        return paired_bootstrap(labels, scores, leader_scores,
                                metrics=tuple(key for _, key, _ in LEADER_METRICS))

    ok = sorted((r for r in results if r.status == "ok"), key=lambda r: -r.metrics["auroc"])
    return leader_change_table(ok, lambda r: stored_test_scores(r, workdir), change,
                               LEADER_METRICS, "cutouts, resampled within each class",
                               limit=LEADER_RIVALS)


def auroc_by_negative_class(labels: np.ndarray, scores: np.ndarray, negative_class: np.ndarray
                            ) -> dict[str, tuple[float, int]]:
    """For each class of simulated non-lens (``NEGATIVE_CLASSES``) among the cutouts: (AUROC of
    every lens against the non-lenses of that class alone, how many there are)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    lenses = labels == 1
    by_class = {}
    for index, name in enumerate(NEGATIVE_CLASSES):
        members = (labels == 0) & (np.asarray(negative_class) == index)
        if members.any() and lenses.any():
            keep = lenses | members
            by_class[name] = (auroc(labels[keep], scores[keep]), int(members.sum()))
    return by_class


def negative_class_lines(task: Task, results: list[Result], workdir: Path) -> list[str]:
    """Which non-lenses pass for lenses: a table of :func:`auroc_by_negative_class` per run, from
    the test scores each run stored and the test split in the workdir (runs without them, runs
    on another split than the first's, and splits with one class of non-lens give none)."""
    ok = sorted((r for r in results if r.status == "ok"), key=lambda r: -r.metrics["auroc"])
    scored = scored_test_splits(task, [(r, None) for r in ok], workdir)
    if not scored or "negative_class" not in scored[0][4].truth:
        return []
    first_split = scored[0][4].content_hash
    header, rows = None, []
    for r, _, labels, scores, split in scored:
        if split.content_hash != first_split:  # one table, one split
            continue
        by_class = auroc_by_negative_class(labels, scores, split.truth["negative_class"])
        header = header or {name: n for name, (_, n) in by_class.items()}
        rows.append(f"| `{r.run_id}` | " + " | ".join(
            f"{value:.3f}" for value, _ in by_class.values()) + " |")
    if len(header) < 2:
        return []
    return ["", "Which non-lenses pass for lenses: the AUROC of all test lenses against each "
            "class of simulated non-lens alone (how many in brackets). 0.5 is chance; below it a "
            "finder ranks that class above the lenses.", "",
            "| method | " + " | ".join(f"{name} ({n})" for name, n in header.items()) + " |",
            "|" + "---|" * (len(header) + 1), *rows]


# diag/* keys in the order and words of the report; "cnn_" keys are a chain's CNN's own.
DIAGNOSTIC_NAMES = {"fraction_to_cnn": "fraction of test cutouts reaching the CNN",
                    "train_fraction_to_cnn": "fraction of training cutouts reaching the CNN",
                    "members": "members", "best_epoch_mean": "mean best epoch",
                    "temperature": "temperature",
                    "val_ece_before_calibration": "validation ECE before calibration",
                    "val_ece_after_calibration": "after"}


def diagnostics_lines(results: list[Result]) -> list[str]:
    """What methods report about themselves (``diag/*``): calibration, committee size, the share
    of cutouts a two-step chain passes to its CNN."""
    lines = []
    for r in sorted(results, key=lambda r: r.run_id):
        diag = {k.removeprefix("diag/"): v for k, v in r.metrics.items() if k.startswith("diag/")}
        order = list(DIAGNOSTIC_NAMES)
        diag = dict(sorted(diag.items(), key=lambda kv: (
            kv[0].startswith("cnn_"), order.index(kv[0].removeprefix("cnn_"))
            if kv[0].removeprefix("cnn_") in order else len(order), kv[0])))
        if r.status == "ok" and diag:
            parts = [f"{DIAGNOSTIC_NAMES.get(k.removeprefix('cnn_'), k)}"
                     f"{' (CNN)' if k.startswith('cnn_') else ''} {v:.3g}"
                     for k, v in diag.items()]
            lines.append(f"- `{r.run_id}`: " + "; ".join(parts))
    return ["", "Method diagnostics:", "", *lines] if lines else []


def known_lens_score_lines(results: list[Result]) -> list[str]:
    """Each method's scores of the known lenses beside its FPR-1e-3 threshold."""
    lines = []
    for r in sorted((r for r in results if r.status == "ok"), key=lambda r: r.run_id):
        scores = [v for k, v in sorted((int(k.removeprefix("real/score/lens")), v)
                                       for k, v in r.metrics.items()
                                       if k.startswith("real/score/lens"))]
        if scores and "real/threshold_fpr1e-3" in r.metrics:
            lines.append(f"- `{r.run_id}`: threshold {r.metrics['real/threshold_fpr1e-3']:.3g};"
                         f" known-lens scores " + ", ".join(f"{v:.3g}" for v in scores))
    return ["", "Scores of the known lenses (in the order of the real split):", "", *lines] \
        if lines else []


def compare_goal_lines(results: list[Result], workdir: Path, profile_params: dict[str, dict],
                       goal: dict) -> list[str]:
    """A profile's goal (``Suite.goals``; issue 6: the committee beats the single DeepLens on
    TPR0 and TPR10 with AUROC >= 0.98), checked on the unrounded metrics, with 95%
    stratified-bootstrap intervals of the method's AUROC and TPR10 and of its paired change
    against the peer (the test set is a few thousand cutouts, so the third decimal is noise).
    ``profile_params``: the parameters the suite runs the task's methods with in the profile
    (``Suite.params_for``: method -> params)."""
    from lensbench.bench.statistics import change_text, paired_bootstrap

    ok = [r for r in results if r.status == "ok"]

    def pick(name: str) -> Result | None:
        # The run with the profile's own parameters when there is one (a leaderboard may also
        # hold runs of other configurations), else the last run of that method.
        runs = [r for r in ok if r.method == name]
        configured = canonical_run_id(name, profile_params.get(name, {}))
        return next((r for r in runs if r.run_id == configured), runs[-1] if runs else None)

    method, peer = pick(goal["method"]), pick(goal["peer"])
    if method is None or peer is None:
        return []
    m, p = method.metrics, peer.metrics
    checks = [(f"TPR0 {m['tpr0']:.3f} > {p['tpr0']:.3f}", m["tpr0"] > p["tpr0"]),
              (f"TPR10 {m['tpr10']:.3f} > {p['tpr10']:.3f}", m["tpr10"] > p["tpr10"]),
              (f"AUROC {m['auroc']:.4f} >= {goal['min_auroc']}",
               m["auroc"] >= goal["min_auroc"])]
    lines = ["", f"Goal ({goal['issue']}): `{method.run_id}` against `{peer.run_id}`: "
             + "; ".join(f"{text}: {'yes' if passed else 'NO'}" for text, passed in checks)]
    own, other = stored_test_scores(method, workdir), stored_test_scores(peer, workdir)
    if own is not None and other is not None and own[2] == other[2]:
        alone = paired_bootstrap(own[0], own[1], None)
        change = paired_bootstrap(own[0], own[1], other[1])
        lines.append(
            "95% bootstrap intervals (test set resampled within each class): "
            + "; ".join(f"{key.upper()} {alone[key][1]:.4f} to {alone[key][2]:.4f}"
                        for key in ("auroc", "tpr10"))
            + f"; minus `{peer.run_id}`: "
            + "; ".join(f"{key.upper()} {change_text(change[key], 4)}"
                        for key in ("auroc", "tpr10")))
    return lines


def roc_figure(results: list[Result], workdir: Path, path: Path, title: str) -> Path | None:
    from lensbench.bench.plots import plot_roc_curves

    curves = {}
    for r in sorted(results, key=lambda r: -r.metrics.get("auroc", 0)):
        if (data := r.load_artifact("scores", workdir, ("labels", "scores"))) is not None:
            roc = roc_points(data["labels"], data["scores"])
            curves[f"{r.run_id} (AUROC {r.metrics['auroc']:.3f})"] = (roc.fpr, roc.tpr)
    if not curves:
        return None
    return plot_roc_curves(curves, path, title=title)
