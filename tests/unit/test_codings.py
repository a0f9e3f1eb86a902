"""Content-Encoding of request bodies: decoded when gzip or deflate, bounded, else 415."""

from __future__ import annotations

import gzip
import zlib

import pytest

from azure_openai_proxy.codings import decode_body
from azure_openai_proxy.errors import BodyTooLarge, UnsupportedMediaType

BODY = b'{"model": "gpt-4o", "messages": []}'


@pytest.mark.parametrize("coding, data", [
    ("gzip", gzip.compress(BODY, mtime=0)),
    ("GZIP", gzip.compress(BODY, mtime=0)),
    ("x-gzip", gzip.compress(BODY, mtime=0)),
    ("deflate", zlib.compress(BODY)),
    ("identity", BODY),
    ("gzip, identity", gzip.compress(BODY, mtime=0)),
    ("deflate, gzip", gzip.compress(zlib.compress(BODY), mtime=0)),
])
def test_known_codings_are_decoded(coding: str, data: bytes) -> None:
    assert decode_body(data, coding, 1000) == BODY


def test_a_small_bomb_is_refused_not_inflated() -> None:
    bomb = gzip.compress(b"0" * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(BodyTooLarge):
        decode_body(bomb, "gzip", 1_000_000)


@pytest.mark.parametrize("coding", ["br", "compress", "zstd", "gzip, br"])
def test_other_codings_are_415(coding: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        decode_body(BODY, coding, 1000)
    assert caught.value.http_status == 415


@pytest.mark.parametrize("data", [b"not gzip at all", gzip.compress(BODY, mtime=0)[:-6]])
def test_corrupt_or_truncated_bodies_are_415(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType):
        decode_body(data, "gzip", 1000)
