"""`/jobs status` (the bot's own health, for everyone) and `/jobs settings [threads on|off]`
(this channel's settings; changes are for `SUBSCRIPTION_ADMINS` when that is set).

Called by `handlers.commands.subscriptions.answer_subcommand`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.app.services import Services
from bot.jobs.listing import RenderedMessage
from bot.jobs.status_view import (
    StatusReport,
    Waiting,
    render_channel_settings,
    render_status,
)
from storage.status import StatusFigures


def _when(raw: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(raw)) if raw else None
    except ValueError:
        return None


def report(figures: StatusFigures, *, now: datetime, org_id: str) -> StatusReport:
    delivery = figures.delivery or {}
    waiting = [
        Waiting(
            channel=str(c.get("channel") or ""),
            actions=int(c.get("actions") or 0),
            reason=str(c.get("reason") or ""),
        )
        for c in delivery.get("channels") or []
        if isinstance(c, dict)
    ]
    return StatusReport(
        now=now,
        org_id=org_id,
        last_poll=figures.last_poll,
        jobs_tracked=figures.jobs_tracked,
        backlog=figures.backlog,
        waiting=waiting,
        status_at=_when(delivery.get("at")),
        dead_letters=figures.dead_letters,
        workspace_paused=figures.workspace_paused,
        poller=figures.poller,
        notifier=figures.notifier,
        replicas=figures.replicas,
        incidents=figures.incidents,
        raised=[s.value for s in figures.raised],
    )


async def answer_status(services: Services, now: datetime) -> tuple[str, RenderedMessage]:
    figures = await services.status.read()
    org_id = services.settings.timbal_org_id
    return "ok", render_status(report(figures, now=now, org_id=org_id))


async def show_settings(services: Services, channel: str) -> tuple[str, RenderedMessage]:
    table = await services.incidents.table()
    return "ok", render_channel_settings(table.threads(channel))


async def set_threads(services: Services, channel: str, on: bool) -> tuple[str, RenderedMessage]:
    await services.incidents.set_threads(channel, on)
    return "ok", render_channel_settings(on, changed=True)
