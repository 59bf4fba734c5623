"""The spatial layers of format version 3 (conv2d, max/avg pooling, global pooling) in the engine,
against the float64 numpy reference (mnist_engine.reference_conv, itself held to Keras and ONNX by
tests/test_reference_conv.py): every fp32 kernel, uint8 and float input, several threads; the
int8 convolution against its scalar reference, bit for bit; bf16 runs conv layers in fp32."""
from __future__ import annotations

import os

import numpy as np
import pytest

import mnist_engine
from helpers import build
from mnist_engine.model_file import Conv2DLayer, DenseLayer, PoolLayer, sample_pixel_inputs
from mnist_engine.reference import forward

GRID = np.random.default_rng(2023)


def random_cnn(rng, image, k, stride, pads, pool, filters):
    """conv (relu) -> pool -> conv -> global pool or flatten -> dense softmax, on `image` (H, W, C)."""
    conv = Conv2DLayer(rng.normal(size=(*k, image[2], filters)) / np.sqrt(k[0] * k[1] * image[2]),
                       rng.normal(size=filters) * 0.1, image, stride, pads, "relu")
    layers = [conv]
    shape = conv.output_shape
    kind, window = pool
    if min(shape[:2]) >= window:
        p = PoolLayer(kind, shape, (window, window), (window, window))
        layers.append(p)
        shape = p.output_shape
    second = Conv2DLayer(rng.normal(size=(1, 1, shape[2], 6)) / np.sqrt(shape[2]), rng.normal(size=6) * 0.1, shape)
    layers.append(second)
    shape = second.output_shape
    if kind == "avg_pool":
        layers.append(PoolLayer("global_avg_pool", shape))
        width = 6
    else:
        width = int(np.prod(shape))
    layers.append(DenseLayer(rng.normal(size=(width, 10)) / np.sqrt(width), rng.normal(size=10) * 0.1, "softmax"))
    return layers


