"""The benchmark of record: one process, one model, the same 10,000 MNIST test images for every
runner. Runners whose package is missing are skipped with a line saying so.

    python tools/bench.py [--threads N] [--json out.json] [--plot out.png] [--quick]

For each runner (every kernel of every precision this CPU runs, and the peers: Keras, TFLite fp32
and dynamic int8, ONNX Runtime fp32 and dynamic int8, OpenVINO at its default precision, numpy):
best-of-N time for the 10k batch after a warm-up, median batch-1 latency over many calls,
images/s, useful GFLOP/s (dense multiply-adds x 2, whether or not a runner skips zeros) and its
share of this machine's fp32 FMA peak (measured here), max |dp| and argmax agreement against Keras
(or the float64 numpy reference without Keras), accuracy, and the time ratios to TFLite fp32 and
to the fastest quantized peer of the run.
Timing goals live here, never in tests.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

import mnist_engine
from mnist_engine._progress import progress
from mnist_engine._system import cpu_name
from mnist_engine.model_file import SPATIAL_OPS, DenseLayer, multiply_adds, read_layers
from mnist_engine.reference import ACTIVATION_FUNCTIONS, forward, scale_pixels

# The bundled models' Keras sources, kept in the repository (not in the wheel): models/NAME.keras
# beside python/mnist_engine/models/NAME.mnw.
KERAS_DIR = Path("models")


@dataclass
class Runner:
    name: str
    batch: Callable[[], np.ndarray]  # predicts the whole test set, returns (N, 10)
    one: Callable[[int], np.ndarray]  # predicts image i alone, as a batch of one
    note: str = ""


@dataclass
class Result:
    name: str
    batch_ms: float
    images_per_s: float
    gflops: float
    peak_pct: float
    b1_us: float
    max_abs_diff: float
    agreement: int
    vs_tflite_batch: Optional[float] = None
    vs_tflite_b1: Optional[float] = None
    vs_quant_batch: Optional[float] = None  # over the fastest quantized peer of the run
    vs_quant_b1: Optional[float] = None
    accuracy: float = float("nan")  # argmax vs the MNIST labels
    note: str = ""
    b1_p99_us: float = float("nan")
    # The same runner timed again with --busy processes running (None without --busy).
    busy_batch_ms: Optional[float] = None
    busy_b1_us: Optional[float] = None
    busy_b1_p99_us: Optional[float] = None
    busy_vs_tflite_batch: Optional[float] = None


def is_quantized_peer(name: str) -> bool:
    """The other runtimes' approximate modes: TFLite and ORT dynamic int8, OpenVINO's default."""
    return name in ("tflite dynamic int8", "onnxruntime dynamic int8") or name.startswith("openvino")


@dataclass
class Settings:
    threads: int
    batch_repeats: int
    b1_calls: int
    keras_model: Optional[Path]  # the Keras source of `model`, if known
    model: Path
    skipped: List[str] = field(default_factory=list)
    busy: int = 0  # busy processes to time every runner under as well


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class BusyProcesses:
    """N plain Python busy loops at normal priority while the block runs: another process sharing
    the cores, as a server's neighbours, a CI box or a second worker are."""

    def __init__(self, n: int):
        self.n, self.processes = n, []

    def __enter__(self):
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        time.sleep(0.2)  # running, not starting up
        return self

    def __exit__(self, *exc):
        for p in self.processes:
            p.kill()
        for p in self.processes:
            p.wait()


def time_runner(r: Runner, s: Settings, n_images: int) -> tuple:
    """(best whole-set seconds, median and 99th percentile batch-1 seconds)."""
    r.batch()  # warm-up: allocations, thread pools, lazy graph building
    best = float("inf")
    for _ in range(s.batch_repeats):
        t0 = time.perf_counter()
        r.batch()
        best = min(best, time.perf_counter() - t0)
    for i in range(min(100, s.b1_calls)):
        r.one(i)
    samples = []
    for i in range(s.b1_calls):
        t0 = time.perf_counter()
        r.one(i % n_images)
        samples.append(time.perf_counter() - t0)
    return best, float(np.median(samples)), float(np.percentile(samples, 99))


# ---- runners ------------------------------------------------------------------------------------

def _conv_note(engine, kernel: str) -> str:
    """What runs the conv layers where that is not the named kernel (an int8 kernel without an
    int8 convolution borrows one; AMX hands narrow layers to VNNI; bf16 runs them in fp32)."""
    conv = engine.conv_kernel
    return f" (conv: {conv})" if conv and conv != kernel else ""


