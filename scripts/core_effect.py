"""How much integrating Sersic cores (SimConfig.core_refinement) changes a task's cutouts.

    python scripts/core_effect.py TASK [--n 512] [--seed 11]

Simulates the first --n cutouts of TASK (a task name of bench/tasks.py) twice with the same seed,
its cores sampled at subpixel centres (core_refinement 0, simulator version 1, what the smoke
and design tasks keep) and integrated (the default, config.CORE_REFINEMENT), both noiseless,
and prints per cutout the largest pixel change in units of the band's sky-plus-read-noise sigma,
and the change of the stamp's flux. Then it times both with noise (cutouts/s, one torch
thread). bench/tasks.py quotes its figures for metcalf-ground and hsc-holismokes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from lensbench.bench.tasks import all_tasks
from lensbench.datasets import render
from lensbench.datasets.config import CORE_REFINEMENT
from lensbench.datasets.simulate import Simulator


def noiseless(config, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, B, H, W) without noise, per-band noise sigma (B,)), both in nanomaggies."""
    add_noise = render.Renderer.add_noise
    render.Renderer.add_noise = lambda self, expected, generator, correlated=None: expected
    try:
        simulator = Simulator(config)
        images, _ = simulator.simulate(n, seed=seed)
    finally:
        render.Renderer.add_noise = add_noise
    r = simulator.renderer

    def values(tensor):
        return tensor.flatten().double().numpy()

    sigma = np.sqrt(values(r.sky_counts) + values(r.read_variance)) / values(
        r.electrons_per_nanomaggy)
    return images, sigma


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = all_tasks()[args.task].config
    sampled, sigma = noiseless(config.replace(core_refinement=0), args.n, args.seed)
    integrated, _ = noiseless(config.replace(core_refinement=CORE_REFINEMENT), args.n, args.seed)
    change = (np.abs(integrated - sampled) / sigma[None, :, None, None]).max(axis=(1, 2, 3))
    print(f"{args.task}, {args.n} cutouts: largest pixel change per cutout in noise sigmas: "
          "median {:.2f}, 90% {:.2f}, 99% {:.1f}, max {:.1f}".format(
              *np.percentile(change, [50, 90, 99, 100])))
    print(f"cutouts with a pixel changed by > 1 sigma: {(change > 1).mean():.3f}, "
          f"> 3 sigma: {(change > 3).mean():.3f}")
    flux = np.abs(integrated.sum((2, 3)) / sampled.sum((2, 3)) - 1).max(axis=1)
    print("stamp flux change (worst band): median {:.4f}, 99% {:.4f}, max {:.4f}".format(
        *np.percentile(flux, [50, 99, 100])))
    for levels in (0, CORE_REFINEMENT) * 2:  # twice each, alternating: the machine drifts
        simulator = Simulator(config.replace(core_refinement=levels))
        start = time.perf_counter()
        simulator.simulate(args.n, seed=args.seed)
        print(f"core_refinement {levels}: {args.n / (time.perf_counter() - start):.0f} "
              "cutouts/s with noise")


if __name__ == "__main__":
    main()
