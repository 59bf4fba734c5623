"""Bounds on what a connection may hold before its request reaches the app: the bytes of a request's
head (request line and headers), the time to send that head, and the number of open connections.

uvicorn's httptools protocol has none of them. httptools grows a header value by concatenation,
so one 200 MiB header took 67 s and 256 MiB of memory to parse, and a connection that sends
nothing, or a byte of its head every few seconds, stayed open forever: a few thousand of them
used up the process's file descriptors and every health check failed (issue 34). The subclass here
counts a head's bytes before the parser sees them, arms a timer whenever the server waits for a
head, and closes connections beyond the cap as they arrive.
"""
from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Optional, Type

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


def _descriptor_limit() -> Optional[int]:
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):  # not on this platform
        return None
    return None if soft == resource.RLIM_INFINITY else soft


@dataclass(frozen=True)
class ConnectionLimits:
    max_head_bytes: int = 64 << 10  # request line and headers; more gets 431 and the connection closed
    head_timeout: float = 10.0  # seconds to send a whole head, from the connection's start or the last response
    # Open connections; more are closed as they arrive. None: the file descriptors the process may
    # open, less 64 for the engine, the decode worker and the log (at most 10,000).
    max_connections: Optional[int] = None

    def resolved(self) -> "ConnectionLimits":
        if self.max_connections is not None:
            return self
        descriptors = _descriptor_limit()
        cap = 10_000 if descriptors is None else max(16, min(10_000, descriptors - 64))
        return ConnectionLimits(self.max_head_bytes, self.head_timeout, cap)

    @property
    def crowded(self) -> int:
        """Open connections above which a new one gets a second to send its head: a health check
        sends its head at once and gets through; a silent connection leaves room for it."""
        return (self.max_connections or 0) * 3 // 4


CROWDED_HEAD_TIMEOUT = 1.0


def bounded_protocol(limits: ConnectionLimits) -> Type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `limits` (resolved) on every connection."""
    limits = limits.resolved()

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_bytes, self._in_head, self._head_timer = 0, True, None
            open_now = len(self.connections)
            if open_now > limits.max_connections:
                transport.close()
                return
            crowded = open_now > limits.crowded
            self._head_timeout = min(limits.head_timeout, CROWDED_HEAD_TIMEOUT) if crowded else limits.head_timeout
            self._arm_head_timer()

        def connection_lost(self, exc) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            while data and not self.transport.is_closing():
                if not self._in_head:
                    return super().data_received(data)
                # Feed the head only what it may still use, before the parser grows a buffer.
                allowance = limits.max_head_bytes - self._head_bytes
                if allowance <= 0:
                    return self._refuse_head()
                piece, data = data[:allowance], data[allowance:]
                self._head_bytes += len(piece)
                super().data_received(piece)
            if self._in_head and self._head_bytes >= limits.max_head_bytes and not self.transport.is_closing():
                self._refuse_head()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm_head_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head, self._head_bytes = True, 0

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._in_head and not self.transport.is_closing():
                self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_too_slow)

        def _disarm_head_timer(self) -> None:
            if getattr(self, "_head_timer", None) is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            # Only while the server waits for a head: a response still being computed is not cut.
            self._head_timer = None
            if self._in_head and (self.cycle is None or self.cycle.response_complete) and \
                    not self.transport.is_closing():
                self.transport.close()

        def _refuse_head(self) -> None:
            message = (f"the request line and headers exceed {limits.max_head_bytes} bytes "
                       "(mnist-engine serve --max-header-bytes)").encode()
            self.transport.write(b"".join([
                STATUS_LINE[431], b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(message)).encode() + b"\r\n", b"connection: close\r\n\r\n", message]))
            self.transport.close()

    return BoundedHttpToolsProtocol
