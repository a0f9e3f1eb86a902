"""Prometheus metrics for `GET /metrics`, and a no-op stand-in when `metrics: false`.

`Metrics` is what the pipeline and the balancer call; `PrometheusMetrics` records into a
per-app `CollectorRegistry` (never the process-global one, so two apps in one process,
as in the tests, do not share counters). The per-request series (requests, durations,
time to first byte, tokens, in flight) are plain integers and lists that only the worker's
event loop touches, turned into metric families when scraped: prometheus_client's own
metrics take a lock on every update, and eleven of those per request cost measurable
throughput. Per-deployment live state (in flight, cooldown, circuit, quota) is also read
only when scraped.

Metric names (prefix `azure_openai_proxy_`):

    requests_total{route,model,deployment,endpoint,status}       counter
    request_duration_seconds{route,model}                        histogram, whole request
    upstream_ttfb_seconds{deployment,endpoint}                   histogram, to response headers
    in_flight_requests                                           gauge
    retries_total{reason} / failovers_total{reason}              counters
    cooldowns_total{deployment,endpoint}                         counter (429s honoured)
    circuit_opened_total{deployment,endpoint}                    counter
    tokens_total{model,deployment,endpoint,direction="in"|"out"} counter
    deployment_in_flight / deployment_cooldown_seconds / deployment_circuit_state
      (0 closed, 1 half-open, 2 open) / deployment_caller_circuits_open (callers kept off
      by their own failures; the deployment serves the others) / deployment_latency_seconds /
      deployment_remaining_tokens / deployment_remaining_requests  gauges, at scrape time
    realtime_sessions_open                                       gauge
    realtime_sessions_total{outcome="opened"|"refused",status}   counter, sessions asked for
    realtime_events_total{direction="to_azure"|"to_client"}      counter, messages relayed
    ledger_*: the usage ledger writer's failures, restarts and fallbacks (ledgerseries.py)

The realtime series are plain integers too (`RealtimeSeries`): a session adds to them
itself, one attribute increment per message relayed.

`GET /metrics` needs no key, and at the label cap a render is about 1 MB that blocks the
worker's loop for 0.1-0.2 s: `Exposition` gives scrapes within a second of a render that
render again, so a flood of scrapes costs one render a second, not one each.
"""

from __future__ import annotations

import contextlib
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from azure_openai_proxy.balancing import DeploymentState
from azure_openai_proxy.errors import ModelNotFound
from azure_openai_proxy.observability.ledgerseries import LedgerSeries
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import RoutingTable

__all__ = ["Exposition", "Metrics", "NoMetrics", "PrometheusMetrics", "RealtimeSeries",
           "metrics_for"]

_PREFIX = "azure_openai_proxy_"
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_CIRCUIT_VALUE = {"closed": 0.0, "half-open": 1.0, "open": 2.0}
# Default-endpoint mode accepts model names chosen by clients (and the '.'/':' fallback
# many spellings of a configured one); past this many of their label sets new ones are
# counted under model "_other" so a client cannot grow the registry forever. The label
# sets of configured deployments called by configured names (and of the default
# endpoint's own, `default`, called by no name) are not counted: a client's names
# filling the cap must not fold the operator's own series into "_other".
_MAX_LABEL_SETS = 500
_MAX_DYNAMIC_GAUGES = 50
_REUSE_SECONDS = 1.0  # a render answers the scrapes this long after it (Prometheus: 15-60 s)
_BATCH = 16  # finished requests counted at once: small, as the one that fills it waits

StateSource = Callable[[], Iterable[DeploymentState]]
# The routing table in force (a reload's new one): its configured deployments, and the
# default endpoint's own (`default`: its files, batches...), are never folded.
ConfiguredSource = Callable[[], RoutingTable | None]