def engine_runners(s: Settings, x: np.ndarray, pixels: np.ndarray) -> List[Runner]:
    """Every kernel of every precision this CPU runs (the reduced-precision scalar references are
    test oracles, hundreds of times slower, and are left out), then each precision's best kernel
    on raw uint8 pixels, which int8 feeds to its first layer as they are."""
    runners = []
    for kernel in mnist_engine.available_kernels():
        precision = mnist_engine._core.kernel_precision(kernel)
        if precision != "fp32" and kernel.endswith("scalar"):
            s.skipped.append(f"mnist_engine {kernel}: not timed (a test reference)")
            continue
        e = mnist_engine.load(s.model, kernel=kernel)
        name = f"mnist_engine {kernel}" + (" fp32" if precision == "fp32" else "") + _conv_note(e, kernel)
        runners.append(Runner(name, lambda e=e: e.predict(x, threads=s.threads), lambda i, e=e: e.predict(x[i:i + 1])))
    for precision in mnist_engine.available_precisions():
        best = mnist_engine.load(s.model, precision=precision)
        # An automatic AMX engine runs small batches on its partner kernel: the batch-1 column is that one's.
        small = best.kernel_for_rows(1)
        kernels = best.kernel if small == best.kernel else f"{best.kernel} (batch 1: {small})"
        name = f"mnist_engine {kernels}" + (" fp32" if precision == "fp32" else "") + _conv_note(best, best.kernel)
        name += " uint8 in"
        runners.append(Runner(name, lambda e=best: e.predict(pixels, threads=s.threads),
                              lambda i, e=best: e.predict(pixels[i:i + 1]), "raw pixels"))
    return runners


def _numpy_operation(layer, h: np.ndarray) -> np.ndarray:
    """A layer's operation in float32, as a numpy user would write it."""
    if layer.op == "dense":
        return h @ layer.kernel + layer.bias
    if layer.op == "scale_shift":
        return h * layer.scale + layer.shift
    mean = h.mean(axis=1, keepdims=True)
    centered = h - mean
    variance = (centered * centered).mean(axis=1, keepdims=True)
    return centered / np.sqrt(variance + np.float32(layer.epsilon)) * layer.gamma + layer.beta


def numpy_runner(layers: Sequence[DenseLayer], x: np.ndarray) -> Runner:
    # The reference's activation functions, applied in float32 here: every activation the format
    # has, from the one table that lists them.
    def run(batch: np.ndarray) -> np.ndarray:
        h = batch
        for layer in layers:
            h = ACTIVATION_FUNCTIONS[layer.activation](_numpy_operation(layer, h), *layer.parameters)
        return h

    return Runner("numpy float32", lambda: run(x), lambda i: run(x[i:i + 1]), "OpenBLAS sgemm")


def _first(parameters: Sequence[float]) -> float:
    return parameters[0]


# Our activations as ONNX operators: (op_type, attributes, callables taking the parameters), or None for the
# identity; the composite ones are built in _onnx_activation. tests/test_vocabulary.py checks that
# this covers the format's table. Opset 20 (Gelu is the newest operator used).
ONNX_OPSET = 20
ONNX_OPS = {
    "linear": None, "relu": ("Relu", {}), "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}),
    "softmax": ("Softmax", {"axis": -1}), "gelu": ("Gelu", {}), "gelu_tanh": ("Gelu", {"approximate": "tanh"}),
    "silu": "x * Sigmoid(x)", "elu": ("Elu", {"alpha": _first}), "selu": ("Selu", {}), "softplus": ("Softplus", {}),
    "softsign": ("Softsign", {}), "leaky_relu": ("LeakyRelu", {"alpha": _first}), "relu6": "Clip(x, 0, 6)",
    "hard_sigmoid": ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}), "hard_silu": ("HardSwish", {}),
    "exponential": ("Exp", {}), "mish": ("Mish", {}), "log_softmax": ("LogSoftmax", {"axis": -1}),
    "relu_general": "Keras's ReLU steps", "prelu": "PRelu(x, alpha)",
}


def _onnx_activation(layer, src: str, dst: str, tag: str):
    """Nodes and initializers computing ``layer``'s activation of tensor ``src`` into ``dst``."""
    from onnx import helper, numpy_helper

    spec, p = ONNX_OPS[layer.activation], [float(v) for v in layer.parameters]
    const = lambda name, value: numpy_helper.from_array(np.asarray(value, np.float32), f"{tag}_{name}")  # noqa: E731
    if spec is None:
        return [helper.make_node("Identity", [src], [dst])], []
    if isinstance(spec, tuple):
        op, attrs = spec
        attrs = {k: v(p) if callable(v) else v for k, v in attrs.items()}
        return [helper.make_node(op, [src], [dst], **attrs)], []
    if layer.activation == "silu":
        return [helper.make_node("Sigmoid", [src], [f"{tag}_s"]), helper.make_node("Mul", [src, f"{tag}_s"], [dst])], []
    if layer.activation == "relu6":
        return [helper.make_node("Clip", [src, f"{tag}_lo", f"{tag}_hi"], [dst])], [const("lo", 0), const("hi", 6)]
    if layer.activation == "prelu":
        return [helper.make_node("PRelu", [src, f"{tag}_alpha"], [dst])], [const("alpha", layer.parameters)]
    slope, threshold, top = p  # relu_general, in Keras's steps (docs/FORMAT.md)
    nodes = [helper.make_node("Greater", [src, f"{tag}_t"], [f"{tag}_above"]),
             helper.make_node("Where", [f"{tag}_above", src, f"{tag}_zero"], [f"{tag}_a"])]
    inits = [const("t", threshold), const("zero", 0)]
    last = f"{tag}_a"
    if top != np.inf:
        nodes.append(helper.make_node("Clip", [last, f"{tag}_zero", f"{tag}_top"], [f"{tag}_c"]))
        inits.append(const("top", top))
        last = f"{tag}_c"
    nodes += [helper.make_node("Sub", [f"{tag}_t", src], [f"{tag}_d"]),
              helper.make_node("Relu", [f"{tag}_d"], [f"{tag}_r"]),
              helper.make_node("Mul", [f"{tag}_r", f"{tag}_slope"], [f"{tag}_n"]),
              helper.make_node("Sub", [last, f"{tag}_n"], [dst])]
    return nodes, inits + [const("slope", slope)]


