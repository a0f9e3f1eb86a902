"""Which client serves an upstream proxy (session 28): an HTTP proxy's requests go
through FastTransport (tunnel.py's CONNECT, TLS over the tunnelled socket), so
`transport: fast` takes one (`aiohttp` with one is served by fast, with a warning:
test_revproxypublic_settings.py); a SOCKS proxy stays aiohttp's (aiohttp-socks), and
`fast` refuses one. With both set the SOCKS proxy is used, as before, whatever the
transport can do with the HTTP one."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.gateway.app import transport_for
from azure_openai_proxy.runtime.runner import describe
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import AiohttpTransport

BASE = {"endpoint": "https://e.openai.azure.com/", "api_key": "k", "allow_open": True}
HTTP, SOCKS = "http://proxy.internal:3128", "socks5://proxy.internal:1080"


def _client(**upstream: Any) -> type:
    return type(transport_for(load_settings({**BASE, "upstream": upstream}, {}).upstream))


@pytest.mark.parametrize("transport", ["auto", "fast"])
def test_an_http_proxy_is_fasttransports(transport: str) -> None:
    assert _client(transport=transport, http_proxy=HTTP) is FastTransport


def test_the_environments_http_proxy_is_fasttransports_too() -> None:
    settings = load_settings(BASE, {"AZURE_OPENAI_HTTP_PROXY": HTTP})
    assert type(transport_for(settings.upstream)) is FastTransport


@pytest.mark.parametrize("transport", ["auto", "aiohttp"])
def test_a_socks_proxy_is_aiohttps_also_beside_an_http_one(transport: str) -> None:
    assert _client(transport=transport, socks_proxy=SOCKS) is AiohttpTransport
    assert _client(transport=transport, socks_proxy=SOCKS, http_proxy=HTTP) is AiohttpTransport


@pytest.mark.parametrize("upstream", [{"transport": "fast", "socks_proxy": SOCKS},
                                      {"transport": "fast", "http_proxy": SOCKS}])
def test_fast_with_a_socks_proxy_is_refused_at_load(upstream: dict[str, str]) -> None:
    said = "transport 'fast' does not do SOCKS proxies; use 'aiohttp' or 'auto'"
    with pytest.raises(ConfigError, match=said) as caught:
        load_settings({**BASE, "upstream": upstream}, {})
    assert "proxy.internal" not in str(caught.value)  # the URL is not shown


def test_check_config_says_an_http_proxy_is_http1() -> None:
    settings = load_settings({**BASE, "upstream": {"transport": "fast", "http_proxy": HTTP}}, {})
    [line] = [row for row in describe(settings).splitlines() if row.startswith("upstream: ")]
    assert line == "upstream: HTTP/1.1 (an upstream proxy; http2: auto)"
