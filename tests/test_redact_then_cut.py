"""Redact, then cut: a secret that straddles the cut of an excerpt leaves nothing behind.

Cut first, and the first characters of the secret stay in the excerpt where no redaction can
recognise them any more (the bug: Timbal's error bodies were cut to 200 characters first).
"""

from __future__ import annotations

import logging

import httpx
import pytest
from pydantic import SecretStr

from bot.redaction import REDACTED, Redactor, excerpt
from bot.timbal import TimbalBadResponse, TimbalClient, TimbalError, parse_listing
from handlers.commands.jobs import ReplyFailed

KEY = "tbl-live-0123456789abcdef0123456789abcdef"


def leaks(text: str) -> bool:
    """Does `text` hold the start of KEY (what a cut at the wrong moment leaves behind)?"""
    return any(KEY[:n] in text for n in range(5, len(KEY) + 1))


def straddling(cut: int) -> str:
    """Text in which KEY starts a few characters before `cut`."""
    return "x" * (cut - 6) + KEY + " and more after it"


def client(status: int, body: str, content_type: str = "text/html") -> TimbalClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text=body, headers={"Content-Type": content_type})

    return TimbalClient(
        base_url="https://timbal.test",
        api_key=SecretStr(KEY),
        org_id="org_x",
        http=httpx.AsyncClient(transport=httpx.MockTransport(answer)),
        retries=0,
    )


@pytest.mark.parametrize(
    ("status", "content_type"), [(418, "text/html"), (200, "text/html")], ids=["error", "not-json"]
)
async def test_a_key_straddling_the_cut_of_a_logged_body_is_redacted_whole(
    caplog: pytest.LogCaptureFixture, status: int, content_type: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.timbal"), pytest.raises(TimbalError):
        await client(status, straddling(200), content_type).list_jobs()
    assert not leaks(caplog.text)
    assert "[redacted]" in caplog.text or "x" * 150 in caplog.text


def test_a_key_straddling_the_cut_of_a_skipped_items_id_is_redacted_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redact = Redactor([KEY])
    items = [{"id": straddling(100)}, {"id": "ok"}]
    with caplog.at_level(logging.WARNING), pytest.raises(TimbalBadResponse):
        parse_listing({"jobs": items}, redact=redact)
    assert not leaks(caplog.text)


def test_a_refused_reply_names_no_part_of_a_secret() -> None:
    error = ReplyFailed(500, straddling(200), Redactor([KEY]))
    assert not leaks(str(error))


@pytest.mark.parametrize("limit", [1, 10, 50, 94, 95, 100, 101, 200])
def test_excerpt_never_keeps_a_piece_of_a_secret(limit: int) -> None:
    text = straddling(100)
    cut = excerpt(text, limit, Redactor([KEY]))
    assert len(cut) <= limit
    assert not leaks(cut)
    if len(Redactor([KEY])(text)) <= limit:
        assert REDACTED in cut
