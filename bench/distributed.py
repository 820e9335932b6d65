"""Suites on a Dask cluster (``bench run --workers N`` or ``--scheduler ADDRESS``, ``bench data
make`` likewise): split shards are simulated on the workers, every (method, task) run is one
Dask task.

What stays in the client, and why:

- The split writer. Workers simulate the shards and return their arrays; the client writes
  them in shard order with the same :class:`~lensbench.datasets.storage.SplitWriter` as a serial
  run (checks, atomic commit, interrupt handling in one process). The bytes are a serial run's
  because a shard is pure in (config, seed, shard index): ``Simulator.simulate`` seeds each with
  ``SeedSequence([seed, shard])``, whatever process makes it and when, and the client writes
  them as a serial run does. Why not let the workers write the shard files: tried, the pixels
  and compressed chunks were identical but the HDF5 metadata layout of a file written in a
  ``dask worker`` process was not, in one test run of four (another content hash), so the writing
  stays where the serial run does it. The cost: the pixels cross to the client, and its HDF5
  write (~115 MB/s) caps split making at ~700 metcalf-ground cutouts/s, about two workers'
  simulation (README, "Running on a cluster").
- results.jsonl and the MLflow tracker: one writer. A run's task fits and scores the method on a
  worker, writes its artefacts into its folder in the workdir (a path every worker sees, checked
  at the start: :func:`check_workdir_shared`) and returns the Result, the artefacts' paths and
  the training curves; the client records them as they complete.

A failing method is recorded failed by ``run_method`` on the worker, as in a serial run. A worker
that dies mid-run costs a rerun of that run's task (the scheduler reschedules it; ``RETRIES``
more attempts for an error outside the method); a run whose task still cannot finish is recorded
failed with the reason, and the suite goes on.
"""

from __future__ import annotations

import json
import os
import secrets
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from distributed import WorkerPlugin
from lensbench.bench.kinds import RunCase, SuiteKind
from lensbench.bench.results import Result
from lensbench.bench.runner import (
    RESULTS_FILE,
    already_done,
    now,
    record_result,
    run_folder,
    run_method,
    start_record,
    write_run_artifacts,
)
from lensbench.bench.splits import SHARD_MAP
from lensbench.bench.tasks import Suite
from lensbench.datasets.interrupts import check_stop

RETRIES = 1  # more attempts of a run's task after an error outside the method itself
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


# --------------------------------------------------------------------------- the cluster
class TorchThreads(WorkerPlugin):
    """A Dask worker plugin: torch (and the BLAS libraries, through the environment variables
    read by code that starts later) use ``threads[worker address]`` threads, ``default`` on a
    worker that joined later, so the runs of the workers on one host do not oversubscribe its
    cores."""

    name = "lensbench-torch-threads"

    def __init__(self, threads: dict[str, int], default: int = 1):
        super().__init__()
        self.threads, self.default = threads, default

    def setup(self, worker) -> None:
        set_threads(self.threads.get(worker.address, self.default))


def set_threads(n: int) -> None:
    import torch

    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(n)
    torch.set_num_threads(n)


def threads_per_worker(client) -> dict[str, int]:
    """For each worker, its host's cores shared among the task slots of that host's workers
    (a worker runs ``nthreads`` tasks at once)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(os.cpu_count)
    slots = Counter()
    for info in workers.values():
        slots[info["host"]] += info["nthreads"]
    return {address: max(1, (cores.get(address) or 1) // slots[info["host"]])
            for address, info in workers.items()}


def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text(encoding="utf-8") == token
    except OSError:
        return False


def check_workdir_shared(client, workdir: Path) -> None:
    """Raise ValueError naming ``workdir`` and the workers that cannot read a token file the
    client writes there: every worker must see the workdir at the same path."""
    token = secrets.token_hex(16)
    probe = workdir / f".cluster-check-{token}"
    probe.write_text(token, encoding="utf-8")
    try:
        seen = client.run(_sees, str(probe), token)
    finally:
        probe.unlink(missing_ok=True)
    blind = sorted(address for address, ok in seen.items() if not ok)
    if blind:
        raise ValueError(f"--workdir {workdir} is not visible at that path to the Dask workers "
                         f"{', '.join(blind)}: it must be on a file system every worker mounts "
                         "at the same path")


@contextmanager
def cluster(workers: int | None = None, scheduler: str | None = None, *,
            workdir: Path) -> Iterator:
    """A Dask client: of a LocalCluster of ``workers`` one-thread worker processes, or of the
    scheduler at ``scheduler``; its workers' threads set (:class:`TorchThreads`) and the
    workdir checked to be shared (:func:`check_workdir_shared`)."""
    import dask
    from distributed import Client, LocalCluster

    local = None
    if scheduler is None:
        threads = max(1, (os.cpu_count() or 1) // max(1, workers or 1))
        # What the worker processes start with, replacing Dask's default, which also sets
        # MALLOC_TRIM_THRESHOLD_=65536: that pins glibc's mmap threshold, so every large array
        # is mapped and faulted in afresh, and made a metcalf-ground shard of 256 cutouts take
        # 1.6 s instead of 0.75 s. The thread variables are set before the processes start, so
        # libraries that read them once at import (OpenMP, MKL) see them.
        with dask.config.set({"distributed.nanny.pre-spawn-environ": {
                variable: str(threads) for variable in THREAD_VARIABLES}}):
            local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                 dashboard_address=None)
        client = Client(local)
    else:
        try:
            client = Client(scheduler, timeout=30)
        except (OSError, ValueError) as error:  # ValueError: not an address (no port)
            raise ValueError(f"--scheduler {scheduler}: cannot connect ({error}); expected "
                             "the scheduler's address, e.g. tcp://host:8786") from None
    try:
        if not client.scheduler_info(n_workers=-1)["workers"]:
            client.wait_for_workers(1, timeout=60)
        client.register_plugin(TorchThreads(threads_per_worker(client)))
        check_workdir_shared(client, workdir.resolve())
        yield client
    finally:
        client.close()
        if local is not None:
            local.close()


# --------------------------------------------------------------------------- split shards
_SIMULATORS: dict[str, object] = {}  # config JSON -> its Simulator, in a worker process


def simulate_shard(config, seed: int, shard: int, count: int):
    """On a worker: one shard's (images, truth) (the simulator built once per config)."""
    from lensbench.datasets.simulate import Simulator

    key = json.dumps(config.to_dict(), sort_keys=True)
    if key not in _SIMULATORS:
        _SIMULATORS.clear()  # one task's simulator at a time: they hold populations
        _SIMULATORS[key] = Simulator(config)
    return _SIMULATORS[key].simulate(count, seed, shard)


