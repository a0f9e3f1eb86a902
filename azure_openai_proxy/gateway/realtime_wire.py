"""The Realtime API's wire rules, as plain functions (`realtime_open.py` opens the
sessions, `realtime.py` relays them): which client URLs are realtime ones, where a
browser's key is, a deployment's realtime URL and api-version, whether a handshake would
be accepted, and the usage of a `response.done` event."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import orjson
from websockets.datastructures import Headers as WsHeaders
from websockets.http11 import Request as WsRequest
from websockets.server import ServerProtocol

from azure_openai_proxy.auth import presented_key
from azure_openai_proxy.errors import GatewayError, MalformedBody
from azure_openai_proxy.http.interface import HttpRequest
from azure_openai_proxy.settings import API_VERSION, DeploymentSettings

__all__ = [
    "REALTIME_API_VERSION",
    "RealtimeTarget",
    "ResponseDone",
    "UpgradeRequired",
    "credentials",
    "error_event",
    "event_of",
    "forwarded_subprotocols",
    "handshake_problem",
    "not_upgraded",
    "realtime_api_version",
    "realtime_target",
    "realtime_url",
    "response_ended",
    "response_requested",
    "response_usage",
    "upstream_error_id",
    "with_event_id",
]

# The api-version a dated deployment's realtime URL gets when its own cannot do realtime
# (realtime is a preview feature of the dated API, from 2024-10-01-preview).
REALTIME_API_VERSION = "2025-04-01-preview"
_REALTIME_SINCE = "2024-10-01"
_KEY_SUBPROTOCOL = "openai-insecure-api-key."


@dataclass(frozen=True, slots=True)
class RealtimeTarget:
    """A realtime URL as the client sent it: the model (or deployment) it names."""

    model: str | None
    native: bool  # Azure's dated path: `deployment=` names a deployment
    client_version: str | None = None


def realtime_target(path: str, query: str, api_base: str) -> RealtimeTarget | None:
    """The realtime request `path?query` makes, or None when it is not one."""
    base = "/" + api_base.strip("/") if api_base.strip("/") else ""
    stripped = path.rstrip("/")
    if stripped == "/openai/realtime":
        pairs = dict(parse_qsl(query))
        return RealtimeTarget(pairs.get("deployment") or pairs.get("model"), True,
                              pairs.get("api-version"))
    if stripped in {"/openai/v1/realtime", "/realtime", base + "/realtime"}:
        return RealtimeTarget(dict(parse_qsl(query)).get("model"), False)
    return None


def handshake_problem(target: str, headers: Iterable[tuple[str, str]]) -> str | None:
    """Why the engine's WebSocket handshake (`websockets`' own checks) would refuse this
    request, or None: judged before Azure is called, so a session is never opened for
    a handshake that then fails."""
    response = ServerProtocol().accept(WsRequest(target, WsHeaders(headers)))
    if response.status_code == 101:
        return None
    return bytes(response.body or b"").decode("utf-8", "replace").strip() or "Bad handshake."


class UpgradeRequired(GatewayError):
    """A realtime URL asked for without `Upgrade: websocket`: only a WebSocket is served
    there (RFC 9110 15.5.22: the answer names the protocol to switch to)."""

    status = 426
    type_ = "invalid_request_error"
    code = "upgrade_required"

    def headers(self) -> Mapping[str, str]:
        return {"upgrade": "websocket"}


def not_upgraded(request: HttpRequest, api_base: str) -> GatewayError | None:
    """The answer to a plain HTTP GET of a realtime URL (which no HTTP route serves),
    or None when `request` is not one. One that asked for a WebSocket the engine did
    not take (HTTP/1.0, or no `Connection: Upgrade`) is a bad handshake: a 400."""
    if request.method != "GET" or realtime_target(request.path, request.query_string,
                                                  api_base) is None:
        return None
    if request.headers.get("upgrade", "").lower() == "websocket":
        return MalformedBody("Not a valid WebSocket handshake: it is an HTTP/1.1 GET with "
                             "'Connection: Upgrade' (RFC 6455 4.1).")
    return UpgradeRequired("The Realtime API is a WebSocket: connect with "
                           "'Upgrade: websocket' (ws:// or wss://).")


def credentials(headers: Mapping[str, str]) -> Mapping[str, str]:
    """The headers a key is read from: the request's, or for a browser (which cannot
    set headers on a WebSocket) its `openai-insecure-api-key.KEY` subprotocol as a bearer."""
    if presented_key(headers) is not None:
        return headers
    for offered in headers.get("sec-websocket-protocol", "").split(","):
        offered = offered.strip()
        if offered.startswith(_KEY_SUBPROTOCOL) and len(offered) > len(_KEY_SUBPROTOCOL):
            return {"Authorization": "Bearer " + offered[len(_KEY_SUBPROTOCOL):]}
    return headers


_BETA_SUBPROTOCOL = "openai-beta."


def forwarded_subprotocols(headers: Mapping[str, str]) -> tuple[list[str], str | None]:
    """The subprotocols a client offered that go on to Azure, in its order: all but the
    browser's key (`openai-insecure-api-key.KEY`, which is never forwarded); and the
    `OpenAI-Beta` header a browser means by `openai-beta.VALUE` (it cannot set headers),
    unless it sent the header itself. (The handshake's own checks have judged the
    header's syntax.)"""
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
    forwarded = [p for p in offered if p and not p.startswith(_KEY_SUBPROTOCOL)]
    beta = None
    if "openai-beta" not in headers:
        beta = next((p[len(_BETA_SUBPROTOCOL):] for p in forwarded
                     if p.startswith(_BETA_SUBPROTOCOL) and len(p) > len(_BETA_SUBPROTOCOL)),
                    None)
    return forwarded, beta


def realtime_api_version(deployment: DeploymentSettings, client_version: str | None,
                         honour: bool) -> str | None:
    """The api-version of a dated deployment's realtime URL (None for the v1 API): a
    native client's own when honoured and able, else the deployment's if it is a
    realtime-capable preview, else `REALTIME_API_VERSION`."""
    if deployment.api == "v1":
        return "preview" if deployment.api_version == "preview" else None
    for version in ((client_version if honour else None), deployment.api_version):
        if (version and API_VERSION.match(version) and version.endswith("-preview")
                and version[:10] >= _REALTIME_SINCE):
            return version
    return REALTIME_API_VERSION


def realtime_url(deployment: DeploymentSettings, version: str | None) -> str:
    """The deployment's realtime WebSocket URL (ws:// for an http:// endpoint)."""
    endpoint = deployment.endpoint
    base = "wss://" + endpoint[8:] if endpoint.startswith("https://") else "ws://" + endpoint[7:]
    name = deployment.deployment_name
    if deployment.api == "v1":
        query = [("model", name)] + ([("api-version", version)] if version else [])
        return f"{base}/openai/v1/realtime?{urlencode(query, quote_via=quote)}"
    query = [("api-version", version or REALTIME_API_VERSION), ("deployment", name)]
    return f"{base}/openai/realtime?{urlencode(query, quote_via=quote)}"


@dataclass(frozen=True, slots=True)
class ResponseRequested:
    """A client's `response.create`: its `event_id` (echoed in an error about it) and
    the most output tokens it asks for (None: it does not say)."""

    event_id: str | None
    max_output: int | None


_MAX_OUTPUT_FIELDS = ("max_output_tokens", "max_response_output_tokens")


def response_requested(message: str | bytes) -> ResponseRequested | None:
    """The `response.create` event `message` is, or None for any other message. Parses
    only messages that may be one (most are audio appends)."""
    event = event_of(message, "response.create")
    if event is None:
        return None
    event_id = event.get("event_id")
    response = event.get("response")
    most = None
    if isinstance(response, dict):
        for name in _MAX_OUTPUT_FIELDS:
            value = response.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                most = value
                break
    return ResponseRequested(event_id if isinstance(event_id, str) else None, most)


def with_event_id(message: str | bytes, event_id: str) -> str | bytes:
    """`message` (a client event) with `event_id` as its `event_id`, as text or bytes
    like `message`: an error Azure sends about it then names it."""
    event = orjson.loads(message)
    event["event_id"] = event_id
    named = orjson.dumps(event)
    return named.decode() if isinstance(message, str) else named


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """A `response.done` event: its response's id and usage ({} when it has none: a
    response cancelled or failed before Azure counted it)."""

    response_id: str | None
    usage: dict[str, Any]


def response_ended(message: str | bytes) -> ResponseDone | None:
    """The `response.done` event `message` is, or None for any other message. Called for
    every message Azure sends: most are rejected by the one substring test, without a
    call."""
    if isinstance(message, str):
        if "response.done" not in message:
            return None
    elif b"response.done" not in message:
        return None
    event = event_of(message, "response.done")
    if event is None:
        return None
    response = event.get("response")
    if not isinstance(response, dict):
        return ResponseDone(None, {})
    response_id, usage = response.get("id"), response.get("usage")
    return ResponseDone(response_id if isinstance(response_id, str) else None,
                        usage if isinstance(usage, dict) else {})


def response_usage(message: str | bytes) -> dict[str, Any] | None:
    """The usage of a `response.done` event, or None for any other message or a
    `response.done` without usage."""
    done = response_ended(message)
    return (done.usage or None) if done is not None else None


def upstream_error_id(message: str | bytes) -> str | None:
    """The client event an `error` event from Azure is about (`error.event_id`), or None
    (another message, or an error about no event in particular)."""
    event = event_of(message, "error")
    error = event.get("error") if event is not None else None
    event_id = error.get("event_id") if isinstance(error, dict) else None
    return event_id if isinstance(event_id, str) else None


def event_of(message: str | bytes, kind: str) -> dict[str, Any] | None:
    """`message` decoded, when it is an event of type `kind`; only a message that names
    `kind` is parsed."""
    if isinstance(message, str):
        if kind not in message:
            return None
    elif kind.encode() not in message:
        return None
    try:
        event = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("type") != kind:
        return None
    return event


def error_event(message: str, code: str, kind: str = "server_error",
                event_id: str | None = None) -> str:
    """A realtime `error` event, as Azure and OpenAI send them; `event_id` names the
    client event it is about."""
    return orjson.dumps({"type": "error", "event_id": None, "error": {
        "type": kind, "code": code, "message": message, "param": None, "event_id": event_id,
    }}).decode()
