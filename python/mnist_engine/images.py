"""Photos and drawings of digits in, MNIST-style 28x28 pixels out: :func:`preprocess_image`.

MNIST's digits were made by taking each scanned digit's ink, fitting its bounding box into 20x20
pixels (keeping the aspect ratio, anti-aliased) and placing it in a 28x28 field so that its centre
of mass is at the centre; the ink is white (255) on black (0). A model trained on MNIST expects
exactly that, so any other image goes through the same steps first. Steps MNIST did not need are
added for images from the wild: the polarity (dark ink on light paper, as most drawings are) is
detected and flipped; under uneven light (a photograph) the paper's level is estimated locally, so
a shaded corner is not taken for ink; and a pen much thinner than MNIST's (a 3-pixel line on a
400-pixel canvas would shrink to a faint hairline) is thickened to MNIST's typical stroke before
shrinking. An image already in MNIST's form passes through untouched. docs/IMAGES.md has the
measurements.

Needs Pillow (``pip install "mnist-engine[images]"``), imported on first use.
"""
from __future__ import annotations

import io
import os
import stat
from typing import TYPE_CHECKING, List, Optional, Tuple, Union

import numpy as np

from ._extras import require

if TYPE_CHECKING:
    from PIL import Image

ImageLike = Union[str, "os.PathLike[str]", bytes, np.ndarray, "Image.Image"]

SIDE = 28  # the MNIST field
BOX = 20  # the digit's bounding box is fitted into BOX x BOX inside the field
# MNIST's median pen width, as a fraction of the digit's long side: 0.092 with the estimator of
# _stroke_width over the test set (5th-95th percentile 0.061-0.145). Thinner pens are widened to it.
MNIST_STROKE = 0.09
# Ink that counts for the bounding box and the stroke estimate (on a 0..1 scale after the
# background is removed): faint JPEG ringing and paper texture stay out of the box.
INK_THRESHOLD = 0.25
# Border pixels this close to the paper's level count as paper when deciding whether an image is
# evenly lit (a scan, a drawing: one background level) or not (a photograph: estimated locally).
EVEN_LIGHT = 0.05
# The weakest contrast between ink and background that is still a drawing and not a blank page.
MIN_CONTRAST = 0.15
# The same where the light is uneven (a photograph): the paper's texture and the sensor's noise
# stand out from a locally estimated background by up to 30% (photographed blank paper,
# tests/photo_digits.py: at most 0.30 in 100 photographs), photographed pencil or pen by 32-72%
# (1st percentile 54%).
MIN_CONTRAST_UNEVEN = 0.35
# The least extent, in pixels, of ink that is a digit where it covers too little of the frame for
# the contrast percentile (a small digit on a large page): a speck of dust or a noise cluster
# spans a few pixels, a digit anyone would draw or photograph dozens.
MIN_STROKE_SPAN = 12
# Border pixels (_border) from which the paper's level is a percentile rather than the extreme
# pixel (_evenly_lit): a 1200x900 page's border has 117,000.
ROBUST_BORDER = 100_000
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")


class ImageError(ValueError):
    """An image cannot be turned into a digit: unreadable, blank, or of an unsupported shape."""


class NoDigitError(ImageError):
    """The image was read, but nothing in it stands out from the background as ink: a blank page."""


