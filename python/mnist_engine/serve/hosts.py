"""The Host allow-list: a request whose Host header names anything but this machine's loopback
names, the address the server is bound to, or what the operator allowed (`--allow-host`) gets a
421 before it reaches a route. A web page the user visits can otherwise reach a server on
localhost through DNS rebinding: the browser sends the attacker's name in Host.
"""
from __future__ import annotations

import json
from typing import Iterable, Optional, Tuple
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(header: Optional[str]) -> Optional[str]:
    """The host of a Host header without its port, lower case ('[::1]:80' -> '::1'); None if unreadable."""
    if not header:
        return None
    try:
        parts = urlsplit("//" + header)
        parts.port  # noqa: B018  (read for its check: a port that is not a number raises)
        name = parts.hostname
    except ValueError:  # an unclosed '[' or a port that is not a number
        return None
    return name.lower() if name else None


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> Tuple[str, ...]:
    """The loopback names, the bound address unless it is a wildcard (0.0.0.0 or ::, which no client
    names), and `extra` ('*' allows any host)."""
    names = list(LOOPBACK_NAMES)
    if bound not in ("0.0.0.0", "::", ""):
        names.append(bound.strip("[]").lower())
    names += [name.strip("[]").lower() for name in extra]
    return tuple(dict.fromkeys(names))


class HostAllowList:
    """ASGI middleware: 421 with a JSON error for any HTTP request whose Host is not in `hosts`."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str]):
        self.app, self.hosts = app, tuple(hosts)
        self.any = "*" in self.hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = Headers(scope=scope).get("host")
        if host_name(header) in self.hosts:
            return await self.app(scope, receive, send)
        message = (f"this server does not answer to the host {header!r}; it answers to "
                   f"{', '.join(self.hosts)} (add a name with --allow-host, or '*' for any)")
        response = Response(json.dumps({"error": message}).encode(), status_code=421,
                            media_type="application/json")
        await response(scope, receive, send)
