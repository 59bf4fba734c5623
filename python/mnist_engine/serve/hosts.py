"""The Host allow-list: a request whose Host header names anything but this machine's loopback
names, the address the server is bound to, or what the operator allowed (`--allow-host`) gets a
421 before it reaches a route. A web page the user visits can otherwise reach a server on
localhost through DNS rebinding: the browser sends the attacker's name in Host. A Host header
that is not plainly host[:port], or a second one, gets a 400: a lenient parser reads
'evil.com@localhost' as localhost, and two headers leave the choice to whichever layer reads one.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import TYPE_CHECKING, Iterable, Optional, Tuple

if TYPE_CHECKING:  # the names are checked here, and the command line's --allow-host needs no Starlette
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

# RFC 7230's Host = uri-host [ ":" port ], with uri-host an IP literal in brackets, an IPv4 address
# or a DNS name (letters, digits and hyphens in dot-separated labels, an optional trailing dot).
# Nothing else passes: no userinfo ('evil.com@localhost'), no path, query or fragment.
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::(?P<port>[0-9]{1,5}))?")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def canonical_host(host: str) -> Optional[str]:
    """A host name as the allow-list compares it (no port): lower case, without a DNS name's
    trailing dot, an IP address in its standard form ('[0:0:0:0:0:0:0:1]' -> '::1'); None if it is
    not an IP address or a DNS name."""
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        return str(ipaddress.ip_address(host[1:-1] if bracketed else host))
    except ValueError:
        if bracketed:
            return None
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return name.lower()


def host_name(header: Optional[str]) -> Optional[str]:
    """The host of a Host header without its port, canonical ('[::1]:80' -> '::1', 'LocalHost.' ->
    'localhost'); None unless the header is exactly host[:port] (RFC 7230)."""
    found = _HOST.fullmatch(header or "")
    if not found or (found["port"] is not None and int(found["port"]) > 65535):
        return None
    if found["ipv6"] is not None:
        try:
            return str(ipaddress.IPv6Address(found["ipv6"]))
        except ValueError:
            return None
    return canonical_host(found["name"])


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> Tuple[str, ...]:
    """The loopback names, the bound address unless it is a wildcard (0.0.0.0 or ::, which no client
    names), and `extra` ('*' allows any host), in canonical form. A name that is no host raises
    ValueError."""
    names = list(LOOPBACK_NAMES)
    if bound not in ("0.0.0.0", "::", ""):
        names.append(bound)
    names += list(extra)
    canonical = []
    for name in names:
        host = "*" if name == "*" else canonical_host(name)
        if host is None:
            raise ValueError(f"expected a host name or an IP address to allow, got {name!r}")
        canonical.append(host)
    return tuple(dict.fromkeys(canonical))


def _error(status: int, message: str) -> Response:
    from starlette.responses import Response

    return Response(json.dumps({"error": message}).encode(), status_code=status, media_type="application/json")


class HostAllowList:
    """ASGI middleware for every HTTP request: 400 with a JSON error when the Host header is missing,
    repeated or not host[:port], 421 when its host is not in `hosts`."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str]):
        self.app, self.hosts = app, tuple(hosts)
        self.any = "*" in self.hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.datastructures import Headers

        headers = Headers(scope=scope).getlist("host")
        host = host_name(headers[0]) if len(headers) == 1 else None
        if len(headers) != 1:
            response = _error(400, f"expected one Host header, got {len(headers)}")
        elif host is None:
            response = _error(400, f"expected a Host header of the form host[:port] (a DNS name or an IP address), "
                                   f"got {headers[0]!r}")
        elif self.any or host in self.hosts:
            return await self.app(scope, receive, send)
        else:
            response = _error(421, f"this server does not answer to the host {headers[0]!r}; it answers to "
                                   f"{', '.join(self.hosts)} (add a name with --allow-host, or '*' for any)")
        await response(scope, receive, send)
