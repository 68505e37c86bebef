"""Alert messages: one job's transition, a digest of many, and the plain-text fallback.

Pure: the clock comes in as `now`. Every API string is escaped and clipped *after* escaping
(`bot.jobs.listing.clip`), code spans and blocks never contain a backtick (it is replaced,
so nothing can break out), and `fit_blocks` is the last guard before slack_sdk's validation,
so every message is within Block Kit's limits whatever the API sent.

A failure's error text is previewed in the alert by its first and last lines
(`PREVIEW_HEAD`, `PREVIEW_TAIL`; the cause is usually at one end), so a stack trace does not
fill the channel; when the preview had to leave anything out, `thread_chunks` carries the whole
text (up to `MAX_THREAD_CHUNKS` code blocks), once, for the notifier to post as thread replies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    HeaderBlock,
    PlainTextObject,
    SectionBlock,
)

from bot.blockkit import (
    MAX_BLOCKS,
    MAX_FALLBACK_TEXT,
    MAX_HEADER_TEXT,
    MAX_SECTION_TEXT,
    clip,
    date_token,
    elapsed_ms,
    escape,
    fit_blocks,
    fmt_count,
    fmt_duration_ms,
    fmt_rate,
    inline_code,
    mrkdwn,
    truncate,
)
from bot.domain.events import EventKind, JobEvent
from bot.domain.models import Job

MAX_MESSAGE_TEXT = 40_000  # Slack's limit for a message's top-level `text`
ID_CHARS = 80
TABLE_CHARS = 120
MODE_CHARS = 40
NUMBER_CHARS = 40  # a hostile API can send a 300-digit integer
FIRST_LINE_CHARS = 300
ERROR_LABEL = "*Error*\n"
FENCE = "```"
CHUNK_CHARS = MAX_SECTION_TEXT - 2 * len(FENCE)
MAX_THREAD_CHUNKS = 10
PREVIEW_HEAD = 3  # first lines of a long error shown in the alert
PREVIEW_TAIL = 2  # and last lines
PREVIEW_LINE_CHARS = 200  # each, after escaping
PREVIEW_CHARS = 1200  # the whole preview, after escaping
DIGEST_LINE_CHARS = 120
MAX_DIGEST_LISTED = 100

EMOJI: dict[EventKind, str] = {
    EventKind.FAILED: ":x:",
    EventKind.SUCCEEDED: ":white_check_mark:",
    EventKind.CANCELLED: ":no_entry_sign:",
    EventKind.FINISHED: ":grey_question:",
    EventKind.STARTED: ":arrows_counterclockwise:",
    EventKind.STALLED: ":hourglass:",
    EventKind.LONG_RUNNING: ":turtle:",
    EventKind.PROGRESSING: ":arrow_forward:",
}
WARNING_EMOJI = ":warning:"
KIND_ORDER = (
    EventKind.FAILED,
    EventKind.STALLED,
    EventKind.LONG_RUNNING,
    EventKind.FINISHED,
    EventKind.CANCELLED,
    EventKind.SUCCEEDED,
    EventKind.PROGRESSING,
    EventKind.STARTED,
)
LABELS = {
    EventKind.LONG_RUNNING: "running long",
    EventKind.PROGRESSING: "progressing again",
}


@dataclass(frozen=True)
class AlertMessage:
    """What the notifier posts: fallback `text`, `blocks`, and thread replies (code blocks)."""

    text: str
    blocks: list[dict[str, Any]]
    thread_chunks: list[str] = field(default_factory=list)


# --- small pieces -------------------------------------------------------------------------


def _date(when: datetime | None) -> str:
    return "—" if when is None else date_token(when)


def _flat(text: str | None) -> str:
    return " ".join((text or "").split())


def _first_line(message: str | None) -> str:
    """The first non-blank line, flattened, NOT escaped (callers clip or code it)."""
    for line in (message or "").splitlines():
        if line.strip():
            return _flat(line).replace("`", "'")
    return ""


def _number(text: str) -> str:
    return truncate(text, NUMBER_CHARS)


def _duration(job: Job) -> str:
    took = elapsed_ms(job, None, terminal=True)
    return "—" if took is None else _number(fmt_duration_ms(took))


def kind_label(event: JobEvent) -> str:
    """failed / succeeded / cancelled / started / stalled / running long / progressing again,
    or "finished (state: X)" (escaped)."""
    if event.kind is EventKind.FINISHED:
        return f"finished (state: {clip(_flat(event.job.state) or '—', MODE_CHARS)})"
    if event.kind is EventKind.SUCCEEDED and event.job.rows_emitted == 0:
        return "succeeded with 0 rows"
    return LABELS.get(event.kind, event.kind.value)


def _route(job: Job, *, code: bool) -> str:
    if code:
        conn, table = (
            inline_code(job.connector_id, ID_CHARS),
            inline_code(job.dest_table, TABLE_CHARS),
        )
        return f"{conn} → {table}"
    conn = clip(_flat(job.connector_id) or "—", ID_CHARS)
    return f"{conn} → {clip(_flat(job.dest_table) or '—', TABLE_CHARS)}"


def _ids_context(event: JobEvent, when: str) -> ContextBlock:
    job = event.job
    sync = f"sync {inline_code(job.sync_id, ID_CHARS)}" if job.sync_id else "manual run"
    return ContextBlock(elements=[mrkdwn(f"job {inline_code(job.id, ID_CHARS)} · {sync} · {when}")])


def _code_body(message: str) -> str:
    """The error text as it goes inside a code block: no backtick can close the block."""
    return message.strip().replace("`", "'")


def split_chunks(escaped: str, size: int = CHUNK_CHARS) -> list[str]:
    """Cut escaped text into pieces of at most `size`, at a newline when one is near,
    never inside an `&amp;`-style entity."""
    chunks: list[str] = []
    rest = escaped
    while len(rest) > size:
        cut = rest.rfind("\n", size * 4 // 5, size)
        if cut == -1:
            cut = size
            amp = rest.rfind("&", max(0, cut - 5), cut)
            if amp != -1 and rest.find(";", amp) >= cut:
                cut = amp
        chunks.append(rest[:cut])
        rest = rest[cut:].lstrip("\n")
    if rest:
        chunks.append(rest)
    return chunks


def error_preview(raw: str) -> tuple[str, bool]:
    """(escaped preview, whether anything was left out): a short error whole; a long one by
    its first and last lines, with how many lines are left out between them."""
    lines = raw.splitlines() or [raw]
    whole = escape(raw)
    if len(lines) <= PREVIEW_HEAD + PREVIEW_TAIL and len(whole) <= PREVIEW_CHARS:
        return whole, False
    if len(lines) <= PREVIEW_HEAD + PREVIEW_TAIL:  # a few very long lines
        return clip(raw, PREVIEW_CHARS, middle=True), True
    head = [clip(line, PREVIEW_LINE_CHARS) for line in lines[:PREVIEW_HEAD]]
    tail = [clip(line, PREVIEW_LINE_CHARS) for line in lines[-PREVIEW_TAIL:]]
    hidden = len(lines) - PREVIEW_HEAD - PREVIEW_TAIL
    marker = f"… {hidden:,} more line{'s' if hidden != 1 else ''} …"
    return "\n".join([*head, marker, *tail]), True


def _thread_chunks(message: str) -> list[str]:
    # Every chunk but the last holds at least 4/5 of CHUNK_CHARS, so this fits the cap.
    body = clip(_code_body(message), MAX_THREAD_CHUNKS * (CHUNK_CHARS * 4 // 5) - 1, middle=True)
    return [f"{FENCE}{chunk}{FENCE}" for chunk in split_chunks(body)]


def _message(text: str, blocks: Sequence[Block], chunks: list[str] | None = None) -> AlertMessage:
    return AlertMessage(
        text=truncate(text, MAX_FALLBACK_TEXT),
        blocks=fit_blocks(blocks),
        thread_chunks=chunks or [],
    )


# --- one event ----------------------------------------------------------------------------
def render_failure_alert(event: JobEvent, *, now: datetime) -> AlertMessage:
    """Header, the job's figures as fields, the error in a code block, ids in a context."""
    job = event.job
    emoji = EMOJI[EventKind.FAILED]
    room = MAX_HEADER_TEXT - len(emoji) - len(" failed") - 1
    header = f"{emoji} {clip(_flat(job.connector_id) or '—', room)} failed"
    state = clip(_flat(job.state) or "—", MODE_CHARS)
    fields = [
        f"*Connector*\n{inline_code(job.connector_id, ID_CHARS)}",
        f"*Destination table*\n{inline_code(job.dest_table, TABLE_CHARS)}",
        f"*State*\n{state}",
        f"*Mode*\n{clip(_flat(job.mode) or '—', MODE_CHARS)}",
        f"*Rows emitted*\n{_number(fmt_count(job.rows_emitted))}",
        f"*Rows/s*\n{_number(fmt_rate(job.rows_per_sec))}",
        f"*Duration*\n{_duration(job)}",
        f"*Started*\n{_date(job.started_at)}",
        f"*Finished*\n{_date(job.finished_at)}",
    ]
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=header, emoji=True)),
        SectionBlock(fields=[mrkdwn(f) for f in fields]),
    ]
    chunks: list[str] = []
    message = job.message or ""
    if message.strip():
        body, cut = error_preview(_code_body(message))
        blocks.append(SectionBlock(text=mrkdwn(f"{ERROR_LABEL}{FENCE}{body}{FENCE}")))
        if cut:
            chunks = _thread_chunks(message)
            parts = f"{len(chunks)} part{'s' if len(chunks) != 1 else ''}"
            note = f"The full error ({parts}) is in the thread."
            blocks.append(ContextBlock(elements=[mrkdwn(f":thread: {note}")]))
    else:
        blocks.append(SectionBlock(text=mrkdwn("_The job reported no error message._")))
    blocks.append(_ids_context(event, f"detected {_date(event.detected_at)}"))
    first = clip(_first_line(message), FIRST_LINE_CHARS) or "no error message"
    return _message(f"{emoji} {_route(job, code=False)} failed: {first}", blocks, chunks)


