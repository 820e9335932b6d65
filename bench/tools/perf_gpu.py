"""`bench perf gpu`: the compare profile's committee against DeepLens with its published schedule,
on one device, timed, written to reports/metcalf-compare-gpu.md.

The splits are the compare profile's metcalf-ground splits, made by the suite kind's own code
(``bench/splits.py``), and their content hashes are checked against the ones stated in the
committed CPU report (reports/metcalf-compare.md). Both methods are scored like a suite run (the
lens-finding kind's ``evaluate``: the Metcalf et al. 2019 metrics, rotation and spread columns)
with the compare profile's 95% paired bootstrap intervals. Nothing is tracked (no MLflow). The two
train one after the other, or at once, each in its own process, where the short runs of the
speed table measure that faster (TOGETHER_GAIN).

Imports: this path needs torch, numpy, scipy, scikit-learn, h5py, tqdm and astropy (the
simulator's cosmology) and none of pooch, mlflow, optuna, xgboost, photutils, astroscrappy, qp or
Dask; heavy imports are inside the functions so that ``bench --help`` stays fast.
"""

from __future__ import annotations

import copy
import inspect
import os
import platform
import re
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lensbench.bench.tasks import COMPARE_PARAMS, METCALF_GROUND, Suite
from lensbench.datasets.files import atomic_write_text

COMPARE_REPORT = Path(__file__).resolve().parents[2] / "reports" / "metcalf-compare.md"
GPU_REPORT = COMPARE_REPORT.with_name("metcalf-compare-gpu.md")
# DeepLens first: its published schedule is the open question, and the committee it is compared
# with ran on the same splits in the CPU report (hashes checked), so a time limit that cuts the
# committee here still leaves the answer.
METHODS = ("deeplens", "committee")
# The smoke profile checks the rotation columns on this many test cutouts (8 passes each).
SMOKE_ROTATION_SUBSET = 64
# Precision and memory layout of the CNNs (issue 27, point 2), each against the first (float32,
# contiguous: the default on a GPU) on the same splits, seed and short schedule.
SPEED_SETTINGS = (("float32", "contiguous"), ("float32", "channels_last"),
                  ("bfloat16", "contiguous"), ("bfloat16", "channels_last"))
# Epochs of those short runs: long enough for the metrics to say whether a flag costs accuracy,
# short enough for the 4 x 2 runs to take about a minute on a GPU.
SPEED_EPOCHS = {"compare": 3, "smoke": 1}
SCAN_BATCH = 512  # bench scan's default batch
# Both at once (issue 27, point 1: "if that is faster"): DeepLens and the committee trained at the
# same time, each in its own process on the one device. Processes, not threads: torch's seed,
# thread count and determinism switch are process-wide, and each run must draw what it would
# draw alone. `--together auto` decides from the speed table's short float32 runs, timed one
# after the other and then at once: at once where the pair's fits take under this fraction of
# their time one after the other.
TOGETHER_GAIN = 0.9
TOGETHER_CHOICES = ("auto", "yes", "no")
# `bench perf sim`'s systems (lensbench, lenstronomy) for the report's simulator section.
SIM_SYSTEMS = {"compare": (4096, 64), "smoke": (64, 4)}


def published_deeplens_schedule() -> dict:
    """DeepLens's own schedule (Lanusse et al. 2018: 120 epochs, learning rate / 10 every 40):
    the defaults of DeepLensFinder, which the compare profile cut to fit a CPU."""
    from lensbench.deep.methods import DeepLensFinder

    defaults = inspect.signature(DeepLensFinder).parameters
    return {key: defaults[key].default for key in ("max_epochs", "step_every")}


def profile_params(profile: str) -> dict[str, dict]:
    """method -> params for ``profile``: "compare" is the compare profile's committee and DeepLens
    with its published schedule on the same central 64x64 pixels; "smoke" is one tiny epoch each,
    to check the command end to end on a CPU."""
    if profile == "compare":
        return {"committee": dict(COMPARE_PARAMS["committee"]),
                "deeplens": {**COMPARE_PARAMS["deeplens"], **published_deeplens_schedule()}}
    if profile == "smoke":
        # width 16: the narrowest a CPU trains in channels-last (deep/train.py)
        return {"committee": {"members": 1, "max_epochs": 1, "width": 16, "tta": "none"},
                "deeplens": {"max_epochs": 1, "step_every": 1, "crop": 32}}
    raise ValueError(f"bench perf gpu: --profile must be 'compare' or 'smoke', got {profile!r}")


