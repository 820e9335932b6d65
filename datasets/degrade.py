"""Render a high-resolution image (HST-like) as a ground survey observes it: :func:`degrade`.

The public entry point for a user's own lens (``bench degrade`` is its command line) and the
function the real suite renders its SLACS lenses and COSMOS non-lenses with
(:func:`lensbench.datasets.known_lenses.make_real_lens_split`).

Steps per band: flux-conserving rebinning to the survey pixel by exact pixel-area overlap
(:func:`rebin_flux`), convolution with the preset's PSF (or, where the input's own PSF is given,
with the kernel that matches it to the preset's: :func:`matching_kernel`), crop to the stamp,
then noise.

Colours. A one-band image (the survey band it stands for is ``image_band``, ``i`` for HST
F814W) is scaled to each survey band by (band - i) colour tables: the lens light by
``config.LENS_COLOURS`` and the arcs by ``config.SOURCE_COLOURS`` (the simulator's tables) when
the image is split into lens light and arcs, else the whole image by the lens colours.

Noise. The input carries its own noise, which after degradation is NOT negligible (one HST
orbit reaches about the surface-brightness depth of a ground survey). The ground noise is
therefore matched: only the variance missing to the survey's (Poisson of source + sky, read
noise) is added, per pixel; the input's variance is propagated through rebinning and PSF
convolution as white noise times a factor for its correlation, exact for the input noise's
measured correlation (:func:`border_correlation`, :func:`degraded_correlation_factor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lensbench.datasets.config import LENS_COLOURS, SOURCE_COLOURS
from lensbench.datasets.files import atomic_path
from lensbench.datasets.robust import mad_sigma
from lensbench.datasets.surveys import Band, Survey, get_survey

NANOMAGGY_ZEROPOINT = 22.5  # AB magnitude of 1 nanomaggy


def to_nanomaggies(zero_point: float) -> float:
    """Nanomaggies per count of an image whose AB zero point (magnitude of 1 count) is
    ``zero_point``."""
    return 10 ** (-0.4 * (zero_point - NANOMAGGY_ZEROPOINT))


# ------------------------------------------------------------------------------------ rebinning
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


# ------------------------------------------------------------------------------------ noise
def _border(image: np.ndarray, width: int) -> list[np.ndarray]:
    return [image[:width], image[-width:], image[:, :width].T, image[:, -width:].T]


def border_noise(image: np.ndarray, width: int = 12) -> tuple[float, float, np.ndarray]:
    """Median, robust per-pixel sigma (1.4826 MAD) and noise correlation
    (:func:`border_correlation`) of the ``width``-pixel border of ``image``: the sky level and
    noise of a cutout whose border is blank sky."""
    pixels = np.concatenate([s.ravel() for s in _border(image, width)])
    median = float(np.median(pixels))
    sigma = float(mad_sigma(pixels))
    return median, sigma, border_correlation(image, width)


def block_sum_factor(image: np.ndarray, width: int = 12, block: int = 4) -> float:
    """The variance of ``block`` x ``block`` sums of ``image``'s raw ``width``-pixel border
    (its median subtracted) over block**2 pixel variances, clipped to 1-10: what the real splits
    before real-hsc v12 and real-vis v14 took for the noise's correlation factor. It also counts
    the border's structure (:func:`border_correlation`), so those tasks keep it for their
    bytes."""
    strips = _border(image, width)
    pixels = np.concatenate([s.ravel() for s in strips])
    median, sigma = float(np.median(pixels)), float(mad_sigma(pixels))
    sums = []
    for s in strips:
        s = s - median
        h, w = (s.shape[0] // block) * block, (s.shape[1] // block) * block
        sums.append(s[:h, :w].reshape(h // block, block, w // block, block).sum((1, 3)).ravel())
    factor = (mad_sigma(np.concatenate(sums)) / (block * sigma)) ** 2 if sigma > 0 else 1.0
    return float(np.clip(factor, 1.0, 10.0))


# A drizzled HST image couples each pixel with its neighbours only: on the SLACS cutouts'
# borders neighbours correlate 0.20-0.25, diagonals 0.01-0.07, pixels two apart 0.00 +- 0.03
# (`python scripts/slacs_noise.py --correlation`); beyond one pixel a measured lag would add
# its measurement noise only.
CORRELATION_REACH = 1
# The smooth structure a border strip holds (a halo's wing, a neighbour's light), taken out by
# a running median this many pixels across and along the strip before its noise is correlated.
STRUCTURE_MEDIAN = (5, 25)


def border_correlation(image: np.ndarray, width: int = 12, reach: int = CORRELATION_REACH
                       ) -> np.ndarray:
    """(2 reach + 1, 2 reach + 1) correlation of the noise of ``image``'s ``width``-pixel
    border with its neighbours at lags -reach..reach ([reach, reach] = 1): each strip's smooth
    structure (a running median, STRUCTURE_MEDIAN) taken out and its 4-sigma outliers (faint
    sources, cosmic rays) set to 0. Block sums of the raw border, the measure before, also count
    that structure: on the SLACS cutouts they gave 3.8-7.7 for 4 x 4 sums where this correlation
    gives 1.7-1.9."""
    from scipy.ndimage import median_filter

    sums, counts = np.zeros((2 * reach + 1,) * 2), np.zeros((2 * reach + 1,) * 2)
    for strip in _border(np.asarray(image, dtype=np.float64), width):
        noise = strip - median_filter(strip, size=STRUCTURE_MEDIAN, mode="nearest")
        noise = np.where(np.abs(noise) > 4 * mad_sigma(noise.ravel()), 0.0, noise)
        h, w = noise.shape
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                a = noise[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
                b = noise[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
                sums[dy + reach, dx + reach] += (a * b).sum()
                counts[dy + reach, dx + reach] += a.size
    covariance = sums / counts
    if not covariance[reach, reach] > 0:  # a blank border: no noise to correlate
        return np.ones((1, 1))
    return covariance / covariance[reach, reach]


def correlated_noise_field(shape: tuple[int, int], correlation: np.ndarray,
                           rng: np.random.Generator) -> np.ndarray:
    """A unit-variance Gaussian field of ``shape`` whose pixels correlate as ``correlation``
    (odd square, centre 1, lags in pixels; periodic across the field's edges)."""
    correlation = _checked_correlation(correlation)
    reach = correlation.shape[0] // 2
    acf = np.zeros(shape)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            acf[dy % shape[0], dx % shape[1]] += correlation[dy + reach, dx + reach]
    power = np.clip(np.fft.fft2(acf).real, 0, None)
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal(shape)) * np.sqrt(power)).real
    return field / np.sqrt(power.mean())


