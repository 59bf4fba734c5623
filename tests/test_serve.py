"""mnist-engine serve: the Open Inference Protocol as tritonclient speaks it, answers bit for bit
equal to a local predict, dynamic batching that never mixes up whose rows are whose, every bad
request a 4xx with a JSON error (the server serving on), and SIGTERM finishing what is in flight."""
from __future__ import annotations

import io
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mnist_engine
from conftest import require
from serving import infer_json, request, server_in_thread, server_process

require("starlette")
require("uvicorn")
from mnist_engine.serve import Limits, create_app  # noqa: E402
from mnist_engine.serve.protocol import ModelSignature, RequestError, decode_infer_request  # noqa: E402

INFER = "/v2/models/mnist/infer"


@pytest.fixture(scope="module")
def engine():
    return mnist_engine.load(mnist_engine.default_model_path())


@pytest.fixture(scope="module")
def app(engine):
    # A long batch window, so that concurrent requests really do share predict calls in the tests.
    return create_app({"mnist": engine}, Limits(max_batch=64, max_delay=0.005, max_body=1 << 20, body_timeout=1.0))


@pytest.fixture(scope="module")
def port(app):
    with server_in_thread(app) as port:
        yield port


@pytest.fixture(scope="module")
def triton(port):
    http = require("tritonclient.http")
    client = http.InferenceServerClient(f"127.0.0.1:{port}", concurrency=8)
    yield client
    client.close()


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)


# -- the protocol, as tritonclient speaks it -------------------------------------------------------

def test_health_and_metadata_through_tritonclient(triton):
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready("mnist")
    server = triton.get_server_metadata()
    assert server["name"] == "mnist-engine" and "binary_tensor_data" in server["extensions"]
    model = triton.get_model_metadata("mnist")
    assert model["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [-1, 28, 28]}]
    assert model["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert model["parameters"]["input_shapes"] == [[-1, 784], [-1, 28, 28]]
    assert not triton.is_model_ready("absent")


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
@pytest.mark.parametrize("form", ["uint8 (N, 28, 28)", "uint8 (N, 784)", "fp32 (N, 784)"])
def test_tritonclient_infer_equals_local_predict_bit_for_bit(triton, engine, images, form, binary_in, binary_out):
    http = require("tritonclient.http")
    x = {"uint8 (N, 28, 28)": images, "uint8 (N, 784)": images.reshape(len(images), 784),
         "fp32 (N, 784)": images.reshape(len(images), 784).astype(np.float32) / 255}[form]
    tensor = http.InferInput("input", list(x.shape), "UINT8" if x.dtype == np.uint8 else "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    result = triton.infer("mnist", [tensor], outputs=[http.InferRequestedOutput("probabilities",
                                                                                   binary_data=binary_out)],
                          request_id="req-7")
    got = result.as_numpy("probabilities")
    assert got.dtype == np.float32 and got.shape == (7, 10)
    assert np.array_equal(got.view(np.uint32), engine.predict(x).view(np.uint32))
    assert result.get_response()["id"] == "req-7"


def test_tritonclient_defaults_get_binary_outputs(triton, engine, images):
    http = require("tritonclient.http")
    tensor = http.InferInput("input", [7, 28, 28], "UINT8")
    tensor.set_data_from_numpy(images)
    got = triton.infer("mnist", [tensor]).as_numpy("probabilities")  # no outputs named: binary, as Triton
    assert np.array_equal(got, engine.predict(images))


