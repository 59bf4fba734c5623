"""docs/FORMAT.md, rule by rule: a round trip, then one test per rule that breaks exactly that rule
(re-sealing the checksum where the rule comes after it) and expects that rule's FormatError."""
from __future__ import annotations

import math
import re
import resource
import struct
from pathlib import Path

import numpy as np
import pytest

import mnist_engine
from helpers import Layout, as_version_2, build, put, reframe, reseal
from mnist_engine import Engine, FormatError
from mnist_engine.model_file import DenseLayer
from mnist_engine.reference import forward


def load(data: bytes, verify: bool = True) -> Engine:
    return Engine.from_bytes(data, verify=verify)


def expect(rule: str, data: bytes, offset: int = None) -> FormatError:
    with pytest.raises(FormatError) as info:
        load(data)
    err = info.value
    assert err.rule == rule, str(err)
    assert str(err).startswith(f"{rule} at offset {err.offset}: ")
    assert "expected" in str(err)
    if offset is not None:
        assert err.offset == offset, str(err)
    return err


def with_value(small_layers, key: str, placeholder: str, value: str):
    """(a file whose `key` entry holds `value`, exactly as given, and that value's offset): built with
    a valid `placeholder`, then rewritten, so that the writer's own checks never see `value`."""
    data = build(small_layers, meta={key: placeholder})
    _, _, value_length_at, value_at = Layout(data).entry(key)
    encoded = value.encode()
    broken = data[:value_length_at] + struct.pack("<I", len(encoded)) + encoded + data[value_at + len(placeholder):]
    return reframe(broken), value_at


@pytest.fixture
def good(small_layers) -> bytes:
    return build(small_layers, meta={"xa": "one", "xb": "two"})


@pytest.fixture
def v2_layers(rng):
    """6 -> 5 (gelu) -> scale_shift (relu_general) -> layer_norm (prelu) -> 3 (softmax): every op,
    scalar and per-unit activation parameters, and relu_general's unbounded max_value."""
    from mnist_engine.model_file import DenseLayer, LayerNormLayer, ScaleShiftLayer

    return [DenseLayer(rng.normal(size=(6, 5)) / 2, rng.normal(size=5), "gelu"),
            ScaleShiftLayer(rng.uniform(0.5, 2, 5), rng.normal(size=5), "relu_general", (0.1, 0.2, np.inf)),
            LayerNormLayer(rng.uniform(0.5, 2, 5), rng.normal(size=5), 1e-3, "prelu", rng.uniform(0, 0.3, 5)),
            DenseLayer(rng.normal(size=(5, 3)) / 2, rng.normal(size=3), "softmax")]


@pytest.fixture
def good_v2(v2_layers) -> bytes:
    return build(v2_layers)


def test_round_trip(small_layers, good, rng):
    e = load(good)
    assert e.layers == ((6, 5, "relu"), (5, 3, "softmax"))
    assert (e.input_width, e.output_width) == (6, 3)
    assert e.input_scale == 1 / 255
    assert e.metadata == {"producer": "tests", "producer_version": "0", "source": "tests/helpers.py",
                          "xa": "one", "xb": "two"}
    x = rng.random((9, 6), dtype=np.float32)
    np.testing.assert_allclose(e.predict(x), forward(small_layers, x), atol=1e-6)


def test_format_error_is_a_value_error():
    assert issubclass(FormatError, ValueError)


def test_crc32c_matches_the_standard_check_value():
    assert mnist_engine._core.crc32c(b"123456789") == 0xE3069283
    assert mnist_engine._core.crc32c(b"") == 0


def test_fast_crc32c_matches_the_portable_table(rng):
    # Every length 0..64 covers each tail of the 8-byte steps; then some long, odd-sized buffers.
    for n in [*range(65), 1000, 4095, 1 << 20]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert mnist_engine._core.crc32c(data) == mnist_engine._core._crc32c_portable(data), n
        assert mnist_engine._core.crc32c(data, 0x1234) == mnist_engine._core._crc32c_portable(data, 0x1234)


def test_written_header_matches_the_spec(good):
    magic, version, bom, size = struct.unpack_from("<8sIIQ", good)
    assert (magic, version, bom, size) == (b"\x89MNW\r\n\x1a\n", 1, 0x0A0B0C0D, len(good))
    assert good[12:16] == bytes([0x0D, 0x0C, 0x0B, 0x0A])


# Rules 1-6: the frame.

def test_rule_01_too_short(good):
    expect("too-short", good[:51], 0)
    expect("too-short", b"", 0)


def test_rule_02_bad_magic(good):
    err = expect("bad-magic", b"PK\x03\x04" + good[4:], 0)
    assert "got 50 4b 03 04" in str(err)  # bytes as bytes: two digits each
    assert "a zip archive: a Keras .keras model?" in str(err)


@pytest.mark.parametrize("version", [0, 5, 0xFFFFFFFF])
def test_rule_03_unsupported_version(good, version):
    err = expect("unsupported-version", put(good, 8, "I", version), 8)
    assert f"expected format version 1..4, got version {version}" in str(err)
    if version > 4:
        assert "newer mnist_engine" in str(err)


def test_rule_04_byte_order(good):
    expect("byte-order", good[:12] + bytes([0x0A, 0x0B, 0x0C, 0x0D]) + good[16:], 12)


def test_rule_05_file_size_truncated(good):
    err = expect("file-size", good[:-1], 16)
    assert "truncated" in str(err)


def test_rule_05_file_size_trailing_bytes(good):
    err = expect("file-size", good + b"\0", 16)
    assert "trailing" in str(err)


def test_rule_06_checksum(good):
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    expect("checksum", bytes(flipped), len(good) - 4)


# Rules 7-11: header fields.

@pytest.mark.parametrize("value", [0, 65])
def test_rule_07_layer_count(good, value):
    expect("layer-count", put(good, 24, "I", value), 24)


@pytest.mark.parametrize("value", [0, 65537])
def test_rule_08_input_width(good, value):
    expect("input-width", put(good, 28, "I", value), 28)