def speed_params(profile: str, epochs: int) -> dict[str, dict]:
    """method -> params of the short runs that measure the speed flags: the profile's settings
    with one committee member and ``epochs`` epochs (no learning-rate step for DeepLens)."""
    params = profile_params(profile)
    return {"committee": {**params["committee"], "members": 1, "max_epochs": epochs},
            "deeplens": {**params["deeplens"], "max_epochs": epochs, "step_every": epochs}}


def stated_split_hashes(report: Path = COMPARE_REPORT, task: str = METCALF_GROUND.name
                        ) -> dict[str, str] | None:
    """{"train": ..., "test": ...} content-hash prefixes the report states for ``task``, or None
    when the report or the line is missing."""
    if not report.is_file():
        return None
    text = report.read_text(encoding="utf-8")
    section = re.search(rf"^## {re.escape(task)}\b.*?(?=^## |\Z)", text, re.M | re.S)
    found = section and re.search(r"Splits: train `([0-9a-f]+)`, test `([0-9a-f]+)`",
                                  section.group(0))
    return {"train": found.group(1), "test": found.group(2)} if found else None


def hash_lines(actual: dict[str, str], stated: dict[str, str] | None, profile: str) -> list[str]:
    """What the split hashes say, plainly."""
    shown = ", ".join(f"{role} `{actual[role][:12]}`" for role in ("train", "test"))
    if profile != "compare":
        return [f"Splits: {shown} (the {profile} profile's; the CPU report's are the compare "
                "profile's, so they are not compared)."]
    if stated is None:
        return [f"Splits: {shown}; {COMPARE_REPORT.name} states no hashes to compare with."]
    differ = [role for role in ("train", "test") if not actual[role].startswith(stated[role])]
    if not differ:
        return [f"Splits: {shown}: the same bytes as {COMPARE_REPORT.name}'s."]
    return [f"Splits: {shown}: DIFFERENT from {COMPARE_REPORT.name}'s "
            + ", ".join(f"{role} `{stated[role]}`" for role in differ) + ". The simulator is "
            "seeded and thread-independent, but its bytes may differ across numpy and torch "
            "builds (random streams, vectorised float32 kernels, FFT convolution), so the "
            "numbers below are on other cutouts of the same distribution, not the same test "
            "set."]


def cpu_fit_seconds(report: Path = COMPARE_REPORT, task: str = METCALF_GROUND.name
                    ) -> dict[str, float]:
    """run id -> fit time (s) in the CPU report's table for ``task`` (its last column)."""
    if not report.is_file():
        return {}
    text = report.read_text(encoding="utf-8")
    section = re.search(rf"^## {re.escape(task)}\b.*?(?=^## |\Z)", text, re.M | re.S)
    rows = re.findall(r"^\| `([^`]+)` \|.*\| ([0-9.]+) \|$", section.group(0) if section else "",
                      re.M)
    return {run: float(seconds) for run, seconds in rows}


def cpu_lines(runs: list[MethodRun]) -> list[str]:
    """The CPU report's training time per epoch of the same methods beside this device's.
    Per member-epoch, since DeepLens ran 12 epochs there: every epoch of these methods runs
    (no early stopping), so the CPU run's epochs are members x max_epochs."""
    from lensbench.baselines.registry import resolve_method

    cpu = cpu_fit_seconds()
    lines = []
    for name in {run.name for run in runs}:
        here = next(run for run in runs if run.name == name)
        cpu_params = COMPARE_PARAMS.get(name, {})
        cpu_id = run_id(name, cpu_params)
        defaults = resolve_method(name)().get_params()
        settings = {**defaults, **cpu_params}
        if cpu_id not in cpu or settings.get("patience", None) is not None:
            continue
        epochs = int(settings["members"]) * int(settings["max_epochs"])
        lines.append(f"- `{name}`: {cpu[cpu_id] / epochs:.1f} s per member-epoch on the CPU "
                     f"(`{cpu_id}`, {cpu[cpu_id]:.0f} s for {epochs}), "
                     f"{here.fit_s / max(here.epochs, 1):.2f} s here")
    return (["", f"Training time per member-epoch beside {COMPARE_REPORT.name} (2 CPU cores; "
             "validation passes included):", *sorted(lines)] if lines else [])


