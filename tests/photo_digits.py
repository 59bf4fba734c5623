"""Images of digits as people bring them, made offline and reproducibly (a seed per image):

- photographed(): a handwritten digit on paper, photographed. The paper is lit unevenly (a
  brightness gradient across the frame of up to 2.5:1 and a vignette), textured, and the ink is
  grey pencil or pen rather than black; the camera blurs a little, adds sensor noise and saves a
  JPEG. The digit is any 28x28 handwriting given (the MNIST test set is used as the pen, so the
  only difficulty is the photograph), placed anywhere at 35-70% of the frame's height.
- scan(): low-resolution scans of someone else's handwriting, scikit-learn's `load_digits` (UCI
  "optical recognition of handwritten digits": 8x8, 17 grey levels, 43 writers), enlarged to a
  given size, either polarity.
- on_pages(): a small digit on a large page (60-200 px tall on 1200x900 to 4000x3000, either
  polarity, light sensor noise), with its crop: a page must read as its crop does. blank_pages():
  the same pages with nothing on them.
- not_digits(): what is not a digit: photographed blank paper, capital letters in a font, and
  scribbles, through the same camera. A reader should say it is not sure of these.

read() gives a model's probabilities for such images, as `mnist-engine predict` computes them.
"""
from __future__ import annotations

from typing import Iterator, List, Tuple

import numpy as np


