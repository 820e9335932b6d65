"""`bench scan`: score real survey cutouts with a saved finder and rank them.

A scan streams the cutouts in batches (only one batch of images per process is in memory,
however many cutouts there are), appends every scored batch to ``<out>.partial`` (flushed and
fsynced, so an interrupt loses at most the batch in flight) and bad cutouts (unreadable, wrong
shape, NaN or implausible pixels, see :data:`PIXEL_LIMIT_SIGMA`, or a non-finite score) to the
side file ``<out stem>.bad.csv`` with the reason: every score in the table is finite. A rerun
with the same model and cutouts skips every batch already in either file (a batch recorded only
in part is scored again whole; batches lie at fixed positions in the input, so a resumed scan
writes the same table as an uninterrupted one with the same batch size); the final ranked CSV
is written to a temporary file and renamed into place. A lock (``<out>.lock``) refuses a
second scan writing the same table at the same time.

Inputs (``cutouts``):

* a split directory (``manifest.json`` + HDF5 shards, :mod:`lensbench.datasets.storage`): one
  cutout per row; id = the ``object_id`` truth column, else the manifest's ``ids``, else the row;
* a folder of FITS cutouts, one file per object holding (B, H, W) (the layout of
  :func:`lensbench.datasets.readers.read_fits_folder` without a pattern), id = the file name;
* the Metcalf et al. (2019) layout (``image{SDSS_R,...,EUC_VIS}-<ID>.fits`` anywhere below;
  :func:`lensbench.datasets.readers.read_metcalf`), one file per band, masked pixels (100) to 0;
* prepared to the model's contract (:mod:`lensbench.datasets.prepare`: units, pixel scale,
  bands, stamp, noise padding; a record per cutout in ``<out stem>.prepared.csv``): FITS
  cutouts as multi-extension files or cubes, one FITS per band found with a ``{id}``/``{band}``
  pattern, or a manifest CSV (id, band, sci[, rms][, weight]) given as ``cutouts``.

The model is a model file (``model.lbmodel``, :mod:`lensbench.baselines.persistence`: any
saved finder, its contract giving bands, pixel scale and stamp) or a bare torch checkpoint.

The CSV has columns ``rank, id, score, spread, source``: ``score`` the calibrated lens
probability, ``spread`` the standard deviation of the committee members' scores (0 for one
net), ``source`` a locator of the pixels (a FITS path, band paths joined by ``;``, or
``<shard>.h5#<row>``) that :func:`read_locator` reads back (``bench inspect`` does).

Scale-out: with ``workers`` > 1 or a ``scheduler`` address the batches are Dask tasks on a
``distributed`` cluster (a LocalCluster by default). The model travels to the workers as
bytes; the cutouts must be readable by every worker at the same path (a shared file system).
Tasks are batches of the same ids as in a single-process scan and results are merged by score,
ties by input order, so both give the same table.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lensbench.datasets.files import atomic_write_csv, atomic_write_text, exclusive_lock
from lensbench.datasets.prepare import PREPARATION_COLUMNS
from lensbench.datasets.readers import (
    METCALF_FILE,
    METCALF_MASK_VALUE,
    METCALF_ORDER,
    metcalf_files,
)

COLUMNS = ("rank", "id", "score", "spread", "source")
BAD_COLUMNS = ("id", "source", "reason")
_PARTIAL_COLUMNS = ("index", "id", "score", "spread", "source")
# 2: prepared.csv records masked pixels, centre, sky, North; 3: and bands with sky not subtracted
STATE_FORMAT = "lensbench-scan/3"
_FITS = re.compile(r"\.fits?(\.gz|\.fz)?$", re.IGNORECASE)  # .fz: tile-compressed (fpack)


# A pixel brighter than this many training sky sigma (the per-band noise the checkpoint stores,
# deep.preprocess.Preprocessor) is not a measurement but a corrupt or wrongly scaled file: the
# brightest pixel a survey records is bounded by the detector's full well (~1e5-2e5 e-) over a
# sky noise of >~10 e- per exposure, under ~2e4 sigma, and coadding N <~ 1000 exposures raises
# that by sqrt(N) to under ~6e5 sigma (observed: the HST SLACS lens stamps peak at 3e2-3e3 sigma).
# 1e7 leaves a factor > 10 for a survey deeper than the training data. Such cutouts are refused
# (bad list), not scored with a flag: the network never saw anything like them, so their score is
# an extrapolation (a cutout of 1e30 everywhere scored 1.0, rank 1).
PIXEL_LIMIT_SIGMA = 1e7


class BadCutout(ValueError):
    """One cutout that cannot be scored (unreadable, wrong shape, NaN or absurd pixels, missing
    band)."""


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Item:
    """One cutout to score: its position in the input order, id and pixel locator; a cutout
    delivered as one file per band also has its ``files``: (band, sci, rms, weight, psf)
    paths."""

    index: int
    id: str
    source: str
    files: tuple[tuple[str, str, str | None, str | None, str | None], ...] = ()


def _sort_key(name: str):
    return (0, int(name), "") if re.fullmatch(r"[+-]?\d+", name) else (1, 0, name)


def _is_split(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


def list_items(cutouts: str | os.PathLike, bands: Iterable[str] | None = None, *,
               band_files: str | None = None, rms_files: str | None = None,
               weight_files: str | None = None, psf_files: str | None = None,
               split_bands_checked: bool = False, recursive: bool = False
               ) -> tuple[list[Item], str]:
    """Every cutout under ``cutouts`` in a fixed order, and the layout ("split", "fits",
    "metcalf", "band files" or "manifest"). ``bands``: the model's bands (with
    ``split_bands_checked``, as its contract declares them: a split must hold those bands in
    that order; a bare checkpoint's are only placeholders), which pick and order
    the Metcalf band files and the files of a cutout delivered one file per band: found with
    the ``band_files`` pattern (``{id}`` and ``{band}`` in a path relative to ``cutouts``; rms
    and weight maps and PSF images with ``rms_files`` / ``weight_files`` / ``psf_files``), or
    listed in a manifest CSV given as ``cutouts`` (columns id, band, sci and optionally rms,
    weight, psf; paths relative to it). A folder of FITS cutouts is read at its top level
    only, unless ``recursive`` (ids are then paths relative to it, "night2/obj7"): a folder
    beside the cutouts often holds their PSFs or weight maps, which must not be scored."""
    path = Path(cutouts).resolve()
    if band_files is not None:
        return _band_file_items(path, list(bands or ()), band_files, rms_files,
                                weight_files, psf_files), "band files"
    if path.is_file() and path.suffix.lower() == ".csv":
        return _manifest_items(path), "manifest"
    if _is_split(path):
        from lensbench.datasets.storage import load_split

        split = load_split(path, verify=True)  # its bytes as made: one read before scoring
        if split_bands_checked and tuple(split.bands) != tuple(bands or ()):
            raise ValueError(f"{path}: a split of bands {','.join(split.bands)}; the model "
                             f"takes {','.join(bands or ())} (in that order)")
        ids = _split_ids(split)
        items = []
        index = 0
        for shard in split.manifest["shards"]:
            file = str(path / shard["file"])
            for row in range(shard["n"]):
                items.append(Item(index, ids[index], f"{file}#{row}"))
                index += 1
        return items, "split"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: neither a split directory (manifest.json) nor a "
                                "folder of FITS cutouts")
    metcalf = metcalf_files(path)
    if metcalf:
        present = {b for files in metcalf.values() for b in files}
        wanted = [b for b in (bands or ()) if b in METCALF_ORDER]
        order = wanted or [b for b in METCALF_ORDER if b in present]
        items = []
        for k, oid in enumerate(sorted(metcalf, key=_sort_key)):
            files = metcalf[oid]
            # a missing band stays in the locator as '<band>?', reported as bad when read
            parts = [str(files[b]) if b in files else f"missing:{b}" for b in order]
            items.append(Item(k, oid, ";".join(parts)))
        return items, "metcalf"
    files = sorted(fits_files(path, recursive),
                   key=lambda f: tuple(map(_sort_key, _fits_id(f, path).split("/"))))
    if not files:
        below = "" if recursive or not (n := len(fits_files(path, True))) else \
            f"; {n} in its subfolders, which --recursive reads"
        raise FileNotFoundError(f"{path}: no FITS files (*.fits, *.fits.gz, *.fits.fz) and not "
                                f"a split{below}")
    return [Item(k, _fits_id(f, path), str(f)) for k, f in enumerate(files)], "fits"


def fits_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The FITS files in ``folder`` (and, ``recursive``, its subfolders; hidden ones skipped)."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return [f for f in found if f.is_file() and _FITS.search(f.name)
            and not any(part.startswith(".") for part in f.relative_to(folder).parts)]


def _fits_id(file: Path, folder: Path) -> str:
    return _FITS.sub("", file.relative_to(folder).as_posix())


def _pattern_regex(pattern: str, bands: list[str]) -> re.Pattern:
    if "{id}" not in pattern or "{band}" not in pattern:
        raise ValueError(f"--band-files {pattern!r}: the pattern needs {{id}} and {{band}}, e.g. "
                         "'{id}_{band}.fits'")
    parts = re.split(r"(\{id\}|\{band\})", pattern)
    regex = "".join("(?P<id>.+?)" if part == "{id}" else
                    f"(?P<band>{'|'.join(map(re.escape, bands))})" if part == "{band}" else
                    re.escape(part) for part in parts)
    return re.compile(regex)


def _band_file_items(root: Path, bands: list[str], pattern: str, rms: str | None,
                     weight: str | None, psf: str | None) -> list[Item]:
    """One item per id any file matching ``pattern`` has; every model band's paths are
    formatted from the patterns (a missing one is named when the cutout is read)."""
    if not root.is_dir():
        raise FileNotFoundError(f"--cutouts {root}: not a folder (the --band-files pattern is "
                                "relative to it)")
    regex = _pattern_regex(pattern, bands)
    ids = {match["id"] for f in root.rglob("*") if f.is_file()
           and (match := regex.fullmatch(f.relative_to(root).as_posix()))}
    if not ids:
        raise FileNotFoundError(f"{root}: no file matches --band-files {pattern!r} for the "
                                f"model's bands {bands}")

    def fill(template: str | None, oid: str, band: str) -> str | None:
        return None if template is None else str(root / template.format(id=oid, band=band))

    items = []
    for k, oid in enumerate(sorted(ids, key=_sort_key)):
        files = tuple((b, fill(pattern, oid, b), fill(rms, oid, b), fill(weight, oid, b),
                       fill(psf, oid, b)) for b in bands)
        items.append(Item(k, oid, ";".join(f[1] for f in files), files))
    return items


def _manifest_items(manifest: Path) -> list[Item]:
    """Items of a manifest CSV (columns id, band, sci; optional rms, weight, psf)."""
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("id", "band", "sci") if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{manifest}: no column {missing[0]!r} (a manifest has columns id, "
                             f"band, sci and optionally rms, weight, psf; got "
                             f"{reader.fieldnames})")
        rows = list(reader)
    per_id: dict[str, dict[str, tuple]] = {}
    for line, row in enumerate(rows, start=2):
        oid, band = row["id"].strip(), row["band"].strip()
        if not oid or not band or not row["sci"].strip():
            raise ValueError(f"{manifest}: line {line}: empty id, band or sci")
        if band in per_id.setdefault(oid, {}):
            raise ValueError(f"{manifest}: line {line}: a second {band} file for id {oid!r}")
        per_id[oid][band] = (band, *(_manifest_path(manifest, row, column)
                                     for column in ("sci", "rms", "weight", "psf")))
    return [Item(k, oid, ";".join(f[1] for f in per_id[oid].values()),
                 tuple(per_id[oid].values()))
            for k, oid in enumerate(sorted(per_id, key=_sort_key))]


def _manifest_path(manifest: Path, row: dict, column: str) -> str | None:
    value = (row.get(column) or "").strip()
    return str((manifest.parent / value).resolve()) if value else None


def _split_ids(split) -> list[str]:
    if "object_id" in split.truth:
        return [str(int(v)) for v in split.truth["object_id"]]
    ids = split.manifest.get("config", {}).get("ids")
    if isinstance(ids, list) and len(ids) == split.n:
        return [str(v) for v in ids]
    return [str(i) for i in range(split.n)]


def _read_fits_plane(path: str) -> tuple[np.ndarray, object]:
    """(the FITS file's image (:func:`lensbench.datasets.prepare.first_image`) as float32,
    its header); BadCutout if there is none or the file is unreadable."""
    from astropy.io import fits
    from lensbench.datasets.prepare import first_image

    try:
        with fits.open(path, memmap=False) as hdul:
            image = first_image(hdul)
            if image is not None:
                return np.asarray(image[0], dtype=np.float32), image[1]
    except Exception as error:  # a corrupt or truncated file is one bad cutout
        raise BadCutout(f"unreadable FITS ({type(error).__name__}: {error})") from None
    raise BadCutout("unreadable FITS (no image HDU with data)")


def read_locator(source: str, as_is=None) -> np.ndarray:
    """The (B, H, W) float32 pixels a ``source`` locator points at; BadCutout if unusable.

    ``file.h5#row`` reads a row of a split shard; ``a.fits;b.fits;...`` stacks one plane per
    band (Metcalf masked pixels, value 100, become 0); a single FITS path holds the cube.
    ``as_is``: the model's ModelInputs, for a cube scored as it is: a header that says other
    bands, units or pixel scale (:func:`lensbench.datasets.prepare.as_is_conflicts`) makes it a
    bad cutout, with --prepare as the remedy."""
    if (where := _h5_locator(source)) is not None:
        image = next(_read_shard_rows(where[0], [(Item(0, "", source), where[1])]))[1]
        if isinstance(image, Exception):
            raise image
    elif ";" in source or Path(source).name.lower().startswith("image") and METCALF_FILE.search(
            Path(source).name):
        planes = []
        for part in source.split(";"):
            if part.startswith("missing:"):
                raise BadCutout(f"missing band {part[len('missing:'):]}")
            plane = _read_fits_plane(part)[0]
            if plane.ndim == 3 and plane.shape[0] == 1:
                plane = plane[0]
            if plane.ndim != 2:
                raise BadCutout(f"{part}: shape {plane.shape}, expected one 2-D band plane")
            planes.append(plane)
        shapes = {p.shape for p in planes}
        if len(shapes) != 1:
            raise BadCutout(f"band planes of different shapes {sorted(shapes)}")
        image = np.stack(planes)
        image[image == METCALF_MASK_VALUE] = 0.0
    else:
        image, header = _read_fits_plane(source)
        if image.ndim == 2:
            image = image[None]
        if as_is is not None:
            from lensbench.datasets.prepare import as_is_conflicts

            if said := as_is_conflicts(header, as_is):
                raise BadCutout(f"its header says {'; '.join(said)}: pass --prepare to convert "
                                "it to the model's inputs")
    return image


def _h5_locator(source: str) -> tuple[str, int] | None:
    file, sep, row = source.rpartition("#")
    return (file, int(row)) if sep and file.endswith(".h5") and row.isdigit() else None


def _read_items(items: list[Item], as_is=None) -> Iterator[tuple[Item, np.ndarray | Exception]]:
    """(item, pixels or the exception reading them), in order. Rows of one split shard are read
    with one open file and one slice per batch, not one open per cutout. ``as_is``: see
    :func:`read_locator`."""
    k = 0
    while k < len(items):
        where = _h5_locator(items[k].source)
        if where is None:
            try:
                yield items[k], read_locator(items[k].source, as_is)
            except (BadCutout, OSError) as error:
                yield items[k], error
            k += 1
            continue
        group = [(items[k], where[1])]
        k += 1
        while k < len(items) and (nxt := _h5_locator(items[k].source)) and nxt[0] == where[0]:
            group.append((items[k], nxt[1]))
            k += 1
        yield from _read_shard_rows(where[0], group)


def _read_shard_rows(file: str, group: list[tuple[Item, int]]
                     ) -> Iterator[tuple[Item, np.ndarray | Exception]]:
    import h5py

    try:
        with h5py.File(file, "r") as f:
            images = f["images"]
            rows = [row for _, row in group]
            lo, hi = min(rows), max(rows) + 1
            if hi > images.shape[0]:
                raise BadCutout(f"row {hi - 1} beyond the {images.shape[0]} rows of {file}")
            if hi - lo <= 2 * len(rows):
                block = np.asarray(images[lo:hi], dtype=np.float32)
                pixels = [block[row - lo] for row in rows]
            else:
                pixels = [np.asarray(images[row], dtype=np.float32) for row in rows]
    except (BadCutout, OSError, KeyError) as error:
        reason = error if isinstance(error, BadCutout) else BadCutout(f"unreadable ({error})")
        for item, _ in group:
            yield item, reason
        return
    yield from zip((item for item, _ in group), pixels, strict=True)


def _check_pixel_range(image: np.ndarray, noise, mask_value: float | None) -> None:
    """BadCutout if a pixel (other than the mask value) is beyond ``PIXEL_LIMIT_SIGMA`` times
    its band's training sky sigma ``noise``."""
    sigma = np.asarray(noise, dtype=np.float64)[:, None, None]
    ratio = np.abs(image.astype(np.float64)) / sigma
    if mask_value is not None:
        ratio[image == mask_value] = 0.0
    beyond = ratio > PIXEL_LIMIT_SIGMA
    if beyond.any():
        band, row, col = np.unravel_index(np.argmax(ratio), ratio.shape)
        raise BadCutout(f"{int(beyond.sum())} pixel(s) beyond {PIXEL_LIMIT_SIGMA:.0e} training "
                        f"sky sigma (worst {float(image[band, row, col]):.3g} = "
                        f"{ratio[band, row, col]:.3g} sigma in band {band}): not a plausible "
                        "measurement")


