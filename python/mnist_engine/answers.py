"""When a reader of images answers with a digit and when it says "not sure".

One rule for ``mnist-engine predict``, the server's draw page and tools/image_accuracy.py: the
likeliest output is the answer unless it is the model's reject class ("not a digit", the file's
``reject_class``) or its probability is below ``min_confidence``. A blank image (no ink found)
never reaches the model and is "not sure" too. The probabilities are ``Engine.predict_proba``'s
(or ``Engine.to_probabilities`` of its outputs): a model that outputs log-probabilities or logits
(its ``output_kind``) is judged on the probabilities they stand for, never on the raw values.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

# Chosen on validation digits that no reported figure uses (2,000 MNIST test digits made coarse
# or enlarged through preprocess_image, tools/reader_data.py): the bundled reader doubts 0.4% of
# the coarse ones at 0.4, 1.9% at 0.5. Letters and scribbles are caught by its reject class, not
# by the threshold (at 0.5 the convnet, which has none, still answered 97% of letters).
DEFAULT_MIN_CONFIDENCE = 0.4
NOT_A_DIGIT = "not a digit"  # how the reject class is named wherever an output is listed


def sure(probabilities: np.ndarray, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
         reject_class: Optional[int] = None) -> np.ndarray:
    """Whether each row of `probabilities` (N, outputs) answers with its likeliest output: bool (N,)."""
    p = np.asarray(probabilities)
    if p.ndim != 2:
        raise ValueError(f"expected probabilities of shape (N, outputs), got shape {p.shape}")
    top = p.argmax(1)
    answered = p[np.arange(len(p)), top] >= min_confidence
    return answered & (top != reject_class) if reject_class is not None else answered


def output_labels(classes: Optional[Sequence], outputs: int, reject_class: Optional[int] = None) -> List[str]:
    """What each output is called in an answer: the file's classes (scikit-learn's labels) or the
    output's index, and NOT_A_DIGIT for the reject class."""
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(outputs)]
    if reject_class is not None:
        names[reject_class] = NOT_A_DIGIT
    return names


def label(name: str) -> Union[int, str]:
    """A class name as JSON shows it: a digit as an integer, any other label as it is."""
    return int(name) if name.isdigit() else name


def describe(probabilities: np.ndarray, names: Sequence[str], answered: bool, top: int) -> Dict[str, Any]:
    """One image's answer as `mnist-engine predict --json` and the server give it: the digit (None
    when not sure), whether it is sure, the likeliest output's probability, and the `top` likeliest
    outputs with theirs."""
    order = np.argsort(-probabilities, kind="stable")[:top]
    return {"digit": label(names[order[0]]) if answered else None, "sure": bool(answered),
            "confidence": float(probabilities[order[0]]),
            "top": [{"digit": label(names[k]), "probability": float(probabilities[k])} for k in order]}
