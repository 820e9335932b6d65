"""Drawing the simulated population: lens and source parameters (numpy), before any rendering.

Lens velocity dispersions follow the SDSS velocity function (Choi, Park & Vogeley 2007) weighted
by the lensing cross-section (sigma^4) for the "natural" theta_E distribution;
theta_E = 4 pi (sigma/c)^2 D_ls/D_s in flat LCDM (H0 = 70, Om = 0.3). Lens light follows the
Faber-Jackson relation. Source and clump magnitudes, sizes and positions are drawn from the
ranges of `SimConfig`. Real COSMOS sources and hard negatives (``negatives``) are drawn here
too, from the same random stream.

A system's parameters are a dict of 1-D (or (n, k)) numpy arrays, one row per system; keys with
a leading underscore are working values for the renderer (``render``), not truth.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from lensbench.datasets import negatives
from lensbench.datasets.config import (
    CLUMP_COLOURS,
    DISK_COLOURS,
    FIELD_COUNT_SLOPE,
    FIELD_MAX_GALAXIES,
    FIELD_R_EFF_AT_24,
    FIELD_RED_FRACTION,
    FIELD_SIZE_SCATTER,
    FIELD_SIZE_SLOPE,
    LENS_COLOURS,
    SOURCE_COLOURS,
    SimConfig,
)
from scipy import special

SPEED_OF_LIGHT_KM_S = 299_792.458
ARCSEC_PER_RAD = 180.0 / math.pi * 3600.0
# Choi, Park & Vogeley (2007) velocity dispersion function of early-type galaxies.
VDF_SIGMA_STAR, VDF_ALPHA, VDF_BETA = 161.0, 2.32, 2.67
# Faber-Jackson in the i band: M_i = FJ_M200 - 10 log10(sigma / 200 km/s) (L ~ sigma^4).
FJ_M200 = -22.2
# Size-luminosity relation of early types (Shen et al. 2003, MNRAS 343, 978, eq. 14 and
# table 1, SDSS r band, h = 0.7) and its dispersion at the bright end (their sigma_lnR ~ 0.3).
SHEN_A, SHEN_B, SHEN_SIGMA_LN_R = 0.65, -5.06, 0.3
# Rest-frame r - i of an elliptical (Fukugita, Shimasaku & Ichikawa 1995): the relation is in r,
# the Faber-Jackson magnitude in i.
ELLIPTICAL_REST_R_MINUS_I = 0.4
LENS_R_EFF_LIMITS = (0.1, 8.0)  # arcsec: keeps the 3-sigma tails on a 64-128 px stamp's scale
QUAD_CANDIDATES = 32


@functools.cache
def _cosmology():
    """Flat LCDM, H0 = 70, Om = 0.3 (astropy). Built once: constructing it takes ~10 ms, three
    times per batch of systems, which was ~7% of the simulator's time (measured)."""
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=70.0, Om0=0.3)


def comoving_distance_mpc(z: np.ndarray) -> np.ndarray:
    """Line-of-sight comoving distance (Mpc) in flat LCDM, H0 = 70, Om = 0.3 (astropy)."""
    return _cosmology().comoving_distance(z).value


def distance_modulus(z: np.ndarray) -> np.ndarray:
    return _cosmology().distmod(z).value


def einstein_radius(sigma_v: np.ndarray, z_lens: np.ndarray, z_source: np.ndarray) -> np.ndarray:
    """SIS Einstein radius (arcsec) of velocity dispersion sigma_v (km/s):
    theta_E = 4 pi (sigma/c)^2 D_ls/D_s.
    In a flat universe D_ls/D_s = 1 - D_C(z_l)/D_C(z_s)."""
    ratio = 1.0 - comoving_distance_mpc(z_lens) / comoving_distance_mpc(z_source)
    return 4.0 * math.pi * (np.asarray(sigma_v) / SPEED_OF_LIGHT_KM_S) ** 2 * ratio * ARCSEC_PER_RAD


