"""What the Keras, ONNX and scikit-learn exporters share: turning caller-given reference images into
the model's float input domain, the engine layer being assembled, the metadata every export
carries, and the proof every export gives before it writes a byte (build in memory, load with full
verification, name the first diverging layer on a mismatch)."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _core
from .._core import InputRangeWarning  # one class for export time and predict time
from ..model_file import (
    MAX_TOLERANCE,
    SPATIAL_OPS,
    Conv2DLayer,
    DenseLayer,
    LayerNormLayer,
    PoolLayer,
    ScaleShiftLayer,
    atomic_write_bytes,
    encode_model,
    sample_pixel_inputs,
)
from ..reference import forward, normalize_pixels, scale_pixels
from ..unit_order import UNIT, order_hidden_units

REFERENCE_ROWS = 16


class ExportMismatchError(ValueError):
    """The exported file does not reproduce the framework's outputs; nothing was written."""


class UnsupportedModelError(ValueError):
    """The model contains something the engine cannot represent; the message names it."""


@dataclass
class LayerDraft:
    """One engine layer being assembled by an exporter: what it computes, and which of the
    framework's layers (or graph nodes) it stands for."""
    op: str
    values: List[np.ndarray]  # dense: kernel, bias (float64); scale_shift: scale, shift; layer_norm: gamma, beta
    activation: str = "linear"
    parameters: Tuple[float, ...] = ()
    epsilon: float = 0.0
    ends_at: Any = 0  # where in the framework's model this engine layer's output can be observed
    parts: List[str] = field(default_factory=list)
    geometry: Dict[str, Any] = field(default_factory=dict)  # spatial ops: Conv2DLayer's / PoolLayer's arguments

    def layer(self):
        if self.op == "conv2d":
            return Conv2DLayer(*self.values, **self.geometry, activation=self.activation, parameters=self.parameters)
        if self.op in SPATIAL_OPS:
            return PoolLayer(self.op, **self.geometry, activation=self.activation, parameters=self.parameters)
        if self.op == "dense":
            return DenseLayer(*self.values, self.activation, self.parameters)
        if self.op == "scale_shift":
            return ScaleShiftLayer(*self.values, self.activation, self.parameters)
        return LayerNormLayer(*self.values, self.epsilon, self.activation, self.parameters)


@dataclass
class ReferenceInputs:
    values: np.ndarray  # (R, width) float32, the model's input domain
    # "uint8 MIN MAX" or "float MIN MAX": the values as the caller gave them; None for made-up
    # features, which say nothing of the data's range (the file then states none).
    source_range: Optional[str]


@dataclass(frozen=True)
class Normalization:
    """A DataLoader's Normalize(mean, std) after ToTensor: what uint8 pixels become for a model
    trained on standardized images (docs/FORMAT.md, input_mean / input_std). One value, or one per
    channel of the input image; float32, as the transform holds them."""
    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    def metadata(self) -> Dict[str, str]:
        def text(values):
            return " ".join(np.format_float_positional(np.float32(v), trim="-") for v in values)
        return {"input_mean": text(self.mean), "input_std": text(self.std)}

    def pixels(self, pixels: np.ndarray, input_scale: float) -> np.ndarray:
        return normalize_pixels(pixels, input_scale, self.mean, self.std)


def normalization_for(mean: Any, std: Any, channels: int) -> Optional[Normalization]:
    """The caller's input_mean / input_std, checked: both or neither, 1 or `channels` finite values
    each, every std > 0."""
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        given = "input_std" if mean is None else "input_mean"
        raise ValueError(f"expected input_mean and input_std together, got only {given}")
    values = [np.atleast_1d(np.asarray(v, np.float64)).ravel() for v in (mean, std)]
    for name, v in zip(("input_mean", "input_std"), values):
        if len(v) not in (1, channels) or not np.isfinite(v).all():
            raise ValueError(f"expected {name} to be 1{f' or {channels}' if channels > 1 else ''} finite values "
                             f"(one per channel of the input), got {list(v)}")
    if len(values[0]) != len(values[1]) or not (values[1] > 0).all():
        raise ValueError(f"expected as many input_std as input_mean values, every std > 0, got {list(values[1])}")
    return Normalization(tuple(float(np.float32(v)) for v in values[0]), tuple(float(np.float32(v)) for v in values[1]))


