"""The SLACS snapshots' own noise in the real cutouts against the simulations' (issue 22).

    python scripts/slacs_noise.py [--realisations 10]
    python scripts/slacs_noise.py --top-up
    python scripts/slacs_noise.py --correlation [--realisations 10]

For each task with a real split (real-hsc, real-vis) and each SLACS lens of the data registry
(needs LENSBENCH_DATA_DIR), degrades white realisations of the HST image's own noise (its noise
variance per 0.05" pixel) as the real split degrades the image, with its HST PSF matched to the
survey's (real-hsc v8, real-vis v7 on) and, for comparison, blurred by the survey PSF on top of
it (before), and prints per band its rms in the survey's sky sigma per pixel and the
correlation of neighbouring pixels 1, 2 and 3 pixels apart along a row. Then the same two
figures for the noise field the task's simulator adds (``SimConfig.correlated_noise`` and
``correlated_noise_kernel``): its maximum level and its correlations.

``--top-up``: how noisy each degraded SLACS lens is against what it must be at least (the
larger of the survey's own noise and the HST image's own, its photons included: the survey
noise only tops up), per band and within 1", 1-2" and 2-4.5" of its centre (median over the
pixels of the ratio of sigmas), where the top-up counts the HST image's noise as its border's
sky alone (every real split before ``own_photon_noise``), and how far the HST image's own noise
exceeds the survey's there. Exact variances (``degrade.noise_budget``), no realisations.

``--correlation``: the HST images' noise is not white (drizzled: neighbouring pixels correlate),
which both the real splits' top-up and the simulations' HST-like noise levels stand on. Per lens:
the correlation of the border's noise with its neighbours (the border with its smooth structure,
a median over 5 x 25 pixels along each strip, taken out and 4-sigma outliers, faint sources,
clipped); the block-sum factor (variance of b x b sums over b**2 pixel variances) that this
correlation gives, against the one ``degrade.border_noise`` measures from raw block sums (which
the real splits multiply the carried variance by, at b = 4), which also counts the border's
structure; and, per task, the rms of a degraded field with the noise's own correlation (a
Gaussian field with the measured correlations, lags up to 4) over that of a white one, the
factor the degraded HST noise's variance has over the white model that
``real_diagnosis.degraded_hst_noise`` and the simulations' levels use.
"""

from __future__ import annotations

import argparse

import numpy as np
from lensbench.bench.suites.real_diagnosis import (
    degraded_hst_noise,
    real_lens_degrade_args,
    survey_sigma,
)
from lensbench.bench.tasks import all_tasks
from lensbench.datasets.degrade import NANOMAGGY_ZEROPOINT, noise_budget
from lensbench.datasets.known_lenses import load_slacs
from lensbench.datasets.simulate import Simulator
from lensbench.datasets.surveys import get_survey

LAGS = (1, 2, 3)
CORRELATION_LAGS = 4  # the noise's correlation is measured to this lag in each direction
# and modelled to this one: drizzling onto the detector's own 0.05" pixels couples a pixel with
# its neighbours only (the border's correlation two or more pixels apart is 0.00 +- 0.03, each
# lag's measurement noise; summed over the 72 lags of 2-4 pixels it would add its noise up).
DRIZZLE_REACH = 1


def row_correlations(noise: np.ndarray) -> np.ndarray:
    """(B, len(LAGS)): the correlation of pixels LAGS apart along rows of ``noise`` (k, B, H, W)."""
    centred = noise - noise.mean(axis=(-2, -1), keepdims=True)
    variance = (centred**2).mean(axis=(0, 2, 3))
    return np.stack([(centred[..., lag:] * centred[..., :-lag]).mean(axis=(0, 2, 3)) / variance
                     for lag in LAGS], axis=1)


def simulated_field(task, count: int) -> np.ndarray:
    """``count`` unit-level correlated noise fields of the task's simulator (count, B, H, W):
    its ``_add_correlated_noise`` on a blank, noiseless sky, the white part's variance taken
    out by giving the field a level far above the sky's."""
    import torch

    renderer = Simulator(task.config).renderer
    size = renderer.size
    blank = torch.zeros((count, len(renderer.bands), size, size), dtype=renderer.dtype)
    generator = torch.Generator().manual_seed(0)
    return renderer._add_correlated_noise(blank, generator, np.full(count, 100.0)).numpy()


TOP_UP_REGIONS = ((0.0, 1.0), (1.0, 2.0), (2.0, 4.5))  # arcsec from the stamp's centre


