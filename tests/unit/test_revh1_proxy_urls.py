"""A proxy URL whose user and password the clients (python-socks, under aiohttp-socks and
websockets) cannot send as written is a config error naming why, never the URL: a SOCKS
user or password outside ASCII or past 255 bytes (an HTTP one not UTF-8 was, until the
realtime sockets' CONNECT sent its bytes as given), raised
UnicodeEncodeError or ValueError on every request (a 500 internal_error each), and a
password without a user was sent no credentials at all. A SOCKS5 user without a password
loads, as it did and as with the Go tool (a proxy taking anonymous clients works), and is
warned of: python-socks offers no authentication then, where Go's x/net/proxy sends the
user with an empty password."""

from __future__ import annotations

import pytest

from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.runtime.runner import describe

SECRET = "s3cr3t"


def _load(url: str) -> str | None:
    settings = load_settings({"endpoint": "https://r.openai.azure.com",
                              "upstream": {"socks_proxy": url}}, {})
    return settings.upstream.socks_proxy


@pytest.mark.parametrize(("url", "why"), [
    (f"socks5://:{SECRET}@proxy", "has a password but no user"),
    (f"http://:{SECRET}@proxy", "has a password but no user"),
    (f"socks5://j%C3%BCrgen:{SECRET}@proxy", "at most 255 ASCII characters"),
    (f"socks5://alice:{SECRET}%C3%A4@proxy", "at most 255 ASCII characters"),
    (f"socks5://alice:{SECRET}{'x' * 250}@proxy", "at most 255 ASCII characters"),
    ("socks4://j%C3%BCrgen@proxy", "at most 255 ASCII characters"),
])
def test_credentials_the_clients_cannot_send_are_a_config_error(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(url)
    message = str(caught.value)
    assert message.startswith("upstream.socks_proxy") and why in message, message
    assert SECRET not in message and "TOKEN" not in message and "\n" not in message


@pytest.mark.parametrize("url", [
    "http://TOKEN@proxy", "http://TOKEN:@proxy", f"http://j%C3%BCrgen:{SECRET}@proxy",
    f"http://alice:{SECRET}%E7%94%A8@proxy",  # sent as UTF-8 (test_revh1_proxy_urls e2e)
    f"http://alice:{SECRET}%FF@proxy", f"http://%C3%28:{SECRET}@proxy",  # as their bytes
    f"socks5://alice:{'x' * 255}@proxy", f"socks5://alice:p%40{SECRET}@proxy",
    "socks4://alice@proxy", "socks5://proxy", "socks5://@proxy", "socks5://:@proxy",
])
def test_credentials_the_clients_send_still_load(url: str) -> None:
    assert _load(url) == url + (":80" if url.startswith("http") else ":1080")


@pytest.mark.parametrize("url", ["socks5://TOKEN@proxy", "socks5://TOKEN:@proxy",
                                 "socks5h://TOKEN@proxy"])
def test_a_socks5_user_without_a_password_loads_and_is_warned_of(url: str) -> None:
    settings = load_settings({"endpoint": "https://r.openai.azure.com",
                              "upstream": {"socks_proxy": url}}, {})
    warning = settings.proxy_warning
    assert warning is not None and "a user without a password is not sent" in warning
    shown = describe(settings)
    assert f"WARNING: {warning}" in shown and "TOKEN" not in shown


@pytest.mark.parametrize("url", ["socks5://alice:pw@proxy", "socks5://proxy",
                                 "socks4://alice@proxy", "http://TOKEN@proxy"])
def test_no_warning_where_the_credentials_go_as_written(url: str) -> None:
    settings = load_settings({"endpoint": "https://r.openai.azure.com",
                              "upstream": {"socks_proxy": url}}, {})
    assert settings.proxy_warning is None
