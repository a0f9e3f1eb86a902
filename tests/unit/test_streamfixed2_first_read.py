"""Azure's first DATA frame holds two events, the prompt filter's frame and the role frame
(bench.paced sends them so, as Azure does): `ChatStreamNormalizer.feed` cuts a read of
several events that ends where an event does into its events and feeds each alone
(session 31, streamfixed2), not through the SSE decoder's scan. Against the general
path (`fast=False`, a frame a read), byte for byte and in every count, on recorded Azure
sequences with their frames joined into reads in every grouping, and on reads the cut
must leave to the decoder."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.sse import SseDecoder
from bench.paced import PacedStream, frames
from tests.unit.test_stream_presumed import emulated_stream
from tests.unit.test_stream_steady import POLICIES, SEQUENCES, relay


def _paced() -> list[bytes]:
    head, steps, tail = frames(PacedStream(content_frames=3))
    return [head, *steps, tail]


RECORDED = [*SEQUENCES, emulated_stream(async_filter=False),
            emulated_stream(async_filter=True), emulated_stream(async_filter=True, n=2)]


def test_reads_of_several_whole_frames_come_out_as_the_general_paths() -> None:
    for sequence in RECORDED:
        for policy in POLICIES:
            expected = relay(sequence, policy, fast=False)
            for per_read in (2, 3, 5, len(sequence)):
                grouped = [b"".join(sequence[i:i + per_read])
                           for i in range(0, len(sequence), per_read)]
                assert relay(grouped, policy, fast=True) == expected
                assert relay(grouped, policy, fast=False) == expected


def test_the_paced_upstreams_reads_come_out_as_its_frames_one_a_read() -> None:
    reads = _paced()
    single = [event + b"\n\n" for read in reads for event in read.split(b"\n\n") if event]
    assert len(single) > len(reads)
    for policy in POLICIES:
        assert relay(reads, policy, fast=True) == relay(single, policy, fast=False)


@pytest.mark.parametrize("odd", [
    b"data: {}\n\n\n",  # a blank line after the blank line: the last "\n\n" not found
    b": comment\n\ndata: {}\n\n",
    b"event: x\ndata: {}\n\ndata: {}\n\n",
    b"data: {}\r\n\r\ndata: {}\n\n",
    b"\xef\xbb\xbfdata: {}\n\ndata: {}\n\n",  # a byte order mark first
    b"data: {}\n\ndata: {",  # ends inside an event: the decoder's
])
def test_reads_the_cut_leaves_to_the_decoder_come_out_as_a_byte_a_read(odd: bytes) -> None:
    stream = emulated_stream(async_filter=False)
    policy = StreamPolicy(client_model="gpt-4o")
    reads = [odd, *stream]
    whole = b"".join(reads)
    bytewise = [whole[i:i + 1] for i in range(len(whole))]
    assert relay(reads, policy, fast=True) == relay(bytewise, policy, fast=False)


def test_azures_first_read_is_not_scanned_by_the_decoder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fed: list[bytes] = []
    feed = SseDecoder.feed

    def counted(self: Any, chunk: bytes) -> Any:
        fed.append(chunk)
        return feed(self, chunk)

    monkeypatch.setattr(SseDecoder, "feed", counted)
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model="gpt-4o"))
    head = _paced()[0]
    out = normalizer.feed(head)
    assert fed == [] and out.startswith(b"data: ") and normalizer.frames_in == 2