@dataclass(frozen=True)
class Preparer:
    """Prepares each cutout to the model's inputs (:func:`lensbench.datasets.prepare.
    prepare_cutout`) with the scan's flags; travels to Dask workers with the batch."""

    model: object  # datasets.prepare.ModelInputs
    zero_point: float | None = None
    pixel_scale: float | None = None
    band_map: tuple[tuple[str, str], ...] = ()
    seed: int = 0

    def __call__(self, item: Item):
        """(the prepared (B, H, W) image, its Preparation record); PreparationError."""
        from lensbench.datasets.prepare import prepare_cutout

        cutout = ({band: {"sci": sci, "rms": rms, "weight": weight, "psf": psf}
                   for band, sci, rms, weight, psf in item.files} if item.files else item.source)
        return prepare_cutout(cutout, self.model, cutout_id=item.id,
                              zero_point=self.zero_point, pixel_scale=self.pixel_scale,
                              band_map=dict(self.band_map) or None, seed=self.seed)


def _prepared_items(items: list[Item], prepare: Preparer, records: list
                    ) -> Iterator[tuple[Item, np.ndarray | Exception]]:
    from lensbench.datasets.prepare import PreparationError

    for item in items:
        try:
            image, record = prepare(item)
        except (PreparationError, OSError) as error:
            yield item, BadCutout(str(error))
            continue
        records.append(record)
        yield item, image


