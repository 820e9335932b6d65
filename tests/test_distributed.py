"""Suites on a Dask cluster (issue 26), with real processes: a LocalCluster of two worker processes
and a `dask scheduler` with two `dask worker` processes on loopback. Split shards simulated on the
workers are byte-identical to a serial run's; the smoke suite on the cluster gives a serial run's
metrics; --resume skips what is done; a failing method is recorded failed; a worker that cannot
see the workdir is refused with one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import stop_process_groups
from lensbench.datasets.storage import load_split
from test_contract import TINY
from test_reproducible import same

METHODS = ["random", "pixel-logreg", "xgboost", "resnet"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def bench_run(workdir: Path, params_file: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lensbench.bench.cli", "run", "--suite", "smoke", "--profile",
         "smoke", "--seed", "0", "--no-tracking", "--workdir", str(workdir), "--methods",
         ",".join(METHODS), "--params", str(params_file), *extra],
        capture_output=True, text=True, env=ONE_THREAD, timeout=300)


def records(workdir: Path) -> list[dict]:
    lines = (workdir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def assert_same_runs(serial: list[dict], cluster: list[dict]) -> None:
    """The same runs, on the same split hashes and seeds, with equal metrics."""
    by_key = {(r["method"], r["task"]): r for r in serial}
    assert {(r["method"], r["task"]) for r in cluster} == by_key.keys()
    for record in cluster:
        reference = by_key[record["method"], record["task"]]
        assert record["status"] == reference["status"] == "ok", record["error"]
        assert record["split_hashes"] == reference["split_hashes"]
        assert record["seed"] == reference["seed"]
        assert record["metrics"].keys() == reference["metrics"].keys()
        differ = {name: (value, reference["metrics"][name])
                  for name, value in record["metrics"].items()
                  if not same(value, reference["metrics"][name])}
        assert not differ, f"{record['method']}: metrics differ from the serial run: {differ}"
        for path in record["artifacts"].values():  # written by a worker into the workdir
            assert path and not Path(path).is_absolute()


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("params") / "tiny.json"
    path.write_text(json.dumps({name: TINY.get(name, {}) for name in METHODS}))
    return path


@pytest.fixture(scope="module")
def serial_run(smoke_suite_twice) -> list[dict]:
    """The serial reference: the records of METHODS from the first of test_reproducible's two
    serial `bench run`s of the smoke suite (conftest.smoke_suite_twice: the same suite, profile,
    seed, TINY parameters and one thread per process as bench_run, every lens finder)."""
    return [record for record in records(smoke_suite_twice[0]) if record["method"] in METHODS]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str]) -> subprocess.Popen:
    """A process in its own process group, so that it and its children stop together."""
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=ONE_THREAD)


def start_scheduler(address: str) -> subprocess.Popen:
    """A `dask scheduler` on the loopback ``address`` (tcp://127.0.0.1:PORT)."""
    return start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                  "--port", address.rsplit(":", 1)[1], "--no-dashboard"])


def wait_for_workers(address: str, n: int) -> None:
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(n, timeout=60)


def worker_command(address: str) -> list[str]:
    return [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
            "--no-dashboard"]


@pytest.mark.slow
def test_shards_simulated_on_two_workers_are_the_serial_bytes(tmp_path):
    def data_make(out: Path, *extra: str) -> None:
        # Four shards of 16, so that the two workers make them in an order of their own.
        made = subprocess.run(
            [sys.executable, "-m", "lensbench.bench.cli", "data", "make", "--preset", "kids",
             "--n", "60", "--seed", "7", "--set", "shard_size=16", "--set", "stamp_size=32",
             "--out", str(out), *extra], capture_output=True, text=True, env=ONE_THREAD,
            timeout=300)
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]

    data_make(tmp_path / "serial")
    data_make(tmp_path / "spread", "--workers", "2")
    serial, spread = load_split(tmp_path / "serial"), load_split(tmp_path / "spread")
    assert len(serial.manifest["shards"]) == 4
    assert spread.manifest["shards"] == serial.manifest["shards"]
    assert spread.content_hash == serial.content_hash
    for shard in serial.manifest["shards"]:
        assert (tmp_path / "spread" / shard["file"]).read_bytes() == \
            (tmp_path / "serial" / shard["file"]).read_bytes()


