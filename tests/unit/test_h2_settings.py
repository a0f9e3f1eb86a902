"""`upstream.http2`: `auto` by default (test_upstream_auto.py), on from the file or
AZURE_OPENAI_PROXY_UPSTREAM_HTTP2, refused beside an upstream proxy; on, it picks
`H2Transport`."""

from __future__ import annotations

import pytest

from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.gateway.app import transport_for
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.h2 import H2Transport

BASE = {"endpoint": "https://e.openai.azure.com/", "api_key": "k", "allow_open": True}


def test_auto_by_default_and_on_from_the_file_or_the_environment() -> None:
    assert load_settings(BASE, {}).upstream.http2 == "auto"
    off = load_settings({**BASE, "upstream": {"http2": False}}, {})
    assert isinstance(transport_for(off.upstream), FastTransport)
    on_file = load_settings({**BASE, "upstream": {"http2": True}}, {})
    on_env = load_settings(BASE, {"AZURE_OPENAI_PROXY_UPSTREAM_HTTP2": "true"})
    assert on_file.upstream.http2 is True and on_env.upstream.http2 is True
    assert isinstance(transport_for(on_env.upstream), H2Transport)


def test_refused_with_an_upstream_proxy() -> None:
    with pytest.raises((ConfigError, ValueError)):
        load_settings({**BASE, "upstream": {"http2": True, "http_proxy": "http://p:1"}}, {})
