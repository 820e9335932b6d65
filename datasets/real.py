"""Real observed galaxies for the simulator and the ``real-lenses`` split.

Two uses of HST imaging (files from the data registry, ``lensbench.datasets.registry``):

1. **COSMOS real sources** (``cosmos_hst_f814w``, GalSim RealGalaxyCatalog format, 0.03"/px):
   :class:`CosmosSources` loads the postage stamps and per-galaxy magnitudes;
   :func:`lensed_source_image` paints a stamp through a lens mapping (bilinear interpolation of
   the surface brightness at ray-traced source-plane positions,
   ``torch.nn.functional.grid_sample``).
   The HST PSF (FWHM ~0.1") is neglected: at ground resolution (PSF >= 0.6") a stamp counts as
   deconvolved to first order. For Euclid VIS (0.17") this widens the effective PSF by ~15%.
2. **Known lenses** (``slacs_hst_f814w`` + ``known_lens_tables``, 0.05"/px) and COSMOS galaxies as
   non-lenses, degraded to a ground survey preset by :func:`degrade_image` and written as a split
   by :func:`make_real_lens_split`.

Conventions as in ``lensbench.datasets.simulate``: arcsec, x along columns and y along rows (row
index increasing with y), the stamp centre at the array centre (a pixel corner for even sizes),
images sky-subtracted in nanomaggies (1 nMgy = AB 22.5).

Colours. HST gives one band (F814W, taken as i: F814W - i ~ 0.1 mag for these galaxies).
COSMOS galaxies carry their own HSC g, r, i, z, y magnitudes from the catalogue
(``*_fits.fits``): used as they are ("Y" takes y; "VIS" the mean r, i, z flux; "u" is g plus
``SOURCE_COLOURS`` u - g). SLACS cutouts are split into lens light and arcs (below), and scaled
from i to each band with ``config.LENS_COLOURS`` (lens; a passive early type at z ~ 0.5, so g and u
are ~1 mag redder than SLACS lenses at z ~ 0.2) and ``config.SOURCE_COLOURS`` (arcs), the tables
the simulator uses; both can be overridden.

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
import torch
from lensbench.datasets import registry
from lensbench.datasets.config import LENS_COLOURS, SOURCE_COLOURS
from lensbench.datasets.surveys import Band, Survey, get_survey

# Bump when a change here changes the images of a real-lenses split of a given config and seed.
REAL_SPLIT_VERSION = 1

COSMOS_DIR = "cosmos_hst_f814w"
COSMOS_CATALOGUE = f"{COSMOS_DIR}/real_galaxy_catalog_26_extension_example.fits"
COSMOS_MAGS = f"{COSMOS_DIR}/real_galaxy_catalog_26_extension_example_fits.fits"
COSMOS_NOISE_CF = f"{COSMOS_DIR}/acs_I_unrot_sci_20_cf.fits"
SLACS_DIR = "slacs_hst_f814w"
SLACS_PARAMS = f"{SLACS_DIR}/slacs_params.csv"
SLACS_TABLE = "known_lens_tables/slacs_auger2010_shajib2021.csv"
SLACS_CUTOUTS = ("99x99", "198x198")
CATALOGUE_BANDS = ("g", "r", "i", "z", "y")  # HSC magnitudes in the COSMOS catalogue
ARCSEC_PER_DEG = 3600.0
# theta_e_ref codes in the real-lenses truth
THETA_E_FROM_AUGER_SHAJIB, THETA_E_FROM_SLACS_MATCH = 1, 2


# ------------------------------------------------------------------------------------ COSMOS
def _fits():
    from astropy.io import fits

    return fits


def cosmos_band_magnitudes(catalogue_mags: dict[str, float], f814w: float) -> dict[str, float]:
    """AB magnitudes of one COSMOS galaxy in every band name the survey presets use.

    ``catalogue_mags``: HSC g, r, i, z, y from the catalogue (missing or non-finite ones are
    replaced by ``f814w`` + the typical source colour, ``SOURCE_COLOURS``)."""
    mags = {}
    for band in CATALOGUE_BANDS:
        value = catalogue_mags.get(band)
        ok = value is not None and math.isfinite(value) and 10 < value < 40
        mags[band] = float(value) if ok else f814w + SOURCE_COLOURS[band] - SOURCE_COLOURS["i"]
    mags["Y"] = mags["y"]
    flux = np.mean([10 ** (-0.4 * mags[b]) for b in ("r", "i", "z")])
    mags["VIS"] = float(-2.5 * np.log10(flux))
    mags["u"] = mags["g"] + SOURCE_COLOURS["u"] - SOURCE_COLOURS["g"]
    mags["F814W"] = float(f814w)
    return mags


@dataclass
class CosmosGalaxy:
    """One COSMOS stamp: image (HST e-/s per pixel, float64, (h, w)), pixel scale (arcsec),
    F814W magnitude, magnitudes by band, noise variance per pixel (same units as the image)."""

    ident: int
    image: np.ndarray
    pixel_scale: float
    f814w: float
    mags: dict[str, float]
    noise_variance: float
    z_phot: float


class CosmosSources:
    """The COSMOS RealGalaxyCatalog stamps of the data registry (``cosmos_hst_f814w``).

    ``sample(rng, n)`` draws galaxies (with replacement), each randomly rotated by a multiple of
    90 degrees and flipped: ``[(image, pixel_scale, mags), ...]``. Galaxies with non-finite pixels
    or a non-positive total flux are skipped and listed in ``problems``."""

    def __init__(self) -> None:
        fits = _fits()
        paths = registry.fetch_many([COSMOS_CATALOGUE, COSMOS_MAGS, COSMOS_NOISE_CF])
        with fits.open(paths[COSMOS_CATALOGUE]) as hdul:
            cat = hdul[1].data
            rows = {name: np.asarray(cat[name]) for name in cat.columns.names}
        with fits.open(paths[COSMOS_MAGS]) as hdul:
            extra = hdul[1].data
            by_ident = {int(i): k for k, i in enumerate(extra["IDENT"])}
            extra_cols = {name: np.asarray(extra[name]) for name in extra.columns.names}
        with fits.open(paths[COSMOS_NOISE_CF]) as hdul:
            cf = np.asarray(hdul[0].data, dtype=np.float64)
        centre = cf[cf.shape[0] // 2, cf.shape[1] // 2]
        # Variance of large-scale sums relative to white noise of the same pixel variance.
        self.noise_correlation_factor = float(cf.sum() / centre) if centre > 0 else 1.0

        files = sorted({COSMOS_CATALOGUE, COSMOS_MAGS, COSMOS_NOISE_CF}
                       | {f"{COSMOS_DIR}/{_text(f)}" for f in rows["GAL_FILENAME"]})
        self.data_files = registry.file_hashes(files)
        images = {name: registry.fetch(name) for name in files if name.endswith(".fits")}
        self.galaxies: list[CosmosGalaxy] = []
        self.problems: list[str] = []
        opened: dict[str, object] = {}
        try:
            for k in range(len(rows["IDENT"])):
                ident = int(rows["IDENT"][k])
                gal_file = f"{COSMOS_DIR}/{_text(rows['GAL_FILENAME'][k])}"
                if gal_file not in opened:
                    opened[gal_file] = fits.open(images[gal_file], memmap=False)
                image = np.asarray(opened[gal_file][int(rows["GAL_HDU"][k])].data,
                                   dtype=np.float64)
                where = f"{gal_file} HDU {int(rows['GAL_HDU'][k])} (IDENT {ident})"
                if image.ndim != 2 or not np.all(np.isfinite(image)):
                    self.problems.append(f"{where}: not a finite 2-D image")
                    continue
                if image.sum() <= 0:
                    self.problems.append(f"{where}: total flux {image.sum():.3g} <= 0")
                    continue
                j = by_ident.get(ident)
                catalogue_mags = ({} if j is None else
                                  {b: float(extra_cols[f"HSC_{b}"][j]) for b in CATALOGUE_BANDS})
                f814w = float(rows["MAG"][k])
                self.galaxies.append(CosmosGalaxy(
                    ident=ident, image=image, pixel_scale=float(rows["PIXEL_SCALE"][k]),
                    f814w=f814w, mags=cosmos_band_magnitudes(catalogue_mags, f814w),
                    noise_variance=float(rows["NOISE_VARIANCE"][k]),
                    z_phot=float(extra_cols["ZPHOT"][j]) if j is not None else math.nan))
        finally:
            for hdul in opened.values():
                hdul.close()
        if not self.galaxies:
            raise ValueError(f"no usable COSMOS galaxy in {COSMOS_CATALOGUE}: {self.problems}")

    def __len__(self) -> int:
        return len(self.galaxies)

    def sample(self, rng: np.random.Generator, n: int
               ) -> list[tuple[np.ndarray, float, dict[str, float]]]:
        """``n`` random galaxies: (image (h, w) float64 in HST e-/s, pixel scale in arcsec,
        magnitudes by band), each rotated by k x 90 degrees and flipped at random."""
        return [self._oriented(self.galaxies[int(i)], rng)[:3]
                for i in rng.integers(0, len(self.galaxies), n)]

    def sample_batch(self, rng: np.random.Generator, n: int, bands: Sequence[str]
                     ) -> tuple[list[np.ndarray], np.ndarray, dict[str, np.ndarray]]:
        """For the simulator: ``(stamps, pixel_scales (n,), {band: magnitudes (n,)})`` of ``n``
        random oriented galaxies; pass ``stamps``/``pixel_scales`` to :func:`lensed_source_image`
        and scale its unit-flux output by ``10 ** (-0.4 * (mag - ZP))``."""
        drawn = self.sample(rng, n)
        stamps = [d[0] for d in drawn]
        scales = np.array([d[1] for d in drawn])
        mags = {b: np.array([d[2][b] for d in drawn]) for b in bands}
        return stamps, scales, mags

    @staticmethod
    def _oriented(galaxy: CosmosGalaxy, rng: np.random.Generator):
        image = np.rot90(galaxy.image, int(rng.integers(4)))
        if rng.random() < 0.5:
            image = image[:, ::-1]
        return np.ascontiguousarray(image), galaxy.pixel_scale, dict(galaxy.mags), galaxy


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value).strip()


# ------------------------------------------------------------------------------------ lensing
def _stack_stamps(stamps, n: int, dtype, device):
    """Zero-pad stamps to a common (H, W); return (n, 1, H, W) tensor and the stamp centres'
    offsets from the padded array centres in pixels (n,), (n,) (0 or -0.5)."""
    if isinstance(stamps, (np.ndarray, torch.Tensor)) and np.ndim(stamps) in (2, 3):
        t = torch.as_tensor(np.asarray(stamps) if isinstance(stamps, np.ndarray) else stamps,
                            dtype=dtype, device=device)
        if t.ndim == 2:
            t = t[None]
        t = t.expand(n, -1, -1) if t.shape[0] == 1 else t
        if t.shape[0] != n:
            raise ValueError(f"{t.shape[0]} stamps for {n} systems")
        zeros = torch.zeros(n, dtype=dtype, device=device)
        return t[:, None], zeros, zeros
    stamps = list(stamps)
    if len(stamps) == 1:
        stamps = stamps * n
    if len(stamps) != n:
        raise ValueError(f"{len(stamps)} stamps for {n} systems")
    height = max(np.shape(s)[0] for s in stamps)
    width = max(np.shape(s)[1] for s in stamps)
    out = torch.zeros((n, 1, height, width), dtype=dtype, device=device)
    off_x, off_y = torch.zeros(n, dtype=dtype), torch.zeros(n, dtype=dtype)
    for k, s in enumerate(stamps):
        h, w = np.shape(s)
        top, left = (height - h) // 2, (width - w) // 2
        out[k, 0, top:top + h, left:left + w] = torch.as_tensor(np.asarray(s), dtype=dtype)
        off_y[k] = top + h / 2 - height / 2
        off_x[k] = left + w / 2 - width / 2
    return out, off_x.to(device), off_y.to(device)


def _per_system(value, n: int, dtype, device) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=dtype, device=device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"expected a scalar or {n} values, got {t.numel()}")
    return t[:, None, None]


def lensed_source_image(stamp, stamp_pixel_scale, beta_x: torch.Tensor, beta_y: torch.Tensor,
                        centre_x, centre_y, *, subpixel_area: float | None = None,
                        smooth_to: float | None = None) -> torch.Tensor:
    """Surface brightness of real source stamps at source-plane positions, unit total flux.

    stamp: one image (h, w), a stack (n, h, w), or a list of n images of any sizes (zero-padded
        about their centres), flux per pixel in any unit; each is normalised to unit total flux.
    stamp_pixel_scale: arcsec per stamp pixel, scalar or (n,).
    beta_x, beta_y: source-plane positions (arcsec) of the image-plane (sub)pixels, (n, Hs, Ws),
        e.g. ``lensbench.datasets.simulate.source_plane`` on the simulator's supersampled grid
        (beta = theta gives the unlensed source).
    centre_x, centre_y: source-plane position (arcsec) of each stamp's centre, scalar or (n,).
    subpixel_area: arcsec^2 of one image-plane (sub)pixel. None: return the surface brightness in
        (unit flux) / arcsec^2; given: flux per subpixel (SB x area), i.e. what the simulator's
        unit-flux component maps hold, summing to the magnification.
    smooth_to: arcsec; if larger than the stamp pixel, the stamp is first box-filtered to about
        this width (anti-aliasing when the source plane is sampled more coarsely than the stamp).

    Bilinear interpolation (``grid_sample``, zeros outside the stamp) conserves surface
    brightness, as lensing does. Returns (n, Hs, Ws) in the dtype/device of ``beta_x``.
    """
    if beta_x.shape != beta_y.shape or beta_x.ndim != 3:
        raise ValueError(f"beta_x, beta_y must both be (n, Hs, Ws), got {tuple(beta_x.shape)} "
                         f"and {tuple(beta_y.shape)}")
    n, dtype, device = beta_x.shape[0], beta_x.dtype, beta_x.device
    images, off_x, off_y = _stack_stamps(stamp, n, dtype, device)
    scale = _per_system(stamp_pixel_scale, n, dtype, device)
    totals = images.sum(dim=(1, 2, 3), keepdim=True)
    if torch.any(totals <= 0):
        raise ValueError("every stamp needs a positive total flux")
    images = images / totals / scale[:, None] ** 2  # surface brightness, unit flux / arcsec^2
    if smooth_to is not None:
        width = int(round(float(smooth_to) / float(scale.min())))
        width += 1 - width % 2  # odd: keeps the centre
        if width > 1:
            pad = width // 2
            box = torch.full((1, 1, width, width), 1.0 / width**2, dtype=dtype, device=device)
            images = torch.nn.functional.conv2d(images, box, padding=2 * pad)
    height, width_px = images.shape[-2:]
    cx = _per_system(centre_x, n, dtype, device) + off_x[:, None, None] * scale
    cy = _per_system(centre_y, n, dtype, device) + off_y[:, None, None] * scale
    # align_corners=False: -1 and +1 are the outer edges of the first and last pixels.
    gx = (beta_x - cx) / (0.5 * width_px * scale)
    gy = (beta_y - cy) / (0.5 * height * scale)
    grid = torch.stack([gx, gy], dim=-1)
    out = torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=False)[:, 0]
    return out * subpixel_area if subpixel_area is not None else out


# ------------------------------------------------------------------------------------ degrading
def _overlap_matrix(n_in: int, in_scale: float, n_out: int, out_scale: float) -> np.ndarray:
    """(n_out, n_in): fraction of each input pixel falling in each output pixel, both grids
    centred on 0 (exact area-weighted rebinning along one axis)."""
    e_in = (np.arange(n_in + 1) - n_in / 2) * in_scale
    e_out = (np.arange(n_out + 1) - n_out / 2) * out_scale
    lo = np.maximum(e_out[:-1, None], e_in[None, :-1])
    hi = np.minimum(e_out[1:, None], e_in[None, 1:])
    return np.clip(hi - lo, 0, None) / in_scale


def rebin_flux(image: np.ndarray, in_scale: float, out_scale: float, out_shape: tuple[int, int],
               variance: bool = False) -> np.ndarray:
    """Resample ``image`` (..., h, w) of flux per pixel (pixel side ``in_scale`` arcsec) onto a
    grid of ``out_shape`` pixels of side ``out_scale`` with the same centre, by exact pixel-area
    overlap: flux is conserved where the output grid covers the input. With ``variance`` the
    input is a per-pixel variance of white noise and the squared weights are used."""
    my = _overlap_matrix(image.shape[-2], in_scale, out_shape[0], out_scale)
    mx = _overlap_matrix(image.shape[-1], in_scale, out_shape[1], out_scale)
    if variance:
        my, mx = my**2, mx**2
    return my @ image @ mx.T


def survey_psf_kernels(survey: Survey) -> list[np.ndarray]:
    """The preset's analytic PSF kernel per band (``psf.psf_kernel``), at its pixel scale."""
    from lensbench.datasets.psf import psf_kernel

    return [psf_kernel(survey.psf_model, band.psf_fwhm, band.pixel_scale, survey.moffat_beta)
            for band in survey.bands]