def test_a_refusal_reaches_the_tritonclient_user_as_its_message(triton):
    http = require("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    tensor = http.InferInput("input", [1, 27], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 27), np.uint8))
    with pytest.raises(InferenceServerException, match=r"input shape \[1, 27\] is not supported; expected "
                                                       r"\[N, 784\] or \[N, 28, 28\]"):
        triton.infer("mnist", [tensor])


def test_plain_json_as_curl_sends_it(port, engine, images):
    status, headers, body = request(port, "POST", INFER, infer_json(images[:2]))
    assert status == 200 and headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["model_name"] == "mnist" and answer["outputs"][0]["shape"] == [2, 10]
    got = np.asarray(answer["outputs"][0]["data"], np.float32).reshape(2, 10)
    assert np.array_equal(got, engine.predict(images[:2]))  # JSON floats carry float32 bits exactly


def test_versioned_paths_and_unknown_models(port):
    assert request(port, "GET", "/v2/models/mnist/versions/1/ready")[0] == 200
    status, _, body = request(port, "GET", "/v2/models/mnist/versions/2")
    assert status == 404 and json.loads(body)["error"] == "model 'mnist' has no version '2'; its version is '1'"
    status, _, body = request(port, "POST", "/v2/models/fashion/infer", b"{}")
    assert status == 404 and json.loads(body)["error"] == "model 'fashion' is not served; served models: mnist"


# -- dynamic batching -------------------------------------------------------------------------------

def test_concurrent_clients_share_batches_and_each_gets_its_own_answer(app, port, engine, rng):
    """48 clients x 12 requests of 1..5 random images each, all at once: every answer is the local
    predict of exactly that request's rows, and the server ran fewer predict calls than requests."""
    batcher_before = app.state.models["mnist"].batchers.get("UINT8")
    calls_before = batcher_before.batches if batcher_before else 0
    jobs = [rng.integers(0, 256, (int(rng.integers(1, 6)), 784), dtype=np.uint8) for _ in range(48 * 12)]

    def client(first: int) -> int:
        wrong = 0
        for rows in jobs[first::48]:
            status, _, body = request(port, "POST", INFER, infer_json(rows, id=str(rows.sum())))
            answer = json.loads(body)
            got = np.asarray(answer["outputs"][0]["data"], np.float32).reshape(len(rows), 10)
            wrong += status != 200 or answer["id"] != str(rows.sum()) or not np.array_equal(got, engine.predict(rows))
        return wrong

    with ThreadPoolExecutor(48) as pool:
        assert sum(pool.map(client, range(48))) == 0
    batcher = app.state.models["mnist"].batchers["UINT8"]
    calls = batcher.batches - calls_before
    assert calls < len(jobs) * 0.8, f"{len(jobs)} requests ran as {calls} predict calls: no batching"


def test_a_batch_never_exceeds_max_batch_and_big_requests_run_alone(engine, rng):
    import asyncio

    from mnist_engine.serve.batcher import DynamicBatcher

    seen = []

    class Recording:
        def predict(self, x, range_check="warn"):
            seen.append(len(x))
            return engine.predict(x, range_check=range_check)

    async def main():
        batcher = DynamicBatcher(Recording(), max_batch=10, max_delay=0.05)
        batcher.start()
        sizes = [3, 4, 5, 12, 1, 2]
        rows = [rng.integers(0, 256, (n, 784), dtype=np.uint8) for n in sizes]
        outs = await asyncio.gather(*(batcher.predict(r) for r in rows))
        await batcher.stop()
        return rows, outs

    rows, outs = asyncio.run(main())
    assert all(np.array_equal(o, engine.predict(r)) for r, o in zip(rows, outs))
    # 3+4 fit, 5 would overflow; 5 waits, then 12 alone; then 1+2.
    assert seen == [7, 5, 12, 3]


def test_a_failing_batch_fails_only_its_requests_and_the_batcher_goes_on(engine, rng):
    """Whatever a batch raises (here a MemoryError, as np.concatenate or predict may) reaches that
    batch's requests alone; the next batch is computed, and stop() returns (it used to spin)."""
    import asyncio

    from mnist_engine.serve.batcher import DynamicBatcher

    class FailsOnce:
        calls = 0

        def predict(self, x, range_check="warn"):
            FailsOnce.calls += 1
            if FailsOnce.calls == 1:
                raise MemoryError("out of memory joining the batch")
            return engine.predict(x, range_check=range_check)

    async def main():
        batcher = DynamicBatcher(FailsOnce(), max_batch=10, max_delay=0.01)
        batcher.start()
        rows = [rng.integers(0, 256, (2, 784), dtype=np.uint8) for _ in range(3)]
        first = await asyncio.gather(*(batcher.predict(r) for r in rows[:2]), return_exceptions=True)
        later = await batcher.predict(rows[2])
        await asyncio.wait_for(batcher.stop(), 5)
        return first, later, rows

    first, later, rows = asyncio.run(main())
    assert all(isinstance(f, MemoryError) for f in first)
    assert np.array_equal(later, engine.predict(rows[2]))


def test_a_failing_batch_is_a_one_line_500_and_the_server_serves_on(port, engine, images, monkeypatch):
    from mnist_engine.serve.batcher import DynamicBatcher

    real = DynamicBatcher._predict
    failures = iter([MemoryError("out of memory")])

    def fails_once(self, inputs):
        for e in failures:
            raise e
        return real(self, inputs)

    monkeypatch.setattr(DynamicBatcher, "_predict", fails_once)
    status, headers, response = request(port, "POST", INFER, infer_json(images[:1]))
    assert status == 500 and headers["content-type"] == "application/json"
    assert json.loads(response)["error"] == ("internal error computing this request's batch (MemoryError: out of "
                                             "memory); the server goes on")
    status, _, response = request(port, "POST", INFER, infer_json(images[:2]))
    assert status == 200


# -- bad requests: 4xx, a JSON error, and the server serves on ------------------------------------

SIG = ModelSignature("mnist", 784, 10, "probabilities")
ZEROS = [0] * 784


def body(**tensor):
    return json.dumps({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 784], "data": ZEROS,
                                   **tensor}]}).encode()


