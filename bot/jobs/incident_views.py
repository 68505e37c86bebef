"""What the buttons of an incident's card answer, ephemerally, to the person who clicked. Pure.

Names are shown without pinging (`@name`, escaped); connector ids are escaped inline code;
times are Slack date tokens.
"""

from __future__ import annotations

from datetime import datetime

from slack_sdk.models.blocks import SectionBlock

from bot.blockkit import MAX_SECTION_TEXT, clip, date_token, fit_blocks, inline_code, mrkdwn
from bot.blockkit import truncate as cut
from bot.domain.incidents import Incident
from bot.jobs.listing import RenderedMessage

ID_CHARS = 80


def _one(text: str) -> RenderedMessage:
    section = SectionBlock(text=mrkdwn(cut(text, MAX_SECTION_TEXT)))
    return RenderedMessage(text=cut(text, 3000), blocks=fit_blocks([section]))


def _who(incident: Incident) -> str:
    return inline_code(incident.connector, ID_CHARS)


def render_acked(incident: Incident) -> RenderedMessage:
    return _one(
        f":eyes: You acknowledged the incident of {_who(incident)}: the card says so, and "
        "on-call will not be reminded."
    )


def render_already_acked(incident: Incident, by: str, name: str, at: datetime, you: str) -> str:
    """One sentence: who was first (the clicker may be that person)."""
    when = date_token(at, "{time}")
    if by == you:
        return f"You acknowledged the incident of {_who(incident)} already, at {when}."
    return (
        f"@{clip(name or by, 40)} acknowledged the incident of {_who(incident)} first, at {when}."
    )


def render_first(incident: Incident, by: str, name: str, at: datetime, you: str) -> RenderedMessage:
    return _one(":information_source: " + render_already_acked(incident, by, name, at, you))


def render_incident_over() -> RenderedMessage:
    return _one(
        ":white_check_mark: This incident is over: its connector recovered (the card shows "
        "when). Nothing to acknowledge."
    )


def render_card_muted(incident: Incident, until: datetime, *, extended: bool) -> RenderedMessage:
    verb = "Mute moved" if extended else "Muted"
    return _one(
        f":mute: {verb}: alerts of {_who(incident)} are held back in this channel until "
        f"{date_token(until)}; `/jobs unmute {clip(incident.connector, ID_CHARS)}` lifts it "
        "sooner. The card says so."
    )


def render_bad_choice() -> RenderedMessage:
    return _one(":warning: That is not one of the card's mute durations; pick 1, 4 or 24 hours.")
