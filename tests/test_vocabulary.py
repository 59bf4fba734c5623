"""One source of truth: the activation names, the format's limits and the fuzz decoder's kernel
names are defined once (the C++ tables in vocabulary.h, model_file.h and dispatch.cpp, exported by _core).
Every other list that has to agree with them is checked against them here."""
from __future__ import annotations

import re
from pathlib import Path

import mnist_engine
from helpers import FUZZ_KERNELS
from mnist_engine import _core, bench, model_file, reference
from mnist_engine.export import sklearn as sklearn_export

ROOT = Path(__file__).resolve().parent.parent


def test_the_writer_takes_the_loaders_activation_codes():
    assert model_file.ACTIVATION_CODES == {name: code for code, name in enumerate(_core.ACTIVATIONS)}
    assert _core.ACTIVATIONS[:5] == ("linear", "relu", "sigmoid", "tanh", "softmax")  # version-1 codes


def test_every_activation_has_a_reference_and_a_benchmark_mapping():
    assert tuple(reference.ACTIVATION_FUNCTIONS) == _core.ACTIVATIONS
    assert tuple(bench.ONNX_OPS) == _core.ACTIVATIONS


def test_sklearn_activations_map_into_the_vocabulary():
    assert set(sklearn_export._HIDDEN.values()) | set(sklearn_export._OUTPUT.values()) <= set(_core.ACTIVATIONS)


def test_the_writers_limits_are_the_loaders():
    f = _core.FORMAT
    assert (model_file.VERSION, model_file.MAX_LAYERS, model_file.MAX_WIDTH) == (f["version"], f["max_layers"],
                                                                                 f["max_width"])
    assert model_file.REQUIRED_METADATA == tuple(f["required_metadata"])
    assert model_file.MAX_PARAMETERS == 2**28 and abs(model_file.MAX_TOLERANCE - 1e-3) < 1e-9


def test_the_fuzz_decoders_agree_on_kernel_names():
    """tests/helpers.fuzz_case replays the corpus with the control-byte meaning fuzz_loader.cpp
    gives it; both must name the same kernels in the same order, all of them real."""
    source = (ROOT / "fuzz" / "fuzz_loader.cpp").read_text()
    names = re.search(r"names\[\] = \{([^}]*)\}", source).group(1)
    assert [n.strip().strip('"') for n in names.split(",")] == FUZZ_KERNELS
    assert set(FUZZ_KERNELS) - {""} <= set(mnist_engine.compiled_kernels()) | {"avx2", "avx512"}
