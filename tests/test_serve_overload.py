"""mnist-engine serve under overload: the body budget and the model's queue bound answer 503 with
Retry-After (health answered meanwhile), a request past its queue deadline is refused and never
computed, the rows of a client that went away are dropped, large JSON bodies are decoded in a
worker process (replaced if it dies), and /metrics reports what happened.

The engine is held inside predict by a gate the test opens, so "the server is busy" is a state the
test sets, not a race it hopes to win."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

import mnist_engine
from conftest import require
from serving import infer_json, request, server_in_thread

require("starlette")
require("uvicorn")
require("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from mnist_engine.serve import Limits, create_app  # noqa: E402
from mnist_engine.serve.admission import BodyBudget, Overloaded, RowQueue  # noqa: E402
from mnist_engine.serve.app import BUDGET_WINDOW, WATCH_ROWS  # noqa: E402
from mnist_engine.serve.batcher import DynamicBatcher  # noqa: E402
from mnist_engine.serve.decoding import INLINE_JSON_BYTES, INLINE_JSON_CONTAINERS, costly_json  # noqa: E402

INFER = "/v2/models/mnist/infer"


@pytest.fixture(scope="module")
def engine():
    return mnist_engine.load(mnist_engine.default_model_path())


class Gate:
    """Holds every predict call until opened; records the rows each call computed."""

    def __init__(self, monkeypatch):
        self.opened, self.entered = threading.Event(), threading.Event()
        self.computed = []
        real = DynamicBatcher._predict

        def gated(batcher, inputs):
            self.entered.set()
            assert self.opened.wait(30), "the test never opened the gate"
            self.computed.append(inputs.copy())
            return real(batcher, inputs)

        monkeypatch.setattr(DynamicBatcher, "_predict", gated)


@contextlib.contextmanager
def busy_server(engine, monkeypatch, limits: Limits, held_rows: np.ndarray):
    """A server whose engine is held inside predict, computing `held_rows` for a client until the
    test opens the gate. Yields its app, port, gate, a pool for more clients, and the held reply."""
    gate = Gate(monkeypatch)
    app = create_app({"mnist": engine}, limits)
    with server_in_thread(app) as port, ThreadPoolExecutor(2) as pool:
        held = pool.submit(request, port, "POST", INFER, infer_json(held_rows))
        assert gate.entered.wait(10)
        yield SimpleNamespace(app=app, port=port, gate=gate, pool=pool, held=held)


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the server never reached the state the test waits for"
        time.sleep(0.005)


def metric_samples(port: int) -> dict:
    """{(sample name, frozenset(labels)): value} from a scrape, read by prometheus_client's parser."""
    status, _, body = request(port, "GET", "/metrics")
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def sample(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# -- the bounds, on their own ------------------------------------------------------------------

def test_the_body_budget_serves_the_oldest_request_first_and_refuses_after_the_wait():
    async def main():
        budget = BodyBudget(100)
        first, oldest, big, small, late = (budget.hold() for _ in range(5))
        await first.take(80, 1)
        order = []

        async def take(name, hold, size, timeout=5):
            await hold.take(size, timeout)
            order.append(name)

        waits = [asyncio.ensure_future(take("big", big, 60))]
        await asyncio.sleep(0.01)
        waits.append(asyncio.ensure_future(take("small", small, 10)))  # fits now, but must not pass the big one
        await asyncio.sleep(0.01)
        waits.append(asyncio.ensure_future(take("oldest", oldest, 30)))  # came before both: goes first
        await asyncio.sleep(0.01)
        assert order == [] and budget.waiting == 3
        with pytest.raises(Overloaded) as refused:
            await late.take(5, 0.05)
        first.release()
        await asyncio.gather(*waits)
        return order, budget.in_use, (oldest.bytes, big.bytes, small.bytes, late.bytes), refused.value

    order, in_use, held, refused = asyncio.run(main())
    assert order == ["oldest", "big", "small"] and in_use == 100 and held == (30, 60, 10, 0)
    assert refused.status == 503 and refused.reason == "body_budget" and refused.close
    assert refused.headers == {"Retry-After": "1", "Connection": "close"}
    assert "its budget is 100, --body-budget" in str(refused) and "--max-queue-ms" in str(refused)


def test_a_waiter_that_gives_up_lets_those_behind_it_through():
    async def main():
        budget = BodyBudget(100)
        holder, head, behind = budget.hold(), budget.hold(), budget.hold()
        await holder.take(50, 1)
        gone = asyncio.ensure_future(head.take(90, 5))
        await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(behind.take(40, 5))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client went away
        await asyncio.wait_for(waiting, 1)
        head.release()
        return budget.in_use, budget.waiting

    assert asyncio.run(main()) == (90, 0)


def test_a_budget_full_of_bodies_all_waiting_for_more_stops_the_youngest_for_the_oldest():
    """Three bodies fill the budget between them. While the oldest is still receiving, the others
    wait for it; once it waits too, nothing could ever move: the youngest gives its bytes back
    (503) and the oldest two finish."""
    async def main():
        budget = BodyBudget(100)
        old, middle, young = budget.hold(), budget.hold(), budget.hold()
        for hold, size in ((old, 40), (middle, 30), (young, 30)):
            await hold.take(size, 1)
        middle_more = asyncio.ensure_future(middle.take(20, 5))
        young_more = asyncio.ensure_future(young.take(10, 5))
        await asyncio.sleep(0.02)
        assert not middle_more.done() and not young_more.done()  # the oldest is still receiving: no one is stopped
        await asyncio.wait_for(old.take(10, 5), 1)
        await asyncio.wait_for(middle_more, 1)
        with pytest.raises(Overloaded) as stopped:
            await young_more
        return (old.bytes, middle.bytes, young.bytes), budget.in_use, budget.waiting, stopped.value

    held, in_use, waiting, stopped = asyncio.run(main())
    assert held == (50, 50, 0) and in_use == 100 and waiting == 0
    assert stopped.status == 503 and stopped.close and stopped.reason == "body_budget"
    assert "gave back its 30 bytes so that earlier ones can finish" in str(stopped)


def test_the_row_queue_refuses_past_its_bound_but_takes_any_request_when_empty():
    queue = RowQueue(max_rows=100, max_bytes=10_000)
    queue.admit(500, 500 * 784, retry_after=1)  # alone: taken, however large
    queue.leave(500, 500 * 784)
    queue.admit(60, 600, retry_after=1)
    queue.check_room()
    with pytest.raises(Overloaded) as refused:
        queue.admit(50, 500, retry_after=2.5)
    assert refused.value.reason == "queue_full" and refused.value.headers == {"Retry-After": "3"}
    assert "60 rows (600 bytes) of 1 requests; 50 more" in str(refused.value)
    queue.admit(40, 400, retry_after=1)
    with pytest.raises(Overloaded) as full:
        queue.check_room()
    assert full.value.close and "--max-queue-rows" in str(full.value)
    assert (queue.rows, queue.bytes, queue.requests) == (100, 1000, 2)


def test_the_batcher_drops_requests_past_their_deadline_or_cancelled_before_computing_them(engine, rng):
    computed = []
    release = threading.Event()

    class Held:
        def predict(self, x, range_check="warn"):
            release.wait(10)
            computed.append(len(x))
            return engine.predict(x, range_check=range_check)

    async def main():
        loop = asyncio.get_running_loop()
        batcher = DynamicBatcher(Held(), max_batch=4, max_delay=0)
        batcher.start()
        rows = [rng.integers(0, 256, (n, 784), dtype=np.uint8) for n in (1, 2, 3, 3)]
        first = asyncio.ensure_future(batcher.predict(rows[0]))
        await asyncio.sleep(0.05)  # the first batch is inside predict, held
        late = asyncio.ensure_future(batcher.predict(rows[1], deadline=loop.time() + 0.01))
        gone = asyncio.ensure_future(batcher.predict(rows[2]))
        kept = asyncio.ensure_future(batcher.predict(rows[3], deadline=loop.time() + 30))
        await asyncio.sleep(0.05)
        gone.cancel()
        release.set()
        results = await asyncio.gather(first, late, kept, return_exceptions=True)
        await batcher.stop()
        return results, rows

    (first, late, kept), rows = asyncio.run(main())
    assert computed == [1, 3]  # the late and the cancelled requests' rows never reached predict
    assert isinstance(late, Overloaded) and late.reason == "deadline" and "past its deadline" in str(late)
    assert np.array_equal(first, engine.predict(rows[0])) and np.array_equal(kept, engine.predict(rows[3]))


# -- over HTTP -------------------------------------------------------------------------------------

def test_a_full_queue_is_503_with_retry_after_and_health_is_answered_meanwhile(engine, rng, monkeypatch):
    rows = rng.integers(0, 256, (12, 784), dtype=np.uint8)
    with busy_server(engine, monkeypatch, Limits(max_queue_rows=3), rows[:2]) as busy:
        app, port, pool, held = busy.app, busy.port, busy.pool, busy.held
        # Two rows in the queue: a third fits, but not two more (refused after reading: the
        # connection stays usable).
        status, headers, body = request(port, "POST", INFER, infer_json(rows[2:4]))
        assert status == 503 and headers["retry-after"] == "1" and "connection" not in headers
        assert "2 rows (1568 bytes) of 1 requests; 2 more would pass its bound of 3 rows" in json.loads(body)["error"]
        third = pool.submit(request, port, "POST", INFER, infer_json(rows[4:5]))
        wait_until(lambda: app.state.models["mnist"].queue.rows == 3)
        # Full: refused before its body is read, and the connection closed behind the answer.
        status, headers, body = request(port, "POST", INFER, infer_json(rows[5:6]))
        assert status == 503 and headers["connection"] == "close" and headers["retry-after"] == "1"
        assert "the model's queue is full" in json.loads(body)["error"]
        assert request(port, "GET", "/v2/health/live")[0] == 200
        assert request(port, "GET", "/v2/models/mnist")[0] == 200
        samples = metric_samples(port)
        assert sample(samples, "mnist_engine_queue_rows", model="mnist") == 3
        assert sample(samples, "mnist_engine_queue_requests", model="mnist") == 2
        busy.gate.opened.set()
        for future, want in ((held, rows[:2]), (third, rows[4:5])):
            status, _, body = future.result(30)
            assert status == 200
            got = np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(len(want), 10)
            assert np.array_equal(got, engine.predict(want))
        # An empty queue takes a request larger than its bound.
        status, _, body = request(port, "POST", INFER, infer_json(rows[:12]))
        assert status == 200 and app.state.models["mnist"].queue.rows == 0
        samples = metric_samples(port)
        assert sample(samples, "mnist_engine_overload_refusals_total", model="mnist", reason="queue_full") == 2
        assert sample(samples, "mnist_engine_infer_requests_total", model="mnist", status="503") == 2


def test_a_request_past_its_queue_deadline_is_503_and_never_computed(engine, rng, monkeypatch):
    rows = rng.integers(0, 256, (3, 784), dtype=np.uint8)
    with busy_server(engine, monkeypatch, Limits(max_queue_wait=0.1), rows[:1]) as busy:
        late = busy.pool.submit(request, busy.port, "POST", INFER, infer_json(rows[1:3]))
        wait_until(lambda: busy.app.state.models["mnist"].queue.requests == 2)
        time.sleep(0.3)  # past its 0.1 s deadline while the engine is still held
        busy.gate.opened.set()
        assert busy.held.result(30)[0] == 200
        status, headers, body = late.result(30)
    assert status == 503 and headers["retry-after"] == "1"
    assert "in the model's queue, past its deadline (--max-queue-ms)" in json.loads(body)["error"]
    assert [len(c) for c in busy.gate.computed] == [1]


@pytest.mark.parametrize("max_batch, held_rows, gone_rows", [(256, 1, WATCH_ROWS), (2, 3, 1)],
                         ids=["many rows", "few rows behind a full batch"])
def test_the_rows_of_a_client_that_went_away_are_never_computed(engine, rng, monkeypatch, max_batch, held_rows,
                                                                 gone_rows):
    """Watched: requests of WATCH_ROWS rows or more, and any request queued behind more than a
    batch of rows (a few rows that would be computed at once cost less than the watch)."""
    rows = rng.integers(0, 256, (held_rows + gone_rows, 784), dtype=np.uint8)
    with busy_server(engine, monkeypatch, Limits(max_batch=max_batch), rows[:held_rows]) as busy:
        body = infer_json(rows[held_rows:])
        gone = socket.create_connection(("127.0.0.1", busy.port))
        gone.sendall(f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        queue = busy.app.state.models["mnist"].queue
        wait_until(lambda: queue.requests == 2)  # decoded and queued behind the held batch
        gone.close()
        wait_until(lambda: queue.requests == 1)  # its handler saw the disconnect and left the queue
        busy.gate.opened.set()
        assert busy.held.result(30)[0] == 200
        samples = metric_samples(busy.port)
    assert [len(c) for c in busy.gate.computed] == [held_rows]
    assert sample(samples, "mnist_engine_infer_requests_total", model="mnist", status="499") == 1


def read_reply(sock: socket.socket) -> bytes:
    """One HTTP reply with a JSON body, read until its closing brace."""
    sock.settimeout(30)
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, reply[:200]
        reply += chunk
    return reply


def test_bodies_beyond_the_budget_wait_unread_then_get_503_while_health_is_answered(engine, rng):
    """Two uploads that have sent all but the end of their bodies fill the budget; a third request
    waits for --max-queue-ms, gets 503, and the two are answered when their bodies end."""
    app = create_app({"mnist": engine}, Limits(max_body=1 << 20, body_budget=2 << 20, max_queue_wait=0.3,
                                               min_body_rate=0))
    rows = rng.integers(0, 256, (2, 784), dtype=np.uint8)
    bodies = [infer_json(rows[i:i + 1]) for i in range(2)]
    bodies = [b + b" " * ((1 << 20) - len(b)) for b in bodies]  # JSON allows the padding
    with server_in_thread(app) as port:
        uploads = [socket.create_connection(("127.0.0.1", port)) for _ in bodies]
        for upload, body in zip(uploads, bodies):
            upload.sendall(f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:-1000])
        wait_until(lambda: app.state.budget.in_use == 2 << 20)  # each took its whole body (one window)
        status, headers, body = request(port, "POST", INFER, infer_json(rows[:1]))
        assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
        error = json.loads(body)["error"]
        assert "its budget is 2097152, --body-budget" in error and "waited 300 ms (--max-queue-ms)" in error
        assert request(port, "GET", "/v2/health/live")[0] == 200
        replies = []
        for upload, body in zip(uploads, bodies):
            upload.sendall(body[-1000:])  # the held uploads complete and are answered
            replies.append(read_reply(upload))
            upload.close()
        wait_until(lambda: app.state.budget.in_use == 0)
        samples = metric_samples(port)
    for i, reply in enumerate(replies):
        assert reply.startswith(b"HTTP/1.1 200")
        got = np.asarray(json.loads(reply.split(b"\r\n\r\n", 1)[1])["outputs"][0]["data"], np.float32)
        assert np.array_equal(got.reshape(1, 10), engine.predict(rows[i:i + 1]))
    assert sample(samples, "mnist_engine_overload_refusals_total", model="mnist", reason="body_budget") == 1


def test_slow_senders_hold_only_what_they_sent_and_are_cut_by_the_minimum_rate(engine, rng):
    """Three clients declare the largest body each (together more than the budget) and send a byte
    every 50 ms. They hold a window of the budget each, not what they declared, so a polite request
    is answered at once; after the first second each slow body falls behind --min-body-rate and
    gets 408, its connection closed and its share given back."""
    app = create_app({"mnist": engine}, Limits(max_body=4 << 20, body_budget=8 << 20, min_body_rate=1000,
                                               body_timeout=30))
    rows = rng.integers(0, 256, (1, 784), dtype=np.uint8)
    with server_in_thread(app) as port:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        for s in slow:
            s.sendall(f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {4 << 20}\r\n\r\n{{".encode())
        status, _, body = request(port, "POST", INFER, infer_json(rows))
        assert status == 200
        assert np.array_equal(np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(1, 10),
                              engine.predict(rows))
        assert app.state.budget.in_use <= 3 * BUDGET_WINDOW < 8 << 20
        replies = [b""] * len(slow)
        for _ in range(200):  # 10 s at most; each is cut after about one
            for i, s in enumerate(slow):
                if replies[i].endswith(b"}"):
                    continue
                with contextlib.suppress(OSError):
                    s.sendall(b" ")
                s.settimeout(0.05)
                with contextlib.suppress(socket.timeout):
                    replies[i] += s.recv(4096)
            if all(r.endswith(b"}") for r in replies):
                break
        for s in slow:
            s.settimeout(5)
            assert s.recv(4096) == b""  # closed by the server
            s.close()
        wait_until(lambda: app.state.budget.in_use == 0)
    for reply in replies:
        head, _, payload = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
        error = json.loads(payload)["error"]
        assert "bytes/s" in error and "the least this server takes is 1000 bytes/s (--min-body-rate)" in error


# -- decoding off the event loop -------------------------------------------------------------------

@pytest.fixture
def in_server(monkeypatch):
    """The length of each body decode_infer_request decoded in this process (not in a worker)."""
    import mnist_engine.serve.decoding as decoding

    bodies = []
    real = decoding.decode_infer_request
    monkeypatch.setattr(decoding, "decode_infer_request", lambda *a: bodies.append(len(a[0])) or real(*a))
    return bodies


def test_large_json_is_decoded_in_a_worker_process_replaced_if_it_died(engine, rng, in_server):
    app = create_app({"mnist": engine})
    rows = rng.integers(0, 256, (120, 784), dtype=np.uint8)
    large = infer_json(rows)
    assert len(large) > INLINE_JSON_BYTES
    with server_in_thread(app) as port:
        status, _, body = request(port, "POST", INFER, infer_json(rows[:2]))
        assert status == 200 and in_server == [len(infer_json(rows[:2]))]  # small: inline
        status, _, body = request(port, "POST", INFER, large)
        assert status == 200 and len(in_server) == 1  # large: not in this process
        got = np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(120, 10)
        assert np.array_equal(got, engine.predict(rows))
        # A refusal from the worker is the same 400 the inline decoder gives.
        wrong = large.replace(b'"UINT8"', b'"BYTES"')
        status, _, body = request(port, "POST", INFER, wrong)
        assert status == 400 and json.loads(body)["error"] == ('input datatype "BYTES" is not supported; '
                                                               "expected one of FP32, UINT8")
        worker = app.state.decoder._idle[0].process
        os.kill(worker.pid, signal.SIGKILL)  # died while idle: replaced before the next body
        wait_until(lambda: worker.returncode is not None)
        status, _, body = request(port, "POST", INFER, large)
        assert status == 200
        assert np.array_equal(np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(120, 10),
                              engine.predict(rows))
        assert app.state.decoder._idle[0].process.pid != worker.pid
    assert len(in_server) == 1


def test_a_worker_dying_mid_decode_fails_that_request_with_503_and_the_next_gets_a_new_one(engine, rng,
                                                                                          monkeypatch):
    from mnist_engine.serve.decoding import _Worker

    dies = ("-c", "import sys; sys.stdin.buffer.read(8); sys.exit(1)")  # reads a message's length, then dies
    monkeypatch.setattr(_Worker, "command", dies)
    app = create_app({"mnist": engine})
    rows = rng.integers(0, 256, (120, 784), dtype=np.uint8)
    with server_in_thread(app) as port:
        status, headers, body = request(port, "POST", INFER, infer_json(rows))
        assert status == 503 and headers["retry-after"] == "1"
        assert "the process decoding this request's JSON died" in json.loads(body)["error"]
        monkeypatch.setattr(_Worker, "command", ("-m", "mnist_engine.serve.decode_worker"))
        status, _, body = request(port, "POST", INFER, infer_json(rows))
        samples = metric_samples(port)
    assert status == 200
    assert np.array_equal(np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(120, 10),
                          engine.predict(rows))
    assert sample(samples, "mnist_engine_overload_refusals_total", model="mnist", reason="decoder_restarted") == 1


def nested_pixels_json(rows: np.ndarray, shape) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": "UINT8", "shape": list(shape),
                                   "data": rows.reshape(shape).tolist()}]}).encode()