@pytest.mark.parametrize("value", [0.0, -1 / 255, math.inf, math.nan])
def test_rule_09_input_scale(good, value):
    expect("input-scale", put(good, 32, "d", value), 32)


@pytest.mark.parametrize("value", [0, 257])
def test_rule_10_ref_count(good, value):
    expect("ref-count", put(good, 40, "I", value), 40)


def test_rule_11_meta_count(good):
    expect("meta-count", put(good, 44, "I", 65), 44)


# Rules 12-22: the layer table and the sizes it implies.

@pytest.mark.parametrize("field, value", [(0, 0), (4, 0), (4, 65537)])
def test_rule_12_layer_width(good, field, value):
    expect("layer-width", put(good, 48 + field, "I", value), 48 + field)


def test_rule_13_activation(good):
    # Code 5 (gelu) exists only from version 2 on.
    err = expect("activation", put(good, 48 + 16 + 8, "I", 5), 72)
    assert "expected an activation code 0..4" in str(err) and "version-1 file, got 5" in str(err)


def test_rule_13_activation_version_2(good_v2):
    err = expect("activation", put(good_v2, 48 + 20 + 8, "I", 21), 76)
    assert "expected an activation code 0..20" in str(err) and "prelu" in str(err)


def test_rule_15_layer_op(good_v2):
    err = expect("layer-op", put(good_v2, 48 + 20 + 16, "I", 3), 84)
    assert "expected an op code 0..2 (dense, scale_shift, layer_norm) for layer 1 of a version-2 file" in str(err)


def test_rule_16_op_width(good_v2):
    # The scale_shift layer (layer 1) claims 4 outputs for its 5 inputs.
    err = expect("op-width", put(good_v2, 48 + 20 + 4, "I", 4), 72)
    assert "expected layer 1 (scale_shift, element-wise)" in str(err)


def test_rule_14_dtype(good):
    expect("dtype", put(good, 48 + 12, "I", 2), 60)


def test_rule_17_layer_chain(good):
    # Layer 1 claims 4 inputs while layer 0 gives 5.
    err = expect("layer-chain", put(good, 48 + 16, "I", 4), 64)
    assert "expected layer 1 to take 5 inputs" in str(err)


def test_rule_17_layer_chain_first_layer(good):
    expect("layer-chain", put(good, 28, "I", 7), 48)


# Version 3: spatial layers. Layer i's descriptor starts at 48 + 72 i; its geometry at +20:
# in_height, in_width, in_channels, window_h, window_w, stride_h, stride_w, pads (t, b, l, r),
# filters, flags.
V3_ENTRY, GEOMETRY = 72, 20
FIELDS = ["in_height", "in_width", "in_channels", "window_h", "window_w", "stride_h", "stride_w", "pad_top",
          "pad_bottom", "pad_left", "pad_right", "filters", "flags"]


@pytest.fixture
def v3_layers(rng):
    """An 8 x 9 x 2 image -> conv 3x3 'same' (relu) -> max_pool 2 -> conv 2x2 stride 2 -> avg_pool
    (padding counted) -> global_avg_pool -> dense softmax: every spatial op, odd sizes."""
    from mnist_engine.model_file import Conv2DLayer, DenseLayer, PoolLayer

    return [Conv2DLayer(rng.normal(size=(3, 3, 2, 4)) / 3, rng.normal(size=4) * 0.1, (8, 9, 2), (1, 1), (1, 1, 1, 1),
                        "relu"),
            PoolLayer("max_pool", (8, 9, 4), (2, 2), (2, 2)),
            Conv2DLayer(rng.normal(size=(2, 2, 4, 5)) / 3, rng.normal(size=5) * 0.1, (4, 4, 4), (2, 2)),
            PoolLayer("avg_pool", (2, 2, 5), (2, 2), (1, 1), (1, 0, 1, 0), count_padding=True),
            PoolLayer("global_avg_pool", (2, 2, 5)),
            DenseLayer(rng.normal(size=(5, 3)), rng.normal(size=3), "softmax")]


@pytest.fixture
def good_v3(v3_layers) -> bytes:
    return build(v3_layers)


def geometry_at(layer: int, field: str) -> int:
    return 48 + V3_ENTRY * layer + GEOMETRY + 4 * FIELDS.index(field)


def test_version_3_round_trip(v3_layers, good_v3, rng, tmp_path):
    assert struct.unpack_from("<I", good_v3, 8)[0] == 3
    e = load(good_v3)
    assert e.layer_ops == ("conv2d", "max_pool", "conv2d", "avg_pool", "global_avg_pool", "dense")
    x = rng.normal(size=(20, 144)).astype(np.float32)
    np.testing.assert_allclose(e.predict(x), forward(v3_layers, x), atol=1e-6)
    from mnist_engine.model_file import read_layers

    (tmp_path / "m.mnw").write_bytes(good_v3)
    back = read_layers(tmp_path / "m.mnw")
    assert [layer.op for layer in back] == list(e.layer_ops)
    np.testing.assert_allclose(forward(back, x), forward(v3_layers, x), rtol=1e-6, atol=1e-7)


def test_rule_15_layer_op_version_3(good_v3):
    err = expect("layer-op", put(good_v3, 48 + 16, "I", 8), 64)
    assert "expected an op code 0..7 (dense, scale_shift, layer_norm, conv2d, max_pool, avg_pool, " in str(err)


@pytest.mark.parametrize("layer, field, value, message", [
    (5, "in_height", 1, "a dense layer has no geometry: every geometry field must be 0"),
    (0, "in_channels", 3, "an input image of height x width x channels = input_width 144, got 8 x 9 x 3"),
    (0, "in_height", 0, "an input image of height x width x channels = input_width 144, got 0 x 9 x 2"),
    (0, "window_h", 65, "a window of 1..64 on each side, got 65 x 3"),
    (0, "stride_w", 0, "strides of 1..64, got 1 x 0"),
    (0, "pad_left", 3, "each pad smaller than the window"),
    (1, "filters", 2, "filters 0 for a pool (it keeps the channels), got 2"),
    (0, "filters", 0, "1..65536 filters, got 0"),
    (1, "flags", 1, "flags 0, got 1"),
    (3, "flags", 3, "flags 0 or 1 (count the padding), got 3"),
    (4, "window_h", 1, "a global_avg_pool layer pools the whole image"),
])
def test_rule_18_layer_geometry(good_v3, layer, field, value, message):
    err = expect("layer-geometry", put(good_v3, geometry_at(layer, field), "I", value), 48 + V3_ENTRY * layer + 20)
    assert message in str(err), str(err)


