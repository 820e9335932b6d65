"""``bench predict``: apply a saved model (baselines/persistence.py, a ``.lbmodel`` file or the
MLflow run that logged it) to a user's own data.

- A lens-model regressor (kind "modeling") on real cutouts (:func:`predict_cutouts`): the
  cutouts are listed and read as ``bench scan`` reads them (a folder of FITS cutouts, one file
  per band by pattern, a manifest CSV, a split directory) and, when asked or needed, prepared
  to the model's contract (units, pixel scale, bands, stamp: datasets/prepare.py, each cutout's
  record in ``<stem>.prepared.csv``). Written: ``OUT`` with ``id`` and, per target,
  the predicted mean and its standard deviation ``<target>_sigma`` (empty when the method has
  no uncertainty), x and y from the cutout's own centre, and, for a cutout with a celestial
  WCS, the lens model on the sky (:func:`sky_columns`: the centre's east and north offsets,
  the position angles of the ellipticity and the shear, with sigmas) and ``outside_training``
  (the parameters predicted beyond their training range, the contract's ``target_ranges``);
  unreadable or unusable cutouts in ``<stem>.bad.csv`` with the reason.
- A photo-z model (kind "photoz") on a catalogue (:func:`predict_catalogue`, a CSV or FITS
  table): the model's bands are mapped to columns (``u=MAG_U,...,err_u=MAGERR_U,...``;
  optionally ``id=`` and the spectroscopic redshift ``z_spec=``), rows are cleaned as the suite
  cleaned its split (``datasets.photoz.drop_reasons`` with the cleaning the contract records;
  the spec-z range only when ``z_spec`` is mapped; no de-duplication: every galaxy asked about
  is answered), and written: ``OUT`` with ``row`` (0-based, in the input table), ``id``,
  ``z_phot``, ``z_phot_sigma`` (the square root of ``predict_variance``, empty when the method
  has none) and ``outside_training`` (the bands whose magnitude, ``g``, or error, ``err_g``,
  lies beyond the training set's range);
  ``<stem>.dropped.csv`` with each dropped row and its reason; ``<stem>.pdf.csv`` with p(z) on
  the method's grid (one column per grid value, ``baselines.photoz.PDF_GRID``) and the same as a
  qp ensemble in ``<stem>.pdf.hdf5`` when the method has ``predict_pdf``; with ``z_spec``
  mapped, the suite's scalar metrics in ``<stem>.metrics.json``.

Every file is written to a temporary file and renamed: an interrupted run leaves no torn table.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lensbench.datasets.files import atomic_open, atomic_path, atomic_write_csv, atomic_write_text

FITS_TABLE = (".fits", ".fit", ".fits.gz", ".fit.gz")


@dataclass
class PredictSummary:
    out: Path
    n_total: int
    n_predicted: int
    n_skipped: int  # bad cutouts or dropped catalogue rows
    files: dict[str, Path] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # why rows were skipped, commonest first
    metrics: dict[str, float] = field(default_factory=dict)
    layout: str = ""  # of the cutouts (bench.tools.scan.list_items); "" for a catalogue
    # galaxies with a magnitude or error beyond the training set's; cutouts with a parameter
    # predicted beyond its training range
    outside_training: int = 0
    sky_not_subtracted: int = 0  # prepared cutouts with a band's sky left in (prepare.py)
    with_spec_z: int | None = None  # predicted galaxies with a usable spec-z (metrics.json's)


def stem_of(out: Path) -> str:
    return out.name[:-4] if out.name.lower().endswith(".csv") else out.name


def _number(value) -> str:
    """A float as Python writes it back exactly (repr), empty for NaN or None."""
    return "" if value is None or not np.isfinite(value) else repr(float(value))


def _counted(reasons: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def open_model(model: str | os.PathLike, kind: str, tracking_uri: str | None = None,
               download_dir: str | os.PathLike | None = None, device: str = "auto"):
    """(method, contract) of the model file ``model`` (or of the MLflow run id whose
    ``model.lbmodel`` artefact is downloaded), which must be a ``kind`` model; a torch model
    scores on ``device`` (baselines.persistence.placed_params)."""
    from lensbench.baselines.persistence import load_model

    path = Path(model)
    if not path.is_file():
        if not re.fullmatch(r"[0-9a-fA-F]{32}", str(model)):
            raise FileNotFoundError(f"--model {model!r}: no such model file, and not an MLflow "
                                    f"run id (32 hex digits)")
        from lensbench.bench.tracking import download_model

        path = download_model(str(model), tracking_uri, download_dir)
    method, contract = load_model(path, device=device)
    if contract is None:
        raise ValueError(f"{path}: the model file has no contract.json: it does not say what "
                         f"inputs it takes")
    if contract.kind != kind:
        wanted = {"modeling": "--cutouts takes a lens-model regressor",
                  "photoz": "--catalog takes a photo-z model"}[kind]
        hint = " (lens finders rank cutouts with bench scan)" \
            if contract.kind == "lens-finding" else ""
        raise ValueError(f"{path}: a {contract.kind} model ({contract.method}); {wanted}{hint}")
    return method, contract


# --------------------------------------------------------------------------- cutouts


def predict_cutouts(model: str | os.PathLike, cutouts: str | os.PathLike,
                    out: str | os.PathLike, *, tracking_uri: str | None = None,
                    batch_size: int = 256, prepare: bool = False, band_files: str | None = None,
                    rms_files: str | None = None, weight_files: str | None = None,
                    band_map: dict[str, str] | None = None, zero_point: float | None = None,
                    pixel_scale: float | None = None, noise_seed: int = 0,
                    device: str = "auto", recursive: bool = False) -> PredictSummary:
    """Predict the lens-model parameters of every cutout under ``cutouts`` with the saved
    regressor ``model`` on ``device``; the preparation arguments are those of ``bench scan``
    (any of them, or a manifest CSV as ``cutouts``, turns preparation on)."""
    from lensbench.bench.suites.modeling import predict
    from lensbench.bench.tools.scan import (
        Preparer,
        check_model_runs,
        list_items,
        load_batch,
        model_inputs,
    )

    out = Path(out)
    method, contract = open_model(model, "modeling", tracking_uri, out.parent, device)
    check_model_runs([lambda X: predict(method, X)],  # one blank stamp, before any cutout is read
                     np.zeros((1, *contract.stamp_shape), np.float32), str(model))
    prepare = prepare or any(v not in (None, 0, {}) for v in (
        band_files, rms_files, weight_files, band_map, zero_point, pixel_scale, noise_seed)) \
        or Path(cutouts).suffix.lower() == ".csv"
    items, layout = list_items(cutouts, contract.bands, band_files=band_files,
                               rms_files=rms_files, weight_files=weight_files,
                               recursive=recursive)
    inputs = model_inputs(method, contract)
    preparer = Preparer(inputs, zero_point, pixel_scale, tuple((band_map or {}).items()),
                        noise_seed) if prepare else None
    targets = list(contract.targets)
    on_sky_names = sky_columns(targets)
    # a network's training sky sigma sets the plausible pixel range, as in bench scan
    preprocessor = getattr(method, "preprocessor_", None)
    rows, bad, records = [], [], []
    for start in range(0, len(items), batch_size):
        batch_records: list = []  # this batch's preparation, looked up by id below
        images, good, rejected = load_batch(items[start:start + batch_size],
                                            contract.stamp_shape,
                                            getattr(preprocessor, "noise", None),
                                            getattr(preprocessor, "mask_value", None),
                                            prepare=preparer, records=batch_records,
                                            as_is=None if preparer else inputs)
        records += batch_records
        bad += [(item.id, reason) for item, reason in rejected]
        if not good:
            continue
        mean, variance = predict(method, images)
        sigma = np.sqrt(variance) if variance is not None else np.full_like(mean, np.nan)
        # the targets predicted beyond the training set's range (none for a model saved
        # without target_ranges): a network extrapolates there, and its sigma does not say so
        outside = _beyond_ranges(mean, targets, contract.target_ranges)
        _from_cutout_centre(mean, good, batch_records, targets, contract.pixel_scale)
        on_sky = _on_the_sky(mean, sigma, good, batch_records, targets)
        for k, item in enumerate(good):
            rows.append([item.id, *(value for t in range(len(targets)) for value in (
                _number(mean[k, t]), _number(sigma[k, t]))),
                *map(_number, on_sky[k]), outside[k]])
    stem = stem_of(out)
    files = {"out": atomic_write_csv(out, ["id", *(name for t in targets
                                                   for name in (t, f"{t}_sigma")),
                                           *on_sky_names, "outside_training"], rows)}
    files["bad"] = atomic_write_csv(out.with_name(stem + ".bad.csv"), ["id", "reason"], bad)
    if records:
        columns = list(records[0].row())
        files["prepared"] = atomic_write_csv(out.with_name(stem + SIDE_FILES["prepared"]), columns,
                                             ([r.row()[c] for c in columns] for r in records))
    _remove_stale(out, files, ("prepared",))
    summary = PredictSummary(out, len(items), len(rows), len(bad), files,
                             _counted(reason for _, reason in bad), layout=layout)
    summary.outside_training = sum(1 for row in rows if row[-1])
    summary.sky_not_subtracted = sum(1 for record in records if record.sky_not_subtracted)
    return summary


CATALOGUE_CHUNK = 20_000  # galaxies predicted and written at a time by bench predict --catalog
# The files beside --out that a command writes only sometimes, by their name in ``files``.
SIDE_FILES = {"prepared": ".prepared.csv", "pdf": ".pdf.csv", "pdf_qp": ".pdf.hdf5",
              "metrics": ".metrics.json"}


class _QpWriter:
    """``path``: the p(z) of ``n`` galaxies as a qp ensemble (``qp.interp`` on ``PDF_GRID``,
    ancillary ``row``, ``id``, ``z_phot``), the file RAIL's estimators write and
    ``qp.read(path)`` reads; written chunk by chunk through qp's own chunked HDF5 writer, to a
    temporary file renamed on success."""

    def __init__(self, path: Path, n: int):
        self.path, self.n = Path(path), n
        self._groups = self._file = None

    def __enter__(self):
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        return self

    def write(self, start: int, pdf: np.ndarray, ancil: dict) -> None:
        import qp
        from lensbench.baselines.photoz import PDF_GRID

        chunk = qp.Ensemble(qp.interp, data={"xvals": PDF_GRID, "yvals": pdf})
        chunk.set_ancil({"row": np.asarray(ancil["row"], dtype=np.int64),
                         "id": np.array([str(i).encode() for i in ancil["id"]], dtype="S"),
                         "z_phot": np.asarray(ancil["z_phot"], dtype=np.float64)})
        if self._groups is None:
            self._groups, self._file = chunk.initializeHdf5Write(str(self._tmp), self.n)
        chunk.writeHdf5Chunk(self._groups, start, start + len(pdf))
        self._last = chunk
        # A qp ensemble lives in reference cycles: uncollected, one per chunk piled up to 2.4 GB
        # in a 600,000-galaxy run (peak RSS, measured); collected here it stays one chunk's.
        gc.collect()

    def __exit__(self, *error):
        if self._file is not None:
            self._last.finalizeHdf5Write(self._file)
        return self._atomic.__exit__(*error)


def _remove_stale(out: Path, files: dict[str, Path], optional: tuple[str, ...]) -> None:
    """Removes the ``optional`` side files of ``out`` this run did not write: an earlier run's
    (another catalogue's metrics, another model's p(z)) must not pass for this one's."""
    for name in optional:
        if name not in files:
            out.with_name(stem_of(out) + SIDE_FILES[name]).unlink(missing_ok=True)


