"""An Azure that breaks the WebSocket protocol mid-session (a message past the gateway's
16 MiB, a frame no WebSocket may send): the client is told, as for a drop, with an
`upstream_disconnected` `error` event and a 1011 close, not a normal 1000 close that
reads as a session Azure ended on purpose."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from aiohttp import web
from websockets.exceptions import ConnectionClosed

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, gateway_settings
from tests.e2e.test_realtime import V1, events_until, open_raw
from tests.support import ServerThread, serve

_FAULT = web.AppKey("fault", str)


async def _realtime(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse(protocols=("realtime",))
    await socket.prepare(request)
    await socket.send_str('{"type":"session.created"}')
    await socket.receive()  # the client's first event: answered with the fault
    if request.app[_FAULT] == "huge":
        await socket.send_str(json.dumps({
            "type": "conversation.item.retrieved", "pad": "x" * (17 << 20)}))
    else:  # a reserved opcode (RFC 6455 5.2): no WebSocket may send it
        assert request.transport is not None
        request.transport.write(b"\x83\x00")
    await socket.receive()  # the gateway's close
    return socket


def misbehaving_upstream(fault: str) -> Callable[[], web.Application]:
    def factory() -> web.Application:
        app = web.Application()
        app[_FAULT] = fault
        app.router.add_get("/openai/v1/realtime", _realtime)
        return app
    return factory


@pytest.mark.parametrize("fault", ["huge", "reserved_opcode"])
def test_an_upstream_protocol_failure_reaches_the_client_as_a_drop(
    fault: str, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    with serve(misbehaving_upstream(fault)) as upstream:
        gateway = start_gateway(gateway_settings(upstream.url, deployment_config=[
            {"model_name": V1, "deployment_name": V1, "endpoint": upstream.url,
             "api_key": AZURE_KEY, "api": "v1"}]))
        with open_raw(gateway, model=V1) as connection:
            events_until(connection, "session.created")
            connection.send(json.dumps({"type": "conversation.item.retrieve", "item_id": "i"}))
            [error] = events_until(connection, "error")
            with pytest.raises(ConnectionClosed) as closed:
                connection.recv(timeout=10)
    assert error["error"]["code"] == "upstream_disconnected"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
