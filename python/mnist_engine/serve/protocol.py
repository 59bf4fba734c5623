"""The Open Inference Protocol (KServe v2) REST messages: decoding an infer request into one numpy
array, encoding the outputs back, and the errors a bad request gets.

Pure functions over bytes and numpy, with no web framework in them, so that every rule here is
tested without a server. The request forms are the protocol's JSON tensors (flat or nested
`data`) and Triton's binary-tensor extension: with an `Inference-Header-Content-Length: n`
header, the body's first n bytes are the JSON and the raw tensors follow in input order, each
`parameters.binary_data_size` bytes long. That is what `tritonclient.http` sends by default.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

# The input types a request may carry: raw pixels as UINT8 (scaled by the model's input_scale,
# exactly like Engine.predict on uint8), or FP32 values already in the model's input domain.
INPUT_DATATYPES = {"UINT8": np.uint8, "FP32": np.float32}
_NUMPY_DATATYPES = {np.dtype(v): k for k, v in INPUT_DATATYPES.items()}


class RequestError(Exception):
    """A request the server refuses: `status` is the HTTP status, the message says what was expected
    and what came. `close` asks for the connection to be closed after the answer: the body was not
    read to its end, so the connection cannot carry another request."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status = status
        self.close = close

    @property
    def headers(self) -> Dict[str, str]:
        return {"Connection": "close"} if self.close else {}


@dataclass(frozen=True)
class ModelSignature:
    """What a served model takes and gives, as the metadata endpoint reports it."""

    name: str
    input_width: int
    output_width: int
    output_name: str
    version: str = "1"
    reject_class: Optional[int] = None  # the output that means "not a digit" (Engine.reject_class)
    output_kind: str = "probabilities"  # Engine.output_kind: what the model's own output is
    pixels: bool = True  # Engine.input_kind == "pixels": UINT8 rows are accepted (a model of features: FP32 only)

    @property
    def input_datatypes(self) -> List[str]:
        return sorted(INPUT_DATATYPES) if self.pixels else ["FP32"]

    @property
    def output_names(self) -> List[str]:
        """The model's own output, then "probabilities" where that is another thing (log-probabilities,
        logits: Engine.to_probabilities), for clients that show or threshold a probability."""
        extra = self.output_kind not in ("probabilities", "values") and self.output_name != PROBABILITIES
        return [self.output_name, *([PROBABILITIES] if extra else [])]

    @property
    def input_shapes(self) -> List[List[int]]:
        """(N, width), and (N, 28, 28) when the width is an MNIST image's 784."""
        side = math.isqrt(self.input_width)
        square = [[-1, side, side]] if side * side == self.input_width and side > 1 else []
        return [[-1, self.input_width], *square]

    def metadata(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "mnist_engine",
            "inputs": [{"name": "input", "datatype": "UINT8" if self.pixels else "FP32",
                        "shape": self.input_shapes[-1]}],
            "outputs": [{"name": name, "datatype": "FP32", "shape": [-1, self.output_width]}
                        for name in self.output_names],
            # The protocol's metadata has one datatype and shape per input; these are the others accepted.
            "parameters": {"input_datatypes": self.input_datatypes, "input_shapes": self.input_shapes,
                           "output_kind": self.output_kind,
                           **({"reject_class": self.reject_class} if self.reject_class is not None else {})},
        }


# The output every classifier offers beside its own when that is not probabilities already.
PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class InferRequest:
    rows: np.ndarray  # (N, input_width), uint8 or float32, C-contiguous
    request_id: Optional[str]
    binary_output: bool
    outputs: Tuple[str, ...] = ()  # the outputs asked for, in order; () = the model's own