def degrade_image(image: np.ndarray, pixel_scale: float, survey: str | Survey, *,
                  bands: Sequence[str] | None = None, stamp_size: int | None = None,
                  rng: np.random.Generator | None = None, native_variance=None,
                  correlation_factor: float = 1.0) -> np.ndarray:
    """Observe a high-resolution image as a ground survey does: (B, H, W) float32 nanomaggies.

    image: (B, h, w) (or (h, w) for all bands) flux per pixel in nanomaggies per band, centred
        on the stamp centre, pixel side ``pixel_scale`` arcsec.
    Steps per band: exact flux-conserving rebinning to the survey pixel (:func:`rebin_flux`) on
    a canvas wider than the stamp by the PSF half-width, convolution with the preset's PSF
    (``scipy.signal.fftconvolve``), crop to ``stamp_size``. With ``rng``: noise as in the
    simulator, in electrons of the total exposure (Poisson of source + sky as a Gaussian, read
    noise per exposure), minus the variance the input already carries: ``native_variance`` per
    input pixel (nMgy^2, scalar or (B,) or (B, h, w)), propagated as white noise times
    ``correlation_factor``. Without ``rng`` the noise-free expectation is returned.
    """
    from scipy.signal import fftconvolve

    survey = get_survey(survey) if isinstance(survey, str) else survey
    if bands is not None:
        survey = survey.select(bands)
    size = stamp_size or survey.stamp_size
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = np.broadcast_to(image, (len(survey.bands), *image.shape))
    if image.shape[0] != len(survey.bands):
        raise ValueError(f"image has {image.shape[0]} bands, survey selection has "
                         f"{len(survey.bands)} ({list(survey.band_names)})")
    kernels = survey_psf_kernels(survey)
    pad = max(k.shape[0] for k in kernels) // 2
    canvas = size + 2 * pad
    out_scale = survey.pixel_scale
    out = np.empty((len(survey.bands), size, size), dtype=np.float32)
    variance_in = None
    if rng is not None and native_variance is not None:
        variance_in = np.broadcast_to(
            np.asarray(native_variance, dtype=np.float64).reshape(
                (-1, 1, 1) if np.ndim(native_variance) == 1 else np.shape(native_variance)),
            image.shape)
    for b, (band, kernel) in enumerate(zip(survey.bands, kernels, strict=True)):
        binned = rebin_flux(image[b], pixel_scale, out_scale, (canvas, canvas))
        expected = fftconvolve(binned, kernel, mode="same")[pad:pad + size, pad:pad + size]
        if rng is None:
            out[b] = expected
            continue
        out[b] = _add_noise(expected, band, rng, None if variance_in is None else
                            _degraded_variance(variance_in[b], pixel_scale, out_scale, canvas,
                                               kernel, pad, size) * correlation_factor)
    return out


