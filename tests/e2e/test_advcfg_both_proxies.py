"""Both AZURE_OPENAI_SOCKS_PROXY and AZURE_OPENAI_HTTP_PROXY set: the Go tool uses the
SOCKS one (util/http_proxy.go), and so does every upstream connection of the gateway."""

from __future__ import annotations

from collections.abc import Callable

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator
from tests.e2e.test_gateway_edges import AUTH, CHAT, call
from tests.e2e.test_realtime import events_until, open_raw, realtime_settings
from tests.processes import pproxy, running
from tests.support import ServerThread


async def test_http_and_realtime_both_take_the_socks_proxy_when_both_are_set(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
    reserve_port: Callable[[], int],
) -> None:
    # The WebSocket client took the HTTP proxy first and the HTTP clients the SOCKS one:
    # with both set, realtime sessions went another way than chat (here, to a proxy that
    # is not running: a 502 for every session while chat worked).
    socks_port, dead_port = reserve_port(), reserve_port()
    gateway = start_gateway(realtime_settings(emulator.url, upstream={
        "socks_proxy": f"socks5://127.0.0.1:{socks_port}",
        "http_proxy": f"http://127.0.0.1:{dead_port}"}))
    with running(pproxy(f"socks5://127.0.0.1:{socks_port}"), port=socks_port) as proxy:
        status, _, body = await call(gateway.url + "/v1/chat/completions", body=CHAT,
                                     headers={**AUTH, "Content-Type": "application/json"})
        assert status == 200, body
        with open_raw(gateway) as connection:
            events_until(connection, "session.created")
        assert proxy.output().count(f"-> 127.0.0.1:{emulator.server.port}") >= 2



def test_realtime_through_socks5_leaves_dns_to_the_proxy_as_http_requests_do(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
    reserve_port: Callable[[], int],
) -> None:
    # A proxy is often there because only it can resolve and reach Azure. The HTTP
    # clients send the SOCKS proxy the host name (aiohttp-socks, rdns); the WebSocket
    # client resolved it itself for socks5:// (websockets does that unless socks5h://).
    port = reserve_port()
    endpoint = f"http://localhost:{emulator.server.port}"
    gateway = start_gateway(realtime_settings(endpoint, upstream={
        "socks_proxy": f"socks5://127.0.0.1:{port}"}))
    with running(pproxy(f"socks5://127.0.0.1:{port}"), port=port) as proxy:
        with open_raw(gateway) as connection:
            events_until(connection, "session.created")
        assert f"-> localhost:{emulator.server.port}" in proxy.output(), proxy.output()
