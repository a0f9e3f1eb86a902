"""A normalized stream pushed from the upstream connection's callback (`gateway/relay.py`,
`_StreamPush`) against the same stream pulled read by read: byte for byte and write for
write on recorded Azure frame sequences, however Azure's bytes fall into reads.

Read boundaries are what is tested, and a socket cannot be made to keep them, so the
upstream connection is fed its reads directly (`_Connection.data_received`, the real
llhttp parser behind it) and the client's writes are recorded on a `Channel` (as in
test_fastserver.py). Both sides run the real code: FastResponse, FastStream, relay()."""

from __future__ import annotations

import asyncio
import itertools
import zlib
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.errors import UpstreamTimeout
from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.interface import ClientDisconnected
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastResponse, FastTransport
from azure_openai_proxy.upstream.fast.connection import _Connection
from azure_openai_proxy.upstream.fast.pool import _HostPool
from tests.unit.test_stream_steady import POLICIES, SEQUENCES, WORDS, long_stream

PROMPT = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")
TURNS = 200  # loop turns a step may take (each is a turn, never a clock)


class AzureSocket:
    """The upstream connection's transport: what the connection asks of its socket."""

    def __init__(self) -> None:
        self.paused = False
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def write(self, data: bytes) -> None: ...

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class ClientChannel:
    """The client's connection as FastStream sees it: each write recorded; `pause()`
    stands for a client that stops reading (the transport past its high-water mark)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.transport: Any = self
        self.closing = False
        self.closed = self.gone = False
        self.write_paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> Any:
        return None

    def date(self) -> str:
        return "D"

    def pause_body(self) -> None: ...
    def resume_body(self) -> None: ...
    def send_continue(self) -> None: ...

    async def drain(self) -> None:
        if self.closed:
            raise ClientDisconnected("gone")
        if self.write_paused:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def lose(self) -> None:
        self.closed = self.gone = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ClientDisconnected("gone"))


class Pulled:
    """The same answer through the plain `UpstreamResponse` interface: relay() pulls it."""

    def __init__(self, response: FastResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers

    async def read(self, limit: int) -> bytes:
        return await self._response.read(limit)

    def chunks(self) -> AsyncGenerator[bytes, None]:
        return self._response.chunks()

    def close(self) -> None:
        self._response.close()

    def finish_in_background(self) -> None:
        self._response.finish_in_background()


class Exchange:
    """One relayed stream: Azure's connection, fed reads by the test, and the client's."""

    def __init__(self, *, pushed: bool, policy: StreamPolicy, read_timeout: float = 600.0,
                 head: bytes = HEAD) -> None:
        self.head = head
        loop = asyncio.get_running_loop()
        self.owner = FastTransport(UpstreamSettings(read_timeout=read_timeout))
        self.pool = _HostPool(loop, "azure.test", 0)
        self.conn = _Connection(self.pool)
        self.socket = AzureSocket()
        self.conn.connection_made(self.socket)  # type: ignore[arg-type]
        self.pool.every.add(self.conn)
        self.conn.start(head_only=False)
        self.pushed = pushed
        self.policy = policy
        self.channel = ClientChannel()
        self.record = RequestRecord("req-1", "POST")
        self.task: asyncio.Task[Any] | None = None

    def start(self, first: bytes) -> None:
        """Azure's head (with `first`, the rest of its first read) has arrived: relay."""
        self.conn.data_received(self.head + first)
        response = FastResponse(self.owner, self.conn)
        answer: Any = response if self.pushed else Pulled(response)
        request = FastRequest(self.channel, "POST", "/v1/chat/completions",
                              CIMultiDictProxy(CIMultiDict()), True, True, None, None)
        self.task = asyncio.get_running_loop().create_task(relay(
            request, "chat/completions", answer, self.policy, self.policy.client_model,
            self.policy.keep_azure_fields, self.record, body=RequestBody(PROMPT)))

    def listening(self) -> bool:
        """The relay waits for Azure's next read (or has finished)."""
        assert self.task is not None
        if self.task.done():
            return True
        if self.pushed:
            return self.conn.sink is not None and not self.conn.reading_paused
        waiter = self.conn.waiter
        return waiter is not None and not waiter.done()

    async def settle(self) -> None:
        for _ in range(TURNS):
            if self.listening():
                return
            await asyncio.sleep(0)  # one turn of the loop: no clock involved
        raise AssertionError("the relay never waited for the next read")

    async def run(self, reads: list[bytes], *, lost: bool = False, eof: bool = False) -> bytes:
        """Feed Azure's `reads`, then (`lost`) its connection breaks or (`eof`) it ends
        its side; the client's bytes."""
        self.start(reads[0])
        await self.settle()
        for _ in range(3):  # the head leaves alone if the first read wrote nothing
            await asyncio.sleep(0)
        for read in reads[1:]:
            self.conn.data_received(read)
            await self.settle()
        if lost:
            self.conn.connection_lost(ConnectionResetError())
        if eof:
            self.conn.eof_received()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)
        return b"".join(self.channel.writes)