def velocity_dispersion_for(theta_e, z_lens, z_source):
    """Inverse of `einstein_radius`: the sigma_v (km/s) that gives theta_e."""
    ratio = 1.0 - comoving_distance_mpc(z_lens) / comoving_distance_mpc(z_source)
    radians = np.asarray(theta_e) / ARCSEC_PER_RAD
    return SPEED_OF_LIGHT_KM_S * np.sqrt(radians / (4 * math.pi * ratio))


def early_type_r_eff(absolute_i: np.ndarray, z: np.ndarray, deviate: np.ndarray) -> np.ndarray:
    """Half-light radius (arcsec) of an early-type galaxy of rest-frame absolute i magnitude
    ``absolute_i`` at redshift ``z``: the SDSS size-luminosity relation of early types (Shen et
    al. 2003, eq. 14: log10(R / kpc) = -0.4 a M_r + b, a = 0.65, b = -5.06 for h = 0.7), with
    a log-normal scatter of ``deviate`` (standard normal) times SHEN_SIGMA_LN_R, seen at ``z``
    (angular diameter distance, flat LCDM). Without it the lens sizes were uniform in
    0.5-2" whatever the lens's luminosity and redshift, so a bright galaxy at z ~ 0.15 (1
    kpc = 0.38") was as small on the sky as one at z ~ 0.8."""
    absolute_r = np.asarray(absolute_i) + ELLIPTICAL_REST_R_MINUS_I
    log_kpc = -0.4 * SHEN_A * absolute_r + SHEN_B
    kpc = 10**log_kpc * np.exp(SHEN_SIGMA_LN_R * np.asarray(deviate))
    kpc_per_arcsec = _cosmology().kpc_proper_per_arcmin(np.asarray(z)).value / 60.0
    return np.clip(kpc / kpc_per_arcsec, *LENS_R_EFF_LIMITS)


def _uniform(rng, bounds, n):
    return rng.uniform(bounds[0], bounds[1], n)


# Counts the images of K candidate source positions per system: (p, dx (n, K), dy (n, K)) ->
# (n, K) integers. The renderer provides it (``Renderer.count_images``): it owns the torch
# dtype, device and worker threads.
ImageCounter = Callable[[dict, np.ndarray, np.ndarray], np.ndarray]


