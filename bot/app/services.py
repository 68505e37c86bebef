"""What listeners and workers reach through Bolt's `context["services"]`."""

from __future__ import annotations

from dataclasses import dataclass

from bot.app.config import Settings, TimbalSettings
from bot.app.metrics import Metrics
from bot.domain.states import StateClassifier
from bot.domain.subscriptions import Subscription
from bot.timbal import JobsSource
from storage.incidents import IncidentStore
from storage.status import StatusReader
from storage.subscriptions import SubscriptionStore


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    timbal: JobsSource
    classifier: StateClassifier
    metrics: Metrics
    subscriptions: SubscriptionStore
    incidents: IncidentStore
    status: StatusReader

    @property
    def builtin(self) -> Subscription | None:
        """ALERT_CHANNEL's subscription, which is configured rather than set from Slack."""
        return self.settings.builtin_subscription


def classifier_from(settings: TimbalSettings) -> StateClassifier:
    return StateClassifier(
        failure=settings.failure_states,
        cancelled=settings.cancelled_states,
        success=settings.success_states,
    )
