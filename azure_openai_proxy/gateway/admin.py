"""The admin API under `/admin/`: keys and teams, and the live state of their limits.

    POST   /admin/keys                 create (the secret is in this answer, and never again)
    GET    /admin/keys                 list
    GET    /admin/keys/{id}            show (an id, or a name that only one key has,
                                       percent-encoded: alice%20smith)
    PATCH  /admin/keys/{id}            change name, team, models, limits, expiry, blocked
    DELETE /admin/keys/{id}            revoke: the key is deleted and stops working
    POST   /admin/keys/{id}/rotate     a new secret; the old one works `grace_seconds` more
    POST/GET /admin/teams, GET/PATCH/DELETE /admin/teams/{id}
    GET    /admin/limits               each key's and team's buckets in this worker
    DELETE /admin/limits/{subject}     fill a key's or team's buckets again (key:ID, team:ID)

Only `Authorization: Bearer <admin_key>` opens it (compared in constant time); a client
key or a virtual key gets a 403, anything else a 401. Off (404 as an unknown route)
when no admin key is configured. Every write is read into the key directory (the rows it
changed) before it answers, so the change is in force in this worker when the client
reads the answer (other workers and processes follow within a poll). A DELETE with
fields in its body is a 400, not the deletion with the fields ignored.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

import orjson

from azure_openai_proxy.auth import Caller, presented_key
from azure_openai_proxy.errors import (
    AdminForbidden,
    AuthenticationFailed,
    BodyTooLarge,
    GatewayError,
    InvalidRequest,
    MalformedBody,
    MethodNotAllowed,
    NotFound,
    RouteNotFound,
)
from azure_openai_proxy.gateway.governed import reset_limits
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.governance.keys import (
    MAX_GRACE_SECONDS,
    expiry_note,
    key_view,
    parse_expiry,
    parse_limits,
    parse_models,
    parse_name,
    team_view,
)
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.http import interface as http
from azure_openai_proxy.http.interface import Answer, HttpRequest
from azure_openai_proxy.store.keys import KeyStore, StoreConflict, StoreNotFound

__all__ = ["AdminApi", "admin_route"]

_BODY_LIMIT = 1024 * 1024
_KEY_FIELDS = frozenset({"name", "team", "team_id", "models", "expires", "expires_at",
                         "blocked", "metadata", "rpm", "tpm", "max_parallel", "budget_usd",
                         "budget_period", "soft_budget_usd"})
_ROTATE_FIELDS = frozenset({"grace_seconds"})
_TEAM_FIELDS = frozenset({"name", "blocked", "metadata", "rpm", "tpm", "max_parallel",
                          "budget_usd", "budget_period", "soft_budget_usd"})


# A DELETE names what it deletes in its path, and may carry no body, an empty one or `{}`
# (clients that always send JSON). A body with fields is refused, not ignored: its sender
# meant something by them, and a revocation cannot be undone.
_DELETE_TAKES_NO_FIELDS = {
    "keys": "DELETE /admin/keys/{id} takes no fields: it revokes the key named in the path, "
            "for good. To block a key reversibly, PATCH it with {\"blocked\": true}.",
    "teams": "DELETE /admin/teams/{id} takes no fields: it deletes the team named in the path.",
    "limits": "DELETE /admin/limits/{subject} takes no fields: it fills the buckets of the "
              "key or team named in the path again, and clears its debt.",
}


class Conflict(GatewayError):
    status = 409
    type_ = "invalid_request_error"
    code = "conflict"


class AdminApi:
    """The admin routes of one worker, over its key directory and limiter."""

    def __init__(self, admin_key: Callable[[], str | None], directory: KeyDirectory,
                 limiter: RateLimiter, caller_of: Callable[[Mapping[str, str]], Caller],
                 clock: Callable[[], float] = time.time) -> None:
        # Read at each request: a reload that changes the key (or removes it: the admin
        # API is off, a 404) is in force here as in GET /admin/usage, which reads it too.
        self._admin_key = admin_key
        self._directory = directory
        self._limiter = limiter
        self._caller_of = caller_of
        self._clock = clock

    async def handle(self, request: HttpRequest) -> Answer:
        self.authorize(request.headers)
        # after "admin"; a key's or team's name is text a client percent-encodes in a
        # path ("alice smith" as alice%20smith, "R&D" as R%26D)
        parts = [unquote(part) for part in request.path.strip("/").split("/")[1:]]
        if parts == ["limits"]:
            _only(request, "GET")
            return _json({"object": "list", "data": self._limits()})
        if len(parts) == 2 and parts[0] == "limits":
            _only(request, "DELETE")
            await _no_fields(request, "limits")
            return _json(reset_limits(self._limiter, parts[1]))
        if not parts or parts[0] not in ("keys", "teams") or len(parts) > 3:
            raise RouteNotFound(f"Unknown admin route {request.path}.")
        kind, rest = parts[0], parts[1:]
        if len(rest) == 2 and not (kind == "keys" and rest[1] == "rotate"):
            raise RouteNotFound(f"Unknown admin route {request.path}.")
        if request.method == "DELETE":
            await _no_fields(request, kind)
        data = await _body(request) if request.method in ("POST", "PATCH") else {}
        if kind == "keys":
            return await self._keys(request.method, rest, data)
        return await self._teams(request.method, rest, data)

    def authorize(self, headers: Mapping[str, str]) -> None:
        """The admin key opens; a client or virtual key is refused (403), anything else
        is a 401. `GET /admin/usage` asks too (gateway/app.py)."""
        admin_key = self._admin_key()
        if admin_key is None:
            raise RouteNotFound("Unknown request URL. The admin API is off (no admin_key).")
        presented = presented_key(headers)
        if presented is None:
            raise AuthenticationFailed("The admin API needs 'Authorization: Bearer ADMIN_KEY'.")
        if hmac.compare_digest(presented.encode(), admin_key.encode()):
            return
        try:
            caller = self._caller_of(headers)
        except GatewayError:
            raise AuthenticationFailed("Incorrect admin key.") from None
        if caller.key is not None or caller.passthrough_key is None:
            raise AdminForbidden("This key may call the models, not the admin API.")
        raise AuthenticationFailed("Incorrect admin key.")

    # -- keys -------------------------------------------------------------------------

    async def _keys(self, method: str, rest: list[str], data: dict[str, Any]) -> Answer:
        """`method` as the client sent it: its name is what a 405 says."""
        now, verb = self._clock(), _as_get(method)
        if not rest:
            if verb == "GET":
                keys = await self._read(lambda s: s.list_keys())
                return _json({"object": "list", "data": [key_view(k) for k in keys]})
            if method != "POST":
                raise MethodNotAllowed(f"Method {method} is not allowed.", allow=("GET", "POST"))
            fields = _key_fields(data, now, creating=True)
            key, secret = await self._write(lambda s: s.create_key(
                fields.pop("name"), team=fields.pop("team_id", None), now=now,
                limits=Limits(**fields.pop("limits", {})), **fields))
            return _json({**key_view(key), "key": secret}, 201)
        ref = rest[0]
        if len(rest) == 2:
            if method != "POST":
                raise MethodNotAllowed(f"Method {method} is not allowed.", allow=("POST",))
            _no_unknown(data, _ROTATE_FIELDS)  # `grace: 24h` was read as no grace
            grace = data.get("grace_seconds", 0)
            if (isinstance(grace, bool) or not isinstance(grace, int | float)
                    or not 0 <= grace <= MAX_GRACE_SECONDS):
                raise InvalidRequest("grace_seconds must be a number from 0 to "
                                     f"{MAX_GRACE_SECONDS:.0f} (366 days).", param="grace_seconds")
            key, secret = await self._write(
                lambda s: s.rotate_key(ref, grace_seconds=float(grace), now=now))
            return _json({**key_view(key), "key": secret})
        if verb == "GET":
            return _json(key_view(await self._read(lambda s: s.key(ref))))
        if method == "PATCH":
            changes = _key_fields(data, now, creating=False)
            view = key_view(await self._write(lambda s: s.update_key(ref, changes)))
            if note := expiry_note(changes.get("expires_at"), now):  # expired now
                view["warning"] = note
            return _json(view)
        if method == "DELETE":
            key = await self._write(lambda s: s.delete_key(ref))
            return _json({"id": key.id, "object": "key", "deleted": True})
        raise MethodNotAllowed(f"Method {method} is not allowed.", allow=("GET", "PATCH", "DELETE"))

    # -- teams ------------------------------------------------------------------------

    async def _teams(self, method: str, rest: list[str], data: dict[str, Any]) -> Answer:
        now, verb = self._clock(), _as_get(method)
        if not rest:
            if verb == "GET":
                teams = await self._read(lambda s: s.list_teams())
                return _json({"object": "list", "data": [team_view(t) for t in teams]})
            if method != "POST":
                raise MethodNotAllowed(f"Method {method} is not allowed.", allow=("GET", "POST"))
            fields = _team_fields(data, creating=True)
            team = await self._write(lambda s: s.create_team(
                fields["name"], limits=Limits(**fields.get("limits", {})),
                metadata=fields.get("metadata"), now=now))
            return _json(team_view(team), 201)
        ref = rest[0]
        if verb == "GET":
            return _json(team_view(await self._read(lambda s: s.team(ref))))
        if method == "PATCH":
            changes = _team_fields(data, creating=False)
            return _json(team_view(await self._write(lambda s: s.update_team(ref, changes))))
        if method == "DELETE":
            team = await self._write(lambda s: s.delete_team(ref))
            return _json({"id": team.id, "object": "team", "deleted": True})
        raise MethodNotAllowed(f"Method {method} is not allowed.", allow=("GET", "PATCH", "DELETE"))

    # -- the store --------------------------------------------------------------------

    async def _read(self, operation: Callable[[KeyStore], Any]) -> Any:
        try:
            return await self._directory.call(operation)
        except StoreNotFound as exc:
            raise NotFound(str(exc), code="not_found") from None
        except StoreConflict as exc:
            raise Conflict(str(exc)) from None
        except Exception as exc:  # the database itself failed: a 503, never a traceback
            raise _Unavailable(f"The key store is unavailable ({type(exc).__name__}).") from None

    async def _write(self, operation: Callable[[KeyStore], Any]) -> Any:
        result = await self._read(operation)
        await self._directory.refresh()  # the write's rows (the store's change log)
        return result

    def _limits(self) -> list[dict[str, Any]]:
        return [{"subject": name, **state} for name, state in self._limiter.snapshot().items()]


class _Unavailable(GatewayError):
    status = 503
    code = "store_unavailable"


def admin_route(path: str) -> str:
    """An admin path's shape, for the access log and the metrics' route label: never
    the id or name in it (bounded, and a key's name is the operator's)."""
    parts = path.strip("/").split("/")[1:]
    if len(parts) == 1 and parts[0] in ("keys", "teams", "limits", "usage"):
        return "admin/" + parts[0]
    if len(parts) == 2 and parts[0] in ("keys", "teams", "limits"):
        return f"admin/{parts[0]}/{{id}}"
    if len(parts) == 3 and parts[0] == "keys" and parts[2] == "rotate":
        return "admin/keys/{id}/rotate"
    return "admin/-"


def _as_get(method: str) -> str:
    """HEAD is a GET whose body the engine leaves out (RFC 9110 9.3.2), as on every route
    the gateway answers itself. Only for choosing what to do: a refusal names the method
    the client sent (a HEAD on a POST-only route is a 405 "Method HEAD")."""
    return "GET" if method == "HEAD" else method


def _only(request: HttpRequest, method: str) -> None:
    if _as_get(request.method) != method:
        raise MethodNotAllowed(f"Method {request.method} is not allowed.", allow=(method,))


async def _no_fields(request: HttpRequest, kind: str) -> None:
    """A DELETE's body: none, empty or `{}`; fields are a 400 (`_DELETE_TAKES_NO_FIELDS`)."""
    data = await _body(request)
    if data:
        raise InvalidRequest(_DELETE_TAKES_NO_FIELDS[kind], param=sorted(data)[0])


