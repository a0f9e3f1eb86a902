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
composed (65,536 entries: 64 KiB of next states and a list of `bytes`): ~91M
instructions once a process, 2.5 MB held (tracemalloc). Judged against `decode_huffman`
(tests/unit/test_h2_huffman.py)."""

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


def _tables() -> tuple[bytes, list[bytes | None], frozenset[int]]:
    children, count = _tree()
    # A nibble from each node: (next node, symbols emitted, EOS completed)
    nibble: list[tuple[int, bytes, bool]] = []
    for start in range(count):
        for value in range(16):
            node, out, failed = start, bytearray(), False
            for shift in (3, 2, 1, 0):
                child = children[node][value >> shift & 1]
                if child >= 0:
                    node = child
                elif child == -1 - _EOS:
                    failed, node = True, 0
                else:
                    out.append(-1 - child)
                    node = 0
            nibble.append((node, bytes(out), failed))
    # Rows of 16 per node: the next nodes as bytes, what is emitted (None: EOS)
    nodes = [bytes(node for node, _, _ in nibble[at:at + 16]) for at in range(0, len(nibble), 16)]
    outs = [[None if failed else out for _, out, failed in nibble[at:at + 16]]
            for at in range(0, len(nibble), 16)]
    following = bytearray()
    emitted: list[bytes | None] = []
    for middle, first, failed in nibble:  # a node's high nibble, then any low one
        following += nodes[middle]
        if failed:
            emitted += [None] * 16
        else:
            emitted += [None if second is None else first + second for second in outs[middle]]
    # Where a string may end: on a symbol's end (the root) or within EOS's first 7 bits
    # (its code is all ones: padding is the ones of the path from the root).
    ends = {0}
    node = 0
    for _ in range(7):
        node = children[node][1]
        ends.add(node)
    return bytes(following), emitted, frozenset(ends)


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
