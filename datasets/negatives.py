"""Hard negatives for lens finding: non-lens galaxies that look like lenses, and artefacts.

Classes (``config.NEGATIVE_CLASSES``, shares set by ``SimConfig.negatives``):

- ``elliptical``: the isolated lens galaxy without a source (the simulator's own population).
- ``spiral``: Sersic bulge + exponential disk + logarithmic spiral arms (blue-ish).
- ``ring``: a red core with a blue star-forming ring of radius 0.8-2.5" and knots on it (the
  classic false positive: it looks like an Einstein ring).
- ``merger``: two galaxies 0.8-2.5" apart, one with a curved tidal tail (an arc look-alike).
- ``group``: 3-5 red galaxies within the stamp.
- ``edge-on``: a thin disk (q 0.1-0.25) with a bulge (a straight "arc").
- ``cosmos``: a real HST COSMOS galaxy, unlensed (identity mapping), at the survey's resolution.
- ``artefact``: an elliptical plus one of ``config.ARTEFACT_KINDS``: a cosmic ray (sharp
  1-3 px track, not PSF-convolved, one band), a saturated star with diffraction spikes (clipped
  at ``SimConfig.saturation_level``), a satellite trail (a PSF-convolved line across the stamp,
  one band), or a masked rectangle set to ``MASK_VALUE`` (the Metcalf challenge's) after noise.

How they are painted. The simulator renders unit-flux component maps on its supersampled grid
and mixes them into bands with per-band fluxes (one FFT per component). A negative fills the same
slots with its own parts: slot 0 its red part (bulge, core, first galaxy), slots 1 and 2 its blue
or secondary parts, each with a colour from the tables in ``config`` (``DISK_COLOURS``,
``RING_COLOURS``, ``ARM_COLOURS``, ``LENS_COLOURS``) plus ``colour_scatter``. PSF-convolved
artefacts (stars, trails) get their own slot (``Renderer.artefact_slot``). For the
single-galaxy classes (elliptical, spiral, ring, edge-on, cosmos) the total reference-band
magnitude is exactly the Faber-Jackson magnitude drawn for the elliptical (colour scatter moves the
other bands only), so brightness says nothing about the class; mergers and groups add their
companions (0-1.5 and 0.3-2 mag fainter) to a main galaxy of that magnitude. The ``cosmos`` class
rescales each stamp to that magnitude too: COSMOS galaxies (median i ~ 24.8) become 80x brighter
than they are, with their own angular sizes (compact, high surface brightness).

Profiles are batched torch functions: parameters of shape (m, 1, 1) broadcast against image-plane
coordinates (H, W) in arcsec. They return surface brightness (flux / arcsec^2); the renderers
multiply by the subpixel area. Sampling is numpy, from the population's random stream.

What each side reads of the simulator is narrow: the samplers a ``population.Population``
(``config``, ``band_names``, ``reference_index``, ``size``, ``half_width``, ``draw_cosmos``), the
renderers a ``render.Grid`` (the supersampled coordinates, pixel scale and size) plus the bands,
artefact slot or saturation levels they are given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from lensbench.datasets import lensing
from lensbench.datasets.config import (
    ARM_COLOURS,
    ARTEFACT_KINDS,
    DISK_COLOURS,
    LENS_COLOURS,
    NEGATIVE_CLASSES,
    RING_COLOURS,
    STAR_COLOURS,
)
from lensbench.datasets.readers import METCALF_MASK_VALUE

if TYPE_CHECKING:  # render and population import this module
    from lensbench.datasets.population import Population
    from lensbench.datasets.render import Grid

MASK_VALUE = METCALF_MASK_VALUE  # masked pixels, as in the Metcalf et al. (2019) challenge
COSMIC_RAY, SATURATED_STAR, SATELLITE_TRAIL, MASK = range(4)
MAX_GROUP_MEMBERS = 4  # besides the central galaxy
MAX_RING_KNOTS = 4
# Non-lens classes whose central galaxy is an early type drawn as the lenses' (the isophote
# structure of SimConfig.lens_isophote_* applies to them as to the lenses); the smallest inner
# axis ratio an isophote twist and axis-ratio change may give.
EARLY_TYPE_CLASSES = ("elliptical", "group")
ISOPHOTE_MIN_Q = 0.2
STAR_MAG_RANGE = (14.0, 18.0)  # reference band; saturates ground surveys' cores
TRAIL_MAG_RANGE = (20.5, 24.0)  # AB mag per arcsec of trail length
COSMIC_RAY_PEAK_RANGE = (10.0, 100.0)  # peak, in units of the band's background sigma


# ------------------------------------------------------------------------------------ profiles
def _deprojected(x, y, q, phi, center_x, center_y):
    """Coordinates in the disk plane (arcsec): the major-axis frame scaled by sqrt(q) along the
    major and 1/sqrt(q) along the minor axis (area-preserving: the product-average radius of
    ``lensing.sersic_profile``)."""
    cos, sin = torch.cos(phi), torch.sin(phi)
    dx, dy = x - center_x, y - center_y
    sq = torch.sqrt(q)
    return (cos * dx + sin * dy) * sq, (-sin * dx + cos * dy) / sq


def spiral_arm_profile(x, y, total_flux, r_eff, q, phi, n_arms, pitch, phase, sharpness,
                       center_x=0.0, center_y=0.0):
    """Logarithmic spiral arms: an exponential disk (Sersic n = 1, half-light radius ``r_eff``
    arcsec, axis ratio q, major axis at ``phi`` rad) modulated in azimuth by
    M = ((1 + cos psi) / 2)^s / <.>, psi = m (theta - ln(R / r_eff) / tan(pitch)) - phase, with m
    = ``n_arms``, ``pitch`` the pitch angle (rad) and s = ``sharpness`` (arm contrast). The
    modulation has unit mean on every circle of the disk plane, so the arms hold ``total_flux``
    exactly; it is tapered to 1 inside 0.5 r_eff, where the arms would wind up.
    Returns flux / arcsec^2."""
    u, v = _deprojected(x, y, q, phi, center_x, center_y)
    radius = torch.sqrt(u * u + v * v).clamp(min=1e-6)
    theta = torch.atan2(v, u)
    psi = n_arms * (theta - torch.log(radius / r_eff) / torch.tan(pitch)) - phase
    mean = torch.exp(torch.lgamma(sharpness + 0.5) - torch.lgamma(sharpness + 1.0)) / math.sqrt(
        math.pi)
    modulation = ((1.0 + torch.cos(psi)) / 2.0) ** sharpness / mean
    taper = 1.0 - torch.exp(-((radius / (0.5 * r_eff)) ** 2))
    b1 = float(lensing.sersic_b(1.0))
    amplitude = total_flux * b1**2 / (2 * math.pi * r_eff**2 * math.exp(b1))  # I_e, n = 1
    disk = amplitude * torch.exp(-b1 * (radius / r_eff - 1.0))
    return disk * (1.0 + (modulation - 1.0) * taper)


def ring_profile(x, y, total_flux, radius, width, q, phi, center_x=0.0, center_y=0.0):
    """Gaussian annulus exp(-(R - radius)^2 / (2 width^2)) in the elliptical radius R (axis
    ratio q, major axis at ``phi``), normalised analytically to ``total_flux``: its integral is
    2 pi [w^2 exp(-R0^2 / 2w^2) + R0 w sqrt(pi/2) (1 + erf(R0 / (sqrt(2) w)))].
    radius, width: arcsec. Returns flux / arcsec^2."""
    u, v = _deprojected(x, y, q, phi, center_x, center_y)
    r = torch.sqrt(u * u + v * v)
    w2 = width * width
    integral = 2 * math.pi * (w2 * torch.exp(-radius * radius / (2 * w2)) + radius * width
                              * math.sqrt(math.pi / 2) * (1 + torch.erf(radius / (math.sqrt(2)
                                                                                  * width))))
    return total_flux / integral * torch.exp(-((r - radius) ** 2) / (2 * w2))


def arc_segment_profile(x, y, total_flux, radius, width, angle, extent, center_x=0.0,
                        center_y=0.0):
    """A curved tail: Gaussian in radius about ``radius`` (sigma ``width``, arcsec) times a
    Gaussian in azimuth about ``angle`` (sigma ``extent``, rad) around the centre. Normalised as
    sqrt(2 pi) width x radius x sqrt(2 pi) extent (exact for width << radius, extent << pi).
    Returns flux / arcsec^2."""
    dx, dy = x - center_x, y - center_y
    r = torch.sqrt(dx * dx + dy * dy)
    dtheta = torch.remainder(torch.atan2(dy, dx) - angle + math.pi, 2 * math.pi) - math.pi
    norm = 2 * math.pi * width * radius * extent
    return (total_flux / norm * torch.exp(-((r - radius) ** 2) / (2 * width * width))
            * torch.exp(-(dtheta * dtheta) / (2 * extent * extent)))


def line_profile(x, y, flux_per_length, angle, width, center_x=0.0, center_y=0.0,
                 half_length=None, scale_length=None):
    """A straight line through (center_x, center_y) at position angle ``angle`` (rad): Gaussian
    cross-section of sigma ``width`` (arcsec) and ``flux_per_length`` (flux / arcsec) along it.
    ``half_length`` (arcsec) cuts it to a segment (smooth ends); ``scale_length`` makes the
    density fall as exp(-|t| / scale_length) from the centre (diffraction spikes; then
    ``flux_per_length`` is the density at the centre). Returns flux / arcsec^2."""
    dx, dy = x - center_x, y - center_y
    cos, sin = torch.cos(angle), torch.sin(angle)
    along = cos * dx + sin * dy
    across = -sin * dx + cos * dy
    out = flux_per_length / (math.sqrt(2 * math.pi) * width) * torch.exp(
        -(across * across) / (2 * width * width))
    if half_length is not None:
        excess = (along.abs() - half_length).clamp(min=0)
        out = out * torch.exp(-(excess * excess) / (2 * width * width))
    if scale_length is not None:
        out = out * torch.exp(-along.abs() / scale_length)
    return out


# ------------------------------------------------------------------------------------ sampling
# Sizes: Sersic parts have r_eff >= 0.3" and clumps >= 0.1": the simulator samples profiles at
# subpixel centres, and a cuspy core much smaller than that is over- or under-counted by up to
# ~15% depending on where it falls (measured: n = 3.3, r_eff = 0.19" on 0.084" subpixels).
def _colour_mags(population: Population, rng, ref_mag, table, n):
    """(n, B) magnitudes of a part whose reference-band magnitude is ``ref_mag`` and colours
    follow ``table`` (band - i), plus ``colour_scatter`` in the other bands (the reference band
    keeps ``ref_mag`` exactly, so the parts' shares of the reference flux hold)."""
    ref = population.config.reference
    scatter = rng.normal(0, population.config.colour_scatter, (n, len(population.band_names)))
    scatter[:, population.reference_index] = 0.0
    mags = np.stack([ref_mag + table[b] - table[ref] for b in population.band_names], axis=1)
    return mags + scatter


def _share_mag(ref_mag, fraction):
    with np.errstate(divide="ignore"):
        return ref_mag - 2.5 * np.log10(fraction)


def _sample_elliptical(population: Population, rng, n, p, select):
    mags = np.full((n, len(population.band_names), 3), np.inf)
    mags[:, :, 0] = np.stack([p[f"lens_mag_{b}"] for b in population.band_names], axis=1)
    return {"_component_mag": mags}


def _sample_disk_galaxy(population: Population, rng, n, p, q_range, arms: bool):
    """Bulge + exponential disk (+ arms): shared by ``spiral`` and ``edge-on``."""
    ref = p[f"lens_mag_{population.config.reference}"]
    # The half-light semi-major axis (0.8-1.8": 3.5-8 kpc at z = 0.3) is what a disk keeps
    # when inclined; the product-average radius of the profiles is that times sqrt(q).
    major = rng.uniform(0.8, 1.8, n)
    out = {"disk_q": rng.uniform(*q_range, n),
           "disk_phi": rng.uniform(0, math.pi, n), "bulge_fraction": rng.uniform(0.1, 0.4, n),
           "bulge_r_eff": rng.uniform(0.3, 0.6, n), "bulge_n": rng.uniform(1.5, 3.0, n)}
    out["disk_r_eff"] = major * np.sqrt(out["disk_q"])
    out["bulge_q"] = np.clip(out["disk_q"] + rng.uniform(0.3, 0.6, n), 0.5, 1.0)
    arm_share = np.zeros(n)
    if arms:
        out["n_arms"] = np.where(rng.random(n) < 0.75, 2.0, 3.0)
        out["pitch"] = np.radians(rng.uniform(10.0, 30.0, n))
        out["arm_phase"] = rng.uniform(0, 2 * math.pi, n)
        out["arm_sharpness"] = rng.uniform(2.0, 6.0, n)
        arm_share = rng.uniform(0.3, 0.6, n)
    disk = 1 - out["bulge_fraction"]
    mags = np.full((n, len(population.band_names), 3), np.inf)
    for slot, (share, table) in enumerate(((out["bulge_fraction"], LENS_COLOURS),
                                           (disk * (1 - arm_share), DISK_COLOURS),
                                           (disk * arm_share, ARM_COLOURS))):
        mags[:, :, slot] = _colour_mags(population, rng, _share_mag(ref, share), table, n)
    out["_component_mag"] = mags
    out["_main"] = {"lens_r_eff": out["disk_r_eff"], "lens_sersic_n": np.ones(n),
                    "lens_q_light": out["disk_q"], "lens_phi_light": out["disk_phi"]}
    return out


def _sample_spiral(population: Population, rng, n, p, select):
    return _sample_disk_galaxy(population, rng, n, p, (0.35, 1.0), arms=True)


def _sample_edge_on(population: Population, rng, n, p, select):
    return _sample_disk_galaxy(population, rng, n, p, (0.1, 0.25), arms=False)


def _sample_ring(population: Population, rng, n, p, select):
    ref = p[f"lens_mag_{population.config.reference}"]
    high = min(2.5, max(0.8, 0.8 * population.half_width))
    out = {"core_r_eff": rng.uniform(0.3, 0.7, n), "core_n": rng.uniform(2.5, 4.0, n),
           "core_q": rng.uniform(0.6, 1.0, n), "core_phi": rng.uniform(0, math.pi, n),
           "ring_radius": rng.uniform(0.8, high, n), "ring_width": rng.uniform(0.08, 0.25, n),
           "ring_q": rng.uniform(0.5, 1.0, n), "ring_phi": rng.uniform(0, math.pi, n)}
    ring_share = rng.uniform(0.25, 0.6, n)
    knot_share = rng.uniform(0.1, 0.4, n)
    n_knots = rng.integers(0, MAX_RING_KNOTS + 1, n)
    out["knot_angle"] = rng.uniform(0, 2 * math.pi, (n, MAX_RING_KNOTS))
    # Half-light radii >= 0.1" (sigma >= 1 subpixel of 0.084"): narrower Gaussians sampled at
    # subpixel centres would not sum to their flux.
    out["knot_r_eff"] = rng.uniform(0.1, 0.2, (n, MAX_RING_KNOTS))
    weights = rng.uniform(0.5, 1.0, (n, MAX_RING_KNOTS)) * (
        np.arange(MAX_RING_KNOTS)[None] < n_knots[:, None])
    out["knot_weight"] = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    knot_share = np.where(n_knots > 0, knot_share, 0.0)
    mags = np.full((n, len(population.band_names), 3), np.inf)
    for slot, (share, table) in enumerate((
            (1 - ring_share, LENS_COLOURS), (ring_share * (1 - knot_share), RING_COLOURS),
            (ring_share * knot_share, ARM_COLOURS))):
        mags[:, :, slot] = _colour_mags(population, rng, _share_mag(ref, share), table, n)
    out["_component_mag"] = mags
    out["feature_radius"] = out["ring_radius"]
    out["_main"] = {"lens_r_eff": out["core_r_eff"], "lens_sersic_n": out["core_n"],
                    "lens_q_light": out["core_q"], "lens_phi_light": out["core_phi"]}
    return out


def _sample_merger(population: Population, rng, n, p, select):
    ref = p[f"lens_mag_{population.config.reference}"]
    high = min(2.5, max(0.8, 0.9 * population.half_width))
    separation = rng.uniform(0.8, high, n)
    direction = rng.uniform(0, 2 * math.pi, n)
    ux, uy = np.cos(direction), np.sin(direction)
    out = {"separation": separation, "direction": direction,
           "a_x": p["lens_x"] - 0.5 * separation * ux, "a_y": p["lens_y"] - 0.5 * separation * uy,
           "b_x": p["lens_x"] + 0.5 * separation * ux, "b_y": p["lens_y"] + 0.5 * separation * uy,
           "b_n": rng.uniform(1.0, 4.0, n), "b_r_eff": rng.uniform(0.3, 1.0, n),
           "b_q": rng.uniform(0.4, 1.0, n), "b_phi": rng.uniform(0, math.pi, n),
           "tail_radius": separation * rng.uniform(0.5, 1.0, n),
           "tail_width": rng.uniform(0.08, 0.2, n), "tail_extent": rng.uniform(0.3, 0.8, n)}
    # The tail leaves B away from A, curving to one side.
    out["tail_angle"] = direction + rng.choice([-1.0, 1.0], n) * rng.uniform(0.3, 1.2, n)
    b_mag = ref + rng.uniform(0.0, 1.5, n)
    tail_share = rng.uniform(0.15, 0.4, n)
    red_b = rng.random(n) < 0.5
    mags = np.full((n, len(population.band_names), 3), np.inf)
    mags[:, :, 0] = _colour_mags(population, rng, ref, LENS_COLOURS, n)
    red = _colour_mags(population, rng, _share_mag(b_mag, 1 - tail_share), LENS_COLOURS, n)
    blue = _colour_mags(population, rng, _share_mag(b_mag, 1 - tail_share), DISK_COLOURS, n)
    mags[:, :, 1] = np.where(red_b[:, None], red, blue)
    mags[:, :, 2] = _colour_mags(population, rng, _share_mag(b_mag, tail_share), ARM_COLOURS, n)
    out["_component_mag"] = mags
    out["feature_radius"] = separation
    out["_main"] = {"lens_x": out["a_x"], "lens_y": out["a_y"]}
    return out


def group_members(population: Population, rng, n, p) -> dict:
    """The members of ``n`` groups around the central early types of ``p`` (besides the
    centre, 2-4 early types 0.3-2 mag fainter each, 0.8" to 0.85 of the stamp's half width
    away): ``member_*`` (n, MAX_GROUP_MEMBERS), ``_members_mag`` (n, B) their summed magnitude
    in each band (LENS_COLOURS), ``n_members`` (n,) with the centre."""
    ref = p[f"lens_mag_{population.config.reference}"]
    k = MAX_GROUP_MEMBERS
    members = rng.integers(2, k + 1, n)  # besides the central galaxy: 3-5 in all
    present = np.arange(k)[None] < members[:, None]
    limit = 0.85 * population.half_width
    radius = rng.uniform(min(0.8, 0.5 * limit), limit, (n, k))
    angle = rng.uniform(0, 2 * math.pi, (n, k))
    out = {"member_x": p["lens_x"][:, None] + np.clip(radius * np.cos(angle), -limit, limit),
           "member_y": p["lens_y"][:, None] + np.clip(radius * np.sin(angle), -limit, limit),
           "member_n": rng.uniform(2.0, 4.0, (n, k)),
           "member_r_eff": rng.uniform(0.3, 0.8, (n, k)),
           "member_q": rng.uniform(0.5, 1.0, (n, k)),
           "member_phi": rng.uniform(0, math.pi, (n, k))}
    member_flux = 10 ** (-0.4 * rng.uniform(0.3, 2.0, (n, k))) * present  # relative to central
    total = member_flux.sum(axis=1)
    out["member_weight"] = member_flux / total[:, None]
    out["_members_mag"] = _colour_mags(population, rng, ref - 2.5 * np.log10(total),
                                       LENS_COLOURS, n)
    out["n_members"] = members + 1
    return out


def _sample_group(population: Population, rng, n, p, select):
    out = group_members(population, rng, n, p)
    mags = np.full((n, len(population.band_names), 3), np.inf)
    mags[:, :, 0] = np.stack([p[f"lens_mag_{b}"] for b in population.band_names], axis=1)
    mags[:, :, 1] = out.pop("_members_mag")
    out["_component_mag"] = mags
    return out


def _sample_cosmos(population: Population, rng, n, p, select):
    """Real COSMOS galaxies for the selected rows; their catalogue colours, rescaled to the
    reference-band magnitude drawn for the elliptical."""
    ref = p[f"lens_mag_{population.config.reference}"]
    index, stamps, scales, colours = population.draw_cosmos(rng, int(select.sum()))
    out = {"cosmos_index": np.full(n, -1, dtype=np.int64), "_stamps": np.empty(n, dtype=object),
           "_stamp_scale": np.full(n, np.nan)}
    out["cosmos_index"][select] = index
    out["_stamp_scale"][select] = scales
    rows = np.flatnonzero(select)
    for k, row in enumerate(rows):
        out["_stamps"][row] = stamps[k]
    component = np.full((n, len(population.band_names), 3), np.inf)
    component[select, :, 0] = ref[select, None] + colours
    out["_component_mag"] = component
    nan = np.full(n, np.nan)
    out["_main"] = {"lens_r_eff": nan, "lens_sersic_n": nan, "lens_q_light": nan,
                    "lens_phi_light": nan}
    return out


def _sample_artefact_class(population: Population, rng, n, p, select):
    return _sample_elliptical(population, rng, n, p, select)


def sample_artefacts(population: Population, rng, p: dict, present: np.ndarray) -> None:
    """Draw an artefact (kind uniform over ARTEFACT_KINDS) for the systems where ``present``;
    adds ``artefact_kind`` (-1: none), ``artefact_mag`` (n, B: the PSF-convolved part's AB
    magnitudes, inf where none) and the geometry to ``p``."""
    n = len(present)
    half = population.half_width
    bands = len(population.band_names)
    kind = rng.integers(0, len(ARTEFACT_KINDS), n)
    a = {"artefact_kind": np.where(present, kind, -1),
         "artefact_band": rng.integers(0, bands, n),
         "artefact_angle": rng.uniform(0, math.pi, n),
         "artefact_x": rng.uniform(-0.8, 0.8, n) * half,
         "artefact_y": rng.uniform(-0.8, 0.8, n) * half,
         "cosmic_length_px": rng.uniform(3.0, 20.0, n),
         "cosmic_sigma_px": rng.uniform(0.3, 0.9, n),  # FWHM 0.7-2.1 px
         "cosmic_peak": rng.uniform(*COSMIC_RAY_PEAK_RANGE, n),
         "spike_fraction": rng.uniform(0.01, 0.05, n),
         "spike_length": rng.uniform(1.0, 3.0, n),
         "mask_width": rng.uniform(0.1, 0.4, (n, 2)) * population.size}
    star_mag = _colour_mags(population, rng, rng.uniform(*STAR_MAG_RANGE, n), STAR_COLOURS, n)
    trail_mag = rng.uniform(*TRAIL_MAG_RANGE, n)
    mags = np.full((n, bands), np.inf)
    star = a["artefact_kind"] == SATURATED_STAR
    mags[star] = star_mag[star]
    trail = np.flatnonzero(a["artefact_kind"] == SATELLITE_TRAIL)
    mags[trail, a["artefact_band"][trail]] = trail_mag[trail]
    a["artefact_mag"] = mags
    p.update(a)


SAMPLERS: dict[str, Callable] = {
    "elliptical": _sample_elliptical, "spiral": _sample_spiral, "ring": _sample_ring,
    "merger": _sample_merger, "group": _sample_group, "edge-on": _sample_edge_on,
    "cosmos": _sample_cosmos, "artefact": _sample_artefact_class,
}


def sample_negatives(population: Population, rng: np.random.Generator, p: dict) -> None:
    """Assign a class of NEGATIVE_CLASSES to each non-lens system in ``p`` (shares from
    ``SimConfig.negatives``) and draw its parts; adds ``negative_class``, ``_component_mag``
    (n, B, 3), ``feature_radius`` and the class parameters to ``p`` and overwrites the lens-light
    truth columns with each class's main component and the total magnitudes."""
    n = len(p["lens_x"])
    fractions = np.asarray(population.config.negative_fractions)
    classes = rng.choice(len(NEGATIVE_CLASSES), size=n, p=fractions / fractions.sum())
    p["negative_class"] = classes
    p["feature_radius"] = np.full(n, np.nan)
    component = np.full((n, len(population.band_names), 3), np.inf)
    main = {key: p[key].copy() for key in ("lens_r_eff", "lens_sersic_n", "lens_q_light",
                                           "lens_phi_light", "lens_x", "lens_y")}
    for c, name in enumerate(NEGATIVE_CLASSES):
        select = classes == c
        if fractions[c] == 0:
            continue
        drawn = SAMPLERS[name](population, rng, n, p, select)
        component[select] = drawn.pop("_component_mag")[select]
        for key, value in drawn.pop("_main", {}).items():
            main[key][select] = value[select]
        if "feature_radius" in drawn:
            p["feature_radius"][select] = drawn.pop("feature_radius")[select]
        for key, value in drawn.items():  # classes may share names (disk_q): merge rows
            if key in p:
                p[key][select] = value[select]
            else:
                p[key] = value
    p.update(main)
    p["_component_mag"] = component
    with np.errstate(divide="ignore"):
        total = -2.5 * np.log10((10 ** (-0.4 * component)).sum(axis=2))
    for b, band in enumerate(population.band_names):
        p[f"lens_mag_{band}"] = total[:, b]
    artefact = classes == NEGATIVE_CLASSES.index("artefact")
    if artefact.any():
        sample_artefacts(population, rng, p, artefact)


# ------------------------------------------------------------------------------------ rendering
def sersic_map(grid: Grid, r_eff, n, q, phi, cx, cy, weight=None):
    """Unit-flux (times ``weight``) elliptical Sersic per subpixel on the simulator's grid."""
    c = grid.column
    flux = 1.0 if weight is None else weight
    amplitude = lensing.sersic_flux_to_amplitude(flux, r_eff, n) * grid.subpixel_area
    shape = (c(amplitude), c(r_eff), c(n), c(q), c(phi), c(cx), c(cy))
    b_n = c(lensing.sersic_b(n))
    return grid.integrate_core(
        lensing.sersic_profile(grid.x_fine, grid.y_fine, *shape, b_n=b_n),
        lambda x, y: lensing.sersic_profile(x, y, *shape, b_n=b_n), cx, cy)


def early_type_map(grid: Grid, p, rows):
    """Unit-flux central early type (a lens, an elliptical or a group's central galaxy) per
    subpixel: its elliptical Sersic, with the isophote structure of ``SimConfig.lens_isophote_*``
    where it was drawn (``lens_a4`` in ``p``)."""
    r_eff, n = p["lens_r_eff"][rows], p["lens_sersic_n"][rows]
    q, phi = p["lens_q_light"][rows], p["lens_phi_light"][rows]
    cx, cy = p["lens_x"][rows], p["lens_y"][rows]
    c = grid.column
    amplitude = lensing.sersic_flux_to_amplitude(1.0, r_eff, n) * grid.subpixel_area
    shape = (c(amplitude), c(r_eff), c(n), c(q), c(phi), c(cx), c(cy))
    b_n = c(lensing.sersic_b(n))
    if "lens_a4" not in p:
        def profile(x, y):
            return lensing.sersic_profile(x, y, *shape, b_n=b_n)

        # The grid as a row and a column, which the kernel broadcasts: the same values as on the
        # full grids, ~4% faster for metcalf-ground's lenses (measured).
        values = profile(grid.x_axis, grid.y_axis)
    else:
        isophotes = (c(np.clip(q + p["lens_isophote_dq"][rows], ISOPHOTE_MIN_Q, 1.0)),
                     c(p["lens_isophote_twist"][rows]), c(p["lens_a4"][rows]))

        def profile(x, y):
            return lensing.sersic_profile_isophotes(x, y, *shape, *isophotes, b_n=b_n)

        values = profile(grid.x_fine, grid.y_fine)
    return grid.integrate_core(values, profile, cx, cy)


def _render_elliptical(grid: Grid, p, rows, maps):
    maps[:, 0] = early_type_map(grid, p, rows)


def _render_disk_galaxy(grid: Grid, p, rows, maps):
    """Bulge (slot 0) and exponential disk (slot 1), sharing the disk's position angle."""
    cx, cy = p["lens_x"][rows], p["lens_y"][rows]
    maps[:, 0] = sersic_map(grid, p["bulge_r_eff"][rows], p["bulge_n"][rows],
                             p["bulge_q"][rows], p["disk_phi"][rows], cx, cy)
    maps[:, 1] = sersic_map(grid, p["disk_r_eff"][rows], np.ones(len(rows)), p["disk_q"][rows],
                             p["disk_phi"][rows], cx, cy)


def _render_spiral(grid: Grid, p, rows, maps):
    _render_disk_galaxy(grid, p, rows, maps)
    c = grid.column
    maps[:, 2] = spiral_arm_profile(
        grid.x_fine, grid.y_fine, grid.subpixel_area, c(p["disk_r_eff"][rows]),
        c(p["disk_q"][rows]), c(p["disk_phi"][rows]), c(p["n_arms"][rows]),
        c(p["pitch"][rows]), c(p["arm_phase"][rows]), c(p["arm_sharpness"][rows]),
        c(p["lens_x"][rows]), c(p["lens_y"][rows]))


def _render_ring(grid: Grid, p, rows, maps):
    c = grid.column
    cx, cy = p["lens_x"][rows], p["lens_y"][rows]
    maps[:, 0] = sersic_map(grid, p["core_r_eff"][rows], p["core_n"][rows], p["core_q"][rows],
                             p["core_phi"][rows], cx, cy)
    radius, q, phi = p["ring_radius"][rows], p["ring_q"][rows], p["ring_phi"][rows]
    maps[:, 1] = ring_profile(grid.x_fine, grid.y_fine, grid.subpixel_area, c(radius),
                              c(p["ring_width"][rows]), c(q), c(phi), c(cx), c(cy))
    # Knots on the ring: the point at azimuth t of the disk plane, projected back to the sky.
    for j in range(MAX_RING_KNOTS):
        weight = p["knot_weight"][rows, j]
        if not np.any(weight > 0):
            continue
        t = p["knot_angle"][rows, j]
        u, v = radius * np.cos(t) / np.sqrt(q), radius * np.sin(t) * np.sqrt(q)
        kx = cx + u * np.cos(phi) - v * np.sin(phi)
        ky = cy + u * np.sin(phi) + v * np.cos(phi)
        maps[:, 2] += lensing.gaussian_profile(
            grid.x_fine, grid.y_fine, c(weight * grid.subpixel_area), c(p["knot_r_eff"][rows, j]),
            c(kx), c(ky))


def _render_merger(grid: Grid, p, rows, maps):
    c = grid.column
    maps[:, 0] = sersic_map(grid, p["lens_r_eff"][rows], p["lens_sersic_n"][rows],
                             p["lens_q_light"][rows], p["lens_phi_light"][rows], p["a_x"][rows],
                             p["a_y"][rows])
    maps[:, 1] = sersic_map(grid, p["b_r_eff"][rows], p["b_n"][rows], p["b_q"][rows],
                             p["b_phi"][rows], p["b_x"][rows], p["b_y"][rows])
    maps[:, 2] = arc_segment_profile(
        grid.x_fine, grid.y_fine, grid.subpixel_area, c(p["tail_radius"][rows]),
        c(p["tail_width"][rows]), c(p["tail_angle"][rows]), c(p["tail_extent"][rows]),
        c(p["b_x"][rows]), c(p["b_y"][rows]))


def render_members(grid: Grid, p, rows, maps, slot: int) -> None:
    """A group's members (``member_*`` of ``group_members``) into component ``slot``, each
    weighted by its share of their flux."""
    for j in range(MAX_GROUP_MEMBERS):
        weight = p["member_weight"][rows, j]
        if not np.any(weight > 0):
            continue
        maps[:, slot] += sersic_map(grid, p["member_r_eff"][rows, j], p["member_n"][rows, j],
                                    p["member_q"][rows, j], p["member_phi"][rows, j],
                                    p["member_x"][rows, j], p["member_y"][rows, j], weight)


def _render_group(grid: Grid, p, rows, maps):
    _render_elliptical(grid, p, rows, maps)
    render_members(grid, p, rows, maps, 1)


def _render_cosmos(grid: Grid, p, rows, maps):
    from lensbench.datasets.cosmos import lensed_source_image

    m = len(rows)
    x = grid.x_fine.expand(m, -1, -1)
    y = grid.y_fine.expand(m, -1, -1)
    maps[:, 0] = lensed_source_image(list(p["_stamps"][rows]), p["_stamp_scale"][rows], x, y,
                                     p["lens_x"][rows], p["lens_y"][rows],
                                     subpixel_area=grid.subpixel_area,
                                     smooth_to=grid.subpixel_side)


RENDERERS: dict[str, Callable] = {
    "elliptical": _render_elliptical, "spiral": _render_spiral, "ring": _render_ring,
    "merger": _render_merger, "group": _render_group, "edge-on": _render_disk_galaxy,
    "cosmos": _render_cosmos, "artefact": _render_elliptical,
}


def render_negatives(grid: Grid, p, index, maps: torch.Tensor) -> None:
    """Fill the supersampled unit-flux maps (n, C, Hf, Wf) of non-lens systems ``index``."""
    classes = p["negative_class"][index]
    for c in np.unique(classes):
        select = np.flatnonzero(classes == c)
        part = torch.zeros((len(select), 3, *maps.shape[2:]), dtype=maps.dtype,
                           device=maps.device)
        RENDERERS[NEGATIVE_CLASSES[c]](grid, p, index[select], part)
        maps[torch.as_tensor(select, device=maps.device), :3] = part


def render_psf_artefacts(grid: Grid, slot: int, p, index, maps: torch.Tensor) -> None:
    """Saturated stars (a point source + four diffraction spikes, unit total flux) and satellite
    trails (unit flux per arcsec of length) into ``maps[:, slot]``."""
    kinds = p["artefact_kind"][index]
    c, x, y = grid.column, grid.x_fine, grid.y_fine
    # Point-like cores of sigma = 1 subpixel, far below any PSF: narrower Gaussians, sampled at
    # subpixel centres, would not sum to their flux (2 exp(-2 pi^2 sigma^2) ripple, 6% at 0.42).
    sub = grid.subpixel_side
    sigma = sub
    half_light = sub * math.sqrt(2 * math.log(2))
    star = np.flatnonzero(kinds == SATURATED_STAR)
    if len(star):
        rows = index[star]
        sx, sy = c(p["artefact_x"][rows]), c(p["artefact_y"][rows])
        fraction = p["spike_fraction"][rows]
        image = lensing.gaussian_profile(x, y, c(1 - fraction), half_light, sx, sy)
        length = p["spike_length"][rows]
        density = fraction / 2 / (2 * length)  # two lines (four spikes), each exp(-|t| / L)
        for turn in (0.0, 0.5 * math.pi):
            image += line_profile(x, y, c(density), c(p["artefact_angle"][rows] + turn),
                                  sigma, sx, sy, scale_length=c(length))
        maps[torch.as_tensor(star, device=maps.device), slot] = image * grid.subpixel_area
    trail = np.flatnonzero(kinds == SATELLITE_TRAIL)
    if len(trail):
        rows = index[trail]
        image = line_profile(x, y, 1.0, c(p["artefact_angle"][rows]), sigma,
                             c(p["artefact_x"][rows]), c(p["artefact_y"][rows]))
        maps[torch.as_tensor(trail, device=maps.device), slot] = image * grid.subpixel_area


def add_cosmic_rays(grid: Grid, survey_bands, p, index, expected: torch.Tensor) -> None:
    """Cosmic-ray tracks into the expected electrons (n, B, H, W) of one band each, after the
    PSF: segments of 3-20 px with a Gaussian cross-section of sigma 0.3-0.9 px and a peak of
    10-100 background sigmas."""
    rows = np.flatnonzero(p["artefact_kind"][index] == COSMIC_RAY)
    if not len(rows):
        return
    g = index[rows]
    c = grid.column
    axis = torch.arange(grid.size, dtype=grid.dtype, device=grid.device) + 0.5 - grid.size / 2
    py, px = torch.meshgrid(axis, axis, indexing="ij")  # pixel units
    sigma = c(p["cosmic_sigma_px"][g])
    scale = grid.pixel_scale
    track = line_profile(px, py, 1.0, c(p["artefact_angle"][g]), sigma,
                         c(p["artefact_x"][g] / scale), c(p["artefact_y"][g] / scale),
                         half_length=c(0.5 * p["cosmic_length_px"][g]))
    track = track * (math.sqrt(2 * math.pi) * sigma)  # unit peak
    bands = p["artefact_band"][g]
    background = np.array([b.background_sigma for b in survey_bands])[bands]
    peak = c(p["cosmic_peak"][g] * background)
    expected[torch.as_tensor(rows), torch.as_tensor(bands)] += track * peak


def saturation_levels(saturation_level: float, bands, survey: str) -> list[float]:
    """Per band, the sky-subtracted value (nanomaggies) at which a saturated pixel is clipped:
    (full well x exposures - sky electrons) / electrons per nanomaggy. A full well below the
    sky of one exposure is a configuration error."""
    levels = [(saturation_level * b.n_exposures - b.sky_counts)
              / b.electrons_per_nanomaggy for b in bands]
    low = [b.name for b, level in zip(bands, levels, strict=True) if level <= 0]
    if low:
        raise ValueError(f"SimConfig.saturation_level={saturation_level:g} electrons "
                         f"is below the sky of one exposure in band(s) {low} of survey "
                         f"{survey!r}")
    return levels


def apply_detector_effects(grid: Grid, levels: list[float], p, index, images: torch.Tensor) -> None:
    """After noise, on images in nanomaggies (n, B, H, W): saturated stars clipped at the full
    well (``saturation_level`` electrons per pixel per exposure, all exposures alike, less the
    sky those electrons include: the images are sky subtracted; see ``saturation_levels``),
    masked rectangles set to MASK_VALUE in one band."""
    kinds = p["artefact_kind"][index]
    star = np.flatnonzero(kinds == SATURATED_STAR)
    if len(star):
        level = torch.tensor(levels,
                             dtype=images.dtype, device=images.device)[None, :, None, None]
        rows = torch.as_tensor(star, device=images.device)
        images[rows] = torch.minimum(images[rows], level)
    for row in np.flatnonzero(kinds == MASK):
        g = index[row]
        width, height = p["mask_width"][g]
        col = (p["artefact_x"][g] / grid.pixel_scale + grid.size / 2)
        line = (p["artefact_y"][g] / grid.pixel_scale + grid.size / 2)
        c0, c1 = int(max(0, col - width / 2)), int(min(grid.size, col + width / 2) + 1)
        r0, r1 = int(max(0, line - height / 2)), int(min(grid.size, line + height / 2) + 1)
        images[row, int(p["artefact_band"][g]), r0:r1, c0:c1] = MASK_VALUE


# ------------------------------------------------------------------------------------ captions
def class_names(truth: dict) -> list[str]:
    """A caption per row: "lens" or the negative class ("spiral", ...), with the artefact kind
    in brackets where there is one ("artefact (cosmic-ray)", "lens (mask)"). Splits without a
    ``negative_class`` column (simulator version 1) give "non-lens" for label 0."""
    labels = np.asarray(truth["label"])
    classes = np.asarray(truth.get("negative_class", np.full(len(labels), -1)))
    kinds = np.asarray(truth.get("artefact_kind", np.full(len(labels), -1)))
    names = []
    for label, c, kind in zip(labels, classes, kinds, strict=True):
        name = "lens" if label == 1 else (NEGATIVE_CLASSES[c] if c >= 0 else "non-lens")
        names.append(f"{name} ({ARTEFACT_KINDS[kind]})" if kind >= 0 else name)
    return names


def class_groups(truth: dict, per_class: int) -> list[tuple[str, np.ndarray]]:
    """The first ``per_class`` rows of each caption of ``class_names``: [(name, rows), ...],
    lenses first, then the classes in NEGATIVE_CLASSES order, artefact kinds in ARTEFACT_KINDS
    order (what ``bench data show`` draws, one group per row)."""
    labels = np.asarray(truth["label"])
    n = len(labels)
    classes = np.asarray(truth.get("negative_class", np.full(n, -1)))
    kinds = np.asarray(truth.get("artefact_kind", np.full(n, -1)))
    names = class_names(truth)
    order: dict[str, tuple] = {}
    rows: dict[str, list[int]] = {}
    for r, name in enumerate(names):
        key = (0 if labels[r] == 1 else 1, int(classes[r]) if labels[r] != 1 else -1,
               int(kinds[r]))
        order.setdefault(name, key)
        if len(rows.setdefault(name, [])) < per_class:
            rows[name].append(r)
    return [(name, np.asarray(rows[name])) for name in sorted(rows, key=order.__getitem__)]