def preprocess_image(image: ImageLike, invert: Union[str, bool] = "auto", raw: bool = False,
                     save: Union[str, "os.PathLike[str]", None] = None) -> np.ndarray:
    """An image of one handwritten digit as MNIST pixels: uint8, shape (28, 28), white ink on black.

        >>> pixels = mnist_engine.preprocess_image("digit.png")
        >>> mnist_engine.classify(pixels[None])       # a batch of one

    ``image`` is a path (PNG, JPEG, BMP, GIF, TIFF or WebP, any size, colour or grey, transparent
    or not), the bytes of such a file, a Pillow image, or a numpy array: (H, W) grey or
    (H, W, 3|4) RGB(A), uint8 0..255 or float 0..1. ``invert`` says whether the ink is dark on a
    light background: ``"auto"`` (the default) decides from the image's border, ``True`` and
    ``False`` force it.

    The conversion is MNIST's own (see the module docstring): remove the background (estimated
    locally where the light is uneven, as in a photograph), crop to the ink, thicken a pen far
    thinner than MNIST's, fit the long side into 20 pixels keeping the aspect ratio (Lanczos,
    anti-aliased), and shift the centre of mass to the centre of the 28x28 field. An image already
    in MNIST's form (28x28, its ink's box 19-21 pixels on its long side, centred by mass) is
    returned as it is, only its polarity set; ``raw=True`` takes any 28x28 image so. ``save``
    writes the 28x28 result there as a PNG. A blank image or one that cannot be read raises
    :class:`ImageError` (a ``ValueError``).
    """
    if invert not in ("auto", True, False):
        raise ValueError(f"expected invert='auto', True or False, got {invert!r}")
    require("PIL.Image", "mnist_engine.preprocess_image")
    try:
        pixels = _preprocess(image, invert, raw)
    except ImageError as e:
        if isinstance(image, (str, os.PathLike)):  # say which of many files it was
            raise type(e)(f"{os.fspath(image)}: {e}") from None
        raise
    if save is not None:
        save_png(pixels, save)
    return pixels


def save_png(pixels: np.ndarray, path: Union[str, "os.PathLike[str]"]) -> None:
    """Write 28x28 pixels as a grey PNG, atomically: a reader never sees half a file."""
    from PIL import Image

    path = os.fspath(path)
    partial = f"{path}.partial-{os.getpid()}"
    try:
        Image.fromarray(np.asarray(pixels, np.uint8)).save(partial, format="PNG")
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _preprocess(image: ImageLike, invert: Union[str, bool], raw: bool) -> np.ndarray:
    grey = _grey(image)
    dark_ink = _has_light_background(grey) if invert == "auto" else invert
    if grey.shape == (SIDE, SIDE):
        ink = 1.0 - grey if dark_ink else grey
        if raw or _in_mnist_form(ink):
            return np.rint(ink * 255).astype(np.uint8)
    elif raw:
        raise ImageError(f"raw takes a {SIDE}x{SIDE} image as it is, got {grey.shape[0]}x{grey.shape[1]}")
    ink, evenly_lit = _remove_background(grey, dark_ink)
    threshold = INK_THRESHOLD
    if not evenly_lit:
        # A photograph: the ink threshold is Otsu's, and what is left of the background below
        # half of it (paper texture, sensor noise, JPEG ringing) becomes 0, as MNIST's background
        # is; the ink's anti-aliased edges stay.
        threshold = max(INK_THRESHOLD, _otsu(ink))
        floor = threshold / 2
        ink = np.clip((ink - floor) / (1.0 - floor), 0.0, 1.0)
        threshold = (threshold - floor) / (1.0 - floor)
        # Where the paper is dim its noise is amplified as much as the ink: patches of it can pass
        # the threshold away from the digit. Only the digit's strokes (_main_strokes) are kept.
        ink = ink * _main_strokes(ink >= threshold)
    rows, cols = np.nonzero(_without_specks(ink >= threshold))
    ink = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    ink = _widen_thin_pen(ink)
    digit = _fit_box(ink)
    return np.rint(_centre_by_mass(digit) * 255).astype(np.uint8)


def _in_mnist_form(ink: np.ndarray) -> bool:
    """A 28x28 image MNIST's way: the ink's box 19-21 pixels on its long side (every MNIST test
    digit's is 19 or 20) and its centre of mass within 1.2 pixels of the field's centre on each
    axis (MNIST's: within 1). Such an image gains nothing from preprocessing, and resampling it
    again would blur it; a smaller or off-centre drawing is still fitted and centred."""
    mask = ink > 0.1
    if not mask.any():
        return False
    rows, cols = np.nonzero(mask)
    long_side = max(np.ptp(rows), np.ptp(cols)) + 1
    r, c = np.indices(ink.shape)
    total = ink.sum()
    cy, cx = (r * ink).sum() / total, (c * ink).sum() / total
    centre = (SIDE - 1) / 2
    return bool(19 <= long_side <= 21 and abs(cy - centre) <= 1.2 and abs(cx - centre) <= 1.2)