def load_batch(items: list[Item], image_shape: tuple[int, ...], noise=None,
               mask_value: float | None = None, prepare: Preparer | None = None,
               records: list | None = None, as_is=None
               ) -> tuple[np.ndarray, list[Item], list[tuple[Item, str]]]:
    """(images (n, B, H, W) float32 of the good items, the good items, [(bad item, reason)]).
    ``noise``: the model's per-band training sky sigma, which sets the plausible pixel range
    (:data:`PIXEL_LIMIT_SIGMA`; pixels equal to ``mask_value`` are exempt); None checks no
    range. With ``prepare`` each cutout is prepared to the model's inputs first and what was
    done is appended to ``records``; without, ``as_is`` (the model's ModelInputs) checks the
    header of each FITS cube against them (:func:`read_locator`)."""
    good, bad, images = [], [], []
    records = [] if records is None else records
    read = _read_items(items, as_is) if prepare is None \
        else _prepared_items(items, prepare, records)
    for item, image in read:
        try:
            if isinstance(image, Exception):
                raise image
            if image.shape != tuple(image_shape):
                raise BadCutout(f"shape {image.shape}, the model expects {tuple(image_shape)}")
            finite = np.isfinite(image)
            if not finite.all():
                planes = ", ".join(map(str, np.flatnonzero(~finite.all(axis=(1, 2)))))
                raise BadCutout(f"{int((~finite).sum())} NaN/inf pixel(s) in plane(s) {planes}"
                                + ("" if prepare is not None else
                                   " (--prepare fills pixels without data with sky noise)"))
            if noise is not None:
                _check_pixel_range(image, noise, mask_value)
        except BadCutout as error:
            bad.append((item, str(error)))
            continue
        except OSError as error:
            bad.append((item, f"unreadable ({error})"))
            continue
        good.append(item)
        images.append(image)
    stack = (np.stack(images) if images
             else np.zeros((0, *image_shape), dtype=np.float32))
    return stack, good, bad


