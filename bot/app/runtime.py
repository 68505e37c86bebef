"""The composition root: builds every part from Settings, wires them, closes them in reverse.

Nothing else in the bot constructs clients. Roles (`poller`, `notifier`, `commands`) let
replicas split the work; correctness never depends on how they are split.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx
from aiohttp import web
from redis.exceptions import RedisError
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.middleware.authorization.async_single_team_authorization import (
    AsyncSingleTeamAuthorization,
)
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts.decide import Policy
from bot.alerts.deliver import Timing
from bot.alerts.failure import TOKEN_ERRORS
from bot.alerts.notifier import Notifier, NotifierConfig
from bot.alerts.poller import Poller
from bot.alerts.route import single_channel_router
from bot.alerts.slack_errors import error_code
from bot.app.config import Settings, SlackMode
from bot.app.health import Health
from bot.app.metrics import Metrics
from bot.app.serve import serve
from bot.app.services import Services, classifier_from
from bot.timbal import JobsSource, TimbalClient
from handlers import register_handlers
from storage.connection import Redis, open_redis
from storage.consumer import OutboxConsumer
from storage.keys import Keys
from storage.replicas import Identity, ReplicaIdInUse, Replicas

log = logging.getLogger(__name__)

SLACK_EVENTS_PATH = "/slack/events"


class _DropBoltTokenNotice(logging.Filter):
    """Bolt warns that `token` is unused when SLACK_BOT_TOKEN is in the environment and a
    client is passed; passing our client (with SLACK_API_URL) is deliberate."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


BOLT_TOKEN_NOTICE = _DropBoltTokenNotice()


class StartupError(Exception):
    """The bot cannot start with this configuration; the message says what to fix."""


# --- factories: the only place clients and workers are built from Settings -----------------
def build_timbal(
    settings: Settings,
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
        retries=retries,
        backoff=backoff,
        sleep=sleep,
    )


def build_slack(settings: Settings, *, timeout: int = 15) -> AsyncWebClient:
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=str(settings.slack_api_url),
        timeout=timeout,
    )


