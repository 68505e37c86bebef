"""Classify the API's free-form `state` strings into the classes the bot acts on.

The sets come from settings (FAILURE_STATES, CANCELLED_STATES, SUCCESS_STATES). A job is
terminal when `finished_at` is set or its state is in one of the sets; a terminal job whose
state is in none of them is OTHER ("finished (state: X)"). Anything else is ACTIVE and is
shown as-is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.domain.models import Job

DEFAULT_FAILURE_STATES = frozenset(
    {
        "failed",
        "failure",
        "error",
        "errored",
        "timed_out",
        "timeout",
        "aborted",
        "crashed",
        "killed",
    }
)
DEFAULT_CANCELLED_STATES = frozenset({"cancelled", "canceled"})
DEFAULT_SUCCESS_STATES = frozenset(
    {"succeeded", "success", "successful", "completed", "complete", "done", "finished"}
)


class StateClass(StrEnum):
    ACTIVE = "active"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    OTHER = "other"  # terminal, but a state we do not know

    @property
    def terminal(self) -> bool:
        return self is not StateClass.ACTIVE


@dataclass(frozen=True, slots=True)
class StateClassifier:
    failure: frozenset[str] = DEFAULT_FAILURE_STATES
    cancelled: frozenset[str] = DEFAULT_CANCELLED_STATES
    success: frozenset[str] = DEFAULT_SUCCESS_STATES

    def classify_state(self, state: str, *, finished: bool) -> StateClass:
        key = state.strip().lower()
        if key in self.failure:
            return StateClass.FAILED
        if key in self.cancelled:
            return StateClass.CANCELLED
        if key in self.success:
            return StateClass.SUCCEEDED
        return StateClass.OTHER if finished else StateClass.ACTIVE

    def classify(self, job: Job) -> StateClass:
        return self.classify_state(job.state, finished=job.finished_at is not None)
