"""Readers for the cutouts users bring: FITS folders and the Metcalf et al. (2019) challenge layout.

Every reader returns :class:`Cutouts` -- unpackable as ``images, ids, labels, problems`` --
with images float32 (n, B, H, W), ids (str), labels (int8 array, or None without a label file)
and ``problems``: one line per file that was skipped, naming the file (wrong shape, NaN or inf
pixels, a missing band, an unreadable file, a label for an unknown ID, an object without a
label). A folder never fails for one bad file; with ``strict=True`` the first problem raises
ValueError instead.

Layouts:

* :func:`read_fits_folder`: one FITS file per object holding all bands (a 3-D image HDU
  (B, H, W), or 2-D for one band), or with ``pattern`` one file per band, e.g.
  ``"{id}_{band}.fits"``; labels from a CSV with columns ``id,label``.
* :func:`read_metcalf`: ``Public/Band{1..4}/imageSDSS_{R,I,G,U}-<ID>.fits`` (ground) or
  ``imageEUC_VIS-<ID>.fits`` (space) and ``classifications.csv`` (``ID, is_lens,
  Einstein_area, numb_pix_lensed_image, flux_lensed_image_in_sigma``). Masked pixels (value
  100) are set to 0 and counted per image in ``columns["n_masked"]``.

:func:`read_cutouts_to_split` writes either as a split (``lensbench.datasets.storage``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

METCALF_MASK_VALUE = 100.0
METCALF_BANDS = {"SDSS_U": "u", "SDSS_G": "g", "SDSS_R": "r", "SDSS_I": "i", "EUC_VIS": "VIS"}
METCALF_ORDER = ("u", "g", "r", "i", "VIS")
METCALF_COLUMNS = ("Einstein_area", "numb_pix_lensed_image", "flux_lensed_image_in_sigma")
# One band plane of one object: image<BAND>-<ID>.fits (Metcalf et al. 2019 layout).
METCALF_FILE = re.compile(r"image(SDSS_[UGRI]|EUC_VIS)-(\w+)\.fits(?:\.gz)?$", re.IGNORECASE)


@dataclass
class Cutouts:
    """Images (n, B, H, W) float32, their ids, labels (int8) or None, problems, and optional
    extra numeric truth columns (name -> (n,) array)."""

    images: np.ndarray
    ids: list[str]
    labels: np.ndarray | None
    problems: list[str]
    bands: list[str] = field(default_factory=list)
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # every file read (for provenance hashes)

    def __iter__(self) -> Iterator:
        return iter((self.images, self.ids, self.labels, self.problems))


class _Problems(list):
    def __init__(self, strict: bool):
        super().__init__()
        self.strict = strict

    def add(self, message: str) -> None:
        if self.strict:
            raise ValueError(message)
        self.append(message)


def _read_plane(path: Path) -> np.ndarray:
    """The FITS file's image (:func:`lensbench.datasets.prepare.first_image`) as float64."""
    from astropy.io import fits
    from lensbench.datasets.prepare import first_image

    with fits.open(path, memmap=False) as hdul:
        image = first_image(hdul)
        if image is None:
            raise ValueError("no image HDU with data")
        return np.asarray(image[0], dtype=np.float64)


def _normalise_id(value: str) -> str:
    value = str(value).strip()
    return str(int(value)) if re.fullmatch(r"[+-]?\d+", value) else value


def read_labels_csv(path: str | os.PathLike, id_column: str = "id",
                    label_column: str = "label") -> tuple[dict[str, int], dict[str, dict]]:
    """``({id: label}, {id: row})`` from a CSV with a header (column names matched
    case-insensitively, surrounding spaces ignored; lines starting with '#' skipped)."""
    path = Path(path)
    with open(path, newline="") as f:
        lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ValueError(f"{path}: empty label file") from None
    lower = [h.lower() for h in header]
    for name in (id_column, label_column):
        if name.lower() not in lower:
            raise ValueError(f"{path}: no column {name!r} (columns: {header})")
    i_id, i_label = lower.index(id_column.lower()), lower.index(label_column.lower())
    labels, rows = {}, {}
    for number, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}: line {number} has {len(row)} fields, expected "
                             f"{len(header)}")
        key = _normalise_id(row[i_id])
        try:
            labels[key] = int(float(row[i_label]))
        except ValueError:
            raise ValueError(f"{path}: line {number}: label {row[i_label]!r} is not a number"
                             ) from None
        rows[key] = {h: v.strip() for h, v in zip(header, row, strict=True)}
    return labels, rows


