"""Decoding request bodies without stalling the event loop.

Python's json parser holds the GIL from the first byte to the last: a 4 MiB body of pixels takes
~50 ms of it, a body of float text several times that, and turning the nested lists into an
array as long again. On a thread that is still the event loop's time (health checks measured
waiting the whole decode), so large JSON bodies are decoded in worker processes
(decode_worker.py), which also keeps the decoder's peak (about ten times the body in Python
objects) out of the server's memory. Large binary bodies are a copy that releases the GIL: a
thread is enough. Small bodies, nearly every request, decode inline, where a round trip to a
process would cost more than the decode.

What decides is the JSON's cost, whatever header carries it: the JSON part of a binary-tensor
body (Inference-Header-Content-Length) is JSON too, and a small body of deeply nested arrays
costs far more than its bytes (each list is an object to build: 255 KiB nested 900 deep took
140 ms), so it is counted by its brackets as well. A worker runs under a memory limit (a body
whose decoding would take more is refused with 413) and within the request's deadline: a worker
that has not answered by then is killed and replaced, and the request gets 503.
"""
from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sys
from typing import List, Optional, Set

from .admission import Overloaded
from .protocol import InferRequest, ModelSignature, RequestError, decode_infer_request

log = logging.getLogger("mnist_engine.serve")

INLINE_JSON_BYTES = 256 << 10  # ~2 ms of parsing: below this a worker round trip costs more
INLINE_JSON_CONTAINERS = 4096  # lists and objects: ~1 us each to build, so ~4 ms at most inline
INLINE_BINARY_BYTES = 1 << 20
LENGTH_BYTES = 8  # each message to and from a worker: its length, little-endian, then a pickle


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(LENGTH_BYTES, "little") + payload


def json_bytes(body: bytes, header_length: Optional[str]) -> int:
    """How many of the body's bytes are JSON: the header's count when it is a plain one that fits
    the body (anything else is refused by the decoder, wherever it runs), else all of them."""
    if header_length is not None and header_length.isdigit() and int(header_length) <= len(body):
        return int(header_length)
    return len(body)


def costly_json(body: bytes, header_length: Optional[str]) -> bool:
    """Whether decoding the body's JSON could hold the event loop for more than a few ms."""
    end = json_bytes(body, header_length)
    return end > INLINE_JSON_BYTES or body.count(b"[", 0, end) + body.count(b"{", 0, end) > INLINE_JSON_CONTAINERS