def infer_normalization(images: Any, input_scale: float, channels: int) -> Optional[Normalization]:
    """The Normalize(mean, std) that float reference images plainly went through, or None. Images
    of standardized pixels (a negative least value) hold each channel's 0 pixel as -mean/std and
    its 255 pixel as (255 * input_scale - mean)/std; the pair is accepted only if, written with the
    fewest decimal digits (0.1307, 0.3081), it turns some uint8 pixel into every value exactly."""
    if images is None or np.asarray(images).dtype.kind != "f":
        return None
    values = np.asarray(images, np.float32).reshape(len(images), -1)
    if not values.size or values.min() >= 0 or values.shape[1] % channels:
        return None
    columns = values.reshape(len(values), -1, channels)
    means, stds = [], []
    for c in range(channels):
        z = columns[:, :, c]
        lo, hi = float(z.min()), float(z.max())
        if not hi > lo:
            return None
        std = 255 * input_scale / (hi - lo)
        mean = -lo * std
        found = None
        for digits in range(2, 9):  # the shortest decimals that give back every value exactly
            m, s = float(f"{mean:.{digits}g}"), float(f"{std:.{digits}g}")
            if s <= 0:
                continue
            table = normalize_pixels(np.arange(256, dtype=np.uint8)[None], input_scale, [m], [s])[0]
            if np.isin(z, table).all():
                found = (m, s)
                break
        if found is None:
            return None
        means.append(found[0])
        stds.append(found[1])
    if len(set(means)) == 1 and len(set(stds)) == 1:
        means, stds = means[:1], stds[:1]
    return normalization_for(means, stds, channels)


def pixels_possible(layers: Sequence[Any], input_scale: Optional[float], reference_images: Any,
                    stated: bool = False) -> bool:
    """Whether uint8 pixels can be this model's input: an image (a conv or pool takes it), an
    MNIST-sized row (784 values), uint8 reference images, or a pixel scale or normalization that
    the caller gives or the model states (`stated`: a Rescaling layer, input_mean / input_std).
    Tabular data (30 measurements of a tumour, 8x8 digits as 0..16 counts, two toy features) has no
    pixels to scale: such a model takes features (docs/FORMAT.md, input_kind)."""
    first = layers[0]
    uint8_rows = reference_images is not None and np.asarray(reference_images).dtype == np.uint8
    return (first.op in SPATIAL_OPS or first.widths[0] == 784 or uint8_rows or input_scale is not None
            or stated)


def feature_rows(rows: Any, width: int, drawn: Optional[np.ndarray] = None) -> ReferenceInputs:
    """Reference rows for a model of features: the caller's (float), else `drawn` (rows made from
    what the model's own preprocessing learned of the data), else standard normal rows, whose range
    the file does not state (nothing is known of the data)."""
    if rows is not None:
        rows = np.asarray(rows)
        if rows.dtype.kind not in "fiu" or rows.dtype == np.uint8:
            raise TypeError(f"expected float reference rows (features), got dtype {rows.dtype}")
        values = rows.reshape(len(rows), -1).astype(np.float32)
        if values.shape[1] != width:
            raise ValueError(f"expected reference rows with {width} features each, got shape {rows.shape}")
    elif drawn is not None:
        values = np.asarray(drawn, np.float32)
    else:
        normal = np.random.default_rng(0).normal(size=(REFERENCE_ROWS, width)).astype(np.float32)
        return ReferenceInputs(normal, None)
    return ReferenceInputs(values, f"float {float(values.min()):.9g} {float(values.max()):.9g}")


