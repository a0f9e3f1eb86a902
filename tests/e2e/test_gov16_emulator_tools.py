"""The emulator answers a Responses call whose `tools` is not an array as Azure does (400
`invalid_type`), where it crashed (a 500 the gateway relayed as Azure's): found by
session 16's bad-input sweep, which could not see the gateway's handling past it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY


@pytest.mark.parametrize("tools", [1, -1, 1.5, True, 1e29, "x", {"type": "function"}])
def test_tools_that_are_not_an_array_are_a_400(gateway: Any, tools: object) -> None:
    answer = httpx.post(gateway.url + "/v1/responses", json={
        "model": "gpt-4o", "input": "hi", "tools": tools},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "tools"
