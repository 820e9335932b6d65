"""Why does a finder trained on simulations miss real lenses? (issue 22.1)

For a lens-finding task with real known lenses, three pieces of evidence:

* :func:`probe_edits`: a fitted finder scores controlled edits of each real lens's cutout (lens
  light scaled down, arcs boosted, noise raised, re-centred, other flux normalisations). The
  edits use the lens's own lens light and arcs (``known_lenses.split_arcs``), degraded to the
  survey without noise (:func:`real_lens_parts`), so an edit changes one thing only. Run while
  the method is in memory (the kind's ``evaluate``); the report reads the saved scores.
* :func:`distribution_rows`: where each real lens falls in the training set's lens
  distributions (percentile among the simulated training lenses): Einstein radius, lens
  magnitude, lens-to-arc flux ratio and arc S/N from the truth (the real lenses' from the SLACS
  tables and their arc split), size, colour, sky noise at the stamp border and peak pixel after
  the finders' asinh stretch measured on the images of both in the same way.
* :func:`nearest_training_lenses`: the three simulated training lenses nearest to each real lens
  in the space of the photometric and shape features of ``baselines.features``
  (``catalogue_features`` + ``shape_features``: aperture magnitudes, radial gradients, colours,
  centroid, ellipticity, size, asymmetry), each standardised by the training lenses' median and
  MAD. That space is chosen because it is the same for every finder (a committee's embedding
  would differ per fitted model and is not saved) and its axes are the quantities asked about:
  brightness, size and colour; a real lens whose neighbours do not look like it sits where the
  training set has no lenses like it.
* :func:`lookalike_lines`: how many real lenses a finder would find if each fared as its
  simulated look-alikes (its nearest simulated test lenses in Einstein radius, lens magnitude,
  lens-to-arc flux and arc S/N), against how many it found: it separates "the real lenses are
  unlike the simulated ones" (far fewer found than expected) from "the finder finds too few
  lenses like these even in simulation" (few expected); and again with the look-alikes weighted
  as SLACS's spectroscopic selection would weight them (magnification bias), beside each
  finder's simulated lenses found by source offset (:func:`source_offset_lines`).

Everything is a measurement of the test objects; nothing here is used to choose or tune a
finder (the real lenses are a test set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from lensbench.bench.results import read_artifact
from lensbench.datasets.files import atomic_savefig
from lensbench.datasets.robust import mad_sigma
from lensbench.datasets.storage import Split, load_split

# Edits of a real cutout R = lens light L + arcs A + noise (L, A noise-free, degraded to the
# survey): name -> what it shows.
EDITS = {
    "as observed": "the cutout of the real split",
    "lens x0.5": "R - 0.5 L: lens light halved",
    "lens x0.25": "R - 0.75 L: lens light to a quarter",
    "lens removed": "R - L: lens light subtracted (arcs and noise left)",
    "arcs x2": "R + A: arcs twice as bright",
    "noise x2": "R + sqrt(3) sigma N(0, 1): noise standard deviation doubled",
    "shift 2 px": "R moved by 2 pixels in x and y (mirrored at the border)",
    "shift 4 px": "R moved by 4 pixels in x and y",
    "light x0.5": "R - 0.5 (L + A): the object half as bright, the noise kept",
    "cutout x0.5": "0.5 R: another flux normalisation (noise scaled too)",
    "cutout x2": "2 R: another flux normalisation",
    "no cosmic rays": "R - C: the cosmic rays of the HST image (astroscrappy) taken out",
}
PROBE_SEED = 22  # noise of the "noise x2" edit
ASINH_SOFTENING = 3.0  # in sky sigma, as the torch finders' Preprocessor
KIND_NAMES = {1: "SLACS lens", 2: "COSMOS field galaxy", 3: "COSMOS bright early type"}
KIND_PLURALS = {1: "SLACS lenses", 2: "COSMOS field galaxies", 3: "COSMOS bright early types"}
N_NEIGHBOURS = 3


# ----------------------------------------------------------------------------- real lenses
@dataclass
class RealLensParts:
    """The real lenses of a real split, in split order: their rows, names, and lens light,
    arcs, the cosmic rays of their HST image (part of the lens light) and survey noise sigma per
    pixel (n, B, H, W), degraded without noise; the cosmic rays' share of the HST flux and of
    the flux the arc split assigned to arcs (n,); the HST image's own noise after the
    degradation, as a standard deviation per survey pixel over the survey's sky sigma (n, B)."""

    rows: np.ndarray
    names: list[str]
    lens_light: np.ndarray
    arcs: np.ndarray
    sigma: np.ndarray
    cosmic_rays: np.ndarray
    cosmic_ray_share: np.ndarray
    cosmic_ray_arc_share: np.ndarray
    hst_noise: np.ndarray


def real_split_lenses(real: Split) -> list:
    """The SLACS lenses a real split was made from, loaded as it loaded them (cutout size,
    cosmic rays cleaned or not, sky)."""
    from lensbench.datasets.known_lenses import load_slacs

    config = real.manifest["config"]
    return load_slacs(config.get("cutout", "198x198"), config.get("clean_cosmic_rays", False),
                      config.get("sky_beside_halo", False))


