"""Why a dependency could not be reached, in words: the address tried and the cause.

`cause(exc)` walks the exception chain (httpx and aiohttp both wrap the OSError that says what
happened) and names it: connection refused, DNS lookup failed, TLS failed, timed out.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "os_error", None)]
        todo.extend(e for e in nested if isinstance(e, BaseException))


def cause(exc: BaseException) -> str:
    """A few plain words for why a connection failed."""
    chain = list(_chain(exc))
    names = {type(e).__name__ for e in chain}
    if any(isinstance(e, socket.gaierror) for e in chain) or "ClientConnectorDNSError" in names:
        return "DNS lookup failed"
    if any(isinstance(e, ssl.SSLError | ssl.CertificateError) for e in chain):
        return "TLS failed"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, TimeoutError) for e in chain) or any("Timeout" in n for n in names):
        return "timed out"
    if any(isinstance(e, ConnectionResetError) for e in chain):
        return "connection reset"
    return type(exc).__name__


DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379, "rediss": 6379, "ws": 80, "wss": 443}


def address(url: str) -> str:
    """host:port of a URL, the port made explicit (never its credentials); a unix socket's path."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
    except ValueError:  # not a number: say what was given, without the credentials
        port = 0
    return f"{parts.hostname}:{port}"


def unreachable(url: str, exc: BaseException) -> str:
    """'could not reach api.timbal.ai:443 (connection refused)'."""
    return f"could not reach {address(url)} ({cause(exc)})"
