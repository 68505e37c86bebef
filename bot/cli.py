"""The `timbal-jobs-bot` command line: run, check, jobs, poll, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from bot import __version__
from bot.app.config import (
    CommonSettings,
    Settings,
    SettingsError,
    StoreSettings,
    TimbalSettings,
    load_part,
)
from bot.app.logs import setup_logging
from bot.jobs.query import MAX_LIMIT, JobsQuery

EXIT_CONFIG = 2
EXIT_USAGE = 2  # argparse's own
EXIT_INTERRUPTED = 130  # what shells report for Ctrl-C


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timbal-jobs-bot",
        description="Slack bot for Timbal connector jobs: /jobs and job alerts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the bot (Socket Mode or HTTP, poller and notifier)")
    run.add_argument("--no-poller", action="store_true", help="do not poll Timbal on this replica")
    run.add_argument(
        "--no-notifier", action="store_true", help="do not send alerts from this replica"
    )
    run.add_argument(
        "--no-commands", action="store_true", help="do not answer slash commands on this replica"
    )

    sub.add_parser("check", help="validate settings and check Redis, Timbal and Slack")

    jobs = sub.add_parser(
        "jobs", help="print the listing /jobs gives, as a table (needs the Timbal settings only)"
    )
    jobs.add_argument("connector", nargs="?", help="only this connector")
    jobs.add_argument("--state", help="only jobs in this state, or class (failed, active, …)")
    jobs.add_argument(
        "--limit",
        default=str(MAX_LIMIT),
        help=f"rows to show, 1 to {MAX_LIMIT} (default {MAX_LIMIT})",
    )

    poll = sub.add_parser("poll", help="run one poller cycle and print the events it found")
    poll.add_argument("--once", action="store_true", required=True, help="one cycle, then exit")
    poll.add_argument(
        "--dry-run", action="store_true", help="diff only: commit nothing, post nothing"
    )

    dead = sub.add_parser(
        "dead-letters", help="list the alerts that could not be delivered; --replay sends them"
    )
    dead.add_argument("--limit", type=int, default=100, help="letters to show (default 100)")
    dead.add_argument(
        "--replay", action="store_true", help="put the listed letters back in the outbox"
    )

    demo = sub.add_parser("demo", help="the whole bot against a simulated org; no credentials")
    demo.add_argument("--speed", type=float, default=60.0, help="simulated seconds per second")
    demo.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the simulated org")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before `run` installed its handler: no traceback
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from bot.demo import run_demo

        return asyncio.run(run_demo(speed=args.speed, seconds=args.seconds, seed=args.seed))
    # Each command reads only the settings it uses.
    parts: dict[str, type[CommonSettings]] = {"jobs": TimbalSettings, "dead-letters": StoreSettings}
    part = parts.get(args.command, Settings)
    try:
        loaded = load_part(part)
    except SettingsError as exc:
        print(f"timbal-jobs-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(loaded.log_level, loaded.log_format.value, loaded.secrets)
    if isinstance(loaded, TimbalSettings) and not isinstance(loaded, Settings):
        return asyncio.run(_jobs(loaded, args.connector, args.state, args.limit))
    if isinstance(loaded, StoreSettings) and not isinstance(loaded, Settings):
        return asyncio.run(_dead_letters(loaded, limit=max(args.limit, 1), replay=args.replay))
    assert isinstance(loaded, Settings)
    settings = loaded
    if args.command == "run":
        return asyncio.run(
            _run(
                settings,
                poller=not args.no_poller,
                notifier=not args.no_notifier,
                commands=not args.no_commands,
            )
        )
    if args.command == "check":
        return asyncio.run(_check(settings))
    if args.command == "poll":
        return asyncio.run(_poll_once(settings, dry_run=args.dry_run))
    raise AssertionError(args.command)


async def _run(settings: Settings, *, poller: bool, notifier: bool, commands: bool) -> int:
    from bot.app.runtime import Runtime, StartupError

    runtime = Runtime(settings, poller=poller, notifier=notifier, commands=commands)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stop_event.set)
    # A signal ends start-up too, wherever it is (a first attempt at an unreachable Slack).
    starting = asyncio.ensure_future(runtime.start())
    stopping = asyncio.ensure_future(runtime.stop_event.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # StartupError, or a bug: raised here
            await runtime.wait()
    except StartupError as exc:
        print(f"timbal-jobs-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        for task in (starting, stopping):
            task.cancel()  # a no-op once done
        await asyncio.gather(starting, stopping, return_exceptions=True)
        await runtime.close()
    if runtime.startup_error is not None:
        print(f"timbal-jobs-bot: {runtime.startup_error}", file=sys.stderr)
        return EXIT_CONFIG
    return 0 if runtime.stopped_cleanly else 1


async def _check(settings: Settings) -> int:
    from bot.app.checks import run_checks
    from bot.app.runtime import build_redis, build_slack, build_timbal

    print("✓ settings: valid")
    redis = build_redis(settings)
    timbal = build_timbal(settings, retries=0)
    slack = build_slack(settings)
    try:
        results = await run_checks(settings, redis=redis, timbal=timbal, slack=slack)
    finally:
        await timbal.aclose()
        with contextlib.suppress(Exception):
            await redis.aclose()
    for result in results:
        print(result.line())
    return 0 if all(r.ok for r in results) else 1


async def _jobs(
    settings: TimbalSettings, connector: str | None, state: str | None, limit: str
) -> int:
    """The /jobs listing as a table: the same parsing, filters and bounds as the command."""
    from bot.app.runtime import build_timbal
    from bot.app.services import classifier_from
    from bot.jobs.listing import closest_connectors, skipped_line
    from bot.jobs.query import QueryError, parse_jobs_command
    from bot.jobs.table import format_jobs_table
    from bot.timbal import TimbalError

    words = [f"connector={connector}"] if connector is not None else []
    words += [f"state={state}"] if state is not None else []
    query = parse_jobs_command(" ".join([*words, f"limit={limit}"]))
    if not isinstance(query, JobsQuery):  # help cannot come out of options
        reason = query.message if isinstance(query, QueryError) else "?"
        print(f"timbal-jobs-bot: {_unmark(reason)}", file=sys.stderr)
        return EXIT_USAGE
    classifier = classifier_from(settings)
    timbal = build_timbal(settings)
    try:
        listing = await timbal.list_jobs_detailed(query.connector_id)
        suggestions: list[str] = []
        if query.connector_id is not None and not listing.jobs:
            suggestions = closest_connectors(query.connector_id, (await timbal.list_jobs()))
    except TimbalError as exc:
        print(f"timbal-jobs-bot: {exc.reason}", file=sys.stderr)
        return 1
    finally:
        await timbal.aclose()
    jobs = [j for j in listing.jobs if query.wants(j, classifier)]
    unread = skipped_line(listing.skipped)
    if not jobs:
        where = f"connector {connector}" if connector else f"org {settings.timbal_org_id}"
        filtered = f" with state {query.state}" if query.state and listing.jobs else ""
        print(f"No jobs{filtered} for {where}.")
        if suggestions:
            print(f"Did you mean {' or '.join(suggestions)}?")
    else:
        print(
            format_jobs_table(jobs, now=datetime.now(UTC), classifier=classifier, limit=query.limit)
        )
    if unread:
        print(unread)
    return 0


def _unmark(text: str) -> str:
    """A Slack reply's sentence for a terminal: no code spans, Slack's entities undone."""
    return text.replace("`", "").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


async def _poll_once(settings: Settings, *, dry_run: bool) -> int:
    from redis.exceptions import RedisError

    from bot.app.metrics import Metrics
    from bot.app.runtime import build_identity, build_poller, build_redis, build_timbal
    from bot.timbal import TimbalError

    redis = build_redis(settings)
    timbal = build_timbal(settings)
    identity = build_identity(settings)
    poller = build_poller(
        settings, redis=redis, timbal=timbal, metrics=Metrics(), identity=identity
    )
    try:
        plan = await poller.plan()
        result = plan.changes
        print(f"jobs={plan.jobs} events={len(result.events)} baseline={result.baseline}")
        for event in result.events:
            job = event.job
            print(f"  {event.kind.value:<9} {job.connector_id} {job.dest_table} job={job.id}")
        if dry_run:
            print("dry run: nothing committed")
        else:
            committed = await poller.commit(plan)
            print(
                f"committed: {len(committed.enqueued)} enqueued, "
                f"{committed.duplicates} already enqueued"
            )
    except TimbalError as exc:
        print(f"timbal-jobs-bot: {exc.reason}", file=sys.stderr)
        return 1
    except RedisError as exc:
        print(f"timbal-jobs-bot: Redis failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        await timbal.aclose()
        await redis.aclose()
    return 0


async def _dead_letters(settings: StoreSettings, *, limit: int, replay: bool) -> int:
    from redis.exceptions import RedisError

    from storage.connection import open_redis
    from storage.dead_letters import DeadLetters
    from storage.keys import Keys

    if settings.redis_url is None:  # the embedded store lives inside a running bot only
        print(
            "timbal-jobs-bot: there is no persistent store to read: REDIS_URL is not set, and "
            "without it the bot keeps its dead letters in memory, inside the running process.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    redis = open_redis(settings.redis_url)
    store = DeadLetters(redis, Keys(settings.redis_prefix, settings.timbal_org_id))
    try:
        letters = await store.read(limit)
        for letter in letters:
            detail = f" ({letter.detail})" if letter.detail else ""
            when = f"{letter.at:%Y-%m-%d %H:%M:%S}Z"
            print(
                f"{when}  {letter.reason:<20} channel={letter.channel or '-'} "
                f"event={letter.event_id!r}{detail}"
            )
        print(f"{len(letters)} dead letter(s)")
        if replay and letters:
            count = await store.replay(letters)
            print(f"replayed {count} into the outbox; the notifier sends them to today's routes")
    except RedisError as exc:
        print(f"timbal-jobs-bot: Redis failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
    return 0
