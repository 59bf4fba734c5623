"""export_onnx: ONNX graphs of MLPs, built with onnx.helper the way converters write them, exported
and run by the engine, each held to onnxruntime (an independent runtime, not the ONNX reference
evaluator the exporter itself proves against) within 1e-5; and every graph it cannot map refused
with the node and its op type named, nothing written."""
from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytest

import mnist_engine
from conftest import require
from mnist_engine import UnsupportedModelError
from mnist_engine.bench import onnx_model
from mnist_engine.export.onnx.exporter import (
    MIN_OPSET,
    ONNX_HANDLING,
    _GraphBuilder,
    onnx_dense_chain,
    reference_stages,
    supported_markdown,
)
from mnist_engine.export.onnx.graph import _SHAPE_OPS
from mnist_engine.model_file import ACTIVATION_PARAMETERS, DenseLayer, LayerNormLayer, ScaleShiftLayer
from mnist_engine.reference import forward

# Synthetic inputs (normal floats, activation tails up to 3e38) lie far outside the range these test
# models were checked on, on purpose: the InputRangeWarning they get is tests/test_input_range.py's subject.
pytestmark = pytest.mark.filterwarnings("ignore::mnist_engine.InputRangeWarning")

PARITY = 1e-5  # the bound on |engine - onnxruntime| / max(1, |onnxruntime|)


@pytest.fixture(scope="module")
def onnx():
    return require("onnx")


@pytest.fixture(scope="module")
def ort():
    return require("onnxruntime")


def make_model(onnx, nodes, initializers: Dict[str, np.ndarray], in_shape: Sequence, out_width: int,
               opset: int = 20, input_type: Optional[int] = None):
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in initializers.items()]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", input_type or TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def node(op: str, inputs: List[str], output: str, **attrs):
    from onnx import helper

    return helper.make_node(op, inputs, [output], name=f"{op.lower()}_{output}", **attrs)


def inputs_for(rng, shape: Sequence[int], rows: int = 300) -> np.ndarray:
    """Pixel-like rows (0..1), and rows that reach far into every activation's tails."""
    pixels = rng.integers(0, 256, (rows, *shape)) / 255
    wide = rng.normal(0, 4, (rows, *shape))
    return np.concatenate([pixels, wide]).astype(np.float32)


def export_and_compare(onnx_module, ort, model, tmp_path, x: np.ndarray, **kw):
    """Export `model`, run the file on `x` and onnxruntime on the graph; returns (worst error, engine)."""
    out = mnist_engine.export_onnx(model, tmp_path / "m.mnw", **kw)
    engine = mnist_engine.load(out)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    got = engine.predict(x.reshape(len(x), -1))
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    err = float(np.max(np.abs(got[ok] - want[ok]) / np.maximum(1.0, np.abs(want[ok]))))
    assert err <= PARITY, err
    assert_stages_are_the_layers(model, x[:50])
    return err, engine


def assert_stages_are_the_layers(model, x: np.ndarray) -> None:
    """What the exporter holds each engine layer to, on a mismatch, is that layer's own output:
    the tensor it names (divided by the factor an x * g(x) leaves there) equals the float64
    reference of the layers up to it."""
    chain = onnx_dense_chain(model)
    _, stages = reference_stages(model, chain, x)
    for i, stage in enumerate(stages):
        want = forward(chain.layers[: i + 1], x.reshape(len(x), -1))
        np.testing.assert_allclose(stage.outputs, want, rtol=1e-4, atol=1e-5, err_msg=stage.description)


def activations(engine) -> tuple:
    return tuple(activation for _, _, activation in engine.layers)


def dense_weights(rng, widths: Sequence[int]) -> Dict[str, np.ndarray]:
    weights = {}
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        weights[f"W{i}"] = rng.normal(0, 1 / math.sqrt(a), (a, b))
        weights[f"b{i}"] = rng.normal(0, 0.1, b)
    return weights


# -- every activation of the format, as the bench writes it in ONNX -------------------------------

EXPORTED = sorted(set(ACTIVATION_PARAMETERS) - {"relu_general"})


@pytest.mark.parametrize("activation", EXPORTED)
def test_every_activation_round_trips_through_onnx(onnx, ort, tmp_path, rng, activation):
    """tools/bench.py's ONNX graph of each activation (bench.ONNX_OPS) exports back to that activation."""
    names, per_unit, _ = ACTIVATION_PARAMETERS[activation]
    parameters = tuple(rng.uniform(0.05, 0.5, 10)) if per_unit else tuple(0.3 for _ in names)
    # Narrow layers: the wide rows then reach far into the activation's tails without float32
    # accumulation over hundreds of inputs deciding the comparison.
    layers = [DenseLayer(rng.normal(0, 0.3, (20, 32)), rng.normal(0, 0.1, 32), "relu"),
              DenseLayer(rng.normal(0, 0.5, (32, 10)), rng.normal(0, 0.1, 10), activation, parameters)]
    model = onnx_model(layers)
    _, engine = export_and_compare(onnx, ort, model, tmp_path, inputs_for(rng, (20,)))
    assert engine.layer_ops == ("dense", "dense")
    assert activations(engine)[-1] == activation


def test_every_engine_op_round_trips_through_onnx(onnx, ort, tmp_path, rng):
    """The bench's ONNX graph of layer_norm (LayerNormalization) and scale_shift (Mul, Add) layers
    exports back to those ops."""
    layers = [DenseLayer(rng.normal(0, 0.3, (20, 16)), rng.normal(0, 0.1, 16), "relu"),
              LayerNormLayer(rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.2, 16), 1e-3, "gelu"),
              ScaleShiftLayer(rng.uniform(0.5, 2, 16), rng.normal(0, 0.3, 16), "tanh"),
              DenseLayer(rng.normal(0, 0.3, (16, 5)), rng.normal(0, 0.1, 5), "softmax")]
    _, engine = export_and_compare(onnx, ort, onnx_model(layers), tmp_path, inputs_for(rng, (20,)))
    assert engine.layer_ops == ("dense", "layer_norm", "scale_shift", "dense")
    assert activations(engine) == ("relu", "gelu", "tanh", "softmax")


def test_keras_relu_steps_written_out_are_refused_by_node(onnx, tmp_path, rng):
    layers = [DenseLayer(rng.normal(size=(4, 3)), np.zeros(3), "relu_general", (0.1, 0.5, 3.0))]
    with pytest.raises(UnsupportedModelError, match=r"tensor 'a0' feeds 3 nodes \(node '#2' \(Greater\), "
                                                    r"node '#3' \(Where\), node '#5' \(Sub\)\)"):
        mnist_engine.export_onnx(onnx_model(layers), tmp_path / "m.mnw")
    assert not (tmp_path / "m.mnw").exists()