def binary_request(declared: int, sent: int, rows: int = 1):
    """A binary-tensor request declaring `declared` bytes and carrying `sent`; (body, header length)."""
    header = json.dumps({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [rows, 784],
                                     "parameters": {"binary_data_size": declared}}]}).encode()
    return header + bytes(sent), str(len(header))


BAD_REQUESTS = {
    "not JSON": (b"{bad", None, r"^the request body is not valid JSON"),
    "a pickle": (b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.", None, r"^the request body is not valid JSON"),
    "a JSON list": (b"[1, 2]", None, r"^the request body must be a JSON object, got list"),
    "no inputs": (b"{}", None, r"^'inputs' must be a list of exactly one tensor object; got NoneType"),
    "two inputs": (json.dumps({"inputs": [{}, {}]}).encode(), None, r"got 2 inputs"),
    "INT64": (body(datatype="INT64"), None, r"^input datatype \"INT64\" is not supported; expected one of FP32, UINT8"),
    "a 27-wide row": (body(shape=[1, 27], data=[0] * 27), None, r"^input shape \[1, 27\] is not supported"),
    "no rows": (body(shape=[0, 784], data=[]), None, r"^input shape \[0, 784\] is not supported; .* N >= 1"),
    "a string shape": (body(shape="1x784"), None, r"^input 'shape' must be a list of integers"),
    "too few values": (body(data=[0] * 700), None, r"^input 'data' has 700 values; its shape needs 784"),
    "a string value": (body(data=["a"] * 784), None, r"^input 'data' must be an array of numbers"),
    "ragged rows": (body(shape=[2, 784], data=[ZEROS, [0]]), None, r"^input 'data' must be an array of numbers"),
    "UINT8 of 256": (body(data=[256] * 784), None, r"^UINT8 input 'data' must be integers 0..255"),
    "UINT8 of 0.5": (body(data=[0.5] * 784), None, r"^UINT8 input 'data' must be integers 0..255"),
    "FP32 NaN": (body(datatype="FP32", data=[float("nan")] * 784), None, r"^FP32 input 'data' must be finite"),
    "FP32 too large": (body(datatype="FP32", data=[1e39] * 784), None, r"^FP32 input 'data' must be finite"),
    "binary too short": (*binary_request(10, 10), r"^binary input has 10 bytes; its shape needs 784"),
    "header past the body": (body(), "99999", r"^Inference-Header-Content-Length is 99999, but the body has"),
    "header not a number": (body(), "abc", r"^Inference-Header-Content-Length must be an integer"),
    "binary size lies": (*binary_request(5, 784), r"^input parameters.binary_data_size is 5, but 784 bytes follow"),
    # Each of these was a 500 (issue 24): sizes wrapped in int64, the parser's recursion, long numbers.
    "a wrapping shape": (*binary_request(784, 784, rows=2 ** 60 + 1), r"^binary input has 784 bytes; its shape needs "
                         r"903890459611768029968 "),
    "deep nesting": (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, r"^the request body nests its JSON "
                     r"too deeply"),
    "a 5,000-digit integer": (b'{"inputs": [], "id": ' + b"9" * 5000 + b"}", None,
                              r"^the request body holds a number too long to read"),
    "10**400 in the data": (body(data=[10 ** 400] * 784), None, r"^input 'data' must be an array of numbers"),
    "unknown output": (json.dumps({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 784],
                                               "data": ZEROS}], "outputs": [{"name": "logits"}]}).encode(), None,
                       r"^output \"logits\" does not exist; this model's outputs are 'probabilities'"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_say_what_was_expected(case):
    payload, header, message = BAD_REQUESTS[case]
    with pytest.raises(RequestError, match=message) as info:
        decode_infer_request(payload, header, SIG)
    assert info.value.status == 400