def _assemble(objects: dict[str, dict[str, Path]], bands: Sequence[str], problems: _Problems,
              shape: tuple[int, int] | None, mask_value: float | None
              ) -> tuple[list[str], list[np.ndarray], list[int], list[Path]]:
    """Read each object's band planes; skip (and report) the bad ones. Returns ids, arrays,
    masked-pixel counts and every file read."""
    planes: dict[str, list[np.ndarray]] = {}
    used: list[Path] = []
    for oid in sorted(objects, key=_sort_key):
        files = objects[oid]
        missing = [b for b in bands if b not in files]
        if missing:
            present = ", ".join(str(files[b]) for b in bands if b in files)
            problems.add(f"object {oid} ({present}): missing band(s) {missing}")
            continue
        arrays = []
        for band in bands:
            path = files[band]
            try:
                data = _read_plane(path)
            except Exception as e:  # a corrupt or non-FITS file is one problem, not a failure
                problems.add(f"{path}: unreadable FITS ({e})")
                break
            arrays.append(data)
        else:
            planes[oid] = arrays
            used.extend(files[b] for b in bands)
    # The expected shape: given, or the most common plane shape.
    if shape is None:
        counts = Counter(a.shape[-2:] for arrays in planes.values() for a in arrays)
        shape = counts.most_common(1)[0][0] if counts else None
    ids, images, masked = [], [], []
    for oid, arrays in planes.items():
        files = objects[oid]
        stack, ok = [], True
        for band, data in zip(bands, arrays, strict=True):
            path = files[band]
            if data.ndim == 3 and len(bands) == 1 and data.shape[0] == 1:
                data = data[0]
            if data.ndim != 2 or data.shape != tuple(shape):
                problems.add(f"{path}: shape {data.shape}, expected {tuple(shape)}")
                ok = False
                break
            if not np.all(np.isfinite(data)):
                problems.add(f"{path}: {int(np.sum(~np.isfinite(data)))} NaN/inf pixel(s)")
                ok = False
                break
            stack.append(data)
        if not ok:
            continue
        cube = np.stack(stack)
        n_masked = 0
        if mask_value is not None:
            mask = cube == mask_value
            n_masked = int(mask.sum())
            cube[mask] = 0.0
        ids.append(oid)
        images.append(cube)
        masked.append(n_masked)
    return ids, images, masked, used


def _sort_key(oid: str):
    return (0, int(oid), "") if re.fullmatch(r"[+-]?\d+", oid) else (1, 0, oid)


def _attach_labels(ids: list[str], images: list[np.ndarray], extra: list[int],
                   labels: dict[str, int] | None, label_file: Path | None,
                   problems: _Problems, seen: set[str]):
    """Keep the cutouts with a label. ``seen``: every ID found on disk (skipped ones too, whose
    problem is already reported), so only labels of IDs without any file are 'unknown'."""
    if labels is None:
        return ids, images, extra, None
    for oid in sorted(set(labels) - seen, key=_sort_key):
        problems.add(f"{label_file}: label for unknown ID {oid!r} (no cutout file)")
    keep = []
    for k, oid in enumerate(ids):
        if oid in labels:
            keep.append(k)
        else:
            problems.add(f"{label_file}: no label for ID {oid!r}; cutout skipped")
    return ([ids[k] for k in keep], [images[k] for k in keep], [extra[k] for k in keep],
            np.array([labels[ids[k]] for k in keep], dtype=np.int8))


def _stack(images: list[np.ndarray], n_bands: int) -> np.ndarray:
    if not images:
        return np.zeros((0, n_bands, 0, 0), dtype=np.float32)
    return np.stack(images).astype(np.float32)


