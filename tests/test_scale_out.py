"""An Engine travels: pickling, copying, and the process pools and cluster schedulers that ship a
model to workers by pickling it (multiprocessing spawn, concurrent.futures, joblib/loky, Dask).
Every result is compared bit for bit with a predict in this process."""
from __future__ import annotations

import concurrent.futures
import copy
import importlib.util
import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest

import mnist_engine
from conftest import require
from helpers import Layout, build, put, random_layers

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(11).integers(0, 256, size=(3000, 784), dtype=np.uint8)


@pytest.fixture(scope="module")
def engine():
    return mnist_engine.load(mnist_engine.default_model_path())


@pytest.fixture(scope="module")
def dask_score():
    """tools/dask_score.py, the README's scale-out example, as a module."""
    spec = importlib.util.spec_from_file_location("dask_score", ROOT / "tools" / "dask_score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predict_chunk(engine: mnist_engine.Engine, chunk: np.ndarray) -> np.ndarray:
    return engine.predict(chunk)


@pytest.mark.parametrize("precision", mnist_engine.available_precisions())
def test_pickle_round_trip_keeps_outputs_and_options(images, precision):
    engine = mnist_engine.load(mnist_engine.default_model_path(), precision=precision, threads=1)
    clone = pickle.loads(pickle.dumps(engine))
    assert clone is not engine
    assert (clone.precision, clone.kernel, clone.threads) == (precision, engine.kernel, 1)
    assert clone.metadata == engine.metadata and clone.layers == engine.layers
    assert clone.reference_deviation == engine.reference_deviation
    np.testing.assert_array_equal(clone.predict(images), engine.predict(images))


def test_pickle_carries_the_kernel_request_not_the_choice():
    # An automatic engine lets the unpickling machine choose its own best kernel; a forced one
    # stays forced.
    auto = mnist_engine.load(mnist_engine.default_model_path())
    forced = mnist_engine.load(mnist_engine.default_model_path(), kernel="scalar")
    assert auto.__getstate__()[2] == ""
    assert pickle.loads(pickle.dumps(forced)).kernel == "scalar"


def test_unpickling_verifies_the_file_again(engine):
    # A pickle whose file is intact in structure and checksum but whose last bias moved: only the
    # reference outputs can notice, and the unpickling process checks them again.
    state = list(engine.__getstate__())
    last_bias = Layout(state[1]).metadata - 4 * engine.output_width
    state[1] = put(state[1], last_bias, "f", 25.0)
    clone = mnist_engine.Engine.__new__(mnist_engine.Engine)
    with pytest.raises(mnist_engine.FormatError, match="reference") as err:
        clone.__setstate__(tuple(state))
    assert err.value.rule == "verification"


def test_an_unverified_engine_stays_unverified(engine, images):
    unverified = mnist_engine.load(mnist_engine.default_model_path(), verify=False)
    clone = pickle.loads(pickle.dumps(unverified))
    assert clone.__getstate__()[6] is False
    np.testing.assert_array_equal(clone.predict(images), engine.predict(images))


def test_pickled_thread_count_is_capped_by_the_receiving_machine(engine):
    state = list(engine.__getstate__())
    state[4] = 10**6
    clone = mnist_engine.Engine.__new__(mnist_engine.Engine)
    clone.__setstate__(tuple(state))
    assert clone.threads == mnist_engine._core.max_threads()


@pytest.mark.parametrize("bad, expected", [((2,) + (None,) * 6, "version-1 state of 7 items, got 2"),
                                           ((1, b"x"), "got 1 with 2 items")])
def test_unknown_pickle_state_is_refused_by_name(bad, expected):
    clone = mnist_engine.Engine.__new__(mnist_engine.Engine)
    with pytest.raises(ValueError, match=expected):
        clone.__setstate__(bad)


def test_copies_are_the_same_immutable_engine(engine, images):
    assert copy.copy(engine) is engine
    assert copy.deepcopy(engine) is engine
    assert copy.deepcopy({"model": engine})["model"] is engine


def test_custom_model_pickles(rng, images):
    data = build(random_layers(rng, [784, 33, 7], ["relu", "softmax"]))
    engine = mnist_engine.Engine.from_bytes(data)
    clone = pickle.loads(pickle.dumps(engine))
    assert clone.__getstate__()[1] == data
    np.testing.assert_array_equal(clone.predict(images), engine.predict(images))


def test_multiprocessing_spawn_pool(engine, images):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        parts = pool.starmap(predict_chunk, [(engine, chunk) for chunk in np.array_split(images, 4)])
    np.testing.assert_array_equal(np.concatenate(parts), engine.predict(images))


def test_process_pool_executor(engine, images):
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        parts = list(pool.map(predict_chunk, [engine] * 3, np.array_split(images, 3)))
    np.testing.assert_array_equal(np.concatenate(parts), engine.predict(images))


def test_joblib_loky(engine, images):
    joblib = require("joblib")
    parts = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(predict_chunk)(engine, chunk) for chunk in np.array_split(images, 4))
    np.testing.assert_array_equal(np.concatenate(parts), engine.predict(images))


@pytest.mark.filterwarnings("ignore:Sending large graph")  # the 7.8 MB of images, embedded on purpose
def test_dask_local_cluster_matches_local_predict(engine, mnist, dask_score):
    """The README's scale-out example (tools/dask_score.py) on a real distributed scheduler with
    two worker processes, over the 10k MNIST test images."""
    require("dask.array")
    distributed = require("distributed")
    _, (x_test, y_test) = mnist
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        probs = dask_score.score(engine, x_test, chunk_rows=2500)
        workers = client.run(lambda: __import__("os").getpid())
    assert len(workers) == 2
    np.testing.assert_array_equal(probs, engine.predict(x_test))
    assert (probs.argmax(1) == y_test).mean() > 0.97


def test_dask_example_script_runs_end_to_end(mnist, capsys, dask_score):
    require("distributed")
    assert dask_score.main(["--images", "30000", "--chunk-rows", "5000"]) == 0  # the test set 3 times
    out = capsys.readouterr().out
    assert "bitwise   equal to a local predict" in out and "accuracy  97.75%" in out
