"""``mnist-engine predict IMAGE...``: read digits from image files (or folders, or globs)."""
from __future__ import annotations

import argparse
import errno
import glob
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import answers
from .._progress import progress
from .._text import printable
from .common import add_engine_options, load_engine, positive_int, probability, user_error

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
INVERT = {"auto": "auto", "yes": True, "no": False}
DEFAULT_MIN_CONFIDENCE = answers.DEFAULT_MIN_CONFIDENCE


def add_parser(sub) -> None:
    pr = sub.add_parser("predict", help="read the digit in image files (PNG, JPEG, BMP, GIF, ...)",
                        description="Read one handwritten digit from each image. Any size, colour or grey, dark ink "
                                    "on light or light on dark: each image is converted the way MNIST's digits were "
                                    "(see mnist_engine.preprocess_image). Needs the [images] extra (Pillow).")
    pr.add_argument("images", nargs="+", metavar="IMAGE",
                    help="image files, folders (their images, sorted) or quoted globs such as 'scans/**/*.png'")
    # The reader (the convnet with a "not a digit" output, trained on digits as people write,
    # photograph and scan them) reads other writers' scans best and is not sure of letters
    # (docs/IMAGES.md), so it reads images.
    add_engine_options(pr, default_model="reader")
    pr.add_argument("--invert", choices=list(INVERT), default="auto",
                    help="is the ink dark on a light background? auto (default) decides from the image's border")
    pr.add_argument("--raw", action="store_true",
                    help="take each image as MNIST pixels as it is (28x28; only its polarity is set): no cropping, "
                         "scaling or centring. Images already in MNIST's form are taken so without it")
    pr.add_argument("--save-preprocessed", type=Path, metavar="DIR",
                    help="write the 28x28 image the model saw for each input to DIR (as NAME.png)")
    pr.add_argument("--min-confidence", type=probability, default=DEFAULT_MIN_CONFIDENCE, metavar="P",
                    help="answer 'not sure' when the likeliest digit's probability is below P "
                         f"(default {DEFAULT_MIN_CONFIDENCE}; 0: always answer). A blank image is 'not sure' too, "
                         "and so is one the model itself finds not a digit (the bundled reader's 11th output)")
    pr.add_argument("--top", type=positive_int, default=3, help="how many of the likeliest digits to list (3)")
    pr.add_argument("--json", action="store_true", help="print one JSON object per run instead of text")
    pr.set_defaults(run=run)


def expand(arguments: List[str]) -> List[Path]:
    """Files named, the images in folders named, and the matches of globs the shell left alone
    (quoted, or on Windows). A name that matches nothing is an error, not a silent skip."""
    found: List[Path] = []
    for arg in arguments:
        path = Path(arg)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists() or not glob.has_magic(arg):
            found.append(path)  # a missing file is reported when it is read, with the others
        else:
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True) if Path(m).is_file())
            if not matches:
                raise FileNotFoundError(errno.ENOENT, "expected image files, got a pattern that matches none", arg)
            found += matches
    if not found:
        raise FileNotFoundError(errno.ENOENT, "expected images, got folders without any (.png, .jpg, .bmp, .gif, ...)",
                                ", ".join(arguments))
    return found


def read_all(paths: List[Path], invert, raw: bool = False, save_to: Optional[Path] = None
             ) -> Tuple[np.ndarray, List[int], List[Tuple[int, str]], List[Tuple[Path, str]]]:
    """The preprocessed pixels of every image with a digit in it, the positions they came from,
    (position, message) for each image that is blank, and (path, message) for each that could not
    be read. With `save_to`, each preprocessed image is written there too."""
    from ..images import NoDigitError, preprocess_image

    pixels, kept, blank, failed = [], [], [], []
    names = saved_names(paths) if save_to is not None else None
    if save_to is not None:
        save_to.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(progress(paths, total=len(paths), desc="reading images", unit="image")):
        try:
            pixels.append(preprocess_image(path, invert=invert, raw=raw,
                                           save=save_to / names[i] if names is not None else None))
            kept.append(i)
        except NoDigitError as e:
            blank.append((i, user_error(e)))
        except (OSError, ValueError) as e:  # ImageError is a ValueError
            failed.append((path, user_error(e)))
    batch = np.stack(pixels) if pixels else np.zeros((0, 28, 28), np.uint8)
    return batch, kept, blank, failed


def saved_names(paths: List[Path]) -> List[str]:
    """NAME.png for each input, NAME-2.png and so on where two inputs share a name."""
    seen: Dict[str, int] = {}
    names = []
    for path in paths:
        count = seen[path.stem] = seen.get(path.stem, 0) + 1
        names.append(f"{path.stem}.png" if count == 1 else f"{path.stem}-{count}.png")
    return names


def run(args: argparse.Namespace) -> int:
    paths = expand(args.images)
    engine = load_engine(args)
    if engine.layers[0][0] != 784:
        raise ValueError(f"expected a model that reads 28x28 images (784 inputs), got {engine.layers[0][0]} inputs")
    batch, kept, blank, failed = read_all(paths, INVERT[args.invert], args.raw, args.save_preprocessed)
    # What the model outputs (log-probabilities, logits) shown and thresholded as probabilities.
    probabilities = engine.predict_proba(batch) if len(batch) else np.zeros((0, engine.output_width), np.float32)
    names = answers.output_labels(engine.classes, probabilities.shape[1], engine.reject_class)
    top = min(args.top, len(names))
    sure = answers.sure(probabilities, args.min_confidence, engine.reject_class)
    results = {}
    for row, i in enumerate(kept):
        results[i] = {"file": str(paths[i]), **answers.describe(probabilities[row], names, sure[row], top)}
    for i, message in blank:
        results[i] = {"file": str(paths[i]), "digit": None, "sure": False, "confidence": 0.0, "top": [],
                      "reason": message}
    ordered = [results[i] for i in sorted(results)]
    if args.json:
        print(json.dumps({"model": str(args.model or args.default_model), "kernel": engine.kernel,
                          "min_confidence": args.min_confidence, "results": ordered,
                          "errors": [{"file": str(p), "error": m} for p, m in failed]}, indent=2))
    else:
        width = min(60, max((len(printable(r["file"])) for r in ordered), default=0))
        for r in ordered:
            if "reason" in r:
                print(f"{printable(r['file']):<{width}}  ?  not sure: no digit found (a blank image?)")
                continue
            others = ", ".join(f"{t['digit']} {t['probability']:.1%}" for t in r["top"])
            answer = f"{r['digit']}" if r["sure"] else "?"
            if r["sure"]:
                note = ""
            elif r["top"][0]["digit"] == answers.NOT_A_DIGIT:
                note = "  not sure: the model finds no digit (a letter? a scribble?)"
            else:
                note = f"  not sure: below --min-confidence {args.min_confidence:g}"
            print(f"{printable(r['file']):<{width}}  {answer}  {r['confidence']:6.1%}   (top {top}: {others}){note}")
    for _, message in failed:
        print(f"mnist-engine: error: {printable(message)}", file=sys.stderr)
    return 2 if failed else 0
