"""Small pure helpers every message uses: mrkdwn escaping, truncation, figures, date tokens.

Block Kit limits are constants here so every renderer checks the same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.domain.models import Job
from bot.domain.states import StateClass

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_FALLBACK_TEXT = (
    3000  # the top-level `text`; Slack allows 40,000 but notifications show far less
)

ELLIPSIS = "…"
MARKER = "\n…\n"  # where clip(middle=True) cut

STATE_EMOJI: dict[StateClass, str] = {
    StateClass.ACTIVE: ":arrows_counterclockwise:",
    StateClass.SUCCEEDED: ":white_check_mark:",
    StateClass.FAILED: ":x:",
    StateClass.CANCELLED: ":no_entry_sign:",
    StateClass.OTHER: ":grey_question:",
}
QUEUED_EMOJI = ":hourglass_flowing_sand:"
QUEUED_STATES = frozenset({"queued", "pending", "scheduled", "waiting", "created"})


def mrkdwn(text: str) -> MarkdownTextObject:
    """A mrkdwn text object. verbatim: Slack must not auto-link or auto-mention anything in it,
    so only markup we wrote (date tokens, an on-call mention) is live. Never empty."""
    return MarkdownTextObject(text=text or "—", verbatim=True)


def escape(text: str) -> str:
    """Escape API text for mrkdwn: `&`, `<`, `>` (so it can neither ping nor forge a link).

    Control characters other than newline and tab are dropped; they have no business in Slack.
    """
    cleaned = "".join(ch for ch in text if ch in "\n\t" or ch.isprintable())
    return cleaned.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: str) -> str:
    """Inline code span for an escaped value; backticks inside would end the span."""
    return "`" + escape(text).replace("`", "'") + "`"


def truncate(text: str, limit: int) -> str:
    """Cut to at most `limit` characters, marking the cut; never splits an `&amp;` entity."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - len(ELLIPSIS), 0)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + ELLIPSIS


def truncate_middle(text: str, limit: int, marker: str = "\n…\n") -> str:
    """Keep the head and the tail (where error messages put the cause), cut the middle."""
    if len(text) <= limit:
        return text
    keep = max(limit - len(marker), 2)
    head = keep * 2 // 5
    tail = keep - head
    return text[:head] + marker + text[len(text) - tail :]


def date_token(when: datetime, fmt: str = "{date_short_pretty} {time}") -> str:
    """A Slack date token: each reader sees the time in their own zone; UTC is the fallback."""
    with contextlib.suppress(OverflowError):  # a timestamp at the edge of datetime's range
        when = when.astimezone(UTC)
    fallback = when.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{fmt}|{fallback}>"


def fmt_duration_ms(ms: int | None) -> str:
    if ms is None or ms < 0:
        return "—"
    seconds = ms // 1000
    if seconds < 60:
        return f"{ms / 1000:.1f}s" if ms < 10_000 else f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_rate(rows_per_sec: float | None) -> str:
    if rows_per_sec is None or rows_per_sec != rows_per_sec:  # None or NaN
        return "—"
    if rows_per_sec >= 100:
        return f"{rows_per_sec:,.0f}/s"
    return f"{rows_per_sec:,.1f}/s"


def state_emoji(state_class: StateClass, state: str) -> str:
    if state_class is StateClass.ACTIVE and state.strip().lower() in QUEUED_STATES:
        return QUEUED_EMOJI
    return STATE_EMOJI[state_class]


def elapsed_ms(job: Job, now: datetime | None, *, terminal: bool) -> int | None:
    """The run's duration: the API's, else to `finished_at`, else (a live run) to `now`."""
    if job.duration_ms is not None:
        return job.duration_ms
    start = job.started_at or job.created_at
    if not terminal and now is not None:
        return int((now - start).total_seconds() * 1000)  # negative when clocks disagree: "—"
    if job.finished_at is not None:
        return int((job.finished_at - start).total_seconds() * 1000)
    return None


def _outside_entity(escaped: str, i: int, *, forward: bool) -> int:
    """Move cut point `i` out of an `&amp;`/`&lt;`/`&gt;` entity it falls inside."""
    start = escaped.rfind("&", max(0, i - 4), i)
    if start != -1 and escaped.find(";", start) >= i:
        return escaped.find(";", start) + 1 if forward else start
    return i


def clip(text: str, limit: int, *, middle: bool = False) -> str:
    """Escape `text` for mrkdwn and cut it to at most `limit` characters *after* escaping.

    Cuts never split an entity; `middle=True` keeps the head and the tail (where error
    messages put the cause) and marks the cut.
    """
    out = escape(text)
    if len(out) <= limit:
        return out
    if limit <= 0:
        return ""
    if not middle or limit < len(MARKER) + 4:
        return truncate(out, limit)
    keep = limit - len(MARKER)
    head = keep * 2 // 5
    tail = len(out) - (keep - head)
    return (
        out[: _outside_entity(out, head, forward=False)]
        + MARKER
        + out[_outside_entity(out, tail, forward=True) :]
    )


def inline_code(text: str, limit: int) -> str:
    """An escaped, clipped inline code span; never empty, never broken by a backtick."""
    flat = " ".join(text.replace("`", "'").split()) or "—"
    return "`" + clip(flat, limit - 2) + "`"


def fit_blocks(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    """Final guard: cut anything over Block Kit's limits, then let slack_sdk validate."""
    kept = list(blocks)
    if len(kept) > MAX_BLOCKS:
        kept = [*kept[: MAX_BLOCKS - 1], kept[-1]]  # the last block is the footer
    for block in kept:
        if isinstance(block, HeaderBlock) and block.text is not None:
            block.text.text = truncate(block.text.text or "—", MAX_HEADER_TEXT)
        elif isinstance(block, SectionBlock):
            if block.text is not None:
                block.text.text = truncate(block.text.text or "—", MAX_SECTION_TEXT)
            block.fields = (block.fields or [])[:MAX_FIELDS]
            for field in block.fields:
                field.text = truncate(field.text or "—", MAX_FIELD_TEXT)
        elif isinstance(block, ContextBlock):
            block.elements = block.elements[:MAX_CONTEXT_ELEMENTS]
            for element in block.elements:
                if isinstance(element, MarkdownTextObject | PlainTextObject):
                    element.text = truncate(element.text or "—", MAX_SECTION_TEXT)
    return [block.to_dict() for block in kept]
