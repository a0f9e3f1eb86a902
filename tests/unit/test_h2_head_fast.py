"""`read_head`'s few-call path for a head whose names are all known good
(`_good_head`) against the field-by-field one (`_checked_head`, the reference): the same
headers in the same order, or the same refusal, for heads drawn with values holding CR,
LF, NUL, the separator's neighbours and bytes past ASCII, and names known or not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.upstream.h2.headers import MalformedHead, _checked_head, read_head

_KNOWN = [b"content-type", b"x-request-id", b"apim-request-id", b"x-ms-region", b"date",
          b"content-length", b"x-ratelimit-remaining-tokens"]
_OTHER = [b"Upper", b"bad name", b":path", b"", b"connection", b"x-new-one"]
_VALUES = st.binary(max_size=12) | st.sampled_from(
    [b"", b"\r", b"\n", b"\x00", b"a\rb", b"\x0c", b"\x0e", b"\xe9t\xe9", b"12", b" 5"])


def _outcome(fields: list[tuple[bytes, bytes]]) -> object:
    try:
        status, headers = read_head(fields)
    except MalformedHead as exc:
        return ("refused", str(exc))
    return status, list(headers.items())


def _reference(fields: list[tuple[bytes, bytes]]) -> object:
    try:
        headers = _checked_head(fields)
        if headers.getall("content-length", None) not in (None, ["12"], ["12", "12"]):
            return ("refused", "a bad content-length")
    except MalformedHead as exc:
        return ("refused", str(exc))
    return 200, list(headers.items())


@pytest.fixture(autouse=True, scope="module")
def _known_names() -> None:
    _checked_head([(b":status", b"200"), *((name, b"v") for name in _KNOWN)])


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_KNOWN) | st.sampled_from(_OTHER), _VALUES),
                max_size=8))
def test_as_the_field_by_field_path(rest: list[tuple[bytes, bytes]]) -> None:
    fields = [(b":status", b"200"), *rest]
    assert _outcome(fields) == _reference(fields)


def test_a_known_head_keeps_its_order_and_repeats() -> None:
    fields = [(b":status", b"200"), (b"x-ms-region", b"East US"), (b"date", b"\xe9"),
              (b"x-ms-region", b""), (b"content-type", b"text/event-stream")]
    status, headers = read_head(fields)
    assert status == 200
    assert list(headers.items()) == [("x-ms-region", "East US"), ("date", "\xe9"),
                                     ("x-ms-region", ""), ("content-type", "text/event-stream")]
    assert headers.getall("X-MS-Region") == ["East US", ""]
