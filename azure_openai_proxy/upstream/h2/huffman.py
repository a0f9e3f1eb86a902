"""HPACK's Huffman decoding (RFC 7541 §5.2, Appendix B), a byte a step.

Azure answers with ids of their own (`apim-request-id`, `x-request-id`, rate-limit
counts): strings no cache has seen, decoded on every answer. `hpack`'s `decode_huffman`
walks a nibble at a time, two table reads, a tuple unpacked and three flag tests a nibble:
~2,600 instructions a byte (callgrind, a UUID's 25 bytes: 64.6k). Here one step a byte:
the state (an inner node of the code's tree, 256 of them) and the byte index a table of
the next state (`bytes`) and one of what is emitted on the way (a `bytes` of 0-2 symbols;
None where the step completes EOS, which makes the join fail: no test in the loop).

Here ~1,250 (31.4k for the UUID). The tables come from hpack's copy of the RFC's code
table, nibble first (4,096 walks of 4 bits), then pairs of nibbles composed (65,536
entries: 64 KiB of next states and a list of `bytes`), built at the first string a
process decodes (session 29 built them at import: ~91M instructions and 2.5 MB in every
worker, its upstream h2 or not), each two-symbol `bytes` made once (1.2 MB held,
tracemalloc). Judged against `decode_huffman`
(tests/unit/test_h2_huffman.py)."""

from __future__ import annotations

from functools import cache

from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

__all__ = ["HuffmanError", "decode"]

_EOS = 256
_SYMBOLS = [bytes((symbol,)) for symbol in range(256)]


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


class _Interned(dict[bytes, bytes]):
    """Each two-symbol string once: the first made is the one kept."""

    def __missing__(self, key: bytes) -> bytes:
        self[key] = key
        return key


@cache
def _tables() -> tuple[bytes, tuple[bytes | None, ...], frozenset[int]]:
    """Built at the first Huffman string a process decodes, not at import: a worker
    whose upstream codes no string (HTTP/1.1, the emulator) never pays for them."""
    children, count = _tree()
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
                    out, node = _SYMBOLS[-1 - child], 0
            next_node.append(node)
            nibble_out.append(out)
    # A byte from each node: its high nibble, then any low one. A byte completes at
    # most two symbols; the two-symbol `bytes` are made once each (17,666 distinct
    # among 46,080 steps: ~0.6 MB, where one each was ~1.6 MB) and the empty and
    # one-symbol ones are CPython's own singletons.
    rows = [bytes(next_node[at:at + 16]) for at in range(0, len(next_node), 16)]
    outs = [nibble_out[at:at + 16] for at in range(0, len(nibble_out), 16)]
    emitted: list[bytes | None] = [None] * (count << 8)  # its size at once: no copies
    pairs = _Interned()
    for at, first in enumerate(nibble_out):
        if first is None:
            continue
        seconds = outs[next_node[at]]
        emitted[at << 4:(at << 4) + 16] = seconds if not first else [
            second if second is None else pairs[first + second] if second else first
            for second in seconds]
    following = b"".join([rows[middle] for middle in next_node])
    # Where a string may end: on a symbol's end (the root) or within EOS's first 7 bits
    # (its code is all ones: padding is the ones of the path from the root).
    ends = {0}
    node = 0
    for _ in range(7):
        node = children[node][1]
        ends.add(node)
    # A tuple: of untracked objects only, the collector stops tracking it at its first
    # pass; a list made after the worker's `gc.freeze` (runtime/heap.py) would have its
    # 65,536 entries walked at every full collection.
    return following, tuple(emitted), frozenset(ends)


def decode(raw: bytes) -> bytes:
    """The string `raw` codes; `HuffmanError` if it codes none."""
    following, emitted, ends = _tables()
    state = 0
    out: list[bytes | None] = []
    append = out.append
    for byte in raw:
        at = state << 8 | byte
        append(emitted[at])
        state = following[at]
    if state not in ends:
        raise HuffmanError("padding longer than 7 bits or not EOS's ones")
    try:
        return b"".join(out)  # type: ignore[arg-type]  # None: EOS decoded
    except TypeError:
        raise HuffmanError("EOS in a Huffman string") from None