def grid(count):
    cases = []
    for _ in range(count):
        k = (int(GRID.integers(1, 6)), int(GRID.integers(1, 6)))
        stride = (int(GRID.integers(1, 3)), int(GRID.integers(1, 3)))
        pads = tuple(int(GRID.integers(0, k[i // 2])) for i in range(4))
        image = (int(GRID.integers(k[0] + 2, 16)), int(GRID.integers(k[1] + 2, 16)), int(GRID.integers(1, 4)))
        pool = (str(GRID.choice(["max_pool", "avg_pool"])), int(GRID.integers(2, 4)))
        cases.append((image, k, stride, pads, pool, int(GRID.integers(1, 9))))
    return cases


CASES = grid(12)


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels("fp32"))
@pytest.mark.parametrize("image, k, stride, pads, pool, filters", CASES)
def test_spatial_models_match_the_numpy_reference(rng, kernel, image, k, stride, pads, pool, filters):
    layers = random_cnn(rng, image, k, stride, pads, pool, filters)
    engine = mnist_engine.Engine.from_bytes(build(layers), kernel=kernel)
    width = int(np.prod(image))
    pixels = np.where(rng.random((70, width)) < 0.7, 0, rng.integers(1, 256, (70, width))).astype(np.uint8)
    want = forward(layers, pixels / 255.0)
    np.testing.assert_allclose(engine.predict(pixels), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(engine.predict(pixels.astype(np.float32) / 255), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(engine.predict(pixels, threads=1), engine.predict(pixels, threads=2))


def test_pools_with_padding_counted_or_not_and_nan(rng):
    image = (7, 6, 3)
    for count_padding in (False, True):
        layers = [PoolLayer("avg_pool", image, (3, 2), (2, 2), (1, 1, 1, 0), count_padding),
                  PoolLayer("global_max_pool", (4, 3, 3))]
        engine = mnist_engine.Engine.from_bytes(build(layers, input_scale=1.0))
        x = rng.normal(size=(9, 126)).astype(np.float32)
        np.testing.assert_allclose(engine.predict(x), forward(layers, x), rtol=1e-6, atol=1e-6)
    x[0, 5] = np.nan  # a NaN pixel reaches every output of its channel through the max
    got = engine.predict(x)
    assert np.isnan(got[0]).sum() >= 1 and np.isfinite(got[1:]).all()


@pytest.mark.parametrize("precision", [p for p in mnist_engine.available_precisions() if p != "fp32"])
def test_reduced_precisions_stay_near_fp32_on_spatial_models(rng, precision):
    layers = random_cnn(rng, (12, 12, 1), (3, 3), (1, 1), (1, 1, 1, 1), ("max_pool", 2), 8)
    data = build(layers)
    exact = mnist_engine.Engine.from_bytes(data).predict
    reduced = mnist_engine.Engine.from_bytes(data, precision=precision)
    pixels = np.where(rng.random((200, 144)) < 0.7, 0, rng.integers(1, 256, (200, 144))).astype(np.uint8)
    # bf16 quantizes the dense layer, int8 the conv layers too: the outputs move by the step, no more.
    np.testing.assert_allclose(reduced.predict(pixels), exact(pixels), atol=0.03)
    assert (reduced.predict(pixels).argmax(1) == exact(pixels).argmax(1)).mean() >= 0.97


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels("fp32"))
@pytest.mark.parametrize("strides, pads", [((2, 2), (0, 0, 0, 0)), ((1, 1), (0, 0, 0, 0)), ((2, 2), (0, 1, 0, 1))])
def test_two_by_two_max_pools_match_the_reference_and_keep_nan(rng, kernel, strides, pads):
    """The 2x2 max pool has its own loop (no padding) beside the general one (padding): both equal
    the reference, and a NaN pixel reaches exactly the outputs whose windows hold it."""
    image = (7, 6, 17)
    pool = PoolLayer("max_pool", image, (2, 2), strides, pads)
    engine = mnist_engine.Engine.from_bytes(build([pool], input_scale=1.0), kernel=kernel)
    x = rng.normal(size=(4, 714)).astype(np.float32)
    np.testing.assert_array_equal(engine.predict(x, range_check="ignore"), forward([pool], x).astype(np.float32))
    x[0, (2 * 6 + 3) * 17 + 5] = np.nan  # pixel (2, 3), channel 5
    got = engine.predict(x, range_check="ignore")[0].reshape(pool.output_shape)
    oh, ow, _ = pool.output_shape
    hit = np.array([[oy * strides[0] <= 2 < oy * strides[0] + 2 and ox * strides[1] <= 3 < ox * strides[1] + 2
                     for ox in range(ow)] for oy in range(oh)])
    assert np.isnan(got[hit][:, 5]).all() and not np.isnan(got[~hit]).any() and not np.isnan(np.delete(got, 5, 2)).any()


def test_a_spatial_first_layer_still_checks_the_input_range(rng):
    layers = random_cnn(rng, (8, 8, 1), (3, 3), (1, 1), (0, 0, 0, 0), ("max_pool", 2), 4)
    engine = mnist_engine.Engine.from_bytes(build(layers))
    with pytest.raises(mnist_engine.InputRangeError, match="far outside 0..1"):
        engine.predict(np.full((2, 64), 200.0, np.float32), range_check="raise")


FMA_KERNELS = [k for k in mnist_engine.available_kernels("fp32") if k != "scalar"]
# Wide and narrow layers: output widths that leave every tile size, filter counts that leave partial
# panels, and enough channels for window rows longer than one 64-bit zero mask.
WIDE_CASES = [((30, 29, 1), (3, 3), (1, 1), 32), ((13, 13, 32), (3, 3), (1, 1), 64), ((9, 17, 48), (2, 3), (2, 1), 70),
              ((7, 7, 5), (5, 5), (1, 2), 6), ((15, 11, 20), (1, 1), (1, 1), 17), ((6, 40, 3), (3, 7), (1, 3), 40)]


def wide_conv_model(rng, image, k, stride, filters):
    conv = Conv2DLayer(rng.normal(size=(*k, image[2], filters)) / np.sqrt(k[0] * k[1] * image[2]),
                       rng.normal(size=filters) * 0.1, image, stride, (min(1, k[0] - 1), 0, 1 % k[1], 1 % k[1]), "relu")
    width = int(np.prod(conv.output_shape))
    return [conv, DenseLayer(rng.normal(size=(width, 10)) / np.sqrt(width), np.zeros(10), "linear")]


def sparse_images(rng, count, width):
    """Inputs like a ReLU's: about 60% exact zeros, in runs and scattered."""
    x = rng.random((count, width)).astype(np.float32)
    x[rng.random((count, width)) < 0.6] = 0
    x[:, : width // 3] = 0
    return x


@pytest.mark.skipif(not FMA_KERNELS, reason="no FMA kernel on this CPU")
@pytest.mark.parametrize("image, k, stride, filters", WIDE_CASES)
def test_fma_conv_kernels_agree_to_the_bit_however_they_skip_and_split(rng, image, k, stride, filters):
    """Every direct conv kernel sums each output's window in (ky, kx, c) order with one FMA per
    term, by window rows where rows are long (the 32- and 48-channel cases; kernels.h's
    conv_sums_rows_apart): the same bits on every ISA, with zero skipping off, and for a single
    image whose rows are split over two threads; within 1e-5 of the float64 reference."""
    layers = wide_conv_model(rng, image, k, stride, filters)
    data = build(layers)
    x = sparse_images(rng, 5, int(np.prod(image)))
    first = mnist_engine.Engine.from_bytes(data, kernel=FMA_KERNELS[0])
    want = first.predict(x, threads=1)
    np.testing.assert_allclose(want, forward(layers, x), rtol=1e-5, atol=1e-5)
    for kernel in FMA_KERNELS:
        for skip in (True, False):
            e = mnist_engine.Engine.from_bytes(data, kernel=kernel, skip_zeros=skip)
            np.testing.assert_array_equal(e.predict(x, threads=1), want, err_msg=f"{kernel} skip_zeros={skip}")
            alone = np.concatenate([e.predict(x[i:i + 1], threads=2) for i in range(len(x))])
            np.testing.assert_array_equal(alone, want, err_msg=f"{kernel}, one image on two threads")


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels("fp32"))
def test_a_nan_input_reaches_exactly_the_outputs_whose_windows_hold_it(rng, kernel):
    """Skipping zeros must never skip a NaN: it compares unequal to zero. Winograd (every FMA
    kernel here) mixes a 4x4 patch into each 2x2 block of outputs, yet an output's sum reads only
    its own window's pixels, so a NaN must reach the same outputs."""
    image = (10, 10, 16)
    conv = Conv2DLayer(rng.normal(size=(3, 3, 16, 8)) / 12, rng.normal(size=8), image, (1, 1), (0, 0, 0, 0), "linear")
    engine = mnist_engine.Engine.from_bytes(build([conv]), kernel=kernel)
    assert ("(Winograd)" in repr(engine)) == (kernel != "scalar")
    x = np.zeros((1, 1600), np.float32)
    x[0, (4 * 10 + 5) * 16 + 7] = np.nan  # pixel (4, 5), channel 7
    got = engine.predict(x, range_check="ignore").reshape(8, 8, 8)
    hit = np.zeros((8, 8), bool)
    hit[2:5, 3:6] = True  # the output pixels whose 3x3 window covers (4, 5)
    assert np.isnan(got[hit]).all() and not np.isnan(got[~hit]).any()


# Winograd F(2x2, 3x3) (conv-winograd.h) runs the 3x3, stride-1 layers of 8 to 128 channels on every
# FMA kernel. (image, pads, filters, pool)
WINOGRAD_CASES = [((13, 13, 32), (0, 0, 0, 0), 64, 2),  # the keras-io convnet's second layer, pool fused
                  ((13, 13, 32), (0, 0, 0, 0), 64, 0),  # unpooled: the last tiles are one row, one column
                  ((12, 9, 20), (1, 1, 1, 1), 70, 0),  # 'same'; channels past whole vectors; a partial panel
                  ((10, 14, 8), (1, 0, 0, 1), 24, 2),  # the fewest channels; an odd map pooled
                  ((26, 26, 32), (0, 0, 0, 0), 64, 2)]  # PyTorch's examples/mnist second layer


def winograd_model(rng, image, pads, filters, pool):
    conv = Conv2DLayer(rng.normal(size=(3, 3, image[2], filters)) / np.sqrt(9 * image[2]),
                       rng.normal(size=filters) * 0.1, image, (1, 1), pads, "relu")
    return [conv, PoolLayer("max_pool", conv.output_shape, (2, 2), (2, 2))] if pool else [conv]


@pytest.mark.skipif(not FMA_KERNELS, reason="no FMA kernel on this CPU")
@pytest.mark.parametrize("image, pads, filters, pool", WINOGRAD_CASES)
def test_winograd_convs_match_the_reference_and_agree_to_the_bit(rng, image, pads, filters, pool):
    """The conv map itself (pooled or not) against the float64 reference, on ReLU-like inputs and
    on inputs of either sign; every FMA kernel gives the same bits (each tile's transforms and sums
    run in one order, whatever the vector width and the tiles per register block), and so does one
    image whose rows are split over two threads, at tile boundaries."""
    layers = winograd_model(rng, image, pads, filters, pool)
    data = build(layers)
    width = int(np.prod(image))
    x = np.concatenate([sparse_images(rng, 4, width), rng.normal(size=(3, width)).astype(np.float32)])
    want = forward(layers, x)
    first = None
    for kernel in FMA_KERNELS:
        e = mnist_engine.Engine.from_bytes(data, kernel=kernel)
        assert "conv2d relu (Winograd)" in repr(e), kernel
        got = e.predict(x, threads=1, range_check="ignore")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6, err_msg=kernel)
        first = got if first is None else first
        np.testing.assert_array_equal(got, first, err_msg=kernel)
        alone = np.concatenate([e.predict(x[i:i + 1], threads=2, range_check="ignore") for i in range(len(x))])
        np.testing.assert_array_equal(alone, got, err_msg=f"{kernel}, one image on two threads")
    direct = mnist_engine.Engine.from_bytes(data, kernel="scalar")
    assert "Winograd" not in repr(direct)
    np.testing.assert_allclose(first, direct.predict(x, range_check="ignore"), rtol=1e-5, atol=2e-6)


def test_repr_says_winograd_only_for_the_layers_that_run_it():
    """Winograd is fp32's: an int8 engine whose conv layers run in int8 (int8-scalar's always do)
    runs them direct, and its repr said "(Winograd)" all the same, from the fp32 packing it keeps."""
    int8 = mnist_engine.load("convnet", precision="int8", kernel="int8-scalar")
    assert "conv2d relu -> 1600" in repr(int8) and "Winograd" not in repr(int8)
    if FMA_KERNELS:
        assert "7744 conv2d relu (Winograd)" in repr(mnist_engine.load("convnet", kernel=FMA_KERNELS[0]))


def test_a_file_whose_check_winograd_fails_runs_its_conv_direct(rng):
    """Raw 0..255 pixels into unnormalized weights: each output is a small difference of sums in the
    thousands, and Winograd's extra rounding there (about one unit in the last place of the terms)
    exceeds the file's tolerance, which the direct sum meets. The engine then loads with the direct
    kernel rather than fail or run outside the file's promise."""
    image = (10, 10, 16)
    conv = Conv2DLayer(rng.normal(size=(3, 3, 16, 8)), rng.normal(size=8), image, (1, 1), (0, 0, 0, 0), "linear")
    data = build([conv], input_scale=1.0)
    x = sample_pixel_inputs(2, int(np.prod(image)), 1.0, seed=0)
    for kernel in FMA_KERNELS:
        engine = mnist_engine.Engine.from_bytes(data, kernel=kernel)
        assert "Winograd" not in repr(engine), kernel
        np.testing.assert_allclose(engine.predict(x), forward([conv], x), rtol=1e-4, atol=1e-4)
    # The same layer, normalized as training leaves it, passes its check with Winograd.
    tamed = Conv2DLayer(conv.kernel / 12, conv.bias, image, (1, 1), (0, 0, 0, 0), "linear")
    for kernel in FMA_KERNELS:
        assert "(Winograd)" in repr(mnist_engine.Engine.from_bytes(build([tamed]), kernel=kernel)), kernel


REDUCED = [p for p in ("int8", "bf16") if p in mnist_engine.available_precisions()]


def assert_matches_reference(got, want, precision, depth, err_msg):
    """int8 sums are integers: the reference's bits. bf16: the same bf16 products (exact in float32),
    summed in the tile instruction's order: within float32's rounding of the window's sum."""
    if precision == "int8":
        np.testing.assert_array_equal(got, want, err_msg=err_msg)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * np.sqrt(depth), err_msg=err_msg)


@pytest.mark.skipif(not REDUCED, reason="this CPU runs neither int8 nor bf16 kernels")
@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("image, k, stride, filters", WIDE_CASES)
def test_reduced_precision_conv_matches_its_scalar_reference(rng, precision, image, k, stride, filters):
    """Every int8 or bf16 engine whose conv layers run in its precision (conv_kernel a kernel of
    it) matches its scalar reference (int8 bit for bit, bf16 within float32 rounding), skipping
    zero units or not, one image split over two threads or not. Inputs with negative values too
    (int8: a zero point above 0, which the padding must hold)."""
    layers = wide_conv_model(rng, image, k, stride, filters)[:1]  # the conv alone: its outputs are the model's
    data = build(layers)
    x = sparse_images(rng, 5, int(np.prod(image)))
    x[1] -= 0.3
    reference = mnist_engine.Engine.from_bytes(data, kernel=f"{precision}-scalar")
    assert reference.conv_kernel == f"{precision}-scalar"
    want = reference.predict(x, threads=1, range_check="ignore")
    np.testing.assert_allclose(want, forward(layers, x), atol=0.05 * np.abs(want).max())
    checked = 0
    for kernel in mnist_engine.available_kernels(precision):
        for skip in (True, False):
            e = mnist_engine.Engine.from_bytes(data, kernel=kernel, skip_zeros=skip)
            if mnist_engine._core.kernel_precision(e.conv_kernel) != precision:
                continue  # no convolution of this precision on this CPU for it: its conv runs in fp32
            checked += 1
            depth = k[0] * k[1] * image[2]
            assert_matches_reference(e.predict(x, threads=1, range_check="ignore"), want, precision, depth, kernel)
            alone = np.concatenate([e.predict(x[i:i + 1], threads=2, range_check="ignore") for i in range(len(x))])
            assert_matches_reference(alone, want, precision, depth, f"{kernel}, one image on two threads")
    print(f"{checked // 2} {precision} kernels ran their conv layers in {precision}, matching the reference")


# Conv + max pool pairs: the 2x2 pool that a tile kernel (AMX) runs inside the conv, on even
# and odd maps (the last row and column dropped), a strided, padded conv without activation over
# two panels of filters; and a pool it must leave to its own layer.
POOLED_CASES = [((28, 28, 1), (3, 3), (1, 1), (0, 0, 0, 0), 32, "relu", 2),  # keras-io conv1: a one-row window
                ((13, 13, 32), (3, 3), (1, 1), (0, 0, 0, 0), 64, "relu", 2),  # its conv2
                ((26, 25, 32), (3, 3), (1, 1), (0, 0, 0, 0), 64, "relu", 2),  # 11 M multiply-adds: AMX splits it too
                ((17, 12, 3), (5, 5), (2, 1), (2, 2, 2, 2), 40, "linear", 2),
                ((14, 14, 8), (3, 3), (1, 1), (1, 1, 1, 1), 16, "relu", 3)]


def conv_pool_model(rng, image, k, stride, pads, filters, activation, pool, pool_activation="linear"):
    conv = Conv2DLayer(rng.normal(size=(*k, image[2], filters)) / np.sqrt(k[0] * k[1] * image[2]),
                       rng.normal(size=filters) * 0.1, image, stride, pads, activation)
    pooled = PoolLayer("max_pool", conv.output_shape, (pool, pool), (pool, pool), activation=pool_activation)
    width = int(np.prod(pooled.output_shape))
    return [conv, pooled, DenseLayer(rng.normal(size=(width, 10)) / np.sqrt(width), np.zeros(10), "linear")]


@pytest.mark.skipif(not FMA_KERNELS, reason="no FMA kernel on this CPU")
@pytest.mark.parametrize("image, k, stride, pads, filters, activation, pool", POOLED_CASES)
def test_a_max_pool_run_inside_the_fp32_conv_gives_the_bits_of_the_layers_apart(rng, image, k, stride, pads, filters,
                                                                                 activation, pool):
    """Every FMA kernel runs a following 2x2 max pool inside the conv (the pooled map's outputs only,
    ReLU then the pool's compare and NaN rule in its order). Held to the same kernel running the
    layers apart, bit for bit: a ReLU on the pool (the identity after a ReLU conv) keeps them apart.
    NaN inputs reach the same outputs either way."""
    seed = int(rng.integers(1 << 30))
    layers = conv_pool_model(np.random.default_rng(seed), image, k, stride, pads, filters, activation, pool)
    together = build(layers)
    apart = build(conv_pool_model(np.random.default_rng(seed), image, k, stride, pads, filters, activation, pool,
                                  pool_activation="relu"))
    x = sparse_images(rng, 6, int(np.prod(image)))
    x[1] -= 0.3
    x[2, int(np.prod(image)) // 2] = np.nan
    for kernel in FMA_KERNELS:
        fused = mnist_engine.Engine.from_bytes(together, kernel=kernel)
        got = fused.predict(x, threads=1, range_check="ignore")
        assert ("inside the conv" in repr(fused)) == (pool == 2)
        if activation == "relu":
            unfused = mnist_engine.Engine.from_bytes(apart, kernel=kernel)
            assert "inside the conv" not in repr(unfused)
            np.testing.assert_array_equal(got, unfused.predict(x, threads=1, range_check="ignore"), err_msg=kernel)
        ok = np.isfinite(got).all(axis=1)
        assert not ok[2] and ok[[0, 1, 3, 4, 5]].all()
        np.testing.assert_allclose(got[ok], forward(layers, x[ok]), rtol=1e-4, atol=1e-5)
        alone = np.concatenate([fused.predict(x[i:i + 1], threads=2, range_check="ignore") for i in range(len(x))])
        np.testing.assert_array_equal(alone, got, err_msg=f"{kernel}, one image on two threads")


@pytest.mark.skipif(not REDUCED, reason="this CPU runs neither int8 nor bf16 kernels")
@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("image, k, stride, pads, filters, activation, pool", POOLED_CASES)
def test_a_max_pool_run_inside_a_reduced_precision_conv_matches_the_layers_apart(rng, precision, image, k, stride,
                                                                                 pads, filters, activation, pool):
    """The fused pool takes the epilogue of the largest of four sums (int32, or float32 compared as
    the pooling kernels do); the epilogue is monotone, so that is the largest of the four outputs
    the scalar reference pools: int8 bit for bit (the AMX tile kernel and the AVX-512 VNNI direct
    one), bf16 within float32 rounding of the sums.

    An engine with no convolution of its precision on this CPU (bf16 without AMX, int8-avx2 where
    nothing lends it one) runs the conv and its pool on the best fp32 kernel and only the dense head
    in its precision: it is held to exactly that, the fp32 kernel's conv + pool feeding the
    precision's scalar reference of the head."""
    layers = conv_pool_model(rng, image, k, stride, pads, filters, activation, pool)
    data = build(layers)
    x = sparse_images(rng, 5, int(np.prod(image)))
    x[1] -= 0.3
    reference = mnist_engine.Engine.from_bytes(data, kernel=f"{precision}-scalar")
    want = reference.predict(x, threads=1, range_check="ignore")
    head = mnist_engine.Engine.from_bytes(build(layers[2:]), kernel=f"{precision}-scalar")
    tiles, depth = f"{precision}-amx", k[0] * k[1] * image[2]
    fused, pooling_convs = [], []
    for kernel in ["", *mnist_engine.available_kernels(precision)]:  # "": the automatic choice
        e = mnist_engine.Engine.from_bytes(data, kernel=kernel, precision=precision)
        if "inside the conv" in repr(e):
            fused.append(kernel)
        # The conv kernels that run a 2x2 pool inside: the tile kernel and the AVX-512 VNNI direct
        # one, whoever chose them (int8-avx2 has no conv of its own), and the fp32 FMA kernels that
        # stand in for a missing one.
        if e.conv_kernel in (tiles, "int8-avx512vnni", *FMA_KERNELS):
            pooling_convs.append(kernel)
        if mnist_engine._core.kernel_precision(e.conv_kernel) == precision:
            expected, err_depth = want, depth
        else:
            assert e.conv_kernel == mnist_engine.default_kernel(), f"{kernel}: conv on {e.conv_kernel}"
            features = mnist_engine.Engine.from_bytes(build(layers[:2]), kernel=e.conv_kernel).predict(
                x, threads=1, range_check="ignore")
            expected, err_depth = head.predict(features, threads=1, range_check="ignore"), layers[2].widths[0]
        assert_matches_reference(e.predict(x, threads=1, range_check="ignore"), expected, precision, err_depth,
                                 f"{kernel} (conv on {e.conv_kernel})")
        alone = np.concatenate([e.predict(x[i:i + 1], threads=2, range_check="ignore") for i in range(len(x))])
        assert_matches_reference(alone, expected, precision, err_depth, f"{kernel}, one image on two threads")
    assert fused == (pooling_convs if pool == 2 else [])
    assert (tiles in fused) == (tiles in mnist_engine.available_kernels(precision) and pool == 2)
    print(f"pool inside the {precision} conv for: {fused or 'none'}")


def test_conv_kernel_names_what_runs_the_conv_layers(rng):
    layers = random_cnn(rng, (12, 12, 1), (3, 3), (1, 1), (1, 1, 1, 1), ("max_pool", 2), 8)
    data = build(layers)
    assert mnist_engine.Engine.from_bytes(data).conv_kernel == mnist_engine.default_kernel()
    assert mnist_engine.Engine.from_bytes(data, kernel="int8-scalar").conv_kernel == "int8-scalar"
    assert mnist_engine.load(mnist_engine.default_model_path()).conv_kernel == ""
    # bf16 convolves on AMX tiles only (a vdpbf16ps kernel was slower than fp32): elsewhere on the best fp32 kernel.
    amx = "bf16-amx" in mnist_engine.available_kernels("bf16")
    for kernel in mnist_engine.available_kernels("bf16"):
        want = kernel if kernel == "bf16-scalar" else "bf16-amx" if amx else mnist_engine.default_kernel()
        assert mnist_engine.Engine.from_bytes(data, kernel=kernel).conv_kernel == want


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set from /proc (Linux)")
@pytest.mark.parametrize("precision", ["fp32", *REDUCED])
def test_a_conv_of_few_filters_costs_no_more_than_three_times_its_file(rng, precision):
    """Kernels that run panels of 16 or 32 filters pad the last one: a conv of 1 filter over 65536
    channels (a 768 KB file) took 32 times its weights, and at the format's size limit such a file
    would take ~32 GiB. Such a layer runs on the scalar reference, packed as it is: 20 engines of
    it grow the process by under 3 times the file each (1.2 here; 11 before)."""
    conv = Conv2DLayer(rng.normal(size=(1, 1, 65536, 1)) / 256, np.zeros(1), (1, 1, 65536))
    data = build([conv])

    def resident() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = resident()
    engines = [mnist_engine.Engine.from_bytes(data, precision=precision) for _ in range(20)]
    grown = (resident() - before) / len(engines)
    assert grown < 3 * len(data), f"{grown / len(data):.1f} times the file per engine"
    assert engines[0].conv_kernel == "scalar"
    x = rng.random((3, 65536), dtype=np.float32)
    np.testing.assert_allclose(engines[0].predict(x, range_check="ignore"), forward([conv], x), rtol=1e-5,
                               atol=1e-5)
