"""HPACK header block decoding (RFC 7541) for answers, with the `hpack` package's static
table and Huffman code, but our own loop and a cache of Huffman-coded strings.

`hpack.Decoder` spent about 37 µs on a six-header answer whose strings are all Huffman
coded (nginx codes every name and value, and indexes none), a third of a stream's set-up
over HTTP/2: most of it decoding the same strings (`server`, `content-type`, the region,
the date within its second) again for every answer. Here a Huffman string is decoded
once and remembered; the rest is a few integer reads per field. Judged against
`hpack.Decoder` (tests/unit/test_h2_hpack.py)."""

from __future__ import annotations

from collections import deque

from hpack.table import HeaderTable

from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.upstream.h2.huffman import HuffmanError, decode

__all__ = ["HeaderBlockError", "HpackDecoder"]

_STATIC: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
_STATIC_SIZE = len(_STATIC)
_ENTRY_OVERHEAD = 32  # RFC 7541 §4.1
_MAX_INTEGER = 1 << 32  # larger is hostile: no header block needs it
_HOSTILE = 16  # a header list this many times the limit ends the connection
_CACHED = 128  # Huffman strings up to this long are remembered: names and short values
# Values Azure makes anew for every answer (`/work/shared/azure-openai-wire.md` §4): decoded,
# never looked up nor remembered. Remembered, four an answer filled the cache to its clear
# every ~256 answers, and each paid a look-up that missed and a `put` (session 31).
_PER_ANSWER = frozenset({b"apim-request-id", b"x-request-id", b"x-ratelimit-remaining-requests",
                         b"x-ratelimit-remaining-tokens"})


class HeaderBlockError(Exception):
    """The block is not valid HPACK: a COMPRESSION_ERROR for the whole connection."""


