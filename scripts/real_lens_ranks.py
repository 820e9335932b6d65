"""Where each real lens's score falls, without a threshold: the simulated test set's false-positive
rate at that score, and how many real non-lenses score higher.

    python scripts/real_lens_ranks.py WORKDIR TASK RUN_ID [RUN_ID ...]

RUN_ID as ``bench report`` names runs (e.g. "committee[lens_light=True,max_epochs=40,members=5,
patience=None]"). A finder whose threshold at FPR 1e-3 misses a real lens may still rank it above
nearly every simulated non-lens; two finders compared at their own thresholds are compared here
on one scale.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from lensbench.bench.runner import find_run_folder
from lensbench.bench.tasks import all_tasks
from probe_common import scored_real_split


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("task", choices=[name for name, task in all_tasks().items()
                                         if task.real_lenses])
    parser.add_argument("run_ids", nargs="+")
    args = parser.parse_args(argv)
    task = all_tasks()[args.task]
    for run_id in args.run_ids:
        run = find_run_folder(args.workdir, args.task, run_id)
        if run is None:
            raise SystemExit(f"{args.workdir}/runs/*/{args.task}/{run_id}: no such run")
        with np.load(run / "scores.npz") as test, np.load(run / "real_scores.npz") as saved:
            simulated_nonlenses = test["scores"][test["labels"] == 0]
            real_scores, threshold = saved["scores"], float(saved["threshold"])
            real = scored_real_split(args.workdir, task, run, dict(saved))
        is_lens = real.truth["label"] == 1
        lenses, nonlenses = real_scores[is_lens], real_scores[~is_lens]
        print(f"{run_id} on {args.task}: threshold at simulated FPR 1e-3 {threshold:.4f}; "
              f"{len(lenses)} real lenses, {len(nonlenses)} real non-lenses "
              f"(highest {nonlenses.max():.3f})")
        for score in lenses:
            fpr = float(np.mean(simulated_nonlenses >= score))
            above = int(np.sum(nonlenses >= score))
            print(f"  score {score:.4f}: simulated FPR {fpr:.4f}, real non-lenses above {above}")


if __name__ == "__main__":
    main()
