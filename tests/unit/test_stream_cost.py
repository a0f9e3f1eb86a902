"""What a pushed stream does not do, for its CPU cost (issue 15): it is relayed in the
handler's own task (no task of its own), a steady stream's frame that is not of the
learned shape is matched against the template once, not twice, the template is learned
from the first content frame, and the async filter's later annotation frames and
`[DONE]` are not parsed whole. The bytes are held to
the pulled relay and the general path by test_relay_push.py and test_stream_steady.py."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from azure_openai_proxy.normalize import stream
from azure_openai_proxy.normalize.steady import AnnotationFrameTemplate, SteadyFrameTemplate
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from tests.unit.test_relay_push import Exchange, wire
from tests.unit.test_stream_normalizer import DONE, async_annotation, delta
from tests.unit.test_stream_steady import long_stream, padded, padded_stream


async def test_a_pushed_stream_is_relayed_in_the_handlers_own_task() -> None:
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    frames = long_stream()
    before = asyncio.all_tasks()
    exchange = Exchange(pushed=True, policy=policy)
    exchange.start(wire(frames[:4], end=False))
    await exchange.settle()
    assert exchange.task is not None and not exchange.task.done()
    assert asyncio.all_tasks() - before == {exchange.task}
    exchange.conn.data_received(wire(frames[4:]))
    await asyncio.wait_for(exchange.task, 5)
    assert b"".join(exchange.channel.writes).endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


def test_a_frame_off_the_template_is_matched_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch, SteadyFrameTemplate, "match")
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for frame in long_stream(annotate=False)[:5]:  # prompt filter, role, three deltas
        normalizer.feed(frame)
    calls.clear()
    steady = delta(" more")
    assert normalizer.feed(steady).startswith(b"data: ")
    assert len(calls) == 1  # the template was learned: a steady frame is matched once
    calls.clear()
    assert normalizer.feed(async_annotation(0, 0, 4)) == b""  # dropped, as before
    assert len(calls) == 1
    assert (normalizer.frames_in, normalizer.frames_out) == (7, 5)


def _general_parses(monkeypatch: pytest.MonkeyPatch, *modules: Any) -> list[bytes]:
    """What is parsed by `orjson.loads` in `modules`: by default stream.py's, the frames
    the general path parses whole."""
    parsed: list[bytes] = []

    class Counted:
        JSONDecodeError = orjson.JSONDecodeError
        dumps = staticmethod(orjson.dumps)

        @staticmethod
        def loads(data: bytes) -> Any:
            parsed.append(data)
            return orjson.loads(data)

    for module in modules or (stream,):
        monkeypatch.setattr(module, "orjson", Counted)
    return parsed


def _calls(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[bytes]:
    """What `owner`'s method `name` (of one argument) is given."""
    calls: list[bytes] = []
    method = getattr(owner, name)

    def counted(self: Any, data: bytes) -> Any:
        calls.append(data)
        return method(self, data)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_the_template_is_completed_by_the_first_content_frame(
        monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = _general_parses(monkeypatch)
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for frame in long_stream(annotate=False)[:3]:  # prompt filter, role, the first delta
        normalizer.feed(frame)
    assert len(parsed) == 2  # the first delta completes the role frame's (steady.py)
    normalizer.feed(delta(" more"))
    assert len(parsed) == 2  # the second content frame is already a steady one


def test_later_annotation_frames_and_done_are_not_parsed_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = _general_parses(monkeypatch)
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for frame in long_stream(annotate=False)[:4]:
        normalizer.feed(frame)
    assert normalizer.feed(async_annotation(0, 0, 4)) == b""  # learned from this one
    parsed.clear()
    assert normalizer.feed(async_annotation(4, 4, 8)) == b""
    assert normalizer.feed(DONE) == DONE
    assert parsed == []
    assert (normalizer.frames_in, normalizer.frames_out) == (7, 4)


def test_no_annotation_template_is_learned_where_it_is_never_tried(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Azure's fields stripped: no steady template, so the annotation template, only ever
    # tried beside one, would cost two dumps per learning try for nothing.
    learned: list[bytes] = []
    learn, from_bytes = AnnotationFrameTemplate.learn, AnnotationFrameTemplate.from_bytes

    def spied(data: bytes, obj: dict[str, Any]) -> AnnotationFrameTemplate | None:
        learned.append(data)
        return learn(data, obj)

    def spied_bytes(data: bytes) -> AnnotationFrameTemplate | None:
        template = from_bytes(data)
        if template is not None:
            learned.append(data)
        return template

    monkeypatch.setattr(AnnotationFrameTemplate, "learn", staticmethod(spied))
    monkeypatch.setattr(AnnotationFrameTemplate, "from_bytes", staticmethod(spied_bytes))
    stripped = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o", keep_azure_fields=False))
    for frame in long_stream():
        stripped.feed(frame)
    assert learned == []
    kept = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for frame in long_stream():
        kept.feed(frame)
    assert len(learned) == 1


async def test_a_pushed_steady_frame_takes_one_call_of_the_normalizers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Once the template is learned, a steady frame of a pushed stream goes from the
    # upstream connection's body callback to the template's `relay` (one call): not
    # `feed()` (its SSE decoder's checks), and for plain text not `match()` and
    # `relayed()` either (text with escapes takes them, inside `relay`).
    calls: list[str] = []
    for owner, name in ((ChatStreamNormalizer, "feed"), (SteadyFrameTemplate, "match"),
                        (SteadyFrameTemplate, "relayed")):
        original = getattr(owner, name)

        def counted(self: Any, data: bytes, _original: Any = original,
                    _name: str = name) -> Any:
            calls.append(_name)
            return _original(self, data)

        monkeypatch.setattr(owner, name, counted)
    plain = [" The", " capital", " of", " France", " is", " Paris", "."]
    frames = long_stream([*plain, ' "quoted"', " \\ slash"], annotate=False)
    exchange = Exchange(pushed=True, policy=StreamPolicy(client_model="gpt-4o"))
    exchange.start(wire(frames[:3], end=False))  # prompt filter, role, the first delta
    await exchange.settle()
    calls.clear()
    for frame in frames[3:3 + len(plain) - 1]:  # steady frames, one a read
        exchange.conn.data_received(wire([frame], end=False))
    assert calls == []
    for frame in frames[3 + len(plain) - 1:-3]:  # escaped text: parsed, still no feed()
        exchange.conn.data_received(wire([frame], end=False))
    assert calls == ["match", "relayed"] * 2
    exchange.conn.data_received(wire(frames[-3:]))
    assert exchange.task is not None
    await asyncio.wait_for(exchange.task, 5)
    assert len(exchange.channel.writes) >= len(frames) - 5


async def test_a_pushed_read_reads_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # The read timeout of a pushed stream is a mark a read sets and a timer checks, not a
    # deadline each read moves (a clock read per read).
    frames = long_stream(annotate=False)
    exchange = Exchange(pushed=True, policy=StreamPolicy(client_model="gpt-4o"))
    exchange.start(wire(frames[:3], end=False))
    await exchange.settle()
    loop = asyncio.get_running_loop()
    reads: list[float] = []
    clock = loop.time

    def counted() -> float:
        reads.append(0.0)
        return clock()

    monkeypatch.setattr(loop, "time", counted)
    for frame in frames[3:-3]:
        exchange.conn.data_received(wire([frame], end=False))
    assert reads == []
    monkeypatch.undo()
    exchange.conn.data_received(wire(frames[-3:]))
    assert exchange.task is not None
    await asyncio.wait_for(exchange.task, 5)


async def test_a_pushed_annotation_frame_is_dropped_without_feed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # After the first (which teaches the template), the async filter's annotation frames
    # of a pushed stream are dropped by `annotation_drop()`, not through `feed()`.
    fed = _calls(monkeypatch, ChatStreamNormalizer, "feed")
    frames = long_stream(annotate=False)
    exchange = Exchange(pushed=True, policy=StreamPolicy(client_model="gpt-4o"))
    exchange.start(wire([*frames[:3], async_annotation(0, 0, 4)], end=False))
    await exchange.settle()
    fed.clear()
    for n in range(1, 6):
        exchange.conn.data_received(wire([async_annotation(4 * n, 4 * n, 4 * n + 4)],
                                         end=False))
    assert fed == []
    exchange.conn.data_received(wire(frames[3:]))
    assert exchange.task is not None
    await asyncio.wait_for(exchange.task, 5)


def test_a_plain_ascii_text_delta_is_relayed_unparsed(monkeypatch: pytest.MonkeyPatch) -> None:
    # `{"content":"..."}` whose text needs no escaping: `relay()` checks its ends and the
    # text's bytes (one regex search), and parses nothing.
    from azure_openai_proxy.normalize import steady

    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for frame in long_stream(annotate=False)[:3]:
        normalizer.feed(frame)
    relay = normalizer.steady_relay()
    assert relay is not None
    parsed = _general_parses(monkeypatch, steady)
    assert relay(delta(" plain text, 42.")) is not None
    assert parsed == []
    assert relay(delta(' "quoted"')) is not None  # escaped: parsed
    assert len(parsed) == 1


async def test_a_pushed_padded_frame_reaches_no_feed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A gpt-5 stream's chunks carry another `obfuscation` value each (steady.py's `PaddedFrameTemplate`): once the
    # template is learned, a pushed one takes the template's `relay` alone, as a gpt-4o
    # chunk does; on main every one went through `feed()` and was parsed whole.
    fed = _calls(monkeypatch, ChatStreamNormalizer, "feed")
    frames = padded_stream(long_stream(annotate=False), ["k3Zr9", "Xy", "lRK2aBv", "0f4590e"])
    exchange = Exchange(pushed=True, policy=StreamPolicy(client_model="gpt-4o"))
    exchange.start(wire(frames[:3], end=False))  # prompt filter, role, the first delta
    await exchange.settle()
    fed.clear()
    for frame in frames[3:-3]:  # steady frames, one a read, quoted and escaped text too
        exchange.conn.data_received(wire([frame], end=False))
    assert fed == []
    exchange.conn.data_received(wire(frames[-3:]))
    assert exchange.task is not None
    await asyncio.wait_for(exchange.task, 5)
    assert b"".join(exchange.channel.writes).endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


def test_a_padded_plain_text_delta_is_relayed_unparsed(monkeypatch: pytest.MonkeyPatch) -> None:
    from azure_openai_proxy.normalize import steady

    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    for frame in padded_stream(long_stream(annotate=False)[:3], ["k3Zr9"]):
        normalizer.feed(frame)
    relay = normalizer.steady_relay()
    assert relay is not None
    parsed = _general_parses(monkeypatch, steady)
    assert relay(padded(delta(" plain text, 42."), "lRK2aBv")) is not None
    assert parsed == []
    assert relay(padded(delta(' "quoted"'), "Xy")) is not None  # escaped: parsed
    assert len(parsed) == 1