def _emoji(event: JobEvent) -> str:
    """The event's emoji; a success that emitted no rows is a warning, not a plain success."""
    if event.kind is EventKind.SUCCEEDED and event.job.rows_emitted == 0:
        return WARNING_EMOJI
    return EMOJI[event.kind]


def _compact(event: JobEvent, figures: list[str], when: str) -> AlertMessage:
    job = event.job
    emoji = _emoji(event)
    label = kind_label(event)
    line = f"{emoji} *{label}* · {_route(job, code=True)}"
    if figures:
        line += "\n" + " · ".join(figures)
    # A success's message is noise; a cancellation's or an unknown state's may say why.
    first = _first_line(job.message) if event.kind is not EventKind.SUCCEEDED else ""
    if first:
        line += "\n" + inline_code(first, FIRST_LINE_CHARS + 2)
    blocks: list[Block] = [SectionBlock(text=mrkdwn(line)), _ids_context(event, when)]
    text = f"{emoji} {_route(job, code=False)} {label}"
    return _message(text + (f": {clip(first, FIRST_LINE_CHARS)}" if first else ""), blocks)


def _figures(job: Job) -> list[str]:
    figures = [
        clip(_flat(job.mode) or "—", MODE_CHARS),
        f"{_number(fmt_count(job.rows_emitted))} rows",
    ]
    if job.rows_per_sec is not None:
        figures.append(_number(fmt_rate(job.rows_per_sec)))
    figures.append(_duration(job))
    return figures