async def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        raw = await request.read(_BODY_LIMIT)
    except http.BodyTooLarge:  # a 413, as a model request's (a 400 reads as malformed)
        raise BodyTooLarge(f"The admin request body is larger than the limit of "
                           f"{_BODY_LIMIT} bytes.") from None
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedBody("The body must be a JSON object.") from None
    if not isinstance(data, dict):
        raise MalformedBody("The body must be a JSON object.")
    if isinstance(data.get("metadata"), dict):  # read again, its integers exact: orjson
        # reads one past 64 bits as a float, so it was stored rounded, not refused
        with contextlib.suppress(RecursionError, ValueError):  # (too deep: refused by its
            # nesting; json refusing what orjson read: none known, orjson's then)
            data["metadata"] = json.loads(raw)["metadata"]
    return data


def _key_fields(data: Mapping[str, Any], now: float, *, creating: bool) -> dict[str, Any]:
    """The store's keyword arguments from a key's JSON (ValueError -> 400)."""
    _no_unknown(data, _KEY_FIELDS)
    out: dict[str, Any] = {}
    try:
        if creating or "name" in data:
            out["name"] = parse_name(data.get("name"))
        for field in ("team", "team_id"):
            if field in data:
                team = data[field]
                if team is not None and not isinstance(team, str):
                    raise ValueError(f"{field} must be a team's id or name")
                out["team_id"] = team
        if "models" in data:
            out["models"] = parse_models(data["models"])
        for field in ("expires", "expires_at"):
            if field in data:
                try:
                    out["expires_at"] = parse_expiry(data[field], now, creating=creating)
                except ValueError as exc:
                    raise InvalidRequest(str(exc), param=field) from None
        _common_fields(data, out)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return out


