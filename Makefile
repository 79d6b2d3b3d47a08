# The two commands a newcomer needs:
#   make test    tests in a fresh .venv (builds camfast._C, compile-checks the CUDA sources)
#   make bench   the benchmark suite in .venv-bench: camfast vs the references and the peers;
#                results go to bench-results/ (git-ignored), the tree stays clean
# Both install torch==2.13.0 first: an unpinned torch would pull a multi-GB CUDA build.
# Maintainers: `make bench-publish` copies bench-results/ into the committed benchmarks/data/ and
# regenerates the tables in README.md and docs/benchmarks.md.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
TORCH ?= torch==2.13.0
# The Triton the GPU machines run; its CPU interpreter needs NumPy < 2.4.
TRITON ?= triton==3.6.0
TEST_VENV := .venv
BENCH_VENV ?= .venv-bench
BENCH_OUT := bench-results
BASE_DEPS := $(TRITON) "numpy>=1.24,<2.4" ninja pytest pytest-benchmark opencv-python-headless matplotlib tqdm build wheel
# Stateful, distributed metrics (the `metrics` extra) and the ONNX export tests.
EXTRA_DEPS := torchmetrics onnx onnxscript onnxruntime
# Peers are installed without their dependencies (see benchmarks/peers.py), after torch: a normal
# resolve would pull a CUDA torch and torchvision. Tests and benchmarks both check against them.
PEERS := grad-cam==1.5.7 torchcam==0.5.0 captum==0.9.0
PEER_DEPS := scipy scikit-learn ttach pillow packaging

# One recipe for both environments: torch first, then everything else against it.
define make_venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install -q --upgrade pip
	$(1)/bin/pip install -q $(TORCH)
	$(1)/bin/pip install -q $(BASE_DEPS) $(EXTRA_DEPS) $(PEER_DEPS)
	$(1)/bin/pip install -q --no-deps $(PEERS)
	touch $(1)/.ready
endef

.PHONY: test sanitize bench bench-quick bench-publish demo cuda-check wheel wheel-check clean

%/.ready:
	$(call make_venv,$*)

test: $(TEST_VENV)/.ready
	$(TEST_VENV)/bin/pip install -q --no-build-isolation --no-deps -e .
	$(MAKE) cuda-check VENV=$(TEST_VENV)
	$(TEST_VENV)/bin/python -m pytest

bench: $(BENCH_VENV)/.ready
	$(BENCH_VENV)/bin/pip install -q --no-build-isolation --no-deps -e .
	$(BENCH_VENV)/bin/python -m benchmarks --out $(BENCH_OUT)
	$(BENCH_VENV)/bin/python -m benchmarks.cam_peer_check --out $(BENCH_OUT)

# The same run with small shapes and short timings, into bench-results/quick/ (never published).
# CI runs it (with BENCH_VENV=.venv) so the benchmarks cannot rot between full runs.
bench-quick: $(BENCH_VENV)/.ready
	$(BENCH_VENV)/bin/pip install -q --no-build-isolation --no-deps -e .
	$(BENCH_VENV)/bin/python -m benchmarks --quick --out $(BENCH_OUT)/quick
	$(BENCH_VENV)/bin/python -m benchmarks.cam_peer_check --quick --out $(BENCH_OUT)/quick

# Maintainers, after `make bench` on a quiet machine: merge bench-results/*.csv into the committed
# benchmarks/data/, redraw its plots, regenerate README.md's headline table and docs/benchmarks.md.
bench-publish: $(BENCH_VENV)/.ready
	$(BENCH_VENV)/bin/python -m benchmarks.results --source $(BENCH_OUT)

# The WSOL demo: trains a tiny CNN three times on a synthetic set, prints the localization table
# and writes wsol_demo.png.
demo: $(TEST_VENV)/.ready
	$(TEST_VENV)/bin/pip install -q --no-build-isolation --no-deps -e .
	$(TEST_VENV)/bin/python -m camfast.wsol.demo