def pixel_inputs(layers: Sequence[Any], input_scale: float, input_mean: Any, input_std: Any, reference_images: Any,
                 calibration_images: Any, per_channel: bool = True):
    """(reference rows, calibration rows or None, Normalization or None) of an image model: the
    caller's input_mean / input_std (one per channel of the first layer's image when `per_channel`,
    whose rows are NHWC), else what float reference images say of them (infer_normalization)."""
    first = layers[0]
    channels = first.input_shape[2] if per_channel and first.op in SPATIAL_OPS else 1
    width = first.widths[0]
    normalization = normalization_for(input_mean, input_std, channels) or \
        infer_normalization(reference_images, input_scale, channels)
    reference = reference_inputs_for(reference_images, width, input_scale, normalization)
    calibration = None if calibration_images is None else \
        reference_inputs_for(calibration_images, width, input_scale, normalization)
    return reference, calibration, normalization


@dataclass
class ModelInputs:
    """What an exported graph takes (docs/FORMAT.md, input_kind), with its reference rows."""
    kind: str  # "pixels" or "features"
    input_scale: float
    reference: ReferenceInputs
    calibration: Optional[ReferenceInputs]
    normalization: Optional[Normalization]


def graph_inputs(layers: Sequence[Any], input_scale: Optional[float], rescales: bool, input_mean: Any,
                 input_std: Any, reference_images: Any, calibration_images: Any,
                 per_channel: bool = True) -> ModelInputs:
    """The inputs of a Keras or ONNX graph: pixels (pixels_possible), scaled by the caller's
    input_scale, else 1 when the graph rescales them itself, else 1/255; otherwise features, taken
    as given."""
    if pixels_possible(layers, input_scale, reference_images,
                       stated=rescales or input_mean is not None or input_std is not None):
        scale = input_scale if input_scale is not None else 1.0 if rescales else 1 / 255
        reference, calibration, normalization = pixel_inputs(layers, scale, input_mean, input_std, reference_images,
                                                             calibration_images, per_channel)
        return ModelInputs("pixels", scale, reference, calibration, normalization)
    width = layers[0].widths[0]
    calibration = None if calibration_images is None else feature_rows(calibration_images, width)
    return ModelInputs("features", 1.0, feature_rows(reference_images, width), calibration, None)


def reference_inputs_for(images: Optional[np.ndarray], width: int, input_scale: float,
                         normalization: Optional[Normalization] = None) -> ReferenceInputs:
    """(R, width) float32 in the model's input domain. uint8 images are raw pixels and get scaled
    (and normalized) exactly as the engine converts them; float images are taken as already in the
    model's domain, and a warning is given when they lie outside what predict(uint8) will feed the
    model (0..255 * input_scale, normalized)."""
    def convert(pixels):
        return normalization.pixels(pixels, input_scale) if normalization else scale_pixels(pixels, input_scale)

    if images is None:
        pixels = np.rint(sample_pixel_inputs(REFERENCE_ROWS, width, 1.0)).astype(np.uint8)
        return ReferenceInputs(convert(pixels), f"uint8 {pixels.min()} {pixels.max()}")
    images = np.asarray(images)
    flat = images.reshape(len(images), -1)
    if flat.shape[1] != width:
        raise ValueError(f"expected reference images with {width} values each, got shape {images.shape}")
    if images.dtype == np.uint8:
        return ReferenceInputs(convert(flat), f"uint8 {flat.min()} {flat.max()}")
    if images.dtype.kind != "f":
        raise TypeError(f"expected uint8 pixels or float reference images, got dtype {images.dtype}")
    values = flat.astype(np.float32)
    lo, hi = float(values.min()), float(values.max())
    bottom, top = 0.0, 255 * input_scale
    if normalization:
        ends = normalization.pixels(np.array([[0, 255]], np.uint8).repeat(len(normalization.mean), 1), input_scale)
        bottom, top = float(ends.min()), float(ends.max())
        outside = lo < bottom - 1e-6 * abs(bottom) or hi > top + 1e-6 * abs(top)
    else:
        outside = lo < -1e-6 * top or hi > top * (1 + 1e-6)
    if outside:
        warnings.warn(
            f"the float reference images lie in {lo:g}..{hi:g}, but input_scale={input_scale:g} maps uint8 pixels "
            f"to {bottom:g}..{top:g}: predict(uint8 pixels) would feed this model inputs unlike the ones it was "
            f"checked on. If the model was trained on raw 0..255 values, export with input_scale=1; if on x/255, "
            f"pass reference images scaled the same way (or as uint8 pixels); if on Normalize(mean, std), give "
            f"input_mean and input_std.", InputRangeWarning, stacklevel=3)
    return ReferenceInputs(values, f"float {lo:.9g} {hi:.9g}")