class HpackDecoder:
    """One connection's decoder: the server's dynamic table, kept in step block by block.
    `max_table_size` is our SETTINGS_HEADER_TABLE_SIZE (the default 4096)."""

    __slots__ = ("_huffman", "_limit", "_max", "_size", "_table")

    def __init__(self, max_table_size: int = 4096) -> None:
        self._limit = max_table_size  # what the server may ask for
        self._max = max_table_size  # what it asked for
        self._size = 0
        self._table: deque[tuple[bytes, bytes]] = deque()
        self._huffman: BoundedCache[bytes, bytes] = BoundedCache(1024)

    def decode(self, block: bytes, limit: int) -> list[tuple[bytes, bytes]] | None:
        """The block's fields; None past `limit` bytes of header list (names, values and
        32 per field, as RFC 9113's SETTINGS_MAX_HEADER_LIST_SIZE counts): a head too
        large for its stream, the block decoded to its end all the same, so that the
        table stays in step for the connection's other streams. `HeaderBlockError` past
        `_HOSTILE` times `limit` (a few bytes of indices can name a 4 KiB table entry
        again and again, or an empty field, 32 each, a million times)."""
        fields: list[tuple[bytes, bytes]] = []
        pos, end = 0, len(block)
        room = limit
        floor = -limit * _HOSTILE
        table = self._table
        try:
            while pos < end:
                byte = block[pos]
                if byte & 0x80:  # indexed
                    index = byte & 0x7F
                    if index < 0x7F:  # `_integer`'s one-byte case, inline
                        pos += 1
                    else:
                        index, pos = _integer(block, pos, 7)
                    at = index - _STATIC_SIZE - 1
                    if at < 0 and index:
                        field = _STATIC[index - 1]
                    elif 0 <= at < len(table):
                        field = table[at]
                    else:
                        field = self._entry(index)  # none: it raises
                elif byte & 0xC0 == 0x40:  # literal, added to the table
                    field, pos = self._literal(block, pos, 6)
                    self._add(field)
                elif byte & 0xE0 == 0x20:  # dynamic table size update
                    if room != limit:  # RFC 7541 §4.2: only at a block's start
                        raise HeaderBlockError("a table size update after a field")
                    size, pos = _integer(block, pos, 5)
                    if size > self._limit:
                        raise HeaderBlockError("a table size past our setting")
                    self._max = size
                    self._evict()
                    continue
                else:  # literal without indexing (0000) or never indexed (0001)
                    field, pos = self._literal(block, pos, 4)
                room -= len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
                if room >= 0:
                    fields.append(field)
                elif room < floor:
                    raise HeaderBlockError(f"a header list past {-floor} bytes")
        except IndexError:
            raise HeaderBlockError("a header block cut short") from None
        return fields if room >= 0 else None

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_SIZE:
            return _STATIC[index - 1]
        at = index - _STATIC_SIZE - 1
        if index == 0 or at >= len(self._table):
            raise HeaderBlockError(f"no table entry {index}")
        return self._table[at]

    def _literal(self, block: bytes, pos: int, bits: int) -> tuple[tuple[bytes, bytes], int]:
        # `_integer`'s one-byte case, a static name and the value's `_string` inline:
        # one call a field where five were (callgrind: a six-field nginx answer 67.7k
        # instructions before).
        top = (1 << bits) - 1
        index = block[pos] & top
        if index < top:
            pos += 1
        else:
            index, pos = _integer(block, pos, bits)
        if not index:
            name, pos = self._string(block, pos)
        elif index <= _STATIC_SIZE:
            name = _STATIC[index - 1][0]
        else:
            name = self._entry(index)[0]
        byte = block[pos]
        length = byte & 0x7F
        if length < 0x7F:
            pos += 1
        else:
            length, pos = _integer(block, pos, 7)
        end = pos + length
        if end > len(block):
            raise HeaderBlockError("a string past the block's end")
        value = block[pos:end]
        if byte & 0x80:
            if name in _PER_ANSWER:
                value = _decoded(value)
            else:
                decoded = self._huffman.get(value) if length <= _CACHED else None
                value = self._huffman_miss(value) if decoded is None else decoded
        return (name, value), end

    def _string(self, block: bytes, pos: int) -> tuple[bytes, int]:
        byte = block[pos]
        length = byte & 0x7F
        if length < 0x7F:
            pos += 1
        else:
            length, pos = _integer(block, pos, 7)
        end = pos + length
        if end > len(block):
            raise HeaderBlockError("a string past the block's end")
        raw = block[pos:end]
        if not byte & 0x80:
            return raw, end
        decoded = self._huffman.get(raw) if length <= _CACHED else None
        return (self._huffman_miss(raw) if decoded is None else decoded), end

    def _huffman_miss(self, raw: bytes) -> bytes:
        """A Huffman string not remembered: decoded, and remembered if short."""
        decoded = _decoded(raw)
        if len(raw) <= _CACHED:  # a long one would be held 1,024 times over
            self._huffman.put(raw, decoded)
        return decoded

    def _add(self, field: tuple[bytes, bytes]) -> None:
        size = len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
        if size > self._max:  # larger than the table: it empties it (RFC 7541 §4.4)
            self._table.clear()
            self._size = 0
            return
        self._table.appendleft(field)
        self._size += size
        self._evict()

    def _evict(self) -> None:
        table = self._table
        while self._size > self._max and table:
            name, value = table.pop()
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD


def _decoded(raw: bytes) -> bytes:
    """A Huffman string decoded (a byte a step); `HeaderBlockError` if it codes none."""
    try:
        return decode(raw)
    except HuffmanError as exc:
        raise HeaderBlockError(f"a bad Huffman string ({exc})") from None


def _integer(block: bytes, pos: int, bits: int) -> tuple[int, int]:
    """An HPACK integer with a `bits`-bit prefix at `pos`; (value, the position after)."""
    top = (1 << bits) - 1
    value = block[pos] & top
    pos += 1
    if value < top:
        return value, pos
    shift = 0
    while True:
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if value > _MAX_INTEGER:
            raise HeaderBlockError("an integer too large")
        if not byte & 0x80:
            return value, pos
        shift += 7