def _loads(data: bytes, what: str) -> Dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"{what} is not valid JSON ({e})") from None
    except RecursionError:  # thousands of nested arrays: Python's parser recurses per level
        raise RequestError(400, f"{what} nests its JSON too deeply; the data may be flat or one array per "
                                "row") from None
    except ValueError as e:  # an integer of more than 4300 digits (int_max_str_digits)
        raise RequestError(400, f"{what} holds a number too long to read ({e})") from None
    if not isinstance(value, dict):
        raise RequestError(400, f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _header_length(header: Optional[str], body_length: int) -> Optional[int]:
    if header is None:
        return None
    try:
        length = int(header)
    except ValueError:
        raise RequestError(400, f"Inference-Header-Content-Length must be an integer, got {header[:40]!r}") from None
    if not 0 < length <= body_length:
        raise RequestError(400, f"Inference-Header-Content-Length is {length}, but the body has {body_length} bytes")
    return length


def _shape_of(tensor: Dict[str, Any], signature: ModelSignature) -> Tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise RequestError(400, f"input 'shape' must be a list of integers, got {json.dumps(shape)[:80]}")
    allowed = signature.input_shapes
    fits = any(len(shape) == len(a) and all(w == -1 or w == d for w, d in zip(a, shape)) for a in allowed)
    if not fits or shape[0] < 1:
        expected = " or ".join("[N, " + ", ".join(map(str, a[1:])) + "]" for a in allowed)
        raise RequestError(400, f"input shape {shape} is not supported; expected {expected} with N >= 1")
    return tuple(shape)


def _json_data(data: Any, datatype: str, count: int) -> np.ndarray:
    """The `data` of a JSON tensor, flat or nested, as a flat array of `count` values."""
    if not isinstance(data, list):
        raise RequestError(400, f"input 'data' must be a JSON array, got {type(data).__name__}")
    try:
        # float64 first: every JSON number fits, and the checks below see the values as sent.
        values = np.asarray(data, dtype=np.float64).reshape(-1)
    except (ValueError, TypeError, OverflowError):  # OverflowError: an integer past float64's range
        raise RequestError(400, "input 'data' must be an array of numbers (nested lists of equal length are "
                                "fine)") from None
    if values.size != count:
        raise RequestError(400, f"input 'data' has {values.size} values; its shape needs {count}")
    if datatype == "UINT8":
        if not np.all((values >= 0) & (values <= 255) & (values == np.floor(values))):
            raise RequestError(400, "UINT8 input 'data' must be integers 0..255")
        return values.astype(np.uint8)
    if not np.all(np.abs(values) <= np.finfo(np.float32).max):  # NaN fails this too
        raise RequestError(400, "FP32 input 'data' must be finite numbers within float32's range (no NaN or inf)")
    return values.astype(np.float32)


def _binary_data(raw: memoryview, datatype: str, count: int) -> np.ndarray:
    itemsize = np.dtype(INPUT_DATATYPES[datatype]).itemsize
    if len(raw) != count * itemsize:
        raise RequestError(400, f"binary input has {len(raw)} bytes; its shape needs {count * itemsize} "
                                f"({count} {datatype} values)")
    values = np.frombuffer(raw, dtype=np.dtype(INPUT_DATATYPES[datatype]).newbyteorder("<")).astype(
        INPUT_DATATYPES[datatype])
    if datatype == "FP32" and not np.all(np.isfinite(values)):
        raise RequestError(400, "FP32 input data must be finite (no NaN or inf)")
    return values


def decode_infer_request(body: bytes, header_length: Optional[str], signature: ModelSignature) -> InferRequest:
    """One infer request's body (and its Inference-Header-Content-Length header, if any) as the
    rows to predict. Raises RequestError for anything else."""
    length = _header_length(header_length, len(body))
    request = _loads(body[:length] if length is not None else body, "the request body" if length is None
                     else "the request's JSON header")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        got = f"{len(inputs)} inputs" if isinstance(inputs, list) else f"{type(inputs).__name__}"
        raise RequestError(400, f"'inputs' must be a list of exactly one tensor object; got {got}")
    tensor = inputs[0]
    datatype = tensor.get("datatype")
    if datatype not in signature.input_datatypes:
        why = "" if datatype not in INPUT_DATATYPES else " (this model takes features, not pixels)"
        raise RequestError(400, f"input datatype {json.dumps(datatype)[:40]} is not supported{why}; expected one of "
                                f"{', '.join(signature.input_datatypes)}")
    shape = _shape_of(tensor, signature)
    count = math.prod(shape)  # Python integers: np.prod wraps in int64, and a wrapped count could pass
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(400, "input 'parameters' must be a JSON object")
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if length is None:
            raise RequestError(400, "input has parameters.binary_data_size but the request has no "
                                    "Inference-Header-Content-Length header")
        if not isinstance(binary_size, int) or binary_size != len(body) - length:
            raise RequestError(400, f"input parameters.binary_data_size is {binary_size}, but {len(body) - length} "
                                    "bytes follow the JSON header")
        flat = _binary_data(memoryview(body)[length:], datatype, count)
    else:
        if length is not None and length != len(body):
            raise RequestError(400, f"{len(body) - length} bytes follow the JSON header, but no input declares "
                                    "parameters.binary_data_size")
        if "data" not in tensor:
            raise RequestError(400, "input has neither 'data' nor parameters.binary_data_size")
        flat = _json_data(tensor["data"], datatype, count)
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(400, f"'id' must be a string, got {type(request_id).__name__}")
    names, binary = _requested_outputs(request, signature)
    return InferRequest(np.ascontiguousarray(flat.reshape(shape[0], signature.input_width)), request_id, binary,
                        names)


def _requested_outputs(request: Dict[str, Any], signature: ModelSignature) -> Tuple[Tuple[str, ...], bool]:
    """The outputs a request asks for, in its order (none named: the model's own), and whether
    they come back as binary tensors."""
    outputs = request.get("outputs")
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(400, "request 'parameters' must be a JSON object")
    binary = bool(parameters.get("binary_data_output", False))
    if outputs is None:
        return (signature.output_name,), binary
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise RequestError(400, "'outputs' must be a list of objects")
    names = []
    for output in outputs:
        name = output.get("name")
        if name not in signature.output_names:
            raise RequestError(400, f"output {json.dumps(name)[:40]} does not exist; this model's outputs are "
                                    f"{', '.join(map(repr, signature.output_names))}")
        if name in names:
            raise RequestError(400, f"output {name!r} is asked for twice")
        names.append(name)
        binary = bool((output.get("parameters") or {}).get("binary_data", binary))
    return tuple(names) or (signature.output_name,), binary


def encode_infer_response(outputs: np.ndarray, request: InferRequest, signature: ModelSignature,
                          to_probabilities: Callable[[np.ndarray], np.ndarray]) -> Tuple[bytes, Optional[int]]:
    """The response body, and the JSON header's length when the outputs follow it as binary.
    `outputs` are the model's own; `to_probabilities` (Engine.to_probabilities) makes the
    "probabilities" output of a model whose own output is something else."""
    arrays = [outputs if name == signature.output_name else to_probabilities(outputs)
              for name in request.outputs or (signature.output_name,)]
    tensors: List[Dict[str, Any]] = [{"name": name, "datatype": "FP32", "shape": list(array.shape)}
                                     for name, array in zip(request.outputs or (signature.output_name,), arrays)]
    response: Dict[str, Any] = {"model_name": signature.name, "model_version": signature.version,
                                "outputs": tensors}
    if request.request_id is not None:
        response["id"] = request.request_id
    if request.binary_output:
        raws = [np.ascontiguousarray(array, dtype="<f4").tobytes() for array in arrays]
        for tensor, raw in zip(tensors, raws):
            tensor["parameters"] = {"binary_data_size": len(raw)}
        header = json.dumps(response, separators=(",", ":")).encode()
        return header + b"".join(raws), len(header)
    # float32 -> Python float is exact, and repr round-trips: a JSON client gets the same bits back.
    for tensor, array in zip(tensors, arrays):
        tensor["data"] = array.reshape(-1).tolist()
    return json.dumps(response, separators=(",", ":")).encode(), None


def datatype_of(array: np.ndarray) -> str:
    """The protocol's name for a request array's dtype (the inverse of INPUT_DATATYPES)."""
    return _NUMPY_DATATYPES[array.dtype]


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def output_name(output_kind: str) -> str:
    """The name of a model's own output: what it is (Engine.output_kind), 'output' for values."""
    return "output" if output_kind == "values" else output_kind