def test_rule_18_layer_geometry_window_that_does_not_fit(good_v3):
    # Layer 2 is a 2x2 window on a 4x4 image; a 6-high window (pads 0) does not fit.
    err = expect("layer-geometry", put(good_v3, geometry_at(2, "window_h"), "I", 6), 48 + V3_ENTRY * 2 + 20)
    assert "a 6 x 2 window that fits the padded 4 x 4 input" in str(err)


def test_rule_19_layer_output(good_v3):
    # The first conv with 'same' pads gives 8 x 9 x 4 = 288; a stride of 2 would give 4 x 5 x 4.
    err = expect("layer-output", put(good_v3, geometry_at(0, "stride_h"), "I", 2), 48 + 4)
    assert "expected layer 0 (conv2d) to give its 4 x 9 x 4 = 144 outputs as output_width, got 288" in str(err)


def test_rule_20_shape_chain(good_v3):
    # Layer 1 (max_pool) reads 288 values as 9 x 8 x 4 instead of layer 0's 8 x 9 x 4: same width,
    # another image. Its own output (4 x 4 x 4 either way) still matches.
    data = put(put(good_v3, geometry_at(1, "in_height"), "I", 9), geometry_at(1, "in_width"), "I", 8)
    err = expect("shape-chain", data, 48 + V3_ENTRY * 1 + 20)
    assert "expected layer 1 to take the previous layer's 8 x 9 x 4 image, got 9 x 8 x 4" in str(err)


def test_version_3_is_written_only_for_spatial_layers(small_layers, v2_layers):
    assert struct.unpack_from("<I", build(small_layers), 8)[0] == 1
    assert struct.unpack_from("<I", build(v2_layers), 8)[0] == 2


def test_rule_22_layout_size_table_past_end(good):
    # 64 layers need a 1 KiB table; the file is smaller than that.
    expect("layout-size", put(good, 24, "I", 64), 48)


def _declare_layers(small_layers, count: int, width: int, n_in: int = None) -> bytes:
    """A small valid file whose header and layer table are rewritten to declare `count` layers of
    width x width (the first n_in x width): the declaration alone is huge, the file is not."""
    n_in = n_in or width
    data = bytearray(build(small_layers))
    data[24:48] = struct.pack("<IIdII", count, n_in, 1 / 255, 1, 3)
    table = b"".join(struct.pack("<IIII", n_in if i == 0 else width, width, 1, 1) for i in range(count))
    data = bytes(data[:48]) + table + bytes(data[48:])
    return reseal(data[:16] + struct.pack("<Q", len(data)) + data[24:])


def test_rule_21_model_size_declared_terabytes_are_not_allocated(small_layers):
    # A chain of 64 layers 65536 wide declares ~1 TiB of weights in a file of ~1 KiB. The loader
    # must reject it from arithmetic alone, without allocating.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = expect("model-size", _declare_layers(small_layers, 64, 65536), 48)
    assert "expected at most 268435456 weights, biases and parameters" in str(err)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024, f"peak RSS grew by {grown_kib} KiB while rejecting the file"


def test_rule_21_model_size_cap_is_exact(small_layers):
    # 4095 x 65535 weights + 65535 biases is just under 2^28; 4096 x 65536 + 65536 is over.
    cap = mnist_engine._core.FORMAT["max_parameters"]
    assert 4095 * 65535 + 65535 <= cap < 4096 * 65536 + 65536
    expect("layout-size", _declare_layers(small_layers, 1, 65535, n_in=4095))
    expect("model-size", _declare_layers(small_layers, 1, 65536, n_in=4096), 48)


def _declare_conv(good_v3: bytes, image, window, filters) -> bytes:
    """good_v3 with its layer table rewritten to one valid-geometry conv (no padding, stride 1):
    the declaration alone asks for the layer, the file holds none of its weights."""
    h, w, c = image
    out = (h - window + 1) * (w - window + 1) * filters
    data = bytearray(good_v3)
    data[24:32] = struct.pack("<II", 1, h * w * c)  # layer count, input width
    entry = struct.pack("<IIIII", h * w * c, out, 0, 1, 3) + struct.pack(
        "<13I", h, w, c, window, window, 1, 1, 0, 0, 0, 0, filters, 0)
    data = bytes(data[:48]) + entry + bytes(data[48 + V3_ENTRY * 6:])
    return reseal(data[:16] + struct.pack("<Q", len(data)) + data[24:])


def test_rule_21_model_size_caps_multiply_adds_per_row(good_v3):
    """A conv reuses its kernel at every output pixel: 33 x 33 x 16 x 64 weights (1.1 M, far under
    the value cap) on a 64 x 64 x 16 image cost 1.1 G multiply-adds per image."""
    cap = mnist_engine._core.FORMAT["max_multiply_adds"]
    assert cap == 2 ** 28
    err = expect("model-size", _declare_conv(good_v3, (64, 64, 16), 33, 64), 48)
    assert f"expected at most {cap} multiply-adds per input row" in str(err)
    assert str(32 * 32 * 33 * 33 * 16 * 64) in str(err)
    # Just under the cap the same shape passes rule 21 and is rejected later for its missing weights.
    assert 17 * 17 * 48 * 48 * 16 * 16 <= cap
    expect("layout-size", _declare_conv(good_v3, (64, 64, 16), 48, 16))


