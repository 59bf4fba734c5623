"""The benchmark harness runs end to end in its quick mode. It asserts what the report contains and
that every runner computed the right answer, never how fast anything was."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mnist_engine

ROOT = Path(__file__).resolve().parent.parent


def test_quick_bench_reports_every_runner(mnist, keras, tmp_path):
    command = [sys.executable, str(ROOT / "tools" / "bench.py"), "--quick", "--json", str(tmp_path / "b.json"),
               "--plot", str(tmp_path / "b.png"), "--markdown"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "b.json").read_text())
    names = [r["name"] for r in report["results"]]
    for kernel in mnist_engine.available_kernels():
        assert f"mnist_engine {kernel} fp32" in names
    assert "numpy float32" in names and "keras predict bs=10000" in names
    assert report["reference"] == "keras predict" and report["peak_gflops"] > 0
    for r in report["results"]:
        assert r["batch_ms"] > 0 and r["b1_us"] > 0
        if r["name"].startswith("mnist_engine") or r["name"] in ("numpy float32", "tflite fp32"):
            assert r["max_abs_diff"] <= 1e-5 and r["agreement"] == 10000, r
    # Runners that could not run say why instead of vanishing.
    for family in ("onnxruntime", "tflite"):
        ran = any(n.startswith(family) for n in names)
        said = any(line.startswith(family) or f", {family}" in line for line in report["skipped"])
        assert ran or said, (family, report["skipped"])
    assert report["rss_growth_mib"] >= 0 and report["load_verify_ms"] > 0
    assert (tmp_path / "b.png").stat().st_size > 1000
    assert "x tfl 10k" in out.stdout and "| runner | 10k ms |" in out.stdout
    assert report["gil_two_thread_speedup"] > 0