# -- dense layers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("trans_b, alpha, beta, bias_shape", [
    (0, 1.0, 1.0, (16,)), (1, 1.0, 1.0, (16,)), (1, 0.5, 2.0, (1, 16)), (0, 1.0, 1.0, ()), (0, 1.0, 1.0, None),
    (1, -1.5, 0.25, (1,)),
])
def test_gemm_attributes(onnx, ort, tmp_path, rng, trans_b, alpha, beta, bias_shape):
    w = rng.normal(0, 0.2, (20, 16))
    inits = {"W": w.T if trans_b else w, "W2": rng.normal(0, 0.3, (16, 5))}
    inputs = ["x", "W"]
    if bias_shape is not None:
        inits["C"] = rng.normal(0, 0.5, bias_shape)
        inputs.append("C")
    nodes = [node("Gemm", inputs, "g", transB=trans_b, alpha=alpha, beta=beta), node("Relu", ["g"], "r"),
             node("Gemm", ["r", "W2"], "y")]
    export_and_compare(onnx, ort, make_model(onnx, nodes, inits, [20], 5), tmp_path, inputs_for(rng, (20,)))


def test_matmul_then_add_is_one_dense_layer_with_its_bias(onnx, ort, tmp_path, rng):
    inits = dense_weights(rng, [12, 8, 3])
    nodes = [node("MatMul", ["x", "W0"], "m0"), node("Add", ["b0", "m0"], "a0"), node("Tanh", ["a0"], "t"),
             node("MatMul", ["t", "W1"], "m1"), node("Add", ["m1", "b1"], "y")]
    _, engine = export_and_compare(onnx, ort, make_model(onnx, nodes, inits, [12], 3), tmp_path,
                                   inputs_for(rng, (12,)))
    assert engine.layer_ops == ("dense", "dense") and activations(engine) == ("tanh", "linear")


def test_reject_class_travels_in_the_file(onnx, ort, tmp_path, rng):
    """A PyTorch reader with a "not a digit" output says so through export_onnx as through export_keras."""
    inits = dense_weights(rng, [12, 8, 3])
    nodes = [node("MatMul", ["x", "W0"], "m0"), node("Add", ["b0", "m0"], "a0"), node("Relu", ["a0"], "t"),
             node("MatMul", ["t", "W1"], "m1"), node("Add", ["m1", "b1"], "y")]
    model = make_model(onnx, nodes, inits, [12], 3)
    _, engine = export_and_compare(onnx, ort, model, tmp_path, inputs_for(rng, (12,)), reject_class=2)
    assert engine.reject_class == 2 and engine.metadata["reject_class"] == "2"
    with pytest.raises(mnist_engine.FormatError, match="metadata-reject-class"):
        mnist_engine.export_onnx(model, tmp_path / "bad.mnw", reject_class=3)
    assert not (tmp_path / "bad.mnw").exists()


# -- folding --------------------------------------------------------------------------------------

def batch_norm_inits(rng, width: int, tag: str) -> Dict[str, np.ndarray]:
    return {f"{tag}_s": rng.uniform(0.5, 2, width), f"{tag}_b": rng.normal(0, 0.5, width),
            f"{tag}_m": rng.normal(0, 0.5, width), f"{tag}_v": rng.uniform(0.2, 3, width)}


def batch_norm(inp: str, out: str, tag: str, epsilon: float = 1e-3):
    return node("BatchNormalization", [inp, f"{tag}_s", f"{tag}_b", f"{tag}_m", f"{tag}_v"], out, epsilon=epsilon)


@pytest.mark.parametrize("where, ops", [
    ("before the first Gemm", ("dense", "dense")),
    ("between Gemm and Relu", ("dense", "dense")),
    ("after Relu", ("dense", "dense")),
    ("at the end", ("dense", "dense")),  # the last Gemm is still linear: folds into it
    ("after the last activation", ("dense", "dense", "scale_shift")),
])
def test_batch_normalization_folds_or_runs_as_scale_shift(onnx, ort, tmp_path, rng, where, ops):
    inits = {**dense_weights(rng, [10, 8, 4]), **batch_norm_inits(rng, 10, "in"), **batch_norm_inits(rng, 8, "h"),
             **batch_norm_inits(rng, 4, "out")}
    nodes = {
        "before the first Gemm": [batch_norm("x", "n", "in"), node("Gemm", ["n", "W0", "b0"], "g"),
                                  node("Relu", ["g"], "r"), node("Gemm", ["r", "W1", "b1"], "y")],
        "between Gemm and Relu": [node("Gemm", ["x", "W0", "b0"], "g"), batch_norm("g", "n", "h"),
                                  node("Relu", ["n"], "r"), node("Gemm", ["r", "W1", "b1"], "y")],
        "after Relu": [node("Gemm", ["x", "W0", "b0"], "g"), node("Relu", ["g"], "r"), batch_norm("r", "n", "h"),
                       node("Gemm", ["n", "W1", "b1"], "y")],
        "at the end": [node("Gemm", ["x", "W0", "b0"], "g"), node("Relu", ["g"], "r"),
                       node("Gemm", ["r", "W1", "b1"], "o"), batch_norm("o", "y", "out")],
        "after the last activation": [node("Gemm", ["x", "W0", "b0"], "g"), node("Relu", ["g"], "r"),
                                      node("Gemm", ["r", "W1", "b1"], "o"), node("Sigmoid", ["o"], "s"),
                                      batch_norm("s", "y", "out")],
    }[where]
    _, engine = export_and_compare(onnx, ort, make_model(onnx, nodes, inits, [10], 4), tmp_path,
                                   inputs_for(rng, (10,)))
    assert engine.layer_ops == ops


def test_input_scaling_and_standardization_fold_and_set_the_default_input_scale(onnx, ort, tmp_path, rng):
    """Div by 255, then (x - mean) / std per pixel: all of it folds into the first Gemm, and a graph
    that scales its own input is fed raw pixels (input_scale 1) by default."""
    inits = {**dense_weights(rng, [784, 16, 10]), "k": np.float32(255), "mean": rng.uniform(0, 0.3, 784),
             "std": rng.uniform(0.2, 0.5, 784)}
    nodes = [node("Div", ["x", "k"], "d"), node("Sub", ["d", "mean"], "c"), node("Div", ["c", "std"], "z"),
             node("Gemm", ["z", "W0", "b0"], "g"), node("Relu", ["g"], "r"), node("Gemm", ["r", "W1", "b1"], "o"),
             node("Softmax", ["o"], "y")]
    model = make_model(onnx, nodes, inits, [784], 10)
    pixels = rng.integers(0, 256, (200, 784)).astype(np.float32)
    _, engine = export_and_compare(onnx, ort, model, tmp_path, pixels)
    assert engine.input_scale == 1.0 and engine.layer_ops == ("dense", "dense")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(engine.predict(pixels.astype(np.uint8)), session.run(None, {"x": pixels})[0],
                               atol=PARITY)


def test_a_standardization_alone_keeps_the_default_input_scale(onnx, tmp_path, rng):
    """(x - mean) / std on inputs already in 0..1 is no sign that the graph takes raw pixels."""
    inits = {**dense_weights(rng, [784, 10]), "mean": np.float32(0.13), "std": np.float32(0.31)}
    nodes = [node("Sub", ["x", "mean"], "c"), node("Div", ["c", "std"], "z"), node("Gemm", ["z", "W0", "b0"], "y")]
    out = mnist_engine.export_onnx(make_model(onnx, nodes, inits, [784], 10), tmp_path / "m.mnw")
    assert mnist_engine.load(out).input_scale == pytest.approx(1 / 255)