def _from_cutout_centre(mean: np.ndarray, good: list, records: list, targets: list[str],
                        pixel_scale: float | None) -> None:
    """Positions (x, y: arcsec from the stamp's centre) made relative to each cutout's own
    centre, which preparation puts half a pixel off the stamp's when their sides differ in
    parity (datasets.prepare.Preparation.centre_dx/dy): the catalogue position the cutout was
    cut around is the user's origin, not lensbench's stamp."""
    if not records or pixel_scale is None:
        return
    shifts = {record.id: (record.centre_dx, record.centre_dy) for record in records}
    for axis, name in enumerate(("x", "y")):
        if name in targets:
            column = targets.index(name)
            for k, item in enumerate(good):
                mean[k, column] -= shifts[item.id][axis] * pixel_scale


SPIN_TWO = (("e1", "e2", "pa"), ("gamma1", "gamma2", "shear_pa"))  # (c1, c2, its sky angle)


def sky_columns(targets: list[str]) -> tuple[str, ...]:
    """The columns of the lens model on the sky that a regressor of ``targets`` has: the
    centre's offsets (east, north) and the position angles of the ellipticity and the shear."""
    names = ["east", "east_sigma", "north", "north_sigma"] if {"x", "y"} <= set(targets) else []
    for c1, c2, name in SPIN_TWO:
        if {c1, c2} <= set(targets):
            names += [name, f"{name}_sigma"]
    return tuple(names)


