from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azure_openai_proxy.emulator.multipart import MultipartError, field, parse_form

CT = "multipart/form-data; boundary=XyZ"


def build(parts: list[tuple[str, bytes, str | None]]) -> bytes:
    out = b""
    for name, data, filename in parts:
        disposition = f'form-data; name="{name}"'
        if filename:
            disposition += f'; filename="{filename}"'
        out += b"--XyZ\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--XyZ--\r\n"


def test_fields_and_files() -> None:
    form = parse_form(build([("model", b"whisper", None), ("file", b"\x00RIFF\r\n", "a.wav"),
                             ("t[]", b"word", None), ("t[]", b"segment", None)]), CT)
    assert field(form, "model") == "whisper"
    assert form["file"][0].filename == "a.wav" and form["file"][0].data == b"\x00RIFF\r\n"
    assert [p.text for p in form["t[]"]] == ["word", "segment"]
    assert field(form, "absent") is None


def test_quoted_boundary() -> None:
    form = parse_form(build([("a", b"1", None)]), 'multipart/form-data; boundary="XyZ"')
    assert field(form, "a") == "1"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", CT),
        (b"--XyZ\r\nno headers", CT),
        (build([("a", b"1", None)]), "application/json"),
        (build([("a", b"1", None)]), "multipart/form-data"),
        (b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--", CT),
    ],
)
def test_malformed_bodies_raise(body: bytes, content_type: str) -> None:
    with pytest.raises(MultipartError):
        parse_form(body, content_type)


@given(st.binary(max_size=400), st.text(max_size=60))
def test_fuzz_never_raises_anything_but_multipart_error(body: bytes, content_type: str) -> None:
    with contextlib.suppress(MultipartError):
        parse_form(body, content_type)


@given(st.lists(st.tuples(st.from_regex(r"[a-z_\[\]]{1,8}", fullmatch=True),
                          st.binary(max_size=50)), min_size=1, max_size=5))
def test_round_trip(parts: list[tuple[str, bytes]]) -> None:
    body = build([(n, d.replace(b"--XyZ", b""), None) for n, d in parts])
    form = parse_form(body, CT)
    assert sum(len(v) for v in form.values()) == len(parts)
