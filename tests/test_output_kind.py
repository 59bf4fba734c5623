"""What a model outputs (docs/FORMAT.md, `output_kind`) and the one conversion to probabilities that
everything showing or thresholding a probability uses (Engine.predict_proba / to_probabilities):
held to numpy's exp and float64 softmax, for models ending in softmax, log_softmax, logits (one
output and several) and values; and the exporters' reading of it from the graph, the loss, the
reference outputs or the caller."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import mnist_engine
from helpers import DenseLayer, build, random_layers
from mnist_engine.export.common import output_kind_for


def engine_ending_in(rng, activation: str, outputs: int = 10, meta=None) -> mnist_engine.Engine:
    layers = random_layers(rng, [12, 16, outputs], ["relu", activation])
    layers[-1] = DenseLayer(layers[-1].kernel * 4, layers[-1].bias, activation)  # outputs far from uniform
    return mnist_engine.Engine.from_bytes(build(layers, meta=meta))


def softmax64(z: np.ndarray) -> np.ndarray:
    e = np.exp(z.astype(np.float64) - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("activation, kind", [("softmax", "probabilities"), ("sigmoid", "probabilities"),
                                              ("log_softmax", "log_probabilities"), ("linear", "logits"),
                                              ("relu", "logits")])
def test_a_file_that_does_not_say_is_read_off_its_last_activation(rng, activation, kind):
    engine = engine_ending_in(rng, activation)
    assert (engine.output_kind, engine.output_kind_stated) == (kind, False)


def test_predict_proba_of_probabilities_is_predict_bit_for_bit(rng):
    engine = engine_ending_in(rng, "softmax")
    x = rng.random((33, 12), dtype=np.float32)
    np.testing.assert_array_equal(engine.predict_proba(x), engine.predict(x))


def test_predict_proba_of_log_probabilities_is_their_exp(rng):
    engine = engine_ending_in(rng, "log_softmax")
    x = rng.random((33, 12), dtype=np.float32)
    raw = engine.predict(x)
    assert (raw < 0).all()  # the raw outputs are no probabilities at all
    p = engine.predict_proba(x)
    np.testing.assert_allclose(p, np.exp(raw.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(p.argmax(1), raw.argmax(1))


@pytest.mark.parametrize("stated", [None, "logits"])
def test_predict_proba_of_logits_is_their_softmax(rng, stated):
    engine = engine_ending_in(rng, "linear", meta=None if stated is None else {"output_kind": stated})
    x = rng.random((33, 12), dtype=np.float32)
    raw = engine.predict(x)
    p = engine.predict_proba(x)
    np.testing.assert_allclose(p, softmax64(raw), atol=1e-6)
    np.testing.assert_array_equal(p.argmax(1), raw.argmax(1))
    assert ((p >= 0) & (p <= 1)).all()


def test_one_logit_is_a_sigmoid(rng):
    engine = engine_ending_in(rng, "linear", outputs=1)
    x = rng.random((33, 12), dtype=np.float32)
    raw = engine.predict(x).astype(np.float64)
    np.testing.assert_allclose(engine.predict_proba(x), 1 / (1 + np.exp(-raw)), atol=1e-6)


def test_a_stated_kind_wins_over_the_last_activation(rng):
    # A softmax at the end of a file that says log_probabilities: the file is the contract.
    engine = engine_ending_in(rng, "softmax", meta={"output_kind": "log_probabilities"})
    assert engine.output_kind == "log_probabilities" and engine.output_kind_stated
    x = rng.random((4, 12), dtype=np.float32)
    np.testing.assert_allclose(engine.predict_proba(x), np.exp(engine.predict(x)), rtol=1e-6)


def test_values_have_no_probabilities(rng):
    engine = engine_ending_in(rng, "linear", meta={"output_kind": "values"})
    x = rng.random((4, 12), dtype=np.float32)
    with pytest.raises(ValueError, match="outputs are values .* not class scores"):
        engine.predict_proba(x)
    with pytest.raises(ValueError, match="outputs are values"):
        engine.to_probabilities(engine.predict(x))


@pytest.mark.parametrize("activation", ["softmax", "log_softmax", "linear"])
def test_to_probabilities_of_predict_is_predict_proba(rng, activation):
    """The server converts a slice of a batch it predicted for several requests: the same rule."""
    engine = engine_ending_in(rng, activation)
    x = rng.random((9, 12), dtype=np.float32)
    outputs = engine.predict(x)
    before = outputs.copy()
    np.testing.assert_array_equal(engine.to_probabilities(outputs[3:7]), engine.predict_proba(x[3:7]))
    np.testing.assert_array_equal(outputs, before)  # a new array: the outputs are left as they were
    with pytest.raises(ValueError, match=r"expected this model's outputs, shape \(N, 10\) float32, got \(9, 9\)"):
        engine.to_probabilities(outputs[:, :9])


def test_the_kinds_are_the_loaders_table():
    assert mnist_engine._core.OUTPUT_KINDS == ("probabilities", "log_probabilities", "logits", "values")


# The exporters' reading (mnist_engine.export.common.output_kind_for), framework-free.

def test_exporters_read_the_kind_in_order_stated_activation_hint_outputs(rng):
    z = rng.normal(size=(16, 10)) * 3
    probabilities, logs = softmax64(z), np.log(softmax64(z))
    assert output_kind_for("softmax", probabilities, "Keras") == "probabilities"
    assert output_kind_for("log_softmax", logs, "ONNX") == "log_probabilities"
    assert output_kind_for("linear", z, "Keras") == "logits"
    assert output_kind_for("linear", z, "Keras", hint="values") == "values"  # a regression loss
    # The graph before the loss: softmax compiled with from_logits=True still outputs probabilities.
    assert output_kind_for("softmax", probabilities, "Keras", hint="logits") == "probabilities"
    # No activation says it: the outputs do (an ONNX graph that normalizes by hand).
    assert output_kind_for("linear", probabilities, "ONNX") == "probabilities"
    assert output_kind_for("linear", logs, "ONNX") == "log_probabilities"
    assert output_kind_for("softmax", probabilities, "Keras", stated="logits") == "logits"


def test_a_stated_kind_the_outputs_contradict_is_refused(rng):
    z = rng.normal(size=(16, 10)) * 3
    with pytest.raises(ValueError, match=r"output_kind='probabilities', but its outputs on the reference rows span "
                                         r"-\d.*probabilities lie in 0..1"):
        output_kind_for("linear", z, "ONNX", stated="probabilities")
    with pytest.raises(ValueError, match="log-probabilities are <= 0"):
        output_kind_for("linear", np.abs(z), "ONNX", stated="log_probabilities")
    with pytest.raises(ValueError, match="expected output_kind to be one of probabilities, log_probabilities, "
                                         "logits, values, got 'odds'"):
        output_kind_for("linear", z, "ONNX", stated="odds")


# The user's road: trained models that end in log-probabilities or logits, exported from their
# framework, read by `mnist-engine predict`, the server and eval as probabilities.

def bundled_weights():
    from mnist_engine.model_file import read_layers

    return read_layers(mnist_engine.default_model_path())  # Dense 512 relu, 512 relu, 10 softmax: trained


def onnx_mlp(onnx, ending: str):
    """The bundled model's trained weights as an ONNX graph (Gemm, Relu, ..., Gemm) that ends as
    PyTorch models do: LogSoftmax (examples/mnist's Net) or nothing (logits, for CrossEntropyLoss)."""
    from onnx import TensorProto, helper, numpy_helper

    layers = bundled_weights()
    nodes, inits, previous = [], [], "x"
    for i, layer in enumerate(layers):
        inits += [numpy_helper.from_array(layer.kernel.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(layer.bias.astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [f"g{i}"]))
        previous = f"g{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [previous], [f"r{i}"]))
            previous = f"r{i}"
    if ending == "LogSoftmax":
        nodes.append(helper.make_node("LogSoftmax", [previous], ["y"], axis=1))
    else:
        nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 784])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def predict_json(model_path, folder):
    import json

    from test_cli import run_module

    out = run_module("predict", str(folder), "--model", str(model_path), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["results"]


@pytest.mark.parametrize("ending, kind", [("LogSoftmax", "log_probabilities"), ("none", "logits")])
def test_a_pytorch_style_net_reads_digits_as_probabilities(tmp_path, ending, kind):
    """The issue's PyTorch examples/mnist Net printed '3 -37.4% ... not sure' for every digit: its
    outputs are log-probabilities. Exported, the file says so, and predict reads every drawn digit,
    sure, with probabilities in 0..1 that are the bundled model's own (the same weights, softmax)."""
    from conftest import require
    from test_cli import drawn_folder

    onnx = require("onnx")
    pytest.importorskip("PIL")
    path = mnist_engine.export_onnx(onnx_mlp(onnx, ending), tmp_path / "net.mnw")
    engine = mnist_engine.load(path)
    assert engine.output_kind == kind and engine.metadata["output_kind"] == kind
    folder = drawn_folder(tmp_path)
    ours, bundled = predict_json(path, folder), predict_json(mnist_engine.default_model_path(), folder)
    for mine, theirs in zip(ours, bundled):
        assert mine["digit"] == int(Path(mine["file"]).name[0]) and mine["sure"], mine
        for a, b in zip(mine["top"], theirs["top"]):
            assert a["digit"] == b["digit"] and 0 <= a["probability"] <= 1
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_keras_logits_and_regression_losses_say_what_the_outputs_are(keras, tmp_path, rng):
    """A Dense(10) without softmax trained with from_logits=True outputs logits; one trained on a
    regression loss outputs values; the same net uncompiled is read as logits. Saved to .keras and
    exported from the file, the compile config still says it."""
    layers = bundled_weights()

    def net():
        model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
                                  keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10)])
        model.set_weights([w for layer in layers for w in (layer.kernel, layer.bias)])
        return model

    logits = net()
    logits.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    regression = net()
    regression.compile("adam", "mse")
    for model, kind in ((logits, "logits"), (regression, "values"), (net(), "logits")):
        assert mnist_engine.load(mnist_engine.export_keras(model, tmp_path / "m.mnw")).output_kind == kind
    regression.save(tmp_path / "regression.keras")
    assert mnist_engine.load(mnist_engine.export_keras(tmp_path / "regression.keras", tmp_path / "r.mnw")
                             ).output_kind == "values"
    # The caller's word wins, and one the outputs contradict is refused before anything is written.
    engine = mnist_engine.load(mnist_engine.export_keras(net(), tmp_path / "s.mnw", output_kind="values"))
    assert engine.output_kind == "values"
    with pytest.raises(ValueError, match="output_kind='probabilities', but its outputs on the reference rows span"):
        mnist_engine.export_keras(net(), tmp_path / "never.mnw", output_kind="probabilities")
    assert not (tmp_path / "never.mnw").exists()
    # The logits file: predict is Keras's logits, predict_proba the bundled (softmax) model's predict.
    engine = mnist_engine.load(mnist_engine.export_keras(logits, tmp_path / "l.mnw"))
    x = rng.integers(0, 256, (50, 784), dtype=np.uint8)
    np.testing.assert_allclose(engine.predict(x), logits.predict(x.astype(np.float32) / 255, verbose=0), atol=1e-4)
    np.testing.assert_allclose(engine.predict_proba(x), mnist_engine.predict(x), atol=1e-6)


