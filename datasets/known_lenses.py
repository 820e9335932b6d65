"""Known lenses (SLACS, HST ACS F814W, 0.05"/px) and real non-lenses (COSMOS galaxies) observed
with a survey preset: the ``real-lenses`` split.

SLACS cutouts (``slacs_hst_f814w`` + ``known_lens_tables`` of the data registry) are split into
lens light and arcs (:func:`split_arcs`) and scaled from i to each band with
``config.LENS_COLOURS`` (lens; a passive early type at z ~ 0.5, so g and u are ~1 mag redder than
SLACS lenses at z ~ 0.2) and ``config.SOURCE_COLOURS`` (arcs), the tables the simulator uses;
both can be overridden. COSMOS field galaxies (``lensbench.datasets.cosmos``) keep their
catalogue magnitudes; the bright COSMOS early types (``cosmos.bright_early_types``, rendered as
seen at the SLACS redshift) get the lens colours, as the SLACS lens light does. All are
degraded to a survey preset by the public :func:`lensbench.datasets.degrade.degrade` (its
docstring describes the noise matching) and written as a split by :func:`make_real_lens_split`.
Conventions as in ``lensbench.datasets.cosmos``.

Noise. The HST images carry their own noise, which after degradation is NOT negligible (one HST
orbit reaches about the surface-brightness depth of a ground survey). The ground noise is
therefore matched: only the variance missing to the survey's (Poisson of source + sky, read noise)
is added, per pixel; the native HST variance is propagated through rebinning and PSF convolution
as white noise times a correlation factor (COSMOS: sum/centre of the catalogue's noise
correlation function; SLACS: measured from 4x4 block sums on the cutout border).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from lensbench.datasets import registry
from lensbench.datasets.config import (
    LENS_COLOURS,
    SNAPSHOT_EXPOSURE_S,
    SOURCE_COLOURS,
    electrons_per_nanomaggy,
)
from lensbench.datasets.cosmos import (
    ANALOGUE_Z,
    CosmosSources,
    bright_early_types,
    cosmos_band_images,
)
from lensbench.datasets.degrade import (
    NANOMAGGY_ZEROPOINT,
    block_sum_factor,
    border_noise,
    centred_psf,
    colour_factor,
    degrade,
    noise_variance_with_photons,
)
from lensbench.datasets.degrade import degrade_image as degrade_image  # noqa: F401 (public)
from lensbench.datasets.degrade import rebin_flux as rebin_flux  # noqa: F401 (public)
from lensbench.datasets.surveys import get_survey

# Bump when a change here changes the images of a real-lenses split of a given config and seed.
REAL_SPLIT_VERSION = 1

SLACS_DIR = "slacs_hst_f814w"
SLACS_PARAMS = f"{SLACS_DIR}/slacs_params.csv"
SLACS_TABLE = "known_lens_tables/slacs_auger2010_shajib2021.csv"
SLACS_CUTOUTS = ("99x99", "198x198")
# TinyTim's model of the HST ACS/WFC F814W PSF (the SLACS and COSMOS images are both ACS/WFC
# F814W), at its own pixel side.
ACS_F814W_PSF = f"{SLACS_DIR}/tinytim_ACS.fits"
ACS_F814W_PSF_SCALE = 0.0495
ARCSEC_PER_DEG = 3600.0
# theta_e_ref codes in the real-lenses truth, and what each names (the reports' column)
THETA_E_FROM_AUGER_SHAJIB, THETA_E_FROM_SLACS_MATCH = 1, 2
THETA_E_SOURCES = {THETA_E_FROM_AUGER_SHAJIB: "SIE b, Auger+2010 / Shajib+2021",
                   THETA_E_FROM_SLACS_MATCH: "R_Einstein, slacs-match (GLASS)"}
# The sky of a SLACS cutout (9.9" wide, its border 4.4-7" from a lens of R_e 1.7-2.8") is fitted
# with the lens's de Vaucouleurs halo in the annuli between these radii (arcsec): outside the
# arcs (theta_E <= 1.6") and out to the cutout's corners.
SKY_FIT_RADII = (2.5, 7.0)
SKY_FIT_ANNULUS = 0.25  # arcsec
DE_VAUCOULEURS_B = 7.669  # b_n of a Sersic n = 4 profile


# ------------------------------------------------------------------------------------ SLACS
@dataclass
class SlacsLens:
    """A SLACS lens: HST F814W cutout (nanomaggies per 0.05" pixel, background subtracted), the
    split into lens light and arcs, and its published parameters."""

    name: str
    file: str  # registry name of the cutout
    image: np.ndarray  # nMgy per pixel, (h, w)
    pixel_scale: float  # arcsec
    zeropoint_ab: float  # AB magnitude of 1 e-/s (from PHOTFLAM, PHOTPLAM)
    background: float  # subtracted, nMgy per pixel
    noise_variance: float  # per native pixel, nMgy^2
    # Its noise's correlation with the neighbouring pixels (3 x 3, centre 1; the border's:
    # degrade.border_correlation): the snapshots are drizzled.
    noise_correlation: np.ndarray
    # The variance of its raw border's 4 x 4 block sums over 16 pixel variances, which the real
    # splits before real-hsc v12 and real-vis v14 took for the noise's correlation.
    block_sum_factor: float
    theta_e: float
    theta_e_ref: int  # THETA_E_FROM_AUGER_SHAJIB or THETA_E_FROM_SLACS_MATCH
    z_lens: float
    z_source: float
    arcs: np.ndarray = field(repr=False, default=None)  # nMgy per pixel, part of ``image``
    # The image's exposure: NCOMBINE x SNAPSHOT_EXPOSURE_S (load_slacs). For SDSSJ0029-0055's
    # 4-exposure image that gives a fine-scale scatter 2-4.5" out of 0.52e-3 nMgy per VIS pixel
    # (sky 0.46e-3, one snapshot's photons 0.68e-3), where its real light has 0.53e-3
    # (`python scripts/probe_swap.py`; docs/real-lenses.md, cause 13).
    exposure_s: float = SNAPSHOT_EXPOSURE_S

    @property
    def lens_light(self) -> np.ndarray:
        return self.image - self.arcs

    @property
    def effective_gain(self) -> float:
        """Electrons per nanomaggy of the image (its exposure)."""
        return electrons_per_nanomaggy(self.zeropoint_ab, self.exposure_s)

    def variance_with_photons(self, exposure_s: float | None = None) -> np.ndarray:
        """The image's noise variance per pixel (nMgy^2): the sky's ``noise_variance`` (its
        border's) and the image's own photon noise in ``exposure_s`` (default: its own), near a
        bright lens most of a snapshot's noise."""
        gain = (self.effective_gain if exposure_s is None
                else electrons_per_nanomaggy(self.zeropoint_ab, exposure_s))
        return noise_variance_with_photons(self.image, math.sqrt(self.noise_variance), gain)

    @property
    def mag_f814w(self) -> float:
        return float(22.5 - 2.5 * np.log10(max(self.image.sum(), 1e-12)))


def _leading_float(text: str) -> float:
    match = re.match(r"\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)", text or "")
    return float(match.group(1)) if match else math.nan


@cache
def slacs_parameters() -> dict[str, dict[str, float]]:
    """Per lens name (``SDSSJhhmm+ddmm``): theta_e, theta_e_ref, z_lens, z_source, q, pa, r_eff.

    theta_E is the SIE Einstein radius of Auger et al. 2010 / Shajib et al. 2021 where that
    table lists the lens, else the slacs-match (GLASS) model's R_Einstein; r_eff (arcsec, the
    F814W de Vaucouleurs half-light radius) likewise from that table where it lists one, else
    slacs-match's."""
    out: dict[str, dict[str, float]] = {}
    with open(registry.fetch(SLACS_PARAMS), newline="") as f:
        for row in csv.DictReader(f):
            name = row["Name"].strip()
            out[name] = {"theta_e": _leading_float(row["/R_{Einstein} [arcsec]/"]),
                         "theta_e_ref": THETA_E_FROM_SLACS_MATCH,
                         "z_lens": _leading_float(row["z_{l}"]),
                         "z_source": _leading_float(row["z_{s}"]),
                         "q": _leading_float(row["q_{ref}"]),
                         "pa": _leading_float(row["PA_{ref} [deg]"]),
                         "r_eff": _leading_float(row["R_{eff} [arcsec]"])}
    with open(registry.fetch(SLACS_TABLE), newline="") as f:
        for row in csv.DictReader(f):
            name = "SDSSJ" + row["lens_name"].strip().removeprefix("slacs")
            theta = _leading_float(row["b_SIE"])
            if math.isfinite(theta):
                entry = out.setdefault(name, {})
                entry |= {"theta_e": theta, "theta_e_ref": THETA_E_FROM_AUGER_SHAJIB,
                          "z_lens": _leading_float(row["z_lens"]),
                          "z_source": _leading_float(row["z_source"]),
                          "q": _leading_float(row["q_SIE"]), "pa": _leading_float(row["PA"])}
            r_eff = _leading_float(row["R_eff"])
            if math.isfinite(r_eff):
                out.setdefault(name, {})["r_eff"] = r_eff
    return out


def _central_shape(image: np.ndarray, pixel_scale: float, radius: float = 1.0
                   ) -> tuple[float, float]:
    """Axis ratio and major-axis angle (rad, from +x) of the light within ``radius`` arcsec of
    the centre, from flux-weighted second moments."""
    h, w = image.shape
    yy, xx = np.indices(image.shape)
    x, y = (xx + 0.5 - w / 2) * pixel_scale, (yy + 0.5 - h / 2) * pixel_scale
    weight = np.where(np.hypot(x, y) < radius, np.clip(image, 0, None), 0.0)
    total = weight.sum()
    if total <= 0:
        return 1.0, 0.0
    mxx, myy, mxy = ((weight * a * b).sum() / total for a, b in ((x, x), (y, y), (x, y)))
    spread = math.hypot(0.5 * (mxx - myy), mxy)
    major, minor = 0.5 * (mxx + myy) + spread, max(0.5 * (mxx + myy) - spread, 1e-12)
    return float(np.sqrt(minor / major)), float(0.5 * math.atan2(2 * mxy, mxx - myy))


def split_arcs(image: np.ndarray, pixel_scale: float, theta_e: float, sigma: float
               ) -> np.ndarray:
    """Arc light of a lens image (nMgy per pixel): the positive residual above 2 sigma, within
    0.4-2 theta_E of the centre, of a running-median model of the lens light in elliptical
    annuli (shape from the central second moments; arcs cover a minority of each annulus, so
    the median follows the lens). A first-order split: faint arc light stays with the lens."""
    h, w = image.shape
    q, phi = _central_shape(image, pixel_scale)
    q = max(q, 0.5)  # moments of a lens with bright arcs inside 1" can look too elongated
    yy, xx = np.indices(image.shape)
    x, y = (xx + 0.5 - w / 2) * pixel_scale, (yy + 0.5 - h / 2) * pixel_scale
    u = x * math.cos(phi) + y * math.sin(phi)
    v = -x * math.sin(phi) + y * math.cos(phi)
    r_ell = np.sqrt(q * u**2 + v**2 / q)
    r = np.hypot(x, y)
    ring = np.floor(r_ell / pixel_scale).astype(int)
    model = np.zeros_like(image)
    for k in np.unique(ring):
        sel = ring == k
        model[sel] = np.median(image[sel])
    residual = image - model
    mask = (residual > 2 * sigma) & (r > 0.4 * theta_e) & (r < 2.0 * theta_e)
    return np.where(mask, residual, 0.0)


def cosmic_rays(image: np.ndarray, zeropoint_ab: float, noise_variance: float,
                exposure_s: float = SNAPSHOT_EXPOSURE_S) -> np.ndarray:
    """The cosmic rays of a SLACS HST image (nMgy per pixel, 0 elsewhere): astroscrappy's
    L.A.Cosmic (van Dokkum 2001) at its default thresholds, in electrons of the image's
    ``exposure_s`` (``SlacsLens.exposure_s``) with the image's own noise variance, the border's
    ``noise_variance`` plus the object's photons (:func:`noise_variance_with_photons`)."""
    import astroscrappy

    to_electrons = electrons_per_nanomaggy(zeropoint_ab, exposure_s)
    electrons = image * to_electrons
    variance = noise_variance_with_photons(image, math.sqrt(noise_variance),
                                           to_electrons) * to_electrons**2
    mask, cleaned = astroscrappy.detect_cosmics(
        electrons.astype(np.float32), invar=variance.astype(np.float32), gain=1.0,
        readnoise=0.0, satlevel=np.inf)
    return np.where(mask, electrons - cleaned, 0.0) / to_electrons


def load_slacs(cutout: str = "198x198", clean_cosmic_rays: bool = False,
               sky_beside_halo: bool = False) -> list[SlacsLens]:
    """The SLACS lenses of the data registry with a cutout of size ``cutout`` ("99x99" or
    "198x198") and an Einstein radius in the tables; noise from the 198x198 cutout's border,
    and the sky from its border too or (``sky_beside_halo``) fitted beside the lens's halo
    (:func:`sky_level_beside_halo`).

    clean_cosmic_rays: take the cosmic rays out (:func:`cosmic_rays`) before the image is split
        into lens light and arcs. The survey images the lenses stand for have none: HSC coadds
        and Euclid VIS stacks of 4 dithers reject them, while a SLACS snapshot is one exposure
        (they were up to 19% of an image's flux and half of what the arc split took for arcs).
    """
    from astropy.io import fits

    if cutout not in SLACS_CUTOUTS:
        raise ValueError(f"cutout must be one of {SLACS_CUTOUTS}, got {cutout!r}")
    params = slacs_parameters()
    lenses = []
    for name in registry.names(f"{SLACS_DIR}/{cutout}/"):
        lens = Path(name).stem
        if lens not in params or not math.isfinite(params[lens].get("theta_e", math.nan)):
            continue
        with fits.open(registry.fetch(name)) as hdul:
            sci = hdul["SCI"]
            data = np.asarray(sci.data, dtype=np.float64)
            header = sci.header
        wide_name = f"{SLACS_DIR}/198x198/{lens}.fits"
        with fits.open(registry.fetch(wide_name)) as hdul:
            wide = np.asarray(hdul["SCI"].data, dtype=np.float64)
        if not np.all(np.isfinite(data)):
            continue
        n_combined = header.get("NCOMBINE")
        if not (isinstance(n_combined, int) and n_combined >= 1):
            raise ValueError(f"{name}: header SCI NCOMBINE must be the number of exposures "
                             f"combined (an integer >= 1), got {n_combined!r}")
        cd = [[float(header.get(f"CD{i}_{j}", 0.0)) for j in (1, 2)] for i in (1, 2)]
        # sqrt |det CD|: the pixel side also for rotated frames (SDSSJ0737 has ORIENTAT -76).
        scale = math.sqrt(abs(cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0])) * ARCSEC_PER_DEG
        zp_ab = (-2.5 * math.log10(float(header["PHOTFLAM"]))
                 - 5.0 * math.log10(float(header["PHOTPLAM"])) - 2.408)
        to_nmgy = 10 ** (-0.4 * (zp_ab - 22.5))
        background, sigma, correlation = border_noise(wide)
        exposure_s = n_combined * SNAPSHOT_EXPOSURE_S
        entry = params[lens]
        if sky_beside_halo:
            background = slacs_sky_beside_halo(wide, scale, lens, entry)
        image = (data - background) * to_nmgy
        if clean_cosmic_rays:
            image = image - cosmic_rays(image, zp_ab, (sigma * to_nmgy) ** 2, exposure_s)
        arcs = split_arcs(image, scale, entry["theta_e"], sigma * to_nmgy)
        lenses.append(SlacsLens(
            name=lens, file=name, image=image, pixel_scale=scale, zeropoint_ab=zp_ab,
            background=background * to_nmgy, noise_variance=(sigma * to_nmgy) ** 2,
            noise_correlation=correlation, block_sum_factor=block_sum_factor(wide),
            theta_e=entry["theta_e"],
            theta_e_ref=int(entry["theta_e_ref"]), z_lens=entry["z_lens"],
            z_source=entry["z_source"], arcs=arcs,
            exposure_s=exposure_s))
    return lenses


def slacs_sky_beside_halo(image: np.ndarray, pixel_scale: float, lens: str, entry: dict
                          ) -> float:
    """:func:`sky_level_beside_halo` with the lens's tabulated R_eff (``slacs_parameters``)."""
    r_eff = entry.get("r_eff", math.nan)
    if not (math.isfinite(r_eff) and r_eff > 0):
        raise ValueError(f"{SLACS_PARAMS} / {SLACS_TABLE}: {lens} has no positive R_eff "
                         "(arcsec), which its sky estimate needs")
    return sky_level_beside_halo(image, pixel_scale, r_eff)


def de_vaucouleurs_shape(radius: np.ndarray, r_eff: float) -> np.ndarray:
    """A de Vaucouleurs profile at ``radius`` (arcsec), 1 at the half-light radius ``r_eff``."""
    return np.exp(-DE_VAUCOULEURS_B * ((radius / r_eff) ** 0.25 - 1.0))


@dataclass(frozen=True)
class HaloSkyFit:
    """:func:`fit_sky_beside_halo_profile`: the sky level, the halo's amplitude (its surface
    brightness at R_e), both per pixel in the image's units, and the rms residual of the
    annulus medians about the fit."""

    sky: float
    halo_amplitude: float
    rms: float


def fit_sky_beside_halo_profile(image: np.ndarray, pixel_scale: float, r_eff: float
                                ) -> HaloSkyFit:
    """The least-squares fit of sky + A exp(-b4 ((r/R_e)^(1/4) - 1)) to the median of each
    SKY_FIT_ANNULUS-wide annulus within SKY_FIT_RADII of a cutout centred on an early type of
    de Vaucouleurs half-light radius ``r_eff`` (arcsec).

    The SLACS cutouts are too small for blank sky: their border's median (``border_noise``,
    the sky of ``load_slacs`` by default) held 0.7-1.5 HST sigma per pixel of the lens's own halo
    (4-6 VIS sky sigma per VIS pixel once degraded), which was subtracted from the whole cutout
    with the sky. The pipeline's sky (MDRIZSKY, from the whole ACS chip) was already taken
    out, but the profiles still flatten to 0.2-12 HST sigma per pixel by 7", so a sky is
    fitted here, beside the halo."""
    if not (math.isfinite(r_eff) and r_eff > 0):
        raise ValueError(f"fit_sky_beside_halo_profile: r_eff must be a positive number of "
                         f"arcsec, got {r_eff!r}")
    h, w = image.shape
    radius = np.hypot(*np.mgrid[:h, :w] - np.array([(h - 1) / 2, (w - 1) / 2])[:, None, None]
                      ) * pixel_scale
    halo_shape = de_vaucouleurs_shape(radius, r_eff)
    edges = np.arange(SKY_FIT_RADII[0], SKY_FIT_RADII[1] + 1e-9, SKY_FIT_ANNULUS)
    halo, medians = [], []
    for inner, outer in zip(edges[:-1], edges[1:], strict=True):
        ring = (radius >= inner) & (radius < outer)
        if ring.sum() >= 50:  # the corners' last annuli hold few pixels
            # the profile's median over the same pixels: no bias from its curvature
            halo.append(float(np.median(halo_shape[ring])))
            medians.append(float(np.median(image[ring])))
    if len(halo) < 4:
        raise ValueError(f"fit_sky_beside_halo_profile: a {h}x{w} cutout at {pixel_scale}\"/px has "
                         f"too few annuli between {SKY_FIT_RADII[0]} and {SKY_FIT_RADII[1]}\"")
    design = np.stack([np.ones(len(halo)), halo], axis=1)
    (sky, amplitude), *_ = np.linalg.lstsq(design, np.array(medians), rcond=None)
    rms = float(np.std(np.array(medians) - design @ np.array([sky, amplitude])))
    return HaloSkyFit(float(sky), float(amplitude), rms)


def sky_level_beside_halo(image: np.ndarray, pixel_scale: float, r_eff: float) -> float:
    """The sky level of a cutout centred on an early type of de Vaucouleurs half-light radius
    ``r_eff`` (arcsec), fitted beside its halo (:func:`fit_sky_beside_halo_profile`)."""
    return fit_sky_beside_halo_profile(image, pixel_scale, r_eff).sky


def acs_f814w_psf() -> np.ndarray:
    """The ACS/WFC F814W PSF model (``ACS_F814W_PSF``, pixel side ``ACS_F814W_PSF_SCALE``),
    cropped to an odd side centred on its peak and normalised to unit sum."""
    from astropy.io import fits

    path = registry.fetch(ACS_F814W_PSF)
    return centred_psf(fits.getdata(path), str(path))


def native_psf_args(match_native_psf: bool) -> dict:
    """``degrade``'s keywords for the real split's HST images: their ACS F814W PSF to match to
    the survey's, or none (blurred by the survey's PSF on top of their own)."""
    return ({"native_psf": acs_f814w_psf(), "native_psf_scale": ACS_F814W_PSF_SCALE}
            if match_native_psf else {})


def slacs_band_images(lens: SlacsLens, bands: Sequence[str], *,
                      lens_colours: dict[str, float] | None = None,
                      source_colours: dict[str, float] | None = None) -> np.ndarray:
    """(B, h, w) nMgy at HST resolution: lens light and arcs scaled from i (F814W) by colours."""
    lens_colours = lens_colours or LENS_COLOURS
    source_colours = source_colours or SOURCE_COLOURS
    light, arcs = lens.lens_light, lens.arcs
    return np.stack([light * colour_factor(lens_colours, b)
                     + arcs * colour_factor(source_colours, b) for b in bands])


# ------------------------------------------------------------------------------------ split
def real_split_colours(bands: Sequence[str], colours_from_f814w: bool
                       ) -> tuple[dict[str, float], dict[str, float]]:
    """(lens colours, source colours) a real split gives the SLACS F814W planes: the simulator's
    tables, or flat (every band the F814W flux as it is) with ``colours_from_f814w``."""
    if colours_from_f814w:
        flat = {b: 0.0 for b in (*bands, "i")}
        return flat, flat
    return LENS_COLOURS, SOURCE_COLOURS


# How a real split's HST images were prepared, per flag of ``make_real_lens_split`` (the task
# spec's ``real_lenses``): (what it sets, with the flag, without it). The reports state them, so
# that a reader of a figure on real lenses knows how its cutouts were made.
PREPARATION_STEPS = {
    "clean_cosmic_rays": ("SLACS cosmic rays", "cleaned (astroscrappy)", "kept"),
    "sky_beside_halo": ("SLACS sky", "fitted beside the lens's de Vaucouleurs halo",
                        "the cutout border's median, which holds the lens's halo"),
    "match_native_psf": ("PSF", "their ACS F814W PSF matched to the survey's",
                         "the survey's on top of their own"),
    "own_photon_noise": ("noise", "the survey's tops up theirs, counted with the objects' photons",
                         "the survey's tops up theirs, counted as the sky's alone"),
    "measured_noise_correlation": ("their noise's correlation",
                                   "measured, carried exactly through the rebinning and the PSF",
                                   "taken as the raw border's 4 x 4 block sums"),
    "colours_from_f814w": ("bands", "each the F814W flux as it is",
                           "the simulator's lens and source colours from F814W"),
}


def preparation_sentence(spec: dict) -> str:
    """One sentence saying how a real split of ``spec`` (a task's ``real_lenses``) prepared its
    HST images, each step of ``PREPARATION_STEPS`` with or without its flag."""
    steps = [f"{topic}: {with_flag if spec.get(flag, False) else without}"
             for flag, (topic, with_flag, without) in PREPARATION_STEPS.items()]
    return ("How the real split's HST images were degraded to the survey "
            "(datasets/known_lenses.py: make_real_lens_split): " + "; ".join(steps) + ".")


def make_real_lens_split(survey: str, bands: Sequence[str] | None, stamp_size: int | None,
                         out_dir, seed: int = 0, n_nonlenses: int = 100, *,
                         cutout: str = "198x198", created_by: str = "lensbench",
                         n_bright_early_types: int = 0,
                         colours_from_f814w: bool = False,
                         clean_cosmic_rays: bool = False,
                         match_native_psf: bool = False,
                         sky_beside_halo: bool = False,
                         own_photon_noise: bool = False,
                         measured_noise_correlation: bool = False) -> Path:
    """Write the ``real-lenses`` test split: degraded SLACS lenses (label 1, theta_e from the
    tables) and degraded COSMOS galaxies (label 0, randomly oriented; drawn without replacement
    while there are enough) observed with the preset ``survey`` (its ``bands`` or all, at
    ``stamp_size`` or its default). Rows are shuffled with ``seed``; the same arguments give the
    same bytes. The manifest's ``data_files`` lists name -> sha256 of every real file used.

    Truth columns: label, theta_e (NaN for non-lenses), theta_e_ref, z_lens, z_source (NaN where
    unknown), z_phot (COSMOS), mag_<band> (AB, before noise), arc_fraction (share of the i-band
    flux assigned to arcs), kind (1 SLACS, 2 COSMOS, 3 bright early type), object_index (into
    load_slacs() or CosmosSources().galaxies).

    n_bright_early_types: also the most luminous early-type COSMOS galaxies rendered as seen at
        the SLACS lenses' redshift (``cosmos.bright_early_types``; kind 3, label 0), real
        non-lenses as bright as the lenses; they get the lens light's colours, as the SLACS
        lenses do, so colour cannot tell them from the lenses. Their z_lens is the redshift
        they are rendered at, z_phot their own.
    colours_from_f814w: every band takes the F814W flux as it is (no colour table: for one band
        close to F814W, such as Euclid VIS, so that no colour is invented). COSMOS field
        galaxies keep their catalogue magnitudes either way.
    clean_cosmic_rays: the SLACS images without their cosmic rays (``load_slacs``).
    match_native_psf: every HST image reaches the survey's PSF through the kernel that matches
        its own ACS F814W PSF to it (``degrade.matching_kernel``; a bright early type's PSF
        enlarged with it), instead of being blurred by the survey's PSF on top of its own.
    sky_beside_halo: the SLACS sky fitted beside the lens's de Vaucouleurs halo instead of the
        cutout border's median (``load_slacs``).
    own_photon_noise: the noise each HST image already carries, which the survey noise only
        tops up, holds the object's own photon noise beside its sky's
        (``SlacsLens.variance_with_photons``, ``CosmosGalaxy.variance_with_photons``). Without
        it the top-up counted the sky's alone and left the degraded SLACS lenses 15-26% too
        noisy in HSC i within 1" of their centres (`python scripts/slacs_noise.py --top-up`).
    measured_noise_correlation: the HST images' noise carried through the degradation with its
        own correlation, exactly (``degrade.degraded_correlation_factor``): a SLACS image's as
        its border measures it with the border's structure taken out
        (``degrade.border_correlation``), a COSMOS stamp's from its correlation function.
        Without it the carried variance was multiplied by the variance of 4 x 4 block sums of
        the raw border (``degrade.block_sum_factor``), which also counts the border's structure
        and took the SLACS noise for 1.5-4.5x what it is in HSC and VIS, and by the COSMOS
        correlation function's sum (6.1; 4.0 is its effect in VIS).
    """
    from lensbench.datasets.storage import SplitWriter

    preset = get_survey(survey)
    band_names = list(bands) if bands is not None else list(preset.band_names)
    chosen = preset.select(band_names)
    size = stamp_size or preset.stamp_size
    rng = np.random.default_rng(seed)
    lenses = load_slacs(cutout, clean_cosmic_rays, sky_beside_halo)
    sources = CosmosSources()
    lens_colours, source_colours = real_split_colours(band_names, colours_from_f814w)
    cosmos_correlation = (sources.noise_correlation if measured_noise_correlation
                          else sources.noise_correlation_factor)
    images, rows = [], []
    psf = native_psf_args(match_native_psf)
    for k, lens in enumerate(lenses):
        planes = slacs_band_images(lens, band_names, lens_colours=lens_colours,
                                   source_colours=source_colours)
        images.append(degrade(lens.image, lens.pixel_scale, NANOMAGGY_ZEROPOINT, chosen,
                              arc_image=lens.arcs, seed=rng, stamp_size=size,
                              native_variance=(lens.variance_with_photons()
                                               if own_photon_noise else lens.noise_variance),
                              noise_correlation=(lens.noise_correlation
                                                 if measured_noise_correlation
                                                 else lens.block_sum_factor),
                              lens_colours=lens_colours, source_colours=source_colours, **psf))
        rows.append({"label": 1, "theta_e": lens.theta_e, "theta_e_ref": lens.theta_e_ref,
                     "z_lens": lens.z_lens, "z_source": lens.z_source, "z_phot": math.nan,
                     "arc_fraction": float(lens.arcs.sum() / lens.image.sum()), "kind": 1,
                     "object_index": k, **_mags(planes, band_names)})
    replace = n_nonlenses > len(sources)
    picks = rng.choice(len(sources), size=n_nonlenses, replace=replace)
    for k in picks:
        image, scale, mags, galaxy = sources._oriented(sources.galaxies[int(k)], rng)
        planes = cosmos_band_images(image, mags, band_names)
        native = (galaxy.variance_with_photons(image) if own_photon_noise
                  else galaxy.noise_variance)  # (e-/s)^2, per pixel or for all
        unit_var = native / galaxy.image.sum() ** 2
        variance = np.array([unit_var * 10 ** (-0.8 * (mags[b] - 22.5)) for b in band_names])
        images.append(degrade(planes, scale, NANOMAGGY_ZEROPOINT, chosen, seed=rng,
                              stamp_size=size, native_variance=variance,
                              noise_correlation=cosmos_correlation, **psf))
        rows.append({"label": 0, "theta_e": math.nan, "theta_e_ref": 0, "z_lens": math.nan,
                     "z_source": math.nan, "z_phot": galaxy.z_phot, "arc_fraction": 0.0,
                     "kind": 2, "object_index": int(k), **_mags(planes, band_names)})
    for analogue in bright_early_types(sources, n_bright_early_types,
                                       own_photon_noise=own_photon_noise):
        turns, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        image, variance = (_orient(a, turns, flip) for a in (analogue.image, analogue.variance))
        # Enlarged to its size at ANALOGUE_Z, its PSF with it.
        enlarged = analogue.pixel_scale / sources.galaxies[analogue.galaxy_index].pixel_scale
        analogue_psf = {**psf, "native_psf_scale": ACS_F814W_PSF_SCALE * enlarged} if psf else {}
        images.append(degrade(image, analogue.pixel_scale, NANOMAGGY_ZEROPOINT, chosen, seed=rng,
                              stamp_size=size, native_variance=variance,
                              noise_correlation=cosmos_correlation,
                              lens_colours=lens_colours, source_colours=source_colours,
                              **analogue_psf))
        planes = np.stack([image * colour_factor(lens_colours, b) for b in band_names])
        rows.append({"label": 0, "theta_e": math.nan, "theta_e_ref": 0, "z_lens": ANALOGUE_Z,
                     "z_source": math.nan, "z_phot": analogue.z_phot, "arc_fraction": 0.0,
                     "kind": 3, "object_index": analogue.galaxy_index,
                     **_mags(planes, band_names)})
    order = rng.permutation(len(images))
    stack = np.stack([images[i] for i in order]).astype(np.float32)
    truth = {key: np.array([rows[i][key] for i in order]) for key in rows[0]}
    for key in ("label", "theta_e_ref", "kind", "object_index"):
        truth[key] = truth[key].astype(np.int64 if key == "object_index" else np.int8)
    used = sorted({lens.file for lens in lenses}
                  | {f"{SLACS_DIR}/198x198/{lens.name}.fits" for lens in lenses}
                  | {SLACS_PARAMS, SLACS_TABLE} | set(sources.data_files)
                  | ({ACS_F814W_PSF} if match_native_psf else set()))
    config = {"kind": "real-lenses", "version": REAL_SPLIT_VERSION, "survey": survey,
              "bands": band_names, "stamp_size": size, "n_nonlenses": int(n_nonlenses),
              "cutout": cutout, "lens_colours": {b: lens_colours[b] for b in band_names},
              "source_colours": {b: source_colours[b] for b in band_names},
              "n_lenses": len(lenses)}
    # Only when used, so that the splits made before them keep their bytes.
    if n_bright_early_types:
        config |= {"n_bright_early_types": int(n_bright_early_types), "analogue_z": ANALOGUE_Z}
    if colours_from_f814w:
        config["colours_from_f814w"] = True
    if clean_cosmic_rays:
        config["clean_cosmic_rays"] = True
    if match_native_psf:
        config["match_native_psf"] = True
    if sky_beside_halo:
        config["sky_beside_halo"] = True
    data_files = registry.file_hashes(used)
    # The input files are part of the split's identity (content_hash covers the config).
    config["data_files_sha256"] = hashlib.sha256(
        json.dumps(data_files, sort_keys=True).encode()).hexdigest()
    out = Path(out_dir)
    with SplitWriter(out, config=config, seed=seed, bands=band_names, created_by=created_by,
                     data_files=data_files) as writer:
        writer.add_shard(stack, truth)
    return out


def _orient(image: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    image = np.rot90(image, turns)
    return np.ascontiguousarray(image[:, ::-1] if flip else image)


def _mags(planes: np.ndarray, bands: Sequence[str]) -> dict[str, float]:
    totals = planes.reshape(len(bands), -1).sum(axis=1)
    return {f"mag_{b}": float(22.5 - 2.5 * np.log10(t)) if t > 0 else math.nan
            for b, t in zip(bands, totals, strict=True)}