def test_what_decides_where_json_is_decoded_is_its_cost_not_its_header(rng):
    rows = rng.integers(0, 256, (120, 784), dtype=np.uint8)
    small, large = infer_json(rows[:2]), infer_json(rows)
    assert len(small) < INLINE_JSON_BYTES < len(large)
    assert not costly_json(small, None) and costly_json(large, None)
    # The header form: the JSON is the header's count of bytes, whatever follows it.
    assert costly_json(large, str(len(large)))
    assert not costly_json(small + bytes(4 << 20), str(len(small)))  # binary tensors after a small header
    assert costly_json(large, "not a number")  # refused by the decoder, in the worker
    # Few bytes, many arrays: 6 rows of 784 one-element lists.
    brackets = nested_pixels_json(rows[:6], (6, 784, 1))
    assert len(brackets) < INLINE_JSON_BYTES and brackets.count(b"[") > INLINE_JSON_CONTAINERS
    assert costly_json(brackets, None)
    assert not costly_json(nested_pixels_json(rows[:64], (64, 28, 28)), None)  # images as rows of rows: inline


def test_json_in_the_header_form_and_bracket_heavy_json_are_decoded_in_the_worker(engine, rng, in_server):
    app = create_app({"mnist": engine})
    rows = rng.integers(0, 256, (120, 784), dtype=np.uint8)
    large = infer_json(rows)
    with server_in_thread(app) as port:
        status, headers, body = request(port, "POST", INFER, large,
                                        {"Inference-Header-Content-Length": str(len(large))})
        assert status == 200
        assert np.array_equal(np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(120, 10),
                              engine.predict(rows))
        status, _, body = request(port, "POST", INFER, nested_pixels_json(rows[:6], (6, 784, 1)))
        assert status == 400 and "shape" in json.loads(body)["error"]  # refused as inline, by the worker
    assert in_server == []


