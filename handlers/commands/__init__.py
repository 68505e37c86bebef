"""Slash commands, one module each."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.jobs.query import JobsQuery
from handlers.commands import jobs

# Commands whose listener always acks with an empty body before it does anything (the answer
# comes through the response URL): the HTTP server may send that ack itself, at once, and let
# Bolt run the listener after it (see `bot.app.runtime`, `_slack_events`).
EMPTY_ACK_COMMANDS = frozenset({jobs.COMMAND})
ASKED_LISTING = jobs.ASKED_LISTING
Asked = jobs.Asked


def listing_asked(command: str | None, text: str) -> JobsQuery | None:
    """The Timbal listing a command's listener will ask for first, if it is one that does
    (the HTTP server asks for it as the command arrives; see `bot.app.runtime`)."""
    return jobs.listing_asked(text) if command == jobs.COMMAND else None


def register(app: AsyncApp) -> None:
    jobs.register(app)
