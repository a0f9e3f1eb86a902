"""A Realtime response cut before its `response.done` (the client leaves, Azure's socket
drops): it is still one usage record, estimated from what was relayed of it, as an HTTP
stream cut short is (README, "Streams always yield usage")."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.gateway.app import GatewayApp
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.ledger import LedgerStore, UsageRecord
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator, emulator_config, gateway_settings
from tests.e2e.test_realtime import (
    V1,
    events_until,
    fake_azure,
    open_raw,
    realtime_entries,
    realtime_settings,
    virtual_key,
)
from tests.e2e.test_reload_shutdown import gateway_process
from tests.e2e.test_shutdown_cut_stream import only_record
from tests.support import ServerThread, serve
from tests.waiting import until

TEXT_DELTA = "response.output_text.delta"


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    """Responses paced at 20 ms a token, so that one can be cut in its middle."""
    with serve(lambda: create_emulator_app(emulator_config(token_ms=20))) as server:
        yield Emulator(server)


@pytest.fixture
def governed(tmp_path: Path, slow_emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> ServerThread:
    return start_gateway(realtime_settings(
        slow_emulator.url, database=f"sqlite:///{tmp_path / 'gw.db'}"))


def realtime_records(gateway: ServerThread) -> list[UsageRecord]:
    app = gateway.app
    assert isinstance(app, GatewayApp) and app.ledger is not None
    assert app.ledger.flush()
    store = LedgerStore.open(app.ledger.database)
    try:
        return [r for r in store.records() if r.route == "realtime"]
    finally:
        store.close()


def test_a_response_the_client_leaves_is_recorded_estimated(
    slow_emulator: Emulator, governed: ServerThread, tmp_path: Path,
) -> None:
    key_id, secret = virtual_key(governed, tmp_path / "gw.db")
    with open_raw(governed, secret, V1) as connection:
        events_until(connection, "session.created")
        connection.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "output_modalities": ["text"]}}))
        events_until(connection, "session.updated")
        connection.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Hello " * 1000}]}}))
        events_until(connection, "conversation.item.created")
        connection.send(json.dumps({"type": "response.create"}))
        deltas = 0
        while deltas < 4:
            deltas += json.loads(connection.recv(timeout=10))["type"] == TEXT_DELTA
        connection.socket.close()  # gone mid-response: no response.done will reach it
    until(lambda: "closed_at" in realtime_entries(slow_emulator)[0],
          message="the upstream session never ended")
    until(lambda: bool(realtime_records(governed)), message="the cut response was not recorded")
    [record] = realtime_records(governed)
    assert (record.key_id, record.model, record.usage_source) == (key_id, V1, "estimated")
    assert record.completion_tokens >= deltas
    # its input what the client sent for it (6,000 characters): it had none
    assert 1500 <= record.prompt_tokens < 1600


def test_a_response_azure_drops_is_recorded_estimated(
    slow_emulator: Emulator, governed: ServerThread, tmp_path: Path,
) -> None:
    slow_emulator.fault(V1, "cut", after_frames=6)  # 3 deltas in: the socket is gone
    key_id, secret = virtual_key(governed, tmp_path / "gw.db")
    with open_raw(governed, secret, V1) as connection:
        events_until(connection, "session.created")
        connection.send(json.dumps({"type": "response.create", "response": {
            "output_modalities": ["text"]}}))
        events = events_until(connection, "error")
    assert events[-1]["error"]["code"] == "upstream_disconnected"
    until(lambda: bool(realtime_records(governed)), message="the cut response was not recorded")
    [record] = realtime_records(governed)
    assert (record.key_id, record.usage_source) == (key_id, "estimated")
    assert record.completion_tokens == sum(e["type"] == TEXT_DELTA for e in events) == 3


def test_a_response_cut_by_sigterm_is_recorded_estimated(
    slow_emulator: Emulator, tmp_path: Path,
) -> None:
    config, database = tmp_path / "config.yaml", tmp_path / "gw.db"
    config.write_text(yaml.safe_dump({
        "models": {V1: [{"deployment_name": V1, "endpoint": slow_emulator.url,
                         "api_key": AZURE_KEY, "api": "v1"}]},
        "client_keys": [CLIENT_KEY], "database": f"sqlite:///{database}",
        "log_level": "warning", "shutdown_grace_seconds": 0.1}))
    with gateway_process(config) as (process, client), connect(
            f"ws://127.0.0.1:{client.port}/v1/realtime?model={V1}",
            additional_headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as connection:
        events_until(connection, "session.created")
        connection.send(json.dumps({"type": "response.create", "response": {
            "output_modalities": ["text"]}}))
        events_until(connection, TEXT_DELTA)
        process.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                connection.recv(timeout=10)
        # told the server is going away, not dropped (1006)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert process.popen.wait(30) == 0, process.output()
    record = only_record(database)
    assert (record.route, record.usage_source) == ("realtime", "estimated")
    assert record.completion_tokens >= 1


def test_a_response_the_client_cancels_is_recorded_with_azures_usage(
    governed: ServerThread, tmp_path: Path,
) -> None:
    key_id, secret = virtual_key(governed, tmp_path / "gw.db")
    with open_raw(governed, secret, V1) as connection:
        events_until(connection, "session.created")
        connection.send(json.dumps({"type": "response.create", "response": {
            "output_modalities": ["text"]}}))
        events_until(connection, TEXT_DELTA)
        connection.send(json.dumps({"type": "response.cancel"}))  # a barge-in
        done = events_until(connection, "response.done")[-1]["response"]
    assert done["status"] == "cancelled"
    until(lambda: bool(realtime_records(governed)), message="the cancel was not recorded")
    [record] = realtime_records(governed)
    assert (record.key_id, record.usage_source) == (key_id, "measured")
    assert record.completion_tokens == done["usage"]["output_tokens"] < 16


DONE_SENT: list[bool] = []  # (the fake Azure's, in the test's process)
USAGE = {"total_tokens": 57, "input_tokens": 50, "output_tokens": 7}


async def _huge_done(socket: web.WebSocketResponse, event: dict[str, Any]) -> None:
    """A response whose `response.done` is 8 MB (its text): more than a client that
    reads nothing takes in, so the gateway waits to send it."""
    if event.get("type") == "response.create":
        await socket.send_str('{"type":"response.created","response":{"id":"resp_1"}}')
        await socket.send_str('{"type":"response.output_text.delta","delta":"Hi"}')
        await socket.send_str(json.dumps({"type": "response.done", "response": {
            "id": "resp_1", "status": "completed", "usage": USAGE,
            "output": [{"type": "message", "content": [{"text": "x" * 8_000_000}]}]}}))
        DONE_SENT.append(True)


def _client_frame(text: str) -> bytes:
    """A masked text frame (RFC 6455 5.2), as a client sends it."""
    data, mask = text.encode(), os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return struct.pack("!BB", 0x81, 0x80 | len(data)) + mask + masked


def test_a_response_done_waiting_for_a_client_that_leaves_is_recorded_once(
    tmp_path: Path, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    # The gateway was sending Azure's `response.done` to a client that read nothing, and
    # the client left: the response was recorded by no one (its tally cleared before the
    # send, its record made after it), though Azure counted it.
    DONE_SENT.clear()
    with serve(fake_azure(_huge_done)) as upstream:
        gateway = start_gateway(gateway_settings(
            upstream.url, database=f"sqlite:///{tmp_path / 'gw.db'}", deployment_config=[
                {"model_name": V1, "deployment_name": V1, "endpoint": upstream.url,
                 "api_key": AZURE_KEY, "api": "v1"}]))
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.sendall(f"GET /v1/realtime?model={V1} HTTP/1.1\r\nHost: x\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\n"
                           f"Authorization: Bearer {CLIENT_KEY}\r\n\r\n".encode())
            assert client.recv(12) == b"HTTP/1.1 101"
            client.sendall(_client_frame('{"type":"response.create"}'))
            until(lambda: bool(DONE_SENT), message="Azure's response.done was not sent")
            time.sleep(0.2)  # (the gateway has it, and waits for the client to take it)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        until(lambda: bool(realtime_records(gateway)), timeout=3,
              message="the response was not recorded")
        time.sleep(0.2)  # (a second record, if any, is written by now)
        [record] = realtime_records(gateway)
    assert (record.usage_source, record.prompt_tokens, record.completion_tokens) == (
        "measured", 50, 7)


def test_a_session_whose_cut_response_cannot_be_recorded_still_ends(
    slow_emulator: Emulator, governed: ServerThread,
) -> None:
    # Recording the cut response raised (here the ledger's add), and the session's own
    # end was skipped: its access-log line lost, the session left among the open ones.
    app = governed.app
    assert isinstance(app, GatewayApp) and app.ledger is not None
    logged: list[RequestRecord] = []
    write = app.access_log.write

    def spy(record: RequestRecord) -> None:
        logged.append(record)
        write(record)

    def broken(record: RequestRecord) -> None:
        raise OSError("the ledger is broken")

    app.access_log.write = spy  # type: ignore[method-assign]
    app.ledger.add = broken  # type: ignore[method-assign]
    with open_raw(governed, CLIENT_KEY, V1) as connection:
        events_until(connection, "session.created")
        connection.send(json.dumps({"type": "response.create", "response": {
            "output_modalities": ["text"]}}))
        events_until(connection, TEXT_DELTA)
        connection.socket.close()  # gone mid-response: its response is cut
    until(lambda: any(r.status == 101 for r in logged),
          message="the session's end was never logged")
    [response, session] = logged
    assert (response.usage or {}).get("estimated") and session.route == "realtime"


def test_an_out_of_band_response_done_leaves_the_other_cut_one_recorded(
    slow_emulator: Emulator, governed: ServerThread,
) -> None:
    # An out-of-band response (`conversation: "none"`) runs beside the conversation's:
    # its `response.done` cleared the one tally for both, so the other, cut afterwards,
    # was not recorded at all.
    with open_raw(governed, CLIENT_KEY, V1) as connection:
        events_until(connection, "session.created")
        connection.send(json.dumps({"type": "response.create", "response": {
            "output_modalities": ["text"]}}))
        first = events_until(connection, "response.created")[-1]["response"]["id"]
        connection.send(json.dumps({"type": "response.create", "response": {
            "conversation": "none", "output_modalities": ["text"], "max_output_tokens": 2,
            "metadata": {"topic": "aside"}}}))
        deltas = {first: 0}
        while True:
            event = json.loads(connection.recv(timeout=10))
            if event["type"] == TEXT_DELTA:
                deltas[event["response_id"]] = deltas.get(event["response_id"], 0) + 1
            if event["type"] == "response.done":
                aside = event["response"]
                break
        assert aside["id"] != first and aside["metadata"] == {"topic": "aside"}
        assert deltas[aside["id"]] == aside["usage"]["output_tokens"] == 2
        while json.loads(connection.recv(timeout=10))["type"] != TEXT_DELTA:
            pass
        deltas[first] += 1
        connection.socket.close()  # gone in the middle of the conversation's response
    until(lambda: len(realtime_records(governed)) == 2,
          message="the cut response was not recorded")
    estimated, measured = sorted(realtime_records(governed), key=lambda r: r.usage_source)
    assert (measured.usage_source, measured.completion_tokens) == ("measured", 2)
    assert estimated.usage_source == "estimated"
    assert estimated.completion_tokens >= deltas[first]  # its own deltas, not the other's
    assert estimated.completion_tokens < 16  # (cut before its end)


async def _failed_after_deltas(socket: web.WebSocketResponse, event: dict[str, Any]) -> None:
    if event.get("type") == "response.create":
        await socket.send_str('{"type":"response.created","response":{"id":"resp_1"}}')
        for _ in range(3):
            await socket.send_str('{"type":"response.output_text.delta","response_id":"resp_1",'
                                  '"delta":"Hi"}')
        await socket.send_str(json.dumps({"type": "response.done", "response": {
            "id": "resp_1", "status": "failed", "usage": None, "status_details": {
                "type": "failed", "error": {"type": "server_error", "code": "x"}}}}))


def test_a_failed_response_without_usage_is_not_recorded(
    tmp_path: Path, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    # Azure's usage is its billing: a response it ended without any billed nothing, even
    # with deltas relayed; and, done, it is not taken for a cut one when the client leaves.
    with serve(fake_azure(_failed_after_deltas)) as upstream:
        gateway = start_gateway(gateway_settings(
            upstream.url, database=f"sqlite:///{tmp_path / 'gw.db'}", deployment_config=[
                {"model_name": V1, "deployment_name": V1, "endpoint": upstream.url,
                 "api_key": AZURE_KEY, "api": "v1"}]))
        app = gateway.app
        assert isinstance(app, GatewayApp)
        with open_raw(gateway, CLIENT_KEY, V1) as connection:
            events_until(connection, "session.created")
            connection.send(json.dumps({"type": "response.create"}))
            assert events_until(connection, "response.done")[-1]["response"]["status"] == (
                "failed")
        series = app.gateway.balancer.metrics.realtime
        until(lambda: series.open == 0, message="the session never ended")
        assert realtime_records(gateway) == []