def _degraded_variance(variance: np.ndarray, in_scale: float, out_scale: float, canvas: int,
                       kernel: np.ndarray, pad: int, size: int) -> np.ndarray:
    from scipy.signal import fftconvolve

    binned = rebin_flux(variance, in_scale, out_scale, (canvas, canvas), variance=True)
    return np.clip(fftconvolve(binned, kernel**2, mode="same"), 0, None)[pad:pad + size,
                                                                         pad:pad + size]


def _add_noise(expected_nmgy: np.ndarray, band: Band, rng: np.random.Generator,
               native_variance_nmgy: np.ndarray | None) -> np.ndarray:
    epn = band.electrons_per_nanomaggy
    electrons = expected_nmgy * epn
    target = np.clip(electrons, 0, None) + band.sky_counts + band.n_exposures * band.read_noise**2
    if native_variance_nmgy is not None:
        target = np.clip(target - native_variance_nmgy * epn**2, 0, None)
    noisy = electrons + np.sqrt(target) * rng.standard_normal(electrons.shape)
    return noisy / epn


def _colour_factor(colours: dict[str, float], band: str) -> float:
    """Flux in ``band`` per unit flux in i, for a colour table of (band - i) magnitudes."""
    if band not in colours:
        raise ValueError(f"no colour for band {band!r} in {sorted(colours)}")
    return 10 ** (-0.4 * (colours[band] - colours["i"]))


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
    correlation_factor: float  # variance of 4x4 block sums / 16 pixel variances (border)
    theta_e: float
    theta_e_ref: int  # THETA_E_FROM_AUGER_SHAJIB or THETA_E_FROM_SLACS_MATCH
    z_lens: float
    z_source: float
    arcs: np.ndarray = field(repr=False, default=None)  # nMgy per pixel, part of ``image``

    @property
    def lens_light(self) -> np.ndarray:
        return self.image - self.arcs

    @property
    def mag_f814w(self) -> float:
        return float(22.5 - 2.5 * np.log10(max(self.image.sum(), 1e-12)))