def build_redis(settings: Settings) -> Redis:
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
        backfill=timedelta(seconds=settings.backfill_seconds),
        vanish_grace=timedelta(seconds=settings.vanish_grace_seconds),
        alert_on_started=settings.alert_on_started,
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
        self.services = Services(
            settings=settings, timbal=self.timbal, classifier=self.classifier, metrics=self.metrics
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
        self.port = 0
        self.stopped_cleanly = True  # False once a worker died on its own

    # --- construction -----------------------------------------------------------------
    def _build_app(self) -> AsyncApp:
        http = self.settings.effective_slack_mode is SlackMode.HTTP
        secret = self.settings.slack_signing_secret
        logging.getLogger("slack_bolt.AsyncApp").addFilter(BOLT_TOKEN_NOTICE)
        app = AsyncApp(
            client=self.slack,
            signing_secret=secret.get_secret_value() if secret is not None else "",
            request_verification_enabled=http,
            process_before_response=False,
        )
        services = self.services

        async def inject_services(
            context: AsyncBoltContext, next: Callable[[], Awaitable[None]]
        ) -> None:
            context["services"] = services
            await next()

        app.use(inject_services)
        register_handlers(app)
        return app

    def _build_notifier(self) -> Notifier:
        settings = self.settings
        if settings.alert_channel is None:
            log.warning("ALERT_CHANNEL is not set: alerts are found but have nowhere to go")
        config = NotifierConfig(
            digest_threshold=settings.digest_threshold,
            timing=Timing(
                slack_timeout=settings.slack_timeout_seconds,
                pace=settings.channel_min_interval_seconds,
            ),
            policy=Policy(max_strikes=settings.delivery_max_attempts),
        )
        return Notifier(
            redis=self.redis,
            keys=self.keys,
            slack=self.slack,
            router=single_channel_router(settings.alert_channel, settings.oncall_markup),
            identity=self.identity,
            metrics=self.metrics,
            config=config,
            clock=self.clock,
        )

    async def _refresh_backlog(self) -> None:
        backlog = await OutboxConsumer(self.redis, self.keys, consumer=self.replica).backlog()
        self.metrics.outbox_backlog.set(backlog.length)
        self.metrics.outbox_oldest_age.set(backlog.oldest_age)

    @property
    def _role_names(self) -> list[str]:
        return [name for name, on in self.roles.items() if on]

    async def _beat_forever(self, *, registered: bool) -> None:
        """Renew this replica's heartbeat; stop the process if another one took its id."""
        every = self.settings.heartbeat_ttl_seconds / 3
        while not self.stop_event.is_set():
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
                await asyncio.wait_for(self.stop_event.wait(), every)

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Serve HTTP, connect Socket Mode when configured, start the workers."""
        if self.app is not None:
            await self._warm_authorization(self.app)
        await self._start_http()
        try:
            await self.replicas.register(roles=self._role_names)
            registered = True
        except ReplicaIdInUse as exc:
            raise StartupError(str(exc)) from None
        except RedisError as exc:  # the heartbeat keeps trying; nothing leads meanwhile
            log.warning("Redis is not reachable yet (%s); this replica joins once it is", exc)
            registered = False
        self._spawn("heartbeat", self._beat_forever(registered=registered))
        # Workers first: alerts must flow even while Slack's socket is still connecting.
        if self.poller is not None:
            self._spawn("poller", self.poller.run_forever(self.stop_event))
        if self.notifier is not None:
            self._spawn("notifier", self.notifier.run_forever(self.stop_event))
        if self.app is not None and self.settings.effective_slack_mode is SlackMode.SOCKET:
            await self._connect_socket(self.app)
        roles = ",".join(name for name, on in self.roles.items() if on) or "none"
        log.info(
            "timbal-jobs-bot up: org=%s mode=%s roles=%s port=%d replica=%s",
            self.settings.timbal_org_id,
            self.settings.effective_slack_mode.value,
            roles,
            self.port,
            self.replica,
        )

    async def _warm_authorization(self, app: AsyncApp) -> None:
        """Call auth.test now rather than on the first slash command.

        Bolt's single-workspace authorization runs before any listener middleware and calls
        auth.test on the first request, so without this the first `/jobs` after a start waits
        for a Slack round trip before it is acked. A refused bot token stops start-up here.
        """
        try:
            auth = await self.slack.auth_test()
        except SlackApiError as exc:
            error = error_code(exc)
            if error in TOKEN_ERRORS:
                raise StartupError(f"Slack refused SLACK_BOT_TOKEN (auth.test: {error})") from None
            log.warning("auth.test failed (%s); the first slash command will retry it", error)
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("Slack is not reachable (%s); auth.test deferred", type(exc).__name__)
            return
        # Bolt keeps the result on its authorization middleware; fill it in if Bolt's
        # internals are as we know them, and otherwise leave it to the first request.
        for middleware in getattr(app, "_async_middleware_list", []):
            if isinstance(middleware, AsyncSingleTeamAuthorization):
                middleware.auth_test_result = auth

    async def _connect_socket(self, app: AsyncApp) -> None:
        token = self.settings.slack_app_token
        assert token is not None  # Settings guarantees it in socket mode
        self._socket = AsyncSocketModeHandler(app, token.get_secret_value())
        self.health.socket_connected = self._socket.client.is_connected
        client = self._socket.client
        # slack_sdk's connect() retries a refused token forever; ask once so a bad
        # SLACK_APP_TOKEN fails start-up with a clear message instead of hanging.
        try:
            client.wss_uri = await client.issue_new_wss_url()
        except SlackApiError as exc:
            error = error_code(exc)
            if error in TOKEN_ERRORS:
                raise StartupError(
                    f"Slack refused SLACK_APP_TOKEN (apps.connections.open: {error}); "
                    "create an app-level token with connections:write"
                ) from None
            log.warning("apps.connections.open failed (%s); Socket Mode will retry", error)
        except aiohttp.ClientError as exc:
            log.warning("Slack is not reachable (%s); Socket Mode will retry", type(exc).__name__)
        await self._socket.connect_async()  # type: ignore[no-untyped-call]

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
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close_async()  # type: ignore[no-untyped-call]
        if self._runner is not None:
            await self._runner.cleanup()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=10)
            except TimeoutError:
                task.cancel()
            except Exception:
                log.exception("worker %s failed", task.get_name())
        with contextlib.suppress(RedisError):
            await self.replicas.leave()
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
        assert self.app is not None
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)


@contextlib.asynccontextmanager
async def running(settings: Settings, **kwargs: Any) -> AsyncIterator[Runtime]:
    """Start a Runtime and close it afterwards (tests and the CLI use this)."""
    runtime = Runtime(settings, **kwargs)
    try:
        await runtime.start()
        yield runtime
    finally:
        await runtime.close()
