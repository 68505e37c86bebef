"""The buttons of an incident's card: Acknowledge, Mute connector (1 h / 4 h / 24 h), Recent runs.

Interactivity payloads reach Bolt only after their signature was verified on the raw bytes
(`bot.app.runtime`, like slash commands): a forged or stale one never gets here. Each listener
acks at once, then answers the clicker ephemerally through the payload's response URL; the
card itself changes only through the outbox (`storage.incidents` adds a `CardRefresh`), so it
is updated exactly once, in the channel's order, by the delivery core.

- Acknowledge: the first acknowledger wins (one script); anyone after them is told who was
  first, and when. Escalation stops (it checks the same field).
- Mute connector: `/jobs mute <connector> <duration>` for this channel (same admins, same
  limit), then noted on the card.
- Recent runs: the connector's recent jobs, as `/jobs <connector>` lists them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.alerts.cards import ACK, BLOCK_PREFIX, MUTE, MUTE_CHOICES, RUNS
from bot.app.services import Services
from bot.domain.incidents import Incident
from bot.domain.subscriptions import Mute, Target
from bot.jobs.incident_views import (
    render_acked,
    render_bad_choice,
    render_card_muted,
    render_first,
    render_incident_over,
)
from bot.jobs.listing import RenderedMessage
from bot.jobs.query import JobsQuery
from bot.jobs.subscription_views import render_limit, render_not_admin
from bot.redaction import Redactor
from handlers.commands.jobs import ack_before_listener, answer_query, reply
from storage.incidents import AckOutcome
from storage.subscriptions import Put

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _action(body: dict[str, Any]) -> dict[str, Any]:
    actions = body.get("actions") or [{}]
    first = actions[0]
    return first if isinstance(first, dict) else {}


def _ref(body: dict[str, Any]) -> str:
    """The incident the clicked card belongs to: its actions block is `incident|<ref>`."""
    block = str(_action(body).get("block_id") or "")
    return block.removeprefix(BLOCK_PREFIX) if block.startswith(BLOCK_PREFIX) else ""


def _user(body: dict[str, Any]) -> tuple[str, str]:
    user = body.get("user") or {}
    uid = str(user.get("id") or "")
    return uid, str(user.get("username") or user.get("name") or uid)


def _channel(body: dict[str, Any]) -> str:
    return str((body.get("channel") or {}).get("id") or "")


async def _incident(body: dict[str, Any], services: Services) -> Incident | None:
    """The open incident this card is of, in this channel (None once it is over)."""
    ref = _ref(body)
    if not ref:
        return None
    incident = (await services.incidents.table()).by_ref(ref)
    if incident is None or incident.channel != _channel(body):
        return None
    return incident


async def _answer(
    respond: AsyncRespond, services: Services, what: str, message: RenderedMessage
) -> None:
    await reply(respond, message, Redactor(services.settings.secrets))
    services.metrics.commands.labels(outcome=f"card_{what}").inc()


async def on_acknowledge(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    services: Services = context["services"]
    clock: Callable[[], datetime] = context.get("clock") or _utcnow
    incident = await _incident(body, services)
    if incident is None:
        await _answer(respond, services, "over", render_incident_over())
        return
    user_id, name = _user(body)
    result = await services.incidents.acknowledge(incident, user_id=user_id, name=name, now=clock())
    if result.outcome is AckOutcome.ACKED:
        log.info(
            "incident acknowledged connector=%r channel=%s user=%s",
            incident.connector,
            incident.channel,
            user_id,
        )
        await _answer(respond, services, "acked", render_acked(incident))
    elif result.outcome is AckOutcome.ALREADY and result.first is not None:
        first = result.first
        message = render_first(incident, first.by, first.name, first.at, user_id)
        await _answer(respond, services, "already_acked", message)
    else:
        await _answer(respond, services, "over", render_incident_over())


async def on_mute(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    services: Services = context["services"]
    clock: Callable[[], datetime] = context.get("clock") or _utcnow
    user_id, name = _user(body)
    admins = services.settings.subscription_admins or frozenset()
    if admins and user_id not in admins:
        await _answer(respond, services, "not_admin", render_not_admin(admins))
        return
    chosen = str((_action(body).get("selected_option") or {}).get("value") or "")
    seconds = next((s for s, _ in MUTE_CHOICES if str(s) == chosen), None)
    if seconds is None:
        await _answer(respond, services, "bad_choice", render_bad_choice())
        return
    incident = await _incident(body, services)
    if incident is None:
        await _answer(respond, services, "over", render_incident_over())
        return
    now = clock()
    until = now + timedelta(seconds=seconds)
    mute = Mute(
        channel=incident.channel,
        target=Target(value=incident.connector),
        until=until,
        by=user_id,
        at=now,
    )
    put = await services.subscriptions.mute(mute)
    if put is Put.LIMIT:
        limit = render_limit(services.subscriptions.limit, "mute")
        await _answer(respond, services, "limit", limit)
        return
    await services.incidents.note_mute(incident, until=until, by=name, now=now)
    log.info("muted from a card connector=%r channel=%s", incident.connector, incident.channel)
    await _answer(
        respond, services, "muted", render_card_muted(incident, until, extended=put is Put.REPLACED)
    )


async def on_recent_runs(
    ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    services: Services = context["services"]
    clock: Callable[[], datetime] = context.get("clock") or _utcnow
    incident = await _incident(body, services)
    if incident is None:
        await _answer(respond, services, "over", render_incident_over())
        return
    outcome, message = await answer_query(
        JobsQuery(connector_id=incident.connector), services, clock()
    )
    await _answer(respond, services, f"runs_{outcome}", message)


def register(app: AsyncApp) -> None:
    app.action(ACK, middleware=[ack_before_listener])(on_acknowledge)
    app.action(MUTE, middleware=[ack_before_listener])(on_mute)
    app.action(RUNS, middleware=[ack_before_listener])(on_recent_runs)
