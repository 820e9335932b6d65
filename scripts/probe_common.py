"""What the probe scripts share: a fitted run of a suite's workdir and the real split it scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lensbench.baselines.persistence import load_model
from lensbench.bench.runner import find_run_folder
from lensbench.bench.splits import ensure_real_lens_split


def fitted_run(workdir: Path, task, run_id: str) -> tuple[Path, object, dict]:
    """(artefact folder, fitted method, contents of its real_scores.npz) of the run ``run_id``
    of ``task`` in ``workdir``; exits naming the folder when there is no such run."""
    run = find_run_folder(workdir, task.name, run_id)
    if run is None:
        raise SystemExit(f"{workdir}/runs/*/{task.name}/{run_id}: no such run")
    method, _ = load_model(run / "model.lbmodel")
    with np.load(run / "real_scores.npz") as data:
        saved = dict(data)
    return run, method, saved


def scored_real_split(workdir: Path, task, run: Path, saved: dict):
    """The task's real split in ``workdir``, checked to be the one the run scored (``saved``:
    its real_scores.npz); exits when it is another."""
    real = ensure_real_lens_split(task, workdir)
    if str(saved["real_hash"]) != real.content_hash:
        raise SystemExit(f"{run}/real_scores.npz: made from another real split")
    return real
