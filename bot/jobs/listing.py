"""The `/jobs` replies: the listing, the usage text and one-sentence errors.

Pure. Every API string is escaped and clipped to a budget *after* escaping, so each block is
within Block Kit's limits by construction; `fit_blocks` is the final guard (block count,
section/field/header/context lengths) before slack_sdk's own validation in `to_dict()`.

The summary counts the whole listing the API returned for the scope (the connector, or the
org); the state filter and the limit only choose which jobs are listed, and the header and the
footer say which filter: a state (`state failed`) or a whole class, named as one with the
states of it the listing holds (`failures: failed, error, timed_out`). A state that is neither
a class nor in the listing is answered with the states seen and the classes; a connector
without jobs with the connector ids closest to it (`suggestions`, from the org's listing).
Items of Timbal's answer that could not be read (`skipped`) are always mentioned, and so is
when the listing was read (`as_of`: answers are shared for a few seconds, JOBS_CACHE_SECONDS).
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    DividerBlock,
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
    state_emoji,
    truncate,
)
from bot.domain.models import Job
from bot.domain.states import StateClass, StateClassifier
from bot.jobs.query import MAX_LIMIT, STATE_CLASSES, USAGE, JobsQuery

CLASS_ORDER = (
    StateClass.FAILED,
    StateClass.ACTIVE,
    StateClass.SUCCEEDED,
    StateClass.CANCELLED,
    StateClass.OTHER,
)
# Budgets, in characters after escaping. A job's section stays far below 3,000 characters
# and a whole listing of 25 jobs stays readable.
STATE_CHARS = 40
ID_CHARS = 80
TABLE_CHARS = 120
MODE_CHARS = 40
NUMBER_CHARS = 30
MESSAGE_CHARS = 800
SUMMARY_STATES = 10  # distinct states named in the summary; the rest are counted
CLASS_NAMES: dict[StateClass, str] = {
    StateClass.FAILED: "failures",
    StateClass.ACTIVE: "active",
    StateClass.SUCCEEDED: "successes",
    StateClass.CANCELLED: "cancellations",
    StateClass.OTHER: "other finished states",
}
STATES_NAMED = 8  # states named in a filter label or an unknown-state answer
SUGGESTIONS = 3
MAX_JOBS_SHOWN = min(MAX_LIMIT, MAX_BLOCKS - 5)  # header, summary, divider, footer, spare


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """A message ready for `respond()` / `chat.postMessage`: fallback `text` and `blocks`."""

    text: str
    blocks: list[dict[str, Any]]


def _plain(text: str, limit: int) -> PlainTextObject:
    # Slack asks for `&`, `<`, `>` escaped in every text, plain_text included.
    return PlainTextObject(text=clip(" ".join(text.split()) or "—", limit), emoji=True)


def _duration(job: Job, cls: StateClass, now: datetime) -> str:
    took = fmt_duration_ms(elapsed_ms(job, now, terminal=cls.terminal))
    if cls.terminal or took == "—":
        return took
    if job.duration_ms is None and job.started_at is None:
        return f"queued {took}"
    return f"{took} so far"


def state_label(cls: StateClass, state: str) -> str:
    """The state as the API names it (escaped); an unknown terminal state says so."""
    name = clip(" ".join(state.split()) or "—", STATE_CHARS)
    return f"finished (state: {name})" if cls is StateClass.OTHER else name


def job_text(job: Job, cls: StateClass, now: datetime) -> str:
    """One job's section text (mrkdwn), at most MAX_SECTION_TEXT characters."""
    figures = [
        clip(" ".join(job.mode.split()) or "—", MODE_CHARS),
        clip(f"{fmt_count(job.rows_emitted)} rows", NUMBER_CHARS),
    ]
    if job.rows_per_sec is not None:
        figures.append(clip(fmt_rate(job.rows_per_sec), NUMBER_CHARS))
    figures.append(clip(_duration(job, cls, now), NUMBER_CHARS))
    times = (
        [f"started {date_token(job.started_at)}"]
        if job.started_at is not None
        else [f"created {date_token(job.created_at)}"]
    )
    if job.finished_at is not None:
        times.append(f"finished {date_token(job.finished_at)}")
    times.append(f"sync {inline_code(job.sync_id, ID_CHARS)}" if job.sync_id else "manual run")
    times.append(f"job {inline_code(job.id, ID_CHARS)}")
    lines = [
        f"{state_emoji(cls, job.state)} *{state_label(cls, job.state)}* · "
        f"{inline_code(job.connector_id, ID_CHARS)} → {inline_code(job.dest_table, TABLE_CHARS)}",
        " · ".join(figures),
        " · ".join(times),
    ]
    text = "\n".join(lines)
    if cls is StateClass.FAILED and job.message and job.message.strip():
        room = min(MESSAGE_CHARS, MAX_SECTION_TEXT - len(text) - 8)
        if room > 0:
            body = clip(job.message.strip().replace("`", "'"), room, middle=True)
            text += f"\n```{body}```"
    return truncate(text, MAX_SECTION_TEXT)


