"""Which channels an alert goes to. Pure.

Today every event goes to the one configured `ALERT_CHANNEL` (or nowhere). This module is the
single plug point the subscription feature replaces: the notifier only ever sees a `Router`,
a callable from an event to channel ids, so a subscription-backed router can take its place
without the notifier changing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from bot.domain.events import JobEvent


class Router(Protocol):
    """event -> the channels it should be posted to (in a stable order, no duplicates)."""

    def __call__(self, event: JobEvent, /) -> list[str]: ...


def distinct_channels(channels: Iterable[str]) -> list[str]:
    """Trimmed, non-empty, first occurrence kept: a channel never gets one event twice."""
    seen: dict[str, None] = {}
    for channel in channels:
        name = channel.strip()
        if name:
            seen.setdefault(name, None)
    return list(seen)


def route(event: JobEvent, *, alert_channel: str | None) -> list[str]:
    """Every event to `alert_channel` when it is set; nowhere otherwise."""
    return distinct_channels([alert_channel] if alert_channel else [])


def single_channel_router(alert_channel: str | None) -> Router:
    """A `Router` that sends everything to `alert_channel` (see `route`)."""

    def router(event: JobEvent, /) -> list[str]:
        return route(event, alert_channel=alert_channel)

    return router
