"""SIGTERM with Realtime sessions open: an idle one is closed at once with 1001 (going
away); one mid-response gets the rest of its response, then 1001; the gateway exits
without waiting out its grace (each session open kept it for all of it, 30 s)."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.gateway.app import GatewayApp
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, emulator_config, gateway_settings
from tests.e2e.test_realtime import V1, events_until, open_raw
from tests.e2e.test_reload_shutdown import gateway_process
from tests.e2e.test_shutdown_cut_stream import only_record
from tests.support import ServerThread, serve


def closed_with(connection: ClientConnection) -> tuple[int, list[str]]:
    """The close code the gateway sent, and the types of the events before it."""
    kinds = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            kinds.append(json.loads(connection.recv(timeout=5))["type"])
    assert closed.value.rcvd is not None, "no close frame"
    return closed.value.rcvd.code, kinds


def test_sigterm_closes_idle_sessions_at_once_and_others_after_their_response(
    tmp_path: Path,
) -> None:
    config, database = tmp_path / "config.yaml", tmp_path / "gw.db"
    with serve(lambda: create_emulator_app(emulator_config(token_ms=20))) as emulator:
        config.write_text(yaml.safe_dump({
            "models": {V1: [{"deployment_name": V1, "endpoint": emulator.url,
                             "api_key": AZURE_KEY, "api": "v1"}]},
            "client_keys": [CLIENT_KEY], "database": f"sqlite:///{database}",
            "log_level": "warning", "shutdown_grace_seconds": 20}))
        url_headers = {"additional_headers": {"Authorization": f"Bearer {CLIENT_KEY}"}}
        with gateway_process(config) as (process, client):
            url = f"ws://127.0.0.1:{client.port}/v1/realtime?model={V1}"
            with connect(url, **url_headers) as idle, connect(url, **url_headers) as busy:
                events_until(idle, "session.created")
                events_until(busy, "session.created")
                busy.send(json.dumps({"type": "response.create", "response": {
                    "output_modalities": ["text"]}}))
                events_until(busy, "response.output_text.delta")
                started = time.monotonic()
                process.signal(signal.SIGTERM)
                assert closed_with(idle) == (1001, [])
                code, kinds = closed_with(busy)
                assert (code, kinds[-1]) == (1001, "response.done")
            assert process.popen.wait(10) == 0, process.output()
            assert time.monotonic() - started < 10  # not the grace's 20 s
    record = only_record(database)  # the response's, as Azure counted it
    assert (record.route, record.usage_source) == ("realtime", "measured")


def test_a_session_opening_as_the_shutdown_begins_is_refused_with_a_503(
    tmp_path: Path, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    # It got its 101, then at once a 1001 close: refused before the handshake instead.
    asked, release = threading.Event(), threading.Event()

    async def held(request: web.Request) -> web.WebSocketResponse:
        asked.set()
        while not release.is_set():  # Azure's handshake, slow
            await asyncio.sleep(0.01)
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_str('{"type":"session.created"}')
        async for _ in socket:
            pass
        return socket

    def azure() -> web.Application:
        app = web.Application()
        app.router.add_get("/openai/v1/realtime", held)
        return app

    with serve(azure) as upstream, ThreadPoolExecutor(1) as pool:
        gateway = start_gateway(gateway_settings(upstream.url, deployment_config=[
            {"model_name": V1, "deployment_name": V1, "endpoint": upstream.url,
             "api_key": AZURE_KEY, "api": "v1"}]))
        app = gateway.app
        assert isinstance(app, GatewayApp)
        opening = pool.submit(open_raw, gateway, CLIENT_KEY, V1)
        assert asked.wait(10)
        gateway.call(app.shutdown)
        release.set()
        with pytest.raises(InvalidStatus) as refused:
            opening.result(10).close()
    response = refused.value.response
    assert response.status_code == 503
    assert json.loads(response.body)["error"]["code"] == "server_shutting_down"
    assert response.headers["retry-after"] == "1"
