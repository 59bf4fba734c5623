"""Load test: N concurrent clients x M requests against `mnist-engine serve` on 127.0.0.1, and the
same network served by Seldon MLServer (mlserver-sklearn, adaptive batching on) as the anchor, in
one run on one machine.

    python tools/load_test.py                           # ours only
    python tools/load_test.py --mlserver /path/to/venv  # and MLServer, from a venv that has
                                                        # mlserver, mlserver-sklearn, scikit-learn

Scenarios (each bounded by a request count and a time limit):
  single   64 clients each sending 1-image requests: requests/s, p50/p99 latency
  batch64  64-image requests: images/s, against in-process Engine.predict on the same batches
  hostile  10,000 malformed or hostile requests mixed into a good load (ours only): every one must
           be answered 4xx, the server must stay up, and its RSS must stay flat (< 20 MiB growth)
  overload hundreds of connections sending large binary and JSON bodies back to back, far past
           what the server can compute, against a server with default limits (ours only; see
           tools/overload_scenario.py): RSS growth, health p99 from a separate process, statuses

Every answer is checked: ours bit for bit against a local predict of the same rows; MLServer's
within 1e-5 and the same argmax. Both speak the Open Inference Protocol's JSON here (MLServer has
no binary-tensor extension), so the wire is the same. MLServer serves an sklearn MLPClassifier
that carries the bundled model's weights (the 1/255 input scale folded into the first layer), so
both compute the same function of the same raw pixels.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
from overload_scenario import overload_lines, overload_scenario
from server_process import start_logged

import mnist_engine
from mnist_engine._system import cpu_name
from mnist_engine.model_file import read_layers

HOSTILE_KINDS = ["not JSON", "a pickle", "wrong datatype", "wrong shape", "NaN", "out of range", "unknown model",
                 "too large", "truncated binary", "wrong method"]


@dataclass
class Result:
    name: str
    requests: int = 0
    images: int = 0
    errors: int = 0
    wrong: int = 0
    seconds: float = 0.0
    latencies: List[float] = field(default_factory=list)
    statuses: dict = field(default_factory=dict)

    def row(self) -> str:
        p50, p99 = (np.percentile(self.latencies, [50, 99]) * 1000) if self.latencies else (float("nan"),) * 2
        return (f"| {self.name} | {self.requests} | {self.requests / self.seconds:,.0f} | "
                f"{self.images / self.seconds:,.0f} | {p50:.2f} | {p99:.2f} | {self.errors} | {self.wrong} |")


HEADER = ("| server / scenario | requests | requests/s | images/s | p50 ms | p99 ms | errors | wrong |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready within {seconds:.0f} s")


def start_ours(args, defaults: bool = False) -> tuple:
    """`mnist-engine serve` (from --server-python, if given); with `defaults`, its default limits
    (and --overload-server-options)."""
    options = args.overload_server_options.split() if defaults else [
        "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms), "--max-body", str(1 << 20),
        "--body-timeout", "2"]
    log = Path(tempfile.mkdtemp(prefix="load_test-")) / "serve.log"
    process, port = start_logged([args.server_python or sys.executable, "-m", "mnist_engine", "serve", "--port", "0",
                                  *options], log)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url + "/v2/models/mnist/ready", process)
    return process, url, "/v2/models/mnist/infer"


MLSERVER_MODEL = textwrap.dedent("""
    import sys, joblib, numpy as np
    from sklearn.neural_network import MLPClassifier
    weights = np.load(sys.argv[1])
    n = len([k for k in weights.files if k.startswith("W")])
    sizes = tuple(weights[f"W{i}"].shape[1] for i in range(n - 1))
    model = MLPClassifier(hidden_layer_sizes=sizes, activation="relu", max_iter=1)
    x = np.zeros((10, weights["W0"].shape[0]), np.float32)
    import warnings; warnings.simplefilter("ignore")
    model.fit(x, np.arange(10))
    model.coefs_ = [weights[f"W{i}"] for i in range(n)]
    model.intercepts_ = [weights[f"b{i}"] for i in range(n)]
    joblib.dump(model, sys.argv[2])