def state_counts(
    jobs: Sequence[Job], classifier: StateClassifier
) -> list[tuple[StateClass, str, int]]:
    """(class, state as the API names it, count), failed first, then active, succeeded, …"""
    counts = Counter((classifier.classify(job), job.state) for job in jobs)
    return sorted(
        ((cls, state, n) for (cls, state), n in counts.items()),
        key=lambda item: (CLASS_ORDER.index(item[0]), -item[2], item[1]),
    )


def _summary(jobs: Sequence[Job], classifier: StateClassifier) -> tuple[str, str]:
    """(mrkdwn with emoji and total, plain counts for the fallback text) by state."""
    counts = state_counts(jobs, classifier)
    named = counts[:SUMMARY_STATES]
    parts = [f"{n} {state_label(cls, state)}" for cls, state, n in named]
    rich = [
        f"{state_emoji(cls, state)} {p}" for (cls, state, _), p in zip(named, parts, strict=True)
    ]
    if len(counts) > SUMMARY_STATES:
        more = f"+{len(counts) - SUMMARY_STATES} more states"
        parts.append(more)
        rich.append(more)
    total = f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}"
    return f"*{total}* · " + " · ".join(rich), " · ".join(parts)


def _scope(query: JobsQuery, org_id: str) -> tuple[str, str]:
    """("for connector `x`", "connector `x`") or ("in org `o`", "org `o`")."""
    if query.connector_id is not None:
        name = f"connector {inline_code(query.connector_id, ID_CHARS)}"
        return f"for {name}", name
    name = f"org {inline_code(org_id, ID_CHARS)}"
    return f"in {name}", name


def _class_states(cls: StateClass, jobs: Sequence[Job], classifier: StateClassifier) -> list[str]:
    """The states of class `cls` that the listing holds; else those the settings name."""
    seen = sorted({j.state for j in jobs if classifier.classify(j) is cls})
    if seen:
        return seen
    configured = {
        StateClass.FAILED: classifier.failure,
        StateClass.SUCCEEDED: classifier.success,
        StateClass.CANCELLED: classifier.cancelled,
    }
    return sorted(configured.get(cls, frozenset()))


def _named(states: Iterable[str]) -> list[str]:
    names = list(states)
    shown = names[:STATES_NAMED]
    return shown + ([f"+{len(names) - STATES_NAMED} more"] if len(names) > STATES_NAMED else [])


def filter_label(
    query: JobsQuery, jobs: Sequence[Job], classifier: StateClassifier
) -> tuple[str, str] | None:
    """(plain, mrkdwn) naming the state filter: `state failed` or `failures: failed, error`."""
    if query.state is None:
        return None
    if query.state in STATE_CLASSES:
        cls = StateClass(query.state)
        states = _named(_class_states(cls, jobs, classifier))
        plain = f"{CLASS_NAMES[cls]}: {', '.join(states)}" if states else CLASS_NAMES[cls]
        rich = ", ".join(inline_code(st, STATE_CHARS) for st in states)
        return plain, (f"{CLASS_NAMES[cls]}: {rich}" if states else CLASS_NAMES[cls])
    return f"state {query.state}", f"state {inline_code(query.state, STATE_CHARS)}"


def _unknown_state(query: JobsQuery, jobs: Sequence[Job]) -> str:
    """A state that is no class and that no job has: what the listing does hold, and the classes."""
    assert query.state is not None
    seen = _named(sorted({j.state for j in jobs}))
    classes = ", ".join(f"`{c.value}` ({CLASS_NAMES[c]})" for c in CLASS_ORDER)
    states = ", ".join(inline_code(st, STATE_CHARS) for st in seen)
    return (
        f"No job here has state {inline_code(query.state, STATE_CHARS)}. "
        f"States in this listing: {states}. Or filter by a class: {classes}."
    )


def closest_connectors(wanted: str, jobs: Iterable[Job]) -> list[str]:
    """The connector ids of `jobs` closest to `wanted` (difflib's ratio), best first."""
    ids = sorted({j.connector_id for j in jobs})
    lowered = {i.lower(): i for i in ids}
    close = difflib.get_close_matches(wanted.lower(), list(lowered), n=SUGGESTIONS, cutoff=0.5)
    return [lowered[c] for c in close]


def skipped_line(skipped: int) -> str | None:
    """What the listing could not show: Timbal's items that failed the contract."""
    if skipped <= 0:
        return None
    items = "1 item" if skipped == 1 else f"{skipped:,} items"
    return f"{items} in Timbal's answer could not be read (logged)."


