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