def _leading_float(text: str) -> float:
    match = re.match(r"\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)", text or "")
    return float(match.group(1)) if match else math.nan


@cache
def slacs_parameters() -> dict[str, dict[str, float]]:
    """Per lens name (``SDSSJhhmm+ddmm``): theta_e, theta_e_ref, z_lens, z_source, q, pa.

    theta_E is the SIE Einstein radius of Auger et al. 2010 / Shajib et al. 2021 where that
    table lists the lens, else the slacs-match (GLASS) model's R_Einstein."""
    out: dict[str, dict[str, float]] = {}
    with open(registry.fetch(SLACS_PARAMS), newline="") as f:
        for row in csv.DictReader(f):
            name = row["Name"].strip()
            out[name] = {"theta_e": _leading_float(row["/R_{Einstein} [arcsec]/"]),
                         "theta_e_ref": THETA_E_FROM_SLACS_MATCH,
                         "z_lens": _leading_float(row["z_{l}"]),
                         "z_source": _leading_float(row["z_{s}"]),
                         "q": _leading_float(row["q_{ref}"]),
                         "pa": _leading_float(row["PA_{ref} [deg]"])}
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
    return out


def _border(image: np.ndarray, width: int) -> list[np.ndarray]:
    return [image[:width], image[-width:], image[:, :width].T, image[:, -width:].T]


