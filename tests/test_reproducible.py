"""Same commit, same seed, same numbers (issue 24.5): two `bench run`s of the smoke suite, in two
processes with two work folders, give identical metrics for every registered lens-finding method.

Each method runs with the contract test's tiny parameters (one epoch, a committee of two, few
trees), so both runs together take about a minute on 2 cores; the code paths are those of a full
run (seeds derived from --seed, calibration, test-time augmentation, rotation metrics)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from lensbench.baselines.registry import METHODS, resolve_method

LENS_FINDERS = sorted(name for name in METHODS if "lens-finding" in resolve_method(name).kinds)


def run_smoke_suite(workdir, params_file) -> subprocess.Popen:
    # One thread each: the two runs share the machine's cores without oversubscribing them.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "lensbench.bench.cli", "run", "--suite", "smoke", "--profile",
         "smoke", "--seed", "0", "--no-tracking", "--workdir", str(workdir), "--methods",
         ",".join(LENS_FINDERS), "--params", str(params_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def records(workdir) -> dict[tuple[str, str], dict]:
    lines = (workdir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return {(record["method"], record["task"]): record for record in map(json.loads, lines)}


def same(a, b) -> bool:
    """Equal, NaN equal to NaN."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))


@pytest.mark.slow
def test_two_processes_give_identical_metrics_for_every_lens_finder(smoke_suite_twice):
    # The two runs (run_smoke_suite, at once, both exiting 0) are conftest.smoke_suite_twice's,
    # which test_distributed reads as well.
    first, second = (records(workdir) for workdir in smoke_suite_twice)
    assert {method for method, _ in first} == set(LENS_FINDERS)
    assert first.keys() == second.keys()
    for key, record in first.items():
        assert record["status"] == "ok", (key, record["error"])
        other = second[key]
        assert record["split_hashes"] == other["split_hashes"] and record["seed"] == other["seed"]
        metrics, other_metrics = record["metrics"], other["metrics"]
        assert metrics.keys() == other_metrics.keys(), key
        differ = {name: (value, other_metrics[name]) for name, value in metrics.items()
                  if not same(value, other_metrics[name])}
        assert not differ, f"{key[0]} on {key[1]}: metrics differ between the two runs: {differ}"


def test_openblas_kernel_is_pinned_to_avx2_only_on_an_avx512_cpu(tmp_path, monkeypatch):
    from lensbench.datasets.blas_kernel import pin_openblas_kernel

    avx512 = tmp_path / "avx512"
    avx512.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw\n")
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2\n")
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    assert not pin_openblas_kernel(str(avx512))  # NumPy is loaded here: too late to act
    monkeypatch.delitem(sys.modules, "numpy")
    assert not pin_openblas_kernel(str(avx2)) and "OPENBLAS_CORETYPE" not in os.environ
    assert not pin_openblas_kernel(str(tmp_path / "missing"))
    assert pin_openblas_kernel(str(avx512)) and os.environ["OPENBLAS_CORETYPE"] == "Haswell"
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Zen")  # a user's choice stands
    assert not pin_openblas_kernel(str(avx512)) and os.environ["OPENBLAS_CORETYPE"] == "Zen"


def test_importing_lensbench_first_keeps_numpy_off_the_avx512_blas_kernels():
    # In a fresh process, as `bench` starts: whatever this CPU is, NumPy's OpenBLAS must not
    # run an AVX-512 kernel (they round matrix products differently: datasets/blas_kernel.py).
    code = ("import lensbench.bench, numpy, threadpoolctl; print([i.get('architecture') for i in "
            "threadpoolctl.threadpool_info() if i.get('internal_api') == 'openblas'])")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert "[" in out
    for kernel in ("SkylakeX", "Cooperlake", "SapphireRapids"):
        assert kernel not in out, out
