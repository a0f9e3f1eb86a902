"""HPACK header block decoding (RFC 7541) for answers, with the `hpack` package's static
table and Huffman code, but our own loop and a cache of Huffman-coded strings.

`hpack.Decoder` spent about 37 µs on a six-header answer whose strings are all Huffman
coded (nginx codes every name and value, and indexes none), a third of a stream's set-up
over HTTP/2: most of it decoding the same strings (`server`, `content-type`, the region,
the date within its second) again for every answer. Here a Huffman string is decoded
once and remembered; the rest is a few integer reads per field. Judged against
`hpack.Decoder` (tests/unit/test_h2_hpack.py).

A whole block seen twice is not decoded again where RFC 7541 makes its fields the same
(`Known`): a block that names no dynamic table entry and updates no table size gives
the same fields whatever the table holds, and changes the table only by the entries its
literals add, which are added again, in order (`_add_again`); a block that
names dynamic entries but adds none and updates no size gives the same fields while the
table has not changed since (`_generation`, counted up at every change). Any other block
(one naming dynamic entries and adding some, a size update, past the limit, refused) is
decoded each time. nginx's answers (literals with incremental indexing, no references)
are the first kind; an answer carrying its own request id is new bytes each time, and
decoded (tests/unit/test_h2setup_hpack.py compares both paths)."""

from __future__ import annotations

from collections import deque

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

from azure_openai_proxy.boundedcache import BoundedCache

__all__ = ["HeaderBlockError", "HpackDecoder", "Known"]

_STATIC: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
_STATIC_SIZE = len(_STATIC)
_ENTRY_OVERHEAD = 32  # RFC 7541 §4.1
_MAX_INTEGER = 1 << 32  # larger is hostile: no header block needs it
_HOSTILE = 16  # a header list this many times the limit ends the connection
_CACHED = 128  # Huffman strings up to this long are remembered: names and short values
# Whole blocks remembered per connection (`Known`): up to this many, this long, and
# decoding to at most this many bytes of header list. A server repeats a few heads (nginx:
# one a second, its date's); Azure's carry ids of their own and each fills a place, so
# the bound is kept small: with the heads read of them (`headers.py`), ~0.3 MB a
# connection at worst (16 x 1 KiB block, 8 KiB fields, 8 KiB head), ~40 KB for Azure's.
_BLOCKS_KEPT = 16
_BLOCK_LONGEST = 1024
_DECODED_MOST = 8192


class HeaderBlockError(Exception):
    """The block is not valid HPACK: a COMPRESSION_ERROR for the whole connection."""


class Known:
    """A block decoded before: its fields, for a header list `limit`; the entries it
    added, in order; and the table's `generation` its fields are good for (-1: any, it
    names no dynamic entry). Hashed by identity: a reader may key what it made of the
    fields by it (`headers.HeaderBlocks.head`), a block decoded anew being a new one."""

    __slots__ = ("added", "adds", "fields", "generation", "limit")

    def __init__(self, fields: tuple[tuple[bytes, bytes], ...], limit: int,
                 adds: tuple[tuple[bytes, bytes], ...], generation: int) -> None:
        self.fields = fields
        self.limit = limit
        self.adds = adds
        self.generation = generation
        # the table's size the adds take, before evictions
        self.added = sum(len(name) + len(value) + _ENTRY_OVERHEAD for name, value in adds)


# What a block seen once is remembered as: its bytes only, so that an answer with ids of
# its own (Azure's, every one) costs a dict entry, not its fields and its head; a block
# seen again is remembered whole. Its limit matches none: it gives no fields.
_ONCE = Known((), -1, (), -1)


