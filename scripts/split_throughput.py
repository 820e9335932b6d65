"""Simulation throughput of a task's split, serial and on local Dask clusters (issue 26.4).

    python scripts/split_throughput.py [--task metcalf-ground] [--n 4096] [--workers 1 2]

First the simulator alone at one thread (`Simulator.simulate` of one shard, nothing written:
what one worker computes per second). Then makes the same split (the task's config, seed 0)
serially and on a LocalCluster of each worker count (`bench.distributed.cluster`, as
`bench run --workers N` starts it), each into a fresh folder, and prints the wall time of
`make_split` (simulating, writing and hashing; the cluster's start is timed apart), cutouts/s,
cutouts/s per worker, and the split's content hash, which must be the same for every row. Run
it on an idle machine: the figures are what the cores give.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from lensbench.bench.distributed import cluster, shard_mapper
from lensbench.bench.tasks import all_tasks
from lensbench.datasets.simulate import Simulator, make_split
from lensbench.datasets.storage import load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="metcalf-ground")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    tasks = all_tasks()
    if args.task not in tasks:
        parser.error(f"--task {args.task!r}: not a task; tasks: {', '.join(tasks)}")
    task = tasks[args.task]
    print(f"{task.name} v{task.version}: {args.n} cutouts in shards of {task.config.shard_size}; "
          f"{os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    simulator = Simulator(task.config)
    simulator.simulate(16, 0, 0)  # warm-up: populations, kernels
    count = min(args.n, task.config.shard_size)
    begin = time.perf_counter()
    simulator.simulate(count, 0, 1)
    print(f"simulator alone, one thread: {count / (time.perf_counter() - begin):.0f} cutouts/s "
          f"({count} cutouts)")
    torch.set_num_threads(threads)  # the serial run below: as `bench run` has it
    print("| mode | cluster start s | make_split s | cutouts/s | cutouts/s per worker | hash |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as scratch:
        for workers in [0, *args.workers]:
            start = time.perf_counter()
            context = (nullcontext() if workers == 0 else
                       cluster(workers, workdir=Path(scratch)))
            with context as client:
                started = time.perf_counter() - start
                mapper = None if client is None else shard_mapper(client)
                out = Path(scratch) / f"split-{workers}"
                begin = time.perf_counter()
                make_split(task.config, args.n, 0, out, map_shards=mapper)
                seconds = time.perf_counter() - begin
            rate = args.n / seconds
            mode = "serial (in process)" if workers == 0 else f"{workers} worker(s)"
            content_hash = load_split(out, verify=False).content_hash
            print(f"| {mode} | {started:.1f} | {seconds:.1f} | {rate:.0f} | "
                  f"{rate / max(workers, 1):.0f} | {content_hash[:12]} |")


if __name__ == "__main__":
    main()