def wire(frames: list[bytes], *, end: bool = True) -> bytes:
    """Azure's body on the wire: each frame its own HTTP chunk."""
    body = b"".join(b"%x\r\n%b\r\n" % (len(frame), frame) for frame in frames)
    return body + b"0\r\n\r\n" if end else body


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted(set(points)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a] or [b""]


async def both(reads: list[bytes], policy: StreamPolicy, *, lost: bool = False
               ) -> tuple[Any, Any]:
    """What the client gets, write by write, and what is recorded: pushed, then pulled."""
    results = []
    for pushed in (True, False):
        exchange = Exchange(pushed=pushed, policy=policy)
        await exchange.run(reads, lost=lost)
        record = exchange.record
        results.append((exchange.channel.writes, record.usage, record.error,
                        exchange.conn.closed))
    return results[0], results[1]


async def test_recorded_sequences_pushed_are_pulled_write_for_write() -> None:
    for frames in SEQUENCES:
        for policy in POLICIES:
            for per_read in (1, 3):
                chunks = [wire([f], end=False) for f in frames]
                reads = [b"".join(chunks[i:i + per_read])
                         for i in range(0, len(chunks), per_read)]
                reads[-1] += b"0\r\n\r\n"
                pushed, pulled = await both(reads, policy)
                assert pushed == pulled, (frames, policy, per_read)


async def test_a_whole_stream_in_one_read_is_one_write() -> None:
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    exchange = Exchange(pushed=True, policy=policy)
    body = await exchange.run([wire(long_stream())])
    assert len(exchange.channel.writes) == 1  # the head, the frames, [DONE], the end
    assert body.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


async def test_every_single_split_point_of_a_recorded_stream() -> None:
    data = wire(long_stream(WORDS[:5]))
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    for point in range(1, len(data)):
        pushed, pulled = await both(cut(data, [point]), policy)
        assert pushed == pulled, point


@settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(points=st.lists(st.integers(min_value=1, max_value=4000), max_size=40),
       which=st.integers(min_value=0, max_value=len(SEQUENCES) - 1),
       policy=st.sampled_from(POLICIES), ended=st.booleans())
def test_any_split_into_reads_pushed_is_pulled(points: list[int], which: int,
                                               policy: StreamPolicy, ended: bool) -> None:
    data = wire(SEQUENCES[which], end=ended)
    reads = cut(data, [p for p in points if p < len(data)])

    async def compare() -> None:
        # Not ended: Azure's connection breaks after the last read (mid-frame, maybe).
        pushed, pulled = await both(reads, policy, lost=not ended)
        assert pushed == pulled

    asyncio.run(compare())


async def test_a_gzipped_stream_and_one_ended_by_eof_are_pushed_as_pulled() -> None:
    frames = long_stream()
    policy = StreamPolicy(client_model="gpt-4o")
    packer = zlib.compressobj(wbits=31)  # gzip
    packed = packer.compress(b"".join(frames)) + packer.flush(zlib.Z_SYNC_FLUSH)
    gzipped = HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n")
    until_eof = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    cases = [(gzipped, cut(wire([packed, packer.flush()]), [40, 200, 201]), False),
             (until_eof, cut(b"".join(frames[:-1]), [10, 500, 900]), True)]
    for head, reads, eof in cases:
        results = []
        for pushed in (True, False):
            exchange = Exchange(pushed=pushed, policy=policy, head=head)
            await exchange.run(reads, eof=eof)
            results.append((exchange.channel.writes, exchange.record.usage,
                            exchange.record.error))
        assert results[0] == results[1]
        body = b"".join(results[0][0])
        assert body.count(b'"model":"gpt-4o"') >= len(WORDS)
        assert b"data: [DONE]\n\n" in body


async def test_azure_cut_mid_stream_ends_with_the_same_error_event() -> None:
    # Not HTTP/1.1 past five frames (a bad chunk size), or the connection reset mid-frame:
    # the frames before it, then the stream_interrupted event and [DONE].
    frames = long_stream()
    policy = StreamPolicy(client_model="gpt-4o")
    bad = wire(frames[:5], end=False) + b"zz\r\n"
    for reads, lost in (([bad[:300], bad[300:]], False), (cut(wire(frames)[:700], [300]), True)):
        pushed, pulled = await both(reads, policy, lost=lost)
        assert pushed == pulled
        writes, usage, error, closed = pushed
        assert error == "UpstreamStreamBroken" and closed
        assert b'"code":"stream_interrupted"' in writes[-1] and usage["estimated"] is True


async def test_a_silent_azure_fails_the_pushed_stream_after_the_read_timeout() -> None:
    exchange = Exchange(pushed=True, policy=StreamPolicy(client_model="gpt-4o"),
                        read_timeout=0.05)
    frames = long_stream()
    exchange.start(wire(frames[:4], end=False))
    assert exchange.task is not None
    await asyncio.wait_for(exchange.task, 10)  # Azure sends nothing more
    assert exchange.record.error == UpstreamTimeout.__name__
    assert b'"code":"stream_interrupted"' in exchange.channel.writes[-1]
    assert exchange.channel.writes[-1].endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert exchange.conn.closed


