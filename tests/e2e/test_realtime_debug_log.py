"""A gateway run with `--log-level debug` relays a Realtime session: no key (the
client's, Azure's) reaches its stderr, through our logger or the `websockets` library's
own (which writes every handshake header at DEBUG)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from websockets.sync.client import connect

from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator
from tests.e2e.test_realtime import V1, events_until
from tests.e2e.test_reload_shutdown import gateway_process


def test_a_session_at_debug_logs_no_key(emulator: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "models": {V1: [{"deployment_name": V1, "endpoint": emulator.url,
                         "api_key": AZURE_KEY, "api": "v1"}]},
        "client_keys": [CLIENT_KEY]}))
    with gateway_process(config, "--log-level", "debug") as (process, client):
        with connect(f"ws://127.0.0.1:{client.port}/v1/realtime?model={V1}",
                     additional_headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as connection:
            events_until(connection, "session.created")
            connection.send(json.dumps({"type": "response.create", "response": {
                "output_modalities": ["text"]}}))
            events_until(connection, "response.done")
        with connect(f"ws://127.0.0.1:{client.port}/v1/realtime?model={V1}",
                     subprotocols=[f"openai-insecure-api-key.{CLIENT_KEY}", "realtime"],
                     ) as connection:  # a browser's key, as a subprotocol
            events_until(connection, "session.created")
        process.stop()
        output = process.output()
    assert '"route":"realtime"' in output.replace(" ", "")  # (the run was logged)
    assert CLIENT_KEY not in output and AZURE_KEY not in output
