"""Planning: an event, its routes and the open incidents -> the actions that deliver it. Pure.

Per channel, the incident lifecycle (`bot.alerts.incidents`) names the step, and the step
says what goes out:

- OPEN: the alert is the incident's card (with its buttons and the route's mention), plus the
  full text of a long error as replies in its thread;
- JOIN: the card is updated ("failed 3 times since 14:02; last: …"), then the failure goes
  into its thread (no mention), with its long error when it is not the one before; the
  notifier sends only the last of several updates waiting for one card, and many waiting
  replies to one thread as one digest reply; in a channel with threads off
  (`/jobs settings threads off`) the failure is posted top-level instead, as a plain alert;
- RECOVER: the card is updated to resolved, then "Recovered after 3 failures over 42m" in its
  thread; it replaces the run's success alert. RECOVER_QUIETLY (muted): the update only;
- NOTE: "progressing again" (the card updated to say so), or a cancellation, in the thread;
- PLAIN: the alert as a top-level post (the route's mention where it belongs), and a long
  error in its thread;
- HOLD (muted): nothing posted; counted for the mute's summary (`held_back`); DROP: nothing.

Updates and replies of an incident target its card's action and may fall back to a new
top-level post when the card is gone (`Action.fallback`). Each action's id is
`{event_id}|{channel}|{slot}`, so planning the same entry again gives the same ids, and what
the plan does to incidents (`Plan.incidents`) is stored with it in one step. Notices (a
mute's summary, a card refresh, an escalation, an ops alert) are planned by `plan_notice`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from bot.alerts.cards import (
    render_again,
    render_card,
    render_ended,
    render_escalation,
    render_progressing,
    render_recovered,
)
from bot.alerts.incidents import Outcome, Step, happened_at, step
from bot.alerts.notices import render_mute_summary, render_ops
from bot.alerts.render import AlertMessage, render_alert, with_mention
from bot.domain.delivery import (
    Action,
    ActionKind,
    HeldBack,
    IncidentWrite,
    Message,
    Plan,
    Route,
    action_id,
)
from bot.domain.events import EventKind, JobEvent
from bot.domain.incidents import Incident, incident_key
from bot.domain.notices import CardRefresh, Escalation, MuteSummary, OpsAlert

Render = Callable[[JobEvent, datetime], AlertMessage]
Notice = MuteSummary | CardRefresh | Escalation | OpsAlert

# Held back as failures in a mute's summary (progress and other ends count as "others").
FAILURE_TALLY = frozenset(
    {EventKind.FAILED, EventKind.CANCELLED, EventKind.STALLED, EventKind.LONG_RUNNING}
)


def default_render(event: JobEvent, now: datetime) -> AlertMessage:
    return render_alert(event, now=now)


def _always(channel: str) -> bool:
    return True


def _message(alert: AlertMessage) -> Message:
    return Message(text=alert.text, blocks=alert.blocks)


class _Builder:
    """The actions of one (event, channel): ids by slot, in the order they must happen."""

    def __init__(self, event_id: str, channel: str, mention: str | None) -> None:
        self.event_id, self.channel, self.mention = event_id, channel, mention
        self.actions: list[Action] = []

    def id(self, slot: str) -> str:
        return action_id(self.event_id, self.channel, slot)

    def post(
        self,
        alert: AlertMessage,
        *,
        mention: str | None = None,
        chunks: bool = True,
        digestible: bool = True,
    ) -> str:
        post = self.id("post")
        self.actions.append(
            Action(
                id=post,
                channel=self.channel,
                kind=ActionKind.POST,
                message=_message(alert),
                event_ids=[self.event_id],
                digestible=digestible,
                mention=mention,
            )
        )
        if chunks:
            self.chunks(alert, post)
        return post

    def update(self, card: str, alert: AlertMessage) -> None:
        self.actions.append(
            Action(
                id=self.id("card"),
                channel=self.channel,
                kind=ActionKind.UPDATE,
                message=_message(alert),
                target=card,
                event_ids=[self.event_id],
                fallback=True,
            )
        )

    def reply(
        self,
        target: str,
        alert: AlertMessage,
        *,
        slot: str = "thread",
        mention: str | None = None,
        digestible: bool = False,
    ) -> None:
        self.actions.append(
            Action(
                id=self.id(slot),
                channel=self.channel,
                kind=ActionKind.REPLY,
                message=_message(alert),
                target=target,
                event_ids=[self.event_id],
                fallback=True,
                mention=mention,
                digestible=digestible,
            )
        )

    def chunks(self, alert: AlertMessage, target: str) -> None:
        self.actions += [
            Action(
                id=self.id(f"reply.{n}"),
                channel=self.channel,
                kind=ActionKind.REPLY,
                message=Message(text=chunk),
                target=target,
                event_ids=[self.event_id],
            )
            for n, chunk in enumerate(alert.thread_chunks, start=1)
        ]

    def in_thread(self, card: str, alert: AlertMessage, threads: bool) -> None:
        """A message about the incident: in its card's thread, or top-level with threads off."""
        if threads:
            self.reply(card, alert)
        else:
            self.post(alert, chunks=False)


