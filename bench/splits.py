"""How a task's simulated splits are made and found again: once per (task, version, profile),
under ``workdir/splits``, keyed by a hash of everything that makes them, verified when loaded.
Used by the kinds whose splits are simulated (lens finding, modeling, the design study)."""

from __future__ import annotations

import functools
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
                             own_photon_noise=spec.get("own_photon_noise", False),
                             measured_noise_correlation=spec.get("measured_noise_correlation",
                                                                 False))
    return load_split(path, verify=True)


# ------------------------------------------------------------------ the machine's arithmetic
# The simulator makes the same bytes at any thread count, but not on every CPU. torch's
# elementwise exp, log, sqrt, erf, tanh, atan and acos on the CPU go through MKL's vector math
# (VML), and MKL picks its code path by CPU: on one machine MKL_CBWR=AVX2, AVX512 and COMPATIBLE
# gave three different last bits for each of them. A last bit that moves a system across the
# arc S/N or magnification cut changes every draw after it, so the splits' content hashes
# differ. The probe tells a machine's arithmetic from the first systems it simulates.

def probe_hashes(systems: int = 8) -> dict[str, str]:
    """sha256 prefixes of the first ``systems`` metcalf-ground systems simulated on this
    machine's CPU: the truth table (the random draws and the lens geometry), the noiseless
    images (the rendering's float32 arithmetic) and the images with noise (the noise draws)."""
    from lensbench.bench.tasks import METCALF_GROUND
    from lensbench.datasets.simulate import Simulator
    from lensbench.datasets.storage import arrays_sha256

    def digest(*arrays) -> str:
        return arrays_sha256(*arrays)[:16]

    noisy, truth = Simulator(METCALF_GROUND.config).simulate(systems, seed=0)
    noiseless, _ = Simulator(METCALF_GROUND.config.replace(noise=False)).simulate(systems, seed=0)
    return {"truth table": digest(*(truth[key] for key in sorted(truth))),
            "noiseless images": digest(noiseless), "images with noise": digest(noisy)}


# The arithmetics met so far: probe_hashes() on each, with torch 2.13.0+cpu (MKL 2024.2), numpy
# 2.4.6 and Python 3.11. tests/test_golden_hashes.py holds each one's split hashes.
MACHINE_ARITHMETICS = {
    "reference": {"truth table": "6dd09cf30e866305", "noiseless images": "81d368d1ccdae726",
                "images with noise": "a52af22d8d5dfb13"},
    "avx512-fp16": {"truth table": "1045f4c1b8d27c3b", "noiseless images": "bcb8e69aadf0d4c8",
                    "images with noise": "ac5ddae3f09e6442"},
}
MACHINE_DESCRIPTIONS = {
    "reference": "the machines where the committed reports were made and CI ran",
    "avx512-fp16": "an Intel Xeon with AVX512_FP16 (Sapphire Rapids class, first met on "
                   "2026-12-07); forced onto MKL's other code paths (MKL_CBWR=AVX2, AVX512 or "
                   "COMPATIBLE) it gives yet other bytes, never the reports'",
}
PROBE_HASHES = MACHINE_ARITHMETICS["reference"]
WHY_PROBE_DIFFERS = {
    "truth table": "the random draws or the lens geometry (numpy's or torch's random streams, "
                   "or their float arithmetic: MKL's vector math in torch differs by CPU)",
    "noiseless images": "the rendering's float32 arithmetic (vectorised kernels, the FFT "
                        "convolution: rounding-level differences, within the simulator tests' "
                        "1e-5 of the peak)",
    "images with noise": "the noise draws"}


def machine_arithmetic(here: dict[str, str]) -> str | None:
    """The name in MACHINE_ARITHMETICS of the arithmetic :func:`probe_hashes` found, or None."""
    return next((name for name, known in MACHINE_ARITHMETICS.items() if known == here), None)


@functools.cache
def this_machine_arithmetic() -> str:
    """This process's arithmetic: its name in MACHINE_ARITHMETICS, or "unknown" with the probe's
    truth-table hash (probed once per process: 0.1 s once the simulator's imports are loaded)."""
    try:
        here = probe_hashes()
    except ImportError as error:  # a machine that runs no simulation (bench perf gpu's, unaided)
        return f"not probed (the simulator needs {error.name or error})"
    return machine_arithmetic(here) or f"unknown (probe truth table {here['truth table']})"


def probe_lines(here: dict[str, str], reference: dict[str, str] = PROBE_HASHES) -> list[str]:
    """Why the splits' bytes differ from the reports', from :func:`probe_hashes`: the first
    stage whose hash differs from the reference machine's, and the arithmetic, where known."""
    differ = [stage for stage in reference if here[stage] != reference[stage]]
    shown = ", ".join(f"{stage} `{here[stage]}`" for stage in reference)
    if not differ:
        return [f"Probe (the first metcalf-ground systems on this CPU: {shown}): the same as "
                "where the reports were made, so splits made here should have their bytes; where "
                "they do not, the difference lies further in (later systems, or how the splits "
                "are stored)."]
    known = machine_arithmetic(here)
    return [f"Probe (the first metcalf-ground systems on this CPU: {shown}): {differ[0]} "
            f"differs from where the reports were made, so the difference starts in "
            f"{WHY_PROBE_DIFFERS[differ[0]]}" + (f"; {', '.join(differ[1:])} follow"
                                                 if differ[1:] else "") + "."
            + (f" It is the arithmetic `{known}`: {MACHINE_DESCRIPTIONS[known]}." if known
               else "")]
