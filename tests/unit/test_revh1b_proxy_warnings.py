"""A proxy URL that loads but does not send what it says is warned of at start and in
check-config (never showing the user or password): a SOCKS4 password, which SOCKS4 has no
field for (python-socks sent the user and dropped it without a word), and a SOCKS URL
given as http_proxy, which is the one in use when socks_proxy is unset (its SOCKS5 user
without a password was warned of only as socks_proxy)."""

from __future__ import annotations

import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.runtime.runner import describe

SECRET = "pw-9f3c1a"


def _warning(field: str, url: str) -> str | None:
    settings = load_settings({"endpoint": "https://r.openai.azure.com",
                              "upstream": {field: url}}, {})
    warning = settings.proxy_warning
    if warning is not None:
        shown = describe(settings)
        assert f"WARNING: {warning}" in shown, shown
        assert SECRET not in shown and "alice" not in shown
    return warning


@pytest.mark.parametrize("field", ["socks_proxy", "http_proxy"])
@pytest.mark.parametrize("url", [f"socks4://alice:{SECRET}@proxy",
                                 f"socks4a://alice:{SECRET}@proxy:1081"])
def test_a_socks4_password_is_warned_of_as_not_sent(field: str, url: str) -> None:
    warning = _warning(field, url)
    assert warning is not None and "SOCKS4 has no password" in warning, warning


def test_a_socks5_user_without_a_password_given_as_http_proxy_is_warned_of() -> None:
    warning = _warning("http_proxy", "socks5://alice@proxy")
    assert warning is not None and "a user without a password is not sent" in warning


@pytest.mark.parametrize("url", ["socks4://alice@proxy", "socks4://alice:@proxy",
                                 "socks4://proxy", f"http://alice:{SECRET}@proxy"])
def test_no_warning_where_socks4_or_http_sends_what_is_written(url: str) -> None:
    assert _warning("http_proxy", url) is None
    assert _warning("socks_proxy", url) is None
