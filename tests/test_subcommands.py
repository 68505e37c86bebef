"""bot.jobs.subcommands: the /jobs subcommand grammar by table, hostile text included. Pure."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.subscriptions import EventSet, Mention, MentionKind, Target
from bot.jobs.subcommands import (
    ListSubscriptions,
    MuteRequest,
    Subcommand,
    SubcommandHelp,
    Subscribe,
    Unmute,
    Unsubscribe,
    parse,
)
from bot.jobs.subscription_views import render_subcommand_usage
from bot.sim.slack_api import block_errors

ONCALL = Mention(kind=MentionKind.GROUP, id="S0ONCALL", label="@data-oncall")


def t(value: str) -> Target:
    return Target(value=value)


OK: list[tuple[str, Subcommand]] = [
    ("subscribe pg-orders", Subscribe(t("pg-orders"))),
    ("SUBSCRIBE pg-orders", Subscribe(t("pg-orders"))),
    ("subscribe pg-* finished", Subscribe(t("pg-*"), EventSet.FINISHED)),
    ("subscribe all all", Subscribe(t("all"), EventSet.ALL)),
    ("subscribe * failures", Subscribe(t("all"))),
    ("subscribe pg-*** finished", Subscribe(t("pg-*"), EventSet.FINISHED)),
    (
        "subscribe pg-* mention=<!subteam^S0ONCALL|@data-oncall>",
        Subscribe(t("pg-*"), mention=ONCALL),
    ),
    (
        "subscribe pg-* mention=<@U0ANA|ana> finished",
        Subscribe(
            t("pg-*"), EventSet.FINISHED, Mention(kind=MentionKind.USER, id="U0ANA", label="ana")
        ),
    ),
    ("subscribe all mention=here", Subscribe(t("all"), mention=Mention(kind=MentionKind.HERE))),
    ("subscribe all mention=<!here>", Subscribe(t("all"), mention=Mention(kind=MentionKind.HERE))),
    (
        "subscribe all mention=@channel",
        Subscribe(t("all"), mention=Mention(kind=MentionKind.CHANNEL)),
    ),
    ("subscribe failures", Subscribe(t("failures"))),  # a connector named "failures"
    ("unsubscribe pg-*", Unsubscribe(t("pg-*"))),
    ("unsubscribe all", Unsubscribe(t("all"))),
    ("subscriptions", ListSubscriptions()),
    ("subscriptions all", ListSubscriptions(every_channel=True)),
    ("mute pg-* 30m", MuteRequest(t("pg-*"), timedelta(minutes=30))),
    ("mute all 2h", MuteRequest(t("all"), timedelta(hours=2))),
    ("mute stripe 1d", MuteRequest(t("stripe"), timedelta(days=1))),
    ("mute stripe 1h30m", MuteRequest(t("stripe"), timedelta(hours=1, minutes=30))),
    ("mute stripe 7d", MuteRequest(t("stripe"), timedelta(days=7))),
    ("unmute pg-*", Unmute(t("pg-*"))),
    ("subscribe help", SubcommandHelp("subscribe")),
    ("mute -h", SubcommandHelp("mute")),
]

BAD: list[tuple[str, str, str]] = [
    ("subscribe", "subscribe", "Say what to subscribe to"),
    ("subscribe <!channel>", "subscribe", "is a special mention, not a connector id"),
    ("subscribe <@U0ANA|ana>", "subscribe", "is a user mention"),
    ("subscribe <#C0GEN|general>", "subscribe", "is a channel link"),
    ("subscribe <https://evil.example|x>", "subscribe", "is a link"),
    ("subscribe pg&amp;orders", "subscribe", "cannot contain"),
    ("subscribe pgé-orders", "subscribe", "letters, digits"),
    ("subscribe pg-* nonsense", "subscribe", "Unexpected"),
    ("subscribe pg-* finished all", "subscribe", "Give one of"),
    ("subscribe pg-* mention=bob", "subscribe", "is not a mention"),
    ("subscribe pg-* mention=<!everyone>", "subscribe", "is not a mention"),
    ("subscribe pg-* mention=<@U0A> mention=<@U0B>", "subscribe", "more than once"),
    ("subscribe " + "*a" * 11, "subscribe", "at most 10 wildcards"),
    ("subscribe " + "x" * 300, "subscribe", "at most 200 characters"),
    ("subscribe pg-*" + "\u202e", "subscribe", "letters, digits"),
    ("unsubscribe", "unsubscribe", "Give a target"),
    ("unsubscribe a b", "unsubscribe", "one target"),
    ("subscriptions mine", "subscriptions", "Unexpected"),
    ("mute pg-*", "mute", "a target and a duration"),
    ("mute pg-* forever", "mute", "is not a duration"),
    ("mute pg-* 8d", "mute", "at most 7 days"),
    ("mute pg-* 0m", "mute", "at least a minute"),
    ("mute pg-* 30", "mute", "is not a duration"),
    ("unmute <!here>", "unmute", "is a special mention"),
    ("subscribe " + "a" * 10_000, "subscribe", "a command is at most 1,000"),
]


@pytest.mark.parametrize(("text", "expected"), OK, ids=[c[0] for c in OK])
def test_parse(text: str, expected: Subcommand) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "subcommand", "problem"), BAD, ids=[c[0][:40] for c in BAD])
def test_bad_input_gets_the_usage_of_that_subcommand_naming_the_problem(
    text: str, subcommand: str, problem: str
) -> None:
    parsed = parse(text)
    assert isinstance(parsed, SubcommandHelp), parsed
    assert parsed.subcommand == subcommand
    assert problem in parsed.problem
    reply = render_subcommand_usage(parsed.subcommand, parsed.problem)
    assert not block_errors(reply.blocks)
    shown = reply.text + str(reply.blocks)
    assert "<!channel>" not in shown and "<https://" not in shown and "<@" not in shown


def test_not_a_subcommand_is_a_listing_query() -> None:
    assert parse("") is None
    assert parse("pg-orders state=failed") is None
    assert parse("connector=subscribe") is None  # a connector named "subscribe"


@given(st.text(max_size=300))
def test_any_text_parses_without_raising_and_renders_within_limits(text: str) -> None:
    parsed = parse("subscribe " + text)
    if isinstance(parsed, SubcommandHelp):
        reply = render_subcommand_usage(parsed.subcommand, parsed.problem)
        assert not block_errors(reply.blocks)
        assert "<!" not in reply.text.replace("&lt;!", "")
