"""Real photometric-redshift splits (SDSS BOSS DR10, SDSS Main Galaxy Sample) and galaxy images
rendered from their photometry.

Catalogues are read only through the data registry (:mod:`lensbench.datasets.registry`). Quirks the
readers handle:

* BOSS DR10 (ANNZ examples): the header line uses ';' (``#F:MAG_U;F:MAGERR_U;...;D:Z``, with ANNZ
  type tags ``F:``/``D:``) while data rows are ','-separated; files overlap (same parent sample)
  and are de-duplicated on their photometry before splitting; u-band errors reach 10^4 mag.
* MGS (MLZ): whitespace columns whose header omits ``eu`` (19 numbers per row); the column list
  comes from ``SDSS_MGS.inputs`` (``zs,u,g,r,i,z,u-g,...,eu,eg,er,ei,ez,...``).

:func:`clean_catalogue` drops rows and says why (``{reason: count}``, stored in the split's
metadata): malformed rows, non-finite values, sentinel magnitudes (99, -99, <= 0, >= 50) or
errors (< 0, or exactly 99, 999, 9999), spectroscopic z outside (0, ``z_max``], errors above
``max_error`` mag in the ``error_bands`` (the u band of BOSS is mostly noise and is kept,
whatever its error), and duplicates. A split (train/validation/test, drawn by seed; the test
never overlaps the rest) is written once as ``.npz`` + ``manifest.json`` (sha256 of the npz and
of every source file) under the workdir and verified when read.

:func:`render_photoz_images` paints each catalogue galaxy as an elliptical Sersic profile whose
total flux in every band is its catalogue magnitude, convolved with the survey PSF, with the
survey's sky, Poisson and read noise (``lensbench.datasets.surveys``): the images carry the real
colour-redshift relation of the catalogue. Sizes and shapes are drawn from distributions that
depend on the magnitude only (never on z), so the images add no redshift information beyond
the photometry and the (noisy) morphology.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lensbench.datasets import registry
from lensbench.datasets.config import CORE_REFINEMENT
from lensbench.datasets.files import atomic_write_text
from lensbench.datasets.storage import arrays_sha256, sha256_file
from lensbench.datasets.typecheck import fits_type, short_repr, type_text

log = logging.getLogger(__name__)

LOADER_VERSION = 1
BANDS = ("u", "g", "r", "i", "z")
BOSS_PREFIX = "photoz_sdss_boss_dr10/"
MGS_PREFIX = "photoz_sdss_mgs/"
MGS_COLUMNS = ("zs", "u", "g", "r", "i", "z", "u-g", "g-r", "r-i", "i-z", "eu", "eg", "er", "ei",
               "ez", "eu-g", "eg-r", "er-i", "ei-z")
SENTINEL_MAG = (0.0, 50.0)  # magnitudes outside (lo, hi) are sentinels (99, -99, 0, -9999 ...)
SENTINEL_ERR = (99.0, 999.0, 9999.0)  # error values that mean "no measurement" (as do < 0)
ROLES = ("train", "val", "test")


# ----------------------------------------------------------------------------- readers
def _numeric_row(fields: list[str], n_columns: int) -> list[float] | None:
    """The fields of one table row as floats, or None (a malformed row) where their number is
    not ``n_columns`` or one is not a number."""
    if len(fields) != n_columns:
        return None
    try:
        return [float(f) for f in fields]
    except ValueError:
        return None


def read_annz_csv(path: str | os.PathLike) -> tuple[list[str], np.ndarray, int]:
    """An ANNZ catalogue: ``(columns, rows (n, C) float64, n_malformed)``.

    The header is the first line starting with '#', ';'-separated, with optional ``X:`` type tags
    (``#F:MAG_U;...;D:Z`` -> ``MAG_U, ..., Z``); data rows are ','-separated. Blank lines and
    further comment lines are skipped; rows with the wrong number of fields or a non-numeric field
    are counted as malformed, not read."""
    columns: list[str] | None = None
    rows, malformed = [], 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            text = line.strip()
            if not text:
                continue
            if text.startswith("#"):
                if columns is None:
                    sep = ";" if ";" in text else ","
                    columns = [c.strip().split(":", 1)[-1] for c in text[1:].split(sep)]
                continue
            if columns is None:
                raise ValueError(f"{path}: data before the '#' header line")
            row = _numeric_row(text.split(","), len(columns))
            if row is None:
                malformed += 1
            else:
                rows.append(row)
    if columns is None:
        raise ValueError(f"{path}: no '#' header line")
    array = np.asarray(rows, dtype=np.float64).reshape(-1, len(columns))
    return columns, array, malformed


def read_mlz_table(path: str | os.PathLike, columns: tuple[str, ...] = MGS_COLUMNS
                   ) -> tuple[list[str], np.ndarray, int]:
    """An MLZ whitespace table: ``(columns, rows, n_malformed)``. The file's own header is not
    trusted (it omits ``eu``); ``columns`` (from ``SDSS_MGS.inputs``) name the fields."""
    rows, malformed = [], 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            row = _numeric_row(text.split(), len(columns))
            if row is None:
                malformed += 1
            else:
                rows.append(row)
    return list(columns), np.asarray(rows, dtype=np.float64).reshape(-1, len(columns)), malformed


def mgs_columns_from_inputs(path: str | os.PathLike) -> tuple[str, ...]:
    """The ``Columns`` entry of an MLZ ``.inputs`` file."""
    for line in Path(path).read_text().splitlines():
        if line.strip().startswith("Columns") and ":" in line:
            value = line.split(":", 1)[1].split("#", 1)[0]
            return tuple(c.strip() for c in value.split(",") if c.strip())
    raise ValueError(f"{path}: no 'Columns :' line")


# ----------------------------------------------------------------------------- catalogues
@dataclass
class Catalogue:
    """Galaxies with ugriz magnitudes (AB), their errors and spectroscopic z."""

    mags: np.ndarray  # (n, 5)
    errs: np.ndarray  # (n, 5)
    z: np.ndarray  # (n,)
    origin: np.ndarray  # (n,) index into ``files``
    files: list[str]  # registry names
    drops: dict[str, int] = field(default_factory=dict)
    bands: tuple[str, ...] = BANDS

    def __len__(self) -> int:
        return len(self.z)

    def take(self, rows: np.ndarray) -> Catalogue:
        return Catalogue(self.mags[rows], self.errs[rows], self.z[rows], self.origin[rows],
                         self.files, dict(self.drops), self.bands)


def _add(drops: dict[str, int], reason: str, count: int) -> None:
    if count:
        drops[reason] = drops.get(reason, 0) + int(count)


CLEANING = {"max_error": 1.0, "error_bands": ("g", "r", "i", "z"), "z_max": 2.0}  # defaults


def drop_reasons(mags: np.ndarray, errs: np.ndarray, z: np.ndarray | None = None, *,
                 bands: tuple[str, ...] = BANDS, max_error: float = CLEANING["max_error"],
                 error_bands: tuple[str, ...] = CLEANING["error_bands"],
                 z_max: float = CLEANING["z_max"]) -> np.ndarray:
    """Why each row is dropped ("" for a kept row): the first reason that applies, in this
    order: non_finite, sentinel_magnitude, sentinel_error, spec_z_out_of_range (z <= 0 or
    z > z_max), huge_error (error > max_error mag in a band of ``error_bands``). Without ``z``
    (a catalogue to predict) the spectroscopic redshift is not checked."""
    reasons = np.full(len(mags), "", dtype=object)
    finite = np.isfinite(mags).all(1) & np.isfinite(errs).all(1)
    tests = [
        ("non_finite", ~(finite & np.isfinite(z)) if z is not None else ~finite),
        ("sentinel_magnitude", ((mags <= SENTINEL_MAG[0]) | (mags >= SENTINEL_MAG[1])).any(1)),
        ("sentinel_error", ((errs < 0) | np.isin(errs, SENTINEL_ERR)).any(1)),
    ]
    if z is not None:
        tests.append(("spec_z_out_of_range", (z <= 0) | (z > z_max)))
    picked = [bands.index(b) for b in error_bands if b in bands]
    with np.errstate(invalid="ignore"):
        tests.append(("huge_error", (errs[:, picked] > max_error).any(1)))
    for reason, bad in tests:
        reasons[bad & (reasons == "")] = reason
    return reasons


def clean_catalogue(mags: np.ndarray, errs: np.ndarray, z: np.ndarray, **clean
                    ) -> tuple[np.ndarray, dict[str, int]]:
    """``(keep mask, {reason: rows dropped})``; each dropped row is counted once, under the first
    reason that applies (:func:`drop_reasons`, which takes the same keywords)."""
    reasons = drop_reasons(mags, errs, z, **clean)
    drops: dict[str, int] = {}
    for reason in ("non_finite", "sentinel_magnitude", "sentinel_error", "spec_z_out_of_range",
                   "huge_error"):
        _add(drops, reason, int((reasons == reason).sum()))
    return reasons == "", drops


def deduplicate(mags: np.ndarray, errs: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct photometry row (magnitudes + errors),
    in their original order. Rows equal in photometry are one galaxy, whatever their z."""
    key = np.ascontiguousarray(np.hstack([mags, errs]))
    _, first = np.unique(key, axis=0, return_index=True)
    return np.sort(first)


def boss_files() -> list[str]:
    """Registered BOSS DR10 catalogue files (train/ and eval/ csv; knnErr/ has no spec-z)."""
    return sorted(n for n in registry.names(BOSS_PREFIX)
                  if n.endswith(".csv") and "/knnErr/" not in n)


def mgs_files() -> list[str]:
    return [MGS_PREFIX + "SDSS_MGS.train", MGS_PREFIX + "SDSS_MGS.test"]


def load_annz_catalogue(paths: list[Path], names: list[str], **clean) -> Catalogue:
    """Read, clean and de-duplicate ANNZ csv files (``paths``, registered as ``names``)."""
    mags, errs, zs, origin, drops = [], [], [], [], {}
    for number, path in enumerate(paths):
        columns, rows, malformed = read_annz_csv(path)
        _add(drops, "malformed_row", malformed)
        upper = [c.upper() for c in columns]
        try:
            m_idx = [upper.index(f"MAG_{b.upper()}") for b in BANDS]
            e_idx = [upper.index(f"MAGERR_{b.upper()}") for b in BANDS]
            z_idx = upper.index("Z")
        except ValueError:
            raise ValueError(f"{path}: expected columns MAG_<b>, MAGERR_<b> (b in ugriz) and Z; "
                             f"found {columns}") from None
        mags.append(rows[:, m_idx])
        errs.append(rows[:, e_idx])
        zs.append(rows[:, z_idx])
        origin.append(np.full(len(rows), number, dtype=np.int16))
    return _finish(np.vstack(mags), np.vstack(errs), np.concatenate(zs), np.concatenate(origin),
                   names, drops, clean)


def _finish(mags, errs, z, origin, names, drops, clean) -> Catalogue:
    keep, cleaned = clean_catalogue(mags, errs, z, **clean)
    for reason, count in cleaned.items():
        _add(drops, reason, count)
    mags, errs, z, origin = mags[keep], errs[keep], z[keep], origin[keep]
    first = deduplicate(mags, errs)
    _add(drops, "duplicate", len(z) - len(first))
    log.info("photo-z catalogue %s: kept %d rows, dropped %s", names, len(first), drops)
    return Catalogue(mags[first], errs[first], z[first], origin[first], list(names), drops)


def load_boss(**clean) -> Catalogue:
    """All registered BOSS DR10 files, cleaned and de-duplicated across files."""
    names = boss_files()
    return load_annz_catalogue([registry.fetch(n) for n in names], names, **clean)


def load_mgs_tables(paths: list[Path], names: list[str], columns: tuple[str, ...] = MGS_COLUMNS,
                    **clean) -> Catalogue:
    mags, errs, zs, origin, drops = [], [], [], [], {}
    for number, path in enumerate(paths):
        cols, rows, malformed = read_mlz_table(path, columns)
        _add(drops, "malformed_row", malformed)
        mags.append(rows[:, [cols.index(b) for b in BANDS]])
        errs.append(rows[:, [cols.index("e" + b) for b in BANDS]])
        zs.append(rows[:, cols.index("zs")])
        origin.append(np.full(len(rows), number, dtype=np.int16))
    return _finish(np.vstack(mags), np.vstack(errs), np.concatenate(zs), np.concatenate(origin),
                   names, drops, clean)


def load_mgs(**clean) -> Catalogue:
    """The MGS train and test tables (in that order, so a galaxy in both stays in train)."""
    names = mgs_files()
    columns = mgs_columns_from_inputs(registry.fetch(MGS_PREFIX + "SDSS_MGS.inputs"))
    return load_mgs_tables([registry.fetch(n) for n in names], names, columns, **clean)


# ----------------------------------------------------------------------------- splits
@dataclass
class PhotozSplit:
    """Train/validation/test catalogues of one real sample, with provenance."""

    name: str
    parts: dict[str, Catalogue]  # role -> catalogue
    meta: dict  # drops, counts, seed, fractions, data_files, hashes

    @property
    def data_files(self) -> dict[str, str]:
        return dict(self.meta["data_files"])

    def hash(self, role: str) -> str:
        return self.meta["role_hashes"][role]


def assign_roles(n: int, seed: int, fractions: tuple[float, float, float],
                 fixed_test: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Disjoint row indices per role, drawn by ``seed``. With ``fixed_test`` (a boolean mask) the
    test rows are those, and train/val are drawn from the rest (val share: fractions[1] of it)."""
    rng = np.random.default_rng(seed)
    if fixed_test is not None:
        test = np.flatnonzero(fixed_test)
        rest = rng.permutation(np.flatnonzero(~fixed_test))
        n_val = int(round(fractions[1] / (fractions[0] + fractions[1]) * len(rest)))
        return {"train": np.sort(rest[n_val:]), "val": np.sort(rest[:n_val]), "test": test}
    order = rng.permutation(n)
    n_test = int(round(fractions[2] * n))
    n_val = int(round(fractions[1] * n))
    return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
            "train": np.sort(order[n_test + n_val:])}


SAMPLES = {
    # name -> (loader, files, how the test set is chosen)
    "boss_dr10": (load_boss, boss_files, "random"),
    "sdss_mgs": (load_mgs, lambda: [*mgs_files(), MGS_PREFIX + "SDSS_MGS.inputs"], "file"),
}
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


def make_photoz_split(sample: str, seed: int, fractions=DEFAULT_FRACTIONS,
                      catalogue: Catalogue | None = None, files: list[str] | None = None
                      ) -> PhotozSplit:
    """Split a real sample. BOSS: train/val/test drawn by seed from the de-duplicated files.
    MGS: the published SDSS_MGS.test rows (minus those also in .train) are the test set, train and
    val are drawn by seed from SDSS_MGS.train."""
    if sample not in SAMPLES:
        raise KeyError(f"unknown photo-z sample {sample!r}; known: {', '.join(SAMPLES)}")
    loader, list_files, mode = SAMPLES[sample]
    catalogue = loader() if catalogue is None else catalogue
    files = list_files() if files is None else files
    fixed = None
    if mode == "file":
        test_file = next(i for i, f in enumerate(catalogue.files) if f.endswith(".test"))
        fixed = catalogue.origin == test_file
    roles = assign_roles(len(catalogue), seed, tuple(fractions), fixed)
    parts = {role: catalogue.take(rows) for role, rows in roles.items()}
    meta = {"sample": sample, "seed": int(seed), "fractions": list(fractions),
            "drops": dict(catalogue.drops), "counts": {r: len(p) for r, p in parts.items()},
            "n_kept": len(catalogue), "data_files": registry.file_hashes(files),
            "loader_version": LOADER_VERSION, "test_mode": mode}
    meta["role_hashes"] = {role: _arrays_hash(part) for role, part in parts.items()}
    return PhotozSplit(sample, parts, meta)


def _arrays_hash(part: Catalogue) -> str:
    return arrays_sha256(*(np.asarray(array, dtype=np.float64)
                           for array in (part.mags, part.errs, part.z)))


def split_key(sample: str, seed: int, fractions, data_files: dict[str, str]) -> str:
    payload = json.dumps({"sample": sample, "seed": int(seed), "fractions": list(fractions),
                          "files": data_files, "loader": LOADER_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def save_photoz_split(split: PhotozSplit, folder: Path) -> Path:
    """Write ``split.npz`` + ``manifest.json`` (written last, atomically: its presence marks a
    complete split)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for role, part in split.parts.items():
        arrays |= {f"{role}_mags": part.mags, f"{role}_errs": part.errs, f"{role}_z": part.z,
                   f"{role}_origin": part.origin}
    npz = folder / "split.npz"
    tmp = folder / "split.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, npz)
    manifest = {**split.meta, "files": list(split.parts["train"].files),
                "npz_sha256": sha256_file(npz), "created_by": "lensbench.datasets.photoz"}
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    return folder


# What load_photoz_split reads from a split's manifest.json, checked before it is used.
MANIFEST_FIELDS = {"npz_sha256": str, "sample": str, "files": list[str], "drops": dict[str, int]}


def load_photoz_split(folder: Path) -> PhotozSplit:
    """Read a saved split, verifying the npz's sha256 against the manifest (SplitError-like
    ValueError when stale or corrupt)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object, got {short_repr(manifest)}")
    for name, hint in MANIFEST_FIELDS.items():
        if fits_type(manifest.get(name), hint) is not True:
            raise ValueError(f"{path}: field {name!r} must be {type_text(hint)}, got "
                             f"{short_repr(manifest.get(name))}")
    npz = folder / "split.npz"
    actual = sha256_file(npz)
    if actual != manifest["npz_sha256"]:
        raise ValueError(f"{npz}: sha256 {actual} does not match its manifest "
                         f"({manifest['npz_sha256']}); delete {folder} to remake it")
    with np.load(npz) as data:
        parts = {role: Catalogue(data[f"{role}_mags"], data[f"{role}_errs"], data[f"{role}_z"],
                                 data[f"{role}_origin"], list(manifest["files"]),
                                 dict(manifest["drops"])) for role in ROLES}
    return PhotozSplit(manifest["sample"], parts, manifest)


def ensure_photoz_split(sample: str, workdir: Path, seed: int, fractions=DEFAULT_FRACTIONS
                        ) -> PhotozSplit:
    """The cached split of ``sample`` under ``workdir/splits/`` (keyed by the sha256 of the source
    files, seed, fractions and loader version), made on first use; the source files are
    verified by the registry whenever a split is made."""
    files = SAMPLES[sample][1]() if sample in SAMPLES else []
    if not files:
        raise KeyError(f"unknown photo-z sample {sample!r}; known: {', '.join(SAMPLES)}")
    hashes = registry.file_hashes(files)
    key = split_key(sample, seed, fractions, hashes)
    folder = Path(workdir) / "splits" / f"photoz-{sample}-{key}"
    if (folder / "manifest.json").exists():
        try:
            split = load_photoz_split(folder)
            if split.meta.get("data_files") == hashes:
                return split
        except (ValueError, KeyError, OSError) as error:
            log.warning("photo-z split %s is stale or corrupt (%s); remaking it", folder, error)
    split = make_photoz_split(sample, seed, fractions)
    log.info("photo-z split %s: %s rows per role, dropped %s", sample, split.meta["counts"],
             split.meta["drops"])
    save_photoz_split(split, folder)
    return split


# ----------------------------------------------------------------------------- images
@dataclass(frozen=True)
class ImageConfig:
    """How catalogue galaxies are painted. Defaults: DES g,r,i,z (0.263"/px; docs/references.md,
    "Survey presets"), the nearest preset to SDSS imaging that lensbench has (there is no SDSS
    preset)."""

    survey: str = "des"
    bands: tuple[str, ...] = ("g", "r", "i", "z")
    stamp_size: int = 24
    supersample: int = 2
    r_eff_median: float = 0.9  # arcsec at r = 19.5, ...
    r_eff_mag_slope: float = -0.12  # ... dex per magnitude fainter
    r_eff_scatter_dex: float = 0.15
    sersic_n_range: tuple[float, float] = (1.0, 4.0)
    q_range: tuple[float, float] = (0.4, 1.0)
    centre_sigma: float = 0.1  # arcsec
    # Sersic cores integrated as the simulator's (render.Grid.integrate_core; 0: sampled at
    # subpixel centres, as the photo-z runs made before 2026-12-07 did)
    core_refinement: int = CORE_REFINEMENT


# A model file asks for work, not code: its painting is bounded more tightly than a user's
# SimConfig (config.MAX_SUPERSAMPLE, MAX_CORE_REFINEMENT), because predict paints every galaxy
# it is given, so that a file cannot ask for hours per galaxy.
MODEL_FILE_MAX_SUPERSAMPLE = 8
MODEL_FILE_MAX_CORE_REFINEMENT = 5


def image_config_from(recorded, stamp_size: int, where: str) -> ImageConfig:
    """The :class:`ImageConfig` a saved model recorded (``dataclasses.asdict`` of it), checked
    field by field against its type hints, and its survey and stamp size (the model's own)."""
    from lensbench.datasets.surveys import survey_names
    from lensbench.datasets.typecheck import field_hints, fits_type, short_repr, type_text

    if not isinstance(recorded, dict):
        raise ValueError(f"{where}: expected a dict of ImageConfig fields, got "
                         f"{short_repr(recorded)}")
    hints = field_hints(ImageConfig)
    for key, value in recorded.items():
        if key not in hints:
            raise ValueError(f"{where}.{key}: not a field of ImageConfig (expected one of "
                             f"{', '.join(hints)})")
        if fits_type(value, hints[key]) is False:
            raise ValueError(f"{where}.{key}={short_repr(value)}: expected "
                             f"{type_text(hints[key])}")
    config = ImageConfig(**{key: tuple(value) if isinstance(value, list) else value
                            for key, value in recorded.items()})
    for key, low, high in (("supersample", 1, MODEL_FILE_MAX_SUPERSAMPLE),
                           ("core_refinement", 0, MODEL_FILE_MAX_CORE_REFINEMENT)):
        if not low <= getattr(config, key) <= high:
            raise ValueError(f"{where}.{key}={getattr(config, key)}: expected {low} to {high}")
    if config.survey not in survey_names():
        raise ValueError(f"{where}.survey={config.survey!r}: expected one of "
                         f"{', '.join(survey_names())}")
    if config.stamp_size != int(stamp_size):
        raise ValueError(f"{where}.stamp_size={config.stamp_size}: expected the model's "
                         f"stamp_size {int(stamp_size)}")
    return config


def render_photoz_images(mags: np.ndarray, catalogue_bands: tuple[str, ...], seed: int,
                         config: ImageConfig = ImageConfig(), batch: int = 512
                         ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(images (n, B, S, S) float32 in nanomaggies, sky-subtracted; truth)``.

    Each galaxy is an elliptical Sersic (``lensing.sersic_profile``) of total flux
    ``10^(-0.4 (m_b - 22.5))`` nanomaggies in band b (its catalogue magnitude), supersampled,
    its core integrated (``render.Grid.integrate_core``), convolved with the band's PSF
    (``psf.psf_kernel``), with Gaussian noise of variance source electrons + sky electrons +
    N_exp RN^2 (``surveys.Band``). r_eff is log-normal with a median that shrinks with the r
    magnitude; n, q, phi uniform. None of it depends on z."""
    import torch
    import torch.nn.functional as F
    from lensbench.datasets.lensing import sersic_flux_to_amplitude, sersic_profile
    from lensbench.datasets.psf import psf_kernel
    from lensbench.datasets.render import Grid
    from lensbench.datasets.surveys import get_survey

    survey = get_survey(config.survey).select(config.bands)
    columns = [catalogue_bands.index(b) for b in config.bands]
    mags = np.asarray(mags, dtype=np.float64)[:, columns]
    n, size, ss = len(mags), config.stamp_size, config.supersample
    rng = np.random.default_rng(seed)
    ref = mags[:, min(1, len(columns) - 1)]
    r_eff = config.r_eff_median * 10 ** (config.r_eff_mag_slope * (ref - 19.5)
                                         + config.r_eff_scatter_dex * rng.standard_normal(n))
    r_eff = np.clip(r_eff, 0.15, 4.0)
    sersic_n = rng.uniform(*config.sersic_n_range, n)
    q = rng.uniform(*config.q_range, n)
    phi = rng.uniform(0, np.pi, n)
    centre = rng.normal(0, config.centre_sigma, (n, 2))
    noise_seed = int(rng.integers(2**31))
    pixel = survey.pixel_scale
    grid = Grid.build(size, pixel, ss, torch.float32, torch.device("cpu"),
                      config.core_refinement)
    kernels = [torch.as_tensor(psf_kernel(survey.psf_model, band.psf_fwhm, pixel,
                                          survey.moffat_beta), dtype=torch.float32)
               for band in survey.bands]
    halves = [k.shape[-1] // 2 for k in kernels]
    pad = 2 * max(halves)
    kernel_ffts = [torch.fft.rfft2(kernel, s=(size + pad, size + pad)) for kernel in kernels]
    images = np.empty((n, len(columns), size, size), dtype=np.float32)
    generator = torch.Generator().manual_seed(noise_seed)
    for start in range(0, n, batch):
        sl = slice(start, min(n, start + batch))
        k = sl.stop - sl.start
        t = {name: torch.as_tensor(v[sl], dtype=torch.float32)[:, None, None] for name, v in
             (("r", r_eff), ("n", sersic_n), ("q", q), ("phi", phi),
              ("cx", centre[:, 0]), ("cy", centre[:, 1]))}
        unit = sersic_flux_to_amplitude(1.0, r_eff[sl], sersic_n[sl])
        amplitude = torch.as_tensor(unit, dtype=torch.float32)[:, None, None]
        def profile(x, y, t=t, amplitude=amplitude):
            return sersic_profile(x, y, amplitude, t["r"], t["n"], t["q"], t["phi"], t["cx"],
                                  t["cy"])

        shape = grid.integrate_core(profile(grid.x_fine[None], grid.y_fine[None]), profile,
                                    centre[sl, 0], centre[sl, 1])
        # Integrate over sub-pixels, then normalise to unit flux inside the stamp's light.
        shape = shape.reshape(k, size, ss, size, ss).mean(dim=(2, 4)) * (pixel ** 2)
        shape = shape / shape.sum(dim=(1, 2), keepdim=True).clamp(min=1e-12)
        spectrum = torch.fft.rfft2(F.pad(shape, (0, pad, 0, pad)))
        for b, band in enumerate(survey.bands):
            # Linear convolution by FFT (zero padding of the kernel's width), cropped back.
            blurred = torch.fft.irfft2(spectrum * kernel_ffts[b], s=(size + pad, size + pad))
            blurred = blurred[:, halves[b]:halves[b] + size, halves[b]:halves[b] + size]
            flux_nmgy = torch.as_tensor(10 ** (-0.4 * (mags[sl, b] - 22.5)),
                                        dtype=torch.float32)[:, None, None]
            electrons = blurred * flux_nmgy * band.electrons_per_nanomaggy
            variance = electrons.clamp(min=0) + band.background_sigma ** 2
            noisy = electrons + variance.sqrt() * torch.randn(electrons.shape, dtype=torch.float32,
                                                              generator=generator)
            images[sl, b] = (noisy / band.electrons_per_nanomaggy).numpy()
    truth = {"r_eff": r_eff, "sersic_n": sersic_n, "q": q, "phi": phi}
    return images, truth


def image_noise_nanomaggies(config: ImageConfig = ImageConfig()) -> np.ndarray:
    """Background sigma per pixel (nanomaggies) of each band: a scale for normalising images."""
    from lensbench.datasets.surveys import get_survey

    survey = get_survey(config.survey).select(config.bands)
    return np.array([b.background_sigma / b.electrons_per_nanomaggy for b in survey.bands])


def flux_to_mag(flux_nmgy: np.ndarray) -> np.ndarray:
    """AB magnitude of a flux in nanomaggies (NaN for non-positive flux)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux_nmgy > 0, 22.5 - 2.5 * np.log10(flux_nmgy), np.nan)


__all__ = ["BANDS", "Catalogue", "ImageConfig", "PhotozSplit", "assign_roles", "boss_files",
           "clean_catalogue", "deduplicate", "ensure_photoz_split", "flux_to_mag",
           "image_noise_nanomaggies", "load_annz_catalogue", "load_boss", "load_mgs",
           "load_mgs_tables", "make_photoz_split", "mgs_files", "read_annz_csv",
           "read_mlz_table", "render_photoz_images", "save_photoz_split", "load_photoz_split"]
