"""Score a run's finder on its own test split and on an older version's (issue 22).

    python scripts/score_on_older_split.py WORKDIR TASK RUN_ID --version N --set FIELD=VALUE ...

The goal's AUROC condition compares a task's versions on one test set. Where the older version's
run is not at hand (another machine, another arithmetic: README, Reproducibility), this scores
the new run's model (``WORKDIR/runs/<suite>/TASK/RUN_ID/model.lbmodel``) on its own test split
and on the older version's test split, simulated here from the current config with the older
version's fields (``--set``, values as JSON) into ``WORKDIR/older-splits``. AUROC and TPR at FPR
1e-3 for both; the older version's own finder scored its split as that version's report says.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from cross_score import run_dir, split_metrics, test_split
from lensbench.baselines.persistence import load_model
from lensbench.bench.splits import ensure_split
from lensbench.bench.tasks import all_tasks


def field_value(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    if not name or not value:
        raise argparse.ArgumentTypeError(f"--set takes FIELD=VALUE, got {text!r}")
    return name, json.loads(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("task")
    parser.add_argument("run_id")
    parser.add_argument("--version", type=int, required=True, help="the older version")
    parser.add_argument("--set", type=field_value, action="append", default=[],
                        dest="fields", help="a SimConfig field of the older version")
    args = parser.parse_args()
    task = all_tasks()[args.task]
    older = dataclasses.replace(task, version=args.version,
                                config=task.config.replace(**dict(args.fields)))
    run = run_dir(args.workdir, task.name, args.run_id)
    model, _ = load_model(run / "model.lbmodel")
    splits = {f"v{task.version}": test_split(args.workdir, task, run),
              f"v{args.version}": ensure_split(older, "test", "default",
                                               args.workdir / "older-splits")}
    for version, split in splits.items():
        area, tpr = split_metrics(model, split)
        print(f"{args.run_id} of {task.name} v{task.version} on the {version} test split "
              f"({split.content_hash[:12]}): AUROC {area:.4f}, TPR at FPR 1e-3 {tpr:.3f}",
              flush=True)


if __name__ == "__main__":
    main()