# --------------------------------------------------------------------------- model


def resolve_model(model: str, tracking_uri: str | None = None,
                  download_dir: str | os.PathLike | None = None) -> Path:
    """A model file or checkpoint: ``model`` itself when it is a file, else an MLflow run id
    whose model file artefact (``model.lbmodel``: any saved finder with its contract) is
    downloaded, or for a run that logged none its torch checkpoint
    (:func:`lensbench.bench.tracking.download_model` / ``download_checkpoint``)."""
    path = Path(model)
    if path.is_file():
        return path
    if re.fullmatch(r"[0-9a-fA-F]{32}", str(model)):
        from lensbench.bench.tracking import download_checkpoint, download_model

        try:
            return download_model(str(model), tracking_uri, download_dir)
        except ValueError as no_model:  # an older run logged only its checkpoint
            if "not found" in str(no_model):  # no such run: say that, not "no checkpoint"
                raise
        return download_checkpoint(str(model), tracking_uri, download_dir)
    raise FileNotFoundError(f"--model {model!r}: no such checkpoint file, and not an MLflow run "
                            "id (32 hex digits)")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_MODELS: dict[tuple, tuple] = {}  # per-process cache: (sha256, device) -> (method, contract)


def is_model_file(blob: bytes) -> bool:
    """A lensbench model file (baselines/persistence.py, a zip archive), not a bare torch
    checkpoint."""
    import io
    import zipfile

    if not blob.startswith(b"PK"):
        return False
    with contextlib.suppress(zipfile.BadZipFile), zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return "manifest.json" in archive.namelist()
    return False


def load_scan_model(blob: bytes, digest: str | None = None, name: str = "model",
                    device: str = "auto"):
    """(fitted method, its ModelContract or None) in the bytes of a model file (any saved
    finder: ``baselines.persistence.load_model``) or of a bare torch checkpoint, read from the
    file ``name`` (which errors name), a torch finder set to score on ``device``; loaded once
    per process (workers reuse it)."""
    digest = digest or sha256_bytes(blob)
    key = (digest, device)
    if key not in _MODELS:
        from lensbench.baselines.persistence import SUFFIX, load_model

        if is_model_file(blob) or str(name).endswith(SUFFIX):  # a damaged one is named as such
            method, contract = load_model(name, data=blob, device=device)
        else:
            from lensbench.deep.checkpoint import load_checkpoint

            method, contract = load_checkpoint(name, data=blob, device=device), None
        if contract is not None and contract.kind != "lens-finding":
            other = {"modeling": "bench predict --cutouts gives its lens-model parameters",
                     "photoz": "bench predict --catalog gives its redshifts"}.get(
                         contract.kind, "bench scan needs a lens finder")
            raise ValueError(f"{name}: a {contract.kind} model ({contract.method}), not a lens "
                             f"finder: {other}")
        if not callable(getattr(method, "predict_score", None)):
            raise ValueError(f"{name}: a {type(method).__name__} model predicts no lens score; "
                             "bench scan needs a lens finder")
        shape = (contract.stamp_shape if contract is not None and contract.stamp_shape
                 else getattr(method, "image_shape_", None))
        if shape is not None:
            check_model_runs([method.predict_score], np.zeros((1, *shape), np.float32), name)
        _MODELS.clear()  # one model per process at a time
        _MODELS[key] = (method, contract)
    return _MODELS[key]


def check_model_runs(predictions: Iterable[Callable], X: np.ndarray, name: str) -> None:
    """Run each of the model's ``predictions`` (the methods a tool will call) once on ``X``,
    an input of the model's own contract: a model file whose fitted state was edited (a number
    where an array belongs, an array of another shape) fails here, naming the file, instead of
    deep inside a scan. The state's values are decoded by their tags
    (baselines/persistence.py), not checked against each method's expectations: these calls
    are that check."""
    try:
        for predict in predictions:
            predict(X)
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as error:
        raise ValueError(f"{name}: its fitted state cannot score an input of its own contract "
                         f"({type(error).__name__}: {error})") from None