def test_a_stalled_worker_costs_its_requests_a_503_within_the_deadline_and_is_replaced(engine, rng):
    app = create_app({"mnist": engine}, Limits(max_queue_wait=0.5))
    rows = rng.integers(0, 256, (120, 784), dtype=np.uint8)
    large = infer_json(rows)
    with server_in_thread(app) as port:
        assert request(port, "POST", INFER, large)[0] == 200  # starts the worker
        stalled = app.state.decoder._idle[0].process
        os.kill(stalled.pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(3) as pool:
                answers = list(pool.map(lambda _: request(port, "POST", INFER, large), range(3)))
        finally:
            if stalled.returncode is None:
                os.kill(stalled.pid, signal.SIGCONT)
        for status, headers, body in answers:
            assert status == 503 and headers["retry-after"] == "1"
            assert "(--max-queue-ms" in json.loads(body)["error"]
        wait_until(lambda: stalled.returncode is not None)  # killed, not left stopped
        status, _, body = request(port, "POST", INFER, large)
        samples = metric_samples(port)
    assert status == 200
    assert np.array_equal(np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(120, 10),
                          engine.predict(rows))
    assert sample(samples, "mnist_engine_overload_refusals_total", model="mnist", reason="decode_deadline") == 3


def test_json_that_would_take_the_worker_past_its_memory_limit_is_413_and_a_fresh_worker_goes_on(engine, rng):
    app = create_app({"mnist": engine}, Limits(max_body=1 << 20, decode_memory=4 << 20))
    rows = rng.integers(0, 256, (400, 784), dtype=np.uint8)
    heavy = nested_pixels_json(rows[:180], (180, 784, 1))  # a list per pixel: ~10 MiB of lists from 0.9 MiB
    assert len(heavy) <= 1 << 20
    with server_in_thread(app) as port:
        status, _, body = request(port, "POST", INFER, heavy)
        assert status == 413 and "(--decode-memory)" in json.loads(body)["error"]
        assert app.state.decoder._idle == []  # that worker retired: what it freed may not go back to the system
        status, _, body = request(port, "POST", INFER, infer_json(rows[:120]))
    assert status == 200
    assert np.array_equal(np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(120, 10),
                          engine.predict(rows[:120]))


# -- /metrics ------------------------------------------------------------------------------------

def test_metrics_count_what_was_answered_in_the_prometheus_format(engine, rng):
    app = create_app({"mnist": engine}, Limits(max_batch=64))
    rows = rng.integers(0, 256, (5, 784), dtype=np.uint8)
    with server_in_thread(app) as port:
        samples = metric_samples(port)  # before any traffic: the series exist, at zero
        assert sample(samples, "mnist_engine_infer_requests_total", model="mnist", status="200") == 0
        for n in (1, 2, 2):
            assert request(port, "POST", INFER, infer_json(rows[:n]))[0] == 200
        assert request(port, "POST", INFER, b"{")[0] == 400
        assert request(port, "POST", "/v2/models/other/infer", infer_json(rows[:1]))[0] == 404
        samples = metric_samples(port)
        status, headers, body = request(port, "GET", "/metrics", headers={"Accept": "application/openmetrics-text"})
        assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
        assert request(port, "GET", "/metrics", headers={"Host": "evil.example"})[0] == 421
    assert sample(samples, "mnist_engine_infer_requests_total", model="mnist", status="200") == 3
    assert sample(samples, "mnist_engine_infer_requests_total", model="mnist", status="400") == 1
    assert sample(samples, "mnist_engine_infer_requests_total", model="", status="404") == 1
    assert sample(samples, "mnist_engine_infer_duration_seconds_count", model="mnist") == 4
    # Sequential requests: one batch each, of their own rows.
    assert sample(samples, "mnist_engine_batch_rows_count", model="mnist") == 3
    assert sample(samples, "mnist_engine_batch_rows_sum", model="mnist") == 5
    assert sample(samples, "mnist_engine_batch_rows_bucket", model="mnist", le="1.0") == 1
    assert sample(samples, "mnist_engine_batch_rows_bucket", model="mnist", le="2.0") == 3
    assert sample(samples, "mnist_engine_queue_rows", model="mnist") == 0
    assert sample(samples, "mnist_engine_body_bytes_in_flight") == 0
    assert sample(samples, "mnist_engine_body_budget_bytes") == 4 * (8 << 20)


def test_the_overload_options_reach_the_limits(capsys, monkeypatch):
    import mnist_engine.serve as serve
    import mnist_engine.serve.connections as connections
    from mnist_engine.cli import main
    from mnist_engine.serve.connections import ConnectionLimits

    class Reached(Exception):
        pass

    seen = {}

    def protocol(limits):  # the last step before uvicorn runs: stop there
        seen["connections"] = limits
        raise Reached

    def app(models, limits, **options):
        seen.update(limits=limits, access_log=options["access_log"])

    monkeypatch.setattr(serve, "create_app", app)
    monkeypatch.setattr(connections, "bounded_protocol", protocol)
    with pytest.raises(Reached):
        main(["serve", "--port", "0", "--model", f"mnist={mnist_engine.default_model_path()}", "--max-batch", "32",
              "--max-delay-ms", "2", "--max-body", "1000", "--body-timeout", "3", "--min-body-rate", "123",
              "--max-queue-ms", "250", "--max-queue-rows", "77", "--max-queue-bytes", "9999", "--body-budget", "5000",
              "--decode-processes", "2", "--decode-memory", "65536", "--max-header-bytes", "4096",
              "--header-timeout", "2.5", "--max-connections", "300", "--debug"])
    assert seen["limits"] == Limits(max_batch=32, max_delay=0.002, max_body=1000, body_timeout=3.0, min_body_rate=123,
                                    max_queue_wait=0.25, max_queue_rows=77, max_queue_bytes=9999, body_budget=5000,
                                    decode_processes=2, decode_memory=65536)
    assert seen["connections"] == ConnectionLimits(max_head_bytes=4096, head_timeout=2.5, max_connections=300)
    assert seen["access_log"] is sys.stderr  # on by default
    with pytest.raises(Reached):
        main(["serve", "--port", "0", "--model", f"mnist={mnist_engine.default_model_path()}", "--no-access-log",
              "--debug"])
    assert seen["access_log"] is None
    capsys.readouterr()
    assert main(["serve", "--max-body", "1000", "--body-budget", "1500"]) == 2
    assert "must hold at least two bodies of the largest size (1000 bytes, --max-body)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--max-queue-rows", "0"])
    assert "--max-queue-rows" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--max-queue-ms", "-5"])
    assert "expected a finite number >= 0, got -5" in capsys.readouterr().err
    limits = Limits(max_batch=32, max_body=1000).resolved()
    assert (limits.max_queue_rows, limits.body_budget) == (64 * 32, 4000)
    assert 16 << 20 <= limits.max_queue_bytes <= 256 << 20
