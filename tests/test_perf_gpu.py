"""`bench perf gpu` (issue 27) on the CPU: the smoke profile end to end in an environment without
the packages the GPU machine lacks, the split-hash check against the committed report, the
`device="auto"` path of every torch method, the GPU speed flags, and CUDA checkpoints on a CPU."""

from __future__ import annotations

import csv
import inspect
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lensbench.baselines.contract import TaskInfo
from lensbench.baselines.registry import METHODS, resolve_method
from lensbench.bench.tools import perf_gpu
from lensbench.deep import train

# The GPU machine of issue 27 (KINDS.md of the device tool lists its image): the dependencies
# it has, those scripts/gpu-run.sh brings as wheels, and the modules it lacks.
ON_GPU_MACHINE = ("torch", "numpy", "scipy", "h5py", "scikit-learn", "scikit-image",
                  "matplotlib", "tqdm")
MISSING_ON_GPU_MACHINE = ("astropy", "pooch", "mlflow", "optuna", "xgboost", "photutils",
                          "astroscrappy", "qp", "dask", "distributed", "pandas")
# A sitecustomize that makes those packages unimportable, as on that machine, in every Python
# process the command starts (its runs at once too): a meta-path finder ahead of every other
# one raises the error a missing package gives, and a probe by importlib.util.find_spec (torch's
# dynamo probes pandas) finds nothing, as it would there.
BLOCKER = f"""
import importlib.abc, importlib.util, sys
MISSING = {MISSING_ON_GPU_MACHINE!r}
assert not [m for m in sys.modules if m.split(".")[0] in MISSING], "imported before the blocker"
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Missing())
probe = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] in MISSING else probe(name, package))
"""


