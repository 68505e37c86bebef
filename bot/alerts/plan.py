"""Planning: an event and its routes -> the actions that deliver it. Pure.

Per channel: the alert as a top-level post (with the route's mention where it belongs), then,
when the alert had to cut a long error, the full text as replies in the post's thread. A
muted channel gets no action: the event is counted for its mute's summary (`held_back`). Each
action's id is `{event_id}|{channel}|{slot}`, so planning the same entry again gives the same
ids. The notifier stores the first plan of each entry (`storage.plans`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime

from bot.alerts.notices import render_mute_summary
from bot.alerts.render import AlertMessage, render_alert, with_mention
from bot.domain.delivery import Action, ActionKind, HeldBack, Message, Plan, Route, action_id
from bot.domain.events import EventKind, JobEvent
from bot.domain.notices import MuteSummary
from bot.domain.subscriptions import FAILURE_KINDS

Render = Callable[[JobEvent, datetime], AlertMessage]


def default_render(event: JobEvent, now: datetime) -> AlertMessage:
    return render_alert(event, now=now)


def plan_entry(
    entry_id: str,
    event: JobEvent,
    routes: Sequence[Route],
    *,
    now: datetime,
    render: Render = default_render,
) -> Plan:
    """The actions for one outbox entry, channel by channel, in the order they must happen."""
    event_id = event.event_id
    alert = render(event, now)
    actions: list[Action] = []
    held: list[HeldBack] = []
    for r in routes:
        if r.muted:
            held.append(held_back(event, r))
            continue
        message = with_mention(alert, r.mention) if r.mention else alert
        post = action_id(event_id, r.channel, "post")
        actions.append(
            Action(
                id=post,
                channel=r.channel,
                kind=ActionKind.POST,
                message=Message(text=message.text, blocks=message.blocks),
                event_ids=[event_id],
                digestible=True,
                mention=r.mention,
            )
        )
        actions += [
            Action(
                id=action_id(event_id, r.channel, f"reply.{n}"),
                channel=r.channel,
                kind=ActionKind.REPLY,
                message=Message(text=chunk),
                target=post,
                event_ids=[event_id],
            )
            for n, chunk in enumerate(alert.thread_chunks, start=1)
        ]
    return Plan(entry_id=entry_id, event_id=event_id, actions=actions, held_back=held)


def plan_notice(entry_id: str, summary: MuteSummary) -> Plan:
    """A mute's summary: one post to its channel."""
    message = render_mute_summary(summary)
    post = Action(
        id=action_id(summary.event_id, summary.channel, "post"),
        channel=summary.channel,
        kind=ActionKind.POST,
        message=Message(text=message.text, blocks=message.blocks),
        event_ids=[summary.event_id],
    )
    return Plan(entry_id=entry_id, event_id=summary.event_id, actions=[post])


def held_back(event: JobEvent, muted: Route) -> HeldBack:
    """What a mute's summary will count of `event`, and say of it when it is a failure."""
    kind = event.kind
    if kind in FAILURE_KINDS:
        job = event.job
        first = next(
            (line.strip() for line in (job.message or "").splitlines() if line.strip()), ""
        )
        when = job.finished_at or event.detected_at
        last = json.dumps(
            {"at": when.isoformat(), "connector": job.connector_id, "message": first[:300]}
        )
        return HeldBack(
            channel=muted.channel, target=muted.muted, tally="failures", last_failure=last
        )
    tally = "successes" if kind is EventKind.SUCCEEDED else "others"
    return HeldBack(channel=muted.channel, target=muted.muted, tally=tally)