def model_inputs(method, contract, model_pixel_scale: float | None = None,
                 name: str = "model"):
    """The model's :class:`lensbench.datasets.prepare.ModelInputs`: from its contract, else
    from the checkpoint (bands, stamp) and ``model_pixel_scale`` (a bare checkpoint does not
    store its pixel scale); ValueError naming the model file ``name`` where neither says."""
    from lensbench.datasets.prepare import ModelInputs

    if contract is not None and contract.stamp_shape is not None:
        if (model_pixel_scale is not None and contract.pixel_scale is not None
                and abs(model_pixel_scale / contract.pixel_scale - 1) > 1e-6):
            raise ValueError(f"--model-pixel-scale {model_pixel_scale} contradicts the model's "
                             f"contract ({contract.pixel_scale}\"/pixel)")
        fwhm = (contract.preprocessing or {}).get("psf_fwhm_arcsec") or {}
        return ModelInputs(tuple(contract.bands), contract.pixel_scale or model_pixel_scale,
                           tuple(contract.stamp_shape[1:]),
                           tuple(float(fwhm[b]) for b in contract.bands)
                           if all(b in fwhm for b in contract.bands) else None)
    if not (hasattr(method, "bands_") and hasattr(method, "image_shape_")):
        raise ValueError(f"{name}: no contract (contract.json), and its "
                         f"{type(method).__name__} does not record its bands and stamp: what "
                         "input it takes is unknown")
    return ModelInputs(tuple(method.bands_), model_pixel_scale,
                       tuple(method.image_shape_[1:]))


def _as_is(method, contract):
    """The ModelInputs a cube scored as it is must agree with. A bare checkpoint's bands are
    placeholders and it has no pixel scale: only its units are checked."""
    from lensbench.datasets.prepare import ModelInputs

    if contract is not None and contract.stamp_shape is not None:
        return model_inputs(method, contract)
    return ModelInputs((), None, tuple(_image_shape(method, contract)[1:]))


def _image_shape(method, contract) -> tuple[int, ...]:
    if contract is not None and contract.stamp_shape is not None:
        return tuple(contract.stamp_shape)
    return tuple(method.image_shape_)


def score_batch(blob: bytes, digest: str, items: list[Item], num_threads: int | None = None,
                prepare: Preparer | None = None, device: str = "auto"):
    """Read (and with ``prepare``, prepare) and score one batch on ``device``: ([(index, id,
    score, spread, source)], [(bad item, reason)]), and with ``prepare`` the Preparation
    records as a third element. Runs in the scanning process or on a Dask worker."""
    import torch

    method, contract = load_scan_model(blob, digest, device=device)
    if num_threads:
        torch.set_num_threads(int(num_threads))
    preprocessor = getattr(method, "preprocessor_", None)
    records: list = []
    images, good, bad = load_batch(items, _image_shape(method, contract),
                                   getattr(preprocessor, "noise", None),
                                   getattr(preprocessor, "mask_value", None), prepare, records,
                                   as_is=None if prepare is not None else _as_is(method, contract))
    if not good:
        return ([], bad) if prepare is None else ([], bad, records)
    with torch.inference_mode():
        if hasattr(method, "predict_score_with_spread"):
            scores, spreads = method.predict_score_with_spread(images)
        else:  # one model: no committee spread
            scores = np.asarray(method.predict_score(images), dtype=float)
            spreads = np.zeros_like(scores)
    rows = []
    for it, score, spread in zip(good, scores, spreads, strict=True):
        score, spread = float(score), float(spread)
        if math.isfinite(score) and math.isfinite(spread):
            rows.append((it.index, it.id, score, spread, it.source))
        else:  # never ranked: NaN compares false with everything and scrambles the order
            bad.append((it, f"score is not finite (score {score}, spread {spread})"))
    return (rows, bad) if prepare is None else (rows, bad, records)


# --------------------------------------------------------------------------- resume files


@dataclass(frozen=True)
class ScanFiles:
    out: Path
    partial: Path
    bad: Path
    state: Path
    prepared: Path  # what was done to each cutout, when the scan prepares them

    @classmethod
    def for_output(cls, out: str | os.PathLike) -> ScanFiles:
        out = Path(out)
        stem = out.name[:-4] if out.name.lower().endswith(".csv") else out.name
        return cls(out, out.with_name(out.name + ".partial"),
                   out.with_name(stem + ".bad.csv"), out.with_name(out.name + ".scan.json"),
                   out.with_name(stem + ".prepared.csv"))


