"""Azure answers like OpenAI: the Azure-only stream frames that crash ChatGPT-Next-Web,
chatgpt-web and LangChain are cleaned up, errors and parameters are translated, usage
is captured on streams, and v1-API deployments work beside dated ones."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator import EmulatedDeployment, create_emulator_app
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator, emulator_config
from tests.support import ServerThread, serve
from tests.waiting import until

# client model name -> (emulator deployment, api-version or "v1")
DEPLOYMENTS = {
    "gpt-4o": ("gpt-4o", "2025-04-01-preview"),
    "gpt-4o-2024-02": ("gpt-4o", "2024-02-01"),
    "gpt-4o-2023-06": ("gpt-4o", "2023-06-01-preview"),
    "gpt-4o-async": ("gpt-4o-async", "2025-04-01-preview"),
    "o3-mini": ("o3-mini", "2025-04-01-preview"),
    "gpt-4o-v1": ("gpt-4o", "v1"),
}


@pytest.fixture
def azure() -> Iterator[Emulator]:
    base = emulator_config()
    async_filtered = EmulatedDeployment(name="gpt-4o-async", model="gpt-4o-2024-08-06", kind="chat",
                                        async_filter=True)
    config = dataclasses.replace(base, deployments=(*base.deployments, async_filtered))
    with serve(lambda: create_emulator_app(config)) as server:
        yield Emulator(server)


def settings_for(azure: Emulator) -> Settings:
    return load_settings({
        "client_keys": [CLIENT_KEY],
        "deployment_config": [
            {"model_name": model, "deployment_name": deployment, "endpoint": azure.url,
             "api_key": AZURE_KEY, "api_version": version, **({"api": "v1"} if version == "v1" else {})}
            for model, (deployment, version) in DEPLOYMENTS.items()
        ],
    }, {})


@pytest.fixture
def gateway(azure: Emulator, start_gateway: Callable[[Settings], ServerThread]) -> ServerThread:
    return start_gateway(settings_for(azure))


@pytest.fixture
def client(gateway: ServerThread) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0)


async def raw_stream(gateway: ServerThread, body: dict[str, Any]) -> tuple[bytes, list[Any]]:
    """The bytes a naive client sees, and its `data:` payloads parsed as JSON."""
    async with aiohttp.ClientSession() as session, session.post(
        gateway.url + "/v1/chat/completions", json={**body, "stream": True},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
    ) as response:
        assert response.status == 200
        raw = await response.read()
    frames = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
    assert frames[-1] == "[DONE]" and frames.count("[DONE]") == 1
    return raw, [json.loads(frame) for frame in frames[:-1]]


def naive_client_reads(frames: list[Any]) -> str:
    """What ChatGPT-Next-Web / chatgpt-web / older LangChain do with each frame:
    `json.choices[0].delta.content` with no guard."""
    text = ""
    for frame in frames:
        text += frame["choices"][0]["delta"].get("content") or ""
    return text


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-async", "gpt-4o-2023-06"])
async def test_naive_clients_do_not_crash_on_azure_streams(
    model: str, gateway: ServerThread, azure: Emulator
) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 40}
    raw, frames = await raw_stream(gateway, body)
    assert naive_client_reads(frames)
    assert all(frame["object"] == "chat.completion.chunk" for frame in frames)
    assert {frame["model"] for frame in frames} == {model}
    assert len({frame["id"] for frame in frames}) == 1 and frames[0]["id"]
    assert raw.endswith(b"\n\n")  # chatgpt-web needs the newline after the last event
    # Azure really sent the frames that crash those clients; the gateway removed them.
    upstream = azure.last()
    assert upstream["path"].endswith("/chat/completions")


async def test_usage_on_streams(gateway: ServerThread, azure: Emulator) -> None:
    base = {"model": "gpt-4o", "messages": [{"role": "user", "content": "count"}]}
    _, frames = await raw_stream(gateway, base)
    assert not any("usage" in f and f["usage"] for f in frames)  # not asked, not sent...
    assert azure.last()["json"]["stream_options"] == {"include_usage": True}  # ...but asked of Azure
    record_usage = _logged_usage()
    assert record_usage and record_usage["total_tokens"] > 0  # the log line has it
    _, frames = await raw_stream(gateway, {**base, "stream_options": {"include_usage": True}})
    usage_frames = [f for f in frames if f.get("usage")]
    assert len(usage_frames) == 1 and usage_frames[0]["choices"] == []
    assert usage_frames[0]["usage"]["completion_tokens"] > 0


_captured: list[dict[str, Any]] = []


def _logged_usage() -> Any:
    """The usage in the last access-log line (written just after the response ends)."""
    try:
        until(lambda: _captured, timeout=5)
    except AssertionError:
        return None
    return _captured[-1].get("usage")


@pytest.fixture(autouse=True)
def capture_access_log() -> Iterator[None]:
    import logging

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            _captured.append(json.loads(record.getMessage()))

    logger = logging.getLogger("azure_openai_proxy.access")
    handler = Capture()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)
    logger.setLevel(old_level)
    _captured.clear()


def test_reasoning_model_gets_max_completion_tokens_and_no_temperature(client: Any, azure: Emulator) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="o3-mini", messages=[{"role": "user", "content": "think"}], max_tokens=30, temperature=0.2
    )
    reply = raw.parse()
    assert reply.choices[0].message.content
    sent = azure.last()["json"]
    assert sent["max_completion_tokens"] == 30
    assert "max_tokens" not in sent and "temperature" not in sent
    adapted = raw.headers["x-proxy-adapted"]
    assert "max_tokens->max_completion_tokens" in adapted and "temperature" in adapted


def test_old_api_version_drops_newer_parameters(client: Any, azure: Emulator) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-2024-02", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}, parallel_tool_calls=False,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
    )
    chunks = list(stream)
    assert chunks
    entry = azure.last()
    assert entry["query_params"]["api-version"] == ["2024-02-01"]
    assert "stream_options" not in entry["json"] and "parallel_tool_calls" not in entry["json"]
    assert entry["status"] == 200


def test_meaning_changing_parameter_is_refused_with_the_version_needed(client: Any, azure: Emulator) -> None:
    from openai import BadRequestError

    before = len(azure.requests())
    with pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-4o-2024-02", messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        )
    assert "2024-08-01-preview" in str(caught.value)
    assert len(azure.requests()) == before


def test_prompt_filter_is_a_bad_request_with_code_content_filter(client: Any) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "TRIGGER_PROMPT_FILTER"}])
    assert caught.value.code == "content_filter"
    assert caught.value.body["content_filter_result"]  # type: ignore[index]  # categories kept


def test_stream_cut_by_the_filter_surfaces_as_an_error(client: Any) -> None:
    from openai import APIError

    received: list[Any] = []
    with pytest.raises(APIError) as caught:
        for chunk in client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "TRIGGER_COMPLETION_FILTER story"}], stream=True
        ):
            received.append(chunk)
    assert "content" in str(caught.value).lower()
    assert received and received[-1].choices[0].finish_reason == "content_filter"


def test_rate_limit_reaches_the_sdk_with_retry_headers(client: Any, azure: Emulator) -> None:
    from openai import RateLimitError

    azure.fault("gpt-4o", "429", retry_after=90, count=5)
    with pytest.raises(RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    headers = caught.value.response.headers
    assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) > 0
    assert caught.value.code == "rate_limit_exceeded"


def test_v1_api_deployment(client: Any, azure: Emulator) -> None:
    reply = client.chat.completions.create(model="gpt-4o-v1", messages=[{"role": "user", "content": "hi"}])
    assert reply.model == "gpt-4o-v1"
    entry = azure.last()
    assert entry["path"] == "/openai/v1/chat/completions"
    assert "api-version" not in entry["query_params"]
    assert entry["json"]["model"] == "gpt-4o"  # the deployment name
    streamed = list(client.chat.completions.create(model="gpt-4o-v1", messages=[{"role": "user", "content": "hi"}],
                                                   stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)


def test_v1_responses_and_files(client: Any, azure: Emulator) -> None:
    created = client.responses.create(model="gpt-4o-v1", input="hello")
    assert created.output_text and created.model == "gpt-4o-v1"
    assert azure.last()["path"] == "/openai/v1/responses"
    assert azure.last()["json"]["model"] == "gpt-4o"


def test_langchain_chat_openai_streams_through_the_gateway(gateway: ServerThread) -> None:
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model="gpt-4o-async", base_url=gateway.url + "/v1", api_key=CLIENT_KEY,  # type: ignore[arg-type]
                      max_retries=0, streaming=True)
    pieces = [chunk.content for chunk in chat.stream("Tell me a story")]
    assert "".join(str(p) for p in pieces)
    reply = chat.invoke("Hello")
    assert reply.content