def _on_the_sky(mean: np.ndarray, sigma: np.ndarray, good: list, records: list,
                targets: list[str]) -> np.ndarray:
    """Per cutout, the :func:`sky_columns` through its WCS: the centre (x, y) as east (dRA
    cos Dec) and north offsets in arcsec from the cutout's centre, and the angles of (e1, e2)
    and (gamma1, gamma2) as position angles East of North in degrees, with their sigmas (the
    two components taken as independent); NaN where the cutout has no celestial WCS.
    Preparation records North and the parity; x, y, e1, ... are in the stamp's grid, which it
    does not rotate."""
    names = sky_columns(targets)
    out = np.full((len(good), len(names)), np.nan)
    turned = {r.id: (r.north_angle, r.east_left == "True") for r in records
              if np.isfinite(r.north_angle)}
    column = {name: k for k, name in enumerate(targets)}
    for k, item in enumerate(good):
        if item.id not in turned:
            continue
        angle, east_left = turned[item.id]
        a = np.radians(angle)
        north = np.array([np.sin(a), np.cos(a)])  # unit steps in (x, y)
        east = np.array([-north[1], north[0]]) if east_left else np.array([north[1], -north[0]])
        values = []
        if "east" in names:
            position = mean[k, [column["x"], column["y"]]]
            error = sigma[k, [column["x"], column["y"]]]
            values += [position @ east, np.hypot(*(error * east)),
                       position @ north, np.hypot(*(error * north))]
        for c1, c2, _ in SPIN_TWO:
            if c1 in column and c2 in column:
                values += _position_angle(mean[k, column[c1]], mean[k, column[c2]],
                                          sigma[k, column[c1]], sigma[k, column[c2]],
                                          north, east)
        out[k] = values
    return out


