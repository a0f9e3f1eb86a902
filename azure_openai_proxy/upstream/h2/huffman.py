"""HPACK's Huffman decoding (RFC 7541 §5.2, Appendix B), a byte a step.

Azure answers with ids of their own (`apim-request-id`, `x-request-id`, rate-limit
counts): strings no cache has seen, decoded on every answer. `hpack`'s `decode_huffman`
walks a nibble at a time, two table reads, a tuple unpacked and three flag tests a nibble:
~2,600 instructions a byte (callgrind, a UUID's 25 bytes: 64.6k). Here one step a byte:
the state (an inner node of the code's tree, 256 of them) and the byte index a table of
the next state (`bytes`) and one of what is emitted on the way (a `bytes` of 0-2 symbols;
None where the step completes EOS, which makes the join fail: no test in the loop).

Here ~1,250 (31.4k for the UUID). The tables are built at import from hpack's copy of
the RFC's code table, nibble first (4,096 walks of 4 bits), then pairs of nibbles
composed (65,536 entries: 64 KiB of next states and a tuple of `bytes`): ~94M
instructions once a process (session 29's build: ~106M), 1.4 MB held (2.6 MB, tracemalloc),
in a worker's start, before it listens. Session 30 built them at the first string
decoded instead: that moved ~149M instructions onto a worker's first HTTP/2 answer, and
every worker whose upstream is h2 (the default) decodes one anyway. Judged against
`decode_huffman` (tests/unit/test_h2_huffman.py)."""

from __future__ import annotations

from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

__all__ = ["HuffmanError", "decode"]

_EOS = 256


class HuffmanError(Exception):
    """Not a Huffman string: EOS in it, padding longer than 7 bits or not EOS's ones."""


def _tree() -> tuple[list[list[int]], int]:
    """The code's tree: `children[node]` = [child for 0, child for 1], a child being a
    node (>= 0) or a symbol (-1 - symbol); and the number of inner nodes (the root 0)."""
    children: list[list[int]] = [[0, 0]]
    for symbol, (code, length) in enumerate(zip(REQUEST_CODES, REQUEST_CODES_LENGTH,
                                                strict=True)):
        node = 0
        for shift in range(length - 1, 0, -1):
            bit = code >> shift & 1
            if not children[node][bit]:
                children[node][bit] = len(children)
                children.append([0, 0])
            node = children[node][bit]
        children[node][code & 1] = -1 - symbol
    return children, len(children)


def _tables() -> tuple[bytes, tuple[bytes | None, ...], frozenset[int]]:
    children, count = _tree()
    symbols = [bytes((symbol,)) for symbol in range(256)]
    # A nibble from each node: the next node and what it emits (b"" none, one symbol,
    # None: EOS completed; 4 bits hold at most one symbol, the shortest code being 5)
    next_node = bytearray()
    nibble_out: list[bytes | None] = []
    for start in range(count):
        for value in range(16):
            node = start
            out: bytes | None = b""
            for shift in (3, 2, 1, 0):
                child = children[node][value >> shift & 1]
                if child >= 0:
                    node = child
                elif child == -1 - _EOS:
                    out, node = None, 0
                    break
                else:
                    out, node = symbols[-1 - child], 0
            next_node.append(node)
            nibble_out.append(out)
    outs = [nibble_out[at:at + 16] for at in range(0, len(nibble_out), 16)]
    rows = [bytes(next_node[at:at + 16]) for at in range(0, len(next_node), 16)]
    following = b"".join([rows[middle] for middle in next_node])
    # A byte from each node: its high nibble, then any low one. After a symbol the low
    # nibble starts at most 3 bits from the root: it emits nothing or a symbol of a code
    # of 7 bits at most, never EOS. So each two-symbol `bytes` is made once, in a table
    # of a first symbol's pairs (17,408 of them, where each step's own were 46,080; the
    # empty and one-symbol ones are CPython's own singletons), and a row is looked up there
    after = {middle for first, middle in zip(nibble_out, next_node, strict=True) if first}
    short = list({second for middle in after for second in outs[middle] if second})
    emitted: list[bytes | None] = []
    extend = emitted.extend
    failed = [None] * 16
    pairs: dict[bytes, dict[bytes, bytes]] = {}
    for first, middle in zip(nibble_out, next_node, strict=True):
        if first is None:
            extend(failed)
        elif not first:
            extend(outs[middle])
        else:
            made = pairs.get(first)
            if made is None:
                made = pairs[first] = dict(zip(short, map(first.__add__, short), strict=True))
                made[b""] = first
            extend(map(made.__getitem__, outs[middle]))  # type: ignore[arg-type]
    # Where a string may end: on a symbol's end (the root) or within EOS's first 7 bits
    # (its code is all ones: padding is the ones of the path from the root).
    ends = {0}
    node = 0
    for _ in range(7):
        node = children[node][1]
        ends.add(node)
    # A tuple of untracked objects only: the collector stops tracking it at its first pass
    return following, tuple(emitted), frozenset(ends)


_NEXT, _EMIT, _ENDS = _tables()


def decode(raw: bytes) -> bytes:
    """The string `raw` codes; `HuffmanError` if it codes none."""
    following, emitted = _NEXT, _EMIT
    state = 0
    out: list[bytes | None] = []
    append = out.append
    for byte in raw:
        at = state << 8 | byte
        append(emitted[at])
        state = following[at]
    if state not in _ENDS:
        raise HuffmanError("padding longer than 7 bits or not EOS's ones")
    try:
        return b"".join(out)  # type: ignore[arg-type]  # None: EOS decoded
    except TypeError:
        raise HuffmanError("EOS in a Huffman string") from None