def test_bad_requests_over_http_are_4xx_and_the_server_serves_on(port, engine, images):
    for payload, header, message in BAD_REQUESTS.values():
        headers = {"Inference-Header-Content-Length": header} if header else {}
        status, response_headers, response = request(port, "POST", INFER, payload, headers)
        assert status == 400 and response_headers["content-type"] == "application/json"
        assert re.search(message, json.loads(response)["error"])
    assert request(port, "GET", "/v2/nothing")[0] == 404
    assert request(port, "DELETE", INFER)[0] == 405
    status, _, response = request(port, "POST", INFER, infer_json(images[:1]))
    assert status == 200


def test_a_body_over_the_limit_is_413_declared_or_streamed(port):
    # Refused on the header alone, before the 2 MiB are sent.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {2 << 20}\r\n\r\n".encode())
        reply = raw.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413") and "the body is 2097152 bytes; the limit is 1048576" in reply

    def chunks():  # no Content-Length: the limit holds while the body streams in
        for _ in range(40):
            yield bytes(64 << 10)

    status, _, response = request(port, "POST", INFER, chunks())  # http.client sends it chunked
    assert status == 413 and "over the limit of 1048576 bytes" in json.loads(response)["error"]


def test_a_compressed_body_is_415(port):
    status, _, response = request(port, "POST", INFER, b"x", {"Content-Encoding": "gzip"})
    assert status == 415 and "send the body uncompressed" in json.loads(response)["error"]


def test_a_slow_body_times_out_with_408_and_others_are_served_meanwhile(port, images):
    """A slowloris client declares 10 kB and trickles it: it gets 408 after body_timeout (1 s),
    and a normal request sent while it trickles is answered at once."""
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000\r\n\r\n{{".encode())
    answered = []

    def trickle():
        for _ in range(8):
            try:
                slow.sendall(b" ")
            except OSError:
                return
            time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    answered.append(request(port, "POST", INFER, infer_json(images[:1]))[0])
    assert answered == [200] and time.monotonic() - started < 0.9
    slow.settimeout(10)
    reply = slow.recv(4096).decode()
    slow.close()
    assert reply.startswith("HTTP/1.1 408"), reply[:80]
    assert "the body did not arrive within 1 s" in reply


# -- the command: defaults, the page, SIGTERM ------------------------------------------------------

def test_sigterm_finishes_the_request_in_flight_then_exits_0(engine, images):
    # A 2 s batch window holds the request inside the server when SIGTERM comes.
    with server_process("--max-delay-ms", "2000") as (process, port):
        results = []
        thread = threading.Thread(target=lambda: results.append(request(port, "POST", INFER,
                                                                       infer_json(images[:3]))))
        thread.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        thread.join(30)
        assert process.wait(30) == 0
        status, _, body = results[0]
        assert status == 200
        got = np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(3, 10)
        assert np.array_equal(got, engine.predict(images[:3]))
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)


def test_the_access_log_has_a_line_per_request_with_its_rows_and_escapes_the_path(engine, images):
    log = io.StringIO()
    app = create_app({"mnist": engine}, access_log=log)
    with server_in_thread(app) as port:
        assert request(port, "POST", INFER, infer_json(images[:3]))[0] == 200
        assert request(port, "GET", "/v2/health/live")[0] == 200
        assert request(port, "GET", "/v2/x%0a2026-12-08T00:00:00.000Z%20forged")[0] == 404
        assert request(port, "GET", "/v2/health/live", headers={"Host": "evil.example"})[0] == 421
    lines = log.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z 127\.0\.0\.1:\d+"
    expected = [rf"{stamp} POST {INFER} 200 rows=3 \d+\.\d\dms", rf"{stamp} GET /v2/health/live 200 rows=- \d+\.\d\dms",
                rf"{stamp} GET /v2/x\\n2026-12-08T00:00:00\.000Z forged 404 rows=- \d+\.\d\dms",
                rf"{stamp} GET /v2/health/live 421 rows=- \d+\.\d\dms"]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), line


