"""Score the finders of two runs of a task on each other's test split (issue 22).

    python scripts/cross_score.py WORKDIR_A WORKDIR_B TASK RUN_ID [RUN_ID ...]

Two versions of a task differ in their training set and their test split alike (real-vis v3:
white noise; v4: PSF-correlated noise). To choose between them on one test set, each run's model
(``WORKDIR/runs/<suite>/TASK/RUN_ID/model.lbmodel``) scores the test split of its own run and the
other's (the split whose content hash the run's ``scores.npz`` names); AUROC and TPR at FPR 1e-3
are printed for the four pairs of each run id. Simulated test splits only: nothing real.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from lensbench.baselines.persistence import load_model
from lensbench.bench.metrics import auroc, tpr_at_fpr
from lensbench.bench.runner import find_run_folder
from lensbench.bench.suites.real_diagnosis import run_test_split
from lensbench.bench.tasks import all_tasks
from lensbench.datasets.storage import Split

BATCH = 2000


def run_dir(workdir: Path, task: str, run_id: str) -> Path:
    run = find_run_folder(workdir, task, run_id)
    if run is None:
        raise SystemExit(f"{workdir}/runs/*/{task}/{run_id}: no such run")
    return run


def test_split(workdir: Path, task, run: Path) -> Split:
    """The test split a run was scored on, found in its workdir by content hash."""
    split = run_test_split(workdir, task, run)
    if split is None:
        raise SystemExit(f"{workdir}/splits: no test split with the content hash that "
                         f"{run}/scores.npz names")
    return split


def split_metrics(model, split: Split) -> tuple[float, float]:
    """AUROC and TPR at FPR 1e-3 of ``model`` on ``split``, scored BATCH cutouts at a time."""
    scores = np.concatenate([
        np.asarray(model.predict_score(split.images(np.arange(lo, min(split.n, lo + BATCH)))))
        for lo in range(0, split.n, BATCH)])
    labels = split.truth["label"]
    return auroc(labels, scores), tpr_at_fpr(labels, scores, 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir_a", type=Path)
    parser.add_argument("workdir_b", type=Path)
    parser.add_argument("task")
    parser.add_argument("run_ids", nargs="+")
    args = parser.parse_args()
    task = all_tasks()[args.task]
    workdirs = (args.workdir_a, args.workdir_b)
    for run_id in args.run_ids:
        runs = [run_dir(workdir, task.name, run_id) for workdir in workdirs]
        splits = [test_split(workdir, task, run) for workdir, run in zip(workdirs, runs,
                                                                          strict=True)]
        for run, trained_in in zip(runs, workdirs, strict=True):
            model, _ = load_model(run / "model.lbmodel")
            for split, tested_in in zip(splits, workdirs, strict=True):
                area, tpr = split_metrics(model, split)
                print(f"{run_id} trained in {trained_in} on the test split of {tested_in} "
                      f"({split.content_hash[:12]}): AUROC {area:.4f}, TPR at FPR 1e-3 "
                      f"{tpr:.3f}", flush=True)


if __name__ == "__main__":
    main()
