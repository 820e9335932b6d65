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

PERF_CONFIG = SimConfig(survey="hsc", stamp_size=64, supersample=2, psf_model="gaussian",
                        lens_fraction=1.0, mean_clumps=0.0, max_clumps=0)


@dataclass
class SimThroughput:
    n_systems: int
    n_bands: int
    lensbench_per_s: float
    lenstronomy_per_s: float | None
    lenstronomy_systems: int

    @property
    def ratio(self) -> float | None:
        if self.lenstronomy_per_s is None:
            return None
        return self.lensbench_per_s / self.lenstronomy_per_s

    def lines(self) -> list[str]:
        out = [f"configuration: {self.n_bands} bands of 64x64 px, SIE + shear, Sersic lens and "
               "source, Gaussian PSF, noise, 2x supersampling, float32",
               f"lensbench   : {self.lensbench_per_s:10.0f} band-images/s "
               f"({self.n_systems} systems x {self.n_bands} bands)"]
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


def simulation_throughput(n_systems: int = 1024, lenstronomy_systems: int = 48,
                          seed: int = 0, config: SimConfig = PERF_CONFIG) -> SimThroughput:
    """Band-images per second of lensbench and of lenstronomy on the same systems."""
    from lensbench.datasets.simulate import Simulator

    simulator = Simulator(config)
    simulator.simulate(64, seed, shard=1)  # warm-up: first-call allocations and imports
    start = time.perf_counter()
    _, truth = simulator.simulate(n_systems, seed)
    ours = n_systems * len(simulator.bands) / (time.perf_counter() - start)
    try:
        import lenstronomy  # noqa: F401
    except ImportError:
        return SimThroughput(n_systems, len(simulator.bands), ours, None, 0)

    rng = np.random.default_rng(seed)
    models = [lenstronomy_image_model(config, b) for b in range(len(simulator.bands))]
    n_ref = min(lenstronomy_systems, n_systems)
    start = time.perf_counter()
    for row in range(n_ref):
        for band, model in zip(simulator.bands, models, strict=True):
            kwargs = lenstronomy_kwargs(truth, row, band, config.reference)
            image = model.image(*kwargs)
            variance = np.clip(image, 0, None) + band.sky_counts + band.n_exposures * \
                band.read_noise**2
            image = image + rng.standard_normal(image.shape) * np.sqrt(variance)
    theirs = n_ref * len(simulator.bands) / (time.perf_counter() - start)
    return SimThroughput(n_systems, len(simulator.bands), ours, theirs, n_ref)
