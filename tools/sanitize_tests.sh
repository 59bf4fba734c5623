#!/usr/bin/env bash
# Runs the engine's tests (those that need no TensorFlow) against a build with AddressSanitizer and
# UndefinedBehaviorSanitizer (CMake option MNIST_ENGINE_SANITIZE). Any report aborts the run.
#   tools/sanitize_tests.sh            # uses .venv-asan/ (created if missing), builds in build/asan
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-asan
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q numpy pytest hypothesis
"$venv/bin/pip" install -q . -C cmake.define.MNIST_ENGINE_SANITIZE=ON -C build-dir=build/asan
# The interpreter is not instrumented, so the runtimes must be loaded first; leak checking would
# report CPython's own arena allocations.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_format.py tests/test_kernels.py tests/test_api.py \
  tests/test_dispatch.py tests/test_writer.py tests/test_properties.py tests/test_concurrency.py \
  tests/test_fuzz_corpus.py tests/test_precision.py tests/test_unit_order.py tests/test_activations.py \
  tests/test_input_range.py tests/test_spatial.py \
  -k "not meets_the_gates and not keras_int8 and not matches_keras and not onnx_graph"  # TensorFlow, onnxruntime: not in this venv

# The thread pool's claim protocol under ThreadSanitizer (its own small program: the Python
# interpreter cannot load a TSan build next to ASan).
unset LD_PRELOAD
g++ -std=c++17 -O1 -g -fsanitize=thread -Icpp/src cpp/testing/thread-pool-stress.cpp cpp/src/thread_pool.cpp \
  -o build/asan/thread-pool-stress -lpthread
TSAN_OPTIONS=halt_on_error=1 build/asan/thread-pool-stress