# The standard deviation of an axis spread evenly over 180 degrees: a position angle with a
# larger (linearly propagated) sigma is undetermined, and its sigma is given as this.
UNDETERMINED_ANGLE_SIGMA = 180.0 / math.sqrt(12.0)


def _position_angle(c1: float, c2: float, s1: float, s2: float, north: np.ndarray,
                    east: np.ndarray) -> tuple[float, float]:
    """(degrees East of North in [0, 180), its sigma) of the axis of a spin-2 quantity
    (c1, c2) = |c| (cos 2 phi, sin 2 phi), phi counter-clockwise from +x (docs/references.md,
    "Lens model"), with sigmas s1, s2 of independent components; the sigma is at most
    UNDETERMINED_ANGLE_SIGMA (|c| below its own sigma: the linear propagation fails there)."""
    phi = 0.5 * np.arctan2(c2, c1)
    axis = np.array([np.cos(phi), np.sin(phi)])
    angle = np.degrees(np.arctan2(axis @ east, axis @ north)) % 180.0
    spread = np.degrees(0.5 * np.hypot(c1 * s2, c2 * s1) / (c1 ** 2 + c2 ** 2))
    return float(angle), float(min(spread, UNDETERMINED_ANGLE_SIGMA))


def _beyond_ranges(values: np.ndarray, names: list[str], ranges: dict) -> list[str]:
    """Per row of ``values`` (one column per name), the names whose value lies beyond its
    [low, high] in ``ranges`` (a name without one is never flagged), comma-separated."""
    checked = [k for k, name in enumerate(names) if name in ranges]
    if not checked:
        return [""] * len(values)
    low = np.array([ranges[names[k]][0] for k in checked])
    high = np.array([ranges[names[k]][1] for k in checked])
    beyond = (values[:, checked] < low) | (values[:, checked] > high)
    return [",".join(names[k] for k, out in zip(checked, row, strict=True) if out)
            for row in beyond]


