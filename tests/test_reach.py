"""`bot.reach`: the cause of a failed connection in words, and the address, never credentials."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest

from bot.reach import address, cause, unreachable


def wrapped(inner: BaseException) -> Exception:
    """As httpx raises it: its own error, caused by the OSError that says what happened."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise httpx.ConnectError("boom") from exc
    except httpx.ConnectError as outer:
        return outer


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (wrapped(ConnectionRefusedError(111, "refused")), "connection refused"),
        (wrapped(socket.gaierror(-2, "Name or service not known")), "DNS lookup failed"),
        (wrapped(ssl.SSLCertVerificationError("bad cert")), "TLS failed"),
        (httpx.ConnectTimeout("slow"), "timed out"),
        (TimeoutError(), "timed out"),
        (wrapped(ConnectionResetError()), "connection reset"),
        (ValueError("odd"), "ValueError"),
    ],
)
def test_cause(exc: BaseException, words: str) -> None:
    assert cause(exc) == words


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.timbal.ai", "api.timbal.ai:443"),
        ("http://127.0.0.1:8080/x", "127.0.0.1:8080"),
        ("redis://:s3cret@redis.internal/0", "redis.internal:6379"),
        ("rediss://user:s3cret@cache:6380", "cache:6380"),
        ("unix:///run/redis.sock", "/run/redis.sock"),
    ],
)
def test_address_names_host_and_port_never_a_password(url: str, shown: str) -> None:
    assert address(url) == shown
    assert "s3cret" not in unreachable(url, TimeoutError())