def _common_fields(data: Mapping[str, Any], out: dict[str, Any]) -> None:
    """What keys and teams both carry: blocked, metadata, limits (ValueError if bad)."""
    if "blocked" in data:
        if not isinstance(data["blocked"], bool):
            raise ValueError("blocked must be true or false")
        out["blocked"] = data["blocked"]
    if "metadata" in data:
        out["metadata"] = _metadata(data["metadata"])
    limits = parse_limits(data)
    if limits:
        out["limits"] = limits


def _team_fields(data: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    _no_unknown(data, _TEAM_FIELDS)
    out: dict[str, Any] = {}
    try:
        if creating or "name" in data:
            out["name"] = parse_name(data.get("name"))
        _common_fields(data, out)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return out


def _no_unknown(data: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidRequest(f"Unknown field(s): {', '.join(unknown)}.", param=unknown[0])


def _metadata(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("metadata must be a JSON object")
    try:  # what the store will write: orjson reads 1,024 levels and writes 254
        orjson.dumps(value)
    except TypeError:  # orjson: JSONEncodeError, or a plain TypeError past 254 levels
        raise ValueError("metadata must be a JSON object nested at most 254 levels "
                         "deep, its integers within 64 bits") from None
    return value


def _json(data: Any, status: int = 200) -> Answer:
    try:
        body = orjson.dumps(data)
    except TypeError:  # metadata as deep as orjson writes (254), nested deeper in a view
        body = json.dumps(data, separators=(",", ":")).encode()
    return Answer(status, {"content-type": "application/json"}, body)

