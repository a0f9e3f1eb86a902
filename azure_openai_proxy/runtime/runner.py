"""Running the gateway: event loop, listening socket(s), worker processes, signals.

- `SIGTERM`/`SIGINT`: stop accepting, let in-flight requests and streams finish for up to
  `shutdown_grace_seconds`, then exit.
- `SIGHUP` (and, with `--watch-config`, a change of the config file): reload the
  configuration. A bad new config is logged and the old one keeps serving; requests
  already in flight finish on the routing they started with; deployments still
  configured keep their live state (cooldowns, circuits). cli.py holds SIGHUP from the
  start; it is let in once its handler is in place (parent and workers).
- `--workers N`: N processes on one port (SO_REUSEPORT), each with its own pool state;
  the virtual keys' rate limits are shared by all of them, through a table the parent
  creates before it starts them (governance/sharedlimits.py) and removes at exit. When a
  worker dies, the parent zeroes the requests it had in flight in that table and starts
  another in its place (runtime/workers.py); when the parent dies, each worker drains
  and exits. A port already listened on is refused first.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import multiprocessing
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import EllipsisType
from typing import Any

from azure_openai_proxy.apiversions import (
    NEWEST_PREVIEW,
    OPERATION_NEEDS,
    deployment_need,
    model_operations,
    parse_api_version,
    support_warning,
)
from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.gateway.app import GatewayApp, create_app
from azure_openai_proxy.gateway.ledger import ledger_enabled, prices_of
from azure_openai_proxy.governance.prices import unpriced_warnings
from azure_openai_proxy.governance.sharedcontext import SharedContext
from azure_openai_proxy.governance.sharedholds import SharedHolds
from azure_openai_proxy.http.server import ServerLimits, serve_fast
from azure_openai_proxy.observability.accesslog import configure_logging
from azure_openai_proxy.runtime.capacity import (
    backlog_for,
    backlog_note,
    connection_cap_for,
    endpoints_of,
    fds_per_stream,
    prepare_process,
)
from azure_openai_proxy.runtime.heap import settle_heap
from azure_openai_proxy.runtime.watch import ConfigWatcher, Signature
from azure_openai_proxy.runtime.workers import (
    STOPS,
    SharedTables,
    exit_code,
    port_refusal,
    run_workers,
    supervise,
)
from azure_openai_proxy.settings import (
    DeploymentSettings,
    ServerSettings,
    Settings,
    UpstreamSettings,
)

__all__ = ["SettingsSource", "describe", "refuse_open_relay", "run", "serve_forever",
           "server_limits", "supervise"]

log = logging.getLogger("azure_openai_proxy")


@dataclass(frozen=True)
class SettingsSource:
    """Where settings come from, so a worker or a reload can read them again."""

    config_path: str | None
    environ: Mapping[str, str] = field(default_factory=dict)
    flags: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Settings:
        return load_settings(self.config_path, self.environ, self.flags)


def refuse_open_relay(settings: Settings) -> str | None:
    if settings.is_open_relay and not settings.allow_open:
        return (
            "refusing to start: the gateway holds Azure keys but no client keys are set, so "
            "anyone who can reach it could spend your quota. Set client_keys (config) or "
            "AZURE_OPENAI_PROXY_CLIENT_KEYS, or pass --allow-open to run an open relay."
        )
    return None


def describe(settings: Settings, today: str | None = None) -> str:
    """The resolved routing table for `check-config`, with every key masked. `today`
    (YYYY-MM-DD, default the UTC date) decides which configured api-versions are retired."""
    today = today or _today()
    rows = [("model", "deployment", "endpoint", "api", "api-version", "auth", "weight", "priority")]
    for d in settings.deployments:
        rows.append((d.model_name, d.deployment_name, d.endpoint, d.api, d.api_version,
                     d.key_label, f"{d.weight:g}", str(d.priority)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.extend(_api_version_lines(settings, today))
    lines.append("")
    chosen = (" (port 0: each start, and each of --workers N, gets a free port of its own, "
              "which the log's `listening on` lines name)" if settings.port == 0 else "")
    lines.append(f"listen: {settings.listen}   api_base: {settings.api_base or '/'}{chosen}")
    if settings.default_endpoint:
        key = "configured" if settings.default_api_key else "passthrough (client's key)"
        lines.append(
            f"default endpoint: {settings.default_endpoint} (api-version "
            f"{_default_version(settings)}, key {key}); unmapped models go there"
            + (" after the '.'/':' fallback" if settings.model_fallback else "")
        )
    lines.append(
        f"routing: {settings.routing_strategy}, up to {settings.max_attempts} attempts in "
        f"{settings.retry_budget_seconds:g} s; circuit opens after {settings.circuit_failures} "
        f"failures for {settings.circuit_open_seconds:g} s"
    )
    lines.append(f"client keys: {len(settings.client_keys)} configured" if settings.client_keys
                 else "client keys: none")
    if ledger_enabled(settings):
        lines.append("usage ledger: writer journal (a child process per worker writes it)"
                     if settings.ledger_writer == "journal" else
                     "usage ledger: writer thread (each worker's own thread writes it)")
    server = settings.server
    lines.append(
        f"server: head {server.head_timeout:g} s, body {server.body_timeout:g} s, keep-alive "
        f"{server.keepalive_timeout:g} s, send {server.send_timeout:g} s; up to "
        f"{server.max_connections} connections per worker, backlog {server.backlog}"
        + backlog_note(server.backlog)
    )
    lines.append(f"upstream: {_upstream_protocols(settings.upstream)}")
    lines.extend(f"WARNING: {warning}" for warning in _unpriced_warnings(settings))
    if settings.upstream.http_proxy or settings.upstream.socks_proxy:
        proxy = settings.upstream.socks_proxy or settings.upstream.http_proxy or ""
        lines.append(f"upstream proxy: {_mask_url(proxy)}")
    if settings.is_open_relay:
        lines.append("WARNING: open relay: server-side Azure keys and no client keys")
    lines.extend(f"WARNING: {w}" for w in (settings.admin_key_warning,
                                           settings.cleartext_warning,
                                           settings.proxy_warning) if w)
    return "\n".join(lines)


def _unpriced_warnings(settings: Settings) -> list[str]:
    """With governance on, a warning per deployment whose model the price table does not
    know: its records cost $0 (unpriced) and keys with a budget are refused it."""
    if not ledger_enabled(settings):
        return []
    return unpriced_warnings(prices_of(settings),
                             ((d.model_name, d.deployment_name) for d in settings.deployments))


def _upstream_protocols(upstream: UpstreamSettings) -> str:
    """What `upstream.http2` (and a proxy or aiohttp, which turn it off) makes of each scheme."""
    setting = "auto" if upstream.http2 == "auto" else str(upstream.http2).lower()
    if not upstream.direct:
        why = "an upstream proxy" if upstream.http_proxy or upstream.socks_proxy else "aiohttp"
        return f"HTTP/1.1 ({why}; http2: {setting})"
    if not upstream.http2_for("https"):
        return "HTTP/1.1 (http2: false)"
    http = "h2c (prior knowledge)" if upstream.http2_for("http") else "HTTP/1.1"
    return f"https: HTTP/2 where ALPN picks it, else HTTP/1.1; http://: {http} (http2: {setting})"


def _today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def _api_version_lines(settings: Settings, today: str) -> list[str]:
    """Per deployment, the api-version it will send and why; then the warnings."""
    lines = ["", "api-versions:"] if settings.deployments else []
    for d in settings.deployments:
        lines.append(f"  {d.model_name} -> {d.deployment_name}: {_version_and_reason(d)}")
    return lines + [f"WARNING: {warning}" for warning in _api_version_warnings(settings, today)]


def _api_version_warnings(settings: Settings, today: str) -> list[str]:
    """Configured api-versions Azure retired or that cannot serve their deployment, or
    an operation its model offers (then the default's, which env mode's models use)."""
    warnings: list[str] = []
    for d in settings.deployments:
        warning = _version_warning(d, today) if d.api != "v1" else None
        if warning is not None:
            warnings.append(f"{d.model_name} -> {d.deployment_name}: {warning}")
    warnings.extend(warning for d in settings.deployments for warning in _operation_warnings(d))
    if settings.default_api_version_explicit:
        warning = support_warning(settings.default_api_version, today)
        if warning is not None:
            warnings.append(f"the default api-version: {warning}")
        if settings.default_endpoint is not None:
            warnings.extend(_default_operation_warnings(settings.default_api_version))
    return warnings


def _operation_warnings(d: DeploymentSettings) -> list[str]:
    """An explicit dated version too old for an operation the model offers (Responses
    on gpt-4o...): the gateway refuses those requests with a 400 naming the version."""
    if d.api != "dated" or d.api_version_reason != "explicit":
        return []
    version = parse_api_version(d.api_version)
    model = deployment_need(d.deployment_name, d.model_name, d.model_family)
    if model is not None and not model.accepted_by(version):
        return []  # the model's own warning says the deployment serves nothing
    warnings = []
    for operation in model_operations(d.deployment_name, d.model_name):
        need = OPERATION_NEEDS[operation]
        if not need.accepted_by(version):
            warnings.append(
                f"{d.model_name} -> {d.deployment_name}: api-version {d.api_version} cannot "
                f"serve {need.title} ({need.describe()}), which its model offers: those "
                f"requests are refused with a 400; remove the explicit api-version to let "
                f"the gateway choose per request, or set {NEWEST_PREVIEW}")
    return warnings


def _default_operation_warnings(raw: str) -> list[str]:
    """The default endpoint's models go out on the explicit default (env mode's
    AZURE_OPENAI_API_VER): the operations it cannot serve are refused for every one of
    them. Realtime is left out: its bridge chooses its own version."""
    version = parse_api_version(raw)
    titles = [need.title for operation, need in OPERATION_NEEDS.items()
              if operation != "realtime" and not need.accepted_by(version)]
    if not titles:
        return []
    return [f"the default api-version {raw} cannot serve {', '.join(titles)}: requests for "
            f"them to the default endpoint are refused with a 400; unset it "
            f"(AZURE_OPENAI_API_VER, `api_version`) to let the gateway choose per request, "
            f"or set {NEWEST_PREVIEW}"]


def _version_warning(d: DeploymentSettings, today: str) -> str | None:
    need = deployment_need(d.deployment_name, d.model_name, d.model_family)
    if need is not None and not need.accepted_by(parse_api_version(d.api_version)):
        return (f"api-version {d.api_version} cannot serve {need.family} ({need.describe()}): "
                f"its requests will be refused; remove the explicit api-version to let the gateway "
                f"choose, or set {NEWEST_PREVIEW}")
    if d.api == "foundry":
        # Foundry's model inference API has its own versions (2024-05-01-preview): Azure
        # OpenAI's retirement table says nothing about them. The need above still holds:
        # OpenAI models there follow Azure OpenAI's table (compat judges them on it).
        return None
    return support_warning(d.api_version, today)


def _version_and_reason(d: DeploymentSettings) -> str:
    if d.api == "v1":
        return "v1 API, api-version " + ("preview" if d.api_version == "preview" else "none")
    return f"{d.api_version} ({d.api_version_reason})"


def _default_version(settings: Settings) -> str:
    if settings.default_api_version_explicit:
        return f"{settings.default_api_version}, explicit"
    return (f"{settings.default_api_version} by default; {NEWEST_PREVIEW} for models that "
            "need a newer one (reasoning, realtime, audio, speech)")


def _mask_url(url: str) -> str:
    """A proxy URL may carry user:password; show neither."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where it is installed (it is a dependency off Windows), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main)
        return
    uvloop.run(main)


