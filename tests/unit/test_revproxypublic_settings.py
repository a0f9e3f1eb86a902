"""Review of session 28's proxypublic: a config that loaded before it still loads and
works. `transport: aiohttp` with an HTTP proxy (aiohttp's client served it until
session 28) is served by FastTransport, with a warning at start and in check-config,
not refused (an image upgraded under an unchanged config stopped at start). And
`http_proxy` may hold a SOCKS URL (check_proxy takes one, as Go's HTTP_PROXY does):
that is still aiohttp-socks' (FastTransport would have sent it an HTTP CONNECT)."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.gateway.app import transport_for
from azure_openai_proxy.runtime.runner import describe
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import AiohttpTransport

BASE = {"endpoint": "https://e.openai.azure.com/", "api_key": "k", "allow_open": True}
SECRET = "s3cret-pw"
HTTP = f"http://alice:{SECRET}@proxy.internal:3128"
SOCKS = f"socks5://alice:{SECRET}@proxy.internal:1080"


def _client(**upstream: Any) -> type:
    return type(transport_for(load_settings({**BASE, "upstream": upstream}, {}).upstream))


def test_aiohttp_with_an_http_proxy_loads_and_is_served_by_fast_with_a_warning() -> None:
    settings = load_settings({**BASE, "upstream": {"transport": "aiohttp", "http_proxy": HTTP}}, {})
    assert type(transport_for(settings.upstream)) is FastTransport
    warning = settings.proxy_warning
    assert warning is not None and "'fast'" in warning and "'aiohttp'" in warning, warning
    told = describe(settings)
    assert f"WARNING: {warning}" in told.splitlines()
    assert SECRET not in told and "proxy.internal" not in warning


def test_the_environments_http_proxy_with_transport_aiohttp_too() -> None:
    settings = load_settings({**BASE, "upstream": {"transport": "aiohttp"}},
                             {"AZURE_OPENAI_HTTP_PROXY": HTTP})
    assert type(transport_for(settings.upstream)) is FastTransport
    assert settings.proxy_warning is not None


@pytest.mark.parametrize("transport", ["auto", "fast"])
def test_no_such_warning_where_the_transport_says_what_serves_it(transport: str) -> None:
    settings = load_settings({**BASE, "upstream": {"transport": transport, "http_proxy": HTTP}}, {})
    assert settings.proxy_warning is None


@pytest.mark.parametrize("transport", ["auto", "aiohttp"])
def test_a_socks_url_given_as_http_proxy_is_aiohttps(transport: str) -> None:
    assert _client(transport=transport, http_proxy=SOCKS) is AiohttpTransport
    settings = load_settings({**BASE, "upstream": {"transport": transport, "http_proxy": SOCKS}}, {})
    assert settings.proxy_warning is None


def test_fast_refuses_a_socks_url_given_as_http_proxy_at_construction_too() -> None:
    settings = load_settings({**BASE, "upstream": {"http_proxy": SOCKS}}, {}).upstream
    with pytest.raises(ValueError, match="SOCKS"):
        FastTransport(settings)


def test_aiohttp_refuses_an_http_proxy_it_would_not_tunnel() -> None:
    settings = load_settings({**BASE, "upstream": {"http_proxy": HTTP}}, {}).upstream
    with pytest.raises(ValueError, match="HTTP proxies"):
        AiohttpTransport(settings)
