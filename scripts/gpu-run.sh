#!/usr/bin/env bash
# Issue 27: the committee against DeepLens (published schedule) on one CUDA machine.
#
#   scripts/gpu-run.sh wheels   on a machine with pip and a package index (a developer's):
#                               downloads the wheels the GPU machine lacks into .whl/ (git-ignored
#                               through .git/info/exclude), then stamps; carry .whl to the GPU
#                               machine.
#   scripts/gpu-run.sh stamp    in the git checkout, after the last commit before the run: writes
#                               .whl/commit-stamp.txt (HEAD and its blob of every code file), by
#                               which the report names its commit on a machine given the tree
#                               without .git (bench/runner.py: stamped_commit checks the files).
#   scripts/gpu-run.sh          on the GPU machine, from the repository root: installs .whl/*.whl
#                               into /tmp/site, makes the repository importable as `lensbench`
#                               (no pip install: the machine has no network), runs the tests
#                               that need CUDA (pytest -m cuda), then the compare profile
#                               (simulator against lenstronomy, DeepLens and the committee, at
#                               once or not, bench scan, precision and memory layout), and
#                               writes reports/metcalf-compare-gpu.md (copied to $OUT when set,
#                               with the logs).
#
# Wheels: the run imports torch, numpy, scipy, scikit-learn, h5py and tqdm (all on the GPU
# machine) and astropy, which the simulator needs for its cosmology (distances in flat LCDM):
# astropy, pyerfa and astropy-iers-data travel as wheels (~13 MB; PyYAML and packaging are
# there). So do skops, prettytable and wcwidth (pure Python), which save and load the
# scikit-learn half of a model file (ae-bgmm's mixture), as the CUDA tests do; and lenstronomy,
# the peer of the simulator's rate (pure Python, published only as a source archive: built into
# a wheel here; its rendering path runs with numpy, scipy, astropy and PyYAML alone, checked
# with its other requirements unimportable). Nothing on this path imports pooch, mlflow,
# optuna, xgboost, photutils, astroscrappy, qp or Dask: tests/test_perf_gpu.py runs the command
# with them unimportable, and places every dependency of pyproject.toml.
#
# Time: everything ends inside LB_BUDGET seconds (default 570, for a 600 s call): the compare
# run gets what the tests left, and its report is rewritten after every step, so a cut keeps
# what was measured. The tests train every torch method, scan and render on the device, so a
# smoke run there first (LB_SMOKE=1, ~1 min) would only take the compare run's time.
# Environment: LB_DEVICE (default cuda), LB_BUDGET, LB_WORKDIR (splits, default
# /tmp/lensbench-work), LB_SMOKE=1 (the smoke profile first), LB_SKIP_COMPARE=1 (no compare
# run: with LB_SMOKE=1 and LB_DEVICE=cpu, a dry run on a CPU); for a rerun that must be shorter,
# LB_METHODS (default "deeplens committee") and LB_SPEED_EPOCHS (0 skips the speed runs);
# LB_TOGETHER (auto, yes, no: DeepLens and the committee trained at once; default auto, which
# times the short runs both ways first and trains at once where that is faster).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

stamp() {  # to $LB_STAMP (tests) or .whl/commit-stamp.txt
    local paths file=${LB_STAMP:-.whl/commit-stamp.txt}
    paths=$("${PYTHON:-python3}" -c 'from lensbench.bench.runner import CODE_PATHS
print(*CODE_PATHS)')
    mkdir -p "$(dirname "$file")"
    # shellcheck disable=SC2086  # a list of paths
    { git rev-parse HEAD; git ls-tree -r HEAD -- $paths; } > "$file"
    # shellcheck disable=SC2086
    if [[ -n "$(git status --porcelain --untracked-files=no -- $paths)" ]]; then
        echo "uncommitted code changes: the report will say +dirty (commit, then stamp again)"
    fi
    echo "stamped $(head -c 12 "$file")"
}
if [[ "${1:-}" == "stamp" ]]; then
    stamp
    exit 0
fi
if [[ "${1:-}" == "wheels" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        astropy==8.0.2 pyerfa==2.0.1.5 astropy-iers-data==0.2026.11.16.0.37.44
    python3 -m pip download --no-deps --only-binary=:all: -d .whl \
        skops==0.16.0 prettytable==3.19.0 wcwidth==0.7.0
    python3 -m pip wheel --no-deps -w .whl lenstronomy==1.14.2
    stamp
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
if [[ -f .whl/commit-stamp.txt ]]; then  # the commit, where the tree came without .git
    export LENSBENCH_COMMIT_STAMP="$repo/.whl/commit-stamp.txt"
fi
export CUBLAS_WORKSPACE_CONFIG=:4096:8  # deterministic cuBLAS (train_net asks for determinism)
device=${LB_DEVICE:-cuda}
workdir=${LB_WORKDIR:-/tmp/lensbench-work}
out=${OUT:-/tmp/lensbench-out}
mkdir -p "$out"

python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'available', torch.cuda.is_available())"
# The tests that need a CUDA device (tests/test_perf_gpu.py: every torch method, the simulator
# against the CPU, bf16 and channels-last, runs at once, a GPU-trained model on a CPU-only
# process, bench scan on both); a failure is reported at the end but does not stop the
# measurements.
if [[ "$device" == cuda* ]]; then
    LENSBENCH_REQUIRE_GPU=1 timeout 150 python3 -m pytest -q -p no:cacheprovider -m cuda \
        tests/test_perf_gpu.py 2>&1 | tee "$out/gpu-tests.log" || tests_status=$?
fi
if [[ "${LB_SMOKE:-0}" == 1 ]]; then
    timeout 120 python3 -m lensbench.bench.cli perf gpu --profile smoke --device "$device" \
        --workdir "$workdir" --out "$out/metcalf-compare-gpu-smoke.md" 2>&1 \
        | tee "$out/smoke.log"
fi
if [[ "${LB_SKIP_COMPARE:-0}" == 1 ]]; then
    exit 0
fi
left=$(( ${LB_BUDGET:-570} - SECONDS - 10 ))  # 10 s to copy the report back
echo "compare profile: ${left} s left"
# shellcheck disable=SC2086  # LB_METHODS is a list of words
timeout "$left" python3 -m lensbench.bench.cli perf gpu --profile compare \
    --device "$device" --workdir "$workdir" --methods ${LB_METHODS:-deeplens committee} \
    ${LB_SPEED_EPOCHS:+--speed-epochs "$LB_SPEED_EPOCHS"} \
    ${LB_TOGETHER:+--together "$LB_TOGETHER"} 2>&1 | tee "$out/compare.log" \
    || status=$?
cp reports/metcalf-compare-gpu.md "$out/" 2>/dev/null || true  # written after each method
[[ -z "${tests_status:-}" ]] || echo "the GPU tests failed (rc $tests_status): $out/gpu-tests.log"
exit "${status:-${tests_status:-0}}"
