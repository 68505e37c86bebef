"""Planning: an event and its routes -> the actions that deliver it. Pure.

Per channel: the alert as a top-level post (with the route's mention where it belongs), then,
when the alert had to cut a long error, the full text as replies in the post's thread. Each
action's id is `{event_id}|{channel}|{slot}`, so planning the same entry again gives the same
ids. The notifier stores the first plan of each entry (`storage.plans`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from bot.alerts.render import AlertMessage, render_alert, with_mention
from bot.domain.delivery import Action, ActionKind, Message, Plan, Route, action_id
from bot.domain.events import JobEvent

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
    for r in routes:
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
    return Plan(entry_id=entry_id, event_id=event_id, actions=actions)
