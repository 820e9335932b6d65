"""Known lenses (SLACS, HST ACS F814W, 0.05"/px) and real non-lenses (COSMOS galaxies) observed
with a survey preset: the ``real-lenses`` split.

SLACS cutouts (``slacs_hst_f814w`` + ``known_lens_tables`` of the data registry) are split into
lens light and arcs (:func:`split_arcs`) and scaled from i to each band with
``config.LENS_COLOURS`` (lens; a passive early type at z ~ 0.5, so g and u are ~1 mag redder than
SLACS lenses at z ~ 0.2) and ``config.SOURCE_COLOURS`` (arcs), the tables the simulator uses;
both can be overridden. COSMOS galaxies (``lensbench.datasets.cosmos``) keep their catalogue
magnitudes. Both are degraded to a survey preset by :func:`degrade_image` and written as a split
by :func:`make_real_lens_split`. Conventions as in ``lensbench.datasets.cosmos``.

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
from lensbench.datasets.config import LENS_COLOURS, SOURCE_COLOURS
from lensbench.datasets.cosmos import CosmosSources, cosmos_band_images
from lensbench.datasets.surveys import Band, Survey, get_survey

# Bump when a change here changes the images of a real-lenses split of a given config and seed.
REAL_SPLIT_VERSION = 1

SLACS_DIR = "slacs_hst_f814w"
SLACS_PARAMS = f"{SLACS_DIR}/slacs_params.csv"
SLACS_TABLE = "known_lens_tables/slacs_auger2010_shajib2021.csv"
SLACS_CUTOUTS = ("99x99", "198x198")
ARCSEC_PER_DEG = 3600.0
# theta_e_ref codes in the real-lenses truth
THETA_E_FROM_AUGER_SHAJIB, THETA_E_FROM_SLACS_MATCH = 1, 2


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