class HpackDecoder:
    """One connection's decoder: the server's dynamic table, kept in step block by block.
    `max_table_size` is our SETTINGS_HEADER_TABLE_SIZE (the default 4096)."""

    __slots__ = ("_dynamic", "_generation", "_huffman", "_known", "_limit", "_max", "_size",
                 "_table", "last")

    def __init__(self, max_table_size: int = 4096) -> None:
        self._limit = max_table_size  # what the server may ask for
        self._max = max_table_size  # what it asked for
        self._size = 0
        self._table: deque[tuple[bytes, bytes]] = deque()
        self._huffman: BoundedCache[bytes, bytes] = BoundedCache(1024)
        self._known: BoundedCache[bytes, Known] = BoundedCache(_BLOCKS_KEPT)
        self._generation = 0  # counted up at every change of the table
        self._dynamic = False  # the block being decoded named a dynamic entry
        # The remembered block whose fields the last `decode` gave (the same as each time
        # it was given before), or None.
        self.last: Known | None = None

    def decode(self, block: bytes, limit: int) -> list[tuple[bytes, bytes]] | None:
        """The block's fields (`last` says whether a remembered block gave them); None
        past `limit` bytes of header list (names, values and 32 per field, as RFC 9113's
        SETTINGS_MAX_HEADER_LIST_SIZE counts): a head too large for its stream, the block
        decoded to its end all the same, so that the table stays in step for the
        connection's other streams. `HeaderBlockError` past `_HOSTILE` times `limit` (a
        few bytes of indices can name a 4 KiB table entry again and again, or an empty
        field, 32 each, a million times)."""
        known = self.last = self._known.get(block)
        if known is not None and known.limit == limit:
            if known.generation < 0:  # the same fields whatever the table holds
                if known.adds:
                    self._add_again(known)
                return list(known.fields)
            if known.generation == self._generation:  # the table as it was then
                return list(known.fields)
        self.last = None
        return self._decode(block, limit, known is not None)

    def _decode(self, block: bytes, limit: int, seen: bool = False
                ) -> list[tuple[bytes, bytes]] | None:
        """`decode` field by field; the block remembered if `Known` allows, whole if
        `seen` before (else as `_ONCE`)."""
        fields: list[tuple[bytes, bytes]] = []
        adds: list[tuple[bytes, bytes]] = []
        pos, end = 0, len(block)
        room = limit
        floor = -limit * _HOSTILE
        table = self._table
        resized = self._dynamic = False
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
                        self._dynamic = True
                    else:
                        field = self._entry(index)  # none: it raises
                elif byte & 0xC0 == 0x40:  # literal, added to the table
                    field, pos = self._literal(block, pos, 6)
                    self._add(field)
                    adds.append(field)
                elif byte & 0xE0 == 0x20:  # dynamic table size update
                    if room != limit:  # RFC 7541 §4.2: only at a block's start
                        raise HeaderBlockError("a table size update after a field")
                    size, pos = _integer(block, pos, 5)
                    if size > self._limit:
                        raise HeaderBlockError("a table size past our setting")
                    self._max = size
                    self._generation += 1
                    self._evict()
                    resized = True
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
        if room < 0:
            return None
        if (not resized and end <= _BLOCK_LONGEST and limit - room <= _DECODED_MOST
                and not (self._dynamic and adds)):
            if not seen:
                self._known.put(block, _ONCE)
            else:
                self.last = self._known.put(block, Known(
                    tuple(fields), limit, tuple(adds), self._generation if self._dynamic else -1))
        return fields

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
            self._dynamic = True
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
        try:
            decoded = decode_huffman(raw)
        except Exception as exc:  # hpack's HPACKDecodingError
            raise HeaderBlockError(f"a bad Huffman string ({exc})") from None
        if len(raw) <= _CACHED:  # a long one would be held 1,024 times over
            self._huffman.put(raw, decoded)
        return decoded

    def _add(self, field: tuple[bytes, bytes]) -> None:
        self._generation += 1
        size = len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
        if size > self._max:  # larger than the table: it empties it (RFC 7541 §4.4)
            self._table.clear()
            self._size = 0
            return
        self._table.appendleft(field)
        self._size += size
        self._evict()

    def _add_again(self, known: Known) -> None:
        """A remembered block's entries added again, evicting once at the end: `_add`
        one by one leaves the same table, the newest entries that fit (eviction takes
        the oldest first; an entry larger than the table, which empties it, fits in no
        such run, so it and all before it go)."""
        self._generation += 1
        self._table.extendleft(known.adds)  # the last one added first, as `appendleft`s
        self._size += known.added
        if self._size > self._max:
            self._evict()

    def _evict(self) -> None:
        table = self._table
        while self._size > self._max and table:
            name, value = table.pop()
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD


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