# Compile every csrc/cuda/*.cu with nvcc against the installed torch's stable-ABI headers, for
# sm_80 and sm_90. Runs without a GPU: a CUDA file that does not compile fails here, and so does
# a register spill in ptxas's resource report (kept in build/cuda-check/ptxas.log).
VENV ?= $(TEST_VENV)
NVCC := $(shell command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
cuda-check:
ifeq ($(NVCC),)
	@echo "cuda-check: nvcc not found, skipped"
else
	cmake -S . -B build/cuda-check -DCMAKE_CUDA_COMPILER=$(NVCC) \
	  -DPython_EXECUTABLE=$(abspath $(VENV))/bin/python > /dev/null
	cmake --build build/cuda-check --clean-first -j 2 > build/cuda-check/ptxas.log 2>&1 \
	  || { grep -E -A3 "error|warning" build/cuda-check/ptxas.log; exit 1; }
	@echo "cuda-check: $$(grep -c "ptxas info    : Used" build/cuda-check/ptxas.log) kernel builds, report in build/cuda-check/ptxas.log"
	@! grep -B2 -E "[1-9][0-9]* bytes spill" build/cuda-check/ptxas.log
endif

# The CPU kernels once more under AddressSanitizer and UndefinedBehaviorSanitizer (setup.py's
# CAMFAST_SANITIZE), built into build/sanitize so that camfast/_C*.so is left alone, and loaded
# through CAMFAST_EXTENSION_PATH by the tests of every op (tests/test_<op>.py), of every entry point,
# of the exact-sums bounds (unvectorised at -O1, so they do not rest on vectorisation),
# of the WSOL sweep, of ROAD's imputation and of the pool of large outputs; the Triton tests run no
# C++ and are skipped. Any report aborts pytest, so the target fails. Python is not built with
# ASan: its runtime is preloaded, and libstdc++ with it, or ASan cannot find the real __cxa_throw
# and aborts on the first C++ exception. Python leaks by design, hence no leak check. pytest
# captures only Python's streams, so that a report written to file descriptor 2 reaches the log.
# Run after `make test` (or with VENV=).
SANITIZE_DIR := build/sanitize
SANITIZE_TESTS := tests/test_entry_points.py tests/test_exact_sums.py tests/test_wsol.py tests/test_metrics.py::test_impute_matches_sparse_direct_solve \
  tests/test_metrics.py::test_impute_edge_cases tests/test_large_outputs.py
sanitize:
	mkdir -p $(SANITIZE_DIR)
	CAMFAST_SANITIZE=1 $(VENV)/bin/python setup.py build_ext --build-lib $(SANITIZE_DIR) \
	  --build-temp $(SANITIZE_DIR)/temp > $(SANITIZE_DIR)/build.log 2>&1 || { tail -40 $(SANITIZE_DIR)/build.log; exit 1; }
	CAMFAST_EXTENSION_PATH=$(abspath $(SANITIZE_DIR))/camfast/_C.so \
	LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libstdc++.so)" \
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(VENV)/bin/python -m pytest -q -m "not triton" --capture=sys $(SANITIZE_TESTS) \
	  $$($(VENV)/bin/python -c 'import camfast.reference as r; print(*(f"tests/test_{op}.py" for op in r.__all__))')

# One abi3 wheel per platform (cp310+, torch >= 2.11), built against the installed torch.
wheel: $(TEST_VENV)/.ready
	rm -rf dist && $(TEST_VENV)/bin/python -m build --wheel --no-isolation --outdir dist

# Install the wheel into a fresh environment holding only torch, and smoke-test it there.
WHEEL_VENV := build/wheel-venv
wheel-check: wheel
	rm -rf $(WHEEL_VENV) && $(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install -q $(TORCH)
	$(WHEEL_VENV)/bin/pip install -q dist/camfast-*.whl
	cd /tmp && $(abspath $(WHEEL_VENV))/bin/python $(abspath scripts/smoke_installed.py)

clean:
	rm -rf build dist *.egg-info camfast/_C*.so
