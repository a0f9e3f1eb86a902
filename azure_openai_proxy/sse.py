"""Server-sent events, decoded incrementally from bytes, without ever splitting or merging one.

`SseDecoder` is a feed/flush parser: `feed(chunk)` returns the events the chunk completed,
`flush()` returns an unterminated trailing event at end of stream. Each `SseEvent` keeps
the exact bytes it was decoded from (`raw`, including its terminating blank line), so a
caller that changes nothing can forward `raw` and the relay stays a byte-exact relay:
the concatenation of every event's `raw` is the input.

An "event" here is any block ended by a blank line, including blocks with no `data:`
(comment-only keep-alives, stray blank lines); such blocks have `data is None`, and a
consumer following the WHATWG rules simply skips them.

Line endings `\\n`, `\\r\\n` and `\\r` are all accepted. A chunk that ends in `\\r` is held
back until the next byte shows whether it is a `\\r\\n` pair, so the events (and their
`raw`) are the same however the stream was chunked.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseDecoder", "SseEvent"]

_LF = 10


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One event: its exact bytes and its parsed fields (`data` lines joined by `\\n`)."""

    raw: bytes
    data: bytes | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None


def parse_event(raw: bytes) -> SseEvent:
    """Parse one block of lines (at most one event) into an `SseEvent` keeping `raw`."""
    data: list[bytes] = []
    event = id_ = None
    retry = None
    for line in raw.splitlines():  # bytes.splitlines breaks on \n, \r\n and \r only
        if not line or line[0] == 0x3A:  # blank line, or a ":" comment
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                id_ = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            retry = int(value)
    joined = (data[0] if len(data) == 1 else b"\n".join(data)) if data else None
    return SseEvent(raw=raw, data=joined, event=event, id=id_, retry=retry)


class SseDecoder:
    """Incremental SSE decoder: `feed()` bytes as they arrive, `flush()` at end of stream."""

    __slots__ = ("_buf", "_cr", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the first line of `_buf` not yet known to be complete
        self._cr = -1  # position of the next b"\r" at or after `_pos`, -1 if none

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Return the events `chunk` completed (possibly none); keep the rest buffered."""
        if not chunk:
            return []
        buf = self._buf
        old_len = len(buf)
        buf += chunk
        cr = self._cr  # invariant: -1 means no b"\r" in buf[pos:]
        if cr == -1 and b"\r" in chunk:
            cr = buf.find(b"\r", old_len)
        events: list[SseEvent] = []
        start = 0  # start of the current event in `buf`
        pos = self._pos
        end_of_buf = len(buf)
        while pos < end_of_buf:
            if cr != -1 and cr < pos:
                cr = buf.find(b"\r", pos)
            lf = buf.find(b"\n", pos)
            if cr != -1 and (lf == -1 or cr < lf):
                if cr + 1 == end_of_buf:
                    break  # "\r" or "\r\n"? wait for the next byte
                eol, nxt = cr, cr + (2 if buf[cr + 1] == _LF else 1)
            elif lf != -1:
                eol, nxt = lf, lf + 1
            else:
                break
            if eol == pos:  # a blank line ends the event
                events.append(parse_event(bytes(buf[start:nxt])))
                start = nxt
            pos = nxt
        if cr != -1 and cr < pos:
            cr = buf.find(b"\r", pos)
        if start:
            del buf[:start]
            pos -= start
            if cr != -1:
                cr -= start
        self._pos = pos
        self._cr = cr
        return events

    def flush(self) -> list[SseEvent]:
        """Return the buffered trailing event, terminated or not, and reset the decoder."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._pos = 0
        self._cr = -1
        if not rest:
            return []
        # Only one event can remain: everything before a complete blank line went out.
        # The exception is a held-back "\r" that ends a blank line: still one event.
        return [parse_event(rest)]