def _truncate_torn_line(path: Path) -> None:
    """Drop a last line cut short by an interrupt (no trailing newline)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


def _read_rows(path: Path, columns: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        try:
            if reader.fieldnames is None:
                return []
            if tuple(reader.fieldnames) != columns:
                raise ValueError(f"{path}: columns {reader.fieldnames}, expected "
                                 f"{list(columns)}")
            return list(reader)
        except (csv.Error, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a CSV lensbench wrote (line {reader.line_num}: "
                             f"{error}); pass --restart to discard it") from None


def _resumed_ids(files: ScanFiles, items: list[Item]) -> set[str]:
    """The ids an earlier, interrupted run of this scan recorded. Each row of the resume files
    is checked against this scan's cutouts (its index, id and source; a finite score), so that
    an edited or foreign file cannot put a row into the ranked table."""
    by_index = {item.index: item for item in items}
    done = set()
    for line, row in enumerate(_read_rows(files.partial, _PARTIAL_COLUMNS), start=2):
        try:
            item, score = by_index.get(int(row["index"])), float(row["score"])
            float(row["spread"])
        except (TypeError, ValueError):
            item, score = None, math.nan
        if item is None or (item.id, item.source) != (row["id"], row["source"]) \
                or not math.isfinite(score):
            raise ValueError(f"{files.partial}: line {line} is not a row this scan wrote "
                             f"({', '.join(f'{k}={v!r}' for k, v in row.items())}); pass "
                             "--restart to discard the unfinished scan")
        done.add(item.id)
    ids = {item.id for item in items}
    for line, row in enumerate(_read_rows(files.bad, BAD_COLUMNS), start=2):
        if row["id"] not in ids:
            raise ValueError(f"{files.bad}: line {line} names a cutout this scan does not have "
                             f"({row['id']!r}); pass --restart to discard the unfinished scan")
        done.add(row["id"])
    return done


class _Appender:
    """A CSV opened for appending, with a header when new; ``flush`` makes rows durable."""

    def __init__(self, path: Path, columns: tuple[str, ...]):
        _truncate_torn_line(path)
        new = not path.is_file() or path.stat().st_size == 0
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(columns)
            self.flush()

    def rows(self, rows: Iterable) -> None:
        self.writer.writerows(rows)

    def flush(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _check_state(files: ScanFiles, state: dict, restart: bool) -> None:
    """Resume only the same scan (same model and cutouts); ``restart`` discards old progress."""
    if restart:
        for path in (files.partial, files.bad, files.state, files.prepared):
            path.unlink(missing_ok=True)
    if files.state.is_file():
        try:
            old = json.loads(files.state.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        if not isinstance(old, dict) or old.get("format") != STATE_FORMAT:
            raise ValueError(f"{files.state}: not the state of a lensbench scan "
                             f"({STATE_FORMAT}); pass --restart to discard the unfinished scan")
        for key in ("model_sha256", "cutouts", "preparation"):
            if old.get(key) != state[key]:
                raise ValueError(
                    f"{files.partial} holds an unfinished scan of a different {key.split('_')[0]}"
                    f" ({old.get(key)!r}, now {state[key]!r}); pass --restart to discard it")
    elif files.out.is_file() and not restart:  # finished; perhaps graded since (inspect --merge)
        raise ValueError(f"{files.out} holds a finished scan (its bad cutouts in "
                         f"{files.bad.name}); pass --restart to scan again and replace it, or "
                         "choose another --out")
    elif found := [path for path in (files.partial, files.bad) if path.is_file()]:
        raise ValueError(f"{' and '.join(map(str, found))} exist(s) without "
                         f"{files.state.name}, so which scan made it is unknown; pass "
                         "--restart to discard it")
    atomic_write_text(files.state, json.dumps(state, indent=1))


def _format(value: float) -> str:
    return repr(float(value))


# --------------------------------------------------------------------------- scan


@dataclass
class ScanSummary:
    out: Path
    bad_file: Path
    n_total: int
    n_scored: int  # rows in the final table
    n_bad: int
    n_scored_now: int  # scored by this invocation (the rest came from a resumed scan)
    seconds: float
    layout: str
    complete: bool = True  # False: interrupted, ``out`` is the partial file
    bad_reasons: dict[str, int] = field(default_factory=dict)  # reason -> cutouts, commonest first
    sky_not_subtracted: int = 0  # prepared cutouts with a band's sky left in (prepare.py)

    def nothing_scored(self) -> str | None:
        """The error of a finished scan in which every cutout was bad (the reasons counted),
        else None."""
        if not self.complete or self.n_scored or not self.n_bad:
            return None
        reasons = list(self.bad_reasons.items())
        counted = "; ".join(f"{n} x {reason}" for reason, n in reasons[:3])
        more = f"; {len(reasons) - 3} other reason(s)" if len(reasons) > 3 else ""
        return (f"none of the {self.n_total} cutouts could be scored: {counted}{more} (all "
                f"listed in {self.bad_file})")

    @property
    def rate(self) -> float:
        return self.n_scored_now / self.seconds if self.seconds > 0 else float("nan")


def _batches(items: list[Item], batch_size: int, done: set[str] = frozenset()
             ) -> list[list[Item]]:
    """The batches still to score. Their bounds are fixed positions in the input (0,
    batch_size, 2 batch_size, ...), whatever was done before, because a network's float32 sums
    depend on which cutouts share its batch (scores move in the 7th digit): so a resumed scan
    scores every cutout beside the same ones as an uninterrupted scan and writes the same table.
    A batch the interrupted run recorded only in part is scored again whole."""
    batches = (items[start:start + batch_size] for start in range(0, len(items), batch_size))
    return [batch for batch in batches if any(item.id not in done for item in batch)]


def scan(model: str | os.PathLike, cutouts: str | os.PathLike, out: str | os.PathLike, *,
         batch_size: int = 512, workers: int = 1, scheduler: str | None = None,
         threads_per_worker: int = 1, tracking_uri: str | None = None, restart: bool = False,
         progress: bool = True, on_batch: Callable[[int], None] | None = None,
         prepare: bool = False, band_files: str | None = None, rms_files: str | None = None,
         weight_files: str | None = None, band_map: dict[str, str] | None = None,
         zero_point: float | None = None, pixel_scale: float | None = None,
         model_pixel_scale: float | None = None, noise_seed: int = 0,
         psf_files: str | None = None, device: str = "auto", recursive: bool = False
         ) -> ScanSummary:
    """Score every cutout under ``cutouts`` with the model file, checkpoint (or MLflow run)
    ``model`` and write the ranked table to ``out``; see the module docstring. ``on_batch(n)``
    is called after each batch of n cutouts is recorded (an exception there stops the scan,
    leaving it resumable). ``recursive``: a folder of FITS cutouts with its subfolders.
    ``device``: where a torch finder scores ("auto": CUDA when torch sees one, else the CPU; on
    Dask workers, each worker's own), whatever it was trained on.

    Preparation (``prepare``, implied by any of the arguments after it): every cutout is
    brought to the model's inputs by :func:`lensbench.datasets.prepare.prepare_cutout` (units,
    pixel scale, bands, stamp; ``band_files`` / ``rms_files`` / ``weight_files`` /
    ``psf_files`` patterns (the PSF's FWHM is recorded beside the model's) or a
    manifest CSV as ``cutouts`` for one file per band, ``band_map`` for HDUs or cube planes,
    ``zero_point`` and ``pixel_scale`` over the headers, ``model_pixel_scale`` for a bare
    checkpoint, ``noise_seed`` mixed with each id for the padding noise) and what was done is
    written to ``<out stem>.prepared.csv``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    files = ScanFiles.for_output(out)
    files.out.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(files.out.with_name(files.out.name + ".lock")):
        options = dict(band_files=band_files, rms_files=rms_files, weight_files=weight_files,
                       psf_files=psf_files, band_map=band_map, zero_point=zero_point,
                       pixel_scale=pixel_scale,
                       model_pixel_scale=model_pixel_scale, noise_seed=noise_seed)
        prepare = prepare or any(v not in (None, 0, {}) for v in options.values()) or (
            Path(cutouts).suffix.lower() == ".csv")
        return _scan(files, model, cutouts, batch_size=batch_size, workers=workers,
                     scheduler=scheduler, threads_per_worker=threads_per_worker,
                     tracking_uri=tracking_uri, restart=restart, progress=progress,
                     on_batch=on_batch, prepare=prepare, device=device, recursive=recursive,
                     **options)


