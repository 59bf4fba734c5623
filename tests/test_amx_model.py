"""The AMX kernels on every CPU with AVX-512F: tools/amx_model_check.sh builds them against the
software model of the tile instructions (cpp/testing/amx-model.h), checks the model, holds int8-amx
bit-exact and bf16-amx within its limit to the scalar references, and shows that bugs planted in
the dense and conv tile kernels are caught. On a CPU with AMX the model is also compared with the
instructions themselves. Its own build takes minutes, so it is not in the default run (pyproject.toml
deselects the own_build marker): `python -m pytest -m own_build`, a step of its own in .ci/run."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import mnist_engine
from test_build import need

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.own_build
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="AMX is x86-64 only")
def test_amx_kernels_on_the_software_model():
    if "avx512" not in mnist_engine.available_kernels():
        pytest.skip("the AMX kernels' epilogues are AVX-512: this CPU cannot run them, even on the model")
    need("cmake")
    need(os.environ.get("CXX", "c++"))
    result = subprocess.run([str(ROOT / "tools/amx_model_check.sh")], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable}, timeout=900)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "AMX model: every check passed" in out
    checked = next(line for line in out.splitlines() if line.startswith("kernels checked: "))
    assert "int8-amx" in checked and "bf16-amx" in checked and checked.endswith("every one within its limit")
    for bug in ("drop the last K block", "read the second A slice one row off", "skip storing rows 16-31"):
        assert f"caught: {bug}" in out
    if mnist_engine._core.cpu_runs_amx():
        assert "TDPBUSD: the model equals the instruction" in out
        assert "TDPBF16PS: the model equals the instruction" in out