def _onnx_operation(layer, src: str, dst: str, i: int):
    """Nodes and initializers of a layer's operation: MatMul and Add for dense, Mul and Add for
    scale_shift, LayerNormalization for layer_norm."""
    from onnx import helper, numpy_helper

    first, second = layer.values()[:2]
    inits = [numpy_helper.from_array(first, f"p{i}"), numpy_helper.from_array(second, f"q{i}")]
    if layer.op == "layer_norm":
        return [helper.make_node("LayerNormalization", [src, f"p{i}", f"q{i}"], [dst], axis=-1,
                                 epsilon=float(layer.epsilon))], inits
    return [helper.make_node("MatMul" if layer.op == "dense" else "Mul", [src, f"p{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"q{i}"], [dst])], inits


def _onnx_spatial_operation(layer, src: str, dst: str, i: int):
    """Nodes and initializers of a conv or pooling layer on an NCHW tensor (ONNX's layout)."""
    from onnx import helper, numpy_helper

    pads = [layer.pads[0], layer.pads[2], layer.pads[1], layer.pads[3]]  # ONNX: begins, then ends
    if layer.op == "conv2d":
        weights = numpy_helper.from_array(np.ascontiguousarray(layer.kernel.transpose(3, 2, 0, 1)), f"p{i}")
        return [helper.make_node("Conv", [src, f"p{i}", f"q{i}"], [dst], kernel_shape=list(layer.window),
                                 strides=list(layer.strides), pads=pads)], \
            [weights, numpy_helper.from_array(layer.bias, f"q{i}")]
    if layer.op.startswith("global"):
        return [helper.make_node("GlobalMaxPool" if layer.op == "global_max_pool" else "GlobalAveragePool",
                                 [src], [dst])], []
    attrs = dict(kernel_shape=list(layer.window), strides=list(layer.strides), pads=pads)
    if layer.op == "avg_pool":
        attrs["count_include_pad"] = int(layer.count_padding)
    return [helper.make_node("MaxPool" if layer.op == "max_pool" else "AveragePool", [src], [dst], **attrs)], []


def _onnx_layout(src: str, tag: str, to_images, image=None):
    """Nodes moving a tensor between the engine's NHWC rows and ONNX's NCHW images."""
    from onnx import helper, numpy_helper

    if to_images:
        shape = numpy_helper.from_array(np.array([-1, *image], np.int64), f"{tag}_shape")
        return [helper.make_node("Reshape", [src, f"{tag}_shape"], [f"{tag}_nhwc"]),
                helper.make_node("Transpose", [f"{tag}_nhwc"], [tag], perm=[0, 3, 1, 2])], [shape]
    return [helper.make_node("Transpose", [src], [f"{tag}_nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("Flatten", [f"{tag}_nhwc"], [tag], axis=1)], []


def onnx_model(layers: Sequence[DenseLayer]):
    """An ONNX graph of the layers: each one's operation, then its activation's operators. The
    input is flat NHWC rows, as the engine takes them; conv and pooling layers run on NCHW images
    (Reshape and Transpose in front of them, Transpose and Flatten behind)."""
    from onnx import TensorProto, helper

    nodes, inits, prev, images = [], [], "x", False
    for i, layer in enumerate(layers):
        spatial = layer.op in SPATIAL_OPS
        if spatial != images:
            image = layer.input_shape if spatial else None
            layout_nodes, layout_inits = _onnx_layout(prev, f"layout{i}", spatial, image)
            nodes, inits, prev, images = nodes + layout_nodes, inits + layout_inits, f"layout{i}", spatial
        make = _onnx_spatial_operation if spatial else _onnx_operation
        op_nodes, op_inits = make(layer, prev, f"a{i}", i)
        nodes, inits = nodes + op_nodes, inits + op_inits
        act_nodes, act_inits = _onnx_activation(layer, f"a{i}", f"h{i}", f"act{i}")
        nodes, inits, prev = nodes + act_nodes, inits + act_inits, f"h{i}"
    if images:
        layout_nodes, layout_inits = _onnx_layout(prev, "layout_out", False)
        nodes, inits, prev = nodes + layout_nodes, inits + layout_inits, "layout_out"
    n_in, n_out = layers[0].widths[0], layers[-1].widths[1]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_in])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [None, n_out])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])


def onnx_runners(layers: Sequence[DenseLayer], x: np.ndarray, threads: int) -> List[Runner]:
    """ONNX Runtime on the float model, and on the same model after its own quantize_dynamic
    (int8 weights, activations quantized per call): the quantized peer of int8."""
    import tempfile

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx_model(layers).SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        fp32_path.write_bytes(model)
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
        quantized = int8_path.read_bytes()

    def make(content: bytes, name: str) -> Runner:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        return Runner(name, lambda: session.run(None, {"x": x})[0], lambda i: session.run(None, {"x": x[i:i + 1]})[0])

    return [make(model, f"onnxruntime {ort.__version__}"), make(quantized, "onnxruntime dynamic int8")]


def openvino_runner(layers: Sequence[DenseLayer], x: np.ndarray, threads: int) -> Runner:
    """OpenVINO at its default CPU precision (bf16 where the CPU has AMX or AVX512-BF16, else fp32)."""
    import tempfile

    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onnx_model(layers).SerializeToString())
        model = core.read_model(str(path))
    model.reshape([-1, x.shape[1]])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type
    precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)

    def infer(batch: np.ndarray) -> np.ndarray:
        return request.infer({0: batch})[compiled.output(0)]

    return Runner(f"openvino {ov.__version__.split('-')[0]} ({precision})", lambda: infer(x),
                  lambda i: infer(x[i:i + 1]), "default precision")