def _exclusive(lock: Path):
    """Hold the lock ``lock`` beside the table (a second scan writing the same table would score
    cutouts twice and interleave rows): ValueError at once if another process holds it."""
    return exclusive_lock(lock, busy=f"another scan is writing {lock.with_suffix('')}")


def _scan(files: ScanFiles, model, cutouts, *, batch_size, workers, scheduler,
          threads_per_worker, tracking_uri, restart, progress, on_batch, prepare, band_files,
          rms_files, weight_files, psf_files, band_map, zero_point, pixel_scale, model_pixel_scale,
          noise_seed, device, recursive) -> ScanSummary:
    checkpoint = resolve_model(str(model), tracking_uri, download_dir=files.out.parent)
    blob = checkpoint.read_bytes()
    digest = sha256_bytes(blob)
    method, contract = load_scan_model(blob, digest, str(checkpoint), device)  # fail early
    inputs = model_inputs(method, contract, model_pixel_scale, str(checkpoint))
    items, layout = list_items(cutouts, bands=inputs.bands, band_files=band_files,
                               rms_files=rms_files, weight_files=weight_files,
                               psf_files=psf_files, split_bands_checked=contract is not None,
                               recursive=recursive)
    preparer = None
    if prepare:
        if layout in ("split", "metcalf"):
            raise ValueError(f"{cutouts}: a {layout} input is read as it is; preparation "
                             "(--prepare, --band-files, --bands, --zeropoint, --pixel-scale) is "
                             "for FITS cutouts")
        preparer = Preparer(inputs, zero_point, pixel_scale,
                            tuple(sorted((band_map or {}).items())), noise_seed)
    elif layout in ("band files", "manifest"):
        raise ValueError(f"{cutouts}: one file per band needs preparation")
    seen: dict[str, str] = {}
    for item in items:
        if item.id in seen:
            raise ValueError(f"{cutouts}: id {item.id!r} names two cutouts ({seen[item.id]} "
                             f"and {item.source}); ids must be unique to rank and resume")
        seen[item.id] = item.source
    del seen
    _check_state(files, {"format": STATE_FORMAT, "model": str(model),
                         "model_sha256": digest, "cutouts": str(Path(cutouts).resolve()),
                         "preparation": None if preparer is None else repr(preparer)},
                 restart)
    _truncate_torn_line(files.partial)
    _truncate_torn_line(files.bad)
    batches = _batches(items, batch_size, _resumed_ids(files, items))
    n_todo = sum(map(len, batches))
    scored_rows = bad_rows = 0
    start = time.perf_counter()
    partial, bad = _Appender(files.partial, _PARTIAL_COLUMNS), _Appender(files.bad, BAD_COLUMNS)
    prepared = None if preparer is None else _Appender(files.prepared, PREPARATION_COLUMNS)
    bar = _progress(len(items), len(items) - n_todo, progress)
    try:
        def record(rows, bad_items, records=()) -> None:
            nonlocal scored_rows, bad_rows
            if prepared is not None:  # first: a scored row always has its record
                prepared.rows([r.row()[c] for c in PREPARATION_COLUMNS] for r in records)
                prepared.flush()
            partial.rows((i, oid, _format(s), _format(d), src) for i, oid, s, d, src in rows)
            bad.rows((it.id, it.source, reason) for it, reason in bad_items)
            partial.flush()
            bad.flush()
            scored_rows += len(rows)
            bad_rows += len(bad_items)
            if bar is not None:
                bar.update(len(rows) + len(bad_items))

        if scheduler is None and workers == 1:
            for batch in batches:
                record(*score_batch(blob, digest, batch, prepare=preparer, device=device))
                if on_batch is not None:
                    on_batch(len(batch))
        else:
            _scan_dask(blob, digest, iter(batches), record, workers=workers, scheduler=scheduler,
                       threads_per_worker=threads_per_worker, on_batch=on_batch,
                       prepare=preparer, device=device)
    finally:
        partial.close()
        bad.close()
        if prepared is not None:
            prepared.close()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    rows = _read_rows(files.partial, _PARTIAL_COLUMNS)
    bads = _read_rows(files.bad, BAD_COLUMNS)
    n_bad = len({row["id"] for row in bads})
    n_scored = len({row["id"] for row in rows})
    complete = n_scored + n_bad >= len(items)
    prepared_records = finish(files, rows, bads, prepared=preparer is not None) \
        if complete else []
    reasons = Counter({row["id"]: _reason_without_source(row) for row in bads}.values())
    sky_left = sum(1 for record in prepared_records if record["sky_not_subtracted"])
    return ScanSummary(files.out if complete else files.partial, files.bad, len(items),
                       n_scored, n_bad, scored_rows, seconds, layout, complete,
                       dict(reasons.most_common()), sky_left)


def _reason_without_source(bad_row: dict) -> str:
    """A bad cutout's reason without its own file ("x.fits[plane 2]: ..."), so that one cause
    met by many cutouts is counted as one."""
    return re.sub(rf"^{re.escape(bad_row['source'])}(\[[^\]]*\])?: ", "", bad_row["reason"])


