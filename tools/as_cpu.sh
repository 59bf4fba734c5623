#!/usr/bin/env bash
# Runs a command as another kind of x86-64 CPU would: MNIST_ENGINE_DISABLE_KERNELS lists the kernels
# that kind cannot run, so the engine lists, chooses and refuses kernels as it would there. A CPU
# cannot act as one with more than it has: on an AVX2 machine every kind below acts as AVX2.
#   tools/as_cpu.sh KIND COMMAND...       e.g. tools/as_cpu.sh zen4 python -m pytest tests/test_spatial.py
#   tools/as_cpu.sh --kinds               the kinds, one per line
# The kinds are the ones the engine is built for (docs/PERFORMANCE.md, "Kernels"):
#   amx     Intel Xeon 4th gen+ (Sapphire Rapids): AMX-INT8/BF16, AVX-512 VNNI/BF16, AVX-VNNI: every kernel
#   zen5    AMD Zen 5: AVX-512 VNNI/BF16 and AVX-VNNI, no AMX
#   zen4    AMD Zen 4: AVX-512 VNNI/BF16, no AVX-VNNI (the VEX encoding), no AMX
#   avx512  Skylake-SP: AVX-512F, no VNNI, no BF16
#   avx2    Haswell to Zen 3: AVX2 + FMA only
set -euo pipefail
declare -A disabled=(
  [amx]=""
  [zen5]="int8-amx,bf16-amx"
  [zen4]="int8-amx,bf16-amx,int8-avxvnni"
  [avx512]="int8-amx,bf16-amx,int8-avxvnni,int8-avx512vnni,bf16-avx512bf16"
  [avx2]="int8-amx,bf16-amx,int8-avxvnni,int8-avx512vnni,bf16-avx512bf16,avx512"
)
if [ "${1:-}" = "--kinds" ]; then
  printf '%s\n' amx zen5 zen4 avx512 avx2
  exit 0
fi
kind="${1:-}"
if [ -z "$kind" ] || [ -z "${disabled[$kind]+set}" ] || [ $# -lt 2 ]; then
  echo "usage: tools/as_cpu.sh {amx|zen5|zen4|avx512|avx2} COMMAND... (got: ${*:-nothing})" >&2
  exit 2
fi
shift
if [ -n "${disabled[$kind]}" ]; then
  export MNIST_ENGINE_DISABLE_KERNELS="${disabled[$kind]}"
else
  unset MNIST_ENGINE_DISABLE_KERNELS
fi
exec "$@"
