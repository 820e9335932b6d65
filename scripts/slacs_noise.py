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
exceeds the survey's there; then how noisy each degraded SLACS lens is against the survey with
the top-up that takes the HST noise's correlation from the raw border's block sums (before
real-hsc v12 and real-vis v14) and with the one that measures it (now). Exact variances
(``degrade.noise_budget``), no realisations; the HST noise with its measured correlation.

``--correlation``: the HST images' noise is not white (drizzled: neighbouring pixels correlate),
which both the real splits' top-up and the simulations' HST-like noise levels stand on. Per lens:
the correlation of the border's noise with its neighbours (``degrade.border_correlation``: the
border with its smooth structure, a median over 5 x 25 pixels along each strip, taken out and
4-sigma outliers, faint sources, clipped); the block-sum factor (variance of b x b sums over
b**2 pixel variances) that this correlation gives, against the one the raw border's block sums
give (``degrade.block_sum_factor``, the real splits' factor at b = 4 before real-hsc v12 and
real-vis v14), which also counts the border's structure. Per task and lens: the rms of a
degraded field with the noise's own correlation over that of a white one (Monte Carlo); the
exact factor on the white model's variance that the real split now carries
(``degrade.degraded_correlation_factor``); and that factor for white noise, the white model's
own shortfall (survey pixels that share an HST pixel covary).
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
from lensbench.datasets.cosmos import CosmosSources
from lensbench.datasets.degrade import NANOMAGGY_ZEROPOINT, noise_budget
from lensbench.datasets.known_lenses import load_slacs
from lensbench.datasets.simulate import Simulator
from lensbench.datasets.surveys import get_survey

LAGS = (1, 2, 3)
COSMOS_SAMPLE = 30  # COSMOS stamps whose factor --correlation computes
# The noise's correlation is measured here to this lag in each direction; lensbench models it
# to degrade.CORRELATION_REACH (one pixel), which this table is the measurement for.
CORRELATION_LAGS = 4


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
EDGE_PIXELS = 2  # the stamp's edge: baselines.features.border_noise's width


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
    lenses = load_slacs("198x198", True, spec.get("sky_beside_halo", False))
    for lens in lenses:
        common = dict(arc_image=lens.arcs, noise_correlation=lens.noise_correlation, **args)
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
    print(f"{task.name} v{task.version}: the degraded lens's noise sigma over the survey's (the "
          "HST noise with its measured correlation and photons, plus the top-up), with the "
          "top-up from the raw border's block sums (before real-hsc v12, real-vis v14) / from "
          "the measured correlation; medians within "
          + ", ".join(f'{lo:g}-{hi:g}"' for lo, hi in TOP_UP_REGIONS)
          + f" and on the stamp's outer {EDGE_PIXELS} pixels (where the border features take "
          "their noise)")
    edge = np.ones((size, size), dtype=bool)
    edge[EDGE_PIXELS:-EDGE_PIXELS, EDGE_PIXELS:-EDGE_PIXELS] = False
    for lens in lenses:
        measured, raw = (noise_budget(lens.image, lens.pixel_scale, NANOMAGGY_ZEROPOINT, survey,
                                      native_variance=lens.variance_with_photons(),
                                      arc_image=lens.arcs, noise_correlation=correlation, **args)
                         for correlation in (lens.noise_correlation, lens.block_sum_factor))
        cells = []
        for b, band in enumerate(survey.band_names):
            ratios = [np.sqrt((measured.carried[b] + np.clip(budget.survey[b] - budget.carried[b],
                                                            0, None)) / measured.survey[b])
                      for budget in (raw, measured)]
            cells.append(f"{band} " + " / ".join(
                " ".join(f"{np.median(ratio[region]):.2f}" for region in [*regions, edge])
                for ratio in ratios))
        print(f"  {lens.name}: " + "; ".join(cells))


def block_factor(correlation: np.ndarray, block: int) -> float:
    """Variance of ``block`` x ``block`` sums over block**2 pixel variances, for noise of this
    correlation ((2 r + 1)^2 map, r < block)."""
    reach = correlation.shape[0] // 2
    offsets = range(-reach, reach + 1)
    return sum((block - abs(dy)) * (block - abs(dx)) * correlation[dy + reach, dx + reach]
               for dy in offsets for dx in offsets) / block**2


