"""``mnist-engine predict IMAGE...``: read digits from image files (or folders, or globs)."""
from __future__ import annotations

import argparse
import errno
import glob
import json
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np

from .._progress import progress
from .common import add_engine_options, load_engine, output_names, positive_int, printable, user_error

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
INVERT = {"auto": "auto", "yes": True, "no": False}


def add_parser(sub) -> None:
    pr = sub.add_parser("predict", help="read the digit in image files (PNG, JPEG, BMP, GIF, ...)",
                        description="Read one handwritten digit from each image. Any size, colour or grey, dark ink "
                                    "on light or light on dark: each image is converted the way MNIST's digits were "
                                    "(see mnist_engine.preprocess_image). Needs the [images] extra (Pillow).")
    pr.add_argument("images", nargs="+", metavar="IMAGE",
                    help="image files, folders (their images, sorted) or quoted globs such as 'scans/**/*.png'")
    # The convnet reads digits written with a slant, off-centre or rotated far better than the MLP
    # (docs/MODELS.md: 85% vs 56-62% of distorted drawings and MNIST digits), so it reads images.
    add_engine_options(pr, default_model="convnet")
    pr.add_argument("--invert", choices=list(INVERT), default="auto",
                    help="is the ink dark on a light background? auto (default) decides from the image's border")
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


def read_all(paths: List[Path], invert) -> Tuple[np.ndarray, List[int], List[Tuple[Path, str]]]:
    """The preprocessed pixels of every readable image, the positions they came from, and a
    (path, message) for each one that could not be read."""
    from ..images import preprocess_image

    pixels, kept, failed = [], [], []
    for i, path in enumerate(progress(paths, total=len(paths), desc="reading images", unit="image")):
        try:
            pixels.append(preprocess_image(path, invert=invert))
            kept.append(i)
        except (OSError, ValueError) as e:  # ImageError is a ValueError
            failed.append((path, user_error(e)))
    batch = np.stack(pixels) if pixels else np.zeros((0, 28, 28), np.uint8)
    return batch, kept, failed


def run(args: argparse.Namespace) -> int:
    paths = expand(args.images)
    engine = load_engine(args)
    if engine.layers[0][0] != 784:
        raise ValueError(f"expected a model that reads 28x28 images (784 inputs), got {engine.layers[0][0]} inputs")
    batch, kept, failed = read_all(paths, INVERT[args.invert])
    probabilities = engine.predict(batch) if len(batch) else np.zeros((0, engine.layers[-1][1]), np.float32)
    names = output_names(engine, probabilities.shape[1])
    top = min(args.top, len(names))
    results = []
    for row, i in enumerate(kept):
        order = np.argsort(-probabilities[row], kind="stable")[:top]
        results.append({"file": str(paths[i]), "digit": names[order[0]],
                        "confidence": float(probabilities[row, order[0]]),
                        "top": [{"digit": names[k], "probability": float(probabilities[row, k])} for k in order]})
    if args.json:
        print(json.dumps({"model": str(args.model or args.default_model), "kernel": engine.kernel, "results": results,
                          "errors": [{"file": str(p), "error": m} for p, m in failed]}, indent=2))
    else:
        width = min(60, max((len(printable(r["file"])) for r in results), default=0))
        for r in results:
            others = ", ".join(f"{t['digit']} {t['probability']:.1%}" for t in r["top"])
            print(f"{printable(r['file']):<{width}}  {r['digit']}  {r['confidence']:6.1%}   (top {top}: {others})")
    for _, message in failed:
        print(f"mnist-engine: error: {printable(message)}", file=sys.stderr)
    return 2 if failed else 0
