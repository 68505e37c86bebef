"""The composition root: builds every part from Settings, wires them, closes them in reverse.

Nothing else in the bot constructs clients. Roles (`poller`, `notifier`, `commands`) let
replicas split the work; correctness never depends on how they are split.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import httpx
from aiohttp import web
from redis.exceptions import RedisError
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts.decide import Policy
from bot.alerts.deliver import Timing
from bot.alerts.diff import DiffRules
from bot.alerts.failure import TOKEN_ERRORS
from bot.alerts.notifier import Notifier, NotifierConfig
from bot.alerts.poller import Poller
from bot.alerts.routing import SubscriptionRoutes
from bot.alerts.slack_errors import error_code
from bot.alerts.watchdog import Thresholds
from bot.app.config import Settings, SlackMode, StoreSettings, TimbalSettings
from bot.app.health import Health
from bot.app.metrics import Metrics
from bot.app.respond import Replies, SharedRespond
from bot.app.serve import serve
from bot.app.services import Services, classifier_from
from bot.app.slack_signing import Refusal, Unreadable, read_body, verify
from bot.jobs.cache import SharedListings
from bot.reach import unreachable
from bot.redaction import Redactor, excerpt
from bot.timbal import JobsSource, TimbalClient
from bot.timbal.own_loop import OwnLoopSource
from handlers import (
    ASKED_LISTING,
    EMPTY_ACK_COMMANDS,
    Asked,
    listing_asked,
    register_handlers,
)
from storage.connection import Redis, open_redis
from storage.consumer import OutboxConsumer
from storage.incidents import IncidentStore
from storage.keys import Keys
from storage.replicas import Identity, ReplicaIdInUse, Replicas
from storage.status import StatusReader
from storage.subscriptions import SubscriptionStore

log = logging.getLogger(__name__)

SLACK_EVENTS_PATH = "/slack/events"


SLACK_RETRY_FIRST = 1.0  # seconds before the second attempt to reach Slack; doubles
SLACK_RETRY_MAX = 30.0
SOCKET_CONNECT_SECONDS = 15.0


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Drop a logger's warnings (not its errors) for the duration of the block only."""
    logger = logging.getLogger(logger_name)
    muted = _BelowError()
    logger.addFilter(muted)
    try:
        yield
    finally:
        logger.removeFilter(muted)


class StartupError(Exception):
    """The bot cannot start with this configuration; the message says what to fix."""


# --- factories: the only place clients and workers are built from Settings -----------------
def build_timbal(
    settings: TimbalSettings,
    *,
    http: httpx.AsyncClient | None = None,
    retries: int = 2,
    backoff: float = 0.25,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> TimbalClient:
    return TimbalClient(
        base_url=str(settings.timbal_api_url),
        api_key=settings.timbal_api_key,
        org_id=settings.timbal_org_id,
        http=http,
        timeout=settings.timbal_timeout_seconds,
        max_response_bytes=settings.timbal_max_response_mb * 1024 * 1024,
        retries=retries,
        backoff=backoff,
        sleep=sleep,
    )


def build_slack(
    settings: Settings, *, timeout: int = 15, with_token: bool = True
) -> AsyncWebClient:
    """The Slack Web client (`with_token=False`: Bolt's, which gets the token per request)."""
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value() if with_token else None,
        base_url=str(settings.slack_api_url),
        timeout=timeout,
    )


def build_redis(settings: StoreSettings) -> Redis:
    return open_redis(settings.redis_url, cluster=settings.redis_cluster)


def build_identity(settings: Settings) -> Identity:
    """This process: its stable replica id and a nonce of its own."""
    return Identity(replica=settings.effective_replica_id, nonce=uuid.uuid4().hex[:12])