@pytest.mark.parametrize("op, constant_first", [("Add", True), ("Sub", False), ("Sub", True), ("Mul", True),
                                                ("Div", False)])
def test_constant_arithmetic_between_activations(onnx, ort, tmp_path, rng, op, constant_first):
    """An affine op after an activation waits and folds into the next Gemm's rows."""
    inits = {**dense_weights(rng, [9, 7, 3]), "c": rng.uniform(0.5, 2, 7)}
    nodes = [node("Gemm", ["x", "W0", "b0"], "g"), node("Elu", ["g"], "e", alpha=0.5),
             node(op, ["c", "e"] if constant_first else ["e", "c"], "a"), node("Gemm", ["a", "W1", "b1"], "y")]
    _, engine = export_and_compare(onnx, ort, make_model(onnx, nodes, inits, [9], 3), tmp_path, inputs_for(rng, (9,)))
    assert engine.layer_ops == ("dense", "dense")


# -- activations with attributes ------------------------------------------------------------------

@pytest.mark.parametrize("op, attrs, bounds, ops", [
    ("HardSigmoid", {}, None, ("dense", "dense")),  # ONNX's alpha=0.2: an affine map folded before
    ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, None, ("dense", "dense")),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.1}, None, ("dense", "dense")),
    ("LeakyRelu", {}, None, ("dense", "dense")),
    ("LeakyRelu", {"alpha": 0.2}, None, ("dense", "dense")),
    ("Elu", {}, None, ("dense", "dense")),
    ("Gelu", {"approximate": "tanh"}, None, ("dense", "dense")),
    ("Clip", {}, (0.0, None), ("dense", "dense")),
    ("Clip", {}, (0.0, 6.0), ("dense", "dense")),
    ("Clip", {}, (0.0, 2.5), ("dense", "dense")),
    ("Clip", {}, (-1.0, 2.0), ("dense", "dense")),  # a shift before and after, both folded
    ("Clip", {}, (None, 0.5), ("dense", "dense")),
    ("Clip", {}, (-0.5, None), ("dense", "dense")),
    ("Clip", {}, (None, None), ("dense", "dense")),
])
def test_activation_attributes(onnx, ort, tmp_path, rng, op, attrs, bounds, ops):
    inits = dense_weights(rng, [6, 12, 3])
    inputs = ["g"]
    if bounds is not None:
        for name, bound in zip(("lo", "hi"), bounds):
            if bound is not None:
                inits[name] = np.float32(bound)
            inputs.append(name if bound is not None else "")
    nodes = [node("Gemm", ["x", "W0", "b0"], "g"), node(op, inputs, "a", **attrs), node("Gemm", ["a", "W1", "b1"], "y")]
    _, engine = export_and_compare(onnx, ort, make_model(onnx, nodes, inits, [6], 3), tmp_path, inputs_for(rng, (6,)))
    assert engine.layer_ops == ops


def test_clip_as_the_last_op_keeps_its_shift_in_a_scale_shift_layer(onnx, ort, tmp_path, rng):
    inits = {**dense_weights(rng, [6, 4]), "lo": np.float32(-0.25), "hi": np.float32(0.5)}
    nodes = [node("Gemm", ["x", "W0", "b0"], "g"), node("Tanh", ["g"], "t"), node("Clip", ["t", "lo", "hi"], "y")]
    _, engine = export_and_compare(onnx, ort, make_model(onnx, nodes, inits, [6], 4), tmp_path, inputs_for(rng, (6,)))
    assert engine.layer_ops == ("dense", "scale_shift", "scale_shift")


@pytest.mark.parametrize("slope_shape", [(12,), (1,), (1, 12)])
def test_prelu_slopes(onnx, ort, tmp_path, rng, slope_shape):
    inits = {**dense_weights(rng, [6, 12, 3]), "slope": rng.uniform(0.05, 0.5, slope_shape)}
    nodes = [node("Gemm", ["x", "W0", "b0"], "g"), node("PRelu", ["g", "slope"], "a"),
             node("Gemm", ["a", "W1", "b1"], "y")]
    export_and_compare(onnx, ort, make_model(onnx, nodes, inits, [6], 3), tmp_path, inputs_for(rng, (6,)))


def test_layer_normalization_is_an_engine_op(onnx, ort, tmp_path, rng):
    inits = {**dense_weights(rng, [8, 16, 4]), "gamma": rng.uniform(0.5, 1.5, 16), "beta": rng.normal(0, 0.3, 16)}
    nodes = [node("Gemm", ["x", "W0", "b0"], "g"),
             node("LayerNormalization", ["g", "gamma", "beta"], "n", axis=-1, epsilon=1e-3),
             node("Gelu", ["n"], "a"), node("Gemm", ["a", "W1", "b1"], "o"), node("LogSoftmax", ["o"], "y")]
    _, engine = export_and_compare(onnx, ort, make_model(onnx, nodes, inits, [8], 4), tmp_path, inputs_for(rng, (8,)))
    assert engine.layer_ops == ("dense", "layer_norm", "dense")


# -- x * g(x), as torch.onnx.export writes SiLU, GELU, Mish, HardSwish -----------------------------

def gelu_erf(x: str, y: str, half_on_x: bool) -> list:
    """torch's GELU below opset 20: x * (erf(x / sqrt 2) + 1) * 0.5 (or with the 0.5 on x first)."""
    first = [node("Div", [x, "sqrt2"], "gd"), node("Erf", ["gd"], "ge"), node("Add", ["ge", "one"], "ga")]
    if half_on_x:
        return first + [node("Mul", [x, "half"], "gh"), node("Mul", ["gh", "ga"], y)]
    return first + [node("Mul", [x, "ga"], "gm"), node("Mul", ["gm", "half"], y)]


@pytest.mark.parametrize("pattern, activation", [
    ("sigmoid", "silu"), ("sigmoid, product reversed", "silu"), ("2 x sigmoid", "silu"),
    ("softplus tanh", "mish"), ("hard sigmoid", "hard_silu"), ("erf", "gelu"), ("erf, half on x", "gelu"),
])
def test_products_that_are_activations(onnx, ort, tmp_path, rng, pattern, activation):
    inits = {**dense_weights(rng, [10, 12, 3]), "sqrt2": np.float32(math.sqrt(2)), "one": np.float32(1),
             "half": np.float32(0.5), "two": np.float32(2)}
    gate = {
        "sigmoid": [node("Sigmoid", ["g"], "s"), node("Mul", ["g", "s"], "a")],
        "sigmoid, product reversed": [node("Sigmoid", ["g"], "s"), node("Mul", ["s", "g"], "a")],
        "2 x sigmoid": [node("Sigmoid", ["g"], "s"), node("Mul", ["g", "two"], "g2"), node("Mul", ["g2", "s"], "a")],
        "softplus tanh": [node("Softplus", ["g"], "sp"), node("Tanh", ["sp"], "th"), node("Mul", ["g", "th"], "a")],
        "hard sigmoid": [node("HardSigmoid", ["g"], "hs", alpha=1 / 6, beta=0.5), node("Mul", ["g", "hs"], "a")],
        "erf": gelu_erf("g", "a", half_on_x=False),
        "erf, half on x": gelu_erf("g", "a", half_on_x=True),
    }[pattern]
    nodes = [node("Gemm", ["x", "W0", "b0"], "g"), *gate, node("Gemm", ["a", "W1", "b1"], "y")]
    _, engine = export_and_compare(onnx, ort, make_model(onnx, nodes, inits, [10], 3), tmp_path,
                                   inputs_for(rng, (10,)))
    assert activations(engine)[0] == activation and engine.layer_ops == ("dense", "dense")