def fold_after(kernel: np.ndarray, bias: np.ndarray, scale: np.ndarray, offset: np.ndarray):
    """A per-output affine map after a linear dense layer, folded into it: (x W + b) s + o."""
    return kernel * scale, bias * scale + offset


def fold_before(kernel: np.ndarray, bias: np.ndarray, scale: np.ndarray, offset: np.ndarray):
    """A per-input affine map before a dense layer, folded into its rows:
    (x s + o) W + b = x (s W) + (b + o W), in float64, rounded once when written."""
    return scale[:, None] * kernel, bias + offset @ kernel


def rows_in_input_order(kernel: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The first dense layer's kernel for inputs that Flatten, Reshape, Permute or Transpose moved:
    ``order[p]`` is where the framework's flattened element p sits in the engine's input."""
    order = np.asarray(order).reshape(-1)
    if np.array_equal(order, np.arange(order.size)):
        return kernel
    permuted = np.empty_like(kernel)
    permuted[order] = kernel
    return permuted


def base_metadata(producer: str, source: str, reject_class: Optional[int] = None) -> Dict[str, str]:
    meta = {"producer": producer, "producer_version": _core.__version__, "source": source}
    if reject_class is not None:
        # Checked again by the loader (rule 32) against the model's output width.
        if isinstance(reject_class, bool) or not isinstance(reject_class, (int, np.integer)) or reject_class < 0:
            raise ValueError(f"expected reject_class to be an output index (an int >= 0), got {reject_class!r}")
        meta["reject_class"] = str(int(reject_class))
    return meta


# The last activations whose outputs are probabilities or log-probabilities; a file without an
# output_kind entry is read the same way (Engine.output_kind), anything else as logits.
_KIND_OF_ACTIVATION = {"softmax": "probabilities", "sigmoid": "probabilities", "hard_sigmoid": "probabilities",
                       "log_softmax": "log_probabilities"}
# How far reference rows may be from summing to 1 (probabilities, or exp of log-probabilities) and
# still read as such: float32 outputs of ten classes sum to 1 within a few 1e-7.
_ROW_SUM_TOLERANCE = 1e-4


def _rows_are_probabilities(y: np.ndarray) -> bool:
    return y.shape[1] >= 2 and bool(np.all((y >= 0) & (y <= 1))) and \
        bool(np.all(np.abs(y.sum(axis=1, dtype=np.float64) - 1) <= _ROW_SUM_TOLERANCE))


def _rows_are_log_probabilities(y: np.ndarray) -> bool:
    return y.shape[1] >= 2 and bool(np.all(y <= 0)) and \
        bool(np.all(np.abs(np.exp(y.astype(np.float64)).sum(axis=1) - 1) <= _ROW_SUM_TOLERANCE))


def output_kind_for(last_activation: str, reference_outputs: np.ndarray, framework: str, *,
                    stated: Optional[str] = None, hint: Optional[str] = None) -> str:
    """What the exported model outputs (the file's output_kind entry): what the caller `stated`,
    else what its last activation computes (softmax, sigmoid: probabilities; log_softmax:
    log-probabilities), else what the framework says of a model without one (`hint`: Keras's
    compile(loss=...(from_logits=True)) logits, a regression loss or a scikit-learn regressor
    values), else what the framework's outputs on the reference rows are: rows in 0..1 summing to
    1 probabilities, rows whose exp sums to 1 log-probabilities, any others logits. The graph
    comes before the loss: a softmax model compiled with from_logits=True still outputs
    probabilities. A stated kind that those outputs plainly contradict is refused: probabilities
    outside 0..1, log-probabilities above 0."""
    kinds = _core.OUTPUT_KINDS
    if stated is not None and stated not in kinds:
        raise ValueError(f"expected output_kind to be one of {', '.join(kinds)}, got {stated!r}")
    y = np.asarray(reference_outputs, np.float32).reshape(len(reference_outputs), -1)
    from_activation = _KIND_OF_ACTIVATION.get(last_activation)
    kind = stated or from_activation or hint
    if kind is None:
        kind = ("probabilities" if _rows_are_probabilities(y) else
                "log_probabilities" if _rows_are_log_probabilities(y) else "logits")
    lo, hi = float(y.min()), float(y.max())
    contradiction = (kind == "probabilities" and not (lo >= -1e-6 and hi <= 1 + 1e-6)) or \
                    (kind == "log_probabilities" and not hi <= 1e-6)
    if contradiction:
        said = f"output_kind={kind!r}" if stated else f"{framework}'s model says its outputs are {kind}"
        raise ValueError(f"{said}, but its outputs on the reference rows span {lo:.4g}..{hi:.4g}: "
                         f"{'probabilities lie in 0..1' if kind == 'probabilities' else 'log-probabilities are <= 0'}. "
                         f"State what they are with output_kind= (one of {', '.join(kinds)})")
    return kind


@dataclass
class Stage:
    """The framework's own output after the part of the model that became engine layer i."""
    description: str  # e.g. "'dense_1' (Dense 784->32) + 'act' (Activation relu)"
    outputs: np.ndarray  # (R, out_i)


def prove_and_write(
    out_path: Union[str, "os.PathLike[str]"],
    layers: Sequence[DenseLayer],
    *,
    framework: str,
    stages: Sequence[Stage],
    input_scale: float,
    metadata: Dict[str, str],
    reference: ReferenceInputs,
    reference_outputs: np.ndarray,
    atol: float,
    rtol: float,
    calibration: Optional[ReferenceInputs] = None,
    output_kind: Optional[str] = None,
    output_hint: Optional[str] = None,
) -> Path:
    """Encode the file in memory, load it with full verification (the engine against the
    framework's outputs on the reference rows) and only then write it, atomically. On a mismatch,
    raise ExportMismatchError naming the first layer whose output diverges from the framework's
    intermediate output; the destination is not touched.

    Hidden ReLU neurons are renumbered first (unit_order: the reduced-precision kernels skip zero
    units), from the ``calibration`` rows or else the reference rows; the model's outputs do not
    change, and the framework's intermediate outputs are renumbered the same way.

    The file states what the outputs are (output_kind_for: `output_kind` as the caller states it,
    else `output_hint`, the framework's own say, else the last activation or the outputs)."""
    kind = output_kind_for(getattr(layers[-1], "activation", "linear"), reference_outputs, framework,
                           stated=output_kind, hint=output_hint)
    metadata = {**metadata, "output_kind": kind}
    rows = calibration if calibration is not None else reference
    layers, perms = order_hidden_units(layers, rows.values)
    stages = [Stage(stage.description, np.asarray(stage.outputs).reshape(len(reference.values), -1)[:, perm])
              for stage, perm in zip(stages, perms)]
    meta = {**metadata, **({"reference_input_range": reference.source_range} if reference.source_range else {}),
            "hidden_unit_order": f"co-zero groups of {UNIT} from {len(rows.values)} "
                                 f"{'calibration' if calibration is not None else 'reference'} rows"}
    data = encode_model(layers, input_scale=input_scale, metadata=meta, reference_inputs=reference.values,
                        reference_outputs=reference_outputs, atol=atol, rtol=rtol)
    try:
        _core.Engine.from_bytes(data, verify=True)
    except _core.FormatError as e:
        if e.rule != "verification":
            raise
        engine_outputs = _core.Engine.from_bytes(data, verify=False).predict(reference.values, range_check="ignore")
        raise ExportMismatchError(_diagnose(layers, stages, reference.values, framework, atol, rtol, out_path,
                                            str(e), engine_outputs)) from None
    return atomic_write_bytes(out_path, data)


def _diagnose(layers: Sequence[DenseLayer], stages: Sequence[Stage], x: np.ndarray, framework: str, atol: float,
              rtol: float, out_path, loader_message: str, engine_outputs: np.ndarray) -> str:
    nothing = f"Nothing was written to {os.fspath(out_path)}."
    for i, stage in enumerate(stages):
        ours = forward(layers[: i + 1], x)
        want = np.asarray(stage.outputs, np.float64).reshape(ours.shape)
        excess = np.abs(ours - want) - (atol + rtol * np.abs(want))
        if not np.all(excess <= 0):  # a NaN on either side fails too
            worst = float(np.nanmax(np.abs(ours - want)))
            before = f"agree with {framework} up to engine layer {i - 1}, then " if i else ""
            return (f"export refused: the exported layers {before}diverge at engine layer {i}, {stage.description}: "
                    f"max |exported - {framework}| = {worst:.3g} over {len(x)} reference rows (tolerance {atol:g} + "
                    f"{rtol:g}*|y|). That part of the model computes something the exporter did not map; export the "
                    f"model without it, or report it with model.summary(). {nothing}")
    return _float32_or_bug(layers, stages, x, framework, atol, loader_message, engine_outputs, nothing)


def _float32_or_bug(layers, stages, x, framework, atol, loader_message, engine_outputs, nothing) -> str:
    """The layers agree with the framework in float64, the engine's float32 outputs do not: either
    both are float32 roundings of sums too large for the file's tolerance (a model fed raw 0..255
    values, say: logits hundreds of times larger than on 0..1 inputs), or an engine bug. Float32
    rounding it is when the engine is no farther from the exact (float64) answer than a few times
    the framework's own distance from it (two roundings of the same sums, in different orders)."""
    exact = forward(layers, x)
    want = np.asarray(stages[-1].outputs, np.float64).reshape(exact.shape)
    framework_error = float(np.nanmax(np.abs(want - exact)))
    engine_error = float(np.nanmax(np.abs(np.asarray(engine_outputs, np.float64) - exact)))
    if np.isfinite(engine_error) and engine_error <= max(3 * framework_error, atol):
        needed = float(f"{1.5 * (framework_error + engine_error):.1g}")
        fix = (f"pass atol={needed:g} to the export" if needed <= MAX_TOLERANCE else
               f"that is more than a file's tolerance allows ({MAX_TOLERANCE:g}); export a model whose inputs are "
               "scaled (x / 255, input_scale=1/255)")
        return (f"export refused: the engine and {framework} are both float32 roundings of this model's sums and "
                f"differ by more than the file's tolerance (atol {atol:g}): {framework} is {framework_error:.3g} from "
                f"the exact (float64) outputs and the engine {engine_error:.3g}, as sums this large round in float32 "
                f"({loader_message}). To verify the file at that precision, {fix}. {nothing}")
    return (f"export refused: every exported layer agrees with {framework} in the float64 reference, but the engine "
            f"does not ({loader_message}; the engine is {engine_error:.3g} from the exact outputs, {framework} "
            f"{framework_error:.3g}): this is an engine bug, please report it. {nothing}")
