"""mnist_engine.metrics against scikit-learn, the independent reference."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require
from mnist_engine.metrics import class_scores, confusion_matrix, most_confused_pairs


@pytest.mark.parametrize("seed", range(5))
def test_matches_scikit_learn(seed):
    sk = require("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 10, 500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, 10, 500))
    if seed == 0:
        y_pred[y_pred == 4] = 5  # a class never predicted: precision 0 by convention
    cm = confusion_matrix(y_true, y_pred, 10)
    assert np.array_equal(cm, sk.confusion_matrix(y_true, y_pred, labels=range(10)))
    p, r, f, s = sk.precision_recall_fscore_support(y_true, y_pred, labels=range(10), zero_division=0)
    ours = class_scores(cm)
    np.testing.assert_allclose(ours.precision, p)
    np.testing.assert_allclose(ours.recall, r)
    np.testing.assert_allclose(ours.f1, f)
    assert np.array_equal(ours.support, s)


def test_most_confused_pairs_counts_both_directions():
    cm = np.diag([50, 50, 50, 50])
    cm[3, 1], cm[1, 3] = 4, 3  # 7 between 1 and 3
    cm[0, 2] = 6
    cm[2, 3] = 1
    pairs = most_confused_pairs(cm, top=2)
    assert [(p.a, p.b, p.a_as_b, p.b_as_a, p.total) for p in pairs] == [(1, 3, 3, 4, 7), (0, 2, 6, 0, 6)]
    assert most_confused_pairs(np.diag([5, 5])) == []


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="expected predicted labels in 0..9, got 0..10"):
        confusion_matrix(np.array([0, 1]), np.array([0, 10]), 10)
    with pytest.raises(ValueError, match="one length"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 10)
