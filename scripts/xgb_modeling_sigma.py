"""xgboost-modeling's uncertainty: one sigma per parameter against a per-lens sigma, on
validation lenses of the modeling task's TRAINING split (its test split is never read).

    python scripts/xgb_modeling_sigma.py WORKDIR [--n-jobs 2] [--seed 7]

WORKDIR holds the modeling suite's splits (`bench run --suite modeling` made them). The training
split's lenses are cut by --seed into 80% that fit the method (which holds out its own 15% for
early stopping and its sigmas) and 20% on which each uncertainty is scored: coverage of the 68%
and 95% intervals per parameter and the mean Gaussian NLL over parameters (lower is better).
The point predictions are the same for every variant (one tree ensemble); only the sigmas differ.

Measured on /tmp/mod-wd (modeling-hsc v2 of reports/modeling.md; seed 7; 2,400 validation lenses)
with the code of the commit that added this script: constant NLL -1.321, 95% coverage 0.86-0.95;
per-lens (200 trees, depth 3: the default) -1.663, 0.92-0.94, 68% coverage 0.65-0.72 for both;
100 trees depth 2 -1.652; 400 trees depth 3 -1.651; 200 trees depth 5 -1.668 (no firmer than
depth 3's, so the smaller model stays).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from lensbench.baselines.contract import LENS_MODEL_TARGETS
from lensbench.baselines.features import all_features
from lensbench.baselines.modeling import GradientBoostingModeling, gaussian_nll
from lensbench.bench.splits import version_prefix
from lensbench.bench.suites.modeling import targets_of, task_info
from lensbench.bench.tasks import MODELING_HSC
from lensbench.datasets.storage import load_split

VARIANTS = {"constant": {"uncertainty": "constant"},
            "per-lens 100 trees depth 2": {"sigma_trees": 100, "sigma_depth": 2},
            "per-lens 200 trees depth 3": {"sigma_trees": 200, "sigma_depth": 3},
            "per-lens 400 trees depth 3": {"sigma_trees": 400, "sigma_depth": 3},
            "per-lens 200 trees depth 5": {"sigma_trees": 200, "sigma_depth": 5}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    name = f"{version_prefix(MODELING_HSC)}train-"
    found = sorted((args.workdir / "splits").glob(name + "*"))
    if not found:
        raise SystemExit(f"{args.workdir / 'splits'}: no {name}* split")
    split = load_split(found[-1])
    info = task_info(MODELING_HSC, split, LENS_MODEL_TARGETS)
    Y = targets_of(split, LENS_MODEL_TARGETS)
    start = time.perf_counter()
    features = all_features(split.images(), info.pixel_scale, tuple(info.bands))[0]
    print(f"{split.path.name}: {split.n} lenses, features in {time.perf_counter() - start:.0f} s")
    order = np.random.default_rng(args.seed).permutation(split.n)
    n_fit = int(0.8 * split.n)
    fit_rows, val_rows = order[:n_fit], order[n_fit:]
    method = GradientBoostingModeling(uncertainty="constant", n_jobs=args.n_jobs)
    method.fit_features(features[fit_rows], Y[fit_rows], info)
    pred = method.mean_of_features(features[val_rows])
    error = pred - Y[val_rows]
    held_out = method.held_out_rows(n_fit)[0]
    held_out_residual = (method.mean_of_features(features[fit_rows][held_out])
                         - Y[fit_rows][held_out])
    print(f"fitted on {n_fit - len(held_out)}, sigmas on {len(held_out)}, scored on "
          f"{len(val_rows)} validation lenses ({time.perf_counter() - start:.0f} s)\n")
    names = " ".join(f"{t:>11}" for t in LENS_MODEL_TARGETS)
    print(f"{'68% / 95% coverage':<28}{names}   NLL   median sigma / constant")
    for label, params in VARIANTS.items():
        method.set_params(**{"uncertainty": "per-lens", **params})
        method.fit_uncertainty(features[fit_rows][held_out], held_out_residual)
        variance = method.variance_of_features(features[val_rows])
        sigma = np.sqrt(variance)
        c68 = (np.abs(error) <= sigma).mean(axis=0)
        c95 = (np.abs(error) <= 1.96 * sigma).mean(axis=0)
        cells = " ".join(f"{a:.2f} / {b:.2f}" for a, b in zip(c68, c95, strict=True))
        if label == "constant":
            constant_sigma = sigma[0]
        ratio = np.median(sigma / constant_sigma, axis=0)
        print(f"{label:<28}{cells}  {gaussian_nll(pred, Y[val_rows], variance):+.3f}  "
              + " ".join(f"{r:.2f}" for r in ratio))


if __name__ == "__main__":
    main()
