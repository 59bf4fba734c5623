"""Encoded images straight to a model's infer endpoint, for a user with a photo or a drawing and
no Python: a plain POST of an ``image/*`` body (one image), or ``multipart/form-data`` with one
image per file part, as a browser form or ``curl -F`` sends them.

    curl --data-binary @seven.png -H "Content-Type: image/png" localhost:8000/v2/models/reader/infer

Each image is read as ``mnist-engine predict`` reads a file (images.preprocess_image, Pillow's
decompression-bomb limit included), and the answer is what predict says of it (answers.describe):
the digit, or null and ``"sure": false`` (with the reason for a blank image), the confidence, and
every output's probability. Reading runs on a thread, after the body was read within the body
budget; the rows then wait in the model's queue and batcher as any request's do.
"""
from __future__ import annotations

import json
from typing import AsyncIterator, Dict, List, Tuple

import numpy as np

from .. import answers
from ..images import ImageError, NoDigitError, preprocess_image
from .protocol import RequestError

MULTIPART = "multipart/form-data"


def _media_type(content_type: str) -> str:
    """'image/png' of 'Image/PNG; charset=x': the type without its parameters, lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def is_image_request(content_type: str) -> bool:
    kind = _media_type(content_type)
    return kind.startswith("image/") or kind == MULTIPART


async def image_parts(body: bytes, headers, max_images: int) -> List[Tuple[str, bytes]]:
    """(name, encoded bytes) of each image in the body: the body itself for ``image/*``; each file
    part of a multipart form (python-multipart, through Starlette's parser). RequestError 400 for
    a form without files, or with more than `max_images`."""
    if _media_type(headers.get("content-type", "")) != MULTIPART:
        return [("image", body)]
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(headers, once(), max_files=max_images, max_fields=max_images).parse()
    except MultiPartException as e:
        raise RequestError(400, f"expected a multipart form of image files, got one that cannot be read "
                                f"({e})") from None
    parts = []
    for name, value in form.multi_items():
        if not isinstance(value, str):  # an UploadFile
            parts.append((value.filename or name, await value.read()))
            await value.close()
    if not parts:
        raise RequestError(400, "expected at least one image file in the multipart form, got none")
    return parts


def read_images(parts: List[Tuple[str, bytes]]) -> Tuple[np.ndarray, Dict[int, str]]:
    """The 28x28 pixels of each image with a digit in it, stacked as (N, 784) uint8 rows, and
    {position: why} of the blank ones. RequestError 400 naming the first image that cannot be read."""
    pixels, blank = [], {}
    for i, (name, data) in enumerate(parts):
        try:
            pixels.append(preprocess_image(data).reshape(-1))
        except NoDigitError as e:
            blank[i] = str(e)
        except ImageError as e:
            raise RequestError(400, f"{name}: {e}") from None
    rows = np.stack(pixels) if pixels else np.zeros((0, 28 * 28), np.uint8)
    return rows, blank


def answer_body(model: str, version: str, parts: List[Tuple[str, bytes]], blank: Dict[int, str],
                probabilities: np.ndarray, names: List[str], reject_class, min_confidence: float) -> bytes:
    """The JSON answer: one result per image, in the order they came."""
    sure = answers.sure(probabilities, min_confidence, reject_class)
    results, row = [], 0
    for i, (name, _) in enumerate(parts):
        if i in blank:
            results.append({"name": name, "digit": None, "sure": False, "confidence": 0.0, "top": [],
                            "reason": blank[i]})
            continue
        results.append({"name": name, **answers.describe(probabilities[row], names, sure[row], len(names)),
                        "probabilities": [float(p) for p in probabilities[row]]})
        row += 1
    return json.dumps({"model_name": model, "model_version": version, "min_confidence": min_confidence,
                       "results": results}).encode()