# --------------------------------------------------------------------------- catalogues


def parse_column_map(text: str | None) -> dict[str, str]:
    """``u=MAG_U,g=MAG_G,err_u=MAGERR_U`` -> {"u": "MAG_U", ...}; ValueError naming the part."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, column = part.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise ValueError(f"--columns: {part.strip()!r} is not NAME=COLUMN")
        if key.strip() in mapping:
            raise ValueError(f"--columns: {key.strip()!r} is mapped twice")
        mapping[key.strip()] = column.strip()
    return mapping


def _table_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(FITS_TABLE):
        fmt = "fits"
    elif name.endswith((".csv", ".csv.gz")):
        fmt = "csv"
    else:
        raise ValueError(f"{path}: expected a CSV (.csv) or FITS table (.fits, .fit) file")
    if not path.is_file():
        raise FileNotFoundError(f"--catalog {path}: no such file")
    return fmt


def _unreadable(path: Path, fmt: str, error: Exception) -> ValueError:
    return ValueError(f"{path}: not a readable {fmt.upper()} table: "
                      f"{str(error).splitlines()[0] if str(error) else error!r}")


def read_table_chunks(path: Path, names: dict[str, str], rows: int
                      ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(first data row, {role: values}) of the catalogue at ``path``, ``rows`` rows at a time,
    for the columns ``names`` maps each role to: numbers as float64 (an empty cell NaN), ``id``
    as str (an empty cell ""). Memory stays that of one chunk: a CSV is read by pandas'
    chunked C parser (astropy reads a whole CSV at once: 3.0 GB for 2 million rows of 29
    columns, against 0.2 GB, and its own chunked reader took 3.5x pandas' time, measured); a
    FITS table is memory-mapped by astropy and sliced. ValueError naming the file and the
    column for a missing or non-numeric column (with its data row)."""
    fmt = _table_format(path)
    if fmt == "fits":
        from astropy.table import Table

        try:
            table = Table.read(path, format="fits", memmap=True)
        except Exception as error:  # astropy's many parser errors: the file is not a table
            raise _unreadable(path, fmt, error) from None
        _check_columns(path, table.colnames, names)
        for start in range(0, len(table), rows):
            yield start, {role: _column(table[name][start:start + rows], path, name, role,
                                        start) for role, name in names.items()}
        return
    import pandas as pd

    # Every cell as text: a column's type is then the same in every chunk, an empty cell stays
    # empty (pandas would make an integer id column with a gap into floats), and a cell that is
    # not a number is found with its row.
    options = {"dtype": str, "keep_default_na": False, "skipinitialspace": True}
    try:
        header = list(pd.read_csv(path, nrows=0, **options).columns)
        _check_columns(path, header, names)
        reader = pd.read_csv(path, usecols=sorted(set(names.values())), chunksize=rows,
                             **options)
        for index, frame in enumerate(reader):
            start = index * rows
            yield start, {role: _column(frame[name].to_numpy(dtype=object), path, name, role,
                                        start) for role, name in names.items()}
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError,
            OSError) as error:
        raise _unreadable(path, fmt, error) from None


def _check_columns(path: Path, columns: list[str], names: dict[str, str]) -> None:
    for role, name in names.items():
        if name not in columns:
            raise ValueError(f"{path}: no column {name!r} (mapped to {role}); its columns: "
                             f"{', '.join(columns)}")


def _is_empty(value) -> bool:
    """An empty cell: masked (FITS), an empty string or a blank (CSV read as text)."""
    return value is np.ma.masked or (isinstance(value, str) and not value.strip())


