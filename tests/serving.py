"""Helpers for the serving tests: a real uvicorn server on a free localhost port, in this process
(so a test can look at the batchers) or as the `mnist-engine serve` command (signals, the CLI)."""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from typing import Dict, Iterator, Optional, Tuple


@contextlib.contextmanager
def server_in_thread(app, connections=None) -> Iterator[int]:
    """Serve `app` on 127.0.0.1:<free port> from a thread, with the command's connection limits
    (`connections`: a serve.connections.ConnectionLimits, default the command's defaults); yields the port."""
    import uvicorn

    from mnist_engine.cli.serve import bind
    from mnist_engine.serve.connections import ConnectionLimits, bounded_protocol

    sock = bind("127.0.0.1", 0)
    protocol = bounded_protocol(connections or ConnectionLimits())
    server = uvicorn.Server(uvicorn.Config(app, http=protocol, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the in-process server did not start")
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextlib.contextmanager
def server_process(*args: str) -> Iterator[Tuple[subprocess.Popen, int]]:
    """`mnist-engine serve --port 0 ARGS`; yields (process, port) once it listens."""
    process = subprocess.Popen([sys.executable, "-m", "mnist_engine", "serve", "--port", "0", *args],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    port: Optional[int] = None
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
                break
        if port is None:
            process.wait(30)
            raise RuntimeError(f"the server did not start (exit {process.returncode}): {''.join(lines)}")
        # Keep reading stderr so the server never blocks on a full pipe.
        threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
        process.log = lines
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def request(port: int, method: str, path: str, body: Optional[bytes] = None,
            headers: Optional[Dict[str, str]] = None, timeout: float = 30) -> Tuple[int, Dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def infer_json(rows, datatype: str = "UINT8", shape=None, **extra) -> bytes:
    shape = list(shape or rows.shape)
    return json.dumps({"inputs": [{"name": "input", "datatype": datatype, "shape": shape,
                                   "data": rows.reshape(-1).tolist()}], **extra}).encode()
