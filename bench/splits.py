"""How a task's simulated splits are made and found again: once per (task, version, profile),
under ``workdir/splits``, keyed by a hash of everything that makes them, verified when loaded.
Used by the kinds whose splits are simulated (lens finding, modeling, the design study)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path

from lensbench.bench.tasks import Task
from lensbench.datasets.storage import Split, load_split, split_is_complete

# Where simulated shards are made: None = in this process; a ``make_split`` ``map_shards``
# callable = elsewhere (``bench run --workers/--scheduler``: on Dask workers). A context variable,
# so the kinds, which call ensure_split, need not know whether a cluster runs the suite.
SHARD_MAP: ContextVar[Callable | None] = ContextVar("SHARD_MAP", default=None)


def split_key(task: Task, role: str, n: int, seed: int) -> str:
    from lensbench.datasets.simulate import SIMULATOR_VERSION

    # The simulator version is in the key: a split made by older simulator code is never reused.
    payload = json.dumps({"config": task.config.to_dict(), "n": n, "seed": seed,
                          "task": task.name, "version": task.version,
                          "simulator": SIMULATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def version_prefix(task: Task) -> str:
    """How the names of the task's current version's split folders begin."""
    return f"{task.name}-v{task.version}-"


def ensure_split(task: Task, role: str, profile: str, workdir: Path, *, quiet: bool = False
                 ) -> Split:
    """The task's train or test split for ``profile``: loaded (hashes verified) if made before,
    simulated and written atomically otherwise."""
    from lensbench.datasets.simulate import make_split

    n_train, n_test = task.size(profile)
    n, seed = (n_train, task.train_seed) if role == "train" else (n_test, task.test_seed)
    key = split_key(task, role, n, seed)
    path = workdir / "splits" / f"{version_prefix(task)}{role}-{n}-{key}"
    if not split_is_complete(path):
        from tqdm.auto import tqdm

        with tqdm(total=n, desc=f"simulate {task.name} {role}", unit="img", disable=quiet,
                  leave=False) as bar:
            make_split(task.config, n, seed, path, progress=bar.update,
                       created_by=f"lensbench task {task.name} v{task.version}",
                       map_shards=SHARD_MAP.get())
    split = load_split(path, verify=True)
    check_split_made_as(split, task.config.to_dict(), n, seed)
    return split


def check_split_made_as(split: Split, config: dict, n: int, seed: int) -> None:
    """ValueError unless ``split`` was simulated from ``config`` with ``seed`` and holds ``n``
    cutouts, as its folder's key says: a split copied or renamed into the folder of another
    would otherwise be trained or scored on, unnoticed (the hashes verify only its bytes)."""
    made = {"config": split.manifest.get("config"), "seed": split.manifest.get("seed"),
            "n": split.n}
    wanted = {"config": config, "seed": seed, "n": n}
    differ = [name for name in wanted if made[name] != wanted[name]]
    if differ:
        made_config = made["config"] if isinstance(made["config"], dict) else {}
        fields = sorted(key for key in set(config) | set(made_config)
                        if made_config.get(key) != config.get(key))
        raise ValueError(f"{split.path}: not the split its folder name stands for: its "
                         f"manifest has another {' and '.join(differ)}"
                         + (f" (config fields {', '.join(fields)})" if fields else "")
                         + "; remove the folder and run again to simulate the right one")


def ensure_real_lens_split(task: Task, workdir: Path) -> Split:
    """The task's split of real known lenses and real non-lenses, made once (by key)."""
    from lensbench.datasets.known_lenses import make_real_lens_split

    spec = dict(task.real_lenses)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = workdir / "splits" / f"{version_prefix(task)}real-{key}"
    if not split_is_complete(path):
        make_real_lens_split(spec["survey"], spec["bands"], spec["stamp_size"], path,
                             seed=spec["seed"], n_nonlenses=spec["n_nonlenses"],
                             created_by=f"lensbench task {task.name} v{task.version}",
                             n_bright_early_types=spec.get("n_bright_early_types", 0),
                             colours_from_f814w=spec.get("colours_from_f814w", False),
                             clean_cosmic_rays=spec.get("clean_cosmic_rays", False),
                             match_native_psf=spec.get("match_native_psf", False),
                             sky_beside_halo=spec.get("sky_beside_halo", False),
                             own_photon_noise=spec.get("own_photon_noise", False))
    return load_split(path, verify=True)
