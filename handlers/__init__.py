"""Slack listeners, one module per surface, each with register(app).

`register_handlers(app)` registers every surface and the app's error handler: listeners let
unexpected exceptions propagate (no per-listener `except Exception`); the handler logs them
with their traceback and tells the user, when the request carries a response URL.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp, AsyncRespond

from handlers import actions, commands
from handlers.commands import ASKED_LISTING, EMPTY_ACK_COMMANDS, Asked, listing_asked

__all__ = [
    "ASKED_LISTING",
    "EMPTY_ACK_COMMANDS",
    "SORRY",
    "Asked",
    "listing_asked",
    "register_error_handler",
    "register_handlers",
]

log = logging.getLogger(__name__)

SORRY = "Something went wrong while answering; the bot logged the details. Please try again."


async def reply_to_unhandled_error(
    error: Exception, body: dict[str, Any], respond: AsyncRespond | None
) -> None:
    """Bolt's global error handler: log with the traceback, then an ephemeral apology.

    The request body is not logged: it holds the verification token and the response URL.
    """
    what = body.get("command") or body.get("type") or "request"
    log.error("unhandled error answering %s: %s", what, type(error).__name__, exc_info=error)
    if respond is None or respond.response_url is None:
        return
    try:
        response = await respond(response_type="ephemeral", text=SORRY, replace_original=False)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("could not tell the user about the error: %s", type(exc).__name__)
        return
    if response.status_code != 200:
        log.warning("could not tell the user about the error: HTTP %d", response.status_code)


def register_error_handler(app: AsyncApp) -> None:
    app.error(reply_to_unhandled_error)


def register_handlers(app: AsyncApp) -> None:
    """Every listener, and the error handler (register a different one after this to replace it)."""
    commands.register(app)
    actions.register(app)
    register_error_handler(app)
