"""upstream/h2/frames.py: request header blocks (decoded by `hpack`, the reference) and
the frames a client writes."""

from __future__ import annotations

import hpack
import pytest

from azure_openai_proxy.errors import HostileInput, UpstreamUnreachable
from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.transport import UpstreamRequest


def _decoded(block: bytes) -> list[tuple[str, str]]:
    return [(str(n), str(v)) for n, v in hpack.Decoder().decode(block)]


def test_a_request_block_holds_the_pseudo_headers_then_the_headers_lowercased() -> None:
    origin = f.parse_origin("https://east.openai.azure.com/openai/deployments/x/chat?api-version=1")
    request = UpstreamRequest("POST", "unused", {"Api-Key": "secret", "Content-Type": "a/b",
                                                 "Host": "ignored", "Connection": "keep-alive"})
    assert _decoded(f.header_block(request, origin, 12)) == [
        (":method", "POST"), (":scheme", "https"), (":authority", "east.openai.azure.com"),
        (":path", "/openai/deployments/x/chat?api-version=1"), ("api-key", "secret"),
        ("content-type", "a/b"), ("content-length", "12"),
    ]


def test_the_secret_is_never_indexed_and_the_block_is_remembered() -> None:
    origin = f.parse_origin("http://127.0.0.1:8080/p")
    request = UpstreamRequest("GET", "unused", {"api-key": "k"})
    block = f.header_block(request, origin, None)
    assert block == f.header_block(request, origin, None)
    assert b"\x10\x07api-key\x01k" in block  # literal never indexed, new name
    assert _decoded(block)[2] == (":authority", "127.0.0.1:8080")


def test_a_declared_content_length_is_kept_when_the_length_is_unknown() -> None:
    origin = f.parse_origin("http://h/p")
    request = UpstreamRequest("POST", "unused", {"content-length": "99"})
    assert _decoded(f.header_block(request, origin, None))[-1] == ("content-length", "99")
    with pytest.raises(HostileInput):
        f.header_block(UpstreamRequest("POST", "u", {"content-length": "x"}), origin, None)


@pytest.mark.parametrize("headers", [{"x": "a\r\nb: c"}, {"x": "a\nb"}, {"bad name": "v"},
                                     {"x:y": "v"}])
def test_a_hostile_header_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(HostileInput):
        f.header_block(UpstreamRequest("GET", "u", headers), f.parse_origin("http://h/"), None)


def test_long_values_use_multi_byte_integers() -> None:
    value = "v" * 1000
    block = f.header_block(UpstreamRequest("GET", "u", {"x-long": value}),
                           f.parse_origin("http://h/"), None)
    assert _decoded(block)[-1] == ("x-long", value)


def test_a_large_block_goes_in_headers_and_continuation_frames() -> None:
    block = bytes(range(256)) * 100  # 25,600 bytes
    wire = f.headers_frames(3, block, end_stream=True, max_frame=16384)
    first = f.FRAME_HEAD.unpack_from(wire, 0)
    assert first == (16384 << 8 | f.HEADERS, f.END_STREAM, 3)
    second = f.FRAME_HEAD.unpack_from(wire, 9 + 16384)
    assert second == ((len(block) - 16384) << 8 | f.CONTINUATION, f.END_HEADERS, 3)
    assert wire[9:9 + 16384] + wire[18 + 16384:] == block


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(UpstreamUnreachable):
        f.parse_origin("ftp://h/")
    assert f.parse_origin("https://[::1]:8443/x").authority == "[::1]:8443"
