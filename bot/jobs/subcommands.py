"""Parse the subcommands of `/jobs` that change or show where alerts go. Pure; never raises.

    /jobs subscribe <connector|pattern|all> [failures|finished|all] [mention=<@user|@group|here>]
    /jobs unsubscribe <connector|pattern|all>
    /jobs subscriptions [all]
    /jobs mute <connector|pattern|all> <duration>      (30m, 2h, 1d, 1h30m; at most 7 days)
    /jobs unmute <connector|pattern|all>
    /jobs settings [threads on|off]
    /jobs status

Slack sends the text escaped (`should_escape: true`): a mention arrives as `<@U123|ana>`,
`<!subteam^S123|@data-oncall>` or `<!here>`; the id is kept, and the label only for showing
it without pinging. Anything else that is Slack markup, an entity or a character no
connector id has is refused with the subcommand's usage and what was wrong. `parse()` returns
None when the text is not a subcommand (it is a listing query, `bot.jobs.query`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from bot.domain.subscriptions import ALL, EventSet, Mention, MentionKind, Target
from bot.jobs.query import MAX_CONNECTOR_LENGTH, connector_problem

MAX_TEXT = 1000
MAX_WILDCARDS = 10
MAX_MUTE = timedelta(days=7)
MIN_MUTE = timedelta(minutes=1)
PATTERN_RE = re.compile(r"[A-Za-z0-9._:/@*?\[\]-]+")
DURATION_RE = re.compile(r"(?:(\d{1,4})d)?(?:(\d{1,5})h)?(?:(\d{1,6})m)?")
USER_RE = re.compile(r"<@([UW][A-Z0-9]{2,20})(?:\|([^<>]*))?>")
GROUP_RE = re.compile(r"<!subteam\^(S[A-Z0-9]{2,20})(?:\|([^<>]*))?>")
SPECIAL_RE = re.compile(r"<!(here|channel)(?:\|[^<>]*)?>")

USAGES = {
    "subscribe": (
        "`/jobs subscribe <connector|pattern|all> [failures|finished|all] "
        "[mention=<@user|@group|here>]` — send this channel the alerts of a connector "
        "(`pg-orders`), a pattern (`pg-*`) or `all`; `failures` (the default) are failed, "
        "cancelled, stalled and long-running runs and their recoveries, `finished` every run "
        "that ends, `all` adds runs that start. The mention is pinged when an incident opens. "
        "Subscribing again to the same target replaces it."
    ),
    "unsubscribe": "`/jobs unsubscribe <connector|pattern|all>` — stop what `subscribe` started.",
    "subscriptions": (
        "`/jobs subscriptions` — this channel's subscriptions and mutes; "
        "`/jobs subscriptions all` — every channel's."
    ),
    "mute": (
        "`/jobs mute <connector|pattern|all> <duration>` — hold this channel's alerts for it "
        "back for `30m`, `2h`, `1d`… (at most 7 days); when the mute ends, one summary says "
        "what was held back."
    ),
    "unmute": "`/jobs unmute <connector|pattern|all>` — end a mute now (its summary follows).",
    "settings": (
        "`/jobs settings` — this channel's settings; `/jobs settings threads off` posts every "
        "failure of an open incident top-level instead of in its card's thread "
        "(`threads on`, the default, puts them back in the thread)."
    ),
    "status": (
        "`/jobs status` — the bot's own health: last poll, alerts waiting, dead letters, "
        "paused delivery, who polls and delivers, open incidents."
    ),
}
SUBCOMMANDS = frozenset(USAGES)


@dataclass(frozen=True, slots=True)
class Subscribe:
    target: Target
    events: EventSet = EventSet.FAILURES
    mention: Mention | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    target: Target


@dataclass(frozen=True, slots=True)
class ListSubscriptions:
    every_channel: bool = False


@dataclass(frozen=True, slots=True)
class MuteRequest:
    target: Target
    duration: timedelta


@dataclass(frozen=True, slots=True)
class Unmute:
    target: Target


@dataclass(frozen=True, slots=True)
class ChannelSettingsRequest:
    threads: bool | None = None  # None: show the settings


@dataclass(frozen=True, slots=True)
class StatusRequest:
    pass


@dataclass(frozen=True, slots=True)
class SubcommandHelp:
    """`/jobs <subcommand> help`, or a mistake: the usage, after what was wrong if anything."""

    subcommand: str
    problem: str = ""


Subcommand = (
    Subscribe
    | Unsubscribe
    | ListSubscriptions
    | MuteRequest
    | Unmute
    | ChannelSettingsRequest
    | StatusRequest
    | SubcommandHelp
)


def _quote(text: str, limit: int = 40) -> str:
    typed = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    cut = typed if len(typed) <= limit else typed[: limit - 1] + "…"
    return "`" + cut.replace("`", "'") + "`"


def parse_target(value: str) -> Target | str:
    """A target, or why `value` is not one."""
    if value.lower() in (ALL, "*"):
        return Target(value=ALL)
    if not any(ch in value for ch in "*?["):
        problem = connector_problem(value)
        return problem if problem is not None else Target(value=value)
    if len(value) > MAX_CONNECTOR_LENGTH:
        return f"A pattern is at most {MAX_CONNECTOR_LENGTH} characters (got {len(value)})."
    if PATTERN_RE.fullmatch(value) is None:
        return (
            f"A pattern uses letters, digits, `- _ . : / @` and the wildcards `* ? [ ]` "
            f"(got {_quote(value)})."
        )
    collapsed = re.sub(r"\*+", "*", value)  # `***` matches what `*` matches
    if collapsed == "*":
        return Target(value=ALL)
    if sum(collapsed.count(ch) for ch in "*?[") > MAX_WILDCARDS:
        return f"A pattern has at most {MAX_WILDCARDS} wildcards (got {_quote(value)})."
    return Target(value=collapsed)


def parse_mention(value: str) -> Mention | str:
    """A mention as Slack sends it escaped, or why `value` is not one."""
    if match := USER_RE.fullmatch(value):
        return Mention(kind=MentionKind.USER, id=match.group(1), label=match.group(2) or "")
    if match := GROUP_RE.fullmatch(value):
        return Mention(kind=MentionKind.GROUP, id=match.group(1), label=match.group(2) or "")
    if match := SPECIAL_RE.fullmatch(value):
        return Mention(kind=MentionKind(match.group(1)))
    if value.lstrip("@").lower() in ("here", "channel"):
        return Mention(kind=MentionKind(value.lstrip("@").lower()))
    return (
        f"{_quote(value)} is not a mention: pick a person or a user group from Slack's list "
        "as you type `@`, or write `here`."
    )


def parse_duration(value: str) -> timedelta | str:
    match = DURATION_RE.fullmatch(value.lower()) if value else None
    if match is None or not any(match.groups()):
        return f"{_quote(value)} is not a duration: write `30m`, `2h`, `1d` or `1h30m`."
    days, hours, minutes = (int(g) if g else 0 for g in match.groups())
    duration = timedelta(days=days, hours=hours, minutes=minutes)
    if duration < MIN_MUTE:
        return "A mute lasts at least a minute."
    if duration > MAX_MUTE:
        return f"A mute lasts at most 7 days (got {_quote(value)})."
    return duration


def parse(text: str) -> Subcommand | None:
    """The subcommand in `text`, None when `text` is not one (a listing query)."""
    tokens = text.split()
    if not tokens or tokens[0].lower() not in SUBCOMMANDS:
        return None
    name, args = tokens[0].lower(), tokens[1:]
    if len(text) > MAX_TEXT:
        too_long = f"That is {len(text):,} characters; a command is at most {MAX_TEXT:,}."
        return SubcommandHelp(name, too_long)
    if any(a.lower() in ("help", "-h", "--help", "?") for a in args):
        return SubcommandHelp(name)
    if name == "subscriptions":
        if not args:
            return ListSubscriptions()
        if len(args) == 1 and args[0].lower() == "all":
            return ListSubscriptions(every_channel=True)
        return SubcommandHelp(name, f"Unexpected {_quote(' '.join(args))}.")
    if name == "status":
        return (
            StatusRequest()
            if not args
            else SubcommandHelp(name, f"Unexpected {_quote(' '.join(args))}.")
        )
    if name == "settings":
        return _settings(args)
    if name == "subscribe":
        return _subscribe(args)
    if name == "mute":
        return _mute(args)
    if len(args) != 1:  # unsubscribe, unmute
        what = "a target" if not args else f"one target (got {_quote(' '.join(args))})"
        return SubcommandHelp(name, f"Give {what}: a connector id, a pattern or `all`.")
    target = parse_target(args[0])
    if isinstance(target, str):
        return SubcommandHelp(name, target)
    return Unsubscribe(target) if name == "unsubscribe" else Unmute(target)


def _subscribe(args: list[str]) -> Subcommand:
    mention: Mention | None = None
    events: EventSet | None = None
    positional: list[str] = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and key.lower() == "mention":
            if mention is not None:
                return SubcommandHelp("subscribe", "`mention=` is given more than once.")
            parsed = parse_mention(value)
            if isinstance(parsed, str):
                return SubcommandHelp("subscribe", parsed)
            mention = parsed
        elif arg.lower() in {e.value for e in EventSet} and positional:
            if events is not None:
                return SubcommandHelp(
                    "subscribe", "Give one of `failures`, `finished` or `all`, once."
                )
            events = EventSet(arg.lower())
        else:
            positional.append(arg)
    if not positional:
        return SubcommandHelp(
            "subscribe", "Say what to subscribe to: a connector id, a pattern or `all`."
        )
    if len(positional) > 1:
        shown = ", ".join(_quote(p, 20) for p in positional[1:3])
        after = "after the target come `failures`, `finished` or `all`, and `mention=`"
        return SubcommandHelp("subscribe", f"Unexpected {shown}: {after}.")
    target = parse_target(positional[0])
    if isinstance(target, str):
        return SubcommandHelp("subscribe", target)
    return Subscribe(target=target, events=events or EventSet.FAILURES, mention=mention)


def _mute(args: list[str]) -> Subcommand:
    if len(args) != 2:
        return SubcommandHelp("mute", "Give a target and a duration, e.g. `/jobs mute pg-* 2h`.")
    target = parse_target(args[0])
    if isinstance(target, str):
        return SubcommandHelp("mute", target)
    duration = parse_duration(args[1])
    if isinstance(duration, str):
        return SubcommandHelp("mute", duration)
    return MuteRequest(target=target, duration=duration)


def _settings(args: list[str]) -> Subcommand:
    if not args:
        return ChannelSettingsRequest()
    if len(args) == 2 and args[0].lower() == "threads" and args[1].lower() in ("on", "off"):
        return ChannelSettingsRequest(threads=args[1].lower() == "on")
    return SubcommandHelp("settings", f"Unexpected {_quote(' '.join(args))}: try `threads off`.")
