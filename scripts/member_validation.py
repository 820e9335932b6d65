"""Each committee member's validation AUROC at its best epoch, from a suite's MLflow store.

    python scripts/member_validation.py WORKDIR TASK METHOD_ID [--suite real]

METHOD_ID as the runs table names it, e.g. "committee[lens_light=True,max_epochs=40,members=5,
patience=None]". The members' best epochs are those training kept (lowest validation loss,
deep/train.py); their validation AUROC is what the adoption rules of the real suite compare
(docs/real-lenses.md, "Why VIS still falls short"). Reads the latest finished run of that
method on that task.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from lensbench.bench.tracking import default_tracking_uri


def member_curves(client, run_id: str) -> dict[int, dict[str, list[float]]]:
    """member index -> {"val_loss": [...], "val_auroc": [...]}, in epoch order."""
    def curve(name):
        points = sorted(client.get_metric_history(run_id, f"epoch/{name}"), key=lambda m: m.step)
        return {m.step: m.value for m in points}

    member, loss, auroc = curve("member"), curve("val_loss"), curve("val_auroc")
    if not member:
        raise SystemExit(f"run {run_id}: no per-epoch curves (epoch/member) in the store")
    curves: dict[int, dict[str, list[float]]] = {}
    for step in sorted(member):
        entry = curves.setdefault(int(member[step]), {"val_loss": [], "val_auroc": []})
        entry["val_loss"].append(loss[step])
        entry["val_auroc"].append(auroc[step])
    return curves


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("task")
    parser.add_argument("method")
    parser.add_argument("--suite", default="real")
    args = parser.parse_args(argv)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=default_tracking_uri(args.workdir))
    experiment = client.get_experiment_by_name(f"lensbench-{args.suite}")
    if experiment is None:
        raise SystemExit(f"{args.workdir}: no experiment lensbench-{args.suite} in its store")
    escaped = args.method.replace("'", "''")
    runs = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"],
        filter_string=(f"attributes.run_name = '{escaped} @ {args.task}' and "
                       "tags.`lensbench.status` = 'ok'"))
    if not runs:
        raise SystemExit(f"{args.workdir}: no finished run of {args.method} on {args.task}")
    aurocs = []
    for m, curve in sorted(member_curves(client, runs[0].info.run_id).items()):
        best = int(np.argmin(curve["val_loss"]))
        aurocs.append(curve["val_auroc"][best])
        print(f"member {m + 1}: best epoch {best + 1} of {len(curve['val_loss'])}, "
              f"validation AUROC {aurocs[-1]:.4f}")
    print(f"{args.method} on {args.task}: {len(aurocs)} members, validation AUROC "
          f"{min(aurocs):.3f}-{max(aurocs):.3f}, mean {np.mean(aurocs):.4f}")


if __name__ == "__main__":
    main()
