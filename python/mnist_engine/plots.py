"""Pictures of an evaluation: the confusion matrix and the misclassified digits, as PNG files.

Needs matplotlib (``pip install "mnist-engine[plots]"``), imported on first use. Figures are drawn
on their own Agg canvas, never through pyplot, so a caller's backend and open figures are left
alone; each PNG is written atomically.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from ._extras import require
from .model_file import atomic_write_bytes

PathLike = Union[str, "os.PathLike[str]"]
GRID_COLUMNS = 10


def _figure(width: float, height: float, layout: str = "constrained"):
    require("matplotlib", "drawing plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def save_confusion_matrix(cm: np.ndarray, labels: Sequence[str], path: PathLike, title: str = "") -> Path:
    """The confusion matrix as a heat map with the count in every non-empty cell. Mistakes get
    their own colour scale (the diagonal, thousands of right answers, would wash them out), and
    the right answers are shown in green with each class's recall."""
    n = cm.shape[0]
    off = cm.astype(np.float64).copy()
    np.fill_diagonal(off, np.nan)
    fig = _figure(1.0 + 0.62 * n, 0.4 + 0.62 * n)
    from matplotlib.colors import ListedColormap

    ax = fig.add_subplot()
    worst = max(1.0, np.nanmax(off)) if n > 1 else 1.0
    image = ax.imshow(off, cmap="Reds", vmin=0, vmax=worst)
    ax.imshow(np.where(np.eye(n, dtype=bool), 1.0, np.nan), cmap=ListedColormap(["#cfe8cf"]), vmin=0, vmax=1)
    support = cm.sum(axis=1)
    for t in range(n):
        for p in range(n):
            count = int(cm[t, p])
            if t == p:
                recall = count / support[t] if support[t] else 0.0
                ax.text(p, t, f"{count}\n{recall:.1%}", ha="center", va="center", fontsize=7, color="#1b5e20")
            elif count:
                dark = off[t, p] > 0.6 * worst
                ax.text(p, t, str(count), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    ax.set_xticks(range(n), labels=list(labels))
    ax.set_yticks(range(n), labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix: {int(np.trace(cm))} of {int(cm.sum())} right", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="mistakes")
    return _save(fig, path)


def save_misclassified_grid(images: np.ndarray, true_labels: Sequence[str], predicted_labels: Sequence[str],
                            confidence: np.ndarray, path: PathLike, title: str = "") -> Path:
    """A grid of digits (uint8 (N, 28, 28) or (N, 784)), each captioned "true → predicted" and the
    model's confidence in its wrong answer. The caller picks and orders them (eval shows the most
    confident mistakes first: those are the interesting ones)."""
    n = len(images)
    if n == 0:
        raise ValueError("expected at least one misclassified image to draw, got none")
    images = np.asarray(images).reshape(n, 28, 28)
    rows = (n + GRID_COLUMNS - 1) // GRID_COLUMNS
    cols = min(n, GRID_COLUMNS)
    fig = _figure(1.1 * cols, 1.2 * rows + 0.3)
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)  # dark ink on white, as on paper
        ax.set_title(f"{true_labels[i]} → {predicted_labels[i]}\n{confidence[i]:.0%}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"{n} misclassified digits: true → predicted, confidence", fontsize=10)
    return _save(fig, path)
