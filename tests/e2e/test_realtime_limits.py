"""A virtual key's RPM and TPM inside an open realtime session: each `response.create`
is one request, refused with a realtime `error` event (the session goes on) and never
sent to Azure when a limit says no."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.sync.client import ClientConnection

from azure_openai_proxy.gateway.app import GatewayApp
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import AZURE_KEY, Emulator, gateway_settings
from tests.e2e.test_realtime import (
    V1,
    _loaded,
    events_until,
    fake_azure,
    governed,
    open_raw,
    realtime_settings,
    slow_emulator,
    virtual_key,
)
from tests.support import ServerThread, load_keys_now, serve
from tests.waiting import until

__all__ = ["governed", "slow_emulator"]  # the fixtures, used by name


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


def refusing_upstream() -> web.Application:
    """Azure's realtime endpoint as far as the limits care: `response.create` with
    event_id "refuse-me" is refused with an `error` naming it (as Azure refuses a second
    response while one is active); any other gets a `response.done` with usage."""
    async def realtime(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_str('{"type":"session.created"}')
        async for message in socket:
            event = json.loads(message.data)
            if event.get("event_id") == "refuse-me":
                await socket.send_json({"type": "error", "event_id": "event_1", "error": {
                    "type": "invalid_request_error",
                    "code": "conversation_already_has_active_response",
                    "message": "Conversation already has an active response",
                    "param": None, "event_id": "refuse-me"}})
            elif event.get("type") == "response.create":
                await socket.send_json({"type": "response.done", "response": {"usage": {
                    "total_tokens": 3, "input_tokens": 1, "output_tokens": 2}}})
        return socket

    app = web.Application()
    app.router.add_get("/openai/v1/realtime", realtime)
    return app


def test_a_response_azure_refuses_gives_its_slot_back(
    tmp_path: Path, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    with serve(refusing_upstream) as upstream:
        gateway = start_gateway(gateway_settings(
            upstream.url, database=f"sqlite:///{tmp_path / 'gw.db'}", deployment_config=[
                {"model_name": V1, "deployment_name": V1, "endpoint": upstream.url,
                 "api_key": AZURE_KEY, "api": "v1"}]))
        key_id, secret = virtual_key(gateway, tmp_path / "gw.db", max_parallel=1)
        with open_raw(gateway, secret, V1) as connection:
            events_until(connection, "session.created")
            # Open and idle, the session holds no slot: its responses may use the one.
            assert limits_of(gateway, key_id)["in_flight"] == 0
            create(connection, "refuse-me")
            [refused] = events_until(connection, "error")
            assert refused["error"]["code"] == "conversation_already_has_active_response"
            assert limits_of(gateway, key_id)["in_flight"] == 0
            create(connection, "ok")
            [done] = events_until(connection, "response.done")
            assert limits_of(gateway, key_id)["in_flight"] == 0
        assert done["response"]["usage"]["total_tokens"] == 3


def test_the_teams_rpm_counts_its_keys_responses_too(
    governed: ServerThread, tmp_path: Path,
) -> None:
    store = KeyStore.open(tmp_path / "gw.db")
    try:
        team = store.create_team("voice", limits=Limits(rpm=2), now=time.time())
        _, secret = store.create_key("rt-team", team=team.id, now=time.time())
    finally:
        store.close()
    load_keys_now(governed)  # not the next poll's (up to 0.5 s a key)
    until(lambda: _loaded(governed, secret), message="the gateway never loaded the new key")
    with open_raw(governed, secret) as connection:  # the team's first request
        events_until(connection, "session.created")
        create(connection, "first")  # its second
        events_until(connection, "response.done")
        create(connection, "second")
        [*_, refused] = events_until(connection, "error")
    assert refused["error"]["code"] == "rate_limit_exceeded"
    assert "this team" in refused["error"]["message"]


def test_a_refusal_while_a_response_streams_reaches_the_client_and_the_response_ends(
    slow_emulator: Emulator, tmp_path: Path, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    gateway = start_gateway(realtime_settings(
        slow_emulator.url, database=f"sqlite:///{tmp_path / 'gw.db'}"))
    _, secret = virtual_key(gateway, tmp_path / "gw.db", rpm=2)
    with open_raw(gateway, secret) as connection:
        events_until(connection, "session.created")
        create(connection, "streams")  # 16 tokens at 20 ms each
        events_until(connection, "response.created")
        create(connection, "refused")  # answered from the client's side, meanwhile
        events = events_until(connection, "response.done")
    kinds = [e["type"] for e in events]
    assert kinds.count("error") == 1
    refused = events[kinds.index("error")]
    assert refused["error"]["event_id"] == "refused"
    # (Usually between the response's deltas: both relay tasks then send to the client.
    # Not asserted: that is a matter of timing.)



@contextlib.contextmanager
def session_on(upstream: Callable[[], web.Application], tmp_path: Path,
               start_gateway: Callable[[Settings], ServerThread],
               **limits: Any) -> Iterator[tuple[ServerThread, str, ClientConnection]]:
    """A session of a virtual key with `limits` on a gateway before `upstream` (a v1
    deployment), its `session.created` read: the gateway, the key's id, the client."""
    with serve(upstream) as azure:
        gateway = start_gateway(gateway_settings(
            azure.url, database=f"sqlite:///{tmp_path / 'gw.db'}", deployment_config=[
                {"model_name": V1, "deployment_name": V1, "endpoint": azure.url,
                 "api_key": AZURE_KEY, "api": "v1"}]))
        key_id, secret = virtual_key(gateway, tmp_path / "gw.db", **limits)
        with open_raw(gateway, secret, V1) as connection:
            events_until(connection, "session.created")
            yield gateway, key_id, connection