def _column(values, path: Path, name: str, role: str, first_row: int = 0) -> np.ndarray:
    """One chunk of a mapped column: float64 numbers with NaN for empty cells, or for ``id``
    text with "" for empty cells (astropy would fill them with "0" or "N/A"). ValueError
    naming the data row (counted from 1 over the whole file) of a cell that is no number."""
    if role == "id":
        return np.array(["" if _is_empty(value) else str(value).strip() for value in values],
                        dtype=object)
    out = np.empty(len(values), dtype=np.float64)
    try:
        out[:] = np.ma.filled(np.ma.asarray(values, dtype=np.float64), np.nan)
    except (TypeError, ValueError):  # text, with empty cells among the numbers
        for row, value in enumerate(values):
            try:
                out[row] = np.nan if _is_empty(value) else float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{path}: column {name!r} (mapped to {role}) is not numeric: "
                                 f"data row {first_row + row + 1} holds {str(value)!r}; "
                                 "expected numbers") from None
    return out


# What a photo-z contract's ``columns`` may hold (written by the photoz kind's
# contract_details: the column names and datasets/photoz.py's CLEANING settings).
PHOTOZ_COLUMNS = {"magnitudes": list[str], "errors": list[str], "cleaning": dict,
                  "layout": str, "sample": str, "magnitude_range": dict[str, tuple[float, float]],
                  "error_range": dict[str, tuple[float, float]]}
PHOTOZ_CLEANING = {"max_error": float, "error_bands": list[str], "z_max": float}


def _checked_photoz_columns(contract, model: str) -> dict:
    """The ``columns`` of a photo-z model's contract, each entry checked (they come from the
    model file and reach the cleaning and the column mapping): ValueError naming the field."""
    from lensbench.datasets.typecheck import fits_type, type_text

    columns = contract.columns
    cleaning = columns.get("cleaning", {})
    entries = [(f"columns.{key}", columns.get(key), PHOTOZ_COLUMNS.get(key)) for key in columns]
    if isinstance(cleaning, dict):
        entries += [(f"columns.cleaning.{key}", value, PHOTOZ_CLEANING.get(key))
                    for key, value in cleaning.items()]
    for name, value, hint in entries:
        if hint is None:
            raise ValueError(f"{model}: contract field {name!r} is not one a photo-z model has")
        if fits_type(value, hint) is False:
            raise ValueError(f"{model}: contract field {name!r}: expected {type_text(hint)}, "
                             f"got {value!r}")
    for key in ("magnitudes", "errors"):
        if key in columns and len(columns[key]) != len(contract.bands):
            raise ValueError(f"{model}: contract field 'columns.{key}': expected one name per "
                             f"band of {', '.join(contract.bands)}, got {columns[key]!r}")
    for key in ("magnitude_range", "error_range"):
        if set(columns.get(key, contract.bands)) != set(contract.bands):
            raise ValueError(f"{model}: contract field 'columns.{key}': expected the bands "
                             f"{', '.join(contract.bands)}, got {sorted(columns[key])}")
    unknown = set(cleaning.get("error_bands", ())) - set(contract.bands)
    if unknown:
        raise ValueError(f"{model}: contract field 'columns.cleaning.error_bands': expected "
                         f"bands of the model ({', '.join(contract.bands)}), got "
                         f"{sorted(unknown)}")
    return columns


