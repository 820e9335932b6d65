"""Simulation configuration: every parameter distribution is data in one frozen dataclass.

A config round-trips through JSON (it is written into every split's manifest), so a split can be
remade exactly from its manifest and the seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from lensbench.datasets.surveys import get_survey
from lensbench.datasets.typecheck import field_hints, fits_type, type_text

# Colours (band - reference band, AB) by band name. The lens is a passive early-type galaxy at
# z ~ 0.5 (red); the source a star-forming galaxy at z ~ 1-2 (blue, nearly flat in f_nu); clumps of
# star formation are bluer still. Per-object scatter is added on top (``colour_scatter``).
LENS_COLOURS = {"u": 3.6, "g": 2.4, "r": 0.85, "i": 0.0, "z": -0.4, "y": -0.6, "Y": -0.6,
                "VIS": 0.3}
SOURCE_COLOURS = {"u": 0.45, "g": 0.2, "r": 0.1, "i": 0.0, "z": -0.05, "y": -0.1, "Y": -0.1,
                  "VIS": 0.05}
CLUMP_COLOURS = {"u": 0.0, "g": -0.15, "r": -0.1, "i": 0.0, "z": 0.05, "y": 0.1, "Y": 0.1,
                 "VIS": -0.05}
# Hard negatives (``datasets/negatives.py``), (band - i) AB. Disks of late-type galaxies at
# z ~ 0.3-0.5 (Sbc-like); star-forming rings, spiral arms and tidal tails (nearly flat in f_nu,
# like the lensed sources they imitate: that is what makes them hard); stars (G/K dwarfs).
DISK_COLOURS = {"u": 1.9, "g": 1.0, "r": 0.35, "i": 0.0, "z": -0.15, "y": -0.25, "Y": -0.25,
                "VIS": 0.15}
RING_COLOURS = {"u": 1.0, "g": 0.5, "r": 0.2, "i": 0.0, "z": -0.05, "y": -0.1, "Y": -0.1,
                "VIS": 0.1}
ARM_COLOURS = {"u": 0.8, "g": 0.4, "r": 0.15, "i": 0.0, "z": -0.05, "y": -0.1, "Y": -0.1,
               "VIS": 0.07}
STAR_COLOURS = {"u": 2.0, "g": 0.9, "r": 0.25, "i": 0.0, "z": -0.1, "y": -0.15, "Y": -0.15,
                "VIS": 0.1}

THETA_E_DISTRIBUTIONS = ("natural", "flat")
LABELLINGS = ("metcalf", "clean")
PSF_MODELS = ("survey", "moffat", "gaussian", "pixelised")
MAX_STAMP_SIZE = 1024  # pixels a side; survey lens cutouts are 44-200
MAX_SUPERSAMPLE = 16
# SimConfig.core_refinement: each level splits the cells around a Sersic centre 4 x 4 again
# (render.CORE_SPLIT), so 3 levels resolve the core at 64 x supersample cells a pixel side.
CORE_REFINEMENT = 3
MAX_CORE_REFINEMENT = 6
SOURCE_MODELS = ("sersic", "cosmos", "mix")
# How a lens galaxy's half-light radius is drawn: "uniform" in ``lens_r_eff_range`` whatever its
# luminosity and redshift, or "size-luminosity": the early-type size-luminosity relation of Shen
# et al. (2003) at the galaxy's luminosity, seen at its redshift (``population``).
LENS_SIZES = ("uniform", "size-luminosity")
# Classes of non-lenses; ``negative_class`` in the truth indexes this tuple (-1 for lenses).
NEGATIVE_CLASSES = ("elliptical", "spiral", "ring", "merger", "group", "edge-on", "cosmos",
                    "artefact")
# Field galaxies (``SimConfig.field_density``): faint galaxy counts rise as
# d log10 N / dm = 0.3 in i and I-like bands from m ~ 20 to 25 (Metcalfe et al. 2001; Capak et al.
# 2004), so magnitudes are drawn from N(m) ~ 10^(0.3 m) in ``field_mag_range``. Their half-light
# radii shrink with magnitude: median 0.3" at m = 24, growing 10^(-0.12 (m - 24)) (HST
# COSMOS/GOODS sizes in F814W), log-normal scatter 0.35; 30% have early-type colours.
FIELD_COUNT_SLOPE = 0.3
FIELD_R_EFF_AT_24 = 0.3
FIELD_SIZE_SLOPE = 0.12
FIELD_SIZE_SCATTER = 0.35
FIELD_RED_FRACTION = 0.3
FIELD_MAX_GALAXIES = 8
# Kinds of artefact; ``artefact_kind`` in the truth indexes this tuple (-1 for none).
ARTEFACT_KINDS = ("cosmic-ray", "saturated-star", "satellite-trail", "mask")
CORRELATED_NOISE_KERNELS = ("psf", "acs-f814w-matched")  # SimConfig.correlated_noise_kernel
# SLACS snapshot images (HST programme 10587) are single 420 s F814W exposures (Bolton et al.
# 2008, ApJ 682, 964), so their cosmic rays were never rejected (NCOMBINE = 1 in the shared
# cutouts; the deeper 4-exposure images have NCOMBINE = 4): the Poisson part of the noise model
# of the cosmic-ray detection (known_lenses.cosmic_rays) and of the photon noise the real-vis
# simulations give their HST-like noise (bench/tasks.py) at that exposure.
SNAPSHOT_EXPOSURE_S = 420.0


def electrons_per_nanomaggy(zeropoint_ab: float, exposure_s: float) -> float:
    """Electrons one nanomaggy gives in ``exposure_s`` seconds, for an AB zero point
    ``zeropoint_ab`` (the magnitude of 1 e-/s)."""
    return 10 ** (0.4 * (zeropoint_ab - 22.5)) * exposure_s
# Fields added after simulator version 1, with their defaults (JSON types): at these values the
# simulator's output is that of version 1, and ``SimConfig.to_dict`` omits them.
ADDED_FIELDS = {"source_model": "sersic", "cosmos_fraction": 0.5,
                "negatives": {"elliptical": 1.0}, "lens_artefact_fraction": 0.0,
                "saturation_level": 1.0e5, "lens_size": "uniform", "field_density": 0.0,
                "field_mag_range": [18.0, 25.0], "correlated_noise": 0.0,
                "lens_isophote_twist": 0.0, "lens_isophote_dq": 0.0,
                "lens_isophote_a4_range": [0.0, 0.0], "lens_companion_fraction": 0.0,
                "correlated_noise_kernel": "psf", "core_refinement": 0,
                "correlated_noise_electrons_per_nanomaggy": 0.0}


@dataclass(frozen=True)
class SimConfig:
    """How a split of survey cutouts is simulated. Angles in arcsec, magnitudes AB in the
    reference band (``reference_band``, default the survey's i or its only band)."""

    survey: str = "hsc"
    bands: tuple[str, ...] | None = None  # None: all bands of the survey
    stamp_size: int | None = None  # None: the survey's default
    supersample: int = 2
    # Nested refinements of the subpixels around each Sersic centre (render.Grid.integrate_core):
    # a core narrower than a subpixel is integrated, not sampled. 0: samples at subpixel centres
    # only (simulator version 1, which the suites' tasks keep until their reports are remade).
    core_refinement: int = CORE_REFINEMENT
    lens_fraction: float = 0.5
    reference_band: str | None = None
    # Lens population
    theta_e_distribution: str = "natural"  # "natural" (velocity function x cross-section) or "flat"
    theta_e_range: tuple[float, float] = (0.5, 3.0)
    z_lens_range: tuple[float, float] = (0.2, 0.9)
    z_source_max: float = 3.0
    q_range: tuple[float, float] = (0.4, 1.0)
    shear_sigma: float = 0.05  # per-component Gaussian width of the external shear
    lens_offset_sigma: float = 0.05  # arcsec, lens centre about the stamp centre
    lens_sersic_n_range: tuple[float, float] = (3.0, 5.5)
    lens_r_eff_range: tuple[float, float] = (0.5, 2.0)  # arcsec; for lens_size "uniform"
    lens_size: str = "uniform"  # one of LENS_SIZES
    lens_mag_scatter: float = 0.3  # Faber-Jackson scatter, mag
    # Isophote structure of the central early type (lenses, and the elliptical and group
    # non-lenses): from the centre outwards its isophotes turn by a twist uniform in
    # +-lens_isophote_twist degrees and change axis ratio by one uniform in +-lens_isophote_dq,
    # and they carry a Fourier deviation a4/a uniform in lens_isophote_a4_range (< 0 boxy, > 0
    # discy); ``lensing.sersic_profile_isophotes``. All 0: perfect ellipses.
    lens_isophote_twist: float = 0.0
    lens_isophote_dq: float = 0.0
    lens_isophote_a4_range: tuple[float, float] = (0.0, 0.0)
    # The share of lenses with the companions of a group around them, drawn as the ``group``
    # non-lenses' members (negatives.group_members; 2-4 early types 0.3-2 mag fainter within
    # the stamp), so that companions are not a sign of a non-lens. 0: lenses alone.
    lens_companion_fraction: float = 0.0
    # Source population
    source_mag_range: tuple[float, float] = (22.5, 26.0)
    source_r_eff_range: tuple[float, float] = (0.1, 0.5)
    source_sersic_n_range: tuple[float, float] = (0.5, 2.0)
    source_radius: float = 1.0  # source centres uniform in a disk of this radius, units of theta_E
    mean_clumps: float = 2.0
    max_clumps: int = 4
    clump_flux_fraction_range: tuple[float, float] = (0.03, 0.10)
    clump_r_eff_range: tuple[float, float] = (0.04, 0.08)
    colour_scatter: float = 0.1
    quad_fraction: float | None = None  # None: the natural mix; else the target share of quads
    # "sersic" (analytic, with clumps), "cosmos" (real HST COSMOS stamps through the lens
    # mapping; needs LENSBENCH_DATA_DIR) or "mix" (a share ``cosmos_fraction`` of real sources)
    source_model: str = "sersic"
    cosmos_fraction: float = 0.5
    # Non-lenses: share of each class of NEGATIVE_CLASSES (fractions summing to 1)
    negatives: dict = field(default_factory=lambda: {"elliptical": 1.0})
    lens_artefact_fraction: float = 0.0  # share of lenses that also carry an artefact
    # Field galaxies: line-of-sight neighbours in every cutout, lens or not, independent of the
    # system at the centre (a Poisson number per stamp, at most FIELD_MAX_GALAXIES, uniform over
    # it). Surface density per arcmin^2 of galaxies with a reference-band magnitude in
    # ``field_mag_range``; 0: none (every system alone in its stamp).
    field_density: float = 0.0
    field_mag_range: tuple[float, float] = (18.0, 25.0)
    saturation_level: float = 1.0e5  # full well, electrons per pixel per exposure (stars)
    # Labels
    labelling: str = "metcalf"  # "metcalf": any lensed source is a lens; "clean": cuts below
    min_magnification: float = 3.0
    min_arc_snr: float = 10.0
    # Observation
    psf_model: str = "survey"  # "survey" uses the preset's; or "moffat", "gaussian", "pixelised"
    psf_fwhm_override: float | None = None  # arcsec, all bands (e.g. 0.18 for Metcalf's space set)
    psf_file: str | None = None  # FITS with one kernel (or one HDU per band) for "pixelised"
    noise: bool = True
    # Noise correlated on the PSF scale, as in a resampled image or a deep image degraded to the
    # survey (whose own noise the rebinning and the PSF smooth): each cutout draws the rms of a
    # PSF-convolved noise field uniform in [0, correlated_noise] sky sigma per pixel, and the
    # white noise is lowered so that the variance per pixel stays the survey's where it can
    # (``datasets.degrade`` tops a degraded image's noise up in the same way). 0: white only.
    # One number for every band, or one per band (in ``band_names`` order): then each cutout
    # draws one fraction in [0, 1] of every band's maximum, as one deep image's noise degraded
    # to each band is.
    correlated_noise: float | tuple[float, ...] = 0.0
    # The kernel the correlated field is convolved with: "psf", the band's PSF (a resampled
    # survey image); "acs-f814w-matched", the kernel that ``datasets.degrade`` takes an HST
    # ACS/WFC F814W image through to reach the band's PSF (``degrade.matching_kernel``), so that
    # the field is an HST image's own white noise degraded to the survey as the real splits'
    # images are (exact where the survey pixel is a whole number of HST pixels, as VIS's 0.1" is
    # of the SLACS images' 0.05"; elsewhere the rebinning's own slight correlation is left out).
    correlated_noise_kernel: str = "psf"
    # The deep image's photon noise from the objects themselves, beside its sky's: with E, its
    # electrons per nanomaggy (its exposure), a pixel of noise-free flux I (nMgy) adds I / E to
    # the deep image's variance, which the kernel smooths as it does the sky's (by the kernel's
    # sum of squares), as a degraded HST snapshot's noise grows near a bright lens (the variance
    # of its border, the sky's alone, leaves that out; docs/real-lenses.md). 0: none, the
    # correlated field is stationary. One number for every band, or one per band (in
    # ``band_names`` order): a deep image in one band degraded to others carries, in band b,
    # its own photon noise scaled by the colour factor c_b of band b to its band, variance
    # c_b^2 I_deep / E = I_b / (E / c_b), so E / c_b is band b's number.
    correlated_noise_electrons_per_nanomaggy: float | tuple[float, ...] = 0.0
    shard_size: int = 1024
    extra: dict = field(default_factory=dict)  # free-form tags recorded in the manifest

    def __post_init__(self):
        if not isinstance(self.negatives, dict):  # before the type check: a fuller message
            raise ValueError(f"SimConfig.negatives must be a dict of class -> fraction over "
                             f"{NEGATIVE_CLASSES}, got {self.negatives!r}")
        self._check_types()
        for name in ("theta_e_range", "z_lens_range", "q_range", "lens_sersic_n_range",
                     "lens_r_eff_range", "source_mag_range", "source_r_eff_range",
                     "source_sersic_n_range", "clump_flux_fraction_range", "clump_r_eff_range",
                     "field_mag_range", "lens_isophote_a4_range"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if len(value) != 2 or not value[0] <= value[1]:
                raise ValueError(f"SimConfig.{name} must be (low, high) with low <= high, "
                                 f"got {value}")
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))
        for name in ("correlated_noise", "correlated_noise_electrons_per_nanomaggy"):
            if isinstance(getattr(self, name), (list, tuple)):  # JSON gives a list
                object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "negatives", dict(self.negatives))  # not the caller's dict
        self._validate()

    def _check_types(self):
        """Each field's value against its annotation, so that a config from JSON or ``--set``
        with a wrong type is refused by name before the simulator meets it."""
        hints = field_hints(SimConfig)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if fits_type(value, hints[f.name]) is False:
                raise ValueError(f"SimConfig.{f.name} must be {type_text(hints[f.name])}, "
                                 f"got {value!r}")

    def _validate(self):
        survey = get_survey(self.survey)
        for band in self.band_names:
            survey.band(band)  # raises, naming the survey's bands
        if self.theta_e_range[0] <= 0:
            raise ValueError(f"SimConfig.theta_e_range: theta_E must be > 0 arcsec, "
                             f"got {self.theta_e_range}")
        if not (0 < self.q_range[0] and self.q_range[1] <= 1):
            raise ValueError(f"SimConfig.q_range: the axis ratio q must lie in (0, 1], "
                             f"got {self.q_range}")
        choices = {"theta_e_distribution": THETA_E_DISTRIBUTIONS, "labelling": LABELLINGS,
                   "psf_model": PSF_MODELS, "source_model": SOURCE_MODELS,
                   "lens_size": LENS_SIZES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"SimConfig.{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        if not 0 <= self.lens_fraction <= 1:
            raise ValueError(
                f"SimConfig.lens_fraction must lie in [0, 1], got {self.lens_fraction}")
        if self.quad_fraction is not None and not 0 <= self.quad_fraction <= 1:
            raise ValueError(f"SimConfig.quad_fraction must be None or in [0, 1], "
                             f"got {self.quad_fraction}")
        for name in ("cosmos_fraction", "lens_artefact_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"SimConfig.{name} must lie in [0, 1], got {getattr(self, name)}")
        if not (math.isfinite(self.field_density) and self.field_density >= 0):
            raise ValueError(f"SimConfig.field_density must be a finite number >= 0 galaxies per "
                             f"arcmin^2, got {self.field_density}")
        levels = (self.correlated_noise if isinstance(self.correlated_noise, tuple)
                  else (self.correlated_noise,))
        if isinstance(self.correlated_noise, tuple) and len(levels) != len(self.band_names):
            raise ValueError(f"SimConfig.correlated_noise: one level per band "
                             f"{self.band_names}, got {self.correlated_noise}")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in levels):
            raise ValueError(f"SimConfig.correlated_noise must be a number >= 0 (sky sigma) or "
                             f"one per band, got {self.correlated_noise!r}")
        if self.correlated_noise_kernel not in CORRELATED_NOISE_KERNELS:
            raise ValueError(f"SimConfig.correlated_noise_kernel must be one of "
                             f"{CORRELATED_NOISE_KERNELS}, got {self.correlated_noise_kernel!r}")
        photons = self.correlated_noise_electrons_per_nanomaggy
        per_band = photons if isinstance(photons, tuple) else (photons,)
        if isinstance(photons, tuple) and len(per_band) != len(self.band_names):
            raise ValueError(f"SimConfig.correlated_noise_electrons_per_nanomaggy: one number "
                             f"per band {self.band_names}, got {photons}")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
                   for v in per_band):
            raise ValueError(f"SimConfig.correlated_noise_electrons_per_nanomaggy must be a "
                             f"finite number >= 0 or one per band, got {photons!r}")
        if any(per_band) and not any(levels):
            raise ValueError("SimConfig.correlated_noise_electrons_per_nanomaggy shapes the "
                             "correlated noise: it needs correlated_noise > 0")
        if not (0 <= self.lens_isophote_twist <= 90 and 0 <= self.lens_isophote_dq < 0.7
                and -0.2 < self.lens_isophote_a4_range[0] and self.lens_isophote_a4_range[1] < 0.2):
            raise ValueError(
                f"SimConfig: lens_isophote_twist must lie in [0, 90] degrees, lens_isophote_dq in "
                f"[0, 0.7) and lens_isophote_a4_range within (-0.2, 0.2); got "
                f"{self.lens_isophote_twist}, {self.lens_isophote_dq}, "
                f"{self.lens_isophote_a4_range}")
        if not (isinstance(self.lens_companion_fraction, (int, float))
                and 0 <= self.lens_companion_fraction <= 1):
            raise ValueError(f"SimConfig.lens_companion_fraction must lie in [0, 1], got "
                             f"{self.lens_companion_fraction!r}")
        if self.saturation_level <= 0:
            raise ValueError(f"SimConfig.saturation_level must be > 0 electrons, "
                             f"got {self.saturation_level}")
        self._validate_negatives()
        # upper bounds far above any survey's cutouts: a typo of 100000 allocated 76 GiB
        if not 1 <= self.supersample <= MAX_SUPERSAMPLE or self.stamp_size is not None and \
                not 8 <= self.stamp_size <= MAX_STAMP_SIZE:
            raise ValueError(f"SimConfig: supersample must lie in [1, {MAX_SUPERSAMPLE}] and "
                             f"stamp_size in [8, {MAX_STAMP_SIZE}] pixels, got supersample "
                             f"{self.supersample} and stamp_size {self.stamp_size}")
        if not (isinstance(self.core_refinement, int)
                and 0 <= self.core_refinement <= MAX_CORE_REFINEMENT):
            raise ValueError(f"SimConfig.core_refinement must be an integer in "
                             f"[0, {MAX_CORE_REFINEMENT}], got {self.core_refinement!r}")
        if self.shard_size < 1:
            raise ValueError(f"SimConfig.shard_size must be >= 1 cutouts, got {self.shard_size}")
        if self.psf_model == "pixelised" and not self.psf_file:
            raise ValueError("SimConfig.psf_model 'pixelised' needs psf_file (a FITS kernel)")
        if self.z_source_max <= self.z_lens_range[1]:
            raise ValueError("SimConfig.z_source_max must exceed the largest lens redshift")

    def _validate_negatives(self):
        unknown = sorted(set(self.negatives) - set(NEGATIVE_CLASSES))
        if unknown:
            raise ValueError(f"SimConfig.negatives: unknown class(es) {unknown}; valid classes "
                             f"are {NEGATIVE_CLASSES}")
        values = list(self.negatives.values())
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"SimConfig.negatives: fractions must be finite numbers >= 0, got "
                             f"{self.negatives}")
        if abs(sum(values) - 1.0) > 1e-6:
            raise ValueError(f"SimConfig.negatives: fractions must sum to 1, got {sum(values):.6g} "
                             f"for {self.negatives}; valid classes are {NEGATIVE_CLASSES}")

    def __hash__(self) -> int:  # ``negatives`` is a dict: hash the JSON record instead
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def negative_fractions(self) -> tuple[float, ...]:
        """Share of each class of NEGATIVE_CLASSES among non-lenses, in that order."""
        return tuple(float(self.negatives.get(name, 0.0)) for name in NEGATIVE_CLASSES)

    @property
    def lens_isophotes(self) -> bool:
        """Whether the central early type's isophotes depart from perfect ellipses."""
        return bool(self.lens_isophote_twist or self.lens_isophote_dq
                    or any(self.lens_isophote_a4_range))

    @property
    def band_names(self) -> tuple[str, ...]:
        return self.bands if self.bands is not None else get_survey(self.survey).band_names

    @property
    def reference(self) -> str:
        if self.reference_band is not None:
            return self.reference_band
        return "i" if "i" in self.band_names else self.band_names[len(self.band_names) // 2]

    @property
    def size(self) -> int:
        return self.stamp_size or get_survey(self.survey).stamp_size

    def to_dict(self) -> dict:
        """The fields as JSON types. Fields added after simulator version 1 (ADDED_FIELDS) are
        left out while at their defaults, so the record of a config that does not use them (its
        manifest, the runner's split key) is the same as before they existed."""
        record = json.loads(json.dumps(dataclasses.asdict(self)))
        for name, default in ADDED_FIELDS.items():
            if record[name] == default:
                del record[name]
        return record

    @classmethod
    def from_dict(cls, record: dict) -> SimConfig:
        """The config a record (``to_dict``) describes; a field added after version 1 that it
        lacks takes its version-1 value (ADDED_FIELDS), which may not be the field's default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ValueError(f"unknown SimConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**{**{name: value for name, value in ADDED_FIELDS.items() if name not in record},
                      **record})

    def replace(self, **changes) -> SimConfig:
        return dataclasses.replace(self, **changes)
