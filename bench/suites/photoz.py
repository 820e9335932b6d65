"""The photo-z kind: photometric-redshift regression on real SDSS catalogues.

Each method is fitted on the train part of a real split (with the validation part offered to
methods whose ``fit`` takes ``validation=``), scored on the test part with
:mod:`lensbench.bench.photoz_metrics`, and recorded as one Result per (method, task).
Validation metrics are recorded too (``val/...``); a tuning study is judged on the same
validation part and never loads the test part.

Methods with ``predict_pdf`` (every registered one) are also scored on their p(z), on the shared
grid ``baselines.photoz.PDF_GRID``, with RAIL's metrics under RAIL's names (PIT KS, CvM, AD and
outlier rate, CDE loss, and RAIL's point metrics) and Beck et al. (2016)'s
(bench/photoz_metrics.py); each run keeps its PIT values and the p(z) of a few test galaxies
(``EXAMPLE_QUANTILES``) beside its predictions, with a figure of both; the report compares them
across methods.

Method inputs: ``X`` (n, 10) = the u,g,r,i,z magnitudes then their errors (``info.bands``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lensbench.baselines.contract import TaskInfo
from lensbench.baselines.photoz import PDF_GRID
from lensbench.bench.kinds import MINIMIZE, Evaluation, RunCase, StudyData, SuiteKind
from lensbench.bench.photoz_metrics import (
    beck_metrics,
    binned_photoz_metrics,
    distribution_metrics,
    photoz_metrics,
    rail_point_metrics,
)
from lensbench.bench.results import Result
from lensbench.bench.tasks import Suite, Task
from lensbench.datasets.files import atomic_savefig, atomic_savez

MAG_BAND = "r"  # binned metrics by this band's magnitude
MAG_EDGES = (14.0, 17.0, 18.0, 19.0, 20.0, 21.0, 22.0, 25.0)
ROLES = ("train", "val", "test")
# the test galaxies whose p(z) every run keeps: those at these quantiles of z_spec (the same
# galaxies for every method of a task)
EXAMPLE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.995)
PIT_BINS = 20

# The training magnitudes' range a photo-z model's contract records, per band: the 0.1 and 99.9
# percentiles (the extreme 0.1% are single galaxies, not coverage).
TRAINING_RANGE_PERCENTILES = (0.1, 99.9)


# ----------------------------------------------------------------------------- data
@dataclass
class PhotozData:
    """The arrays of one task and profile: role -> (X, z)."""

    X: dict[str, np.ndarray]
    z: dict[str, np.ndarray]
    hashes: dict[str, str]
    data_files: dict[str, str]
    meta: dict
    bands: tuple[str, ...]

    def n(self, role: str) -> int:
        return len(self.z[role])


def load_task_data(task: Task, profile: str, workdir: Path, roles=ROLES) -> PhotozData:
    """The task's real split (made once under ``workdir/splits``; train/val/test drawn by the
    task's fixed ``train_seed``), each part cut to the profile's size by a seeded subsample.
    ``roles``: the parts to load (a tuning study: train and val only, never the test part); the
    subsample of each is the same whichever parts are loaded."""
    from lensbench.datasets.photoz import _arrays_hash, ensure_photoz_split

    spec = task.photoz
    split = ensure_photoz_split(spec["sample"], workdir, task.train_seed,
                                tuple(spec.get("fractions", (0.7, 0.1, 0.2))))
    n_train, n_test = task.size(profile)
    caps = {"train": n_train, "val": max(1, n_test // 2), "test": n_test}
    rng = np.random.default_rng(task.test_seed)
    X, z, hashes = {}, {}, {}
    # The parts are subsampled in ROLES order from one generator: the study's train and val
    # rows are the run's.
    for role in ROLES[:max(ROLES.index(r) for r in roles) + 1]:
        part = split.parts[role]
        if len(part) > caps[role]:
            part = part.take(np.sort(rng.choice(len(part), caps[role], replace=False)))
        X[role] = np.hstack([part.mags, part.errs])
        z[role] = part.z.astype(np.float64)
        hashes[role] = _arrays_hash(part)
    meta = {k: split.meta[k] for k in ("drops", "counts", "n_kept", "seed", "fractions",
                                       "test_mode")}
    return PhotozData(X, z, hashes, split.data_files, meta,
                      tuple(split.parts["train"].bands))


def task_info(task: Task, data: PhotozData) -> TaskInfo:
    return TaskInfo(name=task.name, kind=task.kind, bands=data.bands,
                    pixel_scale=float("nan"), image_shape=(len(data.bands), 0, 0))


# ----------------------------------------------------------------------------- metrics
def score_photoz(z_phot: np.ndarray, z_spec: np.ndarray, mags: np.ndarray, bands, z_edges,
                 variance: np.ndarray | None = None, prefix: str = "") -> dict[str, float]:
    """Flat metrics: the scalars, ``binned/z_spec/<lo>-<hi>/<metric>``, ``binned/mag_r/...``
    and, with a predictive variance, the fraction of |z_phot - z_spec| within 1 and 2 sigma."""
    metrics = {prefix + k: v for k, v in photoz_metrics(z_phot, z_spec).items()}
    binned = [("z_spec", z_spec, z_edges), (f"mag_{MAG_BAND}", mags[:, bands.index(MAG_BAND)],
                                             MAG_EDGES)]
    for name, values, edges in binned:
        for row in binned_photoz_metrics(z_phot, z_spec, values, edges):
            label = f"{row['lo']:g}-{row['hi']:g}"
            for key in ("sigma_nmad", "bias_mean", "outlier_frac", "outlier_frac_lsst", "n"):
                metrics[f"{prefix}binned/{name}/{label}/{key}"] = float(row[key])
    if variance is not None:
        sigma = np.sqrt(np.clip(np.asarray(variance, dtype=np.float64), 0, None))
        error = np.abs(z_phot - z_spec)
        metrics[prefix + "coverage_1sigma"] = float(np.mean(error <= sigma))
        metrics[prefix + "coverage_2sigma"] = float(np.mean(error <= 2 * sigma))
    return metrics


def example_rows(z_spec: np.ndarray) -> np.ndarray:
    """The rows of the galaxies at ``EXAMPLE_QUANTILES`` of z_spec (the nearest to each)."""
    targets = np.quantile(z_spec, EXAMPLE_QUANTILES)
    return np.array([int(np.argmin(np.abs(z_spec - t))) for t in targets])


def checked_pdf(method, X: np.ndarray, name: str, role: str) -> np.ndarray:
    pdf = np.asarray(method.predict_pdf(X), dtype=np.float64)
    if pdf.shape != (len(X), len(PDF_GRID)) or not np.isfinite(pdf).all() or (pdf < 0).any():
        raise ValueError(f"{name}.predict_pdf returned shape {pdf.shape} on {role}; expected "
                         f"({len(X)}, {len(PDF_GRID)}) finite non-negative densities on "
                         "baselines.photoz.PDF_GRID")
    return pdf


def score_pdf(pdf: np.ndarray, z_phot: np.ndarray, z_spec: np.ndarray, prefix: str = ""
              ) -> tuple[dict[str, float], np.ndarray]:
    """RAIL's distribution and point metrics and Beck et al.'s, flat; and the PIT values."""
    metrics, pit = distribution_metrics(pdf, PDF_GRID, z_spec)
    metrics |= rail_point_metrics(z_phot, z_spec) | beck_metrics(z_phot, z_spec)
    return {prefix + k: v for k, v in metrics.items()}, pit


# ----------------------------------------------------------------------------- plots
def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_density(panels: dict[str, tuple[np.ndarray, np.ndarray]], path: Path,
                 z_range: tuple[float, float], ncols: int = 3) -> Path:
    """2-d histograms (log counts) of z_phot against z_spec, one panel per method, with the
    1:1 line and the |dz| = 0.15 outlier boundaries."""
    from matplotlib.colors import LogNorm

    n = len(panels)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig = _figure((4.0 * ncols, 3.8 * nrows))
    lo, hi = z_range
    line = np.linspace(lo, hi, 50)
    bins = np.linspace(lo, hi, 81)
    for number, (name, (z_phot, z_spec)) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, number + 1)
        ax.hist2d(z_spec, z_phot, bins=[bins, bins], norm=LogNorm(), cmap="viridis")
        ax.plot(line, line, "w-", lw=0.8)
        for sign in (1, -1):
            ax.plot(line, line + sign * 0.15 * (1 + line), "w--", lw=0.6)
        m = photoz_metrics(z_phot, z_spec)
        ax.set_title(f"{name}\nNMAD {m['sigma_nmad']:.4f}, out {m['outlier_frac']:.3f}, "
                     f"bias {m['bias_mean']:+.4f}", fontsize=8)
        ax.set_xlabel("z_spec")
        ax.set_ylabel("z_phot")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    return _save(fig, path)


def plot_metrics_vs(results: list[Result], prefix: str, path: Path, xlabel: str) -> Path:
    """sigma_NMAD, mean bias and outlier fraction against the bins of ``prefix``
    (``binned/z_spec`` or ``binned/mag_r``), one line per method."""
    keys = (("sigma_nmad", "sigma_NMAD"), ("bias_mean", "mean bias"),
            ("outlier_frac", "outlier fraction |dz|>0.15"))
    fig = _figure((12.0, 3.6))
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    for r in results:
        bins = sorted({k.split("/")[2] for k in r.metrics if k.startswith(prefix + "/")},
                      key=lambda label: float(label.split("-")[0]))
        centres = [np.mean([float(v) for v in label.split("-")]) for label in bins]
        for ax, (key, title) in zip(axes, keys, strict=True):
            values = [r.metrics.get(f"{prefix}/{label}/{key}", np.nan) for label in bins]
            ax.plot(centres, values, "o-", ms=3, label=r.run_id)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(xlabel)
    axes[1].axhline(0, color="grey", lw=0.6)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def plot_pit(panels: dict[str, np.ndarray], path: Path) -> Path:
    """Per method (a column): the PIT histogram (density; 1 is calibrated; a U: too narrow, a
    hump: too wide) over its Q-Q plot against the uniform distribution."""
    n = len(panels)
    fig = _figure((3.2 * n, 6.0))
    for column, (name, pit) in enumerate(panels.items()):
        hist = fig.add_subplot(2, n, column + 1)
        hist.hist(pit, bins=PIT_BINS, range=(0, 1), density=True, color="steelblue")
        hist.axhline(1.0, color="k", lw=0.8, ls="--")
        hist.set_title(name, fontsize=8)
        hist.set_xlabel("PIT")
        qq = fig.add_subplot(2, n, n + column + 1)
        uniform = (np.arange(len(pit)) + 0.5) / len(pit)
        qq.plot(uniform, np.sort(pit), lw=1.2)
        qq.plot([0, 1], [0, 1], "k--", lw=0.8)
        qq.set_xlabel("uniform quantile")
        qq.set_ylabel("PIT quantile")
        qq.set_xlim(0, 1)
        qq.set_ylim(0, 1)
    return _save(fig, path)


def plot_pdf_examples(panels: dict[str, np.ndarray], z_spec: np.ndarray, path: Path,
                      z_range: tuple[float, float]) -> Path:
    """p(z) of the example galaxies (a panel each), one line per method, z_spec dashed."""
    n = len(z_spec)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig = _figure((4.0 * ncols, 2.8 * nrows))
    lo, hi = z_range
    for number, truth in enumerate(z_spec):
        ax = fig.add_subplot(nrows, ncols, number + 1)
        for name, pdfs in panels.items():
            ax.plot(PDF_GRID, pdfs[number], lw=1.0, label=name)
        ax.axvline(truth, color="k", ls="--", lw=0.8)
        ax.set_xlim(lo, hi + 0.1 * (hi - lo))
        ax.set_title(f"z_spec {truth:.3f}", fontsize=8)
        ax.set_xlabel("z")
    fig.axes[0].legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.tight_layout()
        atomic_savefig(fig, path)
    finally:
        fig.clear()
    return path


# ----------------------------------------------------------------------------- report
def _f(value, digits=4) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def photoz_table(results: list[Result]) -> list[str]:
    ok = sorted((r for r in results if r.status == "ok"), key=lambda r: r.metrics["sigma_nmad"])
    header = ["method", "sigma_NMAD", "outliers (abs dz>0.15)", "mean bias", "median bias",
              "sigma_IQR", "LSST outliers", "val sigma_NMAD", "val outliers", "1-sigma coverage",
              "train / test", "fit time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in ok:
        m = r.metrics
        cells = [f"`{r.run_id}`", _f(m["sigma_nmad"]), _f(m["outlier_frac"]),
                 f"{m['bias_mean']:+.4f}", f"{m['bias_median']:+.4f}", _f(m["sigma_iqr"]),
                 _f(m["outlier_frac_lsst"]), _f(m.get("val/sigma_nmad")),
                 _f(m.get("val/outlier_frac")), _f(m.get("coverage_1sigma"), 3),
                 f"{r.n_train} / {r.n_test}", f"{r.fit_time_s:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    for r in results:
        if r.status != "ok":
            lines.append(f"| `{r.run_id}` | {r.status}: {r.error_line[:80]} |"
                         + " |" * (len(header) - 2))
    return lines


DISTRIBUTION_COLUMNS = (
    ("cdeloss", "CDE loss", 3), ("pit_ks", "PIT KS", 4), ("pit_cvm", "PIT CvM", 2),
    ("pit_ad", "PIT AD", 1), ("pit_outlier_rate", "PIT outliers", 4),
    ("val/cdeloss", "val CDE loss", 3), ("val/pit_ks", "val PIT KS", 4),
    ("point_bias", "point_bias", 4), ("point_stats_iqr", "point_stats_iqr", 4),
    ("point_stats_sigma_mad", "point_stats_sigma_mad", 4),
    ("point_outlier_rate", "point_outlier_rate", 4), ("beck_sigma", "Beck sigma(dz)", 4),
    ("beck_outlier_rate_3sigma", "Beck 3-sigma outliers", 4))


def distribution_table(results: list[Result]) -> list[str]:
    """RAIL's metrics (and Beck et al.'s) of the methods with a p(z), best CDE loss first."""
    ok = sorted((r for r in results if r.status == "ok" and "cdeloss" in r.metrics),
                key=lambda r: r.metrics["cdeloss"])
    if not ok:
        return []
    lines = ["| method | " + " | ".join(title for _, title, _ in DISTRIBUTION_COLUMNS) + " |",
             "|" + "---|" * (len(DISTRIBUTION_COLUMNS) + 1)]
    for r in ok:
        lines.append(f"| `{r.run_id}` | " + " | ".join(
            _f(r.metrics.get(key), digits) for key, _, digits in DISTRIBUTION_COLUMNS) + " |")
    return lines


def binned_table(results: list[Result], prefix: str, key: str = "sigma_nmad") -> list[str]:
    ok = [r for r in results if r.status == "ok"]
    if not ok:
        return []
    bins = sorted({k.split("/")[2] for k in ok[0].metrics if k.startswith(prefix + "/")},
                  key=lambda label: float(label.split("-")[0]))
    counts = [ok[0].metrics.get(f"{prefix}/{b}/n", 0) for b in bins]
    lines = ["| method | " + " | ".join(f"{b} (n={int(c)})" for b, c in zip(bins, counts,
                                                                              strict=True)) + " |",
             "|" + "---|" * (len(bins) + 1)]
    for r in sorted(ok, key=lambda r: r.metrics["sigma_nmad"]):
        lines.append(f"| `{r.run_id}` | " + " | ".join(
            _f(r.metrics.get(f"{prefix}/{b}/{key}")) for b in bins) + " |")
    return lines


# The figures a runner-up is set against the leader on and the goal's intervals are given for
# (title, key, decimals).
CHANGE_COLUMNS = (("sigma_NMAD", "sigma_nmad", 4), ("outliers", "outlier_frac", 4),
                  ("mean bias", "bias_mean", 4))


def stored_predictions(result: Result, workdir: Path) -> dict[str, np.ndarray] | None:
    """The test predictions a run saved (``predictions`` artefact: z_phot, z_spec, test_hash and,
    for a p(z) method, its PIT and example p(z)), or None."""
    return result.load_artifact("predictions", workdir, ("z_phot", "z_spec", "test_hash"))


def stored_predictions_by_run(results: list[Result], workdir: Path
                              ) -> dict[str, dict[str, np.ndarray]]:
    """Each run's stored test predictions (:func:`stored_predictions`) by run id, read once for
    all of a report's sections; runs without them are left out."""
    return {r.run_id: saved for r in results
            if (saved := stored_predictions(r, workdir)) is not None}


