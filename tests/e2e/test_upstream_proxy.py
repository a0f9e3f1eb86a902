"""HTTP and SOCKS5 upstream proxies, through a real proxy server (pproxy)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator, gateway_settings
from tests.e2e.test_gateway_edges import AUTH, CHAT, call
from tests.processes import pproxy, running
from tests.support import ServerThread


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_traffic_goes_through_the_proxy(
    scheme: str, emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
    reserve_port: Callable[[], int],
) -> None:
    port = reserve_port()
    key = "socks_proxy" if scheme == "socks5" else "http_proxy"
    gateway = start_gateway(gateway_settings(emulator.url, upstream={key: f"{scheme}://127.0.0.1:{port}"}))
    emulator_port = emulator.server.port
    with running(pproxy(f"{scheme}://127.0.0.1:{port}"), port=port) as proxy:
        for _ in range(3):
            status, _, body = await call(gateway.url + "/v1/chat/completions", body=CHAT,
                                         headers={**AUTH, "Content-Type": "application/json"})
            assert status == 200, body
            assert json.loads(body)["choices"][0]["message"]["content"]
        log = proxy.output()
        assert f"-> 127.0.0.1:{emulator_port}" in log, log
        # Pooled keep-alive through the proxy: fewer tunnels than requests.
        assert log.count(f"-> 127.0.0.1:{emulator_port}") < 3
    # With the proxy gone, the gateway cannot reach Azure: it really depended on it.
    status, _, body = await call(gateway.url + "/v1/chat/completions", body=CHAT,
                                 headers={**AUTH, "Content-Type": "application/json"})
    assert status == 502
