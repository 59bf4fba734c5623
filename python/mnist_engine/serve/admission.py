"""Admission control: what the server takes on before it refuses, so that overload costs clients a
503 and never costs the server its memory or its event loop.

Two bounds, both checked on the event loop and both cheap:
- BodyBudget: the bytes of the requests the server is working on, over all models. A request
  takes its share as its body's bytes arrive (a Hold), a window of at most 1 MiB ahead of them
  (app.read_body), not when it declares a length, and keeps it until its answer is computed: the
  budget bounds bodies being received, bodies being decoded and the rows they became, together.
  A client that declares 8 MiB and sends a byte a second holds 1 MiB at most (and is cut by the
  minimum receive rate), not 8 MiB; the window keeps the number of bodies being received at
  once near the budget over a window, so a flood of uploads is read a few bodies at a time.
  When the budget is full, the next bytes of every request wait unread, the oldest request
  served first, so their clients' TCP windows close and the kernel, not our memory, holds what
  they send. If every byte in use belongs to a request that is itself waiting for more (bodies
  that filled the budget between them, none complete), nothing would ever move: the youngest of
  them is stopped with 503 and gives its bytes to the oldest. A request that waits longer than
  the queue deadline, over all its waits, is refused with 503.
- RowQueue: the rows (and bytes) of one model's requests decoded and waiting for the engine. A
  request that would take it over its bound is refused with 503; a request alone in an empty
  queue is always taken, so a big request is slow but never refused for its size.

Requests that take neither (health, metadata, the page) never wait on either: a flood of uploads
leaves them as fast as an idle server.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import List, Optional

from .protocol import RequestError


class Overloaded(RequestError):
    """A 503 with Retry-After: the server is full, not the request wrong. `close` asks for the
    connection to be closed after the answer (the body was not read, so the connection cannot
    carry another request); `reason` names the bound for /metrics."""

    def __init__(self, message: str, reason: str, retry_after: float = 1.0, close: bool = False):
        super().__init__(503, message, close)
        self.reason = reason
        self.retry_after = max(1, math.ceil(retry_after))  # HTTP's Retry-After is whole seconds

    @property
    def headers(self) -> dict:
        return {"Retry-After": str(self.retry_after), **super().headers}


@dataclass(order=True)
class _Wait:
    """A Hold waiting for `size` more bytes; ordered by its request's arrival."""

    order: int
    size: int = field(compare=False)
    future: asyncio.Future = field(compare=False)
    hold: "Hold" = field(compare=False)


class Hold:
    """One request's share of a BodyBudget: the bytes it has taken so far. release() gives them all
    back (when the answer is computed, or the request fails)."""

    def __init__(self, budget: "BodyBudget", order: int):
        self.budget = budget
        self.order = order  # arrival: lower is older, and served first
        self.bytes = 0
        self.waiting = False

    async def take(self, size: int, timeout: float) -> None:
        """`size` more bytes, waiting up to `timeout` seconds for them; Overloaded (503) when they
        do not come free in time, or when this request is the youngest of a budget that is full
        of requests all waiting for more."""
        await self.budget._take(self, size, timeout)

    def release(self) -> None:
        self.budget._release(self)

    def give_back(self, size: int) -> None:
        """Returns `size` of the bytes held (a reservation the body did not use)."""
        self.budget._give_back(self, min(size, self.bytes))


class BodyBudget:
    """A byte budget taken as bodies arrive, the oldest request first."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"the body budget must be at least 1 byte, got {capacity}")
        self.capacity = capacity
        self.in_use = 0
        self._arrivals = itertools.count()
        self._waits: List[_Wait] = []  # a heap: the oldest request's wait first
        self._held_by_waiting = 0  # bytes held by requests that are waiting for more

    @property
    def waiting(self) -> int:
        return sum(not w.future.done() for w in self._waits)

    def hold(self) -> Hold:
        """A new request's share, empty; its place in line is its arrival."""
        return Hold(self, next(self._arrivals))

    async def _take(self, hold: Hold, size: int, timeout: float) -> None:
        if not self._waits and self.in_use + size <= self.capacity:
            self.in_use += size
            hold.bytes += size
            return
        wait = _Wait(hold.order, size, asyncio.get_running_loop().create_future(), hold)
        heapq.heappush(self._waits, wait)
        hold.waiting = True
        self._held_by_waiting += hold.bytes
        self._grant()
        try:
            await asyncio.wait_for(asyncio.shield(wait.future), timeout)
        except asyncio.TimeoutError:
            if wait.future.done() and wait.future.exception() is None:  # granted as the time ran out: keep it
                return
            self._leave(wait)
            raise Overloaded(f"the server is receiving {self.in_use} bytes of request bodies (its budget is "
                             f"{self.capacity}, --body-budget) and {self.waiting} more requests wait; this one "
                             f"waited {timeout * 1000:.0f} ms (--max-queue-ms) in all: retry later",
                             "body_budget", retry_after=max(timeout, 1.0), close=True) from None
        except asyncio.CancelledError:  # the client went away: what it holds is given back by release()
            if not wait.future.done():
                self._leave(wait)
            raise

    def _leave(self, wait: _Wait) -> None:
        """A wait that will not be granted leaves the line; those behind it may fit now."""
        wait.future.cancel()
        self._stop_waiting(wait.hold)
        self._grant()

    def _stop_waiting(self, hold: Hold) -> None:
        if hold.waiting:
            hold.waiting = False
            self._held_by_waiting -= hold.bytes

    def _release(self, hold: Hold) -> None:
        self._stop_waiting(hold)
        self._give_back(hold, hold.bytes)

    def _give_back(self, hold: Hold, size: int) -> None:
        self.in_use -= size
        hold.bytes -= size
        self._grant()

    def _grant(self) -> None:
        while self._waits:
            head = self._waits[0]
            if head.future.done():  # given up, or stopped
                heapq.heappop(self._waits)
                continue
            if self.in_use + head.size <= self.capacity:
                heapq.heappop(self._waits)
                self._stop_waiting(head.hold)
                self.in_use += head.size
                head.hold.bytes += head.size
                head.future.set_result(None)
                continue
            # Bytes held by requests that are not waiting (being received, decoded or computed)
            # come free by themselves. If there are none, no one can move until someone yields.
            if self.in_use > self._held_by_waiting or not self._stop_youngest(head):
                return

    def _stop_youngest(self, head: _Wait) -> bool:
        """Stops the youngest waiting request that holds bytes (younger than `head`) with 503,
        taking back its bytes; False when there is none."""
        victims = [w for w in self._waits if not w.future.done() and w.hold.bytes and w.order > head.order]
        if not victims:
            return False
        victim = max(victims)
        held = victim.hold.bytes
        self._stop_waiting(victim.hold)
        self.in_use -= held
        victim.hold.bytes = 0
        victim.future.set_exception(Overloaded(
            f"the server's body budget ({self.capacity} bytes, --body-budget) is full of bodies still arriving; "
            f"this request, the latest of them, gave back its {held} bytes so that earlier ones can finish: "
            "retry later", "body_budget", close=True))
        return True


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
