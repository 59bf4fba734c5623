"""Digits drawn the way a person draws them in a paint program: pen strokes of a chosen width on a
canvas of any size, dark on light or light on dark, placed off-centre. They are independent of
MNIST (no MNIST pixel goes into them), so a model that reads them right reads real drawings.

    python tests/drawn_digits.py OUT_DIR     # writes the PNGs the README walkthrough uses
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

Point = Tuple[float, float]


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float, n: int = 48) -> List[Point]:
    """Points on an ellipse from angle `start` to `stop` (degrees; 0 = right, 90 = down)."""
    t = np.radians(np.linspace(start, stop, n))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in t]


# Each digit is a list of strokes; a stroke is a polyline in a unit box (x right, y down).
STROKES = {
    0: [_arc(0.5, 0.5, 0.3, 0.45, 0, 360)],
    1: [[(0.42, 0.18), (0.56, 0.05), (0.52, 0.95)]],
    2: [_arc(0.5, 0.3, 0.3, 0.25, 190, 360) + [(0.2, 0.95), (0.85, 0.95)]],
    3: [_arc(0.45, 0.27, 0.3, 0.22, 210, 450) + _arc(0.45, 0.72, 0.35, 0.23, 270, 490)],
    4: [[(0.2, 0.05), (0.15, 0.6), (0.85, 0.6)], [(0.68, 0.1), (0.66, 0.95)]],
    5: [[(0.8, 0.05), (0.3, 0.05), (0.25, 0.45)] + _arc(0.45, 0.67, 0.35, 0.27, 230, 500)],
    6: [_arc(0.85, 0.65, 0.6, 0.6, 235, 180) + _arc(0.5, 0.7, 0.25, 0.25, 180, 540)],
    7: [[(0.12, 0.05), (0.88, 0.05), (0.42, 0.95)]],
    8: [_arc(0.5, 0.27, 0.23, 0.22, 90, 450), _arc(0.5, 0.72, 0.28, 0.24, -90, 270)],
    9: [_arc(0.5, 0.3, 0.27, 0.25, 0, 360), [(0.77, 0.3), (0.7, 0.95)]],
}


def draw_digit(digit: int, size: int = 400, pen: float = 0.08, dark_on_light: bool = True,
               height: float = 0.6, offset: Tuple[float, float] = (0.05, -0.03),
               colour: Sequence[int] = None) -> np.ndarray:
    """A drawing of `digit` on a `size`x`size` canvas, uint8 grey (or RGB when `colour` is
    given): the digit's height is `height` of the canvas, its pen `pen` of the digit's height,
    its centre moved by `offset` (fractions of the canvas). Drawn at 4x and shrunk, so its edges
    are anti-aliased as a paint program's are."""
    from PIL import Image, ImageDraw

    scale = 4
    big = size * scale
    ink, paper = (0, 255) if dark_on_light else (255, 0)
    canvas = Image.new("L", (big, big), paper)
    draw = ImageDraw.Draw(canvas)
    h = height * big
    w = 0.6 * h
    x0 = (big - w) / 2 + offset[0] * big
    y0 = (big - h) / 2 + offset[1] * big
    width = max(1, int(round(pen * h)))
    for stroke in STROKES[digit]:
        points = [(x0 + x * w, y0 + y * h) for x, y in stroke]
        draw.line(points, fill=ink, width=width, joint="curve")
        for x, y in (points[0], points[-1]):  # round pen ends
            draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=ink)
    grey = np.asarray(canvas.resize((size, size), Image.Resampling.BOX))
    if colour is None:
        return grey
    # Colour ink on the same paper: blend the ink colour in where the grey says there is ink.
    amount = (grey.astype(np.float64) if not dark_on_light else 255.0 - grey) / 255.0
    paper_rgb = np.full(3, paper, np.float64)
    rgb = paper_rgb + amount[..., None] * (np.asarray(colour, np.float64) - paper_rgb)
    return np.rint(rgb).astype(np.uint8)


def distort(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 uint8 digit as people's handwriting varies from MNIST's: rotated up to 25 degrees,
    slanted (shear up to 0.3), 0.8-1.1x its size and up to 3 pixels off-centre, resampled
    bilinearly. MNIST's own preparation centres and sizes every digit, so a model sees these
    variations only in what users bring it."""
    from PIL import Image

    angle, shear, scale = np.radians(rng.uniform(-25, 25)), rng.uniform(-0.3, 0.3), rng.uniform(0.8, 1.1)
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    # Output (x, y) reads input m @ (x, y) + offset: the inverse map, as PIL's AFFINE wants it.
    m = rotate @ np.array([[1.0, shear], [0.0, 1.0]]) / scale
    centre = np.array([13.5, 13.5])
    offset = centre - m @ centre + rng.uniform(-3, 3, 2)
    data = (m[0, 0], m[0, 1], offset[0], m[1, 0], m[1, 1], offset[1])
    image = Image.fromarray(np.asarray(pixels, np.uint8)).transform((28, 28), Image.Transform.AFFINE, data,
                                                                     resample=Image.Resampling.BILINEAR)
    return np.asarray(image)


def main(argv: List[str]) -> int:
    from PIL import Image

    out = Path(argv[0] if argv else "drawn_digits")
    out.mkdir(parents=True, exist_ok=True)
    for digit in range(10):
        for size in (28, 400):
            for dark in (True, False):
                name = f"{digit}_{size}px_{'black-on-white' if dark else 'white-on-black'}.png"
                pen = 0.12 if size == 28 else 0.05
                Image.fromarray(draw_digit(digit, size, pen=pen, dark_on_light=dark)).save(out / name)
    print(f"wrote 40 drawings to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
