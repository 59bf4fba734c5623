"""Progress bars for work that can take more than a moment: on stderr, only on a terminal, and
only once the work has run for PROGRESS_DELAY seconds, so quick runs and logs stay clean."""
from __future__ import annotations

import sys
from typing import Iterable, Optional, TypeVar

T = TypeVar("T")
PROGRESS_DELAY = 2.0  # seconds before a bar appears


def progress(iterable: Iterable[T], total: Optional[int] = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    """`iterable`, drawing a tqdm bar while it is consumed. Without tqdm (an install with
    --no-deps) the work runs the same, without a bar."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    # disable=None: tqdm turns itself off when stderr is not a TTY (CI, pipes, log files).
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=None, leave=False, file=sys.stderr,
                delay=PROGRESS_DELAY, dynamic_ncols=True)


class Stages:
    """A bar for work made of a few named steps (download, decode, cache): each ``step(name)``
    finishes the previous one and shows the new one's name."""

    def __init__(self, total: int, desc: str):
        self._bar = progress(range(total), total=total, desc=desc, unit="step")
        self._started = False

    def step(self, name: str) -> None:
        bar = self._bar
        if not hasattr(bar, "update"):
            return
        if self._started:
            bar.update(1)
        self._started = True
        bar.set_postfix_str(name)

    def close(self) -> None:
        if hasattr(self._bar, "close"):
            self._bar.close()

    def __enter__(self) -> "Stages":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
