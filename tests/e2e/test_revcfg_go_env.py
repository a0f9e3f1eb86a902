"""The Go tool's image is switched for ours with its environment unchanged: viper's
AutomaticEnv read its flags from the environment too (`CONFIGFILE`, `LISTEN`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from openai import OpenAI

from tests.e2e.conftest import AZURE_KEY, Emulator
from tests.processes import cli, running


def test_configfile_and_listen_from_the_environment(
        emulator: Emulator, tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    # Both were ignored: no ./config.yaml, so "nothing to serve", and, given one, the
    # gateway listened on 0.0.0.0:8080 whatever LISTEN said.
    port = reserve_port()
    config = tmp_path / "conf" / "proxy.yaml"
    config.parent.mkdir()
    config.write_text(f"""\
deployment_config:
  - {{deployment_name: gpt-35-turbo, model_name: gpt-3.5-turbo, endpoint: "{emulator.url}/",
     api_key: "{AZURE_KEY}", api_version: 2024-02-01}}
client_keys: [team-key]
""")
    env = {"CONFIGFILE": str(config), "LISTEN": f"127.0.0.1:{port}"}
    with running(cli(), port=port, env=env, cwd=tmp_path):
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="team-key",
                        max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hi"}])
        assert reply.model == "gpt-3.5-turbo"
        assert emulator.last()["path"] == "/openai/deployments/gpt-35-turbo/chat/completions"