def as_of_text(when: datetime) -> str:
    """ "as of 14:03:07", in each reader's own time zone (a Slack date token; UTC as fallback)."""
    moment = when.astimezone(UTC)
    return f"as of <!date^{int(moment.timestamp())}^{{time_secs}}|{moment:%H:%M:%S} UTC>"


def _title(query: JobsQuery, org_id: str, label: str | None) -> PlainTextObject:
    scope = f"connector {query.connector_id}" if query.connector_id is not None else f"org {org_id}"
    return _plain(f"Jobs · {scope}" + (f" · {label}" if label else ""), MAX_HEADER_TEXT)


def _no_jobs(query: JobsQuery, scope: str, suggestions: Sequence[str]) -> str:
    text = f"No jobs {scope}."
    if query.connector_id is not None and suggestions:
        named = " or ".join(inline_code(c, ID_CHARS) for c in suggestions[:SUGGESTIONS])
        text += f" Did you mean {named}?"
    return text


def render_jobs_listing(
    jobs: Sequence[Job],
    *,
    query: JobsQuery,
    classifier: StateClassifier,
    now: datetime,
    org_id: str,
    skipped: int = 0,
    suggestions: Sequence[str] = (),
    as_of: datetime | None = None,
) -> RenderedMessage:
    """The answer to `/jobs`: summary of `jobs` by state, then the newest matching jobs.

    `skipped`: items of Timbal's answer that could not be read; `suggestions`: connector ids
    close to the one asked for, shown when it has no jobs; `as_of`: when the listing was read.
    """
    scope, where = _scope(query, org_id)
    label = filter_label(query, jobs, classifier)
    blocks: list[Block] = [HeaderBlock(text=_title(query, org_id, label[0] if label else None))]
    unread = skipped_line(skipped)
    when = as_of_text(as_of) if as_of is not None else None
    notes = [note for note in (escape(unread) if unread else None, when) if note]
    tail = [ContextBlock(elements=[mrkdwn(" · ".join(notes))])] if notes else []
    tail_text = f" {unread}" if unread else ""
    if not jobs:
        text = _no_jobs(query, scope, suggestions)
        return _message(text + tail_text, [*blocks, SectionBlock(text=mrkdwn(text)), *tail])
    matching = sorted(
        (job for job in jobs if query.wants(job, classifier)),
        key=lambda job: (job.created_at, job.id),
        reverse=True,
    )
    shown = matching[: max(1, min(query.limit, MAX_JOBS_SHOWN))]
    summary, plain_summary = _summary(jobs, classifier)
    blocks += [SectionBlock(text=mrkdwn(truncate(summary, MAX_SECTION_TEXT))), DividerBlock()]
    if not matching:
        assert label is not None  # only a state filter can leave nothing to show
        if query.state in STATE_CLASSES:
            text = f"No jobs {scope} match {label[1]}."
        else:  # a state no job has, and no class: say what there is to ask for
            text = _unknown_state(query, jobs)
        blocks.append(SectionBlock(text=mrkdwn(truncate(text, MAX_SECTION_TEXT))))
        blocks += tail
        return _message(f"{text} All jobs: {plain_summary}{tail_text}", blocks)
    blocks += [SectionBlock(text=mrkdwn(job_text(j, classifier.classify(j), now))) for j in shown]
    footer = f"Showing {len(shown)} of {len(matching)} job{'s' if len(matching) != 1 else ''}"
    if label is not None:
        footer += f" · {label[1]} ({len(jobs)} in all)"
    footer += f", newest first · {where}"
    if len(shown) < len(matching) and query.limit < MAX_LIMIT:
        footer += f" · `limit={MAX_LIMIT}` shows more"
    if unread:
        footer += f" · {escape(unread)}"
    if when:
        footer += f" · {when}"
    blocks.append(ContextBlock(elements=[mrkdwn(truncate(footer, MAX_SECTION_TEXT))]))
    total = f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}"
    return _message(f"{total} {scope}: {plain_summary}{tail_text}", blocks)


def render_usage(reason: str | None = None) -> RenderedMessage:
    """The usage text, after a one-line `reason` when the command text was not understood."""
    blocks: list[Block] = []
    text = escape("Usage: /jobs [connector] [state=<state>] [limit=<n>]")
    if reason:
        why = clip(reason, 500)
        blocks.append(SectionBlock(text=mrkdwn(f":warning: {why}")))
        text = f"{why} {text}"
    blocks.append(SectionBlock(text=mrkdwn(escape(USAGE))))
    return _message(text, blocks)


def render_error(message: str) -> RenderedMessage:
    """A one-sentence error. `message` is escaped here: callers pass plain text (backticks ok)."""
    text = clip(message, MAX_SECTION_TEXT - 20)
    return _message(text, [SectionBlock(text=mrkdwn(f":warning: {text}"))])


def _message(text: str, blocks: Sequence[Block]) -> RenderedMessage:
    return RenderedMessage(text=truncate(text, MAX_FALLBACK_TEXT), blocks=fit_blocks(blocks))
