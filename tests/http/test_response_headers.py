"""Outgoing heads are checked like incoming ones: a header with a control character in
its value or a name that is not a token is never written (the answer becomes a 500 in
OpenAI's shape, logged without the value), and framing headers set by the application
never compete with the engine's own."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

import orjson
import pytest

from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply
from azure_openai_proxy.http.wire import UnsafeHeader, answer_head, response_head
from tests.http.engine import engine, read_reply
from tests.http_app import EngineTestApp, Events

SECRET = "s3cr3t-value"


@pytest.mark.parametrize("value", [
    f"{SECRET}\r\nSet-Cookie: x", f"{SECRET}\n", f"{SECRET}\r", f"{SECRET}\0",
    f"{SECRET}\x01", f"{SECRET}\x1b[2J", f"{SECRET}\x7f", f"{SECRET}\x0b",
])
def test_a_control_character_in_a_value_is_refused(value: str) -> None:
    with pytest.raises(UnsafeHeader) as caught:
        response_head(200, [("x-thing", value)], 0, True, "D")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("name", ["bad name", "x:y", "x\r\ny", "", "é", "x\0"])
def test_a_name_that_is_not_a_token_is_refused(name: str) -> None:
    with pytest.raises(UnsafeHeader):
        response_head(200, [(name, "v")], 0, True, "D")


def test_tab_and_latin_1_text_in_a_value_are_fine() -> None:
    head = response_head(200, [("x-a", "a\tb"), ("x-b", "caf\xe9")], 0, True, "D")
    assert b"x-a: a\tb\r\n" in head and b"x-b: caf\xe9\r\n" in head


@pytest.mark.parametrize("name", ["Content-Length", "content-length", "CONTENT-LENGTH",
                                  "Transfer-Encoding", "transfer-encoding", "Connection"])
def test_framing_headers_from_the_application_are_dropped_in_any_case(name: str) -> None:
    head = answer_head(Answer(200, {name: "3"}, b"hello world"), "GET", True, "D").lower()
    assert head.count(b"content-length") == 1 and b"content-length: 11\r\n" in head
    assert b"transfer-encoding" not in head and b"connection" not in head
    extra = answer_head(Answer(200, {}, b"hi"), "GET", False, "D", {name: "keep-alive"}).lower()
    assert extra.count(b"content-length") == 1 and extra.count(b"connection") == 1
    assert b"connection: close\r\n" in extra


class HeaderApp(EngineTestApp):
    """Adds `/bad-header` (a value with a control character), `/stream-length` (a stream
    that sets its own Content-Length) and `/whole-length` (an Answer that does)."""

    def __init__(self, events: Events) -> None:
        super().__init__(events)
        self.routes[("GET", "/bad-header")] = self.bad_header
        self.routes[("GET", "/stream-length")] = self.stream_length
        self.routes[("GET", "/whole-length")] = self.whole_length

    def bad_header(self, request: HttpRequest) -> Awaitable[Reply]:
        async def answer() -> Reply:
            return Answer(200, {"x-token": SECRET + "\x01"}, b"{}")
        return answer()

    def stream_length(self, request: HttpRequest) -> Awaitable[Reply]:
        async def answer() -> Reply:
            out = request.stream(200, {"Content-Length": "2", "Transfer-Encoding": "gzip"})
            await out.write(b"streamed")
            await out.end()
            return out
        return answer()

    def whole_length(self, request: HttpRequest) -> Awaitable[Reply]:
        async def answer() -> Reply:
            return Answer(200, {"Content-Length": "2", "Connection": "close"}, b"whole body")
        return answer()


async def test_an_unsafe_header_becomes_a_500_logged_without_its_value(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with engine(HeaderApp(Events())) as e:
        reader, writer = await e.connect()
        writer.write(b"GET /bad-header HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await read_reply(reader)
        assert status == 500 and "x-token" not in headers
        assert orjson.loads(body)["error"]["code"] == "internal_error"
        writer.close()
    assert caplog.records and SECRET not in caplog.text


async def test_framing_set_by_the_application_never_reaches_the_wire() -> None:
    async with engine(HeaderApp(Events())) as e:
        reader, writer = await e.connect()
        writer.write(b"GET /stream-length HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /whole-length HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /echo?q=3 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await read_reply(reader)
        assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"streamed")
        assert "content-length" not in headers
        status, headers, body = await read_reply(reader)
        assert (status, headers["content-length"], body) == (200, "10", b"whole body")
        assert "connection" not in headers
        assert (await read_reply(reader))[1]["x-query"] == "3"  # keep-alive held
        writer.close()


def _reference_head(status: int, headers: list[tuple[str, object]], length: int | None,
                    keep_alive: bool, date: str, chunked: bool = False) -> bytes:
    """The head written one f-string per header (the engine's general way before its
    lines were joined in C): the fast path must write the same bytes."""
    lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Too Many Requests'}\r\n"]
    for name, value in headers:
        if name.lower() not in ("content-length", "transfer-encoding", "connection"):
            lines.append(f"{name}: {value}\r\n")
    lines.append(f"Date: {date}\r\n")
    if length is not None:
        lines.append(f"Content-Length: {length}\r\n")
    elif chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    return "".join([*lines, "\r\n"]).encode("latin-1")


_LIMITS = [("x-ratelimit-limit-requests", "600"), ("x-ratelimit-remaining-requests", "599"),
           ("x-ratelimit-reset-requests", "100ms"), ("x-ratelimit-limit-tokens", "200000"),
           ("x-ratelimit-remaining-tokens", "198000"), ("x-ratelimit-reset-tokens", "6s")]


@pytest.mark.parametrize("headers", [
    [],
    [("content-type", "application/json")],
    [("content-type", "application/json"), ("x-request-id", "r1"), *_LIMITS],
    [("Content-Length", "3"), (f"x-new-name-{id(object())}", "v"), ("Connection", "x")],
    [("retry-after", 5), ("x-flag", None)],  # not str: formatted as before
    [("x-a", "a\tb"), ("x-b", "caf\xe9"), ("x-empty", "")],
])
@pytest.mark.parametrize(("status", "length", "keep_alive", "chunked"), [
    (200, 11, True, False), (429, 0, False, False), (200, None, True, True),
    (200, None, False, False),
])
def test_the_head_is_the_one_written_a_line_at_a_time(
        headers: list[tuple[str, object]], status: int, length: int | None,
        keep_alive: bool, chunked: bool) -> None:
    expected = _reference_head(status, headers, length, keep_alive, "D", chunked)
    pairs: list[tuple[str, str]] = headers  # type: ignore[assignment]  # non-str on purpose
    assert response_head(status, pairs, length, keep_alive, "D", chunked=chunked) == expected
    assert response_head(status, iter(pairs), length, keep_alive, "D",
                         chunked=chunked) == expected
    assert response_head(status, dict(pairs).items(), length, keep_alive, "D",
                         chunked=chunked) == expected


@pytest.mark.parametrize("status", [0, 42, 99, 1000, 12345, -200])
def test_a_status_that_is_not_three_digits_is_refused_and_not_kept(status: int) -> None:
    with pytest.raises(UnsafeHeader):
        response_head(status, [], 0, True, "D")
    with pytest.raises(UnsafeHeader):  # not remembered as a valid line either
        response_head(status, [], 0, True, "D")


@pytest.mark.parametrize("status", [100, 103, 200, 299, 451, 599, 999])
def test_every_three_digit_status_has_its_line(status: int) -> None:
    head = response_head(status, [], 0, True, "D")
    assert head.startswith(b"HTTP/1.1 %d " % status)


async def test_an_answer_with_a_broken_status_becomes_a_500() -> None:
    app = HeaderApp(Events())

    async def broken(request: HttpRequest) -> Reply:
        return Answer(2000, {"content-type": "application/json"}, b"{}")

    app.routes[("GET", "/broken-status")] = broken
    async with engine(app) as e:
        reader, writer = await e.connect()
        writer.write(b"GET /broken-status HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await read_reply(reader)
        assert status == 500 and orjson.loads(body)["error"]["code"] == "internal_error"
        writer.close()