""")


def start_mlserver(args, workdir: Path) -> tuple:
    python = Path(args.mlserver) / "bin" / "python"
    layers = read_layers(mnist_engine.default_model_path())
    engine = mnist_engine.load(mnist_engine.default_model_path())
    arrays = {}
    for i, layer in enumerate(layers):
        kernel = np.asarray(layer.kernel, np.float64)
        arrays[f"W{i}"] = kernel * engine.input_scale if i == 0 else kernel  # it takes raw 0..255 pixels
        arrays[f"b{i}"] = np.asarray(layer.bias, np.float64)
    model_dir = workdir / "mnist"
    model_dir.mkdir(parents=True)
    np.savez(workdir / "weights.npz", **arrays)
    subprocess.run([str(python), "-c", MLSERVER_MODEL, str(workdir / "weights.npz"), str(model_dir / "model.joblib")],
                   check=True)
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": "mnist", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "1"},
        # adaptive batching, as the issue asks: up to max_batch requests, waiting at most the same delay
        "max_batch_size": args.max_batch, "max_batch_time": args.max_delay_ms / 1000}))
    http_port = free_port()
    (workdir / "settings.json").write_text(json.dumps({"http_port": http_port, "grpc_port": free_port(),
                                                        "metrics_port": free_port(), "host": "127.0.0.1",
                                                        "debug": False}))
    process = subprocess.Popen([str(Path(args.mlserver) / "bin" / "mlserver"), "start", str(workdir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    url = f"http://127.0.0.1:{http_port}"
    wait_until_ready(url + "/v2/models/mnist/ready", process)
    return process, url, "/v2/models/mnist/infer"


def request_body(rows: np.ndarray, mlserver: bool, binary: bool = False) -> tuple:
    """(body, headers) of one infer request for `rows`."""
    json_headers = {"Content-Type": "application/json"}
    if mlserver:  # its sklearn runtime takes (N, 784) FP32 and is asked for predict_proba
        return json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), 784],
                                       "data": rows.reshape(-1).astype(float).tolist()}],
                           "outputs": [{"name": "predict_proba"}]}).encode(), json_headers
    tensor = {"name": "input", "datatype": "UINT8", "shape": [len(rows), 784]}
    if not binary:
        return json.dumps({"inputs": [{**tensor, "data": rows.reshape(-1).tolist()}]}).encode(), json_headers
    # Triton's binary-tensor extension, as tritonclient sends by default: raw bytes after the JSON.
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": rows.size}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + rows.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                     "Content-Type": "application/octet-stream"}


def response_outputs(payload: bytes, header_length: Optional[str], rows: int) -> np.ndarray:
    if header_length is None:
        return np.asarray(json.loads(payload)["outputs"][0]["data"], np.float32).reshape(rows, -1)
    return np.frombuffer(payload[int(header_length):], "<f4").reshape(rows, -1)


async def run_load(name: str, url: str, path: str, batches: List[np.ndarray], expected: List[np.ndarray],
                   clients: int, per_client: int, limit_s: float, mlserver: bool,
                   hostile: Optional[Callable[[int], tuple]] = None, hostile_every: int = 0,
                   binary: bool = False) -> Result:
    import aiohttp

    result = Result(name)
    bodies = [request_body(b, mlserver, binary) for b in batches]
    hostile_statuses: dict = {}
    deadline = time.monotonic() + limit_s

    async def client(index: int, session) -> None:
        for k in range(per_client):
            if time.monotonic() > deadline:
                return
            n = (index * per_client + k)
            if hostile and hostile_every and n % hostile_every == 0:
                method, hpath, body, headers = hostile(n // hostile_every)
                try:
                    async with session.request(method, url + hpath, data=body, headers=headers) as r:
                        await r.read()
                        hostile_statuses[r.status] = hostile_statuses.get(r.status, 0) + 1
                except aiohttp.ClientError as e:
                    hostile_statuses[type(e).__name__] = hostile_statuses.get(type(e).__name__, 0) + 1
                continue
            j = n % len(bodies)
            started = time.perf_counter()
            try:
                async with session.post(url + path, data=bodies[j][0], headers=bodies[j][1]) as r:
                    payload = await r.read()
                    status = r.status
                    header_length = r.headers.get("Inference-Header-Content-Length")
            except aiohttp.ClientError:
                result.errors += 1
                continue
            result.latencies.append(time.perf_counter() - started)
            result.requests += 1
            result.images += len(batches[j])
            if status != 200:
                result.errors += 1
                continue
            got = response_outputs(payload, header_length, len(batches[j]))
            want = expected[j]
            if mlserver:
                ok = np.abs(got - want).max() <= 1e-5 and np.array_equal(got.argmax(1), want.argmax(1))
            else:
                ok = np.array_equal(got, want)
            result.wrong += not ok

    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, session) for i in range(clients)))
        result.seconds = time.perf_counter() - started
    result.statuses = hostile_statuses
    return result


def hostile_request(model_path: str, limit: int) -> Callable[[int], tuple]:
    """The i-th hostile request: (method, path, body, headers), cycling through HOSTILE_KINDS."""
    good = {"name": "input", "datatype": "UINT8", "shape": [1, 784], "data": [0] * 784}

    def make(i: int) -> tuple:
        kind = HOSTILE_KINDS[i % len(HOSTILE_KINDS)]
        if kind == "not JSON":
            return "POST", model_path, b'{"inputs": [' + os.urandom(64), {}
        if kind == "a pickle":
            return "POST", model_path, b"\x80\x04\x95" + os.urandom(40) + b".", {}
        if kind == "wrong datatype":
            return "POST", model_path, json.dumps({"inputs": [{**good, "datatype": "BYTES"}]}).encode(), {}
        if kind == "wrong shape":
            return "POST", model_path, json.dumps({"inputs": [{**good, "shape": [1, 783]}]}).encode(), {}
        if kind == "NaN":
            return "POST", model_path, json.dumps({"inputs": [{**good, "datatype": "FP32",
                                                                "data": [float("nan")] * 784}]}).encode(), {}
        if kind == "out of range":
            return "POST", model_path, json.dumps({"inputs": [{**good, "data": [300] * 784}]}).encode(), {}
        if kind == "unknown model":
            return "POST", f"/v2/models/m{i}/infer", json.dumps({"inputs": [good]}).encode(), {}
        if kind == "too large":
            return "POST", model_path, bytes(limit + 1), {}
        if kind == "truncated binary":
            header = json.dumps({"inputs": [{**good, "data": None, "parameters": {"binary_data_size": 784}}]})
            return "POST", model_path, header.encode() + bytes(100), {"Inference-Header-Content-Length":
                                                                     str(len(header))}
        return "PUT", model_path, b"{}", {}

    return make


async def slowloris(url: str, connections: int, seconds: float) -> List[str]:
    """Connections that declare a body and trickle it a byte at a time; returns their status lines."""
    host, port = url.split("//")[1].split(":")

    async def one() -> str:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n{")
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                writer.write(b" ")
                await writer.drain()
                try:
                    line = await asyncio.wait_for(reader.readline(), 0.5)
                    if line:
                        return line.decode().strip()
                except asyncio.TimeoutError:
                    pass
            return "no answer"
        except OSError as e:
            return type(e).__name__
        finally:
            writer.close()

    return list(await asyncio.gather(*(one() for _ in range(connections))))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hostile_scenario(name: str, url: str, path: str, process: subprocess.Popen, singles: List[np.ndarray],
                     engine, args) -> tuple:
    """Good single-image load with one hostile request in two, and 20 slowloris connections beside
    it; returns (table row, figures)."""
    rss_before = rss_mib(process.pid)
    per_client = max(1, -(-2 * args.hostile // args.clients))  # ceil

    async def both():
        loris = asyncio.ensure_future(slowloris(url, 20, 6))
        result = await run_load(f"{name} hostile mix", url, path, singles, [engine.predict(b) for b in singles],
                                args.clients, per_client, max(args.time_limit, 120), False,
                                hostile_request(path, 1 << 20), hostile_every=2)
        return result, await loris

    result, loris = asyncio.run(both())
    alive = process.poll() is None
    rss_after = rss_mib(process.pid) if alive else float("nan")
    sent = sum(result.statuses.values())
    four_xx = sum(v for k, v in result.statuses.items() if isinstance(k, int) and 400 <= k < 500)
    print(result.row(), flush=True)
    print(f"hostile: {sent} sent, {four_xx} answered 4xx ({result.statuses}); slowloris connections: "
          f"{sorted(set(loris))}; server alive: {alive}; RSS {rss_before:.1f} -> {rss_after:.1f} MiB "
          f"({rss_after - rss_before:+.1f})", flush=True)
    return result.row(), {"sent": sent, "4xx": four_xx, "statuses": {str(k): v for k, v in result.statuses.items()},
                          "slowloris": sorted(set(loris)), "alive": alive, "rss_before_mib": rss_before,
                          "rss_after_mib": rss_after}


def in_process_images_per_s(batches: List[np.ndarray], seconds: float = 3.0) -> float:
    engine = mnist_engine.load(mnist_engine.default_model_path())
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for b in batches:
            engine.predict(b)
            images += len(b)
    return images / (time.perf_counter() - started)


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=100, help="requests per client per scenario")
    parser.add_argument("--time-limit", type=float, default=60, help="seconds per scenario at most")
    parser.add_argument("--hostile", type=int, default=10_000, help="hostile requests in the hostile scenario")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--max-delay-ms", type=float, default=1.0)
    parser.add_argument("--mlserver", help="a venv with mlserver and mlserver-sklearn: also load-test MLServer")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--scenarios", default="single,batch64,hostile,overload",
                        help="which to run, comma-separated (default all)")
    parser.add_argument("--overload-connections", type=int, default=600)
    parser.add_argument("--overload-requests", type=int, default=3, help="requests per overload connection")
    parser.add_argument("--overload-json-every", type=int, default=10,
                        help="one overload connection in this many sends JSON bodies (0: none)")
    parser.add_argument("--overload-server-options", default="",
                        help="options for the overload scenario's server, as one string (default: none)")
    parser.add_argument("--server-python", help="run `mnist-engine serve` with this Python (another build, "
                                                "to compare before and after a change)")
    args = parser.parse_args(argv)
    scenarios = set(args.scenarios.split(","))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    from mnist_engine.datasets import load_mnist

    _, (x_test, _) = load_mnist()
    pixels = x_test.reshape(len(x_test), 784)
    engine = mnist_engine.load(mnist_engine.default_model_path())
    singles = [pixels[i:i + 1] for i in range(1000)]
    sixty_fours = [pixels[i:i + 64] for i in range(0, 64 * 40, 64)]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.clients} clients, "
          f"{args.requests} requests each per scenario", flush=True)
    rows, report = [], {}
    servers = [("mnist-engine", start_ours, False)]
    if args.mlserver:
        servers.append(("MLServer", start_mlserver, True))
    for name, start, is_mlserver in servers:
        with tempfile.TemporaryDirectory() as tmp:
            process, url, path = start(args, Path(tmp)) if is_mlserver else start(args)
            try:
                # Single images go as JSON to both servers (MLServer has no binary tensors); 64-image
                # requests to ours as tritonclient sends them by default, binary.
                for scenario, batches, binary in (("single", singles, False), ("batch64", sixty_fours, True)):
                    if scenario not in scenarios:
                        continue
                    inputs = [b.astype(np.float32) if is_mlserver else b for b in batches]
                    expected = [engine.predict(b) for b in batches]
                    binary = binary and not is_mlserver
                    label = f"{name} {scenario}{' (binary)' if binary else ' (JSON)'}"
                    # a short warm-up, then the measured run
                    asyncio.run(run_load(name, url, path, inputs, expected, 8, 5, 30, is_mlserver, binary=binary))
                    result = asyncio.run(run_load(label, url, path, inputs, expected, args.clients, args.requests,
                                                  args.time_limit, is_mlserver, binary=binary))
                    rows.append(result.row())
                    report[f"{name} {scenario}"] = {"requests_per_s": result.requests / result.seconds,
                                                    "images_per_s": result.images / result.seconds,
                                                    "p50_ms": float(np.percentile(result.latencies, 50) * 1000),
                                                    "p99_ms": float(np.percentile(result.latencies, 99) * 1000),
                                                    "errors": result.errors, "wrong": result.wrong}
                    print(rows[-1], flush=True)
                if not is_mlserver and args.hostile and "hostile" in scenarios:
                    row, report["hostile"] = hostile_scenario(name, url, path, process, singles, engine, args)
                    rows.append(row)
            finally:
                code = stop(process)
                if not is_mlserver:
                    print(f"mnist-engine serve exited {code} on SIGTERM", flush=True)
    if "overload" in scenarios:
        # Its own server with the default limits: the bounds under test are the ones users get.
        process, url, path = start_ours(args, defaults=True)
        try:
            report["overload"] = overload_scenario(url, path, process, engine, pixels, args.overload_connections,
                                                   args.overload_requests, args.overload_json_every,
                                                   args.time_limit)
            print("\n".join(overload_lines(report["overload"])), flush=True)
        finally:
            print(f"mnist-engine serve (default limits) exited {stop(process)} on SIGTERM", flush=True)
    in_process = in_process_images_per_s(sixty_fours)
    report["in-process batch64 images_per_s"] = in_process
    print(f"\nin-process Engine.predict on the same 64-image batches: {in_process:,.0f} images/s")
    print("\n" + HEADER + "\n" + "\n".join(rows))
    ours = report.get("mnist-engine single")
    theirs = report.get("MLServer single")
    if ours and theirs:
        print(f"\nsingle-image requests/s: {ours['requests_per_s'] / theirs['requests_per_s']:.1f}x MLServer's; "
              f"p99 {ours['p99_ms']:.2f} vs {theirs['p99_ms']:.2f} ms")
    batch = report.get("mnist-engine batch64")
    if batch:
        print(f"64-image requests: {batch['images_per_s'] / in_process:.0%} of in-process predict's images/s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