def real_lens_degrade_args(spec: dict, size: int) -> dict:
    """``degrade``'s keywords with which the task's real cutouts of side ``size`` were made,
    without noise (``seed=None``), colours and PSF matching as the split gave them."""
    from lensbench.datasets.known_lenses import native_psf_args, real_split_colours

    lens_colours, source_colours = real_split_colours(spec["bands"],
                                                      spec.get("colours_from_f814w", False))
    return {"seed": None, "stamp_size": size, "lens_colours": lens_colours,
            "source_colours": source_colours,
            **native_psf_args(spec.get("match_native_psf", False))}


def real_lens_parts(spec: dict, real: Split) -> RealLensParts:
    """Lens light and arcs of the real lenses of ``real``, a split made from the task's
    ``real_lenses`` spec ``spec``, degraded as the split's images were but without noise."""
    from lensbench.datasets.degrade import NANOMAGGY_ZEROPOINT, degrade
    from lensbench.datasets.surveys import get_survey

    lenses = real_split_lenses(real)
    chosen = get_survey(spec["survey"]).select(list(spec["bands"]))
    size = real.image_shape[-1]
    common = real_lens_degrade_args(spec, size)
    rows = np.flatnonzero(real.truth["kind"] == 1)
    light, arcs, names, rays, shares, arc_shares, hst_noise = [], [], [], [], [], [], []
    rng = np.random.default_rng(PROBE_SEED)
    sky_sigma = survey_sigma(chosen, np.zeros((1, len(chosen.bands), size, size)))[0, :, 0, 0]
    for row in rows:
        lens = lenses[int(real.truth["object_index"][row])]
        names.append(lens.name)
        light.append(degrade(lens.lens_light, lens.pixel_scale, NANOMAGGY_ZEROPOINT, chosen,
                             **common))
        arcs.append(degrade(None, lens.pixel_scale, NANOMAGGY_ZEROPOINT, chosen,
                            arc_image=lens.arcs, lens_light_image=np.zeros_like(lens.arcs),
                            **common))
        cosmic = cosmic_ray_image(lens)
        shares.append(float(cosmic.sum() / lens.image.sum()))
        on_arcs = lens.arcs > 0
        arc_shares.append(float(cosmic[on_arcs].sum() / max(lens.arcs.sum(), 1e-30)))
        rays.append(degrade(cosmic, lens.pixel_scale, NANOMAGGY_ZEROPOINT, chosen, **common))
        hst_noise.append(degraded_hst_noise(lens, chosen, rng, **common).std(axis=(1, 2))
                         / sky_sigma)
    light, arcs = np.stack(light), np.stack(arcs)
    return RealLensParts(rows, names, light, arcs, survey_sigma(chosen, light + arcs),
                         np.stack(rays), np.array(shares), np.array(arc_shares),
                         np.stack(hst_noise))


def simulated_noise_sentence(config) -> str:
    """What correlated noise a task's simulated cutouts carry (``SimConfig.correlated_noise``
    and ``correlated_noise_kernel``), for the report beside the real cutouts' own."""
    levels = config.correlated_noise
    if not np.any(np.asarray(levels) > 0):
        return "the simulated cutouts have none"
    kernel = ("the kernel that matches HST ACS F814W's PSF to the band's"
              if config.correlated_noise_kernel == "acs-f814w-matched" else "the band's PSF")
    maxima = per_band_text(config.band_names, levels, "g")
    photons = config.correlated_noise_electrons_per_nanomaggy
    objects = (f", with the objects' own photon noise at "
               f"{per_band_text(config.band_names, photons, '.3g')} electrons per nanomaggy "
               "(the deep image's exposure)" if np.any(np.asarray(photons) > 0) else "")
    return (f"the simulated cutouts carry a noise field through {kernel}, its rms uniform up to "
            f"{maxima} sky sigma per pixel{objects} (`python scripts/slacs_noise.py` compares "
            "the two)")


def per_band_text(band_names, values, spec: str) -> str:
    """A SimConfig field that is one number or one per band, as text ("g 0.06, i 0.42")."""
    if isinstance(values, tuple):
        return ", ".join(f"{band} {value:{spec}}"
                         for band, value in zip(band_names, values, strict=True))
    return f"{values:{spec}}"


def degraded_hst_noise(lens, survey, rng: np.random.Generator,
                       photon_exposure_s: float | None = None, **degrade_args) -> np.ndarray:
    """The HST image's own noise as a degraded cutout carries it, smoothed by the rebinning and
    the survey PSF: one realisation of it (the image's noise variance per pixel and its
    correlation, both from its border: the snapshots are drizzled), degraded as the image is
    (``degrade_args``: ``degrade``'s keywords), (B, H, W).

    photon_exposure_s: with it, the noise also has the object's own photon noise in an exposure
        of that many seconds (the border's variance has only the sky's); near a bright lens it
        is most of an HST snapshot's noise."""
    from lensbench.datasets.degrade import NANOMAGGY_ZEROPOINT, correlated_noise_field, degrade

    variance = (lens.noise_variance if photon_exposure_s is None
                else lens.variance_with_photons(photon_exposure_s))
    noise = correlated_noise_field(lens.image.shape, lens.noise_correlation, rng)
    return degrade(noise * np.sqrt(variance), lens.pixel_scale, NANOMAGGY_ZEROPOINT, survey,
                   **degrade_args)


def cosmic_ray_image(lens) -> np.ndarray:
    """The cosmic rays left in a SLACS lens's HST image (nMgy per pixel; none where the split
    was made from cleaned images)."""
    from lensbench.datasets.known_lenses import cosmic_rays

    return cosmic_rays(lens.image, lens.zeropoint_ab, lens.noise_variance, lens.exposure_s)


