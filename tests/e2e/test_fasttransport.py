"""The gateway on FastTransport in front of the emulator, driven by the `openai` SDK; the
emulator's request log shows what reached "Azure" over the lean transport."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.upstream.fast import FastTransport
from tests.e2e.conftest import CLIENT_KEY, Emulator, gateway_settings
from tests.e2e.scenarios import spoken_then_transcribed, streamed_chat
from tests.e2e.test_gateway_routes import assert_reached_azure
from tests.support import ServerThread


@pytest.fixture
def fast_gateway(emulator: Emulator) -> Iterator[ServerThread]:
    settings = gateway_settings(emulator.url)
    server = ServerThread(
        lambda: create_app(settings, transport=FastTransport(settings.upstream)),
    ).start()
    yield server
    server.stop()


@pytest.fixture
def fast_client(fast_gateway: ServerThread) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=fast_gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_chat(fast_client: Any, emulator: Emulator) -> None:
    for text in ("Hello there", "And again"):  # the second rides the pooled connection
        reply = fast_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": text}], max_tokens=12
        )
        assert reply.choices[0].message.content
        assert reply.model == "gpt-4o"
        entry = emulator.last()
        assert_reached_azure(entry, "/openai/deployments/gpt-4o/chat/completions")
        assert entry["json"]["messages"] == [{"role": "user", "content": text}]
        headers = _lower(entry["headers"])
        assert headers["content-length"] == str(entry["body_size"])
        assert "transfer-encoding" not in headers


def test_streamed_chat(fast_client: Any, emulator: Emulator) -> None:
    streamed_chat(fast_client)
    assert_reached_azure(emulator.last(), "/openai/deployments/gpt-4o/chat/completions")


def test_multipart_transcription(fast_client: Any, emulator: Emulator) -> None:
    wav, entry = spoken_then_transcribed(fast_client, emulator)
    headers = _lower(entry["headers"])
    # The spooled form goes out streamed, with the length the gateway declared.
    assert headers["content-length"] == str(entry["body_size"])
    assert entry["body_size"] > len(wav)
    assert headers["content-type"].startswith("multipart/form-data; boundary=")


def test_file_upload_and_download(fast_client: Any, emulator: Emulator) -> None:
    line = b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"gpt-4o"}}\n'
    uploaded = fast_client.files.create(file=("batch.jsonl", line, "application/jsonl"), purpose="batch")
    entry = emulator.last()
    assert_reached_azure(entry, "/openai/files")
    assert entry["status"] == 201
    assert fast_client.files.content(uploaded.id).read() == line
    fast_client.files.delete(uploaded.id)
    assert emulator.last()["method"] == "DELETE"


def test_a_cut_stream_ends_with_an_error(fast_client: Any, emulator: Emulator) -> None:
    from openai import APIError

    emulator.fault("gpt-4o", "cut", after_frames=2)
    stream = fast_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "a long answer please"}],
        stream=True, max_tokens=40,
    )
    received = []
    with pytest.raises(APIError):
        for chunk in stream:
            received.append(chunk)
    assert received
    # The gateway and its pool are fine afterwards.
    reply = fast_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content


def test_upstream_errors_keep_their_shape(fast_client: Any, emulator: Emulator) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as caught:
        fast_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_body={"frobnicate": 1}
        )
    assert caught.value.status_code == 400
    reply = fast_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content
