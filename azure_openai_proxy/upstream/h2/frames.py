"""HTTP/2 on the wire, client side (RFC 9113): frame headers, the few frames a client
writes, and request header blocks.

Pure functions over bytes. Header blocks are HPACK (RFC 7541) literals "without
indexing" (secrets "never indexed"): our encoder keeps no dynamic table, so a block
depends on the request alone and is remembered per method, URL and headers, as
`fast/wire.py` remembers HTTP/1.1 heads. Answers' blocks are decoded with the `hpack`
package (`connection.py`): the server's encoder may index, so its table must be kept.
"""

from __future__ import annotations

import struct

from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.errors import HostileInput
from azure_openai_proxy.upstream.origin import Origin, parse_origin
from azure_openai_proxy.upstream.transport import UpstreamRequest

__all__ = [
    "CANCEL", "CLIENT_PREFACE", "CONNECTION_WINDOW", "DATA", "END_HEADERS", "END_STREAM", "FRAME_HEAD",
    "PREFACE", "REFUSED_STREAM", "STREAM_WINDOW", "Origin", "ProtocolError", "check_stream",
    "data_frame", "goaway_frame",
    "header_block", "headers_frames", "parse_origin", "ping_ack", "rst_frame",
    "settings_ack", "window_update",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# (length << 8 | type, flags, stream id): the 24-bit length and the type read as one int.
FRAME_HEAD = struct.Struct(">IBI")

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 6, 7, 8, 9
ENHANCE_YOUR_CALM = 0xB

HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 1, 2, 3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 4, 5, 6

# What one stream may hold unread: a slow client's stream stops Azure's (its window is
# spent) at this much; other streams go on. It also caps one answer's bytes in flight per
# round trip: 256 KiB made a 25 MB embeddings answer take ~8 s from another region (80 ms
# away), where HTTP/1.1's TCP window grows to megabytes. 4 MiB is Go's http2 client's.
STREAM_WINDOW = 4 << 20
# The connection's window is credited as bytes arrive (not as they are read): the
# stream windows bound what is held, and one slow stream must not stall the others.
CONNECTION_WINDOW = 1 << 30
# Frames we accept (the default; ours to raise in SETTINGS, not needed for SSE frames).
OUR_MAX_FRAME = 16384
MAX_HEAD_BYTES = 64 * 1024  # as fast/: an answer's header block, decoded
MAX_HEADERS = 128

_MASK = 0x7FFFFFFF


class ProtocolError(Exception):
    """The server broke HTTP/2: the connection ends (GOAWAY with `code`)."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


_ON_CONNECTION = frozenset({SETTINGS, PING, GOAWAY})
_ON_STREAM = frozenset({DATA, HEADERS, PRIORITY, RST_STREAM, CONTINUATION, PUSH_PROMISE})
_ON_OPENED = frozenset({DATA, HEADERS, RST_STREAM, WINDOW_UPDATE, CONTINUATION})


def check_stream(kind: int, stream: int, next_stream: int) -> None:
    """RFC 9113's rules for which stream a frame may name, for a client that opened
    streams below `next_stream` and takes none from the server (push is off)."""
    if stream:
        if kind in _ON_CONNECTION:
            raise ProtocolError("a connection's frame on a stream")
        if (stream >= next_stream or not stream & 1) and kind in _ON_OPENED:
            raise ProtocolError("a frame on a stream we never opened")
    elif kind in _ON_STREAM:
        raise ProtocolError("a stream's frame on the connection")


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return FRAME_HEAD.pack(len(payload) << 8 | kind, flags, stream) + payload


def data_frame(stream: int, payload: bytes, end: bool) -> bytes:
    return FRAME_HEAD.pack(len(payload) << 8, END_STREAM if end else 0, stream) + payload


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in values.items()))


def settings_ack() -> bytes:
    return frame(SETTINGS, ACK, 0, b"")


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def rst_frame(stream: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def ping_ack(payload: bytes) -> bytes:
    return frame(PING, ACK, 0, payload)


def goaway_frame(last_stream: int, code: int) -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream, code))


# What a connection starts with: our settings, and the connection's window opened.
CLIENT_PREFACE = PREFACE + settings_frame({
    ENABLE_PUSH: 0, INITIAL_WINDOW_SIZE: STREAM_WINDOW, MAX_HEADER_LIST_SIZE: MAX_HEAD_BYTES,
}) + window_update(0, CONNECTION_WINDOW - 65535)


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """SETTINGS entries, their values checked (RFC 9113 §6.5.2)."""
    if len(payload) % 6:
        raise ProtocolError("a SETTINGS frame's size", FRAME_SIZE_ERROR)
    entries = [struct.unpack_from(">HI", payload, at) for at in range(0, len(payload), 6)]
    for code, value in entries:
        if code == INITIAL_WINDOW_SIZE and value > _MASK:
            raise ProtocolError("a window too large", FLOW_CONTROL_ERROR)
        if code == MAX_FRAME_SIZE and not 16384 <= value <= 0xFFFFFF:
            raise ProtocolError("a bad MAX_FRAME_SIZE")
        if code == ENABLE_PUSH and value > 1:
            raise ProtocolError("a bad ENABLE_PUSH")
    return entries


def parse_goaway(payload: bytes) -> tuple[int, int]:
    last, code = struct.unpack_from(">II", payload)
    return last & _MASK, code


def headers_frames(stream: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """A HEADERS frame, and CONTINUATION frames when the block is larger than a frame."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(HEADERS, flags | END_HEADERS, stream, block)
    parts = [frame(HEADERS, flags, stream, block[:max_frame])]
    for at in range(max_frame, len(block), max_frame):
        last = at + max_frame >= len(block)
        parts.append(frame(CONTINUATION, END_HEADERS if last else 0, stream,
                           block[at:at + max_frame]))
    return b"".join(parts)


# -- request header blocks (HPACK literals, no dynamic table) ----------------------------

# Headers HTTP/2 forbids (connection-specific) or that become pseudo-headers.
_DROPPED = frozenset({"host", "connection", "keep-alive", "proxy-connection",
                      "transfer-encoding", "upgrade", "te", "content-length"})
# Never indexed (RFC 7541 §7.1.3): an intermediary must not compress them either.
_SECRET = frozenset({"api-key", "authorization", "cookie"})
# HPACK's static table entries we name: a full match, or a name.
_STATIC_FULL = {(":method", "GET"): 2, (":method", "POST"): 3, (":scheme", "http"): 6,
                (":scheme", "https"): 7}
_AUTHORITY, _METHOD, _PATH, _CONTENT_LENGTH = 1, 2, 4, 28
_BLOCKS: BoundedCache[tuple[object, ...], tuple[bytes, int | None]] = BoundedCache(256)


def header_block(request: UpstreamRequest, origin: Origin, length: int | None) -> bytes:
    """The request's header block; `length`, when known, as its content-length (else a
    content-length among the request's headers, or none: the body's end is END_STREAM)."""
    key = (request.method, origin.key, origin.path, *request.headers.items())
    known = _BLOCKS.get(key)
    if known is None:
        known = _BLOCKS.put(key, _block(request, origin))
    block, declared = known
    if length is None:
        length = declared
    if length is None:
        return block
    digits = str(length).encode()  # under 127 digits: its length is one byte
    return b"".join((block, _LENGTH_NAME, bytes((len(digits),)), digits))


def _block(request: UpstreamRequest, origin: Origin) -> tuple[bytes, int | None]:
    scheme = "https" if origin.tls else "http"
    parts = [_field(":method", request.method), _field(":scheme", scheme),
             _field(":authority", origin.authority), _field(":path", origin.path)]
    declared: int | None = None
    for name, value in request.headers.items():
        lower = name.lower()
        if lower == "content-length":
            try:
                declared = int(value)
            except ValueError:
                raise HostileInput("A content-length sent upstream is not a number.") from None
        elif lower not in _DROPPED:
            parts.append(_field(lower, value))
    return b"".join(parts), declared


def _field(name: str, value: str) -> bytes:
    full = _STATIC_FULL.get((name, value))
    if full is not None:
        return bytes((0x80 | full,))  # indexed
    raw = value.encode("latin-1")
    if b"\r" in raw or b"\n" in raw or b"\0" in raw:
        raise HostileInput("A header sent upstream holds a line break.")
    never = 0x10 if name in _SECRET else 0x00
    index = {":authority": _AUTHORITY, ":method": _METHOD, ":path": _PATH}.get(name)
    if index is not None:
        return _indexed_name(index, never, 4) + _string(raw)
    encoded = name.encode("latin-1")
    if not encoded or any(c <= 0x20 or c >= 0x7F or c == 0x3A for c in encoded):
        raise HostileInput("A header name sent upstream is not a token.")
    return bytes((never,)) + _string(encoded) + _string(raw)


def _indexed_name(index: int, pattern: int, bits: int) -> bytes:
    return _integer(index, bits, pattern)


def _string(raw: bytes) -> bytes:
    return _integer(len(raw), 7, 0x00) + raw  # not Huffman-coded: plain octets


def _integer(value: int, bits: int, pattern: int) -> bytes:
    """HPACK's integer with a `bits`-bit prefix (RFC 7541 §5.1)."""
    top = (1 << bits) - 1
    if value < top:
        return bytes((pattern | value,))
    out = [pattern | top]
    value -= top
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# A literal field without indexing named by the static table's content-length: the
# name's part of every request's content-length field, made once (`header_block`).
_LENGTH_NAME = _indexed_name(_CONTENT_LENGTH, 0x00, 4)
