"""What goes wrong in the simulated org: realistic error messages, one catalogue per source.

Each `FailureKind` says which terminal state the run ends in, when in the run it strikes
(a fraction of the planned run time: a permission error strikes at once, a schema mismatch
deep into the data) and how to write its message. Messages are built from the run's own
random stream, so they vary (request ids, record numbers) yet stay reproducible for a seed.
They deliberately contain `<`, `>` and `&`, as real ones do, so the demo shows escaping.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

Message = Callable[[random.Random, datetime], str]


@dataclass(frozen=True, slots=True)
class FailureKind:
    state: str  # the API state the run ends in ("failed", "timed_out", ...)
    at: tuple[float, float]  # when it strikes, as a fraction of the planned run time
    message: Message


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def _alnum(rng: random.Random, n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(rng.choice(alphabet) for _ in range(n))


# --- Postgres ---------------------------------------------------------------------------------
def pg_permission_denied(rng: random.Random, when: datetime) -> str:
    return (
        "ERROR: permission denied for table orders (SQLSTATE 42501)\n"
        'while reading public.orders as role "timbal_reader" '
        f"(pid {rng.randint(20000, 90000)}); "
        "GRANT SELECT ON public.orders TO timbal_reader, then re-run the sync"
    )


def pg_statement_timeout(rng: random.Random, when: datetime) -> str:
    # An error message that quotes a query, not a query.
    return (
        "ERROR: canceling statement due to statement timeout (SQLSTATE 57014)\n"  # noqa: S608
        "STATEMENT: SELECT id, customer_id, status, total_cents, updated_at FROM public.orders "
        "WHERE updated_at >= $1 AND id > $2 ORDER BY updated_at, id "
        f"LIMIT {rng.choice((10, 50))}000"
    )


def pg_connection(rng: random.Random, when: datetime) -> str:
    return (
        'connection to server at "orders-db.internal", port 5432 failed: Connection timed out\n'
        "\tIs the server running on that host and accepting TCP/IP connections? "
        f"(attempt {rng.randint(3, 5)} of 5)"
    )


# --- Stripe -----------------------------------------------------------------------------------
def stripe_rate_limited(rng: random.Random, when: datetime) -> str:
    return (
        "Stripe API error 429 (rate_limit): Request rate limit exceeded. Too many requests hit "
        f"the API too quickly. [request_id=req_{_alnum(rng, 14)}] giving up after 6 retries on "
        f"GET /v1/charges?limit=100&starting_after=ch_{_alnum(rng, 24)}"
    )


def stripe_expired_key(rng: random.Random, when: datetime) -> str:
    return (
        "Stripe API error 401 (authentication_error): Expired API Key provided: "
        f"rk_live_********{_alnum(rng, 4)}. [request_id=req_{_alnum(rng, 14)}]"
    )


# --- HubSpot: a schema mismatch with a long, chained stack trace ---------------------------------
SAMPLE_RECORDS = 30
_W = "timbal/connectors/runtime/worker.py"
_R = "timbal/connectors/runtime/runner.py"
_REC = "timbal/schema/record.py"
_CO = "timbal/schema/coerce.py"
_FRAMES = (
    (_W, 412, "run_batch", "rows = await self._transform(batch)"),
    (_W, 388, "_transform", "return [self.schema.coerce(r) for r in batch]"),
    (_W, 388, "<listcomp>", "return [self.schema.coerce(r) for r in batch]"),
    (_REC, 141, "coerce", "out[col.name] = coerce_value(col, record.get(col.source))"),
    (_CO, 97, "coerce_value", "raise SchemaMismatchError(col.name, col.type, describe(value))"),
)  # fmt: skip
_OUTER = (
    (_R, 233, "run", "await self._pump(source, sink)"),
    (_R, 301, "_pump", "async for batch in self._batches(source):"),
    (_R, 318, "_batches", "yield await self.worker.run_batch(raw)"),
    (_W, 419, "run_batch", "raise BatchFailed(self.batch_no) from exc"),
)  # fmt: skip


def _trace(frames: tuple[tuple[str, int, str, str], ...]) -> list[str]:
    lines = ["Traceback (most recent call last):"]
    for path, line, func, code in frames:
        lines += [f'  File "/app/{path}", line {line}, in {func}', f"    {code}"]
    return lines


def hubspot_schema_mismatch(rng: random.Random, when: datetime) -> str:
    record, batch = rng.randint(10_000, 99_999), rng.randint(3, 40)
    sample = ", ".join(
        f'{{"id": "{rng.randint(10**9, 10**10)}", "lifecyclestage": ["lead", "customer"]}}'
        for _ in range(SAMPLE_RECORDS)
    )
    lines = [
        'SchemaMismatchError: column "lifecyclestage" in hubspot.contacts: destination type '
        f"TEXT, source sent ARRAY<TEXT> for record {record} (batch {batch})",
        "",
        *_trace(_FRAMES),
        "timbal.schema.errors.SchemaMismatchError: column 'lifecyclestage': expected <TEXT>, "
        "got <ARRAY<TEXT>>",
        f"  offending records (first {SAMPLE_RECORDS} of {rng.randint(40, 400)}): [{sample}]",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        *_trace(_OUTER),
        f"timbal.connectors.errors.BatchFailed: batch {batch} of hubspot.contacts failed; "
        "rows before it were committed & are kept. Fix the column type (ALTER TABLE "
        "hubspot.contacts ALTER COLUMN lifecyclestage TYPE TEXT[]) or map the property to "
        "a string in the connector settings, then re-run.",
    ]
    return "\n".join(lines)


def hubspot_unauthorized(rng: random.Random, when: datetime) -> str:
    return (
        'HubSpot API 401 Unauthorized: {"status":"error","message":"Authentication credentials '
        'not found. This API supports OAuth 2.0 authentication","correlationId":"'
        f'{_hex(rng, 8)}-{_hex(rng, 4)}-{_hex(rng, 4)}-{_hex(rng, 4)}-{_hex(rng, 12)}",'
        '"category":"INVALID_AUTHENTICATION"}'
    )


# --- S3 ---------------------------------------------------------------------------------------
def _s3_key(rng: random.Random, when: datetime) -> str:
    return f"events/{when:%Y/%m/%d}/part-{rng.randint(0, 99):05d}.json.gz"


def s3_access_denied(rng: random.Random, when: datetime) -> str:
    return (
        "An error occurred (AccessDenied) when calling the GetObject operation: User: "
        "arn:aws:sts::123456789012:assumed-role/timbal-connector/s3-events is not authorized "
        'to perform: s3:GetObject on resource: "arn:aws:s3:::acme-clickstream/'
        f'{_s3_key(rng, when)}" because no identity-based policy allows the s3:GetObject '
        f"action (Service: S3, Status Code: 403, Request ID: {_hex(rng, 16).upper()})"
    )


def s3_bad_json(rng: random.Random, when: datetime) -> str:
    column = rng.randint(1000, 60000)
    return (
        f"JSONDecodeError: Unterminated string starting at: line 1 column {column} "
        f"(char {column - 1}) in s3://acme-clickstream/{_s3_key(rng, when)}"
    )


POSTGRES = (
    FailureKind("failed", (0.0, 0.02), pg_permission_denied),
    FailureKind("timed_out", (0.3, 0.9), pg_statement_timeout),
    FailureKind("failed", (0.05, 0.6), pg_connection),
)
STRIPE = (
    FailureKind("failed", (0.2, 0.9), stripe_rate_limited),
    FailureKind("failed", (0.0, 0.01), stripe_expired_key),
)
HUBSPOT = (
    FailureKind("failed", (0.3, 0.8), hubspot_schema_mismatch),
    FailureKind("error", (0.0, 0.01), hubspot_unauthorized),
)
S3 = (
    FailureKind("failed", (0.0, 0.05), s3_access_denied),
    FailureKind("failed", (0.1, 0.9), s3_bad_json),
)

CANCELLERS = ("dana@acme.io", "li.wei@acme.io", "sam@acme.io")


def cancel_message(rng: random.Random, when: datetime) -> str:
    if rng.random() < 0.5:
        return "superseded by a newer run of the same sync"
    return f"cancelled by {rng.choice(CANCELLERS)} from the Timbal console"