class _Worker:
    """One decode_worker process, doing one body at a time."""

    command = ("-m", "mnist_engine.serve.decode_worker")  # after sys.executable

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process

    @classmethod
    async def start(cls, memory: int) -> "_Worker":
        # One BLAS thread: the worker does no linear algebra, and each thread's buffers would
        # count against its memory limit.
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        return cls(await asyncio.create_subprocess_exec(
            sys.executable, *cls.command, "--memory", str(memory), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env))

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def decode(self, body: bytes, header_length: Optional[str], signature: ModelSignature) -> tuple:
        assert self.process.stdin is not None and self.process.stdout is not None
        # The body goes as it is, after its own length: pickled and framed it would be two more
        # copies of up to --max-body in the server at once.
        stdin = self.process.stdin
        stdin.write(frame(pickle.dumps((header_length, signature), pickle.HIGHEST_PROTOCOL)))
        stdin.write(len(body).to_bytes(LENGTH_BYTES, "little"))
        stdin.write(body)
        await stdin.drain()
        size = int.from_bytes(await self.process.stdout.readexactly(LENGTH_BYTES), "little")
        return pickle.loads(await self.process.stdout.readexactly(size))  # our own child's reply

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    async def stop(self) -> None:
        """End of input: the worker exits; killed if it has not within a few seconds."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except asyncio.TimeoutError:
            self.kill()
            await self.process.wait()


class Decoder:
    """decode_infer_request, inline, on a thread or in up to `processes` worker processes, by the
    cost of the body's JSON (costly_json). The workers start on the first costly body (a server fed
    binary never pays for them) and are replaced if one dies; bodies beyond the idle workers wait
    for one in turn (the body budget bounds how many). Waiting for a worker takes `deadline` seconds
    at most (then 503), and so does decoding in it (then 503, and the worker is replaced); each
    worker may grow by `memory` bytes."""

    def __init__(self, processes: int = 1, deadline: float = 1.0, memory: int = 256 << 20):
        if processes < 1:
            raise ValueError(f"at least one decoding process is needed, got {processes}")
        self.processes = processes
        self.deadline = deadline
        self.memory = memory
        self._idle: List[_Worker] = []
        self._running = 0  # workers started and not dead, idle or busy
        self._freed: Optional[asyncio.Condition] = None
        self._retiring: Set["asyncio.Future[None]"] = set()  # workers exiting after a MemoryError

    async def decode(self, body: bytes, header_length: Optional[str], signature: ModelSignature) -> InferRequest:
        if costly_json(body, header_length):
            return await self._in_worker(body, header_length, signature)
        if len(body) > INLINE_BINARY_BYTES:  # binary tensors: their JSON header is small
            return await asyncio.to_thread(decode_infer_request, body, header_length, signature)
        return decode_infer_request(body, header_length, signature)

    async def _take(self) -> _Worker:
        if self._freed is None:
            self._freed = asyncio.Condition()
        async with self._freed:
            while True:
                while self._idle and not self._idle[-1].alive:  # died while idle: replace it
                    self._idle.pop()
                    self._running -= 1
                if self._idle or self._running < self.processes:
                    break
                await self._freed.wait()
            if self._idle:
                return self._idle.pop()
            self._running += 1
        try:
            return await _Worker.start(self.memory)
        except BaseException:
            await self._lost()
            raise

    async def _give_back(self, worker: _Worker) -> None:
        assert self._freed is not None
        async with self._freed:
            self._idle.append(worker)
            self._freed.notify()

    async def _lost(self) -> None:
        assert self._freed is not None
        async with self._freed:
            self._running -= 1
            self._freed.notify()

    async def _in_worker(self, body: bytes, header_length: Optional[str], signature: ModelSignature) -> InferRequest:
        try:
            worker = await asyncio.wait_for(self._take(), self.deadline)
        except asyncio.TimeoutError:
            raise Overloaded(f"every JSON decoding process stayed busy for {self.deadline * 1000:.0f} ms "
                             "(--max-queue-ms, --decode-processes): retry later, or send binary tensors",
                             "decode_deadline", retry_after=self.deadline) from None
        try:
            # The deadline again, whole: a worker is replaced only when one body takes it that long
            # (a stopped or stuck worker), never because its request waited in line first.
            reply = await asyncio.wait_for(worker.decode(body, header_length, signature), self.deadline)
        except asyncio.TimeoutError:
            # A worker stopped or stuck on one body must not hold every body behind it.
            log.error("a JSON decoding process took over %.0f ms on one body; starting a new one",
                      self.deadline * 1000)
            worker.kill()
            await self._lost()
            raise Overloaded(f"decoding this request's JSON did not end within {self.deadline * 1000:.0f} ms "
                             "(--max-queue-ms): retry later, or send binary tensors", "decode_deadline",
                             retry_after=self.deadline) from None
        except (asyncio.IncompleteReadError, ConnectionError, RuntimeError) as e:  # RuntimeError: uvloop's
            # word for a pipe already closed
            # The worker died (the kernel's OOM killer, say): this body fails; the next gets a new worker.
            log.error("a JSON decoding process died (%s); starting a new one", type(e).__name__)
            worker.kill()
            await self._lost()
            raise Overloaded("the process decoding this request's JSON died (out of memory?); retry later, "
                             "or send binary tensors", "decoder_restarted") from None
        except BaseException:  # cancelled mid-call: its reply would answer the next body; start afresh
            worker.kill()
            await self._lost()
            raise
        if reply[0] == "refused" and reply[3]:  # retiring: it exits after this reply
            await self._lost()
            stopping = asyncio.ensure_future(worker.stop())  # reaped; kept referenced until it is
            self._retiring.add(stopping)
            stopping.add_done_callback(self._retiring.discard)
        else:
            await self._give_back(worker)
        if reply[0] == "refused":
            raise RequestError(reply[1], reply[2])
        return reply[1]

    async def close(self) -> None:
        workers, self._idle = self._idle, []
        await asyncio.gather(*(worker.stop() for worker in workers), *self._retiring)
