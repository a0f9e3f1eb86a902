"""`GET /health/deployments`: live state per deployment, client key required, no keys shown."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import AZURE_KEY
from tests.e2e.pools import chat, health, pool_emulator, pool_gateway, pool_settings, sdk


def test_live_state_is_shown_to_key_holders_only_and_never_a_key() -> None:
    with pool_emulator() as emulator, pool_gateway(
        pool_settings(emulator.url, [("dep-a", {"priority": 1}), ("dep-b", {"priority": 2})])
    ) as gateway:
        emulator.fault("dep-a", "429", retry_after=30)
        chat(sdk(gateway))
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(gateway.url + "/health/deployments", timeout=10)
        assert caught.value.code == 401
        body = health(gateway)
        rows = {row["deployment"]: row for row in body["deployments"]}
        assert rows["dep-a"]["cooldown_seconds"] > 20 and not rows["dep-a"]["available"]
        assert rows["dep-b"]["available"] and rows["dep-b"]["circuit"] == "closed"
        assert rows["dep-b"]["remaining_tokens"] is not None
        assert body["routing_strategy"] == "weighted"
        with urllib.request.urlopen(gateway.url + "/health", timeout=10) as response:
            assert response.read() == b'{"status":"ok"}'
        import json

        assert AZURE_KEY not in json.dumps(body) and "api_key" not in json.dumps(body)
