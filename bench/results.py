"""The Result record: one per (method, task) run, appended to a JSONL store.

Result records are the source of truth of a benchmark; MLflow and the reports mirror them.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lensbench.datasets.interrupts import signals_deferred
from lensbench.datasets.typecheck import field_hints, fits_type, short_repr, type_text

SCHEMA_VERSION = 1


class ResultsStoreWarning(UserWarning):
    """A results store held a line that is not a Result record (skipped), or a torn last line
    (moved aside before the next append)."""


def canonical_run_id(name: str, params: dict) -> str:
    """benchopt-style run id: ``name[k=v,...]`` with keys sorted; ``name`` alone without params."""
    if not params:
        return name
    inner = ",".join(f"{key}={params[key]}" for key in sorted(params))
    return f"{name}[{inner}]"


@dataclass
class Result:
    """What one method did on one task. ``status`` is "ok", "failed" or "declined"."""

    run_id: str
    method: str
    task: str
    suite: str
    profile: str
    params: dict
    split_hashes: dict[str, str]
    seed: int  # the method's seed, derived from suite_seed
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    fit_time_s: float | None = None
    predict_time_s: float | None = None
    n_train: int | None = None
    n_test: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path under the workdir
    suite_seed: int | None = None  # the `bench run --seed` every seed derives from
    data_files: dict[str, str] = field(default_factory=dict)  # real data used: name -> sha256
    # torch's thread count in the process that ran it (runner.torch_threads): the last digits
    # of a torch training run depend on it (README, Reproducibility).
    threads: dict[str, int] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def error_line(self) -> str:
        """The last line of ``error`` (the exception message of a traceback), or ''."""
        lines = (self.error or "").strip().splitlines()
        return lines[-1] if lines else ""

    def stored_file(self, name: str, workdir: Path) -> Path | None:
        """The file a finished run saved as its artefact ``name`` under ``workdir``, or None
        (a failed run, an artefact it did not save, a file since removed)."""
        path = self.artifacts.get(name) if self.status == "ok" else None
        return workdir / path if path and (workdir / path).is_file() else None

    def load_artifact(self, name: str, workdir: Path, required: tuple[str, ...] = ()
                      ) -> dict | None:
        """The arrays of the npz artefact ``name`` this run stored (:func:`read_artifact`), or
        None where it stored none."""
        path = self.stored_file(name, workdir)
        return None if path is None else read_artifact(path, required)

    def to_json(self) -> str:
        """One line of strict JSON for the store: a metric without a value (NaN: an empty bin)
        is null, which every JSON parser reads (bare NaN is Python's extension)."""
        record = asdict(self)
        record["metrics"] = {key: None if isinstance(value, float) and math.isnan(value)
                             else value for key, value in record["metrics"].items()}
        return json.dumps(record, sort_keys=True, allow_nan=True)

    @classmethod
    def from_dict(cls, record: dict) -> Result:
        """The record as a Result: ValueError for another schema version; TypeError for a
        field missing, unknown or of the wrong type (a hand edit), naming it."""
        version = record.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"Result record {record.get('run_id')!r} has schema_version {version!r}; "
                f"this lensbench reads schema_version {SCHEMA_VERSION}"
            )
        if isinstance(record.get("metrics"), dict):  # null: a metric without a value
            record = {**record, "metrics": {key: math.nan if value is None else value
                                            for key, value in record["metrics"].items()}}
        hints = field_hints(cls)
        for name, value in record.items():
            if name in hints and fits_type(value, hints[name]) is False:
                raise TypeError(f"field {name!r} must be {type_text(hints[name])}, got "
                                f"{short_repr(value)}")
        for name in ONE_LINE_FIELDS:  # they go into report lines and table cells as they are
            if isinstance(record.get(name), str) and not record[name].isprintable():
                raise TypeError(f"field {name!r} must be one line of printable text, got "
                                f"{short_repr(record[name])}")
        if record.get("status") not in STATUSES:
            raise TypeError(f"field 'status' must be one of {', '.join(STATUSES)}, got "
                            f"{short_repr(record.get('status'))}")
        return cls(**record)


