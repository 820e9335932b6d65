"""How well the lens-light model takes out simulated lens light, by how its shape is measured.

    python scripts/lens_light_residuals.py [--n 300] [--workdir DIR]

simulates ``--n`` noise-free lenses of the real-vis and real-hsc tasks with invisible sources and
no field galaxies (lens light alone), subtracts the lens-light model with each shape of
``baselines.arcfinder.SHAPES`` and prints the median over lenses of the mean absolute residual
within 2" over the lens's flux there (VIS; HSC i), and the median error of the measured axis
ratio against the simulated one. Then the same residual of the SLACS lenses' own lens light (the
arc split's, degraded to the task without noise, as the report's probe uses it), each with its
percentile among the simulated lenses: a real lens light the model takes out worse than the
simulated ones leaves residuals the finder never saw in training. Where the task's early types
have isophote structure (``SimConfig.lens_isophote_*``), the simulated lenses are measured with
it and again as perfect ellipses. The real splits are made in
(or read from) ``--workdir``. Needs LENSBENCH_DATA_DIR (COSMOS negatives, SLACS images).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from lensbench.baselines.arcfinder import SHAPES, lens_shape
from lensbench.baselines.lenslight import subtract_lens_light
from lensbench.bench.splits import ensure_real_lens_split
from lensbench.bench.suites.real_diagnosis import percentile, real_lens_parts
from lensbench.bench.tasks import REAL_HSC, REAL_VIS
from lensbench.datasets.simulate import Simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lensbench-residuals-"))
    for task in (REAL_VIS, REAL_HSC):
        lens_light_only = task.config.replace(
            lens_fraction=1.0, labelling="metcalf", noise=False, source_mag_range=(40.0, 40.1),
            field_density=0.0)
        configs = {"": lens_light_only}
        if lens_light_only.lens_isophotes:
            configs[", perfect ellipses"] = lens_light_only.replace(
                lens_isophote_twist=0.0, lens_isophote_dq=0.0, lens_isophote_a4_range=(0.0, 0.0))
        real = ensure_real_lens_split(task, workdir)
        parts = real_lens_parts(task.real_lenses, real)
        for label, config in configs.items():
            simulator = Simulator(config)
            images, truth = simulator.simulate(args.n, seed=3)
            band = config.band_names.index(config.reference)
            scale = simulator.pixel_scale
            size = images.shape[-1]
            yy, xx = (np.mgrid[:size, :size] - (size - 1) / 2) * scale
            inner = np.hypot(xx, yy) < 2.0
            for shape in SHAPES:
                print_shape(task.name + label, config, images, truth, parts, scale, shape, band,
                            inner)


def print_shape(name: str, config, images, truth, parts, scale: float, shape: str, band: int,
                inner: np.ndarray) -> None:
    """One line for the simulated lenses, one for the SLACS lens light with their percentiles."""
    q = lens_shape(images[:, band], scale, shape)[3]
    share = residual_share(images, config.band_names, scale, shape, band, inner)
    print(f"{name} ({config.reference}) {shape}: mean |residual| within 2\" "
          f"{np.median(share):.1%} of the lens flux; axis ratio error "
          f"{np.median(q - truth['lens_q_light']):+.3f}")
    real_share = residual_share(parts.lens_light, config.band_names, scale, shape, band, inner)
    print("    SLACS lens light: " + ", ".join(
        f"{lens} {s:.1%} (percentile {percentile(share, s):.0f})"
        for lens, s in zip(parts.names, real_share, strict=True)))


def residual_share(images: np.ndarray, bands, scale: float, shape: str, band: int,
                   inner: np.ndarray) -> np.ndarray:
    """Mean |lens light - model| within ``inner`` over the lens light's there, in ``band``."""
    residual = subtract_lens_light(images, bands=bands, pixel_scale=scale, shape=shape)[:, band]
    return (np.abs(residual[:, inner]).sum(1)
            / np.maximum(np.abs(images[:, band][:, inner]).sum(1), 1e-30))


if __name__ == "__main__":
    main()