def keras_runners(model, x: np.ndarray) -> List[Runner]:
    n = len(x)
    return [
        Runner("keras predict bs=10000", lambda: model.predict(x, batch_size=n, verbose=0),
               lambda i: np.asarray(model(x[i:i + 1], training=False)), "batch-1 column: model(x)"),
        Runner("keras predict bs=32", lambda: model.predict(x, verbose=0),
               lambda i: np.asarray(model(x[i:i + 1], training=False)), "batch-1 column: model(x)"),
    ]


def tflite_runners(model, x: np.ndarray, threads: int) -> List[Runner]:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    def make(content: bytes, name: str) -> Runner:
        big = Interpreter(model_content=content, num_threads=threads)
        big_in, big_out = big.get_input_details()[0]["index"], big.get_output_details()[0]["index"]
        big.resize_tensor_input(big_in, list(x.shape))
        big.allocate_tensors()
        one = Interpreter(model_content=content, num_threads=threads)
        one.allocate_tensors()
        one_in, one_out = one.get_input_details()[0]["index"], one.get_output_details()[0]["index"]

        def run_big():
            big.set_tensor(big_in, x)
            big.invoke()
            return big.get_tensor(big_out)

        def run_one(i):
            one.set_tensor(one_in, x[i:i + 1])
            one.invoke()
            return one.get_tensor(one_out)

        return Runner(name, run_big, run_one, "XNNPACK delegate")

    def convert(optimize: bool) -> bytes:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if optimize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range int8 weights
        with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel signature
            return converter.convert()

    fp32, int8 = convert(False), convert(True)
    return [make(fp32, "tflite fp32"), make(int8, "tflite dynamic int8")]


# ---- measurements outside the timed runners -----------------------------------------------------

def import_and_load_ms() -> Dict[str, float]:
    """Fresh-interpreter cost of `import mnist_engine` (with numpy, and on top of numpy), and of
    the first load + verify of the default model; best of 5 processes."""
    code = ("import time; t0 = time.perf_counter(); import numpy; t1 = time.perf_counter(); "
            "import mnist_engine; t2 = time.perf_counter(); mnist_engine.load(mnist_engine._DEFAULT_MODEL); "
            "t3 = time.perf_counter(); print((t2 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, end=' ')\n"
            "for p in mnist_engine.available_precisions()[1:]:\n"
            "    t = time.perf_counter(); mnist_engine.load(mnist_engine._DEFAULT_MODEL, precision=p)\n"
            "    print((time.perf_counter() - t) * 1e3, end=' ')")
    best = [float("inf")] * (3 + len(mnist_engine.available_precisions()) - 1)
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        best = [min(a, float(b)) for a, b in zip(best, out.stdout.split())]
    loads = {f"load_{p}_ms": t for p, t in zip(mnist_engine.available_precisions()[1:], best[3:])}
    return {"import_ms": best[0], "import_own_ms": best[1], "load_verify_ms": best[2], **loads}


