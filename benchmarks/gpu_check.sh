#!/usr/bin/env bash
# The GPU check, on a machine with an NVIDIA GPU, nvcc and a CUDA build of torch (2.11 or newer);
# it needs no network. Stages, each printing its duration and writing its results into OUT_DIR as
# they finish (so a run stopped part-way keeps everything that finished):
#   build   camfast._C with the CUDA kernels, for this GPU's architecture only, on every core
#   smoke   every CUDA and Triton kernel against the reference, a few shapes per dtype and layout,
#           one PASS/FAIL line per op and backend (python -m benchmarks.gpu_smoke): smoke.txt
#   test    the whole test suite, one pytest per test file, several files at once: one line per
#           file in tests.txt as it ends, its JUnit XML and log under tests/
#   bench   the benchmarks on CUDA: rows appended to bench/<device>.csv as each case ends
#   wheel   the CUDA wheel: built, installed away from the source tree, smoke-tested, and the test
#           suite run from the install (wheel-tests.txt, wheel-tests/)
# Everything printed also goes to OUT_DIR/gpu_check.log.
#
# usage: benchmarks/gpu_check.sh OUT_DIR [build] [smoke] [test] [bench] [wheel] [all]   (default: all)
# Stages run in the order above. Each later stage needs `build` once on the machine; a second
# `build` only relinks what changed (seconds), so give every invocation its own `build` and split
# the stages into commands that fit your time limit (docs/benchmarks.md, "On a GPU").
# Environment: PYTHON (default python3), CAMFAST_CUDA_ARCHS (default: this GPU's own), MAX_JOBS
# (default: every core), TEST_JOBS (test files at once, default: cores / 2), TEST_TIMEOUT (seconds
# per test, default 300, where pytest-timeout is installed), BENCH_ARGS (extra arguments for
# python -m benchmarks, e.g. "--only thresholded_avg_pool2d adl" or "--seconds 0.3").
set -euo pipefail

out=$(realpath -m "${1:?usage: benchmarks/gpu_check.sh OUT_DIR [build] [smoke] [test] [bench] [wheel] [all]}")
shift
stages=" ${*:-all} "
mkdir -p "$out"
cd "$(dirname "$0")/.."
root=$PWD
PY=${PYTHON:-python3}
cores=$(nproc)
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-$cores}
exec > >(tee -a "$out/gpu_check.log") 2>&1

wants() { [[ "$stages" == *" $1 "* || "$stages" == *" all "* ]]; }

# stage NAME COMMAND...: run it, print how long it took, remember a failure and go on. (Inside a
# command run this way `set -e` does not apply, so the stage functions chain their steps with &&.)
failed=""
stage() {
  local name=$1 start=$SECONDS
  shift
  echo "== $name: start $(date -u +%T)"
  if "$@"; then
    echo "== $name: passed in $((SECONDS - start)) s"
  else
    echo "== $name: FAILED in $((SECONDS - start)) s"
    failed="$failed $name"
  fi
}

echo "== camfast GPU check: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), stages:$stages"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {torch.cuda.get_device_name()}")
PYEOF
archs=${CAMFAST_CUDA_ARCHS:-$("$PY" -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")}
export CAMFAST_CUDA=1 CAMFAST_CUDA_ARCHS="$archs"

build() {
  echo "CUDA archs $archs, $MAX_JOBS build jobs" \
    && "$PY" setup.py build_ext --inplace \
    && "$PY" -c "import camfast; camfast.show_config(); assert camfast._extension.has_cpp('cuda'), 'no CUDA kernels'"
}

smoke() {
  "$PY" -m benchmarks.gpu_smoke --device cuda | tee "$out/smoke.txt"
}

# run_suite DIR LABEL: every test_*.py of DIR in its own pytest, TEST_JOBS at once, from DIR's parent.
run_suite() {
  local dir=$1 label=$2
  local jobs=${TEST_JOBS:-$((cores / 2 > 0 ? cores / 2 : 1))}
  local extra=()
  if "$PY" -c "import pytest_timeout" 2>/dev/null; then extra=(--timeout="${TEST_TIMEOUT:-300}"); fi
  mkdir -p "$out/$label" && : > "$out/$label.txt" || return 1
  echo "$(ls "$dir"/test_*.py | wc -l) test files, $jobs at a time, results in $out/$label.txt and $out/$label/"
  # shellcheck disable=SC2016
  ls "$dir"/test_*.py | PY=$PY out=$out label=$label PYTEST_EXTRA="${extra[*]}" \
    OMP_NUM_THREADS=$((cores / jobs > 0 ? cores / jobs : 1)) xargs -P "$jobs" -I{} bash -c '
    name=$(basename "$1" .py); start=$SECONDS
    if "$PY" -m pytest -q -rfEs -p no:cacheprovider $PYTEST_EXTRA "$1" --junitxml="$out/$label/$name.xml" \
         > "$out/$label/$name.log" 2>&1; then verdict=PASS; else verdict=FAIL; fi
    line="$verdict $name ($((SECONDS - start)) s): $(tail -n 1 "$out/$label/$name.log")"
    echo "$line" >> "$out/$label.txt"; echo "$line"' _ {}
  ! grep -q "^FAIL" "$out/$label.txt"
}

bench() {
  # shellcheck disable=SC2086
  "$PY" -m benchmarks --device cuda --out "$out/bench" ${BENCH_ARGS:-}
}

# The CUDA wheel, installed into a fresh location on the machine's own CUDA torch, away from the
# source tree, then smoke-tested and tested from there.
wheel() {
  rm -rf dist build/wheel-site build/wheel-tests \
    && "$PY" -m build --wheel --no-isolation --outdir dist \
    && "$PY" -m pip install -q --no-deps --no-index --target build/wheel-site dist/camfast-*.whl \
    && cp -r tests build/wheel-tests && cp dist/camfast-*.whl "$out/" \
    && (cd build && export PYTHONPATH="$PWD/wheel-site" && "$PY" "$root/scripts/smoke_installed.py" \
          && run_suite "$PWD/wheel-tests" wheel-tests)
}

if wants build; then stage build build; fi
if wants smoke; then stage smoke smoke; fi
if wants test; then stage test run_suite "$root/tests" tests; fi
if wants bench; then stage bench bench; fi
if wants wheel; then stage wheel wheel; fi

if [[ -n "$failed" ]]; then
  echo "== done, FAILED:$failed ($out)"
  exit 1
fi
echo "== done, all passed ($out)"