def _actions(
    outcome: Outcome,
    event: JobEvent,
    route: Route,
    alert: AlertMessage,
    *,
    now: datetime,
    threads: bool,
) -> list[Action]:
    b = _Builder(event.event_id, route.channel, route.mention)
    before, after = outcome.before, outcome.after
    kind = outcome.step
    if kind is Step.PLAIN:
        b.post(
            with_mention(alert, route.mention) if route.mention else alert, mention=route.mention
        )
    elif kind is Step.OPEN:
        assert after is not None
        card = render_card(after, now=now)
        b.post(card, mention=route.mention, chunks=False)
        b.chunks(alert, b.id("post"))
    elif kind is Step.JOIN:
        assert before is not None and after is not None
        b.update(before.card, render_card(after, now=now))
        if threads:
            # In a storm, many of these wait for one thread: they may go out as one digest.
            b.reply(before.card, render_again(event), digestible=True)
            if (event.job.message or "") != (before.last.job.message or ""):
                b.chunks(alert, before.card)  # a new error: its whole text, once
        else:
            b.post(
                with_mention(alert, route.mention) if route.mention else alert,
                mention=route.mention,
            )
    elif kind in (Step.RECOVER, Step.RECOVER_QUIETLY):
        assert before is not None
        b.update(before.card, render_card(before, now=now, resolved_at=happened_at(event)))
        if kind is Step.RECOVER:
            b.in_thread(before.card, render_recovered(before, event), threads)
    elif kind is Step.NOTE:
        assert before is not None
        if event.kind is EventKind.PROGRESSING:
            if after is not None and after != before:  # the stall it is about moves again
                b.update(before.card, render_card(after, now=now))
            b.in_thread(before.card, render_progressing(event), threads)
        else:
            b.in_thread(before.card, render_ended(event), threads)
    return b.actions


def _write(outcome: Outcome) -> IncidentWrite | None:
    before, after = outcome.before, outcome.after
    if not outcome.changed:
        return None
    incident = after or before
    assert incident is not None
    return IncidentWrite(
        key=incident.key,
        expect=before.version if before is not None else 0,
        value=after.stored() if after is not None else "",
        card=incident.card,
    )


def plan_entry(
    entry_id: str,
    event: JobEvent,
    routes: Sequence[Route],
    *,
    now: datetime,
    incidents: Mapping[str, Incident] | None = None,
    threads: Callable[[str], bool] = _always,
    render: Render = default_render,
    lifecycle: bool = True,
) -> Plan:
    """The actions for one outbox entry, channel by channel, in the order they must happen.
    `lifecycle=False` plans plain alerts and leaves incidents alone (after a rendering bug)."""
    event_id = event.event_id
    alert = render(event, now)
    open_now = incidents or {}
    actions: list[Action] = []
    held: list[HeldBack] = []
    writes: list[IncidentWrite] = []
    for r in routes:
        key = incident_key(r.channel, event.job.connector_id)
        card = action_id(event_id, r.channel, "post")
        outcome = step(open_now.get(key), event, r, card=card, now=now)
        if not lifecycle:
            plain = Step.HOLD if r.muted else Step.DROP if r.recovery_only else Step.PLAIN
            outcome = Outcome(plain, None, None)
        actions += _actions(outcome, event, r, alert, now=now, threads=threads(r.channel))
        if r.muted and outcome.step in (Step.HOLD, Step.RECOVER_QUIETLY) and not r.recovery_only:
            held.append(held_back(event, r))
        write = _write(outcome)
        if write is not None:
            writes.append(write)
    return Plan(
        entry_id=entry_id, event_id=event_id, actions=actions, held_back=held, incidents=writes
    )


def plan_notice(
    entry_id: str,
    notice: Notice,
    *,
    now: datetime,
    incidents: Mapping[str, Incident] | None = None,
    threads: Callable[[str], bool] = _always,
) -> Plan:
    """A notice's actions: a mute's summary or an ops alert is one post; a card refresh updates
    the incident's card, an escalation replies under it (nothing when the incident is over, or,
    for an escalation, acknowledged meanwhile)."""
    b = _Builder(notice.event_id, notice.channel, None)
    if isinstance(notice, MuteSummary):
        b.post(render_mute_summary(notice), chunks=False, digestible=False)
    elif isinstance(notice, OpsAlert):
        b.post(render_ops(notice), chunks=False, digestible=False)
    else:
        incident = (incidents or {}).get(incident_key(notice.channel, notice.connector))
        if incident is not None and incident.card == notice.card:
            if isinstance(notice, CardRefresh):
                b.update(incident.card, render_card(incident, now=now))
            elif not incident.acked_by:
                said = render_escalation(incident, notice.waited)
                if threads(notice.channel):
                    b.reply(incident.card, said, mention=incident.mention)
                else:
                    b.post(said, mention=incident.mention, chunks=False, digestible=False)
    return Plan(entry_id=entry_id, event_id=notice.event_id, actions=b.actions)


HUNG_SAID = {EventKind.STALLED: "stalled, no progress", EventKind.LONG_RUNNING: "running too long"}


def held_back(event: JobEvent, muted: Route) -> HeldBack:
    """What a mute's summary will count of `event`, and say of it when it is a failure."""
    kind = event.kind
    if kind in FAILURE_TALLY:
        job = event.job
        first = next(
            (line.strip() for line in (job.message or "").splitlines() if line.strip()),
            HUNG_SAID.get(kind, ""),
        )
        when = happened_at(event)  # a stall: when it stopped moving
        last = json.dumps(
            {"at": when.isoformat(), "connector": job.connector_id, "message": first[:300]}
        )
        return HeldBack(
            channel=muted.channel, target=muted.muted, tally="failures", last_failure=last
        )
    tally = "successes" if kind is EventKind.SUCCEEDED else "others"
    return HeldBack(channel=muted.channel, target=muted.muted, tally=tally)
