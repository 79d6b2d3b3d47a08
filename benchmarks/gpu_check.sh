#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU and a CUDA build of torch (2.11 or newer),
#   1. builds camfast._C with the CUDA kernels,
#   2. runs the whole test suite on CUDA (every backend against the reference, gradcheck,
#      opcheck, torch.compile),
#   3. runs the benchmarks on CUDA,
#   4. builds the CUDA wheel, installs it into a fresh environment and runs the tests from it,
# writing a log, the test reports and the benchmark CSV and plot into OUT_DIR.
#
# usage: benchmarks/gpu_check.sh OUT_DIR [build|test|bench|wheel|all]...   (default: all)
# Stages can run in separate invocations (each after `build`). Needs no network.
# Environment: PYTHON (default python3), CAMFAST_CUDA_ARCHS (default: the GPU's own arch).
set -euo pipefail

out=$(realpath -m "${1:?usage: benchmarks/gpu_check.sh OUT_DIR [build|test|bench|wheel|all]...}")
shift
stages=${*:-all}
mkdir -p "$out"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
exec > >(tee -a "$out/gpu_check.log") 2>&1

wants() { [[ " $stages " == *" $1 "* || " $stages " == *" all "* ]]; }

echo "== camfast GPU check: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
"$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {torch.cuda.get_device_name()}")
PYEOF
archs=${CAMFAST_CUDA_ARCHS:-$("$PY" -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")}

if wants build; then
  echo "== build (CUDA archs: $archs)"
  CAMFAST_CUDA=1 CAMFAST_CUDA_ARCHS="$archs" MAX_JOBS=${MAX_JOBS:-16} "$PY" setup.py build_ext --inplace
  "$PY" -c "import camfast; camfast.show_config()"
fi

if wants test; then
  echo "== tests on CUDA"
  "$PY" -m pytest -q -rfEs --junitxml="$out/tests-source.xml"
fi

if wants bench; then
  echo "== benchmarks on CUDA"
  "$PY" -m benchmarks --device cuda
  cp benchmarks/data/cuda-*.csv benchmarks/data/cuda-*.png "$out/"
fi

if wants wheel; then
  echo "== CUDA wheel: build, install into a fresh environment, test from the install"
  rm -rf dist build/wheel-site build/wheel-tests
  CAMFAST_CUDA=1 CAMFAST_CUDA_ARCHS="$archs" "$PY" -m build --wheel --no-isolation --outdir dist
  # A fresh install location on the machine's own CUDA torch, away from the source tree.
  "$PY" -m pip install -q --no-deps --no-index --target build/wheel-site dist/camfast-*.whl
  cp -r tests build/wheel-tests
  (cd build && export PYTHONPATH="$PWD/wheel-site" \
     && "$PY" "$OLDPWD/scripts/smoke_installed.py" \
     && "$PY" -m pytest -q -rfEs -p no:cacheprovider wheel-tests --junitxml="$out/tests-wheel.xml")
  cp dist/camfast-*.whl "$out/" 2>/dev/null || true
fi
echo "== done: $out"
