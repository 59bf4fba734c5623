"""Admission control: what the server takes on before it refuses, so that overload costs clients a
503 and never costs the server its memory or its event loop.

Two bounds, both checked on the event loop and both cheap:
- BodyBudget: the bytes of the requests the server is working on, over all models. A request
  reserves its declared length (or the largest body allowed, when the length is not declared)
  before it reads a byte, and holds it until its answer is computed: the budget bounds bodies
  being received, bodies being decoded and the rows they became, together. One that does not fit
  waits in arrival order without reading, so its client's TCP window closes and the kernel, not
  our memory, holds what it sends; one that waits longer than the queue deadline is refused with
  503. Refusing there costs nothing; past the budget, work is rarely thrown away.
- RowQueue: the rows (and bytes) of one model's requests decoded and waiting for the engine. A
  request that would take it over its bound is refused with 503; a request alone in an empty
  queue is always taken, so a big request is slow but never refused for its size.

Requests that take neither (health, metadata, the page) never wait on either: a flood of uploads
leaves them as fast as an idle server.
"""
from __future__ import annotations

import asyncio
import collections
import math
from dataclasses import dataclass
from typing import Deque, Optional, Tuple

from .protocol import RequestError


class Overloaded(RequestError):
    """A 503 with Retry-After: the server is full, not the request wrong. `close` asks for the
    connection to be closed after the answer (the body was never read, so the connection cannot
    carry another request); `reason` names the bound for /metrics."""

    def __init__(self, message: str, reason: str, retry_after: float = 1.0, close: bool = False):
        super().__init__(503, message)
        self.reason = reason
        self.retry_after = max(1, math.ceil(retry_after))  # HTTP's Retry-After is whole seconds
        self.close = close

    @property
    def headers(self) -> dict:
        headers = {"Retry-After": str(self.retry_after)}
        if self.close:
            headers["Connection"] = "close"
        return headers


class BodyBudget:
    """A byte budget handed out in arrival order (first come, first served: a large body is not
    passed over forever by a stream of small ones)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"the body budget must be at least 1 byte, got {capacity}")
        self.capacity = capacity
        self.in_use = 0
        self._waiting: Deque[Tuple[int, asyncio.Future]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def acquire(self, size: int, timeout: float) -> None:
        """Reserve `size` bytes (at most the capacity), waiting up to `timeout` seconds behind the
        requests that came first; Overloaded if they do not come free in time."""
        size = min(size, self.capacity)
        if not self._waiting and self.in_use + size <= self.capacity:
            self.in_use += size
            return
        future = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiting.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            if future.done() and not future.cancelled():  # granted just as the time ran out: keep it
                return
            self._waiting.remove(entry)
            self._grant()  # the head may have left: those behind it may fit now
            raise Overloaded(f"the server is receiving {self.in_use} bytes of request bodies (its budget is "
                             f"{self.capacity}, --body-budget) and {len(self._waiting)} more requests wait; "
                             f"this one waited {timeout * 1000:.0f} ms (--max-queue-ms): retry later",
                             "body_budget", retry_after=timeout, close=True) from None
        except BaseException:  # cancelled (the client went away): give back whatever was granted
            if future.done() and not future.cancelled():
                self.release(size)
            elif entry in self._waiting:
                self._waiting.remove(entry)
                self._grant()
            raise

    def release(self, size: int) -> None:
        self.in_use -= min(size, self.capacity)
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.in_use + self._waiting[0][0] <= self.capacity:
            size, future = self._waiting.popleft()
            if future.done():  # its waiter gave up
                continue
            self.in_use += size
            future.set_result(None)


@dataclass
class RowQueue:
    """The rows and bytes of one model's requests between decoding and their answer."""

    max_rows: int
    max_bytes: int
    rows: int = 0
    bytes: int = 0
    requests: int = 0

    def check_room(self) -> None:
        """Overloaded (closing the connection: its body is not read) when the queue is already at
        a bound and not empty."""
        if self.requests and (self.rows >= self.max_rows or self.bytes >= self.max_bytes):
            raise Overloaded(f"the model's queue is full: {self.rows} rows ({self.bytes} bytes) of {self.requests} "
                             f"requests, its bound {self.max_rows} rows or {self.max_bytes} bytes "
                             "(--max-queue-rows, --max-queue-bytes): retry later", "queue_full", close=True)

    def admit(self, rows: int, nbytes: int, retry_after: float) -> None:
        """Count a request in, or Overloaded when it would take the queue over a bound (a request
        that finds the queue empty is always taken)."""
        if self.requests and (self.rows + rows > self.max_rows or self.bytes + nbytes > self.max_bytes):
            raise Overloaded(f"the model's queue holds {self.rows} rows ({self.bytes} bytes) of {self.requests} "
                             f"requests; {rows} more would pass its bound of {self.max_rows} rows or "
                             f"{self.max_bytes} bytes (--max-queue-rows, --max-queue-bytes): retry later",
                             "queue_full", retry_after=retry_after)
        self.rows += rows
        self.bytes += nbytes
        self.requests += 1

    def leave(self, rows: int, nbytes: int) -> None:
        self.rows -= rows
        self.bytes -= nbytes
        self.requests -= 1


def default_queue_bytes(total_memory: Optional[int]) -> int:
    """An eighth of the machine's memory, at most 256 MiB: the queue never holds more than a server
    should spend on work it has not started."""
    cap = 256 << 20
    return cap if not total_memory else max(16 << 20, min(cap, total_memory // 8))
