"""Each committee member's validation AUROC at its best epoch, from a suite's MLflow store.

    python scripts/member_validation.py WORKDIR TASK METHOD_ID [--suite real]

METHOD_ID as the runs table names it, e.g. "committee[lens_light=True,max_epochs=40,members=5,
patience=None]". The members' best epochs are those training kept (lowest validation loss,
deep/train.py); their validation AUROC is what the adoption rules of the real suite compare
(docs/real-lenses.md, "Why VIS still falls short"). Reads the latest finished run of that
method on that task.

    python scripts/member_validation.py WORKDIR TASK METHOD_ID --recompute

scores the run's saved model (model.lbmodel) on the validation part of its training split
instead, one member at a time without test-time augmentation, as training scored it: for a run
whose curves are not in the store (tracking off, or a record brought in by ``--resume``). On a
run whose curves are there it gives the same figures to the printed 4 decimals (checked on the
real-vis keep-image committee of 2026-12-07). It also prints the committee's TPR at FPR 1e-2 on
that validation part (its members combined as the model combines them, without test-time
augmentation; temperature scaling does not reorder): the low-FPR end, where a finder is used
and which the members' AUROC does not see (1,199 validation non-lenses in real-vis: 1e-2 is
the lowest FPR with a dozen of them above the threshold), and the same by Einstein radius.
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


def stored_aurocs(workdir: Path, suite: str, task: str, method_id: str) -> list[float]:
    """Each member's validation AUROC at its best epoch, from the store's per-epoch curves of
    the latest finished run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=default_tracking_uri(workdir))
    experiment = client.get_experiment_by_name(f"lensbench-{suite}")
    if experiment is None:
        raise SystemExit(f"{workdir}: no experiment lensbench-{suite} in its store")
    escaped = method_id.replace("'", "''")
    runs = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"],
        filter_string=(f"attributes.run_name = '{escaped} @ {task}' and "
                       "tags.`lensbench.status` = 'ok'"))
    if not runs:
        raise SystemExit(f"{workdir}: no finished run of {method_id} on {task}")
    aurocs = []
    for m, curve in sorted(member_curves(client, runs[0].info.run_id).items()):
        best = int(np.argmin(curve["val_loss"]))
        aurocs.append(curve["val_auroc"][best])
        print(f"member {m + 1}: best epoch {best + 1} of {len(curve['val_loss'])}, "
              f"validation AUROC {aurocs[-1]:.4f}")
    return aurocs


LOW_FPR = 1e-2  # the committee's validation TPR is printed at this FPR
THETA_E_BINS = ((0.5, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 3.0))  # arcsec; the tasks' 0.5-3"


def recomputed_aurocs(workdir: Path, suite: str, task: str, method_id: str) -> list[float]:
    """Each member's validation AUROC, scored anew from the latest finished run's model file
    and its training split (found under ``WORKDIR/splits`` by its content hash); prints the
    committee's validation TPR at FPR ``LOW_FPR``."""
    from lensbench.baselines.persistence import load_model
    from lensbench.bench.metrics import tpr_at_fpr
    from lensbench.bench.results import read_results
    from lensbench.bench.runner import RESULTS_FILE
    from lensbench.bench.suites.real_diagnosis import find_split
    from lensbench.bench.tasks import find_task, get_suite
    from lensbench.deep.committee import combine_members
    from lensbench.deep.train import stratified_split
    from sklearn.metrics import roc_auc_score

    runs = [r for r in read_results(workdir / RESULTS_FILE) if r.task == task
            and r.run_id == method_id and r.status == "ok" and r.artifacts.get("model")]
    if not runs:
        raise SystemExit(f"{workdir / RESULTS_FILE}: no finished run of {method_id} on {task} "
                         "with a saved model")
    run = runs[-1]
    split = find_split(workdir, find_task(get_suite(suite), task), "train",
                       run.split_hashes["train"])
    if split is None:
        raise SystemExit(f"{workdir / 'splits'}: no {task} training split with content hash "
                         f"{run.split_hashes['train'][:12]} (the run's)")
    method, _ = load_model(workdir / run.artifacts["model"])
    labels = np.asarray(split.truth["label"], np.float32)
    _, val_idx = stratified_split(labels, float(method.validation_fraction),
                                  int(method.random_state))
    val_idx = np.sort(val_idx)
    method.tta = "none"  # training's validation passes are plain
    logits = method.member_logits(method.preprocessor_.normalise(split.images(val_idx)))
    committee, y = combine_members(logits, method.combine), labels[val_idx]
    print(f"committee ({len(logits)} members, combine={method.combine}, no TTA): validation "
          f"TPR at FPR {LOW_FPR:g} {tpr_at_fpr(y, committee, LOW_FPR):.3f} "
          f"({int((y == 0).sum())} validation non-lenses)")
    # the same by Einstein radius (each bin's lenses against all non-lenses, so the threshold
    # is the overall one): a net whose view is small in arcsec misses the wide rings
    theta_e = np.asarray(split.truth["theta_e"])[val_idx]
    for low, high in THETA_E_BINS:
        lenses = (y == 1) & (theta_e >= low) & (theta_e < high)
        keep = lenses | (y == 0)
        print(f"  theta_E {low}-{high}\": {int(lenses.sum())} lenses, TPR "
              f"{tpr_at_fpr(y[keep], committee[keep], LOW_FPR):.2f}")
    return [float(roc_auc_score(labels[val_idx], z)) for z in logits]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("task")
    parser.add_argument("method")
    parser.add_argument("--suite", default="real")
    parser.add_argument("--recompute", action="store_true",
                        help="score the saved model on the validation split instead of reading "
                             "the store's curves")
    args = parser.parse_args(argv)
    if args.recompute:
        aurocs = recomputed_aurocs(args.workdir, args.suite, args.task, args.method)
        for m, auroc in enumerate(aurocs):
            print(f"member {m + 1}: validation AUROC {auroc:.4f} (its kept, best epoch)")
    else:
        aurocs = stored_aurocs(args.workdir, args.suite, args.task, args.method)
    print(f"{args.method} on {args.task}: {len(aurocs)} members, validation AUROC "
          f"{min(aurocs):.3f}-{max(aurocs):.3f}, mean {np.mean(aurocs):.4f}")


if __name__ == "__main__":
    main()
