"""The access log: one line per request, as uvicorn, nginx and Triton write by default.

    2026-12-08T01:10:00.123Z 127.0.0.1:53422 POST /v2/models/mnist/infer 200 rows=1 0.81ms

Time (UTC, milliseconds), client address, method, path, status, the rows an infer request carried
("rows=-" where there were none) and the milliseconds from the request's arrival at the app to the
end of its answer. A pure ASGI middleware: Starlette's BaseHTTPMiddleware would add a task per
request. Lines are gathered and written once per turn of the event loop, so a burst of small
requests costs one write, not one each. The path is the client's: anything a terminal would act
on (a newline that would forge a line, an escape sequence) is written as its escape.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable, List, Optional, TextIO

from .._text import printable

ROWS_KEY = "mnist_engine.rows"  # set in the ASGI scope by the infer endpoint


class _Clock:
    """The time of day as the log writes it; the part to the second is formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((t - second) * 1000):03d}Z"


class AccessLog:
    """ASGI middleware writing a line per HTTP request to `stream`."""

    def __init__(self, app: Callable, stream: TextIO):
        self.app = app
        self.stream = stream
        self._clock = _Clock()
        self._lines: List[str] = []
        self._flush_scheduled = False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status: Optional[int] = None

        async def send_and_watch(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._log(scope, status, started)

        try:
            await self.app(scope, receive, send_and_watch)
        except BaseException:
            if status is None:  # the app failed before answering; the server answers 500 or drops it
                self._log(scope, 500, started)
            raise

    def _log(self, scope, status: Optional[int], started: float) -> None:
        client = scope.get("client")
        where = f"{client[0]}:{client[1]}" if client else "-"
        rows = scope.get(ROWS_KEY, "-")
        self._lines.append(f"{self._clock.now()} {where} {scope['method']} {printable(scope['path'])} "
                           f"{status} rows={rows} {(time.perf_counter() - started) * 1000:.2f}ms\n")
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        lines, self._lines = self._lines, []
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError):  # a closed or full stderr must not fail requests
            pass