def render_success_alert(event: JobEvent, *, now: datetime) -> AlertMessage:
    """A success; one that emitted no rows is a warning (the sync may have read nothing)."""
    figures = _figures(event.job)
    if event.job.rows_emitted == 0:
        figures.append("no rows: check the source")
    return _compact(event, figures, f"finished {_date(event.job.finished_at)}")


def render_cancelled_alert(event: JobEvent, *, now: datetime) -> AlertMessage:
    return _compact(event, _figures(event.job), f"cancelled {_date(event.job.finished_at)}")


def render_finished_alert(event: JobEvent, *, now: datetime) -> AlertMessage:
    """A terminal state none of the configured sets knows: "finished (state: X)"."""
    return _compact(event, _figures(event.job), f"finished {_date(event.job.finished_at)}")


def render_started_alert(event: JobEvent, *, now: datetime) -> AlertMessage:
    job = event.job
    started = job.started_at or job.created_at
    running = _number(fmt_duration_ms(int((now - started).total_seconds() * 1000)))
    figures = [clip(_flat(job.mode) or "—", MODE_CHARS), f"running for {running}"]
    return _compact(event, figures, f"started {_date(job.started_at)}")


def _running_for(event: JobEvent, now: datetime) -> str:
    job = event.job
    started = job.started_at or job.created_at
    return _number(fmt_duration_ms(max(int((now - started).total_seconds() * 1000), 0)))


