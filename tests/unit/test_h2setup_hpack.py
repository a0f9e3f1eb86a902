"""A header block seen before (`hpack_decoder.Known`) against the general path: the same
fields, the same refusals and the same dynamic table after every block, whatever the
table held when the block came again (RFC 7541: a block naming dynamic entries means
what the table holds now); and a head read once per remembered block
(`HeaderBlocks.head`), each stream's headers its own."""

from __future__ import annotations

import cProfile
import pstats

import hpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.h2.headers import HeaderBlocks, MalformedHead
from azure_openai_proxy.upstream.h2.hpack_decoder import HeaderBlockError, HpackDecoder
from azure_openai_proxy.upstream.transport import compressed

# nginx 1.22's answer head as the paced upstream sends it: :status 200, then server,
# date and content-type as literals with incremental indexing (no reference to the
# dynamic table), apim-request-id and x-ms-region without indexing, all Huffman coded.
NGINX = bytes.fromhex(
    "887689aa6355e580ae212e1f6196d07abe9403aa5f29141004e28205c0bb719754c5a37f5f8c497ca5"
    "82f72d495909b0a3a7008b1d66a56b0bdad2a12b1a4f8a6c618c446645ab190b270088f2b5285ac2cc"
    "63d586c034254e1bbf")


def _string(raw: bytes) -> bytes:
    return bytes((len(raw),)) + raw  # plain octets, under 127


# Field representations (RFC 7541 §6) to build blocks of: static and dynamic indices,
# literals adding to the table (static, dynamic and new names), literals without
# indexing (a dynamic name too), values long enough to evict in a small table, and
# size updates (valid only first in a block: elsewhere both paths must refuse).
_PIECES = [
    b"\x88",  # :status 200
    b"\xbe", b"\xbf", b"\xc0", b"\xc1",  # dynamic entries 62-65
    b"\x76" + _string(b"nginx"),  # server, added
    b"\x61" + _string(b"Mon, 07 Dec 2026 20:17:37 GMT"),  # date, added
    b"\x61" + _string(b"Mon, 07 Dec 2026 20:17:38 GMT"),
    b"\x7e" + _string(b"v"),  # the name of dynamic entry 62, added
    b"\x7f\x00" + _string(b"w"),  # entry 63's name, added
    b"\x0f\x2f" + _string(b"x"),  # entry 62's name, not added
    b"\x40" + _string(b"x-big") + _string(b"b" * 100),  # a new name, added (140 bytes)
    b"\x00" + _string(b"x-request-id") + _string(b"0123"),  # not added
    b"\x10" + _string(b"x-secret") + _string(b"s"),  # never indexed
    # content-type (static entry 31's name) not added, its value Huffman coded
    b"\x0f\x10\x8c" + bytes.fromhex("497ca582f72d495909b0a3a7"),
    b"\x20", b"\x3f\x21", b"\x3f\x61", b"\x3f\xe1\x1f",  # table size 0, 64, 128, 4096
]

_BLOCKS = st.lists(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=5).map(b"".join),
                   min_size=1, max_size=6)


def _both(decoder: HpackDecoder, block: bytes, limit: int, general: bool
          ) -> list[tuple[bytes, bytes]] | str | None:
    try:
        return (decoder._decode if general else decoder.decode)(block, limit)
    except HeaderBlockError:
        return "refused"


def _table(decoder: HpackDecoder) -> tuple[list[tuple[bytes, bytes]], int, int]:
    return list(decoder._table), decoder._size, decoder._max


# Blocks every pool holds: a reference alone, one with a static field, one adding.
_FIXED = [b"\xbe", b"\x88\xbf", b"\x76" + _string(b"nginx"), b"\x7e" + _string(b"v")]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 9), st.sampled_from([1 << 16, 200])),
                min_size=1, max_size=30), _BLOCKS)
