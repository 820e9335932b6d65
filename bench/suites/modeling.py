"""The lens-modeling kind (issue 7): lens-model parameters regressed from survey cutouts, against
a traditional fitter.

Each method is fitted on the simulated training lenses (targets
``info.targets``, truth columns ``TRUTH_COLUMNS``) and scored on the test lenses. Methods that fit
lens by lens (``per_lens_fit = True``: the lenstronomy fitter) get only the task's ``fit_subset``
test lenses (drawn once by the test seed); every method is also scored on that subset
(``subset/...``), so the report compares accuracy and time per lens on the same lenses, measured in
the same run. The known SLACS lenses (degraded to the survey) are modelled by every method and
their predicted theta_E recorded beside the published one.

Metrics per parameter p (error = predicted - true): ``p/bias_median``, ``p/half_width_68`` (half
the 16th-84th percentile range of the error), ``p/rmse`` and, for methods with a predictive
variance, ``p/coverage_68`` and ``p/coverage_95`` (fraction of |error| within 1 and 1.96 sigma);
the same in bins of theta_E and arc S/N (``binned/theta_e/<lo>-<hi>/p/...``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lensbench.baselines.contract import LENS_MODEL_TARGETS, TRUTH_COLUMNS, TaskInfo
from lensbench.baselines.modeling import gaussian_nll, half_width_68
from lensbench.bench.kinds import MINIMIZE, Evaluation, RunCase, StudyData, SuiteKind
from lensbench.bench.plots import _new_figure, _save
from lensbench.bench.results import Result
from lensbench.bench.splits import ensure_real_lens_split, ensure_split
from lensbench.bench.tasks import Suite, Task
from lensbench.datasets.files import atomic_savez
from lensbench.datasets.storage import Split

ROTATION_SUBSET = 500  # test lenses predicted under all 8 dihedral transforms
VALIDATION_FRACTION = 0.2  # of the training lenses, for tuning

THETA_E_EDGES = (0.5, 0.8, 1.1, 1.5, 3.0)  # arcsec
ARC_SNR_EDGES = (10.0, 30.0, 60.0, 120.0, np.inf)
UNITS = {"x": "\"", "y": "\"", "theta_e": "\"", "e1": "", "e2": "", "gamma1": "", "gamma2": ""}
# Goals of issue 7 (default profile), checked in the report for the best network.
GOAL_HALF_WIDTH = {"theta_e": 0.10, "x": 0.10, "y": 0.10, "e1": 0.06, "e2": 0.06}
GOAL_THETA_E_BIAS = 0.03
GOAL_COVERAGE_68 = (0.63, 0.73)
GOAL_MS_PER_LENS = 10.0


# ----------------------------------------------------------------------------- metrics
# (half_width_68 and gaussian_nll live in baselines/modeling.py, beside the methods, so the
# networks' per-epoch validation figures (deep/regression.py) are these same statistics.)
# The statistics of a parameter's error on the leaderboard.
ERROR_STATISTICS = {"bias_median": lambda error: float(np.median(error)),
                    "half_width_68": half_width_68,
                    "rmse": lambda error: float(np.sqrt(np.mean(error ** 2)))}
# Those of theta_E that a runner-up is set against the leader on (title, key, decimals).
CHANGE_COLUMNS = (("theta_E 68% half width", "half_width_68", 4),
                  ("theta_E median bias", "bias_median", 4), ("theta_E RMSE", "rmse", 4))


def parameter_metrics(pred: np.ndarray, true: np.ndarray, names: tuple[str, ...],
                      variance: np.ndarray | None = None, prefix: str = "") -> dict[str, float]:
    """Per parameter: median bias, 68% half width and RMSE of the error and, with a variance,
    the coverage of the 68% and 95% Gaussian intervals, and over all parameters the Gaussian
    NLL (``<prefix>nll``, what ``bench tune --metric nll`` minimises on validation lenses).
    Rows with a NaN prediction (a failed fit) are left out and counted in
    ``<prefix>n_failed``."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    ok = np.isfinite(pred).all(axis=1)
    metrics = {f"{prefix}n": float(ok.sum()), f"{prefix}n_failed": float((~ok).sum())}
    if not ok.any():
        return metrics
    error = pred[ok] - true[ok]
    sigma = None
    if variance is not None:
        sigma = np.sqrt(np.clip(np.asarray(variance, dtype=np.float64)[ok], 0, None))
    for j, name in enumerate(names):
        for key, statistic in ERROR_STATISTICS.items():
            metrics[f"{prefix}{name}/{key}"] = statistic(error[:, j])
        if sigma is not None and np.isfinite(sigma[:, j]).all():
            within = np.abs(error[:, j]) / np.maximum(sigma[:, j], 1e-300)
            metrics[f"{prefix}{name}/coverage_68"] = float(np.mean(within <= 1.0))
            metrics[f"{prefix}{name}/coverage_95"] = float(np.mean(within <= 1.959964))
    if sigma is not None and np.isfinite(sigma).all():
        metrics[f"{prefix}nll"] = gaussian_nll(pred[ok], true[ok], sigma ** 2)
    return metrics


