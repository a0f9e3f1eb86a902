"""`upstream.http2: auto | true | false` (default `auto`): how it is read from the file
and the environment, which transport it picks, which scheme goes where, how many
descriptors a stream is counted at, and what check-config says."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.gateway.app import transport_for
from azure_openai_proxy.runtime.capacity import endpoints_of, fds_per_stream
from azure_openai_proxy.runtime.runner import describe
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.auto import AutoTransport
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.h2 import H2Transport
from azure_openai_proxy.upstream.transport import AiohttpTransport, UpstreamRequest

BASE = {"endpoint": "https://e.openai.azure.com/", "api_key": "k", "allow_open": True}
ENV = "AZURE_OPENAI_PROXY_UPSTREAM_HTTP2"


def _http2(environ: dict[str, str] | None = None, **upstream: Any) -> bool | str:
    config = {**BASE, "upstream": upstream} if upstream else BASE
    return load_settings(config, environ or {}).upstream.http2


@pytest.mark.parametrize("word, value", [
    ("auto", "auto"), ("AUTO", "auto"), (" Auto ", "auto"), ("true", True), ("True", True),
    ("1", True), ("yes", True), ("on", True), ("false", False), ("0", False), ("no", False),
    ("off", False),
])
def test_the_environment_takes_auto_and_the_usual_booleans(word: str, value: bool | str) -> None:
    assert _http2({ENV: word}) == value


def test_the_file_takes_booleans_and_auto_and_auto_is_the_default() -> None:
    assert _http2() == "auto"
    assert _http2(http2=True) is True and _http2(http2=False) is False
    assert _http2(http2="auto") == "auto" and _http2(http2="false") is False
    assert _http2({ENV: "false"}, http2=True) is False  # environment over file


@pytest.mark.parametrize("word", ["maybe", "2", "h2", "tru"])
def test_other_words_are_refused_with_the_choices(word: str) -> None:
    with pytest.raises(ConfigError, match="must be auto, true or false"):
        _http2({ENV: word})


def test_auto_is_quietly_off_with_a_proxy_or_aiohttp_and_true_is_refused() -> None:
    proxied = load_settings({**BASE, "upstream": {"http_proxy": "http://p:1"}}, {}).upstream
    assert proxied.http2 == "auto" and not proxied.http2_for("https")
    assert type(transport_for(proxied)) is FastTransport  # HTTP/1.1 through its tunnels
    aio = UpstreamSettings(transport="aiohttp")
    assert not aio.http2_for("https") and isinstance(transport_for(aio), AiohttpTransport)
    with pytest.raises((ConfigError, ValueError)):
        load_settings({**BASE, "upstream": {"http2": True, "socks_proxy": "socks5://p:1"}}, {})
    with pytest.raises(ValueError):
        UpstreamSettings(http2=True, transport="aiohttp")


def test_which_scheme_is_offered_http2() -> None:
    auto, on, off = UpstreamSettings(), UpstreamSettings(http2=True), UpstreamSettings(http2=False)
    assert (auto.http2_for("https"), auto.http2_for("http")) == (True, False)  # no h2c guess
    assert (on.http2_for("https"), on.http2_for("http")) == (True, True)  # h2c prior knowledge
    assert (off.http2_for("https"), off.http2_for("http")) == (False, False)


def test_each_setting_picks_its_transport() -> None:
    assert isinstance(transport_for(UpstreamSettings()), AutoTransport)
    assert isinstance(transport_for(UpstreamSettings(http2=True)), H2Transport)
    assert type(transport_for(UpstreamSettings(http2=False))) is FastTransport


class _Recorder:
    """A transport that records the URLs it was asked for."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.urls: list[str] = []
        self.closed = False

    async def send(self, request: UpstreamRequest) -> Any:
        self.urls.append(request.url)
        return self.name

    def connections_in_use(self) -> int:
        return len(self.urls)

    async def close(self) -> None:
        self.closed = True


async def test_auto_sends_https_to_http2_and_http_to_http1() -> None:
    h2, http1 = _Recorder("h2"), _Recorder("http1")
    transport = AutoTransport(UpstreamSettings(), h2=h2, http1=http1)  # type: ignore[arg-type]
    urls = ["https://e.openai.azure.com/openai/x", "http://127.0.0.1:8001/openai/x",
            "https://127.0.0.1:8443/openai/x", "http://https.example/openai/x"]
    sent = [await transport.send(UpstreamRequest("POST", url, {})) for url in urls]
    assert sent == ["h2", "http1", "h2", "http1"]
    assert h2.urls == urls[0::2] and http1.urls == urls[1::2]
    assert transport.connections_in_use() == 4
    await transport.close()
    assert h2.closed and http1.closed


def _settings(*endpoints: str, **upstream: Any) -> Any:
    deployments = [{"model_name": f"m{i}", "deployment_name": f"d{i}", "endpoint": endpoint,
                    "api_key": "k"} for i, endpoint in enumerate(endpoints)]
    return load_settings({"deployment_config": deployments, "allow_open": True,
                          "upstream": upstream}, {})


def test_a_stream_holds_one_descriptor_only_where_every_endpoint_is_offered_http2() -> None:
    def per_stream(*endpoints: str, **upstream: Any) -> int:
        settings = _settings(*endpoints, **upstream)
        return fds_per_stream(settings.upstream, endpoints_of(settings))

    https, http = "https://a.openai.azure.com/", "http://127.0.0.1:8001"
    assert per_stream(https, "https://b.openai.azure.com/") == 1
    assert per_stream(http) == 2  # auto: HTTP/1.1 to http://
    assert per_stream(https, http) == 2  # one http:// endpoint: counted conservatively
    assert per_stream(http, http2=True) == 1  # h2c
    assert per_stream(https, http2=False) == 2
    assert per_stream(https, http_proxy="http://p:1") == 2
    assert fds_per_stream(UpstreamSettings()) == 2  # no endpoint known: as http://
    env_mode = load_settings({}, {"AZURE_OPENAI_ENDPOINT": "https://e.openai.azure.com/"})
    assert endpoints_of(env_mode) == ["https://e.openai.azure.com"]
    assert fds_per_stream(env_mode.upstream, endpoints_of(env_mode)) == 1


def test_check_config_says_what_each_scheme_gets() -> None:
    def line(**upstream: Any) -> str:
        text = describe(_settings("https://a.openai.azure.com/", **upstream))
        return next(row for row in text.splitlines() if row.startswith("upstream: "))

    assert line() == ("upstream: https: HTTP/2 where ALPN picks it, else HTTP/1.1; "
                      "http://: HTTP/1.1 (http2: auto)")
    assert line(http2=True).endswith("http://: h2c (prior knowledge) (http2: true)")
    assert line(http2=False) == "upstream: HTTP/1.1 (http2: false)"
    assert line(http_proxy="http://p:1") == "upstream: HTTP/1.1 (an upstream proxy; http2: auto)"
    assert line(transport="aiohttp") == "upstream: HTTP/1.1 (aiohttp; http2: auto)"
