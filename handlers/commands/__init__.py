"""Slash commands, one module each."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from handlers.commands import jobs

# Commands whose listener always acks with an empty body before it does anything (the answer
# comes through the response URL): the HTTP server may send that ack itself, at once, and let
# Bolt run the listener after it (see `bot.app.runtime`, `_slack_events`).
EMPTY_ACK_COMMANDS = frozenset({jobs.COMMAND})


def register(app: AsyncApp) -> None:
    jobs.register(app)
