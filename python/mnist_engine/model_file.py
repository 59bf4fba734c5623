"""The writer of the ``.mnw`` format (docs/FORMAT.md). The loader is the C++ core; keeping the two
independent means each checks the other against the spec."""
from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .reference import forward, scale_pixels

MAGIC = b"\x89MNW\r\n\x1a\n"
BYTE_ORDER_MARK = 0x0A0B0C0D
HEADER = struct.Struct("<8sIIQIIdII")  # magic, version, byte order, file size, layers, width, scale, refs, meta
LAYER_ENTRY = {1: struct.Struct("<IIII"),  # input width, output width, activation, dtype
               2: struct.Struct("<IIIII"),  # ... and the op
               # ... and the geometry: input height, width, channels, window h, w, strides h, w,
               # pads top, bottom, left, right, filters, flags
               3: struct.Struct("<IIIII" + "I" * 13)}
LAYER_ENTRY[4] = LAYER_ENTRY[3]  # version 4 adds input normalization (input_mean / input_std), no layer field
NORMALIZATION_VERSION = 4
SPATIAL_OPS = ("conv2d", "max_pool", "avg_pool", "global_avg_pool", "global_max_pool")
DTYPE_F32 = 1
# The vocabulary and the limits are the C++ loader's own tables (model_file.h), read from the
# extension, so writer and loader cannot drift apart.
ACTIVATION_CODES = {name: code for code, name in enumerate(_core.ACTIVATIONS)}
ACTIVATION_PARAMETERS = _core.ACTIVATION_PARAMETERS  # name -> (scalar names, per unit, since version)
OP_CODES = {name: code for code, name in enumerate(_core.OPS)}
_FORMAT = _core.FORMAT
VERSION = _FORMAT["version"]  # the newest; encode_model writes the oldest that holds the model
REQUIRED_METADATA = tuple(_FORMAT["required_metadata"])
MAX_LAYERS, MAX_WIDTH = _FORMAT["max_layers"], _FORMAT["max_width"]
MAX_REFERENCES, MAX_METADATA = _FORMAT["max_references"], _FORMAT["max_metadata"]
MAX_KEY_LENGTH, MAX_VALUE_LENGTH = _FORMAT["max_key_length"], _FORMAT["max_value_length"]
MAX_TOLERANCE, MAX_PARAMETERS = _FORMAT["max_tolerance"], _FORMAT["max_parameters"]
MAX_MULTIPLY_ADDS = _FORMAT["max_multiply_adds"]
DEFAULT_ATOL, DEFAULT_RTOL = 1e-5, 1e-4

PathLike = Union[str, "os.PathLike[str]"]


def _activation_parameters(activation: str, parameters, units: int) -> np.ndarray:
    """The activation's parameters as the format stores them, checked against its table entry."""
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"expected an activation in {sorted(ACTIVATION_CODES)}, got {activation!r}")
    names, per_unit, _ = ACTIVATION_PARAMETERS[activation]
    values = np.ascontiguousarray(np.asarray(parameters, dtype=np.float32).reshape(-1))
    want = len(names) + (units if per_unit else 0)
    if values.size != want:
        what = ", ".join(names) if names else ("one slope per unit" if per_unit else "none")
        raise ValueError(f"activation {activation!r} takes {want} parameter(s) ({what}), got {values.size}")
    finite = np.isfinite(values)
    if activation == "relu_general":
        finite[2] = finite[2] or values[2] == np.inf  # max_value: +inf means no upper bound
        if not values[2] >= 0:
            raise ValueError(f"relu_general max_value must be >= 0 (inf for none), got {values[2]}")
    if not finite.all():
        raise ValueError(f"expected finite parameters for activation {activation!r}, got {values.tolist()}")
    return values


def _finite(*arrays: np.ndarray) -> None:
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("expected finite weights, found NaN or infinity")


def _feature_vectors(first, second, names: str) -> Tuple[np.ndarray, np.ndarray]:
    """An element-wise layer's two per-feature vectors, as finite float32 of one equal, nonzero width."""
    a = np.ascontiguousarray(first, dtype=np.float32).reshape(-1)
    b = np.ascontiguousarray(second, dtype=np.float32).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"expected {names} of one equal width, got {a.shape} and {b.shape}")
    _finite(a, b)
    return a, b


