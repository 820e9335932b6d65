"""How much a torch method's trained scores move with torch's thread count.

    python scripts/thread_sensitivity.py TRAIN_SPLIT TEST_SPLIT METHOD
        [--param METHOD.KEY=VALUE ...] [--n-train 1200] [--n-test 300] [--threads 1 2]

Trains METHOD (a registered name) on the first --n-train cutouts of TRAIN_SPLIT once per thread
count, each time in a fresh process with OMP_NUM_THREADS set (as a user would set it), scores the
first --n-test cutouts of TEST_SPLIT and prints the largest score change against the first count.
--param is read and checked as `bench run` reads it.
Every run has the same seed, so a change comes from the thread count alone: parallel sums round
in another order. The README's comparison of DeepLens with the committee (two epochs each on the
compare profile's splits) was measured with it:

    python scripts/thread_sensitivity.py WORKDIR/splits/metcalf-ground-v2-train-12000-* \\
        WORKDIR/splits/metcalf-ground-v2-test-3000-* deeplens --param deeplens.crop=64 \\
        --param deeplens.max_epochs=2 --param deeplens.step_every=1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from lensbench.bench.cli import _check_params, _parse_params


def train_and_score(train: str, test: str, method: str, params: dict, n_train: int,
                    n_test: int, out: str) -> None:
    """The child process: fit on the first n_train cutouts, save the scores of n_test."""
    import torch
    from lensbench.baselines.registry import resolve_method
    from lensbench.datasets.storage import load_split

    train_split, test_split = load_split(train), load_split(test)
    rows = np.arange(min(n_train, train_split.n))
    finder = resolve_method(method)(**{"random_state": 7, **params})
    finder.fit(train_split.images(rows), train_split.truth["label"][rows].astype(int))
    scores = finder.predict_score(test_split.images(np.arange(min(n_test, test_split.n))))
    np.save(out, scores)
    print(f"{method} at {torch.get_num_threads()} torch threads: scores saved", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train")
    parser.add_argument("test")
    parser.add_argument("method")
    parser.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="a method parameter, as `bench run --param` takes it")
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the scores file of one child run
    args = parser.parse_args(argv)
    params = _check_params(_parse_params(args.param), [args.method], "--param")
    params = params.get(args.method, {})
    if args.child:
        train_and_score(args.train, args.test, args.method, params, args.n_train, args.n_test,
                        args.child)
        return
    scores = {}
    with tempfile.TemporaryDirectory() as folder:
        for threads in args.threads:
            out = str(Path(folder) / f"scores-{threads}.npy")
            child = [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv),
                     "--child", out]
            subprocess.run(child, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads),
                                                   "LENSBENCH_PROGRESS": "0"})
            scores[threads] = np.load(out)
    base = args.threads[0]
    for threads in args.threads[1:]:
        change = np.abs(scores[threads] - scores[base])
        print(f"{args.method}: {threads} against {base} threads: largest score change "
              f"{change.max():.2g}, mean {change.mean():.2g} over {len(change)} test cutouts")


if __name__ == "__main__":
    main()
