"""The official openai SDK, as Azure users run it, parses every text operation."""

from __future__ import annotations

import base64
import json
import struct

import pytest
from openai import AzureOpenAI, OpenAI

from tests.emulator.conftest import ENTRA, GA, KEY, KEY2, PREVIEW
from tests.support import ServerThread

MSG = [{"role": "user", "content": "Tell me about the emulator"}]


def azure(srv: ServerThread, version: str = GA, **kw: object) -> AzureOpenAI:
    options: dict[str, object] = {"api_key": KEY, **kw}
    return AzureOpenAI(azure_endpoint=srv.url, api_version=version, max_retries=0, **options)  # type: ignore[arg-type]


def v1(srv: ServerThread) -> OpenAI:
    return OpenAI(base_url=srv.url + "/openai/v1", api_key=KEY, max_retries=0)


def test_chat_completion(srv: ServerThread) -> None:
    resp = azure(srv).chat.completions.create(model="gpt-4o", messages=MSG, max_tokens=5, seed=3)  # type: ignore[arg-type]
    assert resp.object == "chat.completion" and resp.model == "gpt-4o-2024-08-06"
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.role == "assistant" and resp.choices[0].message.content
    assert resp.usage is not None and resp.usage.completion_tokens == 5
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 5
    again = azure(srv).chat.completions.create(model="gpt-4o", messages=MSG, max_tokens=5, seed=3)  # type: ignore[arg-type]
    assert again.choices[0].message.content == resp.choices[0].message.content
    extra = resp.model_extra or {}
    assert extra["prompt_filter_results"][0]["prompt_index"] == 0


def test_chat_stream_with_usage(srv: ServerThread) -> None:
    stream = azure(srv).chat.completions.create(
        model="gpt-4o-mini", messages=MSG, stream=True, stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = list(stream)
    assert chunks[0].choices == []  # the prompt filter frame
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
    assert len(text.split()) >= 10


def test_chat_tool_call_and_its_stream(srv: ServerThread) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    resp = azure(srv).chat.completions.create(model="gpt-4o", messages=MSG, tools=tools)  # type: ignore[arg-type]
    call = resp.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)  # type: ignore[union-attr]
    with azure(srv).chat.completions.stream(model="gpt-4o", messages=MSG, tools=tools) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert streamed.function.arguments == call.function.arguments  # type: ignore[union-attr]


def test_reasoning_model(srv: ServerThread) -> None:
    resp = azure(srv, "2024-12-01-preview").chat.completions.create(
        model="o3-mini", messages=MSG, max_completion_tokens=100, reasoning_effort="low",  # type: ignore[arg-type]
    )
    assert resp.usage is not None and resp.usage.completion_tokens_details is not None
    assert resp.usage.completion_tokens_details.reasoning_tokens == 8
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as caught:
        azure(srv, "2024-12-01-preview").chat.completions.create(
            model="o3-mini", messages=MSG, max_tokens=10,  # type: ignore[arg-type]
        )
    assert caught.value.code == "unsupported_parameter"


def test_legacy_completions(srv: ServerThread) -> None:
    client = azure(srv)
    resp = client.completions.create(model="gpt-35-turbo-instruct", prompt="Say", max_tokens=7)
    assert resp.object == "text_completion" and resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 7
    chunks = list(client.completions.create(model="gpt-35-turbo-instruct", prompt="Say",
                                            max_tokens=7, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == resp.choices[0].text


def test_embeddings_float_base64_and_dimensions(srv: ServerThread) -> None:
    client = azure(srv)
    floats = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"],
                                      encoding_format="float")
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 1536
    assert floats.data[0].embedding != floats.data[1].embedding
    default = client.embeddings.create(model="text-embedding-3-small", input="a")  # SDK: base64
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    short = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3]],
                                     dimensions=256, encoding_format="float")
    assert len(short.data[0].embedding) == 256
    assert short.usage.prompt_tokens == 3


def test_raw_base64_is_little_endian_float32(srv: ServerThread) -> None:
    raw = azure(srv).embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="a", encoding_format="base64")
    encoded = json.loads(raw.http_response.text)["data"][0]["embedding"]
    decoded = struct.unpack("<1536f", base64.b64decode(encoded))
    assert sum(x * x for x in decoded) == pytest.approx(1.0, rel=1e-5)


def test_responses_create_get_delete_and_stream(srv: ServerThread) -> None:
    client = azure(srv, PREVIEW)
    resp = client.responses.create(model="gpt-4o", input="Hello", max_output_tokens=50)
    assert resp.status == "completed" and resp.output_text
    assert resp.usage is not None and resp.usage.output_tokens == 16
    fetched = client.responses.retrieve(resp.id)
    assert fetched.output_text == resp.output_text
    events = list(client.responses.create(model="gpt-4o", input="Hello", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert deltas == resp.output_text
    client.responses.delete(resp.id)
    from openai import NotFoundError

    with pytest.raises(NotFoundError):
        client.responses.retrieve(resp.id)


def test_v1_family_with_openai_client(srv: ServerThread) -> None:
    client = v1(srv)
    chat = client.chat.completions.create(model="gpt-4o", messages=MSG)  # type: ignore[arg-type]
    assert chat.model == "gpt-4o-2024-08-06" and chat.choices[0].message.content
    emb = client.embeddings.create(model="text-embedding-3-small", input="x")
    assert len(emb.data[0].embedding) == 1536
    resp = client.responses.create(model="o3-mini", input="Think")
    assert resp.output_text and resp.output[0].type == "reasoning"
    models = client.models.list()
    assert "gpt-4o-2024-08-06" in [m.id for m in models.data]


def test_second_key_and_entra_token(srv: ServerThread) -> None:
    resp = azure(srv, api_key=KEY2).chat.completions.create(model="gpt-4o", messages=MSG)  # type: ignore[arg-type]
    assert resp.choices[0].message.content
    entra = AzureOpenAI(azure_endpoint=srv.url, api_version=GA, azure_ad_token=ENTRA, max_retries=0)
    assert entra.chat.completions.create(model="gpt-4o", messages=MSG).choices  # type: ignore[arg-type]


def test_content_filter_errors_through_the_sdk(srv: ServerThread) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as caught:
        azure(srv).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "TRIGGER_PROMPT_FILTER"}])
    assert caught.value.code == "content_filter"
    resp = azure(srv).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "TRIGGER_COMPLETION_FILTER"}])
    assert resp.choices[0].finish_reason == "content_filter"