def run_without_missing_packages(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LENSBENCH_PROGRESS": "0", "PYTHONPATH": path}
    code = f"import sys; from lensbench.bench.cli import main; sys.exit(main({argv!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)


def test_every_dependency_is_on_the_gpu_machine_carried_there_or_shown_unneeded():
    """A dependency added to pyproject.toml must be placed: on the GPU machine already, in
    gpu-run.sh's wheels, or unimportable in the runs below (which show the command needs it not).
    skops was none of these, and the CUDA model-file test would have failed there for it."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    needed = {re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower()
              for spec in project["dependencies"]}
    script = (root / "scripts" / "gpu-run.sh").read_text()
    carried = {name.lower() for name in re.findall(r"\b([A-Za-z][\w.-]*)==[\w.]+", script)}
    module_of = {"qp-prob": "qp"}  # distribution name -> the module the blocker blocks
    unplaced = sorted(name for name in needed - set(ON_GPU_MACHINE) - carried
                      if module_of.get(name, name) not in MISSING_ON_GPU_MACHINE)
    assert not unplaced, f"pyproject dependencies not placed for the GPU machine: {unplaced}"
    assert {"astropy", "skops", "lenstronomy"} <= carried  # the parse found the wheel list


def test_the_stamp_names_the_commit_as_git_would(tmp_path):
    """gpu-run.sh's stamp of a git repository, read back from the files alone (the GPU machine
    gets the tree without .git), gives the commit and the clean-or-dirty that git gives: dirty
    for a changed code file, clean for a change outside the code."""
    import shutil

    from conftest import missing
    from lensbench.bench.runner import CODE_PATHS, DIRTY, stamped_commit

    if shutil.which("git") is None:
        missing("git (scripts/gpu-run.sh stamps a commit with it)")
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "scripts" / "gpu-run.sh", repo / "scripts")
    for path in CODE_PATHS:  # a file for pyproject.toml, a module in each code folder
        file = repo / path if "." in path else repo / path / "module.py"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(f"# {path}\n")
    (repo / "README.md").write_text("words\n")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=lensbench", "-c",
                               "user.email=tests@lensbench.invalid", *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "a tree")
    stamp = tmp_path / "commit-stamp.txt"
    made = subprocess.run(["bash", str(repo / "scripts" / "gpu-run.sh"), "stamp"], text=True,
                          capture_output=True, timeout=120,
                          env={**os.environ, "LB_STAMP": str(stamp), "PYTHON": sys.executable})
    assert made.returncode == 0, made.stderr
    head = git("rev-parse", "HEAD")
    assert stamped_commit(stamp, repo) == head
    (repo / "README.md").write_text("other words\n")  # not code: git_commit says clean too
    assert stamped_commit(stamp, repo) == head
    (repo / "deep" / "module.py").write_text("# changed\n")
    assert git("status", "--porcelain", "--untracked-files=no", "--", "deep")
    assert stamped_commit(stamp, repo) == head + DIRTY


def test_a_stamp_flags_a_changed_or_missing_file_and_names_what_is_malformed(tmp_path):
    from lensbench.bench.runner import DIRTY, git_blob_hash, stamped_commit

    tree = tmp_path / "tree"
    (tree / "bench").mkdir(parents=True)
    (tree / "bench" / "a.py").write_bytes(b"x = 1\n")
    (tree / "pyproject.toml").write_bytes(b"")
    # git's own object names of these bytes (`git hash-object`), the reference
    assert git_blob_hash(b"x = 1\n") == "7d4290a117a4ddcc11daae7ea675841033830c8f"
    assert git_blob_hash(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    head = "c" * 40
    listing = ("100644 blob 7d4290a117a4ddcc11daae7ea675841033830c8f\tbench/a.py\n"
               "100644 blob e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\tpyproject.toml\n")
    stamp = tmp_path / "stamp.txt"
    stamp.write_text(f"{head}\n{listing}")
    assert stamped_commit(stamp, tree) == head
    (tree / "bench" / "a.py").write_bytes(b"x = 2\n")
    assert stamped_commit(stamp, tree) == head + DIRTY
    (tree / "bench" / "a.py").unlink()
    assert stamped_commit(stamp, tree) == head + DIRTY
    for text, where in ((f"HEAD\n{listing}", "line 1"), (f"{head}\n", "no files listed"),
                        (f"{head}\n100644 blob xyz\tbench/a.py\n", "line 2")):
        stamp.write_text(text)
        with pytest.raises(ValueError, match=f"{re.escape(str(stamp))}: {where}"):
            stamped_commit(stamp, tree)


def test_smoke_command_runs_without_the_packages_the_gpu_machine_lacks(tmp_path):
    # The splits need astropy's cosmology (the GPU machine gets it as wheels): made here first,
    # so the run below shows that training, scoring and the report need none of those packages.
    # Both CNNs train at once (--together yes), so the children they train in are shown too.
    from lensbench.bench.splits import ensure_split
    from lensbench.bench.tasks import METCALF_GROUND

    workdir, report = tmp_path / "work", tmp_path / "gpu.md"
    made = {role: ensure_split(METCALF_GROUND, role, "smoke", workdir, quiet=True).content_hash
            for role in ("train", "test")}
    done = run_without_missing_packages(["perf", "gpu", "--profile", "smoke", "--device",
                                         "auto", "--seed", "3", "--workdir", str(workdir),
                                         "--together", "yes", "--out", str(report)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    text = report.read_text()
    versions = (f"torch {torch.__version__}", f"numpy {np.__version__}", "CUDA ")
    for field in ("- machine: ", f"{os.cpu_count()} CPUs", "device `cpu`", "- versions: ",
                  *versions, "- lensbench commit: ", "seed 3", "tracking off",
                  "`bench perf gpu --profile smoke --device auto --seed 3 --workdir",
                  f"train `{made['train'][:12]}`, test `{made['test'][:12]}`",
                  "95% bootstrap intervals"):
        assert field in text, field
    # `bench report --check` reads it as a current report of the metcalf suite
    from lensbench.bench.report import stale_reason

    assert stale_reason(report) is None
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1].split("[")[0] for row in rows] == ["deeplens", "committee"]
    for row in rows:  # every metric and both rates are numbers
        cells = [cell.strip() for cell in row.strip("|").split("|")[1:]]
        auroc, *_, train_rate, predict_rate = cells
        assert 0 <= float(auroc) <= 1
        assert float(train_rate.replace(",", "")) > 0 < float(predict_rate.replace(",", ""))
    # the arithmetic of each fit
    arithmetic = re.findall(r"`(\w+)\[[^`]*\]` ([0-9.e+-]+) GFLOP per cutout, ([0-9.e+-]+) "
                            r"TFLOP/s", text.split("Arithmetic of training")[1].split("\n")[0])
    assert [name for name, *_ in arithmetic] == ["deeplens", "committee"]
    assert all(float(gflop) > 0 and float(rate) > 0 for _, gflop, rate in arithmetic)
    # bench scan of the test split with each trained finder, on the device
    scans = [line for line in text.splitlines() if line.startswith("- `bench scan` ")]
    assert len(scans) == 2 and all("single process, cpu" in line for line in scans)
    assert all(float(re.search(r"([0-9,]+) cutouts/s end to end", line).group(1)
                     .replace(",", "")) > 0 for line in scans)
    # every precision and memory layout, for both networks, beside float32 / contiguous
    speed = [[cell.strip() for cell in line.strip("|").split("|")]
             for line in text.split("## Precision and memory layout")[1].splitlines()
             if line.startswith(("| deeplens", "| committee"))]
    assert [(row[0], row[1], row[2]) for row in speed] == [
        (name, precision, layout) for name in ("deeplens", "committee")
        for precision, layout in perf_gpu.SPEED_SETTINGS]
    for row in speed:
        assert row[3] == "1" and float(row[5].replace(",", "")) > 0
        assert 0 <= float(row[9]) <= 1 and float(row[11]) > 0  # AUROC; train TFLOP/s
    assert [row[6] for row in speed][::4] == ["1.00x", "1.00x"]
    # both at once: the short float32 runs timed alone and at once, then the methods above
    # trained at once; a run in its own process scores as it does alone (its thread count aside)
    together = text.split("## Both at once")[1].split("- `bench scan`")[0]
    assert re.search(r"took [0-9.]+ s of fitting one after the other and [0-9.]+ s both at once",
                     together)
    change = re.search(r"differ from the runs alone by at most ([0-9.e+-]+)\.", together)
    assert float(change.group(1)) < 1e-4
    assert "trained **both at once**" in together and "`--together yes`" in together
    # the simulator needs astropy (the GPU machine gets it as wheels): said, not a crash
    assert "Not measured: the simulator needs astropy" in text.split("## Simulator")[1]


def test_the_report_times_the_simulator_against_lenstronomy_in_the_same_process():
    pytest.importorskip("lenstronomy")  # the dev extra, which CI installs
    text = "\n".join(perf_gpu.simulator_lines("smoke", torch.device("cpu"), seed=0))
    assert "On `cpu`:" in text and re.search(r"lensbench +: +[0-9]+ band-images/s", text)
    assert re.search(r"ratio +: +[0-9.]+x per band-image", text)


def test_without_astropy_making_the_splits_is_one_clear_error(tmp_path):
    done = run_without_missing_packages(["perf", "gpu", "--profile", "smoke", "--workdir",
                                         str(tmp_path), "--out", str(tmp_path / "gpu.md")],
                                        tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("bench: error: ") and "astropy" in last and "gpu-run.sh" in last
    assert not (tmp_path / "gpu.md").exists()


def test_split_hashes_are_checked_against_the_committed_report():
    stated = perf_gpu.stated_split_hashes()
    assert stated is not None and set(stated) == {"train", "test"}
    same = {role: value + "0" * 52 for role, value in stated.items()}
    assert "the same bytes" in perf_gpu.hash_lines(same, stated, "compare")[0]
    other = {**same, "test": "f" * 64}
    line = perf_gpu.hash_lines(other, stated, "compare")[0]
    assert "DIFFERENT" in line and f"test `{stated['test']}`" in line
    assert "numpy and torch builds" in line and "'s train `" not in line  # only the test differs


def test_the_report_names_the_command_that_reproduces_it():
    from lensbench.bench.cli import build_parser

    options = {"profile": "compare", "device": "cuda", "seed": 0, "workdir": Path("w"),
               "methods": ("deeplens",), "speed_epochs": 0, "together": "no"}
    line = perf_gpu.command_line(options)
    assert line == ("bench perf gpu --profile compare --device cuda --seed 0 --workdir w "
                    "--methods deeplens --speed-epochs 0 --together no")
    parsed = build_parser().parse_args(line.split()[1:])  # what it says, the CLI accepts
    assert (parsed.methods, parsed.speed_epochs, parsed.device, parsed.together) == (
        ["deeplens"], 0, "cuda", "no")


def _timed(name: str, started: float, fit_s: float, scores=(0.2, 0.8)) -> perf_gpu.MethodRun:
    return perf_gpu.MethodRun(name, {}, {}, fit_s, 1.0, 1, 10, 2, np.asarray(scores),
                              fit_started=started)


def test_both_at_once_only_where_the_short_runs_measure_it_faster():
    alone = [_timed("deeplens", 100.0, 10.0), _timed("committee", 110.0, 10.0)]
    # at once: from the first fit's start (200) to the last one's end (217): 0.85 of 20 s
    quick = perf_gpu.TogetherProbe(alone, [_timed("committee", 200.5, 16.0),
                                           _timed("deeplens", 200.0, 17.0, (0.2, 0.55))])
    assert (quick.sequential_s, quick.at_once_s) == (20.0, pytest.approx(17.0))
    assert quick.faster and quick.score_change() == pytest.approx(0.25)
    slow = perf_gpu.TogetherProbe(alone, [_timed("deeplens", 200.0, 19.0),
                                          _timed("committee", 201.0, 18.5)])  # 0.975 of it
    assert not slow.faster
    failed = perf_gpu.TogetherProbe(alone, error="RuntimeError: out of memory")
    assert not failed.faster

    choose = perf_gpu.trains_at_once
    assert choose("auto", quick, 2) and not choose("auto", slow, 2)
    assert not choose("auto", failed, 2) and not choose("auto", None, 2)
    assert choose("yes", None, 2) and not choose("no", quick, 2)
    assert not choose("yes", quick, 1)  # one method: nothing to run beside it
    # the report says what was measured and what was chosen
    text = "\n".join(perf_gpu.together_lines(quick, True, "auto", "cuda"))
    assert "20.0 s of fitting one after the other and 17.0 s both at once" in text
    assert "0.85x the time" in text and "by at most 0.25." in text
    assert "trained **both at once**" in text and "under 90% of the time" in text
    text = "\n".join(perf_gpu.together_lines(failed, False, "auto", "cuda"))
    assert "failed: RuntimeError: out of memory" in text and "**one after the other**" in text
    assert "Not measured" in "\n".join(perf_gpu.together_lines(None, False, "auto", "cpu"))


def test_the_compare_profile_gives_deeplens_its_published_schedule():
    from lensbench.bench.tasks import COMPARE_PARAMS

    params = perf_gpu.profile_params("compare")
    assert params["committee"] == COMPARE_PARAMS["committee"]
    assert params["deeplens"]["crop"] == COMPARE_PARAMS["deeplens"]["crop"]
    # 120 epochs, learning rate / 10 every 40: the schedule TrainConfig really runs
    from lensbench.deep.methods import DeepLensFinder

    config = DeepLensFinder(**params["deeplens"])._train_config()
    rates = [train._lr_at(config, epoch) for epoch in range(config.max_epochs)]
    assert len(rates) == 120 and sorted(set(rates), reverse=True) == pytest.approx(
        [1e-3, 1e-4, 1e-5])
    assert rates[39] == 1e-3 and rates[40] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="--profile"):
        perf_gpu.profile_params("default")


# ----------------------------------------------------------------------------- devices
def test_auto_device_is_cuda_only_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train.resolve_device("auto") == torch.device("cuda")
    assert train.resolve_device("cpu") == torch.device("cpu")


def _image_data(n=48, bands=2, size=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 0.01, (n, bands, size, size)).astype(np.float32)
    y = np.arange(n) % 2
    X[y == 1, :, size // 2 - 2:size // 2 + 2, size // 2 - 2:size // 2 + 2] += 0.05
    return X, y


def _finder_info(X) -> TaskInfo:
    """The lens-finding TaskInfo of _image_data's two-band cutouts ``X``."""
    return TaskInfo(name="t", kind="lens-finding", bands=("g", "r"), pixel_scale=0.2,
                    image_shape=X.shape[1:])


