"""What one process can hold, settled before it listens (issue 15).

- The listen backlog: the configured `server.backlog`, bounded by the kernel's
  `net.core.somaxconn` (the kernel would cut it silently; we say so at debug level).
  Many clients connecting at once (a burst of streams) overflow a short queue, and a
  connection attempt the queue drops is retried by the client a second or more later.
- The descriptor limit: the soft `RLIMIT_NOFILE` raised to the hard one, since every
  stream holds two descriptors (the client's socket and its upstream's; one over HTTP/2,
  whose streams share a few upstream connections) and the usual soft
  limit (1024) is a few hundred streams.
- A warning at start when even that limit cannot hold `server.max_connections`, and the
  cap lowered to what it can hold: the connections past it would fail at accept (EMFILE,
  a reset) instead of getting the cap's 503.

`prepare_process` raises the limit and warns; `backlog_for` is the backlog to listen
with. The helpers take their inputs as arguments (the somaxconn file, the limits) so
they are tested with plain data.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from azure_openai_proxy.settings import ServerSettings, Settings, UpstreamSettings

__all__ = ["FDS_PER_CONNECTION", "FD_MARGIN", "FdLimit", "backlog_for", "backlog_note",
           "connection_cap", "connection_cap_for", "endpoints_of", "fd_warning", "fds_needed",
           "fds_per_stream",
           "listen_backlog", "prepare_process", "raise_fd_limit", "somaxconn"]

log = logging.getLogger("azure_openai_proxy")

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
NR_OPEN = Path("/proc/sys/fs/nr_open")
# A relayed stream: the client's socket and the upstream connection it uses.
FDS_PER_CONNECTION = 2
# Everything else a worker keeps open: the listening socket, epoll, the loop's self-pipe,
# stdio, log files, the usage ledger's database and its spool, DNS lookups.
FD_MARGIN = 64


@dataclass(frozen=True, slots=True)
class FdLimit:
    """The soft descriptor limit before and after `raise_fd_limit`, and the hard one."""

    before: int
    soft: int
    hard: int


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def somaxconn(path: Path = SOMAXCONN) -> int | None:
    """The kernel's cap on a listen backlog; None where it cannot be read (not Linux)."""
    value = _read_int(path)
    return value if value is not None and value > 0 else None


def listen_backlog(configured: int, kernel_max: int | None) -> int:
    """The backlog to ask for: the configured one, at most the kernel's cap."""
    return configured if kernel_max is None else min(configured, kernel_max)


def fds_per_stream(upstream: UpstreamSettings, endpoints: Iterable[str] = ()) -> int:
    """Descriptors a relayed stream holds: the client's socket, and its upstream
    connection's unless HTTP/2 multiplexes the streams on a few. Under `http2: auto`
    only https origins are offered HTTP/2, so one per stream only when every configured
    endpoint (`endpoints`: the deployments' and the default one) is https; one http://
    endpoint and its streams hold two, so two it is (its streams could be any share).
    An https origin that does not negotiate h2 is served over HTTP/1.1 anyway: the cap is
    then optimistic, and the descriptors past it fail at accept, as before the cap existed
    (Azure offers h2). So does a reload that adds an http:// endpoint (counted at start)."""
    # No endpoint given: counted as an http:// one (two a stream unless `http2: true`).
    schemes = {endpoint.partition(":")[0] for endpoint in endpoints} or {"http"}
    shared = all(upstream.http2_for(scheme) for scheme in schemes)
    return 1 if shared else FDS_PER_CONNECTION


def endpoints_of(settings: Settings) -> list[str]:
    """Every endpoint requests may go to: the deployments', and env mode's default."""
    endpoints = [deployment.endpoint for deployment in settings.deployments]
    return endpoints + ([settings.default_endpoint] if settings.default_endpoint else [])


def fds_needed(max_connections: int, per_stream: int = FDS_PER_CONNECTION) -> int:
    """Descriptors one worker needs to hold `max_connections` relayed streams."""
    return max_connections * per_stream + FD_MARGIN


def connection_cap(max_connections: int, soft: int, per_stream: int = FDS_PER_CONNECTION) -> int:
    """The connections one worker takes before answering 503: `max_connections`, or
    fewer when `soft` descriptors cannot hold that many streams. Past the descriptors, a
    new connection would fail at accept (the client sees a reset) instead of getting the
    cap's 503, so the cap comes first."""
    if soft == resource.RLIM_INFINITY or soft >= fds_needed(max_connections, per_stream):
        return max_connections
    return max(1, min(max_connections, (soft - FD_MARGIN) // per_stream))


def fd_warning(soft: int, max_connections: int,
               per_stream: int = FDS_PER_CONNECTION) -> str | None:
    """The start-up warning when `soft` descriptors cannot hold the connection cap."""
    if soft == resource.RLIM_INFINITY or soft >= fds_needed(max_connections, per_stream):
        return None
    needed = fds_needed(max_connections, per_stream)
    each = "two per stream" if per_stream == 2 else "one per stream"
    cap = connection_cap(max_connections, soft, per_stream)
    return (f"the descriptor limit ({soft}) cannot hold server.max_connections "
            f"({max_connections}: about {needed} descriptors, {each}); "
            f"each worker answers 503 past {cap} "
            "connections instead. Raise the hard limit (ulimit -Hn, LimitNOFILE=, docker "
            "--ulimit nofile=) or lower max_connections")


def raise_fd_limit(nr_open: Path = NR_OPEN) -> FdLimit:
    """Raise the soft `RLIMIT_NOFILE` to the hard limit (an unlimited hard limit: to the
    kernel's `fs.nr_open`, the most a process may have). Never fails: a refusal leaves
    the limit as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = _read_int(nr_open) or soft
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.debug("could not raise the descriptor limit from %d to %d: %s", soft, target, exc)
            return FdLimit(soft, soft, hard)
        return FdLimit(soft, target, hard)
    return FdLimit(soft, soft, hard)


def prepare_process(server: ServerSettings, per_stream: int = FDS_PER_CONNECTION) -> FdLimit:
    """Once per gateway, before it listens or starts workers (they inherit the limit):
    raise the descriptor limit; warn when it cannot hold the connection cap."""
    limit = raise_fd_limit()
    log.debug("descriptor limit: soft %d (was %d), hard %d", limit.soft, limit.before, limit.hard)
    warning = fd_warning(limit.soft, server.max_connections, per_stream)
    if warning is not None:
        log.warning("%s", warning)
    return limit


def connection_cap_for(server: ServerSettings, per_stream: int = FDS_PER_CONNECTION) -> int:
    """`connection_cap` under this process's descriptor limit (a worker's, inherited)."""
    return connection_cap(server.max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                          per_stream)


def backlog_note(backlog: int) -> str:
    """For check-config: what the kernel makes of `backlog` ("" when it keeps it)."""
    kernel_max = somaxconn()
    if listen_backlog(backlog, kernel_max) < backlog:
        return f" (net.core.somaxconn caps it at {kernel_max})"
    return ""


def backlog_for(server: ServerSettings) -> int:
    """The listen backlog to use: `server.backlog`, bounded by `net.core.somaxconn`."""
    backlog = listen_backlog(server.backlog, somaxconn())
    if backlog < server.backlog:
        log.debug("listen backlog %d, bounded by net.core.somaxconn (server.backlog %d)",
                  backlog, server.backlog)
    return backlog
