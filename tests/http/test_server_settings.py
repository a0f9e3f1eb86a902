"""The `server:` section: read from the file, the environment and flags, validated with
one line naming the key, shown by check-config, and handed to the engine as its limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from azure_openai_proxy.cli import _flags, _serve_parser, main
from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.http.server import ServerLimits
from azure_openai_proxy.runtime.runner import describe, server_limits

BASE = {"endpoint": "https://r.openai.azure.com/"}


def test_defaults() -> None:
    server = load_settings(BASE, {}).server
    assert (server.head_timeout, server.body_timeout, server.keepalive_timeout,
            server.send_timeout, server.max_connections, server.backlog) == (30, 300, 75, 60, 10_000, 65_535)
    assert server_limits(server) == ServerLimits()


def test_file_then_environment_then_flags() -> None:
    config = {**BASE, "server": {"head_timeout": 5, "body_timeout": 50, "max_connections": 100,
                                 "backlog": 64}}
    environ = {"AZURE_OPENAI_PROXY_HEAD_TIMEOUT": "7", "AZURE_OPENAI_PROXY_KEEPALIVE_TIMEOUT": "9"}
    flags = _flags(_serve_parser("x").parse_args(["--max-connections", "12", "--head-timeout", "8"]))
    server = load_settings(config, environ, flags).server
    assert (server.head_timeout, server.body_timeout, server.keepalive_timeout,
            server.max_connections, server.backlog) == (8, 50, 9, 12, 64)
    limits = server_limits(server)
    assert (limits.head_timeout, limits.body_timeout, limits.keepalive_timeout,
            limits.max_connections) == (8, 50, 9, 12)


@pytest.mark.parametrize(("section", "key"), [
    ({"head_timeout": 0}, "server.head_timeout"),
    ({"body_timeout": -1}, "server.body_timeout"),
    ({"keepalive_timeout": "soon"}, "server.keepalive_timeout"),
    ({"max_connections": 0}, "server.max_connections"),
    ({"backlog": 0}, "server.backlog"),
    ({"request_timeout": 60}, "server.request_timeout"),  # removed: named, not ignored
])
def test_a_bad_value_is_one_line_naming_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, "server": section}, {})
    message = str(caught.value)
    assert message.startswith(key) and "\n" not in message


def test_check_config_shows_the_server_section(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("endpoint: https://r.openai.azure.com/\nserver:\n  head_timeout: 4\n"
                      "  max_connections: 500\n")
    assert main(["check-config", "-c", str(config)], {}) == 0
    out = capsys.readouterr().out
    assert "server: head 4 s, body 300 s, keep-alive 75 s, send 60 s; up to 500 connections" in out
    assert describe(load_settings(str(config), {})).count("server:") == 1