def render_hung_alert(event: JobEvent, *, now: datetime) -> AlertMessage:
    """A job that is still active but stalled (no progress since `since`) or running long:
    header, the job's figures, when it last moved, ids."""
    job = event.job
    emoji = EMOJI[event.kind]
    said = "stalled" if event.kind is EventKind.STALLED else "is running long"
    room = MAX_HEADER_TEXT - len(emoji) - len(said) - 2
    header = f"{emoji} {clip(_flat(job.connector_id) or '—', room)} {said}"
    since = event.since or job.updated_at
    still = _number(fmt_duration_ms(max(int((now - since).total_seconds() * 1000), 0)))
    fields = [
        f"*Connector*\n{inline_code(job.connector_id, ID_CHARS)}",
        f"*Destination table*\n{inline_code(job.dest_table, TABLE_CHARS)}",
        f"*State*\n{clip(_flat(job.state) or '—', MODE_CHARS)}",
        f"*Rows so far*\n{_number(fmt_count(job.rows_emitted))}",
        f"*Running for*\n{_running_for(event, now)}",
        f"*Started*\n{_date(job.started_at or job.created_at)}",
    ]
    if event.kind is EventKind.STALLED:
        fields.append(f"*No progress for*\n{still} (since {_date(since)})")
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=header, emoji=True)),
        SectionBlock(fields=[mrkdwn(f) for f in fields]),
        _ids_context(event, f"detected {_date(event.detected_at)}"),
    ]
    text = f"{emoji} {_route(job, code=False)} {said}"
    if event.kind is EventKind.STALLED:
        text += f": no progress for {still}"
    else:
        text += f": running for {_running_for(event, now)}"
    return _message(text, blocks)


def render_progressing_alert(event: JobEvent, *, now: datetime) -> AlertMessage:
    figures = [f"{_number(fmt_count(event.job.rows_emitted))} rows so far"]
    figures.append(f"running for {_running_for(event, now)}")
    return _compact(event, figures, f"moving again {_date(event.job.updated_at)}")


RENDERERS = {
    EventKind.FAILED: render_failure_alert,
    EventKind.STALLED: render_hung_alert,
    EventKind.LONG_RUNNING: render_hung_alert,
    EventKind.PROGRESSING: render_progressing_alert,
    EventKind.SUCCEEDED: render_success_alert,
    EventKind.CANCELLED: render_cancelled_alert,
    EventKind.FINISHED: render_finished_alert,
    EventKind.STARTED: render_started_alert,
}


def render_alert(event: JobEvent, *, now: datetime) -> AlertMessage:
    """The message for one event, by its kind."""
    return RENDERERS[event.kind](event, now=now)


# --- many events ----------------------------------------------------------------------------
def _counts(events: Sequence[JobEvent]) -> list[tuple[EventKind, int]]:
    counts = Counter(e.kind for e in events)
    return [(kind, counts[kind]) for kind in KIND_ORDER if counts[kind]]


def _digest_line(event: JobEvent) -> str:
    job = event.job
    line = f"{_emoji(event)} {_route(job, code=True)}"
    if event.kind is EventKind.FAILED:
        first = _first_line(job.message)
        return line + (f" · {inline_code(first, DIGEST_LINE_CHARS)}" if first else "")
    return line + f" · {kind_label(event)}"


