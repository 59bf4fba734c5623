#!/usr/bin/env bash
# Cross-builds the engine for AArch64 and runs cpp/tools/kernel_check under qemu: the NEON kernel
# against the scalar reference on models of awkward widths and on the bundled model. Needs
# g++-aarch64-linux-gnu and qemu-user (Debian packages) and the dev package installed (to write
# the test models).
#   tools/arm_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-arm64
cmake -S . -B "$build" -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DMNIST_ENGINE_PYTHON=OFF -DMNIST_ENGINE_TOOLS=ON \
  -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" -j "$(nproc)" > /dev/null
models="$build/models"
python tools/kernel_check_models.py "$models"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$build/kernel_check" "$models"/*.mnw python/mnist_engine/models/*.mnw | tail -n 3