def predict_catalogue(model: str | os.PathLike, catalogue: str | os.PathLike,
                      out: str | os.PathLike, *, columns: dict[str, str] | None = None,
                      tracking_uri: str | None = None, device: str = "auto") -> PredictSummary:
    """Predict z for every row of ``catalogue`` with the saved photo-z ``model`` (a torch one on
    ``device``); ``columns`` maps each of the model's bands ``b`` and ``err_b`` (and optionally
    ``id``, ``z_spec``) to a column (default: the contract's own names, ``mag_b`` and
    ``err_b``)."""
    from lensbench.bench.tools.scan import check_model_runs
    from lensbench.datasets.photoz import drop_reasons

    out, path = Path(out), Path(catalogue)
    method, contract = open_model(model, "photoz", tracking_uri, out.parent, device)
    bands = list(contract.bands)
    named = _checked_photoz_columns(contract, str(model))
    predict = method.predict if hasattr(method, "predict") else method.predict_score
    # one plain galaxy (magnitude 20, error 0.05 in every band) in the model's input layout,
    # through every prediction this command makes
    check_model_runs([predict, *(getattr(method, name) for name in ("predict_variance",
                                                                    "predict_pdf")
                                 if hasattr(method, name))],
                     np.array([[20.0] * len(bands) + [0.05] * len(bands)]), str(model))
    defaults = {**dict(zip(bands, named.get("magnitudes", [f"mag_{b}" for b in bands]),
                           strict=True)),
                **dict(zip((f"err_{b}" for b in bands),
                           named.get("errors", [f"err_{b}" for b in bands]), strict=True))}
    mapping = dict(columns or {})
    known = {*defaults, "id", "z_spec"}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ValueError(f"--columns: {unknown[0]!r} is not an input of the model (it takes "
                         f"{', '.join(bands)}, {', '.join('err_' + b for b in bands)}, and "
                         f"optionally id and z_spec)")
    if not set(mapping) & set(defaults):  # no input column named: the contract's names
        mapping = {**defaults, **mapping}
    missing = [key for key in defaults if key not in mapping]
    if missing:
        raise ValueError(f"--columns: the model needs {', '.join(missing)} (its bands "
                         f"{', '.join(bands)} and their errors), not mapped")
    cleaning = {k: tuple(v) if isinstance(v, list) else v
                for k, v in named.get("cleaning", {}).items()}
    roles = {role: mapping[role] for role in (*defaults, "id", "z_spec") if role in mapping}

    def chunks():
        """(first row, mags, errs, ids or None, z_spec or None, drop reasons) per chunk. A
        galaxy's photometry decides whether it gets a photo-z; its spec-z (where mapped) only
        whether it enters metrics.json: the usual catalogue has spec-z for a few of its
        galaxies."""
        for first, columns in read_table_chunks(path, roles, CATALOGUE_CHUNK):
            mags = np.stack([columns[b] for b in bands], axis=1)
            errs = np.stack([columns[f"err_{b}"] for b in bands], axis=1)
            yield (first, mags, errs, columns.get("id"), columns.get("z_spec"),
                   drop_reasons(mags, errs, None, bands=tuple(bands), **cleaning))

    # First pass: how many galaxies get a photo-z, and whether the magnitudes are magnitudes as
    # the model knows them, before anything is predicted or written.
    n_total = n_kept = 0
    sample = []
    for _, mags, _, _, _, reasons in chunks():
        kept = mags[reasons == ""]
        n_total, n_kept = n_total + len(mags), n_kept + len(kept)
        sample.append(kept[np.unique(np.linspace(0, len(kept) - 1,
                                                 min(len(kept), UNITS_SAMPLE)).astype(int))])
    _check_magnitude_units(np.concatenate(sample) if sample else np.zeros((0, len(bands))),
                           bands, named, mapping, path)
    stem = stem_of(out)
    has_pdf = hasattr(method, "predict_pdf")
    files = {"out": out, "dropped": out.with_name(stem + ".dropped.csv"),
             **({"pdf": out.with_name(stem + SIDE_FILES["pdf"])} if has_pdf else {})}
    ensemble = (_QpWriter(out.with_name(stem + SIDE_FILES["pdf_qp"]), n_kept)
                if has_pdf and n_kept else None)
    dropped_reasons, n_outside, written = [], 0, 0
    spec = ([], [])  # z_phot and z_spec of the predicted galaxies with a usable spec-z
    # Second pass, chunk by chunk, every table written as it goes: memory stays that of one
    # chunk whatever the catalogue's length (a whole catalogue's p(z) took 2.4 kB a galaxy).
    with contextlib.ExitStack() as files_open:
        tables = {name: csv.writer(files_open.enter_context(
            atomic_open(path, "w", newline="", encoding="utf-8"))) for name, path in files.items()}
        if ensemble is not None:
            files_open.enter_context(ensemble)
        tables["out"].writerow(["row", "id", "z_phot", "z_phot_sigma", "outside_training"])
        tables["dropped"].writerow(["row", "id", "reason"])
        if has_pdf:
            from lensbench.baselines.photoz import PDF_GRID

            tables["pdf"].writerow(["row", "id", *(f"{z:.3f}" for z in PDF_GRID)])
        for first, mags, errs, ids, z_spec, reasons in chunks():
            labels = ids if ids is not None else np.full(len(mags), "", dtype=object)
            dropped = np.flatnonzero(reasons != "")
            tables["dropped"].writerows([first + int(k), labels[k], reasons[k]]
                                        for k in dropped)
            dropped_reasons += list(reasons[dropped])
            kept = np.flatnonzero(reasons == "")
            if not len(kept):
                continue
            rows = first + kept
            X = np.hstack([mags[kept], errs[kept]])
            outside = _outside_training(mags[kept], errs[kept], bands, named)
            n_outside += sum(1 for bands_outside in outside if bands_outside)
            z = np.asarray(predict(X), dtype=np.float64)
            sigma = (np.sqrt(np.asarray(method.predict_variance(X), dtype=np.float64))
                     if hasattr(method, "predict_variance") else np.full(len(kept), np.nan))
            tables["out"].writerows(
                [int(rows[j]), labels[k], _number(z[j]), _number(sigma[j]), outside[j]]
                for j, k in enumerate(kept))
            if has_pdf:
                pdf = np.asarray(method.predict_pdf(X), dtype=np.float64)
                tables["pdf"].writerows([int(rows[j]), labels[k],
                                         *(repr(float(p)) for p in pdf[j])]
                                        for j, k in enumerate(kept))
                ensemble.write(written, pdf, {"row": rows, "id": list(labels[kept]),
                                              "z_phot": z})
            written += len(kept)
            if z_spec is not None:
                usable = drop_reasons(mags[kept], errs[kept], z_spec[kept], bands=tuple(bands),
                                      **cleaning) == ""
                spec[0].append(z[usable])
                spec[1].append(z_spec[kept][usable])
    if ensemble is not None:
        files["pdf_qp"] = ensemble.path
    metrics = {}
    n_spec = sum(len(z) for z in spec[0])
    if n_spec:
        from lensbench.bench.photoz_metrics import photoz_metrics

        metrics = photoz_metrics(np.concatenate(spec[0]), np.concatenate(spec[1]))
        files["metrics"] = atomic_write_text(out.with_name(stem + SIDE_FILES["metrics"]),
                                             json.dumps(metrics, indent=1, sort_keys=True))
    _remove_stale(out, files, ("pdf", "pdf_qp", "metrics"))
    summary = PredictSummary(out, n_total, n_kept, len(dropped_reasons), files,
                             _counted(dropped_reasons), metrics)
    summary.outside_training = n_outside
    summary.with_spec_z = n_spec if "z_spec" in mapping else None
    return summary