def finish(files: ScanFiles, rows: list[dict], bads: list[dict], prepared: bool = False
           ) -> list[dict]:
    """Write the ranked table (score descending, ties in input order), the sorted bad list
    and (``prepared``) the preparation records, one per id, atomically, then drop the resume
    files. Returns the preparation records written (none without ``prepared``)."""
    records: dict[str, dict] = {}
    if prepared:
        for row in _read_rows(files.prepared, PREPARATION_COLUMNS):
            records[row["id"]] = row  # a batch redone after an interrupt: its last record
        atomic_write_csv(files.prepared, PREPARATION_COLUMNS,
                         ([r[c] for c in PREPARATION_COLUMNS] for r in
                          sorted(records.values(), key=lambda r: _sort_key(r["id"]))))
    unique = {row["id"]: row for row in rows}  # a batch scored again whole: its last record
    bads = list({row["id"]: row for row in bads}.values())
    ranked = sorted(unique.values(), key=lambda r: (-float(r["score"]), int(r["index"])))
    atomic_write_csv(files.out, COLUMNS, ((k + 1, r["id"], r["score"], r["spread"], r["source"])
                                          for k, r in enumerate(ranked)))
    atomic_write_csv(files.bad, BAD_COLUMNS, ((r["id"], r["source"], r["reason"]) for r in
                                              sorted(bads, key=lambda r: _sort_key(r["id"]))))
    files.partial.unlink(missing_ok=True)
    files.state.unlink(missing_ok=True)
    return list(records.values())


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="scan", unit="cutout", file=sys.stderr,
                smoothing=0.1)


def _scan_dask(blob: bytes, digest: str, batches: Iterator[list[Item]], record, *,
               workers: int, scheduler: str | None, threads_per_worker: int,
               on_batch=None, prepare: Preparer | None = None, device: str = "auto") -> None:
    """Batches as tasks on a Dask cluster, at most 2 per worker thread in flight (so memory
    stays flat), recorded as they complete."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                               processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        slots = max(1, 2 * sum(client.nthreads().values()))
        model = client.scatter(blob, broadcast=True)
        pending = as_completed()
        sizes = {}

        def submit(batch) -> bool:
            future = client.submit(score_batch, model, digest, batch, threads_per_worker,
                                   prepare, device, pure=False)
            sizes[future.key] = len(batch)
            pending.add(future)
            return True

        in_flight = 0
        for batch in batches:
            submit(batch)
            in_flight += 1
            if in_flight >= slots:
                break
        for future in pending:
            record(*future.result())
            if on_batch is not None:
                on_batch(sizes.pop(future.key))
            future.release()
            batch = next(batches, None)
            if batch is not None:
                submit(batch)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------------- benchmark


def benchmark(n: int = 8192, worker_counts: tuple[int, ...] = (1, 2), batch_size: int = 512,
              seed: int = 0, workdir: str | os.PathLike | None = None) -> list[str]:
    """Cutouts/s of inference-only scans at 64x64x4 with the default ResNetFinder (width 16,
    depth 1, crop 64), on an HDF5 split of ``n`` random cutouts, for each worker count (1 =
    the single-process scan, k > 1 = a LocalCluster of k one-thread workers). Returns lines."""
    from lensbench.datasets.storage import SplitWriter
    from lensbench.deep.checkpoint import save_checkpoint
    from lensbench.deep.methods import ResNetFinder

    rng = np.random.default_rng(seed)
    lines = []
    with tempfile.TemporaryDirectory(prefix="lensbench-scan-bench-", dir=workdir) as tmp:
        tmp = Path(tmp)
        X = rng.normal(0.0, 1.0, (64, 4, 64, 64)).astype(np.float32)
        y = np.repeat([0, 1], 32)
        X[y == 1, :, 28:36, 28:36] += 5.0
        method = ResNetFinder(max_epochs=1, device="cpu", random_state=seed).fit(X, y)
        ckpt = save_checkpoint(method, tmp / "model.pt")
        split = tmp / "split"
        with SplitWriter(split, config={"kind": "scan-benchmark", "n": n}, seed=seed,
                         bands=["g", "r", "i", "z"], created_by="scan benchmark") as writer:
            for lo in range(0, n, 4096):
                hi = min(n, lo + 4096)
                writer.add_shard(rng.normal(0.0, 1.0, (hi - lo, 4, 64, 64)).astype(np.float32),
                                 {"object_id": np.arange(lo, hi, dtype=np.int64)})
        import torch

        lines.append(f"scan benchmark: {n} cutouts 64x64x4, ResNetFinder(width=16, depth=1, "
                     f"crop=64), batch {batch_size}, torch {torch.__version__}, "
                     f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f}")
        for workers in worker_counts:
            lines.append(timed_scan_line(ckpt, split, tmp / f"candidates-{workers}.csv",
                                         workers, batch_size))
    return lines


def _process_cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) of the calling process; runs on workers too."""
    times = os.times()
    return times.user + times.system


def timed_scan_line(ckpt: Path, split: Path, out: Path, workers: int, batch_size: int,
                    device: str = "cpu") -> str:
    """One benchmark line: steady wall-clock cutouts/s (first finished batch to last: no
    start-up, model loading or warm-up), end to end, and cutouts per CPU-second of the scoring
    processes (this process, or the Dask workers), which the machine's other load disturbs
    less than wall-clock time does. ``device``: where the model scores (bench perf gpu)."""
    stamps: list[tuple[float, int]] = []

    def on_batch(size: int) -> None:
        stamps.append((time.perf_counter(), size))

    if workers == 1:
        cpu = time.process_time()
        summary = scan(ckpt, split, out, batch_size=batch_size, progress=False,
                       on_batch=on_batch, device=device)
        cpu = time.process_time() - cpu
        mode = f"single process, {device}"
    else:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            client.run(lambda: __import__("torch").__version__)  # warm: torch imported
            before = client.run(_process_cpu_seconds)
            summary = scan(ckpt, split, out, batch_size=batch_size, progress=False,
                           scheduler=cluster.scheduler_address, on_batch=on_batch,
                           device=device)
            after = client.run(_process_cpu_seconds)
        cpu = sum(after[w] - before[w] for w in after)
        mode = f"LocalCluster, {workers} one-thread workers"
    steady = (f"{sum(size for _, size in stamps[1:]) / (stamps[-1][0] - stamps[0][0]):,.0f} "
              "cutouts/s steady" if len(stamps) > 1 else "no steady rate (one batch)")
    return (f"  {workers} worker(s) ({mode}): {steady}, "
            f"{summary.rate:,.0f} cutouts/s end to end ({summary.n_scored_now} in "
            f"{summary.seconds:.2f} s), {summary.n_scored_now / cpu:,.0f} cutouts per "
            "CPU-second of scoring")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lensbench.bench.tools.scan",
                                     description="scan throughput benchmark")
    parser.add_argument("--benchmark", action="store_true", required=True)
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args(argv)
    counts = tuple(int(w) for w in args.workers.split(","))
    for line in benchmark(args.n, counts, args.batch_size):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
