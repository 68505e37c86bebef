"""storage.records: the claim scripts against real Redis, a real Cluster and fakeredis.

Claims never overlap: one holder at a time, expiry judged by Redis time only, a lapsed
heartbeat frees a claim at once, and a stale token can neither send nor record.
"""

from __future__ import annotations

import json

import pytest

from bot.domain.delivery import RecordState
from storage.connection import Redis
from storage.dead_letters import DeadLetters, Letter
from storage.gates import SlackGates
from storage.keys import Keys
from storage.records import ActionRecords, ClaimReply, ClaimStatus, Release
from storage.replicas import Identity
from tests.redis_backends import Backend
from tests.replica_helpers import alive, die, identity
from tests.waiting import wait_until

KEYS = Keys("tjb", "org_rec")
CH = "C0REC"
LEASE = 30_000


async def records_for(r: Redis, who: Identity) -> ActionRecords:
    await alive(r, KEYS, who)
    return ActionRecords(r, KEYS, who)


async def test_a_claim_is_exclusive_between_two_live_holders(backend: Backend) -> None:
    a, b = identity("a"), identity("b")
    ra, rb = await records_for(backend.client(), a), await records_for(backend.client(), b)
    first = await ra.claim(CH, ["x"], lease_ms=LEASE)
    second = await rb.claim(CH, ["x"], lease_ms=LEASE)
    assert first.claims["x"].status is ClaimStatus.CLAIMED
    assert first.claims["x"].record.holder == "a"
    assert second.claims["x"].status is ClaimStatus.HELD
    assert second.claims["x"].record.lease_until == first.claims["x"].record.lease_until


async def test_a_lease_lapses_by_redis_time(backend: Backend) -> None:
    # No script reads the caller's clock (there is no clock argument to skew): the lease is
    # Redis time plus the lease, and it lapses when Redis time passes it.
    a, b = identity("a"), identity("b")
    ra, rb = await records_for(backend.client(), a), await records_for(backend.client(), b)
    short = await ra.claim(CH, ["x"], lease_ms=300)
    assert short.claims["x"].record.lease_until == short.gates.now + 300
    assert (await rb.claim(CH, ["x"], lease_ms=LEASE)).claims["x"].status is ClaimStatus.HELD
    taken: list[ClaimReply] = []

    async def b_takes_it() -> bool:
        reply = await rb.claim(CH, ["x"], lease_ms=LEASE)
        taken.append(reply)
        return reply.claims["x"].status is ClaimStatus.CLAIMED

    await wait_until(b_takes_it, within=5, what="the lease lapsed")
    assert taken[-1].gates.now >= short.claims["x"].record.lease_until
    assert taken[-1].claims["x"].record.holder == "b"


async def test_a_holder_whose_heartbeat_lapsed_holds_nothing(backend: Backend) -> None:
    a, b = identity("a"), identity("b")
    ra, rb = await records_for(backend.client(), a), await records_for(backend.client(), b)
    await ra.claim(CH, ["x"], lease_ms=LEASE)  # a long lease...
    await die(backend.client(), KEYS, a)  # ...but a is dead
    taken = await rb.claim(CH, ["x"], lease_ms=LEASE)
    assert taken.claims["x"].status is ClaimStatus.CLAIMED


async def test_a_restarted_process_with_the_same_replica_id_takes_its_claims_at_once(
    backend: Backend,
) -> None:
    old, new = Identity("r", "old"), Identity("r", "new")
    r_old = await records_for(backend.client(), old)
    await r_old.claim(CH, ["x"], lease_ms=LEASE)
    await die(backend.client(), KEYS, old)
    r_new = await records_for(backend.client(), new)  # registers nonce "new" for replica r
    taken = await r_new.claim(CH, ["x"], lease_ms=LEASE)
    assert taken.claims["x"].status is ClaimStatus.CLAIMED
    assert taken.claims["x"].record.nonce == "new"