def _photoz_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.1, 0.5, n)
    g = 20.0 + rng.normal(0, 0.5, n)
    mags = np.column_stack([g + 1.0, g, g - 2.0 * z, g - 2.5 * z, g - 2.8 * z])
    return np.hstack([mags, np.full((n, 5), 0.02)]), z


TINY = {  # one short epoch of each torch method that takes a device
    "resnet": {"width": 8, "max_epochs": 1},
    "committee": {"width": 8, "members": 2, "max_epochs": 1},
    "deeplens": {"max_epochs": 1, "step_every": 1},
    "ae-bgmm": {"max_epochs": 1},
    "ae-outlier": {"max_epochs": 1},
    "resnet-regressor": {"width": 8, "max_epochs": 1},
    "committee-regressor": {"width": 8, "members": 2, "max_epochs": 1},
    "netz-photoz": {"epochs": 1, "stamp_size": 8, "channels": (4, 8)},
    "netz-fusion-photoz": {"epochs": 1, "stamp_size": 8, "channels": (4, 8)},
}
TORCH_METHODS = sorted(name for name in METHODS
                       if "device" in inspect.signature(resolve_method(name)).parameters)


def test_every_torch_method_with_a_device_is_covered():
    assert TORCH_METHODS == sorted(TINY)


def _fit_tiny(name: str, device: str):
    """(the method ``name`` fitted for one tiny epoch on ``device``, its outputs on 8 inputs,
    its networks)."""
    cls = resolve_method(name)
    params = {**TINY[name], "device": device}
    if "num_threads" in inspect.signature(cls).parameters:
        params["num_threads"] = 1
    method = cls(**params)
    if name.endswith("photoz"):
        from lensbench.datasets.photoz import BANDS

        X, y = _photoz_data()
        info = TaskInfo(name="t", kind="photoz", bands=BANDS, pixel_scale=float("nan"),
                        image_shape=(5, 0, 0))
    elif name.endswith("regressor"):
        from lensbench.baselines.contract import LENS_MODEL_TARGETS

        X, _ = _image_data(bands=4)
        y = np.random.default_rng(1).normal(0, 0.3, (len(X), len(LENS_MODEL_TARGETS)))
        info = TaskInfo(name="t", kind="modeling", bands=("g", "r", "i", "z"), pixel_scale=0.2,
                        image_shape=X.shape[1:], targets=LENS_MODEL_TARGETS)
    else:
        X, y = _image_data()
        info = _finder_info(X)
    method.fit(X, y, info=info)
    out = _tiny_outputs(name, method)
    nets = [value for value in vars(method).values() if isinstance(value, torch.nn.Module)]
    nets += [net for value in vars(method).values() if isinstance(value, list)
             for net in value if isinstance(net, torch.nn.Module)]
    assert nets, f"{name}: no fitted network found"
    return method, out, nets