@dataclass(frozen=True)
class DenseLayer:
    """y = activation(x @ kernel + bias); kernel is (inputs, outputs) as in Keras."""

    kernel: np.ndarray
    bias: np.ndarray
    activation: str = "linear"
    parameters: Sequence[float] = ()  # the activation's (docs/FORMAT.md): slopes, clip values

    op = "dense"

    def __post_init__(self) -> None:
        kernel = np.ascontiguousarray(self.kernel, dtype=np.float32)
        bias = np.ascontiguousarray(self.bias, dtype=np.float32)
        if kernel.ndim != 2 or bias.shape != (kernel.shape[1],):
            raise ValueError(f"expected a (in, out) kernel and an (out,) bias, got {kernel.shape} and {bias.shape}")
        _finite(kernel, bias)
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "parameters", _activation_parameters(self.activation, self.parameters, bias.size))

    @property
    def widths(self) -> Tuple[int, int]:
        return self.kernel.shape

    def values(self) -> List[np.ndarray]:
        """What the file stores for this layer, in order (FORMAT.md, "Weights")."""
        return [self.kernel, self.bias, self.parameters]


@dataclass(frozen=True)
class ScaleShiftLayer:
    """y = activation(x * scale + shift), per feature: a BatchNormalization with nothing to fold into."""

    scale: np.ndarray
    shift: np.ndarray
    activation: str = "linear"
    parameters: Sequence[float] = ()

    op = "scale_shift"

    def __post_init__(self) -> None:
        scale, shift = _feature_vectors(self.scale, self.shift, "scale and shift")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "shift", shift)
        object.__setattr__(self, "parameters", _activation_parameters(self.activation, self.parameters, scale.size))

    @property
    def widths(self) -> Tuple[int, int]:
        return (self.scale.size, self.scale.size)

    def values(self) -> List[np.ndarray]:
        return [self.scale, self.shift, self.parameters]


@dataclass(frozen=True)
class LayerNormLayer:
    """y = activation((x - mean) / sqrt(var + epsilon) * gamma + beta), mean and var over each row."""

    gamma: np.ndarray
    beta: np.ndarray
    epsilon: float
    activation: str = "linear"
    parameters: Sequence[float] = ()

    op = "layer_norm"

    def __post_init__(self) -> None:
        gamma, beta = _feature_vectors(self.gamma, self.beta, "gamma and beta")
        epsilon = float(np.float32(self.epsilon))
        if not (np.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"expected a finite layer_norm epsilon > 0, got {self.epsilon}")
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(self, "beta", beta)
        object.__setattr__(self, "epsilon", epsilon)
        object.__setattr__(self, "parameters", _activation_parameters(self.activation, self.parameters, gamma.size))

    @property
    def widths(self) -> Tuple[int, int]:
        return (self.gamma.size, self.gamma.size)

    def values(self) -> List[np.ndarray]:
        return [self.gamma, self.beta, np.array([self.epsilon], np.float32), self.parameters]


def _image(shape) -> Tuple[int, int, int]:
    h, w, c = (int(v) for v in shape)
    if min(h, w, c) < 1:
        raise ValueError(f"expected an input image (height, width, channels) of positive sides, got {tuple(shape)}")
    return h, w, c


def _window_positions(size: int, window: int, stride: int, before: int, after: int) -> int:
    span = size + before + after - window
    if span < 0:
        raise ValueError(f"a window of {window} does not fit {size} pixels padded by {before} and {after}")
    return span // stride + 1