def _declare_pools(good_v3: bytes, side: int, window: int, count: int) -> bytes:
    """good_v3 with its layer table rewritten to `count` max pools, stride 1, padded 'same' (the
    image keeps its side): no weights at all, so only the work they declare can refuse the file."""
    before, after = (window - 1) // 2, window // 2
    entry = struct.pack("<IIIII", side * side, side * side, 0, 1, 4) + struct.pack(
        "<13I", side, side, 1, window, window, 1, 1, before, after, before, after, 0, 0)
    data = bytearray(good_v3)
    data[24:32] = struct.pack("<II", count, side * side)
    data = bytes(data[:48]) + entry * count + bytes(data[48 + V3_ENTRY * 6:])
    return reseal(data[:16] + struct.pack("<Q", len(data)) + data[24:])


def test_rule_21_model_size_counts_the_windows_a_pool_reads(good_v3):
    """The issue's file: 64 pools of 64 x 64 windows over a 256 x 256 image, no weights, half a
    megabyte; it passed every rule and took 135 s to load. The windows' reads count: refused from
    the layer table, at once. One such pool reads exactly the cap, 2^28 values, and passes rule 21."""
    import time

    from mnist_engine.model_file import PoolLayer, encode_model, row_work

    start = time.perf_counter()
    err = expect("model-size", _declare_pools(good_v3, 256, 64, 64), 48)
    assert time.perf_counter() - start < 1.0
    assert "a pool counts each value its windows read" in str(err) and str(64 * 2 ** 28) in str(err)
    expect("layout-size", _declare_pools(good_v3, 256, 64, 1))
    pool = PoolLayer("max_pool", (256, 256, 1), (64, 64), (1, 1), (31, 32, 31, 32))
    assert row_work(pool) == 2 ** 28 and row_work(PoolLayer("global_avg_pool", (7, 5, 3))) == 7 * 5 * 3
    with pytest.raises(ValueError, match="expected at most 268435456 multiply-adds per input row"):
        encode_model([pool, pool], input_scale=1.0, metadata={}, reference_inputs=np.zeros((1, 65536)),
                     reference_outputs=np.zeros((1, 65536)))


def test_the_writer_refuses_what_the_loader_would(rng, tmp_path):
    from mnist_engine.model_file import Conv2DLayer, DenseLayer, write_model

    conv = Conv2DLayer(np.zeros((33, 33, 16, 64), np.float32), np.zeros(64), (64, 64, 16))
    dense = DenseLayer(np.zeros((32 * 32 * 64, 1), np.float32), np.zeros(1))
    with pytest.raises(ValueError, match="expected at most 268435456 multiply-adds per input row"):
        write_model(tmp_path / "m.mnw", [conv, dense], reference_inputs=np.zeros((1, 65536), np.float32),
                    reference_outputs=np.zeros((1, 1)))
    assert not (tmp_path / "m.mnw").exists()


def test_rule_22_layout_size_declared_weights_missing(small_layers):
    # Within the cap (8 x 2048 x 2048 is 2^25 weights) but far more than the file holds.
    err = expect("layout-size", _declare_layers(small_layers, 8, 2048))
    assert "bytes of weights" in str(err)


# Rules 23-24: weights and parameters.

@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_rule_23_non_finite_weight(good, value):
    at = Layout(good).weights + 4 * 7
    expect("non-finite-weight", put(good, at, "f", value), at)


def test_rule_23_non_finite_bias(good):
    at = Layout(good).weights + 4 * 30  # layer 0's bias follows its 6x5 kernel
    expect("non-finite-weight", put(good, at, "f", math.nan), at)


@pytest.mark.parametrize("layer, index, value", [
    (1, 0, math.nan),        # relu_general negative_slope
    (1, 2, -math.inf),       # relu_general max_value: +inf is the only non-finite value allowed
    (1, 2, math.nan),
    (2, 4, math.inf),        # a prelu slope
])
def test_rule_23_non_finite_weight_parameter(good_v2, layer, index, value):
    at = Layout(good_v2).parameters_at[layer] + 4 * index
    err = expect("non-finite-weight", put(good_v2, at, "f", value), at)
    assert "parameter" in str(err)


def test_rule_23_non_finite_weight_epsilon(good_v2):
    at = Layout(good_v2).parameters_at[2] - 4  # layer_norm's epsilon precedes its activation's parameters
    expect("non-finite-weight", put(good_v2, at, "f", math.inf), at)


@pytest.mark.parametrize("where, value, message", [
    ("epsilon", 0.0, "epsilon > 0, got 0"),
    ("epsilon", -1e-3, "epsilon > 0"),
    ("max_value", -1.0, "max_value >= 0"),
])
def test_rule_24_layer_parameter(good_v2, where, value, message):
    layout = Layout(good_v2)
    at = layout.parameters_at[2] - 4 if where == "epsilon" else layout.parameters_at[1] + 8
    err = expect("layer-parameter", put(good_v2, at, "f", value), at)
    assert message in str(err)


