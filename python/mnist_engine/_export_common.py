"""What the Keras and scikit-learn exporters share: turning caller-given reference images into the
model's float input domain, and the metadata every export carries."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from . import _core
from .model_file import sample_pixel_inputs
from .reference import scale_pixels

REFERENCE_ROWS = 16


def reference_inputs_for(images: Optional[np.ndarray], width: int, input_scale: float) -> np.ndarray:
    """(R, width) float32 in the model's input domain. uint8 images are raw pixels and get scaled
    exactly as the engine scales them; float images are taken as already scaled."""
    if images is None:
        return sample_pixel_inputs(REFERENCE_ROWS, width, input_scale)
    images = np.asarray(images)
    flat = images.reshape(len(images), -1)
    if flat.shape[1] != width:
        raise ValueError(f"expected reference images with {width} values each, got shape {images.shape}")
    if images.dtype == np.uint8:
        return scale_pixels(flat, input_scale)
    if images.dtype.kind != "f":
        raise TypeError(f"expected uint8 pixels or float reference images, got dtype {images.dtype}")
    return flat.astype(np.float32)


def base_metadata(producer: str, source: str) -> Dict[str, str]:
    return {"producer": producer, "producer_version": _core.__version__, "source": source}