def goal_lines(results: list[Result], goal: dict,
               predictions: dict[str, dict[str, np.ndarray]] | None = None) -> list[str]:
    """The task's goal (``Task.goal``) against the best method by test sigma_NMAD, and whether
    that method beats the goal's reference method; with the runs' stored test ``predictions``
    (:func:`stored_predictions_by_run`), the bootstrap intervals of that method's figures."""
    from lensbench.bench.statistics import paired_bootstrap_photoz

    ok = [r for r in results if r.status == "ok"]
    if not ok:
        return []
    best = min(ok, key=lambda r: r.metrics["sigma_nmad"])
    m = best.metrics
    reference = goal.get("reference")
    ref = [r for r in ok if r.method == reference]
    checks = [(f"sigma_NMAD <= {goal['sigma_nmad']:g}", m["sigma_nmad"] <= goal["sigma_nmad"]),
              (f"outliers <= {goal['outlier_frac']:.0%}",
               m["outlier_frac"] <= goal["outlier_frac"]),
              (f"|mean bias| <= {goal['abs_bias_mean']:g}",
               abs(m["bias_mean"]) <= goal["abs_bias_mean"])]
    if ref:  # n/a (None) where the best is the reference itself
        checks.append((f"beats `{reference}` in sigma_NMAD ({ref[0].metrics['sigma_nmad']:.4f})",
                       None if best.method == reference
                       else m["sigma_nmad"] < ref[0].metrics["sigma_nmad"]))
    verdict = {True: "yes", False: "NO", None: "n/a, it is the reference"}
    lines = [f"Goal ({goal['issue']}), best method by test sigma_NMAD: `{best.run_id}`: "
             + "; ".join(f"{text}: {verdict[passed]}" for text, passed in checks)]
    stored = (predictions or {}).get(best.run_id)
    if stored is not None:
        alone = paired_bootstrap_photoz(stored["z_phot"], None, stored["z_spec"])
        lines += ["", "95% bootstrap intervals of its figures (test galaxies resampled): "
                  + "; ".join(f"{title} {alone[key][1]:.4f} to {alone[key][2]:.4f}"
                              for title, key, _ in CHANGE_COLUMNS)]
    return lines