@dataclass(frozen=True)
class Conv2DLayer:
    """y = activation(conv2d(x) + bias) on NHWC images (format version 3): kernel (kh, kw, C, F) as
    Keras stores it, bias (F,), pads (top, bottom, left, right)."""

    kernel: np.ndarray
    bias: np.ndarray
    input_shape: Tuple[int, int, int]
    strides: Tuple[int, int] = (1, 1)
    pads: Tuple[int, int, int, int] = (0, 0, 0, 0)
    activation: str = "linear"
    parameters: Sequence[float] = ()

    op = "conv2d"

    def __post_init__(self) -> None:
        kernel = np.ascontiguousarray(self.kernel, dtype=np.float32)
        bias = np.ascontiguousarray(self.bias, dtype=np.float32).reshape(-1)
        shape = _image(self.input_shape)
        if kernel.ndim != 4 or kernel.shape[2] != shape[2] or kernel.shape[3] != bias.size:
            raise ValueError(f"expected a kernel (kh, kw, {shape[2]}, F) and a bias (F,), got {kernel.shape} and "
                             f"{bias.shape}")
        _finite(kernel, bias)
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        object.__setattr__(self, "pads", tuple(int(p) for p in self.pads))
        object.__setattr__(self, "parameters",
                           _activation_parameters(self.activation, self.parameters, int(np.prod(self.output_shape))))

    @property
    def window(self) -> Tuple[int, int]:
        return self.kernel.shape[0], self.kernel.shape[1]

    @property
    def output_shape(self) -> Tuple[int, int, int]:
        (h, w, _), (kh, kw), (sh, sw), (pt, pb, pl, pr) = self.input_shape, self.window, self.strides, self.pads
        return _window_positions(h, kh, sh, pt, pb), _window_positions(w, kw, sw, pl, pr), self.kernel.shape[3]

    @property
    def widths(self) -> Tuple[int, int]:
        return int(np.prod(self.input_shape)), int(np.prod(self.output_shape))

    def geometry(self) -> Tuple[int, ...]:
        return (*self.input_shape, *self.window, *self.strides, *self.pads, self.kernel.shape[3], 0)

    def values(self) -> List[np.ndarray]:
        return [self.kernel, self.bias, self.parameters]


@dataclass(frozen=True)
class PoolLayer:
    """Max or average pooling over windows, or over the whole image (global_*), on NHWC images
    (format version 3). Average pooling divides by the window's real pixels (Keras's 'same'), or by
    the whole window with count_padding (ONNX's count_include_pad=1)."""

    op: str
    input_shape: Tuple[int, int, int]
    window: Tuple[int, int] = (0, 0)
    strides: Tuple[int, int] = (0, 0)
    pads: Tuple[int, int, int, int] = (0, 0, 0, 0)
    count_padding: bool = False
    activation: str = "linear"
    parameters: Sequence[float] = ()

    def __post_init__(self) -> None:
        if self.op not in SPATIAL_OPS[1:]:
            raise ValueError(f"expected a pool op in {SPATIAL_OPS[1:]}, got {self.op!r}")
        object.__setattr__(self, "input_shape", _image(self.input_shape))
        object.__setattr__(self, "window", tuple(int(v) for v in self.window))
        object.__setattr__(self, "strides", tuple(int(v) for v in self.strides))
        object.__setattr__(self, "pads", tuple(int(v) for v in self.pads))
        if self.count_padding and self.op != "avg_pool":
            raise ValueError("count_padding is an avg_pool setting")
        object.__setattr__(self, "parameters",
                           _activation_parameters(self.activation, self.parameters, int(np.prod(self.output_shape))))

    @property
    def output_shape(self) -> Tuple[int, int, int]:
        h, w, c = self.input_shape
        if self.op.startswith("global"):
            return 1, 1, c
        (kh, kw), (sh, sw), (pt, pb, pl, pr) = self.window, self.strides, self.pads
        return _window_positions(h, kh, sh, pt, pb), _window_positions(w, kw, sw, pl, pr), c

    @property
    def widths(self) -> Tuple[int, int]:
        return int(np.prod(self.input_shape)), int(np.prod(self.output_shape))

    def geometry(self) -> Tuple[int, ...]:
        return (*self.input_shape, *self.window, *self.strides, *self.pads, 0, int(self.count_padding))

    def values(self) -> List[np.ndarray]:
        return [self.parameters]


Layer = Union[DenseLayer, ScaleShiftLayer, LayerNormLayer, Conv2DLayer, PoolLayer]


def format_version_for(layers: Sequence[Layer]) -> int:
    """The oldest format version that holds ``layers``: 1 for dense layers with version-1 activations,
    3 for spatial layers."""
    return max(3 if layer.op in SPATIAL_OPS else 2 if layer.op != "dense" else
               ACTIVATION_PARAMETERS[layer.activation][2] for layer in layers)


def sample_pixel_inputs(count: int, width: int, input_scale: float, seed: int = 0) -> np.ndarray:
    """Deterministic MNIST-like reference inputs: ~80% zero pixels, the rest 1..255, scaled the way
    the engine scales uint8 input."""
    rng = np.random.default_rng(seed)
    pixels = np.where(rng.random((count, width)) < 0.8, 0, rng.integers(1, 256, (count, width)))
    return scale_pixels(pixels, input_scale)