@pytest.mark.slow
def test_smoke_suite_on_a_local_cluster_gives_the_serial_metrics_and_resumes(
        tmp_path, params_file, serial_run):
    run = bench_run(tmp_path, params_file, "--workers", "2")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert_same_runs(serial_run, records(tmp_path))

    again = bench_run(tmp_path, params_file, "--workers", "2", "--resume")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(records(tmp_path)) == len(METHODS)  # nothing run twice
    assert again.stdout.count("already done (--resume)") == len(METHODS)


@pytest.mark.slow
def test_smoke_suite_on_a_scheduler_and_two_worker_processes(tmp_path, params_file, serial_run):
    address = f"tcp://127.0.0.1:{free_port()}"
    processes = [start_scheduler(address)]
    try:
        processes += [start(worker_command(address)) for _ in range(2)]
        wait_for_workers(address, 2)
        run = bench_run(tmp_path, params_file, "--scheduler", address)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert_same_runs(serial_run, records(tmp_path))

        # A method that fails on a worker is recorded failed; the suite goes on.
        broken = bench_run(tmp_path / "broken", params_file, "--scheduler", address,
                           "--param", "pixel-logreg.max_iter=-1")
        assert broken.returncode == 0, broken.stdout[-3000:] + broken.stderr[-3000:]
        status = {r["method"]: r for r in records(tmp_path / "broken")}
        assert status["pixel-logreg"]["status"] == "failed"
        assert "max_iter" in status["pixel-logreg"]["error"]
        assert {status[name]["status"] for name in METHODS if name != "pixel-logreg"} == {"ok"}
    finally:
        stop_process_groups(processes)


@pytest.mark.slow
def test_a_worker_that_cannot_see_the_workdir_is_refused(tmp_path, params_file):
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        # A kernel capability, not something CI can install: a plain skip, even under
        # LENSBENCH_REQUIRE_ALL=1.
        pytest.skip("unshare --mount (root or user namespaces) is needed to start a worker that "
                    "sees another file system")
    workdir = tmp_path / "work"
    workdir.mkdir()
    address = f"tcp://127.0.0.1:{free_port()}"
    # This worker sees an empty file system mounted over the workdir: another host's view.
    blind = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs tmpfs {tmp_path} && exec {' '.join(worker_command(address))}"]
    processes = [start_scheduler(address)]
    try:
        processes += [start(worker_command(address)), start(blind)]
        wait_for_workers(address, 2)
        run = bench_run(workdir, params_file, "--scheduler", address)
    finally:
        stop_process_groups(processes)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("bench: error: --workdir "), run.stderr
    assert str(workdir) in error and error.count("tcp://127.0.0.1:") == 1
    assert not (workdir / "results.jsonl").exists()


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_that_run_a_rerun_not_the_suite(tmp_path):
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    processes = [start_scheduler(address)]
    try:
        processes += [start(worker_command(address)) for _ in range(2)]
        wait_for_workers(address, 2)
        slow = {"random": {}, "resnet": {**TINY["resnet"], "max_epochs": 6}}
        (tmp_path / "slow.json").write_text(json.dumps(slow))
        run = subprocess.Popen(
            [sys.executable, "-m", "lensbench.bench.cli", "run", "--suite", "smoke",
             "--profile", "smoke", "--seed", "0", "--no-tracking", "--workdir",
             str(tmp_path / "work"), "--methods", "random,resnet", "--params",
             str(tmp_path / "slow.json"), "--scheduler", address],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ONE_THREAD)
        with Client(address, timeout=60) as watcher:
            deadline = time.monotonic() + 120
            busy = []
            while not busy and time.monotonic() < deadline and run.poll() is None:
                busy = [worker for worker, keys in watcher.processing().items()
                        if any(str(key).startswith("run_case") for key in keys)]
                time.sleep(0.05)  # polling the scheduler, not ordering events
            assert busy, "no run reached a worker: " + (run.communicate()[0][-3000:]
                                                        if run.poll() is not None else "")
            pid = watcher.run(os.getpid, workers=busy[:1])[busy[0]]
            os.kill(pid, signal.SIGKILL)
        output, _ = run.communicate(timeout=300)
    finally:
        stop_process_groups(processes)
    assert run.returncode == 0, output[-3000:]
    results = records(tmp_path / "work")
    assert sorted(r["method"] for r in results) == ["random", "resnet"]  # each recorded once
    assert {r["status"] for r in results} == {"ok"}, [r["error"] for r in results]