def test_a_product_that_is_no_activation_is_refused_by_its_mul(onnx, tmp_path, rng):
    inits = {**dense_weights(rng, [4, 3]), "one": np.float32(1)}
    nodes = [node("Gemm", ["x", "W0", "b0"], "g"), node("Tanh", ["g"], "t"), node("Mul", ["g", "t"], "y")]
    with pytest.raises(UnsupportedModelError, match=r"^node 'mul_y' \(Mul\): the product of Tanh and x is not "
                                                    r"supported; x times Sigmoid\(x\)"):
        mnist_engine.export_onnx(make_model(onnx, nodes, inits, [4], 3), tmp_path / "m.mnw")


# -- input shapes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["(28, 28) Flatten", "(1, 28, 28) Reshape", "(28, 28, 1) Transpose Flatten",
                                    "(28, 28) Identity Dropout Flatten"])
def test_image_shaped_inputs(onnx, ort, tmp_path, rng, layout):
    inits = {**dense_weights(rng, [784, 16, 10]), "shape": np.array([0, -1], np.int64),
             "mean": rng.uniform(0, 0.3, (28, 28))}
    in_shape, moves = {
        "(28, 28) Flatten": ([28, 28], [node("Sub", ["x", "mean"], "c"), node("Flatten", ["c"], "f")]),
        "(1, 28, 28) Reshape": ([1, 28, 28], [node("Sub", ["x", "mean"], "c"), node("Reshape", ["c", "shape"], "f")]),
        "(28, 28, 1) Transpose Flatten": ([28, 28, 1], [node("Transpose", ["x"], "t", perm=[0, 3, 2, 1]),
                                                          node("Flatten", ["t"], "f")]),
        "(28, 28) Identity Dropout Flatten": ([28, 28], [node("Identity", ["x"], "i"), node("Dropout", ["i"], "d"),
                                                         node("Flatten", ["d"], "f")]),
    }[layout]
    from onnx import numpy_helper

    model = make_model(onnx, [*moves, node("Gemm", ["f", "W0", "b0"], "g"), node("Relu", ["g"], "r"),
                              node("Gemm", ["r", "W1", "b1"], "y")], {}, in_shape, 10)
    for name, value in inits.items():
        model.graph.initializer.append(numpy_helper.from_array(value if value.dtype == np.int64 else
                                                               value.astype(np.float32), name))
    x = (rng.integers(0, 256, (200, *in_shape)) / 255).astype(np.float32)
    _, engine = export_and_compare(onnx, ort, model, tmp_path, x)
    assert engine.input_width == 784


# -- what is refused, by node and op type ---------------------------------------------------------

def simple_graph(onnx, rng, middle, extra_inits=None, opset=20, in_shape=(6,), input_type=None):
    inits = {**dense_weights(rng, [6, 5]), **(extra_inits or {})}
    nodes = [node("Gemm", ["x", "W0", "b0"], "g"), *middle]
    return make_model(onnx, nodes, inits, list(in_shape), 5, opset=opset, input_type=input_type)



def test_an_onnx_mlp_of_tabular_features_exports_as_features(onnx, ort, tmp_path, rng):
    """A graph of 6 inputs that no image feeds takes features: float rows exactly as onnxruntime,
    uint8 refused in one line. An input_scale given makes it a pixel model, by the caller's choice."""
    model = simple_graph(onnx, rng, [node("Relu", ["g"], "y")])
    x = rng.normal(size=(50, 6)).astype(np.float32)
    _, engine = export_and_compare(onnx, ort, model, tmp_path, x)
    assert engine.input_kind == "features" and engine.metadata["input_kind"] == "features"
    with pytest.raises(ValueError, match="^expected float32 features: this model takes tabular features"):
        engine.predict(np.zeros((1, 6), np.uint8))
    _, scaled = export_and_compare(onnx, ort, model, tmp_path, x, input_scale=1.0)
    assert scaled.input_kind == "pixels"