def multiply_adds(layer) -> int:
    """Per input row: a dense layer's weights, a conv's once per output pixel; 0 for other ops."""
    if layer.op == "dense":
        return int(layer.kernel.shape[0] * layer.kernel.shape[1])
    if layer.op == "conv2d":
        height, width, _ = layer.output_shape
        return int(layer.kernel.size) * height * width
    return 0


def row_work(layer) -> int:
    """Rule 21's work per input row (docs/FORMAT.md): multiply-adds, and for a pool each value its
    windows read (a global pool reads its image once)."""
    if layer.op in ("global_avg_pool", "global_max_pool"):
        return int(np.prod(layer.input_shape))
    if layer.op in ("max_pool", "avg_pool"):
        return int(np.prod(layer.output_shape)) * int(np.prod(layer.window))
    return multiply_adds(layer)


def encode_model(
    layers: Sequence[Layer],
    *,
    input_scale: float,
    metadata: Mapping[str, str],
    reference_inputs: np.ndarray,
    reference_outputs: np.ndarray,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> bytes:
    """The bytes of a model file, in the oldest version that holds the model (format_version_for).
    Checks what the loader would check, so a file this writes always loads (verification aside)."""
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"expected 1..{MAX_LAYERS} layers, got {len(layers)}")
    width = layers[0].widths[0]
    for i, layer in enumerate(layers):
        n_in, n_out = layer.widths
        if n_in != width:
            raise ValueError(f"layer {i} takes {n_in} inputs but the previous layer gives {width}")
        if not (1 <= n_in <= MAX_WIDTH and 1 <= n_out <= MAX_WIDTH):
            raise ValueError(f"layer {i} is {n_in}x{n_out}; widths must be 1..{MAX_WIDTH}")
        previous = layers[i - 1] if i else None
        if layer.op in SPATIAL_OPS and previous is not None and previous.op in SPATIAL_OPS and \
                tuple(layer.input_shape) != tuple(previous.output_shape):
            raise ValueError(f"layer {i} takes a {layer.input_shape} image but the previous layer gives "
                             f"{previous.output_shape}")
        width = n_out
    parameters = sum(v.size for layer in layers for v in layer.values())
    if parameters > MAX_PARAMETERS:
        raise ValueError(f"expected at most {MAX_PARAMETERS} weights, biases and parameters (1 GiB), the model "
                         f"has {parameters}")
    work = sum(row_work(layer) for layer in layers)
    if work > MAX_MULTIPLY_ADDS:
        raise ValueError(f"expected at most {MAX_MULTIPLY_ADDS} multiply-adds per input row (docs/FORMAT.md rule "
                         f"21), the model needs {work}")
    if not (np.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"expected a finite input_scale > 0, got {input_scale}")
    if not (0 <= atol <= MAX_TOLERANCE and 0 <= rtol <= MAX_TOLERANCE):
        raise ValueError(f"expected atol and rtol in 0..{MAX_TOLERANCE}, got {atol} and {rtol}")
    n_in, n_out = layers[0].widths[0], layers[-1].widths[1]
    ref_in = np.ascontiguousarray(reference_inputs, dtype="<f4").reshape(len(reference_inputs), -1)
    ref_out = np.ascontiguousarray(reference_outputs, dtype="<f4")
    if ref_in.shape[1:] != (n_in,) or ref_out.shape != (len(ref_in), n_out):
        raise ValueError(f"expected reference inputs (R, {n_in}) and outputs (R, {n_out}), "
                         f"got {ref_in.shape} and {ref_out.shape}")
    if not 1 <= len(ref_in) <= MAX_REFERENCES:
        raise ValueError(f"expected 1..{MAX_REFERENCES} reference rows, got {len(ref_in)}")
    if not (np.isfinite(ref_in).all() and np.isfinite(ref_out).all()):
        raise ValueError("expected finite reference inputs and outputs")

    # input_mean / input_std change what uint8 input means: an older reader must refuse the file.
    normalized = "input_mean" in metadata or "input_std" in metadata
    version = max(format_version_for(layers), NORMALIZATION_VERSION if normalized else 1)
    entry = LAYER_ENTRY[version]
    def op_field(layer) -> tuple:
        if version == 1:
            return ()
        if version == 2:
            return (OP_CODES[layer.op],)
        return (OP_CODES[layer.op], *(layer.geometry() if layer.op in SPATIAL_OPS else (0,) * 13))
    table = [(*layer.widths, ACTIVATION_CODES[layer.activation], DTYPE_F32, *op_field(layer)) for layer in layers]
    meta = _encode_metadata(metadata)
    body = [
        b"".join(entry.pack(*fields) for fields in table),
        b"".join(v.astype("<f4").tobytes() for layer in layers for v in layer.values()),
        meta,
        struct.pack("<ff", atol, rtol),
        ref_in.tobytes(),
        ref_out.tobytes(),
    ]
    size = HEADER.size + sum(map(len, body)) + 4
    header = HEADER.pack(MAGIC, version, BYTE_ORDER_MARK, size, len(layers), n_in, float(input_scale),
                         len(ref_in), len(metadata))
    payload = header + b"".join(body)
    return payload + struct.pack("<I", _core.crc32c(payload))