def _checked_correlation(correlation) -> np.ndarray:
    correlation = np.asarray(correlation, dtype=np.float64)
    if (correlation.ndim != 2 or correlation.shape[0] != correlation.shape[1]
            or correlation.shape[0] % 2 == 0 or not np.all(np.isfinite(correlation))):
        raise ValueError("a noise correlation must be a finite odd square map of the "
                         f"correlation at each pixel lag, centred; got shape {correlation.shape}")
    centre = correlation[correlation.shape[0] // 2, correlation.shape[1] // 2]
    if not centre > 0:
        raise ValueError(f"a noise correlation's centre (lag 0) must be > 0, got {centre}")
    return correlation / centre


def _degraded_variance(variance: np.ndarray, in_scale: float, out_scale: float, canvas: int,
                       kernel: np.ndarray, pad: int, size: int) -> np.ndarray:
    from scipy.signal import fftconvolve

    binned = rebin_flux(variance, in_scale, out_scale, (canvas, canvas), variance=True)
    return np.clip(fftconvolve(binned, kernel**2, mode="same"), 0, None)[pad:pad + size,
                                                                         pad:pad + size]


# Output pixels the factor is averaged over (a square this many across, at the stamp's centre):
# where the survey pixel is not a whole number of input pixels each output pixel cuts the
# input grid at another phase, and the factor differs by phase (HSC from HST's 0.05": the
# centre pixel's alone is 1-2% below the average).
FACTOR_PIXELS = 5


def degraded_correlation_factor(correlation, native_shape: tuple[int, int], in_scale: float,
                                out_scale: float, canvas: int, kernel: np.ndarray) -> float:
    """What the input noise's ``correlation`` (odd square map at the input's pixel lags,
    centre 1) does to a degraded pixel's variance: the variance survey pixels get from noise of
    unit variance with that correlation, over the white model's (:func:`_degraded_variance`,
    which rebins squared weights and convolves with the squared kernel, so it also leaves out
    the covariance of survey pixels that share an input pixel). Exact for stationary noise: sum
    over lags l of correlation(l) times the autocorrelation at l of a pixel's weights on the
    input grid (rebinning and ``kernel`` on a ``canvas`` of survey pixels, as
    :func:`degrade_image` renders), over the FACTOR_PIXELS x FACTOR_PIXELS pixels at the
    centre."""
    from scipy.signal import fftconvolve

    correlation = _checked_correlation(correlation)
    my = _overlap_matrix(native_shape[0], in_scale, canvas, out_scale)
    mx = _overlap_matrix(native_shape[1], in_scale, canvas, out_scale)
    reach = min(correlation.shape[0] // 2, min(native_shape) - 1)
    centre = correlation.shape[0] // 2
    correlation = correlation[centre - reach:centre + reach + 1, centre - reach:centre + reach + 1]
    squared_rebin = np.outer((my**2).sum(1), (mx**2).sum(1))
    flipped = kernel[::-1, ::-1]
    exact = white_model = 0.0
    offsets = range(-(FACTOR_PIXELS // 2), FACTOR_PIXELS // 2 + 1)
    for oy in offsets:
        for ox in offsets:
            # The pixel's weights on the canvas (the 'same' convolution's adjoint: the flipped
            # kernel at the pixel), then on the input grid (the rebinning's adjoint).
            on_canvas = np.zeros((canvas, canvas))
            on_canvas[canvas // 2 + oy, canvas // 2 + ox] = 1.0
            on_canvas = fftconvolve(on_canvas, flipped, mode="same")
            weights = my.T @ on_canvas @ mx
            white_model += float(np.sum(on_canvas**2 * squared_rebin))
            autocorrelation = fftconvolve(weights, weights[::-1, ::-1], mode="full")
            cy, cx = weights.shape[0] - 1, weights.shape[1] - 1
            exact += float(np.sum(correlation * autocorrelation[cy - reach:cy + reach + 1,
                                                                cx - reach:cx + reach + 1]))
    return exact / white_model if white_model > 0 else 1.0


def survey_variance_electrons(electrons: np.ndarray, band: Band) -> np.ndarray:
    """The survey's noise variance (electrons^2) at ``electrons`` of noise-free signal: Poisson
    of source + sky, read noise of each exposure."""
    return np.clip(electrons, 0, None) + band.sky_counts + band.n_exposures * band.read_noise**2


def noise_variance_with_photons(image: np.ndarray, sky_sigma: float, effective_gain: float
                                ) -> np.ndarray:
    """An image's own noise variance per pixel (its units squared): its sky's (``sky_sigma``,
    e.g. from its border, :func:`border_noise`) and its objects' Poisson noise, with
    ``effective_gain`` electrons per unit of the image (an image in e-/s: its exposure in
    seconds); none where the image is negative (photutils.utils.calc_total_error)."""
    from photutils.utils import calc_total_error

    image = np.asarray(image, dtype=np.float64)
    return calc_total_error(image, np.full(image.shape, sky_sigma), effective_gain) ** 2


def _add_noise(expected_nmgy: np.ndarray, band: Band, rng: np.random.Generator,
               native_variance_nmgy: np.ndarray | None) -> np.ndarray:
    epn = band.electrons_per_nanomaggy
    electrons = expected_nmgy * epn
    target = survey_variance_electrons(electrons, band)
    if native_variance_nmgy is not None:
        target = np.clip(target - native_variance_nmgy * epn**2, 0, None)
    noisy = electrons + np.sqrt(target) * rng.standard_normal(electrons.shape)
    return noisy / epn


# ------------------------------------------------------------------------------------ observing
def survey_psf_kernels(survey: Survey) -> list[np.ndarray]:
    """The preset's analytic PSF kernel per band (``psf.psf_kernel``), at its pixel scale."""
    from lensbench.datasets.psf import psf_kernel

    return [psf_kernel(survey.psf_model, band.psf_fwhm, band.pixel_scale, survey.moffat_beta)
            for band in survey.bands]


def centred_psf(psf: np.ndarray, name: str = "PSF") -> np.ndarray:
    """``psf`` (2-D, finite, positive sum) cropped to an odd side centred on its peak and
    normalised to unit sum, as :func:`matching_kernel` takes it; ``name`` (e.g. its file) is
    named in the error for anything else."""
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2 or min(psf.shape) < 3 or not np.all(np.isfinite(psf)) or psf.sum() <= 0:
        raise ValueError(f"{name}: a PSF must be a finite 2-D image of at least 3x3 pixels with "
                         f"a positive sum, got shape {psf.shape}")
    cy, cx = np.unravel_index(np.argmax(psf), psf.shape)
    half = min(cy, cx, psf.shape[0] - 1 - cy, psf.shape[1] - 1 - cx)
    if half < 1:
        raise ValueError(f"{name}: the PSF's peak lies on its edge (pixel {cy}, {cx})")
    psf = psf[cy - half: cy + half + 1, cx - half: cx + half + 1]
    return psf / psf.sum()


def matching_kernel(native_psf: np.ndarray, native_scale: float, target: np.ndarray,
                    target_scale: float) -> np.ndarray:
    """The kernel, at the survey pixel ``target_scale``, that takes an image whose own PSF is
    ``native_psf`` (odd side, centred, pixel side ``native_scale`` arcsec) to the survey's PSF
    ``target`` once it is rebinned to that pixel: photutils' ratio of the two PSFs' Fourier
    transforms, the native PSF rebinned as the image is. Convolving with the survey's PSF
    itself would blur the image twice (HST's ACS PSF then Euclid VIS's: an effective PSF of rms
    radius 0.20" instead of VIS's 0.11"). A native PSF whose core is at least as wide as the
    target's (a peak no higher, both on the survey pixel at unit sum) needs no blur: the kernel
    is then a delta, and the image keeps its own PSF."""
    from photutils.psf_matching import make_kernel

    n = target.shape[0]
    source = rebin_flux(np.asarray(native_psf, dtype=np.float64), native_scale, target_scale,
                        (n, n))
    source, target = source / source.sum(), np.asarray(target, dtype=np.float64) / target.sum()
    if source.max() <= target.max():
        delta = np.zeros((n, n))
        delta[n // 2, n // 2] = 1.0
        return delta
    return make_kernel(source, target)


def degrade_image(image: np.ndarray, pixel_scale: float, survey: str | Survey, *,
                  bands: Sequence[str] | None = None, stamp_size: int | None = None,
                  rng: np.random.Generator | None = None, native_variance=None,
                  noise_correlation: float | np.ndarray = 1.0,
                  native_psf: np.ndarray | None = None,
                  native_psf_scale: float | None = None) -> np.ndarray:
    """Observe per-band nanomaggy planes as a ground survey does: (B, H, W) float32 nanomaggies.

    image: (B, h, w) (or (h, w) for all bands) flux per pixel in nanomaggies per band, centred
        on the stamp centre, pixel side ``pixel_scale`` arcsec.
    Steps per band: exact flux-conserving rebinning to the survey pixel (:func:`rebin_flux`) on
    a canvas wider than the stamp by the PSF half-width, convolution with the preset's PSF
    (``scipy.signal.fftconvolve``), crop to ``stamp_size``. With ``rng``: noise as in the
    simulator, in electrons of the total exposure (Poisson of source + sky as a Gaussian, read
    noise per exposure), minus the variance the input already carries: ``native_variance`` per
    input pixel (nMgy^2, scalar or (B,) or (B, h, w)), propagated as white noise times a factor
    for its correlation: ``noise_correlation``, either the input noise's correlation map (odd
    square at the input's pixel lags, e.g. :func:`border_correlation`), from which each band's
    factor follows exactly (:func:`degraded_correlation_factor`), or the factor itself. Without
    ``rng`` the noise-free expectation is returned.
    native_psf: the input's own PSF (odd side, centred; pixel side ``native_psf_scale``,
        default ``pixel_scale``): the survey PSF is then reached by :func:`matching_kernel`
        instead of added on top of it. None: the input counts as unblurred.
    """
    survey = get_survey(survey) if isinstance(survey, str) else survey
    if bands is not None:
        survey = survey.select(bands)
    size = stamp_size or survey.stamp_size
    out = np.empty((len(survey.bands), size, size), dtype=np.float32)
    for b, band, expected, carried in _observed_bands(
            image, pixel_scale, survey, size, None if rng is None else native_variance,
            noise_correlation, native_psf, native_psf_scale):
        out[b] = expected if rng is None else _add_noise(expected, band, rng, carried)
    return out


@dataclass(frozen=True)
class NoiseBudget:
    """Per-pixel noise variances (nMgy^2, (B, H, W)) of a degraded image
    (:func:`noise_budget`): ``survey`` the survey's own at the image's noise-free flux (Poisson
    of source + sky, read noise), ``carried`` what the input's own noise leaves after the
    degradation. The noise :func:`degrade` draws tops ``carried`` up to ``survey`` where it is
    lower; where it is higher the degraded image is noisier than the survey's."""

    survey: np.ndarray
    carried: np.ndarray


def _observed_bands(image: np.ndarray, pixel_scale: float, survey: Survey, size: int,
                    native_variance, noise_correlation: float | np.ndarray,
                    native_psf: np.ndarray | None, native_psf_scale: float | None):
    """Per band of ``survey``: (index, band, the noise-free degraded plane, the input's
    variance as degraded or None without ``native_variance``); :func:`degrade_image`'s steps."""
    from scipy.signal import fftconvolve

    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = np.broadcast_to(image, (len(survey.bands), *image.shape))
    if image.shape[0] != len(survey.bands):
        raise ValueError(f"image has {image.shape[0]} bands, survey selection has "
                         f"{len(survey.bands)} ({list(survey.band_names)})")
    kernels = survey_psf_kernels(survey)
    if native_psf is not None:
        kernels = [matching_kernel(native_psf, native_psf_scale or pixel_scale, kernel,
                                   band.pixel_scale)
                   for band, kernel in zip(survey.bands, kernels, strict=True)]
    pad = max(k.shape[0] for k in kernels) // 2
    canvas = size + 2 * pad
    out_scale = survey.pixel_scale
    variance_in = None
    if native_variance is not None:
        variance_in = np.broadcast_to(
            np.asarray(native_variance, dtype=np.float64).reshape(
                (-1, 1, 1) if np.ndim(native_variance) == 1 else np.shape(native_variance)),
            image.shape)
    for b, (band, kernel) in enumerate(zip(survey.bands, kernels, strict=True)):
        binned = rebin_flux(image[b], pixel_scale, out_scale, (canvas, canvas))
        expected = fftconvolve(binned, kernel, mode="same")[pad:pad + size, pad:pad + size]
        if variance_in is None:
            yield b, band, expected, None
            continue
        factor = (float(noise_correlation) if np.ndim(noise_correlation) == 0
                  else degraded_correlation_factor(noise_correlation, image.shape[-2:],
                                                   pixel_scale, out_scale, canvas, kernel))
        yield b, band, expected, _degraded_variance(
            variance_in[b], pixel_scale, out_scale, canvas, kernel, pad, size) * factor


def colour_factor(colours: dict[str, float], band: str, reference: str = "i") -> float:
    """Flux in ``band`` per unit flux in ``reference``, for a colour table of (band - i)
    magnitudes."""
    for name in (band, reference):
        if name not in colours:
            raise ValueError(f"no colour for band {name!r} in {sorted(colours)}")
    return 10 ** (-0.4 * (colours[band] - colours[reference]))


def degrade(image: np.ndarray | None, pixel_scale: float, zero_point: float,
            survey: str | Survey, bands: Sequence[str] | None = None, *,
            arc_image: np.ndarray | None = None, lens_light_image: np.ndarray | None = None,
            seed: int | np.random.Generator | None, stamp_size: int | None = None,
            native_variance=None, noise_correlation: float | np.ndarray = 1.0,
            image_band: str = "i",
            lens_colours: dict[str, float] | None = None,
            source_colours: dict[str, float] | None = None,
            native_psf: np.ndarray | None = None,
            native_psf_scale: float | None = None) -> np.ndarray:
    """A high-resolution image observed with the survey preset ``survey`` (its ``bands``, or
    all, in that order): (B, stamp, stamp) float32 nanomaggies per survey pixel.

    image: sky-subtracted counts per pixel, centred on the object, pixel side ``pixel_scale``
        arcsec, AB ``zero_point`` (magnitude of one count; 22.5 for nanomaggies). Either one
        plane (h, w) in the band ``image_band`` stands for, scaled to every band by colour
        tables (module docstring), or one plane per band (B, h, w), used as it is.
    arc_image, lens_light_image: a split of a one-plane image into arcs and lens light (same
        units and grid): the arcs get the source colours, the lens light the lens colours.
        Either one is enough (the other is ``image`` minus it); with both, ``image`` may be
        None.
    seed: an int or a Generator for the survey noise; None gives the noise-free expectation.
    native_variance: the input's own noise variance per pixel, in its units squared: a scalar
        or an (h, w) map for one plane (scaled to each band as the lens light is), or per band
        for (B, h, w); with ``noise_correlation`` (its correlation: :func:`degrade_image`) only
        the variance missing to the survey's is added.
    stamp_size: output side in pixels (default: the preset's).
    native_psf, native_psf_scale: the input's own PSF, matched to the survey's
        (:func:`degrade_image`).
    """
    chosen, planes, variance = _survey_planes(
        image, zero_point, survey, bands, arc_image, lens_light_image, native_variance,
        image_band, lens_colours, source_colours)
    rng = seed if isinstance(seed, np.random.Generator) or seed is None \
        else np.random.default_rng(seed)
    return degrade_image(planes, pixel_scale, chosen, stamp_size=stamp_size, rng=rng,
                         native_variance=variance, noise_correlation=noise_correlation,
                         native_psf=native_psf, native_psf_scale=native_psf_scale)


def noise_budget(image: np.ndarray | None, pixel_scale: float, zero_point: float,
                 survey: str | Survey, bands: Sequence[str] | None = None, *,
                 native_variance, arc_image: np.ndarray | None = None,
                 lens_light_image: np.ndarray | None = None, stamp_size: int | None = None,
                 noise_correlation: float | np.ndarray = 1.0, image_band: str = "i",
                 lens_colours: dict[str, float] | None = None,
                 source_colours: dict[str, float] | None = None,
                 native_psf: np.ndarray | None = None,
                 native_psf_scale: float | None = None) -> NoiseBudget:
    """The noise variances of the image :func:`degrade` makes with these arguments (and any
    seed): the survey's own and the one the input carries (:class:`NoiseBudget`)."""
    chosen, planes, variance = _survey_planes(
        image, zero_point, survey, bands, arc_image, lens_light_image, native_variance,
        image_band, lens_colours, source_colours)
    size = stamp_size or chosen.stamp_size
    survey_part, carried = [], []
    for _, band, expected, carried_variance in _observed_bands(
            planes, pixel_scale, chosen, size, variance, noise_correlation, native_psf,
            native_psf_scale):
        epn = band.electrons_per_nanomaggy
        survey_part.append(survey_variance_electrons(expected * epn, band) / epn**2)
        carried.append(carried_variance)
    return NoiseBudget(np.stack(survey_part), np.stack(carried))


def _survey_planes(image, zero_point: float, survey: str | Survey, bands, arc_image,
                   lens_light_image, native_variance, image_band: str, lens_colours,
                   source_colours) -> tuple[Survey, np.ndarray, np.ndarray | None]:
    """:func:`degrade`'s inputs as nanomaggy planes per band of the chosen survey bands, and the
    input's variance likewise (module docstring: colours)."""
    preset = get_survey(survey) if isinstance(survey, str) else survey
    chosen = preset.select(bands) if bands is not None else preset
    band_names = list(chosen.band_names)
    scale = to_nanomaggies(zero_point)
    lens_colours = lens_colours or LENS_COLOURS
    source_colours = source_colours or SOURCE_COLOURS
    variance = None if native_variance is None else np.asarray(native_variance,
                                                                dtype=np.float64)
    if arc_image is None and lens_light_image is None:
        if image is None:
            raise ValueError("degrade needs an image (or arc and lens-light images)")
        image = np.asarray(image, dtype=np.float64)
        if image.ndim == 3:
            if image.shape[0] != len(band_names):
                raise ValueError(f"image has {image.shape[0]} planes, expected one per band "
                                 f"{band_names} (or one plane)")
            planes = image * scale
            if variance is not None:
                variance = variance * scale**2
        elif image.ndim == 2:
            flux = image * scale
            planes = np.stack([flux * colour_factor(lens_colours, b, image_band)
                               for b in band_names])
        else:
            raise ValueError(f"image has shape {image.shape}; expected (h, w) or (B, h, w)")
    else:
        arcs, light = _split(image, arc_image, lens_light_image)
        arcs, light = arcs * scale, light * scale
        planes = np.stack([light * colour_factor(lens_colours, b, image_band)
                           + arcs * colour_factor(source_colours, b, image_band)
                           for b in band_names])
    if variance is not None and (image is None or np.ndim(image) == 2):
        one_band = variance * scale**2
        variance = np.array([one_band * colour_factor(lens_colours, b, image_band) ** 2
                             for b in band_names])
    return chosen, planes, variance


def _split(image, arc_image, lens_light_image) -> tuple[np.ndarray, np.ndarray]:
    """(arcs, lens light) as float64 planes of one shape."""
    given = {name: np.asarray(a, dtype=np.float64) for name, a in
             (("image", image), ("arc image", arc_image), ("lens-light image", lens_light_image))
             if a is not None}
    shapes = {a.shape for a in given.values()}
    if len(shapes) != 1 or next(iter(shapes)).__len__() != 2:
        raise ValueError("image, arc image and lens-light image must be single planes of one "
                         f"shape, got {', '.join(f'{k} {a.shape}' for k, a in given.items())}")
    if arc_image is None:
        return given["image"] - given["lens-light image"], given["lens-light image"]
    if lens_light_image is None:
        return given["arc image"], given["image"] - given["arc image"]
    return given["arc image"], given["lens-light image"]


# ------------------------------------------------------------------------------------ files
def survey_sigma(expected: np.ndarray, survey: Survey) -> np.ndarray:
    """(B, H, W) per-pixel noise sigma (nanomaggies) of the survey's noise model around the
    noise-free ``expected`` image: Poisson of source + sky and read noise, as ``degrade`` draws
    it (where the input's own noise exceeds that, the input's dominates instead)."""
    out = np.empty(expected.shape, dtype=np.float32)
    for b, band in enumerate(survey.bands):
        epn = band.electrons_per_nanomaggy
        out[b] = np.sqrt(survey_variance_electrons(expected[b] * epn, band)) / epn
    return out


def degrade_files(images: Sequence, out_dir, survey: str, bands: Sequence[str] | None = None,
                  *, pixel_scale: float | None = None, zero_point: float | None = None,
                  arcs: Sequence | None = None, lens_lights: Sequence | None = None,
                  rms: Sequence[float | None] | None = None,
                  effective_gain: Sequence[float | None] | None = None,
                  noise_correlation: Sequence[float | str | Path | None] | None = None,
                  subtract_sky: bool = False, seed: int = 0, stamp_size: int | None = None,
                  per_band_files: bool = False, image_band: str = "i",
                  psf: str | Path | None = None, psf_scale: float | None = None) -> list[Path]:
    """``bench degrade``: render each FITS image of ``images`` (in order, one noise generator
    seeded by ``seed``, so a list reproduces a split that degrades them in turn) with
    :func:`degrade` and write it to ``out_dir``; returns the files written.

    Per image: zero point and pixel scale from the flags or the header (as
    :mod:`lensbench.datasets.prepare` reads them), optional arc and lens-light images of the
    same grid and units; its own noise sigma ``rms`` (in its units) and its noise correlation's
    factor (:func:`degrade_image`), or its sigma and its correlation measured on its border
    (:func:`border_noise`), whose median is subtracted first with
    ``subtract_sky``; with its ``effective_gain`` (electrons per unit of its values) its own
    photon noise counts too (:func:`noise_variance_with_photons`). Output:
    ``<stem>_<band>.fits`` (science) and ``<stem>_<band>.rms.fits``
    (noise sigma of the survey's model) per band with ``per_band_files``, else one cube
    ``<stem>.fits`` (HDU 0 science, HDU "RMS"); nanomaggies (BUNIT, MAGZERO 22.5), FILTER,
    SURVEY, PIXSCALE and, when the input has a celestial WCS, a WCS of the same orientation
    centred on the input's centre. ``psf``: a FITS image of the inputs' own PSF (pixel side
    ``psf_scale``, default the image's), matched to the survey's (:func:`matching_kernel`)
    instead of blurred by it a second time."""
    from astropy.io import fits
    from lensbench.datasets.prepare import (
        PreparationError,
        pixel_scale_of,
        read_plane,
        zero_point_of,
    )

    preset = get_survey(survey)
    chosen = preset.select(bands) if bands is not None else preset
    native_psf = None
    if psf is not None:
        try:
            native_psf = centred_psf(fits.getdata(psf), f"--psf {psf}")
        except (OSError, TypeError, IndexError) as error:  # missing, not FITS, no image HDU
            raise PreparationError(f"--psf {psf}: not a readable FITS image ({error})") from None
    n = len(images)
    arcs, lens_lights = list(arcs or [None] * n), list(lens_lights or [None] * n)
    rms, noise_correlation = list(rms or [None] * n), list(noise_correlation or [None] * n)
    effective_gain = list(effective_gain or [None] * n)
    for name, values in (("--arc", arcs), ("--lens-light", lens_lights), ("--rms", rms),
                         ("--effective-gain", effective_gain),
                         ("--noise-correlation", noise_correlation)):
        if len(values) != n:
            raise ValueError(f"{name} is given {len(values)} times for {n} --image files: give "
                             "it once per image, in the same order, or not at all")
    # Read before any output is written: a bad file stops the run with nothing half done.
    noise_correlation = [None if value is None else _noise_correlation_arg(value)
                         for value in noise_correlation]
    if any(value is not None and value < 0 for value in rms):
        raise ValueError(f"--rms must be >= 0 (a noise sigma), got {rms}")
    if any(value is not None and not value > 0 for value in effective_gain):
        raise ValueError(f"--effective-gain must be > 0 (electrons per unit of the image), "
                         f"got {effective_gain}")
    stems = [Path(p).name.split(".")[0] for p in images]
    if len(set(stems)) != n:
        raise ValueError(f"--image: two images share a name ({stems}); outputs are named after "
                         "them")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for k, path in enumerate(images):
        data, header = read_plane(path, what="image")
        zp, factor, _ = zero_point_of(header, str(path), zero_point)
        scale, _ = pixel_scale_of(header, str(path), pixel_scale)
        if scale is None:
            raise PreparationError(f"{path}: no pixel scale (no WCS or PIXSCALE keyword); pass "
                                   "--pixel-scale")
        data = data * factor
        sky, sigma, correlation = border_noise(data)
        if subtract_sky:
            data = data - sky
        sigma = sigma if rms[k] is None else float(rms[k]) * factor
        if noise_correlation[k] is not None:
            correlation = noise_correlation[k]
        parts = {}
        for name, part in (("arc_image", arcs[k]), ("lens_light_image", lens_lights[k])):
            if part is not None:
                plane, _ = read_plane(part, what=name.replace("_", " "))
                if plane.shape != data.shape:
                    raise PreparationError(f"{part}: shape {plane.shape}, the image {path} has "
                                           f"{data.shape}")
                parts[name] = plane * factor - (sky if subtract_sky and name == "lens_light_image"
                                                else 0.0)
        # Electrons per unit of the image after the unit conversion (data * factor).
        variance = (sigma**2 if effective_gain[k] is None else noise_variance_with_photons(
            data, sigma, effective_gain[k] / factor))
        kwargs = dict(stamp_size=stamp_size, native_variance=variance,
                      noise_correlation=correlation, image_band=image_band,
                      native_psf=native_psf, native_psf_scale=psf_scale or scale, **parts)
        image = degrade(data, scale, zp, chosen, seed=rng, **kwargs)
        sigma_map = survey_sigma(degrade(data, scale, zp, chosen, seed=None, **kwargs), chosen)
        header_out = _output_header(header, scale, chosen, image.shape[-1], zp)
        written += _write_outputs(fits, out_dir, stems[k], image, sigma_map, chosen,
                                  header_out, per_band_files)
    return written


def _noise_correlation_arg(value) -> float | np.ndarray:
    """``--noise-correlation``: a factor, or the correlation map in a FITS file's first image."""
    from lensbench.datasets.prepare import PreparationError, read_plane

    if not isinstance(value, (str, Path)):
        return float(value)
    try:
        data, _ = read_plane(value, what="noise correlation")
        return _checked_correlation(data)
    except ValueError as error:  # PreparationError is one; it names the file already
        text = str(error)
        raise PreparationError(f"--noise-correlation {value}: "
                               f"{text.removeprefix(f'{value}: ')}") from None


def _output_header(header, in_scale: float, survey: Survey, size: int, zero_point: float):
    from astropy.io import fits

    out = fits.Header()
    out["BUNIT"] = ("nanomaggy", "sky-subtracted flux per pixel")
    out["MAGZERO"] = (NANOMAGGY_ZEROPOINT, "AB magnitude of 1 nanomaggy")
    out["SURVEY"] = survey.name
    out["PIXSCALE"] = (survey.pixel_scale, "arcsec per pixel")
    out["ZPINPUT"] = (zero_point, "AB zero point of the input image")
    if header is not None and any(k in header for k in ("CD1_1", "CDELT1", "PC1_1")):
        import warnings

        from astropy.wcs import WCS, FITSFixedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
        if wcs.has_celestial:
            ny, nx = int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0))
            centre = wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
            cd = wcs.pixel_scale_matrix * (survey.pixel_scale / in_scale)
            out["CTYPE1"], out["CTYPE2"] = wcs.wcs.ctype[0], wcs.wcs.ctype[1]
            out["CRPIX1"] = out["CRPIX2"] = (size + 1) / 2
            out["CRVAL1"], out["CRVAL2"] = float(centre[0]), float(centre[1])
            for i in range(2):
                for j in range(2):
                    out[f"CD{i + 1}_{j + 1}"] = float(cd[i, j])
    return out


def _write_outputs(fits, out_dir: Path, stem: str, image: np.ndarray, sigma: np.ndarray,
                   survey: Survey, header, per_band_files: bool) -> list[Path]:
    """Write atomically (temporary file, then rename): an interrupt leaves no torn FITS."""
    def write(hdul, path: Path) -> Path:
        with atomic_path(path) as tmp:
            hdul.writeto(tmp, overwrite=True)
        return path

    if not per_band_files:
        head = header.copy()
        head["BANDS"] = (",".join(survey.band_names), "band of each plane")
        rms_head = head.copy()
        rms_head["EXTNAME"] = "RMS"
        return [write(fits.HDUList([fits.PrimaryHDU(image, head),
                                    fits.ImageHDU(sigma, rms_head)]), out_dir / f"{stem}.fits")]
    written = []
    for b, band in enumerate(survey.band_names):
        head = header.copy()
        head["FILTER"] = band
        written.append(write(fits.HDUList([fits.PrimaryHDU(image[b], head)]),
                             out_dir / f"{stem}_{band}.fits"))
        head["COMMENT"] = "noise sigma per pixel of the survey's noise model"
        written.append(write(fits.HDUList([fits.PrimaryHDU(sigma[b], head)]),
                             out_dir / f"{stem}_{band}.rms.fits"))
    return written
