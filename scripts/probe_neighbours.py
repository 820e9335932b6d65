"""How a fitted lens finder responds to one field galaxy added beside simulated lenses (issue 22).

    python scripts/probe_neighbours.py WORKDIR TASK RUN_ID [--n 300]

loads the model ``WORKDIR/runs/<suite>/TASK/RUN_ID/model.lbmodel`` and the task's test split from
WORKDIR, takes ``--n`` test lenses and ``--n`` test non-lenses, and prints the share above the
run's FPR-1e-3 threshold (from its real_scores.npz) as they are and with one galaxy added (Sersic
n = 2, r_eff 0.4", q 0.7, late-type colours, the survey PSF) at a few magnitudes (reference band)
and distances from the centre, each at a random angle. Noise-free addition: the galaxy's own
Poisson noise is left out (it is small beside the sky at these magnitudes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from lensbench.bench.suites.real_diagnosis import run_test_split
from lensbench.bench.tasks import all_tasks
from lensbench.datasets.config import DISK_COLOURS
from lensbench.datasets.psf import psf_kernel
from lensbench.datasets.surveys import get_survey
from probe_common import fitted_run
from scipy.signal import fftconvolve
from scipy.special import gammaincinv

MAGNITUDES = (20.0, 21.5, 23.0)
DISTANCES = (2.5, 4.0)  # arcsec


def neighbour(size: int, pixel_scale: float, kernel: np.ndarray, mag: float, x: float, y: float
              ) -> np.ndarray:
    """A PSF-convolved Sersic galaxy (n 2, r_eff 0.4", q 0.7) of AB magnitude ``mag`` centred
    (x, y) arcsec from the stamp centre, in nanomaggies per pixel."""
    n, r_eff, q = 2.0, 0.4, 0.7
    yy, xx = (np.mgrid[:size, :size] - (size - 1) / 2) * pixel_scale
    radius = np.sqrt(q * (xx - x) ** 2 + (yy - y) ** 2 / q)
    image = np.exp(-gammaincinv(2 * n, 0.5) * (radius / r_eff) ** (1 / n))
    image = fftconvolve(image / image.sum(), kernel, mode="same")
    return image * 10 ** (-0.4 * (mag - 22.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("task")
    parser.add_argument("run_id")
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    task = all_tasks()[args.task]
    run, method, saved = fitted_run(args.workdir, task, args.run_id)
    threshold = float(saved["threshold"])
    split = run_test_split(args.workdir, task, run)
    if split is None:
        raise SystemExit(f"{args.workdir}/splits: no test split with the content hash that "
                         f"{run}/scores.npz names")
    rng = np.random.default_rng(0)
    labels = split.truth["label"].astype(bool)
    rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(want == labels), args.n,
                                              replace=False) for want in (True, False)]))
    images, lens = split.images(rows), labels[rows]
    config = task.config
    survey = get_survey(config.survey).select(config.band_names)
    kernels = [psf_kernel(survey.psf_model, band.psf_fwhm, band.pixel_scale, survey.moffat_beta)
               for band in survey.bands]
    colours = [DISK_COLOURS[b] - DISK_COLOURS[config.reference] for b in config.band_names]

    def share_above(batch):
        scores = np.asarray(method.predict_score(batch))
        return np.mean(scores[lens] > threshold), np.mean(scores[~lens] > threshold)

    tpr, fpr = share_above(images)
    print(f"{task.name} {args.run_id}, threshold {threshold:.4g} (FPR 1e-3 on the test split), "
          f"{args.n} lenses and {args.n} non-lenses")
    print(f"as simulated: lenses above {tpr:.3f}, non-lenses above {fpr:.3f}")
    for mag in MAGNITUDES:
        for distance in DISTANCES:
            angles = rng.uniform(0, 2 * np.pi, len(images))
            edited = images.copy()
            for i, angle in enumerate(angles):
                x, y = distance * np.cos(angle), distance * np.sin(angle)
                for b, kernel in enumerate(kernels):
                    edited[i, b] += neighbour(images.shape[-1], survey.pixel_scale, kernel,
                                              mag + colours[b], x, y)
            tpr, fpr = share_above(edited)
            print(f"neighbour {config.reference} {mag} at {distance}\": lenses above {tpr:.3f}, "
                  f"non-lenses above {fpr:.3f}")


if __name__ == "__main__":
    main()