def _tiny_outputs(name: str, method) -> np.ndarray:
    """What the fitted ``method`` (of _fit_tiny's ``name``) says of 8 of its inputs."""
    if name.endswith("photoz"):
        return np.asarray(method.predict(_photoz_data()[0][:8]), dtype=float)
    return np.asarray(method.predict_score(_image_data(bands=4 if name.endswith("regressor")
                                                       else 2)[0][:8]), dtype=float)


@pytest.mark.parametrize("name", TORCH_METHODS)
def test_device_auto_trains_and_predicts_on_the_cpu(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, out, nets = _fit_tiny(name, "auto")
    assert np.isfinite(out).all()
    assert {p.device.type for net in nets for p in net.parameters()} == {"cpu"}


# ----------------------------------------------------------------------------- speed flags
def test_the_arithmetic_of_training_is_counted_at_the_input_the_network_sees():
    """bench perf gpu's GFLOP per training cutout: those of a fresh network of the same build at
    the crop it is given (not at the stamp's size), counted on a copy (the fitted finder is left
    as it was), and none for a method without a torch network."""
    from lensbench.deep.methods import DeepLensFinder
    from lensbench.deep.nets import build_net
    from torch.utils.flop_counter import FlopCounterMode

    def gflop(config: dict, side: int) -> float:
        with FlopCounterMode(display=False) as counter:
            build_net(**config)(torch.zeros(1, 2, side, side)).sum().backward()
        return counter.get_total_flops() / 1e9

    X, y = _image_data(n=32, size=41)
    for crop, side in ((16, 17), (32, 33)):  # centre_crop keeps a 41-pixel stamp's centre
        method = DeepLensFinder(max_epochs=1, crop=crop, num_threads=1).fit(
            X, y, info=_finder_info(X))
        net = method.nets_[0]
        before = method.predict_score(X)
        weights = {k: v.clone() for k, v in net.state_dict().items()}
        grads = [None if p.grad is None else p.grad.clone() for p in net.parameters()]
        counted = perf_gpu.training_gflop_per_cutout(method, X)
        assert counted == pytest.approx(gflop(method.net_configs_[0], side), rel=1e-12)
        assert counted < 0.9 * gflop(method.net_configs_[0], 41)
        assert np.array_equal(method.predict_score(X), before)
        assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())
        assert all((g is None and p.grad is None) or torch.equal(g, p.grad)
                   for g, p in zip(grads, net.parameters(), strict=True))
    logreg = resolve_method("pixel-logreg")().fit(X, y, info=_finder_info(X))
    assert perf_gpu.training_gflop_per_cutout(logreg, X) is None


