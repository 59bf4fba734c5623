"""The overload scenario of tools/load_test.py: hundreds of connections each sending large requests
back to back (binary 1,000-image bodies, and multi-megabyte JSON bodies among them), far more than
two cores can compute, while a separate process probes /v2/health/live.

What it measures (the targets of docs/SERVING.md's overload table):
- the server's RSS (the process and its children, the JSON decoders) above its warmed-up level;
- health p50/p99/max and status, from the probing process (a new connection per probe, as a
  kubelet's probe makes);
- every answer's status; every 200 checked bit for bit against a local predict of its rows;
- refusals: 503/429 with Retry-After, or the connection of a refused upload closed (counted apart);
- one-image latency after the flood.
Clients behave as a polite client does under overload: after a 503 they wait Retry-After, after
a closed connection one second, and then send their next request.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

# Probes until its stdin says the flood is over (or `seconds` at most): a flood that ends early does
# not leave the scenario waiting out the whole time limit.
PROBE = textwrap.dedent("""
    import http.client, json, select, sys, time
    host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    latencies, statuses = [], {}
    end = time.monotonic() + seconds
    while time.monotonic() < end and not select.select([sys.stdin], [], [], 0)[0]:
        started = time.perf_counter()
        try:
            c = http.client.HTTPConnection(host, port, timeout=10)
            c.request("GET", "/v2/health/live")
            status = c.getresponse().status
            c.close()
        except OSError as e:
            status = type(e).__name__
        latencies.append(time.perf_counter() - started)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        time.sleep(0.01)
    print(json.dumps({"latencies": latencies, "statuses": statuses}))