@dataclass
class MethodRun:
    name: str
    params: dict
    metrics: dict[str, float]
    fit_s: float
    predict_s: float
    epochs: int  # training epochs run, summed over members
    n_fit: int  # training cutouts a member sees per epoch (validation held out)
    n_test: int
    scores: object = field(repr=False, default=None)
    method: object = field(repr=False, default=None)  # the fitted method
    checkpoint: Path | None = None  # the fitted method saved (a run in another process)
    gflop_per_cutout: float | None = None  # training_gflop_per_cutout
    fit_started: float = 0.0  # time.time() when the fit began: spans across processes

    @property
    def fit_ended(self) -> float:
        return self.fit_started + self.fit_s

    @property
    def train_rate(self) -> float:
        """Training cutouts per second: cutouts x epochs over the whole fit (validation passes
        and calibration included)."""
        return self.n_fit * self.epochs / self.fit_s

    @property
    def predict_rate(self) -> float:
        """Test cutouts scored per second (TTA and members included, reading the split too)."""
        return self.n_test / self.predict_s

    @property
    def train_tflops(self) -> float | None:
        """Arithmetic rate of the fit: training passes only, over the whole fit time."""
        if self.gflop_per_cutout is None:
            return None
        return self.train_rate * self.gflop_per_cutout / 1e3