def test_version_2_round_trip(v2_layers, good_v2, rng, tmp_path):
    from mnist_engine.model_file import read_layers

    e = load(good_v2)
    assert Layout(good_v2).version == 2
    assert e.layers == ((6, 5, "gelu"), (5, 5, "relu_general"), (5, 5, "prelu"), (5, 3, "softmax"))
    assert e.layer_ops == ("dense", "scale_shift", "layer_norm", "dense")
    x = rng.random((9, 6), dtype=np.float32)
    np.testing.assert_allclose(e.predict(x), forward(v2_layers, x), atol=2e-6)
    (tmp_path / "m.mnw").write_bytes(good_v2)
    for got, want in zip(read_layers(tmp_path / "m.mnw"), v2_layers, strict=True):
        assert (got.op, got.activation) == (want.op, want.activation)
        for a, b in zip(got.values(), want.values(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_version_1_models_are_written_as_version_1(good):
    assert Layout(good).version == 1


def test_a_version_1_model_as_version_2_computes_the_same_bits(good, rng):
    """The version-2 encoding of a version-1 model (every layer dense, op 0) loads and predicts
    exactly what the version-1 file does, on every fp32 kernel."""
    v2 = as_version_2(good)
    assert Layout(v2).version == 2
    x = rng.random((70, 6), dtype=np.float32)
    for kernel in mnist_engine.available_kernels("fp32"):
        want = Engine.from_bytes(good, kernel=kernel).predict(x)
        np.testing.assert_array_equal(Engine.from_bytes(v2, kernel=kernel).predict(x), want)


# Rules 25-31: metadata.

def test_rule_25_metadata_truncated(good):
    layout = Layout(good)
    _, _, value_length_at, _ = layout.entries[-1]
    expect("metadata-truncated", put(good, value_length_at, "I", 4000))


@pytest.mark.parametrize("bad", [b"X", b"-", b" ", b"\xc3"])
def test_rule_26_metadata_key_character(good, bad):
    _, entry, _, _ = Layout(good).entry("xa")
    expect("metadata-key", put(good, entry + 2, "c", bad), entry + 2)


@pytest.mark.parametrize("key", [b"", b"k" * 65])
def test_rule_26_metadata_key_length(good, key):
    # The entry "xa" rewritten with an empty or a 65-byte key, its structure intact (else rule 22).
    _, entry, value_length_at, _ = Layout(good).entry("xa")
    broken = good[:entry] + struct.pack("<H", len(key)) + key + good[value_length_at:]
    expect("metadata-key", reframe(broken), entry)


def test_rule_27_metadata_duplicate(good):
    _, entry, _, _ = Layout(good).entry("xb")
    err = expect("metadata-duplicate", put(good, entry + 2, "2s", b"xa"), entry)
    assert "'xa' appears twice" in str(err)


def test_rule_28_metadata_value_not_utf8(good):
    _, _, _, value = Layout(good).entry("xa")
    expect("metadata-value", put(good, value, "2s", b"\xff\xfe"), value)


def test_rule_28_metadata_value_too_long(small_layers):
    # A value really 65,537 bytes long (the writer refuses to write one): the entry is intact, so
    # rule 22 passes and rule 25 must catch it.
    data = build(small_layers, meta={"xa": "a" * 65536})
    _, _, value_length_at, value_at = Layout(data).entry("xa")
    data = data[:value_length_at] + struct.pack("<I", 65537) + data[value_length_at + 4:value_at] + b"a" \
        + data[value_at:]
    expect("metadata-value", reframe(data), value_length_at)


def test_rule_25_metadata_truncated_value_length(good):
    # A declared value length past the section is truncation (rule 22), whatever its size.
    _, _, value_length_at, _ = Layout(good).entry("xa")
    expect("metadata-truncated", put(good, value_length_at, "I", 65537), value_length_at)


def test_rule_29_metadata_required(good):
    _, entry, _, _ = Layout(good).entry("source")
    err = expect("metadata-required", put(good, entry + 2, "6s", b"sourcf"))
    assert "'source'" in str(err)


@pytest.mark.parametrize("value, message", [
    ("int\n0", r"expected 3 class labels \(one per output\), got 1"),
    ("double\n0\n1\n2", r"start with the line 'int', 'str' or 'float', got 'double'"),
    ("float\n0\n1\nnan", r"expected finite decimal float labels, got 'nan'"),
    ("float\n0\n1\n1e999", r"expected finite decimal float labels, got '1e999'"),
    ("float\n0\n1\n+2", r"expected finite decimal float labels, got '\+2'"),
    ("float\n0\n1.0\n1", r"'1' equals an earlier one"),
    ("int\n0\n1\nx", r"integer labels of at most 18 digits, got 'x'"),
    ("int\n0\n1\n007", r"integer labels of at most 18 digits, got '007'"),
    ("int\n0\n1\n1234567890123456789", r"at most 18 digits"),
    ("str\na\n\nb", r"label 1 is empty"),
    ("str\na\nb\na", r"'a' appears twice"),
])
def test_rule_30_metadata_classes(small_layers, value, message):
    broken, value_at = with_value(small_layers, "classes", "int\n0\n1\n2", value)
    err = expect("metadata-classes", broken, value_at)
    assert re.search(message, str(err)), str(err)


def test_rule_30_metadata_classes_are_what_classify_returns(small_layers, rng):
    x = rng.random((40, 6), dtype=np.float32)
    plain = load(build(small_layers))
    assert plain.classes is None
    ints = load(build(small_layers, meta={"classes": "int\n-3\n7\n100"}))
    assert ints.classes == (-3, 7, 100)
    np.testing.assert_array_equal(ints.classify(x), np.array([-3, 7, 100])[plain.classify(x)])
    strs = load(build(small_layers, meta={"classes": "str\ncat\ndog\nemu"}))
    assert strs.classes == ("cat", "dog", "emu")
    np.testing.assert_array_equal(strs.classify(x), np.array(["cat", "dog", "emu"])[plain.classify(x)])
    floats = load(build(small_layers, meta={"classes": "float\n0.0\n-2.5\n1e+20"}))
    assert floats.classes == (0.0, -2.5, 1e20)
    got = floats.classify(x)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, np.array([0.0, -2.5, 1e20])[plain.classify(x)])


@pytest.mark.parametrize("value", ["uint8 0", "uint8 0 256", "uint8 -1 255", "uint8 00 255", "uint8 0  255",
                                   "uint8 9 3", "float 0 nan", "float 0 inf", "float 1 0", "float 0,5 1",
                                   "int 0 255", "float 0x1p3 9", " float 0 1", "float 0 1 2"])
def test_rule_31_metadata_input_range(small_layers, value):
    broken, value_at = with_value(small_layers, "reference_input_range", "float 0 1", value)
    err = expect("metadata-input-range", broken, value_at)
    assert "expected reference_input_range to be 'uint8 MIN MAX'" in str(err) and repr(value)[1:-1] in str(err)


@pytest.mark.parametrize("value, expected", [("uint8 0 255", (0.0, 1.0)), ("uint8 10 200", (10 / 255, 200 / 255)),
                                             ("float -0.5 2.75", (-0.5, 2.75)), ("float 1e-05 3", (1e-05, 3.0)),
                                             (None, (0.0, 1.0))])
def test_rule_31_metadata_input_range_is_the_engines_input_range(small_layers, value, expected):
    meta = {} if value is None else {"reference_input_range": value}
    engine = load(build(small_layers, meta=meta))
    np.testing.assert_allclose(engine.input_range, expected, rtol=1e-6)


@pytest.mark.parametrize("value", ["3", "", "03", "-1", "x", "1.0", " 1", "1 ", "99999999999"])
def test_rule_32_metadata_reject_class(small_layers, value):
    broken, value_at = with_value(small_layers, "reject_class", "2", value)
    err = expect("metadata-reject-class", broken, value_at)
    expected = f"expected reject_class to be an output index 0..2 in decimal without leading zeros, got '{value}'"
    assert expected in str(err)


def test_rule_32_metadata_reject_class_needs_two_outputs(rng):
    one_output = [DenseLayer(rng.normal(size=(6, 1)), rng.normal(size=1), "sigmoid")]
    err = expect("metadata-reject-class", build(one_output, meta={"reject_class": "0"}))
    assert "only on a model with two or more outputs, got it on a model with 1 output" in str(err)


def test_rule_32_comes_after_rule_31(small_layers):
    err = expect("metadata-input-range", build(small_layers, meta={"reject_class": "7",
                                                                   "reference_input_range": "uint8 9 3"}))
    assert "reject_class" not in str(err)


@pytest.mark.parametrize("value, expected", [("0", 0), ("2", 2), (None, None)])
def test_rule_32_metadata_reject_class_is_the_engines(small_layers, rng, value, expected):
    meta = {} if value is None else {"reject_class": value}
    engine = load(build(small_layers, meta=meta))
    assert engine.reject_class == expected
    x = rng.random((20, 6), dtype=np.float32)  # it changes no output and no classify answer
    np.testing.assert_array_equal(engine.predict(x), load(build(small_layers)).predict(x))
    np.testing.assert_array_equal(engine.classify(x), engine.predict(x).argmax(1))


@pytest.mark.parametrize("value", ["probability", "Probabilities", "logit", "", " logits", "logits ",
                                   "log-probabilities"])
def test_rule_33_metadata_output_kind(small_layers, value):
    broken, value_at = with_value(small_layers, "output_kind", "logits", value)
    err = expect("metadata-output-kind", broken, value_at)
    assert ("expected output_kind to be one of probabilities, log_probabilities, logits, values, got "
            f"'{value}'") in str(err)


def test_rule_33_comes_after_rule_32(small_layers):
    err = expect("metadata-reject-class", build(small_layers, meta={"output_kind": "odds", "reject_class": "7"}))
    assert "output_kind" not in str(err)


@pytest.mark.parametrize("value", [*mnist_engine._core.OUTPUT_KINDS, None])
def test_rule_33_metadata_output_kind_is_the_engines_and_changes_no_output(small_layers, rng, value):
    engine = load(build(small_layers, meta={} if value is None else {"output_kind": value}))
    assert engine.output_kind == (value or "probabilities")  # absent: read off the softmax at the end
    assert engine.output_kind_stated == (value is not None)
    x = rng.random((20, 6), dtype=np.float32)
    np.testing.assert_array_equal(engine.predict(x), load(build(small_layers)).predict(x))


@pytest.mark.parametrize("value", ["pixel", "Features", "", "tabular", "features "])
def test_rule_34_metadata_input_kind(small_layers, value):
    broken, value_at = with_value(small_layers, "input_kind", "pixels", value)
    err = expect("metadata-input-kind", broken, value_at)
    assert f"expected input_kind to be pixels or features, got '{value}'" in str(err)


def test_rule_34_comes_after_rule_33(small_layers):
    err = expect("metadata-output-kind", build(small_layers, meta={"input_kind": "x", "output_kind": "odds"}))
    assert "input_kind" not in str(err)


def test_rule_34_a_model_of_features_takes_floats_only(small_layers, rng):
    features = load(build(small_layers, meta={"input_kind": "features"}))
    assert features.input_kind == "features" and load(build(small_layers)).input_kind == "pixels"
    x = rng.random((4, 6), dtype=np.float32)
    np.testing.assert_array_equal(features.predict(x), load(build(small_layers)).predict(x))
    with pytest.raises(ValueError, match="expected float32 features: this model takes tabular features"):
        features.predict(np.zeros((4, 6), np.uint8))
    # Its reference rows stated no range: features of any size are its data, not a scaling mistake.
    tiny, huge = x * 1e-4, x * 1e4
    with pytest.raises(mnist_engine.InputRangeError):
        load(build(small_layers)).predict(tiny, range_check="raise")
    for rows in (tiny, huge):
        features.predict(rows, range_check="raise")


def normalized(layers, mean="0.1307", std="0.3081", **kw) -> bytes:
    """A version-4 file of `layers` with input_mean / input_std (the writer picks version 4 for them)."""
    return build(layers, meta={k: v for k, v in (("input_mean", mean), ("input_std", std)) if v is not None}, **kw)


@pytest.mark.parametrize("mean, std, expected", [
    ("0.1307", None, "expected input_mean and input_std together, got only input_mean"),
    (None, "0.3081", "expected input_mean and input_std together, got only input_std"),
    ("0.1 0.2", "0.3 0.3", "expected input_mean to be 1 finite decimal number(s)"),
    ("nan", "0.3", "expected input_mean to be 1 finite"),
    ("0.1", "1e40", "expected input_std to be 1 finite"),
    ("0,1", "0.3", "got '0,1'"),
    ("0.1", "0", "expected every input_std > 0, got 0"),
    ("0.1", "-0.3", "expected every input_std > 0"),
    ("0.1 ", "0.3", "got '0.1 '"),
])
def test_rule_35_metadata_input_normalization(small_layers, mean, std, expected):
    err = expect("metadata-input-normalization", normalized(small_layers, mean, std))
    assert expected in str(err)


def test_rule_35_normalization_needs_version_4(small_layers):
    data = normalized(small_layers)
    assert struct.unpack_from("<I", data, 8)[0] == 4
    err = expect("metadata-input-normalization", put(data, 8, "I", 3))
    assert ("only in a version-4 file (an older reader would feed uint8 pixels unnormalized), got a "
            "version-3") in str(err)


def test_rule_35_comes_after_rule_34(small_layers):
    err = expect("metadata-input-kind", build(small_layers, meta={"input_kind": "x", "input_mean": "0.1"}))
    assert "input_mean" not in str(err)


def test_rule_35_one_value_per_channel_of_the_first_conv(rng):
    from mnist_engine.model_file import Conv2DLayer

    conv = Conv2DLayer(rng.normal(size=(3, 3, 3, 4)), rng.normal(size=4), (6, 6, 3))
    head = DenseLayer(rng.normal(size=(64, 2)), np.zeros(2))
    engine = load(normalized([conv, head], "0.485 0.456 0.406", "0.229 0.224 0.225"))
    assert engine.input_mean == pytest.approx((0.485, 0.456, 0.406)) and len(engine.input_std) == 3
    err = expect("metadata-input-normalization", normalized([conv, head], "0.4 0.5", "0.2 0.2"))
    assert "expected input_mean to be 1 or 3 finite decimal number(s)" in str(err)


@pytest.mark.parametrize("mean, std", [("0.1307", "0.3081"), ("0.485 0.456 0.406", "0.229 0.224 0.225")])
def test_rule_35_uint8_pixels_are_normalized_as_the_transform_does(rng, mean, std):
    """Bit for bit what ToTensor then Normalize give in float32 (mnist_engine.reference.normalize_pixels),
    fed to the same engine as floats; the file's input range is the normalized one."""
    from mnist_engine.model_file import Conv2DLayer
    from mnist_engine.reference import normalize_pixels

    conv = Conv2DLayer(rng.normal(size=(3, 3, 3, 4)) / 5, rng.normal(size=4), (6, 6, 3), activation="relu")
    layers = [conv, DenseLayer(rng.normal(size=(64, 10)) / 8, np.zeros(10), "softmax")]
    engine = load(normalized(layers, mean, std))
    pixels = rng.integers(0, 256, (70, 108), dtype=np.uint8)
    means, stds = [float(v) for v in mean.split()], [float(v) for v in std.split()]
    floats = normalize_pixels(pixels, 1 / 255, means, stds)
    np.testing.assert_array_equal(engine.predict(pixels), engine.predict(floats, range_check="raise"))
    lo, hi = engine.input_range
    assert lo == pytest.approx(min((0 - m) / s for m, s in zip(means, stds)), rel=1e-6)
    assert hi == pytest.approx(max((1 - m) / s for m, s in zip(means, stds)), rel=1e-6)
    # A plain file of the same layers: pixels are x / 255 there, not the same inputs.
    assert not np.array_equal(load(build(layers)).predict(pixels), engine.predict(pixels))


def test_rule_35_standardized_references_without_a_normalization_warn_on_uint8(small_layers):
    """A model checked on standardized floats (a negative least value) whose file states no
    input_mean / input_std: uint8 pixels would reach it as 0..1, which it never saw."""
    engine = load(build(small_layers, meta={"reference_input_range": "float -0.42 2.82"}))
    with pytest.raises(mnist_engine.InputRangeError, match="uint8 pixels reach this model as 0..1 .* standardized "
                                                           "input, as a DataLoader's Normalize"):
        engine.predict(np.zeros((1, 6), np.uint8), range_check="raise")
    with pytest.warns(mnist_engine.InputRangeWarning, match="Re-export it with input_mean and input_std"):
        engine.predict(np.zeros((1, 6), np.uint8))
    normalized_engine = load(normalized(small_layers))
    normalized_engine.predict(np.zeros((1, 6), np.uint8), range_check="raise")  # stated: no problem


def test_rule_36_trailing_bytes(good):
    # One entry fewer declared: the last entry's bytes belong to no section.
    layout = Layout(good)
    expect("trailing-bytes", put(good, 44, "I", layout.meta_count - 1), layout.entries[-1][1])


# Rules 36-38: trailing bytes and the reference section.

@pytest.mark.parametrize("field, value", [(0, 1.0), (0, -1e-6), (0, math.nan), (4, math.inf), (4, 0.01)])
def test_rule_37_tolerance(good, field, value):
    at = Layout(good).reference + field
    expect("tolerance", put(good, at, "f", value), at)


def test_rule_38_non_finite_reference_input(good):
    at = Layout(good).ref_inputs + 4
    expect("non-finite-reference", put(good, at, "f", math.nan), at)


def test_rule_38_non_finite_reference_output(good):
    at = Layout(good).ref_expected
    expect("non-finite-reference", put(good, at, "f", math.inf), at)


def test_rule_39_verification(good):
    layout = Layout(good)
    at = layout.ref_expected + 4 * 4  # row 1, output 1
    (value,) = struct.unpack_from("<f", good, at)
    broken = put(good, at, "f", value + 1e-3)
    err = expect("verification", broken, at)
    assert "reference row 1, output 1" in str(err)
    # verify=False is the documented way to load such a file anyway.
    assert load(broken, verify=False).output_width == 3


# The spec's order is the loader's order: each rule runs over the whole file before the next, so
# a file broken in two places gets the error of the earlier rule, wherever that fault sits.

def test_order_a_later_layers_width_beats_an_earlier_layers_chain(good):
    broken = put(put(good, 48, "I", 7, seal=False), 48 + 16 + 4, "I", 0)  # layer 0 chain, layer 1 width
    expect("layer-width", broken, 48 + 16 + 4)


def test_order_a_later_layers_dtype_beats_an_earlier_layers_chain(good):
    broken = put(put(good, 48, "I", 7, seal=False), 48 + 16 + 12, "I", 9)
    expect("dtype", broken, 48 + 16 + 12)


def test_order_duplicate_key_beats_an_earlier_entrys_bad_value(good):
    layout = Layout(good)
    _, _, _, xa_value = layout.entry("xa")
    _, xb_entry, _, _ = layout.entry("xb")
    broken = put(put(good, xa_value, "2s", b"\xff\xfe", seal=False), xb_entry + 2, "2s", b"xa")
    expect("metadata-duplicate", broken, xb_entry)


def test_order_a_later_keys_bad_character_beats_an_earlier_duplicate(good):
    layout = Layout(good)
    _, xa_entry, _, _ = layout.entry("xa")
    _, xb_entry, _, _ = layout.entry("xb")
    broken = put(put(good, xb_entry + 2, "2s", b"xa", seal=False), xa_entry + 3, "c", b"!")
    expect("metadata-key", broken, xa_entry + 3)


SPEC = Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md"


def _spec_table(after: str, before: str):
    section = SPEC.read_text().split(after)[1].split(before)[0]
    return re.findall(r"^\| (\d+) \| `([a-z_0-9]+)` \| (.*)$", section, re.M)


def test_spec_activation_and_op_tables_are_the_loaders():
    """The activation and op tables of docs/FORMAT.md list the codes, names, versions and parameters
    of vocabulary.h's tables (mnist_engine._core.ACTIVATIONS, ACTIVATION_PARAMETERS, OPS)."""
    activations = _spec_table("#### Activations", "### Weights")
    assert [(int(code), name) for code, name, _ in activations] == list(enumerate(mnist_engine._core.ACTIVATIONS))
    for _, name, rest in activations:
        since, parameters = [c.strip() for c in rest.split("|")[:2]]
        names, per_unit, version = mnist_engine._core.ACTIVATION_PARAMETERS[name]
        assert int(since) == version, name
        documented = [p.strip() for p in parameters.split(",") if p.strip()]
        assert documented == list(names) + (["alpha (output_width values)"] if per_unit else []), name
    ops = _spec_table("| code | op | values | computes |", "The dense kernel")
    assert [(int(code), name) for code, name, _ in ops] == list(enumerate(mnist_engine._core.OPS))


def test_spec_table_is_the_loaders_rule_table():
    """docs/FORMAT.md's validation table and the C++ rule table (model_file.h) list the same rules
    in the same order, and each rule has a test here named after it."""
    spec = SPEC.read_text().split("## Validation order and errors")[1]
    documented = [(int(n), name) for n, name in re.findall(r"^\| (\d+) \| `([a-z-]+)` \|", spec, re.M)]
    assert documented == list(mnist_engine._core.FORMAT_RULES)
    tested = {name for name in globals() if name.startswith("test_rule_")}
    for number, rule in documented:
        prefix = f"test_rule_{number:02d}_{rule.replace('-', '_')}"
        assert any(t.startswith(prefix) for t in tested), f"no test breaks rule {number} ({rule})"


def test_verification_within_tolerance_passes(good):
    at = Layout(good).ref_expected
    (value,) = struct.unpack_from("<f", good, at)
    nudged = put(good, at, "f", value + 5e-6)  # inside atol 1e-5
    assert load(nudged).verification_margin <= 0


def test_every_truncation_is_rejected(good):
    for n in range(len(good)):
        with pytest.raises(FormatError) as info:
            load(good[:n])
        assert info.value.rule in ("too-short", "file-size"), (n, str(info.value))


def test_every_single_bit_flip_is_rejected(good):
    for bit in range(len(good) * 8):
        damaged = bytearray(good)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FormatError):
            load(bytes(damaged))


