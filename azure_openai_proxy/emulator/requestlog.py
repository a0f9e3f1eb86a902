"""The record of every request the emulator received, with secrets masked. Pure.

Tests read it back from `GET /_emulator/requests` to assert on exactly what reached
"Azure". Secret headers are replaced by `mask_secret(value)` so a test can still check
which key was sent by computing the same digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

BODY_LIMIT = 64 * 1024
_SECRET_WORDS = ("key", "token", "secret", "authorization", "cookie", "signature")


def mask_secret(value: str) -> str:
    """`sha256:` and the first 12 hex digits of the value's SHA-256."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def masked_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        out[name.lower()] = mask_secret(value) if is_secret_header(name) else value
    return out


def query_params(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


def record(
    *,
    method: str,
    path: str,
    query: str,
    query_pairs: Iterable[tuple[str, str]],
    headers: Iterable[tuple[str, str]],
    body: bytes,
) -> dict[str, Any]:
    """A log entry for a request just received; `deployment`/`status` are filled later."""
    parsed: Any = None
    if body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
    return {
        "method": method,
        "path": path,
        "query": query,
        "query_params": query_params(query_pairs),
        "headers": masked_headers(headers),
        "body": body[:BODY_LIMIT].decode("utf-8", "replace"),
        "body_size": len(body),
        "json": parsed,
        "deployment": None,
        "status": None,
        "fault": None,
    }


class RequestLog:
    """Arrival-ordered entries, capped so a long benchmark cannot exhaust memory."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._entries: list[dict[str, Any]] = []
        self._capacity = capacity

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        self._entries.append(entry)
        if len(self._entries) > self._capacity:
            del self._entries[: len(self._entries) - self._capacity]
        return entry

    def entries(self) -> list[Mapping[str, Any]]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()
