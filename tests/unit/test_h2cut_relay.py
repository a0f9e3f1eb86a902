"""The pushed relay over HTTP/2 (`H2Response` from a real `_H2Connection`) against the
stream normalizer's general path (`fast=False`), on recorded Azure frame sequences
grouped any way into DATA frames: a DATA frame of several events (Azure's content frame
with the async filter's annotation after it) is cut at its event ends by the relay
(`_StreamPush._feed_events`), and what the client gets must not change by it.

Also what the cut is for: such a DATA frame, once the stream is steady, goes through the
normalizer's shortcut event by event and never through `feed()`."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.upstream.h2.connection import _H2Connection
from azure_openai_proxy.upstream.h2.stream import H2Response
from tests.e2e.h2raw import frame, head_block
from tests.unit.test_relay_push import PROMPT, ClientChannel, client_body
from tests.unit.test_stream_steady import POLICIES, SEQUENCES, long_stream

DATA, HEADERS, SETTINGS = 0, 1, 4
END_STREAM, END_HEADERS = 0x1, 0x4


class _Wire:
    """The upstream connection's transport: writes dropped."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


async def _pushed_over_h2(pieces: list[bytes], policy: StreamPolicy,
                          feeds: list[int] | None = None) -> tuple[bytes, RequestRecord]:
    """The client's SSE bytes when Azure's body comes as `pieces`, one DATA frame each
    (each in a read of its own, the relay settling between); `feeds` gets one item per
    call of the normalizer's `feed()`."""
    loop = asyncio.get_running_loop()
    conn = _H2Connection(loop, "azure.test", 600.0)
    conn.connection_made(_Wire())  # type: ignore[arg-type]
    conn.data_received(frame(SETTINGS, 0, 0))
    stream = conn.open_stream(b"\x82", True)
    conn.data_received(frame(HEADERS, END_HEADERS, stream.sid, head_block(
        (":status", "200"), ("content-type", "text/event-stream"))))
    if feeds is not None:
        original = ChatStreamNormalizer.feed

        def counted(self: ChatStreamNormalizer, chunk: bytes) -> bytes:
            feeds.append(len(chunk))
            return original(self, chunk)

        ChatStreamNormalizer.feed = counted  # type: ignore[method-assign]
    try:
        channel = ClientChannel()
        request = FastRequest(channel, "POST", "/v1/chat/completions",
                              CIMultiDictProxy(CIMultiDict()), True, True, None, None)
        record = RequestRecord("req-1", "POST")
        task = loop.create_task(relay(request, "chat/completions", H2Response(stream), policy,
                                      policy.client_model, policy.keep_azure_fields, record,
                                      body=RequestBody(PROMPT)))
        for _ in range(5):
            await asyncio.sleep(0)
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1
            conn.data_received(frame(DATA, END_STREAM if last else 0, stream.sid, piece))
            await asyncio.sleep(0)
        await asyncio.wait_for(task, 5)
    finally:
        if feeds is not None:
            ChatStreamNormalizer.feed = original  # type: ignore[method-assign]
    return client_body(channel.writes), record


def _general(frames: list[bytes], policy: StreamPolicy) -> tuple[bytes, Any]:
    general = ChatStreamNormalizer(policy, fast=False)
    out = b"".join(general.feed(f) for f in frames) + general.finish()
    return out, general.usage


@settings(max_examples=80, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(groups=st.lists(st.integers(1, 4), min_size=1, max_size=40),
       words=st.lists(st.text(max_size=12), min_size=1, max_size=12),
       which=st.integers(min_value=-1, max_value=len(SEQUENCES) - 1),
       policy=st.sampled_from(POLICIES))
def test_data_frames_of_several_events_give_the_general_paths_bytes(
        groups: list[int], words: list[str], which: int, policy: StreamPolicy) -> None:
    frames = long_stream(words) if which < 0 else SEQUENCES[which]
    pieces, at = [], 0
    for size in groups * (len(frames) // len(groups) + 1):
        if at >= len(frames):
            break
        pieces.append(b"".join(frames[at:at + size]))
        at += size
    expected, usage = _general(frames, policy)
    got, record = asyncio.run(_pushed_over_h2(pieces, policy))
    assert got == expected
    assert record.usage == (usage or record.usage)
    assert record.error is None


def test_a_content_frame_with_its_annotation_takes_the_shortcut_event_by_event() -> None:
    # Paced like bench/paced.py: every 4th content frame shares its DATA frame with the
    # annotation after it. Once steady, no piece of the stream reaches `feed()`.
    frames = long_stream([f" word{n}" for n in range(16)])
    pieces, n = [], 0
    while n < len(frames):
        two = b"content_filter_offsets" in frames[n + 1] if n + 1 < len(frames) else False
        pieces.append(b"".join(frames[n:n + 2]) if two else frames[n])
        n += 2 if two else 1
    assert sum(b"content_filter_offsets" in p and p.count(b"data: ") == 2 for p in pieces) == 4
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    feeds: list[int] = []
    got, _ = asyncio.run(_pushed_over_h2(pieces, policy, feeds))
    assert got == _general(frames, policy)[0]
    # The prompt filter, the role frame and the first content frame (the template is
    # learned from it), the first annotation (learned), the finish, usage and [DONE]:
    # the shortcut takes the 15 other content frames and 3 later annotations.
    assert len(feeds) == 7