def test_sklearn_classifiers_give_probabilities_and_regressors_values(rng, tmp_path):
    from conftest import require

    neural = require("sklearn.neural_network")
    x = rng.random((60, 5))
    y = (x[:, 0] > 0.5).astype(int) + (x[:, 1] > 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged: 30 iterations are plenty for the test
        classifier = neural.MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(x, y)
        regressor = neural.MLPRegressor(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(x, x[:, 0])
        c = mnist_engine.load(mnist_engine.export_sklearn(classifier, tmp_path / "c.mnw", input_scale=1.0,
                                                          reference_images=x[:8].astype(np.float32)))
        r = mnist_engine.load(mnist_engine.export_sklearn(regressor, tmp_path / "r.mnw", input_scale=1.0,
                                                          reference_images=x[:8].astype(np.float32)))
    assert (c.output_kind, r.output_kind) == ("probabilities", "values")
    np.testing.assert_allclose(c.predict_proba(x.astype(np.float32)), classifier.predict_proba(x), atol=1e-5)


def test_the_server_offers_probabilities_beside_logits(tmp_path, rng):
    """A logits model's own output is 'logits'; 'probabilities', asked for by name (as the draw page
    does), is Engine.to_probabilities of it, in the same response, JSON or binary."""
    import json

    from conftest import require

    for module in ("starlette", "uvicorn"):
        require(module)
    from mnist_engine.serve import create_app
    from serving import infer_json, request, server_in_thread

    logits = engine_ending_in(rng, "linear")
    plain = engine_ending_in(rng, "softmax")
    x = rng.random((3, 12), dtype=np.float32)
    with server_in_thread(create_app({"logits": logits, "plain": plain})) as port:
        status, _, meta = request(port, "GET", "/v2/models/logits")
        meta = json.loads(meta)
        assert status == 200 and [o["name"] for o in meta["outputs"]] == ["logits", "probabilities"]
        assert meta["parameters"]["output_kind"] == "logits"
        status, _, meta = request(port, "GET", "/v2/models/plain")
        assert [o["name"] for o in json.loads(meta)["outputs"]] == ["probabilities"]
        asked = [{"name": "probabilities"}, {"name": "logits"}]
        status, _, body = request(port, "POST", "/v2/models/logits/infer", infer_json(x, "FP32", outputs=asked),
                                  {"Content-Type": "application/json"})
        assert status == 200, body
        outputs = {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in json.loads(body)["outputs"]}
        assert [o["name"] for o in json.loads(body)["outputs"]] == ["probabilities", "logits"]
        np.testing.assert_array_equal(outputs["logits"], logits.predict(x))
        np.testing.assert_array_equal(outputs["probabilities"], logits.predict_proba(x))
        status, _, body = request(port, "POST", "/v2/models/logits/infer", infer_json(x, "FP32"),
                                  {"Content-Type": "application/json"})
        assert [o["name"] for o in json.loads(body)["outputs"]] == ["logits"]  # none asked for: its own
