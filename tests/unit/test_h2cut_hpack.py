"""`HpackDecoder`'s inline paths (one-byte integers, static and dynamic entries, the
value's string read in `_literal`) against the `hpack` package's decoder, with what the
one-byte cases leave out: names and values of 127 bytes and more (multi-byte lengths),
names taken from the dynamic table, and more than 127 entries indexed (multi-byte
indices), block after block on one connection."""

from __future__ import annotations

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.upstream.h2.hpack_decoder import HpackDecoder

_TOKEN = st.one_of(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20),
                   st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=200, max_size=400))
_VALUE = st.binary(max_size=400).map(
    lambda v: v.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b""))
_FIELD = st.tuples(st.one_of(_TOKEN.map(str.encode), st.sampled_from(
    [b"content-type", b"date", b"server", b"x-ms-region"])), _VALUE, st.integers(0, 2))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(_FIELD, min_size=1, max_size=10), st.booleans()),
                min_size=1, max_size=6))
def test_long_strings_and_dynamic_names_as_the_reference(
        blocks: list[tuple[list[tuple[bytes, bytes, int]], bool]]) -> None:
    encoder, reference, ours = hpack.Encoder(), hpack.Decoder(), HpackDecoder()
    encoder.header_table_size = reference.header_table_size = 4096
    for fields, huffman in blocks:
        # 0: indexed (added to the table), 1: never indexed, 2: added, then sent again
        # (the second time an indexed field, perhaps past entry 127).
        headers: list[tuple[bytes, bytes] | hpack.NeverIndexedHeaderTuple] = []
        for name, value, how in fields:
            headers.append(hpack.NeverIndexedHeaderTuple(name, value) if how == 1
                           else (name, value))
            if how == 2:
                headers.append((name, value))
        block = encoder.encode(headers, huffman=huffman)
        assert ours.decode(block, 1 << 22) == [
            (bytes(n), bytes(v)) for n, v in reference.decode(block, raw=True)]


def test_more_than_127_entries_indexed() -> None:
    encoder, reference, ours = hpack.Encoder(), hpack.Decoder(), HpackDecoder()
    fields = [(f"x-{n}".encode(), b"v") for n in range(100)]  # all in 4,096 bytes
    for block in (encoder.encode(fields), encoder.encode(fields[:3] + fields[-3:])):
        assert ours.decode(block, 1 << 20) == [
            (bytes(n), bytes(v)) for n, v in reference.decode(block, raw=True)]
