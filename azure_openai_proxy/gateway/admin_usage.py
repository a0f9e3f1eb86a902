"""GET /admin/usage?by=key&since=7d[&until=...][&format=json|csv]: the ledger's totals,
grouped by key, team, model, deployment or day.

The admin API needs `admin_key` (config or AZURE_OPENAI_PROXY_ADMIN_KEY) as
`Authorization: Bearer`; unset, the admin API is off (404). A client key is never an
admin key. The query runs on a thread with its own connection, off the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import sqlite3
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl

from azure_openai_proxy.auth import presented_key
from azure_openai_proxy.errors import (
    AuthenticationFailed,
    DatabaseUnavailable,
    InvalidRequest,
    RouteNotFound,
)
from azure_openai_proxy.http.interface import Answer, HttpRequest
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.ledger import GROUPINGS
from azure_openai_proxy.store.sqlite import database_path
from azure_openai_proxy.store.usage_report import as_csv, as_json, parse_time, read_usage

__all__ = ["ADMIN_USAGE_PATH", "check_admin", "usage_answer"]

ADMIN_USAGE_PATH = "/admin/usage"


def check_admin(settings: Settings, headers: Mapping[str, str]) -> None:
    """The admin key's check (Bearer, constant time). No admin key: the admin API does
    not exist (404), so a scan learns nothing."""
    if settings.admin_key is None:
        raise RouteNotFound("Unknown request URL. The admin API is off (no admin_key).")
    presented = presented_key(headers)
    expected = settings.admin_key.get_secret_value().encode()
    if presented is None or not hmac.compare_digest(presented.encode(), expected):
        raise AuthenticationFailed("The admin API needs the admin key as 'Authorization: Bearer'.")


async def usage_answer(settings: Settings, request: HttpRequest) -> Answer:
    check_admin(settings, request.headers)
    params = dict(parse_qsl(request.query_string, keep_blank_values=True))
    by = params.get("by", "key")
    if by not in GROUPINGS:
        raise InvalidRequest(f"`by` must be one of {', '.join(GROUPINGS)}.", param="by")
    form = params.get("format", "json")
    if form not in ("json", "csv"):
        raise InvalidRequest("`format` must be json or csv.", param="format")
    now = time.time()
    since = _time(params.get("since", "7d"), now, "since")
    until = _time(params["until"], now, "until") if params.get("until") else None
    try:
        rows = await asyncio.to_thread(read_usage, database_path(settings), by, since, until)
    except (sqlite3.Error, OSError):
        raise DatabaseUnavailable("The usage database cannot be read right now.") from None
    if form == "csv":
        return Answer(200, {"content-type": "text/csv; charset=utf-8"}, as_csv(by, rows).encode())
    return Answer(200, {"content-type": "application/json"}, as_json(by, rows, since, until).encode())


def _time(text: str, now: float, param: str) -> float:
    try:
        return parse_time(text, now)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=param) from None
