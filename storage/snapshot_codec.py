"""How a `JobSnapshot` is stored: one short ASCII value per job, in one of `BUCKETS` hashes.

A value is the state class's letter (upper case), the run's hung-job marks (`!` stalled, `+`
long running), then the four instants as microseconds since the epoch in base 36 (empty for
none), the time of the run's last progress in whole seconds since the epoch in base 36
(empty for none: only active runs have one), `rows_emitted` in base 36, then the state as
the API names it:

    F<finished_at>|<started_at>|<updated_at>|<last_seen>|<progress_at>|<rows>|<state>
    e.g.  Fpl8x1s6o0|…||2bi|failed          A!+|pl8x1s6o0|…|ta3mn1|2bi|running

Exact (instants compare equal after a round trip; they come back in UTC) and 50 to 62 bytes
for the states and figures jobs have, so a bucket of up to 128 jobs stays a listpack, Redis'
compact encoding for small hashes (`hash-max-listpack-entries` 128, `-value` 64): about 90
bytes a job in all, where one JSON value per job in one big hash cost ~290. Jobs are spread
over the buckets by the CRC-32 of their id, so a poll writes only the fields of the jobs
that changed.

Older values still load: a lower-case letter is the format of issue 11, before the hung-job
fields (`f<finished_at>|<started_at>|<updated_at>|<last_seen>|<state>`), and
`LegacySnapshot` reads the format before that (JSON in one hash, `Keys.snapshot`), to
migrate it.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict

from bot.domain.models import Timestamp
from bot.domain.snapshot import JobSnapshot
from bot.domain.states import StateClass

BUCKETS = 1024  # ~49 jobs a bucket at 50,000 jobs; still listpacks up to ~100,000 jobs
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
CLASS_LETTER = {
    StateClass.ACTIVE: "A",
    StateClass.SUCCEEDED: "S",
    StateClass.FAILED: "F",
    StateClass.CANCELLED: "C",
    StateClass.OTHER: "O",
}
LETTER_CLASS = {letter: cls for cls, letter in CLASS_LETTER.items()}
OLD_LETTER_CLASS = {letter.lower(): cls for letter, cls in LETTER_CLASS.items()}  # issue 11
STALLED, LONG_RUNNING = "!", "+"
SECOND = timedelta(seconds=1)


class SnapshotUnreadable(ValueError):
    """A stored value that is not a snapshot (hand-edited, truncated, another format)."""


def bucket_of(job_id: str) -> int:
    return zlib.crc32(job_id.encode("utf-8", "surrogatepass")) % BUCKETS


def _base36(n: int) -> str:
    if n < 0:
        return "-" + _base36(-n)
    out = ""
    while True:
        n, digit = divmod(n, 36)
        out = DIGITS[digit] + out
        if not n:
            return out


def _instant(when: datetime | None) -> str:
    return "" if when is None else _base36((when - EPOCH) // MICROSECOND)


def _seconds(when: datetime | None) -> str:
    """A whole second (`JobSnapshot.progress_at` is kept to the second, so this is exact)."""
    return "" if when is None else _base36((when - EPOCH) // SECOND)


def encode(snapshot: JobSnapshot) -> str:
    marks = (STALLED if snapshot.stalled else "") + (LONG_RUNNING if snapshot.long_running else "")
    rows = "" if snapshot.rows is None else _base36(snapshot.rows)
    return (
        f"{CLASS_LETTER[snapshot.state_class]}{marks}{_instant(snapshot.finished_at)}"
        f"|{_instant(snapshot.started_at)}|{_instant(snapshot.updated_at)}"
        f"|{_instant(snapshot.last_seen)}|{_seconds(snapshot.progress_at)}|{rows}|{snapshot.state}"
    )


class Decoder:
    """Decodes stored values; instants and states met before are shared, not rebuilt (a
    whole org's snapshots share a few `last_seen` values and a handful of states)."""

    def __init__(self) -> None:
        self._instants: dict[str, datetime] = {}
        self._states: dict[str, str] = {}

    def _when(self, text: str) -> datetime:
        when = self._instants.get(text)
        if when is None:
            when = self._instants[text] = EPOCH + int(text, 36) * MICROSECOND
        return when

    def decode(self, value: str) -> JobSnapshot:
        try:
            if value[:1] in OLD_LETTER_CLASS:
                return self._decode_old(value)
            head, started, updated, seen, progress, rows, state = value.split("|", 6)
            stalled = head[1:2] == STALLED
            long_running = head[1 + stalled : 2 + stalled] == LONG_RUNNING
            finished = head[1 + stalled + long_running :]
            return JobSnapshot(
                state=self._states.setdefault(state, state),
                state_class=LETTER_CLASS[head[0]],
                finished_at=self._when(finished) if finished else None,
                started_at=self._when(started) if started else None,
                updated_at=self._when(updated),
                last_seen=self._when(seen),
                rows=int(rows, 36) if rows else None,
                progress_at=EPOCH + int(progress, 36) * SECOND if progress else None,
                stalled=stalled,
                long_running=long_running,
            )
        except (ValueError, KeyError, IndexError, OverflowError) as exc:
            raise SnapshotUnreadable(f"not a stored snapshot ({type(exc).__name__})") from None

    def _decode_old(self, value: str) -> JobSnapshot:
        """Issue 11's format: no rows, no progress (the next poll learns them)."""
        finished, started, updated, seen, state = value[1:].split("|", 4)
        return JobSnapshot(
            state=self._states.setdefault(state, state),
            state_class=OLD_LETTER_CLASS[value[0]],
            finished_at=self._when(finished) if finished else None,
            started_at=self._when(started) if started else None,
            updated_at=self._when(updated),
            last_seen=self._when(seen),
        )


class LegacySnapshot(BaseModel):
    """A snapshot as JSON, the format of `Keys.snapshot` before issue 11."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    state: str
    state_class: StateClass
    finished_at: Timestamp | None
    started_at: Timestamp | None
    updated_at: Timestamp
    last_seen: Timestamp

    def snapshot(self) -> JobSnapshot:
        return JobSnapshot(
            self.state,
            self.state_class,
            self.finished_at,
            self.started_at,
            self.updated_at,
            self.last_seen,
        )
