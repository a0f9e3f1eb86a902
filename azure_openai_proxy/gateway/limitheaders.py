"""A virtual key's `x-ratelimit-*` headers on the answers it gets.

Azure sends its own `x-ratelimit-*` headers (the deployment's quota), and the gateway
relays them to clients with static keys. A virtual key's caller gets the limits that
apply to it, the key's and its team's, instead: Azure's are not relayed to it (gateway/
relay.py, by the key's id in the request's record) or removed from an answer made
otherwise (`apply_to`, `apply_lines`), and ours are set: on whole answers as head lines
made once (`Answer.head_lines`: `with_lines`, `apply_lines`), on streams, whose head is
written by the relay, by the request (`limited`: `FastRequest.head_lines`, or any other
request wrapped in a `LimitedRequest`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.errors import GatewayError, UpstreamHttpError
from azure_openai_proxy.governance.ratelimitheaders import parse_lines
from azure_openai_proxy.http.interface import Answer, Headers, HttpRequest, Reply, ResponseStream
from azure_openai_proxy.http.request import FastRequest

__all__ = ["LimitedRequest", "apply_lines", "apply_to", "limit_error", "limited", "with_lines",
           "without_limits"]

# A request's limits are its admission's `x-ratelimit-*` head lines (bytes:
# governance/ratelimitheaders.py `limit_lines`), as the limiter made them.
_PREFIX = "x-ratelimit-"
_FIRST_PREFIX = "\n" + _PREFIX


def without_limits(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if not k.lower().startswith(_PREFIX)}


def apply_to(reply: Reply, limits: Mapping[str, str]) -> Reply:
    """`reply` with Azure's rate-limit headers replaced by `limits` (whole answers; a
    stream's head went out through `LimitedRequest`)."""
    if isinstance(reply, Answer):
        headers = reply.headers
        # Whether a name starts with `x-ratelimit-` (any case), in three operations in C
        # where `without_limits` takes a Python step per header (names hold no newline).
        if _FIRST_PREFIX in ("\n" + "\n".join(headers)).lower():
            headers = reply.headers = without_limits(headers)
        headers.update(limits)
    return reply


# An answer's header names, in order -> those of them that are rate-limit headers
# (Azure's, to remove): an upstream sends the same dozen names on every answer, so each
# set is judged once. Bounded: the names are the upstream's.
_LIMIT_NAMES: BoundedCache[tuple[str, ...], tuple[str, ...]] = BoundedCache(256)


def apply_lines(reply: Reply, lines: bytes) -> Reply:
    """`apply_to` with the limits' head lines (`Answer.head_lines`): the same head, made
    without a dict of six strings that the engine formats and checks a line at a time,
    and Azure's limits found by one look-up of the answer's names."""
    if isinstance(reply, Answer):
        headers = reply.headers
        names = tuple(headers)
        azures = _LIMIT_NAMES.get(names)
        if azures is None:
            azures = _LIMIT_NAMES.put(names, tuple(
                name for name in names if name.lower().startswith(_PREFIX)))
        if azures:
            headers = reply.headers = dict(headers)  # a copy, as `without_limits` makes
            for name in azures:
                del headers[name]
        reply.head_lines = lines
    return reply


def with_lines(reply: Reply, lines: bytes) -> Reply:
    """`apply_lines` for an answer the relay made for a virtual key's request, which
    holds none of Azure's limits (`relay` did not relay them): the lines alone."""
    if type(reply) is Answer:
        reply.head_lines = lines
    return reply


def limited(request: HttpRequest, lines: bytes) -> HttpRequest:
    """`request` as the relay is to see a virtual key's request: a streamed answer's head
    carries the key's limits (`lines`). A `FastRequest` takes them itself (`head_lines`:
    no object made per request); any other is wrapped in a `LimitedRequest`."""
    if type(request) is FastRequest:
        request.head_lines = lines
        return request
    return LimitedRequest(request, lines)


def limit_error(exc: BaseException, lines: bytes) -> None:
    """An error answer Azure gave (`UpstreamHttpError`, raised, so never seen by
    `apply_lines`) carries the key's limits too, not Azure's: those are the shared
    deployment's quota, not what applies to the caller. Its other headers (Azure's
    `retry-after`) are kept. The gateway's own errors after the key's limits let the
    request through (every deployment cooling down, a timeout, a 502) carry them as
    well (`GatewayError.limit_headers`); anything else raised is left as it is."""
    if isinstance(exc, UpstreamHttpError):
        exc.replace_headers({**without_limits(exc.headers()), **parse_lines(lines)})
    elif isinstance(exc, GatewayError) and lines:
        exc.limit_headers = parse_lines(lines)


class LimitedRequest:
    """The client's request, as the relay sees it: a stream's head carries the key's
    limits (`lines`) instead of Azure's rate-limit headers. Everything else is the
    request's own. For a request of another engine than `FastServer` (`limited`)."""

    # No instance dict.
    __slots__ = ("_lines", "_request", "content_length", "headers", "method", "target")

    def __init__(self, request: HttpRequest, lines: bytes) -> None:
        self._request = request
        self._lines = lines
        self.method = request.method
        self.target = request.target
        self.headers: Headers = request.headers
        self.content_length = request.content_length

    @property
    def wrapped(self) -> HttpRequest:
        """The client's request itself: the relay pushes a stream to a `FastRequest`'s
        (its `stream` returns the wrapped request's, with the limits on its head)."""
        return self._request

    @property
    def extra_headers(self) -> dict[str, str] | None:
        return self._request.extra_headers

    @extra_headers.setter
    def extra_headers(self, value: dict[str, str] | None) -> None:
        self._request.extra_headers = value

    @property
    def path(self) -> str:
        return self._request.path

    @property
    def query_string(self) -> str:
        return self._request.query_string

    @property
    def has_body(self) -> bool:
        return self._request.has_body

    @property
    def peer(self) -> str | None:
        return self._request.peer

    async def read(self, limit: int) -> bytes:
        return await self._request.read(limit)

    def body_chunks(self) -> AsyncIterator[bytes]:
        return self._request.body_chunks()

    def stream(self, status: int, headers: Mapping[str, str]) -> ResponseStream:
        return self._request.stream(status, {**without_limits(headers),
                                             **parse_lines(self._lines)})
