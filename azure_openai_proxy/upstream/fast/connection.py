"""One upstream HTTP/1.1 connection: an asyncio Protocol that llhttp (httptools) parses
answers into, with flow control (reading pauses past `HIGH_WATER` unread bytes) and
transparent gzip/deflate decoding.

An answer's body is either queued for a caller that awaits `wait()` and `take()`s it
(pull), or pushed into a `BodySink` straight from llhttp's callbacks (`push_to`): no
future, task step or generator per read, which for a long stream of small frames was a
quarter of the gateway's CPU per frame (issue 15)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Protocol, cast

import httptools
from multidict import CIMultiDict

from azure_openai_proxy.errors import (
    UpstreamHeadTooLarge,
    UpstreamInvalidAnswer,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from azure_openai_proxy.upstream.framing import (
    Inflater,
    coding_refused,
    compressed,
    status_refused,
)
from azure_openai_proxy.upstream.transport import UpstreamStreamBroken

if TYPE_CHECKING:
    from azure_openai_proxy.upstream.fast.pool import _HostPool

__all__ = [
    "HIGH_WATER", "MAX_HEADERS", "MAX_HEAD_BYTES", "BodySink", "_Connection", "_Stale",
]

# Unread body bytes at which a connection stops reading its socket until the caller
# drains the queue: a slow client of a 50 MB answer holds this much, not 50 MB.
HIGH_WATER = 256 * 1024
# Bounds on an answer's head (status line, headers, interim 1xx heads): Azure's heads are
# about 1 KiB and 20 headers. llhttp sets none, and httptools gathers a header's value in
# memory until it ends, so the head is fed at most this much at a time.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 128
_BROKEN = "The connection to Azure OpenAI broke while the response was being read."
_STALLED = "Azure OpenAI stopped sending data (read timeout) in the middle of the response."
# Where fields after the head go (a chunked body's trailer): never kept. Nothing reads a
# trailer, and kept they were a list without bound: a server sending fields after the
# last chunk grew it ~15 bytes for each byte it sent, for as long as it went on.
_TRAILER: deque[tuple[str, str]] = deque(maxlen=0)
# A pushed answer's read timeout is checked this many times per timeout, not timed per
# read (a clock read per read was 4% of a relayed frame): silence is found after at
# least the timeout and at most 1/_QUIET_CHECKS of it more (and two of the loop's
# delays: a check that runs late or early moves the next, never the deadline).
_QUIET_CHECKS = 8


class _Stale(Exception):
    """A reused connection died before any byte of the answer: worth one retry."""


class _HeadRefused(Exception):
    """Raised from llhttp's callback to stop parsing a head past the limits."""