async def test_a_stale_token_can_neither_send_nor_record(backend: Backend) -> None:
    a, b = identity("a"), identity("b")
    ra, rb = await records_for(backend.client(), a), await records_for(backend.client(), b)
    mine = await ra.claim(CH, ["x"], lease_ms=LEASE)
    stale = [("x", mine.claims["x"].record.token)]
    await die(backend.client(), KEYS, a)
    theirs = await rb.claim(CH, ["x"], lease_ms=LEASE)
    assert theirs.claims["x"].record.token > stale[0][1]
    await alive(backend.client(), KEYS, a)  # a comes back from a long freeze
    begun = await ra.begin(CH, stale, min_left_ms=0, pace_ms=0)
    assert not begun.ok and begun.lost == "x"
    assert await ra.finish(stale, RecordState.SENT, ts="1.1") == ["x"]
    assert await ra.release(stale, Release.NOT_POSTED) == ["x"]
    record = (await rb.read(["x"]))["x"]
    assert record.state is RecordState.IN_FLIGHT and record.holder == "b" and record.ts is None


async def test_begin_refuses_a_holder_whose_own_heartbeat_lapsed(backend: Backend) -> None:
    a = identity("a")
    ra = await records_for(backend.client(), a)
    claim = await ra.claim(CH, ["x"], lease_ms=LEASE)
    await die(backend.client(), KEYS, a)
    begun = await ra.begin(CH, [("x", claim.claims["x"].record.token)], min_left_ms=0, pace_ms=0)
    assert not begun.ok and begun.lost == "heartbeat"


async def test_begin_refuses_when_too_little_lease_is_left(backend: Backend) -> None:
    ra = await records_for(backend.client(), identity("a"))
    claim = await ra.claim(CH, ["x"], lease_ms=1_000)
    token = [("x", claim.claims["x"].record.token)]
    begun = await ra.begin(CH, token, min_left_ms=5_000, pace_ms=0)
    assert not begun.ok and begun.lost == "lease"


async def test_begin_sets_the_pace_gate_and_a_second_send_waits_for_it(backend: Backend) -> None:
    ra = await records_for(backend.client(), identity("a"))
    one = await ra.claim(CH, ["x"], lease_ms=LEASE)
    assert (
        await ra.begin(CH, [("x", one.claims["x"].record.token)], min_left_ms=0, pace_ms=5_000)
    ).ok
    two = await ra.claim(CH, ["y"], lease_ms=LEASE)
    assert two.gates.pace_left > 4_000
    paced = await ra.begin(CH, [("y", two.claims["y"].record.token)], min_left_ms=0, pace_ms=5_000)
    assert not paced.ok and paced.paced_for > 4_000
    # A plain-text retry of a refused call neither waits for nor sets the gate.
    assert (await ra.begin(CH, [("y", two.claims["y"].record.token)], min_left_ms=0, pace_ms=-1)).ok


async def test_a_killed_attempt_leaves_doubt_and_a_strike(backend: Backend) -> None:
    a = identity("a")
    ra = await records_for(backend.client(), a)
    first = await ra.claim(CH, ["x"], lease_ms=LEASE)
    assert first.claims["x"].record.strikes == 0 and not first.claims["x"].record.doubt
    await ra.begin(CH, [("x", first.claims["x"].record.token)], min_left_ms=0, pace_ms=0)
    await die(backend.client(), KEYS, a)  # killed while sending
    b = await records_for(backend.client(), identity("b"))
    again = (await b.claim(CH, ["x"], lease_ms=LEASE)).claims["x"].record
    assert again.strikes == 1  # the call that never finished
    assert again.doubt and again.interrupted and again.doubt_since >= first.gates.now


async def test_a_process_killed_while_only_waiting_gets_no_strike(backend: Backend) -> None:
    """A claim that never reached the call (waiting, searching) costs nothing when killed:
    a pod restarted every 20 s must not quarantine innocent alerts."""
    a = identity("a")
    ra = await records_for(backend.client(), a)
    for n in range(10):
        await ra.claim(CH, ["x"], lease_ms=LEASE)
        await die(backend.client(), KEYS, a)
        a = identity(f"a{n}")
        ra = await records_for(backend.client(), a)
    record = (await ra.claim(CH, ["x"], lease_ms=LEASE)).claims["x"].record
    assert record.strikes == 0 and not record.doubt