def bin_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


def binned_parameter_metrics(pred, true, names, values, edges, prop: str) -> dict[str, float]:
    """``parameter_metrics`` (bias, half width and RMSE) in bins [lo, hi) of ``values``."""
    metrics = {}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        rows = (values >= lo) & (values < hi)
        label = f"binned/{prop}/{bin_label(lo, hi)}/"
        metrics[label + "n"] = float(rows.sum())
        if rows.sum() < 5:
            continue
        for key, value in parameter_metrics(pred[rows], true[rows], names).items():
            if key.endswith(tuple(ERROR_STATISTICS)):
                metrics[label + key] = value
    return metrics


# ----------------------------------------------------------------------------- data
@dataclass
class ModelingData:
    train: Split
    test: Split
    real: Split | None
    targets: tuple[str, ...]
    Y_train: np.ndarray
    Y_test: np.ndarray
    fit_subset: np.ndarray  # test rows the per-lens fitters model
    real_lenses: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    @property
    def hashes(self) -> dict[str, str]:
        hashes = {"train": self.train.content_hash, "test": self.test.content_hash}
        if self.real is not None:
            hashes["real"] = self.real.content_hash
        return hashes


def targets_of(split: Split, names: tuple[str, ...]) -> np.ndarray:
    """(n, P) truth of ``split`` for the named targets."""
    missing = [TRUTH_COLUMNS[n] for n in names if TRUTH_COLUMNS[n] not in split.truth]
    if missing:
        raise KeyError(f"split {split.path}: truth lacks {missing}, needed for the targets "
                       f"{names}")
    return np.stack([np.asarray(split.truth[TRUTH_COLUMNS[n]], dtype=np.float64)
                     for n in names], axis=1)


def load_modeling_data(task: Task, profile: str, workdir: Path) -> ModelingData:
    train = ensure_split(task, "train", profile, workdir)
    test = ensure_split(task, "test", profile, workdir)
    for split in (train, test):
        if not np.all(split.truth["label"] == 1):
            raise ValueError(f"split {split.path}: the modeling task takes lenses only")
    real = ensure_real_lens_split(task, workdir) if task.real_lenses else None
    n_fit = int(task.modeling["fit_subset"].get(profile, 0)) if task.modeling else 0
    rng = np.random.default_rng(task.test_seed)
    subset = np.sort(rng.choice(test.n, size=min(n_fit, test.n), replace=False))
    lenses = np.flatnonzero(real.truth["label"] == 1) if real is not None else np.zeros(0, int)
    return ModelingData(train, test, real, LENS_MODEL_TARGETS,
                        targets_of(train, LENS_MODEL_TARGETS),
                        targets_of(test, LENS_MODEL_TARGETS), subset, lenses)


def task_info(task: Task, train, targets: tuple[str, ...]) -> TaskInfo:
    """The TaskInfo of a modeling task: the cutouts of ``train`` and the regression targets."""
    from lensbench.bench.suites.lens_finding import image_task_info

    return image_task_info(task, train, targets=targets)


# ----------------------------------------------------------------------------- running
def equivariance_metrics(method, images: np.ndarray, targets: tuple[str, ...]
                         ) -> dict[str, float]:
    """How far a regressor is from equivariance under the 8 dihedral transforms (issue 11's
    rotation check, for parameters): each transformed stamp's prediction is mapped back to the
    stamp's own frame (the centre and the ellipticities turn with the image, theta_E does not;
    `transform_targets`) and compared with the stamp's own prediction. Per parameter, the mean
    and the maximum |change| over the 7 other transforms (the maximum averaged over stamps)."""
    import torch
    from lensbench.baselines.transforms import dihedral
    from lensbench.deep.regression import inverse_dihedral, transform_targets

    mapped = []
    for k in range(8):
        pred = torch.as_tensor(predict(method, dihedral(images, k))[0])
        undo = torch.full((len(pred),), inverse_dihedral(k))
        mapped.append(transform_targets(pred, undo, targets).numpy())
    change = np.abs(np.stack(mapped[1:]) - mapped[0])  # (7, n, P)
    metrics = {"rotation/n_cutouts": float(len(images))}
    for j, name in enumerate(targets):
        metrics[f"rotation/{name}/mean_abs_change"] = float(change[..., j].mean())
        metrics[f"rotation/{name}/max_abs_change"] = float(change[..., j].max(axis=0).mean())
    return metrics