STATUSES = ("ok", "failed", "declined")
ONE_LINE_FIELDS = ("run_id", "method", "task", "suite", "profile")


def read_artifact(path: Path, required: tuple[str, ...] = ()) -> dict:
    """Every array of the run artefact ``path`` (an npz file: scores, predictions), read now;
    ValueError naming the file where it is damaged, is not numpy arrays without pickled
    objects, or lacks one of the ``required`` arrays."""
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: a damaged run artefact ({type(error).__name__}: {error}); "
                         "remake it by running that method again") from None
    missing = [key for key in required if key not in arrays]
    if missing:
        raise ValueError(f"{path}: a run artefact without the array(s) {', '.join(missing)} "
                         f"(it has {', '.join(arrays) or 'none'})")
    return arrays


def append_result(store: Path, result: Result) -> None:
    """Append one record as a single line; flushed and fsynced so an interrupt loses at most it.
    The line always starts a line of its own: a torn last line that an interrupted append left
    is first moved to ``<store>.torn-<time>`` (with a warning), never glued to this record.
    Appends are serialised by a lock on the store, so a line being written is never taken for
    a torn one; Ctrl-C and SIGTERM wait until the line is written."""
    store.parent.mkdir(parents=True, exist_ok=True)
    line = (result.to_json() + "\n").encode("utf-8")
    with signals_deferred(), open(store, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        _end_with_a_newline(store, handle)
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def _end_with_a_newline(store: Path, handle) -> None:
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return
    handle.seek(size - 1)
    if handle.read(1) == b"\n":
        return
    # Find the start of the torn line: the byte after the last newline (or the file start).
    start, block = size, 1 << 16
    while start > 0:
        lo = max(0, start - block)
        handle.seek(lo)
        newline = handle.read(start - lo).rfind(b"\n")
        if newline >= 0:
            start = lo + newline + 1
            break
        start = lo
    handle.seek(start)
    tail = handle.read()
    try:
        whole = isinstance(json.loads(tail), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        whole = False
    if whole:  # the record was written, only its newline is missing: keep it in place
        handle.write(b"\n")
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    quarantine = store.with_name(f"{store.name}.torn-{stamp}")
    # Saved (and synced) before the store is cut: a crash in between duplicates, never loses.
    with open(quarantine, "ab") as aside:
        aside.write(tail)
        aside.flush()
        os.fsync(aside.fileno())
    handle.truncate(start)
    handle.flush()
    os.fsync(handle.fileno())
    warnings.warn(f"{store}: the last line was torn (an interrupted append: {len(tail)} bytes, "
                  f"no newline); moved it to {quarantine} before appending",
                  ResultsStoreWarning, stacklevel=3)


def read_results(store: Path) -> list[Result]:
    """Read every record of a JSONL store. A line that is not a Result record (a torn line a
    killed writer left, a hand edit) is skipped, and one warning names the file, each such line
    and why; a record of another schema version is an error."""
    if not store.exists():
        return []
    lines = store.read_text(encoding="utf-8", errors="replace").splitlines()
    results, skipped = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            skipped.append(f"line {number} is not JSON ({error})")
            continue
        if not isinstance(record, dict):
            skipped.append(f"line {number} is a JSON {type(record).__name__}, not an object")
            continue
        try:
            results.append(Result.from_dict(record))
        except TypeError as error:  # fields missing, unknown or of the wrong type
            skipped.append(f"line {number} is not a Result record ({error})")
    if skipped:
        warnings.warn(f"{store}: skipped {len(skipped)} line(s) that are not Result records: "
                      + "; ".join(skipped), ResultsStoreWarning, stacklevel=2)
    return results