def _grey(image: ImageLike) -> np.ndarray:
    """(H, W) float64 in 0..1, 1 = white; transparency is laid over a background the ink stands
    out from."""
    if isinstance(image, np.ndarray):
        return _grey_from_array(image)
    from PIL import Image

    if isinstance(image, Image.Image):
        return _grey_from_pil(image)
    if isinstance(image, (bytes, bytearray, memoryview)):  # a file's bytes, as a server receives them
        if len(image) == 0:
            raise ImageError(f"expected an image ({', '.join(FORMATS)}), got 0 bytes")
        return _decode(io.BytesIO(image))
    path = os.fspath(image)
    if path == "":
        raise FileNotFoundError("expected the path of an image, got an empty path")
    if _is_empty_file(path):
        raise ImageError(f"expected an image ({', '.join(FORMATS)}), got an empty file (0 bytes)")
    return _decode(path)


def _decode(source) -> np.ndarray:
    """A path's or a byte stream's image, grey (its first frame, turned upright by its EXIF)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(source, formats=FORMATS) as img:
            img.seek(0)  # a GIF's first frame
            return _grey_from_pil(ImageOps.exif_transpose(img))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"refusing an image this large ({e})") from None
    except Exception as e:  # Pillow reports a bad file with OSError, SyntaxError, ValueError, struct.error...
        detail = str(e).replace(repr(source), "these bytes")  # not "<_io.BytesIO object at 0x...>"
        raise ImageError(f"expected an image ({', '.join(FORMATS)}), got something Pillow cannot read "
                         f"({type(e).__name__}: {detail})") from None


def _is_empty_file(path: str) -> bool:
    """A regular file of 0 bytes (a pipe's size says nothing; a missing file is Pillow's to report)."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == 0


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
    """Whether the ink is dark: the border's median is light, on an evenly lit image. Under uneven
    light a dim sheet of paper can have a dark border, so there the ink is what departs furthest
    from the local level (the median of each region), darker or lighter."""
    light = bool(np.median(_border(grey)) > 0.5)
    if min(grey.shape) < 16 or _evenly_lit(grey, brightest=light):
        return light
    residual = grey - _local_level(grey, 50)
    darkest, lightest = np.percentile(residual, [0.5, 99.5])
    return bool(-darkest > lightest)


def _remove_background(grey: np.ndarray, dark_ink: bool) -> Tuple[np.ndarray, bool]:
    """Ink on a 0..1 scale: the background (paper, a screen) goes to 0 and the strongest ink to 1,
    wherever the light falls. The background is estimated locally (_background_level), so a
    lighting gradient or a vignette across a photograph leaves no dark corner that passes for ink.
    Dark ink is measured as the fraction of the paper's local light it takes away (ink reflects a
    fixed part of the light that falls on it); light ink on a dark ground as the excess over it.
    Also returns whether the image was evenly lit (one background level)."""
    paper = _background_level(grey, brightest=dark_ink)
    evenly_lit = bool(np.ptp(paper) == 0)
    if dark_ink:
        ink = 1.0 - grey / np.maximum(paper, 1e-3)
    else:
        ink = grey - paper
    ink = np.clip(ink, 0.0, 1.0)
    # The strongest ink, robustly: a lone noise pixel must not set the scale.
    peak = float(np.percentile(ink, 99.9)) if ink.size >= 1000 else float(ink.max())
    least = MIN_CONTRAST if evenly_lit else MIN_CONTRAST_UNEVEN
    if peak < least and evenly_lit:
        # Ink on less than a thousandth of the frame (a small digit on a large page) moves no
        # percentile: measured on its strokes instead. Not under uneven light: a photograph's
        # noise is amplified where its paper is dim, and patches of it pass for strokes.
        peak = max(peak, _stroke_peak(ink, least))
    if peak < least:
        raise NoDigitError(f"found no digit: expected ink that stands out from the background by at least "
                         f"{least:.0%}, got a contrast of {max(peak, 0.0):.0%} (a blank image?)")
    return np.clip(ink / peak, 0.0, 1.0), evenly_lit


