"""tools/load_test.py runs end to end on a small load: it starts the server, every answer it checks
is right, every hostile request is answered 4xx, and SIGTERM stops the server with exit 0."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import require

ROOT = Path(__file__).resolve().parent.parent


def test_a_small_load_test_has_no_errors_and_refuses_every_hostile_request(mnist, tmp_path):
    for module in ("aiohttp", "starlette", "uvicorn"):
        require(module)
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "load_test.py"), "--clients", "8", "--requests", "10",
                          "--hostile", "60", "--time-limit", "60"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = re.findall(r"^\| mnist-engine (\w+).* \| (\d+) \| (\d+) \|$", out.stdout, re.M)
    assert [name for name, _, _ in rows][:3] == ["single", "batch64", "hostile"], out.stdout
    assert all(errors == "0" and wrong == "0" for _, errors, wrong in rows), out.stdout
    hostile = re.search(r"hostile: (\d+) sent, (\d+) answered 4xx.*server alive: True", out.stdout)
    assert hostile and hostile.group(1) == hostile.group(2) and int(hostile.group(1)) >= 60, out.stdout
    assert "408 Request Timeout" in out.stdout  # the slowloris connections
    assert "mnist-engine serve exited 0 on SIGTERM" in out.stdout
