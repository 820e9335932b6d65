"""What the simulated lens population says about each SLACS lens's theta_E, from its light alone.

    python scripts/slacs_theta_e_prior.py WORKDIR [--dmag 0.5] [--dz 0.1]

WORKDIR holds the modeling suite's splits (`bench run --suite modeling` made them). For each SLACS
lens of the real split, the training lenses whose lens light is within --dmag of the lens's i
magnitude (the real split's total i: lens light and arcs, the arcs a few per cent of it) and
whose lens redshift is within --dz of its z_l: how many, and the median and 16-84th percentiles
of their theta_E. A network that learnt only the population's link between a lens's light and
its mass would predict about that median; one that reads the arcs, the published radius. Reads
the training split and the real split's truth only (no test split, no method's output).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from lensbench.bench.splits import version_prefix
from lensbench.bench.tasks import MODELING_HSC
from lensbench.datasets.known_lenses import load_slacs
from lensbench.datasets.storage import load_split


def only_split(workdir: Path, role: str):
    found = sorted((workdir / "splits").glob(f"{version_prefix(MODELING_HSC)}{role}-*"))
    if len(found) != 1:
        raise SystemExit(f"{workdir}/splits: expected one {version_prefix(MODELING_HSC)}{role}-* "
                         f"folder, found {len(found)}: run `bench run --suite modeling` there")
    return load_split(found[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--dmag", type=float, default=0.5, help="i magnitude half window")
    parser.add_argument("--dz", type=float, default=0.1, help="lens redshift half window")
    args = parser.parse_args()
    train = {k: np.asarray(v) for k, v in only_split(args.workdir, "train").truth.items()}
    real = {k: np.asarray(v) for k, v in only_split(args.workdir, "real").truth.items()}
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


if __name__ == "__main__":
    main()
