"""The ``photoz`` suite: photometric-redshift regression on real SDSS catalogues.

The runner (:func:`run_photoz_suite`) and the report (:func:`write_photoz_report`) dispatch here
for tasks of kind "photoz". Each method is fitted on the train part of a real split (with the
validation part offered to methods whose ``fit`` takes ``validation=``), scored on the test part
with :mod:`lensbench.bench.photoz_metrics`, and recorded as one Result per (method, task) in the
same JSONL store and tracker as lens finding. Validation metrics are recorded too (``val/...``),
so tuning can be judged without looking at the test part.

Method inputs: ``X`` (n, 10) = the u,g,r,i,z magnitudes then their errors (``info.bands``).
"""

from __future__ import annotations

import inspect
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lensbench.baselines.contract import TaskInfo
from lensbench.bench.photoz_metrics import binned_photoz_metrics, photoz_metrics
from lensbench.baselines.registry import resolve_method
from lensbench.bench.results import Result, canonical_run_id
from lensbench.bench.tasks import Suite, Task

MAG_BAND = "r"  # binned metrics by this band's magnitude
MAG_EDGES = (14.0, 17.0, 18.0, 19.0, 20.0, 21.0, 22.0, 25.0)
# Goal of issue 8, set on the BOSS test split only (the MGS task has none).
GOAL = {"sigma_nmad": 0.017, "outlier_frac": 0.01, "abs_bias_mean": 0.002}
GOAL_TASK = "photoz-boss"


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


