"""Real COSMOS galaxies (HST ACS F814W, 0.03"/px) as sources for the simulator and as real
non-lenses.

:class:`CosmosSources` loads the postage stamps of the data registry's ``cosmos_hst_f814w``
(GalSim RealGalaxyCatalog format; ``lensbench.datasets.registry``) and per-galaxy magnitudes;
:func:`clean_stamp` zeroes a stamp's blank-sky noise before it is rescaled;
:func:`lensed_source_image` paints a stamp through a lens mapping (bilinear interpolation of the
surface brightness at ray-traced source-plane positions, ``torch.nn.functional.grid_sample``).
As lensed sources the stamps keep the HST PSF (FWHM ~0.1"): at ground resolution (PSF >= 0.6")
a stamp counts as deconvolved to first order; for Euclid VIS (0.17") it widens the source's
effective PSF. As real non-lenses (``known_lenses.make_real_lens_split``) their HST PSF is
matched to the survey's where the task asks for it (``degrade.matching_kernel``).

Conventions as in ``lensbench.datasets.simulate``: arcsec, x along columns and y along rows (row
index increasing with y), the stamp centre at the array centre (a pixel corner for even sizes),
images sky-subtracted in nanomaggies (1 nMgy = AB 22.5).

Colours. HST gives one band (F814W, taken as i: F814W - i ~ 0.1 mag for these galaxies).
COSMOS galaxies carry their own HSC g, r, i, z, y magnitudes from the catalogue
(``*_fits.fits``): used as they are ("Y" takes y; "VIS" the mean r, i, z flux; "u" is g plus
``SOURCE_COLOURS`` u - g).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from lensbench.datasets import registry
from lensbench.datasets.config import SOURCE_COLOURS

COSMOS_DIR = "cosmos_hst_f814w"
COSMOS_CATALOGUE = f"{COSMOS_DIR}/real_galaxy_catalog_26_extension_example.fits"
COSMOS_MAGS = f"{COSMOS_DIR}/real_galaxy_catalog_26_extension_example_fits.fits"
COSMOS_NOISE_CF = f"{COSMOS_DIR}/acs_I_unrot_sci_20_cf.fits"
# Each COSMOS ACS/WFC F814W tile is one orbit of 4 dithered 507 s exposures (Koekemoer et al.
# 2007, ApJS 172, 196): the exposure a stamp's own photon noise comes from (its catalogue noise
# variance is the sky's).
COSMOS_EXPOSURE_S = 2028.0
CATALOGUE_BANDS = ("g", "r", "i", "z", "y")  # HSC magnitudes in the COSMOS catalogue


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

    def variance_with_photons(self, image: np.ndarray | None = None) -> np.ndarray:
        """The noise variance per pixel ((e-/s)^2) of ``image`` (this galaxy's stamp, e.g.
        oriented; default: the stamp as it is): the sky's ``noise_variance`` and the galaxy's
        own photon noise in COSMOS_EXPOSURE_S."""
        from lensbench.datasets.degrade import noise_variance_with_photons

        return noise_variance_with_photons(self.image if image is None else image,
                                           math.sqrt(self.noise_variance), COSMOS_EXPOSURE_S)


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
        # The noise's correlation at each pixel lag (GalSim's correlation function of the COSMOS
        # F814W noise, centre 1): degrade carries it through each survey's degradation.
        self.noise_correlation = cf / centre if centre > 0 else np.ones((1, 1))
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



def clean_stamp(image: np.ndarray, noise_variance: float, correlation_factor: float = 1.0,
                threshold: float = 3.0, min_area: int = 15, grow: int = 3) -> np.ndarray:
    """An HST stamp with the blank-sky noise set to zero: pixels outside the (``grow``-pixel
    dilated) regions where the 5x5 box mean exceeds ``threshold`` sigma of that mean
    (``noise_variance`` per pixel, times ``correlation_factor`` for sums), in regions of at least
    ``min_area`` pixels. Rescaling a faint stamp to a bright source magnitude would otherwise
    amplify its noise into a visible square patch (x2 the HSC sky noise at i = 22.5 for the
    median COSMOS stamp). Noise on the galaxy itself stays."""
    from scipy import ndimage

    smoothed = ndimage.uniform_filter(image, size=5, mode="constant")
    sigma = math.sqrt(noise_variance * correlation_factor) / 5.0
    labels, count = ndimage.label(smoothed > threshold * sigma)
    if count == 0:
        return image
    areas = ndimage.sum_labels(np.ones_like(image), labels, index=np.arange(1, count + 1))
    keep = np.isin(labels, 1 + np.flatnonzero(areas >= min_area))
    if not keep.any():
        return image
    mask = ndimage.binary_dilation(keep, iterations=grow)
    return np.where(mask, image, 0.0)


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


def cosmos_band_images(galaxy_image: np.ndarray, mags: dict[str, float], bands: Sequence[str]
                       ) -> np.ndarray:
    """(B, h, w) nMgy: a COSMOS stamp scaled to its magnitude in each band."""
    unit = galaxy_image / galaxy_image.sum()
    return np.stack([unit * 10 ** (-0.4 * (mags[b] - 22.5)) for b in bands])


# ------------------------------------------------------------------------------------ bright ETGs
# Real non-lenses as bright as the SLACS lenses (issue 22.4). SLACS lenses are massive early-type
# galaxies at z ~ 0.1-0.3 (median z_lens ~ 0.2, Bolton et al. 2008, ApJ 682, 964) with
# i ~ 16-18; the shared COSMOS stamps are field galaxies at z ~ 0.4-1.5 and i ~ 20-25. A COSMOS
# galaxy at z_phot is rendered as it would look at ANALOGUE_Z: the same pixels with the pixel side
# scaled by D_A(z_phot) / D_A(ANALOGUE_Z) and the flux (f_nu in a fixed band, flat spectrum) by
# (D_L(z_phot) / D_L(ANALOGUE_Z))^2 (1 + ANALOGUE_Z) / (1 + z_phot), Planck 2018 cosmology. The
# K-correction of an old population from rest ~4000 A to ~6600 A (about 1 mag brighter) and its
# passive fading since z ~ 1 (about 1 mag, Treu et al. 2005) roughly cancel and are neglected.
# Enlarging a stamp by s also enlarges its HST PSF (0.1") to s x 0.1": negligible against a
# ground PSF (>= 0.6"), but for Euclid VIS (0.17") such an analogue can be blurrier than a real
# galaxy at ANALOGUE_Z; PSF matching then leaves it its own (wider) PSF.
ANALOGUE_Z = 0.2
# Early type by colour: observed g - i at least that of the simulator's Sbc disk
# (config.DISK_COLOURS, g - i = 1.0); star-forming galaxies (flat f_nu) have g - i ~ 0.2.
# (Concentration was not usable as a criterion: at 0.03"/px the HST PSF makes r90/r50 < 2.6,
# Strateva et al. 2001's early-type cut, for all but one of the shared stamps.)
MIN_EARLY_TYPE_G_MINUS_I = 1.0
# Above z ~ 1.5 a red g - i no longer marks an old population (the 4000 A break leaves the z
# band at z ~ 1.3; at z > 2.5 g falls blueward of Lyman alpha: Lyman-break galaxies are red in
# g - i) and moving a galaxy to ANALOGUE_Z would brighten it by more than 6 mag.
MAX_EARLY_TYPE_Z = 1.5


@dataclass
class NearerAnalogue:
    """A COSMOS galaxy rendered as seen at ``ANALOGUE_Z``: ``image`` nMgy per pixel in F814W
    (taken as i), blank sky zeroed (:func:`clean_stamp`), pixel side ``pixel_scale`` arcsec,
    ``variance`` its per-pixel noise variance (nMgy^2; 0 on the zeroed sky)."""

    galaxy_index: int  # into CosmosSources().galaxies
    ident: int
    image: np.ndarray
    pixel_scale: float
    variance: np.ndarray
    mag_i: float  # F814W magnitude at ANALOGUE_Z
    z_phot: float
    size_factor: float  # D_A(z_phot) / D_A(ANALOGUE_Z)


def nearer_analogue(sources: CosmosSources, index: int, z: float = ANALOGUE_Z,
                    own_photon_noise: bool = False) -> NearerAnalogue:
    """Galaxy ``index`` of ``sources`` rendered as seen at redshift ``z`` (see ANALOGUE_Z);
    with ``own_photon_noise`` its variance holds the stamp's own photon noise beside the sky's
    (:meth:`CosmosGalaxy.variance_with_photons`), scaled as its flux is."""
    from astropy.cosmology import Planck18

    galaxy = sources.galaxies[index]
    if not (math.isfinite(galaxy.z_phot) and galaxy.z_phot > 0):
        raise ValueError(f"COSMOS galaxy IDENT {galaxy.ident} has no usable photo-z "
                         f"({galaxy.z_phot}); cannot place it at z = {z}")
    size = float(Planck18.angular_diameter_distance(galaxy.z_phot)
                 / Planck18.angular_diameter_distance(z))
    flux = float((Planck18.luminosity_distance(galaxy.z_phot)
                  / Planck18.luminosity_distance(z)) ** 2 * (1 + z) / (1 + galaxy.z_phot))
    to_nmgy = 10 ** (-0.4 * (galaxy.f814w - 22.5)) / galaxy.image.sum() * flux
    cleaned = clean_stamp(galaxy.image, galaxy.noise_variance, sources.noise_correlation_factor)
    native = galaxy.variance_with_photons() if own_photon_noise else galaxy.noise_variance
    variance = np.where(cleaned != 0, native * to_nmgy**2, 0.0)
    return NearerAnalogue(galaxy_index=index, ident=galaxy.ident, image=cleaned * to_nmgy,
                          pixel_scale=galaxy.pixel_scale * size, variance=variance,
                          mag_i=galaxy.f814w - 2.5 * math.log10(flux), z_phot=galaxy.z_phot,
                          size_factor=size)


def bright_early_types(sources: CosmosSources, n: int, z: float = ANALOGUE_Z,
                       own_photon_noise: bool = False) -> list[NearerAnalogue]:
    """The ``n`` most luminous early-type COSMOS galaxies (catalogue g - i >=
    MIN_EARLY_TYPE_G_MINUS_I, 0 < photo-z <= MAX_EARLY_TYPE_Z), each rendered as seen at ``z``
    (``own_photon_noise``: :func:`nearer_analogue`), brightest first (fewer when fewer
    qualify). Chosen on catalogue photometry only."""
    candidates = [nearer_analogue(sources, k, z, own_photon_noise)
                  for k, g in enumerate(sources.galaxies)
                  if g.mags["g"] - g.mags["i"] >= MIN_EARLY_TYPE_G_MINUS_I
                  and 0 < g.z_phot <= MAX_EARLY_TYPE_Z]
    return sorted(candidates, key=lambda a: (a.mag_i, a.ident))[:n]