def test_bf16_autocast_and_memory_format_flags_reach_the_network():
    from lensbench.deep.methods import ResNetFinder

    X, y = _image_data(n=64, size=20)
    info = _finder_info(X)
    # width 16: "auto" is channels-last on the CPU from that width (narrower: contiguous)
    base = dict(width=16, max_epochs=2, patience=None, num_threads=1, random_state=4)
    fp32 = ResNetFinder(**base).fit(X, y, info=info).predict_score(X)
    contiguous = ResNetFinder(**base, memory_format="contiguous").fit(X, y, info=info)
    # Another memory layout is the same arithmetic up to the order of float32 sums.
    np.testing.assert_allclose(contiguous.predict_score(X), fp32, rtol=1e-3, atol=1e-4)
    bf16 = ResNetFinder(**base, precision="bfloat16").fit(X, y, info=info).predict_score(X)
    assert not np.array_equal(bf16, fp32)  # autocast ran: bf16 rounding changed the scores
    assert np.corrcoef(bf16, fp32)[0, 1] > 0.9  # ... and little else
    with pytest.raises(ValueError, match="precision must be one of"):
        ResNetFinder(**base, precision="float16").fit(X, y, info=info)
    with pytest.raises(ValueError, match="memory_format must be one of"):
        ResNetFinder(**base, memory_format="nhwc").fit(X, y, info=info)


