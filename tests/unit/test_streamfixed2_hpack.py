"""The answer decoder's Huffman cache and Azure's per-answer values (session 31,
streamfixed2): ids and remaining counts, new on every answer, are decoded but neither
looked up nor remembered (they would only take the room of `server`, `date` and the
names, and fill the cache to its clear every ~256 answers); the fields are hpack's."""

from __future__ import annotations

import hpack

from azure_openai_proxy.upstream.h2.hpack_decoder import HpackDecoder
from bench.h2setup import azure_blocks


def test_azures_heads_decode_as_hpack_and_leave_no_per_answer_value_cached() -> None:
    ours, reference = HpackDecoder(), hpack.Decoder()
    sizes = []
    for block in azure_blocks(300):
        fields = ours.decode(block, 1 << 16)
        assert fields is not None
        assert [(n.decode(), v.decode()) for n, v in fields] == reference.decode(block)
        sizes.append(len(ours._huffman))
    # The first answer's names and fixed values, then nothing more: one entry a fresh id
    # or count would make it grow by four an answer.
    assert sizes[1:] == [sizes[0]] * 299 and sizes[0] > 0


def test_a_per_answer_name_with_a_repeated_value_decodes_the_same() -> None:
    encoder, ours = hpack.Encoder(), HpackDecoder()
    head = [(":status", "200"), ("x-request-id", "same"), ("server", "same")]
    for _ in range(3):
        block = encoder.encode(head, huffman=True)
        assert ours.decode(block, 1 << 16) == [(n.encode(), v.encode()) for n, v in head]
