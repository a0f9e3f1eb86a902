"""Server-sent events, decoded incrementally from bytes, without ever splitting or merging one.

`SseDecoder` is a feed/flush parser: `feed(chunk)` returns the events the chunk completed,
`flush()` returns an unterminated trailing event at end of stream. Each `SseEvent` keeps
the exact bytes it was decoded from (`raw`, including its terminating blank line), so a
caller that changes nothing can forward `raw` and the relay stays a byte-exact relay:
the concatenation of every event's `raw` is the input, less a UTF-8 byte order mark at
its very start: WHATWG's stream decoding drops it, so "\\ufeffdata: x" is a `data` line.

An "event" here is any block ended by a blank line, including blocks with no `data:`
(comment-only keep-alives, stray blank lines); such blocks have `data is None`, and a
consumer following the WHATWG rules simply skips them.

Line endings `\\n`, `\\r\\n` and `\\r` are all accepted. A chunk that ends in `\\r` is held
back until the next byte shows whether it is a `\\r\\n` pair, so the events (and their
`raw`) are the same however the stream was chunked.

Speed: this runs once per frame of every stream. `\\n`-only input (what Azure sends)
takes a path that finds each event with one `find(b"\\n\\n")`; a single `data:` line is
parsed without splitting; chunks without a line break are only queued. Bytes are searched
with `find`, never `in`: `b"\\r" in chunk` first tries the needle as an integer, and the
TypeError it formats and clears costs more than the search (about 1,900 instructions).
"""

from __future__ import annotations

from typing import NamedTuple

from azure_openai_proxy.errors import UpstreamEventTooLarge

__all__ = ["MAX_EVENT_BYTES", "MAX_RELAYED_EVENT_BYTES", "SseDecoder", "SseEvent", "parse_event"]

# The most of one event Azure sends that the gateway holds, whatever `upstream.max_answer_bytes`
# allows (`SseDecoder` takes the smaller: an operator can lower them, not raise them). An event
# is parsed whole, and orjson's parse peaks near 14 times the event (a 64 MiB line: ~900 MiB
# under tracemalloc), so these bound a stream's memory, not an answer's size:
# - a chat or completion stream's event, each parsed (`ChatStreamNormalizer`; the decoder's
#   default): Azure's are deltas of a few hundred bytes, audio's some KiB, a first frame's
#   citations some hundreds;
MAX_EVENT_BYTES = 8 * 1024 * 1024
# - an event of a stream relayed as it is, read by its meter (Responses, pictures, speech):
#   a Responses stream's last event repeats the whole answer, its pictures' base64 included.
MAX_RELAYED_EVENT_BYTES = 64 * 1024 * 1024
# What WHATWG's UTF-8 decode drops at a stream's very start (`SseDecoder._started`).
_BOM = b"\xef\xbb\xbf"
_START = b""  # `SseDecoder._parts`' first piece until the stream's first bytes

_LF = 10
_CR = 13


class SseEvent(NamedTuple):
    """One event: its exact bytes and its parsed fields (`data` lines joined by `\\n`).

    Immutable. A NamedTuple rather than a frozen dataclass: it is built once per frame
    on the hot path, and a frozen dataclass costs about four times as much to build.
    """

    raw: bytes
    data: bytes | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None


_new_event = tuple.__new__


def parse_event(raw: bytes) -> SseEvent:
    """Parse one block of lines (at most one event) into an `SseEvent` keeping `raw`."""
    # The common frame, exactly b"data: <payload>\n\n", needs no splitting.
    if (raw[:6] == b"data: " and raw.find(b"\n") == len(raw) - 2 and raw[-1:] == b"\n"
            and raw.find(b"\r") == -1):
        return _new_event(SseEvent, (raw, raw[6:-2], None, None, None))
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
    return SseEvent(raw, joined, event, id_, retry)


