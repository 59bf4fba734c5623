#!/usr/bin/env bash
# The AMX kernels on any CPU with AVX-512F: builds the engine with MNIST_ENGINE_AMX_MODEL=ON (the
# unmodified kernel sources compiled against cpp/testing/amx-model.h, a software model of the tile
# instructions from the Intel SDM's pseudo-code), checks the model (against plain matrix products,
# and against the instructions where the CPU has AMX), runs kernel_check on int8-amx and bf16-amx
# (required) against their scalar references, and then plants bugs in copies of the AMX sources to
# show the check catches each one. The engine is built once: a planted copy recompiles only the
# AMX sources in the same build directory, and its check stops at the first kernel out of its
# limit. (The other kernels meet the same references in the Python suite, tests/test_kernels.py.)
# Needs cmake, a C++17 compiler and the package installed (to write the models).
#   tools/amx_model_check.sh            (PYTHON=... picks the interpreter; default: python)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
build=build-amx-model  # not under build/: tests/test_build.py reads the wheel's build there
amx=int8-amx,bf16-amx
configure() {  # the directory the AMX sources are compiled from
  cmake -S . -B "$build" -DMNIST_ENGINE_PYTHON=OFF -DMNIST_ENGINE_TOOLS=ON -DMNIST_ENGINE_AMX_MODEL=ON \
    -DMNIST_ENGINE_AMX_SOURCE_DIR="$1" -DCMAKE_BUILD_TYPE=Release > /dev/null
}
configure "$PWD/cpp/kernels"
cmake --build "$build" -j "$(nproc)" > /dev/null

echo "== the model of AMX"
"$build/amx_model_test"

echo "== the AMX kernels on the model against their scalar references"
models="$build/models"
"$python" tools/kernel_check_models.py "$models"
"$build/kernel_check" --require int8-amx --require bf16-amx --only "$amx" "$models"/*.mnw \
  python/mnist_engine/models/*.mnw > "$build/kernel_check.txt" || { cat "$build/kernel_check.txt"; exit 1; }
grep -E -- '^(int8|bf16)-amx ' "$build/kernel_check.txt" | sort -t= -k2 -g | tail -n 2
grep -E '^kernels checked' "$build/kernel_check.txt"

echo "== planted bugs: each must fail the check"
plant() {  # name, the AMX source to change, sed expression applied to it, the models that reach it
  local dir="$build-plants/$1"
  mkdir -p "$dir"
  cp cpp/kernels/dense-amx.h cpp/kernels/u8s8-dense-32x32-amx.cpp cpp/kernels/bf16-dense-32x32-amx.cpp \
    cpp/kernels/conv-amx.h cpp/kernels/u8s8-conv-32x32-amx.cpp cpp/kernels/bf16-conv-32x32-amx.cpp "$dir/"
  sed -i "$3" "$dir/$2"
  if cmp -s "cpp/kernels/$2" "$dir/$2"; then
    echo "planting '$1' changed nothing: the kernel source moved on; update this script"; exit 1
  fi
  configure "$PWD/$dir"
  cmake --build "$build" -j "$(nproc)" --target kernel_check > /dev/null
  local out
  # shellcheck disable=SC2086  # $4 is a glob of model files
  if out=$("$build/kernel_check" --only "$amx" --stop-at-first-failure $4); then
    echo "planted bug '$1' was NOT caught"; exit 1
  fi
  local worst
  worst=$(grep -E -- '^(int8|bf16)-amx ' <<< "$out" | awk '{print $(NF-3)}' | sort -g | tail -n 1)
  echo "caught: $1 (AMX difference $worst)"
}
dense="$models/m_*.mnw"
conv="$models/cnn_*.mnw"
pooled="$models/cnn_pooled_*.mnw"
plant "drop the last K block" dense-amx.h \
  's/for (size_t u = 0; u < a.units; u += kAmxUnits)/for (size_t u = 0; u + kAmxUnits < a.units; u += kAmxUnits)/' \
  "$dense"
plant "read the second A slice one row off" dense-amx.h 's/x0 + 16 \* a.x_stride/x0 + 17 * a.x_stride/' "$dense"
plant "skip storing rows 16-31" dense-amx.h '/_tile_stored([23],/d' "$dense"
plant "conv drops the last window row" conv-amx.h 's/ky < a.window_h; ++ky/ky + 1 < a.window_h; ++ky/' "$conv"
plant "conv pools only the upper conv row" conv-amx.h 's/&sums\[16 + 2 \* i\]\[half\],/\&sums[2 * i][half],/' \
  "$pooled"
plant "conv at stride 1 runs rows padded_w - 1 wide" conv-amx.h \
  's/conv_run<Op>(a, a.x, a.out_h \* a.padded_w, a.channels, a.padded_w, a.y)/conv_run<Op>(a, a.x, a.out_h * (a.padded_w - 1), a.channels, a.padded_w - 1, a.y)/' \
  "$conv"
plant "bf16 conv pools without the last pixel" bf16-conv-32x32-amx.cpp \
  's/sums(s10)), sums(s11))/sums(s10)), sums(s10))/' "$pooled"
configure "$PWD/cpp/kernels"  # leave the build as the real sources make it
echo "AMX on the model: every check passed, and every planted bug was caught"