def _border_noise(image: np.ndarray, width: int = 12, block: int = 4
                  ) -> tuple[float, float, float]:
    """Median, robust per-pixel sigma and block-sum correlation factor of the image border."""
    strips = _border(image, width)
    pixels = np.concatenate([s.ravel() for s in strips])
    median = float(np.median(pixels))
    sigma = float(1.4826 * np.median(np.abs(pixels - median)))
    sums = []
    for s in strips:
        s = s - median
        h, w = (s.shape[0] // block) * block, (s.shape[1] // block) * block
        sums.append(s[:h, :w].reshape(h // block, block, w // block, block).sum((1, 3)).ravel())
    sums = np.concatenate(sums)
    block_sigma = 1.4826 * np.median(np.abs(sums - np.median(sums)))
    factor = (block_sigma / (block * sigma)) ** 2 if sigma > 0 else 1.0
    return median, sigma, float(np.clip(factor, 1.0, 10.0))


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


def load_slacs(cutout: str = "198x198") -> list[SlacsLens]:
    """The SLACS lenses of the data registry with a cutout of size ``cutout`` ("99x99" or
    "198x198") and an Einstein radius in the tables; background and noise from the 198x198
    cutout's border."""
    fits = _fits()
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
        cd = [[float(header.get(f"CD{i}_{j}", 0.0)) for j in (1, 2)] for i in (1, 2)]
        # sqrt |det CD|: the pixel side also for rotated frames (SDSSJ0737 has ORIENTAT -76).
        scale = math.sqrt(abs(cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0])) * ARCSEC_PER_DEG
        zp_ab = (-2.5 * math.log10(float(header["PHOTFLAM"]))
                 - 5.0 * math.log10(float(header["PHOTPLAM"])) - 2.408)
        to_nmgy = 10 ** (-0.4 * (zp_ab - 22.5))
        background, sigma, factor = _border_noise(wide)
        image = (data - background) * to_nmgy
        entry = params[lens]
        arcs = split_arcs(image, scale, entry["theta_e"], sigma * to_nmgy)
        lenses.append(SlacsLens(
            name=lens, file=name, image=image, pixel_scale=scale, zeropoint_ab=zp_ab,
            background=background * to_nmgy, noise_variance=(sigma * to_nmgy) ** 2,
            correlation_factor=factor, theta_e=entry["theta_e"],
            theta_e_ref=int(entry["theta_e_ref"]), z_lens=entry["z_lens"],
            z_source=entry["z_source"], arcs=arcs))
    return lenses


def slacs_band_images(lens: SlacsLens, bands: Sequence[str], *,
                      lens_colours: dict[str, float] | None = None,
                      source_colours: dict[str, float] | None = None) -> np.ndarray:
    """(B, h, w) nMgy at HST resolution: lens light and arcs scaled from i (F814W) by colours."""
    lens_colours = lens_colours or LENS_COLOURS
    source_colours = source_colours or SOURCE_COLOURS
    light, arcs = lens.lens_light, lens.arcs
    return np.stack([light * _colour_factor(lens_colours, b)
                     + arcs * _colour_factor(source_colours, b) for b in bands])


def cosmos_band_images(galaxy_image: np.ndarray, mags: dict[str, float], bands: Sequence[str]
                       ) -> np.ndarray:
    """(B, h, w) nMgy: a COSMOS stamp scaled to its magnitude in each band."""
    unit = galaxy_image / galaxy_image.sum()
    return np.stack([unit * 10 ** (-0.4 * (mags[b] - 22.5)) for b in bands])


# ------------------------------------------------------------------------------------ split
def make_real_lens_split(survey: str, bands: Sequence[str] | None, stamp_size: int | None,
                         out_dir, seed: int = 0, n_nonlenses: int = 100, *,
                         cutout: str = "198x198", created_by: str = "lensbench") -> Path:
    """Write the ``real-lenses`` test split: degraded SLACS lenses (label 1, theta_e from the
    tables) and degraded COSMOS galaxies (label 0, randomly oriented; drawn without replacement
    while there are enough) observed with the preset ``survey`` (its ``bands`` or all, at
    ``stamp_size`` or its default). Rows are shuffled with ``seed``; the same arguments give the
    same bytes. The manifest's ``data_files`` lists name -> sha256 of every real file used.

    Truth columns: label, theta_e (NaN for non-lenses), theta_e_ref, z_lens, z_source (NaN where
    unknown), z_phot (COSMOS), mag_<band> (AB, before noise), arc_fraction (share of the i-band
    flux assigned to arcs), kind (1 SLACS, 2 COSMOS), object_index (into load_slacs() or
    CosmosSources().galaxies).
    """
    from lensbench.datasets.storage import SplitWriter

    preset = get_survey(survey)
    band_names = list(bands) if bands is not None else list(preset.band_names)
    chosen = preset.select(band_names)
    size = stamp_size or preset.stamp_size
    rng = np.random.default_rng(seed)
    lenses = load_slacs(cutout)
    sources = CosmosSources()
    images, rows = [], []
    for k, lens in enumerate(lenses):
        planes = slacs_band_images(lens, band_names)
        variance = np.array([lens.noise_variance * _colour_factor(LENS_COLOURS, b) ** 2
                             for b in band_names])
        images.append(degrade_image(planes, lens.pixel_scale, chosen, stamp_size=size, rng=rng,
                                    native_variance=variance,
                                    correlation_factor=lens.correlation_factor))
        rows.append({"label": 1, "theta_e": lens.theta_e, "theta_e_ref": lens.theta_e_ref,
                     "z_lens": lens.z_lens, "z_source": lens.z_source, "z_phot": math.nan,
                     "arc_fraction": float(lens.arcs.sum() / lens.image.sum()), "kind": 1,
                     "object_index": k, **_mags(planes, band_names)})
    replace = n_nonlenses > len(sources)
    picks = rng.choice(len(sources), size=n_nonlenses, replace=replace)
    for k in picks:
        image, scale, mags, galaxy = sources._oriented(sources.galaxies[int(k)], rng)
        planes = cosmos_band_images(image, mags, band_names)
        unit_var = galaxy.noise_variance / galaxy.image.sum() ** 2
        variance = np.array([unit_var * 10 ** (-0.8 * (mags[b] - 22.5)) for b in band_names])
        images.append(degrade_image(planes, scale, chosen, stamp_size=size, rng=rng,
                                    native_variance=variance,
                                    correlation_factor=sources.noise_correlation_factor))
        rows.append({"label": 0, "theta_e": math.nan, "theta_e_ref": 0, "z_lens": math.nan,
                     "z_source": math.nan, "z_phot": galaxy.z_phot, "arc_fraction": 0.0,
                     "kind": 2, "object_index": int(k), **_mags(planes, band_names)})
    order = rng.permutation(len(images))
    stack = np.stack([images[i] for i in order]).astype(np.float32)
    truth = {key: np.array([rows[i][key] for i in order]) for key in rows[0]}
    for key in ("label", "theta_e_ref", "kind", "object_index"):
        truth[key] = truth[key].astype(np.int64 if key == "object_index" else np.int8)
    used = sorted({lens.file for lens in lenses}
                  | {f"{SLACS_DIR}/198x198/{lens.name}.fits" for lens in lenses}
                  | {SLACS_PARAMS, SLACS_TABLE} | set(sources.data_files))
    config = {"kind": "real-lenses", "version": REAL_SPLIT_VERSION, "survey": survey,
              "bands": band_names, "stamp_size": size, "n_nonlenses": int(n_nonlenses),
              "cutout": cutout, "lens_colours": {b: LENS_COLOURS[b] for b in band_names},
              "source_colours": {b: SOURCE_COLOURS[b] for b in band_names},
              "n_lenses": len(lenses)}
    data_files = registry.file_hashes(used)
    # The input files are part of the split's identity (content_hash covers the config).
    config["data_files_sha256"] = hashlib.sha256(
        json.dumps(data_files, sort_keys=True).encode()).hexdigest()
    out = Path(out_dir)
    with SplitWriter(out, config=config, seed=seed, bands=band_names, created_by=created_by,
                     data_files=data_files) as writer:
        writer.add_shard(stack, truth)
    return out


def _mags(planes: np.ndarray, bands: Sequence[str]) -> dict[str, float]:
    totals = planes.reshape(len(bands), -1).sum(axis=1)
    return {f"mag_{b}": float(22.5 - 2.5 * np.log10(t)) if t > 0 else math.nan
            for b, t in zip(bands, totals, strict=True)}
