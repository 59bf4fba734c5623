"""``mnist-engine eval``: accuracy, per-class scores, the most confused digits and speed on the
MNIST test set; ``--plots DIR`` draws them, ``--json`` prints them for machines."""
from __future__ import annotations

import argparse
import errno
import json
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

import mnist_engine

from .. import answers
from .._system import cpu_name
from ..metrics import class_scores, confusion_matrix, most_confused_pairs
from .common import add_engine_options, file_path, load_engine, model_path, output_names, positive_int

MAX_GRID = 100  # misclassified digits drawn: a 10x10 grid stays legible
CONFUSED_PAIRS = 5


def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="accuracy and speed of a model on the MNIST test set",
                        description="Accuracy, per-class precision/recall/F1, the most confused pairs and speed "
                                    "of a model on the 10,000 MNIST test images.")
    add_engine_options(ev)
    ev.add_argument("--data", type=file_path, help="MNIST .npz or IDX folder (default: see mnist_engine.datasets)")
    ev.add_argument("--repeat", type=positive_int, default=5, help="timed runs; the best is reported")
    ev.add_argument("--plots", type=file_path, metavar="DIR",
                    help="write confusion_matrix.png and misclassified.png into DIR (needs the [plots] extra)")
    ev.add_argument("--json", action="store_true", help="print the results as one JSON object instead of text")
    ev.set_defaults(run=run)


def class_indices(labels: np.ndarray, classes: Optional[list]) -> np.ndarray:
    """MNIST's labels (0..9) as the model's output positions: the same unless the file lists its
    classes (scikit-learn's classes_), in another order or as strings."""
    if classes is None:
        return np.asarray(labels, np.int64)
    position = {str(c): i for i, c in enumerate(classes)}
    missing = sorted({str(v) for v in np.unique(labels)} - set(position))
    if missing:
        raise ValueError(f"expected a model whose classes include the MNIST labels, got classes {classes} "
                         f"without {', '.join(missing)}")
    return np.array([position[str(v)] for v in labels], np.int64)


def run(args: argparse.Namespace) -> int:
    from ..datasets import load_mnist

    engine = load_engine(args)
    (_, _), (x_test, y_test) = load_mnist(args.data)
    probabilities = engine.predict_proba(x_test)  # the plots' confidences, whatever the model outputs
    if probabilities.shape[1] < 2:
        raise ValueError(f"expected a classifier with one output per digit, got {probabilities.shape[1]} output")
    predicted = probabilities.argmax(axis=1)
    truth = class_indices(y_test, engine.classes)
    names = output_names(engine, probabilities.shape[1])
    reject = engine.reject_class
    if reject is not None:
        names[reject] = answers.NOT_A_DIGIT
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        engine.predict(x_test)
        best = min(best, time.perf_counter() - start)

    cm = confusion_matrix(truth, predicted, len(names))
    scores = class_scores(cm)
    pairs = most_confused_pairs(cm, CONFUSED_PAIRS)
    report = {
        "model": str(model_path(args)), "engine": repr(engine), "kernel": engine.kernel,
        "precision": engine.precision, "threads": engine.threads or mnist_engine.get_num_threads(),
        "images": len(y_test), "accuracy": float((predicted == truth).mean()),
        "seconds_per_10k": best * 10000 / len(y_test), "images_per_second": len(y_test) / best,
        "per_class": [{"class": name, "precision": float(scores.precision[i]), "recall": float(scores.recall[i]),
                       "f1": float(scores.f1[i]), "support": int(scores.support[i])} for i, name in enumerate(names)
                      if i != reject],  # MNIST has no image of it: its row would be zeros
        "confused_pairs": [{"a": names[p.a], "b": names[p.b], "a_as_b": p.a_as_b, "b_as_a": p.b_as_a}
                           for p in pairs],
        "cpu": cpu_name(),
    }
    if reject is not None:
        report["not_a_digit"] = int((predicted == reject).sum())
    if engine.precision != "fp32":
        exact = mnist_engine.load(model_path(args), threads=args.threads)
        report["agreement_with_fp32"] = float((exact.predict(x_test).argmax(axis=1) == predicted).mean())
        report["max_reference_deviation"] = engine.reference_deviation
    if args.plots is not None:
        report["plots"] = [str(p) for p in draw(args.plots, cm, names, x_test, truth, predicted, probabilities)]

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(text_lines(report, args.repeat)))
    return 0


def draw(folder: Path, cm: np.ndarray, names: List[str], images: np.ndarray, truth: np.ndarray,
         predicted: np.ndarray, probabilities: np.ndarray) -> List[Path]:
    from .. import plots  # matplotlib loads only when a picture is asked for

    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "expected a folder for the plots, got a file", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    written = [plots.save_confusion_matrix(cm, names, folder / "confusion_matrix.png")]
    wrong = np.flatnonzero(predicted != truth)
    if len(wrong):
        confidence = probabilities[wrong, predicted[wrong]]
        order = wrong[np.argsort(-confidence, kind="stable")][:MAX_GRID]
        written.append(plots.save_misclassified_grid(
            images[order], [names[t] for t in truth[order]], [names[p] for p in predicted[order]],
            probabilities[order, predicted[order]], folder / "misclassified.png",
            title=f"the {len(order)} most confident of {len(wrong)} mistakes: true → predicted, confidence"))
    return written


def text_lines(report: dict, repeat: int) -> List[str]:
    threads = report["threads"]
    lines = [f"model     {report['model']}",
             f"engine    {report['engine']}",
             f"accuracy  {report['accuracy'] * 100:.2f}% on {report['images']} MNIST test images"]
    if "not_a_digit" in report:
        lines.append(f"not sure  {report['not_a_digit']} of the digits read as {answers.NOT_A_DIGIT} "
                     f"({report['not_a_digit'] / report['images']:.2%}): the model's reject class")
    if "agreement_with_fp32" in report:
        lines.append(f"precision {report['precision']}: agrees with fp32 on {report['agreement_with_fp32'] * 100:.2f}% "
                     f"of the images; max |output - file reference| {report['max_reference_deviation']:.2e}")
    lines += [f"speed     {report['images_per_second']:,.0f} images/s ({report['seconds_per_10k'] * 1e3:.1f} ms per "
              f"10k, best of {repeat}, {threads} thread{'s' if threads != 1 else ''})",
              f"kernel    {report['kernel']} (available for {report['precision']}: "
              f"{', '.join(mnist_engine.available_kernels(report['precision']))}; precisions: "
              f"{', '.join(mnist_engine.available_precisions())})",
              f"cpu       {report['cpu']}",
              "",
              f"{'class':>5}  {'precision':>9}  {'recall':>7}  {'F1':>7}  {'images':>6}"]
    for row in report["per_class"]:
        lines.append(f"{row['class']:>5}  {row['precision'] * 100:8.2f}%  {row['recall'] * 100:6.2f}%  "
                     f"{row['f1'] * 100:6.2f}%  {row['support']:6d}")
    lines += ["(precision: of the images read as the class, the share that are it; recall: of the class's "
              "images, the share read right)", ""]
    if report["confused_pairs"]:
        lines.append("most confused pairs (mistakes both ways):")
        for p in report["confused_pairs"]:
            lines.append(f"  {p['a']} <-> {p['b']}  {p['a_as_b'] + p['b_as_a']:4d}  ({p['a']} read as {p['b']}: "
                         f"{p['a_as_b']}, {p['b']} read as {p['a']}: {p['b_as_a']})")
    else:
        lines.append("no mistakes")
    for path in report.get("plots", []):
        lines.append(f"wrote     {path}")
    return lines