def leader_change_lines(results: list[Result], predictions: dict[str, dict[str, np.ndarray]]
                        ) -> list[str]:
    """Is the order more than test-set noise? Every other run minus the leader (the best
    sigma_NMAD among the runs whose test ``predictions`` are stored,
    :func:`stored_predictions_by_run`) on the same test galaxies, with paired bootstrap
    intervals (:func:`~lensbench.bench.statistics.paired_bootstrap_photoz`)."""
    from lensbench.bench.statistics import leader_change_table, paired_bootstrap_photoz

    def change(saved, lead):
        if str(saved["test_hash"]) != str(lead["test_hash"]):  # a change needs the same galaxies
            return None
        return paired_bootstrap_photoz(saved["z_phot"], lead["z_phot"], lead["z_spec"])

    ok = sorted((r for r in results if r.status == "ok"), key=lambda r: r.metrics["sigma_nmad"])
    return leader_change_table(ok, lambda r: predictions.get(r.run_id), change, CHANGE_COLUMNS,
                               "galaxies")


# ----------------------------------------------------------------------------- the kind
class Photoz(SuiteKind):
    name = "photoz"
    metric_directions = {"sigma_nmad": MINIMIZE, "outlier_frac": MINIMIZE,
                         "sigma_iqr": MINIMIZE, "outlier_frac_lsst": MINIMIZE,
                         "abs_bias_mean": MINIMIZE, "abs_bias_median": MINIMIZE,
                         "cdeloss": MINIMIZE, "pit_ks": MINIMIZE}
    # sigma_NMAD: the figure of merit of the field and of issue 8's goal; robust to the
    # catastrophic outliers, which have their own metric (--metric outlier_frac).
    tune_metric = "sigma_nmad"
    seed_note = (" (every method seed derives from it; the splits are drawn by each task's "
                 "fixed seed)")

    def splits(self, task: Task, profile: str, workdir: Path, log=print) -> PhotozData:
        data = load_task_data(task, profile, workdir)
        log(f"{task.name}: train {data.n('train')}, val {data.n('val')}, test "
            f"{data.n('test')} galaxies; rows dropped when loading: {data.meta['drops']}")
        return data

    def case(self, name: str, params: dict, task: Task, splits: PhotozData) -> RunCase:
        return RunCase(name, params, task, splits, dict(splits.hashes), splits.n("train"),
                       splits.n("test"), dict(splits.data_files))

    def task_info(self, task: Task, splits: PhotozData) -> TaskInfo:
        return task_info(task, splits)

    def training_data(self, task: Task, splits: PhotozData):
        return splits.X["train"], splits.z["train"]

    def contract_details(self, task: Task, splits: PhotozData) -> dict:
        """A photo-z model takes the catalogue's magnitudes then their errors (AB), after the
        cleaning the task's split had (datasets/photoz.py ``drop_reasons``)."""
        from lensbench.datasets.photoz import CLEANING

        # per column of X: the magnitudes, then their errors
        low, high = np.percentile(splits.X["train"], TRAINING_RANGE_PERCENTILES, axis=0)
        n = len(splits.bands)
        return {"columns": {
            "magnitudes": [f"mag_{band}" for band in splits.bands],
            "errors": [f"err_{band}" for band in splits.bands],
            "layout": "X = the magnitudes then their errors, bands in 'magnitudes' order",
            "cleaning": dict(CLEANING), "sample": task.photoz["sample"],
            # what the model has seen: bench predict flags galaxies beyond it and refuses a
            # column whose median lies beyond it (fluxes given for magnitudes)
            "magnitude_range": {band: [round(float(lo), 4), round(float(hi), 4)]
                                for band, lo, hi in zip(splits.bands, low[:n], high[:n],
                                                        strict=True)},
            # and its errors: a catalogue's 0 for "no error" moved a z from 0.60 to 0.50
            "error_range": {band: [round(float(lo), 5), round(float(hi), 5)]
                            for band, lo, hi in zip(splits.bands, low[n:], high[n:],
                                                    strict=True)}}}

    def fit_kwargs(self, accepted, splits: PhotozData) -> dict:
        if "validation" in accepted:
            return {"validation": (splits.X["val"], splits.z["val"])}
        return {}

    def evaluate(self, method, task: Task, splits: PhotozData, name: str) -> Evaluation:
        data = splits
        start = time.perf_counter()
        z_test = np.asarray(method.predict_score(data.X["test"]), dtype=np.float64)
        predict_time = time.perf_counter() - start
        z_val = np.asarray(method.predict_score(data.X["val"]), dtype=np.float64)
        for role, z in (("test", z_test), ("val", z_val)):
            if z.shape != (data.n(role),) or not np.isfinite(z).all():
                raise ValueError(f"{name}.predict_score returned shape {z.shape} with "
                                 f"{int((~np.isfinite(z)).sum())} non-finite values on {role}; "
                                 f"expected {data.n(role)} finite redshifts")
        variance = None
        if hasattr(method, "predict_variance"):
            variance = np.asarray(method.predict_variance(data.X["test"]), dtype=np.float64)
        nb = len(data.bands)
        edges = task.photoz["z_edges"]
        metrics = score_photoz(z_test, data.z["test"], data.X["test"][:, :nb], data.bands,
                               edges, variance)
        metrics |= score_photoz(z_val, data.z["val"], data.X["val"][:, :nb], data.bands, edges,
                                prefix="val/")
        metrics |= {f"data/dropped/{k}": float(v) for k, v in data.meta["drops"].items()}
        metrics["data/n_kept"] = float(data.meta["n_kept"])
        predictions = {"z_phot": z_test, "variance": variance}
        if hasattr(method, "predict_pdf"):
            pdf = checked_pdf(method, data.X["test"], name, "test")
            scores, predictions["pit"] = score_pdf(pdf, z_test, data.z["test"])
            metrics |= scores
            predictions["example_rows"] = example_rows(data.z["test"])
            predictions["pdf_examples"] = pdf[predictions["example_rows"]]
            val_pdf = checked_pdf(method, data.X["val"], name, "val")
            metrics |= score_pdf(val_pdf, z_val, data.z["val"], prefix="val/")[0]
        return Evaluation(metrics, predict_time, predictions)

    def write_artifacts(self, result: Result, evaluation: Evaluation, task: Task,
                        splits: PhotozData, folder: Path) -> dict[str, Path]:
        data, z_phot = splits, evaluation.predictions["z_phot"]
        variance = evaluation.predictions["variance"]
        paths = {"predictions": folder / "predictions.npz"}
        nb = len(data.bands)
        distribution = {key: evaluation.predictions[key]
                        for key in ("pit", "example_rows", "pdf_examples")
                        if key in evaluation.predictions}
        atomic_savez(paths["predictions"], z_phot=z_phot, z_spec=data.z["test"],
                     mags=data.X["test"][:, :nb], bands=np.array(data.bands),
                     variance=(variance if variance is not None
                               else np.full(data.n("test"), np.nan)),
                     test_hash=np.array(data.hashes["test"]), **distribution)
        paths["density"] = plot_density({result.run_id: (z_phot, data.z["test"])},
                                         folder / "density.png", task.photoz["z_range"])
        if distribution:
            paths["pit"] = plot_pit({result.run_id: distribution["pit"]}, folder / "pit.png")
            paths["pdf_examples"] = plot_pdf_examples(
                {result.run_id: distribution["pdf_examples"]},
                data.z["test"][distribution["example_rows"]], folder / "pdf-examples.png",
                task.photoz["z_range"])
        return paths

    def summary_line(self, result: Result) -> str:
        if result.status == "ok":
            m = result.metrics
            return (f"{result.run_id:>24} on {result.task}: sigma_NMAD {m['sigma_nmad']:.4f}  "
                    f"outliers {m['outlier_frac']:.4f}  bias {m['bias_mean']:+.4f}  (val "
                    f"sigma_NMAD {m['val/sigma_nmad']:.4f}; fit {result.fit_time_s:.1f} s)")
        return super().summary_line(result)

    # ------------------------------------------------------------------ tuning
    def study_data(self, task: Task, profile: str, workdir: Path, seed: int) -> StudyData:
        """The train part to fit and the catalogue's own validation part to judge (the part the
        report's 'val' columns are measured on); the test part is not loaded."""
        data = load_task_data(task, profile, workdir, roles=("train", "val"))
        return StudyData(task_info(task, data), data.X["train"], data.z["train"],
                         data.X["val"], data.z["val"],
                         fit_kwargs={"validation": (data.X["val"], data.z["val"])})

    def validation_metrics(self, method, study: StudyData) -> dict[str, float]:
        z = np.asarray(method.predict_score(study.X_val), dtype=np.float64)
        metrics = photoz_metrics(z, study.y_val)
        metrics["abs_bias_mean"] = abs(metrics["bias_mean"])
        metrics["abs_bias_median"] = abs(metrics["bias_median"])
        if hasattr(method, "predict_pdf"):
            pdf = checked_pdf(method, study.X_val, type(method).__name__, "val")
            metrics |= distribution_metrics(pdf, PDF_GRID, study.y_val)[0]
        return metrics

    # ------------------------------------------------------------------ report
    def report_notes(self, suite: Suite, profile: str) -> list[str]:
        return ["- dz = (z_phot - z_spec)/(1 + z_spec); sigma_NMAD = 1.4826 median|dz - median "
                "dz|; outliers: |dz| > 0.15; sigma_IQR = IQR(dz)/1.349; LSST outliers: |dz| > "
                "max(0.06, 3 sigma_IQR). Methods are ranked by test sigma_NMAD; the 'val' columns "
                "are the validation part, the only one used to choose hyper-parameters.",
                "- Distributions (p(z) on z = 0-1.5 in steps of 0.005), with RAIL's metrics and "
                "names (LSST DESC's qp): PIT = the CDF of p(z) at z_spec, uniform when "
                "calibrated; KS, CvM, AD: its distance from uniform (AD = n int (F - u)^2 / "
                "(u (1 - u)) du, ~1 when calibrated; not RAIL's k-sample form); PIT outliers: "
                "PIT < 1e-4 or > 0.9999; CDE loss (Izbicki & Lee 2017): E[int p^2] - "
                "2 E[p(z_spec)], lower is better; point_bias = median dz. Beck et al. "
                "(2016)'s sigma(dz) is the standard deviation of dz, their 3-sigma outliers "
                "|dz - mean dz| > 3 sigma(dz).",
                ""]

    def report_section(self, suite: Suite, task: Task, results: list[Result], *, workdir: Path,
                       out_dir: Path, stem: str, profile: str) -> tuple[list[str], list[Path]]:
        """The leaderboard, the goal check, the rows dropped when loading, metrics in bins of
        z_spec and magnitude, a density plot of z_phot against z_spec and metrics against z and
        magnitude."""
        if not results:
            return [], []
        hashes = results[0].split_hashes
        md = [f"## {task.name} (v{task.version})", "", task.description, "",
              "Splits (content hashes): " + ", ".join(f"{role} `{h[:12]}`"
                                                      for role, h in hashes.items()) + ".", ""]
        ok = sorted((r for r in results if r.status == "ok"),
                    key=lambda r: r.metrics["sigma_nmad"])
        if ok:
            drops = {k.split("/")[-1]: int(v) for k, v in ok[0].metrics.items()
                     if k.startswith("data/dropped/")}
            md += [f"Rows dropped when loading: {drops or 'none'}; galaxies kept: "
                   f"{int(ok[0].metrics.get('data/n_kept', 0))}.", ""]
        predictions = stored_predictions_by_run(ok, workdir)
        md += photoz_table(results)
        md += leader_change_lines(results, predictions)
        md += ["", *(goal_lines(results, task.goal, predictions) if task.goal else []), ""]
        if not ok:
            return md, []
        md += ["sigma_NMAD in bins of spectroscopic z:", "",
               *binned_table(ok, "binned/z_spec"), "",
               "Outlier fraction in bins of spectroscopic z:", "",
               *binned_table(ok, "binned/z_spec", "outlier_frac"), "",
               f"sigma_NMAD in bins of {MAG_BAND} magnitude:", "",
               *binned_table(ok, f"binned/mag_{MAG_BAND}"), ""]
        figures = []
        panels = {r.run_id: (predictions[r.run_id]["z_phot"], predictions[r.run_id]["z_spec"])
                  for r in ok if r.run_id in predictions}
        prefix = f"{stem}-{task.name}"
        if panels:
            figure = plot_density(panels, out_dir / f"{prefix}-density.png",
                                  task.photoz["z_range"])
            md += [f"![z_phot against z_spec]({figure.name})", ""]
            figures.append(figure)
        figures += self._distribution_section(md, ok, predictions, out_dir, prefix, task)
        for binned, xlabel, tag in (("binned/z_spec", "z_spec", "vs-z"),
                                    (f"binned/mag_{MAG_BAND}", f"{MAG_BAND} magnitude",
                                     "vs-mag")):
            figure = plot_metrics_vs(ok, binned, out_dir / f"{prefix}-metrics-{tag}.png",
                                     xlabel)
            md += [f"![metrics against {xlabel}]({figure.name})", ""]
            figures.append(figure)
        return md, figures

    @staticmethod
    def _distribution_section(md: list[str], ok: list[Result],
                              predictions: dict[str, dict[str, np.ndarray]], out_dir: Path,
                              prefix: str, task: Task) -> list[Path]:
        """Appends the distribution metrics table to ``md``; returns the PIT (histogram and
        Q-Q) and example p(z) figures of the runs whose stored ``predictions`` kept them."""
        table = distribution_table(ok)
        if not table:
            return []
        md += ["Distributions p(z) (RAIL's metrics; best CDE loss first):", "", *table, "",
               "For comparison, Beck et al. (2016) on SDSS DR12, a different sample (1,976,978 "
               "galaxies of SDSS and other surveys, cross-validated): sigma(dz) 0.0205, 3-sigma "
               "outliers 4.11%.", ""]
        pits, examples, z_examples = {}, {}, None
        for r in sorted(ok, key=lambda r: r.metrics.get("cdeloss", np.inf)):
            saved = predictions.get(r.run_id)
            if saved is None or "pit" not in saved:
                continue
            pits[r.run_id] = saved["pit"]
            examples[r.run_id] = saved["pdf_examples"]
            z_examples = saved["z_spec"][saved["example_rows"]]
        if not pits:
            return []
        figures = [plot_pit(pits, out_dir / f"{prefix}-pit.png"),
                   plot_pdf_examples(examples, z_examples, out_dir / f"{prefix}-pdf-examples.png",
                                     task.photoz["z_range"])]
        md += [f"![PIT histograms and Q-Q plots]({figures[0].name})", "",
               "![the redshift distributions of test galaxies at quantiles of z_spec]"
               f"({figures[1].name})", ""]
        return figures