def server_limits(server: ServerSettings) -> ServerLimits:
    """The `server:` settings as the HTTP engine takes them (it knows no settings)."""
    return ServerLimits(
        head_timeout=server.head_timeout, body_timeout=server.body_timeout,
        keepalive_timeout=server.keepalive_timeout, send_timeout=server.send_timeout,
        max_connections=server.max_connections,
    )


async def start_server(
    app: GatewayApp, settings: Settings, reuse_port: bool
) -> tuple[Callable[[], Awaitable[None]], int]:
    """Serve `app`; returns the graceful stop (stop accepting, let requests and streams in
    flight finish for up to the grace period, clean up) and the port bound (`:0`'s)."""
    try:
        server = await serve_fast(
            app, settings.host or None, settings.port, reuse_port=reuse_port,
            backlog=backlog_for(settings.server),
            # At most what the descriptor limit holds, so the 503 comes before EMFILE.
            limits=replace(server_limits(settings.server),
                           max_connections=connection_cap_for(
                               settings.server,
                               fds_per_stream(settings.upstream, endpoints_of(settings)))),
            max_body_bytes=settings.max_body_bytes,
        )
    except OSError as exc:  # a port in use, a host not here: one line, not a traceback
        raise SystemExit(f"azure-openai-proxy: cannot listen on {settings.listen}: "
                         f"{exc.strerror or exc}") from None

    async def stop() -> None:
        await server.shutdown(settings.shutdown_grace_seconds)

    return stop, int(server.sockets[0].getsockname()[1])


