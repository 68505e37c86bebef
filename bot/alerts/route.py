"""Which channels an event goes to, each with its mention. Pure.

The notifier only ever sees a `Router`: a callable from an event to its routes (one per
channel, in a stable order, no duplicates).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from bot.domain.delivery import Route
from bot.domain.events import EventKind, JobEvent

# Events that page on-call: a mention is rendered on these only.
MENTION_KINDS = frozenset({EventKind.FAILED})


class Router(Protocol):
    """event -> the routes it should be delivered on."""

    def __call__(self, event: JobEvent, /) -> list[Route]: ...


def distinct(routes: Iterable[Route]) -> list[Route]:
    """Trimmed, non-empty channels, first occurrence kept: a channel never gets one event twice."""
    seen: dict[str, Route] = {}
    for r in routes:
        channel = r.channel.strip()
        if channel and channel not in seen:
            seen[channel] = Route(channel=channel, mention=r.mention)
    return list(seen.values())


def route(event: JobEvent, *, alert_channel: str | None, mention: str | None = None) -> list[Route]:
    """Every event to `alert_channel` when it is set (nowhere otherwise); failures carry
    `mention` (Slack markup such as `<!subteam^S123>`)."""
    if not alert_channel:
        return []
    wanted = mention if event.kind in MENTION_KINDS else None
    return distinct([Route(channel=alert_channel, mention=wanted)])


def single_channel_router(alert_channel: str | None, mention: str | None = None) -> Router:
    """A `Router` that sends everything to `alert_channel` (see `route`)."""

    def router(event: JobEvent, /) -> list[Route]:
        return route(event, alert_channel=alert_channel, mention=mention)

    return router