@pytest.mark.parametrize(
    ("mode", "strikes", "doubt"),
    [
        (Release.UNUSED, 0, False),
        (Release.NOT_POSTED, 0, False),
        (Release.MAYBE_POSTED, 0, True),
        (Release.INTERRUPTED, 0, True),
        (Release.BUG, 1, True),  # released while sending: whether it posted is unknown
    ],
)
async def test_release_refunds_or_keeps_the_strike(
    r: Redis, mode: Release, strikes: int, doubt: bool
) -> None:
    ra = await records_for(r, identity("a"))
    claim = await ra.claim(CH, ["x"], lease_ms=LEASE)
    token = [("x", claim.claims["x"].record.token)]
    await ra.begin(CH, token, min_left_ms=0, pace_ms=0)
    await ra.release(token, mode)
    record = (await ra.read(["x"]))["x"]
    assert record.holder is None and record.lease_until == 0 and not record.sending
    assert record.strikes == strikes
    assert record.doubt is (doubt if mode is not Release.UNUSED else False)
    assert record.interrupted is (mode is Release.INTERRUPTED)


async def test_a_bug_before_the_call_counts_a_strike_and_keep_strike_keeps_the_calls(
    r: Redis,
) -> None:
    ra = await records_for(r, identity("a"))
    claim = await ra.claim(CH, ["x"], lease_ms=LEASE)
    await ra.release([("x", claim.claims["x"].record.token)], Release.BUG)
    assert (await ra.read(["x"]))["x"].strikes == 1
    claim = await ra.claim(CH, ["x"], lease_ms=LEASE)
    token = [("x", claim.claims["x"].record.token)]
    await ra.begin(CH, token, min_left_ms=0, pace_ms=0)
    await ra.release(token, Release.NOT_POSTED, keep_strike=True)  # Slack failed only this one
    assert (await ra.read(["x"]))["x"].strikes == 2


async def test_finish_with_a_home_moves_the_target_to_the_new_message(r: Redis) -> None:
    """An incident card's update that had to post a new card: the card's record follows."""
    ra = await records_for(r, identity("a"))
    claim = await ra.claim(CH, ["card"], lease_ms=LEASE)
    await ra.finish([("card", claim.claims["card"].record.token)], RecordState.SENT, ts="1.1")
    claim = await ra.claim(CH, ["update"], lease_ms=LEASE)
    token = [("update", claim.claims["update"].record.token)]
    assert await ra.finish(token, RecordState.SENT, ts="2.2", home="card") == []
    records = await ra.read(["card", "update"])
    assert records["card"].ts == "2.2" and records["card"].state is RecordState.SENT
    assert records["card"].reason == "moved" and records["update"].ts == "2.2"
    # A lost claim moves nothing.
    assert await ra.finish(token, RecordState.SENT, ts="3.3", home="card") == ["update"]
    assert (await ra.read(["card"]))["card"].ts == "2.2"


async def test_finish_is_final_and_later_claims_say_done(backend: Backend) -> None:
    ra = await records_for(backend.client(), identity("a"))
    claim = await ra.claim(CH, ["x", "y"], lease_ms=LEASE)
    tokens = [(a, c.record.token) for a, c in claim.claims.items()]
    assert await ra.finish(tokens, RecordState.SENT, ts="1700000000.000100") == []
    again = await ra.claim(CH, ["x", "y"], lease_ms=LEASE)
    assert {c.status for c in again.claims.values()} == {ClaimStatus.DONE}
    assert again.claims["x"].record.ts == "1700000000.000100"