def peak_rss_growth(threads: int, rows: int = 10000) -> Dict[str, float]:
    """Peak RSS growth of predicting `rows` MNIST-like rows, in a fresh process, against the size
    of the output array itself. Linux's peak counter (VmHWM) is reset just before the call, so the
    figure is the call's own high-water mark, not an earlier one."""
    code = f"""
import numpy as np, mnist_engine
def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
e = mnist_engine.load(mnist_engine.default_model_path())
rng = np.random.default_rng(0)
x = np.where(rng.random(({rows}, 784)) < 0.8, 0, rng.integers(1, 256, ({rows}, 784))).astype(np.float32) / 255
e.predict(x[:256], threads={threads})
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = hwm_kib()
y = e.predict(x, threads={threads})
print((hwm_kib() - before) / 1024, y.nbytes / 2**20)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return {"rss_growth_mib": float("nan"), "output_mib": float("nan")}  # not Linux: no VmHWM reset
    growth, output = map(float, out.stdout.split())
    return {"rss_growth_mib": growth, "output_mib": output}


def gil_parallel_speedup(model: Path, x: np.ndarray, repeats: int) -> float:
    """Throughput of two Python threads predicting with threads=1 each, over one such thread:
    close to 2 on 2 cores when predict releases the GIL, close to 1 if it did not."""
    import threading

    engine = mnist_engine.load(model)
    engine.predict(x, threads=1)

    def work(n: int) -> None:
        for _ in range(n):
            engine.predict(x, threads=1)

    t0 = time.perf_counter()
    work(2 * repeats)
    serial = time.perf_counter() - t0
    pair = [threading.Thread(target=work, args=(repeats,)) for _ in range(2)]
    t0 = time.perf_counter()
    for t in pair:
        t.start()
    for t in pair:
        t.join()
    return serial / (time.perf_counter() - t0)


# ---- the run ------------------------------------------------------------------------------------

def optional(s: Settings, label: str, make: Callable[[], list]) -> list:
    try:
        return make()
    except ImportError as e:
        s.skipped.append(f"{label}: skipped ({e.name or e} is not installed)")
    except Exception as e:  # a runner that breaks must not take the benchmark down
        s.skipped.append(f"{label}: skipped ({type(e).__name__}: {e})")
    return []


def load_keras_source(s: Settings, engine, x: np.ndarray):
    """The Keras model the Keras and TFLite runners time, or None (with the reason in s.skipped).
    It must be the source of --model: a different model would make every ratio meaningless, so a
    mismatch is an error, not a footnote."""
    if s.keras_model is None:
        s.skipped.append("keras, tflite: skipped (no Keras source for --model; pass --keras-model FILE.keras)")
        return None
    if not s.keras_model.is_file():
        s.skipped.append(f"keras, tflite: skipped ({s.keras_model} not found; run from the repository root or "
                         "pass --keras-model FILE.keras)")
        return None
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras
        import tensorflow as tf
    except ImportError as e:
        s.skipped.append(f"keras, tflite: skipped ({e.name} is not installed)")
        return None
    tf.config.threading.set_intra_op_parallelism_threads(s.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = keras.saving.load_model(s.keras_model, compile=False, safe_mode=True)
    sample = x[:256]
    want = model.predict(sample.reshape((len(sample),) + tuple(model.inputs[0].shape[1:])), verbose=0)
    diff = float(np.abs(engine.predict(sample) - np.asarray(want).reshape(len(sample), -1)).max()) \
        if np.asarray(want).size == len(sample) * engine.output_width else float("inf")
    if not diff <= 1e-4:
        raise ValueError(f"--keras-model {s.keras_model} does not compute --model {s.model} (max |dp| = {diff:.3g} "
                         "on 256 test images): pass the Keras model that file was exported from")
    return model


def run(s: Settings) -> dict:
    from mnist_engine.datasets import load_mnist

    (_, _), (images, labels) = load_mnist()
    pixels = images.reshape(len(images), -1)
    engine = mnist_engine.load(s.model)
    x = scale_pixels(pixels, engine.input_scale)  # the model's own input domain, not always x / 255
    layers = read_layers(s.model)
    flops_per_image = 2 * sum(multiply_adds(layer) for layer in layers)
    peak = mnist_engine._core.measure_fma_peak_gflops(mnist_engine.available_kernels("fp32")[0], s.threads, 0.5)

    keras_model = load_keras_source(s, engine, x)
    if keras_model is not None:
        x = x.reshape((len(x),) + tuple(keras_model.inputs[0].shape[1:]))
        reference = keras_model.predict(x, batch_size=len(x), verbose=0)
        reference_name = "keras predict"
    else:
        reference = forward(layers, x).astype(np.float32)
        reference_name = "numpy float64 reference"

    flat = x.reshape(len(x), -1)
    spatial = any(layer.op in SPATIAL_OPS for layer in layers)
    factories = [("mnist_engine", lambda: engine_runners(s, flat, pixels)),
                 ("numpy", lambda: [numpy_runner(layers, flat)] if not spatial else
                  s.skipped.append("numpy float32: skipped (no float32 numpy form of conv and pooling layers; the "
                                   "float64 reference is the parity oracle)") or []),
                 ("onnxruntime", lambda: onnx_runners(layers, flat, s.threads)),
                 ("openvino", lambda: [openvino_runner(layers, flat, s.threads)])]
    if keras_model is not None:
        factories += [("keras", lambda: keras_runners(keras_model, x)),
                      ("tflite", lambda: tflite_runners(keras_model, x, s.threads))]

    results: List[Result] = []
    for label, make in progress(factories, desc="bench", unit="runtime"):
        for r in optional(s, label, make):
            gc.collect()
            time.sleep(0.3)  # let the previous runner's thread pool stop spinning
            batch_s, one_s, one_p99_s = time_runner(r, s, len(x))
            p = np.asarray(r.batch())
            results.append(Result(
                r.name, batch_s * 1e3, len(x) / batch_s, flops_per_image * len(x) / batch_s / 1e9,
                100 * flops_per_image * len(x) / batch_s / 1e9 / peak, one_s * 1e6,
                float(np.abs(p - reference).max()), int((p.argmax(1) == reference.argmax(1)).sum()),
                accuracy=float((p.argmax(1) == labels).mean()), note=r.note, b1_p99_us=one_p99_s * 1e6))
            if s.busy:
                with BusyProcesses(s.busy):
                    batch_s, one_s, one_p99_s = time_runner(r, s, len(x))
                results[-1].busy_batch_ms, results[-1].busy_b1_us = batch_s * 1e3, one_s * 1e6
                results[-1].busy_b1_p99_us = one_p99_s * 1e6
        gc.collect()

    tflite = next((r for r in results if r.name == "tflite fp32"), None)
    if tflite:
        for r in results:
            r.vs_tflite_batch, r.vs_tflite_b1 = r.batch_ms / tflite.batch_ms, r.b1_us / tflite.b1_us
            if s.busy:
                r.busy_vs_tflite_batch = r.busy_batch_ms / tflite.busy_batch_ms
    # The fastest approximate peer of this run, per column: what int8 and bf16 are measured against.
    peers = [r for r in results if is_quantized_peer(r.name)]
    if peers:
        fastest_batch, fastest_b1 = min(r.batch_ms for r in peers), min(r.b1_us for r in peers)
        for r in results:
            r.vs_quant_batch, r.vs_quant_b1 = r.batch_ms / fastest_batch, r.b1_us / fastest_b1
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_name(),
        "cores": os.cpu_count(), "threads": s.threads, "busy": s.busy, "commit": git_commit(),
        "mnist_engine": mnist_engine.__version__, "kernels": mnist_engine.available_kernels(),
        "peak_gflops": peak, "images": len(x), "reference": reference_name,
        "accuracy": float((engine.classify(pixels) == labels).mean()),
        **import_and_load_ms(), **peak_rss_growth(s.threads),
        "gil_two_thread_speedup": gil_parallel_speedup(s.model, flat, max(2, s.batch_repeats // 2)),
        "results": [asdict(r) for r in results], "skipped": s.skipped,
    }


COLUMNS = 100  # the default table fits a terminal this wide; --wide prints every column


def _fitted(name: str, cells: str, width: int) -> List[str]:
    """A runner's row: its name in a column `width` wide, or alone on a line above its numbers
    where it is longer."""
    return [f"{name:<{width}} {cells}"] if len(name) <= width else [name, f"{'':<{width}} {cells}"]


def _wrapped(lines: List[str]) -> List[str]:
    return [part for line in lines for part in (textwrap.wrap(line, COLUMNS, subsequent_indent="  ") or [""])]


def format_table(report: dict, wide: bool = False) -> str:
    """The report as text: by default the columns that answer "how fast, how right, against whom",
    within COLUMNS; with `wide`, every column (images/s, GFLOP/s, % of peak, accuracy)."""
    if not wide:
        return _format_compact(report)
    w = max([36] + [len(r["name"]) for r in report["results"]])  # the runner column
    lines = [f"mnist_engine {report['mnist_engine']} @ {report['commit']}  {report['date']}",
             f"cpu: {report['cpu']} ({report['cores']} cores), threads={report['threads']}, "
             f"measured FMA peak {report['peak_gflops']:.0f} GFLOP/s; kernels: {', '.join(report['kernels'])}",
             f"{report['images']} MNIST test images; accuracy vs labels {report['accuracy'] * 100:.2f}%; "
             f"parity vs {report['reference']}",
             "",
             f"{'runner':<{w}} {'10k ms':>8} {'img/s':>10} {'GFLOP/s':>8} {'%peak':>6} {'b1 us':>8} "
             f"{'max|dp|':>9} {'agree':>6} {'acc %':>6} {'x tfl 10k':>9} {'x tfl b1':>8} {'x q 10k':>8} {'x q b1':>7}"]
    for r in report["results"]:
        ratio = lambda v: f"{v:9.2f}" if v is not None else f"{'-':>9}"  # noqa: E731
        lines.append(f"{r['name']:<{w}} {r['batch_ms']:8.2f} {r['images_per_s']:10,.0f} {r['gflops']:8.1f} "
                     f"{r['peak_pct']:6.1f} {r['b1_us']:8.1f} {r['max_abs_diff']:9.2e} {r['agreement']:6d} "
                     f"{r['accuracy'] * 100:6.2f} {ratio(r['vs_tflite_batch'])} {ratio(r['vs_tflite_b1'])[1:]} "
                     f"{ratio(r['vs_quant_batch'])[1:]} {ratio(r['vs_quant_b1'])[2:]}")
    lines += ["", f"import mnist_engine: {report['import_ms']:.1f} ms ({report['import_own_ms']:.1f} ms on top of "
                  f"numpy); first load + verify of the default model: {report['load_verify_ms']:.2f} ms" +
                  "".join(f"; {k[5:-3]}: {v:.2f} ms" for k, v in report.items() if k.startswith("load_")
                          and k != "load_verify_ms"),
              "x q: time over the fastest quantized peer of this run (TFLite/ORT dynamic int8, OpenVINO default)",
              "%peak: the model's dense multiply-adds per second over this CPU's measured fp32 FMA peak. Above "
              "100% is not an error: int8 and bf16 do 2-4 multiply-adds per fp32 FMA slot, and runners that skip "
              "zero pixels and zero ReLU outputs do less arithmetic than the dense count credits them with.",
              f"peak RSS growth predicting 10k rows: {report['rss_growth_mib']:.2f} MiB "
              f"(output array {report['output_mib']:.2f} MiB)",
              f"two Python threads (threads=1 each) vs one: {report['gil_two_thread_speedup']:.2f}x throughput"]
    if report.get("busy"):
        lines += ["", f"the same runners with {report['busy']} busy process(es) at normal priority sharing the cores "
                      "(quiet columns repeated; p99: 99th percentile of the batch-1 calls)",
                  f"{'runner':<{w}} {'10k ms':>8} {'busy':>8} {'x tfl':>6} {'busy':>6} {'b1 us':>8} {'busy':>8} "
                  f"{'p99 us':>8} {'busy':>9}"]
        for r in report["results"]:
            ratio = lambda v: f"{v:6.2f}" if v is not None else f"{'-':>6}"  # noqa: E731
            lines.append(f"{r['name']:<{w}} {r['batch_ms']:8.2f} {r['busy_batch_ms']:8.2f} "
                         f"{ratio(r['vs_tflite_batch'])} {ratio(r['busy_vs_tflite_batch'])} {r['b1_us']:8.1f} "
                         f"{r['busy_b1_us']:8.1f} {r['b1_p99_us']:8.1f} {r['busy_b1_p99_us']:9.1f}")
    lines += report["skipped"]
    return "\n".join(lines)


def _format_compact(report: dict) -> str:
    ratio = lambda v, n: f"{v:{n}.2f}" if v is not None else f"{'-':>{n}}"  # noqa: E731
    head = f"{'10k ms':>8} {'b1 us':>7} {'max|dp|':>8} {'agree':>5} {'x tfl':>5} {'x b1':>5} {'x q':>5} {'x q b1':>6}"
    w = COLUMNS - 1 - len(head)
    lines = _wrapped([f"mnist_engine {report['mnist_engine']} @ {report['commit']}  {report['date']}",
                      f"cpu: {report['cpu']} ({report['cores']} cores), threads={report['threads']}; kernels: "
                      f"{', '.join(report['kernels'])}",
                      f"{report['images']} MNIST test images; parity vs {report['reference']}"])
    lines += ["", f"{'runner':<{w}} {head}"]
    for r in report["results"]:
        cells = (f"{r['batch_ms']:8.2f} {r['b1_us']:7.1f} {r['max_abs_diff']:8.1e} {r['agreement']:5d} "
                 f"{ratio(r['vs_tflite_batch'], 5)} {ratio(r['vs_tflite_b1'], 5)} {ratio(r['vs_quant_batch'], 5)} "
                 f"{ratio(r['vs_quant_b1'], 6)}")
        lines += _fitted(r["name"], cells, w)
    lines += [""] + _wrapped([
        "10k ms: the 10,000 images in one call (best of N); b1 us: one image (median); agree: argmaxes equal to "
        "the reference's; x tfl: time over TFLite fp32's, x q: over the fastest quantized peer's (TFLite/ORT "
        "dynamic int8, OpenVINO default), for 10k and b1. Lower is better in every time column. --wide adds "
        "images/s, GFLOP/s, % of peak and accuracy."])
    if report.get("busy"):
        head = f"{'10k ms':>8} {'busy':>8} {'b1 us':>7} {'busy':>7} {'p99 us':>8} {'busy':>8}"
        w = COLUMNS - 1 - len(head)
        lines += [""] + _wrapped([f"with {report['busy']} busy process(es) at normal priority sharing the cores "
                                  "(p99: 99th percentile of the batch-1 calls)"])
        lines.append(f"{'runner':<{w}} {head}")
        for r in report["results"]:
            lines += _fitted(r["name"], f"{r['batch_ms']:8.2f} {r['busy_batch_ms']:8.2f} {r['b1_us']:7.1f} "
                                        f"{r['busy_b1_us']:7.1f} {r['b1_p99_us']:8.1f} {r['busy_b1_p99_us']:8.1f}", w)
    return "\n".join(lines + _wrapped(report["skipped"]))


def format_markdown(report: dict) -> str:
    """The results as a docs/PERFORMANCE.md table."""
    ratio = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
    lines = ["| runner | 10k ms | images/s | GFLOP/s | % peak | batch-1 µs | max \\|Δp\\| | argmax agree "
             "| accuracy % | × TFLite 10k | × TFLite b1 | × best quantized 10k | × best quantized b1 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["results"]:
        lines.append(f"| {r['name']} | {r['batch_ms']:.2f} | {r['images_per_s']:,.0f} | {r['gflops']:.1f} | "
                     f"{r['peak_pct']:.1f} | {r['b1_us']:.1f} | {r['max_abs_diff']:.2e} | {r['agreement']} | "
                     f"{r['accuracy'] * 100:.2f} | {ratio(r['vs_tflite_batch'])} | {ratio(r['vs_tflite_b1'])} | "
                     f"{ratio(r['vs_quant_batch'])} | {ratio(r['vs_quant_b1'])} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    names = [r["name"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 1.5), sharey=True)
    colours = ["tab:green" if n.startswith("mnist_engine") else "tab:gray" for n in names]
    for axis, key, label, unit in ((a, "batch_ms", "10k images, ms (best of N)", "ms"),
                                   (b, "b1_us", "one image, µs (median)", "µs")):
        values = [r[key] for r in rows]
        bars = axis.barh(names, values, color=colours)
        axis.bar_label(bars, labels=[f"{v:,.3g} {unit}" for v in values], padding=3, fontsize=8)
        axis.set_xlabel(f"{label}; lower is better")
        axis.set_xscale("log")  # the scalar reference is ~100x slower than the rest
        axis.set_xlim(min(values) / 2, max(values) * 4)  # every bar seen; room for the longest one's number
        axis.tick_params(axis="x", which="minor", labelbottom=False)  # the numbers are on the bars
    a.invert_yaxis()
    fig.suptitle(f"{report['cpu']}, {report['threads']} threads, {report['date'][:10]} @ {report['commit']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def bundled_keras_source(model: Path, keras_dir: Path) -> Optional[Path]:
    """The Keras source of a bundled model file, or None for any other file."""
    bundled = {mnist_engine.bundled_model_path(name).resolve() for name in mnist_engine.BUNDLED_MODELS}
    return keras_dir / (model.stem + ".keras") if model.resolve() in bundled else None


def main(argv: Optional[Sequence[str]] = None, keras_dir: Path = KERAS_DIR) -> int:
    parser = argparse.ArgumentParser(prog="mnist-engine bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", type=Path, help="a .mnw file or a bundled model's name: " +
                        ", ".join(mnist_engine.BUNDLED_MODELS) + " (default: mlp512)")
    parser.add_argument("--keras-model", type=Path,
                        help="the Keras source of --model, for the Keras and TFLite runners (default: a bundled "
                             "model's own, models/NAME.keras in the repository)")
    parser.add_argument("--quick", action="store_true", help="few repetitions: proves the harness works")
    parser.add_argument("--json", type=Path, help="write the full report as JSON")
    parser.add_argument("--plot", type=Path, help="write a bar chart (PNG)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    parser.add_argument("--wide", action="store_true",
                        help=f"print every column (the default table fits {COLUMNS} columns)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="also time every runner with N busy processes sharing the cores (a second column)")
    args = parser.parse_args(argv)
    if args.busy < 0:
        parser.error(f"expected --busy 0 or more, got {args.busy}")
    model = Path(mnist_engine._resolve_model(args.model)) if args.model else mnist_engine.default_model_path()
    keras_source = args.keras_model or bundled_keras_source(model, keras_dir)
    s = Settings(args.threads, 2 if args.quick else 10, 200 if args.quick else 2000, keras_source, model,
                 busy=args.busy)
    try:
        report = run(s)
    except ValueError as e:
        print(f"mnist-engine bench: error: {e}", file=sys.stderr)
        return 2
    print(format_table(report, wide=args.wide))
    if args.markdown:
        print("\n" + format_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
