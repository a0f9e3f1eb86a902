"""Review of framecut2: what `StreamPush._relay_annotated` (a steady content event and the
async filter's annotation after it in one HTTP/2 DATA frame, in one step) must keep that
the client's bytes do not show.

- The normalizer's counts (`frames_in`, `frames_out`, `content_chars`): when the content
  event is one the template refuses (Azure's finish frame, then the annotation, in one
  DATA frame: the recorded sequence's end), the annotation's drop, counted first, is taken
  back before the piece is cut; counted twice, `frames_in` is one too many.
- Backpressure: a client that stops reading at that write pauses Azure's stream, as the
  one-event fast path does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.h2.connection import _H2Connection
from azure_openai_proxy.upstream.h2.stream import H2Response
from tests.e2e.h2raw import frame, head_block
from tests.unit.test_framecut2_annotation import _LEARNED, _paired, _stream, _template
from tests.unit.test_h2_connection import _connection, _request
from tests.unit.test_h2cut_relay import (
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    SETTINGS,
    _pushed_over_h2,
    _Wire,
)
from tests.unit.test_relay_push import PROMPT, ClientChannel
from tests.unit.test_stream_normalizer import ASYNC_FILTER, async_annotation, delta
from tests.unit.test_stream_steady import POLICIES


def _counts(normalizer: ChatStreamNormalizer) -> tuple[int, int, int]:
    return normalizer.frames_in, normalizer.frames_out, normalizer.content_chars


def _reference(frames: list[bytes], policy: StreamPolicy) -> tuple[int, int, int]:
    general = ChatStreamNormalizer(policy, fast=False)
    for piece in frames:
        general.feed(piece)
    general.finish()
    return _counts(general)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("frames", [
    ASYNC_FILTER,  # its finish frame and the last annotation in one DATA frame
    [*ASYNC_FILTER[:6], delta(" Really.", filters={"hate": {"filtered": False}}),
     async_annotation(32, 32, 40), *ASYNC_FILTER[6:]],  # a content event not the template's
], ids=["recorded", "other-filter-results"])
def test_a_refused_content_event_leaves_the_annotation_counted_once(
        frames: list[bytes], policy: StreamPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ChatStreamNormalizer] = []
    made = ChatStreamNormalizer.__init__

    def noted(self: ChatStreamNormalizer, *args: Any, **kwargs: Any) -> None:
        seen.append(self)
        made(self, *args, **kwargs)

    monkeypatch.setattr(ChatStreamNormalizer, "__init__", noted)
    pieces = _paired(frames)
    assert sum(piece.count(b"data: ") == 2 for piece in pieces) >= 2
    asyncio.run(_pushed_over_h2(pieces, policy))
    assert [_counts(normalizer) for normalizer in seen] == [_reference(frames, policy)]


class _StopsReading(ClientChannel):
    """A client whose transport passes its high-water mark at its `after`-th write."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.writes) == self.after:
            self.write_paused = True


async def _paused_at(pieces: list[bytes], which: int) -> list[bool]:
    """Whether Azure's stream is paused after each DATA frame, the client's transport
    full from the write `pieces[which]` makes (each piece written in one write)."""
    loop = asyncio.get_running_loop()
    conn = _H2Connection(loop, "azure.test", 600.0)
    conn.connection_made(_Wire())  # type: ignore[arg-type]
    conn.data_received(frame(SETTINGS, 0, 0))
    stream = conn.open_stream(b"\x82", True)
    conn.data_received(frame(HEADERS, END_HEADERS, stream.sid, head_block(
        (":status", "200"), ("content-type", "text/event-stream"))))
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    channel = _StopsReading(after=0)
    request = FastRequest(channel, "POST", "/v1/chat/completions",
                          CIMultiDictProxy(CIMultiDict()), True, True, None, None)
    task = loop.create_task(relay(request, "chat/completions", H2Response(stream), policy,
                                  policy.client_model, policy.keep_azure_fields,
                                  RequestRecord("req-1", "POST"), body=RequestBody(PROMPT)))
    for _ in range(5):
        await asyncio.sleep(0)
    paused = []
    for n, piece in enumerate(pieces):
        if n == which:
            channel.after = len(channel.writes) + 1
        conn.data_received(frame(DATA, 0, stream.sid, piece))
        paused.append(stream.paused)
        if stream.paused:
            break
        await asyncio.sleep(0)
    channel.lose()
    conn.data_received(frame(DATA, END_STREAM, stream.sid, b""))
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
    return paused


def test_a_client_full_at_a_content_and_annotation_write_pauses_azures_stream() -> None:
    frames = _stream([f" word{n}" for n in range(16)], [async_annotation(4, 4, 8)])
    pieces = _paired(frames)
    # The third two-event piece: the template and the annotation's learned by then, so
    # `_relay_annotated` writes it.
    which = [n for n, piece in enumerate(pieces) if piece.count(b"data: ") == 2][2]
    paused = asyncio.run(_paused_at(pieces, which))
    assert paused == [False] * which + [True]


@pytest.mark.parametrize("pad", [b"\x0b", b"\x0c", b"\x00", b"\x1c", b"\xc2\xa0", b" ", b"\t"])
def test_drop_takes_only_jsons_own_whitespace_around_the_offsets(pad: bytes) -> None:
    # The offsets are parsed between the event's own braces: a byte Python's `strip()`
    # or `split()` takes for whitespace but JSON does not (vertical tab, form feed, NUL,
    # separators, a no-break space) leaves the event to the general path.
    template = _template()
    inner = b'"check_offset":0,"start_offset":0,"end_offset":22'
    event = _LEARNED.replace(inner, pad + b'"check_offset":7' + pad)
    json_space = pad in (b" ", b"\t")
    assert template.drop(event) is json_space
    assert template.drop(delta("y") + event, len(delta("y"))) is json_space


@pytest.mark.parametrize("kind", [0, 1, 8])  # DATA, HEADERS, WINDOW_UPDATE
def test_the_data_loops_frame_size_limit_is_exact(kind: int) -> None:
    # framecut2 computes a frame's length once: a frame announcing one byte past
    # SETTINGS_MAX_FRAME_SIZE ends the connection at its 9-byte head (FRAME_SIZE_ERROR),
    # one of exactly the limit is read.
    loop = asyncio.new_event_loop()
    try:
        for size, refused in ((f.OUR_MAX_FRAME + 1, True), (f.OUR_MAX_FRAME, False)):
            conn, wire = _connection(loop)
            _request(conn)
            conn.data_received(frame(kind, 0, 1, b"\0" * size)[:9])
            assert (conn.closed, wire.goaway()) == (
                (True, f.FRAME_SIZE_ERROR) if refused else (False, None))
    finally:
        loop.close()
