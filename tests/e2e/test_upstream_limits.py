"""Through the gateway: an Azure answer past the gateway's limits is a 502 in OpenAI's
shape (never a truncated 200), counted as a 502 in the metrics, and the gateway serves on."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from azure_openai_proxy.gateway.app import create_app
from tests.e2e.conftest import gateway_settings
from tests.e2e.pools import sdk
from tests.support import ServerThread, serve

CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def azure_app() -> web.Application:
    """Answers a chat completion padded to the size the prompt asks for ("pad:N"), or
    with a 10 MB header ("huge-head")."""

    async def chat(request: web.Request) -> web.StreamResponse:
        prompt = (await request.json())["messages"][0]["content"]
        if prompt == "huge-head":
            return web.json_response(CHAT, headers={"x-big": "a" * 10_000_000})
        padded = {**CHAT, "padding": "p" * int(prompt.removeprefix("pad:"))}
        return web.json_response(padded)

    app = web.Application()
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat)
    return app


@pytest.fixture
def gateway() -> Iterator[ServerThread]:
    with serve(azure_app) as azure:
        settings = gateway_settings(azure.url, upstream={"max_answer_bytes": 4096})
        with serve(lambda: create_app(settings)) as server:
            yield server


def ask(gateway: ServerThread, prompt: str) -> Any:
    return sdk(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}]
    )


def count_of(gateway: ServerThread, status: str) -> float:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("azure_openai_proxy_requests_total{")
               and 'route="chat/completions"' in line and f'status="{status}"' in line)


def test_an_answer_over_the_limit_is_a_502_never_a_truncated_200(gateway: ServerThread) -> None:
    from openai import InternalServerError

    assert ask(gateway, "pad:100").choices[0].message.content == "hi"
    with pytest.raises(InternalServerError) as caught:
        ask(gateway, "pad:5000")
    response = caught.value.response
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_answer_too_large"
    assert count_of(gateway, "502") == 1
    assert count_of(gateway, "200") == 1
    assert ask(gateway, "pad:10").choices[0].message.content == "hi"  # serving on


def test_a_ten_megabyte_answer_header_is_a_502(gateway: ServerThread) -> None:
    from openai import InternalServerError

    with pytest.raises(InternalServerError) as caught:
        ask(gateway, "huge-head")
    assert caught.value.response.status_code == 502
    assert json.loads(caught.value.response.text)["error"]["code"] == "upstream_head_too_large"
    assert ask(gateway, "pad:10").choices[0].message.content == "hi"