def test_training_data_stays_on_the_host_for_a_cpu_device():
    x = torch.zeros(4, 2, 8, 8)
    assert not train.fits_on_device([x], torch.device("cpu"))
    assert train.memory_format_for(torch.device("cpu")) == torch.channels_last
    assert train.memory_format_for(torch.device("cuda")) == torch.contiguous_format


def test_inputs_already_on_the_device_score_as_arrays_do():
    """predict_outputs reads a tensor kept on the device (device_resident, on CUDA when it
    fits) as it reads the array: same outputs; on the CPU the array stays an array."""
    from lensbench.deep.methods import ResNetFinder

    X, y = _image_data()
    info = _finder_info(X)
    method = ResNetFinder(width=8, max_epochs=1, num_threads=1, device="cpu").fit(X, y, info=info)
    Xn = method.preprocessor_.normalise(X)
    assert train.device_resident(Xn, torch.device("cpu")) is Xn
    net, cpu = method.nets_[0], torch.device("cpu")
    as_array = train.predict_outputs(net, Xn, method.preprocessor_, train.Objective(), cpu, 16)
    as_tensor = train.predict_outputs(net, torch.from_numpy(Xn), method.preprocessor_,
                                      train.Objective(), cpu, 16)
    torch.testing.assert_close(as_tensor, as_array, rtol=0, atol=0)


