"""An incident's card and its thread messages (pure; the clock comes in as `now`).

The card is the first failure's alert, kept up to date: its body shows the last failure, a
status line says how long it has been failing and how often, who acknowledged it, whether it
is muted here, and, once it recovered, after how long. Until then it carries the buttons:
Acknowledge (gone once acknowledged), Mute connector (1 h, 4 h, 24 h) and Recent runs.
Thread messages: a further failure (no mention), the recovery, "progressing again", and the
one escalation reminder (the only one with a mention after the first post).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    Option,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)

from bot.alerts.render import AlertMessage, render_alert, with_mention
from bot.blockkit import (
    MAX_BLOCKS,
    clip,
    date_token,
    fit_blocks,
    fmt_count,
    fmt_duration_ms,
    inline_code,
    mrkdwn,
    truncate,
)
from bot.domain.events import EventKind, JobEvent
from bot.domain.incidents import Incident

ACK = "incident_ack"
MUTE = "incident_mute"
RUNS = "incident_runs"
BLOCK_PREFIX = "incident|"  # the actions block's id: "incident|<ref>" (`Incident.ref`)
MUTE_CHOICES = ((3600, "1 hour"), (4 * 3600, "4 hours"), (24 * 3600, "24 hours"))
MESSAGE_CHARS = 300

KIND_SAID = {
    EventKind.FAILED: "failed",
    EventKind.STALLED: "stalled",
    EventKind.LONG_RUNNING: "has been running too long",
}


def _first_line(text: str | None) -> str:
    return next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")


def _took(start: datetime, end: datetime) -> str:
    return fmt_duration_ms(max(int((end - start).total_seconds() * 1000), 0))


def _times(n: int) -> str:
    return "once" if n == 1 else "twice" if n == 2 else f"{fmt_count(n)} times"


def _failures(n: int) -> str:
    return f"{fmt_count(n)} failure{'s' if n != 1 else ''}"


HUNG_ALONE = {EventKind.STALLED: "a stall", EventKind.LONG_RUNNING: "a long run"}


def _what(incident: Incident) -> str:
    """What the incident was: "3 failures", or "a stall" when that was all of it."""
    if incident.failures == 1 and incident.last.kind in HUNG_ALONE:
        return HUNG_ALONE[incident.last.kind]
    return _failures(incident.failures)


def status_line(incident: Incident) -> str:
    """ "Failed once since 14:02", "Failed 3 times since 14:02; last: <message>" (a stall or a
    long run says so)."""
    last = _first_line(incident.last.job.message)
    since = date_token(incident.opened_at)
    if incident.moving_since is not None:
        said = KIND_SAID.get(incident.last.kind, "failed")
        was = (
            f"after {_what(incident)} from {since}"
            if incident.failures == 1
            else f"{_failures(incident.failures)} since {since}, the last: {said}"
        )
        return (
            f":arrow_forward: Progressing again since {date_token(incident.moving_since)} ({was})"
        )
    if incident.last.kind is EventKind.FAILED:
        head = f"Failed {_times(incident.failures)} since {since}"
    elif incident.failures == 1 and incident.last.kind is EventKind.STALLED:
        head = f"Stalled: no progress since {since}"
    elif incident.failures == 1 and incident.last.kind is EventKind.LONG_RUNNING:
        head = f"Running since {since}, longer than expected"
    else:
        said = KIND_SAID.get(incident.last.kind, "failed")
        head = f"{_failures(incident.failures)} since {since}, the last: {said}"
    # The card's body shows the last failure whole; after the first, the status says it too.
    if incident.failures > 1 and last:
        head += f"; last: {clip(last, MESSAGE_CHARS)}"
    return f":rotating_light: {head}"


def _buttons(incident: Incident) -> ActionsBlock:
    elements: list[Any] = []
    if not incident.acked_by:
        elements.append(
            ButtonElement(
                text=PlainTextObject(text="Acknowledge", emoji=True),
                action_id=ACK,
                value=incident.ref,
                style="primary",
            )
        )
    elements.append(
        StaticSelectElement(
            placeholder=PlainTextObject(text="Mute connector here", emoji=True),
            action_id=MUTE,
            options=[
                Option(value=str(seconds), text=PlainTextObject(text=label))
                for seconds, label in MUTE_CHOICES
            ],
        )
    )
    elements.append(
        ButtonElement(
            text=PlainTextObject(text="Recent runs", emoji=True),
            action_id=RUNS,
            value=incident.ref,
        )
    )
    return ActionsBlock(block_id=BLOCK_PREFIX + incident.ref, elements=elements)


def _body(event: JobEvent, now: datetime) -> AlertMessage:
    return render_alert(event, now=now)  # a failure's alert, or a stalled / long-running one


def render_card(
    incident: Incident, *, now: datetime, resolved_at: datetime | None = None
) -> AlertMessage:
    """The card as it should read now (open, acknowledged, muted, or recovered)."""
    # A stall that moves again: its figures ("no progress for …") as they were when it moved.
    body = _body(incident.last, incident.moving_since or now)
    if incident.mention and resolved_at is None:
        body = with_mention(body, incident.mention)
    blocks: list[dict[str, Any]] = list(body.blocks)
    extra: list[Block] = []
    if resolved_at is not None:
        took = _took(incident.opened_at, resolved_at)
        extra.append(
            SectionBlock(
                text=mrkdwn(
                    f":white_check_mark: *Recovered* {date_token(resolved_at)} after "
                    f"{_what(incident)} over {took}"
                )
            )
        )
    else:
        extra.append(SectionBlock(text=mrkdwn(status_line(incident))))
    notes = []
    if incident.acked_by and incident.acked_at is not None:
        who = clip(incident.acked_name or incident.acked_by, 40)
        notes.append(f":eyes: Acknowledged by @{who} at {date_token(incident.acked_at, '{time}')}")
    if incident.muted_until is not None and resolved_at is None and incident.muted_until > now:
        who = f" by @{clip(incident.muted_by, 40)}" if incident.muted_by else ""
        notes.append(f":mute: Muted here until {date_token(incident.muted_until)}{who}")
    if notes:
        extra.append(ContextBlock(elements=[mrkdwn(" · ".join(notes))]))
    if resolved_at is None:
        extra.append(_buttons(incident))
    room = MAX_BLOCKS - len(extra)  # the body is within Block Kit's limits already
    blocks = blocks[:room] + [b.to_dict() for b in extra]
    text = body.text
    if resolved_at is not None:
        text = f"✅ {clip(incident.connector, 80)} recovered after {_what(incident)}"
    return AlertMessage(text=truncate(text, 3000), blocks=blocks)


def _one(text: str) -> AlertMessage:
    section = SectionBlock(text=mrkdwn(truncate(text, 2900)))
    return AlertMessage(text=truncate(text, 3000), blocks=fit_blocks([section]))


def render_again(event: JobEvent) -> AlertMessage:
    """A further failure, in the card's thread: when, what, the error's first line (a run
    that hangs says how)."""
    job = event.job
    connector = inline_code(job.connector_id, 80)
    if event.kind is EventKind.STALLED:
        since = event.since or event.detected_at
        return _one(
            f":hourglass: {connector} stalled: no progress since {date_token(since)} "
            f"({fmt_count(job.rows_emitted)} rows so far, job {inline_code(job.id, 80)})"
        )
    if event.kind is EventKind.LONG_RUNNING:
        began = (
            f"started {date_token(job.started_at)}"
            if job.started_at
            else f"queued since {date_token(job.created_at)}"
        )
        return _one(
            f":turtle: {connector} has been running too long: {began} "
            f"(job {inline_code(job.id, 80)})"
        )
    when = job.finished_at or event.detected_at
    line = f":x: {connector} failed again {date_token(when)}"
    first = _first_line(job.message)
    if first:
        line += f": {clip(first, MESSAGE_CHARS)}"
    line += f" (job {inline_code(job.id, 80)})"
    return _one(line)


def render_recovered(incident: Incident, event: JobEvent) -> AlertMessage:
    job = event.job
    when = job.finished_at or event.detected_at
    took = _took(incident.opened_at, when)
    rows = f", {fmt_count(job.rows_emitted)} rows" if job.rows_emitted else ", but emitted no rows"
    return _one(
        f":white_check_mark: Recovered after {_what(incident)} over {took}: "
        f"job {inline_code(job.id, 80)} succeeded {date_token(when)}{rows}."
    )


def render_progressing(event: JobEvent) -> AlertMessage:
    job = event.job
    return _one(
        f":arrow_forward: {inline_code(job.connector_id, 80)} is progressing again "
        f"({fmt_count(job.rows_emitted)} rows so far, job {inline_code(job.id, 80)})."
    )


def render_ended(event: JobEvent) -> AlertMessage:
    """A cancellation or an unknown end while the incident is open: said in its thread."""
    job = event.job
    state = clip(" ".join(job.state.split()) or "—", 40)
    return _one(f":no_entry_sign: {inline_code(job.connector_id, 80)} run ended: {state}.")


def render_escalation(incident: Incident, waited: int) -> AlertMessage:
    mention = incident.mention or ""
    return _one(
        f"{mention} :rotating_light: still failing and not acknowledged after "
        f"{fmt_duration_ms(waited * 1000)}; use *Acknowledge* on the card to own it."
    )
