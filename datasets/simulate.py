"""The batched survey simulator: lens light, a lensed star-forming source, PSF and noise; truth.

`Simulator` composes the two halves: ``population`` draws the systems' parameters (numpy, one
random stream), ``render`` turns them into images (torch, batched) with the truth that needs the
noiseless images (magnification, arc S/N). `make_split` writes a split of it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from lensbench.datasets.config import NEGATIVE_CLASSES, SimConfig
from lensbench.datasets.negatives import EARLY_TYPE_CLASSES
from lensbench.datasets.population import Population, concatenate, subset
from lensbench.datasets.render import Renderer
from lensbench.datasets.surveys import get_survey

# Bump when a change to this module changes the images or truth of a given config and seed.
# (Real sources and hard negatives did not: at their defaults the output is that of version 1.)
SIMULATOR_VERSION = 1
CLEAN_MAX_ROUNDS = 50
TRUTH_DOC = {
    "label": "1 if a lensed source is present (Metcalf) or passes the cuts (clean), else 0",
    "theta_e": "Einstein radius, arcsec (NaN for non-lenses)",
    "q, phi": "SIE axis ratio and major-axis angle (rad, from +x counter-clockwise)",
    "e1, e2": "SIE ellipticity (1-q)/(1+q) (cos 2phi, sin 2phi)",
    "gamma1, gamma2": "external shear",
    "lens_x, lens_y, source_x, source_y": "arcsec from the stamp centre (source: source plane)",
    "lens_mag_<band>, source_mag_<band>": "AB magnitudes (source: unlensed, total incl. clumps)",
    "magnification": "lensed / intrinsic flux of the source in the stamp",
    "n_images": "images of the source centre (triangle mapping)",
    "arc_snr_<band>, arc_snr": "S/N of the lensed source over its pixels above 1 sigma, per band "
                               "and in the best band",
    # The five columns below exist only when the config uses real sources, hard negatives or
    # artefacts (``Simulator.extended``); a split without them holds Sersic sources and
    # elliptical non-lenses only, as simulator version 1 made them.
    "source_is_real": "1 if the source is a real COSMOS galaxy (source_model cosmos/mix), else 0",
    "cosmos_index": "index into CosmosSources().galaxies of the real source (lenses) or of the "
                    "galaxy (cosmos negatives); -1 otherwise",
    "negative_class": "index into config.NEGATIVE_CLASSES for non-lenses; -1 for lenses",
    "artefact_kind": "index into config.ARTEFACT_KINDS; -1 for none",
    "feature_radius": "ring radius (ring) or separation (merger) of a negative, arcsec; else NaN",
    "lens_* of negatives": "the main component (disk of spirals and edge-ons, core of rings, first "
                           "galaxy of mergers, central of groups; NaN for cosmos); lens_mag_<band> "
                           "is the total of all parts but artefacts",
}


class Simulator:
    """Simulates batches of cutouts for one `SimConfig`. `simulate(n, seed, shard)` is pure:
    the same arguments give the same arrays."""

    def __init__(self, config: SimConfig, *, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        self.config = config
        survey = get_survey(config.survey).select(config.band_names)
        self.bands = survey.bands
        self.band_names = survey.band_names
        self.size = config.size
        self.pixel_scale = survey.pixel_scale
        # Extra truth columns (source_is_real, cosmos_index, negative_class, artefact_kind,
        # feature_radius) only when a feature added after version 1 is in use.
        self.extended = (config.negative_fractions[0] != 1.0 or config.source_model != "sersic"
                         or config.lens_artefact_fraction > 0)
        self.population = Population(config, self.band_names, self.pixel_scale)
        self.renderer = Renderer(config, survey, extended=self.extended, dtype=dtype,
                                 device=device)

    def simulate(self, n: int, seed: int, shard: int = 0):
        """``n`` cutouts (float32 (n, B, H, W), nanomaggies) and their truth (dict of 1-D
        arrays). Pure in (config, n, seed, shard)."""
        if n <= 0:
            raise ValueError(f"number of images must be positive, got {n}")
        sequence = np.random.SeedSequence([int(seed), int(shard)])
        # A third stream for field galaxies, a fourth for correlated-noise levels, a fifth for
        # isophote structure and a sixth for the lenses' companions; spawning them leaves the
        # streams before them as they were.
        (param_seed, noise_seed, field_seed, noise_level_seed, isophote_seed,
         companion_seed) = sequence.spawn(6)
        rng = np.random.default_rng(param_seed)
        self.population.field_rng = np.random.default_rng(field_seed)
        self.population.noise_level_rng = np.random.default_rng(noise_level_seed)
        self.population.isophote_rng = np.random.default_rng(isophote_seed)
        self.population.companion_rng = np.random.default_rng(companion_seed)
        generator = None
        if self.config.noise:
            # On the CPU whatever the rendering device: the noise is the same stream everywhere
            # (the renderer draws it there and moves it), so a GPU gives the CPU's images.
            generator = torch.Generator()
            generator.manual_seed(int(noise_seed.generate_state(1, dtype=np.uint64)[0] >> 1))
        labels = rng.random(n) < self.config.lens_fraction
        images = np.empty((n, len(self.bands), self.size, self.size), dtype=np.float32)
        parts = []  # (rows, params, magnification, arc_snr)
        lens_rows, other_rows = np.flatnonzero(labels), np.flatnonzero(~labels)
        if len(lens_rows):
            parts.append((lens_rows, *self._make_lenses(rng, generator, images, lens_rows)))
        if len(other_rows):
            p = self.population.draw_non_lenses(rng, len(other_rows))
            parts.append((other_rows, p,
                          *self.renderer.render(p, False, generator, images, other_rows)))
        truth = {}
        for rows, p, magnification, arc_snr in parts:
            for key, value in self._truth_columns(p, magnification, arc_snr).items():
                truth.setdefault(key, np.empty(n, dtype=value.dtype))[rows] = value
        truth["label"] = labels.astype(np.int8)
        return images, truth

    def _make_lenses(self, rng, generator, out: np.ndarray, rows: np.ndarray):
        """Lensed systems rendered into ``out[rows]``; in "clean" labelling, systems failing the
        magnification or arc-S/N cut are replaced by new draws."""
        cfg = self.config
        count_images = self.renderer.count_images
        if cfg.labelling == "metcalf":  # no cuts: render straight into place
            p = self.population.draw_lenses(rng, len(rows), count_images)
            return (p, *self.renderer.render(p, True, generator, out, rows))
        kept = []
        filled = 0
        for _ in range(CLEAN_MAX_ROUNDS):
            missing = len(rows) - filled
            draw = 2 * missing + 8
            p = self.population.draw_lenses(rng, draw, count_images)
            scratch = np.empty((draw, *out.shape[1:]), dtype=out.dtype)
            magnification, arc_snr = self.renderer.render(p, True, generator, scratch,
                                                          np.arange(draw))
            ok = ((magnification >= cfg.min_magnification)
                  & (arc_snr.max(axis=1) >= cfg.min_arc_snr))
            take = np.flatnonzero(ok)[:missing]
            out[rows[filled: filled + len(take)]] = scratch[take]
            kept.append((subset(p, take), magnification[take], arc_snr[take]))
            filled += len(take)
            if filled == len(rows):
                return (concatenate([part[0] for part in kept]),
                        *(np.concatenate([part[i] for part in kept]) for i in (1, 2)))
        raise ValueError(
            f"clean labelling: fewer than 1 in {CLEAN_MAX_ROUNDS * 2} lenses pass "
            f"min_magnification={cfg.min_magnification} and min_arc_snr={cfg.min_arc_snr} "
            f"for survey {cfg.survey!r}; brighten source_mag_range or relax the cuts")

    def _truth_columns(self, p, magnification, arc_snr) -> dict[str, np.ndarray]:
        theta_e = p["theta_e"]
        q = np.where(np.isnan(theta_e), np.nan, p["q"])
        phi = p["phi"]
        e = (1 - q) / (1 + q)
        columns = {
            "theta_e": theta_e, "sigma_v": p["sigma_v"], "z_lens": p["z_lens"],
            "z_source": p["z_source"], "q": q, "phi": np.where(np.isnan(q), np.nan, phi),
            "e1": e * np.cos(2 * phi), "e2": e * np.sin(2 * phi),
            "gamma1": p["gamma1"], "gamma2": p["gamma2"],
            "lens_x": p["lens_x"], "lens_y": p["lens_y"],
            "source_x": p["source_x"], "source_y": p["source_y"],
            "lens_r_eff": p["lens_r_eff"], "lens_sersic_n": p["lens_sersic_n"],
            "lens_q_light": p["lens_q_light"], "lens_phi_light": p["lens_phi_light"],
            "magnification": magnification,
            # NaN for non-lenses; np.max keeps the NaN where fmax would not matter either.
            "arc_snr": arc_snr.max(axis=1),
        }
        for b, name in enumerate(self.band_names):
            columns[f"arc_snr_{name}"] = arc_snr[:, b]
        lensed = bool(p["lensed"][0])
        n = len(theta_e)
        real = p.get("source_is_real", np.zeros(n, dtype=bool))
        for key in ("source_r_eff", "source_sersic_n", "source_q", "source_phi"):
            columns[key] = np.where(real, np.nan, p[key]) if lensed else np.full(n, np.nan)
        if self.extended:
            columns["feature_radius"] = p.get("feature_radius", np.full(n, np.nan))
        for name in self.band_names:
            columns[f"lens_mag_{name}"] = p[f"lens_mag_{name}"]
            source = p[f"source_mag_{name}"]
            columns[f"source_mag_{name}"] = source if lensed else np.full(len(theta_e), np.nan)
        if "field_mag" in p:  # the brightest field galaxy, reference band (NaN: none)
            brightest = p["field_mag"].min(axis=1)
            columns["field_mag_min"] = np.where(np.isfinite(brightest), brightest, np.nan)
        columns = {key: np.asarray(value, dtype=np.float32) for key, value in columns.items()}
        if "correlated_noise" in p:  # rms of the PSF-correlated noise, in sky sigma
            levels = np.asarray(p["correlated_noise"], dtype=np.float32)
            if levels.ndim == 1:
                columns["correlated_noise"] = levels
            else:  # one level per band
                for b, name in enumerate(self.band_names):
                    columns[f"correlated_noise_{name}"] = levels[:, b]
        if "lens_a4" in p:  # the central early type's isophotes; NaN where another class is
            centre = (np.ones(n, dtype=bool) if lensed else np.isin(
                p.get("negative_class", np.zeros(n, dtype=int)),
                [NEGATIVE_CLASSES.index(name) for name in EARLY_TYPE_CLASSES]))
            for key in ("lens_isophote_twist", "lens_isophote_dq", "lens_a4"):
                columns[key] = np.where(centre, p[key], np.nan).astype(np.float32)
        if "field_mag" in p:
            columns["field_count"] = np.isfinite(p["field_mag"]).sum(axis=1).astype(np.int8)
        if self.config.lens_companion_fraction > 0:  # galaxies of the centre's group around it
            group = NEGATIVE_CLASSES.index("group")
            companions = (p["n_companions"] if lensed else np.where(
                p.get("negative_class", np.zeros(n)) == group, p.get("n_members", 1) - 1, 0))
            columns["n_companions"] = np.asarray(companions, dtype=np.int8)
        columns["n_images"] = np.asarray(p["n_images"], dtype=np.int8)
        columns["n_clumps"] = np.asarray(p["n_clumps"] if lensed else 0 * p["n_clumps"],
                                         dtype=np.int8)
        if not self.extended:
            return columns
        columns["source_is_real"] = np.asarray(real, dtype=np.int8)
        columns["cosmos_index"] = np.asarray(p.get("cosmos_index", np.full(n, -1)),
                                             dtype=np.int32)
        negative = np.full(n, -1) if lensed else p.get("negative_class", np.zeros(n))
        columns["negative_class"] = np.asarray(negative, dtype=np.int8)
        columns["artefact_kind"] = np.asarray(p.get("artefact_kind", np.full(n, -1)),
                                              dtype=np.int8)
        return columns


def make_split(config: SimConfig, n: int, seed: int, out: str | Path, *,
               progress: Callable[[int], None] | None = None, created_by: str = "lensbench",
               device: str | torch.device = "cpu", map_shards: Callable | None = None) -> Path:
    """Simulate ``n`` cutouts in shards of ``config.shard_size`` and write them atomically to
    ``out`` (HDF5 shards + manifest). ``progress(k)`` is called with the images done per shard.
    ``device``: where the images are rendered (the same truth and noise; pixels equal to float32
    rounding, so a split's bytes, and its hash, are those of the CPU only on the CPU).
    ``map_shards(config, seed, [(shard, count), ...])``, if given, yields each shard's
    ``(images, truth)`` in shard order, simulated elsewhere (bench/distributed.py: on Dask
    workers); a shard is pure in (config, seed, shard), so the bytes are the same."""
    from lensbench.datasets.storage import SplitWriter

    simulator = Simulator(config, device=device)
    out = Path(out)
    shards = [(shard, min(config.shard_size, n - lo))
              for shard, lo in enumerate(range(0, n, config.shard_size))]
    made = (map_shards(config, seed, shards) if map_shards is not None else
            (simulator.simulate(count, seed, shard) for shard, count in shards))
    with SplitWriter(out, config=config.to_dict(), seed=seed, bands=list(simulator.band_names),
                     created_by=created_by) as writer:
        for (_, count), (images, truth) in zip(shards, made, strict=True):
            writer.add_shard(images, truth)
            if progress is not None:
                progress(count)
    return out
