"""Upstream timeouts at their edges, through the aiohttp transport (the one a proxy uses)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator, gateway_settings
from tests.e2e.test_gateway_edges import AUTH, CHAT, call
from tests.support import ServerThread


@pytest.mark.parametrize("name", ["connect_timeout", "pool_timeout", "read_timeout",
                                  "keepalive_timeout", "dns_cache_ttl"])
def test_an_infinite_upstream_time_is_a_config_error(name: str) -> None:
    # `connect_timeout: .inf` (or pool_timeout) passed; aiohttp rounds its deadlines up
    # with math.ceil, and every request was a 500 (OverflowError).
    with pytest.raises(ConfigError, match=f"^upstream.{name}: Input should be a finite number$"):
        load_settings({"endpoint": "https://x", "upstream": {name: float("inf")}}, {})


async def test_a_huge_finite_upstream_time_serves(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    times = dict.fromkeys(("connect_timeout", "pool_timeout", "read_timeout",
                           "keepalive_timeout"), 1e300)
    gateway = start_gateway(gateway_settings(
        emulator.url, upstream={"transport": "aiohttp", **times}))
    status, _, body = await call(gateway.url + "/v1/chat/completions", body=CHAT,
                                 headers={**AUTH, "Content-Type": "application/json"})
    assert status == 200, body