def survey_sigma(survey, expected: np.ndarray) -> np.ndarray:
    """Per-pixel noise sigma (nMgy) of the survey at the noise-free image ``expected``
    (n, B, H, W): Poisson of source + sky and read noise, as the simulator draws it."""
    from lensbench.datasets.degrade import survey_variance_electrons

    sigma = np.empty_like(expected, dtype=np.float64)
    for b, band in enumerate(survey.bands):
        epn = band.electrons_per_nanomaggy
        sigma[:, b] = np.sqrt(survey_variance_electrons(expected[:, b] * epn, band)) / epn
    return sigma


def edited_cutouts(observed: np.ndarray, parts: RealLensParts) -> dict[str, np.ndarray]:
    """The edits of :data:`EDITS` of the real lenses' cutouts ``observed`` (n, B, H, W)."""
    from scipy.ndimage import shift

    light, arcs = parts.lens_light, parts.arcs
    rng = np.random.default_rng(PROBE_SEED)
    moved = {k: shift(observed, (0, 0, k, k), order=0, mode="mirror") for k in (2, 4)}
    edits = {"as observed": observed, "lens x0.5": observed - 0.5 * light,
             "lens x0.25": observed - 0.75 * light, "lens removed": observed - light,
             "arcs x2": observed + arcs,
             "noise x2": observed + math.sqrt(3) * parts.sigma * rng.standard_normal(
                 observed.shape),
             "shift 2 px": moved[2], "shift 4 px": moved[4],
             "light x0.5": observed - 0.5 * (light + arcs),
             "cutout x0.5": 0.5 * observed, "cutout x2": 2.0 * observed,
             "no cosmic rays": observed - parts.cosmic_rays}
    assert list(edits) == list(EDITS)
    return {name: image.astype(np.float32) for name, image in edits.items()}


def probe_edits(method, spec: dict, real: Split) -> dict[str, np.ndarray]:
    """A fitted finder's scores of every edit of every real lens: edit -> (n_lenses,)."""
    parts = real_lens_parts(spec, real)
    edits = edited_cutouts(real.images(parts.rows), parts)
    stacked = np.concatenate(list(edits.values()))
    scores = np.asarray(method.predict_score(stacked), dtype=np.float64)
    n = len(parts.rows)
    return {name: scores[k * n:(k + 1) * n] for k, name in enumerate(edits)}


@cache
def _cosmos_idents() -> tuple[int, ...]:
    from lensbench.datasets.cosmos import CosmosSources

    return tuple(g.ident for g in CosmosSources().galaxies)


def object_names(real: Split) -> list[str]:
    """A name for every row of a real split: the SLACS name or the COSMOS IDENT."""
    from lensbench.datasets.known_lenses import load_slacs

    kinds, index = real.truth["kind"], real.truth["object_index"]
    slacs = [lens.name for lens in load_slacs(real.manifest["config"].get("cutout", "198x198"))]
    idents = _cosmos_idents() if (kinds != 1).any() else ()
    return [slacs[int(k)] if kind == 1 else f"COSMOS {idents[int(k)]}"
            for kind, k in zip(kinds, index, strict=True)]


# ----------------------------------------------------------------------------- training set
def find_split(workdir: Path, task, role: str, content_hash: str, *, verify: bool = False
               ) -> Split | None:
    """The split of ``task`` (any version) and ``role`` under ``workdir/splits`` with this
    content hash (``verify``: then check that split's every shard's sha256, ``load_split``,
    whose error names the shard)."""
    for path in sorted((workdir / "splits").glob(f"{task.name}-v*-{role}-*")):
        try:
            split = load_split(path, verify=False)
        except (OSError, ValueError, KeyError):
            continue
        if split.content_hash == content_hash:
            return load_split(path, verify=True) if verify else split
    return None


def _features(images: np.ndarray, pixel_scale: float, bands) -> tuple[np.ndarray, list[str]]:
    from lensbench.baselines.features import border_noise, catalogue_features, shape_features

    noise = border_noise(images)
    parts = [catalogue_features(images, pixel_scale, bands, noise),
             shape_features(images, pixel_scale, bands)]
    values = np.concatenate([v for v, _ in parts], axis=1).astype(np.float64)
    return np.nan_to_num(values), [n for _, names in parts for n in names]


def _peak_stretched(images: np.ndarray, band: int, sigma: float) -> np.ndarray:
    """Brightest pixel of the central 16x16 in ``band`` after asinh(x / (3 sigma))."""
    h, w = images.shape[-2:]
    centre = images[:, band, h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8]
    return np.arcsinh(centre.reshape(len(images), -1).max(axis=1) / (ASINH_SOFTENING * sigma))


def _arc_snr(parts: RealLensParts) -> np.ndarray:
    """The simulator's arc S/N (best band) of the real lenses' arcs."""
    mask = parts.arcs > parts.sigma
    signal = (parts.arcs * mask).sum(axis=(2, 3))
    noise = np.sqrt((parts.sigma**2 * mask).sum(axis=(2, 3)))
    return np.max(np.where(noise > 0, signal / np.maximum(noise, 1e-30), 0.0), axis=1)


@dataclass
class Comparison:
    """Real lenses against the simulated training lenses."""

    names: list[str]
    quantities: list[tuple[str, np.ndarray, np.ndarray]]  # (name, training values, real values)
    neighbours: np.ndarray  # (n_real, N_NEIGHBOURS) rows of the training lenses
    distances: np.ndarray  # (n_real, N_NEIGHBOURS) in standardised feature units
    real_images: np.ndarray
    neighbour_images: np.ndarray  # (n_real, N_NEIGHBOURS, B, H, W)
    neighbour_captions: list[list[str]]