def predict(method, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(means (n, P), variances (n, P) or None) of a fitted method."""
    if hasattr(method, "predict_with_uncertainty"):
        out = method.predict_with_uncertainty(X)
        return np.asarray(out["mean"], dtype=np.float64), np.asarray(out["variance"], float)
    mean = np.asarray(method.predict_score(X), dtype=np.float64)
    variance = None
    if hasattr(method, "predict_variance"):
        variance = np.asarray(method.predict_variance(X), dtype=np.float64)
    return mean, variance


def real_theta_e_metrics(pred: np.ndarray, variance: np.ndarray | None, data: ModelingData
                         ) -> dict[str, float]:
    """Predicted against published theta_E of the known lenses: per lens, and the median of
    predicted - published."""
    j = data.targets.index("theta_e")
    published = np.asarray(data.real.truth["theta_e"], dtype=np.float64)[data.real_lenses]
    metrics = {}
    for number, (guess, truth) in enumerate(zip(pred[:, j], published, strict=True)):
        metrics[f"real/lens{number}/theta_e_published"] = float(truth)
        metrics[f"real/lens{number}/theta_e_pred"] = float(guess)
        if variance is not None:
            metrics[f"real/lens{number}/theta_e_sigma"] = float(np.sqrt(max(variance[number, j],
                                                                            0.0)))
    ok = np.isfinite(pred[:, j])
    if ok.any():
        metrics["real/theta_e_median_error"] = float(np.median(pred[ok, j] - published[ok]))
        metrics["real/theta_e_median_abs_error"] = float(np.median(np.abs(pred[ok, j]
                                                                          - published[ok])))
    return metrics


# ----------------------------------------------------------------------------- plots
# Figures are made by bench/plots.py's helpers (Agg canvas, tight layout, fixed dpi).
def plot_predicted_vs_true(pred: np.ndarray, true: np.ndarray, names: tuple[str, ...],
                           title: str, path: Path) -> Path:
    """One panel per parameter: 2-d histogram (log counts) of predicted against true with the
    1:1 line; a scatter when there are few lenses (the fitter's subset)."""
    from matplotlib.colors import LogNorm

    fig = _new_figure((3.0 * len(names), 3.2))
    ok = np.isfinite(pred).all(axis=1)
    for j, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), j + 1)
        t, p = true[ok, j], pred[ok, j]
        lo, hi = np.percentile(np.concatenate([t, p]) if len(t) else [0, 1], [0.5, 99.5])
        if len(t) >= 200:
            bins = np.linspace(lo, hi, 50)
            ax.hist2d(t, p, bins=[bins, bins], norm=LogNorm(), cmap="viridis")
        else:
            ax.plot(t, p, "o", ms=3)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.7)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        unit = UNITS.get(name, "")
        ax.set_xlabel(f"true {name} {unit}".strip())
        ax.set_ylabel(f"predicted {name}")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_binned(results: list[Result], prop: str, path: Path, xlabel: str,
                names=("theta_e", "x", "e1", "gamma1")) -> Path:
    """68% half width (top row) and median bias (bottom row) of the error of ``names`` in bins
    of ``prop``, one line per method."""
    fig = _new_figure((3.6 * len(names), 6.2))
    for j, name in enumerate(names):
        for row, (key, title) in enumerate((("half_width_68", "68% half width"),
                                            ("bias_median", "median bias"))):
            ax = fig.add_subplot(2, len(names), row * len(names) + j + 1)
            for r in results:
                centres, values = _binned_curve(r, prop, f"{name}/{key}")
                ax.plot(centres, values, "o-", ms=3, label=r.run_id)
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_title(f"{name}: {title} {UNITS.get(name, '')}".strip(), fontsize=9)
            if key == "bias_median":
                ax.axhline(0, color="grey", lw=0.7)
            elif name in GOAL_HALF_WIDTH:
                ax.axhline(GOAL_HALF_WIDTH[name], color="grey", ls="--", lw=0.7)
    fig.axes[0].legend(fontsize=7)
    return _save(fig, path)


def _binned_curve(result: Result, prop: str, key: str) -> tuple[list[float], list[float]]:
    """(bin centres, values of ``key``) of a run's bins of ``prop`` that hold it."""
    bins = sorted({k.split("/")[2] for k in result.metrics
                   if k.startswith(f"binned/{prop}/") and k.endswith("/n")},
                  key=lambda label: float(label.split("-")[0]))
    centres, values = [], []
    for label in bins:
        value = result.metrics.get(f"binned/{prop}/{label}/{key}")
        if value is None:
            continue
        lo, hi = (float(v) for v in label.split("-"))
        centres.append(np.sqrt(lo * hi) if np.isfinite(hi) else 1.5 * lo)
        values.append(value)
    return centres, values