class BodySink(Protocol):
    """Where a pushed answer's body goes (`_Connection.push_to`). Called from the
    connection's protocol callbacks, so never awaiting and never raising: `feed` with
    each piece of the body as it is parsed (an HTTP chunk, say), `flush` after each read
    that was parsed whole (a read's pieces go to the client in one write), then once
    `end` (the body ended whole) or `fail` (it broke, or Azure went silent for the read
    timeout), unless the sink is detached first; what was fed and not flushed goes out
    before either. A sink may detach itself from inside `feed`."""

    def feed(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def end(self) -> None: ...
    def fail(self, error: Exception) -> None: ...


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection. `data_received` feeds llhttp, whose callbacks (`on_*`)
    fill the current exchange: status, headers, a queue of body bytes. The caller waits
    on `wait()`, which returns on any progress and raises the exchange's failure."""

    __slots__ = (
        "body", "body_cut", "buffered", "busy", "closed", "complete", "deadline", "decoder",
        "error", "greedy", "head_only", "head_size", "headers", "heard", "idle_since",
        "interim", "keep_alive", "length", "loop", "parser", "pool", "raw",
        "reading_paused", "received", "sink", "started", "status",
        "timeout", "timer", "timer_at", "transport", "until_eof", "uses", "waiter",
        "write_paused",
    )

    def __init__(self, pool: _HostPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.busy = False
        self.uses = 0
        self.idle_since = 0.0
        self.write_paused = False
        self.reading_paused = False
        self.waiter: asyncio.Future[None] | None = None
        # The waiter's read timeout: `deadline` moves with every wait; `timer` (armed for
        # `timer_at`) only checks it, and is re-armed when it fires early (see `wait`).
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.body: deque[bytes] = deque()
        # A pushed answer's sink, and its read timeout: a piece of body sets `heard` (bytes
        # of no body, endless chunk extensions or trailer fields, do not: as for a pulled
        # answer's waiter); each check (`_QUIET_CHECKS` per timeout) that finds it set
        # clears it and moves `deadline` to a timeout from then; a check at or past
        # `deadline` without it fails the answer.
        self.sink: BodySink | None = None
        self.timeout = 0.0
        self.heard = False
        self.start(head_only=False)
        self.busy = False
        self.uses = 0

    def start(self, head_only: bool) -> None:
        """Begin an exchange: forget the last one's answer."""
        self.busy = True
        self.uses += 1
        self.head_only = head_only
        self.status = 0
        self.raw: list[tuple[str, str]] | deque[tuple[str, str]] = []
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.length: int | None = None
        self.received = self.started = self.complete = False
        self.interim = self.until_eof = self.keep_alive = self.greedy = False
        self.body_cut = False  # the request body was not sent whole: never reuse
        self.head_size = 0  # bytes received while the head was incomplete
        self.error: Exception | None = None
        self.decoder: Inflater | None = None
        self.sink = None
        self.body.clear()
        self.buffered = 0

    def close(self) -> None:
        self.sink = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    # -- asyncio's callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        # (TCP_NODELAY: both loops' TCP transports set it themselves.)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is not None:  # pushed: busy, the head in, the body parsed into the sink
            try:
                self.parser.feed_data(data)
            except Exception as exc:  # llhttp's errors, or ours from inside its callbacks
                self._fail(self._failure("the answer is not valid HTTP/1.1"), exc)
                self.close()
                return
            sink = self.sink  # None once the body ended, failed or was detached
            if sink is not None:
                sink.flush()  # the read's pieces fed: one write to the client
            return
        if not self.busy or self.complete:
            # A server speaking on an idle connection (a 408, say), or past the answer
            # (a second one: out of step, or smuggled after a short Content-Length), ends it.
            self.close()
            return
        self.received = True
        try:
            # The usual case, a whole head in the first read, without arithmetic (an int
            # past 256 is an allocation): the head's size is counted only once it spans
            # reads or the read is large.
            if self.started or (not self.head_size and len(data) <= MAX_HEAD_BYTES):
                self.parser.feed_data(data)
                if not self.started:
                    self.head_size = len(data)
            else:
                self._feed_head(data)
        except Exception as exc:  # llhttp's errors, or ours from inside its callbacks
            self._fail(self._failure("the answer is not valid HTTP/1.1"), exc)
            self.close()
        else:
            if self.sink is not None:
                self.sink.flush()  # the read's pieces fed: one write to the client

    def _feed_head(self, data: bytes) -> None:
        """Feed bytes of an incomplete head, never past `MAX_HEAD_BYTES` in all: the head
        must end within them (a 10 MB header is refused after 64 KiB); the rest (the body
        that came with it) is fed after."""
        room = MAX_HEAD_BYTES - self.head_size
        if len(data) <= room:
            self.head_size += len(data)
            self.parser.feed_data(data)
            return
        self.head_size = MAX_HEAD_BYTES
        self.parser.feed_data(data[:room])
        if not self.started:
            self._refuse_head(f"its head is larger than {MAX_HEAD_BYTES} bytes")
            return
        self.parser.feed_data(data[room:])

    def _refuse_head(self, why: str) -> None:
        error = UpstreamHeadTooLarge(f"Azure OpenAI's answer was refused: {why}.")
        self._fail(error, None)
        self.close()

    def eof_received(self) -> bool:
        if self.until_eof and self.started and not self.complete:
            self._end(keep_alive=False)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.busy:
            self.pool.lost(self)
        elif not self.complete:
            self._fail(self._failure("the server closed the connection before answering"), exc)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    # -- llhttp's callbacks ----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        # Counted once the head is whole (cheaper than per header): `MAX_HEAD_BYTES`
        # already bounds what the list can hold meanwhile.
        if len(self.raw) > MAX_HEADERS:
            self._refuse_head(f"it has more than {MAX_HEADERS} headers")
            raise _HeadRefused  # stops llhttp; `data_received` keeps the error above
        if self.complete:  # a second answer in the read that ended the first: as above
            self.close()
            raise _HeadRefused
        status = self.parser.get_status_code()
        if not 200 <= status <= 599:
            if not 100 <= status <= 199:  # llhttp takes any 3 digits: 000 was a 1xx here
                self._fail(status_refused(status), None)
                self.close()
                raise _HeadRefused
            # 100 Continue, 103 Early Hints: the real answer follows
            self.interim = True
            self.raw = []
            return
        self.status = status
        self.headers = headers = CIMultiDict(self.raw)
        self.raw = _TRAILER
        length = headers.get("content-length")
        # llhttp refuses Transfer-Encoding beside Content-Length: no look-up past a length.
        coding = headers.get("transfer-encoding") if length is None else None
        try:
            inflated = "content-encoding" in headers and compressed(headers)
        except UpstreamInvalidAnswer as exc:
            self._fail(exc, None)
            self.close()
            raise _HeadRefused from None  # stops llhttp; `data_received` keeps the error
        if coding is not None:  # a stream's head (JSON has a length): ~0.2 µs
            refused = coding_refused(headers)
            if refused is not None:
                self._fail(refused, None)
                self.close()
                raise _HeadRefused
        if inflated:
            self.decoder = Inflater()
        elif length is not None:
            self.length = int(length)
        self.started = True
        if self.head_only:
            self._end(keep_alive=False)
        elif length is None and status not in (204, 304):
            self.until_eof = coding is None
        self._wake()

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None and self.decoder is None:  # pushed: `_queue`'s, inline
            self.heard = True  # the read timeout counts from here (`_check_deadline`)
            sink.feed(body)
            return
        if self.complete:
            return
        if self.decoder is not None:
            self.heard = True
            try:
                body = self.decoder.decompress(body)
            except UpstreamInvalidAnswer as exc:
                self._fail(exc, None)
                raise _HeadRefused from None  # stops llhttp; `data_received` closes
        if body:
            self._queue(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
        elif not self.complete:
            self._end(self.parser.should_keep_alive())

    # -- the exchange ----------------------------------------------------------------

    def _queue(self, data: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.feed(data)
            return
        self.body.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.greedy and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def take(self) -> bytes:
        """Every body byte received and not yet taken; reading resumes if it had paused."""
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        if self.reading_paused:  # rarely: no call per stream chunk otherwise
            self.read_on()
        return data

    def read_on(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    def _end(self, keep_alive: bool) -> None:
        if self.decoder is not None:
            tail = self.decoder.flush()
            if tail:
                self._queue(tail)
        self.keep_alive = keep_alive
        self.complete = True
        sink = self.sink
        if sink is not None:
            self.sink = None
            sink.end()
        else:
            self._wake()

    def _failure(self, reason: str) -> Exception:
        if self.started:
            return UpstreamStreamBroken(_BROKEN)
        if not self.received and self.uses > 1:
            return _Stale()
        return UpstreamUnreachable(f"Cannot reach Azure OpenAI at {self.pool.host}: {reason}")

    def _fail(self, error: Exception, cause: BaseException | None) -> None:
        if self.error is None and not self.complete:
            error.__cause__ = cause
            self.error = error
            sink = self.sink
            if sink is not None:
                self.sink = None
                sink.fail(error)
        self.keep_alive = False
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():  # else its task was cancelled
                if self.error is not None:
                    waiter.set_exception(self.error)
                else:
                    waiter.set_result(None)

    def _stall(self) -> None:
        message = _STALLED if self.started else (
            f"Azure OpenAI did not answer in time ({self.pool.host})."
        )
        self._fail(UpstreamTimeout(message), None)

    def wait(self, timeout: float) -> asyncio.Future[None]:
        """To await until something happens (head, body bytes, the end, writable again);
        it raises the exchange's failure, or `UpstreamTimeout` after `timeout` s of
        silence. A future rather than a coroutine: it is awaited for every answer and
        every stream chunk, and each coroutine between the task and the socket costs a
        resumption. For the same reason the timeout is a deadline, not a timer per wait:
        one timer checks it and re-arms itself while waits keep moving it (making and
        cancelling a timer on every wait cost more than the rest of this method)."""
        loop = self.loop
        waiter = loop.create_future()
        if self.error is not None:
            waiter.set_exception(self.error)
            return waiter
        if self.waiter is not None and not self.waiter.done():
            self.waiter.cancel()  # one waiter at a time; never expected
        self.waiter = waiter
        self.deadline = deadline = loop.time() + timeout
        if self.timer is None or self.timer_at > deadline:
            self._arm(deadline)
        return waiter

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = when
        self.timer = self.loop.call_at(when, self._check_deadline)

    def push_to(self, sink: BodySink, timeout: float) -> None:
        """From now on, hand the body to `sink` as it is parsed, beginning with what is
        queued; `sink.end()` or `sink.fail()` at once if the answer is already over.
        Azure silent for `timeout` s (up to an eighth more: `_QUIET_CHECKS`) fails it
        with `UpstreamTimeout` (while `pause()`d the silence is ours and not counted)."""
        self.sink = sink
        self.timeout = timeout
        if self.body:
            sink.feed(self.take())
            if self.sink is not sink:
                return  # it detached itself
            sink.flush()
        if self.error is not None:
            self.sink = None
            sink.fail(self.error)
        elif self.complete:
            self.sink = None
            sink.end()
        else:
            self._watch()

    def pause(self) -> None:
        """Stop reading the socket (a pushed answer's reader cannot keep up)."""
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def resume(self) -> None:
        """Read the socket again after `pause()`; the read timeout starts anew."""
        if self.reading_paused and not self.closed:
            self.read_on()
            if self.sink is not None:
                self._watch()

    def _watch(self) -> None:
        """A pushed answer's read timeout starts now."""
        self.heard = False
        now = self.loop.time()
        self.deadline = now + self.timeout
        self._arm(now + self.timeout / _QUIET_CHECKS)

    def _check_deadline(self) -> None:
        self.timer = None
        if self.closed:
            return
        if self.sink is not None:
            if self.reading_paused:
                return  # our reader is slow, not Azure: `resume()` watches again
            now = self.loop.time()
            if self.heard:  # body since the last check: the deadline is a timeout from now
                self.heard = False
                self.deadline = now + self.timeout
            elif now >= self.deadline:
                self._stall()
                return
            # The next check, never past the deadline: a late check does not delay it.
            self._arm(min(now + self.timeout / _QUIET_CHECKS, self.deadline))
            return
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # nobody waits: the next wait arms a timer again
        if self.loop.time() >= self.deadline:
            self._stall()
        else:
            self._arm(self.deadline)
