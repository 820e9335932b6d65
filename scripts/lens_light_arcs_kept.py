"""How much of the arcs does the committee's lens-light subtraction keep? (issue 22)

    python scripts/lens_light_arcs_kept.py TASK [--n 1000] [--profile P] [--noise]

The committee's ``lens_light=True`` subtracts the arc finder's model of the lens
(``baselines.arcfinder.elliptical_model``: the median of each elliptical annulus one pixel wide,
interpolated in radius; in several bands the reddest band's model scaled to each band). An arc
that covers more than half of the annuli it crosses is part of their medians, so the model takes
it for lens light and the subtraction removes it with the lens.

Simulates ``--n`` noise-free lenses of TASK twice with one seed (with their sources, and with the
sources made invisible), so that the arcs are known exactly; subtracts the lens light from both
and prints, binned by how much of the Einstein ring the arcs cover (the share of the annulus
0.8-1.2 theta_E where the arcs exceed a tenth of their maximum there), the share of the arc flux
within 0.5-1.8 theta_E that the subtraction keeps (subtracted lenses minus subtracted lens light,
over the arcs) in each band. ``--profile sersic-clipped``: the annuli that arcs raised above a
Sersic fit replaced by the fit (``arcfinder.sersic_clipped_profile``). ``--noise``: the same
lenses with the task's noise (one seed, so lens and lens light share their noise), the arcs still
the noise-free difference. (The real lenses cannot be measured so: the arc split that gives their
arcs, ``known_lenses.split_arcs``, is itself a median of elliptical annuli.)
"""

from __future__ import annotations

import argparse

import numpy as np
from lensbench.baselines.arcfinder import PROFILES
from lensbench.baselines.lenslight import subtract_lens_light
from lensbench.bench.tasks import all_tasks
from lensbench.datasets.simulate import Simulator

SEED = 23
COVER_BINS = ((0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 1.01))


def ring_cover(arcs: np.ndarray, theta_e: float, radius: np.ndarray) -> float:
    """Share of the annulus 0.8-1.2 theta_E where ``arcs`` (H, W), summed over bands, exceed a
    tenth of their maximum there."""
    ring = (radius > 0.8 * theta_e) & (radius < 1.2 * theta_e)
    values = arcs.sum(axis=0)[ring]
    return float(np.mean(values > 0.1 * values.max())) if values.max() > 0 else 0.0


def kept_share(with_arcs: np.ndarray, light: np.ndarray, arcs: np.ndarray, theta_e: float,
               radius: np.ndarray, bands, pixel_scale: float, profile: str) -> np.ndarray:
    """(B,): the share of the arc flux within 0.5-1.8 theta_E that the lens-light subtraction
    keeps in each band."""
    kept = (subtract_lens_light(with_arcs[None], bands=bands, pixel_scale=pixel_scale,
                                profile=profile)
            - subtract_lens_light(light[None], bands=bands, pixel_scale=pixel_scale,
                                  profile=profile))[0]
    annulus = (radius > 0.5 * theta_e) & (radius < 1.8 * theta_e)
    total = arcs[:, annulus].sum(axis=1)
    return kept[:, annulus].sum(axis=1) / np.where(total > 0, total, np.nan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--profile", choices=PROFILES, default="median")
    parser.add_argument("--noise", action="store_true")
    args = parser.parse_args()
    task = all_tasks()[args.task]
    config = task.config.replace(lens_fraction=1.0, labelling="metcalf", noise=False,
                                 field_density=0.0, lens_companion_fraction=0.0)
    with_arcs, truth = Simulator(config).simulate(args.n, seed=SEED)
    light, _ = Simulator(config.replace(source_mag_range=(40.0, 40.1))).simulate(args.n,
                                                                                  seed=SEED)
    with_arcs, light = with_arcs.astype(np.float64), light.astype(np.float64)
    arcs = with_arcs - light
    if args.noise:
        noisy = config.replace(noise=True)
        with_arcs = Simulator(noisy).simulate(args.n, seed=SEED)[0].astype(np.float64)
        light = Simulator(noisy.replace(source_mag_range=(40.0, 40.1))).simulate(
            args.n, seed=SEED)[0].astype(np.float64)
    bands = config.band_names
    scale = Simulator(config).renderer.pixel_scale
    size = with_arcs.shape[-1]
    radius = np.hypot(*(np.mgrid[:size, :size] - (size - 1) / 2)) * scale
    theta_e = np.asarray(truth["theta_e"], dtype=np.float64)
    cover = np.array([ring_cover(arcs[i], theta_e[i], radius) for i in range(args.n)])
    kept = np.stack([kept_share(with_arcs[i], light[i], arcs[i], theta_e[i], radius, bands, scale,
                                args.profile) for i in range(args.n)])
    print(f"{task.name}: {args.n} simulated lenses, {'with' if args.noise else 'without'} noise; "
          f"share of the arc flux within 0.5-1.8 theta_E kept by the lens-light subtraction "
          f"({args.profile} profile; median, 25th-75th percentile)")
    print("| ring cover | lenses | " + " | ".join(bands) + " |")
    print("|---" * (len(bands) + 2) + "|")
    for low, high in COVER_BINS:
        rows = (cover >= low) & (cover < high)
        cells = [f"{np.nanmedian(kept[rows, b]):.2f} ({np.nanpercentile(kept[rows, b], 25):.2f}-"
                 f"{np.nanpercentile(kept[rows, b], 75):.2f})" if rows.any() else "-"
                 for b in range(len(bands))]
        print(f"| {low:.1f}-{min(high, 1.0):.1f} | {int(rows.sum())} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
