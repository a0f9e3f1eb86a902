"""An answer's header blocks: put together from a HEADERS frame and its CONTINUATIONs,
decoded (`hpack_decoder.py`), and read as a head (status and headers) with the checks
`fast/` makes of an HTTP/1.1 head.

What is wrong decides who pays: a block that breaks HPACK or the framing ends the
connection (`ProtocolError`: the dynamic table is shared); a head too large or malformed
fails its own stream only (`HeadTooLarge`, `MalformedHead`)."""

from __future__ import annotations

from itertools import islice

from multidict import CIMultiDict

from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.h2.frames import ProtocolError
from azure_openai_proxy.upstream.h2.hpack_decoder import HeaderBlockError, HpackDecoder

__all__ = ["HeaderBlocks", "MalformedHead", "read_head"]

_BLOCK_LIMIT = 1 << 20  # a header block's bytes, over its HEADERS and CONTINUATIONs
_BLOCK_FRAMES = 256  # and its frames: empty CONTINUATIONs must not go on for ever


class MalformedHead(Exception):
    """A head RFC 9113 §8.1.1 calls malformed: its stream fails, the connection goes on."""


class HeaderBlocks:
    """One connection's header blocks in order (RFC 9113 allows no other frame inside
    one): `frame()` takes each HEADERS or CONTINUATION frame and gives back a block's
    (stream, END_STREAM, fields) once it is whole; fields None when past `MAX_HEAD_BYTES`
    (32 more per field, as RFC 9113's header list size counts) or `MAX_HEADERS`."""

    __slots__ = ("decoder", "end_stream", "parts", "sid", "size")

    def __init__(self) -> None:
        self.decoder = HpackDecoder()
        self.sid = 0  # the stream whose block is incomplete; 0: none
        self.end_stream = False
        self.parts: list[bytes] = []
        self.size = 0

    def frame(self, kind: int, flags: int, sid: int, payload: bytes
              ) -> tuple[int, bool, list[tuple[bytes, bytes]] | None] | None:
        if kind == f.HEADERS:
            if self.sid or sid == 0:
                raise ProtocolError("an unexpected HEADERS frame")
            start, end = 0, len(payload)
            if flags & f.PADDED:
                if not payload or payload[0] >= len(payload):
                    raise ProtocolError("bad padding")
                start, end = 1, end - payload[0]
            if flags & f.PRIORITY_FLAG:
                start += 5
                if start > end:
                    raise ProtocolError("a HEADERS frame too short", f.FRAME_SIZE_ERROR)
            self.sid, self.end_stream = sid, bool(flags & f.END_STREAM)
            self.parts = [payload[start:end]]
            self.size = end - start
        else:
            if not self.sid or self.sid != sid:
                raise ProtocolError("an unexpected CONTINUATION frame")
            self.parts.append(payload)
            self.size += len(payload)
            if self.size > _BLOCK_LIMIT or len(self.parts) > _BLOCK_FRAMES:
                raise ProtocolError("a header block without end", f.ENHANCE_YOUR_CALM)
        if not flags & f.END_HEADERS:
            return None
        sid, parts = self.sid, self.parts
        self.sid, self.parts = 0, []
        block = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            # Decoded even for a stream we reset: the table must follow the server's.
            fields = self.decoder.decode(block, f.MAX_HEAD_BYTES)
        except HeaderBlockError as exc:
            raise ProtocolError(f"a bad header block ({exc})", f.COMPRESSION_ERROR) from None
        if fields is not None and len(fields) > f.MAX_HEADERS:
            fields = None
        return sid, self.end_stream, fields


# What an HTTP/2 field name may hold: RFC 9110's token characters, lower case.
_NAME_BYTES = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_CONNECTION_SPECIFIC = frozenset({b"connection", b"proxy-connection", b"keep-alive",
                                  b"transfer-encoding", b"upgrade"})
# Names checked and found good: an upstream sends the same few dozen on every answer.
# Bounded in count and size: only short names are remembered (Azure's are under 40
# bytes; a name may be as long as a head, 64 KiB, and 1,024 of those would pin 64 MB),
# and a full set is emptied, so that a server inventing names cannot leave it full of
# them for good.
_GOOD_NAMES: set[bytes] = set()
_GOOD_NAMES_MAX = 1024
_GOOD_NAME_LONGEST = 64


def _check_name(name: bytes) -> None:
    """`MalformedHead` for an empty name, a second `:status` or a request's
    pseudo-field (":" is no token character), upper case, a space or a byte past
    ASCII (RFC 9113 §8.2.1) and HTTP/1.1's connection fields (§8.2.2); else the name
    is remembered as good."""
    if not name or name.translate(None, _NAME_BYTES):
        raise MalformedHead("a bad header name")
    if name in _CONNECTION_SPECIFIC:
        raise MalformedHead("a connection-specific header")
    if len(name) <= _GOOD_NAME_LONGEST:
        if len(_GOOD_NAMES) >= _GOOD_NAMES_MAX:
            _GOOD_NAMES.clear()
        _GOOD_NAMES.add(name)


def read_head(fields: list[tuple[bytes, bytes]]) -> tuple[int, CIMultiDict[str]]:
    """An answer's status and headers; `MalformedHead` for what no HTTP/1.1 head can
    hold (a value with CR, LF or NUL, an empty name), what RFC 9113 §8.2 calls
    malformed (a name with upper case or a byte no token has; `connection`,
    `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`), a missing or bad status, a
    pseudo-header field that is not the first (RFC 9113 §8.3: an answer's one, `:status`,
    comes before every regular field) and a `content-length` that is not 1*DIGIT, or is
    given twice with two values (RFC 9110 §8.6: `-5`, `+5`, ` 5`, `1_0` are what `int()`
    takes and llhttp, fast/'s parser, refuses)."""
    if not fields or fields[0][0] != b":status":
        raise MalformedHead("an answer without a status first")
    value = fields[0][1]
    if len(value) != 3 or not value.isdigit():  # bytes: ASCII digits only
        raise MalformedHead("a bad :status")
    status = int(value)
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in islice(fields, 1, None):
        if name not in _GOOD_NAMES:  # a set's look-up: a name's check costs ~1,400
            _check_name(name)
        if 13 in value or 10 in value or 0 in value:  # CR, LF, NUL: an int is a memchr
            # (a bytes operand is first tried as an int: an exception made and dropped)
            raise MalformedHead("a header value with CR, LF or NUL")
        else:
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
    if status < 100:
        raise MalformedHead("an answer without a status")
    # Checked once the head is whole: one lookup (~600 instructions a head, callgrind)
    # costs less than a compare per field (~1,200). str.isdigit takes "²", which int()
    # refuses: ASCII digits only.
    lengths = headers.getall("content-length", None)
    if lengths is not None and not (lengths[0].isascii() and lengths[0].isdigit()
                                    and lengths.count(lengths[0]) == len(lengths)):
        raise MalformedHead("a bad content-length")
    return status, headers