async def test_renew_extends_only_a_valid_claim(r: Redis) -> None:
    ra = await records_for(r, identity("a"))
    claim = await ra.claim(CH, ["x"], lease_ms=1_000)
    token = [("x", claim.claims["x"].record.token)]
    assert await ra.renew(token, lease_ms=60_000)
    assert (await ra.read(["x"]))["x"].lease_until > claim.claims["x"].record.lease_until + 50_000
    assert not await ra.renew([("x", token[0][1] + 99)], lease_ms=60_000)


async def test_an_unreadable_record_is_treated_as_a_doubtful_earlier_attempt(r: Redis) -> None:
    await r.hset(KEYS.actions, "x", "{not json")
    ra = await records_for(r, identity("a"))
    record = (await ra.claim(CH, ["x"], lease_ms=LEASE)).claims["x"].record
    assert record.doubt and record.doubt_since > 0


async def test_the_claim_reports_the_gates(backend: Backend) -> None:
    client = backend.client()
    gates = SlackGates(client, KEYS)
    await gates.pause(CH, 5_000, "rate_limited")
    await gates.pause_workspace("token_revoked", "reinstall")
    ra = await records_for(client, identity("a"))
    reply = await ra.claim(CH, ["x"], lease_ms=LEASE)
    assert reply.gates.pause_left > 4_000 and reply.gates.pause_reason == "rate_limited"
    assert "token_revoked" in reply.gates.workspace


async def test_records_are_pruned_by_age(r: Redis) -> None:
    ra = await records_for(r, identity("a"))
    claim = await ra.claim(CH, ["old", "new"], lease_ms=LEASE)
    tokens = [(a, c.record.token) for a, c in claim.claims.items()]
    await ra.finish(tokens, RecordState.SENT, ts="1.1")
    await r.hset(KEYS.actions, "junk", "{")
    now = claim.gates.now
    assert await ra.prune(now_ms=now + 10_000, max_age_ms=60_000) == 1  # only the junk
    assert await ra.prune(now_ms=now + 120_000, max_age_ms=60_000) == 2
    assert await r.hlen(KEYS.actions) == 0


async def test_prune_keeps_the_records_of_events_that_may_be_delivered_again(r: Redis) -> None:
    ra = await records_for(r, identity("a"))
    lettered = "org:job|1:failed:2025-03-01"  # a job id may hold the separator
    replayed, targeted, done = "org:job_2:failed:x", "org:job_3:failed:x", "org:job_4:failed:x"
    ids = [
        f"{lettered}|C0A|post",  # sent to A ...
        f"{lettered}|C0B|post",  # ... dead for B: its letter can be replayed any day
        f"{replayed}|C0A|post",  # its letter was replayed: an outbox entry, not planned yet
        f"{targeted}|C0A|post",  # a stored plan updates this message
        f"{done}|C0A|post",  # delivered long ago, no letter, no entry: pruned
    ]
    claim = await ra.claim(CH, ids, lease_ms=LEASE)
    tokens = [(a, c.record.token) for a, c in claim.claims.items()]
    await ra.finish(tokens, RecordState.SENT, ts="1.1")
    # Letters of other events fill more than one page of the scan; ours comes last.
    filler = [
        Letter("1-0", f"other:{i}", "{}", "C0X", f"other:{i}|C0X|post", "x") for i in range(1200)
    ]
    mine = Letter("1-0", lettered, "{}", "C0B", ids[1], "channel_not_found")
    await DeadLetters(r, KEYS).add([*filler, mine])
    await r.xadd(KEYS.outbox, {"event_id": replayed, "event": "{}"})
    update = {"id": "e9|C0A|update", "channel": "C0A", "kind": "update",
              "message": {"text": "t"}, "target": ids[3]}  # fmt: skip
    plan = {"entry_id": "9-0", "event_id": "e9", "actions": [update]}
    await r.hset(KEYS.plans, "9-0", json.dumps(plan))
    week = 7 * 24 * 3600 * 1000
    assert await ra.prune(now_ms=claim.gates.now + 2 * week, max_age_ms=week) == 1
    assert sorted(await ra.read(ids)) == sorted(ids[:4])
