"""Starting `mnist-engine serve` for the load tools: its stderr (the access log among it) goes to a
file, so the server never blocks on a pipe nobody reads and the client spends nothing draining it."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import List, Tuple


def start_logged(command: List[str], log: Path, seconds: float = 120) -> Tuple[subprocess.Popen, int]:
    """Runs `command` (an `mnist-engine serve --port 0 ...`) with its stderr in `log`; (process,
    port) once it says where it listens."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", log.read_text())
        if found:
            return process, int(found.group(1))
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"mnist-engine serve did not start within {seconds:.0f} s")
