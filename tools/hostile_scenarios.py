"""Slow and hostile clients against `mnist-engine serve` with its default options (issue 34), one
scenario at a time. Beside each, a separate process probes /v2/health/live, and the server's RSS
(with its decoding worker) is sampled.

  slow-senders    4 connections declare 8 MiB bodies and send a byte a second, reconnecting when
                  cut, for 20 s; beside them a polite client sends 1-image requests
  big-header      one request whose header grows toward 100 MiB
  idle            2,000 silent connections and 50 that send their head a byte every 2 s, for 40 s
  json-header     4 clients x 3 JSON bodies of 8 MiB sent with Inference-Header-Content-Length
  brackets        4 clients sending 255 KiB of arrays nested 900 deep, back to back, for 10 s
  stalled-worker  the JSON decoding process stopped (SIGSTOP) for 12 s while 12 large JSON
                  requests arrive

    python tools/hostile_scenarios.py                         # every scenario
    python tools/hostile_scenarios.py --scenarios idle,brackets --json figures.json
    python tools/hostile_scenarios.py --server-python /path/to/other/python   # another build's server

The polite flood is tools/load_test.py's overload scenario.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
from overload_scenario import PROBE, RssSampler, json_body, tree_rss_mib
from server_process import start_logged

from mnist_engine.datasets import load_mnist

MIB = 1 << 20
INFER = "/v2/models/mnist/infer"


def start_server(python: str, log: Path) -> tuple:
    """`mnist-engine serve --port 0` with default options, its log in `log`; (process, host, port)."""
    process, port = start_logged([python, "-m", "mnist_engine", "serve", "--port", "0"], log)
    return process, "127.0.0.1", port


@contextlib.contextmanager
def watched(process: subprocess.Popen, host: str, port: int, figures: Dict) -> Iterator[None]:
    """Health probed from another process and the RSS sampled while the block runs; their figures
    go into `figures`."""
    time.sleep(0.3)
    baseline = tree_rss_mib(process.pid)
    probe = subprocess.Popen([sys.executable, "-c", PROBE, host, str(port), "600"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sampler = RssSampler(process.pid)
    sampler.start()
    time.sleep(0.5)
    try:
        yield
    finally:
        sampler.running = False
        sampler.join()
        health = json.loads(probe.communicate("over\n", timeout=120)[0])
        latencies = np.array(health["latencies"]) * 1000
        figures.update({"rss_growth_mib": round(sampler.peak - baseline, 1),
                        "health_p50_ms": round(float(np.percentile(latencies, 50)), 1),
                        "health_p99_ms": round(float(np.percentile(latencies, 99)), 1),
                        "health_max_ms": round(float(latencies.max()), 1),
                        "health_statuses": health["statuses"], "server_alive": process.poll() is None})


def head(length: int, extra: str = "") -> bytes:
    return (f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


async def exchange(host: str, port: int, body: bytes, headers: str = "", timeout: float = 60) -> tuple:
    """One request on a new connection: (status or the error's name, seconds)."""
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(head(len(body), headers) + body)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        writer.close()
        status = int(line.split()[1]) if line else "closed"
    except (OSError, asyncio.TimeoutError, IndexError, ValueError) as e:
        status = type(e).__name__
    return status, time.perf_counter() - started


def count(statuses: List) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for s in statuses:
        out[str(s)] = out.get(str(s), 0) + 1
    return out


def slow_senders(host: str, port: int, pixels: np.ndarray) -> Dict:
    seconds, senders = 20.0, 4
    polite_body = json_body(pixels[:1])[0]

    async def sender(stop_at: float) -> int:
        cuts = 0
        while time.monotonic() < stop_at:
            try:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(head(8 * MIB))
                while time.monotonic() < stop_at:
                    writer.write(b" ")
                    await writer.drain()
                    try:
                        await asyncio.wait_for(reader.read(1), 1.0)
                    except asyncio.TimeoutError:
                        continue
                    cuts += 1  # an answer (408) or the connection closed: reconnect
                    break
                writer.close()
            except OSError:
                cuts += 1
                await asyncio.sleep(0.05)
        return cuts

    async def polite(stop_at: float) -> List[tuple]:
        await asyncio.sleep(1.0)  # the senders hold whatever they will hold
        answers = []
        while time.monotonic() < stop_at:
            answers.append(await exchange(host, port, polite_body, timeout=15))
            await asyncio.sleep(0.05)
        return answers

    async def run() -> tuple:
        stop_at = time.monotonic() + seconds
        return await asyncio.gather(polite(stop_at), *(sender(stop_at) for _ in range(senders)))

    answers, *cuts = asyncio.run(run())
    ok = [t for s, t in answers if s == 200]
    return {"polite_requests": len(answers), "polite_ok_share": round(len(ok) / max(1, len(answers)), 3),
            "polite_p50_ms": round(float(np.median(ok)) * 1000, 1) if ok else None,
            "polite_statuses": count([s for s, _ in answers]), "slow_sender_cuts": sum(cuts)}


def big_header(host: str, port: int, _pixels: np.ndarray) -> Dict:
    total, piece = 100 * MIB, b"a" * (64 << 10)
    sent, answer = 0, b""
    s = socket.create_connection((host, port))
    s.settimeout(30)
    try:
        s.sendall("GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".encode())
        while sent < total:
            s.sendall(piece)
            sent += len(piece)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        answer = s.recv(200)
    s.close()
    return {"header_bytes_sent": sent, "sent_mib": round(sent / MIB, 1),
            "answer": answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"}


def idle(host: str, port: int, _pixels: np.ndarray) -> Dict:
    silent, trickling, seconds = 2000, 50, 40.0

    async def one(trickle: bool, stop_at: float) -> bool:
        """True when the server closed the connection before the time was up."""
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            return True  # refused at once counts as closed by the server
        text = "GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        sent = 0
        try:
            while time.monotonic() < stop_at:
                if trickle and sent < len(text) - 1:  # never the last byte: the head stays unfinished
                    writer.write(text[sent:sent + 1])
                    sent += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    if not await asyncio.wait_for(reader.read(100), 2.0 if trickle else stop_at - time.monotonic()):
                        return True
            return False
        except OSError:
            return True
        finally:
            writer.close()

    async def run() -> List[bool]:
        stop_at = time.monotonic() + seconds
        return await asyncio.gather(*(one(i < trickling, stop_at) for i in range(silent + trickling)))

    closed = asyncio.run(run())
    return {"connections": len(closed), "closed_by_server_share": round(sum(closed) / len(closed), 3)}


def nested_json(pixels: np.ndarray, size: int) -> bytes:
    """A JSON infer body of about `size` bytes: `pixels` rows as nested arrays."""
    rows = max(1, size // len(json_body(pixels[:1])[0]))
    body = json_body(pixels[:rows])[0]
    while len(body) > size:
        rows -= 16
        body = json_body(pixels[:rows])[0]
    return body


def json_header(host: str, port: int, pixels: np.ndarray) -> Dict:
    body = nested_json(np.tile(pixels[:2000], (2, 1)), 8 * MIB - 1024)

    async def client() -> List[tuple]:
        return [await exchange(host, port, body, f"Inference-Header-Content-Length: {len(body)}\r\n", 60)
                for _ in range(3)]

    async def run() -> List[List[tuple]]:
        return await asyncio.gather(*(client() for _ in range(4)))

    answers = [a for c in asyncio.run(run()) for a in c]
    return {"body_mib": round(len(body) / MIB, 2), "statuses": count([s for s, _ in answers]),
            "slowest_s": round(max(t for _, t in answers), 2)}


def brackets(host: str, port: int, _pixels: np.ndarray) -> Dict:
    nest = "[" * 900 + "0" + "]" * 900
    data = "[" + ",".join([nest] * 140) + "]"
    body = ('{"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 784], "data": ' + data + "}]}").encode()

    async def client(stop_at: float) -> List[tuple]:
        answers = []
        while time.monotonic() < stop_at:
            answers.append(await exchange(host, port, body, timeout=30))
        return answers

    async def run() -> List[List[tuple]]:
        stop_at = time.monotonic() + 10
        return await asyncio.gather(*(client(stop_at) for _ in range(4)))

    answers = [a for c in asyncio.run(run()) for a in c]
    return {"body_kib": round(len(body) / 1024), "requests": len(answers), "statuses": count([s for s, _ in answers])}


def worker_pids(server: int) -> List[int]:
    children = Path(f"/proc/{server}/task/{server}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def stalled_worker(host: str, port: int, pixels: np.ndarray, process: subprocess.Popen) -> Dict:
    body = nested_json(pixels, 1 * MIB)
    assert asyncio.run(exchange(host, port, body))[0] == 200  # starts the worker
    pids = worker_pids(process.pid)
    if not pids:
        return {"error": "no decoding worker found"}
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    threading.Timer(12.0, lambda: [os.kill(p, signal.SIGCONT) for p in pids if Path(f"/proc/{p}").exists()]).start()

    async def run() -> List[tuple]:
        return await asyncio.gather(*(exchange(host, port, body, timeout=30) for _ in range(12)))

    answers = asyncio.run(run())
    time.sleep(max(0.0, 12.5 - max(t for _, t in answers)))
    return {"statuses": count([s for s, _ in answers]), "slowest_s": round(max(t for _, t in answers), 2),
            "answered_within_4s": sum(t <= 4.0 and isinstance(s, int) for s, t in answers)}


SCENARIOS: Dict[str, Callable] = {"slow-senders": slow_senders, "big-header": big_header, "idle": idle,
                                  "json-header": json_header, "brackets": brackets,
                                  "stalled-worker": stalled_worker}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated, from: " + ", ".join(SCENARIOS))
    parser.add_argument("--server-python", default=sys.executable, help="the Python whose mnist_engine serves")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    names = args.scenarios.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    (_, _), (images, _) = load_mnist()
    pixels = images.reshape(len(images), -1).astype(np.uint8)
    report: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:  # a fresh server each: one scenario's leftovers never weigh on the next
            process, host, port = start_server(args.server_python, Path(tmp) / f"{name}.log")
            figures: Dict = {}
            try:
                with watched(process, host, port, figures):
                    run = SCENARIOS[name]
                    figures.update(run(host, port, pixels, process) if name == "stalled-worker"
                                   else run(host, port, pixels))
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            report[name] = figures
            print(f"{name}: {json.dumps(figures)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
