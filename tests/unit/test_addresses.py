"""Addresses at load: which endpoints send credentials in clear, and what check-config says."""

from __future__ import annotations

from pathlib import Path

import pytest

from azure_openai_proxy.addresses import cleartext_host
from azure_openai_proxy.cli import main


@pytest.mark.parametrize("endpoint, host", [
    ("http://east.openai.azure.com", "east.openai.azure.com"),
    ("http://10.0.0.5:8001", "10.0.0.5"),
    ("http://[fd00::5]:8001", "fd00::5"),
    ("http://emulator:8001", "emulator"),
    ("http://127.0.0.1:8001", None), ("http://127.8.9.1", None), ("http://[::1]:8001", None),
    ("http://localhost:8001", None), ("http://api.localhost", None),
    ("http://localhost.:8001", None), ("http://api.localhost.", None),  # fully qualified
    ("http://east.openai.azure.com.", "east.openai.azure.com."),
    ("https://east.openai.azure.com", None),
])
def test_cleartext_host(endpoint: str, host: str | None) -> None:
    assert cleartext_host(endpoint) == host


def test_check_config_warns_of_keys_sent_in_clear(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # An http:// endpoint off this host was taken without a word: the api-key (or the
    # client's key passed through, or the Entra token) went over the network in clear.
    config = tmp_path / "config.yaml"
    config.write_text(
        "client_keys: [client-key-1]\n"
        "deployment_config:\n"
        "  - {model_name: a, deployment_name: a, endpoint: 'http://east.example.com/', api_key: k}\n"
        "  - {model_name: b, deployment_name: b, endpoint: 'http://127.0.0.1:8001', api_key: k}\n"
        "  - {model_name: c, deployment_name: c, endpoint: 'https://west.example.com', api_key: k}\n")
    assert main(["check-config", "-c", str(config)], {}) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "unencrypted" in line]
    assert warnings == [
        "WARNING: http:// endpoints off this host (east.example.com): each request's api-key "
        "(or bearer token) crosses the network unencrypted; use https://"]


def test_no_warning_for_loopback_and_https(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"], {"AZURE_OPENAI_ENDPOINT": "http://localhost:8001",
                                   "AZURE_OPENAI_MODEL_MAPPER": "a=a"}) == 0
    assert "unencrypted" not in capsys.readouterr().out
