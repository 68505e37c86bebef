"""Parse the text of `/jobs [connector] [state=<state>] [limit=<n>]` into a typed result.

`parse_jobs_command(text)` never raises: it returns a `JobsQuery`, a `HelpRequest`, or a
`QueryError` whose one-line `message` says what is wrong (the caller shows it with `USAGE`).

Slack sends the text escaped (`should_escape: true`): `<` `>` `&` arrive as entities and
mentions, channels and links as `<@U123>`, `<#C1|x>`, `<https://…|…>`. None of those is a
connector id, and each gets its own message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.domain.models import Job
from bot.domain.states import StateClass, StateClassifier

DEFAULT_LIMIT = 10
MIN_LIMIT = 1
MAX_LIMIT = 25
MAX_CONNECTOR_LENGTH = 200
MAX_STATE_LENGTH = 64
HELP_WORDS = frozenset({"help", "-h", "--help", "?"})
KEYS = ("connector", "state", "limit")
STATE_CLASSES = frozenset(c.value for c in StateClass)

CONNECTOR_RE = re.compile(r"[A-Za-z0-9._:/@-]+")
STATE_RE = re.compile(r"[A-Za-z0-9._:-]+")
LIMIT_RE = re.compile(r"[0-9]+")
SLACK_MARKUP_RE = re.compile(r"<([@#!]?)[^<>]*>")
ENTITY_RE = re.compile(r"&(amp|lt|gt);")

USAGE = f"""\
*Usage:* `/jobs [connector] [state=<state>] [limit=<n>]` (only you see the answer)
• `/jobs` — the organisation's most recent connector jobs
• `/jobs postgres-main` — the jobs of one connector
• `/jobs postgres-main state=failed limit=5` — options go in any order
• `/jobs state=running` — every connector, one state
• `/jobs help` — this help
`state` is a state as Timbal names it (`running`, `queued`, …) or a whole class: \
`failed`, `active`, `succeeded`, `cancelled`, `other`.
`limit` is {MIN_LIMIT}–{MAX_LIMIT} (default {DEFAULT_LIMIT}). A connector id is up to \
{MAX_CONNECTOR_LENGTH} letters, digits and `- _ . : / @`; write `connector=help` for a \
connector named `help`.
*Where alerts go* (in the channel they are for; `/jobs <subcommand> help` says more)
• `/jobs subscribe pg-* failures mention=@data-oncall` — this channel gets the failures of \
every `pg-…` connector and pings @data-oncall (`finished` or `all` for more; `all` as the \
target for every connector)
• `/jobs unsubscribe pg-*` — stop that
• `/jobs subscriptions` — what this channel gets (`/jobs subscriptions all`: every channel)
• `/jobs mute stripe 2h` — hold this channel's alerts of `stripe` back for 2 hours; a \
summary follows
• `/jobs unmute stripe` — end the mute now"""


@dataclass(frozen=True, slots=True)
class JobsQuery:
    """What to list: one connector or the whole org, an optional state filter, a limit."""

    connector_id: str | None = None
    state: str | None = None  # lower-case; a state name or a StateClass value
    limit: int = DEFAULT_LIMIT

    def wants(self, job: Job, classifier: StateClassifier) -> bool:
        """Does `job` pass the state filter (its own state, or its class, matches)?"""
        if self.state is None:
            return True
        if job.state.strip().lower() == self.state:
            return True
        return self.state in STATE_CLASSES and classifier.classify(job).value == self.state

    def to_text(self) -> str:
        """The command text that parses back to this query."""
        parts: list[str] = []
        if self.connector_id is not None:
            is_word = self.connector_id.lower() in HELP_WORDS
            parts.append(f"connector={self.connector_id}" if is_word else self.connector_id)
        if self.state is not None:
            parts.append(f"state={self.state}")
        if self.limit != DEFAULT_LIMIT:
            parts.append(f"limit={self.limit}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class HelpRequest:
    """The user asked for the usage text."""


@dataclass(frozen=True, slots=True)
class QueryError:
    """The text is not a valid query; `message` is one line saying why."""

    message: str


ParseResult = JobsQuery | HelpRequest | QueryError


def _quote(token: str, limit: int = 40) -> str:
    """Echo user text as they typed it (Slack's entities undone): short, in a code span."""
    typed = token.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    cut = typed if len(typed) <= limit else typed[: limit - 1] + "…"
    return "`" + cut.replace("`", "'") + "`"


def connector_problem(value: str) -> str | None:
    """Why `value` is not an acceptable connector id, or None when it is."""
    match = SLACK_MARKUP_RE.fullmatch(value)
    if match is not None:
        kind = {"@": "a user mention", "#": "a channel link", "!": "a special mention"}
        what = kind.get(match.group(1), "a link")
        return f"{_quote(value)} is {what}, not a connector id."
    if any(ch in value for ch in "<>&"):
        return f"A connector id cannot contain `<`, `>` or `&` (got {_quote(value)})."
    if len(value) > MAX_CONNECTOR_LENGTH:
        return f"A connector id is at most {MAX_CONNECTOR_LENGTH} characters (got {len(value)})."
    if any(not ch.isprintable() for ch in value):
        return "A connector id cannot contain control characters."
    if CONNECTOR_RE.fullmatch(value) is None:
        bad = next(ch for ch in value if CONNECTOR_RE.fullmatch(ch) is None)
        return (
            f"A connector id uses only letters, digits and `- _ . : / @`; "
            f"{_quote(bad)} is not allowed in {_quote(value)}."
        )
    return None


def _state_problem(value: str) -> str | None:
    if len(value) > MAX_STATE_LENGTH:
        return f"A state is at most {MAX_STATE_LENGTH} characters (got {len(value)})."
    if STATE_RE.fullmatch(value) is None:
        return f"A state uses only letters, digits and `- _ . :` (got {_quote(value)})."
    return None


def _parse_limit(value: str) -> int | QueryError:
    out_of_range = QueryError(
        f"`limit` must be a whole number from {MIN_LIMIT} to {MAX_LIMIT} (got {_quote(value)})."
    )
    if LIMIT_RE.fullmatch(value) is None or len(value) > 6:
        return out_of_range
    limit = int(value)
    return limit if MIN_LIMIT <= limit <= MAX_LIMIT else out_of_range


def parse_jobs_command(text: str) -> ParseResult:
    """Parse the slash command's text (see `USAGE`); never raises."""
    tokens = text.split()
    if any(token.lower() in HELP_WORDS for token in tokens):
        return HelpRequest()
    options: dict[str, str] = {}
    positional: list[str] = []
    for token in tokens:
        key, eq, value = token.partition("=")
        if not eq or SLACK_MARKUP_RE.fullmatch(token) or ENTITY_RE.search(key):
            positional.append(token)
            continue
        key = key.lower()
        if key not in KEYS:
            known = ", ".join(f"`{k}=`" for k in KEYS)
            return QueryError(f"Unknown option {_quote(key + '=')}; the options are {known}.")
        if key in options:
            return QueryError(f"`{key}=` is given more than once.")
        if not value:
            return QueryError(f"`{key}=` needs a value.")
        options[key] = value
    if "connector" in options:
        positional.insert(0, options.pop("connector"))
    if len(positional) > 1:
        listed = ", ".join(_quote(p, 20) for p in positional[:3])
        return QueryError(f"Give at most one connector id (got {listed}).")
    connector = positional[0] if positional else None
    if connector is not None and (problem := connector_problem(connector)) is not None:
        return QueryError(problem)
    state = options.get("state")
    if state is not None:
        if (problem := _state_problem(state)) is not None:
            return QueryError(problem)
        state = state.lower()
    limit = DEFAULT_LIMIT
    if "limit" in options:
        parsed = _parse_limit(options["limit"])
        if isinstance(parsed, QueryError):
            return parsed
        limit = parsed
    return JobsQuery(connector_id=connector, state=state, limit=limit)
