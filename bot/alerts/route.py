"""Which channels an event goes to, each with its mention, and which are muted. Pure.

`route(event, subscriptions, mutes, now)`:
- a subscription wants the event when its target matches the connector and its event set
  holds the event's kind; a success also reaches every channel whose matching subscriptions
  want failures only, marked `recovery_only`: it closes the connector's open incident there
  (the recovery replaces the success alert) and is dropped when none is open;
- a channel gets an event once, however many of its subscriptions want it; the most
  specific of those decides the mention (an exact connector id, then patterns with more
  literal characters, then `all`), and the mention is rendered on failures only;
- a channel with a mute whose target matches the connector and whose `until` is still ahead
  of `now` gets the route marked `muted` (held back and counted, not posted); a mute ending
  exactly at `now` has ended.

The notifier only ever sees a `Router` (event -> routes), built for each pass from the
subscriptions and mutes as they are then (`RouteSource`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

from bot.domain.delivery import Route
from bot.domain.events import JobEvent
from bot.domain.subscriptions import MENTION_KINDS, RECOVERY_KIND, Mute, Subscription, Target

__all__ = ["MENTION_KINDS", "RouteSource", "Router", "distinct", "route", "static"]


class Router(Protocol):
    """event -> the routes it should be delivered on."""

    def __call__(self, event: JobEvent, /) -> list[Route]: ...


RouteSource = Callable[[], Awaitable[Router]]


def static(router: Router) -> RouteSource:
    """A `RouteSource` that always gives the same router."""

    async def source() -> Router:
        return router

    return source


def distinct(routes: Iterable[Route]) -> list[Route]:
    """Trimmed, non-empty channels, first occurrence kept: a channel never gets one event twice."""
    seen: dict[str, Route] = {}
    for r in routes:
        channel = r.channel.strip()
        if channel and channel not in seen:
            seen[channel] = r.model_copy(update={"channel": channel})
    return list(seen.values())


def _most_specific(candidates: list[tuple[Target, int]]) -> int | None:
    """The index of the most specific target (on a tie, the one listed first)."""
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c[0].specificity, -c[1]))[1]


def route(
    event: JobEvent,
    subscriptions: Sequence[Subscription],
    mutes: Sequence[Mute],
    now: datetime,
) -> list[Route]:
    """The routes of `event`; see the module docstring."""
    connector, kind = event.job.connector_id, event.kind
    wanting: dict[str, list[int]] = {}
    recovering: dict[str, list[int]] = {}  # want only the recovery of a success
    for index, sub in enumerate(subscriptions):
        if not sub.target.matches(connector):
            continue
        if sub.events.wants(kind):
            wanting.setdefault(sub.channel, []).append(index)
        elif kind is RECOVERY_KIND:
            recovering.setdefault(sub.channel, []).append(index)
    routes: list[Route] = []
    only = {ch: ix for ch, ix in recovering.items() if ch not in wanting}
    for channel, indexes in [*wanting.items(), *only.items()]:
        best = _most_specific([(subscriptions[i].target, i) for i in indexes])
        assert best is not None  # `indexes` is never empty
        chosen = subscriptions[best]
        active = [
            (m.target, i)
            for i, m in enumerate(mutes)
            if m.channel == channel and m.until > now and m.target.matches(connector)
        ]
        muted = _most_specific(active)
        mention = chosen.mention.markup if chosen.mention and kind in MENTION_KINDS else None
        routes.append(
            Route(
                channel=channel,
                mention=mention,
                muted=mutes[muted].target.value if muted is not None else "",
                recovery_only=channel in only,
            )
        )
    return distinct(routes)


def single_channel_router(alert_channel: str | None, mention: str | None = None) -> Router:
    """Everything to one channel, failures with `mention` (Slack markup): for tests and for
    a bot with no subscription store."""

    def router(event: JobEvent, /) -> list[Route]:
        if not alert_channel or not alert_channel.strip():
            return []
        wanted = mention if event.kind in MENTION_KINDS else None
        return distinct([Route(channel=alert_channel, mention=wanted)])

    return router
