"""What the simulated lens population says about each SLACS lens's theta_E, from its light alone.

    python scripts/slacs_theta_e_prior.py WORKDIR [--dmag 0.5] [--dz 0.1] [--lookalikes]

WORKDIR holds the modeling suite's splits (`bench run --suite modeling` made them; those of
--profile, simulated there if missing). For each SLACS
lens of the real split, the training lenses whose lens light is within --dmag of the lens's i
magnitude (the real split's total i: lens light and arcs, the arcs a few per cent of it) and
whose lens redshift is within --dz of its z_l: how many, and the median and 16-84th percentiles
of their theta_E. A network that learnt only the population's link between a lens's light and
its mass would predict about that median; one that reads the arcs, the published radius. Reads
the training split and the real split's truth only (no test split, no method's output).

--lookalikes: also the simulated test lenses like each SLACS lens (the same windows in i and
z_l, and theta_E within --dtheta of the published radius) and each network's and fitter's
median theta_E error on them, from the suite's saved predictions (results.jsonl): whether the
methods are as low on simulated look-alikes as on the real lenses (then the bias is the
method's, on such lenses) or not (then it is the real images'). A diagnosis: nothing is chosen
from it.

Measured on /tmp/mod-v3-wd (modeling-hsc v3 of reports/modeling.md) with the code of the commit
that added --lookalikes: training theta_E medians 1.14-1.53" beside published 0.96-1.50"; the
committee's median error on the 15-70 look-alikes of each lens +0.06, -0.12, +0.09, +0.13,
+0.09" against -0.40, -0.41, -0.09, -0.15, -0.16" on the real lenses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from lensbench.bench.splits import ensure_real_lens_split, ensure_split
from lensbench.bench.tasks import MODELING_HSC
from lensbench.datasets.known_lenses import load_slacs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--dmag", type=float, default=0.5, help="i magnitude half window")
    parser.add_argument("--dz", type=float, default=0.1, help="lens redshift half window")
    parser.add_argument("--lookalikes", action="store_true",
                        help="also the methods' errors on simulated test look-alikes")
    parser.add_argument("--dtheta", type=float, default=0.2,
                        help="theta_E half window of a look-alike (arcsec)")
    parser.add_argument("--profile", default="default", help="the suite profile of the splits")
    args = parser.parse_args()
    train = {k: np.asarray(v) for k, v in
             ensure_split(MODELING_HSC, "train", args.profile, args.workdir).truth.items()}
    real = {k: np.asarray(v) for k, v in
            ensure_real_lens_split(MODELING_HSC, args.workdir).truth.items()}
    lenses = load_slacs("198x198")
    print(f"{MODELING_HSC.name} v{MODELING_HSC.version}: training lenses within {args.dmag} mag "
          f"in i and {args.dz} in z_l of each SLACS lens")
    print("| lens | published theta_E | i | z_l | training lenses | their theta_E median "
          "(16-84%) |")
    print("|---|---|---|---|---|---|")
    for row in np.flatnonzero(real["label"] == 1):
        mag, z_lens = real["mag_i"][row], real["z_lens"][row]
        near = ((np.abs(train["lens_mag_i"] - mag) < args.dmag)
                & (np.abs(train["z_lens"] - z_lens) < args.dz))
        theta = train["theta_e"][near]
        spread = (f"{np.median(theta):.2f} ({np.percentile(theta, 16):.2f}-"
                  f"{np.percentile(theta, 84):.2f})" if near.sum() >= 3 else "too few")
        name = lenses[int(real["object_index"][row])].name
        print(f"| {name} | {real['theta_e'][row]:.2f} | {mag:.2f} | {z_lens:.2f} | "
              f"{int(near.sum())} | {spread} |")
    if args.lookalikes:
        lookalike_errors(args, real, lenses)


def lookalike_errors(args, real: dict, lenses) -> None:
    """Per SLACS lens: the test look-alikes and each method's median theta_E error on them,
    beside its error on the real lens."""
    from lensbench.bench.results import read_results

    test = {k: np.asarray(v) for k, v in
            ensure_split(MODELING_HSC, "test", args.profile, args.workdir).truth.items()}
    runs = {}
    for result in read_results(args.workdir / "results.jsonl"):
        if result.status != "ok" or result.method == "prior-median":
            continue
        saved = result.load_artifact("predictions", args.workdir, ("targets",))
        if saved is None:
            continue
        j = list(saved["targets"]).index("theta_e")
        runs[result.run_id] = (saved["rows"], saved["pred"][:, j] - saved["true"][:, j],
                               saved["real_pred"][:, j] - saved["real_published_theta_e"],
                               list(saved["real_object_index"]))
    print(f"\nSimulated test look-alikes (within {args.dmag} mag in i, {args.dz} in z_l and "
          f"{args.dtheta}\" in theta_E): each method's median theta_E error on them (their "
          "number), and on the real lens")
    print("| lens | " + " | ".join(f"`{name}`" for name in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for row in np.flatnonzero(real["label"] == 1):
        index = int(real["object_index"][row])
        like = ((np.abs(test["lens_mag_i"] - real["mag_i"][row]) < args.dmag)
                & (np.abs(test["z_lens"] - real["z_lens"][row]) < args.dz)
                & (np.abs(test["theta_e"] - real["theta_e"][row]) < args.dtheta))
        cells = []
        for rows, errors, real_errors, object_index in runs.values():
            mine = errors[like[rows]]
            on_real = real_errors[object_index.index(index)]
            cells.append((f"{np.median(mine):+.2f} ({mine.size})" if mine.size else "none")
                         + f"; real {on_real:+.2f}")
        print(f"| {lenses[index].name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