def test_blocks_again_as_the_general_path(order: list[tuple[int, int]], pool: list[bytes]
                                          ) -> None:
    """Blocks drawn again and again from a few, at two header list limits: the
    remembering decoder and one decoding every block field by field agree on every
    block's fields or refusal and on the table after it."""
    ours, general = HpackDecoder(), HpackDecoder()
    pool = _FIXED + pool
    for pick, limit in order:
        block = pool[pick % len(pool)]
        got, expected = _both(ours, block, limit, False), _both(general, block, limit, True)
        assert got == expected, block.hex()
        if got == "refused":
            return  # the connection ends here
        assert _table(ours) == _table(general), block.hex()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(st.tuples(
    st.sampled_from([b"content-type", b"server", b"date", b"x-ms-region", b"x-request-id"]),
    st.sampled_from([b"a", b"text/event-stream", b"East US", b"nginx", b"0123456789"])),
    min_size=1, max_size=6), st.booleans(), st.sampled_from([None, 0, 128, 4096])),
    min_size=1, max_size=8), st.lists(st.integers(0, 7), min_size=1, max_size=20))
def test_an_encoders_blocks_again_as_the_reference(
        heads: list[tuple[list[tuple[bytes, bytes]], bool, int | None]],
        again: list[int]) -> None:
    """hpack's encoder (it indexes and names dynamic entries) makes the blocks; each is
    then decoded by ours and by `hpack.Decoder` in turn, some of them more than once
    while the tables change between (`again`): the same fields."""
    encoder = hpack.Encoder()
    blocks = []
    for fields, huffman, size in heads:
        if size is not None:
            encoder.header_table_size = size
        blocks.append(encoder.encode(fields, huffman=huffman))
    sequence = [blocks[n % len(blocks)] for n in again]
    ours, reference = HpackDecoder(), hpack.Decoder()
    for block in sequence:
        try:
            expected = [(bytes(n), bytes(v)) for n, v in reference.decode(block, raw=True)]
        except hpack.HPACKError:
            with pytest.raises(HeaderBlockError):
                ours.decode(block, 1 << 16)
            return
        assert ours.decode(block, 1 << 16) == expected


def test_a_block_naming_a_dynamic_entry_follows_the_table() -> None:
    """b"\\xbe" (entry 62) remembered while the table held A, then again after B was
    added: B, as the general path says; and A's block again, A's value once more."""
    decoder = HpackDecoder()
    decoder.decode(b"\x40" + _string(b"x-a") + _string(b"1"), 1000)
    assert decoder.decode(b"\xbe", 1000) == [(b"x-a", b"1")]
    assert decoder.decode(b"\xbe", 1000) == [(b"x-a", b"1")]
    assert decoder.last is not None  # remembered: the table did not change
    decoder.decode(b"\x40" + _string(b"x-b") + _string(b"2"), 1000)
    assert decoder.decode(b"\xbe", 1000) == [(b"x-b", b"2")]
    decoder.decode(b"\x20\x3f\xe1\x1f", 1000)  # emptied by a size update, then 4096
    with pytest.raises(HeaderBlockError):
        decoder.decode(b"\xbe", 1000)


def test_nginx_blocks_add_their_entries_each_time() -> None:
    """nginx indexes server, date and content-type in every answer and never names them
    again: remembered, each answer still adds its three entries, evicting as decoding
    would (a 256-byte table holds two answers' worth)."""
    ours, general = HpackDecoder(), HpackDecoder()
    for decoder in (ours, general):
        decoder.decode(b"\x3f\xe1\x01", 1 << 16)  # table size 256
    for n in range(5):
        assert ours.decode(NGINX, 1 << 16) == general._decode(NGINX, 1 << 16)
        if n:  # remembered whole once seen again: for any table
            assert ours.last is not None and ours.last.generation == -1
        assert _table(ours) == _table(general)
        assert ours._size <= 256 and ours._table[0] == (b"content-type", b"text/event-stream")


