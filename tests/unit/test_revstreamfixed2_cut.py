"""Review of streamfixed2 (session 31): what its cut of a read into events and its
uncached per-answer HPACK values must keep that no other test pinned.

- The cut takes only a read that ends where an event does: a read of whole events and
  then the start of one past the event limit gives the whole events' output, and the
  next read raises (sse.py's contract), not an error that loses the events before it.
- A per-answer value (an id, a remaining count) that is not valid Huffman ends the
  connection as every other bad string does (`HeaderBlockError`), not as a stray
  `HuffmanError` the connection does not expect."""

from __future__ import annotations

import pytest

from azure_openai_proxy.errors import UpstreamEventTooLarge
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.upstream.h2.hpack_decoder import HeaderBlockError, HpackDecoder
from tests.unit.test_stream_presumed import emulated_stream

_LIMIT = 4096


def test_whole_events_then_one_past_the_limit_give_their_output_before_the_error() -> None:
    frames = emulated_stream(async_filter=False)
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"), _LIMIT)
    reference = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"), _LIMIT, fast=False)
    expected = b"".join(reference.feed(frame) for frame in frames[:3])
    too_large = b"data: {" + b"x" * (2 * _LIMIT)
    out = normalizer.feed(b"".join(frames[:3]) + too_large)
    assert out == expected and out.count(b"data: ") == 2
    with pytest.raises(UpstreamEventTooLarge):
        normalizer.feed(b"x\n\n")


def test_a_per_answer_value_of_bad_huffman_is_a_header_block_error() -> None:
    name = b"x-request-id"
    # A literal without indexing, a new name (0x00), and a Huffman value (0x80) of four
    # 0xff bytes: 30 ones are EOS, which RFC 7541 §5.2 makes a decoding error.
    block = bytes([0x00, len(name)]) + name + bytes([0x80 | 4]) + b"\xff" * 4
    with pytest.raises(HeaderBlockError):
        HpackDecoder().decode(block, 1 << 16)
    cached = bytes([0x00, 6]) + b"server" + bytes([0x80 | 4]) + b"\xff" * 4
    with pytest.raises(HeaderBlockError):  # as a cached name's value
        HpackDecoder().decode(cached, 1 << 16)