def test_only_the_allowed_hosts_are_answered(port, images):
    """DNS rebinding: a page on evil.example that resolves to 127.0.0.1 sends Host: evil.example.
    Loopback is answered in every spelling; a Host that is not plainly host[:port] is a 400, since a
    lenient parser reads 'evil.com@localhost' as localhost."""
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST", "localhost.",
                 f"localhost.:{port}", "[0:0:0:0:0:0:0:1]", f"[0:0:0:0:0:0:0:1]:{port}"):
        assert request(port, "POST", INFER, infer_json(images[:1]), {"Host": host})[0] == 200, host
    for host in (f"evil.example:{port}", "127.0.0.2", "localhost.evil.example", "[::2]"):
        status, headers, body = request(port, "GET", "/v2/health/live", headers={"Host": host})
        assert status == 421 and headers["content-type"] == "application/json", host
        assert json.loads(body)["error"] == (f"this server does not answer to the host {host!r}; it answers to "
                                             "localhost, 127.0.0.1, ::1 (add a name with --allow-host, or '*' for any)")
    for host in ("evil.com@localhost", "localhost/evil.com", "localhost?x", "localhost#x", "[::1", "::1",
                 "localhost:99999", "localhost:", "localhost..", "-localhost", "local_host", "[127.0.0.1]", ""):
        status, headers, body = request(port, "GET", "/v2/health/live", headers={"Host": host})
        assert status == 400 and headers["content-type"] == "application/json", host
        assert json.loads(body)["error"] == ("expected a Host header of the form host[:port] (a DNS name or an IP "
                                             f"address), got {host!r}"), host


def test_two_host_headers_are_refused_whichever_comes_first(port):
    """With two Host headers, which one a layer reads is up to that layer: refuse the request."""
    for first, second in (("localhost", "evil.example"), ("evil.example", "localhost"), ("localhost", "localhost")):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: {first}\r\nHost: {second}\r\n"
                        "Connection: close\r\n\r\n".encode())
            reply = b""
            while chunk := raw.recv(65536):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), (first, second, head)
        assert json.loads(body)["error"] == "expected one Host header, got 2"


def test_the_allowed_hosts_follow_the_bound_address_and_allow_host():
    from mnist_engine.serve.hosts import allowed_hosts, host_name

    assert allowed_hosts("127.0.0.1") == ("localhost", "127.0.0.1", "::1")
    assert allowed_hosts("0.0.0.0", ["Digits.lan"]) == ("localhost", "127.0.0.1", "::1", "digits.lan")
    assert allowed_hosts("192.168.1.5", ["[fe80::1]"]) == ("localhost", "127.0.0.1", "::1", "192.168.1.5", "fe80::1")
    assert allowed_hosts("::1", ["Digits.LAN.", "*"]) == ("localhost", "127.0.0.1", "::1", "digits.lan", "*")
    with pytest.raises(ValueError, match="expected a host name or an IP address to allow, got 'a b'"):
        allowed_hosts("127.0.0.1", ["a b"])
    assert [host_name(h) for h in ("a.b:80", "[::1]:8000", "[::1", "x:port", None)] == ["a.b", "::1", None, None, None]
    assert [host_name(h) for h in ("A.B.:80", "[0:0::1]", "a@b", "a b", "x:65536", "127.0.0.1:0")] == \
        ["a.b", "::1", None, None, None, "127.0.0.1"]


