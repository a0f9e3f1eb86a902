"""Every route, through the gateway, with the official `openai` SDK as a plain
`OpenAI(base_url=...)` client; the emulator's request log shows exactly what reached
"Azure": the path, a single api-version, our `api-key`, no `Authorization`, the body."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.e2e.conftest import MASKED_AZURE_KEY, Emulator


def assert_reached_azure(entry: dict[str, Any], path: str, *, version: str | None = "2025-04-01-preview") -> None:
    assert entry["path"] == path
    query = parse_qs(entry["query"])
    if version is None:
        assert "api-version" not in query
    else:
        assert query["api-version"] == [version]  # exactly one
    headers = {k.lower(): v for k, v in entry["headers"].items()}
    assert headers["api-key"] == MASKED_AZURE_KEY
    assert "authorization" not in headers


def test_chat_completion(client: Any, emulator: Emulator) -> None:
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello there"}], max_tokens=12
    )
    assert reply.choices[0].message.content
    assert reply.model == "gpt-4o"  # the name the client asked for
    assert reply.usage.completion_tokens <= 12
    entry = emulator.last()
    assert_reached_azure(entry, "/openai/deployments/gpt-4o/chat/completions")
    assert entry["json"]["messages"] == [{"role": "user", "content": "Hello there"}]


def test_chat_completion_stream(client: Any, emulator: Emulator) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Stream please"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert all(c.choices for c in chunks)  # Azure's empty-choices frames never reach clients
    assert {c.model for c in chunks} == {"gpt-4o"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert_reached_azure(emulator.last(), "/openai/deployments/gpt-4o/chat/completions")


def test_mapped_model_name_goes_to_its_deployment(client: Any, emulator: Emulator) -> None:
    client.chat.completions.create(model="gpt-35-turbo", messages=[{"role": "user", "content": "x"}])
    assert_reached_azure(emulator.last(), "/openai/deployments/gpt-35-turbo/chat/completions")
    # The '.'-stripping fallback: gpt-3.5-turbo -> gpt-35-turbo.
    reply = client.chat.completions.create(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "x"}])
    assert reply.model == "gpt-3.5-turbo"
    assert_reached_azure(emulator.last(), "/openai/deployments/gpt-35-turbo/chat/completions")


def test_legacy_completions(client: Any, emulator: Emulator) -> None:
    reply = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=5)
    assert reply.choices[0].text
    assert_reached_azure(emulator.last(), "/openai/deployments/gpt-35-turbo-instruct/completions")
    streamed = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices)


def test_embeddings(client: Any, emulator: Emulator) -> None:
    reply = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=64)
    assert [len(d.embedding) for d in reply.data] == [64, 64]
    assert_reached_azure(emulator.last(), "/openai/deployments/text-embedding-3-small/embeddings")
    again = client.embeddings.create(model="text-embedding-3-small", input="a", encoding_format="base64")
    assert len(again.data[0].embedding) > 0


def test_models_list_and_retrieve(client: Any, emulator: Emulator) -> None:
    before = len(emulator.requests())
    listed = client.models.list()
    ids = [m.id for m in listed.data]
    assert "gpt-4o" in ids and "whisper-1" in ids
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    assert len(emulator.requests()) == before  # answered from configuration, not Azure
    from openai import NotFoundError

    with pytest.raises(NotFoundError):
        client.models.retrieve("no-such-model-here")


def test_images_generate(client: Any, emulator: Emulator) -> None:
    image = client.images.generate(model="dall-e-3", prompt="a lighthouse", response_format="b64_json")
    assert image.data[0].b64_json
    assert_reached_azure(emulator.last(), "/openai/deployments/dall-e-3/images/generations")


def test_images_edit_multipart(client: Any, emulator: Emulator) -> None:
    png = _tiny_png()
    image = client.images.edit(model="dall-e-3", image=("in.png", png, "image/png"), prompt="add a hat",
                               response_format="b64_json")
    assert image.data[0].b64_json
    entry = emulator.last()
    assert_reached_azure(entry, "/openai/deployments/dall-e-3/images/edits")
    assert entry["body_size"] > len(png)


def test_audio_transcription_and_translation(client: Any, emulator: Emulator) -> None:
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello world",
                                     response_format="wav").read()
    assert wav[:4] == b"RIFF"
    assert_reached_azure(emulator.last(), "/openai/deployments/tts/audio/speech")
    text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", io.BytesIO(wav), "audio/wav"))
    assert isinstance(text.text, str) and text.text
    assert_reached_azure(emulator.last(), "/openai/deployments/whisper/audio/transcriptions")
    # The SDK marks `audio.translations.create` deprecated (OpenAI's endpoint ends on
    # 2027-02-26; Azure's Whisper deployments serve it): the same multipart request, by
    # the SDK's own call for a route it does not type (a DeprecationWarning each run).
    srt = client.post("/audio/translations", cast_to=str,
                      body={"model": "whisper-1", "response_format": "srt"},
                      files=[("file", ("a.wav", wav, "audio/wav"))],
                      options={"headers": {"Content-Type": "multipart/form-data"}})
    assert "-->" in srt
    assert_reached_azure(emulator.last(), "/openai/deployments/whisper/audio/translations")
    assert emulator.last()["body_size"] > len(wav)  # the file, in the multipart body


def test_responses_api(client: Any, emulator: Emulator) -> None:
    created = client.responses.create(model="gpt-4o", input="Tell me something")
    assert created.output_text
    assert created.model == "gpt-4o"
    entry = emulator.last()
    assert_reached_azure(entry, "/openai/responses")
    assert entry["json"]["model"] == "gpt-4o"  # the deployment name, mapped
    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id
    events = list(client.responses.create(model="gpt-4o", input="Stream it", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    client.responses.delete(created.id)
    assert emulator.last()["method"] == "DELETE"


def test_files_and_batches(client: Any, emulator: Emulator) -> None:
    line = b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}}\n'
    uploaded = client.files.create(file=("batch.jsonl", line, "application/jsonl"), purpose="batch")
    assert uploaded.id
    entry = emulator.last()
    assert_reached_azure(entry, "/openai/files")
    assert entry["status"] == 201
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert any(f.id == uploaded.id for f in client.files.list())
    assert client.files.content(uploaded.id).read() == line
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert client.batches.retrieve(batch.id).id == batch.id
    assert any(b.id == batch.id for b in client.batches.list())
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.id == batch.id
    assert_reached_azure(emulator.last(), f"/openai/batches/{batch.id}/cancel")
    client.files.delete(uploaded.id)


def _tiny_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x00\xff\x00\x00"
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


async def test_engines_embeddings_path_and_stray_query(gateway: Any, emulator: Emulator) -> None:
    """The old `/v1/engines/{model}/embeddings` path, with ChatGPT-Next-Web's stray
    `path=` query parameters, which must not reach Azure."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(
        gateway.url + "/v1/engines/text-embedding-3-small/embeddings?path=v1&path=embeddings",
        json={"input": "hello"}, headers={"Authorization": "Bearer client-key-for-tests"},
    ) as response:
        assert response.status == 200
        data = await response.json()
    assert len(data["data"][0]["embedding"]) == 1536
    entry = emulator.last()
    assert_reached_azure(entry, "/openai/deployments/text-embedding-3-small/embeddings")
    assert "path" not in entry["query_params"]


def test_a_forms_model_too_long_to_name_one_is_a_400_never_read_whole(
    client: Any, emulator: Emulator,
) -> None:
    """A form's `model` was read whole (a field of megabytes into one string) and
    stripped: past 1 KiB it names no model (Azure's deployment names are 64 characters at
    most), so it is a 400 on `model`, and Azure is not called."""
    import openai

    before = len(emulator.requests())
    for model in ("x" * 2_000, "whisper-1" + " " * 4 * 1024 * 1024):
        with pytest.raises(openai.BadRequestError) as refused:
            client.audio.transcriptions.create(
                model=model, file=("a.wav", b"RIFF" + bytes(64), "audio/wav"))
        assert refused.value.param == "model" and "too long" in refused.value.message
    assert len(emulator.requests()) == before
    # a model name of the usual length is served as before
    answer = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", b"RIFF" + bytes(64), "audio/wav"))
    assert isinstance(answer.text, str)
