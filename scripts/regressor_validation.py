"""One committee-regressor member per variant, scored on validation lenses of the modeling task's
TRAINING split (its test split and the real lenses are never read).

    python scripts/regressor_validation.py WORKDIR [--variant lens_light=True ...] [--seed 0]
        [--max-epochs 50]

WORKDIR holds the modeling suite's splits (`bench run --suite modeling` made them; the
training split of --profile, simulated there if it is missing). Each variant
(the suite's committee-regressor with members=1 and the given parameters; "default" with none)
is fitted on the whole training split from the same --seed, so every variant holds out the same
10% as its validation lenses and starts its net from the same weights. Printed per variant: at
the best epoch (chosen on the validation loss, as the suite chooses it), the validation theta_E
68% half width and RMSE and the Gaussian NLL over all parameters, and the fitting time.

Measured on /tmp/mod-v3-wd (modeling-hsc v3 of reports/modeling.md; seed 0; 1,200 validation
lenses) with the code of the commit that added this script: default best epoch 49, theta_E half
width 0.1335", RMSE 0.2091", NLL -1.741 (7.5 min); lens_light=true 0.1363", 0.2093", -1.688
(7.9 min): not adopted (the rule, in README's "Lens modeling", asked for 0.1285" or less).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from lensbench.baselines.contract import LENS_MODEL_TARGETS
from lensbench.bench.cli import parse_value
from lensbench.bench.splits import ensure_split
from lensbench.bench.suites.modeling import targets_of, task_info
from lensbench.bench.tasks import MODELING_HSC
from lensbench.deep.regression import CommitteeRegressor


def parse_variant(text: str) -> dict:
    """"name=value,name=value" -> params, each value read as `bench run --param` reads it."""
    return {name: parse_value(value) for name, _, value in
            (item.partition("=") for item in filter(None, text.split(",")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--variant", action="append", default=[],
                        help="parameters of one variant, e.g. lens_light=true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=50)
    parser.add_argument("--profile", default="default", help="the suite profile of the split")
    args = parser.parse_args()
    split = ensure_split(MODELING_HSC, "train", args.profile, args.workdir)
    X, Y = split.images(np.arange(split.n)), targets_of(split, LENS_MODEL_TARGETS)
    info = task_info(MODELING_HSC, split, LENS_MODEL_TARGETS)
    print(f"{split.path.name}: {split.n} lenses; one member per variant, seed {args.seed}, "
          f"{args.max_epochs} epochs; validation: the regressor's own held-out 10%")
    for text in ["", *args.variant]:
        params = parse_variant(text)
        method = CommitteeRegressor(members=1, max_epochs=args.max_epochs,
                                    random_state=args.seed, **params)
        start = time.perf_counter()
        method.fit(X, Y, info=info)
        seconds = time.perf_counter() - start
        history, best = method.history_, method.best_epochs_[0]
        figures = {key: history[f"member0/val_{key}"][best]
                   for key in ("theta_e/half_width_68", "theta_e/rmse", "nll")}
        print(f"{text or 'default'}: best epoch {best + 1}; validation theta_E half width "
              f"{figures['theta_e/half_width_68']:.4f}\", RMSE {figures['theta_e/rmse']:.4f}\", "
              f"NLL {figures['nll']:.3f}; fitted in {seconds / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