def top_up(task) -> None:
    """``--top-up`` for one task (module docstring)."""
    spec = task.real_lenses
    survey = get_survey(spec["survey"]).select(list(spec["bands"]))
    size = spec["stamp_size"]
    args = {k: v for k, v in real_lens_degrade_args(spec, size).items() if k != "seed"}
    radius = np.hypot(*(np.mgrid[:size, :size] - (size - 1) / 2)) * survey.pixel_scale
    regions = [(radius >= lo) & (radius < hi) for lo, hi in TOP_UP_REGIONS]
    print(f"{task.name} v{task.version} (own_photon_noise "
          f"{spec.get('own_photon_noise', False)}): sigma with the sky-only top-up / the least "
          f"it can be; the least / the survey's own; medians within "
          + ", ".join(f'{lo:g}-{hi:g}"' for lo, hi in TOP_UP_REGIONS))
    for lens in load_slacs("198x198", True, spec.get("sky_beside_halo", False)):
        common = dict(arc_image=lens.arcs, correlation_factor=lens.correlation_factor, **args)
        sky_only = noise_budget(lens.image, lens.pixel_scale, NANOMAGGY_ZEROPOINT, survey,
                                native_variance=lens.noise_variance, **common)
        full = noise_budget(lens.image, lens.pixel_scale, NANOMAGGY_ZEROPOINT, survey,
                            native_variance=lens.variance_with_photons(), **common)
        least = np.maximum(full.survey, full.carried)
        sky_only_top_up = full.carried + np.clip(sky_only.survey - sky_only.carried, 0, None)
        excess, hst_over_survey = np.sqrt(sky_only_top_up / least), np.sqrt(least / full.survey)
        cells = []
        for b, band in enumerate(survey.band_names):
            pairs = [f"{np.median(excess[b][region]):.2f}/"
                     f"{np.median(hst_over_survey[b][region]):.2f}" for region in regions]
            cells.append(f"{band} {' '.join(pairs)}")
        print(f"  {lens.name} ({lens.exposure_s:g} s): " + "; ".join(cells))


