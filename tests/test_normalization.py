"""Models trained behind a DataLoader's Normalize(mean, std) (PyTorch's examples/mnist: 0.1307,
0.3081): the exporters store input_mean / input_std (given, or read off standardized float
reference images), uint8 pixels then reach the model exactly as the transform makes them, and the
uint8 accuracy equals onnxruntime's on the normalized floats."""
from __future__ import annotations

import numpy as np
import pytest

import mnist_engine
from conftest import require
from mnist_engine.reference import normalize_pixels

MEAN, STD = 0.1307, 0.3081


def normalized_onnx_mlp(onnx, ending="LogSoftmax"):
    """The bundled model's trained weights as a graph that takes normalized pixels z = (x/255 - m)/s:
    its first Gemm undoes the normalization (W' = s W, b' = b + m 1W), so it reads digits as well
    as the bundled model, but only if its input is normalized."""
    from onnx import TensorProto, helper, numpy_helper

    from mnist_engine.model_file import read_layers

    layers = read_layers(mnist_engine.default_model_path())
    nodes, inits, previous = [], [], "x"
    for i, layer in enumerate(layers):
        kernel, bias = layer.kernel.astype(np.float64), layer.bias.astype(np.float64)
        if i == 0:
            kernel, bias = kernel * STD, bias + MEAN * kernel.sum(axis=0)
        inits += [numpy_helper.from_array(kernel.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(bias.astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [f"g{i}"]))
        previous = f"g{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [previous], [f"r{i}"]))
            previous = f"r{i}"
    nodes.append(helper.make_node(ending, [previous], ["y"], axis=1))
    graph = helper.make_graph(nodes, "normalized", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 784])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_normalized_net_reads_uint8_as_onnxruntime_reads_the_normalized_floats(mnist, tmp_path):
    onnx, ort = require("onnx"), require("onnxruntime")
    (_, _), (x_test, y_test) = mnist
    model = normalized_onnx_mlp(onnx)
    path = mnist_engine.export_onnx(model, tmp_path / "net.mnw", input_mean=MEAN, input_std=STD)
    engine = mnist_engine.load(path)
    assert engine.input_mean == pytest.approx((MEAN,)) and engine.input_std == pytest.approx((STD,))
    assert engine.metadata["input_mean"] == "0.1307" and engine.metadata["input_std"] == "0.3081"
    z = normalize_pixels(x_test, 1 / 255, [MEAN], [STD])  # what ToTensor + Normalize feed PyTorch
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": z})[0]
    got = engine.predict(x_test)  # uint8 (N, 28, 28)
    np.testing.assert_array_equal(got, engine.predict(z))  # the same inputs, to the bit
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)  # log-probabilities reach -30
    ours, theirs = float((got.argmax(1) == y_test).mean()), float((want.argmax(1) == y_test).mean())
    assert abs(ours - theirs) <= 0.0005, (ours, theirs)
    assert ours >= 0.97  # the bundled model's weights: it reads digits only if the pixels are normalized
    plain = mnist_engine.export_onnx(model, tmp_path / "plain.mnw")  # the export: no mean/std
    assert float((mnist_engine.load(plain).predict(x_test).argmax(1) == y_test).mean()) < ours - 0.01


def test_standardized_float_references_say_the_mean_and_std(tmp_path, rng):
    """Reference images a DataLoader normalized: the shortest mean and std that give back every
    value are stored; images whose values no Normalize explains are left as they are, with the
    export-time warning, and the engine warns again when uint8 arrives."""
    onnx = require("onnx")
    pixels = rng.integers(0, 256, (16, 784), dtype=np.uint8)
    pixels[0, :2] = (0, 255)
    z = normalize_pixels(pixels, 1 / 255, [MEAN], [STD])
    engine = mnist_engine.load(mnist_engine.export_onnx(normalized_onnx_mlp(onnx), tmp_path / "a.mnw",
                                                        reference_images=z))
    assert engine.metadata["input_mean"] == "0.1307" and engine.metadata["input_std"] == "0.3081"
    np.testing.assert_array_equal(engine.predict(pixels), engine.predict(z))
    noisy = z + rng.normal(0, 0.01, z.shape).astype(np.float32)
    with pytest.warns(mnist_engine.InputRangeWarning, match="if on Normalize\\(mean, std\\), give input_mean"):
        path = mnist_engine.export_onnx(normalized_onnx_mlp(onnx), tmp_path / "b.mnw", reference_images=noisy)
    unstated = mnist_engine.load(path)
    assert unstated.input_mean is None
    with pytest.warns(mnist_engine.InputRangeWarning, match="standardized input"):
        unstated.predict(pixels)


def test_the_cli_exports_and_describes_a_normalized_model(tmp_path):
    onnx = require("onnx")
    from test_cli import run_module

    onnx.save(normalized_onnx_mlp(onnx), tmp_path / "net.onnx")
    out = run_module("export", str(tmp_path / "net.onnx"), str(tmp_path / "net.mnw"), "--input-mean", "0.1307",
                     "--input-std", "0.3081")
    assert out.returncode == 0, out.stderr
    info = run_module("info", str(tmp_path / "net.mnw"))
    assert "uint8 pixels become (p * 0.00392156862745098 - mean) / std, mean [0.1307" in info.stdout
    assert "outputs: log-probabilities" in info.stdout
    bad = run_module("export", str(tmp_path / "net.onnx"), str(tmp_path / "x.mnw"), "--input-mean", "0.1")
    assert bad.returncode == 2 and "expected input_mean and input_std together, got only input_mean" in bad.stderr


def test_keras_exports_a_normalized_model_too(keras, mnist, tmp_path):
    from mnist_engine.model_file import read_layers

    (_, _), (x_test, _) = mnist
    layers = read_layers(mnist_engine.default_model_path())
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
                              keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    weights = [w for layer in layers for w in (layer.kernel, layer.bias)]
    weights[0], weights[1] = weights[0] * STD, weights[1] + MEAN * weights[0].astype(np.float64).sum(axis=0)
    model.set_weights(weights)
    engine = mnist_engine.load(mnist_engine.export_keras(model, tmp_path / "k.mnw", input_mean=[MEAN],
                                                         input_std=[STD]))
    z = normalize_pixels(x_test[:2000], 1 / 255, [MEAN], [STD])
    got = engine.predict(x_test[:2000])
    np.testing.assert_allclose(got, model.predict(z, verbose=0), atol=1e-5)
    # The bundled model's weights behind a Normalize: it reads as the bundled model does.
    assert float((got.argmax(1) == mnist_engine.predict(x_test[:2000]).argmax(1)).mean()) >= 0.999
    with pytest.raises(ValueError, match=r"expected input_mean to be 1 finite values \(one per channel"):
        mnist_engine.export_keras(model, tmp_path / "never.mnw", input_mean=[0.1, 0.2], input_std=[0.3, 0.3])
