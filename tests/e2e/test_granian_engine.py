"""The gateway on granian (`python -m bench.granian_engine`, the benchmark's
`gateway-1w-granian`), driven by the official `openai` SDK, in front of the bundled
emulator: a chat completion, a stream, errors in OpenAI's shape. The engine runs as the
benchmark runs it (granian's process manager, one worker), on a Unix socket so that no
port is guessed."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("granian", reason="granian is not installed: pip install -e '.[bench]'")

import httpx
import openai

from azure_openai_proxy.emulator import create_emulator_app
from bench.granian_engine import READY
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, MODELS, Emulator, emulator_config
from tests.processes import ROOT
from tests.support import serve


@pytest.fixture(scope="module")
def azure() -> Iterator[Emulator]:
    with serve(lambda: create_emulator_app(emulator_config())) as server:
        yield Emulator(server)


def _wait_for_line(process: subprocess.Popen[str], wanted: str, timeout: float) -> list[str]:
    """Read the child's output until `wanted` (a wait on the pipe, not a sleep)."""
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(deadline - time.monotonic()):
                break
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line.rstrip())
            if line.strip() == wanted:
                return seen
    raise RuntimeError("the granian engine did not start:\n" + "\n".join(seen))


@pytest.fixture(scope="module")
def socket_path(azure: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("granian")
    config = workdir / "gateway.json"  # JSON is YAML: the gateway reads it as its config file
    config.write_text(json.dumps({
        "client_keys": [CLIENT_KEY],
        "log_level": "warning",
        "deployment_config": [
            {"model_name": model, "deployment_name": deployment, "endpoint": azure.url,
             "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"}
            for model, deployment in MODELS.items()
        ],
    }))
    path = workdir / "gateway.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.granian_engine", "-c", str(config), "--uds", str(path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        _wait_for_line(process, READY, 30)
        yield path
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def client(socket_path: Path) -> Iterator[openai.OpenAI]:
    http = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), timeout=30)
    with http:
        yield openai.OpenAI(base_url="http://gateway/v1", api_key=CLIENT_KEY, max_retries=0,
                            http_client=http)


def test_a_chat_completion_through_granian(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say hello in three words."}],
        max_tokens=16,
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.model == "gpt-4o"  # the client's name, as under FastServer
    assert reply.usage is not None and reply.usage.total_tokens > 0


def test_a_stream_through_granian_ends_cleanly(client: openai.OpenAI) -> None:
    chunks: list[Any] = list(client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=24, stream=True,
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    # Azure's empty-choices prompt-filter frame is gone, as under FastServer.
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_an_unknown_model_is_openais_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model",
                                       messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"


def test_a_wrong_key_is_openais_401_and_never_echoed(socket_path: Path) -> None:
    http = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), timeout=30)
    with http:
        bad = openai.OpenAI(base_url="http://gateway/v1", api_key="sk-wrong-key-4711",
                            max_retries=0, http_client=http)
        with pytest.raises(openai.AuthenticationError) as caught:
            bad.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 401
    assert "sk-wrong-key-4711" not in caught.value.response.text


def test_malformed_json_is_openais_400(socket_path: Path) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), timeout=30) as http:
        reply = http.post("http://gateway/v1/chat/completions", content=b'{"model": "gpt-4o",',
                          headers={"authorization": f"Bearer {CLIENT_KEY}",
                                   "content-type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"]


@pytest.mark.parametrize("target", ["/v1/files/%2e%2e%2fsecret", "/v1/files/..%2Fsecret",
                                    "/v1/files/a%3Fb", "/v1/files/a%23b", "/v1/files/%0d%0a"])
def test_hostile_ids_decoded_by_granian_are_still_refused(socket_path: Path, azure: Emulator,
                                                          target: str) -> None:
    """granian hands over the path decoded; the adapter encodes it again, and whatever
    the gateway then makes of it is an OpenAI-shaped 4xx that never reaches Azure."""
    before = len(azure.requests())
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), timeout=30) as http:
        reply = http.get("http://gateway" + target, headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert 400 <= reply.status_code < 500
    assert reply.json()["error"]["message"]
    assert len(azure.requests()) == before