DONE = {"type": "response.done", "response": {"usage": {
    "total_tokens": 3, "input_tokens": 1, "output_tokens": 2}}}


def test_a_refused_response_create_without_an_event_id_gives_its_slot_back(
    tmp_path: Path, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    # The SDKs send `response.create` without an `event_id`: Azure's refusal must still
    # settle its admission, or a max_parallel=1 session could never respond again.
    creates: list[dict[str, Any]] = []

    async def refuse_the_first(socket: web.WebSocketResponse, event: dict[str, Any]) -> None:
        """Azure refuses the first `response.create` with an `error` naming its
        `event_id` as sent (null when none), as it refuses a second active response."""
        if event.get("type") != "response.create":
            return
        creates.append(event)
        if len(creates) > 1:
            await socket.send_json(DONE)
            return
        await socket.send_json({"type": "error", "event_id": "event_1", "error": {
            "type": "invalid_request_error",
            "code": "conversation_already_has_active_response",
            "message": "Conversation already has an active response",
            "param": None, "event_id": event.get("event_id")}})

    with session_on(fake_azure(refuse_the_first), tmp_path, start_gateway,
                    max_parallel=1) as (gateway, key_id, connection):
        connection.send(json.dumps({"type": "response.create"}))
        [refused] = events_until(connection, "error")
        assert refused["error"]["code"] == "conversation_already_has_active_response"
        assert limits_of(gateway, key_id)["in_flight"] == 0
        connection.send(json.dumps({"type": "response.create"}))
        [*events, done] = events_until(connection, "response.done")
        assert "error" not in [e["type"] for e in events]
        assert limits_of(gateway, key_id)["in_flight"] == 0
    assert done["response"]["usage"]["total_tokens"] == 3


def test_a_response_azure_starts_by_itself_counts_against_the_keys_tpm(
    tmp_path: Path, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    async def server_vad(socket: web.WebSocketResponse, event: dict[str, Any]) -> None:
        """Under server VAD (the default turn detection) a committed audio buffer
        starts a response by itself, no `response.create` asked."""
        if event.get("type") == "input_audio_buffer.commit":
            await socket.send_json({"type": "response.created", "response": {}})
            await socket.send_json({"type": "response.done", "response": {"usage": {
                "total_tokens": 30, "input_tokens": 20, "output_tokens": 10}}})

    with session_on(fake_azure(server_vad), tmp_path, start_gateway,
                    tpm=60) as (gateway, key_id, connection):
        connection.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events_until(connection, "response.done")
        limits = limits_of(gateway, key_id)
    # Charged at once (the bucket refills at one token a second meanwhile).
    assert 30 <= limits["tokens"]["remaining"] < 40
    assert limits["in_flight"] == 0


async def _ignore(socket: web.WebSocketResponse, event: dict[str, Any]) -> None:
    return None


def test_a_client_that_closes_while_its_refusal_is_sent_closes_azures_side(
    tmp_path: Path, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    # A refused `response.create` and the client's close frame in one write: the refusal
    # finds the client closing. That is the client leaving (Azure's socket closed with
    # its code), not a relay failure (an ERROR log line and Azure's socket aborted).
    closes: list[int | None] = []
    ended = fake_azure(_ignore, lambda socket: closes.append(socket.close_code))
    with session_on(ended, tmp_path, start_gateway, rpm=1) as (_, _, connection):
        # (The opening took the one request of the minute: the create is refused.)
        refused = Frame(Opcode.TEXT, json.dumps(
            {"type": "response.create", "event_id": "late"}).encode())
        close = Frame(Opcode.CLOSE, Close(4001, "bye").serialize())
        connection.socket.sendall(b"".join(
            frame.serialize(mask=True, extensions=[]) for frame in (refused, close)))
        with contextlib.suppress(ConnectionClosed):
            while True:
                connection.recv(timeout=10)
        until(lambda: closes, message="Azure's side never ended")
    assert closes == [4001]