def build_poller(
    settings: Settings,
    *,
    redis: Redis,
    timbal: JobsSource,
    metrics: Metrics,
    identity: Identity,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Poller:
    return Poller(
        redis=redis,
        timbal=timbal,
        keys=Keys(settings.redis_prefix, settings.timbal_org_id),
        classifier=classifier_from(settings),
        org_id=settings.timbal_org_id,
        interval=settings.poll_interval_seconds,
        rules=DiffRules(
            backfill=timedelta(seconds=settings.backfill_seconds),
            vanish_grace=timedelta(seconds=settings.vanish_grace_seconds),
            alert_on_started=settings.alert_on_started,
            stall_after=timedelta(seconds=settings.stall_after_seconds),
            long_running_after=timedelta(seconds=settings.long_running_after_seconds),
        ),
        metrics=metrics,
        identity=identity,
        clock=clock,
    )


class Runtime:
    """One process of the bot. `start()` brings it up; `close()` takes it down in reverse."""

    def __init__(
        self,
        settings: Settings,
        *,
        poller: bool = True,
        notifier: bool = True,
        commands: bool = True,
        redis: Redis | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.roles = {"poller": poller, "notifier": notifier, "commands": commands}
        self.identity = build_identity(settings)
        self.replica = self.identity.replica
        self.clock = clock
        self.metrics = Metrics()
        self.keys = Keys(settings.redis_prefix, settings.timbal_org_id)
        self.stop_event = asyncio.Event()
        self._beat_stop = asyncio.Event()
        self._own_redis = redis is None
        self.redis: Redis = redis if redis is not None else build_redis(settings)
        self.replicas = Replicas(
            self.redis,
            self.keys,
            self.identity,
            ttl_ms=int(settings.heartbeat_ttl_seconds * 1000),
        )
        self.timbal = build_timbal(settings)
        self.slack = build_slack(settings)
        self.classifier = classifier_from(settings)
        self.subscriptions = SubscriptionStore(self.redis, self.keys)
        self.incidents = IncidentStore(self.redis, self.keys)
        # /jobs reads through a short shared cache, over a client on a thread of its own
        # (`bot.timbal.own_loop`); the poller reads Timbal itself, on this loop.
        self.jobs_source = OwnLoopSource(lambda: build_timbal(settings))
        self.listings = SharedListings(
            self.jobs_source, ttl=settings.jobs_cache_seconds, clock=clock
        )
        self.services = Services(
            settings=settings,
            timbal=self.listings,
            classifier=self.classifier,
            metrics=self.metrics,
            subscriptions=self.subscriptions,
            incidents=self.incidents,
            status=StatusReader(self.redis, self.keys, self.replicas),
        )
        self.app = self._build_app() if commands else None
        self.poller = (
            build_poller(
                settings,
                redis=self.redis,
                timbal=self.timbal,
                metrics=self.metrics,
                identity=self.identity,
                clock=clock,
            )
            if poller
            else None
        )
        self.notifier = self._build_notifier() if notifier else None
        self._socket: AsyncSocketModeHandler | None = None
        self.health = Health(
            redis=self.redis,
            keys=self.keys,
            metrics=self.metrics,
            replica=self.replica,
            clock=clock,
            poll_interval=settings.poll_interval_seconds if poller else None,
            before_metrics=self._refresh_backlog,
        )
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._answering: set[asyncio.Task[Any]] = set()  # slash commands acked at once
        self.port = 0
        self.stopped_cleanly = True  # False once a worker died on its own

    # --- construction -----------------------------------------------------------------
    # Set by _build_app / start (class defaults, so a replica without commands has them too).
    _verifier: SignatureVerifier | None = None
    _authorization: AuthorizeResult | None = None
    _connecting: asyncio.Task[None] | None = None
    _replies: Replies | None = None  # responses to response URLs
    startup_error: StartupError | None = None  # a refusal met after start() returned

    def _build_app(self) -> AsyncApp:
        """Bolt, authorised by the start-up auth.test (`_authorize`), verified by us.

        HTTP requests are verified in `_slack_events` on the raw bytes before Bolt parses
        anything, so Bolt's own check would only re-check the same bytes: it is off. Bolt's
        client carries no token: Bolt builds one per request from its base_url with the token
        `_authorize` returns, so the fake Slack of the tests and the demo keeps working.
        """
        secret = self.settings.slack_signing_secret
        if self.settings.effective_slack_mode is SlackMode.HTTP and secret is not None:
            self._verifier = SignatureVerifier(secret.get_secret_value())

        async def authorize() -> AuthorizeResult:
            # A plain function: Bolt passes arguments by their names, and needs none here.
            return await self._authorize()

        with _quiet("slack_bolt.AsyncApp"):
            # Bolt reads SLACK_BOT_TOKEN from the environment itself and warns that it is
            # unused next to our client; that is deliberate, so mute its constructor only.
            app = AsyncApp(
                client=build_slack(self.settings, with_token=False),
                authorize=authorize,
                request_verification_enabled=False,
                process_before_response=False,
            )
        services = self.services
        clock = self.clock  # the runtime's clock: the demo's runs fast, and /jobs must agree

        async def inject_services(
            context: AsyncBoltContext, next: Callable[[], Awaitable[None]]
        ) -> None:
            context["services"] = services
            context["clock"] = clock
            if context.response_url is not None and self._replies is not None:
                # Replies reuse one HTTP session (Bolt's respond opens one per reply).
                context["respond"] = SharedRespond(
                    response_url=context.response_url, replies=self._replies
                )
            await next()

        app.use(inject_services)
        register_handlers(app)
        return app

    async def _authorize(self) -> AuthorizeResult:
        """Bolt's authorize: the cached start-up auth.test (one round trip if it has not run)."""
        if self._authorization is None:
            await self._authenticate()
        assert self._authorization is not None
        return self._authorization

    async def _authenticate(self) -> None:
        response = await self.slack.auth_test()
        self._authorization = AuthorizeResult.from_auth_test_response(
            bot_token=self.settings.slack_bot_token.get_secret_value(),
            auth_test_response=response,
        )

    def _build_notifier(self) -> Notifier:
        settings = self.settings
        if settings.alert_channel is None:
            log.info(
                "ALERT_CHANNEL is not set: alerts go only to channels that subscribed "
                "(/jobs subscribe)"
            )
        config = NotifierConfig(
            digest_threshold=settings.digest_threshold,
            timing=Timing(
                slack_timeout=settings.slack_timeout_seconds,
                pace=settings.channel_min_interval_seconds,
            ),
            policy=Policy(max_strikes=settings.delivery_max_attempts),
            escalate_after=settings.escalate_after_seconds,
            ops_channel=settings.effective_ops_channel,
            thresholds=Thresholds(
                polls=settings.ops_alert_after_polls,
                slack_pause=settings.ops_slack_pause_seconds,
            ),
        )
        routes = SubscriptionRoutes(
            self.subscriptions, builtin=settings.builtin_subscription, clock=self.clock
        )
        return Notifier(
            redis=self.redis,
            keys=self.keys,
            slack=self.slack,
            routes=routes,
            identity=self.identity,
            metrics=self.metrics,
            config=config,
            clock=self.clock,
            sweeps=[routes.end_expired],
        )

    async def _refresh_backlog(self) -> None:
        backlog = await OutboxConsumer(self.redis, self.keys, consumer=self.replica).backlog()
        self.metrics.outbox_backlog.set(backlog.length)
        self.metrics.outbox_oldest_age.set(backlog.oldest_age)

    @property
    def _role_names(self) -> list[str]:
        return [name for name, on in self.roles.items() if on]

    async def _register(self) -> bool:
        """Join the replicas; False when Redis cannot be reached yet (the heartbeat retries)."""
        try:
            await self.replicas.register(roles=self._role_names)
        except ReplicaIdInUse as exc:
            raise StartupError(str(exc)) from None
        except RedisError as exc:
            log.warning("Redis is not reachable yet (%s); this replica joins once it is", exc)
            return False
        return True

    async def _beat_forever(self, *, registered: bool) -> None:
        """Renew this replica's heartbeat; stop the process if another one took its id."""
        every = self.settings.heartbeat_ttl_seconds / 3
        # It beats until the workers have stopped (`_beat_stop`), not just until the stop
        # signal: a notifier letting its last Slack call finish must still hold its claims.
        while not self._beat_stop.is_set():
            try:
                if not registered:
                    await self.replicas.register(roles=self._role_names, wait=False)
                    registered = True
                elif not await self.replicas.beat():
                    log.error(
                        "another process registered REPLICA_ID %r: this one stops (give each "
                        "replica its own REPLICA_ID)",
                        self.replica,
                    )
                    self.stopped_cleanly = False
                    self.stop_event.set()
                    return
            except ReplicaIdInUse as exc:
                log.error("%s; stopping", exc)
                self.stopped_cleanly = False
                self.stop_event.set()
                return
            except RedisError as exc:
                log.warning("heartbeat failed (%s); retrying", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_stop.wait(), every)

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Serve HTTP, start the workers, reach Slack (retried in the background)."""
        if self.app is not None:
            self._replies = Replies()
            await self.jobs_source.open()  # its thread, before the first /jobs needs it
        await self._start_http()  # first: /healthz answers while Slack does not
        # Join the replicas: only a live replica may lead (poll, deliver).
        self._spawn("heartbeat", self._beat_forever(registered=await self._register()))
        # Workers next: alerts must flow even while Slack's socket is still connecting.
        if self.poller is not None:
            self._spawn("poller", self.poller.run_forever(self.stop_event))
        if self.notifier is not None:
            self._spawn("notifier", self.notifier.run_forever(self.stop_event))
        if self.app is not None:
            self.health.socket_connected = self._slack_connected  # /readyz names Slack
            # One attempt now: a refused token stops start-up here, and the first /jobs
            # after a start is authorised from the cached auth.test, without a round trip.
            reason = await self._reach_slack()
            if reason is not None:
                log.warning("Slack: %s (attempt 1); retrying in %.0fs", reason, SLACK_RETRY_FIRST)
                self._connecting = asyncio.create_task(self._keep_reaching_slack(), name="slack")
        roles = ",".join(name for name, on in self.roles.items() if on) or "none"
        log.info(
            "timbal-jobs-bot up: org=%s mode=%s roles=%s port=%d replica=%s",
            self.settings.timbal_org_id,
            self.settings.effective_slack_mode.value,
            roles,
            self.port,
            self.replica,
        )

    async def _slack_connected(self) -> bool:
        if self._authorization is None:
            return False
        if self.settings.effective_slack_mode is SlackMode.HTTP:
            return True
        return self._socket is not None and bool(await self._socket.client.is_connected())

    async def _reach_slack(self) -> str | None:
        """One step towards a usable Slack: None when there, else why not (to retry).

        Raises StartupError when Slack refuses a token: retrying cannot fix that.
        """
        if self._authorization is None:
            reason = await self._warm_authorization()
            if reason is not None:
                return reason
        if self.settings.effective_slack_mode is SlackMode.SOCKET:
            return await self._connect_socket()
        return None

    async def _keep_reaching_slack(self) -> None:
        """Retry `_reach_slack` with capped back-off, one log line an attempt, until stopped."""
        delay = SLACK_RETRY_FIRST
        attempt = 2
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), delay)
            if self.stop_event.is_set():
                return
            try:
                reason = await self._reach_slack()
            except StartupError as exc:
                log.error("Slack: %s; stopping", exc)
                self.startup_error = exc
                self.stopped_cleanly = False
                self.stop_event.set()
                return
            except Exception as exc:  # an answer we did not foresee: still one line, retried
                said = excerpt(str(exc), 200, Redactor(self.settings.secrets))
                reason = f"{type(exc).__name__}: {said}"
            if reason is None:
                log.info("Slack: reached after %d attempts", attempt)
                return
            delay = min(delay * 2, SLACK_RETRY_MAX)
            log.warning("Slack: %s (attempt %d); retrying in %.0fs", reason, attempt, delay)
            attempt += 1

    async def _warm_authorization(self) -> str | None:
        """auth.test once, at start rather than on the first slash command.

        None when it answered; else why not (retried). A refused bot token raises.
        """
        try:
            await self._authenticate()
        except SlackApiError as exc:
            error = error_code(exc)
            if error in TOKEN_ERRORS:
                raise StartupError(f"Slack refused SLACK_BOT_TOKEN (auth.test: {error})") from None
            return f"auth.test failed ({error})"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return unreachable(str(self.settings.slack_api_url), exc)
        return None

    async def _connect_socket(self) -> str | None:
        """Open the Socket Mode connection; None once connected, else why not."""
        token = self.settings.slack_app_token
        assert token is not None and self.app is not None  # Settings guarantees it in socket mode
        if self._socket is None:
            self._socket = AsyncSocketModeHandler(self.app, token.get_secret_value())
        client = self._socket.client
        # slack_sdk's connect() retries forever, a traceback each time; ask for the URL
        # ourselves so a refused token is one clear message and an outage one line a try.
        try:
            client.wss_uri = await client.issue_new_wss_url()
        except SlackApiError as exc:
            error = error_code(exc)
            if error in TOKEN_ERRORS:
                raise StartupError(
                    f"Slack refused SLACK_APP_TOKEN (apps.connections.open: {error}); "
                    "create an app-level token with connections:write"
                ) from None
            return f"apps.connections.open failed ({error})"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return unreachable(str(self.settings.slack_api_url), exc)
        try:
            await asyncio.wait_for(self._socket.connect_async(), SOCKET_CONNECT_SECONDS)  # type: ignore[no-untyped-call]
        except TimeoutError:
            await self._close_socket()  # a fresh handler next time: this one may be closed
            return "the Socket Mode connection did not open in time"
        return None

    async def _close_socket(self) -> None:
        socket_mode, self._socket = self._socket, None
        if socket_mode is not None:
            with contextlib.suppress(Exception):
                await socket_mode.close_async()  # type: ignore[no-untyped-call]

    def _spawn(self, name: str, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            finally:
                if not self.stop_event.is_set():
                    log.error("worker %s stopped unexpectedly; shutting down", name)
                    self.stopped_cleanly = False
                    self.stop_event.set()

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def _start_http(self) -> None:
        web_app = web.Application(client_max_size=1024 * 1024)
        if self.app is not None and self.settings.effective_slack_mode is SlackMode.HTTP:
            web_app.router.add_post(SLACK_EVENTS_PATH, self._slack_events)
        self.health.routes(web_app)
        self._runner, self.port = await serve(web_app, self.settings.host, self.settings.port)

    async def wait(self) -> None:
        """Until `stop_event` is set (a signal, or a worker that died)."""
        await self.stop_event.wait()

    async def close(self) -> None:
        """Reverse order: stop taking work, finish workers, close the clients."""
        self.stop_event.set()
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        await self._close_socket()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._answering:  # commands acked at once: their dispatch takes milliseconds
            await asyncio.wait(self._answering, timeout=10)
        # The notifier lets a Slack call in flight finish (up to the Slack timeout); the
        # heartbeat stops last, so its claims stay alive meanwhile.
        wait = self.settings.slack_timeout_seconds + 5.0
        beats = [t for t in self._tasks if t.get_name() == "heartbeat"]
        for task in [t for t in self._tasks if t not in beats] + beats:
            if task in beats:
                self._beat_stop.set()
            try:
                await asyncio.wait_for(task, timeout=wait)
            except TimeoutError:
                task.cancel()
            except Exception:
                log.exception("worker %s failed", task.get_name())
        self._beat_stop.set()
        with contextlib.suppress(RedisError):
            await self.replicas.leave()  # another replica takes over at once
        await self.listings.aclose()
        await self.jobs_source.aclose()
        if self._replies is not None:
            await self._replies.close()
        await self.timbal.aclose()
        session = getattr(self.slack, "session", None)
        if session is not None:
            await session.close()
        if self._own_redis:
            await self.redis.aclose()
        log.info("timbal-jobs-bot stopped")

    # --- HTTP endpoints -----------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _slack_events(self, request: web.Request) -> web.Response:
        """Verify the raw bytes first; only a verified, readable body reaches Bolt.

        A refused request gets 401 and one log line: no listener, no error handler, no reply
        to whatever `response_url` it carries. Oversized bodies are refused by aiohttp (413).
        """
        assert self.app is not None and self._verifier is not None
        body = await request.read()
        refusal = verify(body, request.headers, self._verifier, time.time())
        if refusal is not Refusal.NONE:
            log.warning("refused a request to %s: %s", SLACK_EVENTS_PATH, refusal.value)
            return web.Response(status=401)
        unreadable, text = read_body(body, request.content_type, request.charset)
        if unreadable is not Unreadable.NONE:
            log.warning("refused a signed request to %s: %s", SLACK_EVENTS_PATH, unreadable.value)
            return web.Response(status=400)
        command, command_text = _command(text)
        if command in EMPTY_ACK_COMMANDS:
            # Its listener acks empty first anyway: ack here, before Bolt even reads the
            # request, so a crowd of /jobs is acked in the time of reading it, not of
            # answering it. The listing it will wait for is asked for now, before Bolt
            # runs the listener: under a crowd, that is a hundred milliseconds later.
            # (HTTP mode only: in Socket Mode the listener asks.)
            task = asyncio.create_task(
                self._dispatch(text, request, self._ask_early(command, command_text)),
                name="command",
            )
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
            return web.Response(status=200)
        return await to_aiohttp_response(await self._dispatch(text, request))

    def _ask_early(self, command: str | None, text: str) -> dict[str, Any]:
        """The listing the command's listener will wait for, asked for now (for the Bolt
        context: the listener answers from it; see `handlers.commands.jobs`)."""
        try:
            query = listing_asked(command, text)
            if query is None:
                return {}
            answer = self.listings.ask(query.connector_id)
            return {ASKED_LISTING: Asked(query.connector_id, answer)}
        except Exception:  # the ack must not depend on it: the listener asks again
            log.exception("/jobs: could not ask Timbal ahead of the listener")
            return {}

    async def _dispatch(
        self, text: str, request: web.Request, context: dict[str, Any] | None = None
    ) -> BoltResponse:
        assert self.app is not None
        bolt_request = AsyncBoltRequest(
            body=text,
            query=request.query_string,
            headers=request.headers,  # type: ignore[arg-type]
            context=context,
        )
        return await self.app.async_dispatch(bolt_request)


def _command(form: str) -> tuple[str | None, str]:
    """The `command` and `text` fields of a slash command's form (None, "" for others)."""
    if "command=" not in form:
        return None, ""
    fields = parse_qs(form, max_num_fields=100)
    command, text = fields.get("command"), fields.get("text")
    return (command[0] if command else None), (text[0] if text else "")


@contextlib.asynccontextmanager
async def running(settings: Settings, **kwargs: Any) -> AsyncIterator[Runtime]:
    """Start a Runtime and close it afterwards (tests and the CLI use this)."""
    runtime = Runtime(settings, **kwargs)
    try:
        await runtime.start()
        yield runtime
    finally:
        await runtime.close()