def read_fits_folder(folder: str | os.PathLike, bands: Sequence[str], *,
                     pattern: str | None = None, labels_csv: str | os.PathLike | None = None,
                     shape: tuple[int, int] | None = None, strict: bool = False) -> Cutouts:
    """Read a folder of FITS cutouts.

    Without ``pattern`` every ``*.fits`` / ``*.fits.gz`` file is one object (id = file name
    without extension) whose first image HDU is (B, H, W) with the bands in the order of
    ``bands`` (or (H, W) for one band). With ``pattern`` (e.g. ``"{id}_{band}.fits"``) each
    file is one band of one object. ``shape`` (H, W): expected plane shape (default: the most
    common one). ``labels_csv``: columns ``id,label``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    bands = list(bands)
    problems = _Problems(strict)
    objects: dict[str, dict[str, Path]] = {}
    if pattern is None:
        from astropy.io import fits  # noqa: F401 - fail early if astropy is missing

        cubes: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.is_file() and re.search(r"\.fits?(\.gz)?$", path.name, re.IGNORECASE):
                cubes[re.sub(r"\.fits?(\.gz)?$", "", path.name, flags=re.IGNORECASE)] = path
        ids, images, used = [], [], []
        counts: Counter = Counter()
        loaded: dict[str, np.ndarray] = {}
        for oid in sorted(cubes, key=_sort_key):
            path = cubes[oid]
            try:
                data = _read_plane(path)
            except Exception as e:
                problems.add(f"{path}: unreadable FITS ({e})")
                continue
            if data.ndim == 2 and len(bands) == 1:
                data = data[None]
            if data.ndim != 3 or data.shape[0] != len(bands):
                problems.add(f"{path}: shape {data.shape}, expected ({len(bands)}, H, W) "
                             f"for bands {bands}")
                continue
            loaded[oid] = data
            counts[data.shape[1:]] += 1
        expected = tuple(shape) if shape is not None else (
            counts.most_common(1)[0][0] if counts else None)
        for oid, data in loaded.items():
            path = cubes[oid]
            if data.shape[1:] != expected:
                problems.add(f"{path}: shape {data.shape}, expected ({len(bands)}, "
                             f"{expected[0]}, {expected[1]})")
                continue
            if not np.all(np.isfinite(data)):
                problems.add(f"{path}: {int(np.sum(~np.isfinite(data)))} NaN/inf pixel(s)")
                continue
            ids.append(oid)
            images.append(data)
            used.append(path)
        masked = [0] * len(ids)
    else:
        if "{id}" not in pattern or "{band}" not in pattern:
            raise ValueError(f"pattern must contain {{id}} and {{band}}, got {pattern!r}")
        regex = re.compile("^" + re.escape(pattern).replace(r"\{id\}", r"(?P<id>.+?)").replace(
            r"\{band\}", "(?P<band>" + "|".join(re.escape(b) for b in bands) + ")") + "$")
        for path in sorted(folder.iterdir()):
            match = regex.match(path.name)
            if match and path.is_file():
                objects.setdefault(match["id"], {})[match["band"]] = path
        ids, images, masked, used = _assemble(objects, bands, problems, shape, None)
    labels = label_file = None
    if labels_csv is not None:
        label_file = Path(labels_csv)
        labels, _ = read_labels_csv(label_file)
        ids = [_normalise_id(i) for i in ids]
        used.append(label_file)
    seen = {_normalise_id(i) for i in (cubes if pattern is None else objects)}
    ids, images, masked, label_array = _attach_labels(ids, images, masked, labels, label_file,
                                                      problems, seen)
    return Cutouts(_stack(images, len(bands)), ids, label_array, list(problems), bands, {},
                   used)


def metcalf_files(root: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """The Metcalf et al. (2019) band files anywhere under ``root``: object id (integers without
    leading zeros) -> band name (u, g, r, i, VIS) -> path; files visited in sorted order."""
    objects: dict[str, dict[str, Path]] = {}
    for path in sorted(Path(root).rglob("image*")):
        match = METCALF_FILE.search(path.name)
        if match and path.is_file():
            band = METCALF_BANDS[match[1].upper()]
            objects.setdefault(_normalise_id(match[2]), {})[band] = path
    return objects


def read_metcalf(root: str | os.PathLike, *, bands: Sequence[str] | None = None,
                 strict: bool = False, mask_value: float | None = METCALF_MASK_VALUE
                 ) -> Cutouts:
    """Read the Metcalf et al. (2019) challenge layout under ``root`` (the folder holding
    ``Public/`` or ``Public/`` itself; any ``image*-<ID>.fits`` below it is found).

    ``bands``: subset/order of u, g, r, i (ground) or VIS (space); default all present, in
    that order. Labels and the catalogue columns come from ``classifications.csv`` (searched
    under ``root``) if present; its extra columns go to ``columns``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    problems = _Problems(strict)
    objects = metcalf_files(root)
    present = {b for files in objects.values() for b in files}
    if bands is None:
        bands = [b for b in METCALF_ORDER if b in present]
    bands = list(bands)
    if not bands:
        raise ValueError(f"{root}: no Metcalf image files (image{{SDSS_[UGRI],EUC_VIS}}-<ID>"
                         ".fits) found")
    ids, images, masked, used = _assemble(objects, bands, problems, None, mask_value)
    label_files = sorted(root.rglob("classifications.csv"))
    labels = rows = label_file = None
    if label_files:
        label_file = label_files[0]
        labels, rows = read_labels_csv(label_file, id_column="ID", label_column="is_lens")
        used.append(label_file)
    ids, images, masked, label_array = _attach_labels(ids, images, masked, labels, label_file,
                                                      problems, set(objects))
    columns = {"n_masked": np.array(masked, dtype=np.int64)}
    if rows is not None:
        for name in METCALF_COLUMNS:
            values = []
            for oid in ids:
                text = {k.lower(): v for k, v in rows[oid].items()}.get(name.lower(), "")
                try:
                    values.append(float(text))
                except ValueError:
                    values.append(np.nan)
            columns[name] = np.array(values, dtype=np.float64)
    numeric = all(re.fullmatch(r"[+-]?\d+", i) for i in ids)
    if numeric and ids:
        columns["object_id"] = np.array([int(i) for i in ids], dtype=np.int64)
    return Cutouts(_stack(images, len(bands)), ids, label_array, list(problems), bands, columns,
                   used)