async def serve_forever(settings: Settings, source: SettingsSource | None, reuse_port: bool,
                        shared: tuple[SharedTables, int] | None = None,
                        parent: int | None = None,
                        seen: Signature | EllipsisType = ...,
                        latest: Settings | None = None) -> int | None:
    """Serve until SIGTERM/SIGINT, or until the parent process is gone; the signal that
    stopped it (None: the parent's exit). `shared`: the server's shared tables and this
    worker's number in them (`--workers N`); `parent`: a worker's descriptor that reads
    end-of-file once its parent has exited; `seen`: the config file's signature when
    `settings` (or `latest`) were read (`--watch-config`); `latest`: what the other
    workers reloaded since `settings` (a replacement's)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stopped_by: list[int] = []
    starting: list[GatewayApp] = []  # the app, once made: its start cut short by a stop

    def stopping(signum: int) -> None:
        stopped_by.append(signum)
        stop.set()
        for started in starting:
            started.abandon_start()  # not waiting for 100,000 keys to stop

    # First: a stop that comes while it starts (held since a worker's spawn: see
    # run_workers) ends it once it listens, as a stop does, not a traceback from
    # wherever it was.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping, signum)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
    app = create_app(settings)
    starting.append(app)
    limits, holds, context = (shared[0].open(shared[1]) if shared is not None
                              else (None, None, None))
    if limits is not None and app.gateway.limiter is not None:
        app.gateway.limiter.share(limits)
    if holds is not None and app.gateway.budgets is not None:
        app.gateway.budgets.share(SharedHolds(holds))
    if context is not None:  # kept across reloads with the owners (gateway/app.py)
        app.gateway.owners.chained.share(SharedContext(context))
    if latest is not None:  # before it listens: it serves what its siblings serve
        app.reload(latest)
        log.info("configuration reloaded (%d deployments), as the other workers did",
                 len(latest.deployments))
    finish, port = await start_server(app, settings, reuse_port)
    settle_heap()  # start-up's objects out of every later collection (runtime/heap.py)
    log.info("listening on http://%s (api_base %s, %d deployments)",
             _address(settings.host, port), settings.api_base or "/", len(settings.deployments))

    def reload() -> None:
        if source is None:
            return
        try:
            new = source.load()
        except ConfigError as exc:
            log.error("reload rejected, keeping the current configuration: %s", exc)
            return
        # A deployment the reload adds without a price is named, as at start (once: by
        # the first worker alone, and not again for one already named), when there is a
        # ledger to record it (governance is fixed at start: a reload cannot add one).
        named = set(_unpriced_warnings(app.gateway.settings))
        app.reload(new)
        if app.ledger is not None and (shared is None or shared[1] == 0):
            for warning in _unpriced_warnings(new):
                if warning not in named:
                    log.warning("config: %s", warning)
        log.info("configuration reloaded (%d deployments)", len(new.deployments))

    loop.add_signal_handler(signal.SIGHUP, reload)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # held since the start (cli.py)
    if parent is not None:
        _watch_parent(loop, parent, stop)
    watcher: asyncio.Task[None] | None = None
    # (a worker's reloads are its parent's SIGHUPs: the parent watches the file, see
    # LastLoaded.watch)
    if settings.watch_config and parent is None and source is not None and source.config_path:
        watcher = loop.create_task(ConfigWatcher(source.config_path, reload, seen=seen).run())
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    log.info("shutting down: finishing in-flight requests (up to %ss)",
             settings.shutdown_grace_seconds)
    await finish()
    return stopped_by[0] if stopped_by else None


def _address(host: str, port: int) -> str:
    """Where a server listens as its log says it: the port bound (`:0`'s, the kernel's
    choice, is the one a client needs), an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _watch_parent(loop: asyncio.AbstractEventLoop, parent: int, stop: asyncio.Event) -> None:
    """A worker whose parent was killed (SIGKILL, the OOM killer) would serve on alone:
    no one would pass it a signal, and it would hold the port beside the next server.
    The parent's end of `parent` closes when it exits: then drain and exit, as on SIGTERM."""
    def gone() -> None:
        loop.remove_reader(parent)
        log.warning("the parent process is gone: finishing in-flight requests, then exiting")
        stop.set()

    loop.add_reader(parent, gone)


