"""upstream/h2/hpack_decoder.py judged against the `hpack` package (the reference): the
same fields from the same blocks, block after block on one connection (the dynamic
table in step), whatever the encoder chose (indexing, Huffman, table size updates)."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.upstream.h2.hpack_decoder import HeaderBlockError, HpackDecoder

_NAMES = st.sampled_from([b"content-type", b"server", b"date", b"x-ms-region",
                          b"apim-request-id", b"x-custom", b"cache-control"])
_FIELDS = st.lists(st.tuples(_NAMES, st.binary(min_size=0, max_size=40).map(
    lambda v: v.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b""))),
    min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_FIELDS, st.booleans(), st.sampled_from([None, 0, 256, 4096])),
                min_size=1, max_size=6))
def test_the_same_fields_as_the_reference(
        blocks: list[tuple[list[tuple[bytes, bytes]], bool, int | None]]) -> None:
    encoder, reference, ours = hpack.Encoder(), hpack.Decoder(), HpackDecoder()
    for fields, huffman, table_size in blocks:
        if table_size is not None:
            encoder.header_table_size = table_size  # a size update in the next block
        sensitive = [hpack.NeverIndexedHeaderTuple(n, v) if n == b"date" else (n, v)
                     for n, v in fields]
        block = encoder.encode(sensitive, huffman=huffman)
        assert ours.decode(block, 1 << 20) == [
            (bytes(n), bytes(v)) for n, v in reference.decode(block, raw=True)]


def test_a_status_from_the_static_table_and_a_repeated_string_from_the_cache() -> None:
    encoder, ours = hpack.Encoder(), HpackDecoder()
    assert ours.decode(encoder.encode([(":status", "200")]), 1000) == [(b":status", b"200")]
    block = hpack.Encoder().encode([("server", "nginx")], huffman=True)
    assert ours.decode(block, 1000) == ours.decode(block, 1000) == [(b"server", b"nginx")]


@pytest.mark.parametrize("block", [
    b"\xbe",  # indexed: entry 62, the dynamic table is empty
    b"\x80",  # index 0
    b"\x40\x05ab",  # a string past the block's end
    b"\x3f\xe2\x1f",  # a table size update to 4097, past 4096
    b"\x1f\xff\xff\xff\xff\xff\x7f",  # an integer too large
    b"\x00\x81\xff\x01a",  # a bad Huffman string (EOS padding)
    b"\x00",  # cut short
])
def test_a_bad_block_is_refused(block: bytes) -> None:
    with pytest.raises(HeaderBlockError):
        HpackDecoder().decode(block, 1 << 20)


def test_a_list_that_decodes_past_the_limit_is_refused() -> None:
    encoder, ours = hpack.Encoder(), HpackDecoder()
    ours.decode(encoder.encode([("x-big", "v" * 3000)]), 1 << 20)  # indexed now
    again = encoder.encode([("x-big", "v" * 3000)] * 30)  # 30 one-byte references
    assert len(again) < 40
    with pytest.raises(HeaderBlockError):
        ours.decode(again, 64 * 1024)