REFUSALS = {
    "an unsupported op": ([node("Cos", ["g"], "y")], {},
                          r"^node 'cos_y' \(Cos\) is not supported; supported op types: MatMul, Gemm"),
    "a skip connection": ([node("Relu", ["g"], "r"), node("Add", ["g", "r"], "y")], {},
                          r"^tensor 'g' feeds two nodes \(node 'relu_r' \(Relu\), node 'add_y' \(Add\)\) whose "
                          r"results do not meet again in one Mul"),
    "a square": ([node("Mul", ["g", "g"], "y")], {},
                 r"^node 'mul_y' \(Mul\): the same tensor as both inputs is not supported"),
    "a computed weight": ([node("Relu", ["g"], "r"), node("Relu", ["W2"], "r2"), node("MatMul", ["r", "r2"], "y")],
                          {"W2": np.ones((5, 5))},
                          r"^node 'matmul_y' \(MatMul\): a weight computed by the graph \(input 1, 'r2'\) is not "
                          r"supported; only constants \(initializers or Constant nodes\)"),
    "Selu with other constants": ([node("Selu", ["g"], "y", alpha=1.0)], {},
                                  r"^node 'selu_y' \(Selu\): alpha=1, gamma=1.0507 is not supported; selu with ONNX's"),
    "Softmax over the batch": ([node("Softmax", ["g"], "y", axis=0)], {},
                               r"^node 'softmax_y' \(Softmax\): axis=0 is not supported; the last axis"),
    "Dropout in training mode": ([node("Constant", [], "train", value_int=1), node("Dropout", ["g", "", "train"], "y")],
                                 {},
                                 r"^node 'dropout_y' \(Dropout\): training_mode that is not a constant False"),
    "a reshape of the batch": ([node("Reshape", ["g", "shape"], "y")], {"shape": np.array([1, -1], np.int64)},
                               r"^node 'reshape_y' \(Reshape\): the target shape \[1, -1\] is not supported; a first "
                               r"dimension of 0 or -1"),
    "a divisor of 0": ([node("Div", ["g", "zero"], "y")], {"zero": np.zeros(5)},
                       r"^node 'div_y' \(Div\): a divisor of 0 is not supported"),
    "a constant per row": ([node("Add", ["g", "rows"], "y")], {"rows": np.zeros((3, 5))},
                           r"^node 'add_y' \(Add\): a constant of shape \(3, 5\) on data of shape \(batch, 5\) is "
                           r"not supported; constants that are the same for every row are"),
    "a custom domain": ([], {}, r"^node 'custom_y' \(Scale\) is from the custom domain 'com.example'"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_the_node_and_op_type(onnx, tmp_path, rng, case):
    from onnx import helper

    middle, inits, message = REFUSALS[case]
    model = simple_graph(onnx, rng, middle, inits)
    if case == "a custom domain":
        model.graph.node.append(helper.make_node("Scale", ["g"], ["y"], name="custom_y", domain="com.example"))
        model.opset_import.append(helper.make_opsetid("com.example", 1))
    out = tmp_path / "m.mnw"
    out.write_bytes(b"untouched")
    with pytest.raises(UnsupportedModelError, match=message):
        mnist_engine.export_onnx(model, out)
    assert out.read_bytes() == b"untouched"


def test_a_graph_without_a_dense_layer_is_refused(onnx, tmp_path):
    model = make_model(onnx, [node("Relu", ["x"], "r"), node("Mul", ["r", "two"], "y")], {"two": np.float32(2)},
                       [6], 6)
    with pytest.raises(UnsupportedModelError, match="^the graph has no MatMul, Gemm, Conv or pooling node$"):
        mnist_engine.export_onnx(model, tmp_path / "m.mnw")
    assert not (tmp_path / "m.mnw").exists()


def test_element_wise_ops_on_image_shaped_data_ask_for_a_flatten_first(onnx, tmp_path, rng):
    # An affine map before the Flatten folds (test_image_shaped_inputs); an activation there cannot.
    nodes = [node("Relu", ["x"], "r"), node("Flatten", ["r"], "f"), node("Gemm", ["f", "W0", "b0"], "y")]
    model = make_model(onnx, nodes, dense_weights(rng, [6, 5]), [2, 3], 5)
    with pytest.raises(UnsupportedModelError, match=r"^node 'relu_r' \(Relu\): a rank-3 input \(batch, 2, 3\) is not "
                                                    r"supported; add a Flatten before it"):
        mnist_engine.export_onnx(model, tmp_path / "m.mnw")


def test_opsets_before_13_are_refused_with_the_conversion_hint(onnx, tmp_path, rng):
    model = simple_graph(onnx, rng, [node("Relu", ["g"], "y")], opset=12)
    with pytest.raises(UnsupportedModelError, match=rf"opset 12; opsets {MIN_OPSET} onward .*convert_version\(model, "
                                                    rf"{MIN_OPSET}\)"):
        mnist_engine.export_onnx(model, tmp_path / "m.mnw")


def test_opset_13_exports(onnx, ort, tmp_path, rng):
    model = simple_graph(onnx, rng, [node("Relu", ["g"], "y")], opset=13)
    export_and_compare(onnx, ort, model, tmp_path, inputs_for(rng, (6,)))


def test_inputs_that_are_not_float32_or_not_static_are_refused(onnx, tmp_path, rng):
    from onnx import TensorProto

    model = simple_graph(onnx, rng, [node("Relu", ["g"], "y")], input_type=TensorProto.DOUBLE)
    with pytest.raises(UnsupportedModelError, match=r"input 'x' is DOUBLE; a FLOAT \(float32\) input is supported"):
        mnist_engine.export_onnx(model, tmp_path / "m.mnw")
    model = simple_graph(onnx, rng, [node("Relu", ["g"], "y")], in_shape=("features",))
    with pytest.raises(UnsupportedModelError, match=r"input 'x' has shape \[N, features\]: expected"):
        mnist_engine.export_onnx(model, tmp_path / "m.mnw")


def test_gemm_with_the_data_transposed_or_second_is_refused(onnx, tmp_path, rng):
    inits = dense_weights(rng, [6, 5])
    bad = [node("Gemm", ["x", "W0", "b0"], "y", transA=1), node("Gemm", ["W0", "x"], "y"),
           node("MatMul", ["W0", "x"], "y")]
    for case, match in zip(bad, [r"transA=1 on the data", r"the data is its input 1, not input 0",
                                 r"the data is its input 1, not input 0"]):
        model = make_model(onnx, [case], inits, [6], 5)
        with pytest.raises(UnsupportedModelError, match=match):
            mnist_engine.export_onnx(model, tmp_path / "m.mnw", )


# -- ways in --------------------------------------------------------------------------------------

def test_a_mapping_error_is_caught_before_writing_and_named(onnx, tmp_path, rng, monkeypatch):
    """Were Tanh mapped to the wrong activation, the proof would catch it and name the layer."""
    monkeypatch.setitem(_GraphBuilder.NAMED, "Tanh", "softsign")
    inits = dense_weights(rng, [6, 8, 3])
    nodes = [node("Gemm", ["x", "W0", "b0"], "g"), node("Tanh", ["g"], "t"), node("Gemm", ["t", "W1", "b1"], "y")]
    out = tmp_path / "m.mnw"
    with pytest.raises(mnist_engine.ExportMismatchError,
                       match=r"diverge at engine layer 0, node 'gemm_g' \(Gemm\) 6->8 \+ node 'tanh_t' \(Tanh\) "
                             r"softsign: max \|exported - ONNX\|"):
        mnist_engine.export_onnx(make_model(onnx, nodes, inits, [6], 3), out,
                                 reference_images=rng.integers(0, 256, (64, 6)).astype(np.uint8))
    assert not out.exists()


def test_a_path_bytes_and_a_model_give_the_same_file(onnx, tmp_path, rng):
    model = simple_graph(onnx, rng, [node("Softplus", ["g"], "y")])
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    files = [mnist_engine.export_onnx(m, tmp_path / f"{i}.mnw", source="s")
             for i, m in enumerate([model, str(path), path, model.SerializeToString()])]
    assert len({f.read_bytes() for f in files}) == 1
    assert mnist_engine.export_onnx(path, tmp_path / "named.mnw") and \
        mnist_engine.load(tmp_path / "named.mnw").metadata["source"] == "model.onnx"


def test_a_file_that_is_not_onnx_is_a_clear_error(onnx, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x89PNG not a protobuf")
    with pytest.raises(ValueError, match=r"bad.onnx is not an ONNX model file"):
        mnist_engine.export_onnx(bad, tmp_path / "m.mnw")
    with pytest.raises(FileNotFoundError):
        mnist_engine.export_onnx(tmp_path / "missing.onnx", tmp_path / "m.mnw")


def test_an_onnx_without_the_external_data_fixes_is_refused(onnx, tmp_path, rng, monkeypatch):
    model = simple_graph(onnx, rng, [node("Relu", ["g"], "y")])
    monkeypatch.setattr(onnx, "__version__", "1.20.1")
    with pytest.raises(RuntimeError, match=r"onnx >= 1.21 is required .*found 1.20.1"):
        mnist_engine.export_onnx(model, tmp_path / "m.mnw")


def test_the_cli_exports_an_onnx_file(onnx, tmp_path, rng, capsys):
    from mnist_engine.cli import main

    model = simple_graph(onnx, rng, [node("Sigmoid", ["g"], "y")])
    onnx.save(model, tmp_path / "model.onnx")
    assert main(["export", str(tmp_path / "model.onnx"), str(tmp_path / "m.mnw")]) == 0
    assert "wrote" in capsys.readouterr().out
    engine = mnist_engine.load(tmp_path / "m.mnw")
    assert engine.metadata["producer"] == "mnist_engine.export_onnx" and activations(engine) == ("sigmoid",)


def test_the_handling_table_names_every_op_the_exporter_takes():
    """The README's table (generated from ONNX_HANDLING) and the dispatch table cannot drift apart."""
    named = {op for ops in ONNX_HANDLING if "(" not in ops for op in ops.split(", ")}
    # Shape and the index ops on its output fold into constants before the walk (_Graph._fold_shapes).
    assert named == set(_GraphBuilder.HANDLERS) | {"Constant", "Shape"} | set(_SHAPE_OPS)
    assert all(re.search(rf"`{op}`", supported_markdown()) for op in named)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript exporter", "dynamo exporter"])
def test_a_torch_mlp_exports(onnx, ort, tmp_path, rng, dynamo):
    """If torch is installed: a nn.Sequential MLP through torch.onnx.export (not needed in CI). The
    two exporters write GELU as Div-Erf-Add-Mul-Mul, SiLU as Sigmoid-Mul, and BatchNorm1d as a node
    (torchscript) or folded into the Gemm (dynamo); torchscript wraps weights in Identity nodes."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.BatchNorm1d(64),
                              torch.nn.GELU(), torch.nn.Dropout(0.2), torch.nn.Linear(64, 32), torch.nn.SiLU(),
                              torch.nn.LayerNorm(32), torch.nn.Hardswish(), torch.nn.Linear(32, 16),
                              torch.nn.LeakyReLU(0.1), torch.nn.Linear(16, 10), torch.nn.Softmax(dim=1))
    with torch.no_grad():  # statistics that are not the identity, so that folding them is tested
        net[2].running_mean.uniform_(-0.5, 0.5)
        net[2].running_var.uniform_(0.5, 2.0)
    net.eval()
    path = tmp_path / "torch.onnx"
    batch = ({"dynamic_shapes": ({0: torch.export.Dim("N")},)} if dynamo else
             {"dynamic_axes": {"x": {0: "N"}, "y": {0: "N"}}})
    torch.onnx.export(net, torch.zeros(2, 28, 28), str(path), input_names=["x"], output_names=["y"],
                      opset_version=17 if not dynamo else 18, dynamo=dynamo, **batch)
    model = onnx.load(path)
    x = (rng.integers(0, 256, (300, 28, 28)) / 255).astype(np.float32)
    _, engine = export_and_compare(onnx, ort, model, tmp_path, x)
    assert activations(engine) == ("gelu", "silu", "hard_silu", "leaky_relu", "softmax")
    with torch.no_grad():
        np.testing.assert_allclose(engine.predict(x), net(torch.from_numpy(x)).numpy(), atol=PARITY)



def test_the_pytorch_examples_net_trained_by_torch_reads_digits_through_both_exporters():
    """If torch is installed (not in CI: its wheels are gigabytes): tools/pytorch_mnist_net.py trains
    examples/mnist's Net briefly on Normalize(0.1307, 0.3081) inputs, exports it through the
    TorchScript and the dynamo exporter and then export_onnx with that mean and std, and holds the
    engine's uint8 accuracy to onnxruntime's on normalized floats (0.05 points), its
    log-probabilities to onnxruntime's, and `mnist-engine predict` on drawn pages to probabilities in
    [0, 1] and the test set's accuracy."""
    import subprocess
    import sys
    from pathlib import Path

    for module in ("torch", "onnxscript", "onnxruntime", "PIL"):
        pytest.importorskip(module)
    tool = Path(__file__).resolve().parent.parent / "tools" / "pytorch_mnist_net.py"
    result = subprocess.run([sys.executable, str(tool), "--train-images", "4000", "--pages", "60"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.rstrip().endswith("all checks hold")
    assert result.stdout.count('"output_kind": "log_probabilities"') == 2

# -- shapes computed by the graph (TorchScript) ---------------------------------------------------

def view_batch_minus_one(onnx, source: str, out: str, opset: int) -> list:
    """x.view(x.size(0), -1) as torch.onnx.export (TorchScript) writes it:
    Shape -> Gather(0) -> Unsqueeze -> Concat([-1]) -> Reshape."""
    from onnx import helper

    unsqueeze = (node("Unsqueeze", [f"{out}_n", f"{out}_axes"], f"{out}_u") if opset >= 13 else
                 node("Unsqueeze", [f"{out}_n"], f"{out}_u", axes=[0]))
    return [node("Shape", [source], f"{out}_s"),
            helper.make_node("Constant", [], [f"{out}_i"], value=helper.make_tensor("i", 7, [], [0])),
            node("Gather", [f"{out}_s", f"{out}_i"], f"{out}_n", axis=0),
            helper.make_node("Constant", [], [f"{out}_axes"], value=helper.make_tensor("a", 7, [1], [0])),
            unsqueeze,
            helper.make_node("Constant", [], [f"{out}_m"], value=helper.make_tensor("m", 7, [1], [-1])),
            node("Concat", [f"{out}_u", f"{out}_m"], f"{out}_c", axis=0),
            node("Reshape", [source, f"{out}_c"], out)]


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (28, 28)])
def test_torchscript_view_of_the_batch_size_exports(onnx, ort, tmp_path, rng, in_shape):
    """3 of 17 public PyTorch MLPs flatten with x.view(x.size(0), -1): the shape arithmetic folds away."""
    inits = dense_weights(rng, [784, 16, 10])
    model = make_model(onnx, [*view_batch_minus_one(onnx, "x", "f", 17), node("Gemm", ["f", "W0", "b0"], "g"),
                              node("Relu", ["g"], "r"), node("Gemm", ["r", "W1", "b1"], "y")], inits, in_shape, 10,
                       opset=17)
    x = (rng.integers(0, 256, (200, *in_shape)) / 255).astype(np.float32)
    _, engine = export_and_compare(onnx, ort, model, tmp_path, x)
    assert engine.layers == ((784, 16, "relu"), (16, 10, "linear"))


def test_arithmetic_on_the_batch_size_is_refused_by_its_reshape(onnx, tmp_path, rng):
    from onnx import helper

    inits = dense_weights(rng, [784, 10])
    nodes = view_batch_minus_one(onnx, "x", "f", 17)
    # view(x.size(0) * 2, -1): the batch size doubled is not a batch axis.
    nodes.insert(3, helper.make_node("Constant", [], ["two"], value=helper.make_tensor("t", 7, [], [2])))
    nodes.insert(4, node("Mul", ["f_n", "two"], "f_n2"))
    nodes[5 + 1] = node("Unsqueeze", ["f_n2", "f_axes"], "f_u")
    model = make_model(onnx, [*nodes, node("Gemm", ["f", "W0", "b0"], "y")], inits, (784,), 10, opset=17)
    with pytest.raises(mnist_engine.UnsupportedModelError, match=r"node 'reshape_f' \(Reshape\)"):
        mnist_engine.export_onnx(model, tmp_path / "m.mnw")


def test_a_reshape_of_the_output_is_exported_with_its_shape_recorded(onnx, ort, tmp_path, rng):
    """A generator's last .view(-1, 1, 28, 28): the rows are the same values; the file records the shape."""
    from onnx import TensorProto, helper

    inits = {**dense_weights(rng, [10, 784]), "shape": np.array([-1, 1, 28, 28], np.int64)}
    model = make_model(onnx, [node("Gemm", ["x", "W0", "b0"], "g"), node("Sigmoid", ["g"], "s"),
                              node("Reshape", ["s", "shape"], "y")], {}, (10,), 784)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 28, 28]))
    from onnx import numpy_helper

    for name, value in inits.items():
        model.graph.initializer.append(numpy_helper.from_array(value if value.dtype == np.int64 else
                                                               value.astype(np.float32), name))
    x = rng.normal(size=(50, 10)).astype(np.float32)
    out = mnist_engine.export_onnx(model, tmp_path / "g.mnw")
    engine = mnist_engine.load(out)
    assert engine.metadata["output_shape"] == "1 28 28"
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(engine.predict(x).reshape(want.shape), want, atol=1e-6)


