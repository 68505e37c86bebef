"""Small pure helpers every message uses: mrkdwn escaping, truncation, figures, date tokens.

Block Kit limits are constants here so every renderer checks the same numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.states import StateClass

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

STATE_EMOJI: dict[StateClass, str] = {
    StateClass.ACTIVE: ":arrows_counterclockwise:",
    StateClass.SUCCEEDED: ":white_check_mark:",
    StateClass.FAILED: ":x:",
    StateClass.CANCELLED: ":no_entry_sign:",
    StateClass.OTHER: ":grey_question:",
}
QUEUED_EMOJI = ":hourglass_flowing_sand:"
QUEUED_STATES = frozenset({"queued", "pending", "scheduled", "waiting", "created"})


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
    fallback = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
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
