"""Survey presets (pixel scale, PSF, zeropoint, sky, exposure, detector) and their noise model.

The figures live in ``surveys.json`` beside this module (data, not code branches); sources are in
docs/references.md, "Survey presets", as are the photometric conventions: the AB zeropoint ZP
gives 1 e-/s, so a source of magnitude m gives ``t 10^(-0.4 (m - ZP))`` electrons in the total
exposure t; the sky gives ``t 10^(-0.4 (mu_sky - ZP)) p^2`` electrons per pixel of side p; the
background standard deviation per pixel is ``sqrt(N_exp RN^2 + sky)`` electrons.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class Band:
    """One band of a survey. Units: arcsec, AB mag, seconds, electrons."""

    name: str
    pixel_scale: float  # arcsec / pixel
    psf_fwhm: float  # arcsec
    zeropoint: float  # AB mag giving 1 e-/s
    sky_mag: float  # AB mag / arcsec^2
    exposure_s: float  # total exposure time, s
    n_exposures: int  # exposures co-added (read noise enters once per exposure)
    read_noise: float  # e- per exposure
    gain: float  # e- / ADU: recorded with the preset; images are in nanomaggies, noise in e-
    depth_5sigma: float  # published 5-sigma point-source depth, AB mag

    def counts(self, mag):
        """Electrons collected in the total exposure from a source of AB magnitude ``mag``."""
        return self.exposure_s * 10.0 ** (-0.4 * (mag - self.zeropoint))

    def magnitude(self, counts):
        """AB magnitude of a source that gives ``counts`` electrons in the total exposure."""
        return self.zeropoint - 2.5 * math.log10(counts / self.exposure_s)

    @property
    def electrons_per_nanomaggy(self) -> float:
        """Electrons in the total exposure from 1 nanomaggy (AB 22.5): the factor between the
        simulator's electrons and the calibrated flux units that images are stored in."""
        return self.counts(22.5)

    @property
    def sky_counts(self) -> float:
        """Sky electrons per pixel in the total exposure."""
        return self.counts(self.sky_mag) * self.pixel_scale**2

    @property
    def background_sigma(self) -> float:
        """Standard deviation of the blank-sky background per pixel, electrons."""
        return math.sqrt(self.n_exposures * self.read_noise**2 + self.sky_counts)

    def point_source_depth(self, n_eff_pixels: float, snr: float = 5.0) -> float:
        """Closed-form ``snr``-sigma depth (AB) of a PSF-fitted point source.

        ``n_eff_pixels`` = 1 / sum(P_i^2) of the pixelised PSF (noise-equivalent area, pixels).
        Solves F / sqrt(F + n_eff sigma_bkg^2) = snr for the flux F, source Poisson noise included.
        """
        variance = n_eff_pixels * self.background_sigma**2
        flux = 0.5 * (snr**2 + math.sqrt(snr**4 + 4.0 * snr**2 * variance))
        return self.magnitude(flux)


@dataclass(frozen=True)
class Survey:
    """A survey preset: its bands and the PSF model used when simulating it."""

    name: str
    description: str
    bands: tuple[Band, ...]
    psf_model: str  # "moffat" or "gaussian"
    moffat_beta: float | None
    stamp_size: int
    note: str

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(band.name for band in self.bands)

    @property
    def pixel_scale(self) -> float:
        return self.bands[0].pixel_scale

    def band(self, name: str) -> Band:
        for band in self.bands:
            if band.name == name:
                return band
        raise ValueError(
            f"survey {self.name!r} has no band {name!r}; its bands are {list(self.band_names)}"
        )

    def select(self, band_names) -> Survey:
        """The same survey restricted to ``band_names`` (in that order)."""
        chosen = tuple(self.band(name) for name in band_names)
        return Survey(self.name, self.description, chosen, self.psf_model, self.moffat_beta,
                      self.stamp_size, self.note)


@cache
def _raw_presets() -> dict:
    text = resources.files("lensbench.datasets").joinpath("surveys.json").read_text()
    return {key: value for key, value in json.loads(text).items() if not key.startswith("_")}


def survey_names() -> list[str]:
    return sorted(_raw_presets())


def get_survey(name: str) -> Survey:
    """The preset called ``name``; an unknown name is an error listing the valid ones."""
    presets = _raw_presets()
    if name not in presets:
        close = difflib.get_close_matches(name, presets, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown survey {name!r}; valid surveys: {survey_names()}.{hint}")
    record = presets[name]
    pixel_scales = {band["pixel_scale"] for band in record["bands"]}
    if len(pixel_scales) != 1:
        raise ValueError(f"survey {name!r}: bands must share one pixel scale, got {pixel_scales}")
    return Survey(
        name=name,
        description=record["description"],
        bands=tuple(Band(**band) for band in record["bands"]),
        psf_model=record["psf_model"],
        moffat_beta=record["moffat_beta"],
        stamp_size=record["stamp_size"],
        note=record["note"],
    )