# -- CNNs (format version 3) ----------------------------------------------------------------------

def cnn_model(onnx, rng, nodes, inits, in_shape, out_width, opset=17):
    from onnx import numpy_helper

    model = make_model(onnx, nodes, {}, in_shape, out_width, opset=opset)
    for name, value in inits.items():
        model.graph.initializer.append(numpy_helper.from_array(
            value if value.dtype == np.int64 else value.astype(np.float32), name))
    return model


def pytorch_mnist_net(onnx, rng, flatten: str = "Flatten"):
    """PyTorch examples/mnist/main.py's Net as torch.onnx.export writes it: Conv 1->32 3x3, Relu,
    Conv 32->64 3x3, Relu, MaxPool 2, Dropout, Flatten, Gemm 9216->128, Relu, Dropout, Gemm 128->10,
    LogSoftmax."""
    inits = {"w1": rng.normal(0, 1 / 3, (32, 1, 3, 3)), "b1": rng.normal(0, 0.1, 32),
             "w2": rng.normal(0, 1 / np.sqrt(288), (64, 32, 3, 3)), "b2": rng.normal(0, 0.1, 64),
             "w3": rng.normal(0, 1 / 96, (128, 9216)), "b3": rng.normal(0, 0.1, 128),
             "w4": rng.normal(0, 1 / np.sqrt(128), (10, 128)), "b4": rng.normal(0, 0.1, 10)}
    flat = ([node("Flatten", ["d1"], "f", axis=1)] if flatten == "Flatten" else
            view_batch_minus_one(onnx, "d1", "f", 17))
    nodes = [node("Conv", ["x", "w1", "b1"], "c1", kernel_shape=[3, 3]), node("Relu", ["c1"], "r1"),
             node("Conv", ["r1", "w2", "b2"], "c2", kernel_shape=[3, 3]), node("Relu", ["c2"], "r2"),
             node("MaxPool", ["r2"], "p1", kernel_shape=[2, 2], strides=[2, 2]), node("Dropout", ["p1"], "d1"),
             *flat, node("Gemm", ["f", "w3", "b3"], "g1", transB=1), node("Relu", ["g1"], "r3"),
             node("Gemm", ["r3", "w4", "b4"], "g2", transB=1), node("LogSoftmax", ["g2"], "y", axis=1)]
    return cnn_model(onnx, rng, nodes, inits, (1, 28, 28), 10)


