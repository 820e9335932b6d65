"""Do the real lenses' neighbours cost them their score? Replace them and rescore (issue 22).

    python scripts/probe_real_neighbours.py WORKDIR TASK RUN_ID

loads the model ``WORKDIR/runs/<suite>/TASK/RUN_ID/model.lbmodel``, its FPR-1e-3 threshold and
the task's real split from WORKDIR, finds in each real lens's noise-free degraded lens light
(the arc split's, summed over bands) the sources that stand 3 sigma above a 1.5" running median
with 8 pixels or more and lie beyond 2.5" of the centre (photutils' segmentation), widens them
by 4 pixels, and replaces those pixels of the real cutout (beyond 2") by the cutout's own pixels
point-reflected through the centre: an early type is point-symmetric, so the lens light and the
noise stay and the neighbour goes. Prints each real lens's score as observed and so edited, with
the pixels replaced and the flux taken away.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from lensbench.bench.suites.real_diagnosis import real_lens_parts, survey_sigma
from lensbench.bench.tasks import all_tasks
from lensbench.datasets.surveys import get_survey
from photutils.segmentation import detect_sources
from probe_common import fitted_run, scored_real_split
from scipy.ndimage import binary_dilation, median_filter

BEYOND = 2.5  # arcsec: a source whose nearest pixel lies further out is a neighbour, not an arc
KEEP_WITHIN = 2.0  # arcsec: pixels nearer the centre are never replaced


def neighbour_mask(light: np.ndarray, sigma: float, radius: np.ndarray,
                   pixel_scale: float) -> np.ndarray:
    """Pixels of the sources beyond ``BEYOND`` arcsec in the noise-free lens light ``light``
    (H, W), widened by 4 pixels."""
    window = int(round(1.5 / pixel_scale)) | 1
    excess = light - median_filter(light, size=window)
    segments = detect_sources(excess, 3 * sigma, n_pixels=8)
    mask = np.zeros(light.shape, dtype=bool)
    if segments is not None:
        for label in segments.labels:
            source = segments.data == label
            if radius[source].min() > BEYOND:
                mask |= source
    return binary_dilation(mask, iterations=4) & (radius > KEEP_WITHIN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("task")
    parser.add_argument("run_id")
    args = parser.parse_args()
    task = all_tasks()[args.task]
    run, method, saved = fitted_run(args.workdir, task, args.run_id)
    real = scored_real_split(args.workdir, task, run, saved)
    spec = task.real_lenses
    parts = real_lens_parts(spec, real)
    observed = real.images(parts.rows).astype(np.float64)
    survey = get_survey(spec["survey"]).select(list(spec["bands"]))
    sky = survey_sigma(survey, np.zeros((1, len(survey.bands), 1, 1)))[0, :, 0, 0]
    size = observed.shape[-1]
    radius = np.hypot(*(np.mgrid[:size, :size] - (size - 1) / 2)) * survey.pixel_scale
    edited = observed.copy()
    for i, name in enumerate(parts.names):
        light = parts.lens_light[i].sum(axis=0).astype(np.float64)
        mask = neighbour_mask(light, float(np.sqrt(np.sum(sky**2))), radius, survey.pixel_scale)
        reflected = observed[i][:, ::-1, ::-1]
        edited[i][:, mask] = reflected[:, mask]
        taken = float((observed[i] - edited[i]).sum())
        print(f"{name}: {int(mask.sum())} pixels replaced, {taken:.2f} nMgy taken away")
    before = np.asarray(method.predict_score(observed.astype(np.float32)))
    after = np.asarray(method.predict_score(edited.astype(np.float32)))
    print(f"{task.name} {args.run_id}: threshold {float(saved['threshold']):.4g} (FPR 1e-3 on the "
          "simulated test split)")
    print("| real lens | as observed | neighbours replaced |\n|---|---|---|")
    for name, a, b in zip(parts.names, before, after, strict=True):
        print(f"| {name} | {a:.3f} | {b:.3f} |")


if __name__ == "__main__":
    main()