def noise_correlation(image: np.ndarray) -> np.ndarray:
    """(2 L + 1, 2 L + 1) correlation of the noise of ``image``'s 12-pixel border with its
    neighbours at lags -L..L (L = CORRELATION_LAGS; [L, L] = 1): each strip's smooth structure
    (a median over 5 x 25 pixels) taken out and its 4-sigma outliers set to 0."""
    from lensbench.datasets.degrade import _border
    from lensbench.datasets.robust import mad_sigma
    from scipy.ndimage import median_filter

    lag = CORRELATION_LAGS
    sums, counts = np.zeros((2 * lag + 1,) * 2), np.zeros((2 * lag + 1,) * 2)
    for strip in _border(image, 12):
        noise = strip - median_filter(strip, size=(5, 25), mode="nearest")
        noise = np.where(np.abs(noise) > 4 * mad_sigma(noise.ravel()), 0.0, noise)
        h, w = noise.shape
        for dy in range(-lag, lag + 1):
            for dx in range(-lag, lag + 1):
                a = noise[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
                b = noise[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
                sums[dy + lag, dx + lag] += (a * b).sum()
                counts[dy + lag, dx + lag] += a.size
    covariance = sums / counts
    return covariance / covariance[lag, lag]


def block_factor(correlation: np.ndarray, block: int) -> float:
    """Variance of ``block`` x ``block`` sums over block**2 pixel variances, for noise of this
    correlation (pixels further apart than DRIZZLE_REACH taken as uncorrelated)."""
    lag, reach = CORRELATION_LAGS, min(DRIZZLE_REACH, block - 1)
    offsets = range(-reach, reach + 1)
    return sum((block - abs(dy)) * (block - abs(dx)) * correlation[dy + lag, dx + lag]
               for dy in offsets for dx in offsets) / block**2


def correlated_field(shape: tuple[int, int], correlation: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """A unit-variance Gaussian field of ``shape`` with ``correlation`` up to DRIZZLE_REACH
    (periodic)."""
    lag = CORRELATION_LAGS
    acf = np.zeros(shape)
    for dy in range(-DRIZZLE_REACH, DRIZZLE_REACH + 1):
        for dx in range(-DRIZZLE_REACH, DRIZZLE_REACH + 1):
            acf[dy % shape[0], dx % shape[1]] = correlation[dy + lag, dx + lag]
    power = np.clip(np.fft.fft2(acf).real, 0, None)
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal(shape)) * np.sqrt(power)).real
    return field / np.sqrt(power.mean())


def correlation_table(realisations: int) -> None:
    """``--correlation`` (module docstring)."""
    from astropy.io import fits
    from lensbench.datasets import registry
    from lensbench.datasets.degrade import border_noise, degrade
    from lensbench.datasets.known_lenses import SLACS_DIR

    lag = CORRELATION_LAGS
    lenses = load_slacs("198x198", True)
    correlations = {}
    print("SLACS border noise: correlation with the pixel to the right, below, diagonal, two to "
          "the right, and summed over the lags of 2-4 pixels; block-sum factor at b = 2, 3, 4 "
          "from that correlation / from raw block sums (degrade.border_noise)")
    for lens in lenses:
        with fits.open(registry.fetch(f"{SLACS_DIR}/198x198/{lens.name}.fits")) as hdul:
            wide = np.asarray(hdul["SCI"].data, dtype=np.float64)
        correlation = correlations[lens.name] = noise_correlation(wide)
        pairs = " ".join(f"{block_factor(correlation, b):.2f}/{border_noise(wide, block=b)[2]:.2f}"
                         for b in (2, 3, 4))
        near = correlation[lag - 1:lag + 2, lag - 1:lag + 2].sum()
        print(f"  {lens.name}: {correlation[lag, lag + 1]:.2f} {correlation[lag + 1, lag]:.2f} "
              f"{correlation[lag + 1, lag + 1]:.2f} {correlation[lag, lag + 2]:.2f} "
              f"{correlation.sum() - near:+.2f}; {pairs}")
    rng = np.random.default_rng(0)
    for name in ("real-hsc", "real-vis"):
        task = all_tasks()[name]
        spec = task.real_lenses
        survey = get_survey(spec["survey"]).select(list(spec["bands"]))
        degrade_args = real_lens_degrade_args(spec, spec["stamp_size"])
        print(f"{name} v{task.version}: rms of the degraded HST noise with its correlation / "
              f"white, per band")
        for lens in lenses:
            sigma = np.sqrt(lens.noise_variance)
            white, correlated = [
                np.stack([degrade(field * sigma, lens.pixel_scale, NANOMAGGY_ZEROPOINT, survey,
                                  **degrade_args) for field in fields])
                for fields in ([rng.standard_normal(lens.image.shape)
                                for _ in range(realisations)],
                               [correlated_field(lens.image.shape, correlations[lens.name], rng)
                                for _ in range(realisations)])]
            ratio = correlated.std(axis=(0, 2, 3)) / white.std(axis=(0, 2, 3))
            print(f"  {lens.name}: " + ", ".join(
                f"{band} {r:.2f}" for band, r in zip(survey.band_names, ratio, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realisations", type=int, default=10)
    parser.add_argument("--top-up", action="store_true", help="the top-up's excess noise instead")
    parser.add_argument("--correlation", action="store_true",
                        help="the HST noise's own correlation and what it does to the degraded "
                             "noise instead")
    args = parser.parse_args()
    if args.correlation:
        correlation_table(args.realisations)
        return
    if args.top_up:
        for name in ("real-hsc", "real-vis"):
            top_up(all_tasks()[name])
        return
    rng = np.random.default_rng(0)
    for name in ("real-hsc", "real-vis"):
        task = all_tasks()[name]
        spec = task.real_lenses
        survey = get_survey(spec["survey"]).select(list(spec["bands"]))
        sky = survey_sigma(survey, np.zeros((1, len(survey.bands), 1, 1)))[0, :, 0, 0]
        print(f"{name} v{task.version}: the SLACS images' own noise degraded to "
              f"{','.join(survey.band_names)}: rms in sky sigma per pixel; correlation at lags "
              f"{LAGS} px")
        lenses = load_slacs("198x198", True, spec.get("sky_beside_halo", False))
        for matched in (True, False):
            label = "HST PSF matched" if matched else "survey PSF on top (before v7/v8)"
            for lens in lenses:
                degrade_args = real_lens_degrade_args(dict(spec, match_native_psf=matched),
                                                      spec["stamp_size"])
                noise = np.stack([degraded_hst_noise(lens, survey, rng, **degrade_args)
                                  for _ in range(args.realisations)])
                rms = noise.std(axis=(0, 2, 3)) / sky
                corr = row_correlations(noise)
                bands = ", ".join(f"{b} {r:.2f} ({' '.join(f'{c:.2f}' for c in cs)})"
                                  for b, r, cs in zip(survey.band_names, rms, corr, strict=True))
                print(f"  {label:32s} {lens.name}: {bands}")
        field = simulated_field(task, 64)
        corr = row_correlations(field)
        level = task.config.correlated_noise
        print(f"  simulated ({task.config.correlated_noise_kernel} kernel): level up to {level} "
              f"sky sigma; correlation " + ", ".join(
                  f"{b} ({' '.join(f'{c:.2f}' for c in cs)})"
                  for b, cs in zip(survey.band_names, corr, strict=True)))


if __name__ == "__main__":
    main()