def shard_mapper(client) -> Callable:
    """A ``make_split`` ``map_shards`` that simulates the shards on the cluster, at most two per
    worker thread ahead of the client (so the workers' memory stays flat), yielded in shard
    order."""
    def map_shards(config, seed: int, shards: list[tuple[int, int]]):
        window = max(1, 2 * sum(client.nthreads().values()))
        futures = []
        try:
            for shard, count in shards:
                futures.append(client.submit(simulate_shard, config, seed, shard, count,
                                             pure=False, retries=RETRIES))
                if len(futures) >= window:
                    yield fetch(futures.pop(0))
            while futures:
                yield fetch(futures.pop(0))
        finally:  # an error or interrupt: drop the shards no one will write
            client.cancel(futures)
    return map_shards


def fetch(future):
    result = future.result()
    future.release()
    return result


@contextmanager
def shards_on(client) -> Iterator[None]:
    """Within the block, the suite's splits are simulated on the cluster."""
    token = SHARD_MAP.set(shard_mapper(client))
    try:
        yield
    finally:
        SHARD_MAP.reset(token)


# --------------------------------------------------------------------------- runs
def run_case(kind: SuiteKind, case: RunCase, *, suite: str, profile: str, seed: int,
             folder: str) -> tuple[Result, dict[str, str], dict]:
    """One run on a worker: fit, score, write its artefacts into ``folder`` (in the shared
    workdir); the Result, the artefacts' paths and the training curves go back to the client."""
    outcome = run_method(kind, case, suite=suite, profile=profile, seed=seed,
                         artifact_dir=Path(folder))
    artifacts = write_run_artifacts(kind, case, outcome, Path(folder))
    return outcome.result, {key: str(path) for key, path in artifacts.items()}, outcome.history


def run_on_cluster(client, kind: SuiteKind, suite: Suite, *, names: list[str], profile: str,
                   seed: int, workdir: Path, params: dict[str, dict], done: set[tuple],
                   total: int, tracker=None, log=print) -> list[Result]:
    """The suite loop of :func:`lensbench.bench.runner.run_suite` on a cluster: each task's
    splits made (their shards on the workers), its runs submitted, the runs recorded as they
    complete, by the client alone."""
    from distributed import as_completed

    workdir = workdir.resolve()  # the paths in the splits and runs sent to the workers
    store = workdir / RESULTS_FILE
    pending = as_completed()
    submitted = []
    cases: dict[str, RunCase] = {}
    results: list[Result] = []
    left = total
    try:
        with shards_on(client):
            for task in suite.tasks:
                if profile not in task.sizes:
                    log(f"task {task.name} has no {profile!r} profile: skipped")
                    continue
                splits = kind.splits(task, profile, workdir, log=log)
                for case in kind.cases(suite, task, splits, names, params, profile, workdir):
                    check_stop()
                    if already_done(case, done, suite=suite.name, profile=profile, seed=seed):
                        left -= 1
                        log(f"skip {case.run_id} on {case.task.name}: already done (--resume)")
                        continue
                    folder = run_folder(workdir, suite.name, case.task.name, case.run_id)
                    # The case, its splits included (paths and truth columns; a worker reads the
                    # images from the shards), travels in the task itself, not scattered: data
                    # scattered to a worker dies with it, and a rerun would have none.
                    future = client.submit(run_case, kind, case, suite=suite.name,
                                           profile=profile, seed=seed, folder=str(folder),
                                           pure=False, retries=RETRIES)
                    cases[future.key] = case
                    submitted.append(future)
                    pending.add(future)
        for future in pending:
            case = cases.pop(future.key)
            try:
                result, paths, history = future.result()
                artifacts = {key: Path(path) for key, path in paths.items()}
            except Exception:  # the run's task itself failed (e.g. its worker died each time)
                result = Result(**start_record(case, suite=suite.name, profile=profile,
                                               seed=seed), status="failed",
                                error="the run's Dask task failed:\n" + traceback.format_exc(),
                                finished_at=now())
                artifacts, history = {}, {}
            future.release()
            record_result(result, store=store, workdir=workdir, artifacts=artifacts,
                          history=history, tracker=tracker, log=log,
                          line=kind.summary_line(result))
            results.append(result)
            left -= 1
            if left:
                log(f"{left} of {total} runs left")
    except BaseException:
        client.cancel(submitted)  # an interrupt: the finished runs are recorded
        raise
    return results
