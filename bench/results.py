"""The Result record: one per (method, task) run, appended to a JSONL store.

Result records are the source of truth of a benchmark; MLflow and the reports mirror them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1


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
    schema_version: int = SCHEMA_VERSION

    @property
    def error_line(self) -> str:
        """The last line of ``error`` (the exception message of a traceback), or ''."""
        lines = (self.error or "").strip().splitlines()
        return lines[-1] if lines else ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=True)

    @classmethod
    def from_dict(cls, record: dict) -> Result:
        version = record.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"Result record {record.get('run_id')!r} has schema_version {version!r}; "
                f"this lensbench reads schema_version {SCHEMA_VERSION}"
            )
        return cls(**record)


def append_result(store: Path, result: Result) -> None:
    """Append one record as a single line; flushed and fsynced so an interrupt loses at most it."""
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store, "a", encoding="utf-8") as handle:
        handle.write(result.to_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_results(store: Path) -> list[Result]:
    """Read every record of a JSONL store. A torn last line (a killed writer) is skipped;
    a malformed line elsewhere is an error naming the file and line."""
    if not store.exists():
        return []
    lines = store.read_text(encoding="utf-8").splitlines()
    results = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                continue
            raise ValueError(
                f"{store}: line {number} is not a JSON Result record: {error}"
            ) from None
        results.append(Result.from_dict(record))
    return results