class SseDecoder:
    """Incremental SSE decoder: `feed()` bytes as they arrive, `flush()` at end of stream.

    An event of many lines that arrives in many reads is kept as the pieces of its
    complete lines (`_lines`) and joined once, when its blank line comes: each byte fed is
    copied a bounded number of times however the stream is cut (a 4 MB event of 40,000
    lines, a line a read, was copied whole at every read: ~80 GB).

    An unfinished event is held up to `limit` bytes (at most `ceiling`): a read that leaves more raises
    `UpstreamEventTooLarge`, with nothing held after (if the read completed events before
    it, those are returned, and the next read raises; `flush()` drops it).

    The stream's first bytes are looked at for a byte order mark (`_started`) before
    anything else: until then `_parts` holds an empty piece (`_START`; no chunk fed is
    empty), so they miss the fast paths, whose checks are unchanged.
    """

    __slots__ = ("_buf", "_cr", "_limit", "_lines", "_parts", "_size", "_whole")

    def __init__(self, limit: int = MAX_EVENT_BYTES, ceiling: int = MAX_EVENT_BYTES) -> None:
        # The setting's limit, never past the reader's `ceiling` (a memory bound, above).
        # (A conditional, not min(): a builtin's call costs more, once a stream.)
        self._limit = limit if limit < ceiling else ceiling
        self._size = 0  # the unfinished event's bytes: `_lines`, `_buf` and `_parts`
        # The current event's bytes are `_lines` + `_buf` + `_parts`, in that order.
        # `_buf` is never empty while `_lines` is not: `idle()`, `single()` and the fast
        # path of `feed()` look at `_buf` and `_parts` only.
        self._lines: list[bytes] = []  # its first lines, complete, each read's once
        self._buf = b""  # then the line not yet known to be complete, from its start
        self._whole = False  # or, if True, complete lines the last read ended with
        # later chunks with no line break, not yet scanned; `_START` until the first bytes
        self._parts: list[bytes] = [_START]
        self._cr = -1  # position of the next b"\r" in `_buf`; -1: none

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Return the events `chunk` completed (possibly none); keep the rest buffered."""
        if not chunk:
            return []
        old = self._buf
        has_cr = chunk.find(b"\r") != -1
        if (  # the common chunk: exactly one b"data: <payload>\n\n" event
            not old
            and not has_cr
            and not self._parts
            and chunk[:6] == b"data: "
            and chunk.find(b"\n") == len(chunk) - 2
            and chunk[-1] == _LF
        ):
            return [_new_event(SseEvent, (chunk, chunk[6:-2], None, None, None))]
        parts = self._parts
        if parts and not parts[0]:  # `_START`: the stream's first bytes
            return self._started(chunk)
        size = self._size + len(chunk)
        if not has_cr and chunk.find(b"\n") == -1 and old[-1:] != b"\r":
            parts.append(chunk)  # completes nothing; join later, once
            self._size = size
            if size > self._limit:
                self._refuse()
            return []
        if self._size > self._limit:  # left so by a read that completed events before it
            self._refuse()
        lines = self._lines
        if self._whole:  # set aside, not copied again: the scan starts at a line's start
            lines.append(old)
            self._whole = False
            old = b""
        if parts:
            parts.append(chunk)
            buf = old + b"".join(parts) if old else b"".join(parts)
            parts.clear()
        else:
            buf = old + chunk if old else chunk
        cr = self._cr
        if cr == -1 and has_cr:
            cr = buf.find(b"\r", len(buf) - len(chunk))
        events, start, pos, cr = _scan(buf, cr, lines)
        if pos == len(buf):  # only complete lines left (or nothing)
            self._buf = buf[start:] if start else buf
            self._whole = start < pos
            self._cr = -1
        else:
            if start < pos:
                lines.append(buf[start:pos])
            self._buf = buf[pos:]
            self._cr = cr - pos if cr != -1 else -1
        self._size = size = len(buf) - start if events else size
        if size > self._limit and not events:
            self._refuse()
        return events

    def single(self, chunk: bytes) -> bytes | None:
        """The data of `chunk` if it is exactly one `data: <payload>\\n\\n` event and
        nothing is buffered (what `feed` would return as its one event's `data`), else
        None; the decoder is left as `feed` would leave it (as it was, but for the stream's
        first bytes: they held no byte order mark). For a caller with a fast path for
        such chunks, which then need no `SseEvent`."""
        parts = self._parts
        if (self._buf or chunk[:6] != b"data: " or chunk[-1:] != b"\n"
                or chunk.find(b"\n") != len(chunk) - 2 or chunk.find(b"\r") != -1):
            return None
        if parts:  # `_START` alone (`_started`: no mark before "data: "), or a queued piece
            if len(parts) > 1 or parts[0]:
                return None
            parts.clear()
        return chunk[6:-2]

    def idle(self) -> bool:
        """Whether nothing is buffered: the next byte fed starts an event (not so before
        the stream's first bytes: they may be a byte order mark)."""
        return not self._buf and not self._parts

    def flush(self) -> list[SseEvent]:
        """Return the buffered trailing event, terminated or not, and reset the decoder.
        Never raises: an event held past `limit` is dropped. (A byte order mark is looked
        for at the first stream's start only.)"""
        lines, parts = self._lines, self._parts
        rest = (b"" if self._size > self._limit
                else b"".join([*lines, self._buf, *parts]) if lines or parts else self._buf)
        lines.clear()
        parts.clear()
        self._buf = b""
        self._whole = False
        self._cr = -1
        self._size = 0
        # Only one event can remain: everything before a complete blank line went out
        # (a held-back "\r" that ends a blank line still makes just one event).
        return [parse_event(rest)] if rest else []

    def _started(self, chunk: bytes) -> list[SseEvent]:
        """The stream's first bytes (`_parts` is `_START` and up to two bytes a byte order
        mark starts with): a whole mark is dropped, a cut one waited for, and the rest fed."""
        parts = self._parts
        head = b"".join(parts) + chunk if len(parts) > 1 else chunk
        if len(head) < len(_BOM) and _BOM.startswith(head):
            parts.append(chunk)
            return []
        parts.clear()
        return self.feed(head[3:] if head.startswith(_BOM) else head)

    def _refuse(self) -> None:
        """An unfinished event past `limit`: nothing held any more, and the error raised."""
        self.flush()
        raise UpstreamEventTooLarge(
            f"An event of Azure OpenAI's stream is larger than the gateway's limit of "
            f"{self._limit} bytes.")


def _scan(buf: bytes, cr: int, lines: list[bytes]) -> tuple[list[SseEvent], int, int, int]:
    """Cut the complete events out of `buf`, which starts at a line's start and continues
    the event begun by `lines` (emptied if it ends here); `cr` == -1 promises no b"\\r" in
    `buf`, else it is the first one's position.

    Returns the events, where the unfinished event starts, the first line not yet
    known to be complete, and the next b"\\r" from there (or -1).
    """
    events: list[SseEvent] = []
    start = pos = 0
    end = len(buf)
    while pos < end:
        if cr == -1:  # only "\n" line endings ahead: one search per event
            if buf[pos] == _LF:
                nxt = pos + 1  # a blank line right at the start of a line
            else:
                found = buf.find(b"\n\n", pos)
                if found == -1:
                    pos = max(pos, buf.rfind(b"\n", pos) + 1)
                    break
                nxt = found + 2
            events.append(parse_event(_joined(lines, buf[start:nxt]) if lines else buf[start:nxt]))
            start = pos = nxt
            continue
        if cr < pos:
            cr = buf.find(b"\r", pos)
            continue
        lf = buf.find(b"\n", pos, cr)
        if lf != -1:
            eol, nxt = lf, lf + 1
        elif cr + 1 == end:
            break  # "\r" or "\r\n"? wait for the next byte
        else:
            eol, nxt = cr, cr + (2 if buf[cr + 1] == _LF else 1)
        if eol == pos:  # a blank line ends the event
            events.append(parse_event(_joined(lines, buf[start:nxt]) if lines else buf[start:nxt]))
            start = nxt
        pos = nxt
    if cr != -1 and cr < pos:
        cr = buf.find(b"\r", pos)
    return events, start, pos, cr


def _joined(lines: list[bytes], last: bytes) -> bytes:
    """An event's bytes from its earlier lines' pieces and its `last`; `lines` emptied."""
    lines.append(last)
    raw = b"".join(lines)
    lines.clear()
    return raw
