"""The benchmark harness runs end to end in its quick mode. It asserts what the report contains and
that every runner computed the right answer, never how fast anything was."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import mnist_engine
from conftest import require
from mnist_engine.model_file import DenseLayer

ROOT = Path(__file__).resolve().parent.parent


def test_quick_bench_reports_every_runner(mnist, keras, tmp_path):
    command = [sys.executable, str(ROOT / "tools" / "bench.py"), "--quick", "--json", str(tmp_path / "b.json"),
               "--plot", str(tmp_path / "b.png"), "--markdown"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "b.json").read_text())
    names = [r["name"] for r in report["results"]]
    for kernel in mnist_engine.available_kernels("fp32"):
        assert f"mnist_engine {kernel} fp32" in names
    for precision in mnist_engine.available_precisions()[1:]:
        kernels = [k for k in mnist_engine.available_kernels(precision) if not k.endswith("scalar")]
        assert {f"mnist_engine {k}" for k in kernels} <= set(names)
        auto = mnist_engine.load(mnist_engine.default_model_path(), precision=precision)
        small = auto.kernel_for_rows(1)
        label = kernels[0] if small == kernels[0] else f"{kernels[0]} (batch 1: {small})"
        assert f"mnist_engine {label} uint8 in" in names
    assert "numpy float32" in names and "keras predict bs=10000" in names
    assert report["reference"] == "keras predict" and report["peak_gflops"] > 0
    for r in report["results"]:
        assert r["batch_ms"] > 0 and r["b1_us"] > 0
        if r["name"].endswith(("fp32", "fp32 uint8 in")) or r["name"] == "numpy float32":
            assert r["max_abs_diff"] <= 1e-5 and r["agreement"] == 10000, r
        elif r["name"].startswith("mnist_engine"):  # bf16, int8: the gates of tests/test_precision.py
            assert r["max_abs_diff"] < 0.05 and r["agreement"] >= 9990, r
        assert r["accuracy"] > 0.9, r
    # Runners that could not run say why instead of vanishing.
    for family in ("onnxruntime", "tflite", "openvino"):
        ran = any(n.startswith(family) for n in names)
        said = any(line.startswith(family) or f", {family}" in line for line in report["skipped"])
        assert ran or said, (family, report["skipped"])
    assert report["rss_growth_mib"] >= 0 and report["load_verify_ms"] > 0
    assert (tmp_path / "b.png").stat().st_size > 1000
    assert "x tfl" in out.stdout and "Lower is better" in out.stdout and "| runner | 10k ms |" in out.stdout
    if "onnxruntime dynamic int8" in names:
        engine_rows = [r for r in report["results"] if r["name"].startswith("mnist_engine")]
        assert all(r["vs_quant_batch"] > 0 for r in engine_rows)
    assert report["gil_two_thread_speedup"] > 0


def test_bench_of_another_model_from_another_directory(mnist, keras, tmp_path, rng):
    """`mnist-engine bench --model X` run outside the repository: every activation goes through the
    numpy runner, no Keras model stands in for X, and a Keras model that is not X's source is an
    error rather than a silently meaningless comparison."""
    from helpers import random_layers

    model = tmp_path / "other.mnw"
    mnist_engine.write_model(model, random_layers(rng, [784, 40, 30, 10], ["tanh", "sigmoid", "softmax"]))
    command = [sys.executable, "-m", "mnist_engine.cli", "bench", "--quick", "--model", str(model), "--json", "b.json"]
    out = subprocess.run(command + ["--busy", "1"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["busy"] == 1 and "1 busy process(es)" in out.stdout
    for r in report["results"]:  # every runner timed a second time, under the load
        assert r["busy_batch_ms"] > 0 and r["busy_b1_us"] > 0 and r["busy_b1_p99_us"] >= r["busy_b1_us"], r
    assert report["reference"] == "numpy float64 reference"
    assert any("no Keras source for --model" in line for line in report["skipped"])
    numpy_row = next(r for r in report["results"] if r["name"] == "numpy float32")
    assert numpy_row["max_abs_diff"] <= 1e-5 and numpy_row["agreement"] == 10000

    mismatched = command[:-2] + ["--keras-model", str(ROOT / "models" / "mnist_mlp_512x2.keras")]
    out = subprocess.run(mismatched, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 2 and "does not compute --model" in out.stderr and "Traceback" not in out.stderr


def test_the_numpy_and_onnx_runners_run_every_engine_op(rng):
    """The bench's own numpy and ONNX (hence OpenVINO) versions of a model compute what the float64
    reference does, for every op of the format (dense, scale_shift, layer_norm)."""
    from mnist_engine.bench import numpy_runner, onnx_runners
    from mnist_engine.model_file import LayerNormLayer, ScaleShiftLayer
    from mnist_engine.reference import forward

    require("onnxruntime")
    layers = [DenseLayer(rng.normal(0, 0.3, (12, 16)), rng.normal(0, 0.1, 16), "relu"),
              LayerNormLayer(rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.2, 16), 1e-3, "gelu"),
              ScaleShiftLayer(rng.uniform(0.5, 2, 16), rng.normal(0, 0.3, 16), "tanh"),
              DenseLayer(rng.normal(0, 0.3, (16, 5)), rng.normal(0, 0.1, 5), "softmax")]
    x = rng.normal(0, 2, (64, 12)).astype(np.float32)
    want = forward(layers, x)
    for runner in [numpy_runner(layers, x), onnx_runners(layers, x, threads=1)[0]]:
        np.testing.assert_allclose(runner.batch(), want, atol=2e-6, err_msg=runner.name)


def test_the_onnx_runner_runs_the_spatial_ops_in_their_layouts(rng):
    """The bench's ONNX form of a CNN (NHWC rows in, NCHW images inside, NHWC rows again before a
    dense layer) computes what the float64 reference does: every spatial op, padding both ways,
    average pooling with and without the padding counted, and a spatial last layer."""
    from mnist_engine.bench import onnx_runners
    from mnist_engine.model_file import Conv2DLayer, PoolLayer, multiply_adds
    from mnist_engine.reference import forward

    require("onnxruntime")
    conv = Conv2DLayer(rng.normal(0, 0.3, (3, 2, 2, 5)), rng.normal(0, 0.1, 5), (9, 8, 2), (2, 1), (1, 0, 1, 1), "relu")
    pool = PoolLayer("avg_pool", conv.output_shape, (2, 2), (1, 2), (1, 0, 0, 1), count_padding=True)
    same = PoolLayer("avg_pool", pool.output_shape, (2, 2), (1, 1), (0, 1, 0, 1))
    head = [DenseLayer(rng.normal(0, 0.3, (int(np.prod(same.output_shape)), 4)), rng.normal(0, 0.1, 4), "softmax")]
    last = PoolLayer("max_pool", same.output_shape, (2, 2), (1, 1))
    tail = [last, PoolLayer("global_max_pool", last.output_shape)]
    x = rng.normal(0, 1, (16, 144)).astype(np.float32)
    for layers in ([conv, pool, same] + head, [conv, pool, same] + tail,
                   [conv, PoolLayer("global_avg_pool", conv.output_shape)]):
        runner = onnx_runners(layers, x, threads=1)[0]
        ops = [layer.op for layer in layers]
        np.testing.assert_allclose(runner.batch(), forward(layers, x), atol=2e-6, err_msg=str(ops))
    assert multiply_adds(conv) == (4 * 9) * (3 * 2 * 2) * 5 and multiply_adds(pool) == 0


def test_the_busy_processes_run_during_the_block_and_end_with_it():
    from mnist_engine.bench import BusyProcesses

    with BusyProcesses(2) as busy:
        assert len(busy.processes) == 2 and all(p.poll() is None for p in busy.processes)
    assert all(p.returncode is not None for p in busy.processes)


def synthetic_report(busy: int = 0) -> dict:
    """A report as bench.run returns it, with long runner names like the real ones."""
    names = ["mnist_engine avx512 fp32", "mnist_engine bf16-amx (batch 1: bf16-avx512bf16) uint8 in",
             "tflite fp32", "onnxruntime dynamic int8"]
    results = [{"name": n, "batch_ms": 12.5 * (i + 1), "images_per_s": 1e6 / (i + 1), "gflops": 100.0 / (i + 1),
                "peak_pct": 50.0, "b1_us": 3.2 * (i + 1), "max_abs_diff": 1.5e-6, "agreement": 10000,
                "accuracy": 0.9775, "vs_tflite_batch": (i + 1) / 3, "vs_tflite_b1": (i + 1) / 3,
                "vs_quant_batch": (i + 1) / 4, "vs_quant_b1": None, "busy_batch_ms": 20.0, "busy_b1_us": 4.0,
                "b1_p99_us": 9.0, "busy_b1_p99_us": 11.0, "busy_vs_tflite_batch": 0.5} for i, n in enumerate(names)]
    return {"mnist_engine": "0.1.0", "commit": "abc1234", "date": "2026-12-08T01:00:00",
            "cpu": "AMD EPYC (Zen 5, AVX-512 F/BW/VL/VNNI/BF16, AVX-VNNI, no AMX)", "cores": 2, "threads": 2,
            "peak_gflops": 234.0, "kernels": ["avx512", "avx2", "scalar", "bf16-avx512bf16", "bf16-scalar",
                                              "int8-avx512vnni", "int8-avxvnni", "int8-avx2", "int8-scalar"],
            "images": 10000, "accuracy": 0.9775, "reference": "keras predict", "import_ms": 50.0,
            "import_own_ms": 10.0, "load_verify_ms": 2.0, "rss_growth_mib": 1.0, "output_mib": 0.4,
            "gil_two_thread_speedup": 1.9, "busy": busy, "results": results,
            "skipped": ["openvino: not installed (pip install openvino); its runner was skipped"]}


def test_the_default_table_fits_100_columns_and_wide_has_every_column():
    from mnist_engine.bench import format_table

    for busy in (0, 1):
        table = format_table(synthetic_report(busy))
        assert max(len(line) for line in table.splitlines()) <= 100, table
        assert "Lower is better" in table and "runner" in table and " GFLOP/s " not in table
        # A name longer than the runner column stands alone above its numbers.
        lines = table.splitlines()
        long_name = lines.index("mnist_engine bf16-amx (batch 1: bf16-avx512bf16) uint8 in")
        assert lines[long_name + 1].split() == ["25.00", "6.4", "1.5e-06", "10000", "0.67", "0.67", "0.50", "-"]
        assert ("busy" in table) == bool(busy)
    wide = format_table(synthetic_report(), wide=True)
    assert " GFLOP/s " in wide and "acc %" in wide and max(len(line) for line in wide.splitlines()) > 100