def correlation_table(realisations: int) -> None:
    """``--correlation`` (module docstring)."""
    from astropy.io import fits
    from lensbench.datasets import registry
    from lensbench.datasets.degrade import (
        CORRELATION_REACH,
        block_sum_factor,
        border_correlation,
        correlated_noise_field,
        degrade,
        degraded_correlation_factor,
        matching_kernel,
        survey_psf_kernels,
    )
    from lensbench.datasets.known_lenses import SLACS_DIR, native_psf_args

    lag, reach = CORRELATION_LAGS, CORRELATION_REACH
    lenses = load_slacs("198x198", True)
    print("SLACS border noise: correlation with the pixel to the right, below, diagonal, two to "
          "the right, and summed over the lags of 2-4 pixels; block-sum factor at b = 2, 3, 4 "
          f"from that correlation to lag {reach} (degrade.border_correlation) / from raw block "
          "sums (degrade.block_sum_factor, the real splits' before real-hsc v12, real-vis v14)")
    for lens in lenses:
        with fits.open(registry.fetch(f"{SLACS_DIR}/198x198/{lens.name}.fits")) as hdul:
            wide = np.asarray(hdul["SCI"].data, dtype=np.float64)
        correlation = border_correlation(wide, reach=lag)
        pairs = " ".join(f"{block_factor(lens.noise_correlation, b):.2f}/"
                         f"{block_sum_factor(wide, block=b):.2f}" for b in (2, 3, 4))
        near = correlation[lag - reach:lag + reach + 1, lag - reach:lag + reach + 1].sum()
        print(f"  {lens.name}: {correlation[lag, lag + 1]:.2f} {correlation[lag + 1, lag]:.2f} "
              f"{correlation[lag + 1, lag + 1]:.2f} {correlation[lag, lag + 2]:.2f} "
              f"{correlation.sum() - near:+.2f}; {pairs}")
    rng = np.random.default_rng(0)
    sources = CosmosSources()
    picks = np.random.default_rng(0).choice(len(sources.galaxies), COSMOS_SAMPLE, replace=False)
    for name in ("real-hsc", "real-vis"):
        task = all_tasks()[name]
        spec = task.real_lenses
        survey = get_survey(spec["survey"]).select(list(spec["bands"]))
        size = spec["stamp_size"]
        degrade_args = real_lens_degrade_args(spec, size)
        kernels = survey_psf_kernels(survey)
        if spec.get("match_native_psf"):
            psf = native_psf_args(True)
            kernels = [matching_kernel(psf["native_psf"], psf["native_psf_scale"], kernel,
                                       band.pixel_scale)
                       for band, kernel in zip(survey.bands, kernels, strict=True)]
        canvas = size + 2 * (max(k.shape[0] for k in kernels) // 2)
        print(f"{name} v{task.version}, per band: rms of the degraded HST noise with its "
              f"correlation / white ({realisations} realisations each); the exact factor on the "
              "white model's variance (degrade.degraded_correlation_factor, what the real split "
              "carries); the same for white noise (the white model's shortfall)")
        for lens in lenses:
            sigma = np.sqrt(lens.noise_variance)
            white, correlated = [
                np.stack([degrade(field * sigma, lens.pixel_scale, NANOMAGGY_ZEROPOINT, survey,
                                  **degrade_args) for field in fields])
                for fields in ([rng.standard_normal(lens.image.shape)
                                for _ in range(realisations)],
                               [correlated_noise_field(lens.image.shape, lens.noise_correlation,
                                                       rng)
                                for _ in range(realisations)])]
            ratio = correlated.std(axis=(0, 2, 3)) / white.std(axis=(0, 2, 3))
            exact, white_factor = ([degraded_correlation_factor(
                correlation, lens.image.shape, lens.pixel_scale, survey.pixel_scale, canvas,
                kernel) for kernel in kernels] for correlation in (lens.noise_correlation,
                                                                   np.ones((1, 1))))
            print(f"  {lens.name}: " + ", ".join(
                f"{band} {r:.2f} {f:.2f} {w:.2f}" for band, r, f, w in
                zip(survey.band_names, ratio, exact, white_factor, strict=True)))
        # The COSMOS stamps (the real split's field galaxies and bright early types): their
        # noise's correlation function, on each stamp's own grid.
        factors = np.array([[degraded_correlation_factor(
            sources.noise_correlation, galaxy.image.shape, galaxy.pixel_scale,
            survey.pixel_scale, canvas, kernel) for kernel in kernels]
            for galaxy in (sources.galaxies[int(k)] for k in picks)])
        print(f"  {COSMOS_SAMPLE} COSMOS stamps: the exact factor "
              + ", ".join(f"{band} {np.median(f):.2f} ({f.min():.2f}-{f.max():.2f})"
                          for band, f in zip(survey.band_names, factors.T, strict=True))
              + f"; the correlation function's sum {sources.noise_correlation_factor:.2f}")


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