def _worker(settings: Settings, source: SettingsSource | None, reuse_port: bool,
            shared: tuple[SharedTables, int] | None = None,
            seen: Signature | EllipsisType = ..., latest: Settings | None = None) -> int:
    """Serve here; the exit code of the stop: 130 for a SIGINT's, as a shell counts a
    Ctrl-C (a worker's is not read: its parent answers for the server)."""
    configure_logging(settings.log_level)
    parent = multiprocessing.parent_process()  # None: serving in the main process
    stopped: list[int | None] = []

    async def serve() -> None:
        stopped.append(await serve_forever(settings, source, reuse_port, shared,
                                           None if parent is None else parent.sentinel,
                                           seen, latest))

    run_loop(serve())
    return exit_code(stopped[0] if stopped else None, 0)


def run(settings: Settings, source: SettingsSource | None = None,
        seen: Signature | EllipsisType = ...) -> int:
    """`seen`: the config file's signature taken before `settings` were read from it: a
    change after it is reloaded (`--watch-config`), even one made while workers start."""
    configure_logging(settings.log_level)
    # Before listening; workers inherit the limit.
    prepare_process(settings.server, fds_per_stream(settings.upstream, endpoints_of(settings)))
    if settings.is_open_relay:
        log.warning("OPEN RELAY: server-side Azure keys are set and no client keys are; anyone "
                    "who can reach this gateway can use your Azure quota")
    for warning in [*_api_version_warnings(settings, _today()), *_unpriced_warnings(settings),
                    settings.admin_key_warning, settings.cleartext_warning,
                    settings.proxy_warning]:
        if warning:
            log.warning("config: %s", warning)
    refusal = port_refusal(settings.host, settings.port)
    if refusal is not None:
        log.error("%s", refusal)
        return 1
    if settings.workers == 1:
        return _worker(settings, source, False, None, seen)
    shared: SharedTables | None = None
    try:
        if settings.governance_enabled:
            # A stop while the tables are made, or removed, is held until they are (then
            # taken): let in amid them (cli.py's SIGTERM handler raises, before the
            # supervisor's is in place), it left some in /dev/shm until the next start.
            with _stops_held():
                shared = SharedTables.create(settings.workers)
        return run_workers(settings, source, shared, seen, _worker)
    finally:
        if shared is not None:
            with _stops_held():
                shared.remove()


@contextlib.contextmanager
def _stops_held() -> Iterator[None]:
    """SIGTERM and SIGINT held for the block, then taken (a held one: raised at its end)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
