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
mkdir -p "$models"
python - "$models" <<'PY'
import sys
import numpy as np
import mnist_engine
from mnist_engine.model_file import DenseLayer
rng = np.random.default_rng(0)
for a in (1, 3, 17, 33, 65, 784):
    for b in (1, 5, 31, 32, 33, 100):
        layers = [DenseLayer(rng.normal(size=(a, b)) / np.sqrt(a), rng.normal(size=b) * 0.1, "relu"),
                  DenseLayer(rng.normal(size=(b, 7)) / np.sqrt(b), rng.normal(size=7) * 0.1, "softmax")]
        mnist_engine.write_model(f"{sys.argv[1]}/m_{a}_{b}.mnw", layers)
PY
qemu-aarch64 -L /usr/aarch64-linux-gnu "$build/kernel_check" "$models"/*.mnw python/mnist_engine/models/*.mnw | tail -n 3
