"""A Realtime response cut before its `response.done` (the client leaves, Azure's socket
drops): it is still one usage record, estimated from what was relayed of it, as an HTTP
stream cut short is (README, "Streams always yield usage")."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.gateway.app import GatewayApp
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.ledger import LedgerStore, UsageRecord
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator, emulator_config
from tests.e2e.test_realtime import (
    V1,
    events_until,
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
