"""Experiment for issue 25's "not sure": can a convnet with an 11th class, "not a digit", say it
of letters and scribbles it never saw, without doubting real digits? Trains one (keras-io's
Simple MNIST convnet with 11 outputs) and prints its figures; writes nothing.

    python tools/reject_class_experiment.py [--epochs 8] [--negatives 12000] [--seed 0]

Training data:
- MNIST's 60,000 training digits as they are.
- Another 60,000 augmented ones: half are rotated, slanted, resized and moved (drawn_digits.distort),
  30% are thickened by a 3x3 max filter, and half are blurred (σ 0.3-1.2).
- Negatives (class 10), through preprocess_image:
  - letters in 9 DejaVu fonts (A-Z and a-z, less those a reader may fairly take for a digit: I, O,
    S; i, j, l, o, q, s, z, g), rotated up to 20 degrees;
  - zigzags, spirals and crossing lines.

Test data, never trained on:
- MNIST test, for accuracy;
- tests/photo_digits.py's photographed digits and scikit-learn's scans;
- its photographed letters in Pillow's own font, its scribbles and its blank paper.
"Not sure" is class 10, or a top probability below 0.5, or a blank preprocess_image refuses.

Measured (2026-12-07, this script as it stands: 8 epochs, seed 0, ~3 minutes on 2 cores; the bundled
convnet's figures in brackets, docs/IMAGES.md):
- MNIST accuracy 98.8% [99.1], not sure 0.7% [0.1].
- Photos 98.3% [98.7], not sure 1.7% [0.3].
- Scans at 64 px 93.2% [91.2-91.5], not sure 3.1% [3.7-4.2].
- Not sure of letters 99% [2], scribbles 83% [6], blank paper 100% [100].
The held-out letters are typeset in another font, not handwritten (no handwritten letters are
available offline). Before this becomes the image default it needs: a tools/train.py recipe, a
bundled model whose 11th class the CLI and the page read as "not sure", tests, and fewer doubts
about real digits (photos and scans are above the 1% target).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import mnist_engine  # noqa: E402
from drawn_digits import distort  # noqa: E402
from photo_digits import not_digits, photographed, scan  # noqa: E402

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf",
         "DejaVuSans-Oblique.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansCondensed-Bold.ttf",
         "DejaVuSans-ExtraLight.ttf"]
LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZabcdefhkmnprtuvwxy"


def letter(rng: np.random.Generator, fonts) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (160, 160), 0)
    font = fonts[int(rng.integers(len(fonts)))](int(rng.integers(70, 120)))
    ImageDraw.Draw(canvas).text((80, 80), LETTERS[int(rng.integers(len(LETTERS)))], fill=255, font=font, anchor="mm")
    return np.asarray(canvas.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BILINEAR))


def strokes(rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (160, 160), 0)
    kind = int(rng.integers(3))
    if kind == 0:  # a zigzag
        points = [(x, rng.uniform(30, 130)) for x in np.linspace(20, 140, int(rng.integers(3, 8)))]
    elif kind == 1:  # a spiral
        t = np.linspace(0, rng.uniform(3, 12), 40)
        points = list(zip(80 + (10 + 6 * t) * np.cos(t), 80 + (10 + 6 * t) * np.sin(t)))
    else:  # crossing lines
        points = [tuple(rng.uniform(20, 140, 2)) for _ in range(int(rng.integers(4, 9)))]
    ImageDraw.Draw(canvas).line(points, fill=255, width=int(rng.integers(4, 14)), joint="curve")
    return np.asarray(canvas)


def augmented(rng: np.random.Generator, digit: np.ndarray) -> np.ndarray:
    from PIL import Image, ImageFilter

    image = Image.fromarray(distort(digit, rng) if rng.random() < 0.5 else digit)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.MaxFilter(3))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    pixels = np.asarray(image, np.float32)
    return np.rint(pixels / max(float(pixels.max()), 1.0) * 255).astype(np.uint8)


def preprocessed(images):
    """preprocess_image of each, or None where it finds no digit."""
    out = []
    for image in images:
        try:
            out.append(mnist_engine.preprocess_image(image))
        except ValueError:
            out.append(None)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--negatives", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from PIL import ImageFont
    from sklearn.datasets import load_digits

    from mnist_engine.datasets import load_mnist

    rng = np.random.default_rng(args.seed)
    fonts = [lambda size, f=FONT_DIR / name: ImageFont.truetype(str(f), size) for name in FONTS]
    negatives = [p for p in preprocessed(letter(rng, fonts) if i % 2 else strokes(rng) for i in range(args.negatives))
                 if p is not None]
    (x_train, y_train), (x_test, y_test) = load_mnist()
    extra = np.stack([augmented(rng, d) for d in x_train])
    x = np.concatenate([x_train, extra, np.stack(negatives)]).astype("float32")[..., None] / 255
    y = np.concatenate([y_train, y_train, np.full(len(negatives), 10)]).astype("int32")

    import keras

    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
        keras.layers.Dropout(0.5), keras.layers.Dense(11, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=128, epochs=args.epochs, shuffle=True, verbose=2)

    def read(images):
        found = preprocessed(images)
        blank = np.array([p is None for p in found])
        pixels = np.stack([p if p is not None else np.zeros((28, 28), np.uint8) for p in found])
        p = model.predict(pixels.astype("float32")[..., None] / 255, verbose=0)
        return p, ((p.argmax(1) == 10) | (p.max(1) < 0.5) | blank)

    p, unsure = read(list(x_test))
    print(f"MNIST test: {(p.argmax(1) == y_test).mean():.1%} right, not sure of {unsure.mean():.1%}")
    picks = np.linspace(0, len(x_test) - 1, 300).astype(int)
    p, unsure = read(photographed(x_test[picks], seed=7))
    print(f"photos: {(p.argmax(1) == y_test[picks]).mean():.1%} right, not sure of {unsure.mean():.1%}")
    digits = load_digits()
    p, unsure = read(scan(digits.images, 64, True))
    print(f"scans: {(p.argmax(1) == digits.target).mean():.1%} right, not sure of {unsure.mean():.1%}")
    others = not_digits(300, seed=11)
    for kind in ("letter", "scribble", "blank"):
        _, unsure = read([image for k, image in others if k == kind])
        print(f"{kind}s: not sure of {unsure.mean():.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
