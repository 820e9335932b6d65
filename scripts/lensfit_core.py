"""How well lenstronomy-fit's forward model renders the simulator's lens cores.

    python scripts/lensfit_core.py [--n 16] [--seed 5]

Simulates --n lenses of the modeling-hsc task without noise, clumps or COSMOS sources (so that
lenstronomy's SIE + shear, Sersic lens light and Sersic source describe them exactly), renders
each with lenstronomy at its TRUE parameters on the fitter's data set-up, for several ways of
supersampling the pixels about the lens centre (sub-pixels per side, radius), and prints the
largest residual per lens in units of the band's sky sigma, and the time of one 4-band model
image (one thread; the median over lenses of 5 repeats each). baselines/lensfit.py quotes its
figures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from lensbench.baselines.contract import LENS_MODEL_TARGETS, TaskInfo
from lensbench.baselines.lensfit import MODEL, LenstronomyFitter, multi_band_list, pixel_grid
from lensbench.bench.tasks import MODELING_HSC
from lensbench.datasets.simulate import Simulator

SETUPS = ((2, 0.8), (16, 0.4), (16, 0.8))  # (sub-pixels per side, radius in arcsec)
REPEATS = 5


def ellipticity(q: float, phi: float) -> tuple[float, float]:
    e = (1 - q) / (1 + q)
    return float(e * np.cos(2 * phi)), float(e * np.sin(2 * phi))


def true_kwargs(t: dict[str, float]) -> dict:
    light_e1, light_e2 = ellipticity(t["lens_q_light"], t["lens_phi_light"])
    source_e1, source_e2 = ellipticity(t["source_q"], t["source_phi"])
    centre = {"center_x": t["lens_x"], "center_y": t["lens_y"]}
    return {"kwargs_lens": [{"theta_E": t["theta_e"], "e1": t["e1"], "e2": t["e2"], **centre},
                            {"gamma1": t["gamma1"], "gamma2": t["gamma2"], "ra_0": 0.0,
                             "dec_0": 0.0}],
            "kwargs_lens_light": [{"amp": 1.0, "R_sersic": t["lens_r_eff"],
                                   "n_sersic": t["lens_sersic_n"], "e1": light_e1,
                                   "e2": light_e2, **centre}],
            "kwargs_source": [{"amp": 1.0, "R_sersic": t["source_r_eff"],
                               "n_sersic": t["source_sersic_n"], "e1": source_e1,
                               "e2": source_e2, "center_x": t["source_x"],
                               "center_y": t["source_y"]}]}


def main() -> None:
    from lenstronomy.Util.class_creator import create_im_sim

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = MODELING_HSC.config.replace(noise=False, mean_clumps=0.0, source_model="sersic")
    images, truth = Simulator(config).simulate(args.n, seed=args.seed)
    info = TaskInfo(name=MODELING_HSC.name, kind="modeling", bands=config.bands,
                    pixel_scale=0.168, image_shape=images.shape[1:], survey=config.survey,
                    targets=LENS_MODEL_TARGETS)
    fitter = LenstronomyFitter().fit(None, None, info)
    x, y = pixel_grid(*images.shape[2:], info.pixel_scale)
    print(f"{MODELING_HSC.name} v{MODELING_HSC.version} (core_refinement "
          f"{config.core_refinement}), {args.n} lenses, seed {args.seed}")
    for factor, radius in SETUPS:
        worst, seconds = [], []
        for row in range(args.n):
            t = {key: float(value[row]) for key, value in truth.items()}
            core = np.hypot(x - t["lens_x"], y - t["lens_y"]) <= radius
            bands = multi_band_list(images[row], fitter.kernels_, fitter.background_rms_,
                                    fitter.exposure_times_, info.pixel_scale, factor, core)
            model = create_im_sim(bands, "multi-linear", MODEL)
            kwargs = true_kwargs(t)
            rendered = model.image_linear_solve(**kwargs)[0]
            start = time.perf_counter()  # again, without the first call's set-up
            for _ in range(REPEATS):
                model.image_linear_solve(**kwargs)
            seconds.append((time.perf_counter() - start) / REPEATS)
            worst.append(max(np.abs(rendered[b] - images[row, b]).max()
                             / fitter.background_rms_[b] for b in range(len(config.bands))))
        print(f"{factor:2d} x {factor:<2d} sub-pixels within {radius}\": worst residual per lens "
              f"median {np.median(worst):.2f}, max {np.max(worst):.2f} sky sigma; "
              f"{1e3 * np.median(seconds):.1f} ms per model image")


if __name__ == "__main__":
    main()