def _digest_files(files: Sequence[Path], root: Path) -> str:
    """sha256 over (relative name, sha256) of every file: one hash for a whole input folder."""
    from lensbench.datasets.storage import sha256_file

    h = hashlib.sha256()
    for path in sorted(set(files)):
        try:
            name = str(Path(path).resolve().relative_to(root.resolve()))
        except ValueError:
            name = Path(path).name
        h.update(f"{name}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


def read_cutouts_to_split(source: str | os.PathLike, out_dir: str | os.PathLike, *,
                          layout: str = "fits", bands: Sequence[str] | None = None,
                          pattern: str | None = None,
                          labels_csv: str | os.PathLike | None = None, strict: bool = False,
                          seed: int = 0, shard_size: int = 1024,
                          created_by: str = "lensbench") -> tuple[Path, list[str]]:
    """Read cutouts (``layout`` "fits": :func:`read_fits_folder`, needs ``bands``; "metcalf":
    :func:`read_metcalf`) and write them as a split at ``out_dir``. Returns (path, problems).

    Truth columns: label (when labels exist), row (index in the reader's order), object_id
    (numeric ids) and the Metcalf catalogue columns. The manifest's ``data_files`` holds one
    entry, ``<folder name>`` -> a sha256 over every file read; non-numeric ids are kept in
    the config (``ids``)."""
    from lensbench.datasets.storage import SplitWriter

    source = Path(source)
    if layout == "fits":
        if bands is None:
            raise ValueError("layout 'fits' needs bands (the order of the planes)")
        cut = read_fits_folder(source, bands, pattern=pattern, labels_csv=labels_csv,
                               strict=strict)
    elif layout == "metcalf":
        cut = read_metcalf(source, bands=bands, strict=strict)
    else:
        raise ValueError(f"layout must be 'fits' or 'metcalf', got {layout!r}")
    if len(cut.ids) == 0:
        raise ValueError(f"{source}: no usable cutouts; problems: {cut.problems[:10]}")
    digest = _digest_files(cut.files, source)
    truth = {"row": np.arange(len(cut.ids), dtype=np.int64), **cut.columns}
    if cut.labels is not None:
        truth["label"] = cut.labels
    numeric = all(re.fullmatch(r"[+-]?\d+", i) for i in cut.ids)
    if numeric and "object_id" not in truth:
        truth["object_id"] = np.array([int(i) for i in cut.ids], dtype=np.int64)
    config = {"kind": "real-cutouts", "layout": layout, "source": source.name,
              "bands": list(cut.bands), "pattern": pattern, "input_sha256": digest,
              "n": len(cut.ids), "n_problems": len(cut.problems)}
    if not numeric:
        config["ids"] = list(cut.ids)
    json.dumps(config)  # fail early on anything odd
    out = Path(out_dir)
    with SplitWriter(out, config=config, seed=seed, bands=list(cut.bands),
                     created_by=created_by, data_files={source.name: digest}) as writer:
        for lo in range(0, len(cut.ids), shard_size):
            hi = min(lo + shard_size, len(cut.ids))
            writer.add_shard(cut.images[lo:hi], {k: v[lo:hi] for k, v in truth.items()})
    return out, list(cut.problems)
