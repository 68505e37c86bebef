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
from bot.app.config import Settings, SettingsError, load_settings
from bot.app.logs import setup_logging

EXIT_CONFIG = 2
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

    jobs = sub.add_parser("jobs", help="print the listing /jobs gives, as a table")
    jobs.add_argument("connector", nargs="?", help="only this connector")
    jobs.add_argument("--state", help="only jobs in this state")
    jobs.add_argument("--limit", type=int, default=25, help="rows to show (default 25)")

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
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"timbal-jobs-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.log_level, settings.log_format.value, settings.secrets)
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
    if args.command == "jobs":
        return asyncio.run(_jobs(settings, args.connector, args.state, args.limit))
    if args.command == "poll":
        return asyncio.run(_poll_once(settings, dry_run=args.dry_run))
    if args.command == "dead-letters":
        return asyncio.run(_dead_letters(settings, limit=max(args.limit, 1), replay=args.replay))
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


async def _jobs(settings: Settings, connector: str | None, state: str | None, limit: int) -> int:
    from bot.app.runtime import build_timbal
    from bot.app.services import classifier_from
    from bot.jobs.query import JobsQuery
    from bot.jobs.table import format_jobs_table
    from bot.timbal import TimbalError

    classifier = classifier_from(settings)
    timbal = build_timbal(settings)
    try:
        jobs = await timbal.list_jobs(connector)
    except TimbalError as exc:
        print(f"timbal-jobs-bot: {exc.reason}", file=sys.stderr)
        return 1
    finally:
        await timbal.aclose()
    if state is not None:  # the same filter as `/jobs state=`: a state or a whole class
        query = JobsQuery(connector_id=connector, state=state.strip().lower())
        jobs = [j for j in jobs if query.wants(j, classifier)]
    if not jobs:
        where = f"connector {connector}" if connector else f"org {settings.timbal_org_id}"
        print(f"No jobs for {where}.")
        return 0
    table = format_jobs_table(
        jobs, now=datetime.now(UTC), classifier=classifier, limit=max(limit, 1)
    )
    print(table)
    return 0


async def _poll_once(settings: Settings, *, dry_run: bool) -> int:
    from redis.exceptions import RedisError

    from bot.app.metrics import Metrics
    from bot.app.runtime import build_poller, build_redis, build_timbal
    from bot.timbal import TimbalError

    redis = build_redis(settings)
    timbal = build_timbal(settings)
    poller = build_poller(settings, redis=redis, timbal=timbal, metrics=Metrics(), holder="cli")
    try:
        plan = await poller.plan()
        result = plan.changes
        print(f"jobs={len(plan.jobs)} events={len(result.events)} baseline={result.baseline}")
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


async def _dead_letters(settings: Settings, *, limit: int, replay: bool) -> int:
    from redis.exceptions import RedisError

    from bot.app.runtime import build_redis
    from storage.dead_letters import DeadLetters
    from storage.keys import Keys

    redis = build_redis(settings)
    store = DeadLetters(redis, Keys(settings.redis_prefix, settings.timbal_org_id))
    try:
        letters = await store.read(limit)
        for letter in letters:
            detail = f" ({letter.detail})" if letter.detail else ""
            print(
                f"{letter.at}  {letter.reason:<20} channel={letter.channel or '-'} "
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
