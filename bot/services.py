"""What listeners and workers reach through Bolt's `context["services"]`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.config import Settings
from bot.metrics import Metrics
from bot.models import Job
from bot.states import StateClassifier


class JobsSource(Protocol):
    async def list_jobs(self, connector_id: str | None = None) -> list[Job]: ...


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    timbal: JobsSource
    classifier: StateClassifier
    metrics: Metrics


def classifier_from(settings: Settings) -> StateClassifier:
    return StateClassifier(
        failure=settings.failure_states,
        cancelled=settings.cancelled_states,
        success=settings.success_states,
    )
