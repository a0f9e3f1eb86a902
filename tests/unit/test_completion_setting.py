"""`default_completion_tokens`: the completion reserved when a request names no maximum."""

from __future__ import annotations

import pytest

from azure_openai_proxy.config import ConfigError, load_settings

_BASE = {"endpoint": "https://example.openai.azure.com/", "api_key": "k",
         "client_keys": ["c"]}


def test_the_default_completion_is_read_from_the_config_file() -> None:
    assert load_settings(_BASE, {}).default_completion_tokens == 1024
    assert load_settings({**_BASE, "default_completion_tokens": 256},
                         {}).default_completion_tokens == 256


def test_a_negative_default_completion_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="default_completion_tokens"):
        load_settings({**_BASE, "default_completion_tokens": -1}, {})
