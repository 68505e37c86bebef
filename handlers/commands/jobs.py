"""`/jobs [connector] [state=<state>] [limit=<n>]`: the org's recent connector jobs, ephemeral;
`/jobs subscribe|unsubscribe|subscriptions|mute|unmute …` (`handlers.commands.subscriptions`).

The listener acks with an empty body first (Slack wants an answer within 3 seconds and the
Timbal call may take longer), then parses, lists, renders and answers through `respond()`.
An empty ack shows nothing in the channel, so no stale "Fetching…" line is left above the
answer and every outcome reaches the user the same way (the response URL).

Timbal's typed errors become one clear sentence; anything else propagates to the app's error
handler (`handlers.register_error_handler`), which logs it and tells the user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.app.services import Services
from bot.jobs.listing import (
    RenderedMessage,
    closest_connectors,
    render_error,
    render_jobs_listing,
    render_usage,
)
from bot.jobs.query import HelpRequest, JobsQuery, QueryError, parse_jobs_command
from bot.jobs.subcommands import parse as parse_subcommand
from bot.redaction import Redactor, excerpt
from bot.timbal import (
    JobListing,
    TimbalAuthError,
    TimbalBadResponse,
    TimbalError,
    TimbalResponseTooLarge,
    TimbalUnavailable,
)
from handlers.commands.subscriptions import answer_subcommand

log = logging.getLogger(__name__)

COMMAND = "/jobs"
# The Bolt context key of the listing the HTTP server asked for as the command arrived
# (`listing_asked`; `bot.app.runtime`): an `Asked` the listener answers from.
ASKED_LISTING = "asked_listing"


class Asked(NamedTuple):
    """A listing asked for ahead of the listener: its scope, and its answer to come."""

    connector_id: str | None
    answer: Awaitable[JobListing]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ReplyFailed(Exception):
    """Slack refused the reply at the response URL, even as plain text."""

    def __init__(self, status: int, body: str, redact: Callable[[str], str] = str) -> None:
        super().__init__(f"response_url answered {status}: {excerpt(body, 200, redact)!r}")
        self.status = status


def describe_failure(error: TimbalError, org_id: str) -> tuple[str, str]:
    """(metrics outcome, one sentence for the user) for a Timbal error."""
    if isinstance(error, TimbalAuthError):
        if error.status == 403:
            return "forbidden", f"The bot's Timbal API key cannot list jobs for org `{org_id}`."
        return (
            "unauthorized",
            "Timbal rejected the bot's API key; ask an admin to check TIMBAL_API_KEY.",
        )
    if isinstance(error, TimbalUnavailable):
        return "unavailable", "Timbal is not answering right now; try again in a minute."
    if isinstance(error, TimbalResponseTooLarge):
        return (
            "too_large",
            f"Timbal's answer is larger than the {error.limit // (1024 * 1024)} MB the bot "
            "accepts; ask an admin to raise TIMBAL_MAX_RESPONSE_MB.",
        )
    if isinstance(error, TimbalBadResponse):
        return (
            "bad_response",
            "Timbal answered with something unexpected; the bot logged the details.",
        )
    return "timbal_error", "Timbal could not list the jobs; the bot logged the details."


def listing_asked(text: str) -> JobsQuery | None:
    """The listing `/jobs <text>` asks Timbal for first, None for a subcommand, help or a
    mistake: the HTTP server asks for it as the command arrives, before this listener runs
    (`bot.app.runtime`), and hands it to the listener in its context (`ASKED_LISTING`)."""
    if parse_subcommand(text) is not None:
        return None
    parsed = parse_jobs_command(text)
    return parsed if isinstance(parsed, JobsQuery) else None


async def answer(
    text: str, services: Services, now: datetime, asked: object = None
) -> tuple[str, RenderedMessage]:
    """(metrics outcome, reply) for a listing query: the I/O shell around the pure parts;
    `asked`: what the context holds under ASKED_LISTING, if anything."""
    parsed = parse_jobs_command(text)
    if isinstance(parsed, HelpRequest):
        return "usage", render_usage()
    if isinstance(parsed, QueryError):
        return "usage", render_usage(parsed.message)
    return await answer_query(parsed, services, now, asked_for(parsed, asked))


def asked_for(parsed: JobsQuery, asked: object) -> Awaitable[JobListing] | None:
    """The answer asked ahead for this query, if one was and it is this query's scope (a
    listing of another connector is never answered from)."""
    if not isinstance(asked, Asked) or asked.connector_id != parsed.connector_id:
        return None
    return asked.answer


async def answer_query(
    parsed: JobsQuery,
    services: Services,
    now: datetime,
    asked: Awaitable[JobListing] | None = None,
) -> tuple[str, RenderedMessage]:
    """(metrics outcome, reply) for a parsed listing query (a card's Recent runs too);
    `asked`: the listing already asked for this query, if it was."""
    org_id = services.settings.timbal_org_id
    try:
        if asked is None:
            asked = services.timbal.list_jobs_detailed(parsed.connector_id)
        listing = await asked
        suggestions: list[str] = []
        if parsed.connector_id is not None and not listing.jobs:
            # An unknown connector, perhaps mistyped: the org's listing holds the real ids.
            org = await services.timbal.list_jobs_detailed()
            suggestions = closest_connectors(parsed.connector_id, org.jobs)
    except TimbalError as exc:
        outcome, sentence = describe_failure(exc, org_id)
        log.warning("/jobs: Timbal failed (%s): %s", outcome, exc.reason)
        return outcome, render_error(sentence)
    message = listing.rendered(  # identical requests sharing a listing share its reply
        (parsed, tuple(suggestions)),
        lambda: render_jobs_listing(
            listing.jobs,
            query=parsed,
            classifier=services.classifier,
            now=now,
            org_id=org_id,
            skipped=listing.skipped,
            suggestions=suggestions,
            as_of=listing.fetched_at,
        ),
    )
    return "ok", message


async def reply(
    respond: AsyncRespond, message: RenderedMessage, redact: Callable[[str], str] = str
) -> None:
    """Send an ephemeral reply; if Slack refuses the blocks, send the text alone."""
    response = await respond(
        response_type="ephemeral",
        text=message.text,
        blocks=message.blocks,
        replace_original=False,
    )
    if response.status_code == 200:
        return
    log.warning(
        "/jobs: response_url refused the reply (%d %r); retrying as plain text",
        response.status_code,
        excerpt(response.body, 200, redact),
    )
    response = await respond(response_type="ephemeral", text=message.text, replace_original=False)
    if response.status_code != 200:
        raise ReplyFailed(response.status_code, response.body, redact)


async def handle_jobs_command(
    ack: AsyncAck,
    command: dict[str, Any],
    respond: AsyncRespond,
    context: AsyncBoltContext,
) -> None:
    """Ack at once, then answer `/jobs …` ephemerally through the response URL."""
    await ack()
    started = time.monotonic()
    services: Services = context["services"]
    clock: Callable[[], datetime] = context.get("clock") or _utcnow
    text = str(command.get("text") or "")
    redact = Redactor(services.settings.secrets)
    outcome = "error"  # what an exception leaves behind; the app's error handler replies
    try:
        subcommand = parse_subcommand(text)
        if subcommand is not None:
            result, message = await answer_subcommand(
                subcommand, command, services, context.client, clock()
            )
        else:
            asked = context.get(ASKED_LISTING)
            result, message = await answer(text, services, clock(), asked)
        await reply(respond, message, redact)
        outcome = result
    finally:
        elapsed = time.monotonic() - started
        services.metrics.commands.labels(outcome=outcome).inc()
        services.metrics.command_latency.observe(elapsed)
        log.info(
            "/jobs user=%s text=%r outcome=%s ms=%d",
            command.get("user_id"),
            excerpt(text, 200, redact),
            outcome,
            elapsed * 1000,
        )


async def ack_before_listener(ack: AsyncAck, next_: Callable[[], Awaitable[None]]) -> None:
    """Ack in listener middleware, before the listener's task starts.

    With `process_before_response=False`, Bolt (1.30) polls every 10 ms for the listener's
    ack; if the listener raises before the first poll, Bolt's error path resets
    `ack.response` and Slack gets a 404 three seconds later. Acked here, the ack is sent at
    once whatever the listener does; the listener's own `ack()` is then a no-op.
    """
    await ack()
    await next_()


def register(app: AsyncApp) -> None:
    app.command(COMMAND, middleware=[ack_before_listener])(handle_jobs_command)
