"""Session 23's adversarial run from the upstream side (branch advstream): answers no
correct Azure sends, scripted byte for byte by a raw HTTP/1.1 upstream (`h1raw.py`),
each met by the official `openai` SDK, which must get a clean API error (or the answer),
never a body it cannot parse; and the gateway serves on."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from azure_openai_proxy.gateway.app import create_app
from tests.e2e.conftest import gateway_settings
from tests.e2e.h1raw import Piece, RawUpstream, raw_upstream
from tests.e2e.pools import sdk
from tests.support import ServerThread, serve

CHAT = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}).encode()


def answer(body: bytes, *headers: bytes, content_type: bytes = b"application/json",
           length: int | None = None) -> list[Piece]:
    """A 200 with `body`, its Content-Length `length` (default: the body's)."""
    lines = [b"HTTP/1.1 200 OK", b"Content-Type: " + content_type,
             b"Content-Length: %d" % (len(body) if length is None else length), *headers]
    return [b"\r\n".join(lines) + b"\r\n\r\n" + body]


# The prompt names the answer the upstream gives.
ANSWERS: dict[str, Callable[[], Sequence[Piece]]] = {
    "ok": lambda: answer(CHAT),
    "no content-type": lambda: [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(CHAT) + CHAT],
    "invalid json": lambda: answer(CHAT[:40]),
    "empty": lambda: answer(b""),
    "html page": lambda: answer(b"<html><body>Sign in</body></html>", content_type=b"text/html"),
    "plain text": lambda: answer(b"upstream says hello", content_type=b"text/plain"),
    "a json list": lambda: answer(b"[1, 2]"),
    # A Content-Length 5 bytes short: the JSON is cut, the rest is junk on the connection.
    "short length": lambda: answer(CHAT, length=len(CHAT) - 5),
    # Numbers no count is: `float()` reads them as infinity.
    "infinite quota": lambda: answer(CHAT, b"x-ratelimit-remaining-requests: inf",
                                     b"x-ratelimit-remaining-tokens: 1e400"),
    "infinite wait": lambda: [b"HTTP/1.1 429 Too Many Requests\r\nretry-after-ms: infinity\r\n"
                              b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"],
    # A second answer to one request, in the same read: a server out of step.
    "two answers": lambda: [answer(CHAT)[0] + b"HTTP/1.1 429 Too Many Requests\r\n"
                            b"Retry-After: 99\r\nContent-Length: 4\r\n\r\nnope"],
}


def script(body: bytes) -> Sequence[Piece]:
    return ANSWERS[json.loads(body)["messages"][0]["content"]]()


@pytest.fixture
def upstream() -> Iterator[RawUpstream]:
    with raw_upstream(script) as server:
        yield server


@pytest.fixture
def gateway(upstream: RawUpstream) -> Iterator[ServerThread]:
    with serve(lambda: create_app(gateway_settings(upstream.url, cooldown_seconds=0.2))) as server:
        yield server


def ask(gateway: ServerThread, prompt: str) -> Any:
    return sdk(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}])


@pytest.mark.parametrize("junk", ["invalid json", "empty", "html page", "plain text",
                                  "a json list", "short length"])
def test_a_2xx_chat_answer_that_is_not_a_json_object_is_a_502(
        gateway: ServerThread, junk: str) -> None:
    """On main the SDK got the junk as a 200: `json.JSONDecodeError` (not an API error) for
    a JSON content-type, and for text/html or text/plain a `str` instead of a completion."""
    from openai import InternalServerError

    with pytest.raises(InternalServerError) as caught:
        ask(gateway, junk)
    response = caught.value.response
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_invalid_answer"
    assert "not a JSON object" in error["message"]
    assert ask(gateway, "ok").choices[0].message.content == "hi"  # serving on


def test_a_json_answer_without_its_content_type_is_relayed_as_json(gateway: ServerThread) -> None:
    completion = ask(gateway, "no content-type")
    assert completion.choices[0].message.content == "hi"
    assert completion.model == "gpt-4o"  # the client's name restored: it was parsed


def test_a_second_answer_to_one_request_is_never_taken_for_the_first(
        gateway: ServerThread, upstream: RawUpstream) -> None:
    """On main the second answer's head replaced the first's: the client got a 429 for
    a chat Azure had answered, and the deployment cooled down for its 99 s."""
    assert ask(gateway, "two answers").choices[0].message.content == "hi"
    assert ask(gateway, "ok").choices[0].message.content == "hi"  # not cooling down
    assert upstream.connections == 2  # the one out of step was closed, not reused


def test_an_infinite_remaining_quota_is_ignored_not_a_500(gateway: ServerThread) -> None:
    """On main: OverflowError (int() of infinity) and a 500 for an answered chat."""
    assert ask(gateway, "infinite quota").choices[0].message.content == "hi"


def test_an_infinite_retry_after_is_ignored_not_a_day_of_cooldown(gateway: ServerThread) -> None:
    """On main `retry-after-ms: infinity` cooled the deployment down for 86,400 s (the
    longest wait kept): every request after it was refused for a day. Now it is no
    number, and the cooldown is `cooldown_seconds`'."""
    from openai import RateLimitError

    with pytest.raises(RateLimitError):
        ask(gateway, "infinite wait")
    assert ask(gateway, "ok").choices[0].message.content == "hi"