@pytest.mark.parametrize("flatten", ["Flatten", "view(x.size(0), -1)"])
def test_the_pytorch_mnist_net_exports(onnx, ort, tmp_path, rng, mnist, flatten):
    (_, _), (x_test, _) = mnist
    model = pytorch_mnist_net(onnx, rng, flatten)
    x = (x_test[:300, None] / np.float32(255)).astype(np.float32)
    _, engine = export_and_compare(onnx, ort, model, tmp_path, x)
    assert engine.layer_ops == ("conv2d", "conv2d", "max_pool", "dense", "dense")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(engine.predict(x_test[:300]), want, atol=2e-5)  # uint8 (N, 28, 28) too


@pytest.mark.parametrize("case", ["bn after conv", "bn after relu", "avg pads counted", "avg pads not counted",
                                  "same_upper", "global average", "global max, strides 2"])
def test_conv_and_pool_options_match_onnxruntime(onnx, ort, tmp_path, rng, case):
    inits = {"w": rng.normal(0, 0.5, (6, 1, 3, 3)), "b": rng.normal(0, 0.1, 6),
             "gamma": rng.uniform(0.5, 2, 6), "beta": rng.normal(0, 0.2, 6), "mean": rng.normal(0, 0.2, 6),
             "var": rng.uniform(0.5, 2, 6)}
    conv_attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    if case == "same_upper":
        conv_attrs = {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}
    if case == "global max, strides 2":
        conv_attrs = {"kernel_shape": [3, 3], "strides": [2, 2]}
    nodes = [node("Conv", ["x", "w", "b"], "c", **conv_attrs)]
    if case == "bn after conv":
        nodes += [node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], "n"), node("Relu", ["n"], "r")]
    elif case == "bn after relu":  # not foldable: a per-channel scale_shift on the NHWC image
        nodes += [node("Relu", ["c"], "q"), node("BatchNormalization", ["q", "gamma", "beta", "mean", "var"], "r")]
    else:
        nodes += [node("Relu", ["c"], "r")]
    if case.startswith("avg"):
        nodes += [node("AveragePool", ["r"], "p", kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 0],
                       count_include_pad=int(case == "avg pads counted"))]
    elif case.startswith("global"):
        nodes += [node("GlobalAveragePool" if "average" in case else "GlobalMaxPool", ["r"], "p")]
    else:
        nodes += [node("MaxPool", ["r"], "p", kernel_shape=[2, 2], strides=[2, 2])]
    model = cnn_model(onnx, rng, nodes + [node("Flatten", ["p"], "f"), node("MatMul", ["f", "wd"], "y")],
                      {**inits, "wd": np.zeros((1, 4))}, (1, 13, 11), 4)  # wd: sized below
    # The dense weight's size follows the pooled shape: ask ONNX's shape inference.
    inferred = onnx.shape_inference.infer_shapes(model)
    flat = next(v for v in inferred.graph.value_info if v.name == "f")
    width = flat.type.tensor_type.shape.dim[1].dim_value
    from onnx import numpy_helper

    wd = next(i for i in model.graph.initializer if i.name == "wd")
    wd.CopyFrom(numpy_helper.from_array(rng.normal(0, 1 / np.sqrt(width), (width, 4)).astype(np.float32), "wd"))
    x = rng.random((60, 1, 13, 11), dtype=np.float32)
    _, engine = export_and_compare(onnx, ort, model, tmp_path, x)
    if case == "bn after relu":
        assert engine.layer_ops[:3] == ("conv2d", "scale_shift", "max_pool")


@pytest.mark.parametrize("attrs, in_shape, message", [
    ({"group": 2}, (2, 9, 9), "group=2 is not supported; group=1 is"),
    ({"dilations": [2, 2]}, (1, 9, 9), r"dilations=\[2, 2\] is not supported"),
    ({}, (3, 9, 9), "an image whose values were moved .* is not supported; a one-channel input"),
])
def test_conv_refusals_name_the_node(onnx, tmp_path, rng, attrs, in_shape, message):
    channels = in_shape[0] // attrs.get("group", 1)
    inits = {"w": rng.normal(size=(4, channels, 3, 3)), "wd": rng.normal(size=(4, 3))}
    model = cnn_model(onnx, rng, [node("Conv", ["x", "w"], "c", kernel_shape=[3, 3], **attrs),
                                  node("GlobalAveragePool", ["c"], "p"), node("Flatten", ["p"], "f"),
                                  node("MatMul", ["f", "wd"], "y")], inits, in_shape, 3)
    with pytest.raises(UnsupportedModelError, match=rf"^node 'conv_c' \(Conv\): {message}"):
        mnist_engine.export_onnx(model, tmp_path / "m.mnw")


