"""Dynamic batching: requests that arrive together run as one Engine.predict call.

One image costs the engine ~8 µs and 10,000 ~22 ms, so under load a server spends its time on
per-call overhead unless it merges requests. Each model has one batcher per input dtype (uint8
pixels and float32 values are never mixed, so every answer has the bits a local predict of that
request gives). A batch closes when it holds `max_batch` rows or `max_delay` seconds after its
first request arrived, whichever is first; it then runs on the batcher's own thread, with the GIL
released by predict, while the event loop keeps accepting and queueing the next batch.

The worker is supervised: whatever a batch raises (a MemoryError joining its rows, a bug) fails
that batch's requests alone, is logged once per kind, and the worker goes on to the next batch.
A request is dropped before its rows are computed when its client went away (its future is
cancelled) or its deadline passed while it waited (503: a late answer is worth less than a retry).
"""
from __future__ import annotations

import asyncio
import collections
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Deque, List, NamedTuple, Optional, Set

import numpy as np

from .._core import Engine
from .admission import Overloaded

log = logging.getLogger("mnist_engine.serve")


class Pending(NamedTuple):
    rows: np.ndarray
    future: asyncio.Future
    deadline: float  # loop time after which it is answered 503 rather than computed
    queued: float  # loop time it was queued


class DynamicBatcher:
    def __init__(self, engine: Engine, max_batch: int, max_delay: float, name: str = "",
                 on_batch: Optional[Callable[[int], None]] = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_delay < 0:
            raise ValueError(f"max_delay must be >= 0 seconds, got {max_delay}")
        self.engine, self.max_batch, self.max_delay = engine, max_batch, max_delay
        self._pending: Deque[Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()  # set while the worker waits with nothing queued
        self._logged: Set[str] = set()  # kinds of batch failure already logged
        # One thread: batches run one after another, each with all of the engine's threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"predict-{name}")
        self._worker: Optional[asyncio.Task] = None
        self.batches = self.rows = 0  # counters, for tests and the log
        self.on_batch = on_batch  # called with each batch's row count (the metrics)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker."""
        if self._worker is not None:
            if not self._worker.done():
                await self._idle.wait()
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        self._executor.shutdown(wait=True)

    async def predict(self, rows: np.ndarray, deadline: float = float("inf")) -> np.ndarray:
        """The engine's outputs for `rows`, computed in a batch with whatever else is queued;
        Overloaded if its batch has not started by `deadline` (the loop's clock)."""
        return await self.submit(rows, deadline)

    def submit(self, rows: np.ndarray, deadline: float = float("inf")) -> asyncio.Future:
        """predict's future, to await or to cancel (a cancelled request is never computed)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append(Pending(rows, future, deadline, loop.time()))
        self._idle.clear()
        self._arrived.set()
        return future

    def _drop_stale(self) -> None:
        """Take the requests nobody waits for, or that waited too long, off the head of the queue."""
        now = asyncio.get_running_loop().time()
        while self._pending:
            head = self._pending[0]
            if not head.future.done() and now <= head.deadline:
                return
            self._pending.popleft()
            if not head.future.done():
                head.future.set_exception(Overloaded(
                    f"this request waited {(now - head.queued) * 1000:.0f} ms in the model's queue, past its "
                    "deadline (--max-queue-ms): retry later", "deadline"))

    async def _next_batch(self) -> List[Pending]:
        while True:
            self._drop_stale()
            if self._pending:
                break
            self._arrived.clear()
            self._idle.set()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay
        batch = [self._pending.popleft()]
        rows = len(batch[0].rows)
        while rows < self.max_batch:
            self._drop_stale()
            if self._pending:
                # A request that would overflow the batch waits for the next one (a single request
                # larger than max_batch still runs, alone).
                if rows + len(self._pending[0].rows) > self.max_batch:
                    break
                item = self._pending.popleft()
                batch.append(item)
                rows += len(item.rows)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return batch

    def _predict(self, inputs: np.ndarray) -> np.ndarray:
        return self.engine.predict(inputs, range_check="ignore")

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            live = [item for item in batch if not item.future.done()]  # a client may have left meanwhile
            if not live:
                continue
            try:
                await self._run_batch(live)
            except Exception as e:  # predict validated its input already: anything here is ours
                kind = type(e).__name__
                if kind not in self._logged:
                    self._logged.add(kind)
                    log.error("a batch of %d requests failed (%s: %s); the batcher goes on", len(live), kind, e)
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(e)

    async def _run_batch(self, live: List[Pending]) -> None:
        inputs = live[0].rows if len(live) == 1 else np.concatenate([item.rows for item in live])
        # Each request's range was checked (or allowed) on its own before it was queued.
        outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, inputs)
        self.batches += 1
        self.rows += len(inputs)
        if self.on_batch is not None:
            self.on_batch(len(inputs))
        start = 0
        for rows, future, *_ in live:
            if not future.done():  # a client that went away cancels its future
                future.set_result(outputs[start:start + len(rows)])
            start += len(rows)
