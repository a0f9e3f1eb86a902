"""`HpackDecoder` against `hpack.Decoder` on blocks no encoder makes: arbitrary bytes,
and real blocks mutated (bytes flipped, cut, spliced, repeated), block after block on one
connection's table. Both must refuse a block, or both give the same fields (and go on
with the same table: the next block says so). What a decoder does after it refused a
block does not matter: the connection ends (`ProtocolError`, COMPRESSION_ERROR)."""

from __future__ import annotations

import hpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azure_openai_proxy.upstream.h2.hpack_decoder import HeaderBlockError, HpackDecoder

_LIMIT = 1 << 22  # far past any block here: no head is "too large" for either decoder

_FIELDS = st.lists(st.tuples(
    st.sampled_from([b":status", b"content-type", b"date", b"x-ms-region", b"server",
                     b"apim-request-id", b"x-a", b"content-length"]),
    st.binary(max_size=40)), min_size=1, max_size=6)


@st.composite
def _mutated(draw: st.DrawFn, encoder: hpack.Encoder) -> bytes:
    """An encoder's block, then changed in one of the ways a broken server or the
    network could change it."""
    fields = draw(_FIELDS)
    block = bytearray(encoder.encode(fields, huffman=draw(st.booleans())))
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.integers(0, 4))
        at = draw(st.integers(0, max(len(block) - 1, 0)))
        if how == 0 and block:  # a byte changed
            block[at] = draw(st.integers(0, 255))
        elif how == 1:  # cut short
            del block[at:]
        elif how == 2:  # bytes put in
            block[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == 3 and block:  # a bit flipped
            block[at] ^= 1 << draw(st.integers(0, 7))
        else:  # a table size update put first
            block[0:0] = bytes([0x20 | draw(st.integers(0, 31))])
    return bytes(block)


def _ours(decoder: HpackDecoder, block: bytes) -> list[tuple[bytes, bytes]] | None:
    try:
        fields = decoder.decode(block, _LIMIT)
    except HeaderBlockError:
        return None
    assert fields is not None  # never past `_LIMIT` here
    return fields


def _reference(decoder: hpack.Decoder, block: bytes) -> list[tuple[bytes, bytes]] | None:
    try:
        return [(bytes(n), bytes(v)) for n, v in decoder.decode(block, raw=True)]
    except hpack.HPACKError:
        return None


def _same(blocks: list[bytes]) -> None:
    ours, reference = HpackDecoder(), hpack.Decoder(max_header_list_size=_LIMIT)
    for block in blocks:
        got, expected = _ours(ours, block), _reference(reference, block)
        assert got == expected, block.hex()
        if got is None:
            return  # the connection ends here


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=4))
def test_arbitrary_bytes_as_the_reference(blocks: list[bytes]) -> None:
    _same(blocks)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_blocks_as_the_reference(data: st.DataObject) -> None:
    encoder = hpack.Encoder()  # one connection: its later blocks index its earlier ones
    _same([data.draw(_mutated(encoder)) for _ in range(data.draw(st.integers(1, 4)))])


def test_examples() -> None:
    """Shapes the strategies may take long to find: an integer of many continuation
    bytes, a size update after a field, one past the setting, a bad Huffman pad, an
    index 0, a string past the block."""
    for block in (bytes.fromhex("bf80808080800100"),  # index 62+ via a long integer
                  bytes.fromhex("8820"), bytes.fromhex("3fe11f"), bytes.fromhex("3fe21f"),
                  bytes.fromhex("4082ffff0161"), bytes.fromhex("80"),
                  bytes.fromhex("400561"), bytes.fromhex("0f2f00"),
                  bytes.fromhex("ff80808080808080808001")):
        _same([block])