def test_an_entry_larger_than_the_table_empties_it_when_added_again() -> None:
    """A remembered block adding an entry past the table's size (RFC 7541 §4.4: the
    table emptied, the entry not added) and one after it, in a table made smaller since."""
    block = (b"\x40" + _string(b"x-big") + _string(b"b" * 100)
             + b"\x40" + _string(b"x-s") + _string(b"1"))
    ours, general = HpackDecoder(), HpackDecoder()
    for size_update in (b"", b"\x3f\x61", b""):  # 4096, then 128 (x-big is 137)
        for decoder in (ours, general):
            if size_update:
                decoder.decode(size_update, 1000)
            decoder.decode(b"\x76" + _string(b"old"), 1000)
        assert ours.decode(block, 1000) == general._decode(block, 1000)
        assert _table(ours) == _table(general)
    assert _table(ours)[0] == [(b"x-s", b"1")]


def _literal_calls(decoder: HpackDecoder, block: bytes) -> int:
    profile = cProfile.Profile()
    profile.runcall(decoder.decode, block, 1 << 16)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return sum(v[1] for k, v in stats.items() if k[2] == "_literal")


def test_a_block_seen_before_is_not_read_field_by_field() -> None:
    """The paced upstream's (and any server's) same answer head: its five literals read
    twice (a block seen once is remembered by its bytes only), then not again for every
    stream (main: 5 calls each time)."""
    decoder = HpackDecoder()
    assert _literal_calls(decoder, NGINX) == 5
    assert _literal_calls(decoder, NGINX) == 5
    assert _literal_calls(decoder, NGINX) == 0
    assert _literal_calls(decoder, NGINX) == 0


def test_a_different_block_or_limit_is_decoded() -> None:
    decoder = HpackDecoder()
    decoder.decode(NGINX, 1 << 16)
    assert decoder.decode(NGINX, 100) is None  # past a smaller limit: not remembered
    assert decoder.last is None
    assert decoder.decode(NGINX + b"\xbe", 1 << 16) is not None  # adds and names 62:
    assert decoder.last is None  # what entry 62 is depends on the table: not remembered
    for _ in range(2):  # names it, adds nothing: remembered once seen again
        assert decoder.decode(b"\x88\xbe", 1 << 16) is not None
    assert decoder.last is not None and decoder.last.generation >= 0  # for this table


def _headers_block(blocks: HeaderBlocks, sid: int, block: bytes
                   ) -> tuple[int, object]:
    got = blocks.frame(f.HEADERS, f.END_HEADERS, sid, block)
    assert got is not None
    _, _, fields, known = got
    assert fields is not None
    return blocks.head(fields, known)


def test_heads_of_the_same_block_are_read_once_and_each_its_own() -> None:
    """The second stream's head comes from the first's reading, as its own copy: what
    `compressed` removes from one (content-encoding, content-length) stays in the next."""
    encoder = hpack.Encoder()
    fields = [(":status", "200"), ("content-encoding", "gzip"), ("content-length", "10"),
              ("x-ms-region", "East US")]
    block = encoder.encode(fields, huffman=True)
    blocks = HeaderBlocks()
    status, first = _headers_block(blocks, 1, block)
    block = encoder.encode(fields, huffman=True)  # now all indexed: the table named
    assert status == 200
    assert compressed(first)  # type: ignore[arg-type]
    assert "content-encoding" not in first  # type: ignore[operator]
    heads = [_headers_block(blocks, sid, block) for sid in (3, 5, 7)]
    assert blocks.decoder.last is not None
    for status, headers in heads:
        assert status == 200
        assert dict(headers) == {"content-encoding": "gzip", "content-length": "10",  # type: ignore[call-overload]
                                 "x-ms-region": "East US"}
        assert compressed(headers)  # type: ignore[arg-type]
    assert heads[0][1] is not heads[1][1]
    assert "content-encoding" in _headers_block(blocks, 9, block)[1]  # type: ignore[operator]


def test_a_malformed_head_remembered_is_refused_each_time() -> None:
    block = b"\x88" + b"\x00" + _string(b"X-Upper") + _string(b"1")  # upper case
    blocks = HeaderBlocks()
    for sid in (1, 3):
        with pytest.raises(MalformedHead):
            _headers_block(blocks, sid, block)
    assert blocks.decoder.last is not None