def _encode_metadata(metadata: Mapping[str, str]) -> bytes:
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ValueError(f"metadata needs the keys {list(REQUIRED_METADATA)}; missing {missing}")
    if len(metadata) > MAX_METADATA:
        raise ValueError(f"expected at most {MAX_METADATA} metadata entries, got {len(metadata)}")
    out = []
    for key, value in metadata.items():
        k, v = key.encode("ascii", "replace"), str(value).encode("utf-8")
        if not (1 <= len(k) <= MAX_KEY_LENGTH) or any(c not in b"abcdefghijklmnopqrstuvwxyz0123456789_." for c in k):
            raise ValueError(f"metadata keys are 1..{MAX_KEY_LENGTH} characters of a-z 0-9 _ . ; got {key!r}")
        if len(v) > MAX_VALUE_LENGTH:
            raise ValueError(f"metadata value of {key!r} is {len(v)} bytes; at most {MAX_VALUE_LENGTH} allowed")
        out.append(struct.pack("<H", len(k)) + k + struct.pack("<I", len(v)) + v)
    return b"".join(out)


def encode_classes(labels: Sequence, outputs: int) -> str:
    """The ``classes`` metadata value (docs/FORMAT.md) for ``labels``: what classify() returns per
    output, two labels for a one-output model. Integer labels stay integers, float labels floats
    (finite; as fetch_mldata and y.astype(float) give them: classify then returns float64 like
    sklearn's predict); anything else must be strings the format can hold (non-empty, unique, no
    newline). Raises ValueError saying which label does not fit."""
    labels = list(np.asarray(labels).tolist())
    want = 2 if outputs == 1 else outputs
    if len(labels) != want:
        raise ValueError(f"expected {want} class labels for a model with {outputs} output(s), got {len(labels)}")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        kind = "int"
        if any(abs(v) >= 10**18 for v in labels):
            raise ValueError(f"integer class labels must have at most 18 digits, got {labels}")
    elif all(isinstance(v, float) for v in labels):
        kind = "float"
        if not all(np.isfinite(labels)):
            raise ValueError(f"float class labels must be finite, got {labels}")
    elif all(isinstance(v, str) for v in labels):
        kind = "str"
        bad = [v for v in labels if not v or "\n" in v]
        if bad:
            raise ValueError(f"string class labels must be non-empty and contain no newline; got {bad[0]!r}")
    else:
        types = sorted({type(v).__name__ for v in labels})
        raise ValueError(f"class labels must be all integers, all floats or all strings, got {', '.join(types)}")
    text = [repr(float(v)) if kind == "float" else str(v) for v in labels]  # repr: the shortest exact text
    if len(set(text)) != len(text):
        raise ValueError(f"class labels must be unique, got {labels}")
    return "\n".join([kind, *text])


def _about(e: OSError, target: Path) -> OSError:
    """`e` re-raised about the path the user asked for: the temporary file is ours, not theirs."""
    return type(e)(e.errno, e.strerror, str(target)) if e.errno is not None else e


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that the name holds either the old file or all of the new one,
    even if the process is killed midway: temporary file in the same directory, fsync, rename."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.urandom(8).hex()}.tmp")
    # os.open with 0o666 lets the umask decide the permissions, as a plain open() would (mkstemp
    # would make every written model private to its owner).
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise _about(e, target) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if target.is_dir():  # os.replace's error would name the temporary file, not the user's path
            raise IsADirectoryError(errno.EISDIR, "expected a file path to write, got a directory", str(target))
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e, IsADirectoryError):
            raise _about(e, target) from None
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return target


