"""What moves a lens-model regressor's theta_E on the real SLACS lenses: the real suite's edits
(lens light scaled or removed, arcs doubled, noise doubled, shifts, flux scalings, cosmic rays;
bench/suites/real_diagnosis.py: EDITS) applied to the modeling task's real cutouts.

    python scripts/modeling_edits.py WORKDIR [--method committee-regressor]

WORKDIR holds a modeling suite run (`bench run --suite modeling`): its real split and the
method's saved model. Printed: the published theta_E of each SLACS lens and the method's
theta_E (sigma) on every edit of its cutout. A diagnosis of the gap between the simulations and
the real lenses; nothing is chosen from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from lensbench.baselines.persistence import load_model
from lensbench.bench.results import read_results
from lensbench.bench.splits import ensure_real_lens_split
from lensbench.bench.suites.modeling import predict
from lensbench.bench.suites.real_diagnosis import EDITS, edited_cutouts, real_lens_parts
from lensbench.bench.tasks import MODELING_HSC


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--method", default="committee-regressor")
    args = parser.parse_args()
    [result] = [r for r in read_results(args.workdir / "results.jsonl")
                if r.method == args.method and r.status == "ok"
                and r.task == MODELING_HSC.name] or [None]
    if result is None or "model" not in result.artifacts:
        raise SystemExit(f"{args.workdir}: no saved {args.method} run of {MODELING_HSC.name}")
    method, _ = load_model(args.workdir / result.artifacts["model"])
    real = ensure_real_lens_split(MODELING_HSC, args.workdir)
    if result.split_hashes.get("real") != real.content_hash:
        raise SystemExit(f"{args.workdir}: the {args.method} run scored another real split")
    parts = real_lens_parts(MODELING_HSC.real_lenses, real)
    edits = edited_cutouts(real.images(parts.rows), parts)
    theta = list(method.targets_).index("theta_e")
    published = np.asarray(real.truth["theta_e"])[parts.rows]
    print(f"{args.method} of {MODELING_HSC.name} v{MODELING_HSC.version}: theta_E (sigma) on "
          "each edit of the real cutouts")
    print("| edit | " + " | ".join(f"{name} ({value:.2f}\")" for name, value
                                   in zip(parts.names, published, strict=True)) + " |")
    print("|---|" + "---|" * len(parts.names))
    for name, images in edits.items():
        mean, variance = predict(method, images)
        sigma = (np.sqrt(variance[:, theta]) if variance is not None
                 else np.full(len(mean), np.nan))
        print(f"| {name} | " + " | ".join(f"{m:.2f} ({s:.2f})" for m, s
                                          in zip(mean[:, theta], sigma, strict=True)) + " |")
    print()
    for name, what in EDITS.items():
        print(f"- {name}: {what}")


if __name__ == "__main__":
    main()
