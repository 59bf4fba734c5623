"""tools/load_test.py runs end to end on a small load: it starts the server, every answer it checks
is right, every hostile request is answered 4xx, a small overload is answered 200 or 503 with
Retry-After, and SIGTERM stops the server with exit 0. tools/hostile_scenarios.py runs its short
scenarios."""
from __future__ import annotations

import ast
import json
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
                          "--hostile", "60", "--time-limit", "60",
                          "--overload-connections", "40", "--overload-requests", "2"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = re.findall(r"^\| mnist-engine (\w+).* \| (\d+) \| (\d+) \|$", out.stdout, re.M)
    assert [name for name, _, _ in rows][:3] == ["single", "batch64", "hostile"], out.stdout
    assert all(errors == "0" and wrong == "0" for _, errors, wrong in rows), out.stdout
    hostile = re.search(r"hostile: (\d+) sent, (\d+) answered 4xx.*server alive: True", out.stdout)
    assert hostile and hostile.group(1) == hostile.group(2) and int(hostile.group(1)) >= 60, out.stdout
    assert "408 Request Timeout" in out.stdout  # the slowloris connections
    assert "mnist-engine serve exited 0 on SIGTERM" in out.stdout
    # The overload scenario at a small scale: every answer exact, no 500, every refusal a 503 with
    # Retry-After, the server alive, its health answered 200 throughout, and its own count of refusals
    # the clients' (503s seen by the clients are the server's body_budget, queue_full and deadline).
    overload = re.search(r"overload: (\d+) requests offered .* statuses (\{.*?\}); answered (\d+) .*, wrong (\d+), "
                         r"refusals without Retry-After (\d+)", out.stdout)
    assert overload, out.stdout
    statuses = ast.literal_eval(overload.group(2))  # the dict the tool printed
    assert int(overload.group(1)) == 80 and set(statuses) <= {"200", "503"} and int(overload.group(3)) >= 20
    assert overload.group(4) == "0" and overload.group(5) == "0"
    health = re.search(r"overload: server RSS .* statuses (\{.*?\}); server alive: True", out.stdout)
    assert health and set(ast.literal_eval(health.group(1))) == {"200"}, out.stdout
    assert "mnist-engine serve (default limits) exited 0 on SIGTERM" in out.stdout


def test_the_hostile_scenarios_tool_finds_the_header_bound_and_the_decoding_deadline(mnist, tmp_path):
    """tools/hostile_scenarios.py end to end on its two short scenarios: the growing header is cut
    with 431 long before 16 MiB, and requests behind a stopped decoding worker get 503 (before the
    deadline they waited the 12 s out and got 200)."""
    for module in ("aiohttp", "starlette", "uvicorn"):
        require(module)
    figures = tmp_path / "figures.json"
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "hostile_scenarios.py"), "--scenarios",
                          "big-header,stalled-worker", "--json", str(figures)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(figures.read_text())
    header, stalled = report["big-header"], report["stalled-worker"]
    assert header["answer"].startswith("HTTP/1.1 431") and header["header_bytes_sent"] < 16 << 20, header
    assert header["server_alive"] and set(header["health_statuses"]) == {"200"}, header
    assert stalled["statuses"] == {"503": 12} and stalled["server_alive"], stalled
