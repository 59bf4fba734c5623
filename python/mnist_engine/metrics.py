"""Classification metrics for ``mnist-engine eval``, in numpy alone (scikit-learn is an optional
extra; tests check these against it)."""
from __future__ import annotations

from typing import List, NamedTuple

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts: row = true class, column = predicted class."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"expected two label vectors of one length, got shapes {y_true.shape} and {y_pred.shape}")
    for name, y in (("true", y_true), ("predicted", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"expected {name} labels in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


class ClassScores(NamedTuple):
    precision: np.ndarray  # of the images predicted as the class, the share that are it
    recall: np.ndarray  # of the images of the class, the share found
    f1: np.ndarray
    support: np.ndarray  # images of the class


def class_scores(cm: np.ndarray) -> ClassScores:
    """Per-class precision, recall and F1 from a confusion matrix; a class never predicted (or
    never present) scores 0 there, as scikit-learn's zero_division=0 does."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return ClassScores(precision, recall, f1, support)


class ConfusedPair(NamedTuple):
    a: int
    b: int
    a_as_b: int  # images of class a predicted as b
    b_as_a: int

    @property
    def total(self) -> int:
        return self.a_as_b + self.b_as_a


def most_confused_pairs(cm: np.ndarray, top: int = 5) -> List[ConfusedPair]:
    """The unordered class pairs with the most mistakes between them (both directions together),
    most first; pairs with no mistakes are left out."""
    n = cm.shape[0]
    pairs = [ConfusedPair(a, b, int(cm[a, b]), int(cm[b, a])) for a in range(n) for b in range(a + 1, n)]
    pairs = [p for p in pairs if p.total > 0]
    pairs.sort(key=lambda p: (-p.total, p.a, p.b))
    return pairs[:top]