""")


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and its children (the decoding workers), in MiB."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.running = pid, every, 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, tree_rss_mib(self.pid))
            time.sleep(self.every)


def binary_body(rows: np.ndarray) -> tuple:
    header = json.dumps({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [len(rows), 784],
                                     "parameters": {"binary_data_size": rows.size}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + rows.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                     "Content-Type": "application/octet-stream"}


def json_body(rows: np.ndarray) -> tuple:
    return json.dumps({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [len(rows), 784],
                                   "data": rows.tolist()}]}).encode(), {"Content-Type": "application/json"}


def outputs_of(payload: bytes, header_length, rows: int) -> np.ndarray:
    if header_length is None:
        return np.asarray(json.loads(payload)["outputs"][0]["data"], np.float32).reshape(rows, -1)
    return np.frombuffer(payload[int(header_length):], "<f4").reshape(rows, -1)


async def flood(url: str, path: str, bodies: List[tuple], expected: List[np.ndarray], connections: int,
                per_connection: int, json_every: int, limit_s: float) -> Dict:
    """`connections` clients, each on its own connection, sending `per_connection` requests back to
    back; client i sends JSON bodies when i % json_every == 0, else binary."""
    import aiohttp

    statuses: Dict[str, int] = {}
    figures = {"offered_bytes": 0, "offered": 0, "answered": 0, "wrong": 0, "without_retry_after": 0,
               "latencies": []}
    deadline = time.monotonic() + limit_s

    def count(key: str) -> None:
        statuses[key] = statuses.get(key, 0) + 1

    async def client(i: int) -> None:
        kind = 1 if json_every and i % json_every == 0 else 0
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            for _ in range(per_connection):
                if time.monotonic() > deadline:
                    return
                body, headers = bodies[kind]
                figures["offered"] += 1
                figures["offered_bytes"] += len(body)
                started = time.perf_counter()
                pause = 0.0
                try:
                    async with session.post(url + path, data=body, headers=headers) as r:
                        payload = await r.read()
                        count(str(r.status))
                        if r.status == 200:
                            figures["answered"] += 1
                            figures["latencies"].append(time.perf_counter() - started)
                            got = outputs_of(payload, r.headers.get("Inference-Header-Content-Length"),
                                             len(expected[kind]))
                            figures["wrong"] += not np.array_equal(got, expected[kind])
                        elif r.status in (429, 503):
                            retry = r.headers.get("Retry-After")
                            figures["without_retry_after"] += retry is None
                            pause = float(retry) if retry and retry.isdigit() else 1.0
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                    count(f"connection closed ({type(e).__name__})")
                    pause = 1.0
                if pause:
                    await asyncio.sleep(pause)

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(connections)))
    figures["seconds"] = time.perf_counter() - started
    figures["statuses"] = statuses
    return figures


def single_image_latencies(url: str, path: str, rows: np.ndarray, count: int = 20) -> List[float]:
    import http.client
    host, port = url.split("//")[1].split(":")
    body, headers = json_body(rows)
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        c.request("POST", path, body=body, headers=headers)
        response = c.getresponse()
        response.read()
        c.close()
        if response.status == 200:
            latencies.append(time.perf_counter() - started)
    return latencies


def scrape_refusals(url: str) -> Dict[str, float]:
    """The server's own count of 503s by reason, from /metrics (absent on servers without it)."""
    import urllib.request
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    refusals = {}
    for line in text.splitlines():
        if line.startswith("mnist_engine_overload_refusals_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            refusals[reason] = refusals.get(reason, 0) + float(line.split()[-1])
    return refusals


def overload_scenario(url: str, path: str, process: subprocess.Popen, engine, pixels: np.ndarray,
                      connections: int, per_connection: int, json_every: int, limit_s: float) -> Dict:
    """Runs the flood with the probe and the RSS sampler beside it; returns the figures."""
    host, port = url.split("//")[1].split(":")
    binary_rows, json_rows = pixels[:1000], pixels[1000:2300]
    bodies = [binary_body(binary_rows), json_body(json_rows)]
    expected = [engine.predict(binary_rows), engine.predict(json_rows)]
    # Warm up: each kind once, so the baseline is the server as it runs (its decoding worker started).
    asyncio.run(flood(url, path, bodies, expected, 2, 1, 2, 60))
    time.sleep(0.5)
    baseline = tree_rss_mib(process.pid)
    probe_seconds = limit_s + 5
    probe = subprocess.Popen([sys.executable, "-c", PROBE, host, port, str(probe_seconds)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sampler = RssSampler(process.pid)
    sampler.start()
    time.sleep(1.0)  # the probe's quiet second: its figures include the idle server too
    figures = asyncio.run(flood(url, path, bodies, expected, connections, per_connection, json_every, limit_s))
    sampler.running = False
    sampler.join()
    after = single_image_latencies(url, path, pixels[5000:5001])
    health = json.loads(probe.communicate("over\n", timeout=probe_seconds + 60)[0])
    latencies = np.array(health["latencies"]) * 1000
    figures.update({
        "body_mib_json": len(bodies[1][0]) / 2**20, "body_mib_binary": len(bodies[0][0]) / 2**20,
        "alive": process.poll() is None, "rss_baseline_mib": baseline, "rss_peak_mib": sampler.peak,
        "rss_growth_mib": sampler.peak - baseline,
        "health_p50_ms": float(np.percentile(latencies, 50)), "health_p99_ms": float(np.percentile(latencies, 99)),
        "health_max_ms": float(latencies.max()), "health_statuses": health["statuses"],
        "after_flood_1_image_ms_median": float(np.median(after) * 1000) if after else float("nan"),
        "after_flood_1_image_ms_max": float(max(after) * 1000) if after else float("nan"),
        "after_flood_answered": len(after),
        "server_refusals": scrape_refusals(url)})
    latencies_ok = figures.pop("latencies")
    figures["answer_p50_ms"] = float(np.percentile(latencies_ok, 50) * 1000) if latencies_ok else float("nan")
    return figures


def overload_lines(f: Dict) -> List[str]:
    offered_gb = f["offered_bytes"] / 1e9
    return [
        f"overload: {f['offered']} requests offered ({offered_gb:.2f} GB of bodies: binary "
        f"{f['body_mib_binary']:.2f} MiB, JSON {f['body_mib_json']:.2f} MiB) in {f['seconds']:.1f} s; "
        f"statuses {f['statuses']}; answered {f['answered']} ({f['answered'] / max(1, f['offered']):.0%}), "
        f"wrong {f['wrong']}, refusals without Retry-After {f['without_retry_after']}",
        f"overload: server RSS {f['rss_baseline_mib']:.0f} -> peak {f['rss_peak_mib']:.0f} MiB "
        f"({f['rss_growth_mib']:+.0f}); health p50 {f['health_p50_ms']:.1f} ms, p99 {f['health_p99_ms']:.1f} ms, "
        f"max {f['health_max_ms']:.1f} ms, statuses {f['health_statuses']}; server alive: {f['alive']}",
        f"overload: after the flood, 1-image requests median {f['after_flood_1_image_ms_median']:.1f} ms, "
        f"max {f['after_flood_1_image_ms_max']:.1f} ms ({f['after_flood_answered']}/20 answered); the server's "
        f"own refusal counts: {f['server_refusals'] or 'no /metrics'}"]