def write_model(
    path: PathLike,
    layers: Sequence[Layer],
    *,
    input_scale: float = 1 / 255,
    metadata: Optional[Mapping[str, str]] = None,
    reference_inputs: Optional[np.ndarray] = None,
    reference_outputs: Optional[np.ndarray] = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> Path:
    """Write a model file atomically, after loading it from memory with full verification: a file
    this writes always loads (a FormatError here means the references and the layers disagree, and
    nothing is written).

    Without ``reference_outputs`` the file's expected outputs come from the float64 numpy forward
    pass (:mod:`mnist_engine.reference`); exporters pass their framework's own outputs instead.
    """
    layers = [layer if isinstance(layer, (DenseLayer, ScaleShiftLayer, LayerNormLayer, Conv2DLayer, PoolLayer))
              else DenseLayer(*layer)
              for layer in layers]
    if reference_inputs is None:
        reference_inputs = sample_pixel_inputs(8, layers[0].widths[0], input_scale)
    if reference_outputs is None:
        reference_outputs = forward(layers, reference_inputs)
    meta = {"producer": "mnist_engine.write_model", "producer_version": _core.__version__, "source": ""}
    meta.update(metadata or {})
    data = encode_model(layers, input_scale=input_scale, metadata=meta, reference_inputs=reference_inputs,
                        reference_outputs=reference_outputs, atol=atol, rtol=rtol)
    _core.Engine.from_bytes(data, verify=True)
    return atomic_write_bytes(path, data)


def read_layers(path: PathLike) -> List[Layer]:
    """The layers of a model file, as numpy arrays (for other runtimes, benchmarks, inspection).

    The file is validated by the C++ loader first, so this decoder can trust the layout."""
    data = Path(path).read_bytes()
    _core.Engine.from_bytes(data, verify=False)
    (version,) = struct.unpack_from("<I", data, 8)
    (count,) = struct.unpack_from("<I", data, 24)
    entry = LAYER_ENTRY[version]
    at = HEADER.size + entry.size * count
    layers: List[Layer] = []

    def take(n: int) -> np.ndarray:
        nonlocal at
        values = np.frombuffer(data, "<f4", n, at)
        at += 4 * n
        return values

    for i in range(count):
        fields = entry.unpack_from(data, HEADER.size + entry.size * i)
        n_in, n_out, code, op = fields[0], fields[1], fields[2], (fields[4] if version > 1 else 0)
        activation = _core.ACTIVATIONS[code]
        names, per_unit, _ = ACTIVATION_PARAMETERS[activation]
        if _core.OPS[op] in SPATIAL_OPS:
            h, w, c, kh, kw, sh, sw, pt, pb, pl, pr, filters, flags = fields[5:]
            if _core.OPS[op] == "conv2d":
                kernel, bias = take(kh * kw * c * filters).reshape(kh, kw, c, filters), take(filters)
                layers.append(Conv2DLayer(kernel, bias, (h, w, c), (sh, sw), (pt, pb, pl, pr), activation,
                                          take(len(names) + per_unit * n_out)))
            else:
                layers.append(PoolLayer(_core.OPS[op], (h, w, c), (kh, kw), (sh, sw), (pt, pb, pl, pr), bool(flags),
                                        activation, take(len(names) + per_unit * n_out)))
        elif _core.OPS[op] == "dense":
            kernel, bias = take(n_in * n_out).reshape(n_in, n_out), take(n_out)
            layers.append(DenseLayer(kernel, bias, activation, take(len(names) + per_unit * n_out)))
        elif _core.OPS[op] == "scale_shift":
            scale, shift = take(n_out), take(n_out)
            layers.append(ScaleShiftLayer(scale, shift, activation, take(len(names) + per_unit * n_out)))
        else:
            gamma, beta, epsilon = take(n_out), take(n_out), float(take(1)[0])
            layers.append(LayerNormLayer(gamma, beta, epsilon, activation, take(len(names) + per_unit * n_out)))
    return layers
