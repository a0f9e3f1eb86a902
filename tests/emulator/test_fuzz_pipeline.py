"""Hypothesis throws malformed requests at a served emulator: never a 500, always JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.emulator.config import EmulatedDeployment, EmulatorConfig
from tests.emulator.conftest import KEY, call
from tests.support import ServerThread, serve

PATHS = [
    "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
    "/openai/deployments/o3-mini/chat/completions?api-version=2025-01-01-preview",
    "/openai/deployments/gpt-35-turbo-instruct/completions?api-version=2023-05-15",
    "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-02-01",
    "/openai/deployments/tts/audio/speech?api-version=2025-04-01-preview",
    "/openai/deployments/dall-e-3/images/generations?api-version=2024-10-21",
    "/openai/deployments/whisper/audio/transcriptions?api-version=2024-10-21",
    "/openai/v1/chat/completions",
    "/openai/v1/responses",
    "/openai/v1/embeddings",
    "/openai/batches?api-version=2025-03-01-preview",
    "/openai/files?api-version=2025-03-01-preview",
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
FIELDS = st.sampled_from([
    "messages", "model", "input", "prompt", "n", "max_tokens", "max_completion_tokens",
    "stream", "stream_options", "tools", "tool_choice", "functions", "function_call",
    "response_format", "seed", "dimensions", "encoding_format", "voice", "size",
    "response_format", "reasoning_effort", "input_file_id", "endpoint", "completion_window",
    "max_output_tokens", "instructions", "n", "echo", "best_of", "speed", "file",
])
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool"])},
    optional={"content": JSON, "tool_calls": JSON, "name": JSON},
)


@pytest.fixture(scope="module")
def unlimited(config: EmulatorConfig) -> Iterator[ServerThread]:
    """Deployments without quotas, so one huge request cannot hide bugs behind 429s."""
    free = replace(config, deployments=tuple(replace(d, tpm=None, rpm=None)
                                              for d in config.deployments))
    with serve(lambda: create_emulator_app(free)) as srv:
        yield srv


def bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(FIELDS, JSON, max_size=5).flatmap(
        lambda extra: st.fixed_dictionaries(
            {"model": st.sampled_from(["gpt-4o", "o3-mini", "text-embedding-3-small", "nope"]),
             "messages": st.lists(MESSAGE, max_size=3)}
        ).map(lambda base: {**base, **extra})
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), body=bodies())
def test_fuzzed_json_bodies_get_azure_answers(unlimited: ServerThread, path: str, body: dict[str, Any]) -> None:
    reply = call(unlimited.url, "POST", path, json.dumps(body).encode(),
                 {"api-key": KEY, "Content-Type": "application/json"})
    assert reply.status < 500, (reply.status, reply.body[:300])
    if reply.status >= 400:
        assert isinstance(reply.json(), dict)


CHAT_FIELDS = st.sampled_from([
    "n", "max_tokens", "max_completion_tokens", "stream", "stream_options", "tools",
    "tool_choice", "functions", "function_call", "response_format", "seed", "stop", "user",
    "reasoning_effort", "temperature", "logit_bias", "parallel_tool_calls", "store",
])
TOOL = st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=5)}, optional={"parameters": JSON})})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from([*PATHS[:2], "/openai/v1/chat/completions"]),
    messages=st.lists(MESSAGE, min_size=1, max_size=3),
    extra=st.dictionaries(CHAT_FIELDS, JSON | st.lists(TOOL, max_size=2), max_size=4),
    stream=st.booleans(),
)
def test_fuzzed_chat_requests_get_azure_answers(
    unlimited: ServerThread, path: str, messages: list[Any], extra: dict[str, Any], stream: bool
) -> None:
    body = {"model": "gpt-4o", "messages": messages, **extra}
    if stream:
        body["stream"] = True
    reply = call(unlimited.url, "POST", path, json.dumps(body).encode(),
                 {"api-key": KEY, "Content-Type": "application/json"})
    assert reply.status < 500, (reply.status, reply.body[:300])
    if reply.status == 200 and body.get("stream") is True:
        assert reply.body.endswith(b"data: [DONE]\n\n")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"]),
       path=st.sampled_from([*PATHS, "/openai/", "/openai/v1/", "/x"]) | st.text(
           alphabet="abcdefgh/-_.?=&%", max_size=40).map(lambda p: "/openai/" + p),
       body=st.binary(max_size=200),
       content_type=st.sampled_from(["application/json", "multipart/form-data; boundary=b",
                                     "text/plain", ""]))
def test_fuzzed_raw_requests_never_crash(
    unlimited: ServerThread, method: str, path: str, body: bytes, content_type: str
) -> None:
    headers = {"api-key": KEY}
    if content_type:
        headers["Content-Type"] = content_type
    reply = call(unlimited.url, method, path, body, headers)
    assert reply.status < 500, (reply.status, reply.body[:300])
    assert isinstance(reply.json(), dict | list) or reply.status == 200


@pytest.fixture(scope="module")
def newer_rules(config: EmulatorConfig) -> Iterator[ServerThread]:
    """The rules that came with the emulator audit: the gpt-5 family's temperature,
    gpt-5-chat's max_tokens limit, context windows (a tiny one, so prompts reach it),
    obfuscation padding."""
    deployments = (EmulatedDeployment("gpt-5-mini", "gpt-5-mini-2025-08-07", "chat"),
                   EmulatedDeployment("gpt-5-chat", "gpt-5-chat-2025-08-07", "chat"),
                   EmulatedDeployment("tiny", "gpt-4o-2024-08-06", "chat", context_tokens=12),
                   EmulatedDeployment("instruct", "gpt-35-turbo-instruct-0914", "completions",
                                      context_tokens=12))
    with serve(lambda: create_emulator_app(replace(config, deployments=deployments))) as srv:
        yield srv


ODD = JSON | st.integers() | st.floats() | st.sampled_from([2**63, -(2**63), 10**30, 1e308])
NEWER_FIELDS = st.sampled_from(["max_tokens", "max_completion_tokens", "temperature", "top_p",
                                "stream_options", "messages", "prompt", "n"])
OPTIONS = st.dictionaries(st.sampled_from(["include_usage", "include_obfuscation", "x"]), ODD,
                          max_size=2)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deployment=st.sampled_from(["gpt-5-mini", "gpt-5-chat", "tiny", "instruct"]),
       extra=st.dictionaries(NEWER_FIELDS, ODD | OPTIONS, max_size=4), stream=st.booleans())
def test_fuzzed_newer_rules_get_azure_answers(
    newer_rules: ServerThread, deployment: str, extra: dict[str, Any], stream: bool
) -> None:
    operation = "completions" if deployment == "instruct" else "chat/completions"
    path = f"/openai/deployments/{deployment}/{operation}?api-version=2025-04-01-preview"
    body = {"messages": [{"role": "user", "content": "one two three"}], "prompt": "a b", **extra}
    if stream:
        body["stream"] = True
    reply = call(newer_rules.url, "POST", path, json.dumps(body).encode(),
                 {"api-key": KEY, "Content-Type": "application/json"})
    assert reply.status < 500, (reply.status, reply.body[:300])
    if reply.status >= 400:
        assert isinstance(reply.json()["error"]["message"], str)
