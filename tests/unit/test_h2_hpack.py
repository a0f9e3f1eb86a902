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
    assert ours.decode(again, 64 * 1024) is None  # too large: its stream's failure
    with pytest.raises(HeaderBlockError):  # hostile: the connection's
        ours.decode(encoder.encode([("x-big", "v" * 3000)] * 400), 64 * 1024)


def test_a_list_too_large_keeps_the_table_in_step() -> None:
    encoder, reference, ours = hpack.Encoder(), hpack.Decoder(), HpackDecoder()
    big = encoder.encode([(":status", "200"), ("x-big", "a" * 70_000), ("x-next", "1")],
                         huffman=False)
    reference.max_header_list_size = 1 << 20
    reference.decode(big)
    assert ours.decode(big, 64 * 1024) is None
    after = encoder.encode([("x-next", "1"), ("x-big", "a" * 70_000)])  # indexed both
    assert ours.decode(after, 1 << 20) == [
        (bytes(n), bytes(v)) for n, v in reference.decode(after, raw=True)]


def test_each_field_counts_32_bytes_more() -> None:
    block = b"\x40\x00\x00" + b"\xbe" * (1 << 20)  # ("", "") added, then named 1M times
    with pytest.raises(HeaderBlockError):
        HpackDecoder().decode(block, 128 * 1024)  # not a million empty fields
    assert HpackDecoder().decode(b"\x40\x00\x00" + b"\xbe" * 10, 11 * 32) is not None
    assert HpackDecoder().decode(b"\x40\x00\x00" + b"\xbe" * 10, 11 * 32 - 1) is None


def test_a_table_size_update_after_a_field_is_refused() -> None:
    with pytest.raises(HeaderBlockError):
        HpackDecoder().decode(b"\x88\x20", 1000)  # :status 200, then size 0
    assert HpackDecoder().decode(b"\x20\x3f\xe1\x1f\x88", 1000) == [(b":status", b"200")]


def test_long_huffman_strings_are_not_remembered() -> None:
    encoder, ours = hpack.Encoder(), HpackDecoder()
    for i in range(50):
        ours.decode(encoder.encode([(f"x-{i}", "v" * 10_000 + str(i))], huffman=True), 1 << 20)
    assert all(len(raw) <= 128 for raw in ours._huffman._data)