def _background_level(grey: np.ndarray, brightest: bool) -> np.ndarray:
    """The background's level at every pixel: on an evenly lit image (a drawing, a scan) one
    level, the border's median, as MNIST's preparation assumed; under uneven light (a photograph)
    the local paper level, _local_level's 90th percentile (10th, for light ink on a dark ground)."""
    if min(grey.shape) < 16 or _evenly_lit(grey, brightest):
        # Cells are no safer than the border where the ink covers much of the image (a small scan).
        return np.full(grey.shape, float(np.median(_border(grey))))
    return _local_level(grey, 90 if brightest else 10)


def _local_level(grey: np.ndarray, percentile: float) -> np.ndarray:
    """A smooth map of the image's `percentile` level: the image cut into cells an eighth of its
    short side, each cell's percentile, the median of each cell and its eight neighbours kept (a
    cell inside a thick stroke is an outlier among them, and a median follows a gradient without
    bias), then interpolated back to full size."""
    from PIL import Image

    h, w = grey.shape
    cell = max(2, -(-min(h, w) // 8))
    rows, cols = -(-h // cell), -(-w // cell)
    padded = np.pad(grey, ((0, rows * cell - h), (0, cols * cell - w)), mode="edge")
    cells = padded.reshape(rows, cell, cols, cell).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    level = np.median(_neighbourhood(np.percentile(cells, percentile, axis=2), edge=True), axis=0)
    # Cell centres map to pixel centres: resize the grid to the padded size, then crop.
    full = Image.fromarray(level.astype(np.float32)).resize((cols * cell, rows * cell), Image.Resampling.BILINEAR)
    return np.asarray(full, np.float64)[:h, :w]


def _evenly_lit(grey: np.ndarray, brightest: bool) -> bool:
    """Whether the background is one level: a third or more of the border (as _border) lies within
    EVEN_LIGHT of its brightest (darkest, for light ink) level. A scan or a drawing has most of its
    border at the paper's level even where the digit touches the frame (an 8x8 scan enlarged: 66-85%
    of it); a photograph's light drifts across the frame and its noise spreads the rest (0-16%).
    The level is the border's extreme pixel; on a border of ROBUST_BORDER pixels or more (an image
    of a megapixel or so), its 99.9th (0.1th) percentile: there a sensor's light noise puts the
    extreme five deviations out, and a noisy page passed for a photograph."""
    border = _border(grey)
    if border.size >= ROBUST_BORDER:
        paper = np.percentile(border, 99.9 if brightest else 0.1)
    else:
        paper = border.max() if brightest else border.min()
    return bool(np.mean(np.abs(border - paper) < EVEN_LIGHT) >= 1 / 3)


def _main_strokes(mask: np.ndarray) -> np.ndarray:
    """Where the digit is: the largest connected patch of ink, and the patches at least a tenth its
    size that lie within half its size of it (a 5's detached bar, a broken stroke), grown by a cell,
    as a 0/1 map. Found on the mask max-pooled to at most 128 pixels a side, 8-connected."""
    h, w = mask.shape
    factor = max(1, -(-max(h, w) // 128))
    rows, cols = -(-h // factor), -(-w // factor)
    padded = np.pad(mask, ((0, rows * factor - h), (0, cols * factor - w)))
    small = padded.reshape(rows, factor, cols, factor).any(axis=(1, 3))
    labels, sizes, boxes = _components(small)
    if len(sizes) <= 2:
        return np.ones(mask.shape)
    main = int(np.argmax(sizes))
    top, bottom, left, right = boxes[main]
    my, mx = (bottom - top + 1) / 2, (right - left + 1) / 2
    keep = np.zeros(len(sizes), bool)
    for label in range(1, len(sizes)):
        upper, lower, first, last = boxes[label]
        near = upper <= bottom + my and lower >= top - my and first <= right + mx and last >= left - mx
        keep[label] = label == main or (sizes[label] >= sizes[main] / 10 and near)
    grown = np.logical_or.reduce(_neighbourhood(keep[labels]))
    full = np.repeat(np.repeat(grown, factor, axis=0), factor, axis=1)[:h, :w]
    return full.astype(np.float64)


def _components(mask: np.ndarray) -> Tuple[np.ndarray, List[int], List[Optional[Tuple[int, int, int, int]]]]:
    """The mask's 8-connected parts: a label per pixel (0: unset; parts from 1), and each label's
    pixel count and box (top, bottom, left, right), index 0 a placeholder. Walked from the set
    pixels only, so a large, sparse mask costs its set pixels."""
    rows, cols = mask.shape
    labels = np.zeros(mask.shape, np.int32)
    sizes: List[int] = [0]
    boxes: List[Optional[Tuple[int, int, int, int]]] = [None]
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        label = len(sizes)
        labels[start] = label
        stack, members = [start], []
        while stack:
            y, x = stack.pop()
            members.append((y, x))
            for ny in range(max(0, y - 1), min(rows, y + 2)):
                for nx in range(max(0, x - 1), min(cols, x + 2)):
                    if mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = label
                        stack.append((ny, nx))
        ys, xs = zip(*members)
        sizes.append(len(members))
        boxes.append((min(ys), max(ys), min(xs), max(xs)))
    return labels, sizes, boxes


def _stroke_peak(ink: np.ndarray, least: float) -> float:
    """The strength of ink too sparse for a percentile of the whole frame: the 90th percentile of
    its stroke pixels (ink of `least` or more, not specks: _stroke_pixels) in connected strokes
    that span at least MIN_STROKE_SPAN pixels, as a digit does and specks of dust, however far
    apart, do not; else 0."""
    strokes = _stroke_pixels(ink >= least)
    long_strokes = _long_strokes(strokes)
    return float(np.percentile(ink[long_strokes], 90)) if long_strokes.any() else 0.0


def _long_strokes(mask: np.ndarray) -> np.ndarray:
    """The pixels of the mask's 8-connected parts that span MIN_STROKE_SPAN pixels or more."""
    labels, _, boxes = _components(mask)
    long_parts = [label for label, box in enumerate(boxes) if box is not None and
                  max(box[1] - box[0], box[3] - box[2]) + 1 >= MIN_STROKE_SPAN]
    return np.isin(labels, long_parts) if long_parts else np.zeros(mask.shape, bool)


def _stroke_pixels(mask: np.ndarray) -> np.ndarray:
    """The mask less its isolated pixels and pairs (those with fewer than 3 set among their 8
    neighbours). A stroke's pixels, even a 1-pixel line's, have at least 2 set neighbours and
    mostly more."""
    neighbours = np.sum(_neighbourhood(mask.astype(np.uint8)), axis=0) - mask  # the 8 around, not itself
    return mask & (neighbours >= 3)


def _without_specks(mask: np.ndarray) -> np.ndarray:
    """The mask less its specks (_stroke_pixels): noise that passes the threshold here and there
    must not stretch the digit's box."""
    kept = _stroke_pixels(mask)
    return kept if kept.any() else mask


def _neighbourhood(x: np.ndarray, edge: bool = False) -> np.ndarray:
    """The 3x3 neighbourhood of every element of a 2-D array, as a (9, H, W) stack of shifted
    copies (the element itself included); past the border the edge is repeated, or 0."""
    h, w = x.shape
    framed = np.pad(x, 1, mode="edge" if edge else "constant")
    return np.stack([framed[1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def _otsu(ink: np.ndarray) -> float:
    """Otsu's threshold of a 0..1 image: the level that best splits it into two classes (here ink
    and what is left of the background), from a 256-bin histogram."""
    counts, edges = np.histogram(ink, bins=256, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mass = np.cumsum(counts * centres)
    total, total_mass = weight[-1], mass[-1]
    below, above = weight[:-1], total - weight[:-1]
    valid = (below > 0) & (above > 0)
    mean_below = np.divide(mass[:-1], below, out=np.zeros(255), where=valid)
    mean_above = np.divide(total_mass - mass[:-1], above, out=np.zeros(255), where=valid)
    between = np.where(valid, below * above * (mean_below - mean_above) ** 2, -1.0)
    return float(edges[1:][int(np.argmax(between))])


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
