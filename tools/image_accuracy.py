"""How well images of digits from outside MNIST are read: preprocess_image, then each bundled model.

    python tools/image_accuracy.py [--photos 300] [--json OUT]

Sets (tests/photo_digits.py makes them; nothing is downloaded but MNIST and scikit-learn's digits):
  photos    handwritten digits photographed on unevenly lit paper (MNIST test digits as the pen)
  scans     scikit-learn's 8x8 digits of 43 other writers, enlarged to 32 and 128 px, both polarities
  mnist     MNIST test digits as 28x28 images, read through preprocess_image, against predict() on
            the same arrays: preprocessing must not cost an image already in MNIST's form anything
  not       blank paper, capital letters and scribbles, photographed: how often each confidence
            threshold says "not sure" of them, against how often it says so of real digits
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import mnist_engine  # noqa: E402
from mnist_engine.datasets import load_mnist  # noqa: E402
from photo_digits import not_digits, photographed, scan  # noqa: E402

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT = 0.5  # mnist-engine predict --min-confidence's default


def read(images, engine) -> np.ndarray:
    """(N, 10) probabilities; an image preprocess_image refuses (no digit found) is a row of zeros."""
    rows = []
    for image in images:
        try:
            rows.append(engine.predict(mnist_engine.preprocess_image(image)[None])[0])
        except ValueError:
            rows.append(np.zeros(10, np.float32))
    return np.array(rows)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--mnist", type=int, default=2000)
    parser.add_argument("--not-digits", type=int, default=90)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from sklearn.datasets import load_digits

    _, (x_test, y_test) = load_mnist()
    picks = np.linspace(0, len(x_test) - 1, args.photos).astype(int)
    digits = load_digits()
    report: Dict[str, Dict[str, float]] = {}
    confidences: Dict[str, List[float]] = {}
    for name in ("mlp512", "convnet"):
        engine = mnist_engine.load(name)
        figures: Dict[str, float] = {}
        p = read(photographed(x_test[picks], seed=7), engine)
        figures["photos"] = float((p.argmax(1) == y_test[picks]).mean())
        digit_confidence = list(p.max(1))
        unsure = {"photos": float((p.max(1) < DEFAULT).mean())}
        for size in (32, 128):
            for dark in (True, False):
                p = read(scan(digits.images, size, dark), engine)
                key = f"scans {size}px {'dark' if dark else 'light'} ink"
                figures[key] = float((p.argmax(1) == digits.target).mean())
                digit_confidence += list(p.max(1))
                unsure[key] = float((p.max(1) < DEFAULT).mean())
        x = x_test[: args.mnist]
        p = read(x, engine)
        figures["mnist via preprocess_image"] = float((p.argmax(1) == y_test[: args.mnist]).mean())
        figures["mnist via predict()"] = float((engine.predict(x).argmax(1) == y_test[: args.mnist]).mean())
        unsure["mnist"] = float((p.max(1) < DEFAULT).mean())
        others = not_digits(args.not_digits, seed=11)
        p = read([image for _, image in others], engine)
        kinds = np.array([kind for kind, _ in others])
        for kind in ("blank", "letter", "scribble"):
            unsure[kind] = float((p[kinds == kind].max(1) < DEFAULT).mean())
        figures.update({f"not sure at {DEFAULT} (the default): {k}": v for k, v in unsure.items()})
        for t in THRESHOLDS:
            figures[f"not sure of non-digits at {t}"] = float((p.max(1) < t).mean())
            figures[f"not sure of digits at {t}"] = float((np.array(digit_confidence) < t).mean())
        report[name] = figures
        confidences[name] = digit_confidence
    names = list(report)
    print("| set | " + " | ".join(names) + " |\n| --- |" + " ---: |" * len(names))
    for key in report[names[0]]:
        print(f"| {key} | " + " | ".join(f"{report[n][key]:.1%}" for n in names) + " |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