def test_a_model_trained_on_cuda_scores_on_a_cpu_only_machine(tmp_path, monkeypatch):
    """A run on a GPU saves tensors tagged "cuda:0" and the parameter device="cuda"; both the
    bare checkpoint and the model file load and score on a machine without CUDA, where the
    loader (not the trainer) names the device."""
    from lensbench.baselines.persistence import load_model, save_model
    from lensbench.bench.tools.scan import scan
    from lensbench.deep.checkpoint import load_checkpoint, save_checkpoint
    from lensbench.deep.methods import CommitteeFinder

    X, y = _image_data()
    info = _finder_info(X)
    method = CommitteeFinder(width=8, members=1, max_epochs=1, tta="none", num_threads=1,
                             device="cpu").fit(X, y, info=info)
    expected = method.predict_score(X)
    method.set_params(device="cuda")  # as fitted by `--param committee.device=cuda`
    # What torch writes for tensors that lived on a GPU: storages tagged "cuda:0".
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    ckpt = save_checkpoint(method, tmp_path / "cuda.pt")
    model = save_model(method, tmp_path / "cuda.lbmodel")
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="CUDA"):  # what a load without map_location does
        torch.load(io.BytesIO(ckpt.read_bytes()), weights_only=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine keeps it
    assert load_checkpoint(ckpt).device == load_model(model)[0].device == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for loaded in (load_checkpoint(ckpt), load_model(model)[0]):  # a CPU-only one does not
        assert loaded.device == "auto"
        np.testing.assert_array_equal(loaded.predict_score(X), expected)
    assert load_model(model, device="cpu")[0].device == "cpu"  # the loader's choice
    # bench scan of an HDF5 split with the CUDA-trained model file, on this CPU-only machine
    from lensbench.datasets.storage import SplitWriter

    with SplitWriter(tmp_path / "split", config={"kind": "t"}, seed=0, bands=["g", "r"],
                     created_by="test") as writer:
        writer.add_shard(X, {"object_id": np.arange(len(X))})
    summary = scan(model, tmp_path / "split", tmp_path / "candidates.csv", progress=False)
    assert summary.complete and summary.n_scored == len(X)


@pytest.mark.parametrize("name", ["resnet-regressor", "ae-bgmm", "netz-photoz"])
def test_other_torch_model_files_trained_on_cuda_load_on_a_cpu_only_machine(name, tmp_path,
                                                                             monkeypatch):
    """The regressor's own loader and the "state" family (torch modules inside) place the
    model the same way as the finders' checkpoints."""
    from lensbench.baselines.persistence import load_model, save_model

    method, out, _ = _fit_tiny(name, "cpu")
    method.set_params(device="cuda")
    path = save_model(method, tmp_path / "model.lbmodel")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = load_model(path)[0]
    assert loaded.device == "auto"
    again = _tiny_outputs(name, loaded)
    np.testing.assert_allclose(again, out, rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- the simulator
def _assert_float32_render_matches_float64(device) -> None:
    """Noiseless metcalf-ground cutouts rendered in float32 on ``device``: the same truth and,
    to float32 rounding, the same pixels as float64 on the CPU."""
    from lensbench.bench.tasks import METCALF_GROUND
    from lensbench.datasets.simulate import Simulator

    config = METCALF_GROUND.config.replace(noise=False)
    single, truth = Simulator(config, device=device).simulate(24, seed=5)
    double, truth64 = Simulator(config, dtype=torch.float64).simulate(24, seed=5)
    assert single.dtype == np.float32 and truth["label"].any() and not truth["label"].all()
    assert truth.keys() == truth64.keys()
    for key in truth:
        np.testing.assert_allclose(truth[key], truth64[key], rtol=1e-5, atol=1e-6,
                                   err_msg=key)
    peak = np.abs(double).max(axis=(2, 3), keepdims=True)
    assert (np.abs(single - double) / peak).max() < 1e-5


def test_float32_rendering_matches_float64():
    """What `--device cuda` renders in (float32) against float64, on the CPU: the same truth and
    the same noiseless pixels to float32 rounding (the noise is drawn on the CPU for every
    device; only its dtype changes its draws, so it is left out here)."""

    _assert_float32_render_matches_float64("cpu")


@pytest.mark.parametrize("argv", [["perf", "sim", "--n", "8"],
                                  ["data", "make", "--preset", "kids", "--n", "8", "--seed", "1"],
                                  ["perf", "gpu", "--profile", "smoke"],
                                  ["scan", "--model", "m.lbmodel", "--cutouts", "c"],
                                  ["predict", "--model", "m.lbmodel", "--catalog", "c.csv"]])
def test_a_cuda_device_torch_does_not_see_is_a_usage_error(argv, tmp_path, monkeypatch, capsys):
    from lensbench.bench.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    extra = (["--out", str(tmp_path / "out")] if argv[0] in ("data", "scan", "predict") else
             ["--workdir", str(tmp_path), "--out", str(tmp_path / "gpu.md")] if argv[1] == "gpu"
             else [])
    assert main([*argv, *extra, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "bench: error: " in err and "no CUDA device" in err
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- on a CUDA device
# Skipped without one (the `cuda` fixture); scripts/gpu-run.sh runs them on the GPU machine, with
# LENSBENCH_REQUIRE_GPU=1, before its timed run. GPU convolutions use TF32 by default (cuDNN's
# allow_tf32: a 10-bit mantissa), so scores on a GPU match the CPU's to about 1e-3, not to
# float32 rounding; the simulator uses no convolution layers and is held to float32 rounding.
GPU_SCORE_ATOL = 2e-3


@pytest.mark.parametrize("name", TORCH_METHODS)
def test_every_torch_method_trains_and_predicts_on_cuda(name, cuda):
    _, out, nets = _fit_tiny(name, str(cuda))
    assert np.isfinite(out).all()
    assert {p.device.type for net in nets for p in net.parameters()} == {cuda.type}


def test_the_training_set_stays_on_a_cuda_device(cuda):
    assert train.fits_on_device([torch.zeros(64, 4, 64, 64)], cuda)
    assert train.device_resident(np.zeros((8, 2, 4, 4), np.float32), cuda).device.type == "cuda"
    assert train.memory_format_for(cuda) == torch.contiguous_format


def test_a_training_batch_on_cuda_never_waits_for_the_device(cuda):
    """Gathering a batch of the device-resident training set and augmenting it there issue no
    host-device synchronisation (torch's sync debug mode makes one an error), and give the
    CPU's augmentation to float32 rounding (the random draws come from the same CPU generator)."""
    from lensbench.deep.preprocess import Augment, host_to

    x = torch.randn(64, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    augment = Augment(zoom=(0.9, 1.0))
    batches = []
    for device in (cuda, torch.device("cpu")):
        generator = torch.Generator().manual_seed(0)
        on_device = x.to(device)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error" if device.type == "cuda" else "default")
        try:
            rows = host_to(torch.randperm(64, generator=generator)[:32], device)
            batches.append(augment(on_device[rows], generator))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(batches[0].cpu(), batches[1], rtol=1e-5, atol=1e-5)


def test_the_simulator_on_cuda_renders_the_cpus_images(cuda):
    """`bench perf sim --device cuda` / `bench data make --device cuda`: the same truth and, to
    float32 rounding, the same pixels as the CPU in float64 (noiseless) and in float32 (with the
    noise, which is drawn on the CPU for every device)."""
    from lensbench.bench.tasks import METCALF_GROUND
    from lensbench.datasets.simulate import Simulator

    _assert_float32_render_matches_float64(cuda)
    noisy_gpu, _ = Simulator(METCALF_GROUND.config, device=cuda).simulate(24, seed=5)
    noisy_cpu, _ = Simulator(METCALF_GROUND.config).simulate(24, seed=5)
    peak = np.abs(noisy_cpu).max(axis=(2, 3), keepdims=True)
    assert (np.abs(noisy_gpu - noisy_cpu) / peak).max() < 1e-4


def test_bf16_autocast_and_channels_last_train_on_cuda(cuda):
    from lensbench.deep.methods import ResNetFinder

    X, y = _image_data(n=64, size=20)
    info = _finder_info(X)
    base = dict(width=8, max_epochs=2, patience=None, random_state=4, device=str(cuda))
    fp32 = ResNetFinder(**base).fit(X, y, info=info).predict_score(X)
    fast = ResNetFinder(**base, precision="bfloat16", memory_format="channels_last").fit(
        X, y, info=info).predict_score(X)
    assert np.isfinite(fast).all() and not np.array_equal(fast, fp32)
    assert np.corrcoef(fast, fp32)[0, 1] > 0.9


def test_two_runs_at_once_on_cuda_score_as_they_do_alone(cuda, tmp_path):
    """bench perf gpu's runs at once: each CNN in its own process on the one device scores the
    test split as its run alone in this process does, and leaves its fitted finder as a
    checkpoint. Alike, not required equal: training asks for deterministic algorithms with
    warn_only, so a CUDA op without a deterministic version still runs, and a child has its
    share of the CPU threads."""
    from lensbench.bench.tasks import METCALF_GROUND

    kind = perf_gpu.ground_kind(0)
    splits = kind.splits(METCALF_GROUND, "smoke", tmp_path / "work", log=lambda *_: None)
    params = perf_gpu.speed_params("smoke", 1)
    alone = {name: perf_gpu.run_method(name, params[name], kind, METCALF_GROUND, splits, 0,
                                       str(cuda)) for name in perf_gpu.METHODS}
    at_once = list(perf_gpu.runs_at_once(params, kind, splits, 0, str(cuda), tmp_path))
    assert sorted(run.name for run in at_once) == sorted(perf_gpu.METHODS)
    for run in at_once:
        np.testing.assert_allclose(run.scores, alone[run.name].scores, atol=GPU_SCORE_ATOL)
        assert run.checkpoint.is_file() and run.method is None


def test_a_model_trained_on_cuda_scores_alike_on_a_cpu_only_machine(cuda, tmp_path):
    """Real CUDA tensors and device="cuda" in the files; a process that sees no GPU loads the
    checkpoint and the model file and scores as the GPU did; bench scan on both devices too."""
    from lensbench.baselines.persistence import save_model
    from lensbench.bench.tools.scan import scan
    from lensbench.datasets.storage import SplitWriter
    from lensbench.deep.checkpoint import save_checkpoint
    from lensbench.deep.methods import CommitteeFinder

    X, y = _image_data()
    info = _finder_info(X)
    method = CommitteeFinder(width=8, members=2, max_epochs=2, device=str(cuda),
                             random_state=1).fit(X, y, info=info)
    on_gpu = method.predict_score(X)
    np.save(tmp_path / "X.npy", X)
    save_checkpoint(method, tmp_path / "model.pt")
    save_model(method, tmp_path / "model.lbmodel")
    code = (
        "import sys, numpy as np, torch\n"
        "from pathlib import Path\n"
        "from lensbench.baselines.persistence import load_model\n"
        "from lensbench.deep.checkpoint import load_checkpoint\n"
        "assert not torch.cuda.is_available()\n"
        "d = Path(sys.argv[1]); X = np.load(d / 'X.npy')\n"
        "for name, m in (('pt', load_checkpoint(d / 'model.pt')),\n"
        "                ('lbmodel', load_model(d / 'model.lbmodel')[0])):\n"
        "    np.save(d / f'scores-{name}.npy', m.predict_score(X))\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("pt", "lbmodel"):
        np.testing.assert_allclose(np.load(tmp_path / f"scores-{name}.npy"), on_gpu,
                                   atol=GPU_SCORE_ATOL, err_msg=name)
    with SplitWriter(tmp_path / "split", config={"kind": "t"}, seed=0, bands=["g", "r"],
                     created_by="test") as writer:
        writer.add_shard(X, {"object_id": np.arange(len(X))})

    def scan_scores(device: str, out) -> dict[str, float]:
        assert scan(tmp_path / "model.lbmodel", tmp_path / "split", out, progress=False,
                    device=device).complete
        return {row["id"]: float(row["score"]) for row in csv.DictReader(out.open())}

    cpu_table = scan_scores("cpu", tmp_path / "on-cpu.csv")
    gpu_table = scan_scores(str(cuda), tmp_path / "on-gpu.csv")
    assert cpu_table.keys() == gpu_table.keys() and len(cpu_table) == len(X)
    np.testing.assert_allclose([gpu_table[key] for key in cpu_table], list(cpu_table.values()),
                               atol=GPU_SCORE_ATOL)
