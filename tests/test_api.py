"""The public Python API: what predict accepts, what it returns, how it fails, and that it is safe
to call from many threads."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import mnist_engine

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def engine():
    return mnist_engine.load(mnist_engine.default_model_path())


@pytest.fixture(scope="module")
def pixels():
    rng = np.random.default_rng(7)
    return np.where(rng.random((37, 784)) < 0.8, 0, rng.integers(1, 256, (37, 784))).astype(np.uint8)


def test_version_is_single_sourced_from_pyproject():
    import re

    # The [project] table's version line (tomllib would need Python 3.11; we support 3.9).
    declared = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert mnist_engine.__version__ == declared == importlib.metadata.version("mnist-engine")


def test_public_names_are_exported():
    for name in mnist_engine.__all__:
        assert hasattr(mnist_engine, name), name
    assert mnist_engine.FormatError.__module__.startswith("mnist_engine")


def test_import_does_not_import_tensorflow_or_the_extras():
    code = ("import sys, mnist_engine, numpy as np; mnist_engine.predict(np.zeros((1, 784), np.uint8)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'sklearn', 'PIL', 'matplotlib', 'tqdm', 'dask', 'onnx', 'onnxruntime', "
            "'starlette', 'uvicorn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_predict_on_zeros_gives_probabilities():
    p = mnist_engine.predict(np.zeros((2, 784), np.uint8))
    assert p.shape == (2, 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert (p >= 0).all()


def test_uint8_gets_the_models_input_scale(engine, pixels):
    as_floats = pixels.astype(np.float32) / np.float32(255)
    # The engine's pixel table rounds v/255 once, exactly as numpy's float32 division does.
    np.testing.assert_array_equal(engine.predict(pixels), engine.predict(as_floats))


def test_image_shaped_input_equals_flat_input(engine, pixels):
    np.testing.assert_array_equal(engine.predict(pixels.reshape(-1, 28, 28)), engine.predict(pixels))


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.longdouble, ">f4"])
def test_other_float_dtypes_are_converted(engine, pixels, dtype):
    x = (pixels / 255.0).astype(dtype)
    want = engine.predict(x.astype(np.float32))
    np.testing.assert_array_equal(engine.predict(x), want)


def test_misaligned_float_views_are_handled(engine, pixels):
    """A float32 view into a buffer at an odd address is C-contiguous but misaligned; the engine
    must not read floats from it in place (UBSan checks this in tools/sanitize_tests.sh)."""
    x = (pixels / 255.0).astype(np.float32)
    raw = bytearray(1) + x.tobytes()
    view = np.frombuffer(raw, np.float32, offset=1).reshape(x.shape)
    assert not view.flags.aligned
    np.testing.assert_array_equal(engine.predict(view), engine.predict(x))


@pytest.mark.parametrize("layout", ["fortran", "strided", "reversed", "readonly"])
def test_memory_layouts_give_the_same_result(engine, pixels, layout):
    want = engine.predict(pixels)
    if layout == "fortran":
        x = np.asfortranarray(pixels)
    elif layout == "strided":
        x = np.repeat(pixels, 2, axis=0)[::2]
    elif layout == "reversed":
        x, want = pixels[::-1], want[::-1]
    else:
        x = pixels.copy()
        x.flags.writeable = False
    np.testing.assert_array_equal(engine.predict(x), want)


def test_zero_rows(engine):
    for x in (np.zeros((0, 784), np.uint8), np.zeros((0, 28, 28), np.float32)):
        p = engine.predict(x)
        assert p.shape == (0, 10) and p.dtype == np.float32
    assert engine.classify(np.zeros((0, 784), np.uint8)).shape == (0,)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int64, np.uint16, np.complex64, object, "U3"])
def test_non_pixel_non_float_dtypes_are_type_errors(engine, dtype):
    x = np.zeros((2, 784), dtype=dtype)
    with pytest.raises(TypeError, match=r"expected uint8 pixels or float32 values, got dtype"):
        engine.predict(x)


def test_non_array_input_is_a_type_error(engine):
    with pytest.raises(TypeError):
        engine.predict("not an image")


@pytest.mark.parametrize("shape", [(784,), (3, 783), (3, 28, 27), (2, 2, 2, 98), (3, 785)])
def test_wrong_shapes_are_value_errors_naming_both(engine, shape):
    x = np.zeros(shape, np.uint8)
    with pytest.raises(ValueError) as info:
        engine.predict(x)
    msg = str(info.value)
    assert "expected input of shape (N, 784), (N, 28, 28) or (N, 28, 28, 1)" in msg
    assert str(shape) in msg and "uint8" in msg


def test_single_image_hint(engine):
    with pytest.raises(ValueError, match=r"x\[None\]"):
        engine.predict(np.zeros(784, np.uint8))


@pytest.mark.parametrize("threads", [0, -1, 10**6])
def test_bad_thread_counts(engine, threads, pixels):
    with pytest.raises(ValueError, match="threads"):
        engine.predict(pixels, threads=threads)


def test_thread_counts_are_bounded_by_four_times_the_cpus(engine, pixels):
    limit = mnist_engine._core.max_threads()
    assert limit >= 4 and limit % 4 == 0
    np.testing.assert_array_equal(engine.predict(pixels, threads=limit), engine.predict(pixels, threads=1))
    for call in (lambda: engine.predict(pixels, threads=limit + 1), lambda: mnist_engine.set_num_threads(limit + 1),
                 lambda: mnist_engine.set_num_threads(10**6)):
        with pytest.raises(ValueError, match=rf"expected threads.* in 1\.\.{limit} \(4x this machine's"):
            call()
    assert mnist_engine.get_num_threads() <= limit


def test_global_thread_default(pixels):
    before = mnist_engine.get_num_threads()
    try:
        mnist_engine.set_num_threads(1)
        assert mnist_engine.get_num_threads() == 1
        one = mnist_engine.predict(pixels)
    finally:
        mnist_engine.set_num_threads(0)
    assert mnist_engine.get_num_threads() == before
    np.testing.assert_array_equal(mnist_engine.predict(pixels), one)
    with pytest.raises(ValueError):
        mnist_engine.set_num_threads(-2)


def test_classify_is_argmax_of_predict(engine, pixels):
    labels = engine.classify(pixels)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, engine.predict(pixels).argmax(axis=1))
    np.testing.assert_array_equal(mnist_engine.classify(pixels), labels)


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels("fp32"))
def test_nan_input_propagates_like_keras(kernel, pixels):
    x = (pixels / 255.0).astype(np.float32)
    x[3, 100] = np.nan
    p = mnist_engine.load(mnist_engine.default_model_path(), kernel=kernel).predict(x)
    assert np.isnan(p[3]).all()
    assert np.isfinite(np.delete(p, 3, axis=0)).all()


def test_properties_and_repr(engine):
    assert engine.layers == ((784, 512, "relu"), (512, 512, "relu"), (512, 10, "softmax"))
    assert (engine.input_width, engine.output_width) == (784, 10)
    assert engine.input_scale == pytest.approx(1 / 255, rel=1e-15)
    assert engine.kernel in mnist_engine.available_kernels("fp32")
    meta = engine.metadata
    assert meta["producer"] == "mnist_engine.export_keras" and meta["keras_version"]
    text = repr(engine)
    assert "784 -> 512 relu -> 512 relu -> 10 softmax" in text and f"kernel={engine.kernel}" in text
    with pytest.raises(AttributeError):
        engine.kernel = "scalar"


def test_load_accepts_str_and_pathlib(tmp_path):
    path = mnist_engine.default_model_path()
    assert mnist_engine.load(str(path)).layers == mnist_engine.load(Path(path)).layers
    with pytest.raises(FileNotFoundError):
        mnist_engine.load(tmp_path / "missing.mnw")


def test_bundled_models_load_by_name_and_a_file_of_that_name_wins(tmp_path, monkeypatch):
    assert set(mnist_engine.BUNDLED_MODELS) == {"mlp512", "convnet", "reader"}
    for name in mnist_engine.BUNDLED_MODELS:
        assert mnist_engine.bundled_model_path(name).is_file()
        assert mnist_engine.load(name).layers == mnist_engine.load(mnist_engine.bundled_model_path(name)).layers
    assert "conv2d" in mnist_engine.load("convnet").layer_ops
    assert mnist_engine.load("reader").reject_class == 10 and mnist_engine.load("convnet").reject_class is None
    with pytest.raises(KeyError, match="expected one of mlp512, convnet, reader"):
        mnist_engine.bundled_model_path("lenet")
    # A name never hides a file: ./convnet is what the user meant, and here it is not a model.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "convnet").write_bytes(b"not a model")
    with pytest.raises(mnist_engine.FormatError):
        mnist_engine.load("convnet")
    with pytest.raises(FileNotFoundError):
        mnist_engine.load("lenet")


def test_concurrent_predicts_equal_the_serial_result(engine):
    rng = np.random.default_rng(3)
    batches = [rng.integers(0, 256, (n, 784), dtype=np.uint8) for n in (1, 5, 64, 65, 300, 1000, 2, 129)]
    serial = [engine.predict(b, threads=1) for b in batches]
    results = [None] * len(batches)
    errors = []

    def work(i):
        try:
            for _ in range(5):
                results[i] = engine.predict(batches[i], threads=2)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


def test_one_channel_images_in_either_layout_are_rows(engine, rng):
    """(N, 28, 28, 1), as a Keras CNN takes them, and (N, 1, 28, 28), as PyTorch does: the same rows."""
    x = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    want = engine.predict(x)
    np.testing.assert_array_equal(engine.predict(x[..., None]), want)
    np.testing.assert_array_equal(engine.predict(x[:, None]), want)
    np.testing.assert_array_equal(engine.predict(x[..., None] / np.float32(255)), engine.predict(x / np.float32(255)))
