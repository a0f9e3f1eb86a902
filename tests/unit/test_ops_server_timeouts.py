"""The server's timeouts are finite: `server: {head_timeout: .inf}` (YAML's infinity, or
`--head-timeout inf`) passed `gt: 0` and check-config, then the start was an
OverflowError's traceback (the deadlines count sweeps, in integers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from azure_openai_proxy.cli import main
from azure_openai_proxy.config import ConfigError, load_settings

TIMEOUTS = ["head_timeout", "body_timeout", "keepalive_timeout", "send_timeout"]


@pytest.mark.parametrize("name", TIMEOUTS)
def test_an_infinite_server_timeout_is_a_config_error(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"endpoint: https://x.openai.azure.com/\nserver: {{{name}: .inf}}\n")
    assert main(["check-config", "-c", str(config)]) == 2  # main: 0, the table
    err = capsys.readouterr().err
    assert err.startswith(f"config error: server.{name}: ") and len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match=f"^server.{name}: "):  # the flags' way too
        load_settings({"endpoint": "https://x.openai.azure.com/"}, {},
                      {"server": {name: float("inf")}})


def test_a_long_finite_timeout_is_still_taken() -> None:
    settings = load_settings({"endpoint": "https://x.openai.azure.com/",
                              "server": {"keepalive_timeout": 1e12}}, {})
    assert settings.server.keepalive_timeout == 1e12