def simulated_lens_quantities(truth, rows: np.ndarray, ref: str) -> dict[str, np.ndarray]:
    """Einstein radius, lens magnitude, lens-to-arc flux and arc S/N of simulated lenses
    (``rows`` of a split's truth) in the reference band."""
    lens_mag = truth[f"lens_mag_{ref}"][rows].astype(np.float64)
    arc_mag = (truth[f"source_mag_{ref}"][rows]
               - 2.5 * np.log10(np.clip(truth["magnification"][rows], 1e-6, None)))
    return {"theta_E (arcsec)": truth["theta_e"][rows].astype(np.float64),
            f"lens magnitude {ref} (AB)": lens_mag,
            "lens / arc flux": 10 ** (-0.4 * (lens_mag - arc_mag)),
            "arc S/N": truth["arc_snr"][rows].astype(np.float64)}


def real_lens_quantities(real: Split, parts: RealLensParts, ref: str) -> dict[str, np.ndarray]:
    """The same quantities of the real lenses: lens magnitude and lens-to-arc flux from the
    arc split's share of the flux, arc S/N from the degraded arcs."""
    arc_fraction = real.truth["arc_fraction"][parts.rows].astype(np.float64)
    total = real.truth[f"mag_{ref}"][parts.rows].astype(np.float64)
    return {"theta_E (arcsec)": real.truth["theta_e"][parts.rows].astype(np.float64),
            f"lens magnitude {ref} (AB)":
                total - 2.5 * np.log10(np.clip(1 - arc_fraction, 1e-6, None)),
            "lens / arc flux": (1 - arc_fraction) / np.clip(arc_fraction, 1e-6, None),
            "arc S/N": _arc_snr(parts)}


def compare_with_training(task, train: Split, real: Split, parts: RealLensParts) -> Comparison:
    """Where the real lenses fall among the training lenses (``parts``: their
    :func:`real_lens_parts`), and their nearest ones."""
    from lensbench.baselines.features import border_noise
    from lensbench.datasets.surveys import get_survey

    pixel_scale = get_survey(task.config.survey).pixel_scale
    bands = list(train.bands)
    ref = task.config.reference
    ref_b = bands.index(ref)
    truth = train.truth
    lens_rows = np.flatnonzero(truth["label"] == 1)
    train_images = train.images(lens_rows)
    real_images = real.images(parts.rows)
    # The training set's typical sky sigma per pixel, the unit of the finders' stretch.
    sigma = float(np.median(border_noise(train.images(np.arange(min(train.n, 512)))),
                            axis=0)[ref_b])

    simulated = simulated_lens_quantities(truth, lens_rows, ref)
    real_values = real_lens_quantities(real, parts, ref)
    quantities = [(name, simulated[name], real_values[name]) for name in simulated]
    theta, lens_mag = simulated["theta_E (arcsec)"], simulated[f"lens magnitude {ref} (AB)"]
    train_features, names = _features(train_images, pixel_scale, bands)
    real_features, _ = _features(real_images, pixel_scale, bands)
    size = names.index(f"size_{ref}")
    quantities.append((f"size in {ref}, measured (arcsec)", train_features[:, size],
                       real_features[:, size]))
    central = names[0].rsplit("_", 1)[-1]  # the first (smallest) aperture's radius
    for k, name in enumerate(names):  # adjacent-band colours in the central aperture
        if name.startswith("colour_") and name.endswith(f"_{central}"):
            pair = name.removeprefix("colour_").removesuffix(f"_{central}")
            quantities.append((f"{pair} within {central}\", measured", train_features[:, k],
                               real_features[:, k]))
    # Noise, which the finders normalise by: robust sigma of the 2-pixel stamp border.
    quantities.append((f"border sky sigma {ref} (nMgy)", border_noise(train_images)[:, ref_b],
                       border_noise(real_images)[:, ref_b]))
    quantities.append((f"peak after asinh stretch ({ref})",
                       _peak_stretched(train_images, ref_b, sigma),
                       _peak_stretched(real_images, ref_b, sigma)))

    centre = np.median(train_features, axis=0)
    spread = mad_sigma(train_features, axis=0)
    keep = spread > 0
    standard_train = (train_features[:, keep] - centre[keep]) / spread[keep]
    standard_real = (real_features[:, keep] - centre[keep]) / spread[keep]
    distance = np.sqrt(((standard_real[:, None, :] - standard_train[None]) ** 2).sum(axis=2))
    nearest = np.argsort(distance, axis=1)[:, :N_NEIGHBOURS]
    near_distance = np.take_along_axis(distance, nearest, axis=1)
    captions = [[f"sim theta_E {theta[j]:.2f}\" {ref} {lens_mag[j]:.1f} d {d:.1f}"
                 for j, d in zip(row, dist, strict=True)]
                for row, dist in zip(nearest, near_distance, strict=True)]
    return Comparison(parts.names, quantities, lens_rows[nearest], near_distance, real_images,
                      train_images[nearest], captions)


def percentile(values: np.ndarray, value: float) -> float:
    """Share (%) of ``values`` below ``value`` (ties count half)."""
    values = values[np.isfinite(values)]
    if not len(values) or not math.isfinite(value):
        return math.nan
    return 100.0 * ((values < value).sum() + 0.5 * (values == value).sum()) / len(values)


