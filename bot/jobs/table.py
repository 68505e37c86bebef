"""The `timbal-jobs-bot jobs` terminal table (pure: the clock is passed in)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.blockkit import elapsed_ms, fmt_count, fmt_duration_ms, fmt_rate
from bot.domain.models import Job
from bot.domain.states import StateClass, StateClassifier

COLUMNS = ("STATE", "CONNECTOR", "TABLE", "MODE", "ROWS", "ROWS/S", "DURATION", "CREATED (UTC)")
MAX_CELL = 40
# Said after a state only when it adds something: "timed_out (failure)", never "failed (failed)".
CLASS_WORDS = {
    StateClass.FAILED: "failure",
    StateClass.SUCCEEDED: "success",
    StateClass.CANCELLED: "cancelled",
}


def state_cell(state: str, cls: StateClass) -> str:
    """The STATE column: the API's state, with its class where the name does not say it."""
    if cls is StateClass.OTHER:
        return f"finished (state: {state})"
    word = CLASS_WORDS.get(cls)
    if word is None or state.strip().lower() in (cls.value, word):
        return state
    return f"{state} ({word})"


def _cell(text: str) -> str:
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return clean if len(clean) <= MAX_CELL else clean[: MAX_CELL - 1] + "…"


def format_jobs_table(
    jobs: Sequence[Job], *, now: datetime, classifier: StateClassifier, limit: int
) -> str:
    shown = sorted(jobs, key=lambda j: j.created_at, reverse=True)[:limit]
    rows = [
        (
            state_cell(job.state, classifier.classify(job)),
            job.connector_id,
            job.dest_table,
            job.mode,
            fmt_count(job.rows_emitted),
            fmt_rate(job.rows_per_sec),
            fmt_duration_ms(elapsed_ms(job, now, terminal=classifier.classify(job).terminal)),
            job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for job in shown
    ]
    cells = [tuple(_cell(c) for c in row) for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(COLUMNS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    for job in shown:
        message = (job.message or "").strip()  # a blank message has no first line to show
        if message and classifier.classify(job).value == "failed":
            lines.append(f"  {_cell(job.id)}: {_cell(message.splitlines()[0])}")
    lines.append(f"showing {len(shown)} of {len(jobs)}")
    return "\n".join(lines)