def test_allow_host_adds_a_name_on_the_command_line():
    with server_process("--allow-host", "Digits.lan") as (_process, port):
        assert request(port, "GET", "/v2/health/live", headers={"Host": f"digits.lan:{port}"})[0] == 200
        assert request(port, "GET", "/v2/health/live", headers={"Host": "other.lan"})[0] == 421
    out = subprocess.run([sys.executable, "-m", "mnist_engine.cli", "serve", "--allow-host", "digits.lan/x"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "argument --allow-host: expected a DNS name, an IP address or '*', got 'digits.lan/x'" in out.stderr


def test_a_sigterm_right_after_the_listening_line_is_honoured():
    """'listening' is printed once uvicorn's handlers are in place, and a SIGTERM before that sets
    the same exit flag: a supervisor's SIGTERM is never swallowed (it was, 2 of ~16 tries under load)."""
    for _ in range(4):
        with server_process() as (process, _port):
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0


def test_the_command_serves_named_models_on_localhost_and_the_page(tmp_path):
    model = mnist_engine.default_model_path()
    with server_process("--model", f"digits={model}", "--model", f"mnist={model}") as (process, port):
        assert any("listening on http://127.0.0.1:" in line for line in process.log)
        assert request(port, "GET", "/v2/models/digits/ready")[0] == 200
        status, headers, page = request(port, "GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b'let model = "digits";' in page and b'const MODELS = {"digits": null, "mnist": null},' in page
        assert b"<canvas id=\"pad\"" in page


def test_the_page_takes_the_model_names_as_data():
    from mnist_engine.serve.app import _page

    hostile = '</script><img src=x onerror=alert(1)>"'
    page = _page({"mnist": None, hostile: 10}, hostile)
    assert "<img" not in page and "</script><" not in page
    assert 'let model = "\\u003c/script>\\u003cimg src=x onerror=alert(1)>\\"";' in page
    assert 'const MODELS = {"mnist": null, "\\u003c/script>\\u003cimg src=x onerror=alert(1)>\\"": 10},' in page


def test_without_models_named_the_command_serves_the_bundled_models_and_the_page_reads_with_the_reader():
    with server_process() as (_, port):
        for name in ("mnist", "convnet", "reader"):
            assert request(port, "GET", f"/v2/models/{name}/ready")[0] == 200
        _, _, page = request(port, "GET", "/")
        # The reader's "not a digit" output is named where clients look for what a model gives.
        _, _, reader = request(port, "GET", "/v2/models/reader")
        _, _, convnet = request(port, "GET", "/v2/models/convnet")
    assert b'let model = "reader";' in page
    assert b'const MODELS = {"mnist": null, "convnet": null, "reader": 10},' in page
    reader, convnet = json.loads(reader), json.loads(convnet)
    assert reader["parameters"]["reject_class"] == 10 and reader["outputs"][0]["shape"] == [-1, 11]
    assert "reject_class" not in convnet["parameters"]


def test_the_page_model_must_be_served(capsys):
    from mnist_engine.cli import main

    model = mnist_engine.default_model_path()
    assert main(["serve", "--model", f"digits={model}", "--page-model", "convnet", "--port", "0"]) == 2
    assert "the page's model 'convnet' is not served; served models: digits" in capsys.readouterr().err


def test_bad_command_lines_are_one_line_errors(capsys):
    from mnist_engine.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--model", "nofile"])
    assert "expected NAME=FILE, got 'nofile'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--model", "a b=x.mnw"])
    assert "a model name is 1-64 letters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--max-delay-ms", "nan"])
    assert "expected a finite number >= 0, got nan" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert main(["serve", "--port", str(busy.getsockname()[1])]) == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_fp32_pixels_not_scaled_are_refused_with_the_warnings_sentence(port, engine, images):
    """Float input far outside the model's checked range: 400 with what a local predict warns."""
    status, _, body = request(port, "POST", INFER, infer_json(images[:2].astype(np.float32), "FP32"))
    assert status == 400
    want = engine.input_range_problem(0.0, float(images[:2].max()))
    assert json.loads(body)["error"] == f"{want} (this server refuses such input; --allow-any-range answers it)"
    assert "far outside 0..1" in want
    scaled = infer_json(images[:2].astype(np.float32) / 255, "FP32")
    assert request(port, "POST", INFER, scaled)[0] == 200


def test_allow_any_range_answers_as_predict_does(engine, images):
    app = create_app({"mnist": engine}, Limits(allow_any_range=True))
    with server_in_thread(app) as port:
        status, _, body = request(port, "POST", INFER, infer_json(images[:2].astype(np.float32), "FP32"))
    assert status == 200
    got = np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(2, 10)
    assert np.array_equal(got, engine.predict(images[:2].astype(np.float32), range_check="ignore"))