def plot_real_theta_e(panels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path
                      ) -> Path:
    """Predicted against published theta_E of the known lenses, one marker set per method."""
    fig = _new_figure((4.6, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    top = 0.5
    for name, (published, pred, sigma) in panels.items():
        ax.errorbar(published, pred, yerr=np.nan_to_num(sigma), fmt="o", ms=4, capsize=2,
                    label=name)
        top = max(top, np.nanmax(np.concatenate([published, pred])) * 1.15)
    ax.plot([0, top], [0, top], "k-", lw=0.7)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("published theta_E (\")")
    ax.set_ylabel("predicted theta_E (\")")
    ax.legend(fontsize=7)
    return _save(fig, path)


# ----------------------------------------------------------------------------- report
def _f(value, digits=3, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def metric_table(results: list[Result], key: str, prefix: str = "", signed: bool = False,
                 names=LENS_MODEL_TARGETS) -> list[str]:
    lines = ["| method | " + " | ".join(f"{n} {UNITS[n]}".strip() for n in names) + " |",
             "|" + "---|" * (len(names) + 1)]
    for r in results:
        cells = [_f(r.metrics.get(f"{prefix}{n}/{key}"), signed=signed) for n in names]
        lines.append(f"| `{r.run_id}` | " + " | ".join(cells) + " |")
    return lines


def coverage_table(results: list[Result]) -> list[str]:
    """Per method with uncertainties: each parameter's 68% / 95% coverage, and the test NLL."""
    names = LENS_MODEL_TARGETS
    lines = ["| method | " + " | ".join(names) + " | NLL |", "|" + "---|" * (len(names) + 2)]
    for r in results:
        if f"{names[0]}/coverage_68" not in r.metrics:
            continue
        cells = [f"{_f(r.metrics.get(f'{n}/coverage_68'), 2)} / "
                 f"{_f(r.metrics.get(f'{n}/coverage_95'), 2)}" for n in names]
        lines.append(f"| `{r.run_id}` | " + " | ".join(cells)
                     + f" | {_f(r.metrics.get('nll'))} |")
    return lines


def per_lens(result: Result) -> bool:
    """Whether a run modelled only the fit subset (a lens-by-lens fitter)."""
    m = result.metrics
    return m.get("n", 0) + m.get("n_failed", 0) < result.n_test


def stored_theta_e_errors(result: Result, workdir: Path
                          ) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(test rows, theta_E error on them, test-split hash) from a run's stored predictions."""
    data = result.load_artifact("predictions", workdir,
                                ("targets", "rows", "pred", "true", "test_hash"))
    if data is None:
        return None
    column = list(data["targets"]).index("theta_e")
    return (data["rows"], data["pred"][:, column] - data["true"][:, column],
            str(data["test_hash"]))


def leader_change_lines(results: list[Result], workdir: Path) -> list[str]:
    """Is the order more than test-set noise? Each other run minus the leader (the narrowest
    theta_E error among the runs whose predictions are stored) on the same test lenses: the
    change of the theta_E error's half width, median and RMSE with paired bootstrap intervals
    (:func:`~lensbench.bench.statistics.paired_bootstrap_rows`)."""
    from lensbench.bench.statistics import leader_change_table, paired_bootstrap_rows

    def change(stored, leader_stored):
        (rows, error, test_hash), (leader_rows, leader_error, leader_hash) = stored, leader_stored
        same = test_hash == leader_hash and np.array_equal(rows, leader_rows)  # the same lenses
        if not (same and np.isfinite(error).all() and np.isfinite(leader_error).all()):
            return None
        return paired_bootstrap_rows(error, leader_error, ERROR_STATISTICS)

    ranked = sorted(results, key=lambda r: r.metrics["theta_e/half_width_68"])
    return leader_change_table(ranked, lambda r: stored_theta_e_errors(r, workdir), change,
                               CHANGE_COLUMNS, "lenses")


def best_network(results: list[Result]) -> Result | None:
    nets = [r for r in results if r.method.endswith("regressor")]
    return min(nets, key=lambda r: r.metrics["theta_e/half_width_68"]) if nets else None


def goal_checks(m: dict) -> list[tuple[str, str, bool]]:
    """(goal, measured value, met) for the goals of issue 7."""
    checks = [(f"theta_E median abs(bias) <= {GOAL_THETA_E_BIAS}\"",
               f"{m['theta_e/bias_median']:+.3f}", abs(m["theta_e/bias_median"])
               <= GOAL_THETA_E_BIAS)]
    for name, goal in GOAL_HALF_WIDTH.items():
        value = m[f"{name}/half_width_68"]
        checks.append((f"{name} 68% half width <= {goal}{UNITS[name]}", f"{value:.3f}",
                       value <= goal))
    lo, hi = GOAL_COVERAGE_68
    for name in LENS_MODEL_TARGETS:
        value = m.get(f"{name}/coverage_68", np.nan)
        checks.append((f"{name} 68% coverage in [{lo}, {hi}]", _f(value), lo <= value <= hi))
    checks.append((f"inference <= {GOAL_MS_PER_LENS:g} ms per lens (CPU)",
                   f"{m['time_per_lens_ms']:.2f} ms", m["time_per_lens_ms"] <= GOAL_MS_PER_LENS))
    return checks


def goal_table(results: list[Result]) -> list[str]:
    """The goals of issue 7 against each method (prior excluded): value, and whether met."""
    results = [r for r in results if r.method != "prior-median"]
    if not results:
        return []
    lines = ["| goal (issue 7) | " + " | ".join(f"`{r.run_id}`" for r in results) + " |",
             "|" + "---|" * (len(results) + 1)]
    columns = [goal_checks(r.metrics) for r in results]
    for row, (goal, _, _) in enumerate(columns[0]):
        cells = [f"{checks[row][1]} {'yes' if checks[row][2] else '**NO**'}"
                 for checks in columns]
        lines.append(f"| {goal} | " + " | ".join(cells) + " |")
    return lines


def subset_lines(results: list[Result]) -> list[str]:
    """Every method on the traditional fitter's lenses, with time per lens and speed-up."""
    fitters = [r for r in results if per_lens(r)]
    if not fitters:
        return []
    fitter = fitters[0]
    names = ("theta_e", "x", "y", "e1", "e2", "gamma1", "gamma2")
    header = ["method", "lenses (failed)", "theta_e median bias", "theta_e RMSE",
              *(f"{n} 68% half width" for n in names), "time per lens"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        m = r.metrics
        ms = m["time_per_lens_ms"]
        when = f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.2f} ms"
        lines.append(f"| `{r.run_id}` | {int(m.get('subset/n', 0))} "
                     f"({int(m.get('subset/n_failed', 0))}) | "
                     f"{_f(m.get('subset/theta_e/bias_median'), signed=True)} | "
                     f"{_f(m.get('subset/theta_e/rmse'))} | "
                     + " | ".join(_f(m.get(f"subset/{n}/half_width_68")) for n in names)
                     + f" | {when} |")
    net = best_network(results)
    if net is not None:
        ratio = fitter.metrics["time_per_lens_ms"] / net.metrics["time_per_lens_ms"]
        lines += ["", f"Speed-up of `{net.run_id}` over `{fitter.run_id}` (time per lens, both "
                      f"timed by this harness on one machine; runs started {net.started_at} and "
                      f"{fitter.started_at}): **{ratio:,.0f}x**."]
    return lines


def binned_table(results: list[Result], prop: str, name: str) -> list[str]:
    """Per method and bin of ``prop``: the 68% half width, median bias and RMSE of ``name``'s
    error (the half width alone is the spread about the median: a constant guess that is right
    for the bin's middle looks narrow there however far off it is)."""
    ok = [r for r in results if any(k.startswith(f"binned/{prop}/") for k in r.metrics)]
    if not ok:
        return []
    labels = sorted({k.split("/")[2] for k in ok[0].metrics
                     if k.startswith(f"binned/{prop}/") and k.endswith("/n")},
                    key=lambda label: float(label.split("-")[0]))
    counts = [int(ok[0].metrics[f"binned/{prop}/{b}/n"]) for b in labels]
    lines = ["| method | " + " | ".join(f"{b} (n={c})" for b, c in zip(labels, counts,
                                                                          strict=True)) + " |",
             "|" + "---|" * (len(labels) + 1)]
    for r in ok:
        lines.append(f"| `{r.run_id}` | " + " | ".join(
            _binned_cell(r.metrics, f"binned/{prop}/{b}/{name}/") for b in labels) + " |")
    return lines


def _binned_cell(metrics: dict, prefix: str) -> str:
    """"half width / median bias / RMSE" of one bin."""
    return " / ".join(_f(metrics.get(prefix + key), signed=key == "bias_median")
                      for key in ("half_width_68", "bias_median", "rmse"))


def real_lines(results: list[Result], workdir: Path, theta_e_range: tuple[float, float]
               ) -> tuple[list[str], dict]:
    """The known lenses' table (published theta_E, its source, each method's prediction, marked
    † beyond the simulated ``theta_e_range``) and the figure's panels."""
    from lensbench.datasets.known_lenses import THETA_E_SOURCES, load_slacs

    panels, columns = {}, {}
    for r in results:
        data = r.load_artifact("predictions", workdir, ("targets",))
        if data is None or "real_pred" not in data:
            continue
        j = list(data["targets"]).index("theta_e")
        published = data["real_published_theta_e"]
        sigma = np.sqrt(np.clip(data["real_variance"][:, j], 0, None))
        panels[r.run_id] = (published, data["real_pred"][:, j], sigma)
        columns[r.run_id] = (data["real_pred"][:, j], sigma)
        index = data["real_object_index"]
    if not panels:
        return [], {}
    lenses = load_slacs("198x198")
    known = [lenses[int(k)] for k in index]
    published = next(iter(panels.values()))[0]
    lo, hi = theta_e_range
    lines = ["| lens | published theta_E (\") | from | " + " | ".join(
        f"`{n}`" for n in columns) + " |", "|" + "---|" * (len(columns) + 3)]
    for i, lens in enumerate(known):
        cells = []
        for pred, sigma in columns.values():
            cells.append(_f(pred[i], 2) + (f" ± {sigma[i]:.2f}" if np.isfinite(sigma[i]) else "")
                         + (" †" if not lo <= pred[i] <= hi else ""))
        lines.append(f"| {lens.name} | {published[i]:.2f} | "
                     f"{THETA_E_SOURCES.get(lens.theta_e_ref, '?')} | " + " | ".join(cells) + " |")
    return lines, panels


def rotation_table(results: list[Result]) -> list[str]:
    """Methods x parameters: mean |change| (max) under the dihedral transforms."""
    measured = [r for r in results if "rotation/n_cutouts" in r.metrics]
    if not measured:
        return []
    targets = [t for t in LENS_MODEL_TARGETS
               if f"rotation/{t}/mean_abs_change" in measured[0].metrics]
    lines = ["| method | " + " | ".join(targets) + " |", "|" + "---|" * (len(targets) + 1)]
    for r in measured:
        cells = [f"{r.metrics[f'rotation/{t}/mean_abs_change']:.4f} "
                 f"({r.metrics[f'rotation/{t}/max_abs_change']:.4f})" for t in targets]
        lines.append(f"| `{r.run_id}` | " + " | ".join(cells) + " |")
    return lines


# ----------------------------------------------------------------------------- the kind
class Modeling(SuiteKind):
    name = "modeling"
    metric_directions = {**{f"{p}/{m}": MINIMIZE for p in LENS_MODEL_TARGETS
                            for m in ("half_width_68", "rmse")}, "nll": MINIMIZE}
    # The theta_E 68% half width: issue 7's headline figure (Schuldt et al. 2021 quote it);
    # "nll" also judges the uncertainties of methods that give them.
    tune_metric = "theta_e/half_width_68"
    seed_note = (" (every method seed derives from it; the splits are drawn by each task's "
                 "fixed seeds)")

    def splits(self, task: Task, profile: str, workdir: Path, log=print) -> ModelingData:
        data = load_modeling_data(task, profile, workdir)
        log(f"{task.name}: train {data.train.n}, test {data.test.n} lenses, fit subset "
            f"{len(data.fit_subset)}, known real lenses {len(data.real_lenses)}")
        return data

    def case(self, name: str, params: dict, task: Task, splits: ModelingData) -> RunCase:
        data_files = {**splits.train.manifest.get("data_files", {}),
                      **(splits.real.manifest.get("data_files", {}) if splits.real else {})}
        return RunCase(name, params, task, splits, splits.hashes, splits.train.n,
                       splits.test.n, data_files)

    def task_info(self, task: Task, splits: ModelingData) -> TaskInfo:
        return task_info(task, splits.train, splits.targets)

    def training_data(self, task: Task, splits: ModelingData):
        return splits.train.images(), splits.Y_train

    def contract_details(self, task: Task, splits: ModelingData) -> dict:
        """The default, and each target's range over the training lenses: `bench predict`
        flags a prediction beyond it (the network extrapolates there)."""
        Y = np.asarray(splits.Y_train, dtype=np.float64)
        return {**super().contract_details(task, splits), "target_ranges": {
            name: [float(Y[:, j].min()), float(Y[:, j].max())]
            for j, name in enumerate(splits.targets)}}

    def evaluate(self, method, task: Task, splits: ModelingData, name: str) -> Evaluation:
        """The test lenses (the fit subset only for a lens-by-lens fitter) and the known real
        lenses."""
        data = splits
        per_lens = getattr(method, "per_lens_fit", False)
        rows = data.fit_subset if per_lens else np.arange(data.test.n)
        start = time.perf_counter()
        pred, variance = predict(method, data.test.images(rows))
        predict_time = time.perf_counter() - start
        shape = (len(rows), len(data.targets))
        if pred.shape != shape or (not per_lens and not np.isfinite(pred).all()):
            raise ValueError(f"{name} predicted shape {pred.shape} with "
                             f"{int((~np.isfinite(pred)).sum())} non-finite values; expected "
                             f"{shape} finite parameters ({', '.join(data.targets)})")
        truth = data.Y_test[rows]
        metrics = parameter_metrics(pred, truth, data.targets, variance)
        metrics["time_per_lens_ms"] = 1000.0 * predict_time / max(len(rows), 1)
        # The same metrics on the fitter's subset, so every method is compared on those lenses.
        in_subset = np.isin(rows, data.fit_subset)
        metrics |= parameter_metrics(pred[in_subset], truth[in_subset], data.targets,
                                     None if variance is None else variance[in_subset],
                                     prefix="subset/")
        values = {"theta_e": (truth[:, data.targets.index("theta_e")], THETA_E_EDGES),
                  "arc_snr": (np.asarray(data.test.truth["arc_snr"], float)[rows],
                              ARC_SNR_EDGES)}
        for prop, (column, edges) in values.items():
            metrics |= binned_parameter_metrics(pred, truth, data.targets, column, edges, prop)
        rotation_rows = np.arange(0 if per_lens else min(data.test.n, ROTATION_SUBSET))
        if len(rotation_rows):  # not for a per-lens fitter: 8 more fits per lens
            metrics |= equivariance_metrics(method, data.test.images(rotation_rows),
                                            data.targets)
        predictions = {"rows": rows, "pred": pred, "variance": variance, "real_pred": None,
                       "real_variance": None}
        if data.real is not None and len(data.real_lenses):
            real_pred, real_var = predict(method, data.real.images(data.real_lenses))
            metrics |= real_theta_e_metrics(real_pred, real_var, data)
            predictions["real_pred"], predictions["real_variance"] = real_pred, real_var
        return Evaluation(metrics, predict_time, predictions)

    def write_artifacts(self, result: Result, evaluation: Evaluation, task: Task,
                        splits: ModelingData, folder: Path) -> dict[str, Path]:
        data, out = splits, evaluation.predictions
        rows, pred = out["rows"], out["pred"]
        nan = np.full_like(pred, np.nan)
        paths = {"predictions": folder / "predictions.npz"}
        real = {}
        if out["real_pred"] is not None:
            real = {"real_pred": out["real_pred"],
                    "real_variance": (out["real_variance"] if out["real_variance"] is not None
                                      else np.full_like(out["real_pred"], np.nan)),
                    "real_published_theta_e": np.asarray(data.real.truth["theta_e"],
                                                         float)[data.real_lenses],
                    "real_object_index": np.asarray(data.real.truth["object_index"])[
                        data.real_lenses]}
        atomic_savez(paths["predictions"], rows=rows, pred=pred, true=data.Y_test[rows],
                     variance=out["variance"] if out["variance"] is not None else nan,
                     arc_snr=np.asarray(data.test.truth["arc_snr"], float)[rows],
                     targets=np.array(data.targets), test_hash=np.array(
                         data.test.content_hash), **real)
        paths["predicted-vs-true"] = plot_predicted_vs_true(
            pred, data.Y_test[rows], data.targets, result.run_id,
            folder / "predicted-vs-true.png")
        return paths

    def summary_line(self, result: Result) -> str:
        if result.status != "ok":
            return super().summary_line(result)
        m = result.metrics
        parts = [f"{name} {m.get(f'{name}/half_width_68', np.nan):.3f}"
                 for name in ("theta_e", "x", "e1", "gamma1")]
        return (f"{result.run_id:>24} on {result.task}: 68% half widths " + ", ".join(parts)
                + f"; {m['time_per_lens_ms']:.2f} ms/lens (fit {result.fit_time_s:.0f} s)")

    # ------------------------------------------------------------------ tuning
    def study_data(self, task: Task, profile: str, workdir: Path, seed: int) -> StudyData:
        """A random ``VALIDATION_FRACTION`` of the training lenses (drawn by ``seed``) to judge,
        the rest to fit; the test split is never made or read."""
        from sklearn.model_selection import train_test_split

        train = ensure_split(task, "train", profile, workdir)
        images, targets = train.images(), targets_of(train, LENS_MODEL_TARGETS)
        fit, val = train_test_split(np.arange(train.n), test_size=VALIDATION_FRACTION,
                                    random_state=seed)
        fit, val = np.sort(fit), np.sort(val)
        return StudyData(task_info(task, train, LENS_MODEL_TARGETS), images[fit], targets[fit],
                         images[val], targets[val])

    def validation_metrics(self, method, study: StudyData) -> dict[str, float]:
        pred, variance = predict(method, study.X_val)
        targets = study.info.targets
        return parameter_metrics(pred, study.y_val, targets, variance)

    # ------------------------------------------------------------------ report
    def report_notes(self, suite: Suite, profile: str) -> list[str]:
        return ["- Error = predicted - true. Half width: half the 16th-84th percentile range of "
                "the error (Schuldt et al. 2021 quote theta_E 0.07 +0.29/-0.12\"); coverage: the "
                "fraction of test lenses whose error lies within the method's 1 sigma (68%) and "
                "1.96 sigma (95%) intervals. x, y: SIE centre from the stamp centre; e1, e2 = "
                "(1-q)/(1+q) (cos 2phi, sin 2phi); gamma1, gamma2: external shear. "
                "`prior-median` predicts the training median: the floor.", ""]

    def report_section(self, suite: Suite, task: Task, results: list[Result], *, workdir: Path,
                       out_dir: Path, stem: str, profile: str) -> tuple[list[str], list[Path]]:
        """The accuracy tables, the goal check, the comparison with the traditional fitter on
        the same lenses (speed-up), binned accuracy, the known lenses and the figures."""
        return modeling_section(task, results, workdir=workdir, out_dir=out_dir, stem=stem)


def modeling_section(task: Task, results: list[Result], *, workdir: Path, out_dir: Path,
                     stem: str) -> tuple[list[str], list[Path]]:
    md: list[str] = []
    figures = []
    ok = [r for r in results if r.task == task.name and r.status == "ok"]
    full = [r for r in ok if not per_lens(r)]
    full.sort(key=lambda r: r.metrics["theta_e/half_width_68"])
    md += [f"## {task.name} (v{task.version})", "", task.description, "",
           "Splits (content hashes): " + ", ".join(
               f"{role} `{h[:12]}`" for role, h in (ok[0].split_hashes.items() if ok
                                                    else [])) + ".", ""]
    for r in results:
        if r.task == task.name and r.status != "ok":
            md += [f"- `{r.run_id}`: {r.status}: {r.error_line[:160]}"]
    if not ok:
        return md, figures
    md += ["", f"### Accuracy on the {ok[0].n_test} test lenses", "",
           "68% half width of the error:", "", *metric_table(full, "half_width_68"),
           *leader_change_lines(full, workdir), "",
           "Median bias:", "", *metric_table(full, "bias_median", signed=True), "",
           "RMSE:", "", *metric_table(full, "rmse"), "",
           "Coverage of the 68% / 95% intervals, and the Gaussian NLL of the truth under "
           "the predicted means and sigmas (mean over lenses and parameters; lower is better; "
           "a too-narrow sigma costs more than a wide one):", "", *coverage_table(full), "",
           "Time per lens (inference, CPU) and fit time: " + "; ".join(
               f"`{r.run_id}` {r.metrics['time_per_lens_ms']:.2f} ms, fit "
               f"{r.fit_time_s:.0f} s" for r in full) + ".", ""]
    md += [*goal_table(full), ""]
    rotation = rotation_table(full)
    if rotation:
        md += ["### Rotation equivariance", "",
               f"The first {int(full[0].metrics['rotation/n_cutouts'])} test lenses under "
               "the 8 dihedral transforms (quarter turns and flips); each prediction is "
               "mapped back to the untransformed stamp's frame (the centre and the "
               "ellipticities turn with the image, theta_E does not) and compared with the "
               "untransformed stamp's. Each cell: the mean |change| and, in brackets, the "
               "maximum over the transforms averaged over stamps; 0 is an exactly "
               "equivariant method.", "", *rotation, ""]
    sub = subset_lines([r for r in ok])
    if sub:
        md += [f"### Against traditional fitting ({int(ok[0].metrics.get('subset/n', 0))} "
               "test lenses)", "", *sub, ""]
    for prop, xlabel, tag in (("theta_e", "true theta_E (arcsec)", "theta-e"),
                              ("arc_snr", "arc S/N", "arc-snr")):
        md += [f"theta_E error in bins of {xlabel}: 68% half width / median bias / RMSE "
               "(arcsec):", "",
               *binned_table(full, prop, "theta_e"), ""]
        figure = plot_binned(full, prop, out_dir / f"{stem}-{task.name}-binned-{tag}.png",
                             xlabel)
        md += [f"![68% half widths and median biases in bins of {prop}]({figure.name})", ""]
        figures.append(figure)
    for r in full:
        data = (None if r.method == "prior-median" else
                r.load_artifact("predictions", workdir, ("pred", "true", "targets")))
        if data is None:
            continue
        figure = plot_predicted_vs_true(
            data["pred"], data["true"], tuple(data["targets"]), r.run_id,
            out_dir / f"{stem}-{task.name}-{r.method}-predicted-vs-true.png")
        md += [f"![predicted against true, {r.method}]({figure.name})", ""]
        figures.append(figure)
    theta_e_range = task.config.theta_e_range
    lines, panels = real_lines([r for r in ok if r.method != "prior-median"], workdir,
                               theta_e_range)
    if lines:
        from lensbench.datasets.known_lenses import preparation_sentence

        md += ["### Known SLACS lenses (HST F814W degraded to the survey)", "",
               "Predicted theta_E (± 1 sigma where the method gives one) against the "
               "published Einstein radius: the SIE b of Auger et al. (2010) / Shajib et al. "
               "(2021) where they list the lens, else the R_Einstein of the slacs-match "
               "(GLASS) free-form model. † marks a prediction beyond the simulated theta_E "
               f"range ({theta_e_range[0]:g}-{theta_e_range[1]:g}\"): the network "
               "extrapolates there, and its sigma does not say so. "
               + preparation_sentence(task.real_lenses), "", *lines, ""]
        figure = plot_real_theta_e(panels, out_dir / f"{stem}-{task.name}-slacs.png")
        md += [f"![SLACS theta_E]({figure.name})", ""]
        figures.append(figure)
    return md, figures