class Population:
    """Draws the parameters of the systems of one `SimConfig` from a numpy random stream.

    This is the whole interface the hard-negative samplers (``negatives``) read: ``config``,
    ``band_names``, ``reference_index``, ``half_width`` (arcsec, the stamp's), ``size`` (pixels)
    and ``draw_cosmos``."""

    def __init__(self, config: SimConfig, band_names: tuple[str, ...], pixel_scale: float):
        self.config = config
        self.band_names = tuple(band_names)
        self.reference_index = self.band_names.index(config.reference)
        self.size = config.size
        self.half_width = 0.5 * self.size * pixel_scale
        # Non-lenses other than the lens population without its source (hard negatives).
        self.hard_negatives = config.negative_fractions[0] != 1.0
        self._cosmos = None  # CosmosSources, loaded on first use
        self._clean_stamps: dict[int, np.ndarray] = {}
        # Field galaxies come from a stream of their own (``Simulator.simulate`` sets it), so
        # that adding them changes nothing else that is drawn.
        self.field_rng: np.random.Generator | None = None
        # The same for the level of correlated noise of each cutout.
        self.noise_level_rng: np.random.Generator | None = None
        # The same for the isophote structure of the central early type.
        self.isophote_rng: np.random.Generator | None = None
        # The same for the lenses' group companions.
        self.companion_rng: np.random.Generator | None = None

    def draw_cosmos(self, rng: np.random.Generator, n: int):
        """``n`` COSMOS galaxies (with replacement), each rotated by k x 90 degrees and flipped at
        random: (indices into ``CosmosSources().galaxies`` (n,), stamps (list of (h, w) float64),
        pixel scales (n,) arcsec, colours (n, B): catalogue magnitude in each band minus that in
        the reference band). The catalogue is loaded on first use (needs LENSBENCH_DATA_DIR)."""
        if n == 0:  # nothing drawn: the random stream is the same either way
            return (np.zeros(0, dtype=np.int64), [], np.zeros(0),
                    np.zeros((0, len(self.band_names))))
        from lensbench.datasets.cosmos import CosmosSources, clean_stamp

        if self._cosmos is None:
            self._cosmos = CosmosSources()
        galaxies = self._cosmos.galaxies
        factor = self._cosmos.noise_correlation_factor
        index = rng.integers(0, len(galaxies), n)
        turns = rng.integers(0, 4, n)
        flips = rng.random(n) < 0.5
        stamps, scales, colours = [], np.empty(n), np.empty((n, len(self.band_names)))
        ref = self.config.reference
        for k, i in enumerate(index):
            galaxy = galaxies[int(i)]
            if int(i) not in self._clean_stamps:
                self._clean_stamps[int(i)] = clean_stamp(galaxy.image, galaxy.noise_variance,
                                                         factor)
            image = np.rot90(self._clean_stamps[int(i)], int(turns[k]))
            stamps.append(np.ascontiguousarray(image[:, ::-1] if flips[k] else image))
            scales[k] = galaxy.pixel_scale
            colours[k] = [galaxy.mags[b] - galaxy.mags[ref] for b in self.band_names]
        return index, stamps, scales, colours

    def _draw_real_sources(self, rng: np.random.Generator, p: dict) -> None:
        """Replace the Sersic source of a share of the systems (all for "cosmos",
        ``cosmos_fraction`` for "mix") by a COSMOS galaxy: no clumps, the catalogue's colours
        about the reference-band magnitude already drawn."""
        cfg = self.config
        n = len(p["lens_x"])
        real = (np.ones(n, dtype=bool) if cfg.source_model == "cosmos"
                else rng.random(n) < cfg.cosmos_fraction)
        rows = np.flatnonzero(real)
        index, stamps, scales, colours = self.draw_cosmos(rng, len(rows))
        p["source_is_real"] = real
        p["cosmos_index"] = np.full(n, -1, dtype=np.int64)
        p["cosmos_index"][rows] = index
        p["_stamps"] = np.empty(n, dtype=object)
        for k, row in enumerate(rows):
            p["_stamps"][row] = stamps[k]
        p["_stamp_scale"] = np.full(n, np.nan)
        p["_stamp_scale"][rows] = scales
        p["n_clumps"] = np.where(real, 0, p["n_clumps"])
        p["clump_fraction"] = np.where(real[:, None], 0.0, p["clump_fraction"])
        source_ref = p["_source_ref_mag"]
        for b, name in enumerate(self.band_names):
            f_main, f_clump = p["_source_flux_parts"][name]
            f_real = 10 ** (-0.4 * colours[:, b])
            f_main, f_clump = f_main.copy(), f_clump.copy()
            f_main[rows], f_clump[rows] = f_real, 0.0
            p["_source_flux_parts"][name] = (f_main, f_clump)
            p[f"source_mag_{name}"] = source_ref - 2.5 * np.log10(f_main + f_clump)

    def _draw_lens_mass(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        cfg = self.config
        out = {key: np.empty(n) for key in ("sigma_v", "z_lens", "z_source", "theta_e")}
        filled = 0
        for _ in range(1000):
            if filled == n:
                break
            m = 4 * (n - filled) + 16
            z_lens = _uniform(rng, cfg.z_lens_range, m)
            z_source = rng.uniform(z_lens + 0.2, np.maximum(cfg.z_source_max, z_lens + 0.3))
            if cfg.theta_e_distribution == "natural":
                # VDF x sigma^4: (sigma/sigma*)^beta is Gamma((alpha + 4)/beta)-distributed.
                x = rng.gamma((VDF_ALPHA + 4.0) / VDF_BETA, 1.0, m)
                sigma_v = VDF_SIGMA_STAR * x ** (1.0 / VDF_BETA)
                theta_e = einstein_radius(sigma_v, z_lens, z_source)
            else:
                theta_e = _uniform(rng, cfg.theta_e_range, m)
                sigma_v = velocity_dispersion_for(theta_e, z_lens, z_source)
            keep = (theta_e >= cfg.theta_e_range[0]) & (theta_e <= cfg.theta_e_range[1])
            take = np.flatnonzero(keep)[: n - filled]
            for key, value in (("sigma_v", sigma_v), ("z_lens", z_lens),
                               ("z_source", z_source), ("theta_e", theta_e)):
                out[key][filled: filled + len(take)] = value[take]
            filled += len(take)
        if filled < n:
            raise ValueError(f"SimConfig.theta_e_range {cfg.theta_e_range} is too far from the "
                             "natural theta_E distribution; widen it or use 'flat'")
        return out

    def draw_systems(self, rng: np.random.Generator, n: int, lensed: bool) -> dict:
        """Parameters of n systems (lens galaxy always; a background source when ``lensed``)."""
        cfg = self.config
        n_bands = len(self.band_names)
        p = self._draw_lens_mass(rng, n)
        p["q"] = _uniform(rng, cfg.q_range, n)
        p["phi"] = rng.uniform(0, math.pi, n)
        p["gamma1"], p["gamma2"] = rng.normal(0, cfg.shear_sigma, (2, n))
        p["lens_x"], p["lens_y"] = rng.normal(0, cfg.lens_offset_sigma, (2, n))
        p["lens_q_light"] = np.clip(p["q"] + rng.normal(0, 0.05, n), 0.3, 1.0)
        p["lens_phi_light"] = p["phi"] + rng.normal(0, 0.1, n)
        p["lens_sersic_n"] = _uniform(rng, cfg.lens_sersic_n_range, n)
        p["lens_r_eff"] = _uniform(rng, cfg.lens_r_eff_range, n)
        absolute_i = (FJ_M200 - 10 * np.log10(p["sigma_v"] / 200.0)
                      + rng.normal(0, cfg.lens_mag_scatter, n))
        if cfg.lens_size == "size-luminosity":
            # The uniform draw above, through the normal quantile, is the relation's scatter:
            # the random stream is the same for every lens_size.
            low, high = cfg.lens_r_eff_range
            quantile = (p["lens_r_eff"] - low) / (high - low) if high > low else np.full(n, 0.5)
            p["lens_r_eff"] = early_type_r_eff(absolute_i, p["z_lens"], special.ndtri(quantile))
        # +2.5 log10(1+z) (0.28 mag at z = 0.3) stands in for an early type's K-correction, which
        # is positive in red bands: its red spectrum shifted through the band outweighs the AB
        # bandwidth term, -2.5 log10(1+z) (Hogg et al. 2002). Not a template K-correction.
        lens_mag_i = absolute_i + distance_modulus(p["z_lens"]) + 2.5 * np.log10(1 + p["z_lens"])
        scatter = rng.normal(0, cfg.colour_scatter, (n_bands, n))
        for b, name in enumerate(self.band_names):
            p[f"lens_mag_{name}"] = lens_mag_i + LENS_COLOURS[name] + scatter[b]
        # Source and clumps: drawn for every system so the random stream does not depend on labels.
        ref = self.config.reference
        source_ref = _uniform(rng, cfg.source_mag_range, n)
        scatter = rng.normal(0, cfg.colour_scatter, (n_bands, n))
        clump_scatter = rng.normal(0, cfg.colour_scatter, (n_bands, n))
        radius = cfg.source_radius * p["theta_e"] * np.sqrt(rng.random(n))
        angle = rng.uniform(0, 2 * math.pi, n)
        p["source_dx"], p["source_dy"] = radius * np.cos(angle), radius * np.sin(angle)
        p["source_q"] = rng.uniform(0.3, 1.0, n)
        p["source_phi"] = rng.uniform(0, math.pi, n)
        p["source_sersic_n"] = _uniform(rng, cfg.source_sersic_n_range, n)
        p["source_r_eff"] = _uniform(rng, cfg.source_r_eff_range, n)
        n_clumps = np.minimum(rng.poisson(cfg.mean_clumps, n), cfg.max_clumps)
        slots = np.arange(cfg.max_clumps)[None, :] < n_clumps[:, None]
        p["n_clumps"] = n_clumps
        p["clump_fraction"] = _uniform(rng, cfg.clump_flux_fraction_range,
                                       (n, cfg.max_clumps)) * slots
        p["clump_r_eff"] = _uniform(rng, cfg.clump_r_eff_range, (n, cfg.max_clumps))
        p["clump_dx"], p["clump_dy"] = rng.normal(0, 1, (2, n, cfg.max_clumps)) * p[
            "source_r_eff"][:, None]
        clump_total = p["clump_fraction"].sum(axis=1)
        total_flux_share = {}
        for b, name in enumerate(self.band_names):
            main = source_ref + SOURCE_COLOURS[name] - SOURCE_COLOURS[ref] + scatter[b]
            clump = main + CLUMP_COLOURS[name] - CLUMP_COLOURS[ref] + clump_scatter[b]
            # Fluxes in units of the reference-band source flux, then as magnitudes.
            f_main = (1 - clump_total) * 10 ** (-0.4 * (main - source_ref))
            f_clump = clump_total * 10 ** (-0.4 * (clump - source_ref))
            total_flux_share[name] = (f_main, f_clump)
            p[f"source_mag_{name}"] = source_ref - 2.5 * np.log10(f_main + f_clump)
        p["_source_flux_parts"] = total_flux_share
        p["_source_ref_mag"] = source_ref
        p["lensed"] = np.full(n, lensed)
        if lensed and cfg.source_model != "sersic":
            self._draw_real_sources(rng, p)
        if not lensed:
            for key in ("theta_e", "sigma_v", "z_source", "q", "phi", "gamma1", "gamma2"):
                p[key] = np.full(n, np.nan) if key != "q" else p[key]
        if cfg.field_density > 0:
            p.update(self.draw_field(n))
        if np.any(np.asarray(cfg.correlated_noise) > 0):
            if self.noise_level_rng is None:
                raise RuntimeError("Population.noise_level_rng must be set before drawing "
                                   "correlated noise levels")
            if isinstance(cfg.correlated_noise, tuple):  # (n, B): one fraction of each maximum
                p["correlated_noise"] = (self.noise_level_rng.uniform(0, 1, n)[:, None]
                                         * np.asarray(cfg.correlated_noise))
            else:  # (n,): every band
                p["correlated_noise"] = self.noise_level_rng.uniform(0, cfg.correlated_noise, n)
        if cfg.lens_isophotes:
            p.update(self.draw_isophotes(n))
        if lensed and cfg.lens_companion_fraction > 0:
            p.update(self.draw_companions(p, n))
        return p

    def draw_companions(self, p: dict, n: int) -> dict:
        """Group companions of ``n`` lenses from ``companion_rng``: the share
        ``SimConfig.lens_companion_fraction`` of them gets members drawn as the group
        non-lenses' (``member_*``; ``companion_mag`` (n, B), their summed magnitude in each
        band, inf where a lens has none; ``n_companions``)."""
        if self.companion_rng is None:
            raise RuntimeError("Population.companion_rng must be set before drawing companions")
        rng = self.companion_rng
        select = rng.random(n) < self.config.lens_companion_fraction
        members = negatives.group_members(self, rng, n, p)
        members["member_weight"] = np.where(select[:, None], members["member_weight"], 0.0)
        members["companion_mag"] = np.where(select[:, None], members.pop("_members_mag"),
                                            np.inf)
        members["n_companions"] = np.where(select, members["n_members"] - 1, 0)
        del members["n_members"]
        return members

    def draw_isophotes(self, n: int) -> dict:
        """The central early type's isophote structure (``SimConfig.lens_isophote_*``) for
        ``n`` systems from ``isophote_rng``: twist (rad), axis-ratio change (centre minus
        outskirts) and a4/a."""
        if self.isophote_rng is None:
            raise RuntimeError("Population.isophote_rng must be set before drawing isophotes")
        cfg, rng = self.config, self.isophote_rng
        twist = np.radians(rng.uniform(-cfg.lens_isophote_twist, cfg.lens_isophote_twist, n))
        dq = rng.uniform(-cfg.lens_isophote_dq, cfg.lens_isophote_dq, n)
        a4 = _uniform(rng, cfg.lens_isophote_a4_range, n)
        return {"lens_isophote_twist": twist, "lens_isophote_dq": dq, "lens_a4": a4}

    def draw_field(self, n: int) -> dict:
        """Field galaxies of ``n`` stamps from ``field_rng`` (``SimConfig.field_density``):
        ``field_*`` arrays (n, FIELD_MAX_GALAXIES), absent galaxies with magnitude inf;
        ``_field_slot_mags`` (n, B, 2): the magnitudes of the early-type and the late-type
        galaxies of each stamp taken together, the two components they are painted in (one
        colour each per stamp, with ``colour_scatter``); ``_field_weight`` (n, K): each
        galaxy's share of its component's reference-band flux."""
        cfg, rng = self.config, self.field_rng
        if rng is None:
            raise RuntimeError("Population.field_rng must be set before drawing field galaxies")
        k = FIELD_MAX_GALAXIES
        area = (2 * self.half_width / 60.0) ** 2  # arcmin^2
        count = np.minimum(rng.poisson(cfg.field_density * area, n), k)
        present = np.arange(k)[None] < count[:, None]
        # Inverse CDF of N(m) ~ 10^(slope m) between the limits.
        low, high = cfg.field_mag_range
        floor = 10 ** (FIELD_COUNT_SLOPE * (low - high))
        mag = high + np.log10(floor + rng.random((n, k)) * (1 - floor)) / FIELD_COUNT_SLOPE
        mag = np.where(present, mag, np.inf)
        r_eff = FIELD_R_EFF_AT_24 * 10 ** (-FIELD_SIZE_SLOPE * (np.where(present, mag, 24) - 24))
        r_eff = np.clip(r_eff * np.exp(rng.normal(0, FIELD_SIZE_SCATTER, (n, k))), 0.05, 3.0)
        out = {"field_x": rng.uniform(-self.half_width, self.half_width, (n, k)),
               "field_y": rng.uniform(-self.half_width, self.half_width, (n, k)),
               "field_r_eff": r_eff, "field_sersic_n": rng.uniform(0.5, 4.0, (n, k)),
               "field_q": rng.uniform(0.3, 1.0, (n, k)),
               "field_phi": rng.uniform(0, math.pi, (n, k)),
               "field_mag": mag, "field_red": rng.random((n, k)) < FIELD_RED_FRACTION}
        ref = cfg.reference
        flux = 10 ** (-0.4 * mag)  # 0 for absent galaxies
        slot_mags = np.full((n, len(self.band_names), 2), np.inf)
        weight = np.zeros((n, k))
        for slot, (red, table) in enumerate(((True, LENS_COLOURS), (False, DISK_COLOURS))):
            members = out["field_red"] == red
            member_flux = np.where(members, flux, 0.0)
            total = member_flux.sum(axis=1, keepdims=True)
            np.divide(member_flux, total, out=weight, where=members & (total > 0))
            scatter = rng.normal(0, cfg.colour_scatter, (n, len(self.band_names)))
            scatter[:, self.reference_index] = 0.0
            with np.errstate(divide="ignore"):
                ref_mag = -2.5 * np.log10(total[:, 0])
            for b, name in enumerate(self.band_names):
                slot_mags[:, b, slot] = ref_mag + table[name] - table[ref] + scatter[:, b]
        out["_field_slot_mags"] = slot_mags
        out["_field_weight"] = weight  # each galaxy's share of its component's flux
        return out

    def draw_non_lenses(self, rng: np.random.Generator, n: int) -> dict:
        """Parameters of n non-lens systems: the lens population without a source, or the hard
        negatives of ``SimConfig.negatives``."""
        p = self.draw_systems(rng, n, lensed=False)
        p["n_images"] = np.zeros(n, dtype=np.int64)
        for key in ("source_x", "source_y"):
            p[key] = np.full(n, np.nan)
        if self.hard_negatives:
            negatives.sample_negatives(self, rng, p)
        return p

    def draw_lenses(self, rng: np.random.Generator, n: int, count_images: ImageCounter) -> dict:
        """Parameters of n lensed systems: sources placed (``place_sources``) and artefacts on
        the lens drawn (``SimConfig.lens_artefact_fraction``)."""
        p = self.draw_systems(rng, n, lensed=True)
        self.place_sources(rng, p, count_images)
        if self.config.lens_artefact_fraction > 0:
            present = rng.random(len(p["lens_x"])) < self.config.lens_artefact_fraction
            negatives.sample_artefacts(self, rng, p, present)
        return p

    def place_sources(self, rng: np.random.Generator, p: dict, count_images: ImageCounter
                      ) -> None:
        """Count images of the drawn source positions; with ``quad_fraction`` set, re-draw
        positions (more of them close to the lens centre) until each system is a quad or not as
        chosen. Adds ``source_x/y`` and ``n_images`` to ``p``."""
        n = len(p["theta_e"])
        quad_fraction = self.config.quad_fraction
        dx, dy = p["source_dx"][:, None], p["source_dy"][:, None]
        if quad_fraction is not None:
            want_quad = rng.random(n) < quad_fraction
            k = QUAD_CANDIDATES - 1
            shrink = np.where(np.arange(k) % 2 == 0, 1.0, 0.3)[None, :]
            radius = self.config.source_radius * p["theta_e"][:, None] * shrink * np.sqrt(
                rng.random((n, k)))
            angle = rng.uniform(0, 2 * math.pi, (n, k))
            dx = np.concatenate([dx, radius * np.cos(angle)], axis=1)
            dy = np.concatenate([dy, radius * np.sin(angle)], axis=1)
        counts = count_images(p, dx, dy)
        choice = np.zeros(n, dtype=np.int64)
        if quad_fraction is not None:
            match = (counts >= 4) == want_quad[:, None]
            choice = np.where(match.any(axis=1), match.argmax(axis=1), 0)
        rows = np.arange(n)
        p["source_x"] = p["lens_x"] + dx[rows, choice]
        p["source_y"] = p["lens_y"] + dy[rows, choice]
        p["n_images"] = counts[rows, choice]


def subset(p: dict, take: np.ndarray) -> dict:
    """The rows ``take`` of the systems ``p``."""
    out = {}
    for key, value in p.items():
        if key == "_source_flux_parts":
            out[key] = {band: (a[take], b[take]) for band, (a, b) in value.items()}
        else:
            out[key] = value[take]
    return out


def concatenate(parts: list[dict]) -> dict:
    """The systems of every dict in ``parts``, in order (the inverse of `subset`)."""
    first = parts[0]
    p = {}
    for key in first:
        if key == "_source_flux_parts":
            p[key] = {band: tuple(np.concatenate([part[key][band][i] for part in parts])
                                  for i in range(2)) for band in first[key]}
        else:
            p[key] = np.concatenate([part[key] for part in parts])
    return p