def test_writer_refuses_what_the_loader_would_refuse(small_layers):
    from mnist_engine.model_file import DenseLayer

    with pytest.raises(ValueError, match="finite"):
        DenseLayer(np.full((2, 2), np.nan), np.zeros(2))
    from mnist_engine.model_file import LayerNormLayer

    with pytest.raises(ValueError, match="activation"):
        DenseLayer(np.zeros((2, 2)), np.zeros(2), "swish")  # Keras's alias: the format says silu
    with pytest.raises(ValueError, match=r"'elu' takes 1 parameter\(s\) \(alpha\), got 0"):
        DenseLayer(np.zeros((2, 2)), np.zeros(2), "elu")
    with pytest.raises(ValueError, match=r"'prelu' takes 2 parameter\(s\) \(one slope per unit\), got 1"):
        DenseLayer(np.zeros((2, 2)), np.zeros(2), "prelu", [0.1])
    with pytest.raises(ValueError, match="max_value must be >= 0"):
        DenseLayer(np.zeros((2, 2)), np.zeros(2), "relu_general", [0, 0, -1])
    with pytest.raises(ValueError, match="finite parameters"):
        DenseLayer(np.zeros((2, 2)), np.zeros(2), "leaky_relu", [np.nan])
    with pytest.raises(ValueError, match="epsilon > 0"):
        LayerNormLayer(np.ones(2), np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="metadata keys"):
        build(small_layers, meta={"Bad Key": "x"})
    with pytest.raises(ValueError, match="atol"):
        build(small_layers, atol=1.0)


