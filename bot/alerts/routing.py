"""The running bot's routes: the subscriptions and mutes channels set from Slack, kept in Redis,
plus `ALERT_CHANNEL`'s built-in subscription. Each notifier pass asks for a fresh `Router`;
`end_expired()` ends the mutes whose time is up (their summaries go out through the outbox).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from bot.alerts.route import Router, route
from bot.domain.delivery import Route
from bot.domain.events import JobEvent
from bot.domain.subscriptions import Subscription
from storage.subscriptions import SubscriptionStore


class SubscriptionRoutes:
    def __init__(
        self,
        store: SubscriptionStore,
        *,
        builtin: Subscription | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self.builtin = builtin
        self._clock = clock

    async def __call__(self) -> Router:
        table = await self._store.table()
        subscriptions = (
            [self.builtin, *table.subscriptions] if self.builtin else table.subscriptions
        )
        mutes, now = table.mutes, self._clock()

        def router(event: JobEvent, /) -> list[Route]:
            return route(event, subscriptions, mutes, now)

        return router

    async def end_expired(self) -> None:
        """End every mute whose `until` has passed (each exactly once, across replicas)."""
        table = await self._store.table()
        await self._store.end_expired(self._clock(), table.mutes)
