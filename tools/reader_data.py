"""Training data for the image reader (tools/train.py --arch reader): MNIST's digits, the same
digits as people's images vary from MNIST's, and things that are not digits (letters, scribbles,
filled shapes), class 10.

Everything a user's image goes through preprocess_image before the model sees it, so whatever
here stands for a user's image (a low-resolution scan, a letter, a scribble) goes through it too.
Nothing here is drawn from the sets the reader is measured on (tests/photo_digits.py): the
letters are set in matplotlib's fonts (DejaVu, STIX, Computer Modern), the held-out ones in
Pillow's own; the scans are MNIST digits made coarse, the held-out ones scikit-learn's writers.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from drawn_digits import distort  # noqa: E402  (the one definition of "handwriting unlike MNIST's")

NOT_A_DIGIT = 10
# Letters a reader may fairly take for a digit are left out: I, O, S; i, j, l, o, q, s, z, g, b.
LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZacdefhkmnprtuvwxy"
FONT_FILES = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
              "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf",
              "DejaVuSansMono-Bold.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
              "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf", "cmb10.ttf"]


def fonts() -> List[Callable]:
    """A maker of each font at a size: the TrueType files matplotlib ships (a dependency of the
    test extra), so the letters are the same on every machine."""
    import matplotlib
    from PIL import ImageFont

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [lambda size, f=folder / name: ImageFont.truetype(str(f), size) for name in FONT_FILES]


def letter(rng: np.random.Generator, makers: List[Callable]) -> np.ndarray:
    """A letter, light on dark, in a random font and size, rotated up to 20 degrees."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (160, 160), 0)
    font = makers[int(rng.integers(len(makers)))](int(rng.integers(70, 120)))
    ImageDraw.Draw(canvas).text((80, 80), LETTERS[int(rng.integers(len(LETTERS)))], fill=255, font=font, anchor="mm")
    return np.asarray(canvas.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BILINEAR))


def strokes(rng: np.random.Generator) -> np.ndarray:
    """A zigzag, a spiral, crossing lines or a filled shape, light on dark. preprocess_image fits
    any ink into MNIST's 20-pixel box, so a dot arrives as a filled disc, which an MNIST model
    reads as a confident 0 unless it has seen such blobs as "not a digit"."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (160, 160), 0)
    kind = int(rng.integers(4))
    if kind == 3:
        draw = ImageDraw.Draw(canvas)
        # Roundish (at most 2:1): a long thin bar after preprocess_image is a fair 1, not a blob.
        side = rng.uniform(15, 60)
        half = np.array([side, side * rng.uniform(0.5, 1.2)])
        box = [80 - half[0], 80 - half[1], 80 + half[0], 80 + half[1]]
        shape = int(rng.integers(3))
        if shape == 0:
            draw.ellipse(box, fill=255)
        elif shape == 1:
            draw.rectangle(box, fill=255)
        else:
            corners = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
            draw.polygon([(80 + half[0] * np.cos(a), 80 + half[1] * np.sin(a)) for a in angles], fill=255)
        return np.asarray(canvas.rotate(rng.uniform(0, 90), resample=Image.Resampling.BILINEAR))
    if kind == 0:
        points = [(x, rng.uniform(30, 130)) for x in np.linspace(20, 140, int(rng.integers(3, 8)))]
    elif kind == 1:
        t = np.linspace(0, rng.uniform(3, 12), 40)
        points = list(zip(80 + (10 + 6 * t) * np.cos(t), 80 + (10 + 6 * t) * np.sin(t)))
    else:
        points = [tuple(rng.uniform(20, 140, 2)) for _ in range(int(rng.integers(4, 9)))]
    ImageDraw.Draw(canvas).line(points, fill=255, width=int(rng.integers(4, 14)), joint="curve")
    return np.asarray(canvas)


def coarse(rng: np.random.Generator, digit: np.ndarray) -> np.ndarray:
    """`digit` as a low-resolution scan: averaged down to 7-12 pixels a side, 17 grey levels,
    enlarged again to 64 (the way old scanners and thumbnails lose a digit's detail)."""
    from PIL import Image

    side = int(rng.integers(7, 13))
    small = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BOX), np.float64)
    levels = np.rint(small / 255 * 16) / 16 * 255
    return np.asarray(Image.fromarray(levels.astype(np.uint8)).resize((64, 64), Image.Resampling.BICUBIC))


def _either_polarity(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    return 255 - image if rng.random() < 0.5 else image


def enlarged(rng: np.random.Generator, digit: np.ndarray) -> np.ndarray:
    """`digit` (a varied one) as a larger picture of it: 48-200 pixels a side, on a margin, blurred
    a little and noisy, either polarity, the way drawings and photographs reach preprocess_image.
    Without these, every image that went through preprocess_image would be a letter or a scribble,
    and its look (refitted, recentred, a widened pen) would itself read as "not a digit"."""
    from PIL import Image, ImageFilter

    side = int(rng.integers(48, 201))
    margin = int(side * rng.uniform(0.05, 0.4))
    big = Image.fromarray(varied(rng, digit)).resize((side, side), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (side + 2 * margin, side + 2 * margin), 0)
    canvas.paste(big, (margin, margin))
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0, side / 60)))
    noisy = np.asarray(canvas, np.float64) + rng.normal(0, rng.uniform(0, 12), (canvas.height, canvas.width))
    return _either_polarity(rng, np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def varied(rng: np.random.Generator, digit: np.ndarray) -> np.ndarray:
    """`digit` (28x28) written differently: slanted, rotated, resized and moved (half the time),
    a thicker pen (30%), blurred (half)."""
    from PIL import Image, ImageFilter

    image = Image.fromarray(distort(digit, rng) if rng.random() < 0.5 else digit)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.MaxFilter(3))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    pixels = np.asarray(image, np.float32)
    return np.rint(pixels / max(float(pixels.max()), 1.0) * 255).astype(np.uint8)


def _preprocessed(image: np.ndarray):
    """What the reader would see of `image`: preprocess_image's 28x28, or None where it finds no ink."""
    import mnist_engine

    try:
        return mnist_engine.preprocess_image(image)
    except mnist_engine.NoDigitError:
        return None


def training_set(pixels: np.ndarray, labels: np.ndarray, rng: np.random.Generator, negatives: int,
                 coarse_share: float = 0.15, enlarged_share: float = 0.35) -> Tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, 28, 28), int labels): `pixels` as they are, then each again: varied, or (a
    `coarse_share` of them) a low-resolution scan, or (an `enlarged_share`) a larger picture, the
    last two through preprocess_image; then `negatives` letters, scribbles and filled shapes
    (class 10), every one through preprocess_image, either polarity."""
    again = []
    for digit in pixels:
        draw = rng.random()
        if draw < coarse_share:
            seen = _preprocessed(coarse(rng, digit))
        elif draw < coarse_share + enlarged_share:
            seen = _preprocessed(enlarged(rng, digit))
        else:
            seen = None
        again.append(seen if seen is not None else varied(rng, digit))
    makers = fonts()
    others = [_preprocessed(_either_polarity(rng, letter(rng, makers) if i % 2 else strokes(rng)))
              for i in range(negatives)]
    others = [o for o in others if o is not None]
    x = np.concatenate([pixels, np.stack(again), np.stack(others)])
    y = np.concatenate([labels, labels, np.full(len(others), NOT_A_DIGIT)]).astype(np.int64)
    return x, y
