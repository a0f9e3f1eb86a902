"""`headers.read_head` against its rule written plainly (`startswith`, not the byte
compare it uses; `:status` first, a content-length of digits: the fixes of session 14;
lower-case token names, no connection-specific field: session 16):
the same head, or the same refusal, for any fields."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azure_openai_proxy.upstream.h2.headers import MalformedHead, read_head

_NAME = st.one_of(st.sampled_from([b":status", b":path", b":", b"", b"server", b"x:y",
                                   b"content-length", b"Content-Length",
                                   b"connection", b"transfer-encoding", b"x-ms-region",
                                   b"x y", b"x\xe9"]),
                  st.binary(max_size=6))
_VALUE = st.one_of(st.sampled_from([b"200", b"404", b"20x", b"2000", b"ok", b"-5", b"1_0",
                                    b" 5", b"\xb2"]),
                   st.binary(max_size=6))


# RFC 9113 §8.2: a name is lower-case token characters (RFC 9110 §5.6.2), and no
# field of HTTP/1.1's connection management
_TOKEN_LOWER = set("!#$%&'*+-.^_`|~") | set(string.digits) | set(string.ascii_lowercase)
_HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade"}


def _plain(fields: list[tuple[bytes, bytes]]) -> tuple[int, list[tuple[str, str]]] | None:
    # `:status` first and only there (RFC 9113 8.3), then regular fields; a
    # content-length of ASCII digits, the same if repeated (RFC 9110 8.6)
    if not fields or fields[0][0] != b":status":
        return None
    value = fields[0][1]
    if len(value) != 3 or not value.isdigit():
        return None
    status, headers = int(value), []
    for name, value in fields[1:]:
        if (not name or name.startswith(b":")
                or any(c not in _TOKEN_LOWER for c in name.decode("latin-1"))
                or name.decode("latin-1") in _HOP_BY_HOP
                or any(c in value for c in (b"\r", b"\n", b"\0"))):
            return None
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    lengths = {value for name, value in headers if name.lower() == "content-length"}
    if lengths and (len(lengths) > 1 or not all("0" <= c <= "9" for c in min(lengths))
                    or not min(lengths)):
        return None
    return (status, headers) if status >= 100 else None


@given(st.lists(st.tuples(_NAME, _VALUE), max_size=6), st.booleans())
def test_the_same_head_or_refusal_as_the_plain_rule(fields: list[tuple[bytes, bytes]],
                                                    answered: bool) -> None:
    if answered:  # most heads: a good status first
        fields = [(b":status", b"200"), *fields]
    expected = _plain(fields)
    if expected is None:
        with pytest.raises(MalformedHead):
            read_head(fields)
        return
    status, headers = read_head(fields)
    assert (status, list(headers.items())) == expected
