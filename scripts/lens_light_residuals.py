"""How well the lens-light model takes out simulated lens light, by how its shape is measured.

    python scripts/lens_light_residuals.py [--n 300]

simulates ``--n`` noise-free lenses of the real-vis and real-hsc tasks with invisible sources and
no field galaxies (lens light alone), subtracts the lens-light model with each shape of
``baselines.arcfinder.SHAPES`` and prints the median over lenses of the mean absolute residual
within 2" over the lens's flux there (VIS; HSC i), and the median error of the measured axis
ratio against the simulated one. Needs LENSBENCH_DATA_DIR (the tasks' COSMOS negatives).
"""

from __future__ import annotations

import argparse

import numpy as np
from lensbench.baselines.arcfinder import SHAPES, lens_shape
from lensbench.baselines.lenslight import subtract_lens_light
from lensbench.bench.tasks import REAL_HSC, REAL_VIS
from lensbench.datasets.simulate import Simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    for task in (REAL_VIS, REAL_HSC):
        config = task.config.replace(lens_fraction=1.0, labelling="metcalf", noise=False,
                                     source_mag_range=(40.0, 40.1), field_density=0.0)
        simulator = Simulator(config)
        images, truth = simulator.simulate(args.n, seed=3)
        band = config.band_names.index(config.reference)
        red = images[:, band]
        scale = simulator.pixel_scale
        size = images.shape[-1]
        yy, xx = (np.mgrid[:size, :size] - (size - 1) / 2) * scale
        inner = np.hypot(xx, yy) < 2.0
        for shape in SHAPES:
            q = lens_shape(red, scale, shape)[3]
            residual = subtract_lens_light(images, bands=config.band_names, pixel_scale=scale,
                                           shape=shape)[:, band]
            share = np.abs(residual[:, inner]).sum(1) / np.abs(red[:, inner]).sum(1)
            print(f"{task.name} ({config.reference}) {shape}: mean |residual| within 2\" "
                  f"{np.median(share):.1%} of the lens flux; axis ratio error "
                  f"{np.median(q - truth['lens_q_light']):+.3f}")


if __name__ == "__main__":
    main()
