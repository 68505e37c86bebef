"""What listeners and workers reach through Bolt's `context["services"]`."""

from __future__ import annotations

from dataclasses import dataclass

from bot.app.config import Settings, TimbalSettings
from bot.app.metrics import Metrics
from bot.domain.states import StateClassifier
from bot.timbal import JobsSource


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    timbal: JobsSource
    classifier: StateClassifier
    metrics: Metrics


def classifier_from(settings: TimbalSettings) -> StateClassifier:
    return StateClassifier(
        failure=settings.failure_states,
        cancelled=settings.cancelled_states,
        success=settings.success_states,
    )
