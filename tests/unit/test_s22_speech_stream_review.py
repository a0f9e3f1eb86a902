"""Review of the streamed speech's meter (gateway/answerusage.py `SpeechStreamMeter`,
branch ssespeech): odd bytes from upstream, fuzzed, and the estimate of a cut speech."""

from __future__ import annotations

import base64
import tracemalloc

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.answerusage import SpeechMeter, SpeechStreamMeter
from azure_openai_proxy.governance.mediatokens import ESTIMATED_TOKENS

_TEXT = "hello world " * 50

_counts = st.one_of(st.integers(-5, 2**60), st.booleans(), st.text(max_size=3),
                    st.floats(allow_nan=False), st.none())
_usage = st.one_of(st.dictionaries(st.sampled_from(
    ["input_tokens", "output_tokens", "total_tokens", "input_tokens_details"]), _counts),
    st.lists(st.integers(-5, 2**63 - 1), max_size=2), st.text(max_size=4))
_events = st.one_of(
    st.binary(max_size=48).map(lambda audio: orjson.dumps(
        {"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode()})),
    st.text(max_size=12).map(lambda audio: orjson.dumps(
        {"type": "speech.audio.delta", "audio": audio})),
    _usage.map(lambda usage: orjson.dumps({"type": "speech.audio.done", "usage": usage})),
    st.binary(max_size=30).map(lambda junk: b'"speech.audio.done"' + junk),
    st.binary(max_size=30).map(lambda junk: b'"speech.audio.delta"' + junk),
    st.just(b"[DONE]"),
    st.just(b'{"type":"speech.audio.done","usage":{"input_tokens":1,'
            b'"output_tokens":123456789012345678901234567890}}'),
)
_endings = st.sampled_from([b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r\n"])


def _meter() -> SpeechStreamMeter:
    return SpeechStreamMeter(SpeechMeter(_TEXT, {"input": _TEXT, "response_format": "pcm"}))


@settings(max_examples=400, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.lists(st.tuples(_events, _endings), max_size=8), st.data())
def test_any_stream_however_cut_records_a_usage_and_never_raises(
    events: list[tuple[bytes, bytes]], data: st.DataObject,
) -> None:
    """Passes on ssespeech (a check): no exception, the same usage however the bytes
    are cut, and either Azure's counts (ints in range) or the flagged estimate."""
    stream = b"".join(b"data: " + event + ending for event, ending in events)
    whole = _meter()
    whole.feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    pieces = _meter()
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        pieces.feed(stream[start:end])
    usage = whole.recorded()
    assert pieces.recorded() == usage
    if usage.get("estimated"):
        assert usage[ESTIMATED_TOKENS]["completion_tokens"] >= 834
    else:
        assert all(type(usage[name]) is int and 0 <= usage[name] <= 2**53
                   for name in ("input_tokens", "output_tokens"))


def _flac_head(total_samples: int, rate: int) -> bytes:
    """fLaC and a STREAMINFO block whose sample rate and total samples are given."""
    packed = (rate << 44) | (total_samples & ((1 << 36) - 1))
    return b"fLaC" + b"\x00\x00\x00\x22" + b"\x00" * 10 + packed.to_bytes(8, "big") + b"\0" * 16


def test_a_cut_flac_speech_is_not_priced_by_what_its_header_claims() -> None:
    """142 bytes of FLAC relayed, then cut: `cut` takes the STREAMINFO's claimed length
    (2**36 samples at 1 Hz), not the audio relayed so far, bounded only by a day:
    1,800,000 audio tokens ($21.60) for a 6-character speech. On ssespeech: fails."""
    text = "hello."
    heard = SpeechMeter(text, {"input": text, "response_format": "flac"})
    meter = SpeechStreamMeter(heard)
    audio = _flac_head(2**36 - 1, 1) + b"\0" * 100
    meter.feed(b"data: " + orjson.dumps(
        {"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode()}) + b"\n\n")
    usage = meter.recorded()
    assert usage["estimated"] is True
    # the characters say under a second; 142 bytes of FLAC cannot play for minutes
    assert usage[ESTIMATED_TOKENS]["completion_tokens"] < 1_250, usage


def test_a_large_delta_is_metered_without_many_times_its_size_in_memory() -> None:
    """One delta of 8 MiB of audio (10.7 MiB of event): the meter needs its size and
    first bytes only, yet parses the event (orjson builds the 10.7 M-character string)
    and decodes all its base64. On ssespeech: a peak of ~13x the event (tracemalloc;
    RSS grows ~150 MB for a 32 MiB event), where main relays it with no copy kept."""
    meter = _meter()
    event = b"data: " + orjson.dumps(
        {"type": "speech.audio.delta", "audio": base64.b64encode(b"\0" * (8 << 20)).decode()}
    ) + b"\n\n"
    pieces = [event[start:start + 65_536] for start in range(0, len(event), 65_536)]
    tracemalloc.start()
    try:
        for piece in pieces:
            meter.feed(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert meter.heard.cut()[ESTIMATED_TOKENS]["completion_tokens"] >= 3_641  # 175 s heard
    assert peak < 4 * len(event), f"peak {peak / 2**20:.0f} MiB for {len(event) / 2**20:.1f}"