class RealtimeSeries:
    """The Realtime API's sessions and messages (`gateway/realtime.py` adds to them),
    rendered when scraped."""

    __slots__ = ("open", "outcomes", "to_azure", "to_client")

    def __init__(self) -> None:
        self.open = 0  # sessions open now
        self.outcomes: dict[tuple[str, str], int] = {}  # (outcome, status) -> sessions
        self.to_azure = 0  # messages relayed from clients to Azure
        self.to_client = 0  # and from Azure to clients

    def asked(self, status: int) -> None:
        """A session was asked for: opened (101), or refused with `status`."""
        labels = ("opened" if status == 101 else "refused", str(status))
        self.outcomes[labels] = self.outcomes.get(labels, 0) + 1

    def collect(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily(_PREFIX + "realtime_sessions_open",
                                     "Realtime sessions open.")
        sessions.add_metric([], self.open)
        yield sessions
        asked = CounterMetricFamily(_PREFIX + "realtime_sessions",
                                    "Realtime sessions asked for, by outcome.",
                                    labels=["outcome", "status"])
        for labels, count in self.outcomes.items():
            asked.add_metric(list(labels), count)
        yield asked
        events = CounterMetricFamily(_PREFIX + "realtime_events",
                                     "Realtime messages relayed, by direction.",
                                     labels=["direction"])
        events.add_metric(["to_azure"], self.to_azure)
        events.add_metric(["to_client"], self.to_client)
        yield events

    def describe(self) -> Iterable[Metric]:
        return ()


class Metrics(Protocol):
    realtime: RealtimeSeries
    ledger: LedgerSeries  # given the app's ledger writer to watch

    @property
    def in_flight(self) -> int:
        """Requests begun and not finished (0 where not counted)."""

    def request_started(self) -> None: ...

    def request_finished(self, record: RequestRecord) -> None: ...

    def retried(self, reason: str, failover: bool) -> None: ...

    def cooled_down(self, deployment: str, endpoint: str) -> None: ...

    def circuit_opened(self, deployment: str, endpoint: str) -> None: ...

    def render(self) -> tuple[bytes, str]: ...


class NoMetrics:
    """`metrics: false`: every call does nothing."""

    def __init__(self) -> None:
        self.realtime = RealtimeSeries()  # counted, never shown
        self.ledger = LedgerSeries()

    @property
    def in_flight(self) -> int:
        return 0

    def request_started(self) -> None:
        pass

    def request_finished(self, record: RequestRecord) -> None:
        pass

    def retried(self, reason: str, failover: bool) -> None:
        pass

    def cooled_down(self, deployment: str, endpoint: str) -> None:
        pass

    def circuit_opened(self, deployment: str, endpoint: str) -> None:
        pass

    def render(self) -> tuple[bytes, str]:
        return b"", CONTENT_TYPE_LATEST


class _DeploymentCollector:
    """Per-deployment live state, read from the current pool state at scrape time."""

    def __init__(self, states: StateSource, clock: Callable[[], float]) -> None:
        self._states = states
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        labels = ["deployment", "endpoint"]
        families = {
            name: GaugeMetricFamily(_PREFIX + name, doc, labels=labels)
            for name, doc in (
                ("deployment_in_flight", "Requests in flight to the deployment."),
                ("deployment_cooldown_seconds", "Seconds left of the deployment's 429 cooldown."),
                ("deployment_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open."),
                ("deployment_caller_circuits_open",
                 "Callers whose own failures keep them off the deployment (others are served)."),
                ("deployment_latency_seconds", "Recent (EWMA) time to response headers."),
                ("deployment_remaining_tokens", "Last x-ratelimit-remaining-tokens seen."),
                ("deployment_remaining_requests", "Last x-ratelimit-remaining-requests seen."),
            )
        }
        now = self._clock()
        dynamic = 0
        pool = self._states()
        configured: Callable[[Any], bool] = getattr(pool, "is_configured", lambda key: True)
        for state in pool:
            if not configured(state.key):
                dynamic += 1
                if dynamic > _MAX_DYNAMIC_GAUGES:
                    continue  # client-named deployments: a bounded sample, not thousands
            values = [state.key.deployment, state.key.host]
            families["deployment_in_flight"].add_metric(values, state.in_flight)
            families["deployment_cooldown_seconds"].add_metric(
                values, max(0.0, state.cooldown_until - now)
            )
            families["deployment_circuit_state"].add_metric(
                values, _CIRCUIT_VALUE[state.breaker.state]
            )
            families["deployment_caller_circuits_open"].add_metric(
                values, state.callers.open_count(now) if state.callers else 0
            )
            if state.latency_ms is not None:
                families["deployment_latency_seconds"].add_metric(values, state.latency_ms / 1000)
            if state.tokens is not None:
                families["deployment_remaining_tokens"].add_metric(values, state.tokens.remaining)
            if state.requests is not None:
                families["deployment_remaining_requests"].add_metric(values, state.requests.remaining)
        yield from families.values()

    def describe(self) -> Iterable[Metric]:
        return ()


class _Histogram:
    """Counts per bucket (`le` inclusive, the last one +Inf) and the sum of what was seen."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(_LATENCY_BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(str, _LATENCY_BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


class _RequestSeries:
    """The per-request series, as plain values; `collect()` renders them when scraped."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.requests: dict[tuple[str, str, str, str, str], int] = {}
        self.durations: dict[tuple[str, str], _Histogram] = {}
        self.ttfb: dict[tuple[str, str], _Histogram] = {}
        self.tokens: dict[tuple[str, str, str, str], int] = {}

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(_PREFIX + "in_flight_requests", "Requests in progress.")
        in_flight.add_metric([], self.in_flight)
        yield in_flight
        requests = CounterMetricFamily(_PREFIX + "requests", "Requests answered.",
                                       labels=["route", "model", "deployment", "endpoint", "status"])
        for request_labels, count in self.requests.items():
            requests.add_metric(list(request_labels), count)
        yield requests
        yield _histogram_family("request_duration_seconds", "Whole request, to the last byte.",
                                ["route", "model"], self.durations)
        yield _histogram_family("upstream_ttfb_seconds", "Upstream time to response headers.",
                                ["deployment", "endpoint"], self.ttfb)
        tokens = CounterMetricFamily(_PREFIX + "tokens", "Tokens used, from Azure's usage.",
                                     labels=["model", "deployment", "endpoint", "direction"])
        for token_labels, count in self.tokens.items():
            tokens.add_metric(list(token_labels), count)
        yield tokens

    def describe(self) -> Iterable[Metric]:
        return ()


def _histogram_family(
    name: str, doc: str, labels: list[str], series: dict[tuple[str, str], _Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(_PREFIX + name, doc, labels=labels)
    for values, histogram in series.items():
        family.add_metric(list(values), histogram.cumulative(), histogram.total)
    return family


# What one label set of requests updates: its counter's key, its duration histogram,
# and (when a deployment answered) its ttfb histogram and its two token counters' keys.
_Bound = tuple[
    tuple[str, str, str, str, str], _Histogram, "_Histogram | None",
    "tuple[str, str, str, str] | None", "tuple[str, str, str, str] | None",
]


class PrometheusMetrics:
    def __init__(self, states: StateSource, clock: Callable[[], float],
                 configured: ConfiguredSource = lambda: None) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=False)
        self._series = _RequestSeries()
        registry.register(self._series)
        self._retries = Counter(_PREFIX + "retries", "Attempts after a failed one.",
                                ["reason"], registry=registry)
        self._failovers = Counter(_PREFIX + "failovers", "Retries on another deployment.",
                                  ["reason"], registry=registry)
        self._cooldowns = Counter(_PREFIX + "cooldowns", "429 cooldowns started or extended.",
                                  ["deployment", "endpoint"], registry=registry)
        self._opened = Counter(_PREFIX + "circuit_opened", "Circuit breakers opened.",
                               ["deployment", "endpoint"], registry=registry)
        registry.register(_DeploymentCollector(states, clock))
        self.realtime = RealtimeSeries()
        registry.register(self.realtime)
        self.ledger = LedgerSeries()
        registry.register(self.ledger)
        self._bound: dict[tuple[Any, ...], _Bound] = {}
        self._chosen = 0  # label sets in `_bound` that names clients chose made
        self._deployments_seen: set[tuple[str, str]] = set()
        self._configured_source = configured
        self._configured = _Configured(None)
        # Finished requests not yet counted: counted in batches (and before every scrape),
        # which costs measurably less than one at a time between two requests.
        self._pending: list[RequestRecord] = []

    @property
    def in_flight(self) -> int:
        return self._series.in_flight

    def request_started(self) -> None:
        self._series.in_flight += 1

    def request_finished(self, record: RequestRecord) -> None:
        self._series.in_flight -= 1
        pending = self._pending
        pending.append(record)
        if len(pending) >= _BATCH:
            self._count_pending()

    def _count_pending(self) -> None:
        pending, self._pending = self._pending, []
        for record in pending:
            self._count(record)

    def _count(self, record: RequestRecord) -> None:
        series = self._series
        key = (record.route, record.model, record.deployment, record.endpoint, record.status)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bind(key)
        requests, duration, ttfb, tokens_in, tokens_out = bound
        series.requests[requests] += 1
        # `_Histogram.observe` inline (a call per histogram per request, twice a request)
        seconds = record.total_ms / 1000
        duration.counts[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        duration.total += seconds
        upstream_ms = record.upstream_ms
        if ttfb is not None and upstream_ms is not None:
            seconds = upstream_ms / 1000
            ttfb.counts[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
            ttfb.total += seconds
        if record.usage and tokens_in is not None and tokens_out is not None:
            prompt, completion = record.tokens()
            if prompt is not None:
                series.tokens[tokens_in] += prompt
            if completion is not None:
                series.tokens[tokens_out] += completion

    def _bind(self, key: tuple[Any, ...]) -> _Bound:
        """The series a label set updates. Called once per label set, and for every
        request of one past the cap (not kept)."""
        route, model, deployment, endpoint, status = key
        model_label = model or ""
        deployment_label, endpoint_label = deployment or "", _host(endpoint)
        configured = self._known()
        own_deployment = deployment is None or configured.has(endpoint, deployment)
        chosen = not (own_deployment and (model is None or model in configured.names))
        if chosen and self._chosen >= _MAX_LABEL_SETS:
            # In default-endpoint mode the deployment name is the client's model name too.
            model_label = "_other"
            if not own_deployment:
                deployment_label = "_other"
        series = self._series
        requests = (route, model_label, deployment_label, endpoint_label, str(status))
        series.requests.setdefault(requests, 0)
        duration = series.durations.setdefault((route, model_label), _Histogram())
        ttfb = tokens_in = tokens_out = None
        if deployment:
            ttfb = series.ttfb.setdefault((deployment_label, endpoint_label), _Histogram())
            tokens_in = (model_label, deployment_label, endpoint_label, "in")
            tokens_out = (model_label, deployment_label, endpoint_label, "out")
            series.tokens.setdefault(tokens_in, 0)
            series.tokens.setdefault(tokens_out, 0)
        bound: _Bound = (requests, duration, ttfb, tokens_in, tokens_out)
        if not chosen:
            self._bound[key] = bound
        elif self._chosen < _MAX_LABEL_SETS:
            self._bound[key] = bound
            self._chosen += 1
        return bound

    def _known(self) -> _Configured:
        """The configured deployments and names, made again after a reload."""
        table = self._configured_source()
        if table is not self._configured.table:
            self._configured = _Configured(table)
        return self._configured

    def retried(self, reason: str, failover: bool) -> None:
        self._retries.labels(reason).inc()
        if failover:
            self._failovers.labels(reason).inc()

    def cooled_down(self, deployment: str, endpoint: str) -> None:
        self._cooldowns.labels(*self._deployment_labels(deployment, endpoint)).inc()

    def circuit_opened(self, deployment: str, endpoint: str) -> None:
        self._opened.labels(*self._deployment_labels(deployment, endpoint)).inc()

    def _deployment_labels(self, deployment: str, endpoint: str) -> tuple[str, str]:
        """Bounded like the request labels: past the cap, new deployments that clients
        named are `_other`; configured ones keep their names."""
        labels = (deployment, _host(endpoint))
        if labels not in self._deployments_seen and not self._known().has(endpoint, deployment):
            if len(self._deployments_seen) >= _MAX_LABEL_SETS:
                return "_other", labels[1]
            self._deployments_seen.add(labels)
        return labels

    def render(self) -> tuple[bytes, str]:
        self._count_pending()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Exposition:
    """What `GET /metrics` answers: a render, reused by the scrapes that come within
    `_REUSE_SECONDS` after it (by the real clock: a test's fake one may stand still)."""

    __slots__ = ("_metrics", "_rendered", "_until")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._rendered: tuple[bytes, str] = (b"", CONTENT_TYPE_LATEST)
        self._until = -1.0

    def render(self) -> tuple[bytes, str]:
        if time.monotonic() >= self._until:
            self._rendered = self._metrics.render()
            # from the render's end: a render of 0.2 s is at most a sixth of the loop
            self._until = time.monotonic() + _REUSE_SECONDS
        return self._rendered


class _Configured:
    """What the configuration names: its deployments (endpoint, deployment name), the
    default endpoint's own (a request that names no model: a file, a batch), and the
    names a client may call the configured ones by (their model and deployment names)."""

    __slots__ = ("keys", "names", "table")

    def __init__(self, table: RoutingTable | None) -> None:
        self.table = table
        deployments = [d for pool in table.pools for d in pool.deployments] if table else []
        self.names = frozenset(name for d in deployments
                               for name in (d.model_name, d.deployment_name))
        if table is not None:
            with contextlib.suppress(ModelNotFound):  # no default endpoint
                deployments += table.resolve_home().deployments
        self.keys = frozenset((d.endpoint, d.deployment_name) for d in deployments)

    def has(self, endpoint: str | None, deployment: str) -> bool:
        return (endpoint, deployment) in self.keys


def _host(endpoint: str | None) -> str:
    if not endpoint:
        return ""
    return endpoint.partition("://")[2].partition("/")[0] or endpoint


def metrics_for(enabled: bool, states: StateSource, clock: Callable[[], float],
                configured: ConfiguredSource = lambda: None) -> Metrics:
    return PrometheusMetrics(states, clock, configured) if enabled else NoMetrics()
