"""Session 23's audit: the emulator answered a Responses `reasoning` that is not an object
(`"5"`, `1`, `[]`) and a speech `voice` or `response_format` that is a list or an object
with a 500 (AttributeError, "unhashable type"), where Azure answers 400. Through the
gateway a client's malformed body so looked like a failing deployment (cooldowns, 503s
for every other client of the tests)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.emulator.conftest import KEY, call
from tests.support import ServerThread

RESPONSES = "/openai/responses?api-version=2025-04-01-preview"
SPEECH = "/openai/deployments/tts/audio/speech?api-version=2025-04-01-preview"


@pytest.mark.parametrize(("path", "body", "param"), [
    (RESPONSES, {"model": "gpt-4o", "input": "hi", "reasoning": "5"}, "reasoning"),
    (RESPONSES, {"model": "gpt-4o", "input": "hi", "reasoning": 1}, "reasoning"),
    (RESPONSES, {"model": "gpt-4o", "input": "hi", "reasoning": []}, "reasoning"),
    ("/openai/v1/responses", {"model": "gpt-4o", "input": "hi", "reasoning": True}, "reasoning"),
    (SPEECH, {"input": "hi", "voice": ["alloy"]}, "voice"),
    (SPEECH, {"input": "hi", "voice": "alloy", "response_format": []}, "response_format"),
    (SPEECH, {"input": "hi", "voice": "alloy", "response_format": {"type": "x"}},
     "response_format"),
])
def test_a_field_of_the_wrong_type_is_a_400(srv: ServerThread, path: str, body: dict[str, Any],
                                            param: str) -> None:
    reply = call(srv.url, "POST", path, json.dumps(body).encode(),
                 {"api-key": KEY, "Content-Type": "application/json"})
    assert reply.status == 400, (reply.status, reply.body[:300])  # main: 500
    assert reply.json()["error"]["param"] == param