def render_digest(
    events: Sequence[JobEvent], *, now: datetime, max_listed: int = 20
) -> AlertMessage:
    """Many events for one channel in one message: counts, failures first, "…and N more"."""
    counts = _counts(events)
    summary = ", ".join(f"{n} {LABELS.get(kind, kind.value)}" for kind, n in counts) or "nothing"
    total = f"{len(events)} job alert{'s' if len(events) != 1 else ''}"
    header = truncate(f":rotating_light: {total}: {summary}", MAX_HEADER_TEXT)
    rich = " · ".join(f"{EMOJI[kind]} *{n} {LABELS.get(kind, kind.value)}*" for kind, n in counts)
    connectors = len({e.job.connector_id for e in events})
    rich += f" across {connectors} connector{'s' if connectors != 1 else ''}"
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=header, emoji=True)),
        SectionBlock(text=mrkdwn(truncate(rich, MAX_SECTION_TEXT))),
    ]
    ordered = sorted(events, key=lambda e: KIND_ORDER.index(e.kind))  # stable: stream order
    listed = ordered[: max(0, min(max_listed, MAX_DIGEST_LISTED))]
    section = ""
    for line in map(_digest_line, listed):
        if section and len(section) + 1 + len(line) > MAX_SECTION_TEXT:
            blocks.append(SectionBlock(text=mrkdwn(section)))
            section = ""
        section = f"{section}\n{line}" if section else line
    if section:
        blocks.append(SectionBlock(text=mrkdwn(section)))
    footer = []
    if len(ordered) > len(listed):
        footer.append(f"…and {len(ordered) - len(listed)} more")
    if events:
        first = min(e.detected_at for e in events)
        last = max(e.detected_at for e in events)
        span = _date(first) if first == last else f"{_date(first)} – {_date(last)}"
        footer.append(f"detected {span}")
    if footer:
        blocks.append(ContextBlock(elements=[mrkdwn(" · ".join(footer))]))
    return _message(f":rotating_light: {total}: {summary}", blocks)


# --- plain text -----------------------------------------------------------------------------
def _texts(block: dict[str, Any]) -> list[str]:
    found: list[str] = []
    text = block.get("text")
    if isinstance(text, dict) and isinstance(text.get("text"), str):
        found.append(text["text"])
    for item in block.get("fields") or []:  # "*Label*\nvalue" -> "*Label*: value"
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            found.append(item["text"].replace("\n", ": ", 1))
    for item in block.get("elements") or []:
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            found.append(item["text"])
    return found


def render_plain(message: AlertMessage) -> str:
    """The whole message as one mrkdwn `text` (no blocks), for a retry after Slack answered
    `invalid_blocks` or `msg_too_long`. Block texts are escaped already; at most 40,000 chars."""
    parts = [t for block in message.blocks for t in _texts(block)]
    text = "\n".join(parts) if parts else message.text
    return truncate(text or "—", MAX_MESSAGE_TEXT)


def render_minimal(events: Sequence[JobEvent]) -> AlertMessage:
    """A text-only message built from as little as possible, for when rendering the full
    message failed (a bug): the alert still goes out instead of blocking its channel."""
    lines = [
        f"{e.kind.value}: {clip(e.job.connector_id, ID_CHARS)} → "
        f"{clip(e.job.dest_table, TABLE_CHARS)} (job {clip(e.job.id, ID_CHARS)})"
        for e in events[:MAX_DIGEST_LISTED]
    ]
    if len(events) > MAX_DIGEST_LISTED:
        lines.append(f"…and {len(events) - MAX_DIGEST_LISTED} more")
    text = "Timbal job alert(s):\n" + "\n".join(lines)
    return AlertMessage(text=truncate(text, MAX_MESSAGE_TEXT), blocks=[])


def with_mention(message: AlertMessage, mention: str) -> AlertMessage:
    """The message with the on-call `mention` (Slack markup such as `<@U123>`, ours, not API
    text) in its notification text and in a section under the header, so on-call is pinged."""
    text = truncate(f"{mention} {message.text}", MAX_MESSAGE_TEXT)
    blocks = list(message.blocks)
    if len(blocks) < MAX_BLOCKS:
        at = 1 if blocks and blocks[0].get("type") == "header" else 0
        section = SectionBlock(text=mrkdwn(f"{mention} on call, please look"))
        blocks.insert(at, section.to_dict())
    return AlertMessage(text=text, blocks=blocks, thread_chunks=message.thread_chunks)