# Kept galaxies of each chunk whose magnitudes decide whether a catalogue holds magnitudes as the
# model knows them (evenly spaced through the chunk: a catalogue sorted by magnitude is sampled
# from end to end).
UNITS_SAMPLE = 5000


def _check_magnitude_units(mags: np.ndarray, bands: list[str], named: dict,
                           mapping: dict[str, str], path: Path) -> None:
    """A band whose median magnitude (over ``mags``, the kept galaxies or a sample of them)
    lies beyond the training set's magnitudes (the contract's ``magnitude_range``) is not
    magnitudes as the model knows them (fluxes, or another zero point): ValueError naming the
    column."""
    ranges = named.get("magnitude_range")
    if not ranges or not len(mags):
        return
    for k, band in enumerate(bands):
        low, high = ranges[band]
        median = float(np.median(mags[:, k]))
        if not low <= median <= high:
            raise ValueError(
                f"{path}: column {mapping[band]!r} (band {band}) has median {median:.4g}, "
                f"beyond the model's training magnitudes {low:.4g}-{high:.4g}: the "
                "model takes AB magnitudes (are these fluxes, or of another zero point?)")


def _outside_training(mags: np.ndarray, errs: np.ndarray, bands: list[str],
                      named: dict) -> list[str]:
    """Per galaxy, the bands whose magnitude (``g``) or error (``err_g``) lies beyond the
    training set's (the contract's ``magnitude_range`` and ``error_range``; none for a model
    saved without them), comma-separated: a prediction there extrapolates."""
    ranges = {**named.get("magnitude_range", {}),
              **{f"err_{band}": span for band, span in named.get("error_range", {}).items()}}
    return _beyond_ranges(np.hstack([mags, errs]), [*bands, *(f"err_{b}" for b in bands)],
                          ranges)
