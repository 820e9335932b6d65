"""Is it the real lens light or the real arcs? Swap them with simulated look-alikes' (issue 22).

    python scripts/probe_swap.py WORKDIR TASK RUN_ID [--n 2000] [--k 20]

loads the model ``WORKDIR/runs/<suite>/TASK/RUN_ID/model.lbmodel``, its FPR-1e-3 threshold and
the task's real split from WORKDIR, simulates ``--n`` noise-free lenses of the task twice with the
same seed (once with their sources, once with the sources made invisible: the lens light alone,
so the difference is the arcs alone), and for each real lens takes its ``--k`` nearest simulated
lenses in the report's look-alike space (theta_E, lens magnitude, log lens/arc flux, log arc S/N).
It prints the share above the threshold of these cutouts per real lens:

* simulated: a look-alike as simulated (its lens light + its arcs + survey noise);
* real light, sim. arcs: the real cutout with its own arcs taken out and a look-alike's put in
  (the real lens light and noise kept);
* real light, new noise, sim. arcs: the real lens light (degraded without survey noise; it
  carries the HST image's own) + a look-alike's arcs + survey noise drawn anew;
* Sersic fit, sim. arcs: the best-fitting PSF-convolved elliptical Sersic profile of the real
  lens light (the simulator's lens-light model, fitted by least squares in noise units; astropy's
  Sersic2D) + a look-alike's arcs + survey noise;
* Sersic fit + HST noise, sim. arcs: the same with the noise a real cutout carries: a white
  realisation of the HST image's own noise, degraded as the image was (correlated on the PSF
  scale), and white survey noise with the rest of the survey's variance per pixel (none where
  the HST noise exceeds it), as ``datasets.degrade`` makes the real cutouts;
* ... + photons: the same with the HST noise drawn with the lens's own photon noise in one
  420 s snapshot beside the sky's (``degraded_hst_noise(photon_exposure_s=...)``; SDSSJ0029-0055's
  image combines 4 exposures, so there it is overstated);
* real light, fit in the arc annulus, sim. arcs: the real lens light with the Sersic fit in its
  place within 0.6-1.5 theta_E (where the arc split leaves part of the real arcs in the lens
  light), blended over 0.1" at the edges, + a look-alike's arcs + survey noise;
* fit, real light in the core / the arc annulus / the outskirts, sim. arcs: the other way
  round, one region at a time: the Sersic fit with the real lens light within 0.6 theta_E,
  within 0.6-1.5 theta_E or beyond 1.5 theta_E;
* fit, real outskirts without neighbours, sim. arcs: the last with the real lens light's
  neighbours replaced by its own pixels point-reflected through the centre, as
  ``probe_real_neighbours.py`` replaces them;
* fit + smooth / fine part of the real outskirts, sim. arcs: the fit with, beyond 1.5 theta_E,
  only the smooth part of the real light's departure from it (the departure, neighbours
  replaced, smoothed by a Gaussian of SMOOTH_SIGMA: halo shape, sky left by the sky fit) or
  only the rest (clumps, what the neighbour mask missed, the HST noise);
* sim. light, real arcs: a look-alike's lens light + the real lens's arcs + survey noise;
* real: the real cutout itself (one cutout: 0 or 1).

If the real lens light is what the finder was not trained for, the columns with it fall and the
one with simulated lens light stays near the first; if the real arcs are, the other way round;
if the Sersic fit brings the share back, it is the real light's departure from a Sersic profile,
and the two annulus columns say whether that departure lies where the arcs are (what the arc
split left of them) or elsewhere (the core, the isophotes, the neighbours).
Per real lens it also prints the fine-scale scatter (MAD of the fine part, as in the fine-part
column) 2-4.5" out, neighbours left out, of the real lens light and of the HST noise model,
the border's variance alone and with the lens's photons in one 420 s snapshot.
Each fit's residual (real light - fit) is printed in noise sigma per pixel within 3", and its sum
within 0.6-1.5 theta_E beside the flux the arc split took for arcs (what the split's running
median left of the arcs in the lens light shows there, with the fit's own misfit). The real
arcs and lens light are the arc split's (``known_lenses.split_arcs``), degraded without noise,
as in the report's probe: the real lens light carries the HST image's noise, so where a cutout
is made from it the survey noise added is white with the rest of the survey's variance (the
HST noise's variance, the mean over realisations of ``degraded_hst_noise``, times the square of
the real light's weight in the cutout, taken off; the probe's versions before 7 December 2026
added it in full, so their real-light columns had up to 2.6 times the survey's noise variance).
Field galaxies are left out of the simulated lenses (a neighbour of
the real lens stays in its lens light). Noise: the survey's per-pixel sigma at the noise-free
image (``real_diagnosis.survey_sigma``), Gaussian.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from astropy.modeling.models import Sersic2D
from lensbench.bench.suites.real_diagnosis import (
    degraded_hst_noise,
    lookalike_axes,
    nearest_lookalikes,
    real_lens_degrade_args,
    real_lens_parts,
    real_lens_quantities,
    real_split_lenses,
    simulated_lens_quantities,
    survey_sigma,
)
from lensbench.bench.tasks import all_tasks
from lensbench.datasets.known_lenses import SNAPSHOT_EXPOSURE_S
from lensbench.datasets.psf import psf_kernel
from lensbench.datasets.robust import mad_sigma
from lensbench.datasets.simulate import Simulator
from lensbench.datasets.surveys import get_survey
from probe_common import fitted_run, scored_real_split
from probe_real_neighbours import neighbour_mask
from scipy.ndimage import gaussian_filter
from scipy.optimize import least_squares
from scipy.signal import fftconvolve

SEED = 22
COLUMNS = ("simulated", "real light, sim. arcs", "real light, new noise, sim. arcs",
           "Sersic fit, sim. arcs", "Sersic fit + HST noise, sim. arcs",
           "Sersic fit + HST noise + photons, sim. arcs",
           "real light, fit in the arc annulus, sim. arcs",
           "fit, real light in the core, sim. arcs",
           "fit, real light in the arc annulus, sim. arcs",
           "fit, real light in the outskirts, sim. arcs",
           "fit, real outskirts without neighbours, sim. arcs",
           "fit + smooth part of the real outskirts, sim. arcs",
           "fit + fine part of the real outskirts, sim. arcs", "sim. light, real arcs", "real")
# (inner, outer) in theta_E: the core, the annulus where the arc split leaves arc light in the
# lens light, and the outskirts
REGIONS = ((0.0, 0.6), (0.6, 1.5), (1.5, np.inf))
REGION_EDGE = 0.1  # arcsec over which a region blends into its surroundings
SMOOTH_SIGMA = 0.5  # arcsec: a departure smoother than this is a halo's or the sky's
HST_NOISE_DRAWS = 4  # realisations of the HST noise its variance is estimated from
SCATTER_RING = (2.0, 4.5)  # arcsec: beyond the arcs, within the stamp's inscribed circle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("task")
    parser.add_argument("run_id")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    task = all_tasks()[args.task]
    run, method, saved = fitted_run(args.workdir, task, args.run_id)
    threshold = float(saved["threshold"])
    real = scored_real_split(args.workdir, task, run, saved)
    spec = task.real_lenses
    parts = real_lens_parts(spec, real)
    observed = real.images(parts.rows).astype(np.float64)

    config = task.config.replace(lens_fraction=1.0, labelling="metcalf", noise=False,
                                 field_density=0.0)
    with_arcs, truth = Simulator(config).simulate(args.n, seed=SEED)
    light, _ = Simulator(config.replace(source_mag_range=(40.0, 40.1))).simulate(args.n,
                                                                                  seed=SEED)
    if with_arcs.shape[1:] != observed.shape[1:]:
        raise SystemExit(f"simulated {with_arcs.shape[1:]} and real {observed.shape[1:]} "
                         "cutouts differ in shape")
    sim_arcs = with_arcs.astype(np.float64) - light
    ref = config.reference
    nearest = nearest_lookalikes(
        lookalike_axes(simulated_lens_quantities(truth, np.arange(args.n), ref)),
        lookalike_axes(real_lens_quantities(real, parts, ref)), args.k)
    survey = get_survey(spec["survey"]).select(list(spec["bands"]))
    rng = np.random.default_rng(SEED)
    size = observed.shape[-1]
    lenses = real_split_lenses(real)
    slacs = [lenses[int(real.truth["object_index"][row])] for row in parts.rows]  # per real lens
    degrade_args = real_lens_degrade_args(spec, size)
    radius = np.hypot(*(np.mgrid[:size, :size] - (size - 1) / 2)) * survey.pixel_scale

    def noisy(expected: np.ndarray, carried_variance: np.ndarray | float = 0.0) -> np.ndarray:
        """``expected`` + white survey noise, less the variance it already carries."""
        variance = np.clip(survey_sigma(survey, expected) ** 2 - carried_variance, 0, None)
        return expected + rng.normal(size=expected.shape) * np.sqrt(variance)

    def hst_noise(lens, count: int, photon_exposure_s: float | None = None) -> np.ndarray:
        """``count`` realisations of the HST image's noise, degraded like the image."""
        return np.stack([degraded_hst_noise(lens, survey, rng, photon_exposure_s, **degrade_args)
                         for _ in range(count)])

    def with_hst_noise(expected: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """``expected`` + ``noise`` (realisations of the HST noise, one per cutout) + white
        survey noise with the rest of the survey's variance, the HST noise's variance at each
        pixel taken from the realisations (smoothed over 2 pixels)."""
        hst_variance = gaussian_filter(noise.var(axis=0), sigma=(0, 2, 2))[None]
        rest = np.sqrt(np.clip(survey_sigma(survey, expected) ** 2 - hst_variance, 0, None))
        return expected + noise + rng.normal(size=expected.shape) * rest

    def share_above(cutouts: np.ndarray) -> float:
        return float(np.mean(np.asarray(method.predict_score(cutouts.astype(np.float32)))
                             > threshold))

    kernels = [psf_kernel(survey.psf_model, band.psf_fwhm, band.pixel_scale, survey.moffat_beta)
               for band in survey.bands]
    fits = np.empty_like(parts.lens_light, dtype=np.float64)
    in_region = np.empty((len(parts.names), len(REGIONS), size, size))
    without_neighbours = parts.lens_light.astype(np.float64)
    sky = float(np.sqrt(np.sum(survey_sigma(survey, np.zeros((1, len(survey.bands), 1, 1))) ** 2)))
    neighbours = [neighbour_mask(lens_light.sum(axis=0), sky, radius, survey.pixel_scale)
                  for lens_light in without_neighbours]
    for real_lens_light, mask in zip(without_neighbours, neighbours, strict=True):  # in place
        real_lens_light[:, mask] = real_lens_light[:, ::-1, ::-1][:, mask]
    within = radius < 3.0
    for i, name in enumerate(parts.names):
        sigma = survey_sigma(survey, parts.lens_light[i][None].astype(np.float64))[0]
        for b, kernel in enumerate(kernels):
            fits[i, b], (n_fit, r_eff_fit) = fit_sersic(parts.lens_light[i, b], sigma[b], kernel,
                                                       survey.pixel_scale)
            print(f"{name} {survey.bands[b].name}: Sersic fit n = {n_fit:.2f}, "
                  f"R_e = {r_eff_fit:.2f}\"")
        rms = np.sqrt(np.mean(((parts.lens_light[i] - fits[i]) / sigma)[:, within] ** 2))
        print(f"{name}: real lens light - Sersic fit, rms within 3\": {rms:.1f} sigma per pixel")
        # What the arc split left in the lens light: the excess over the fit where arcs lie.
        theta_e = float(real.truth["theta_e"][parts.rows[i]])
        annulus = (radius > REGIONS[1][0] * theta_e) & (radius < REGIONS[1][1] * theta_e)
        for r, (inner, outer) in enumerate(REGIONS):
            in_region[i, r] = region_weight(radius, inner * theta_e, outer * theta_e)
        print(f"{name}: real lens light - Sersic fit within 0.6-1.5 theta_E ({theta_e:.2f}\"): "
              f"{(parts.lens_light[i] - fits[i])[:, annulus].sum():.2f} nMgy; the arc split's "
              f"arcs: {parts.arcs[i].sum():.2f} nMgy")
    # The HST noise's variance per band in each real lens's cutout (its own generator, so the
    # survey noise drawn for the columns is as before this estimate was made).
    noise_rng = np.random.default_rng(SEED + 1)
    hst_variance = np.stack([
        np.mean([degraded_hst_noise(lens, survey, noise_rng, **degrade_args).var(axis=(1, 2))
                 for _ in range(HST_NOISE_DRAWS)], axis=0)[:, None, None]
        for lens in slacs])
    smoothing = SMOOTH_SIGMA / survey.pixel_scale  # pixels
    smooth_departure = gaussian_filter(without_neighbours - fits,
                                       sigma=(0, 0, smoothing, smoothing))
    # How much fine-scale scatter the real light carries beyond the arcs, against what the HST
    # noise model gives it: the border's variance (the sky's alone), and that with the lens's
    # own photons in one snapshot (MAD of the fine part, neighbours left out; nMgy per pixel).
    scatter_ring = (radius > SCATTER_RING[0]) & (radius < SCATTER_RING[1])
    for i, lens in enumerate(slacs):
        pixels = scatter_ring & ~neighbours[i]
        fine = without_neighbours[i] - fits[i] - smooth_departure[i]
        modelled = [np.mean([
            mad_sigma(fine_part(degraded_hst_noise(lens, survey, noise_rng, exposure,
                                                   **degrade_args), smoothing)[:, pixels],
                      axis=1)
            for _ in range(HST_NOISE_DRAWS)], axis=0) for exposure in (None, SNAPSHOT_EXPOSURE_S)]
        survey_noise = np.median(survey_sigma(survey, fits[i][None])[0][:, pixels], axis=1)
        print(f"{parts.names[i]}: fine-scale scatter {SCATTER_RING[0]:g}-{SCATTER_RING[1]:g}\" "
              f"out, per band: real light {_format(mad_sigma(fine[:, pixels], axis=1))}; "
              f"HST noise model, sky alone {_format(modelled[0])}, with the lens's photons "
              f"{_format(modelled[1])}; the survey's own sigma {_format(survey_noise)} nMgy")
    print(f"{task.name} {args.run_id}: threshold {threshold:.4g} (FPR 1e-3 on the simulated "
          f"test split); {args.k} look-alikes of each real lens among {args.n} simulated lenses;"
          " share above the threshold")
    print("| real lens | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    totals = np.zeros(len(COLUMNS))
    for i, name in enumerate(parts.names):
        alike = nearest[i]
        outskirts = in_region[i, 2]
        real_arcs = parts.arcs[i][None]
        real_light = parts.lens_light[i][None]
        carried = hst_variance[i]  # of the real light, where its weight in a cutout is 1
        shares = [share_above(noisy(with_arcs[alike].astype(np.float64))),
                  share_above(observed[i][None] - real_arcs + sim_arcs[alike]),
                  share_above(noisy(real_light + sim_arcs[alike], carried)),
                  share_above(noisy(fits[i][None] + sim_arcs[alike])),
                  share_above(with_hst_noise(fits[i][None] + sim_arcs[alike],
                                             hst_noise(slacs[i], len(alike)))),
                  share_above(with_hst_noise(fits[i][None] + sim_arcs[alike],
                                             hst_noise(slacs[i], len(alike),
                                                       SNAPSHOT_EXPOSURE_S))),
                  share_above(noisy(real_light + in_region[i, 1] * (fits[i] - real_light)
                                    + sim_arcs[alike], (1 - in_region[i, 1]) ** 2 * carried)),
                  *(share_above(noisy(fits[i] + weight * (real_light - fits[i])
                                      + sim_arcs[alike], weight**2 * carried))
                    for weight in in_region[i]),
                  share_above(noisy(fits[i] + outskirts * (without_neighbours[i] - fits[i])
                                    + sim_arcs[alike], outskirts**2 * carried)),
                  share_above(noisy(fits[i] + outskirts * smooth_departure[i] + sim_arcs[alike])),
                  share_above(noisy(fits[i] + outskirts * (without_neighbours[i] - fits[i]
                                                           - smooth_departure[i])
                                    + sim_arcs[alike], outskirts**2 * carried)),
                  share_above(noisy(light[alike] + real_arcs)),
                  share_above(observed[i][None])]
        totals += shares
        print(f"| {name} | " + " | ".join(f"{s:.2f}" for s in shares) + " |")
    print("| all | " + " | ".join(f"{s / len(parts.names):.2f}" for s in totals) + " |")


def fine_part(image: np.ndarray, smoothing: float) -> np.ndarray:
    """``image`` (B, H, W) less its Gaussian smoothing (``smoothing``: sigma, pixels)."""
    return image - gaussian_filter(image, sigma=(0, smoothing, smoothing))


def _format(values) -> str:
    return " ".join(f"{v:.2e}" for v in values)


def region_weight(radius: np.ndarray, inner: float, outer: float) -> np.ndarray:
    """1 at radii ``inner``-``outer`` (arcsec), 0 elsewhere, with a linear ramp REGION_EDGE
    wide centred on each edge, so that pasting one image into another there leaves no step; an
    inner radius of 0 has no edge (the weights of adjoining regions sum to 1)."""
    inside_inner = (np.ones_like(radius) if inner <= 0 else
                    np.clip((radius - inner) / REGION_EDGE + 0.5, 0.0, 1.0))
    inside_outer = np.clip((outer - radius) / REGION_EDGE + 0.5, 0.0, 1.0)
    return inside_inner * inside_outer


def fit_sersic(image: np.ndarray, sigma: np.ndarray, kernel: np.ndarray, pixel_scale: float,
               oversample: int = 3) -> np.ndarray:
    """The best-fitting elliptical Sersic profile convolved with ``kernel`` (least squares in
    units of ``sigma``; started at n = 2, 4 and 6, the best kept), as an image like ``image``,
    and its Sersic index and half-light radius (arcsec)."""
    size = image.shape[-1]
    fine = (np.arange(size * oversample) - (size * oversample - 1) / 2) / oversample * pixel_scale
    x, y = np.meshgrid(fine, fine)

    def model(p):
        log_flux, log_r_eff, n, q, theta, x0, y0 = p
        profile = Sersic2D.evaluate(x, y, 1.0, np.exp(log_r_eff), n, x0, y0, 1 - q, theta)
        profile = profile.reshape(size, oversample, size, oversample).mean(axis=(1, 3))
        profile = fftconvolve(profile, kernel, mode="same")
        return np.exp(log_flux) * profile / profile.sum()

    def residual(p):
        return ((model(p) - image) / sigma).ravel()

    bounds = ([-np.inf, np.log(0.05), 0.5, 0.2, -np.pi, -0.5, -0.5],
              [np.inf, np.log(10.0), 10.0, 1.0, np.pi, 0.5, 0.5])
    start = [np.log(max(image.sum(), 1e-12)), 0.0, 4.0, 0.8, 0.0, 0.0, 0.0]
    best = min((least_squares(residual, [*start[:2], n, *start[3:]], bounds=bounds, max_nfev=300)
                for n in (2.0, 4.0, 6.0)), key=lambda fit: fit.cost)
    return model(best.x), (best.x[2], float(np.exp(best.x[1])))


if __name__ == "__main__":
    main()
