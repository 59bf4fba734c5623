"""How well images of digits from outside MNIST are read: preprocess_image, then each bundled model.

    python tools/image_accuracy.py [--models mlp512 convnet reader] [--photos 300] [--json OUT]

Sets (tests/photo_digits.py makes them; nothing is downloaded but MNIST and scikit-learn's digits):
  photos    handwritten digits photographed on unevenly lit paper (MNIST test digits as the pen)
  scans     scikit-learn's 8x8 digits of 43 other writers, enlarged to 32 and 128 px, both polarities
  mnist     MNIST test digits as 28x28 images, read through preprocess_image, against predict() on
            the same arrays: preprocessing must not cost an image already in MNIST's form anything
  pages     MNIST test digits 60-200 px tall on pages of 1200x900 to 4000x3000 (light noise, either
            polarity), and the crops around them: a page must read as its crop; and blank pages
  not       blank paper, capital letters and scribbles, photographed: how often each confidence
            threshold says "not sure" of them (mnist_engine.answers: the reader's "not a digit"
            output counts too), against how often it says so of real digits
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
from mnist_engine import answers  # noqa: E402
from mnist_engine.datasets import load_mnist  # noqa: E402
from photo_digits import blank_pages, not_digits, on_pages, photographed, read, scan  # noqa: E402

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def measure(engine, args, x_test, y_test, digits) -> Dict[str, float]:
    """Accuracy per set of digits, and how often each set is answered "not sure" (the rule of
    mnist_engine.answers) at the default threshold and at each of THRESHOLDS."""
    figures: Dict[str, float] = {}
    unsure: Dict[str, float] = {}
    digit_rows = []

    def record(key: str, p: np.ndarray, truth=None):
        if truth is not None:
            figures[key] = float((p.argmax(1) == truth).mean())
            digit_rows.append(p)
        unsure[key] = float((~answers.sure(p, answers.DEFAULT_MIN_CONFIDENCE, engine.reject_class)).mean())

    picks = np.linspace(0, len(x_test) - 1, args.photos).astype(int)
    record("photos", read(engine, photographed(x_test[picks], seed=7)), y_test[picks])
    for size in (32, 128):
        for dark in (True, False):
            record(f"scans {size}px {'dark' if dark else 'light'} ink",
                   read(engine, scan(digits.images, size, dark)), digits.target)
    if args.pages:
        picks = np.linspace(0, len(x_test) - 1, args.pages).astype(int)
        pairs = list(on_pages(x_test[picks], seed=9))
        pages, crops = read(engine, [page for page, _ in pairs]), read(engine, [crop for _, crop in pairs])
        # Not among the digits of the "not sure of digits" rows below: those keep the sets of the
        # figures published before the pages existed.
        for key, rows in (("small digits on large pages", pages), ("their crops", crops)):
            figures[key] = float((rows.argmax(1) == y_test[picks]).mean())
            unsure[key] = float((~answers.sure(rows, reject_class=engine.reject_class)).mean())
        figures["pages read as their crops"] = float(
            ((pages.argmax(1) == crops.argmax(1)) & (answers.sure(pages, reject_class=engine.reject_class) ==
                                                      answers.sure(crops, reject_class=engine.reject_class))).mean())
        unsure["blank pages"] = float((~answers.sure(read(engine, blank_pages(max(10, args.pages // 5), seed=10)),
                                                     reject_class=engine.reject_class)).mean())
    x, y = x_test[: args.mnist], y_test[: args.mnist]
    record("mnist via preprocess_image", read(engine, x), y)
    figures["mnist via predict()"] = float((engine.predict(x).argmax(1) == y).mean())
    others = not_digits(args.not_digits, seed=11)
    other_rows = read(engine, [image for _, image in others])
    kinds = np.array([kind for kind, _ in others])
    for kind in ("blank", "letter", "scribble"):
        record(kind, other_rows[kinds == kind])
    figures.update({f"not sure at {answers.DEFAULT_MIN_CONFIDENCE} (the default): {k}": v for k, v in unsure.items()})
    for t in THRESHOLDS:
        for name, rows in (("non-digits", other_rows), ("digits", np.concatenate(digit_rows))):
            doubted = ~answers.sure(rows, t, engine.reject_class)
            figures[f"not sure of {name} at {t}"] = float(doubted.mean())
    return figures


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp512", "convnet", "reader"],
                        help="bundled model names or .mnw paths (default: the three bundled ones)")
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--mnist", type=int, default=2000)
    parser.add_argument("--pages", type=int, default=100, help="small digits on large pages (0: none)")
    parser.add_argument("--not-digits", type=int, default=90)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from sklearn.datasets import load_digits

    _, (x_test, y_test) = load_mnist()
    digits = load_digits()
    report = {name: measure(mnist_engine.load(name), args, x_test, y_test, digits) for name in args.models}
    names = list(report)
    print("| set | " + " | ".join(names) + " |\n| --- |" + " ---: |" * len(names))
    for key in report[names[0]]:
        print(f"| {key} | " + " | ".join(f"{report[n][key]:.1%}" for n in names) + " |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
