"""Decoding request bodies without stalling the event loop.

Python's json parser holds the GIL from the first byte to the last: a 4 MiB body of pixels takes
~50 ms of it, a body of float text several times that, and turning the nested lists into an
array as long again. On a thread that is still the event loop's time (health checks measured
waiting the whole decode), so large JSON bodies are decoded in worker processes
(decode_worker.py), which also keeps the decoder's peak (about ten times the body in Python
objects) out of the server's memory. Large binary bodies are a copy that releases the GIL: a
thread is enough. Small bodies, nearly every request, decode inline, where a round trip to a
process would cost more than the decode.
"""
from __future__ import annotations

import asyncio
import logging
import pickle
import sys
from typing import List, Optional

from .admission import Overloaded
from .protocol import InferRequest, ModelSignature, RequestError, decode_infer_request

log = logging.getLogger("mnist_engine.serve")

INLINE_JSON_BYTES = 256 << 10  # ~2 ms of parsing: below this a worker round trip costs more
INLINE_BINARY_BYTES = 1 << 20
LENGTH_BYTES = 8  # each message to and from a worker: its length, little-endian, then a pickle


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(LENGTH_BYTES, "little") + payload


class _Worker:
    """One decode_worker process, doing one body at a time."""

    command = ("-m", "mnist_engine.serve.decode_worker")  # after sys.executable

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process

    @classmethod
    async def start(cls) -> "_Worker":
        return cls(await asyncio.create_subprocess_exec(
            sys.executable, *cls.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE))

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def decode(self, body: bytes, header_length: Optional[str], signature: ModelSignature) -> tuple:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(frame(pickle.dumps((body, header_length, signature), pickle.HIGHEST_PROTOCOL)))
        await self.process.stdin.drain()
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
    """decode_infer_request, inline, on a thread or in up to `processes` worker processes, by body
    size. The workers start on the first large JSON body (a server fed binary never pays for them)
    and are replaced if one dies; bodies beyond the idle workers wait for one in turn (the body
    budget bounds how many)."""

    def __init__(self, processes: int = 1):
        if processes < 1:
            raise ValueError(f"at least one decoding process is needed, got {processes}")
        self.processes = processes
        self._idle: List[_Worker] = []
        self._running = 0  # workers started and not dead, idle or busy
        self._freed: Optional[asyncio.Condition] = None

    async def decode(self, body: bytes, header_length: Optional[str], signature: ModelSignature) -> InferRequest:
        if header_length is None and len(body) > INLINE_JSON_BYTES:
            return await self._in_worker(body, signature)
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
            return await _Worker.start()
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

    async def _in_worker(self, body: bytes, signature: ModelSignature) -> InferRequest:
        worker = await self._take()
        try:
            reply = await worker.decode(body, None, signature)
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
        await self._give_back(worker)
        if reply[0] == "refused":
            raise RequestError(reply[1], reply[2])
        return reply[1]

    async def close(self) -> None:
        workers, self._idle = self._idle, []
        await asyncio.gather(*(worker.stop() for worker in workers))