async def test_a_slow_client_pauses_azure_and_gets_every_byte() -> None:
    policy = StreamPolicy(client_model="gpt-4o")
    frames = long_stream()
    reads = [wire([f], end=False) for f in frames]
    reads[-1] += b"0\r\n\r\n"
    expected = (await both(reads, policy))[1][0]

    exchange = Exchange(pushed=True, policy=policy)
    channel = exchange.channel
    exchange.start(reads[0])
    await exchange.settle()
    paused = 0
    for n, read in enumerate(reads[1:], 1):
        channel.write_paused = n % 3 == 1  # the client's transport fills up
        assert not exchange.socket.paused, "Azure's socket was read while the client was behind"
        written = len(channel.writes)
        exchange.conn.data_received(read)
        if channel.write_paused and len(channel.writes) > written:
            # Something was written to a client that is behind: the relay stops reading
            # Azure and waits for the client.
            for _ in range(TURNS):
                if channel.waiter is not None and not channel.waiter.done():
                    break
                await asyncio.sleep(0)
            assert exchange.socket.paused
            paused += 1
        channel.resume_writing()
        await exchange.settle()
    assert paused >= 5
    assert exchange.task is not None
    await asyncio.wait_for(exchange.task, 10)
    assert b"".join(channel.writes) == b"".join(expected)  # every byte, in order


async def test_a_client_that_leaves_closes_azure_at_once_and_usage_is_estimated() -> None:
    policy = StreamPolicy(client_model="gpt-4o")
    frames = long_stream()
    exchange = Exchange(pushed=True, policy=policy)
    exchange.start(wire(frames[:3], end=False))
    await exchange.settle()
    exchange.channel.lose()  # the transport is closing: the next write fails
    exchange.conn.data_received(wire(frames[3:5], end=False))
    assert exchange.task is not None
    with pytest.raises(ClientDisconnected):
        await asyncio.wait_for(exchange.task, 10)
    assert exchange.socket.closed and exchange.conn.sink is None
    usage = exchange.record.usage
    assert usage is not None and usage["estimated"] is True and exchange.record.stream


async def test_a_client_gone_while_azure_is_paused_closes_azure() -> None:
    policy = StreamPolicy(client_model="gpt-4o")
    frames = long_stream()
    exchange = Exchange(pushed=True, policy=policy)
    exchange.start(wire(frames[:3], end=False))
    await exchange.settle()
    exchange.channel.write_paused = True
    exchange.conn.data_received(wire(frames[3:5], end=False))
    for _ in range(TURNS):
        if exchange.channel.waiter is not None:
            break
        await asyncio.sleep(0)
    exchange.channel.lose()
    assert exchange.task is not None
    with pytest.raises(ClientDisconnected):
        await asyncio.wait_for(exchange.task, 10)
    assert exchange.socket.closed


def client_body(writes: list[bytes]) -> bytes:
    """The SSE bytes the client got: the chunked body after the head, unframed."""
    data = b"".join(writes)
    body = data[data.index(b"\r\n\r\n") + 4:]
    out: list[bytes] = []
    while True:
        line_end = body.index(b"\r\n")
        size = int(body[:line_end], 16)
        if not size:
            return b"".join(out)
        out.append(body[line_end + 2:line_end + 2 + size])
        assert body[line_end + 2 + size:line_end + 4 + size] == b"\r\n"
        body = body[line_end + 4 + size:]


@settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(points=st.lists(st.integers(min_value=1, max_value=4000), max_size=40),
       words=st.lists(st.text(max_size=12), min_size=1, max_size=12),
       which=st.integers(min_value=-1, max_value=len(SEQUENCES) - 1),
       policy=st.sampled_from(POLICIES), per_chunk=st.integers(1, 3))
def test_any_split_into_reads_pushed_is_the_general_path(
        points: list[int], words: list[str], which: int, policy: StreamPolicy,
        per_chunk: int) -> None:
    # The pushed relay's steady shortcut (`steady_relay`) against the normalizer's general
    # path (`fast=False`), not only against the pulled relay (which shares its template).
    frames = long_stream(words) if which < 0 else SEQUENCES[which]
    chunked = [b"".join(frames[i:i + per_chunk]) for i in range(0, len(frames), per_chunk)]
    data = wire(chunked)
    reads = cut(data, [p for p in points if p < len(data)])
    general = ChatStreamNormalizer(policy, fast=False)
    expected = b"".join(general.feed(frame) for frame in frames) + general.finish()

    async def compare() -> None:
        exchange = Exchange(pushed=True, policy=policy)
        await exchange.run(reads)
        assert client_body(exchange.channel.writes) == expected
        assert exchange.record.usage == (general.usage or exchange.record.usage)
        assert exchange.record.error is None

    asyncio.run(compare())
