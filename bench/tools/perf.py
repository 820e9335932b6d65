"""Throughput benchmarks: lensbench's simulator against lenstronomy in the same process.

`bench perf sim` renders the same systems (64x64, SIE + shear, elliptical Sersic lens light and
source, Gaussian PSF, noise, 2x supersampling) with both codes and reports band-images per second
and their ratio. lenstronomy is optional (the `dev` extra); without it only our rate is printed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from lensbench.datasets.config import SimConfig

# Sersic cores sampled at subpixel centres (core_refinement 0), as lenstronomy samples them with
# the same supersampling: the two render the same images (tests/test_simulate.py).
PERF_CONFIG = SimConfig(survey="hsc", stamp_size=64, supersample=2, psf_model="gaussian",
                        lens_fraction=1.0, mean_clumps=0.0, max_clumps=0, core_refinement=0)


@dataclass
class SimThroughput:
    n_systems: int
    n_bands: int
    lensbench_per_s: float
    lenstronomy_per_s: float | None
    lenstronomy_systems: int
    torch_threads: int = 1
    device: str = "cpu"

    @property
    def ratio(self) -> float | None:
        if self.lenstronomy_per_s is None:
            return None
        return self.lensbench_per_s / self.lenstronomy_per_s

    def lines(self) -> list[str]:
        out = [f"configuration: {self.n_bands} bands of 64x64 px, SIE + shear, Sersic lens and "
               "source, Gaussian PSF, noise, 2x supersampling, float32",
               f"lensbench   : {self.lensbench_per_s:10.0f} band-images/s "
               f"({self.n_systems} systems x {self.n_bands} bands, "
               + (f"{self.torch_threads} torch threads" if self.device == "cpu"
                  else f"on {self.device}")
               + ", with its truth: image counts, magnification, arc S/N)"]
        if self.lenstronomy_per_s is None:
            out.append("lenstronomy : not installed (pip install 'lensbench[dev]')")
        else:
            out.append(f"lenstronomy : {self.lenstronomy_per_s:10.0f} band-images/s "
                       f"({self.lenstronomy_systems} systems x {self.n_bands} bands)")
            out.append(f"ratio       : {self.ratio:10.1f}x per band-image")
        return out


def lenstronomy_image_model(config: SimConfig, band_index: int):
    """A lenstronomy ImageModel for one band of ``config`` (SIE + SHEAR, Sersic light)."""
    from lensbench.datasets.simulate import Simulator
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.Util.simulation_util import data_configure_simple

    simulator = Simulator(config)
    band = simulator.bands[band_index]
    fwhm = config.psf_fwhm_override or band.psf_fwhm
    data = ImageData(**data_configure_simple(simulator.size, band.pixel_scale, inverse=False))
    psf = PSF(psf_type="GAUSSIAN", fwhm=fwhm, pixel_size=band.pixel_scale, truncation=5)
    return ImageModel(data, psf, lens_model_class=LensModel(["SIE", "SHEAR"]),
                      source_model_class=LightModel(["SERSIC_ELLIPSE"]),
                      lens_light_model_class=LightModel(["SERSIC_ELLIPSE"]),
                      kwargs_numerics={"supersampling_factor": config.supersample})


def lenstronomy_kwargs(truth: dict, row: int, band, reference_band: str):
    """lenstronomy keyword lists for one system of a lensbench truth table in one band.
    Sersic amplitudes are surface brightness at R_e in electrons / arcsec^2."""
    from lensbench.datasets.lensing import sersic_flux_to_amplitude

    def ellipticity(q, phi):
        e = (1 - q) / (1 + q)
        return float(e * np.cos(2 * phi)), float(e * np.sin(2 * phi))

    t = {key: float(value[row]) for key, value in truth.items()}
    e1, e2 = ellipticity(t["q"], t["phi"])
    kwargs_lens = [
        {"theta_E": t["theta_e"], "e1": e1, "e2": e2, "center_x": t["lens_x"],
         "center_y": t["lens_y"]},
        {"gamma1": t["gamma1"], "gamma2": t["gamma2"], "ra_0": t["lens_x"],
         "dec_0": t["lens_y"]},
    ]
    le1, le2 = ellipticity(t["lens_q_light"], t["lens_phi_light"])
    lens_flux = band.counts(t[f"lens_mag_{band.name}"])
    kwargs_lens_light = [{
        "amp": float(sersic_flux_to_amplitude(lens_flux, t["lens_r_eff"], t["lens_sersic_n"])),
        "R_sersic": t["lens_r_eff"], "n_sersic": t["lens_sersic_n"], "e1": le1, "e2": le2,
        "center_x": t["lens_x"], "center_y": t["lens_y"]}]
    se1, se2 = ellipticity(t["source_q"], t["source_phi"])
    source_flux = band.counts(t[f"source_mag_{band.name}"])
    kwargs_source = [{
        "amp": float(sersic_flux_to_amplitude(source_flux, t["source_r_eff"],
                                              t["source_sersic_n"])),
        "R_sersic": t["source_r_eff"], "n_sersic": t["source_sersic_n"], "e1": se1, "e2": se2,
        "center_x": t["source_x"], "center_y": t["source_y"]}]
    return kwargs_lens, kwargs_source, kwargs_lens_light


def simulation_throughput(n_systems: int = 2048, lenstronomy_systems: int = 64,
                          seed: int = 0, config: SimConfig = PERF_CONFIG, rounds: int = 4,
                          device: str = "cpu") -> SimThroughput:
    """Band-images per second of lensbench and of lenstronomy on the same systems.

    The two codes run in alternating rounds in this process, so a varying machine load (other
    jobs on the 2 cores) affects both alike and the ratio stays meaningful. lensbench uses torch's
    thread setting as it is (``torch.get_num_threads()``, reported); lenstronomy is numpy.
    lenstronomy's keyword lists are built before the clock starts: only its rendering and noise
    are timed. ``device``: where lensbench renders ("cuda": a GPU; lenstronomy stays on the
    CPU)."""
    import torch
    from lensbench.datasets.simulate import Simulator

    simulator = Simulator(config, device=device)
    n_bands = len(simulator.bands)
    simulator.simulate(64, seed, shard=10_000)  # warm-up: first-call allocations and imports
    _, truth = simulator.simulate(max(lenstronomy_systems, 1), seed, shard=10_001)
    try:
        import lenstronomy  # noqa: F401
    except ImportError:
        models = None
    else:
        models = [lenstronomy_image_model(config, b) for b in range(n_bands)]
        kwargs = [[lenstronomy_kwargs(truth, row, band, config.reference)
                   for band in simulator.bands] for row in range(len(truth["label"]))]
        _lenstronomy_round(models, simulator, kwargs, range(1), np.random.default_rng(seed))

    ours_time = theirs_time = 0.0
    per_round = max(1, n_systems // rounds)
    theirs_rows = np.array_split(np.arange(lenstronomy_systems), rounds)
    rng = np.random.default_rng(seed)
    for round_index in range(rounds):
        start = time.perf_counter()
        simulator.simulate(per_round, seed, shard=round_index)
        ours_time += time.perf_counter() - start
        if models is not None:
            start = time.perf_counter()
            _lenstronomy_round(models, simulator, kwargs, theirs_rows[round_index], rng)
            theirs_time += time.perf_counter() - start
    ours = per_round * rounds * n_bands / ours_time
    theirs = lenstronomy_systems * n_bands / theirs_time if models is not None else None
    return SimThroughput(per_round * rounds, n_bands, ours, theirs,
                         lenstronomy_systems if models is not None else 0,
                         torch.get_num_threads(), str(simulator.renderer.device))


def _lenstronomy_round(models, simulator, kwargs, rows, rng) -> None:
    """Render and add noise to systems ``rows`` in every band with lenstronomy (``kwargs[row][b]``
    from `lenstronomy_kwargs`)."""
    for row in rows:
        for band, model, band_kwargs in zip(simulator.bands, models, kwargs[row], strict=True):
            image = model.image(*band_kwargs)
            variance = (np.clip(image, 0, None) + band.sky_counts
                        + band.n_exposures * band.read_noise**2)
            image = image + rng.standard_normal(image.shape) * np.sqrt(variance)