def load_task_data(task: Task, profile: str, workdir: Path) -> PhotozData:
    """The task's real split (made once under ``workdir/splits``; train/val/test drawn by the
    task's fixed ``train_seed``), each part cut to the profile's size by a seeded subsample."""
    from lensbench.datasets.photoz import _arrays_hash, ensure_photoz_split

    spec = task.photoz
    split = ensure_photoz_split(spec["sample"], workdir, task.train_seed,
                                tuple(spec.get("fractions", (0.7, 0.1, 0.2))))
    n_train, n_test = task.size(profile)
    caps = {"train": n_train, "val": max(1, n_test // 2), "test": n_test}
    rng = np.random.default_rng(task.test_seed)
    X, z, hashes = {}, {}, {}
    for role in ("train", "val", "test"):
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


# ----------------------------------------------------------------------------- running
@dataclass
class PhotozOutcome:
    result: Result
    z_phot: np.ndarray | None
    variance: np.ndarray | None
    history: dict


def run_photoz_method(name: str, params: dict, task: Task, data: PhotozData, *, suite: str,
                      profile: str, seed: int) -> PhotozOutcome:
    """Fit one method on the train part and score it on val and test; an exception becomes a
    failed Result."""
    from lensbench.bench.runner import _collect_into, build_method, now, start_record

    base = start_record(name, params, task, suite=suite, profile=profile, seed=seed,
                        split_hashes=dict(data.hashes), n_train=data.n("train"),
                        n_test=data.n("test"), data_files=dict(data.data_files))
    method_seed = base["seed"]
    history: dict = {}
    try:
        method = build_method(name, params, method_seed)
        info = task_info(task, data)
        reason = method.decline(info)
        if reason:
            return PhotozOutcome(Result(**base, status="declined", error=reason,
                                        finished_at=now()), None, None, {})
        accepted = inspect.signature(method.fit).parameters
        kwargs = {}
        if "validation" in accepted:
            kwargs["validation"] = (data.X["val"], data.z["val"])
        if "epoch_callback" in accepted:
            kwargs["epoch_callback"] = _collect_into(history)
        start = time.perf_counter()
        method.fit(data.X["train"], data.z["train"], info=info, **kwargs)
        fit_time = time.perf_counter() - start
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
        if not history:
            history.update(getattr(method, "history_", {}) or {})
        result = Result(**base, status="ok", metrics=metrics, fit_time_s=fit_time,
                        predict_time_s=predict_time, finished_at=now())
        return PhotozOutcome(result, z_test, variance, history)
    except Exception:  # a failing method is recorded, the suite goes on
        result = Result(**base, status="failed", error=traceback.format_exc(), finished_at=now())
        return PhotozOutcome(result, None, None, history)


def run_photoz_suite(suite: Suite, *, profile: str, seed: int, workdir: Path,
                     methods: list[str] | None = None, params: dict[str, dict] | None = None,
                     tracker=None, resume: bool = False, log=print) -> list[Result]:
    """``run_suite`` for suites of photo-z tasks (same store, tracker, resume and seeds)."""
    from lensbench.bench.runner import RESULTS_FILE, _resume_key, completed_runs, record_result

    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / RESULTS_FILE
    names = list(methods or suite.methods_for(profile))
    for name in names:
        resolve_method(name)
    params = params or {}
    done = completed_runs(store, suite.name, profile) if resume else set()
    results = []
    for task in suite.tasks:
        data = load_task_data(task, profile, workdir)
        log(f"{task.name}: train {data.n('train')}, val {data.n('val')}, test {data.n('test')} "
            f"galaxies; rows dropped when loading: {data.meta['drops']}")
        for name in names:
            method_params = dict(params.get(name, {}))
            probe = Result(run_id=canonical_run_id(name, method_params), method=name,
                           task=task.name, suite=suite.name, profile=profile,
                           params=method_params, split_hashes=dict(data.hashes), seed=seed,
                           status="ok")
            if _resume_key(probe) in done:
                log(f"skip {probe.run_id} on {task.name}: already done (--resume)")
                continue
            outcome = run_photoz_method(name, method_params, task, data, suite=suite.name,
                                        profile=profile, seed=seed)
            artifacts = {}
            if outcome.z_phot is not None:
                artifacts = write_photoz_artifacts(outcome, data, task, workdir)
            record_result(outcome.result, store=store, workdir=workdir, artifacts=artifacts,
                          history=outcome.history, tracker=tracker, log=log,
                          line=summary_line(outcome.result))
            results.append(outcome.result)
    return results


def summary_line(result: Result) -> str:
    if result.status == "ok":
        m = result.metrics
        return (f"{result.run_id:>24} on {result.task}: sigma_NMAD {m['sigma_nmad']:.4f}  "
                f"outliers {m['outlier_frac']:.4f}  bias {m['bias_mean']:+.4f}  (val sigma_NMAD "
                f"{m['val/sigma_nmad']:.4f}; fit {result.fit_time_s:.1f} s)")
    return f"{result.run_id:>24} on {result.task}: {result.status.upper()} {result.error_line}"


def write_photoz_artifacts(outcome: PhotozOutcome, data: PhotozData, task: Task, workdir: Path
                           ) -> dict[str, Path]:
    from lensbench.bench.plots import plot_curves
    from lensbench.bench.runner import _safe

    result = outcome.result
    folder = workdir / "runs" / result.suite / task.name / _safe(result.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"predictions": folder / "predictions.npz"}
    nb = len(data.bands)
    np.savez_compressed(paths["predictions"], z_phot=outcome.z_phot, z_spec=data.z["test"],
                        mags=data.X["test"][:, :nb], bands=np.array(data.bands),
                        variance=(outcome.variance if outcome.variance is not None
                                  else np.full(data.n("test"), np.nan)),
                        test_hash=np.array(data.hashes["test"]))
    paths["density"] = plot_density({result.run_id: (outcome.z_phot, data.z["test"])},
                                     folder / "density.png", task.photoz["z_range"])
    if outcome.history:
        paths["curves"] = plot_curves(outcome.history, folder / "curves.png")
    return paths


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


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.tight_layout()
        fig.savefig(path, format="png")
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


def goal_lines(results: list[Result], reference: str = "knn-photoz") -> list[str]:
    ok = [r for r in results if r.status == "ok"]
    if not ok:
        return []
    best = min(ok, key=lambda r: r.metrics["sigma_nmad"])
    m = best.metrics
    ref = [r for r in ok if r.method == reference]
    checks = [("sigma_NMAD <= 0.017", m["sigma_nmad"] <= GOAL["sigma_nmad"]),
              ("outliers <= 1%", m["outlier_frac"] <= GOAL["outlier_frac"]),
              ("|mean bias| <= 0.002", abs(m["bias_mean"]) <= GOAL["abs_bias_mean"])]
    if ref:
        checks.append((f"beats `{reference}` in sigma_NMAD ({ref[0].metrics['sigma_nmad']:.4f})",
                       m["sigma_nmad"] < ref[0].metrics["sigma_nmad"]))
    return [f"Goal (issue 8), best method by test sigma_NMAD: `{best.run_id}`: "
            + "; ".join(f"{text}: {'yes' if passed else 'NO'}" for text, passed in checks)]


def write_photoz_report(suite: Suite, results: list[Result], *, store: Path, workdir: Path,
                        out_dir: Path, profile: str, command: str | None) -> list[Path]:
    """reports/<suite>.md and .html: per task the leaderboard, the goal check, the rows dropped
    when loading, metrics in bins of z_spec and magnitude, a density plot of z_phot against z_spec
    and metrics against z and magnitude."""

    from lensbench.bench.report import provenance_lines, write_markdown_and_html

    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# lensbench leaderboard: `{suite.name}` suite ({profile} profile)", "",
          *provenance_lines(suite.name, profile, results, store, command,
                            " (every method seed derives from it; the splits are drawn by "
                            "each task's fixed seed)"),
          "- dz = (z_phot - z_spec)/(1 + z_spec); sigma_NMAD = 1.4826 median|dz - median dz|; "
          "outliers: |dz| > 0.15; sigma_IQR = IQR(dz)/1.349; LSST outliers: |dz| > max(0.06, "
          "3 sigma_IQR). Methods are ranked by test sigma_NMAD; the 'val' columns are the "
          "validation part, the only one used to choose hyper-parameters.", ""]
    figures = []
    for task in suite.tasks:
        task_results = [r for r in results if r.task == task.name]
        if not task_results:
            continue
        hashes = task_results[0].split_hashes
        md += [f"## {task.name} (v{task.version})", "", task.description, "",
               "Splits (content hashes): " + ", ".join(f"{role} `{h[:12]}`"
                                                       for role, h in hashes.items()) + ".", ""]
        ok = sorted((r for r in task_results if r.status == "ok"),
                    key=lambda r: r.metrics["sigma_nmad"])
        if ok:
            drops = {k.split("/")[-1]: int(v) for k, v in ok[0].metrics.items()
                     if k.startswith("data/dropped/")}
            md += [f"Rows dropped when loading: {drops or 'none'}; galaxies kept: "
                   f"{int(ok[0].metrics.get('data/n_kept', 0))}.", ""]
        md += photoz_table(task_results)
        md += ["", *(goal_lines(task_results) if task.name == GOAL_TASK else []), ""]
        if not ok:
            continue
        md += ["sigma_NMAD in bins of spectroscopic z:", "",
               *binned_table(ok, "binned/z_spec"), "",
               "Outlier fraction in bins of spectroscopic z:", "",
               *binned_table(ok, "binned/z_spec", "outlier_frac"), "",
               f"sigma_NMAD in bins of {MAG_BAND} magnitude:", "",
               *binned_table(ok, f"binned/mag_{MAG_BAND}"), ""]
        panels = {}
        for r in ok:
            path = workdir / r.artifacts.get("predictions", "missing")
            if path.is_file():
                with np.load(path) as data:
                    panels[r.run_id] = (data["z_phot"], data["z_spec"])
        stem = f"{suite.name}-{task.name}"
        if panels:
            figure = plot_density(panels, out_dir / f"{stem}-density.png",
                                  task.photoz["z_range"])
            md += [f"![z_phot against z_spec]({figure.name})", ""]
            figures.append(figure)
        for prefix, xlabel, tag in (("binned/z_spec", "z_spec", "vs-z"),
                                    (f"binned/mag_{MAG_BAND}", f"{MAG_BAND} magnitude",
                                     "vs-mag")):
            figure = plot_metrics_vs(ok, prefix, out_dir / f"{stem}-metrics-{tag}.png", xlabel)
            md += [f"![metrics against {xlabel}]({figure.name})", ""]
            figures.append(figure)
    return [*write_markdown_and_html(md, out_dir, suite.name), *figures]
