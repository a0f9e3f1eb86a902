"""`Inflater` (session 23, branch advstream): a compressed answer inflated piece by
piece, never past `INFLATION_MOST` times what was fed (after a first MiB), however it is
cut: a bomb is refused before it inflates."""

from __future__ import annotations

import gzip
import json
import random
import zlib

import pytest

from azure_openai_proxy.errors import UpstreamInvalidAnswer
from azure_openai_proxy.upstream.transport import INFLATION_MOST, Inflater


def inflated(body: bytes, piece: int) -> bytes:
    inflater = Inflater()
    return b"".join(inflater.decompress(body[at:at + piece])
                    for at in range(0, len(body), piece)) + inflater.flush()


def chat_stream(frames: int) -> bytes:
    words = random.Random(7).choices(["the", " cat", " sat", " on", " a", " mat", ".", "\n"],
                                     k=frames)
    return b"".join(b"data: " + json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None,
                     "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}],
    }).encode() + b"\n\n" for word in words)


@pytest.mark.parametrize("piece", [1, 7, 1024, 16384, 1 << 20])
@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress])
def test_a_stream_compressed_as_well_as_streams_get_inflates_whole_however_cut(
        piece: int, compress: object) -> None:
    stream = chat_stream(20_000)
    body = compress(stream)  # type: ignore[operator]
    assert len(stream) / len(body) > 100  # more than real streams (50-75)
    assert inflated(body, piece) == stream


@pytest.mark.parametrize("piece", [1, 1024, 1 << 20])
def test_a_bomb_is_refused_before_it_inflates(piece: int) -> None:
    body = gzip.compress(b"\0" * (64 << 20), 9)
    inflater = Inflater()
    made = fed = 0
    with pytest.raises(UpstreamInvalidAnswer, match=f"more than {INFLATION_MOST} times"):
        for at in range(0, len(body), piece):
            fed += piece
            made += len(inflater.decompress(body[at:at + piece]))
    assert made <= max(1 << 20, INFLATION_MOST * fed)


def test_a_small_answer_may_inflate_more_in_its_first_mib() -> None:
    body = gzip.compress(b"\0" * (1 << 20))  # ~1,000 times, a MiB
    assert inflated(body, 100) == b"\0" * (1 << 20)