def test_read_layers_returns_the_written_weights(small_layers, good, tmp_path):
    from mnist_engine.model_file import read_layers

    (tmp_path / "m.mnw").write_bytes(good)
    layers = read_layers(tmp_path / "m.mnw")
    for got, want in zip(layers, small_layers):
        np.testing.assert_array_equal(got.kernel, want.kernel)
        np.testing.assert_array_equal(got.bias, want.bias)
        assert got.activation == want.activation
    (tmp_path / "bad.mnw").write_bytes(good[:-1])
    with pytest.raises(FormatError):
        read_layers(tmp_path / "bad.mnw")


def test_unaligned_buffers_load_identically(good, rng):
    """The loader copies into its own aligned buffers: a file starting at an odd address loads
    and predicts exactly like an aligned one."""
    x = rng.random((5, 6), dtype=np.float32)
    want = load(good).predict(x)
    for shift in (1, 2, 3, 5):
        padded = bytearray(shift) + good
        np.testing.assert_array_equal(Engine.from_bytes(memoryview(padded)[shift:]).predict(x), want)


def test_file_changed_on_disk_after_load_does_not_affect_the_engine(good, tmp_path, rng):
    """The file is read whole into memory, never mapped: truncating or rewriting it after a load
    (another process saving a new model, say) cannot fault or alter a loaded engine."""
    path = tmp_path / "m.mnw"
    path.write_bytes(good)
    engine = mnist_engine.load(path)
    x = rng.random((3, 6), dtype=np.float32)
    want = engine.predict(x)
    path.write_bytes(b"")
    np.testing.assert_array_equal(engine.predict(x), want)
