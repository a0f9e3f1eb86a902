"""`python -m azure_openai_proxy.emulator` (what `azure-openai-proxy emulate` runs)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from azure_openai_proxy.emulator.cli import main
from tests.emulator.conftest import call, chat_path, hello


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "azure_openai_proxy.emulator", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_until_signalled(tmp_path: Path, signum: signal.Signals, reserve_port: Callable[[], int]) -> None:
    config = tmp_path / "emulator.yaml"
    config.write_text("deployments:\n  - {name: mine, model: gpt-4o-2024-08-06, kind: chat}\n")
    port = reserve_port()
    process = _start("--listen", f"127.0.0.1:{port}", "--api-key", "cli-key",
                     "--config", str(config), "--ttft-ms", "1")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line and "mine" in line
        url = f"http://127.0.0.1:{port}"
        assert call(url, "POST", chat_path("mine"), hello(), {"api-key": "cli-key"}).status == 200
        assert call(url, "POST", chat_path("gpt-4o"), hello(), {"api-key": "cli-key"}).status == 404
        process.send_signal(signum)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--listen", "nowhere"]) == 2
    assert "--listen" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("deployments: []\n")
    assert main(["--config", str(bad)]) == 2
    assert "deployments" in capsys.readouterr().err
