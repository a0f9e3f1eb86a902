"""A virtual key's RPM and TPM inside an open realtime session: each `response.create`
is one request, refused with a realtime `error` event (the session goes on) and never
sent to Azure when a limit says no."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection

from azure_openai_proxy.gateway.app import GatewayApp
from tests.e2e.test_realtime import events_until, governed, open_raw, virtual_key
from tests.support import ServerThread

__all__ = ["governed"]  # the fixture, used by name


def create(connection: ClientConnection, event_id: str, **response: Any) -> None:
    event: dict[str, Any] = {"type": "response.create", "event_id": event_id}
    if response:
        event["response"] = response
    connection.send(json.dumps(event))


def limits_of(gateway: ServerThread, key_id: str) -> dict[str, Any]:
    async def snapshot() -> dict[str, Any]:
        app = gateway.app
        assert isinstance(app, GatewayApp) and app.gateway.limiter is not None
        return app.gateway.limiter.snapshot()["key:" + key_id]

    result: dict[str, Any] = gateway.call(snapshot)
    return result


def assert_session_goes_on(connection: ClientConnection) -> None:
    connection.send(json.dumps({"type": "session.update", "session": {"instructions": "x"}}))
    [*_, updated] = events_until(connection, "session.updated")
    assert updated["session"]["instructions"] == "x"


def test_each_response_create_counts_one_request_of_the_keys_rpm(
    governed: ServerThread, tmp_path: Path,
) -> None:
    _, secret = virtual_key(governed, tmp_path / "gw.db", rpm=2)
    with open_raw(governed, secret) as connection:  # the opening: one request
        events_until(connection, "session.created")
        create(connection, "first")  # the second
        first = events_until(connection, "response.done")
        create(connection, "second")  # the third: refused, never sent to Azure
        [*before, refused] = events_until(connection, "error")
        assert_session_goes_on(connection)
    assert [e["type"] for e in first if e["type"] == "error"] == []
    assert "response.created" not in [e["type"] for e in before]
    error = refused["error"]
    assert (error["type"], error["code"], error["event_id"]) == (
        "rate_limit_exceeded", "rate_limit_exceeded", "second")
    assert "requests per minute" in error["message"] and "try again in" in error["message"]


def test_a_response_reserves_its_tokens_and_is_settled_with_its_usage(
    governed: ServerThread, tmp_path: Path,
) -> None:
    key_id, secret = virtual_key(governed, tmp_path / "gw.db", tpm=60)
    with open_raw(governed, secret) as connection:
        events_until(connection, "session.created")
        # Alone larger than the key's TPM: refused, waiting would not help.
        create(connection, "huge", max_output_tokens=100)
        [*_, huge] = events_until(connection, "error")
        assert huge["error"]["code"] == "rate_limit_exceeded"
        assert huge["error"]["event_id"] == "huge"
        create(connection, "small", max_output_tokens=20)
        [*events, done] = events_until(connection, "response.done")
        assert "error" not in [e["type"] for e in events]
        used = done["response"]["usage"]["total_tokens"]
        # Settled with Azure's usage at once, not when the session ends (the bucket
        # refills at one token a second meanwhile).
        remaining = limits_of(governed, key_id)["tokens"]["remaining"]
        assert 60 - used <= remaining < 60 - used + 10
        # The next response is estimated as the conversation so far plus its most
        # output: more than is left of the minute.
        create(connection, "again", max_output_tokens=60 - used)
        [*_, again] = events_until(connection, "error")
        assert again["error"]["event_id"] == "again"
        assert "tokens per minute" in again["error"]["message"]
        assert_session_goes_on(connection)
