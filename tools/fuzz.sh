#!/usr/bin/env bash
# Builds the libFuzzer harness (fuzz/fuzz_loader.cpp, clang with ASan+UBSan) and fuzzes the loader
# and loader+predict, starting from fuzz/corpus.
#   tools/fuzz.sh [SECONDS]            # default 60; new inputs go to build-fuzz/corpus
# A crash leaves build-fuzz/crash-*: copy it to fuzz/regressions/ (tests/test_fuzz_corpus.py replays
# that folder) and fix the cause.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
CXX=clang++ cmake -S . -B build-fuzz -DMNIST_ENGINE_FUZZ=ON -DMNIST_ENGINE_PYTHON=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build build-fuzz -j "$(nproc)" > /dev/null
mkdir -p build-fuzz/corpus
status=0
./build-fuzz/fuzz/fuzz_loader build-fuzz/corpus fuzz/corpus fuzz/regressions -fork="$(nproc)" \
  -max_total_time="$seconds" -artifact_prefix=build-fuzz/ > build-fuzz/fuzz.log 2>&1 || status=$?
grep -E '^#[0-9]+:' build-fuzz/fuzz.log | tail -n 1 || true   # executions, coverage, crashes
if [ "$status" -ne 0 ]; then
  tail -n 40 build-fuzz/fuzz.log
  echo "fuzzer failed (exit $status); the input is in build-fuzz/" >&2
fi
exit "$status"
