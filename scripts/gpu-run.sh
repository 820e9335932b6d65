#!/usr/bin/env bash
# Issue 27: the committee against DeepLens (published schedule) on one CUDA machine.
#
#   scripts/gpu-run.sh wheels   on a machine with pip and a package index (a developer's):
#                               downloads the wheels the GPU machine lacks into .whl/ (git-ignored
#                               through .git/info/exclude); carry .whl to the GPU machine.
#   scripts/gpu-run.sh          on the GPU machine, from the repository root: installs .whl/*.whl
#                               into /tmp/site, makes the repository importable as `lensbench`
#                               (no pip install: the machine has no network), runs the smoke
#                               profile on the device (fails fast, ~1 min), then the compare
#                               profile, and writes reports/metcalf-compare-gpu.md (copied to
#                               $OUT when set, with the logs).
#
# Wheels: the run imports torch, numpy, scipy, scikit-learn, h5py and tqdm (all on the GPU
# machine) and astropy, which the simulator needs for its cosmology (distances in flat LCDM):
# astropy, pyerfa and astropy-iers-data travel as wheels (~13 MB; PyYAML and packaging are
# there). pooch, mlflow, optuna, xgboost and photutils are not needed: nothing on this path
# imports them (tests/test_perf_gpu.py runs the command with them unimportable).
#
# Environment: LB_DEVICE (default cuda), LB_TIMEOUT (seconds for the compare run, default 400),
# LB_WORKDIR (splits, default /tmp/lensbench-work), LB_SKIP_COMPARE=1 (smoke only).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [[ "${1:-}" == "wheels" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        astropy==8.0.2 pyerfa==2.0.1.5 astropy-iers-data==0.2026.11.16.0.37.44
    exit 0
fi

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
fi
# The four code folders as the `lensbench` namespace (pyproject.toml's package-dir mapping).
mkdir -p /tmp/lensbench-src/lensbench
for part in bench baselines deep datasets; do
    ln -sfn "$repo/$part" "/tmp/lensbench-src/lensbench/$part"
done
export PYTHONPATH="/tmp/lensbench-src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 LENSBENCH_PROGRESS_INTERVAL=60
export CUBLAS_WORKSPACE_CONFIG=:4096:8  # deterministic cuBLAS (train_net asks for determinism)
device=${LB_DEVICE:-cuda}
workdir=${LB_WORKDIR:-/tmp/lensbench-work}
out=${OUT:-/tmp/lensbench-out}
mkdir -p "$out"

python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'available', torch.cuda.is_available())"
timeout 120 python3 -m lensbench.bench.cli perf gpu --profile smoke --device "$device" \
    --workdir "$workdir" --out "$out/metcalf-compare-gpu-smoke.md" 2>&1 | tee "$out/smoke.log"
if [[ "${LB_SKIP_COMPARE:-0}" == 1 ]]; then
    exit 0
fi
# The simulator's rate on the device and on the 16 CPU cores (lenstronomy is not on that
# machine, so no ratio); short, and before the long run so that its limit cannot cut it off.
for where in "$device" cpu; do
    timeout 60 python3 -m lensbench.bench.cli perf sim --n 4096 \
        --device "$where" 2>&1 | tee -a "$out/sim.log" || echo "perf sim on $where failed"
done
timeout "${LB_TIMEOUT:-400}" python3 -m lensbench.bench.cli perf gpu --profile compare \
    --device "$device" --workdir "$workdir" 2>&1 | tee "$out/compare.log" || status=$?
cp reports/metcalf-compare-gpu.md "$out/" 2>/dev/null || true  # written after each method
exit "${status:-0}"