def _paper(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Lit paper, 0..1: a tilted plane of light, a vignette and low-frequency texture."""
    from PIL import Image

    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5))  # -0.7..0.7
    bright, dim = rng.uniform(0.75, 0.95), rng.uniform(0.35, 0.6)
    light = (bright + dim) / 2 + (bright - dim) * gradient / 1.0
    vignette = 1 - rng.uniform(0.05, 0.2) * ((x - 0.5) ** 2 + (y - 0.5) ** 2) * 2
    coarse = rng.normal(0, 1, (max(2, h // 24), max(2, w // 24))).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), np.float64)
    return np.clip(light * vignette * (1 + 0.03 * texture), 0, 1)


def _camera(rng: np.random.Generator, scene: np.ndarray) -> np.ndarray:
    """Blur, sensor noise, JPEG: uint8 grey."""
    import io

    from PIL import Image, ImageFilter

    image = Image.fromarray(np.rint(scene * 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    noisy = np.asarray(image, np.float64) + rng.normal(0, rng.uniform(2, 7), scene.shape)
    image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(60, 92)))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))


def _ink_on_paper(rng: np.random.Generator, ink: np.ndarray, h: int = 300, w: int = 400) -> np.ndarray:
    """`ink` (0..1, any size) enlarged to 35-70% of the frame's height, placed anywhere, written
    in grey on lit paper: the scene before the camera."""
    from PIL import Image

    paper = _paper(rng, h, w)
    side = int(h * rng.uniform(0.35, 0.7))
    scale = side / max(ink.shape)
    size = (max(1, int(ink.shape[1] * scale)), max(1, int(ink.shape[0] * scale)))
    big = np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, Image.Resampling.BICUBIC), np.float64)
    big = np.clip(big, 0, 1)
    top = int(rng.integers(0, h - size[1] + 1))
    left = int(rng.integers(0, w - size[0] + 1))
    layer = np.zeros((h, w))
    layer[top: top + size[1], left: left + size[0]] = big
    darkness = rng.uniform(0.55, 0.85)  # pencil to pen: how much light the ink takes away
    return paper * (1 - darkness * layer)


def photographed(digits: np.ndarray, seed: int) -> Iterator[np.ndarray]:
    """One photograph (uint8 grey, 300x400) per 28x28 uint8 digit."""
    rng = np.random.default_rng(seed)
    for digit in digits:
        yield _camera(rng, _ink_on_paper(rng, digit.astype(np.float64) / 255))


PAGES = ((1200, 900), (1600, 1200), (2000, 1500), (4000, 3000))  # (width, height)


def _page(rng: np.random.Generator, w: int, h: int, light: bool) -> np.ndarray:
    """A page, 0..1: one level (a scan, a screenshot) with light sensor noise."""
    return np.clip((0.92 if light else 0.06) + rng.normal(0, rng.uniform(1, 4) / 255, (h, w)), 0, 1)


def on_pages(digits: np.ndarray, seed: int, sizes=PAGES) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(page, crop), uint8 grey, per 28x28 uint8 digit: the digit enlarged to 60-200 px tall
    (MNIST's pen, enlarged with it: 6-30 px), placed anywhere on a page of one of `sizes`, dark on
    light or light on dark; the crop is the same pixels around the digit, a quarter of its height
    of page on every side."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for digit in digits:
        w, h = sizes[int(rng.integers(len(sizes)))]
        light = bool(rng.integers(2))
        page = _page(rng, w, h, light)
        side = int(rng.integers(60, 201))
        ink = np.clip(np.asarray(Image.fromarray(digit.astype(np.float32) / 255).resize(
            (side, side), Image.Resampling.BICUBIC), np.float64), 0, 1)
        margin = side // 4
        top = int(rng.integers(margin, h - side - margin))
        left = int(rng.integers(margin, w - side - margin))
        region = page[top: top + side, left: left + side]
        page[top: top + side, left: left + side] = region * (1 - ink) + (0.05 if light else 0.95) * ink
        crop = page[top - margin: top + side + margin, left - margin: left + side + margin]
        yield np.rint(page * 255).astype(np.uint8), np.rint(crop * 255).astype(np.uint8)


def blank_pages(count: int, seed: int, sizes=PAGES) -> Iterator[np.ndarray]:
    """Pages as on_pages makes them, with nothing on them."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        w, h = sizes[int(rng.integers(len(sizes)))]
        yield np.rint(_page(rng, w, h, bool(rng.integers(2))) * 255).astype(np.uint8)


def scan(images: np.ndarray, size: int, dark_on_light: bool) -> Iterator[np.ndarray]:
    """scikit-learn's 8x8 digits (values 0..16, 16 = ink) as `size`x`size` uint8 images."""
    from PIL import Image

    for image in images:
        ink = np.rint(image / 16 * 255).astype(np.uint8)
        grey = np.asarray(Image.fromarray(ink).resize((size, size), Image.Resampling.BICUBIC))
        yield 255 - grey if dark_on_light else grey


def read(engine, images) -> np.ndarray:
    """`engine`'s probabilities (N, outputs) for images through preprocess_image, as `mnist-engine
    predict` reads them; a blank image (no ink found) is a row of zeros, which no threshold is sure of."""
    import mnist_engine

    rows = []
    for image in images:
        try:
            rows.append(engine.predict_proba(mnist_engine.preprocess_image(image)[None])[0])
        except mnist_engine.NoDigitError:
            rows.append(np.zeros(engine.output_width, np.float32))
    return np.array(rows).reshape(-1, engine.output_width)


def _letter(rng: np.random.Generator, letter: str) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("L", (120, 120), 0)
    font = ImageFont.load_default(size=100)
    ImageDraw.Draw(canvas).text((60, 60), letter, fill=255, font=font, anchor="mm")
    return np.asarray(canvas, np.float64) / 255


def _scribble(rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (120, 120), 0)
    points = [tuple(p) for p in rng.uniform(10, 110, (int(rng.integers(6, 14)), 2))]
    ImageDraw.Draw(canvas).line(points, fill=255, width=8, joint="curve")
    return np.asarray(canvas, np.float64) / 255


def not_digits(count: int, seed: int) -> List[Tuple[str, np.ndarray]]:
    """(kind, photograph) for blank paper, capital letters and scribbles, in turn."""
    rng = np.random.default_rng(seed)
    letters = "ABCDEFGHJKLMNPQRTUVWXYZ"  # not I, O, S: a reader may fairly take them for 1, 0, 5
    found = []
    for i in range(count):
        kind = ("blank", "letter", "scribble")[i % 3]
        if kind == "blank":
            scene = _paper(rng, 300, 400)
        elif kind == "letter":
            scene = _ink_on_paper(rng, _letter(rng, letters[int(rng.integers(len(letters)))]))
        else:
            scene = _ink_on_paper(rng, _scribble(rng))
        found.append((kind, _camera(rng, scene)))
    return found
