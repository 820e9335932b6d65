"""Shared fixtures: what tests need from outside the repository (real-data files, Chromium,
PostgreSQL, a real MLflow tracking server on loopback, a CUDA device, a CPU whose arithmetic the
golden split hashes know).

A test that needs something outside gets it from one fixture here (``real_data``, ``chromium``,
``postgres_url``, ``cuda``, ``machine_arithmetic``). When it is missing the test is skipped with
one line naming what is missing and how to get it; with ``LENSBENCH_REQUIRE_ALL=1`` (CI sets it)
that line is a failure instead. A GPU is the exception: no package install brings one, so CI
cannot ask for it; ``LENSBENCH_REQUIRE_GPU=1`` (scripts/gpu-run.sh sets it on the GPU machine)
makes its absence a failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import lensbench.datasets.blas_kernel  # noqa: F401  (before NumPy loads: see its docstring)
import numpy as np
import pytest

# Real data comes from $LENSBENCH_DATA_DIR, else the shared mirror beside the repository, else
# the download cache; tests never download (LENSBENCH_NO_DOWNLOAD). LENSBENCH_NO_MIRROR=1 hides
# the shared mirror, to see what a machine without it does.
_MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if _MIRROR.is_dir() and os.environ.get("LENSBENCH_NO_MIRROR", "") in ("", "0"):
    os.environ.setdefault("LENSBENCH_DATA_DIR", str(_MIRROR))
os.environ["LENSBENCH_NO_DOWNLOAD"] = "1"


def pytest_collection_modifyitems(items):
    """The tests that take the ``cuda`` fixture are marked ``cuda``: scripts/gpu-run.sh runs
    `pytest -m cuda` on the GPU machine, the tests that need one and no others."""
    for item in items:
        if "cuda" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cuda)


def missing(what: str, switch: str = "LENSBENCH_REQUIRE_ALL") -> None:
    """Skip the test (fail it when the environment variable ``switch`` is set, e.g.
    LENSBENCH_REQUIRE_ALL=1) with one line saying what is missing and how to get it."""
    if os.environ.get(switch, "") not in ("", "0"):
        pytest.fail(f"{what} ({switch}=1)", pytrace=False)
    pytest.skip(what)


class RealData:
    """``real_data(name, ...)``: local paths of registered data files (a name ending in ``/``:
    every registered data file in that folder, without its SOURCE notes; a name of ``GROUPS``:
    the files a part of lensbench reads); one file name gives a Path, anything else a
    ``{name: path}`` dict. ``real_data.mirror()``: the data mirror folder itself."""

    GROUPS = {
        "cosmos": ("cosmos_hst_f814w/",),  # COSMOS sources and hard negatives
        "slacs": ("slacs_hst_f814w/", "known_lens_tables/slacs_auger2010_shajib2021.csv"),
        "photoz": ("photoz_sdss_boss_dr10/", "photoz_sdss_mgs/"),
    }

    def __call__(self, *names: str):
        from lensbench.datasets import registry

        def files(name: str) -> list[str]:
            if name in self.GROUPS:
                return [f for part in self.GROUPS[name] for f in files(part)]
            if name.endswith("/"):
                return [f for f in registry.names(name) if not Path(f).name.startswith("SOURCE")]
            return [name]

        expanded = [f for name in names for f in files(name)]
        paths = {}
        for name in expanded:
            path = registry.local_path(name)
            if path is None:
                missing(f"needs the real-data file {name!r}: {registry.how_to_get(name)}")
            paths[name] = path
        return paths[expanded[0]] if len(names) == 1 and names[0] == expanded[0] else paths

    def mirror(self) -> Path:
        from lensbench.datasets import registry

        mirror = registry.data_dir()
        if mirror is None or not (mirror / "SHA256SUMS").is_file():
            missing(f"needs the data mirror itself (a folder with SHA256SUMS): set "
                    f"${registry.DATA_DIR_ENV} to it")
        return mirror


@pytest.fixture(scope="session")
def real_data() -> RealData:
    return RealData()


class RealLensSplits:
    """``real_lens_splits(task)``: the task's split of real known lenses and non-lenses, as
    `bench run` makes it (bench.splits.ensure_real_lens_split), made once per session in one
    workdir (seconds each: the COSMOS and SLACS images degraded to the survey).
    ``real_lens_splits.copy_into(workdir, *tasks)``: those splits copied into ``workdir``'s
    splits folder, where `bench run` finds them by their key instead of making them again."""

    def __init__(self, workdir: Path, real_data: RealData):
        self.workdir, self.real_data = workdir, real_data

    def __call__(self, task):
        from lensbench.bench.splits import ensure_real_lens_split

        self.real_data("cosmos", "slacs")
        return ensure_real_lens_split(task, self.workdir)

    def copy_into(self, workdir: Path, *tasks) -> None:
        import shutil

        for task in tasks:
            path = self(task).path
            shutil.copytree(path, Path(workdir) / "splits" / path.name)


class SimulatedSplits:
    """``simulated_splits.copy_into(workdir, task, profile, roles)``: the task's simulated
    splits of ``profile`` (bench.splits.ensure_split), made once per session in one workdir
    and copied into ``workdir``'s splits folder, where `bench run` and `bench tune` find them
    by their key instead of simulating them again (the modeling smoke profile's 400 training
    lenses take about 6 s)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def copy_into(self, workdir: Path, task, profile: str, roles=("train", "test")) -> None:
        import shutil

        from lensbench.bench.splits import ensure_split

        for role in roles:
            path = ensure_split(task, role, profile, self.workdir, quiet=True).path
            shutil.copytree(path, Path(workdir) / "splits" / path.name)


