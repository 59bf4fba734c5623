"""Photos and drawings of digits in, MNIST-style 28x28 pixels out: :func:`preprocess_image`.

MNIST's digits were made by taking each scanned digit's ink, fitting its bounding box into 20x20
pixels (keeping the aspect ratio, anti-aliased) and placing it in a 28x28 field so that its centre
of mass is at the centre; the ink is white (255) on black (0). A model trained on MNIST expects
exactly that, so any other image goes through the same steps first. Two steps MNIST did not need
are added for images from the wild: the polarity (dark ink on light paper, as most drawings are) is
detected and flipped, and a pen much thinner than MNIST's (a 3-pixel line on a 400-pixel canvas
would shrink to a faint hairline) is thickened to MNIST's typical stroke before shrinking.

Needs Pillow (``pip install "mnist-engine[images]"``), imported on first use.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Union

import numpy as np

from ._extras import require

if TYPE_CHECKING:
    from PIL import Image

ImageLike = Union[str, "os.PathLike[str]", np.ndarray, "Image.Image"]

SIDE = 28  # the MNIST field
BOX = 20  # the digit's bounding box is fitted into BOX x BOX inside the field
# MNIST's median pen width, as a fraction of the digit's long side: 0.092 with the estimator of
# _stroke_width over the test set (5th-95th percentile 0.061-0.145). Thinner pens are widened to it.
MNIST_STROKE = 0.09
# Ink that counts for the bounding box and the stroke estimate (on a 0..1 scale after the
# background is removed): faint JPEG ringing and paper texture stay out of the box.
INK_THRESHOLD = 0.25
# The weakest contrast between ink and background that is still a drawing and not a blank page.
MIN_CONTRAST = 0.15
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")


class ImageError(ValueError):
    """An image cannot be turned into a digit: unreadable, blank, or of an unsupported shape."""


def preprocess_image(image: ImageLike, invert: Union[str, bool] = "auto") -> np.ndarray:
    """An image of one handwritten digit as MNIST pixels: uint8, shape (28, 28), white ink on black.

        >>> pixels = mnist_engine.preprocess_image("digit.png")
        >>> mnist_engine.classify(pixels[None])       # a batch of one

    ``image`` is a path (PNG, JPEG, BMP, GIF, TIFF or WebP, any size, colour or grey, transparent
    or not), a Pillow image, or a numpy array: (H, W) grey or (H, W, 3|4) RGB(A), uint8 0..255 or
    float 0..1. ``invert`` says whether the ink is dark on a light background: ``"auto"`` (the
    default) decides from the image's border, ``True`` and ``False`` force it.

    The conversion is MNIST's own (see the module docstring): crop to the ink, thicken a pen far
    thinner than MNIST's, fit the long side into 20 pixels keeping the aspect ratio (Lanczos,
    anti-aliased), and shift the centre of mass to the centre of the 28x28 field. A blank image
    or one that cannot be read raises :class:`ImageError` (a ``ValueError``).
    """
    if invert not in ("auto", True, False):
        raise ValueError(f"expected invert='auto', True or False, got {invert!r}")
    require("PIL.Image", "mnist_engine.preprocess_image")
    try:
        return _preprocess(image, invert)
    except ImageError as e:
        if isinstance(image, (str, os.PathLike)):  # say which of many files it was
            raise ImageError(f"{os.fspath(image)}: {e}") from None
        raise


def _preprocess(image: ImageLike, invert: Union[str, bool]) -> np.ndarray:
    grey = _grey(image)
    dark_ink = _has_light_background(grey) if invert == "auto" else invert
    ink = 1.0 - grey if dark_ink else grey
    ink = _remove_background(ink)
    rows, cols = np.nonzero(ink >= INK_THRESHOLD)
    ink = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    ink = _widen_thin_pen(ink)
    digit = _fit_box(ink)
    return np.rint(_centre_by_mass(digit) * 255).astype(np.uint8)


def _grey(image: ImageLike) -> np.ndarray:
    """(H, W) float64 in 0..1, 1 = white; transparency is laid over a background the ink stands
    out from."""
    if isinstance(image, np.ndarray):
        return _grey_from_array(image)
    from PIL import Image, ImageOps

    if isinstance(image, Image.Image):
        return _grey_from_pil(image)
    path = os.fspath(image)
    if path == "":
        raise FileNotFoundError("expected the path of an image, got an empty path")
    try:
        with Image.open(path, formats=FORMATS) as img:
            img.seek(0)  # a GIF's first frame
            return _grey_from_pil(ImageOps.exif_transpose(img))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"refusing an image this large ({e})") from None
    except Exception as e:  # Pillow reports a bad file with OSError, SyntaxError, ValueError, struct.error...
        raise ImageError(f"expected an image ({', '.join(FORMATS)}), got something Pillow cannot read "
                         f"({type(e).__name__}: {e})") from None


def _grey_from_pil(img: "Image.Image") -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit PNG and TIFF
        return _grey_from_array(np.asarray(img, np.float64) / 65535.0)
    if img.mode == "F":
        return _grey_from_array(np.asarray(img, np.float64))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return _grey_from_array(np.asarray(img.convert("RGBA")))
    return _grey_from_array(np.asarray(img.convert("L")))


def _grey_from_array(a: np.ndarray) -> np.ndarray:
    shape_ok = a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))
    if not shape_ok or a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(f"expected an image array shaped (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.dtype == np.uint8:
        x = a.astype(np.float64) / 255.0
    elif a.dtype == np.bool_:
        x = a.astype(np.float64)
    elif a.dtype.kind == "f":
        x = a.astype(np.float64)
        if not np.isfinite(x).all():
            raise ImageError("expected float pixels in 0..1, got NaN or inf")
        if x.min() < 0 or x.max() > 1:
            raise ImageError(f"expected float pixels in 0..1, got values {x.min():g}..{x.max():g}")
    else:
        raise ImageError(f"expected uint8, bool or float pixels, got dtype {a.dtype}")
    if x.ndim == 2:
        return x
    if x.shape[2] == 1:
        return x[:, :, 0]
    grey = x[:, :, :3] @ np.array([0.299, 0.587, 0.114])  # ITU-R 601, as Pillow
    if x.shape[2] == 4:
        alpha = x[:, :, 3]
        if alpha.min() < 1.0:
            # A drawing on a transparent canvas: what is painted is the ink. Lay it over white if
            # it is dark, over black if it is light, so it keeps standing out.
            painted = alpha.sum()
            ink_is_dark = painted == 0 or (grey * alpha).sum() / painted < 0.5
            grey = alpha * grey + (1.0 - alpha) * (1.0 if ink_is_dark else 0.0)
    return grey


def _border(x: np.ndarray) -> np.ndarray:
    """The pixels of the outer frame, about 3% of the side thick: the background of nearly any
    picture of one digit, which rarely touches the frame."""
    t = max(1, min(x.shape) // 32)
    return np.concatenate([x[:t].ravel(), x[-t:].ravel(), x[:, :t].ravel(), x[:, -t:].ravel()])


def _has_light_background(grey: np.ndarray) -> bool:
    return bool(np.median(_border(grey)) > 0.5)


def _remove_background(ink: np.ndarray) -> np.ndarray:
    """Ink on a 0..1 scale: the background level (grey paper, a dark screen) goes to 0 and the
    strongest ink to 1."""
    background = float(np.median(_border(ink)))
    peak = float(ink.max())
    if peak - background < MIN_CONTRAST:
        raise ImageError(f"found no digit: expected ink that stands out from the background by at least "
                         f"{MIN_CONTRAST:.0%}, got a contrast of {max(peak - background, 0.0):.0%} (a blank image?)")
    return np.clip((ink - background) / (peak - background), 0.0, 1.0)


def _stroke_width(ink: np.ndarray) -> float:
    """The pen's width in pixels: twice the ink area over the length of its outline (a stroke of
    width w and length L has area wL and two sides of length L). Outline edges are counted between
    pixels, so the estimate means the same at 28 pixels and at 4000."""
    mask = np.pad(ink >= 0.5, 1)
    edges = np.count_nonzero(mask[1:] != mask[:-1]) + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
    return 2.0 * np.count_nonzero(mask) / max(edges, 1)


def _widen_thin_pen(ink: np.ndarray) -> np.ndarray:
    target = MNIST_STROKE * max(ink.shape)
    width = _stroke_width(ink)
    if width >= 0.75 * target:  # MNIST's own pens vary this much; leave them be
        return ink
    grow = int(round(target - width))
    return _dilate(np.pad(ink, grow), grow + 1) if grow >= 1 else ink


def _dilate(x: np.ndarray, size: int) -> np.ndarray:
    """Grey dilation by a size x size square, which widens a stroke by size - 1 pixels. A square is
    two 1-D window maxima, and a window maximum of any length is two overlapping power-of-two ones,
    built by doubling: O(log size) numpy passes even for the 80-pixel windows a 4000-pixel scan
    needs (Pillow's MaxFilter is O(size^2) per pixel)."""
    for axis in (0, 1):
        x = np.moveaxis(x, axis, 0)
        window, span = x, 1
        while span * 2 <= size:
            window = np.maximum(window[:-span], window[span:])  # max over [i, i + 2 span)
            span *= 2
        rest = size - span  # [i, i + size) = [i, i + span) and [i + rest, i + rest + span)
        window = np.maximum(window[:len(window) - rest], window[rest:])
        # centre the window: output i covers input [i - size // 2, i - size // 2 + size)
        before = size // 2
        out = np.zeros_like(x)
        out[before: before + len(window)] = window
        x = np.moveaxis(out, 0, axis)
    return x


def _fit_box(ink: np.ndarray) -> np.ndarray:
    """The ink scaled so that its long side is BOX pixels, keeping the aspect ratio. Lanczos on a
    float image: anti-aliased when shrinking, smooth when growing a small drawing."""
    from PIL import Image

    h, w = ink.shape
    scale = BOX / max(h, w)
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    resized = Image.fromarray(ink.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    out = np.clip(np.asarray(resized, np.float64), 0.0, 1.0)
    peak = out.max()
    return out / peak if peak > 0 else out


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """`digit` placed in the 28x28 field with its centre of mass on the field's centre (13.5,
    13.5), shifted by whole pixels as MNIST was, and never pushed past the frame."""
    h, w = digit.shape
    total = digit.sum()
    rows, cols = np.indices(digit.shape)
    cy = (rows * digit).sum() / total if total > 0 else (h - 1) / 2
    cx = (cols * digit).sum() / total if total > 0 else (w - 1) / 2
    top = int(np.clip(round((SIDE - 1) / 2 - cy), 0, SIDE - h))
    left = int(np.clip(round((SIDE - 1) / 2 - cx), 0, SIDE - w))
    field = np.zeros((SIDE, SIDE))
    field[top: top + h, left: left + w] = digit
    return field