def training_gflop_per_cutout(method, X) -> float | None:
    """GFLOP of one training cutout through the fitted method's first network, forward and
    backward (torch's FLOP counter: convolutions and matrix products), at the input size the
    network sees (a crop, say: read off a forward pass on ``X[:1]``); None for a method with no
    torch network. Counted on a CPU copy, so the fitted network is left as it was."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    nets = getattr(method, "nets_", None)
    if not nets:
        return None
    shapes = []
    hook = nets[0].register_forward_pre_hook(lambda _, args: shapes.append(args[0].shape))
    try:
        method.predict_score(X[:1])
    finally:
        hook.remove()
    net = copy.deepcopy(nets[0]).to("cpu").train()
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros((1, *shapes[0][1:]))).float().sum().backward()
    return counter.get_total_flops() / 1e9


def machine_lines(device) -> list[str]:
    import numpy
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
        # "float32" on a GPU: cuDNN convolutions run in TF32 unless this is off
        machine = (f"{name} ({memory:.0f} GiB; cuDNN TF32 {torch.backends.cudnn.allow_tf32}, "
                   f"float32 matmul precision {torch.get_float32_matmul_precision()})")
    else:
        machine = f"CPU only ({platform.processor() or platform.machine()})"
    return [f"- machine: {machine}; {os.cpu_count()} CPUs, torch threads "
            f"{torch.get_num_threads()}; device `{device}`",
            f"- versions: python {platform.python_version()}, torch {torch.__version__}, numpy "
            f"{numpy.__version__}, CUDA {torch.version.cuda or 'none'}, cuDNN "
            f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'none'}"]


def ground_kind(rotation_subset: int | None = None):
    """The lens-finding kind of METCALF_GROUND, scoring the rotation columns on
    ``rotation_subset`` test cutouts (None: the kind's own number; 0: none)."""
    from lensbench.bench.kinds import get_kind

    kind = copy.copy(get_kind(METCALF_GROUND.kind))
    if rotation_subset is not None:
        kind.rotation_subset = rotation_subset
    return kind


def run_method(name: str, params: dict, kind, task, splits, seed: int, device: str) -> MethodRun:
    from lensbench.bench.runner import build_method, derive_seed

    method = build_method(name, {**params, "device": device},
                          derive_seed(seed, name, task.name))
    X, y = kind.training_data(task, splits)
    started, start = time.time(), time.perf_counter()
    method.fit(X, y, info=kind.task_info(task, splits))
    fit_s = time.perf_counter() - start
    evaluation = kind.evaluate(method, task, splits, name)
    epochs = len(method.history_.get("train_loss", []))
    n_fit = round(len(X) * (1 - float(method.validation_fraction)))
    return MethodRun(name, params, evaluation.metrics, fit_s, evaluation.predict_time_s, epochs,
                     n_fit, splits.test.n, evaluation.predictions["scores"], method,
                     fit_started=started, gflop_per_cutout=training_gflop_per_cutout(method, X))


def _run_in_own_process(name: str, params: dict, rotation_subset: int,
                        split_paths: tuple[Path, Path], seed: int, device: str, checkpoint: Path,
                        threads: int) -> MethodRun:
    """run_method in a child process of runs_at_once: the run, with its fitted method saved as
    ``checkpoint`` instead of sent back."""
    import torch
    from lensbench.bench.suites.lens_finding import LensFindingSplits
    from lensbench.datasets.storage import load_split
    from lensbench.deep.checkpoint import save_checkpoint

    torch.set_num_threads(threads)
    if torch.device(device).type == "cuda":  # made before the fit is timed, as the parent's was
        torch.zeros(1, device=device)
        torch.cuda.synchronize(device)
    kind = ground_kind(rotation_subset)
    # the parent verified every shard's sha256 already
    splits = LensFindingSplits(*(load_split(path, verify=False) for path in split_paths))
    run = run_method(name, params, kind, METCALF_GROUND, splits, seed, device)
    run.checkpoint = save_checkpoint(run.method, checkpoint)
    run.method = None
    return run


def runs_at_once(jobs: dict[str, dict], kind, splits, seed: int, device: str, folder: Path):
    """Train and score each method of ``jobs`` (name -> params) at the same time, each in its
    own process on ``device`` with its share of the CPU threads; yields each MethodRun as it
    ends, its fitted method saved as a checkpoint in ``folder``. The processes are spawned, and
    spawning imports the main module again: a script that calls this (or gpu_compare) keeps its
    own work under ``if __name__ == "__main__":``, as `bench` does."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // len(jobs))
    # spawn, not fork: a forked child cannot use the CUDA context its parent made
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_run_in_own_process, name, params, kind.rotation_subset,
                               (splits.train.path, splits.test.path), seed, device,
                               Path(folder) / f"{name}-{run_id(name, params)}.pt", threads)
                   for name, params in jobs.items()]
        for future in as_completed(futures):
            yield future.result()


@dataclass
class TogetherProbe:
    """The speed table's short float32 runs of both CNNs, one after the other and at once."""

    one_after_other: list[MethodRun]
    at_once: list[MethodRun] = field(default_factory=list)
    error: str = ""  # why the runs at once failed, if they did

    @property
    def sequential_s(self) -> float:
        return sum(run.fit_s for run in self.one_after_other)

    @property
    def at_once_s(self) -> float:
        """From the first fit's start to the last one's end."""
        return (max(run.fit_ended for run in self.at_once)
                - min(run.fit_started for run in self.at_once))

    @property
    def faster(self) -> bool:
        return bool(self.at_once) and self.at_once_s < TOGETHER_GAIN * self.sequential_s

    def score_change(self) -> float:
        """The largest |score change| of a test cutout between a run at once and its run alone
        (threads differ: each process had its share of them)."""
        import numpy as np

        alone = {run.name: run.scores for run in self.one_after_other}
        return max(float(np.max(np.abs(np.asarray(run.scores) - alone[run.name])))
                   for run in self.at_once)


def trains_at_once(together: str, probe: TogetherProbe | None, n_methods: int) -> bool:
    """Whether the methods train at once: two of them, and "yes", or "auto" with a probe that
    measured it faster."""
    return n_methods == 2 and (together == "yes" or (
        together == "auto" and probe is not None and probe.faster))


def together_lines(probe: TogetherProbe | None, at_once: bool, together: str,
                   device) -> list[str]:
    """The report's "Both at once" section: the probe's timing and the choice it led to."""
    trained = ("**both at once**, each in its own process, so their fit times and rates are "
               "each while sharing the device with the other" if at_once
               else "**one after the other**")
    lines = ["", "## Both at once", ""]
    if probe is None:
        lines.append("Not measured: that needs both CNNs, the speed runs (`--speed-epochs` "
                     "above 0) and `--together auto` or `yes`.")
    elif probe.error:
        lines.append(f"The short runs at once failed: {probe.error}")
    else:
        epochs = ", ".join(f"{run.name} {run.epochs}" for run in probe.one_after_other)
        lines.append(
            f"The speed table's float32 / contiguous short runs (epochs: {epochs}) took "
            f"{probe.sequential_s:.1f} s of fitting one after the other and "
            f"{probe.at_once_s:.1f} s both at once, each in its own process on `{device}` "
            f"(from the first fit's start to the last one's end): "
            f"{probe.at_once_s / probe.sequential_s:.2f}x the time. Their test scores differ "
            f"from the runs alone by at most {probe.score_change():.2g}.")
    rule = (f"at once where the short runs take under {TOGETHER_GAIN:.0%} of the time one "
            "after the other" if together == "auto" else "as the command line chose")
    lines += ["", f"The methods above were trained {trained}. `--together {together}`: {rule}."]
    return lines


def scan_line(run: MethodRun, ckpt: Path, test_split: Path, device) -> str:
    """`bench scan` of the test split on ``device`` with ``run``'s fitted finder, saved as the
    checkpoint ``ckpt`` (read back, as a user's scan does): one line of cutouts/s."""
    from lensbench.bench.tools.scan import timed_scan_line

    line = timed_scan_line(ckpt, test_split, ckpt.with_name(f"{ckpt.stem}-{device}.csv"), 1,
                           SCAN_BATCH, str(device))
    return (f"- `bench scan` of the {run.n_test:,} test cutouts with "
            f"`{run_id(run.name, run.params)}` (batch {SCAN_BATCH}): {line.strip()}")


def simulator_lines(profile: str, device, seed: int) -> list[str]:
    """`bench perf sim` on ``device`` and, for a GPU, on this machine's CPU too: band-images/s
    of the simulator against lenstronomy's (when installed) in the same process."""
    from lensbench.bench.tools.perf import simulation_throughput

    ours, theirs = SIM_SYSTEMS[profile]
    lines = ["", "## Simulator", "",
             f"`bench perf sim --n {ours} --device DEVICE`: the same systems rendered by "
             f"lensbench and by lenstronomy ({theirs} systems, numpy on one CPU core) in "
             "alternating rounds."]
    for where in dict.fromkeys([str(device), "cpu"]):
        try:
            result = simulation_throughput(ours, theirs, seed=seed, device=where)
        except ImportError as error:  # the splits may be in the workdir already: go on
            return [*lines, "", f"Not measured: the simulator needs {error.name or error} "
                    "(astropy's cosmology); bring it as wheels (scripts/gpu-run.sh)."]
        lines += ["", f"On `{where}`:", "", "```", *result.lines(), "```"]
    return lines


def speed_lines(runs: list[MethodRun]) -> list[str]:
    """The speed-flag table: each setting beside the float32 / contiguous run of its method."""
    lines = ["", "## Precision and memory layout", "",
             "Each CNN trained briefly (one committee member; the epochs column) with each "
             "setting, from the same seed on the same splits; speed-up against float32 / "
             "contiguous of the same method. A flag is worth turning on where it is faster and "
             "its AUROC and TPR10 stay within the spread a short schedule has.", "",
             "| method | precision | memory layout | epochs | fit (s) | train cutouts/s | "
             "speed-up | inference cutouts/s | speed-up | AUROC | TPR10 | train TFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {}
    for run in runs:
        precision, layout = run.params["precision"], run.params["memory_format"]
        first = base.setdefault(run.name, run)
        lines.append(f"| {run.name} | {precision} | {layout} | {run.epochs} | {run.fit_s:.1f} | "
                     f"{run.train_rate:,.0f} | {run.train_rate / first.train_rate:.2f}x | "
                     f"{run.predict_rate:,.0f} | {run.predict_rate / first.predict_rate:.2f}x | "
                     f"{run.metrics['auroc']:.4f} | {run.metrics['tpr10']:.3f} | "
                     + (f"{run.train_tflops:.3g} |" if run.train_tflops is not None else "– |"))
    return lines


def run_id(name: str, params: dict) -> str:
    from lensbench.bench.results import canonical_run_id

    return canonical_run_id(name, params)


def report_lines(runs: list[MethodRun], labels, hashes: list[str], header: list[str],
                 beside_cpu: bool = True) -> list[str]:
    from lensbench.bench.statistics import change_text, paired_bootstrap
    from lensbench.bench.suites.lens_finding import COLUMNS

    lines = [*header, "", f"## {METCALF_GROUND.name} (v{METCALF_GROUND.version})", "",
             *hashes, "",
             "| method | " + " | ".join(title for title, _ in COLUMNS)
             + " | epochs | fit (s) | train cutouts/s | inference cutouts/s |",
             "|---|" + "---|" * (len(COLUMNS) + 4)]
    for run in runs:
        cells = [f"{run.metrics[key]:.3f}" if key in run.metrics else "–" for _, key in COLUMNS]
        lines.append(f"| `{run_id(run.name, run.params)}` | " + " | ".join(cells)
                     + f" | {run.epochs} | {run.fit_s:.1f} | {run.train_rate:,.0f} | "
                     f"{run.predict_rate:,.0f} |")
    lines += ["", "Train cutouts/s: training cutouts (validation held out) x epochs over the "
              "whole fit, validation passes and calibration included. Inference cutouts/s: test "
              "cutouts over the scoring time, test-time augmentation and members included "
              "(the committee scores each cutout 8 x members times), reading the split too."]
    counted = [run for run in runs if run.gflop_per_cutout is not None]
    if counted:
        lines += ["", "Arithmetic of training (torch's FLOP counter: one cutout through one "
                  "network, forward and backward; the rate counts training passes only, over "
                  "the whole fit): " + "; ".join(
                      f"`{run_id(run.name, run.params)}` {run.gflop_per_cutout:.3g} GFLOP per "
                      f"cutout, {run.train_tflops:.3g} TFLOP/s" for run in counted) + "."]
    if beside_cpu:
        lines += cpu_lines(runs)
    by_name = {run.name: run for run in runs}
    if {"committee", "deeplens"} <= set(by_name):
        own, peer = by_name["committee"], by_name["deeplens"]
        alone = paired_bootstrap(labels, own.scores, None)
        change = paired_bootstrap(labels, own.scores, peer.scores)
        lines += ["", "95% bootstrap intervals (test set resampled within each class): "
                  + "; ".join(f"{key.upper()} {alone[key][1]:.4f} to {alone[key][2]:.4f}"
                              for key in ("auroc", "tpr10"))
                  + f"; minus `{run_id(peer.name, peer.params)}`: "
                  + "; ".join(f"{key.upper()} {change_text(change[key], 4)}"
                              for key in ("auroc", "tpr10"))]
        m, p = own.metrics, peer.metrics
        beats = m["tpr0"] > p["tpr0"] and m["tpr10"] > p["tpr10"]
        lines += ["", f"`{run_id(own.name, own.params)}` against "
                  f"`{run_id(peer.name, peer.params)}`: TPR0 {m['tpr0']:.3f} vs {p['tpr0']:.3f}, "
                  f"TPR10 {m['tpr10']:.3f} vs {p['tpr10']:.3f}, AUROC {m['auroc']:.4f} vs "
                  f"{p['auroc']:.4f}: the committee "
                  + ("beats" if beats else "does NOT beat") + " DeepLens on TPR0 and TPR10."]
    return lines


def gpu_compare(profile: str = "compare", device: str = "auto", seed: int = 0,
                workdir: Path = Path(".lensbench"), out: Path = GPU_REPORT,
                methods: tuple[str, ...] = METHODS, speed_epochs: int | None = None,
                together: str = "auto", command: str = "", log=print) -> Path:
    """Make the splits, train and score ``methods`` on ``device``, time `bench scan` with each,
    measure the speed flags with ``speed_epochs``-epoch runs (None: the profile's
    SPEED_EPOCHS; 0: not measured), and write the report ``out``. ``together``: train the two
    methods at once ("yes"), one after the other ("no"), or as the short runs measure faster
    ("auto"; TOGETHER_GAIN)."""
    import torch
    from lensbench.bench.report import versions_line
    from lensbench.bench.runner import git_commit
    from lensbench.deep.train import resolve_device

    params = profile_params(profile)
    speed_epochs = SPEED_EPOCHS[profile] if speed_epochs is None else int(speed_epochs)
    unknown = [name for name in methods if name not in params]
    if unknown:
        raise ValueError(f"bench perf gpu: --methods: unknown {unknown}; expected some of "
                         f"{', '.join(METHODS)}")
    if together not in TOGETHER_CHOICES:
        raise ValueError(f"bench perf gpu: --together must be one of {TOGETHER_CHOICES}, got "
                         f"{together!r}")
    resolved = resolve_device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("bench perf gpu: --device cuda but torch sees no CUDA device")
    kind, task = ground_kind(SMOKE_ROTATION_SUBSET if profile == "smoke" else None), METCALF_GROUND
    start = time.perf_counter()
    try:
        splits = kind.splits(task, "compare" if profile == "compare" else "smoke",
                             Path(workdir), log=log)
    except ImportError as error:
        raise ValueError(f"bench perf gpu: simulating the splits needs {error.name or error} "
                         "(astropy's cosmology); bring it as wheels (scripts/gpu-run.sh)"
                         ) from None
    actual, splits_s = splits.hashes, time.perf_counter() - start
    log(f"splits ready in {splits_s:.0f} s: train {actual['train'][:12]}, "
        f"test {actual['test'][:12]}")
    hashes = hash_lines(actual, stated_split_hashes(), profile)
    if "DIFFERENT" in hashes[0]:
        from lensbench.bench.splits import probe_hashes, probe_lines

        hashes += ["", *probe_lines(probe_hashes())]
    log("\n".join(hashes))
    # The title and versions line `bench report --check` reads (bench/report.py).
    header = [f"# lensbench on one device, committee against DeepLens: `metcalf` suite "
              f"({profile} profile)", "",
              versions_line(Suite("metcalf", "", (task,))),
              f"- written by: `{command or 'bench perf gpu'}` on "
              f"{datetime.now(UTC).isoformat(timespec='seconds')}; seed {seed}; tracking off",
              f"- lensbench commit: {git_commit() or 'unknown (not a git checkout)'}",
              *machine_lines(resolved),
              f"- splits simulated (or found in the workdir) in {splits_s:.0f} s on the CPU",
              *([f"- the CPU figures beside these: {COMPARE_REPORT.name} (DeepLens at 12 "
                 "epochs there; here with its published schedule, " + ", ".join(
                     f"{key}={value}" for key, value in published_deeplens_schedule().items())
                 + ")"] if profile == "compare" else [])]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs, scans, speed_runs, together_section = [], [], [], []
    # First and short, so that a time limit on the long runs cannot cut it off.
    simulator = simulator_lines(profile, resolved, seed)
    log("\n".join(simulator))

    def in_order(done: list[MethodRun]) -> list[MethodRun]:
        """Runs in --methods order, a method's speed runs in SPEED_SETTINGS order (runs at once
        end in any order; the speed table's first rows run first, for the probe)."""
        return sorted(done, key=lambda run: (methods.index(run.name), SPEED_SETTINGS.index(
            (run.params.get("precision", "float32"),
             run.params.get("memory_format", "contiguous")))))

    def write() -> None:
        """The report as far as it has got: a run cut short by a time limit keeps what it
        measured, and a crash never leaves half a file."""
        lines = report_lines(in_order(runs), splits.test.truth[task.target], hashes, header,
                             beside_cpu=profile == "compare")
        lines += together_section
        lines += ["", *scans] if scans else []
        lines += speed_lines(in_order(speed_runs)) if speed_runs else []
        lines += simulator
        atomic_write_text(out, "\n".join(lines) + "\n")

    def logged(run: MethodRun) -> MethodRun:
        log(f"{run_id(run.name, run.params)}: AUROC {run.metrics['auroc']:.4f} TPR0 "
            f"{run.metrics['tpr0']:.3f} TPR10 {run.metrics['tpr10']:.3f}; fit {run.fit_s:.0f} s "
            f"({run.train_rate:,.0f} cutouts/s), inference {run.predict_rate:,.0f} cutouts/s")
        return run

    write()  # the splits and the simulator already: a run cut in its first method keeps them
    short = speed_params(profile, speed_epochs) if speed_epochs else {}
    speed_kind = ground_kind(0)  # the speed table has no rotation columns

    def speed_run(name: str, precision: str, layout: str) -> MethodRun:
        run = run_method(name, {**short[name], "precision": precision,
                                "memory_format": layout}, speed_kind, task, splits, seed,
                         str(resolved))
        log(f"{name} {precision} {layout}: {run.train_rate:,.0f} train cutouts/s, "
            f"{run.predict_rate:,.0f} inference cutouts/s, AUROC {run.metrics['auroc']:.4f}")
        speed_runs.append(run)
        write()
        return run

    with tempfile.TemporaryDirectory(prefix="lensbench-perf-gpu-") as tmp:
        from lensbench.deep.checkpoint import save_checkpoint

        probe = None
        if short and len(methods) == 2 and together != "no":  # on the speed table's first rows
            probe = TogetherProbe([speed_run(name, *SPEED_SETTINGS[0]) for name in methods])
            first = {name: {**short[name], "precision": SPEED_SETTINGS[0][0],
                            "memory_format": SPEED_SETTINGS[0][1]} for name in methods}
            try:
                probe.at_once = list(runs_at_once(first, speed_kind, splits, seed,
                                                  str(resolved), Path(tmp) / "probe"))
            except Exception as error:  # noqa: BLE001  (said in the report; the runs go on)
                probe.error = f"{type(error).__name__}: {error}"
        at_once = trains_at_once(together, probe, len(methods))
        together_section = together_lines(probe, at_once, together, resolved)
        log("\n".join(together_section))
        write()
        if at_once:
            for run in runs_at_once({name: params[name] for name in methods}, kind, splits,
                                    seed, str(resolved), Path(tmp)):
                runs.append(logged(run))
                write()
        else:
            for name in methods:
                runs.append(logged(run_method(name, params[name], kind, task, splits, seed,
                                              str(resolved))))
                write()
        ckpts = {run.name: run.checkpoint or save_checkpoint(run.method,
                                                             Path(tmp) / f"{run.name}.pt")
                 for run in runs}
        # on the device, then on this machine's CPU cores: inference beside the CPU's
        for where in dict.fromkeys([str(resolved), "cpu"]):
            for run in in_order(runs):
                scans.append(scan_line(run, ckpts[run.name], splits.test.path, where))
                log(scans[-1])
                write()
    done = {(run.name, run.params["precision"], run.params["memory_format"])
            for run in speed_runs}
    for name in methods if short else ():
        for precision, layout in SPEED_SETTINGS:
            if (name, precision, layout) not in done:
                speed_run(name, precision, layout)
    log(f"wrote {out} ({time.perf_counter() - start:.0f} s in all)")
    return out


def command_line(options: dict) -> str:
    """The `bench perf gpu` command that gives ``options`` (gpu_compare's keywords)."""
    words = ["bench", "perf", "gpu"]
    for key, value in options.items():
        words += [f"--{key.replace('_', '-')}",
                  *(map(str, value) if isinstance(value, tuple) else [str(value)])]
    return shlex.join(words)