@pytest.fixture(scope="session")
def simulated_splits(tmp_path_factory) -> SimulatedSplits:
    return SimulatedSplits(tmp_path_factory.mktemp("simulated-splits"))


@pytest.fixture(scope="session")
def real_lens_splits(tmp_path_factory, real_data) -> RealLensSplits:
    return RealLensSplits(tmp_path_factory.mktemp("real-lens-splits"), real_data)


@pytest.fixture(scope="session")
def real_suite_smoke(tmp_path_factory, real_data, real_lens_splits):
    """(workdir, results): the real suite's smoke profile run once with pixel-logreg, seed 0,
    for the tests that only read it (test_harness checks its scores and data files,
    test_real_diagnosis its report, test_degrade takes its splits)."""
    from lensbench.bench.runner import run_suite
    from lensbench.bench.tasks import get_suite

    real_data("cosmos", "slacs")
    workdir = tmp_path_factory.mktemp("real-suite") / "work"
    real_lens_splits.copy_into(workdir, *get_suite("real").tasks)
    results = run_suite(get_suite("real"), profile="smoke", seed=0, workdir=workdir,
                        methods=["pixel-logreg"], log=lambda _: None)
    return workdir, tuple(results)


@pytest.fixture(scope="session")
def smoke_suite_twice(tmp_path_factory) -> tuple[Path, Path]:
    """The workdirs of two `bench run`s of the smoke suite (smoke profile, seed 0, no tracking)
    with every lens finder at the contract test's tiny parameters, in two processes at once with
    one thread each (test_reproducible.run_smoke_suite). test_reproducible compares the two;
    test_distributed takes the first as its serial reference."""
    import json

    from test_contract import TINY
    from test_reproducible import LENS_FINDERS, run_smoke_suite

    root = tmp_path_factory.mktemp("smoke-twice")
    params_file = root / "tiny.json"
    params_file.write_text(json.dumps({name: TINY.get(name, {}) for name in LENS_FINDERS}))
    workdirs = (root / "first", root / "second")
    runs = [run_smoke_suite(workdir, params_file) for workdir in workdirs]
    for run in runs:
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, output[-3000:]
    return workdirs


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of the Chromium that Playwright drives (Debian's chromium package; .ci/run installs
    it), Playwright itself from the dev extra."""
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        missing("needs Playwright: pip install -e '.[dev]'")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"needs Chromium at {CHROMIUM}: apt-get install chromium")
    return CHROMIUM


@pytest.fixture(scope="session")
def cuda():
    """A CUDA device torch can use (tests/test_perf_gpu.py; run on a GPU by
    scripts/gpu-run.sh, which sets LENSBENCH_REQUIRE_GPU=1)."""
    import torch

    if not torch.cuda.is_available():
        missing("needs a CUDA device (torch.cuda.is_available() is False): scripts/gpu-run.sh",
                switch="LENSBENCH_REQUIRE_GPU")
    return torch.device("cuda")


@pytest.fixture(scope="session")
def machine_arithmetic() -> str:
    """The name of this machine's arithmetic in ``bench.splits.MACHINE_ARITHMETICS``: the golden
    split hashes are known per arithmetic (tests/test_golden_hashes.py), since the simulator's
    bytes differ by CPU (torch's vectorised math through MKL)."""
    from lensbench.bench import splits

    here = splits.probe_hashes()
    name = splits.machine_arithmetic(here)
    if name is None:
        missing(f"needs a machine whose arithmetic the golden hashes know (probe {here}; known: "
                f"{', '.join(splits.MACHINE_ARITHMETICS)}): `bench data probe` says more")
    return name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def toy_lens_images(rng, n: int, shape=(4, 32, 32)):
    """(X, y): ``n`` noise cutouts of ``shape`` (bands, H, W), every second one a "lens" with
    a bright central square, for the scan tests' tiny finders."""
    X = rng.normal(0.0, 1.0, (n, *shape)).astype(np.float32)
    y = np.arange(n) % 2
    X[y == 1, :, 12:20, 12:20] += rng.uniform(1.0, 6.0, (int(y.sum()), 1, 1, 1))
    return X, y


def wait_until_healthy(base_url: str, process: subprocess.Popen, log: Path, what: str,
                       timeout_s: float) -> None:
    """Poll ``base_url``/health until it answers 200; fail with the log's tail if ``process``
    exits or ``timeout_s`` passes (polling a server that is starting, not ordering events)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            pytest.fail(f"{what} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not come up: {log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop_process_groups(processes: list[subprocess.Popen], timeout_s: float = 20) -> None:
    """SIGTERM each process's group (servers and schedulers started with
    ``start_new_session=True`` run their workers there), then SIGKILL what is still running
    after ``timeout_s``."""
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite backend, served artefacts) on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(uri, process, root / "server.log", "mlflow server", timeout_s=120)
        yield uri
    finally:
        stop_process_groups([process])  # the server's uvicorn workers are in its group
        log.close()


def _postgres_bin(name: str) -> str:
    """Debian's PostgreSQL binaries (apt package postgresql; .ci/run installs it)."""
    import glob
    import shutil

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found or not found[-1]:
        missing(f"needs PostgreSQL's {name}: apt-get install postgresql")
    return found[-1]


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on a free loopback port, in a throw-away data directory.
    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    initdb = _postgres_bin("initdb")  # skips before anything is made when PostgreSQL is missing
    # Not under pytest's tmp dir: that is private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="lensbench-postgres-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "lensbench",
                    "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    log = root / "postgres.log"
    subprocess.run([*as_user, _postgres_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                    "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run([*as_user, _postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port),
                        "-U", "lensbench", "optuna"], check=True, capture_output=True)
        yield f"postgresql://lensbench@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_user, _postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                        "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