def distribution_rows(comparison: Comparison) -> list[str]:
    """Markdown table: per quantity, the training lenses' 5/50/95 percentiles and each real
    lens's value with its percentile."""
    header = ["quantity", "training lenses 5% / 50% / 95%",
              *[f"{name}: value (pct)" for name in comparison.names]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, train_values, real_values in comparison.quantities:
        finite = train_values[np.isfinite(train_values)]
        spread = " / ".join(f"{v:.3g}" for v in np.percentile(finite, [5, 50, 95])) \
            if len(finite) else "-"
        cells = [f"{v:.3g} ({percentile(train_values, v):.0f})" for v in real_values]
        lines.append("| " + " | ".join([name, spread, *cells]) + " |")
    return lines


def plot_distributions(comparison: Comparison, path: Path, title: str) -> Path:
    """One histogram per quantity of the training lenses, the real lenses as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(comparison.quantities)
    cols = 4
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(3.2 * cols,
                                                                  2.6 * math.ceil(n / cols)),
                             squeeze=False)
    for ax, (name, train_values, real_values) in zip(axes.ravel(), comparison.quantities,
                                                     strict=False):
        finite = train_values[np.isfinite(train_values)]
        log = name.startswith("lens / arc") and len(finite) and finite.min() > 0
        data = np.log10(finite) if log else finite
        ax.hist(data, bins=30, color="0.7")
        for k, v in enumerate(real_values):
            if math.isfinite(v) and (v > 0 or not log):
                ax.axvline(math.log10(v) if log else v, color=f"C{k}", lw=1.5,
                           label=comparison.names[k])
        ax.set_title(("log10 " if log else "") + name, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=90)
    plt.close(fig)
    return path


def plot_neighbours(comparison: Comparison, bands, path: Path, title: str) -> Path:
    """Each real lens (left) beside its nearest simulated training lenses."""
    from lensbench.bench.plots import display_bands
    from lensbench.datasets.gallery import save_gallery

    shown, picked = display_bands(list(bands))
    images, captions = [], []
    for k, name in enumerate(comparison.names):
        images += [comparison.real_images[k], *comparison.neighbour_images[k]]
        captions += [f"real {name}", *comparison.neighbour_captions[k]]
    stack = np.stack(images)[:, picked]
    return save_gallery(stack, shown, captions, path, ncols=1 + N_NEIGHBOURS, title=title)


# ----------------------------------------------------------------------------- report
def run_test_split(workdir: Path, task, run: Path) -> Split | None:
    """The test split a run (its artefact folder ``run``) was scored on: the split under
    ``workdir`` with the content hash its ``scores.npz`` names, every shard verified."""
    content_hash = str(read_artifact(run / "scores.npz", ("test_hash",))["test_hash"])
    return find_split(workdir, task, "test", content_hash, verify=True)


def stored_test_scores(result, workdir: Path):
    """(labels, scores, test-split hash) a run saved for its test set (``scores`` artefact),
    or None."""
    data = result.load_artifact("scores", workdir, ("labels", "scores", "test_hash"))
    if data is None:
        return None
    return data["labels"], data["scores"], str(data["test_hash"])


def load_real_scores(result, workdir: Path, real_hash: str) -> dict | None:
    """What a run saved about the real split (``real_scores`` artefact) if made from it."""
    data = result.load_artifact("real_scores", workdir, ("real_hash",))
    if data is None or str(data["real_hash"]) != real_hash:
        return None
    return data


# Brightest field galaxy (reference band) of a simulated test lens: the bins of the report.
NEIGHBOUR_BINS = (("none", -np.inf, np.inf), ("fainter than 22", 22.0, np.inf),
                  ("20-22", 20.0, 22.0), ("brighter than 20", -np.inf, 20.0))


def scored_test_splits(task, runs, workdir: Path) -> list:
    """For each (result, real scores) of ``runs`` whose test scores and test split are in the
    workdir: (result, real scores, test labels, test scores, test split)."""
    scored = []
    for r, saved in runs:
        stored = stored_test_scores(r, workdir)
        split = find_split(workdir, task, "test", stored[2]) if stored else None
        if split is not None:
            scored.append((r, saved, stored[0], stored[1], split))
    return scored


def share_above_rows(scored, values, groups) -> list[str]:
    """One table row per run of ``scored`` (:func:`scored_test_splits`) whose test split holds
    what ``values(truth)`` needs (None when it does not): the share of each group of its simulated
    test lenses above the run's real-lens threshold (FPR 1e-3), with the group's size in brackets.
    ``groups(values)`` gives the groups as boolean masks over the split."""
    rows = []
    for r, saved, labels, scores, split in scored:
        per_cutout = values(split.truth)
        if per_cutout is None:
            continue
        lens = labels == 1
        cells = []
        for group in groups(per_cutout):
            chosen = lens & group
            above = scores[chosen] > saved["threshold"][()]
            cells.append(f"{above.mean():.3f} ({int(chosen.sum())})" if chosen.any() else "–")
        rows.append("| " + " | ".join([f"`{r.run_id}`", *cells]) + " |")
    return rows


def truth_column(name: str):
    """``values`` for :func:`share_above_rows`: the truth column ``name``, or None."""
    return lambda truth: truth[name] if name in truth else None


def source_offset(truth) -> np.ndarray | None:
    """Each cutout's source offset from the lens centre over its Einstein radius, beta/theta_E
    (NaN for non-lenses), or None when the truth lacks the positions. Small offsets make
    near-complete Einstein rings, about 1 the arc and counter-image of a fold."""
    if not {"source_x", "source_y", "lens_x", "lens_y", "theta_e"} <= set(truth):
        return None
    offset = np.hypot(truth["source_x"] - truth["lens_x"], truth["source_y"] - truth["lens_y"])
    with np.errstate(divide="ignore", invalid="ignore"):
        return (offset / truth["theta_e"]).astype(np.float64)


def neighbour_lines(task, scored) -> list[str]:
    """Each run's simulated test lenses above its real-lens threshold (FPR 1e-3), by the
    brightest field galaxy in their stamps: a finder that learned "a neighbour means no lens"
    loses the lenses with bright neighbours (empty when the test split has none). ``scored``:
    :func:`scored_test_splits`."""
    rows = share_above_rows(scored, truth_column("field_mag_min"), lambda brightest: [
        np.isnan(brightest) if name == "none" else (brightest >= low) & (brightest < high)
        for name, low, high in NEIGHBOUR_BINS])
    if not rows:
        return []
    reference = task.config.reference
    header = ["method", *[f"{name}" for name, _, _ in NEIGHBOUR_BINS]]
    return ["", f"Simulated test lenses above the FPR-1e-3 threshold, by the brightest field "
            f"galaxy in their stamp ({reference} magnitude; lenses in the bin in brackets):", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]


def companion_lines(scored) -> list[str]:
    """Each run's simulated test lenses above its real-lens threshold (FPR 1e-3), alone and
    with a group's companions around them (``SimConfig.lens_companion_fraction``): a finder
    that learned "companions mean no lens" loses the second (empty when the test split's lenses
    have none). ``scored``: :func:`scored_test_splits`."""
    rows = share_above_rows(scored, truth_column("n_companions"),
                            lambda count: [count == 0, count > 0])
    if not rows:
        return []
    return ["", "Simulated test lenses above the FPR-1e-3 threshold, without and with a "
            "group's companions (2-4 early types 0.3-2 mag fainter; lenses in brackets):", "",
            "| method | no companions | group companions |", "|---|---|---|", *rows]


# Source offset bins (beta/theta_E) of the report: below 0.1 a near-complete ring, 0.3-0.45 the
# middle of a uniform-in-area draw within the magnification cut, above 0.7 a fold's lone arc.
OFFSET_BINS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.45), (0.45, 0.7), (0.7, np.inf))


def source_offset_lines(scored) -> list[str]:
    """Each run's simulated test lenses above its real-lens threshold (FPR 1e-3), by the source
    offset beta/theta_E (:func:`source_offset`): how a finder fares on rings against single
    arcs. ``scored``: :func:`scored_test_splits`."""
    rows = share_above_rows(scored, source_offset, lambda offset: [
        (offset >= low) & (offset < high) for low, high in OFFSET_BINS])
    if not rows:
        return []
    header = ["method", *[f"{low:g}-{high:g}" if np.isfinite(high) else f">= {low:g}"
                          for low, high in OFFSET_BINS]]
    return ["", "Simulated test lenses above the FPR-1e-3 threshold, by the source's offset from "
            "the lens centre in Einstein radii (beta / theta_E; small: a near-complete ring; "
            "lenses in brackets):", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]


# Look-alikes of a real lens: its nearest simulated test lenses in (theta_E, lens magnitude,
# log lens/arc flux, log arc S/N), each axis standardised by the simulated lenses' median and MAD.
# 100 keeps a share's binomial error near 0.05 while the neighbours stay within ~1 MAD of the
# real lens on every axis in the default runs (10,000 test cutouts, ~5,000 lenses).
LOOKALIKES = 100
GOAL_SHARE = 0.8  # issue 22: at least 4 of the 5 SLACS lenses above the threshold


def nearest_lookalikes(simulated: np.ndarray, real: np.ndarray, k: int = LOOKALIKES
                       ) -> np.ndarray:
    """For each row of ``real`` (n, Q), the indices (n, k) of its ``k`` nearest rows of
    ``simulated`` (m, Q), in units of the simulated rows' median absolute deviation per axis
    (1.4826 MAD)."""
    centre = np.median(simulated, axis=0)
    spread = mad_sigma(simulated, axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    sim, rl = (simulated - centre) / spread, (real - centre) / spread
    distance = ((rl[:, None, :] - sim[None]) ** 2).sum(axis=2)
    return np.argsort(distance, axis=1, kind="stable")[:, :min(k, len(simulated))]


def lookalike_mean(values: np.ndarray, nearest: np.ndarray, weights: np.ndarray | None = None
                   ) -> np.ndarray:
    """The (weighted) mean of ``values`` (one per simulated row) over each real row's
    look-alikes, ``nearest`` (n, k) from :func:`nearest_lookalikes`, each row counted with its
    ``weights`` (one per simulated row; equal when None): for bool ``values`` (found or not),
    the share found among the look-alikes."""
    if weights is None:
        return values[nearest].mean(axis=1)
    return (weights[nearest] * values[nearest]).sum(axis=1) / weights[nearest].sum(axis=1)


def success_count_distribution(probabilities: np.ndarray) -> np.ndarray:
    """P(exactly j successes), j = 0..n, of independent trials with the given probabilities
    (the Poisson-binomial distribution, by convolving the trials one at a time)."""
    distribution = np.array([1.0])
    for p in probabilities:
        distribution = np.convolve(distribution, [1.0 - p, p])
    return distribution


def lookalike_axes(values: dict[str, np.ndarray]) -> np.ndarray:
    """The look-alike space's columns from :func:`simulated_lens_quantities` or
    :func:`real_lens_quantities`: theta_E, lens magnitude, log lens/arc flux, log arc S/N."""
    names = list(values)  # theta_E, lens magnitude, lens / arc flux, arc S/N
    return np.column_stack([values[names[0]], values[names[1]],
                            np.log10(np.clip(values[names[2]], 1e-6, None)),
                            np.log10(np.clip(values[names[3]], 1e-6, None))])


# SLACS chose its lenses by the sources' emission lines in the SDSS fibre (Bolton et al. 2006,
# docs/references.md): a flux-limited selection, under which a source position is weighted by its
# magnification to the power of its number counts' slope alpha (N(>F) ~ F^-alpha): the
# magnification bias. The report weights the look-alikes by mu^alpha for these slopes.
SELECTION_SLOPES = (0, 1, 2)


def lookalike_lines(task, scored, real: Split, parts: RealLensParts) -> list[str]:
    """How many real lenses each run would find if they fared as their simulated look-alikes:
    a real lens's chance is the share of its look-alikes above the run's threshold. Far fewer
    found than expected means the real lenses differ from the simulated ones in something these
    four quantities do not hold; few expected means the goal asks more than the finder gives
    even on simulated lenses like them. A second table weights the look-alikes as a
    spectroscopic, flux-limited selection like SLACS's would (``SELECTION_SLOPES``), which
    favours the high magnifications of sources behind the lens centre, i.e. rings. ``scored``:
    :func:`scored_test_splits`."""
    ref = task.config.reference
    real_axes = lookalike_axes(real_lens_quantities(real, parts, ref))
    n = len(parts.rows)
    goal = math.ceil(GOAL_SHARE * n)
    rows, weighted_rows = [], []
    for r, saved, labels, scores, split in scored:
        lenses = np.flatnonzero(labels == 1)
        found = scores[lenses] > saved["threshold"][()]
        # One neighbour search serves the plain and every weighted table.
        nearest = nearest_lookalikes(
            lookalike_axes(simulated_lens_quantities(split.truth, lenses, ref)), real_axes)
        shares = lookalike_mean(found, nearest)
        observed = int((saved["scores"][parts.rows] > saved["threshold"][()]).sum())
        distribution = success_count_distribution(shares)
        rows.append("| " + " | ".join([
            f"`{r.run_id}`", *[f"{s:.2f}" for s in shares], f"{found.mean():.2f}",
            f"{shares.sum():.1f}", f"{distribution[goal:].sum():.2f}", f"{observed}",
            f"{distribution[:observed + 1].sum():.3f}"]) + " |")
        offset = source_offset(split.truth)
        if offset is None or "magnification" not in split.truth:
            continue
        offset = offset[lenses]
        magnification = split.truth["magnification"][lenses].astype(np.float64)
        cells = []
        for slope in SELECTION_SLOPES:
            weights = magnification ** slope
            weighted = lookalike_mean(found, nearest, weights)
            mean_offset = lookalike_mean(offset, nearest, weights)
            cells.append(f"{mean_offset.mean():.2f}; {weighted.sum():.1f}; "
                         f"{success_count_distribution(weighted)[:observed + 1].sum():.3f}")
        weighted_rows.append("| " + " | ".join([f"`{r.run_id}`", f"{observed}", *cells]) + " |")
    if not rows:
        return []
    header = ["method", *parts.names, "all test lenses", "expected", f"P(>= {goal})",
              "found", "P(<= found)"]
    md = ["", f"Look-alikes ({n} real lenses): the share of each real lens's {LOOKALIKES} "
          "nearest simulated test lenses (theta_E, lens magnitude, log lens/arc flux, log arc "
          "S/N; standardised) that the run puts above its FPR-1e-3 threshold, the share of all "
          "simulated test lenses, the real lenses it would find if they fared as their "
          f"look-alikes (expected, and the chance of at least {goal}), how many it found, and "
          "the chance of finding that few:", "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]
    if weighted_rows:
        header = ["method", "found", *[f"weight mu^{slope}" for slope in SELECTION_SLOPES]]
        md += ["", f"The same look-alikes ({n} real lenses) weighted as a flux-limited "
               "spectroscopic selection like SLACS's would weight them: each by its "
               "magnification mu to the power alpha, the slope of the sources' number counts "
               "(mu^0: unweighted, as above). Each cell: the look-alikes' mean source offset "
               "beta / theta_E (averaged over the real lenses); the real lenses expected; the "
               "chance of finding as few as found:", "",
               "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *weighted_rows]
    return md


def report_lines(task, results, *, workdir: Path, out_dir: Path, stem: str, profile: str
                 ) -> tuple[list[str], list[Path]]:
    """The real-lens diagnosis section of a lens-finding task's report."""
    from lensbench.bench.splits import ensure_real_lens_split

    spec = task.real_lenses
    real = ensure_real_lens_split(task, workdir)
    kinds = real.truth["kind"]
    counts = {kind: int((kinds == kind).sum()) for kind in KIND_NAMES}
    count_text = (f"{counts[1]} real lenses; real non-lenses: {counts[3]} bright COSMOS early "
                  f"types rendered at z = 0.2 and {counts[2]} COSMOS field galaxies")
    names = object_names(real)
    runs = [(r, saved) for r in sorted(results, key=lambda r: r.run_id)
            if (saved := load_real_scores(r, workdir, real.content_hash)) is not None]
    md = ["", f"### Real objects ({task.name}): {count_text}", ""]
    figures: list[Path] = []
    parts = None  # real_lens_parts, made once when first needed
    if runs:
        md += ["Each real object's score; `*`: above the method's FPR-1e-3 threshold on the "
               "simulated test set (given in the header). Rows: the lenses, then the bright "
               "early types, then the field galaxies, each by brightness.", ""]
        header = ["object", "kind", f"mag {task.config.reference}",
                  *[f"`{r.run_id}` (> {saved['threshold'][()]:.3g})" for r, saved in runs]]
        md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        mags = real.truth[f"mag_{task.config.reference}"]
        order = sorted(range(real.n), key=lambda i: ({1: 0, 3: 1, 2: 2}[int(kinds[i])],
                                                     float(mags[i])))
        for i in order:
            cells = [f"{s[i]:.3g}{'*' if s[i] > saved['threshold'][()] else ''}"
                     for _, saved in runs for s in [saved["scores"]]]
            md.append("| " + " | ".join([names[i], KIND_NAMES[int(kinds[i])],
                                         f"{mags[i]:.2f}", *cells]) + " |")
        md += ["", f"Above threshold per method ({count_text}):", ""]
        for r, saved in runs:
            above = saved["scores"] > saved["threshold"][()]
            md.append(f"- `{r.run_id}`: " + "; ".join(
                f"{KIND_PLURALS[kind]} {int(above[kinds == kind].sum())} / {counts[kind]}"
                for kind in (1, 3, 2)))
        scored = scored_test_splits(task, runs, workdir)
        md += neighbour_lines(task, scored)
        md += companion_lines(scored)
        md += source_offset_lines(scored)
        parts = real_lens_parts(spec, real)
        md += lookalike_lines(task, scored, real, parts)
        md += ["", f"Probe ({counts[1]} real lenses): each fitted finder's score of controlled "
               "edits of the real cutouts (R = lens light L + arcs A + noise; L and A from the "
               "SLACS arc split, degraded without noise):", ""]
        md += [f"- {name}: {what}" for name, what in EDITS.items()]
        cleaned = real.manifest["config"].get("clean_cosmic_rays", False)
        md += ["", "Cosmic rays found in the HST images"
               + (" by a second pass of the detection (the images were cleaned of them before "
                  "they were degraded)" if cleaned else "")
               + " (share of the image's flux; of the flux the arc split took for arcs, which "
               "the arcs x2 edit and the arc S/N below include): " + ", ".join(
                   f"{name} {share:.1%}; {arc_share:.1%}" for name, share, arc_share in
                   zip(parts.names, parts.cosmic_ray_share, parts.cosmic_ray_arc_share,
                       strict=True))]
        md += ["", "The HST images' own noise, degraded as the images were (one realisation "
               "of each image's noise level with its measured correlation: the snapshots are "
               "drizzled), in units of the survey's sky sigma per pixel, correlated on the scale "
               "of the survey PSF; "
               + simulated_noise_sentence(task.config) + ": " + ", ".join(
                   f"{name} " + " ".join(f"{band} {ratio:.2f}" for band, ratio in
                                         zip(real.bands, ratios, strict=True))
                   for name, ratios in zip(parts.names, parts.hst_noise, strict=True))]
        header = ["method", "lens", *EDITS]
        md += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lens_names = [names[i] for i in np.flatnonzero(kinds == 1)]
        for r, saved in runs:
            for k, lens in enumerate(lens_names):
                md.append("| " + " | ".join([f"`{r.run_id}`", lens, *[
                    f"{saved[f'probe/{edit}'][k]:.3g}" for edit in EDITS]]) + " |")
    train_hash = next((r.split_hashes.get("train") for r in results if r.split_hashes), None)
    train = find_split(workdir, task, "train", train_hash) if train_hash else None
    if train is None:
        md += ["", "(The training split is not in the workdir: no comparison with it.)"]
        return md, figures
    if parts is None:
        parts = real_lens_parts(spec, real)
    comparison = compare_with_training(task, train, real, parts)
    n_train_lenses = int((train.truth["label"] == 1).sum())
    md += ["", f"Where the {counts[1]} real lenses fall among the {n_train_lenses} simulated "
           "training lenses (value and percentile; lens magnitude, lens/arc flux and arc S/N of "
           "the real lenses from their arc split; size, colour, border noise and peak measured on "
           "the images of both alike):", ""]
    md += distribution_rows(comparison)
    title = f"{task.name} ({profile}): {counts[1]} real lenses vs {n_train_lenses} " \
            "training lenses"
    figures.append(plot_distributions(comparison, out_dir / f"{stem}-{task.name}-real-dist.png",
                                      title))
    figures.append(plot_neighbours(comparison, train.bands,
                                   out_dir / f"{stem}-{task.name}-real-neighbours.png",
                                   f"{counts[1]} real lenses (left) and their 3 nearest "
                                   "simulated training lenses"))
    md += ["", f"![{counts[1]} real lenses against the training lenses]({figures[0].name})",
           "", f"Nearest simulated training lenses ({counts[1]} real lenses; distance d in "
           "standardised photometric and shape features, baselines/features.py):", "",
           f"![{counts[1]} real lenses and their nearest training lenses]({figures[1].name})"]
    return md, figures