def test_pool_refusals_name_the_node(onnx, tmp_path, rng):
    for attrs, message in [({"storage_order": 1}, "storage_order=1 is not supported"),
                           ({"pads": [2, 0, 0, 0]}, r"pads \[2, 0, 0, 0\] for a 2x2 window is not supported")]:
        model = cnn_model(onnx, rng, [node("MaxPool", ["x"], "p", kernel_shape=[2, 2], **attrs),
                                      node("Flatten", ["p"], "f"), node("MatMul", ["f", "wd"], "y")],
                          {"wd": rng.normal(size=(25 if "pads" in attrs else 16, 3))}, (1, 8, 8), 3)
        with pytest.raises(UnsupportedModelError, match=rf"^node 'maxpool_p' \(MaxPool\): {message}"):
            mnist_engine.export_onnx(model, tmp_path / "m.mnw")


@pytest.mark.parametrize("reduction", ["GlobalAveragePool", "ReduceMean axes attribute", "ReduceMean axes input",
                                       "ReduceMean keepdims=0", "ReduceMax"])
def test_a_conv_net_without_a_dense_layer_exports(onnx, ort, tmp_path, rng, reduction):
    """The issue's graph: Conv, Relu, a 1x1 Conv to ten channels, a global pool (GlobalAveragePool,
    or ReduceMean / ReduceMax over H and W as PyTorch's dynamo exporter writes AdaptiveAvgPool2d(1)),
    Flatten, Softmax: no MatMul or Gemm, and it matches onnxruntime."""
    inits = {"w1": rng.normal(0, 0.4, (8, 1, 3, 3)), "b1": rng.normal(0, 0.1, 8),
             "w2": rng.normal(0, 0.4, (10, 8, 1, 1)), "b2": rng.normal(0, 0.1, 10)}
    nodes = [node("Conv", ["x", "w1", "b1"], "c1", kernel_shape=[3, 3]), node("Relu", ["c1"], "r1"),
             node("Conv", ["r1", "w2", "b2"], "c2", kernel_shape=[1, 1])]
    opset = 17
    if reduction == "GlobalAveragePool":
        nodes.append(node("GlobalAveragePool", ["c2"], "p"))
    elif reduction == "ReduceMean axes input":
        opset = 18
        inits["axes"] = np.array([2, 3], np.int64)
        nodes.append(node("ReduceMean", ["c2", "axes"], "p"))
    else:
        op = "ReduceMax" if reduction == "ReduceMax" else "ReduceMean"
        nodes.append(node(op, ["c2"], "p", axes=[-2, -1], keepdims=0 if "keepdims=0" in reduction else 1))
    nodes += [node("Flatten", ["p"], "f") if "keepdims=0" not in reduction else node("Identity", ["p"], "f"),
              node("Softmax", ["f"], "y", axis=1)]
    model = cnn_model(onnx, rng, nodes, inits, (1, 12, 12), 10, opset=opset)
    x = rng.random((20, 1, 12, 12)).astype(np.float32)
    _, engine = export_and_compare(onnx, ort, model, tmp_path, x)
    assert engine.layer_ops[-1] == ("global_max_pool" if reduction == "ReduceMax" else "global_avg_pool")
    assert engine.output_kind == "probabilities"


def test_a_reduction_that_is_not_over_the_image_is_refused(onnx, tmp_path, rng):
    model = cnn_model(onnx, rng, [node("Conv", ["x", "w", "b"], "c", kernel_shape=[3, 3]),
                                  node("ReduceMean", ["c"], "y", axes=[1], keepdims=0)],
                      {"w": rng.normal(size=(4, 1, 3, 3)), "b": np.zeros(4)}, (1, 6, 6), 16)
    with pytest.raises(UnsupportedModelError, match=r"ReduceMean.*axes=\[1\] is not supported; a reduction over the "
                                                    r"height and width, axes \[2, 3\], is"):
        mnist_engine.export_onnx(model, tmp_path / "m.mnw")


@pytest.mark.parametrize("size, stride, changes", [(12, 2, False), (13, 2, True), (12, 3, True), (11, 3, False)])
def test_max_pool_ceil_mode_matches_onnxruntime(onnx, ort, tmp_path, rng, size, stride, changes):
    """PyTorch's MaxPool2d(2, ceil_mode=True): on an even map it changes nothing; where it adds a
    last, partial window, that window is the max of what it covers (more end padding, of -inf)."""
    inits = {"w": rng.normal(0, 0.5, (4, 1, 3, 3)), "b": rng.normal(0, 0.1, 4)}
    nodes = [node("Conv", ["x", "w", "b"], "c", kernel_shape=[3, 3]), node("Relu", ["c"], "r"),
             node("MaxPool", ["r"], "p", kernel_shape=[stride, stride], strides=[stride, stride], ceil_mode=1),
             node("Flatten", ["p"], "f"), node("MatMul", ["f", "wd"], "y")]
    out = -(-(size - 2 - stride) // stride) + 1
    inits["wd"] = rng.normal(size=(4 * out * out, 3))
    model = cnn_model(onnx, rng, nodes, inits, (1, size, size), 3)
    x = rng.normal(size=(6, 1, size, size)).astype(np.float32)
    _, engine = export_and_compare(onnx, ort, model, tmp_path, x)
    assert engine.layers[1][1] == 4 * out * out
    assert (out != (size - 2 - stride) // stride + 1) == changes


def test_a_graph_ending_in_a_flattened_image_is_refused_by_its_order(onnx, tmp_path, rng):
    """The graph's output would be NCHW, the engine's row NHWC: refused in one line, not by a
    verification mismatch that reads like rounding."""
    nodes = [node("Conv", ["x", "w", "b"], "c", kernel_shape=[3, 3]), node("Flatten", ["c"], "y")]
    model = cnn_model(onnx, rng, nodes, {"w": rng.normal(size=(4, 1, 3, 3)), "b": np.zeros(4)}, (1, 6, 6), 64)
    with pytest.raises(UnsupportedModelError, match="holds an image's values in NCHW order .* end the graph with a "
                                                    "MatMul or Gemm, or a global pool"):
        mnist_engine.export_onnx(model, tmp_path / "m.mnw")


def test_average_pool_ceil_mode_is_refused_where_it_adds_a_partial_window(onnx, tmp_path, rng):
    nodes = [node("Conv", ["x", "w", "b"], "c", kernel_shape=[3, 3]),
             node("AveragePool", ["c"], "y", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)]
    model = cnn_model(onnx, rng, nodes, {"w": rng.normal(size=(4, 1, 3, 3)), "b": np.zeros(4)}, (1, 13, 13), 4 * 36)
    with pytest.raises(UnsupportedModelError, match="ceil_mode=1 where it adds a partial window is not supported"):
        mnist_engine.export_onnx(model, tmp_path / "m.mnw")
