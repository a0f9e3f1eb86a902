"""An answer's head with the application's own lines (`Answer.head_lines`, a virtual
key's limits) is checked like any other (branch govcut: the lines are now joined to the
checked headers, not spliced into a finished head)."""

from __future__ import annotations

import pytest

from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.http.wire import UnsafeHeader, answer_head

_DATE = "Thu, 03 Dec 2026 16:00:00 GMT"
_LINES = b"x-ratelimit-remaining-requests: 599\r\n"


def _answer(headers: dict[str, str], lines: bytes = _LINES) -> Answer:
    answer = Answer(200, headers, b"{}")
    answer.head_lines = lines
    return answer


@pytest.mark.parametrize("keep_alive", [True, False])
def test_the_lines_go_after_the_headers_and_before_the_engine_s(keep_alive: bool) -> None:
    head = answer_head(_answer({"content-type": "application/json"}), "POST", keep_alive,
                       _DATE)
    assert head == (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + _LINES
                    + f"Date: {_DATE}\r\nContent-Length: 2\r\n".encode()
                    + (b"" if keep_alive else b"Connection: close\r\n") + b"\r\n")


@pytest.mark.parametrize("headers", [{"x-a": "1\r\nSet-Cookie: a=b"}, {"x-a": "\x00"},
                                     {"x-a": "\u0100"}, {"x a": "1"}])
def test_a_bad_header_beside_the_lines_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(UnsafeHeader):
        answer_head(_answer(headers), "POST", True, _DATE)
