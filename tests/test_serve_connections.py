"""Connection limits before a request reaches the app (serve/connections.py): the bytes of a
request's head, the time to send it, and the number of open connections. Each test fails against
uvicorn's own httptools protocol, which bounds none of them."""
from __future__ import annotations

import socket
import time

import numpy as np
import pytest

import mnist_engine
from conftest import require
from serving import infer_json, request, server_in_thread

require("starlette")
require("uvicorn")
from mnist_engine.serve import Limits, create_app  # noqa: E402
from mnist_engine.serve.connections import ConnectionLimits  # noqa: E402

INFER = "/v2/models/mnist/infer"
HEALTH = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
IMAGES = np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8)


@pytest.fixture(scope="module")
def engine():
    return mnist_engine.load(mnist_engine.default_model_path())


def serve(engine, max_delay=0.001, **connections):
    app = create_app({"mnist": engine}, Limits(max_batch=64, max_delay=max_delay))
    return server_in_thread(app, ConnectionLimits(**connections))


def read_until_closed(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection; raises if it stays open."""
    sock.settimeout(seconds)
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


def closed_within(sock: socket.socket, seconds: float) -> bool:
    try:
        return read_until_closed(sock, seconds) == b""
    except socket.timeout:
        return False


def test_a_head_past_the_limit_gets_431_before_the_parser_holds_it(engine):
    """Headers of 8 MiB arrive in 64 KiB pieces; the server answers 431 and closes once the head
    passes 16 KiB, and stays healthy. A head under the limit, with its body in the same packet, is
    served."""
    with serve(engine, max_head_bytes=16 << 10) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            sent = 0
            try:
                while sent < 8 << 20:
                    raw.sendall(b"a" * (64 << 10))
                    sent += 64 << 10
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed by the server: the point
            reply = read_until_closed(raw, 10)
        assert reply.startswith(b"HTTP/1.1 431 "), reply[:80]
        assert reply.endswith(b"the request line and headers exceed 16384 bytes (mnist-engine serve "
                              b"--max-header-bytes)")
        body = infer_json(IMAGES[:40])
        assert len(body) > 16 << 10
        status, _, _ = request(port, "POST", INFER, body, {"X-Padding": "p" * (12 << 10)})
        assert status == 200
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (16 << 10) + b"\r\n\r\n")
            assert read_until_closed(raw, 10).startswith(b"HTTP/1.1 431 ")


def test_silent_and_trickling_connections_are_closed_after_the_head_timeout(engine):
    """A connection that sends nothing, one that sends its head a byte at a time (each byte used to
    reset nothing, and uvicorn's keep-alive timer is cancelled by any data), and one idle after a
    response are all closed once the head timeout passes; a response slower than the timeout is
    not cut."""
    with serve(engine, max_delay=1.2, head_timeout=0.5) as port:
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        trickle = socket.create_connection(("127.0.0.1", port), timeout=10)
        start = time.monotonic()
        try:
            for byte in HEALTH[:12]:  # 1.2 s of a byte every 0.1 s, against a 0.5 s timeout
                trickle.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server: the point
        assert closed_within(trickle, 3) and closed_within(silent, 3)
        assert time.monotonic() - start < 3
        with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
            body = infer_json(IMAGES[:1])
            kept.sendall(f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            kept.settimeout(10)
            reply = kept.recv(65536)  # after the 1.2 s batch window: longer than the head timeout
            assert reply.startswith(b"HTTP/1.1 200 "), reply[:80]
            assert closed_within(kept, 3)  # idle after its response


def test_connections_past_the_cap_are_closed_and_health_checks_still_get_through(engine):
    """With 16 connections allowed, 16 silent ones hold them: the 17th is closed at once. Above
    three quarters of the cap a new connection has a second for its head, which a health check
    needs far less than."""
    with serve(engine, max_connections=16, head_timeout=30) as port:
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(12)]
        time.sleep(0.2)
        crowded = socket.create_connection(("127.0.0.1", port), timeout=10)
        crowded.sendall(HEALTH)
        assert crowded.recv(65536).startswith(b"HTTP/1.1 200 ")
        start = time.monotonic()
        assert closed_within(crowded, 5) and time.monotonic() - start < 3  # 1 s, not 30, once crowded
        held += [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert closed_within(extra, 2)
        for sock in held:
            assert not closed_within(sock, 0.01)
            sock.close()
        time.sleep(0.2)
        assert request(port, "GET", "/v2/health/live")[0] == 200
